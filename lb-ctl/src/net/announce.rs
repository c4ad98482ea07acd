//! The VIP routes a local BGP speaker exports (`announce:`): `VIP/32` (IPv6 `/128`), type
//! unicast, `dev lo`, protocol [`PROTO_LB`], in a routing table of their own that no `ip rule`
//! uses, so they change no forwarding on the director. The speaker imports the table (BIRD's
//! `kernel` protocol with `learn`, FRR's `ip import-table`) and announces the VIP; deleting the
//! route withdraws it. This is what `ip route replace VIP/32 dev lo table T proto 250` and
//! `ip route del ...` do, in the calling thread's network namespace.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{Context as _, Result};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
};

use super::{link, rtnl};

/// The routing protocol number of the project's routes (`proto 250`; name it `lb` in
/// `/etc/iproute2/rt_protos` to see it so in `ip route`).
pub const PROTO_LB: u8 = 250;

/// `RT_TABLE_COMPAT`: the header's table when the real one (above 255) is in `RTA_TABLE`.
const RT_TABLE_COMPAT: u8 = 252;

/// What the kernel holds for one VIP in a table: whether it is the route the daemon keeps
/// (unicast, `dev lo`), or something else under the project's protocol (changed by hand).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Unicast, `dev lo`: as the daemon writes it.
    Right,
    /// Another type or device.
    Changed,
}

fn message(vip: IpAddr, table: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    let (family, len, destination) = match vip {
        IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
    };
    m.header.address_family = family;
    m.header.destination_prefix_length = len;
    m.header.table = u8::try_from(table).unwrap_or(RT_TABLE_COMPAT);
    m.header.protocol = RouteProtocol::from(PROTO_LB);
    m.header.kind = RouteType::Unicast;
    // A route through a device without a gateway is of link scope (what `ip route` picks);
    // IPv6 routes are always of universe scope.
    m.header.scope = if vip.is_ipv4() {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    m.attributes.push(RouteAttribute::Destination(destination));
    m.attributes.push(RouteAttribute::Table(table));
    m
}

/// Adds (or replaces) the route of `vip` in `table`.
pub fn announce(vip: IpAddr, table: u32) -> Result<()> {
    let lo = link::ifindex("lo")?;
    let mut m = message(vip, table);
    m.attributes.push(RouteAttribute::Oif(lo));
    rtnl::request(
        RouteNetlinkMessage::NewRoute(m),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .with_context(|| format!("adding the route {vip} dev lo table {table} proto {PROTO_LB}"))?;
    Ok(())
}

/// Deletes the route of `vip` in `table` (only the project's); one that is already gone is
/// no error.
pub fn withdraw(vip: IpAddr, table: u32) -> Result<()> {
    match rtnl::request(RouteNetlinkMessage::DelRoute(message(vip, table)), 0) {
        Ok(_) => Ok(()),
        Err(e) if rtnl::errno(&e) == Some(libc::ESRCH) => Ok(()),
        Err(e) => Err(e.context(format!(
            "deleting the route {vip} table {table} proto {PROTO_LB}"
        ))),
    }
}

/// The project's host routes (protocol [`PROTO_LB`], /32 or /128) in `table`, both families.
pub fn list(table: u32) -> Result<BTreeMap<IpAddr, Held>> {
    let lo = link::ifindex("lo")?;
    let mut out = BTreeMap::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        let answers = rtnl::request(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP)
            .with_context(|| format!("listing the routes of table {table}"))?;
        for answer in answers {
            let RouteNetlinkMessage::NewRoute(r) = answer else {
                continue;
            };
            if u8::from(r.header.protocol) != PROTO_LB {
                continue;
            }
            let mut in_table = u32::from(r.header.table);
            let (mut dst, mut oif) = (None, None);
            for a in &r.attributes {
                match a {
                    RouteAttribute::Table(t) => in_table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                        dst = Some(IpAddr::V4(*a))
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                        dst = Some(IpAddr::V6(*a))
                    }
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            let whole = if family == AddressFamily::Inet {
                32
            } else {
                128
            };
            let Some(dst) = dst else { continue };
            if in_table != table || r.header.destination_prefix_length != whole {
                continue;
            }
            let right = r.header.kind == RouteType::Unicast && oif == Some(lo);
            out.insert(dst, if right { Held::Right } else { Held::Changed });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::net::{netns, testlab::Lab};

    /// `ip -n NS route show ARGS`.
    fn show(ns: &str, args: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(["-n", ns, "route", "show"])
            .args(args)
            .output()
            .expect("running ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn routes_are_added_listed_changed_and_deleted() {
        let lab = Lab::new("ann");
        let d = lab.director.clone();
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 168, 58, 133));
        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 0x133));
        netns::run_in(&d, move || {
            assert!(list(100)?.is_empty());
            announce(v4, 100)?;
            announce(v6, 100)?;
            // Twice is a replace, not an error.
            announce(v4, 100)?;
            // A table above 255 goes in RTA_TABLE.
            announce(v4, 70_000)?;
            let want = BTreeMap::from([(v4, Held::Right), (v6, Held::Right)]);
            assert_eq!(list(100)?, want);
            assert_eq!(list(70_000)?, BTreeMap::from([(v4, Held::Right)]));
            assert!(list(101)?.is_empty());
            Ok(())
        })
        .unwrap();
        // What `ip` shows, and a route of another protocol is not ours.
        let shown = show(&d, &["table", "100", "proto", "250"]);
        assert!(
            shown.contains("192.168.58.133 dev lo scope link"),
            "{shown}"
        );
        lab.ip(
            &d,
            &["route", "add", "10.9.9.9/32", "dev", "lo", "table", "100"],
        );
        // Changed by hand: another device.
        lab.ip(
            &d,
            &[
                "route",
                "replace",
                "192.168.58.133/32",
                "dev",
                Lab::DIRECTOR_DEV,
                "table",
                "100",
                "proto",
                "250",
            ],
        );
        netns::run_in(&d, move || {
            assert_eq!(
                list(100)?,
                BTreeMap::from([(v4, Held::Changed), (v6, Held::Right)])
            );
            announce(v4, 100)?;
            assert_eq!(list(100)?.get(&v4), Some(&Held::Right));
            withdraw(v4, 100)?;
            withdraw(v6, 100)?;
            // Already gone: no error.
            withdraw(v6, 100)?;
            withdraw(v4, 70_000)?;
            assert!(list(100)?.is_empty());
            assert!(list(70_000)?.is_empty());
            Ok(())
        })
        .unwrap();
        let shown = show(&d, &["table", "100"]);
        assert!(
            shown.contains("10.9.9.9 dev lo"),
            "another protocol's route stays: {shown}"
        );
    }
}
