//! Step 2 for IPv6: the fixed header, a bounded walk of the extension headers, the ports.
//!
//! The walk follows hop-by-hop options (only first, as RFC 8200 requires), routing,
//! destination options and fragment headers, at most [`MAX_EXT_HEADERS`] of them, unrolled.
//! Each header must lie within the payload length, which must lie within the frame. The
//! result is the same [`Packet`] IPv4 gives (a 16-byte address flow key), so every later step
//! serves both families unchanged.

use aya_ebpf::programs::XdpContext;
use lb_common::{FlowKey, Reason};

use crate::{Fragment, IPV6_HLEN, Packet, addr_at, bounds::field, parse_l4, ptr_at, ptr_at_var};

/// Extension headers the walk reads; a longer chain passes (`pass_header_chain`).
const MAX_EXT_HEADERS: usize = 4;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
const FRAG_HLEN: usize = 8;
/// The fragment header's offset field (13 bits, in 8-byte units, shifted left by 3).
const FRAG_OFFSET_MASK: u16 = 0xfff8;
const FRAG_MORE: u16 = 0x0001;

/// Where the walk is: the next header's type and offset, and the fragment header if one was
/// read.
struct Walk {
    next: u8,
    off: usize,
    fragment: Fragment,
    frag_id: u32,
    frag_proto: u8,
}

/// Step 2 (IPv6): the header at `l3`, its extension headers, then the transport ports.
#[inline(always)]
pub fn parse(ctx: &XdpContext, l3: usize) -> Result<Packet, Reason> {
    let ip: *const [u8; IPV6_HLEN] = ptr_at(ctx, l3).ok_or(Reason::PassMalformed)?;
    let ip = unsafe { &*ip };
    if ip[0] >> 4 != 6 {
        return Err(Reason::PassMalformed);
    }
    let payload_len = u16::from_be(field(ip, 4)) as usize;
    // The payload must fit in the frame (trailing Ethernet padding is allowed).
    let end = l3 + IPV6_HLEN + payload_len;
    if ctx.data() + end > ctx.data_end() {
        return Err(Reason::PassMalformed);
    }
    let mut walk = Walk {
        next: ip[6],
        off: l3 + IPV6_HLEN,
        fragment: Fragment::None,
        frag_id: 0,
        frag_proto: 0,
    };
    for i in 0..MAX_EXT_HEADERS {
        if walk.fragment == Fragment::Later || !extension(ctx, &mut walk, i == 0)? {
            break;
        }
    }
    if walk.off > end {
        return Err(Reason::PassMalformed);
    }
    // Step 3a before the transport header: traffic to no VIP goes to the kernel. (Before the
    // extension headers' walk, it made LLVM keep the packet pointer in a form the verifier
    // refuses.)
    if !crate::maybe_vip(&addr_at(ip, 24)) {
        return Err(Reason::PassNotVip);
    }
    let flow = |proto, ports: [u16; 2]| FlowKey {
        src: addr_at(ip, 8),
        dst: addr_at(ip, 24),
        sport: ports[0],
        dport: ports[1],
        proto,
        _pad: [0; 3],
    };
    let mut pkt = Packet {
        flow: flow(walk.next, [0, 0]),
        ip_len: (IPV6_HLEN + payload_len) as u32,
        tcp_flags: 0,
        ipv6: true,
        fragment: walk.fragment,
        frag_id: walk.frag_id,
        frag_proto: walk.frag_proto,
        l4: walk.off as u32,
    };
    // A later fragment has no transport header: only its datagram's key matters.
    if walk.fragment == Fragment::Later {
        return Ok(pkt);
    }
    if is_extension(walk.next) {
        return Err(Reason::PassHeaderChain);
    }
    let (ports, tcp_flags) = parse_l4(ctx, walk.off, end - walk.off, walk.next)?;
    pkt.flow = flow(walk.next, ports);
    pkt.tcp_flags = tcp_flags;
    Ok(pkt)
}

/// An extension header the walk follows (hop-by-hop, routing, destination options,
/// fragment).
#[inline(always)]
pub fn is_extension(next: u8) -> bool {
    matches!(
        next,
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_FRAGMENT
    )
}

/// Reads the extension header at the walk's offset, if the next header is one: `Ok(false)`
/// when it is not (the walk has reached the upper layer).
#[inline(always)]
fn extension(ctx: &XdpContext, walk: &mut Walk, first: bool) -> Result<bool, Reason> {
    match walk.next {
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
            // Hop-by-hop options may only follow the fixed header.
            if walk.next == NEXTHDR_HOP && !first {
                return Err(Reason::PassMalformed);
            }
            let h: *const [u8; 2] = ptr_at_var(ctx, walk.off).ok_or(Reason::PassMalformed)?;
            let h = unsafe { &*h };
            walk.next = h[0];
            walk.off += (h[1] as usize + 1) * 8;
            Ok(true)
        }
        NEXTHDR_FRAGMENT => {
            let h: *const [u8; FRAG_HLEN] =
                ptr_at_var(ctx, walk.off).ok_or(Reason::PassMalformed)?;
            let h = unsafe { &*h };
            let field = u16::from_be_bytes([h[2], h[3]]);
            // Offset 0 without more fragments is an atomic fragment (RFC 6946): a whole
            // datagram, parsed on.
            walk.fragment = if field & FRAG_OFFSET_MASK != 0 {
                Fragment::Later
            } else if field & FRAG_MORE != 0 {
                Fragment::First
            } else {
                Fragment::None
            };
            walk.frag_id = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
            walk.frag_proto = h[0];
            walk.next = h[0];
            walk.off += FRAG_HLEN;
            Ok(true)
        }
        _ => Ok(false),
    }
}
