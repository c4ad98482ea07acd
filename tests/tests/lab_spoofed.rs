//! End to end: a flood of spoofed TCP ACKs (random sources, no handshake) neither fills the
//! connection table nor moves established connections or the active-connection counts.
//!
//! The namespace lab (`lb_tests::lab`) with the real `lb-ctl`: director-1 attached natively with
//! a small connection table (`--flows 4096`), one service over the two real servers, 20
//! keep-alive HTTP connections from the client; then 100,000 TCP ACKs to VIP:80 from random
//! addresses in 10.0.0.0/8 and random ports, sent as raw Ethernet frames (AF_PACKET) from the
//! client's namespace to the director's MAC, bounded in time. Afterwards every connection must
//! answer from the server it had, the table must hold exactly the 20 connections, and the
//! data path must have counted the ACKs under `drop_no_flow` (rr) or `forwarded_stateless`
//! (mh). Under the old behaviour (every non-SYN made an entry) the ACKs evict the 20 entries
//! from the 4096-entry table and rr sends the connections' next packets anywhere.
//!
//! Replies to the ACKs that mh forwards go to 10.0.0.0/8, which no lab host routes: they never
//! leave the real servers. Needs root; everything is removed at the end, also on failure.

use std::{net::Ipv4Addr, time::Duration};

use lb_tests::{
    env::Env,
    flood::{Flood, Spoofed},
    lab::HttpConn,
    lab_spec,
    stats::{datapath, num, service},
};
use serde_json::Value;

const VIP: Ipv4Addr = lb_tests::lab::DEFAULT_VIP;
/// Deadline of one HTTP request.
const T: Duration = Duration::from_secs(5);
const CONNECTIONS: usize = 20;
const SPOOFED: u64 = 100_000;
/// The flood stops here even if not all frames are out.
const FLOOD_LIMIT: Duration = Duration::from_secs(60);

/// The seed lab, director-1 attached natively with a 4096-entry connection table, and `web`
/// (port 80, `scheduler`) over both real servers.
fn attached(scheduler: &str) -> Env {
    let env = Env::attached(&lab_spec!(), &["--flows", "4096"]);
    env.apply(&format!(
        "services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    scheduler: {scheduler}\n    \
         backends:\n      - address: {}\n      - address: {}\n",
        env.server(0).addr,
        env.server(1).addr
    ));
    env
}

/// The stats once `reason`'s counter has not moved for 300 ms (at most 10 s).
fn settled_stats(env: &Env, reason: &str) -> Value {
    env.settled_stats(reason, Duration::from_secs(10))
}

/// The sum of the backends' active connections of service `web` in `stats --json`.
fn active_connections(stats: &Value) -> u64 {
    service(stats, "web")["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("no backends of web in {stats:#}"))
        .iter()
        .map(|b| num(b, "active_connections"))
        .sum()
}

/// The sum of the ActiveConn column of `lb-ctl list` (backend lines `  -> ADDR:PORT Route
/// WEIGHT ACTIVE ...`).
fn listed_active_connections(list: &str) -> u64 {
    list.lines()
        .filter(|l| l.trim_start().starts_with("->") && l.contains("Route"))
        .map(|l| {
            l.split_whitespace()
                .nth(4)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no ActiveConn in {l:?}"))
        })
        .sum()
}

/// The whole scenario for one scheduler; `counted_as` is the reason the ACKs must be counted
/// under, `not_as` one they must not be.
fn spoofed_acks_leave_connections_alone(scheduler: &str, counted_as: &str, not_as: &str) {
    let env = attached(scheduler);
    let client = env.lab.client();
    let (mut conns, first) =
        HttpConn::open_many(client, VIP, 80, CONNECTIONS, T).unwrap_or_else(|e| panic!("{e:#}"));
    let on_first = first
        .iter()
        .filter(|b| **b == format!("{}\n", env.lab.server(0).name))
        .count();
    eprintln!(
        "{scheduler}: {CONNECTIONS} connections, {on_first} on real-server-1, {} on real-server-2",
        CONNECTIONS - on_first
    );
    if scheduler == "rr" {
        assert_eq!(on_first, CONNECTIONS / 2, "rr alternates: {first:?}");
    }
    let before = settled_stats(&env, "forwarded");
    assert_eq!(num(&before, "flows"), CONNECTIONS as u64, "{before:#}");
    assert_eq!(active_connections(&before), CONNECTIONS as u64);

    let director = env.lab.director(0);
    let spoofed = Spoofed::new("A", client.mac, director.mac, VIP, &[80]);
    let flooded = Flood::start(client, &spoofed, SPOOFED, 1, FLOOD_LIMIT)
        .and_then(Flood::wait)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (sent, took) = (flooded.sent, flooded.took);
    let after = settled_stats(&env, counted_as);
    let counted = datapath(&after, counted_as) - datapath(&before, counted_as);
    let flows = num(&after, "flows");
    let listed = env
        .ctl
        .run_ok(&["list", "--connections"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let listed_flows = listed.lines().filter(|l| l.starts_with("TCP ")).count();
    eprintln!(
        "SPOOFED {scheduler}: sent {sent} ACKs in {took:.2?}; {counted_as} +{counted}, \
         {not_as} +{}; connection table {} -> {flows} entries ({listed_flows} listed)",
        datapath(&after, not_as) - datapath(&before, not_as),
        num(&before, "flows"),
    );
    assert_eq!(
        sent, SPOOFED,
        "the flood did not finish within {FLOOD_LIMIT:?}"
    );
    // Frames lost on the way (a full veth queue) are not counted; nearly all must arrive.
    assert!(
        counted <= sent && counted >= sent * 99 / 100,
        "{counted} of {sent} spoofed ACKs counted as {counted_as}"
    );
    assert_eq!(
        datapath(&after, not_as),
        datapath(&before, not_as),
        "{not_as}"
    );
    assert_eq!(flows, CONNECTIONS as u64, "entries made by spoofed ACKs");
    assert_eq!(listed_flows, CONNECTIONS, "list --connections:\n{listed}");
    assert_eq!(active_connections(&after), CONNECTIONS as u64, "{after:#}");

    for (i, c) in conns.iter_mut().enumerate() {
        let (status, body) = c
            .get("/")
            .unwrap_or_else(|e| panic!("connection {i} after the flood: {e:#}"));
        assert_eq!(
            (status, body.as_str()),
            (200, first[i].as_str()),
            "connection {i}"
        );
    }
    let list = env.ctl.list().unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        listed_active_connections(&list),
        CONNECTIONS as u64,
        "lb-ctl list:\n{list}"
    );
    drop(conns);
}

#[test]
fn spoofed_acks_to_an_rr_service_are_dropped_without_entries() {
    spoofed_acks_leave_connections_alone("rr", "drop_no_flow", "forwarded_stateless");
}

#[test]
fn spoofed_acks_to_an_mh_service_are_forwarded_without_entries() {
    spoofed_acks_leave_connections_alone("mh", "forwarded_stateless", "drop_no_flow");
}
