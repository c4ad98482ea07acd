//! Accepting datagrams: [`packet::decode`] (length, version, HMAC), then replays. Pure.
//!
//! Each sender has a window of the last [`WINDOW`] sequence numbers (as IPsec's): a number
//! above the highest seen moves the window; one inside it is accepted once; one below it is a
//! replay. A datagram whose clock is more than [`MAX_SKEW_MS`] from ours is refused as stale,
//! so a datagram recorded before this receiver started cannot be replayed to it either.

use std::collections::HashMap;

use super::packet::{self, Datagram, Reject};

/// Sequence numbers per sender that may arrive out of order.
pub const WINDOW: u64 = 64;
/// How far apart the directors' wall clocks may be (and how long a datagram stays valid).
pub const MAX_SKEW_MS: u64 = 60_000;
/// Senders remembered at once; the one heard from longest ago is forgotten past it.
const MAX_SENDERS: usize = 64;

#[derive(Clone, Copy, Debug, Default)]
struct Window {
    highest: u64,
    /// Bit i: `highest - i` was seen.
    seen: u64,
    /// Our clock when it was last heard from.
    heard_ms: u64,
}

/// The replay windows, and our own sender id (our own multicast datagrams are ignored).
#[derive(Debug)]
pub struct Receiver {
    own: u32,
    windows: HashMap<u32, Window>,
}

/// What became of a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted(Datagram),
    /// Ours, looped back: not counted.
    Own,
    Rejected(Reject),
}

impl Receiver {
    pub fn new(own: u32) -> Receiver {
        Receiver {
            own,
            windows: HashMap::new(),
        }
    }

    /// Judges the datagram `b` received at `now_ms` (our wall clock).
    pub fn accept(&mut self, key: &[u8], b: &[u8], now_ms: u64) -> Outcome {
        let d = match packet::decode(key, b) {
            Ok(d) => d,
            Err(r) => return Outcome::Rejected(r),
        };
        let h = d.header;
        if h.sender == self.own {
            return Outcome::Own;
        }
        if h.time_ms.abs_diff(now_ms) > MAX_SKEW_MS {
            return Outcome::Rejected(Reject::Stale);
        }
        if h.seq == 0 {
            return Outcome::Rejected(Reject::Replayed);
        }
        if !self.windows.contains_key(&h.sender) && self.windows.len() >= MAX_SENDERS {
            let oldest = self.windows.iter().min_by_key(|(_, w)| w.heard_ms);
            if let Some((&id, _)) = oldest {
                self.windows.remove(&id);
            }
        }
        let w = self.windows.entry(h.sender).or_default();
        if h.seq > w.highest {
            let shift = h.seq - w.highest;
            w.seen = if shift >= 64 { 0 } else { w.seen << shift };
            w.seen |= 1;
            w.highest = h.seq;
        } else {
            let back = w.highest - h.seq;
            if back >= WINDOW || w.seen & (1 << back) != 0 {
                return Outcome::Rejected(Reject::Replayed);
            }
            w.seen |= 1 << back;
        }
        w.heard_ms = now_ms;
        Outcome::Accepted(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::packet::{Header, encode};

    const KEY: &[u8] = b"0123456789abcdef";
    const NOW: u64 = 1_700_000_000_000;

    fn dg(sender: u32, seq: u64, time_ms: u64) -> Vec<u8> {
        encode(
            KEY,
            &Header {
                sender,
                seq,
                time_ms,
            },
            &[],
            &[],
        )
    }

    fn verdict(r: &mut Receiver, b: &[u8]) -> Result<u64, Option<Reject>> {
        match r.accept(KEY, b, NOW) {
            Outcome::Accepted(d) => Ok(d.header.seq),
            Outcome::Own => Err(None),
            Outcome::Rejected(x) => Err(Some(x)),
        }
    }

    #[test]
    fn a_replay_is_refused_and_reordering_inside_the_window_is_not() {
        let mut r = Receiver::new(1);
        assert_eq!(verdict(&mut r, &dg(2, 1, NOW)), Ok(1));
        assert_eq!(verdict(&mut r, &dg(2, 1, NOW)), Err(Some(Reject::Replayed)));
        assert_eq!(verdict(&mut r, &dg(2, 5, NOW)), Ok(5));
        assert_eq!(verdict(&mut r, &dg(2, 3, NOW)), Ok(3));
        assert_eq!(verdict(&mut r, &dg(2, 3, NOW)), Err(Some(Reject::Replayed)));
        assert_eq!(verdict(&mut r, &dg(2, 5, NOW)), Err(Some(Reject::Replayed)));
        assert_eq!(verdict(&mut r, &dg(2, 100, NOW)), Ok(100));
        // Below the window.
        assert_eq!(
            verdict(&mut r, &dg(2, 36, NOW)),
            Err(Some(Reject::Replayed))
        );
        assert_eq!(verdict(&mut r, &dg(2, 37, NOW)), Ok(37));
        // Sequence 0 is never sent.
        assert_eq!(verdict(&mut r, &dg(3, 0, NOW)), Err(Some(Reject::Replayed)));
        // Another sender has its own window.
        assert_eq!(verdict(&mut r, &dg(4, 1, NOW)), Ok(1));
    }

    #[test]
    fn stale_own_and_bad_datagrams() {
        let mut r = Receiver::new(1);
        let old = NOW - MAX_SKEW_MS - 1;
        assert_eq!(verdict(&mut r, &dg(2, 1, old)), Err(Some(Reject::Stale)));
        let ahead = NOW + MAX_SKEW_MS + 1;
        assert_eq!(verdict(&mut r, &dg(2, 1, ahead)), Err(Some(Reject::Stale)));
        assert_eq!(verdict(&mut r, &dg(1, 1, NOW)), Err(None));
        let b = dg(2, 1, NOW);
        assert_eq!(
            verdict(&mut r, &b[..b.len() - 1]),
            Err(Some(Reject::Truncated))
        );
        // A refused datagram does not use up its sequence number.
        assert_eq!(verdict(&mut r, &b), Ok(1));
    }

    #[test]
    fn senders_are_bounded() {
        let mut r = Receiver::new(0);
        for s in 1..=(MAX_SENDERS as u32 + 10) {
            assert_eq!(verdict(&mut r, &dg(s, 1, NOW)), Ok(1));
        }
        assert_eq!(r.windows.len(), MAX_SENDERS);
    }
}
