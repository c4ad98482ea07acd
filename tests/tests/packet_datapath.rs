//! Packet-level tests: the real XDP program, its maps filled by the same `apply` code that
//! `lb-ctl` runs, and crafted frames run through it with BPF_PROG_TEST_RUN. Each test asserts
//! the action, every byte of the frame that comes out, and the counters.
//!
//! Needs root (or CAP_BPF + CAP_NET_ADMIN); without it every test fails and says so.

use std::net::Ipv4Addr;

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpHeaders, IpNumber, Ipv4Header,
    PacketBuilder, VlanId,
};
use lb_common::Reason;
use lb_tests::packet::{
    BACKEND_MACS, CLIENT_MAC, DIRECTOR_MAC, Harness, XDP_DROP, XDP_PASS, XDP_TX, forwarded,
};

const VIP: [u8; 4] = [192, 168, 58, 133];
const CLIENT: [u8; 4] = [192, 168, 58, 100];

const TWO_BACKENDS: &str = "
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    protocol: tcp
    scheduler: rr
    backends:
      - address: 192.168.58.135
      - address: 192.168.58.136
  - name: dns
    vip: 192.168.58.133
    port: 53
    protocol: udp
    scheduler: rr
    backends:
      - address: 192.168.58.136
";

fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(sport, dport, 1000, 64240)
        .syn();
    let mut v = Vec::new();
    b.write(&mut v, &[]).expect("build SYN");
    v
}

fn tcp_ack(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(sport, dport, 1001, 64240)
        .ack(1);
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("build ACK");
    v
}

fn udp(dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(CLIENT, dst, 64)
        .udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("build UDP");
    v
}

fn ip_len(frame: &[u8], l3: usize) -> u64 {
    u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]) as u64
}

#[test]
fn syn_to_vip_is_forwarded_with_only_the_macs_rewritten() {
    let mut h = Harness::with_config(TWO_BACKENDS);
    let syn = tcp_syn(40000, 80);
    let out = h.run(&syn);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(out.data, forwarded(&syn, BACKEND_MACS[0]));
    let len = ip_len(&syn, 14);
    h.assert_service("web", 1, len, 1);
    h.assert_backend("web", Ipv4Addr::new(192, 168, 58, 135), 1, len, 1);
    h.assert_backend("web", Ipv4Addr::new(192, 168, 58, 136), 0, 0, 0);
    h.assert_reasons(&[(Reason::Forwarded, 1)]);
}

#[test]
fn later_packets_of_a_flow_go_to_the_same_backend() {
    let mut h = Harness::with_config(TWO_BACKENDS);
    let first = h.run(&tcp_syn(40000, 80));
    assert_eq!(first.action, XDP_TX);
    let backend: [u8; 6] = first.data[0..6].try_into().expect("6 bytes");
    // Another flow takes the next backend (round robin) ...
    let other = h.run(&tcp_syn(40002, 80));
    assert_eq!(other.action, XDP_TX);
    assert_ne!(&other.data[0..6], &backend);
    // ... and every later packet of the first flow stays where it was.
    for i in 0..5 {
        let ack = tcp_ack(40000, 80, format!("GET /{i}").as_bytes());
        let out = h.run(&ack);
        assert_eq!(out.action, XDP_TX);
        assert_eq!(out.data, forwarded(&ack, backend));
    }
    let svc = h.service_counters("web");
    assert_eq!(svc.packets, 7);
    assert_eq!(svc.new_flows, 2, "only the two SYNs started flows");
    h.assert_reasons(&[(Reason::Forwarded, 7)]);
}

#[test]
fn udp_to_a_udp_service_is_forwarded() {
    let mut h = Harness::with_config(TWO_BACKENDS);
    let pkt = udp(VIP, 5353, 53, b"query");
    let out = h.run(&pkt);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(out.data, forwarded(&pkt, BACKEND_MACS[1]));
    let len = ip_len(&pkt, 14);
    h.assert_service("dns", 1, len, 1);
    h.assert_backend("dns", Ipv4Addr::new(192, 168, 58, 136), 1, len, 1);
    h.assert_service("web", 0, 0, 0);
}

/// Runs `frame` and asserts it went to the kernel untouched, counted under `reason` alone.
fn assert_passed(h: &mut Harness, frame: &[u8], reason: Reason) {
    h.assert_passed(frame, reason);
    h.assert_service("web", 0, 0, 0);
    h.assert_service("dns", 0, 0, 0);
}

#[test]
fn traffic_that_is_not_for_a_service_passes_untouched() {
    let mut h = Harness::with_config(TWO_BACKENDS);
    // The VIP on a port with no service, and TCP to the UDP service's port.
    assert_passed(&mut h, &tcp_syn(40000, 443), Reason::PassNotVip);
    assert_passed(&mut h, &tcp_syn(40000, 53), Reason::PassNotVip);
    assert_passed(&mut h, &udp(VIP, 5353, 80, b"x"), Reason::PassNotVip);
    // The director's own address (SSH to it) and any other destination.
    assert_passed(
        &mut h,
        &udp([192, 168, 58, 134], 1, 22, b"ssh"),
        Reason::PassNotVip,
    );
    assert_passed(&mut h, &udp([10, 9, 8, 7], 1, 80, b""), Reason::PassNotVip);
    // ICMP to the VIP: the director's kernel answers it.
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(CLIENT, VIP, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, b"ping")
        .expect("build ICMP");
    assert_passed(&mut h, &ping, Reason::PassNotTcpUdp);
}

#[test]
fn a_vip_frame_addressed_to_another_mac_passes() {
    let mut h = Harness::with_config(TWO_BACKENDS);
    let mut frame = tcp_syn(40000, 80);
    frame[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    assert_passed(&mut h, &frame, Reason::PassOtherMac);
    frame[0..6].copy_from_slice(&[0xff; 6]);
    assert_passed(&mut h, &frame, Reason::PassOtherMac);
}

#[test]
fn arp_and_ipv6_to_no_service_pass() {
    let mut h = Harness::with_config(TWO_BACKENDS);
    let mut arp = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, [0xff; 6])
        .arp(
            ArpPacket::new(
                ArpHardwareId::ETHERNET,
                EtherType::IPV4,
                ArpOperation::REQUEST,
                &CLIENT_MAC,
                &CLIENT,
                &[0; 6],
                &VIP,
            )
            .expect("ARP"),
        )
        .write(&mut arp)
        .expect("build ARP");
    assert_passed(&mut h, &arp, Reason::PassNotIp);
    let mut v6 = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv6([0xfd; 16], [0xfe; 16], 64)
        .tcp(40000, 80, 1, 1000)
        .syn()
        .write(&mut v6, &[])
        .expect("build IPv6");
    // IPv6 is parsed; no IPv6 service is configured here (packet_ipv6.rs has them).
    assert_passed(&mut h, &v6, Reason::PassNotVip);
}

#[test]
fn vlan_tagged_frames_are_forwarded_with_their_tags() {
    let mut h = Harness::with_config(TWO_BACKENDS);
    let vid = |v| VlanId::try_new(v).expect("vlan id");
    let mut single = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .single_vlan(vid(58))
        .ipv4(CLIENT, VIP, 64)
        .tcp(40000, 80, 1, 1000)
        .syn()
        .write(&mut single, &[])
        .expect("build 802.1Q");
    assert_eq!(&single[12..14], &[0x81, 0x00]);
    let out = h.run(&single);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(out.data, forwarded(&single, BACKEND_MACS[0]));

    let mut double = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .double_vlan(vid(100), vid(58))
        .ipv4(CLIENT, VIP, 64)
        .tcp(40001, 80, 1, 1000)
        .syn()
        .write(&mut double, &[])
        .expect("build 802.1ad");
    assert_eq!(&double[12..14], &[0x88, 0xa8], "outer tag is 802.1ad");
    let out = h.run(&double);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(out.data, forwarded(&double, BACKEND_MACS[1]));
    h.assert_service("web", 2, ip_len(&single, 18) + ip_len(&double, 22), 2);

    // A tagged frame to a port with no service still passes.
    let mut other = single.clone();
    other[18 + 20 + 2..18 + 20 + 4].copy_from_slice(&443u16.to_be_bytes());
    h.assert_passed(&other, Reason::PassNotVip);
}

/// A SYN to the VIP whose IPv4 header carries `options` (a multiple of 4 bytes).
fn syn_with_options(options: &[u8], sport: u16) -> Vec<u8> {
    let mut ip = Ipv4Header::new(20, 64, IpNumber::TCP, CLIENT, VIP).expect("IPv4 header");
    ip.options = options.try_into().expect("options");
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ip(IpHeaders::Ipv4(ip, Default::default()))
        .tcp(sport, 80, 1, 1000)
        .syn()
        .write(&mut v, &[])
        .expect("build SYN with options");
    v
}

#[test]
fn ipv4_with_options_is_forwarded_for_every_ihl() {
    let mut h = Harness::with_config(TWO_BACKENDS);
    let mut total = 0;
    for words in 1..=10u16 {
        // NOPs, then an End of Options list.
        let mut opts = vec![1u8; words as usize * 4];
        if let Some(last) = opts.last_mut() {
            *last = 0;
        }
        let syn = syn_with_options(&opts, 41000 + words);
        assert_eq!(syn[14] & 0x0f, 5 + words as u8, "IHL");
        let out = h.run(&syn);
        assert_eq!(out.action, XDP_TX, "IHL {}", 5 + words);
        assert_eq!(
            &out.data[12..],
            &syn[12..],
            "IHL {}: IP packet unchanged",
            5 + words
        );
        assert_eq!(&out.data[6..12], &DIRECTOR_MAC);
        total += ip_len(&syn, 14);
    }
    h.assert_service("web", 10, total, 10);
}

#[test]
fn truncated_frames_pass_untouched_at_every_length() {
    let mut h = Harness::with_config(TWO_BACKENDS);
    let mut full = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .single_vlan(VlanId::try_new(58).expect("vlan"))
        .ipv4(CLIENT, VIP, 64)
        .tcp(40000, 80, 1, 1000)
        .syn()
        .write(&mut full, &[])
        .expect("build");
    // The kernel itself refuses frames shorter than an Ethernet header.
    for cut in 14..full.len() {
        let frame = &full[..cut];
        let out = h.run(frame);
        assert_eq!(out.action, XDP_PASS, "cut at {cut}");
        assert_eq!(out.data, frame, "cut at {cut}");
        // Inside the tag, the IPv4 header or the TCP header: malformed either way.
        h.assert_reasons(&[(Reason::PassMalformed, 1)]);
        h.reset_reasons();
    }
    h.assert_service("web", 0, 0, 0);
    // The whole frame is forwarded.
    assert_eq!(h.run(&full).action, XDP_TX);
}

#[test]
fn malformed_ipv4_headers_pass_untouched() {
    let mut h = Harness::with_config(TWO_BACKENDS);
    let good = tcp_syn(40000, 80);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    // IHL below 5.
    for ihl in 0..5u8 {
        let frame = with(&|v| v[14] = 0x40 | ihl);
        assert_passed(&mut h, &frame, Reason::PassMalformed);
    }
    // Not version 4 under an IPv4 EtherType.
    assert_passed(&mut h, &with(&|v| v[14] = 0x65), Reason::PassMalformed);
    // Total length beyond the frame, and shorter than the headers.
    assert_passed(
        &mut h,
        &with(&|v| v[16..18].copy_from_slice(&41u16.to_be_bytes())),
        Reason::PassMalformed,
    );
    assert_passed(
        &mut h,
        &with(&|v| v[16..18].copy_from_slice(&1500u16.to_be_bytes())),
        Reason::PassMalformed,
    );
    assert_passed(
        &mut h,
        &with(&|v| v[16..18].copy_from_slice(&19u16.to_be_bytes())),
        Reason::PassMalformed,
    );
    // IHL that points past the end of the packet.
    assert_passed(&mut h, &with(&|v| v[14] = 0x4f), Reason::PassMalformed);
    // TCP data offset below 5.
    assert_passed(
        &mut h,
        &with(&|v| v[14 + 20 + 12] = 0x40),
        Reason::PassMalformed,
    );
    // A non-first fragment of no datagram seen before passes (packet_fragments.rs has the
    // rest); a first fragment (more-fragments set) holds its ports and is forwarded.
    assert_passed(
        &mut h,
        &with(&|v| v[20..22].copy_from_slice(&0x00b9u16.to_be_bytes())),
        Reason::PassFragment,
    );
    let first = with(&|v| v[20..22].copy_from_slice(&0x2000u16.to_be_bytes()));
    let out = h.run(&first);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(out.data, forwarded(&first, BACKEND_MACS[0]));
    // Don't-fragment alone is no fragment.
    let df = with(&|v| v[20..22].copy_from_slice(&0x4000u16.to_be_bytes()));
    assert_eq!(h.run(&df).action, XDP_TX);
    // Trailing Ethernet padding after the IP packet is fine.
    let mut padded = tcp_syn(40001, 80);
    padded.extend_from_slice(&[0; 6]);
    let out = h.run(&padded);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(&out.data[12..], &padded[12..]);
}

#[test]
fn a_service_without_usable_backends_drops_and_counts() {
    let mut h = Harness::with_config(
        "
services:
  - name: drained
    vip: 192.168.58.133
    port: 80
    backends:
      - address: 192.168.58.135
        weight: 0
  - name: empty
    vip: 192.168.58.133
    port: 81
    backends: []
",
    );
    let out = h.run(&tcp_syn(40000, 80));
    assert_eq!(out.action, XDP_DROP);
    let out = h.run(&tcp_syn(40000, 81));
    assert_eq!(out.action, XDP_DROP);
    h.assert_reasons(&[(Reason::DropNoBackend, 2)]);
    h.assert_service("drained", 0, 0, 0);
}

#[test]
fn an_unresolved_backend_gets_no_traffic() {
    let config = "
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    backends:
      - address: 192.168.58.135
      - address: 192.168.58.199
";
    let mut h = Harness::with_config(config);
    for port in 0..10 {
        let out = h.run(&tcp_syn(42000 + port, 80));
        assert_eq!(out.action, XDP_TX);
        assert_eq!(&out.data[0..6], &BACKEND_MACS[0]);
    }
    assert_eq!(h.last_plan_warnings().len(), 1);
}

#[test]
fn an_all_ports_service_matches_any_port_and_an_exact_port_wins() {
    let mut h = Harness::with_config(
        "
services:
  - name: any
    vip: 192.168.58.133
    port: 0
    scheduler: rr
    backends:
      - address: 192.168.58.135
  - name: web
    vip: 192.168.58.133
    port: 80
    backends:
      - address: 192.168.58.136
        port: 80
",
    );
    for port in [1u16, 22, 443, 8080, 65535] {
        let out = h.run(&tcp_syn(40000, port));
        assert_eq!(out.action, XDP_TX, "port {port}");
        assert_eq!(&out.data[0..6], &BACKEND_MACS[0], "port {port}");
    }
    let out = h.run(&tcp_syn(40000, 80));
    assert_eq!(&out.data[0..6], &BACKEND_MACS[1]);
    h.assert_service("any", 5, 5 * 40, 5);
    h.assert_service("web", 1, 40, 1);
    // UDP has no all-ports service here.
    h.assert_passed(&udp(VIP, 1, 80, b""), Reason::PassNotVip);
}

/// Sends `flows` SYNs of distinct flows and returns the index (into BACKEND_MACS) each went to.
fn schedule_flows(h: &mut Harness, flows: u16) -> Vec<usize> {
    (0..flows)
        .map(|i| {
            let out = h.run(&tcp_syn(20000 + i, 80));
            assert_eq!(out.action, XDP_TX);
            BACKEND_MACS
                .iter()
                .position(|m| m[..] == out.data[0..6])
                .expect("a known backend MAC")
        })
        .collect()
}

fn config_with_weights(scheduler: &str, weights: &[u32]) -> String {
    let mut s = format!(
        "services:\n  - name: web\n    vip: 192.168.58.133\n    port: 80\n    scheduler: {scheduler}\n    backends:\n"
    );
    for (i, w) in weights.iter().enumerate() {
        s += &format!(
            "      - address: 192.168.58.{}\n        weight: {w}\n",
            135 + i
        );
    }
    s
}

#[test]
fn round_robin_over_two_and_three_backends() {
    for n in [2usize, 3] {
        let mut h = Harness::with_config(&config_with_weights("rr", &vec![1; n]));
        let picks = schedule_flows(&mut h, 300);
        for (i, p) in picks.iter().enumerate() {
            assert_eq!(*p, i % n, "{n} backends: flow {i}");
        }
        for b in 0..n {
            let c = h.backend_counters("web", Ipv4Addr::new(192, 168, 58, 135 + b as u8));
            assert_eq!(c.new_flows, 300 / n as u64);
        }
        h.assert_service("web", 300, 300 * 40, 300);
    }
}

#[test]
fn weighted_round_robin_three_to_one_interleaves() {
    let mut h = Harness::with_config(&config_with_weights("wrr", &[3, 1]));
    let picks = schedule_flows(&mut h, 400);
    for (i, p) in picks.iter().enumerate() {
        assert_eq!(*p, if i % 4 == 3 { 1 } else { 0 }, "flow {i}");
    }
    assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 300);
    // rr ignores weights other than 0.
    let mut h = Harness::with_config(&config_with_weights("rr", &[3, 1]));
    let picks = schedule_flows(&mut h, 100);
    assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 50);
}

#[test]
fn reweighting_keeps_existing_flows_and_changes_new_ones() {
    let mut h = Harness::with_config(&config_with_weights("wrr", &[1, 1]));
    let picks = schedule_flows(&mut h, 10);
    assert_eq!(picks, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
    // Drain the first backend: new flows avoid it, existing flows stay.
    let plan = h.apply(&config_with_weights("wrr", &[0, 1]));
    assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
    let ack = tcp_ack(20000, 80, b"still here");
    assert_eq!(&h.run(&ack).data[0..6], &BACKEND_MACS[0]);
    for i in 0..10 {
        let out = h.run(&tcp_syn(30000 + i, 80));
        assert_eq!(&out.data[0..6], &BACKEND_MACS[1]);
    }
    // Applying the same file again changes nothing.
    let plan = h.apply(&config_with_weights("wrr", &[0, 1]));
    assert!(plan.is_empty(), "{:?}", plan.changes);
}

#[test]
fn removing_a_backend_moves_its_flows() {
    let mut h = Harness::with_config(&config_with_weights("rr", &[1, 1]));
    let picks = schedule_flows(&mut h, 2);
    assert_eq!(picks, vec![0, 1]);
    h.apply(
        "services:\n  - name: web\n    vip: 192.168.58.133\n    port: 80\n    scheduler: rr\n    backends:\n      - address: 192.168.58.136\n",
    );
    // The flow on the removed backend is rescheduled to the remaining one.
    let out = h.run(&tcp_ack(20000, 80, b"x"));
    assert_eq!(out.action, XDP_TX);
    assert_eq!(&out.data[0..6], &BACKEND_MACS[1]);
    // Removing the service passes its traffic to the kernel.
    h.apply("services: []\n");
    let frame = tcp_ack(20001, 80, b"y");
    h.assert_passed(&frame, Reason::PassNotVip);
}

#[test]
fn the_harness_reports_what_the_kernel_refuses() {
    let mut h = Harness::with_config(TWO_BACKENDS);
    assert!(
        h.try_run(&[0; 13]).is_err(),
        "shorter than an Ethernet header"
    );
    h.assert_reasons(&[]);
}

#[test]
fn batch_reads_match_entry_by_entry_reads() {
    let mut h = Harness::with_config(TWO_BACKENDS);
    let maps = h.maps();
    for i in 0..20_000u32 {
        maps.table
            .set(i, i.wrapping_mul(2_654_435_761), 0)
            .expect("write TABLE");
    }
    for (start, count) in [
        (0u32, 1u32),
        (0, 20_000),
        (1, 8192),
        (8191, 3),
        (12_345, 7000),
    ] {
        let batch = lb_ctl::maps::array_batch(&maps.table, start, count).expect("batch");
        let one_by_one: Vec<u32> = (start..start + count)
            .map(|i| maps.table.get(&i, 0).expect("read TABLE"))
            .collect();
        assert_eq!(batch, one_by_one, "start {start} count {count}");
    }
    // Past the end: only what exists.
    let len = maps.table.len();
    let tail = lb_ctl::maps::array_batch(&maps.table, len - 2, 10).expect("batch");
    assert_eq!(tail.len(), 2);
}

/// `BACKENDS` is read as one memory copy (it is created mmapable), and that copy sees exactly
/// what a batch lookup sees, including a backend the data path's own apply just changed.
#[test]
fn backends_are_read_by_memory_copy_and_agree_with_a_batch_read() {
    let mut h = Harness::with_config(TWO_BACKENDS);
    let maps = h.maps();
    let copied = lb_ctl::maps::mapped::array_copy(&maps.backends)
        .expect("mapping BACKENDS")
        .expect("BACKENDS is created BPF_F_MMAPABLE, so it can be mapped");
    let batch = lb_ctl::maps::array_batch(&maps.backends, 0, maps.backends.len())
        .expect("batch read of BACKENDS");
    assert_eq!(copied.len(), 65536);
    assert_eq!(copied, batch);
    let configured: Vec<u32> = (copied.iter().enumerate())
        .filter(|(_, b)| b.flags & lb_common::BACKEND_CONFIGURED != 0)
        .map(|(id, _)| id as u32)
        .collect();
    assert_eq!(configured.len(), 3, "two backends of web, one of dns");
    // A weight change is visible through the mapping at once.
    h.apply(&TWO_BACKENDS.replacen(
        "      - address: 192.168.58.136\n",
        "      - address: 192.168.58.136\n        weight: 7\n",
        1,
    ));
    let maps = h.maps();
    let after = lb_ctl::maps::mapped::array_copy(&maps.backends)
        .expect("mapping BACKENDS")
        .expect("mmapable");
    let weights: Vec<u32> = configured
        .iter()
        .map(|&id| after[id as usize].weight)
        .collect();
    assert!(weights.contains(&7), "{weights:?}");
}

/// Whether `vip`'s bit of the pre-filter `VIP_FILTER` is set.
fn prefilter_has(h: &mut Harness, vip: [u8; 4]) -> bool {
    let bit = lb_common::vip_filter_bit(&lb_common::v4_mapped(u32::from_ne_bytes(vip)));
    let word = h
        .maps()
        .vip_filter
        .get(&(bit / 64), 0)
        .expect("reading VIP_FILTER");
    word & (1 << (bit % 64)) != 0
}

#[test]
fn the_vip_prefilter_follows_the_services_of_each_vip() {
    const OTHER: [u8; 4] = [192, 168, 58, 140];
    let with_other = format!(
        "{TWO_BACKENDS}
  - name: other
    vip: 192.168.58.140
    port: 53
    protocol: udp
    backends:
      - address: 192.168.58.135
"
    );
    let mut h = Harness::with_config(&with_other);
    assert!(prefilter_has(&mut h, VIP) && prefilter_has(&mut h, OTHER));
    assert_eq!(h.run(&udp(OTHER, 5353, 53, b"q")).action, XDP_TX);

    // The last service of a VIP gone: its bit clears and its packets pass as no VIP's.
    h.apply(TWO_BACKENDS);
    assert!(
        !prefilter_has(&mut h, OTHER),
        "the bit of a VIP without services"
    );
    assert!(prefilter_has(&mut h, VIP));
    h.assert_passed(&udp(OTHER, 5353, 53, b"q"), Reason::PassNotVip);

    // One service of a VIP gone, another left: the bit stays, the packets of the other
    // service are still forwarded, those of the removed one pass.
    let web_only: String = TWO_BACKENDS
        .split("  - name: dns")
        .next()
        .expect("the web service")
        .to_string();
    h.apply(&web_only);
    assert!(prefilter_has(&mut h, VIP));
    h.assert_passed(&udp(VIP, 5353, 53, b"q"), Reason::PassNotVip);
    assert_eq!(h.run(&tcp_syn(40001, 80)).action, XDP_TX);

    // Removing every service clears the whole filter.
    h.apply("services: []\n");
    let words = lb_ctl::maps::array_batch(&h.maps().vip_filter, 0, 1024).expect("VIP_FILTER");
    assert!(words.iter().all(|w| *w == 0), "bits left without services");
}

#[test]
fn an_entry_that_outlived_its_service_is_not_trusted_when_its_ids_were_reused() {
    // A connection of `web` (VIP:80) ...
    let web = "services:
  - name: web
    vip: 192.168.58.133
    port: 80
    backends:
      - address: 192.168.58.135
  - name: keep
    vip: 192.168.58.133
    port: 443
    backends:
      - address: 192.168.58.136
";
    let mut h = Harness::with_config(web);
    let syn = tcp_syn(41000, 80);
    let ack =
        lb_tests::packet::tcp_frame((CLIENT_MAC, DIRECTOR_MAC), (CLIENT, 41000), (VIP, 80), "A");
    assert_eq!(h.run(&syn).action, XDP_TX);
    assert_eq!(h.run(&ack).action, XDP_TX);
    h.reset_reasons();
    // ... then `web` goes and `moved` (another VIP) comes, and the entry is made to name
    // `moved`'s service id and backend: what an entry that outlived its service looks like
    // once both ids are reused. VIP:443 keeps the VIP's pre-filter bit set.
    h.apply(
        "services:
  - name: keep
    vip: 192.168.58.133
    port: 443
    backends:
      - address: 192.168.58.136
  - name: moved
    vip: 192.168.58.140
    port: 80
    backends:
      - address: 192.168.58.135
",
    );
    let (moved_key, moved) = h
        .maps()
        .services
        .iter()
        .filter_map(Result::ok)
        .find(|(k, _)| k.addr[3] == u32::from_ne_bytes([192, 168, 58, 140]))
        .expect("the moved service");
    let moved_backend = (0..64u32)
        .find(|&id| {
            h.maps()
                .backends
                .get(&id, 0)
                .is_ok_and(|b| b.flags != 0 && b.service_id == moved.id)
        })
        .expect("moved's backend");
    let key = h
        .maps()
        .flows
        .keys()
        .filter_map(Result::ok)
        .find(|k| u16::from_be(k.sport) == 41000)
        .expect("the connection's entry");
    let mut entry = h.maps().flows.get(&key, 0).expect("entry");
    entry.service_id = moved.id;
    entry.backend = moved_backend;
    entry.last_seen_ns = lb_ctl::maps::view::now_ns();
    h.maps()
        .insert_flow(&key, &entry)
        .expect("rewriting the entry");
    assert_ne!(moved_key.addr, key.dst);
    // VIP:80 has no service: the packet passes, it is not sent to `moved`'s backend.
    h.assert_passed(&ack, Reason::PassNotVip);
    // The same entry for a tuple its service serves is trusted as it is.
    let moved_syn = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(CLIENT, [192, 168, 58, 140], 64)
        .tcp(41000, 80, 1000, 64240);
    let mut frame = Vec::new();
    moved_syn.ack(1).write(&mut frame, &[]).expect("a frame");
    let mut moved_flow = key;
    moved_flow.dst = moved_key.addr;
    h.maps()
        .insert_flow(&moved_flow, &entry)
        .expect("an entry of moved's tuple");
    let out = h.run(&frame);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(out.data[..6], BACKEND_MACS[0]);
    assert_eq!(h.service_counters("moved").packets, 1);
}
