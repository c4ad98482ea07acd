//! `cargo xtask setup`: everything a fresh machine of this kind needs to build and test.

use std::{
    fs,
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::run;

/// The bpf-linker release that builds against the nightly's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_FEATURE: &str = "llvm-22";

/// Debian packages the tests and the lab use.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "tcpdump",
    "bpftool",
    "iputils-ping",
    "keepalived",
    // The ECMP lab: the directors' and the router's BGP speaker.
    "bird2",
    // The unit file's check (systemd-analyze), the man pages' rendering, setpriv/unshare.
    "systemd",
    "man-db",
    "groff-base",
    "util-linux",
    // lab_live: the dashboard page opened in a real headless browser.
    "chromium",
    // cargo xtask bench: load generator, the HAProxy comparison, the chart's font.
    "wrk",
    "haproxy",
    "fonts-dejavu-core",
    // cargo xtask bench: the raw packet rate's generator (xdp-trafficgen).
    "xdp-tools",
];

pub fn setup() -> Result<()> {
    let started = Instant::now();
    step("1/3", "rust-src for the nightly toolchain", rust_src)?;
    step(
        "2/3",
        "bpf-linker built against the nightly's LLVM",
        bpf_linker,
    )?;
    step("3/3", "Debian packages for the tests", debian_packages)?;
    eprintln!("==> setup done in {:.0?}", started.elapsed());
    Ok(())
}

fn step(n: &str, what: &str, f: fn() -> Result<bool>) -> Result<()> {
    eprintln!("==> [{n}] {what}");
    let t = Instant::now();
    let changed = f().with_context(|| format!("setup step {n} ({what}) failed"))?;
    eprintln!(
        "    {} ({:.1?})",
        if changed {
            "installed"
        } else {
            "already there"
        },
        t.elapsed()
    );
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn rust_src() -> Result<bool> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context(
        "the nightly toolchain is needed to build the XDP program (`rustup toolchain list`)",
    )?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(false);
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    Ok(true)
}

fn nightly_sysroot() -> Result<PathBuf> {
    let s = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    Ok(PathBuf::from(s.trim()))
}

/// bpf-linker on PATH, at our version, with its libLLVM resolved.
fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
        .unwrap_or(false)
}

fn bpf_linker() -> Result<bool> {
    if bpf_linker_ok() {
        return Ok(false);
    }
    // Debian's LLVM is too old and the default features want a system LLVM 23: link against
    // the nightly toolchain's own libLLVM instead.
    let sysroot = nightly_sysroot()?;
    let lib = sysroot.join("lib");
    let llvm = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so") && n.contains("rust-"))
        })
        .with_context(|| format!("no libLLVM.so*-rust-* in {}", lib.display()))?;
    let prefix = std::env::temp_dir().join(format!("lb-llvm-prefix-{}", std::process::id()));
    let _ = fs::remove_dir_all(&prefix);
    fs::create_dir_all(prefix.join("lib"))?;
    std::os::unix::fs::symlink(&llvm, prefix.join("lib/libLLVM.so"))
        .context("linking libLLVM.so into a temporary prefix")?;
    eprintln!("    building bpf-linker {BPF_LINKER_VERSION} (about a minute on 2 cores)");
    let result = run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args(["--no-default-features", "--features", BPF_LINKER_FEATURE])
        .env("LLVM_PREFIX", &prefix)
        .env(
            "RUSTFLAGS",
            format!("-C link-arg=-Wl,-rpath,{}", lib.display()),
        ));
    let _ = fs::remove_dir_all(&prefix);
    result?;
    if !bpf_linker_ok() {
        bail!("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?");
    }
    Ok(true)
}

fn missing_packages() -> Vec<&'static str> {
    DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect()
}

fn debian_packages() -> Result<bool> {
    let missing = missing_packages();
    if missing.is_empty() {
        return Ok(false);
    }
    eprintln!("    installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("installing Debian packages (needs root)")?;
    Ok(true)
}
