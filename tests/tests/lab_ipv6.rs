//! End to end over IPv6 in the namespace lab (`lb_tests::lab`, rules in docs/lab.md): what a
//! real server needs for IPv6 direct routing (the VIP6 on `lo`, no sysctl), HTTP through the
//! director with `lb-ctl run` (rr over two servers, counted on the IPv6 service), and
//! persistence by /64.
//!
//! Each test builds its own lab and drops it at the end, also on failure; all traffic is a
//! bounded number of requests with deadlines. Without root, BPF or namespaces they fail saying
//! what is missing. (A health-checked IPv6 backend is in lab_health.rs, fragments in
//! lab_fragments.rs, ICMP errors in lab_icmp.rs.)

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use lb_tests::{
    env::Env,
    lab::{self, Capture, HttpConn, Lab, Role, udp_request},
    lab_spec,
    services::{self, Service},
    stats::{backend, num, service},
};

/// Deadline of one request.
const T: Duration = Duration::from_secs(2);
/// How the service file writes a persistence granularity of /64 for an IPv6 service.
const NETMASK_64: &str = "64";

fn ips(hosts: &[&lab::Host]) -> Vec<IpAddr> {
    hosts.iter().map(|h| IpAddr::V6(h.addr6)).collect()
}

/// `lb-ctl run` on director-1 with `yaml`'s services, in a new lab with two real servers.
fn daemon_env(yaml: impl FnOnce(&Lab) -> String) -> Env {
    Env::running(&lab_spec!(), yaml, &[])
}

/// A GET / from `src` (one of the client's addresses; `None`: the kernel picks) to the IPv6
/// VIP on a new connection; the answering server's name.
fn try_get_from(env: &Env, src: Option<Ipv6Addr>) -> anyhow::Result<String> {
    let target = SocketAddr::new(env.lab.vip6().into(), 80);
    let mut conn = HttpConn::connect_from(env.client(), src.map(IpAddr::V6), target, T)?;
    let (status, body) = conn.get("/")?;
    anyhow::ensure!(status == 200, "status {status}: {body}");
    Ok(body.trim().to_owned())
}

/// [`try_get_from`], panicking on failure.
fn get_from(env: &Env, src: Option<Ipv6Addr>) -> String {
    try_get_from(env, src).unwrap_or_else(|e| panic!("GET / from {src:?} to the VIP6: {e:#}"))
}

/// The solicited-node multicast group of `a` (RFC 4291): ff02::1:ffXX:XXXX, as `ip maddr` prints it.
fn addr6_group(a: Ipv6Addr) -> String {
    let o = a.octets();
    let low = u16::from_be_bytes([o[14], o[15]]);
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), low).to_string()
}

/// Linux answers a neighbour solicitation only for an address of the interface it arrives on,
/// so real servers holding the VIP6 on `lo` stay silent without any sysctl (IPv4 needs
/// `arp_ignore`/`arp_announce` for the same). Shown on the wire: with the VIP6 only on the real
/// servers, the client's solicitations reach them and get no answer; with it on the director
/// too, the client resolves it to the director's MAC.
#[test]
fn real_servers_leave_neighbour_solicitations_for_the_vip6_unanswered() {
    let lab = Lab::build(&lab_spec!()).unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    let (client, d1, rs1) = (lab.client(), lab.director(0), lab.server(0));
    let vip6 = lab.vip6();
    // The VIP6's solicited-node group (ff02::1:ff00:133) is joined on lo, not on eth0.
    let group = addr6_group(vip6);
    for s in lab.servers() {
        let groups = s
            .exec_ok(&["ip", "-6", "maddr", "show", "dev", "eth0"])
            .unwrap_or_else(|e| panic!("{e:#}"));
        let own = addr6_group(s.addr6);
        assert!(
            groups.contains(&own),
            "{} has not joined {own}: {groups}",
            s.name
        );
        assert!(
            !groups.contains(&group),
            "{} joined {group} on eth0: {groups}",
            s.name
        );
        let sysctls = s
            .exec_ok(&["sh", "-c", "cat /proc/sys/net/ipv6/conf/*/proxy_ndp"])
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            sysctls.lines().all(|l| l.trim() == "0"),
            "proxy_ndp: {sysctls}"
        );
    }
    lab.del_vip(d1).unwrap_or_else(|e| panic!("{e:#}"));
    // Neighbour solicitations (135) and advertisements (136) on real-server-1's link.
    let nd = "icmp6 and (ip6[40] == 135 or ip6[40] == 136)";
    let capture = Capture::start(rs1, "eth0", nd).unwrap_or_else(|e| panic!("{e:#}"));

    let unanswered = udp_request(client, vip6, 5353, b"anyone?", Duration::from_millis(3500));
    let lines = capture.stop().unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("on real-server-1's eth0:\n{}", lines.join("\n"));
    assert!(
        unanswered.is_err(),
        "something answered for the VIP6 without a director holding it"
    );
    let solicitations = lines
        .iter()
        .filter(|l| l.contains(&format!("neighbor solicitation, who has {vip6}")))
        .count();
    assert!(
        solicitations >= 2,
        "the client's solicitations for {vip6} did not reach real-server-1: {lines:#?}"
    );
    let advertised: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!("neighbor advertisement, tgt is {vip6}")))
        .collect();
    assert!(
        advertised.is_empty(),
        "someone advertised the VIP6: {advertised:#?}"
    );
    assert_eq!(client.neighbour_mac(vip6).unwrap(), None);
    let entry = client
        .exec_ok(&["ip", "-6", "neigh", "show", &vip6.to_string()])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        entry.contains("FAILED") || entry.contains("INCOMPLETE"),
        "the client's entry for {vip6}: {entry:?}"
    );

    // The director takes the VIP6: the client resolves it to the director's MAC.
    lab.add_vip(d1).unwrap_or_else(|e| panic!("{e:#}"));
    client
        .flush_neighbour(vip6)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let _ = udp_request(client, vip6, 5353, b"director?", Duration::from_millis(500));
    assert!(
        lab::wait_until(T, || client.neighbour_mac(vip6).ok().flatten()
            == Some(d1.mac)),
        "the client did not resolve {vip6} to director-1's MAC {}",
        d1.mac_string()
    );
    lab.close().unwrap_or_else(|e| panic!("{e:#}"));
}

/// HTTP over IPv6 through the director (`lb-ctl run`, rr over two servers): 20 of 20 requests
/// answered, 10 by each server, none failed, and `stats --json` counts them on the IPv6
/// service and its backends.
#[test]
fn http_over_ipv6_round_robin_through_the_director() {
    let env = daemon_env(|lab| {
        services::file(&[Service::new(
            "web6",
            lab.vip6(),
            80,
            &ips(&[lab.server(0), lab.server(1)]),
        )])
    });
    assert_eq!(env.client().role, Role::Client);
    let before: Vec<u64> = env.lab.servers().iter().map(|s| env.count(s)).collect();
    let mut answers = Vec::new();
    let mut failures = Vec::new();
    for k in 0..20 {
        match try_get_from(&env, None) {
            Ok(name) => answers.push(name),
            Err(e) => failures.push(format!("request {k}: {e:#}")),
        }
    }
    let per_server = |name: &str| answers.iter().filter(|a| *a == name).count();
    eprintln!(
        "20 requests to [{}]:80: {} answered ({} by real-server-1, {} by real-server-2), \
         failed: {failures:?}",
        env.lab.vip6(),
        answers.len(),
        per_server("real-server-1"),
        per_server("real-server-2")
    );
    assert!(failures.is_empty(), "failed: {failures:#?}");
    assert_eq!(per_server("real-server-1"), 10, "{answers:?}");
    assert_eq!(per_server("real-server-2"), 10, "{answers:?}");
    // rr alternates.
    assert!(answers.windows(2).all(|w| w[0] != w[1]), "{answers:?}");
    // The servers themselves counted them.
    for (s, b) in env.lab.servers().iter().zip(before) {
        assert_eq!(env.count(s) - b, 10, "{}", s.name);
    }
    let stats = env.stats();
    let web6 = service(&stats, "web6");
    eprintln!("web6 in stats --json: {web6:#}");
    assert_eq!(web6["vip"], env.lab.vip6().to_string(), "{web6:#}");
    assert_eq!(num(web6, "connections"), 20, "{web6:#}");
    assert!(num(web6, "packets") >= 20 * 4, "{web6:#}");
    for s in env.lab.servers() {
        assert_eq!(num(backend(web6, s.addr6), "connections"), 10, "{}", s.name);
    }
    // The listings in ipvsadm's IPv6 form: the service and its backends, then every one of
    // the 20 connections from the client's address to the VIP, 10 at each server.
    let vip = format!("[{}]:80", env.lab.vip6());
    let listed = env.list();
    eprintln!("lb-ctl list:\n{listed}");
    assert!(listed.contains(&format!("TCP  {vip}")), "{listed}");
    for s in env.lab.servers() {
        assert!(listed.contains(&format!("-> [{}]:80", s.addr6)), "{listed}");
    }
    let conns = env
        .ctl
        .run_ok(&["list", "--connections"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let rows: Vec<&str> = conns.lines().filter(|l| l.starts_with("TCP ")).collect();
    assert_eq!(rows.len(), 20, "list --connections:\n{conns}");
    let client = format!("[{}]:", env.client().addr6);
    for s in env.lab.servers() {
        let to_server = format!("[{}]:80", s.addr6);
        let n = rows
            .iter()
            .filter(|r| r.contains(&client) && r.contains(&vip) && r.ends_with(&to_server))
            .count();
        assert_eq!(n, 10, "{} in list --connections:\n{conns}", s.name);
    }
}

/// Persistence by /64 over IPv6: every connection from four addresses of the client's /64
/// goes to one server; the client's address in a second /64 is a client network of its own,
/// which also sticks to one server. Without persistence rr alternates for the same clients.
#[test]
fn persistence_by_64_over_ipv6() {
    let second: Ipv6Addr = "fd00:59::100".parse().unwrap_or_else(|e| panic!("{e}"));
    let same_64: Vec<Ipv6Addr> = (0x100..0x104)
        .map(|last| Ipv6Addr::from((u128::from(lab::CLIENT_ADDR6) & !0xffff) | last))
        .collect();
    let web6 = |lab: &Lab, persistence: bool| {
        let mut s = Service::new(
            "web6",
            lab.vip6(),
            80,
            &ips(&[lab.server(0), lab.server(1)]),
        );
        if persistence {
            s.extra =
                format!("    persistence:\n      timeout: 60s\n      netmask: {NETMASK_64}\n");
        }
        services::file(&[s])
    };
    let env = daemon_env(|lab| web6(lab, true));
    let client = env.client();
    let mut cmds: Vec<String> = same_64[1..]
        .iter()
        .map(|a| format!("addr add {a}/64 dev eth0 nodad"))
        .collect();
    cmds.push(format!("addr add {second}/64 dev eth0 nodad"));
    client.ip_batch(&cmds).unwrap_or_else(|e| panic!("{e:#}"));
    // The real servers answer the second prefix straight on the link, as DR needs.
    for s in env.lab.servers() {
        s.ip_batch(&["route add fd00:59::/64 dev eth0".to_owned()])
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    let mut first = Vec::new();
    for round in 0..3 {
        for a in &same_64 {
            first.push((round, *a, get_from(&env, Some(*a))));
        }
    }
    let other: Vec<String> = (0..4).map(|_| get_from(&env, Some(second))).collect();
    eprintln!("fd00:58::/64: {first:?}\nfd00:59::/64: {other:?}");
    let sticky = &first[0].2;
    assert!(
        first.iter().all(|(_, _, s)| s == sticky),
        "the /64 of the client went to more than one server: {first:?}"
    );
    assert!(
        other.iter().all(|s| s == &other[0]),
        "the second /64 went to more than one server: {other:?}"
    );

    // The same clients without persistence: rr alternates.
    let file = env.file(&web6(&env.lab, false));
    let mut env = env;
    env.daemon = None;
    env.start_daemon(&file, &[]);
    let plain: Vec<String> = same_64.iter().map(|a| get_from(&env, Some(*a))).collect();
    eprintln!("without persistence: {plain:?}");
    assert!(plain.windows(2).all(|w| w[0] != w[1]), "{plain:?}");
}
