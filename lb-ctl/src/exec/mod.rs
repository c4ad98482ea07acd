//! Running commands: `exec` checks, and notify hooks of services and VRRP instances. Each runs
//! in its own process group ([`group`]), bounded by a timeout and killed with its group when it
//! ends or its owner stops; hooks are tracked as a set ([`hooks`]).

pub mod group;
pub mod hooks;

use std::time::Duration;

pub use group::{Group, run};

/// A duration as people write it, for messages: `500ms`, `2s`, `1.5s`.
pub fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}
