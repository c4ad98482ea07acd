//! Logs that stay readable at scale: a persistent condition (a backend without a MAC, say) is
//! logged when it starts and when it ends, with a periodic summary in between, never once per
//! backend per retry. When many start or end at once, a few are named and the rest counted;
//! the full list is at debug level.

use std::collections::BTreeSet;

use tracing::{debug, info, warn};

/// How many conditions one log line names before it counts the rest.
pub const NAMED: usize = 3;

/// The set of one kind of condition (e.g. "unresolved backends"), as last seen.
#[derive(Debug)]
pub struct Conditions {
    /// What the conditions are, for the log: `backends without a MAC`.
    what: &'static str,
    current: BTreeSet<String>,
}

impl Conditions {
    pub fn new(what: &'static str) -> Conditions {
        Conditions {
            what,
            current: BTreeSet::new(),
        }
    }

    /// How many hold now.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    /// Takes the conditions that hold now; logs those that started (warn) and ended (info).
    pub fn update(&mut self, now: impl IntoIterator<Item = String>) {
        let now: BTreeSet<String> = now.into_iter().collect();
        let started: Vec<&String> = now.difference(&self.current).collect();
        let ended: Vec<&String> = self.current.difference(&now).collect();
        let (what, total) = (self.what, now.len());
        if !started.is_empty() {
            warn!(count = started.len(), total, "{what}: {}", named(&started));
            for c in started.iter().skip(NAMED) {
                debug!("{what}: {c}");
            }
        }
        if !ended.is_empty() {
            info!(
                count = ended.len(),
                total,
                "no longer {what}: {}",
                named(&ended)
            );
            for c in ended.iter().skip(NAMED) {
                debug!("no longer {what}: {c}");
            }
        }
        self.current = now;
    }

    /// One line saying how many still hold (nothing when none does).
    pub fn summary(&self) {
        if self.current.is_empty() {
            return;
        }
        let all: Vec<&String> = self.current.iter().collect();
        warn!(total = all.len(), "still {}: {}", self.what, named(&all));
    }
}

/// How many events may still be logged one line each: `burst` at once, refilled at `burst`
/// a second. Past it, events are summarized, so a burst spread over several batches (a rack
/// failing over a second) is a few lines too.
#[derive(Debug)]
pub struct Budget {
    burst: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl Budget {
    pub fn new(burst: usize) -> Budget {
        Budget {
            burst: burst as f64,
            tokens: burst as f64,
            last: std::time::Instant::now(),
        }
    }

    /// Whether `n` events may be logged one line each now (and if so, takes them).
    pub fn take(&mut self, n: usize) -> bool {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.burst;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if n as f64 <= self.tokens {
            self.tokens -= n as f64;
            true
        } else {
            // Spent: the summary line costs what is left.
            self.tokens = 0.0;
            false
        }
    }
}

/// The first [`NAMED`] of `items`, and how many more: `a; b; c; and 7 more`.
pub fn named<T: std::fmt::Display>(items: &[T]) -> String {
    let mut s = items
        .iter()
        .take(NAMED)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > NAMED {
        s += &format!("; and {} more", items.len() - NAMED);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_few_and_counts_the_rest() {
        let items: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
        let refs: Vec<&String> = items.iter().collect();
        assert_eq!(named(&refs), "b0; b1; b2; and 7 more");
        assert_eq!(named(&refs[..2]), "b0; b1");
    }

    #[test]
    fn a_budget_allows_a_burst_then_summaries() {
        let mut b = Budget::new(8);
        assert!(b.take(8));
        assert!(!b.take(1));
        assert!(!b.take(1));
        std::thread::sleep(std::time::Duration::from_millis(300));
        // 0.3 s refills 2.4 events.
        assert!(b.take(2));
        assert!(!b.take(2));
    }

    #[test]
    fn tracks_what_started_and_ended() {
        let mut c = Conditions::new("backends without a MAC");
        c.update(["a".to_string(), "b".to_string()]);
        assert_eq!(c.len(), 2);
        c.update(["b".to_string(), "c".to_string()]);
        assert_eq!(c.len(), 2);
        c.update([]);
        assert!(c.is_empty());
    }
}
