//! Fragments of datagrams to a VIP, both families.
//!
//! Only a datagram's first fragment carries the ports, so only it can be scheduled. When it
//! is forwarded, [`remember`] notes (source, destination, protocol, fragment id) -> backend;
//! a later fragment of that datagram ([`forward_later`]) goes to the same backend while the
//! entry is younger than the family's reassembly timeout (each fragment refreshes it) and the
//! backend is still usable. A later fragment of no remembered datagram (not to a VIP, or
//! ahead of its first fragment, or after its entry expired) passes to the kernel, which holds
//! it until its reassembly timer expires and then drops it. The director never reassembles.

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns, macros::map, maps::LruHashMap, programs::XdpContext,
};
use lb_common::{Frag, FragKey, Reason, age_ns, frag_timeouts, limits};

use crate::{NS_PER_S, Packet, Target, addressed_to_us, usable_backend_of};

/// The backend of each fragmented datagram whose first fragment was forwarded.
#[map]
static FRAGS: LruHashMap<FragKey, Frag> = LruHashMap::with_max_entries(limits::FRAGS, 0);

/// Where a packet is in its datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// A whole datagram (IPv6: also an atomic fragment, offset 0 without more fragments).
    None,
    /// Offset 0 with more fragments to come: it holds the transport header.
    First,
    /// Offset > 0: no transport header.
    Later,
}

#[inline(always)]
fn key(pkt: &Packet) -> FragKey {
    // From zeroed memory: a literal's 3-byte `_pad` became a call to a `memset` subprogram.
    let mut k: FragKey = unsafe { core::mem::zeroed() };
    k.src = pkt.flow.src;
    k.dst = pkt.flow.dst;
    k.id = pkt.frag_id;
    k.proto = pkt.frag_proto;
    k
}

/// A first fragment went to `backend` of service `service_id`: its datagram's later fragments
/// follow it. A full table evicts its least recently used datagram.
#[inline(always)]
pub fn remember(pkt: &Packet, backend: u32, service_id: u32, now: u64) {
    let timeout_s = if pkt.ipv6 {
        frag_timeouts::IPV6_S
    } else {
        frag_timeouts::IPV4_S
    };
    let f = Frag {
        last_seen_ns: now,
        backend,
        service_id,
        timeout_s,
        _pad: 0,
    };
    let _ = FRAGS.insert(&key(pkt), &f, 0);
}

/// A later fragment: to its first fragment's backend (`forwarded_fragment`), or to the kernel
/// (`pass_fragment`).
#[inline(always)]
pub fn forward_later(ctx: &XdpContext, pkt: &Packet) -> Result<Target, Reason> {
    let Some(f) = FRAGS.get_ptr_mut(&key(pkt)) else {
        return Err(Reason::PassFragment);
    };
    let f = unsafe { &mut *f };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if age_ns(now, f.last_seen_ns) > f.timeout_s as u64 * NS_PER_S {
        return Err(Reason::PassFragment);
    }
    let (backend_id, service_id) = (f.backend, f.service_id);
    let Some(backend) = usable_backend_of(backend_id, service_id) else {
        return Err(Reason::PassFragment);
    };
    addressed_to_us(ctx)?;
    f.last_seen_ns = now;
    Ok(Target {
        service_id,
        backend_id,
        backend,
        new_flows: 0,
        reason: Reason::ForwardedFragment,
    })
}
