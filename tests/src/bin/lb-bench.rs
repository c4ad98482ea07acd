//! `cargo xtask bench` (data-path part): the XDP program's cost per packet, measured with
//! BPF_PROG_TEST_RUN as a ratio to a minimal XDP_TX program measured in the same run.
//!
//! The director checks and rewrites MACs, and with `repeat N` the kernel reuses one buffer, so
//! it runs behind `bench_restore`, which writes the frame's original MACs back and tail-calls
//! it. The baseline (swap MACs, XDP_TX) needs no restoring and runs alone. Rounds interleave:
//! for each scenario, baseline alone, restore -> baseline and restore -> director run back to
//! back, so machine noise hits all alike. The director's per-packet cost is
//! `T(restore -> director) - T(restore -> baseline) + T(baseline alone)`: what a packet costs
//! with the director in the baseline's place, test-run overhead included as for the baseline.
//!
//! Tunnel rows: a tunnel backend pushes an outer header in front of the packet and sends it to
//! the next hop of the kernel's FIB (`bpf_fib_lookup`), which a test run looks up in the
//! measuring thread's network namespace, for the ingress interface of `ctx_in`. So these rows
//! run with the thread inside a [`FibNs`] (a namespace with `d0`, forwarding on, routes to the
//! backends and a permanent neighbour as their next hop), every run arriving on `d0`: the
//! baseline's too, in the same rounds, so that both pay the same. The restore program takes
//! the frame back to its length from the front before it writes the Ethernet header (the
//! inner packet is untouched by the encapsulation), and does so in front of the baseline too
//! (a move of 0 bytes), so its cost cancels out as it does for the other rows.
//!
//! Every row checks that it measured what its name says: the director's measured runs must
//! all be counted under the row's reason, a new-flow row's service must count one new entry a
//! run, and a known flow must be an established entry (`FLOWS`) when its row starts: its SYN
//! makes a half-open entry (`SYNS`), so the row sends the SYN and then its own packet once (the
//! client's ACK) before measuring. The thread stays on one CPU for the whole run: the restore
//! program's source ports come from a per-CPU counter, and the LRU tables keep a list per
//! CPU, so a run that moved between CPUs would meet its own earlier tuples again.
//!
//! Flood rows: "SYN into a full half-open table" fills `SYNS` to what it holds (every CPU's
//! share, written from that CPU) before each measurement, so every SYN's insert evicts; "SYN
//! over budget" sets `new_flows_per_cpu` to 1 and spends every CPU's budget before each
//! measurement, so every SYN is over budget (dropped for rr, sent to its hash's pick for mh).
//!
//! Full-table rows: the program is loaded with a connection table of 1,048,576 entries
//! (`attach --flows 1048576`). The rows "..., 1,000,000 flows in FLOWS", last in each round,
//! repeat eight rows with the table holding at least 1,000,000 established connections of
//! clients no bench packet uses (each online CPU's share written from that CPU, as the
//! half-open table is filled), counted before and after each measurement; the other rows
//! run with that fill taken out. Each is reported against its empty-table twin: its ratio
//! within 20% of the twin's.
//!
//! Katran rows (`--katran-object PATH` or `LB_BENCH_KATRAN_OBJECT`): Katran's XDP program, from
//! an object the user built from Katran's repository, in the director's place on the same
//! frames, in the same rounds, before the full-table rows (see [`katran_scenarios`] and
//! `lb_tests::packet::Katran`). Each checks Katran's action, its counters and its IPIP output;
//! the report sets each beside our rows of the same path. Without an object they are skipped,
//! saying so; an object that is given but cannot be loaded or configured fails the bench.

use std::{fmt::Write as _, net::Ipv6Addr, path::PathBuf, time::Instant};

use anyhow::{Context as _, Result, bail};
use aya::programs::ProgramFd;
use etherparse::{PacketBuilder, VlanId};
use lb_common::{Counters, Reason};
use lb_ctl::maps::loader::Sizes;
use lb_tests::packet::{
    BENCH_TUNNEL_SERVICES, BenchProgs, CLIENT_MAC, DIRECTOR_MAC, FibNs, Harness, Katran,
    KatranCounts, Pinned, TEST_SIZES, XDP_DROP, XDP_PASS, XDP_TX, bench_frame, check_ipip,
    flow_key_of, katran_flow, katran_vips, require_root, tcp6_frame,
};

/// The direct-routing services; the tunnel services ([`BENCH_TUNNEL_SERVICES`]) follow.
const CONFIG: &str = "
services:
  - { name: wrr, vip: 192.168.58.133, port: 80, scheduler: wrr,
      backends: [ { address: 192.168.58.135, weight: 3 }, { address: 192.168.58.136 } ] }
  - { name: rr, vip: 192.168.58.133, port: 81, scheduler: rr,
      backends: [ { address: 192.168.58.135 }, { address: 192.168.58.136 } ] }
  - { name: mh, vip: 192.168.58.133, port: 82, scheduler: mh,
      backends: [ { address: 192.168.58.135 }, { address: 192.168.58.136 } ] }
  - { name: sh, vip: 192.168.58.133, port: 83, scheduler: sh,
      backends: [ { address: 192.168.58.135 }, { address: 192.168.58.136 } ] }
  - { name: lc, vip: 192.168.58.133, port: 84, scheduler: lc,
      backends: [ { address: 192.168.58.135 }, { address: 192.168.58.136 } ] }
  - { name: wlc, vip: 192.168.58.133, port: 85, scheduler: wlc,
      backends: [ { address: 192.168.58.135, weight: 2 }, { address: 192.168.58.136 } ] }
  - { name: sticky, vip: 192.168.58.133, port: 86, scheduler: rr,
      persistence: { timeout: 300s },
      backends: [ { address: 192.168.58.135 }, { address: 192.168.58.136 } ] }
  - { name: dns, vip: 192.168.58.133, port: 53, protocol: udp, scheduler: rr,
      backends: [ { address: 192.168.58.135 } ] }
  - { name: wrr6, vip: \"fd00:58::133\", port: 80, scheduler: wrr,
      backends: [ { address: \"fd00:58::135\", weight: 3 }, { address: \"fd00:58::136\" } ] }
  - { name: rr6, vip: \"fd00:58::133\", port: 81, scheduler: rr,
      backends: [ { address: \"fd00:58::135\" }, { address: \"fd00:58::136\" } ] }
";

/// One measured path.
#[derive(Clone)]
struct Scenario {
    name: String,
    frame: Vec<u8>,
    /// What the director must return.
    action: u32,
    /// The reason the director must count for every measured run.
    reason: Reason,
    /// The service that must count a new entry (`new_flows`) for every measured run.
    new_entries: Option<&'static str>,
    /// What the row sets up before each measurement (and undoes after).
    setup: Setup,
    /// One line for the report, when the name does not say all the row measures.
    note: Option<&'static str>,
    /// Offset of the source port, rewritten each run to make every packet a new flow.
    vary_sport: Option<u16>,
    /// Ratio to the baseline the project aims for.
    target: Option<f64>,
    /// The SYN that opens the measured flow, run through the director before each
    /// measurement, followed by the row's own packet once (the client's ACK, which makes the
    /// entry established), in case the flow's entry went between rounds.
    opens: Option<Vec<u8>>,
    /// A tunnel backend's row: the size of the outer header (IP, and UDP for GUE) it pushes
    /// in front. Measured inside the [`FibNs`], arriving on its `d0`.
    encap: Option<usize>,
    /// A row measured with a million connections in `FLOWS` ([`Setup::FullFlows`]): the name
    /// of its twin, the same row with the table (nearly) empty.
    twin: Option<String>,
    /// A Katran row: Katran's program in the director's place, and our rows it is compared
    /// with (see [`katran_scenarios`]).
    katran: Option<KatranRow>,
}

/// What a Katran row compares: our rows doing the same, and the most our ratio may be as a
/// share of Katran's.
#[derive(Clone)]
struct KatranRow {
    ours: &'static [&'static str],
    target: Option<f64>,
}

/// What a row sets up before each measurement of the director.
#[derive(Clone, Copy)]
enum Setup {
    /// Nothing; the connection table holds only the bench's own flows (what a
    /// [`Setup::FullFlows`] row wrote is taken out first).
    Nothing,
    /// The connection table holding at least [`FULL_FLOWS`] established entries of clients no
    /// bench packet uses, written from every online CPU.
    FullFlows,
    /// The half-open table filled to what it holds, with entries of this service.
    FullSyns(&'static str),
    /// `new_flows_per_cpu` 1 and every CPU's budget spent (set back to 0 after the row).
    OverBudget,
}

struct Args {
    repeat: u32,
    rounds: usize,
    /// Only the rows whose name contains this (for profiling one path).
    only: Option<String>,
    /// Katran's `balancer.bpf.o`, built by the user from Katran's repository: its rows are
    /// timed in the same rounds. From `--katran-object`, else `LB_BENCH_KATRAN_OBJECT`.
    katran_object: Option<PathBuf>,
    /// Print each measured run's ns per packet, per program, as it is taken.
    raw: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        repeat: 1_000_000,
        rounds: 5,
        only: None,
        katran_object: std::env::var_os(KATRAN_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        raw: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--repeat" => args.repeat = value()?.parse().context("--repeat")?,
            "--rounds" => args.rounds = value()?.parse().context("--rounds")?,
            "--only" => args.only = Some(value()?),
            "--raw" => args.raw = true,
            "--katran-object" => args.katran_object = Some(PathBuf::from(value()?)),
            "--help" | "-h" => {
                println!(
                    "lb-bench [--repeat N (1000000)] [--rounds N (5)] [--only TEXT (the rows \
                     whose name contains TEXT, for profiling one path)] [--katran-object PATH \
                     (Katran's balancer.bpf.o, built from Katran's own repository with its own \
                     build: adds the Katran rows, timed in the same rounds; default: \
                     ${KATRAN_ENV}; without one the Katran rows are skipped)] [--raw (each \
                     measured run's ns per packet, per program, on stderr)]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; see --help"),
        }
    }
    if args.repeat == 0 || args.rounds == 0 {
        bail!("--repeat and --rounds must be at least 1");
    }
    Ok(args)
}

fn tcp(dport: u16, vlan: bool, syn: bool) -> Vec<u8> {
    tcp_from(CLIENT, dport, vlan, syn)
}

fn tcp_from(client: [u8; 4], dport: u16, vlan: bool, syn: bool) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC);
    let mut v = Vec::new();
    let vlan_id = VlanId::try_new(58).expect("vlan id");
    let ip = if vlan {
        eth.single_vlan(vlan_id).ipv4(client, VIP, 64)
    } else {
        eth.ipv4(client, VIP, 64)
    };
    let t = ip.tcp(CLIENT_PORT, dport, 1, 1000);
    let t = if syn { t.syn() } else { t.ack(1) };
    t.write(&mut v, &[]).expect("frame");
    v
}

/// The connection table's size for the whole bench (`attach --flows 1048576`), so that it
/// can hold [`FULL_FLOWS`] entries; the half-open table keeps the test harness's size, which
/// the flood rows fill.
const BENCH_SIZES: Sizes = Sizes {
    flows: 1 << 20,
    ..TEST_SIZES
};

/// The connections a [`Setup::FullFlows`] row's table holds before and after its runs.
const FULL_FLOWS: usize = 1_000_000;

/// How much a full-table row's ratio may exceed its empty-table twin's.
const FULL_TABLE_SLACK: f64 = 1.2;

const CLIENT: [u8; 4] = [192, 168, 58, 100];
/// The source of the ACK-without-a-connection rows: no SYN comes from it, so no ACK of those
/// rows meets the half-open entry of a new-flow row's SYN (and promotes it).
const SPOOFED: [u8; 4] = [192, 168, 58, 101];
const VIP: [u8; 4] = [192, 168, 58, 133];
/// The client's source port: outside the restore program's (1024 to 61023), so that no run of
/// a new-flow row meets the tuple of a known flow (and finds its entry instead of making one).
const CLIENT_PORT: u16 = 62000;
/// The source port's offset in an untagged IPv4 frame without options.
const SPORT: u16 = 14 + 20;
/// The same in an untagged IPv6 frame without extension headers.
const SPORT6: u16 = 14 + 40;

fn v6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, last)
}

fn tcp6(dst: Ipv6Addr, dport: u16, syn: bool) -> Vec<u8> {
    let flags = if syn { "S" } else { "A" };
    tcp6_frame(
        (CLIENT_MAC, DIRECTOR_MAC),
        (v6(0x100), CLIENT_PORT),
        (dst, dport),
        flags,
    )
}

/// The non-VIP rows' IPv4 frame: TCP to port 22 of an address that is no VIP.
fn non_vip_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4([192, 168, 58, 100], [192, 168, 58, 134], 64)
        .tcp(CLIENT_PORT, 22, 1, 1000)
        .ack(1)
        .write(&mut frame, &[])
        .expect("frame");
    frame
}

/// The UDP rows' frame: a query to the VIP's port 53.
fn udp_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4([192, 168, 58, 100], VIP, 64)
        .udp(5353, 53)
        .write(&mut frame, b"query")
        .expect("frame");
    frame
}

fn scenarios() -> Vec<Scenario> {
    let non_vip_frame = non_vip_frame();
    let udp = udp_frame();
    let known = |name: &str, frame, opens| Scenario {
        name: name.to_string(),
        frame,
        action: XDP_TX,
        reason: Reason::Forwarded,
        new_entries: None,
        setup: Setup::Nothing,
        note: None,
        vary_sport: None,
        target: None,
        opens: Some(opens),
        encap: None,
        twin: None,
        katran: None,
    };
    let new_flow = |name: &str, port, target, service| Scenario {
        name: name.to_string(),
        frame: tcp(port, false, true),
        action: XDP_TX,
        reason: Reason::Forwarded,
        new_entries: Some(service),
        setup: Setup::Nothing,
        note: None,
        vary_sport: Some(SPORT),
        target,
        opens: None,
        encap: None,
        twin: None,
        katran: None,
    };
    let non_vip = |name: &str, frame| Scenario {
        name: name.to_string(),
        frame,
        action: XDP_PASS,
        reason: Reason::PassNotVip,
        new_entries: None,
        setup: Setup::Nothing,
        note: None,
        vary_sport: None,
        target: None,
        opens: None,
        encap: None,
        twin: None,
        katran: None,
    };
    // Each IPv6 row follows its IPv4 twin.
    let mut rows = vec![
        Scenario {
            target: Some(1.5),
            ..non_vip("non-VIP traffic (XDP_PASS)", non_vip_frame)
        },
        non_vip(
            "IPv6: non-VIP traffic (XDP_PASS)",
            tcp6(v6(0x134), 22, false),
        ),
        Scenario {
            target: Some(2.0),
            note: Some(
                "the known-flow rows send the flow's SYN and one ACK first: their packets hit \
                 an established entry of the connection table (FLOWS), not a half-open one",
            ),
            ..known(
                "known flow (connection-table hit), TCP",
                tcp(80, false, false),
                tcp(80, false, true),
            )
        },
        known(
            "IPv6: known flow, TCP",
            tcp6(v6(0x133), 80, false),
            tcp6(v6(0x133), 80, true),
        ),
        Scenario {
            target: Some(2.0),
            ..known("known flow, UDP", udp.clone(), udp)
        },
        Scenario {
            target: Some(2.0),
            ..known(
                "known flow, TCP in 802.1Q",
                tcp(80, true, false),
                tcp(80, true, true),
            )
        },
        Scenario {
            target: Some(1.5),
            note: Some(
                "a known TCP flow of the mh service, whose lookup table does not change during \
                 the run",
            ),
            ..known(
                "known flow, mh (stable table)",
                tcp(82, false, false),
                tcp(82, false, true),
            )
        },
        Scenario {
            note: Some(
                "the new-flow rows send a SYN of a new tuple each run: each makes a half-open \
                 entry (SYNS, 4,096 slots in buckets of four), which evicts its bucket's oldest \
                 once the bucket is full",
            ),
            ..new_flow("new flow, rr", 81, Some(6.0), "rr")
        },
        Scenario {
            frame: tcp6(v6(0x133), 81, true),
            vary_sport: Some(SPORT6),
            ..new_flow("IPv6: new flow, rr", 81, None, "rr6")
        },
        new_flow("new flow, wrr", 80, Some(6.0), "wrr"),
        new_flow("new flow, mh", 82, Some(6.0), "mh"),
        new_flow("new flow, sh", 83, Some(6.0), "sh"),
        new_flow("new flow, lc", 84, Some(6.0), "lc"),
        new_flow("new flow, wlc", 85, Some(6.0), "wlc"),
        new_flow("new flow, persistence hit", 86, Some(6.0), "sticky"),
        // A SYN flood's steady state: every SYN evicts a half-open entry.
        Scenario {
            setup: Setup::FullSyns("rr"),
            note: Some(
                "the half-open table (SYNS) filled before each measurement, every slot: every \
                 SYN makes a half-open entry and evicts its bucket's least recently seen one",
            ),
            ..new_flow(
                "new flow, rr, SYN into a full half-open table",
                81,
                None,
                "rr",
            )
        },
        Scenario {
            setup: Setup::FullSyns("mh"),
            note: Some("the same for mh, whose SYN also makes a half-open entry"),
            ..new_flow(
                "new flow, mh, SYN into a full half-open table",
                82,
                None,
                "mh",
            )
        },
        // The budget of new entries spent: rr cannot place a flow without an entry and drops,
        // mh sends the SYN to its hash's pick without one.
        Scenario {
            action: XDP_DROP,
            reason: Reason::DropOverBudget,
            new_entries: None,
            setup: Setup::OverBudget,
            note: Some(
                "new_flows_per_cpu 1 and the CPU's budget spent before each measurement: \
                 every SYN is dropped without an entry",
            ),
            ..new_flow(
                "new flow, rr, SYN over budget (drop_over_budget)",
                81,
                None,
                "rr",
            )
        },
        Scenario {
            reason: Reason::ForwardedOverBudget,
            new_entries: None,
            setup: Setup::OverBudget,
            note: Some("the same for mh: every SYN goes to its Maglev pick without an entry"),
            ..new_flow(
                "new flow, mh, SYN over budget (forwarded_over_budget)",
                82,
                None,
                "mh",
            )
        },
        // A TCP ACK of no known connection, a new tuple each time (a spoofed flood).
        Scenario {
            frame: tcp_from(SPOOFED, 82, false, false),
            reason: Reason::ForwardedStateless,
            new_entries: None,
            ..new_flow(
                "ACK without a connection, mh (forwarded_stateless)",
                82,
                None,
                "mh",
            )
        },
        Scenario {
            frame: tcp_from(SPOOFED, 81, false, false),
            action: XDP_DROP,
            reason: Reason::DropNoFlow,
            new_entries: None,
            ..new_flow(
                "ACK without a connection, rr (drop_no_flow)",
                81,
                None,
                "rr",
            )
        },
        // Tunnel backends (BENCH_TUNNEL_SERVICES): IPv4 outer headers of 20 bytes (IPIP) and
        // 28 (IPv4 + UDP, GUE), an IPv6 one of 40.
        Scenario {
            encap: Some(20),
            ..known(
                "tunnel IPIP known flow",
                tcp(90, false, false),
                tcp(90, false, true),
            )
        },
        Scenario {
            encap: Some(20),
            ..new_flow("tunnel IPIP new flow (rr)", 91, None, "ipip-rr")
        },
        Scenario {
            encap: Some(28),
            ..known(
                "tunnel GUE known flow",
                tcp(92, false, false),
                tcp(92, false, true),
            )
        },
        Scenario {
            encap: Some(40),
            ..known(
                "tunnel 6in6 known flow",
                tcp6(v6(0x133), 90, false),
                tcp6(v6(0x133), 90, true),
            )
        },
    ];
    // The same rows with a million connections in the table, last in each round: the table
    // is filled once before the first of them and emptied of the fill before the next round's
    // other rows.
    let full: Vec<Scenario> = FULL_TWINS
        .iter()
        .map(|twin| {
            let sc = rows
                .iter()
                .find(|r| r.name == *twin)
                .unwrap_or_else(|| panic!("no row {twin:?} to measure with a full table"));
            with_full_flows(sc)
        })
        .collect();
    rows.extend(full);
    rows
}

/// The rows measured again with [`FULL_FLOWS`] connections in the table.
const FULL_TWINS: [&str; 8] = [
    "non-VIP traffic (XDP_PASS)",
    "known flow (connection-table hit), TCP",
    "known flow, UDP",
    "known flow, TCP in 802.1Q",
    "known flow, mh (stable table)",
    "new flow, rr",
    "new flow, mh",
    "new flow, persistence hit",
];

/// `sc` measured with [`FULL_FLOWS`] connections in the table: judged against `sc` (within
/// [`FULL_TABLE_SLACK`] of its ratio) rather than by a target of its own.
fn with_full_flows(sc: &Scenario) -> Scenario {
    Scenario {
        name: format!("{}, 1,000,000 flows in FLOWS", sc.name),
        setup: Setup::FullFlows,
        target: None,
        note: (sc.name == FULL_TWINS[0]).then_some(
            "the rows \"..., 1,000,000 flows in FLOWS\" run with the connection table \
             (1,048,576 entries) holding at least 1,000,000 established connections of other \
             clients, written from every CPU, before and after each measurement",
        ),
        twin: Some(sc.name.clone()),
        ..sc.clone()
    }
}

/// Katran's VIPs: TCP port [`KATRAN_TCP_PORT`] and UDP port 53 of [`VIP`], the same address
/// and ports as our rows' services, so that the same frames serve both.
const KATRAN_TCP_PORT: u16 = 80;
const KATRAN_UDP_PORT: u16 = 53;

/// Where `lb-bench` looks for Katran's object when `--katran-object` is not given.
const KATRAN_ENV: &str = "LB_BENCH_KATRAN_OBJECT";

/// What the report says in place of the Katran rows without an object.
const KATRAN_SKIPPED: &str = "no Katran object given; build Katran's balancer.bpf.o with clang \
                              and pass --katran-object PATH";

/// Katran's rows: the frames of our rows of the same name, Katran's program in the director's
/// place. A known flow is opened as ours are (its SYN, then its own packet once); the new-flow
/// row sends a SYN of a new source port each run, written by the restore program as for our
/// new-flow rows. Katran encapsulates what it forwards (IPIP, a 20-byte outer header the
/// restore program takes off before the next run, in front of the baseline too).
fn katran_scenarios() -> Vec<Scenario> {
    let row = |name: &str, frame: Vec<u8>, action, ours, target| Scenario {
        name: format!("Katran: {name}"),
        frame,
        action,
        reason: Reason::Forwarded,
        new_entries: None,
        setup: Setup::Nothing,
        note: None,
        vary_sport: None,
        target: None,
        opens: None,
        encap: None,
        twin: None,
        katran: Some(KatranRow { ours, target }),
    };
    let tcp_port = KATRAN_TCP_PORT;
    vec![
        row(
            "non-VIP traffic",
            non_vip_frame(),
            XDP_PASS,
            &["non-VIP traffic (XDP_PASS)"],
            None,
        ),
        Scenario {
            opens: Some(tcp(tcp_port, false, true)),
            note: Some(
                "Katran's rows: the same frames as our rows, Katran's balancer_ingress in the \
                 director's place; Katran encapsulates every forwarded packet in IPIP (an outer \
                 IPv4 header to the real) where we rewrite MACs; its connection table is an LRU \
                 per CPU (lru_mapping), our FLOWS' size divided among the online CPUs",
            ),
            ..row(
                "known flow, TCP",
                tcp(tcp_port, false, false),
                XDP_TX,
                &["known flow (connection-table hit), TCP"],
                Some(0.5),
            )
        },
        Scenario {
            vary_sport: Some(SPORT),
            note: Some(
                "a SYN of a new source port each run (Katran looks no SYN up in its table: it \
                 hashes into the VIP's ring and writes the flow to its LRU); its \
                 new-connection window is started afresh before each measurement, and the \
                 SYNs beyond its new-connection limit a second (its SYN-flood mode: no LRU \
                 write) are reported",
            ),
            ..row(
                "new flow, TCP",
                tcp(tcp_port, false, true),
                XDP_TX,
                &["new flow, mh", "new flow, rr"],
                Some(0.5),
            )
        },
        Scenario {
            opens: Some(udp_frame()),
            ..row(
                "known flow, UDP",
                udp_frame(),
                XDP_TX,
                &["known flow, UDP"],
                Some(0.5),
            )
        },
    ]
}

/// Loads Katran's object for its rows: `None` (saying so on stderr) when none is given or the
/// file does not exist; an error when it is there but cannot be loaded or configured.
fn load_katran(args: &Args) -> Result<Option<(Katran, String)>> {
    let Some(path) = &args.katran_object else {
        eprintln!("Katran rows skipped: {KATRAN_SKIPPED}");
        return Ok(None);
    };
    if !path.exists() {
        eprintln!(
            "Katran rows skipped: no Katran object at {} ({KATRAN_ENV} or --katran-object); \
             build Katran's balancer.bpf.o with clang and pass --katran-object PATH",
            path.display()
        );
        return Ok(None);
    }
    let vips = katran_vips(VIP, KATRAN_TCP_PORT, KATRAN_UDP_PORT);
    let k = Katran::load(path, &vips, BENCH_SIZES.flows).with_context(|| {
        format!(
            "Katran's object {} was given but cannot be used (drop --katran-object and \
             {KATRAN_ENV} to run without the Katran rows)",
            path.display()
        )
    })?;
    eprintln!(
        "==> Katran from {}: RING_SIZE {}, a connection table of {} entries per online CPU",
        path.display(),
        k.ring_size,
        k.lru_entries
    );
    // The report names the file only: where it lies is the user's business.
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    Ok(Some((k, file)))
}

/// Opens a Katran row's flow (its `opens` frame, then its own packet once), with a fresh
/// new-connection window, and checks the flow is in the CPU's connection table.
fn open_katran_flow(k: &mut Katran, cpu: u32, sc: &Scenario, first: &[u8]) -> Result<()> {
    let name = &sc.name;
    k.reset_conn_rate(cpu)?;
    for (what, frame) in [
        ("the packet that opens the flow", first),
        ("its first packet", &sc.frame),
    ] {
        let (action, out) = k.run(frame)?;
        if action != XDP_TX {
            bail!("{name}: {what} returned {action}, expected {XDP_TX}");
        }
        check_ipip(frame, &out).with_context(|| format!("{name}: {what}"))?;
    }
    let flow = katran_flow(&sc.frame)?;
    if k.lru_entry(cpu, &flow).is_none() {
        bail!("{name}: the flow is not in CPU {cpu}'s connection table after its first packets");
    }
    Ok(())
}

/// Whether Katran's `repeat` measured runs did what the row says (counters grown by `d`):
/// every run counted as passed for a non-VIP row; forwarded, through the per-CPU connection
/// table (no fallback) and found there for a known flow; forwarded and a miss of a SYN for
/// the new-flow row.
fn check_katran(sc: &Scenario, d: &KatranCounts, repeat: u32) -> Result<()> {
    let n = u64::from(repeat);
    let name = &sc.name;
    let ok = match (sc.action, sc.vary_sport.is_some()) {
        (XDP_PASS, _) => d.pass == n && d.total == n && d.lru == 0,
        (XDP_TX, false) => {
            d.tx == n && d.total == n && d.lru == n && d.lru_misses == 0 && d.fallback == 0
        }
        (XDP_TX, true) => {
            d.tx == n
                && d.total == n
                && d.lru == n
                && d.lru_misses == n
                && d.syn_misses == n
                && d.fallback == 0
                && d.ch_drops == 0
        }
        _ => false,
    };
    if !ok {
        bail!("{name}: Katran's {repeat} measured runs counted {d:?}");
    }
    Ok(())
}

/// Opens a known flow's connection as a client does: its SYN (a half-open entry), then the
/// row's own packet once (the client's ACK, which makes it established). Run before each
/// measurement, in case the entry went between rounds; the flow must then be an established
/// entry of `FLOWS` and not in `SYNS`.
fn open_flow(
    h: &mut Harness,
    name: &str,
    syn: &[u8],
    data: &[u8],
    ifindex: Option<u32>,
) -> Result<()> {
    for (what, frame) in [
        ("the SYN that opens the flow", syn),
        ("its first packet", data),
    ] {
        let action = match ifindex {
            Some(i) => h.run_on(i, frame).action,
            None => h.run(frame).action,
        };
        if action != XDP_TX {
            bail!("{name}: {what} returned {action}, expected {XDP_TX}");
        }
    }
    let key = flow_key_of(data).with_context(|| format!("{name}: the flow's key"))?;
    if !h.in_flows(&key) || h.in_syns(&key) {
        bail!(
            "{name}: after its SYN and first packet the flow is {} the connection table and {} \
             the half-open table; expected an established entry only",
            if h.in_flows(&key) { "in" } else { "not in" },
            if h.in_syns(&key) { "in" } else { "not in" },
        );
    }
    Ok(())
}

/// Sets up what the row needs before its measurements. A row that makes entries, or is over
/// the budget, starts with an empty half-open table, so that none of its SYNs meets the entry
/// of an earlier row's or round's SYN (and finds it instead of making one, or instead of being
/// over the budget); its table is full again after the CPU's share of inserts (its capacity
/// divided by the possible CPUs). A full-table row finds the connection table holding
/// [`FULL_FLOWS`] (filled when it does not: `filled` says whether the fill is in the table);
/// any other row finds it without the fill.
fn prepare(h: &mut Harness, sc: &Scenario, filled: &mut bool) -> Result<()> {
    if sc.new_entries.is_some() || matches!(sc.setup, Setup::OverBudget) {
        h.clear_half_open()
            .with_context(|| format!("{}: emptying the half-open table", sc.name))?;
    }
    if *filled && !matches!(sc.setup, Setup::FullFlows) {
        let t = Instant::now();
        let n = h
            .clear_flow_fill()
            .with_context(|| format!("{}: taking the fill out of FLOWS", sc.name))?;
        eprintln!(
            "    took {n} filled connections out of FLOWS ({:.1?})",
            t.elapsed()
        );
        *filled = false;
    }
    match sc.setup {
        Setup::Nothing => {}
        Setup::FullFlows => {
            let held = h.established_count();
            if held < FULL_FLOWS {
                fill_flows(h, &sc.name)?;
                *filled = true;
            }
            let held = h.established_count();
            if held < FULL_FLOWS {
                bail!(
                    "{}: the connection table holds {held} entries after filling it, fewer \
                     than {FULL_FLOWS} (it can hold {} from the online CPUs)",
                    sc.name,
                    h.flows_reachable()?
                );
            }
        }
        Setup::FullSyns(service) => {
            h.fill_syns(service)
                .with_context(|| format!("{}: filling the half-open table", sc.name))?;
            if !h.syns_full()? {
                bail!(
                    "{}: the half-open table holds {} of {} entries after filling it",
                    sc.name,
                    h.half_open_count(),
                    h.syns_reachable()?
                );
            }
        }
        Setup::OverBudget => {
            h.set_new_flows_per_cpu(1)?;
            h.spend_budget()?;
        }
    }
    Ok(())
}

/// Fills the connection table from every online CPU, saying how far it got on stderr.
fn fill_flows(h: &mut Harness, name: &str) -> Result<()> {
    let reachable = h.flows_reachable()?;
    if reachable < FULL_FLOWS {
        bail!(
            "{name}: the connection table can hold {reachable} entries from the online CPUs \
             (its {} divided among the possible CPUs), fewer than {FULL_FLOWS}",
            h.flow_capacity()
        );
    }
    let t = Instant::now();
    eprintln!(
        "    filling FLOWS ({} entries) from every online CPU",
        h.flow_capacity()
    );
    h.fill_flows("rr", &mut |done, total| {
        eprintln!("      {done} of {total} written ({:.1?})", t.elapsed());
    })
    .with_context(|| format!("{name}: filling the connection table"))?;
    Ok(())
}

/// The counters a row's check compares, read before its measured run.
struct Seen {
    reasons: Vec<(Reason, u64)>,
    service: Option<Counters>,
}

impl Seen {
    fn read(h: &Harness, sc: &Scenario) -> Result<Seen> {
        Ok(Seen {
            reasons: h.reason_counts()?,
            service: sc.new_entries.map(|s| h.service_counters(s)),
        })
    }
}

/// Whether the director's `repeat` measured runs did what the row says: every run counted
/// under the row's reason (a budget row may have had one run per second within its budget,
/// counted `forwarded`), one new entry per run for a new-flow row, the half-open table still
/// full for a full-table row.
fn check(
    h: &Harness,
    sc: &Scenario,
    before: &Seen,
    repeat: u32,
    elapsed: std::time::Duration,
) -> Result<()> {
    let name = &sc.name;
    let grew: Vec<(Reason, u64)> = h
        .reason_counts()?
        .into_iter()
        .zip(&before.reasons)
        .map(|((r, after), (_, b))| (r, after - b))
        .filter(|(_, n)| *n != 0)
        .collect();
    let of = |reason| {
        grew.iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    };
    let total: u64 = grew.iter().map(|(_, n)| n).sum();
    let repeat = u64::from(repeat);
    // A budget of 1 a second: each new window lets one SYN through.
    let slack = match sc.setup {
        Setup::OverBudget => elapsed.as_secs() + 1,
        _ => 0,
    };
    let counted = of(sc.reason);
    let within_budget = of(Reason::Forwarded);
    let ok = total == repeat
        && counted + slack >= repeat
        && (counted == repeat || counted + within_budget == repeat);
    if !ok {
        let list: Vec<String> = grew
            .iter()
            .map(|(r, n)| format!("{} {n}", r.name()))
            .collect();
        bail!(
            "{name}: {repeat} measured runs counted {}; expected {} {repeat}",
            list.join(", "),
            sc.reason.name()
        );
    }
    if let (Some(service), Some(b)) = (sc.new_entries, before.service) {
        let made = h.service_counters(service).new_flows - b.new_flows;
        if made != repeat {
            bail!("{name}: {repeat} measured runs made {made} new entries of {service}");
        }
    }
    if let Setup::FullFlows = sc.setup {
        let held = h.established_count();
        if held < FULL_FLOWS {
            bail!(
                "{name}: the connection table holds {held} entries after the runs, fewer than {FULL_FLOWS}"
            );
        }
    }
    if let Setup::FullSyns(_) = sc.setup
        && !h.syns_full()?
    {
        bail!(
            "{name}: the half-open table holds {} of {} entries after the runs",
            h.half_open_count(),
            h.syns_reachable()?
        );
    }
    Ok(())
}

/// Each full-table row against its twin: both ratios, full / empty, and whether it is within
/// [`FULL_TABLE_SLACK`].
fn full_table_rows(scenarios: &[Scenario], ratio_of: &[(&str, f64)]) -> Vec<serde_json::Value> {
    let ratio = |name: &str| ratio_of.iter().find(|(n, _)| *n == name).map(|(_, r)| *r);
    scenarios
        .iter()
        .filter_map(|sc| {
            let twin = sc.twin.as_deref()?;
            let (full, empty) = (ratio(&sc.name)?, ratio(twin)?);
            let relative = full / empty;
            Some(serde_json::json!({
                "path": sc.name,
                "twin": twin,
                "ratio": full,
                "twin_ratio": empty,
                "relative": relative,
                "slack": FULL_TABLE_SLACK,
                "met": relative <= FULL_TABLE_SLACK,
            }))
        })
        .collect()
}

/// The full-table rows as a Markdown table (also what `lb-bench-report` writes).
fn full_table_md(rows: &[serde_json::Value]) -> String {
    let mut md = String::from(
        "| path, with 1,000,000 flows in FLOWS | ratio | empty-table ratio | full / empty | within 20% |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {:.2}x | {:.2}x | {:.2} | {} |",
            r["twin"].as_str().unwrap_or("?"),
            r["ratio"].as_f64().unwrap_or(f64::NAN),
            r["twin_ratio"].as_f64().unwrap_or(f64::NAN),
            r["relative"].as_f64().unwrap_or(f64::NAN),
            if r["met"].as_bool() == Some(true) {
                "met"
            } else {
                "not met"
            },
        );
    }
    md
}

/// Each Katran row against our rows of the same path: both ratios and ns, ours / Katran's,
/// and whether that is within the row's target.
fn katran_rows(
    scenarios: &[Scenario],
    rows: &[serde_json::Value],
    over_limit: &[Vec<u64>],
) -> Vec<serde_json::Value> {
    let row = |name: &str| rows.iter().find(|r| r["path"].as_str() == Some(name));
    scenarios
        .iter()
        .enumerate()
        .filter_map(|(si, sc)| {
            let kr = sc.katran.as_ref()?;
            let theirs = row(&sc.name)?;
            let kratio = theirs["ratio"].as_f64()?;
            let ours: Vec<serde_json::Value> = kr
                .ours
                .iter()
                .filter_map(|name| {
                    let r = row(name)?;
                    let ratio = r["ratio"].as_f64()?;
                    let relative = ratio / kratio;
                    Some(serde_json::json!({
                        "path": name,
                        "ratio": ratio,
                        "ns": r["director_ns"]["median"],
                        "relative": relative,
                        "met": kr.target.map(|t| relative <= t),
                    }))
                })
                .collect();
            Some(serde_json::json!({
                "path": sc.name,
                "ratio": kratio,
                "ns": theirs["director_ns"]["median"],
                "baseline_ns": theirs["baseline_ns"],
                "target": kr.target,
                "ours": ours,
                "over_conn_rate_limit": (!over_limit[si].is_empty()).then(|| over_limit[si].clone()),
            }))
        })
        .collect()
}

/// The Katran rows as a Markdown table (also what `lb-bench-report` writes).
fn katran_md(rows: &[serde_json::Value]) -> String {
    let mut md = String::from(
        "| Katran row | Katran ratio (ns) | our row | our ratio (ns) | ours / Katran | target |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        for o in r["ours"].as_array().into_iter().flatten() {
            let verdict = match (r["target"].as_f64(), o["met"].as_bool()) {
                (Some(t), Some(true)) => format!("<= {t}: met"),
                (Some(t), _) => format!("<= {t}: not met"),
                _ => "-".to_string(),
            };
            let _ = writeln!(
                md,
                "| {} | {:.2}x ({:.1}) | {} | {:.2}x ({:.1}) | {:.2} | {verdict} |",
                r["path"].as_str().unwrap_or("?"),
                r["ratio"].as_f64().unwrap_or(f64::NAN),
                r["ns"].as_f64().unwrap_or(f64::NAN),
                o["path"].as_str().unwrap_or("?"),
                o["ratio"].as_f64().unwrap_or(f64::NAN),
                o["ns"].as_f64().unwrap_or(f64::NAN),
                o["relative"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    for r in rows {
        if let Some(over) = r["over_conn_rate_limit"].as_array() {
            let over: Vec<String> = over.iter().map(|n| n.to_string()).collect();
            let _ = writeln!(
                md,
                "- {}: SYNs of each round's measured run beyond Katran's new-connection limit \
                 (no LRU write): {}",
                r["path"].as_str().unwrap_or("?"),
                over.join(", ")
            );
        }
    }
    md
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() -> Result<()> {
    let args = parse_args()?;
    require_root();
    // One CPU for the whole run (see the module's doc).
    let pinned = Pinned::here().context("pinning the bench to one CPU")?;
    eprintln!("==> every run on CPU {}", pinned.cpu);
    let started = Instant::now();
    let mut h =
        Harness::with_config_sized(&format!("{CONFIG}{BENCH_TUNNEL_SERVICES}"), &BENCH_SIZES);
    let insns = h
        .program()
        .info()
        .context("program info")?
        .verified_instruction_count();
    let director: ProgramFd = h.director_fd()?;
    let ns = FibNs::new().context("creating the namespace of the tunnel rows")?;
    h.register_iface(ns.ifindex);

    let mut bench = BenchProgs::load()?;
    let baseline = bench.baseline()?;
    let mut katran = load_katran(&args)?;
    let katran_fd = match &mut katran {
        Some((k, _)) => Some(k.fd()?),
        None => None,
    };
    // Katran's new-connection limit a second on this CPU (its SYN-flood threshold).
    let conn_rate_limit = match &mut katran {
        Some((k, _)) => {
            let mut syn = tcp(KATRAN_TCP_PORT, false, true);
            // A port of no row's flow.
            syn[SPORT as usize..SPORT as usize + 2].copy_from_slice(&61999u16.to_be_bytes());
            let limit = k
                .conn_rate_limit(pinned.cpu, &syn)
                .context("finding Katran's new-connection limit")?;
            eprintln!(
                "    Katran's new-connection limit: {} a second per CPU",
                limit.map_or("none below 2^32".to_string(), |l| l.to_string())
            );
            limit
        }
        None => None,
    };

    // None = the baseline alone, without restore.
    let targets: [(&str, Option<&ProgramFd>); 3] = [
        ("baseline alone", None),
        ("restore -> baseline", Some(&baseline)),
        ("restore -> director", Some(&director)),
    ];
    let mut all = scenarios();
    if katran.is_some() {
        // Before the full-table rows, which stay last in each round.
        let at = all
            .iter()
            .position(|s| s.twin.is_some())
            .unwrap_or(all.len());
        all.splice(at..at, katran_scenarios());
    }
    let scenarios: Vec<Scenario> = all
        .into_iter()
        .filter(|s| {
            args.only
                .as_ref()
                .is_none_or(|o| s.name.contains(o.as_str()))
        })
        .collect();
    // times[scenario][target] = ns per packet, one per round
    let mut times = vec![vec![Vec::new(); targets.len()]; scenarios.len()];
    eprintln!(
        "==> {} scenarios x {} programs x {} rounds of {} packets",
        scenarios.len(),
        targets.len(),
        args.rounds,
        args.repeat
    );
    // Whether the full-table rows' fill is in the connection table.
    let mut filled = false;
    // Per Katran new-flow row and round: of its measured SYNs, those over Katran's
    // new-connection limit (no LRU write).
    let mut over_limit: Vec<Vec<u64>> = vec![Vec::new(); scenarios.len()];
    for round in 0..args.rounds {
        for (si, sc) in scenarios.iter().enumerate() {
            let (name, data, want) = (sc.name.as_str(), &sc.frame, sc.action);
            // A tunnel row: this thread inside the namespace, every run arriving on its d0.
            let _inside = match sc.encap {
                Some(_) => Some(
                    ns.enter()
                        .with_context(|| format!("{name}: entering {}", ns.name))?,
                ),
                None => None,
            };
            let ifindex = sc.encap.map(|_| ns.ifindex);
            // What the program under test pushes in front: a tunnel row's outer header, the
            // IPIP header of what Katran forwards.
            let outer = match &sc.katran {
                Some(_) => (want == XDP_TX).then_some(20),
                None => sc.encap,
            };
            bench.set_frame(bench_frame(data, sc.vary_sport, outer.is_some())?)?;
            // The program under test in the director's place.
            let under: &ProgramFd = match (&sc.katran, &mut katran, &katran_fd) {
                (None, _, _) => &director,
                (Some(_), Some((k, _)), Some(fd)) => {
                    if let Some(first) = &sc.opens {
                        open_katran_flow(k, pinned.cpu, sc, first)?;
                    }
                    fd
                }
                (Some(_), _, _) => bail!("{name}: a Katran row without Katran loaded"),
            };
            if sc.katran.is_none() {
                // The table's fill first: a flow opened before it would be the fill's to
                // evict (each CPU's LRU share takes a million inserts).
                prepare(&mut h, sc, &mut filled)?;
                if let Some(syn) = &sc.opens {
                    open_flow(&mut h, name, syn, data, ifindex)?;
                }
            }
            for (ti, (tname, fd)) in targets.iter().enumerate() {
                let director = ti == 2;
                let fd = if director { Some(under) } else { *fd };
                let expect = if director { want } else { XDP_TX };
                // What the last run leaves: the frame as it came, or encapsulated once.
                let want_len = data.len() + if director { outer.unwrap_or(0) } else { 0 };
                // One warm-up packet first: the first packet of a flow creates its entry.
                for repeat in [1, args.repeat] {
                    let measured = repeat == args.repeat;
                    let before = if director && measured && sc.katran.is_none() {
                        if let Setup::OverBudget = sc.setup {
                            // A fresh window, so the whole run falls in it (or in few).
                            h.spend_budget()?;
                        }
                        Some(Seen::read(&h, sc)?)
                    } else {
                        None
                    };
                    let katran_before = match (&mut katran, director && measured) {
                        (Some((k, _)), true) if sc.katran.is_some() => {
                            if sc.vary_sport.is_some() {
                                k.reset_conn_rate(pinned.cpu)?;
                            }
                            Some(k.counts()?)
                        }
                        _ => None,
                    };
                    let run_started = Instant::now();
                    let r = bench.run(fd, data, repeat, ifindex)?;
                    let elapsed = run_started.elapsed();
                    let tname = match (&sc.katran, director) {
                        (Some(_), true) => "restore -> Katran",
                        _ => tname,
                    };
                    if r.action != expect {
                        bail!("{name}: {tname} returned {}, expected {expect}", r.action);
                    }
                    if outer.is_some() && r.data.len() != want_len {
                        bail!(
                            "{name}: {tname} left a frame of {} bytes after {repeat} runs, \
                             expected {want_len}",
                            r.data.len()
                        );
                    }
                    if let Some(before) = before {
                        check(&h, sc, &before, repeat, elapsed)?;
                    }
                    if let (Some(b), Some((k, _))) = (katran_before, &mut katran) {
                        check_katran(sc, &k.counts()?.since(&b), repeat)?;
                        if want == XDP_TX {
                            check_ipip(data, &r.data).with_context(|| {
                                format!("{name}: the last packet Katran forwarded")
                            })?;
                        }
                        if sc.vary_sport.is_some() {
                            let counted = k.conn_rate_count(pinned.cpu)?;
                            over_limit[si]
                                .push(conn_rate_limit.map_or(0, |l| counted.saturating_sub(l)));
                        }
                    }
                    if measured {
                        if args.raw {
                            eprintln!(
                                "    round {}: {name}: {tname}: {} ns",
                                round + 1,
                                r.per_packet.as_nanos()
                            );
                        }
                        times[si][ti].push(r.per_packet.as_nanos() as f64);
                    }
                }
            }
            if let Setup::OverBudget = sc.setup {
                h.set_new_flows_per_cpu(0)?;
            }
        }
        eprintln!(
            "    round {}/{} done ({:.0?})",
            round + 1,
            args.rounds,
            started.elapsed()
        );
    }

    let mut table = String::new();
    let _ = writeln!(
        table,
        "| path | director ns/pkt (min / median / max) | XDP_TX baseline ns/pkt | ratio (median) | target |"
    );
    let _ = writeln!(table, "| --- | --- | --- | --- | --- |");
    let mut rows = Vec::new();
    // Each row's median ratio, for the full-table rows' comparison with their twins.
    let mut ratio_of: Vec<(&str, f64)> = Vec::new();
    for (si, sc) in scenarios.iter().enumerate() {
        let t = &times[si];
        // Per round: the director in the baseline's place, and the baseline alone.
        let director: Vec<f64> = (0..args.rounds)
            .map(|r| t[2][r] - t[1][r] + t[0][r])
            .collect();
        let ratios: Vec<f64> = (0..args.rounds).map(|r| director[r] / t[0][r]).collect();
        let (dmin, dmed, dmax) = stats(director);
        let (_, bmed, _) = stats(t[0].clone());
        let (_, rmed, _) = stats(ratios);
        ratio_of.push((&sc.name, rmed));
        let met = sc.target.map(|t| rmed <= t);
        let verdict = match (sc.target, met) {
            (Some(t), Some(true)) => format!("<= {t}x: met"),
            (Some(t), _) => format!("<= {t}x: not met"),
            _ => String::new(),
        };
        let _ = writeln!(
            table,
            "| {} | {dmin:.1} / {dmed:.1} / {dmax:.1} | {bmed:.1} | {rmed:.2}x | {verdict} |",
            sc.name
        );
        rows.push(serde_json::json!({
            "path": sc.name,
            "director_ns": { "min": dmin, "median": dmed, "max": dmax },
            "baseline_ns": bmed,
            "ratio": rmed,
            "target": sc.target,
            "met": met,
            "tunnel": sc.encap.is_some(),
            "katran": sc.katran.is_some(),
            "note": sc.note,
        }));
    }
    let full_table = full_table_rows(&scenarios, &ratio_of);
    let katran_json = match &katran {
        Some((k, path)) => {
            let rows = katran_rows(&scenarios, &rows, &over_limit);
            println!("{}", katran_md(&rows));
            serde_json::json!({
                "object": path,
                "ring_size": k.ring_size,
                "lru_entries_per_cpu": k.lru_entries,
                "conn_rate_limit": conn_rate_limit,
                "rows": rows,
            })
        }
        None => {
            let skipped = match &args.katran_object {
                Some(p) => format!("no Katran object at {}", p.display()),
                None => KATRAN_SKIPPED.to_string(),
            };
            println!("Katran in the same run: skipped: {skipped}\n");
            serde_json::json!({ "skipped": skipped })
        }
    };
    for sc in &scenarios {
        if let Some(note) = sc.note {
            let _ = writeln!(table, "- {}: {note}", sc.name);
        }
    }
    println!("{table}");
    println!("{}", full_table_md(&full_table));
    println!(
        "verifier: {} instructions processed for the director program",
        insns.map_or("unknown".to_string(), |n| n.to_string())
    );
    let results = lb_tests::bench_results_dir();
    let json = serde_json::json!({
        "repeat": args.repeat,
        "rounds": args.rounds,
        "verified_insns": insns,
        "rows": rows,
        "full_table": full_table,
        "katran": katran_json,
    });
    let out = results.join("datapath.json");
    lb_tests::write_bench_json(&out, &json)?;
    eprintln!("==> wrote {}", out.display());
    Ok(())
}
