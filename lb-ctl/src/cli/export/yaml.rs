//! The service file the maps hold now, in the style of the README's examples, for `lb-ctl
//! apply` (on this director after a loss of the file, or on another). What is written is
//! what the maps hold: each service's VIP, port, protocol, scheduler, Maglev table size and
//! persistence, and its backends with their weights and forwarding (route, or a tunnel's
//! type and GUE port), and the `flood:` budget when one is set. The maps hold no health check, sorry server, quorum, notify script,
//! `vrrp:`, `sync:` or `announce:`; the header comment says so.
//!
//! What the maps show as they are now, not as a file wrote them: a backend held down by
//! health checks is written (it is configured) with a comment; a backend failed with
//! `inhibit_on_failure` has weight 0; a sorry server in use is a backend; a tunnel's outer
//! source is the route's or the file's (the maps do not say which), so it is a comment and
//! the exported file takes the route's.

use std::fmt::Write as _;
use std::net::IpAddr;

use lb_common::Forward;

use crate::config::{DEFAULT_GUE_PORT, DEFAULT_TABLE_SIZE};
use crate::maps::view::{BackendView, ServiceView, Snapshot};

/// The header comment of every export.
pub const HEADER: &str = "\
# Exported by `lb-ctl export --yaml` from what the data path's maps hold now: services
# (VIP, port, protocol, scheduler, table size, persistence) and backends (address, weight,
# route or tunnel), and the flood: budget when one is set. The maps do not hold health checks (check:), sorry_server, quorum,
# hysteresis, inhibit_on_failure, notify_up/notify_down, vrrp:, sync: or announce:, so none
# is written here: add them from the file `lb-ctl run` was given. Weights are the current
# ones: a backend failed with inhibit_on_failure shows 0, and a sorry server in use is listed
# as a backend.
";

/// The service file of `snap`, services in the order of the maps' listing.
pub fn service_file(snap: &Snapshot) -> String {
    let mut out = String::from(HEADER);
    if snap.services.is_empty() {
        out.push_str("services: []\n");
    } else {
        out.push_str("services:\n");
        for s in &snap.services {
            service(&mut out, s);
        }
    }
    if snap.new_flows_per_cpu > 0 {
        out.push_str("flood:\n");
        let _ = writeln!(out, "  new_flows_per_cpu: {}", snap.new_flows_per_cpu);
    }
    out
}

/// How a backend is reached, as the file writes it: `None` for direct routing, else the
/// tunnel's type and (GUE) port.
fn tunnel_of(b: &BackendView) -> Option<(&'static str, Option<u16>)> {
    match b.forward {
        Some(Forward::Ipip) => Some(("ipip", None)),
        Some(Forward::Gue) => Some(("gue", Some(b.tunnel_port.unwrap_or(DEFAULT_GUE_PORT)))),
        _ => None,
    }
}

fn tunnel_block(kind: &str, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("{{type: {kind}, port: {p}}}"),
        None => format!("{{type: {kind}}}"),
    }
}

fn service(out: &mut String, s: &ServiceView) {
    let _ = writeln!(out, "  - name: {}", scalar(&s.name));
    let _ = writeln!(out, "    vip: {}", address(s.vip));
    let _ = writeln!(out, "    port: {}", s.port);
    let _ = writeln!(out, "    protocol: {}", s.protocol);
    let _ = writeln!(out, "    scheduler: {}", s.scheduler);
    if matches!(s.scheduler, "sh" | "mh") {
        match s.table_len {
            0 => out.push_str(
                "    # table_size: not known while no backend is usable (the default is 65537)\n",
            ),
            DEFAULT_TABLE_SIZE => {}
            n => {
                let _ = writeln!(out, "    table_size: {n}");
            }
        }
    }
    if s.persistence_timeout > 0 {
        out.push_str("    persistence:\n");
        let _ = writeln!(out, "      timeout: {}s", s.persistence_timeout);
        let whole = if s.vip.is_ipv4() { 32 } else { 128 };
        if s.persistence_prefix_len != whole {
            match s.vip {
                IpAddr::V4(_) => {
                    let _ = writeln!(out, "      netmask: {}", s.persistence_netmask);
                }
                IpAddr::V6(_) => {
                    let _ = writeln!(out, "      netmask: {}", s.persistence_prefix_len);
                }
            }
        }
    }
    // One forwarding for every backend: the service's; else each tunnel backend its own.
    let shared = match s.backends.split_first() {
        Some((first, rest)) if rest.iter().all(|b| tunnel_of(b) == tunnel_of(first)) => {
            tunnel_of(first)
        }
        _ => None,
    };
    if let Some((kind, port)) = shared {
        out.push_str("    forward: tunnel\n");
        let _ = writeln!(out, "    tunnel: {}", tunnel_block(kind, port));
    }
    if s.backends.is_empty() {
        out.push_str("    backends: []\n");
        return;
    }
    out.push_str("    backends:\n");
    for b in &s.backends {
        let mut notes = Vec::new();
        if b.down {
            notes.push("held down by health checks now".to_string());
        }
        if let Some(src) = b.tunnel_source {
            notes.push(format!(
                "outer source now {src} (the route's or the file's)"
            ));
        }
        if b.forward.is_none() {
            notes.push("a forwarding method this version does not know".to_string());
        }
        let _ = write!(out, "      - address: {}", address(b.address));
        if !notes.is_empty() {
            let _ = write!(out, "   # {}", notes.join("; "));
        }
        out.push('\n');
        let _ = writeln!(out, "        weight: {}", b.weight);
        if shared.is_none()
            && let Some((kind, port)) = tunnel_of(b)
        {
            out.push_str("        forward: tunnel\n");
            let _ = writeln!(out, "        tunnel: {}", tunnel_block(kind, port));
        }
    }
}

/// IPv6 quoted, as the README writes it (`"fd00:58::133"`); IPv4 bare.
fn address(a: IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"{v6}\""),
    }
}

/// A name bare when YAML reads it back as that string (`web`), else double-quoted with
/// escapes (`"1e3"`, `"true"`, `"a \"b\""`).
fn scalar(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !matches!(
            name.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "nan" | "inf"
        );
    if plain {
        return name.to_string();
    }
    let mut q = String::from("\"");
    for c in name.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04x}", u32::from(c));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}
