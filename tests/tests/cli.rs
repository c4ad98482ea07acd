//! `lb-ctl` end to end: the real binary (`target/debug/lb-ctl`, from `cargo build -p lb-ctl`;
//! `cargo xtask test` builds it) attached in native mode to a veth inside network namespaces
//! each test makes for itself (see `docs/lab.md` for the rules kept here).
//!
//! ```text
//!  director      eth0 02:00:00:00:00:86 .134/24, VIP .133/32 ──┐
//!  real-server-1 eth0 02:00:00:00:00:87 .135/24 ───────────────┼── switch (bridge br0)
//!  real-server-2 eth0 02:00:00:00:00:88 .136/24 ───────────────┘
//! ```
//!
//! Every name carries the per-run prefix `lbc<pid>-<n>` (n counts the tests of this process):
//! the namespaces `<prefix>-d`, `-s`, `-a`, `-b`, the pin directory `/sys/fs/bpf/<prefix>`
//! (given to every command as `--pin-dir`) and the directory of the service files under the
//! temporary directory. Nothing is put in the root namespace: the veths are created inside the
//! switch namespace with their other end in a host's namespace, and every `lb-ctl` command
//! runs with `--netns <prefix>-d`. [`Net`] removes all of it when dropped (also while a failed
//! test unwinds), and each test first sweeps what crashed runs left (`lbc<pid>-...` whose pid
//! is dead). The only traffic is five UDP datagrams in `stats_in_all_three_formats`.

use std::{
    fs,
    io::Read as _,
    net::UdpSocket,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use lb_common::names;
use serde_json::Value;

/// Prefix of every namespace, pin directory and file directory these tests make.
const PREFIX: &str = "lbc";
const VIP: &str = "192.168.58.133";
const DIRECTOR_MAC: &str = "02:00:00:00:00:86";
const SERVER_1: &str = "192.168.58.135";
const SERVER_2: &str = "192.168.58.136";
const SERVER_1_MAC: &str = "02:00:00:00:00:87";
const SERVER_2_MAC: &str = "02:00:00:00:00:88";
/// How long one `lb-ctl` (or `ip`, `bpftool`) command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------------------------------------
// Service files

/// Three services; `web` and `dns` have both servers as backends.
const SERVICES_V1: &str = "\
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    protocol: tcp
    scheduler: rr
    backends:
      - address: 192.168.58.135
        weight: 2
      - address: 192.168.58.136
  - name: dns
    vip: 192.168.58.133
    port: 5353
    protocol: udp
    backends:
      - address: 192.168.58.135
      - address: 192.168.58.136
  - name: syslog
    vip: 192.168.58.133
    port: 514
    protocol: udp
    backends:
      - address: 192.168.58.136
";

/// V1 with `web` renamed to `www`, one of its backends reweighted and the other drained, one
/// backend of `dns` removed and `syslog` removed.
const SERVICES_V2: &str = "\
services:
  - name: www
    vip: 192.168.58.133
    port: 80
    protocol: tcp
    scheduler: rr
    backends:
      - address: 192.168.58.135
        weight: 5
      - address: 192.168.58.136
        weight: 0
  - name: dns
    vip: 192.168.58.133
    port: 5353
    protocol: udp
    backends:
      - address: 192.168.58.135
";

/// Three errors: an unknown key (line 5), a backend port that differs from the service's
/// (line 8) and a duplicate name (line 9).
const SERVICES_BAD: &str = "\
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    colour: blue
    backends:
      - address: 192.168.58.135
        port: 8080
  - name: web
    vip: 192.168.58.133
    port: 443
    backends:
      - address: 192.168.58.136
";

/// A backend nobody answers ARP for, and one that is not on the director's link.
const SERVICES_UNRESOLVED: &str = "\
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    backends:
      - address: 192.168.58.135
      - address: 192.168.58.199
      - address: 10.1.2.3
";

// ---------------------------------------------------------------------------------------------
// Running commands

/// What a finished command printed, and how it ended.
struct Out {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Asserts that the command succeeded.
    #[track_caller]
    fn ok(self) -> Out {
        assert!(self.status.success(), "expected success:\n{self}");
        self
    }

    /// Asserts that the command failed the way `lb-ctl` reports errors: exit status 1, a
    /// message on stderr and nothing on stdout.
    #[track_caller]
    fn fails(self) -> Out {
        assert_eq!(
            self.status.code(),
            Some(1),
            "expected exit status 1:\n{self}"
        );
        assert!(
            self.stderr.starts_with("lb-ctl: "),
            "expected an `lb-ctl: ...` error:\n{self}"
        );
        assert_eq!(self.stdout, "", "expected nothing on stdout:\n{self}");
        self
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` ended with {}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to its end, at most [`COMMAND_TIMEOUT`] (then it is killed and the test fails).
fn run(mut cmd: Command) -> Out {
    let what = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
    let reader = |mut pipe: Box<dyn std::io::Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = reader(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = reader(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{what}` did not finish within {COMMAND_TIMEOUT:?}; killed it");
            }
            Err(e) => panic!("waiting for `{what}`: {e}"),
        }
    };
    Out {
        what,
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// The `lb-ctl` binary next to this test's directory: a test runs as
/// `target/debug/deps/cli-HASH`, and `cargo build -p lb-ctl` puts `target/debug/lb-ctl`.
fn lb_ctl_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running test");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("lb-ctl"))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "{} does not exist: run `cargo build -p lb-ctl` first (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// `lb-ctl ARGS` with no namespace and no pin directory of a lab (for `--help` and errors).
fn lb_ctl(args: &[&str]) -> Out {
    let mut cmd = Command::new(lb_ctl_bin());
    cmd.env_remove("LB_PIN_DIR").args(args);
    run(cmd)
}

/// `ip ARGS`, which must succeed.
#[track_caller]
fn ip(args: &[&str]) -> String {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let out = run(cmd);
    assert!(out.status.success(), "test setup failed:\n{out}");
    out.stdout
}

/// `bpftool ARGS`, however it ends.
fn bpftool(args: &[&str]) -> Out {
    let found = Command::new("bpftool")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "this test needs bpftool to see which BPF programs and maps exist; install the \
         bpftool package (`cargo xtask setup` does)"
    );
    let mut cmd = Command::new("bpftool");
    cmd.args(args);
    run(cmd)
}

/// Whether the kernel still has the BPF program (`"prog"`) or map (`"map"`) with this id.
fn bpf_object_exists(kind: &str, id: u64) -> bool {
    let out = bpftool(&[kind, "show", "id", &id.to_string()]);
    if out.status.success() {
        return true;
    }
    assert!(
        out.stderr.contains("No such file or directory"),
        "unexpected bpftool failure:\n{out}"
    );
    false
}

/// Waits up to 5 s for the program or map `id` to be gone (the kernel frees a detached link,
/// and with it the program, from a work queue); true if it went.
fn bpf_object_goes_away(kind: &str, id: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if !bpf_object_exists(kind, id) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// The network of one test

/// The namespaces, the pin directory and the service files of one test; dropping it removes
/// them all.
struct Net {
    director: String,
    switch: String,
    servers: [String; 2],
    pin_dir: PathBuf,
    files: PathBuf,
}

impl Net {
    /// Builds the network of the module documentation. Panics with what is missing when this
    /// is not root, or `ip` or the `lb-ctl` binary is missing.
    fn new() -> Net {
        preflight();
        sweep_leftovers();
        let prefix = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let net = Net {
            director: format!("{prefix}-d"),
            switch: format!("{prefix}-s"),
            servers: [format!("{prefix}-a"), format!("{prefix}-b")],
            pin_dir: Path::new("/sys/fs/bpf").join(&prefix),
            files: std::env::temp_dir().join(&prefix),
        };
        // What a crashed run of a process with this same pid left behind.
        net.remove_all();
        // From here on, dropping `net` removes whatever was made, also when a step panics.
        fs::create_dir_all(&net.files).expect("creating the directory of the service files");
        for ns in net.namespaces() {
            ip(&["netns", "add", ns]);
            // No IPv6 (no router solicitations or DAD on the wire); set before eth0 exists,
            // so `default` applies to it.
            lb_ctl::net::netns::run_in(ns, || {
                for scope in ["all", "default"] {
                    let path = format!("/proc/sys/net/ipv6/conf/{scope}/disable_ipv6");
                    if Path::new(&path).exists() {
                        fs::write(&path, "1")?;
                    }
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("test setup failed: disabling IPv6 in {ns}: {e:#}"));
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let sw = net.switch.as_str();
        ip(&[
            "-n",
            sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
        ]);
        ip(&["-n", sw, "link", "set", "br0", "up"]);
        let hosts = [
            (&net.director, "sw-d", "86", "192.168.58.134/24"),
            (&net.servers[0], "sw-a", "87", "192.168.58.135/24"),
            (&net.servers[1], "sw-b", "88", "192.168.58.136/24"),
        ];
        for (ns, port, mac, addr) in hosts {
            // Made inside the switch namespace, the host end moved straight into its own.
            ip(&[
                "-n",
                sw,
                "link",
                "add",
                port,
                "address",
                &format!("02:00:00:00:01:{mac}"),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "address",
                &format!("02:00:00:00:00:{mac}"),
                "netns",
                ns,
            ]);
            ip(&["-n", sw, "link", "set", port, "master", "br0"]);
            ip(&["-n", sw, "link", "set", port, "up"]);
            ip(&["-n", ns, "addr", "add", addr, "dev", "eth0"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
        }
        ip(&[
            "-n",
            &net.director,
            "addr",
            "add",
            &format!("{VIP}/32"),
            "dev",
            "eth0",
        ]);
        net
    }

    /// Another director interface `name` with `mac`, on the switch as `port`.
    fn add_director_port(&self, name: &str, mac: &str, port: &str) {
        let sw = self.switch.as_str();
        ip(&[
            "-n",
            sw,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            name,
            "address",
            mac,
            "netns",
            &self.director,
        ]);
        ip(&["-n", sw, "link", "set", port, "master", "br0"]);
        ip(&["-n", sw, "link", "set", port, "up"]);
        ip(&["-n", &self.director, "link", "set", name, "up"]);
    }

    fn namespaces(&self) -> [&String; 4] {
        [
            &self.director,
            &self.switch,
            &self.servers[0],
            &self.servers[1],
        ]
    }

    fn pin_dir(&self) -> String {
        self.pin_dir.display().to_string()
    }

    /// `lb-ctl --pin-dir PIN_DIR --netns DIRECTOR ARGS`.
    fn ctl(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new(lb_ctl_bin());
        cmd.env_remove("LB_PIN_DIR")
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--netns")
            .arg(&self.director)
            .args(args);
        run(cmd)
    }

    /// Writes a service file and returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.files.join(name);
        fs::write(&path, text).expect("writing a service file");
        path.display().to_string()
    }

    /// `ip -n DIRECTOR link show eth0`.
    fn director_link(&self) -> String {
        ip(&["-n", &self.director, "link", "show", "eth0"])
    }

    /// Attaches in native mode and returns the id of the attached program.
    fn attach(&self) -> u64 {
        self.ctl(&["attach", "eth0"]).ok();
        let link = self.director_link();
        xdp_prog_id(&link).unwrap_or_else(|| panic!("no XDP program on eth0 after attach:\n{link}"))
    }

    fn apply(&self, name: &str, text: &str) -> Out {
        let file = self.file(name, text);
        self.ctl(&["apply", "-f", &file])
    }

    fn list(&self) -> String {
        self.ctl(&["list"]).ok().stdout
    }

    fn stats_json(&self) -> Value {
        let out = self.ctl(&["stats", "--json"]).ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("stats --json is not JSON ({e}):\n{out}"))
    }

    /// Sends `count` UDP datagrams with `payload` from real-server-1 (`.135`) to the VIP.
    fn send_udp_from_server_1(&self, port: u16, payload: &'static [u8], count: usize) {
        lb_ctl::net::netns::run_in(&self.servers[0], move || {
            let socket = UdpSocket::bind((SERVER_1, 0))?;
            for _ in 0..count {
                socket.send_to(payload, (VIP, port))?;
                thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("sending UDP from real-server-1: {e:#}"));
    }

    fn remove_all(&self) {
        // The pins first: unpinning the link detaches the program.
        remove_pin_dir(&self.pin_dir);
        // And the lock lb-ctl keeps for them under /run/lb-ctl.
        remove_pin_dir(&lb_ctl::maps::lock::runtime_dir(&self.pin_dir));
        for ns in self.namespaces() {
            delete_netns(ns);
        }
        let _ = fs::remove_dir_all(&self.files);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove_all();
        for ns in self.namespaces() {
            if Path::new("/run/netns").join(ns).exists() {
                eprintln!("could not delete test namespace {ns}");
            }
        }
        if self.pin_dir.exists() {
            eprintln!("could not remove {}", self.pin_dir.display());
        }
    }
}

fn remove_pin_dir(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("removing {}: {e}", dir.display()),
    }
}

fn delete_netns(ns: &str) {
    if Path::new("/run/netns").join(ns).exists() {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn preflight() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "these tests need root: they create network namespaces and veth pairs and load XDP \
         programs (euid is {euid}); run them as root (cargo xtask test)"
    );
    let ip_ok = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        ip_ok.is_ok_and(|s| s.success()),
        "these tests need iproute2's `ip` to build their namespaces; install iproute2"
    );
    lb_ctl_bin();
}

/// Removes namespaces, pin directories and file directories `lbc<pid>-...` left by test
/// processes that no longer exist.
fn sweep_leftovers() {
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            return false;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !rest[digits.len()..].starts_with('-') {
            return false;
        }
        match digits.parse::<u32>() {
            Ok(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => false,
        }
    };
    let names = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for name in names(Path::new("/sys/fs/bpf")) {
        if dead(&name) {
            remove_pin_dir(&Path::new("/sys/fs/bpf").join(name));
        }
    }
    // The runtime directories (locks) of those pin directories: /run/lb-ctl/sys_fs_bpf_<name>.
    let run = Path::new(lb_ctl::maps::lock::RUN_ROOT);
    for name in names(run) {
        if name.strip_prefix("sys_fs_bpf_").is_some_and(dead) {
            remove_pin_dir(&run.join(name));
        }
    }
    for name in names(Path::new("/run/netns")) {
        if dead(&name) {
            delete_netns(&name);
        }
    }
    let tmp = std::env::temp_dir();
    for name in names(&tmp) {
        if dead(&name) {
            let _ = fs::remove_dir_all(tmp.join(name));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading what lb-ctl and ip print

/// The id in `prog/xdp id N` of `ip link show`.
fn xdp_prog_id(link: &str) -> Option<u64> {
    let rest = &link[link.find("prog/xdp id ")? + "prog/xdp id ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The words of the first line of `ip link show` (flags, `mtu 1500`, `xdp`, `qdisc`, ...).
fn link_words(link: &str) -> Vec<&str> {
    link.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}

/// The service and backend rows of `lb-ctl list`, each with its columns joined by one space
/// (the two header lines and the summary line left out).
fn list_rows(list: &str) -> Vec<String> {
    let mut lines = list.lines();
    let summary = lines.next().unwrap_or_default();
    assert!(
        summary.starts_with("XDP director (lb-ctl): "),
        "unexpected list output:\n{list}"
    );
    assert_eq!(
        lines.next().map(normalize).as_deref(),
        Some("Prot LocalAddress:Port Scheduler Flags Name"),
        "{list}"
    );
    assert_eq!(
        lines.next().map(normalize).as_deref(),
        Some(
            "-> RemoteAddress:Port Forward Weight ActiveConn InActConn Conns InPkts InBytes State"
        ),
        "{list}"
    );
    lines.map(normalize).collect()
}

fn normalize(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The service named `name` in `stats --json`.
#[track_caller]
fn service<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["services"]
        .as_array()
        .expect("services[] in stats --json")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no service {name} in stats --json:\n{stats:#}"))
}

/// The backend with `address` of a service of `stats --json`.
#[track_caller]
fn backend<'a>(service: &'a Value, address: &str) -> &'a Value {
    service["backends"]
        .as_array()
        .expect("backends[] in stats --json")
        .iter()
        .find(|b| b["address"] == address)
        .unwrap_or_else(|| panic!("no backend {address} in:\n{service:#}"))
}

/// The packets of the data-path reason `reason` in `stats --json`.
#[track_caller]
fn datapath(stats: &Value, reason: &str) -> (String, u64) {
    let r = stats["datapath"]
        .as_array()
        .expect("datapath[] in stats --json")
        .iter()
        .find(|r| r["reason"] == reason)
        .unwrap_or_else(|| panic!("no reason {reason} in:\n{stats:#}"));
    (
        r["action"].as_str().expect("action").to_string(),
        r["packets"].as_u64().expect("packets"),
    )
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn attach_native_pins_everything_and_twice_is_a_no_op() {
    let net = Net::new();
    let dir = net.pin_dir();

    // Before attach, commands that need the maps say what to do.
    let out = net.ctl(&["list"]).fails();
    assert!(
        out.stderr.contains(&format!(
            "nothing is attached: no maps are pinned under {dir}"
        )),
        "{out}"
    );
    assert!(xdp_prog_id(&net.director_link()).is_none());

    let out = net.ctl(&["attach", "eth0"]).ok();
    assert_eq!(
        out.stdout,
        format!("attached to eth0 in native mode; pinned under {dir}\n"),
        "{out}"
    );
    for name in names::MAPS
        .iter()
        .copied()
        .chain([names::PROGRAM, "link-eth0"])
    {
        assert!(
            net.pin_dir.join(name).exists(),
            "{name} is not pinned under {dir}"
        );
    }

    // Native (driver) mode: `xdp`, not `xdpgeneric`, and lb-ctl's program.
    let link = net.director_link();
    assert!(
        link.contains(&format!("link/ether {DIRECTOR_MAC} ")),
        "{link}"
    );
    assert!(
        link_words(&link).contains(&"xdp"),
        "not native XDP:\n{link}"
    );
    let id = xdp_prog_id(&link).unwrap_or_else(|| panic!("no XDP program on eth0:\n{link}"));
    let out = bpftool(&["-j", "prog", "show", "id", &id.to_string()]);
    assert!(out.status.success(), "{out}");
    let prog: Value = serde_json::from_str(&out.stdout).expect("bpftool -j prog show");
    assert_eq!(prog["name"], names::PROGRAM, "{prog:#}");
    assert_eq!(prog["type"], "xdp", "{prog:#}");

    // Attaching again changes nothing.
    let out = net.ctl(&["attach", "eth0"]).ok();
    assert_eq!(
        out.stdout,
        format!(
            "eth0 is already attached (pinned under {dir}); nothing to do \
             (to change its mode, detach it first)\n"
        ),
        "{out}"
    );
    assert_eq!(xdp_prog_id(&net.director_link()), Some(id));

    // No services yet.
    let list = net.list();
    assert!(
        list.starts_with(
            "XDP director (lb-ctl): 0 service(s), attached to eth0; connection table 0 of 262144 in use\n"
        ),
        "{list}"
    );
    assert_eq!(list_rows(&list), Vec::<String>::new(), "{list}");
    let stats = net.stats_json();
    assert_eq!(stats["services"], Value::Array(Vec::new()), "{stats:#}");
}

#[test]
fn apply_reapply_dry_run_and_change() {
    let net = Net::new();
    net.attach();

    let file = net.file("services.yaml", SERVICES_V1);
    let out = net.ctl(&["apply", "-f", &file]).ok();
    assert_eq!(out.stderr, "", "no warnings expected:\n{out}");
    assert_eq!(
        out.stdout,
        format!(
            "+ service web: TCP 192.168.58.133:80 rr\n\
             +   backend 192.168.58.135:80 weight 2 (service web)\n\
             +   backend 192.168.58.136:80 weight 1 (service web)\n\
             + service dns: UDP 192.168.58.133:5353 wrr\n\
             +   backend 192.168.58.135:5353 weight 1 (service dns)\n\
             +   backend 192.168.58.136:5353 weight 1 (service dns)\n\
             + service syslog: UDP 192.168.58.133:514 wrr\n\
             +   backend 192.168.58.136:514 weight 1 (service syslog)\n\
             applied {file}: 8 change(s)\n"
        ),
        "{out}"
    );

    let list_v1 = net.list();
    assert!(
        list_v1.starts_with("XDP director (lb-ctl): 3 service(s), attached to eth0; "),
        "{list_v1}"
    );
    assert_eq!(
        list_rows(&list_v1),
        [
            "TCP 192.168.58.133:80 rr web",
            "-> 192.168.58.135:80 Route 2 0 0 0 0 0 up",
            "-> 192.168.58.136:80 Route 1 0 0 0 0 0 up",
            "UDP 192.168.58.133:514 wrr syslog",
            "-> 192.168.58.136:514 Route 1 0 0 0 0 0 up",
            "UDP 192.168.58.133:5353 wrr dns",
            "-> 192.168.58.135:5353 Route 1 0 0 0 0 0 up",
            "-> 192.168.58.136:5353 Route 1 0 0 0 0 0 up",
        ],
        "{list_v1}"
    );
    // The MACs are the real servers' own, from ARP.
    let stats_v1 = net.stats_json();
    for name in ["web", "dns"] {
        let s = service(&stats_v1, name);
        assert_eq!(backend(s, SERVER_1)["mac"], SERVER_1_MAC, "{s:#}");
        assert_eq!(backend(s, SERVER_2)["mac"], SERVER_2_MAC, "{s:#}");
        assert_eq!(backend(s, SERVER_1)["usable"], true, "{s:#}");
    }

    // The same file again: nothing to do.
    let out = net.ctl(&["apply", "-f", &file]).ok();
    assert_eq!(
        out.stdout,
        format!("no changes: the data path already matches {file}\n"),
        "{out}"
    );
    assert_eq!(out.stderr, "", "{out}");

    // A dry run of the changed file says what would change, and changes nothing.
    let file_v2 = net.file("services-v2.yaml", SERVICES_V2);
    let changes = "\
~ service www: renamed from web
~   backend 192.168.58.135:80 weight 2 -> 5 (service www)
~   backend 192.168.58.136:80 weight 1 -> 0 (drain) (service www)
-   backend 192.168.58.136:5353 (service dns)
- service syslog: UDP 192.168.58.133:514
";
    let out = net.ctl(&["apply", "-f", &file_v2, "--dry-run"]).ok();
    assert_eq!(
        out.stdout,
        format!("{changes}dry run: 5 change(s) not applied\n"),
        "{out}"
    );
    assert_eq!(out.stderr, "", "{out}");
    assert_eq!(net.list(), list_v1, "a dry run changed the data path");
    // Services and backends, not the data-path reasons: the director's own traffic (ICMP,
    // ARP) may arrive meanwhile.
    assert_eq!(
        net.stats_json()["services"],
        stats_v1["services"],
        "a dry run changed the data path"
    );

    // For real.
    let out = net.ctl(&["apply", "-f", &file_v2]).ok();
    assert_eq!(
        out.stdout,
        format!("{changes}applied {file_v2}: 5 change(s)\n"),
        "{out}"
    );
    let list_v2 = net.list();
    assert!(
        list_v2.starts_with("XDP director (lb-ctl): 2 service(s), attached to eth0; "),
        "{list_v2}"
    );
    assert_eq!(
        list_rows(&list_v2),
        [
            "TCP 192.168.58.133:80 rr www",
            "-> 192.168.58.135:80 Route 5 0 0 0 0 0 up",
            "-> 192.168.58.136:80 Route 0 0 0 0 0 0 draining",
            "UDP 192.168.58.133:5353 wrr dns",
            "-> 192.168.58.135:5353 Route 1 0 0 0 0 0 up",
        ],
        "{list_v2}"
    );
    let out = net.ctl(&["apply", "-f", &file_v2]).ok();
    assert_eq!(
        out.stdout,
        format!("no changes: the data path already matches {file_v2}\n"),
        "{out}"
    );

    // And back: the first file undoes it all.
    let out = net.ctl(&["apply", "-f", &file]).ok();
    assert!(
        out.stdout
            .ends_with(&format!("applied {file}: 6 change(s)\n")),
        "{out}"
    );
    assert_eq!(list_rows(&net.list()), list_rows(&list_v1));
}

#[test]
fn a_file_with_errors_applies_nothing() {
    let net = Net::new();
    net.attach();
    net.apply("services.yaml", SERVICES_V1).ok();
    let before = net.list();

    let bad = net.file("bad.yaml", SERVICES_BAD);
    let out = net.ctl(&["apply", "-f", &bad]).fails();
    let diagnostics: Vec<&str> = out
        .stderr
        .lines()
        .map(|l| l.strip_prefix("lb-ctl: ").unwrap_or(l))
        .filter(|l| l.starts_with(&bad))
        .collect();
    let expected = [
        format!("{bad}:5: services[0].colour: "),
        format!("{bad}:8: services[0].backends[0].port: "),
        format!("{bad}:9: services[1].name: "),
    ];
    assert_eq!(diagnostics.len(), expected.len(), "{out}");
    for (line, want) in diagnostics.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()),
            "expected {want}...:\n{out}"
        );
    }
    assert!(
        out.stderr.ends_with("3 errors; nothing was applied\n"),
        "{out}"
    );
    assert_eq!(
        net.list(),
        before,
        "a file with errors changed the data path"
    );

    // The same with --dry-run, and for a file that does not exist.
    let out = net.ctl(&["apply", "-f", &bad, "--dry-run"]).fails();
    assert!(
        out.stderr.contains("3 errors; nothing was applied"),
        "{out}"
    );
    let missing = net.files.join("missing.yaml").display().to_string();
    let out = net.ctl(&["apply", "-f", &missing]).fails();
    assert!(
        out.stderr
            .contains(&format!("{missing}: cannot read the file: ")),
        "{out}"
    );
    assert_eq!(net.list(), before);
}

#[test]
fn unresolvable_and_off_link_backends_are_reported() {
    let net = Net::new();
    net.attach();
    let file = net.file("services.yaml", SERVICES_UNRESOLVED);
    let out = net
        .ctl(&["apply", "-f", &file, "--resolve-timeout", "500ms"])
        .ok();
    assert!(
        out.stdout
            .starts_with("+ service web: TCP 192.168.58.133:80 wrr\n"),
        "{out}"
    );
    assert!(
        out.stdout
            .ends_with(&format!("applied {file}: 4 change(s)\n")),
        "{out}"
    );
    let warnings: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "two warnings expected:\n{out}");
    let nobody = warnings
        .iter()
        .find(|w| w.starts_with("warning: backend 192.168.58.199:80 of service web: no MAC"))
        .unwrap_or_else(|| panic!("no warning about 192.168.58.199:\n{out}"));
    assert!(nobody.ends_with("it gets no traffic"), "{nobody}");
    let off_link = warnings
        .iter()
        .find(|w| w.starts_with("warning: backend 10.1.2.3:80 of service web: no MAC"))
        .unwrap_or_else(|| panic!("no warning about 10.1.2.3:\n{out}"));
    assert!(
        off_link.contains("10.1.2.3 is not on the link of eth0"),
        "{off_link}"
    );

    assert_eq!(
        list_rows(&net.list()),
        [
            "TCP 192.168.58.133:80 wrr web",
            "-> 10.1.2.3:80 Route 1 0 0 0 0 0 unresolved",
            "-> 192.168.58.135:80 Route 1 0 0 0 0 0 up",
            "-> 192.168.58.199:80 Route 1 0 0 0 0 0 unresolved",
        ]
    );
    let stats = net.stats_json();
    let web = service(&stats, "web");
    assert_eq!(backend(web, SERVER_1)["usable"], true, "{web:#}");
    for addr in ["192.168.58.199", "10.1.2.3"] {
        assert_eq!(backend(web, addr)["usable"], false, "{web:#}");
    }

    // Applying it again changes nothing, and still says which backends get no traffic.
    let out = net
        .ctl(&["apply", "-f", &file, "--resolve-timeout", "200ms"])
        .ok();
    assert_eq!(
        out.stdout,
        format!("no changes: the data path already matches {file}\n"),
        "{out}"
    );
    assert_eq!(out.stderr.lines().count(), 2, "{out}");
    assert!(out.stderr.contains("192.168.58.199:80"), "{out}");
    assert!(out.stderr.contains("10.1.2.3:80"), "{out}");

    // Once someone holds 192.168.58.199 (real-server-2), applying again resolves it.
    ip(&[
        "-n",
        &net.servers[1],
        "addr",
        "add",
        "192.168.58.199/24",
        "dev",
        "eth0",
    ]);
    let out = net
        .ctl(&["apply", "-f", &file, "--resolve-timeout", "2s"])
        .ok();
    assert_eq!(
        out.stdout,
        format!(
            "~   backend 192.168.58.199:80 mac 00:00:00:00:00:00 -> {SERVER_2_MAC}, resolved \
             (service web)\napplied {file}: 1 change(s)\n"
        ),
        "{out}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out}");
    assert!(out.stderr.contains("10.1.2.3:80"), "{out}");
    assert_eq!(
        list_rows(&net.list()),
        [
            "TCP 192.168.58.133:80 wrr web",
            "-> 10.1.2.3:80 Route 1 0 0 0 0 0 unresolved",
            "-> 192.168.58.135:80 Route 1 0 0 0 0 0 up",
            "-> 192.168.58.199:80 Route 1 0 0 0 0 0 up",
        ]
    );
}

#[test]
fn stats_in_all_three_formats() {
    const PAYLOAD: &[u8] = b"lb-ctl cli test";
    const SENT: u64 = 5;
    // IPv4 header, UDP header, payload: what the counters count as bytes.
    const IP_BYTES: u64 = 20 + 8 + PAYLOAD.len() as u64;

    let net = Net::new();
    net.attach();
    net.apply("services.yaml", SERVICES_V1).ok();

    // Nothing sent yet: every counter of the services is 0, and the text has every row.
    let text = net.ctl(&["stats"]).ok().stdout;
    let rows: Vec<String> = text.lines().map(normalize).collect();
    assert_eq!(
        rows[0], "Prot LocalAddress:Port / Backend Conns InPkts InBytes",
        "{text}"
    );
    for row in [
        "TCP 192.168.58.133:80 (web) 0 0 0",
        "-> 192.168.58.135:80 0 0 0",
        "UDP 192.168.58.133:514 (syslog) 0 0 0",
        "UDP 192.168.58.133:5353 (dns) 0 0 0",
        "-> 192.168.58.136:5353 0 0 0",
        "Data path (packets by what was done with them):",
    ] {
        assert!(rows.iter().any(|r| r == row), "no row `{row}` in:\n{text}");
    }
    for reason in lb_common::Reason::ALL {
        assert!(
            rows.iter()
                .any(|r| r.starts_with(&format!("{} ", reason.name()))),
            "no data-path row for {} in:\n{text}",
            reason.name()
        );
    }

    // Five datagrams from real-server-1 to the UDP service.
    net.send_udp_from_server_1(5353, PAYLOAD, SENT as usize);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stats = net.stats_json();
    while service(&stats, "dns")["packets"].as_u64() < Some(SENT) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        stats = net.stats_json();
    }
    // Nothing more arrives later.
    thread::sleep(Duration::from_millis(200));
    let stats = net.stats_json();

    // JSON: every field the manual names, and exactly what was sent.
    let dns = service(&stats, "dns");
    assert_eq!(dns["vip"], VIP, "{dns:#}");
    assert_eq!(dns["port"], 5353, "{dns:#}");
    assert_eq!(dns["protocol"], "udp", "{dns:#}");
    assert_eq!(dns["scheduler"], "wrr", "{dns:#}");
    assert_eq!(dns["packets"], SENT, "{dns:#}");
    assert_eq!(dns["bytes"], SENT * IP_BYTES, "{dns:#}");
    assert_eq!(dns["connections"], 1, "one flow:\n{dns:#}");
    let backends = dns["backends"].as_array().expect("backends[]");
    assert_eq!(backends.len(), 2, "{dns:#}");
    for b in backends {
        for key in [
            "address",
            "port",
            "weight",
            "mac",
            "usable",
            "packets",
            "bytes",
            "connections",
            "active_connections",
            "inactive_connections",
        ] {
            assert!(b.get(key).is_some(), "no {key} in backend:\n{b:#}");
        }
    }
    // One flow: all of it to one backend.
    let (hit, idle): (Vec<&Value>, Vec<&Value>) = backends.iter().partition(|b| b["packets"] != 0);
    assert_eq!(hit.len(), 1, "one backend gets the flow:\n{dns:#}");
    let (hit, idle) = (hit[0], idle[0]);
    assert_eq!(hit["packets"], SENT, "{dns:#}");
    assert_eq!(hit["bytes"], SENT * IP_BYTES, "{dns:#}");
    assert_eq!(hit["connections"], 1, "{dns:#}");
    assert_eq!(
        hit["active_connections"], 0,
        "UDP is never active:\n{dns:#}"
    );
    assert_eq!(hit["inactive_connections"], 1, "{dns:#}");
    assert_eq!(idle["packets"], 0, "{dns:#}");
    for name in ["web", "syslog"] {
        let s = service(&stats, name);
        assert_eq!(s["packets"], 0, "{s:#}");
        assert_eq!(s["connections"], 0, "{s:#}");
    }
    assert_eq!(stats["flows"], 1, "{stats:#}");
    let reasons = stats["datapath"].as_array().expect("datapath[]");
    assert_eq!(reasons.len(), lb_common::Reason::ALL.len(), "{stats:#}");
    assert_eq!(datapath(&stats, "forwarded"), ("tx".to_string(), SENT));
    assert_eq!(datapath(&stats, "drop_no_backend"), ("drop".to_string(), 0));
    assert_eq!(datapath(&stats, "pass_not_ipv4").0, "pass");

    let hit_addr = hit["address"].as_str().expect("address");
    let bytes = SENT * IP_BYTES;

    // list: the flow is an InActConn of the backend that got it.
    let list = net.list();
    assert!(
        list.contains("; connection table 1 of 262144 in use\n"),
        "{list}"
    );
    let rows = list_rows(&list);
    let row = format!("-> {hit_addr}:5353 Route 1 0 1 1 {SENT} {bytes} up");
    assert!(rows.contains(&row), "no row `{row}` in:\n{list}");

    // Text.
    let text = net.ctl(&["stats"]).ok().stdout;
    let rows: Vec<String> = text.lines().map(normalize).collect();
    for row in [
        format!("UDP 192.168.58.133:5353 (dns) 1 {SENT} {bytes}"),
        format!("-> {hit_addr}:5353 1 {SENT} {bytes}"),
        format!("forwarded tx {SENT}"),
        "connections tracked: 1".to_string(),
    ] {
        assert!(rows.contains(&row), "no row `{row}` in:\n{text}");
    }

    // Prometheus.
    let prom = net.ctl(&["stats", "--prometheus"]).ok().stdout;
    let labels = |name: &str, port: u16, proto: &str| {
        format!("service=\"{name}\",vip=\"{VIP}\",port=\"{port}\",protocol=\"{proto}\"")
    };
    for line in [
        "# TYPE lb_service_packets_total counter".to_string(),
        "# TYPE lb_backend_active_connections gauge".to_string(),
        format!(
            "lb_service_packets_total{{{}}} {SENT}",
            labels("dns", 5353, "udp")
        ),
        format!(
            "lb_service_bytes_total{{{}}} {bytes}",
            labels("dns", 5353, "udp")
        ),
        format!("lb_service_packets_total{{{}}} 0", labels("web", 80, "tcp")),
        format!(
            "lb_backend_packets_total{{{},backend=\"{hit_addr}:5353\"}} {SENT}",
            labels("dns", 5353, "udp")
        ),
        format!(
            "lb_backend_weight{{{},backend=\"192.168.58.135:80\"}} 2",
            labels("web", 80, "tcp")
        ),
        format!("lb_datapath_packets_total{{reason=\"forwarded\",action=\"tx\"}} {SENT}"),
        "lb_flows 1".to_string(),
    ] {
        assert!(
            prom.lines().any(|l| l == line),
            "no line `{line}` in:\n{prom}"
        );
    }
    // Every sample belongs to a family declared before it.
    let mut declared = Vec::new();
    for l in prom.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            declared.push(rest.split(' ').next().unwrap_or_default().to_string());
        } else if !l.starts_with('#') {
            let name = l.split(['{', ' ']).next().unwrap_or_default();
            assert!(
                declared.last().is_some_and(|d| d == name),
                "sample `{l}` outside its family in:\n{prom}"
            );
        }
    }

    // --watch: two redraws, with rate columns, then it ends by itself.
    let start = Instant::now();
    let out = net.ctl(&["stats", "--watch", "0.2", "--count", "2"]).ok();
    assert!(start.elapsed() >= Duration::from_millis(400), "{out}");
    let headers: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("Prot "))
        .collect();
    assert_eq!(headers.len(), 2, "two redraws expected:\n{out}");
    assert!(
        headers
            .iter()
            .all(|h| normalize(h).ends_with("CPS InPPS InBPS")),
        "{out}"
    );
    assert!(
        !out.stdout.contains('\x1b'),
        "no screen control codes into a pipe:\n{out}"
    );
    let out = net.ctl(&["stats", "--watch", "0"]).fails();
    assert!(
        out.stderr
            .contains("--watch takes a positive number of seconds"),
        "{out}"
    );
}

#[test]
fn detach_after_apply_removes_the_link_the_pins_and_the_program() {
    let net = Net::new();
    let dir = net.pin_dir();
    let id = net.attach();
    net.apply("services.yaml", SERVICES_V1).ok();
    let out = bpftool(&["-j", "prog", "show", "id", &id.to_string()]);
    assert!(out.status.success(), "{out}");
    let prog: Value = serde_json::from_str(&out.stdout).expect("bpftool -j prog show");
    let map_ids: Vec<u64> = prog["map_ids"]
        .as_array()
        .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    assert!(!map_ids.is_empty(), "{prog:#}");

    let out = net.ctl(&["detach", "eth0"]).ok();
    assert_eq!(
        out.stdout,
        format!("detached from eth0; no interface left, removed the pins under {dir}\n"),
        "{out}"
    );
    let link = net.director_link();
    assert!(
        !link_words(&link).iter().any(|w| w.starts_with("xdp")) && xdp_prog_id(&link).is_none(),
        "XDP still attached:\n{link}"
    );
    assert!(!net.pin_dir.exists(), "{dir} is still there");
    assert!(
        bpf_object_goes_away("prog", id),
        "program {id} still loaded after detach"
    );
    for m in map_ids {
        assert!(
            bpf_object_goes_away("map", m),
            "map {m} still exists after detach"
        );
    }

    // Detaching again: a clear error.
    let out = net.ctl(&["detach", "eth0"]).fails();
    assert_eq!(
        out.stderr,
        format!("lb-ctl: eth0 is not attached under {dir} (nothing is attached)\n"),
        "{out}"
    );
    let out = net.ctl(&["list"]).fails();
    assert!(out.stderr.contains("nothing is attached"), "{out}");
}

#[test]
fn attach_then_detach_twice_leaves_no_program() {
    let net = Net::new();
    let dir = net.pin_dir();
    let mut ids = Vec::new();
    for round in 0..2 {
        let id = net.attach();
        assert!(bpf_object_exists("prog", id));
        assert!(
            !ids.contains(&id),
            "round {round}: the old program {id} again"
        );
        let out = net.ctl(&["detach", "eth0"]).ok();
        assert!(out.stdout.starts_with("detached from eth0;"), "{out}");
        assert!(
            xdp_prog_id(&net.director_link()).is_none(),
            "round {round}: XDP still attached"
        );
        assert!(!net.pin_dir.exists(), "round {round}: {dir} is still there");
        assert!(
            bpf_object_goes_away("prog", id),
            "round {round}: program {id} still loaded after detach"
        );
        ids.push(id);
    }
}

#[test]
fn a_second_interface_shares_the_maps() {
    let net = Net::new();
    let dir = net.pin_dir();
    net.add_director_port("eth1", "02:00:00:00:02:86", "sw-d2");
    let first = net.attach();
    net.apply("services.yaml", SERVICES_V1).ok();
    let rows = list_rows(&net.list());

    let out = net.ctl(&["attach", "eth1"]).ok();
    assert_eq!(
        out.stdout,
        format!("attached to eth1 in native mode; pinned under {dir}\n"),
        "{out}"
    );
    let link1 = ip(&["-n", &net.director, "link", "show", "eth1"]);
    let second = xdp_prog_id(&link1).unwrap_or_else(|| panic!("no XDP on eth1:\n{link1}"));
    assert_ne!(
        first, second,
        "each interface gets its own program instance"
    );
    assert_eq!(xdp_prog_id(&net.director_link()), Some(first));
    assert!(net.pin_dir.join("link-eth1").exists());
    let list = net.list();
    assert!(
        list.starts_with("XDP director (lb-ctl): 3 service(s), attached to eth0, eth1; "),
        "{list}"
    );
    assert_eq!(list_rows(&list), rows, "the services are shared");

    // Detaching one keeps the other, the maps and the services.
    let out = net.ctl(&["detach", "eth0"]).ok();
    assert_eq!(out.stdout, "detached from eth0\n", "{out}");
    assert!(xdp_prog_id(&net.director_link()).is_none());
    assert_eq!(
        xdp_prog_id(&ip(&["-n", &net.director, "link", "show", "eth1"])),
        Some(second)
    );
    assert!(!net.pin_dir.join("link-eth0").exists());
    for name in [names::SERVICES, names::PROGRAM, "link-eth1"] {
        assert!(net.pin_dir.join(name).exists(), "{name} was unpinned");
    }
    let list = net.list();
    assert!(
        list.starts_with("XDP director (lb-ctl): 3 service(s), attached to eth1; "),
        "{list}"
    );
    assert_eq!(list_rows(&list), rows);

    let out = net.ctl(&["detach", "eth1"]).ok();
    assert_eq!(
        out.stdout,
        format!("detached from eth1; no interface left, removed the pins under {dir}\n"),
        "{out}"
    );
    assert!(!net.pin_dir.exists(), "{dir} is still there");
    for id in [first, second] {
        assert!(
            bpf_object_goes_away("prog", id),
            "program {id} still loaded after the last detach"
        );
    }
}

#[test]
fn failed_attach_leaves_nothing_and_generic_mode_works() {
    let net = Net::new();
    let dir = net.pin_dir();

    let out = net.ctl(&["attach", "nosuch0"]).fails();
    assert_eq!(
        out.stderr, "lb-ctl: no interface nosuch0 in this network namespace\n",
        "{out}"
    );
    assert!(!net.pin_dir.exists(), "{dir} made by a failed attach");

    // A bridge has a MAC but no native XDP: the error says what to try.
    ip(&["-n", &net.director, "link", "add", "brx", "type", "bridge"]);
    ip(&["-n", &net.director, "link", "set", "brx", "up"]);
    let out = net.ctl(&["attach", "brx"]).fails();
    assert!(
        out.stderr
            .starts_with("lb-ctl: attaching to brx in native mode failed "),
        "{out}"
    );
    assert!(
        out.stderr.contains("Operation not supported"),
        "the kernel's reason is kept: {out}"
    );
    assert!(
        out.stderr
            .contains("try `lb-ctl attach brx --mode generic`"),
        "{out}"
    );
    assert!(!net.pin_dir.exists(), "{dir} left by a failed first attach");

    let out = net.ctl(&["attach", "eth0", "--mode", "generic"]).ok();
    assert_eq!(
        out.stdout,
        format!("attached to eth0 in generic mode; pinned under {dir}\n"),
        "{out}"
    );
    let link = net.director_link();
    assert!(link_words(&link).contains(&"xdpgeneric"), "{link}");
    let id = xdp_prog_id(&link).unwrap_or_else(|| panic!("no XDP on eth0:\n{link}"));
    net.ctl(&["detach", "eth0"]).ok();
    assert!(xdp_prog_id(&net.director_link()).is_none());
    assert!(!net.pin_dir.exists(), "{dir} is still there");
    assert!(
        bpf_object_goes_away("prog", id),
        "program {id} still loaded"
    );
}

/// A second interface whose attach fails must not stay registered in the shared IFACES map
/// (`lb-ctl` registers it before attaching and cleans up only after a failed *first* attach;
/// see the report: fails until `pins::attach` removes the entry on failure).
#[test]
fn failed_attach_of_a_second_interface_registers_nothing() {
    let net = Net::new();
    net.attach();
    let ifaces = net.pin_dir.join(names::IFACES).display().to_string();
    let entries = || -> Vec<Value> {
        let out = bpftool(&["-j", "map", "dump", "pinned", &ifaces]);
        assert!(out.status.success(), "{out}");
        serde_json::from_str::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_else(|| panic!("bpftool map dump is not a JSON array:\n{out}"))
    };
    let before = entries();
    assert_eq!(before.len(), 1, "eth0 registered:\n{before:?}");

    ip(&["-n", &net.director, "link", "add", "brx", "type", "bridge"]);
    ip(&["-n", &net.director, "link", "set", "brx", "up"]);
    net.ctl(&["attach", "brx"]).fails();
    assert!(!net.pin_dir.join("link-brx").exists());
    let list = net.list();
    assert!(list.contains(", attached to eth0; "), "{list}");
    assert_eq!(
        entries(),
        before,
        "the failed attach of brx left brx registered in IFACES"
    );
}

#[test]
fn help_is_the_manual() {
    let out = lb_ctl(&["--help"]).ok();
    for text in [
        "LVS-DR",
        "Typical use:",
        "lb-ctl apply -f services.yaml",
        "attach",
        "detach",
        "apply",
        "list",
        "stats",
        "--pin-dir",
        "--netns",
    ] {
        assert!(out.stdout.contains(text), "no `{text}` in:\n{out}");
    }
    let out = lb_ctl(&["apply", "--help"]).ok();
    for text in [
        "Example file:",
        "services:",
        "- address: 192.168.58.135",
        "--dry-run",
        "--resolve-timeout",
    ] {
        assert!(out.stdout.contains(text), "no `{text}` in:\n{out}");
    }
    let out = lb_ctl(&["stats", "--help"]).ok();
    for text in ["--json", "--prometheus", "--watch", "lb_*"] {
        assert!(out.stdout.contains(text), "no `{text}` in:\n{out}");
    }
    let out = lb_ctl(&["attach", "--help"]).ok();
    assert!(out.stdout.contains("--mode"), "{out}");
}

#[test]
fn an_unknown_namespace_is_a_clear_error() {
    preflight();
    let name = format!("{PREFIX}{}-nosuchns", std::process::id());
    assert!(!Path::new("/run/netns").join(&name).exists());
    let pin_dir = format!("/sys/fs/bpf/{name}");
    // Read-only commands only: a bug that ignored --netns must not touch the root namespace.
    for args in [&["list"][..], &["stats", "--json"]] {
        let mut full = vec!["--pin-dir", &pin_dir, "--netns", &name];
        full.extend_from_slice(args);
        let out = lb_ctl(&full).fails();
        assert!(
            out.stderr.contains(&format!(
                "opening network namespace /run/netns/{name} (does it exist?"
            )),
            "{out}"
        );
    }
    assert!(!Path::new(&pin_dir).exists());
}
