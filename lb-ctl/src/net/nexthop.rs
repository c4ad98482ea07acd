//! Tunnel backends' next hops, kept resolved. The data path sends a tunnel packet to the MAC
//! of the next hop the kernel's FIB names (`bpf_fib_lookup`); when the kernel has no usable
//! neighbour entry for it, the lookup fails and the original packet passes to the kernel
//! (`pass_no_route`), where a director that holds the VIP answers a SYN with a RST. So the
//! daemon asks the kernel to keep each next hop resolved by itself: a "managed" neighbour
//! entry (NTF_EXT_MANAGED, Linux 5.16+, what `ip neigh replace ADDR dev IF managed` makes),
//! which the kernel resolves at once and keeps REACHABLE without traffic. The same request
//! carries NTF_USE, so a kernel without managed entries (which ignores the flag) still starts
//! resolving at each request, as `ip neigh replace ADDR dev IF use` does. The entries carry
//! the project's protocol number (`proto 250`, as its announced routes do), so a daemon that
//! starts finds the managed entries an earlier one left ([`left_over`]) and removes those it
//! no longer needs.

use std::net::IpAddr;

use anyhow::Context as _;
use anyhow::Result;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourFlags, NeighbourMessage,
        NeighbourState,
    },
    route::{RouteProtocol, RouteType},
};

use super::{
    announce::PROTO_LB,
    neigh::{self, NeighState},
    route::Route,
    rtnl,
};

/// A neighbour the data path sends tunnel packets to: the route's gateway, or the backend
/// itself when it is on the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NextHop {
    pub ifindex: u32,
    pub addr: IpAddr,
}

/// The next hop of the kernel's route to `backend`, if it is a unicast route with an output
/// interface.
pub fn of_route(backend: IpAddr, route: &Route) -> Option<NextHop> {
    if route.kind != RouteType::Unicast {
        return None;
    }
    Some(NextHop {
        ifindex: route.oif?,
        addr: route.gateway.unwrap_or(backend),
    })
}

/// How the kernel took [`keep`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// A managed entry: the kernel keeps it resolved.
    Managed,
    /// The kernel refused a managed entry; resolution was started (NTF_USE) and has to be
    /// asked for again (each reconcile tick).
    Used,
    /// The next hop has a static entry (PERMANENT or NOARP) of the user's: left as it is,
    /// never converted nor removed.
    Static,
}

/// Makes `hop`'s neighbour entry a managed one (created if missing, an existing dynamic entry
/// converted, resolution started); a kernel that refuses it gets a plain NTF_USE request. A
/// static entry (PERMANENT, NOARP) is the user's and is left alone.
pub fn keep(hop: NextHop) -> Result<Kept> {
    if let Some(n) = neigh::lookup(hop.ifindex, hop.addr)?
        && matches!(n.state, NeighState::Permanent | NeighState::NoArp)
    {
        return Ok(Kept::Static);
    }
    let mut request = message(hop);
    request.header.flags = NeighbourFlags::Use;
    request
        .attributes
        .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
    request
        .attributes
        .push(NeighbourAttribute::Protocol(RouteProtocol::from(PROTO_LB)));
    match rtnl::request(
        RouteNetlinkMessage::NewNeighbour(request),
        NLM_F_CREATE | NLM_F_REPLACE,
    ) {
        Ok(_) => Ok(Kept::Managed),
        Err(err)
            if matches!(
                rtnl::errno(&err),
                Some(libc::EINVAL | libc::EOPNOTSUPP | libc::EPROTONOSUPPORT)
            ) =>
        {
            neigh::trigger(hop.ifindex, hop.addr)?;
            Ok(Kept::Used)
        }
        Err(err) => Err(err.context(format!(
            "asking the kernel to keep the tunnel next hop {} resolved",
            hop.addr
        ))),
    }
}

/// Removes `hop`'s neighbour entry (one [`keep`] made managed); an entry already gone is fine.
pub fn release(hop: NextHop) -> Result<()> {
    match rtnl::request(RouteNetlinkMessage::DelNeighbour(message(hop)), 0) {
        Ok(_) => Ok(()),
        Err(err) if rtnl::errno(&err) == Some(libc::ENOENT) => Ok(()),
        Err(err) => Err(err.context(format!(
            "removing the managed neighbour entry of {}",
            hop.addr
        ))),
    }
}

/// The managed entries marked with the project's protocol number on `ifindexes`: what
/// [`keep`] made, in this process or an earlier one.
pub fn left_over(ifindexes: &[u32]) -> Result<Vec<NextHop>> {
    let mut request = NeighbourMessage::default();
    request.header.family = AddressFamily::Unspec;
    let answers = rtnl::request(RouteNetlinkMessage::GetNeighbour(request), NLM_F_DUMP)
        .context("reading the kernel's neighbour table")?;
    let mut found = Vec::new();
    for answer in answers {
        let RouteNetlinkMessage::NewNeighbour(msg) = answer else {
            continue;
        };
        if !ifindexes.contains(&msg.header.ifindex) {
            continue;
        }
        let mut addr = None;
        let mut ours = false;
        let mut managed = false;
        for attr in &msg.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                    addr = Some(IpAddr::V4(*ip))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                    addr = Some(IpAddr::V6(*ip))
                }
                NeighbourAttribute::Protocol(p) => ours = u8::from(*p) == PROTO_LB,
                NeighbourAttribute::ExtFlags(f) => managed = f.contains(NeighbourExtFlags::Managed),
                _ => {}
            }
        }
        if let (Some(addr), true, true) = (addr, ours, managed) {
            found.push(NextHop {
                ifindex: msg.header.ifindex,
                addr,
            });
        }
    }
    Ok(found)
}

fn message(hop: NextHop) -> NeighbourMessage {
    let (family, destination) = match hop.addr {
        IpAddr::V4(a) => (AddressFamily::Inet, NeighbourAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, NeighbourAddress::Inet6(a)),
    };
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = hop.ifindex;
    m.header.state = NeighbourState::None;
    m.attributes
        .push(NeighbourAttribute::Destination(destination));
    m
}

#[cfg(test)]
mod tests {
    use std::{process::Command, time::Duration};

    use super::*;
    use crate::net::{link, netns, route, testlab::Lab};

    /// `ip -d neigh show ADDR` in the director's namespace.
    fn shown(lab: &Lab, addr: IpAddr) -> String {
        let out = Command::new("ip")
            .args([
                "-n",
                &lab.director,
                "-d",
                "neigh",
                "show",
                &addr.to_string(),
            ])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn a_next_hop_is_kept_reachable_without_traffic_and_released() {
        let lab = Lab::new("n");
        let d = &lab.director;
        lab.ip(d, &["route", "add", "10.20.0.0/16", "via", "192.168.58.2"]);
        lab.ip(
            d,
            &["-6", "route", "add", "fd00:20::/64", "via", "fd00:58::2"],
        );
        let hops = netns::run_in(d, || {
            let mut hops = Vec::new();
            for backend in ["10.20.0.11", "fd00:20::11"] {
                let backend: IpAddr = backend.parse()?;
                let r = route::get(backend)?.expect("a route");
                let hop = of_route(backend, &r).expect("a next hop");
                assert_eq!(hop.ifindex, link::ifindex(Lab::DIRECTOR_DEV)?);
                assert_eq!(keep(hop)?, Kept::Managed);
                // Again: nothing changes, no error.
                assert_eq!(keep(hop)?, Kept::Managed);
                hops.push(hop);
            }
            Ok(hops)
        })
        .expect("keep");
        assert_eq!(hops[0].addr, Lab::PEER_IP);
        assert_eq!(hops[1].addr, Lab::PEER_IP6);
        for hop in &hops {
            let ok = lb_tests::lab::wait_until(Duration::from_secs(3), || {
                let s = shown(&lab, hop.addr);
                s.contains("managed") && s.contains("REACHABLE")
            });
            assert!(ok, "{}: {}", hop.addr, shown(&lab, hop.addr));
        }
        // And one made by hand, as an earlier daemon would have left it.
        lab.ip(
            d,
            &[
                "neigh",
                "replace",
                "192.168.58.9",
                "dev",
                Lab::DIRECTOR_DEV,
                "managed",
                "protocol",
                "250",
            ],
        );
        let ifindex = hops[0].ifindex;
        let found = netns::run_in(d, move || left_over(&[ifindex])).expect("left_over");
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(hops.iter().all(|h| found.contains(h)), "{found:?}");
        let hop = hops[0];
        netns::run_in(d, move || {
            release(hop)?;
            release(hop)
        })
        .expect("release");
        assert_eq!(shown(&lab, hop.addr), "");
    }

    #[test]
    fn a_static_entry_of_the_user_is_left_alone() {
        let lab = Lab::new("s");
        let d = &lab.director;
        let mac = "02:00:00:00:99:01";
        lab.ip(
            d,
            &[
                "neigh",
                "replace",
                "192.168.58.2",
                "lladdr",
                mac,
                "dev",
                Lab::DIRECTOR_DEV,
                "nud",
                "permanent",
            ],
        );
        let hop = netns::run_in(d, || {
            let hop = NextHop {
                ifindex: link::ifindex(Lab::DIRECTOR_DEV)?,
                addr: Lab::PEER_IP,
            };
            assert_eq!(keep(hop)?, Kept::Static);
            Ok(hop)
        })
        .expect("keep");
        let s = shown(&lab, hop.addr);
        assert!(
            s.contains(mac) && s.contains("PERMANENT") && !s.contains("managed"),
            "{s}"
        );
    }
}
