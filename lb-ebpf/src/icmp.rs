//! ICMP and ICMPv6 errors about VIP flows, sent to the flow's backend.
//!
//! In direct routing a real server answers with the VIP as its source. A router that cannot
//! forward such a reply (too big for the next link, TTL exhausted, no route) sends its error to
//! the VIP, so it arrives here. The real server, not the director, holds the connection, so the
//! error goes to it: this is what keeps path-MTU discovery working for the real servers.
//!
//! Handled: ICMPv4 destination unreachable (type 3, every code; "fragmentation needed" is code
//! 4) and time exceeded (11); ICMPv6 destination unreachable (1), packet too big (2) and time
//! exceeded (3). Every other ICMP message (echo requests to a VIP, neighbour discovery, ...)
//! passes to the kernel (`pass_not_tcp_udp`).
//!
//! The quoted packet (the inner IP header and the first 8 bytes of TCP or UDP) must be a reply
//! of a VIP flow: its source is the outer destination, and a service exists for (its source,
//! its source port, its protocol), an all-ports service too. The quote reversed is the key of
//! the client's packets in `FLOWS`, which is only read: no entry is made, refreshed or moved
//! to another state, and no connection is counted. A live entry whose backend is usable of
//! the service gets the error; without one the error is placed as a packet of the flow without
//! an entry would be (`place_without_entry`: persistence, else the mh/sh hash); rr, wrr, lc
//! and wlc cannot place it and pass it (`pass_icmp_no_flow`). `process` forwards it as any
//! packet (`rewrite`: the MACs, or a tunnel backend's encapsulation), and it is counted as a packet of the service and the backend, not a new flow.
//!
//! What passes, and as what: a broken outer packet (`pass_malformed`); a quote that is
//! truncated, malformed or of a non-first fragment, or an ICMPv6 quote whose IPv6 header is
//! followed by an extension header (the quote is not walked) (`pass_icmp_no_flow`); a quote
//! that is no reply of a VIP flow (`pass_not_vip`). An ICMP error is never dropped.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use lb_common::{
    Addr, Backend, FlowKey, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Reason, Service,
    v4_mapped,
};

use crate::{
    FLOWS, Fragment, IP_OFFSET_MASK, IPV4_MIN_HLEN, IPV6_HLEN, Packet, Target, addr_at,
    addressed_to_us, bounds::field, find_service, halfopen, ipv6, place_without_entry, ptr_at,
    usable_backend, usable_backend_of,
};

/// The ICMP and ICMPv6 header: type, code, checksum and 4 bytes (unused, MTU or pointer).
const ICMP_HLEN: usize = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
/// The part of TCP or UDP an ICMP error quotes at least (RFC 792): the ports are its first 4.
const QUOTED_L4: usize = 8;

/// An ICMP (IPv4) or ICMPv6 (IPv6) message that the parsing step found whole: an error
/// goes to [`v4_error`] or [`v6_error`]; ICMP in the other family, and a fragment of an ICMP
/// message, pass.
#[inline(always)]
pub fn error(ctx: &XdpContext, l3: usize, pkt: &Packet) -> Result<Target, Reason> {
    if pkt.fragment != Fragment::None {
        return Err(Reason::PassFragment);
    }
    let (icmp, ip_end) = (pkt.l4 as usize, l3 + pkt.ip_len as usize);
    let placed = match (pkt.ipv6, pkt.flow.proto) {
        (false, PROTO_ICMP) => v4_error(ctx, l3, icmp, ip_end),
        (true, PROTO_ICMPV6) => v6_error(ctx, l3, icmp, ip_end),
        _ => Err(Reason::PassNotTcpUdp),
    }?;
    target(placed)
}

/// What [`to_backend`] found, as one word: its reason, or `PLACED` with the service id in
/// bits 32..62 and the backend id in bits 0..32.
const PLACED: u64 = 1 << 63;

/// The backend [`to_backend`] placed the error on, looked up again (a BPF function returns
/// one scalar).
#[inline(always)]
fn target(placed: u64) -> Result<Target, Reason> {
    if placed & PLACED == 0 {
        // The reasons `to_backend` gives.
        return Err(match placed as u32 {
            r if r == Reason::PassNotVip as u32 => Reason::PassNotVip,
            r if r == Reason::PassUnknownIface as u32 => Reason::PassUnknownIface,
            r if r == Reason::PassOtherMac as u32 => Reason::PassOtherMac,
            r if r == Reason::PassMalformed as u32 => Reason::PassMalformed,
            _ => Reason::PassIcmpNoFlow,
        });
    }
    let (service_id, backend_id) = (((placed & !PLACED) >> 32) as u32, placed as u32);
    let backend = usable_backend_of(backend_id, service_id).ok_or(Reason::PassIcmpNoFlow)?;
    Ok(Target {
        service_id,
        backend_id,
        backend,
        new_flows: 0,
        reason: Reason::ForwardedIcmp,
    })
}

/// An ICMPv4 message at `icmp` in the IPv4 packet at `l3` that ends at `ip_end` (the outer
/// header checked: version, length within the frame, not a fragment).
#[inline(always)]
pub fn v4_error(ctx: &XdpContext, l3: usize, icmp: usize, ip_end: usize) -> Result<u64, Reason> {
    let ip_end = opaque(ip_end);
    let Some(h) = read::<ICMP_HLEN>(ctx, icmp, ip_end) else {
        return Err(Reason::PassMalformed);
    };
    if h[0] != ICMP_DEST_UNREACH && h[0] != ICMP_TIME_EXCEEDED {
        return Err(Reason::PassNotTcpUdp);
    }
    let Some(outer) = read::<IPV4_MIN_HLEN>(ctx, l3, ip_end) else {
        return Err(Reason::PassMalformed);
    };
    // The quoted IPv4 header.
    let inner = icmp + ICMP_HLEN;
    let Some(ip) = read::<IPV4_MIN_HLEN>(ctx, inner, ip_end) else {
        return Err(Reason::PassIcmpNoFlow);
    };
    let hlen = ((ip[0] & 0x0f) as usize) * 4;
    if ip[0] >> 4 != 4 || hlen < IPV4_MIN_HLEN {
        return Err(Reason::PassIcmpNoFlow);
    }
    let (src, dst, proto): (u32, u32, u8) = (field(ip, 12), field(ip, 16), ip[9]);
    if src != field(outer, 16) || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return Err(Reason::PassNotVip);
    }
    // A non-first fragment quotes no ports.
    if u16::from_be_bytes([ip[6], ip[7]]) & IP_OFFSET_MASK != 0 {
        return Err(Reason::PassIcmpNoFlow);
    }
    let Some(ports) = quoted_ports(ctx, inner + hlen, ip_end) else {
        return Err(Reason::PassIcmpNoFlow);
    };
    let flow = client_flow(v4_mapped(src), v4_mapped(dst), ports, proto);
    Ok(to_backend(ctx, &flow))
}

/// An ICMPv6 message at `icmp` in the IPv6 packet at `l3` that ends at `ip_end` (the outer
/// header checked: version, length within the frame; `icmp` is where its header chain ends).
#[inline(always)]
pub fn v6_error(ctx: &XdpContext, l3: usize, icmp: usize, ip_end: usize) -> Result<u64, Reason> {
    let ip_end = opaque(ip_end);
    let Some(h) = read::<ICMP_HLEN>(ctx, icmp, ip_end) else {
        return Err(Reason::PassMalformed);
    };
    if h[0] != ICMPV6_DEST_UNREACH && h[0] != ICMPV6_PACKET_TOO_BIG && h[0] != ICMPV6_TIME_EXCEEDED
    {
        return Err(Reason::PassNotTcpUdp);
    }
    let Some(outer) = read::<IPV6_HLEN>(ctx, l3, ip_end) else {
        return Err(Reason::PassMalformed);
    };
    // The quoted IPv6 header.
    let inner = icmp + ICMP_HLEN;
    let Some(ip) = read::<IPV6_HLEN>(ctx, inner, ip_end) else {
        return Err(Reason::PassIcmpNoFlow);
    };
    if ip[0] >> 4 != 6 {
        return Err(Reason::PassIcmpNoFlow);
    }
    let (src, dst, proto) = (addr_at(ip, 8), addr_at(ip, 24), ip[6]);
    if src != addr_at(outer, 24) {
        return Err(Reason::PassNotVip);
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        // An extension header may hide TCP or UDP behind it: not walked inside a quote.
        return Err(if ipv6::is_extension(proto) {
            Reason::PassIcmpNoFlow
        } else {
            Reason::PassNotVip
        });
    }
    let Some(ports) = quoted_ports(ctx, inner + IPV6_HLEN, ip_end) else {
        return Err(Reason::PassIcmpNoFlow);
    };
    let flow = client_flow(src, dst, ports, proto);
    Ok(to_backend(ctx, &flow))
}

/// The `N` bytes at `at`, if the frame holds them and they lie within the IP packet, which
/// ends at `ip_end`. The frame is checked first, and `ip_end` must be [`opaque`]: the caller
/// proved that the packet fits in the frame, and from that the compiler would otherwise fold
/// the frame check into the packet's, which the verifier cannot follow.
#[inline(always)]
fn read<const N: usize>(ctx: &XdpContext, at: usize, ip_end: usize) -> Option<&[u8; N]> {
    let p = ptr_at::<[u8; N]>(ctx, at)?;
    if at + N > ip_end {
        return None;
    }
    Some(unsafe { &*p })
}

/// The quoted source and destination ports (network byte order), if the quote holds the first
/// 8 bytes of TCP or UDP within the IP packet.
#[inline(always)]
fn quoted_ports(ctx: &XdpContext, l4: usize, ip_end: usize) -> Option<[u16; 2]> {
    let p = read::<QUOTED_L4>(ctx, l4, ip_end)?;
    Some([
        u16::from_ne_bytes([p[0], p[1]]),
        u16::from_ne_bytes([p[2], p[3]]),
    ])
}

/// The key of the client's packets of the flow whose reply (`src` -> `dst`) was quoted.
#[inline(always)]
fn client_flow(src: Addr, dst: Addr, ports: [u16; 2], proto: u8) -> FlowKey {
    // From zeroed memory: a literal's 3-byte `_pad` became a call to a `memset` subprogram.
    let mut k: FlowKey = unsafe { core::mem::zeroed() };
    k.src = dst;
    k.dst = src;
    k.sport = ports[1];
    k.dport = ports[0];
    k.proto = proto;
    k
}

/// The backend of the client flow `flow`, if it is one of a VIP's (see [`target`] for the
/// word it returns). One BPF function for both families: it carries the lookups and placement
/// that each caller would otherwise repeat.
#[inline(never)]
fn to_backend(ctx: &XdpContext, flow: &FlowKey) -> u64 {
    let Some(service) = find_service(flow) else {
        return Reason::PassNotVip as u64;
    };
    if let Err(reason) = addressed_to_us(ctx) {
        return reason as u64;
    }
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let id = match entry_backend(flow, service, now) {
        Some((id, _)) => id,
        None => {
            // No entry to place it by, or no backend: the kernel gets it, as before.
            match place_without_entry(ctx, flow, service, now) {
                Ok((id, _)) => id,
                Err(_) => return Reason::PassIcmpNoFlow as u64,
            }
        }
    };
    PLACED | (service.id as u64) << 32 | id as u64
}

/// The backend of a live connection-table entry of `flow`, if it is a usable backend of the
/// service. Read only: the entry is neither refreshed nor moved to another state.
#[inline(always)]
fn entry_backend(flow: &FlowKey, service: &Service, now: u64) -> Option<(u32, &'static Backend)> {
    let entry = unsafe {
        FLOWS
            .get(flow)
            .or_else(|| halfopen::entry(flow).map(|e| &*e))
    }?;
    if !entry.is_live(flow.proto, now) {
        return None;
    }
    Some((entry.backend, usable_backend(entry.backend, service)?))
}

/// `v`, as a value the compiler knows nothing about (a stack store and load).
#[inline(always)]
pub fn opaque(v: usize) -> usize {
    unsafe { core::ptr::read_volatile(&v) }
}
