//! The `exec` check (keepalived's MISC_CHECK): runs the command with `/bin/sh -c` in its own
//! process group, with `LB_BACKEND_ADDRESS`, `LB_BACKEND_PORT` and `LB_SERVICE` in its
//! environment; exit 0 = up. Also runs notify hooks ([`crate::exec::hooks`]).
//!
//! No process of a check or hook outlives it: [`run`] owns the process group through a
//! [`Group`] guard, and whatever way it ends (the command exits, its own timeout, the caller's
//! timeout dropping the future, the task being aborted on reload or stop) the guard sends
//! SIGKILL to the whole group. Processes that leave the group on purpose (`setsid`,
//! `setpgid`) are not tracked.

use std::{io, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

use super::{Outcome, Target, show};
use crate::config::CheckConfig;

/// Runs `check.command` for `target`.
pub async fn check(check: &CheckConfig, target: &Target) -> Outcome {
    let Some(command) = &check.command else {
        return Err("no command".to_string());
    };
    let env = [
        ("LB_BACKEND_ADDRESS", target.address.to_string()),
        ("LB_BACKEND_PORT", target.backend_port.to_string()),
        ("LB_CHECK_PORT", target.port.to_string()),
        ("LB_SERVICE", target.service.clone()),
    ];
    match run(command, &env, check.timeout).await {
        Ok(0) => Ok("exit status 0".to_string()),
        Ok(code) => Err(format!("`{command}` exited with status {code}")),
        Err(e) => Err(format!("`{command}`: {e}")),
    }
}

/// Runs `command` (`/bin/sh -c`) with `env` added, in a new process group, output discarded;
/// returns its exit code (128 + N for a signal N). After `limit`, kills the group. When it
/// returns, or when the future is dropped before, every process left in the group is killed.
pub async fn run(command: &str, env: &[(&str, String)], limit: Duration) -> Result<i32, String> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut group = Group::spawn(cmd).map_err(|e| format!("cannot start: {e}"))?;
    match tokio::time::timeout(limit, group.wait()).await {
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt as _;
            // Dropping `group` kills what the command left running in the background.
            Ok(status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(-1))
        }
        Ok(Err(e)) => Err(format!("waiting for it: {e}")),
        Err(_) => {
            group.kill();
            // Reaped here; SIGKILL cannot be caught, so this is quick.
            let _ = group.wait().await;
            Err(format!("still running after {}; killed", show(limit)))
        }
    }
}

/// A child that leads its own process group. Dropping it sends SIGKILL to the whole group and
/// reaps the child in the background (a task on the runtime; outside one, tokio's
/// `kill_on_drop` reaping). The other members are reparented to init (or the nearest
/// subreaper), which reaps them.
pub struct Group {
    /// `None` only while being dropped.
    child: Option<Child>,
    /// The group's id (the child's pid); `None` if the child had no pid.
    pgid: Option<libc::pid_t>,
}

impl Group {
    /// Starts `cmd` as the leader of a new process group.
    pub fn spawn(mut cmd: Command) -> io::Result<Group> {
        cmd.process_group(0).kill_on_drop(true);
        let child = cmd.spawn()?;
        let pgid = child.id().and_then(|p| libc::pid_t::try_from(p).ok());
        Ok(Group {
            child: Some(child),
            pgid,
        })
    }

    /// Waits for the child (the group's leader) to exit, and reaps it.
    pub async fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        match &mut self.child {
            Some(child) => child.wait().await,
            None => Err(io::Error::other("the child is gone")),
        }
    }

    /// SIGKILL to every process of the group. The kernel keeps the group's id allocated while
    /// any member lives, so this reaches only this group's processes (after the leader was
    /// reaped and the group emptied, the id could only be another group's if the pid counter
    /// wrapped around in between).
    pub fn kill(&self) {
        if let Some(pgid) = self.pgid.filter(|&p| p > 1) {
            // SAFETY: kill(2) on the process group this child leads; no memory involved.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Already reaped (it exited, or `run` waited after the kill): nothing to do.
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Instant;

    use super::*;
    use crate::{config::CheckKind, health::run_check};

    pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(f)
    }

    /// The live processes whose command line is exactly `sleep SECONDS` (each test uses its
    /// own odd number of seconds as a marker). Zombies have no command line: not counted.
    pub(crate) fn sleepers(seconds: &str) -> Vec<i32> {
        let want = format!("sleep\0{seconds}\0");
        let Ok(dir) = std::fs::read_dir("/proc") else {
            panic!("cannot read /proc");
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
            })
            .collect()
    }

    /// Waits (at most 1 s) until no `sleep SECONDS` is alive; returns how long that took.
    pub(crate) async fn gone_within_1s(seconds: &str) -> Duration {
        let start = Instant::now();
        while !sleepers(seconds).is_empty() && start.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let left = sleepers(seconds);
        assert!(
            left.is_empty(),
            "`sleep {seconds}` still alive 1 s later: pids {left:?}"
        );
        start.elapsed()
    }

    /// Waits (at most 2 s) until `n` `sleep SECONDS` are alive.
    pub(crate) async fn started(seconds: &str, n: usize) {
        let start = Instant::now();
        while sleepers(seconds).len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "only {:?} of {n} `sleep {seconds}` started",
                sleepers(seconds)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn target() -> Target {
        Target {
            service: "web".into(),
            address: "10.0.0.1".parse().unwrap_or_else(|_| unreachable!()),
            port: 8080,
            backend_port: 80,
        }
    }

    fn exec_check(command: &str, timeout_ms: u64) -> CheckConfig {
        CheckConfig {
            command: Some(command.into()),
            timeout: Duration::from_millis(timeout_ms),
            ..CheckConfig::new(CheckKind::Exec)
        }
    }

    #[test]
    fn exit_status_and_environment() {
        let ok = exec_check(
            r#"test "$LB_BACKEND_ADDRESS:$LB_BACKEND_PORT:$LB_SERVICE:$LB_CHECK_PORT" = "10.0.0.1:80:web:8080""#,
            5000,
        );
        assert_eq!(block_on(check(&ok, &target())), Ok("exit status 0".into()));
        let bad = exec_check("exit 3", 5000);
        let err = block_on(check(&bad, &target())).unwrap_err();
        assert!(err.contains("exited with status 3"), "{err}");
    }

    /// Its own timeout (called directly): the group is killed, none of it is left.
    #[test]
    fn killed_on_timeout_with_its_children() {
        let slow = exec_check("sleep 3031.1 & sleep 3031.1", 200);
        block_on(async {
            let start = Instant::now();
            let err = check(&slow, &target()).await.unwrap_err();
            assert!(err.contains("killed"), "{err}");
            assert!(start.elapsed() < Duration::from_secs(5));
            gone_within_1s("3031.1").await;
        });
    }

    /// The daemon's path: `run_check`'s own timeout of the same length usually drops the
    /// future before the checker's timeout fires; the group goes all the same.
    #[test]
    fn run_check_timeout_leaves_no_process() {
        let slow = exec_check("sleep 3031.2 & sleep 3031.2 & sleep 3031.2", 1000);
        block_on(async {
            let running = tokio::spawn(async move { run_check(&slow, &target()).await });
            started("3031.2", 3).await;
            let outcome = running.await.unwrap_or_else(|e| panic!("{e}"));
            assert!(outcome.is_err(), "{outcome:?}");
            let took = gone_within_1s("3031.2").await;
            eprintln!("3 background processes gone {took:?} after the check returned");
        });
    }

    /// A checker task aborted mid-check (reload, stop): the group goes, and the `sh` child
    /// is reaped (no zombie of ours is left).
    #[test]
    fn aborted_check_leaves_no_process_and_no_zombie() {
        let pidfile = std::env::temp_dir().join(format!("lb-exec-{}.pid", std::process::id()));
        let cmd = format!(
            "echo $$ > {}; sleep 3031.3 & sleep 3031.3",
            pidfile.display()
        );
        let slow = exec_check(&cmd, 30_000);
        block_on(async {
            let running = tokio::spawn(async move { run_check(&slow, &target()).await });
            started("3031.3", 2).await;
            let sh = std::fs::read_to_string(&pidfile).unwrap_or_else(|e| panic!("{e}"));
            let _ = std::fs::remove_file(&pidfile);
            running.abort();
            let err = running.await.unwrap_err();
            assert!(err.is_cancelled(), "{err}");
            let took = gone_within_1s("3031.3").await;
            eprintln!("2 background processes gone {took:?} after the abort");
            // The `sh` (our child) is reaped: its /proc entry goes.
            let stat = format!("/proc/{}/stat", sh.trim());
            let start = Instant::now();
            while std::fs::metadata(&stat).is_ok() && start.elapsed() < Duration::from_secs(1) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let left = std::fs::read_to_string(&stat).unwrap_or_default();
            assert!(left.is_empty(), "the check's sh is not reaped: {left}");
        });
    }

    /// A check that passes but leaves a process in the background: that one is killed too.
    #[test]
    fn background_of_a_passing_check_is_killed() {
        let leaky = exec_check("sleep 3031.4 & exit 0", 5000);
        block_on(async {
            assert_eq!(
                run_check(&leaky, &target()).await,
                Ok("exit status 0".into())
            );
            gone_within_1s("3031.4").await;
        });
    }
}
