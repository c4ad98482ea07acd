//! VRRP (RFC 3768 v2, RFC 5798 v3 for IPv4) that interoperates with keepalived: the director
//! that is master holds the virtual addresses on its interface.
//!
//! - [`packet`]: advertisements on the wire (encode, decode, checksums, validation).
//! - [`state`]: the RFC state machine, pure and clock-injected.
//! - [`io`]: an instance on the wire (raw sockets, addresses, gratuitous ARP, hooks).

pub mod io;
pub mod packet;
pub mod report;
pub mod state;
