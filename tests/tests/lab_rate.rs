//! `lb-ctl list --rate` and `list --stats` (ipvsadm's `-L -n --rate` and `--stats`) against
//! what a client counts: a client loop opens new TCP connections to the VIP at a steady pace
//! through a native-mode director; `list --rate` taken meanwhile shows the service's CPS
//! within 10% of the client's own connections per second over the same time, and `list
//! --stats` afterwards shows exactly the connections the client made. Root, BPF and
//! namespaces are needed; without them the test fails saying what is missing.

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    env::Env,
    lab::{self, Connect, tcp_connect},
    lab_spec,
};

const VIP: Ipv4Addr = lab::DEFAULT_VIP;
/// New connections a second the client makes, and for how long.
const PACE: u32 = 40;
const LOOP: Duration = Duration::from_secs(5);

/// The five numbers of the row that starts with `first` (`TCP  192.168.58.133:80`,
/// `  -> 192.168.58.135:80`).
fn row(listing: &str, first: &str) -> [u64; 5] {
    let line = listing
        .lines()
        .find(|l| l.starts_with(first) && l[first.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no row `{first}` in:\n{listing}"));
    let n: Vec<u64> = line[first.len()..]
        .split_whitespace()
        .map(|w| w.parse().unwrap_or_else(|e| panic!("`{w}`: {e} in {line}")))
        .collect();
    n.try_into()
        .unwrap_or_else(|n| panic!("not five numbers: {n:?} in {line}"))
}

#[test]
fn rate_and_stats_match_what_the_client_counts() {
    let env = Env::attached(&lab_spec!(), &[]);
    let servers: Vec<Ipv4Addr> = env.lab.servers().iter().map(|s| s.addr).collect();
    env.apply(&format!(
        "services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    protocol: tcp\n    \
         scheduler: rr\n    backends:\n      - address: {}\n      - address: {}\n",
        servers[0], servers[1]
    ));

    // The client: one new connection (handshake, then closed) every 1/PACE s, each
    // completion time noted.
    let done: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let start = Instant::now();
    let client = {
        let done = done.clone();
        let host = env.client().clone();
        thread::spawn(move || {
            let mut failed = Vec::new();
            let n = PACE * LOOP.as_secs() as u32;
            for k in 0..n {
                let due = start + Duration::from_secs(1) * k / PACE;
                thread::sleep(due.saturating_duration_since(Instant::now()));
                match tcp_connect(&host, VIP, 80, Duration::from_secs(2)) {
                    Ok(Connect::Established) => done.lock().expect("lock").push(Instant::now()),
                    other => failed.push(format!("connection {k}: {other:?}")),
                }
            }
            failed
        })
    };

    // Well inside the loop: a rate over 2 s.
    thread::sleep(Duration::from_millis(1200));
    let before = Instant::now();
    let rate = env
        .ctl
        .run_ok(&["list", "--rate", "--interval", "2s"])
        .expect("lb-ctl list --rate");
    let after = Instant::now();
    let failed = client.join().expect("the client thread");
    assert!(failed.is_empty(), "failed connections: {failed:?}");
    let done = done.lock().expect("lock").clone();

    // The client's own rate over the time the command ran (it reads the counters twice,
    // 2 s apart, inside that time; the pace is steady, so the slack does not matter).
    let window = after - before;
    let in_window = done
        .iter()
        .filter(|t| **t >= before && **t <= after)
        .count();
    let client_cps = in_window as f64 / window.as_secs_f64();
    assert!(
        rate.contains(
            "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS"
        ),
        "{rate}"
    );
    let [cps, inpps, outpps, inbps, outbps] = row(&rate, &format!("TCP  {VIP}:80"));
    eprintln!(
        "list --rate: CPS {cps}, InPPS {inpps}, InBPS {inbps}; the client: {client_cps:.1} \
         connections/s ({in_window} in {window:?}); paced at {PACE}/s\n{rate}"
    );
    let off = (cps as f64 - client_cps).abs() / client_cps;
    assert!(
        off <= 0.10,
        "CPS {cps} is {:.1}% off the client's {client_cps:.1}/s",
        off * 100.0
    );
    // A connection is a SYN, an ACK, a FIN and its ACK from the client at least.
    assert!(inpps >= 3 * cps && inbps >= 40 * inpps, "{rate}");
    assert_eq!(
        (outpps, outbps),
        (0, 0),
        "direct routing sees no replies: {rate}"
    );
    let backend_cps: u64 = servers
        .iter()
        .map(|s| row(&rate, &format!("  -> {s}:80"))[0])
        .sum();
    assert!(backend_cps.abs_diff(cps) <= 1, "{rate}");

    // --stats: every connection the client made, counted once; split by rr.
    let stats = env
        .ctl
        .run_ok(&["list", "--stats"])
        .expect("lb-ctl list --stats");
    eprintln!("{stats}");
    assert!(
        stats.contains("Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\n"),
        "{stats}"
    );
    let [conns, inpkts, outpkts, inbytes, outbytes] = row(&stats, &format!("TCP  {VIP}:80"));
    assert_eq!(conns, done.len() as u64, "{stats}");
    assert!(inpkts >= 3 * conns && inbytes >= 40 * inpkts, "{stats}");
    assert_eq!((outpkts, outbytes), (0, 0), "{stats}");
    let per_backend: Vec<u64> = servers
        .iter()
        .map(|s| row(&stats, &format!("  -> {s}:80"))[0])
        .collect();
    assert_eq!(per_backend.iter().sum::<u64>(), conns, "{stats}");
    assert!(per_backend[0].abs_diff(per_backend[1]) <= 1, "rr: {stats}");
    eprintln!(
        "the client made {} connections; list --stats Conns {conns} ({per_backend:?})",
        done.len()
    );
}
