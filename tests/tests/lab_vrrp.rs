//! End to end: VRRP between the two directors of the namespace lab (`lb_tests::lab`;
//! `docs/lab.md` has the rules kept here), with `lb-ctl vrrp -f FILE` on each director,
//! and with a real keepalived (Debian package, VRRP only) as the peer in both roles.
//!
//! Each director runs `lab-server http --name director-N --port 8080`, so a request from the
//! client to VIP:8080 says which director holds the VIP. No XDP program is attached: what is
//! tested is VIP ownership, gratuitous ARP (the client's neighbour entry) and the client's
//! reachability of the VIP. The VIP starts on neither director (the lab puts it on
//! director-1: it is removed first).
//!
//! Forged adverts (wrong password, TTL 64, bad checksum, truncated) are injected from the
//! client: they are counted and logged, and change nothing.
//!
//! Every failover is measured from the event (link pulled, SIGKILL, SIGTERM) to the first
//! answer from the new master, with the number of requests that failed meanwhile; the numbers
//! are printed (`FAILOVER ...`) for the closing note. Traffic is a bounded number of requests,
//! each with a deadline. Everything is dropped at the end, also on failure: the daemons, then
//! the lab (namespaces, and any process left in them). Without root or namespaces the tests
//! fail saying what is missing.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use lb_ctl::vrrp::packet;
use lb_tests::{
    keepalived::Keepalived,
    lab::{self, Host, Lab, LabSpec, Proc, http_get},
    lbctl::{LbCtl, find_lb_ctl},
};

const VIP: Ipv4Addr = lab::DEFAULT_VIP;
/// The port of each director's own HTTP server (answers `director-N`).
const PORT: u16 = 8080;
/// Deadline of one probe request.
const PROBE: Duration = Duration::from_millis(250);
/// Slack on top of a protocol bound for the probe cadence and a loaded machine.
const SLACK: Duration = Duration::from_millis(700);

fn lab() -> Lab {
    let lab = Lab::build(&LabSpec {
        directors: 2,
        servers: 1,
        start_servers: false,
        pass_through: false,
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    lab.del_vip(lab.director(0))
        .unwrap_or_else(|e| panic!("{e:#}"));
    lab
}

/// [`lab`], a directory for its files, and [`listener`] on both directors.
fn lab_with_listeners() -> (Lab, Files) {
    let lab = lab();
    let files = Files::new(&lab);
    listener(&lab, lab.director(0));
    listener(&lab, lab.director(1));
    (lab, files)
}

/// Asserts that `vrrpd` refused none of the adverts it received (its log has no
/// `invalid VRRP packet`).
#[track_caller]
fn assert_no_refused_adverts(vrrpd: &Vrrpd) {
    let log = vrrpd.lines().join("\n");
    assert!(
        !log.contains("invalid VRRP packet"),
        "keepalived's adverts were refused:\n{log}"
    );
}

/// A directory for this lab's files, removed on drop.
struct Files(PathBuf);

impl Files {
    fn new(lab: &Lab) -> Files {
        let dir = std::env::temp_dir().join(format!("{}-vrrp", lab.prefix()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Files(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Starts `director-N`'s HTTP server on [`PORT`] and waits until it answers.
fn listener(lab: &Lab, host: &Host) {
    let bin = lab::find_server_bin(Some(Path::new(env!("CARGO_BIN_EXE_lab-server"))))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let bin = bin.to_str().unwrap();
    let port = PORT.to_string();
    let mut cmd = host.command(&[bin, "http", "--name", &host.name, "--port", &port]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let mut proc = Proc::spawn(cmd, format!("lab-server on {}", host.name))
        .unwrap_or_else(|e| panic!("{e:#}"));
    host.wait_entered(&mut proc)
        .unwrap_or_else(|e| panic!("{e:#}"));
    lab.adopt(proc);
    assert!(
        lab::wait_until(Duration::from_secs(5), || lab::can_connect(
            host,
            Ipv4Addr::LOCALHOST,
            PORT,
            Duration::from_millis(200)
        )),
        "the HTTP server on {} did not come up",
        host.name
    );
}

/// The director answering on VIP:PORT, if any.
fn probe(lab: &Lab) -> Option<String> {
    match http_get(lab.client(), VIP, PORT, "/", PROBE) {
        Ok((200, body)) => Some(body.trim().to_string()),
        _ => None,
    }
}

fn has_vip(host: &Host) -> bool {
    let out = host
        .exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    out.contains(&format!("inet {VIP}/32"))
}

/// Asserts that `host` does not hold the VIP at any of the samples taken over `period`
/// (the split-brain guard), and that `master` does at all of them.
fn only_master_holds_vip(master: &Host, backup: &Host, period: Duration) {
    let start = Instant::now();
    while start.elapsed() < period {
        assert!(
            !has_vip(backup),
            "split brain: {} claimed the VIP while {} is master",
            backup.name,
            master.name
        );
        assert!(has_vip(master), "{} lost the VIP", master.name);
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the client's requests to the VIP are answered by `name`; returns how long it
/// took and how many requests failed meanwhile.
fn wait_for(lab: &Lab, name: &str, limit: Duration) -> (Duration, usize, usize) {
    let start = Instant::now();
    let (mut failed, mut total) = (0, 0);
    loop {
        total += 1;
        match probe(lab) {
            Some(who) if who == name => return (start.elapsed(), failed, total),
            Some(_) => {}
            None => failed += 1,
        }
        assert!(
            start.elapsed() < limit,
            "{name} did not answer on the VIP within {limit:?} ({failed} of {total} requests \
             failed)"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Measures a failover that `event` starts; asserts it took at most `bound`; prints it.
fn failover(lab: &Lab, what: &str, to: &Host, bound: Duration, event: impl FnOnce()) -> Duration {
    event();
    let (gap, failed, total) = wait_for(lab, &to.name, bound + Duration::from_secs(5));
    eprintln!(
        "FAILOVER {what}: {} answered after {} ms; {failed} of {total} requests failed \
         (bound {} ms)",
        to.name,
        gap.as_millis(),
        bound.as_millis()
    );
    assert!(gap <= bound, "{what}: took {gap:?}, more than {bound:?}");
    let mac = lab
        .client()
        .neighbour_mac(VIP)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        mac,
        Some(to.mac),
        "the client's neighbour entry for the VIP is not {}'s MAC",
        to.name
    );
    gap
}

/// `lb-ctl --netns NS vrrp -f FILE` on a director, its log collected. Dropping it kills it.
struct Vrrpd {
    proc: Proc,
    log: Arc<Mutex<Vec<String>>>,
}

impl Vrrpd {
    fn start(host: &Host, file: &Path) -> Vrrpd {
        // A pin directory named after the lab, so the status files `lb-ctl vrrp` keeps for it
        // under /run/lb-ctl go with the lab's teardown, even after a SIGKILL.
        let pins = Path::new("/sys/fs/bpf").join(&host.netns);
        Vrrpd::spawn(
            host,
            &[
                "--pin-dir".as_ref(),
                pins.as_os_str(),
                "vrrp".as_ref(),
                "-f".as_ref(),
                file.as_os_str(),
            ],
        )
    }

    /// `lb-ctl --netns NS ARGS...`.
    fn spawn(host: &Host, args: &[&std::ffi::OsStr]) -> Vrrpd {
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
        Vrrpd { proc, log }
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn signal(&mut self, sig: i32) {
        self.proc
            .signal(sig)
            .unwrap_or_else(|e| panic!("signalling lb-ctl vrrp: {e:#}"));
    }

    /// SIGTERM, then waits for it to exit by itself.
    fn stop(mut self) -> Vec<String> {
        self.signal(libc::SIGTERM);
        let status = self
            .proc
            .wait_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            status.is_some_and(|s| s.success()),
            "lb-ctl did not exit cleanly on SIGTERM: {status:?}"
        );
        self.lines()
    }
}

/// One instance; `extra` lines go at the end of it.
fn vrrp_yaml(priority: u8, version: u8, interval: &str, extra: &str) -> String {
    format!(
        "services: []\nvrrp:\n  - name: VI_1\n    interface: eth0\n    virtual_router_id: 51\n    \
         priority: {priority}\n    advert_interval: {interval}\n    version: {version}\n    \
         virtual_addresses: [{VIP}/32]\n    garp_count: 3\n    garp_delay: 100ms\n{extra}"
    )
}

/// Master_Down_Interval for `priority` at `interval`.
fn mdi(priority: u32, interval: Duration) -> Duration {
    interval * 3 + interval * (256 - priority) / 256
}

fn wait_master(lab: &Lab, master: &Host, backup: &Host, limit: Duration) {
    wait_for(lab, &master.name, limit);
    assert!(
        lab::wait_until(Duration::from_secs(2), || has_vip(master)
            && !has_vip(backup)),
        "{} should hold the VIP alone",
        master.name
    );
}

#[test]
fn v3_link_down_failover_and_preemption() {
    let (lab, files) = lab_with_listeners();
    let (d1, d2) = (lab.director(0), lab.director(1));
    let interval = Duration::from_millis(200);
    let _v1 = Vrrpd::start(d1, &files.write("d1.yaml", &vrrp_yaml(150, 3, "200ms", "")));
    let _v2 = Vrrpd::start(d2, &files.write("d2.yaml", &vrrp_yaml(100, 3, "200ms", "")));
    wait_master(&lab, d1, d2, Duration::from_secs(5));
    only_master_holds_vip(d1, d2, Duration::from_secs(1));

    failover(
        &lab,
        "v3 200ms, master's link down",
        d2,
        mdi(100, interval) + SLACK,
        || lab.set_link(d1, false).unwrap_or_else(|e| panic!("{e:#}")),
    );
    // The director without a link is in fault: it gave the VIP up.
    assert!(lab::wait_until(Duration::from_secs(1), || !has_vip(d1)));

    // Preemption: director-1 (150) takes the VIP back once its link is back.
    failover(
        &lab,
        "v3 200ms, preemption after link up",
        d1,
        mdi(150, interval) + SLACK,
        || lab.set_link(d1, true).unwrap_or_else(|e| panic!("{e:#}")),
    );
    assert!(lab::wait_until(Duration::from_secs(1), || !has_vip(d2)));
    only_master_holds_vip(d1, d2, Duration::from_millis(600));
}

#[test]
fn v3_sigkill_then_graceful_stop() {
    let (lab, files) = lab_with_listeners();
    let (d1, d2) = (lab.director(0), lab.director(1));
    let interval = Duration::from_millis(200);
    let f1 = files.write("d1.yaml", &vrrp_yaml(150, 3, "200ms", ""));
    let mut v1 = Vrrpd::start(d1, &f1);
    let v2 = Vrrpd::start(d2, &files.write("d2.yaml", &vrrp_yaml(100, 3, "200ms", "")));
    wait_master(&lab, d1, d2, Duration::from_secs(5));

    // SIGKILL: no priority-0 advert; the backup waits the master down interval. (The killed
    // director keeps the VIP on its interface, as with keepalived; the GARPs move the client.)
    failover(
        &lab,
        "v3 200ms, master SIGKILLed",
        d2,
        mdi(100, interval) + SLACK,
        || v1.signal(libc::SIGKILL),
    );
    drop(v1);

    // Restarted, director-1 cleans up its stale VIP as a backup, then preempts.
    let v1 = Vrrpd::start(d1, &f1);
    wait_master(&lab, d1, d2, Duration::from_secs(5));

    // SIGTERM: priority 0, so the backup takes over after its skew time (about one interval
    // at most).
    let mut v1 = Some(v1);
    failover(
        &lab,
        "v3 200ms, graceful stop (priority 0)",
        d2,
        interval + SLACK,
        || {
            let log = v1.take().unwrap().stop();
            assert!(
                log.iter()
                    .any(|l| l.contains("VRRP transition") && l.contains("to=init")),
                "no shutdown transition in the log"
            );
        },
    );
    assert!(!has_vip(d1));
    let log = v2.lines();
    assert!(
        log.iter().filter(|l| l.contains("to=master")).count() >= 2,
        "director-2 should have been master twice:\n{}",
        log.join("\n")
    );
}

#[test]
fn v2_one_second_with_auth_sigkill() {
    let (lab, files) = lab_with_listeners();
    let (d1, d2) = (lab.director(0), lab.director(1));
    let interval = Duration::from_secs(1);
    let auth = "    auth_pass: \"s3cret\"\n";
    let mut v1 = Vrrpd::start(d1, &files.write("d1.yaml", &vrrp_yaml(150, 2, "1s", auth)));
    let v2 = Vrrpd::start(d2, &files.write("d2.yaml", &vrrp_yaml(100, 2, "1s", auth)));
    // Both start as backup: director-1 takes over after its master down interval (3.4 s).
    wait_master(&lab, d1, d2, mdi(150, interval) + Duration::from_secs(3));
    only_master_holds_vip(d1, d2, Duration::from_millis(1500));

    // Forged adverts of priority 254 from the client, to both directors: with the wrong
    // password, with the right one but TTL 64 (routed), with a bad checksum, truncated. All are
    // counted and ignored: nobody yields or claims anything.
    let forged = |pass: &str| {
        packet::encode(
            &packet::Advert {
                version: packet::Version::V2,
                vrid: 51,
                priority: 254,
                interval: 1,
                addresses: vec![VIP.into()],
                auth: Some(packet::auth_data(pass)),
            },
            lab::CLIENT_ADDR,
            Ipv4Addr::UNSPECIFIED,
        )
    };
    let mut bad_sum = forged("s3cret");
    bad_sum[6] ^= 0xff;
    let sent = [
        (255, forged("wrong")),
        (64, forged("s3cret")),
        (255, bad_sum),
        (255, forged("s3cret")[..10].to_vec()),
    ];
    for d in [d1, d2] {
        inject(lab.client(), d.addr, &sent);
    }
    only_master_holds_vip(d1, d2, Duration::from_millis(1500));
    for (v, d) in [(&v1, d1), (&v2, d2)] {
        let log = v.lines().join("\n");
        for what in [
            "authentication mismatch",
            "TTL 64",
            "bad checksum",
            "do not fit",
        ] {
            assert!(
                log.contains(what),
                "{} did not count a forged advert ({what}):\n{log}",
                d.name
            );
        }
    }
    failover(
        &lab,
        "v2 1s auth PASS, master SIGKILLed",
        d2,
        mdi(100, interval) + SLACK,
        || v1.signal(libc::SIGKILL),
    );
}

/// Sends each `(ttl, VRRP message)` once from `host` to `dst` over a raw socket.
fn inject(host: &Host, dst: Ipv4Addr, packets: &[(u8, Vec<u8>)]) {
    let packets = packets.to_vec();
    host.run_in(move || {
        // SAFETY: plain socket calls on a socket this closure owns and closes.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, 112);
            anyhow::ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(dst).to_be(),
                },
                sin_zero: [0; 8],
            };
            for (ttl, msg) in &packets {
                let ttl = libc::c_int::from(*ttl);
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    libc::IP_TTL,
                    (&ttl as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
                let n = libc::sendto(
                    fd,
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
                anyhow::ensure!(n >= 0, "sendto: {}", std::io::Error::last_os_error());
            }
            libc::close(fd);
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("injecting VRRP packets: {e:#}"));
}

// ---- keepalived ----

fn keepalived_conf(name: &str, priority: u8, version: u8, advert_int: &str, auth: bool) -> String {
    let auth = if auth {
        "    authentication {\n        auth_type PASS\n        auth_pass 1111\n    }\n"
    } else {
        ""
    };
    format!(
        "global_defs {{\n    router_id {name}\n    vrrp_version {version}\n    \
         vrrp_garp_master_repeat 3\n    vrrp_garp_master_delay 1\n}}\n\
         vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n    \
         priority {priority}\n    advert_int {advert_int}\n{auth}    virtual_ipaddress {{\n        \
         {VIP}/32 dev eth0\n    }}\n}}\n"
    )
}

/// keepalived as the backup (v2, 1 s, auth PASS): ours is master, keepalived never claims
/// the VIP; a graceful stop of ours hands over in about one interval; ours preempts back.
#[test]
fn keepalived_as_backup_v2() {
    let (lab, files) = lab_with_listeners();
    let (d1, d2) = (lab.director(0), lab.director(1));
    let interval = Duration::from_secs(1);
    let _ka = Keepalived::start(
        &files.0,
        d2,
        &keepalived_conf("director-2", 100, 2, "1", true),
    );
    let auth = "    auth_pass: \"1111\"\n";
    let f1 = files.write("d1.yaml", &vrrp_yaml(150, 2, "1s", auth));
    let v1 = Vrrpd::start(d1, &f1);
    // keepalived may become master first (it started first); ours preempts it.
    wait_master(&lab, d1, d2, Duration::from_secs(10));
    only_master_holds_vip(d1, d2, Duration::from_secs(2));
    assert_no_refused_adverts(&v1);

    let mut v1 = Some(v1);
    failover(
        &lab,
        "keepalived backup, ours stopped gracefully (v2 1s)",
        d2,
        interval + SLACK,
        || {
            v1.take().unwrap().stop();
        },
    );

    let _v1 = Vrrpd::start(d1, &f1);
    failover(
        &lab,
        "ours preempts keepalived (v2 1s)",
        d1,
        mdi(150, interval) + SLACK,
        || {},
    );
    assert!(lab::wait_until(Duration::from_secs(2), || !has_vip(d2)));
}

/// keepalived as the master (v3, 200 ms): ours stays backup while its adverts arrive; when
/// keepalived's link goes down, ours takes over; when it comes back, keepalived preempts.
#[test]
fn keepalived_as_master_v3() {
    let (lab, files) = lab_with_listeners();
    let (d1, d2) = (lab.director(0), lab.director(1));
    let interval = Duration::from_millis(200);
    let _ka = Keepalived::start(
        &files.0,
        d1,
        &keepalived_conf("director-1", 150, 3, "0.2", false),
    );
    let v2 = Vrrpd::start(d2, &files.write("d2.yaml", &vrrp_yaml(100, 3, "200ms", "")));
    wait_master(&lab, d1, d2, Duration::from_secs(10));
    only_master_holds_vip(d1, d2, Duration::from_secs(1));
    assert!(
        v2.lines().iter().any(|l| l.contains("to=backup")),
        "ours should be backup"
    );
    assert_no_refused_adverts(&v2);

    failover(
        &lab,
        "keepalived master's link down, ours takes over (v3 200ms)",
        d2,
        mdi(100, interval) + SLACK,
        || lab.set_link(d1, false).unwrap_or_else(|e| panic!("{e:#}")),
    );
    failover(
        &lab,
        "keepalived preempts ours after link up (v3 200ms)",
        d1,
        mdi(150, interval) + Duration::from_secs(2),
        || lab.set_link(d1, true).unwrap_or_else(|e| panic!("{e:#}")),
    );
    assert!(lab::wait_until(Duration::from_secs(2), || !has_vip(d2)));
}

// ---- lb-ctl run ----

/// `lb-ctl run` with a service on the VIP and a `vrrp:` block on both directors (XDP in
/// generic mode): the client's requests to VIP:80 reach the real server through whichever
/// director is master; the master's link goes down -> the other serves them.
#[test]
fn run_daemon_serves_the_vip_through_the_master() {
    let lab = Lab::build(&LabSpec {
        directors: 2,
        servers: 1,
        pass_through: false,
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    lab.del_vip(lab.director(0))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let files = Files::new(&lab);
    let (d1, d2) = (lab.director(0), lab.director(1));
    let rs = lab.server(0);
    let interval = Duration::from_millis(200);
    let service = format!(
        "services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    backends:\n      - address: \
         {}\n",
        rs.addr
    );
    let mut daemons = Vec::new();
    let mut ctls = Vec::new();
    for (d, priority) in [(d1, 150), (d2, 100)] {
        let ctl = LbCtl::new(&lab, d).unwrap_or_else(|e| panic!("{e:#}"));
        let yaml = vrrp_yaml(priority, 3, "200ms", "").replace("services: []\n", &service);
        let file = files.write(&format!("{}.yaml", d.name), &yaml);
        let args: Vec<&std::ffi::OsStr> = vec![
            "--pin-dir".as_ref(),
            ctl.pin_dir().as_os_str(),
            "run".as_ref(),
            "-f".as_ref(),
            file.as_os_str(),
            "--iface".as_ref(),
            "eth0".as_ref(),
            "--mode".as_ref(),
            "generic".as_ref(),
            "--detach-on-exit".as_ref(),
        ];
        daemons.push(Vrrpd::spawn(d, &args));
        ctls.push(ctl);
    }
    let served = |lab: &Lab| {
        matches!(
            http_get(lab.client(), VIP, 80, "/", PROBE),
            Ok((200, body)) if body.trim() == rs.name
        )
    };
    assert!(
        lab::wait_until(Duration::from_secs(10), || has_vip(d1) && served(&lab)),
        "director-1 should hold the VIP and forward to {}",
        rs.name
    );
    assert_eq!(
        lab.client()
            .neighbour_mac(VIP)
            .unwrap_or_else(|e| panic!("{e:#}")),
        Some(d1.mac)
    );
    only_master_holds_vip(d1, d2, Duration::from_millis(600));
    // `list` and `stats` show each director's VRRP state (written every second).
    let shows = |ctl: &LbCtl, state: &str| {
        lab::wait_until(Duration::from_secs(3), || {
            ctl.list()
                .is_ok_and(|l| l.contains(&format!("VRRP VI_1: {state} (master ")))
        })
    };
    assert!(shows(&ctls[0], "master"), "{:?}", ctls[0].list());
    assert!(shows(&ctls[1], "backup"), "{:?}", ctls[1].list());
    let prom = ctls[0]
        .run_ok(&["stats", "--prometheus"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        prom.contains("lb_vrrp_master{instance=\"VI_1\"} 1"),
        "{prom}"
    );
    assert!(
        prom.contains("lb_vrrp_adverts_sent_total{instance=\"VI_1\"}"),
        "{prom}"
    );

    lab.set_link(d1, false).unwrap_or_else(|e| panic!("{e:#}"));
    let start = Instant::now();
    let (mut failed, mut total) = (0, 0);
    let bound = mdi(100, interval) + SLACK;
    loop {
        total += 1;
        if served(&lab) && lab.client().neighbour_mac(VIP).ok().flatten() == Some(d2.mac) {
            break;
        }
        failed += 1;
        assert!(
            start.elapsed() < bound + Duration::from_secs(5),
            "director-2 did not take over: {failed} of {total} requests failed"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let gap = start.elapsed();
    eprintln!(
        "FAILOVER lb-ctl run, v3 200ms, master's link down, XDP forwarding to {}: served \
         again after {} ms; {failed} of {total} requests failed (bound {} ms)",
        rs.name,
        gap.as_millis(),
        bound.as_millis()
    );
    assert!(gap <= bound, "took {gap:?}, more than {bound:?}");
    assert!(has_vip(d2));
    assert!(shows(&ctls[1], "master"), "{:?}", ctls[1].list());
    for d in daemons {
        d.stop();
    }
    drop(ctls);
}

/// Unicast peers instead of multicast (v3, 200 ms): the same election and a graceful handover.
#[test]
fn v3_unicast_peers() {
    let (lab, files) = lab_with_listeners();
    let (d1, d2) = (lab.director(0), lab.director(1));
    let interval = Duration::from_millis(200);
    let peer = |h: &Host| format!("    unicast_peers: [{}]\n", h.addr);
    let v1 = Vrrpd::start(
        d1,
        &files.write("d1.yaml", &vrrp_yaml(150, 3, "200ms", &peer(d2))),
    );
    let v2 = Vrrpd::start(
        d2,
        &files.write("d2.yaml", &vrrp_yaml(100, 3, "200ms", &peer(d1))),
    );
    wait_master(&lab, d1, d2, Duration::from_secs(5));
    only_master_holds_vip(d1, d2, Duration::from_secs(1));
    let mut v1 = Some(v1);
    failover(
        &lab,
        "v3 200ms unicast, graceful stop",
        d2,
        interval + SLACK,
        || {
            v1.take().unwrap().stop();
        },
    );
    assert_no_refused_adverts(&v2);
}

// ---- tracking, sync groups, reload, refresh (keepalived's features) ----

/// A second VIP, for a second instance.
const VIP2: Ipv4Addr = Ipv4Addr::new(192, 168, 58, 150);

fn has_addr(host: &Host, addr: Ipv4Addr) -> bool {
    let out = host
        .exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    out.contains(&format!("inet {addr}/32"))
}

/// A director's file: `VI_1` (VIP) and, with `two`, `VI_2` (VIP2) in a sync group; both
/// track `chk` (succeeds while the file `ok` exists), VI_1 with `track` (`chk`, or `chk`
/// with a weight), VI_2 always with weight 0.
fn tracked_yaml(dir: &Path, priority: u8, track1: &str, two: bool) -> String {
    let ok = dir.join(format!("ok-{priority}"));
    let mut y = format!(
        "services: []\nvrrp_scripts:\n  - name: chk\n    script: \"test -e {}\"\n    \
         interval: 100ms\n    timeout: 1s\nvrrp:\n  - name: VI_1\n    interface: eth0\n    \
         virtual_router_id: 51\n    priority: {priority}\n    advert_interval: 100ms\n    \
         version: 3\n    virtual_addresses: [{VIP}/32]\n    garp_count: 2\n    \
         garp_delay: 100ms\n    track_script: [{track1}]\n",
        ok.display()
    );
    if two {
        y.push_str(&format!(
            "  - name: VI_2\n    interface: eth0\n    virtual_router_id: 52\n    \
             priority: {priority}\n    advert_interval: 100ms\n    version: 3\n    \
             virtual_addresses: [{VIP2}/32]\n    garp_count: 2\n    garp_delay: 100ms\n\
             vrrp_sync_groups:\n  - name: G\n    instances: [VI_1, VI_2]\n"
        ));
    }
    y
}

fn script_ok(dir: &Path, priority: u8, ok: bool) {
    let path = dir.join(format!("ok-{priority}"));
    if ok {
        fs::write(&path, "").unwrap_or_else(|e| panic!("{e}"));
    } else {
        fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// `track_script` of weight 0 failing on the master: it goes to fault (priority-0 advert) and
/// the backup takes over within 3 advert intervals of the failure being seen; with a weight
/// of -100 the master's priority drops below the backup's, which preempts.
#[test]
fn track_script_failure_moves_the_vip() {
    let (lab, files) = lab_with_listeners();
    let (d1, d2) = (lab.director(0), lab.director(1));
    let interval = Duration::from_millis(100);
    for p in [150, 100] {
        script_ok(&files.0, p, true);
    }
    let f1 = files.write("d1.yaml", &tracked_yaml(&files.0, 150, "chk", false));
    let v1 = Vrrpd::start(d1, &f1);
    let _v2 = Vrrpd::start(
        d2,
        &files.write("d2.yaml", &tracked_yaml(&files.0, 100, "chk", false)),
    );
    wait_master(&lab, d1, d2, Duration::from_secs(5));
    // The script's period (100 ms) + 3 intervals + slack.
    let gap = failover(
        &lab,
        "track_script (weight 0) fails on the master, v3 100ms",
        d2,
        interval + interval * 3 + SLACK,
        || script_ok(&files.0, 150, false),
    );
    eprintln!("TRACK_SCRIPT weight 0: {} ms", gap.as_millis());
    assert!(lab::wait_until(Duration::from_secs(1), || !has_vip(d1)));
    // Back: director-1 preempts.
    failover(
        &lab,
        "track_script succeeds again",
        d1,
        Duration::from_secs(3),
        || script_ok(&files.0, 150, true),
    );
    // A graceful stop hands over (priority 0, the VIP removed), so the next start begins clean.
    v1.stop();
    wait_master(&lab, d2, d1, Duration::from_secs(3));

    // A weight: 150 - 100 = 50 < 100 while failing; director-1 stays backup-capable (no fault).
    let f1 = files.write(
        "d1w.yaml",
        &tracked_yaml(&files.0, 150, "{name: chk, weight: -100}", false),
    );
    let v1 = Vrrpd::start(d1, &f1);
    wait_master(&lab, d1, d2, Duration::from_secs(5));
    let gap = failover(
        &lab,
        "track_script (weight -100) fails on the master, v3 100ms",
        d2,
        interval + mdi(100, interval) + SLACK,
        || script_ok(&files.0, 150, false),
    );
    eprintln!("TRACK_SCRIPT weight -100: {} ms", gap.as_millis());
    let log = v1.lines().join("\n");
    assert!(
        log.contains("VRRP priority changed") && log.contains("to=50"),
        "director-1 should have logged its priority falling to 50:\n{log}"
    );
    assert!(!log.contains("to=fault"), "a weight is no fault:\n{log}");
}

/// Two instances in a sync group on each director: a failure that only VI_2 tracks (weight 0)
/// on the master moves both VIPs; they come back together.
#[test]
fn sync_group_moves_together() {
    let (lab, files) = lab_with_listeners();
    let (d1, d2) = (lab.director(0), lab.director(1));
    let interval = Duration::from_millis(100);
    for p in [150, 100] {
        script_ok(&files.0, p, true);
    }
    // VI_1 tracks the script with a weight of +1 (never a fault): only VI_2 can fail.
    let y1 = tracked_yaml(&files.0, 150, "{name: chk, weight: 1}", true).replace(
        "    virtual_addresses: [192.168.58.150/32]\n",
        "    virtual_addresses: [192.168.58.150/32]\n    track_script: [chk]\n",
    );
    let y2 = tracked_yaml(&files.0, 100, "{name: chk, weight: 1}", true);
    let v1 = Vrrpd::start(d1, &files.write("d1.yaml", &y1));
    let _v2 = Vrrpd::start(d2, &files.write("d2.yaml", &y2));
    wait_master(&lab, d1, d2, Duration::from_secs(5));
    assert!(lab::wait_until(Duration::from_secs(2), || has_addr(
        d1, VIP2
    ) && !has_addr(
        d2, VIP2
    )));
    let start = Instant::now();
    let gap = failover(
        &lab,
        "sync group: VI_2's script fails on the master",
        d2,
        interval + interval * 3 + SLACK,
        || script_ok(&files.0, 150, false),
    );
    assert!(
        lab::wait_until(Duration::from_secs(1), || has_addr(d2, VIP2)
            && !has_addr(d1, VIP2)),
        "VIP2 did not move with VIP"
    );
    eprintln!(
        "SYNC_GROUP: VIP answered by director-2 after {} ms, VIP2 held by it after {} ms",
        gap.as_millis(),
        start.elapsed().as_millis()
    );
    let log = v1.lines().join("\n");
    assert!(
        log.contains("sync group G: VI_2 is in fault"),
        "VI_1 should have followed VI_2 into fault:\n{log}"
    );
    // Both come back to director-1 together.
    script_ok(&files.0, 150, true);
    assert!(
        lab::wait_until(Duration::from_secs(3), || has_addr(d1, VIP)
            && has_addr(d1, VIP2)
            && !has_addr(d2, VIP)
            && !has_addr(d2, VIP2)),
        "the group did not return to director-1"
    );
}

/// The pid in `lb-ctl vrrp`'s status file of `instance` on `host`, and its state.
fn report(host: &Host, instance: &str) -> Option<(u32, String)> {
    let pins = Path::new("/sys/fs/bpf").join(&host.netns);
    let path = lb_ctl::maps::lock::vrrp_reports_dir(&pins).join(format!("{instance}.json"));
    let text = fs::read_to_string(path).ok()?;
    let r: lb_ctl::vrrp::report::Report = serde_json::from_str(&text).ok()?;
    Some((r.pid, r.state))
}

/// A reload (SIGHUP) that raises the backup's priority above the master's makes it master
/// (same process); one that changes the master's advert interval shows in its adverts on
/// the wire (captured on the client).
#[test]
fn reload_changes_priority_and_interval_in_place() {
    let (lab, files) = lab_with_listeners();
    let (d1, d2) = (lab.director(0), lab.director(1));
    let f1 = files.write("d1.yaml", &vrrp_yaml(150, 3, "100ms", ""));
    let f2 = files.write("d2.yaml", &vrrp_yaml(100, 3, "100ms", ""));
    let mut v1 = Vrrpd::start(d1, &f1);
    let mut v2 = Vrrpd::start(d2, &f2);
    wait_master(&lab, d1, d2, Duration::from_secs(5));
    let pid2 = v2.proc.pid();

    // Priority: director-2 from 100 to 200, then SIGHUP.
    files.write("d2.yaml", &vrrp_yaml(200, 3, "100ms", ""));
    let gap = failover(
        &lab,
        "reload raises the backup's priority to 200",
        d2,
        mdi(200, Duration::from_millis(100)) + SLACK,
        || v2.signal(libc::SIGHUP),
    );
    eprintln!(
        "RELOAD priority: director-2 master {} ms after SIGHUP",
        gap.as_millis()
    );
    assert!(
        lab::wait_until(Duration::from_secs(3), || report(d2, "VI_1")
            .is_some_and(|(pid, state)| pid == pid2 && state == "master")),
        "director-2's status: {:?} (pid {pid2} expected)",
        report(d2, "VI_1")
    );
    assert!(v2.lines().iter().any(|l| l.contains("reconfigured")));

    // Interval: the master (now director-2) from 100 ms to 500 ms; its adverts on the wire.
    let adverts = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.contains("VRRPv3") && l.contains(&d2.addr.to_string()))
            .cloned()
            .collect()
    };
    let cap = lab::Capture::start(lab.client(), "eth0", "ip proto 112")
        .unwrap_or_else(|e| panic!("{e:#}"));
    thread::sleep(Duration::from_secs(1));
    let before = adverts(&cap.lines()).len();
    files.write("d2.yaml", &vrrp_yaml(200, 3, "500ms", ""));
    v2.signal(libc::SIGHUP);
    thread::sleep(Duration::from_millis(300));
    let mark = adverts(&cap.lines()).len();
    thread::sleep(Duration::from_secs(2));
    let lines = cap.stop().unwrap_or_else(|e| panic!("{e:#}"));
    let after = adverts(&lines).len() - mark;
    eprintln!("RELOAD interval: {before} adverts in 1 s at 100ms, {after} in 2 s at 500ms");
    assert!(
        (8..=12).contains(&before),
        "{before} adverts in 1 s at 100 ms"
    );
    assert!((3..=6).contains(&after), "{after} adverts in 2 s at 500 ms");
    assert!(
        adverts(&lines).iter().any(|l| l.contains("intvl 50")),
        "no advert with the new interval (50 cs):\n{}",
        lines.join("\n")
    );
    // Director-1 stayed backup throughout, and its process too.
    assert!(!has_vip(d1));
    assert!(
        v1.proc.try_wait().is_ok_and(|s| s.is_none()),
        "director-1's lb-ctl exited"
    );
}

/// `garp_master_refresh: 500ms`: while master, a gratuitous ARP for the VIP every 500 ms
/// (after the `garp_count` announcements of becoming master), seen on the client.
#[test]
fn garp_master_refresh_repeats_while_master() {
    let (lab, files) = lab_with_listeners();
    let (d1, d2) = (lab.director(0), lab.director(1));
    let extra = "    garp_master_refresh: 500ms\n    garp_master_refresh_repeat: 2\n";
    let _v1 = Vrrpd::start(
        d1,
        &files.write("d1.yaml", &vrrp_yaml(150, 3, "100ms", extra)),
    );
    let _v2 = Vrrpd::start(
        d2,
        &files.write("d2.yaml", &vrrp_yaml(100, 3, "100ms", extra)),
    );
    wait_master(&lab, d1, d2, Duration::from_secs(5));
    // The 3 announcements of becoming master are 100 ms apart: over after 300 ms.
    thread::sleep(Duration::from_millis(500));
    let cap = lab::Capture::start(lab.client(), "eth0", "arp").unwrap_or_else(|e| panic!("{e:#}"));
    thread::sleep(Duration::from_millis(2600));
    let lines = cap.stop().unwrap_or_else(|e| panic!("{e:#}"));
    let garps: Vec<&String> = lines
        .iter()
        .filter(|l| {
            l.contains(&format!("Request who-has {VIP} tell {VIP}"))
                || l.contains(&format!("Reply {VIP} is-at"))
        })
        .collect();
    eprintln!(
        "GARP_REFRESH: {} gratuitous ARPs in 2.6 s (500 ms refresh, 2 each)",
        garps.len()
    );
    assert!(
        (8..=12).contains(&garps.len()),
        "expected 5 refreshes of 2 gratuitous ARPs in 2.6 s:\n{}",
        lines.join("\n")
    );
    assert!(
        garps.iter().all(|l| l.contains(&d1.mac_string())),
        "{garps:?}"
    );
}

/// `lb-ctl run` on both directors with `web` (one real server) checked by an `exec` check
/// that succeeds while the director's own file exists; each director tracks `web` (weight 0).
/// `extra` goes into the service's check block.
fn run_daemons(lab: &Lab, files: &Files, check_extra: &str) -> (Vec<Vrrpd>, Vec<LbCtl>) {
    let rs = lab.server(0);
    let mut daemons = Vec::new();
    let mut ctls = Vec::new();
    for (d, priority) in [(lab.director(0), 150), (lab.director(1), 100)] {
        let up = files.0.join(format!("up-{}", d.name));
        fs::write(&up, "").unwrap_or_else(|e| panic!("{e}"));
        let service = format!(
            "services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    check:\n      \
             type: exec\n      command: \"test -e {}\"\n      interval: 100ms\n      \
             retries: 1\n{check_extra}    backends:\n      - address: {}\n",
            up.display(),
            rs.addr
        );
        let ctl = LbCtl::new(lab, d).unwrap_or_else(|e| panic!("{e:#}"));
        let yaml = vrrp_yaml(priority, 3, "100ms", "    track_service: [web]\n")
            .replace("services: []\n", &service);
        let file = files.write(&format!("{}.yaml", d.name), &yaml);
        let args: Vec<&std::ffi::OsStr> = vec![
            "--pin-dir".as_ref(),
            ctl.pin_dir().as_os_str(),
            "run".as_ref(),
            "-f".as_ref(),
            file.as_os_str(),
            "--iface".as_ref(),
            "eth0".as_ref(),
            "--mode".as_ref(),
            "generic".as_ref(),
            "--detach-on-exit".as_ref(),
        ];
        daemons.push(Vrrpd::spawn(d, &args));
        ctls.push(ctl);
    }
    (daemons, ctls)
}

fn served(lab: &Lab) -> bool {
    matches!(
        http_get(lab.client(), VIP, 80, "/", PROBE),
        Ok((200, body)) if body.trim() == lab.server(0).name
    )
}

/// `track_service`: the master's only backend fails its check there (not on the backup): the
/// master goes to fault and the backup, whose check passes, takes the VIP and serves it.
#[test]
fn track_service_without_backends_moves_the_vip() {
    let lab = Lab::build(&LabSpec {
        directors: 2,
        servers: 1,
        pass_through: false,
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    lab.del_vip(lab.director(0))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let files = Files::new(&lab);
    let (d1, d2) = (lab.director(0), lab.director(1));
    let (daemons, _ctls) = run_daemons(&lab, &files, "");
    assert!(
        lab::wait_until(Duration::from_secs(10), || has_vip(d1) && served(&lab)),
        "director-1 should hold the VIP and serve it"
    );
    let interval = Duration::from_millis(100);
    fs::remove_file(files.0.join(format!("up-{}", d1.name))).unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let (mut failed, mut total) = (0, 0);
    // The check's interval, the daemon's batch of transitions (100 ms), 3 intervals, slack.
    let bound = interval * 2 + interval * 3 + SLACK;
    while !(has_vip(d2) && served(&lab)) {
        failed += 1;
        total += 1;
        assert!(
            start.elapsed() < bound + Duration::from_secs(5),
            "director-2 did not take over: {failed} of {total} requests failed"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let gap = start.elapsed();
    eprintln!(
        "FAILOVER track_service (no healthy backend on the master), v3 100ms: served by \
         director-2 after {} ms; {failed} of {total} probes failed (bound {} ms)",
        gap.as_millis(),
        bound.as_millis()
    );
    assert!(gap <= bound, "took {gap:?}, more than {bound:?}");
    assert!(lab::wait_until(Duration::from_secs(1), || !has_vip(d1)));
    let log = daemons[0].lines().join("\n");
    assert!(
        log.contains("tracked service web failed"),
        "director-1 should say why it left:\n{log}"
    );
    // The check passes again: director-1 leaves fault and preempts.
    fs::write(files.0.join(format!("up-{}", d1.name)), "").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        lab::wait_until(Duration::from_secs(5), || has_vip(d1) && !has_vip(d2)),
        "director-1 did not take the VIP back"
    );
    // A reload of `lb-ctl run` (SIGHUP) raising director-2's priority to 200: it becomes
    // master, the same process (no restart of the daemon).
    let mut daemons = daemons;
    let f2 = files.0.join(format!("{}.yaml", d2.name));
    let text = fs::read_to_string(&f2).unwrap_or_else(|e| panic!("{e}"));
    fs::write(&f2, text.replace("priority: 100", "priority: 200"))
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = daemons[1].proc.pid();
    let start = Instant::now();
    daemons[1].signal(libc::SIGHUP);
    assert!(
        lab::wait_until(Duration::from_secs(3), || has_vip(d2)
            && !has_vip(d1)
            && served(&lab)),
        "director-2 did not become master after the reload"
    );
    eprintln!(
        "RELOAD lb-ctl run: director-2 (priority 100 -> 200) master and serving {} ms after SIGHUP",
        start.elapsed().as_millis()
    );
    assert!(daemons[1].proc.try_wait().is_ok_and(|s| s.is_none()));
    assert_eq!(daemons[1].proc.pid(), pid);
    let log = daemons[1].lines().join("\n");
    assert!(
        log.contains("applied without a restart") && log.contains("reconfigured"),
        "{log}"
    );
    for d in daemons {
        d.stop();
    }
}

/// `alpha`: the backend of a new daemon starts down and gets no packet (its counter stays 0,
/// the client is not served) until its first good check; then it is served.
#[test]
fn alpha_backend_gets_no_traffic_before_its_first_good_check() {
    let lab = Lab::build(&LabSpec {
        directors: 1,
        servers: 1,
        pass_through: false,
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    let files = Files::new(&lab);
    let d1 = lab.director(0);
    let rs = lab.server(0);
    let up = files.0.join("up");
    let yaml = format!(
        "services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    check:\n      type: exec\n      \
         command: \"test -e {}\"\n      interval: 100ms\n      alpha: true\n    backends:\n      \
         - address: {}\n",
        up.display(),
        rs.addr
    );
    let ctl = LbCtl::new(&lab, d1).unwrap_or_else(|e| panic!("{e:#}"));
    let file = files.write("d1.yaml", &yaml);
    let args: Vec<&std::ffi::OsStr> = vec![
        "--pin-dir".as_ref(),
        ctl.pin_dir().as_os_str(),
        "run".as_ref(),
        "-f".as_ref(),
        file.as_os_str(),
        "--iface".as_ref(),
        "eth0".as_ref(),
        "--mode".as_ref(),
        "generic".as_ref(),
        "--detach-on-exit".as_ref(),
    ];
    let daemon = Vrrpd::spawn(d1, &args);
    let packets = |ctl: &LbCtl| {
        let stats = lb_tests::stats::parse(&ctl.stats_json().unwrap_or_else(|e| panic!("{e:#}")));
        let web = lb_tests::stats::service(&stats, "web");
        lb_tests::stats::num(lb_tests::stats::backend(web, rs.addr), "packets")
    };
    assert!(
        lab::wait_until(Duration::from_secs(10), || ctl
            .stats_json()
            .is_ok_and(|j| j.contains("\"web\""))),
        "the daemon did not come up"
    );
    // Never checked good yet: 10 requests, none served, the backend's counter stays 0.
    let served_before = (0..10).filter(|_| served(&lab)).count();
    assert_eq!(served_before, 0, "served before the first good check");
    assert_eq!(
        packets(&ctl),
        0,
        "the alpha backend got packets before its first good check"
    );
    fs::write(&up, "").unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    assert!(
        lab::wait_until(Duration::from_secs(5), || served(&lab)),
        "not served after the first good check"
    );
    eprintln!(
        "ALPHA: 0 of 10 requests served and 0 backend packets before the first good check; \
         served {} ms after the check could pass; backend packets then {}",
        start.elapsed().as_millis(),
        packets(&ctl)
    );
    assert!(packets(&ctl) > 0);
    daemon.stop();
}
