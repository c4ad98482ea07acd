//! Step 5b's memory: the persistence table (`PERSIST`, `lb_common::PersistSlot`), the
//! backend each client network of a persistent service was last sent to, in buckets of four
//! slots ([`assoc`](crate::assoc)).

use lb_common::{Persist, PersistKey, persist_bucket};

use crate::{PERSIST, assoc};

/// The entry of `key`, live or not, if its bucket holds one.
#[inline(always)]
pub(crate) fn entry(key: &PersistKey) -> Option<&'static mut Persist> {
    assoc::find(&PERSIST, persist_bucket(key), key).map(|slot| &mut slot.persist)
}

/// Makes `p` the entry of `key`, in the slot of its bucket that `PersistSlot::rank` gives
/// it: its own, an empty one, or the least recently seen (evicted, as an LRU map evicts its
/// oldest).
#[inline(always)]
pub(crate) fn put(key: &PersistKey, p: &Persist) {
    let Some((slot, _, _)) = assoc::choose(&PERSIST, persist_bucket(key), key) else {
        return;
    };
    // Copies that cannot overlap: LLVM inlines them.
    unsafe {
        core::ptr::copy_nonoverlapping(key, &mut slot.key, 1);
        core::ptr::copy_nonoverlapping(p, &mut slot.persist, 1);
    }
    slot.filled = 1;
}
