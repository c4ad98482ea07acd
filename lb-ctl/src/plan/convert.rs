//! Conversions between the service file's values and the data path's map types
//! (`lb_common`): keys, addresses, names, schedulers, and how each is written for people.
//! Pure functions: no map is touched here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lb_common::{Backend, Forward, Sched, Service, ServiceKey, limits, v4_mapped};

use crate::config::{Forwarding, Protocol, Scheduler, ServiceConfig, TunnelKind};

/// The key of a configured service.
pub fn service_key(s: &ServiceConfig) -> ServiceKey {
    ServiceKey {
        addr: addr_of(s.vip),
        port: s.port.to_be(),
        proto: s.protocol.number(),
        _pad: 0,
    }
}

/// The map address of an address: IPv4 as `::ffff:a.b.c.d`, IPv6 as its own 16 bytes, both in
/// network byte order (what the data path reads from the header).
pub fn addr_of(addr: IpAddr) -> lb_common::Addr {
    match addr {
        IpAddr::V4(v4) => addr_mapped(v4),
        IpAddr::V6(v6) => words(v6.octets()),
    }
}

/// The address a map address stands for: an IPv4-mapped one is IPv4, any other IPv6.
pub fn addr_ip(addr: &lb_common::Addr) -> IpAddr {
    Ipv6Addr::from(bytes(addr)).to_canonical()
}

/// The v4-mapped map address of an IPv4 address.
pub fn addr_mapped(addr: Ipv4Addr) -> lb_common::Addr {
    v4_mapped(u32::from_ne_bytes(addr.octets()))
}

/// The IPv4 address of a v4-mapped map address (its last four bytes).
pub fn addr_v4(addr: &lb_common::Addr) -> Ipv4Addr {
    Ipv4Addr::from(addr[3].to_ne_bytes())
}

/// The persistence mask of a service of `vip`'s family whose client granularity is
/// `prefix_len` leading bits of the address (at most 32 for IPv4, 128 for IPv6). An IPv4 mask
/// is all ones but for its last four bytes (the dotted mask), so a client's `::ffff:` prefix
/// survives the masking; an IPv6 mask is the prefix itself. The two overlap (an IPv6 /112 is
/// an IPv4 /16), so reading one back needs the service's family.
pub fn persist_mask(vip: IpAddr, prefix_len: u8) -> lb_common::Addr {
    match vip {
        IpAddr::V4(_) => {
            let mask = crate::config::Persistence::v4_netmask(prefix_len);
            [
                u32::MAX,
                u32::MAX,
                u32::MAX,
                u32::from_ne_bytes(mask.octets()),
            ]
        }
        IpAddr::V6(_) => {
            let len = u32::from(prefix_len.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            words(mask.to_be_bytes())
        }
    }
}

/// The prefix length of a service's persistence mask, `vip` giving the family: the leading
/// ones of the last four bytes for IPv4, of all sixteen for IPv6.
pub fn persist_prefix_len(vip: IpAddr, mask: &lb_common::Addr) -> u8 {
    match vip {
        IpAddr::V4(_) => u32::from(addr_v4(mask)).leading_ones() as u8,
        IpAddr::V6(_) => u128::from_be_bytes(bytes(mask)).leading_ones() as u8,
    }
}

/// The mask of `prefix_len` leading bits as an address of `vip`'s family (`255.255.255.0`,
/// `ffff:ffff:ffff:ffff::`).
pub fn mask_of(vip: IpAddr, prefix_len: u8) -> IpAddr {
    match vip {
        IpAddr::V4(_) => IpAddr::V4(crate::config::Persistence::v4_netmask(prefix_len)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bytes(&persist_mask(vip, prefix_len)))),
    }
}

/// A service's persistence mask as ipvsadm shows it: the dotted mask for IPv4
/// (`255.255.255.0`), the prefix length for IPv6 (`64`).
pub fn describe_mask(vip: IpAddr, mask: &lb_common::Addr) -> String {
    match vip {
        IpAddr::V4(_) => addr_v4(mask).to_string(),
        IpAddr::V6(_) => persist_prefix_len(vip, mask).to_string(),
    }
}

/// `192.168.58.133:80` or `[fd00:58::133]:80`, as ipvsadm writes an address and port.
pub fn host_port(addr: IpAddr, port: u16) -> String {
    SocketAddr::new(addr, port).to_string()
}

fn words(b: [u8; 16]) -> lb_common::Addr {
    let w = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

fn bytes(addr: &lb_common::Addr) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (chunk, w) in out.chunks_exact_mut(4).zip(addr) {
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    out
}

/// `TCP 192.168.58.133:80` or `TCP [fd00:58::133]:80`, as ipvsadm writes a service.
pub fn describe_key(k: &ServiceKey) -> String {
    let proto = Protocol::from_number(k.proto).map_or("?", |p| p.as_str());
    format!(
        "{} {}",
        proto.to_uppercase(),
        host_port(addr_ip(&k.addr), u16::from_be(k.port))
    )
}

/// A service entry's name (NUL-padded in the map).
pub fn service_name(s: &Service) -> String {
    let end = s.name.iter().position(|&b| b == 0).unwrap_or(s.name.len());
    String::from_utf8_lossy(&s.name[..end]).into_owned()
}

/// A name as the map stores it: NUL-padded, cut at [`limits::NAME_LEN`] bytes.
pub fn name_bytes(name: &str) -> [u8; limits::NAME_LEN] {
    let mut out = [0u8; limits::NAME_LEN];
    let n = name.len().min(limits::NAME_LEN);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// The scheduler a service entry was written with; `None` for a number this version does not
/// know.
pub fn scheduler_of(s: &Service) -> Option<Scheduler> {
    Some(match Sched::from_u8(s.sched)? {
        Sched::Rr => Scheduler::Rr,
        Sched::Wrr => Scheduler::Wrr,
        Sched::Sh => Scheduler::Sh,
        Sched::Mh => Scheduler::Mh,
        Sched::Lc => Scheduler::Lc,
        Sched::Wlc => Scheduler::Wlc,
    })
}

/// The `Service::sched` and `Service::pick` bytes of a scheduler.
pub fn sched_id(s: Scheduler) -> (u8, u8) {
    let sched = match s {
        Scheduler::Rr => Sched::Rr,
        Scheduler::Wrr => Sched::Wrr,
        Scheduler::Sh => Sched::Sh,
        Scheduler::Mh => Sched::Mh,
        Scheduler::Lc => Sched::Lc,
        Scheduler::Wlc => Sched::Wlc,
    };
    (sched as u8, sched.pick() as u8)
}

/// `50s mask 255.255.255.0` (IPv4), `50s mask 64` (IPv6), or `off`.
pub fn describe_persistence(vip: IpAddr, timeout_s: u32, mask: &lb_common::Addr) -> String {
    if timeout_s == 0 {
        return "off".to_string();
    }
    format!("{timeout_s}s mask {}", describe_mask(vip, mask))
}

/// `192.168.58.135:80` or `[fd00:58::135]:80`.
pub fn describe_backend(b: &Backend) -> String {
    host_port(addr_ip(&b.addr), u16::from_be(b.port))
}

/// How a backend entry forwards, as the file writes it: `route`, `ipip from SOURCE`, `gue PORT
/// from SOURCE` (`without a source` when it has none); a byte no `lb-ctl` writes as `forward N`.
pub fn describe_forward(b: &Backend) -> String {
    let from = match b.tunnel_src {
        [0, 0, 0, 0] => " without a source".to_string(),
        src => format!(" from {}", addr_ip(&src)),
    };
    match Forward::from_u8(b.forward) {
        Some(Forward::Route) => "route".to_string(),
        Some(Forward::Ipip) => format!("ipip{from}"),
        Some(Forward::Gue) => format!("gue {}{from}", u16::from_be(b.tunnel_port)),
        None => format!("forward {}", b.forward),
    }
}

/// The data path's method for a configured one.
pub fn forward_of(f: &Forwarding) -> Forward {
    match f.tunnel().map(|t| t.kind) {
        None => Forward::Route,
        Some(TunnelKind::Ipip) => Forward::Ipip,
        Some(TunnelKind::Gue) => Forward::Gue,
    }
}

/// `02:00:00:00:00:01`: six lower-case hex pairs separated by colons.
pub fn format_mac(mac: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

/// Parses six two-digit hex pairs separated by `:` (or all by `-`), in either case.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let sep = if text.contains('-') { '-' } else { ':' };
    let mut mac = [0u8; 6];
    let mut parts = text.split(sep);
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse_mac() {
        let mac = [0x02, 0, 0, 0, 0, 0x01];
        assert_eq!(format_mac(&mac), "02:00:00:00:00:01");
        assert_eq!(
            format_mac(&[0xde, 0xad, 0xbe, 0xef, 0x0a, 0xff]),
            "de:ad:be:ef:0a:ff"
        );
        assert_eq!(parse_mac("02:00:00:00:00:01"), Some(mac));
        assert_eq!(
            parse_mac("DE:AD:be:ef:0A:ff"),
            Some([0xde, 0xad, 0xbe, 0xef, 0x0a, 0xff])
        );
        assert_eq!(parse_mac("02-00-00-00-00-01"), Some(mac));
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "02:00:00:00:00:1",
            "02:00:00:00:00:001",
            "02:00:00:00:00:0g",
            "02:00-00:00:00:01",
            "02:00:00:00:00:01:",
            " 02:00:00:00:00:01",
            "+2:00:00:00:00:01",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
        let round = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc];
        assert_eq!(parse_mac(&format_mac(&round)), Some(round));
    }

    #[test]
    fn addresses_both_ways() {
        let v4: IpAddr = "192.168.58.133".parse().expect("v4");
        let v6: IpAddr = "fd00:58::133".parse().expect("v6");
        let mapped = addr_of(v4);
        assert_eq!(mapped, addr_mapped("192.168.58.133".parse().expect("v4")));
        assert_eq!(
            bytes(&mapped)[..12],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
        );
        assert_eq!(addr_ip(&mapped), v4);
        let a6 = addr_of(v6);
        assert_eq!(
            bytes(&a6),
            [0xfd, 0, 0, 0x58, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x33]
        );
        assert_eq!(addr_ip(&a6), v6);
        assert_eq!(host_port(v4, 80), "192.168.58.133:80");
        assert_eq!(host_port(v6, 80), "[fd00:58::133]:80");
    }

    #[test]
    fn persistence_masks_both_ways() {
        let v4: IpAddr = "10.0.0.1".parse().expect("v4");
        let v6: IpAddr = "fd00::1".parse().expect("v6");
        for len in [0u8, 1, 8, 24, 31, 32] {
            let m = persist_mask(v4, len);
            assert_eq!(&m[..3], &[u32::MAX; 3], "/{len}");
            assert_eq!(persist_prefix_len(v4, &m), len);
            assert_eq!(describe_mask(v4, &m), mask_of(v4, len).to_string());
        }
        assert_eq!(describe_mask(v4, &persist_mask(v4, 24)), "255.255.255.0");
        for len in [0u8, 1, 48, 64, 96, 112, 127, 128] {
            let m = persist_mask(v6, len);
            assert_eq!(persist_prefix_len(v6, &m), len);
            assert_eq!(describe_mask(v6, &m), len.to_string());
        }
        assert_eq!(persist_mask(v6, 64), [u32::MAX, u32::MAX, 0, 0]);
        assert_eq!(
            mask_of(v6, 64).to_string(),
            "ffff:ffff:ffff:ffff::",
            "the /64 mask as an address"
        );
        assert_eq!(
            describe_persistence(v6, 50, &persist_mask(v6, 48)),
            "50s mask 48"
        );
    }
}
