//! VRRP advertisements on the wire: version 2 (RFC 3768, with keepalived's `auth_type PASS`
//! simple-password authentication) and version 3 for IPv4 and IPv6 (RFC 5798).
//!
//! ```text
//! v2 (RFC 3768 5.1)                        v3 (RFC 5798 5.1)
//!  0 Version=2 | Type=1                     0 Version=3 | Type=1
//!  1 Virtual Rtr ID                         1 Virtual Rtr ID
//!  2 Priority                               2 Priority
//!  3 Count IP Addrs                         3 Count IPvX Addr
//!  4 Auth Type (0 none, 1 simple text)      4-5 rsvd (4 bits) | Max Adver Int (12 bits, cs)
//!  5 Adver Int (seconds)
//!  6-7 Checksum                             6-7 Checksum
//!  8.. IPv4 addresses (4 bytes each)        8.. IPv4 (4 bytes) or IPv6 (16 bytes) addresses
//!  .. Authentication Data (8 bytes)
//! ```
//!
//! The v2 checksum covers the VRRP message alone; the v3 checksum also covers the IP
//! pseudo-header, as for UDP: IPv4 (source, destination, zero, protocol 112, VRRP length;
//! RFC 768), IPv6 (source, destination, 32-bit VRRP length, three zero bytes, next header
//! 112; RFC 8200 8.1, as RFC 5798 5.2.8 says). The family of a message is that of the
//! addresses it travels between. The IP header's TTL / hop limit (must be 255) is checked by
//! the receiver ([`parse_ipv4`]; for IPv6 the socket hands it over separately).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// IP protocol number of VRRP.
pub const PROTO: u8 = 112;
/// The VRRP multicast group (IPv4).
pub const MULTICAST: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The VRRP multicast group (IPv6, link-local scope).
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The only TTL a VRRP packet may have (sent and received).
pub const TTL: u8 = 255;
/// Type 1: ADVERTISEMENT (the only type).
pub const TYPE_ADVERT: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 8;
/// Length of v2's authentication data.
pub const AUTH_LEN: usize = 8;
/// v2 authentication types.
pub const AUTH_NONE: u8 = 0;
pub const AUTH_PASS: u8 = 1;
/// Most addresses one advertisement carries (the count is a byte).
pub const MAX_ADDRESSES: usize = 255;
/// Largest v3 Max Adver Int (12 bits, centiseconds).
pub const MAX_V3_INTERVAL_CS: u16 = 0x0fff;

/// The protocol version: defined with the configuration, which names it (`version: 2 | 3`).
pub use crate::config::Version;

/// One advertisement, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// The advertisement interval in the packet's own unit: seconds (v2), centiseconds (v3).
    pub interval: u16,
    /// All of the family of the addresses the message travels between.
    pub addresses: Vec<IpAddr>,
    /// v2: `None` = auth type 0; `Some(data)` = auth type 1 (simple text, zero-padded).
    pub auth: Option<[u8; AUTH_LEN]>,
}

impl Advert {
    /// The interval as a duration.
    pub fn interval_duration(&self) -> std::time::Duration {
        match self.version {
            Version::V2 => std::time::Duration::from_secs(self.interval.into()),
            Version::V3 => std::time::Duration::from_millis(u64::from(self.interval) * 10),
        }
    }
}

/// Why a packet is not a valid advertisement (each is counted by the receiver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PacketError {
    /// Shorter than its headers, or its IP header is inconsistent.
    Truncated,
    /// The IP header's protocol is not 112.
    NotVrrp,
    /// TTL is not 255 (the sender is not on our link).
    Ttl(u8),
    /// A version we do not speak, or not the instance's.
    Version(u8),
    /// Type is not 1 (ADVERTISEMENT).
    Type(u8),
    /// Count of addresses does not match the length.
    Length { count: u8, len: usize },
    /// Bad checksum.
    Checksum,
    /// v2 authentication does not match the configuration.
    Auth,
    /// v2 advertisement interval differs from ours (RFC 3768 7.1: discard).
    Interval { got: u16, want: u16 },
    /// Zero addresses.
    NoAddresses,
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketError::Truncated => write!(f, "truncated packet"),
            PacketError::NotVrrp => write!(f, "not a VRRP packet"),
            PacketError::Ttl(t) => write!(f, "TTL {t}, not 255"),
            PacketError::Version(v) => write!(f, "version {v}"),
            PacketError::Type(t) => write!(f, "type {t}, not 1 (advertisement)"),
            PacketError::Length { count, len } => {
                write!(f, "{count} addresses do not fit a {len}-byte message")
            }
            PacketError::Checksum => write!(f, "bad checksum"),
            PacketError::Auth => write!(f, "authentication mismatch"),
            PacketError::Interval { got, want } => {
                write!(f, "advertisement interval {got}s, ours is {want}s")
            }
            PacketError::NoAddresses => write!(f, "no addresses"),
        }
    }
}

impl std::error::Error for PacketError {}

/// The parts of an IP header a receiver needs (IPv4: from the header; IPv6: from the
/// socket's control messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpInfo {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
}

impl IpInfo {
    /// RFC 5798 7.1: a packet whose TTL / hop limit is not 255 came through a router.
    pub fn check_ttl(self) -> Result<IpInfo, PacketError> {
        match self.ttl {
            TTL => Ok(self),
            t => Err(PacketError::Ttl(t)),
        }
    }
}

/// Splits an IPv4 packet (as a raw socket receives it) into its header info and the VRRP
/// message; checks protocol 112 and TTL 255.
pub fn parse_ipv4(packet: &[u8]) -> Result<(IpInfo, &[u8]), PacketError> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return Err(PacketError::Truncated);
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if ihl < 20 || total < ihl || packet.len() < total {
        return Err(PacketError::Truncated);
    }
    if packet[9] != PROTO {
        return Err(PacketError::NotVrrp);
    }
    let info = IpInfo {
        ttl: packet[8],
        src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]).into(),
        dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]).into(),
    };
    Ok((info.check_ttl()?, &packet[ihl..total]))
}

pub use crate::net::checksum::internet as checksum;

/// The multicast group of `family`'s VRRP (224.0.0.18 or ff02::12).
pub fn multicast(family: IpAddr) -> IpAddr {
    match family {
        IpAddr::V4(_) => IpAddr::V4(MULTICAST),
        IpAddr::V6(_) => IpAddr::V6(MULTICAST_V6),
    }
}

/// The bytes of an address on the wire: 4 or 16.
fn octets(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The bytes one address takes in a message between `src` and its peers.
fn address_len(src: &IpAddr) -> usize {
    match src {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 16,
    }
}

/// The pseudo-header of v3's checksum: IPv4 (12 bytes) or IPv6 (40 bytes), by `src`'s family.
fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
    let mut p = octets(&src);
    p.extend_from_slice(&octets(&dst));
    match src {
        IpAddr::V4(_) => {
            p.extend_from_slice(&[0, PROTO]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        IpAddr::V6(_) => {
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, PROTO]);
        }
    }
    p
}

/// The zero-padded authentication data of a v2 password (at most 8 bytes are used, as
/// keepalived does).
pub fn auth_data(pass: &str) -> [u8; AUTH_LEN] {
    let mut data = [0u8; AUTH_LEN];
    for (d, s) in data.iter_mut().zip(pass.bytes()) {
        *d = s;
    }
    data
}

/// Encodes `advert` as a VRRP message (without IP header), checksum filled in. `src` and `dst`
/// are the IP addresses it will be sent with (v3's pseudo-header).
pub fn encode(advert: &Advert, src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> Vec<u8> {
    let (src, dst) = (src.into(), dst.into());
    let count = advert.addresses.len().min(MAX_ADDRESSES);
    let mut out = Vec::with_capacity(HEADER_LEN + address_len(&src) * count + AUTH_LEN);
    out.push((advert.version.number() << 4) | TYPE_ADVERT);
    out.push(advert.vrid);
    out.push(advert.priority);
    out.push(count as u8);
    match advert.version {
        Version::V2 => {
            out.push(if advert.auth.is_some() {
                AUTH_PASS
            } else {
                AUTH_NONE
            });
            out.push(advert.interval.min(255) as u8);
        }
        Version::V3 => {
            out.extend_from_slice(&(advert.interval & MAX_V3_INTERVAL_CS).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0]);
    for a in &advert.addresses[..count] {
        out.extend_from_slice(&octets(a));
    }
    let sum = match advert.version {
        Version::V2 => {
            out.extend_from_slice(&advert.auth.unwrap_or([0; AUTH_LEN]));
            checksum(&[&out])
        }
        Version::V3 => checksum(&[&pseudo_header(src, dst, out.len()), &out]),
    };
    out[6..8].copy_from_slice(&sum.to_be_bytes());
    out
}

/// Decodes and checks a VRRP message received from `src` to `dst`: version 2 or 3, type 1,
/// address count against length (4 or 16 bytes each, by `src`'s family), checksum; version 2
/// only over IPv4. What depends on the instance (its VRID, version, authentication,
/// interval) is [`Expect::check`].
pub fn decode(
    msg: &[u8],
    src: impl Into<IpAddr>,
    dst: impl Into<IpAddr>,
) -> Result<Advert, PacketError> {
    let (src, dst) = (src.into(), dst.into());
    if msg.len() < HEADER_LEN {
        return Err(PacketError::Truncated);
    }
    let version = Version::from_number(msg[0] >> 4).ok_or(PacketError::Version(msg[0] >> 4))?;
    if msg[0] & 0x0f != TYPE_ADVERT {
        return Err(PacketError::Type(msg[0] & 0x0f));
    }
    if version == Version::V2 && src.is_ipv6() {
        return Err(PacketError::Version(2));
    }
    let count = msg[3];
    let alen = address_len(&src);
    let auth_len = match version {
        Version::V2 => AUTH_LEN,
        Version::V3 => 0,
    };
    if msg.len() != HEADER_LEN + alen * usize::from(count) + auth_len {
        return Err(PacketError::Length {
            count,
            len: msg.len(),
        });
    }
    let sum = match version {
        Version::V2 => checksum(&[msg]),
        Version::V3 => checksum(&[&pseudo_header(src, dst, msg.len()), msg]),
    };
    if sum != 0 {
        return Err(PacketError::Checksum);
    }
    if count == 0 {
        return Err(PacketError::NoAddresses);
    }
    let addresses = msg[HEADER_LEN..HEADER_LEN + alen * usize::from(count)]
        .chunks_exact(alen)
        .map(|c| match <[u8; 16]>::try_from(c) {
            Ok(v6) => IpAddr::V6(Ipv6Addr::from(v6)),
            Err(_) => IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])),
        })
        .collect();
    let (interval, auth) = match version {
        Version::V2 => {
            let auth = match msg[4] {
                AUTH_NONE => None,
                AUTH_PASS => {
                    let mut data = [0u8; AUTH_LEN];
                    data.copy_from_slice(&msg[msg.len() - AUTH_LEN..]);
                    Some(data)
                }
                // Type 2 (IP AH) was removed from the RFC; nobody we talk to sends it.
                _ => return Err(PacketError::Auth),
            };
            (u16::from(msg[5]), auth)
        }
        Version::V3 => (
            u16::from_be_bytes([msg[4], msg[5]]) & MAX_V3_INTERVAL_CS,
            None,
        ),
    };
    Ok(Advert {
        version,
        vrid: msg[1],
        priority: msg[2],
        interval,
        addresses,
        auth,
    })
}

/// What one instance accepts, beyond a well-formed advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    pub version: Version,
    /// v2: the configured password's data; `None` = no authentication.
    pub auth: Option<[u8; AUTH_LEN]>,
    /// v2: our interval in seconds (must match).
    pub interval: u16,
}

impl Expect {
    /// Checks an advertisement (already of this instance's VRID) against the configuration.
    pub fn check(&self, advert: &Advert) -> Result<(), PacketError> {
        if advert.version != self.version {
            return Err(PacketError::Version(advert.version.number()));
        }
        if self.version == Version::V2 {
            if advert.auth != self.auth {
                return Err(PacketError::Auth);
            }
            if advert.interval != self.interval {
                return Err(PacketError::Interval {
                    got: advert.interval,
                    want: self.interval,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 58, 133);
    const D1: Ipv4Addr = Ipv4Addr::new(192, 168, 58, 134);
    const D2: Ipv4Addr = Ipv4Addr::new(192, 168, 58, 137);

    /// RFC 3768 5.1, VRID 51, priority 150, one address, auth type 1 "1111", interval 1 s.
    /// Checksum by hand, 16-bit words of the message with the checksum field 0:
    /// 2133 + 9601 + 0101 + 0000 + c0a8 + 3a85 + 3131 + 3131 + 0000 + 0000 = 0x215c4;
    /// folded 0x15c4 + 0x2 = 0x15c6; complement 0xea39.
    const V2_PASS: [u8; 20] = [
        0x21, 51, 150, 1, 1, 1, 0xea, 0x39, 192, 168, 58, 133, b'1', b'1', b'1', b'1', 0, 0, 0, 0,
    ];

    /// The same without authentication (type 0, eight zero bytes), priority 100:
    /// 0x2133 + 0x6401 = 0x8534; + 0x0001 = 0x8535; + 0xc0a8 = 0x145dd; + 0x3a85 = 0x18062;
    /// fold 0x8062 + 1 = 0x8063; complement 0x7f9c.
    const V2_NONE: [u8; 20] = [
        0x21, 51, 100, 1, 0, 1, 0x7f, 0x9c, 192, 168, 58, 133, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// RFC 5798 5.1 (IPv4), VRID 51, priority 100, Max Adver Int 20 cs (200 ms), one address,
    /// from 192.168.58.137 to 224.0.0.18. Pseudo-header words (source, destination, 0 | 112,
    /// length 12): c0a8 + 3a89 + e000 + 0012 + 0070 + 000c = 0x1dbbf; message words:
    /// 3133 + 6401 + 0014 + 0000 + c0a8 + 3a85 = 0x19075; total 0x36c34; fold
    /// 0x6c34 + 0x3 = 0x6c37; complement 0x93c8.
    const V3: [u8; 12] = [0x31, 51, 100, 1, 0x00, 20, 0x93, 0xc8, 192, 168, 58, 133];

    /// v3, VRID 7, priority 255 (owner), Max Adver Int 100 cs, two addresses, unicast from
    /// .137 to .134. Pseudo-header: c0a8 + 3a89 + c0a8 + 3a86 + 0070 + 0010 = 0x1f6df;
    /// message: 3107 + ff02 + 0064 + c0a8 + 3a85 + 0a00 + 0001 = 0x2359b; total 0x42c7a;
    /// fold 0x2c7a + 0x4 = 0x2c7e; complement 0xd381.
    const V3_TWO: [u8; 16] = [
        0x31, 7, 255, 2, 0x00, 100, 0xd3, 0x81, 192, 168, 58, 133, 10, 0, 0, 1,
    ];

    const LL1: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    const LL2: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 0x133);

    /// RFC 5798 5.1 over IPv6, VRID 51, priority 100, Max Adver Int 100 cs, one address
    /// fd00:58::133, from fe80::1 to ff02::12, 24 bytes. Pseudo-header words (RFC 8200 8.1:
    /// source, destination, 32-bit length 24, zero, next header 112): fe80 + 0001 + ff02 +
    /// 0012 + 0000 + 0018 + 0000 + 0070; message words: 3133 + 6401 + 0064 + 0000 + fd00 +
    /// 0058 + 0133; total 0x39240; fold 0x9240 + 0x3 = 0x9243; complement 0x6dbc.
    const V3_V6: [u8; 24] = [
        0x31, 51, 100, 1, 0x00, 100, 0x6d, 0xbc, 0xfd, 0x00, 0, 0x58, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x01, 0x33,
    ];

    /// v3 over IPv6, VRID 7, priority 255, 100 cs, two addresses (fd00:58::133, fe80::99),
    /// unicast from fe80::1 to fe80::2, 40 bytes. Pseudo-header: fe80 + 0001 + fe80 + 0002 +
    /// 0028 + 0070; message: 3107 + ff02 + 0064 + fd00 + 0058 + 0133 + fe80 + 0099; total
    /// 0x52bac; fold 0x2bac + 0x5 = 0x2bb1; complement 0xd44e.
    const V3_V6_TWO: [u8; 40] = [
        0x31, 7, 255, 2, 0x00, 100, 0xd4, 0x4e, 0xfd, 0x00, 0, 0x58, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x01, 0x33, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99,
    ];

    /// The one's complement sum written out the slow way, to check the vectors.
    fn slow_sum(bytes: &[u8]) -> u16 {
        let mut s: u64 = 0;
        for pair in bytes.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = u64::from(*pair.get(1).unwrap_or(&0));
            s += hi | lo;
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn vectors_sum_to_all_ones() {
        // A correct checksum makes the whole sum 0xffff.
        assert_eq!(slow_sum(&V2_PASS), 0xffff);
        assert_eq!(slow_sum(&V2_NONE), 0xffff);
        let mut v3 = vec![192, 168, 58, 137, 224, 0, 0, 18, 0, 112, 0, 12];
        v3.extend_from_slice(&V3);
        assert_eq!(slow_sum(&v3), 0xffff);
        let mut v3b = vec![192, 168, 58, 137, 192, 168, 58, 134, 0, 112, 0, 16];
        v3b.extend_from_slice(&V3_TWO);
        assert_eq!(slow_sum(&v3b), 0xffff);
        let mut v6 = LL1.octets().to_vec();
        v6.extend_from_slice(&MULTICAST_V6.octets());
        v6.extend_from_slice(&[0, 0, 0, 24, 0, 0, 0, 112]);
        v6.extend_from_slice(&V3_V6);
        assert_eq!(slow_sum(&v6), 0xffff);
        let mut v6b = LL1.octets().to_vec();
        v6b.extend_from_slice(&LL2.octets());
        v6b.extend_from_slice(&[0, 0, 0, 40, 0, 0, 0, 112]);
        v6b.extend_from_slice(&V3_V6_TWO);
        assert_eq!(slow_sum(&v6b), 0xffff);
    }

    fn v3_v6() -> Advert {
        Advert {
            version: Version::V3,
            vrid: 51,
            priority: 100,
            interval: 100,
            addresses: vec![VIP6.into()],
            auth: None,
        }
    }

    #[test]
    fn v3_over_ipv6_encodes_and_decodes() {
        assert_eq!(encode(&v3_v6(), LL1, MULTICAST_V6), V3_V6);
        assert_eq!(decode(&V3_V6, LL1, MULTICAST_V6), Ok(v3_v6()));
        let two = Advert {
            vrid: 7,
            priority: 255,
            addresses: vec![VIP6.into(), "fe80::99".parse().unwrap()],
            ..v3_v6()
        };
        assert_eq!(encode(&two, LL1, LL2), V3_V6_TWO);
        assert_eq!(decode(&V3_V6_TWO, LL1, LL2), Ok(two));
        assert_eq!(
            multicast(LL1.into()),
            IpAddr::V6("ff02::12".parse().unwrap())
        );
    }

    #[test]
    fn hop_limit_must_be_255() {
        let info = IpInfo {
            src: LL1.into(),
            dst: MULTICAST_V6.into(),
            ttl: 255,
        };
        assert_eq!(info.check_ttl(), Ok(info));
        let routed = IpInfo { ttl: 64, ..info };
        assert_eq!(routed.check_ttl(), Err(PacketError::Ttl(64)));
    }

    #[test]
    fn ipv6_checksum_covers_the_pseudo_header_and_length() {
        // Another source or destination: the checksum no longer holds.
        assert_eq!(
            decode(&V3_V6, LL2, MULTICAST_V6),
            Err(PacketError::Checksum)
        );
        assert_eq!(decode(&V3_V6, LL1, LL2), Err(PacketError::Checksum));
        let mut bad = V3_V6;
        bad[23] ^= 1;
        assert_eq!(decode(&bad, LL1, MULTICAST_V6), Err(PacketError::Checksum));
        // Addresses are 16 bytes: an IPv4-sized message is the wrong length over IPv6.
        assert_eq!(
            decode(&V3, LL1, MULTICAST_V6),
            Err(PacketError::Length { count: 1, len: 12 })
        );
        assert_eq!(
            decode(&V3_V6[..20], LL1, MULTICAST_V6),
            Err(PacketError::Length { count: 1, len: 20 })
        );
        // Version 2 does not exist over IPv6 (RFC 3768 is IPv4 only).
        let mut v2 = V3_V6;
        v2[0] = 0x21;
        assert_eq!(decode(&v2, LL1, MULTICAST_V6), Err(PacketError::Version(2)));
    }

    fn v2_pass() -> Advert {
        Advert {
            version: Version::V2,
            vrid: 51,
            priority: 150,
            interval: 1,
            addresses: vec![VIP.into()],
            auth: Some(auth_data("1111")),
        }
    }

    fn v3() -> Advert {
        Advert {
            version: Version::V3,
            vrid: 51,
            priority: 100,
            interval: 20,
            addresses: vec![VIP.into()],
            auth: None,
        }
    }

    #[test]
    fn v2_encodes_and_decodes() {
        assert_eq!(encode(&v2_pass(), D1, MULTICAST), V2_PASS);
        assert_eq!(decode(&V2_PASS, D1, MULTICAST), Ok(v2_pass()));
        let none = Advert {
            priority: 100,
            auth: None,
            ..v2_pass()
        };
        assert_eq!(encode(&none, D2, MULTICAST), V2_NONE);
        assert_eq!(decode(&V2_NONE, D2, MULTICAST), Ok(none));
        // v2's checksum does not depend on the addresses.
        assert_eq!(decode(&V2_PASS, D2, D1), Ok(v2_pass()));
    }

    #[test]
    fn v3_encodes_and_decodes() {
        assert_eq!(encode(&v3(), D2, MULTICAST), V3);
        let got = decode(&V3, D2, MULTICAST).unwrap();
        assert_eq!(got, v3());
        assert_eq!(
            got.interval_duration(),
            std::time::Duration::from_millis(200)
        );
        let two = Advert {
            vrid: 7,
            priority: 255,
            interval: 100,
            addresses: vec![VIP.into(), Ipv4Addr::new(10, 0, 0, 1).into()],
            ..v3()
        };
        assert_eq!(encode(&two, D2, D1), V3_TWO);
        assert_eq!(decode(&V3_TWO, D2, D1), Ok(two));
    }

    #[test]
    fn v3_checksum_covers_the_pseudo_header() {
        // Same bytes, other source or destination: the checksum no longer holds.
        assert_eq!(decode(&V3, D1, MULTICAST), Err(PacketError::Checksum));
        assert_eq!(decode(&V3, D2, D1), Err(PacketError::Checksum));
    }

    #[test]
    fn bad_messages_are_rejected() {
        let mut bad = V2_PASS;
        bad[7] ^= 1;
        assert_eq!(decode(&bad, D1, MULTICAST), Err(PacketError::Checksum));
        let mut bad = V2_PASS;
        bad[0] = 0x11;
        assert_eq!(decode(&bad, D1, MULTICAST), Err(PacketError::Version(1)));
        let mut bad = V2_PASS;
        bad[0] = 0x22;
        assert_eq!(decode(&bad, D1, MULTICAST), Err(PacketError::Type(2)));
        let mut bad = V2_PASS;
        bad[3] = 2;
        assert_eq!(
            decode(&bad, D1, MULTICAST),
            Err(PacketError::Length { count: 2, len: 20 })
        );
        assert_eq!(
            decode(&V2_PASS[..19], D1, MULTICAST),
            Err(PacketError::Length { count: 1, len: 19 })
        );
        assert_eq!(
            decode(&V2_PASS[..7], D1, MULTICAST),
            Err(PacketError::Truncated)
        );
        // v3 has no auth data: a v3 header with v2's length is wrong.
        let mut bad = V2_PASS;
        bad[0] = 0x31;
        assert_eq!(
            decode(&bad, D1, MULTICAST),
            Err(PacketError::Length { count: 1, len: 20 })
        );
    }

    #[test]
    fn auth_and_interval_are_checked_per_instance() {
        let pass = Expect {
            version: Version::V2,
            auth: Some(auth_data("1111")),
            interval: 1,
        };
        assert_eq!(pass.check(&v2_pass()), Ok(()));
        let wrong = Advert {
            auth: Some(auth_data("2222")),
            ..v2_pass()
        };
        assert_eq!(pass.check(&wrong), Err(PacketError::Auth));
        let none = Advert {
            auth: None,
            ..v2_pass()
        };
        assert_eq!(pass.check(&none), Err(PacketError::Auth));
        let open = Expect {
            auth: None,
            ..pass.clone()
        };
        assert_eq!(open.check(&v2_pass()), Err(PacketError::Auth));
        assert_eq!(open.check(&none), Ok(()));
        let slow = Advert {
            interval: 3,
            ..v2_pass()
        };
        assert_eq!(
            pass.check(&slow),
            Err(PacketError::Interval { got: 3, want: 1 })
        );
        assert_eq!(pass.check(&v3()), Err(PacketError::Version(3)));
        // v3: any interval (the backup learns the master's).
        let v3e = Expect {
            version: Version::V3,
            auth: None,
            interval: 100,
        };
        assert_eq!(v3e.check(&v3()), Ok(()));
        // Passwords longer than 8 bytes are cut, as keepalived does.
        assert_eq!(auth_data("123456789"), *b"12345678");
    }

    #[test]
    fn ip_header_ttl_and_protocol() {
        let mut ip = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 255, 112, 0, 0, 192, 168, 58, 134, 224, 0, 0, 18,
        ];
        ip.extend_from_slice(&V2_PASS);
        let (info, msg) = parse_ipv4(&ip).unwrap();
        assert_eq!(
            info,
            IpInfo {
                src: D1.into(),
                dst: MULTICAST.into(),
                ttl: 255
            }
        );
        assert_eq!(msg, V2_PASS);
        let mut routed = ip.clone();
        routed[8] = 254;
        assert_eq!(parse_ipv4(&routed), Err(PacketError::Ttl(254)));
        let mut udp = ip.clone();
        udp[9] = 17;
        assert_eq!(parse_ipv4(&udp), Err(PacketError::NotVrrp));
        assert_eq!(parse_ipv4(&ip[..30]), Err(PacketError::Truncated));
    }
}
