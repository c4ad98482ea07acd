//! When `lb-ctl run` reloads its service file: only whole files.
//!
//! - A file replaced by a rename (`mv new services.yaml`: a new inode at the path, or a
//!   symlink now pointing elsewhere) is complete the moment it appears: it is read at once.
//! - A file changed in place may be half-written: it is read only once its content (size,
//!   modification time and a hash of the text) has stayed the same for the settle time, and
//!   the text that settled is the text parsed.
//! - SIGHUP reads it at once ([`Watch::read_now`]).
//!
//! Every read goes through [`config::read`], so a FIFO, a device or a huge file is refused
//! without blocking, and the refusal is reported once per change, not every poll.

use std::collections::hash_map::DefaultHasher;
use std::fs::Metadata;
use std::hash::{Hash as _, Hasher as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tracing::info;

use crate::config::{self, ConfigError};

/// How long a file changed in place must stay unchanged before it is reloaded, by default.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(5);

/// What was seen of the file: which file it is and what is in it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    /// (device, inode): a rename over the path changes it.
    id: (u64, u64),
    size: u64,
    mtime: Option<SystemTime>,
    /// A hash of the text; 0 when it could not be read.
    hash: u64,
}

impl Seen {
    fn of(meta: &Metadata, text: Option<&str>) -> Seen {
        Seen {
            id: (meta.dev(), meta.ino()),
            size: meta.len(),
            mtime: meta.modified().ok(),
            hash: text.map_or(0, |t| {
                let mut h = DefaultHasher::new();
                t.hash(&mut h);
                h.finish()
            }),
        }
    }

    fn same_stat(&self, meta: &Metadata) -> bool {
        self.id == (meta.dev(), meta.ino())
            && self.size == meta.len()
            && self.mtime == meta.modified().ok()
    }
}

/// A version of the file changed in place, waiting to settle.
struct Pending {
    seen: Seen,
    since: Instant,
    text: Result<String, ConfigError>,
}

/// The file is to be reloaded: why, and its text (or why it could not be read).
#[derive(Debug)]
pub struct Reload {
    /// `"replaced"` (a rename) or `"changed in place, then unchanged for the settle time"`.
    pub cause: &'static str,
    pub text: Result<String, ConfigError>,
}

/// Watches one service file; call [`Watch::poll`] about once a second.
pub struct Watch {
    path: PathBuf,
    settle: Duration,
    /// What was last read for a (re)load, refused or not.
    loaded: Option<Seen>,
    pending: Option<Pending>,
}

impl Watch {
    pub fn new(path: &Path, settle: Duration) -> Watch {
        Watch {
            path: path.to_path_buf(),
            settle,
            loaded: None,
            pending: None,
        }
    }

    /// Reads the file now (at start, on SIGHUP), whatever its state, and takes it as loaded.
    pub fn read_now(&mut self) -> Result<String, ConfigError> {
        self.pending = None;
        let (seen, text) = self.read(None);
        self.loaded = seen;
        text
    }

    /// Looks at the file once; `Some` when it is to be reloaded now (see the module doc).
    pub fn poll(&mut self, now: Instant) -> Option<Reload> {
        // Not there (a non-atomic replacement under way, say): wait for it.
        let meta = std::fs::metadata(&self.path).ok()?;
        let replaced = self
            .loaded
            .as_ref()
            .is_none_or(|l| l.id != (meta.dev(), meta.ino()));
        if replaced {
            self.pending = None;
            let (seen, text) = self.read(Some(&meta));
            self.loaded = seen;
            return Some(Reload {
                cause: "replaced",
                text,
            });
        }
        if self.pending.is_none() && self.loaded.as_ref().is_some_and(|l| l.same_stat(&meta)) {
            return None;
        }
        let (seen, text) = self.read(Some(&meta));
        let seen = seen?;
        if self.loaded.as_ref() == Some(&seen) {
            // Changed back to what is loaded.
            self.pending = None;
            return None;
        }
        match &self.pending {
            Some(p) if p.seen == seen => {
                if now.duration_since(p.since) < self.settle {
                    return None;
                }
                let p = self.pending.take()?;
                self.loaded = Some(p.seen);
                Some(Reload {
                    cause: "changed in place, then unchanged for the settle time",
                    text: p.text,
                })
            }
            _ => {
                info!(
                    file = %self.path.display(),
                    settle = ?self.settle,
                    "the file is being changed in place: waiting until it has not changed for \
                     the settle time before reading it (replace it with `mv` to take effect at \
                     once)"
                );
                self.pending = Some(Pending {
                    seen,
                    since: now,
                    text,
                });
                None
            }
        }
    }

    /// Reads the file; what was seen comes from the descriptor read, else from `meta`.
    fn read(&self, meta: Option<&Metadata>) -> (Option<Seen>, Result<String, ConfigError>) {
        match config::read(&self.path) {
            Ok(file) => (Some(Seen::of(&file.meta, Some(&file.text))), Ok(file.text)),
            Err(e) => {
                let meta = meta.cloned().or_else(|| std::fs::metadata(&self.path).ok());
                (meta.map(|m| Seen::of(&m, None)), Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("lb-ctl-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        Dir(d)
    }

    fn write(p: &Path, text: &str) {
        std::fs::write(p, text).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn in_place_changes_wait_for_the_settle_time_and_renames_do_not() {
        let d = dir("settle");
        let path = d.0.join("s.yaml");
        write(&path, "services: []\n");
        let settle = Duration::from_secs(5);
        let mut w = Watch::new(&path, settle);
        assert_eq!(w.read_now().ok().as_deref(), Some("services: []\n"));
        let t0 = Instant::now();
        assert!(w.poll(t0).is_none(), "nothing changed");

        // In place, in two halves: the first half is never handed out.
        write(&path, "services:\n");
        assert!(w.poll(t0).is_none());
        assert!(w.poll(t0 + Duration::from_secs(2)).is_none());
        write(&path, "services:\n  - name: a\n");
        assert!(
            w.poll(t0 + Duration::from_secs(3)).is_none(),
            "restarts the wait"
        );
        assert!(
            w.poll(t0 + Duration::from_secs(7)).is_none(),
            "4 s unchanged"
        );
        let r = w
            .poll(t0 + Duration::from_secs(8))
            .expect("settled after 5 s");
        assert_eq!(r.text.ok().as_deref(), Some("services:\n  - name: a\n"));
        assert!(w.poll(t0 + Duration::from_secs(9)).is_none(), "once");

        // A rename is read at once.
        let new = d.0.join("new.yaml");
        write(&new, "services: [] # new\n");
        std::fs::rename(&new, &path).unwrap_or_else(|e| panic!("{e}"));
        let r = w
            .poll(t0 + Duration::from_secs(9))
            .expect("a rename reloads at once");
        assert_eq!(r.cause, "replaced");
        assert_eq!(r.text.ok().as_deref(), Some("services: [] # new\n"));
        assert!(w.poll(t0 + Duration::from_secs(10)).is_none());
    }

    #[test]
    fn a_fifo_renamed_over_the_file_is_refused_once_without_blocking() {
        let d = dir("fifo");
        let path = d.0.join("s.yaml");
        write(&path, "services: []\n");
        let mut w = Watch::new(&path, DEFAULT_SETTLE);
        assert!(w.read_now().is_ok());
        let fifo = d.0.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::fs::rename(&fifo, &path).unwrap_or_else(|e| panic!("{e}"));
        let now = Instant::now();
        let r = w.poll(now).expect("replaced");
        let err = r.text.expect_err("a FIFO is refused");
        assert!(err.to_string().contains("is a FIFO"), "{err}");
        assert!(
            w.poll(now + Duration::from_secs(1)).is_none(),
            "reported once"
        );
    }
}
