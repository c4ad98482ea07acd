//! The `exec` check (keepalived's MISC_CHECK): runs the command with [`crate::exec::run`]
//! (`/bin/sh -c` in its own process group, killed with its group whatever way the check ends),
//! with `LB_BACKEND_ADDRESS`, `LB_BACKEND_PORT`, `LB_CHECK_PORT` and `LB_SERVICE` in its
//! environment; exit 0 = up.

use super::{Outcome, Target};
use crate::{config::CheckConfig, exec::run};

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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{
        config::CheckKind,
        exec::group::tests::{block_on, gone_within_1s, started},
        health::run_check,
    };

    fn target() -> Target {
        Target {
            service: "web".into(),
            address: "10.0.0.1".parse().unwrap_or_else(|_| unreachable!()),
            port: 8080,
            backend_port: 80,
            vip: None,
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
        // An IPv6 backend: the bare address (a command adds brackets where a URL needs them).
        let six = Target {
            address: "fd00:58::135".parse().unwrap_or_else(|_| unreachable!()),
            ..target()
        };
        let ok = exec_check(
            r#"test "$LB_BACKEND_ADDRESS|$LB_BACKEND_PORT" = "fd00:58::135|80""#,
            5000,
        );
        assert_eq!(block_on(check(&ok, &six)), Ok("exit status 0".into()));
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
