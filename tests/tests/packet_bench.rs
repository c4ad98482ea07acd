//! The bench's measuring setup (`lb-bench`): the restore program in front of the director,
//! `repeat N` test runs over one buffer, must be N runs of the same packet. A tunnel backend's
//! outer header grows the frame; the restore program takes it off again before each run, so
//! the frame the last run leaves is the packet encapsulated once (every byte, against the
//! reference of `packet_tunnel`), and the counters grew by N. The runs arrive on `d0` of a
//! [`FibNs`], as the bench's tunnel rows do.
//!
//! The flood rows: N SYNs of new tuples into a half-open table filled first make N half-open
//! entries, each evicting a filled one, the table staying full; N SYNs over a spent budget are
//! all counted under the budget's reason and make no entry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::ProgramFd;
use lb_common::{Counters, Reason, TcpState, limits};
use lb_ctl::maps::loader::Sizes;
use lb_tests::icmp::service_entry;
use lb_tests::packet::{
    BENCH_TUNNEL_SERVICES, BenchProgs, CLIENT_MAC, DIRECTOR_MAC, DIRECTOR_V4, DIRECTOR_V6, Entered,
    FibNs, Harness, Pinned, TEST_SIZES, XDP_DROP, XDP_PASS, XDP_TX, bench_frame, encapsulated,
    flow_hash, tcp_frame, tcp6_frame,
};

/// Runs per test run: enough to see a count that is off by one run, few enough to be quick.
const N: u32 = 1000;
const CLIENT: [u8; 4] = [192, 168, 58, 100];
const VIP: [u8; 4] = [192, 168, 58, 133];
/// The source port's offset in an untagged IPv4 frame without options.
const SPORT: u16 = 14 + 20;

fn client6() -> Ipv6Addr {
    "fd00:58::100".parse().unwrap()
}
fn vip6() -> Ipv6Addr {
    "fd00:58::133".parse().unwrap()
}
fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

/// The bench's tunnel services loaded, the test thread inside a fresh [`FibNs`], the bench
/// programs loaded beside the director.
struct Bench {
    h: Harness,
    ns: FibNs,
    _inside: Entered,
    progs: BenchProgs,
    director: ProgramFd,
}

impl Bench {
    fn new() -> Bench {
        // A half-open table of lb-ctl's default size: the N new flows of a run each keep an
        // entry in their bucket of four slots (in the tests' 4,096 slots, a few buckets would
        // get more than four of them).
        let sizes = Sizes {
            syns: limits::SYNS,
            ..TEST_SIZES
        };
        let yaml = format!("services:{BENCH_TUNNEL_SERVICES}");
        let mut h = Harness::with_config_sized(&yaml, &sizes);
        let ns = FibNs::new().expect("a namespace with routes for the FIB lookups");
        let inside = ns.enter().expect("entering it");
        h.register_iface(ns.ifindex);
        let director = h.director_fd().expect("the director program");
        let progs = BenchProgs::load().expect("loading the bench programs");
        Bench {
            h,
            ns,
            _inside: inside,
            progs,
            director,
        }
    }

    /// Opens the flow of `syn` (a SYN arriving on `d0`).
    fn open(&mut self, syn: &[u8]) {
        let out = self.h.run_on(self.ns.ifindex, syn);
        assert_eq!(out.action, XDP_TX, "the SYN that opens the flow");
    }
}

fn grew(before: Counters, after: Counters) -> (u64, u64, u64) {
    (
        after.packets - before.packets,
        after.bytes - before.bytes,
        after.new_flows - before.new_flows,
    )
}

/// A known flow of one of the bench's tunnel services.
struct Case {
    service: &'static str,
    /// Client -> VIP, TCP from port 40000 to `dport`.
    client: IpAddr,
    vip: IpAddr,
    dport: u16,
    /// The outer source and destination, and GUE's port.
    src: IpAddr,
    backend: IpAddr,
    gue: Option<u16>,
}

impl Case {
    fn frame(&self, flags: &str) -> Vec<u8> {
        let macs = (CLIENT_MAC, DIRECTOR_MAC);
        match (self.client, self.vip) {
            (IpAddr::V4(c), IpAddr::V4(v)) => {
                tcp_frame(macs, (c.octets(), 40000), (v.octets(), self.dport), flags)
            }
            (IpAddr::V6(c), IpAddr::V6(v)) => tcp6_frame(macs, (c, 40000), (v, self.dport), flags),
            _ => panic!("client and VIP of one family"),
        }
    }
}

#[test]
fn repeat_n_of_a_known_flow_encapsulates_the_same_packet_n_times() {
    let mut b = Bench::new();
    let ipv4 = |service, dport, backend, gue| Case {
        service,
        client: v4(CLIENT),
        vip: v4(VIP),
        dport,
        src: v4(DIRECTOR_V4),
        backend: v4(backend),
        gue,
    };
    let cases = [
        ipv4("ipip", 90, [10, 20, 0, 11], None),
        ipv4("gue", 92, [10, 20, 0, 13], Some(6080)),
        Case {
            service: "ipip6",
            client: IpAddr::V6(client6()),
            vip: IpAddr::V6(vip6()),
            dport: 90,
            src: IpAddr::V6(DIRECTOR_V6.parse().unwrap()),
            backend: IpAddr::V6("fd20::11".parse().unwrap()),
            gue: None,
        },
    ];
    for c in cases {
        let (service, frame) = (c.service, c.frame("A"));
        b.open(&c.frame("S"));
        b.progs
            .set_frame(bench_frame(&frame, None, true).unwrap())
            .unwrap();
        let before = b.h.backend_counters(service, c.backend);
        let r = b
            .progs
            .run(Some(&b.director), &frame, N, Some(b.ns.ifindex))
            .expect("the test run");
        assert_eq!(r.action, XDP_TX, "{service}: encapsulated and sent");
        let hash = flow_hash(c.client, c.vip, 40000, c.dport);
        assert_eq!(
            r.data,
            encapsulated(&frame, c.src, c.backend, c.gue, hash),
            "{service}: the frame of the last run is the packet encapsulated once"
        );
        let inner = (frame.len() - 14) as u64;
        assert_eq!(
            grew(before, b.h.backend_counters(service, c.backend)),
            (N as u64, N as u64 * inner, 0),
            "{service}: packets, bytes and new flows of the backend during the {N} runs"
        );
    }
}

#[test]
fn repeat_n_of_new_flows_makes_n_flows_over_both_tunnel_backends() {
    let mut b = Bench::new();
    let frame = tcp_frame((CLIENT_MAC, DIRECTOR_MAC), (CLIENT, 40000), (VIP, 91), "S");
    let backends = [v4([10, 20, 0, 11]), v4([10, 20, 0, 12])];
    b.progs
        .set_frame(bench_frame(&frame, Some(SPORT), true).unwrap())
        .unwrap();
    let flows = b.h.flow_count();
    let before = backends.map(|a| b.h.backend_counters("ipip-rr", a));
    let r = b
        .progs
        .run(Some(&b.director), &frame, N, Some(b.ns.ifindex))
        .expect("the test run");
    assert_eq!(r.action, XDP_TX, "encapsulated and sent");
    // Each run a new source port, so a new flow, alternating between the two backends.
    assert_eq!(
        b.h.flow_count() - flows,
        N as usize,
        "new connection entries"
    );
    for (a, before) in backends.iter().zip(before) {
        let inner = (frame.len() - 14) as u64;
        let half = N as u64 / 2;
        assert_eq!(
            grew(before, b.h.backend_counters("ipip-rr", *a)),
            (half, half * inner, half),
            "packets, bytes and new flows of backend {a}"
        );
    }
    // The last run's packet: the input with the last source port the restore program wrote,
    // encapsulated once to the backend whose turn it was.
    // Behind the 20-byte outer header.
    let at = 20 + SPORT as usize;
    let sport = u16::from_be_bytes([r.data[at], r.data[at + 1]]);
    assert!(
        (1024..61024).contains(&sport) && sport != 40000,
        "a source port of the restore program's, not {sport}"
    );
    let mut input = frame.clone();
    input[SPORT as usize..SPORT as usize + 2].copy_from_slice(&sport.to_be_bytes());
    let dst = v4(r.data[14 + 16..14 + 20].try_into().unwrap());
    assert!(backends.contains(&dst), "outer destination {dst}");
    assert_eq!(
        r.data,
        encapsulated(&input, v4(DIRECTOR_V4), dst, None, 0),
        "the frame of the last run"
    );
}

#[test]
fn the_baseline_behind_the_restore_sees_the_frame_as_it_came_and_without_the_length_restored_the_director_sees_its_own_output()
 {
    let mut b = Bench::new();
    let frame = tcp_frame((CLIENT_MAC, DIRECTOR_MAC), (CLIENT, 40000), (VIP, 90), "A");
    b.open(&tcp_frame(
        (CLIENT_MAC, DIRECTOR_MAC),
        (CLIENT, 40000),
        (VIP, 90),
        "S",
    ));
    // The baseline (swap MACs, XDP_TX) behind the restore program, which moves the frame's
    // start by 0 bytes: the MACs swapped once, nothing else changed.
    b.progs
        .set_frame(bench_frame(&frame, None, true).unwrap())
        .unwrap();
    let baseline = b.progs.baseline().unwrap();
    let r = b
        .progs
        .run(Some(&baseline), &frame, N, Some(b.ns.ifindex))
        .expect("the test run");
    assert_eq!(r.action, XDP_TX);
    let mut swapped = frame.clone();
    swapped[..6].copy_from_slice(&frame[6..12]);
    swapped[6..12].copy_from_slice(&frame[..6]);
    assert_eq!(r.data, swapped, "the baseline's frame");
    // The restore program writing only the Ethernet header back: from the second run on, the
    // director reads the outer header (10.99.0.1 -> 10.20.0.11), no VIP, and passes it; the
    // backend counts the first run alone. What the length restore is for.
    b.progs
        .set_frame(bench_frame(&frame, None, false).unwrap())
        .unwrap();
    let backend = v4([10, 20, 0, 11]);
    let before = b.h.backend_counters("ipip", backend);
    let r = b
        .progs
        .run(Some(&b.director), &frame, N, Some(b.ns.ifindex))
        .expect("the test run");
    assert_eq!(r.action, XDP_PASS, "the last run saw no VIP");
    assert_eq!(r.data.len(), frame.len() + 20, "the outer header stayed");
    assert_eq!(
        grew(before, b.h.backend_counters("ipip", backend)).0,
        1,
        "packets to the backend"
    );
}

/// The bench's rr and mh services (direct routing, two backends each).
const FLOOD_SERVICES: &str = "
services:
  - { name: rr, vip: 192.168.58.133, port: 81, scheduler: rr,
      backends: [ { address: 192.168.58.135 }, { address: 192.168.58.136 } ] }
  - { name: mh, vip: 192.168.58.133, port: 82, scheduler: mh,
      backends: [ { address: 192.168.58.135 }, { address: 192.168.58.136 } ] }
";

/// The flood services loaded, the bench programs beside the director, the thread on one CPU
/// (the restore program's source ports come from a per-CPU counter).
struct Flood {
    h: Harness,
    progs: BenchProgs,
    director: ProgramFd,
    _pinned: Pinned,
}

impl Flood {
    fn new() -> Flood {
        let mut h = Harness::with_config(FLOOD_SERVICES);
        let director = h.director_fd().expect("the director program");
        Flood {
            h,
            progs: BenchProgs::load().expect("loading the bench programs"),
            director,
            _pinned: Pinned::here().expect("pinning the test to one CPU"),
        }
    }

    /// N runs of a SYN to `dport`, each from a new source port.
    fn syns(&mut self, dport: u16) -> u32 {
        let syn = tcp_frame(
            (CLIENT_MAC, DIRECTOR_MAC),
            (CLIENT, 40000),
            (VIP, dport),
            "S",
        );
        self.progs
            .set_frame(bench_frame(&syn, Some(SPORT), false).unwrap())
            .unwrap();
        self.progs
            .run(Some(&self.director), &syn, N, None)
            .expect("the test run")
            .action
    }
}

#[test]
fn repeat_n_syns_into_a_full_half_open_table_each_take_their_slot_evicting_what_it_held() {
    for (service, dport) in [("rr", 81), ("mh", 82)] {
        let mut f = Flood::new();
        let written = f.h.fill_syns(service).expect("filling the half-open table");
        let reachable = f.h.syns_reachable().unwrap();
        let filled = f.h.fill_entries();
        assert!(
            f.h.syns_full().unwrap() && filled == f.h.half_open_count(),
            "{service}: after writing {written} entries the half-open table holds {filled} \
             filled ones and {} in all, of {reachable}",
            f.h.half_open_count()
        );
        assert!(
            filled >= N as usize,
            "{service}: a table of {filled} entries"
        );
        f.h.reset_reasons();
        let before = f.h.service_counters(service);

        assert_eq!(f.syns(dport), XDP_TX, "{service}: the last SYN forwarded");

        let client = v4(CLIENT);
        // N flows into the table's buckets of four slots, each taking its bucket's least
        // recently seen slot (a filled one first): a bucket that more than four of them hash
        // to keeps its last four (1,000 flows into 1,024 buckets: a few).
        let made = f.h.syns_from(client);
        assert!(
            (N as usize * 3 / 4..=N as usize).contains(&made),
            "{service}: {made} half-open entries of the client after {N} SYNs"
        );
        let evicted = filled - f.h.fill_entries();
        eprintln!(
            "{service}: {filled} entries filled of {reachable} ({written} written); {N} SYNs \
             made {made} half-open entries and evicted {evicted}; {} entries after",
            f.h.half_open_count()
        );
        assert_eq!(
            evicted, made,
            "{service}: filled entries evicted by the {made} slots the SYNs took"
        );
        assert!(
            f.h.syns_full().unwrap(),
            "{service}: the half-open table holds {} of {reachable} after the runs",
            f.h.half_open_count()
        );
        assert_eq!(
            f.h.established_count(),
            0,
            "{service}: no SYN made an established entry"
        );
        let after = f.h.service_counters(service);
        assert_eq!(
            grew(before, after),
            (N as u64, N as u64 * 40, N as u64),
            "{service}: packets, bytes and new flows"
        );
        f.h.assert_reasons(&[(Reason::Forwarded, N as u64)]);
        // Every new entry is a half-open one of this service.
        let (_, sid) = service_entry(&mut f.h, service);
        let ours: Vec<_> = (f.h.half_open_entries().into_iter())
            .filter(|(k, _)| k.src == lb_ctl::plan::convert::addr_of(client))
            .collect();
        for (key, entry) in &ours {
            assert_eq!(entry.state(), TcpState::Syn, "{service}: the entry's state");
            assert_eq!(entry.service_id, sid.id, "{service}: the entry's service");
            // In the slot its key hashes to: the next packet of the flow finds it.
            assert!(
                f.h.in_syns(key),
                "{service}: {key:?} is not in its own slot"
            );
        }
    }
}

#[test]
fn repeat_n_syns_over_a_spent_budget_are_counted_under_its_reason_and_make_no_entry() {
    let cases = [
        ("rr", 81, XDP_DROP, Reason::DropOverBudget, 0),
        ("mh", 82, XDP_TX, Reason::ForwardedOverBudget, N as u64),
    ];
    for (service, dport, action, reason, forwarded) in cases {
        let mut f = Flood::new();
        f.h.set_new_flows_per_cpu(1).unwrap();
        f.h.spend_budget().unwrap();
        f.h.reset_reasons();
        let before = f.h.service_counters(service);

        assert_eq!(f.syns(dport), action, "{service}: the last SYN");

        f.h.assert_reasons(&[(reason, N as u64)]);
        assert_eq!(
            (f.h.half_open_count(), f.h.established_count()),
            (0, 0),
            "{service}: half-open and established entries"
        );
        assert_eq!(
            grew(before, f.h.service_counters(service)),
            (forwarded, forwarded * 40, 0),
            "{service}: packets, bytes and new flows"
        );
    }
}
