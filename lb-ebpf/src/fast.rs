//! Step 0: the common case first. A packet of the most common shape (Ethernet with at most
//! one 802.1Q tag, IPv4 without options, not a fragment, then TCP without SYN, FIN or RST,
//! or UDP) is read at fixed offsets, and if the flow cache serves its flow it is forwarded
//! from here: the pipeline's Packet, its IPv6, VLAN-stack, fragment and ICMP branches are
//! never built or taken. Everything else is left to the pipeline (`None`), which decides as
//! if this step had not run:
//!
//! - the checks here are the pipeline's for this shape, or stricter (IHL exactly 5, at most
//!   one tag): a frame that fails one is not judged here;
//! - a destination whose `VIP_FILTER` bit is clear passes (`pass_not_vip`), as the pipeline
//!   decides once the IP header's checks passed;
//! - the flow cache is asked exactly as the pipeline asks it ([`Cache::hit`]): a hit goes to
//!   [`deliver`], a slot of the flow that cannot serve it is emptied (the pipeline would empty
//!   it too), a miss or an empty slot goes on to the pipeline, which asks again and misses.

use aya_ebpf::programs::XdpContext;
use lb_common::{FlowKey, PROTO_TCP, PROTO_UDP, Reason, tcp_flags, v4_mapped};

use crate::{
    ETH_HLEN, ETH_P_8021Q, ETH_P_IP, IP_MF, IP_OFFSET_MASK, IPV4_MIN_HLEN, TCP_MIN_HLEN, UDP_HLEN,
    VLAN_HLEN,
    bounds::{field, ptr_at, ptr_at_var},
    cache::Cache,
    deliver, finish, maybe_vip,
};

/// The action for a packet this step decided (counted under its reason), or `None` for the
/// pipeline to decide.
#[inline(always)]
pub(crate) fn cached_ipv4(ctx: &XdpContext) -> Option<u32> {
    let eth: &[u8; ETH_HLEN + VLAN_HLEN] = unsafe { &*ptr_at(ctx, 0)? };
    let mut proto: u16 = field(eth, 12);
    let mut l3 = ETH_HLEN;
    if proto == ETH_P_8021Q.to_be() {
        proto = field(eth, 16);
        l3 += VLAN_HLEN;
    }
    if proto != ETH_P_IP.to_be() {
        return None;
    }
    let ip: &[u8; IPV4_MIN_HLEN] = unsafe { &*ptr_at_var(ctx, l3)? };
    // Version 4, IHL 5: no options.
    let total_len = u16::from_be(field(ip, 2)) as usize;
    if ip[0] != 0x45 || total_len < IPV4_MIN_HLEN || ctx.data() + l3 + total_len > ctx.data_end() {
        return None;
    }
    let dst: u32 = field(ip, 16);
    if !maybe_vip(&v4_mapped(dst)) {
        return Some(finish(Reason::PassNotVip));
    }
    if u16::from_be(field(ip, 6)) & (IP_OFFSET_MASK | IP_MF) != 0 {
        return None;
    }
    let l4 = l3 + IPV4_MIN_HLEN;
    let room = total_len - IPV4_MIN_HLEN;
    let ip_proto = ip[9];
    let ports: [u16; 2] = if ip_proto == PROTO_TCP {
        let tcp: &[u8; TCP_MIN_HLEN] = unsafe { &*ptr_at_var(ctx, l4)? };
        let flags = tcp[13];
        if room < TCP_MIN_HLEN
            || tcp[12] >> 4 < 5
            || flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) != 0
        {
            return None;
        }
        field(tcp, 0)
    } else if ip_proto == PROTO_UDP {
        let udp: &[u8; UDP_HLEN] = unsafe { &*ptr_at_var(ctx, l4)? };
        if room < UDP_HLEN {
            return None;
        }
        field(udp, 0)
    } else {
        return None;
    };
    let flow = FlowKey {
        src: v4_mapped(field(ip, 12)),
        dst: v4_mapped(dst),
        sport: ports[0],
        dport: ports[1],
        proto: ip_proto,
        _pad: [0; 3],
    };
    let reason = match Cache::open(&flow).hit(ctx, &flow, true) {
        Ok(Some(t)) => deliver(ctx, &flow, &t, total_len as u32),
        Ok(None) => return None,
        Err(reason) => reason,
    };
    // A hit forwarded to a backend of direct routing, the common case, with its constants.
    if reason == Reason::Forwarded {
        Some(finish(Reason::Forwarded))
    } else {
        Some(finish(reason))
    }
}
