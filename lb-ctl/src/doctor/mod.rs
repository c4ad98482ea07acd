//! `lb-ctl doctor`: what a director and its real servers need, checked one line at a time
//! ([`report`]): the kernel, bpffs, BTF, each attached interface's XDP program and pins, each
//! VIP held or not (and whether that is expected), and each direct-routing backend: answers
//! ARP/NDP for its own address, does not answer ARP for the VIP, and its service port answers,
//! directly and through the director's path (the via-VIP handshake of `health::via_vip`).

pub mod report;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    config::{self, Config, Forwarding, Protocol},
    health::{self, Target},
    maps::pins,
    net::{
        addr, arp,
        frames::{Capture, Frames},
        link, links,
        neigh::{self, Resolution},
        route,
    },
};
use report::Line;

/// The oldest kernel that attaches XDP through bpf links (5.9), which the pins need.
const MIN_KERNEL: (u32, u32) = (5, 9);

/// `major.minor` of a kernel release string (`6.18.0-1-amd64`).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn mac_text(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// The fix for a real server that answers ARP for the VIP.
pub const ARP_FIX: &str =
    "arp_ignore=1 arp_announce=2 on the real server, or `lb-ctl realserver up --vip VIP` there";

/// The lines of one VIP's ARP probe: each backend (address, MAC) whose MAC answered ARP for
/// `vip` fails; the others are ok.
pub fn arp_lines(
    vip: Ipv4Addr,
    backends: &[(IpAddr, [u8; 6])],
    answered: &BTreeSet<[u8; 6]>,
) -> Vec<Line> {
    backends
        .iter()
        .map(|&(addr, mac)| {
            let check = format!("backend {addr}");
            if answered.contains(&mac) {
                Line::fail(
                    check,
                    format!(
                        "answers ARP for the VIP {vip} ({}): it takes the VIP's traffic from the \
                         director",
                        mac_text(mac)
                    ),
                    ARP_FIX,
                )
            } else {
                Line::ok(check, format!("does not answer ARP for the VIP {vip}"))
            }
        })
        .collect()
}

/// Every check, in order.
pub fn run(file: &Path, pin_dir: &Path, timeout: Duration) -> Result<Vec<Line>> {
    let config = match config::load(file) {
        Ok(c) => c,
        Err(e) => bail!("{e}"),
    };
    let mut lines = vec![kernel(), bpffs(pin_dir), btf()];
    lines.extend(interfaces(pin_dir)?);
    lines.extend(vips(&config)?);
    lines.extend(backends(&config, timeout)?);
    Ok(lines)
}

fn kernel() -> Line {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    match kernel_version(release) {
        Some(v) if v >= MIN_KERNEL => Line::ok("kernel", release),
        Some(_) => Line::fail(
            "kernel",
            format!("{release} is older than {}.{}", MIN_KERNEL.0, MIN_KERNEL.1),
            format!(
                "a kernel {}.{} or newer (XDP attached through bpf links)",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
        ),
        None => Line::fail(
            "kernel",
            format!("cannot read the release from /proc/sys/kernel/osrelease ({release:?})"),
            "mount /proc",
        ),
    }
}

fn bpffs(pin_dir: &Path) -> Line {
    if pins::on_bpffs(pin_dir) {
        Line::ok(
            "bpffs",
            format!("{} is on a bpf filesystem", pin_dir.display()),
        )
    } else {
        Line::fail(
            "bpffs",
            format!("{} is not on a bpf filesystem", pin_dir.display()),
            "mount -t bpf bpf /sys/fs/bpf (`lb-ctl attach` mounts it), or --pin-dir on a bpffs",
        )
    }
}

fn btf() -> Line {
    let path = "/sys/kernel/btf/vmlinux";
    if Path::new(path).exists() {
        Line::ok("btf", format!("{path} present"))
    } else {
        Line::fail(
            "btf",
            format!("{path} missing"),
            "a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        )
    }
}

fn interfaces(pin_dir: &Path) -> Result<Vec<Line>> {
    let attached = pins::attached_interfaces(pin_dir)?;
    if attached.is_empty() {
        return Ok(vec![Line::fail(
            "attached",
            format!(
                "no interface is attached (no link pinned under {})",
                pin_dir.display()
            ),
            "lb-ctl attach IFACE, or lb-ctl run -f FILE --iface IFACE",
        )]);
    }
    let program = pin_dir.join(lb_common::names::PROGRAM);
    let mut out = Vec::new();
    if !program.exists() {
        out.push(Line::fail(
            "program",
            format!("{} is not pinned", program.display()),
            "lb-ctl detach IFACE then lb-ctl attach IFACE (or restart lb-ctl run)",
        ));
    }
    for iface in attached {
        let check = format!("iface {iface}");
        let pinned = pins::link_pin(pin_dir, &iface);
        let line = match links::by_name(&iface)? {
            None => Line::fail(
                check,
                format!(
                    "{} is pinned but there is no such interface",
                    pinned.display()
                ),
                format!("lb-ctl detach {iface}"),
            ),
            Some(links::Link { xdp: None, .. }) => Line::fail(
                check,
                format!(
                    "{} is pinned but the interface has no XDP program",
                    pinned.display()
                ),
                format!("lb-ctl detach {iface} && lb-ctl attach {iface}"),
            ),
            Some(links::Link {
                xdp: Some((mode, id)),
                up,
                ..
            }) => {
                let detail = format!(
                    "XDP {} (program id {id}), link pinned at {}",
                    mode.as_str(),
                    pinned.display()
                );
                if !up {
                    Line::fail(
                        check,
                        detail + "; the interface is down",
                        format!("ip link set {iface} up"),
                    )
                } else {
                    Line::ok(check, detail)
                }
            }
        };
        out.push(line);
    }
    Ok(out)
}

/// Where each of this host's addresses is: address -> interface name.
fn own_addresses() -> Result<BTreeMap<IpAddr, String>> {
    let mut out = BTreeMap::new();
    for l in links::all()? {
        for (a, _) in addr::list_all(l.index)? {
            out.entry(a).or_insert_with(|| l.name.clone());
        }
    }
    Ok(out)
}

fn vips(config: &Config) -> Result<Vec<Line>> {
    let own = own_addresses()?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in &config.services {
        if !seen.insert(s.vip) {
            continue;
        }
        let check = format!("vip {}", s.vip);
        let vrrp = config
            .vrrp
            .iter()
            .find(|v| v.virtual_addresses.iter().any(|(a, _)| *a == s.vip));
        out.push(match (own.get(&s.vip), vrrp, &s.announce) {
            (Some(iface), Some(v), _) => Line::ok(
                check,
                format!(
                    "held on {iface}: this director is VRRP master of {}",
                    v.name
                ),
            ),
            (Some(iface), None, _) => Line::ok(check, format!("held on {iface}")),
            (None, Some(v), _) => Line::ok(
                check,
                format!(
                    "not held here: expected while this director is VRRP backup of {} (the \
                     master holds it)",
                    v.name
                ),
            ),
            (None, None, Some(_)) => Line::ok(
                check,
                "not held here: expected, the service is announced over BGP (ECMP needs no VIP \
                 on the director)",
            ),
            (None, None, None) => Line::fail(
                check,
                "not held by this director, and no VRRP instance or announce: block moves it here",
                format!(
                    "ip addr add {}/{} dev IFACE on the director, or a vrrp: instance with it",
                    s.vip,
                    if s.vip.is_ipv4() { 32 } else { 128 }
                ),
            ),
        });
    }
    Ok(out)
}

/// A backend's address and MAC.
type Resolved = (IpAddr, [u8; 6]);

/// One direct-routing backend of a service.
struct Routed {
    service: String,
    vip: IpAddr,
    addr: IpAddr,
    port: u16,
    tcp: bool,
}

fn backends(config: &Config, timeout: Duration) -> Result<Vec<Line>> {
    let mut out = Vec::new();
    let mut routed = Vec::new();
    let mut skipped = BTreeSet::new();
    for s in &config.services {
        for b in &s.backends {
            match b.forward {
                Forwarding::Route => routed.push(Routed {
                    service: s.name.clone(),
                    vip: s.vip,
                    addr: b.address,
                    port: b.port,
                    tcp: s.protocol == Protocol::Tcp,
                }),
                Forwarding::Tunnel(_) => {
                    if skipped.insert(b.address) {
                        out.push(Line::skip(
                            format!("backend {}", b.address),
                            "a tunnel backend: not on this link; run `lb-ctl realserver check \
                             --tunnel ...` on it",
                        ));
                    }
                }
            }
        }
    }
    // Each backend's own address: on this director's link, and answering ARP/NDP.
    let mut macs: BTreeMap<IpAddr, (u32, IpAddr, [u8; 6])> = BTreeMap::new();
    let mut done = BTreeSet::new();
    for r in &routed {
        if !done.insert(r.addr) {
            continue;
        }
        let check = format!("backend {}", r.addr);
        let way = route::get(r.addr)?;
        let (ifindex, src) = match way.as_ref().map(|w| (w.oif, w.source, w.gateway)) {
            Some((Some(i), Some(src), None)) => (i, src),
            _ => {
                out.push(Line::fail(
                    check,
                    "not on a link of this director (no route, or a route through a gateway)",
                    "direct routing needs the real server on the director's segment; or use \
                     `forward: tunnel`",
                ));
                continue;
            }
        };
        let iface = link::name(ifindex)?;
        let proto = neigh::protocol(r.addr);
        match neigh::resolve(ifindex, r.addr, timeout)? {
            Resolution::Resolved(mac) => {
                out.push(Line::ok(
                    check,
                    format!(
                        "answers {proto} for its own address on {iface}: {}",
                        mac_text(mac)
                    ),
                ));
                macs.insert(r.addr, (ifindex, src, mac));
            }
            Resolution::Unresolved(why) => out.push(Line::fail(
                check,
                format!("does not answer {proto} for its own address on {iface}: {why}"),
                "is the real server up, on this link, with this address on its interface?",
            )),
        }
    }
    // Each IPv4 VIP: one ARP request per interface its backends are on; no backend may answer.
    // (IPv6 needs no check: Linux answers NDP only for the receiving interface's addresses.)
    // (VIP, interface) -> (the director's address there, the backends: address, MAC).
    let mut by_vip: BTreeMap<(Ipv4Addr, u32), (IpAddr, Vec<Resolved>)> = BTreeMap::new();
    for r in &routed {
        let (IpAddr::V4(vip), Some(&(ifindex, src, mac))) = (r.vip, macs.get(&r.addr)) else {
            continue;
        };
        let entry = by_vip.entry((vip, ifindex)).or_insert((src, Vec::new()));
        if !entry.1.iter().any(|(a, _)| *a == r.addr) {
            entry.1.push((r.addr, mac));
        }
    }
    for ((vip, ifindex), (src, backends)) in &by_vip {
        let IpAddr::V4(src) = *src else { continue };
        match who_answers_arp(*ifindex, src, *vip, timeout) {
            Ok(answered) => out.extend(arp_lines(*vip, backends, &answered)),
            Err(e) => out.push(Line::fail(
                format!("vip {vip} arp"),
                format!("could not ask who answers ARP for it: {e:#}"),
                "run lb-ctl doctor as root (CAP_NET_RAW)",
            )),
        }
    }
    // Each backend's service port: directly, and (TCP) through the director's path.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let mut ports = BTreeSet::new();
    for r in &routed {
        if r.port == 0 || !r.tcp || !macs.contains_key(&r.addr) {
            continue;
        }
        if !ports.insert((r.vip, r.addr, r.port)) {
            continue;
        }
        let check = format!("backend {}", SocketAddr::new(r.addr, r.port));
        match TcpStream::connect_timeout(&SocketAddr::new(r.addr, r.port), timeout) {
            Ok(_) => out.push(Line::ok(check.clone(), "accepts TCP connections")),
            Err(e) => out.push(Line::fail(
                check.clone(),
                format!("a TCP connect failed: {e}"),
                "start the service on the real server (or open its firewall for the director)",
            )),
        }
        let target = Target {
            service: r.service.clone(),
            address: r.addr,
            port: r.port,
            backend_port: r.port,
            vip: Some(r.vip),
        };
        match runtime.block_on(health::via_vip::check(&target, r.vip, timeout)) {
            Ok(what) => out.push(Line::ok(
                check,
                format!("answers through the director's path: {what}"),
            )),
            Err(why) => out.push(Line::fail(
                check,
                format!("does not answer through the director's path: {why}"),
                format!(
                    "the VIP on the real server's lo and a listener on port {} (`lb-ctl realserver \
                     up --vip {}` there)",
                    r.port, r.vip
                ),
            )),
        }
    }
    Ok(out)
}

/// The MACs that answer an ARP request for `vip`, sent from `src` out of `ifindex`, within
/// `timeout`.
fn who_answers_arp(
    ifindex: u32,
    src: Ipv4Addr,
    vip: Ipv4Addr,
    timeout: Duration,
) -> Result<BTreeSet<[u8; 6]>> {
    let capture = Capture::open(ifindex, arp::ETHERTYPE)?;
    let frames = Frames::open(ifindex)?;
    let mine = link::mac(ifindex)?;
    frames
        .send(&arp::request(mine, src, vip))
        .with_context(|| format!("sending an ARP request for {vip}"))?;
    let deadline = Instant::now() + timeout;
    let mut answered = BTreeSet::new();
    let mut buf = [0u8; 2048];
    while let Some(n) = capture.next(&mut buf, deadline)? {
        if let Some(reply) = buf.get(..n).and_then(arp::parse_reply)
            && reply.ip == vip
            && reply.mac != mine
        {
            answered.insert(reply.mac);
        }
    }
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Status;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.0-1-amd64\n"), Some((6, 18)));
        assert_eq!(kernel_version("5.4"), Some((5, 4)));
        assert_eq!(kernel_version("junk"), None);
        assert!((5, 4) < MIN_KERNEL && (6, 1) >= MIN_KERNEL && (5, 10) >= MIN_KERNEL);
    }

    #[test]
    fn a_backend_whose_mac_answers_arp_for_the_vip_fails_and_the_others_pass() {
        let (a, b) = ([2, 0, 0, 0, 0, 0x87], [2, 0, 0, 0, 0, 0x88]);
        let backends = [
            ("10.0.0.7".parse().unwrap(), a),
            ("10.0.0.8".parse().unwrap(), b),
        ];
        // The director's other MAC answering (a VRRP master) is no backend's.
        let answered = BTreeSet::from([b, [2, 0, 0, 0, 0, 0x99]]);
        let lines = arp_lines(Ipv4Addr::new(10, 0, 0, 9), &backends, &answered);
        assert_eq!(
            lines.iter().map(|l| l.status).collect::<Vec<_>>(),
            [Status::Ok, Status::Fail]
        );
        assert_eq!(lines[1].check, "backend 10.0.0.8");
        assert!(
            lines[1]
                .detail
                .contains("answers ARP for the VIP 10.0.0.9 (02:00:00:00:00:88)")
        );
        assert_eq!(lines[1].fix.as_deref(), Some(ARP_FIX));
    }
}
