//! `announce:`: which VIPs the local BGP speaker may announce, and keeping their routes
//! ([`crate::net::announce`]) in line with it. A service is healthy enough while, for
//! `no_backend`, at least one of its backends is up with a weight above 0 (a sorry server
//! does not count: a director that can only serve the sorry page withdraws, and the routers
//! send the traffic to directors that can), and for `below_quorum`, while its quorum holds. A
//! VIP is announced (in a table) while ANY service on it with `announce` is healthy enough.
//!
//! The daemon owns the project's routes (protocol 250) in every table a config named since it
//! started: each apply adds what is missing and deletes what is not wanted, so a route left by
//! a crashed run is removed at start, a reload follows the new file, and a route deleted or
//! changed by hand is repaired at the next reconcile tick (logged as drift). On SIGTERM or
//! SIGINT every route is withdrawn first, then the daemon keeps running (health checks,
//! reloads and repairs of the maps go on) for the longest `drain` of its services.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    path::PathBuf,
    time::Duration,
};

use tracing::{error, info, warn};

use super::Daemon;
use crate::{
    config::{Config, WithdrawWhen},
    health::state::{Held, Quorum},
    net::{
        announce::{self, Held as Kernel},
        announced::{self, Report},
    },
};

/// A route the daemon keeps: (table, VIP).
type Route = (u32, IpAddr);

/// The announcement's state in the daemon.
#[derive(Default)]
pub(super) struct Announcer {
    /// The routes in the kernel as of the last sync.
    held: BTreeSet<Route>,
    /// Every table a config named since start: its routes are the daemon's to remove.
    tables: BTreeSet<u32>,
    /// Withdrawn for good: the daemon is stopping.
    draining: bool,
    /// Where `list` and `stats` read the states, and what was written last.
    report_path: PathBuf,
    reported: Vec<Report>,
}

/// Why a service does not let its VIP be announced; None when it is healthy enough.
fn unhealthy(
    s: &crate::config::ServiceConfig,
    when: WithdrawWhen,
    down: &Held,
    quorum: &HashMap<String, Quorum>,
) -> Option<&'static str> {
    match when {
        WithdrawWhen::NoBackend => {
            let up = s
                .backends
                .iter()
                .any(|b| b.weight > 0 && !down.contains_key(&(s.name.clone(), b.address)));
            (!up).then_some("no backend")
        }
        WithdrawWhen::BelowQuorum => {
            let holds = quorum.get(&s.name).is_none_or(|q| q.up);
            (!holds).then_some("below quorum")
        }
    }
}

/// Whether each service of `config` has a backend up with a weight above 0 (the sorry
/// server not counted), by name: what `track_service` of VRRP follows.
pub(super) fn healthy(config: &Config, down: &Held) -> std::collections::BTreeMap<String, bool> {
    (config.services.iter())
        .map(|s| {
            let up = unhealthy(s, WithdrawWhen::NoBackend, down, &HashMap::new()).is_none();
            (s.name.clone(), up)
        })
        .collect()
}

impl Daemon {
    /// [`healthy`] for the running config and health.
    pub(super) fn service_health(&self) -> std::collections::BTreeMap<String, bool> {
        healthy(&self.config, &self.health_down)
    }
}

/// The routes `config` wants with this health, and each announcing service's reason to
/// withdraw (None: healthy enough), in file order.
pub(super) fn wanted(
    config: &Config,
    down: &Held,
    quorum: &HashMap<String, Quorum>,
) -> (BTreeSet<Route>, Vec<Option<&'static str>>) {
    let mut routes = BTreeSet::new();
    let mut why = Vec::new();
    for s in &config.services {
        let Some(a) = &s.announce else { continue };
        let reason = unhealthy(s, a.withdraw_when, down, quorum);
        if reason.is_none() {
            routes.insert((a.table, s.vip));
        }
        why.push(reason);
    }
    (routes, why)
}

impl Announcer {
    pub(super) fn new(report_path: PathBuf) -> Announcer {
        Announcer {
            report_path,
            ..Announcer::default()
        }
    }
}

impl Daemon {
    /// Adds and deletes the VIP routes so that the kernel holds what the config and the health
    /// want; `why` is the apply's cause. Nothing happens (no netlink) while no config has named
    /// `announce`.
    pub(super) fn sync_announce(&mut self, why: &str) {
        let (mut want, reasons) = wanted(&self.config, &self.health_down, &self.quorum);
        let a = &mut self.announce;
        a.tables.extend(
            self.config
                .services
                .iter()
                .filter_map(|s| s.announce.map(|x| x.table)),
        );
        if a.tables.is_empty() {
            return;
        }
        if a.draining {
            want.clear();
        }
        let mut now_held = BTreeSet::new();
        for &table in &a.tables.clone() {
            let kernel = match announce::list(table) {
                Ok(k) => k,
                Err(e) => {
                    error!(table, error = %format!("{e:#}"), "announce: reading the routes failed");
                    // Unknown: keep believing what was held.
                    now_held.extend(a.held.iter().filter(|r| r.0 == table));
                    continue;
                }
            };
            for &(t, vip) in want.iter().filter(|r| r.0 == table) {
                let held_before = a.held.contains(&(t, vip));
                match kernel.get(&vip) {
                    Some(Kernel::Right) => {
                        now_held.insert((t, vip));
                        continue;
                    }
                    Some(Kernel::Changed) => {
                        warn!(vip = %vip, table, "announce: the VIP's route was changed by hand; replaced")
                    }
                    None if held_before => {
                        warn!(vip = %vip, table, "announce: the VIP's route was deleted by hand; announced again")
                    }
                    None => info!(vip = %vip, table, cause = why, "announced"),
                }
                match announce::announce(vip, table) {
                    Ok(()) => {
                        now_held.insert((t, vip));
                    }
                    Err(e) => {
                        error!(vip = %vip, table, error = %format!("{e:#}"), "announce failed")
                    }
                }
            }
            for (&vip, _) in kernel.iter().filter(|(v, _)| !want.contains(&(table, **v))) {
                if a.held.contains(&(table, vip)) {
                    info!(vip = %vip, table, cause = why, "withdrawn");
                } else {
                    warn!(vip = %vip, table, "announce: removing a route of protocol 250 that the config does not announce (left over)");
                }
                if let Err(e) = announce::withdraw(vip, table) {
                    error!(vip = %vip, table, error = %format!("{e:#}"), "withdrawing failed");
                    now_held.insert((table, vip));
                }
            }
        }
        a.held = now_held;
        let reports = self.announce_reports(&reasons);
        let a = &mut self.announce;
        if reports != a.reported {
            if let Err(e) = announced::write(&a.report_path, &reports) {
                warn!(error = %format!("{e:#}"), "writing the announce status for list/stats");
            }
            a.reported = reports;
        }
    }

    /// Each announcing service's state for `list` and `stats`.
    fn announce_reports(&self, reasons: &[Option<&'static str>]) -> Vec<Report> {
        let a = &self.announce;
        let services = self.config.services.iter().filter(|s| s.announce.is_some());
        services
            .zip(reasons)
            .filter_map(|(s, reason)| {
                let x = s.announce?;
                let announced = a.held.contains(&(x.table, s.vip));
                let state = match (announced, reason) {
                    _ if a.draining => "withdrawn: draining".to_string(),
                    (true, None) => "announced".to_string(),
                    (true, Some(r)) => {
                        format!("announced ({r} here; another service on the VIP is healthy)")
                    }
                    (false, Some(r)) => format!("withdrawn: {r}"),
                    (false, None) => {
                        "withdrawn: the route could not be added (see the log)".to_string()
                    }
                };
                Some(Report {
                    service: s.name.clone(),
                    vip: s.vip.to_string(),
                    table: x.table,
                    via: x.via.as_str().to_string(),
                    withdraw_when: x.withdraw_when.as_str().to_string(),
                    announced,
                    state,
                    pid: std::process::id(),
                })
            })
            .collect()
    }

    /// On SIGTERM/SIGINT: withdraws every route and returns how long to keep forwarding (the
    /// longest `drain`); None when nothing is announced (the daemon stops as before).
    pub(super) fn start_drain(&mut self) -> Option<Duration> {
        let drain = (self.config.services.iter())
            .filter_map(|s| s.announce.map(|a| a.drain))
            .max();
        if self.announce.tables.is_empty() && drain.is_none() {
            return None;
        }
        self.announce.draining = true;
        self.sync_announce("stop");
        let drain = drain.unwrap_or_default();
        info!("withdrawn; draining for {drain:?}");
        Some(drain)
    }

    /// The status file goes with the daemon.
    pub(super) fn stop_announce(&mut self) {
        if !self.announce.reported.is_empty() {
            announced::remove(&self.announce.report_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn file(extra: &str) -> Config {
        let text = format!(
            "announce: {{ table: 100 }}\nservices:\n  - name: a\n    vip: 192.168.58.133\n    port: 80\n    \
             backends:\n      - address: 192.168.58.135\n      - address: 192.168.58.136\n        \
             weight: 0\n  - name: b\n    vip: 192.168.58.133\n    port: 443\n    quorum: 2\n    \
             announce: {{ withdraw_when: below_quorum, table: 200 }}\n    backends:\n      \
             - address: 192.168.58.135\n        weight: 2\n{extra}"
        );
        config::parse(&text, "f.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_vip_is_wanted_while_a_service_on_it_is_healthy_enough() {
        let c = file("");
        let vip: IpAddr = "192.168.58.133".parse().unwrap();
        let (s1, s2): (IpAddr, IpAddr) = (
            "192.168.58.135".parse().unwrap(),
            "192.168.58.136".parse().unwrap(),
        );
        let mut down = Held::new();
        let mut quorum = HashMap::from([("b".to_string(), Quorum { up: true })]);
        let (routes, why) = wanted(&c, &down, &quorum);
        assert_eq!(routes, BTreeSet::from([(100, vip), (200, vip)]));
        assert_eq!(why, [None, None]);
        // The only backend with weight is down: a weight-0 backend does not count.
        down.insert(("a".into(), s1), "timeout".into());
        let (routes, why) = wanted(&c, &down, &quorum);
        assert_eq!(routes, BTreeSet::from([(200, vip)]));
        assert_eq!(why, [Some("no backend"), None]);
        // A down backend does not matter to a below_quorum service while its quorum holds.
        down.insert(("b".into(), s1), "timeout".into());
        assert_eq!(wanted(&c, &down, &quorum).1, [Some("no backend"), None]);
        quorum.insert("b".into(), Quorum { up: false });
        let (routes, why) = wanted(&c, &down, &quorum);
        assert!(routes.is_empty());
        assert_eq!(why, [Some("no backend"), Some("below quorum")]);
        let _ = s2;
        // No announce: nothing.
        let plain = config::parse(
            "services:\n  - name: a\n    vip: 192.168.58.133\n    port: 80\n",
            "f.yaml",
        )
        .unwrap();
        assert_eq!(
            wanted(&plain, &down, &quorum),
            (BTreeSet::new(), Vec::new())
        );
    }
}
