//! Keeping the data path in line with the desired state: the kernel's neighbour events
//! (a backend's MAC followed as soon as the kernel learns it, a FAILED entry made unresolved),
//! unresolved MACs asked for again with a backoff, and the periodic repair of pins and maps.

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{Daemon, RECONCILE, RESOLVE_MAX, RESOLVE_MIN, attached_ifindexes};
use crate::{
    config::Config,
    health::state::sorry_backend,
    maps::repair,
    net::{
        neigh::{self, NeighEvent, NeighState},
        resolve,
    },
    plan::convert::format_mac,
    plan::{Resolved, Sources},
};

impl Daemon {
    /// Repairs the pins, retries unresolved MACs, and writes back whatever differs between
    /// the maps and the desired state.
    pub(super) fn reconcile(&mut self) {
        let dir = self.opts.pin_dir.clone();
        match repair::pins(&dir, &self.opts.ifaces, self.opts.mode, &mut self.maps) {
            Ok(repaired) => {
                for r in &repaired {
                    warn!(repair = %r, "reconcile: repaired");
                }
                if !repaired.is_empty() {
                    match attached_ifindexes(&self.maps) {
                        Ok(i) => self.ifindexes = i,
                        Err(e) => error!(error = %format!("{e:#}"), "reconcile"),
                    }
                }
            }
            Err(e) => error!(error = %format!("{e:#}"), "reconcile: repairing the pins failed"),
        }
        // Unresolved MACs are asked for again with a backoff (5 s doubling to 60 s), so that
        // a dead address or a full neighbour table is not hammered every period.
        // Tunnel backends' sources follow the kernel's routes: a route that moved changes
        // the source at this tick (the data path's FIB lookup follows next hops by itself,
        // whose neighbour entries are kept resolved here too).
        if self.follow_routes() {
            self.apply("route change");
        }
        if self.resolved.macs.values().any(Result::is_err) && Instant::now() >= self.resolve_due {
            let before = self.resolved.macs.clone();
            self.resolve();
            // Only a newly resolved (or lost) MAC is an apply of its own; otherwise the
            // reconcile apply below is the only one this tick.
            if self.resolved.macs != before {
                self.apply("MAC resolution");
            }
            self.resolve_backoff = if self.resolved.macs.values().any(Result::is_err) {
                (self.resolve_backoff * 2).min(RESOLVE_MAX)
            } else {
                RESOLVE_MIN
            };
            self.resolve_due = Instant::now() + self.resolve_backoff;
        }
        self.apply(RECONCILE);
        // The VIP pre-filter and the service ids' keys follow SERVICES: a slot that differs
        // (written by something else, or lost) is put right.
        match crate::maps::derived::sync(&mut self.maps, &[]) {
            Ok(crate::maps::derived::Synced {
                filter_words: 0,
                key_slots: 0,
            }) => {}
            Ok(n) => {
                warn!(
                    words = n.filter_words,
                    slots = n.key_slots,
                    "reconcile: VIP_FILTER or SERVICE_KEYS differed from SERVICES: repaired"
                );
                if let Err(e) = self.maps.bump_generation() {
                    warn!(error = %format!("{e:#}"), "reconcile: the flow caches' generation");
                }
            }
            Err(e) => warn!(error = %format!("{e:#}"), "reconcile: the maps that follow SERVICES"),
        }
        // The connection table's membership bitmap: the bits of entries gone since the last
        // tick go (a stale bit only costs a SYN its lookup).
        if let Err(e) = self.maps.filter.rebuild(&self.maps.flows) {
            warn!(error = %format!("{e:#}"), "rebuilding FLOW_FILTER");
        }
        // lc/wlc counts: drop connections that vanished without FIN or RST.
        match crate::maps::recount_connections(&mut self.maps, crate::maps::view::now_ns()) {
            Ok(0) => {}
            Ok(n) => info!(backends = n, "active connection counts corrected"),
            Err(e) => warn!(error = %format!("{e:#}"), "recounting connections"),
        }
    }

    /// Takes in what the kernel says of a neighbour; true when a backend's MAC changed (the
    /// caller applies).
    pub(super) fn neigh_event(&mut self, ev: NeighEvent) -> bool {
        match ev {
            NeighEvent::Changed {
                ifindex,
                addr,
                state,
                usable,
            } => {
                if !self.ifindexes.contains(&ifindex) {
                    return false;
                }
                let Some(current) = self.resolved.macs.get(&addr) else {
                    return false;
                };
                match usable {
                    Some(n) if current.as_ref().ok() != Some(&n.mac) => {
                        let mac = format_mac(&n.mac);
                        match current {
                            Ok(old) => info!(
                                backend = %addr,
                                old = %format_mac(old),
                                new = %mac,
                                "backend MAC changed in the neighbour table: following it"
                            ),
                            Err(_) => info!(backend = %addr, mac = %mac, "backend MAC resolved"),
                        }
                        self.resolved.macs.insert(addr, Ok(n.mac));
                        true
                    }
                    None if state == NeighState::Failed && current.is_ok() => {
                        let by = neigh::protocol(addr);
                        warn!(
                            backend = %addr,
                            "backend does not answer {by} (neighbour entry FAILED): no traffic \
                             until it does"
                        );
                        self.resolved.macs.insert(
                            addr,
                            Err(format!(
                                "no answer to {by} (the kernel's neighbour entry FAILED)"
                            )),
                        );
                        true
                    }
                    _ => false,
                }
            }
            NeighEvent::Deleted { ifindex, addr } => {
                // The kernel forgot it (garbage collection): have it resolved again, so that a
                // later change of MAC (a gratuitous ARP) updates an entry that exists.
                if self.ifindexes.contains(&ifindex)
                    && self.resolved.macs.contains_key(&addr)
                    && let Err(e) = neigh::trigger(ifindex, addr)
                {
                    tracing::debug!(backend = %addr, error = %format!("{e:#}"), "resolving again");
                }
                false
            }
            NeighEvent::Overrun => {
                warn!("neighbour events were lost (socket buffer full): reading the table again");
                self.resolve();
                true
            }
        }
    }

    /// Every backend of the file with the sorry servers, which need MACs (or sources) too.
    fn with_sorry_servers(&self) -> Config {
        let mut all = self.config.clone();
        for s in &mut all.services {
            s.backends.extend(sorry_backend(s));
        }
        all
    }

    pub(super) fn resolve(&mut self) {
        let all = self.with_sorry_servers();
        let (ifindexes, timeout) = (self.ifindexes.clone(), self.opts.resolve_timeout);
        let old = std::mem::take(&mut self.resolved.sources);
        let (macs, routes) = tokio::task::block_in_place(|| {
            (
                resolve::backend_macs(&all, &ifindexes, timeout),
                resolve::tunnel_routes(&all),
            )
        });
        self.keep_next_hops(&routes.next_hops);
        let sources = self.merge_sources(old, routes.sources);
        self.resolved = Resolved { macs, sources };
    }

    /// Looks up the tunnel backends' routes again: their sources (true when one changed) and
    /// next hops (kept resolved).
    pub(super) fn follow_routes(&mut self) -> bool {
        let all = self.with_sorry_servers();
        let tunnels = all.services.iter().any(has_tunnel);
        if self.resolved.sources.is_empty() && self.next_hops.is_empty() && !tunnels {
            return false;
        }
        let fresh = tokio::task::block_in_place(|| resolve::tunnel_routes(&all));
        self.keep_next_hops(&fresh.next_hops);
        let old = std::mem::take(&mut self.resolved.sources);
        let merged = self.merge_sources(old.clone(), fresh.sources);
        let changed = merged != old;
        self.resolved.sources = merged;
        changed
    }

    /// The new lookups over the old, logged: a changed source is followed; a lookup that
    /// fails where one succeeded before keeps the last source (the data path asks the FIB per
    /// packet and passes what it cannot route to the kernel, counted as `pass_no_route`),
    /// rather than taking the backend out of service for a route that flaps.
    fn merge_sources(&mut self, old: Sources, fresh: Sources) -> Sources {
        let mut merged = Sources::new();
        for (addr, now) in fresh {
            let kept = match (old.get(&addr), &now) {
                (Some(Ok(was)), Ok(src)) if was != src => {
                    info!(backend = %addr, old = %was, new = %src, "tunnel source changed with the route: following it");
                    None
                }
                (Some(Ok(was)), Err(why)) => {
                    // Said once, when it starts; the periodic summary does not repeat it.
                    if self.unrouted.insert(addr) {
                        warn!(backend = %addr, source = %was, error = %why, "no route to a tunnel backend now: keeping its last source");
                    }
                    Some(Ok(*was))
                }
                _ => None,
            };
            if now.is_ok() && self.unrouted.remove(&addr) {
                info!(backend = %addr, "tunnel backend routed again");
            }
            merged.insert(addr, kept.unwrap_or(now));
        }
        self.unrouted.retain(|a| merged.contains_key(a));
        merged
    }
}

/// Whether a service has a tunnel backend.
fn has_tunnel(s: &crate::config::ServiceConfig) -> bool {
    s.backends.iter().any(|b| b.forward.tunnel().is_some())
}
