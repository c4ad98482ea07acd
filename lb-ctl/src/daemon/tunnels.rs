//! What tunnel backends need of the director's kernel beyond the maps: its interfaces must
//! forward the outer family (checked, never changed: the sysctls are the user's), and the
//! next hops of their routes must stay resolved (managed neighbour entries the daemon adds
//! for the next hops it found, and removes when no tunnel backend uses them any more).

use std::collections::BTreeSet;

use tracing::{info, warn};

use super::Daemon;
use crate::net::{
    forwarding::{self, Families},
    link,
    nexthop::{self, Kept, NextHop},
};

impl Daemon {
    /// Logs, when it starts and when it ends, every attached interface that does not forward
    /// a family the tunnel backends need.
    pub(super) fn check_forwarding(&mut self) {
        let need = Families::of_config(&self.config);
        let found = forwarding::warnings(&self.opts.ifaces, need);
        self.forwarding.update(found);
    }

    /// Keeps `wanted` (the next hops of the tunnel backends' routes now) resolved: each one
    /// out of an attached interface gets a managed neighbour entry (asked again every time,
    /// which also puts back an entry someone deleted, and re-starts resolution on a kernel
    /// without managed entries); the managed entries of next hops no longer wanted are removed.
    pub(super) fn keep_next_hops(&mut self, wanted: &BTreeSet<NextHop>) {
        let wanted: BTreeSet<NextHop> = (wanted.iter())
            .filter(|h| self.ifindexes.contains(&h.ifindex))
            .copied()
            .collect();
        let mut failed = Vec::new();
        for &hop in &wanted {
            match nexthop::keep(hop) {
                Ok(kept) => {
                    if self.next_hops.insert(hop, kept) != Some(kept) {
                        let dev = link::name(hop.ifindex)
                            .unwrap_or_else(|_| format!("interface {}", hop.ifindex));
                        match kept {
                            Kept::Managed => info!(
                                next_hop = %hop.addr,
                                dev = %dev,
                                "tunnel next hop kept resolved (managed neighbour entry)"
                            ),
                            Kept::Used => warn!(
                                next_hop = %hop.addr,
                                dev = %dev,
                                "the kernel refused a managed neighbour entry (Linux 5.16+) for \
                                 a tunnel next hop: asking it to resolve at every reconcile tick \
                                 instead"
                            ),
                            Kept::Static => info!(
                                next_hop = %hop.addr,
                                dev = %dev,
                                "tunnel next hop has a static neighbour entry: left as it is"
                            ),
                        }
                    }
                }
                Err(e) => failed.push(format!("{}: {e:#}", hop.addr)),
            }
        }
        self.next_hop_errors.update(failed);
        let gone: Vec<NextHop> = (self.next_hops.keys())
            .filter(|h| !wanted.contains(h))
            .copied()
            .collect();
        for hop in gone {
            if self.next_hops.remove(&hop) == Some(Kept::Managed) {
                match nexthop::release(hop) {
                    Ok(()) => info!(
                        next_hop = %hop.addr,
                        "no tunnel backend uses this next hop any more: its managed neighbour \
                         entry removed"
                    ),
                    Err(e) => {
                        warn!(next_hop = %hop.addr, error = %format!("{e:#}"), "removing a managed neighbour entry")
                    }
                }
            }
        }
    }

    /// Removes every managed neighbour entry the daemon added (`--detach-on-exit`).
    pub(super) fn release_next_hops(&mut self) {
        self.keep_next_hops(&BTreeSet::new());
    }
}
