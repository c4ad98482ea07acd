//! The control plane of the XDP director, as a library: the `lb-ctl` binary and the tests use
//! the same code to load the program, fill its maps and read its counters.
//!
//! The folders, from the bottom up (docs/architecture.md has the whole map and the import
//! rules):
//! - [`config`]: the YAML service file, parsed and validated into typed values;
//! - [`import`]: keepalived.conf read and written as a service file (`lb-ctl import`);
//! - [`sched`]: the lookup tables of the schedulers (weighted round robin, Maglev);
//! - [`plan`]: the pure difference between the maps and a config;
//! - [`maps`]: the kernel side: loading, pins, the one-writer lock, typed map access;
//! - [`net`]: interfaces, neighbours, namespaces and the host's own addresses;
//! - [`exec`]: running commands (checks, notify hooks) in process groups, with timeouts;
//! - [`health`]: keepalived's real-server checks, which report to the daemon;
//! - [`vrrp`]: VRRP instances moving the VIP between directors;
//! - [`sync`]: connection-state sync between directors: the wire format, its HMAC, what is
//!   sent and accepted;
//! - [`daemon`]: `lb-ctl run`, which owns the data path and decides what is written;
//! - [`realserver`]: `lb-ctl realserver`, a real server's VIPs and ARP sysctls, undone exactly;
//! - [`doctor`]: `lb-ctl doctor`, what a director and its real servers need, checked;
//! - [`cli`]: what the commands print and their clap definitions.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod exec;
pub mod health;
pub mod import;
pub mod live;
pub mod maps;
pub mod net;
pub mod plan;
pub mod realserver;
pub mod sched;
pub mod sync;
pub mod vrrp;
