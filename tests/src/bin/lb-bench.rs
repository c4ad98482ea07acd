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

use std::{
    fmt::Write as _,
    net::Ipv6Addr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    EbpfLoader,
    maps::{Array, MapData, ProgramArray},
    programs::{ProgramFd, TestRun, TestRunOptions, Xdp},
};
use etherparse::{PacketBuilder, VlanId};
use lb_common::BenchFrame;
use lb_ctl::maps::loader::{self, BENCH_OBJECT};
use lb_tests::packet::{
    CLIENT_MAC, DIRECTOR_MAC, Harness, XDP_DROP, XDP_PASS, XDP_TX, require_root, tcp6_frame,
};

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
struct Scenario {
    name: &'static str,
    frame: Vec<u8>,
    /// What the director must return.
    action: u32,
    /// Offset of the source port, rewritten each run to make every packet a new flow.
    vary_sport: Option<u16>,
    /// Ratio to the baseline the project aims for.
    target: Option<f64>,
    /// The SYN that opens the measured flow, run through the director before each
    /// measurement: the new-flow rows insert millions of flows into the LRU connection table,
    /// which may evict the known flow's entry between rounds.
    opens: Option<Vec<u8>>,
}

struct Args {
    repeat: u32,
    rounds: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        repeat: 1_000_000,
        rounds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--repeat" => args.repeat = value()?.parse().context("--repeat")?,
            "--rounds" => args.rounds = value()?.parse().context("--rounds")?,
            "--help" | "-h" => {
                println!("lb-bench [--repeat N (1000000)] [--rounds N (5)]");
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
    let client = [192, 168, 58, 100];
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC);
    let mut v = Vec::new();
    let vlan_id = VlanId::try_new(58).expect("vlan id");
    let ip = if vlan {
        eth.single_vlan(vlan_id).ipv4(client, VIP, 64)
    } else {
        eth.ipv4(client, VIP, 64)
    };
    let t = ip.tcp(40000, dport, 1, 1000);
    let t = if syn { t.syn() } else { t.ack(1) };
    t.write(&mut v, &[]).expect("frame");
    v
}

const VIP: [u8; 4] = [192, 168, 58, 133];
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
        (v6(0x100), 40000),
        (dst, dport),
        flags,
    )
}

fn scenarios() -> Vec<Scenario> {
    let mut non_vip_frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4([192, 168, 58, 100], [192, 168, 58, 134], 64)
        .tcp(40000, 22, 1, 1000)
        .ack(1)
        .write(&mut non_vip_frame, &[])
        .expect("frame");
    let mut udp = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4([192, 168, 58, 100], VIP, 64)
        .udp(5353, 53)
        .write(&mut udp, b"query")
        .expect("frame");
    let known = |name, frame, opens| Scenario {
        name,
        frame,
        action: XDP_TX,
        vary_sport: None,
        target: None,
        opens: Some(opens),
    };
    let new_flow = |name, port, target| Scenario {
        name,
        frame: tcp(port, false, true),
        action: XDP_TX,
        vary_sport: Some(SPORT),
        target,
        opens: None,
    };
    let non_vip = |name, frame| Scenario {
        name,
        frame,
        action: XDP_PASS,
        vary_sport: None,
        target: None,
        opens: None,
    };
    // Each IPv6 row follows its IPv4 twin.
    vec![
        non_vip("non-VIP traffic (XDP_PASS)", non_vip_frame),
        non_vip(
            "IPv6: non-VIP traffic (XDP_PASS)",
            tcp6(v6(0x134), 22, false),
        ),
        Scenario {
            target: Some(1.5),
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
        known("known flow, UDP", udp.clone(), udp),
        known(
            "known flow, TCP in 802.1Q",
            tcp(80, true, false),
            tcp(80, true, true),
        ),
        new_flow("new flow, rr", 81, None),
        Scenario {
            frame: tcp6(v6(0x133), 81, true),
            vary_sport: Some(SPORT6),
            ..new_flow("IPv6: new flow, rr", 81, None)
        },
        new_flow("new flow, wrr", 80, None),
        new_flow("new flow, mh", 82, Some(2.5)),
        new_flow("new flow, sh", 83, None),
        new_flow("new flow, lc", 84, None),
        new_flow("new flow, wlc", 85, None),
        new_flow("new flow, persistence hit", 86, None),
        // A TCP ACK of no known connection, a new tuple each time (a spoofed flood).
        Scenario {
            frame: tcp(82, false, false),
            ..new_flow(
                "ACK without a connection, mh (forwarded_stateless)",
                82,
                None,
            )
        },
        Scenario {
            frame: tcp(81, false, false),
            action: XDP_DROP,
            ..new_flow("ACK without a connection, rr (drop_no_flow)", 81, None)
        },
    ]
}

fn run(prog: &mut Xdp, data: &[u8], repeat: u32) -> Result<(u32, Duration)> {
    let mut out = vec![0u8; data.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(data),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN")?;
    Ok((r.return_value, r.duration))
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() -> Result<()> {
    let args = parse_args()?;
    require_root();
    let started = Instant::now();
    let mut h = Harness::with_config(CONFIG);
    let insns = h
        .program()
        .info()
        .context("program info")?
        .verified_instruction_count();
    let director: ProgramFd = h.program().fd()?.try_clone()?;

    let mut bench = EbpfLoader::new()
        .load(BENCH_OBJECT)
        .context("loading the bench object")?;
    for name in ["bench_tx", "bench_restore"] {
        loader::program(&mut bench, name)?.load()?;
    }
    let baseline: ProgramFd = loader::program(&mut bench, "bench_tx")?.fd()?.try_clone()?;
    let mut slots: ProgramArray<MapData> = bench
        .take_map("BENCH_PROGS")
        .context("BENCH_PROGS")?
        .try_into()?;
    let mut restore_frame: Array<MapData, BenchFrame> = bench
        .take_map("BENCH_FRAME")
        .context("BENCH_FRAME")?
        .try_into()?;

    // None = the baseline alone, without restore.
    let targets: [(&str, Option<&ProgramFd>); 3] = [
        ("baseline alone", None),
        ("restore -> baseline", Some(&baseline)),
        ("restore -> director", Some(&director)),
    ];
    let scenarios = scenarios();
    // times[scenario][target] = ns per packet, one per round
    let mut times = vec![vec![Vec::new(); targets.len()]; scenarios.len()];
    eprintln!(
        "==> {} scenarios x {} programs x {} rounds of {} packets",
        scenarios.len(),
        targets.len(),
        args.rounds,
        args.repeat
    );
    for round in 0..args.rounds {
        for (si, sc) in scenarios.iter().enumerate() {
            let (name, data, want) = (sc.name, &sc.frame, sc.action);
            let bf = BenchFrame {
                macs: data[..12].try_into().context("12 bytes")?,
                sport_offset: sc.vary_sport.unwrap_or(0),
                vary_sport: u16::from(sc.vary_sport.is_some()),
            };
            restore_frame.set(0, bf, 0)?;
            // A known flow's connection starts with its SYN (an ACK of no known connection
            // makes no entry), and again each round in case the LRU evicted it.
            if let Some(syn) = &sc.opens {
                let action = h.run(syn).action;
                if action != XDP_TX {
                    bail!(
                        "{name}: the SYN that opens the flow returned {action}, expected {XDP_TX}"
                    );
                }
            }
            for (ti, (tname, fd)) in targets.iter().enumerate() {
                let prog: &mut Xdp = match fd {
                    Some(fd) => {
                        slots.set(0, fd, 0)?;
                        loader::program(&mut bench, "bench_restore")?
                    }
                    None => loader::program(&mut bench, "bench_tx")?,
                };
                // One warm-up packet: the first packet of a flow creates its entry.
                let (action, _) = run(prog, data, 1)?;
                let expect = if ti == 2 { want } else { XDP_TX };
                if action != expect {
                    bail!("{name}: {tname} returned {action}, expected {expect}");
                }
                let (_, d) = run(prog, data, args.repeat)?;
                times[si][ti].push(d.as_nanos() as f64);
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
        }));
    }
    println!("{table}");
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
    });
    let out = results.join("datapath.json");
    lb_tests::write_bench_json(&out, &json)?;
    eprintln!("==> wrote {}", out.display());
    Ok(())
}
