//! The usual start of an end-to-end test: a lab, `lb-ctl` for its director-1, and later
//! perhaps the daemon (`lb-ctl run`). Every call panics with what failed, as a test wants.
//!
//! ```no_run
//! use lb_tests::{env::Env, lab_spec};
//! let env = Env::attached(&lab_spec!(), &[]);
//! env.apply("services: []\n");
//! println!("{}", env.stats());
//! ```

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    daemon::Daemon,
    lab::{Host, Lab, LabSpec, http_get},
    lbctl::LbCtl,
    stats,
};

/// A [`LabSpec`] whose real servers run this crate's `lab-server`, as cargo built it for the
/// integration test that expands this (`env!("CARGO_BIN_EXE_lab-server")`); fields given as
/// `lab_spec!(servers: 4, start_servers: false)` override the defaults.
#[macro_export]
macro_rules! lab_spec {
    ($($field:ident : $value:expr),* $(,)?) => {
        $crate::lab::LabSpec {
            $($field: $value,)*
            server_bin: Some(::std::path::PathBuf::from(env!("CARGO_BIN_EXE_lab-server"))),
            ..$crate::lab::LabSpec::default()
        }
    };
}

/// The lab, `lb-ctl` for director-1 and the daemon if started. Field order is drop order: the
/// daemon first (so that `LbCtl`'s detach is not refused), then `LbCtl` (detach, pins
/// removed), then the lab (namespaces deleted).
pub struct Env {
    pub daemon: Option<Daemon>,
    pub ctl: LbCtl,
    pub lab: Lab,
}

impl Env {
    /// Builds the lab of `spec` and prepares `lb-ctl` for director-1 (nothing attached).
    pub fn build(spec: &LabSpec) -> Env {
        let lab = Lab::build(spec).unwrap_or_else(|e| panic!("building the lab failed: {e:#}"));
        let ctl = LbCtl::new(&lab, lab.director(0))
            .unwrap_or_else(|e| panic!("preparing lb-ctl failed: {e:#}"));
        Env {
            daemon: None,
            ctl,
            lab,
        }
    }

    /// [`Env::build`], then `lb-ctl attach eth0 --mode native EXTRA...`, which must say
    /// native.
    pub fn attached(spec: &LabSpec, extra: &[&str]) -> Env {
        let env = Env::build(spec);
        let out = env
            .ctl
            .attach_with("eth0", "native", extra)
            .unwrap_or_else(|e| panic!("lb-ctl attach eth0 {extra:?} failed: {e:#}"));
        assert!(out.contains("native"), "attach said: {out}");
        env
    }

    /// [`Env::build`], then `lb-ctl run` on director-1 with the service file `yaml` writes for
    /// the lab, and `extra` arguments (the production path: the daemon attaches and applies).
    pub fn running(spec: &LabSpec, yaml: impl FnOnce(&Lab) -> String, extra: &[&str]) -> Env {
        let mut env = Env::build(spec);
        let file = env.file(&yaml(&env.lab));
        env.start_daemon(&file, extra);
        env
    }

    /// The client.
    pub fn client(&self) -> &Host {
        self.lab.client()
    }

    /// Real server `i`, counted from 0.
    pub fn server(&self, i: usize) -> &Host {
        self.lab.server(i)
    }

    /// `lb-ctl apply -f` of `yaml`; its stdout.
    pub fn apply(&self, yaml: &str) -> String {
        self.ctl
            .apply(yaml)
            .unwrap_or_else(|e| panic!("lb-ctl apply failed: {e:#}"))
    }

    /// Writes `yaml` to a new service file; its path.
    pub fn file(&self, yaml: &str) -> PathBuf {
        self.ctl
            .write_file(yaml)
            .unwrap_or_else(|e| panic!("writing a service file: {e:#}"))
    }

    /// `lb-ctl list`.
    pub fn list(&self) -> String {
        self.ctl
            .list()
            .unwrap_or_else(|e| panic!("lb-ctl list failed: {e:#}"))
    }

    /// The state column (`up`, `down`, ...) of backend `addr` (`192.168.58.135:80`,
    /// `[fd00:58::135]:80`) in `lb-ctl list`; panics when it is not listed.
    pub fn backend_state(&self, addr: SocketAddr) -> String {
        let list = self.list();
        list.lines()
            .find(|l| l.contains(&addr.to_string()))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_else(|| panic!("no backend {addr} in:\n{list}"))
            .to_string()
    }

    /// The distinct names in `v`, sorted (which servers answered a run of requests).
    pub fn names(v: &[String]) -> Vec<&str> {
        let mut n: Vec<&str> = v.iter().map(String::as_str).collect();
        n.sort();
        n.dedup();
        n
    }

    /// `lb-ctl stats --json`, parsed.
    pub fn stats(&self) -> Value {
        let text = self
            .ctl
            .stats_json()
            .unwrap_or_else(|e| panic!("lb-ctl stats --json failed: {e:#}"));
        stats::parse(&text)
    }

    /// The stats once the data path's counter of `reason` has not moved for 300 ms (the last
    /// packets of what was sent are through); at most `within`, then the last stats.
    pub fn settled_stats(&self, reason: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        let mut last = self.stats();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            let now = self.stats();
            if stats::datapath(&now, reason) != stats::datapath(&last, reason) {
                since = Instant::now();
            } else if since.elapsed() >= Duration::from_millis(300) {
                return now;
            }
            last = now;
        }
        last
    }

    /// One HTTP request from the client to the VIP's HTTP port on a new connection, within
    /// `timeout`; the answering server's name (the body, trimmed). Fails on a status not 200.
    pub fn request(&self, timeout: Duration) -> anyhow::Result<String> {
        self.request_to(self.lab.vip().into(), timeout)
    }

    /// [`Env::request`] to `vip` (e.g. the IPv6 VIP).
    pub fn request_to(&self, vip: IpAddr, timeout: Duration) -> anyhow::Result<String> {
        let port = self.lab.spec().http_port;
        let (status, body) = http_get(self.client(), vip, port, "/", timeout)?;
        anyhow::ensure!(status == 200, "status {status}: {body}");
        Ok(body.trim().to_string())
    }

    /// `n` requests as [`Env::request`], each within 2 s; panics on any failure.
    pub fn requests(&self, n: usize) -> Vec<String> {
        self.requests_to(self.lab.vip().into(), n)
    }

    /// `n` requests as [`Env::request_to`] `vip`, each within 2 s; panics on any failure.
    pub fn requests_to(&self, vip: IpAddr, n: usize) -> Vec<String> {
        (0..n)
            .map(|k| {
                self.request_to(vip, Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("request {k} of {n} to {vip} failed: {e:#}"))
            })
            .collect()
    }

    /// How many HTTP requests `server` has answered (the lab's servers count them).
    pub fn count(&self, server: &Host) -> u64 {
        self.lab
            .request_count(server)
            .unwrap_or_else(|e| panic!("request count of {}: {e:#}", server.name))
    }

    /// Starts `lb-ctl run -f FILE --iface eth0 EXTRA...` on director-1 (see [`Daemon::start`]).
    pub fn start_daemon(&mut self, file: &Path, extra: &[&str]) -> &mut Daemon {
        self.daemon = Some(Daemon::start(&self.ctl, self.lab.director(0), file, extra));
        self.daemon_mut()
    }

    /// The daemon; panics if it was not started.
    pub fn daemon(&self) -> &Daemon {
        self.daemon
            .as_ref()
            .unwrap_or_else(|| panic!("the daemon is not running"))
    }

    /// The daemon; panics if it was not started.
    pub fn daemon_mut(&mut self) -> &mut Daemon {
        self.daemon
            .as_mut()
            .unwrap_or_else(|| panic!("the daemon is not running"))
    }
}
