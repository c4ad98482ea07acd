//! Whether the director's interfaces forward, as tunnel backends need: the data path asks the
//! kernel's FIB for each tunnel packet's next hop (`bpf_fib_lookup`), and the kernel answers
//! only for an interface with `net.ipv4.conf.IFACE.forwarding=1` (IPv4 outer headers) or
//! `net.ipv6.conf.IFACE.forwarding=1` (IPv6 outer headers); elsewhere every tunnel packet
//! passes to the kernel (`pass_no_route`). Read, never changed: the sysctls are the user's.

use std::{fmt, fs, net::IpAddr, path::Path};

use anyhow::{Context as _, Result};
use serde::Serialize;

/// The outer families some tunnel backend needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    /// The families of tunnel backends' addresses (the outer header has the backend's family).
    pub fn of(tunnel_backends: impl IntoIterator<Item = IpAddr>) -> Families {
        let mut f = Families::default();
        for a in tunnel_backends {
            match a {
                IpAddr::V4(_) => f.v4 = true,
                IpAddr::V6(_) => f.v6 = true,
            }
        }
        f
    }

    /// Those of a config's tunnel backends.
    pub fn of_config(config: &crate::config::Config) -> Families {
        Families::of(
            (config.services.iter())
                .flat_map(|s| s.backends.iter())
                .filter(|b| b.forward.tunnel().is_some())
                .map(|b| b.address),
        )
    }
}

/// An interface that does not forward a family some tunnel backend needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Off {
    pub interface: String,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// The sysctl to set to 1, e.g. `net.ipv4.conf.eth0.forwarding`.
    pub sysctl: String,
}

impl fmt::Display for Off {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = if self.family == "ipv4" {
            "IPv4"
        } else {
            "IPv6"
        };
        write!(
            f,
            "{} does not forward {family} ({}=0): the kernel answers the data path's next-hop \
             lookups only for an interface that forwards, so every packet to an {family} tunnel \
             backend passes to the kernel (pass_no_route) instead; turn it on with `sysctl -w \
             {}=1`",
            self.interface, self.sysctl, self.sysctl
        )
    }
}

/// The sysctl name of `key` of `iface` (`net.ipv4.conf.eth0.forwarding`): a dot in the
/// interface's name (a VLAN, `eth0.100`) is written `/`, as sysctl(8) wants it.
fn sysctl_name(family: &str, iface: &str) -> String {
    format!("net.{family}.conf.{}.forwarding", iface.replace('.', "/"))
}

/// Whether `iface` forwards `family` (`ipv4`, `ipv6`), from /proc/sys of this thread's
/// network namespace.
pub fn enabled(family: &str, iface: &str) -> Result<bool> {
    let path = Path::new("/proc/sys/net")
        .join(family)
        .join("conf")
        .join(iface)
        .join("forwarding");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim() != "0")
}

/// The interfaces among `ifaces` that do not forward a family of `need`. An interface whose
/// setting cannot be read (gone, no IPv6) is reported as an error in the list's place.
pub fn off(ifaces: &[String], need: Families) -> Vec<Result<Off>> {
    let mut out = Vec::new();
    for iface in ifaces {
        for (family, needed) in [("ipv4", need.v4), ("ipv6", need.v6)] {
            if !needed {
                continue;
            }
            match enabled(family, iface) {
                Ok(true) => {}
                Ok(false) => out.push(Ok(Off {
                    interface: iface.clone(),
                    family,
                    sysctl: sysctl_name(family, iface),
                })),
                Err(e) => out.push(Err(e.context(format!(
                    "checking that {iface} forwards, as tunnel backends need"
                )))),
            }
        }
    }
    out
}

/// [`off`] as lines for people: one warning per interface and family.
pub fn warnings(ifaces: &[String], need: Families) -> Vec<String> {
    off(ifaces, need)
        .into_iter()
        .map(|r| match r {
            Ok(off) => off.to_string(),
            Err(e) => format!("{e:#}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{netns, testlab::Lab};

    #[test]
    fn families_and_sysctl_names() {
        let f = Families::of(["10.0.0.1".parse().expect("ip")]);
        assert_eq!(
            f,
            Families {
                v4: true,
                v6: false
            }
        );
        assert_eq!(
            sysctl_name("ipv4", "eth0.100"),
            "net.ipv4.conf.eth0/100.forwarding"
        );
    }

    #[test]
    fn an_interface_that_does_not_forward_is_reported_until_it_does() {
        let lab = Lab::new("f");
        let d = &lab.director;
        let ifaces = [Lab::DIRECTOR_DEV.to_string()];
        let both = Families { v4: true, v6: true };
        let set = |key: &str, v: &str| {
            let path = format!("/proc/sys/net/{key}");
            let v = v.to_string();
            netns::run_in(d, move || Ok(fs::write(&path, &v)?)).expect("sysctl");
        };
        let read = |need: Families| {
            let i = ifaces.to_vec();
            netns::run_in(d, move || Ok(warnings(&i, need))).expect("read")
        };
        let dev = Lab::DIRECTOR_DEV;
        set(&format!("ipv4/conf/{dev}/forwarding"), "0");
        set(&format!("ipv6/conf/{dev}/forwarding"), "0");
        let found = read(both);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found[0],
            format!(
                "{dev} does not forward IPv4 (net.ipv4.conf.{dev}.forwarding=0): the kernel \
                 answers the data path's next-hop lookups only for an interface that forwards, \
                 so every packet to an IPv4 tunnel backend passes to the kernel \
                 (pass_no_route) instead; turn it on with `sysctl -w \
                 net.ipv4.conf.{dev}.forwarding=1`"
            )
        );
        assert!(found[1].starts_with(&format!("{dev} does not forward IPv6")));
        // Only the families asked for.
        let v6 = Families {
            v4: false,
            v6: true,
        };
        let found = read(v6);
        assert_eq!(found.len(), 1, "{found:?}");
        set(&format!("ipv4/conf/{dev}/forwarding"), "1");
        set(&format!("ipv6/conf/{dev}/forwarding"), "1");
        let found = read(both);
        assert!(found.is_empty(), "{found:?}");
    }
}
