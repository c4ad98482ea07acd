//! Running commands for the daemon: notify hooks, each in its own process group, bounded by a
//! timeout and killed with its group when the daemon stops.

pub mod hooks;
