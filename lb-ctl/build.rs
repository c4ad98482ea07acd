//! Builds the XDP object from `../lb-ebpf` with the nightly toolchain for `bpfel-unknown-none`
//! and leaves it in `OUT_DIR/lb-ebpf` (and the bench programs in `OUT_DIR/lb-bench`, the real
//! servers' decapsulation program in `OUT_DIR/lb-decap`), where `src/maps/loader.rs` embeds
//! them. One binary is then all a user installs.
//!
//! Needs `bpf-linker` on PATH and the nightly's `rust-src` (`cargo xtask setup` installs both).
//! `LB_EBPF_OBJECT=PATH` uses a prebuilt object instead (the bench and decapsulation programs
//! are then empty: `cargo xtask bench` and `lb-ctl decap` need a full build).
//!
//! This is what `aya_build::build_ebpf` (aya-build 0.2.0) runs, written out, because that
//! function cannot build this crate: it runs `cargo build --package lb-ebpf` in the outer
//! workspace, where lb-ebpf is not a member (a member would be built for the host by
//! `cargo build/clippy --workspace` on stable, and lb-ebpf is `no_std`, `no_main` and uses
//! nightly features); and it sets `CARGO_ENCODED_RUSTFLAGS` itself, which drops
//! `-Ctarget-cpu=v3` (the data path's atomic fetch-and-add on the round-robin cursor needs
//! it). It also builds without `--locked`, and lb-ebpf's own lock file is what pins aya-ebpf
//! to the versions the nightly builds. See docs/architecture.md, "Building the XDP object".

use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

/// The objects lb-ebpf builds: the data path, the programs `cargo xtask bench` uses, and the
/// real servers' decapsulation program.
const OBJECTS: [&str; 3] = ["lb-ebpf", "lb-bench", "lb-decap"];

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let ebpf_dir = manifest_dir.join("../lb-ebpf");
    let common_dir = manifest_dir.join("../lb-common");
    let dest = out_dir.join("lb-ebpf");
    println!("cargo:rerun-if-env-changed=LB_EBPF_OBJECT");
    if let Some(prebuilt) = env::var_os("LB_EBPF_OBJECT") {
        fs::copy(&prebuilt, &dest)
            .with_context(|| format!("copying LB_EBPF_OBJECT {prebuilt:?}"))?;
        for name in &OBJECTS[1..] {
            let empty = out_dir.join(name);
            fs::write(&empty, b"").with_context(|| format!("writing {}", empty.display()))?;
        }
        return Ok(());
    }
    for dir in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        common_dir.join("src"),
    ] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--release", "--locked"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--manifest-path")
        .arg(ebpf_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            ["-Ctarget-cpu=v3", "-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f"),
        );
    // The outer build's toolchain settings must not leak into the nightly build.
    for key in [
        "RUSTC",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
    ] {
        cmd.env_remove(key);
    }
    let status = cmd.status().context(
        "running `rustup run nightly cargo build` for lb-ebpf (run `cargo xtask setup` first)",
    )?;
    if !status.success() {
        bail!(
            "building the XDP program (lb-ebpf) failed: {status}. \
             `cargo xtask setup` installs bpf-linker and the nightly's rust-src it needs"
        );
    }
    for name in OBJECTS {
        let object = target_dir.join("bpfel-unknown-none/release").join(name);
        fs::copy(&object, out_dir.join(name))
            .with_context(|| format!("copying {}", object.display()))?;
    }
    Ok(())
}
