//! Smoke tests of the lab builder (`lb_tests::lab`). They need root, network namespaces and
//! `ethtool`; without them they fail with a message saying what is missing.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use lb_tests::lab::{
    self, Connect, HttpConn, Lab, LabSpec, Proc, http_get, sweep_leftovers, tcp_connect,
    udp_request,
};

const T: Duration = Duration::from_secs(3);

fn spec(directors: usize, servers: usize) -> LabSpec {
    LabSpec {
        directors,
        servers,
        server_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_lab-server"))),
        ..LabSpec::default()
    }
}

/// Serializes the tests that build labs or sweep (`Lab::build` sweeps too), so that the sweep
/// test is the one that sweeps its fake leftover.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn build(spec: &LabSpec) -> Lab {
    Lab::build(spec).unwrap_or_else(|e| panic!("building the lab failed: {e:#}"))
}

fn netns_names() -> Vec<String> {
    match std::fs::read_dir("/run/netns") {
        Ok(dir) => dir
            .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn root_ns_addresses() -> String {
    let out = Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .expect("ip addr show");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that nothing of the lab with `prefix` is left: no namespace, none of `pids`.
fn assert_gone(prefix: &str, pids: &[u32]) {
    let left: Vec<String> = netns_names()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left after drop: {left:?}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} of the lab is still alive after drop"
        );
    }
}

#[test]
fn lab_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Lab>();
    check::<lab::Host>();
}

#[test]
fn one_director_two_servers() {
    let _serial = serial();
    let lab = build(&spec(1, 2));
    let prefix = lab.prefix().to_owned();
    assert!(prefix.starts_with(lab::BASE_PREFIX));
    let client = lab.client();
    let vip = lab.vip();
    assert_eq!(vip, Ipv4Addr::new(192, 168, 58, 133));

    // Nothing of the lab is in the root namespace.
    let root = root_ns_addresses();
    assert!(
        !root.contains("192.168.58.") && !root.contains("fd00:58:"),
        "a lab address showed up in the root namespace"
    );

    // Each real server answers on its RIP with its name, and counts.
    for (i, server) in lab.servers().iter().enumerate() {
        assert_eq!(server.name, format!("real-server-{}", i + 1));
        let (status, body) =
            http_get(client, server.addr, 80, "/", T).expect("GET / on a real server's RIP");
        assert_eq!(status, 200);
        assert_eq!(body, format!("{}\n", server.name));
        assert_eq!(lab.request_count(server).unwrap(), 1, "{}", server.name);

        let reply = udp_request(client, server.addr, 5353, b"hello", T).expect("UDP echo");
        assert_eq!(reply, format!("{} hello", server.name).into_bytes());

        // The same over IPv6, on the RIP6.
        let (status, body) =
            http_get(client, server.addr6, 80, "/", T).expect("GET / on a real server's RIP6");
        assert_eq!((status, body), (200, format!("{}\n", server.name)));
        let reply = udp_request(client, server.addr6, 5353, b"hello6", T).expect("UDP echo v6");
        assert_eq!(reply, format!("{} hello6", server.name).into_bytes());
        assert_eq!(lab.reset_count(server).unwrap(), 2, "{}", server.name);
    }
    assert_eq!(
        lab.server(0).addr6,
        "fd00:58::135".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(client.addr6, lab::CLIENT_ADDR6);
    // Datagrams of any size come back whole: fragmented (4,000 bytes), the largest that still
    // carries the name in front, and the largest UDP datagram (65,507 bytes over IPv4: no room
    // for the name, echoed alone).
    let rs1 = lab.server(0);
    let named = 65_507 - "real-server-1 ".len();
    for (to, size, with_name) in [
        (IpAddr::from(rs1.addr), 4000, true),
        (rs1.addr6.into(), 4000, true),
        (rs1.addr.into(), named, true),
        (rs1.addr.into(), 65_507, false),
        (rs1.addr6.into(), 65_507, true),
    ] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let reply = udp_request(client, to, 5353, &payload, T)
            .unwrap_or_else(|e| panic!("echo of {size} bytes from {to}: {e:#}"));
        let want = if with_name {
            [b"real-server-1 ".as_slice(), &payload].concat()
        } else {
            payload
        };
        assert!(
            reply == want,
            "echo of {size} bytes from {to}: {} bytes back",
            reply.len()
        );
    }
    assert_eq!(lab.vip6(), "fd00:58::133".parse::<Ipv6Addr>().unwrap());
    assert_eq!(lab.server(0).addr, Ipv4Addr::new(192, 168, 58, 135));
    assert_eq!(lab.server(1).addr, Ipv4Addr::new(192, 168, 58, 136));

    // A long-lived connection carries several requests; /hold answers late.
    let rs1 = lab.server(0);
    let mut conn = HttpConn::connect(client, rs1.addr, 80, T).expect("connect");
    for _ in 0..3 {
        assert_eq!(conn.get("/").unwrap(), (200, "real-server-1\n".into()));
    }
    assert_eq!(
        conn.get("/hold?ms=200").unwrap(),
        (200, "real-server-1\n".into())
    );
    let (_, whoami) = conn.get("/whoami").unwrap();
    assert!(
        whoami.starts_with("real-server-1 local=192.168.58.135:80 peer=192.168.58.100:"),
        "{whoami}"
    );
    drop(conn);
    let (_, whoami) = http_get(client, rs1.addr6, 80, "/whoami", T).unwrap();
    assert!(
        whoami.starts_with("real-server-1 local=[fd00:58::135]:80 peer=[fd00:58::100]:"),
        "{whoami}"
    );
    assert_eq!(lab.request_count(rs1).unwrap(), 6);
    assert_eq!(lab.reset_count(rs1).unwrap(), 6);
    assert_eq!(lab.request_count(rs1).unwrap(), 0);

    // The VIP is answered by the director (it has no port 22: RST), and the client learned
    // the director's MAC for it; the real servers (VIP on lo, arp_ignore=1) stayed silent.
    assert_eq!(tcp_connect(client, vip, 22, T).unwrap(), Connect::Refused);
    assert_eq!(
        client.neighbour_mac(vip).unwrap(),
        Some(lab.director(0).mac),
        "the client's neighbour entry for the VIP is not the director's MAC"
    );
    assert_eq!(client.neighbour_mac(rs1.addr).unwrap(), Some(rs1.mac));
    assert_eq!(lab.director(0).mac_string(), "02:00:00:00:00:86");
    // The same for the IPv6 VIP over NDP (lab_ipv6.rs shows the real servers stay silent).
    assert_eq!(
        tcp_connect(client, lab.vip6(), 22, T).unwrap(),
        Connect::Refused
    );
    assert_eq!(
        client.neighbour_mac(lab.vip6()).unwrap(),
        Some(lab.director(0).mac),
        "the client's neighbour entry for the IPv6 VIP is not the director's MAC"
    );

    // Host setup as documented.
    let sysctl = |h: &lab::Host, key: &str| {
        h.exec_ok(&["cat", &format!("/proc/sys/net/ipv4/conf/{key}")])
            .unwrap()
            .trim()
            .to_owned()
    };
    for key in ["all/arp_ignore", "eth0/arp_ignore"] {
        assert_eq!(sysctl(rs1, key), "1", "{key}");
    }
    for key in ["all/arp_announce", "eth0/arp_announce"] {
        assert_eq!(sysctl(rs1, key), "2", "{key}");
    }
    assert_eq!(sysctl(lab.director(0), "eth0/arp_ignore"), "0");
    let ipv6 = client.exec_ok(&["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"]);
    assert_eq!(ipv6.unwrap().trim(), "0", "IPv6 is off in the client");
    let lo = rs1
        .exec_ok(&["ip", "-o", "addr", "show", "dev", "lo"])
        .unwrap();
    assert!(lo.contains("192.168.58.133/32"), "{lo}");
    assert!(lo.contains("fd00:58::133/128"), "{lo}");
    let eth0 = lab
        .director(0)
        .exec_ok(&["ip", "-o", "addr", "show", "dev", "eth0"])
        .unwrap();
    for a in [
        "192.168.58.134/24",
        "192.168.58.133/32",
        "fd00:58::134/64",
        "fd00:58::133/128",
    ] {
        assert!(eth0.contains(a), "{a} not on director-1's eth0: {eth0}");
    }
    // The director's own IPv6 connections (health checks) leave from its DIP6, never from the
    // VIP6, which the real servers would take for their own: the VIP6 is deprecated there.
    let route = lab
        .director(0)
        .exec_ok(&["ip", "-6", "route", "get", &rs1.addr6.to_string()])
        .unwrap();
    assert!(route.contains("src fd00:58::134 "), "{route}");
    let (_, whoami) = http_get(lab.director(0), rs1.addr6, 80, "/whoami", T).unwrap();
    assert!(whoami.contains("peer=[fd00:58::134]:"), "{whoami}");
    assert_eq!(lab.reset_count(rs1).unwrap(), 1);
    let port = lab.switch_port_of(lab.director(0));
    assert_eq!(port, "sw-director-1");
    let features = lab.switch_exec_ok(&["ethtool", "-k", port]).unwrap();
    assert!(features.contains("tx-checksumming: off"), "{features}");
    let features = client.exec_ok(&["ethtool", "-k", "eth0"]).unwrap();
    assert!(features.contains("tx-checksumming: off"), "{features}");
    let link = lab.switch_exec_ok(&["ip", "link", "show", port]).unwrap();
    assert!(link.contains("xdp"), "no XDP program on {port}: {link}");

    // Teardown leaves nothing.
    let mut pids = lab.server_pids();
    assert_eq!(pids.len(), 4, "an HTTP and a UDP server per real server");
    pids.extend(lab.pids_inside().iter().map(|&p| p as u32));
    drop(lab);
    assert_gone(&prefix, &pids);
}

#[test]
fn two_directors_three_servers_and_link_down() {
    let _serial = serial();
    let lab = build(&spec(2, 3));
    let prefix = lab.prefix().to_owned();
    let client = lab.client();
    let d2 = lab.director(1);
    assert_eq!(d2.name, "director-2");
    assert_eq!(d2.addr, Ipv4Addr::new(192, 168, 58, 137));
    let rs3 = lab.server(2);
    assert_eq!(rs3.addr, Ipv4Addr::new(192, 168, 58, 138));
    assert_eq!(rs3.mac, [2, 0, 0, 0, 0, 0x8a]);

    // director-2 has no VIP until given one.
    let addrs = d2.exec_ok(&["ip", "-o", "addr"]).unwrap();
    assert!(!addrs.contains("192.168.58.133"), "{addrs}");
    assert!(!addrs.contains("fd00:58::133"), "{addrs}");
    lab.add_vip(d2).unwrap();
    let addrs = d2.exec_ok(&["ip", "-o", "addr"]).unwrap();
    assert!(addrs.contains("192.168.58.133/32"), "{addrs}");
    assert!(addrs.contains("fd00:58::133/128"), "{addrs}");
    lab.del_vip(d2).unwrap();
    let addrs = d2.exec_ok(&["ip", "-o", "addr"]).unwrap();
    assert!(!addrs.contains("fd00:58::133"), "{addrs}");

    assert_eq!(
        http_get(client, rs3.addr, 80, "/", T).unwrap(),
        (200, "real-server-3\n".into())
    );

    // Pulling the cable cuts the host off; plugging it back in restores it.
    lab.set_link(rs3, false).unwrap();
    assert!(
        lab::wait_until(T, || {
            rs3.exec_ok(&["ip", "link", "show", "eth0"])
                .is_ok_and(|s| s.contains("NO-CARRIER"))
        }),
        "the server's eth0 still has a carrier"
    );
    let down = tcp_connect(client, rs3.addr, 80, Duration::from_millis(500)).unwrap();
    assert_ne!(down, Connect::Established);
    assert_eq!(
        lab.request_count(rs3).unwrap(),
        1,
        "counting works with the link down"
    );
    lab.set_link(rs3, true).unwrap();
    assert!(
        lab::wait_until(Duration::from_secs(5), || lab::can_connect(
            client,
            rs3.addr,
            80,
            Duration::from_millis(500)
        )),
        "the server is not reachable after its link came back"
    );

    // A process started in a host is gone after teardown, guard or not.
    let sleeper = d2.spawn(&["sleep", "30"]).unwrap();
    let sleeper_pid = sleeper.pid();
    std::mem::forget(sleeper);
    let pids = lab.server_pids();
    drop(lab);
    assert_gone(&prefix, &pids);
    // The forgotten guard never reaps it: a zombie has no /proc/PID/ns/net but still a
    // /proc/PID, so look at its state.
    let stat = format!("/proc/{sleeper_pid}/stat");
    assert!(
        lab::wait_until(T, || {
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            state.is_empty() || state.contains(") Z ")
        }),
        "the process spawned in director-2 survived the lab: {}",
        std::fs::read_to_string(&stat).unwrap_or_default()
    );
    // Reap it.
    // SAFETY: waitpid on our own child.
    unsafe { libc::waitpid(sleeper_pid as i32, std::ptr::null_mut(), 0) };
}

/// Deletes the namespace on drop (for namespaces this test makes by hand).
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

#[test]
fn sweep_removes_namespaces_of_dead_runs_only() {
    let _serial = serial();
    // A pid that has just died.
    let mut child = Command::new("true").spawn().expect("spawning true");
    let dead_pid = child.id();
    child.wait().unwrap();

    let dead_ns = format!("{}{dead_pid}-0-switch", lab::BASE_PREFIX);
    let live_ns = format!("{}{}-9999-switch", lab::BASE_PREFIX, std::process::id());
    let _guards = [NsGuard(dead_ns.clone()), NsGuard(live_ns.clone())];
    for ns in [&dead_ns, &live_ns] {
        let out = Command::new("ip")
            .args(["netns", "add", ns])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip netns add {ns} failed (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A process left running inside the dead run's namespace.
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{dead_ns}"))
        .args(["--", "sleep", "30"]);
    let mut sleeper = Proc::spawn(cmd, "sleep in the dead run's namespace").unwrap();
    let ns_id = |path: &str| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
    let want = ns_id(&format!("/run/netns/{dead_ns}"));
    assert!(
        lab::wait_until(T, || ns_id(&format!("/proc/{}/ns/net", sleeper.pid()))
            == want),
        "the sleeper did not enter {dead_ns}"
    );

    let swept = sweep_leftovers().expect("sweep_leftovers");
    eprintln!("swept {swept} namespace(s)");
    let names = netns_names();
    assert!(!names.contains(&dead_ns), "{dead_ns} survived the sweep");
    assert!(
        names.contains(&live_ns),
        "the sweep removed {live_ns} of a live run"
    );
    assert!(
        sleeper.wait_timeout(T).unwrap().is_some(),
        "the process inside the dead run's namespace survived the sweep"
    );
}

/// Removes a directory on drop (what the sweep must leave alone, or failed to remove).
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn sweep_removes_directories_of_dead_runs_only() {
    let _serial = serial();
    let mut child = Command::new("true").spawn().expect("spawning true");
    let dead_pid = child.id();
    child.wait().unwrap();

    // A run's pin directory, lb-ctl's runtime directory of it, and its service-file directory.
    let bpffs = Path::new("/sys/fs/bpf");
    lb_ctl::maps::pins::ensure_bpffs(bpffs).unwrap_or_else(|e| panic!("{e:#}"));
    let dirs_of = |pid: u32, n: u32| -> Vec<PathBuf> {
        let prefix = format!("{}{pid}-{n}", lab::BASE_PREFIX);
        let pins = bpffs.join(&prefix);
        vec![
            lb_ctl::maps::lock::runtime_dir(&pins),
            pins,
            std::env::temp_dir().join(format!("{prefix}-director-1-lbctl")),
        ]
    };
    let dead = dirs_of(dead_pid, 0);
    let live = dirs_of(std::process::id(), 9999);
    let _guards: Vec<DirGuard> = dead.iter().chain(&live).cloned().map(DirGuard).collect();
    for dir in dead.iter().chain(&live) {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }

    sweep_leftovers().expect("sweep_leftovers");
    for dir in &dead {
        assert!(
            !dir.exists(),
            "{} of a dead run survived the sweep",
            dir.display()
        );
    }
    for dir in &live {
        assert!(
            dir.exists(),
            "the sweep removed {} of a live run",
            dir.display()
        );
    }
}
