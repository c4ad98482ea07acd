//! `cargo xtask demo`: the whole thing working, on a lab of network namespaces.
//!
//! Builds the seed topology (client, switch, director .134 with the VIP .133, real servers
//! .135 and .136), attaches the director program in native mode, applies
//! `examples/services.yaml`, sends a bounded stream of HTTP requests (and a few UDP ones) from
//! the client while showing live counters, then shows `lb-ctl list` and tears everything down.
//! Needs root. Exits non-zero if a request failed or traffic was not balanced.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lb_tests::lab::{Lab, LabSpec, http_get, udp_request};

const REQUESTS: usize = 200;
const PACE: Duration = Duration::from_millis(25);
const TIMEOUT: Duration = Duration::from_secs(2);

struct Args {
    requests: usize,
    lb_ctl: PathBuf,
    services: PathBuf,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn parse_args() -> Result<Args> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut args = Args {
        requests: REQUESTS,
        lb_ctl: exe.with_file_name("lb-ctl"),
        services: workspace().join("examples/services.yaml"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--requests" => args.requests = value()?.parse().context("--requests")?,
            "--lb-ctl" => args.lb_ctl = value()?.into(),
            "--services" => args.services = value()?.into(),
            "--help" | "-h" => {
                println!(
                    "lb-demo [--requests N ({REQUESTS})] [--lb-ctl PATH] [--services FILE]\n\
                     Builds a namespace lab, balances HTTP and UDP through the XDP director, \
                     shows list and stats, tears down. Needs root."
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

/// Runs lb-ctl inside the director's namespace with the lab's pin directory.
fn lb_ctl(args: &Args, lab: &Lab, cmd: &[&str]) -> Result<String> {
    let dir = lab.pin_dir();
    let out = Command::new(&args.lb_ctl)
        .arg("--netns")
        .arg(&lab.director(0).netns)
        .arg("--pin-dir")
        .arg(&dir)
        .args(cmd)
        .output()
        .with_context(|| format!("running {}", args.lb_ctl.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "lb-ctl {} failed: {}{}",
            cmd.join(" "),
            stdout,
            stderr.trim()
        );
    }
    if !stderr.trim().is_empty() {
        eprint!("{stderr}");
    }
    Ok(stdout)
}

fn step(what: &str) {
    println!("\n==> {what}");
}

fn main() -> Result<()> {
    let args = parse_args()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo builds network namespaces and loads BPF programs: run it as root");
    }
    let started = Instant::now();
    step(
        "building the lab: client .100, switch, director .134 (VIP .133), real servers .135 and .136",
    );
    let lab = Lab::build(&LabSpec::default())?;
    println!(
        "    lab {} ready in {:.1?}",
        lab.prefix(),
        started.elapsed()
    );

    step("lb-ctl attach eth0 (native XDP on the director)");
    print!("{}", lb_ctl(&args, &lab, &["attach", "eth0"])?);

    step(&format!("lb-ctl apply -f {}", args.services.display()));
    let services = args.services.to_string_lossy().into_owned();
    print!("{}", lb_ctl(&args, &lab, &["apply", "-f", &services])?);
    print!("{}", lb_ctl(&args, &lab, &["list"])?);

    step(&format!(
        "{} HTTP requests from the client to {}:80, a new connection each",
        args.requests,
        lab.vip()
    ));
    let mut by_server: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    let mut last_report = Instant::now();
    for i in 0..args.requests {
        match http_get(lab.client(), lab.vip(), 80, "/", TIMEOUT) {
            Ok((200, body)) => *by_server.entry(body.trim().to_string()).or_default() += 1,
            Ok((status, _)) => {
                failed += 1;
                eprintln!("    request {i}: HTTP {status}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("    request {i}: {e:#}");
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) || i + 1 == args.requests {
            last_report = Instant::now();
            let split: Vec<String> = by_server.iter().map(|(s, n)| format!("{s}: {n}")).collect();
            println!(
                "    {:>4}/{} answered, {failed} failed   {}",
                i + 1,
                args.requests,
                split.join(", ")
            );
            // Live counters, as an operator would watch them.
            let stats = lb_ctl(&args, &lab, &["stats"])?;
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

    step("lb-ctl list and lb-ctl stats");
    print!("{}", lb_ctl(&args, &lab, &["list"])?);
    print!("{}", lb_ctl(&args, &lab, &["stats"])?);

    step("lb-ctl detach eth0, and tearing the lab down");
    print!("{}", lb_ctl(&args, &lab, &["detach", "eth0"])?);
    let servers = by_server.len();
    drop(lab);
    println!("    done in {:.1?}", started.elapsed());

    if failed > 0 {
        bail!("{failed} of {} requests failed", args.requests);
    }
    if servers < 2 {
        bail!("only {servers} real server answered; traffic was not balanced");
    }
    println!(
        "\nall {} requests answered, balanced over {servers} real servers",
        args.requests
    );
    Ok(())
}
