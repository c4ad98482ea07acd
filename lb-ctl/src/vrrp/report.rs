//! VRRP state for `lb-ctl list` and `stats`, which run in other processes: the daemon writes
//! one small JSON file per instance every second (a transition shows within a second), under a directory
//! derived from the pin directory (so one director's commands see its own instances), and
//! removes them when it stops. A file whose writer is gone is ignored.

use std::{fs, path::Path};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// What `list` and `stats` show of one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub instance: String,
    pub state: String,
    /// The current master's address, as this instance knows it.
    pub master: Option<String>,
    /// The instance's virtual addresses (`addr/len`; IPv4 or IPv6). Absent in the files of
    /// earlier versions.
    #[serde(default)]
    pub virtual_addresses: Vec<String>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Malformed, wrong-TTL, wrong-password or mismatched adverts (counted and ignored).
    pub errors: u64,
    pub became_master: u64,
    /// The daemon that wrote it.
    pub pid: u32,
}

/// `<instance>.json`, every character but ASCII letters, digits, `-` and `_` as `_`.
fn file_name(instance: &str) -> String {
    let unsafe_char = |c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_');
    format!("{}.json", instance.replace(unsafe_char, "_"))
}

/// Writes each report (atomically: a temporary file, then a rename).
pub fn write_all(dir: &Path, reports: &[Report]) -> Result<()> {
    if reports.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for r in reports {
        let path = dir.join(file_name(&r.instance));
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec(r)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Removes the reports of `instances` (the daemon is stopping), and the directories if empty.
pub fn remove_all<'a>(dir: &Path, instances: impl IntoIterator<Item = &'a str>) {
    for name in instances {
        let _ = fs::remove_file(dir.join(file_name(name)));
    }
    let _ = fs::remove_dir(dir);
    if let Some(parent) = dir.parent() {
        let _ = fs::remove_dir(parent);
    }
}

/// The reports of running daemons for this pin directory, by instance name.
pub fn read_all(dir: &Path) -> Vec<Report> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Report> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice::<Report>(&fs::read(e.path()).ok()?).ok())
        .filter(|r| Path::new(&format!("/proc/{}", r.pid)).exists())
        .collect();
    out.sort_by(|a, b| a.instance.cmp(&b.instance));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(file_name("VI_1"), "VI_1.json");
        assert_eq!(file_name("a/b"), "a_b.json");
    }

    #[test]
    fn reports_of_dead_writers_are_ignored() {
        let dir =
            std::path::PathBuf::from(format!("/tmp/lb-report-test-{}/vrrp", std::process::id()));
        let live = Report {
            instance: "VI_1".into(),
            state: "master".into(),
            pid: std::process::id(),
            ..Report::default()
        };
        let dead = Report {
            instance: "VI_2".into(),
            pid: u32::MAX - 1,
            ..Report::default()
        };
        write_all(&dir, &[live.clone(), dead]).expect("write");
        assert_eq!(read_all(&dir), vec![live]);
        remove_all(&dir, ["VI_1", "VI_2"]);
        assert!(!dir.exists(), "the directory goes with the last report");
    }
}
