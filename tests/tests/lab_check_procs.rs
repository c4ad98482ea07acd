//! End to end: `lb-ctl run` never leaves a check's or a hook's processes behind, in the
//! namespace lab (`lb_tests::lab`) with the real binary.
//!
//! Two services over the same four real servers give eight checkers. Their `exec` check
//! starts two background processes and waits for them, so it always outlives its 200 ms
//! timeout; `notify_down` and `notify_up` hooks do the same and outlive `--hook-timeout 2s`.
//! Every background process is `sleep` run through a symlink with a name of its own (one per
//! role), so `/proc/<pid>/stat` tells them apart, zombies included. A thread samples the
//! process table every 10 ms while the daemon runs.
//!
//! 1. At least 100 checks time out: the live check processes never exceed two per checker
//!    (the checks in flight), and each `notify_down` hook is killed at its timeout.
//! 2. A reload changes the check (every checker restarts): within 1 s none of the old
//!    check's processes is left.
//! 3. SIGTERM while checks and `notify_up` hooks run: within 1 s none of any kind is left.
//!
//! The lab, `lb-ctl` and the daemon are dropped in order at the end, also on failure.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use lb_tests::{
    daemon::Daemon,
    lab::{Lab, LabSpec},
    lbctl::LbCtl,
    procs,
};

/// Real servers, and services over them: this many checkers.
const SERVERS: usize = 4;
const SERVICES: usize = 2;
const CHECKERS: usize = SERVERS * SERVICES;
/// Background processes each check and each hook starts.
const PER_RUN: usize = 2;
/// `--hook-timeout`.
const HOOK_TIMEOUT: Duration = Duration::from_secs(2);
/// Checks that must time out before the reload.
const TIMEOUTS: usize = 100;

/// The background processes' names: `sleep` under another name, one per role.
struct Markers {
    dir: PathBuf,
}

impl Markers {
    const ROLES: [&str; 4] = ["a", "b", "d", "u"];

    /// Symlinks `lbchk-<role>-<pid>` -> the `sleep` binary, in `dir` (removed with it).
    fn new(dir: &Path) -> Markers {
        let sleep = ["/usr/bin/sleep", "/bin/sleep"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .unwrap_or_else(|| panic!("no sleep binary (coreutils) on this machine"));
        let m = Markers {
            dir: dir.to_path_buf(),
        };
        for role in Self::ROLES {
            let link = m.path(role);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(sleep, &link)
                .unwrap_or_else(|e| panic!("linking {}: {e}", link.display()));
        }
        m
    }

    fn path(&self, role: &str) -> PathBuf {
        self.dir
            .join(format!("lbchk-{role}-{}", std::process::id()))
    }

    /// What `/proc/<pid>/stat` calls a process of `role`.
    fn comm(&self, role: &str) -> String {
        procs::comm_of(&self.path(role))
    }

    /// A command that starts two of `role` in the background and waits for them.
    fn stuck(&self, role: &str) -> String {
        let p = self.path(role);
        format!("{0} 3031 & {0} 3031 & wait", p.display())
    }
}

/// What the sampler saw.
#[derive(Default, Debug)]
struct Seen {
    /// Role -> most live processes at once.
    max_live: HashMap<String, usize>,
    /// Most zombies of the markers at once (reparented to init, not reaped yet).
    max_marker_zombies: usize,
    /// Most zombies whose parent is the daemon (its own `sh` children, not reaped yet).
    max_daemon_zombies: usize,
    samples: usize,
}

/// Samples the process table every 10 ms until dropped.
struct Sampler {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    fn start(markers: &Markers, daemon: i32) -> Sampler {
        let comms: Vec<(String, String)> = Markers::ROLES
            .iter()
            .map(|r| (r.to_string(), markers.comm(r)))
            .collect();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let all = procs::all();
                let mut seen = s.lock().unwrap_or_else(|e| e.into_inner());
                for (role, comm) in &comms {
                    let live = all
                        .iter()
                        .filter(|p| &p.comm == comm && !p.is_zombie())
                        .count();
                    let max = seen.max_live.entry(role.clone()).or_default();
                    *max = (*max).max(live);
                }
                let zombies = |f: &dyn Fn(&procs::ProcStat) -> bool| {
                    all.iter().filter(|p| p.is_zombie() && f(p)).count()
                };
                let marker = zombies(&|p| comms.iter().any(|(_, c)| c == &p.comm));
                let ours = zombies(&|p| p.ppid == daemon);
                seen.max_marker_zombies = seen.max_marker_zombies.max(marker);
                seen.max_daemon_zombies = seen.max_daemon_zombies.max(ours);
                seen.samples += 1;
                drop(seen);
                thread::sleep(Duration::from_millis(10));
            }
        });
        Sampler {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn max_live(&self, role: &str) -> usize {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.max_live.get(role).copied().unwrap_or(0)
    }

    /// Forgets the maxima (to measure the next phase on its own).
    fn reset(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.max_live.clear();
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Live processes of `roles` now.
fn live(markers: &Markers, roles: &[&str]) -> usize {
    let comms: Vec<String> = roles.iter().map(|r| markers.comm(r)).collect();
    procs::all()
        .iter()
        .filter(|p| !p.is_zombie() && comms.contains(&p.comm))
        .count()
}

/// Zombies of every role now.
fn marker_zombies(markers: &Markers) -> usize {
    let comms: Vec<String> = Markers::ROLES.iter().map(|r| markers.comm(r)).collect();
    procs::all()
        .iter()
        .filter(|p| p.is_zombie() && comms.contains(&p.comm))
        .count()
}

/// Polls until no live process of `roles` is left, at most `limit` after `since`; returns
/// when that was (after `since`) or panics with what is left.
fn gone(markers: &Markers, roles: &[&str], since: Instant, limit: Duration) -> Duration {
    loop {
        let n = live(markers, roles);
        if n == 0 {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "{n} processes of {roles:?} still alive {limit:?} later"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn services(lab: &Lab, check: &str, markers: &Markers) -> String {
    let mut y = String::from("services:\n");
    for s in 0..SERVICES {
        y.push_str(&format!(
            "  - name: web{s}\n    vip: {}\n    port: {}\n    scheduler: rr\n{check}    \
             notify_down: \"{}\"\n    notify_up: \"{}\"\n    backends:\n",
            lab.vip(),
            80 + s,
            markers.stuck("d"),
            markers.stuck("u"),
        ));
        for i in 0..SERVERS {
            y.push_str(&format!("      - address: {}\n", lab.server(i).addr));
        }
    }
    y
}

/// A check line of the debug log that says the check ran out of time.
fn timed_out(l: &str) -> bool {
    l.contains("check failed") && (l.contains("no answer within") || l.contains("still running"))
}

#[test]
fn checks_and_hooks_leave_no_process_behind() {
    let lab = Lab::build(&LabSpec {
        servers: SERVERS,
        start_servers: false,
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab failed: {e:#}"));
    let ctl =
        LbCtl::new(&lab, lab.director(0)).unwrap_or_else(|e| panic!("preparing lb-ctl: {e:#}"));
    ctl.attach("eth0")
        .unwrap_or_else(|e| panic!("lb-ctl attach eth0 failed: {e:#}"));
    let file = ctl
        .write_file("services: []\n")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let markers = Markers::new(file.parent().unwrap_or_else(|| panic!("no file directory")));

    // The check outlives its timeout: 200 ms, every 300 ms, down after 2 failures.
    let check_a = format!(
        "    check:\n      type: exec\n      command: \"{}\"\n      interval: 300ms\n      \
         timeout: 200ms\n      retries: 2\n      retry_delay: 100ms\n",
        markers.stuck("a")
    );
    std::fs::write(&file, services(&lab, &check_a, &markers)).unwrap_or_else(|e| panic!("{e}"));
    let hook_timeout = format!("{}s", HOOK_TIMEOUT.as_secs());
    let mut daemon = Daemon::start_with_env(
        &ctl,
        lab.director(0),
        &file,
        &["--hook-timeout", &hook_timeout],
        &[("RUST_LOG", "info,lb_ctl::daemon=debug,lb_ctl::health=debug")],
    );
    let sampler = Sampler::start(&markers, daemon.pid());
    let started = Instant::now();

    // 1. At least 100 timed-out checks; live check processes bounded by the checks in flight.
    while daemon.count(timed_out) < TIMEOUTS {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "only {} checks timed out in 40 s; the log:\n{}",
            daemon.count(timed_out),
            daemon.lines().join("\n")
        );
        thread::sleep(Duration::from_millis(50));
    }
    let timeouts = daemon.count(timed_out);
    let (max_a, max_d) = (sampler.max_live("a"), sampler.max_live("d"));
    eprintln!(
        "{timeouts} checks timed out in {:?}; at most {max_a} check processes alive at once",
        started.elapsed()
    );
    assert!(max_a >= PER_RUN, "the check's processes were never seen");
    assert!(
        max_a <= PER_RUN * CHECKERS,
        "{max_a} check processes alive at once; checks in flight allow {}",
        PER_RUN * CHECKERS
    );
    // Each backend went down once; its notify_down hook is killed at the hook timeout.
    assert_eq!(
        daemon.count(|l| l.contains("backend down")),
        CHECKERS,
        "every backend goes down once"
    );
    assert!(
        max_d >= PER_RUN,
        "the notify_down hooks' processes were never seen"
    );
    let hooks_gone = gone(&markers, &["d"], started, Duration::from_secs(15));
    let hook_kills = daemon.count(|l| {
        l.contains("notify hook failed") && l.contains("killed") && l.contains(&hook_timeout)
    });
    eprintln!(
        "notify_down: at most {max_d} hook processes alive; none left {hooks_gone:?} after start; \
         {hook_kills} hooks killed at their timeout"
    );
    assert_eq!(
        hook_kills, CHECKERS,
        "every notify_down hook is killed at its timeout"
    );

    // 2. Reload with another check (every checker restarts): the old check's processes go.
    sampler.reset();
    let check_b = format!(
        "    check:\n      type: exec\n      command: \"{} 3031 & sleep 0.25; exit 0\"\n      \
         interval: 300ms\n      timeout: 1s\n",
        markers.path("b").display()
    );
    let skip = daemon.lines().len();
    std::fs::write(&file, services(&lab, &check_b, &markers)).unwrap_or_else(|e| panic!("{e}"));
    let hup = Instant::now();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log_after(
        skip,
        Duration::from_secs(3),
        |l| l.contains("reloaded"),
        "reloaded",
    );
    let seen = hup.elapsed();
    let after_reload = gone(&markers, &["a"], hup, seen + Duration::from_secs(1));
    eprintln!(
        "reload: `reloaded` logged {seen:?} after SIGHUP; no old check process left \
         {after_reload:?} after SIGHUP"
    );
    // The new checks pass: every backend comes up and runs its notify_up hook.
    daemon.wait_log_after(
        skip,
        Duration::from_secs(5),
        |l| l.contains("backend up"),
        "backend up",
    );
    // Every hook started, and a check in flight (each runs 250 ms of 300).
    // The counts are the ones of the sample that ended the wait, taken just before SIGTERM.
    let wait_up = Instant::now();
    let (hooks_at_term, checks_at_term) = loop {
        let (hooks, checks) = (live(&markers, &["u"]), live(&markers, &["b"]));
        if (hooks >= PER_RUN * CHECKERS && checks > 0) || wait_up.elapsed() >= HOOK_TIMEOUT / 2 {
            break (hooks, checks);
        }
        thread::sleep(Duration::from_millis(5));
    };

    // 3. SIGTERM while hooks (and checks) run: nothing is left within 1 s.
    assert!(
        hooks_at_term >= PER_RUN,
        "no notify_up hook was running at SIGTERM ({hooks_at_term} processes)"
    );
    assert!(
        checks_at_term >= 1,
        "no check was running at SIGTERM ({checks_at_term} processes)"
    );
    let term = Instant::now();
    daemon.terminate();
    let exited = term.elapsed();
    let after_term = gone(&markers, &Markers::ROLES, term, Duration::from_secs(1));
    eprintln!(
        "SIGTERM with {hooks_at_term} hook and {checks_at_term} check processes alive: exited \
         after {exited:?}, none left after {after_term:?}"
    );

    // Zombies: the daemon reaps its own children; the killed background processes go to init.
    zombies(&sampler, &markers);
    assert!(
        daemon.count(|l| l.contains("did not stop")) == 0,
        "the daemon gave up waiting for its tasks"
    );
}

/// Prints the zombie figures and checks that none accumulate: the daemon's own (its `sh`
/// children) at most one per checker and hook at any time, and the markers' (reparented to
/// init) all reaped within 5 s of the end.
fn zombies(sampler: &Sampler, markers: &Markers) {
    let (max_marker, max_daemon, samples) = {
        let seen = sampler.seen.lock().unwrap_or_else(|e| e.into_inner());
        (
            seen.max_marker_zombies,
            seen.max_daemon_zombies,
            seen.samples,
        )
    };
    let end = Instant::now();
    let mut left = marker_zombies(markers);
    while left > 0 && end.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(50));
        left = marker_zombies(markers);
    }
    eprintln!(
        "zombies over {samples} samples: at most {max_daemon} children of the daemon, at most \
         {max_marker} background processes waiting for init; {left} left {:?} after the end",
        end.elapsed()
    );
    assert!(
        max_daemon <= 2 * CHECKERS,
        "{max_daemon} unreaped children of the daemon at once"
    );
    assert_eq!(
        left, 0,
        "zombies of killed check processes are not reaped by init"
    );
}
