//! Probes: the checks `lb-ctl run` actually makes. Backends that would be checked in exactly
//! the same way (the same address, port and check settings; for `exec` also the same service
//! and backend port, which its environment carries) share one probe: one task, one up/down
//! state machine, one connection per interval however many services list the real server.
//! A site with 1,000 services over 500 real servers makes 500 checks a second, not 16,000.
//!
//! Each probe's task sends the main loop only its transitions (failed checks are logged here,
//! at debug level), and records how late each check started against its schedule in
//! [`Delays`], which the daemon summarizes periodically.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Semaphore, mpsc},
    time::Instant,
};

use super::{
    State, Target, Tracker, Transition,
    state::{Timing, first_delay},
};
use crate::config::{CheckConfig, CheckKind};

/// What one probe checks. Backends with equal ids share the probe.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProbeId {
    pub check: CheckConfig,
    pub target: Target,
}

impl ProbeId {
    /// The probe for a backend of `service` at `address:backend_port` checked by `check`.
    /// Only `exec` checks see the service and the backend's port (in their environment), so
    /// only they are kept apart by them; only `via_vip` checks see the service's `vip`.
    pub fn new(
        service: &str,
        (address, backend_port): (std::net::IpAddr, u16),
        vip: std::net::IpAddr,
        check: &CheckConfig,
    ) -> Self {
        let port = check.port.unwrap_or(backend_port);
        let exec = check.kind == CheckKind::Exec;
        ProbeId {
            check: check.clone(),
            target: Target {
                service: if exec {
                    service.to_string()
                } else {
                    String::new()
                },
                address,
                port,
                backend_port: if exec { backend_port } else { port },
                vip: check.via_vip.then_some(vip),
            },
        }
    }
}

/// A transition of one probe, for the main loop.
#[derive(Debug)]
pub struct ProbeEvent {
    pub id: ProbeId,
    /// The probe's generation: a replaced probe's late events are ignored.
    pub generation: u64,
    pub transition: Transition,
}

/// Upper bounds of the delay buckets, in microseconds; the last bucket is everything above.
const BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// How late checks start against their schedule: a histogram since the last [`Delays::take`].
#[derive(Debug, Default)]
pub struct Delays {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    max_us: AtomicU64,
    /// Checks that had to wait for a `--max-concurrent-checks` slot.
    waited: AtomicU64,
}

/// A summary of [`Delays`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelaySummary {
    pub checks: u64,
    /// The bucket bounds the median and the 99th percentile fall under.
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub waited: u64,
}

impl Delays {
    /// Records one check that started `late` after its planned time.
    pub fn record(&self, late: Duration, waited: bool) {
        let us = late.as_micros().min(u64::MAX as u128) as u64;
        let i = BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        if waited {
            self.waited.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The summary since the last call, which starts a new period; `None` without checks.
    pub fn take(&self) -> Option<DelaySummary> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let max = Duration::from_micros(self.max_us.swap(0, Ordering::Relaxed));
        let waited = self.waited.swap(0, Ordering::Relaxed);
        let checks: u64 = counts.iter().sum();
        if checks == 0 {
            return None;
        }
        let quantile = |q: f64| {
            let want = ((checks as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= want {
                    return BOUNDS_US.get(i).map_or(max, |&b| {
                        Duration::from_micros(b).min(max.max(Duration::from_micros(1)))
                    });
                }
            }
            max
        };
        Some(DelaySummary {
            checks,
            p50: quantile(0.5),
            p99: quantile(0.99),
            max,
            waited,
        })
    }
}

/// Checks one probe forever: the first check spread over the warmup (or, without one, over
/// the first interval, so that thousands of probes do not all start in the same instant),
/// then checks, records and sleeps what the tracker says (counted from the planned start, so
/// slow checks do not drift). Sends only transitions.
pub async fn run(
    id: ProbeId,
    generation: u64,
    initial: State,
    semaphore: Arc<Semaphore>,
    tx: mpsc::Sender<ProbeEvent>,
    delays: Arc<Delays>,
    latency: super::latency::Latency,
) {
    let check = &id.check;
    let mut tracker = Tracker::new(Timing::from(check), initial);
    let spread = if check.warmup.is_zero() {
        check.interval
    } else {
        check.warmup
    };
    let mut planned = Instant::now() + first_delay(spread, &id);
    loop {
        tokio::time::sleep_until(planned).await;
        let outcome = {
            let (permit, waited) = match semaphore.try_acquire() {
                Ok(p) => (p, false),
                Err(_) => match semaphore.acquire().await {
                    Ok(p) => (p, true),
                    Err(_) => return,
                },
            };
            delays.record(Instant::now().saturating_duration_since(planned), waited);
            let started = Instant::now();
            let outcome = super::run_check(check, &id.target).await;
            drop(permit);
            latency.observe(
                check.kind.as_str(),
                &id.target,
                started.elapsed(),
                outcome.is_ok(),
            );
            outcome
        };
        if let Err(why) = &outcome {
            tracing::debug!(address = %id.target.address, port = id.target.port, reason = %why, "check failed");
        }
        let (transition, delay) = tracker.record(outcome);
        if let Some(transition) = transition {
            let ev = ProbeEvent {
                id: id.clone(),
                generation,
                transition,
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        planned += delay;
        // A probe that fell behind (a stall longer than its interval) starts again from now
        // rather than checking in a burst to catch up.
        let now = Instant::now();
        if planned < now {
            planned = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_quantiles_come_from_the_buckets() {
        let d = Delays::default();
        assert_eq!(d.take(), None);
        for _ in 0..98 {
            d.record(Duration::from_micros(50), false);
        }
        d.record(Duration::from_millis(20), true);
        d.record(Duration::from_millis(300), true);
        let s = d.take().unwrap_or_else(|| panic!("no summary"));
        assert_eq!(s.checks, 100);
        assert_eq!(s.p50, Duration::from_micros(100));
        assert_eq!(s.p99, Duration::from_millis(25));
        assert_eq!(s.max, Duration::from_millis(300));
        assert_eq!(s.waited, 2);
        // A new period.
        assert_eq!(d.take(), None);
    }

    #[test]
    fn probes_are_shared_except_by_exec_checks() {
        use crate::config::CheckKind;
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap_or_else(|_| unreachable!());
        let vip: std::net::IpAddr = "10.0.0.100".parse().unwrap_or_else(|_| unreachable!());
        let tcp = CheckConfig::new(CheckKind::Tcp);
        assert_eq!(
            ProbeId::new("web", (a, 80), vip, &tcp),
            ProbeId::new("api", (a, 80), vip, &tcp)
        );
        assert_ne!(
            ProbeId::new("web", (a, 80), vip, &tcp),
            ProbeId::new("web", (a, 81), vip, &tcp)
        );
        let exec = CheckConfig {
            command: Some("true".into()),
            ..CheckConfig::new(CheckKind::Exec)
        };
        assert_ne!(
            ProbeId::new("web", (a, 80), vip, &exec),
            ProbeId::new("api", (a, 80), vip, &exec)
        );
        // A via-VIP check goes to its service's VIP: services of other VIPs do not share it.
        let via = CheckConfig {
            via_vip: true,
            ..CheckConfig::new(CheckKind::Tcp)
        };
        let other: std::net::IpAddr = "10.0.0.101".parse().unwrap_or_else(|_| unreachable!());
        let web = ProbeId::new("web", (a, 80), vip, &via);
        assert_eq!(web, ProbeId::new("api", (a, 80), vip, &via));
        assert_ne!(web, ProbeId::new("web", (a, 80), other, &via));
        assert_eq!(web.target.vip, Some(vip));
        assert_eq!(ProbeId::new("web", (a, 80), vip, &tcp).target.vip, None);
    }
}
