//! What the daemon announces, for `lb-ctl list` and `stats`, which run in other processes: the
//! daemon writes one small JSON file (every service with `announce:`, its state) whenever a
//! state changes, beside the VRRP reports, and removes it when it stops. A file whose writer
//! is gone is ignored, as for VRRP.

use std::{fs, path::Path};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// One service with `announce:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub service: String,
    pub vip: String,
    pub table: u32,
    /// `bird`, `frr` or `kernel`.
    pub via: String,
    /// `no_backend` or `below_quorum`.
    pub withdraw_when: String,
    /// True while the VIP's route is in the table (the speaker announces it).
    pub announced: bool,
    /// `announced`, `withdrawn: no backend`, `withdrawn: below quorum`, `withdrawn:
    /// draining`, ...
    pub state: String,
    /// The daemon that wrote it.
    pub pid: u32,
}

/// Writes `reports` to `path` (atomically: a temporary file, then a rename).
pub fn write(path: &Path, reports: &[Report]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec(reports)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Removes the file (the daemon is stopping).
pub fn remove(path: &Path) {
    let _ = fs::remove_file(path);
}

/// The reports of a running daemon at `path`, in service order; empty when there is none.
pub fn read(path: &Path) -> Vec<Report> {
    let Ok(bytes) = fs::read(path) else {
        return Vec::new();
    };
    let Ok(list) = serde_json::from_slice::<Vec<Report>>(&bytes) else {
        return Vec::new();
    };
    list.into_iter()
        .filter(|r| Path::new(&format!("/proc/{}", r.pid)).exists())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_of_dead_writers_are_ignored() {
        let path = std::path::PathBuf::from(format!(
            "/tmp/lb-announced-test-{}/announce.json",
            std::process::id()
        ));
        let live = Report {
            service: "web".into(),
            vip: "192.168.58.133".into(),
            table: 100,
            announced: true,
            state: "announced".into(),
            pid: std::process::id(),
            ..Report::default()
        };
        let dead = Report {
            service: "old".into(),
            pid: u32::MAX - 1,
            ..Report::default()
        };
        write(&path, &[live.clone(), dead]).expect("write");
        assert_eq!(read(&path), vec![live]);
        remove(&path);
        assert!(read(&path).is_empty());
        let _ = fs::remove_dir(path.parent().expect("a parent"));
    }
}
