//! How a new master announces its virtual addresses on the link, as whole Ethernet frames
//! for [`super::socket::Frames`]:
//!
//! - IPv4: a gratuitous ARP request ([`garp_frame`], RFC 5227's announcement).
//! - IPv6: an unsolicited neighbour advertisement ([`unsolicited_na`], RFC 4861 7.2.6): ICMPv6
//!   type 136 to all-nodes ff02::1 (33:33:00:00:00:01), hop limit 255, override set,
//!   solicited and router clear, target = the address, with a target link-layer address
//!   option = the interface's MAC, sent from the address itself. Neighbours that have an
//!   entry for it (Linux ignores unsolicited adverts for addresses it has none for) switch to
//!   the new MAC without asking.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::packet::checksum;
use crate::net::arp;

/// The frame that announces `ip` from `mac`: a gratuitous ARP or an unsolicited neighbour
/// advertisement.
pub fn frame(mac: [u8; 6], ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(ip) => garp_frame(mac, ip).to_vec(),
        IpAddr::V6(ip) => unsolicited_na(mac, ip).to_vec(),
    }
}

/// A gratuitous ARP request for `ip` from `mac`: broadcast, sender = target = `ip`.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    arp::request(mac, ip, ip)
}

/// All-nodes, link-local scope.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// ICMPv6 (IPv6 next header 58) and its Neighbor Advertisement type.
const ICMPV6: u8 = 58;
const NEIGHBOR_ADVERT: u8 = 136;
/// The override flag (R 0x80, S 0x40, O 0x20 in the first byte after the checksum).
const OVERRIDE: u8 = 0x20;
/// The Target Link-Layer Address option: type 2, length 1 (8 bytes).
const TARGET_LL_OPTION: [u8; 2] = [2, 1];
/// Ethernet 14 + IPv6 40 + ICMPv6 32 (header 8, target 16, option 8).
pub const NA_LEN: usize = 86;

/// An unsolicited neighbour advertisement of `ip` at `mac` (see the module's text).
pub fn unsolicited_na(mac: [u8; 6], ip: Ipv6Addr) -> [u8; NA_LEN] {
    let mut f = [0u8; NA_LEN];
    f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let ip6 = &mut f[14..54];
    ip6[0] = 0x60; // version 6, traffic class 0, flow label 0
    ip6[4..6].copy_from_slice(&32u16.to_be_bytes()); // payload length
    ip6[6] = ICMPV6;
    ip6[7] = 255; // hop limit (RFC 4861 7.1.2: a receiver drops anything else)
    ip6[8..24].copy_from_slice(&ip.octets());
    ip6[24..40].copy_from_slice(&ALL_NODES.octets());
    let icmp = &mut f[54..86];
    icmp[0] = NEIGHBOR_ADVERT;
    icmp[4] = OVERRIDE;
    icmp[8..24].copy_from_slice(&ip.octets());
    icmp[24..26].copy_from_slice(&TARGET_LL_OPTION);
    icmp[26..32].copy_from_slice(&mac);
    let mut pseudo = [0u8; 40];
    pseudo[0..16].copy_from_slice(&ip.octets());
    pseudo[16..32].copy_from_slice(&ALL_NODES.octets());
    pseudo[32..36].copy_from_slice(&32u32.to_be_bytes());
    pseudo[39] = ICMPV6;
    let sum = checksum(&[&pseudo, &f[54..86]]);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_frame_layout() {
        let f = garp_frame([2, 0, 0, 0, 0, 0x86], Ipv4Addr::new(192, 168, 58, 133));
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0x86, 0x08, 0x06, // Ethernet
            0, 1, 0x08, 0, 6, 4, 0, 1, // ARP request, Ethernet/IPv4
            2, 0, 0, 0, 0, 0x86, 192, 168, 58, 133, // sender
            0, 0, 0, 0, 0, 0, 192, 168, 58, 133, // target
        ];
        assert_eq!(f, want);
    }

    /// fd00:58::133 at 02:00:00:00:00:86. ICMPv6 checksum by hand, pseudo-header words
    /// (source, ff02::1, length 32, next header 58): fd00 + 0058 + 0133 + ff02 + 0001 + 0020 +
    /// 003a; message words: 8800 + 2000 + fd00 + 0058 + 0133 (target) + 0201 + 0200 + 0000 +
    /// 0086 (option); total 0x3a8fa; fold 0xa8fa + 0x3 = 0xa8fd; complement 0x5702.
    #[test]
    fn unsolicited_na_layout() {
        let mac = [2, 0, 0, 0, 0, 0x86];
        let vip: Ipv6Addr = "fd00:58::133".parse().unwrap();
        let f = unsolicited_na(mac, vip);
        let mut want = vec![0x33, 0x33, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0x86, 0x86, 0xdd];
        want.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]);
        want.extend_from_slice(&vip.octets());
        want.extend_from_slice(&ALL_NODES.octets());
        want.extend_from_slice(&[136, 0, 0x57, 0x02, 0x20, 0, 0, 0]);
        want.extend_from_slice(&vip.octets());
        want.extend_from_slice(&[2, 1, 2, 0, 0, 0, 0, 0x86]);
        assert_eq!(f.to_vec(), want);
        // A second implementation: the one's complement sum over pseudo-header and message,
        // checksum included, is 0xffff.
        let mut all = vip.octets().to_vec();
        all.extend_from_slice(&ALL_NODES.octets());
        all.extend_from_slice(&[0, 0, 0, 32, 0, 0, 0, 58]);
        all.extend_from_slice(&f[54..]);
        let mut sum: u32 = all
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        assert_eq!(frame(mac, vip.into()), f.to_vec());
        assert_eq!(
            frame(mac, Ipv4Addr::new(192, 168, 58, 133).into()).len(),
            42
        );
    }
}
