//! Rare data-path events, logged for the daemon (aya-log; `lb-ctl run` reads the records and
//! logs them through tracing): the drops that mean the maps disagree with each other, which
//! the `drop_bad_backend` counter counts but cannot explain. Never on a forwarding path.
//!
//! At most one record per CPU per second: a table that points at a bad slot is hit by every
//! packet scheduled onto it, and the counter has the total.

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns, macros::map, maps::PerCpuArray, programs::XdpContext,
};
use aya_log_ebpf::error;
use lb_common::age_ns;

use crate::{BACKENDS, NS_PER_S};

/// When this CPU last wrote a record (coarse ns; 0 = never).
#[map]
static LOGGED_AT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Whether this CPU may write a record now (and if so, notes that it did).
#[inline(always)]
fn may_log() -> bool {
    let Some(at) = LOGGED_AT.get_ptr_mut(0) else {
        return false;
    };
    let at = unsafe { &mut *at };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if *at != 0 && age_ns(now, *at) < NS_PER_S {
        return false;
    }
    *at = now;
    true
}

// Each event is its own BPF function (`inline(never)`), called with scalars only: the
// forwarding paths of `lb_xdp` then carry a call instruction, not the record's formatting,
// so their code is what it was without logging.

/// Slot `slot` of service `service`'s table (the region `offset + len`) is outside `TABLE`.
#[inline(never)]
pub fn slot_out_of_range(ctx: &XdpContext, service: u32, slot: u32, offset: u32, len: u32) {
    if may_log() {
        error!(
            ctx,
            "drop_bad_backend: service {} table slot {} is outside TABLE (region {} + {})",
            service,
            slot,
            offset,
            len
        );
    }
}

/// Slot `slot` of service `service`'s table names backend `id`, which is no usable backend
/// of it: outside `BACKENDS`, empty, without a MAC, down, or another service's.
#[inline(never)]
pub fn bad_backend(ctx: &XdpContext, service: u32, slot: u32, id: u32) {
    if !may_log() {
        return;
    }
    match BACKENDS.get(id) {
        Some(b) => error!(
            ctx,
            "drop_bad_backend: service {} table slot {} names backend {} (flags {:x}, service {}): not a usable backend of the service",
            service,
            slot,
            id,
            b.flags,
            b.service_id
        ),
        None => error!(
            ctx,
            "drop_bad_backend: service {} table slot {} names backend {}, outside BACKENDS",
            service,
            slot,
            id
        ),
    }
}

/// Service `service` has no round-robin cursor (its id is outside `CURSORS`).
#[inline(never)]
pub fn no_cursor(ctx: &XdpContext, service: u32) {
    if may_log() {
        error!(
            ctx,
            "drop_bad_backend: service {} has no round-robin cursor (outside CURSORS)", service
        );
    }
}
