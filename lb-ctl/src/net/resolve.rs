//! What `apply` needs of the kernel for the backends of a config: route backends' MACs, from
//! the kernel's neighbour table of the attached interfaces (asking the kernel to resolve the
//! ones it does not know yet), and the outer source of tunnel backends that configure none,
//! from the kernel's route to each.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use crate::{
    config::{Config, Forwarding},
    net::{
        neigh::{self, Resolution},
        nexthop::{self, NextHop},
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
    tunnel_routes(config).sources
}

/// What the kernel's routes say of a config's tunnel backends.
#[derive(Clone, Debug, Default)]
pub struct TunnelRoutes {
    /// The sources of the backends without a configured `source` (see [`tunnel_sources`]).
    pub sources: Sources,
    /// The next hop of every tunnel backend that has a unicast route.
    pub next_hops: BTreeSet<NextHop>,
}

/// One route lookup per tunnel backend address of `config`: the outer sources
/// ([`tunnel_sources`]) and the next hops the data path will send to.
pub fn tunnel_routes(config: &Config) -> TunnelRoutes {
    let mut addrs: Vec<(IpAddr, bool)> = config
        .services
        .iter()
        .flat_map(|s| s.backends.iter())
        .filter_map(|b| Some((b.address, b.forward.tunnel()?.source.is_none())))
        .collect();
    addrs.sort();
    addrs.dedup();
    let mut out = TunnelRoutes::default();
    for (addr, wants_source) in addrs {
        let found = route::get(addr);
        if let Ok(Some(r)) = &found
            && let Some(hop) = nexthop::of_route(addr, r)
        {
            out.next_hops.insert(hop);
        }
        if wants_source {
            let source = found
                .and_then(|r| route::source_of(addr, r.as_ref()))
                .map_err(|e| format!("{e:#}"));
            out.sources.insert(addr, source);
        }
    }
    out
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
