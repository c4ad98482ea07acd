//! `tcpdump` on a lab host's interface, in the background, for the length of a test step: what
//! reached a host (or left it), with MACs (`-e`) and without name lookups (`-n`).

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    sync::{Arc, Mutex, mpsc},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::{Host, Proc};

/// A running capture; dropping it stops it.
pub struct Capture {
    proc: Proc,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Capture {
    /// Starts `tcpdump -l -n -e -i IFACE FILTER` inside `host` and returns once it captures
    /// (its `listening on` line), at most 5 s.
    pub fn start(host: &Host, iface: &str, filter: &str) -> Result<Capture> {
        let mut cmd = host.command(&[
            "tcpdump",
            "-l",
            "-n",
            "-e",
            "-i",
            iface,
            "--immediate-mode",
            filter,
        ]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("tcpdump on {iface} in {}", host.name);
        let mut proc = Proc::spawn(cmd, what.clone())
            .context("starting tcpdump (install it with `cargo xtask setup`)")?;
        let stdout = proc.child_mut().stdout.take().context("no stdout")?;
        let stderr = proc.child_mut().stderr.take().context("no stderr")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        thread::spawn(move || {
            // One line per packet; tcpdump ends with an empty line, which is none.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !line.trim().is_empty() {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                let listening = line.contains("listening on");
                let _ = tx.send(line);
                if listening {
                    break;
                }
            }
            for _ in lines {}
        });
        let mut said = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => said.push(line),
                Err(_) => bail!("{what} did not start capturing within 5 s: {said:?}"),
            }
        }
        Ok(Capture { proc, lines })
    }

    /// The lines captured so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the capture (after 200 ms, for the last packets to be printed) and returns every
    /// line it printed.
    pub fn stop(mut self) -> Result<Vec<String>> {
        thread::sleep(Duration::from_millis(200));
        self.proc.stop(Duration::from_secs(2))?;
        // The reader thread has the last lines once the pipe closes.
        thread::sleep(Duration::from_millis(50));
        Ok(self.lines())
    }
}
