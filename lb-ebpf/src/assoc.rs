//! The set-associative tables' two operations (`lb_common::assoc`): find a key's slot in
//! its bucket, and choose the slot a new entry of a key takes. Array reads only, which the
//! verifier inlines.

use aya_ebpf::maps::Array;
use lb_common::assoc::{Slot, WAYS};

/// The slot of the bucket starting at `first` that holds `key`'s entry.
#[inline(always)]
pub(crate) fn find<T: Slot>(map: &Array<T>, first: u32, key: &T::Key) -> Option<&'static mut T> {
    for way in 0..WAYS {
        let slot = unsafe { &mut *map.get_ptr_mut(first.wrapping_add(way))? };
        if slot.holds(key) {
            return Some(slot);
        }
    }
    None
}

/// The slot of the bucket starting at `first` that a new entry of `key` takes (the lowest
/// [`Slot::rank`]), with its rank and the highest rank in the bucket.
#[inline(always)]
pub(crate) fn choose<T: Slot>(
    map: &Array<T>,
    first: u32,
    key: &T::Key,
) -> Option<(&'static mut T, u64, u64)> {
    let (mut best, mut best_rank): (Option<*mut T>, u64) = (None, u64::MAX);
    let mut highest = 0;
    for way in 0..WAYS {
        if let Some(slot) = map.get_ptr_mut(first.wrapping_add(way)) {
            let rank = unsafe { (*slot).rank(key) };
            if rank < best_rank {
                (best, best_rank) = (Some(slot), rank);
            }
            highest = highest.max(rank);
        }
    }
    Some((unsafe { &mut *best? }, best_rank, highest))
}
