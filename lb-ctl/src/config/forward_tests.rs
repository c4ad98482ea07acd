//! `forward:` and `tunnel:` in the file: the values each backend gets, the per-backend
//! override, mixed families for tunnel backends only, and every mistake at its line and field.

use std::net::IpAddr;

use super::*;

const FILE: &str = "t.yaml";

fn ok(text: &str) -> Config {
    parse(text, FILE).unwrap_or_else(|e| panic!("rejected:\n{e}"))
}

/// Every diagnostic as `line field: message`.
fn errs(text: &str) -> Vec<String> {
    match parse(text, FILE) {
        Ok(config) => panic!("accepted: {config:#?}"),
        Err(err) => err
            .diagnostics
            .iter()
            .map(|d| format!("{} {}: {}", d.line, d.field, d.message))
            .collect(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a test address")
}

fn tunnel(kind: TunnelKind, port: u16, source: Option<&str>) -> Forwarding {
    Forwarding::Tunnel(Tunnel {
        kind,
        port,
        source: source.map(ip),
    })
}

#[test]
fn the_issue_example_tunnels_all_but_the_route_override() {
    let c = ok("\
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    forward: tunnel
    tunnel:
      type: ipip
      source: 192.168.58.134
    backends:
      - address: 10.20.0.11
      - address: 192.168.58.135
        forward: route
");
    let s = &c.services[0];
    let t = tunnel(TunnelKind::Ipip, 0, Some("192.168.58.134"));
    assert_eq!(s.forward, t);
    assert_eq!(s.backends[0].forward, t);
    assert_eq!(s.backends[1].forward, Forwarding::Route);
}

#[test]
fn defaults_route_then_ipip_without_source_then_gue_6080() {
    let c = ok("\
services:
  - name: plain
    vip: 10.0.0.1
    port: 80
    backends: [{address: 10.0.0.2}]
  - name: bare
    vip: 10.0.0.1
    port: 81
    forward: tunnel
    backends: [{address: 10.9.0.2}]
  - name: gue
    vip: 10.0.0.1
    port: 82
    forward: tunnel
    tunnel: {type: gue}
    backends: [{address: 10.9.0.2}, {address: 10.9.0.3, tunnel: {port: 5555}}]
");
    let [plain, bare, gue] = &c.services[..] else {
        panic!("three services")
    };
    assert_eq!(plain.forward, Forwarding::Route);
    assert_eq!(plain.backends[0].forward, Forwarding::Route);
    assert_eq!(bare.backends[0].forward, tunnel(TunnelKind::Ipip, 0, None));
    assert_eq!(DEFAULT_GUE_PORT, 6080);
    assert_eq!(gue.backends[0].forward, tunnel(TunnelKind::Gue, 6080, None));
    assert_eq!(gue.backends[1].forward, tunnel(TunnelKind::Gue, 5555, None));
    assert_eq!(gue.backends[1].forward.to_string(), "gue 5555");
}

#[test]
fn a_backend_overrides_key_by_key_and_may_tunnel_alone() {
    let c = ok("\
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    tunnel: {type: gue, port: 7000, source: 192.168.58.134}
    backends:
      - address: 192.168.58.135
      - address: 10.20.0.11
        forward: tunnel
      - address: 10.20.0.12
        forward: tunnel
        tunnel: {type: ipip, source: 10.1.0.1}
");
    let b = &c.services[0].backends;
    assert_eq!(c.services[0].forward, Forwarding::Route);
    assert_eq!(b[0].forward, Forwarding::Route);
    assert_eq!(
        b[1].forward,
        tunnel(TunnelKind::Gue, 7000, Some("192.168.58.134"))
    );
    // The inherited GUE port does not apply to a backend that chose IPIP.
    assert_eq!(b[2].forward, tunnel(TunnelKind::Ipip, 0, Some("10.1.0.1")));
    assert_eq!(b[2].forward.to_string(), "ipip from 10.1.0.1");
}

#[test]
fn mixed_families_are_valid_for_tunnel_backends_only() {
    let c = ok("\
services:
  - name: v4-vip
    vip: 192.168.58.133
    port: 80
    forward: tunnel
    backends:
      - address: \"fd00:20::11\"
      - address: 10.20.0.11
        tunnel: {source: 192.168.58.134}
      - address: \"fd00:20::12\"
        tunnel: {source: \"fd00:58::134\"}
  - name: v6-vip
    vip: \"fd00:58::133\"
    port: 80
    backends:
      - address: 10.20.0.11
        forward: tunnel
");
    assert_eq!(c.services[0].backends[0].address, ip("fd00:20::11"));
    assert_eq!(
        c.services[0].backends[2].forward,
        tunnel(TunnelKind::Ipip, 0, Some("fd00:58::134"))
    );
    assert_eq!(
        c.services[1].backends[0].forward,
        tunnel(TunnelKind::Ipip, 0, None)
    );
    // The same backend without `forward: tunnel`, and one that overrides it back to route.
    assert_eq!(
        errs(
            "\
services:
  - name: v6-vip
    vip: \"fd00:58::133\"
    port: 80
    forward: tunnel
    backends:
      - address: 10.20.0.11
        forward: route
"
        ),
        [
            "7 services[0].backends[0].address: 10.20.0.11 is an IPv4 address but the service's \
          VIP fd00:58::133 is IPv6; a backend must have the VIP's family, since direct routing \
          forwards the packet unchanged; a backend of the other family needs `forward: tunnel`"
        ]
    );
}

#[test]
fn tunnel_mistakes_name_their_line_and_field() {
    let text = "\
services:
  - name: a
    vip: 192.168.58.133
    port: 80
    forward: tunel
    tunnel: {type: vxlan, port: 0, mtu: 1400}
    backends: [{address: 10.0.0.2}]
  - name: b
    vip: 192.168.58.133
    port: 81
    tunnel:
      type: ipip
    backends:
      - address: 10.0.0.2
  - name: c
    vip: 192.168.58.133
    port: 82
    forward: tunnel
    tunnel:
      port: 6080
      source: 127.0.0.1
    backends:
      - address: 10.0.0.2
        tunnel: [ipip]
  - name: d
    vip: 192.168.58.133
    port: 83
    backends:
      - address: 10.0.0.2
        tunnel: {type: gue}
";
    assert_eq!(
        errs(text),
        [
            "5 services[0].forward: `tunel` is not a forwarding method; expected `route` or \
             `tunnel`",
            "6 services[0].tunnel.mtu: unknown field `mtu`; expected one of `type`, `port`, \
             `source`",
            "6 services[0].tunnel.type: `vxlan` is not a tunnel type; expected `ipip` or `gue`",
            "6 services[0].tunnel.port: 0 is out of range (1..=65535)",
            "11 services[1].tunnel: tunnel settings, but neither the service nor any backend has \
             `forward: tunnel`; add `forward: tunnel` (to the service, or to the backends that \
             tunnel) or remove `tunnel`",
            "20 services[2].tunnel.port: `port` is the UDP port of a GUE tunnel, and this is an \
             IPIP tunnel (the default `type`), which has no port; remove `port` or write `type: \
             gue`",
            "21 services[2].tunnel.source: 127.0.0.1 is a loopback address (127.0.0.0/8) and \
             cannot be a tunnel's source; give a unicast address",
            "24 services[2].backends[0].tunnel: expected a mapping like `{ type: ipip }` or `{ \
             type: gue, port: 6080 }`, found a list",
            "30 services[3].backends[0].tunnel: tunnel settings on a backend that is forwarded by \
             direct routing; add `forward: tunnel` to it (or to its service), or remove `tunnel`",
        ]
    );
}

#[test]
fn a_source_of_the_other_family_is_refused_where_it_is_written() {
    let text = "\
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    forward: tunnel
    tunnel: {source: 192.168.58.134}
    backends:
      - address: 10.20.0.11
      - address: \"fd00:20::11\"
      - address: \"fd00:20::12\"
        tunnel: {type: ipip, port: 1, source: 10.0.0.1}
";
    assert_eq!(
        errs(text),
        [
            "9 services[0].backends[1].address: the tunnel source 192.168.58.134 (the service's \
             `tunnel.source`, line 6) is IPv4 but the backend fd00:20::11 is IPv6: the outer \
             header has the backend's family; give this backend a `tunnel: { source: ... }` of \
             its family, or omit `source` (the kernel's route to the backend then gives it)",
            "11 services[0].backends[2].tunnel.port: `port` is the UDP port of a GUE tunnel, and \
             this is `type: ipip`, which has no port; remove `port` or write `type: gue`",
        ]
    );
    // Without the port mistake the source is reported at its own field.
    let text = text.replace("port: 1, ", "");
    assert_eq!(
        errs(&text)[1],
        "11 services[0].backends[2].tunnel.source: the tunnel source 10.0.0.1 is IPv4 but the \
         backend fd00:20::12 is IPv6: the outer header has the backend's family; give this \
         backend a `tunnel: { source: ... }` of its family, or omit `source` (the kernel's \
         route to the backend then gives it)"
    );
}

/// The README's tunnel example is a valid file, with the values its comments give.
#[test]
fn the_readme_example_parses() {
    let readme = include_str!("../../../README.md");
    let section = &readme[readme.find("### Tunnels").expect("the tunnels section")..];
    let start = section.find("```yaml\n").expect("an example") + "```yaml\n".len();
    let example = &section[start..start + section[start..].find("```").expect("its end")];
    let c = ok(example);
    let b = &c.services[0].backends;
    assert_eq!(
        b[0].forward,
        tunnel(TunnelKind::Gue, 6080, Some("192.168.58.134"))
    );
    assert_eq!(
        b[1].forward,
        tunnel(TunnelKind::Ipip, 0, Some("fd00:58::134"))
    );
    assert_eq!(b[2].forward, Forwarding::Route);
}
