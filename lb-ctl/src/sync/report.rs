//! The sync's counters, and its state for `lb-ctl list` and `stats`, which run in other
//! processes: the daemon writes one small JSON file every second beside the VRRP reports and
//! removes it when it stops. A file whose writer is gone is ignored, as for VRRP.

use std::{
    fs,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::packet::Reject;

/// Counters shared by the socket's task and the daemon.
#[derive(Debug, Default)]
pub struct Stats {
    pub sent_datagrams: AtomicU64,
    pub sent_entries: AtomicU64,
    /// Datagrams that could not be sent (the socket refused them).
    pub send_errors: AtomicU64,
    pub received_datagrams: AtomicU64,
    pub received_entries: AtomicU64,
    /// Entries written into FLOWS or PERSIST.
    pub installed: AtomicU64,
    /// Entries not written because the local one is as recent or more.
    pub kept_local: AtomicU64,
    /// Entries whose service (VIP, port, protocol) is not configured here.
    pub unknown_service: AtomicU64,
    /// Entries whose backend (address, port) is not in the service here.
    pub unknown_backend: AtomicU64,
    /// Entries that could not be written (a map error).
    pub install_errors: AtomicU64,
    /// Refused datagrams, by reason, in [`Reject::ALL`] order.
    pub rejected: [AtomicU64; 6],
}

impl Stats {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn reject(&self, r: Reject) {
        let i = Reject::ALL.iter().position(|x| *x == r).unwrap_or(0);
        Self::add(&self.rejected[i], 1);
    }
}

/// What `list` and `stats` show of the sync.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// As configured: `auto`, `master`, `backup`, `both`.
    pub role: String,
    /// What it does now: `sending`, `receiving`, `sending+receiving`.
    pub active: String,
    pub interface: String,
    /// The unicast peers, or the multicast group.
    pub peers: Vec<String>,
    pub port: u16,
    pub sent_datagrams: u64,
    pub sent_entries: u64,
    pub send_errors: u64,
    pub received_datagrams: u64,
    pub received_entries: u64,
    pub installed: u64,
    pub kept_local: u64,
    pub unknown_service: u64,
    pub unknown_backend: u64,
    pub install_errors: u64,
    /// Refused datagrams by reason (`garbage`, `truncated`, `bad_version`, `bad_hmac`,
    /// `replayed`, `stale`), every reason present.
    pub rejected: Vec<(String, u64)>,
    /// The daemon that wrote it.
    pub pid: u32,
}

impl Report {
    /// The counters of `s` with the rest of the report.
    pub fn counters(mut self, s: &Stats) -> Report {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.sent_datagrams = n(&s.sent_datagrams);
        self.sent_entries = n(&s.sent_entries);
        self.send_errors = n(&s.send_errors);
        self.received_datagrams = n(&s.received_datagrams);
        self.received_entries = n(&s.received_entries);
        self.installed = n(&s.installed);
        self.kept_local = n(&s.kept_local);
        self.unknown_service = n(&s.unknown_service);
        self.unknown_backend = n(&s.unknown_backend);
        self.install_errors = n(&s.install_errors);
        self.rejected = (Reject::ALL.iter().zip(&s.rejected))
            .map(|(r, c)| (r.as_str().to_string(), n(c)))
            .collect();
        self.pid = std::process::id();
        self
    }

    /// Refused datagrams, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }
}

/// Writes `report` to `path` (atomically: a temporary file, then a rename).
pub fn write(path: &Path, report: &Report) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec(report)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Removes the file (the daemon is stopping).
pub fn remove(path: &Path) {
    let _ = fs::remove_file(path);
}

/// The report of a running daemon at `path`; None when there is none.
pub fn read(path: &Path) -> Option<Report> {
    let r: Report = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    Path::new(&format!("/proc/{}", r.pid)).exists().then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_dead_writers() {
        let path = std::path::PathBuf::from(format!(
            "/tmp/lb-sync-report-test-{}/sync.json",
            std::process::id()
        ));
        let stats = Stats::default();
        Stats::add(&stats.installed, 3);
        stats.reject(Reject::BadHmac);
        let r = Report {
            role: "auto".into(),
            ..Report::default()
        }
        .counters(&stats);
        assert_eq!(r.installed, 3);
        assert_eq!(r.rejected[3], ("bad_hmac".to_string(), 1));
        assert_eq!(r.rejected_total(), 1);
        write(&path, &r).expect("write");
        assert_eq!(read(&path), Some(r.clone()));
        write(
            &path,
            &Report {
                pid: u32::MAX - 1,
                ..r
            },
        )
        .expect("write");
        assert_eq!(read(&path), None);
        remove(&path);
        let _ = fs::remove_dir(path.parent().expect("a parent"));
    }
}
