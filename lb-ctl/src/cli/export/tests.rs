//! `export` on a hand-built snapshot: every scheduler, persistence with and without a mask,
//! UDP, IPv6, tunnels (IPIP, GUE, mixed with routed backends), weight 0, a backend held
//! down, all-ports services; the YAML read back by the config parser, and the rules of what
//! it reads equal to the rules of the snapshot.

use std::net::IpAddr;

use lb_common::Forward;

use super::{ipvsadm, yaml};
use crate::config::{self, Forwarding, Protocol, Scheduler, TunnelKind};
use crate::maps::view::{BackendView, ServiceView, Snapshot};
use crate::plan::convert::mask_of;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn backend(addr: &str, port: u16, weight: u32) -> BackendView {
    BackendView {
        id: 0,
        address: ip(addr),
        port,
        weight,
        mac: "02:00:00:00:00:87".into(),
        forward: Some(Forward::Route),
        tunnel_source: None,
        tunnel_port: None,
        usable: true,
        down: false,
        packets: 0,
        bytes: 0,
        connections: 0,
        active_connections: 0,
        inactive_connections: 0,
    }
}

fn down(b: BackendView) -> BackendView {
    BackendView {
        usable: false,
        down: true,
        ..b
    }
}

fn ipip(b: BackendView, source: &str) -> BackendView {
    BackendView {
        forward: Some(Forward::Ipip),
        tunnel_source: Some(ip(source)),
        mac: "00:00:00:00:00:00".into(),
        ..b
    }
}

fn gue(b: BackendView, port: u16) -> BackendView {
    BackendView {
        forward: Some(Forward::Gue),
        tunnel_port: Some(port),
        ..b
    }
}

#[allow(clippy::too_many_arguments)]
fn service(
    name: &str,
    vip: &str,
    port: u16,
    protocol: &'static str,
    scheduler: &'static str,
    persistence: (u32, u8),
    table_len: u32,
    backends: Vec<BackendView>,
) -> ServiceView {
    let vip = ip(vip);
    ServiceView {
        name: name.into(),
        vip,
        port,
        protocol,
        scheduler,
        persistence_timeout: persistence.0,
        persistence_netmask: mask_of(vip, persistence.1),
        persistence_prefix_len: persistence.1,
        packets: 0,
        bytes: 0,
        connections: 0,
        backends,
        table_len,
        key: lb_common::ServiceKey::default(),
        id: 0,
    }
}

/// Services in the maps' listing order (address, port, protocol), as `Snapshot::read` gives.
fn sample() -> Snapshot {
    Snapshot {
        services: vec![
            service(
                "all",
                "192.168.58.133",
                0,
                "tcp",
                "wrr",
                (300, 32),
                3,
                vec![
                    backend("192.168.58.135", 0, 2),
                    backend("192.168.58.136", 0, 1),
                ],
            ),
            service(
                "dns",
                "192.168.58.133",
                53,
                "udp",
                "sh",
                (0, 32),
                65537,
                vec![
                    backend("192.168.58.136", 53, 1),
                    backend("192.168.58.135", 53, 3),
                ],
            ),
            service(
                "web",
                "192.168.58.133",
                80,
                "tcp",
                "rr",
                (50, 24),
                2,
                vec![
                    backend("192.168.58.136", 80, 1),
                    backend("192.168.58.135", 80, 0),
                    down(backend("192.168.58.137", 80, 1)),
                ],
            ),
            service(
                "tun",
                "192.168.58.133",
                8080,
                "tcp",
                "lc",
                (0, 32),
                3,
                vec![
                    ipip(backend("10.20.0.11", 8080, 1), "192.168.58.134"),
                    gue(ipip(backend("10.20.0.12", 8080, 2), "192.168.58.134"), 7000),
                    backend("192.168.58.135", 8080, 1),
                    ipip(backend("fd00:20::11", 8080, 1), "fd00:58::134"),
                ],
            ),
            service(
                "gue-all",
                "192.168.58.140",
                443,
                "tcp",
                "wlc",
                (0, 32),
                2,
                vec![
                    gue(ipip(backend("10.20.0.12", 443, 4), "192.168.58.134"), 6080),
                    gue(ipip(backend("10.20.0.11", 443, 1), "192.168.58.134"), 6080),
                ],
            ),
            service("any", "192.168.58.141", 0, "udp", "rr", (0, 32), 0, vec![]),
            service(
                "web6",
                "fd00:58::133",
                80,
                "tcp",
                "mh",
                (50, 64),
                251,
                vec![
                    backend("fd00:58::136", 80, 1),
                    backend("fd00:58::135", 80, 2),
                ],
            ),
            service(
                "dns6",
                "fd00:58::133",
                53,
                "udp",
                "wrr",
                (60, 128),
                1,
                vec![backend("fd00:58::135", 53, 1)],
            ),
            service(
                "mh0",
                "fd00:58::140",
                80,
                "tcp",
                "mh",
                (0, 128),
                0,
                vec![down(backend("fd00:58::135", 80, 1))],
            ),
        ],
        datapath: vec![],
        flows: 0,
        flows_capacity: 0,
        half_open: 0,
        half_open_capacity: 0,
        new_flows_per_cpu: 0,
    }
}

/// What ipvsadm -S -n prints for the same IPVS table, written from its format by hand.
const RULES: &str = "\
-A -t 192.168.58.133:0 -s wrr -p 300
-a -t 192.168.58.133:0 -r 192.168.58.135:0 -g -w 2
-a -t 192.168.58.133:0 -r 192.168.58.136:0 -g -w 1
-A -t 192.168.58.133:80 -s rr -p 50 -M 255.255.255.0
-a -t 192.168.58.133:80 -r 192.168.58.135:80 -g -w 0
-a -t 192.168.58.133:80 -r 192.168.58.136:80 -g -w 1
-A -t 192.168.58.133:8080 -s lc
-a -t 192.168.58.133:8080 -r 10.20.0.11:8080 -i -w 1 --tun-type ipip
-a -t 192.168.58.133:8080 -r 10.20.0.12:8080 -i -w 2 --tun-type gue --tun-port 7000 --tun-nocsum
-a -t 192.168.58.133:8080 -r 192.168.58.135:8080 -g -w 1
-a -t 192.168.58.133:8080 -r [fd00:20::11]:8080 -i -w 1 --tun-type ipip
-A -t 192.168.58.140:443 -s wlc
-a -t 192.168.58.140:443 -r 10.20.0.11:443 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
-a -t 192.168.58.140:443 -r 10.20.0.12:443 -i -w 4 --tun-type gue --tun-port 6080 --tun-nocsum
-A -u 192.168.58.133:53 -s sh
-a -u 192.168.58.133:53 -r 192.168.58.135:53 -g -w 3
-a -u 192.168.58.133:53 -r 192.168.58.136:53 -g -w 1
-A -u 192.168.58.141:0 -s rr
-A -t [fd00:58::133]:80 -s mh -b mh-port -p 50 -M 64
-a -t [fd00:58::133]:80 -r [fd00:58::135]:80 -g -w 2
-a -t [fd00:58::133]:80 -r [fd00:58::136]:80 -g -w 1
-A -t [fd00:58::140]:80 -s mh -b mh-port
-A -u [fd00:58::133]:53 -s wrr -p 60
-a -u [fd00:58::133]:53 -r [fd00:58::135]:53 -g -w 1
";

#[test]
fn ipvsadm_rules_as_ipvsadm_saves_them() {
    let rules = ipvsadm::rules(&sample());
    // Line by line, so that a failure names the line.
    let got: Vec<&str> = rules.text.lines().collect();
    let want: Vec<&str> = RULES.lines().collect();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "line {}:\n{}", i + 1, rules.text);
    }
    assert_eq!(got.len(), want.len(), "{}", rules.text);
    assert_eq!(rules.text, RULES);
    // The one rule ipvsadm -R refuses: port 0 without -p.
    assert_eq!(rules.warnings.len(), 1, "{:?}", rules.warnings);
    assert!(
        rules.warnings[0].starts_with(
            "service any (-u 192.168.58.141:0): an all-ports service without persistence"
        ),
        "{:?}",
        rules.warnings
    );
}

#[test]
fn ipvsadm_rules_of_nothing_are_empty() {
    let empty = Snapshot {
        services: vec![],
        ..sample()
    };
    assert_eq!(ipvsadm::rules(&empty), ipvsadm::Rules::default());
}

#[test]
fn yaml_is_a_service_file_with_what_the_maps_hold() {
    let snap = sample();
    let text = yaml::service_file(&snap);
    assert!(text.starts_with(yaml::HEADER), "{text}");
    // Two services written out in full: the README's style.
    for part in [
        "  - name: web
    vip: 192.168.58.133
    port: 80
    protocol: tcp
    scheduler: rr
    persistence:
      timeout: 50s
      netmask: 255.255.255.0
    backends:
      - address: 192.168.58.136
        weight: 1
      - address: 192.168.58.135
        weight: 0
      - address: 192.168.58.137   # held down by health checks now
        weight: 1
",
        "  - name: web6
    vip: \"fd00:58::133\"
    port: 80
    protocol: tcp
    scheduler: mh
    table_size: 251
    persistence:
      timeout: 50s
      netmask: 64
    backends:
",
        "    forward: tunnel
    tunnel: {type: gue, port: 6080}
    backends:
      - address: 10.20.0.12   # outer source now 192.168.58.134 (the route's or the file's)
        weight: 4
",
        "      - address: 10.20.0.12   # outer source now 192.168.58.134 (the route's or the file's)
        weight: 2
        forward: tunnel
        tunnel: {type: gue, port: 7000}
      - address: 192.168.58.135
        weight: 1
",
        "    scheduler: mh
    # table_size: not known while no backend is usable (the default is 65537)
",
        "  - name: any
    vip: 192.168.58.141
    port: 0
    protocol: udp
    scheduler: rr
    backends: []
",
    ] {
        assert!(text.contains(part), "no\n{part}\nin\n{text}");
    }
    // The default table size is not written.
    assert!(!text.contains("table_size: 65537"), "{text}");
}

#[test]
fn yaml_reads_back_field_by_field() {
    let snap = sample();
    let text = yaml::service_file(&snap);
    let config = config::parse(&text, "export.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config.services.len(), snap.services.len());
    assert!(config.vrrp.is_empty() && config.sync.is_none());
    for (c, s) in config.services.iter().zip(&snap.services) {
        let what = &s.name;
        assert_eq!(c.name, s.name);
        assert_eq!(c.vip, s.vip, "{what}");
        assert_eq!(c.port, s.port, "{what}");
        assert_eq!(c.protocol.as_str(), s.protocol, "{what}");
        assert_eq!(c.scheduler.as_str(), s.scheduler, "{what}");
        if c.scheduler.is_hashed() && s.table_len != 0 {
            assert_eq!(c.table_size, s.table_len, "{what}");
        }
        match c.persistence {
            None => assert_eq!(s.persistence_timeout, 0, "{what}"),
            Some(p) => {
                assert_eq!(
                    p.timeout.as_secs(),
                    u64::from(s.persistence_timeout),
                    "{what}"
                );
                assert_eq!(p.prefix_len, s.persistence_prefix_len, "{what}");
            }
        }
        assert_eq!(c.backends.len(), s.backends.len(), "{what}");
        for (cb, sb) in c.backends.iter().zip(&s.backends) {
            assert_eq!(cb.address, sb.address, "{what}");
            assert_eq!(cb.port, sb.port, "{what}");
            assert_eq!(cb.weight, sb.weight, "{what}");
            let (kind, port) = match cb.forward {
                Forwarding::Route => (Forward::Route, None),
                Forwarding::Tunnel(t) => {
                    assert_eq!(t.source, None, "sources stay the route's: {what}");
                    match t.kind {
                        TunnelKind::Ipip => (Forward::Ipip, None),
                        TunnelKind::Gue => (Forward::Gue, Some(t.port)),
                    }
                }
            };
            assert_eq!(Some(kind), sb.forward, "{what} {}", sb.address);
            assert_eq!(port, sb.tunnel_port, "{what} {}", sb.address);
        }
    }
    // And the rules of what it reads are the snapshot's (backends held down are up there).
    let read_back = snapshot_of(&config);
    let up = Snapshot {
        services: (snap.services.iter().cloned())
            .map(|s| ServiceView {
                backends: (s.backends.into_iter())
                    .map(|b| BackendView { down: false, ..b })
                    .collect(),
                ..s
            })
            .collect(),
        ..sample()
    };
    assert_eq!(ipvsadm::rules(&read_back).text, ipvsadm::rules(&up).text);
}

#[test]
fn yaml_carries_the_flood_budget_when_set() {
    let mut snap = sample();
    assert!(!yaml::service_file(&snap).contains("\nflood:"));
    snap.new_flows_per_cpu = 200_000;
    let text = yaml::service_file(&snap);
    assert!(
        text.ends_with("flood:\n  new_flows_per_cpu: 200000\n"),
        "{text}"
    );
    let config = config::parse(&text, "export.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config.flood.new_flows_per_cpu, 200_000);
    snap.services.clear();
    let text = yaml::service_file(&snap);
    let config = config::parse(&text, "export.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        (config.services.len(), config.flood.new_flows_per_cpu),
        (0, 200_000)
    );
}

#[test]
fn names_that_yaml_would_read_otherwise_are_quoted() {
    let mut snap = sample();
    snap.services.truncate(1);
    for (name, written) in [
        ("web", "name: web\n"),
        ("1e3", "name: \"1e3\"\n"),
        ("true", "name: \"true\"\n"),
        ("No", "name: \"No\"\n"),
        ("null", "name: \"null\"\n"),
        ("web.v2-a_b", "name: web.v2-a_b\n"),
        ("-x", "name: \"-x\"\n"),
    ] {
        snap.services[0].name = name.into();
        let text = yaml::service_file(&snap);
        assert!(text.contains(written), "{name}: {text}");
        if let Ok(c) = config::parse(&text, "export.yaml") {
            assert_eq!(c.services[0].name, name);
        }
    }
}

/// What `apply` of `config` would show in a snapshot, every backend usable: the service
/// fields as the maps hold them.
fn snapshot_of(config: &config::Config) -> Snapshot {
    let services = (config.services.iter())
        .map(|s| {
            let (timeout, prefix) = match s.persistence {
                Some(p) => (p.timeout.as_secs() as u32, p.prefix_len),
                None => (0, if s.vip.is_ipv4() { 32 } else { 128 }),
            };
            let protocol = match s.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            let backends = (s.backends.iter())
                .map(|b| {
                    let mut v = backend(&b.address.to_string(), b.port, b.weight);
                    if let Forwarding::Tunnel(t) = b.forward {
                        v = match t.kind {
                            TunnelKind::Ipip => ipip(v, "192.168.58.134"),
                            TunnelKind::Gue => gue(ipip(v, "192.168.58.134"), t.port),
                        };
                    }
                    v
                })
                .collect();
            let sched: Scheduler = s.scheduler;
            service(
                &s.name,
                &s.vip.to_string(),
                s.port,
                protocol,
                sched.as_str(),
                (timeout, prefix),
                s.table_size,
                backends,
            )
        })
        .collect();
    Snapshot {
        services,
        ..sample()
    }
}
