//! Scale-out: three active directors behind a router that spreads flows over them with ECMP,
//! each director announcing the VIP to the router over eBGP through its own BIRD 2
//! (`lb_tests::scaleout`, the ECMP lab of `lb_tests::lab`). Needs root, BIRD 2 (`cargo xtask
//! setup`) and lb-ctl built with its XDP object.
//!
//! - `three_directors_share_new_connections`: the router's route to the VIP has 3 next hops;
//!   new connections from 64 client addresses reach all 3 directors (each > 15%), 0 failures.
//! - `a_dead_director_is_withdrawn_and_its_flows_continue`: director's daemon and BIRD killed
//!   (SIGKILL) and its link pulled: the router drops it within BFD's detection time; 20 kept
//!   connections (mh) all continue on the same real server, 0 failed requests, the dead
//!   director's ones through a survivor's stateless path.
//! - `a_withdrawn_director_gets_no_new_connections_and_comes_back`: director-3's VIP route
//!   withdrawn: the router drops it, it forwards nothing more, a client loop sees 0 failures;
//!   announced again, it forwards again.
//! - `sigterm_withdraws_drains_and_exits`: withdraw, 1 s of drain, SIGTERM: the daemon exits 0,
//!   a client loop sees 0 failures.
//!
//! The VIP routes in the directors' table 100 are added and deleted by the harness
//! (`ScaleOut::announce`), exactly as `lb-ctl run` keeps them with an `announce:` block.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use lb_tests::{
    bird::Detection,
    lab::{self, HttpConn, LabSpec, client_addr, http_get_from},
    lab_spec,
    scaleout::ScaleOut,
    stats,
};

const VIP: Ipv4Addr = lab::DEFAULT_VIP;
const CLIENTS: usize = 64;
/// BFD's detection time in the examples: 3 x 100 ms; the test allows scheduling slack.
const BFD_DETECTION: Duration = Duration::from_millis(300);
const DETECTION_BOUND: Duration = Duration::from_millis(1500);
/// Deadline of one request.
const REQUEST: Duration = Duration::from_secs(5);

fn spec() -> LabSpec {
    let base = LabSpec::ecmp_lab();
    lab_spec!(
        directors: base.directors,
        servers: base.servers,
        routed: base.routed,
        ecmp: base.ecmp,
    )
}

/// The lab with every director's daemon running and announcing, the router's route complete.
fn scale_out() -> ScaleOut {
    let started = Instant::now();
    let mut so = ScaleOut::build(&spec(), Detection::Bfd).unwrap_or_else(|e| panic!("{e:#}"));
    let yaml = so.service_yaml();
    for i in 0..3 {
        so.start_daemon(i, &yaml, &["--detach-on-exit"])
            .unwrap_or_else(|e| panic!("{e:#}"));
        so.announce(i, true).unwrap_or_else(|e| panic!("{e:#}"));
    }
    let sessions = so
        .wait_sessions(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let all: Vec<Ipv4Addr> = so.lab.directors().iter().map(|d| d.addr).collect();
    so.wait_next_hops(&all, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "lab, speakers and daemons up in {:.1?} (router-1's 3 sessions Established {:.1?} \
         after the daemons were running); router-1's route:\n{}",
        started.elapsed(),
        sessions,
        so.route_text().unwrap_or_default()
    );
    so
}

fn target() -> SocketAddr {
    SocketAddr::new(VIP.into(), 80)
}

#[test]
fn three_directors_share_new_connections() {
    let so = scale_out();
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
    let mut so = scale_out();
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

/// Requests from the client addresses in turn, one after another, until `stop` is set;
/// returns (answered, failures).
fn client_loop(
    so: &ScaleOut,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    let clients = so.lab.ecmp_clients().clone();
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, Vec::new());
        let mut c = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let src: IpAddr = client_addr(c % CLIENTS).into();
            match http_get_from(&clients, src, target(), "/", REQUEST) {
                Ok((200, _)) => ok += 1,
                other => failed.push(format!("{src}: {other:?}")),
            }
            c += 1;
        }
        (ok, failed)
    })
}

/// Runs `steps` while a client loop makes requests; returns (answered, failures).
fn with_client_loop(so: &mut ScaleOut, steps: impl FnOnce(&mut ScaleOut)) -> (usize, Vec<String>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handle = client_loop(so, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    steps(so);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    handle
        .join()
        .unwrap_or_else(|_| panic!("the client loop panicked"))
}

#[test]
fn a_withdrawn_director_gets_no_new_connections_and_comes_back() {
    let mut so = scale_out();
    let all: Vec<Ipv4Addr> = so.lab.directors().iter().map(|d| d.addr).collect();
    let (ok, failed) = with_client_loop(&mut so, |so| {
        so.announce(2, false).unwrap_or_else(|e| panic!("{e:#}"));
        let withdrawn = so
            .wait_next_hops(&all[..2], Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let quiet_from = so.forwarded(2).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        let while_out = so.forwarded(2).unwrap() - quiet_from;
        so.announce(2, true).unwrap_or_else(|e| panic!("{e:#}"));
        let back = so
            .wait_next_hops(&all, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let from = so.forwarded(2).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        let after = so.forwarded(2).unwrap() - from;
        eprintln!(
            "director-3 withdrawn: router-1 dropped it in {withdrawn:.2?}, it forwarded \
             {while_out} packets in the next second; announced again: back in {back:.2?}, \
             {after} packets in the next second"
        );
        assert_eq!(while_out, 0, "director-3 got traffic while withdrawn");
        assert!(
            after > 0,
            "director-3 got no traffic after it announced again"
        );
    });
    eprintln!("client loop: {ok} answered, {} failed", failed.len());
    assert!(failed.is_empty(), "failed requests: {failed:#?}");
    assert!(ok > 50, "only {ok} requests in the loop");
}

#[test]
fn sigterm_withdraws_drains_and_exits() {
    let mut so = scale_out();
    let all: Vec<Ipv4Addr> = so.lab.directors().iter().map(|d| d.addr).collect();
    let (ok, failed) = with_client_loop(&mut so, |so| {
        // What `lb-ctl run` does on SIGTERM with `announce: { drain: 1s }`: withdraw at
        // once, keep forwarding for the drain, exit.
        let t0 = Instant::now();
        so.announce(1, false).unwrap_or_else(|e| panic!("{e:#}"));
        let withdrawn = so
            .wait_next_hops(&[all[0], all[2]], Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e:#}"));
        std::thread::sleep(Duration::from_secs(1).saturating_sub(t0.elapsed()));
        let d = so.daemons[1]
            .as_mut()
            .unwrap_or_else(|| panic!("no daemon on director-2"));
        let status = d.terminate();
        eprintln!(
            "director-2 withdrawn in {withdrawn:.2?}, drained, exited {status} {:.2?} after \
             the withdrawal began",
            t0.elapsed()
        );
    });
    eprintln!("client loop: {ok} answered, {} failed", failed.len());
    assert!(failed.is_empty(), "failed requests: {failed:#?}");
    assert!(ok > 50, "only {ok} requests in the loop");
}
