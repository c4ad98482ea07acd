//! `cargo xtask`: the project's own tasks.
//!
//! - `setup`: makes a fresh machine ready (nightly rust-src, bpf-linker built against the
//!   nightly's own LLVM, the Debian packages the tests use). A second run takes seconds.
//! - `build`: the XDP object and a release `lb-ctl` at `target/release/lb-ctl`.
//! - `test`: every test of the workspace (unit, packet-level, end-to-end); needs root.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod setup;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project tasks: setup, build, test")]
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
    /// Run every test: unit, packet-level (BPF_PROG_TEST_RUN) and end-to-end (namespaces).
    /// Needs root. Extra arguments go to `cargo test` (e.g. a test name filter).
    Test {
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
    }
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
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the tests load BPF programs and build network namespaces: run `cargo xtask test` \
             as root"
        );
    }
    let started = Instant::now();
    eprintln!("==> cargo test --workspace (unit, packet-level, end-to-end)");
    run(cargo()
        .args(["test", "--workspace", "--all-targets", "--no-fail-fast"])
        .args(args))?;
    eprintln!("==> all tests passed in {:.0?}", started.elapsed());
    Ok(())
}
