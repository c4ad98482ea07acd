//! End to end: tunnel mode. The real servers are not on the director's segment but behind a
//! router, on 10.20.0.0/24 and fd00:20::/64 (the lab's routed part, `LabSpec::routed`); the
//! director (`lb-ctl run`) encapsulates each packet to the VIP (IPIP, IPv6-in-IPv6, GUE,
//! IPv4-in-IPv6, IPv6-in-IPv4) and sends it to the next hop its kernel's FIB names; each real server strips
//! the outer header with the project's decapsulation program (`lb-ctl decap attach eth0`) and
//! answers the client itself, from the VIP on its `lo`, through the router: the director's
//! interface sees none of the replies.
//!
//! Captures are taken where they show something: on the router's leg to the real servers (the
//! encapsulated packets, with their outer addresses, and the replies going back), and on the
//! director's `eth0` (which sees what reaches the director; frames its XDP program sends back
//! out are not captured there, so only replies, which must not come, would show).
//!
//! The lab's rules (docs/lab.md) hold: its own lab per test, a bounded number of requests with
//! deadlines, everything removed at the end, loud failure without root.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use lb_tests::{
    env::Env,
    lab::{self, Capture, Host, Lab, RoutedSpec, http_get, http_post, icmp::path_mtu},
    lab_spec, services, stats,
    tunnel::{Decap, Encap, GUE_PORT, IcmpBlackhole, neighbour_entry, tunnel_service},
};

/// Requests per balancing test: 20 per remote server.
const REQUESTS: usize = 40;
/// How long the director may take to resolve a next hop (its health checks run every 500 ms).
const RESOLVE: Duration = Duration::from_secs(5);
/// IPIP's overhead over IPv4: the outer header.
const IPIP4_OVERHEAD: u32 = 20;
/// The lab's MTU on every link.
const LINK_MTU: u32 = 1500;
/// The upload of the path-MTU test.
const UPLOAD: usize = 200 * 1024;

fn routed(routers: usize) -> Option<RoutedSpec> {
    Some(RoutedSpec {
        routers,
        servers: 2,
    })
}

/// The address of `host` of one family.
fn addr_of(host: &Host, v6: bool) -> IpAddr {
    if v6 {
        host.addr6.into()
    } else {
        host.addr.into()
    }
}

/// Waits until the director's kernel has the MAC of router `r` (0-based) of the backends'
/// family (its health checks to the backends go there and resolve it); panics after
/// [`RESOLVE`].
fn wait_next_hop(lab: &Lab, r: usize, v6: bool) -> Duration {
    let start = Instant::now();
    let router = addr_of(&lab.router(r).outer, v6);
    let director = lab.director(0);
    assert!(
        lab::wait_until(RESOLVE, || director
            .neighbour_mac(router)
            .is_ok_and(|m| m.is_some())),
        "the director did not resolve its next hop {router} within {RESOLVE:?}"
    );
    start.elapsed()
}

/// Lines of `lines` about a packet to `addr` (tcpdump writes `> ADDR:` or `> ADDR.PORT:`).
fn count_to(lines: &[String], addr: IpAddr) -> usize {
    let (a, b) = (format!("> {addr}:"), format!("> {addr}."));
    lines
        .iter()
        .filter(|l| l.contains(&a) || l.contains(&b))
        .count()
}

fn capture(host: &Host, iface: &str, filter: &str) -> Capture {
    Capture::start(host, iface, filter).unwrap_or_else(|e| panic!("{e:#}"))
}

fn stop(c: Capture) -> Vec<String> {
    c.stop().unwrap_or_else(|e| panic!("{e:#}"))
}

/// The tcpdump filter of the encapsulated packets from the director, of `encap` with an outer
/// header of the backends' family around a packet of the VIP's family.
fn outer_filter(director: &Host, vip6: bool, backends6: bool, encap: Encap) -> String {
    let src = addr_of(director, backends6);
    let what = match (encap, backends6, vip6) {
        (Encap::Gue(port), false, _) => format!("ip and udp dst port {port}"),
        (Encap::Gue(port), true, _) => format!("ip6 and udp dst port {port}"),
        (Encap::Ipip, false, false) => "ip proto 4".to_owned(),
        (Encap::Ipip, false, true) => "ip proto 41".to_owned(),
        (Encap::Ipip, true, false) => "ip6 proto 4".to_owned(),
        (Encap::Ipip, true, true) => "ip6 proto 41".to_owned(),
    };
    format!("src host {src} and {what}")
}

/// `n` HTTP requests from the client to `vip`, a new connection each; the count per answering
/// server. Panics on any failure.
fn requests(env: &Env, vip: IpAddr, n: usize) -> BTreeMap<String, usize> {
    let mut by_server = BTreeMap::new();
    for name in env.requests_to(vip, n) {
        *by_server.entry(name).or_default() += 1;
    }
    by_server
}

/// Balancing through the tunnel: `REQUESTS` requests to the VIP of one family, served by the
/// two remote servers over backends of one family with `encap`: every request answered, rr
/// 20/20, each remote server received its packets encapsulated from the director's address,
/// and the replies went through the router, none through the director.
fn balance(vip6: bool, backends6: bool, encap: Encap) {
    let env = Env::running(
        &lab_spec!(routed: routed(1)),
        |lab| {
            let vip: IpAddr = if vip6 {
                lab.vip6().into()
            } else {
                lab.vip().into()
            };
            let backends: Vec<IpAddr> = lab
                .remote_servers()
                .iter()
                .map(|s| addr_of(s, backends6))
                .collect();
            services::file(&[tunnel_service("web", vip, 80, encap, &backends)])
        },
        &[],
    );
    let lab = &env.lab;
    let gue = match encap {
        Encap::Gue(p) => Some(p),
        Encap::Ipip => None,
    };
    let _decap = Decap::attach(lab, lab.remote_servers(), gue).unwrap_or_else(|e| panic!("{e:#}"));
    let resolved = wait_next_hop(lab, 0, backends6);
    let vip: IpAddr = if vip6 {
        lab.vip6().into()
    } else {
        lab.vip().into()
    };
    let director = lab.director(0);
    let router = &lab.router(0).inner;
    let replies = format!("src host {vip} and tcp src port 80");
    let at_director = capture(director, "eth0", &replies);
    let at_router = capture(router, "eth1", &replies);
    let outer = capture(
        router,
        "eth1",
        &outer_filter(director, vip6, backends6, encap),
    );

    let before = env.stats();
    let by_server = requests(&env, vip, REQUESTS);
    let after = env.settled_stats("forwarded", Duration::from_secs(2));

    let (at_director, at_router, outer) = (stop(at_director), stop(at_router), stop(outer));
    let per_server: Vec<usize> = lab
        .remote_servers()
        .iter()
        .map(|s| count_to(&outer, addr_of(s, backends6)))
        .collect();
    let rose = |reason: &str| stats::datapath(&after, reason) - stats::datapath(&before, reason);
    eprintln!(
        "{REQUESTS} requests to {vip} over {encap:?} ({} backends): answered by {by_server:?}; \
         next hop resolved {resolved:?} after start; encapsulated packets seen on router-1's \
         leg to each remote server: {per_server:?}; replies seen there: {}, on the director's \
         eth0: {}; data path: forwarded +{}, pass_no_route +{}, answered_too_big +{}",
        if backends6 { "IPv6" } else { "IPv4" },
        at_router.len(),
        at_director.len(),
        rose("forwarded"),
        rose("pass_no_route"),
        rose("answered_too_big"),
    );
    let want: BTreeMap<String, usize> = lab
        .remote_servers()
        .iter()
        .map(|s| (s.name.clone(), REQUESTS / 2))
        .collect();
    assert_eq!(by_server, want, "rr over the two remote servers");
    // Each connection carries at least SYN, ACK, request and FIN from the client.
    for (s, n) in lab.remote_servers().iter().zip(&per_server) {
        assert!(
            *n >= 3 * REQUESTS / 2,
            "only {n} encapsulated packets to {}: {outer:#?}",
            s.name
        );
    }
    assert!(
        at_router.len() >= REQUESTS,
        "only {} replies passed router-1 (the capture does not work?)",
        at_router.len()
    );
    assert!(
        at_director.is_empty(),
        "replies reached the director: {at_director:#?}"
    );
    assert!(rose("forwarded") >= 3 * REQUESTS as u64);
}

/// Nothing makes the director talk to the router (no health check): `lb-ctl run` gives the
/// next hop of the tunnel backends' route a managed neighbour entry, which the kernel resolves
/// by itself, so the very first SYN through the tunnel finds its next hop: forwarded, not
/// passed to the director's kernel (which holds the VIP and would answer it with a RST).
#[test]
fn the_first_syn_finds_its_next_hop_resolved() {
    let env = Env::running(
        &lab_spec!(routed: routed(1)),
        |lab| {
            let backends: Vec<IpAddr> =
                lab.remote_servers().iter().map(|s| s.addr.into()).collect();
            let mut web = services::Service::new("web", lab.vip(), 80, &backends);
            web.extra = "    forward: tunnel\n".to_owned();
            services::file(&[web])
        },
        &[],
    );
    let lab = &env.lab;
    let _decap = Decap::attach(lab, lab.remote_servers(), None).unwrap_or_else(|e| panic!("{e:#}"));
    let (director, router) = (lab.director(0), IpAddr::from(lab.router(0).outer.addr));
    let start = Instant::now();
    let entry = || neighbour_entry(director, router).unwrap_or_else(|e| panic!("{e:#}"));
    let resolved = lab::wait_until(RESOLVE, || {
        let e = entry();
        e.contains("managed") && e.contains("REACHABLE")
    });
    let took = start.elapsed();
    assert!(
        resolved,
        "the director's entry for its next hop {router}: `{}`",
        entry()
    );

    let before = env.stats();
    let answer = env.request_to(lab.vip().into(), Duration::from_secs(2));
    let after = env.settled_stats("forwarded", Duration::from_secs(2));
    let rose = |reason: &str| stats::datapath(&after, reason) - stats::datapath(&before, reason);
    eprintln!(
        "next hop {router}: `{}` {took:?} after the daemon was up; the first request: \
         {answer:?}; data path: forwarded +{}, pass_no_route +{}",
        entry(),
        rose("forwarded"),
        rose("pass_no_route")
    );
    let names: Vec<&str> = lab
        .remote_servers()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let answer = answer.unwrap_or_else(|e| panic!("the first request failed: {e:#}"));
    assert!(names.contains(&answer.as_str()), "answered by {answer}");
    assert_eq!(rose("pass_no_route"), 0);
    // SYN, ACK, request, FIN at least.
    assert!(rose("forwarded") >= 3, "forwarded +{}", rose("forwarded"));
}

/// The routed lab itself, without a director: the client reaches both remote servers (both
/// families) through router-1; a remote server's route back to the client goes via router-1;
/// once the client's route is moved to router-2, its packets go through router-2 while the
/// replies still come back through router-1.
#[test]
fn the_routed_lab_carries_traffic_through_its_routers() {
    let lab = Lab::build(&lab_spec!(routed: routed(2)))
        .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    let client = lab.client();
    let t = Duration::from_secs(2);
    for (i, s) in lab.remote_servers().iter().enumerate() {
        for v6 in [false, true] {
            let (status, body) =
                http_get(client, addr_of(s, v6), 80, "/", t).unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(
                (status, body.trim()),
                (200, s.name.as_str()),
                "remote server {i}"
            );
        }
        let route = s
            .exec_ok(&["ip", "route", "get", &client.addr.to_string()])
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(route.contains("via 10.20.0.1 "), "{}: {route}", s.name);
    }
    let rs = lab.remote_server(0);
    let (r1, r2) = (&lab.router(0).inner, &lab.router(1).inner);
    lab.route_remote_via(client, 1)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let to_server = format!("dst host {} and tcp dst port 80", rs.addr);
    let from_server = format!("src host {} and tcp src port 80", rs.addr);
    let caps = [
        capture(r1, "eth1", &to_server),
        capture(r2, "eth1", &to_server),
        capture(r1, "eth1", &from_server),
        capture(r2, "eth1", &from_server),
    ];
    let (status, _) = http_get(client, rs.addr, 80, "/", t).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(status, 200);
    let seen: Vec<usize> = caps.into_iter().map(|c| stop(c).len()).collect();
    eprintln!(
        "after moving the client's route to router-2: to the server via router-1 {}, via \
         router-2 {}; from the server via router-1 {}, via router-2 {}",
        seen[0], seen[1], seen[2], seen[3]
    );
    assert_eq!(seen[0], 0, "the request still went through router-1");
    assert!(seen[1] >= 3, "the request did not go through router-2");
    assert!(
        seen[2] >= 2,
        "the replies did not come back through router-1"
    );
    assert_eq!(seen[3], 0, "replies went through router-2");
    lab.close().unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn http_over_ipip_reaches_routed_servers_and_replies_bypass_the_director() {
    balance(false, false, Encap::Ipip);
}

#[test]
fn http_over_ipv6_in_ipv6_reaches_routed_servers() {
    balance(true, true, Encap::Ipip);
}

#[test]
fn http_over_gue_reaches_routed_servers() {
    balance(false, false, Encap::Gue(GUE_PORT));
}

/// Mixed families: an IPv4 VIP whose real servers are reached over IPv6 (IPv4 in IPv6).
#[test]
fn an_ipv4_vip_over_ipv6_backends_works() {
    balance(false, true, Encap::Ipip);
}

/// The other way round: an IPv6 VIP whose real servers are reached over IPv4 (IPv6 in IPv4,
/// protocol 41), the outer header to 10.20.0.11/.12, the replies IPv6 from the VIP.
#[test]
fn an_ipv6_vip_over_ipv4_backends_works() {
    balance(true, false, Encap::Ipip);
}

/// The next hop to the real servers moves (the director's route to 10.20.0.0/24 is replaced,
/// from router-1 to router-2) while `lb-ctl run` goes on: the next requests are encapsulated
/// to router-2's MAC, all answered, with no reload of the daemon.
#[test]
fn a_route_change_moves_the_next_hop_without_a_reload() {
    let env = Env::running(
        &lab_spec!(routed: routed(2)),
        |lab| {
            let backends: Vec<IpAddr> =
                lab.remote_servers().iter().map(|s| s.addr.into()).collect();
            services::file(&[tunnel_service("web", lab.vip(), 80, Encap::Ipip, &backends)])
        },
        &[],
    );
    let lab = &env.lab;
    let decap = Decap::attach(lab, lab.remote_servers(), None).unwrap_or_else(|e| panic!("{e:#}"));
    let director = lab.director(0);
    let vip: IpAddr = lab.vip().into();
    let filter = outer_filter(director, false, false, Encap::Ipip);
    let (r1, r2) = (&lab.router(0).inner, &lab.router(1).inner);
    let reloads = |env: &Env| env.daemon().count(|l| l.contains("reloading"));

    wait_next_hop(lab, 0, false);
    let caps = [capture(r1, "eth1", &filter), capture(r2, "eth1", &filter)];
    let first = requests(&env, vip, REQUESTS / 2);
    let via_first: Vec<usize> = caps.into_iter().map(|c| stop(c).len()).collect();
    let reloads_before = reloads(&env);
    let before = env.stats();

    lab.route_remote_via(director, 1)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let resolved = wait_next_hop(lab, 1, false);
    let caps = [capture(r1, "eth1", &filter), capture(r2, "eth1", &filter)];
    let second = requests(&env, vip, REQUESTS / 2);
    let via_second: Vec<usize> = caps.into_iter().map(|c| stop(c).len()).collect();
    let after = env.settled_stats("forwarded", Duration::from_secs(2));
    // Detached while the lab stands: `env` moves below and would be torn down first.
    drop(decap);
    let mut env = env;
    let still_running = env.daemon_mut().exit_status().is_none();
    eprintln!(
        "before the route change: {first:?}, encapsulated packets via router-1/router-2 \
         {via_first:?}; router-2 resolved {resolved:?} after the change; after: {second:?}, \
         via router-1/router-2 {via_second:?}; pass_no_route +{}; reloads {} -> {}",
        stats::datapath(&after, "pass_no_route") - stats::datapath(&before, "pass_no_route"),
        reloads_before,
        reloads(&env),
    );
    let half: BTreeMap<String, usize> = env
        .lab
        .remote_servers()
        .iter()
        .map(|s| (s.name.clone(), REQUESTS / 4))
        .collect();
    assert_eq!(first, half);
    assert_eq!(second, half);
    assert!(
        via_first[0] >= 3 * REQUESTS / 2 && via_first[1] == 0,
        "{via_first:?}"
    );
    assert!(
        via_second[0] == 0 && via_second[1] >= 3 * REQUESTS / 2,
        "{via_second:?}"
    );
    assert_eq!(reloads(&env), reloads_before, "the daemon reloaded");
    assert!(still_running, "the daemon exited");
}

/// Path MTU through the tunnel: a 200 KB upload from the client, whose full-size segments
/// (1,500 bytes, DF) no longer fit the director's link once encapsulated (+20). The director
/// answers each with "fragmentation needed", MTU 1,480, from the VIP. First with those answers
/// kept from the client's kernel (a tc filter drops ICMP from the VIP): the upload stalls.
/// Then without the filter: the client's kernel takes the answer (its route to the VIP gets
/// `mtu 1480`), sends smaller segments, and the upload completes.
#[test]
fn a_large_upload_with_df_succeeds_after_fragmentation_needed() {
    let env = Env::running(
        &lab_spec!(routed: routed(1)),
        |lab| {
            let backends: Vec<IpAddr> =
                lab.remote_servers().iter().map(|s| s.addr.into()).collect();
            services::file(&[tunnel_service("web", lab.vip(), 80, Encap::Ipip, &backends)])
        },
        &[],
    );
    let lab = &env.lab;
    let _decap = Decap::attach(lab, lab.remote_servers(), None).unwrap_or_else(|e| panic!("{e:#}"));
    wait_next_hop(lab, 0, false);
    let client = lab.client();
    let vip: IpAddr = lab.vip().into();
    let too_big = |env: &Env| stats::datapath(&env.stats(), "answered_too_big");
    assert_eq!(
        path_mtu(client, vip).unwrap_or_else(|e| panic!("{e:#}")),
        None
    );

    // Without the answer: the upload stalls.
    let blackhole = IcmpBlackhole::install(client, lab.vip()).unwrap_or_else(|e| panic!("{e:#}"));
    let t0 = too_big(&env);
    // The error as its one-line chain: its Debug form carries a backtrace.
    let stalled = http_post(client, vip, 80, "/", UPLOAD, Duration::from_secs(4))
        .map_err(|e| format!("{e:#}"));
    let t1 = too_big(&env);
    let dropped = blackhole.dropped().unwrap_or_else(|e| panic!("{e:#}"));
    let mtu_without = path_mtu(client, vip).unwrap_or_else(|e| panic!("{e:#}"));
    drop(blackhole);
    client
        .exec_ok(&["ip", "route", "flush", "cache"])
        .unwrap_or_else(|e| panic!("{e:#}"));

    // With it.
    let started = Instant::now();
    let done = http_post(client, vip, 80, "/", UPLOAD, Duration::from_secs(10));
    let took = started.elapsed();
    let t2 = too_big(&env);
    let mtu_with = path_mtu(client, vip).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "{UPLOAD}-byte upload with ICMP from the VIP dropped at the client: {stalled:?}; \
         answered_too_big +{}, ICMP dropped by the filter {dropped}, client's path MTU to the \
         VIP {mtu_without:?}. With the answers: {done:?} in {took:?}; answered_too_big +{}, \
         the client's path MTU {mtu_with:?}",
        t1 - t0,
        t2 - t1,
    );
    assert!(
        stalled.is_err(),
        "the upload completed without path MTU discovery: {stalled:?}"
    );
    assert!(t1 > t0, "the director answered no oversize packet");
    assert!(
        dropped >= 1,
        "no ICMP from the VIP reached the client's filter"
    );
    assert_eq!(mtu_without, None);
    let (status, body) = done.unwrap_or_else(|e| panic!("the upload failed: {e:#}"));
    assert_eq!(status, 200);
    assert!(
        lab.remote_servers().iter().any(|s| body.trim() == s.name),
        "answered by {body:?}"
    );
    assert!(t2 > t1, "the director answered no oversize packet");
    assert_eq!(mtu_with, Some(LINK_MTU - IPIP4_OVERHEAD));
}
