//! One writer at a time: the lock every command that writes a pin directory's maps holds.
//!
//! `attach`, `detach`, `apply` (not `--dry-run`) and `lb-ctl run` take an exclusive `flock`
//! on `/run/lb-ctl/<key>/lock` ([`runtime_dir`]) before they touch the pins or the maps. A
//! second writer waits, saying once which process holds the lock and what it runs, and gives
//! up with a clear error after its timeout; two writes never interleave. `lb-ctl run` holds the
//! lock for as long as it runs: while a daemon owns a pin directory, every other writer is
//! refused at once with the daemon's pid and file, so nothing but the daemon writes there.
//!
//! The holder writes `pid`, `daemon` and `command` lines into the lock file after taking it.
//! A waiter believes them only when the pid matches the lock's holder as the kernel reports
//! it in `/proc/locks`, so a stale line from an earlier holder is never shown.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Where `lb-ctl` keeps the runtime files of one pin directory.
pub const RUN_ROOT: &str = "/run/lb-ctl";

/// How long a writer waits for the lock unless told otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

const POLL: Duration = Duration::from_millis(50);

/// `<runtime dir>/vrrp`: where the daemon running for `pin_dir` writes its VRRP instances'
/// reports, which `list` and `stats` read (`vrrp::report`).
pub fn vrrp_reports_dir(pin_dir: &Path) -> PathBuf {
    runtime_dir(pin_dir).join("vrrp")
}

/// `<runtime dir>/announce.json`: where the daemon running for `pin_dir` writes what it
/// announces (`announce:`), which `list` and `stats` read (`net::announced`).
pub fn announce_report(pin_dir: &Path) -> PathBuf {
    runtime_dir(pin_dir).join("announce.json")
}

/// `<runtime dir>/sync.json`: where the daemon running for `pin_dir` writes its sync's state
/// and counters (`sync:`), which `list` and `stats` read (`sync::report`).
pub fn sync_report(pin_dir: &Path) -> PathBuf {
    runtime_dir(pin_dir).join("sync.json")
}

/// `/run/lb-ctl/<pin dir with / as _>`: the runtime files (the lock, the VRRP status files)
/// of the data path pinned under `pin_dir`.
pub fn runtime_dir(pin_dir: &Path) -> PathBuf {
    let key: String = pin_dir
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Path::new(RUN_ROOT).join(key)
}

/// Refuses a directory or file that someone other than this process's user could change:
/// owned by another user, or writable by its group or by others.
pub fn check_private(path: &Path, meta: &fs::Metadata) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        bail!(
            "{} is owned by uid {}, not by uid {me} (root) who runs lb-ctl: another user could \
             replace what is in it; remove it, or `chown root:root {}`",
            path.display(),
            meta.uid(),
            path.display()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "{} is writable by its group or by others (mode {:o}): another user could replace \
             what is in it; `chmod go-w {}`",
            path.display(),
            meta.mode() & 0o7777,
            path.display()
        );
    }
    Ok(())
}

/// Creates `dir` and its missing parents with mode 0700, and checks that every one of them
/// that lb-ctl uses is private ([`check_private`]).
pub fn private_dir(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.exists() {
        missing.push(p);
        p = match p.parent() {
            Some(parent) => parent,
            None => break,
        };
    }
    for d in missing.iter().rev() {
        match fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            // Another writer made it in the meantime: checked below like any existing one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", d.display())),
        }
    }
    let meta = fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    check_private(dir, &meta)
}

/// What the holder of the lock is doing, as written into the lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// `lb-ctl run`, which holds the lock for as long as it runs.
    pub daemon: bool,
    /// The command line, e.g. `lb-ctl apply -f services.yaml`.
    pub command: String,
}

impl Holder {
    /// This process, running `command`.
    pub fn me(command: impl Into<String>, daemon: bool) -> Holder {
        Holder {
            pid: std::process::id(),
            daemon,
            command: command.into(),
        }
    }

    fn render(&self) -> String {
        format!(
            "pid {}\ndaemon {}\ncommand {}\n",
            self.pid,
            if self.daemon { "yes" } else { "no" },
            self.command
        )
    }

    fn parse(text: &str) -> Option<Holder> {
        let (mut pid, mut daemon, mut command) = (None, None, None);
        for line in text.lines() {
            let (k, v) = line.split_once(' ')?;
            match k {
                "pid" => pid = v.parse().ok(),
                "daemon" => daemon = Some(v == "yes"),
                "command" => command = Some(v.to_string()),
                _ => {}
            }
        }
        Some(Holder {
            pid: pid?,
            daemon: daemon?,
            command: command?,
        })
    }
}

/// The exclusive lock on a pin directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct WriteLock {
    _file: File,
    path: PathBuf,
}

impl WriteLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the write lock of `pin_dir` for `me`, waiting at most `wait` for another writer.
///
/// Fails at once when a daemon (`lb-ctl run`) holds it, naming it: while it runs it is the
/// only writer. `on_wait` is called once, with the holder, when this call has to wait.
pub fn acquire(
    pin_dir: &Path,
    me: &Holder,
    wait: Duration,
    mut on_wait: impl FnMut(&Holder),
) -> Result<WriteLock> {
    let dir = runtime_dir(pin_dir);
    private_dir(&dir)?;
    let path = dir.join("lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    check_private(&path, &meta)?;
    let started = Instant::now();
    let mut waited = false;
    loop {
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            file.set_len(0)
                .and_then(|()| file.seek(SeekFrom::Start(0)))
                .and_then(|_| file.write_all(me.render().as_bytes()))
                .with_context(|| format!("writing {}", path.display()))?;
            return Ok(WriteLock { _file: file, path });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err).with_context(|| format!("locking {}", path.display()));
        }
        if let Some(holder) = current_holder(&mut file, meta.ino()) {
            if holder.daemon {
                bail!(
                    "{} is owned by a running daemon: pid {} (`{}`). While it runs it is the only \
                     writer of this data path: change the file it runs (it reloads it) or send it \
                     SIGHUP (`kill -HUP {}`); stop it first to use attach, detach or apply by hand",
                    pin_dir.display(),
                    holder.pid,
                    holder.command,
                    holder.pid
                );
            }
            if !waited {
                on_wait(&holder);
                waited = true;
            }
            if started.elapsed() >= wait {
                bail!(
                    "{} is still locked by pid {} (`{}`) after {:.0?}; wait for it to finish, \
                     or give a longer --wait",
                    pin_dir.display(),
                    holder.pid,
                    holder.command,
                    wait
                );
            }
        } else if started.elapsed() >= wait {
            bail!(
                "{} is still locked after {:.0?} (see {}); wait, or give a longer --wait",
                pin_dir.display(),
                wait,
                path.display()
            );
        }
        thread::sleep(POLL);
    }
}

/// The holder named in the lock file, if the kernel agrees that this pid holds the lock.
fn current_holder(file: &mut File, ino: u64) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    let holder = Holder::parse(&text)?;
    lock_pids(ino).contains(&holder.pid).then_some(holder)
}

/// The pids that hold a `flock` on the file with inode `ino`, from `/proc/locks`
/// (`1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF`).
fn lock_pids(ino: u64) -> Vec<u32> {
    let Ok(text) = fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Blocked waiters are listed with "->"; they hold nothing.
            if f.get(1) != Some(&"FLOCK") {
                return None;
            }
            let file_ino = f.get(5)?.rsplit(':').next()?.parse::<u64>().ok()?;
            (file_ino == ino).then(|| f.get(4)?.parse().ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_dir_flattens_the_pin_dir() {
        assert_eq!(
            runtime_dir(Path::new("/sys/fs/bpf/lb")),
            Path::new("/run/lb-ctl/sys_fs_bpf_lb")
        );
        assert_eq!(
            vrrp_reports_dir(Path::new("/sys/fs/bpf/lb")),
            Path::new("/run/lb-ctl/sys_fs_bpf_lb/vrrp")
        );
    }

    #[test]
    fn holder_round_trip() {
        let h = Holder {
            pid: 42,
            daemon: true,
            command: "lb-ctl run -f a b.yaml".into(),
        };
        assert_eq!(Holder::parse(&h.render()), Some(h));
        assert_eq!(Holder::parse("pid x\n"), None);
        assert_eq!(Holder::parse(""), None);
    }
}
