//! Everything the XDP data path (`lb-ebpf`) and the control plane (`lb-ctl`) share: map names,
//! map keys and values, and the constants both sides must agree on.
//!
//! Every type is `#[repr(C)]` with explicit padding fields, so its layout is the same on the
//! BPF target and on the host, and the kernel never sees uninitialised bytes in a map key. The
//! `const` assertions at the bottom pin each size: a change here that one side does not expect
//! fails to compile on both.
//!
//! Addresses are stored as 16 bytes in network byte order; an IPv4 address is IPv4-mapped
//! (`::ffff:a.b.c.d`), so IPv4 and IPv6 share every map. Ports are in network byte order.
#![no_std]

pub mod assoc;
mod cache;
pub mod decap;
mod filter;
mod flow;
mod forward;
mod frag;
mod halfopen;
mod persist;
mod pick;
mod service_cache;

pub use cache::{CachedFlow, cache_slot, refresh_ticks};
pub use filter::{
    FLOW_FILTER_BITS, FLOW_FILTER_ENTRIES, FLOW_FILTER_SIDE, FLOW_FILTER_WORDS, flow_filter_hash,
    flow_filter_word,
};
pub use flow::{Flow, TcpState, age_ns, tcp_flags, timeouts};
pub use forward::Forward;
pub use frag::{Frag, FragKey, frag_timeouts};
pub use halfopen::{HALF_OPEN_WAYS, HalfOpen, half_open_bucket, half_open_shift};
pub use persist::{PersistSlot, persist_bucket};
pub use pick::{Pick, Sched};
pub use service_cache::{CachedService, service_cache_slot, service_key};

/// Names of the maps and programs, as the ELF object declares them and as they are pinned.
pub mod names {
    pub const PROGRAM: &str = "lb_xdp";
    pub const PASS_PROGRAM: &str = "lb_pass";
    pub const SERVICES: &str = "SERVICES";
    pub const BACKENDS: &str = "BACKENDS";
    pub const TABLE: &str = "TABLE";
    pub const CURSORS: &str = "CURSORS";
    pub const FLOWS: &str = "FLOWS";
    pub const IFACES: &str = "IFACES";
    pub const SERVICE_STATS: &str = "SERVICE_STATS";
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    pub const REASONS: &str = "REASONS";
    pub const CONNS: &str = "CONNS";
    pub const PERSIST: &str = "PERSIST";
    pub const FRAGS: &str = "FRAGS";
    pub const SYNS: &str = "SYNS";
    pub const SETTINGS: &str = "SETTINGS";
    pub const BUDGET: &str = "BUDGET";
    pub const VIP_FILTER: &str = "VIP_FILTER";
    pub const SERVICE_KEYS: &str = "SERVICE_KEYS";
    pub const FLOW_CACHE: &str = "FLOW_CACHE";
    pub const GENERATION: &str = "GENERATION";
    pub const FLOW_FILTER: &str = "FLOW_FILTER";
    pub const SERVICE_CACHE: &str = "SERVICE_CACHE";
    /// The loader sets it: `bpf_jiffies64` ticks a flow-cache slot serves ([`refresh_ticks`]).
    ///
    /// [`refresh_ticks`]: crate::refresh_ticks
    pub const REFRESH_TICKS: &str = "REFRESH_TICKS";
    /// The loader sets it: the shift of the half-open table's bucket index
    /// ([`half_open_shift`]).
    ///
    /// [`half_open_shift`]: crate::half_open_shift
    pub const SYN_SLOT_SHIFT: &str = "SYN_SLOT_SHIFT";

    /// Every map of the program, in the order they are pinned.
    pub const MAPS: [&str; 21] = [
        SERVICES,
        BACKENDS,
        TABLE,
        CURSORS,
        FLOWS,
        IFACES,
        SERVICE_STATS,
        BACKEND_STATS,
        REASONS,
        CONNS,
        PERSIST,
        FRAGS,
        SYNS,
        SETTINGS,
        BUDGET,
        VIP_FILTER,
        SERVICE_KEYS,
        FLOW_CACHE,
        GENERATION,
        FLOW_FILTER,
        SERVICE_CACHE,
    ];
}

/// Default map sizes. The ones marked "load-time" can be changed when the program is loaded.
pub mod limits {
    /// Services (VIP, port, protocol), and so service ids `0..MAX_SERVICES`.
    pub const MAX_SERVICES: u32 = 4096;
    /// Backend slots, and so backend ids `0..MAX_BACKENDS`, shared by all services.
    pub const MAX_BACKENDS: u32 = 65536;
    /// Entries of the lookup table that holds every service's backend sequence (load-time).
    /// 4 Mi entries of 4 bytes, which the kernel stores in 8 (array values are
    /// rounded up to 8 bytes) = 32 MiB: room for 32 Maglev tables of 65537, double-buffered.
    pub const TABLE_ENTRIES: u32 = 1 << 22;
    /// Connection table entries (LRU, load-time): established connections (TCP after the
    /// client's ACK) and UDP flows.
    pub const FLOWS: u32 = 1 << 18;
    /// Half-open table slots (buckets of four, load-time, a power of two; 64 bytes each:
    /// 16 MiB): TCP connections whose SYN was scheduled and whose client has not yet sent its
    /// ACK. Only these compete with a SYN flood.
    pub const SYNS: u32 = 1 << 18;
    /// Persistence table slots (buckets of four, 40 bytes each: 2.5 MiB): one entry per
    /// (client network, service) ([`PersistSlot`](crate::PersistSlot)).
    pub const PERSIST: u32 = 1 << 16;
    /// Fragmented datagrams in flight whose first fragment was forwarded (LRU).
    pub const FRAGS: u32 = 1 << 14;
    /// Backends of an lc/wlc service the data path compares for each new flow.
    pub const LC_MAX_BACKENDS: u32 = 64;
    /// Slots of `IFACES`, an array indexed by ifindex: the program can be attached to an
    /// interface whose index is below this. 65,536 slots of 8 bytes = 512 KiB.
    pub const IFINDEX_SLOTS: u32 = 1 << 16;
    /// Words of `VIP_FILTER`, a bitmap of 65,536 bits (8 KiB) indexed by [`vip_filter_bit`].
    pub const VIP_FILTER_WORDS: u32 = 1 << 10;
    /// Slots of each CPU's flow cache (`FLOW_CACHE`, direct-mapped), 64 bytes each: 512 KiB
    /// a CPU.
    pub const FLOW_CACHE_SLOTS: u32 = 1 << FLOW_CACHE_BITS;
    pub const FLOW_CACHE_BITS: u32 = 13;
    /// Slots of each CPU's service cache (`SERVICE_CACHE`, direct-mapped), 96 bytes each:
    /// 96 KiB a CPU.
    pub const SERVICE_CACHE_SLOTS: u32 = 1 << SERVICE_CACHE_BITS;
    pub const SERVICE_CACHE_BITS: u32 = 10;
    /// Bytes of a service name, including no terminator (names are NUL-padded).
    pub const NAME_LEN: usize = 32;
}

/// IP protocol numbers the data path serves.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;

/// A 16-byte address in network byte order, as four words read from memory.
pub type Addr = [u32; 4];

/// The IPv4-mapped form of an IPv4 address given in network byte order (as read from a header).
#[inline(always)]
pub const fn v4_mapped(be_addr: u32) -> Addr {
    [0, 0, 0x0000_ffffu32.to_be(), be_addr]
}

/// Key of `SERVICES`: a VIP, a port (0 = every port) and a protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub addr: Addr,
    /// Network byte order; 0 matches every port of `addr` that has no own entry.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// murmur3's 32-bit block mix: one word into the running hash.
#[inline(always)]
pub const fn hash_word(h: u32, word: u32) -> u32 {
    let k = word
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// murmur3's finaliser: every input bit affects every output bit.
#[inline(always)]
pub const fn hash_finish(mut h: u32, len: u32) -> u32 {
    h ^= len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The hash of a client address (sh, persistence): the same on every director.
#[inline(always)]
pub const fn hash_addr(a: &Addr) -> u32 {
    let mut h = 0;
    h = hash_word(h, a[0]);
    h = hash_word(h, a[1]);
    h = hash_word(h, a[2]);
    h = hash_word(h, a[3]);
    hash_finish(h, 16)
}

/// Whether the service whose key is `key` serves the flow `f`: the same VIP and protocol, and
/// the flow's port or every port (0). The data path checks a connection-table entry's
/// `service_id` with it (`SERVICE_KEYS[service_id]`) before it trusts the entry without a
/// `SERVICES` lookup: ids are reused, and an entry may outlive its service.
#[inline(always)]
pub fn serves(key: &ServiceKey, f: &FlowKey) -> bool {
    key.addr == f.dst && key.proto == f.proto && (key.port == f.dport || key.port == 0)
}

/// The bit of `VIP_FILTER` that a destination address sets (user space, for every VIP) and
/// tests (the data path, before it looks a service up): the address's words folded with XOR,
/// then a multiply (Fibonacci hashing) whose top bits index the bitmap. A clear bit proves the
/// address is no VIP; a set one may be a collision, which costs only the exact lookup. Every
/// packet to the director computes it, so it is a few instructions, not a full hash.
#[inline(always)]
pub const fn vip_filter_bit(a: &Addr) -> u32 {
    let x = a[0] ^ a[1] ^ a[2] ^ a[3];
    (x ^ (x >> 16)).wrapping_mul(0x9e37_79b1) >> (32 - VIP_FILTER_BITS)
}

/// log2 of `VIP_FILTER`'s bits.
const VIP_FILTER_BITS: u32 = (limits::VIP_FILTER_WORDS * 64).trailing_zeros();

/// The hash of a flow (mh): addresses, ports and protocol, the same on every director.
#[inline(always)]
pub const fn hash_flow(f: &FlowKey) -> u32 {
    let mut h = 0;
    h = hash_word(h, f.src[0]);
    h = hash_word(h, f.src[1]);
    h = hash_word(h, f.src[2]);
    h = hash_word(h, f.src[3]);
    h = hash_word(h, f.dst[0]);
    h = hash_word(h, f.dst[1]);
    h = hash_word(h, f.dst[2]);
    h = hash_word(h, f.dst[3]);
    h = hash_word(h, (f.sport as u32) << 16 | f.dport as u32);
    h = hash_word(h, f.proto as u32);
    hash_finish(h, 40)
}

/// Value of `SERVICES`. User space replaces it whole; the kernel swaps hash map values
/// atomically, so a packet sees either the old table or the new one, never a mix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Index into `CURSORS` and `SERVICE_STATS`.
    pub id: u32,
    /// First entry of this service's backend sequence in `TABLE`.
    pub table_offset: u32,
    /// Entries in the sequence; 0 = no usable backend (packets are dropped and counted).
    pub table_len: u32,
    /// A [`Pick`] as a byte (read it with [`Pick::from_u8`]).
    pub pick: u8,
    /// A [`Sched`] as a byte, for listings; not read by the data path.
    pub sched: u8,
    pub flags: u16,
    /// Persistence: new connections from one client network within this many seconds of the
    /// last go to the same backend; 0 = off.
    pub persist_timeout_s: u32,
    /// Persistence granularity: the client address is masked with this (IPv4-mapped).
    pub persist_mask: Addr,
    /// NUL-padded UTF-8 name, for listings.
    pub name: [u8; limits::NAME_LEN],
}

/// `Backend::flags`: the slot holds a configured backend.
pub const BACKEND_CONFIGURED: u16 = 1 << 0;
/// `Backend::flags`: its MAC is known and it may receive packets (of existing flows at least).
pub const BACKEND_USABLE: u16 = 1 << 1;
/// `Backend::flags`: health checks marked it down (it is then not usable); for listings.
pub const BACKEND_DOWN: u16 = 1 << 2;

/// Value of `BACKENDS`, an array indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: Addr,
    pub mac: [u8; 6],
    pub flags: u16,
    /// The service this backend belongs to (a backend address in two services has two slots).
    pub service_id: u32,
    pub weight: u32,
    /// Network byte order (equals the service's port in DR mode, 0 for all-ports services).
    pub port: u16,
    /// A [`Forward`] as a byte: direct routing (0) or a tunnel.
    pub forward: u8,
    pub _pad: u8,
    /// Tunnels: the outer source address (16 bytes as `addr`; the family of `addr`).
    pub tunnel_src: Addr,
    /// GUE: the UDP destination port the backend decapsulates on (network byte order).
    pub tunnel_port: u16,
    pub _pad2: [u8; 2],
}

/// Key of `FLOWS`: one direction of a connection, client to VIP. Aligned to 8 bytes (its size
/// is 40 either way): the data path compares two keys (a flow-cache slot's and the packet's)
/// as five 64-bit words, which BPF may load only from aligned stack slots.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The key's 40 bytes as five 64-bit words (the padding is always zero).
    #[inline(always)]
    pub fn words(&self) -> &[u64; 5] {
        // Same size, and `FlowKey` is aligned to 8 with every byte initialised.
        unsafe { &*(self as *const FlowKey as *const [u64; 5]) }
    }
}

/// Equal keys have equal bytes: five word compares and one branch (a field-by-field compare
/// took a branch per field and byte loads for the padding).
impl PartialEq for FlowKey {
    #[inline(always)]
    fn eq(&self, other: &FlowKey) -> bool {
        let (a, b) = (self.words(), other.words());
        (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) == 0
    }
}

impl Eq for FlowKey {}

impl core::hash::Hash for FlowKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.words().hash(state);
    }
}

/// Key of `PERSIST`: a client network and a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PersistKey {
    /// The client address masked with the service's `persist_mask`.
    pub client: Addr,
    pub service_id: u32,
}

/// Value of `PERSIST`: the backend of the client network's last connection, and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Persist {
    pub last_seen_ns: u64,
    pub backend: u32,
    pub _pad: u32,
}

/// Value of `IFACES`, an array indexed by ifindex (`0..limits::IFINDEX_SLOTS`): the
/// interface the program is attached to. A slot of no registered interface is all zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Iface {
    pub mac: [u8; 6],
    /// 1 for a registered interface, 0 for an unused slot.
    pub registered: u8,
    pub _pad: u8,
}

impl Iface {
    /// The slot of a registered interface whose own MAC is `mac`.
    pub const fn new(mac: [u8; 6]) -> Iface {
        Iface {
            mac,
            registered: 1,
            _pad: 0,
        }
    }
}

/// Value of `SERVICE_STATS` and `BACKEND_STATS` (per-CPU arrays, summed by user space).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    /// IP bytes (the IPv4 total length; 40 + the payload length for IPv6), as IPVS counts them.
    pub bytes: u64,
    /// Flows that were scheduled (connection-table entries created).
    pub new_flows: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.new_flows += other.new_flows;
    }
}

/// Why the data path did what it did with a packet: the index into `REASONS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Forwarded to a backend (XDP_TX).
    Forwarded = 0,
    /// Passed: neither IPv4 nor IPv6 (ARP, other EtherTypes).
    PassNotIp = 1,
    /// Passed: IP but not TCP or UDP, and not an ICMP error about a VIP flow (echo requests,
    /// neighbour discovery, other protocols).
    PassNotTcpUdp = 2,
    /// Passed: no service for this destination address, port and protocol.
    PassNotVip = 3,
    /// Passed: to a VIP, but the frame was not addressed to this interface's MAC.
    PassOtherMac = 4,
    /// Passed: the ingress interface is not registered (attach writes it).
    PassUnknownIface = 5,
    /// Passed: a non-first fragment of no datagram the director has seen the first fragment
    /// of (not to a VIP, or it arrived before its first fragment); the kernel holds it until
    /// its reassembly timer expires.
    PassFragment = 6,
    /// Passed: a header is truncated or inconsistent (the kernel drops it).
    PassMalformed = 7,
    /// Dropped: the service has no usable backend.
    DropNoBackend = 8,
    /// Dropped: the service's table slot is outside `TABLE` or names no usable backend of the
    /// service (the maps disagree: a control-plane bug or a map written by hand). The data
    /// path logs the slot and backend for `lb-ctl run`, at most once per CPU per second.
    DropBadBackend = 9,
    /// Forwarded (XDP_TX) without a connection-table entry: a TCP packet that is not a SYN,
    /// with no live entry, to an `mh` or `sh` service, sent to the backend its hash picks (as
    /// on every director), without creating an entry or counting a connection.
    ForwardedStateless = 10,
    /// Dropped: a TCP packet that is not a SYN, with no live entry, to an `rr`, `wrr`, `lc` or
    /// `wlc` service (IPVS with `sloppy_tcp` off does not schedule it either).
    DropNoFlow = 11,
    /// Forwarded (XDP_TX): an ICMP or ICMPv6 error (destination unreachable, packet too big,
    /// time exceeded) whose quoted packet is a reply of a VIP flow, sent to that flow's
    /// backend.
    ForwardedIcmp = 12,
    /// Passed: an ICMP error quoting a VIP flow that the director cannot place (no entry, and
    /// a scheduler that needs one), or whose quote is truncated.
    PassIcmpNoFlow = 13,
    /// Forwarded (XDP_TX): a non-first fragment, sent to the backend its first fragment went to.
    ForwardedFragment = 14,
    /// Passed: an IPv6 header chain longer than the data path walks.
    PassHeaderChain = 15,
    /// Passed: a packet for a tunnel backend whose outer destination has no route or no
    /// resolved next hop in the kernel's FIB (`bpf_fib_lookup`); the kernel resolves it, and a
    /// later packet is encapsulated.
    PassNoRoute = 16,
    /// Sent back (XDP_TX): the encapsulated packet would exceed the egress MTU and the client
    /// forbade fragmentation; the client got ICMP "fragmentation needed" / ICMPv6 "packet too
    /// big" from the VIP, with the MTU minus the tunnel's overhead.
    AnsweredTooBig = 17,
    /// Forwarded (XDP_TX) without an entry: the CPU's budget of new entries per second
    /// (`Settings::new_flows_per_cpu`) is spent, and the service's scheduler (mh, sh) places
    /// the flow's later packets by their hash alone.
    ForwardedOverBudget = 18,
    /// Dropped: the CPU's budget of new entries per second is spent, and the service's
    /// scheduler (rr, wrr, lc, wlc) could not place the flow's later packets without an entry.
    DropOverBudget = 19,
}

impl Reason {
    pub const COUNT: u32 = 20;
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::Forwarded,
        Reason::PassNotIp,
        Reason::PassNotTcpUdp,
        Reason::PassNotVip,
        Reason::PassOtherMac,
        Reason::PassUnknownIface,
        Reason::PassFragment,
        Reason::PassMalformed,
        Reason::DropNoBackend,
        Reason::DropBadBackend,
        Reason::ForwardedStateless,
        Reason::DropNoFlow,
        Reason::ForwardedIcmp,
        Reason::PassIcmpNoFlow,
        Reason::ForwardedFragment,
        Reason::PassHeaderChain,
        Reason::PassNoRoute,
        Reason::AnsweredTooBig,
        Reason::ForwardedOverBudget,
        Reason::DropOverBudget,
    ];

    /// A stable snake_case name, used as a JSON key and Prometheus label.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Forwarded => "forwarded",
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassNotTcpUdp => "pass_not_tcp_udp",
            Reason::PassNotVip => "pass_not_vip",
            Reason::PassOtherMac => "pass_other_mac",
            Reason::PassUnknownIface => "pass_unknown_iface",
            Reason::PassFragment => "pass_fragment",
            Reason::PassMalformed => "pass_malformed",
            Reason::DropNoBackend => "drop_no_backend",
            Reason::DropBadBackend => "drop_bad_backend",
            Reason::ForwardedStateless => "forwarded_stateless",
            Reason::DropNoFlow => "drop_no_flow",
            Reason::ForwardedIcmp => "forwarded_icmp",
            Reason::PassIcmpNoFlow => "pass_icmp_no_flow",
            Reason::ForwardedFragment => "forwarded_fragment",
            Reason::PassHeaderChain => "pass_header_chain",
            Reason::PassNoRoute => "pass_no_route",
            Reason::AnsweredTooBig => "answered_too_big",
            Reason::ForwardedOverBudget => "forwarded_over_budget",
            Reason::DropOverBudget => "drop_over_budget",
        }
    }

    /// The data path drops packets counted under this reason (XDP_DROP).
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Reason::DropNoBackend
                | Reason::DropBadBackend
                | Reason::DropNoFlow
                | Reason::DropOverBudget
        )
    }

    /// The data path sends packets counted under this reason to a backend (XDP_TX).
    pub const fn is_tx(self) -> bool {
        matches!(
            self,
            Reason::Forwarded
                | Reason::ForwardedStateless
                | Reason::ForwardedIcmp
                | Reason::ForwardedFragment
                | Reason::AnsweredTooBig
                | Reason::ForwardedOverBudget
        )
    }
}

/// Value of `SETTINGS` (an array of one): what the data path reads that is no service's.
/// User space writes it whole from the configuration's `flood:` block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// New connection-table entries (half-open TCP and new UDP flows) one CPU may create per
    /// second; 0 = no limit. Past it, mh/sh forward without an entry and the others drop.
    pub new_flows_per_cpu: u32,
    pub _pad: u32,
}

/// Value of `BUDGET` (a per-CPU array of one): the CPU's current one-second window of the
/// new-entry budget.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// When the window began (the data path's clock, ns).
    pub window_start_ns: u64,
    /// Entries created in the window.
    pub used: u64,
}

impl Budget {
    /// Takes one entry from the budget of `limit` per second at `now_ns`: true if there was
    /// one (a new window starts one second after the last began); false once the window's
    /// `limit` is spent. A limit of 0 never runs out.
    #[inline(always)]
    pub fn take(&mut self, limit: u32, now_ns: u64) -> bool {
        if limit == 0 {
            return true;
        }
        if age_ns(now_ns, self.window_start_ns) >= 1_000_000_000 {
            self.window_start_ns = now_ns;
            self.used = 0;
        }
        if self.used >= limit as u64 {
            return false;
        }
        self.used += 1;
        true
    }
}

/// Value of the bench object's `BENCH_FRAME` (`cargo xtask bench`): what the restore program
/// writes back into the reused test-run buffer before each run of the program under test.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BenchFrame {
    /// The frame's Ethernet header: destination and source MACs, ethertype (or the first
    /// VLAN tag's TPID).
    pub eth: [u8; 14],
    /// Offset of the 16-bit transport source port in the frame.
    pub sport_offset: u16,
    /// Non-zero: write a new source port each run, so every packet is a new flow.
    pub vary_sport: u16,
    /// Non-zero: the frame's length. A tunnel backend pushes an outer header in front of the
    /// packet (`bpf_xdp_adjust_head`); the restore program takes the frame back to this length
    /// from the front before it writes `eth`, so every run sees the original frame.
    pub len: u16,
}

// Layouts both sides rely on. A change here must be made knowingly.
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);
const _: () = assert!(core::mem::size_of::<Service>() == 68);
const _: () = assert!(core::mem::size_of::<PersistKey>() == 20);
const _: () = assert!(core::mem::size_of::<Persist>() == 16);
const _: () = assert!(core::mem::size_of::<Backend>() == 56);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::align_of::<FlowKey>() == 8);
const _: () = assert!(core::mem::size_of::<Flow>() == 24);
const _: () = assert!(core::mem::size_of::<Iface>() == 8);
const _: () = assert!(core::mem::size_of::<Counters>() == 24);
const _: () = assert!(core::mem::size_of::<BenchFrame>() == 20);
const _: () = assert!(core::mem::size_of::<FragKey>() == 40);
const _: () = assert!(core::mem::size_of::<Frag>() == 24);
const _: () = assert!(core::mem::size_of::<Settings>() == 8);
const _: () = assert!(core::mem::size_of::<Budget>() == 16);
const _: () = assert!(core::mem::align_of::<Frag>() == 8);
const _: () = assert!(core::mem::align_of::<Flow>() == 8);
const _: () = assert!(core::mem::align_of::<Counters>() == 8);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are #[repr(C)], Copy, contain only integers and byte arrays, and have no
    // implicit padding (the size assertions above cover every byte).
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for Flow {}
    unsafe impl aya::Pod for Iface {}
    unsafe impl aya::Pod for PersistKey {}
    unsafe impl aya::Pod for BenchFrame {}
    unsafe impl aya::Pod for Persist {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for Frag {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for Budget {}
    unsafe impl aya::Pod for CachedFlow {}
    unsafe impl aya::Pod for HalfOpen {}
    unsafe impl aya::Pod for CachedService {}
    unsafe impl aya::Pod for PersistSlot {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_bytes_are_the_ipv4_mapped_ipv6_form() {
        let be = u32::from_ne_bytes([192, 168, 58, 133]);
        let words = v4_mapped(be);
        let mut bytes = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        assert_eq!(
            bytes,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 58, 133]
        );
    }

    #[test]
    fn the_budget_runs_out_within_a_second_and_refills_after_it() {
        const S: u64 = 1_000_000_000;
        let now = 86_400 * S;
        let mut b = Budget::default();
        let taken = (0..5).filter(|_| b.take(3, now)).count();
        assert_eq!(taken, 3, "3 of 5 within the first window");
        assert!(
            !b.take(3, now + S - 1),
            "still the same window 1 ns before its second"
        );
        assert!(
            b.take(3, now + S),
            "a new window one second after the first began"
        );
        assert_eq!(b.used, 1);
        // A clock reading older than the window's start (another CPU's stamp) is not a refill.
        let mut b = Budget {
            window_start_ns: now + S,
            used: 3,
        };
        assert!(!b.take(3, now));
        // 0 is no limit.
        let mut b = Budget::default();
        assert!((0..1000).all(|_| b.take(0, now)));
    }

    #[test]
    fn reasons_are_indexed_by_their_value_and_named_uniquely() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32);
            for other in &Reason::ALL[i + 1..] {
                assert_ne!(r.name(), other.name());
            }
        }
        assert!(Reason::DropNoBackend.is_drop());
        assert!(Reason::DropNoFlow.is_drop());
        assert!(!Reason::PassMalformed.is_drop());
        assert!(!Reason::Forwarded.is_drop());
        assert!(Reason::Forwarded.is_tx() && Reason::ForwardedStateless.is_tx());
        for r in Reason::ALL {
            assert!(!(r.is_tx() && r.is_drop()), "{}", r.name());
        }
    }

    #[test]
    fn counters_add_field_by_field() {
        let mut a = Counters {
            packets: 1,
            bytes: 60,
            new_flows: 1,
        };
        a.add(&Counters {
            packets: 2,
            bytes: 100,
            new_flows: 0,
        });
        assert_eq!(
            a,
            Counters {
                packets: 3,
                bytes: 160,
                new_flows: 1
            }
        );
    }

    #[test]
    fn hashes_are_fixed_and_spread_even_ports() {
        // Fixed values: every director must compute the same hash for the same flow.
        let flow = |sport: u16| FlowKey {
            src: v4_mapped(u32::from_ne_bytes([192, 168, 58, 100])),
            dst: v4_mapped(u32::from_ne_bytes([192, 168, 58, 133])),
            sport: sport.to_be(),
            dport: 80u16.to_be(),
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        assert_eq!(hash_flow(&flow(40000)), hash_flow(&flow(40000)));
        assert_ne!(hash_flow(&flow(40000)), hash_flow(&flow(40002)));
        // Linux picks even local ports: the low bit of the hash must still be balanced.
        let odd = (0..1000u16)
            .filter(|i| hash_flow(&flow(32768 + 2 * i)) & 1 == 1)
            .count();
        assert!((450..=550).contains(&odd), "{odd} of 1000 odd");
        let buckets = (0..10_000u32).fold([0u32; 7], |mut b, i| {
            let a = v4_mapped(u32::from_ne_bytes([10, (i >> 8) as u8, i as u8, 1]));
            b[(hash_addr(&a) % 7) as usize] += 1;
            b
        });
        for n in buckets {
            assert!((1300..=1560).contains(&n), "{buckets:?}");
        }
    }

    #[test]
    fn map_list_names_every_map_once() {
        for (i, a) in names::MAPS.iter().enumerate() {
            for b in &names::MAPS[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
