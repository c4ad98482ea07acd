//! What the demo's phases share: headers, `lb-ctl` commands, `lb-ctl run` daemons with their
//! log, the HTTP servers the demo starts and kills itself, a paced request loop that prints a
//! line per second, and the Ctrl-C handler that stops all of it.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lb_tests::{
    lab::{self, Host, Lab, Proc, http_get},
    lbctl::run_with_deadline,
};

/// How long one `lb-ctl` command (attach, apply, list, ...) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A phase's title, with a few lines saying what it shows.
pub fn section(title: &str, explain: &str) {
    println!("\n{}", "=".repeat(94));
    println!("  {title}");
    println!("{}", "=".repeat(94));
    for line in explain.lines() {
        println!("  {line}");
    }
}

/// One step of a phase.
pub fn step(what: &str) {
    println!("\n==> {what}");
}

/// Indented text under a step.
pub fn note(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

/// Runs `lb-ctl --netns NS --pin-dir DIR CMD...` (with a deadline) and returns its stdout;
/// its stderr is shown when it says something.
pub fn lb_ctl(bin: &Path, netns: &str, pin_dir: &Path, cmd: &[&str]) -> Result<String> {
    let mut c = Command::new(bin);
    c.arg("--netns")
        .arg(netns)
        .arg("--pin-dir")
        .arg(pin_dir)
        .args(cmd);
    let out = run_with_deadline(c, COMMAND_TIMEOUT)
        .with_context(|| format!("running {} {}", bin.display(), cmd.join(" ")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "lb-ctl {} failed: {}{}",
            cmd.join(" "),
            stdout,
            stderr.trim()
        );
    }
    if !stderr.trim().is_empty() {
        eprint!("{stderr}");
    }
    Ok(stdout)
}

/// Prints `text` indented (for `lb-ctl list` and the like).
pub fn show(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

// ---------------------------------------------------------------------------------------------
// lb-ctl run

/// `lb-ctl run` on a director, its log collected and shown (without timestamps) as it comes.
/// Dropping it stops it (SIGTERM, then SIGKILL after 3 s) and removes the status directory
/// it leaves under `/run/lb-ctl`.
pub struct Daemon {
    name: String,
    proc: Proc,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    run_dir: Option<PathBuf>,
}

impl Daemon {
    /// `lb-ctl --netns NS --pin-dir DIR run -f FILE --iface eth0 --detach-on-exit`; returns
    /// once it logged `running` (at most 15 s).
    pub fn start(bin: &Path, host: &Host, pin_dir: &Path, file: &Path) -> Result<Daemon> {
        let mut cmd = Command::new(bin);
        cmd.arg("--netns")
            .arg(&host.netns)
            .arg("--pin-dir")
            .arg(pin_dir)
            .args(["run".as_ref(), "-f".as_ref(), file.as_os_str()])
            .args(["--iface", "eth0", "--detach-on-exit"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn(cmd, format!("lb-ctl run on {}", host.name))?;
        register_daemon(proc.pid());
        // The directory where `lb-ctl run` publishes its VRRP state for list/stats:
        // `/run/lb-ctl/<key>/vrrp`. It removes `vrrp` when it stops, not `<key>`.
        let run_dir = lb_ctl::maps::lock::vrrp_reports_dir(pin_dir)
            .parent()
            .map(Path::to_path_buf);
        if let Some(d) = &run_dir {
            register_run_dir(d);
        }
        let stderr = proc.child_mut().stderr.take().context("no stderr")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let name = host.name.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // The map change a health check makes is in the next line too.
                if !line.contains("cause=\"health check\"") {
                    println!("      {name:<10} | {}", short(&line));
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((Instant::now(), line));
            }
        });
        let mut d = Daemon {
            name: host.name.clone(),
            proc,
            log,
            run_dir,
        };
        if d.wait_log(0, Duration::from_secs(15), |l| l.contains(" running "))
            .is_none()
        {
            if let Some(status) = d.proc.try_wait()? {
                bail!("lb-ctl run on {} exited with {status}", d.name);
            }
            bail!("lb-ctl run on {} did not start within 15 s", d.name);
        }
        Ok(d)
    }

    /// How many log lines there are so far (to wait only for later ones).
    pub fn mark(&self) -> usize {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The first log line after the first `skip` that `f` accepts, and when it was read.
    pub fn find(&self, skip: usize, f: impl Fn(&str) -> bool) -> Option<(Instant, String)> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().skip(skip).find(|(_, l)| f(l)).cloned()
    }

    /// Waits at most `timeout` for such a line.
    pub fn wait_log(
        &self,
        skip: usize,
        timeout: Duration,
        f: impl Fn(&str) -> bool,
    ) -> Option<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.find(skip, &f) {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits (at most 5 s) for a clean exit.
    pub fn stop(mut self) -> Result<()> {
        self.proc.signal(libc::SIGTERM)?;
        match self.proc.wait_timeout(Duration::from_secs(5))? {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!("lb-ctl run on {} exited with {s}", self.name),
            None => bail!(
                "lb-ctl run on {} did not stop within 5 s of SIGTERM",
                self.name
            ),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.try_wait() {
            let _ = self.proc.stop(Duration::from_secs(3));
        }
        unregister_daemon(self.proc.pid());
        if let Some(d) = &self.run_dir {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// A log line without its timestamp and module: `WARN backend down service=web ...`.
fn short(line: &str) -> String {
    for level in [" ERROR ", " WARN ", " INFO ", " DEBUG ", " TRACE "] {
        if let Some(i) = line.find(level) {
            let rest = line[i + level.len()..].trim_start();
            let rest = match rest.split_once(": ") {
                Some((target, msg)) if !target.contains(' ') => msg,
                _ => rest,
            };
            return format!("{:<5} {rest}", level.trim());
        }
    }
    line.to_string()
}

/// A log line about backend `addr` saying `what` (`backend down`, `backend up`).
pub fn about(addr: Ipv4Addr, what: &'static str) -> impl Fn(&str) -> bool {
    let addr = format!("backend={addr}");
    move |l: &str| l.contains(what) && l.split_whitespace().any(|w| w == addr)
}

// ---------------------------------------------------------------------------------------------
// The real servers' HTTP servers, started (and killed) by the demo

/// `lab-server http --name real-server-N --port 80` on `server`; returns once it answers.
pub fn start_http(lab: &Lab, server_bin: &Path, server: &Host) -> Result<Proc> {
    let bin = server_bin
        .to_str()
        .context("the lab-server path is not UTF-8")?;
    let mut cmd = server.command(&[bin, "http", "--name", &server.name, "--port", "80"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let mut proc = Proc::spawn(cmd, format!("lab-server http on {}", server.name))?;
    server.wait_entered(&mut proc)?;
    if !lab::wait_until(Duration::from_secs(5), || lab.request_count(server).is_ok()) {
        bail!(
            "the HTTP server of {} did not come up within 5 s",
            server.name
        );
    }
    Ok(proc)
}

// ---------------------------------------------------------------------------------------------
// Requests

/// One request of a [`Traffic`] loop: when it started and who answered (or why it failed).
pub struct Req {
    pub at: Instant,
    pub answer: std::result::Result<String, String>,
}

/// A paced loop of HTTP requests from the client to VIP:80, a new connection each, with a
/// deadline each and a cap on the total; prints one line per second.
pub struct Traffic<'a> {
    lab: &'a Lab,
    timeout: Duration,
    pace: Duration,
    cap: usize,
    start: Instant,
    pub reqs: Vec<Req>,
    shown: usize,
    last_line: Instant,
}

impl<'a> Traffic<'a> {
    pub fn new(lab: &'a Lab, timeout: Duration, pace: Duration, cap: usize) -> Traffic<'a> {
        let now = Instant::now();
        Traffic {
            lab,
            timeout,
            pace,
            cap,
            start: now,
            reqs: Vec::new(),
            shown: 0,
            last_line: now,
        }
    }

    /// Sends requests until `done` says so (checked before each request) or `limit` has
    /// passed; prints a line per second with the answers of that second and `status()`.
    /// Returns whether `done` said so.
    pub fn run(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&[Req]) -> bool,
        status: &mut dyn FnMut() -> String,
    ) -> Result<bool> {
        let until = Instant::now() + limit;
        let finished = loop {
            halt_if_interrupted();
            if done(&self.reqs) {
                break true;
            }
            if Instant::now() >= until {
                break false;
            }
            if self.reqs.len() >= self.cap {
                bail!("the demo's cap of {} requests was reached", self.cap);
            }
            let at = Instant::now();
            let answer = match http_get(self.lab.client(), self.lab.vip(), 80, "/", self.timeout) {
                Ok((200, body)) => Ok(body.trim().to_string()),
                Ok((code, _)) => Err(format!("HTTP {code}")),
                Err(e) => Err(format!("{:#}", e.root_cause())),
            };
            self.reqs.push(Req { at, answer });
            if self.last_line.elapsed() >= Duration::from_secs(1) {
                self.line(status);
            }
            let next = at + self.pace;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        };
        self.line(status);
        Ok(finished)
    }

    /// Sends requests for `d`.
    pub fn run_for(&mut self, d: Duration, status: &mut dyn FnMut() -> String) -> Result<()> {
        self.run(d, |_| false, status).map(|_| ())
    }

    /// The line for the requests not shown yet.
    fn line(&mut self, status: &mut dyn FnMut() -> String) {
        self.last_line = Instant::now();
        let new = &self.reqs[self.shown..];
        if new.is_empty() {
            return;
        }
        self.shown = self.reqs.len();
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        let mut failed = 0;
        let mut why = None;
        for r in new {
            match &r.answer {
                Ok(who) => *by.entry(who.as_str()).or_default() += 1,
                Err(e) => {
                    failed += 1;
                    why.get_or_insert(e.as_str());
                }
            }
        }
        let mut parts: Vec<String> = by.iter().map(|(s, n)| format!("{s} {n:>2}")).collect();
        if failed > 0 {
            parts.push(format!("FAILED {failed:>2} ({})", why.unwrap_or("")));
        }
        println!(
            "    {:>5.1} s  {:>3} requests: {:<42} {}",
            self.start.elapsed().as_secs_f64(),
            new.len(),
            parts.join(", "),
            status()
        );
    }

    /// The requests that started at or after `t`.
    pub fn since(&self, t: Instant) -> impl Iterator<Item = &Req> {
        self.reqs.iter().filter(move |r| r.at >= t)
    }
}

/// How many of `reqs` failed, and who answered the others (name -> count).
pub fn tally<'r>(reqs: impl Iterator<Item = &'r Req>) -> (usize, BTreeMap<String, usize>) {
    let mut failed = 0;
    let mut by = BTreeMap::new();
    for r in reqs {
        match &r.answer {
            Ok(who) => *by.entry(who.clone()).or_default() += 1,
            Err(_) => failed += 1,
        }
    }
    (failed, by)
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C

static DAEMONS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static RUN_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// After Ctrl-C the signal thread stops everything and ends the process: the main thread
/// waits here for that instead of going on (and reporting the errors the teardown causes).
pub fn halt_if_interrupted() {
    while INTERRUPTED.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_secs(1));
    }
}

fn register_daemon(pid: u32) {
    DAEMONS.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

fn unregister_daemon(pid: u32) {
    DAEMONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
}

fn register_run_dir(dir: &Path) {
    RUN_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir.to_path_buf());
}

/// Ctrl-C (SIGINT), SIGTERM and SIGHUP: the lab's handler ([`lab::install_signal_handler`])
/// first stops the `lb-ctl run` daemons gracefully (so a VRRP master gives its address up and
/// each removes its status files), then tears down every lab of this process (the processes
/// in it, its namespaces, its pins) and ends the process as the signal asks.
pub fn install_signal_handler() -> Result<()> {
    lab::on_signal_before_teardown(stop_daemons);
    lab::install_signal_handler()
}

fn stop_daemons() {
    INTERRUPTED.store(true, Ordering::SeqCst);
    eprintln!("\nlb-demo: interrupted: stopping lb-ctl run, tearing the lab down");
    let pids: Vec<u32> = DAEMONS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for &pid in &pids {
        // SAFETY: kill(2) on a daemon this process started and has not reaped yet.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && pids.iter().any(|&p| running(p)) {
        thread::sleep(Duration::from_millis(20));
    }
    for d in RUN_DIRS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = fs::remove_dir_all(d);
    }
}

/// Whether `pid` is alive and not a zombie.
fn running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Removes the `lb-ctl run` status directories (`/run/lb-ctl/sys_fs_bpf_lbl-<pid>-...`) of
/// lab runs whose process is gone (a demo or test that was killed with SIGKILL).
pub fn sweep_run_dirs() {
    let Ok(entries) = fs::read_dir("/run/lb-ctl") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("sys_fs_bpf_lbl-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
            .filter(|&p| p > 0);
        // SAFETY: signal 0 only checks that the process exists.
        if let Some(pid) = pid
            && unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// What is left of lab `prefix` on this machine (namespaces, pins, status directories); empty
/// when the teardown removed everything.
pub fn leftovers(prefix: &str, pins: &Path) -> Vec<String> {
    let mut left = Vec::new();
    let netns = Path::new("/run/netns");
    if let Ok(entries) = fs::read_dir(netns) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&format!("{prefix}-")) {
                left.push(format!("namespace {n}"));
            }
        }
    }
    if pins.exists() {
        left.push(format!("pins {}", pins.display()));
    }
    for d in RUN_DIRS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if d.exists() && d.to_string_lossy().contains(prefix) {
            left.push(format!("status directory {}", d.display()));
        }
    }
    left
}

/// The director of `lab` whose MAC `mac` is.
pub fn director_of(lab: &Lab, mac: Option<[u8; 6]>) -> &str {
    match mac {
        Some(m) => lab
            .directors()
            .iter()
            .find(|d| d.mac == m)
            .map_or("someone else", |d| d.name.as_str()),
        None => "nobody (no ARP entry)",
    }
}

/// Whether `host` holds `vip` on its `eth0`.
pub fn has_vip(host: &Host, vip: Ipv4Addr) -> bool {
    host.exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .is_ok_and(|out| out.contains(&format!("inet {vip}/32")))
}
