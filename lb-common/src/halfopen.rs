//! The half-open table (`SYNS`): TCP connections whose SYN was scheduled and whose client has
//! not sent its ACK yet, in a set-associative array shared by all CPUs.
//!
//! A flow's entry lives in one of the [`HALF_OPEN_WAYS`] slots of its bucket, chosen by a
//! hash of its key ([`half_open_bucket`]): a SYN costs inlined array reads and one 64-byte
//! write, where an LRU hash map's insert (its free-list pop, list rotation and bucket lock)
//! cost about 225 ns on the development VM, two thirds of a new flow. A SYN takes, in its
//! bucket, its own flow's slot, else an empty one, else the least recently seen
//! ([`HalfOpen::rank`]): as an LRU map evicts its oldest entry, but among four. Only
//! half-open entries compete for slots, so a SYN flood still evicts no established
//! connection (those are in `FLOWS`).
//!
//! An empty slot (or one whose connection moved to `FLOWS`) is in the state
//! `TcpState::None`; a slot holds a flow's entry while its key is the flow's and its state is
//! `Syn` ([`HalfOpen::holds`]), and the entry is live within the SYN timeout
//! ([`Flow::is_live`]).

use crate::{
    Flow, FlowKey, TcpState,
    assoc::{Slot, WAYS},
};

/// Slots of a bucket: a flow's entry is in one of them.
pub const HALF_OPEN_WAYS: u32 = WAYS;

/// A slot of `SYNS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HalfOpen {
    pub key: FlowKey,
    pub flow: Flow,
}

const _: () = assert!(core::mem::size_of::<HalfOpen>() == 64);

/// A slot holds an entry while it is in the SYN state: `None` is empty (never used, or its
/// connection moved to `FLOWS`).
impl Slot for HalfOpen {
    type Key = FlowKey;

    #[inline(always)]
    fn filled(&self) -> bool {
        self.flow.state == TcpState::Syn as u8
    }

    #[inline(always)]
    fn key(&self) -> &FlowKey {
        &self.key
    }

    #[inline(always)]
    fn last_seen_ns(&self) -> u64 {
        self.flow.last_seen_ns
    }
}

/// The shift that [`half_open_bucket`] takes for a table of `slots` slots: a power of two,
/// at least [`HALF_OPEN_WAYS`]; `None` for any other size.
pub const fn half_open_shift(slots: u32) -> Option<u32> {
    if slots.is_power_of_two() && slots >= HALF_OPEN_WAYS {
        Some(32 - slots.trailing_zeros())
    } else {
        None
    }
}

/// The first slot of a flow's bucket (its ways follow it), for a table whose
/// [`half_open_shift`] is `shift`: the top bits of the flow-cache fold
/// ([`cache_slot`](crate::cache_slot)'s) through MurmurHash3's 32-bit finaliser. The flow
/// cache's lighter mix gave 1,000 flows that differ only in their source port 788 distinct
/// values of the top 12 bits, where a random hash gives about 890, and lost 10% of them from
/// 4,096 slots in buckets of four; this one loses 0.4%, as random keys do.
#[inline(always)]
pub const fn half_open_bucket(f: &FlowKey, shift: u32) -> u32 {
    (crate::cache::flow_fmix(f) >> (shift & 31)) & !(HALF_OPEN_WAYS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src: [0, 0, 0xffff_0000, 0x6400_a8c0],
            dst: [0, 0, 0xffff_0000, 0x8500_a8c0],
            sport: sport.to_be(),
            dport: 80u16.to_be(),
            proto: crate::PROTO_TCP,
            _pad: [0; 3],
        }
    }

    fn slot(sport: u16, state: TcpState, last_seen_ns: u64) -> HalfOpen {
        HalfOpen {
            key: key(sport),
            flow: Flow {
                last_seen_ns,
                state: state as u8,
                ..Flow::default()
            },
        }
    }

    #[test]
    fn a_syn_takes_its_own_slot_then_an_empty_one_then_the_least_recently_seen() {
        let own = slot(1000, TcpState::Syn, 900);
        let empty = slot(1001, TcpState::None, 0);
        let (old, new) = (
            slot(1002, TcpState::Syn, 100),
            slot(1003, TcpState::Syn, 200),
        );
        let ranks = [own, empty, old, new].map(|s| s.rank(&key(1000)));
        assert_eq!(ranks, [0, 1, 102, 202]);
        // A slot of the flow's key that was emptied (moved to FLOWS) holds nothing.
        let moved = slot(1000, TcpState::None, 900);
        assert_eq!(moved.rank(&key(1000)), 1);
        assert!(own.holds(&key(1000)) && !moved.holds(&key(1000)) && !old.holds(&key(1000)));
    }

    #[test]
    fn the_table_is_a_power_of_two_of_at_least_one_bucket() {
        assert_eq!(half_open_shift(1 << 16), Some(16));
        assert_eq!(half_open_shift(4), Some(30));
        for bad in [0, 2, 3, 1000, (1 << 16) + 4] {
            assert_eq!(half_open_shift(bad), None, "{bad}");
        }
    }

    #[test]
    fn buckets_start_at_a_multiple_of_the_ways_within_the_table() {
        let shift = half_open_shift(1 << 12).unwrap();
        let mut seen = [false; 1024];
        for sport in 0..4000u16 {
            let b = half_open_bucket(&key(sport), shift);
            assert!(
                b.is_multiple_of(HALF_OPEN_WAYS) && b + HALF_OPEN_WAYS <= 1 << 12,
                "{b}"
            );
            seen[(b / HALF_OPEN_WAYS) as usize] = true;
        }
        // 4,000 flows that differ only in their source port reach most of the 1,024 buckets
        // (a random hash: about 1,005).
        let reached = seen.iter().filter(|&&s| s).count();
        assert!(reached > 980, "{reached} buckets");
    }
}
