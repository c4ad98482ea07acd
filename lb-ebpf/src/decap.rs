//! The real servers' side of tunnel mode: `lb_decap`, an XDP program that a real server
//! attaches to its interface (`lb-ctl decap attach IFACE`) to take off the outer header the
//! director put on, for kernels without the IPIP, IPv6-tunnel or FOU modules.
//!
//! It decapsulates, after Ethernet and up to two VLAN tags:
//! - IP in IPv4: outer IPv4 (any IHL, header checksum verified, not a fragment) with protocol
//!   4 (IPv4 inside) or 41 (IPv6 inside);
//! - IP in IPv6: outer IPv6 whose next header is 4 or 41 directly (no extension headers);
//! - GUE: outer IPv4 or IPv6 + UDP to the configured port (`DECAP_CONFIG`, 0 = off), then
//!   either variant 1 (the inner IP header right after UDP) or variant 0 with a 4-byte header
//!   with C = 0, hlen = 0, flags = 0 and protocol 4 or 41. The UDP checksum is not verified:
//!   the inner packet carries its own.
//!
//! The inner header must be whole, of the family the outer header names, and its length
//! within the outer packet. Then the L2 header is moved forward over the outer headers, its
//! last EtherType set to the inner family, and the frame passed to the stack, which sees the
//! inner packet (to the VIP the server holds on `lo`).
//!
//! ECN, as RFC 6040 "normal mode" decapsulates (and as Linux's tunnel devices do): an outer
//! header marked CE (congestion experienced on the way) marks an ECT(0) or ECT(1) inner
//! packet CE (IPv4: the header checksum updated incrementally; IPv6: the traffic class), and
//! drops a Not-ECT one (`DropCeNotEct`, XDP_DROP: the only packet this program drops). Every
//! other combination leaves the inner packet as it is. With `DECAP_CONFIG.only_listed`, only
//! outer destinations that are keys of `DECAP_DSTS` are decapsulated. Everything else passes
//! untouched, malformed tunnel packets too (the kernel drops what it cannot use). Every
//! packet is counted in `DECAP_STATS` under one `DecapReason`.
#![no_std]
#![no_main]

mod bounds;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_xdp_adjust_head,
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    Addr,
    decap::{DecapConfig, DecapReason, MAX_DSTS},
    v4_mapped,
};

use crate::bounds::{ptr_at, ptr_at_var};

#[map]
static DECAP_CONFIG: Array<DecapConfig> = Array::with_max_entries(1, 0);
#[map]
static DECAP_DSTS: HashMap<Addr, u8> = HashMap::with_max_entries(MAX_DSTS, 0);
#[map]
static DECAP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DecapReason::COUNT, 0);

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const IPV4_HLEN: usize = 20;
const IPV4_MAX_HLEN: usize = 60;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
const GUE_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const PROTO_IPIP: u8 = 4;
const PROTO_IPV6: u8 = 41;
const PROTO_UDP: u8 = 17;
/// ECN codepoints (the low two bits of the IPv4 TOS / IPv6 traffic class).
const ECN_NOT_ECT: u8 = 0;
const ECN_CE: u8 = 3;
/// Fragment offset and "more fragments" of the IPv4 flags/offset field.
const IP_FRAGMENTED: u16 = 0x3fff;
const IP_OFFSET: u16 = 0x1fff;

type Verdict = Result<DecapReason, DecapReason>;

#[xdp]
pub fn lb_decap(ctx: XdpContext) -> u32 {
    let (Ok(reason) | Err(reason)) = decap(&ctx);
    if let Some(n) = DECAP_STATS.get_ptr_mut(reason as u32) {
        unsafe { *n += 1 };
    }
    if reason as u32 == DecapReason::DropCeNotEct as u32 {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// What the outer headers say: how many bytes to take off after the L2 header, the inner
/// family, and where the outer packet (or UDP datagram) ends.
struct Tunnel {
    outer: usize,
    inner_v6: bool,
    end: usize,
    reason: DecapReason,
}

fn decap(ctx: &XdpContext) -> Verdict {
    let (l2, ipv6) = parse_ethernet(ctx)?;
    let config = DECAP_CONFIG.get(0).copied().unwrap_or_default();
    let t = if ipv6 {
        outer_ipv6(ctx, l2, &config)?
    } else {
        outer_ipv4(ctx, l2, &config)?
    };
    let inner_ecn = inner_whole(ctx, l2 + t.outer, t.inner_v6, t.end)?;
    // RFC 6040 4.2: CE outside goes on inside; a Not-ECT packet cannot carry it. `ce` is
    // the bits to set (3 or 0), computed without a branch: the verifier walks what follows
    // once, not once for each.
    let outer = outer_ecn(ctx, l2, ipv6)?;
    let ce = ((outer + 1) >> 2) * ECN_CE;
    if ce != 0 && inner_ecn == ECN_NOT_ECT {
        return Err(DecapReason::DropCeNotEct);
    }
    let ethertype = if t.inner_v6 { ETH_P_IPV6 } else { ETH_P_IP };
    match l2 {
        ETH_HLEN => strip::<ETH_HLEN>(ctx, t.outer, ethertype)?,
        18 => strip::<18>(ctx, t.outer, ethertype)?,
        _ => strip::<22>(ctx, t.outer, ethertype)?,
    }
    set_ecn_bits(ctx, l2, t.inner_v6, ce);
    Ok(t.reason)
}

/// The ECN codepoint of the outer IP header at `l3` (checked whole by then).
#[inline(always)]
fn outer_ecn(ctx: &XdpContext, l3: usize, v6: bool) -> Result<u8, DecapReason> {
    let h: *const [u8; 2] = ptr_at_var(ctx, l3).ok_or(DecapReason::PassMalformed)?;
    let b = unsafe { (*h)[1] };
    Ok(if v6 { (b >> 4) & 3 } else { b & 3 })
}

/// Sets `bits` (CE, or 0: no change) in the ECN field of the inner IP header at `l3` (after
/// the outer headers are off): in the IPv6 traffic class, or in the IPv4 TOS with the header
/// checksum updated as RFC 1624 (eqn. 3) does: HC' = ~(~HC + ~m + m'), m the 16-bit word
/// holding the TOS (with m' = m the checksum stays as it was).
#[inline(always)]
fn set_ecn_bits(ctx: &XdpContext, l3: usize, v6: bool, bits: u8) {
    let Some(ip) = ptr_at_var::<[u8; IPV4_HLEN]>(ctx, l3) else {
        return;
    };
    let ip = unsafe { &mut *ip };
    if v6 {
        ip[1] |= bits << 4;
        return;
    }
    let old = u16::from_be_bytes([ip[0], ip[1]]);
    let new = old | bits as u16;
    let check = u16::from_be_bytes([ip[10], ip[11]]);
    let mut sum = (!check) as u32 + (!old) as u32 + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    ip[1] |= bits;
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// The length of the L2 header (14, 18 or 22 bytes) and whether IPv6 follows; anything but
/// IPv4 and IPv6 is not a tunnel packet.
#[inline(always)]
fn parse_ethernet(ctx: &XdpContext) -> Result<(usize, bool), DecapReason> {
    let not = DecapReason::PassNotTunnel;
    let mut proto = u16::from_be(unsafe { *ptr_at::<u16>(ctx, 12).ok_or(not)? });
    let mut offset = ETH_HLEN;
    if proto == ETH_P_8021AD || proto == ETH_P_8021Q {
        proto = u16::from_be(unsafe { *ptr_at::<u16>(ctx, offset + 2).ok_or(not)? });
        offset += VLAN_HLEN;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = u16::from_be(unsafe { *ptr_at::<u16>(ctx, offset + 2).ok_or(not)? });
            offset += VLAN_HLEN;
        }
    }
    match proto {
        ETH_P_IP => Ok((offset, false)),
        ETH_P_IPV6 => Ok((offset, true)),
        _ => Err(not),
    }
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

fn outer_ipv4(ctx: &XdpContext, l3: usize, config: &DecapConfig) -> Result<Tunnel, DecapReason> {
    let ip: *const [u8; IPV4_HLEN] = ptr_at(ctx, l3).ok_or(DecapReason::PassNotTunnel)?;
    let ip = unsafe { &*ip };
    let proto = ip[9];
    if proto != PROTO_IPIP && proto != PROTO_IPV6 && proto != PROTO_UDP {
        return Err(DecapReason::PassNotTunnel);
    }
    let hlen = ((ip[0] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if ip[0] >> 4 != 4 || hlen < IPV4_HLEN || total < hlen || l3 + total > frame_len(ctx) {
        return Err(DecapReason::PassMalformed);
    }
    let end = l3 + total;
    let dst = v4_mapped(u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]));
    if proto == PROTO_UDP {
        // A later fragment has no UDP header: it cannot be told from any other UDP.
        if frag & IP_OFFSET != 0 {
            return Err(DecapReason::PassNotTunnel);
        }
        gue_port_matches(ctx, l3 + hlen, config)?;
    }
    if frag & IP_FRAGMENTED != 0 {
        return Err(DecapReason::PassFragment);
    }
    if !ipv4_checksum_ok(ctx, l3, hlen) {
        return Err(DecapReason::PassMalformed);
    }
    accepted_destination(&dst, config)?;
    if proto == PROTO_UDP {
        gue(ctx, l3 + hlen, end, hlen)
    } else {
        Ok(Tunnel {
            outer: hlen,
            inner_v6: proto == PROTO_IPV6,
            end,
            reason: DecapReason::Ipip,
        })
    }
}

fn outer_ipv6(ctx: &XdpContext, l3: usize, config: &DecapConfig) -> Result<Tunnel, DecapReason> {
    let ip: *const [u8; IPV6_HLEN] = ptr_at(ctx, l3).ok_or(DecapReason::PassNotTunnel)?;
    let ip = unsafe { &*ip };
    let next = ip[6];
    if next != PROTO_IPIP && next != PROTO_IPV6 && next != PROTO_UDP {
        return Err(DecapReason::PassNotTunnel);
    }
    let payload = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    if ip[0] >> 4 != 6 || l3 + IPV6_HLEN + payload > frame_len(ctx) {
        return Err(DecapReason::PassMalformed);
    }
    let end = l3 + IPV6_HLEN + payload;
    let mut dst: Addr = [0; 4];
    for (i, w) in dst.iter_mut().enumerate() {
        let at = 24 + i * 4;
        *w = u32::from_ne_bytes([ip[at], ip[at + 1], ip[at + 2], ip[at + 3]]);
    }
    if next == PROTO_UDP {
        gue_port_matches(ctx, l3 + IPV6_HLEN, config)?;
    }
    accepted_destination(&dst, config)?;
    if next == PROTO_UDP {
        gue(ctx, l3 + IPV6_HLEN, end, IPV6_HLEN)
    } else {
        Ok(Tunnel {
            outer: IPV6_HLEN,
            inner_v6: next == PROTO_IPV6,
            end,
            reason: DecapReason::Ip6,
        })
    }
}

/// UDP to the GUE port (when one is configured), else not a tunnel packet.
#[inline(always)]
fn gue_port_matches(ctx: &XdpContext, udp: usize, config: &DecapConfig) -> Result<(), DecapReason> {
    let h: *const [u8; UDP_HLEN] = ptr_at_var(ctx, udp).ok_or(DecapReason::PassNotTunnel)?;
    let dport = u16::from_ne_bytes(unsafe { [(*h)[2], (*h)[3]] });
    if config.gue_port == 0 || dport != config.gue_port {
        return Err(DecapReason::PassNotTunnel);
    }
    Ok(())
}

/// The UDP length and the GUE header (variant 1, or variant 0 without options).
#[inline(always)]
fn gue(ctx: &XdpContext, udp: usize, ip_end: usize, ip_hlen: usize) -> Result<Tunnel, DecapReason> {
    let bad = DecapReason::PassMalformed;
    let h: *const [u8; UDP_HLEN + GUE_HLEN] = ptr_at_var(ctx, udp).ok_or(bad)?;
    let h = unsafe { &*h };
    let udp_len = u16::from_be_bytes([h[4], h[5]]) as usize;
    if udp_len < UDP_HLEN + GUE_HLEN || udp + udp_len > ip_end {
        return Err(bad);
    }
    let first = h[UDP_HLEN];
    let (gue_len, inner_v6) = match first >> 6 {
        // Variant 1: the inner IP header's own version nibble.
        1 => match first >> 4 {
            4 => (0, false),
            6 => (0, true),
            _ => return Err(bad),
        },
        // Variant 0: C = 0 (data), hlen = 0 (no extension fields), no flags.
        0 if first == 0 && h[UDP_HLEN + 2] == 0 && h[UDP_HLEN + 3] == 0 => match h[UDP_HLEN + 1] {
            PROTO_IPIP => (GUE_HLEN, false),
            PROTO_IPV6 => (GUE_HLEN, true),
            _ => return Err(bad),
        },
        _ => return Err(bad),
    };
    Ok(Tunnel {
        outer: ip_hlen + UDP_HLEN + gue_len,
        inner_v6,
        end: udp + udp_len,
        reason: DecapReason::Gue,
    })
}

/// The one's-complement sum of the IPv4 header is all ones.
#[inline(always)]
fn ipv4_checksum_ok(ctx: &XdpContext, l3: usize, hlen: usize) -> bool {
    let mut sum: u32 = 0;
    let mut at = 0;
    while at < IPV4_MAX_HLEN {
        if at >= hlen {
            break;
        }
        let Some(w) = ptr_at_var::<[u8; 2]>(ctx, l3 + at) else {
            return false;
        };
        sum += u16::from_ne_bytes(unsafe { *w }) as u32;
        at += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum == 0xffff
}

#[inline(always)]
fn accepted_destination(dst: &Addr, config: &DecapConfig) -> Result<(), DecapReason> {
    if config.only_listed != 0 && unsafe { DECAP_DSTS.get(dst) }.is_none() {
        return Err(DecapReason::PassOtherDst);
    }
    Ok(())
}

/// The inner IP header is whole, of the family the outer header named, and its packet ends
/// within the outer packet; its ECN codepoint.
#[inline(always)]
fn inner_whole(ctx: &XdpContext, at: usize, v6: bool, end: usize) -> Result<u8, DecapReason> {
    let bad = DecapReason::PassMalformed;
    if v6 {
        let ip: *const [u8; IPV6_HLEN] = ptr_at_var(ctx, at).ok_or(bad)?;
        let ip = unsafe { &*ip };
        let len = IPV6_HLEN + u16::from_be_bytes([ip[4], ip[5]]) as usize;
        if ip[0] >> 4 != 6 || at + len > end {
            return Err(bad);
        }
        Ok((ip[1] >> 4) & 3)
    } else {
        let ip: *const [u8; IPV4_HLEN] = ptr_at_var(ctx, at).ok_or(bad)?;
        let ip = unsafe { &*ip };
        let hlen = ((ip[0] & 0x0f) as usize) * 4;
        let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        if ip[0] >> 4 != 4 || hlen < IPV4_HLEN || total < hlen || at + total > end {
            return Err(bad);
        }
        Ok(ip[1] & 3)
    }
}

/// Takes `outer` bytes off after the `N`-byte L2 header: the header moves forward over them,
/// with its last EtherType set to `ethertype`.
#[inline(always)]
fn strip<const N: usize>(
    ctx: &XdpContext,
    outer: usize,
    ethertype: u16,
) -> Result<(), DecapReason> {
    let bad = DecapReason::PassMalformed;
    let l2: *const [u8; N] = ptr_at(ctx, 0).ok_or(bad)?;
    let mut l2 = unsafe { *l2 };
    l2[N - 2..].copy_from_slice(&ethertype.to_be_bytes());
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer as i32) } != 0 {
        return Err(bad);
    }
    // The inner header was checked to follow, so this always fits.
    let to: *mut [u8; N] = ptr_at(ctx, 0).ok_or(bad)?;
    unsafe { *to = l2 };
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
