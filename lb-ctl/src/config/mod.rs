//! The declarative YAML service file: parsing and validation.
//!
//! ```yaml
//! services:
//!   - name: web                     # unique, required; 1..=32 bytes of [A-Za-z0-9_.-]
//!     vip: 192.168.58.133           # IPv4 or IPv6 ("fd00:58::133"); required
//!     port: 80                      # required; 0 = all ports of the VIP
//!     protocol: tcp                 # tcp | udp; default tcp
//!     scheduler: wrr                # rr | wrr | sh | mh | lc | wlc; default wrr
//!     table_size: 65537             # sh, mh: Maglev table entries, a prime; default 65537
//!     persistence:                  # optional
//!       timeout: 50s                # same client network -> same backend within this
//!       netmask: 255.255.255.0      # client granularity; default 255.255.255.255; an IPv6
//!                                   # service gives a prefix length (64 or "/64"), default 128
//!     forward: tunnel               # route | tunnel; default route (forward.rs)
//!     tunnel: { type: gue, port: 6080, source: 192.168.58.134 }   # optional
//!     backends:                     # may be empty (the service then drops, counted)
//!       - address: 10.20.0.11       # required; the VIP's family unless tunnelled
//!         weight: 1                 # default 1; 0 = drain; max 65535
//!       - address: 192.168.58.136
//!         port: 80                  # optional; must equal the service port
//!         forward: route            # overrides the service's (so may `tunnel:`)
//!     announce:                     # optional; also at the top level, for every service
//!       via: bird                   # bird | frr | kernel (announce.rs)
//!       table: 100                  # the kernel table the speaker imports
//!       withdraw_when: no_backend   # no_backend | below_quorum
//!       drain: 5s                   # on SIGTERM: withdraw, keep forwarding this long
//! flood:                            # optional (flood.rs)
//!   new_flows_per_cpu: 200000       # new entries per second per CPU; 0 = no limit
//! ```
//!
//! [`parse`] checks the whole file and returns either a [`Config`] or a [`ConfigError`] holding
//! every problem found, each as a [`Diagnostic`] naming the file, the line and the field path
//! (`services[1].backends[0].weight`). A file with any error is never partly applied.

mod announce;
mod check;
mod duration;
mod fields;
mod flood;
mod forward;
mod guard;
mod read;
mod services;
mod shown;
mod sync;
mod tree;
mod vrrp;
mod vrrp_addr;
mod vrrp_track;

#[cfg(test)]
mod forward_tests;
#[cfg(test)]
mod input_tests;
#[cfg(test)]
mod ipv6_tests;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

pub use announce::{Announce, DEFAULT_TABLE, Via, WithdrawWhen};
pub use check::{CheckConfig, CheckKind, Health};
pub use duration::parse_duration;
pub use flood::Flood;
pub use forward::DEFAULT_GUE_PORT;
pub use guard::{MAX_DEPTH, MAX_EXPANDED_NODES};
pub use read::{FileText, MAX_FILE_BYTES, read};
pub use shown::{SHOWN_CHARS, shown};
pub use sync::{
    DEFAULT_SYNC_PORT, MAX_BATCH, MIN_KEY_BYTES, SYNC_GROUP, SyncConfig, SyncKey, SyncRole,
    key_of_file,
};
pub use vrrp::{Version, VrrpConfig};
pub use vrrp_track::{MAX_WEIGHT, SyncGroup, Track, VrrpScript};

/// A whole service file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// In file order.
    pub services: Vec<ServiceConfig>,
    /// VRRP instances (`vrrp:`), in file order; empty when the file has none.
    pub vrrp: Vec<VrrpConfig>,
    /// Connection-state sync between directors (`sync:`); None without one.
    pub sync: Option<SyncConfig>,
    /// `vrrp_scripts:` (keepalived's vrrp_script), in file order.
    pub vrrp_scripts: Vec<VrrpScript>,
    /// `vrrp_sync_groups:` (keepalived's vrrp_sync_group), in file order.
    pub vrrp_sync_groups: Vec<SyncGroup>,
    /// `flood:`: the budget of new connection-table entries (no limit without one).
    pub flood: Flood,
}

/// One entry of `services:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    /// IPv4 or IPv6; every backend and the sorry server have its family.
    pub vip: IpAddr,
    /// 0 = every port of the VIP.
    pub port: u16,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    /// Entries of the Maglev table (sh, mh): a prime.
    pub table_size: u32,
    pub persistence: Option<Persistence>,
    /// In file order.
    pub backends: Vec<BackendConfig>,
    /// Health checks and keepalived's service options (`check:`, `sorry_server`, ...).
    pub health: Health,
    /// The service's own `forward`/`tunnel` (a backend may override them; its sorry server
    /// takes them).
    pub forward: Forwarding,
    /// `announce:` (its own block over the file's top-level one): the VIP's route for the
    /// local BGP speaker while the service is healthy enough; None: not announced.
    pub announce: Option<Announce>,
    /// 1-based line of the service entry.
    pub line: usize,
}

/// One entry of a service's `backends:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: IpAddr,
    /// Always the service's port (neither direct routing nor a tunnel rewrites ports): filled
    /// in when omitted.
    pub port: u16,
    /// 0..=65535; 0 drains the backend (no new flows).
    pub weight: u32,
    /// How packets reach it: its own `forward`/`tunnel`, else its service's.
    pub forward: Forwarding,
    /// 1-based line of the backend entry.
    pub line: usize,
}

/// How the director sends a backend its packets (`forward:`, `tunnel:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Forwarding {
    /// Direct routing (LVS `-g`): only the MACs change; the backend is on the director's link
    /// and has the VIP's family.
    #[default]
    Route,
    /// A tunnel (LVS `-i`): the packet inside an outer header to the backend's address, which
    /// may be anywhere routable and of either family.
    Tunnel(Tunnel),
}

/// A backend's tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tunnel {
    pub kind: TunnelKind,
    /// GUE: the UDP port the backend decapsulates on; 0 for IPIP.
    pub port: u16,
    /// The outer source address as configured (the backend's family); None: the source of
    /// the kernel's route to the backend.
    pub source: Option<IpAddr>,
}

/// `tunnel.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TunnelKind {
    /// IP in IP (protocol 4 for IPv4 inside, 41 for IPv6 inside), in IPv4 or IPv6.
    Ipip,
    /// Generic UDP Encapsulation to `Tunnel::port`.
    Gue,
}

impl Forwarding {
    /// The tunnel, for a tunnel backend.
    pub fn tunnel(&self) -> Option<&Tunnel> {
        match self {
            Forwarding::Route => None,
            Forwarding::Tunnel(t) => Some(t),
        }
    }
}

impl fmt::Display for Forwarding {
    /// `route`, `ipip`, `gue 6080`, with ` from SOURCE` when one is configured.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Forwarding::Route => f.write_str("route"),
            Forwarding::Tunnel(t) => {
                match t.kind {
                    TunnelKind::Ipip => f.write_str("ipip")?,
                    TunnelKind::Gue => write!(f, "gue {}", t.port)?,
                }
                match t.source {
                    Some(s) => write!(f, " from {s}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The transport protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number: 6 or 17.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::PROTO_TCP,
            Protocol::Udp => lb_common::PROTO_UDP,
        }
    }

    /// The protocol with IP protocol number `n`, if served.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            lb_common::PROTO_TCP => Some(Protocol::Tcp),
            lb_common::PROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// `"tcp"` or `"udp"`, as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a service spreads new flows over its backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// Round robin (weights ignored except 0 = drain).
    Rr,
    /// Weighted round robin, interleaved as IPVS does.
    Wrr,
    /// Source hashing: a client address always gets the same backend (weighted, consistent).
    Sh,
    /// Maglev consistent hashing of the 5-tuple: every director picks the same backend.
    Mh,
    /// Least connections: the backend with the fewest active connections.
    Lc,
    /// Weighted least connections: fewest active connections per unit of weight.
    Wlc,
}

impl Scheduler {
    pub const ALL: [Scheduler; 6] = [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Sh,
        Scheduler::Mh,
        Scheduler::Lc,
        Scheduler::Wlc,
    ];

    /// The name written in the file (`rr`, `wrr`, `sh`, `mh`, `lc`, `wlc`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Sh => "sh",
            Scheduler::Mh => "mh",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
        }
    }

    /// The scheduler written `s` in the file.
    pub fn from_name(s: &str) -> Option<Self> {
        Scheduler::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether it indexes a hash table (sh, mh), whose size `table_size` sets.
    pub fn is_hashed(self) -> bool {
        matches!(self, Scheduler::Sh | Scheduler::Mh)
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scheduler of a service that names none: IPVS's interleaved weighted round robin. It
/// honours weights, needs no per-connection state to balance, and its table is as small as the
/// weights allow. Directors that share a VIP (ECMP, or failover that must keep connections)
/// want `mh` instead.
pub const DEFAULT_SCHEDULER: Scheduler = Scheduler::Wrr;

/// The Maglev table size of a hashed (sh, mh) service that names none: a prime, as the
/// algorithm needs, large enough for even shares across hundreds of backends.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// Persistence (keepalived's `persistence_timeout` and `persistence_granularity`): new
/// connections from the same client network within `timeout` of its last one go to the same
/// backend, across all ports of an all-ports service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    pub timeout: std::time::Duration,
    /// The client granularity as a prefix length of the service's family: 0..=32 for IPv4
    /// (written as a dotted `netmask`), 0..=128 for IPv6 (written as a prefix length).
    pub prefix_len: u8,
}

impl Persistence {
    /// The dotted IPv4 netmask of `prefix_len` (0..=32): `24` is 255.255.255.0.
    pub fn v4_netmask(prefix_len: u8) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(prefix_len.min(32)))
                .unwrap_or(0),
        )
    }
}

/// Parses and validates the text of a service file; `file` is the name shown in diagnostics.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    services::parse(text, file)
}

/// Reads and parses the service file at `path`. Only a regular file of at most
/// [`MAX_FILE_BYTES`] is read (see [`read`]); a file that cannot be read, or is refused, is a
/// [`ConfigError`] too, with a diagnostic of line 0.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = read(path)?;
    parse(&file.text, &path.display().to_string())
}

/// Every problem found in a service file (at least one).
#[derive(Debug)]
pub struct ConfigError {
    /// In line order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    /// One diagnostic per line, then `N error(s); nothing was applied`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        let n = self.diagnostics.len();
        let plural = if n == 1 { "" } else { "s" };
        write!(f, "{n} error{plural}; nothing was applied")
    }
}

impl std::error::Error for ConfigError {}

/// One problem, at one line and field of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based; 0 when the problem is the whole file (it could not be read).
    pub line: usize,
    /// Path of the field, e.g. `services[1].backends[0].weight`; empty when there is none
    /// (a YAML syntax error, say).
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `FILE:LINE: FIELD: MESSAGE`; the field part is left out when empty, the line part when 0.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}
