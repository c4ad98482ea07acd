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
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    EbpfLoader,
    maps::{Array, MapData, ProgramArray},
    programs::{ProgramFd, TestRun, TestRunOptions, Xdp},
};
use etherparse::{PacketBuilder, VlanId};
use lb_ctl::loader::{self, BENCH_OBJECT};
use lb_tests::packet::{CLIENT_MAC, DIRECTOR_MAC, Harness, XDP_PASS, XDP_TX, require_root};

const CONFIG: &str = "
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    scheduler: wrr
    backends:
      - address: 192.168.58.135
      - address: 192.168.58.136
  - name: dns
    vip: 192.168.58.133
    port: 53
    protocol: udp
    scheduler: rr
    backends:
      - address: 192.168.58.135
";

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

fn frame(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    f(&mut v);
    v
}

/// (name, frame, the action the director must return)
fn scenarios() -> Vec<(&'static str, Vec<u8>, u32)> {
    let vip = [192, 168, 58, 133];
    let client = [192, 168, 58, 100];
    let vlan = VlanId::try_new(58).expect("vlan id");
    vec![
        (
            "non-VIP (XDP_PASS)",
            frame(|v| {
                PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
                    .ipv4(client, [192, 168, 58, 134], 64)
                    .tcp(40000, 22, 1, 1000)
                    .ack(1)
                    .write(v, &[])
                    .expect("frame")
            }),
            XDP_PASS,
        ),
        (
            "VIP TCP, known flow",
            frame(|v| {
                PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
                    .ipv4(client, vip, 64)
                    .tcp(40000, 80, 1, 1000)
                    .ack(1)
                    .write(v, &[])
                    .expect("frame")
            }),
            XDP_TX,
        ),
        (
            "VIP UDP, known flow",
            frame(|v| {
                PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
                    .ipv4(client, vip, 64)
                    .udp(5353, 53)
                    .write(v, b"query")
                    .expect("frame")
            }),
            XDP_TX,
        ),
        (
            "VIP TCP in 802.1Q, known flow",
            frame(|v| {
                PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
                    .single_vlan(vlan)
                    .ipv4(client, vip, 64)
                    .tcp(40001, 80, 1, 1000)
                    .ack(1)
                    .write(v, &[])
                    .expect("frame")
            }),
            XDP_TX,
        ),
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
    let mut eth: Array<MapData, [u8; 12]> = bench
        .take_map("BENCH_ETH")
        .context("BENCH_ETH")?
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
        for (si, (name, data, want)) in scenarios.iter().enumerate() {
            let macs: [u8; 12] = data[..12].try_into().context("12 bytes")?;
            eth.set(0, macs, 0)?;
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
                let expect = if ti == 2 { *want } else { XDP_TX };
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
        "| path | director ns/pkt (min / median / max) | XDP_TX baseline ns/pkt | ratio (median) |"
    );
    let _ = writeln!(table, "| --- | --- | --- | --- |");
    for (si, (name, _, _)) in scenarios.iter().enumerate() {
        let t = &times[si];
        // Per round: the director in the baseline's place, and the baseline alone.
        let director: Vec<f64> = (0..args.rounds)
            .map(|r| t[2][r] - t[1][r] + t[0][r])
            .collect();
        let ratios: Vec<f64> = (0..args.rounds).map(|r| director[r] / t[0][r]).collect();
        let (dmin, dmed, dmax) = stats(director);
        let (_, bmed, _) = stats(t[0].clone());
        let (_, rmed, _) = stats(ratios);
        let _ = writeln!(
            table,
            "| {name} | {dmin:.1} / {dmed:.1} / {dmax:.1} | {bmed:.1} | {rmed:.2}x |"
        );
    }
    println!("{table}");
    println!(
        "verifier: {} instructions processed for the director program",
        insns.map_or("unknown".to_string(), |n| n.to_string())
    );
    Ok(())
}
