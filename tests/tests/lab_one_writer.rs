//! End to end: one writer owns the data path, and the daemon keeps it in line with what it
//! wants: the pin directory's lock, `apply` refused under `lb-ctl run`, a real server's new MAC
//! followed, pins and maps changed by hand repaired, and pins no other user can touch.
//!
//! Each test builds its own namespace lab (`lb_tests::lab`) and runs the real `lb-ctl`; all
//! traffic is a bounded number of requests with deadlines; the daemon, `LbCtl` (pins) and the
//! lab are dropped in that order, also on failure. Without root, BPF or namespaces the tests
//! fail saying what is missing.

use std::{
    collections::BTreeSet,
    fs,
    net::Ipv4Addr,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use lb_common::{BACKEND_USABLE, names};
use lb_ctl::{maps::Maps, maps::lock, plan::Current};
use lb_tests::{
    daemon::Daemon,
    env::Env,
    lab::{self, Connect, send_frames, tcp_connect},
    lab_spec,
    stats::datapath,
};

/// Deadline of one request.
const T: Duration = Duration::from_secs(2);
const VIP: Ipv4Addr = lab::DEFAULT_VIP;

/// A lab with `servers` real servers (HTTP answering their name) and `lb-ctl` for director-1.
fn lab(servers: usize) -> Env {
    Env::build(&lab_spec!(servers: servers))
}

/// Writes a service file; its path.
fn file(env: &Env, yaml: &str) -> String {
    env.file(yaml)
        .to_str()
        .unwrap_or_else(|| panic!("file path"))
        .to_string()
}

/// Attaches to director-1's `eth0` and starts `lb-ctl run -f FILE EXTRA...`.
fn start_daemon<'a>(env: &'a mut Env, file: &str, extra: &[&str]) -> &'a Daemon {
    env.ctl
        .attach("eth0")
        .unwrap_or_else(|e| panic!("lb-ctl attach failed: {e:#}"));
    env.start_daemon(Path::new(file), extra)
}

/// `lb-ctl run --reconcile-interval 1s` with `web` (rr over both real servers), once 10
/// requests reach both; the servers' addresses and the file.
fn web_daemon(env: &mut Env) -> (Ipv4Addr, Ipv4Addr, String) {
    let (rs1, rs2) = (env.server(0).addr, env.server(1).addr);
    let file = file(env, &web(&[rs1, rs2]));
    start_daemon(env, &file, &["--reconcile-interval", "1s"]);
    assert_eq!(
        names_of(&env.requests(10)),
        vec!["real-server-1", "real-server-2"]
    );
    (rs1, rs2, file)
}

fn names_of(v: &[String]) -> Vec<&str> {
    let set: BTreeSet<&str> = v.iter().map(String::as_str).collect();
    set.into_iter().collect()
}

/// `web` on the VIP, port 80, round robin over `backends`.
fn web(backends: &[Ipv4Addr]) -> String {
    let mut y = format!(
        "services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    scheduler: rr\n    backends:\n"
    );
    for b in backends {
        y.push_str(&format!("      - address: {b}\n"));
    }
    y
}

/// 50 services named `{prefix}00`.. on the VIP, ports `base`.., schedulers and weights that
/// differ between prefixes, so that two such files have different tables everywhere.
fn fifty(prefix: &str, base: u16, backends: &[Ipv4Addr]) -> String {
    let scheds = ["rr", "wrr", "mh", "sh", "wlc"];
    let mut y = String::from("services:\n");
    for i in 0..50u16 {
        let sched = scheds[(i as usize + base as usize) % scheds.len()];
        y.push_str(&format!(
            "  - name: {prefix}{i:02}\n    vip: {VIP}\n    port: {}\n    scheduler: {sched}\n    \
             table_size: 251\n    backends:\n",
            base + i
        ));
        for (k, b) in backends.iter().enumerate() {
            let weight = 1 + (i as usize + k + base as usize) % 4;
            y.push_str(&format!("      - address: {b}\n        weight: {weight}\n"));
        }
    }
    y
}

/// Every service's table names only usable backends of that same service.
fn tables_are_consistent(dir: &Path) -> Result<usize, String> {
    let maps = Maps::from_pins(dir).map_err(|e| format!("{e:#}"))?;
    let cur = Current::read(&maps).map_err(|e| format!("{e:#}"))?;
    for s in cur.services.values() {
        let table = cur.tables.get(&s.id).cloned().unwrap_or_default();
        for id in table {
            let b = cur
                .backends
                .get(&id)
                .ok_or_else(|| format!("service {} names backend {id}, not configured", s.id))?;
            if b.service_id != s.id || b.flags & BACKEND_USABLE == 0 {
                return Err(format!(
                    "service {}'s table names backend {id} of service {} (flags {:#x})",
                    s.id, b.service_id, b.flags
                ));
            }
        }
    }
    Ok(cur.services.len())
}

#[test]
fn concurrent_applies_never_interleave() {
    let env = lab(2);
    let (rs1, rs2) = (env.server(0).addr, env.server(1).addr);
    env.ctl
        .attach("eth0")
        .unwrap_or_else(|e| panic!("attach: {e:#}"));
    let a = file(&env, &fifty("a", 1000, &[rs1, rs2]));
    let b = file(&env, &fifty("b", 2000, &[rs2, rs1]));
    let empty = file(&env, "services: []\n");
    let mut winners = [0usize; 2];
    let mut waited = 0;
    for round in 0..20 {
        env.ctl
            .run_ok(&["apply", "-f", &empty])
            .unwrap_or_else(|e| panic!("round {round}: emptying: {e:#}"));
        let outs = env
            .ctl
            .run_at_once(&[&["apply", "-f", &a], &["apply", "-f", &b]])
            .unwrap_or_else(|e| panic!("{e:#}"));
        for (o, f) in outs.iter().zip(["a", "b"]) {
            assert!(
                o.status.success(),
                "round {round}: apply {f} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            if String::from_utf8_lossy(&o.stderr).contains("waiting for") {
                waited += 1;
            }
        }
        // The maps are exactly one file's plan: a dry run of it finds nothing to change.
        let clean: Vec<usize> = [&a, &b]
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                env.ctl
                    .run_ok(&["apply", "--dry-run", "-f", f])
                    .unwrap_or_else(|e| panic!("{e:#}"))
                    .contains("no changes")
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(clean.len(), 1, "round {round}: maps match files {clean:?}");
        winners[clean[0]] += 1;
        let n = tables_are_consistent(env.ctl.pin_dir())
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(n, 50, "round {round}");
    }
    eprintln!(
        "20 rounds: file a won {}, file b {}; {waited} applies waited for the lock",
        winners[0], winners[1]
    );
    assert!(waited >= 1, "no apply ever waited for the other");

    // 200 new connections to the winner's ports: each SYN reaches a real server (which has no
    // listener there and answers RST, from the VIP); none is dropped by the director.
    let base = if winners_last_is_a(&env, &a) {
        1000
    } else {
        2000
    };
    let bad_before = datapath(&env.stats(), "drop_bad_backend");
    let mut refused = 0;
    for k in 0..200u16 {
        match tcp_connect(env.lab.client(), VIP, base + k % 50, T)
            .unwrap_or_else(|e| panic!("{e:#}"))
        {
            Connect::Refused => refused += 1,
            other => panic!("connection {k} to port {}: {other:?}", base + k % 50),
        }
    }
    assert_eq!(refused, 200);
    assert_eq!(datapath(&env.stats(), "drop_bad_backend"), bad_before);
    assert_eq!(datapath(&env.stats(), "drop_bad_backend"), 0);
}

fn winners_last_is_a(env: &Env, a: &str) -> bool {
    env.ctl
        .run_ok(&["apply", "--dry-run", "-f", a])
        .unwrap_or_else(|e| panic!("{e:#}"))
        .contains("no changes")
}

#[test]
fn concurrent_first_attaches_load_once() {
    let env = lab(1);
    for round in 0..5 {
        let outs = env
            .ctl
            .run_at_once(&[&["attach", "eth0"], &["attach", "eth0"]])
            .unwrap_or_else(|e| panic!("{e:#}"));
        let texts: Vec<String> = outs
            .iter()
            .map(|o| {
                assert!(
                    o.status.success(),
                    "round {round}: attach failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                String::from_utf8_lossy(&o.stdout).into_owned()
            })
            .collect();
        let new = texts
            .iter()
            .filter(|t| t.starts_with("attached to"))
            .count();
        let adopted = texts
            .iter()
            .filter(|t| t.contains("already attached"))
            .count();
        assert_eq!((new, adopted), (1, 1), "round {round}: {texts:?}");
        for name in names::MAPS.iter().chain([&names::PROGRAM, &"link-eth0"]) {
            assert!(
                env.ctl.pin_dir().join(name).exists(),
                "round {round}: pin {name} missing"
            );
        }
        // One XDP program on the interface.
        let link = env
            .lab
            .director(0)
            .exec_ok(&["ip", "-d", "link", "show", "eth0"])
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(link.matches("prog/xdp id").count(), 1, "{link}");
        env.ctl
            .run_ok(&["detach", "eth0"])
            .unwrap_or_else(|e| panic!("round {round}: detach: {e:#}"));
        assert!(!env.ctl.pin_dir().exists(), "round {round}: pins left");
    }
}

#[test]
fn a_writer_waits_for_another_and_the_daemon_is_the_only_writer() {
    let mut env = lab(2);
    let (rs1, rs2) = (env.server(0).addr, env.server(1).addr);
    env.ctl
        .attach("eth0")
        .unwrap_or_else(|e| panic!("attach: {e:#}"));
    let plain = file(&env, &web(&[rs1, rs2]));

    // Another writer holds the lock: apply waits, says who, and gives up after --wait.
    let me = std::process::id();
    {
        let holder = lock::Holder {
            pid: me,
            daemon: false,
            command: "lb-ctl apply -f other.yaml".into(),
        };
        let _held = lock::acquire(env.ctl.pin_dir(), &holder, T, |_| {})
            .unwrap_or_else(|e| panic!("{e:#}"));
        let started = Instant::now();
        let out = env
            .ctl
            .run(&["--wait", "1s", "apply", "-f", &plain])
            .unwrap_or_else(|e| panic!("{e:#}"));
        let took = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(&format!("waiting for {}", env.ctl.pin_dir().display())),
            "{err}"
        );
        assert!(
            err.contains(&format!("pid {me} (`lb-ctl apply -f other.yaml`)")),
            "{err}"
        );
        assert!(err.contains("still locked"), "{err}");
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }
    // Released: it goes through.
    env.ctl
        .run_ok(&["apply", "-f", &plain])
        .unwrap_or_else(|e| panic!("{e:#}"));

    // The daemon holds real-server-2 down (its check port has no listener).
    let checked = format!(
        "services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    scheduler: rr\n    check:\n      \
         type: tcp\n      interval: 200ms\n      timeout: 300ms\n      retries: 1\n    backends:\n      \
         - address: {rs1}\n      - address: {rs2}\n        check:\n          port: 8099\n"
    );
    let file = file(&env, &checked);
    let d = start_daemon(&mut env, &file, &[]);
    d.wait_log(
        Duration::from_secs(10),
        |l| l.contains("backend down") && l.contains(&format!("backend={rs2}")),
        "backend down",
    );
    let pid = env.daemon().proc.pid();
    // Every other writer is refused at once, naming the daemon; a dry run is still allowed.
    for args in [
        vec!["apply", "-f", plain.as_str()],
        vec!["detach", "eth0"],
        vec!["attach", "eth0"],
    ] {
        let started = Instant::now();
        let out = env.ctl.run(&args).unwrap_or_else(|e| panic!("{e:#}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was not refused: {err}");
        assert!(err.contains("owned by a running daemon"), "{args:?}: {err}");
        assert!(err.contains(&format!("pid {pid}")), "{args:?}: {err}");
        assert!(
            err.contains(&file),
            "{args:?} does not name the daemon's file: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{args:?} waited"
        );
    }
    let dry = env
        .ctl
        .run_ok(&["apply", "--dry-run", "-f", &plain])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(dry.contains("dry run"), "{dry}");
    // The down backend never gets a new flow.
    let before = env
        .lab
        .request_count(env.lab.server(1))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let answers = env.requests(20);
    assert_eq!(names_of(&answers), vec!["real-server-1"]);
    let after = env
        .lab
        .request_count(env.lab.server(1))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(before, after, "real-server-2 was sent requests while down");
}

/// A gratuitous ARP request for `ip` from `mac` (sender = target = `ip`).
fn garp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    lb_ctl::vrrp::announce::garp_frame(mac, ip).to_vec()
}

#[test]
fn a_real_servers_new_mac_is_followed() {
    let mut env = lab(2);
    let (rs1, _, _) = web_daemon(&mut env);
    // The NIC of real-server-1 is replaced: a new MAC, announced by a gratuitous ARP.
    let new_mac = [0x02, 0, 0, 0, 0xaa, 0x87];
    let server = env.lab.server(0).clone();
    server
        .exec_ok(&[
            "ip",
            "link",
            "set",
            "eth0",
            "address",
            &lab::format_mac(&new_mac),
        ])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let skip = env.daemon().lines().len();
    let sent = Instant::now();
    send_frames(&server, "eth0", 1, T, move |_| garp(new_mac, rs1))
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Requests alternate over both servers: wait for real-server-1 to answer again.
    let mut failed = 0;
    let took = loop {
        match env.request(Duration::from_millis(300)) {
            Ok(name) if name == "real-server-1" => break sent.elapsed(),
            Ok(_) => {}
            Err(_) => failed += 1,
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "real-server-1 never answered again; the log:\n{}",
            env.daemon().lines().join("\n")
        );
    };
    eprintln!(
        "real-server-1 answered {took:?} after its gratuitous ARP ({failed} requests failed meanwhile)"
    );
    assert!(took <= Duration::from_secs(2), "{took:?}");
    let (line, _) = env.daemon().wait_log_after(
        skip,
        T,
        |l| l.contains("backend MAC changed") && l.contains(&format!("backend={rs1}")),
        "backend MAC changed",
    );
    assert!(line.contains("new=02:00:00:00:aa:87"), "{line}");
    // None lost afterwards.
    assert_eq!(
        names_of(&env.requests(20)),
        vec!["real-server-1", "real-server-2"]
    );
}

#[test]
fn the_daemon_repairs_pins_and_maps_changed_by_hand() {
    let mut env = lab(2);
    let (rs1, rs2, file) = web_daemon(&mut env);
    let dir = env.ctl.pin_dir().to_path_buf();

    // Everything unpinned by hand: the program is detached, the maps only held by the daemon.
    let skip = env.daemon().lines().len();
    for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")) {
        let path = e.unwrap_or_else(|e| panic!("{e}")).path();
        fs::remove_file(&path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
    }
    let gone = Instant::now();
    assert!(
        lab::wait_until(Duration::from_secs(4), || {
            env.request(Duration::from_millis(300)).is_ok()
                && dir.join("link-eth0").exists()
                && dir.join(names::SERVICES).exists()
        }),
        "not repaired within 4 s; the log:\n{}",
        env.daemon().lines().join("\n")
    );
    eprintln!(
        "pins removed by hand: forwarding again after {:?}",
        gone.elapsed()
    );
    env.daemon().wait_log_after(
        skip,
        T,
        |l| l.contains("reconcile: repaired") && l.contains("attached again"),
        "attached again",
    );
    for name in names::MAPS.iter().chain([&"link-eth0"]) {
        assert!(dir.join(name).exists(), "pin {name} not repaired");
    }
    let list = env.ctl.list().unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        list.contains(&format!("{rs1}:80")) && list.contains(&format!("{rs2}:80")),
        "{list}"
    );
    assert_eq!(
        names_of(&env.requests(6)),
        vec!["real-server-1", "real-server-2"]
    );

    // A map written by hand: the service deleted, a backend's MAC changed.
    let skip = env.daemon().lines().len();
    {
        let mut maps = Maps::from_pins(&dir).unwrap_or_else(|e| panic!("{e:#}"));
        let cur = Current::read(&maps).unwrap_or_else(|e| panic!("{e:#}"));
        let (&id, b) = cur
            .backends
            .iter()
            .next()
            .unwrap_or_else(|| panic!("no backend"));
        let mut bad = *b;
        bad.mac = [0x02, 0, 0, 0, 0xee, 0xee];
        maps.backends
            .set(id, bad, 0)
            .unwrap_or_else(|e| panic!("{e}"));
        let key = *cur
            .services
            .keys()
            .next()
            .unwrap_or_else(|| panic!("no service"));
        maps.services.remove(&key).unwrap_or_else(|e| panic!("{e}"));
    }
    let written = Instant::now();
    let (_, took) = env.daemon().wait_log_after(
        skip,
        Duration::from_secs(4),
        |l| l.contains("the maps differed from the desired state"),
        "drift repaired",
    );
    eprintln!("maps written by hand: repaired after {took:?}");
    assert!(
        lab::wait_until(Duration::from_secs(2), || env
            .request(Duration::from_millis(300))
            .is_ok()),
        "not forwarding again"
    );
    assert!(written.elapsed() < Duration::from_secs(4));
    let dry = env
        .ctl
        .run_ok(&["apply", "--dry-run", "-f", &file])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(dry.contains("no changes"), "{dry}");
    assert_eq!(
        names_of(&env.requests(10)),
        vec!["real-server-1", "real-server-2"]
    );
}

/// Runs `args` as the unprivileged user nobody (uid and gid 65534); whether it succeeded.
fn as_nobody(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap_or_else(|e| panic!("running {args:?} as nobody: {e}"))
        .status
        .success()
}

#[test]
fn pins_are_roots_alone() {
    let env = lab(1);
    let dir = env.ctl.pin_dir().to_path_buf();
    let dir_s = dir
        .to_str()
        .unwrap_or_else(|| panic!("pin dir"))
        .to_string();

    // A pin directory someone else could write is refused, and nothing is attached.
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap_or_else(|e| panic!("{e}"));
    let out = env
        .ctl
        .run(&["attach", "eth0"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("writable by its group or by others"),
        "{err}"
    );
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap_or_else(|e| panic!("{e}"));
    let out = env
        .ctl
        .run(&["attach", "eth0"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("owned by uid 65534"),
        "{err}"
    );
    assert!(
        !dir.join(names::SERVICES).exists(),
        "a refused attach pinned maps"
    );
    fs::remove_dir(&dir).unwrap_or_else(|e| panic!("{e}"));

    // lb-ctl makes it: root's, 0700; so is its lock directory.
    env.ctl.attach("eth0").unwrap_or_else(|e| panic!("{e:#}"));
    for d in [dir.clone(), lock::runtime_dir(&dir)] {
        let meta = fs::metadata(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(
            (meta.uid(), meta.mode() & 0o777),
            (0, 0o700),
            "{}",
            d.display()
        );
    }
    // An unprivileged user can neither remove nor replace nor add anything there.
    let link = format!("{dir_s}/link-eth0");
    let services = format!("{dir_s}/{}", names::SERVICES);
    let attempts: [&[&str]; 6] = [
        &["rm", "-f", &link],
        &["rm", "-f", &services],
        &["mv", &services, "/tmp/x"],
        &["touch", &format!("{dir_s}/new")],
        &["rm", "-rf", &dir_s],
        &["ls", &dir_s],
    ];
    for args in attempts {
        assert!(!as_nobody(args), "nobody could run {args:?}");
    }
    for name in names::MAPS.iter().chain([&names::PROGRAM, &"link-eth0"]) {
        assert!(dir.join(name).exists(), "pin {name} is gone");
    }
    let link = env
        .lab
        .director(0)
        .exec_ok(&["ip", "-d", "link", "show", "eth0"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        link.contains("prog/xdp id"),
        "the program was detached: {link}"
    );
}
