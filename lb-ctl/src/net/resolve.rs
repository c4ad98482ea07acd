//! Backend MACs for `apply`: from the kernel's neighbour table of the attached interfaces,
//! asking the kernel to resolve the ones it does not know yet.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use crate::{
    config::Config,
    net::neigh::{self, Resolution},
    plan::Macs,
};

/// Resolves every backend address of `config` on the attached interfaces `ifindexes`: each
/// address on the first interface whose link it is on. An address on no interface's link, or
/// that does not answer ARP (IPv4) or NDP (IPv6) within `timeout`, is unresolved, with the reason.
pub fn backend_macs(config: &Config, ifindexes: &[u32], timeout: Duration) -> Macs {
    let mut addrs: Vec<IpAddr> = config
        .services
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| b.address))
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
