//! Step 0: the common case first. A packet of the most common shape (Ethernet with at most
//! one 802.1Q tag; IPv4 without options and not a fragment, or IPv6 without extension
//! headers; then TCP without SYN, FIN or RST, or UDP) is read at fixed offsets, and if the
//! flow cache serves its flow it is forwarded from here: the pipeline's `Packet` is never
//! built and its branches for VLAN stacks, options, extension headers, fragments and ICMP are
//! never taken. Everything else is left to the pipeline (`None`), which decides as if this
//! step had not run:
//!
//! - the checks here are the pipeline's for this shape, or stricter (IHL exactly 5, no
//!   extension header, at most one tag): a frame that fails one is not judged here;
//! - a destination whose `VIP_FILTER` bit is clear passes (`pass_not_vip`), as the pipeline
//!   decides once the IP header's checks passed;
//! - the flow cache is asked exactly as the pipeline asks it ([`Cache::hit`]): a hit goes to
//!   [`deliver`], a slot of the flow that cannot serve it is emptied (the pipeline would empty
//!   it too), a miss or an empty slot goes on to the pipeline, which asks again and misses.

use aya_ebpf::programs::XdpContext;
use lb_common::{FlowKey, PROTO_TCP, PROTO_UDP, Reason, tcp_flags, v4_mapped};

use crate::{
    ETH_HLEN, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IP_MF, IP_OFFSET_MASK, IPV4_MIN_HLEN, IPV6_HLEN,
    TCP_MIN_HLEN, UDP_HLEN, VLAN_HLEN, addr_at,
    bounds::{field, ptr_at, ptr_at_var},
    cache::Cache,
    deliver, finish, maybe_vip,
};

/// The action for a packet this step decided (counted under its reason), or `None` for the
/// pipeline to decide.
#[inline(always)]
pub(crate) fn cached(ctx: &XdpContext) -> Option<u32> {
    let eth: &[u8; ETH_HLEN + VLAN_HLEN] = unsafe { &*ptr_at(ctx, 0)? };
    let mut proto: u16 = field(eth, 12);
    let mut l3 = ETH_HLEN;
    if proto == ETH_P_8021Q.to_be() {
        proto = field(eth, 16);
        l3 += VLAN_HLEN;
    }
    if proto == ETH_P_IP.to_be() {
        ipv4(ctx, l3)
    } else if proto == ETH_P_IPV6.to_be() {
        ipv6(ctx, l3)
    } else {
        None
    }
}

/// IPv4 with IHL 5, neither more-fragments nor an offset.
#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize) -> Option<u32> {
    let ip: &[u8; IPV4_MIN_HLEN] = unsafe { &*ptr_at_var(ctx, l3)? };
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
    let proto = ip[9];
    let ports = ports(ctx, l3 + IPV4_MIN_HLEN, total_len - IPV4_MIN_HLEN, proto)?;
    let flow = FlowKey {
        src: v4_mapped(field(ip, 12)),
        dst: v4_mapped(dst),
        sport: ports[0],
        dport: ports[1],
        proto,
        _pad: [0; 3],
    };
    serve(ctx, &flow, total_len as u32)
}

/// IPv6 whose next header is TCP or UDP.
#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize) -> Option<u32> {
    let ip: &[u8; IPV6_HLEN] = unsafe { &*ptr_at_var(ctx, l3)? };
    let payload_len = u16::from_be(field(ip, 4)) as usize;
    let proto = ip[6];
    if ip[0] >> 4 != 6
        || (proto != PROTO_TCP && proto != PROTO_UDP)
        || ctx.data() + l3 + IPV6_HLEN + payload_len > ctx.data_end()
    {
        return None;
    }
    let dst = addr_at(ip, 24);
    if !maybe_vip(&dst) {
        return Some(finish(Reason::PassNotVip));
    }
    let ports = ports(ctx, l3 + IPV6_HLEN, payload_len, proto)?;
    let flow = FlowKey {
        src: addr_at(ip, 8),
        dst,
        sport: ports[0],
        dport: ports[1],
        proto,
        _pad: [0; 3],
    };
    serve(ctx, &flow, (IPV6_HLEN + payload_len) as u32)
}

/// The ports of a TCP segment without SYN, FIN or RST, or of a UDP datagram, at `l4` with
/// `room` bytes of the IP packet left for it: the checks of the pipeline's `parse_l4`, whose
/// failures are left to the pipeline to count. (Calling `parse_l4` here instead, its result
/// discarded on error, cost the hit 7-8 ns in two paired runs and the verifier 18,000 more
/// instructions.)
#[inline(always)]
fn ports(ctx: &XdpContext, l4: usize, room: usize, proto: u8) -> Option<[u16; 2]> {
    if proto == PROTO_TCP {
        let tcp: &[u8; TCP_MIN_HLEN] = unsafe { &*ptr_at_var(ctx, l4)? };
        let flags = tcp[13];
        if room < TCP_MIN_HLEN
            || tcp[12] >> 4 < 5
            || flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) != 0
        {
            return None;
        }
        Some(field(tcp, 0))
    } else if proto == PROTO_UDP {
        let udp: &[u8; UDP_HLEN] = unsafe { &*ptr_at_var(ctx, l4)? };
        if room < UDP_HLEN {
            return None;
        }
        Some(field(udp, 0))
    } else {
        None
    }
}

/// The flow cache's decision for `flow`, whose packet is one a slot may serve; `ip_len` is
/// what the counters count.
#[inline(always)]
fn serve(ctx: &XdpContext, flow: &FlowKey, ip_len: u32) -> Option<u32> {
    let reason = match Cache::open(flow).hit(ctx, flow, true) {
        Ok(Some(t)) => deliver(ctx, flow, &t, ip_len),
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
