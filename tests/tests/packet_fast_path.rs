//! Packet-level tests of the data path's first step (`lb-ebpf/src/fast.rs`): a packet of a flow
//! the CPU's flow cache holds, in the common shape (at most one 802.1Q tag; IPv4 without
//! options and not a fragment, or IPv6 without extension headers; TCP without SYN/FIN/RST or
//! UDP), is forwarded before the pipeline runs; every other shape, and every malformed one, must be decided exactly as the pipeline
//! decides it. Each test fills the flow's slot first, then sends the shapes at the fast
//! path's edges and asserts the action, the frame that comes out and the counters.

use std::net::Ipv6Addr;

use etherparse::{IpHeaders, IpNumber, Ipv4Header, PacketBuilder, VlanId};
use lb_common::Reason;
use lb_ctl::plan::convert::addr_of;
use lb_tests::packet::{
    BACKEND_MACS, CLIENT_MAC, DEST_OPTS, DIRECTOR_MAC, Harness, Output, XDP_PASS, XDP_TX,
    client_addr, extension, flow_key, forwarded, pin_to_one_cpu, tcp_to_web, tcp6_frame,
    web_service, with_extensions,
};

const VIP: [u8; 4] = [192, 168, 58, 133];

/// Which of BACKEND_MACS `input` went to; asserts only its MACs changed.
fn backend_of(input: &[u8], out: &Output) -> usize {
    lb_tests::packet::backend_of(input, out)
}

/// Opens `client:sport` (SYN, ACK) and sends one more ACK, which fills this CPU's slot;
/// returns the flow's backend.
fn cached_flow(h: &mut Harness, client: [u8; 4], sport: u16) -> usize {
    let syn = tcp_to_web(client, sport, "S");
    let b = backend_of(&syn, &h.run(&syn));
    for _ in 0..2 {
        let ack = tcp_to_web(client, sport, "A");
        assert_eq!(backend_of(&ack, &h.run(&ack)), b);
    }
    assert_eq!(
        h.cached(&flow_key(client, sport, 80)).len(),
        1,
        "the flow's slot is filled"
    );
    b
}

/// The ACK of `client:sport` behind `tags` (none, one 802.1Q tag, or 802.1ad then 802.1Q)
/// and with `options` in its IPv4 header.
fn ack(client: [u8; 4], sport: u16, tags: &[u16], options: &[u8]) -> Vec<u8> {
    let vid = |v| VlanId::try_new(v).expect("vlan id");
    let mut ip = Ipv4Header::new(20, 64, IpNumber::TCP, client, VIP).expect("IPv4 header");
    ip.options = options.try_into().expect("options");
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC);
    let mut v = Vec::new();
    let ip = IpHeaders::Ipv4(ip, Default::default());
    let written = match tags {
        [] => eth.ip(ip).tcp(sport, 80, 1, 1000).ack(1).write(&mut v, &[]),
        [one] => (eth.single_vlan(vid(*one)).ip(ip))
            .tcp(sport, 80, 1, 1000)
            .ack(1)
            .write(&mut v, &[]),
        [outer, inner] => (eth.double_vlan(vid(*outer), vid(*inner)).ip(ip))
            .tcp(sport, 80, 1, 1000)
            .ack(1)
            .write(&mut v, &[]),
        _ => panic!("at most two tags"),
    };
    written.expect("build the ACK");
    v
}

/// `frame` with `edit` applied to a copy.
fn edited(frame: &[u8], edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = frame.to_vec();
    edit(&mut v);
    v
}

fn ip_len(frame: &[u8], l3: usize) -> u64 {
    u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]) as u64
}

#[test]
fn a_cached_flow_reaches_its_backend_in_every_shape() {
    let _pinned = pin_to_one_cpu();
    let mut h = Harness::with_config(&web_service("rr", ""));
    let (c, p) = (client_addr(1), 45000);
    let b = cached_flow(&mut h, c, p);
    h.reset_reasons();
    let shapes = [
        ("untagged", ack(c, p, &[], &[]), 14),
        ("802.1Q", ack(c, p, &[58], &[]), 18),
        ("802.1ad + 802.1Q", ack(c, p, &[100, 58], &[]), 22),
        ("IPv4 options", ack(c, p, &[], &[1, 1, 1, 0]), 14),
        (
            "802.1Q, IPv4 options",
            ack(c, p, &[58], &[1, 1, 1, 1, 1, 1, 1, 0]),
            18,
        ),
    ];
    let before = h.service_counters("web");
    let mut bytes = 0;
    for (what, frame, l3) in &shapes {
        let out = h.run(frame);
        assert_eq!(out.action, XDP_TX, "{what}");
        assert_eq!(out.data, forwarded(frame, BACKEND_MACS[b]), "{what}");
        bytes += ip_len(frame, *l3);
    }
    let after = h.service_counters("web");
    assert_eq!(after.packets - before.packets, shapes.len() as u64);
    assert_eq!(after.bytes - before.bytes, bytes);
    assert_eq!(
        after.new_flows, before.new_flows,
        "no shape made a new flow"
    );
    h.assert_reasons(&[(Reason::Forwarded, shapes.len() as u64)]);
    // None of them emptied the slot.
    assert_eq!(h.cached(&flow_key(c, p, 80)).len(), 1);
}

#[test]
fn malformed_packets_of_a_cached_flow_pass_untouched_and_leave_it_working() {
    let _pinned = pin_to_one_cpu();
    let mut h = Harness::with_config(&web_service("rr", ""));
    let (c, p) = (client_addr(2), 46000);
    let b = cached_flow(&mut h, c, p);
    let good = tcp_to_web(c, p, "A");
    let malformed = [
        (
            "total length beyond the frame",
            edited(&good, |v| v[16..18].copy_from_slice(&41u16.to_be_bytes())),
        ),
        (
            "total length shorter than the TCP header",
            edited(&good, |v| v[16..18].copy_from_slice(&39u16.to_be_bytes())),
        ),
        (
            "total length shorter than the IPv4 header",
            edited(&good, |v| v[16..18].copy_from_slice(&19u16.to_be_bytes())),
        ),
        ("IHL 4", edited(&good, |v| v[14] = 0x44)),
        ("IHL past the packet", edited(&good, |v| v[14] = 0x4f)),
        ("version 6 under IPv4", edited(&good, |v| v[14] = 0x65)),
        (
            "TCP data offset 4",
            edited(&good, |v| v[14 + 20 + 12] = 0x40),
        ),
    ];
    for (what, frame) in &malformed {
        h.reset_reasons();
        let out = h.run(frame);
        assert_eq!(out.action, XDP_PASS, "{what}");
        assert_eq!(&out.data, frame, "{what}: a passed frame must not change");
        h.assert_reasons(&[(Reason::PassMalformed, 1)]);
    }
    // Cut anywhere inside the headers, behind one 802.1Q tag.
    let tagged = ack(c, p, &[58], &[]);
    for cut in 14..tagged.len() {
        h.reset_reasons();
        let out = h.run(&tagged[..cut]);
        assert_eq!(out.action, XDP_PASS, "cut at {cut}");
        assert_eq!(out.data, &tagged[..cut], "cut at {cut}");
        h.assert_reasons(&[(Reason::PassMalformed, 1)]);
    }
    // Sent to another MAC (a flooded copy of another director's traffic).
    h.reset_reasons();
    let other_mac = edited(&good, |v| v[5] ^= 0x40);
    let out = h.run(&other_mac);
    assert_eq!((out.action, &out.data), (XDP_PASS, &other_mac));
    h.assert_reasons(&[(Reason::PassOtherMac, 1)]);
    // The flow is still served from its slot, on its backend.
    h.reset_reasons();
    assert_eq!(backend_of(&good, &h.run(&good)), b);
    h.assert_reasons(&[(Reason::Forwarded, 1)]);
    assert_eq!(h.cached(&flow_key(c, p, 80)).len(), 1);
    assert_ne!(DIRECTOR_MAC, other_mac[0..6]);
}

#[test]
fn state_changes_and_fragments_of_a_cached_flow_go_the_pipelines_way() {
    let _pinned = pin_to_one_cpu();
    let mut h = Harness::with_config(&web_service("rr", ""));
    let (c, p) = (client_addr(3), 47000);
    let b = cached_flow(&mut h, c, p);
    let key = flow_key(c, p, 80);
    // A first fragment (more fragments set) is forwarded to the flow's backend and empties
    // the slot (a fragment never fills one); the next ACK fills it again.
    let mut first = tcp_to_web(c, p, "A");
    first[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
    assert_eq!(backend_of(&first, &h.run(&first)), b);
    assert!(
        h.cached(&key).is_empty(),
        "a fragment was served from the slot"
    );
    let good = tcp_to_web(c, p, "A");
    assert_eq!(backend_of(&good, &h.run(&good)), b);
    assert_eq!(h.cached(&key).len(), 1);
    // Don't-fragment alone is no fragment: served from the slot, which stays.
    let mut df = tcp_to_web(c, p, "A");
    df[20..22].copy_from_slice(&0x4000u16.to_be_bytes());
    assert_eq!(backend_of(&df, &h.run(&df)), b);
    assert_eq!(h.cached(&key).len(), 1);
    // A FIN moves the connection to FIN and empties the slot.
    let fin = tcp_to_web(c, p, "FA");
    assert_eq!(backend_of(&fin, &h.run(&fin)), b);
    assert!(h.cached(&key).is_empty(), "a FIN left the slot filled");
    let entry = h.maps().flows.get(&key, 0).expect("the FLOWS entry");
    assert_eq!(entry.state(), lb_common::TcpState::Fin);
}

#[test]
fn a_cached_udp_flow_and_non_vip_traffic_are_decided_as_before() {
    let _pinned = pin_to_one_cpu();
    let config = "
services:
  - name: dns
    vip: 192.168.58.133
    port: 53
    protocol: udp
    scheduler: rr
    backends:
      - address: 192.168.58.135
      - address: 192.168.58.136
";
    let mut h = Harness::with_config(config);
    let client = client_addr(4);
    let udp = |dst: [u8; 4], payload: &[u8]| {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
            .ipv4(client, dst, 64)
            .udp(5353, 53)
            .write(&mut v, payload)
            .expect("build UDP");
        v
    };
    let query = udp(VIP, b"query");
    let b = backend_of(&query, &h.run(&query));
    let again = backend_of(&query, &h.run(&query));
    assert_eq!(again, b);
    let mut key = flow_key(client, 5353, 53);
    key.proto = lb_common::PROTO_UDP;
    assert_eq!(h.cached(&key).len(), 1, "the UDP flow's slot is filled");
    for _ in 0..3 {
        assert_eq!(backend_of(&query, &h.run(&query)), b);
    }
    // A UDP length field is not the director's concern, but the IP total length is: one
    // that leaves no room for the UDP header is malformed.
    let mut short = query.clone();
    short[16..18].copy_from_slice(&27u16.to_be_bytes());
    h.assert_passed(&short, Reason::PassMalformed);
    // Traffic to an address that is no VIP passes, tagged or not, whatever its shape.
    let other = udp([192, 168, 58, 200], b"query");
    h.assert_passed(&other, Reason::PassNotVip);
    let mut tagged = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .single_vlan(VlanId::try_new(58).expect("vlan id"))
        .ipv4(client, [192, 168, 58, 200], 64)
        .udp(5353, 53)
        .write(&mut tagged, b"query")
        .expect("build tagged UDP");
    h.assert_passed(&tagged, Reason::PassNotVip);
    h.assert_service("dns", 5, 5 * ip_len(&query, 14), 1);
}

#[test]
fn a_cached_ipv6_flow_is_decided_as_before_in_every_shape() {
    let _pinned = pin_to_one_cpu();
    let vip = Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 0x133);
    let client = Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 1, 0x100);
    let mut h = Harness::with_config(&format!(
        "services:\n  - name: web6\n    vip: \"{vip}\"\n    port: 80\n    scheduler: rr\n    \
         backends:\n      - address: \"fd00:58::135\"\n      - address: \"fd00:58::136\"\n"
    ));
    let tcp = |flags: &str| {
        tcp6_frame(
            (CLIENT_MAC, DIRECTOR_MAC),
            (client, 48000),
            (vip, 80),
            flags,
        )
    };
    let syn = tcp("S");
    let b = backend_of(&syn, &h.run(&syn));
    let good = tcp("A");
    for _ in 0..3 {
        assert_eq!(backend_of(&good, &h.run(&good)), b);
    }
    let mut tagged = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .single_vlan(VlanId::try_new(58).expect("vlan id"))
        .ipv6(client.octets(), vip.octets(), 64)
        .tcp(48000, 80, 1, 64240)
        .ack(1)
        .write(&mut tagged, &[])
        .expect("build tagged IPv6");
    let with_options = with_extensions(&good, &[extension(DEST_OPTS, 0)]);
    h.reset_reasons();
    for (what, frame) in [
        ("untagged", &good),
        ("802.1Q", &tagged),
        ("destination options", &with_options),
    ] {
        let out = h.run(frame);
        assert_eq!(out.action, XDP_TX, "{what}");
        assert_eq!(out.data, forwarded(frame, BACKEND_MACS[b]), "{what}");
    }
    h.assert_reasons(&[(Reason::Forwarded, 3)]);
    // Malformed: the payload length beyond the frame, a TCP data offset of 4, a payload too
    // short for the TCP header, every cut inside the headers.
    let malformed = [
        edited(&good, |v| v[18..20].copy_from_slice(&21u16.to_be_bytes())),
        edited(&good, |v| v[14 + 40 + 12] = 0x40),
        edited(&good, |v| v[18..20].copy_from_slice(&19u16.to_be_bytes())),
    ];
    for frame in malformed
        .iter()
        .cloned()
        .chain((14..good.len()).map(|cut| good[..cut].to_vec()))
    {
        h.assert_passed(&frame, Reason::PassMalformed);
    }
    // To no VIP: passes.
    let other = tcp6_frame(
        (CLIENT_MAC, DIRECTOR_MAC),
        (client, 48000),
        (Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 0x200), 80),
        "A",
    );
    h.assert_passed(&other, Reason::PassNotVip);
    // The flow still goes to its backend from its slot.
    assert_eq!(backend_of(&good, &h.run(&good)), b);
    assert_eq!(
        h.cached(&lb_common::FlowKey {
            src: addr_of(client.into()),
            dst: addr_of(vip.into()),
            sport: 48000u16.to_be(),
            dport: 80u16.to_be(),
            proto: lb_common::PROTO_TCP,
            _pad: [0; 3],
        })
        .len(),
        1
    );
}
