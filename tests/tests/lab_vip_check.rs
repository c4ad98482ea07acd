//! End to end: the via-VIP check (`type: tcp`, `via_vip: true`) with `lb-ctl run` on
//! director-1 of the namespace lab (`lb_tests::lab`). The lab's real servers hold both VIPs on
//! `lo`; one loses them (as a real server whose VIP configuration was lost): the via-VIP check
//! marks it down for both families while a plain `tcp` check of the same real server still
//! passes, clients reach only the other server, and it comes back once the VIP is back. All
//! traffic is bounded (a few requests, checks every 200 ms for a few seconds); the daemon, the
//! pins and the namespaces are removed at the end, also on failure.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use lb_tests::{env::Env, lab, lab_spec};

/// Every 200 ms, 2 failures in a row (100 ms apart) -> down; one success -> up.
const TIMING: &str = "interval: 200ms, timeout: 300ms, retries: 2, retry_delay: 100ms";

/// The longest a change may take to be seen: the interval, the retries' delays and timeouts,
/// and slack for a loaded machine.
const DETECT: Duration = Duration::from_millis(200 + 2 * (100 + 300) + 1500);

/// `web` (IPv4) and `web6` checked via the VIP; `plain`, on port 81 of the same VIP and the
/// same real servers, with a plain `tcp` check of their port 80.
fn yaml(lab: &lab::Lab) -> String {
    let (a, b) = (lab.server(0), lab.server(1));
    let (vip, vip6) = (lab.vip(), lab.vip6());
    format!(
        "services:
  - name: web
    vip: {vip}
    port: 80
    scheduler: rr
    check: {{type: tcp, via_vip: true, {TIMING}}}
    backends: [{{address: {}}}, {{address: {}}}]
  - name: web6
    vip: {vip6}
    port: 80
    scheduler: rr
    check: {{type: tcp, via_vip: true, {TIMING}}}
    backends: [{{address: {}}}, {{address: {}}}]
  - name: plain
    vip: {vip}
    port: 81
    scheduler: rr
    check: {{type: tcp, port: 80, {TIMING}}}
    backends: [{{address: {}}}, {{address: {}}}]
",
        a.addr, b.addr, a.addr6, b.addr6, a.addr, b.addr
    )
}

/// The state column of backend `addr:port` in `lb-ctl list`.
fn state_of(env: &Env, addr: IpAddr, port: u16) -> String {
    env.backend_state(SocketAddr::new(addr, port))
}

fn names(v: &[String]) -> Vec<&str> {
    Env::names(v)
}

/// A log line saying `what` ("backend down" / "backend up") about `addr` in `service`.
fn about(service: &str, addr: IpAddr, what: &'static str) -> impl Fn(&str) -> bool {
    let (service, addr) = (format!("service={service} "), format!("backend={addr} "));
    move |l: &str| l.contains(what) && l.contains(&service) && l.contains(&addr)
}

/// Half-open connections to the VIP's port 80 on `host` (SYN-RECV sockets).
fn half_open(host: &lab::Host) -> usize {
    let out = host
        .exec_ok(&["ss", "-Htn", "state", "syn-recv"])
        .unwrap_or_else(|e| panic!("ss on {}: {e:#}", host.name));
    out.lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn a_real_server_without_the_vip_is_down_for_the_via_vip_check_only() {
    let mut env = Env::running(&lab_spec!(servers: 2), yaml, &[]);
    let rs1 = env.server(0).clone();
    let (a4, a6): (IpAddr, IpAddr) = (rs1.addr.into(), rs1.addr6.into());
    let vip6: IpAddr = env.lab.vip6().into();

    // Both real servers answer the handshake via the VIP: no check fails for 2 s, clients
    // reach both over either family.
    std::thread::sleep(Duration::from_secs(2));
    let daemon = env.daemon();
    assert_eq!(
        daemon.count(|l| l.contains("backend down")),
        0,
        "a backend went down with every real server healthy:\n{}",
        daemon.lines().join("\n")
    );
    assert_eq!(names(&env.requests(10)), ["real-server-1", "real-server-2"]);
    assert_eq!(
        names(&env.requests_to(vip6, 10)),
        ["real-server-1", "real-server-2"]
    );
    // Each SYN-ACK was answered with our RST: no half-open connections pile up on the real
    // server (10 checks ran meanwhile; without the RST each would stay SYN-RECV for ~30 s). At
    // most one check can be in flight when we look.
    let open = half_open(&rs1);
    assert!(open <= 1, "{open} half-open connections on real-server-1");

    // real-server-1 loses the VIPs from lo: down for web and web6, within the detection time.
    let skip = env.daemon().lines().len();
    let t0 = Instant::now();
    env.lab
        .del_server_vip(&rs1)
        .unwrap_or_else(|e| panic!("removing the VIPs from real-server-1: {e:#}"));
    let (line, _) = env.daemon().wait_log_after(
        skip,
        DETECT,
        about("web", a4, "backend down"),
        "web: real-server-1 down",
    );
    let down4 = t0.elapsed();
    let (line6, _) = env.daemon().wait_log_after(
        skip,
        DETECT,
        about("web6", a6, "backend down"),
        "web6: real-server-1 down",
    );
    let down6 = t0.elapsed();
    for l in [&line, &line6] {
        assert!(l.contains("tcp via VIP"), "reason: {l}");
        assert!(l.contains("no answer"), "reason: {l}");
    }
    // The plain check of the same real server keeps passing (it ran ~10 times meanwhile).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(state_of(&env, a4, 80), "down");
    assert_eq!(state_of(&env, a6, 80), "down");
    assert_eq!(state_of(&env, a4, 81), "up");
    assert_eq!(
        env.daemon().count(about("plain", a4, "backend down")),
        0,
        "the plain check marked real-server-1 down"
    );
    // Clients reach only real-server-2 (real-server-1 would drop what they send).
    assert_eq!(names(&env.requests(10)), ["real-server-2"]);
    assert_eq!(names(&env.requests_to(vip6, 10)), ["real-server-2"]);

    // The VIPs come back: up again, traffic to both.
    let skip = env.daemon().lines().len();
    let t1 = Instant::now();
    env.lab
        .add_server_vip(&rs1)
        .unwrap_or_else(|e| panic!("adding the VIPs to real-server-1 again: {e:#}"));
    env.daemon().wait_log_after(
        skip,
        DETECT,
        about("web", a4, "backend up"),
        "web: real-server-1 up",
    );
    let up4 = t1.elapsed();
    env.daemon().wait_log_after(
        skip,
        DETECT,
        about("web6", a6, "backend up"),
        "web6: real-server-1 up",
    );
    let up6 = t1.elapsed();
    assert_eq!(state_of(&env, a4, 80), "up");
    assert_eq!(state_of(&env, a6, 80), "up");
    assert_eq!(names(&env.requests(10)), ["real-server-1", "real-server-2"]);
    assert_eq!(
        names(&env.requests_to(vip6, 10)),
        ["real-server-1", "real-server-2"]
    );
    eprintln!(
        "via-VIP check: VIP removed -> down after {down4:?} (IPv4), {down6:?} (IPv6); \
         VIP back -> up after {up4:?} (IPv4), {up6:?} (IPv6)"
    );
    env.daemon = None;
}
