//! End to end: a flood of spoofed SYNs never breaks an established connection, and real new
//! connections made during the flood succeed.
//!
//! The namespace lab (`lb_tests::lab`) with the real `lb-ctl`: three services on the VIP over
//! both real servers, `web-rr` (port 80, rr), `web-wlc` (81, wlc) and `web-mh` (82, mh), each
//! real server answering HTTP on the three ports. The client opens 20 keep-alive connections to
//! each service. Then, five rounds in a row, the client floods the director with spoofed SYNs,
//! four times the connection table's size (`--flows`), from random addresses in 10.0.0.0/8 and
//! random ports to VIP on a port drawn among the three, as raw Ethernet frames to the
//! director's MAC (`lb_tests::flood`, two sending threads). While the flood runs the client
//! makes 100 real new connections (one request each, spread over the three services, ten at a
//! time) and one request on every kept connection; after the flood, one more on each. Every
//! round asserts: all 60 kept connections answered, each from the server it had before the
//! first flood (an evicted entry is rescheduled: rr and wlc would move it to the other
//! server, which resets it); the connection table (`flows` in `stats --json`, and
//! `list --connections`) still holds each of them and nothing else than real connections; at
//! least 95 of the 100 new connections succeeded; the data path counted the flood's SYNs under
//! `forwarded` (a SYN is scheduled, for rr, wlc and mh alike) and nothing under
//! `drop_over_budget` or `forwarded_over_budget` (no budget is set). Each round prints its
//! figures, and each test a table of them.
//!
//! Sizes: `attach --flows 65536` then `apply` (262,144 SYNs a round), and the default size
//! (262,144 entries, 1,048,576 SYNs a round) under `lb-ctl run`, the production path. A third
//! test sets a budget (`flood: new_flows_per_cpu: 20000` in the service file) and shows the
//! SYNs over it counted under `drop_over_budget` (rr, wlc) and `forwarded_over_budget` (mh),
//! with the kept connections still on their servers.
//!
//! The real servers' kernels: the SYNs the director forwards reach them, and they answer none.
//! The lab gives its hosts no route to 10.0.0.0/8 (each round checks it), so the kernel finds
//! no route for the SYN-ACK and frees the request before it queues it: the flood never fills a
//! real server's SYN queue, and the real connections cannot fail there for a reason that is not
//! the director's. The test also sets `net.ipv4.tcp_syncookies=1` in the real servers'
//! namespaces (the kernel's default, set so that a host default does not matter): should a
//! queue fill anyway, the kernel answers with cookies instead of dropping real SYNs. The
//! kernel's `TcpExtTCPReqQFullDrop` on each real server, which counts SYNs dropped for a full
//! queue, must stay 0.
//!
//! Needs root; everything is removed at the end, also on failure.

use std::{
    net::{Ipv4Addr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use lb_ctl::maps::loader::Sizes;
use lb_tests::{
    cli::bpftool,
    env::Env,
    flood::{Flood, Spoofed},
    lab::{HttpConn, Lab, http_get, icmp::paired_counter},
    lab_spec,
    services::{self, Service},
    stats::{datapath, num},
};
use serde_json::Value;

const VIP: Ipv4Addr = lb_tests::lab::DEFAULT_VIP;
/// The services: name, port, scheduler.
const SERVICES: [(&str, u16, &str); 3] = [
    ("web-rr", 80, "rr"),
    ("web-wlc", 81, "wlc"),
    ("web-mh", 82, "mh"),
];
/// Kept (keep-alive) connections per service.
const KEPT: usize = 20;
const ROUNDS: usize = 5;
/// Real new connections made during each flood, and how many must succeed.
const NEW: usize = 100;
const NEW_FLOOR: usize = 95;
/// Of them, made at the same time.
const NEW_PARALLEL: usize = 10;
/// Threads sending the flood.
const FLOOD_THREADS: usize = 2;
/// A flood stops here even if not all frames are out.
const FLOOD_LIMIT: Duration = Duration::from_secs(60);
/// Deadline of one HTTP request (a connect included: a lost SYN is sent again after 1 s).
const T: Duration = Duration::from_secs(5);
/// The flood's SYNs per connection-table entry.
const FLOOD_FACTOR: u64 = 4;
/// Floods sent after a round's flood to make up for frames lost before the data path.
const TOP_UPS: u64 = 6;
/// The budget of the budget test, new entries per second per CPU.
const BUDGET: u32 = 5_000;

/// The service file: the three services over both real servers, then `extra` (top level).
fn service_file(lab: &Lab, extra: &str) -> String {
    let backends: Vec<_> = lab.servers().iter().map(|s| s.addr.into()).collect();
    let list: Vec<Service> = SERVICES
        .iter()
        .map(|&(name, port, scheduler)| {
            let mut s = Service::new(name, VIP, port, &backends);
            s.scheduler = scheduler;
            s
        })
        .collect();
    services::file(&list) + extra
}

/// The real servers answer HTTP on the ports of all three services, have SYN cookies on, and
/// no route to the flood's sources.
fn prepare_servers(env: &Env) {
    for s in env.lab.servers() {
        for &(_, port, _) in &SERVICES[1..] {
            env.lab
                .start_http(s, port)
                .unwrap_or_else(|e| panic!("HTTP on port {port} of {}: {e:#}", s.name));
        }
        s.exec_ok(&["sysctl", "-qw", "net.ipv4.tcp_syncookies=1"])
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    check_servers(env);
}

/// No real server routes 10.0.0.0/8, and none dropped a SYN for a full SYN queue.
fn check_servers(env: &Env) {
    for s in env.lab.servers() {
        let out = s
            .exec(&["ip", "route", "get", "10.1.2.3"])
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            !out.status.success(),
            "{} has a route to 10.0.0.0/8: {}",
            s.name,
            String::from_utf8_lossy(&out.stdout)
        );
        let drops = netstat(s, "TcpExtTCPReqQFullDrop");
        assert_eq!(drops, 0, "{}: SYNs dropped for a full SYN queue", s.name);
    }
}

/// A `TcpExt` counter of `host` (`nstat` naming) from `/proc/net/netstat`.
fn netstat(host: &lb_tests::lab::Host, name: &str) -> u64 {
    let text = host
        .exec_ok(&["cat", "/proc/net/netstat"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let v = paired_counter(&text, name)
        .unwrap_or_else(|| panic!("{} has no counter {name} in /proc/net/netstat", host.name));
    v.parse().unwrap_or_else(|_| panic!("{name} = {v:?}"))
}

/// One service's kept connections: their local addresses and the server each first had.
struct Kept {
    name: &'static str,
    conns: Vec<HttpConn>,
    first: Vec<String>,
    locals: Vec<SocketAddr>,
}

fn open_kept(env: &Env) -> Vec<Kept> {
    SERVICES
        .iter()
        .map(|&(name, port, _)| {
            let (conns, first) = HttpConn::open_many(env.client(), VIP, port, KEPT, T)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let locals = conns
                .iter()
                .map(|c| c.local_addr().unwrap_or_else(|e| panic!("{e:#}")))
                .collect();
            let on_first = first.iter().filter(|b| b.as_str() == first[0]).count();
            eprintln!(
                "{name}: {KEPT} connections, {on_first} on {}, {} on the other",
                first[0].trim(),
                KEPT - on_first
            );
            Kept {
                name,
                conns,
                first,
                locals,
            }
        })
        .collect()
}

/// One request on every connection of `k`; the connections that answered 200 from the server
/// they first had, and a line per one that did not.
fn request_all(k: &mut Kept) -> (usize, Vec<String>) {
    let mut failed = Vec::new();
    for (i, c) in k.conns.iter_mut().enumerate() {
        match c.get("/") {
            Ok((200, body)) if body == k.first[i] => {}
            Ok((status, body)) => failed.push(format!(
                "{} connection {i}: {status} from {} (first {})",
                k.name,
                body.trim(),
                k.first[i].trim()
            )),
            Err(e) => failed.push(format!("{} connection {i}: {e:#}", k.name)),
        }
    }
    (k.conns.len() - failed.len(), failed)
}

/// What one round showed.
#[derive(Clone, Debug)]
struct Round {
    round: usize,
    /// Per service, kept connections that answered from their server during and after.
    kept: [usize; 3],
    new_ok: usize,
    /// New connections begun while the flood was still being sent.
    new_during: usize,
    sent: u64,
    took: Duration,
    forwarded: u64,
    drop_over_budget: u64,
    forwarded_over_budget: u64,
    flows: u64,
    half_open: Option<(u64, u64)>,
    secs: f64,
}

/// The `NEW` real connections, made while `flood` runs, `NEW_PARALLEL` at a time, spread over
/// the services: how many succeeded, how many began during the flood, and the failures.
fn new_connections(env: &Env, flood: &Flood) -> (usize, usize, Vec<String>) {
    let client = env.client();
    let results: Vec<(bool, bool, Option<String>)> = thread::scope(|s| {
        let workers: Vec<_> = (0..NEW_PARALLEL)
            .map(|w| {
                s.spawn(move || {
                    (w..NEW)
                        .step_by(NEW_PARALLEL)
                        .map(|i| {
                            let (name, port, _) = SERVICES[i % SERVICES.len()];
                            let during = flood.is_running();
                            match http_get(client, VIP, port, "/", T) {
                                Ok((200, _)) => (true, during, None),
                                Ok((status, body)) => (
                                    false,
                                    during,
                                    Some(format!("new {i} ({name}): {status} {body}")),
                                ),
                                Err(e) => (false, during, Some(format!("new {i} ({name}): {e:#}"))),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|_| panic!("a client thread panicked"))
            })
            .collect()
    });
    let ok = results.iter().filter(|r| r.0).count();
    let during = results.iter().filter(|r| r.1).count();
    (
        ok,
        during,
        results.into_iter().filter_map(|r| r.2).collect(),
    )
}

/// The half-open figures of `stats --json` (`half_open`, `half_open_capacity`), when it has
/// them.
fn half_open(stats: &Value) -> Option<(u64, u64)> {
    Some((
        stats.get("half_open")?.as_u64()?,
        stats.get("half_open_capacity")?.as_u64()?,
    ))
}

/// One round: a flood of `syns` SYNs with real connections during it, then the checks.
fn round(env: &Env, kept: &mut [Kept], syns: u64, r: usize, new_so_far: usize) -> Round {
    let started = Instant::now();
    let before = env.stats();
    let client = env.client();
    let ports: Vec<u16> = SERVICES.iter().map(|s| s.1).collect();
    let spoofed = Spoofed {
        seed: 0x5eed_0000 + r as u64,
        ..Spoofed::new("S", client.mac, env.lab.director(0).mac, VIP, &ports)
    };
    let flood = Flood::start(client, &spoofed, syns, FLOOD_THREADS, FLOOD_LIMIT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (new_ok, new_during, new_failed) = new_connections(env, &flood);
    let during: Vec<_> = kept.iter_mut().map(request_all).collect();
    let mut flooded = flood.wait().unwrap_or_else(|e| panic!("{e:#}"));
    let mut after = env.settled_stats("forwarded", Duration::from_secs(10));
    // Frames the director's veth queue had no room for are lost before the data path sees
    // them (the bridge drops them; the sender never learns): up to a third on a quiet machine,
    // where the sender outruns the director. The flood is topped up until the data path has
    // counted `syns` SYNs, so that every round's flood is really 4x the table.
    for top_up in 1..=TOP_UPS {
        let short =
            syns.saturating_sub(datapath(&after, "forwarded") - datapath(&before, "forwarded"));
        if short == 0 {
            break;
        }
        let more = Spoofed {
            seed: spoofed.seed + 1000 * top_up,
            ..spoofed.clone()
        };
        // A quarter more than is short: some of the top-up is lost too.
        let extra = Flood::start(
            client,
            &more,
            short + short / 4 + 100,
            FLOOD_THREADS,
            FLOOD_LIMIT,
        )
        .and_then(Flood::wait)
        .unwrap_or_else(|e| panic!("{e:#}"));
        flooded.sent += extra.sent;
        flooded.took += extra.took;
        after = env.settled_stats("forwarded", Duration::from_secs(10));
    }
    let after_requests: Vec<_> = kept.iter_mut().map(request_all).collect();
    let delta = |reason: &str| datapath(&after, reason) - datapath(&before, reason);
    let listed = env
        .ctl
        .run_ok(&["list", "--connections"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let missing: Vec<String> = kept
        .iter()
        .flat_map(|k| k.locals.iter().map(move |a| (k.name, a)))
        .filter(|(_, a)| {
            let token = a.to_string();
            !listed
                .lines()
                .any(|l| l.starts_with("TCP ") && l.split_whitespace().any(|w| w == token))
        })
        .map(|(name, a)| format!("{name} {a}"))
        .collect();
    let mut kept_ok = [0; 3];
    for (i, ((d, _), (a, _))) in during.iter().zip(&after_requests).enumerate() {
        kept_ok[i] = (*d).min(*a);
    }
    let figures = Round {
        round: r,
        kept: kept_ok,
        new_ok,
        new_during,
        sent: flooded.sent,
        took: flooded.took,
        forwarded: delta("forwarded"),
        drop_over_budget: delta("drop_over_budget"),
        forwarded_over_budget: delta("forwarded_over_budget"),
        flows: num(&after, "flows"),
        half_open: half_open(&after),
        secs: started.elapsed().as_secs_f64(),
    };
    eprintln!("ROUND {figures:?}");

    let failures: Vec<&String> = during
        .iter()
        .chain(&after_requests)
        .flat_map(|(_, f)| f)
        .collect();
    assert!(
        failures.is_empty(),
        "round {r}: kept connections lost: {failures:#?}"
    );
    assert!(
        missing.is_empty(),
        "round {r}: not in list --connections: {missing:?}"
    );
    assert!(
        flooded.sent >= syns,
        "round {r}: the flood did not finish within {FLOOD_LIMIT:?}"
    );
    assert!(
        new_ok >= NEW_FLOOR,
        "round {r}: {new_ok} of {NEW} new connections succeeded: {new_failed:#?}"
    );
    // Every SYN that reached the data path was scheduled, and with the top-ups that is the
    // whole flood (99 % of it at least: a top-up can fall short too).
    assert!(
        figures.forwarded >= syns * 99 / 100,
        "round {r}: {} of {syns} SYNs counted as forwarded after {TOP_UPS} top-ups ({} sent)",
        figures.forwarded,
        flooded.sent
    );
    assert_eq!(figures.drop_over_budget, 0, "round {r}: no budget is set");
    assert_eq!(
        figures.forwarded_over_budget, 0,
        "round {r}: no budget is set"
    );
    // The connection table holds real connections only: the kept ones and, until they time
    // out, the new ones of the rounds so far (FIN states).
    let real = (SERVICES.len() * KEPT + new_so_far + NEW) as u64;
    assert!(
        figures.flows >= (SERVICES.len() * KEPT) as u64 && figures.flows <= real,
        "round {r}: {} entries in the connection table, real connections at most {real}",
        figures.flows
    );
    // The flood sits in the half-open table, which is full or nearly (a flood spread over
    // the CPUs fills each one's share).
    let (n, capacity) = figures
        .half_open
        .unwrap_or_else(|| panic!("round {r}: stats --json has no half_open figures: {after:#}"));
    assert!(
        n <= capacity && n >= capacity / 4,
        "round {r}: {n} half-open entries of {capacity} after {syns} SYNs"
    );
    check_servers(env);
    figures
}

/// The table of a test's rounds.
fn print_table(title: &str, rounds: &[Round]) {
    eprintln!("\n{title}");
    eprintln!(
        "round  kept rr/wlc/mh  new ok/100 (begun during flood)  SYNs sent  SYNs/s  forwarded  \
         flows  half-open  round s"
    );
    for r in rounds {
        eprintln!(
            "{:>5}  {:>2}/{:>2}/{:>2} of {KEPT}  {:>3} ({:>3})  {:>9}  {:>7.0}  {:>9}  {:>5}  {:>9}  {:>6.1}",
            r.round,
            r.kept[0],
            r.kept[1],
            r.kept[2],
            r.new_ok,
            r.new_during,
            r.sent,
            r.sent as f64 / r.took.as_secs_f64().max(1e-9),
            r.forwarded,
            r.flows,
            r.half_open
                .map(|(n, c)| format!("{n}/{c}"))
                .unwrap_or_else(|| "-".into()),
            r.secs
        );
    }
}

/// The five rounds against a director whose connection table has `flows` entries.
fn five_rounds(env: &Env, title: &str) {
    let flows = num(&env.stats(), "flows_capacity");
    prepare_servers(env);
    let mut kept = open_kept(env);
    let syns = FLOOD_FACTOR * flows;
    let rounds: Vec<Round> = (1..=ROUNDS)
        .map(|r| round(env, &mut kept, syns, r, (r - 1) * NEW))
        .collect();
    print_table(
        &format!("{title}: {flows} entries, {syns} SYNs a round"),
        &rounds,
    );
}

#[test]
fn a_syn_flood_of_4x_a_65536_entry_table_leaves_established_connections() {
    let env = Env::attached(&lab_spec!(), &["--flows", "65536"]);
    env.apply(&service_file(&env.lab, ""));
    assert_eq!(num(&env.stats(), "flows_capacity"), 65_536);
    five_rounds(&env, "attach --flows 65536");
}

#[test]
fn a_syn_flood_of_4x_the_default_table_leaves_established_connections_under_lb_ctl_run() {
    let env = Env::running(&lab_spec!(), |lab| service_file(lab, ""), &[]);
    assert_eq!(
        num(&env.stats(), "flows_capacity"),
        u64::from(Sizes::default().flows)
    );
    five_rounds(&env, "lb-ctl run, default size");
}

#[test]
fn syns_over_the_budget_are_counted_and_established_connections_stay() {
    // Under the daemon, the production path: it applies the budget, puts it back when it is
    // written by hand, and follows the file on a reload.
    let mut env = Env::attached(&lab_spec!(), &["--flows", "65536"]);
    let budget_file = service_file(
        &env.lab,
        &format!("flood:\n  new_flows_per_cpu: {BUDGET}\n"),
    );
    let file = env.file(&budget_file);
    env.start_daemon(&file, &["--reconcile-interval", "300ms"]);
    assert_eq!(num(&env.stats(), "new_flows_per_cpu"), u64::from(BUDGET));
    prepare_servers(&env);
    let mut kept = open_kept(&env);
    let before = env.stats();
    let client = env.client();
    let ports: Vec<u16> = SERVICES.iter().map(|s| s.1).collect();
    let spoofed = Spoofed::new("S", client.mac, env.lab.director(0).mac, VIP, &ports);
    let syns = FLOOD_FACTOR * 65_536;
    let flood = Flood::start(client, &spoofed, syns, FLOOD_THREADS, FLOOD_LIMIT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (new_ok, new_during, _) = new_connections(&env, &flood);
    let flooded = flood.wait().unwrap_or_else(|e| panic!("{e:#}"));
    let after = env.settled_stats("drop_over_budget", Duration::from_secs(10));
    let delta = |reason: &str| datapath(&after, reason) - datapath(&before, reason);
    let (dropped, stateless, forwarded) = (
        delta("drop_over_budget"),
        delta("forwarded_over_budget"),
        delta("forwarded"),
    );
    eprintln!(
        "BUDGET {BUDGET}/s per CPU: {} SYNs in {:.2?} ({:.0}/s); forwarded +{forwarded}, \
         drop_over_budget +{dropped}, forwarded_over_budget +{stateless}; new connections \
         {new_ok} of {NEW} ({new_during} begun during the flood)",
        flooded.sent,
        flooded.took,
        flooded.rate()
    );
    // What an operator sees right after the flood.
    for view in [&["list"][..], &["stats"][..]] {
        let out = env.ctl.run_ok(view).unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("$ lb-ctl {}\n{out}", view.join(" "));
    }
    assert_eq!(flooded.sent, syns, "the flood did not finish");
    // Two thirds of the SYNs go to rr and wlc, one third to mh; the budget lets through at
    // most BUDGET a second per CPU.
    assert!(
        dropped >= syns / 10,
        "drop_over_budget +{dropped} of {syns} SYNs"
    );
    assert!(
        stateless >= syns / 20,
        "forwarded_over_budget +{stateless} of {syns} SYNs"
    );
    assert!(
        dropped + stateless + forwarded >= syns * 95 / 100,
        "SYNs counted: {dropped} + {stateless} + {forwarded} of {syns}"
    );
    for k in &mut kept {
        let (ok, failed) = request_all(k);
        assert_eq!(ok, KEPT, "{}: {failed:#?}", k.name);
    }
    check_servers(&env);

    // A budget written by hand (7) is put back by the daemon's next reconcile.
    let pin = env.ctl.pin_dir().join("SETTINGS");
    let pin = pin.to_string_lossy();
    bpftool(&[
        "map", "update", "pinned", &pin, "key", "0", "0", "0", "0", "value", "7", "0", "0", "0",
        "0", "0", "0", "0",
    ])
    .ok();
    wait_budget(&env, u64::from(BUDGET), "after a hand-written 7");
    // The file without its `flood:` block, reloaded (SIGHUP): no limit.
    std::fs::write(&file, service_file(&env.lab, "")).expect("rewriting the service file");
    env.daemon_mut().signal(libc::SIGHUP);
    wait_budget(&env, 0, "after a reload without the flood block");
}

/// Waits (at most 10 s) until `stats --json` shows a budget of `want` new entries per second.
fn wait_budget(env: &Env, want: u64, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let have = num(&env.stats(), "new_flows_per_cpu");
        if have == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: the budget is {have}, not {want}, after 10 s; daemon log:\n{}",
            env.daemon().lines().join("\n")
        );
        thread::sleep(Duration::from_millis(100));
    }
}
