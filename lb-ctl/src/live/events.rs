//! The last events of the daemon, for `/api/v1/status` and the page: health and VRRP
//! transitions, reloads and refused reloads, services failed and recovered, each with its
//! reason and time. A small bounded ring, fed where the daemon logs them.

use std::collections::VecDeque;

use serde::Serialize;

/// How many events are kept; the oldest go first.
pub const KEPT: usize = 100;

/// One event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// Counted from 1 since the daemon started: a client sees which events are new.
    pub seq: u64,
    /// Unix time, in milliseconds.
    pub at_ms: u64,
    /// `health`, `vrrp`, `reload`, `reload_refused`, `service`.
    pub kind: &'static str,
    /// What it is about: `web 192.168.58.135`, an instance's name, the file.
    pub subject: String,
    /// The state before and after, when it is a transition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Why, as the log says it.
    pub reason: String,
}

/// The ring: at most `cap` events, oldest first.
#[derive(Debug)]
pub struct Events {
    ring: VecDeque<Event>,
    cap: usize,
    next_seq: u64,
}

impl Default for Events {
    fn default() -> Events {
        Events::with_capacity(KEPT)
    }
}

impl Events {
    pub fn with_capacity(cap: usize) -> Events {
        Events {
            ring: VecDeque::with_capacity(cap),
            cap: cap.max(1),
            next_seq: 1,
        }
    }

    /// Adds an event at `at_ms`; the oldest goes when the ring is full.
    pub fn push(
        &mut self,
        at_ms: u64,
        kind: &'static str,
        subject: String,
        transition: Option<(String, String)>,
        reason: String,
    ) {
        if self.ring.len() == self.cap {
            self.ring.pop_front();
        }
        let (from, to) = transition.map_or((None, None), |(f, t)| (Some(f), Some(t)));
        self.ring.push_back(Event {
            seq: self.next_seq,
            at_ms,
            kind,
            subject,
            from,
            to,
            reason,
        });
        self.next_seq += 1;
    }

    /// The events kept, oldest first.
    pub fn list(&self) -> Vec<Event> {
        self.ring.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_events_in_order() {
        let mut e = Events::with_capacity(3);
        assert!(e.list().is_empty());
        for i in 0..5u64 {
            let t = (i % 2 == 0).then(|| ("up".to_string(), "down".to_string()));
            e.push(
                1000 + i,
                "health",
                format!("web 10.0.0.{i}"),
                t,
                format!("r{i}"),
            );
        }
        let l = e.list();
        assert_eq!(l.len(), 3);
        assert_eq!(
            l.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3, 4, 5],
            "the oldest two went"
        );
        assert_eq!(l[0].subject, "web 10.0.0.2");
        assert_eq!(l[0].at_ms, 1002);
        assert_eq!(l[0].to.as_deref(), Some("down"));
        assert_eq!(l[1].from, None);
        assert_eq!(l[2].reason, "r4");
        let json = serde_json::to_value(&l[1]).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"seq": 4, "at_ms": 1003, "kind": "health",
                "subject": "web 10.0.0.3", "reason": "r3"})
        );
    }

    #[test]
    fn the_default_ring_holds_a_hundred() {
        let mut e = Events::default();
        for i in 0..250 {
            e.push(i, "reload", "f".into(), None, String::new());
        }
        let l = e.list();
        assert_eq!(l.len(), KEPT);
        assert_eq!(l[0].seq, 151);
        assert_eq!(l[KEPT - 1].seq, 250);
    }
}
