//! Packet-level tests of fragments, both families: a datagram's first fragment is scheduled
//! like any packet and remembered (FRAGS), its later fragments follow it; a later fragment
//! of no remembered datagram passes. Each test asserts the action, every output byte and the
//! counters.
//!
//! Needs root (or CAP_BPF + CAP_NET_ADMIN); without it every test fails and says so.

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::{Reason, frag_timeouts};
use lb_tests::packet::{
    CLIENT_MAC, DIRECTOR_MAC, Harness, backend_of, fragments_v4, fragments_v6, udp4_frame,
    udp6_frame,
};

const VIP4: [u8; 4] = [192, 168, 58, 133];
const CLIENT4: [u8; 4] = [192, 168, 58, 100];
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 0x133);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 0x100);

/// `dns` (IPv4) and `dns6` (IPv6): UDP port 53 over four backends each with mh, so a wrong
/// backend shows.
const DNS: &str = "
services:
  - name: dns
    vip: 192.168.58.133
    port: 53
    protocol: udp
    scheduler: mh
    table_size: 4093
    backends:
      - address: 192.168.58.135
      - address: 192.168.58.136
      - address: 192.168.58.137
      - address: 192.168.58.138
  - name: dns6
    vip: \"fd00:58::133\"
    port: 53
    protocol: udp
    scheduler: mh
    table_size: 4093
    backends:
      - address: \"fd00:58::135\"
      - address: \"fd00:58::136\"
      - address: \"fd00:58::137\"
      - address: \"fd00:58::138\"
";

/// A harness with [`DNS`] applied.
fn harness() -> Harness {
    Harness::with_config(DNS)
}

/// 4,000 bytes of UDP payload: three fragments at a 1,500-byte MTU.
fn payload(seed: u8) -> Vec<u8> {
    (0..4000u32).map(|i| (i as u8).wrapping_add(seed)).collect()
}

/// Datagram `n` (its own source port and id) to the IPv4 VIP, in fragments of 1,480 bytes.
fn datagram4(n: u16) -> Vec<Vec<u8>> {
    let d = udp4_frame(
        (CLIENT_MAC, DIRECTOR_MAC),
        (CLIENT4, 20000 + n),
        (VIP4, 53),
        &payload(n as u8),
    );
    fragments_v4(&d, 0x1000 + n, 1480)
}

/// Datagram `n` to the IPv6 VIP, in fragments of 1,448 bytes (a 1,500-byte MTU).
fn datagram6(n: u16) -> Vec<Vec<u8>> {
    let d = udp6_frame(
        (CLIENT_MAC, DIRECTOR_MAC),
        (CLIENT6, 20000 + n),
        (VIP6, 53),
        &payload(n as u8),
    );
    fragments_v6(&d, 0x0010_0000 + n as u32, 1448)
}

/// IP bytes of a fragment: IPv4 total length, or 40 + IPv6 payload length.
fn ip_len(f: &[u8]) -> u64 {
    if f[12..14] == [0x86, 0xdd] {
        40 + u16::from_be_bytes([f[18], f[19]]) as u64
    } else {
        u16::from_be_bytes([f[16], f[17]]) as u64
    }
}

fn v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 58, last)
}

fn v6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, last)
}

#[test]
fn every_fragment_follows_its_first_in_both_families() {
    let mut h = harness();
    let mut used = [[0u64; 4]; 2];
    for (family, service) in [(0usize, "dns"), (1, "dns6")] {
        let mut bytes = 0;
        for n in 0..40u16 {
            let frags = if family == 0 {
                datagram4(n)
            } else {
                datagram6(n)
            };
            assert_eq!(frags.len(), 3, "first, middle, last");
            let to = backend_of(&frags[0], &h.run(&frags[0]));
            for (i, f) in frags.iter().enumerate().skip(1) {
                assert_eq!(backend_of(f, &h.run(f)), to, "datagram {n} fragment {i}");
            }
            used[family][to] += 1;
            bytes += frags.iter().map(|f| ip_len(f)).sum::<u64>();
        }
        // Every fragment counted in the service; one flow a datagram (its first fragment).
        h.assert_service(service, 120, bytes, 40);
    }
    // mh spread the datagrams: the test would see a wrong backend.
    for (family, u) in used.iter().enumerate() {
        assert!(
            u.iter().filter(|&&n| n > 0).count() >= 3,
            "family {family}: {u:?}"
        );
    }
    h.assert_reasons(&[(Reason::Forwarded, 80), (Reason::ForwardedFragment, 160)]);
    assert_eq!(h.frag_entries().len(), 80, "one entry a datagram");
}

#[test]
fn fragment_counters_are_per_backend_with_the_fragments_bytes() {
    let mut h = harness();
    for (frags, service, backends) in [
        (
            datagram4(1),
            "dns",
            [v4(135), v4(136), v4(137), v4(138)].map(Into::into),
        ),
        (
            datagram6(1),
            "dns6",
            [v6(0x135), v6(0x136), v6(0x137), v6(0x138)].map(Into::into),
        ),
    ] {
        let to = backend_of(&frags[0], &h.run(&frags[0]));
        for f in &frags[1..] {
            backend_of(f, &h.run(f));
        }
        let lens: Vec<u64> = frags.iter().map(|f| ip_len(f)).collect();
        let total: u64 = lens.iter().sum();
        // IPv4: 1,500 + 1,500 + 1,068 (20-byte headers); IPv6: 1,496 + 1,496 + 1,160.
        eprintln!("{service}: fragment IP lengths {lens:?}");
        let backends: [std::net::IpAddr; 4] = backends;
        for (i, b) in backends.iter().enumerate() {
            let (p, by, n) = if i == to { (3, total, 1) } else { (0, 0, 0) };
            h.assert_backend(service, *b, p, by, n);
        }
    }
}

#[test]
fn out_of_order_fragments_and_a_later_one_before_its_first() {
    let mut h = harness();
    for frags in [datagram4(7), datagram6(7)] {
        h.reset_reasons();
        // Last and middle before the first: no entry yet, they pass untouched.
        h.assert_passed(&frags[2], Reason::PassFragment);
        h.assert_passed(&frags[1], Reason::PassFragment);
        // The first is scheduled; then last before middle both follow it.
        let to = backend_of(&frags[0], &h.run(&frags[0]));
        assert_eq!(backend_of(&frags[2], &h.run(&frags[2])), to);
        assert_eq!(backend_of(&frags[1], &h.run(&frags[1])), to);
        h.assert_reasons(&[(Reason::Forwarded, 1), (Reason::ForwardedFragment, 2)]);
    }
}

#[test]
fn an_entry_expires_after_the_reassembly_timeout_each_fragment_refreshes() {
    let mut h = harness();
    for (frags, timeout) in [
        (datagram4(3), frag_timeouts::IPV4_S as u64),
        (datagram6(3), frag_timeouts::IPV6_S as u64),
    ] {
        h.reset_reasons();
        let to = backend_of(&frags[0], &h.run(&frags[0]));
        // Just inside the timeout, a fragment is forwarded and refreshes the entry ...
        h.age_frags(timeout - 2);
        assert_eq!(backend_of(&frags[1], &h.run(&frags[1])), to);
        h.age_frags(timeout - 2);
        assert_eq!(backend_of(&frags[1], &h.run(&frags[1])), to);
        // ... past it, the entry is dead: the fragment passes to the kernel.
        h.age_frags(timeout + 2);
        h.assert_reasons(&[(Reason::Forwarded, 1), (Reason::ForwardedFragment, 2)]);
        h.assert_passed(&frags[2], Reason::PassFragment);
    }
}

#[test]
fn a_fragment_whose_backend_went_down_passes() {
    let mut h = harness();
    // In both families the backend is held down by the health checker's apply; back up, the
    // datagram's later fragments go to it again.
    let frags = datagram6(5);
    let to = backend_of(&frags[0], &h.run(&frags[0]));
    h.apply_with_down(DNS, &[("dns6", v6(0x135 + to as u16))]);
    h.assert_passed(&frags[1], Reason::PassFragment);
    h.apply(DNS);
    assert_eq!(backend_of(&frags[2], &h.run(&frags[2])), to);
    let frags = datagram4(5);
    let to = backend_of(&frags[0], &h.run(&frags[0]));
    h.apply_with_down(DNS, &[("dns", v4(135 + to as u8))]);
    h.assert_passed(&frags[1], Reason::PassFragment);
    h.apply(DNS);
    assert_eq!(backend_of(&frags[2], &h.run(&frags[2])), to);
}

#[test]
fn fragments_of_no_vip_service_pass() {
    let mut h = harness();
    for frags in [datagram4(9), datagram6(9)] {
        // The same datagram to port 54, which no service has.
        let mut other: Vec<Vec<u8>> = frags.clone();
        let dport = if other[0][12..14] == [0x86, 0xdd] {
            14 + 40 + 8 + 2
        } else {
            14 + 20 + 2
        };
        other[0][dport..dport + 2].copy_from_slice(&54u16.to_be_bytes());
        h.assert_passed(&other[0], Reason::PassNotVip);
        h.assert_passed(&other[1], Reason::PassFragment);
        h.assert_passed(&other[2], Reason::PassFragment);
    }
    assert!(h.frag_entries().is_empty());
    h.assert_service("dns", 0, 0, 0);
    h.assert_service("dns6", 0, 0, 0);
}

#[test]
fn a_first_fragment_too_short_for_its_ports_passes_and_a_later_one_to_another_mac_passes() {
    let mut h = harness();
    // An IPv4 first fragment of 8 payload bytes carrying a TCP header's first 8: malformed.
    let mut tcp = lb_tests::packet::tcp_frame(
        (CLIENT_MAC, DIRECTOR_MAC),
        (CLIENT4, 40000),
        (VIP4, 53),
        "S",
    );
    tcp.truncate(14 + 20 + 20);
    let tiny = &fragments_v4(&tcp, 77, 8)[0];
    assert_eq!(tiny.len(), 14 + 20 + 8);
    h.assert_passed(tiny, Reason::PassMalformed);
    // A later fragment of a remembered datagram, flooded to another MAC: not ours.
    let frags = datagram4(11);
    backend_of(&frags[0], &h.run(&frags[0]));
    let mut flooded = frags[1].clone();
    flooded[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    h.assert_passed(&flooded, Reason::PassOtherMac);
    h.assert_service("dns", 1, ip_len(&frags[0]), 1);
}
