//! `lb-ctl export --ipvsadm` and `--yaml` on maps that `apply` filled: the demo's services
//! (`examples/services.yaml`) and a file with what the demo lacks (persistence with a mask,
//! mh with its table size, weight 0, an all-ports service). `--ipvsadm` must equal, line for
//! line, the rules `ipvsadm -S -n` prints for the same IPVS table, written here by hand from
//! ipvsadm's format (it sorts services by family, protocol, address and port, and real
//! servers by address and port; so does export, so the texts compare as they are). Then the
//! round trip: `--yaml`, parsed by the config parser, has every field the maps hold equal to
//! the original file's; applied on fresh pins (detached and attached again) its `--ipvsadm`
//! is the same as before.
//!
//! The lab is [`CliLab`] (`lb_tests::cli`): director-1 with real servers `.135` and `.136`
//! (and `fd00:58::135`, `::136`) on its link answering ARP and NDP; no traffic but that.

use lb_ctl::config::{self, Config, ServiceConfig};
use lb_tests::cli::CliLab;

const DEMO: &str = include_str!("../../examples/services.yaml");

/// `ipvsadm -S -n` of the demo's services in IPVS.
const DEMO_RULES: &str = "\
-A -t 192.168.58.133:80 -s rr
-a -t 192.168.58.133:80 -r 192.168.58.135:80 -g -w 1
-a -t 192.168.58.133:80 -r 192.168.58.136:80 -g -w 1
-A -u 192.168.58.133:5353 -s wrr
-a -u 192.168.58.133:5353 -r 192.168.58.135:5353 -g -w 1
-a -u 192.168.58.133:5353 -r 192.168.58.136:5353 -g -w 1
-A -t [fd00:58::133]:80 -s rr
-a -t [fd00:58::133]:80 -r [fd00:58::135]:80 -g -w 1
-a -t [fd00:58::133]:80 -r [fd00:58::136]:80 -g -w 1
";

/// What the demo does not have.
const MORE: &str = "\
services:
  - name: sticky
    vip: 192.168.58.133
    port: 443
    scheduler: wlc
    persistence: {timeout: 50s, netmask: 255.255.255.0}
    backends:
      - address: 192.168.58.136
        weight: 3
      - address: 192.168.58.135
        weight: 0
  - name: all-ports
    vip: 192.168.58.133
    port: 0
    scheduler: sh
    table_size: 251
    persistence: {timeout: 300s}
    backends:
      - address: 192.168.58.135
  - name: maglev6
    vip: \"fd00:58::133\"
    port: 8080
    scheduler: mh
    persistence: {timeout: 60s, netmask: 64}
    backends:
      - address: \"fd00:58::136\"
        weight: 2
      - address: \"fd00:58::135\"
  - name: dns6
    vip: \"fd00:58::133\"
    port: 53
    protocol: udp
    scheduler: rr
    backends: []
";

/// `ipvsadm -S -n` of [`MORE`] in IPVS.
const MORE_RULES: &str = "\
-A -t 192.168.58.133:0 -s sh -p 300
-a -t 192.168.58.133:0 -r 192.168.58.135:0 -g -w 1
-A -t 192.168.58.133:443 -s wlc -p 50 -M 255.255.255.0
-a -t 192.168.58.133:443 -r 192.168.58.135:443 -g -w 0
-a -t 192.168.58.133:443 -r 192.168.58.136:443 -g -w 3
-A -t [fd00:58::133]:8080 -s mh -b mh-port -p 60 -M 64
-a -t [fd00:58::133]:8080 -r [fd00:58::135]:8080 -g -w 1
-a -t [fd00:58::133]:8080 -r [fd00:58::136]:8080 -g -w 2
-A -u [fd00:58::133]:53 -s rr
";

/// Applies `file`, checks `export --ipvsadm` against `rules`, then the YAML round trip.
fn export_and_back(file: &str, rules: &str) {
    let net = CliLab::new();
    net.attach();
    let path = net.file("services.yaml", file);
    net.ctl(&["apply", "-f", &path, "--resolve-timeout", "500ms"])
        .ok();

    let out = net.ctl(&["export", "--ipvsadm"]).ok();
    assert_lines(&out.stdout, rules);
    assert_eq!(out.stderr, "", "{out}");

    let yaml = net.ctl(&["export", "--yaml"]).ok().stdout;
    assert!(
        yaml.starts_with("# Exported by `lb-ctl export --yaml`"),
        "{yaml}"
    );
    let original = config::parse(file, "services.yaml").unwrap_or_else(|e| panic!("{e}"));
    let exported = config::parse(&yaml, "export.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    same_services(&original, &exported, &yaml);

    // Fresh pins: detaching the last interface removes them all.
    net.ctl(&["detach", "eth0"]).ok();
    net.attach();
    assert_eq!(net.ctl(&["export", "--ipvsadm"]).ok().stdout, "");
    let path = net.file("exported.yaml", &yaml);
    net.ctl(&["apply", "-f", &path, "--resolve-timeout", "500ms"])
        .ok();
    let again = net.ctl(&["export", "--ipvsadm"]).ok();
    assert_lines(&again.stdout, rules);
    assert_eq!(net.ctl(&["export", "--yaml"]).ok().stdout, yaml);
}

#[track_caller]
fn assert_lines(got: &str, want: &str) {
    let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert_eq!(a, b, "line {}; got:\n{got}", i + 1);
    }
    assert_eq!(g.len(), w.len(), "got:\n{got}");
}

/// Every field the maps hold, service by service (by name), backend by backend (by address).
fn same_services(original: &Config, exported: &Config, yaml: &str) {
    assert_eq!(original.services.len(), exported.services.len(), "{yaml}");
    for o in &original.services {
        let e: &ServiceConfig = (exported.services.iter())
            .find(|e| e.name == o.name)
            .unwrap_or_else(|| panic!("no service {} in\n{yaml}", o.name));
        let what = &o.name;
        assert_eq!(e.vip, o.vip, "{what}");
        assert_eq!(e.port, o.port, "{what}");
        assert_eq!(e.protocol, o.protocol, "{what}");
        assert_eq!(e.scheduler, o.scheduler, "{what}");
        if o.scheduler.is_hashed() && !o.backends.is_empty() {
            assert_eq!(e.table_size, o.table_size, "{what}");
        }
        assert_eq!(e.persistence, o.persistence, "{what}");
        assert_eq!(e.forward, o.forward, "{what}");
        assert_eq!(e.backends.len(), o.backends.len(), "{what}:\n{yaml}");
        for ob in &o.backends {
            let eb = (e.backends.iter())
                .find(|b| b.address == ob.address)
                .unwrap_or_else(|| panic!("{what}: no backend {} in\n{yaml}", ob.address));
            assert_eq!(eb.port, ob.port, "{what} {}", ob.address);
            assert_eq!(eb.weight, ob.weight, "{what} {}", ob.address);
            assert_eq!(eb.forward, ob.forward, "{what} {}", ob.address);
        }
    }
}

#[test]
fn the_demo_services_export_as_ipvsadm_rules_and_back() {
    export_and_back(DEMO, DEMO_RULES);
}

#[test]
fn persistence_masks_tables_weight_zero_and_all_ports_export_and_back() {
    export_and_back(MORE, MORE_RULES);
}
