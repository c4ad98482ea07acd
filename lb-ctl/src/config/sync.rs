//! `sync:`: connection-state sync between directors (IPVS's sync daemon). The director that
//! sends scans its connection table and persistence entries every `interval` and sends what is
//! new or changed to its peers; the others install them, so a VRRP takeover keeps every flow
//! on its backend whatever the scheduler.
//!
//! ```yaml
//! sync:
//!   interface: eth0             # required: where the datagrams go and come from
//!   peers: [192.168.58.137]     # unicast IPv4 peers; absent or [] = multicast 224.0.0.81
//!   port: 8848                  # UDP port; default 8848 (IPVS's)
//!   key_file: /etc/lb/sync.key  # or `key: "..."`: one of them, at least 16 bytes
//!   role: auto                  # auto | master | backup | both; default auto
//!   batch: 20                   # entries per datagram, 1..=20 (fits a 1500-byte MTU)
//!   interval: 200ms             # how often the sender scans; 10ms..=60s
//!   max_rate: 10000             # entries sent per second at most, 1..=1000000
//! ```

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::fields::{Diags, Fields, choice, duration, integer, interface, string};
use super::vrrp;

pub(super) const SYNC_FIELDS: &[&str] = &[
    "interface",
    "peers",
    "port",
    "key_file",
    "key",
    "role",
    "batch",
    "interval",
    "max_rate",
];

/// IPVS's sync port.
pub const DEFAULT_SYNC_PORT: u16 = 8848;
/// IPVS's sync multicast group.
pub const SYNC_GROUP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(224, 0, 0, 81);
/// The fewest bytes a key may have.
pub const MIN_KEY_BYTES: usize = 16;
/// The most entries a datagram holds: 20 flow entries of 68 bytes, a 32-byte header and a
/// 32-byte HMAC make 1424 bytes, within the 1452-byte UDP payload of a 1500-byte MTU (IPv6;
/// 1472 for IPv4). `sync/packet.rs` holds the sizes.
pub const MAX_BATCH: u16 = 20;
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);
pub const DEFAULT_MAX_RATE: u32 = 10_000;
const MIN_INTERVAL: Duration = Duration::from_millis(10);
const MAX_INTERVAL: Duration = Duration::from_secs(60);
const MAX_RATE: i128 = 1_000_000;

/// The `sync:` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    pub interface: String,
    /// Unicast peers; empty: the multicast group [`SYNC_GROUP`].
    pub peers: Vec<IpAddr>,
    pub port: u16,
    pub key: SyncKey,
    pub role: SyncRole,
    pub batch: u16,
    pub interval: Duration,
    pub max_rate: u32,
    /// 1-based line of the block.
    pub line: usize,
}

/// Where the shared key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SyncKey {
    /// `key:`, its bytes.
    Inline(Vec<u8>),
    /// `key_file:`: read when the daemon starts or reloads (its bytes, without a trailing
    /// newline), with the line of the key.
    File(PathBuf, usize),
}

impl std::fmt::Debug for SyncKey {
    /// Never the key itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncKey::Inline(k) => write!(f, "Inline({} bytes)", k.len()),
            SyncKey::File(p, _) => write!(f, "File({})", p.display()),
        }
    }
}

/// `sync.role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncRole {
    /// Send while a VRRP instance on the sync interface is master, receive otherwise.
    Auto,
    /// Send only.
    Master,
    /// Receive only.
    Backup,
    /// Send and receive.
    Both,
}

impl SyncRole {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncRole::Auto => "auto",
            SyncRole::Master => "master",
            SyncRole::Backup => "backup",
            SyncRole::Both => "both",
        }
    }
}

/// The key's bytes from a key file's text: a trailing newline (or CRLF) is not part of it.
pub fn key_of_file(bytes: &[u8]) -> &[u8] {
    let b = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// Reads the top-level `sync:` block: `Some(None)` without one, None when invalid (reported).
pub(super) fn read(top: &Fields, d: &mut Diags) -> Option<Option<SyncConfig>> {
    let Some(field) = top.optional("sync") else {
        return Some(None);
    };
    let path = field.path();
    let what = (
        "a mapping like `{ interface: eth0, key_file: /etc/lb/sync.key }`",
        None,
    );
    let f = Fields::of(&field, &path, SYNC_FIELDS, what, d)?;
    let errors = d.list.len();
    let interface = f.req("interface", d, interface);
    let peers = match f.optional("peers") {
        None => Some(Vec::new()),
        Some(list) => vrrp::addresses(&list, d, |s| {
            let a = super::vrrp_addr::address(s, "a sync peer")?;
            match a {
                IpAddr::V4(_) => Ok((a, 32)),
                IpAddr::V6(_) => Err(format!(
                    "{a} is IPv6: sync peers are IPv4 (the entries they carry may be IPv6); \
                     give the peer's IPv4 address"
                )),
            }
        })
        .map(|v| v.into_iter().map(|(a, _)| a).collect()),
    };
    let port = f.or("port", DEFAULT_SYNC_PORT, d, |n| {
        integer(n, 1, u16::MAX.into()).map(|p| p as u16)
    });
    let key = match (f.optional("key"), f.optional("key_file")) {
        (Some(k), Some(_)) => {
            d.field(
                &k,
                "give either `key` or `key_file`, not both (`key_file` keeps the key out of \
                 the file)",
            );
            None
        }
        (Some(k), None) => {
            let r = string(k.node).and_then(|s| match s.len() {
                n if n < MIN_KEY_BYTES => Err(format!(
                    "the key has {n} bytes; give at least {MIN_KEY_BYTES} (e.g. the output of \
                     `head -c 32 /dev/urandom | base64`)"
                )),
                _ => Ok(SyncKey::Inline(s.into_bytes())),
            });
            d.ok(&k, r)
        }
        (None, Some(kf)) => {
            let r = string(kf.node).and_then(|s| match s.is_empty() {
                true => Err("the key file's path is empty".to_string()),
                false => Ok(SyncKey::File(PathBuf::from(s), kf.line)),
            });
            d.ok(&kf, r)
        }
        (None, None) => {
            d.at(
                f.line,
                &path,
                "missing `key` or `key_file`: the datagrams are authenticated with a shared \
                 key of at least 16 bytes",
            );
            None
        }
    };
    let role = f.or("role", SyncRole::Auto, d, |n| {
        choice(
            n,
            "a sync role",
            "`auto`, `master`, `backup` or `both`",
            |s| match s {
                "auto" => Some(SyncRole::Auto),
                "master" => Some(SyncRole::Master),
                "backup" => Some(SyncRole::Backup),
                "both" => Some(SyncRole::Both),
                _ => None,
            },
        )
    });
    let batch = f.or("batch", MAX_BATCH, d, |n| {
        integer(n, 1, MAX_BATCH.into())
            .map(|b| b as u16)
            .map_err(|e| {
                format!("{e}: a datagram of at most {MAX_BATCH} entries fits a 1500-byte MTU")
            })
    });
    let interval = f.or("interval", DEFAULT_INTERVAL, d, |n| {
        duration(n).and_then(|t| match (MIN_INTERVAL..=MAX_INTERVAL).contains(&t) {
            true => Ok(t),
            false => Err(format!("{t:?} is out of range (10ms..=60s)")),
        })
    });
    let max_rate = f.or("max_rate", DEFAULT_MAX_RATE, d, |n| {
        integer(n, 1, MAX_RATE).map(|r| r as u32)
    });
    if d.list.len() > errors {
        return None;
    }
    Some(Some(SyncConfig {
        interface: interface?,
        peers: peers?,
        port: port?,
        key: key?,
        role: role?,
        batch: batch?,
        interval: interval?,
        max_rate: max_rate?,
        line: field.line,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::test_util::{parse_err as err, parse_ok as ok};

    #[test]
    fn defaults_and_every_key() {
        let c = ok("sync:\n  interface: eth0\n  key: 0123456789abcdef\n");
        let s = c.sync.expect("a sync block");
        assert_eq!(s.interface, "eth0");
        assert!(s.peers.is_empty());
        assert_eq!(s.port, 8848);
        assert_eq!(s.key, SyncKey::Inline(b"0123456789abcdef".to_vec()));
        assert_eq!(s.role, SyncRole::Auto);
        assert_eq!(s.batch, MAX_BATCH);
        assert_eq!(s.interval, DEFAULT_INTERVAL);
        assert_eq!(s.max_rate, DEFAULT_MAX_RATE);
        assert_eq!(s.line, 2);

        let c = ok(
            "sync:\n  interface: eth0\n  peers: [192.168.58.137]\n  port: 9000\n  \
                    key_file: /etc/lb/sync.key\n  role: both\n  batch: 5\n  interval: 1s\n  \
                    max_rate: 100\n",
        );
        let s = c.sync.expect("a sync block");
        assert_eq!(s.peers, vec!["192.168.58.137".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.port, 9000);
        assert_eq!(s.key, SyncKey::File("/etc/lb/sync.key".into(), 6));
        assert_eq!(s.role, SyncRole::Both);
        assert_eq!(
            (s.batch, s.interval, s.max_rate),
            (5, Duration::from_secs(1), 100)
        );
        assert_eq!(ok("").sync, None);
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = err("sync:\n  interface: eth0\n  key: short\n");
        assert!(e.contains("t.yaml:4: sync.key: the key has 5 bytes"), "{e}");
        let e = err("sync:\n  interface: eth0\n");
        assert!(
            e.contains("t.yaml:2: sync: missing `key` or `key_file`"),
            "{e}"
        );
        let e = err("sync:\n  key: 0123456789abcdef\n  batch: 64\n");
        assert!(
            e.contains("t.yaml:2: sync.interface: missing required field"),
            "{e}"
        );
        assert!(
            e.contains("t.yaml:4: sync.batch: 64 is out of range (1..=20)"),
            "{e}"
        );
        let e = err("sync:\n  interface: eth0\n  key: 0123456789abcdef\n  key_file: /k\n");
        assert!(
            e.contains("sync.key: give either `key` or `key_file`"),
            "{e}"
        );
        let e = err("sync:\n  interface: eth0\n  key: 0123456789abcdef\n  peers: [fd00::1]\n");
        assert!(
            e.contains("t.yaml:5: sync.peers[0]: fd00::1 is IPv6"),
            "{e}"
        );
        let e = err("sync:\n  interface: eth0\n  key: 0123456789abcdef\n  role: primary\n");
        assert!(e.contains("sync.role: `primary` is not a sync role"), "{e}");
        let e = err("sync:\n  interface: eth0\n  key: 0123456789abcdef\n  interval: 1ms\n");
        assert!(e.contains("sync.interval: 1ms is out of range"), "{e}");
        let e = err("sync:\n  interface: eth0\n  key: 0123456789abcdef\n  max_rate: 0\n");
        assert!(e.contains("sync.max_rate: 0 is out of range"), "{e}");
        let e = err("sync:\n  interface: eth0\n  key: 0123456789abcdef\n  rate: 1\n");
        assert!(e.contains("sync.rate: unknown field `rate`"), "{e}");
    }

    #[test]
    fn a_key_file_loses_its_trailing_newline() {
        assert_eq!(key_of_file(b"abc\n"), b"abc");
        assert_eq!(key_of_file(b"abc\r\n"), b"abc");
        assert_eq!(key_of_file(b"abc"), b"abc");
    }
}
