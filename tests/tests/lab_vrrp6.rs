//! End to end: VRRP v3 over IPv6 (RFC 5798) between the two directors of the namespace lab
//! (`lb_tests::lab`; `docs/lab.md` has the rules kept here), each running `lb-ctl run` (XDP in
//! generic mode, no services) with one IPv6 instance, priorities 150 and 100, 200 ms adverts.
//!
//! What is observed: which director holds the VIP (`ip -6 addr`), the client's neighbour
//! entry for it (`ip -6 neigh`: MAC and state), and `lb-ctl list` on each director. The
//! client sends one UDP datagram to the VIP at the start, so that it has a neighbour entry
//! (resolved by solicitation: REACHABLE, the master's MAC); afterwards it sends nothing, so
//! when its entry later shows another MAC in state STALE, that came from the new master's
//! unsolicited neighbour advertisement (override set, solicited clear), not from an answer
//! to a solicitation of its own (which would leave it REACHABLE).
//!
//! keepalived 2.2.7 (Debian) is the other peer in [`keepalived_master_lbctl_backup`] (its
//! IPv6 adverts must pass our checks, no errors counted, and its master must be followed)
//! and [`lbctl_master_keepalived_backup`] (ours must pass its checks: it stays backup).
//!
//! Every failover is measured from the event (link pulled or plugged) to the VIP on the new
//! master and to the client's entry moving, and printed (`FAILOVER6 ...`). Every lab host has
//! IPv6 and its address of fd00:58::/64 already; the VRRP VIP is one of that prefix that no
//! other part of the lab uses, so it is on the client's link. Everything is dropped at the
//! end, also on failure: the daemons, the `lb-ctl` pins, then the lab.

use std::{
    net::{Ipv6Addr, SocketAddrV6, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    daemon::Daemon,
    keepalived::Keepalived,
    lab::{self, Host, Lab, LabSpec, parse_mac},
    lbctl::LbCtl,
};

/// The instance's virtual address (in the lab's fd00:58::/64).
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 1, 0x133);
/// Slack on top of a protocol bound for polling and a loaded machine.
const SLACK: Duration = Duration::from_millis(700);
const INTERVAL: Duration = Duration::from_millis(200);

/// Master_Down_Interval for `priority` at [`INTERVAL`].
fn mdi(priority: u32) -> Duration {
    INTERVAL * 3 + INTERVAL * (256 - priority) / 256
}

fn vrrp6_yaml(priority: u8) -> String {
    format!(
        "services: []\nvrrp:\n  - name: VI_6\n    interface: eth0\n    virtual_router_id: 61\n    \
         priority: {priority}\n    advert_interval: 200ms\n    virtual_addresses: [{VIP6}/128]\n    \
         garp_count: 3\n    garp_delay: 100ms\n"
    )
}

/// The lab: two directors, one real server (unused), the client; waits until the link-local
/// address of the client's and each director's `eth0` (the source of VRRP adverts and of
/// neighbour advertisements) is there and usable.
fn lab() -> Lab {
    let lab = Lab::build(&LabSpec {
        directors: 2,
        servers: 1,
        start_servers: false,
        pass_through: false,
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    for host in [lab.client(), lab.director(0), lab.director(1)] {
        assert!(
            lab::wait_until(Duration::from_secs(5), || link_local_ready(host)),
            "{}: no usable IPv6 link-local address within 5 s",
            host.name
        );
    }
    lab
}

fn link_local_ready(host: &Host) -> bool {
    host.exec_ok(&[
        "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
    ])
    .is_ok_and(|out| out.contains("fe80::") && !out.contains("tentative"))
}

fn has_vip6(host: &Host) -> bool {
    let out = host
        .exec_ok(&["ip", "-6", "-o", "addr", "show", "dev", "eth0"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    out.contains(&format!("inet6 {VIP6}/128"))
}

/// The client's neighbour entry for the VIP: MAC and state (`REACHABLE`, `STALE`, ...).
fn client_entry(lab: &Lab) -> Option<([u8; 6], String)> {
    let out = lab
        .client()
        .exec_ok(&[
            "ip",
            "-6",
            "neigh",
            "show",
            &VIP6.to_string(),
            "dev",
            "eth0",
        ])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let words: Vec<&str> = out.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "lladdr")?;
    let mac = parse_mac(words.get(i + 1)?)?;
    Some((mac, words.last()?.to_string()))
}

/// One UDP datagram from the client to the VIP (port 9, discard): makes the client solicit
/// the VIP's MAC.
fn poke_vip(lab: &Lab) {
    lab.client()
        .run_in(|| {
            let s = UdpSocket::bind("[::]:0")?;
            s.send_to(b"x", SocketAddrV6::new(VIP6, 9, 0, 0))?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("sending to the VIP: {e:#}"));
}

/// Asserts over `period` that `master` holds the VIP and `backup` does not.
fn only_master_holds_vip(master: &Host, backup: &Host, period: Duration) {
    let start = Instant::now();
    while start.elapsed() < period {
        assert!(
            !has_vip6(backup),
            "split brain: {} holds the VIP",
            backup.name
        );
        assert!(has_vip6(master), "{} lost the VIP", master.name);
        thread::sleep(Duration::from_millis(50));
    }
}

/// The `VRRP VI_6: ...` line of `lb-ctl list`.
fn list_line(ctl: &LbCtl) -> String {
    let list = ctl.list().unwrap_or_else(|e| panic!("{e:#}"));
    list.lines()
        .find(|l| l.starts_with("VRRP VI_6: "))
        .unwrap_or_else(|| panic!("no VRRP line in:\n{list}"))
        .to_string()
}

/// The link-local address of `host`'s eth0.
fn link_local(host: &Host) -> String {
    let out = host
        .exec_ok(&[
            "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
        ])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let word = out
        .split_whitespace()
        .find(|w| w.starts_with("fe80::"))
        .unwrap_or_else(|| panic!("{}: no link-local address in {out}", host.name));
    word.split('/').next().unwrap_or(word).to_string()
}

/// Polls (every 20 ms, at most `limit`) after `event` until `to` holds the VIP and `from`
/// does not, then until the client's entry shows `to`'s MAC; returns both delays and the
/// entry's state at that moment.
fn move_vip(
    lab: &Lab,
    from: &Host,
    to: &Host,
    limit: Duration,
    event: impl FnOnce(),
) -> (Duration, Duration, String) {
    event();
    let start = Instant::now();
    let mut vip_at = None;
    loop {
        if vip_at.is_none() && has_vip6(to) && !has_vip6(from) {
            vip_at = Some(start.elapsed());
        }
        if let Some(vip) = vip_at
            && let Some((mac, state)) = client_entry(lab)
            && mac == to.mac
        {
            return (vip, start.elapsed(), state);
        }
        assert!(
            start.elapsed() < limit,
            "within {limit:?}: {} holds the VIP: {}, {} holds it: {}; the client's entry: {:?}",
            to.name,
            has_vip6(to),
            from.name,
            has_vip6(from),
            client_entry(lab)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// An `lb-ctl` for each director (its pins and files removed when dropped: before the lab).
fn ctls(lab: &Lab) -> Vec<LbCtl> {
    (lab.directors().iter())
        .map(|d| LbCtl::new(lab, d).unwrap_or_else(|e| panic!("{e:#}")))
        .collect()
}

/// `lb-ctl run` on `director` with the instance at `priority` (XDP in generic mode).
fn run_lbctl(ctl: &LbCtl, director: &Host, priority: u8) -> Daemon {
    let file = ctl
        .write_file(&vrrp6_yaml(priority))
        .unwrap_or_else(|e| panic!("{e:#}"));
    Daemon::start(
        ctl,
        director,
        &file,
        &["--mode", "generic", "--detach-on-exit"],
    )
}

/// keepalived's equivalent of [`vrrp6_yaml`]: the instance is IPv6 (so version 3) because its
/// virtual address is.
fn keepalived6_conf(name: &str, priority: u8) -> String {
    format!(
        "global_defs {{\n    router_id {name}\n    vrrp_version 3\n    \
         vrrp_garp_master_repeat 3\n    vrrp_garp_master_delay 1\n}}\n\
         vrrp_instance VI_6 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 61\n    \
         priority {priority}\n    advert_int 0.2\n    virtual_ipaddress {{\n        \
         {VIP6}/128 dev eth0\n    }}\n}}\n"
    )
}

/// The client resolves the VIP (one datagram): `master`'s MAC.
fn client_resolves_to(lab: &Lab, master: &Host) {
    poke_vip(lab);
    assert!(
        lab::wait_until(Duration::from_secs(3), || client_entry(lab)
            .is_some_and(|(mac, _)| mac == master.mac)),
        "the client did not resolve the VIP to {}: {:?}",
        master.name,
        client_entry(lab)
    );
}

/// `d1` (priority 150) is master: pulls its cable (`d2`, 100, must take over within its
/// master down interval and move the client by an unsolicited advert), then plugs it back
/// (`d1` must preempt and move the client back). `what` names the pair in the figures.
fn failover_and_preemption(lab: &Lab, d1: &Host, d2: &Host, what: &str) {
    let bound = mdi(100) + SLACK;
    let (vip, neigh, state) = move_vip(lab, d1, d2, bound + Duration::from_secs(5), || {
        lab.set_link(d1, false).unwrap_or_else(|e| panic!("{e:#}"))
    });
    eprintln!(
        "FAILOVER6 {what}, master's link down: director-2 held the VIP after {} ms, the \
         client's entry moved to its MAC after {} ms ({state}; bound {} ms)",
        vip.as_millis(),
        neigh.as_millis(),
        bound.as_millis()
    );
    assert!(
        vip <= bound,
        "the VIP moved after {vip:?}, more than {bound:?}"
    );
    assert!(
        neigh <= bound,
        "the entry moved after {neigh:?}, more than {bound:?}"
    );
    assert_eq!(
        state, "STALE",
        "an unsolicited advert leaves the entry STALE; REACHABLE means the client asked"
    );
    assert!(lab::wait_until(Duration::from_secs(1), || !has_vip6(d1)));

    // Plugged back in: director-1 (150) preempts. The bound leaves room for duplicate
    // address detection of its link-local address (about a second) if the kernel runs it
    // again when the carrier returns.
    let bound = mdi(150) + Duration::from_secs(2);
    let (vip, neigh, state) = move_vip(lab, d2, d1, bound + Duration::from_secs(5), || {
        lab.set_link(d1, true).unwrap_or_else(|e| panic!("{e:#}"))
    });
    eprintln!(
        "FAILOVER6 {what}, preemption after link up: director-1 held the VIP after {} ms, the \
         client's entry moved to its MAC after {} ms ({state}; bound {} ms)",
        vip.as_millis(),
        neigh.as_millis(),
        bound.as_millis()
    );
    assert!(vip <= bound, "preemption took {vip:?}, more than {bound:?}");
    assert!(
        neigh <= bound,
        "the entry moved after {neigh:?}, more than {bound:?}"
    );
    assert_eq!(state, "STALE");
    only_master_holds_vip(d1, d2, Duration::from_millis(600));
}

#[test]
fn ipv6_failover_with_unsolicited_neighbour_adverts_and_preemption() {
    let lab = lab();
    let (d1, d2) = (lab.director(0), lab.director(1));
    let ctls = ctls(&lab);
    let daemons = vec![run_lbctl(&ctls[0], d1, 150), run_lbctl(&ctls[1], d2, 100)];

    // Both start as backup; director-1 (150) takes over after its master down interval.
    assert!(
        lab::wait_until(Duration::from_secs(5), || has_vip6(d1) && !has_vip6(d2)),
        "director-1 should hold the IPv6 VIP alone"
    );
    only_master_holds_vip(d1, d2, Duration::from_secs(1));
    // Elected over IPv6: director-2 names director-1's link-local address as the master.
    let ll1 = link_local(d1);
    let want =
        |state: &str, master: &str| format!("VRRP VI_6: {state} (master {master}), adverts sent ");
    assert!(
        lab::wait_until(Duration::from_secs(3), || {
            list_line(&ctls[0]).starts_with(&want("master", &ll1))
                && list_line(&ctls[1]).starts_with(&want("backup", &ll1))
        }),
        "list: {:?} / {:?}",
        list_line(&ctls[0]),
        list_line(&ctls[1])
    );
    for ctl in &ctls {
        let line = list_line(ctl);
        assert!(
            line.ends_with(&format!(", virtual addresses {VIP6}/128")),
            "{line}"
        );
        assert!(line.contains(", errors 0"), "{line}");
    }

    client_resolves_to(&lab, d1);
    failover_and_preemption(&lab, d1, d2, "lb-ctl 150 / lb-ctl 100");

    for mut d in daemons {
        d.terminate();
    }
    drop(ctls);
}

/// keepalived master (150) on director-1, `lb-ctl run` backup (100) on director-2: ours
/// accepts keepalived's IPv6 adverts (no errors) and names its link-local address as the
/// master, takes over when its link goes down, and yields when it preempts.
#[test]
fn keepalived_master_lbctl_backup() {
    let lab = lab();
    let (d1, d2) = (lab.director(0), lab.director(1));
    // director-1's LbCtl only lends its file directory (removed with it) to keepalived.
    let ctls = ctls(&lab);
    let ka = Keepalived::start(
        ctls[0].files_dir(),
        d1,
        &keepalived6_conf("director-1", 150),
    );
    let mut daemon = run_lbctl(&ctls[1], d2, 100);
    assert!(
        lab::wait_until(Duration::from_secs(10), || has_vip6(d1) && !has_vip6(d2)),
        "keepalived on director-1 should hold the IPv6 VIP alone"
    );
    only_master_holds_vip(d1, d2, Duration::from_secs(1));
    let ll1 = link_local(d1);
    assert!(
        lab::wait_until(Duration::from_secs(3), || list_line(&ctls[1]).starts_with(
            &format!("VRRP VI_6: backup (master {ll1}), adverts sent ")
        )),
        "{}",
        list_line(&ctls[1])
    );
    let line = list_line(&ctls[1]);
    assert!(
        line.contains(", errors 0"),
        "keepalived's adverts were refused: {line}"
    );
    assert!(
        !daemon
            .lines()
            .iter()
            .any(|l| l.contains("invalid VRRP packet")),
        "keepalived's adverts were refused:\n{}",
        daemon.lines().join("\n")
    );
    client_resolves_to(&lab, d1);
    failover_and_preemption(&lab, d1, d2, "keepalived 150 / lb-ctl 100");
    daemon.terminate();
    drop(ka);
    drop(ctls);
}

/// `lb-ctl run` master (150) on director-1, keepalived backup (100) on director-2: keepalived
/// accepts our IPv6 adverts (it never claims the VIP while they come), and takes over when ours
/// stops gracefully (priority 0), announcing the VIP to the client.
#[test]
fn lbctl_master_keepalived_backup() {
    let lab = lab();
    let (d1, d2) = (lab.director(0), lab.director(1));
    let ctls = ctls(&lab);
    let mut daemon = run_lbctl(&ctls[0], d1, 150);
    assert!(
        lab::wait_until(Duration::from_secs(5), || has_vip6(d1)),
        "lb-ctl on director-1 should become master"
    );
    let ka = Keepalived::start(
        ctls[1].files_dir(),
        d2,
        &keepalived6_conf("director-2", 100),
    );
    // Five times keepalived's master down interval: it would have claimed the VIP by then
    // had it refused our adverts.
    only_master_holds_vip(d1, d2, Duration::from_secs(4));
    client_resolves_to(&lab, d1);

    let bound = INTERVAL + SLACK;
    let (vip, neigh, state) = move_vip(&lab, d1, d2, bound + Duration::from_secs(5), || {
        daemon.terminate();
    });
    eprintln!(
        "FAILOVER6 lb-ctl 150 / keepalived 100, graceful stop: keepalived held the VIP after \
         {} ms, the client's entry moved to its MAC after {} ms ({state}; bound {} ms)",
        vip.as_millis(),
        neigh.as_millis(),
        bound.as_millis()
    );
    assert!(
        vip <= bound,
        "the VIP moved after {vip:?}, more than {bound:?}"
    );
    assert!(
        neigh <= bound,
        "the entry moved after {neigh:?}, more than {bound:?}"
    );
    assert_eq!(state, "STALE");
    drop(ka);
    drop(ctls);
}
