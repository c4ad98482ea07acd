//! ARP frames (RFC 826) for [`super::frames`]: a broadcast request, and the sender of a reply.
//! VRRP's gratuitous ARP is a request whose sender and target are the same address;
//! `lb-ctl doctor` asks who answers for a VIP with a plain request.

use std::net::Ipv4Addr;

/// The EtherType of ARP.
pub const ETHERTYPE: u16 = 0x0806;
/// Ethernet 14 + ARP 28.
pub const LEN: usize = 42;
const REQUEST: u16 = 1;
const REPLY: u16 = 2;

/// A broadcast ARP request from `mac`/`sender` for `target` (target MAC zero, RFC 5227).
pub fn request(mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> [u8; LEN] {
    let mut f = [0u8; LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&REQUEST.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&sender.octets());
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// An ARP reply as received: who says it has which address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The sender hardware address in the ARP payload.
    pub mac: [u8; 6],
    /// The address it answers for (the sender protocol address).
    pub ip: Ipv4Addr,
}

/// The reply in `frame` (an Ethernet frame without VLAN tags), if it is an Ethernet/IPv4 ARP
/// reply.
pub fn parse_reply(frame: &[u8]) -> Option<Reply> {
    let f = frame.get(..LEN)?;
    let be = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
    if be(12) != ETHERTYPE || be(14) != 1 || be(16) != 0x0800 || f[18] != 6 || f[19] != 4 {
        return None;
    }
    if be(20) != REPLY {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&f[22..28]);
    Some(Reply {
        mac,
        ip: Ipv4Addr::new(f[28], f[29], f[30], f[31]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_turned_into_its_reply_parses_to_the_answering_host() {
        let me = [2, 0, 0, 0, 0, 0x86];
        let f = request(me, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[38..42], &[10, 0, 0, 9]);
        assert_eq!(parse_reply(&f), None, "a request is no reply");
        // The reply of 02:..:87 for 10.0.0.9, as a kernel builds it.
        let them = [2, 0, 0, 0, 0, 0x87];
        let mut r = f;
        r[0..6].copy_from_slice(&me);
        r[6..12].copy_from_slice(&them);
        r[20..22].copy_from_slice(&REPLY.to_be_bytes());
        r[22..28].copy_from_slice(&them);
        r[28..32].copy_from_slice(&[10, 0, 0, 9]);
        r[32..38].copy_from_slice(&me);
        r[38..42].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(
            parse_reply(&r),
            Some(Reply {
                mac: them,
                ip: Ipv4Addr::new(10, 0, 0, 9)
            })
        );
        assert_eq!(parse_reply(&r[..41]), None, "a short frame");
    }
}
