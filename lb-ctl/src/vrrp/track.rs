//! What an instance tracks (keepalived's `track_script`, `track_interface`, and services of
//! the file), and what that makes of it: a fault, or a priority moved by weights.
//!
//! The scripts run here ([`run_script`], through [`crate::exec`]: a process group, killed
//! with it at its timeout); services are judged by the daemon, which hands their state in
//! ([`super::instances::Instances::set_services`]); interfaces are looked at by the instance.
//! [`evaluate`] is pure.

use std::collections::BTreeMap;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{VrrpConfig, VrrpScript};

/// The results of scripts and services, by name; a name not there has not failed yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Results {
    pub scripts: BTreeMap<String, bool>,
    pub services: BTreeMap<String, bool>,
}

/// One instance's tracked things with their effective weights.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracking {
    pub scripts: Vec<(String, i32)>,
    pub interfaces: Vec<(String, i32)>,
    pub services: Vec<(String, i32)>,
}

impl Tracking {
    /// `cfg`'s tracking; a script's weight is its entry's, else the script's own.
    pub fn of(cfg: &VrrpConfig, scripts: &[VrrpScript]) -> Tracking {
        let script_weight = |name: &str| {
            (scripts.iter())
                .find(|s| s.name == name)
                .map_or(0, |s| s.weight)
        };
        Tracking {
            scripts: (cfg.track_script.iter())
                .map(|t| (t.name.clone(), t.weight.unwrap_or(script_weight(&t.name))))
                .collect(),
            interfaces: (cfg.track_interface.iter())
                .map(|t| (t.name.clone(), t.weight.unwrap_or(0)))
                .collect(),
            services: (cfg.track_service.iter())
                .map(|t| (t.name.clone(), t.weight.unwrap_or(0)))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty() && self.interfaces.is_empty() && self.services.is_empty()
    }
}

/// The fault (why), if any, and the priority that `base` becomes: keepalived's rules. A
/// failing thing of weight 0 is a fault; weight > 0 adds while it succeeds, < 0 adds (takes
/// away) while it fails. The sum stays within 1..=254; 255 (the address owner) stays.
pub fn evaluate(
    base: u8,
    t: &Tracking,
    results: &Results,
    interface_up: impl Fn(&str) -> bool,
) -> (Option<String>, u8) {
    let mut fault = None;
    let mut delta: i32 = 0;
    let checks = (t.scripts.iter())
        .map(|(n, w)| {
            (
                "script",
                n,
                *w,
                results.scripts.get(n).copied().unwrap_or(true),
            )
        })
        .chain((t.interfaces.iter()).map(|(n, w)| ("interface", n, *w, interface_up(n))))
        .chain((t.services.iter()).map(|(n, w)| {
            (
                "service",
                n,
                *w,
                results.services.get(n).copied().unwrap_or(true),
            )
        }));
    for (kind, name, weight, ok) in checks {
        match (weight, ok) {
            (0, false) => {
                fault.get_or_insert_with(|| format!("tracked {kind} {name} failed"));
            }
            (w, true) if w > 0 => delta += w,
            (w, false) if w < 0 => delta += w,
            _ => {}
        }
    }
    let priority = if base == 255 {
        255
    } else {
        (i32::from(base) + delta).clamp(1, 254) as u8
    };
    (fault, priority)
}

/// Runs `s` every interval (at most its timeout each) until the task is aborted; its result
/// (with `rise`/`fall`) goes into `results`. It starts as succeeding (keepalived's default).
pub async fn run_script(s: VrrpScript, results: watch::Sender<Results>) {
    results.send_modify(|r| {
        r.scripts.insert(s.name.clone(), true);
    });
    let mut ok = true;
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut tick = tokio::time::interval(s.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = crate::exec::run(&s.script, &[], s.timeout).await;
        let good = matches!(outcome, Ok(0));
        if good {
            failures = 0;
            successes += 1;
        } else {
            successes = 0;
            failures += 1;
        }
        let flip = if ok {
            !good && failures >= s.fall
        } else {
            good && successes >= s.rise
        };
        if !flip {
            continue;
        }
        ok = good;
        let how = match &outcome {
            Ok(code) => format!("exit status {code}"),
            Err(e) => e.clone(),
        };
        if ok {
            info!(script = %s.name, result = %how, "VRRP script succeeds");
        } else {
            warn!(script = %s.name, result = %how, "VRRP script fails");
        }
        results.send_modify(|r| {
            r.scripts.insert(s.name.clone(), ok);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(scripts: &[(&str, i32)], ifaces: &[(&str, i32)], services: &[(&str, i32)]) -> Tracking {
        let v = |l: &[(&str, i32)]| l.iter().map(|(n, w)| (n.to_string(), *w)).collect();
        Tracking {
            scripts: v(scripts),
            interfaces: v(ifaces),
            services: v(services),
        }
    }

    fn results(scripts: &[(&str, bool)], services: &[(&str, bool)]) -> Results {
        Results {
            scripts: scripts.iter().map(|(n, b)| (n.to_string(), *b)).collect(),
            services: services.iter().map(|(n, b)| (n.to_string(), *b)).collect(),
        }
    }

    #[test]
    fn weights_follow_keepalived() {
        let up = |_: &str| true;
        let tr = t(&[("up", 10), ("down", -30)], &[], &[("web", -50)]);
        // Everything fine: +10 only (the negative weights count while failing).
        let r = results(&[("up", true), ("down", true)], &[("web", true)]);
        assert_eq!(evaluate(100, &tr, &r, up), (None, 110));
        // `down` and `web` fail: 100 + 10 - 30 - 50.
        let r = results(&[("up", true), ("down", false)], &[("web", false)]);
        assert_eq!(evaluate(100, &tr, &r, up), (None, 30));
        // Clamped to 1..=254; 255 stays.
        assert_eq!(evaluate(20, &tr, &r, up), (None, 1));
        let r = results(&[("up", true)], &[]);
        assert_eq!(evaluate(250, &tr, &r, up), (None, 254));
        assert_eq!(evaluate(255, &tr, &r, up), (None, 255));
        // Not run yet: succeeding.
        assert_eq!(evaluate(100, &tr, &Results::default(), up), (None, 110));
    }

    #[test]
    fn weight_zero_failures_are_faults() {
        let tr = t(&[("chk", 0)], &[("eth1", 0)], &[("web", 0)]);
        let r = results(&[("chk", true)], &[("web", true)]);
        assert_eq!(evaluate(100, &tr, &r, |_| true), (None, 100));
        let (fault, _) = evaluate(100, &tr, &r, |i| i != "eth1");
        assert_eq!(fault.as_deref(), Some("tracked interface eth1 failed"));
        let r = results(&[("chk", false)], &[("web", false)]);
        let (fault, _) = evaluate(100, &tr, &r, |_| true);
        assert_eq!(fault.as_deref(), Some("tracked script chk failed"));
        let r = results(&[("chk", true)], &[("web", false)]);
        let (fault, _) = evaluate(100, &tr, &r, |_| true);
        assert_eq!(fault.as_deref(), Some("tracked service web failed"));
        // An interface with a weight moves the priority instead.
        let tr = t(&[], &[("eth1", -20)], &[]);
        assert_eq!(
            evaluate(100, &tr, &Results::default(), |_| false),
            (None, 80)
        );
    }

    #[test]
    fn a_script_weight_comes_from_the_entry_else_the_script() {
        let c = crate::config::parse(
            "services: []
vrrp_scripts:
  - {name: a, script: /bin/true, weight: -20}
  - {name: b, script: /bin/true, weight: 5}
vrrp:
  - name: VI_1
    interface: eth0
    virtual_router_id: 51
    virtual_addresses: [10.0.0.1]
    track_script: [a, {name: b, weight: 10}]
    track_interface: [eth1]
    track_service: []
",
            "f.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let tr = Tracking::of(&c.vrrp[0], &c.vrrp_scripts);
        assert_eq!(tr.scripts, [("a".into(), -20), ("b".into(), 10)]);
        assert_eq!(tr.interfaces, [("eth1".into(), 0)]);
        assert!(tr.services.is_empty());
    }
}
