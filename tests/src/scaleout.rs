//! Scale-out on the ECMP lab ([`LabSpec::ecmp_lab`]): every director runs `lb-ctl run` and its
//! own BIRD peering with router-1's BIRD, which installs the VIP as one multipath route. For
//! the ECMP tests and the demo.
//!
//! The VIP reaches a director's BIRD as a route in kernel table [`ANNOUNCE_TABLE`] of its
//! namespace, `VIP/32 dev lo proto 250`, which `lb-ctl run` keeps while the service is healthy
//! and deletes on SIGTERM (the `announce:` block of [`ScaleOut::service_yaml`]). A
//! [`ClientLoop`] makes requests from the client addresses in turn while a test or the demo
//! changes the director set.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};

use crate::{
    bird::{self, Bird, Detection},
    daemon::Daemon,
    lab::{Host, Lab, LabSpec, client_addr, http_get_from, router_addr, wait_until},
    lbctl::LbCtl,
    stats,
};

/// The kernel table the directors' BIRD imports (`examples/bird-director.conf`).
pub const ANNOUNCE_TABLE: u32 = 100;
/// The route protocol number `lb-ctl run` gives the routes it keeps there.
pub const ANNOUNCE_PROTO: u32 = 250;

/// The ECMP lab with its BGP speakers and directors. Field order is drop order: daemons, their
/// `lb-ctl`s (detach), the speakers, then the lab.
pub struct ScaleOut {
    pub daemons: Vec<Option<Daemon>>,
    pub ctls: Vec<LbCtl>,
    pub birds: Vec<Bird>,
    pub router_bird: Bird,
    pub lab: Lab,
}

impl ScaleOut {
    /// Builds `spec` (an ECMP lab), starts router-1's BIRD and one BIRD per director, director
    /// `i`'s session with `detection[i]` on both sides; starts no daemon yet
    /// ([`ScaleOut::start_daemon`]).
    pub fn build(spec: &LabSpec, detection: &[Detection]) -> Result<ScaleOut> {
        bird::require_bird()?;
        let lab = Lab::build(spec)?;
        let dir = lab.bird_dir();
        ensure!(
            detection.len() == lab.directors().len(),
            "{} detection settings for {} directors",
            detection.len(),
            lab.directors().len()
        );
        let sessions: Vec<(Ipv4Addr, Detection)> = lab
            .directors()
            .iter()
            .zip(detection)
            .map(|(d, how)| (d.addr, *how))
            .collect();
        ensure!(
            lab.router(0).outer.addr == router_addr(1) && router_addr(1) == bird::EXAMPLE_ROUTER,
            "the ECMP lab's router must be at the examples' address {}",
            bird::EXAMPLE_ROUTER
        );
        let router_bird = Bird::start(&dir, &lab.router(0).outer, &bird::router_conf(&sessions))?;
        let mut birds = Vec::new();
        for (d, how) in lab.directors().iter().zip(detection) {
            birds.push(Bird::start(&dir, d, &bird::director_conf(d.addr, *how))?);
        }
        let mut ctls = Vec::new();
        for d in lab.directors() {
            ctls.push(LbCtl::new(&lab, d)?);
        }
        let daemons = lab.directors().iter().map(|_| None).collect();
        Ok(ScaleOut {
            daemons,
            ctls,
            birds,
            router_bird,
            lab,
        })
    }

    /// The service file of the ECMP lab: `web` on the VIP, port 80, `mh` over every real
    /// server, with an HTTP check every 300 ms (of `check_port`, default the backends' 80), and
    /// `announce: { via: bird, table: 100, withdraw_when: no_backend, drain }`: the daemon
    /// keeps the VIP's route in table 100 while a backend is up, and on SIGTERM withdraws it,
    /// keeps forwarding for `drain`, then exits.
    pub fn service_yaml(&self, drain: &str, check_port: Option<u16>) -> String {
        let backends: String = self
            .lab
            .servers()
            .iter()
            .map(|s| format!("      - address: {}\n", s.addr))
            .collect();
        let port = check_port.map_or(String::new(), |p| format!("      port: {p}\n"));
        format!(
            "announce:\n  via: bird\n  table: {ANNOUNCE_TABLE}\n  withdraw_when: no_backend\n  \
             drain: {drain}\nservices:\n  - name: web\n    vip: {}\n    port: 80\n    \
             scheduler: mh\n    check:\n      type: http_get\n      path: /\n{port}      \
             interval: 300ms\n      timeout: 300ms\n      retries: 2\n      retry_delay: \
             100ms\n      rise: 1\n    backends:\n{backends}",
            self.lab.vip()
        )
    }

    /// Waits until router-1 has an Established session with every director; returns how long.
    pub fn wait_sessions(&self, timeout: Duration) -> Result<Duration> {
        self.router_bird
            .wait_established(self.lab.directors().len(), timeout)
    }

    /// Starts `lb-ctl run -f FILE --iface eth0 EXTRA...` on director `i` with `yaml`.
    pub fn start_daemon(&mut self, i: usize, yaml: &str, extra: &[&str]) -> Result<()> {
        let file = self.ctls[i].write_file(yaml)?;
        let d = Daemon::start(&self.ctls[i], self.lab.director(i), &file, extra);
        self.daemons[i] = Some(d);
        Ok(())
    }

    /// Starts `lb-ctl run` on every director with `yaml` and `--detach-on-exit`, then waits
    /// until router-1 has a session with each and its route to the VIP has all of them as next
    /// hops (each daemon announces once a check passed); returns how long the wait took.
    pub fn start_all(&mut self, yaml: &str) -> Result<Duration> {
        for i in 0..self.lab.directors().len() {
            self.start_daemon(i, yaml, &["--detach-on-exit"])?;
        }
        let start = Instant::now();
        self.wait_sessions(Duration::from_secs(15))?;
        self.wait_next_hops(&self.director_addrs(), Duration::from_secs(10))?;
        Ok(start.elapsed())
    }

    /// Whether director `i`'s daemon keeps the VIP's route in its table 100.
    pub fn announced(&self, i: usize) -> Result<bool> {
        let out = self.lab.director(i).exec_ok(&[
            "ip",
            "route",
            "show",
            "table",
            &ANNOUNCE_TABLE.to_string(),
            "proto",
            &ANNOUNCE_PROTO.to_string(),
        ])?;
        Ok(out.contains(&format!("{} dev lo", self.lab.vip())))
    }

    /// The directors' addresses, in order.
    pub fn director_addrs(&self) -> Vec<Ipv4Addr> {
        self.lab.directors().iter().map(|d| d.addr).collect()
    }

    /// The next hops of router-1's route to the VIP (none when it has no route).
    pub fn next_hops(&self) -> Result<Vec<Ipv4Addr>> {
        let out = self.lab.router(0).outer.exec_ok(&[
            "ip",
            "-4",
            "route",
            "show",
            &self.lab.vip().to_string(),
        ])?;
        Ok(parse_next_hops(&out))
    }

    /// Waits until router-1's route to the VIP has exactly the next hops `want` (in any order);
    /// returns how long that took.
    pub fn wait_next_hops(&self, want: &[Ipv4Addr], timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let mut want = want.to_vec();
        want.sort();
        let ok = wait_until(timeout, || {
            self.next_hops().is_ok_and(|mut h| {
                h.sort();
                h == want
            })
        });
        ensure!(
            ok,
            "router-1's route to the VIP did not become {want:?} within {timeout:?}: it is \
             {:?}\n{}",
            self.next_hops().unwrap_or_default(),
            self.router_bird.routes().unwrap_or_default()
        );
        Ok(start.elapsed())
    }

    /// The router's route to the VIP as `ip route show VIP` prints it.
    pub fn route_text(&self) -> Result<String> {
        self.lab.router(0).outer.exec_ok(&[
            "ip",
            "-4",
            "route",
            "show",
            &self.lab.vip().to_string(),
        ])
    }

    /// Director `i`'s `lb-ctl stats --json`.
    pub fn stats(&self, i: usize) -> Result<serde_json::Value> {
        Ok(stats::parse(&self.ctls[i].stats_json()?))
    }

    /// The packets director `i`'s data path forwarded (`forwarded` + `forwarded_stateless`).
    pub fn forwarded(&self, i: usize) -> Result<u64> {
        let s = self.stats(i)?;
        Ok(stats::datapath(&s, "forwarded") + stats::datapath(&s, "forwarded_stateless"))
    }

    /// The directory of the speakers' files.
    pub fn bird_dir(&self) -> std::path::PathBuf {
        self.lab.bird_dir()
    }

    /// Director `i`'s host.
    pub fn director(&self, i: usize) -> &Host {
        self.lab.director(i)
    }

    /// The files dir of director `i`'s `lb-ctl`.
    pub fn files_dir(&self, i: usize) -> &Path {
        self.ctls[i].files_dir()
    }
}

/// Requests to the VIP (port 80) from the first `clients` client addresses in turn, one after
/// another, in a thread, until [`ClientLoop::finish`].
pub struct ClientLoop {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Requests>>,
}

/// What a [`ClientLoop`] saw.
#[derive(Debug, Default)]
pub struct Requests {
    /// Requests answered with status 200.
    pub ok: usize,
    /// The failed ones: when each began, and what happened.
    pub failed: Vec<(Instant, String)>,
    /// The longest a request took (answered or not).
    pub slowest: Duration,
}

impl Requests {
    /// The failures of requests that began at `t` or later.
    pub fn failed_since(&self, t: Instant) -> Vec<&str> {
        self.failed_between(t, None)
    }

    /// The failures of requests that began at `from` or later, and before `to` if given.
    pub fn failed_between(&self, from: Instant, to: Option<Instant>) -> Vec<&str> {
        self.failed
            .iter()
            .filter(|(at, _)| *at >= from && to.is_none_or(|to| *at < to))
            .map(|(_, what)| what.as_str())
            .collect()
    }
}

impl ClientLoop {
    /// Starts the loop; each request has `deadline`.
    pub fn start(so: &ScaleOut, clients: usize, deadline: Duration) -> ClientLoop {
        let host = so.lab.ecmp_clients().clone();
        let target = SocketAddr::new(so.lab.vip().into(), 80);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = thread::spawn(move || {
            let mut seen = Requests::default();
            let mut c = 0;
            while !stopped.load(Ordering::SeqCst) {
                let src: IpAddr = client_addr(c % clients).into();
                let began = Instant::now();
                match http_get_from(&host, src, target, "/", deadline) {
                    Ok((200, _)) => seen.ok += 1,
                    other => seen.failed.push((began, format!("{src}: {other:?}"))),
                }
                seen.slowest = seen.slowest.max(began.elapsed());
                c += 1;
            }
            seen
        });
        ClientLoop {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the loop after its current request; what it saw.
    pub fn finish(mut self) -> Requests {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(seen)) => seen,
            Some(Err(_)) => panic!("the client loop panicked"),
            None => Requests::default(),
        }
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The next hops in `ip route show VIP` output: one `via` (a single path) or the `nexthop via`
/// lines of a multipath route.
pub fn parse_next_hops(out: &str) -> Vec<Ipv4Addr> {
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| w[1].parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_of_single_and_multipath_routes() {
        let multi = "192.168.58.133 proto bird metric 32 \n\tnexthop via 192.168.58.134 dev eth0 \
                     weight 1 \n\tnexthop via 192.168.58.137 dev eth0 weight 1 \n";
        assert_eq!(
            parse_next_hops(multi),
            [
                Ipv4Addr::new(192, 168, 58, 134),
                Ipv4Addr::new(192, 168, 58, 137)
            ]
        );
        let single = "192.168.58.133 via 192.168.58.134 dev eth0 proto bird metric 32 \n";
        assert_eq!(parse_next_hops(single), [Ipv4Addr::new(192, 168, 58, 134)]);
        assert!(parse_next_hops("").is_empty());
    }
}
