//! Each mapping, each refusal with its line, and keepalived's own samples, each read back by
//! the service file's parser.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::{Imported, Kind, import_file, import_text};
use crate::config::{self, CheckKind, Config, Scheduler};

fn import(text: &str) -> Imported {
    import_text(text, "keepalived.conf", Path::new("/nonexistent")).unwrap()
}

/// The imported file, parsed by the service file's parser (it must accept it).
fn parsed(i: &Imported) -> Config {
    config::parse(&i.yaml, "imported.yaml")
        .unwrap_or_else(|e| panic!("the import does not validate: {e}\n{}", i.yaml))
}

/// The `not supported` notes as (line, what).
fn unsupported(i: &Imported) -> Vec<(usize, String)> {
    i.notes
        .iter()
        .filter(|n| n.kind == Kind::NotSupported)
        .map(|n| (n.pos.line, n.what.clone()))
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The typical LVS-DR keepalived.conf.
pub const TYPICAL: &str = "\
vrrp_instance LVS {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    virtual_ipaddress {
        192.168.58.133
    }
}

virtual_server 192.168.58.133 80 {
    delay_loop 6
    lb_algo rr
    lb_kind DR
    persistence_timeout 50
    protocol TCP

    real_server 192.168.58.135 80 {
        weight 1
        HTTP_GET {
            url {
                path /
                digest 9b3a0c85a887a256d6939da88aabd8cd
            }
            connect_timeout 3
            nb_get_retry 3
            connect_port 80
            delay_before_retry 3
        }
    }
    real_server 192.168.58.136 80 {
        weight 1
        HTTP_GET {
            url {
                path /
                digest 9b3a0c85a887a256d6939da88aabd8cd
            }
            connect_timeout 3
            nb_get_retry 3
            connect_port 80
            delay_before_retry 3
        }
    }
}
";

#[test]
fn the_typical_lvs_dr_file_imports_completely() {
    let i = import(TYPICAL);
    assert!(i.complete(), "{:?}", i.notes);
    assert!(i.notes.is_empty(), "{:?}", i.notes);
    let c = parsed(&i);
    assert_eq!(c.services.len(), 1);
    let s = &c.services[0];
    assert_eq!(
        (s.vip, s.port, s.scheduler),
        (ip("192.168.58.133"), 80, Scheduler::Rr)
    );
    let p = s.persistence.expect("persistence");
    assert_eq!((p.timeout, p.prefix_len), (Duration::from_secs(50), 32));
    let addrs: Vec<(IpAddr, u32)> = s.backends.iter().map(|b| (b.address, b.weight)).collect();
    assert_eq!(
        addrs,
        [(ip("192.168.58.135"), 1), (ip("192.168.58.136"), 1)]
    );
    for b in &s.backends {
        let ch = s.health.check_for(b.address).expect("a check");
        assert_eq!(ch.kind, CheckKind::HttpGet);
        assert_eq!(ch.path, "/");
        assert_eq!(
            ch.digest.as_deref(),
            Some("9b3a0c85a887a256d6939da88aabd8cd")
        );
        assert_eq!(ch.port, Some(80));
        assert_eq!(ch.interval, Duration::from_secs(6));
        assert_eq!(ch.timeout, Duration::from_secs(3));
        // nb_get_retry 3: three more checks after the first failure.
        assert_eq!(ch.retries, 4);
        assert_eq!(ch.retry_delay, Duration::from_secs(3));
    }
    assert_eq!(c.vrrp.len(), 1);
    let v = &c.vrrp[0];
    assert_eq!(
        (
            v.name.as_str(),
            v.interface.as_str(),
            v.virtual_router_id,
            v.priority
        ),
        ("LVS", "eth0", 51, 100)
    );
    assert_eq!(v.advert_interval, Duration::from_secs(1));
    assert_eq!(v.auth_pass.as_deref(), Some("1111"));
    assert_eq!(v.virtual_addresses, [(ip("192.168.58.133"), 32)]);
    assert!(v.preempt);
    assert!(
        i.yaml
            .contains("# state MASTER: every instance starts as backup here")
    );
}

#[test]
fn refused_schedulers_and_methods_are_named_with_their_lines() {
    let i = import(
        "virtual_server 10.0.0.1 80 {\n  lb_algo lblc\n  lb_kind NAT\n  real_server 10.0.0.2 80 {\n  }\n}\n\
         virtual_server 10.0.0.1 81 {\n  lb_algo sed\n  lb_kind TUN\n  protocol UDP\n}\n\
         virtual_server fwmark 1 {\n  lb_algo rr\n}\n",
    );
    assert_eq!(
        unsupported(&i),
        [
            (2, "lb_algo lblc".to_string()),
            (3, "lb_kind NAT".to_string()),
            (8, "lb_algo sed".to_string()),
            (12, "virtual_server fwmark 1".to_string()),
        ]
    );
    let why = |line| {
        i.notes
            .iter()
            .find(|n| n.pos.line == line)
            .unwrap()
            .to_string()
    };
    assert!(
        why(2).contains("the scheduler `lblc` is not supported"),
        "{}",
        why(2)
    );
    assert!(why(3).contains("NAT rewrites addresses"), "{}", why(3));
    assert!(why(12).starts_with(
        "keepalived.conf:12: virtual_server fwmark 1: not supported: a firewall-mark"
    ));
    let c = parsed(&i);
    assert_eq!(c.services.len(), 2, "the fwmark service is left out");
    assert_eq!(c.services[0].scheduler, Scheduler::Wrr);
    assert!(c.services[1].forward.tunnel().is_some());
    assert_eq!(c.services[1].protocol, config::Protocol::Udp);
    assert!(
        i.yaml
            .contains("# lb_kind NAT is not supported: imported as direct routing")
    );
}

#[test]
fn checks_map_with_keepalived_defaults() {
    let i = import(
        "virtual_server 10.0.0.1 80 {\n  alpha\n  virtualhost www.example.com\n\
           real_server 10.0.0.2 8080 {\n    weight 3\n    MISC_CHECK {\n      misc_path \"/bin/chk a b\"\n      misc_timeout 4\n    }\n  }\n\
           real_server 10.0.0.3 80 {\n    TCP_CHECK {\n      connect_timeout 0.5\n    }\n    SSL_GET {\n      url {\n        path /h\n        status_code 200-202 404\n      }\n    }\n  }\n\
           real_server 10.0.0.4 80 {\n    SSL_GET {\n      url {\n        path /h\n        status_code 200-202 404\n      }\n    }\n  }\n}\n",
    );
    assert_eq!(
        unsupported(&i),
        [
            (4, "real_server 10.0.0.2 8080".to_string()),
            (15, "SSL_GET".to_string())
        ]
    );
    let c = parsed(&i);
    let s = &c.services[0];
    let exec = s.health.check_for(ip("10.0.0.2")).unwrap();
    assert_eq!(exec.kind, CheckKind::Exec);
    assert_eq!(exec.command.as_deref(), Some("/bin/chk a b"));
    assert_eq!(exec.timeout, Duration::from_secs(4));
    // keepalived: MISC_CHECK's retry defaults to 0 (down at the first failure); the check
    // keeps the real server's own port 8080.
    assert_eq!((exec.retries, exec.port, exec.alpha), (1, Some(8080), true));
    assert_eq!(exec.interval, Duration::from_secs(60));
    assert_eq!(s.backends[0].weight, 3);
    let tcp = s.health.check_for(ip("10.0.0.3")).unwrap();
    assert_eq!(
        (tcp.kind, tcp.timeout),
        (CheckKind::Tcp, Duration::from_millis(500))
    );
    assert_eq!((tcp.retries, tcp.retry_delay), (2, Duration::from_secs(1)));
    let https = s.health.check_for(ip("10.0.0.4")).unwrap();
    assert_eq!(https.kind, CheckKind::HttpsGet);
    assert_eq!(https.status, [200, 201, 202, 404]);
    assert_eq!(https.host.as_deref(), Some("www.example.com"));
    assert_eq!(https.timeout, Duration::from_secs(5));
    assert_eq!(https.retry_delay, Duration::from_secs(3));
}

#[test]
fn service_options_persistence_and_groups() {
    let i = import(
        "virtual_server_group G {\n  10.0.0.3-5 80\n  fwmark 7\n}\n\
         virtual_server group G {\n  lb_algo wlc\n  persistence_timeout 30\n  persistence_granularity 24\n\
           sorry_server 10.0.0.9 80\n  quorum 2\n  hysteresis 1\n\
           real_server 10.0.0.10 80 {\n    inhibit_on_failure\n    notify_up /bin/up\n    notify_down \"/bin/down x\"\n  }\n}\n",
    );
    assert_eq!(unsupported(&i), [(3, "fwmark 7".to_string())]);
    let c = parsed(&i);
    let vips: Vec<IpAddr> = c.services.iter().map(|s| s.vip).collect();
    assert_eq!(vips, [ip("10.0.0.3"), ip("10.0.0.4"), ip("10.0.0.5")]);
    let s = &c.services[2];
    assert_eq!(s.scheduler, Scheduler::Wlc);
    let p = s.persistence.unwrap();
    assert_eq!((p.timeout, p.prefix_len), (Duration::from_secs(30), 24));
    let h = &s.health;
    assert_eq!(h.sorry_server, Some(ip("10.0.0.9")));
    assert_eq!(
        (h.quorum, h.hysteresis, h.inhibit_on_failure),
        (Some(2), 1, true)
    );
    assert_eq!(h.notify_up.as_deref(), Some("/bin/up"));
    assert_eq!(h.notify_down.as_deref(), Some("/bin/down x"));
}

#[test]
fn vrrp_mapping_and_its_refusals() {
    let i = import(
        "vrrp_script chk {\n  script \"pidof x\"\n  interval 2\n  weight -20\n  fall 2\n}\n\
         vrrp_instance A {\n  interface eth0\n  virtual_router_id 7\n  priority 150\n  advert_int 0.5\n  version 3\n\
           nopreempt\n  preempt_delay 10\n  garp_master_refresh 60\n  garp_master_delay 2\n  garp_master_repeat 3\n\
           unicast_peer {\n    10.0.0.8\n  }\n  virtual_ipaddress {\n    10.0.0.1/24 dev eth1\n    10.0.0.2 label eth0:1\n  }\n\
           track_script {\n    chk weight -30\n    nosuch\n  }\n  track_interface {\n    eth1\n  }\n\
           notify_master \"/bin/m a\"\n  use_vmac\n  authentication {\n    auth_type AH\n    auth_pass x\n  }\n}\n\
         vrrp_instance B {\n  interface eth0\n  virtual_router_id 8\n  virtual_ipaddress {\n    10.0.0.5\n  }\n}\n\
         vrrp_sync_group G {\n  group {\n    A\n    B\n  }\n  notify_master /bin/g\n}\n\
         global_defs {\n  router_id x\n  smtp_server 1.2.3.4\n}\nstatic_routes {\n  10.1.0.0/16 via 10.0.0.254\n}\n",
    );
    assert_eq!(
        unsupported(&i),
        [
            (22, "10.0.0.1/24 dev eth1".to_string()),
            (33, "use_vmac".to_string()),
            (34, "authentication".to_string()),
            (51, "notify_master /bin/g".to_string()),
            (55, "smtp_server 1.2.3.4".to_string()),
            (57, "static_routes".to_string()),
            // Found once every instance and script is read.
            (27, "nosuch".to_string()),
        ]
    );
    let needed: Vec<usize> = i
        .notes
        .iter()
        .filter(|n| n.kind == Kind::NotNeeded)
        .map(|n| n.pos.line)
        .collect();
    assert_eq!(needed, [23, 54], "the label and router_id");
    let c = parsed(&i);
    let a = &c.vrrp[0];
    assert_eq!((a.priority, a.version.number()), (150, 3));
    assert_eq!(a.advert_interval, Duration::from_millis(500));
    assert!(!a.preempt);
    assert_eq!(a.preempt_delay, Duration::from_secs(10));
    assert_eq!(a.garp_master_refresh, Duration::from_secs(60));
    assert_eq!((a.garp_count, a.garp_delay), (3, Duration::from_secs(2)));
    assert_eq!(a.unicast_peers, [ip("10.0.0.8")]);
    assert_eq!(
        a.virtual_addresses,
        [(ip("10.0.0.1"), 24), (ip("10.0.0.2"), 32)]
    );
    assert_eq!(a.auth_pass, None);
    assert_eq!(a.notify_master.as_deref(), Some("/bin/m a"));
    assert_eq!(a.track_script.len(), 1);
    assert_eq!(a.track_interface.len(), 1);
    assert_eq!(c.vrrp_scripts.len(), 1);
    assert_eq!(c.vrrp_scripts[0].interval, Duration::from_secs(2));
    assert_eq!(c.vrrp_sync_groups.len(), 1);
    assert_eq!(c.vrrp_sync_groups[0].instances, ["A", "B"]);
}

#[test]
fn conditional_lines_variables_and_parse_errors() {
    let i = import("@low priority 5\n$X=1\nglobal_defs {\n  router_id $X\n}\n");
    assert_eq!(
        unsupported(&i),
        [
            (1, "conditional line `@low`".to_string()),
            (2, "variable `$X=1`".to_string()),
            (4, "variable `$X`".to_string())
        ]
    );
    let e = import_text(
        "virtual_server 10.0.0.1 80 {\n  lb_algo rr\n",
        "k.conf",
        Path::new("/"),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "k.conf:1: this block is never closed: a `}` is missing"
    );
}

/// keepalived's doc/samples: each one imports, its YAML parses, and each note names a line of
/// its file that holds the keyword it names.
#[test]
fn every_keepalived_sample_imports_into_a_valid_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/keepalived");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("keepalived.conf")
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 25, "keepalived's 25 sample configurations");
    let mut services = 0;
    let mut instances = 0;
    for f in &files {
        let i = import_file(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let c = parsed(&i);
        services += c.services.len();
        instances += c.vrrp.len();
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for n in &i.notes {
            // `conditional line `@high``: the word in backquotes; else the keyword.
            let first = match n.what.split('`').nth(1) {
                Some(quoted) => quoted,
                None => n.what.split_whitespace().next().unwrap_or(""),
            };
            let first = first.split('=').next().unwrap_or(first);
            let line = lines.get(n.pos.line.wrapping_sub(1)).copied().unwrap_or("");
            assert!(
                line.contains(first),
                "{}: the note names line {} ({line:?}) for {first:?}: {n}",
                f.display(),
                n.pos.line
            );
        }
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        // A sample of keepalived features we lack: it must say so.
        if ["fwmark", "SMTP", "UDP_CHECK", "PING_CHECK", "conditional"]
            .iter()
            .any(|k| name.contains(k))
        {
            assert!(!i.complete(), "{name} imported as complete");
        }
    }
    assert!(
        services >= 20 && instances >= 30,
        "{services} services, {instances} instances"
    );
}
