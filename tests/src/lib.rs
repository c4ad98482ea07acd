//! Shared helpers of the integration tests.

pub mod lab;
pub mod lbctl;
pub mod packet;

/// Where `cargo xtask bench` writes its results: `<workspace>/bench/results`.
pub fn bench_results_dir() -> std::path::PathBuf {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).join("bench/results")
}
