//! Step 3a': the per-CPU flow cache in front of `FLOWS` (`lb_common::CachedFlow` says what a
//! slot holds and when it is trusted).
//!
//! A hit costs inlined array reads only: the slot (`FLOW_CACHE`, per CPU), `GENERATION`, the
//! backend and the interface; the clock is `bpf_jiffies64`, which the verifier inlines too.
//! A miss costs the slot read and goes the whole way; [`Cache::fill`] then writes the slot
//! from what [`established_first`](crate::established_first) decided.

use aya_ebpf::{helpers::bpf_jiffies64, programs::XdpContext};
use lb_common::{CachedFlow, FlowKey, Reason, TcpState, cache_slot};

use crate::{
    FLOW_CACHE, GENERATION, Packet, REFRESH_TICKS, Target, addressed_to_us, frag::Fragment,
    usable_backend_of,
};

/// The packet's slot, read once, with the generation and the clock it is judged by.
pub(crate) struct Cache {
    slot: Option<*mut CachedFlow>,
    generation: u32,
    now: u64,
}

/// What a slot may hold a packet's flow as: `None` for a packet that changes state (a TCP
/// SYN, FIN or RST; a fragment), else the state its entry must be in (UDP: `None` state).
#[inline(always)]
pub(crate) fn cacheable_state(pkt: &Packet) -> Option<TcpState> {
    if pkt.fragment != Fragment::None {
        return None;
    }
    match TcpState::signalled(pkt.flow.proto, pkt.tcp_flags) {
        s @ (TcpState::None | TcpState::Established) => Some(s),
        _ => None,
    }
}

impl Cache {
    #[inline(always)]
    pub(crate) fn open(flow: &FlowKey) -> Cache {
        Cache {
            slot: FLOW_CACHE.get_ptr_mut(cache_slot(flow)),
            generation: GENERATION.get(0).copied().unwrap_or(0),
            now: unsafe { bpf_jiffies64() },
        }
    }

    /// The slot's decision for a packet of `flow`, if the slot holds the flow, is fresh and
    /// of the current generation, and its backend is still usable; `cacheable`: the packet is
    /// one a slot may serve ([`cacheable_state`]). A slot of this flow that cannot serve it is
    /// emptied: the packet goes the whole way (a SYN that reuses the tuple, a FIN or RST, or
    /// a stale slot), and only that way may fill it again.
    #[inline(always)]
    pub(crate) fn hit(
        &self,
        ctx: &XdpContext,
        flow: &FlowKey,
        cacheable: bool,
    ) -> Result<Option<Target>, Reason> {
        let Some(slot) = self.slot else {
            return Ok(None);
        };
        let c = unsafe { &mut *slot };
        if c.key != *flow {
            return Ok(None);
        }
        let serves = cacheable && c.generation == self.generation && self.now < c.fresh_until;
        let backend = if serves {
            usable_backend_of(c.backend, c.service_id)
        } else {
            None
        };
        let Some(backend) = backend else {
            c.fresh_until = 0;
            return Ok(None);
        };
        addressed_to_us(ctx)?;
        Ok(Some(Target {
            service_id: c.service_id,
            backend_id: c.backend,
            backend,
            new_flows: 0,
            reason: Reason::Forwarded,
        }))
    }

    /// Remembers where a known flow went, when its packet is one a slot may serve and its
    /// entry is in the state such packets keep (TCP ESTABLISHED, or UDP).
    #[inline(always)]
    pub(crate) fn fill(&self, pkt: &Packet, state: TcpState, target: &Target) {
        let Some(slot) = self.slot else {
            return;
        };
        let refresh = unsafe { core::ptr::read_volatile(&REFRESH_TICKS) };
        if cacheable_state(pkt) != Some(state) || refresh == 0 {
            return;
        }
        let c = unsafe { &mut *slot };
        // A copy that cannot overlap: LLVM inlines it (a struct assignment from the stack
        // became a call to a byte-wise memmove).
        unsafe { core::ptr::copy_nonoverlapping(&pkt.flow, &mut c.key, 1) };
        c.service_id = target.service_id;
        c.backend = target.backend_id;
        c.generation = self.generation;
        c.fresh_until = self.now + refresh;
    }
}
