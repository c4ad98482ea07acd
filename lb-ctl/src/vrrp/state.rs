//! The VRRP state machine of RFC 5798 6.4 (RFC 3768 6.4 for v2 is the same but for the
//! learned interval), as a pure struct: the caller gives it events with the time they happened
//! and carries out the [`Action`]s it returns; it never reads a clock.
//!
//! - Initialize -> Master at once for the address owner (priority 255), else -> Backup with
//!   the Master_Down_Timer at Master_Down_Interval = 3 x Master_Adver_Interval + Skew_Time,
//!   Skew_Time = (256 - priority) x Master_Adver_Interval / 256.
//! - Backup: the timer fires -> Master. An advert of priority 0 (the master is leaving) sets
//!   the timer to Skew_Time. Another advert resets it, unless preemption is on, the advert's
//!   priority is below ours, and `preempt_delay` has passed since we became backup: then it is
//!   ignored and the timer runs out (we preempt).
//! - Master: the Adver_Timer fires -> send an advert. An advert of priority 0 -> send one at
//!   once. A higher priority, or an equal one from a higher primary address -> Backup.
//!   Lower -> ignored (we stay master and our own adverts make the other one back off).
//! - Shutdown: a master sends priority 0 and removes its addresses.
//! - A fault (the interface down, a tracked script, interface or service failing with weight
//!   0, a member of the sync group in fault) removes the addresses; its end starts over.
//! - New [`Params`] (a reload, or a tracked weight moving the priority) take effect at once:
//!   a master advertises the new priority right away.
//! - In a sync group (`Params::grouped`), a backup whose timer runs out only *wants* to be
//!   master ([`Machine::wants_master`]); the group makes it master ([`Event::GroupMaster`])
//!   when every member wants it or is master, and a member leaving master for backup takes
//!   the others along ([`Event::GroupBackup`]).

use std::{
    fmt,
    net::IpAddr,
    time::{Duration, Instant},
};

/// The configuration the machine runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// 1-254, or 255 for the address owner.
    pub priority: u8,
    /// Advertisement_Interval.
    pub interval: Duration,
    pub preempt: bool,
    /// How long after becoming backup a lower-priority master is tolerated (keepalived's
    /// `preempt_delay`).
    pub preempt_delay: Duration,
    /// Our primary address on the interface (the tie-break between equal priorities): IPv4,
    /// or the link-local address for IPv6 (RFC 5798 6.4.3), compared as unsigned integers.
    pub primary: IpAddr,
    /// v3: a backup takes the master's interval (Master_Adver_Interval) from its adverts.
    pub learn_interval: bool,
    /// A member of a sync group: its own timer makes it want master, the group decides.
    pub grouped: bool,
}

/// A state of RFC 5798 6.4, and Fault (keepalived's: the interface is down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Initialize,
    Backup,
    Master,
    Fault,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "init",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The instance starts (or the interface came back).
    Startup,
    /// The instance stops (SIGTERM): a master hands over with priority 0.
    Shutdown,
    /// A valid advertisement of our VRID from another router.
    Advert {
        src: IpAddr,
        priority: u8,
        /// Its interval (v3's Max Adver Int; v2's equals ours, or it was discarded).
        interval: Duration,
    },
    /// A timer may have run out (call when `now >= deadline()`; early calls do nothing).
    Timer,
    /// A fault began (the interface lost its carrier, a tracked thing failed, ...).
    Fault(String),
    /// Every fault is over.
    FaultCleared,
    /// New parameters (a reload, or a tracked weight changed the priority).
    Params(Params),
    /// The sync group goes master: a backup becomes master now.
    GroupMaster,
    /// A member of the sync group left master for backup: a master follows.
    GroupBackup,
}

/// What the caller must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority.
    SendAdvert { priority: u8 },
    /// Add the virtual addresses to the interface.
    AddAddresses,
    /// Remove the virtual addresses from the interface.
    RemoveAddresses,
    /// Announce the virtual addresses with gratuitous ARP.
    SendGarps,
    /// The state changed (log it; run the notify hook of `to`).
    Transition {
        from: State,
        to: State,
        reason: String,
    },
}

/// One virtual router's state.
#[derive(Clone, Debug)]
pub struct Machine {
    p: Params,
    state: State,
    /// Master_Adver_Interval: ours, or (v3) the master's as learned.
    master_adver_interval: Duration,
    adver_timer: Option<Instant>,
    master_down_timer: Option<Instant>,
    /// While backup: before this, a lower-priority master is not preempted.
    preempt_after: Option<Instant>,
    /// The address of the master as last seen (ourselves when master).
    master: Option<IpAddr>,
    /// Grouped backup whose master down timer ran out: waits for the group.
    wants_master: bool,
}

impl Machine {
    pub fn new(p: Params) -> Machine {
        Machine {
            master_adver_interval: p.interval,
            p,
            state: State::Initialize,
            adver_timer: None,
            master_down_timer: None,
            preempt_after: None,
            master: None,
            wants_master: false,
        }
    }

    /// A grouped backup that would be master on its own (its master down timer ran out).
    pub fn wants_master(&self) -> bool {
        self.state == State::Backup && self.wants_master
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    /// The current master's address, as far as we know.
    pub fn master(&self) -> Option<IpAddr> {
        self.master
    }

    /// When [`Event::Timer`] is due next.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.adver_timer, self.master_down_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Skew_Time: (256 - priority) x Master_Adver_Interval / 256.
    pub fn skew(&self) -> Duration {
        self.master_adver_interval * (256 - u32::from(self.p.priority)) / 256
    }

    /// Master_Down_Interval: 3 x Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval * 3 + self.skew()
    }

    /// Feeds one event that happened at `now`; returns what to do.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.state, event) {
            (_, Event::Params(p)) => self.set_params(now, p, &mut out),
            (State::Initialize, Event::Startup) | (State::Fault, Event::FaultCleared) => {
                if self.p.priority == 255 {
                    self.become_master(now, "address owner (priority 255)", &mut out);
                } else {
                    self.become_backup(now, "startup", &mut out);
                }
            }
            (State::Initialize | State::Fault, _) => {}
            (_, Event::Fault(reason)) => {
                if self.state == State::Master {
                    // As keepalived: the backup takes over after its skew time, not after
                    // the master down interval (a down link just refuses to send it).
                    out.push(Action::SendAdvert { priority: 0 });
                    out.push(Action::RemoveAddresses);
                }
                self.stop_timers();
                self.wants_master = false;
                self.transition(State::Fault, &reason, &mut out);
                self.master = None;
            }
            (State::Backup, Event::GroupMaster) => {
                self.become_master(now, "sync group", &mut out);
            }
            (State::Master, Event::GroupBackup) => {
                self.adver_timer = None;
                out.push(Action::RemoveAddresses);
                self.master_down_timer = Some(now + self.master_down_interval());
                self.preempt_after = Some(now + self.p.preempt_delay);
                self.master = None;
                self.transition(State::Backup, "sync group", &mut out);
            }
            (_, Event::GroupMaster | Event::GroupBackup) => {}
            (State::Master, Event::Shutdown) => {
                self.stop_timers();
                out.push(Action::SendAdvert { priority: 0 });
                out.push(Action::RemoveAddresses);
                self.transition(State::Initialize, "shutdown", &mut out);
                self.master = None;
            }
            (State::Backup, Event::Shutdown) => {
                self.stop_timers();
                self.transition(State::Initialize, "shutdown", &mut out);
            }
            (State::Backup, Event::Timer) => {
                if self.master_down_timer.is_some_and(|t| now >= t) && self.p.grouped {
                    self.master_down_timer = None;
                    self.wants_master = true;
                } else if self.master_down_timer.is_some_and(|t| now >= t) {
                    self.become_master(
                        now,
                        "no advertisement within the master down interval",
                        &mut out,
                    );
                }
            }
            (State::Master, Event::Timer) => {
                if self.adver_timer.is_some_and(|t| now >= t) {
                    out.push(Action::SendAdvert {
                        priority: self.p.priority,
                    });
                    self.adver_timer = Some(now + self.p.interval);
                }
            }
            (
                State::Backup,
                Event::Advert {
                    src,
                    priority,
                    interval,
                },
            ) => {
                if priority == 0 {
                    // The master is leaving: take over after Skew_Time.
                    self.master_down_timer = Some(now + self.skew());
                    return out;
                }
                let may_preempt = self.p.preempt
                    && priority < self.p.priority
                    && self.preempt_after.is_none_or(|t| now >= t);
                if !may_preempt {
                    if self.p.learn_interval && !interval.is_zero() {
                        self.master_adver_interval = interval;
                    }
                    self.master = Some(src);
                    self.wants_master = false;
                    self.master_down_timer = Some(now + self.master_down_interval());
                }
            }
            (
                State::Master,
                Event::Advert {
                    src,
                    priority,
                    interval,
                },
            ) => {
                if priority == 0 {
                    out.push(Action::SendAdvert {
                        priority: self.p.priority,
                    });
                    self.adver_timer = Some(now + self.p.interval);
                } else if priority > self.p.priority
                    || (priority == self.p.priority && src > self.p.primary)
                {
                    if self.p.learn_interval && !interval.is_zero() {
                        self.master_adver_interval = interval;
                    }
                    self.adver_timer = None;
                    out.push(Action::RemoveAddresses);
                    let reason = format!("advertisement of priority {priority} from {src}");
                    // No preemption back right away: the new master is better.
                    self.preempt_after = None;
                    self.master_down_timer = Some(now + self.master_down_interval());
                    self.transition(State::Backup, &reason, &mut out);
                    self.master = Some(src);
                }
            }
            (State::Master | State::Backup, Event::Startup | Event::FaultCleared) => {}
        }
        out
    }

    /// Takes `p`: a master advertises a changed priority or interval at once; a backup's
    /// master down timer is computed again from now.
    fn set_params(&mut self, now: Instant, p: Params, out: &mut Vec<Action>) {
        if p == self.p {
            return;
        }
        let interval_changed = p.interval != self.p.interval;
        self.p = p;
        match self.state {
            State::Master => {
                self.master_adver_interval = self.p.interval;
                out.push(Action::SendAdvert {
                    priority: self.p.priority,
                });
                self.adver_timer = Some(now + self.p.interval);
            }
            State::Backup => {
                if interval_changed && !self.p.learn_interval {
                    self.master_adver_interval = self.p.interval;
                }
                if self.master_down_timer.is_some() {
                    self.master_down_timer = Some(now + self.master_down_interval());
                }
                if !self.p.grouped && self.wants_master {
                    // Left its group while waiting for it.
                    self.wants_master = false;
                    self.become_master(now, "no longer in a sync group", out);
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    fn stop_timers(&mut self) {
        self.adver_timer = None;
        self.master_down_timer = None;
    }

    fn transition(&mut self, to: State, reason: &str, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        out.push(Action::Transition {
            from,
            to,
            reason: reason.to_string(),
        });
    }

    fn become_master(&mut self, now: Instant, reason: &str, out: &mut Vec<Action>) {
        self.master_down_timer = None;
        self.wants_master = false;
        self.master_adver_interval = self.p.interval;
        out.push(Action::SendAdvert {
            priority: self.p.priority,
        });
        out.push(Action::AddAddresses);
        out.push(Action::SendGarps);
        self.adver_timer = Some(now + self.p.interval);
        self.master = Some(self.p.primary);
        self.transition(State::Master, reason, out);
    }

    fn become_backup(&mut self, now: Instant, reason: &str, out: &mut Vec<Action>) {
        // Whatever the interface holds from an earlier run goes: only a master has them.
        out.push(Action::RemoveAddresses);
        self.master_adver_interval = self.p.interval;
        self.adver_timer = None;
        self.master_down_timer = Some(now + self.master_down_interval());
        self.preempt_after = Some(now + self.p.preempt_delay);
        self.master = None;
        self.wants_master = false;
        self.transition(State::Backup, reason, out);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 58, 134));
    const LOWER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 58, 100));
    const HIGHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 58, 137));

    /// A fake clock: milliseconds after a fixed start.
    struct Clock(Instant);

    impl Clock {
        fn new() -> Clock {
            Clock(Instant::now())
        }
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
        fn ms(&self, t: Instant) -> u64 {
            (t - self.0).as_millis() as u64
        }
    }

    fn params(priority: u8) -> Params {
        Params {
            priority,
            interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary: ME,
            learn_interval: false,
            grouped: false,
        }
    }

    fn advert(src: IpAddr, priority: u8) -> Event {
        Event::Advert {
            src,
            priority,
            interval: Duration::from_secs(1),
        }
    }

    fn became(actions: &[Action]) -> Option<State> {
        actions.iter().find_map(|a| match a {
            Action::Transition { to, .. } => Some(*to),
            _ => None,
        })
    }

    fn sends(actions: &[Action]) -> Vec<u8> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SendAdvert { priority } => Some(*priority),
                _ => None,
            })
            .collect()
    }

    /// Runs the timer at every deadline up to `until` (ms); returns the actions with their time.
    fn run_until(m: &mut Machine, c: &Clock, until: u64) -> Vec<(u64, Action)> {
        let mut out = Vec::new();
        while let Some(d) = m.deadline() {
            if c.ms(d) > until {
                break;
            }
            for a in m.handle(d, Event::Timer) {
                out.push((c.ms(d), a));
            }
        }
        out
    }

    #[test]
    fn intervals_follow_the_rfc() {
        let m = Machine::new(params(100));
        // Skew = (256 - 100) / 256 s = 609.375 ms; down = 3 s + skew.
        assert_eq!(m.skew(), Duration::from_micros(609_375));
        assert_eq!(m.master_down_interval(), Duration::from_micros(3_609_375));
        let m = Machine::new(params(150));
        assert_eq!(
            m.skew(),
            Duration::from_micros(414_062) + Duration::from_nanos(500)
        );
        let m = Machine::new(Params {
            interval: Duration::from_millis(200),
            ..params(100)
        });
        assert_eq!(m.master_down_interval(), Duration::from_micros(721_875));
    }

    #[test]
    fn owner_becomes_master_at_once() {
        let c = Clock::new();
        let mut m = Machine::new(params(255));
        let a = m.handle(c.at(0), Event::Startup);
        assert_eq!(became(&a), Some(State::Master));
        assert_eq!(sends(&a), vec![255]);
        assert!(a.contains(&Action::AddAddresses) && a.contains(&Action::SendGarps));
        assert_eq!(m.deadline(), Some(c.at(1000)));
    }

    #[test]
    fn backup_takes_over_after_master_down_interval() {
        let c = Clock::new();
        let mut m = Machine::new(params(100));
        let a = m.handle(c.at(0), Event::Startup);
        assert_eq!(became(&a), Some(State::Backup));
        assert!(a.contains(&Action::RemoveAddresses));
        assert_eq!(sends(&a), Vec::<u8>::new());
        // An early timer call does nothing.
        assert!(m.handle(c.at(3000), Event::Timer).is_empty());
        let a = run_until(&mut m, &c, 10_000);
        let (t, _) = a
            .iter()
            .find(|(_, a)| {
                matches!(
                    a,
                    Action::Transition {
                        to: State::Master,
                        ..
                    }
                )
            })
            .unwrap();
        assert_eq!(*t, 3609);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn master_advertises_every_interval() {
        let c = Clock::new();
        let mut m = Machine::new(params(255));
        m.handle(c.at(0), Event::Startup);
        let a = run_until(&mut m, &c, 3500);
        let times: Vec<u64> = a
            .iter()
            .filter(|(_, a)| matches!(a, Action::SendAdvert { .. }))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(times, vec![1000, 2000, 3000]);
    }

    #[test]
    fn split_brain_guard_backup_never_claims_while_higher_adverts_arrive() {
        let c = Clock::new();
        let mut m = Machine::new(params(100));
        m.handle(c.at(0), Event::Startup);
        // A higher-priority master advertises every second for a minute, a little late each
        // time (900-1100 ms apart), never beyond the master down interval.
        let mut t = 0;
        for i in 0..60 {
            t += 900 + (i % 3) * 100;
            // Timers first, as a real loop would run them.
            let a = run_until(&mut m, &c, t);
            assert!(a.is_empty(), "at {t} ms: {a:?}");
            let a = m.handle(c.at(t), advert(HIGHER_IP, 150));
            assert!(a.is_empty());
            assert_eq!(m.state(), State::Backup);
            assert_eq!(m.master(), Some(HIGHER_IP));
        }
        // Equal priority (also from a lower address) keeps a backup backup too.
        let a = run_until(&mut m, &c, t + 1000);
        assert!(a.is_empty());
        m.handle(c.at(t + 1000), advert(LOWER_IP, 100));
        assert!(run_until(&mut m, &c, t + 4000).is_empty());
        assert_eq!(m.state(), State::Backup);
        // When the adverts stop, it takes over after the master down interval.
        let a = run_until(&mut m, &c, t + 10_000);
        assert_eq!(a.first().map(|(ms, _)| *ms), Some(t + 1000 + 3609));
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn priority_zero_lets_the_backup_take_over_after_skew() {
        let c = Clock::new();
        let mut m = Machine::new(params(100));
        m.handle(c.at(0), Event::Startup);
        m.handle(c.at(500), advert(HIGHER_IP, 150));
        assert!(m.handle(c.at(1000), advert(HIGHER_IP, 0)).is_empty());
        assert_eq!(
            m.deadline(),
            Some(c.at(1000) + Duration::from_micros(609_375))
        );
        let a = run_until(&mut m, &c, 2000);
        assert_eq!(a.first().map(|(t, _)| *t), Some(1609));
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn graceful_shutdown_of_a_master_sends_priority_zero() {
        let c = Clock::new();
        let mut m = Machine::new(params(255));
        m.handle(c.at(0), Event::Startup);
        let a = m.handle(c.at(10), Event::Shutdown);
        assert_eq!(sends(&a), vec![0]);
        assert!(a.contains(&Action::RemoveAddresses));
        assert_eq!(became(&a), Some(State::Initialize));
        assert_eq!(m.deadline(), None);
        // A backup just stops.
        let mut b = Machine::new(params(100));
        b.handle(c.at(0), Event::Startup);
        let a = b.handle(c.at(10), Event::Shutdown);
        assert_eq!(sends(&a), Vec::<u8>::new());
        assert_eq!(b.state(), State::Initialize);
    }

    fn master(priority: u8, c: &Clock) -> Machine {
        let mut m = Machine::new(params(priority));
        m.handle(c.at(0), Event::Startup);
        run_until(&mut m, c, 4000);
        assert_eq!(m.state(), State::Master);
        m
    }

    #[test]
    fn master_ignores_lower_priority_and_yields_to_higher() {
        let c = Clock::new();
        let mut m = master(150, &c);
        assert!(m.handle(c.at(4100), advert(HIGHER_IP, 100)).is_empty());
        assert_eq!(m.state(), State::Master);
        let a = m.handle(c.at(4200), advert(LOWER_IP, 200));
        assert_eq!(became(&a), Some(State::Backup));
        assert!(a.contains(&Action::RemoveAddresses));
        assert_eq!(m.master(), Some(LOWER_IP));
        // Now backup to the 200: no preemption while it advertises.
        let mut t = 4200;
        for _ in 0..10 {
            t += 1000;
            assert!(run_until(&mut m, &c, t).is_empty());
            m.handle(c.at(t), advert(LOWER_IP, 200));
        }
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn equal_priority_tie_break_by_higher_primary_address() {
        let c = Clock::new();
        let mut m = master(100, &c);
        // Same priority, lower address: we stay.
        assert!(m.handle(c.at(4100), advert(LOWER_IP, 100)).is_empty());
        assert_eq!(m.state(), State::Master);
        // Same priority, higher address: we yield.
        let a = m.handle(c.at(4200), advert(HIGHER_IP, 100));
        assert_eq!(became(&a), Some(State::Backup));
    }

    /// RFC 5798 6.4.3 over IPv6: the primary addresses are the link-local sources, compared
    /// as 128-bit unsigned integers.
    #[test]
    fn ipv6_tie_break_by_higher_link_local_address() {
        let c = Clock::new();
        let me: IpAddr = "fe80::ff:fe00:89".parse().unwrap();
        let mut m = Machine::new(Params {
            primary: me,
            ..params(100)
        });
        m.handle(c.at(0), Event::Startup);
        run_until(&mut m, &c, 4000);
        assert_eq!((m.state(), m.master()), (State::Master, Some(me)));
        let lower: IpAddr = "fe80::ff:fe00:86".parse().unwrap();
        assert!(m.handle(c.at(4100), advert(lower, 100)).is_empty());
        let higher: IpAddr = "fe80::1:0:0:1".parse().unwrap();
        let a = m.handle(c.at(4200), advert(higher, 100));
        assert_eq!(became(&a), Some(State::Backup));
        assert_eq!(m.master(), Some(higher));
    }

    #[test]
    fn master_answers_priority_zero_with_an_advert() {
        let c = Clock::new();
        let mut m = master(150, &c);
        let a = m.handle(c.at(4100), advert(HIGHER_IP, 0));
        assert_eq!(sends(&a), vec![150]);
        assert_eq!(m.deadline(), Some(c.at(5100)));
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn preemption_of_a_lower_priority_master() {
        let c = Clock::new();
        let mut m = Machine::new(params(150));
        m.handle(c.at(0), Event::Startup);
        // A lower master advertises: ignored, so we take over after the down interval.
        let mut t = 0;
        let mut took_over = None;
        while t < 6000 {
            t += 1000;
            if let Some(s) = run_until(&mut m, &c, t).first() {
                took_over = Some(s.0);
                break;
            }
            m.handle(c.at(t), advert(LOWER_IP, 100));
        }
        // 3 s + (256-150)/256 s = 3414 ms.
        assert_eq!(took_over, Some(3414));
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn nopreempt_keeps_a_lower_priority_master() {
        let c = Clock::new();
        let mut m = Machine::new(Params {
            preempt: false,
            ..params(150)
        });
        m.handle(c.at(0), Event::Startup);
        for i in 1..=20 {
            assert!(run_until(&mut m, &c, i * 1000).is_empty());
            m.handle(c.at(i * 1000), advert(LOWER_IP, 100));
        }
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn preempt_delay_tolerates_a_lower_master_for_a_while() {
        let c = Clock::new();
        let mut m = Machine::new(Params {
            preempt_delay: Duration::from_secs(5),
            ..params(150)
        });
        m.handle(c.at(0), Event::Startup);
        let mut t = 0;
        let mut took_over = None;
        while t < 20_000 {
            t += 1000;
            if let Some(s) = run_until(&mut m, &c, t).first() {
                took_over = Some(s.0);
                break;
            }
            m.handle(c.at(t), advert(LOWER_IP, 100));
        }
        // The last advert honoured is the one at 4000 ms (before 5000): 4000 + 3414.
        assert_eq!(took_over, Some(7414));
    }

    #[test]
    fn v3_backup_learns_the_masters_interval() {
        let c = Clock::new();
        let mut m = Machine::new(Params {
            interval: Duration::from_secs(1),
            learn_interval: true,
            ..params(100)
        });
        m.handle(c.at(0), Event::Startup);
        m.handle(
            c.at(100),
            Event::Advert {
                src: HIGHER_IP,
                priority: 200,
                interval: Duration::from_millis(200),
            },
        );
        // 3 x 200 ms + 156/256 x 200 ms = 721.875 ms.
        assert_eq!(m.master_down_interval(), Duration::from_micros(721_875));
        assert_eq!(
            m.deadline(),
            Some(c.at(100) + Duration::from_micros(721_875))
        );
    }

    #[test]
    fn link_down_is_a_fault_and_link_up_starts_over() {
        let c = Clock::new();
        let mut m = master(150, &c);
        let a = m.handle(c.at(5000), Event::Fault("interface down".into()));
        assert_eq!(became(&a), Some(State::Fault));
        assert!(a.contains(&Action::RemoveAddresses));
        assert_eq!(m.deadline(), None);
        // Adverts and timers mean nothing while down.
        assert!(m.handle(c.at(5100), advert(HIGHER_IP, 100)).is_empty());
        let a = m.handle(c.at(6000), Event::FaultCleared);
        assert_eq!(became(&a), Some(State::Backup));
        // The other director is master now (100); we preempt after the down interval.
        let a = m.handle(c.at(6500), advert(HIGHER_IP, 100));
        assert!(a.is_empty());
        let a = run_until(&mut m, &c, 20_000);
        assert_eq!(a.first().map(|(t, _)| *t), Some(6000 + 3414));
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn a_fault_of_the_master_hands_over_with_priority_0() {
        let c = Clock::new();
        let mut m = master(150, &c);
        let a = m.handle(c.at(5000), Event::Fault("tracked script chk failed".into()));
        assert_eq!(sends(&a), vec![0]);
        assert!(a.contains(&Action::Transition {
            from: State::Master,
            to: State::Fault,
            reason: "tracked script chk failed".into()
        }));
    }

    #[test]
    fn new_params_take_effect_at_once() {
        let c = Clock::new();
        let mut m = master(150, &c);
        // A lower priority (a tracked weight): advertised right away.
        let p = Params {
            priority: 50,
            ..m.params().clone()
        };
        let a = m.handle(c.at(5000), Event::Params(p.clone()));
        assert_eq!(sends(&a), vec![50]);
        assert_eq!(m.state(), State::Master);
        // The same params again: nothing.
        assert!(m.handle(c.at(5001), Event::Params(p)).is_empty());
        // A backup's down timer follows a new interval.
        let mut b = Machine::new(params(100));
        b.handle(c.at(0), Event::Startup);
        let p = Params {
            interval: Duration::from_millis(100),
            ..b.params().clone()
        };
        b.handle(c.at(1000), Event::Params(p));
        // 3 x 100 ms + 156/256 x 100 ms.
        assert_eq!(
            b.deadline(),
            Some(c.at(1000) + Duration::from_micros(360_937) + Duration::from_nanos(500))
        );
    }

    #[test]
    fn a_grouped_backup_waits_for_its_group() {
        let c = Clock::new();
        let mut m = Machine::new(Params {
            grouped: true,
            ..params(100)
        });
        m.handle(c.at(0), Event::Startup);
        // The timer runs out: it wants master, but stays backup with no timer.
        let a = run_until(&mut m, &c, 10_000);
        assert!(a.is_empty(), "{a:?}");
        assert!(m.wants_master());
        assert_eq!((m.state(), m.deadline()), (State::Backup, None));
        // A master's advert: it no longer wants it.
        m.handle(c.at(10_000), advert(HIGHER_IP, 200));
        assert!(!m.wants_master());
        // The group goes master: so does it; and back when a member leaves master.
        let a = m.handle(c.at(10_100), Event::GroupMaster);
        assert_eq!(became(&a), Some(State::Master));
        assert!(a.contains(&Action::AddAddresses));
        let a = m.handle(c.at(10_200), Event::GroupBackup);
        assert_eq!(became(&a), Some(State::Backup));
        assert!(a.contains(&Action::RemoveAddresses));
        assert!(m.deadline().is_some());
        // Group events in other states change nothing.
        assert!(m.handle(c.at(10_300), Event::GroupBackup).is_empty());
    }
}
