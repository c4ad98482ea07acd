//! IPv6 services in the file: addresses, one family per service, persistence by prefix
//! length, and every mistake at its line and field.

use std::net::IpAddr;

use super::*;

const FILE: &str = "s6.yaml";

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
            .map(|d| {
                assert_eq!(d.file, FILE);
                format!("{} {}: {}", d.line, d.field, d.message)
            })
            .collect(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a test address")
}

const BOTH: &str = "\
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    persistence: { timeout: 50s, netmask: 255.255.255.0 }
    backends:
      - address: 192.168.58.135
  - name: web6
    vip: \"fd00:58::133\"
    port: 80
    scheduler: mh
    persistence: { timeout: 50s, netmask: 64 }
    sorry_server: \"fd00:58::140\"
    backends:
      - address: \"fd00:58::135\"
      - address: fd00:58::136
        weight: 2
";

#[test]
fn ipv4_and_ipv6_services_in_one_file() {
    let c = ok(BOTH);
    assert_eq!(c.services.len(), 2);
    let (v4, v6) = (&c.services[0], &c.services[1]);
    assert_eq!(v4.vip, ip("192.168.58.133"));
    assert_eq!(v4.persistence.map(|p| p.prefix_len), Some(24));
    assert_eq!(v6.vip, ip("fd00:58::133"));
    assert_eq!(v6.line, 8);
    assert_eq!(v6.persistence.map(|p| p.prefix_len), Some(64));
    assert_eq!(v6.health.sorry_server, Some(ip("fd00:58::140")));
    let addrs: Vec<(IpAddr, u32, usize)> = v6
        .backends
        .iter()
        .map(|b| (b.address, b.weight, b.line))
        .collect();
    assert_eq!(
        addrs,
        [(ip("fd00:58::135"), 1, 15), (ip("fd00:58::136"), 2, 16)]
    );
}

#[test]
fn the_same_vip_in_two_spellings_is_one_listener() {
    let text = "\
services:
  - {name: a, vip: \"fd00:58::133\", port: 80}
  - {name: b, vip: \"fd00:58:0:0::133\", port: 80}
";
    assert_eq!(
        errs(text),
        [
            "3 services[1]: [fd00:58::133]:80/tcp is already served by service `a` (line 2); \
          each (vip, port, protocol) may appear only once"
        ]
    );
}

#[test]
fn a_backend_of_the_other_family_is_refused() {
    let text = "\
services:
  - name: web6
    vip: \"fd00:58::133\"
    port: 80
    backends:
      - address: \"fd00:58::135\"
      - address: 192.168.58.136
  - name: web
    vip: 192.168.58.133
    port: 80
    backends:
      - address: \"fd00:58::135\"
";
    assert_eq!(
        errs(text),
        [
            "7 services[0].backends[1].address: 192.168.58.136 is an IPv4 address but the \
             service's VIP fd00:58::133 is IPv6; a backend must have the VIP's family, since \
             direct routing forwards the packet unchanged; a backend of the other family needs \
             `forward: tunnel`",
            "12 services[1].backends[0].address: fd00:58::135 is an IPv6 address but the \
             service's VIP 192.168.58.133 is IPv4; a backend must have the VIP's family, since \
             direct routing forwards the packet unchanged; a backend of the other family needs \
             `forward: tunnel`",
        ]
    );
}

#[test]
fn ipv6_backend_mistakes_name_their_field() {
    let text = "\
services:
  - name: web6
    vip: \"fd00:58::133\"
    port: 80
    backends:
      - address: \"fd00:58::133\"
      - address: \"fd00:58::135\"
      - address: \"fd00:58:0::135\"
      - address: \"fe80::1\"
";
    assert_eq!(
        errs(text),
        [
            "6 services[0].backends[0].address: fd00:58::133 is the service's VIP; a backend \
             must be a real server's own address",
            "8 services[0].backends[2].address: fd00:58::135 is listed twice in this service \
             (first at line 7)",
            "9 services[0].backends[3].address: fe80::1 is a link-local address (fe80::/10, \
             which needs an interface zone) and cannot be a backend address; give a unicast \
             address",
        ]
    );
}

#[test]
fn persistence_prefix_lengths() {
    let with = |vip: &str, mask: &str| {
        format!(
            "services:\n  - name: s\n    vip: \"{vip}\"\n    port: 0\n    persistence:\n      \
             timeout: 50s\n{mask}"
        )
    };
    let prefix = |text: &str| ok(text).services[0].persistence.map(|p| p.prefix_len);
    // Default: the whole client address.
    assert_eq!(prefix(&with("fd00:58::133", "")), Some(128));
    assert_eq!(prefix(&with("192.168.58.133", "")), Some(32));
    for (mask, len) in [
        ("64", 64),
        ("\"/64\"", 64),
        ("/48", 48),
        ("0", 0),
        ("128", 128),
    ] {
        let text = with("fd00:58::133", &format!("      netmask: {mask}\n"));
        assert_eq!(prefix(&text), Some(len), "{mask}");
    }
    let field = "7 services[0].persistence.netmask";
    for (vip, mask, message) in [
        (
            "fd00:58::133",
            "129",
            "prefix length 129 is out of range; an IPv6 service takes a prefix length such \
             as `64` or \"/64\" (0..=128)",
        ),
        (
            "fd00:58::133",
            "/abc",
            "`/abc` is not a prefix length; an IPv6 service takes a prefix length such as \
             `64` or \"/64\" (0..=128)",
        ),
        (
            "fd00:58::133",
            "255.255.255.0",
            "`255.255.255.0` is not a prefix length; the VIP fd00:58::133 is IPv6, and an \
             IPv6 service takes a prefix length such as `64` or \"/64\" (0..=128)",
        ),
        (
            "192.168.58.133",
            "24",
            "the VIP 192.168.58.133 is IPv4, whose persistence netmask is a dotted mask such \
             as 255.255.255.0, not a prefix length",
        ),
        (
            "192.168.58.133",
            "/24",
            "the VIP 192.168.58.133 is IPv4, whose persistence netmask is a dotted mask such \
             as 255.255.255.0, not a prefix length",
        ),
    ] {
        let text = with(vip, &format!("      netmask: {mask}\n"));
        assert_eq!(errs(&text), [format!("{field}: {message}")], "{vip} {mask}");
    }
}
