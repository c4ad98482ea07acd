//! Connection-state sync between directors (IPVS's sync daemon, `sync:`): the wire format and
//! its HMAC ([`packet`]), what a sender sends and how fast ([`sender`]), what a receiver
//! accepts ([`receiver`]), the UDP socket ([`socket`]) and the counters `list` and `stats`
//! show ([`report`]). Pure but for the socket: the daemon reads and writes the maps
//! (`daemon/sync.rs`), so it stays their one writer.

pub mod packet;
pub mod receiver;
pub mod report;
pub mod sender;
pub mod socket;
