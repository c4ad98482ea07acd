//! What the tests of the `lb-ctl` binary's commands (`tests/cli_*.rs`) share: a lab whose
//! director-1 they drive with exact commands ([`CliLab`]), a service file, and readers of what
//! `ip link`, `lb-ctl list` and `bpftool` print.
//!
//! The lab is the seed topology without servers (`lb_tests::lab`: director-1 `.134` with the
//! VIP `.133` on `eth0`, MAC `02:00:00:00:00:86`; real servers `.135` and `.136`, MACs
//! `...:87` and `...:88`, answering ARP only). Dropping a [`CliLab`] detaches, removes the pins
//! and the service files, and deletes the namespaces, also while a failed test unwinds.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    env::Env,
    lab::{Host, LabSpec},
    lbctl::{COMMAND_TIMEOUT, Out, run_with_deadline},
    stats,
};

/// Three services; `web` and `dns` have both servers as backends.
pub const SERVICES_V1: &str = "\
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

/// The lab and `lb-ctl` for director-1, driven command by command.
pub struct CliLab {
    env: Env,
}

impl CliLab {
    /// Builds the lab (module doc); nothing is attached.
    pub fn new() -> CliLab {
        CliLab {
            env: Env::build(&LabSpec {
                start_servers: false,
                ..LabSpec::default()
            }),
        }
    }

    /// director-1.
    pub fn director(&self) -> &Host {
        self.env.lab.director(0)
    }

    /// Real server `i`, counted from 0.
    pub fn server(&self, i: usize) -> &Host {
        self.env.lab.server(i)
    }

    /// The lab and its `lb-ctl`, e.g. to start the daemon.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The pin directory every command gets.
    pub fn pins(&self) -> &Path {
        self.env.ctl.pin_dir()
    }

    /// [`CliLab::pins`] as text, as lb-ctl prints it.
    pub fn pin_dir(&self) -> String {
        self.pins().display().to_string()
    }

    /// `lb-ctl --netns <director-1> --pin-dir <pins> ARGS`, however it ends.
    pub fn ctl(&self, args: &[&str]) -> Out {
        self.env.ctl.out(args)
    }

    /// Writes a service file `name` and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        path
    }

    /// The path of a file `name` in the directory of the service files.
    pub fn path(&self, name: &str) -> String {
        self.env.ctl.files_dir().join(name).display().to_string()
    }

    /// `lb-ctl apply -f` of a new service file `name` with `text`.
    pub fn apply(&self, name: &str, text: &str) -> Out {
        let file = self.file(name, text);
        self.ctl(&["apply", "-f", &file])
    }

    /// `lb-ctl list`, which must succeed.
    pub fn list(&self) -> String {
        self.ctl(&["list"]).ok().stdout
    }

    /// `lb-ctl stats --json`, parsed.
    pub fn stats_json(&self) -> Value {
        self.env.stats()
    }

    /// `ip link show IFACE` in director-1.
    pub fn link(&self, iface: &str) -> String {
        self.director()
            .exec_ok(&["ip", "link", "show", iface])
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `ip link show eth0` in director-1.
    pub fn director_link(&self) -> String {
        self.link("eth0")
    }

    /// Attaches to `eth0` in native mode and returns the id of the attached program.
    pub fn attach(&self) -> u64 {
        self.ctl(&["attach", "eth0"]).ok();
        let link = self.director_link();
        xdp_prog_id(&link).unwrap_or_else(|| panic!("no XDP program on eth0 after attach:\n{link}"))
    }

    /// Runs `ip` commands (one per line) in director-1; they must succeed.
    pub fn director_ip(&self, cmds: &[&str]) {
        let cmds: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
        self.director()
            .ip_batch(&cmds)
            .unwrap_or_else(|e| panic!("test setup failed: {e:#}"));
    }

    /// Gives director-1 a second link `iface` with `mac`, on the switch as `port`.
    pub fn add_director_port(&self, iface: &str, mac: [u8; 6], port: &str) {
        self.env
            .lab
            .add_link(self.director(), iface, mac, port)
            .unwrap_or_else(|e| panic!("test setup failed: {e:#}"));
    }

    /// Sends `count` UDP datagrams with `payload` from the client to `vip:port`, 10 ms apart.
    pub fn send_udp_from_client(
        &self,
        vip: Ipv4Addr,
        port: u16,
        payload: &'static [u8],
        count: usize,
    ) {
        let from = self.env.client().addr;
        self.env
            .client()
            .run_in(move || {
                let socket = std::net::UdpSocket::bind((from, 0))?;
                for _ in 0..count {
                    socket.send_to(payload, (vip, port))?;
                    thread::sleep(Duration::from_millis(10));
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("sending UDP from the client: {e:#}"));
    }
}

impl Default for CliLab {
    fn default() -> Self {
        Self::new()
    }
}

/// The id in `prog/xdp id N` of `ip link show`.
pub fn xdp_prog_id(link: &str) -> Option<u64> {
    let rest = &link[link.find("prog/xdp id ")? + "prog/xdp id ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The words of the first line of `ip link show` (flags, `mtu 1500`, `xdp`, `qdisc`, ...).
pub fn link_words(link: &str) -> Vec<&str> {
    link.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}

/// The service and backend rows of `lb-ctl list`, each with its columns joined by one space
/// (the two header lines and the summary line, checked here, left out).
#[track_caller]
pub fn list_rows(list: &str) -> Vec<String> {
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

/// The words of `line` joined by one space.
pub fn normalize(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The action and the packets of the data-path reason `reason` in `stats --json`.
#[track_caller]
pub fn datapath(stats: &Value, reason: &str) -> (String, u64) {
    let r = stats::reason(stats, reason);
    (
        r["action"].as_str().expect("action").to_string(),
        stats::num(r, "packets"),
    )
}

/// `bpftool ARGS`, however it ends; panics if bpftool is not installed.
pub fn bpftool(args: &[&str]) -> Out {
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
    Out::of(
        format!("bpftool {}", args.join(" ")),
        run_with_deadline(cmd, COMMAND_TIMEOUT),
    )
}

/// Whether the kernel still has the BPF program (`"prog"`) or map (`"map"`) with this id.
pub fn bpf_object_exists(kind: &str, id: u64) -> bool {
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
pub fn bpf_object_goes_away(kind: &str, id: u64) -> bool {
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
