//! `lb-ctl apply -f`: the changes it prints and makes, a second apply that changes nothing,
//! `--dry-run`, a file with errors that applies nothing (every error with its line), and
//! backends without a MAC reported and resolved later.
//!
//! Each test builds its own lab with [`CliLab`]
//! (`lb_tests::cli`: the seed topology without servers, director-1 `.134` with the VIP `.133`;
//! `docs/lab.md` has the rules kept here) and runs the real binary (`cargo build -p lb-ctl`
//! first; `cargo xtask test` does) with `--netns <director-1> --pin-dir /sys/fs/bpf/<lab
//! prefix>`. Dropping the lab detaches, removes the pins and deletes the namespaces, also when
//! a test fails. Without root, BPF or namespaces the tests fail saying what is missing.
//! There is no traffic but ARP.

use lb_tests::{
    cli::{CliLab, SERVICES_V1, list_rows},
    stats::{backend, service},
};

const SERVER_1: &str = "192.168.58.135";
const SERVER_2: &str = "192.168.58.136";
const SERVER_1_MAC: &str = "02:00:00:00:00:87";
const SERVER_2_MAC: &str = "02:00:00:00:00:88";

/// V1 with `web` renamed to `www`, one of its backends reweighted and the other drained, one
/// backend of `dns` removed and `syslog` removed.
const SERVICES_V2: &str = "\
services:
  - name: www
    vip: 192.168.58.133
    port: 80
    protocol: tcp
    scheduler: rr
    backends:
      - address: 192.168.58.135
        weight: 5
      - address: 192.168.58.136
        weight: 0
  - name: dns
    vip: 192.168.58.133
    port: 5353
    protocol: udp
    backends:
      - address: 192.168.58.135
";

/// Three errors: an unknown key (line 5), a backend port that differs from the service's
/// (line 8) and a duplicate name (line 9).
const SERVICES_BAD: &str = "\
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    colour: blue
    backends:
      - address: 192.168.58.135
        port: 8080
  - name: web
    vip: 192.168.58.133
    port: 443
    backends:
      - address: 192.168.58.136
";

/// A backend nobody answers ARP for, and one that is not on the director's link.
const SERVICES_UNRESOLVED: &str = "\
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    backends:
      - address: 192.168.58.135
      - address: 192.168.58.199
      - address: 10.1.2.3
";

#[test]
fn apply_reapply_dry_run_and_change() {
    let net = CliLab::new();
    net.attach();

    let file = net.file("services.yaml", SERVICES_V1);
    let out = net.ctl(&["apply", "-f", &file]).ok();
    assert_eq!(out.stderr, "", "no warnings expected:\n{out}");
    assert_eq!(
        out.stdout,
        format!(
            "+ service web: TCP 192.168.58.133:80 rr\n\
             +   backend 192.168.58.135:80 weight 2 (service web)\n\
             +   backend 192.168.58.136:80 weight 1 (service web)\n\
             + service dns: UDP 192.168.58.133:5353 wrr\n\
             +   backend 192.168.58.135:5353 weight 1 (service dns)\n\
             +   backend 192.168.58.136:5353 weight 1 (service dns)\n\
             + service syslog: UDP 192.168.58.133:514 wrr\n\
             +   backend 192.168.58.136:514 weight 1 (service syslog)\n\
             applied {file}: 8 change(s)\n"
        ),
        "{out}"
    );

    let list_v1 = net.list();
    assert!(
        list_v1.starts_with("XDP director (lb-ctl): 3 service(s), attached to eth0; "),
        "{list_v1}"
    );
    assert_eq!(
        list_rows(&list_v1),
        [
            "TCP 192.168.58.133:80 rr web",
            "-> 192.168.58.135:80 Route 2 0 0 0 0 0 up",
            "-> 192.168.58.136:80 Route 1 0 0 0 0 0 up",
            "UDP 192.168.58.133:514 wrr syslog",
            "-> 192.168.58.136:514 Route 1 0 0 0 0 0 up",
            "UDP 192.168.58.133:5353 wrr dns",
            "-> 192.168.58.135:5353 Route 1 0 0 0 0 0 up",
            "-> 192.168.58.136:5353 Route 1 0 0 0 0 0 up",
        ],
        "{list_v1}"
    );
    // The MACs are the real servers' own, from ARP.
    let stats_v1 = net.stats_json();
    for name in ["web", "dns"] {
        let s = service(&stats_v1, name);
        assert_eq!(backend(s, SERVER_1)["mac"], SERVER_1_MAC, "{s:#}");
        assert_eq!(backend(s, SERVER_2)["mac"], SERVER_2_MAC, "{s:#}");
        assert_eq!(backend(s, SERVER_1)["usable"], true, "{s:#}");
    }

    // The same file again: nothing to do.
    let out = net.ctl(&["apply", "-f", &file]).ok();
    assert_eq!(
        out.stdout,
        format!("no changes: the data path already matches {file}\n"),
        "{out}"
    );
    assert_eq!(out.stderr, "", "{out}");

    // A dry run of the changed file says what would change, and changes nothing.
    let file_v2 = net.file("services-v2.yaml", SERVICES_V2);
    let changes = "\
~ service www: renamed from web
~   backend 192.168.58.135:80 weight 2 -> 5 (service www)
~   backend 192.168.58.136:80 weight 1 -> 0 (drain) (service www)
-   backend 192.168.58.136:5353 (service dns)
- service syslog: UDP 192.168.58.133:514
";
    let out = net.ctl(&["apply", "-f", &file_v2, "--dry-run"]).ok();
    assert_eq!(
        out.stdout,
        format!("{changes}dry run: 5 change(s) not applied\n"),
        "{out}"
    );
    assert_eq!(out.stderr, "", "{out}");
    assert_eq!(net.list(), list_v1, "a dry run changed the data path");
    // Services and backends, not the data-path reasons: the director's own traffic (ICMP,
    // ARP) may arrive meanwhile.
    assert_eq!(
        net.stats_json()["services"],
        stats_v1["services"],
        "a dry run changed the data path"
    );

    // For real.
    let out = net.ctl(&["apply", "-f", &file_v2]).ok();
    assert_eq!(
        out.stdout,
        format!("{changes}applied {file_v2}: 5 change(s)\n"),
        "{out}"
    );
    let list_v2 = net.list();
    assert!(
        list_v2.starts_with("XDP director (lb-ctl): 2 service(s), attached to eth0; "),
        "{list_v2}"
    );
    assert_eq!(
        list_rows(&list_v2),
        [
            "TCP 192.168.58.133:80 rr www",
            "-> 192.168.58.135:80 Route 5 0 0 0 0 0 up",
            "-> 192.168.58.136:80 Route 0 0 0 0 0 0 draining",
            "UDP 192.168.58.133:5353 wrr dns",
            "-> 192.168.58.135:5353 Route 1 0 0 0 0 0 up",
        ],
        "{list_v2}"
    );
    let out = net.ctl(&["apply", "-f", &file_v2]).ok();
    assert_eq!(
        out.stdout,
        format!("no changes: the data path already matches {file_v2}\n"),
        "{out}"
    );

    // And back: the first file undoes it all.
    let out = net.ctl(&["apply", "-f", &file]).ok();
    assert!(
        out.stdout
            .ends_with(&format!("applied {file}: 6 change(s)\n")),
        "{out}"
    );
    assert_eq!(list_rows(&net.list()), list_rows(&list_v1));
}

#[test]
fn a_file_with_errors_applies_nothing() {
    let net = CliLab::new();
    net.attach();
    net.apply("services.yaml", SERVICES_V1).ok();
    let before = net.list();

    let bad = net.file("bad.yaml", SERVICES_BAD);
    let out = net.ctl(&["apply", "-f", &bad]).fails();
    let diagnostics: Vec<&str> = out
        .stderr
        .lines()
        .map(|l| l.strip_prefix("lb-ctl: ").unwrap_or(l))
        .filter(|l| l.starts_with(&bad))
        .collect();
    let expected = [
        format!("{bad}:5: services[0].colour: "),
        format!("{bad}:8: services[0].backends[0].port: "),
        format!("{bad}:9: services[1].name: "),
    ];
    assert_eq!(diagnostics.len(), expected.len(), "{out}");
    for (line, want) in diagnostics.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()),
            "expected {want}...:\n{out}"
        );
    }
    assert!(
        out.stderr.ends_with("3 errors; nothing was applied\n"),
        "{out}"
    );
    assert_eq!(
        net.list(),
        before,
        "a file with errors changed the data path"
    );

    // The same with --dry-run, and for a file that does not exist.
    let out = net.ctl(&["apply", "-f", &bad, "--dry-run"]).fails();
    assert!(
        out.stderr.contains("3 errors; nothing was applied"),
        "{out}"
    );
    let missing = net.path("missing.yaml");
    let out = net.ctl(&["apply", "-f", &missing]).fails();
    assert!(
        out.stderr
            .contains(&format!("{missing}: cannot read the file: ")),
        "{out}"
    );
    assert_eq!(net.list(), before);
}

#[test]
fn unresolvable_and_off_link_backends_are_reported() {
    let net = CliLab::new();
    net.attach();
    let file = net.file("services.yaml", SERVICES_UNRESOLVED);
    let out = net
        .ctl(&["apply", "-f", &file, "--resolve-timeout", "500ms"])
        .ok();
    assert!(
        out.stdout
            .starts_with("+ service web: TCP 192.168.58.133:80 wrr\n"),
        "{out}"
    );
    assert!(
        out.stdout
            .ends_with(&format!("applied {file}: 4 change(s)\n")),
        "{out}"
    );
    let warnings: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "two warnings expected:\n{out}");
    let nobody = warnings
        .iter()
        .find(|w| w.starts_with("warning: backend 192.168.58.199:80 of service web: no MAC"))
        .unwrap_or_else(|| panic!("no warning about 192.168.58.199:\n{out}"));
    assert!(nobody.ends_with("it gets no traffic"), "{nobody}");
    let off_link = warnings
        .iter()
        .find(|w| w.starts_with("warning: backend 10.1.2.3:80 of service web: no MAC"))
        .unwrap_or_else(|| panic!("no warning about 10.1.2.3:\n{out}"));
    assert!(
        off_link.contains("10.1.2.3 is not on the link of eth0"),
        "{off_link}"
    );

    assert_eq!(
        list_rows(&net.list()),
        [
            "TCP 192.168.58.133:80 wrr web",
            "-> 10.1.2.3:80 Route 1 0 0 0 0 0 unresolved",
            "-> 192.168.58.135:80 Route 1 0 0 0 0 0 up",
            "-> 192.168.58.199:80 Route 1 0 0 0 0 0 unresolved",
        ]
    );
    let stats = net.stats_json();
    let web = service(&stats, "web");
    assert_eq!(backend(web, SERVER_1)["usable"], true, "{web:#}");
    for addr in ["192.168.58.199", "10.1.2.3"] {
        assert_eq!(backend(web, addr)["usable"], false, "{web:#}");
    }

    // Applying it again changes nothing, and still says which backends get no traffic.
    let out = net
        .ctl(&["apply", "-f", &file, "--resolve-timeout", "200ms"])
        .ok();
    assert_eq!(
        out.stdout,
        format!("no changes: the data path already matches {file}\n"),
        "{out}"
    );
    assert_eq!(out.stderr.lines().count(), 2, "{out}");
    assert!(out.stderr.contains("192.168.58.199:80"), "{out}");
    assert!(out.stderr.contains("10.1.2.3:80"), "{out}");

    // Once someone holds 192.168.58.199 (real-server-2), applying again resolves it.
    net.server(1)
        .ip_batch(&["addr add 192.168.58.199/24 dev eth0".to_string()])
        .unwrap_or_else(|e| panic!("test setup failed: {e:#}"));
    let out = net
        .ctl(&["apply", "-f", &file, "--resolve-timeout", "2s"])
        .ok();
    assert_eq!(
        out.stdout,
        format!(
            "~   backend 192.168.58.199:80 mac 00:00:00:00:00:00 -> {SERVER_2_MAC}, resolved \
             (service web)\napplied {file}: 1 change(s)\n"
        ),
        "{out}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out}");
    assert!(out.stderr.contains("10.1.2.3:80"), "{out}");
    assert_eq!(
        list_rows(&net.list()),
        [
            "TCP 192.168.58.133:80 wrr web",
            "-> 10.1.2.3:80 Route 1 0 0 0 0 0 unresolved",
            "-> 192.168.58.135:80 Route 1 0 0 0 0 0 up",
            "-> 192.168.58.199:80 Route 1 0 0 0 0 0 up",
        ]
    );
}
