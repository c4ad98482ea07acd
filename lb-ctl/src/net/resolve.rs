//! What `apply` needs of the kernel for the backends of a config: route backends' MACs, from
//! the kernel's neighbour table of the attached interfaces (asking the kernel to resolve the
//! ones it does not know yet), and the outer source of tunnel backends that configure none,
//! from the kernel's route to each.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use crate::{
    config::{Config, Forwarding},
    net::{
        neigh::{self, Resolution},
        route,
    },
    plan::{Macs, Resolved, Sources},
};

/// [`backend_macs`] and [`tunnel_sources`] of `config`.
pub fn backends(config: &Config, ifindexes: &[u32], timeout: Duration) -> Resolved {
    Resolved {
        macs: backend_macs(config, ifindexes, timeout),
        sources: tunnel_sources(config),
    }
}

/// The outer source of every tunnel backend of `config` without a configured `source`: the
/// preferred source of the kernel's route to it (`Err`: why there is none).
pub fn tunnel_sources(config: &Config) -> Sources {
    let mut addrs: Vec<IpAddr> = config
        .services
        .iter()
        .flat_map(|s| s.backends.iter())
        .filter(|b| b.forward.tunnel().is_some_and(|t| t.source.is_none()))
        .map(|b| b.address)
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
        .into_iter()
        .map(|a| (a, route::tunnel_source(a).map_err(|e| format!("{e:#}"))))
        .collect()
}

/// Resolves every route backend's address of `config` on the attached interfaces `ifindexes`:
/// each address on the first interface whose link it is on. Tunnel backends need no MAC. An address on no interface's link, or
/// that does not answer ARP (IPv4) or NDP (IPv6) within `timeout`, is unresolved, with the reason.
pub fn backend_macs(config: &Config, ifindexes: &[u32], timeout: Duration) -> Macs {
    let mut addrs: Vec<IpAddr> = config
        .services
        .iter()
        .flat_map(|s| s.backends.iter())
        .filter(|b| b.forward == Forwarding::Route)
        .map(|b| b.address)
        .collect();
    addrs.sort();
    addrs.dedup();
    let mut macs = Macs::new();
    let mut by_iface: BTreeMap<u32, Vec<IpAddr>> = BTreeMap::new();
    for a in addrs {
        let mut first_err = None;
        let found = ifindexes
            .iter()
            .find(|&&i| match neigh::check_on_link(i, a) {
                Ok(()) => true,
                Err(e) => {
                    first_err.get_or_insert_with(|| format!("{e:#}"));
                    false
                }
            });
        match found {
            Some(&i) => by_iface.entry(i).or_default().push(a),
            None => {
                let why = first_err.unwrap_or_else(|| "no interface is attached".to_string());
                macs.insert(a, Err(why));
            }
        }
    }
    // All interfaces' lookups together take about one `timeout`, not one per address.
    for (ifindex, group) in by_iface {
        for (a, r) in neigh::resolve_all(ifindex, &group, timeout) {
            let r = match r {
                Resolution::Resolved(mac) => Ok(mac),
                Resolution::Unresolved(why) => Err(why),
            };
            macs.insert(a, r);
        }
    }
    macs
}
