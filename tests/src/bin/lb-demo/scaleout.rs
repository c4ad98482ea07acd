//! Part 5: scale-out. Three active directors behind a router that spreads flows over them
//! (ECMP), each announcing the VIP to it over eBGP through its own BIRD 2
//! (`examples/bird-director.conf`, `examples/bird-router.conf`): `lb-ctl run` keeps the VIP's
//! route in table 100 (`announce:`) and BIRD exports it. One director stopped with SIGTERM:
//! its daemon withdraws the route first, drains for 1 s, then exits, and a client loop's
//! requests keep working.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lb_tests::{
    bird::Detection,
    lab::{LabSpec, client_addr, http_get_from},
    scaleout::{ClientLoop, ScaleOut},
};

use crate::{
    Summary,
    support::{section, show, step},
};

const REQUESTS: usize = 64;
const TIMEOUT: Duration = Duration::from_secs(2);

/// `REQUESTS` requests from as many client addresses; returns answers per real server and per
/// director, and the failures.
fn round(so: &ScaleOut) -> Result<(BTreeMap<String, usize>, Vec<u64>, usize)> {
    let before: Vec<u64> = (0..3).map(|i| so.forwarded(i).unwrap_or(0)).collect();
    let mut servers = BTreeMap::new();
    let mut failed = 0;
    let target = SocketAddr::new(so.lab.vip().into(), 80);
    for c in 0..REQUESTS {
        let src: IpAddr = client_addr(c).into();
        match http_get_from(so.lab.ecmp_clients(), src, target, "/", TIMEOUT) {
            Ok((200, body)) => *servers.entry(body.trim().to_owned()).or_insert(0) += 1,
            _ => failed += 1,
        }
    }
    let per_director = (0..3)
        .map(|i| so.forwarded(i).unwrap_or(0).saturating_sub(before[i]))
        .collect();
    Ok((servers, per_director, failed))
}

pub fn run(summary: &mut Summary) -> Result<()> {
    let started = Instant::now();
    section(
        "Part 5 of 5: scale-out (three active directors, ECMP over BGP with BIRD 2)",
        "No director holds the VIP: each runs lb-ctl run and BIRD, which announces the VIP to \
         the router;\nthe router installs one route with three next hops and spreads the \
         clients' flows over them.\nmh makes every director pick the same real server for a \
         flow.",
    );
    step(
        "building the lab: clients 10.30.0.10-73 behind router-1 (10.30.0.1 | .1), directors \
         .134, .137, .132,\n    real servers .135, .136, .138; BIRD on the router and on each \
         director",
    );
    let mut so = ScaleOut::build(
        &LabSpec {
            install_signal_handler: false,
            ..LabSpec::ecmp_lab()
        },
        &[Detection::Bfd; 3],
    )?;
    let yaml = so.service_yaml("1s", None);
    step(
        "on each director: lb-ctl run (mh over the 3 real servers) with announce: { via: bird, \
         table: 100, withdraw_when: no_backend, drain: 1s }",
    );
    let t = so.start_all(&yaml)?;
    step(&format!(
        "director-1: ip route show table 100 proto 250 (what its BIRD exports)\n{}",
        so.director(0)
            .exec_ok(&["ip", "route", "show", "table", "100", "proto", "250"])?
            .trim_end()
    ));
    step(&format!(
        "router-1: ip route show {} (3 next hops, {t:.1?} after the daemons started)",
        so.lab.vip()
    ));
    show(&so.route_text()?);
    let (servers, directors, failed) = round(&so)?;
    step(&format!(
        "{REQUESTS} requests from {REQUESTS} client addresses: per real server {servers:?}, \
         packets per director {directors:?}, {failed} failed"
    ));
    if failed > 0 || directors.contains(&0) {
        bail!("scale-out: {failed} failed requests, or a director got none: {directors:?}");
    }

    step(
        "director-2: lb-ctl run gets SIGTERM while a client loop runs (it withdraws the route, \
         drains 1 s, exits)",
    );
    let all = so.director_addrs();
    let requests = ClientLoop::start(&so, REQUESTS, TIMEOUT);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let daemon = so.daemons[1].as_mut().context("no daemon on director-2")?;
    daemon.signal(libc::SIGTERM);
    let withdrawn = so.wait_next_hops(&[all[0], all[2]], Duration::from_secs(5))?;
    let daemon = so.daemons[1].as_mut().context("no daemon on director-2")?;
    let running = daemon.exit_status().is_none();
    let status = daemon
        .wait_timeout(Duration::from_secs(5))
        .context("lb-ctl run on director-2 did not exit within 5 s of SIGTERM")?;
    let exited = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let seen = requests.finish();
    step(&format!(
        "router-1 dropped director-2 {withdrawn:.2?} after the signal (the daemon still \
         running: {running}); it exited ({status}) {exited:.2?} after the signal; client loop: \
         {} answered, {} failed",
        seen.ok,
        seen.failed.len()
    ));
    show(&so.route_text()?);
    if !running || !status.success() || !seen.failed.is_empty() {
        bail!(
            "scale-out SIGTERM: withdrawn before the exit {running}, exit {status}, failed \
             requests {:?}",
            seen.failed
        );
    }
    let (servers, directors, failed2) = round(&so)?;
    step(&format!(
        "{REQUESTS} requests: per real server {servers:?}, packets per director {directors:?}, \
         {failed2} failed"
    ));
    if failed2 > 0 || directors[1] > 0 {
        bail!(
            "scale-out after SIGTERM: {failed2} failed, director-2 forwarded {}",
            directors[1]
        );
    }
    summary.add(format!(
        "part 5  scale-out: 3 directors announce the VIP over BGP, the router spreads requests over \
         all 3; SIGTERM on director-2: withdrawn in {withdrawn:.2?}, exited after {exited:.2?} (drain 1s), {} failed requests \
         of {} in the loop ({:.1?})",
        seen.failed.len(),
        seen.ok + seen.failed.len(),
        started.elapsed()
    ));
    drop(so);
    Ok(())
}
