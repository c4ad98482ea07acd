//! `cargo xtask bench` (end-to-end part): HTTP through the lab, with `wrk` in the client's
//! namespace against `lab-server` on two real servers, for
//!
//! - (a) the client straight to one real server: the ceiling;
//! - (c) HAProxy in TCP mode on the director's namespace (its own address .134:8080, round
//!   robin over .135:80 and .136:80): what a user runs when IPVS is not available;
//! - (b) our XDP director in DR mode (native mode on the director's `eth0`, `rr` over both
//!   servers on the VIP), driven by the real `target/<profile>/lb-ctl`;
//! - (d) the floor of any XDP director: the bench object's `lb_floor` (`lb-ebpf/src/bench.rs`)
//!   attached natively to the same `eth0` in place of the director's program: the VIP's frames
//!   get their MACs rewritten and go out with XDP_TX, no lookup, no state. It splits the
//!   connections over the same two servers by a hash bit of the source port, so that (b) and
//!   (d) put the same load on the same servers and differ only in the program.
//!
//! (c) runs before (b) and (d), so HAProxy's packets do not pass through an attached XDP
//! program. The four run in rounds (`--rounds`, default 2); each setup's best round is
//! reported. Then two raw packet rates through the director (attached again, rr), each for a
//! bounded time and count, with the director's `forwarded` counter per second as the rate and
//! the busy share of every CPU of the machine (/proc/stat: everything but idle and iowait; XDP
//! runs in softirq) as its cost, reported as packets per second per fully busy core:
//!
//! - `xdp-trafficgen udp` (Debian's xdp-tools) in the client's namespace: IPv6 UDP (all it
//!   generates) to the IPv6 VIP's UDP service, built and sent in the kernel (BPF_PROG_RUN with
//!   live frames, redirected into the client's veth); the switch-side end of the client's link
//!   gets a pass-through XDP program for the time of the run, as a veth needs to receive
//!   redirected frames;
//! - one UDP socket thread in the client's namespace, IPv4, to the VIP's UDP service.
//!
//! Everything happens inside the namespaces of one lab (`lb_tests::lab`, see
//! `docs/lab.md`); every run is bounded (`--duration`, default 5 s, and a deadline),
//! and the lab, HAProxy, the generator and the pins are removed on success, failure and
//! Ctrl-C. Targets are printed with met / not met, never asserted. Results go to
//! `bench/results/lab.json`.

use std::{
    fmt::Write as _,
    fs::{self, File},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, XdpMode},
};
use lb_ctl::maps::loader::{self, BENCH_OBJECT};
use lb_tests::{
    lab::{DEFAULT_VIP, DEFAULT_VIP6, Host, Lab, LabSpec, Proc, format_mac, http_get},
    lbctl::{LbCtl, run_with_deadline},
    packet::{udp4_frame, xdp_md},
    procs,
};
use serde_json::{Value, json};

const DIP: Ipv4Addr = Ipv4Addr::new(192, 168, 58, 134);
const HAPROXY_PORT: u16 = 8080;
/// The UDP service the packet-rate run sends to (no server listens there: the real servers
/// drop the packets, answering at most rate-limited ICMP).
const FLOOD_PORT: u16 = 9;

/// The floor program of row (d), in the bench object.
const FLOOR_PROGRAM: &str = "lb_floor";
/// The raw rate's generator, in the bench object.
const GEN_PROGRAM: &str = "bench_gen";

/// Targets in requests/s: (b) / (a) from issue 10; (b) / (d) and (b) / (c) from issue 21.
const TARGET_VS_CEILING: f64 = 0.95;
const TARGET_VS_FLOOR: f64 = 0.95;
const TARGET_VS_HAPROXY: f64 = 1.5;

struct Args {
    rounds: usize,
    duration: u32,
    threads: u32,
    connections: u32,
    flood_seconds: f64,
    flood_max_packets: u64,
    gen_threads: u32,
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
        gen_threads: 1,
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
            "--gen-threads" => args.gen_threads = value()?.parse().context("--gen-threads")?,
            "--out" => args.out = PathBuf::from(value()?),
            "--help" | "-h" => {
                println!(
                    "lb-bench-lab [--rounds N (2)] [--duration S (5)] [--threads N (2)] [--connections N (32)] \
                     [--flood-seconds S (3)] [--gen-threads N (1)] \
                     [--out FILE (bench/results/lab.json)]"
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
    ensure!(
        (1..=64).contains(&args.gen_threads),
        "--gen-threads must be 1 to 64"
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
    for (tool, package) in [
        ("wrk", "wrk"),
        ("haproxy", "haproxy"),
        ("xdp-trafficgen", "xdp-tools"),
    ] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        ensure!(
            found,
            "`{tool}` is not installed: run `cargo xtask setup` (Debian package {package})"
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

/// The whole machine's CPU time from /proc/stat's `cpu` line, in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
struct CpuTicks {
    /// Not idle: user, nice, system, irq, softirq, steal.
    busy: u64,
    /// Of which softirq (where XDP programs and the veths' receive paths run).
    softirq: u64,
    /// Everything, idle and iowait included.
    total: u64,
    /// The number of CPUs (`cpuN` lines).
    cpus: u32,
}

fn cpu_ticks() -> CpuTicks {
    let Ok(text) = fs::read_to_string("/proc/stat") else {
        return CpuTicks::default();
    };
    let Some(line) = text.lines().next() else {
        return CpuTicks::default();
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let cpus = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u32;
    CpuTicks {
        busy: total - idle,
        softirq: v.get(6).copied().unwrap_or(0),
        total,
        cpus,
    }
}

/// The CPU use between two samples: (busy cores, softirq cores, CPUs), a busy core being
/// one CPU at 100% for the whole interval.
fn cpu_use(before: CpuTicks, after: CpuTicks) -> (f64, f64, u32) {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return (0.0, 0.0, after.cpus);
    }
    let share = |a: u64, b: u64| a.saturating_sub(b) as f64 / total as f64 * f64::from(after.cpus);
    (
        share(after.busy, before.busy),
        share(after.softirq, before.softirq),
        after.cpus,
    )
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
        let cpu0 = cpu_ticks();
        let servers0 = proc_ticks(&server_pids);
        let started = Instant::now();
        let out = run_with_deadline(cmd, Duration::from_secs(self.args.duration as u64 + 20))
            .with_context(|| format!("{label}: running wrk"))?;
        let wall = started.elapsed().as_secs_f64();
        let cpu1 = cpu_ticks();
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
        let (busy_cores, _, cpus) = cpu_use(cpu0, cpu1);
        let machine_busy = busy_cores / f64::from(cpus.max(1));
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

/// Row (d): `lb_floor` attached natively to a director's `eth0`; dropping it detaches it.
struct Floor {
    _ebpf: Ebpf,
}

/// Loads the bench object's `lb_floor` with the lab's VIP, `director`'s MAC and the MACs of
/// the first two real servers, and attaches it natively to `director`'s `eth0` (which must
/// have no other XDP program).
fn attach_floor(lab: &Lab, director: &Host) -> Result<Floor> {
    let vip = DEFAULT_VIP.octets();
    let mac = director.mac;
    let backends = [lab.server(0).mac, lab.server(1).mac];
    let iface = director.iface.clone();
    director
        .run_in(move || {
            let mut ebpf = EbpfLoader::new()
                .override_global("FLOOR_VIP", &vip, true)
                .override_global("FLOOR_MAC", &mac, true)
                .override_global("FLOOR_BACKENDS", &backends, true)
                .load(BENCH_OBJECT)
                .context("loading the bench object (rebuild lb-ctl without LB_EBPF_OBJECT)")?;
            let prog = loader::program(&mut ebpf, FLOOR_PROGRAM)?;
            prog.load()
                .with_context(|| format!("loading {FLOOR_PROGRAM} (the verifier refused it?)"))?;
            prog.attach(&iface, XdpMode::Driver)
                .with_context(|| format!("attaching {FLOOR_PROGRAM} natively to {iface}"))?;
            Ok(Floor { _ebpf: ebpf })
        })
        .with_context(|| format!("row (d): {FLOOR_PROGRAM} on {}", director.name))
}

/// The director's `forwarded` counter, with the machine's CPU ticks read right after it.
fn sample(ctl: &LbCtl) -> Result<(u64, CpuTicks, Instant)> {
    let fwd = forwarded(ctl)?;
    Ok((fwd, cpu_ticks(), Instant::now()))
}

/// A rate between two samples, as JSON: packets forwarded per second, the busy cores and
/// packets per second per fully busy core.
fn rate_json(before: (u64, CpuTicks, Instant), after: (u64, CpuTicks, Instant)) -> Value {
    let secs = after.2.duration_since(before.2).as_secs_f64();
    let fwd = after.0.saturating_sub(before.0);
    let pps = fwd as f64 / secs.max(1e-9);
    let (busy, softirq, cpus) = cpu_use(before.1, after.1);
    json!({
        "seconds": secs,
        "forwarded": fwd,
        "forwarded_per_s": pps,
        "cpus": cpus,
        "busy_cores": busy,
        "softirq_cores": softirq,
        "forwarded_per_s_per_busy_core": if busy > 0.0 { json!(pps / busy) } else { Value::Null },
    })
}

fn print_rate(v: &Value) {
    eprintln!(
        "    the director forwarded {} packets in {:.2} s: {:.0}/s; machine busy {:.2} of {} \
         cores (softirq {:.2}): {:.0} packets/s per busy core",
        v["forwarded"],
        v["seconds"].as_f64().unwrap_or(0.0),
        v["forwarded_per_s"].as_f64().unwrap_or(0.0),
        v["busy_cores"].as_f64().unwrap_or(0.0),
        v["cpus"],
        v["softirq_cores"].as_f64().unwrap_or(0.0),
        v["forwarded_per_s_per_busy_core"]
            .as_f64()
            .unwrap_or(f64::NAN),
    );
}

/// Waits (at most 5 s) until the director's `forwarded` counter passes `since` (a generator
/// loads its program first), then measures the rate for `seconds` or until `running` says
/// the generator ended; None if nothing was forwarded (or it ended first).
fn measure(
    ctl: &LbCtl,
    since: u64,
    seconds: f64,
    mut running: impl FnMut() -> Result<bool>,
) -> Result<Option<Value>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if forwarded(ctl)? > since {
            break;
        }
        if !running()? || Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let before = sample(ctl)?;
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < until && running()? {
        thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(rate_json(before, sample(ctl)?)))
}

/// Frames one generator thread sends per BPF_PROG_RUN call (a few tens of milliseconds).
const GEN_CHUNK: u32 = 65_536;

/// One generator thread in `client`'s namespace: `bench_gen` run in live-frames mode on its
/// interface with one IPv4 UDP frame (source port `sport`, to the VIP's [`FLOOD_PORT`]) until
/// `stop` or `max` frames; returns the frames sent.
fn live_frames_sender(
    client: &Host,
    director_mac: [u8; 6],
    sport: u16,
    max: u64,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    let frame = udp4_frame(
        (client.mac, director_mac),
        (client.addr.octets(), sport),
        (DEFAULT_VIP.octets(), FLOOD_PORT),
        &[0u8; 18],
    );
    let iface = std::ffi::CString::new(client.iface.clone()).context("interface name")?;
    client.run_in(move || {
        // SAFETY: a NUL-terminated name; if_nametoindex has no other precondition.
        let ifindex = unsafe { libc::if_nametoindex(iface.as_ptr()) };
        ensure!(
            ifindex != 0,
            "no interface {iface:?} in the client's namespace"
        );
        let mut ebpf = EbpfLoader::new()
            .load(BENCH_OBJECT)
            .context("loading the bench object (rebuild lb-ctl without LB_EBPF_OBJECT)")?;
        let prog = loader::program(&mut ebpf, GEN_PROGRAM)?;
        prog.load()
            .with_context(|| format!("loading {GEN_PROGRAM} (the verifier refused it?)"))?;
        let ctx = xdp_md(frame.len(), ifindex);
        let mut sent = 0u64;
        while sent < max && !stop.load(Ordering::Relaxed) {
            prog.test_run(TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx),
                repeat: GEN_CHUNK,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_RUN with live frames (kernel 5.18 or later)")?;
            sent += u64::from(GEN_CHUNK);
        }
        Ok(sent)
    })
}

/// The raw rate with the bench's own in-kernel generator (`bench_gen` in live-frames mode,
/// `args.gen_threads` threads, one flow each) in the client's namespace, IPv4 UDP to the VIP's
/// service on [`FLOOD_PORT`].
fn live_frames_rate(lab: &Lab, ctl: &LbCtl, args: &Args) -> Result<Value> {
    let client = lab.client();
    eprintln!(
        "==> raw packet rate: {GEN_PROGRAM} in live-frames mode on the client's {} ({} \
         thread(s)), UDP to {DEFAULT_VIP}:{FLOOD_PORT}, {} s at most",
        client.iface, args.gen_threads, args.flood_seconds
    );
    // veth delivers frames sent with XDP_TX only to a peer that runs an XDP program.
    let _peer = loader::attach_pass_through(lab.switch_ns(), lab.switch_port_of(client))
        .context("a pass-through XDP program on the client's switch port")?;
    let stop = Arc::new(AtomicBool::new(false));
    let since = forwarded(ctl)?;
    let per_thread = args.flood_max_packets / u64::from(args.gen_threads);
    let senders: Vec<_> = (0..args.gen_threads)
        .map(|i| {
            let (client, mac, stop) = (client.clone(), lab.director(0).mac, stop.clone());
            thread::spawn(move || {
                live_frames_sender(&client, mac, 20_000 + i as u16, per_thread, stop)
            })
        })
        .collect();
    let measured = measure(ctl, since, args.flood_seconds, || {
        Ok(senders.iter().any(|t| !t.is_finished()))
    });
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    let mut errors = Vec::new();
    for t in senders {
        match t.join() {
            Ok(Ok(n)) => sent += n,
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(_) => errors.push("a generator thread panicked".into()),
        }
    }
    let mut out = json!({
        "generator": format!("{GEN_PROGRAM} (BPF_PROG_RUN, live frames), IPv4 UDP, one flow per thread"),
        "threads": args.gen_threads,
        "frame_bytes": 60,
        "sent": sent,
    });
    record_rate(&mut out, measured?, || {
        format!(
            "the director forwarded nothing of the generator's frames within 5 s ({})",
            if errors.is_empty() {
                "no error".into()
            } else {
                errors.join("; ")
            }
        )
    });
    Ok(out)
}

/// Prints a generator's measured `rate` and adds its fields to `out`; without one, records
/// why (`"error"`).
fn record_rate(out: &mut Value, rate: Option<Value>, why: impl FnOnce() -> String) {
    match rate {
        Some(rate) => {
            print_rate(&rate);
            for (k, v) in rate.as_object().into_iter().flatten() {
                out[k] = v.clone();
            }
        }
        None => {
            let why = why();
            eprintln!("    {why}");
            out["error"] = json!(why);
        }
    }
}

/// The raw rate with `xdp-trafficgen udp` in the client's namespace (IPv6 UDP to the IPv6
/// VIP's service on [`FLOOD_PORT`]), measured over `args.flood_seconds` once the director
/// forwards. A generator that cannot run here is reported (`"error"`), not fatal.
fn trafficgen_rate(lab: &Lab, ctl: &LbCtl, args: &Args) -> Result<Value> {
    let client = lab.client();
    let director = lab.director(0);
    let threads = args.gen_threads.to_string();
    let count = args.flood_max_packets.to_string();
    let port = FLOOD_PORT.to_string();
    let (dst_mac, vip6, src6) = (
        format_mac(&director.mac),
        DEFAULT_VIP6.to_string(),
        client.addr6.to_string(),
    );
    let argv = [
        "xdp-trafficgen",
        "udp",
        "--dst-mac",
        &dst_mac,
        "--dst-addr",
        &vip6,
        "--src-addr",
        &src6,
        "--dst-port",
        &port,
        "--src-port",
        "1024",
        "--num-packets",
        &count,
        "--threads",
        &threads,
        &client.iface,
    ];
    eprintln!(
        "==> raw packet rate: {} (in {}), {} s at most",
        argv.join(" "),
        client.name,
        args.flood_seconds
    );
    let mut out = json!({
        "generator": "xdp-trafficgen udp (xdp-tools), IPv6, one flow",
        "command": argv.join(" "),
        "threads": args.gen_threads,
        "frame_bytes": 62,
    });
    // veth delivers redirected frames only to a peer that runs an XDP program.
    let _peer = loader::attach_pass_through(lab.switch_ns(), lab.switch_port_of(client))
        .context("a pass-through XDP program on the client's switch port")?;
    let log_path = std::env::temp_dir().join(format!("{}-trafficgen.log", lab.prefix()));
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = client.command(&argv);
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone().context("the generator's log")?)
        .stderr(log);
    let before_start = forwarded(ctl)?;
    let mut proc = Proc::spawn(cmd, "xdp-trafficgen in the client")?;
    let result = measure(ctl, before_start, args.flood_seconds, || {
        Ok(proc.try_wait()?.is_none())
    })?;
    proc.signal(libc::SIGINT)?;
    let status = match proc.wait_timeout(Duration::from_secs(3))? {
        Some(s) => s,
        None => proc.kill()?,
    };
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let _ = fs::remove_file(&log_path);
    let tail: String = text
        .lines()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    out["exit"] = json!(status.to_string());
    out["output_tail"] = json!(tail);
    record_rate(&mut out, result, || {
        format!(
            "xdp-trafficgen sent nothing the director forwarded within 5 s ({status}); its \
             output:\n{tail}"
        )
    });
    Ok(out)
}

/// The raw rate with one UDP socket thread in the client's namespace (IPv4 to the VIP's
/// service on [`FLOOD_PORT`]).
fn socket_rate(lab: &Lab, ctl: &LbCtl, args: &Args) -> Result<Value> {
    eprintln!(
        "==> raw packet rate: UDP to {DEFAULT_VIP}:{FLOOD_PORT} from the client, one sender \
         thread, {} s at most",
        args.flood_seconds
    );
    // Warm-up: resolves the VIP's MAC on the client.
    let _ = udp_flood(lab.client(), 0.2, 1000)?;
    thread::sleep(Duration::from_millis(200));
    let before = sample(ctl)?;
    let (sent, secs) = udp_flood(lab.client(), args.flood_seconds, args.flood_max_packets)?;
    // The director's counter is read once the queues drained; the CPU window ends with it.
    thread::sleep(Duration::from_millis(300));
    let after = sample(ctl)?;
    let mut rate = rate_json(before, after);
    // Per second of sending, not of the window that includes the drain.
    let fwd = rate["forwarded"].as_u64().unwrap_or(0);
    rate["forwarded_per_s"] = json!(fwd as f64 / secs);
    rate["sent"] = json!(sent);
    rate["sent_per_s"] = json!(sent as f64 / secs);
    rate["send_seconds"] = json!(secs);
    rate["frame_bytes"] = json!(60);
    rate["sender"] = json!("one thread, UdpSocket::send, in the client's namespace");
    eprintln!(
        "    sent {sent} in {secs:.2} s ({:.0}/s)",
        sent as f64 / secs
    );
    print_rate(&rate);
    Ok(rate)
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
    let director = lab.director(0);
    let ctl = LbCtl::new(&lab, director)?;
    let (s1, s2) = (lab.server(0), lab.server(1));
    let yaml = format!(
        "services:\n  - name: web\n    vip: {DEFAULT_VIP}\n    port: 80\n    scheduler: rr\n    \
         backends:\n      - address: {}\n      - address: {}\n  - name: flood\n    vip: \
         {DEFAULT_VIP}\n    port: {FLOOD_PORT}\n    protocol: udp\n    scheduler: rr\n    \
         backends:\n      - address: {}\n      - address: {}\n  - name: flood6\n    vip: \
         \"{DEFAULT_VIP6}\"\n    port: {FLOOD_PORT}\n    protocol: udp\n    scheduler: rr\n    \
         backends:\n      - address: \"{}\"\n      - address: \"{}\"\n",
        s1.addr, s2.addr, s1.addr, s2.addr, s1.addr6, s2.addr6
    );

    // Rounds of (a), (c), (b), (d); each setup's best round is reported (the one the rest of
    // the machine disturbed least), every round's requests/s is kept.
    let mut runs: [Vec<Value>; 4] = Default::default();
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
        ctl.detach("eth0")?;
        // (d) the floor, in place of the director's program.
        let floor = attach_floor(&lab, director)?;
        runs[3].push(bench.wrk(
            "floor",
            "d: XDP floor (MAC rewrite, no lookups, native)",
            DEFAULT_VIP,
            80,
        )?);
        drop(floor);
    }
    let [direct, xdp, haproxy, floor] = runs.map(best_round);

    // Raw packet rates through the director.
    let attach = ctl.attach("eth0")?;
    ensure!(attach.contains("native"), "attach said: {attach}");
    ctl.apply(&yaml)?;
    let generator = live_frames_rate(&lab, &ctl, &args)?;
    let trafficgen = trafficgen_rate(&lab, &ctl, &args)?;
    let flood = socket_rate(&lab, &ctl, &args)?;

    ctl.detach("eth0")?;
    drop(ctl);
    lab.close()?;

    // Report.
    let rps = |v: &Value| v["requests_per_s"].as_f64().unwrap_or(0.0);
    let vs_ceiling = rps(&xdp) / rps(&direct);
    let vs_floor = rps(&xdp) / rps(&floor);
    let vs_haproxy = rps(&xdp) / rps(&haproxy);
    let met = |v: f64, t: f64| if v >= t { "met" } else { "not met" };
    let mut table = String::from(
        "| setup | requests/s | p50 ms | p90 ms | p99 ms | errors |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for v in [&direct, &xdp, &haproxy, &floor] {
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
        "| target | value | met |\n| --- | --- | --- |\n\
         | (b) >= {TARGET_VS_CEILING}x (a) | {vs_ceiling:.2}x | {} |\n\
         | (b) >= {TARGET_VS_FLOOR}x (d) | {vs_floor:.2}x | {} |\n\
         | (b) >= {TARGET_VS_HAPROXY}x (c) | {vs_haproxy:.2}x | {} |",
        met(vs_ceiling, TARGET_VS_CEILING),
        met(vs_floor, TARGET_VS_FLOOR),
        met(vs_haproxy, TARGET_VS_HAPROXY)
    );
    let per_core = |v: &Value| {
        v["forwarded_per_s_per_busy_core"]
            .as_f64()
            .map_or("-".into(), |x| format!("{x:.0}"))
    };
    match generator["error"].as_str() {
        None => println!(
            "\nraw packet rate ({GEN_PROGRAM}, live frames): {:.0} packets/s forwarded by the \
             director, machine busy {:.2} cores: {} packets/s per busy core",
            generator["forwarded_per_s"].as_f64().unwrap_or(0.0),
            generator["busy_cores"].as_f64().unwrap_or(0.0),
            per_core(&generator)
        ),
        Some(e) => println!("\nraw packet rate ({GEN_PROGRAM}): not measured: {e}"),
    }
    match trafficgen["error"].as_str() {
        None => println!(
            "raw packet rate (xdp-trafficgen): {:.0} packets/s forwarded by the director, \
             machine busy {:.2} cores: {} packets/s per busy core",
            trafficgen["forwarded_per_s"].as_f64().unwrap_or(0.0),
            trafficgen["busy_cores"].as_f64().unwrap_or(0.0),
            per_core(&trafficgen)
        ),
        Some(e) => println!("raw packet rate (xdp-trafficgen): not measured: {e}"),
    }
    println!(
        "raw packet rate (one UDP socket thread): {:.0} packets/s forwarded by the director \
         while it sent {:.0}/s, machine busy {:.2} cores: {} packets/s per busy core",
        flood["forwarded_per_s"].as_f64().unwrap_or(0.0),
        flood["sent_per_s"].as_f64().unwrap_or(0.0),
        flood["busy_cores"].as_f64().unwrap_or(0.0),
        per_core(&flood)
    );

    let out = json!({
        "wrk": {"duration_s": args.duration, "threads": args.threads, "connections": args.connections,
                "rounds": args.rounds, "reported": "the best round of each setup"},
        "setups": [direct, xdp, haproxy, floor],
        "xdp_forwarded_packets": xdp_forwarded,
        "targets": [
            {"name": "through the director (b) vs the ceiling (a), requests/s", "value": vs_ceiling,
             "target": TARGET_VS_CEILING, "met": vs_ceiling >= TARGET_VS_CEILING},
            {"name": "through the director (b) vs the XDP floor (d), requests/s", "value": vs_floor,
             "target": TARGET_VS_FLOOR, "met": vs_floor >= TARGET_VS_FLOOR},
            {"name": "through the director (b) vs HAProxy (c), requests/s", "value": vs_haproxy,
             "target": TARGET_VS_HAPROXY, "met": vs_haproxy >= TARGET_VS_HAPROXY},
        ],
        "generator": generator,
        "trafficgen": trafficgen,
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
