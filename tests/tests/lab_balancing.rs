//! End to end: the real `lb-ctl` binary (`cargo build -p lb-ctl` first) drives a director of
//! the namespace lab (`lb_tests::lab`, seed topology: VIP .133 on director-1 .134, real servers
//! .135 and .136, client .100; see `docs/lab.md` for the rules kept here), attached in
//! native mode, and a client makes real requests through it.
//!
//! Every test builds its own lab and its own `lb_tests::lbctl::LbCtl` (pin directory
//! `/sys/fs/bpf/<lab prefix>`); dropping them, also while a failed test unwinds, detaches,
//! removes the pins and deletes the namespaces. A test that gets to its end checks that
//! `lb-ctl detach eth0` removes the pins and that nothing of its lab is left
//! ([`finish`]). All traffic is a bounded number of requests, each with a deadline.
//! Without root, BPF or namespaces the tests fail saying what is missing.

use std::{
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    env::Env,
    lab::{self, Connect, Host, HttpConn, Proc, http_get, tcp_connect, udp_request},
    lab_spec,
    stats::{backend, datapath, num, service},
};
use serde_json::Value;

/// Deadline of one request.
const T: Duration = Duration::from_secs(2);
const VIP: Ipv4Addr = lab::DEFAULT_VIP;
const DIP: Ipv4Addr = Ipv4Addr::new(192, 168, 58, 134);
const CLIENT: Ipv4Addr = lab::CLIENT_ADDR;

// ---------------------------------------------------------------------------------------------
// Service files

/// One service on the VIP with `backends` (address, weight) in this order.
fn service_yaml(
    name: &str,
    port: u16,
    protocol: &str,
    scheduler: &str,
    backends: &[(Ipv4Addr, u32)],
) -> String {
    let mut y = format!(
        "services:\n  - name: {name}\n    vip: {VIP}\n    port: {port}\n    protocol: {protocol}\n    \
         scheduler: {scheduler}\n"
    );
    if backends.is_empty() {
        y.push_str("    backends: []\n");
    } else {
        y.push_str("    backends:\n");
        for (addr, weight) in backends {
            y.push_str(&format!(
                "      - address: {addr}\n        weight: {weight}\n"
            ));
        }
    }
    y
}

/// `web`: TCP port 80, round robin.
fn web(backends: &[(Ipv4Addr, u32)]) -> String {
    service_yaml("web", 80, "tcp", "rr", backends)
}

// ---------------------------------------------------------------------------------------------
// The lab with an attached director

/// The seed lab with `lb-ctl` attached to director-1's `eth0` (native mode) and `yaml` applied.
fn attached(yaml: &str) -> Env {
    let env = Env::attached(&lab_spec!(), &[]);
    env.apply(yaml);
    env
}

/// The stats once the data path has gone quiet: the forwarded counter has not moved for
/// 300 ms (the last ACKs and FINs of closed connections are through). At most 3 s.
fn settled_stats(env: &Env) -> Value {
    env.settled_stats("forwarded", Duration::from_secs(3))
}

/// The normal end of a test: `lb-ctl detach eth0` removes the pins, and dropping the lab
/// leaves no namespace behind.
fn finish(env: Env) {
    let Env { daemon, ctl, lab } = env;
    drop(daemon);
    let pin_dir = ctl.pin_dir().to_owned();
    assert!(
        pin_dir.is_dir(),
        "{} missing while attached",
        pin_dir.display()
    );
    let out = ctl
        .detach("eth0")
        .unwrap_or_else(|e| panic!("lb-ctl detach eth0 failed: {e:#}"));
    assert!(out.contains("removed the pins"), "detach said: {out}");
    assert!(
        !pin_dir.exists(),
        "{} is still there after the last detach",
        pin_dir.display()
    );
    let link = lab
        .director(0)
        .exec_ok(&["ip", "link", "show", "eth0"])
        .unwrap();
    assert!(
        !link.contains("xdp"),
        "XDP still attached after detach: {link}"
    );
    drop(ctl);
    lab.close().unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!pin_dir.exists(), "{} came back", pin_dir.display());
}

/// Packet and byte counters of a host's `eth0` (`ip -s -j link show eth0` inside it).
#[derive(Clone, Copy, Debug)]
struct IfStats {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
}

impl IfStats {
    fn of(host: &Host) -> IfStats {
        let out = host
            .exec_ok(&["ip", "-s", "-j", "link", "show", "eth0"])
            .unwrap_or_else(|e| panic!("ip -s link in {}: {e:#}", host.name));
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let s = &v[0]["stats64"];
        IfStats {
            rx_packets: num(&s["rx"], "packets"),
            rx_bytes: num(&s["rx"], "bytes"),
            tx_packets: num(&s["tx"], "packets"),
            tx_bytes: num(&s["tx"], "bytes"),
        }
    }

    fn since(self, before: IfStats) -> IfStats {
        IfStats {
            rx_packets: self.rx_packets - before.rx_packets,
            rx_bytes: self.rx_bytes - before.rx_bytes,
            tx_packets: self.tx_packets - before.tx_packets,
            tx_bytes: self.tx_bytes - before.tx_bytes,
        }
    }
}

fn get(env: &Env, path: &str) -> String {
    let (status, body) = http_get(env.client(), VIP, 80, path, T)
        .unwrap_or_else(|e| panic!("GET {path} via the VIP: {e:#}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// `real-server-N\n` -> the index N-1.
fn server_index(env: &Env, body: &str) -> usize {
    env.lab
        .servers()
        .iter()
        .position(|s| body == format!("{}\n", s.name))
        .unwrap_or_else(|| panic!("the reply {body:?} does not name a real server"))
}

// ---------------------------------------------------------------------------------------------
// Tests

/// 100 requests, a new connection each, under `rr` over two servers: all succeed, each server
/// serves 50 ± 1, every body names a server, and the server's socket is the VIP's.
#[test]
fn round_robin_splits_new_connections_evenly() {
    let env = attached(&web(&[(env_rs(0), 1), (env_rs(1), 1)]));
    let mut by_server = [0u64; 2];
    for _ in 0..100 {
        let body = get(&env, "/");
        by_server[server_index(&env, &body)] += 1;
    }
    let counts = [env.count(env.server(0)), env.count(env.server(1))];
    eprintln!("rr split of 100: bodies {by_server:?}, servers' counts {counts:?}");
    assert_eq!(
        counts, by_server,
        "the servers' counts and the reply bodies disagree"
    );
    for (i, c) in counts.iter().enumerate() {
        assert!(
            (49..=51).contains(c),
            "real-server-{} served {c} of 100 under rr",
            i + 1
        );
    }
    // The server answered on a socket whose local address is the VIP (DR: the VIP is on its
    // lo), and the client's connection to the VIP accepted the reply.
    let who = get(&env, "/whoami");
    assert!(
        who.starts_with("real-server-") && who.contains(&format!(" local={VIP}:80 peer={CLIENT}:")),
        "/whoami through the VIP: {who}"
    );
    finish(env);
}

/// The director sees only client -> server packets: its interface receives what the service
/// counters count (plus a little ARP), the client sent the same, and the servers' replies,
/// though plentiful, never reach it.
#[test]
fn replies_bypass_the_director() {
    const N: u64 = 50;
    /// ARP and the like: anything not counted by the service.
    const SLACK: u64 = 10;
    let env = attached(&web(&[(env_rs(0), 1), (env_rs(1), 1)]));
    let director = env.lab.director(0);
    // Warm up: the client learns the VIP's MAC, the servers the client's.
    for _ in 0..2 {
        get(&env, "/");
    }
    let s0 = settled_stats(&env);
    let d0 = IfStats::of(director);
    let c0 = IfStats::of(env.client());
    let r0: Vec<IfStats> = env.lab.servers().iter().map(IfStats::of).collect();

    for _ in 0..N {
        get(&env, "/");
    }
    let s1 = settled_stats(&env);
    let d = IfStats::of(director).since(d0);
    let c = IfStats::of(env.client()).since(c0);
    let r = env
        .lab
        .servers()
        .iter()
        .zip(r0)
        .fold((0, 0), |(p, b), (s, before)| {
            let d = IfStats::of(s).since(before);
            (p + d.tx_packets, b + d.tx_bytes)
        });
    let fwd = num(service(&s1, "web"), "packets") - num(service(&s0, "web"), "packets");
    let fwd_ip_bytes = num(service(&s1, "web"), "bytes") - num(service(&s0, "web"), "bytes");
    let fwd_frame_bytes = fwd_ip_bytes + 14 * fwd;
    let dp_fwd = datapath(&s1, "forwarded") - datapath(&s0, "forwarded");
    eprintln!(
        "{N} requests: service counted {fwd} packets ({fwd_ip_bytes} IP bytes), data path \
         forwarded {dp_fwd}; client sent {} packets ({} bytes); director received {} packets \
         ({} bytes); servers sent {} packets ({} bytes)",
        c.tx_packets, c.tx_bytes, d.rx_packets, d.rx_bytes, r.0, r.1
    );
    assert_eq!(fwd, dp_fwd, "service and data-path counters disagree");
    // Each connection: SYN, ACK, request, FIN, last ACK at least.
    assert!(
        fwd >= 4 * N,
        "only {fwd} packets forwarded for {N} connections"
    );
    // The service counted what the client sent (client -> server only).
    assert!(
        c.tx_packets >= fwd && c.tx_packets - fwd <= SLACK,
        "the client sent {} packets, the service counted {fwd}",
        c.tx_packets
    );
    // The servers did answer, a lot: SYN-ACK, the response, FIN per connection at least.
    assert!(r.0 >= 3 * N, "the servers sent only {} packets", r.0);
    // The director received what it forwarded and hardly anything else. Had the replies
    // passed through it (a proxy, or NAT), it would have received >= fwd + r.0.
    assert!(
        d.rx_packets >= fwd,
        "the director received {} packets but forwarded {fwd}",
        d.rx_packets
    );
    assert!(
        d.rx_packets - fwd <= SLACK,
        "the director received {} packets beyond the {fwd} it forwarded; the servers sent {}: \
         replies went through the director",
        d.rx_packets - fwd,
        r.0
    );
    // Bytes too (a veth with native XDP counts them without the Ethernet header, other
    // drivers with it: between the two). The servers' replies would add r.1 bytes.
    assert!(
        d.rx_bytes >= fwd_ip_bytes && d.rx_bytes <= fwd_frame_bytes + SLACK * 64,
        "the director received {} bytes; the forwarded packets were {fwd_ip_bytes} IP bytes, \
         {fwd_frame_bytes} as frames; the servers sent {}",
        d.rx_bytes,
        r.1
    );
    finish(env);
}

/// The director's own traffic passes to its kernel while the program is attached: ping, a
/// TCP service on its own address, a VIP port that is no service, its own outgoing pings.
#[test]
fn directors_own_traffic_still_works() {
    let env = attached(&web(&[(env_rs(0), 1), (env_rs(1), 1)]));
    let director = env.lab.director(0);
    let client = env.client();
    let ping_ok = std::process::Command::new("ping")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ping_ok,
        "`ping` (iputils-ping) is missing: run `cargo xtask setup`, which installs it"
    );
    let before = env.stats();

    let dip = DIP.to_string();
    let out = client
        .exec(&[
            "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-w", "5", &dip,
        ])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("3 received"),
        "ping from the client to the director: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rs1 = env.server(0).addr.to_string();
    let out = director
        .exec(&[
            "ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", "-w", "5", &rs1,
        ])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("2 received"),
        "ping from the director to real-server-1 (replies come in through XDP): {text}"
    );

    // A TCP server of the director's own, on every address, port 8080.
    let _server = spawn_ready(
        director,
        &[
            env!("CARGO_BIN_EXE_lab-server"),
            "http",
            "--name",
            "director",
            "--port",
            "8080",
        ],
    );
    let (status, who) = http_get(client, DIP, 8080, "/whoami", T)
        .unwrap_or_else(|e| panic!("GET the director's own address: {e:#}"));
    assert_eq!(status, 200);
    assert!(
        who.starts_with(&format!("director local={DIP}:8080 peer={CLIENT}:")),
        "{who}"
    );
    // A port of the VIP that is no service belongs to the director's kernel too.
    let (_, body) = http_get(client, VIP, 8080, "/", T)
        .unwrap_or_else(|e| panic!("GET VIP:8080 (not a service): {e:#}"));
    assert_eq!(body, "director\n");
    assert_eq!(
        tcp_connect(client, VIP, 22, T).unwrap(),
        Connect::Refused,
        "VIP:22 (no service, no listener) should be refused by the director's kernel"
    );

    let after = env.stats();
    assert_eq!(
        datapath(&after, "forwarded"),
        datapath(&before, "forwarded"),
        "the director's own traffic was forwarded"
    );
    assert_eq!(
        num(service(&after, "web"), "packets"),
        num(service(&before, "web"), "packets")
    );
    let passed = |s: &Value| {
        ["pass_not_ip", "pass_not_tcp_udp", "pass_not_vip"]
            .iter()
            .map(|r| datapath(s, r))
            .sum::<u64>()
    };
    assert!(
        passed(&after) > passed(&before),
        "the pass counters did not move: {after:#}"
    );
    // And the service itself still forwards.
    let body = get(&env, "/");
    server_index(&env, &body);
    assert!(datapath(&env.stats(), "forwarded") > datapath(&after, "forwarded"));
    finish(env);
}

/// Weight 0 drains: a keep-alive connection on the drained server keeps working there, new
/// connections all go to the other server.
#[test]
fn weight_zero_drains_without_breaking_existing_connections() {
    let (rs1, rs2) = (env_rs(0), env_rs(1));
    let env = attached(&web(&[(rs1, 1), (rs2, 1)]));
    let mut conn = HttpConn::connect(env.client(), VIP, 80, T)
        .unwrap_or_else(|e| panic!("connecting to the VIP: {e:#}"));
    let (status, first) = conn.get("/").unwrap();
    assert_eq!(status, 200);
    let s = server_index(&env, &first);
    let o = 1 - s;
    let (drained, other) = (env.server(s), env.server(o));
    let count_before = env.count(drained);

    let mut weights = [(rs1, 1), (rs2, 1)];
    weights[s].1 = 0;
    let out = env.apply(&web(&weights));
    eprintln!("apply (drain {}):\n{out}", drained.name);
    let list = env.ctl.list().unwrap();
    let line = list
        .lines()
        .find(|l| l.contains(&format!("{}:80", drained.addr)))
        .unwrap_or_else(|| panic!("{} not in the list:\n{list}", drained.addr));
    assert!(line.contains("draining"), "list:\n{list}");

    for i in 0..5 {
        let (status, body) = conn
            .get("/")
            .unwrap_or_else(|e| panic!("request {i} on the kept connection: {e:#}"));
        assert_eq!(
            (status, body.as_str()),
            (200, first.as_str()),
            "request {i}"
        );
    }
    let (_, who) = conn.get("/whoami").unwrap();
    assert!(
        who.starts_with(&format!("{} local={VIP}:80 peer={CLIENT}:", drained.name)),
        "{who}"
    );
    for i in 0..20 {
        let body = get(&env, "/");
        assert_eq!(
            body,
            format!("{}\n", other.name),
            "new connection {i} after draining {}",
            drained.name
        );
    }
    assert_eq!(
        env.count(drained),
        count_before + 6,
        "the drained server got requests besides the kept connection's"
    );
    drop(conn);
    let stats = settled_stats(&env);
    let web = service(&stats, "web");
    assert_eq!(num(backend(web, drained.addr), "weight"), 0);
    assert_eq!(num(backend(web, drained.addr), "connections"), 1);
    assert_eq!(num(backend(web, other.addr), "connections"), 20);
    finish(env);
}

/// One request of the background client.
#[derive(Debug)]
struct Sample {
    start: Instant,
    end: Instant,
    /// The body (`real-server-N\n`) or the error.
    result: Result<String, String>,
}

/// Sets the flag when dropped (stops the background client, also when the test panics).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A backend removed and re-added with `apply` while a client makes requests back to back
/// (a 5 ms pause between them; at most 300 requests or 20 s): no request fails, the removed
/// server gets no new request, and gets them again once it is back.
///
/// The one exception allowed is what removing a backend means (README: "removing a backend
/// does [move an existing flow]", as IPVS breaks a deleted real server's connections): a
/// request to real-server-2 caught mid-connection by the removal has its next packets sent to
/// real-server-1, which knows no such connection and resets it. So at most one failure, only
/// a connection reset, and only of a request in flight while the removal was applied.
#[test]
fn removing_and_adding_a_backend_under_load() {
    let (rs1, rs2) = (env_rs(0), env_rs(1));
    let env = attached(&web(&[(rs1, 1), (rs2, 1)]));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    let loop_thread = {
        let (samples, stop) = (samples.clone(), stop.clone());
        let client = env.client().clone();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            for _ in 0..300 {
                if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                    break;
                }
                let start = Instant::now();
                let result = match http_get(&client, VIP, 80, "/", T) {
                    Ok((200, body)) => Ok(body),
                    Ok((status, body)) => Err(format!("status {status}: {body}")),
                    Err(e) => Err(format!("{e:#}")),
                };
                let end = Instant::now();
                samples.lock().unwrap().push(Sample { start, end, result });
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let done = || samples.lock().unwrap().len();
    let wait_for = |n: usize| {
        assert!(
            lab::wait_until(Duration::from_secs(10), || done() >= n),
            "the background client made only {} requests of {n}",
            done()
        );
    };

    wait_for(20);
    let t_remove = Instant::now();
    env.apply(&web(&[(rs1, 1)]));
    let t_removed = Instant::now();
    let count_removed = env.count(env.server(1));
    wait_for(done() + 50);
    let count_before_add = env.count(env.server(1));
    let t_add = Instant::now();
    env.apply(&web(&[(rs1, 1), (rs2, 1)]));
    let t_added = Instant::now();
    wait_for(done() + 40);
    stop.store(true, Ordering::SeqCst);
    loop_thread.join().expect("the background client panicked");
    let samples = std::mem::take(&mut *samples.lock().unwrap());

    let tally = |pick: &dyn Fn(&Sample) -> bool| {
        let mut t = [0usize; 2];
        for s in samples.iter().filter(|s| pick(s)) {
            if let Ok(body) = &s.result {
                t[server_index(&env, body)] += 1;
            }
        }
        t
    };
    let before = tally(&|s| s.end <= t_remove);
    let removed = tally(&|s| s.start >= t_removed && s.end <= t_add);
    let after = tally(&|s| s.start >= t_added);
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.result.is_err()).collect();
    eprintln!(
        "{} requests; [rs1, rs2] before removal {before:?}, while removed {removed:?}, after \
         re-adding {after:?}; real-server-2 count {count_removed} after removal, \
         {count_before_add} before re-adding; applies took {:?} and {:?}; {} failed",
        samples.len(),
        t_removed - t_remove,
        t_added - t_add,
        failed.len()
    );
    for f in &failed {
        eprintln!(
            "failed request: from {:?} to {:?} after the removal began (which took {:?}): {:?}",
            f.start.saturating_duration_since(t_remove),
            f.end.saturating_duration_since(t_remove),
            t_removed - t_remove,
            f.result
        );
    }
    let excused = |s: &&Sample| {
        s.start < t_removed
            && s.end > t_remove
            && s.result
                .as_ref()
                .is_err_and(|e| e.contains("Connection reset"))
    };
    assert!(
        failed.len() <= 1 && failed.iter().all(excused),
        "{} request(s) failed (only a reset of one request in flight during the removal is \
         allowed)",
        failed.len()
    );
    assert!(before[0] > 0 && before[1] > 0, "before removal: {before:?}");
    assert!(
        removed[0] >= 30,
        "too few requests while removed: {removed:?}"
    );
    assert_eq!(removed[1], 0, "real-server-2 answered while removed");
    // At most the one request in flight when the removal finished.
    assert!(
        count_before_add - count_removed <= 1,
        "real-server-2 served {} requests while removed",
        count_before_add - count_removed
    );
    assert!(
        after[1] >= 10 && after[0] >= 10,
        "after re-adding, [rs1, rs2] = {after:?}"
    );
    assert!(env.count(env.server(1)) > count_before_add);
    // No packet met a half-written service (README: apply never shows one).
    let stats = env.stats();
    for reason in ["drop_no_backend", "drop_bad_backend"] {
        assert_eq!(datapath(&stats, reason), 0, "{reason}");
    }
    finish(env);
}

/// A UDP service: each datagram to the VIP is answered by a server, with the payload, from
/// the VIP (the client's socket is connected to VIP:5353, so it takes no other source);
/// new flows alternate between the servers.
#[test]
fn udp_service_is_balanced() {
    let env = attached(&service_yaml(
        "dns",
        5353,
        "udp",
        "rr",
        &[(env_rs(0), 1), (env_rs(1), 1)],
    ));
    let mut by_server = [0u64; 2];
    for i in 0..10 {
        let payload = format!("hello-{i}");
        let reply = udp_request(env.client(), VIP, 5353, payload.as_bytes(), T)
            .unwrap_or_else(|e| panic!("UDP request {i} to the VIP: {e:#}"));
        let reply = String::from_utf8(reply).expect("UTF-8 reply");
        let (server, echoed) = reply
            .split_once(' ')
            .unwrap_or_else(|| panic!("reply {reply:?}"));
        assert_eq!(echoed, payload);
        by_server[server_index(&env, &format!("{server}\n"))] += 1;
    }
    eprintln!("UDP rr split of 10: {by_server:?}");
    // 5 each; a reused client port (a known flow) could make it 6:4.
    for (i, n) in by_server.iter().enumerate() {
        assert!(
            (4..=6).contains(n),
            "real-server-{} answered {n} of 10",
            i + 1
        );
    }
    let stats = env.stats();
    let dns = service(&stats, "dns");
    assert_eq!(dns["protocol"], "udp");
    assert_eq!(num(dns, "packets"), 10);
    finish(env);
}

/// `stats --json` agrees with the servers: N new connections are N connections of the
/// service, and each backend's connections are what that server served.
#[test]
fn stats_agree_with_the_servers() {
    const N: u64 = 30;
    let env = attached(&web(&[(env_rs(0), 1), (env_rs(1), 1)]));
    for s in env.lab.servers() {
        env.lab.reset_count(s).unwrap();
    }
    for _ in 0..N {
        get(&env, "/");
    }
    let stats = settled_stats(&env);
    let web = service(&stats, "web");
    let counts: Vec<u64> = env.lab.servers().iter().map(|s| env.count(s)).collect();
    let conns: Vec<u64> = env
        .lab
        .servers()
        .iter()
        .map(|s| num(backend(web, s.addr), "connections"))
        .collect();
    let packets: Vec<u64> = env
        .lab
        .servers()
        .iter()
        .map(|s| num(backend(web, s.addr), "packets"))
        .collect();
    eprintln!(
        "{N} requests: service connections {}, packets {}; backends' connections {conns:?}, \
         packets {packets:?}; servers' counts {counts:?}",
        num(web, "connections"),
        num(web, "packets")
    );
    assert_eq!(num(web, "connections"), N);
    assert_eq!(conns, counts, "backend connections vs the servers' counts");
    assert_eq!(counts.iter().sum::<u64>(), N);
    assert_eq!(packets.iter().sum::<u64>(), num(web, "packets"));
    assert_eq!(num(web, "packets"), datapath(&stats, "forwarded"));
    finish(env);
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Real server `i`'s address (counted from 0), as the lab assigns it.
fn env_rs(i: usize) -> Ipv4Addr {
    lab::server_addr(i + 1)
}

/// Starts `args` inside `host` and waits (at most 10 s) for its `ready` line on stdout
/// (`lab-server` prints one once listening). Killed when the guard is dropped.
fn spawn_ready(host: &Host, args: &[&str]) -> Proc {
    let mut cmd = host.command(args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let what = format!("{args:?} in {}", host.name);
    let mut proc = Proc::spawn(cmd, what.clone()).unwrap_or_else(|e| panic!("{e:#}"));
    host.wait_entered(&mut proc)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let stdout = proc.child_mut().stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) if line.starts_with("ready") => proc,
        Ok(line) => panic!("{what} said {line:?} instead of ready"),
        Err(_) => panic!("{what} was not ready after 10 s"),
    }
}
