//! The up/down state machine of one backend (keepalived's `retry`, `delay_before_retry` and
//! `rise`), the service quorum with hysteresis, and what the data path gets from them.
//!
//! Everything here is pure: the daemon feeds it check outcomes and sleeps the delays it
//! returns, and the tests drive it with a fake clock.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    hash::{Hash, Hasher as _},
    net::IpAddr,
    time::Duration,
};

use crate::config::{BackendConfig, CheckConfig, Config, ServiceConfig};

/// A backend's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Up,
    Down,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one check: `Ok` with what was seen (`status 200`), or `Err` with why it failed.
pub type Outcome = Result<String, String>;

/// A change of state, with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub reason: String,
}

/// The timing and thresholds of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub interval: Duration,
    pub retry_delay: Duration,
    /// Consecutive failures before down (at least 1).
    pub retries: u32,
    /// Consecutive successes before up again (at least 1).
    pub rise: u32,
}

impl From<&CheckConfig> for Timing {
    fn from(c: &CheckConfig) -> Timing {
        Timing {
            interval: c.interval,
            retry_delay: c.retry_delay,
            retries: c.retries.max(1),
            rise: c.rise.max(1),
        }
    }
}

/// One backend's health: its state and the consecutive results that move it.
#[derive(Clone, Debug)]
pub struct Tracker {
    timing: Timing,
    state: State,
    fails: u32,
    successes: u32,
    last: Option<Outcome>,
}

impl Tracker {
    /// A backend that starts in `initial` (a new backend starts up, as `apply` would have it).
    pub fn new(timing: Timing, initial: State) -> Tracker {
        Tracker {
            timing,
            state: initial,
            fails: 0,
            successes: 0,
            last: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The last outcome recorded.
    pub fn last(&self) -> Option<&Outcome> {
        self.last.as_ref()
    }

    /// Records one outcome. Returns the transition it causes, if any, and how long to wait
    /// before the next check: `retry_delay` after a failure that has not yet brought an up
    /// backend down, else `interval`.
    pub fn record(&mut self, outcome: Outcome) -> (Option<Transition>, Duration) {
        let t = self.timing;
        let mut transition = None;
        let mut delay = t.interval;
        match &outcome {
            Ok(seen) => {
                self.fails = 0;
                if self.state == State::Down {
                    self.successes += 1;
                    if self.successes >= t.rise {
                        self.successes = 0;
                        self.state = State::Up;
                        let n = t.rise;
                        transition = Some(Transition {
                            from: State::Down,
                            to: State::Up,
                            reason: format!(
                                "{seen} ({n} consecutive successful check{})",
                                plural(n)
                            ),
                        });
                    }
                }
            }
            Err(why) => {
                self.successes = 0;
                if self.state == State::Up {
                    self.fails += 1;
                    if self.fails >= t.retries {
                        self.fails = 0;
                        self.state = State::Down;
                        let n = t.retries;
                        transition = Some(Transition {
                            from: State::Up,
                            to: State::Down,
                            reason: format!("{why} ({n} consecutive failed check{})", plural(n)),
                        });
                    } else {
                        delay = t.retry_delay;
                    }
                }
            }
        }
        self.last = Some(outcome);
        (transition, delay)
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The delay before the first check of the backend `key`: a fixed fraction of `warmup`
/// (from a hash of the key), so that checks configured together do not all start together.
pub fn first_delay(warmup: Duration, key: &impl Hash) -> Duration {
    if warmup.is_zero() {
        return Duration::ZERO;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let per_mille = (h.finish() % 1001) as u32;
    warmup * per_mille / 1000
}

/// keepalived's quorum with hysteresis: a service is up while the total weight of its up
/// backends stays at or above `quorum - hysteresis`, and up again once it reaches
/// `quorum + hysteresis`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    pub up: bool,
}

impl Quorum {
    /// The state at start: up when `live >= quorum`.
    pub fn new(live: u64, quorum: u32) -> Quorum {
        Quorum {
            up: live >= u64::from(quorum),
        }
    }

    /// Updates with the current live weight; returns the new state when it changed.
    pub fn update(&mut self, live: u64, quorum: u32, hysteresis: u32) -> Option<bool> {
        let (q, h) = (u64::from(quorum), u64::from(hysteresis));
        let next = if self.up {
            live >= q.saturating_sub(h)
        } else {
            live >= q + h
        };
        (next != self.up).then(|| {
            self.up = next;
            next
        })
    }
}

/// (service name, backend address).
pub type Key = (String, IpAddr);

/// What health reports: the backends it holds out of the data path, each with why. The
/// daemon decides what that means for the maps.
pub type Held = HashMap<Key, String>;

/// The total weight of the backends of `service` that are not in `down`.
pub fn live_weight(service: &ServiceConfig, down: &Held) -> u64 {
    service
        .backends
        .iter()
        .filter(|b| !down.contains_key(&(service.name.clone(), b.address)))
        .map(|b| u64::from(b.weight))
        .sum()
}

/// What health makes of a config: the config to apply and the backends to hold down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effective {
    pub config: Config,
    pub down: Held,
    /// Services that failed (every backend down, or quorum lost).
    pub failed: Vec<String>,
}

/// Applies the health results to `config`: `health_down` holds the backends whose checks
/// failed (with why), `quorum_lost` the services below quorum. A failed service (every backend
/// down, or its quorum lost) has all its backends down and its sorry server (if any) as an
/// extra backend. A down backend of a service with `inhibit_on_failure` gets weight 0 (its
/// existing flows stay) instead of being marked down.
pub fn effective(config: &Config, health_down: &Held, quorum_lost: &HashSet<String>) -> Effective {
    let mut out = config.clone();
    let mut down = Held::new();
    let mut failed = Vec::new();
    for s in &mut out.services {
        let is_down = |b: &BackendConfig| health_down.contains_key(&(s.name.clone(), b.address));
        let all_down = !s.backends.is_empty() && s.backends.iter().all(is_down);
        let lost = quorum_lost.contains(&s.name);
        let service_failed = all_down || lost;
        let mut reasons = Vec::new();
        for b in &mut s.backends {
            let key = (s.name.clone(), b.address);
            let reason = match health_down.get(&key) {
                Some(why) => why.clone(),
                None if lost => "the service is below its quorum".to_string(),
                None => continue,
            };
            if s.health.inhibit_on_failure {
                b.weight = 0;
            } else {
                reasons.push((key, reason));
            }
        }
        down.extend(reasons);
        if service_failed {
            failed.push(s.name.clone());
            s.backends.extend(sorry_backend(s));
        }
    }
    Effective {
        config: out,
        down,
        failed,
    }
}

/// A service's sorry server as the backend it becomes when the service fails (weight 1, the
/// service's port).
pub fn sorry_backend(s: &ServiceConfig) -> Option<BackendConfig> {
    s.health.sorry_server.map(|address| BackendConfig {
        address,
        port: s.port,
        weight: 1,
        forward: s.forward,
        line: s.line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const MS: Duration = Duration::from_millis(1);

    fn timing(retries: u32, rise: u32) -> Timing {
        Timing {
            interval: 1000 * MS,
            retry_delay: 200 * MS,
            retries,
            rise,
        }
    }

    /// A fake clock: runs `tracker` from t=0 with outcomes from `health(t)` (true = the
    /// server answers), sleeping the delays it returns, until `end`. Returns every transition
    /// with the time of the check that caused it.
    fn simulate(
        tracker: &mut Tracker,
        end: Duration,
        health: impl Fn(Duration) -> bool,
    ) -> Vec<(Duration, State)> {
        let mut now = Duration::ZERO;
        let mut seen = Vec::new();
        while now <= end {
            let outcome = if health(now) {
                Ok("status 200".to_string())
            } else {
                Err("connection refused".to_string())
            };
            let (transition, delay) = tracker.record(outcome);
            if let Some(t) = transition {
                seen.push((now, t.to));
            }
            now += delay;
        }
        seen
    }

    #[test]
    fn retries_then_down_with_retry_delay() {
        // Dies at 2.5 s: checks at 3.0 (fail 1), 3.2 (fail 2), 3.4 (fail 3 -> down).
        let mut t = Tracker::new(timing(3, 1), State::Up);
        let seen = simulate(&mut t, 10_000 * MS, |now| now < 2500 * MS);
        assert_eq!(seen, vec![(3400 * MS, State::Down)]);
        assert_eq!(t.state(), State::Down);
        assert!(matches!(t.last(), Some(Err(_))));
    }

    #[test]
    fn one_failure_is_not_enough_and_success_resets_the_count() {
        // Every other check fails: never 2 in a row, so never down.
        let mut t = Tracker::new(timing(2, 1), State::Up);
        for i in 0..20 {
            let outcome = if i % 2 == 0 {
                Ok("status 200".to_string())
            } else {
                Err("refused".to_string())
            };
            assert_eq!(t.record(outcome).0, None);
        }
        // retries: 1 goes down on the first failure.
        let mut t = Tracker::new(timing(1, 1), State::Up);
        let seen = simulate(&mut t, 5_000 * MS, |now| now < 1500 * MS);
        assert_eq!(seen, vec![(2000 * MS, State::Down)]);
    }

    #[test]
    fn rise_needs_consecutive_successes() {
        // Down from the start; comes back at 4.5 s; rise 3: checks at 5, 6, 7 -> up at 7.
        let mut t = Tracker::new(timing(2, 3), State::Down);
        let seen = simulate(&mut t, 10_000 * MS, |now| now >= 4500 * MS);
        assert_eq!(seen, vec![(7000 * MS, State::Up)]);
        // A failure in between starts the count again: up at 5, 6, down at 7, up 8, 9, 10.
        let mut t = Tracker::new(timing(2, 3), State::Down);
        let seen = simulate(&mut t, 12_000 * MS, |now| {
            now >= 4500 * MS && now != 7000 * MS
        });
        assert_eq!(seen, vec![(10_000 * MS, State::Up)]);
    }

    #[test]
    fn down_backends_are_checked_at_the_interval() {
        let mut t = Tracker::new(timing(2, 1), State::Down);
        let (tr, delay) = t.record(Err("refused".into()));
        assert_eq!((tr, delay), (None, 1000 * MS));
    }

    #[test]
    fn flapping_gives_one_transition_each_way() {
        let mut t = Tracker::new(timing(2, 2), State::Up);
        let seen = simulate(&mut t, 20_000 * MS, |now| {
            !(5000 * MS..9000 * MS).contains(&now)
        });
        // Fails at 5.0, 5.2 -> down at 5.2; checks at 6.2, 7.2, 8.2 fail, 9.2 ok, 10.2 ok.
        assert_eq!(
            seen,
            vec![(5200 * MS, State::Down), (10_200 * MS, State::Up)]
        );
    }

    #[test]
    fn reasons_say_why() {
        let mut t = Tracker::new(timing(1, 1), State::Up);
        let (tr, _) = t.record(Err("status 503".into()));
        let tr = tr.unwrap_or_else(|| unreachable!());
        assert_eq!((tr.from, tr.to), (State::Up, State::Down));
        assert_eq!(tr.reason, "status 503 (1 consecutive failed check)");
        let (tr, _) = t.record(Ok("status 200".into()));
        let tr = tr.unwrap_or_else(|| unreachable!());
        assert_eq!(tr.reason, "status 200 (1 consecutive successful check)");
    }

    #[test]
    fn warmup_spreads_within_bounds() {
        assert_eq!(first_delay(Duration::ZERO, &"x"), Duration::ZERO);
        let w = 2000 * MS;
        let delays: Vec<Duration> = (0..50).map(|i| first_delay(w, &("web", i))).collect();
        assert!(delays.iter().all(|d| *d <= w));
        assert!(delays.iter().any(|d| *d != delays[0]), "{delays:?}");
        assert_eq!(first_delay(w, &"same"), first_delay(w, &"same"));
    }

    #[test]
    fn quorum_with_hysteresis() {
        // quorum 4, hysteresis 1: lost below 3, regained at 5.
        let mut q = Quorum::new(6, 4);
        assert!(q.up);
        assert_eq!(q.update(4, 4, 1), None);
        assert_eq!(q.update(3, 4, 1), None);
        assert_eq!(q.update(2, 4, 1), Some(false));
        assert_eq!(q.update(4, 4, 1), None);
        assert_eq!(q.update(5, 4, 1), Some(true));
        // No hysteresis: lost below the quorum, back at it.
        let mut q = Quorum::new(1, 2);
        assert!(!q.up);
        assert_eq!(q.update(2, 2, 0), Some(true));
        assert_eq!(q.update(1, 2, 0), Some(false));
    }

    fn cfg(extra: &str) -> Config {
        let text = format!(
            "services:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n{extra}    backends:\n      - address: 10.0.0.1\n        weight: 2\n      - address: 10.0.0.2\n"
        );
        parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn key(last: u8) -> Key {
        (
            "web".to_string(),
            std::net::Ipv4Addr::new(10, 0, 0, last).into(),
        )
    }

    #[test]
    fn effective_marks_down_backends() {
        let c = cfg("    check: {type: tcp}\n");
        let down: HashMap<Key, String> = [(key(1), "refused".to_string())].into();
        let e = effective(&c, &down, &HashSet::new());
        assert_eq!(e.config, c);
        assert_eq!(e.down, [(key(1), "refused".to_string())].into());
        assert!(e.failed.is_empty());
        assert_eq!(live_weight(&c.services[0], &down), 1);
    }

    #[test]
    fn effective_inhibit_sets_weight_zero() {
        let c = cfg("    check: {type: tcp}\n    inhibit_on_failure: true\n");
        let down: HashMap<Key, String> = [(key(1), "refused".to_string())].into();
        let e = effective(&c, &down, &HashSet::new());
        assert!(e.down.is_empty());
        assert_eq!(e.config.services[0].backends[0].weight, 0);
        assert_eq!(e.config.services[0].backends[1].weight, 1);
    }

    #[test]
    fn effective_sorry_server_when_all_down() {
        let c = cfg("    check: {type: tcp}\n    sorry_server: 10.0.0.9\n");
        let one: HashMap<Key, String> = [(key(1), "refused".to_string())].into();
        let e = effective(&c, &one, &HashSet::new());
        assert_eq!(e.config.services[0].backends.len(), 2);
        let all: HashMap<Key, String> =
            [(key(1), "x".to_string()), (key(2), "y".to_string())].into();
        let e = effective(&c, &all, &HashSet::new());
        assert_eq!(e.failed, vec!["web".to_string()]);
        let b = &e.config.services[0].backends;
        assert_eq!(b.len(), 3);
        assert_eq!(
            (b[2].address, b[2].port, b[2].weight),
            ("10.0.0.9".parse().unwrap_or_else(|_| unreachable!()), 80, 1)
        );
        assert_eq!(e.down.len(), 2);
    }

    #[test]
    fn effective_quorum_lost_takes_every_backend_down() {
        let c = cfg("    check: {type: tcp}\n    quorum: 2\n    sorry_server: 10.0.0.9\n");
        let lost: HashSet<String> = ["web".to_string()].into();
        let e = effective(&c, &HashMap::new(), &lost);
        assert_eq!(e.down.len(), 2);
        assert_eq!(
            e.down.get(&key(2)).map(String::as_str),
            Some("the service is below its quorum")
        );
        assert_eq!(e.config.services[0].backends.len(), 3);
    }
}
