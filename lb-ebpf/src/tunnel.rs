//! Tunnel backends (`Backend::forward` IPIP or GUE): the packet, kept whole, inside an outer
//! header to the backend, sent to the next hop the kernel's FIB gives ([`fib`]).
//!
//! The outer header, by the family of `Backend::addr` (either family inside either):
//! - IPIP: outer IPv4 (protocol 4 for IPv4 inside, 41 for IPv6 inside) or outer IPv6 (next
//!   header 4 or 41).
//! - GUE variant 1 ("direct IP", as Linux's FOU/GUE receive path decapsulates it): outer IP,
//!   then UDP (source port 49152 + a hash of the flow's 14 low bits, destination port
//!   `Backend::tunnel_port`, checksum 0), then the inner IP packet directly: no GUE header;
//!   the receiver tells the family from the inner packet's version nibble. Over IPv6 the UDP
//!   checksum is 0 as well (RFC 6935/6936 allow it for tunnels; the receiver must accept it).
//!
//! Outer IPv4: IHL 5, the inner TOS byte (DSCP and ECN), identification 0, DF set, TTL = the
//! inner TTL (or hop limit), header checksum. Outer IPv6: the inner traffic class, flow label
//! = 20 bits of the flow's hash, hop limit = the inner's. Source `Backend::tunnel_src` (when
//! unspecified, the address the kernel would use toward the backend), destination
//! `Backend::addr`. Ethernet: the FIB's MACs (the next hop's and the egress interface's).
//!
//! What does not go out encapsulated, the original packet unchanged: a FIB miss, an
//! unresolved next hop, a route whose egress interface is not the ingress interface (the
//! packet would have to be redirected), a VLAN-tagged frame (`pass_no_route`). A packet whose
//! encapsulation exceeds the route's MTU is answered with ICMP "fragmentation needed" or
//! ICMPv6 "packet too big" from the VIP ([`too_big`], `answered_too_big`).

use aya_ebpf::{
    helpers::generated::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{Addr, Backend, Forward, PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP, Reason};

use crate::{
    ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPV4_MIN_HLEN, IPV6_HLEN, UDP_HLEN, addr_at, bounds::field,
    fib, icmp::opaque, ptr_at,
};

/// IP protocol numbers of IP inside IP.
const PROTO_IPIP: u8 = 4;
const PROTO_IPV6: u8 = 41;
/// The outer IPv4 header's flags: don't fragment.
const IP_DF: u8 = 0x40;
/// What [`encap`] returns: sent, not sent (the packet unchanged), or too big (ORed with the
/// MTU the client should use).
const SENT: u32 = 0;
const NO_ROUTE: u32 = 1;
const TOO_BIG: u32 = 1 << 16;
/// The quote of an ICMP "fragmentation needed": the first bytes of the client's IPv4 packet,
/// so that the message is 576 bytes (RFC 1812 4.3.2.3: as much as fits in 576).
pub const QUOTE_V4: usize = 576 - IPV4_MIN_HLEN - ICMP_HLEN;
/// The quote of an ICMPv6 "packet too big": so that the message is 1280 bytes (RFC 4443 2.4).
pub const QUOTE_V6: usize = 1280 - IPV6_HLEN - ICMP_HLEN;
const ICMP_HLEN: usize = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// The smallest MTU an IPv6 link may have (RFC 8200).
const IPV6_MIN_MTU: u32 = 1280;
/// TTL / hop limit of the ICMP errors the director sends, and IPv4's TOS for them (Linux's
/// `IPTOS_PREC_INTERNETCONTROL`).
const ICMP_TTL: u8 = 64;
const ICMP_TOS: u8 = 0xc0;

/// Step 6 for a tunnel backend: encapsulate and send to the FIB's next hop, or answer the
/// client that the packet is too big, or leave the packet as it is for the kernel. `hash` is
/// the flow's hash (the outer UDP source port and IPv6 flow label, for ECMP on the way).
#[inline(always)]
pub fn send(ctx: &XdpContext, backend: &Backend, hash: u32) -> Result<(), Reason> {
    let r = encap(ctx, backend, hash);
    if r == SENT {
        Ok(())
    } else if r & TOO_BIG != 0 {
        Err(too_big(ctx, r & 0xffff))
    } else {
        Err(Reason::PassNoRoute)
    }
}

/// Whether `a` is an IPv4-mapped address (`::ffff:a.b.c.d`).
#[inline(always)]
fn is_v4(a: &Addr) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == 0x0000_ffffu32.to_be()
}

/// The one's complement sum of `sum` folded to 16 bits, complemented: a checksum field.
#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The sum of the 16-bit halves of a word, as read from memory.
#[inline(always)]
fn halves(w: u32) -> u64 {
    (w & 0xffff) as u64 + (w >> 16) as u64
}

/// What the encapsulation needs to know of the inner packet, read from the frame.
struct Inner {
    v6: bool,
    /// The inner IP packet's length (IPv4 total length, or 40 + the IPv6 payload length).
    len: u32,
    /// TOS / traffic class, and TTL / hop limit.
    tos: u8,
    ttl: u8,
}

#[inline(always)]
fn inner(ctx: &XdpContext) -> Option<Inner> {
    let eth = ptr_at::<[u8; ETH_HLEN]>(ctx, 0)?;
    let ethertype = unsafe { u16::from_be_bytes([(*eth)[12], (*eth)[13]]) };
    if ethertype == ETH_P_IP {
        let ip = unsafe { &*ptr_at::<[u8; IPV4_MIN_HLEN]>(ctx, ETH_HLEN)? };
        Some(Inner {
            v6: false,
            len: u16::from_be_bytes([ip[2], ip[3]]) as u32,
            tos: ip[1],
            ttl: ip[8],
        })
    } else if ethertype == ETH_P_IPV6 {
        let ip = unsafe { &*ptr_at::<[u8; 8]>(ctx, ETH_HLEN)? };
        Some(Inner {
            v6: true,
            len: IPV6_HLEN as u32 + u16::from_be_bytes([ip[4], ip[5]]) as u32,
            tos: (ip[0] << 4) | (ip[1] >> 4),
            ttl: ip[7],
        })
    } else {
        // A VLAN tag: the outer packet would have to leave tagged as the frame came.
        None
    }
}

/// Encapsulates the packet for `backend` (IPIP or GUE) and addresses it to the FIB's next
/// hop. A BPF function of its own: the FIB's parameters live in its frame, not in `process`'s.
#[inline(never)]
fn encap(ctx: &XdpContext, backend: &Backend, hash: u32) -> u32 {
    let Some(inner) = inner(ctx) else {
        return NO_ROUTE;
    };
    let outer_v6 = !is_v4(&backend.addr);
    let gue = backend.forward == Forward::Gue as u8;
    let ip_hlen = if outer_v6 { IPV6_HLEN } else { IPV4_MIN_HLEN };
    let overhead = ip_hlen + if gue { UDP_HLEN } else { 0 };
    let proto = if gue {
        PROTO_UDP
    } else if inner.v6 {
        PROTO_IPV6
    } else {
        PROTO_IPIP
    };
    let sport = ((0xc000 | (hash & 0x3fff)) as u16).to_be();
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let Some(p) = fib::params() else {
        return NO_ROUTE;
    };
    let src = &backend.tunnel_src;
    p.family = if outer_v6 {
        fib::AF_INET6
    } else {
        fib::AF_INET
    };
    p.l4_protocol = proto;
    p.sport = if gue { sport } else { 0 };
    p.dport = if gue { backend.tunnel_port } else { 0 };
    p.tot_len = (inner.len as usize + overhead) as u16;
    p.ifindex = ingress;
    p.vlan = 0;
    p.smac = [0; 6];
    p.dmac = [0; 6];
    // No source configured: the one the kernel would pick for the backend.
    let unspecified;
    if outer_v6 {
        p.tos_flowinfo = (((inner.tos as u32) << 20) | (hash & 0xfffff)).to_be();
        p.src = *src;
        p.dst = backend.addr;
        unspecified = src[0] | src[1] | src[2] | src[3] == 0;
    } else {
        p.tos_flowinfo = inner.tos as u32;
        p.src = [src[3], 0, 0, 0];
        p.dst = [backend.addr[3], 0, 0, 0];
        unspecified = src[3] == 0;
    }
    let flags = if unspecified { fib::LOOKUP_SRC } else { 0 };
    let rc = fib::lookup(ctx, p, flags);
    if rc == fib::RET_FRAG_NEEDED {
        let mtu = (p.tot_len as u32).saturating_sub(overhead as u32);
        return TOO_BIG | (mtu & 0xffff);
    }
    if rc != fib::RET_SUCCESS || p.ifindex != ingress {
        return NO_ROUTE;
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(overhead as i32)) } != 0 {
        return NO_ROUTE;
    }
    // Ethernet, then the outer IP header, then UDP: each checked again after the move.
    let Some(eth) = ptr_at::<[u8; ETH_HLEN]>(ctx, 0) else {
        return NO_ROUTE;
    };
    let eth = unsafe { &mut *eth };
    eth[..6].copy_from_slice(&p.dmac);
    eth[6..12].copy_from_slice(&p.smac);
    let ethertype = if outer_v6 { ETH_P_IPV6 } else { ETH_P_IP };
    eth[12..].copy_from_slice(&ethertype.to_be_bytes());
    let outer_len = inner.len + overhead as u32;
    if outer_v6 {
        let Some(ip) = ptr_at::<[u8; IPV6_HLEN]>(ctx, ETH_HLEN) else {
            return NO_ROUTE;
        };
        let ip = unsafe { &mut *ip };
        let w0 = (6u32 << 28) | ((inner.tos as u32) << 20) | (hash & 0xfffff);
        ip[..4].copy_from_slice(&w0.to_be_bytes());
        ip[4..6].copy_from_slice(&((outer_len - IPV6_HLEN as u32) as u16).to_be_bytes());
        ip[6] = proto;
        ip[7] = inner.ttl;
        for i in 0..4 {
            ip[8 + i * 4..12 + i * 4].copy_from_slice(&p.src[i].to_ne_bytes());
            ip[24 + i * 4..28 + i * 4].copy_from_slice(&backend.addr[i].to_ne_bytes());
        }
    } else {
        let Some(ip) = ptr_at::<[u8; IPV4_MIN_HLEN]>(ctx, ETH_HLEN) else {
            return NO_ROUTE;
        };
        let ip = unsafe { &mut *ip };
        ip[0] = 0x45;
        ip[1] = inner.tos;
        ip[2..4].copy_from_slice(&(outer_len as u16).to_be_bytes());
        ip[4..8].copy_from_slice(&[0, 0, IP_DF, 0]);
        ip[8] = inner.ttl;
        ip[9] = proto;
        ip[10..12].copy_from_slice(&[0, 0]);
        ip[12..16].copy_from_slice(&p.src[0].to_ne_bytes());
        ip[16..20].copy_from_slice(&backend.addr[3].to_ne_bytes());
        let mut sum = 0u64;
        for i in 0..IPV4_MIN_HLEN / 2 {
            sum += u16::from_ne_bytes([ip[i * 2], ip[i * 2 + 1]]) as u64;
        }
        ip[10..12].copy_from_slice(&fold(sum).to_ne_bytes());
    }
    if gue {
        let at = ETH_HLEN + ip_hlen;
        let Some(udp) = ptr_at::<[u8; UDP_HLEN]>(ctx, at) else {
            return NO_ROUTE;
        };
        let udp = unsafe { &mut *udp };
        udp[..2].copy_from_slice(&sport.to_ne_bytes());
        udp[2..4].copy_from_slice(&backend.tunnel_port.to_ne_bytes());
        udp[4..6].copy_from_slice(&((inner.len as u16) + UDP_HLEN as u16).to_be_bytes());
        udp[6..].copy_from_slice(&[0, 0]);
    }
    SENT
}

/// The packet would exceed the route's MTU once encapsulated: it becomes the answer to the
/// client, from the VIP, sent back out (XDP_TX, the MACs swapped): ICMP type 3 code 4
/// ("fragmentation needed", next-hop MTU `mtu`) quoting the first [`QUOTE_V4`] bytes of the
/// client's IPv4 packet, or ICMPv6 type 2 ("packet too big", MTU `mtu`, at least 1280)
/// quoting its first [`QUOTE_V6`] bytes. A packet shorter than its quote (possible only when
/// the route's MTU is below 600 bytes, or below 1300 for IPv6 in IPv4) passes unchanged.
#[inline(never)]
fn too_big(ctx: &XdpContext, mtu: u32) -> Reason {
    let Some(inner) = inner(ctx) else {
        return Reason::PassNoRoute;
    };
    let (hlen, quote, room) = if inner.v6 {
        (IPV6_HLEN, QUOTE_V6, 1280)
    } else {
        (IPV4_MIN_HLEN, QUOTE_V4, 576)
    };
    if (inner.len as usize) < quote {
        return Reason::PassNoRoute;
    }
    // The new headers go in front; the client's packet, from its IP header on, stays where it
    // is and becomes the quote.
    let Some(old) = ptr_at::<[u8; ETH_HLEN + IPV6_HLEN]>(ctx, 0) else {
        return Reason::PassNoRoute;
    };
    let old = unsafe { &*old };
    let (client_mac, our_mac) = (read_mac(old, 6), read_mac(old, 0));
    let (client, vip) = if inner.v6 {
        (addr_at(old, ETH_HLEN + 8), addr_at(old, ETH_HLEN + 24))
    } else {
        (
            [field(old, ETH_HLEN + 12), 0, 0, 0],
            [field(old, ETH_HLEN + 16), 0, 0, 0],
        )
    };
    let grow = hlen + ICMP_HLEN;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        return Reason::PassNoRoute;
    }
    // A scalar before any 32-bit arithmetic (the verifier refuses it on pointers).
    let len = opaque(ctx.data_end() - ctx.data());
    let want = ETH_HLEN + room;
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, want as i32 - len as i32) } != 0 {
        // The frame is as the adjust left it: put the packet back as it was.
        unsafe { bpf_xdp_adjust_head(ctx.ctx, grow as i32) };
        return Reason::PassNoRoute;
    }
    let icmp_len = ICMP_HLEN + quote;
    if inner.v6 {
        let Some(f) = ptr_at::<[u8; ETH_HLEN + 1280]>(ctx, 0) else {
            return Reason::PassNoRoute;
        };
        let f = unsafe { &mut *f };
        write_eth(f, client_mac, our_mac, ETH_P_IPV6);
        let ip = ETH_HLEN;
        f[ip..ip + 4].copy_from_slice(&(6u32 << 28).to_be_bytes());
        f[ip + 4..ip + 6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
        f[ip + 6] = PROTO_ICMPV6;
        f[ip + 7] = ICMP_TTL;
        for i in 0..4 {
            f[ip + 8 + i * 4..ip + 12 + i * 4].copy_from_slice(&vip[i].to_ne_bytes());
            f[ip + 24 + i * 4..ip + 28 + i * 4].copy_from_slice(&client[i].to_ne_bytes());
        }
        let icmp = ip + IPV6_HLEN;
        let mtu = if mtu < IPV6_MIN_MTU {
            IPV6_MIN_MTU
        } else {
            mtu
        };
        f[icmp] = ICMPV6_PACKET_TOO_BIG;
        f[icmp + 1] = 0;
        f[icmp + 2..icmp + 4].copy_from_slice(&[0, 0]);
        f[icmp + 4..icmp + 8].copy_from_slice(&mtu.to_be_bytes());
        // The pseudo-header: addresses, upper-layer length, next header.
        let mut sum = 0u64;
        for i in 0..4 {
            sum += halves(vip[i]) + halves(client[i]);
        }
        sum += u16::from_ne_bytes((icmp_len as u16).to_be_bytes()) as u64;
        sum += u16::from_ne_bytes([0, PROTO_ICMPV6]) as u64;
        let p = &mut f[icmp..] as *mut [u8] as *mut u32;
        sum += csum(p, 512, 0);
        sum += csum(unsafe { p.add(128) }, 512, 0);
        sum += csum(unsafe { p.add(256) }, (icmp_len - 1024) as u32, 0);
        f[icmp + 2..icmp + 4].copy_from_slice(&fold(sum).to_ne_bytes());
    } else {
        let Some(f) = ptr_at::<[u8; ETH_HLEN + 576]>(ctx, 0) else {
            return Reason::PassNoRoute;
        };
        let f = unsafe { &mut *f };
        write_eth(f, client_mac, our_mac, ETH_P_IP);
        let ip = ETH_HLEN;
        f[ip] = 0x45;
        f[ip + 1] = ICMP_TOS;
        f[ip + 2..ip + 4].copy_from_slice(&(room as u16).to_be_bytes());
        f[ip + 4..ip + 8].copy_from_slice(&[0, 0, 0, 0]);
        f[ip + 8] = ICMP_TTL;
        f[ip + 9] = PROTO_ICMP;
        f[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
        f[ip + 12..ip + 16].copy_from_slice(&vip[0].to_ne_bytes());
        f[ip + 16..ip + 20].copy_from_slice(&client[0].to_ne_bytes());
        let mut sum = 0u64;
        for i in 0..IPV4_MIN_HLEN / 2 {
            sum += u16::from_ne_bytes([f[ip + i * 2], f[ip + i * 2 + 1]]) as u64;
        }
        f[ip + 10..ip + 12].copy_from_slice(&fold(sum).to_ne_bytes());
        let icmp = ip + IPV4_MIN_HLEN;
        f[icmp] = ICMP_DEST_UNREACH;
        f[icmp + 1] = ICMP_FRAG_NEEDED;
        f[icmp + 2..icmp + 6].copy_from_slice(&[0, 0, 0, 0]);
        f[icmp + 6..icmp + 8].copy_from_slice(&(mtu as u16).to_be_bytes());
        let p = &mut f[icmp..] as *mut [u8] as *mut u32;
        let sum = csum(p, 512, 0) + csum(unsafe { p.add(128) }, (icmp_len - 512) as u32, 0);
        f[icmp + 2..icmp + 4].copy_from_slice(&fold(sum).to_ne_bytes());
    }
    Reason::AnsweredTooBig
}

/// The one's complement sum (unfolded) of `len` bytes at `p` (a multiple of 4, at most 512).
#[inline(always)]
fn csum(p: *mut u32, len: u32, seed: u32) -> u64 {
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p, len, seed) };
    (r as u64) & 0xffff_ffff
}

#[inline(always)]
fn write_eth<const N: usize>(f: &mut [u8; N], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

#[inline(always)]
fn read_mac<const N: usize>(b: &[u8; N], at: usize) -> [u8; 6] {
    [b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]]
}
