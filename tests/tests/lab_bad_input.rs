//! End to end: bad service files do not stop the daemon or the data path, a half-written file is
//! never applied, and `lb-ctl apply` refuses backends that are the director itself.
//!
//! The lab is the seed topology (`lb_tests::lab`: client .100, director-1 .134 with the VIP
//! .133, real servers .135 and .136 serving HTTP). `lb-ctl run` runs on director-1 with its log
//! collected (`lb_tests::daemon`). All traffic is a bounded request loop with deadlines;
//! everything is removed on drop, also on failure. Without root, BPF or namespaces the tests
//! fail saying what is missing.

use std::{
    ffi::CString,
    fs,
    io::Write as _,
    net::Ipv4Addr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    env::Env,
    lab::{self, Lab, http_get},
    lab_spec,
};

const VIP: Ipv4Addr = lab::DEFAULT_VIP;
/// The daemon's default settle time for files changed in place.
const SETTLE: Duration = Duration::from_secs(5);

/// A service `name` on the VIP's `port`, round robin over both real servers.
fn service(name: &str, port: u16) -> String {
    format!(
        "  - name: {name}\n    vip: {VIP}\n    port: {port}\n    scheduler: rr\n    backends:\n      \
         - address: {}\n      - address: {}\n",
        lab::server_addr(1),
        lab::server_addr(2)
    )
}

/// The lab, `lb-ctl` attached to director-1's eth0.
fn attached() -> Env {
    Env::attached(&lab_spec!(), &[])
}

/// Panics if the daemon has exited.
fn assert_running(env: &mut Env, after: &str) {
    let d = env.daemon_mut();
    if let Some(status) = d.exit_status() {
        panic!(
            "lb-ctl run exited ({status}) after {after}; its log:\n{}",
            d.lines().join("\n")
        );
    }
}

/// Puts `make`'s file in place of `file` with a rename (a new inode at the path).
fn rename_over(file: &Path, make: impl FnOnce(&Path)) {
    let tmp = file.with_extension("new");
    let _ = fs::remove_file(&tmp);
    make(&tmp);
    fs::rename(&tmp, file).unwrap_or_else(|e| panic!("renaming over {}: {e}", file.display()));
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// Requests to the VIP from the client, one every 20 ms, until stopped (at most 10,000, each
/// with a 2 s deadline); counts what succeeded and what failed.
struct Client {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<Vec<String>>>,
}

impl Client {
    fn start(lab: &Lab) -> Client {
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let host = lab.client().clone();
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let handle = thread::spawn(move || {
            let mut errors = Vec::new();
            for _ in 0..10_000 {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                match http_get(&host, VIP, 80, "/", Duration::from_secs(2)) {
                    Ok((200, _)) => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok((status, body)) => {
                        f.fetch_add(1, Ordering::SeqCst);
                        errors.push(format!("status {status}: {body}"));
                    }
                    Err(e) => {
                        f.fetch_add(1, Ordering::SeqCst);
                        errors.push(format!("{e:#}"));
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
            errors
        });
        Client {
            stop,
            ok,
            failed,
            handle: Some(handle),
        }
    }

    /// Stops the loop; (succeeded, failed, the first errors).
    fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self
            .handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            errors.into_iter().take(5).collect(),
        )
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[test]
fn bad_files_are_refused_while_forwarding_goes_on_and_half_files_are_never_applied() {
    let mut env = attached();
    let good = format!(
        "services:\n{}{}",
        service("web", 80),
        service("extra", 8080)
    );
    let file = env
        .ctl
        .write_file(&good)
        .unwrap_or_else(|e| panic!("{e:#}"));
    env.start_daemon(&file, &[]);
    let extra_line = format!("{VIP}:8080");
    assert!(env.list().contains(&extra_line), "{}", env.list());
    let client = Client::start(&env.lab);
    thread::sleep(Duration::from_millis(500));

    // 1. 80 KB of nested lists, written in place: refused once it has settled.
    let skip = env.daemon_mut().lines().len();
    let nested = "[".repeat(40 * 1024) + &"]".repeat(40 * 1024);
    fs::write(&file, &nested).unwrap_or_else(|e| panic!("{e}"));
    let (line, took) = env.daemon_mut().wait_log_after(
        skip,
        SETTLE + Duration::from_secs(5),
        |l| l.contains("reload refused") && l.contains("nested more than 64 deep"),
        "the nested file refused",
    );
    eprintln!("nested file refused {took:?} after it was written: {line}");
    assert!(
        took >= SETTLE - Duration::from_secs(1),
        "{took:?}: not after the settle time"
    );
    assert_running(&mut env, "the nested file");

    // 2. A symlink to /dev/zero renamed over the file: refused at once, nothing read.
    let skip = env.daemon_mut().lines().len();
    rename_over(&file, |tmp| {
        std::os::unix::fs::symlink("/dev/zero", tmp).unwrap_or_else(|e| panic!("{e}"))
    });
    let (line, took) = env.daemon_mut().wait_log_after(
        skip,
        Duration::from_secs(4),
        |l| l.contains("reload refused") && l.contains("is a character device"),
        "/dev/zero refused",
    );
    eprintln!("/dev/zero refused after {took:?}: {line}");
    assert_running(&mut env, "/dev/zero");

    // 3. A FIFO renamed over the file (no writer): refused at once, without blocking.
    let skip = env.daemon_mut().lines().len();
    rename_over(&file, mkfifo);
    let (line, took) = env.daemon_mut().wait_log_after(
        skip,
        Duration::from_secs(4),
        |l| l.contains("reload refused") && l.contains("is a FIFO"),
        "the FIFO refused",
    );
    eprintln!("FIFO refused after {took:?}: {line}");
    assert_running(&mut env, "the FIFO");
    // The daemon still answers to SIGHUP (it is not stuck in the FIFO).
    let skip = env.daemon_mut().lines().len();
    env.daemon_mut().signal(libc::SIGHUP);
    env.daemon_mut().wait_log_after(
        skip,
        Duration::from_secs(4),
        |l| l.contains("reload refused") && l.contains("is a FIFO"),
        "the FIFO refused on SIGHUP",
    );

    // A backend that is the director's own address, renamed over the file: refused at once,
    // naming the file, line and field.
    let skip = env.daemon_mut().lines().len();
    let own = format!("{good}      - address: {}\n", lab::director_addr(1));
    rename_over(&file, |tmp| {
        fs::write(tmp, &own).unwrap_or_else(|e| panic!("{e}"))
    });
    let (line, _) = env.daemon_mut().wait_log_after(
        skip,
        Duration::from_secs(4),
        |l| l.contains("reload refused") && l.contains("is an address of this director"),
        "the director's own address refused",
    );
    assert!(
        line.contains(&format!(
            "{}:16: services[1].backends[2].address: 192.168.58.134",
            file.display()
        )),
        "{line}"
    );
    assert_running(&mut env, "a backend that is the director");

    // The good file back, by rename: reloaded at once, nothing to change.
    let skip = env.daemon_mut().lines().len();
    rename_over(&file, |tmp| {
        fs::write(tmp, &good).unwrap_or_else(|e| panic!("{e}"))
    });
    env.daemon_mut().wait_log_after(
        skip,
        Duration::from_secs(4),
        |l| l.contains("reload: no changes"),
        "the good file reloaded with no changes",
    );

    // 4. Half-written in place: the first half alone is valid YAML without `extra`; the whole
    // file adds `more`. `extra` must never disappear; `more` comes only after the settle time.
    let full = format!("{good}{}", service("more", 8081));
    let cut = full
        .find("  - name: extra")
        .unwrap_or_else(|| unreachable!());
    let (first, second) = full.split_at(cut);
    assert!(lb_ctl::config::parse(first, "first-half.yaml").is_ok());
    let skip = env.daemon_mut().lines().len();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file)
        .unwrap_or_else(|e| panic!("{e}"));
    f.write_all(first.as_bytes())
        .and_then(|()| f.flush())
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let mut lists = 0;
    let mut wrote_second: Option<Instant> = None;
    let more_line = format!("{VIP}:8081");
    let applied_after = loop {
        if wrote_second.is_none() && started.elapsed() >= Duration::from_millis(2500) {
            f.write_all(second.as_bytes())
                .and_then(|()| f.flush())
                .unwrap_or_else(|e| panic!("{e}"));
            wrote_second = Some(Instant::now());
        }
        let list = env.list();
        lists += 1;
        assert!(
            list.contains(&extra_line),
            "`extra` disappeared {:?} after the first half was written:\n{list}",
            started.elapsed()
        );
        if let Some(at) = wrote_second
            && list.contains(&more_line)
        {
            break at.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the complete file was not applied within 20 s; the log:\n{}",
            env.daemon_mut().lines()[skip..].join("\n")
        );
        thread::sleep(Duration::from_millis(100));
    };
    drop(f);
    eprintln!(
        "half-written file: `extra` present in all {lists} listings; the complete file applied \
         {applied_after:?} after its second half was written"
    );
    assert!(
        applied_after >= SETTLE - Duration::from_secs(1),
        "applied {applied_after:?} after the last write, before the settle time"
    );
    let stats = env.ctl.stats_json().unwrap_or_else(|e| panic!("{e:#}"));
    for name in ["\"web\"", "\"extra\"", "\"more\""] {
        assert!(stats.contains(name), "{name} missing from stats:\n{stats}");
    }
    assert!(
        !env.daemon_mut().lines()[skip..]
            .iter()
            .any(|l| l.contains("applied") && l.contains("service extra")),
        "the first half was applied; the log:\n{}",
        env.daemon_mut().lines()[skip..].join("\n")
    );
    assert_running(&mut env, "the half-written file");

    let (ok, failed, errors) = client.finish();
    eprintln!("client: {ok} requests answered, {failed} failed");
    assert_eq!(failed, 0, "requests failed meanwhile: {errors:#?}");
    assert!(ok >= 100, "only {ok} requests were made");
}

#[test]
fn apply_refuses_backends_that_are_the_director_and_changes_nothing() {
    let env = attached();
    env.ctl
        .apply(&format!("services:\n{}", service("web", 80)))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let before = env.list();
    let director = lab::director_addr(1);
    for (bad, what) in [
        (
            director,
            "is an address of this director (192.168.58.134/24 on eth0)",
        ),
        (
            Ipv4Addr::new(192, 168, 58, 255),
            "is the broadcast address of the director's subnet 192.168.58.0/24 on eth0",
        ),
    ] {
        let text = format!("services:\n{}      - address: {bad}\n", service("web", 80));
        let file = env
            .ctl
            .write_file(&text)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let path = file.to_str().unwrap_or_else(|| unreachable!());
        let out = env
            .ctl
            .run(&["apply", "-f", path])
            .unwrap_or_else(|e| panic!("{e:#}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "apply with backend {bad} succeeded: {stderr}"
        );
        let expected = format!("{path}:9: services[0].backends[2].address: {bad} {what}");
        assert!(
            stderr.contains(&expected),
            "expected `{expected}` in:\n{stderr}"
        );
        assert!(stderr.contains("nothing was applied"), "{stderr}");
        assert_eq!(
            env.list(),
            before,
            "apply with backend {bad} changed the data path"
        );
    }
}
