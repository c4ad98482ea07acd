//! `lb-ctl run` as a background process of a test, with its log (stderr) collected so the
//! test can wait for and count log lines. Dropping it kills it.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    lab::{Host, Proc},
    lbctl::LbCtl,
};

/// A running `lb-ctl --netns <director> --pin-dir <ctl's> run -f FILE --iface eth0 ...`.
pub struct RunDaemon {
    proc: Proc,
    log: Arc<Mutex<Vec<String>>>,
}

impl RunDaemon {
    /// Starts it with `extra` arguments and `env` added, echoes its log to stderr
    /// (`[lb-ctl run] ...`) and waits (at most 15 s) for its `running` line.
    pub fn start(
        ctl: &LbCtl,
        director: &Host,
        file: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<RunDaemon> {
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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn(cmd, "lb-ctl run")?;
        let stderr = proc
            .child_mut()
            .stderr
            .take()
            .context("lb-ctl run has no stderr pipe")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[lb-ctl run] {line}");
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let d = RunDaemon { proc, log };
        d.wait_log_after(
            0,
            Duration::from_secs(15),
            |l| l.contains("running"),
            "running",
        )?;
        Ok(d)
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.proc.pid() as i32
    }

    /// Its log so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many log lines `f` accepts.
    pub fn count(&self, f: impl Fn(&str) -> bool) -> usize {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().filter(|l| f(l)).count()
    }

    /// Waits (at most `timeout`) for a line after the first `skip` that `f` accepts; returns
    /// it and how long it took. The error holds the whole log.
    pub fn wait_log_after(
        &self,
        skip: usize,
        timeout: Duration,
        f: impl Fn(&str) -> bool,
        what: &str,
    ) -> Result<(String, Duration)> {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines().iter().skip(skip).find(|l| f(l)) {
                return Ok((l.clone(), start.elapsed()));
            }
            if start.elapsed() >= timeout {
                bail!(
                    "no log line `{what}` within {timeout:?}; the log:\n{}",
                    self.lines().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends it `sig`.
    pub fn signal(&mut self, sig: i32) -> Result<()> {
        self.proc.signal(sig)
    }

    /// Waits at most `timeout` for it to exit by itself; `None` if it still runs then.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        self.proc.wait_timeout(timeout)
    }
}
