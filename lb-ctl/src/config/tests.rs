//! Tests of [`parse`] and [`load`]: a valid file, then every kind of error, each with its exact
//! line and field path.

use std::fmt::Write as _;

use super::*;

const FILE: &str = "services.yaml";

fn ok(text: &str) -> Config {
    match parse(text, FILE) {
        Ok(config) => config,
        Err(err) => panic!("rejected:\n{err}"),
    }
}

fn errs(text: &str) -> Vec<Diagnostic> {
    match parse(text, FILE) {
        Ok(config) => panic!("accepted: {config:#?}"),
        Err(err) => {
            assert!(!err.diagnostics.is_empty());
            err.diagnostics
        }
    }
}

/// The only diagnostic of `text`.
fn one(text: &str) -> Diagnostic {
    let diags = errs(text);
    assert_eq!(diags.len(), 1, "expected one diagnostic, got {diags:#?}");
    diags.into_iter().next().unwrap_or_else(|| unreachable!())
}

#[track_caller]
fn check(d: &Diagnostic, line: usize, field: &str, contains: &str) {
    assert_eq!(d.file, FILE, "{d}");
    assert_eq!((d.line, d.field.as_str()), (line, field), "{d}");
    assert!(
        d.message.contains(contains),
        "`{}` lacks `{contains}`",
        d.message
    );
}

/// A one-service file with `fields` added to the service and `backends` as its backend list.
fn service(extra: &str, backends: &str) -> String {
    format!(
        "services:\n  - name: web\n    vip: 10.0.0.1\n    port: 80\n{extra}    backends:\n{backends}"
    )
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap_or_else(|_| unreachable!())
}

#[test]
fn valid_file_with_every_field_and_defaults() {
    let text = "\
# The services of the director.
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    protocol: tcp
    scheduler: wrr
    backends:
      - address: 192.168.58.135
        weight: 1
      - address: 192.168.58.136
        port: 80
        weight: 0

  - name: dns.udp-1_a
    vip: 192.168.58.134
    port: 53
    protocol: udp
    scheduler: rr
    backends:
      - {address: 10.1.0.1, weight: 65535}
      - address: 10.1.0.2
  - name: all-ports
    vip: 192.168.58.133
    port: 0
    backends:
      - address: 10.2.0.1
        port: 0
  - name: empty
    vip: 192.168.58.133
    port: 443
    backends: []
  - name: no-backends
    vip: 192.168.58.133
    port: 80
    protocol: udp
";
    let config = ok(text);
    assert_eq!(
        config,
        Config {
            services: vec![
                ServiceConfig {
                    name: "web".into(),
                    vip: ip("192.168.58.133"),
                    port: 80,
                    protocol: Protocol::Tcp,
                    scheduler: Scheduler::Wrr,
                    table_size: super::DEFAULT_TABLE_SIZE,
                    persistence: None,
                    backends: vec![
                        BackendConfig {
                            address: ip("192.168.58.135"),
                            port: 80,
                            weight: 1,
                            forward: Forwarding::Route,
                            line: 9,
                        },
                        BackendConfig {
                            address: ip("192.168.58.136"),
                            port: 80,
                            weight: 0,
                            forward: Forwarding::Route,
                            line: 11,
                        },
                    ],
                    health: Health::default(),
                    forward: Forwarding::Route,
                    announce: None,
                    line: 3,
                },
                ServiceConfig {
                    name: "dns.udp-1_a".into(),
                    vip: ip("192.168.58.134"),
                    port: 53,
                    protocol: Protocol::Udp,
                    scheduler: Scheduler::Rr,
                    table_size: super::DEFAULT_TABLE_SIZE,
                    persistence: None,
                    backends: vec![
                        BackendConfig {
                            address: ip("10.1.0.1"),
                            port: 53,
                            weight: 65535,
                            forward: Forwarding::Route,
                            line: 21,
                        },
                        BackendConfig {
                            address: ip("10.1.0.2"),
                            port: 53,
                            weight: 1,
                            forward: Forwarding::Route,
                            line: 22,
                        },
                    ],
                    health: Health::default(),
                    forward: Forwarding::Route,
                    announce: None,
                    line: 15,
                },
                ServiceConfig {
                    name: "all-ports".into(),
                    vip: ip("192.168.58.133"),
                    port: 0,
                    protocol: Protocol::Tcp,
                    scheduler: Scheduler::Wrr,
                    table_size: super::DEFAULT_TABLE_SIZE,
                    persistence: None,
                    backends: vec![BackendConfig {
                        address: ip("10.2.0.1"),
                        port: 0,
                        weight: 1,
                        forward: Forwarding::Route,
                        line: 27,
                    }],
                    health: Health::default(),
                    forward: Forwarding::Route,
                    announce: None,
                    line: 23,
                },
                ServiceConfig {
                    name: "empty".into(),
                    vip: ip("192.168.58.133"),
                    port: 443,
                    protocol: Protocol::Tcp,
                    scheduler: Scheduler::Wrr,
                    table_size: super::DEFAULT_TABLE_SIZE,
                    persistence: None,
                    backends: vec![],
                    health: Health::default(),
                    forward: Forwarding::Route,
                    announce: None,
                    line: 29,
                },
                ServiceConfig {
                    name: "no-backends".into(),
                    vip: ip("192.168.58.133"),
                    port: 80,
                    protocol: Protocol::Udp,
                    scheduler: Scheduler::Wrr,
                    table_size: super::DEFAULT_TABLE_SIZE,
                    persistence: None,
                    backends: vec![],
                    health: Health::default(),
                    forward: Forwarding::Route,
                    announce: None,
                    line: 33,
                },
            ],
            vrrp: vec![],
            sync: None,
            vrrp_scripts: vec![],
            vrrp_sync_groups: vec![],
            flood: Default::default(),
        }
    );
}

#[test]
fn defaults_when_optional_fields_are_absent() {
    let config = ok(
        "services:\n- name: a\n  vip: 10.0.0.1\n  port: 8080\n  backends:\n  - address: 10.0.0.2\n",
    );
    let s = &config.services[0];
    assert_eq!(s.protocol, Protocol::Tcp);
    assert_eq!(s.scheduler, DEFAULT_SCHEDULER);
    assert_eq!(s.scheduler, Scheduler::Wrr);
    assert_eq!(s.line, 2);
    assert_eq!(
        s.backends,
        vec![BackendConfig {
            address: ip("10.0.0.2"),
            port: 8080,
            weight: 1,
            forward: Forwarding::Route,
            line: 6,
        }]
    );
    // Empty values of optional fields are the defaults too.
    let config = ok(
        "services:\n- name: a\n  vip: 10.0.0.1\n  port: 1\n  protocol:\n  scheduler: ~\n  backends:\n",
    );
    assert_eq!(config.services[0].protocol, Protocol::Tcp);
    assert_eq!(config.services[0].scheduler, Scheduler::Wrr);
    assert!(config.services[0].backends.is_empty());
}

#[test]
fn no_services_is_valid_when_said_so() {
    assert_eq!(
        ok("services: []\n"),
        Config {
            services: vec![],
            vrrp: vec![],
            sync: None,
            vrrp_scripts: vec![],
            vrrp_sync_groups: vec![],
            flood: Default::default(),
        }
    );
}

#[test]
fn merge_keys_are_applied() {
    let text = "\
services:
  - &base
    name: a
    vip: 10.0.0.1
    port: 80
  - <<: *base
    name: b
    protocol: udp
";
    let config = ok(text);
    assert_eq!(config.services[1].name, "b");
    assert_eq!(config.services[1].vip, ip("10.0.0.1"));
    assert_eq!(config.services[1].protocol, Protocol::Udp);
    assert_eq!(config.services[1].line, 6);
}

#[test]
fn yaml_syntax_error() {
    let d = one("services:\n  - name: a\n    port: [\n");
    check(&d, 4, "", "did not find expected node content");
    assert!(!d.message.contains("at line 4 column"), "{}", d.message);

    let d = one("services:\n  - name: a\n    vip: 10.0.0.1\n   port: 80\n");
    assert_eq!(d.line, 4, "{d}");

    let d = one("services:\n\t- name: a\n");
    check(&d, 2, "", "YAML does not allow tabs");

    let d = one("services:\n  - name: a: b\n");
    check(&d, 2, "", "mapping values are not allowed");
}

#[test]
fn yaml_duplicate_keys() {
    let diags = errs(
        "services:\n  - name: a\n    vip: 10.0.0.1\n    port: 1\n    port: 2\n    vip: 10.0.0.2\n",
    );
    assert_eq!(diags.len(), 2, "{diags:#?}");
    check(
        &diags[0],
        5,
        "services[0].port",
        "duplicate key `port` (first at line 4)",
    );
    check(
        &diags[1],
        6,
        "services[0].vip",
        "duplicate key `vip` (first at line 3)",
    );
}

#[test]
fn yaml_more_than_one_document() {
    let d = one("services: []\n---\nservices: []\n");
    check(&d, 2, "", "more than one document");
}

#[test]
fn type_errors() {
    let d = one(&service(
        "",
        "      - address: 10.0.0.2\n        weight: heavy\n",
    ));
    check(
        &d,
        7,
        "services[0].backends[0].weight",
        "expected an integer",
    );
    assert!(d.message.contains("`heavy`"), "{d}");

    let d = one("services:\n  - name: a\n    vip: 10.0.0.1\n    port: 1.5\n");
    check(
        &d,
        4,
        "services[0].port",
        "expected an integer (0..=65535), found the number `1.5`",
    );

    let d = one("services:\n  - name: 42\n    vip: 10.0.0.1\n    port: 1\n");
    check(
        &d,
        2,
        "services[0].name",
        "expected a string, found the number `42`",
    );

    let d = one("services:\n  - name: a\n    vip: [10.0.0.1]\n    port: 1\n");
    check(
        &d,
        3,
        "services[0].vip",
        "expected an IPv4 or IPv6 address, found a list",
    );

    let d = one("services:\n  - name: a\n    vip: 10.0.0.1\n    port: 1\n    backends: 10.0.0.2\n");
    check(&d, 5, "services[0].backends", "expected a list of backends");

    let d = one("services:\n  - web\n");
    check(&d, 2, "services[0]", "expected a service");

    let d = one(
        "services:\n  - name: a\n    vip: 10.0.0.1\n    port: 1\n    backends:\n      - 10.0.0.2\n",
    );
    check(&d, 6, "services[0].backends[0]", "expected a backend");

    let d = one("services:\n  web: {}\n");
    check(
        &d,
        1,
        "services",
        "expected a list of services, found a mapping",
    );

    let d = one("- services\n");
    check(&d, 1, "", "expected a mapping with a `services:` list");
}

#[test]
fn integer_too_large_for_yaml() {
    // Larger than any 64-bit integer: still a number, and out of range.
    let d = one(&service(
        "",
        "      - address: 10.0.0.2\n        weight: 99999999999999999999\n",
    ));
    check(
        &d,
        7,
        "services[0].backends[0].weight",
        "99999999999999999999 is out of range",
    );
    // Between i64::MAX and u64::MAX.
    let d = one(&service(
        "",
        "      - address: 10.0.0.2\n        weight: 18446744073709551615\n",
    ));
    check(
        &d,
        7,
        "services[0].backends[0].weight",
        "18446744073709551615 is out of range (0..=65535)",
    );
}

#[test]
fn protocol_and_scheduler_values() {
    let d = one(&service("    protocol: sctp\n", ""));
    check(
        &d,
        5,
        "services[0].protocol",
        "`sctp` is not a protocol; expected `tcp` or `udp`",
    );
    let d = one(&service("    protocol: 6\n", ""));
    check(
        &d,
        5,
        "services[0].protocol",
        "expected `tcp` or `udp`, found the number `6`",
    );
    let d = one(&service("    scheduler: lb\n", ""));
    check(
        &d,
        5,
        "services[0].scheduler",
        "`lb` is not a scheduler; expected `rr`, `wrr`, `sh`, `mh`, `lc` or `wlc`",
    );
    for name in ["rr", "wrr", "sh", "mh", "lc", "wlc"] {
        let c = parse(&service(&format!("    scheduler: {name}\n"), ""), "s.yaml")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.services[0].scheduler.as_str(), name);
    }
}

#[test]
fn least_connections_need_tcp() {
    let text = "services:\n  - name: dns\n    vip: 10.0.0.1\n    port: 53\n    protocol: udp\n    scheduler: wlc\n";
    let d = one(text);
    check(
        &d,
        6,
        "services[0].scheduler",
        "lc and wlc count active TCP connections, and a director sees no end of a UDP flow; \
         use rr, wrr, sh or mh for UDP",
    );
}

#[test]
fn table_size_must_be_prime() {
    let base = "services:\n  - name: web\n    vip: 10.0.0.1\n    port: 80\n    scheduler: mh\n";
    let c =
        parse(&format!("{base}    table_size: 251\n"), "s.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.services[0].table_size, 251);
    let c = parse(base, "s.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.services[0].table_size, 65537);
    let d = one(&format!("{base}    table_size: 65536\n"));
    check(
        &d,
        6,
        "services[0].table_size",
        "65536 is not a prime in 2..=16777213; Maglev needs a prime table size (e.g. 251, \
         4093, 65537, 655373)",
    );
}

#[test]
fn persistence_block() {
    let base = "services:\n  - name: web\n    vip: 10.0.0.1\n    port: 0\n";
    let c = parse(
        &format!("{base}    persistence: {{ timeout: 50s, netmask: 255.255.255.0 }}\n"),
        "s.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p = c.services[0].persistence.expect("persistence");
    assert_eq!(p.timeout, std::time::Duration::from_secs(50));
    assert_eq!(p.prefix_len, 24);
    let c = parse(
        &format!("{base}    persistence:\n      timeout: 1m\n"),
        "s.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p = c.services[0].persistence.expect("persistence");
    assert_eq!(p.prefix_len, 32, "default: per client address");

    let d = one(&format!(
        "{base}    persistence:\n      timeout: 50s\n      netmask: 255.0.255.0\n"
    ));
    check(
        &d,
        7,
        "services[0].persistence.netmask",
        "`255.0.255.0` is not a netmask (like 255.255.255.0)",
    );
    let d = one(&format!(
        "{base}    persistence:\n      netmask: 255.255.255.0\n"
    ));
    check(
        &d,
        5,
        "services[0].persistence.timeout",
        "missing required field `timeout`",
    );
    let d = one(&format!("{base}    persistence:\n      timeout: soon\n"));
    assert_eq!(d.line, 6);
    assert_eq!(d.field, "services[0].persistence.timeout");
    let d = one(&format!(
        "{base}    persistence:\n      timeout: 5s\n      sticky: yes\n"
    ));
    assert_eq!(
        (d.line, d.field.as_str()),
        (7, "services[0].persistence.sticky")
    );
}

#[test]
fn unknown_keys_at_every_level() {
    let text = "\
services:
  - name: web
    vip: 10.0.0.1
    prot: 80
    port: 80
    backends:
      - address: 10.0.0.2
        wieght: 3
version: 2
";
    let diags = errs(text);
    assert_eq!(diags.len(), 3, "{diags:#?}");
    check(
        &diags[0],
        4,
        "services[0].prot",
        "unknown field `prot`; expected one of `name`, `vip`, `port`",
    );
    check(
        &diags[1],
        8,
        "services[0].backends[0].wieght",
        "unknown field `wieght`; expected one of `address`, `port`, `weight`",
    );
    check(
        &diags[2],
        9,
        "version",
        "unknown field `version`; expected one of `services`",
    );
}

#[test]
fn missing_required_fields() {
    let text = "\
services:
  - vip: 10.0.0.1
    port: 80
  - name: b
    port: 80
  - name: c
    vip: 10.0.0.3
    backends:
      - weight: 2
";
    let diags = errs(text);
    assert_eq!(diags.len(), 4, "{diags:#?}");
    check(
        &diags[0],
        2,
        "services[0].name",
        "missing required field `name`",
    );
    check(
        &diags[1],
        4,
        "services[1].vip",
        "missing required field `vip`",
    );
    check(
        &diags[2],
        6,
        "services[2].port",
        "missing required field `port`",
    );
    check(
        &diags[3],
        9,
        "services[2].backends[0].address",
        "missing required field `address`",
    );

    let d = one("services:\n  - name: a\n    vip:\n    port: 80\n");
    check(&d, 3, "services[0].vip", "`vip` has no value");

    let d = one("services:\n  -\n  - name: a\n    vip: 10.0.0.1\n    port: 80\n");
    check(&d, 2, "services[0]", "empty service entry");
}

#[test]
fn empty_file_or_no_services() {
    check(&one(""), 1, "services", "the file is empty");
    check(
        &one("# nothing yet\n\n"),
        1,
        "services",
        "the file is empty",
    );
    check(
        &one("services:\n"),
        1,
        "services",
        "`services` has no value",
    );

    let diags = errs("\nservice:\n  - name: a\n");
    assert_eq!(diags.len(), 2, "{diags:#?}");
    // A missing top-level field is reported at the line where the document starts.
    check(&diags[0], 2, "service", "unknown field `service`");
    check(
        &diags[1],
        2,
        "services",
        "missing required field `services`",
    );
}

#[test]
fn duplicate_service_names() {
    let text = "\
services:
  - name: web
    vip: 10.0.0.1
    port: 80
  - vip: 10.0.0.1
    port: 443
    name: web
";
    let d = one(text);
    check(
        &d,
        7,
        "services[1].name",
        "duplicate service name `web` (first defined at line 2)",
    );
}

#[test]
fn duplicate_listeners() {
    let text = "\
services:
  - name: a
    vip: 10.0.0.1
    port: 80
  - name: b
    vip: 10.0.0.1
    port: 80
    protocol: udp
  - name: c
    vip: 10.0.0.1
    port: 80
    protocol: tcp
  - name: d
    vip: 10.0.0.1
    port: 0
";
    let d = one(text);
    check(
        &d,
        9,
        "services[2]",
        "10.0.0.1:80/tcp is already served by service `a` (line 2)",
    );
}

#[test]
fn bad_addresses() {
    let cases = [
        ("10.0.0", "is not a valid IPv4 or IPv6 address"),
        ("web.example.com", "is not a valid IPv4 or IPv6 address"),
        ("10.0.0.256", "is not a valid IPv4 or IPv6 address"),
        ("\"::\"", ":: is the unspecified address (::)"),
        ("\"::1\"", "::1 is the loopback address (::1)"),
        ("\"ff02::1\"", "ff02::1 is a multicast address (ff00::/8)"),
        (
            "\"::ffff:10.0.0.9\"",
            "::ffff:10.0.0.9 is an IPv4-mapped address (write the IPv4 address itself)",
        ),
        (
            "\"fe80::1\"",
            "fe80::1 is a link-local address (fe80::/10, which needs an interface zone)",
        ),
        ("\"fd00:58::1::2\"", "is not a valid IPv4 or IPv6 address"),
        ("0.0.0.0", "0.0.0.0 is the unspecified address"),
        (
            "255.255.255.255",
            "255.255.255.255 is the limited broadcast address",
        ),
        (
            "224.0.0.1",
            "224.0.0.1 is a multicast address (224.0.0.0/4)",
        ),
        ("239.255.255.250", "is a multicast address"),
        ("127.0.0.1", "127.0.0.1 is a loopback address (127.0.0.0/8)"),
        ("127.1.2.3", "is a loopback address"),
    ];
    for (addr, message) in cases {
        let text = format!("services:\n  - name: a\n    port: 80\n    vip: {addr}\n");
        let d = one(&text);
        check(&d, 4, "services[0].vip", message);
        if !message.contains("valid") {
            assert!(
                d.message
                    .ends_with("cannot be a VIP; give a unicast address"),
                "{d}"
            );
        }

        let text = service(
            "",
            &format!("      - address: 10.0.0.2\n      - weight: 3\n        address: {addr}\n"),
        );
        let d = one(&text);
        check(&d, 8, "services[0].backends[1].address", message);
        if !message.contains("valid") {
            assert!(
                d.message
                    .ends_with("cannot be a backend address; give a unicast address"),
                "{d}"
            );
        }
    }
}

#[test]
fn backend_is_the_vip() {
    let d = one(&service("", "      - address: 10.0.0.1\n"));
    check(
        &d,
        6,
        "services[0].backends[0].address",
        "10.0.0.1 is the service's VIP",
    );
}

#[test]
fn backend_listed_twice() {
    let text = service(
        "",
        "      - address: 10.0.0.2\n      - address: 10.0.0.3\n      - address: 10.0.0.2\n        weight: 5\n",
    );
    let d = one(&text);
    check(
        &d,
        8,
        "services[0].backends[2].address",
        "10.0.0.2 is listed twice in this service (first at line 6)",
    );
    // The same backend in two services is fine.
    ok(
        "services:\n- name: a\n  vip: 10.0.0.1\n  port: 80\n  backends: [{address: 10.0.0.2}]\n\
        - name: b\n  vip: 10.0.0.1\n  port: 81\n  backends: [{address: 10.0.0.2}]\n",
    );
}

#[test]
fn backend_port_must_be_the_service_port() {
    let d = one(&service(
        "",
        "      - address: 10.0.0.2\n        port: 8080\n",
    ));
    check(
        &d,
        7,
        "services[0].backends[0].port",
        "port 8080 differs from the service port 80",
    );
    assert!(
        d.message
            .contains("direct routing rewrites only MACs, a tunnel only wraps the packet")
            && d.message.contains("cannot rewrite ports"),
        "{d}"
    );

    let text = "services:\n- name: a\n  vip: 10.0.0.1\n  port: 0\n  backends:\n  - address: 10.0.0.2\n    port: 80\n";
    let d = one(text);
    check(
        &d,
        7,
        "services[0].backends[0].port",
        "port 80 differs from the service port 0",
    );
    assert!(d.message.contains("set it to 0"), "{d}");

    let d = one(&service(
        "",
        "      - address: 10.0.0.2\n        port: -1\n",
    ));
    check(
        &d,
        7,
        "services[0].backends[0].port",
        "-1 is out of range (0..=65535)",
    );
}

#[test]
fn numbers_out_of_range() {
    let d = one(&service(
        "",
        "      - address: 10.0.0.2\n        weight: 70000\n",
    ));
    check(
        &d,
        7,
        "services[0].backends[0].weight",
        "70000 is out of range (0..=65535)",
    );
    assert_eq!(
        d.to_string(),
        "services.yaml:7: services[0].backends[0].weight: 70000 is out of range (0..=65535)"
    );
    let d = one(&service(
        "",
        "      - address: 10.0.0.2\n        weight: -1\n",
    ));
    check(
        &d,
        7,
        "services[0].backends[0].weight",
        "-1 is out of range (0..=65535)",
    );
    let d = one("services:\n- name: a\n  vip: 10.0.0.1\n  port: 65536\n");
    check(
        &d,
        4,
        "services[0].port",
        "65536 is out of range (0..=65535)",
    );
    let d = one("services:\n- name: a\n  vip: 10.0.0.1\n  port: -80\n");
    check(&d, 4, "services[0].port", "-80 is out of range (0..=65535)");
    ok("services:\n- name: a\n  vip: 10.0.0.1\n  port: 65535\n");
}

#[test]
fn name_rules() {
    let name_32 = "a".repeat(32);
    let name_33 = "b".repeat(33);
    ok(&format!(
        "services:\n- name: {name_32}\n  vip: 10.0.0.1\n  port: 1\n"
    ));
    let cases = [
        ("\"\"", "the name is empty"),
        (name_33.as_str(), "is 33 bytes long; at most 32 are allowed"),
        ("\"web 1\"", "contains ' '"),
        ("web/1", "contains '/'"),
        ("wéb", "contains 'é'"),
    ];
    for (name, message) in cases {
        let d = one(&format!(
            "services:\n- vip: 10.0.0.1\n  name: {name}\n  port: 1\n"
        ));
        check(&d, 3, "services[0].name", message);
    }
    // 17 characters, but 34 bytes.
    let d = one(&format!(
        "services:\n- vip: 10.0.0.1\n  name: {}\n  port: 1\n",
        "é".repeat(17)
    ));
    check(&d, 3, "services[0].name", "is 34 bytes long");
}

#[test]
fn too_many_services() {
    let mut text = String::from("services:\n");
    for i in 0..4097u32 {
        let _ = writeln!(
            text,
            "- {{name: s{i}, vip: 10.0.{}.{}, port: 80}}",
            i / 250,
            i % 250 + 1
        );
    }
    let d = one(&text);
    check(
        &d,
        4098,
        "services",
        "4097 services are listed; at most 4096 are supported",
    );

    text.truncate(text.rfind("- {").unwrap_or(0));
    assert_eq!(ok(&text).services.len(), 4096);
}

#[test]
fn too_many_backends_in_total() {
    // 17 services of 3856 backends: 65552 in all; the 65537th is the 3841st of the 17th service.
    let mut text = String::from("services:\n");
    let mut line = 1;
    let mut over_at = None;
    let mut count = 0u32;
    for s in 0..17u32 {
        let _ = write!(
            text,
            "- name: s{s}\n  vip: 10.255.0.{}\n  port: 80\n  backends:\n",
            s + 1
        );
        line += 4;
        for b in 0..3856u32 {
            let _ = writeln!(
                text,
                "  - {{address: 10.{}.{}.{}}}",
                s,
                b / 250,
                b % 250 + 1
            );
            line += 1;
            count += 1;
            if count == 65537 {
                over_at = Some((line, format!("services[{s}].backends[{b}]")));
            }
        }
    }
    let Some((line, field)) = over_at else {
        unreachable!()
    };
    assert_eq!(field, "services[16].backends[3840]");
    let d = one(&text);
    check(&d, line, &field, "more than 65536 backends in total");
}

#[test]
fn several_errors_are_all_reported() {
    let text = "\
services:
  - name: web
    vip: 10.0.0.1
    port: 80
    backends:
      - address: 10.0.0.2
        weight: 70000
      - address: 10.0.0.300
      - address: 10.0.0.2
        port: 81
  - name: web
    vip: 224.1.1.1
    port: 80
    protocl: udp
  - name: ok
    vip: 10.0.0.1
    port: 80
";
    let err = match parse(text, FILE) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(err) => err,
    };
    let diags = &err.diagnostics;
    assert_eq!(diags.len(), 8, "{err}");
    check(
        &diags[0],
        7,
        "services[0].backends[0].weight",
        "70000 is out of range",
    );
    check(
        &diags[1],
        8,
        "services[0].backends[1].address",
        "`10.0.0.300` is not a valid IPv4 or IPv6 address",
    );
    check(
        &diags[2],
        9,
        "services[0].backends[2].address",
        "listed twice",
    );
    check(
        &diags[3],
        10,
        "services[0].backends[2].port",
        "differs from the service port 80",
    );
    check(
        &diags[4],
        11,
        "services[1].name",
        "duplicate service name `web` (first defined at line 2)",
    );
    check(&diags[5], 12, "services[1].vip", "is a multicast address");
    check(
        &diags[6],
        14,
        "services[1].protocl",
        "unknown field `protocl`",
    );
    check(
        &diags[7],
        15,
        "services[2]",
        "10.0.0.1:80/tcp is already served by service `web` (line 2)",
    );

    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 9, "{shown}");
    assert_eq!(
        lines[0],
        "services.yaml:7: services[0].backends[0].weight: 70000 is out of range (0..=65535)"
    );
    assert_eq!(lines[8], "8 errors; nothing was applied");
}

#[test]
fn display() {
    let d = Diagnostic {
        file: "f.yaml".into(),
        line: 3,
        field: String::new(),
        message: "bad".into(),
    };
    assert_eq!(d.to_string(), "f.yaml:3: bad");
    let err = ConfigError {
        diagnostics: vec![Diagnostic {
            field: "services".into(),
            ..d.clone()
        }],
    };
    assert_eq!(
        err.to_string(),
        "f.yaml:3: services: bad\n1 error; nothing was applied"
    );
}

#[test]
fn load_reads_the_file() {
    let dir = std::env::temp_dir().join(format!("lb-ctl-config-test-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("services.yaml");
    let written = std::fs::write(
        &path,
        "services:\n- name: a\n  vip: 10.0.0.1\n  port: 80\n  bogus: 1\n",
    );
    assert!(written.is_ok());
    let err = match load(&path) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(err) => err,
    };
    assert_eq!(err.diagnostics.len(), 1);
    assert_eq!(err.diagnostics[0].file, path.display().to_string());
    assert_eq!(
        (err.diagnostics[0].line, err.diagnostics[0].field.as_str()),
        (5, "services[0].bogus")
    );

    let missing = dir.join("missing.yaml");
    let err = match load(&missing) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(err) => err,
    };
    assert_eq!(err.diagnostics.len(), 1);
    assert_eq!(err.diagnostics[0].line, 0);
    assert!(
        err.diagnostics[0]
            .message
            .starts_with("cannot read the file"),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read", missing.display())),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn protocol_and_scheduler_helpers() {
    assert_eq!(Protocol::Tcp.number(), 6);
    assert_eq!(Protocol::Udp.number(), 17);
    assert_eq!(Protocol::from_number(6), Some(Protocol::Tcp));
    assert_eq!(Protocol::from_number(17), Some(Protocol::Udp));
    assert_eq!(Protocol::from_number(1), None);
    assert_eq!(Protocol::Tcp.as_str(), "tcp");
    assert_eq!(Protocol::Udp.as_str(), "udp");
    assert_eq!(Scheduler::from_name("rr"), Some(Scheduler::Rr));
    assert_eq!(Scheduler::from_name("wrr"), Some(Scheduler::Wrr));
    assert_eq!(Scheduler::from_name("WRR"), None);
    assert_eq!(Scheduler::Rr.as_str(), "rr");
    assert_eq!(Scheduler::Wrr.as_str(), "wrr");
}
