//! What the sender sends at each scan, and how much: pure.
//!
//! [`Tracker`] remembers what was last sent of each entry. An entry is due when it is new,
//! when its backend or state changed (sent first), or when it was last sent more than its
//! refresh time ago (an eighth of its state's timeout: the
//! peer's copy, installed with the age it had then, never comes near its timeout while the
//! connection lives; a peer that missed a datagram, or started later, has every live entry
//! within that time). Entries that left the table are forgotten. [`Rate`] is a token bucket
//! of `max_rate` entries a second, at most one second's worth saved up.

use std::collections::HashMap;
use std::hash::Hash;

/// What a scan saw of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub last_seen_ns: u64,
    pub backend: u32,
    pub state: u8,
    /// How long a change of `last_seen_ns` alone may wait to be sent.
    pub refresh_ns: u64,
}

#[derive(Clone, Copy, Debug)]
struct Sent {
    seen: Seen,
    at_ns: u64,
}

/// What was last sent, per key.
#[derive(Debug, Default)]
pub struct Tracker<K> {
    sent: HashMap<K, Sent>,
}

impl<K: Hash + Eq + Copy> Tracker<K> {
    pub fn new() -> Tracker<K> {
        Tracker {
            sent: HashMap::new(),
        }
    }

    /// Entries of `scan` (the whole table, live entries only) that are due, at most `limit`:
    /// new and changed ones first, then refreshes. They are recorded as sent at `now_ns`;
    /// what is left over stays due for the next scan.
    pub fn select(&mut self, scan: &[(K, Seen)], now_ns: u64, limit: usize) -> Vec<usize> {
        let mut changed = Vec::new();
        let mut refresh = Vec::new();
        for (i, (k, s)) in scan.iter().enumerate() {
            match self.sent.get(k) {
                None => changed.push(i),
                Some(p) if p.seen.backend != s.backend || p.seen.state != s.state => {
                    changed.push(i)
                }
                Some(p) if now_ns.saturating_sub(p.at_ns) >= s.refresh_ns => refresh.push(i),
                Some(_) => {}
            }
        }
        let keep: std::collections::HashSet<K> = scan.iter().map(|(k, _)| *k).collect();
        self.sent.retain(|k, _| keep.contains(k));
        let out: Vec<usize> = changed.into_iter().chain(refresh).take(limit).collect();
        for &i in &out {
            let (k, s) = scan[i];
            self.sent.insert(
                k,
                Sent {
                    seen: s,
                    at_ns: now_ns,
                },
            );
        }
        out
    }

    /// Forgets everything: the next scan sends the whole table (a new peer, a new master).
    pub fn clear(&mut self) {
        self.sent.clear();
    }

    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

/// A token bucket: `max_rate` entries a second, at most one second's worth saved.
#[derive(Debug)]
pub struct Rate {
    max_rate: u32,
    tokens: f64,
    at_ns: Option<u64>,
}

impl Rate {
    pub fn new(max_rate: u32) -> Rate {
        Rate {
            max_rate,
            tokens: 0.0,
            at_ns: None,
        }
    }

    /// Entries that may be sent now (`now_ns`, a monotonic clock); the first call gives one
    /// interval's worth.
    pub fn available(&mut self, now_ns: u64, interval_ns: u64) -> usize {
        let elapsed = match self.at_ns {
            None => interval_ns,
            Some(at) => now_ns.saturating_sub(at),
        };
        self.at_ns = Some(now_ns);
        let max = f64::from(self.max_rate);
        self.tokens = (self.tokens + max * elapsed as f64 / 1e9).min(max);
        self.tokens.floor() as usize
    }

    /// `n` entries were sent.
    pub fn spend(&mut self, n: usize) {
        self.tokens = (self.tokens - n as f64).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn seen(last: u64, backend: u32, state: u8) -> Seen {
        Seen {
            last_seen_ns: last,
            backend,
            state,
            refresh_ns: 10 * S,
        }
    }

    #[test]
    fn new_changed_and_refreshed_entries_are_due() {
        let mut t = Tracker::new();
        let scan = vec![(1u32, seen(100, 1, 1)), (2, seen(100, 2, 2))];
        assert_eq!(t.select(&scan, S, 100), vec![0, 1]);
        // Nothing changed.
        assert_eq!(t.select(&scan, 2 * S, 100), Vec::<usize>::new());
        // A packet only, or nothing: not before the refresh time.
        let moved = vec![(1u32, seen(200, 1, 1)), (2, seen(100, 2, 2))];
        assert_eq!(t.select(&moved, 5 * S, 100), Vec::<usize>::new());
        // Past it, every entry is sent again (a peer that missed one gets it).
        assert_eq!(t.select(&moved, 11 * S, 100), vec![0, 1]);
        // A state change: at once.
        let state = vec![(1u32, seen(200, 1, 2)), (2, seen(100, 2, 2))];
        assert_eq!(t.select(&state, 12 * S, 100), vec![0]);
        // A backend change, and the other gone: forgotten.
        let backend = vec![(1u32, seen(200, 3, 2))];
        assert_eq!(t.select(&backend, 13 * S, 100), vec![0]);
        assert_eq!(t.len(), 1);
        // Key 2 comes back: new again (and key 1 differs from what was sent).
        assert_eq!(t.select(&scan, 14 * S, 100), vec![0, 1]);
    }

    #[test]
    fn changes_go_first_and_the_rest_waits() {
        let mut t = Tracker::new();
        let scan: Vec<(u32, Seen)> = (0..5).map(|k| (k, seen(100, 1, 1))).collect();
        assert_eq!(t.select(&scan, S, 2), vec![0, 1]);
        assert_eq!(t.select(&scan, S, 2), vec![2, 3]);
        let mut later: Vec<(u32, Seen)> = (0..5).map(|k| (k, seen(300, 1, 1))).collect();
        later[4].1.state = 2;
        assert_eq!(t.select(&later, 20 * S, 2), vec![4, 0]);
    }

    #[test]
    fn the_rate_is_bounded() {
        let mut r = Rate::new(1000);
        let iv = S / 5;
        assert_eq!(r.available(0, iv), 200);
        r.spend(200);
        assert_eq!(r.available(iv, iv), 200);
        // Nothing spent for 10 s: at most a second's worth.
        assert_eq!(r.available(10 * S, iv), 1000);
        r.spend(1000);
        assert_eq!(r.available(10 * S + iv / 2, iv), 100);
    }
}
