//! Shared helpers of the integration tests.

pub mod bird;
pub mod cli;
pub mod daemon;
pub mod decap;
pub mod env;
pub mod flood;
pub mod icmp;
pub mod keepalived;
pub mod lab;
pub mod lbctl;
pub mod packet;
pub mod procs;
pub mod scale;
pub mod scaleout;
pub mod services;
pub mod stats;
pub mod tunnel;

/// Where `cargo xtask bench` writes its results: `<workspace>/bench/results`.
pub fn bench_results_dir() -> std::path::PathBuf {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).join("bench/results")
}

/// Writes a bench's results as pretty JSON to `path`, creating its directory.
pub fn write_bench_json(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
