//! End to end: connection-state sync (`sync:`) between two directors keeps every connection
//! across a VRRP failover, whatever the scheduler, and refuses datagrams it cannot trust.
//!
//! Two directors run `lb-ctl run` with the same service, a `vrrp:` block (v3, 200 ms) and a
//! `sync:` block (unicast to each other, role auto: the VRRP master sends). 20 keep-alive HTTP
//! connections are opened through the master; the backup's table fills from the sync; then
//! the master's link goes down. Each connection must answer from the server it had, no real
//! server sends a reset, and new connections (a client loop) are served. Persistence: a new
//! connection after the failover goes to the client's server. Needs root; everything is
//! removed at the end, also on failure.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

use lb_ctl::sync::packet::{self, FlowEntry, Header};
use lb_tests::{
    daemon::Daemon,
    lab::{self, Host, HttpConn, Lab, LabSpec, http_get},
    lbctl::LbCtl,
    stats,
};
use serde_json::Value;

const VIP: Ipv4Addr = lab::DEFAULT_VIP;
const CONNECTIONS: usize = 20;
const KEY: &str = "lab-sync-key-0123456789";
const PORT: u16 = 8848;
/// Deadline of one request on a kept connection: VRRP's takeover plus TCP's back-off.
const REQUEST: Duration = Duration::from_secs(10);

fn start_daemon(ctl: &LbCtl, director: &Host, yaml: &str) -> Daemon {
    let file = ctl.write_file(yaml).unwrap_or_else(|e| panic!("{e:#}"));
    Daemon::start(
        ctl,
        director,
        &file,
        &["--mode", "generic", "--detach-on-exit"],
    )
}

/// A director's file: VRRP at `priority`, sync to `peer` with `role`, service `web`.
fn director_yaml(lab: &Lab, priority: u8, peer: Ipv4Addr, role: &str, service: &str) -> String {
    format!(
        "vrrp:\n  - name: VI_1\n    interface: eth0\n    virtual_router_id: 51\n    \
         priority: {priority}\n    advert_interval: 200ms\n    version: 3\n    \
         virtual_addresses: [{VIP}/32]\n    garp_count: 3\n    garp_delay: 100ms\n\
         sync:\n  interface: eth0\n  peers: [{peer}]\n  port: {PORT}\n  key: {KEY}\n  \
         role: {role}\n  interval: 100ms\n\
         services:\n  - name: web\n    vip: {VIP}\n    port: 80\n{service}    \
         backends:\n      - address: {}\n      - address: {}\n",
        lab.server(0).addr,
        lab.server(1).addr
    )
}

fn has_vip(host: &Host) -> bool {
    host.exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .is_ok_and(|out| out.contains(&format!("inet {VIP}/32")))
}

/// The host's TCP OutRsts counter (`/proc/net/snmp` of its namespace).
fn out_rsts(host: &Host) -> u64 {
    let snmp = host
        .exec_ok(&["cat", "/proc/net/snmp"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let tcp: Vec<Vec<&str>> = snmp
        .lines()
        .filter(|l| l.starts_with("Tcp:"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let [names, values] = tcp.as_slice() else {
        panic!("no Tcp lines in /proc/net/snmp of {}:\n{snmp}", host.name);
    };
    let i = (names.iter().position(|n| *n == "OutRsts"))
        .unwrap_or_else(|| panic!("no OutRsts in {names:?}"));
    values[i]
        .parse()
        .unwrap_or_else(|e| panic!("OutRsts {:?}: {e}", values[i]))
}

fn stats(ctl: &LbCtl) -> Value {
    stats::parse(&ctl.stats_json().unwrap_or_else(|e| panic!("{e:#}")))
}

fn flows(ctl: &LbCtl) -> u64 {
    stats(ctl)["flows"].as_u64().unwrap_or(0)
}

fn sync_counter(s: &Value, name: &str) -> u64 {
    s["sync"][name].as_u64().unwrap_or(0)
}

fn rejected(s: &Value, why: &str) -> u64 {
    (s["sync"]["rejected"].as_array().into_iter().flatten())
        .find(|r| r[0] == why)
        .and_then(|r| r[1].as_u64())
        .unwrap_or(0)
}

fn two_directors(service: &str) -> (Lab, Vec<LbCtl>, Vec<Daemon>) {
    let lab = Lab::build(&LabSpec {
        directors: 2,
        servers: 2,
        pass_through: false,
        server_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_lab-server"))),
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    lab.del_vip(lab.director(0))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (d1, d2) = (lab.director(0), lab.director(1));
    let ctls: Vec<LbCtl> = [d1, d2]
        .iter()
        .map(|d| LbCtl::new(&lab, d).unwrap_or_else(|e| panic!("{e:#}")))
        .collect();
    let daemons = vec![
        start_daemon(
            &ctls[0],
            d1,
            &director_yaml(&lab, 150, d2.addr, "auto", service),
        ),
        start_daemon(
            &ctls[1],
            d2,
            &director_yaml(&lab, 100, d1.addr, "auto", service),
        ),
    ];
    (lab, ctls, daemons)
}

/// The failover with `service` (its scheduler and options); `persistent`: every connection of
/// the client goes to one server, and a new one after the failover must too.
fn failover(name: &str, service: &str, persistent: bool) {
    let (lab, ctls, mut daemons) = two_directors(service);
    let (d1, d2) = (lab.director(0), lab.director(1));
    let served = || http_get(lab.client(), VIP, 80, "/", Duration::from_millis(300)).is_ok();
    assert!(
        lab::wait_until(Duration::from_secs(10), || has_vip(d1) && served()),
        "director-1 should hold the VIP and forward"
    );
    assert!(!has_vip(d2), "director-2 holds the VIP too");
    assert!(
        lab::wait_until(
            Duration::from_secs(10),
            || stats(&ctls[1])["sync"]["active"] == "receiving"
        ),
        "director-2's sync never started receiving"
    );

    let (mut conns, first) = HttpConn::open_many(lab.client(), VIP, 80, CONNECTIONS, REQUEST)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let servers: std::collections::BTreeSet<&String> = first.iter().collect();
    if persistent {
        assert_eq!(servers.len(), 1, "persistence: one server, got {first:?}");
    } else {
        assert_eq!(servers.len(), 2, "{name}: both servers used, got {first:?}");
    }
    // The backup's table fills from the sync.
    let master_flows = flows(&ctls[0]);
    let start = Instant::now();
    assert!(
        lab::wait_until(Duration::from_secs(5), || flows(&ctls[1]) >= master_flows),
        "director-2 holds {} entries, director-1 {master_flows}",
        flows(&ctls[1])
    );
    let synced_in = start.elapsed();
    // One new connection: how long until the backup has its entry.
    let before = flows(&ctls[1]);
    let t = Instant::now();
    let mut extra = HttpConn::open_many(lab.client(), VIP, 80, 1, REQUEST)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .0;
    assert!(
        lab::wait_until(Duration::from_secs(5), || flows(&ctls[1]) > before),
        "the new connection's entry never reached director-2"
    );
    let new_entry = t.elapsed();
    let backup = stats(&ctls[1]);
    let master = stats(&ctls[0]);
    assert_eq!(master["sync"]["active"], "sending", "{master:#}");
    assert_eq!(backup["sync"]["active"], "receiving", "{backup:#}");
    let rsts_before: Vec<u64> = lab.servers().iter().map(out_rsts).collect();

    lab.set_link(d1, false).unwrap_or_else(|e| panic!("{e:#}"));
    let down = Instant::now();
    let mut gap = None;
    let mut failed = Vec::new();
    for (i, c) in conns.iter_mut().enumerate() {
        match c.get("/") {
            Ok((200, body)) if body == first[i] => {}
            other => failed.push(format!("connection {i}: {other:?}, before {:?}", first[i])),
        }
        gap.get_or_insert(down.elapsed());
    }
    let gap = gap.unwrap_or_default();
    // A client loop: new connections through the new master.
    let mut loop_ok = 0;
    let mut loop_bodies = Vec::new();
    for _ in 0..10 {
        if let Ok((200, body)) = http_get(lab.client(), VIP, 80, "/", REQUEST) {
            loop_ok += 1;
            loop_bodies.push(body);
        }
    }
    let rsts: Vec<u64> = (lab.servers().iter().zip(&rsts_before))
        .map(|(s, b)| out_rsts(s) - b)
        .collect();
    let after = stats(&ctls[1]);
    let master = stats(&ctls[0]);
    eprintln!(
        "SYNC FAILOVER ({name}): backup held the master's {master_flows} entries {} ms after \
         the connections opened; a new connection's entry reached it in {} ms; it installed {} \
         entries from {} datagrams (the master sent {} entries); link down -> first answer \
         on a kept connection {} ms; {} of {CONNECTIONS} kept connections answered from \
         their server; resets from the real servers {rsts:?}; client loop {loop_ok}/10; \
         drop_no_flow {}",
        synced_in.as_millis(),
        new_entry.as_millis(),
        sync_counter(&after, "installed"),
        sync_counter(&after, "received_datagrams"),
        sync_counter(&master, "sent_entries"),
        gap.as_millis(),
        CONNECTIONS - failed.len(),
        stats::datapath(&after, "drop_no_flow"),
    );
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(has_vip(d2), "director-2 did not take the VIP");
    assert_eq!(rsts, vec![0, 0], "resets from the real servers");
    assert_eq!(loop_ok, 10, "the client loop after the failover");
    assert_eq!(stats::datapath(&after, "drop_no_flow"), 0, "{after:#}");
    if persistent {
        for body in &loop_bodies {
            assert_eq!(body, &first[0], "persistence lost across the failover");
        }
    }
    assert!(sync_counter(&after, "installed") >= CONNECTIONS as u64);

    drop(conns);
    drop(extra.pop());
    for d in &mut daemons {
        let status = d.proc.stop(Duration::from_secs(5));
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "{} did not stop cleanly: {status:?}",
            d.proc.what()
        );
    }
    drop(ctls);
}

#[test]
fn rr_connections_keep_their_servers_across_a_failover() {
    failover("rr", "    scheduler: rr\n", false);
}

#[test]
fn wlc_connections_keep_their_servers_across_a_failover() {
    failover("wlc", "    scheduler: wlc\n", false);
}

#[test]
fn persistence_is_kept_across_a_failover() {
    failover(
        "rr + persistence",
        "    scheduler: rr\n    persistence:\n      timeout: 60s\n",
        true,
    );
}

/// Crafted datagrams to a backup: a bad key, truncated, replayed, garbage, another version:
/// each counted under its reason, nothing installed; a good one installs its entry.
#[test]
fn untrusted_datagrams_are_counted_and_nothing_is_installed() {
    let lab = Lab::build(&LabSpec {
        directors: 1,
        servers: 2,
        pass_through: false,
        server_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_lab-server"))),
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    let d1 = lab.director(0);
    let ctl = LbCtl::new(&lab, d1).unwrap_or_else(|e| panic!("{e:#}"));
    let yaml = format!(
        "sync:\n  interface: eth0\n  peers: [{}]\n  key: {KEY}\n  role: backup\n\
         services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    scheduler: rr\n    \
         backends:\n      - address: {}\n      - address: {}\n",
        lab.client().addr,
        lab.server(0).addr,
        lab.server(1).addr
    );
    let mut daemon = start_daemon(&ctl, d1, &yaml);
    assert!(
        lab::wait_until(Duration::from_secs(10), || stats(&ctl)["sync"]["active"]
            == "receiving"),
        "the sync report never showed up"
    );
    let v4 = |a: Ipv4Addr| {
        let mut x = [0u8; 16];
        x[10] = 0xff;
        x[11] = 0xff;
        x[12..].copy_from_slice(&a.octets());
        x
    };
    let entry = FlowEntry {
        client: v4(lab.client().addr),
        vip: v4(VIP),
        client_port: 40001,
        vip_port: 80,
        service_port: 80,
        proto: 6,
        state: 2,
        backend: v4(lab.server(1).addr),
        backend_port: 80,
        age_ms: 500,
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let header = |seq| Header {
        sender: 0x5151,
        seq,
        time_ms: now_ms,
    };
    let good = packet::encode(KEY.as_bytes(), &header(1), &[entry], &[]);
    let bad_key = packet::encode(b"another key of 16 bytes", &header(2), &[entry], &[]);
    let mut version = packet::encode(KEY.as_bytes(), &header(3), &[entry], &[]);
    version[4] = 9;
    let stale = packet::encode(
        KEY.as_bytes(),
        &Header {
            time_ms: now_ms - 3_600_000,
            ..header(4)
        },
        &[entry],
        &[],
    );
    let to = SocketAddr::from((d1.addr, PORT));
    let send = |datagrams: Vec<Vec<u8>>| {
        lab.client()
            .run_in(move || {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                for d in datagrams {
                    s.send_to(&d, to)?;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e:#}"))
    };
    send(vec![
        bad_key,
        good[..good.len() - 7].to_vec(),
        b"not a sync datagram".to_vec(),
        version,
        stale,
    ]);
    let wait_rejected = |n: u64| {
        lab::wait_until(Duration::from_secs(5), || {
            let s = stats(&ctl);
            [
                "garbage",
                "truncated",
                "bad_version",
                "bad_hmac",
                "replayed",
                "stale",
            ]
            .iter()
            .map(|w| rejected(&s, w))
            .sum::<u64>()
                >= n
        })
    };
    assert!(wait_rejected(5), "{:#}", stats(&ctl));
    let s = stats(&ctl);
    for why in ["bad_hmac", "truncated", "garbage", "bad_version", "stale"] {
        assert_eq!(rejected(&s, why), 1, "{why}: {:#}", s["sync"]);
    }
    assert_eq!(s["flows"].as_u64(), Some(0), "nothing installed: {s:#}");
    assert_eq!(sync_counter(&s, "installed"), 0);

    // The good one installs its entry; the same again is a replay.
    send(vec![good.clone()]);
    assert!(
        lab::wait_until(Duration::from_secs(5), || flows(&ctl) == 1),
        "{:#}",
        stats(&ctl)
    );
    send(vec![good]);
    assert!(wait_rejected(6), "{:#}", stats(&ctl));
    let s = stats(&ctl);
    assert_eq!(rejected(&s, "replayed"), 1, "{:#}", s["sync"]);
    assert_eq!(sync_counter(&s, "installed"), 1, "{:#}", s["sync"]);
    assert_eq!(s["flows"].as_u64(), Some(1));
    let list = ctl.list().unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        list.contains("Sync: role backup, receiving on eth0 port 8848")
            && list.contains("installed 1,")
            && list.contains("bad_hmac 1, replayed 1, stale 1"),
        "{list}"
    );
    eprintln!(
        "SYNC REJECTIONS: {}",
        list.lines()
            .filter(|l| l.starts_with("Sync"))
            .collect::<String>()
    );

    let status = daemon.proc.stop(Duration::from_secs(5));
    assert!(status.as_ref().is_ok_and(|s| s.success()), "{status:?}");
    drop(ctl);
}
