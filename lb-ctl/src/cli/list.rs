//! `lb-ctl list`: services and backends the way `ipvsadm -L -n` shows them, with the
//! traffic columns of `ipvsadm -L -n --stats` and each backend's state. IPv6 addresses are
//! written as ipvsadm writes them, `[fd00:58::133]:80`.

use std::fmt::Write as _;

use lb_common::Forward;

use super::{director::Director, stats::Rates};
use crate::maps::view::{BackendView, ServiceView, Snapshot};
use crate::plan::convert::host_port;
use crate::vrrp::report::Report;

/// The first line of every listing, where ipvsadm names its version and table size: the
/// connection table's entries in use, the half-open table's apart (a SYN flood fills that one),
/// and the new-entry budget when `flood:` sets one.
fn title(snap: &Snapshot, interfaces: &[String]) -> String {
    format!(
        "XDP director (lb-ctl): {} service(s), attached to {}; connection table {} of {} in use, \
         half-open {} of {}{}\n",
        snap.services.len(),
        if interfaces.is_empty() {
            "nothing".to_string()
        } else {
            interfaces.join(", ")
        },
        snap.flows,
        snap.flows_capacity,
        snap.half_open,
        snap.half_open_capacity,
        budget(snap).map(|b| format!("; {b}")).unwrap_or_default(),
    )
}

/// `new entries at most N/s per CPU`, when `flood:` sets a budget.
pub(crate) fn budget(snap: &Snapshot) -> Option<String> {
    (snap.new_flows_per_cpu > 0)
        .then(|| format!("new entries at most {}/s per CPU", snap.new_flows_per_cpu))
}

/// Renders the listing; `interfaces` are the attached interface names.
pub fn render(shown: &Director, interfaces: &[String]) -> String {
    let snap = &shown.maps;
    let mut out = title(snap, interfaces);
    let _ = writeln!(out, "Prot LocalAddress:Port Scheduler Flags      Name");
    let _ = writeln!(
        out,
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn {:>9} {:>10} {:>12}  State",
        "Conns", "InPkts", "InBytes"
    );
    for s in &snap.services {
        let local = host_port(s.vip, s.port);
        let flags = if s.persistence_timeout > 0 {
            // ipvsadm: a dotted mask for IPv4, a prefix length for IPv6; none when whole.
            let mask = match s.vip {
                _ if u32::from(s.persistence_prefix_len) == whole_prefix(s.vip) => String::new(),
                std::net::IpAddr::V4(_) => format!(" mask {}", s.persistence_netmask),
                std::net::IpAddr::V6(_) => format!(" mask {}", s.persistence_prefix_len),
            };
            format!("{} persistent {}{mask}", s.scheduler, s.persistence_timeout)
        } else {
            s.scheduler.to_string()
        };
        let _ = writeln!(
            out,
            "{:<4} {:<21} {:<16} {}",
            s.protocol.to_uppercase(),
            local,
            flags,
            s.name
        );
        for b in &s.backends {
            let remote = host_port(b.address, b.port);
            let state = b.state();
            let _ = writeln!(
                out,
                "  -> {:<28} {:<7} {:<6} {:<10} {:<9} {:>9} {:>10} {:>12}  {state}",
                remote,
                b.forward.map_or("?", Forward::listed),
                b.weight,
                b.active_connections,
                b.inactive_connections,
                b.connections,
                b.packets,
                b.bytes,
            );
        }
    }
    out.push_str(&render_vrrp(&shown.vrrp));
    out.push_str(&render_announce(&shown.announce));
    out.push_str(&render_sync(shown.sync.as_ref()));
    for off in &shown.forwarding_off {
        let _ = writeln!(out, "warning: {off}");
    }
    out
}

/// `list --stats`, as `ipvsadm -L -n --stats`: totals since each service and backend was
/// created. Out* are always 0: in direct routing and tunnel mode the replies go from the
/// real server to the client and never pass the director (IPVS shows 0 there too).
pub fn render_stats(snap: &Snapshot, interfaces: &[String]) -> String {
    let row = |connections: u64, packets: u64, bytes: u64| [connections, packets, 0, bytes, 0];
    table(
        snap,
        interfaces,
        ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"],
        |s| row(s.connections, s.packets, s.bytes),
        |b| row(b.connections, b.packets, b.bytes),
    )
}

/// `list --rate`, as `ipvsadm -L -n --rate`: per-second rates between two reads of the
/// counters (`rates`), rounded as IPVS rounds its estimates. Out* are 0 (see [`render_stats`]).
pub fn render_rate(snap: &Snapshot, rates: &Rates, interfaces: &[String]) -> String {
    let row = |r: Option<&[f64; 3]>| {
        let [cps, pps, bps] = r.copied().unwrap_or_default().map(|v| v.round() as u64);
        [cps, pps, 0, bps, 0]
    };
    table(
        snap,
        interfaces,
        ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"],
        |s| row(rates.service.get(&s.id)),
        |b| row(rates.backend.get(&b.id)),
    )
}

/// The layout ipvsadm's `--stats` and `--rate` share: five numbers a row after
/// `Prot LocalAddress:Port` (33 columns) or `  -> RemoteAddress:Port`.
fn table(
    snap: &Snapshot,
    interfaces: &[String],
    columns: [&str; 5],
    service: impl Fn(&ServiceView) -> [u64; 5],
    backend: impl Fn(&BackendView) -> [u64; 5],
) -> String {
    let mut out = title(snap, interfaces);
    let numbers = |out: &mut String, first: String, n: [u64; 5]| {
        let _ = writeln!(
            out,
            "{first:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
            n[0], n[1], n[2], n[3], n[4]
        );
    };
    let [a, b, c, d, e] = columns;
    let _ = writeln!(
        out,
        "{:<33} {a:>8} {b:>8} {c:>8} {d:>8} {e:>8}",
        "Prot LocalAddress:Port"
    );
    let _ = writeln!(out, "  -> RemoteAddress:Port");
    for s in &snap.services {
        let first = format!(
            "{:<4} {}",
            s.protocol.to_uppercase(),
            host_port(s.vip, s.port)
        );
        numbers(&mut out, first, service(s));
        for b in &s.backends {
            let first = format!("  -> {}", host_port(b.address, b.port));
            numbers(&mut out, first, backend(b));
        }
    }
    out
}

/// One line per service with `announce:`, e.g. `Announce web 192.168.58.133 table 100 (bird,
/// withdraw when no_backend): announced`.
pub fn render_announce(reports: &[crate::net::announced::Report]) -> String {
    let mut out = String::new();
    for r in reports {
        let _ = writeln!(
            out,
            "Announce {} {} table {} ({}, withdraw when {}): {}",
            r.service, r.vip, r.table, r.via, r.withdraw_when, r.state
        );
    }
    out
}

/// The `Sync` line, e.g. `Sync: role auto, receiving on eth0 port 8848 with 224.0.0.81; sent
/// 0 datagrams (0 entries), received 12 (230 entries), installed 230, kept local 0, unknown
/// service 0, unknown backend 0; rejected: garbage 0, truncated 1, bad_version 0, bad_hmac 2,
/// replayed 1, stale 0`.
pub fn render_sync(r: Option<&crate::sync::report::Report>) -> String {
    let Some(r) = r else {
        return String::new();
    };
    let rejected: Vec<String> = (r.rejected.iter())
        .map(|(why, n)| format!("{why} {n}"))
        .collect();
    format!(
        "Sync: role {}, {} on {} port {} with {}; sent {} datagrams ({} entries, {} errors), \
         received {} ({} entries), installed {}, kept local {}, unknown service {}, unknown \
         backend {}, install errors {}; rejected: {}\n",
        r.role,
        r.active,
        r.interface,
        r.port,
        r.peers.join(" "),
        r.sent_datagrams,
        r.sent_entries,
        r.send_errors,
        r.received_datagrams,
        r.received_entries,
        r.installed,
        r.kept_local,
        r.unknown_service,
        r.unknown_backend,
        r.install_errors,
        rejected.join(", ")
    )
}

/// 32 or 128: the prefix length of one whole address of `addr`'s family.
fn whole_prefix(addr: std::net::IpAddr) -> u32 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// One line per VRRP instance, e.g. `VRRP VI_1: master (master 192.168.58.134), adverts sent
/// 12, received 0, errors 0, virtual addresses 192.168.58.133/32` (an IPv6 instance's master
/// is its link-local address).
pub fn render_vrrp(reports: &[Report]) -> String {
    let mut out = String::new();
    for r in reports {
        let _ = write!(
            out,
            "VRRP {}: {} (master {}), adverts sent {}, received {}, errors {}",
            r.instance,
            r.state,
            r.master.as_deref().unwrap_or("unknown"),
            r.adverts_sent,
            r.adverts_received,
            r.errors
        );
        if !r.virtual_addresses.is_empty() {
            let _ = write!(out, ", virtual addresses {}", r.virtual_addresses.join(" "));
        }
        out.push('\n');
    }
    out
}

/// The connection table like `ipvsadm -L -n -c`.
pub fn render_connections(conns: &[crate::maps::view::ConnView]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "XDP director connection entries");
    let _ = writeln!(
        out,
        "pro expire state       source                virtual               destination"
    );
    for c in conns {
        let _ = writeln!(
            out,
            "{:<3} {:02}:{:02}  {:<11} {:<21} {:<21} {}",
            c.protocol.to_uppercase(),
            c.expires_in / 60,
            c.expires_in % 60,
            c.state,
            c.client,
            c.virtual_address,
            c.backend
        );
    }
    out
}
