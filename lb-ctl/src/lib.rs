//! The control plane of the XDP director, as a library: the `lb-ctl` binary and the tests use
//! the same code to load the program, fill its maps and read its counters.

pub mod apply;
pub mod conditions;
pub mod config;
pub mod daemon;
pub mod genhash;
pub mod health;
pub mod hooks;
pub mod list;
pub mod loader;
pub mod lock;
pub mod maglev;
pub mod maps;
pub mod net;
pub mod own_addresses;
pub mod pins;
pub mod privileges;
pub mod repair;
pub mod resolve;
pub mod stats;
pub mod table;
pub mod tasks;
pub mod view;
pub mod vrrp;
pub mod watch;
