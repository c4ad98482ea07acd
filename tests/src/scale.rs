//! `lb-ctl run` checking many backends in the lab: the setup and the measurements shared by
//! the end-to-end scale test (small) and `cargo xtask bench`'s daemon row (1,000 services x
//! 16 backends).
//!
//! Real servers hold extra addresses in 10.58.0.0/16 (the director gets 10.58.255.254/16 on
//! its `eth0`, so they are on its link); their `lab-server` answers HTTP on all of them. The
//! last real server holds the "rack": the addresses whose backends go down together when its
//! link is pulled. Every service is on the lab's VIP, port `FIRST_PORT + i`, with `tcp`
//! checks of port 80 (where `lab-server` listens).

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::{
    daemon::Daemon,
    lab::{Host, Lab},
    lbctl::LbCtl,
    procs,
};

/// The first service's port.
pub const FIRST_PORT: u16 = 10_000;
/// The director's address in the scale subnet.
pub const DIRECTOR: Ipv4Addr = Ipv4Addr::new(10, 58, 255, 254);

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    pub services: usize,
    pub backends_per_service: usize,
    /// Unique backend addresses, spread over every real server but the last.
    pub addresses: usize,
    /// Of which this many are on the last real server (the rack that is lost).
    pub rack_addresses: usize,
    /// The checks' settings.
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_delay: Duration,
    /// How long the steady state is watched.
    pub window: Duration,
}

/// What was measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub backends: usize,
    pub probes: usize,
    /// From the daemon's start until every backend was usable in the data path.
    pub all_up_after: Duration,
    /// Down transitions during the steady window (none is right).
    pub false_downs: usize,
    /// The daemon's CPU during the window, in cores (1.0 = one core busy).
    pub cpu_cores: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    /// From the daemon's summary of the window: checks made, how late they started.
    pub checks: u64,
    pub late_p50_ms: f64,
    pub late_p99_ms: f64,
    pub late_max_ms: f64,
    pub waited_for_slot: u64,
    /// Log lines per minute during the window.
    pub log_lines_per_minute: f64,
    /// Backends on the rack, and how long after its link went down all were out of the
    /// data path.
    pub rack_backends: usize,
    pub rack_out_after: Duration,
    /// Log lines in the 5 s after the rack was lost.
    pub rack_log_lines: usize,
}

/// The `i`-th address of the scale subnet: 10.58.0.1, ...; 250 per third octet.
pub fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 58, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// Gives the director its on-link address and the real servers their addresses. Returns the
/// addresses on the rack (the last server).
pub fn set_up(lab: &Lab, spec: &Spec) -> Result<Vec<Ipv4Addr>> {
    ensure!(
        spec.addresses <= 250 * 255 && spec.rack_addresses < spec.addresses,
        "the scale subnet holds at most {} addresses, and the rack must be fewer than all",
        250 * 255
    );
    let servers = lab.servers();
    ensure!(
        servers.len() >= 2,
        "the scale lab needs 2 real servers or more"
    );
    lab.director(0)
        .ip_batch(&[format!("addr add {DIRECTOR}/16 dev eth0")])?;
    let (rest, rack) = servers.split_at(servers.len() - 1);
    let first_rack = spec.addresses - spec.rack_addresses;
    let mut per_server: Vec<Vec<String>> = vec![Vec::new(); servers.len()];
    for i in 0..spec.addresses {
        let s = if i >= first_rack {
            rest.len()
        } else {
            i % rest.len()
        };
        per_server[s].push(format!("addr add {}/16 dev eth0", address(i)));
    }
    for (host, cmds) in rest.iter().chain(rack).zip(&per_server) {
        host.ip_batch(cmds)?;
    }
    Ok((first_rack..spec.addresses).map(address).collect())
}

/// The service file: service `s{i}` on VIP:FIRST_PORT+i with backends `i*k + j` (mod the
/// addresses), so every address serves about `services * backends_per_service / addresses`
/// services; `tcp` checks of port 80.
pub fn services_yaml(vip: Ipv4Addr, spec: &Spec) -> String {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let mut y = String::with_capacity(spec.services * spec.backends_per_service * 40);
    y.push_str("services:\n");
    for i in 0..spec.services {
        y.push_str(&format!(
            "  - name: s{i}\n    vip: {vip}\n    port: {}\n    scheduler: mh\n    table_size: 251\n    \
             check:\n      type: tcp\n      port: 80\n      interval: {}\n      timeout: {}\n      \
             retries: {}\n      retry_delay: {}\n    backends:\n",
            FIRST_PORT as usize + i,
            ms(spec.interval),
            ms(spec.timeout),
            spec.retries,
            ms(spec.retry_delay),
        ));
        for j in 0..spec.backends_per_service {
            let a = address((i * spec.backends_per_service + j) % spec.addresses);
            y.push_str(&format!("      - address: {a}\n"));
        }
    }
    y
}

/// (usable, total) backends, and the usable ones among `of`, from `lb-ctl stats --json`.
fn usable(ctl: &LbCtl, of: &HashSet<Ipv4Addr>) -> Result<(usize, usize, usize)> {
    let text = ctl.stats_json()?;
    let v: Value = serde_json::from_str(&text).context("parsing stats --json")?;
    let (mut up, mut total, mut up_of) = (0, 0, 0);
    for s in v["services"].as_array().context("no services in stats")? {
        for b in s["backends"].as_array().context("no backends")? {
            total += 1;
            if b["usable"].as_bool() == Some(true) {
                up += 1;
                let a: Option<Ipv4Addr> = b["address"].as_str().and_then(|a| a.parse().ok());
                if a.is_some_and(|a| of.contains(&a)) {
                    up_of += 1;
                }
            }
        }
    }
    Ok((up, total, up_of))
}

/// A `key=value` number from a log line (tracing's format).
fn field(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()?.parse().ok()
}

fn down_lines(l: &str) -> bool {
    l.contains("backend down") || l.contains("backends down")
}

/// Starts `lb-ctl run` with `file` on director-1 (attached by `ctl` already), waits until all
/// backends are usable, watches the steady state for the window, then pulls the rack's link
/// and measures how long until its backends are out. `progress` is told what happens.
pub fn run(
    lab: &Lab,
    ctl: &LbCtl,
    file: &Path,
    spec: &Spec,
    rack: &[Ipv4Addr],
    mut progress: impl FnMut(&str),
) -> Result<Report> {
    let mut r = Report::default();
    let window = format!("{}ms", spec.window.as_millis());
    let started = Instant::now();
    let daemon = Daemon::start(
        ctl,
        lab.director(0),
        file,
        &[
            "--summary-interval",
            &window,
            "--max-concurrent-checks",
            "256",
        ],
    );
    let none = HashSet::new();
    loop {
        let (up, total, _) = usable(ctl, &none)?;
        r.backends = total;
        if total == spec.services * spec.backends_per_service && up == total {
            r.all_up_after = started.elapsed();
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "only {up} of {total} backends usable 60 s after start; the log ends:\n{}",
                tail(&daemon.lines(), 20)
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    progress(&format!(
        "all {} backends usable {:.1} s after start",
        r.backends,
        r.all_up_after.as_secs_f64()
    ));
    r.probes = daemon
        .lines()
        .iter()
        .find(|l| l.contains("running"))
        .and_then(|l| field(l, "probes"))
        .unwrap_or(0.0) as usize;

    // The steady window: from one summary line to the next, so the summary covers it.
    let pid = daemon.pid() as u32;
    let summaries = |d: &Daemon| d.count(|l| l.contains("health checks: started late"));
    let before = summaries(&daemon);
    let deadline = Instant::now() + spec.window * 2 + Duration::from_secs(10);
    while summaries(&daemon) == before {
        ensure!(Instant::now() < deadline, "no summary line from the daemon");
        thread::sleep(Duration::from_millis(50));
    }
    let skip = daemon.lines().len();
    let ticks0 = procs::cpu_ticks(pid).context("the daemon's CPU time")?;
    let t0 = Instant::now();
    progress(&format!(
        "watching the steady state for {:.0} s",
        spec.window.as_secs_f64()
    ));
    let line = daemon.wait_log_after(
        skip,
        spec.window * 2 + Duration::from_secs(10),
        |l| l.contains("health checks: started late"),
        "summary",
    );
    let wall = t0.elapsed().as_secs_f64();
    let ticks1 = procs::cpu_ticks(pid).context("the daemon's CPU time")?;
    r.cpu_cores = (ticks1 - ticks0) as f64 / procs::ticks_per_second() / wall;
    let (rss, hwm) = procs::memory_kib(pid).context("the daemon's memory")?;
    (r.rss_mib, r.peak_rss_mib) = (rss as f64 / 1024.0, hwm as f64 / 1024.0);
    let summary = line.0;
    r.checks = field(&summary, "checks").unwrap_or(0.0) as u64;
    r.late_p50_ms = field(&summary, "late_p50_ms").unwrap_or(f64::NAN);
    r.late_p99_ms = field(&summary, "late_p99_ms").unwrap_or(f64::NAN);
    r.late_max_ms = field(&summary, "late_max_ms").unwrap_or(f64::NAN);
    r.waited_for_slot = field(&summary, "waited_for_slot").unwrap_or(0.0) as u64;
    let window_lines: Vec<String> = daemon.lines().into_iter().skip(skip).collect();
    r.false_downs = window_lines.iter().filter(|l| down_lines(l)).count();
    r.log_lines_per_minute = window_lines.len() as f64 * 60.0 / wall;
    progress(&format!(
        "steady: {} checks, late p99 <= {:.1} ms, {:.0}% of a core, {} false downs",
        r.checks,
        r.late_p99_ms,
        r.cpu_cores * 100.0,
        r.false_downs
    ));

    // The rack is lost.
    let rack_set: HashSet<Ipv4Addr> = rack.iter().copied().collect();
    let rack_server: &Host = lab
        .servers()
        .last()
        .context("no real server holds the rack")?;
    let skip = daemon.lines().len();
    let (_, _, rack_up) = usable(ctl, &rack_set)?;
    r.rack_backends = rack_up;
    // Watched from the BACKENDS map itself (one batch read, a few ms), not through
    // `lb-ctl stats`, whose own cost would slow the daemon down on a small machine.
    let maps = lb_ctl::maps::Maps::from_pins(ctl.pin_dir())?;
    let rack_usable = || -> Result<usize> {
        let all = lb_ctl::maps::array_batch(&maps.backends, 0, maps.backends.len())?;
        Ok(all
            .iter()
            .filter(|b| {
                b.flags & lb_common::BACKEND_USABLE != 0
                    && rack_set.contains(&lb_ctl::plan::convert::addr_v4(&b.addr))
            })
            .count())
    };
    ensure!(
        rack_usable()? == rack_up,
        "the maps and stats disagree on the rack's usable backends"
    );
    let lost = Instant::now();
    lab.set_link(rack_server, false)?;
    loop {
        let up = rack_usable()?;
        if up == 0 {
            r.rack_out_after = lost.elapsed();
            break;
        }
        if lost.elapsed() > Duration::from_secs(30) {
            bail!(
                "{up} of the rack's {rack_up} backends still usable 30 s after its link went \
                 down; the log ends:\n{}",
                tail(&daemon.lines(), 20)
            );
        }
        thread::sleep(Duration::from_millis(25));
    }
    thread::sleep(Duration::from_secs(5).saturating_sub(lost.elapsed()));
    r.rack_log_lines = daemon.lines().len() - skip;
    progress(&format!(
        "rack lost: its {} backends out of the data path after {:.2} s; {} log lines",
        r.rack_backends,
        r.rack_out_after.as_secs_f64(),
        r.rack_log_lines
    ));
    Ok(r)
}

fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}
