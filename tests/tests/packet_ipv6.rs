//! Packet-level tests of the IPv6 data path: the real XDP program, IPv6 services applied from
//! a service file as `lb-ctl apply` applies it (config, plan, maps), crafted frames run with
//! BPF_PROG_TEST_RUN. Each test asserts the action, every byte that comes out and the
//! counters, as packet_datapath.rs, packet_schedulers.rs and packet_no_flow.rs do for IPv4.
//!
//! Needs root (or CAP_BPF + CAP_NET_ADMIN); without it every test fails and says so.

use std::net::Ipv6Addr;

use etherparse::{PacketBuilder, VlanId};
use lb_common::Reason;
use lb_tests::packet::{
    BACKEND_MACS, CLIENT_MAC, DEST_OPTS, DIRECTOR_MAC, Extension, HOP_BY_HOP, Harness, ROUTING,
    XDP_DROP, XDP_PASS, XDP_TX, backend_of, extension, forwarded, fragment_header, tcp6_frame,
    udp6_frame, with_extensions,
};

const VIP: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 0x133);
const CLIENT: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 0x100);

fn backend(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, n)
}

/// Backends fd00:58::135 onwards with these weights: (last group, weight).
fn backends(weights: &[u32]) -> Vec<(u16, u32)> {
    (0..weights.len())
        .map(|i| (0x135 + i as u16, weights[i]))
        .collect()
}

/// One service of a service file: `name` on the VIP at `port`/`protocol`, with `scheduler`
/// (mh and sh over a 4093-slot table), the `extra` lines, and the backends
/// `fd00:58::<last>` with their weights.
fn service(
    name: &str,
    port: u16,
    protocol: &str,
    scheduler: &str,
    extra: &str,
    backends: &[(u16, u32)],
) -> String {
    let mut s = format!(
        "  - name: {name}\n    vip: \"{VIP}\"\n    port: {port}\n    protocol: {protocol}\n    \
         scheduler: {scheduler}\n{extra}"
    );
    if matches!(scheduler, "mh" | "sh") {
        s += "    table_size: 4093\n";
    }
    s += "    backends:\n";
    for (last, weight) in backends {
        s += &format!(
            "      - address: \"{}\"\n        weight: {weight}\n",
            backend(*last)
        );
    }
    s
}

/// `web6`: TCP port 80 over `backends` with `scheduler`.
fn web6(scheduler: &str, backends: &[(u16, u32)]) -> String {
    service("web6", 80, "tcp", scheduler, "", backends)
}

/// A harness with these services applied from one file.
fn harness(services: &[String]) -> Harness {
    Harness::with_config(&format!("services:\n{}", services.concat()))
}

/// A harness with `web6` (TCP port 80, rr over ::135 and ::136) and `dns6` (UDP port 53, rr
/// over ::136).
fn two_services() -> Harness {
    harness(&[
        web6("rr", &backends(&[1, 1])),
        service("dns6", 53, "udp", "rr", "", &[(0x136, 1)]),
    ])
}

fn tcp(client: Ipv6Addr, sport: u16, dport: u16, flags: &str) -> Vec<u8> {
    tcp6_frame(
        (CLIENT_MAC, DIRECTOR_MAC),
        (client, sport),
        (VIP, dport),
        flags,
    )
}

fn syn(sport: u16) -> Vec<u8> {
    tcp(CLIENT, sport, 80, "S")
}

/// IP bytes of an IPv6 packet at `l3`: 40 + the payload length.
fn ip_len(frame: &[u8], l3: usize) -> u64 {
    40 + u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) as u64
}

/// Runs `frame` and asserts it went to the kernel untouched, counted under `reason` alone,
/// with no service counting it.
fn assert_passed(h: &mut Harness, frame: &[u8], reason: Reason) {
    h.assert_passed(frame, reason);
    h.assert_service("web6", 0, 0, 0);
}

#[test]
fn a_syn_to_an_ipv6_vip_is_forwarded_with_only_the_macs_rewritten() {
    let mut h = two_services();
    let first = syn(40000);
    let out = h.run(&first);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(out.data, forwarded(&first, BACKEND_MACS[0]));
    let len = ip_len(&first, 14);
    assert_eq!(len, 60, "40-byte header + 20-byte TCP header");
    h.assert_service("web6", 1, len, 1);
    h.assert_backend("web6", backend(0x135), 1, len, 1);
    h.assert_backend("web6", backend(0x136), 0, 0, 0);
    h.assert_reasons(&[(Reason::Forwarded, 1)]);
    // The next flow takes the next backend; every later packet of the first flow stays.
    assert_eq!(backend_of(&syn(40002), &h.run(&syn(40002))), 1);
    let mut bytes = 2 * len;
    for i in 0..5 {
        let mut ack = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
            .ipv6(CLIENT.octets(), VIP.octets(), 64)
            .tcp(40000, 80, 1001, 64240)
            .ack(1)
            .write(&mut ack, format!("GET /{i}").as_bytes())
            .expect("build ACK");
        assert_eq!(backend_of(&ack, &h.run(&ack)), 0);
        bytes += ip_len(&ack, 14);
    }
    h.assert_service("web6", 7, bytes, 2);
    h.assert_reasons(&[(Reason::Forwarded, 7)]);
}

#[test]
fn udp_over_ipv6_is_forwarded_and_counted() {
    let mut h = two_services();
    let dgram = udp6_frame(
        (CLIENT_MAC, DIRECTOR_MAC),
        (CLIENT, 5353),
        (VIP, 53),
        b"query",
    );
    assert_eq!(backend_of(&dgram, &h.run(&dgram)), 1);
    let len = ip_len(&dgram, 14);
    assert_eq!(len, 40 + 8 + 5);
    h.assert_service("dns6", 1, len, 1);
    h.assert_backend("dns6", backend(0x136), 1, len, 1);
    h.assert_service("web6", 0, 0, 0);
}

#[test]
fn ipv6_traffic_that_is_not_for_a_service_passes_untouched() {
    let mut h = two_services();
    // The VIP on another port, UDP to the TCP service's port, another address.
    assert_passed(&mut h, &tcp(CLIENT, 40000, 443, "S"), Reason::PassNotVip);
    let udp80 = udp6_frame((CLIENT_MAC, DIRECTOR_MAC), (CLIENT, 1), (VIP, 80), b"x");
    assert_passed(&mut h, &udp80, Reason::PassNotVip);
    let other = tcp6_frame(
        (CLIENT_MAC, DIRECTOR_MAC),
        (CLIENT, 40000),
        (backend(0x134), 22),
        "S",
    );
    assert_passed(&mut h, &other, Reason::PassNotVip);
    // ICMPv6 (an echo request to the VIP, a neighbour solicitation): the kernel's.
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv6(CLIENT.octets(), VIP.octets(), 64)
        .icmpv6_echo_request(1, 1)
        .write(&mut ping, b"ping")
        .expect("build ICMPv6");
    assert_passed(&mut h, &ping, Reason::PassNotTcpUdp);
    let mut ns = ping.clone();
    ns[54] = 135;
    assert_passed(&mut h, &ns, Reason::PassNotTcpUdp);
    // Another upper layer (SCTP), and "no next header".
    for next in [132u8, 59] {
        let mut f = syn(40000);
        f[20] = next;
        assert_passed(&mut h, &f, Reason::PassNotTcpUdp);
    }
    // To the VIP, but not to this interface's MAC.
    let mut f = syn(40000);
    f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    assert_passed(&mut h, &f, Reason::PassOtherMac);
}

/// A SYN with an extension-header chain: hop-by-hop, routing, destination options.
fn syn_with_chain(sport: u16) -> Vec<u8> {
    with_extensions(
        &syn(sport),
        &[
            extension(HOP_BY_HOP, 0),
            extension(ROUTING, 2),
            extension(DEST_OPTS, 1),
        ],
    )
}

#[test]
fn truncated_ipv6_frames_pass_untouched_at_every_length() {
    let mut h = two_services();
    let vid = VlanId::try_new(58).expect("vlan");
    let mut plain = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .single_vlan(vid)
        .ipv6(CLIENT.octets(), VIP.octets(), 64)
        .tcp(40000, 80, 1, 1000)
        .syn()
        .write(&mut plain, &[])
        .expect("build");
    // The same with a chain of extension headers (tag first, then the chain).
    let chain = syn_with_chain(40001);
    let mut tagged_chain = chain[..12].to_vec();
    tagged_chain.extend_from_slice(&plain[12..16]);
    tagged_chain.extend_from_slice(&chain[12..]);
    let mut bytes = 0;
    for (done, full) in [plain, tagged_chain].into_iter().enumerate() {
        // The kernel itself refuses frames shorter than an Ethernet header.
        for cut in 14..full.len() {
            let frame = &full[..cut];
            let out = h.run(frame);
            assert_eq!(out.action, XDP_PASS, "cut at {cut} of {}", full.len());
            assert_eq!(out.data, frame, "cut at {cut}");
            h.assert_reasons(&[(Reason::PassMalformed, 1)]);
            h.reset_reasons();
        }
        // Only the whole frames before this one were counted.
        h.assert_service("web6", done as u64, bytes, done as u64);
        let out = h.run(&full);
        assert_eq!(out.action, XDP_TX, "the whole frame");
        assert_eq!(&out.data[12..], &full[12..]);
        bytes += ip_len(&full, 18);
        h.reset_reasons();
    }
}

#[test]
fn malformed_ipv6_headers_pass_untouched() {
    let mut h = two_services();
    let good = syn_with_chain(40000);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    let payload = |v: &mut Vec<u8>, n: u16| v[18..20].copy_from_slice(&n.to_be_bytes());
    let chain_len = 8 + 24 + 16;
    // Not version 6 under the IPv6 EtherType.
    for first in [0x40u8, 0x00, 0x70, 0xf0] {
        assert_passed(&mut h, &with(&|v| v[14] = first), Reason::PassMalformed);
    }
    // Payload length beyond the frame; ending inside the chain; leaving no room for TCP.
    for n in [
        (good.len() - 54 + 1) as u16,
        0xffff,
        0,
        8,
        chain_len - 1,
        chain_len,
        chain_len + 19,
    ] {
        assert_passed(&mut h, &with(&|v| payload(v, n)), Reason::PassMalformed);
    }
    // Hop-by-hop options anywhere but first.
    let late_hop = with_extensions(
        &syn(40000),
        &[extension(DEST_OPTS, 0), extension(HOP_BY_HOP, 0)],
    );
    assert_passed(&mut h, &late_hop, Reason::PassMalformed);
    // An extension header's length pointing past the frame.
    assert_passed(&mut h, &with(&|v| v[63] = 200), Reason::PassMalformed);
    // TCP data offset below 5.
    let tcp_at = 54 + chain_len as usize;
    assert_passed(
        &mut h,
        &with(&|v| v[tcp_at + 12] = 0x40),
        Reason::PassMalformed,
    );
    // Trailing Ethernet padding after the IPv6 packet is fine.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 6]);
    let out = h.run(&padded);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(&out.data[12..], &padded[12..]);
}

#[test]
fn each_extension_header_is_walked_and_the_frame_forwarded_unchanged() {
    let mut h = two_services();
    let cases: Vec<(&str, Vec<Extension>)> = vec![
        ("hop-by-hop", vec![extension(HOP_BY_HOP, 0)]),
        ("hop-by-hop, 24 bytes", vec![extension(HOP_BY_HOP, 2)]),
        ("routing", vec![extension(ROUTING, 2)]),
        ("destination options", vec![extension(DEST_OPTS, 0)]),
        (
            "destination options, 2048 bytes",
            vec![extension(DEST_OPTS, 255)],
        ),
        // Offset 0 without more fragments: a whole datagram (RFC 6946).
        ("atomic fragment", vec![fragment_header(0, false, 7)]),
        (
            "four: hop-by-hop, destination options, routing, fragment",
            vec![
                extension(HOP_BY_HOP, 0),
                extension(DEST_OPTS, 1),
                extension(ROUTING, 2),
                fragment_header(0, false, 8),
            ],
        ),
    ];
    let mut total = 0;
    for (i, (name, chain)) in cases.iter().enumerate() {
        let frame = with_extensions(&syn(41000 + i as u16), chain);
        let out = h.run(&frame);
        assert_eq!(out.action, XDP_TX, "{name}");
        assert_eq!(out.data, forwarded(&frame, BACKEND_MACS[i % 2]), "{name}");
        total += ip_len(&frame, 14);
    }
    let n = cases.len() as u64;
    h.assert_service("web6", n, total, n);
    h.assert_reasons(&[(Reason::Forwarded, n)]);
    assert!(
        h.frag_entries().is_empty(),
        "an atomic fragment is no fragment"
    );
}

#[test]
fn a_chain_too_long_to_walk_passes_untouched() {
    let mut h = two_services();
    // Five extension headers: one more than the walk reads.
    let five = with_extensions(
        &syn(40000),
        &[
            extension(HOP_BY_HOP, 0),
            extension(DEST_OPTS, 0),
            extension(ROUTING, 0),
            extension(DEST_OPTS, 0),
            extension(DEST_OPTS, 0),
        ],
    );
    assert_passed(&mut h, &five, Reason::PassHeaderChain);
    // Four fragment headers then a fifth header: the same.
    let frags: Vec<Extension> = (0..5).map(|i| fragment_header(0, false, i)).collect();
    assert_passed(
        &mut h,
        &with_extensions(&syn(40001), &frags),
        Reason::PassHeaderChain,
    );
}

#[test]
fn vlan_tagged_ipv6_is_forwarded_with_its_tags() {
    let mut h = two_services();
    let vid = |v| VlanId::try_new(v).expect("vlan id");
    let mut single = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .single_vlan(vid(58))
        .ipv6(CLIENT.octets(), VIP.octets(), 64)
        .tcp(40000, 80, 1, 1000)
        .syn()
        .write(&mut single, &[])
        .expect("build 802.1Q");
    assert_eq!(&single[12..14], &[0x81, 0x00]);
    assert_eq!(&single[16..18], &[0x86, 0xdd]);
    let out = h.run(&single);
    assert_eq!(out.data, forwarded(&single, BACKEND_MACS[0]));
    assert_eq!(out.action, XDP_TX);
    let mut double = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .double_vlan(vid(100), vid(58))
        .ipv6(CLIENT.octets(), VIP.octets(), 64)
        .tcp(40001, 80, 1, 1000)
        .syn()
        .write(&mut double, &[])
        .expect("build 802.1ad");
    assert_eq!(&double[12..14], &[0x88, 0xa8], "outer tag is 802.1ad");
    let out = h.run(&double);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(out.data, forwarded(&double, BACKEND_MACS[1]));
    h.assert_service("web6", 2, ip_len(&single, 18) + ip_len(&double, 22), 2);
    h.assert_reasons(&[(Reason::Forwarded, 2)]);
}

#[test]
fn every_action_over_ipv6_drop_stateless_and_no_flow() {
    let two = backends(&[1, 1]);
    let mut h = harness(&[
        web6("rr", &backends(&[0])),
        service("mh6", 81, "tcp", "mh", "", &two),
        service("rr6", 82, "tcp", "rr", "", &two),
    ]);
    // No usable backend: dropped and counted.
    assert_eq!(h.run(&syn(40000)).action, XDP_DROP);
    h.assert_reasons(&[(Reason::DropNoBackend, 1)]);
    h.reset_reasons();
    // An ACK of no known connection: mh places it statelessly, rr drops it.
    let ack = tcp(CLIENT, 40000, 81, "A");
    let first = backend_of(&ack, &h.run(&ack));
    assert_eq!(backend_of(&ack, &h.run(&ack)), first);
    let ack = tcp(CLIENT, 40000, 82, "A");
    assert_eq!(h.run(&ack).action, XDP_DROP);
    h.assert_reasons(&[(Reason::ForwardedStateless, 2), (Reason::DropNoFlow, 1)]);
    assert_eq!(h.flow_count(), 0, "no packet here opens a flow");
}

#[test]
fn ipv4_and_ipv6_services_share_the_maps() {
    let mut h = harness(&[
        "  - name: web\n    vip: 192.168.58.133\n    port: 80\n    scheduler: rr\n    backends:\n      - address: 192.168.58.137\n".to_string(),
        web6("rr", &backends(&[1])),
    ]);
    let v4 = lb_tests::packet::tcp_frame(
        (CLIENT_MAC, DIRECTOR_MAC),
        ([192, 168, 58, 100], 40000),
        ([192, 168, 58, 133], 80),
        "S",
    );
    assert_eq!(h.run(&v4).data[0..6], BACKEND_MACS[2]);
    assert_eq!(backend_of(&syn(40000), &h.run(&syn(40000))), 0);
    // The same ports in both families are two flows.
    assert_eq!(h.flow_count(), 2);
    h.assert_service("web", 1, 40, 1);
    h.assert_service("web6", 1, 60, 1);
}

/// Client `i` of many, spread over /64s (the high bits) and hosts.
fn client(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x99, (i >> 8) as u16, 0, 0, 0, 0, i as u16 & 0xff)
}

/// Runs `n` new flows and returns the backend (index into BACKEND_MACS) of each.
fn picks(h: &mut Harness, n: u32, port: u16) -> Vec<usize> {
    (0..n)
        .map(|i| {
            let f = tcp(client(i), 30000 + (i % 20000) as u16, port, "S");
            backend_of(&f, &h.run(&f))
        })
        .collect()
}

#[test]
fn rr_and_wrr_follow_their_sequences_over_ipv6() {
    let mut h = harness(&[
        web6("rr", &backends(&[1, 1, 1])),
        service("wrr6", 81, "tcp", "wrr", "", &backends(&[5, 3, 1])),
    ]);
    for (i, p) in picks(&mut h, 300, 80).iter().enumerate() {
        assert_eq!(*p, i % 3, "rr flow {i}");
    }
    let cycle = [0, 0, 0, 1, 0, 1, 0, 1, 2];
    for (i, p) in picks(&mut h, 900, 81).iter().enumerate() {
        assert_eq!(*p, cycle[i % 9], "wrr flow {i}");
    }
    h.assert_service("web6", 300, 300 * 60, 300);
    h.assert_service("wrr6", 900, 900 * 60, 900);
    h.assert_backend("wrr6", backend(0x135), 500, 500 * 60, 500);
}

#[test]
fn mh_over_ipv6_matches_weights_and_every_director() {
    let w = backends(&[1, 2, 3, 4]);
    let mut a = harness(&[web6("mh", &w)]);
    let counts = picks(&mut a, 10_000, 80)
        .into_iter()
        .fold([0u32; 4], |mut c, p| {
            c[p] += 1;
            c
        });
    for (i, n) in counts.iter().enumerate() {
        let share = *n as f64 / 10_000.0;
        let want = (i + 1) as f64 / 10.0;
        assert!(
            (share - want).abs() <= 0.02,
            "backend {i}: {share:.4} of flows, weight share {want:.4} ({counts:?})"
        );
    }
    // A second director, its backends listed in reverse: the same backend for every flow.
    let reversed: Vec<(u16, u32)> = w.iter().rev().copied().collect();
    let mut b = harness(&[web6("mh", &reversed)]);
    a.clear_flows();
    for i in 0..2000u32 {
        let f = tcp(client(i), 40000 + i as u16, 80, "S");
        assert_eq!(
            backend_of(&f, &a.run(&f)),
            backend_of(&f, &b.run(&f)),
            "flow {i}"
        );
    }
}

#[test]
fn sh_over_ipv6_sends_a_source_to_one_backend_on_every_port() {
    let mut h = harness(&[web6("sh", &backends(&[1, 1, 1]))]);
    let mut per_backend = [0; 4];
    for c in 0..300u32 {
        let f = tcp(client(c), 20000, 80, "S");
        let first = backend_of(&f, &h.run(&f));
        for port in 1..5u16 {
            let f = tcp(client(c), 20000 + port * 7, 80, "S");
            assert_eq!(backend_of(&f, &h.run(&f)), first, "client {c} port {port}");
        }
        per_backend[first] += 1;
    }
    for (i, n) in per_backend.iter().take(3).enumerate() {
        assert!((60..=140).contains(n), "backend {i}: {n} of 300 sources");
    }
}

#[test]
fn lc_and_wlc_over_ipv6_follow_active_connections() {
    let mut h = harness(&[web6("lc", &backends(&[1, 1, 1]))]);
    let picks: Vec<usize> = (0..6u16)
        .map(|p| {
            let f = tcp(client(1), 1000 + p, 80, "S");
            backend_of(&f, &h.run(&f))
        })
        .collect();
    assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    // Both connections of backend 1 end: it has the fewest, and takes the next two.
    for p in [1001u16, 1004] {
        let fin = tcp(client(1), p, 80, "FA");
        assert_eq!(backend_of(&fin, &h.run(&fin)), 1);
    }
    let next: Vec<usize> = (0..2u16)
        .map(|p| {
            let f = tcp(client(2), 2000 + p, 80, "S");
            backend_of(&f, &h.run(&f))
        })
        .collect();
    assert_eq!(next, vec![1, 1]);

    let mut h = harness(&[web6("wlc", &backends(&[2, 1]))]);
    let mut counts = [0; 2];
    for p in 0..30u16 {
        let f = tcp(client(3), 3000 + p, 80, "S");
        counts[backend_of(&f, &h.run(&f))] += 1;
    }
    assert_eq!(counts, [20, 10]);
}

#[test]
fn persistence_by_a_64_bit_prefix_keeps_a_network_on_one_backend() {
    let mut h = harness(&[service(
        "web6",
        80,
        "tcp",
        "rr",
        "    persistence: { timeout: 300s, netmask: 64 }\n",
        &backends(&[1, 1]),
    )]);
    let net_a = |host: u16| Ipv6Addr::new(0xfd00, 0x99, 0, 1, 0xaaaa, 0, 0, host);
    let net_b = |host: u16| Ipv6Addr::new(0xfd00, 0x99, 0, 2, 0, 0, 0, host);
    // Two clients of one /64, several connections each: one backend, though rr alternates.
    let mut seen = Vec::new();
    for (i, c) in [net_a(1), net_a(0xffff), net_a(1), net_a(7)]
        .iter()
        .enumerate()
    {
        let f = tcp(*c, 50000 + i as u16, 80, "S");
        seen.push(backend_of(&f, &h.run(&f)));
    }
    assert_eq!(seen, vec![0, 0, 0, 0]);
    // Another /64 is another persistence entry: rr's next pick, and it sticks too.
    for i in 0..3u16 {
        let f = tcp(net_b(i + 1), 51000 + i, 80, "S");
        assert_eq!(backend_of(&f, &h.run(&f)), 1, "second /64, client {i}");
    }
    let entries: Vec<_> = (h.maps().persist_entries().expect("reading PERSIST"))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(entries.len(), 2, "one entry a /64: {entries:?}");
    // The key is the client masked to its /64.
    let masked =
        lb_ctl::plan::convert::addr_of(Ipv6Addr::new(0xfd00, 0x99, 0, 1, 0, 0, 0, 0).into());
    assert!(entries.iter().any(|k| k.client == masked), "{entries:?}");
}
