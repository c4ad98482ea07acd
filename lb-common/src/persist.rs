//! The persistence table (`PERSIST`): the backend each client network of a persistent
//! service was last sent to, and when, in a set-associative array shared by all CPUs
//! ([`assoc`](crate::assoc)). A new connection of a persistent service reads its client
//! network's entry (a persistence hit renews its stamp in place) or writes one after its
//! scheduler's pick; an entry older than the service's timeout is ignored, and evicted
//! before any live one.

use crate::{
    Persist, PersistKey,
    assoc::{Slot, WAYS},
    limits,
};

/// A slot of `PERSIST`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistSlot {
    pub key: PersistKey,
    /// 1 while the slot holds `key`'s entry, 0 for an empty slot.
    pub filled: u32,
    pub persist: Persist,
}

const _: () = assert!(core::mem::size_of::<PersistSlot>() == 40);

impl Slot for PersistSlot {
    type Key = PersistKey;

    #[inline(always)]
    fn filled(&self) -> bool {
        self.filled != 0
    }

    #[inline(always)]
    fn key(&self) -> &PersistKey {
        &self.key
    }

    #[inline(always)]
    fn last_seen_ns(&self) -> u64 {
        self.persist.last_seen_ns
    }
}

/// The first slot of a key's bucket in `PERSIST` (its ways follow it): the client network's
/// words folded with XOR and the service id, through MurmurHash3's finaliser.
#[inline(always)]
pub const fn persist_bucket(k: &PersistKey) -> u32 {
    let c = k.client[0] ^ k.client[1] ^ k.client[2] ^ k.client[3];
    let h = crate::hash_finish(c.wrapping_mul(0x9e37_79b1) ^ k.service_id, 0);
    (h >> (32 - PERSIST_BITS)) & !(WAYS - 1)
}

/// log2 of `PERSIST`'s slots.
const PERSIST_BITS: u32 = limits::PERSIST.trailing_zeros();
const _: () = assert!(limits::PERSIST.is_power_of_two() && limits::PERSIST >= WAYS);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v4_mapped;

    fn key(net: u32, service_id: u32) -> PersistKey {
        PersistKey {
            client: v4_mapped((0x0a00_0000 | net << 8).to_be()),
            service_id,
        }
    }

    fn slot(k: PersistKey, filled: u32, last_seen_ns: u64) -> PersistSlot {
        PersistSlot {
            key: k,
            filled,
            persist: Persist {
                last_seen_ns,
                backend: 1,
                _pad: 0,
            },
        }
    }

    #[test]
    fn a_new_entry_takes_its_own_slot_then_an_empty_one_then_the_least_recently_seen() {
        let own = slot(key(1, 0), 1, 900);
        let empty = slot(key(2, 0), 0, 0);
        let (old, new) = (slot(key(3, 0), 1, 100), slot(key(4, 0), 1, 200));
        let ranks = [own, empty, old, new].map(|s| s.rank(&key(1, 0)));
        assert_eq!(ranks, [0, 1, 102, 202]);
        // Another service's entry for the same network is another key.
        assert!(own.holds(&key(1, 0)) && !own.holds(&key(1, 1)));
        // An emptied slot of the key holds nothing.
        assert_eq!(slot(key(1, 0), 0, 900).rank(&key(1, 0)), 1);
        assert!(!slot(key(1, 0), 0, 900).holds(&key(1, 0)));
    }

    #[test]
    fn client_networks_spread_over_the_buckets() {
        let buckets = limits::PERSIST / WAYS;
        let mut used = [false; (limits::PERSIST / WAYS) as usize];
        let mut n = 0;
        // 8,192 /24 networks of one service and of a second one.
        for service_id in 0..2 {
            for net in 0..4096 {
                let b = persist_bucket(&key(net, service_id));
                assert!(b < limits::PERSIST && b.is_multiple_of(WAYS));
                if !used[(b / WAYS) as usize] {
                    used[(b / WAYS) as usize] = true;
                    n += 1;
                }
            }
        }
        // Random keys would use about 16384 * (1 - e^-0.5) = 6,447 buckets.
        assert!(n > 6_200, "{n} of {buckets}");
    }
}
