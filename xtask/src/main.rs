//! `cargo xtask`: the project's own tasks.
//!
//! - `setup`: makes a fresh machine ready (nightly rust-src, bpf-linker built against the
//!   nightly's own LLVM, the Debian packages the tests use). A second run takes seconds.
//! - `build`: the XDP object and a release `lb-ctl` at `target/release/lb-ctl`.
//! - `test`: every test of the workspace (unit, and tests/tests/ by level: packet_*, lab_*,
//!   cli_*); needs root.
//! - `demo`: the lab demo: namespaces, the director, HTTP balanced over two servers; root.
//! - `bench`: the benchmarks (data path per packet against an XDP_TX baseline, control-plane
//!   scale, HTTP through the lab against the ceiling and HAProxy) and their report in
//!   `bench/results/`; root.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod setup;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Project tasks: setup, build, test, demo, bench"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need: rust-src for the nightly, bpf-linker, Debian
    /// packages (ethtool, tcpdump, bpftool, iproute2). Skips what is already there.
    Setup,
    /// Build the XDP object and a release lb-ctl (target/release/lb-ctl).
    Build,
    /// Run every test: unit, packet-level (packet_*: BPF_PROG_TEST_RUN), lab (lab_*: namespaces
    /// and real traffic) and the binary's commands (cli_*).
    /// Needs root. Extra arguments go to `cargo test` (e.g. a test name filter).
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then run the demo on a lab of network namespaces: HTTP and UDP balanced over
    /// two real servers with live counters; a real server failing and recovering under
    /// `lb-ctl run`'s health checks; two directors failing over with VRRP; then teardown.
    /// Needs root. Extra arguments go to the demo (--requests N, --phases 1,2,3).
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks and write bench/results/: the data path per packet against a minimal
    /// XDP_TX program (lb-bench), control-plane scale (lb-bench-scale), HTTP through the lab
    /// against the ceiling, HAProxy and a minimal XDP floor, and the raw packet rate per busy
    /// core (lb-bench-lab), `lb-ctl run` with 16,000 checked
    /// backends (lb-bench-daemon), then the report (lb-bench-report:
    /// latest.md, latest.json, latest.png). Needs root. Extra arguments go to lb-bench
    /// (--repeat N, --rounds N, --katran-object PATH: Katran's balancer.bpf.o, built from
    /// Katran's own repository, timed in the same run; LB_BENCH_KATRAN_OBJECT does the same).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::setup(),
        Task::Build => build(),
        Task::Test { args } => test(&args),
        Task::Demo { args } => release_bin("lb-demo", &args),
        Task::Bench { args } => bench(&args),
    }
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} loads BPF programs and builds network namespaces: run it as root");
    }
    Ok(())
}

/// Builds lb-ctl and the lab binaries in release mode, then runs `target/release/NAME`.
fn release_bin(name: &str, args: &[String]) -> Result<()> {
    release_bins(
        &format!("cargo xtask {}", name.trim_start_matches("lb-")),
        &[(name, args)],
    )
}

/// Builds lb-ctl and the lab binaries in release mode, then runs each `target/release/NAME`
/// with its arguments, in order, stopping at the first that fails.
fn release_bins(what: &str, bins: &[(&str, &[String])]) -> Result<()> {
    require_root(what)?;
    let names: Vec<&str> = bins.iter().map(|(n, _)| *n).collect();
    eprintln!(
        "==> building lb-ctl, lab-server and {} (release)",
        names.join(", ")
    );
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "lb-ctl",
        "-p",
        "lb-tests",
        "--bins",
    ]))?;
    for (name, args) in bins {
        eprintln!("==> {name}");
        run(Command::new(root().join("target/release").join(name)).args(*args))?;
    }
    Ok(())
}

/// `cargo xtask bench`: the data path (extra arguments go there), control-plane scale, the
/// lab, the daemon at scale, then the report, which prints the tables and writes bench/results/latest.*. Each
/// bench reports its targets as met / not met and never fails because a machine was slow.
fn bench(args: &[String]) -> Result<()> {
    let started = Instant::now();
    let none: &[String] = &[];
    release_bins(
        "cargo xtask bench",
        &[
            ("lb-bench", args),
            ("lb-bench-scale", none),
            ("lb-bench-lab", none),
            ("lb-bench-daemon", none),
            ("lb-bench-report", none),
        ],
    )?;
    eprintln!(
        "==> benchmarks done in {:.0?}; results in bench/results/",
        started.elapsed()
    );
    Ok(())
}

/// The workspace root (the parent of this crate's directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command to completion, inheriting the terminal, and fails with its name if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn build() -> Result<()> {
    let started = Instant::now();
    eprintln!("==> building the XDP object and lb-ctl (release)");
    run(cargo().args(["build", "--release", "--package", "lb-ctl"]))?;
    let bin = root().join("target/release/lb-ctl");
    eprintln!(
        "==> built {} in {:.0?}",
        bin.strip_prefix(root()).unwrap_or(&bin).display(),
        started.elapsed()
    );
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    require_root("cargo xtask test")?;
    let started = Instant::now();
    // The lab_* and cli_* tests run the real binaries.
    eprintln!("==> building lb-ctl and the lab binaries");
    run(cargo().args(["build", "-p", "lb-ctl", "-p", "lb-tests", "--bins"]))?;
    eprintln!("==> cargo test --workspace (unit, packet_*, lab_*, cli_*)");
    run(cargo()
        .args(["test", "--workspace", "--all-targets", "--no-fail-fast"])
        .args(args))?;
    eprintln!("==> all tests passed in {:.0?}", started.elapsed());
    Ok(())
}
