//! The XDP data path of an LVS-DR style director.
//!
//! Per packet, a short pipeline of named steps (the shape of Katran's `balancer_kern.c`),
//! behind one step for the common case:
//!
//! 0. [`fast::cached`]: a known flow's packet of the common shape (at most one 802.1Q tag,
//!    IPv4 without options or IPv6 without extension headers, not a fragment, TCP without
//!    SYN/FIN/RST or UDP) served from its flow-cache slot before any of the steps below;
//!    anything else goes through them as if this step had not run.
//! 1. [`parse_ethernet`]: Ethernet with up to two 802.1Q / 802.1ad tags; IPv4 and IPv6 go on.
//! 2. [`parse_ipv4`] or [`ipv6::parse`] (a bounded walk of extension headers), then
//!    [`parse_l4`]: TCP or UDP, every length checked. A later fragment (no ports) goes to its
//!    first fragment's backend ([`frag`]) or passes. An ICMP or ICMPv6 error whose quoted
//!    packet is a reply of a VIP flow goes to that flow's backend ([`icmp`]: steps 3 to 7 for
//!    the quoted flow, read-only on the connection table).
//! 3. [`maybe_vip`] (a bitmap read: a clear bit is no VIP), inside the IP parsers before the
//!    transport header. Then the per-CPU flow cache ([`cache`]): a fresh slot of the current
//!    generation holding the flow goes straight to steps 4, 6 and 7 with no hash-map call.
//!    Then [`established_first`]: a live connection-table entry whose service still serves
//!    the tuple (`SERVICE_KEYS`) and whose backend is usable goes to steps 4, 6 and 7 too
//!    (and fills the cache slot). Otherwise [`find_service`]: (VIP, port, protocol), then
//!    (VIP, 0, protocol) for all-ports services.
//! 4. [`addressed_to_us`]: the frame's destination MAC must be the interface's own.
//! 5. [`known_flow`] or [`schedule`]: the connection table (established connections), then
//!    the half-open table (SYNs not yet followed by the client's ACK, which promotes them);
//!    else persistence, else the service's scheduler (rr/wrr cursor, mh/sh hash, lc/wlc least
//!    connections). Only a packet that can start a flow (a SYN, any UDP datagram) or a live
//!    entry makes an entry, within the CPU's budget of new entries per second; a TCP non-SYN
//!    without one goes statelessly to its hash's pick (mh, sh) or is dropped.
//! 6. [`rewrite`]: destination MAC := backend, source MAC := ours; the IP packet is untouched.
//! 7. [`count`]: per-CPU counters per service, per backend and per reason.
//!
//! A drop the counters cannot explain (`drop_bad_backend`) is also logged for the daemon
//! ([`rare`]), outside the forwarding paths.
//!
//! Anything that is not for a configured service goes to the kernel untouched (XDP_PASS), so
//! the director's own traffic keeps working; a malformed packet is passed too (the kernel drops
//! it), never rewritten. Only a service with no usable backend drops, and a TCP packet that
//! belongs to no known connection of a service that cannot place it without one.
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add`; the intrinsic compiles to BPF_ATOMIC_FETCH_ADD.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod assoc;
mod bounds;
mod cache;
mod fast;
mod fib;
mod filter;
mod frag;
mod halfopen;
mod icmp;
mod ipv6;
mod persist;
mod rare;
mod service_cache;
mod tunnel;

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    Addr, BACKEND_USABLE, Backend, Budget, CachedFlow, CachedService, Counters,
    FLOW_FILTER_ENTRIES, Flow, FlowKey, Forward, HalfOpen, Iface, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_TCP, PROTO_UDP, Persist, PersistKey, PersistSlot, Pick, Reason, Service, ServiceKey,
    Settings, TcpState, age_ns, hash_addr, hash_flow, limits, serves, tcp_flags, v4_mapped,
    vip_filter_bit,
};

use crate::{
    bounds::{field, mac_at, ptr_at, ptr_at_var, set_field},
    cache::Cache,
    frag::Fragment,
};

#[map]
static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(limits::MAX_SERVICES, 0);
#[map]
static BACKENDS: Array<Backend> = Array::with_max_entries(limits::MAX_BACKENDS, BPF_F_MMAPABLE);
/// Backend ids; each service owns the range `table_offset .. table_offset + table_len`.
#[map]
static TABLE: Array<u32> = Array::with_max_entries(limits::TABLE_ENTRIES, 0);
/// Round-robin cursors, one per service id, shared by all CPUs (atomic add).
#[map]
static CURSORS: Array<u64> = Array::with_max_entries(limits::MAX_SERVICES, 0);
/// Established TCP connections (and their FIN/RST states) and UDP flows.
#[map]
static FLOWS: LruHashMap<FlowKey, Flow> =
    LruHashMap::with_max_entries(limits::FLOWS, BPF_F_NO_COMMON_LRU);
/// Half-open TCP connections: scheduled SYNs whose client has not sent its ACK yet, in
/// buckets of four slots indexed by a hash of the flow (`lb_common::HalfOpen`): inlined
/// array reads and a write instead of an LRU insert.
#[map]
pub(crate) static SYNS: Array<HalfOpen> = Array::with_max_entries(limits::SYNS, 0);
/// The shift of `SYNS`'s bucket index (`lb_common::half_open_shift`), set by the loader.
#[unsafe(no_mangle)]
pub(crate) static SYN_SLOT_SHIFT: u32 = 16;
/// The membership bitmaps of `FLOWS` and the index of the active one (`lb_common::filter`):
/// mapped into the control plane's memory, which sets bits with atomic ORs.
#[map]
static FLOW_FILTER: Array<u64> = Array::with_max_entries(FLOW_FILTER_ENTRIES, BPF_F_MMAPABLE);
#[map]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
/// Each CPU's window of the new-entry budget.
#[map]
static BUDGET: PerCpuArray<Budget> = PerCpuArray::with_max_entries(1, 0);
/// A bitmap of the VIPs' [`vip_filter_bit`]s: a destination whose bit is clear is no VIP,
/// decided with an inlined array read instead of the `SERVICES` hash lookups.
#[map]
static VIP_FILTER: Array<u64> = Array::with_max_entries(limits::VIP_FILTER_WORDS, 0);
/// Each service id's `SERVICES` key (all zero: no service): proves that a connection-table
/// entry's service still serves the packet's tuple, without a hash-map call.
#[map]
static SERVICE_KEYS: Array<ServiceKey> = Array::with_max_entries(limits::MAX_SERVICES, 0);
/// The interfaces the program is attached to, by ifindex (an array: its lookup is inlined).
#[map]
static IFACES: Array<Iface> = Array::with_max_entries(limits::IFINDEX_SLOTS, 0);
/// Each CPU's flow cache: a direct-mapped array in front of `FLOWS` ([`cache`]).
#[map]
static FLOW_CACHE: PerCpuArray<CachedFlow> =
    PerCpuArray::with_max_entries(limits::FLOW_CACHE_SLOTS, 0);
/// Per-CPU direct-mapped cache of `SERVICES` (`service_cache`), checked against `GENERATION`.
#[map]
static SERVICE_CACHE: PerCpuArray<CachedService> =
    PerCpuArray::with_max_entries(limits::SERVICE_CACHE_SLOTS, 0);
/// The generation of the maps a cached flow was decided from; user space bumps it after
/// every write that can change where a flow goes.
#[map]
static GENERATION: Array<u32> = Array::with_max_entries(1, 0);
/// `bpf_jiffies64` ticks a flow-cache slot serves after it is filled (one second), set by the
/// loader from the kernel's tick; 0 (not set) leaves the cache unused.
#[unsafe(no_mangle)]
static REFRESH_TICKS: u64 = 0;
#[map]
static SERVICE_STATS: PerCpuArray<Counters> =
    PerCpuArray::with_max_entries(limits::MAX_SERVICES, 0);
#[map]
static BACKEND_STATS: PerCpuArray<Counters> =
    PerCpuArray::with_max_entries(limits::MAX_BACKENDS, 0);
#[map]
static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Reason::COUNT, 0);
/// Active connections (TCP flows in SYN or ESTABLISHED) per backend id: lc/wlc and ActiveConn.
#[map]
static CONNS: Array<u64> = Array::with_max_entries(limits::MAX_BACKENDS, 0);
/// The backend each client network last went to, per service with persistence: buckets of
/// four slots ([`persist`]).
#[map]
static PERSIST: Array<PersistSlot> = Array::with_max_entries(limits::PERSIST, 0);

const NS_PER_S: u64 = 1_000_000_000;
/// LRU lists per CPU: inserting a new flow takes no lock shared by all CPUs (the hash table
/// itself is still shared, so every CPU finds every flow).
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
/// `BACKENDS` can be mapped into the control plane's memory, which reads it whole as a copy.
const BPF_F_MMAPABLE: u32 = 1 << 10;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// IPv4 flags and fragment offset: the offset (in 8-byte units) and more-fragments (MF).
const IP_OFFSET_MASK: u16 = 0x1fff;
const IP_MF: u16 = 0x2000;

/// The director's XDP program. Inlined into the entry point the macro makes: left to LLVM,
/// a body this size became a BPF-to-BPF call, whose return pays the CPU's return-thunk
/// mitigation on every packet (about 10 ns on the development VM).
#[xdp]
#[inline(always)]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    if let Some(action) = fast::cached(&ctx) {
        return action;
    }
    finish(process(&ctx))
}

/// The packet's action, after counting it under its reason.
#[inline(always)]
fn finish(reason: Reason) -> u32 {
    count_reason(reason);
    if reason.is_tx() {
        xdp_action::XDP_TX
    } else if reason.is_drop() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Passes every frame. Attached to the far end of a veth pair whose near end sends with
/// XDP_TX: without an XDP program there, veth drops the frames it receives that way.
#[xdp]
pub fn lb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// What the parsing steps learned about a packet.
struct Packet {
    /// Ports are 0 for a later fragment and for ICMP.
    flow: FlowKey,
    /// IP bytes, what the counters count: the IPv4 total length, or 40 + the IPv6 payload
    /// length.
    ip_len: u32,
    tcp_flags: u8,
    /// The family: a datagram's fragments are remembered for the family's reassembly time.
    /// (Kept as its own field rather than derived from the addresses: branching on the
    /// address words made the verifier track them and explore the rest of the program per
    /// family, past its limit of 1,000,000 instructions.)
    ipv6: bool,
    fragment: Fragment,
    /// The fragment id (IPv4: 16 bits; IPv6: 32 bits), as read.
    frag_id: u32,
    /// The protocol that identifies a fragment's datagram (`FragKey::proto`).
    frag_proto: u8,
    /// Offset of the transport header (or ICMP header) in the frame.
    l4: u32,
}

/// Where a packet goes: a backend of a service, and what the counters say about it.
struct Target {
    service_id: u32,
    backend_id: u32,
    backend: &'static Backend,
    /// 1 if the packet made a connection-table entry.
    new_flows: u64,
    /// The reason a packet that reaches the backend is counted under.
    reason: Reason,
}

#[inline(always)]
fn process(ctx: &XdpContext) -> Reason {
    let (l3, ipv6) = match parse_ethernet(ctx) {
        Ok(l3) => l3,
        Err(reason) => return reason,
    };
    let parsed = if ipv6 {
        ipv6::parse(ctx, l3)
    } else {
        parse_ipv4(ctx, l3)
    };
    let pkt = match parsed {
        Ok(pkt) => pkt,
        Err(reason) => return reason,
    };
    let target = if pkt.fragment == Fragment::Later {
        frag::forward_later(ctx, &pkt)
    } else if pkt.flow.proto == PROTO_ICMP || pkt.flow.proto == PROTO_ICMPV6 {
        // ICMP errors about VIP flows go to the flow's backend; other ICMP to the kernel.
        icmp::error(ctx, l3, &pkt)
    } else {
        place(ctx, &pkt)
    };
    match target {
        Ok(t) => deliver(ctx, &pkt.flow, &t, pkt.ip_len),
        Err(reason) => reason,
    }
}

/// Steps 6 and 7 for a packet of `flow` placed on `t`'s backend; `ip_len` is what the
/// counters count. Returns the reason the packet counts under.
#[inline(always)]
fn deliver(ctx: &XdpContext, flow: &FlowKey, t: &Target, ip_len: u32) -> Reason {
    let delta = Counters {
        packets: 1,
        bytes: ip_len as u64,
        new_flows: t.new_flows,
    };
    match forward(ctx, flow, t.service_id, t.backend_id, t.backend, &delta) {
        Ok(()) => t.reason,
        Err(reason) => reason,
    }
}

/// Steps 3 to 5 for a TCP or UDP packet (a whole datagram or a first fragment): its service,
/// then its backend.
#[inline(always)]
fn place(ctx: &XdpContext, pkt: &Packet) -> Result<Target, Reason> {
    // Most packets belong to a flow this CPU forwarded within the last second.
    let cache = Cache::open(&pkt.flow);
    if let Some(t) = cache.hit(ctx, &pkt.flow, cache::cacheable_state(pkt).is_some())? {
        return Ok(t);
    }
    // Then the connection table: an established connection's entry names its service and
    // backend. A clear bit of its membership bitmap proves there is none (a new flow's SYN).
    // Read before the clock call, so that the CPU can fetch the word while it runs.
    let maybe_known = filter::may_hold(&pkt.flow);
    // Timeouts are in seconds: the coarse clock (a tick's resolution) is enough and cheaper.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let entry = if maybe_known {
        FLOWS.get_ptr_mut(&pkt.flow)
    } else {
        None
    };
    if let Some(t) = established_first(ctx, pkt, entry, now, &cache)? {
        return Ok(t);
    }
    let service = find_service(&pkt.flow).ok_or(Reason::PassNotVip)?;
    addressed_to_us(ctx)?;
    let (backend_id, backend, new_flows, reason) = match known_flow(pkt, entry, now) {
        Known::Hit(id, backend) => (id, backend, 0, Reason::Forwarded),
        Known::Miss { release, live } => {
            // Only a live entry or a packet that can open a flow may make an entry (and count
            // a connection); anything else is placed statelessly or dropped (sloppy_tcp off).
            if !live && !opens_flow(pkt) {
                let (id, backend) = place_without_entry(ctx, &pkt.flow, service, now)?;
                (id, backend, 0, Reason::ForwardedStateless)
            } else if !live && !within_budget(now) {
                // The CPU's budget of new entries is spent: mh/sh place the packet by its
                // hash, as its later packets will be; the others cannot, and drop it.
                let (id, backend) =
                    place_without_entry(ctx, &pkt.flow, service, now).map_err(over_budget)?;
                (id, backend, 0, Reason::ForwardedOverBudget)
            } else {
                if let Some(old) = release {
                    count_conn(old, 1u64.wrapping_neg());
                }
                let (id, backend) = schedule(ctx, pkt, service, now)?;
                (id, backend, 1, Reason::Forwarded)
            }
        }
    };
    if pkt.fragment == Fragment::First {
        frag::remember(pkt, backend_id, service.id, now);
    }
    Ok(Target {
        service_id: service.id,
        backend_id,
        backend,
        new_flows,
        reason,
    })
}

/// Step 5a before steps 3 and 4 (after a miss of the flow cache): a live entry of `FLOWS`
/// (not a closed tuple reused by a new SYN) whose service still serves this tuple
/// (`SERVICE_KEYS`: ids are reused) and whose backend is still usable needs no `SERVICES`
/// lookup. Anything else (`None`) goes the whole
/// way, [`find_service`] then [`known_flow`], with the same entry.
#[inline(always)]
fn established_first(
    ctx: &XdpContext,
    pkt: &Packet,
    entry: Option<*mut Flow>,
    now: u64,
    cache: &Cache,
) -> Result<Option<Target>, Reason> {
    let Some(flow) = entry else {
        return Ok(None);
    };
    let flow = unsafe { &mut *flow };
    let proto = pkt.flow.proto;
    let signalled = TcpState::signalled(proto, pkt.tcp_flags);
    let reused = signalled == TcpState::Syn && flow.state() >= TcpState::Fin;
    if reused || !flow.is_live(proto, now) {
        return Ok(None);
    }
    let service_id = flow.service_id;
    match SERVICE_KEYS.get(service_id) {
        Some(key) if serves(key, &pkt.flow) => {}
        _ => return Ok(None),
    }
    if usable_backend_of(flow.backend, service_id).is_none() {
        return Ok(None);
    }
    addressed_to_us(ctx)?;
    let Known::Hit(backend_id, backend) = established(flow, proto, signalled, now) else {
        return Ok(None);
    };
    if pkt.fragment == Fragment::First {
        frag::remember(pkt, backend_id, service_id, now);
    }
    let target = Target {
        service_id,
        backend_id,
        backend,
        new_flows: 0,
        reason: Reason::Forwarded,
    };
    cache.fill(pkt, flow.state(), &target);
    Ok(Some(target))
}

/// Steps 6 and 7 for a packet sent to a backend: the MACs (or the tunnel), then the counters.
/// A packet that does not go out to the backend (a tunnel backend without a route, or too big
/// for it) counts only under its reason.
#[inline(always)]
fn forward(
    ctx: &XdpContext,
    flow: &FlowKey,
    service_id: u32,
    backend_id: u32,
    backend: &Backend,
    delta: &Counters,
) -> Result<(), Reason> {
    rewrite(ctx, flow, backend)?;
    count(&SERVICE_STATS, service_id, delta);
    count(&BACKEND_STATS, backend_id, delta);
    Ok(())
}

/// The 16-byte address at `at` of a header in the frame, as `FlowKey` stores it (four word
/// loads, [`field`]).
#[inline(always)]
fn addr_at<const N: usize>(b: &[u8; N], at: usize) -> Addr {
    [
        field(b, at),
        field(b, at + 4),
        field(b, at + 8),
        field(b, at + 12),
    ]
}

/// Step 1: the offset of the IP header, skipping up to two VLAN tags, and whether it is IPv6.
#[inline(always)]
fn parse_ethernet(ctx: &XdpContext) -> Result<(usize, bool), Reason> {
    let mut proto: u16 = unsafe { *ptr_at::<u16>(ctx, 12).ok_or(Reason::PassMalformed)? };
    let mut offset = ETH_HLEN;
    // Two rounds, unrolled: an outer 802.1ad (or 802.1Q) tag and an inner 802.1Q tag.
    if proto == ETH_P_8021AD.to_be() || proto == ETH_P_8021Q.to_be() {
        proto = unsafe { *ptr_at::<u16>(ctx, offset + 2).ok_or(Reason::PassMalformed)? };
        offset += VLAN_HLEN;
        if proto == ETH_P_8021Q.to_be() || proto == ETH_P_8021AD.to_be() {
            proto = unsafe { *ptr_at::<u16>(ctx, offset + 2).ok_or(Reason::PassMalformed)? };
            offset += VLAN_HLEN;
        }
    }
    if proto == ETH_P_IP.to_be() {
        Ok((offset, false))
    } else if proto == ETH_P_IPV6.to_be() {
        Ok((offset, true))
    } else {
        Err(Reason::PassNotIp)
    }
}

/// Step 2: the IPv4 header (any IHL), then the transport ports.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3: usize) -> Result<Packet, Reason> {
    let ip: *const [u8; IPV4_MIN_HLEN] = ptr_at(ctx, l3).ok_or(Reason::PassMalformed)?;
    let ip = unsafe { &*ip };
    let version = ip[0] >> 4;
    let hlen = ((ip[0] & 0x0f) as usize) * 4;
    let total_len = u16::from_be(field(ip, 2));
    if version != 4 || hlen < IPV4_MIN_HLEN || (total_len as usize) < hlen {
        return Err(Reason::PassMalformed);
    }
    // The IP packet must fit in the frame (trailing Ethernet padding is allowed).
    if ctx.data() + l3 + total_len as usize > ctx.data_end() {
        return Err(Reason::PassMalformed);
    }
    let dst: u32 = field(ip, 16);
    // Step 3a before the rest: traffic to no VIP goes to the kernel with nothing more read.
    if !maybe_vip(&v4_mapped(dst)) {
        return Err(Reason::PassNotVip);
    }
    let frag = u16::from_be(field(ip, 6));
    let fragment = if frag & IP_OFFSET_MASK != 0 {
        Fragment::Later
    } else if frag & IP_MF != 0 {
        Fragment::First
    } else {
        Fragment::None
    };
    let proto = ip[9];
    let src: u32 = field(ip, 12);
    let mut pkt = Packet {
        flow: FlowKey {
            src: v4_mapped(src),
            dst: v4_mapped(dst),
            sport: 0,
            dport: 0,
            proto,
            _pad: [0; 3],
        },
        ip_len: total_len as u32,
        tcp_flags: 0,
        ipv6: false,
        fragment,
        frag_id: field::<u16, IPV4_MIN_HLEN>(ip, 4) as u32,
        frag_proto: proto,
        l4: (l3 + hlen) as u32,
    };
    // A later fragment has no transport header: only its datagram's key matters.
    if fragment != Fragment::Later {
        let (ports, tcp_flags) = parse_l4(ctx, l3 + hlen, total_len as usize - hlen, proto)?;
        pkt.flow.sport = ports[0];
        pkt.flow.dport = ports[1];
        pkt.tcp_flags = tcp_flags;
    }
    Ok(pkt)
}

/// The transport header at `l4`, with `room` bytes of the IP packet left for it: TCP or UDP
/// ports and TCP flags. ICMP and ICMPv6 have no ports (`process` handles them); any other
/// protocol passes.
#[inline(always)]
fn parse_l4(ctx: &XdpContext, l4: usize, room: usize, proto: u8) -> Result<([u16; 2], u8), Reason> {
    let l4_len = match proto {
        PROTO_TCP => TCP_MIN_HLEN,
        PROTO_UDP => UDP_HLEN,
        PROTO_ICMP | PROTO_ICMPV6 => return Ok(([0, 0], 0)),
        _ => return Err(Reason::PassNotTcpUdp),
    };
    if l4_len > room {
        return Err(Reason::PassMalformed);
    }
    parse_ports(ctx, l4, proto)
}

/// The source and destination ports (network byte order) and, for TCP, the flags byte.
#[inline(always)]
fn parse_ports(ctx: &XdpContext, l4: usize, proto: u8) -> Result<([u16; 2], u8), Reason> {
    if proto == PROTO_TCP {
        let tcp: *const [u8; TCP_MIN_HLEN] = ptr_at_var(ctx, l4).ok_or(Reason::PassMalformed)?;
        let tcp = unsafe { &*tcp };
        if tcp[12] >> 4 < 5 {
            return Err(Reason::PassMalformed);
        }
        Ok((field(tcp, 0), tcp[13]))
    } else {
        let udp: *const [u8; UDP_HLEN] = ptr_at_var(ctx, l4).ok_or(Reason::PassMalformed)?;
        let udp = unsafe { &*udp };
        Ok((field(udp, 0), 0))
    }
}

/// Step 3a (run by the IP parsers, before the transport header): false when the destination
/// is certainly no VIP (its bit of `VIP_FILTER` is clear); true sends the packet on to the
/// exact lookup.
#[inline(always)]
fn maybe_vip(dst: &Addr) -> bool {
    let bit = vip_filter_bit(dst);
    match VIP_FILTER.get(bit >> 6) {
        Some(word) => word & (1u64 << (bit & 63)) != 0,
        None => true,
    }
}

/// Step 3: the service for this destination; a port-0 entry serves every port of its VIP.
/// This CPU's service cache answers first ([`service_cache`]).
#[inline(always)]
fn find_service(flow: &FlowKey) -> Option<&'static Service> {
    service_cache::find(flow)
}

/// Step 4: only frames sent to this interface's own MAC are ours. XDP sees frames before the
/// kernel's MAC filter (flooding, promiscuous mode), and a second director must not forward a
/// copy of traffic meant for the first.
#[inline(always)]
fn addressed_to_us(ctx: &XdpContext) -> Result<(), Reason> {
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let iface = IFACES
        .get(ifindex)
        .filter(|i| i.registered != 0)
        .ok_or(Reason::PassUnknownIface)?;
    let dst: *const [u8; 6] = ptr_at(ctx, 0).ok_or(Reason::PassMalformed)?;
    if mac_at(unsafe { &*dst }, 0) != mac_at(&iface.mac, 0) {
        return Err(Reason::PassOtherMac);
    }
    Ok(())
}

/// Adds `delta` (1 or -1 as u64) to a backend's active-connection count.
#[inline(always)]
fn count_conn(backend: u32, delta: u64) {
    if let Some(c) = CONNS.get_ptr_mut(backend) {
        // The result is not used: a plain atomic add.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(c, delta) };
    }
}

/// What the connection tables say about a packet.
enum Known {
    /// A live flow whose backend is still usable.
    Hit(u32, &'static Backend),
    /// Schedule. `release` names the backend of an active flow whose entry the new one
    /// replaces (its backend gone or down). `live`: a live entry whose backend is gone, down or
    /// re-owned, which proves a real connection: it is rescheduled whatever the packet.
    Miss { release: Option<u32>, live: bool },
}

/// The miss of a packet with no live entry in either table.
const UNKNOWN: Known = Known::Miss {
    release: None,
    live: false,
};

/// Step 5a: a flow seen before keeps its backend for as long as that backend is usable and
/// the flow has not expired (IPVS's timeouts, per TCP state). Established connections and UDP
/// flows are in `FLOWS`; a TCP connection whose client has sent only its SYN is in `SYNS`
/// ([`half_open`], [`halfopen`]).
#[inline(always)]
fn known_flow(pkt: &Packet, entry: Option<*mut Flow>, now: u64) -> Known {
    let proto = pkt.flow.proto;
    let signalled = TcpState::signalled(proto, pkt.tcp_flags);
    if let Some(flow) = entry {
        let flow = unsafe { &mut *flow };
        let state = flow.state();
        // A SYN on the tuple of a closed connection starts a new one.
        let reused = signalled == TcpState::Syn && state >= TcpState::Fin;
        if flow.is_live(proto, now) && !reused {
            return established(flow, proto, signalled, now);
        }
        // Expired or closed: the entry goes (its connection with it), so that the new
        // connection's ACK finds the half-open entry its SYN makes.
        let (backend, active) = (flow.backend, state.is_active(proto));
        forget(&FLOWS, &pkt.flow, backend, active);
    }
    if proto != PROTO_TCP {
        return UNKNOWN;
    }
    half_open(pkt, signalled, now)
}

/// A live entry of `FLOWS`: its backend, if still usable; its state moves forward.
#[inline(always)]
fn established(flow: &mut Flow, proto: u8, signalled: TcpState, now: u64) -> Known {
    let state = flow.state();
    let was_active = state.is_active(proto);
    let Some(backend) = usable_backend_of(flow.backend, flow.service_id) else {
        return Known::Miss {
            release: was_active.then_some(flow.backend),
            live: true,
        };
    };
    flow.last_seen_ns = now;
    // States only move forward: SYN, ESTABLISHED, FIN, RST.
    if signalled > state {
        flow.state = signalled as u8;
        if was_active && !signalled.is_active(proto) {
            count_conn(flow.backend, 1u64.wrapping_neg());
        }
    }
    Known::Hit(flow.backend, backend)
}

/// A TCP packet with no live entry in `FLOWS`, looked up among the half-open connections. A
/// retransmitted SYN keeps its backend; the client's next packet (its ACK, or a FIN or RST)
/// proves the connection real and moves the entry to `FLOWS`. A flood of spoofed SYNs fills
/// and evicts only this table, never an established connection.
#[inline(always)]
fn half_open(pkt: &Packet, signalled: TcpState, now: u64) -> Known {
    let Some(syn) = halfopen::entry(&pkt.flow) else {
        return UNKNOWN;
    };
    let (id, service_id) = (syn.backend, syn.service_id);
    if !syn.is_live(PROTO_TCP, now) {
        // Emptied, its connection given back.
        syn.state = TcpState::None as u8;
        count_conn(id, 1u64.wrapping_neg());
        return UNKNOWN;
    }
    let Some(backend) = usable_backend_of(id, service_id) else {
        return Known::Miss {
            release: Some(id),
            live: true,
        };
    };
    if signalled == TcpState::Syn {
        syn.last_seen_ns = now;
        return Known::Hit(id, backend);
    }
    let flow = flow_entry(now, id, service_id, signalled);
    // A failed insert leaves the half-open entry, which the next packet tries again.
    if FLOWS.insert(&pkt.flow, &flow, 0).is_ok() {
        filter::mark(&pkt.flow);
        syn.state = TcpState::None as u8;
        if !signalled.is_active(PROTO_TCP) {
            count_conn(id, 1u64.wrapping_neg());
        }
    }
    Known::Hit(id, backend)
}

/// A connection-table entry. Built from zeroed memory: a literal's 7-byte `_pad` made LLVM
/// call a byte-wise `memset` subprogram on every new flow.
#[inline(always)]
fn flow_entry(now: u64, backend: u32, service_id: u32, state: TcpState) -> Flow {
    let mut f: Flow = unsafe { core::mem::zeroed() };
    f.last_seen_ns = now;
    f.backend = backend;
    f.service_id = service_id;
    f.state = state as u8;
    f
}

/// Removes an expired or closed entry from `table`; the packet that removes it (one only,
/// however many CPUs see it) gives back its active connection.
#[inline(always)]
fn forget(table: &LruHashMap<FlowKey, Flow>, key: &FlowKey, backend: u32, active: bool) {
    if table.remove(key).is_ok() && active {
        count_conn(backend, 1u64.wrapping_neg());
    }
}

/// Takes one new entry from this CPU's budget (`SETTINGS.new_flows_per_cpu` per second):
/// false once it is spent. No budget set (0) costs one array read.
#[inline(always)]
fn within_budget(now: u64) -> bool {
    let limit = match SETTINGS.get(0) {
        Some(s) if s.new_flows_per_cpu != 0 => s.new_flows_per_cpu,
        _ => return true,
    };
    match BUDGET.get_ptr_mut(0) {
        Some(b) => unsafe { (*b).take(limit, now) },
        None => true,
    }
}

/// The reason of a packet over budget that [`place_without_entry`] cannot place.
#[inline(always)]
fn over_budget(reason: Reason) -> Reason {
    if reason == Reason::DropNoFlow {
        Reason::DropOverBudget
    } else {
        reason
    }
}

/// The client address masked with the service's persistence granularity.
#[inline(always)]
fn persist_key(flow: &FlowKey, service: &Service) -> PersistKey {
    let (a, m) = (&flow.src, &service.persist_mask);
    PersistKey {
        client: [a[0] & m[0], a[1] & m[1], a[2] & m[2], a[3] & m[3]],
        service_id: service.id,
    }
}

/// A usable backend of `service` by id.
#[inline(always)]
fn usable_backend(id: u32, service: &Service) -> Option<&'static Backend> {
    usable_backend_of(id, service.id)
}

/// Backend `id`, if it is usable and belongs to service `service_id`.
#[inline(always)]
fn usable_backend_of(id: u32, service_id: u32) -> Option<&'static Backend> {
    let b = BACKENDS.get(id)?;
    (b.flags & BACKEND_USABLE != 0 && b.service_id == service_id).then_some(b)
}

/// A packet that may open a connection-table entry: any UDP datagram, or a TCP SYN without
/// RST (IPVS schedules TCP only on `syn && !rst` unless `sloppy_tcp` is on).
#[inline(always)]
fn opens_flow(pkt: &Packet) -> bool {
    pkt.flow.proto != PROTO_TCP
        || pkt.tcp_flags & (tcp_flags::SYN | tcp_flags::RST) == tcp_flags::SYN
}

/// Step 5b: a new flow (or a live one whose backend is gone) gets the backend its client
/// network had within the persistence timeout, or else the one the service's scheduler picks
/// from its table.
#[inline(always)]
fn schedule(
    ctx: &XdpContext,
    pkt: &Packet,
    service: &Service,
    now: u64,
) -> Result<(u32, &'static Backend), Reason> {
    if service.table_len == 0 {
        return Err(Reason::DropNoBackend);
    }
    let persist = service.persist_timeout_s != 0;
    let key = persist_key(&pkt.flow, service);
    let sticky = if persist {
        remembered(&key, service, now, true)
    } else {
        None
    };
    let (id, backend) = match sticky {
        Some(hit) => hit,
        None => {
            let (id, backend) = pick_backend(ctx, pkt, service)?;
            if persist {
                let p = Persist {
                    last_seen_ns: now,
                    backend: id,
                    _pad: 0,
                };
                persist::put(&key, &p);
            }
            (id, backend)
        }
    };
    let state = TcpState::signalled(pkt.flow.proto, pkt.tcp_flags);
    let flow = flow_entry(now, id, service.id, state);
    // A SYN's entry is half-open until the client's ACK; anything else (UDP, or a live TCP
    // connection rescheduled off a gone backend) is established. A full table evicts its
    // least recently used entry; a failed insert only costs stickiness.
    let inserted = if state == TcpState::Syn {
        halfopen::open(&pkt.flow, &flow, now);
        true
    } else {
        if pkt.flow.proto == PROTO_TCP {
            // A half-open entry whose backend went away is replaced here.
            halfopen::close(&pkt.flow);
        }
        let inserted = FLOWS.insert(&pkt.flow, &flow, 0).is_ok();
        if inserted {
            filter::mark(&pkt.flow);
        }
        inserted
    };
    if inserted && state.is_active(pkt.flow.proto) {
        count_conn(id, 1);
    }
    Ok((id, backend))
}

/// The backend a client network was sent to within the service's persistence timeout. With
/// `refresh` (a new connection) the entry's time is then renewed in place: an insert into the
/// LRU map would take a new node from its free list and release the old one, on every new
/// connection of a persistent client.
#[inline(always)]
fn remembered(
    key: &PersistKey,
    service: &Service,
    now: u64,
    refresh: bool,
) -> Option<(u32, &'static Backend)> {
    let p = persist::entry(key)?;
    // As for flows: a clock older than the stamp is age 0.
    if age_ns(now, p.last_seen_ns) > service.persist_timeout_s as u64 * NS_PER_S {
        return None;
    }
    let backend = usable_backend(p.backend, service)?;
    if refresh {
        p.last_seen_ns = now;
    }
    Some((p.backend, backend))
}

/// Step 5c: a TCP packet of no known connection (not a SYN, no live entry) makes no entry
/// and counts no connection. `mh` and `sh` send it where a SYN of its tuple would go (after a
/// read-only persistence lookup): every director computes the same, so established flows
/// survive a failover or an ECMP change. The other schedulers cannot place it without state
/// and drop it (`DropNoFlow`), so spoofed packets neither fill the table nor steer lc/wlc.
#[inline(always)]
fn place_without_entry(
    ctx: &XdpContext,
    flow: &FlowKey,
    service: &Service,
    now: u64,
) -> Result<(u32, &'static Backend), Reason> {
    let Some(hash) = table_hash(flow, service) else {
        return Err(Reason::DropNoFlow);
    };
    let len = service.table_len;
    if len == 0 {
        return Err(Reason::DropNoBackend);
    }
    if service.persist_timeout_s != 0
        && let Some(hit) = remembered(&persist_key(flow, service), service, now, false)
    {
        return Ok(hit);
    }
    table_slot(ctx, service, hash % len)
}

/// The hash that indexes the table of an `mh` (5-tuple) or `sh` (client address) service.
#[inline(always)]
fn table_hash(flow: &FlowKey, service: &Service) -> Option<u32> {
    match Pick::from_u8(service.pick) {
        Some(Pick::FlowHash) => Some(hash_flow(flow)),
        Some(Pick::SourceHash) => Some(hash_addr(&flow.src)),
        _ => None,
    }
}

/// The scheduler proper: a slot of the service's table.
#[inline(always)]
fn pick_backend(
    ctx: &XdpContext,
    pkt: &Packet,
    service: &Service,
) -> Result<(u32, &'static Backend), Reason> {
    let len = service.table_len;
    if len == 0 {
        // Checked by the caller; repeated so the compiler sees no division by zero.
        return Err(Reason::DropNoBackend);
    }
    if let Some(hash) = table_hash(&pkt.flow, service) {
        return table_slot(ctx, service, hash % len);
    }
    let n: u32 = match Pick::from_u8(service.pick) {
        Some(Pick::LeastConn | Pick::WeightedLeastConn) => return least_conn(service),
        _ => {
            // rr and wrr walk the table with the service's shared cursor.
            let Some(cursor) = CURSORS.get_ptr_mut(service.id) else {
                rare::no_cursor(ctx, service.id);
                return Err(Reason::DropBadBackend);
            };
            // SeqCst: with Relaxed, this LLVM emits the add without BPF_FETCH.
            let n: u64 = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(cursor, 1) };
            (n % len as u64) as u32
        }
    };
    table_slot(ctx, service, n)
}

/// The usable backend in slot `n` of the service's table.
#[inline(always)]
fn table_slot(
    ctx: &XdpContext,
    service: &Service,
    n: u32,
) -> Result<(u32, &'static Backend), Reason> {
    let slot = service.table_offset.wrapping_add(n);
    let Some(&id) = TABLE.get(slot) else {
        rare::slot_out_of_range(
            ctx,
            service.id,
            slot,
            service.table_offset,
            service.table_len,
        );
        return Err(Reason::DropBadBackend);
    };
    match usable_backend(id, service) {
        Some(backend) => Ok((id, backend)),
        None => {
            rare::bad_backend(ctx, service.id, slot, id);
            Err(Reason::DropBadBackend)
        }
    }
}

/// lc / wlc: the backend with the fewest active connections (per unit of weight for wlc);
/// ties go to the first in the table, as in IPVS.
#[inline(always)]
fn least_conn(service: &Service) -> Result<(u32, &'static Backend), Reason> {
    let weighted = Pick::from_u8(service.pick) == Some(Pick::WeightedLeastConn);
    // The id lives apart from the Option, initialised: an undefined payload would let LLVM
    // spill whatever its register holds (a pointer, say) as a u32, which the verifier refuses.
    let mut best: Option<&'static Backend> = None;
    let mut best_id = 0u32;
    let (mut best_conns, mut best_weight) = (0u64, 1u64);
    for i in 0..limits::LC_MAX_BACKENDS {
        if i >= service.table_len {
            break;
        }
        let Some(&id) = TABLE.get(service.table_offset.wrapping_add(i)) else {
            break;
        };
        let Some(b) = usable_backend(id, service) else {
            continue;
        };
        let conns = CONNS.get(id).copied().unwrap_or(0);
        let weight = if weighted { b.weight as u64 } else { 1 };
        // conns / weight < best_conns / best_weight, without division.
        if best.is_none() || conns * best_weight < best_conns * weight {
            best = Some(b);
            best_id = id;
            best_conns = conns;
            best_weight = weight;
        }
    }
    best.map(|b| (best_id, b)).ok_or(Reason::DropNoBackend)
}

/// Step 6: direct routing changes only the MACs; a tunnel backend gets the packet inside an
/// outer header, to the FIB's next hop ([`tunnel`]).
#[inline(always)]
fn rewrite(ctx: &XdpContext, flow: &FlowKey, backend: &Backend) -> Result<(), Reason> {
    if backend.forward != Forward::Route as u8 {
        return tunnel::send(ctx, backend, hash_flow(flow));
    }
    if let Some(eth) = ptr_at::<[u8; 12]>(ctx, 0) {
        let eth = unsafe { &mut *eth };
        // Source := the address the frame was sent to, which step 4 proved is ours.
        let ours = mac_at(eth, 0);
        let (word, half) = mac_at(&backend.mac, 0);
        set_field(eth, 6, ours.0);
        set_field(eth, 10, ours.1);
        set_field(eth, 0, word);
        set_field(eth, 4, half);
    }
    Ok(())
}

/// Step 7: per-CPU counters, summed by user space.
#[inline(always)]
fn count(map: &PerCpuArray<Counters>, index: u32, delta: &Counters) {
    if let Some(c) = map.get_ptr_mut(index) {
        let c = unsafe { &mut *c };
        c.packets += delta.packets;
        c.bytes += delta.bytes;
        c.new_flows += delta.new_flows;
    }
}

#[inline(always)]
fn count_reason(reason: Reason) {
    if let Some(c) = REASONS.get_ptr_mut(reason as u32) {
        unsafe { *c += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
