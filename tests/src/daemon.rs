//! `lb-ctl run` in a lab director, with its log (stderr) collected for tests to wait on.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
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
    pub fn start(ctl: &LbCtl, director: &Host, file: &Path, extra: &[&str]) -> Daemon {
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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
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

    /// How it exited, or None while it runs.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.try_wait().ok().flatten()
    }

    pub fn signal(&mut self, sig: i32) {
        self.proc
            .signal(sig)
            .unwrap_or_else(|e| panic!("signalling lb-ctl run: {e:#}"));
    }
}
