//! Stopping tokio tasks so that what they own is dropped before the daemon exits: an aborted
//! task's future is dropped only when the runtime gets to it, and a process group guard
//! ([`crate::exec::Group`]) inside it kills its processes only then.

use std::time::Duration;

use tokio::task::JoinHandle;

/// Aborts every task of `handles` and waits, at most `limit` in all, until each has ended
/// (its future dropped); returns how many had not ended by then.
pub async fn abort_and_wait(handles: Vec<JoinHandle<()>>, limit: Duration) -> usize {
    for h in &handles {
        h.abort();
    }
    let deadline = tokio::time::Instant::now() + limit;
    let mut left = 0;
    for h in handles {
        if tokio::time::timeout_at(deadline, h).await.is_err() {
            left += 1;
        }
    }
    left
}
