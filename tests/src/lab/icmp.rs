//! ICMP errors about a flow, built and sent from inside a lab host (a raw socket on a thread
//! that entered the host's namespace, no external tools), and what a host's kernel made of
//! them: its ICMP counters and its path MTU to a destination.
//!
//! The error quotes a UDP packet that the flow's real server sent (source `VIP:port`,
//! destination the client), as a router that could not forward that packet would:
//! - IPv4: "fragmentation needed" (type 3, code 4) with the next-hop MTU; the quoted packet has
//!   DF set. The ICMP checksum is computed here.
//! - IPv6: "packet too big" (type 2, code 0) with the MTU; the kernel fills in the checksum of
//!   a raw ICMPv6 socket (RFC 3542).

use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};

use anyhow::{Context as _, Result, bail};
use socket2::{Domain, Protocol, Socket, Type};

use super::Host;

/// Bytes of the quoted packet's UDP payload included after its headers.
const QUOTED_PAYLOAD: usize = 64;

/// The ICMP message (from its type field on) saying that the UDP packet `from` -> `to` of
/// `len` bytes (IP header included) did not fit a link of `mtu` bytes: "fragmentation needed"
/// for IPv4, "packet too big" for IPv6 (checksum left 0: the kernel fills it in).
pub fn too_big_message(from: SocketAddr, to: SocketAddr, len: u16, mtu: u16) -> Result<Vec<u8>> {
    match (from, to) {
        (SocketAddr::V4(from), SocketAddr::V4(to)) => Ok(frag_needed(from, to, len, mtu)),
        (SocketAddr::V6(from), SocketAddr::V6(to)) => Ok(packet_too_big(from, to, len, mtu)),
        _ => bail!("the quoted packet {from} -> {to} mixes IPv4 and IPv6"),
    }
}

fn udp_header(sport: u16, dport: u16, udp_len: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(8 + QUOTED_PAYLOAD);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&udp_len.to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&[0x5a; QUOTED_PAYLOAD]);
    h
}

fn frag_needed(from: SocketAddrV4, to: SocketAddrV4, len: u16, mtu: u16) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&len.to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0]); // id, DF
    ip.extend_from_slice(&[64, libc::IPPROTO_UDP as u8, 0, 0]);
    ip.extend_from_slice(&from.ip().octets());
    ip.extend_from_slice(&to.ip().octets());
    let sum = lb_ctl::vrrp::packet::checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend(udp_header(from.port(), to.port(), len.saturating_sub(20)));

    let mut msg = vec![3, 4, 0, 0, 0, 0];
    msg.extend_from_slice(&mtu.to_be_bytes());
    msg.extend(ip);
    let sum = lb_ctl::vrrp::packet::checksum(&[&msg]);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

fn packet_too_big(from: SocketAddrV6, to: SocketAddrV6, len: u16, mtu: u16) -> Vec<u8> {
    let payload_len = len.saturating_sub(40);
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&payload_len.to_be_bytes());
    ip.extend_from_slice(&[libc::IPPROTO_UDP as u8, 64]);
    ip.extend_from_slice(&from.ip().octets());
    ip.extend_from_slice(&to.ip().octets());
    ip.extend(udp_header(from.port(), to.port(), payload_len));

    let mut msg = vec![2, 0, 0, 0];
    msg.extend_from_slice(&u32::from(mtu).to_be_bytes());
    msg.extend(ip);
    msg
}

/// Sends the ICMP (IPv4) or ICMPv6 `message` (from its type field on) from inside `host` to
/// `to`, through a raw socket: the kernel adds the IP header with `host`'s own address as the
/// source.
pub fn send_icmp(host: &Host, to: IpAddr, message: Vec<u8>) -> Result<()> {
    host.run_in(move || {
        let (domain, protocol) = match to {
            IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
            IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
        };
        let socket = Socket::new(domain, Type::RAW, Some(protocol))
            .context("opening a raw ICMP socket (needs CAP_NET_RAW)")?;
        let sent = socket
            .send_to(&message, &SocketAddr::new(to, 0).into())
            .with_context(|| format!("sending an ICMP message to {to}"))?;
        anyhow::ensure!(
            sent == message.len(),
            "sent {sent} of {} bytes",
            message.len()
        );
        Ok(())
    })
    .with_context(|| format!("from {}", host.name))
}

/// A counter of `host`'s kernel from `/proc/net/snmp` (`Icmp` `InDestUnreachs` is
/// `IcmpInDestUnreachs`) or `/proc/net/snmp6` (`Icmp6InPktTooBigs`), as `nstat` names them.
pub fn snmp_counter(host: &Host, name: &str) -> Result<u64> {
    let snmp6 = host.exec_ok(&["cat", "/proc/net/snmp6"])?;
    for line in snmp6.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some(name) {
            return words
                .next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("bad /proc/net/snmp6 line {line:?}"));
        }
    }
    let snmp = host.exec_ok(&["cat", "/proc/net/snmp"])?;
    match paired_counter(&snmp, name) {
        Some(v) => v
            .parse()
            .with_context(|| format!("bad /proc/net/snmp value {v:?} of {name}")),
        None => bail!("{} has no counter {name}", host.name),
    }
}

/// The value of counter `name` (as `nstat` names it: protocol then field, `TcpExtListenDrops`)
/// in the text of `/proc/net/snmp` or `/proc/net/netstat`: a line of names, then a line of
/// values, per protocol.
pub fn paired_counter<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { break };
        let (Some((proto, names)), Some((_, values))) =
            (names.split_once(": "), values.split_once(": "))
        else {
            continue;
        };
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if format!("{proto}{n}") == name {
                return Some(v);
            }
        }
    }
    None
}

/// The MTU `host`'s kernel uses towards `to` when it has learnt a lower one (the `mtu` of
/// `ip route get TO`, a cached path MTU), or `None`.
pub fn path_mtu(host: &Host, to: IpAddr) -> Result<Option<u32>> {
    let out = host.exec_ok(&["ip", "route", "get", &to.to_string()])?;
    let words: Vec<&str> = out.split_whitespace().collect();
    match words.iter().position(|w| *w == "mtu") {
        Some(i) => {
            let v = words.get(i + 1).context("`mtu` without a value")?;
            Ok(Some(
                v.parse()
                    .with_context(|| format!("bad mtu {v:?} in {out:?}"))?,
            ))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frag_needed_checksums_verify() {
        let from = "192.168.58.133:5353".parse().unwrap();
        let to = "192.168.58.100:40000".parse().unwrap();
        let msg = too_big_message(from, to, 1500, 1200).unwrap();
        assert_eq!(&msg[..2], &[3, 4]);
        assert_eq!(&msg[6..8], &1200u16.to_be_bytes());
        assert_eq!(lb_ctl::vrrp::packet::checksum(&[&msg]), 0, "ICMP checksum");
        assert_eq!(
            lb_ctl::vrrp::packet::checksum(&[&msg[8..28]]),
            0,
            "IP checksum"
        );
        assert_eq!(&msg[20..24], &[192, 168, 58, 133]);
        assert_eq!(&msg[28..30], &5353u16.to_be_bytes());
        assert_eq!(&msg[30..32], &40000u16.to_be_bytes());
    }

    #[test]
    fn packet_too_big_quotes_the_reply() {
        let from = "[fd00:58::133]:5353".parse().unwrap();
        let to = "[fd00:58::100]:40000".parse().unwrap();
        let msg = too_big_message(from, to, 1500, 1280).unwrap();
        assert_eq!(&msg[..2], &[2, 0]);
        assert_eq!(&msg[4..8], &1280u32.to_be_bytes());
        assert_eq!(msg[8] >> 4, 6);
        assert_eq!(msg[8 + 6], 17);
        assert_eq!(msg[8 + 8 + 15], 0x33);
        assert_eq!(&msg[48..50], &5353u16.to_be_bytes());
        assert!(too_big_message(from, "1.2.3.4:1".parse().unwrap(), 1500, 1280).is_err());
    }
}
