//! ICMP and ICMPv6 error frames about a real server's reply, for the packet-level tests, and
//! what those tests need of the maps beyond what `packet::Harness` offers: connection-table
//! entries written directly (an expired or stale entry, which no packet can make), and
//! backends by id.

use std::net::{IpAddr, SocketAddr};

use etherparse::{IpHeaders, IpNumber, Ipv4Header, PacketBuilder, PacketBuilderStep};
use lb_common::{Backend, Flow, FlowKey, PROTO_TCP, Service, ServiceKey, TcpState};
use lb_ctl::plan::convert::{self, addr_of};

use crate::packet::{BACKEND_MACS, DIRECTOR_MAC, Harness};

/// The MAC of the router that sends the errors.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
/// ICMPv4 types and codes.
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMPv6 types.
pub const ICMPV6_DEST_UNREACH: u8 = 1;
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;

/// Every (type, code) of an ICMPv4 error the director forwards: destination unreachable with
/// each code RFC 792 and RFC 1812 define, and time exceeded in transit and in reassembly.
pub fn icmpv4_errors() -> Vec<(u8, u8)> {
    let mut v: Vec<(u8, u8)> = (0..=15).map(|c| (ICMP_DEST_UNREACH, c)).collect();
    v.extend([(ICMP_TIME_EXCEEDED, 0), (ICMP_TIME_EXCEEDED, 1)]);
    v
}

/// Every (type, code) of an ICMPv6 error the director forwards (RFC 4443).
pub fn icmpv6_errors() -> Vec<(u8, u8)> {
    let mut v: Vec<(u8, u8)> = (0..=6).map(|c| (ICMPV6_DEST_UNREACH, c)).collect();
    v.extend([
        (ICMPV6_PACKET_TOO_BIG, 0),
        (ICMPV6_TIME_EXCEEDED, 0),
        (ICMPV6_TIME_EXCEEDED, 1),
    ]);
    v
}

/// The IP packet of a real server's reply `from` (VIP:port) `to` (client): a TCP segment
/// (ACK, PSH) or a UDP datagram with `payload` bytes, and IPv4 `options` in its header.
pub fn reply(
    from: SocketAddr,
    to: SocketAddr,
    proto: u8,
    options: &[u8],
    payload: usize,
) -> Vec<u8> {
    let ip = match (from.ip(), to.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            PacketBuilder::ip(ipv4_header(s.octets(), d.octets(), options))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("a reply has one family: {from} -> {to}"),
    };
    let data = vec![0x5a; payload];
    let mut v = Vec::new();
    if proto == PROTO_TCP {
        ip.tcp(from.port(), to.port(), 7000, 502)
            .ack(1)
            .psh()
            .write(&mut v, &data)
    } else {
        ip.udp(from.port(), to.port()).write(&mut v, &data)
    }
    .expect("a reply fits");
    v
}

/// An IPv4 header from `src` to `dst` with `options` (a multiple of 4 bytes, at most 40).
fn ipv4_header(src: [u8; 4], dst: [u8; 4], options: &[u8]) -> IpHeaders {
    let mut h = Ipv4Header::new(0, 64, IpNumber::TCP, src, dst).expect("an empty payload fits");
    h.options = etherparse::Ipv4Options::try_from(options).expect("IPv4 options of 4n <= 40 bytes");
    IpHeaders::Ipv4(h, Default::default())
}

/// An ICMP (IPv4 `src`/`dst`) or ICMPv6 (IPv6) message in an Ethernet frame, as a router
/// sends it: `kind`, `code`, the 4 bytes after the checksum (`rest`: the next-hop MTU of
/// "fragmentation needed", the MTU of "packet too big"), then `quote`.
#[derive(Clone, Debug)]
pub struct IcmpFrame<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub kind: u8,
    pub code: u8,
    pub rest: [u8; 4],
    pub quote: &'a [u8],
    /// IPv4 options of the outer header.
    pub options: &'a [u8],
    pub dst_mac: [u8; 6],
    /// One 802.1Q tag with this VLAN id.
    pub vlan: Option<u16>,
}

impl<'a> IcmpFrame<'a> {
    /// From the router `src` to `dst`, addressed to the director's MAC, with an MTU of 1400
    /// in `rest` (what "fragmentation needed" and "packet too big" carry).
    pub fn new(src: IpAddr, dst: IpAddr, kind: u8, code: u8, quote: &'a [u8]) -> IcmpFrame<'a> {
        IcmpFrame {
            src,
            dst,
            kind,
            code,
            rest: [0, 0, 0x05, 0x78],
            quote,
            options: &[],
            dst_mac: DIRECTOR_MAC,
            vlan: None,
        }
    }

    pub fn frame(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(ROUTER_MAC, self.dst_mac);
        let mut v = Vec::new();
        let write = |ip: PacketBuilderStep<IpHeaders>, v: &mut Vec<u8>| match (self.src, self.dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => ip
                .icmpv4_raw(self.kind, self.code, self.rest)
                .write(v, self.quote),
            _ => ip
                .icmpv6_raw(self.kind, self.code, self.rest)
                .write(v, self.quote),
        };
        let ip = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_header(s.octets(), d.octets(), self.options),
            (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaders::Ipv6(
                etherparse::Ipv6Header {
                    traffic_class: 0,
                    flow_label: Default::default(),
                    payload_length: 0,
                    next_header: IpNumber::IPV6_ICMP,
                    hop_limit: 64,
                    source: s.octets(),
                    destination: d.octets(),
                },
                Default::default(),
            ),
            _ => panic!("an ICMP error has one family: {} -> {}", self.src, self.dst),
        };
        match self.vlan {
            Some(id) => {
                let vlan = etherparse::VlanId::try_new(id).expect("a VLAN id below 4096");
                write(eth.single_vlan(vlan).ip(ip), &mut v)
            }
            None => write(eth.ip(ip), &mut v),
        }
        .expect("an ICMP error frame fits");
        v
    }
}

/// The connection-table key of the client's packets `client` -> `vip`.
pub fn flow_key(client: SocketAddr, vip: SocketAddr, proto: u8) -> FlowKey {
    FlowKey {
        src: addr_of(client.ip()),
        dst: addr_of(vip.ip()),
        sport: client.port().to_be(),
        dport: vip.port().to_be(),
        proto,
        _pad: [0; 3],
    }
}

/// The `SERVICES` entry of the service named `name`.
pub fn service_entry(h: &mut Harness, name: &str) -> (ServiceKey, Service) {
    h.maps()
        .services
        .iter()
        .filter_map(|e| e.ok())
        .find(|(_, s)| convert::service_name(s) == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

/// The backend ids of service `sid`, in the order of [`BACKEND_MACS`] (the configured ones).
pub fn backend_ids(h: &mut Harness, sid: u32) -> Vec<u32> {
    let backends: Vec<(u32, Backend)> = h
        .maps()
        .backends
        .iter()
        .enumerate()
        .filter_map(|(id, b)| Some((id as u32, b.ok()?)))
        .filter(|(_, b)| b.flags != 0 && b.service_id == sid)
        .collect();
    BACKEND_MACS
        .iter()
        .filter_map(|mac| {
            backends
                .iter()
                .find(|(_, b)| b.mac == *mac)
                .map(|(id, _)| *id)
        })
        .collect()
}

/// Writes a connection-table entry, as a packet of the flow `now` would have: `backend` of
/// service `sid`, in `state`, last seen at `last_seen_ns`.
pub fn insert_flow(
    h: &mut Harness,
    key: FlowKey,
    sid: u32,
    backend: u32,
    state: TcpState,
    last_seen_ns: u64,
) {
    let flow = Flow {
        last_seen_ns,
        backend,
        service_id: sid,
        state: state as u8,
        _pad: [0; 7],
    };
    h.maps().insert_flow(&key, &flow).expect("writing a flow");
}

/// The connection-table entry of `key`, if any.
pub fn flow(h: &mut Harness, key: &FlowKey) -> Option<Flow> {
    h.maps().flows.get(key, 0).ok()
}

/// The backend (index into [`BACKEND_MACS`]) that slot `hash % len` of service `sid`'s table
/// names: where `mh` sends a flow whose hash is `hash`.
pub fn table_pick(h: &mut Harness, name: &str, hash: u32) -> usize {
    let (_, s) = service_entry(h, name);
    let id = h
        .maps()
        .table
        .get(&(s.table_offset + hash % s.table_len), 0)
        .expect("a table slot");
    let b = h.maps().backends.get(&id, 0).expect("the slot's backend");
    BACKEND_MACS
        .iter()
        .position(|m| *m == b.mac)
        .expect("a backend with a known MAC")
}
