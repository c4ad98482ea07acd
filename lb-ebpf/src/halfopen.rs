//! Step 5a's second table: the half-open connections (`SYNS`, `lb_common::HalfOpen`), TCP
//! connections whose SYN was scheduled and whose client has not sent its ACK yet.
//!
//! A flow's entry is in one of the four slots of its bucket: a lookup reads them until it
//! finds the flow ([`entry`]), a SYN's entry takes the one `HalfOpen::rank` gives it
//! ([`open`]) ([`assoc`](crate::assoc)). (One scan shared by both, its
//! result kept across the steps between them, took the verifier past its limit of 1,000,000
//! instructions.)

use lb_common::{FlowKey, PROTO_TCP, TcpState, half_open_bucket};

use crate::{Flow, SYN_SLOT_SHIFT, SYNS, assoc, count_conn};

/// The first slot of `flow`'s bucket.
#[inline(always)]
fn bucket(flow: &FlowKey) -> u32 {
    half_open_bucket(flow, unsafe { core::ptr::read_volatile(&SYN_SLOT_SHIFT) })
}

/// The half-open entry of `flow`, if its bucket holds one.
#[inline(always)]
pub(crate) fn entry(flow: &FlowKey) -> Option<&'static mut Flow> {
    assoc::find(&SYNS, bucket(flow), flow).map(|slot| &mut slot.flow)
}

/// Makes `entry` the half-open entry of `flow`, in the slot of its bucket that
/// `HalfOpen::rank` gives it: its own, an empty one, or the least recently seen, whose live
/// half-open connection is evicted (as an LRU map evicts its oldest) and gives back its
/// connection. The entry's stamp is made newer than any other of the bucket, so the SYNs of
/// one tick of the coarse clock are still evicted oldest first.
#[inline(always)]
pub(crate) fn open(flow: &FlowKey, entry: &Flow, now: u64) {
    let Some((slot, rank, newest)) = assoc::choose(&SYNS, bucket(flow), flow) else {
        return;
    };
    if rank > 1 && slot.flow.is_live(PROTO_TCP, now) {
        count_conn(slot.flow.backend, 1u64.wrapping_neg());
    }
    // Copies that cannot overlap: LLVM inlines them (an assignment became a memmove call).
    unsafe {
        core::ptr::copy_nonoverlapping(flow, &mut slot.key, 1);
        core::ptr::copy_nonoverlapping(entry, &mut slot.flow, 1);
    }
    // A rank above 1 is a stamp + 2: the newest stamp + 1, nanoseconds ahead of the clock.
    slot.flow.last_seen_ns = entry.last_seen_ns.max(newest.saturating_sub(1));
}

/// Empties the half-open entry of `flow`, if there is one.
#[inline(always)]
pub(crate) fn close(flow: &FlowKey) {
    if let Some(e) = entry(flow) {
        e.state = TcpState::None as u8;
    }
}
