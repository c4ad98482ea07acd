//! `lb-ctl apply`, `list` and `stats` with an IPv4 and an IPv6 service in one file: the IPv6
//! backends' MACs come from NDP (the real servers' own), a backend nobody answers and one off
//! the link are reported, and the listings write IPv6 as ipvsadm does (`[addr]:port`, the
//! bare address in JSON and Prometheus labels, persistence `mask 64`); `genhash` fetches a
//! page from an IPv6 real server the way the http_get check does.
//!
//! The lab is [`CliLab`] (`lb_tests::cli`), whose hosts have their addresses of fd00:58::/64
//! on `eth0` already (`lb_tests::lab`); the test removes nothing by hand: dropping the lab
//! deletes its namespaces. There is no traffic but ARP, NDP and one HTTP request.

use std::time::{Duration, Instant};

use lb_tests::{
    cli::{CliLab, list_rows},
    env::Env,
    lab::{Host, LabSpec, Proc},
    stats::{backend, service},
};

const SERVER_1_MAC: &str = "02:00:00:00:00:87";
const SERVER_2_MAC: &str = "02:00:00:00:00:88";

const BOTH: &str = "\
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    scheduler: rr
    backends:
      - address: 192.168.58.135
      - address: 192.168.58.136
  - name: web6
    vip: \"fd00:58::133\"
    port: 80
    scheduler: mh
    table_size: 251
    persistence: { timeout: 50s, netmask: 64 }
    backends:
      - address: \"fd00:58::135\"
        weight: 2
      - address: \"fd00:58::136\"
      - address: \"fd00:58::199\"
      - address: \"fd00:99::1\"
";

/// An HTTP server on `host` answering `NAME\n` at `[addr]:8080` only.
fn http6(host: &Host, name: &str, addr: &str) -> Proc {
    let bin = env!("CARGO_BIN_EXE_lab-server");
    let args = [
        bin, "http", "--name", name, "--port", "8080", "--addr", addr,
    ];
    host.spawn(&args)
        .unwrap_or_else(|e| panic!("test setup failed: {e:#}"))
}

#[test]
fn ipv4_and_ipv6_services_applied_listed_and_counted() {
    let net = CliLab::new();
    net.attach();
    let file = net.file("services.yaml", BOTH);
    let out = net
        .ctl(&["apply", "-f", &file, "--resolve-timeout", "500ms"])
        .ok();
    assert_eq!(
        out.stdout,
        format!(
            "+ service web: TCP 192.168.58.133:80 rr\n\
             +   backend 192.168.58.135:80 weight 1 (service web)\n\
             +   backend 192.168.58.136:80 weight 1 (service web)\n\
             + service web6: TCP [fd00:58::133]:80 mh persistent 50s mask 64\n\
             +   backend [fd00:58::135]:80 weight 2 (service web6)\n\
             +   backend [fd00:58::136]:80 weight 1 (service web6)\n\
             +   backend [fd00:58::199]:80 weight 1 (service web6)\n\
             +   backend [fd00:99::1]:80 weight 1 (service web6)\n\
             applied {file}: 8 change(s)\n"
        ),
        "{out}"
    );
    let warnings: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "two warnings expected:\n{out}");
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "warning: backend [fd00:58::199]:80 of service web6: no MAC address (no neighbour \
             advertisement (NDP) from fd00:58::199 on eth0 within 500 ms"
        )),
        "{out}"
    );
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "warning: backend [fd00:99::1]:80 of service web6: no MAC address (backend \
             fd00:99::1 is not on the link of eth0"
        )),
        "{out}"
    );

    let list = net.list();
    assert!(
        list.starts_with("XDP director (lb-ctl): 2 service(s), attached to eth0; "),
        "{list}"
    );
    assert_eq!(
        list_rows(&list),
        [
            "TCP 192.168.58.133:80 rr web",
            "-> 192.168.58.135:80 Route 1 0 0 0 0 0 up",
            "-> 192.168.58.136:80 Route 1 0 0 0 0 0 up",
            "TCP [fd00:58::133]:80 mh persistent 50 mask 64 web6",
            "-> [fd00:58::135]:80 Route 2 0 0 0 0 0 up",
            "-> [fd00:58::136]:80 Route 1 0 0 0 0 0 up",
            "-> [fd00:58::199]:80 Route 1 0 0 0 0 0 unresolved",
            "-> [fd00:99::1]:80 Route 1 0 0 0 0 0 unresolved",
        ],
        "{list}"
    );

    // The MACs are the real servers' own, from NDP for IPv6 and ARP for IPv4.
    let stats = net.stats_json();
    let web6 = service(&stats, "web6");
    assert_eq!(web6["vip"], "fd00:58::133", "{web6:#}");
    assert_eq!(web6["persistence_timeout"], 50, "{web6:#}");
    assert_eq!(web6["persistence_prefix_len"], 64, "{web6:#}");
    assert_eq!(
        web6["persistence_netmask"], "ffff:ffff:ffff:ffff::",
        "{web6:#}"
    );
    for (addr, mac) in [
        ("fd00:58::135", SERVER_1_MAC),
        ("fd00:58::136", SERVER_2_MAC),
    ] {
        let b = backend(web6, addr);
        assert_eq!(
            (&b["mac"], &b["usable"]),
            (&mac.into(), &true.into()),
            "{b:#}"
        );
    }
    for addr in ["fd00:58::199", "fd00:99::1"] {
        assert_eq!(backend(web6, addr)["usable"], false, "{web6:#}");
    }
    let web = service(&stats, "web");
    assert_eq!(
        backend(web, "192.168.58.135")["mac"],
        SERVER_1_MAC,
        "{web:#}"
    );
    assert_eq!(web["persistence_prefix_len"], 0, "no persistence: {web:#}");

    let prometheus = net.ctl(&["stats", "--prometheus"]).ok().stdout;
    assert!(
        prometheus.lines().any(|l| l
            == "lb_backend_usable{service=\"web6\",vip=\"fd00:58::133\",port=\"80\",\
                protocol=\"tcp\",backend=\"[fd00:58::135]:80\",forward=\"route\"} 1"),
        "{prometheus}"
    );

    // The same file again: nothing to do, the same two warnings.
    let out = net
        .ctl(&["apply", "-f", &file, "--resolve-timeout", "200ms"])
        .ok();
    assert_eq!(
        out.stdout,
        format!("no changes: the data path already matches {file}\n"),
        "{out}"
    );
    assert_eq!(out.stderr.lines().count(), 2, "{out}");
}

#[test]
fn a_mixed_family_service_applies_nothing() {
    let net = CliLab::new();
    net.attach();
    let file = net.file(
        "mixed.yaml",
        "services:\n  - name: web6\n    vip: \"fd00:58::133\"\n    port: 80\n    backends:\n      \
         - address: 192.168.58.135\n",
    );
    let out = net.ctl(&["apply", "-f", &file]).fails();
    let diagnostics: Vec<&str> = out
        .stderr
        .lines()
        .map(|l| l.strip_prefix("lb-ctl: ").unwrap_or(l))
        .filter(|l| l.starts_with(&file))
        .collect();
    assert_eq!(
        diagnostics,
        [format!(
            "{file}:6: services[0].backends[0].address: 192.168.58.135 is an IPv4 address but \
             the service's VIP fd00:58::133 is IPv6; a backend must have the VIP's family, \
             since direct routing forwards the packet unchanged; a backend of the other \
             family needs `forward: tunnel`"
        )],
        "{out}"
    );
    assert!(
        out.stderr.ends_with("1 error; nothing was applied\n"),
        "{out}"
    );
    assert_eq!(list_rows(&net.list()), Vec::<String>::new());
}

/// `genhash` over IPv6, the http_get check's own client: the page of a server bound only to
/// fd00:58::135, with the default Host header `[fd00:58::135]`.
#[test]
fn genhash_fetches_from_an_ipv6_server() {
    let net = CliLab::new();
    let _server = http6(net.server(0), "six", "fd00:58::135");
    let out = net
        .ctl(&[
            "genhash",
            "--server",
            "fd00:58::135",
            "--port",
            "8080",
            "--url",
            "/",
            "-v",
        ])
        .ok();
    // The body is `six\n`.
    assert!(
        out.stdout
            .ends_with("MD5SUM = 5d2dfbea120f23e84e689374aa2ba84f\n"),
        "{out}"
    );
    assert!(out.stdout.starts_with("HTTP/1."), "{out}");
}

/// `lb-ctl run` with an IPv6 service: both backends resolved over NDP and checked over IPv6
/// (`http_get` to `[addr]:8080`); one server killed is marked down within interval x retries
/// and comes back up when it is started again; the listing follows; a new MAC announced by
/// NDP reaches the data path.
#[test]
fn the_daemon_checks_ipv6_backends() {
    let mut env = Env::attached(
        &LabSpec {
            start_servers: false,
            ..LabSpec::default()
        },
        &[],
    );
    let one = http6(env.server(0), "one", "fd00:58::135");
    let _two = http6(env.server(1), "two", "fd00:58::136");
    let file = env.file(
        "services:
  - name: web6
    vip: \"fd00:58::133\"
    port: 8080
    scheduler: rr
    check: {type: http_get, path: /, interval: 200ms, timeout: 200ms, retries: 2, retry_delay: 100ms}
    backends:
      - address: \"fd00:58::135\"
      - address: \"fd00:58::136\"
",
    );
    env.start_daemon(&file, &[]);
    let rows_with = |state1: &str| {
        vec![
            "TCP [fd00:58::133]:8080 rr web6".to_string(),
            format!("-> [fd00:58::135]:8080 Route 1 0 0 0 0 0 {state1}"),
            "-> [fd00:58::136]:8080 Route 1 0 0 0 0 0 up".to_string(),
        ]
    };
    let wait_rows = |env: &Env, want: Vec<String>| {
        let start = Instant::now();
        loop {
            let rows = list_rows(&env.list());
            if rows == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the listing never became {want:#?}; it is {rows:#?}\nlog:\n{}",
                env.daemon().lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let took = wait_rows(&env, rows_with("up"));
    eprintln!("both IPv6 backends up in the listing after {took:?}");

    let about =
        |what: &'static str| move |l: &str| l.contains(what) && l.contains("backend=fd00:58::135");
    let skip = env.daemon().lines().len();
    drop(one);
    let (line, took) = env.daemon().wait_log_after(
        skip,
        Duration::from_secs(3),
        about("backend down"),
        "backend down",
    );
    eprintln!("fd00:58::135 down after {took:?}: {line}");
    assert!(
        line.contains("from=up") && line.contains("to=down"),
        "{line}"
    );
    wait_rows(&env, rows_with("down"));

    let skip = env.daemon().lines().len();
    let _one = http6(env.server(0), "one", "fd00:58::135");
    let (line, took) = env.daemon().wait_log_after(
        skip,
        Duration::from_secs(3),
        about("backend up"),
        "backend up",
    );
    eprintln!("fd00:58::135 up again after {took:?}: {line}");
    wait_rows(&env, rows_with("up"));
    let stats = env.stats();
    let web6 = service(&stats, "web6");
    for (addr, mac) in [
        ("fd00:58::135", SERVER_1_MAC),
        ("fd00:58::136", SERVER_2_MAC),
    ] {
        assert_eq!(backend(web6, addr)["mac"], mac, "{web6:#}");
    }

    // real-server-1 gets a new MAC and announces it (an unsolicited neighbour advertisement,
    // `ndisc_notify`): the daemon follows the IPv6 neighbour table.
    let skip = env.daemon().lines().len();
    env.server(0)
        .exec_ok(&["sysctl", "-q", "-w", "net.ipv6.conf.eth0.ndisc_notify=1"])
        .and_then(|_| {
            env.server(0)
                .ip_batch(&["link set eth0 address 02:00:00:00:00:97".into()])
        })
        .unwrap_or_else(|e| panic!("test setup failed: {e:#}"));
    let (line, took) = env.daemon().wait_log_after(
        skip,
        Duration::from_secs(3),
        |l| l.contains("backend MAC changed") && l.contains("backend=fd00:58::135"),
        "backend MAC changed",
    );
    eprintln!("new MAC of fd00:58::135 followed after {took:?}: {line}");
    assert!(line.contains("new=02:00:00:00:00:97"), "{line}");
    let start = Instant::now();
    loop {
        let stats = env.stats();
        let mac = backend(service(&stats, "web6"), "fd00:58::135")["mac"].clone();
        if mac == "02:00:00:00:00:97" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the data path kept {mac} for fd00:58::135"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
