//! Addresses of an interface (`ip addr add/del/show`), over rtnetlink, in the calling
//! thread's network namespace.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, Result};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage, AddressScope},
};

use super::rtnl;

fn message(ifindex: u32, addr: Ipv4Addr, prefix_len: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix_len;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = ifindex;
    msg.attributes
        .push(AddressAttribute::Local(IpAddr::V4(addr)));
    msg.attributes
        .push(AddressAttribute::Address(IpAddr::V4(addr)));
    msg
}

/// Adds `addr/prefix_len` to the interface. `Ok(false)` when it was already there.
pub fn add(ifindex: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<bool> {
    let msg = RouteNetlinkMessage::NewAddress(message(ifindex, addr, prefix_len));
    match rtnl::request(msg, NLM_F_CREATE | NLM_F_EXCL) {
        Ok(_) => Ok(true),
        Err(e) if rtnl::errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => {
            Err(e).with_context(|| format!("adding {addr}/{prefix_len} to interface {ifindex}"))
        }
    }
}

/// Removes `addr/prefix_len` from the interface. `Ok(false)` when it was not there.
pub fn del(ifindex: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<bool> {
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
