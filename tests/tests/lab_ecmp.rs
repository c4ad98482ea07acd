//! Scale-out: three active directors behind a router that spreads flows over them with ECMP,
//! each director's `lb-ctl run` announcing the VIP (`announce:` block: the route in table 100)
//! to the router over eBGP through its own BIRD 2 (`lb_tests::scaleout`, the ECMP lab of
//! `lb_tests::lab`). Needs root, BIRD 2 (`cargo xtask setup`) and lb-ctl built with its XDP
//! object. No route is added or deleted by the test: the daemons do it.
//!
//! - `three_directors_share_new_connections_then_lose_a_speaker_and_a_link`: every daemon
//!   announces; the router's route to the VIP has 3 next hops; new connections from 64 client
//!   addresses reach all 3 directors (each > 15%), 0 failures. Then director-1's BIRD killed:
//!   the router drops it at once (the session closes); director-3's link pulled, its session
//!   without BFD: dropped after the hold time (3 s; 2 to 3 s with keepalives every 1 s).
//! - `a_dead_director_is_withdrawn_and_its_flows_continue`: director's daemon and BIRD killed
//!   (SIGKILL) and its link pulled: the router drops it within BFD's detection time; 20 kept
//!   connections (mh) all continue on the same real server, 0 failed requests, the dead
//!   director's ones through a survivor's stateless path.
//! - `a_director_whose_checks_fail_withdraws_and_announces_again`: director-3 checks port
//!   8083 of the real servers (the others port 80); those servers stopped: director-3's daemon
//!   withdraws, the router drops it, it forwards nothing more, a client loop sees 0 failures
//!   from the withdrawal on; restarted: it announces again and forwards again.
//! - `sigterm_withdraws_drains_and_exits`: SIGTERM to director-2's daemon (drain 1s): the
//!   router drops it while the daemon still runs, the daemon exits 0 about 1 s after the
//!   signal, a client loop sees 0 failures.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use lb_tests::{
    bird::Detection,
    lab::{self, HttpConn, LabSpec, Proc, client_addr, http_get_from},
    lab_spec,
    scaleout::{ClientLoop, ScaleOut},
    stats,
};

const VIP: Ipv4Addr = lab::DEFAULT_VIP;
const CLIENTS: usize = 64;
/// BFD's detection time in the examples: 3 x 100 ms; the test allows scheduling slack.
const BFD_DETECTION: Duration = Duration::from_millis(300);
const DETECTION_BOUND: Duration = Duration::from_millis(1500);
/// The examples' BGP hold time.
const HOLD_TIME: Duration = Duration::from_secs(3);
/// Deadline of one request.
const REQUEST: Duration = Duration::from_secs(5);
/// The longest the check of [`ScaleOut::service_yaml`] takes to see a failure or a recovery
/// (interval 300 ms, 2 retries 100 ms apart with 300 ms timeouts), with slack.
const CHECK_BOUND: Duration = Duration::from_millis(300 + 2 * (100 + 300) + 1500);

fn spec() -> LabSpec {
    let base = LabSpec::ecmp_lab();
    lab_spec!(
        directors: base.directors,
        servers: base.servers,
        routed: base.routed,
        ecmp: base.ecmp,
    )
}

/// The lab with its speakers (director `i` with `detection[i]`), no daemon yet.
fn lab(detection: &[Detection]) -> ScaleOut {
    ScaleOut::build(&spec(), detection).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Starts every daemon with `yamls[i]` and waits for the router's complete route.
fn start(so: &mut ScaleOut, yamls: &[String], started: Instant) {
    for (i, yaml) in yamls.iter().enumerate() {
        so.start_daemon(i, yaml, &["--detach-on-exit"])
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let sessions = so
        .wait_sessions(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let all = so.director_addrs();
    so.wait_next_hops(&all, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "lab, speakers and daemons up in {:.1?} (router-1's sessions Established {:.1?} after \
         the daemons were running); router-1's route:\n{}",
        started.elapsed(),
        sessions,
        so.route_text().unwrap_or_default()
    );
}

/// The lab with every director's daemon running and announcing (drain `drain`), the router's
/// route complete.
fn scale_out(drain: &str) -> ScaleOut {
    let started = Instant::now();
    let mut so = lab(&[Detection::Bfd; 3]);
    let yaml = so.service_yaml(drain, None);
    start(&mut so, &[yaml.clone(), yaml.clone(), yaml], started);
    so
}

fn target() -> SocketAddr {
    SocketAddr::new(VIP.into(), 80)
}

#[test]
fn three_directors_share_new_connections_then_lose_a_speaker_and_a_link() {
    let started = Instant::now();
    // Director-3's session goes without BFD, for the hold timer at the end.
    let mut so = lab(&[Detection::Bfd, Detection::Bfd, Detection::HoldTimer]);
    let yaml = so.service_yaml("0s", None);
    start(&mut so, &[yaml.clone(), yaml.clone(), yaml], started);
    for i in 0..3 {
        let s = so.stats(i).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            s["announce"][0]["announced"],
            true,
            "director-{}: {s}",
            i + 1
        );
        assert!(so.announced(i).unwrap_or_else(|e| panic!("{e:#}")));
    }
    let route = so.route_text().unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        route.matches("nexthop via").count(),
        3,
        "router-1's route to the VIP:\n{route}"
    );
    let before: Vec<u64> = (0..3).map(|i| so.forwarded(i).unwrap()).collect();
    let clients = so.lab.ecmp_clients();
    let (mut ok, mut failed) = (0, Vec::new());
    let mut per_server = std::collections::BTreeMap::new();
    for round in 0..3 {
        for c in 0..CLIENTS {
            let src: IpAddr = client_addr(c).into();
            match http_get_from(clients, src, target(), "/", REQUEST) {
                Ok((200, body)) => {
                    ok += 1;
                    *per_server.entry(body.trim().to_owned()).or_insert(0) += 1;
                }
                other => failed.push(format!("round {round}, {src}: {other:?}")),
            }
        }
    }
    let shares: Vec<u64> = (0..3)
        .map(|i| so.forwarded(i).unwrap() - before[i])
        .collect();
    let total: u64 = shares.iter().sum();
    eprintln!(
        "{ok} of {} requests answered; per real server {per_server:?}; packets forwarded per \
         director {shares:?} ({:?} %)",
        3 * CLIENTS,
        shares
            .iter()
            .map(|s| s * 100 / total.max(1))
            .collect::<Vec<_>>()
    );
    assert!(failed.is_empty(), "failed requests: {failed:#?}");
    for (i, s) in shares.iter().enumerate() {
        assert!(
            *s * 100 > total * 15,
            "director-{} forwarded {s} of {total} packets (<= 15%)",
            i + 1
        );
    }
    lose_a_speaker_and_a_link(&mut so);
}

/// The director (0-based) that forwards `conn`'s next request: the one whose forwarded counter
/// moves when it is made. Makes the request (which must answer 200) and returns its body.
fn director_of(so: &ScaleOut, conn: &mut HttpConn) -> (usize, String) {
    let before: Vec<u64> = (0..3).map(|i| so.forwarded(i).unwrap()).collect();
    let (status, body) = conn.get("/").unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(status, 200, "{body}");
    let after: Vec<u64> = (0..3).map(|i| so.forwarded(i).unwrap()).collect();
    let moved: Vec<usize> = (0..3).filter(|&i| after[i] > before[i]).collect();
    assert_eq!(
        moved.len(),
        1,
        "one request moved the counters of directors {moved:?}"
    );
    (moved[0], body)
}

#[test]
fn a_dead_director_is_withdrawn_and_its_flows_continue() {
    let mut so = scale_out("0s");
    let clients = so.lab.ecmp_clients().clone();
    let mut conns = Vec::new();
    for c in 0..20 {
        let src: IpAddr = client_addr(c).into();
        let mut conn = HttpConn::connect_from(&clients, Some(src), target(), REQUEST)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let (d, body) = director_of(&so, &mut conn);
        conns.push((src, conn, d, body));
    }
    let mut per_director = [0usize; 3];
    for (_, _, d, _) in &conns {
        per_director[*d] += 1;
    }
    let victim = (0..3)
        .max_by_key(|&i| per_director[i])
        .unwrap_or_else(|| unreachable!());
    eprintln!(
        "20 kept connections per director {per_director:?}; director-{} dies",
        victim + 1
    );
    assert!(per_director[victim] > 0);
    let stateless_before: Vec<u64> = (0..3)
        .map(|i| stats::datapath(&so.stats(i).unwrap(), "forwarded_stateless"))
        .collect();

    // A dead machine: the link goes first, so nothing it sends reaches the router.
    let t0 = Instant::now();
    so.lab
        .set_link(so.director(victim), false)
        .unwrap_or_else(|e| panic!("{e:#}"));
    if let Some(d) = so.daemons[victim].as_mut() {
        d.signal(libc::SIGKILL);
    }
    so.birds[victim].kill().unwrap_or_else(|e| panic!("{e:#}"));
    let survivors: Vec<Ipv4Addr> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| so.director(i).addr)
        .collect();
    so.wait_next_hops(&survivors, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let detected = t0.elapsed();
    eprintln!(
        "router-1 dropped director-{} {detected:.2?} after its link was pulled (BFD: \
         {BFD_DETECTION:?}); route now:\n{}",
        victim + 1,
        so.route_text().unwrap_or_default()
    );
    assert!(
        detected <= DETECTION_BOUND,
        "detection took {detected:?}, more than {DETECTION_BOUND:?}"
    );

    let mut failed = Vec::new();
    let mut moved = 0;
    for (src, conn, d, body) in &mut conns {
        match conn.get("/") {
            Ok((200, b)) if b == *body => moved += usize::from(*d == victim),
            other => failed.push(format!(
                "{src} (was on director-{}, {}): {other:?}",
                *d + 1,
                body.trim()
            )),
        }
    }
    let stateless: Vec<u64> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| {
            stats::datapath(&so.stats(i).unwrap(), "forwarded_stateless") - stateless_before[i]
        })
        .collect();
    eprintln!(
        "after the failure: {} of 20 kept connections answered by the same real server \
         ({moved} of them had gone through director-{}); survivors' stateless forwards \
         {stateless:?}",
        20 - failed.len(),
        victim + 1
    );
    assert!(failed.is_empty(), "failed requests: {failed:#?}");
    assert_eq!(moved, per_director[victim]);
    assert!(
        stateless.iter().sum::<u64>() >= per_director[victim] as u64,
        "the survivors forwarded {stateless:?} packets statelessly"
    );
}

/// `lab-server http --port PORT` on every real server.
fn extra_servers(so: &ScaleOut, port: u16) -> Vec<Proc> {
    let bin = so
        .lab
        .server_bin()
        .unwrap_or_else(|| panic!("the lab started no lab-server"))
        .to_string_lossy()
        .into_owned();
    let port = port.to_string();
    so.lab
        .servers()
        .iter()
        .map(|s| {
            s.spawn(&[&bin, "http", "--name", &s.name, "--port", &port])
                .unwrap_or_else(|e| panic!("{e:#}"))
        })
        .collect()
}

/// The announce line of director `i`'s `lb-ctl list`.
fn announce_line(so: &ScaleOut, i: usize) -> String {
    let list = so.ctls[i].list().unwrap_or_else(|e| panic!("{e:#}"));
    list.lines()
        .find(|l| l.starts_with("Announce web "))
        .unwrap_or_else(|| panic!("no announce line in director-{}'s list:\n{list}", i + 1))
        .to_owned()
}

#[test]
fn a_director_whose_checks_fail_withdraws_and_announces_again() {
    const CHECK_PORT: u16 = 8083;
    let started = Instant::now();
    let mut so = lab(&[Detection::Bfd; 3]);
    let mut extra = extra_servers(&so, CHECK_PORT);
    let yaml = so.service_yaml("0s", None);
    let yaml3 = so.service_yaml("0s", Some(CHECK_PORT));
    start(&mut so, &[yaml.clone(), yaml, yaml3], started);
    let all = so.director_addrs();

    let requests = ClientLoop::start(&so, CLIENTS, REQUEST);
    std::thread::sleep(Duration::from_millis(500));
    // Only director-3's checks fail: the servers on port 8083 stop, port 80 keeps answering.
    let failed_at = Instant::now();
    for p in &mut extra {
        p.kill().unwrap_or_else(|e| panic!("{e:#}"));
    }
    let withdrawn = so
        .wait_next_hops(&all[..2], CHECK_BOUND)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let withdrawn_at = Instant::now();
    assert!(!so.announced(2).unwrap_or_else(|e| panic!("{e:#}")));
    let line = announce_line(&so, 2);
    assert!(line.ends_with("withdrawn: no backend"), "{line}");
    let quiet_from = so.forwarded(2).unwrap_or_else(|e| panic!("{e:#}"));
    std::thread::sleep(Duration::from_secs(1));
    let while_out = so.forwarded(2).unwrap_or_else(|e| panic!("{e:#}")) - quiet_from;

    let recovered_at = Instant::now();
    extra = extra_servers(&so, CHECK_PORT);
    let back = so
        .wait_next_hops(&all, CHECK_BOUND)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let from = so.forwarded(2).unwrap_or_else(|e| panic!("{e:#}"));
    std::thread::sleep(Duration::from_secs(1));
    let after = so.forwarded(2).unwrap_or_else(|e| panic!("{e:#}")) - from;
    let seen = requests.finish();
    drop(extra);
    eprintln!(
        "director-3's checks failed: router-1 dropped it {withdrawn:.2?} later, it forwarded \
         {while_out} packets in the next second; checks back: announced again and in router-1's \
         route {back:.2?} after the servers restarted ({:.2?} from the failure), {after} \
         packets in the next second",
        recovered_at.duration_since(failed_at) + back
    );
    eprintln!(
        "client loop: {} answered, {} failed ({} of them begun after the withdrawal), slowest \
         {:.2?}",
        seen.ok,
        seen.failed.len(),
        seen.failed_since(withdrawn_at).len(),
        seen.slowest
    );
    assert_eq!(while_out, 0, "director-3 got traffic while withdrawn");
    assert!(
        after > 0,
        "director-3 got no traffic after it announced again"
    );
    // While director-3 is out, the other two have the same table: nothing may fail. Once it
    // announces again, its first backend's check may pass a check interval before the
    // other's, and a connection that ECMP moves to it in that window can be reset (docs:
    // "Announcing VIPs"); that window is reported, not asserted.
    let while_withdrawn = seen.failed_between(withdrawn_at, Some(recovered_at));
    eprintln!(
        "failed after the recovery began (not asserted): {}",
        seen.failed_since(recovered_at).len()
    );
    assert!(
        while_withdrawn.is_empty(),
        "failed requests while director-3 was withdrawn: {while_withdrawn:#?}"
    );
    assert!(seen.ok > 50, "only {} requests in the loop", seen.ok);
}

#[test]
fn sigterm_withdraws_drains_and_exits() {
    const DRAIN: Duration = Duration::from_secs(1);
    let mut so = scale_out("1s");
    let all = so.director_addrs();
    let requests = ClientLoop::start(&so, CLIENTS, REQUEST);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let d = so.daemons[1]
        .as_mut()
        .unwrap_or_else(|| panic!("no daemon on director-2"));
    d.signal(libc::SIGTERM);
    let withdrawn = so
        .wait_next_hops(&[all[0], all[2]], Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let d = so.daemons[1]
        .as_mut()
        .unwrap_or_else(|| panic!("no daemon on director-2"));
    assert!(
        d.exit_status().is_none(),
        "director-2's daemon exited before router-1 dropped it ({withdrawn:?})"
    );
    let status = d
        .wait_timeout(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("lb-ctl run did not exit within 5 s of SIGTERM"));
    let exited = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let seen = requests.finish();
    eprintln!(
        "SIGTERM to director-2's daemon (drain {DRAIN:?}): router-1 dropped it {withdrawn:.3?} \
         later, the daemon exited ({status}) {exited:.2?} after the signal; client loop: {} \
         answered, {} failed, slowest {:.2?}",
        seen.ok,
        seen.failed.len(),
        seen.slowest
    );
    assert!(status.success(), "exit status {status}");
    assert!(
        (DRAIN..DRAIN + Duration::from_millis(1500)).contains(&exited),
        "exited {exited:?} after SIGTERM; the drain is {DRAIN:?}"
    );
    assert!(
        seen.failed.is_empty(),
        "failed requests: {:#?}",
        seen.failed
    );
    assert!(seen.ok > 50, "only {} requests in the loop", seen.ok);
}

/// Director-1's BIRD killed, then director-3's link pulled (its session without BFD): how long
/// router-1 takes to drop each, asserted against a closed session (at once) and the hold time.
fn lose_a_speaker_and_a_link(so: &mut ScaleOut) {
    let all = so.director_addrs();

    // Director-1's speaker dies: the kernel closes its BGP session.
    let t0 = Instant::now();
    so.birds[0].kill().unwrap_or_else(|e| panic!("{e:#}"));
    so.wait_next_hops(&all[1..], Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let killed = t0.elapsed();

    // Director-3 (no BFD) loses its link: only the hold timer tells the router.
    let t0 = Instant::now();
    so.lab
        .set_link(so.director(2), false)
        .unwrap_or_else(|e| panic!("{e:#}"));
    so.wait_next_hops(&all[1..2], HOLD_TIME + Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let held = t0.elapsed();
    eprintln!(
        "router-1 dropped director-1 {killed:.3?} after its BIRD was killed (SIGKILL), and \
         director-3 (no BFD) {held:.2?} after its link was pulled (hold time {HOLD_TIME:?})"
    );
    assert!(killed < Duration::from_millis(500), "{killed:?}");
    assert!(
        // BIRD jitters its keepalives (1.66-2.67 s measured with hold time 3 s): not before
        // a second, and not after the hold time plus slack.
        (Duration::from_secs(1)..HOLD_TIME + Duration::from_secs(1)).contains(&held),
        "the hold timer took {held:?}"
    );
}
