//! The `exec` check (keepalived's MISC_CHECK): runs the command with `/bin/sh -c` in its own
//! process group, with `LB_BACKEND_ADDRESS`, `LB_BACKEND_PORT` and `LB_SERVICE` in its
//! environment; exit 0 = up. On timeout the whole group is killed. Also runs notify hooks.

use std::{process::Stdio, time::Duration};

use tokio::process::Command;

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
/// returns its exit code (128 + N for a signal N). After `limit`, kills the group.
pub async fn run(command: &str, env: &[(&str, String)], limit: Duration) -> Result<i32, String> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let pid = child.id();
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt as _;
            Ok(status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(-1))
        }
        Ok(Err(e)) => Err(format!("waiting for it: {e}")),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) on the process group this child leads.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = child.kill().await;
            Err(format!("still running after {}; killed", show(limit)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::config::CheckKind;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(f)
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

    #[test]
    fn killed_on_timeout_with_its_children() {
        let slow = exec_check("sleep 30 & sleep 30", 200);
        let start = Instant::now();
        let err = block_on(check(&slow, &target())).unwrap_err();
        assert!(err.contains("killed"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
