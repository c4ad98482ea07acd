//! `lb-ctl stats` in its three formats (text, `--json`, `--prometheus`), `--watch`, and the
//! counters `list` shows, after exactly five UDP datagrams from the client to a service.
//!
//! Each test builds its own lab with [`CliLab`]
//! (`lb_tests::cli`: the seed topology without servers, director-1 `.134` with the VIP `.133`;
//! `docs/lab.md` has the rules kept here) and runs the real binary (`cargo build -p lb-ctl`
//! first; `cargo xtask test` does) with `--netns <director-1> --pin-dir /sys/fs/bpf/<lab
//! prefix>`. Dropping the lab detaches, removes the pins and deletes the namespaces, also when
//! a test fails. Without root, BPF or namespaces the tests fail saying what is missing.

use std::{
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    cli::{CliLab, SERVICES_V1, datapath, list_rows, normalize},
    stats::service,
};
use serde_json::Value;

const VIP: &str = "192.168.58.133";

#[test]
fn stats_in_all_three_formats() {
    const PAYLOAD: &[u8] = b"lb-ctl cli test";
    const SENT: u64 = 5;
    // IPv4 header, UDP header, payload: what the counters count as bytes.
    const IP_BYTES: u64 = 20 + 8 + PAYLOAD.len() as u64;

    let net = CliLab::new();
    net.attach();
    net.apply("services.yaml", SERVICES_V1).ok();

    // Nothing sent yet: every counter of the services is 0, and the text has every row.
    let text = net.ctl(&["stats"]).ok().stdout;
    let rows: Vec<String> = text.lines().map(normalize).collect();
    assert_eq!(
        rows[0], "Prot LocalAddress:Port / Backend Conns InPkts InBytes",
        "{text}"
    );
    for row in [
        "TCP 192.168.58.133:80 (web) 0 0 0",
        "-> 192.168.58.135:80 0 0 0",
        "UDP 192.168.58.133:514 (syslog) 0 0 0",
        "UDP 192.168.58.133:5353 (dns) 0 0 0",
        "-> 192.168.58.136:5353 0 0 0",
        "Data path (packets by what was done with them):",
    ] {
        assert!(rows.iter().any(|r| r == row), "no row `{row}` in:\n{text}");
    }
    for reason in lb_common::Reason::ALL {
        assert!(
            rows.iter()
                .any(|r| r.starts_with(&format!("{} ", reason.name()))),
            "no data-path row for {} in:\n{text}",
            reason.name()
        );
    }

    // Five datagrams from the client to the UDP service.
    net.send_udp_from_client(VIP.parse().expect("VIP"), 5353, PAYLOAD, SENT as usize);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stats = net.stats_json();
    while service(&stats, "dns")["packets"].as_u64() < Some(SENT) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        stats = net.stats_json();
    }
    // Nothing more arrives later.
    thread::sleep(Duration::from_millis(200));
    let stats = net.stats_json();

    // JSON: every field the manual names, and exactly what was sent.
    let dns = service(&stats, "dns");
    assert_eq!(dns["vip"], VIP, "{dns:#}");
    assert_eq!(dns["port"], 5353, "{dns:#}");
    assert_eq!(dns["protocol"], "udp", "{dns:#}");
    assert_eq!(dns["scheduler"], "wrr", "{dns:#}");
    assert_eq!(dns["packets"], SENT, "{dns:#}");
    assert_eq!(dns["bytes"], SENT * IP_BYTES, "{dns:#}");
    assert_eq!(dns["connections"], 1, "one flow:\n{dns:#}");
    let backends = dns["backends"].as_array().expect("backends[]");
    assert_eq!(backends.len(), 2, "{dns:#}");
    for b in backends {
        for key in [
            "address",
            "port",
            "weight",
            "mac",
            "usable",
            "packets",
            "bytes",
            "connections",
            "active_connections",
            "inactive_connections",
        ] {
            assert!(b.get(key).is_some(), "no {key} in backend:\n{b:#}");
        }
    }
    // One flow: all of it to one backend.
    let (hit, idle): (Vec<&Value>, Vec<&Value>) = backends.iter().partition(|b| b["packets"] != 0);
    assert_eq!(hit.len(), 1, "one backend gets the flow:\n{dns:#}");
    let (hit, idle) = (hit[0], idle[0]);
    assert_eq!(hit["packets"], SENT, "{dns:#}");
    assert_eq!(hit["bytes"], SENT * IP_BYTES, "{dns:#}");
    assert_eq!(hit["connections"], 1, "{dns:#}");
    assert_eq!(
        hit["active_connections"], 0,
        "UDP is never active:\n{dns:#}"
    );
    assert_eq!(hit["inactive_connections"], 1, "{dns:#}");
    assert_eq!(idle["packets"], 0, "{dns:#}");
    for name in ["web", "syslog"] {
        let s = service(&stats, name);
        assert_eq!(s["packets"], 0, "{s:#}");
        assert_eq!(s["connections"], 0, "{s:#}");
    }
    assert_eq!(stats["flows"], 1, "{stats:#}");
    let reasons = stats["datapath"].as_array().expect("datapath[]");
    assert_eq!(reasons.len(), lb_common::Reason::ALL.len(), "{stats:#}");
    assert_eq!(datapath(&stats, "forwarded"), ("tx".to_string(), SENT));
    assert_eq!(datapath(&stats, "drop_no_backend"), ("drop".to_string(), 0));
    assert_eq!(datapath(&stats, "pass_not_ip").0, "pass");

    let hit_addr = hit["address"].as_str().expect("address");
    let bytes = SENT * IP_BYTES;

    // list: the flow is an InActConn of the backend that got it.
    let list = net.list();
    assert!(
        list.contains("; connection table 1 of 262144 in use, half-open 0 of 262144\n"),
        "{list}"
    );
    let rows = list_rows(&list);
    let row = format!("-> {hit_addr}:5353 Route 1 0 1 1 {SENT} {bytes} up");
    assert!(rows.contains(&row), "no row `{row}` in:\n{list}");

    // Text.
    let text = net.ctl(&["stats"]).ok().stdout;
    let rows: Vec<String> = text.lines().map(normalize).collect();
    for row in [
        format!("UDP 192.168.58.133:5353 (dns) 1 {SENT} {bytes}"),
        format!("-> {hit_addr}:5353 1 {SENT} {bytes}"),
        format!("forwarded tx {SENT}"),
        "connections tracked: 1 of 262144; half-open: 0 of 262144".to_string(),
    ] {
        assert!(rows.contains(&row), "no row `{row}` in:\n{text}");
    }

    // Prometheus.
    let prom = net.ctl(&["stats", "--prometheus"]).ok().stdout;
    let labels = |name: &str, port: u16, proto: &str| {
        format!("service=\"{name}\",vip=\"{VIP}\",port=\"{port}\",protocol=\"{proto}\"")
    };
    for line in [
        "# TYPE lb_service_packets_total counter".to_string(),
        "# TYPE lb_backend_active_connections gauge".to_string(),
        format!(
            "lb_service_packets_total{{{}}} {SENT}",
            labels("dns", 5353, "udp")
        ),
        format!(
            "lb_service_bytes_total{{{}}} {bytes}",
            labels("dns", 5353, "udp")
        ),
        format!("lb_service_packets_total{{{}}} 0", labels("web", 80, "tcp")),
        format!(
            "lb_backend_packets_total{{{},backend=\"{hit_addr}:5353\",forward=\"route\"}} {SENT}",
            labels("dns", 5353, "udp")
        ),
        format!(
            "lb_backend_weight{{{},backend=\"192.168.58.135:80\",forward=\"route\"}} 2",
            labels("web", 80, "tcp")
        ),
        format!("lb_datapath_packets_total{{reason=\"forwarded\",action=\"tx\"}} {SENT}"),
        "lb_flows 1".to_string(),
    ] {
        assert!(
            prom.lines().any(|l| l == line),
            "no line `{line}` in:\n{prom}"
        );
    }
    // Every sample belongs to a family declared before it.
    let mut declared = Vec::new();
    for l in prom.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            declared.push(rest.split(' ').next().unwrap_or_default().to_string());
        } else if !l.starts_with('#') {
            let name = l.split(['{', ' ']).next().unwrap_or_default();
            assert!(
                declared.last().is_some_and(|d| d == name),
                "sample `{l}` outside its family in:\n{prom}"
            );
        }
    }

    // --watch: two redraws, with rate columns, then it ends by itself.
    let start = Instant::now();
    let out = net.ctl(&["stats", "--watch", "0.2", "--count", "2"]).ok();
    assert!(start.elapsed() >= Duration::from_millis(400), "{out}");
    let headers: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("Prot "))
        .collect();
    assert_eq!(headers.len(), 2, "two redraws expected:\n{out}");
    assert!(
        headers
            .iter()
            .all(|h| normalize(h).ends_with("CPS InPPS InBPS")),
        "{out}"
    );
    assert!(
        !out.stdout.contains('\x1b'),
        "no screen control codes into a pipe:\n{out}"
    );
    let out = net.ctl(&["stats", "--watch", "0"]).fails();
    assert!(
        out.stderr
            .contains("--watch takes a positive number of seconds"),
        "{out}"
    );
}
