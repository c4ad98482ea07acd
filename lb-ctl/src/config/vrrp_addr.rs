//! The addresses of a VRRP instance: IPv4 or IPv6 (RFC 5798), one family per instance.
//!
//! - A virtual address is `addr` or `addr/len` (default /32 for IPv4, /128 for IPv6); IPv6
//!   ones must be unicast (not `::`, `::1`, multicast, or IPv4-mapped), link-local included
//!   (RFC 5798 lists the router's link-local address first; neither it nor keepalived
//!   requires it).
//! - [`family_of`]: the one family of an instance's addresses, or the message that names the
//!   first address of the other family and suggests two instances.

use std::net::IpAddr;

use super::fields::check_ip_in;
use super::shown::shown;

/// The family of an address, as the messages name it.
pub fn family_name(a: &IpAddr) -> &'static str {
    match a {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// A unicast address of either family that can be `role` (`a virtual address`, ...);
/// IPv6 link-local addresses included.
pub fn address(s: &str, role: &str) -> Result<IpAddr, String> {
    check_ip_in(s, role, true)
}

/// `addr` or `addr/len`: len 0..=32 (IPv4) or 0..=128 (IPv6), default the full length.
pub fn cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let a = address(addr, "a virtual address")?;
    let max = match a {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let len = match len.map(|l| l.parse::<u8>()) {
        None => max,
        Some(Ok(l)) if l <= max => l,
        Some(_) => {
            return Err(format!(
                "`{}`: the prefix length must be 0..={max}",
                shown(s)
            ));
        }
    };
    Ok((a, len))
}

/// The family of `addresses` (the first one's), or the index and message of the first
/// address of the other family.
pub fn family_of(addresses: &[IpAddr]) -> Result<Option<IpAddr>, (usize, String)> {
    let Some(first) = addresses.first() else {
        return Ok(None);
    };
    match (addresses.iter()).position(|a| a.is_ipv4() != first.is_ipv4()) {
        None => Ok(Some(*first)),
        Some(i) => Err((
            i,
            format!(
                "{} is {} but {first} is {}: an instance is one family (RFC 5798); put the {} \
                 addresses in a second instance (another name and virtual_router_id)",
                addresses[i],
                family_name(&addresses[i]),
                family_name(first),
                family_name(&addresses[i]),
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_both_families() {
        assert_eq!(
            cidr("fd00:58::133"),
            Ok(("fd00:58::133".parse().unwrap(), 128))
        );
        assert_eq!(
            cidr("fd00:58::133/64"),
            Ok(("fd00:58::133".parse().unwrap(), 64))
        );
        assert_eq!(cidr("fe80::1"), Ok(("fe80::1".parse().unwrap(), 128)));
        assert_eq!(
            cidr("192.168.58.133"),
            Ok(("192.168.58.133".parse().unwrap(), 32))
        );
        for (bad, says) in [
            ("fd00::1/129", "0..=128"),
            ("10.0.0.1/33", "0..=32"),
            ("ff02::12", "multicast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:10.0.0.1", "IPv4-mapped"),
            ("fd00::zz", "not a valid IPv4 or IPv6"),
            ("224.0.0.18", "multicast"),
        ] {
            let e = cidr(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn one_family_per_instance() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(family_of(&[]), Ok(None));
        assert_eq!(family_of(&[v6, v6]), Ok(Some(v6)));
        let (i, e) = family_of(&[v4, v4, v6]).unwrap_err();
        assert_eq!(i, 2);
        assert!(e.contains("fd00::1 is IPv6 but 10.0.0.1 is IPv4"), "{e}");
        assert!(e.contains("second instance"), "{e}");
    }
}
