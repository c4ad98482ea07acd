//! The kernel's route to an address (RTM_GETROUTE, what `ip route get ADDR` asks): its type,
//! gateway, outgoing interface and preferred source. Direct routing checks that a backend is
//! on the link ([`super::neigh::check_on_link`]); a tunnel takes the source the kernel would
//! give its own packets to the backend as the outer source ([`tunnel_source`]).

use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
};

use super::{link, rtnl};

/// The kernel's answer for one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub kind: RouteType,
    pub gateway: Option<IpAddr>,
    /// The outgoing interface's index.
    pub oif: Option<u32>,
    /// The preferred source (`src` in `ip route get`).
    pub source: Option<IpAddr>,
}

/// The route to `addr`; `Ok(None)` when the kernel has none (unreachable, prohibited).
pub fn get(addr: IpAddr) -> Result<Option<Route>> {
    let mut request = RouteMessage::default();
    let (family, len, destination) = match addr {
        IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
    };
    request.header.address_family = family;
    request.header.destination_prefix_length = len;
    request
        .attributes
        .push(RouteAttribute::Destination(destination));
    let answers = match rtnl::request(RouteNetlinkMessage::GetRoute(request), 0) {
        Ok(answers) => answers,
        Err(err) => match rtnl::errno(&err) {
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EINVAL) => {
                return Ok(None);
            }
            _ => return Err(err.context(format!("asking the kernel for the route to {addr}"))),
        },
    };
    let route = answers
        .into_iter()
        .find_map(|m| match m {
            RouteNetlinkMessage::NewRoute(route) => Some(route),
            _ => None,
        })
        .with_context(|| format!("the kernel answered no route for {addr}"))?;
    let mut out = Route {
        kind: route.header.kind,
        gateway: None,
        oif: None,
        source: None,
    };
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Gateway(a) | RouteAttribute::PrefSource(a) => {
                let ip = match a {
                    RouteAddress::Inet(a) => IpAddr::V4(*a),
                    RouteAddress::Inet6(a) => IpAddr::V6(*a),
                    _ => continue,
                };
                if matches!(attr, RouteAttribute::Gateway(_)) {
                    out.gateway = Some(ip);
                } else {
                    out.source = Some(ip);
                }
            }
            RouteAttribute::Via(RouteVia::Inet(gw)) => out.gateway = Some(IpAddr::V4(*gw)),
            RouteAttribute::Via(RouteVia::Inet6(gw)) => out.gateway = Some(IpAddr::V6(*gw)),
            RouteAttribute::Oif(index) => out.oif = Some(*index),
            _ => {}
        }
    }
    Ok(Some(out))
}

/// The outer source of a tunnel to `backend`: the preferred source of the kernel's route to
/// it, the address Linux would give its own packets to the backend (and the one the backend's
/// replies to the director, health checks included, would go back to).
pub fn tunnel_source(backend: IpAddr) -> Result<IpAddr> {
    source_of(backend, get(backend)?.as_ref())
}

/// [`tunnel_source`] from the kernel's answer `route` for `backend` (`None`: no route).
pub fn source_of(backend: IpAddr, route: Option<&Route>) -> Result<IpAddr> {
    let Some(route) = route else {
        bail!(
            "there is no route to {backend} in this network namespace; add one, or give the \
             service a `tunnel: {{ source: ... }}`"
        );
    };
    match route.kind {
        RouteType::Unicast => {}
        RouteType::Local => {
            bail!("{backend} is an address of this host itself, not a real server")
        }
        other => bail!(
            "the kernel's route to {backend} is of type {other:?}, not a unicast route a tunnel \
             can use"
        ),
    }
    match route.source {
        Some(src) if src.is_ipv4() == backend.is_ipv4() => Ok(src),
        _ => {
            let dev = route.oif.map_or_else(
                || "its interface".to_string(),
                |i| link::name(i).unwrap_or_else(|_| format!("interface index {i}")),
            );
            let family = if backend.is_ipv4() { "IPv4" } else { "IPv6" };
            bail!(
                "the kernel's route to {backend} names no {family} source address (does {dev} \
                 have one?); add an address, or give the service a `tunnel: {{ source: ... }}`"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::net::{netns, testlab::Lab};

    #[test]
    fn tunnel_sources_follow_the_route() {
        let lab = Lab::new("t");
        let d = &lab.director;
        // A second segment behind the peer, reached via it; a route with its own source.
        lab.ip(d, &["route", "add", "10.20.0.0/16", "via", "192.168.58.2"]);
        lab.ip(
            d,
            &["addr", "add", "192.168.58.34/32", "dev", Lab::DIRECTOR_DEV],
        );
        lab.ip(
            d,
            &[
                "route",
                "add",
                "10.30.0.0/16",
                "via",
                "192.168.58.2",
                "src",
                "192.168.58.34",
            ],
        );
        lab.ip(
            d,
            &["-6", "route", "add", "fd00:20::/64", "via", "fd00:58::2"],
        );
        netns::run_in(d, || {
            let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            assert_eq!(tunnel_source(v4(10, 20, 0, 11))?, Lab::DIRECTOR_IP);
            assert_eq!(tunnel_source(v4(10, 30, 0, 11))?, v4(192, 168, 58, 34));
            // On the link, too.
            assert_eq!(tunnel_source(Lab::PEER_IP)?, Lab::DIRECTOR_IP);
            let six = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 0x11));
            assert_eq!(tunnel_source(six)?, Lab::DIRECTOR_IP6);
            let route = get(v4(10, 20, 0, 11))?.expect("a route");
            assert_eq!(route.gateway, Some(Lab::PEER_IP));
            assert_eq!(route.oif, Some(link::ifindex(Lab::DIRECTOR_DEV)?));

            let err = tunnel_source(v4(172, 31, 0, 1)).unwrap_err().to_string();
            assert_eq!(
                err,
                "there is no route to 172.31.0.1 in this network namespace; add one, or give \
                 the service a `tunnel: { source: ... }`"
            );
            let err = tunnel_source(Lab::DIRECTOR_IP).unwrap_err().to_string();
            assert!(err.contains("is an address of this host itself"), "{err}");
            // The route moves: the source follows at the next lookup.
            Ok(())
        })
        .unwrap();
        lab.ip(
            d,
            &[
                "route",
                "replace",
                "10.20.0.0/16",
                "via",
                "192.168.58.2",
                "src",
                "192.168.58.34",
            ],
        );
        netns::run_in(d, || {
            let backend = IpAddr::V4(Ipv4Addr::new(10, 20, 0, 11));
            assert_eq!(
                tunnel_source(backend)?,
                IpAddr::V4(Ipv4Addr::new(192, 168, 58, 34))
            );
            Ok(())
        })
        .unwrap();
    }
}
