//! Part 4: tunnel mode (`examples/tunnel.yaml`). A lab with a router and a second subnet
//! behind it: the real servers 10.20.0.11 and .12 are not on the director's segment, so
//! direct routing cannot reach them. Each takes the tunnel's outer header off with `lb-ctl
//! decap attach eth0`; `lb-ctl run` on the director encapsulates every packet to the VIP in
//! IPIP and sends it to the next hop its kernel's route names (router-1); the servers answer
//! the client themselves, from the VIP, through the router: the director sees none of the
//! replies (a capture on its `eth0` shows it).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use lb_tests::lab::{self, Capture, Lab, LabSpec, RoutedSpec, http_get};

use crate::{
    Args, Summary, rel, split,
    support::{Daemon, halt_if_interrupted, lb_ctl, note, section, show, step},
    tally,
};

/// Requests of this part (20 per real server).
const REQUESTS: usize = 40;
const TIMEOUT: Duration = Duration::from_secs(2);
const PACE: Duration = Duration::from_millis(25);

pub fn run(args: &Args, summary: &mut Summary) -> Result<()> {
    let started = Instant::now();
    let file = args.examples.join("tunnel.yaml");
    section(
        "Part 4 of 5: tunnel mode (real servers behind a router, LVS -i)",
        "The real servers are on 10.20.0.0/24, behind a router: direct routing cannot reach \
         them.\nThe director wraps each packet to the VIP in an outer IPv4 header (IPIP) to \
         the real server\nand sends it to the router; the real server takes the header off \
         (lb-ctl decap) and answers\nthe client directly, from the VIP on its lo.",
    );
    step(
        "building the lab: client .100, director .134 (VIP .133), router-1 .1 | 10.20.0.1,\n    \
         remote servers 10.20.0.11 and 10.20.0.12 (VIP on lo, default route via the router)",
    );
    let lab = Lab::build(&LabSpec {
        routed: Some(RoutedSpec::default()),
        install_signal_handler: false,
        ..LabSpec::default()
    })?;
    println!(
        "    lab {} ready in {:.1?}",
        lab.prefix(),
        started.elapsed()
    );
    let pin_dir = |name: &str| lab.pin_dir().join(name);

    for s in lab.remote_servers() {
        step(&format!(
            "on {} ({}): lb-ctl decap attach eth0",
            s.name, s.addr
        ));
        show(&lb_ctl(
            &args.lb_ctl,
            &s.netns,
            &pin_dir(&s.name),
            &["decap", "attach", "eth0"],
        )?);
    }

    let director = lab.director(0);
    step(&format!(
        "on the director: lb-ctl run -f {} --iface eth0",
        rel(&file)
    ));
    let daemon = Daemon::start(&args.lb_ctl, director, &pin_dir(&director.name), &file)?;
    let router = lab.router(0);
    // The director's health checks to the real servers go through the router: its kernel
    // resolves the router's MAC, which the data path's FIB lookup then finds.
    let resolved = lab::wait_until(Duration::from_secs(5), || {
        director
            .neighbour_mac(router.outer.addr)
            .is_ok_and(|m| m.is_some())
    });
    if !resolved {
        bail!(
            "the director did not resolve its next hop {} in 5 s",
            router.outer.addr
        );
    }
    show(&lb_ctl(
        &args.lb_ctl,
        &director.netns,
        &pin_dir(&director.name),
        &["list"],
    )?);

    step(&format!(
        "{REQUESTS} HTTP requests from the client to {}:80, a new connection each; capturing \
         the replies\n    (from the VIP, port 80) on the director's eth0 and on the router's \
         leg to the servers",
        lab.vip()
    ));
    let replies = format!("src host {} and tcp src port 80", lab.vip());
    let at_director = Capture::start(director, "eth0", &replies)?;
    let at_router = Capture::start(&router.inner, "eth1", &replies)?;
    let mut by_server: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for i in 0..REQUESTS {
        halt_if_interrupted();
        let answer = http_get(lab.client(), lab.vip(), 80, "/", TIMEOUT);
        tally(&mut by_server, &mut failed, &format!("request {i}"), answer);
        std::thread::sleep(PACE);
    }
    let (at_director, at_router) = (at_director.stop()?, at_router.stop()?);
    note(&format!(
        "{}/{REQUESTS} answered, {failed} failed   {}\nreplies seen on the router's leg to \
         the servers: {}; on the director's eth0: {}",
        REQUESTS - failed,
        split(&by_server),
        at_router.len(),
        at_director.len()
    ));

    step("lb-ctl list, lb-ctl stats, and the decapsulation counters of remote-server-1");
    show(&lb_ctl(
        &args.lb_ctl,
        &director.netns,
        &pin_dir(&director.name),
        &["list"],
    )?);
    show(&lb_ctl(
        &args.lb_ctl,
        &director.netns,
        &pin_dir(&director.name),
        &["stats"],
    )?);
    let rs1 = lab.remote_server(0);
    show(&lb_ctl(
        &args.lb_ctl,
        &rs1.netns,
        &pin_dir(&rs1.name),
        &["decap"],
    )?);

    step("stopping lb-ctl run, lb-ctl decap detach eth0, tearing the lab down");
    daemon.stop()?;
    for s in lab.remote_servers() {
        show(&lb_ctl(
            &args.lb_ctl,
            &s.netns,
            &pin_dir(&s.name),
            &["decap", "detach", "eth0"],
        )?);
    }
    crate::teardown(lab)?;
    println!("    done in {:.1?}", started.elapsed());

    if failed > 0 {
        bail!("{failed} of {REQUESTS} requests through the tunnel failed");
    }
    if by_server.len() < 2 {
        bail!("only {by_server:?} answered; traffic was not balanced");
    }
    if !at_director.is_empty() {
        bail!(
            "{} replies reached the director: they must go from the servers through the router",
            at_director.len()
        );
    }
    if at_router.len() < REQUESTS {
        bail!(
            "only {} replies passed the router (fewer than the requests)",
            at_router.len()
        );
    }
    summary.add(format!(
        "part 4  tunnel mode: {REQUESTS} HTTP requests over IPIP to real servers behind a \
         router, none failed ({}); {} replies through the router, none through the director",
        split(&by_server),
        at_router.len()
    ));
    Ok(())
}
