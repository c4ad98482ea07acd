//! Tunnel backends (IPIP, GUE) at packet level: every byte of the outer headers against a
//! reference built with etherparse ([`lb_tests::packet::encapsulated`]), the inner packet unchanged, the FIB's next hop; a
//! missing route or neighbour passes the packet unchanged; a packet too big for the route is
//! answered with ICMP / ICMPv6 from the VIP.
//!
//! The service file cannot say `forward: tunnel` at this level yet, so each test applies a
//! direct-routing file and turns its backend into a tunnel backend in the maps
//! ([`Harness::make_tunnel`]). The runs arrive on `d0` of a [`FibNs`], whose routes the data
//! path's FIB lookups read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    IpDscp, IpEcn, IpHeaders, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder,
    icmpv4::DestUnreachableHeader,
};
use lb_common::{Forward, Reason};
use lb_tests::packet::{
    CLIENT_MAC, DIRECTOR_MAC, DIRECTOR_V4, DIRECTOR_V6, Entered, FibNs, Harness, Output, ROUTE_MTU,
    Tunnel, XDP_PASS, XDP_TX, encapsulated, flow_hash,
};

const CONFIG: &str = "
services:
  - { name: web, vip: 192.168.58.133, port: 80, scheduler: rr,
      backends: [ { address: 192.168.58.135 } ] }
  - { name: web6, vip: \"fd00:58::133\", port: 80, scheduler: rr,
      backends: [ { address: \"fd00:58::135\" } ] }
";
const VIP: [u8; 4] = [192, 168, 58, 133];
const CLIENT: [u8; 4] = [192, 168, 58, 100];

fn vip6() -> Ipv6Addr {
    "fd00:58::133".parse().unwrap()
}
fn client6() -> Ipv6Addr {
    "fd00:58::100".parse().unwrap()
}
fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse().unwrap())
}
fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

/// The harness with both services, running inside a fresh [`FibNs`]; the backends of `web`
/// and `web6` made tunnel backends as given.
struct Setup {
    h: Harness,
    ns: FibNs,
    _inside: Entered,
}

impl Setup {
    fn new(web: Option<Tunnel>, web6: Option<Tunnel>) -> Setup {
        let mut h = Harness::with_config(CONFIG);
        let ns = FibNs::new().expect("a namespace with routes for the FIB lookups");
        let inside = ns.enter().expect("entering it");
        h.register_iface(ns.ifindex);
        if let Some(t) = web {
            h.make_tunnel("web", v4([192, 168, 58, 135]), t);
        }
        if let Some(t) = web6 {
            h.make_tunnel("web6", v6("fd00:58::135"), t);
        }
        h.reset_reasons();
        Setup {
            h,
            ns,
            _inside: inside,
        }
    }

    fn run(&mut self, frame: &[u8]) -> Output {
        self.h.run_on(self.ns.ifindex, frame)
    }

    /// Runs `frame` and asserts it passed unchanged, counted as `reason` alone.
    fn assert_passed(&mut self, frame: &[u8], reason: Reason) {
        self.h.reset_reasons();
        let out = self.run(frame);
        assert_eq!(out.action, XDP_PASS, "{reason:?}");
        assert_eq!(out.data, frame, "a passed frame must not change");
        self.h.assert_reasons(&[(reason, 1)]);
        self.h.reset_reasons();
    }
}

fn tunnel(forward: Forward, addr: IpAddr, src: Option<IpAddr>, port: u16) -> Tunnel {
    Tunnel {
        forward,
        addr,
        src,
        port,
    }
}

/// Client -> VIP:80, TCP SYN with `payload` bytes, the given TOS and TTL, DF as given.
fn frame4(sport: u16, tos: u8, ttl: u8, df: bool, payload: usize) -> Vec<u8> {
    let mut h = Ipv4Header::new(0, ttl, IpNumber::TCP, CLIENT, VIP).unwrap();
    h.dscp = IpDscp::try_new(tos >> 2).unwrap();
    h.ecn = IpEcn::try_new(tos & 3).unwrap();
    h.dont_fragment = df;
    h.identification = 0x1234;
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ip(IpHeaders::Ipv4(h, Default::default()))
        .tcp(sport, 80, 1, 64240)
        .syn()
        .write(&mut v, &vec![0xab; payload])
        .unwrap();
    v
}

/// The IPv6 twin of [`frame4`] (traffic class, hop limit).
fn frame6(sport: u16, tc: u8, hop: u8, payload: usize) -> Vec<u8> {
    let h = Ipv6Header {
        traffic_class: tc,
        flow_label: Ipv6FlowLabel::try_new(0x12345).unwrap(),
        payload_length: 0,
        next_header: IpNumber::TCP,
        hop_limit: hop,
        source: client6().octets(),
        destination: vip6().octets(),
    };
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ip(IpHeaders::Ipv6(h, Default::default()))
        .tcp(sport, 80, 1, 64240)
        .syn()
        .write(&mut v, &vec![0xcd; payload])
        .unwrap();
    v
}

/// Asserts `out` is `input` encapsulated as given, and that etherparse reads the outer IPv4
/// header's checksum as correct.
fn assert_encapsulated(
    out: &Output,
    input: &[u8],
    src: IpAddr,
    dst: IpAddr,
    gue: Option<u16>,
    hash: u32,
) {
    assert_eq!(out.action, XDP_TX, "encapsulated and sent");
    let want = encapsulated(input, src, dst, gue, hash);
    assert_eq!(out.data.len(), want.len(), "frame length");
    for (i, (a, b)) in out.data.iter().zip(&want).enumerate() {
        assert_eq!(a, b, "byte {i} of the frame: got {:02x?}", &out.data);
    }
    if dst.is_ipv4() {
        let h = etherparse::Ipv4HeaderSlice::from_slice(&out.data[14..]).unwrap();
        assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
    }
    // The inner packet, byte for byte, at the end.
    assert_eq!(
        &out.data[out.data.len() - (input.len() - 14)..],
        &input[14..]
    );
}

#[test]
fn ipip_ipv4_in_ipv4_has_every_outer_byte_and_counts_the_inner_length() {
    let backend = v4([10, 20, 0, 11]);
    let src = v4(DIRECTOR_V4);
    let mut s = Setup::new(Some(tunnel(Forward::Ipip, backend, Some(src), 0)), None);
    let input = frame4(40000, 0x2a, 61, true, 100);
    let out = s.run(&input);
    assert_encapsulated(&out, &input, src, backend, None, 0);
    assert_eq!(out.data[14 + 9], 4, "protocol 4: IPv4 inside");
    let inner_len = (input.len() - 14) as u64;
    s.h.assert_reasons(&[(Reason::Forwarded, 1)]);
    s.h.assert_service("web", 1, inner_len, 1);
    s.h.assert_backend("web", backend, 1, inner_len, 1);
    // The flow's next packet: the same backend, the same encapsulation.
    let out = s.run(&input);
    assert_encapsulated(&out, &input, src, backend, None, 0);
    s.h.assert_service("web", 2, 2 * inner_len, 1);
}

#[test]
fn ipip_ipv6_in_ipv6_has_every_outer_byte() {
    let backend = v6("fd20::11");
    let src = v6(DIRECTOR_V6);
    let mut s = Setup::new(None, Some(tunnel(Forward::Ipip, backend, Some(src), 0)));
    let input = frame6(40000, 0xb8, 57, 60);
    let out = s.run(&input);
    let hash = flow_hash(IpAddr::V6(client6()), IpAddr::V6(vip6()), 40000, 80);
    assert_encapsulated(&out, &input, src, backend, None, hash);
    assert_eq!(out.data[14 + 6], 41, "next header 41: IPv6 inside");
    let inner_len = (input.len() - 14) as u64;
    s.h.assert_service("web6", 1, inner_len, 1);
    s.h.assert_backend("web6", backend, 1, inner_len, 1);
}

#[test]
fn gue_over_ipv4_and_ipv6_is_udp_to_the_port_with_the_inner_packet_directly() {
    let (b4, b6) = (v4([10, 20, 0, 12]), v6("fd20::12"));
    let mut s = Setup::new(
        Some(tunnel(Forward::Gue, b4, Some(v4(DIRECTOR_V4)), 6080)),
        Some(tunnel(Forward::Gue, b6, Some(v6(DIRECTOR_V6)), 6081)),
    );
    for sport in [40000, 40002, 51515] {
        let input = frame4(sport, 0, 64, true, 20);
        let out = s.run(&input);
        let hash = flow_hash(v4(CLIENT), v4(VIP), sport, 80);
        assert_encapsulated(&out, &input, v4(DIRECTOR_V4), b4, Some(6080), hash);
        assert_eq!(out.data[14 + 9], 17, "UDP");
        let input = frame6(sport, 0x10, 64, 20);
        let out = s.run(&input);
        let hash = flow_hash(IpAddr::V6(client6()), IpAddr::V6(vip6()), sport, 80);
        assert_encapsulated(&out, &input, v6(DIRECTOR_V6), b6, Some(6081), hash);
    }
    s.h.assert_reasons(&[(Reason::Forwarded, 6)]);
}

#[test]
fn mixed_families_ipv4_in_ipv6_and_ipv6_in_ipv4() {
    let (b4, b6) = (v6("fd20::13"), v4([10, 20, 0, 13]));
    let mut s = Setup::new(
        Some(tunnel(Forward::Ipip, b4, Some(v6(DIRECTOR_V6)), 0)),
        Some(tunnel(Forward::Ipip, b6, Some(v4(DIRECTOR_V4)), 0)),
    );
    let input = frame4(40000, 0x2a, 64, true, 10);
    let out = s.run(&input);
    let hash = flow_hash(v4(CLIENT), v4(VIP), 40000, 80);
    assert_encapsulated(&out, &input, v6(DIRECTOR_V6), b4, None, hash);
    assert_eq!(out.data[14 + 6], 4, "IPv6 outer, next header 4");
    let input = frame6(40000, 0x2a, 64, 10);
    let out = s.run(&input);
    assert_encapsulated(&out, &input, v4(DIRECTOR_V4), b6, None, 0);
    assert_eq!(out.data[14 + 9], 41, "IPv4 outer, protocol 41");
    s.h.assert_reasons(&[(Reason::Forwarded, 2)]);
}

#[test]
fn an_unspecified_source_is_the_address_the_kernel_picks() {
    let (b4, b6) = (v4([10, 20, 0, 14]), v6("fd20::14"));
    let mut s = Setup::new(
        Some(tunnel(Forward::Ipip, b4, None, 0)),
        Some(tunnel(Forward::Ipip, b6, None, 0)),
    );
    let input = frame4(40000, 0, 64, true, 0);
    assert_encapsulated(&s.run(&input), &input, v4(DIRECTOR_V4), b4, None, 0);
    let input = frame6(40000, 0, 64, 0);
    let hash = flow_hash(IpAddr::V6(client6()), IpAddr::V6(vip6()), 40000, 80);
    assert_encapsulated(&s.run(&input), &input, v6(DIRECTOR_V6), b6, None, hash);
}

#[test]
fn no_route_or_no_neighbour_passes_unchanged_until_the_route_changes() {
    let src = v4(DIRECTOR_V4);
    // No route at all.
    let mut s = Setup::new(
        Some(tunnel(Forward::Ipip, v4([10, 40, 0, 11]), Some(src), 0)),
        Some(tunnel(
            Forward::Gue,
            v6("fd30::11"),
            Some(v6(DIRECTOR_V6)),
            6080,
        )),
    );
    let input = frame4(40000, 0, 64, true, 0);
    s.assert_passed(&input, Reason::PassNoRoute);
    // A next hop without a neighbour entry.
    s.h.make_tunnel(
        "web",
        v4([10, 40, 0, 11]),
        tunnel(Forward::Ipip, v4([10, 30, 0, 11]), Some(src), 0),
    );
    s.assert_passed(&input, Reason::PassNoRoute);
    let input6 = frame6(40000, 0, 64, 0);
    s.assert_passed(&input6, Reason::PassNoRoute);
    // Nothing reached a backend.
    s.h.assert_service("web", 0, 0, 0);
    s.h.assert_service("web6", 0, 0, 0);
    // The next hop moves to one the kernel knows: the next packet goes, no reload.
    s.ns.route("replace 10.30.0.0/24 via 10.99.0.254")
        .expect("moving the route");
    let out = s.run(&input);
    assert_encapsulated(&out, &input, src, v4([10, 30, 0, 11]), None, 0);
}

/// The 16-bit one's complement checksum (RFC 1071), for the references.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn an_oversize_ipv4_packet_is_answered_with_fragmentation_needed_from_the_vip() {
    let backend = v4([10, 21, 0, 11]);
    let src = v4(DIRECTOR_V4);
    let mut s = Setup::new(Some(tunnel(Forward::Ipip, backend, Some(src), 0)), None);
    let mtu = ROUTE_MTU - 20;
    // Exactly fits: the outer packet is the route's MTU.
    let fits = frame4(40000, 0, 64, true, mtu as usize - 40);
    assert_eq!(fits.len() - 14, mtu as usize);
    assert_encapsulated(&s.run(&fits), &fits, src, backend, None, 0);
    // One byte more: the client hears of the MTU it must use.
    s.h.reset_reasons();
    let input = frame4(40002, 0, 64, true, mtu as usize - 40 + 1);
    let out = s.run(&input);
    assert_eq!(out.action, XDP_TX, "sent back");
    let quote = &input[14..14 + 548];
    let icmp = etherparse::Icmpv4Header::with_checksum(
        etherparse::Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
        ),
        quote,
    );
    let mut ip = Ipv4Header::new(8 + 548, 64, IpNumber::ICMP, VIP, CLIENT).unwrap();
    ip.dscp = IpDscp::try_new(0xc0 >> 2).unwrap();
    ip.identification = 0;
    ip.dont_fragment = false;
    ip.header_checksum = ip.calc_header_checksum();
    let mut want = Vec::new();
    want.extend_from_slice(&CLIENT_MAC);
    want.extend_from_slice(&DIRECTOR_MAC);
    want.extend_from_slice(&[0x08, 0x00]);
    want.extend_from_slice(&ip.to_bytes());
    want.extend_from_slice(&icmp.to_bytes());
    want.extend_from_slice(quote);
    assert_eq!(out.data.len(), 14 + 576, "a 576-byte ICMP message");
    for (i, (a, b)) in out.data.iter().zip(&want).enumerate() {
        assert_eq!(a, b, "byte {i} of the answer");
    }
    assert_eq!(checksum(&out.data[14..34]), 0, "IPv4 header checksum");
    assert_eq!(checksum(&out.data[34..]), 0, "ICMP checksum");
    assert_eq!(u16::from_be_bytes([out.data[40], out.data[41]]), 1380);
    s.h.assert_reasons(&[(Reason::AnsweredTooBig, 1)]);
    // Only the packet that fitted reached the backend.
    s.h.assert_backend("web", backend, 1, mtu as u64, 1);
}

#[test]
fn an_oversize_ipv6_packet_is_answered_with_packet_too_big_from_the_vip() {
    let backend = v6("fd21::11");
    let mut s = Setup::new(
        None,
        Some(tunnel(Forward::Gue, backend, Some(v6(DIRECTOR_V6)), 6080)),
    );
    let mtu = (ROUTE_MTU - 48) as u32;
    let input = frame6(40000, 0, 64, mtu as usize - 60 + 1);
    let out = s.run(&input);
    assert_eq!(out.action, XDP_TX, "sent back");
    let quote = &input[14..14 + 1232];
    let icmp = etherparse::Icmpv6Header::with_checksum(
        etherparse::Icmpv6Type::PacketTooBig { mtu },
        vip6().octets(),
        client6().octets(),
        quote,
    )
    .unwrap();
    let ip = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: 8 + 1232,
        next_header: IpNumber::IPV6_ICMP,
        hop_limit: 64,
        source: vip6().octets(),
        destination: client6().octets(),
    };
    let mut want = Vec::new();
    want.extend_from_slice(&CLIENT_MAC);
    want.extend_from_slice(&DIRECTOR_MAC);
    want.extend_from_slice(&[0x86, 0xdd]);
    want.extend_from_slice(&ip.to_bytes());
    want.extend_from_slice(&icmp.to_bytes());
    want.extend_from_slice(quote);
    assert_eq!(out.data.len(), 14 + 1280, "a 1280-byte ICMPv6 message");
    for (i, (a, b)) in out.data.iter().zip(&want).enumerate() {
        assert_eq!(a, b, "byte {i} of the answer");
    }
    assert_eq!(
        u32::from_be_bytes(out.data[58..62].try_into().unwrap()),
        1352
    );
    s.h.assert_reasons(&[(Reason::AnsweredTooBig, 1)]);
    s.h.assert_service("web6", 0, 0, 0);
}
