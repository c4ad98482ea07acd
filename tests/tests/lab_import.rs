//! End to end: the typical LVS-DR keepalived.conf (the VRRP instance and the virtual server
//! with two HTTP_GET-checked real servers, the lab's addresses), imported by `lb-ctl import`
//! on each of two directors (MASTER priority 100, BACKUP 90), and the two imported files run
//! by `lb-ctl run`: balancing (rr over the two real servers, one client address after
//! another), persistence (a client address keeps its server), a dead real server taken out by
//! its check, and VRRP failover when the master's link goes down.
//!
//! The lab's rules hold (`lb_tests::lab`): namespaces of this test only, bounded requests with
//! deadlines, everything torn down on drop. Without root, BPF or namespaces it fails saying
//! what is missing.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    lab::{self, Host, Lab, LabSpec, Proc, http_get_from},
    lbctl::{LbCtl, find_lb_ctl},
};

const VIP: Ipv4Addr = lab::DEFAULT_VIP;
const T: Duration = Duration::from_millis(500);

/// The keepalived.conf with the lab's addresses; checks every second.
fn keepalived_conf(state: &str, priority: u8, digests: &[(Ipv4Addr, String)]) -> String {
    let mut rs = String::new();
    for (addr, digest) in digests {
        rs.push_str(&format!(
            "    real_server {addr} 80 {{\n        weight 1\n        HTTP_GET {{\n            url {{\n\
             \x20               path /\n                digest {digest}\n            }}\n\
             \x20           connect_timeout 1\n            nb_get_retry 1\n            connect_port 80\n\
             \x20           delay_before_retry 1\n        }}\n    }}\n"
        ));
    }
    format!(
        "! Configuration File for keepalived\n\
         vrrp_instance LVS {{\n    state {state}\n    interface eth0\n    virtual_router_id 51\n\
         \x20   priority {priority}\n    advert_int 1\n    authentication {{\n        auth_type PASS\n\
         \x20       auth_pass 1111\n    }}\n    virtual_ipaddress {{\n        {VIP}\n    }}\n}}\n\n\
         virtual_server {VIP} 80 {{\n    delay_loop 1\n    lb_algo rr\n    lb_kind DR\n\
         \x20   persistence_timeout 50\n    protocol TCP\n\n{rs}}}\n"
    )
}

/// `lb-ctl ARGS`, its output.
fn lb_ctl(args: &[&str]) -> std::process::Output {
    let bin = find_lb_ctl().unwrap_or_else(|e| panic!("{e:#}"));
    Command::new(bin)
        .args(args)
        .env_remove("LB_PIN_DIR")
        .output()
        .unwrap_or_else(|e| panic!("running lb-ctl: {e}"))
}

/// `lb-ctl --netns NS ARGS...` as a daemon, its log echoed. Dropping it kills it.
struct Daemon {
    proc: Proc,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn spawn(host: &Host, args: &[&std::ffi::OsStr]) -> Daemon {
        let bin = find_lb_ctl().unwrap_or_else(|e| panic!("{e:#}"));
        let mut cmd = Command::new(bin);
        cmd.arg("--netns")
            .arg(&host.netns)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn(cmd, format!("lb-ctl on {}", host.name))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let stderr = proc.child_mut().stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let name = host.name.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{name}] {line}");
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Daemon { proc, log }
    }

    fn stop(mut self) {
        let _ = self.proc.signal(libc::SIGTERM);
        let status = self
            .proc
            .wait_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let log = self
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n");
        assert!(
            status.is_some_and(|s| s.success()),
            "lb-ctl run did not stop cleanly:\n{log}"
        );
    }
}

/// A directory for the test's files, removed on drop.
struct Files(PathBuf);

impl Drop for Files {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn has_vip(host: &Host) -> bool {
    host.exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .is_ok_and(|out| out.contains(&format!("{VIP}/32")))
}

/// The real server that answered `src`, if any.
fn served_by(lab: &Lab, src: Ipv4Addr) -> Option<String> {
    match http_get_from(
        lab.client(),
        IpAddr::V4(src),
        SocketAddr::new(VIP.into(), 80),
        "/",
        T,
    ) {
        Ok((200, body)) => Some(body.trim().to_string()),
        _ => None,
    }
}

#[test]
fn the_typical_keepalived_conf_imported_runs_under_lb_ctl_run() {
    let lab = Lab::build(&LabSpec {
        directors: 2,
        servers: 2,
        pass_through: false,
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    lab.del_vip(lab.director(0))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let files = Files(std::env::temp_dir().join(format!("{}-import", lab.prefix())));
    fs::create_dir_all(&files.0).unwrap();
    let (d1, d2) = (lab.director(0), lab.director(1));

    // The digest of each real server's page, as keepalived users get it: genhash.
    let mut digests = Vec::new();
    for s in lab.servers() {
        let out = lb_ctl(&[
            "--netns",
            &d1.netns,
            "genhash",
            "--server",
            &s.addr.to_string(),
            "--port",
            "80",
            "--url",
            "/",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let md5 = text
            .trim()
            .strip_prefix("MD5SUM = ")
            .unwrap_or_else(|| panic!("genhash: {text}"));
        digests.push((s.addr, md5.to_string()));
    }

    // Import each director's keepalived.conf: complete (exit 0, nothing on stderr).
    let mut daemons = Vec::new();
    let mut ctls = Vec::new();
    for (d, state, priority) in [(d1, "MASTER", 100), (d2, "BACKUP", 90)] {
        let conf = files.0.join(format!("keepalived-{}.conf", d.name));
        fs::write(&conf, keepalived_conf(state, priority, &digests)).unwrap();
        let out = lb_ctl(&["import", conf.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            (out.status.code(), stderr.as_ref()),
            (Some(0), ""),
            "import of {}",
            conf.display()
        );
        let yaml = files.0.join(format!("{}.yaml", d.name));
        fs::write(&yaml, &out.stdout).unwrap();
        let ctl = LbCtl::new(&lab, d).unwrap_or_else(|e| panic!("{e:#}"));
        // The imported file passes `apply --dry-run` (which reads the director's maps), then
        // runs (the daemon finds the interface attached and keeps it).
        ctl.attach_mode("eth0", "generic")
            .unwrap_or_else(|e| panic!("{e:#}"));
        let dry = ctl
            .run_ok(&["apply", "--dry-run", "-f", yaml.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("apply --dry-run of the imported file: {e:#}"));
        assert!(
            dry.contains("192.168.58.133:80"),
            "apply --dry-run printed:\n{dry}"
        );
        let args: Vec<&std::ffi::OsStr> = vec![
            "--pin-dir".as_ref(),
            ctl.pin_dir().as_os_str(),
            "run".as_ref(),
            "-f".as_ref(),
            yaml.as_os_str(),
            "--iface".as_ref(),
            "eth0".as_ref(),
            "--mode".as_ref(),
            "generic".as_ref(),
            "--detach-on-exit".as_ref(),
        ];
        daemons.push(Daemon::spawn(d, &args));
        ctls.push(ctl);
    }

    // Clients: four addresses of the client host, one persistence entry each.
    let clients: Vec<Ipv4Addr> = (0..4)
        .map(|i| Ipv4Addr::new(192, 168, 58, 200 + i))
        .collect();
    for c in &clients {
        lab.client()
            .exec_ok(&["ip", "addr", "add", &format!("{c}/24"), "dev", "eth0"])
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    assert!(
        lab::wait_until(Duration::from_secs(15), || has_vip(d1)
            && served_by(&lab, clients[0]).is_some()),
        "director-1 (MASTER 100) should hold the VIP and serve it"
    );
    assert!(!has_vip(d2), "director-2 (BACKUP 90) holds the VIP too");

    // Balancing and persistence: each client address 5 requests; rr gives the four
    // addresses' first connections alternately to the two servers, persistence keeps each.
    let mut firsts = Vec::new();
    for c in &clients {
        let answers: Vec<Option<String>> = (0..5).map(|_| served_by(&lab, *c)).collect();
        let first = answers[0]
            .clone()
            .unwrap_or_else(|| panic!("{c}: no answer"));
        assert!(
            answers.iter().all(|a| a.as_deref() == Some(first.as_str())),
            "{c}: {answers:?}"
        );
        firsts.push(first);
    }
    let names: Vec<&str> = lab.servers().iter().map(|s| s.name.as_str()).collect();
    let per_server: Vec<usize> = names
        .iter()
        .map(|n| firsts.iter().filter(|f| f == n).count())
        .collect();
    eprintln!("IMPORT balancing: 4 client addresses x 5 requests -> {firsts:?}");
    assert_eq!(per_server, [2, 2], "rr over the two servers: {firsts:?}");

    // A dead real server (its link down) is taken out by its HTTP_GET check: every client
    // address gets the other server (its persistence entry pointed at a dead one).
    let dead = lab.server(0);
    lab.set_link(dead, false)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let start = Instant::now();
    let other = names[1];
    assert!(
        lab::wait_until(Duration::from_secs(10), || clients
            .iter()
            .all(|c| served_by(&lab, *c).as_deref() == Some(other))),
        "{} was not taken out",
        dead.name
    );
    eprintln!(
        "IMPORT health: {} taken out after {} ms",
        dead.name,
        start.elapsed().as_millis()
    );
    lab.set_link(dead, true).unwrap_or_else(|e| panic!("{e:#}"));

    // VRRP failover: the master's link down, the backup takes the VIP and serves.
    lab.set_link(d1, false).unwrap_or_else(|e| panic!("{e:#}"));
    let start = Instant::now();
    assert!(
        lab::wait_until(Duration::from_secs(10), || has_vip(d2)
            && served_by(&lab, clients[0]).is_some()),
        "director-2 did not take over"
    );
    let gap = start.elapsed();
    eprintln!(
        "IMPORT failover: director-2 served {} ms after director-1's link went down",
        gap.as_millis()
    );
    assert!(
        gap < Duration::from_secs(6),
        "failover took {gap:?} (v2, advert 1 s)"
    );
    lab.set_link(d1, true).unwrap_or_else(|e| panic!("{e:#}"));
    for d in daemons {
        d.stop();
    }
    drop(ctls);
}
