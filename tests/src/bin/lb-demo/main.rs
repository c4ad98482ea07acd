//! `cargo xtask demo`: the whole thing working, on labs of network namespaces, as an operator
//! walkthrough in five parts. Needs root. Every phase's traffic is a bounded number of
//! requests, each with a deadline; everything is torn down at the end, on failure and on
//! Ctrl-C (`docs/lab.md` has the rules kept here).
//!
//! 1. **Balancing** (`examples/services.yaml`): builds the seed topology (client, switch,
//!    director .134 with the VIP .133, real servers .135 and .136; the same over IPv6 in
//!    fd00:58::/64), attaches the director program in native mode, applies the file, sends a
//!    bounded stream of HTTP requests (and a few UDP ones) from the client while showing live
//!    counters, then HTTP requests to the IPv6 VIP, then shows `lb-ctl list`.
//! 2. **Health checks** (`examples/health.yaml`, [`health`]): on a second lab (two directors;
//!    the demo runs the real servers' HTTP servers itself), `lb-ctl run` on director-1; kills
//!    real-server-1's HTTP server while requests go on, shows it marked `down` and every later
//!    request answered by real-server-2, starts it again and shows it back `up` and serving.
//! 3. **Two directors, VRRP** (`examples/vrrp-director-{1,2}.yaml`, [`vrrp`]): both directors
//!    run `lb-ctl run` with a `vrrp:` block; pulls director-1's cable while requests go on,
//!    measures the gap until director-2 serves and the requests that failed meanwhile, plugs it
//!    back in and shows director-1 preempting.
//! 4. **Tunnel mode** (`examples/tunnel.yaml`, [`tunnel`]): a lab whose real servers sit
//!    behind a router on 10.20.0.0/24; each takes the outer header off with `lb-ctl decap
//!    attach eth0`; `lb-ctl run` on the director sends HTTP requests to them over IPIP, and the
//!    replies go from the servers through the router to the client, none through the director.
//! 5. **Scale-out** ([`scaleout`]): three active directors behind a router running BIRD 2 with
//!    ECMP, each announcing the VIP over eBGP through its own BIRD; the router's 3-next-hop
//!    route, requests from 64 client addresses spread over the directors, director-2 stopped
//!    with SIGTERM (withdrawn first), the route down to 2 next hops, requests still answered.
//!
//! Exits non-zero if something that must work did not: a failed request where none may fail
//! (phase 1; after the health check noticed; after the failover or the preemption), traffic
//! not balanced, no detection, no failover or no preemption within its bound, or anything left
//! behind after a teardown.

mod health;
mod scaleout;
mod support;
mod tunnel;
mod vrrp;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lb_tests::lab::{self, Lab, LabSpec, Proc, http_get, udp_request};
use support::{leftovers, section, step};

const REQUESTS: usize = 200;
/// HTTP requests to the IPv6 VIP in part 1.
const REQUESTS6: usize = 20;
const PACE: Duration = Duration::from_millis(25);
const TIMEOUT: Duration = Duration::from_secs(2);

pub struct Args {
    requests: usize,
    pub lb_ctl: PathBuf,
    services: PathBuf,
    pub examples: PathBuf,
    phases: Vec<u8>,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `path` relative to the workspace when it is inside it (`examples/health.yaml`).
pub fn rel(path: &Path) -> String {
    let ws = workspace();
    path.strip_prefix(&ws).unwrap_or(path).display().to_string()
}

fn parse_args() -> Result<Args> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut args = Args {
        requests: REQUESTS,
        lb_ctl: exe.with_file_name("lb-ctl"),
        services: workspace().join("examples/services.yaml"),
        examples: workspace().join("examples"),
        phases: vec![1, 2, 3, 4, 5],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--requests" => args.requests = value()?.parse().context("--requests")?,
            "--lb-ctl" => args.lb_ctl = value()?.into(),
            "--services" => args.services = value()?.into(),
            "--examples" => args.examples = value()?.into(),
            "--phases" => {
                args.phases = value()?
                    .split(',')
                    .map(|p| match p.trim() {
                        p @ ("1" | "2" | "3" | "4" | "5") => Ok(p.as_bytes()[0] - b'0'),
                        other => bail!("--phases: {other:?} is not 1, 2, 3, 4 or 5"),
                    })
                    .collect::<Result<_>>()?
            }
            "--help" | "-h" => {
                println!(
                    "lb-demo [--requests N ({REQUESTS})] [--lb-ctl PATH] [--services FILE] \
                     [--examples DIR] [--phases 1,2,3,4,5]\n\
                     1: builds a namespace lab, balances HTTP and UDP through the XDP director, \
                     shows list and stats.\n\
                     2: `lb-ctl run` with a health check: a real server dies and comes back \
                     (DIR/health.yaml).\n\
                     3: two directors with VRRP: the master's link goes down and comes back \
                     (DIR/vrrp-director-1.yaml, DIR/vrrp-director-2.yaml).\n\
                     4: tunnel mode: real servers behind a router, reached over IPIP \
                     (DIR/tunnel.yaml).\n\
                     5: scale-out: three directors behind a router running BIRD 2 (ECMP), each \
                     lb-ctl run announcing the VIP; one stopped with SIGTERM \
                     (DIR/bird-director.conf, DIR/bird-router.conf).\n\
                     Tears everything down. Needs root."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; see --help"),
        }
    }
    if !args.lb_ctl.exists() {
        bail!(
            "{} is missing: run `cargo xtask demo`, which builds it",
            args.lb_ctl.display()
        );
    }
    Ok(args)
}

/// Runs lb-ctl inside director-1's namespace with the lab's pin directory.
fn lb_ctl(args: &Args, lab: &Lab, cmd: &[&str]) -> Result<String> {
    support::lb_ctl(&args.lb_ctl, &lab.director(0).netns, &lab.pin_dir(), cmd)
}

/// Drops the lab and checks that nothing of it is left on the machine.
pub fn teardown(lab: Lab) -> Result<()> {
    let (prefix, pins) = (lab.prefix().to_owned(), lab.pin_dir());
    drop(lab);
    let left = leftovers(&prefix, &pins);
    if !left.is_empty() {
        bail!("the teardown of lab {prefix} left: {}", left.join(", "));
    }
    println!("    lab {prefix} torn down: no namespace, pin or process of it is left");
    Ok(())
}

/// What the phases measured, for the closing summary.
#[derive(Default)]
pub struct Summary {
    lines: Vec<String>,
}

impl Summary {
    pub fn add(&mut self, line: String) {
        self.lines.push(line);
    }
}

fn main() -> Result<()> {
    let result = demo();
    if result.is_err() {
        support::halt_if_interrupted();
    }
    result
}

fn demo() -> Result<()> {
    let args = parse_args()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo builds network namespaces and loads BPF programs: run it as root");
    }
    support::install_signal_handler()?;
    support::sweep_run_dirs();
    let started = Instant::now();
    let mut summary = Summary::default();
    if args.phases.contains(&1) {
        balance(&args, &mut summary)?;
    }
    if args.phases.contains(&2) || args.phases.contains(&3) {
        two_directors(&args, &mut summary)?;
    }
    if args.phases.contains(&4) {
        tunnel::run(&args, &mut summary)?;
    }
    if args.phases.contains(&5) {
        scaleout::run(&mut summary)?;
    }
    section(
        &format!("Done in {:.1?}: everything worked", started.elapsed()),
        &summary.lines.join("\n"),
    );
    Ok(())
}

/// Phase 1: balancing with `lb-ctl attach` and `apply`, as before.
fn balance(args: &Args, summary: &mut Summary) -> Result<()> {
    let started = Instant::now();
    section(
        "Part 1 of 5: balancing (lb-ctl attach, apply, list, stats)",
        "The director's XDP program sends each new connection to VIP:80 to a real server by \
         rewriting\nthe destination MAC; the real server answers the client directly (LVS-DR).",
    );
    step(
        "building the lab: client .100, switch, director .134 (VIP .133), real servers .135 and \
         .136;\n    in IPv6 the same hosts are fd00:58::100, ::134 (VIP6 fd00:58::133), ::135, ::136",
    );
    let lab = Lab::build(&LabSpec {
        install_signal_handler: false,
        ..LabSpec::default()
    })?;
    println!(
        "    lab {} ready in {:.1?}",
        lab.prefix(),
        started.elapsed()
    );

    step("lb-ctl attach eth0 (native XDP on the director)");
    print!("{}", lb_ctl(args, &lab, &["attach", "eth0"])?);

    step(&format!("lb-ctl apply -f {}", args.services.display()));
    let services = args.services.to_string_lossy().into_owned();
    print!("{}", lb_ctl(args, &lab, &["apply", "-f", &services])?);
    print!("{}", lb_ctl(args, &lab, &["list"])?);

    step(&format!(
        "{} HTTP requests from the client to {}:80, a new connection each",
        args.requests,
        lab.vip()
    ));
    let mut by_server: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    let mut last_report = Instant::now();
    for i in 0..args.requests {
        support::halt_if_interrupted();
        let answer = http_get(lab.client(), lab.vip(), 80, "/", TIMEOUT);
        tally(&mut by_server, &mut failed, &format!("request {i}"), answer);
        if last_report.elapsed() >= Duration::from_secs(1) || i + 1 == args.requests {
            last_report = Instant::now();
            println!(
                "    {:>4}/{} answered, {failed} failed   {}",
                i + 1,
                args.requests,
                split(&by_server)
            );
            // Live counters, as an operator would watch them.
            let stats = lb_ctl(args, &lab, &["stats"])?;
            for line in stats.lines().take_while(|l| !l.is_empty()) {
                println!("      {line}");
            }
        }
        std::thread::sleep(PACE);
    }

    step("5 UDP requests to the echo service (port 5353)");
    for i in 0..5 {
        let reply = udp_request(
            lab.client(),
            lab.vip(),
            5353,
            format!("hello {i}").as_bytes(),
            TIMEOUT,
        )?;
        println!("    {}", String::from_utf8_lossy(&reply).trim());
    }

    let (by_server6, failed6) = http_round6(&lab)?;

    step("lb-ctl list and lb-ctl stats");
    print!("{}", lb_ctl(args, &lab, &["list"])?);
    print!("{}", lb_ctl(args, &lab, &["stats"])?);

    step("lb-ctl detach eth0, and tearing the lab down");
    print!("{}", lb_ctl(args, &lab, &["detach", "eth0"])?);
    let servers = by_server.len();
    teardown(lab)?;
    println!("    done in {:.1?}", started.elapsed());

    if failed > 0 {
        bail!("{failed} of {} requests failed", args.requests);
    }
    if servers < 2 {
        bail!("only {servers} real server answered; traffic was not balanced");
    }
    if failed6 > 0 {
        bail!("{failed6} of {REQUESTS6} requests to the IPv6 VIP failed");
    }
    if by_server6.len() < 2 {
        bail!("over IPv6 only {by_server6:?} answered; traffic was not balanced");
    }
    println!(
        "\nall {} requests answered, balanced over {servers} real servers",
        args.requests
    );
    summary.add(format!(
        "part 1  balancing: {} HTTP requests, none failed, over {servers} real servers; 5 UDP \
         echoes; {REQUESTS6} HTTP requests over IPv6, none failed ({})",
        args.requests,
        split(&by_server6)
    ));
    Ok(())
}

/// Counts one request's `answer`: the answering server (the body), or a failure (logged).
pub fn tally(
    by_server: &mut BTreeMap<String, usize>,
    failed: &mut usize,
    what: &str,
    answer: Result<(u16, String)>,
) {
    match answer {
        Ok((200, body)) => *by_server.entry(body.trim().to_string()).or_default() += 1,
        Ok((status, _)) => {
            *failed += 1;
            eprintln!("    {what}: HTTP {status}");
        }
        Err(e) => {
            *failed += 1;
            eprintln!("    {what}: {e:#}");
        }
    }
}

/// `real-server-1: 10, real-server-2: 10`.
pub fn split(by_server: &BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = by_server.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    parts.join(", ")
}

/// [`REQUESTS6`] HTTP requests from the client to the IPv6 VIP (the `web6` service), a new
/// connection each; who answered, and how many failed.
fn http_round6(lab: &Lab) -> Result<(BTreeMap<String, usize>, usize)> {
    let vip6 = IpAddr::from(lab.vip6());
    step(&format!(
        "{REQUESTS6} HTTP requests from the client to [{vip6}]:80 (the web6 service)"
    ));
    let mut by_server: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for i in 0..REQUESTS6 {
        support::halt_if_interrupted();
        let answer = http_get(lab.client(), vip6, 80, "/", TIMEOUT);
        tally(
            &mut by_server,
            &mut failed,
            &format!("request {i} over IPv6"),
            answer,
        );
    }
    println!(
        "    {}/{REQUESTS6} answered, {failed} failed   {}",
        REQUESTS6 - failed,
        split(&by_server)
    );
    Ok((by_server, failed))
}

/// The lab of parts 2 and 3: two directors, two real servers whose HTTP servers the demo runs
/// itself (so it can kill one). Field order is drop order.
pub struct Lab2 {
    pub http: Vec<Option<Proc>>,
    pub server_bin: PathBuf,
    pub lab: Lab,
}

impl Lab2 {
    /// The pin directory of director `i` (inside the lab's, so the teardown removes it).
    pub fn pin_dir(&self, i: usize) -> PathBuf {
        self.lab.pin_dir().join(&self.lab.director(i).name)
    }

    /// Starts real-server-(i+1)'s HTTP server.
    pub fn start_http(&mut self, i: usize) -> Result<()> {
        let p = support::start_http(&self.lab, &self.server_bin, self.lab.server(i))?;
        self.http[i] = Some(p);
        Ok(())
    }
}

fn two_directors(args: &Args, summary: &mut Summary) -> Result<()> {
    let started = Instant::now();
    section(
        "The lab for parts 2 and 3: two directors",
        "client .100, switch, director-1 .134 (holds the VIP .133 for now), director-2 .137,\n\
         real servers .135 and .136 (VIP on lo), whose HTTP servers the demo starts itself.",
    );
    step("building the lab");
    let lab = Lab::build(&LabSpec {
        directors: 2,
        servers: 2,
        start_servers: false,
        install_signal_handler: false,
        ..LabSpec::default()
    })?;
    let server_bin = lab::find_server_bin(None)?;
    let mut l2 = Lab2 {
        http: vec![None, None],
        server_bin,
        lab,
    };
    for i in 0..2 {
        l2.start_http(i)?;
    }
    println!(
        "    lab {} ready in {:.1?}; HTTP servers up on real-server-1 and real-server-2",
        l2.lab.prefix(),
        started.elapsed()
    );
    if args.phases.contains(&2) {
        health::run(args, &mut l2, summary)?;
    }
    if args.phases.contains(&3) {
        vrrp::run(args, &mut l2, summary)?;
    }
    step("tearing the lab down");
    let Lab2 { http, lab, .. } = l2;
    drop(http);
    teardown(lab)
}
