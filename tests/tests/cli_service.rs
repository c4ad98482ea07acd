//! Running `lb-ctl run` as a systemd service (`examples/lb-ctl.service`): the unit file passes
//! `systemd-analyze verify`; the daemon, started as the unit starts it (only the unit's
//! capabilities, `NOTIFY_SOCKET` set, `--log-format json`), loads and attaches the data path,
//! tells readiness, reloads and stops on the socket, and logs JSON objects. Root, BPF and
//! namespaces are needed; without them the tests fail saying what is missing.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use lb_tests::{
    cli::{CliLab, SERVICES_V1},
    daemon::Daemon,
    lbctl::{find_lb_ctl, lb_ctl, require_root},
};
use serde_json::Value;

fn unit_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lb-ctl.service")
}

/// The value of the unit's `KEY=` line.
fn unit_value(key: &str) -> String {
    let text = std::fs::read_to_string(unit_file()).expect("examples/lb-ctl.service");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_string()
}

#[test]
fn the_unit_file_verifies() {
    require_root().expect("root");
    let bin = find_lb_ctl().expect("lb-ctl binary");
    // The pages `Documentation=man:lb-ctl-run(1)` names, found through MANPATH.
    let man = std::env::temp_dir().join(format!("lb-ctl-unit-man-{}", std::process::id()));
    let man1 = man.join("man1");
    lb_ctl(&["man", &man1.display().to_string()]).ok();
    // ExecStart names /usr/local/bin/lb-ctl: in a mount namespace of its own, a tmpfs over
    // /usr/local/bin holds it for verify, and nothing outside that namespace changes.
    let script = format!(
        "mount -t tmpfs tmpfs /usr/local/bin && ln -s '{}' /usr/local/bin/lb-ctl && \
         systemd-analyze verify '{}'",
        bin.display(),
        unit_file().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("MANPATH", &man)
        .output()
        .expect("running unshare (util-linux) and systemd-analyze (systemd)");
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&man);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify said:\n{said}"
    );
    assert_eq!(unit_value("Type"), "notify");
    assert_eq!(unit_value("ExecReload"), "/bin/kill -HUP $MAINPID");
}

/// The unit's capabilities as a bit mask, and as setpriv's `-all,+bpf,...`.
fn unit_capabilities() -> (u64, String) {
    let caps = unit_value("CapabilityBoundingSet");
    assert_eq!(caps, unit_value("AmbientCapabilities"));
    let mut mask = 0u64;
    let mut arg = String::from("-all");
    for cap in caps.split_whitespace() {
        let bit = match cap {
            "CAP_NET_ADMIN" => 12,
            "CAP_NET_RAW" => 13,
            "CAP_SYS_ADMIN" => 21,
            "CAP_PERFMON" => 38,
            "CAP_BPF" => 39,
            other => panic!("the test does not know {other}"),
        };
        mask |= 1 << bit;
        arg.push_str(&format!(
            ",+{}",
            cap.trim_start_matches("CAP_").to_lowercase()
        ));
    }
    (mask, arg)
}

/// The next datagram on `sock`, within `within`.
fn next_state(sock: &UnixDatagram, within: Duration, want: &str) -> String {
    sock.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification `{want}` within {within:?}: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_daemon_notifies_systemd_with_the_units_capabilities() {
    let net = CliLab::new();
    let env = net.env();
    let file = net.file("services.yaml", SERVICES_V1);
    let socket_path = env.ctl.files_dir().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).expect("binding the notify socket");
    let (mask, setpriv_caps) = unit_capabilities();

    // As the unit starts it: the unit's capabilities only (root's others dropped from the
    // bounding set), entered into the director's namespace before (setns needs
    // CAP_SYS_ADMIN, which the unit does not give).
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", net.director().netns))
        .arg("setpriv")
        .arg(format!("--bounding-set={setpriv_caps}"))
        .arg(find_lb_ctl().expect("lb-ctl binary"))
        .arg("--pin-dir")
        .arg(net.pins())
        .args([
            "--log-format",
            "json",
            "run",
            "-f",
            &file,
            "--iface",
            "eth0",
        ])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("RUST_LOG", "info");
    let started = Instant::now();
    let mut daemon = Daemon::spawn(cmd);

    // READY=1 once the first apply is done: the services are in the maps by then.
    let ready = next_state(&sock, Duration::from_secs(15), "READY=1");
    assert_eq!(ready, "READY=1");
    eprintln!("READY=1 {:?} after the start", started.elapsed());
    let list = net.list();
    assert!(
        list.contains("attached to eth0") && list.contains("TCP  192.168.58.133:80"),
        "{list}"
    );
    // It runs with exactly the unit's capabilities.
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid()))
        .expect("the daemon's status");
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).expect("CapEff"))
        .expect("CapEff line");
    assert_eq!(eff, mask, "CapEff {eff:x}, the unit's {mask:x}");

    // SIGHUP (ExecReload): RELOADING=1, then READY=1 once the file is applied again.
    daemon.signal(libc::SIGHUP);
    assert_eq!(
        next_state(&sock, Duration::from_secs(5), "RELOADING=1"),
        "RELOADING=1"
    );
    assert_eq!(
        next_state(&sock, Duration::from_secs(5), "READY=1"),
        "READY=1"
    );
    daemon.wait_log(
        Duration::from_secs(5),
        |l| l.contains("SIGHUP: reloading"),
        "SIGHUP: reloading",
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    daemon.signal(libc::SIGTERM);
    assert_eq!(
        next_state(&sock, Duration::from_secs(5), "STOPPING=1"),
        "STOPPING=1"
    );
    let exit = daemon
        .wait_timeout(Duration::from_secs(5))
        .expect("lb-ctl run did not stop within 5 s of SIGTERM");
    assert!(exit.success(), "{exit}");

    // --log-format json: every line is one object with a timestamp, a level and the fields,
    // the message among them.
    let lines = daemon.lines();
    assert!(lines.len() >= 3, "{lines:?}");
    for line in &lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object: {e}: {line}"));
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.contains('T')),
            "{line}"
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .contains(&v["level"].as_str().unwrap_or("")),
            "{line}"
        );
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    let running = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("checked above"))
        .find(|v| v["fields"]["message"] == "running")
        .unwrap_or_else(|| panic!("no `running` line: {lines:?}"));
    assert_eq!(running["level"], "INFO");
    assert_eq!(running["fields"]["services"], 3, "{running}");
}
