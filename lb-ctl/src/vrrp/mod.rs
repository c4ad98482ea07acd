//! VRRP (RFC 3768 v2, RFC 5798 v3 for IPv4 and IPv6) that interoperates with keepalived: the
//! director that is master holds the virtual addresses on its interface. Never touches the
//! maps.
//!
//! - [`packet`]: advertisements on the wire (encode, decode, checksums, validation).
//! - [`state`]: the RFC state machine, pure and clock-injected.
//! - [`instance`]: one instance on the wire (addresses, announcements of [`announce`], hooks),
//!   on the sockets of [`socket`]; its counters in [`status`].
//! - [`instances`]: every instance of a file, started and stopped together, changed in place
//!   by a reload, writing the [`report`] files that `list` and `stats` read.
//! - [`track`]: tracked scripts, interfaces and services: faults and priority weights.
//! - [`group`]: sync groups, instances that move together.

pub mod announce;
pub mod group;
pub mod instance;
pub mod instances;
pub mod packet;
pub mod report;
pub mod socket;
pub mod state;
pub mod status;
pub mod track;
