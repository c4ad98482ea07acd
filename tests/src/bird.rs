//! BIRD 2 (Debian's `bird2`) as the BGP speaker of a lab's directors and router: the
//! configuration generated from the project's examples (`examples/bird-director.conf`,
//! `examples/bird-router.conf`, the only template), a process per host in the foreground with
//! its own control socket, and `birdc` to ask it about its sessions and routes.
//!
//! Dropping a [`Bird`] kills it and removes its files; the lab's teardown kills whatever is
//! left inside its namespaces, and the sweep of crashed runs removes their directories.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::lab::{Host, Proc, wait_until};

/// The director configuration the daemon expects, written for director-1 of the ECMP lab.
pub const DIRECTOR_EXAMPLE: &str = include_str!("../../examples/bird-director.conf");
/// The router configuration, written for the ECMP lab's router and its three directors.
pub const ROUTER_EXAMPLE: &str = include_str!("../../examples/bird-router.conf");
/// The director address the director example is written for.
pub const EXAMPLE_DIRECTOR: Ipv4Addr = Ipv4Addr::new(192, 168, 58, 134);
/// The router address both examples are written for.
pub const EXAMPLE_ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 58, 1);
/// The line that starts each director's session in the router example.
const ROUTER_SESSION_LINE: &str = "protocol bgp director";

/// Whether the sessions use BFD (the examples do) or only BGP's hold timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    Bfd,
    HoldTimer,
}

/// The configuration of the director at `director`: the example with its address.
pub fn director_conf(director: Ipv4Addr, detection: Detection) -> String {
    with_detection(
        DIRECTOR_EXAMPLE.replace(&EXAMPLE_DIRECTOR.to_string(), &director.to_string()),
        detection,
    )
}

/// The router's configuration with one eBGP session per director (`director1`, ... in the
/// order given): the example up to its sessions, then a session line per director. A director
/// with [`Detection::HoldTimer`] gets `bfd off;` in its session (the template has `bfd on;`).
pub fn router_conf(directors: &[(Ipv4Addr, Detection)]) -> String {
    let mut conf: String = ROUTER_EXAMPLE
        .lines()
        .filter(|l| !l.starts_with(ROUTER_SESSION_LINE))
        .map(|l| format!("{l}\n"))
        .collect();
    for (i, (d, detection)) in directors.iter().enumerate() {
        let bfd = match detection {
            Detection::Bfd => "",
            Detection::HoldTimer => " bfd off;",
        };
        conf.push_str(&format!(
            "{ROUTER_SESSION_LINE}{} from directors {{ neighbor {d} as 65100;{bfd} }}\n",
            i + 1
        ));
    }
    conf
}

fn with_detection(conf: String, detection: Detection) -> String {
    match detection {
        Detection::Bfd => conf,
        Detection::HoldTimer => conf.replace("bfd on;", "bfd off;"),
    }
}

/// Fails with what to do unless `bird` and `birdc` run.
pub fn require_bird() -> Result<()> {
    for tool in ["bird", "birdc"] {
        let ok = Command::new(tool)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        ensure!(
            ok,
            "the ECMP lab needs BIRD 2 (`{tool}` is not installed): run `cargo xtask setup` \
             (it installs the Debian package bird2), or `apt-get install bird2`"
        );
    }
    Ok(())
}

/// One BIRD in a lab host, in the foreground (`bird -f`), with its control socket, pid file and
/// configuration in a directory of its own.
pub struct Bird {
    proc: Option<Proc>,
    host: String,
    socket: PathBuf,
    files: Vec<PathBuf>,
}

impl Bird {
    /// Writes `conf` into `dir` (`bird-<host>.conf`) and starts BIRD on `host`; returns once its
    /// control socket answers (at most 5 s).
    pub fn start(dir: &Path, host: &Host, conf: &str) -> Result<Bird> {
        require_bird()?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let name = &host.name;
        let conf_path = dir.join(format!("bird-{name}.conf"));
        let socket = dir.join(format!("bird-{name}.ctl"));
        let pid = dir.join(format!("bird-{name}.pid"));
        fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let args = [
            "bird".to_owned(),
            "-f".into(),
            "-c".into(),
            path(&conf_path),
            "-s".into(),
            path(&socket),
            "-P".into(),
            path(&pid),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = host.spawn(&args)?;
        let mut bird = Bird {
            proc: Some(proc),
            host: name.clone(),
            socket,
            files: vec![conf_path, pid],
        };
        let up = wait_until(Duration::from_secs(5), || {
            bird.birdc(&["show", "status"]).is_ok()
        });
        if !up {
            let exited = bird.proc.as_mut().and_then(|p| p.try_wait().ok().flatten());
            bail!(
                "BIRD on {name} does not answer on {} within 5 s ({}; its errors are on stderr)",
                bird.socket.display(),
                exited.map_or("still running".to_owned(), |s| format!("exited: {s}"))
            );
        }
        Ok(bird)
    }

    /// The host it runs on.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `birdc -s SOCKET args...`; fails unless it exits 0; returns its output.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running birdc (`cargo xtask setup` installs bird2)")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success() && !text.contains("Unable to connect"),
            "birdc {args:?} for the BIRD on {} failed ({}): {}{}",
            self.host,
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(text)
    }

    /// The names of its BGP sessions in state Established.
    pub fn established(&self) -> Result<Vec<String>> {
        let out = self.birdc(&["show", "protocols"])?;
        Ok(out
            .lines()
            .filter(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.get(1) == Some(&"BGP") && w.last() == Some(&"Established")
            })
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect())
    }

    /// Waits until at least `n` BGP sessions are Established (at most `timeout`); returns how
    /// long that took.
    pub fn wait_established(&self, n: usize, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let ok = wait_until(timeout, || self.established().is_ok_and(|e| e.len() >= n));
        ensure!(
            ok,
            "BIRD on {}: {n} BGP session(s) not Established within {timeout:?}:\n{}",
            self.host,
            self.birdc(&["show", "protocols"]).unwrap_or_default()
        );
        Ok(start.elapsed())
    }

    /// `birdc show route all` (its main table).
    pub fn routes(&self) -> Result<String> {
        self.birdc(&["show", "route", "all"])
    }

    /// Stops it with SIGTERM (BIRD closes its sessions with a notification) and reaps it.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(3))?;
        }
        Ok(())
    }

    /// Kills it with SIGKILL (its TCP sessions are closed by the kernel) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.kill()?;
        }
        Ok(())
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.kill();
        for f in self.files.iter().chain([&self.socket]) {
            let _ = fs::remove_file(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_configurations_are_the_examples() {
        assert_eq!(
            director_conf(EXAMPLE_DIRECTOR, Detection::Bfd),
            DIRECTOR_EXAMPLE
        );
        let directors = [
            EXAMPLE_DIRECTOR,
            Ipv4Addr::new(192, 168, 58, 137),
            Ipv4Addr::new(192, 168, 58, 132),
        ];
        let bfd: Vec<_> = directors.iter().map(|d| (*d, Detection::Bfd)).collect();
        assert_eq!(router_conf(&bfd), ROUTER_EXAMPLE);
        let mixed = router_conf(&[
            (directors[0], Detection::Bfd),
            (directors[2], Detection::HoldTimer),
        ]);
        assert!(mixed.contains(
            "protocol bgp director1 from directors { neighbor 192.168.58.134 as 65100; }\n"
        ));
        assert!(mixed.contains(
            "protocol bgp director2 from directors { neighbor 192.168.58.132 as 65100; bfd \
             off; }\n"
        ));
        let d2 = director_conf(directors[1], Detection::HoldTimer);
        assert!(d2.contains("local 192.168.58.137 as 65100;"));
        assert!(d2.contains("router id 192.168.58.137;"));
        assert!(d2.contains("bfd off;") && !d2.contains("bfd on;"));
        assert!(d2.contains(&format!("neighbor {EXAMPLE_ROUTER} as 65000;")));
    }
}
