//! End to end: `announce:` with `lb-ctl run` on director-1 of the namespace lab. The VIP's route
//! (`VIP/32 dev lo proto 250` in table 100, what a local BGP speaker exports) follows the
//! service's health, a reload, a hand edit and a stop with a drain. No speaker runs here: the
//! route in the director's namespace is what is observed. Each request and wait has a deadline;
//! the daemon, the HTTP server, the pins and the namespaces go at the end, also on failure.

use std::{
    fs,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use lb_tests::{
    env::Env,
    lab::{self, LabSpec, Proc},
};

const VIP: Ipv4Addr = lab::DEFAULT_VIP;

/// Every 200 ms, 2 failures in a row (100 ms apart) -> down.
const CHECK: &str = "    check:\n      type: http_get\n      path: /\n      interval: 200ms\n      \
                     timeout: 300ms\n      retries: 2\n      retry_delay: 100ms\n      rise: 1\n";

/// The longest a failure may take to be seen with [`CHECK`] (interval, retries, slack).
const DETECT: Duration = Duration::from_millis(200 + 2 * (100 + 300) + 1500);

fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lab-server"))
}

/// `web` on the VIP, port 80, over `backend`, with `announce` lines (or none).
fn web(backend: Ipv4Addr, announce: &str) -> String {
    format!(
        "{announce}services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    scheduler: mh\n\
         {CHECK}    backends:\n      - address: {backend}\n"
    )
}

const ANNOUNCE: &str = "announce:\n  via: bird\n  table: 100\n  drain: 2s\n";

/// The project's routes in table 100 of director-1 (`ip route show table 100 proto 250`).
fn routes(env: &Env) -> String {
    env.lab
        .director(0)
        .exec_ok(&["ip", "route", "show", "table", "100", "proto", "250"])
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn announced(env: &Env) -> bool {
    routes(env).contains(&format!("{VIP} dev lo"))
}

/// Waits (at most `limit`) until the route is `present`; how long it took.
fn wait_route(env: &Env, present: bool, limit: Duration, what: &str) -> Duration {
    let start = Instant::now();
    while announced(env) != present {
        assert!(
            start.elapsed() < limit,
            "{what}: the route was not {} within {limit:?}; table 100: {:?}; the log:\n{}",
            if present { "added" } else { "deleted" },
            routes(env),
            env.daemon().lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// The announce line of `lb-ctl list`.
fn list_state(env: &Env) -> String {
    let list = env.list();
    list.lines()
        .find(|l| l.starts_with("Announce web "))
        .unwrap_or_else(|| panic!("no announce line in:\n{list}"))
        .to_string()
}

fn start_http(env: &Env) -> Proc {
    let server = env.server(0).clone();
    let bin = server_bin();
    let bin = bin.to_str().unwrap_or_else(|| panic!("lab-server path"));
    let proc = server
        .spawn(&[bin, "http", "--name", &server.name, "--port", "80"])
        .unwrap_or_else(|e| panic!("starting HTTP on {}: {e:#}", server.name));
    assert!(
        lab::wait_until(Duration::from_secs(5), || env
            .lab
            .request_count(&server)
            .is_ok()),
        "the HTTP server of {} did not come up",
        server.name
    );
    proc
}

#[test]
fn the_route_follows_health_reloads_hand_edits_and_a_draining_stop() {
    let mut env = Env::attached(
        &LabSpec {
            servers: 1,
            start_servers: false,
            server_bin: Some(server_bin()),
            ..LabSpec::default()
        },
        &[],
    );
    let mut http = Some(start_http(&env));
    let rs1 = env.server(0).addr;
    let d = env.lab.director(0).clone();
    // A leftover of a crashed run: a route of protocol 250 that the config does not announce.
    d.exec_ok(&[
        "ip",
        "route",
        "add",
        "10.9.9.9/32",
        "dev",
        "lo",
        "table",
        "100",
        "proto",
        "250",
    ])
    .unwrap_or_else(|e| panic!("{e:#}"));

    let file = env.file(&web(rs1, ANNOUNCE));
    env.start_daemon(&file, &["--reconcile-interval", "500ms"]);
    let took = wait_route(&env, true, Duration::from_secs(3), "start");
    eprintln!("announced {took:?} after the daemon's `running` line");
    let r = routes(&env);
    assert!(!r.contains("10.9.9.9"), "the leftover stays: {r}");
    assert!(r.contains(&format!("{VIP} dev lo scope link")), "{r}");
    assert_eq!(
        list_state(&env),
        format!("Announce web {VIP} table 100 (bird, withdraw when no_backend): announced")
    );
    let stats = env.stats();
    assert_eq!(stats["announce"][0]["announced"], true, "{stats}");
    assert_eq!(env.requests(3), ["real-server-1"; 3]);

    // The only backend fails its check: withdrawn within the detection time.
    let killed = Instant::now();
    if let Some(mut p) = http.take() {
        p.kill().unwrap_or_else(|e| panic!("{e:#}"));
    }
    wait_route(&env, false, DETECT, "backend down");
    let took = killed.elapsed();
    eprintln!("withdrawn {took:?} after the server was killed (detection budget {DETECT:?})");
    assert!(list_state(&env).ends_with("withdrawn: no backend"));
    assert_eq!(env.stats()["announce"][0]["announced"], false);

    // It recovers: announced again.
    let started = Instant::now();
    http = Some(start_http(&env));
    wait_route(&env, true, DETECT, "backend up");
    eprintln!(
        "announced again {:?} after the server was started",
        started.elapsed()
    );

    // Deleted by hand: back at the next reconcile tick (500 ms).
    let skip = env.daemon().lines().len();
    d.exec_ok(&["ip", "route", "del", &format!("{VIP}/32"), "table", "100"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    // No check that the route is gone here: a tick can put it back before this thread looks
    // (it did, 8 ms after the delete); the daemon's log line below says it found it deleted.
    let took = wait_route(&env, true, Duration::from_secs(2), "deleted by hand");
    eprintln!("repaired {took:?} after the route was deleted by hand");
    env.daemon().wait_log_after(
        skip,
        Duration::from_secs(1),
        |l| l.contains("deleted by hand; announced again"),
        "the drift logged",
    );

    // A reload without `announce` withdraws; with it again, announces.
    fs::write(&file, web(rs1, "")).unwrap_or_else(|e| panic!("{e}"));
    env.daemon_mut().signal(libc::SIGHUP);
    wait_route(
        &env,
        false,
        Duration::from_secs(2),
        "reload without announce",
    );
    assert!(!env.list().contains("Announce "), "{}", env.list());
    fs::write(&file, web(rs1, ANNOUNCE)).unwrap_or_else(|e| panic!("{e}"));
    env.daemon_mut().signal(libc::SIGHUP);
    wait_route(&env, true, Duration::from_secs(2), "reload with announce");

    // SIGTERM with drain 2s: the route goes at once, requests are answered during the drain,
    // and the process exits about 2 s later.
    let skip = env.daemon().lines().len();
    let term = Instant::now();
    env.daemon_mut().signal(libc::SIGTERM);
    let gone = wait_route(&env, false, Duration::from_millis(500), "SIGTERM");
    eprintln!("withdrawn {gone:?} after SIGTERM");
    env.daemon().wait_log_after(
        skip,
        Duration::from_secs(1),
        |l| l.contains("withdrawn; draining for 2s"),
        "withdrawn; draining",
    );
    assert!(
        env.daemon_mut().exit_status().is_none(),
        "exited before the drain"
    );
    assert_eq!(
        env.request(Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("a request during the drain failed: {e:#}")),
        "real-server-1"
    );
    let status = env
        .daemon_mut()
        .wait_timeout(Duration::from_secs(4))
        .unwrap_or_else(|| panic!("lb-ctl run did not exit within 4 s of SIGTERM"));
    let took = term.elapsed();
    eprintln!("exited {took:?} after SIGTERM (drain 2s)");
    assert!(status.success(), "exit status {status}");
    assert!(
        (Duration::from_millis(1900)..Duration::from_millis(3500)).contains(&took),
        "exited {took:?} after SIGTERM; the drain is 2 s"
    );
    assert!(!announced(&env));
    env.daemon = None;
    drop(http);
}
