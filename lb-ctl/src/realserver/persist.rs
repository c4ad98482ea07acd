//! `--persist`: the files that make a real server's settings survive a reboot, pure (their
//! paths below a root directory and their text).
//!
//! - `etc/sysctl.d/90-lb-realserver.conf`: the sysctls (systemd-sysctl and `sysctl --system`
//!   read it at boot).
//! - the VIPs on `lo`: with ifupdown (the host has `etc/network/interfaces`),
//!   `etc/network/interfaces.d/lb-realserver`, a `lo:lb` stanza whose `up` and `down` lines add
//!   and remove them (the main file must `source /etc/network/interfaces.d/*`, as Debian's does);
//!   otherwise systemd-networkd's `etc/systemd/network/90-lb-realserver-lo.network`.
//!
//! Decapsulation is not persisted: its pins live on a bpf filesystem, which a reboot empties;
//! a tunnel real server runs `lb-ctl realserver up --tunnel ...` at boot.

use std::path::{Path, PathBuf};

use super::plan::{LO, Want, dotted};

/// The first line of every file written, which `down --persist` looks for before it removes
/// one.
pub const HEADER: &str =
    "# Written by `lb-ctl realserver up --persist`; `lb-ctl realserver down --persist` removes it.";

pub const SYSCTL_FILE: &str = "etc/sysctl.d/90-lb-realserver.conf";
pub const NETWORKD_FILE: &str = "etc/systemd/network/90-lb-realserver-lo.network";
pub const IFUPDOWN_FILE: &str = "etc/network/interfaces.d/lb-realserver";
/// Present on hosts that use ifupdown.
pub const IFUPDOWN_MAIN: &str = "etc/network/interfaces";

/// Every file `--persist` may write, below `root`.
pub fn all_paths(root: &Path) -> [PathBuf; 3] {
    [SYSCTL_FILE, NETWORKD_FILE, IFUPDOWN_FILE].map(|p| root.join(p))
}

/// The files for `wants`, below `root`; `ifupdown` picks the ifupdown snippet for the VIPs
/// instead of networkd's.
pub fn files(root: &Path, wants: &[Want], ifupdown: bool) -> Vec<(PathBuf, String)> {
    let mut sysctl = format!("{HEADER}\n");
    let mut addrs = Vec::new();
    for w in wants {
        match w {
            Want::Sysctl { key, value, .. } => sysctl += &format!("{} = {value}\n", dotted(key)),
            Want::Addr { addr, prefix } => addrs.push((*addr, *prefix)),
            Want::Decap { .. } => {}
        }
    }
    let mut out = vec![(root.join(SYSCTL_FILE), sysctl)];
    if addrs.is_empty() {
        return out;
    }
    let text = if ifupdown {
        let mut t = format!("{HEADER}\nauto {LO}:lb\niface {LO}:lb inet manual\n");
        for (a, p) in &addrs {
            let nodad = if a.is_ipv6() { " nodad" } else { "" };
            t += &format!("    up ip addr add {a}/{p} dev {LO}{nodad}\n");
        }
        for (a, p) in &addrs {
            t += &format!("    down ip addr del {a}/{p} dev {LO}\n");
        }
        t
    } else {
        let mut t = format!("{HEADER}\n[Match]\nName={LO}\n");
        for (a, p) in &addrs {
            t += &format!("\n[Address]\nAddress={a}/{p}\n");
            if a.is_ipv6() {
                t += "DuplicateAddressDetection=none\n";
            }
        }
        t
    };
    let path = if ifupdown {
        IFUPDOWN_FILE
    } else {
        NETWORKD_FILE
    };
    out.push((root.join(path), text));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realserver::plan::{Request, wanted};

    fn wants() -> Vec<Want> {
        wanted(&Request {
            vips: vec!["10.0.0.9".parse().unwrap(), "fd00::9".parse().unwrap()],
            ifaces: vec!["eth0".into()],
            tunnel: None,
        })
    }

    #[test]
    fn sysctl_d_and_networkd_files() {
        let f = files(Path::new("/r"), &wants(), false);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].0, Path::new("/r/etc/sysctl.d/90-lb-realserver.conf"));
        assert_eq!(
            f[0].1,
            format!(
                "{HEADER}
net.ipv4.conf.all.arp_ignore = 1
net.ipv4.conf.all.arp_announce = 2
net.ipv4.conf.eth0.arp_ignore = 1
net.ipv4.conf.eth0.arp_announce = 2
"
            )
        );
        assert_eq!(
            f[1].0,
            Path::new("/r/etc/systemd/network/90-lb-realserver-lo.network")
        );
        assert_eq!(
            f[1].1,
            format!(
                "{HEADER}
[Match]
Name=lo

[Address]
Address=10.0.0.9/32

[Address]
Address=fd00::9/128
DuplicateAddressDetection=none
"
            )
        );
    }

    #[test]
    fn ifupdown_snippet_when_the_host_uses_ifupdown() {
        let f = files(Path::new("/r"), &wants(), true);
        assert_eq!(
            f[1].0,
            Path::new("/r/etc/network/interfaces.d/lb-realserver")
        );
        assert_eq!(
            f[1].1,
            format!(
                "{HEADER}
auto lo:lb
iface lo:lb inet manual
    up ip addr add 10.0.0.9/32 dev lo
    up ip addr add fd00::9/128 dev lo nodad
    down ip addr del 10.0.0.9/32 dev lo
    down ip addr del fd00::9/128 dev lo
"
            )
        );
    }
}
