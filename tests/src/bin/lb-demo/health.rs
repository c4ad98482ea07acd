//! Part 2: `lb-ctl run` with an `http_get` health check (`examples/health.yaml`) on
//! director-1: real-server-1's HTTP server is killed while the client's requests go on, the
//! check marks it down, every later request goes to real-server-2 and none fails; the server
//! is started again, comes back up and gets requests again.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::{
    Args, Lab2, Summary, rel,
    support::{Daemon, Traffic, about, lb_ctl, note, section, show, start_http, step, tally},
};

/// Deadline of one request.
const TIMEOUT: Duration = Duration::from_secs(1);
/// One request every this long (about 25 a second).
const PACE: Duration = Duration::from_millis(40);
/// Most requests this part sends.
const CAP: usize = 1500;
/// How long the traffic runs before and after each event.
const SETTLE: Duration = Duration::from_millis(1500);
/// On top of the protocol's bounds, for a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

pub fn run(args: &Args, l2: &mut Lab2, summary: &mut Summary) -> Result<()> {
    let file = args.examples.join("health.yaml");
    let config = lb_ctl::config::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let check = config
        .services
        .iter()
        .find(|s| s.port == 80)
        .and_then(|s| s.health.check.clone())
        .with_context(|| format!("{}: no service on port 80 with a check", file.display()))?;
    // Down after `retries` failures in a row: the first comes within an interval, each retry
    // `retry_delay` later; a check takes at most `timeout`.
    let nominal = check.interval * check.retries;
    let worst = check.interval + (check.timeout + check.retry_delay) * check.retries + SLACK;
    section(
        "Part 2 of 5: health checks (lb-ctl run, as keepalived's HTTP_GET checker)",
        &format!(
            "`lb-ctl apply` alone is plain IPVS: a dead real server keeps getting its share. \
             `lb-ctl run`\nchecks every backend and takes the dead ones out. {}: GET / \
             every {:?};\n{} failures in a row (retried after {:?}) = down, {} success = up. \
             We kill real-server-1's\nHTTP server while the client sends ~25 requests a \
             second, then start it again.",
            rel(&file),
            check.interval,
            check.retries,
            check.retry_delay,
            check.rise
        ),
    );
    let pin_dir = l2.pin_dir(0);
    let Lab2 {
        http,
        server_bin,
        lab,
    } = l2;
    let lab = &*lab;
    let d1 = lab.director(0);
    let (rs1, rs2) = (lab.server(0).clone(), lab.server(1).clone());

    step(&format!(
        "on director-1: lb-ctl run -f {} --iface eth0 --detach-on-exit",
        rel(&file)
    ));
    note("(its log follows, as `director-1 | LEVEL message`)");
    let daemon = Daemon::start(&args.lb_ctl, d1, &pin_dir, &file)?;
    let list = || lb_ctl(&args.lb_ctl, &d1.netns, &pin_dir, &["list"]);
    show(&list()?);

    let state = |daemon: &Daemon| {
        if daemon
            .find(0, about(rs1.addr, "backend down"))
            .is_some_and(|_| daemon.find(0, about(rs1.addr, "backend up")).is_none())
        {
            "| real-server-1 down"
        } else {
            "| real-server-1 up"
        }
    };
    let mut traffic = Traffic::new(lab, TIMEOUT, PACE, CAP);
    step("requests from the client to the VIP, both real servers up (one line a second)");
    let t0 = Instant::now();
    traffic.run_for(SETTLE, &mut || state(&daemon).to_string())?;
    let (failed, by) = tally(traffic.since(t0));
    if failed > 0 || by.len() < 2 {
        bail!("before the kill: {failed} requests failed, answered by {by:?}");
    }

    step("kill -9 real-server-1's HTTP server; the requests go on");
    let mark = daemon.mark();
    if let Some(mut p) = http[0].take() {
        p.kill()?;
    }
    let killed = Instant::now();
    let detected = traffic.run(
        worst,
        |_| daemon.find(mark, about(rs1.addr, "backend down")).is_some(),
        &mut || state(&daemon).to_string(),
    )?;
    let Some((seen, _)) = daemon.find(mark, about(rs1.addr, "backend down")) else {
        bail!(
            "real-server-1 was not marked down within {} ms of its death (detected: {detected})",
            worst.as_millis()
        );
    };
    let took = seen - killed;
    let (lost, _) = tally(
        traffic
            .reqs
            .iter()
            .filter(|r| r.at >= killed && r.at < seen),
    );
    note(&format!(
        "real-server-1 marked down {} ms after its death (interval x retries = {} ms); {lost} \
         requests\nfailed in between: they were sent to the dead server before the check could \
         know.",
        took.as_millis(),
        nominal.as_millis()
    ));
    if took > nominal {
        note(&format!(
            "(slower than interval x retries: a loaded machine; the bound with timeouts is {} \
             ms)",
            worst.as_millis()
        ));
    }

    step("from now on every new request must go to real-server-2, and none may fail");
    traffic.run_for(SETTLE, &mut || state(&daemon).to_string())?;
    let listed = list()?;
    show(&listed);
    let line = listed
        .lines()
        .find(|l| l.contains(&format!("{}:80", rs1.addr)))
        .unwrap_or_default();
    if !line.trim_end().ends_with("down") {
        bail!("lb-ctl list does not show real-server-1 as down: {line:?}");
    }
    note(
        "real-server-1 is `down`: configured, counted, but given no new connection. Its \
         ActiveConn are\nthe attempts it refused: the director never sees a real server's \
         answer (DR), so they\nstay in the table until they expire (30 s, like IPVS's \
         SYN_RECV entries).",
    );

    step("start real-server-1's HTTP server again");
    let mark = daemon.mark();
    http[0] = Some(start_http(lab, server_bin, &rs1)?);
    let restarted = Instant::now();
    let up_bound = check.interval * check.rise + check.timeout + SLACK;
    traffic.run(
        up_bound,
        |_| daemon.find(mark, about(rs1.addr, "backend up")).is_some(),
        &mut || state(&daemon).to_string(),
    )?;
    let Some((back, _)) = daemon.find(mark, about(rs1.addr, "backend up")) else {
        bail!(
            "real-server-1 was not marked up within {} ms of its restart",
            up_bound.as_millis()
        );
    };
    note(&format!(
        "real-server-1 back up {} ms after its restart",
        (back - restarted).as_millis()
    ));
    traffic.run_for(SETTLE, &mut || state(&daemon).to_string())?;
    let listed = list()?;
    show(&listed);

    // The verdict.
    let (failed_after, by_after) =
        tally(traffic.reqs.iter().filter(|r| r.at >= seen && r.at < back));
    let (failed_back, by_back) = tally(traffic.since(back));
    let wrong: usize = by_after
        .iter()
        .filter(|(s, _)| **s != rs2.name)
        .map(|(_, n)| n)
        .sum();
    step("lb-ctl run stops (SIGTERM; --detach-on-exit detaches eth0)");
    daemon.stop()?;
    let total = traffic.reqs.len();
    if failed_after > 0 || wrong > 0 {
        bail!(
            "after real-server-1 was marked down, {failed_after} requests failed and {wrong} went \
             elsewhere than real-server-2 ({by_after:?})"
        );
    }
    if failed_back > 0 || !by_back.contains_key(&rs1.name) {
        bail!(
            "after real-server-1 came back: {failed_back} requests failed; answered by \
             {by_back:?} (real-server-1 should be among them)"
        );
    }
    let after: usize = by_after.values().sum();
    note(&format!(
        "{total} requests: {lost} failed while real-server-1 was dead and not yet detected, \
         then\n{after} of {after} answered by real-server-2 until it was back, then both again \
         ({} / {} after).",
        by_back.get(&rs1.name).copied().unwrap_or(0),
        by_back.get(&rs2.name).copied().unwrap_or(0),
    ));
    summary.add(format!(
        "part 2  health check: real-server-1 marked down {} ms after its death (interval x \
         retries = {} ms);\n        {lost} requests failed before that, 0 after ({after} \
         answered by real-server-2); back up {} ms after its restart",
        took.as_millis(),
        nominal.as_millis(),
        (back - restarted).as_millis()
    ));
    Ok(())
}
