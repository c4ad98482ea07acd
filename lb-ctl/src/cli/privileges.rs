//! Saying clearly, before anything fails half-way, that a command needs privileges.

use anyhow::{Result, bail};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Fails with what is missing unless this process may load BPF programs and change
/// interfaces: root, or CAP_BPF (or CAP_SYS_ADMIN) with CAP_NET_ADMIN.
pub fn require(command: &str) -> Result<()> {
    let caps = effective_caps().unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    let bpf = has(CAP_BPF) || has(CAP_SYS_ADMIN);
    let net = has(CAP_NET_ADMIN);
    if bpf && net {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !bpf {
        missing.push("CAP_BPF");
    }
    if !net {
        missing.push("CAP_NET_ADMIN");
    }
    bail!(
        "`lb-ctl {command}` needs root, or the capabilities {} (missing: {}); run it with sudo",
        "CAP_BPF and CAP_NET_ADMIN",
        missing.join(", ")
    )
}
