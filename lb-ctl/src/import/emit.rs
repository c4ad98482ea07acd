//! The imported model written as a service file, in the README's style, with a comment
//! above each part saying where in keepalived.conf it came from.

use std::fmt::Write as _;

use super::model::{Check, Model, Service, Vrrp};

/// `s` as a YAML scalar: plain when it is a simple word or an IPv4 address, double-quoted
/// (JSON escapes, which YAML's double quotes accept) otherwise.
pub fn scalar(s: &str) -> String {
    let plain_word = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain_word || s.parse::<std::net::Ipv4Addr>().is_ok() {
        return s.to_string();
    }
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

fn list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| scalar(s)).collect();
    format!("[{}]", inner.join(", "))
}

/// Writes `key: value` at `indent` when there is a value.
fn opt<T: std::fmt::Display>(out: &mut String, indent: &str, key: &str, v: &Option<T>) {
    if let Some(v) = v {
        let _ = writeln!(out, "{indent}{key}: {v}");
    }
}

fn opt_str(out: &mut String, indent: &str, key: &str, v: &Option<String>) {
    opt(out, indent, key, &v.as_deref().map(scalar));
}

/// The whole service file; `source` names the imported file in its first line.
pub fn yaml(m: &Model, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Imported from {source} by `lb-ctl import`.");
    if !m.scripts.is_empty() {
        out.push_str("vrrp_scripts:\n");
        for s in &m.scripts {
            let _ = writeln!(out, "  # vrrp_script {} (line {})", s.name, s.line);
            let _ = writeln!(out, "  - name: {}", scalar(&s.name));
            opt_str(&mut out, "    ", "script", &s.script);
            opt(&mut out, "    ", "interval", &s.interval);
            opt(&mut out, "    ", "timeout", &s.timeout);
            opt(&mut out, "    ", "weight", &s.weight);
            opt(&mut out, "    ", "rise", &s.rise);
            opt(&mut out, "    ", "fall", &s.fall);
        }
    }
    if !m.vrrp.is_empty() {
        out.push_str("vrrp:\n");
        for v in &m.vrrp {
            vrrp(&mut out, v);
        }
    }
    if !m.groups.is_empty() {
        out.push_str("vrrp_sync_groups:\n");
        for g in &m.groups {
            let _ = writeln!(out, "  # vrrp_sync_group {} (line {})", g.name, g.line);
            let _ = writeln!(out, "  - name: {}", scalar(&g.name));
            let _ = writeln!(out, "    instances: {}", list(&g.instances));
        }
    }
    if m.services.is_empty() {
        // The file needs the list, even empty (VRRP only).
        out.push_str("services: []\n");
    } else {
        out.push_str("services:\n");
    }
    for s in &m.services {
        service(&mut out, s);
    }
    out
}

fn tracks(items: &[(String, Option<i32>)]) -> String {
    let inner: Vec<String> = items
        .iter()
        .map(|(n, w)| match w {
            Some(w) => format!("{{name: {}, weight: {w}}}", scalar(n)),
            None => scalar(n),
        })
        .collect();
    format!("[{}]", inner.join(", "))
}

fn vrrp(out: &mut String, v: &Vrrp) {
    let _ = writeln!(out, "  # {}", v.from);
    for n in &v.notes {
        let _ = writeln!(out, "  # {n}");
    }
    let i = "    ";
    let _ = writeln!(out, "  - name: {}", scalar(&v.name));
    opt_str(out, i, "interface", &v.interface);
    opt(out, i, "virtual_router_id", &v.virtual_router_id);
    opt(out, i, "priority", &v.priority);
    opt(out, i, "advert_interval", &v.advert_interval);
    opt(out, i, "version", &v.version);
    let _ = writeln!(out, "{i}virtual_addresses: {}", list(&v.virtual_addresses));
    opt(out, i, "preempt", &v.preempt);
    opt(out, i, "preempt_delay", &v.preempt_delay);
    opt_str(out, i, "auth_pass", &v.auth_pass);
    if !v.unicast_peers.is_empty() {
        let _ = writeln!(out, "{i}unicast_peers: {}", list(&v.unicast_peers));
    }
    opt(out, i, "garp_count", &v.garp_count);
    opt(out, i, "garp_delay", &v.garp_delay);
    opt(out, i, "garp_master_refresh", &v.garp_master_refresh);
    opt(
        out,
        i,
        "garp_master_refresh_repeat",
        &v.garp_master_refresh_repeat,
    );
    opt_str(out, i, "notify_master", &v.notify_master);
    opt_str(out, i, "notify_backup", &v.notify_backup);
    opt_str(out, i, "notify_fault", &v.notify_fault);
    if !v.track_script.is_empty() {
        let _ = writeln!(out, "{i}track_script: {}", tracks(&v.track_script));
    }
    if !v.track_interface.is_empty() {
        let _ = writeln!(out, "{i}track_interface: {}", tracks(&v.track_interface));
    }
}

fn service(out: &mut String, s: &Service) {
    let _ = writeln!(out, "  # {}", s.from);
    for n in &s.notes {
        let _ = writeln!(out, "  # {n}");
    }
    let i = "    ";
    let _ = writeln!(out, "  - name: {}", scalar(&s.name));
    let _ = writeln!(out, "{i}vip: {}", scalar(&s.vip));
    let _ = writeln!(out, "{i}port: {}", s.port);
    let _ = writeln!(out, "{i}protocol: {}", s.protocol);
    opt(out, i, "scheduler", &s.scheduler);
    if let Some((timeout, mask)) = &s.persistence {
        let _ = writeln!(out, "{i}persistence:\n{i}  timeout: {timeout}");
        opt_str(out, &format!("{i}  "), "netmask", mask);
    }
    if let Some((kind, port)) = s.tunnel {
        let _ = writeln!(out, "{i}forward: tunnel");
        match port {
            Some(p) => {
                let _ = writeln!(out, "{i}tunnel: {{type: {kind}, port: {p}}}");
            }
            None => {
                let _ = writeln!(out, "{i}tunnel: {{type: {kind}}}");
            }
        }
    }
    opt_str(out, i, "sorry_server", &s.sorry_server);
    opt(out, i, "quorum", &s.quorum);
    opt(out, i, "hysteresis", &s.hysteresis);
    if s.inhibit_on_failure {
        let _ = writeln!(out, "{i}inhibit_on_failure: true");
    }
    opt_str(out, i, "notify_up", &s.notify_up);
    opt_str(out, i, "notify_down", &s.notify_down);
    if s.backends.is_empty() {
        let _ = writeln!(out, "{i}backends: []");
        return;
    }
    let _ = writeln!(out, "{i}backends:");
    for b in &s.backends {
        let _ = writeln!(
            out,
            "{i}  - address: {}   # real_server, line {}",
            scalar(&b.address),
            b.line
        );
        opt(out, &format!("{i}    "), "weight", &b.weight);
        if let Some(c) = &b.check {
            check(out, &format!("{i}    "), c);
        }
    }
}

fn check(out: &mut String, i: &str, c: &Check) {
    let _ = writeln!(out, "{i}check:");
    let i = format!("{i}  ");
    let i = i.as_str();
    let _ = writeln!(out, "{i}type: {}", c.kind);
    opt_str(out, i, "path", &c.path);
    if !c.status.is_empty() {
        let codes: Vec<String> = c.status.iter().map(u16::to_string).collect();
        let _ = writeln!(out, "{i}status: [{}]", codes.join(", "));
    }
    opt_str(out, i, "digest", &c.digest);
    opt_str(out, i, "host", &c.host);
    opt(out, i, "port", &c.port);
    opt_str(out, i, "command", &c.command);
    opt(out, i, "interval", &c.interval);
    opt(out, i, "timeout", &c.timeout);
    opt(out, i, "retries", &c.retries);
    opt(out, i, "retry_delay", &c.retry_delay);
    opt(out, i, "warmup", &c.warmup);
    if c.alpha {
        let _ = writeln!(out, "{i}alpha: true");
    }
}

#[cfg(test)]
mod tests {
    use super::scalar;

    #[test]
    fn scalars_are_quoted_when_yaml_would_read_them_otherwise() {
        assert_eq!(scalar("eth0"), "eth0");
        assert_eq!(scalar("192.168.58.133"), "192.168.58.133");
        assert_eq!(scalar("/usr/local/bin/up.sh"), "/usr/local/bin/up.sh");
        assert_eq!(scalar("1111"), "\"1111\"");
        assert_eq!(scalar("yes"), "\"yes\"");
        assert_eq!(scalar("fd00::1"), "\"fd00::1\"");
        assert_eq!(scalar("killall -0 \"sshd\""), "\"killall -0 \\\"sshd\\\"\"");
    }
}
