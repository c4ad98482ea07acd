//! The process-group runner: `/bin/sh -c` as the leader of its own process group, bounded by a
//! timeout, the whole group killed whatever way it ends.
//!
//! No process of a command outlives it: [`run`] owns the process group through a [`Group`]
//! guard, and whatever way it ends (the command exits, its own timeout, the caller's timeout
//! dropping the future, the task being aborted on reload or stop) the guard sends SIGKILL to
//! the whole group. Processes that leave the group on purpose (`setsid`, `setpgid`) are not
//! tracked.

use std::{io, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

use super::show;

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
    //! Helpers for the tests of what runs commands (checks, hooks): each test marks its
    //! processes with its own `sleep SECONDS` and looks for them in /proc.

    use std::time::Instant;

    use super::*;

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

    #[test]
    fn exit_code_environment_and_signal() {
        let env = [("LB_X", "y".to_string())];
        let limit = Duration::from_secs(5);
        assert_eq!(block_on(run(r#"test "$LB_X" = y"#, &env, limit)), Ok(0));
        assert_eq!(block_on(run("exit 7", &env, limit)), Ok(7));
        assert_eq!(block_on(run("kill -TERM $$", &env, limit)), Ok(128 + 15));
    }

    /// Past its limit the group is killed, its background processes with it.
    #[test]
    fn killed_after_its_limit_with_its_children() {
        block_on(async {
            let start = Instant::now();
            let err = run(
                "sleep 3031.7 & sleep 3031.7",
                &[],
                Duration::from_millis(300),
            )
            .await
            .unwrap_err();
            assert_eq!(err, "still running after 300ms; killed");
            assert!(start.elapsed() < Duration::from_secs(5));
            gone_within_1s("3031.7").await;
        });
    }
}
