//! The sync datagram: a header, flow entries, persistence entries, then an HMAC-SHA256 of all
//! that with the shared key. Pure: bytes in, bytes out. All integers big-endian; addresses
//! 16 bytes as in the maps (IPv4 as `::ffff:a.b.c.d`).
//!
//! ```text
//! header, 32 bytes
//!   0  magic "LBSY"          4  version (1)        5  reserved (0)
//!   6  flow entries (u16)    8  persistence entries (u16)   10 reserved (u16)
//!   12 sender id (u32)       16 sequence number (u64)       24 sender's clock, ms (u64)
//! flow entry, 68 bytes
//!   0  client address        16 VIP                32 client port   34 VIP port
//!   36 service port (0: an all-ports service)      38 protocol      39 state
//!   40 backend address       56 backend port       58 reserved (u16)
//!   60 age, ms (u32)         64 reserved (u32)
//! persistence entry, 60 bytes
//!   0  client network        16 VIP                32 service port  34 protocol  35 reserved
//!   36 backend address       52 backend port       54 reserved (u16)  56 age, ms (u32)
//! HMAC-SHA256 of everything before it, 32 bytes
//! ```
//!
//! Entries name the service by (VIP, port, protocol) and the backend by (address, port),
//! never by local id: ids can differ between directors. Ages, not timestamps: the directors'
//! monotonic clocks differ.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

pub const MAGIC: &[u8; 4] = b"LBSY";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 32;
pub const FLOW_LEN: usize = 68;
pub const PERSIST_LEN: usize = 60;
pub const MAC_LEN: usize = 32;
/// The most entries of both kinds a datagram may carry (`sync.batch`, at most this).
pub const MAX_ENTRIES: usize = crate::config::MAX_BATCH as usize;
/// The longest datagram: [`MAX_ENTRIES`] flow entries.
pub const MAX_LEN: usize = HEADER_LEN + MAX_ENTRIES * FLOW_LEN + MAC_LEN;

type HmacSha256 = Hmac<Sha256>;

/// A 16-byte address as the maps hold it.
pub type Addr = [u8; 16];

/// Who sent a datagram, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Random at the sender's start.
    pub sender: u32,
    /// 1, 2, 3... per sender.
    pub seq: u64,
    /// The sender's wall clock in ms since the epoch.
    pub time_ms: u64,
}

/// One connection-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEntry {
    pub client: Addr,
    pub vip: Addr,
    pub client_port: u16,
    pub vip_port: u16,
    /// The service's port: the VIP port, or 0 for an all-ports service.
    pub service_port: u16,
    pub proto: u8,
    /// A `TcpState` as a byte.
    pub state: u8,
    pub backend: Addr,
    pub backend_port: u16,
    /// ms since the entry's last packet.
    pub age_ms: u32,
}

/// One persistence entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PersistEntry {
    /// The client address masked with the service's netmask.
    pub client: Addr,
    pub vip: Addr,
    pub service_port: u16,
    pub proto: u8,
    pub backend: Addr,
    pub backend_port: u16,
    pub age_ms: u32,
}

/// A datagram, authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub header: Header,
    pub flows: Vec<FlowEntry>,
    pub persist: Vec<PersistEntry>,
}

/// Why a datagram was refused; each is counted apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// Not a sync datagram (no magic), too many entries, or longer than its entries.
    Garbage,
    /// Shorter than its header, MAC or entries say.
    Truncated,
    /// Another version of the format.
    Version,
    /// The HMAC does not match (another key, or altered).
    BadHmac,
    /// A sequence number seen already, or older than the window.
    Replayed,
    /// Its clock is more than the allowed skew away from ours.
    Stale,
}

impl Reject {
    pub const ALL: [Reject; 6] = [
        Reject::Garbage,
        Reject::Truncated,
        Reject::Version,
        Reject::BadHmac,
        Reject::Replayed,
        Reject::Stale,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Garbage => "garbage",
            Reject::Truncated => "truncated",
            Reject::Version => "bad_version",
            Reject::BadHmac => "bad_hmac",
            Reject::Replayed => "replayed",
            Reject::Stale => "stale",
        }
    }
}

/// The datagram of `header` and the entries, with its HMAC. At most [`MAX_ENTRIES`] entries
/// in all (the caller batches).
pub fn encode(
    key: &[u8],
    header: &Header,
    flows: &[FlowEntry],
    persist: &[PersistEntry],
) -> Vec<u8> {
    debug_assert!(flows.len() + persist.len() <= MAX_ENTRIES);
    let mut b = Vec::with_capacity(
        HEADER_LEN + flows.len() * FLOW_LEN + persist.len() * PERSIST_LEN + MAC_LEN,
    );
    b.extend_from_slice(MAGIC);
    b.push(VERSION);
    b.push(0);
    b.extend_from_slice(&(flows.len() as u16).to_be_bytes());
    b.extend_from_slice(&(persist.len() as u16).to_be_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&header.sender.to_be_bytes());
    b.extend_from_slice(&header.seq.to_be_bytes());
    b.extend_from_slice(&header.time_ms.to_be_bytes());
    for f in flows {
        b.extend_from_slice(&f.client);
        b.extend_from_slice(&f.vip);
        for p in [f.client_port, f.vip_port, f.service_port] {
            b.extend_from_slice(&p.to_be_bytes());
        }
        b.extend_from_slice(&[f.proto, f.state]);
        b.extend_from_slice(&f.backend);
        b.extend_from_slice(&f.backend_port.to_be_bytes());
        b.extend_from_slice(&[0; 2]);
        b.extend_from_slice(&f.age_ms.to_be_bytes());
        b.extend_from_slice(&[0; 4]);
    }
    for p in persist {
        b.extend_from_slice(&p.client);
        b.extend_from_slice(&p.vip);
        b.extend_from_slice(&p.service_port.to_be_bytes());
        b.extend_from_slice(&[p.proto, 0]);
        b.extend_from_slice(&p.backend);
        b.extend_from_slice(&p.backend_port.to_be_bytes());
        b.extend_from_slice(&[0; 2]);
        b.extend_from_slice(&p.age_ms.to_be_bytes());
    }
    let mac = mac_of(key).chain_update(&b).finalize().into_bytes();
    b.extend_from_slice(&mac);
    b
}

fn mac_of(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: this cannot fail.
    <HmacSha256 as hmac::Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// Checks `b` (length, magic, version, entry counts, then the HMAC in constant time) and
/// reads it. Replays are the receiver's to judge ([`super::receiver`]).
pub fn decode(key: &[u8], b: &[u8]) -> Result<Datagram, Reject> {
    if b.is_empty() || !MAGIC.starts_with(&b[..b.len().min(MAGIC.len())]) {
        return Err(Reject::Garbage);
    }
    if b.len() < 5 {
        return Err(Reject::Truncated);
    }
    if b[4] != VERSION {
        return Err(Reject::Version);
    }
    if b.len() < HEADER_LEN + MAC_LEN {
        return Err(Reject::Truncated);
    }
    let n_flows = u16::from_be_bytes([b[6], b[7]]) as usize;
    let n_persist = u16::from_be_bytes([b[8], b[9]]) as usize;
    if n_flows + n_persist > MAX_ENTRIES {
        return Err(Reject::Garbage);
    }
    let want = HEADER_LEN + n_flows * FLOW_LEN + n_persist * PERSIST_LEN + MAC_LEN;
    if b.len() < want {
        return Err(Reject::Truncated);
    }
    if b.len() > want {
        return Err(Reject::Garbage);
    }
    let (body, mac) = b.split_at(want - MAC_LEN);
    mac_of(key)
        .chain_update(body)
        .verify_slice(mac)
        .map_err(|_| Reject::BadHmac)?;
    let header = Header {
        sender: u32::from_be_bytes(array(&b[12..16])),
        seq: u64::from_be_bytes(array(&b[16..24])),
        time_ms: u64::from_be_bytes(array(&b[24..32])),
    };
    let mut at = HEADER_LEN;
    let mut flows = Vec::with_capacity(n_flows);
    for _ in 0..n_flows {
        let e = &b[at..at + FLOW_LEN];
        flows.push(FlowEntry {
            client: array(&e[0..16]),
            vip: array(&e[16..32]),
            client_port: u16::from_be_bytes(array(&e[32..34])),
            vip_port: u16::from_be_bytes(array(&e[34..36])),
            service_port: u16::from_be_bytes(array(&e[36..38])),
            proto: e[38],
            state: e[39],
            backend: array(&e[40..56]),
            backend_port: u16::from_be_bytes(array(&e[56..58])),
            age_ms: u32::from_be_bytes(array(&e[60..64])),
        });
        at += FLOW_LEN;
    }
    let mut persist = Vec::with_capacity(n_persist);
    for _ in 0..n_persist {
        let e = &b[at..at + PERSIST_LEN];
        persist.push(PersistEntry {
            client: array(&e[0..16]),
            vip: array(&e[16..32]),
            service_port: u16::from_be_bytes(array(&e[32..34])),
            proto: e[34],
            backend: array(&e[36..52]),
            backend_port: u16::from_be_bytes(array(&e[52..54])),
            age_ms: u32::from_be_bytes(array(&e[56..60])),
        });
        at += PERSIST_LEN;
    }
    Ok(Datagram {
        header,
        flows,
        persist,
    })
}

/// The bytes of `s` as an array (callers slice exactly N bytes).
fn array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&s[..N]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123";

    fn v4(a: [u8; 4]) -> Addr {
        let mut x = [0u8; 16];
        x[10] = 0xff;
        x[11] = 0xff;
        x[12..].copy_from_slice(&a);
        x
    }

    fn sample() -> (Header, Vec<FlowEntry>, Vec<PersistEntry>) {
        let header = Header {
            sender: 0xdead_beef,
            seq: 7,
            time_ms: 1_700_000_000_123,
        };
        let flows = (0..3)
            .map(|i| FlowEntry {
                client: v4([192, 168, 58, 10 + i]),
                vip: v4([192, 168, 58, 133]),
                client_port: 40000 + u16::from(i),
                vip_port: 80,
                service_port: 80,
                proto: 6,
                state: 2,
                backend: v4([192, 168, 58, 135]),
                backend_port: 80,
                age_ms: 1234 + u32::from(i),
            })
            .collect();
        let persist = vec![PersistEntry {
            client: v4([192, 168, 58, 0]),
            vip: v4([192, 168, 58, 133]),
            service_port: 0,
            proto: 6,
            backend: v4([192, 168, 58, 136]),
            backend_port: 0,
            age_ms: 99,
        }];
        (header, flows, persist)
    }

    #[test]
    fn round_trip() {
        let (h, f, p) = sample();
        let b = encode(KEY, &h, &f, &p);
        assert_eq!(b.len(), HEADER_LEN + 3 * FLOW_LEN + PERSIST_LEN + MAC_LEN);
        assert_eq!(&b[..4], b"LBSY");
        let d = decode(KEY, &b).expect("decodes");
        assert_eq!(d.header, h);
        assert_eq!(d.flows, f);
        assert_eq!(d.persist, p);
        let empty = encode(KEY, &h, &[], &[]);
        assert_eq!(decode(KEY, &empty).expect("empty").flows, vec![]);
    }

    #[test]
    fn the_largest_datagram_fits_a_1500_byte_mtu() {
        assert_eq!(MAX_LEN, 1424);
        const { assert!(MAX_LEN <= 1500 - 40 - 8, "IPv6 + UDP headers") };
        let (h, f, _) = sample();
        let many: Vec<FlowEntry> = f.iter().cycle().take(MAX_ENTRIES).copied().collect();
        let b = encode(KEY, &h, &many, &[]);
        assert_eq!(b.len(), MAX_LEN);
        assert_eq!(decode(KEY, &b).expect("decodes").flows.len(), MAX_ENTRIES);
    }

    #[test]
    fn every_rejection() {
        let (h, f, p) = sample();
        let b = encode(KEY, &h, &f, &p);
        // Another key.
        assert_eq!(
            decode(b"another key of 16+ bytes", &b),
            Err(Reject::BadHmac)
        );
        // Any altered byte: the header, an entry, the MAC.
        for at in [13, 16, HEADER_LEN + 5, b.len() - 1] {
            let mut x = b.clone();
            x[at] ^= 1;
            assert_eq!(decode(KEY, &x), Err(Reject::BadHmac), "byte {at}");
        }
        // Cut anywhere: truncated.
        for len in [
            4,
            5,
            20,
            HEADER_LEN + MAC_LEN - 1,
            b.len() - 1,
            b.len() - 40,
        ] {
            assert_eq!(
                decode(KEY, &b[..len]),
                Err(Reject::Truncated),
                "length {len}"
            );
        }
        // A byte more than its entries: garbage.
        let mut x = b.clone();
        x.push(0);
        assert_eq!(decode(KEY, &x), Err(Reject::Garbage));
        // No magic.
        assert_eq!(decode(KEY, b"GET / HTTP/1.1\r\n"), Err(Reject::Garbage));
        assert_eq!(decode(KEY, &[]), Err(Reject::Garbage));
        assert_eq!(decode(KEY, &[0xff; 100]), Err(Reject::Garbage));
        // Another version.
        let mut x = b.clone();
        x[4] = 2;
        assert_eq!(decode(KEY, &x), Err(Reject::Version));
        // More entries than a datagram may hold.
        let mut x = b.clone();
        x[6..8].copy_from_slice(&(MAX_ENTRIES as u16 + 1).to_be_bytes());
        assert_eq!(decode(KEY, &x), Err(Reject::Garbage));
    }
}
