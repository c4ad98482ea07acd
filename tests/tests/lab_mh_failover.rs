//! End to end: established connections of an `mh` service survive a director failover.
//!
//! Two directors run `lb-ctl run` with the same `mh` service and a `vrrp:` block (v3, 200 ms;
//! XDP in generic mode). Ten keep-alive HTTP connections are opened through the master; then
//! the master's link goes down and the backup takes the VIP. The backup has no entry for those
//! connections and sees no SYN: it forwards their packets statelessly, to the real server
//! Maglev picks on every director, so each connection keeps answering from the same server and
//! no real server sends a reset. The gap (link down -> first answer on an old connection) is
//! printed. Needs root; everything is removed at the end, also on failure.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use lb_tests::{
    daemon::Daemon,
    lab::{self, Host, HttpConn, Lab, LabSpec, http_get},
    lbctl::LbCtl,
    stats::{self, datapath},
};
use serde_json::Value;

const VIP: Ipv4Addr = lab::DEFAULT_VIP;
const CONNECTIONS: usize = 10;
/// Deadline of one request on a kept connection: long enough for VRRP's takeover (about
/// 0.7 s at 200 ms) plus TCP's retransmission back-off.
const REQUEST: Duration = Duration::from_secs(10);

/// `lb-ctl run` on a director (generic mode, detached when it stops); dropping it kills it.
fn start_daemon(ctl: &LbCtl, director: &Host, yaml: &str) -> Daemon {
    let file = ctl.write_file(yaml).unwrap_or_else(|e| panic!("{e:#}"));
    Daemon::start(
        ctl,
        director,
        &file,
        &["--mode", "generic", "--detach-on-exit"],
    )
}

fn director_yaml(lab: &Lab, priority: u8) -> String {
    format!(
        "vrrp:\n  - name: VI_1\n    interface: eth0\n    virtual_router_id: 51\n    \
         priority: {priority}\n    advert_interval: 200ms\n    version: 3\n    \
         virtual_addresses: [{VIP}/32]\n    garp_count: 3\n    garp_delay: 100ms\n\
         services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    scheduler: mh\n    \
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
    let i = names
        .iter()
        .position(|n| *n == "OutRsts")
        .unwrap_or_else(|| panic!("no OutRsts in {names:?}"));
    values[i]
        .parse()
        .unwrap_or_else(|e| panic!("OutRsts {:?}: {e}", values[i]))
}

fn stats(ctl: &LbCtl) -> Value {
    stats::parse(&ctl.stats_json().unwrap_or_else(|e| panic!("{e:#}")))
}

#[test]
fn mh_connections_survive_a_failover_to_the_backup_director() {
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
    let mut daemons = vec![
        start_daemon(&ctls[0], d1, &director_yaml(&lab, 150)),
        start_daemon(&ctls[1], d2, &director_yaml(&lab, 100)),
    ];
    let served = || http_get(lab.client(), VIP, 80, "/", Duration::from_millis(300)).is_ok();
    assert!(
        lab::wait_until(Duration::from_secs(10), || has_vip(d1) && served()),
        "director-1 should hold the VIP and forward"
    );
    assert!(!has_vip(d2), "director-2 holds the VIP too");

    let (mut conns, first) = HttpConn::open_many(lab.client(), VIP, 80, CONNECTIONS, REQUEST)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let rsts_before: Vec<u64> = lab.servers().iter().map(out_rsts).collect();
    let before = stats(&ctls[1]);
    assert_eq!(
        before["flows"].as_u64(),
        Some(0),
        "director-2 saw no flow yet"
    );

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
    let rsts: Vec<u64> = lab
        .servers()
        .iter()
        .zip(&rsts_before)
        .map(|(s, b)| out_rsts(s) - b)
        .collect();
    let after = stats(&ctls[1]);
    let stateless =
        datapath(&after, "forwarded_stateless") - datapath(&before, "forwarded_stateless");
    eprintln!(
        "MH FAILOVER: link down -> first answer on a kept connection after {} ms; {} of \
         {CONNECTIONS} connections answered from their server; real servers sent {rsts:?} \
         resets; director-2 forwarded {stateless} packets statelessly, holds {} entries",
        gap.as_millis(),
        CONNECTIONS - failed.len(),
        after["flows"],
    );
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(has_vip(d2), "director-2 did not take the VIP");
    assert_eq!(rsts, vec![0, 0], "resets from the real servers");
    // Every kept connection sent at least its request through director-2, without an entry.
    assert!(
        stateless >= CONNECTIONS as u64,
        "director-2 forwarded {stateless} packets statelessly"
    );
    assert_eq!(after["flows"].as_u64(), Some(0), "{after:#}");
    assert_eq!(datapath(&after, "drop_no_flow"), 0);

    drop(conns);
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
