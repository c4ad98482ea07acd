//! `lb-ctl run` in a lab director as a background process of a test, with its log (stderr)
//! collected so the test can wait for and count log lines. Its waits panic with the whole log
//! when a line does not come. Dropping it kills it.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use crate::{
    lab::{Host, Proc},
    lbctl::LbCtl,
};

/// The daemon, with its log collected. Dropping it kills it.
pub struct Daemon {
    pub proc: Proc,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// `lb-ctl --netns <director> --pin-dir <ctl's> run -f FILE --iface eth0 EXTRA...`; echoes
    /// its log to stderr (`[lb-ctl run] ...`) and waits (at most 15 s) for its `running` line.
    pub fn start(ctl: &LbCtl, director: &Host, file: &Path, extra: &[&str]) -> Daemon {
        Self::start_with_env(ctl, director, file, extra, &[])
    }

    /// [`Daemon::start`] with `env` added to its environment.
    pub fn start_with_env(
        ctl: &LbCtl,
        director: &Host,
        file: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut cmd = Command::new(ctl.bin());
        cmd.arg("--netns")
            .arg(&director.netns)
            .arg("--pin-dir")
            .arg(ctl.pin_dir())
            .arg("run")
            .arg("-f")
            .arg(file)
            .args(["--iface", "eth0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        Self::spawn(cmd)
    }

    /// Spawns `cmd`, an `lb-ctl run` command line however started (under `setpriv`, with
    /// `NOTIFY_SOCKET` ...), collects its log as [`Daemon::start`] does and waits (at most
    /// 15 s) for its `running` line.
    pub fn spawn(mut cmd: Command) -> Daemon {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut proc = Proc::spawn(cmd, "lb-ctl run").unwrap_or_else(|e| panic!("{e:#}"));
        let stderr = proc
            .child_mut()
            .stderr
            .take()
            .unwrap_or_else(|| panic!("no stderr"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[lb-ctl run] {line}");
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let d = Daemon { proc, log };
        d.wait_log(
            Duration::from_secs(15),
            |l| l.contains("running"),
            "running",
        );
        d
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.proc.pid() as i32
    }

    /// How many log lines so far `f` accepts.
    pub fn count(&self, f: impl Fn(&str) -> bool) -> usize {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().filter(|l| f(l)).count()
    }

    /// Its log so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for a log line that `f` accepts (at most `timeout`); returns it and how long it took.
    pub fn wait_log(
        &self,
        timeout: Duration,
        f: impl Fn(&str) -> bool,
        what: &str,
    ) -> (String, Duration) {
        self.wait_log_after(0, timeout, f, what)
    }

    /// Like [`Daemon::wait_log`], for lines that come after the first `skip` lines.
    pub fn wait_log_after(
        &self,
        skip: usize,
        timeout: Duration,
        f: impl Fn(&str) -> bool,
        what: &str,
    ) -> (String, Duration) {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines().iter().skip(skip).find(|l| f(l)) {
                return (l.clone(), start.elapsed());
            }
            assert!(
                start.elapsed() < timeout,
                "no log line `{what}` within {timeout:?}; the log:\n{}",
                self.lines().join("\n")
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its exit status if it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.proc.try_wait().ok().flatten()
    }

    /// Waits at most `timeout` for it to exit by itself; `None` if it still runs then.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc
            .wait_timeout(timeout)
            .unwrap_or_else(|e| panic!("waiting for lb-ctl run: {e:#}"))
    }

    /// Sends it SIGTERM and waits (at most 5 s) for it to exit, which it must do with status 0;
    /// panics otherwise.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let status = self
            .wait_timeout(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("lb-ctl run did not stop within 5 s of SIGTERM"));
        assert!(status.success(), "lb-ctl run exited with {status}");
        status
    }

    /// Sends it `sig`.
    pub fn signal(&mut self, sig: i32) {
        self.proc
            .signal(sig)
            .unwrap_or_else(|e| panic!("signalling lb-ctl run: {e:#}"));
    }
}
