//! Writing the desired state: the service file with health's report applied ([`effective`]),
//! turned into the plan's terms and written with [`maps::apply`](crate::maps::apply), the one place the daemon
//! writes the maps. What it changed, and the services that failed or recovered, are logged one
//! line each while few, summarized past that.

use std::collections::HashSet;

use anyhow::Result;
use tracing::{error, info, warn};

use super::{Daemon, RECONCILE, conditions::named};
use crate::{
    config::Config,
    health::state::{Held, effective},
    plan,
};

/// Health's report in the plan's terms: a held backend is down (kept with its id and counters,
/// but not usable).
fn plan_down(held: &Held) -> plan::Down {
    held.iter()
        .map(|(key, why)| (key.clone(), why.clone()))
        .collect()
}

impl Daemon {
    /// Writes the config with the health results to the maps.
    pub(super) fn apply(&mut self, why: &str) {
        let lost: HashSet<String> = self
            .quorum
            .iter()
            .filter(|(_, q)| !q.up)
            .map(|(n, _)| n.clone())
            .collect();
        let eff = effective(&self.config, &self.health_down, &lost);
        self.log_failed(eff.failed.iter().cloned().collect());
        match self.write(&eff.config, &plan_down(&eff.down)) {
            Ok(plan) => {
                self.log_changes(why, &plan.changes);
                self.warnings.update(plan.warnings);
            }
            Err(e) => error!(cause = why, error = %format!("{e:#}"), "apply failed"),
        }
        if let Some(s) = self.sync.as_mut() {
            s.backends_changed();
        }
        self.check_forwarding();
        self.sync_announce(why);
    }

    /// The daemon's only write to the maps.
    fn write(&mut self, config: &Config, down: &plan::Down) -> Result<plan::Plan> {
        crate::maps::apply(&mut self.maps, config, &self.resolved, down, false)
    }

    /// Logs the services that failed or recovered since the last apply, and remembers `failed`.
    fn log_failed(&mut self, failed: HashSet<String>) {
        let mut newly: Vec<&String> = failed.difference(&self.failed).collect();
        let mut recovered: Vec<&String> = self.failed.difference(&failed).collect();
        newly.sort();
        recovered.sort();
        let count = newly.len() + recovered.len();
        for name in &newly {
            self.live.event(
                "service",
                name.to_string(),
                Some(("ok", "failed")),
                "no backend is up".into(),
            );
        }
        for name in &recovered {
            self.live.event(
                "service",
                name.to_string(),
                Some(("failed", "ok")),
                "a backend is up".into(),
            );
        }
        if count == 0 || self.budgets[2].take(count) {
            for name in &newly {
                let sorry = self
                    .config
                    .services
                    .iter()
                    .find(|s| &s.name == *name)
                    .and_then(|s| s.health.sorry_server);
                match sorry {
                    Some(addr) => {
                        warn!(service = %name, sorry_server = %addr, "service failed: sorry server in")
                    }
                    None => warn!(service = %name, "service failed: no backend is up"),
                }
            }
            for name in &recovered {
                info!(service = %name, "service recovered");
            }
        } else {
            let (total, newly_named, recovered_named) =
                (failed.len(), named(&newly), named(&recovered));
            if !newly.is_empty() {
                warn!(
                    count = newly.len(),
                    failed = total,
                    "services failed (no backend up; sorry servers in where configured): {newly_named}"
                );
            }
            if !recovered.is_empty() {
                info!(
                    count = recovered.len(),
                    failed = total,
                    "services recovered: {recovered_named}"
                );
            }
        }
        self.failed = failed;
    }

    /// Logs what an apply for `why` changed: each change on its own line when few; else a
    /// count, a few named, and each at debug level (a lost rack is one line, not a thousand).
    fn log_changes(&mut self, why: &str, changes: &[plan::Change]) {
        let many = !changes.is_empty() && !self.budgets[1].take(changes.len());
        for c in changes {
            if many {
                tracing::debug!(cause = why, change = %c, "applied");
            } else if why == RECONCILE {
                // Nothing of the daemon's changed: the maps had drifted.
                warn!(change = %c, "reconcile: the maps differed from the desired state; repaired");
            } else {
                info!(cause = why, change = %c, "applied");
            }
        }
        if many {
            let text = named(changes);
            if why == RECONCILE {
                warn!(
                    count = changes.len(),
                    "reconcile: the maps differed from the desired state; repaired: {text}"
                );
            } else {
                info!(cause = why, count = changes.len(), "applied: {text}");
            }
        }
    }
}
