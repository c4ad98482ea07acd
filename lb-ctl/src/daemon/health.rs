//! The daemon's side of health checking: one probe task per distinct check ([`ProbeId`]),
//! its transitions fanned out to every backend that shares it and applied in batches, the
//! quorum of each service, the services' notify hooks, and the periodic summary. Health
//! reports (which backends are down, and why); what that means for the maps is decided in
//! [`super::apply`].

use std::collections::{HashMap, HashSet};

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{Daemon, conditions::named};
use crate::health::{
    State, Transition,
    probes::{self, ProbeEvent, ProbeId},
    state::{Held, Key, Quorum, live_weight},
};

/// One running probe, and the backends that share it.
pub(super) struct Probe {
    generation: u64,
    handle: JoinHandle<()>,
    state: State,
    /// Why it is down (its last transition's reason).
    reason: String,
    backends: Vec<Key>,
}

/// A backend's transition waiting to be applied and logged.
pub(super) struct Pending {
    key: Key,
    backend_port: u16,
    transition: Transition,
}

/// Records in `held` that the backend `key` is in `state` (down with `reason`, or up).
fn hold(held: &mut Held, key: &Key, state: State, reason: &str) {
    match state {
        State::Down => {
            held.insert(key.clone(), reason.to_string());
        }
        State::Up => {
            held.remove(key);
        }
    }
}

impl Daemon {
    /// Quorum states from the current health (at start and after a reload).
    pub(super) fn reset_quorum(&mut self) {
        self.quorum.clear();
        for s in &self.config.services {
            if let Some(q) = s.health.quorum {
                let live = live_weight(s, &self.health_down);
                self.quorum.insert(s.name.clone(), Quorum::new(live, q));
            }
        }
    }

    /// Updates the quorum states; logs the changes.
    fn update_quorum(&mut self) {
        for s in &self.config.services {
            let (Some(q), Some(state)) = (s.health.quorum, self.quorum.get_mut(&s.name)) else {
                continue;
            };
            let live = live_weight(s, &self.health_down);
            if let Some(up) = state.update(live, q, s.health.hysteresis) {
                if up {
                    info!(service = %s.name, live_weight = live, quorum = q, "quorum regained");
                } else {
                    warn!(service = %s.name, live_weight = live, quorum = q, "quorum lost");
                }
            }
        }
    }

    /// How many backends have a check.
    pub(super) fn health_keys(&self) -> usize {
        self.probes.values().map(|p| p.backends.len()).sum()
    }

    /// Starts, keeps or stops probes to match the config; backends that are checked the same
    /// way share one ([`ProbeId`]). A probe that stays keeps its state and its task, also when
    /// the backends sharing it change.
    pub(super) fn sync_probes(&mut self) {
        let mut wanted: HashMap<ProbeId, Vec<Key>> = HashMap::new();
        for s in &self.config.services {
            for b in &s.backends {
                if let Some(check) = s.health.check_for(b.address) {
                    let id = ProbeId::new(&s.name, (b.address, b.port), s.vip, check);
                    wanted
                        .entry(id)
                        .or_default()
                        .push((s.name.clone(), b.address));
                }
            }
        }
        // Backends checked before this sync (for `alpha`: a new one starts down).
        let known: HashSet<Key> = (self.probes.values())
            .flat_map(|p| p.backends.iter().cloned())
            .collect();
        // Stop what is gone.
        self.probes.retain(|id, p| {
            let keep = wanted.contains_key(id);
            if !keep {
                p.handle.abort();
            }
            keep
        });
        // Backends without a check are never down.
        let checked: HashSet<&Key> = wanted.values().flatten().collect();
        self.health_down.retain(|k, _| checked.contains(k));
        for (id, backends) in wanted {
            if let Some(p) = self.probes.get_mut(&id) {
                // A backend that joins an existing probe takes its state.
                for k in &backends {
                    hold(&mut self.health_down, k, p.state, &p.reason);
                }
                p.backends = backends;
                continue;
            }
            // New: down if every backend it serves was down before; with `alpha`, also a
            // backend never checked before (down until its first good check).
            let was_down = |k: &Key| {
                self.health_down.contains_key(k) || (id.check.alpha && !known.contains(k))
            };
            let initial = if backends.iter().all(was_down) {
                State::Down
            } else {
                State::Up
            };
            let reason = backends
                .first()
                .and_then(|k| self.health_down.get(k).cloned())
                .unwrap_or_else(|| {
                    if id.check.alpha {
                        "alpha: no good check yet".to_string()
                    } else {
                        String::new()
                    }
                });
            for k in &backends {
                hold(&mut self.health_down, k, initial, &reason);
            }
            let generation = self.next_generation;
            self.next_generation += 1;
            let handle = tokio::spawn(probes::run(
                id.clone(),
                generation,
                initial,
                self.semaphore.clone(),
                self.tx.clone(),
                self.delays.clone(),
                self.live.latency.clone(),
            ));
            self.probes.insert(
                id,
                Probe {
                    generation,
                    handle,
                    state: initial,
                    reason,
                    backends,
                },
            );
        }
    }

    /// Takes in a probe's transition for every backend that shares it (applied later, in a
    /// batch, by [`Daemon::settle_transitions`]).
    pub(super) fn probe_event(&mut self, ev: ProbeEvent) {
        let Some(p) = self.probes.get_mut(&ev.id) else {
            return;
        };
        if p.generation != ev.generation {
            return;
        }
        let t = ev.transition;
        p.state = t.to;
        p.reason = t.reason.clone();
        for key in &p.backends {
            hold(&mut self.health_down, key, t.to, &t.reason);
            self.pending.push(Pending {
                key: key.clone(),
                backend_port: ev.id.target.backend_port,
                transition: t.clone(),
            });
        }
    }

    /// Applies the transitions received since the last batch with one apply, then logs them
    /// (each on its own line when few, else a summary and each at debug level) and runs the
    /// services' notify hooks.
    pub(super) fn settle_transitions(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return;
        }
        self.update_quorum();
        // Applied first, so that the log lines mean "in effect".
        self.apply("health check");
        let many = !self.budgets[0].take(pending.len());
        for p in &pending {
            let ((service, addr), t) = (&p.key, &p.transition);
            (self.live).health(
                service,
                &addr.to_string(),
                t.from.as_str(),
                t.to.as_str(),
                &t.reason,
            );
            match (t.to, many) {
                (State::Down, false) => {
                    warn!(service = %service, backend = %addr, from = %t.from, to = %t.to, reason = %t.reason, "backend down")
                }
                (State::Up, false) => {
                    info!(service = %service, backend = %addr, from = %t.from, to = %t.to, reason = %t.reason, "backend up")
                }
                (_, true) => {
                    tracing::debug!(service = %service, backend = %addr, from = %t.from, to = %t.to, reason = %t.reason, "backend {}", t.to)
                }
            }
        }
        if many {
            for to in [State::Down, State::Up] {
                let of: Vec<&Pending> = pending.iter().filter(|p| p.transition.to == to).collect();
                if of.is_empty() {
                    continue;
                }
                let all: Vec<String> = of
                    .iter()
                    .map(|p| format!("{}/{} ({})", p.key.0, p.key.1, p.transition.reason))
                    .collect();
                let text = named(&all);
                let down_now = self.health_down.len();
                match to {
                    State::Down => {
                        warn!(count = of.len(), down = down_now, "backends down: {text}")
                    }
                    State::Up => info!(count = of.len(), down = down_now, "backends up: {text}"),
                }
            }
        }
        for p in pending {
            self.notify(&p);
        }
    }

    /// Runs the service's notify_up / notify_down hook for one transition.
    fn notify(&self, p: &Pending) {
        let ((service, addr), t, port) = (&p.key, &p.transition, p.backend_port);
        let hook = self
            .config
            .services
            .iter()
            .find(|s| &s.name == service)
            .and_then(|s| match t.to {
                State::Up => s.health.notify_up.clone(),
                State::Down => s.health.notify_down.clone(),
            });
        if let Some(cmd) = hook {
            let env = vec![
                ("LB_SERVICE", service.clone()),
                ("LB_BACKEND_ADDRESS", addr.to_string()),
                ("LB_BACKEND_PORT", port.to_string()),
                ("LB_STATE", t.to.as_str().to_string()),
                ("LB_REASON", t.reason.clone()),
            ];
            let (service, backend, command) = (service.clone(), *addr, cmd.clone());
            let done = Box::new(move |result| match result {
                Ok(0) => {}
                Ok(code) => {
                    warn!(service = %service, backend = %backend, command = %command, status = code, "notify hook failed")
                }
                Err(e) => {
                    warn!(service = %service, backend = %backend, command = %command, error = %e, "notify hook failed")
                }
            });
            self.hooks.spawn(cmd, env, done);
        }
    }

    /// The periodic summary: how the checks kept their schedule, what still holds.
    pub(super) fn summary(&mut self) {
        if let Some(s) = self.delays.take() {
            info!(
                checks = s.checks,
                backends_checked = self.health_keys(),
                probes = self.probes.len(),
                down = self.health_down.len(),
                late_p50_ms = s.p50.as_secs_f64() * 1e3,
                late_p99_ms = s.p99.as_secs_f64() * 1e3,
                late_max_ms = s.max.as_secs_f64() * 1e3,
                waited_for_slot = s.waited,
                "health checks: started late against their schedule (p50, p99: bucket bounds)"
            );
        }
        self.warnings.summary();
        self.forwarding.summary();
        self.next_hop_errors.summary();
    }

    /// Takes every probe's task out, to be aborted and waited for when the daemon stops.
    pub(super) fn take_checkers(&mut self) -> Vec<JoinHandle<()>> {
        self.probes.drain().map(|(_, p)| p.handle).collect()
    }
}
