//! Part 3: two directors share the VIP with VRRP, both running `lb-ctl run` with a `vrrp:`
//! block (`examples/vrrp-director-{1,2}.yaml`, priorities 150/100, v3 at 200 ms). The client's
//! requests go on while director-1's cable is pulled: the gap until director-2 serves and the
//! requests that failed meanwhile are measured; then it is plugged back in and director-1
//! takes the VIP back (preemption), measured the same way.

use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use lb_ctl::config::{Config, VrrpConfig};
use lb_tests::lab::{Host, Lab, http_get};

use crate::{
    Args, Lab2, Summary, rel,
    support::{
        Daemon, Req, Traffic, director_of, has_vip, lb_ctl, note, section, show, step, tally,
    },
};

/// Deadline of one request: short, so that the gap is measured finely.
const TIMEOUT: Duration = Duration::from_millis(300);
/// One request every this long (about 30 a second while they succeed).
const PACE: Duration = Duration::from_millis(30);
/// Most requests this part sends.
const CAP: usize = 2000;
/// How long the traffic runs before and after each event.
const SETTLE: Duration = Duration::from_millis(1500);
/// On top of the protocol's bounds: the request cadence, a loaded machine.
const SLACK: Duration = Duration::from_millis(700);
/// A failover or preemption this much later than its bound is a failure of the demo.
const GRACE: Duration = Duration::from_secs(3);

/// Master_Down_Interval (RFC 5798): 3 x interval + skew, skew = (256 - priority) / 256 x
/// interval.
fn mdi(c: &VrrpConfig) -> Duration {
    c.advert_interval * 3 + c.advert_interval * (256 - u32::from(c.priority)) / 256
}

fn load(file: &Path) -> Result<VrrpConfig> {
    let config: Config = lb_ctl::config::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    match config.vrrp.into_iter().next() {
        Some(v) => Ok(v),
        None => bail!("{} has no `vrrp:` instance", file.display()),
    }
}

pub fn run(args: &Args, l2: &mut Lab2, summary: &mut Summary) -> Result<()> {
    let files = [
        args.examples.join("vrrp-director-1.yaml"),
        args.examples.join("vrrp-director-2.yaml"),
    ];
    let (c1, c2) = (load(&files[0])?, load(&files[1])?);
    section(
        "Part 3 of 5: two directors, VRRP (lb-ctl run with a `vrrp:` block, as keepalived)",
        &format!(
            "Both directors run `lb-ctl run`; the VRRP master holds the VIP on its eth0 and \
             forwards, the\nbackup health-checks and listens. VRRP v{} adverts every {:?}; \
             priorities {} / {}. We pull\ndirector-1's cable while the client sends requests \
             (each with a {} ms deadline): director-2\nmust take over within 3 x interval + \
             skew = {} ms; then we plug it back in and director-1\ntakes the VIP back \
             (preempt, after preempt_delay {:?}).",
            c1.version,
            c1.advert_interval,
            c1.priority,
            c2.priority,
            TIMEOUT.as_millis(),
            mdi(&c2).as_millis(),
            c1.preempt_delay,
        ),
    );
    let pins = [l2.pin_dir(0), l2.pin_dir(1)];
    let lab = &l2.lab;
    let vip = lab.vip();
    let (d1, d2) = (lab.director(0), lab.director(1));

    step("remove the static VIP from director-1: from now on VRRP decides who holds it");
    lab.del_vip(d1)?;
    note(&format!("ip -n {} addr del {vip}/32 dev eth0", d1.netns));

    step(&format!(
        "on director-N: lb-ctl run -f {} --iface eth0 --detach-on-exit",
        rel(&files[0]).replace("director-1", "director-N")
    ));
    note("(their logs follow, as `director-N | LEVEL message`)");
    let v1 = Daemon::start(&args.lb_ctl, d1, &pins[0], &files[0])?;
    let v2 = Daemon::start(&args.lb_ctl, d2, &pins[1], &files[1])?;
    // Both start as backup; director-1's master-down timer runs out first.
    let elect = mdi(&c1) + Duration::from_secs(5);
    if v1.wait_log(0, elect, |l| l.contains("to=master")).is_none() {
        bail!("director-1 did not become VRRP master within {elect:?}");
    }
    let lists = || -> Result<()> {
        for (d, pin) in [(d1, &pins[0]), (d2, &pins[1])] {
            println!("    -- lb-ctl list on {}", d.name);
            show(&lb_ctl(&args.lb_ctl, &d.netns, pin, &["list"])?);
        }
        Ok(())
    };

    step("director-1 is master: requests from the client to the VIP (one line a second)");
    let reachable = lb_tests::lab::wait_until(Duration::from_secs(5), || {
        matches!(http_get(lab.client(), vip, 80, "/", TIMEOUT), Ok((200, _)))
            && lab.client().neighbour_mac(vip).ok().flatten() == Some(d1.mac)
    });
    if !reachable {
        bail!("the client's requests did not reach the VIP through director-1 within 5 s");
    }
    let mut traffic = Traffic::new(lab, TIMEOUT, PACE, CAP);
    let mut status = || where_is(lab, vip);
    let t0 = Instant::now();
    traffic.run_for(SETTLE, &mut status)?;
    let (failed, _) = tally(traffic.since(t0));
    if failed > 0 {
        bail!("{failed} requests failed while director-1 was master");
    }
    lists()?;

    // Failover.
    step("pull director-1's cable (its switch port goes down); the requests go on");
    let mark2 = v2.mark();
    lab.set_link(d1, false)?;
    let down = Instant::now();
    let bound = mdi(&c2) + SLACK;
    if !traffic.run(
        bound + GRACE,
        |reqs| served_via(lab, vip, reqs, d2, down),
        &mut status,
    )? {
        let (failed, _) = tally(traffic.since(down));
        bail!(
            "no failover: director-2 did not serve the VIP within {} ms of director-1's link \
             going down ({failed} requests failed)",
            (bound + GRACE).as_millis()
        );
    }
    let gap = down.elapsed();
    let (lost, _) = tally(traffic.since(down));
    let sent = traffic.since(down).count();
    let took = took_vip(&v2, mark2, down);
    note(&format!(
        "FAILOVER: director-2 took the VIP {} ms after director-1's link went down (3 x {} ms + \
         skew\n= {} ms after its last advert) and served the client's requests after {} ms (bound {} \
         ms);\n{lost} of {sent} requests failed in the gap (each gave up after {} ms).",
        took,
        c2.advert_interval.as_millis(),
        mdi(&c2).as_millis(),
        gap.as_millis(),
        bound.as_millis(),
        TIMEOUT.as_millis()
    ));
    if gap > bound {
        note("(slower than the bound: a loaded machine)");
    }
    step("director-2 is master: no request may fail now");
    let t1 = Instant::now();
    traffic.run_for(SETTLE, &mut status)?;
    let (failed, _) = tally(traffic.since(t1));
    if failed > 0 {
        bail!("{failed} requests failed after director-2 took over");
    }
    note(
        "director-1, without its link, is in fault and gave the VIP up; its health checks \
         cannot\nreach the real servers either, so it marked them down (its log above).",
    );
    lists()?;

    // Preemption.
    step("plug director-1's cable back in: it has the higher priority and preempts");
    let mark1 = v1.mark();
    lab.set_link(d1, true)?;
    let up = Instant::now();
    let bound_back = c1.preempt_delay + mdi(&c1) + SLACK;
    if !traffic.run(
        bound_back + GRACE,
        |reqs| served_via(lab, vip, reqs, d1, up),
        &mut status,
    )? {
        bail!(
            "no preemption: director-1 did not serve the VIP again within {} ms of its link \
             coming back",
            (bound_back + GRACE).as_millis()
        );
    }
    let back = up.elapsed();
    let (lost_back, _) = tally(traffic.since(up));
    let sent_back = traffic.since(up).count();
    note(&format!(
        "PREEMPTION: director-1 took the VIP back {} ms after its link came back (preempt_delay \
         {} ms\n+ 3 x {} ms + skew) and served the client's requests after {} ms; {lost_back} \
         of {sent_back}\nrequests failed meanwhile (director-2 forwarded until the client \
         learned director-1's MAC).",
        took_vip(&v1, mark1, up),
        c1.preempt_delay.as_millis(),
        c1.advert_interval.as_millis(),
        back.as_millis()
    ));
    let t2 = Instant::now();
    traffic.run_for(SETTLE, &mut status)?;
    let (failed, by) = tally(traffic.since(t2));
    if failed > 0 {
        bail!("{failed} requests failed after director-1 took the VIP back");
    }
    if !has_vip(d1, vip) || has_vip(d2, vip) {
        bail!("after the preemption director-1 should hold the VIP alone");
    }
    lists()?;

    step("both lb-ctl run stop (SIGTERM): the backup first, then the master gives the VIP up");
    v2.stop()?;
    v1.stop()?;
    if has_vip(d1, vip) || has_vip(d2, vip) {
        bail!("a stopped director still holds the VIP");
    }
    if lost_back > 0 {
        bail!(
            "{lost_back} requests failed while director-1 took the VIP back: with both directors \
             forwarding to the same real servers, the preemption should lose none"
        );
    }
    let total = traffic.reqs.len();
    let by: Vec<String> = by.iter().map(|(s, n)| format!("{s} {n}")).collect();
    note(&format!(
        "{total} requests: {lost} failed in the failover gap, none after it, {lost_back} during \
         the\npreemption; the real servers shared them throughout (last 1.5 s: {}).",
        by.join(", ")
    ));
    summary.add(format!(
        "part 3  VRRP: director-1's link down -> director-2 took the VIP after {} ms and served \
         after {} ms;\n        {lost} of {sent} requests failed in the gap, 0 after; link back \
         -> director-1 preempted after {} ms, {lost_back} failed",
        took,
        gap.as_millis(),
        back.as_millis()
    ));
    Ok(())
}

/// When (ms after `since`) `daemon` logged adding the virtual addresses after line `mark`
/// (`?` if it did not).
fn took_vip(daemon: &Daemon, mark: usize, since: Instant) -> String {
    daemon
        .find(mark, |l| l.contains("virtual addresses added"))
        .map_or("?".into(), |(t, _)| {
            t.saturating_duration_since(since).as_millis().to_string()
        })
}

/// Whether the last request (sent at or after `since`) was answered and the client sends to
/// the VIP through `director` (its ARP entry for the VIP has `director`'s MAC).
fn served_via(lab: &Lab, vip: Ipv4Addr, reqs: &[Req], director: &Host, since: Instant) -> bool {
    reqs.last()
        .is_some_and(|r| r.at >= since && r.answer.is_ok())
        && lab.client().neighbour_mac(vip).ok().flatten() == Some(director.mac)
}

/// `VIP on director-1; client -> director-1`.
fn where_is(lab: &Lab, vip: Ipv4Addr) -> String {
    let holders: Vec<&str> = lab
        .directors()
        .iter()
        .filter(|d| has_vip(d, vip))
        .map(|d| d.name.as_str())
        .collect();
    let holders = if holders.is_empty() {
        "nobody".to_string()
    } else {
        holders.join(" + ")
    };
    let mac = lab.client().neighbour_mac(vip).ok().flatten();
    format!(
        "| VIP on {holders}; client's ARP -> {}",
        director_of(lab, mac)
    )
}
