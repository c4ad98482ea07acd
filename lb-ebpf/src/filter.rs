//! Step 5a's gate: the membership bitmap of `FLOWS` (`lb_common::filter` says how it is kept).
//! A clear bit spares a packet the `FLOWS` lookup, which would miss: the hash-map call that
//! was most of a new flow's cost.

use core::intrinsics::{AtomicOrdering, atomic_or};

use lb_common::{FLOW_FILTER_SIDE, FlowKey, flow_filter_hash, flow_filter_word};

use crate::FLOW_FILTER;

/// Whether `FLOWS` may hold an entry of `flow`: both its bits in the active bitmap are set.
#[inline(always)]
pub(crate) fn may_hold(flow: &FlowKey) -> bool {
    let side = FLOW_FILTER.get(FLOW_FILTER_SIDE).copied().unwrap_or(0) as u32;
    let (word, mask) = flow_filter_word(side, flow_filter_hash(flow));
    match FLOW_FILTER.get(word) {
        Some(w) => w & mask == mask,
        None => true,
    }
}

/// Sets `flow`'s bits in both bitmaps: called after each insert into `FLOWS`.
#[inline(always)]
pub(crate) fn mark(flow: &FlowKey) {
    let hash = flow_filter_hash(flow);
    for side in 0..2 {
        let (word, mask) = flow_filter_word(side, hash);
        if let Some(w) = FLOW_FILTER.get_ptr_mut(word) {
            // SeqCst: with Relaxed, this LLVM emits the OR without BPF_FETCH.
            unsafe { atomic_or::<u64, u64, { AtomicOrdering::SeqCst }>(w, mask) };
        }
    }
}
