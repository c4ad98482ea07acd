//! End to end: `lb-ctl run` (the daemon with health checks) on director-1 of the namespace lab
//! (`lb_tests::lab`; `docs/lab.md` has the rules kept here), and `lb-ctl genhash`.
//!
//! Each test builds its own lab with no servers started by the lab: it starts the real
//! servers' HTTP servers itself (`lab-server http`), so it can kill and restart them. The
//! daemon runs as `lb-ctl --netns <director> --pin-dir <lab pin dir> run -f FILE --iface eth0`
//! with its log (stderr) collected. Everything is dropped in order at the end, also on failure:
//! the daemon, the servers, `LbCtl` (detach, pins removed), the lab (namespaces). All traffic is
//! a bounded number of requests with deadlines. Without root, BPF or namespaces the tests fail
//! saying what is missing.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use lb_tests::{
    daemon::Daemon,
    env::Env,
    lab::{self, LabSpec, Proc},
    services::{self, Service},
};

/// Deadline of one request.
const T: Duration = Duration::from_secs(2);
const VIP: Ipv4Addr = lab::DEFAULT_VIP;

/// The check used by most tests: every 200 ms, 2 failures in a row (100 ms apart) -> down.
const CHECK: &str = "    check:\n      type: http_get\n      path: /\n      interval: 200ms\n      \
                     timeout: 300ms\n      retries: 2\n      retry_delay: 100ms\n      rise: 1\n";

/// The longest a failure may take to be seen with [`CHECK`]: the interval, the retries'
/// delays and timeouts, and slack for a loaded machine.
const DETECT: Duration = Duration::from_millis(200 + 2 * (100 + 300) + 1500);

fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lab-server"))
}

/// `web` on the VIP, port 80, round robin over `backends`, with `extra` service lines.
fn web(backends: &[Ipv4Addr], extra: &str) -> String {
    let mut y = format!(
        "services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    scheduler: rr\n{extra}    backends:\n"
    );
    for b in backends {
        y.push_str(&format!("      - address: {b}\n"));
    }
    y
}

/// A lab (its servers not started by it), `lb-ctl` attached to director-1's eth0, and the HTTP
/// servers this test starts and stops. Dropped in order: the daemon, the HTTP servers, then
/// `LbCtl` (pins) and the lab.
struct Health {
    http: Vec<Option<Proc>>,
    env: Env,
}

impl Drop for Health {
    fn drop(&mut self) {
        self.env.daemon = None;
    }
}

impl Health {
    fn new(servers: usize) -> Health {
        let env = Env::attached(
            &LabSpec {
                servers,
                start_servers: false,
                server_bin: Some(server_bin()),
                ..LabSpec::default()
            },
            &[],
        );
        let mut h = Health {
            http: (0..servers).map(|_| None).collect(),
            env,
        };
        for i in 0..servers {
            h.start_http(i);
        }
        h
    }

    fn addr(&self, i: usize) -> Ipv4Addr {
        self.env.server(i).addr
    }

    /// Starts real-server-(i+1)'s HTTP server and waits until it answers.
    fn start_http(&mut self, i: usize) {
        let server = self.env.server(i).clone();
        let bin = server_bin();
        let bin = bin.to_str().unwrap_or_else(|| panic!("lab-server path"));
        let proc = server
            .spawn(&[bin, "http", "--name", &server.name, "--port", "80"])
            .unwrap_or_else(|e| panic!("starting HTTP on {}: {e:#}", server.name));
        self.http[i] = Some(proc);
        assert!(
            lab::wait_until(Duration::from_secs(5), || self
                .env
                .lab
                .request_count(&server)
                .is_ok()),
            "the HTTP server of {} did not come up",
            server.name
        );
    }

    /// Kills real-server-(i+1)'s HTTP server.
    fn kill_http(&mut self, i: usize) {
        if let Some(mut p) = self.http[i].take() {
            p.kill()
                .unwrap_or_else(|e| panic!("killing HTTP on server {i}: {e:#}"));
        }
    }

    fn start_daemon(&mut self, file: &Path, extra: &[&str]) {
        self.env.start_daemon(file, extra);
    }

    fn daemon(&mut self) -> &mut Daemon {
        self.env.daemon_mut()
    }

    /// `n` requests to the VIP, each a new connection; the answering servers' names. Panics
    /// on any failed request.
    fn requests(&self, n: usize) -> Vec<String> {
        self.env.requests(n)
    }

    /// The state column of backend `addr` in `lb-ctl list` (`192.168.58.135:80`,
    /// `[fd00:58::135]:80`).
    fn state_of(&self, addr: impl Into<IpAddr>) -> String {
        self.env.backend_state(SocketAddr::new(addr.into(), 80))
    }
}

fn names(v: &[String]) -> Vec<&str> {
    Env::names(v)
}

/// A log line about `addr` saying `what` ("backend down" / "backend up").
fn about(addr: impl Into<IpAddr>, what: &'static str) -> impl Fn(&str) -> bool {
    let addr = addr.into().to_string();
    move |l: &str| l.contains(what) && l.contains(&format!("backend={addr}"))
}

#[test]
fn a_dead_server_is_taken_out_and_comes_back() {
    let mut env = Health::new(2);
    let (rs1, rs2) = (env.addr(0), env.addr(1));
    let file = env.env.file(&web(&[rs1, rs2], CHECK));
    env.start_daemon(&file, &[]);
    assert_eq!(
        names(&env.requests(10)),
        vec!["real-server-1", "real-server-2"]
    );
    assert_eq!(env.state_of(rs1), "up");

    // Kill real-server-1's HTTP server: down within interval x retries + slack.
    let skip = env.daemon().lines().len();
    env.kill_http(0);
    let (line, took) =
        env.daemon()
            .wait_log_after(skip, DETECT, about(rs1, "backend down"), "backend down");
    eprintln!("detected real-server-1 down after {took:?}: {line}");
    assert!(
        line.contains("from=up") && line.contains("to=down"),
        "{line}"
    );
    assert!(line.contains("reason="), "{line}");
    // From here on every new request goes to real-server-2 and none fails.
    let answers = env.requests(20);
    assert_eq!(names(&answers), vec!["real-server-2"]);
    assert_eq!(env.state_of(rs1), "down");
    let prom = env
        .env
        .ctl
        .run_ok(&["stats", "--prometheus"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        prom.lines().any(|l| l.starts_with("lb_backend_up{")
            && l.contains(&format!("{rs1}:80"))
            && l.ends_with(" 0")),
        "{prom}"
    );

    // Start it again: it comes back.
    let skip = env.daemon().lines().len();
    env.start_http(0);
    let (line, took) =
        env.daemon()
            .wait_log_after(skip, DETECT, about(rs1, "backend up"), "backend up");
    eprintln!("real-server-1 back up after {took:?}: {line}");
    assert_eq!(
        names(&env.requests(10)),
        vec!["real-server-1", "real-server-2"]
    );
    assert_eq!(env.state_of(rs1), "up");

    // SIGTERM: the daemon stops, the data path keeps forwarding.
    env.daemon().terminate();
    env.daemon()
        .wait_log(T, |l| l.contains("keeps forwarding"), "stopped");
    assert_eq!(
        names(&env.requests(10)),
        vec!["real-server-1", "real-server-2"]
    );
}

/// The same over IPv6: an `http_get` checked IPv6 backend whose server is killed is marked
/// down, gets no requests, and comes back up when the server returns.
#[test]
fn a_dead_ipv6_server_is_taken_out_and_comes_back() {
    let mut env = Health::new(2);
    let lab = &env.env.lab;
    let (vip6, rs1, rs2) = (
        IpAddr::from(lab.vip6()),
        lab.server(0).addr6,
        lab.server(1).addr6,
    );
    let mut web6 = Service::new("web6", vip6, 80, &[rs1.into(), rs2.into()]);
    web6.extra = CHECK.to_owned();
    let file = env.env.file(&services::file(&[web6]));
    env.start_daemon(&file, &[]);
    let both = vec!["real-server-1", "real-server-2"];
    assert_eq!(names(&env.env.requests_to(vip6, 10)), both);
    assert_eq!(env.state_of(rs1), "up");

    let skip = env.daemon().lines().len();
    env.kill_http(0);
    let (line, down_after) =
        env.daemon()
            .wait_log_after(skip, DETECT, about(rs1, "backend down"), "backend down");
    assert!(
        line.contains("from=up") && line.contains("to=down"),
        "{line}"
    );
    assert_eq!(names(&env.env.requests_to(vip6, 20)), vec!["real-server-2"]);
    assert_eq!(env.state_of(rs1), "down");
    assert_eq!(env.state_of(rs2), "up");

    let skip = env.daemon().lines().len();
    env.start_http(0);
    let (line, up_after) =
        env.daemon()
            .wait_log_after(skip, DETECT, about(rs1, "backend up"), "backend up");
    eprintln!(
        "IPv6 backend {rs1}: down {down_after:?} after its server was killed, up          {up_after:?} after it was restarted ({line})"
    );
    assert_eq!(names(&env.env.requests_to(vip6, 10)), both);
    assert_eq!(env.state_of(rs1), "up");
}

#[test]
fn genhash_digest_is_accepted_and_a_mismatch_marks_down() {
    let mut env = Health::new(2);
    let (rs1, rs2) = (env.addr(0), env.addr(1));
    let genhash = |addr: Ipv4Addr| -> String {
        let out = env
            .env
            .ctl
            .run_ok(&[
                "genhash",
                "--server",
                &addr.to_string(),
                "--port",
                "80",
                "--url",
                "/",
            ])
            .unwrap_or_else(|e| panic!("{e:#}"));
        out.lines()
            .find_map(|l| l.strip_prefix("MD5SUM = "))
            .unwrap_or_else(|| panic!("genhash printed no MD5SUM: {out}"))
            .trim()
            .to_string()
    };
    let (d1, d2) = (genhash(rs1), genhash(rs2));
    assert_eq!(d2.len(), 32, "{d2}");
    assert_ne!(d1, d2, "the two servers' pages differ");
    // The check wants real-server-2's page: real-server-1's digest does not match.
    let check = format!("{CHECK}      digest: {d2}\n");
    let file = env.env.file(&web(&[rs1, rs2], &check));
    env.start_daemon(&file, &[]);
    let (line, took) = env.daemon().wait_log(
        DETECT + Duration::from_secs(1),
        about(rs1, "backend down"),
        "backend down",
    );
    eprintln!("digest mismatch seen after {took:?}: {line}");
    assert!(line.contains("digest"), "{line}");
    assert_eq!(names(&env.requests(10)), vec!["real-server-2"]);
    // real-server-2 passed every check with the digest genhash printed.
    assert!(
        !env.daemon()
            .lines()
            .iter()
            .any(|l| about(rs2, "backend down")(l)),
        "{}",
        env.daemon().lines().join("\n")
    );
    assert_eq!(env.state_of(rs2), "up");
}

#[test]
fn all_down_sends_to_the_sorry_server() {
    let mut env = Health::new(3);
    let (rs1, rs2, sorry) = (env.addr(0), env.addr(1), env.addr(2));
    let extra = format!("{CHECK}    sorry_server: {sorry}\n");
    let file = env.env.file(&web(&[rs1, rs2], &extra));
    env.start_daemon(&file, &[]);
    assert_eq!(
        names(&env.requests(6)),
        vec!["real-server-1", "real-server-2"]
    );
    let skip = env.daemon().lines().len();
    env.kill_http(0);
    env.kill_http(1);
    for addr in [rs1, rs2] {
        env.daemon()
            .wait_log_after(skip, DETECT, about(addr, "backend down"), "backend down");
    }
    env.daemon().wait_log_after(
        skip,
        T,
        |l| l.contains("sorry server in"),
        "sorry server in",
    );
    assert_eq!(names(&env.requests(6)), vec!["real-server-3"]);

    // One comes back: the sorry server is out again.
    let skip = env.daemon().lines().len();
    env.start_http(1);
    env.daemon()
        .wait_log_after(skip, DETECT, about(rs2, "backend up"), "backend up");
    assert_eq!(names(&env.requests(6)), vec!["real-server-2"]);
}

#[test]
fn sighup_with_a_broken_file_keeps_the_running_config() {
    let mut env = Health::new(2);
    let (rs1, rs2) = (env.addr(0), env.addr(1));
    let file = env.env.file(&web(&[rs1, rs2], CHECK));
    env.start_daemon(&file, &["--detach-on-exit", "--reload-settle", "1s"]);

    // A broken file: refused, logged; both servers still serve.
    let skip = env.daemon().lines().len();
    fs::write(&file, web(&[rs1, rs2], "    check: {type: nope}\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    env.daemon().signal(libc::SIGHUP);
    let (line, _) = env.daemon().wait_log_after(
        skip,
        Duration::from_secs(3),
        |l| l.contains("reload refused"),
        "reload refused",
    );
    assert!(line.contains("services[0].check.type"), "{line}");
    assert_eq!(
        names(&env.requests(10)),
        vec!["real-server-1", "real-server-2"]
    );
    // Checks go on with the old config: a dead server is still taken out.
    let skip = env.daemon().lines().len();
    env.kill_http(0);
    env.daemon()
        .wait_log_after(skip, DETECT, about(rs1, "backend down"), "backend down");
    assert_eq!(names(&env.requests(6)), vec!["real-server-2"]);

    // A good file, written in place (picked up once unchanged for --reload-settle, no
    // signal): applied.
    let skip = env.daemon().lines().len();
    env.start_http(0);
    fs::write(&file, web(&[rs1], CHECK)).unwrap_or_else(|e| panic!("{e}"));
    env.daemon().wait_log_after(
        skip,
        Duration::from_secs(5),
        |l| l.contains("reloaded"),
        "reloaded",
    );
    // real-server-1 keeps its down state until its next check says otherwise.
    env.daemon().wait_log_after(
        skip,
        DETECT,
        about(rs1, "backend up"),
        "backend up after the reload",
    );
    assert_eq!(names(&env.requests(6)), vec!["real-server-1"]);
    assert!(!env.env.list().contains(&format!("{rs2}:80")));

    // --detach-on-exit: SIGTERM detaches and removes the pins.
    env.daemon().terminate();
    assert!(
        !env.env.ctl.pin_dir().exists(),
        "the pins are still there after --detach-on-exit"
    );
}
