//! The running configuration as `ipvsadm -S -n` prints it, one rule a line:
//!
//! ```text
//! -A -t 192.168.58.133:80 -s rr -p 50 -M 255.255.255.0
//! -a -t 192.168.58.133:80 -r 192.168.58.135:80 -g -w 1
//! -A -u [fd00:58::133]:53 -s mh -b mh-port
//! -a -u [fd00:58::133]:53 -r [fd00:20::11]:53 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
//! ```
//!
//! As ipvsadm writes them: `-t`/`-u` and `VIP:port` (IPv6 in brackets, an all-ports service
//! as port 0); `-s` the scheduler; `-p` the persistence timeout in seconds, with `-M` the
//! client granularity when it is not a whole address (a dotted mask for IPv4, a prefix
//! length for IPv6); one `-a` per real server with `-g` (direct routing) or `-i` (tunnel;
//! `--tun-type ipip`, or `--tun-type gue --tun-port N --tun-nocsum`, as the ipvsadm versions that know GUE
//! print them: the data path's GUE has no UDP checksum) and `-w` its weight. `mh` hashes the
//! whole 5-tuple here, the source port included, which IPVS's `mh` does with its `mh-port`
//! flag: hence `-b mh-port`. `sh` hashes the client address alone, as IPVS's plain `sh`.
//!
//! Order: ipvsadm sorts services by family (IPv4 first), protocol (TCP first), address and
//! port, and each service's real servers by address and port; so does this.
//!
//! A backend held down by health checks is not written: IPVS would not have it (keepalived
//! removes it). One whose weight is 0 (drained, or failed with `inhibit_on_failure`) is
//! written with `-w 0`, as IPVS keeps it. A sorry server in use is an ordinary backend in the
//! maps, as in IPVS.

use std::fmt::Write as _;
use std::net::IpAddr;

use lb_common::Forward;

use crate::maps::view::{BackendView, ServiceView, Snapshot};
use crate::plan::convert::host_port;

/// `ipvsadm -S -n` text and what `ipvsadm -R` would not take as it is.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// The rules, one a line, each ending in a newline.
    pub text: String,
    /// One line each: a rule IPVS refuses or reads differently (for standard error).
    pub warnings: Vec<String>,
}

/// The rules of every service and backend of `snap`.
pub fn rules(snap: &Snapshot) -> Rules {
    let mut out = Rules::default();
    let mut services: Vec<&ServiceView> = snap.services.iter().collect();
    services.sort_by_key(|s| (s.vip.is_ipv6(), s.protocol, s.vip, s.port));
    for s in services {
        let Some(proto) = proto_flag(s.protocol) else {
            out.warnings.push(format!(
                "service {}: protocol {:?} has no ipvsadm flag; left out",
                s.name, s.protocol
            ));
            continue;
        };
        let svc = format!("{proto} {}", host_port(s.vip, s.port));
        let _ = write!(out.text, "-A {svc} -s {}", s.scheduler);
        if s.scheduler == "mh" {
            out.text.push_str(" -b mh-port");
        }
        if s.persistence_timeout > 0 {
            let _ = write!(out.text, " -p {}", s.persistence_timeout);
            if let Some(mask) = netmask(s) {
                let _ = write!(out.text, " -M {mask}");
            }
        } else if s.port == 0 {
            out.warnings.push(format!(
                "service {} ({svc}): an all-ports service without persistence; ipvsadm -R \
                 refuses it (\"Zero port specified for non-persistent service\"): add -p to \
                 its -A line",
                s.name
            ));
        }
        out.text.push('\n');
        let mut backends: Vec<&BackendView> = s.backends.iter().filter(|b| !b.down).collect();
        backends.sort_by_key(|b| (b.address, b.port));
        for b in backends {
            let _ = writeln!(
                out.text,
                "-a {svc} -r {} {} -w {}{}",
                host_port(b.address, b.port),
                forward_flag(b),
                b.weight,
                tunnel_options(b)
            );
        }
    }
    out
}

fn proto_flag(protocol: &str) -> Option<&'static str> {
    match protocol {
        "tcp" => Some("-t"),
        "udp" => Some("-u"),
        _ => None,
    }
}

/// `-M`'s value when the granularity is not a whole address: `255.255.255.0`, or `64`.
fn netmask(s: &ServiceView) -> Option<String> {
    let whole = if s.vip.is_ipv4() { 32 } else { 128 };
    if s.persistence_prefix_len == whole {
        return None;
    }
    Some(match s.vip {
        IpAddr::V4(_) => s.persistence_netmask.to_string(),
        IpAddr::V6(_) => s.persistence_prefix_len.to_string(),
    })
}

fn forward_flag(b: &BackendView) -> &'static str {
    match b.forward {
        Some(Forward::Ipip) | Some(Forward::Gue) => "-i",
        _ => "-g",
    }
}

fn tunnel_options(b: &BackendView) -> String {
    match b.forward {
        Some(Forward::Ipip) => " --tun-type ipip".to_string(),
        Some(Forward::Gue) => format!(
            " --tun-type gue --tun-port {} --tun-nocsum",
            b.tunnel_port.unwrap_or(crate::config::DEFAULT_GUE_PORT)
        ),
        _ => String::new(),
    }
}
