//! The per-CPU flow cache (`FLOW_CACHE`): a direct-mapped array in front of the connection
//! table, so that a known flow is forwarded with inlined array reads and no hash-map call.
//!
//! A slot holds a whole [`FlowKey`] and what forwarding needs (service id, backend id); it is
//! trusted only while
//! - its key is the packet's (the index is a hash, so slots are shared by many flows),
//! - its `generation` is the current one (`GENERATION[0]`, which user space bumps after every
//!   write that can change where a flow goes: services, backends, tables, installed flows),
//! - the clock (`bpf_jiffies64`) is before its `fresh_until`: a packet after that takes the
//!   whole path once, which refreshes the connection table's entry (its last-seen stamp and
//!   its LRU position) and the slot.
//!
//! Only the packets that change no state are served from a slot: a TCP segment without SYN,
//! FIN or RST of an established connection, or a UDP datagram of a known flow; no fragments.

use crate::{FlowKey, limits};

/// A slot of `FLOW_CACHE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedFlow {
    pub key: FlowKey,
    pub service_id: u32,
    pub backend: u32,
    /// `GENERATION[0]` when the slot was filled (read before the maps it was filled from).
    pub generation: u32,
    pub _pad: u32,
    /// `bpf_jiffies64()` up to which the slot serves (exclusive); 0: an empty slot.
    pub fresh_until: u64,
}

const _: () = assert!(core::mem::size_of::<CachedFlow>() == 64);

/// The slot of `FLOW_CACHE` a flow uses: each side's address words folded with XOR, mixed
/// with two multiplies and a shift (the varying bytes of addresses and ports sit in the same
/// bits of their words, so a plain fold would collide). A collision only sends a packet the
/// whole way.
#[inline(always)]
pub const fn cache_slot(f: &FlowKey) -> u32 {
    let mut x = flow_fold(f);
    x ^= x >> 15;
    x.wrapping_mul(0x85eb_ca6b) >> (32 - limits::FLOW_CACHE_BITS)
}

/// A flow's key through [`flow_fold`] and MurmurHash3's 32-bit finaliser: the hash whose top
/// bits [`half_open_bucket`](crate::half_open_bucket) and
/// [`flow_filter_bit`](crate::flow_filter_bit) take.
#[inline(always)]
pub(crate) const fn flow_fmix(f: &FlowKey) -> u32 {
    crate::hash_finish(flow_fold(f), 0)
}

/// A flow's key folded into 32 bits, before the mixing that [`cache_slot`] and
/// [`flow_fmix`] each do.
#[inline(always)]
pub(crate) const fn flow_fold(f: &FlowKey) -> u32 {
    let client = f.src[0] ^ f.src[1] ^ f.src[2] ^ f.src[3];
    let vip = f.dst[0] ^ f.dst[1] ^ f.dst[2] ^ f.dst[3];
    let ports = f.sport as u32 | (f.dport as u32) << 16;
    client.wrapping_mul(0x9e37_79b1) ^ vip ^ ports ^ f.proto as u32
}

/// How many `bpf_jiffies64` ticks a slot serves after it is filled: one second at a tick of
/// `tick_ns` (the resolution of `CLOCK_MONOTONIC_COARSE`, `1 / HZ`), at least one tick.
pub const fn refresh_ticks(tick_ns: u64) -> u64 {
    if tick_ns == 0 {
        return 0;
    }
    let t = 1_000_000_000 / tick_ns;
    if t == 0 { 1 } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v4_mapped;

    fn key(src: u32, sport: u16) -> FlowKey {
        FlowKey {
            src: v4_mapped(src.to_be()),
            dst: v4_mapped(0x0a00_0001u32.to_be()),
            sport: sport.to_be(),
            dport: 80u16.to_be(),
            proto: crate::PROTO_TCP,
            _pad: [0; 3],
        }
    }

    #[test]
    fn slots_stay_in_the_cache_and_spread_over_it() {
        let mut used = [false; limits::FLOW_CACHE_SLOTS as usize];
        for c in 0..64u32 {
            for p in 0..256u16 {
                let s = cache_slot(&key(0x0a00_0100 + c, 30000 + p));
                assert!(s < limits::FLOW_CACHE_SLOTS);
                used[s as usize] = true;
            }
        }
        // 16,384 flows into 8,192 slots: a uniform hash uses about 86% of them. Client
        // addresses and ports vary in their last bytes only, as in real traffic.
        let n = used.iter().filter(|u| **u).count();
        assert!(n > limits::FLOW_CACHE_SLOTS as usize * 4 / 5, "{n}");
    }

    #[test]
    fn one_second_of_ticks() {
        assert_eq!(refresh_ticks(4_000_000), 250);
        assert_eq!(refresh_ticks(1_000_000), 1000);
        assert_eq!(refresh_ticks(0), 0);
        assert_eq!(refresh_ticks(2_000_000_000), 1);
    }
}
