//! Step 3's cache: the per-CPU service cache in front of `SERVICES`
//! (`lb_common::CachedService` says what a slot holds and when it is trusted).
//!
//! A hit costs inlined array reads only: the slot (`SERVICE_CACHE`, per CPU) and
//! `GENERATION`. A miss looks `SERVICES` up (the flow's port, then port 0) and fills the slot
//! with what it found.

use lb_common::{FlowKey, Service, ServiceKey, service_cache_slot, service_key};

use crate::{GENERATION, SERVICE_CACHE, SERVICES};

/// The service for `flow`'s destination: this CPU's slot, filled from `SERVICES` unless it
/// holds it already. Always the slot's copy: a service from either map made every later step
/// verified twice, past the verifier's limit. A BPF function of its own, for the same reason:
/// the hit and the miss leave the caller's registers and frame alike.
#[inline(never)]
pub(crate) fn find(flow: &FlowKey) -> Option<&'static Service> {
    let key = service_key(flow);
    // Read before `SERVICES`: a slot filled from a service written after it is stale at once.
    let generation = GENERATION.get(0).copied().unwrap_or(0);
    // The slot index is below the map's size: the lookup cannot fail.
    let c = unsafe { &mut *SERVICE_CACHE.get_ptr_mut(service_cache_slot(&key))? };
    if !c.holds(&key, generation) {
        let service = lookup(key)?;
        // Copies that cannot overlap: LLVM inlines them.
        unsafe {
            core::ptr::copy_nonoverlapping(&key, &mut c.key, 1);
            core::ptr::copy_nonoverlapping(service, &mut c.service, 1);
        }
        c.generation = generation;
        c.filled = 1;
    }
    Some(&c.service)
}

/// `SERVICES`: the flow's own port, then its VIP's all-ports service (port 0).
#[inline(always)]
fn lookup(mut key: ServiceKey) -> Option<&'static Service> {
    if let Some(s) = unsafe { SERVICES.get(&key) } {
        return Some(s);
    }
    key.port = 0;
    unsafe { SERVICES.get(&key) }
}
