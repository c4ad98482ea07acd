//! Test hosts for the `net` unit tests: two network namespaces made by the test itself, joined
//! by a veth pair with fixed MACs and addresses from 192.168.58.0/24 and fd00:58::/64 (see
//! docs/lab.md). Nothing
//! is put in the root namespace; the namespaces are deleted when the [`Lab`] is dropped, also
//! when the test panics. Their names follow the integration tests' scheme,
//! `lbl-<pid>-<n>-<host>`, so the integration tests' sweep (`lb_tests::lab::sweep_leftovers`),
//! which runs first, removes what crashed runs left.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use lb_tests::lab::{BASE_PREFIX, sweep_leftovers};

/// Counts the labs of this process, for their names.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Two namespaces, `director` and `peer`, joined by a veth pair:
/// `director`: `DIRECTOR_DEV` (`DIRECTOR_MAC`, `DIRECTOR_IP`/24, `DIRECTOR_IP6`/64) <-> `peer`:
/// `PEER_DEV` (`PEER_MAC`, `PEER_IP`/24, `PEER_IP6`/64). The IPv6 addresses are added `nodad`,
/// so they are usable at once.
pub struct Lab {
    pub director: String,
    pub peer: String,
}

impl Lab {
    pub const DIRECTOR_DEV: &str = "lbnt-dir0";
    pub const PEER_DEV: &str = "lbnt-peer0";
    pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    pub const DIRECTOR_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 58, 1));
    pub const PEER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 58, 2));
    pub const DIRECTOR_IP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 1));
    pub const PEER_IP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 2));

    /// Builds the lab; `tag` (letters) names it in the namespaces' names. Panics with a clear
    /// message when root or `ip` is missing.
    pub fn new(tag: &str) -> Lab {
        require_root_and_ip();
        if let Err(err) = sweep_leftovers() {
            panic!("test setup failed: {err:#}");
        }
        let prefix = format!(
            "{BASE_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab {
            director: format!("{prefix}-{tag}-director"),
            peer: format!("{prefix}-{tag}-peer"),
        };
        // Leftovers of this very process id (a reused pid) would make `ip netns add` fail.
        for ns in [&lab.director, &lab.peer] {
            let _ = quiet(&["netns", "del", ns]);
        }
        // From here on, the guard deletes whatever was created, also if a step below panics.
        for ns in [&lab.director, &lab.peer] {
            ip(&["netns", "add", ns]);
        }
        let (dmac, pmac) = (
            crate::plan::convert::format_mac(&Self::DIRECTOR_MAC),
            crate::plan::convert::format_mac(&Self::PEER_MAC),
        );
        // Created directly inside the namespaces: the veth never appears in the root namespace.
        ip(&[
            "link",
            "add",
            Self::DIRECTOR_DEV,
            "netns",
            &lab.director,
            "address",
            &dmac,
            "type",
            "veth",
            "peer",
            "name",
            Self::PEER_DEV,
            "netns",
            &lab.peer,
            "address",
            &pmac,
        ]);
        lab.ip(
            &lab.director,
            &["addr", "add", "192.168.58.1/24", "dev", Self::DIRECTOR_DEV],
        );
        lab.ip(
            &lab.peer,
            &["addr", "add", "192.168.58.2/24", "dev", Self::PEER_DEV],
        );
        // No duplicate address detection on the link-local address either: while it is
        // tentative the kernel sends no neighbour solicitation (the first one would wait for
        // the next retransmission, a second later).
        for (ns, dev) in [
            (&lab.director, Self::DIRECTOR_DEV),
            (&lab.peer, Self::PEER_DEV),
        ] {
            let key = format!("net.ipv6.conf.{dev}.accept_dad=0");
            run(&["ip", "netns", "exec", ns, "sysctl", "-q", "-w", &key]);
        }
        for (ns, addr, dev) in [
            (&lab.director, "fd00:58::1/64", Self::DIRECTOR_DEV),
            (&lab.peer, "fd00:58::2/64", Self::PEER_DEV),
        ] {
            lab.ip(ns, &["addr", "add", addr, "dev", dev, "nodad"]);
        }
        for (ns, dev) in [
            (&lab.director, Self::DIRECTOR_DEV),
            (&lab.peer, Self::PEER_DEV),
        ] {
            lab.ip(ns, &["link", "set", "lo", "up"]);
            lab.ip(ns, &["link", "set", dev, "up"]);
        }
        for (ns, dev) in [
            (&lab.director, Self::DIRECTOR_DEV),
            (&lab.peer, Self::PEER_DEV),
        ] {
            wait_until_up(ns, dev);
        }
        lab
    }

    /// Runs `ip -n NS ARGS...` and panics if it fails.
    pub fn ip(&self, ns: &str, args: &[&str]) {
        let mut full = vec!["-n", ns];
        full.extend_from_slice(args);
        ip(&full);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.director, &self.peer] {
            if let Err(err) = quiet(&["netns", "del", ns])
                && Path::new("/run/netns").join(ns).exists()
            {
                eprintln!("could not delete test namespace {ns}: {err}");
            }
        }
    }
}

/// Waits (at most 5 s) until `dev` in `ns` is operationally UP. A link just set up sends
/// nothing until the kernel's link watcher activates its queue, which may take a second; the
/// same event makes it UP. Without this, the first ARP or NDP probes of a test can be lost.
fn wait_until_up(ns: &str, dev: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", dev])
            .stdin(Stdio::null())
            .output();
        let shown = match &out {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => panic!("test setup failed: running `ip -n {ns} link show {dev}`: {e}"),
        };
        if shown.contains(" state UP ") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "test setup failed: {dev} in {ns} is not UP 5 s after `ip link set up`: {shown}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn require_root_and_ip() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root: it creates network namespaces and veth pairs (euid is {euid}); \
         run the tests as root"
    );
    match Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("this test needs iproute2's `ip`, but `ip -V` failed: {status}"),
        Err(err) => panic!(
            "this test needs iproute2's `ip` to build its network namespaces, and it cannot be \
             run ({err}); install the iproute2 package"
        ),
    }
}

/// Runs `args` (a program and its arguments) and panics if it fails.
fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("test setup failed: running `{}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "test setup failed: `{}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn ip(args: &[&str]) {
    if let Err(err) = quiet(args) {
        panic!("test setup failed: {err}");
    }
}

fn quiet(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running `ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
