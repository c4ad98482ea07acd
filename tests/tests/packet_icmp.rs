//! Packet-level tests of ICMP and ICMPv6 errors about VIP flows: a router's "fragmentation
//! needed" / "packet too big" (and every other destination unreachable and time exceeded)
//! about a real server's reply goes to that flow's real server, with only the MACs changed,
//! so that path-MTU discovery works for the real servers. The real program, maps filled by
//! `apply` from a service file of either family, connection-table entries made by the flows'
//! own first packets, frames run with BPF_PROG_TEST_RUN; needs root.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    thread,
    time::Duration,
};

use lb_common::{Counters, FlowKey, PROTO_TCP, PROTO_UDP, Reason, TcpState, hash_flow};
use lb_tests::{
    icmp::{
        ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMPV6_PACKET_TOO_BIG, IcmpFrame, backend_ids, flow,
        flow_key, icmpv4_errors, icmpv6_errors, insert_flow, reply, service_entry, table_pick,
    },
    packet::{CLIENT_MAC, DIRECTOR_MAC, Harness, Output, XDP_PASS, backend_of},
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Family {
    V4,
    V6,
}
use Family::{V4, V6};

impl Family {
    /// The VIP of `web` (TCP 80) and `dns` (UDP 53).
    fn vip(self) -> IpAddr {
        match self {
            V4 => Ipv4Addr::new(192, 168, 58, 133).into(),
            V6 => "fd00:58::133".parse::<Ipv6Addr>().unwrap().into(),
        }
    }
    /// The VIP of `all`, an all-ports TCP service.
    fn vip_all(self) -> IpAddr {
        match self {
            V4 => Ipv4Addr::new(192, 168, 58, 132).into(),
            V6 => "fd00:58::132".parse::<Ipv6Addr>().unwrap().into(),
        }
    }
    /// An address of no service.
    fn other(self) -> IpAddr {
        match self {
            V4 => Ipv4Addr::new(192, 168, 58, 134).into(),
            V6 => "fd00:58::134".parse::<Ipv6Addr>().unwrap().into(),
        }
    }
    fn router(self) -> IpAddr {
        match self {
            V4 => Ipv4Addr::new(10, 9, 9, 1).into(),
            V6 => "fd00:99::1".parse::<Ipv6Addr>().unwrap().into(),
        }
    }
    fn client(self, i: u32) -> IpAddr {
        match self {
            V4 => Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8).into(),
            V6 => Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, (i >> 16) as u16, i as u16).into(),
        }
    }
    fn errors(self) -> Vec<(u8, u8)> {
        match self {
            V4 => icmpv4_errors(),
            V6 => icmpv6_errors(),
        }
    }
    /// "Fragmentation needed" or "packet too big".
    fn too_big(self) -> (u8, u8) {
        match self {
            V4 => (ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED),
            V6 => (ICMPV6_PACKET_TOO_BIG, 0),
        }
    }
    /// The fixed IP header's length.
    fn ip_hlen(self) -> usize {
        match self {
            V4 => 20,
            V6 => 40,
        }
    }
    /// Backend `i` (0 to 3): .135 to .138, fd00:58::135 to ::138.
    fn backend(self, i: u32) -> IpAddr {
        match self {
            V4 => Ipv4Addr::new(192, 168, 58, 135 + i as u8).into(),
            V6 => Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 0x135 + i as u16).into(),
        }
    }
    /// The service-file lines of persistence by the client's network: a /24 for IPv4, a /64
    /// for IPv6.
    fn persistence(self) -> &'static str {
        match self {
            V4 => "    persistence: { timeout: 60s, netmask: 255.255.255.0 }\n",
            V6 => "    persistence: { timeout: 60s, netmask: 64 }\n",
        }
    }
    /// A harness with [`config`] of this family applied.
    fn harness(self, scheduler: &str, extra: &str) -> Harness {
        Harness::with_config(&config(self, scheduler, extra))
    }
}

const WEB_PORT: u16 = 80;
const DNS_PORT: u16 = 53;
/// Bytes of payload of a real server's reply (too big for a 1400-byte path).
const REPLY_PAYLOAD: usize = 1400;

/// `web` (TCP 80), `dns` (UDP 53) on the VIP and `all` (TCP, every port) on the second VIP,
/// each over the four backends of `fam`, with `scheduler` (`dns` with rr where it is lc or
/// wlc, which UDP services cannot have).
fn config(fam: Family, scheduler: &str, extra: &str) -> String {
    let mut s = String::from("services:\n");
    for (name, vip, port, proto) in [
        ("web", fam.vip(), 80, "tcp"),
        ("dns", fam.vip(), 53, "udp"),
        ("all", fam.vip_all(), 0, "tcp"),
    ] {
        let scheduler = match (proto, scheduler) {
            ("udp", "lc" | "wlc") => "rr",
            _ => scheduler,
        };
        s += &format!(
            "  - name: {name}\n    vip: \"{vip}\"\n    port: {port}\n    protocol: {proto}\n    scheduler: {scheduler}\n{extra}    backends:\n"
        );
        for i in 0..4 {
            s += &format!("      - address: \"{}\"\n", fam.backend(i));
        }
    }
    s
}

fn service_of(proto: u8) -> (&'static str, u16) {
    if proto == PROTO_TCP {
        ("web", WEB_PORT)
    } else {
        ("dns", DNS_PORT)
    }
}

/// Asserts that the frame passed to the kernel untouched.
fn passed(input: &[u8], out: &Output, what: &str) {
    assert_eq!(out.action, XDP_PASS, "{what}");
    assert_eq!(out.data, input, "{what}: a passed frame is not changed");
}

/// The first packet of the flow `client` -> `vip` (a SYN or a UDP datagram, IPv4 or IPv6)
/// run through the program, which makes its entry; the backend index it went to.
fn open_flow(h: &mut Harness, client: SocketAddr, vip: SocketAddr, proto: u8) -> usize {
    let first = flow_packet(client, vip, proto, false);
    backend_of(&first, &h.run(&first))
}

/// [`open_flow`], then for TCP the client's ACK: the entry is established (IPVS's 900 s, not
/// SYN_RECV's 30 s), so a slow run does not see it expire before its ICMP error comes.
fn open_established(h: &mut Harness, client: SocketAddr, vip: SocketAddr, proto: u8) -> usize {
    let backend = open_flow(h, client, vip, proto);
    if proto == PROTO_TCP {
        let ack = flow_packet(client, vip, proto, true);
        assert_eq!(
            backend_of(&ack, &h.run(&ack)),
            backend,
            "the ACK follows its SYN"
        );
    }
    backend
}

/// A flow's first packet (TCP SYN, a UDP datagram) or, with `ack`, the TCP client's ACK.
fn flow_packet(client: SocketAddr, vip: SocketAddr, proto: u8, ack: bool) -> Vec<u8> {
    let eth = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC);
    let b = match (client.ip(), vip.ip()) {
        (IpAddr::V4(c), IpAddr::V4(v)) => eth.ipv4(c.octets(), v.octets(), 64),
        (IpAddr::V6(c), IpAddr::V6(v)) => eth.ipv6(c.octets(), v.octets(), 64),
        _ => panic!("a flow has one family: {client} -> {vip}"),
    };
    let mut frame = Vec::new();
    match (proto, ack) {
        (PROTO_TCP, false) => b
            .tcp(client.port(), vip.port(), 1, 64240)
            .syn()
            .write(&mut frame, &[]),
        (PROTO_TCP, true) => b
            .tcp(client.port(), vip.port(), 2, 64240)
            .ack(1)
            .write(&mut frame, &[]),
        _ => b.udp(client.port(), vip.port()).write(&mut frame, b"query"),
    }
    .expect("a first packet fits");
    frame
}

/// The backend index of an entry.
fn entry_backend(h: &mut Harness, key: &FlowKey) -> usize {
    let f = flow(h, key).expect("the flow's entry");
    let ids = backend_ids(h, f.service_id);
    ids.iter()
        .position(|id| *id == f.backend)
        .expect("a configured backend")
}

fn counters(h: &mut Harness, name: &str, backend: usize) -> (Counters, Counters) {
    let sid = service_entry(h, name).1.id;
    let id = backend_ids(h, sid)[backend];
    (
        h.service_counters(name),
        h.maps().backend_counters(id).expect("backend counters"),
    )
}

/// The IP length of a frame without VLAN tags (what the counters count as bytes).
fn ip_len(frame: &[u8]) -> u64 {
    (frame.len() - 14) as u64
}

#[test]
fn every_icmp_error_type_and_code_goes_to_the_backend_of_its_flow_with_only_the_macs_changed() {
    for fam in [V4, V6] {
        let mut h = fam.harness("rr", "");
        // One flow per (type, code) and protocol, spread over the four backends.
        let mut cases = Vec::new();
        for (k, &(kind, code)) in fam.errors().iter().enumerate() {
            for (j, proto) in [PROTO_TCP, PROTO_UDP].into_iter().enumerate() {
                let i = 2 * k + j;
                let client = SocketAddr::new(fam.client(i as u32), 40000 + i as u16);
                let vip = SocketAddr::new(fam.vip(), service_of(proto).1);
                let backend = open_established(&mut h, client, vip, proto);
                cases.push((i, kind, code, proto, client, vip, backend));
            }
        }
        let used: std::collections::BTreeSet<usize> = cases.iter().map(|c| c.6).collect();
        assert_eq!(used.len(), 4, "{fam:?}: flows on every backend");
        let keys: Vec<FlowKey> = cases.iter().map(|c| flow_key(c.4, c.5, c.3)).collect();
        let before: Vec<_> = keys.iter().map(|k| flow(&mut h, k)).collect();
        let conns = h.active_connections();
        let flows = h.flow_count();
        h.reset_reasons();
        // Past a tick of the coarse clock, so that a refreshed entry would show.
        thread::sleep(Duration::from_millis(30));
        for &(i, kind, code, proto, client, vip, backend) in &cases {
            // Inner IPv4 options, outer IPv4 options, an 802.1Q tag, long and short quotes.
            let inner_options: &[u8] = if fam == V4 && i % 3 == 1 {
                &[1; 8]
            } else {
                &[]
            };
            let full = reply(vip, client, proto, inner_options, REPLY_PAYLOAD);
            let min_quote = fam.ip_hlen() + inner_options.len() + 8;
            let quote = if i % 2 == 0 {
                &full[..min_quote]
            } else {
                &full[..548.min(full.len())]
            };
            let mut e = IcmpFrame::new(fam.router(), vip.ip(), kind, code, quote);
            if fam == V4 && i % 3 == 2 {
                e.options = &[1; 4];
            }
            if i % 4 == 3 {
                e.vlan = Some(7);
            }
            let frame = e.frame();
            let name = service_of(proto).0;
            let (s0, b0) = counters(&mut h, name, backend);
            let what = format!("{fam:?} type {kind} code {code} proto {proto} case {i}");
            assert_eq!(
                backend_of(&frame, &h.run(&frame)),
                backend,
                "{what}: the flow's backend"
            );
            let (s1, b1) = counters(&mut h, name, backend);
            let bytes = ip_len(&frame) - if e.vlan.is_some() { 4 } else { 0 };
            for (c0, c1, of) in [(s0, s1, "service"), (b0, b1, "backend")] {
                assert_eq!(c1.packets - c0.packets, 1, "{what}: {of} packets");
                assert_eq!(c1.bytes - c0.bytes, bytes, "{what}: {of} bytes");
                assert_eq!(c1.new_flows, c0.new_flows, "{what}: {of} new flows");
            }
        }
        h.assert_reasons(&[(Reason::ForwardedIcmp, cases.len() as u64)]);
        let after: Vec<_> = keys.iter().map(|k| flow(&mut h, k)).collect();
        assert_eq!(after, before, "{fam:?}: an ICMP error changed an entry");
        assert_eq!(h.active_connections(), conns, "{fam:?}: CONNS changed");
        assert_eq!(h.flow_count(), flows, "{fam:?}: entries made");
    }
}

#[test]
fn without_an_entry_mh_sends_the_error_where_the_flows_first_packet_goes_and_rr_wrr_lc_wlc_pass() {
    for fam in [V4, V6] {
        let mut h = fam.harness("mh", "    table_size: 4093\n");
        let (kind, code) = fam.too_big();
        let tuples: Vec<(SocketAddr, SocketAddr, u8)> = (0..100u32)
            .map(|i| {
                let proto = if i % 2 == 0 { PROTO_TCP } else { PROTO_UDP };
                let client = SocketAddr::new(fam.client(1000 + i), 30000 + i as u16);
                (
                    client,
                    SocketAddr::new(fam.vip(), service_of(proto).1),
                    proto,
                )
            })
            .collect();
        let mut per_backend = [0; 4];
        let mut picks = Vec::new();
        for &(client, vip, proto) in &tuples {
            let quote = reply(vip, client, proto, &[], REPLY_PAYLOAD);
            let frame = IcmpFrame::new(fam.router(), vip.ip(), kind, code, &quote[..548]).frame();
            let b = backend_of(&frame, &h.run(&frame));
            // The table's slot for the client flow's hash: what mh gives its first packet.
            let want = table_pick(
                &mut h,
                service_of(proto).0,
                hash_flow(&flow_key(client, vip, proto)),
            );
            assert_eq!(b, want, "{fam:?} {client} proto {proto}");
            per_backend[b] += 1;
            picks.push(b);
        }
        assert!(
            per_backend.iter().all(|&n| n >= 10),
            "{fam:?}: {per_backend:?}"
        );
        assert_eq!(h.flow_count(), 0, "{fam:?}: an ICMP error made an entry");
        h.assert_reasons(&[(Reason::ForwardedIcmp, 100)]);
        for name in ["web", "dns"] {
            let c = h.service_counters(name);
            assert_eq!((c.packets, c.new_flows), (50, 0), "{fam:?} {name}");
        }
        // The flows' real first packets go to the same backends.
        for (&(client, vip, proto), &b) in tuples.iter().zip(&picks) {
            assert_eq!(
                open_flow(&mut h, client, vip, proto),
                b,
                "{fam:?} {client} proto {proto}"
            );
        }
        for scheduler in ["rr", "wrr", "lc", "wlc"] {
            let mut h = fam.harness(scheduler, "");
            for &(client, vip, proto) in &tuples[..10] {
                let quote = reply(vip, client, proto, &[], REPLY_PAYLOAD);
                let frame =
                    IcmpFrame::new(fam.router(), vip.ip(), kind, code, &quote[..548]).frame();
                passed(
                    &frame,
                    &h.run(&frame),
                    &format!("{fam:?} {scheduler} {client}"),
                );
            }
            h.assert_reasons(&[(Reason::PassIcmpNoFlow, 10)]);
            h.assert_service("web", 0, 0, 0);
            assert_eq!(h.flow_count(), 0);
        }
    }
}

#[test]
fn a_truncated_quote_passes_at_every_length_and_a_whole_one_is_forwarded() {
    for fam in [V4, V6] {
        let mut h = fam.harness("mh", "");
        let options: &[&[u8]] = if fam == V4 { &[&[], &[1; 12]] } else { &[&[]] };
        let mut no_flow = 0;
        let mut forwarded = 0;
        for (j, proto) in [PROTO_TCP, PROTO_UDP].into_iter().enumerate() {
            for (o, inner_options) in options.iter().enumerate() {
                let client = SocketAddr::new(fam.client(7), 50000 + (2 * j + o) as u16);
                let vip = SocketAddr::new(fam.vip(), service_of(proto).1);
                let backend = open_flow(&mut h, client, vip, proto);
                h.reset_reasons();
                let full = reply(vip, client, proto, inner_options, REPLY_PAYLOAD);
                let need = fam.ip_hlen() + inner_options.len() + 8;
                let (kind, code) = fam.too_big();
                for len in 0..need {
                    let frame =
                        IcmpFrame::new(fam.router(), vip.ip(), kind, code, &full[..len]).frame();
                    passed(
                        &frame,
                        &h.run(&frame),
                        &format!("{fam:?} proto {proto} quote of {len}"),
                    );
                    no_flow += 1;
                }
                let frame =
                    IcmpFrame::new(fam.router(), vip.ip(), kind, code, &full[..need]).frame();
                assert_eq!(
                    backend_of(&frame, &h.run(&frame)),
                    backend,
                    "{fam:?} quote of {need}"
                );
                forwarded += 1;
                h.assert_reasons(&[
                    (Reason::PassIcmpNoFlow, no_flow),
                    (Reason::ForwardedIcmp, forwarded),
                ]);
                h.reset_reasons();
                (no_flow, forwarded) = (0, 0);
                // The frame cut at every length the kernel runs (an Ethernet header at least):
                // its IP length then exceeds the frame.
                for cut in 14..frame.len() {
                    let short = &frame[..cut];
                    passed(short, &h.run(short), &format!("{fam:?} frame cut at {cut}"));
                }
                h.assert_reasons(&[(Reason::PassMalformed, frame.len() as u64 - 14)]);
                h.reset_reasons();
            }
        }
        // An ICMP header shorter than 8 bytes, the IP length saying so.
        let empty = IcmpFrame::new(
            fam.router(),
            fam.vip(),
            fam.too_big().0,
            fam.too_big().1,
            &[],
        )
        .frame();
        for len in 0..8 {
            let mut f = empty[..14 + fam.ip_hlen() + len].to_vec();
            match fam {
                V4 => f[16..18].copy_from_slice(&((20 + len) as u16).to_be_bytes()),
                V6 => f[18..20].copy_from_slice(&(len as u16).to_be_bytes()),
            }
            passed(&f, &h.run(&f), &format!("{fam:?} ICMP header of {len}"));
        }
        h.assert_reasons(&[(Reason::PassMalformed, 8)]);
    }
}

#[test]
fn a_quote_that_is_no_reply_of_a_vip_flow_passes() {
    for fam in [V4, V6] {
        let mut h = fam.harness("mh", "");
        let client = SocketAddr::new(fam.client(9), 41000);
        let vip = SocketAddr::new(fam.vip(), WEB_PORT);
        let backend = open_flow(&mut h, client, vip, PROTO_TCP);
        h.reset_reasons();
        let (kind, code) = fam.too_big();
        let at = |ip: IpAddr, port: u16| SocketAddr::new(ip, port);
        let run = |h: &mut Harness, to: IpAddr, quote: &[u8], what: &str| {
            let frame = IcmpFrame::new(fam.router(), to, kind, code, quote).frame();
            passed(&frame, &h.run(&frame), &format!("{fam:?}: {what}"));
        };
        // The quoted reply's source is another address (the outer destination is the VIP).
        run(
            &mut h,
            fam.vip(),
            &reply(at(fam.other(), 80), client, PROTO_TCP, &[], 100),
            "other source",
        );
        // About another address's reply, sent to it: no service there.
        run(
            &mut h,
            fam.other(),
            &reply(at(fam.other(), 80), client, PROTO_TCP, &[], 100),
            "no VIP",
        );
        // Another port of the VIP, another protocol on the VIP's port.
        run(
            &mut h,
            fam.vip(),
            &reply(at(fam.vip(), 81), client, PROTO_TCP, &[], 100),
            "other port",
        );
        run(
            &mut h,
            fam.vip(),
            &reply(vip, client, PROTO_UDP, &[], 100),
            "other protocol",
        );
        // The VIP's reply, but the error is sent to another address.
        run(
            &mut h,
            fam.other(),
            &reply(vip, client, PROTO_TCP, &[], 100),
            "outer dst != inner src",
        );
        // The quote of an ICMP message from the VIP.
        let mut icmp = reply(vip, client, PROTO_TCP, &[], 100);
        match fam {
            V4 => icmp[9] = 1,
            V6 => icmp[6] = 58,
        }
        run(&mut h, fam.vip(), &icmp, "quoted ICMP");
        h.assert_reasons(&[(Reason::PassNotVip, 6)]);
        // Quotes that name the flow but cannot be read: a non-first IPv4 fragment, an IPv6
        // extension header (not walked inside a quote), a broken version or header length.
        let good = reply(vip, client, PROTO_TCP, &[], 100);
        let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
        let mut patched = |what: &'static str, at: usize, value: u8| {
            let mut q = good.clone();
            q[at] = value;
            cases.push((q, what));
        };
        match fam {
            V4 => {
                patched("a non-first fragment", 7, 185);
                patched("version 5", 0, 0x55);
                patched("header length 16", 0, 0x44);
            }
            V6 => {
                patched("a fragment header", 6, 44);
                patched("hop-by-hop options", 6, 0);
                patched("version 4", 0, 0x40);
            }
        }
        for (q, what) in &cases {
            run(&mut h, fam.vip(), q, what);
        }
        h.assert_reasons(&[
            (Reason::PassNotVip, 6),
            (Reason::PassIcmpNoFlow, cases.len() as u64),
        ]);
        h.reset_reasons();
        // Not addressed to this interface's MAC.
        let mut other_mac = IcmpFrame::new(fam.router(), fam.vip(), kind, code, &good);
        other_mac.dst_mac = [0x02, 0, 0, 0, 0, 99];
        let frame = other_mac.frame();
        passed(&frame, &h.run(&frame), "another MAC");
        h.assert_reasons(&[(Reason::PassOtherMac, 1)]);
        // The same quote, well formed, addressed to us: the flow's backend. For IPv4 the first
        // fragment of a reply (more fragments, offset 0) too.
        let frame = IcmpFrame::new(fam.router(), fam.vip(), kind, code, &good).frame();
        assert_eq!(backend_of(&frame, &h.run(&frame)), backend);
        if fam == V4 {
            let mut first = good.clone();
            first[6] = 0x20;
            let frame = IcmpFrame::new(fam.router(), fam.vip(), kind, code, &first).frame();
            assert_eq!(
                backend_of(&frame, &h.run(&frame)),
                backend,
                "a first fragment"
            );
        }
        // An all-ports service: any port of its VIP.
        let all = SocketAddr::new(fam.vip_all(), 8443);
        let quote = reply(all, client, PROTO_TCP, &[], 100);
        let frame = IcmpFrame::new(fam.router(), fam.vip_all(), kind, code, &quote).frame();
        let want = table_pick(&mut h, "all", hash_flow(&flow_key(client, all, PROTO_TCP)));
        assert_eq!(
            backend_of(&frame, &h.run(&frame)),
            want,
            "{fam:?}: all-ports service"
        );
        let n = if fam == V4 { 3 } else { 2 };
        h.assert_reasons(&[(Reason::PassOtherMac, 1), (Reason::ForwardedIcmp, n)]);
    }
}

#[test]
fn echo_requests_and_other_icmp_to_a_vip_pass_to_the_kernel() {
    for fam in [V4, V6] {
        let mut h = fam.harness("mh", "");
        let client = SocketAddr::new(fam.client(3), 42000);
        let vip = SocketAddr::new(fam.vip(), WEB_PORT);
        open_flow(&mut h, client, vip, PROTO_TCP);
        h.reset_reasons();
        // Every other type (echo request 8, ICMPv6 echo request 128 and neighbour
        // solicitation 135 among them), with a body that would be a perfect quote of the
        // flow's reply.
        let body = reply(vip, client, PROTO_TCP, &[], 100);
        let errors: Vec<u8> = fam.errors().iter().map(|e| e.0).collect();
        let mut n = 0;
        for kind in (0..=255u8).filter(|k| !errors.contains(k)) {
            let frame = IcmpFrame::new(fam.router(), fam.vip(), kind, 0, &body).frame();
            passed(&frame, &h.run(&frame), &format!("{fam:?} type {kind}"));
            n += 1;
        }
        h.assert_reasons(&[(Reason::PassNotTcpUdp, n)]);
        assert!(n >= 245, "{fam:?}: echo requests and the rest: {n} types");
        assert_eq!(h.flow_count(), 1);
        // Only the flow's SYN was counted.
        h.assert_service("web", 1, (fam.ip_hlen() + 20) as u64, 1);
    }
}

#[test]
fn entries_are_only_read_an_expired_or_stale_one_is_placed_as_without_one() {
    // The entries here are written directly (`insert_flow`): one that expired on a backend
    // other than the hash's, and a live one naming another service's backend, are states that
    // neither the service file nor a packet run through the program can make.
    for fam in [V4, V6] {
        let persist = format!("    table_size: 4093\n{}", fam.persistence());
        for extra in ["    table_size: 4093\n", &persist] {
            let mut h = fam.harness("mh", extra);
            let (kind, code) = fam.too_big();
            let vip = SocketAddr::new(fam.vip(), WEB_PORT);
            let sid = service_entry(&mut h, "web").1.id;
            let ids = backend_ids(&mut h, sid);
            // A closed (RST) entry that expired 1 s ago, on a backend other than the hash's (RST
            // entries live 10 s: an expired ESTABLISHED one would need 901 s of uptime).
            let client = SocketAddr::new(fam.client(20), 43000);
            let key = flow_key(client, vip, PROTO_TCP);
            let hashed = table_pick(&mut h, "web", hash_flow(&key));
            let stale = (hashed + 1) % 4;
            let old = lb_ctl::maps::view::now_ns() - 11_000_000_000;
            insert_flow(&mut h, key, sid, ids[stale], TcpState::Rst, old);
            let persist_before: Vec<_> = h.maps().persist_entries().expect("reading PERSIST");
            let conns = h.active_connections();
            let quote = reply(vip, client, PROTO_TCP, &[], 100);
            let frame = IcmpFrame::new(fam.router(), fam.vip(), kind, code, &quote).frame();
            assert_eq!(
                backend_of(&frame, &h.run(&frame)),
                hashed,
                "{fam:?}: expired entry"
            );
            assert_eq!(
                entry_backend(&mut h, &key),
                stale,
                "{fam:?}: the entry was replaced"
            );
            assert_eq!(
                flow(&mut h, &key).unwrap().last_seen_ns,
                old,
                "{fam:?}: refreshed"
            );
            assert_eq!(h.active_connections(), conns, "{fam:?}: CONNS changed");
            let persist_after: Vec<_> = h.maps().persist_entries().expect("reading PERSIST");
            assert_eq!(persist_after, persist_before, "{fam:?}: PERSIST changed");
            // A live entry whose backend is no longer the service's: placed by the hash too.
            let client = SocketAddr::new(fam.client(21), 43001);
            let key = flow_key(client, vip, PROTO_TCP);
            let hashed = table_pick(&mut h, "web", hash_flow(&key));
            let dns = service_entry(&mut h, "dns").1.id;
            let foreign = backend_ids(&mut h, dns)[(hashed + 1) % 4];
            insert_flow(
                &mut h,
                key,
                sid,
                foreign,
                TcpState::Established,
                lb_ctl::maps::view::now_ns(),
            );
            let quote = reply(vip, client, PROTO_TCP, &[], 100);
            let frame = IcmpFrame::new(fam.router(), fam.vip(), kind, code, &quote).frame();
            assert_eq!(
                backend_of(&frame, &h.run(&frame)),
                hashed,
                "{fam:?}: stale entry"
            );
            assert_eq!(
                flow(&mut h, &key).unwrap().backend,
                foreign,
                "{fam:?}: entry changed"
            );
            h.assert_reasons(&[(Reason::ForwardedIcmp, 2)]);
        }
    }
}

#[test]
fn without_an_entry_a_remembered_client_network_gets_the_error_and_persistence_is_not_refreshed() {
    let persist = format!("    table_size: 4093\n{}", V4.persistence());
    let mut h = V4.harness("mh", &persist);
    let mut hash_only = V4.harness("mh", "    table_size: 4093\n");
    let vip = SocketAddr::new(V4.vip(), WEB_PORT);
    let remembered = open_flow(
        &mut h,
        SocketAddr::new(Ipv4Addr::new(10, 2, 3, 4).into(), 44000),
        vip,
        PROTO_TCP,
    );
    let persist_before: Vec<_> = h.maps().persist_entries().expect("reading PERSIST");
    assert_eq!(persist_before.len(), 1);
    thread::sleep(Duration::from_millis(30));
    let (kind, code) = V4.too_big();
    let mut elsewhere = 0;
    for x in 10..60u8 {
        let client = SocketAddr::new(Ipv4Addr::new(10, 2, 3, x).into(), 45000 + x as u16);
        let quote = reply(vip, client, PROTO_TCP, &[], 100);
        let frame = IcmpFrame::new(V4.router(), V4.vip(), kind, code, &quote).frame();
        if backend_of(&frame, &hash_only.run(&frame)) == remembered {
            continue;
        }
        elsewhere += 1;
        assert_eq!(backend_of(&frame, &h.run(&frame)), remembered, "10.2.3.{x}");
    }
    assert!(
        elsewhere >= 10,
        "only {elsewhere} of 50 tuples hash elsewhere"
    );
    let persist_after: Vec<_> = h.maps().persist_entries().expect("reading PERSIST");
    assert_eq!(
        persist_after, persist_before,
        "an ICMP error refreshed persistence"
    );
    assert_eq!(h.flow_count(), 1);
    h.assert_reasons(&[(Reason::Forwarded, 1), (Reason::ForwardedIcmp, elsewhere)]);
}
