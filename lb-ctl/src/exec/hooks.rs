//! Notify hooks (`notify_up`/`notify_down` of a service, `notify_master`/`_backup`/`_fault` of
//! a VRRP instance): each runs in the background with [`exec::run`], bounded by a timeout, and
//! is tracked here so that it is reaped when it ends and killed, with its whole process group,
//! when the daemon stops ([`Hooks::stop`]).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::task::JoinSet;
use tracing::warn;

use crate::exec;

/// How long a hook may run unless `--hook-timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a hook's caller is told when it ends: its exit code, or why it did not finish.
pub type Done = Box<dyn FnOnce(Result<i32, String>) + Send>;

/// The hooks that run. Clones share them (the daemon hands one to each VRRP instance).
#[derive(Clone)]
pub struct Hooks {
    inner: Arc<Mutex<Inner>>,
    timeout: Duration,
}

struct Inner {
    running: JoinSet<()>,
    /// Set by [`Hooks::stop`]: later hooks are not started.
    stopped: bool,
}

impl Hooks {
    /// Hooks that may run `timeout` each.
    pub fn new(timeout: Duration) -> Hooks {
        Hooks {
            inner: Arc::new(Mutex::new(Inner {
                running: JoinSet::new(),
                stopped: false,
            })),
            timeout,
        }
    }

    /// How long one hook may run.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Starts `command` (`/bin/sh -c`) with `env`; `done` gets its exit code or error when it
    /// ends (to log it). After the timeout its process group is killed. Call it inside the
    /// tokio runtime.
    pub fn spawn(&self, command: String, env: Vec<(&'static str, String)>, done: Done) {
        let mut inner = self.lock();
        while inner.running.try_join_next().is_some() {}
        if inner.stopped {
            warn!(command = %command, "notify hook not run: stopping");
            return;
        }
        let limit = self.timeout;
        inner.running.spawn(async move {
            done(exec::run(&command, &env, limit).await);
        });
    }

    /// Hooks still running (finished ones are reaped first).
    pub fn running(&self) -> usize {
        let mut inner = self.lock();
        while inner.running.try_join_next().is_some() {}
        inner.running.len()
    }

    /// Stops starting hooks, kills every one that still runs (its whole process group) and
    /// waits at most `limit` for their tasks to end; returns how many did not end in time.
    pub async fn stop(&self, limit: Duration) -> usize {
        let mut running = {
            let mut inner = self.lock();
            inner.stopped = true;
            std::mem::take(&mut inner.running)
        };
        running.abort_all();
        let _ = tokio::time::timeout(limit, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        running.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::exec::group::tests::{block_on, gone_within_1s, sleepers, started};

    /// A `done` that sends the result to `tx`.
    fn report(tx: &mpsc::Sender<Result<i32, String>>) -> Done {
        let tx = tx.clone();
        Box::new(move |r| {
            let _ = tx.send(r);
        })
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_with_its_children() {
        let (tx, rx) = mpsc::channel();
        block_on(async {
            let hooks = Hooks::new(Duration::from_secs(1));
            hooks.spawn(
                "sleep 3031.5 & sleep 3031.5".into(),
                vec![("LB_STATE", "up".into())],
                report(&tx),
            );
            started("3031.5", 2).await;
            let start = std::time::Instant::now();
            while hooks.running() > 0 && start.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(hooks.running(), 0, "the hook outlived its timeout");
            gone_within_1s("3031.5").await;
        });
        let result = rx.try_recv().unwrap_or_else(|e| panic!("no result: {e}"));
        assert!(
            result.as_ref().is_err_and(|e| e.contains("killed")),
            "{result:?}"
        );
    }

    #[test]
    fn stop_kills_running_hooks_and_refuses_new_ones() {
        let (tx, rx) = mpsc::channel();
        block_on(async {
            let hooks = Hooks::new(DEFAULT_TIMEOUT);
            let other = hooks.clone();
            hooks.spawn("sleep 3031.6 & sleep 3031.6".into(), vec![], report(&tx));
            other.spawn("sleep 3031.6".into(), vec![], report(&tx));
            started("3031.6", 3).await;
            assert_eq!(hooks.running(), 2);
            assert_eq!(hooks.stop(Duration::from_secs(2)).await, 0);
            gone_within_1s("3031.6").await;
            other.spawn("sleep 3031.6".into(), vec![], report(&tx));
            assert_eq!(other.running(), 0);
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(sleepers("3031.6").is_empty(), "a hook started after stop");
        });
        // Killed hooks report nothing; the refused one never ran.
        assert!(rx.try_recv().is_err());
    }
}
