//! `cargo xtask bench` (end-to-end part): HTTP through the lab, with `wrk` in the client's
//! namespace against `lab-server` on two real servers, for
//!
//! - (a) the client straight to one real server: the ceiling;
//! - (c) HAProxy in TCP mode on the director's namespace (its own address .134:8080, round
//!   robin over .135:80 and .136:80): what a user runs when IPVS is not available;
//! - (b) our XDP director in DR mode (native mode on the director's `eth0`, `rr` over both
//!   servers on the VIP), driven by the real `target/<profile>/lb-ctl`.
//!
//! (c) runs before (b), so HAProxy's packets do not pass through an attached XDP program. The
//! three run in rounds (`--rounds`, default 2); each setup's best round is reported.
//! Then a raw packet rate: a UDP sender in the client's namespace at full speed for a bounded
//! time and count, to a UDP service of the director; the director's `forwarded` counter per
//! second is the rate.
//!
//! Everything happens inside the namespaces of one lab (`lb_tests::lab`, see
//! `docs/lab.md`); every run is bounded (`--duration`, default 5 s, and a deadline),
//! and the lab, HAProxy and the pins are removed on success, failure and Ctrl-C. Targets are
//! printed with met / not met, never asserted. Results go to `bench/results/lab.json`.

use std::{
    fmt::Write as _,
    fs,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use lb_tests::{
    lab::{DEFAULT_VIP, Host, Lab, LabSpec, http_get},
    lbctl::{LbCtl, run_with_deadline},
    procs,
};
use serde_json::{Value, json};

const DIP: Ipv4Addr = Ipv4Addr::new(192, 168, 58, 134);
const HAPROXY_PORT: u16 = 8080;
/// The UDP service the packet-rate run sends to (no server listens there: the real servers
/// drop the packets, answering at most rate-limited ICMP).
const FLOOD_PORT: u16 = 9;

/// Targets from issue 10: (b) / (a) and (b) / (c) in requests/s.
const TARGET_VS_CEILING: f64 = 0.95;
const TARGET_VS_HAPROXY: f64 = 1.5;

struct Args {
    rounds: usize,
    duration: u32,
    threads: u32,
    connections: u32,
    flood_seconds: f64,
    flood_max_packets: u64,
    out: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        rounds: 2,
        duration: 5,
        threads: 2,
        connections: 32,
        flood_seconds: 3.0,
        flood_max_packets: 20_000_000,
        out: lb_tests::bench_results_dir().join("lab.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rounds" => args.rounds = value()?.parse().context("--rounds")?,
            "--duration" => args.duration = value()?.parse().context("--duration")?,
            "--threads" => args.threads = value()?.parse().context("--threads")?,
            "--connections" => args.connections = value()?.parse().context("--connections")?,
            "--flood-seconds" => {
                args.flood_seconds = value()?.parse().context("--flood-seconds")?
            }
            "--out" => args.out = PathBuf::from(value()?),
            "--help" | "-h" => {
                println!(
                    "lb-bench-lab [--rounds N (2)] [--duration S (5)] [--threads N (2)] [--connections N (32)] \
                     [--flood-seconds S (3)] [--out FILE (bench/results/lab.json)]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; see --help"),
        }
    }
    ensure!((1..=10).contains(&args.rounds), "--rounds must be 1 to 10");
    ensure!(
        (1..=60).contains(&args.duration),
        "--duration must be 1 to 60 seconds"
    );
    ensure!(
        args.threads >= 1 && args.connections >= args.threads,
        "--connections must be at least --threads (>= 1)"
    );
    ensure!(
        args.flood_seconds > 0.0 && args.flood_seconds <= 30.0,
        "--flood-seconds must be in (0, 30]"
    );
    Ok(args)
}

fn require_tools() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "lb-bench-lab builds network namespaces and attaches XDP programs: run it as root \
             (cargo xtask bench)"
        );
    }
    for tool in ["wrk", "haproxy"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        ensure!(
            found,
            "`{tool}` is not installed: run `cargo xtask setup` (Debian package {tool})"
        );
    }
    Ok(())
}

/// What one wrk run measured.
#[derive(Debug, Default)]
struct Wrk {
    requests_per_s: f64,
    requests: u64,
    /// p50, p75, p90, p99 in milliseconds.
    latency_ms: Vec<(u32, f64)>,
    socket_errors: String,
    non_2xx: u64,
}

/// `1.23ms`, `456.00us`, `1.01s` in milliseconds.
fn duration_ms(s: &str) -> Option<f64> {
    let (num, factor) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60_000.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * factor)
}

fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut w = Wrk::default();
    let mut in_dist = false;
    for line in text.lines() {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            if let [p, v] = words[..]
                && let Some(p) = p.strip_suffix('%').and_then(|p| p.parse::<u32>().ok())
                && let Some(ms) = duration_ms(v)
            {
                w.latency_ms.push((p, ms));
                continue;
            }
            in_dist = false;
        }
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            w.requests_per_s = v.trim().parse().context("Requests/sec")?;
        } else if t.contains(" requests in ") {
            w.requests = words.first().and_then(|n| n.parse().ok()).unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            w.socket_errors = v.trim().to_string();
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = v.trim().parse().unwrap_or(0);
        }
    }
    ensure!(
        w.requests_per_s > 0.0,
        "wrk reported no requests/s:\n{text}"
    );
    Ok(w)
}

/// CPU time (user + system, in clock ticks) of the whole machine that was not idle, and in
/// total, from /proc/stat.
fn cpu_ticks() -> (u64, u64) {
    let Ok(text) = fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = text.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU time (clock ticks) of the given processes, from /proc/PID/stat.
fn proc_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&pid| procs::cpu_ticks(pid)).sum()
}

struct Bench<'a> {
    lab: &'a Lab,
    args: &'a Args,
}

impl Bench<'_> {
    /// Runs wrk against `url` from the client, after a one-request check that it answers.
    fn wrk(&self, key: &str, label: &str, addr: Ipv4Addr, port: u16) -> Result<Value> {
        let client = self.lab.client();
        let (status, _) = http_get(client, addr, port, "/", Duration::from_secs(2))
            .with_context(|| format!("{label}: a first request to {addr}:{port}"))?;
        ensure!(status == 200, "{label}: status {status} from {addr}:{port}");
        for s in self.lab.servers() {
            self.lab.reset_count(s)?;
        }
        let url = format!("http://{addr}:{port}/");
        let (d, t, c) = (
            format!("{}s", self.args.duration),
            self.args.threads.to_string(),
            self.args.connections.to_string(),
        );
        let cmd: Command = client.command(&[
            "wrk",
            "--latency",
            "--timeout",
            "2s",
            "-d",
            &d,
            "-t",
            &t,
            "-c",
            &c,
            &url,
        ]);
        eprintln!(
            "==> {label}: wrk -t{t} -c{c} -d{d} {url} (in {})",
            client.name
        );
        let server_pids = self.lab.server_pids();
        let (busy0, total0) = cpu_ticks();
        let servers0 = proc_ticks(&server_pids);
        let started = Instant::now();
        let out = run_with_deadline(cmd, Duration::from_secs(self.args.duration as u64 + 20))
            .with_context(|| format!("{label}: running wrk"))?;
        let wall = started.elapsed().as_secs_f64();
        let (busy1, total1) = cpu_ticks();
        let servers1 = proc_ticks(&server_pids);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "{label}: wrk failed ({}):\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let w = parse_wrk(&text).with_context(|| format!("{label}: reading wrk's output"))?;
        let per_server: Vec<(String, u64)> = self
            .lab
            .servers()
            .iter()
            .map(|s| Ok((s.name.clone(), self.lab.request_count(s)?)))
            .collect::<Result<_>>()?;
        let machine_busy = if total1 > total0 {
            (busy1 - busy0) as f64 / (total1 - total0) as f64
        } else {
            0.0
        };
        let servers_cores = (servers1 - servers0) as f64 / procs::ticks_per_second() / wall;
        let lat = |p: u32| w.latency_ms.iter().find(|(q, _)| *q == p).map(|(_, v)| *v);
        eprintln!(
            "    {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms; machine {:.0}% busy, \
             lab-servers {:.2} cores; per server {per_server:?}",
            w.requests_per_s,
            lat(50).unwrap_or(f64::NAN),
            lat(99).unwrap_or(f64::NAN),
            machine_busy * 100.0,
            servers_cores
        );
        Ok(json!({
            "key": key,
            "label": label,
            "url": url,
            "requests_per_s": w.requests_per_s,
            "requests": w.requests,
            "latency_ms": {"p50": lat(50), "p75": lat(75), "p90": lat(90), "p99": lat(99)},
            "socket_errors": w.socket_errors,
            "non_2xx": w.non_2xx,
            "per_server_requests": per_server
                .into_iter()
                .map(|(k, v)| (k, json!(v)))
                .collect::<serde_json::Map<_, _>>(),
            "machine_cpu_busy": machine_busy,
            "lab_server_cores": servers_cores,
        }))
    }
}

/// The round with the most requests/s, with every round's requests/s added.
fn best_round(runs: Vec<Value>) -> Value {
    let all: Vec<f64> = runs
        .iter()
        .map(|r| r["requests_per_s"].as_f64().unwrap_or(0.0))
        .collect();
    let mut best = runs
        .into_iter()
        .max_by(|a, b| {
            let rps = |v: &Value| v["requests_per_s"].as_f64().unwrap_or(0.0);
            rps(a).total_cmp(&rps(b))
        })
        .unwrap_or(Value::Null);
    best["rounds_requests_per_s"] = json!(all);
    best
}

/// The HAProxy configuration for (c).
fn haproxy_config(servers: &[Host]) -> String {
    let mut c = String::from(
        "global\n    maxconn 4096\n\ndefaults\n    mode tcp\n    timeout connect 2s\n    \
         timeout client 30s\n    timeout server 30s\n\n",
    );
    let _ = writeln!(
        c,
        "listen bench\n    bind {DIP}:{HAPROXY_PORT}\n    balance roundrobin"
    );
    for (i, s) in servers.iter().enumerate() {
        let _ = writeln!(c, "    server rs{} {}:80", i + 1, s.addr);
    }
    c
}

/// Runs HAProxy in the director's namespace for as long as `f` runs.
fn with_haproxy<T>(lab: &Lab, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let dir = std::env::temp_dir().join(format!("{}-haproxy", lab.prefix()));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cfg = dir.join("haproxy.cfg");
    let result = (|| {
        fs::write(&cfg, haproxy_config(lab.servers()))
            .with_context(|| format!("writing {}", cfg.display()))?;
        let cfg_s = cfg.to_str().context("temp path is not UTF-8")?;
        let director = lab.director(0);
        let mut proc = director.spawn(&["haproxy", "-f", cfg_s, "-db"])?;
        // Ready when it accepts a request (at most 5 s).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = proc.try_wait()? {
                bail!(
                    "haproxy exited at start ({status}); config {}",
                    cfg.display()
                );
            }
            if http_get(
                lab.client(),
                DIP,
                HAPROXY_PORT,
                "/",
                Duration::from_millis(500),
            )
            .is_ok()
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "haproxy did not answer on {DIP}:{HAPROXY_PORT} within 5 s"
            );
            thread::sleep(Duration::from_millis(50));
        }
        let r = f();
        proc.stop(Duration::from_secs(2))?;
        r
    })();
    let _ = fs::remove_dir_all(&dir);
    result
}

fn forwarded(ctl: &LbCtl) -> Result<u64> {
    let v: Value = serde_json::from_str(&ctl.stats_json()?).context("stats --json")?;
    v["datapath"]
        .as_array()
        .and_then(|d| d.iter().find(|r| r["reason"] == "forwarded"))
        .and_then(|r| r["packets"].as_u64())
        .context("no forwarded counter in stats --json")
}

/// Sends UDP datagrams to the VIP from the client, as fast as one thread can, for at most
/// `seconds` and `max` packets; returns (packets sent, seconds).
fn udp_flood(client: &Host, seconds: f64, max: u64) -> Result<(u64, f64)> {
    let target = SocketAddr::V4(SocketAddrV4::new(DEFAULT_VIP, FLOOD_PORT));
    let socket = client.run_in(move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("binding a UDP socket")?;
        s.connect(target)?;
        Ok(s)
    })?;
    let payload = [0u8; 18]; // a 60-byte frame
    let deadline = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < max {
        for _ in 0..256 {
            // ENOBUFS and the like: the packet was not sent; keep going until the deadline.
            if socket.send(&payload).is_ok() {
                sent += 1;
            }
        }
        if started.elapsed() >= deadline {
            break;
        }
    }
    Ok((sent, started.elapsed().as_secs_f64()))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    require_tools()?;
    let started = Instant::now();
    let lab = Lab::build(&LabSpec::default()).context("building the lab")?;
    let bench = Bench {
        lab: &lab,
        args: &args,
    };
    let rs1 = lab.server(0);
    let ctl = LbCtl::new(&lab, lab.director(0))?;
    let yaml = format!(
        "services:\n  - name: web\n    vip: {DEFAULT_VIP}\n    port: 80\n    scheduler: rr\n    \
         backends:\n      - address: {}\n      - address: {}\n  - name: flood\n    vip: \
         {DEFAULT_VIP}\n    port: {FLOOD_PORT}\n    protocol: udp\n    scheduler: rr\n    \
         backends:\n      - address: {}\n      - address: {}\n",
        lab.server(0).addr,
        lab.server(1).addr,
        lab.server(0).addr,
        lab.server(1).addr
    );

    // Rounds of (a), (c), (b); each setup's best round is reported (the one the rest of the
    // machine disturbed least), every round's requests/s is kept.
    let mut runs: [Vec<Value>; 3] = Default::default();
    let mut xdp_forwarded = 0;
    for round in 0..args.rounds {
        eprintln!("==> round {}/{}", round + 1, args.rounds);
        // (a) the ceiling: straight to one real server.
        runs[0].push(bench.wrk(
            "direct",
            "a: client -> real-server-1 (ceiling)",
            rs1.addr,
            80,
        )?);
        // (c) HAProxy in TCP mode on the director (no XDP program attached).
        runs[2].push(with_haproxy(&lab, || {
            bench.wrk(
                "haproxy",
                "c: HAProxy (TCP, roundrobin) on the director",
                DIP,
                HAPROXY_PORT,
            )
        })?);
        // (b) through the XDP director.
        let attach = ctl.attach("eth0")?;
        ensure!(attach.contains("native"), "attach said: {attach}");
        ctl.apply(&yaml)?;
        let before = forwarded(&ctl)?;
        runs[1].push(bench.wrk("xdp", "b: XDP director (DR, rr, native)", DEFAULT_VIP, 80)?);
        let fwd = forwarded(&ctl)? - before;
        eprintln!("    the director forwarded {fwd} packets");
        ensure!(
            fwd > 0,
            "the XDP director forwarded nothing: wrk did not go through it"
        );
        xdp_forwarded += fwd;
        // The last round stays attached for the packet rate.
        if round + 1 < args.rounds {
            ctl.detach("eth0")?;
        }
    }
    let [direct, xdp, haproxy] = runs.map(best_round);

    // Raw packet rate.
    eprintln!(
        "==> raw packet rate: UDP to {DEFAULT_VIP}:{FLOOD_PORT} from the client, one sender \
         thread, {} s at most",
        args.flood_seconds
    );
    // Warm-up: resolves the VIP's MAC on the client.
    let _ = udp_flood(lab.client(), 0.2, 1000)?;
    thread::sleep(Duration::from_millis(200));
    let before = forwarded(&ctl)?;
    let (sent, secs) = udp_flood(lab.client(), args.flood_seconds, args.flood_max_packets)?;
    thread::sleep(Duration::from_millis(300));
    let fwd = forwarded(&ctl)? - before;
    let flood = json!({
        "sent": sent,
        "seconds": secs,
        "sent_per_s": sent as f64 / secs,
        "forwarded": fwd,
        "forwarded_per_s": fwd as f64 / secs,
        "frame_bytes": 60,
        "sender": "one thread, UdpSocket::send, in the client's namespace",
    });
    eprintln!(
        "    sent {sent} in {secs:.2} s ({:.0}/s); the director forwarded {fwd} ({:.0}/s)",
        sent as f64 / secs,
        fwd as f64 / secs
    );

    ctl.detach("eth0")?;
    drop(ctl);
    lab.close()?;

    // Report.
    let rps = |v: &Value| v["requests_per_s"].as_f64().unwrap_or(0.0);
    let vs_ceiling = rps(&xdp) / rps(&direct);
    let vs_haproxy = rps(&xdp) / rps(&haproxy);
    let met = |v: f64, t: f64| if v >= t { "met" } else { "not met" };
    let mut table = String::from(
        "| setup | requests/s | p50 ms | p90 ms | p99 ms | errors |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for v in [&direct, &xdp, &haproxy] {
        let l = &v["latency_ms"];
        let f = |k: &str| l[k].as_f64().map_or("-".into(), |x| format!("{x:.2}"));
        let _ = writeln!(
            table,
            "| {} | {:.0} | {} | {} | {} | {} |",
            v["label"].as_str().unwrap_or("?"),
            rps(v),
            f("p50"),
            f("p90"),
            f("p99"),
            v["socket_errors"].as_str().unwrap_or("none")
        );
    }
    println!("{table}");
    println!(
        "| target | value | met |\n| --- | --- | --- |\n| (b) >= {TARGET_VS_CEILING}x (a) | {vs_ceiling:.2}x | {} |\n| (b) >= {TARGET_VS_HAPROXY}x (c) | {vs_haproxy:.2}x | {} |",
        met(vs_ceiling, TARGET_VS_CEILING),
        met(vs_haproxy, TARGET_VS_HAPROXY)
    );
    println!(
        "\nraw packet rate: {:.0} packets/s forwarded by the director (native XDP), one UDP \
         sender thread sending {:.0}/s",
        fwd as f64 / secs,
        sent as f64 / secs
    );

    let out = json!({
        "wrk": {"duration_s": args.duration, "threads": args.threads, "connections": args.connections,
                "rounds": args.rounds, "reported": "the best round of each setup"},
        "setups": [direct, xdp, haproxy],
        "xdp_forwarded_packets": xdp_forwarded,
        "targets": [
            {"name": "through the director (b) vs the ceiling (a), requests/s", "value": vs_ceiling,
             "target": TARGET_VS_CEILING, "met": vs_ceiling >= TARGET_VS_CEILING},
            {"name": "through the director (b) vs HAProxy (c), requests/s", "value": vs_haproxy,
             "target": TARGET_VS_HAPROXY, "met": vs_haproxy >= TARGET_VS_HAPROXY},
        ],
        "udp_flood": flood,
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    lb_tests::write_bench_json(&args.out, &out)?;
    eprintln!(
        "==> wrote {} ({:.1?})",
        args.out.display(),
        started.elapsed()
    );
    Ok(())
}
