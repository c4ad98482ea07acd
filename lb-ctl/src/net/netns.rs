//! Network namespaces by name (`/run/netns/NAME`, as `ip netns add` makes them), entered with
//! setns(2) alone. Unlike `ip netns exec`, this makes no new mount namespace, so the bpffs
//! mounted at `/sys/fs/bpf` (and every pin under it) stays visible.

use std::{fs::File, os::fd::AsRawFd, path::PathBuf, thread};

use anyhow::{Context as _, Result, bail};

/// The file that stands for a named namespace; a value with a `/` is taken as a path.
pub fn path(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        PathBuf::from("/run/netns").join(name)
    }
}

/// Moves the calling thread into the named network namespace. A process that wants to be
/// wholly inside must call this before it starts any other thread (before the tokio runtime).
pub fn enter(name: &str) -> Result<()> {
    let path = path(name);
    let file = File::open(&path).with_context(|| {
        format!(
            "opening network namespace {} (does it exist? `ip netns list` shows them)",
            path.display()
        )
    })?;
    // SAFETY: setns on a valid fd we own.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EPERM) {
            bail!("entering network namespace {name}: permission denied (run as root)");
        }
        return Err(err).with_context(|| format!("entering network namespace {name}"));
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside the named network namespace and returns its result.
/// The caller's own thread stays where it is.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let name = name.to_owned();
    thread::spawn(move || {
        enter(&name)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread inside network namespace panicked"))?
}
