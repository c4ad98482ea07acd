//! The check that no backend (or sorry server) is the director itself: an address of one of the
//! attached interfaces (IPv4 or IPv6), or the broadcast address of one of their IPv4 subnets. Such a file is an
//! error that applies nothing; `apply` and the daemon run this before any write.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, Result, anyhow};

use crate::config::{Config, ConfigError, Diagnostic};
use crate::net::{addr, link};

/// An IPv4 or IPv6 address of an attached interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnAddress {
    pub iface: String,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl OwnAddress {
    /// The broadcast address of its IPv4 subnet; none for /31 and /32, which have none, and
    /// for IPv6, which has no broadcast.
    pub fn broadcast(&self) -> Option<IpAddr> {
        let IpAddr::V4(addr) = self.addr else {
            return None;
        };
        if self.prefix_len >= 31 {
            return None;
        }
        let host_bits = u32::MAX >> self.prefix_len;
        Some(IpAddr::V4(Ipv4Addr::from(u32::from(addr) | host_bits)))
    }
}

/// The IPv4 and IPv6 addresses of the interfaces `ifindexes` (in the calling thread's namespace).
pub fn of_interfaces(ifindexes: &[u32]) -> Result<Vec<OwnAddress>> {
    let mut out = Vec::new();
    for &i in ifindexes {
        let iface = link::name(i).unwrap_or_else(|_| format!("interface index {i}"));
        let addrs = addr::list_all(i)
            .with_context(|| format!("listing the addresses of {iface} to check the backends"))?;
        out.extend(addrs.into_iter().map(|(addr, prefix_len)| OwnAddress {
            iface: iface.clone(),
            addr,
            prefix_len,
        }));
    }
    Ok(out)
}

/// Every backend and sorry server of `config` that is one of `own` or the broadcast address
/// of its subnet, as diagnostics of `file` (line of the backend's entry, or of the service for
/// a sorry server).
pub fn conflicts(config: &Config, file: &str, own: &[OwnAddress]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, s) in config.services.iter().enumerate() {
        let mut targets: Vec<(IpAddr, usize, String)> = s
            .backends
            .iter()
            .enumerate()
            .map(|(j, b)| {
                let field = format!("services[{i}].backends[{j}].address");
                (b.address, b.line, field)
            })
            .collect();
        if let Some(sorry) = s.health.sorry_server {
            targets.push((sorry, s.line, format!("services[{i}].sorry_server")));
        }
        for (address, line, field) in targets {
            if let Some(why) = conflict(address, own) {
                out.push(Diagnostic {
                    file: file.to_string(),
                    line,
                    field,
                    message: why,
                });
            }
        }
    }
    out.sort_by_key(|d| d.line);
    out
}

fn conflict(address: IpAddr, own: &[OwnAddress]) -> Option<String> {
    const WHAT: &str = "a backend must be a real server's own unicast address on the link";
    if let Some(o) = own.iter().find(|o| o.addr == address) {
        return Some(format!(
            "{address} is an address of this director ({}/{} on {}); {WHAT}, not the director \
             itself",
            o.addr, o.prefix_len, o.iface
        ));
    }
    own.iter().find_map(|o| match (o.addr, o.broadcast()) {
        (IpAddr::V4(a), Some(b)) if b == address => Some(format!(
            "{address} is the broadcast address of the director's subnet {}/{} on {}; {WHAT}",
            Ipv4Addr::from(u32::from(a) & !(u32::MAX >> o.prefix_len)),
            o.prefix_len,
            o.iface
        )),
        _ => None,
    })
}

/// Refuses `config` (read from `file`) when a backend or sorry server is the director itself
/// (see [`conflicts`]) on the attached interfaces `ifindexes`. The error is the
/// [`ConfigError`]'s text: file:line: field: why, and "nothing was applied".
pub fn check(config: &Config, file: &str, ifindexes: &[u32]) -> Result<()> {
    let own = of_interfaces(ifindexes)?;
    let diagnostics = conflicts(config, file, &own);
    if diagnostics.is_empty() {
        return Ok(());
    }
    Err(anyhow!("{}", ConfigError { diagnostics }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn own() -> Vec<OwnAddress> {
        vec![
            OwnAddress {
                iface: "eth0".into(),
                addr: Ipv4Addr::new(192, 168, 58, 134).into(),
                prefix_len: 24,
            },
            OwnAddress {
                iface: "eth0".into(),
                addr: Ipv4Addr::new(10, 9, 0, 1).into(),
                prefix_len: 32,
            },
            OwnAddress {
                iface: "eth0".into(),
                addr: "fd00:58::134".parse().expect("address"),
                prefix_len: 64,
            },
        ]
    }

    #[test]
    fn director_address_and_broadcast_are_refused() {
        let text = "\
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    sorry_server: 192.168.58.255
    backends:
      - address: 192.168.58.135
      - address: 192.168.58.134
  - name: dns
    vip: 192.168.58.133
    port: 53
    backends:
      - address: 10.9.0.1
      - address: 192.168.58.255
";
        let config = parse(text, "s.yaml").unwrap_or_else(|e| panic!("{e}"));
        let d = conflicts(&config, "s.yaml", &own());
        let shown: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(d.len(), 4, "{shown:#?}");
        assert_eq!(
            shown[0],
            "s.yaml:2: services[0].sorry_server: 192.168.58.255 is the broadcast address of the \
             director's subnet 192.168.58.0/24 on eth0; a backend must be a real server's own \
             unicast address on the link"
        );
        assert_eq!(
            (d[1].line, d[1].field.as_str()),
            (8, "services[0].backends[1].address")
        );
        assert!(
            d[1].message.starts_with(
                "192.168.58.134 is an address of this director (192.168.58.134/24 on eth0)"
            ),
            "{}",
            d[1]
        );
        assert_eq!(
            (d[2].line, d[2].field.as_str()),
            (13, "services[1].backends[0].address")
        );
        assert_eq!(
            (d[3].line, d[3].field.as_str()),
            (14, "services[1].backends[1].address")
        );
        assert!(d[3].message.contains("broadcast address"), "{}", d[3]);
    }

    #[test]
    fn other_backends_pass() {
        let text = "services:\n  - {name: w, vip: 192.168.58.133, port: 80, backends: [{address: 192.168.58.135}, {address: 10.9.0.2}]}\n";
        let config = parse(text, "s.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(conflicts(&config, "s.yaml", &own()), vec![]);
        assert_eq!(own()[1].broadcast(), None);
        assert_eq!(
            own()[0].broadcast(),
            Some(Ipv4Addr::new(192, 168, 58, 255).into())
        );
        assert_eq!(own()[2].broadcast(), None);
    }

    /// An IPv6 backend that is the director's own IPv6 address is refused like an IPv4 one.
    #[test]
    fn the_directors_ipv6_address_is_refused() {
        let text = "services:\n  - name: web6\n    vip: fd00:58::133\n    port: 80\n    backends:\n      - address: fd00:58::135\n      - address: fd00:58::134\n";
        let config = parse(text, "s.yaml").unwrap_or_else(|e| panic!("{e}"));
        let d = conflicts(&config, "s.yaml", &own());
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0].to_string(),
            "s.yaml:7: services[0].backends[1].address: fd00:58::134 is an address of this \
             director (fd00:58::134/64 on eth0); a backend must be a real server's own unicast \
             address on the link, not the director itself"
        );
    }
}
