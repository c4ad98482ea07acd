//! Scale-out on the ECMP lab ([`LabSpec::ecmp_lab`]): every director runs `lb-ctl run` and its
//! own BIRD peering with router-1's BIRD, which installs the VIP as one multipath route. For
//! the ECMP tests and the demo.
//!
//! The VIP reaches a director's BIRD as a route in kernel table [`ANNOUNCE_TABLE`] of its
//! namespace, `VIP/32 dev lo proto 250`, the route `lb-ctl run` keeps while the service is
//! healthy (`announce:` block); [`ScaleOut::announce`] adds or deletes it as the daemon does.

use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};

use crate::{
    bird::{self, Bird, Detection},
    daemon::Daemon,
    lab::{Host, Lab, LabSpec, router_addr, wait_until},
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
    /// Builds `spec` (an ECMP lab), starts router-1's BIRD and one BIRD per director, each with
    /// `detection`; starts no daemon yet ([`ScaleOut::start_daemon`]).
    pub fn build(spec: &LabSpec, detection: Detection) -> Result<ScaleOut> {
        bird::require_bird()?;
        let lab = Lab::build(spec)?;
        let dir = lab.bird_dir();
        let addrs: Vec<Ipv4Addr> = lab.directors().iter().map(|d| d.addr).collect();
        ensure!(
            lab.router(0).outer.addr == router_addr(1) && router_addr(1) == bird::EXAMPLE_ROUTER,
            "the ECMP lab's router must be at the examples' address {}",
            bird::EXAMPLE_ROUTER
        );
        let router_bird = Bird::start(
            &dir,
            &lab.router(0).outer,
            &bird::router_conf(&addrs, detection),
        )?;
        let mut birds = Vec::new();
        for d in lab.directors() {
            birds.push(Bird::start(
                &dir,
                d,
                &bird::director_conf(d.addr, detection),
            )?);
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
    /// server, with an HTTP check every 300 ms.
    pub fn service_yaml(&self) -> String {
        let backends: String = self
            .lab
            .servers()
            .iter()
            .map(|s| format!("      - address: {}\n", s.addr))
            .collect();
        format!(
            "services:\n  - name: web\n    vip: {}\n    port: 80\n    scheduler: mh\n    \
             check:\n      type: http_get\n      path: /\n      interval: 300ms\n      \
             timeout: 300ms\n      retries: 2\n      retry_delay: 100ms\n      rise: 1\n    \
             backends:\n{backends}",
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

    /// Adds (`on`) or deletes the VIP's route in director `i`'s announce table, as `lb-ctl run`
    /// does: `ip route replace VIP/32 dev lo table 100 proto 250`.
    pub fn announce(&self, i: usize, on: bool) -> Result<()> {
        let d = self.lab.director(i);
        let route = format!(
            "{}/32 dev lo table {ANNOUNCE_TABLE} proto {ANNOUNCE_PROTO}",
            self.lab.vip()
        );
        let cmd = if on { "replace" } else { "del" };
        d.ip_batch(&[format!("route {cmd} {route}")])
            .with_context(|| format!("ip route {cmd} {route} in {}", d.name))
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
