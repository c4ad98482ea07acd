//! Removing labs: the registry of live labs, the signal handler that tears them down on
//! Ctrl-C, and the sweep of namespaces left by crashed runs.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::Command,
    sync::{
        Mutex, MutexGuard, Once,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Every lab namespace's name starts with this, then the creating process's pid, `-`, a
/// number counting that process's labs, `-`, and the host's name:
/// `lbl-<pid>-<n>-<host>` (e.g. `lbl-4242-0-director-1`). [`sweep_leftovers`] relies on it.
pub const BASE_PREFIX: &str = "lbl-";

/// Where `ip netns` keeps named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// Where bpffs is; lab pin directories are `<BPFFS>/<lab prefix>[-<director>]`.
pub(crate) const BPFFS: &str = "/sys/fs/bpf";

/// Namespaces of the labs alive in this process, by lab id (what Ctrl-C tears down).
static LIVE: Mutex<BTreeMap<u64, Vec<String>>> = Mutex::new(BTreeMap::new());

fn live() -> MutexGuard<'static, BTreeMap<u64, Vec<String>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Set once [`teardown_all`] has run: no lab may create namespaces after that.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Records that lab `id` owns namespace `ns` and runs `create` (which makes it) under the
/// registry's lock, so that a concurrent [`teardown_all`] either sees the namespace or makes
/// this fail.
pub(crate) fn register_and<T>(id: u64, ns: &str, create: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut live = live();
    if CLOSED.load(Ordering::SeqCst) {
        bail!("the labs of this process have been torn down (signal); not creating {ns}");
    }
    live.entry(id).or_default().push(ns.to_owned());
    create()
}

/// Forgets lab `id` (after it has been torn down).
pub(crate) fn unregister(id: u64) {
    live().remove(&id);
}

/// Tears down every lab of this process that is still alive: kills the processes inside its
/// namespaces and deletes them. For programs that handle signals themselves (then call this
/// from the handler and exit); the `Lab` values still alive afterwards find nothing to
/// remove, and no lab can be built in this process any more.
pub fn teardown_all() {
    let all = {
        let mut live = live();
        CLOSED.store(true, Ordering::SeqCst);
        std::mem::take(&mut *live)
    };
    let names: Vec<String> = all.into_values().flatten().collect();
    for e in destroy_namespaces(&names) {
        eprintln!("lab teardown: {e:#}");
    }
}

/// Removes what earlier runs left behind when they died without tearing down (a crash,
/// SIGKILL): every namespace `/run/netns/lbl-<pid>-...` whose `<pid>` is no longer alive
/// (after killing the processes still inside it), and every directory of such a run: pin
/// directories under `/sys/fs/bpf`, lb-ctl's runtime directories of those pins under
/// `/run/lb-ctl`, and service-file directories under `$TMPDIR`. What live processes made
/// (other test binaries running now) is left alone. Returns how many namespaces it deleted.
/// `Lab::build` calls it; so does the lab of lb-ctl's own unit tests, whose names follow the
/// same scheme. This is the only sweep of leftovers the tests have.
pub fn sweep_leftovers() -> Result<usize> {
    let dead: Vec<String> = dir_names(Path::new(NETNS_DIR))
        .with_context(|| format!("listing {NETNS_DIR}"))?
        .into_iter()
        .filter(|name| left_by_dead_run(name))
        .collect();
    let errors = destroy_namespaces(&dead);
    let left = dead
        .iter()
        .filter(|ns| Path::new(NETNS_DIR).join(ns).exists())
        .count();
    if left > 0 {
        let msgs: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
        bail!(
            "sweeping leftover lab namespaces: {left} of {} could not be deleted: {}",
            dead.len(),
            msgs.join("; ")
        );
    }
    sweep_leftover_dirs();
    Ok(dead.len())
}

/// The directories of dead runs (see [`sweep_leftovers`]). Best effort: what cannot be
/// removed is reported on stderr.
fn sweep_leftover_dirs() {
    let roots = [
        (Path::new(BPFFS).to_path_buf(), String::new()),
        (runtime_root(), runtime_key()),
        (std::env::temp_dir(), String::new()),
    ];
    for (root, key) in roots {
        for name in dir_names(&root).unwrap_or_default() {
            if name
                .strip_prefix(key.as_str())
                .is_some_and(left_by_dead_run)
            {
                remove_dir(&root.join(&name));
            }
        }
    }
}

/// Where lb-ctl keeps the runtime directories of its pin directories.
fn runtime_root() -> std::path::PathBuf {
    Path::new(lb_ctl::maps::lock::RUN_ROOT).to_path_buf()
}

/// How lb-ctl's runtime directory of the pin directory `/sys/fs/bpf/NAME` starts before
/// `NAME` (`sys_fs_bpf_`).
fn runtime_key() -> String {
    lb_ctl::maps::lock::runtime_dir(Path::new(BPFFS))
        .file_name()
        .map(|k| format!("{}_", k.to_string_lossy()))
        .unwrap_or_default()
}

/// Removes `dir` and what is in it; a missing one is fine, other failures go to stderr.
pub(crate) fn remove_dir(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("removing {}: {e}", dir.display()),
    }
}

/// The names in directory `dir`; none when it does not exist.
fn dir_names(dir: &Path) -> std::io::Result<Vec<String>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Whether `name` is a lab name (`lbl-<pid>-<n>` or `lbl-<pid>-<n>-...`) of a process that
/// no longer exists.
pub(crate) fn left_by_dead_run(name: &str) -> bool {
    creator_pid(name).is_some_and(|pid| !pid_alive(pid))
}

/// The pid encoded in a lab name, `lbl-<pid>-<n>` or `lbl-<pid>-<n>-...`; `None` for names
/// that are not a lab's.
pub(crate) fn creator_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(BASE_PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    let n = rest.split('-').next()?;
    n.parse::<u64>().ok()?;
    pid.parse().ok().filter(|&p| p > 0)
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Kills every process inside the named namespaces, waits for them to go, and deletes the
/// namespaces (deleting a namespace deletes its veth ends and the bridge in it). Missing
/// namespaces are not an error. Returns what went wrong, if anything.
pub(crate) fn destroy_namespaces(names: &[String]) -> Vec<anyhow::Error> {
    let mut errors = Vec::new();
    let existing: Vec<&String> = names
        .iter()
        .filter(|ns| Path::new(NETNS_DIR).join(ns).exists())
        .collect();
    if existing.is_empty() {
        return errors;
    }
    let ids: Vec<(u64, u64)> = existing.iter().filter_map(|ns| netns_id(ns)).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = pids_in(&ids);
        if pids.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            errors.push(anyhow::anyhow!(
                "processes {pids:?} are still inside lab namespaces after SIGKILL"
            ));
            break;
        }
        for pid in pids {
            // SAFETY: kill(2) on a pid found inside a namespace this lab created.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        thread::sleep(Duration::from_millis(20));
    }
    for ns in existing {
        match Command::new("ip").args(["netns", "delete", ns]).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                if Path::new(NETNS_DIR).join(ns).exists() {
                    errors.push(anyhow::anyhow!(
                        "`ip netns delete {ns}` failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            Err(e) => errors.push(anyhow::anyhow!("running `ip netns delete {ns}`: {e}")),
        }
        // The lab's bpffs pin directories (`<prefix>`, `<prefix>-director-2`, ...) and the
        // runtime directories lb-ctl keeps for them (also those whose pins are gone already).
        if let Some(prefix) = lab_prefix(ns) {
            for (parent, start) in [
                (Path::new(BPFFS).to_path_buf(), prefix.to_string()),
                (runtime_root(), format!("{}{prefix}", runtime_key())),
                // BGP speakers' files (`lb_tests::bird`).
                (std::env::temp_dir(), format!("{prefix}-bird")),
            ] {
                for dir in dirs_starting_with(&parent, &start) {
                    if let Err(e) = fs::remove_dir_all(&dir) {
                        errors.push(anyhow::anyhow!("removing {}: {e}", dir.display()));
                    }
                }
            }
        }
    }
    errors
}

/// The entries of `parent` named `start` or `start-...`.
fn dirs_starting_with(parent: &Path, start: &str) -> Vec<std::path::PathBuf> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name == start || name.starts_with(&format!("{start}-"))
        })
        .map(|e| e.path())
        .collect()
}

/// The lab prefix `lbl-<pid>-<n>` of one of its namespaces `lbl-<pid>-<n>-<host>`.
pub(crate) fn lab_prefix(ns: &str) -> Option<&str> {
    creator_pid(ns)?;
    let mut dashes = ns.match_indices('-').map(|(i, _)| i);
    let end = dashes.nth(2)?;
    Some(&ns[..end])
}

/// The bpffs directory where whoever drives a lab pins the director's program and maps:
/// `/sys/fs/bpf/<lab prefix>`. Tearing the lab down (or sweeping it) removes it.
pub fn pin_dir(prefix: &str) -> std::path::PathBuf {
    Path::new(BPFFS).join(prefix)
}

/// Processes (other than this one) whose network namespace is one of `ids` (device, inode of
/// the namespace file), the way `ip netns pids` finds them. Zombies have none and are skipped.
pub(crate) fn pids_in(ids: &[(u64, u64)]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|m| ids.contains(&(m.dev(), m.ino())))
                .unwrap_or(false)
        })
        .collect()
}

/// The namespace file's identity, for [`pids_in`].
pub(crate) fn netns_id(ns: &str) -> Option<(u64, u64)> {
    let m = fs::metadata(Path::new(NETNS_DIR).join(ns)).ok()?;
    Some((m.dev(), m.ino()))
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C

/// Reaps this process's exited children for at most `timeout` (until none is left), so that
/// the killed servers do not linger as zombies of an init that reaps slowly.
fn reap_children(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        // SAFETY: waitpid with a null status pointer.
        match unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } {
            0 => thread::sleep(Duration::from_millis(10)),
            r if r > 0 => {}
            _ => return,
        }
    }
}

static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// What to do on a signal before the labs are torn down.
static BEFORE_TEARDOWN: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

/// Runs `hook` when SIGINT, SIGTERM or SIGHUP arrives, before the labs are torn down: a
/// program that runs daemons in a lab (the demo) stops them gracefully there.
pub fn on_signal_before_teardown(hook: fn()) {
    BEFORE_TEARDOWN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(hook);
}

extern "C" fn on_signal(sig: libc::c_int) {
    let byte = sig as u8;
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; the buffer is a local byte.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
}

/// Makes SIGINT, SIGTERM and SIGHUP tear down every live lab ([`teardown_all`]) and then end
/// the process the way the signal would have (its default action). Installed once per process;
/// `Lab::build` calls it unless `LabSpec::install_signal_handler` is false. A program with its
/// own handler (e.g. tokio's ctrl_c) sets that to false and calls [`teardown_all`] itself.
pub fn install_signal_handler() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| result = install());
    result
}

fn install() -> Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating the signal pipe");
    }
    let [read_fd, write_fd] = fds;
    SIGNAL_PIPE.store(write_fd, Ordering::Relaxed);
    thread::Builder::new()
        .name("lab-signals".into())
        .spawn(move || {
            let mut byte = 0u8;
            loop {
                // SAFETY: read(2) of one byte into a local.
                let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
                if n == 1 {
                    break;
                }
                if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                return;
            }
            let sig = libc::c_int::from(byte);
            // Not eprintln: the test harness would capture it.
            let _ = writeln!(
                std::io::stderr(),
                "lab: signal {sig}: tearing down the labs of this process"
            );
            let hooks = BEFORE_TEARDOWN
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for hook in hooks {
                hook();
            }
            teardown_all();
            reap_children(Duration::from_secs(1));
            // SAFETY: restore the default action and re-raise, so the process ends as the
            // signal asked; _exit is the fallback if the default action did not end it.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
                libc::_exit(128 + sig);
            }
        })
        .context("starting the signal thread")?;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only calls write(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("installing the handler of signal {sig}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creator_pid_parses_lab_names_only() {
        assert_eq!(creator_pid("lbl-4242-0-switch"), Some(4242));
        assert_eq!(creator_pid("lbl-17-12-real-server-3"), Some(17));
        assert_eq!(creator_pid("lbl-x-0-switch"), None);
        assert_eq!(creator_pid("lbl-17-switch"), None);
        assert_eq!(creator_pid("lbl-4242-0"), Some(4242));
        assert_eq!(creator_pid("lbl-4242-0-director-1-lbctl"), Some(4242));
        assert_eq!(creator_pid("lbl-4242-3-director-2"), Some(4242));
        assert_eq!(creator_pid("lbl-4242-x"), None);
        assert_eq!(creator_pid("lbl-x-0"), None);
        assert_eq!(creator_pid("lbc4242-0"), None);
        assert_eq!(creator_pid("lb"), None);
        assert_eq!(creator_pid("other-17-0-switch"), None);
        assert_eq!(creator_pid("lbl-0-0-switch"), None);
    }
}
