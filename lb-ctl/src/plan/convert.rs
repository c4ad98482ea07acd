//! Conversions between the service file's values and the data path's map types
//! (`lb_common`): keys, addresses, names, schedulers, and how each is written for people.
//! Pure functions: no map is touched here.

use std::net::Ipv4Addr;

use lb_common::{Backend, Sched, Service, ServiceKey, limits, v4_mapped};

use crate::config::{Protocol, Scheduler, ServiceConfig};

/// The key of a configured service.
pub fn service_key(s: &ServiceConfig) -> ServiceKey {
    ServiceKey {
        addr: addr_mapped(s.vip),
        port: s.port.to_be(),
        proto: s.protocol.number(),
        _pad: 0,
    }
}

/// The v4-mapped map address of an IPv4 address.
pub fn addr_mapped(addr: Ipv4Addr) -> lb_common::Addr {
    v4_mapped(u32::from_ne_bytes(addr.octets()))
}

/// The IPv4 address of a v4-mapped map address.
pub fn addr_v4(addr: &lb_common::Addr) -> Ipv4Addr {
    Ipv4Addr::from(addr[3].to_ne_bytes())
}

/// `TCP 192.168.58.133:80`, as ipvsadm writes a service.
pub fn describe_key(k: &ServiceKey) -> String {
    let proto = Protocol::from_number(k.proto).map_or("?", |p| p.as_str());
    format!(
        "{} {}:{}",
        proto.to_uppercase(),
        addr_v4(&k.addr),
        u16::from_be(k.port)
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

/// `50s mask 255.255.255.0`, or `off`.
pub fn describe_persistence(timeout_s: u32, mask: &lb_common::Addr) -> String {
    if timeout_s == 0 {
        return "off".to_string();
    }
    format!("{timeout_s}s mask {}", addr_v4(mask))
}

/// `192.168.58.135:80`.
pub fn describe_backend(b: &Backend) -> String {
    format!("{}:{}", addr_v4(&b.addr), u16::from_be(b.port))
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
}
