//! `forward: tunnel` through the `lb-ctl` binary: `apply` writes tunnel backends (IPIP and
//! GUE, an IPv6 one behind an IPv4 VIP, a configured source, a route backend beside them, one
//! without a route), `list` shows them as `Tunnel`, `stats --json` gives each one's method,
//! source and GUE port, and a route that moves moves the outer source: at the next `apply`,
//! and in `lb-ctl run` at its next reconcile tick, without a reload.
//!
//! The director of [`Env`] gets routes to two subnets behind real server 1 (10.20.0.0/16 and
//! fd00:20::/64) and a second address; nothing is sent but ARP and NDP: the tunnels' real
//! servers need not exist for what the control plane writes.

use std::time::Duration;

use lb_tests::{
    cli::list_rows,
    env::Env,
    lab_spec,
    stats::{backend, service},
    tunnel::{neighbour_entry, set_forwarding},
};

const TUNNELS: &str = "\
services:
  - name: tun
    vip: 192.168.58.133
    port: 80
    scheduler: rr
    forward: tunnel
    tunnel: {type: gue, port: 6080}
    backends:
      - address: 10.20.0.11
      - address: \"fd00:20::11\"
        tunnel: {type: ipip}
      - address: 10.20.0.12
        weight: 2
        tunnel: {source: 192.168.58.150}
      - address: 192.168.58.135
        forward: route
      - address: 10.99.0.1
";

/// The director's routes: both subnets via real server 1, which is on the link.
fn route_subnets(env: &Env) {
    env.lab
        .director(0)
        .ip_batch(&[
            "route add 10.20.0.0/16 via 192.168.58.135".to_string(),
            "route add fd00:20::/64 via fd00:58::135".to_string(),
            "addr add 192.168.58.160/32 dev eth0".to_string(),
        ])
        .unwrap_or_else(|e| panic!("test setup failed: {e:#}"));
}

/// The route to 10.20.0.0/16 now says `src 192.168.58.160`.
fn move_source(env: &Env) {
    env.lab
        .director(0)
        .ip_batch(&["route replace 10.20.0.0/16 via 192.168.58.135 src 192.168.58.160".into()])
        .unwrap_or_else(|e| panic!("test setup failed: {e:#}"));
}

#[test]
fn a_tunnel_service_applied_listed_and_following_its_route() {
    let env = Env::attached(&lab_spec!(start_servers: false), &[]);
    route_subnets(&env);
    let director = env.lab.director(0);
    set_forwarding(director, false).unwrap_or_else(|e| panic!("test setup failed: {e:#}"));
    let file = env.file(TUNNELS);
    let file = file.display().to_string();
    let out = env
        .ctl
        .out(&["apply", "-f", &file, "--resolve-timeout", "2s"])
        .ok();
    assert_eq!(
        out.stdout,
        format!(
            "+ service tun: TCP 192.168.58.133:80 rr\n\
             +   backend 10.20.0.11:80 weight 1 gue 6080 from 192.168.58.134 (service tun)\n\
             +   backend [fd00:20::11]:80 weight 1 ipip from fd00:58::134 (service tun)\n\
             +   backend 10.20.0.12:80 weight 2 gue 6080 from 192.168.58.150 (service tun)\n\
             +   backend 192.168.58.135:80 weight 1 (service tun)\n\
             +   backend 10.99.0.1:80 weight 1 gue 6080 without a source (service tun)\n\
             applied {file}: 6 change(s)\n"
        ),
        "{out}"
    );
    // Forwarding off: one warning per family the tunnel backends need (IPv4 and IPv6 outer
    // headers), naming the interface, the sysctl and the fix.
    let not_forwarding = |family: &str, v: &str| {
        format!(
            "warning: eth0 does not forward {family} (net.{v}.conf.eth0.forwarding=0): the \
             kernel answers the data path's next-hop lookups only for an interface that \
             forwards, so every packet to an {family} tunnel backend passes to the kernel \
             (pass_no_route) instead; turn it on with `sysctl -w net.{v}.conf.eth0.forwarding=1`\n"
        )
    };
    assert_eq!(
        out.stderr,
        format!(
            "warning: backend 10.99.0.1:80 of service tun: no tunnel source address (there is \
             no route to 10.99.0.1 in this network namespace; add one, or give the service a \
             `tunnel: {{ source: ... }}`); it gets no traffic\n{}{}",
            not_forwarding("IPv4", "ipv4"),
            not_forwarding("IPv6", "ipv6")
        ),
        "{out}"
    );
    // `list` ends with the same warnings, `stats --json` has them as `forwarding_off`.
    let listed = env.list();
    let warned: Vec<&str> = listed
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(
        warned,
        [
            not_forwarding("IPv4", "ipv4").trim_end(),
            not_forwarding("IPv6", "ipv6").trim_end()
        ],
        "{listed}"
    );
    assert_eq!(
        env.stats()["forwarding_off"],
        serde_json::json!([
            {"interface": "eth0", "family": "ipv4", "sysctl": "net.ipv4.conf.eth0.forwarding"},
            {"interface": "eth0", "family": "ipv6", "sysctl": "net.ipv6.conf.eth0.forwarding"},
        ])
    );
    set_forwarding(director, true).unwrap_or_else(|e| panic!("test setup failed: {e:#}"));

    // ipvsadm's Forward column: Tunnel for every tunnel backend, usable without a MAC.
    assert_eq!(
        list_rows(&env.list()),
        [
            "TCP 192.168.58.133:80 rr tun",
            "-> 10.20.0.11:80 Tunnel 1 0 0 0 0 0 up",
            "-> 10.20.0.12:80 Tunnel 2 0 0 0 0 0 up",
            "-> 10.99.0.1:80 Tunnel 1 0 0 0 0 0 unresolved",
            "-> 192.168.58.135:80 Route 1 0 0 0 0 0 up",
            "-> [fd00:20::11]:80 Tunnel 1 0 0 0 0 0 up",
        ]
    );
    let stats = env.stats();
    let tun = service(&stats, "tun");
    let b = |a: &str| backend(tun, a);
    assert_eq!(
        (
            &b("10.20.0.11")["forward"],
            &b("10.20.0.11")["tunnel_source"]
        ),
        (&"gue".into(), &"192.168.58.134".into()),
        "{tun:#}"
    );
    assert_eq!(b("10.20.0.11")["tunnel_port"], 6080, "{tun:#}");
    assert_eq!(b("10.20.0.11")["mac"], "00:00:00:00:00:00", "{tun:#}");
    assert_eq!(b("fd00:20::11")["forward"], "ipip", "{tun:#}");
    assert_eq!(b("fd00:20::11")["tunnel_source"], "fd00:58::134", "{tun:#}");
    assert!(b("fd00:20::11").get("tunnel_port").is_none(), "{tun:#}");
    assert_eq!(
        b("10.20.0.12")["tunnel_source"],
        "192.168.58.150",
        "{tun:#}"
    );
    assert_eq!(b("192.168.58.135")["forward"], "route", "{tun:#}");
    assert!(
        b("192.168.58.135").get("tunnel_source").is_none(),
        "{tun:#}"
    );
    assert_eq!(b("10.99.0.1")["usable"], false, "{tun:#}");

    // The same file: nothing to write. Then the route moves: only that backend changes.
    let again = env.ctl.out(&["apply", "-f", &file]).ok();
    assert!(again.stdout.starts_with("no changes"), "{again}");
    // Forwarding on: no warning of it anywhere.
    assert!(!again.stderr.contains("forward"), "{again}");
    assert!(!env.list().contains("warning"), "{}", env.list());
    assert!(env.stats().get("forwarding_off").is_none());
    move_source(&env);
    let moved = env.ctl.out(&["apply", "-f", &file]).ok();
    assert_eq!(
        moved.stdout,
        format!(
            "~   backend 10.20.0.11:80 forward gue 6080 from 192.168.58.134 -> gue 6080 from \
             192.168.58.160 (service tun)\n\
             applied {file}: 1 change(s)\n"
        ),
        "{moved}"
    );
}

#[test]
fn the_daemon_follows_a_tunnel_backends_route() {
    let mut env = Env::build(&lab_spec!(start_servers: false));
    route_subnets(&env);
    let file = env.file(
        "services:\n  - name: tun\n    vip: 192.168.58.133\n    port: 80\n    \
         forward: tunnel\n    backends:\n      - address: 10.20.0.11\n",
    );
    env.start_daemon(&file, &["--reconcile-interval", "300ms"]);
    let source = |env: &Env| {
        let stats = env.stats();
        backend(service(&stats, "tun"), "10.20.0.11")["tunnel_source"].clone()
    };
    assert_eq!(source(&env), "192.168.58.134");
    assert_eq!(
        backend(service(&env.stats(), "tun"), "10.20.0.11")["forward"],
        "ipip"
    );
    move_source(&env);
    let (line, took) = env.daemon().wait_log(
        Duration::from_secs(5),
        |l| l.contains("tunnel source changed with the route"),
        "tunnel source changed",
    );
    assert!(
        line.contains("old=192.168.58.134") && line.contains("new=192.168.58.160"),
        "{line}"
    );
    assert!(took < Duration::from_secs(2), "followed after {took:?}");
    let followed =
        lb_tests::lab::wait_until(Duration::from_secs(2), || source(&env) == "192.168.58.160");
    assert!(followed, "the map still says {}", source(&env));
    // Written as a route change, not as drift the reconcile had to repair.
    let lines = env.daemon().lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cause=\"route change\"") && l.contains("10.20.0.11:80")),
        "{}",
        lines.join("\n")
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("reconcile: the maps differed")),
        "{}",
        lines.join("\n")
    );
}

/// `lb-ctl run` with a tunnel backend behind real server 1 (the next hop, on the link) and
/// nothing that sends traffic (no check): a director that does not forward IPv4 is warned
/// about once, not at every reconcile tick, and once more when it is fixed; the next hop gets
/// a managed neighbour entry that the kernel resolves by itself (REACHABLE without a packet
/// sent to it), removed when a reload drops the backend.
#[test]
fn the_daemon_warns_about_forwarding_and_keeps_next_hops_resolved() {
    let mut env = Env::build(&lab_spec!(start_servers: false));
    route_subnets(&env);
    let director = env.lab.director(0).clone();
    set_forwarding(&director, false).unwrap_or_else(|e| panic!("test setup failed: {e:#}"));
    let tunnel = "services:\n  - name: tun\n    vip: 192.168.58.133\n    port: 80\n    \
                  forward: tunnel\n    backends:\n      - address: 10.20.0.11\n";
    let file = env.file(tunnel);
    env.start_daemon(&file, &["--reconcile-interval", "300ms"]);
    let warning = "interfaces that do not forward for tunnel backends: eth0 does not forward \
                   IPv4 (net.ipv4.conf.eth0.forwarding=0)";
    let (line, _) = env
        .daemon()
        .wait_log(Duration::from_secs(5), |l| l.contains(warning), warning);
    assert!(
        line.contains("turn it on with `sysctl -w net.ipv4.conf.eth0.forwarding=1`"),
        "{line}"
    );
    assert!(!line.contains("IPv6"), "only IPv4 is needed: {line}");

    // The next hop, real server 1: managed and resolved, though nothing was sent to it.
    let hop: std::net::IpAddr = "192.168.58.135".parse().expect("address");
    let entry = || neighbour_entry(&director, hop).unwrap_or_else(|e| panic!("{e:#}"));
    let resolved = lb_tests::lab::wait_until(Duration::from_secs(3), || {
        let e = entry();
        e.contains("managed") && e.contains("REACHABLE")
    });
    assert!(resolved, "the next hop's entry: `{}`", entry());

    // Several reconcile ticks later, still one warning; fixed, one line says so.
    std::thread::sleep(Duration::from_millis(1000));
    let warned = env.daemon().count(|l| l.contains("does not forward"));
    assert_eq!(warned, 1, "{}", env.daemon().lines().join("\n"));
    set_forwarding(&director, true).unwrap_or_else(|e| panic!("test setup failed: {e:#}"));
    env.daemon().wait_log(
        Duration::from_secs(3),
        |l| l.contains("no longer interfaces that do not forward for tunnel backends"),
        "forwarding fixed",
    );

    // The backend goes (a route backend instead): the managed entry goes with it.
    std::fs::write(
        &file,
        tunnel
            .replace("    forward: tunnel\n", "")
            .replace("10.20.0.11", "192.168.58.136"),
    )
    .unwrap_or_else(|e| panic!("test setup failed: {e}"));
    env.daemon_mut().signal(libc::SIGHUP);
    env.daemon().wait_log(
        Duration::from_secs(5),
        |l| l.contains("its managed neighbour entry removed") && l.contains("192.168.58.135"),
        "managed entry removed",
    );
    assert!(!entry().contains("managed"), "`{}`", entry());
}
