//! `tcpdump` on a lab host's interface, in the background, for the length of a test step: what
//! reached a host (or left it), with MACs (`-e`) and without name lookups (`-n`).

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Host, Proc};

/// A running capture; dropping it stops it.
pub struct Capture {
    proc: Proc,
    lines: Arc<Mutex<Vec<String>>>,
    /// What tcpdump said on stderr after `listening on`: its closing counts.
    summary: Arc<Mutex<Vec<String>>>,
    /// One message from each reader thread when its pipe closes.
    closed: mpsc::Receiver<()>,
}

/// How long `stop` waits for tcpdump to fall quiet, and then for its pipes to close.
const DRAIN: Duration = Duration::from_secs(3);
/// A capture that printed nothing for this long has printed every packet it had.
const QUIET: Duration = Duration::from_millis(200);

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
        let summary = Arc::new(Mutex::new(Vec::new()));
        let (closed_tx, closed) = mpsc::channel();
        let sink = lines.clone();
        let closed_out = closed_tx.clone();
        thread::spawn(move || {
            // One line per packet; tcpdump ends with an empty line, which is none.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !line.trim().is_empty() {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            }
            let _ = closed_out.send(());
        });
        let (tx, rx) = mpsc::channel();
        let said_after = summary.clone();
        thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                let listening = line.contains("listening on");
                let _ = tx.send(line);
                if listening {
                    break;
                }
            }
            for line in lines.map_while(Result::ok) {
                said_after
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line);
            }
            let _ = closed_tx.send(());
        });
        let mut said = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => said.push(line),
                Err(_) => bail!("{what} did not start capturing within 5 s: {said:?}"),
            }
        }
        Ok(Capture {
            proc,
            lines,
            summary,
            closed,
        })
    }

    /// The lines captured so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the capture once it has printed nothing for `QUIET` (at most `DRAIN`: tcpdump
    /// prints no packet still queued to it when it is stopped, and on a loaded machine it
    /// runs behind) and returns every line it printed, read to the end of its output. A
    /// capture the kernel dropped packets from is an error: its count would be short.
    pub fn stop(mut self) -> Result<Vec<String>> {
        let since = Instant::now();
        let mut seen = usize::MAX;
        while since.elapsed() < DRAIN {
            thread::sleep(QUIET);
            let now = self.lines.lock().unwrap_or_else(|e| e.into_inner()).len();
            if now == seen {
                break;
            }
            seen = now;
        }
        self.proc.stop(Duration::from_secs(2))?;
        for _ in 0..2 {
            self.closed
                .recv_timeout(DRAIN)
                .with_context(|| format!("{}: its output did not end", self.proc.what()))?;
        }
        let summary = self
            .summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(dropped) = summary.iter().find(|l| dropped_by_kernel(l) > 0) {
            bail!("{}: {dropped} (its count is short)", self.proc.what());
        }
        Ok(self.lines())
    }
}

/// N of tcpdump's closing line `N packets dropped by kernel`; 0 for any other line.
fn dropped_by_kernel(line: &str) -> u64 {
    line.strip_suffix(" packets dropped by kernel")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
