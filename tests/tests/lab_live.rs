//! End to end: `lb-ctl run --listen` on director-1 of the namespace lab. The endpoint listens
//! inside the director's namespace (127.0.0.1:9100 there); the test fetches from that namespace
//! (the harness's small HTTP client) and opens the page in a real headless Chromium run there
//! too (`chromium --headless --no-sandbox --dump-dom`, bounded by a timeout).
//!
//! Traffic is a bounded number of requests from the lab client; `/metrics` is checked against
//! the real servers' own request counts; a real server's HTTP server is killed and restarted,
//! and `/metrics`, `/api/v1/status` and the rendered page follow. With `LB_DASHBOARD_SCREENSHOT=
//! PATH` set, the page (one backend down) is also saved as a PNG there (`docs/dashboard.png`
//! is made that way: `LB_DASHBOARD_SCREENSHOT=$PWD/docs/dashboard.png cargo test -p lb-tests
//! --test lab_live`). Without root, BPF, namespaces or Chromium the test fails saying what
//! is missing.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use lb_tests::{
    env::Env,
    lab::{self, Host, LabSpec, Proc},
};
use serde_json::Value;

const T: Duration = Duration::from_secs(2);
const VIP: Ipv4Addr = lab::DEFAULT_VIP;
const PORT: u16 = 9100;
/// A TCP check (the lab's servers count HTTP requests only, so the checks are not counted):
/// every 200 ms, 2 failures in a row (100 ms apart) -> down.
const CHECK: &str = "    check:\n      type: tcp\n      interval: 200ms\n      timeout: 300ms\n      \
                     retries: 2\n      retry_delay: 100ms\n      rise: 1\n";
/// The check's detection time (interval, the retries' delays and timeouts) and slack for a
/// loaded machine, as in lab_health.
const DETECT: Duration = Duration::from_millis(200 + 2 * (100 + 300) + 1500);
/// What the endpoint shows lags the daemon by at most one read of the maps (every second).
const SHOWN: Duration = Duration::from_millis(DETECT.as_millis() as u64 + 1000);
/// How long one Chromium run may take.
const BROWSER: Duration = Duration::from_secs(40);

fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lab-server"))
}

struct Live {
    http: Vec<Option<Proc>>,
    env: Env,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.env.daemon = None;
    }
}

impl Live {
    fn director(&self) -> &Host {
        self.env.lab.director(0)
    }

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

    fn kill_http(&mut self, i: usize) {
        if let Some(mut p) = self.http[i].take() {
            p.kill()
                .unwrap_or_else(|e| panic!("killing HTTP on server {i}: {e:#}"));
        }
    }

    /// GET `path` from the endpoint, inside the director's namespace: (status, body).
    fn get(&self, path: &str) -> (u16, String) {
        lab::http_get(self.director(), Ipv4Addr::LOCALHOST, PORT, path, T)
            .unwrap_or_else(|e| panic!("GET {path} from the director: {e:#}"))
    }

    fn status(&self) -> Value {
        let (code, body) = self.get("/api/v1/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/api/v1/status: {e}: {body}"))
    }

    fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "{body}");
        body
    }

    /// The state of backend `addr` in /api/v1/status.
    fn state(&self, addr: SocketAddr) -> String {
        let s = self.status();
        let backends = s["services"][0]["backends"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        backends
            .iter()
            .find(|b| b["address"] == addr.ip().to_string() && b["port"] == addr.port())
            .map(|b| b["state"].as_str().unwrap_or("?").to_string())
            .unwrap_or_else(|| panic!("no backend {addr} in {s}"))
    }

    /// Polls /api/v1/status until backend `addr` is `want`; how long it took.
    fn wait_state(&self, addr: SocketAddr, want: &str, within: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.state(addr) == want {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{addr} not {want} within {within:?} (now {})",
            self.state(addr)
        );
    }

    /// Chromium, headless, in the director's namespace, on the page; `extra` arguments.
    fn chromium(&self, extra: &[&str]) -> String {
        let profile = std::env::temp_dir().join(format!("lb-live-chromium-{}", std::process::id()));
        let url = format!("http://127.0.0.1:{PORT}/");
        let secs = BROWSER.as_secs().to_string();
        let profile_arg = format!("--user-data-dir={}", profile.display());
        let mut args = vec![
            "timeout",
            "-k",
            "5",
            &secs,
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            &profile_arg,
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = self
            .director()
            .exec(&args)
            .unwrap_or_else(|e| panic!("running chromium (cargo xtask setup installs it): {e:#}"));
        let _ = std::fs::remove_dir_all(&profile);
        assert!(
            out.status.success(),
            "chromium failed ({}; cargo xtask setup installs it): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The page as Chromium rendered it after its scripts ran: each backend's state.
    fn rendered_states(&self) -> Vec<(String, String)> {
        let dom = self.chromium(&["--virtual-time-budget=3000", "--dump-dom"]);
        // The rows the script made, not the script's own text.
        let body = dom.split("<script>").next().unwrap_or("");
        let mut out = Vec::new();
        for part in body.split("<tr class=\"backend\" ").skip(1) {
            let attr = |name: &str| {
                part.split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap_or("?")
                    .to_string()
            };
            out.push((attr("data-backend"), attr("data-state")));
        }
        assert!(
            !out.is_empty(),
            "no backend rows in the rendered page:\n{dom}"
        );
        out
    }
}

/// The value of the sample of `name` whose labels contain `label`.
fn sample(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} with {label} in:\n{metrics}"))
}

#[test]
fn the_endpoint_and_the_page_follow_traffic_and_health() {
    let mut live = Live {
        http: vec![None, None],
        env: Env::attached(
            &LabSpec {
                servers: 2,
                start_servers: false,
                server_bin: Some(server_bin()),
                ..LabSpec::default()
            },
            &[],
        ),
    };
    live.start_http(0);
    live.start_http(1);
    let (rs1, rs2) = (live.env.server(0).addr, live.env.server(1).addr);
    let (b1, b2) = (SocketAddr::from((rs1, 80)), SocketAddr::from((rs2, 80)));
    let yaml = format!(
        "services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    scheduler: rr\n{CHECK}    backends:\n      - address: {rs1}\n      - address: {rs2}\n"
    );
    let file = live.env.file(&yaml);
    let port = PORT.to_string();
    live.env.start_daemon(&file, &["--listen", &port]);
    live.env.daemon().wait_log(
        Duration::from_secs(10),
        |l| l.contains("serving /metrics"),
        "serving",
    );
    assert!(
        lab::wait_until(Duration::from_secs(5), || live.get("/api/v1/status").0
            == 200),
        "/api/v1/status never answered 200"
    );

    // Traffic: 40 requests; /metrics' new connections per backend are the servers' counts.
    let answers = live.env.requests(40);
    assert_eq!(Env::names(&answers), vec!["real-server-1", "real-server-2"]);
    let counts = [
        live.env.count(live.env.server(0)),
        live.env.count(live.env.server(1)),
    ];
    assert_eq!(counts.iter().sum::<u64>(), 40);
    // The endpoint reads the maps every second.
    std::thread::sleep(Duration::from_millis(1500));
    let m = live.metrics();
    for (b, count) in [(b1, counts[0]), (b2, counts[1])] {
        let label = format!("backend=\"{b}\"");
        let conns = sample(&m, "lb_backend_connections_total", &label);
        let packets = sample(&m, "lb_backend_packets_total", &label);
        eprintln!(
            "{b}: server counted {count} requests; /metrics: {conns} connections, {packets} packets"
        );
        assert_eq!(conns, count as f64, "{b}");
        // At least SYN, request, ACK of the answer and FIN per connection.
        assert!(packets >= 4.0 * count as f64, "{b}: {packets} packets");
        assert_eq!(sample(&m, "lb_backend_up", &label), 1.0);
        assert_eq!(
            sample(
                &m,
                "lb_backend_state",
                &format!("{label},forward=\"route\",state=\"up\"")
            ),
            1.0
        );
        // TCP checks of each backend, timed.
        assert!(
            sample(
                &m,
                "lb_health_check_duration_seconds_count",
                &format!("{label},check=\"tcp\",result=\"ok\"")
            ) >= 1.0,
            "{m}"
        );
    }
    assert_eq!(
        sample(&m, "lb_service_connections_total", "service=\"web\""),
        40.0
    );
    assert_eq!(live.state(b1), "up");
    assert_eq!(live.state(b2), "up");
    let s = live.status();
    assert_eq!(s["services"][0]["connections"], 40);
    assert!(s["flows_capacity"].as_u64().unwrap_or(0) > 0, "{s}");
    assert!(
        !s["rates"]["times"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .is_empty(),
        "{s}"
    );
    let page = live.rendered_states();
    eprintln!("rendered: {page:?}");
    assert_eq!(
        page,
        vec![
            (b1.to_string(), "up".to_string()),
            (b2.to_string(), "up".to_string())
        ]
    );

    // Kill real-server-1's HTTP server: down in /api/v1/status within the check's
    // detection time (+ the one-second read), then on /metrics and on the page.
    live.kill_http(0);
    let took = live.wait_state(b1, "down", SHOWN);
    eprintln!("{b1} shown down after {took:?} (detection {DETECT:?}, + 1 s read)");
    assert_eq!(live.state(b2), "up");
    let m = live.metrics();
    let label = format!("backend=\"{b1}\"");
    assert_eq!(sample(&m, "lb_backend_up", &label), 0.0);
    assert_eq!(
        sample(
            &m,
            "lb_health_transitions_total",
            &format!("backend=\"{rs1}\",to=\"down\"")
        ),
        1.0
    );
    let s = live.status();
    let events = s["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| e["kind"] == "health"
            && e["subject"] == format!("web {rs1}")
            && e["to"] == "down"
            && !e["reason"].as_str().unwrap_or("").is_empty()),
        "{events:?}"
    );
    let page = live.rendered_states();
    eprintln!("rendered: {page:?}");
    assert_eq!(
        page,
        vec![
            (b1.to_string(), "down".to_string()),
            (b2.to_string(), "up".to_string())
        ]
    );
    if let Ok(path) = std::env::var("LB_DASHBOARD_SCREENSHOT") {
        let shot = format!("--screenshot={path}");
        live.chromium(&[
            "--virtual-time-budget=3000",
            "--window-size=1200,800",
            "--hide-scrollbars",
            &shot,
        ]);
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 1000),
            "no screenshot at {path}"
        );
        eprintln!("screenshot written to {path}");
    }

    // Start it again: up again.
    live.start_http(0);
    let took = live.wait_state(b1, "up", SHOWN);
    eprintln!("{b1} shown up again after {took:?}");
    let page = live.rendered_states();
    assert_eq!(
        page,
        vec![
            (b1.to_string(), "up".to_string()),
            (b2.to_string(), "up".to_string())
        ]
    );
    let m = live.metrics();
    assert_eq!(
        sample(
            &m,
            "lb_health_transitions_total",
            &format!("backend=\"{rs1}\",to=\"up\"")
        ),
        1.0
    );
}
