//! The TCP segments of the via-VIP check ([`super::via_vip`]), as whole Ethernet frames: built
//! (IPv4 or IPv6, no options, checksums filled in) and parsed back. Pure: no sockets.

use std::net::IpAddr;

use crate::net::checksum::internet as checksum;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_LEN: usize = 20;
const PROTO_TCP: u8 = 6;
const TTL: u8 = 64;
const WINDOW: u16 = 64240;

/// Who a segment goes from and to, at both layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// A TCP segment read from a frame (its checksums are not verified: a frame the kernel hands
/// over with checksum offload may carry an incomplete one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

/// The EtherType of `addr`'s family.
pub fn ethertype(addr: IpAddr) -> u16 {
    match addr {
        IpAddr::V4(_) => ETHERTYPE_IPV4,
        IpAddr::V6(_) => ETHERTYPE_IPV6,
    }
}

/// A frame with a TCP header of `flags`, `seq` and `ack` (no options, no data) from `e.src` to
/// `e.dst`; `None` when the two addresses are of different families.
pub fn frame(e: &Endpoints, seq: u32, ack: u32, flags: u8) -> Option<Vec<u8>> {
    let mut tcp = [0u8; TCP_LEN];
    tcp[0..2].copy_from_slice(&e.sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&e.dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = ((TCP_LEN / 4) as u8) << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&WINDOW.to_be_bytes());
    let mut out = Vec::with_capacity(ETH_LEN + IPV6_LEN + TCP_LEN);
    out.extend_from_slice(&e.dst_mac);
    out.extend_from_slice(&e.src_mac);
    out.extend_from_slice(&ethertype(e.src).to_be_bytes());
    let len = TCP_LEN as u16;
    let sum = match (e.src, e.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = [0u8; IPV4_LEN];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(IPV4_LEN as u16 + len).to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = TTL;
            ip[9] = PROTO_TCP;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let ip_sum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
            out.extend_from_slice(&ip);
            let mut pseudo = [0u8; 12];
            pseudo[0..4].copy_from_slice(&s.octets());
            pseudo[4..8].copy_from_slice(&d.octets());
            pseudo[9] = PROTO_TCP;
            pseudo[10..12].copy_from_slice(&len.to_be_bytes());
            checksum(&[&pseudo, &tcp])
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = [0u8; IPV6_LEN];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&len.to_be_bytes());
            ip[6] = PROTO_TCP;
            ip[7] = TTL;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            out.extend_from_slice(&ip);
            let mut pseudo = [0u8; 40];
            pseudo[0..16].copy_from_slice(&s.octets());
            pseudo[16..32].copy_from_slice(&d.octets());
            pseudo[32..36].copy_from_slice(&u32::from(len).to_be_bytes());
            pseudo[39] = PROTO_TCP;
            checksum(&[&pseudo, &tcp])
        }
        _ => return None,
    };
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    out.extend_from_slice(&tcp);
    Some(out)
}

/// The TCP segment in `frame` (Ethernet, then IPv4 of any header length that is not a later
/// fragment, or IPv6 whose next header is TCP); `None` for anything else or a short frame.
pub fn parse(frame: &[u8]) -> Option<Segment> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(ETH_LEN..)?;
    let (src, dst, tcp) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let fragment_offset = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
            if ip.first()? >> 4 != 4 || ihl < IPV4_LEN || *ip.get(9)? != PROTO_TCP {
                return None;
            }
            if fragment_offset != 0 {
                return None;
            }
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), ip.get(ihl..)?)
        }
        ETHERTYPE_IPV6 => {
            if ip.first()? >> 4 != 6 || *ip.get(6)? != PROTO_TCP {
                return None;
            }
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), ip.get(IPV6_LEN..)?)
        }
        _ => return None,
    };
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(tcp.get(at..at + 4)?.try_into().ok()?))
    };
    Some(Segment {
        src,
        dst,
        sport: u16::from_be_bytes([*tcp.first()?, *tcp.get(1)?]),
        dport: u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]),
        seq: word(4)?,
        ack: word(8)?,
        flags: *tcp.get(13)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0x86];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0x87];

    fn ends(src: &str, dst: &str) -> Endpoints {
        Endpoints {
            src_mac: A,
            dst_mac: B,
            src: src.parse().unwrap_or_else(|_| unreachable!()),
            dst: dst.parse().unwrap_or_else(|_| unreachable!()),
            sport: 40123,
            dport: 80,
        }
    }

    /// A SYN of each family: etherparse reads the same fields and both checksums verify.
    #[test]
    fn syn_frames_have_valid_checksums() {
        for (src, dst) in [
            ("192.168.58.134", "192.168.58.133"),
            ("fd00:58::134", "fd00:58::133"),
        ] {
            let e = ends(src, dst);
            let f = frame(&e, 0xdead_beef, 0, SYN).unwrap_or_else(|| panic!("no frame"));
            let p = SlicedPacket::from_ethernet(&f).unwrap_or_else(|e| panic!("{e}"));
            let link = p.link.unwrap_or_else(|| panic!("no link"));
            let eth = link.to_header().unwrap_or_else(|| panic!("no ethernet"));
            let eth = match eth {
                etherparse::LinkHeader::Ethernet2(h) => h,
                other => panic!("{other:?}"),
            };
            assert_eq!((eth.source, eth.destination), (A, B));
            let Some(TransportSlice::Tcp(tcp)) = p.transport else {
                panic!("no tcp");
            };
            assert_eq!((tcp.source_port(), tcp.destination_port()), (40123, 80));
            assert_eq!(tcp.sequence_number(), 0xdead_beef);
            assert!(tcp.syn() && !tcp.ack() && !tcp.rst());
            let header = tcp.to_header();
            let want = match p.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => {
                    let h = ip.header().to_header();
                    assert_eq!(h.header_checksum, h.calc_header_checksum(), "{src}");
                    assert_eq!(h.time_to_live, 64);
                    header.calc_checksum_ipv4(&h, &[])
                }
                Some(etherparse::NetSlice::Ipv6(ip)) => {
                    header.calc_checksum_ipv6(&ip.header().to_header(), &[])
                }
                other => panic!("{other:?}"),
            }
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(header.checksum, want, "{src}: tcp checksum");
            // And it reads back.
            let s = parse(&f).unwrap_or_else(|| panic!("unparsed"));
            assert_eq!(
                (s.src, s.dst, s.seq, s.flags),
                (e.src, e.dst, 0xdead_beef, SYN)
            );
        }
    }

    /// A SYN-ACK built by etherparse (IPv4 with options, IPv6) is read field by field.
    #[test]
    fn syn_ack_frames_parse() {
        let v4 = PacketBuilder::ethernet2(B, A)
            .ipv4([192, 168, 58, 133], [192, 168, 58, 134], 64)
            .tcp(80, 40123, 7, 1000)
            .syn()
            .ack(0xdead_bef0);
        let mut f = Vec::new();
        v4.write(&mut f, &[]).unwrap_or_else(|e| panic!("{e}"));
        let s = parse(&f).unwrap_or_else(|| panic!("unparsed"));
        assert_eq!(
            s.src,
            "192.168.58.133"
                .parse::<IpAddr>()
                .unwrap_or_else(|_| unreachable!())
        );
        assert_eq!(
            (s.sport, s.dport, s.seq, s.ack),
            (80, 40123, 7, 0xdead_bef0)
        );
        assert_eq!(s.flags, SYN | ACK);

        let src: [u8; 16] = "fd00:58::133"
            .parse::<std::net::Ipv6Addr>()
            .unwrap_or_else(|_| unreachable!())
            .octets();
        let v6 = PacketBuilder::ethernet2(B, A)
            .ipv6(src, [0; 16], 64)
            .tcp(80, 40123, 9, 1000)
            .rst();
        let mut f = Vec::new();
        v6.write(&mut f, &[]).unwrap_or_else(|e| panic!("{e}"));
        let s = parse(&f).unwrap_or_else(|| panic!("unparsed"));
        assert_eq!(s.src, IpAddr::from(src));
        assert_eq!((s.seq, s.flags), (9, RST));

        // Truncated, not TCP, or mixed families: nothing.
        assert_eq!(parse(&f[..f.len() - 10]), None);
        let udp = PacketBuilder::ethernet2(B, A)
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
            .udp(1, 2);
        let mut u = Vec::new();
        udp.write(&mut u, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parse(&u), None);
        assert_eq!(frame(&ends("10.0.0.1", "fd00::1"), 1, 0, SYN), None);
    }
}
