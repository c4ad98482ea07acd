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
use lb_common::{Backend, Service, age_ns};

use crate::NS_PER_S;

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

/// Slot `slot` of the service's table is outside `TABLE`.
#[inline(always)]
pub fn slot_out_of_range(ctx: &XdpContext, service: &Service, slot: u32) {
    if may_log() {
        error!(
            ctx,
            "drop_bad_backend: service {} table slot {} is outside TABLE (region {} + {})",
            service.id,
            slot,
            service.table_offset,
            service.table_len
        );
    }
}

/// Slot `slot` of the service's table names backend `id`, which is no usable backend of it:
/// out of range (`backend` is `None`), empty, without a MAC, down, or another service's.
#[inline(always)]
pub fn bad_backend(
    ctx: &XdpContext,
    service: &Service,
    slot: u32,
    id: u32,
    backend: Option<&Backend>,
) {
    if !may_log() {
        return;
    }
    match backend {
        Some(b) => error!(
            ctx,
            "drop_bad_backend: service {} table slot {} names backend {} (flags {:x}, service {}): not a usable backend of the service",
            service.id,
            slot,
            id,
            b.flags,
            b.service_id
        ),
        None => error!(
            ctx,
            "drop_bad_backend: service {} table slot {} names backend {}, outside BACKENDS",
            service.id,
            slot,
            id
        ),
    }
}

/// The service's id has no round-robin cursor (outside `CURSORS`).
#[inline(always)]
pub fn no_cursor(ctx: &XdpContext, service: &Service) {
    if may_log() {
        error!(
            ctx,
            "drop_bad_backend: service {} has no round-robin cursor (outside CURSORS)", service.id
        );
    }
}
