//! What the tunnel-mode tests share: service files with `forward: tunnel`, the real servers'
//! decapsulation program attached with `lb-ctl decap attach` (removed on drop), and a filter
//! that keeps a host's kernel from seeing ICMP errors from one address (to show what happens
//! without them).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    lab::{BPFFS, Host, Lab},
    lbctl::{COMMAND_TIMEOUT, find_lb_ctl, run_with_deadline},
    services::Service,
};

/// The encapsulation of a tunnel service (`tunnel: type:` in the service file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encap {
    Ipip,
    /// GUE on this UDP port.
    Gue(u16),
}

/// The GUE port the tests use (the example).
pub const GUE_PORT: u16 = 6080;

/// A TCP service `name` on `vip:port`, scheduler `rr`, `forward: tunnel` with `encap`, over
/// `backends`, with an HTTP health check every 500 ms (the director's own connections to the
/// backends also resolve the next hops' MACs in its kernel).
pub fn tunnel_service(
    name: &str,
    vip: impl Into<IpAddr>,
    port: u16,
    encap: Encap,
    backends: &[IpAddr],
) -> Service {
    let mut s = Service::new(name, vip, port, backends);
    let tunnel = match encap {
        Encap::Ipip => "    tunnel:\n      type: ipip\n".to_owned(),
        Encap::Gue(p) => format!("    tunnel:\n      type: gue\n      port: {p}\n"),
    };
    s.extra = format!(
        "    forward: tunnel\n{tunnel}    check:\n      type: http_get\n      interval: 500ms\n      \
         timeout: 500ms\n"
    );
    s
}

/// The decapsulation program on some hosts' `eth0`, attached with `lb-ctl --netns NS
/// --pin-dir DIR decap attach eth0` (DIR: `<bpffs>/<lab prefix>-<host>`, swept with the lab's
/// leftovers). Dropping it detaches it and removes the pin directories.
pub struct Decap {
    bin: PathBuf,
    hosts: Vec<(String, String, PathBuf)>,
}

impl Decap {
    /// Attaches the decapsulation program to `eth0` of each of `hosts` (`gue_port`: also take
    /// GUE on that UDP port).
    pub fn attach(lab: &Lab, hosts: &[Host], gue_port: Option<u16>) -> Result<Decap> {
        let mut decap = Decap {
            bin: find_lb_ctl()?,
            hosts: Vec::new(),
        };
        for host in hosts {
            let pin_dir = Path::new(BPFFS).join(format!("{}-{}", lab.prefix(), host.name));
            decap
                .hosts
                .push((host.name.clone(), host.netns.clone(), pin_dir.clone()));
            let port = gue_port.map(|p| p.to_string());
            let mut args = vec!["decap", "attach", "eth0"];
            if let Some(p) = &port {
                args.extend(["--gue-port", p]);
            }
            let out = decap.run(&host.netns, &pin_dir, &args)?;
            if !out.status.success() {
                bail!(
                    "lb-ctl decap attach eth0 on {} failed ({}): {}{}",
                    host.name,
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok(decap)
    }

    fn run(&self, netns: &str, pin_dir: &Path, args: &[&str]) -> Result<std::process::Output> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--netns")
            .arg(netns)
            .arg("--pin-dir")
            .arg(pin_dir)
            .args(args);
        run_with_deadline(cmd, COMMAND_TIMEOUT)
            .with_context(|| format!("running lb-ctl {args:?} in {netns}"))
    }
}

impl Drop for Decap {
    fn drop(&mut self) {
        for (name, netns, pin_dir) in std::mem::take(&mut self.hosts) {
            match self.run(&netns, &pin_dir, &["decap", "detach", "eth0"]) {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "lb-ctl decap detach eth0 on {name}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => eprintln!("lb-ctl decap detach eth0 on {name}: {e:#}"),
            }
            if pin_dir.exists()
                && let Err(e) = std::fs::remove_dir_all(&pin_dir)
            {
                eprintln!("removing {}: {e}", pin_dir.display());
            }
        }
    }
}

/// While it lives, `host`'s kernel never sees ICMP (IPv4) from `from` arriving on its `eth0`:
/// a tc ingress filter redirects those packets to a veth that is down, which drops them (the
/// kernel here has no `drop` action). Dropping it removes the filter.
pub struct IcmpBlackhole {
    host: Host,
}

impl IcmpBlackhole {
    /// Installs the filter on `host`'s `eth0`.
    pub fn install(host: &Host, from: std::net::Ipv4Addr) -> Result<IcmpBlackhole> {
        host.ip_batch(&["link add lbbh0 type veth peer name lbbh1".to_owned()])?;
        let guard = IcmpBlackhole { host: host.clone() };
        host.exec_ok(&["tc", "qdisc", "add", "dev", "eth0", "ingress"])?;
        let src = format!("{from}/32");
        host.exec_ok(&[
            "tc", "filter", "add", "dev", "eth0", "parent", "ffff:", "protocol", "ip", "u32",
            "match", "ip", "protocol", "1", "0xff", "match", "ip", "src", &src, "action", "mirred",
            "egress", "redirect", "dev", "lbbh0",
        ])
        .context("adding the tc filter that drops ICMP")?;
        Ok(guard)
    }

    /// How many packets the filter took so far (`tc -s filter show`: the action's `Sent ...
    /// pkt`).
    pub fn dropped(&self) -> Result<u64> {
        let out = self.host.exec_ok(&[
            "tc", "-s", "filter", "show", "dev", "eth0", "parent", "ffff:",
        ])?;
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("Sent "))
            .with_context(|| format!("no action statistics in:\n{out}"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .iter()
            .position(|w| w.starts_with("pkt"))
            .and_then(|i| words.get(i.checked_sub(1)?))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("bad statistics line {line:?}"))
    }
}

impl Drop for IcmpBlackhole {
    fn drop(&mut self) {
        let _ = self
            .host
            .exec(&["tc", "qdisc", "del", "dev", "eth0", "ingress"]);
        let _ = self.host.ip_batch(&["link del lbbh0".to_owned()]);
    }
}

/// Turns forwarding of both families on or off on `host`'s `eth0`
/// (`net.ipv4.conf.eth0.forwarding`, `net.ipv6.conf.eth0.forwarding`), which a director's
/// tunnel backends need.
pub fn set_forwarding(host: &Host, on: bool) -> Result<()> {
    let value = if on { "1" } else { "0" };
    host.run_in(move || {
        for family in ["ipv4", "ipv6"] {
            let path = format!("/proc/sys/net/{family}/conf/eth0/forwarding");
            std::fs::write(&path, value).with_context(|| format!("writing {value} to {path}"))?;
        }
        Ok(())
    })
}

/// `host`'s neighbour entry for `addr` on `eth0` as `ip -d neigh show` prints it (empty when
/// there is none), e.g. `192.168.58.135 lladdr 02:.. managed REACHABLE`.
pub fn neighbour_entry(host: &Host, addr: IpAddr) -> Result<String> {
    let out = host.exec_ok(&[
        "ip",
        "-d",
        "neigh",
        "show",
        &addr.to_string(),
        "dev",
        "eth0",
    ])?;
    Ok(out.trim().to_owned())
}
