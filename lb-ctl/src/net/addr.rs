//! Addresses of an interface (`ip addr add/del/show`), over rtnetlink, in the calling
//! thread's network namespace. IPv6 addresses are added `nodad` (usable at once, as a VRRP
//! master needs), and [`link_locals`] finds an interface's IPv6 link-local addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope, CacheInfo},
};

use super::rtnl;

fn message(ifindex: u32, addr: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.prefix_len = prefix_len;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = ifindex;
    msg.attributes.push(AddressAttribute::Local(addr));
    msg.attributes.push(AddressAttribute::Address(addr));
    if addr.is_ipv6() {
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    msg
}

/// Adds `addr/prefix_len` to the interface. `Ok(false)` when it was already there.
///
/// An IPv6 address is added deprecated (preferred lifetime 0, valid forever, as
/// `ip addr add ... preferred_lft 0`): it answers neighbour solicitations and takes packets,
/// but Linux never picks it as the source of the director's own connections. A VIP picked as
/// the source of a health check would make every real server, which holds the VIP itself,
/// keep the answer.
pub fn add(ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<bool> {
    let mut msg = message(ifindex, addr, prefix_len);
    if addr.is_ipv6() {
        let mut lifetimes = CacheInfo::default();
        lifetimes.ifa_preferred = 0;
        lifetimes.ifa_valid = u32::MAX;
        msg.attributes.push(AddressAttribute::CacheInfo(lifetimes));
    }
    let msg = RouteNetlinkMessage::NewAddress(msg);
    match rtnl::request(msg, NLM_F_CREATE | NLM_F_EXCL) {
        Ok(_) => Ok(true),
        Err(e) if rtnl::errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => {
            Err(e).with_context(|| format!("adding {addr}/{prefix_len} to interface {ifindex}"))
        }
    }
}

/// Removes `addr/prefix_len` from the interface. `Ok(false)` when it was not there.
pub fn del(ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<bool> {
    let msg = RouteNetlinkMessage::DelAddress(message(ifindex, addr, prefix_len));
    match rtnl::request(msg, 0) {
        Ok(_) => Ok(true),
        Err(e) if rtnl::errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(false),
        Err(e) => {
            Err(e).with_context(|| format!("removing {addr}/{prefix_len} from interface {ifindex}"))
        }
    }
}

/// The IPv4 addresses of the interface with their prefix lengths, in the kernel's order
/// (the primary address of each subnet first).
pub fn list(ifindex: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
    Ok(list_all(ifindex)?
        .into_iter()
        .filter_map(|(ip, len)| match ip {
            IpAddr::V4(ip) => Some((ip, len)),
            IpAddr::V6(_) => None,
        })
        .collect())
}

/// The IPv4 and IPv6 addresses of the interface with their prefix lengths (one dump of every
/// family), in the kernel's order.
pub fn list_all(ifindex: u32) -> Result<Vec<(IpAddr, u8)>> {
    let mut req = AddressMessage::default();
    req.header.family = AddressFamily::Unspec;
    let answers = rtnl::request(RouteNetlinkMessage::GetAddress(req), NLM_F_DUMP)
        .context("listing IPv4 and IPv6 addresses")?;
    let mut out = Vec::new();
    for answer in answers {
        let RouteNetlinkMessage::NewAddress(msg) = answer else {
            continue;
        };
        if msg.header.index != ifindex {
            continue;
        }
        // IFA_LOCAL is the address itself where it differs from IFA_ADDRESS (a peer's).
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = local.or(address) {
            out.push((ip, msg.header.prefix_len));
        }
    }
    Ok(out)
}

/// The interface's IPv6 link-local addresses (fe80::/10), in the kernel's order; empty when
/// it has none (IPv6 off, `addrgenmode none`, or the interface never came up).
pub fn link_locals(ifindex: u32) -> Result<Vec<Ipv6Addr>> {
    let mut req = AddressMessage::default();
    req.header.family = AddressFamily::Inet6;
    let answers = rtnl::request(RouteNetlinkMessage::GetAddress(req), NLM_F_DUMP)
        .context("listing IPv6 addresses")?;
    Ok(answers
        .into_iter()
        .filter_map(|answer| match answer {
            RouteNetlinkMessage::NewAddress(msg)
                if msg.header.index == ifindex && msg.header.family == AddressFamily::Inet6 =>
            {
                msg.attributes.into_iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V6(ip)) if is_link_local(&ip) => Some(ip),
                    _ => None,
                })
            }
            _ => None,
        })
        .collect())
}

/// fe80::/10.
pub fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}
