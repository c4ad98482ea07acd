//! `lb-ctl stats`: counters summed over CPUs, as a table, JSON or Prometheus text; with
//! `--watch`, per-second rates like `ipvsadm -L -n --rate`.

use std::{collections::HashMap, fmt::Write as _, time::Duration};

use anyhow::{Context as _, Result};
use lb_common::Forward;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, prometheus_text},
    metrics::{
        MetricType::{self, Counter, Gauge},
        counter::ConstCounter,
        gauge::ConstGauge,
    },
    registry::Registry,
};
use serde::Serialize;

use super::director::Director;
use crate::{
    maps::view::{BackendView, ServiceView, Snapshot},
    plan::convert::host_port,
    vrrp::report::Report,
};

/// Per-second rates between two snapshots, by service index and backend id.
#[derive(Clone, Debug, Default)]
pub struct Rates {
    pub service: HashMap<u32, [f64; 3]>,
    pub backend: HashMap<u32, [f64; 3]>,
}

impl Rates {
    pub fn between(old: &Snapshot, new: &Snapshot, elapsed: Duration) -> Rates {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        let mut r = Rates::default();
        for s in &new.services {
            if let Some(o) = old.services.iter().find(|o| o.id == s.id && o.key == s.key) {
                r.service.insert(
                    s.id,
                    [
                        rate(o.connections, s.connections),
                        rate(o.packets, s.packets),
                        rate(o.bytes, s.bytes),
                    ],
                );
                for b in &s.backends {
                    if let Some(ob) = o.backends.iter().find(|ob| ob.id == b.id) {
                        r.backend.insert(
                            b.id,
                            [
                                rate(ob.connections, b.connections),
                                rate(ob.packets, b.packets),
                                rate(ob.bytes, b.bytes),
                            ],
                        );
                    }
                }
            }
        }
        r
    }
}

/// The counters as a table; with `rates`, per-second columns too.
pub fn render_text(shown: &Director, rates: Option<&Rates>) -> String {
    let snap = &shown.maps;
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<4} {:<30} {:>9} {:>11} {:>14}",
        "Prot", "LocalAddress:Port / Backend", "Conns", "InPkts", "InBytes"
    );
    if rates.is_some() {
        let _ = write!(out, " {:>8} {:>9} {:>11}", "CPS", "InPPS", "InBPS");
    }
    out.push('\n');
    let cols = |out: &mut String, r: Option<&[f64; 3]>| {
        if let Some(r) = r {
            let _ = write!(out, " {:>8.0} {:>9.0} {:>11.0}", r[0], r[1], r[2]);
        }
    };
    for s in &snap.services {
        let _ = write!(
            out,
            "{:<4} {:<30} {:>9} {:>11} {:>14}",
            s.protocol.to_uppercase(),
            format!("{} ({})", host_port(s.vip, s.port), s.name),
            s.connections,
            s.packets,
            s.bytes
        );
        cols(
            &mut out,
            rates.map(|r| r.service.get(&s.id).unwrap_or(&[0.0; 3])),
        );
        out.push('\n');
        for b in &s.backends {
            let _ = write!(
                out,
                "  -> {:<30} {:>9} {:>11} {:>14}",
                host_port(b.address, b.port),
                b.connections,
                b.packets,
                b.bytes
            );
            cols(
                &mut out,
                rates.map(|r| r.backend.get(&b.id).unwrap_or(&[0.0; 3])),
            );
            out.push('\n');
        }
    }
    let _ = writeln!(out, "\nData path (packets by what was done with them):");
    for r in &snap.datapath {
        let _ = writeln!(out, "  {:<21} {:<5} {:>12}", r.reason, r.action, r.packets);
    }
    let _ = writeln!(
        out,
        "  connections tracked: {} of {}; half-open: {} of {}",
        snap.flows, snap.flows_capacity, snap.half_open, snap.half_open_capacity
    );
    if let Some(b) = super::list::budget(snap) {
        let _ = writeln!(out, "  {b}");
    }
    out.push_str(&super::list::render_vrrp(&shown.vrrp));
    out.push_str(&super::list::render_announce(&shown.announce));
    out.push_str(&super::list::render_sync(shown.sync.as_ref()));
    out
}

#[derive(Serialize)]
struct JsonOut<'a> {
    #[serde(flatten)]
    snap: &'a Snapshot,
    /// VRRP instances of a running daemon for these pins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    vrrp: &'a Vec<Report>,
    /// Attached interfaces that do not forward a family the tunnel backends need.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    forwarding_off: &'a Vec<crate::net::forwarding::Off>,
    /// Services with `announce:` of a running daemon for these pins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    announce: &'a Vec<crate::net::announced::Report>,
    /// The connection-state sync of a running daemon for these pins.
    #[serde(skip_serializing_if = "Option::is_none")]
    sync: Option<&'a crate::sync::report::Report>,
}

fn json_out(shown: &Director) -> JsonOut<'_> {
    JsonOut {
        snap: &shown.maps,
        vrrp: &shown.vrrp,
        forwarding_off: &shown.forwarding_off,
        announce: &shown.announce,
        sync: shown.sync.as_ref(),
    }
}

pub fn render_json(shown: &Director) -> Result<String> {
    Ok(serde_json::to_string_pretty(&json_out(shown))?)
}

/// What `render_json` prints, as a value (`run --listen`'s `/api/v1/status` adds to it).
pub fn json_value(shown: &Director) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(json_out(shown))?)
}

/// The Prometheus text exposition format (0.0.4), written by prometheus-client.
pub fn render_prometheus(shown: &Director) -> Result<String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families(families(shown))));
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry).context("writing the Prometheus text")?;
    Ok(out)
}

pub(crate) type Labels = Vec<(&'static str, String)>;

/// One metric family: `name` without the `_total` that the encoder adds to counters.
#[derive(Debug)]
pub(crate) struct Family {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) kind: MetricType,
    pub(crate) samples: Vec<(Labels, u64)>,
}

/// The families of one read, in the order they are written; a collector, since the values
/// are read from the maps on each call rather than counted in this process.
#[derive(Debug)]
pub(crate) struct Families(pub(crate) Vec<Family>);

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        for f in &self.0 {
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, v) in &f.samples {
                let sample = metric.encode_family(labels)?;
                if f.kind == Counter {
                    ConstCounter::new(*v).encode(sample)?;
                } else {
                    ConstGauge::new(*v).encode(sample)?;
                }
            }
        }
        Ok(())
    }
}

fn service_labels(s: &ServiceView) -> Labels {
    vec![
        ("service", s.name.clone()),
        ("vip", s.vip.to_string()),
        ("port", s.port.to_string()),
        ("protocol", s.protocol.to_string()),
    ]
}

pub(crate) fn backend_labels(s: &ServiceView, b: &BackendView) -> Labels {
    let mut labels = service_labels(s);
    labels.push(("backend", host_port(b.address, b.port)));
    labels.push(("forward", b.forward.map_or("?", Forward::name).to_string()));
    labels
}

type PickS = fn(&ServiceView) -> u64;
type PickB = fn(&BackendView) -> u64;
type PickV = fn(&Report) -> u64;

#[rustfmt::skip]
const SERVICE: [(&str, &str, PickS); 3] = [
    ("lb_service_packets", "Packets forwarded for the service.", |s| s.packets),
    ("lb_service_bytes", "IP bytes forwarded for the service.", |s| s.bytes),
    ("lb_service_connections", "Connections scheduled for the service.", |s| s.connections),
];

#[rustfmt::skip]
const BACKEND: [(&str, MetricType, &str, PickB); 8] = [
    ("lb_backend_packets", Counter, "Packets forwarded to the backend.", |b| b.packets),
    ("lb_backend_bytes", Counter, "IP bytes forwarded to the backend.", |b| b.bytes),
    ("lb_backend_connections", Counter, "Connections scheduled to the backend.", |b| b.connections),
    ("lb_backend_active_connections", Gauge, "Live TCP connections in SYN or ESTABLISHED, as lc/wlc count them (ipvsadm ActiveConn).", |b| b.active_connections),
    ("lb_backend_inactive_connections", Gauge, "Other live connections (ipvsadm InActConn).", |b| b.inactive_connections),
    ("lb_backend_weight", Gauge, "Configured weight (0 = draining).", |b| u64::from(b.weight)),
    ("lb_backend_usable", Gauge, "1 when the backend takes traffic: its MAC (or tunnel source) is known and it is not down.", |b| u64::from(b.usable)),
    ("lb_backend_up", Gauge, "Health: 1 unless health checks (lb-ctl run) hold the backend down.", |b| u64::from(!b.down)),
];

type PickSync = fn(&crate::sync::report::Report) -> u64;

#[rustfmt::skip]
const SYNC: [(&str, MetricType, &str, PickSync); 9] = [
    ("lb_sync_sending", Gauge, "1 while this director sends its connection table (sync:).", |r| u64::from(r.active.starts_with("sending"))),
    ("lb_sync_sent_datagrams", Counter, "Sync datagrams sent.", |r| r.sent_datagrams),
    ("lb_sync_sent_entries", Counter, "Connection and persistence entries sent.", |r| r.sent_entries),
    ("lb_sync_received_datagrams", Counter, "Sync datagrams accepted.", |r| r.received_datagrams),
    ("lb_sync_received_entries", Counter, "Entries in accepted sync datagrams.", |r| r.received_entries),
    ("lb_sync_installed_entries", Counter, "Entries written into the connection or persistence table.", |r| r.installed),
    ("lb_sync_kept_local_entries", Counter, "Received entries not written: the local entry is as recent or more.", |r| r.kept_local),
    ("lb_sync_unknown_service_entries", Counter, "Received entries whose service is not configured here.", |r| r.unknown_service),
    ("lb_sync_unknown_backend_entries", Counter, "Received entries whose backend is not in the service here.", |r| r.unknown_backend),
];

#[rustfmt::skip]
const VRRP: [(&str, MetricType, &str, PickV); 4] = [
    ("lb_vrrp_master", Gauge, "1 while this director is the VRRP master.", |r| u64::from(r.state == "master")),
    ("lb_vrrp_adverts_sent", Counter, "VRRP adverts sent.", |r| r.adverts_sent),
    ("lb_vrrp_adverts_received", Counter, "VRRP adverts received.", |r| r.adverts_received),
    ("lb_vrrp_errors", Counter, "Malformed or unauthenticated VRRP adverts, ignored.", |r| r.errors),
];

pub(crate) fn families(shown: &Director) -> Vec<Family> {
    let snap = &shown.maps;
    let family = |name, kind, help, samples| Family {
        name,
        help,
        kind,
        samples,
    };
    let mut out = Vec::new();
    for (name, help, pick) in SERVICE {
        let samples = (snap.services.iter())
            .map(|s| (service_labels(s), pick(s)))
            .collect();
        out.push(family(name, Counter, help, samples));
    }
    for (name, kind, help, pick) in BACKEND {
        let samples = (snap.services.iter())
            .flat_map(|s| (s.backends.iter()).map(move |b| (backend_labels(s, b), pick(b))))
            .collect();
        out.push(family(name, kind, help, samples));
    }
    let samples = (snap.datapath.iter())
        .map(|r| {
            let labels = vec![
                ("reason", r.reason.to_string()),
                ("action", r.action.to_string()),
            ];
            (labels, r.packets)
        })
        .collect();
    out.push(family(
        "lb_datapath_packets",
        Counter,
        "Packets seen by the XDP program, by what it did with them.",
        samples,
    ));
    out.push(family(
        "lb_flows",
        Gauge,
        "Live entries in the connection table.",
        vec![(Vec::new(), snap.flows)],
    ));
    out.push(family(
        "lb_half_open_entries",
        Gauge,
        "Live entries in the half-open table (TCP between the client's SYN and its ACK); near the capacity under a SYN flood.",
        vec![(Vec::new(), snap.half_open)],
    ));
    out.push(family(
        "lb_half_open_capacity",
        Gauge,
        "Entries the half-open table can hold (the least recently used go first).",
        vec![(Vec::new(), u64::from(snap.half_open_capacity))],
    ));
    out.push(family(
        "lb_new_flows_per_cpu",
        Gauge,
        "The budget of new entries one CPU may create per second (flood:); 0 = no limit.",
        vec![(Vec::new(), u64::from(snap.new_flows_per_cpu))],
    ));
    if !shown.vrrp.is_empty() {
        for (name, kind, help, pick) in VRRP {
            let samples = (shown.vrrp.iter())
                .map(|r| (vec![("instance", r.instance.clone())], pick(r)))
                .collect();
            out.push(family(name, kind, help, samples));
        }
    }
    if !shown.announce.is_empty() {
        let samples = (shown.announce.iter())
            .map(|r| {
                let labels = vec![
                    ("service", r.service.clone()),
                    ("vip", r.vip.clone()),
                    ("table", r.table.to_string()),
                ];
                (labels, u64::from(r.announced))
            })
            .collect();
        out.push(family(
            "lb_announced",
            Gauge,
            "1 while the service's VIP route is in the table the BGP speaker exports (announce:).",
            samples,
        ));
    }
    if let Some(r) = &shown.sync {
        for (name, kind, help, pick) in SYNC {
            out.push(family(name, kind, help, vec![(Vec::new(), pick(r))]));
        }
        let samples = (r.rejected.iter())
            .map(|(why, n)| (vec![("reason", why.clone())], *n))
            .collect();
        out.push(family(
            "lb_sync_rejected_datagrams",
            Counter,
            "Sync datagrams refused (garbage, truncated, bad_version, bad_hmac, replayed, stale), ignored.",
            samples,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::maps::view::ReasonCount;

    fn backend(id: u32, last: u8, packets: u64, usable: bool, down: bool) -> BackendView {
        BackendView {
            id,
            address: Ipv4Addr::new(192, 168, 58, last).into(),
            port: 80,
            weight: u32::from(last) - 133,
            mac: "02:00:00:00:00:86".into(),
            forward: Some(lb_common::Forward::Route),
            tunnel_source: None,
            tunnel_port: None,
            usable,
            down,
            packets,
            bytes: packets * 60,
            connections: packets / 10,
            active_connections: 1,
            inactive_connections: 2,
        }
    }

    /// `backend` at fd00:58::`last` (written in hex as the decimal `last`: ::135).
    fn backend6(id: u32, last: u8, packets: u64, usable: bool, down: bool) -> BackendView {
        let low = u16::from_str_radix(&last.to_string(), 16).expect("digits");
        BackendView {
            address: Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, low).into(),
            ..backend(id, last, packets, usable, down)
        }
    }

    /// Two IPv4 services (one with a name that needs escaping) and an IPv6 one with
    /// persistence by /64, five backends, two reasons.
    fn sample() -> Director {
        let service = |id: u32, name: &str, port: u16, backends: Vec<BackendView>| ServiceView {
            name: name.into(),
            vip: Ipv4Addr::new(192, 168, 58, 133).into(),
            port,
            protocol: "tcp",
            scheduler: "wrr",
            persistence_timeout: 0,
            persistence_netmask: Ipv4Addr::BROADCAST.into(),
            persistence_prefix_len: 32,
            packets: backends.iter().map(|b| b.packets).sum(),
            bytes: backends.iter().map(|b| b.bytes).sum(),
            connections: backends.iter().map(|b| b.connections).sum(),
            backends,
            table_len: 0,
            key: lb_common::ServiceKey::default(),
            id,
        };
        let maps = Snapshot {
            services: vec![
                service(
                    0,
                    "web",
                    80,
                    vec![
                        backend(1, 135, 40, true, false),
                        backend(2, 136, 0, false, true),
                    ],
                ),
                service(
                    1,
                    "a \"quoted\\\" name",
                    443,
                    vec![backend(3, 137, 7, true, false)],
                ),
                // Tunnels: GUE to an IPv4 backend behind a router, IPIP to an IPv6 one.
                service(
                    3,
                    "tunnel",
                    8080,
                    vec![
                        BackendView {
                            address: Ipv4Addr::new(10, 20, 0, 11).into(),
                            mac: "00:00:00:00:00:00".into(),
                            forward: Some(lb_common::Forward::Gue),
                            tunnel_source: Some(Ipv4Addr::new(192, 168, 58, 134).into()),
                            tunnel_port: Some(6080),
                            ..backend(6, 138, 20, true, false)
                        },
                        BackendView {
                            address: IpAddr::from([0xfd00, 0x20, 0, 0, 0, 0, 0, 0x11]),
                            mac: "00:00:00:00:00:00".into(),
                            forward: Some(lb_common::Forward::Ipip),
                            tunnel_source: Some(IpAddr::from([0xfd00, 0x58, 0, 0, 0, 0, 0, 0x134])),
                            ..backend(7, 139, 10, true, false)
                        },
                    ],
                ),
                ServiceView {
                    vip: IpAddr::from([0xfd00, 0x58, 0, 0, 0, 0, 0, 0x133]),
                    scheduler: "mh",
                    persistence_timeout: 50,
                    persistence_netmask: IpAddr::from([0xffff, 0xffff, 0xffff, 0xffff, 0, 0, 0, 0]),
                    persistence_prefix_len: 64,
                    ..service(
                        2,
                        "web6",
                        80,
                        vec![
                            backend6(4, 135, 30, true, false),
                            backend6(5, 136, 0, false, false),
                        ],
                    )
                },
            ],
            datapath: vec![
                ReasonCount {
                    reason: "forwarded",
                    action: "tx",
                    packets: 47,
                },
                ReasonCount {
                    reason: "drop_no_backend",
                    action: "drop",
                    packets: 3,
                },
            ],
            flows: 5,
            flows_capacity: 262_144,
            half_open: 2,
            half_open_capacity: 65_536,
            new_flows_per_cpu: 0,
        };
        Director {
            maps,
            vrrp: Vec::new(),
            forwarding_off: Vec::new(),
            announce: Vec::new(),
            sync: None,
        }
    }

    fn reports() -> Vec<Report> {
        vec![
            Report {
                instance: "VI_1".into(),
                state: "master".into(),
                master: Some("192.168.58.134".into()),
                virtual_addresses: vec!["192.168.58.133/32".into()],
                adverts_sent: 12,
                adverts_received: 3,
                errors: 1,
                became_master: 2,
                pid: 42,
            },
            Report {
                instance: "VI_2".into(),
                state: "backup".into(),
                master: None,
                virtual_addresses: vec!["fd00:58::133/128".into(), "fd00:58::134/128".into()],
                ..Default::default()
            },
        ]
    }

    /// The bytes `lb-ctl` printed before the Prometheus writer moved to prometheus-client and
    /// VRRP left the map snapshot: scrapers and scripts see the same output for IPv4 services
    /// (JSON gained `persistence_prefix_len`, and `forward` per backend with, for tunnels,
    /// `tunnel_source` and `tunnel_port`). The tunnel service shows `Tunnel` in `list`'s
    /// Forward column. The IPv6 service pins ipvsadm's `[addr]:port`
    /// in the table and listing, and the bare address in the `vip` label and JSON.
    #[test]
    fn output_is_byte_for_byte_what_it_was() {
        let mut with_vrrp = sample();
        with_vrrp.vrrp = reports();
        assert_eq!(
            render_text(&with_vrrp, None),
            include_str!("golden/stats.txt")
        );
        assert_eq!(
            crate::cli::list::render(&with_vrrp, &["eth0".into()]),
            include_str!("golden/list.txt")
        );
        for (shown, prometheus, json) in [
            (
                with_vrrp,
                include_str!("golden/prometheus.txt"),
                include_str!("golden/stats.json"),
            ),
            (
                sample(),
                include_str!("golden/prometheus-no-vrrp.txt"),
                include_str!("golden/stats-no-vrrp.json"),
            ),
        ] {
            assert_eq!(render_prometheus(&shown).expect("prometheus"), prometheus);
            assert_eq!(render_json(&shown).expect("json"), json);
        }
    }

    /// Under a SYN flood: the half-open table apart from the established one, and the budget
    /// in every output once `flood:` sets one.
    #[test]
    fn half_open_entries_and_the_budget_are_shown_apart() {
        let mut shown = sample();
        shown.maps.half_open = 65_000;
        shown.maps.new_flows_per_cpu = 200_000;
        let list = crate::cli::list::render(&shown, &["eth0".into()]);
        assert!(
            list.starts_with(
                "XDP director (lb-ctl): 4 service(s), attached to eth0; connection table 5 of \
                 262144 in use, half-open 65000 of 65536; new entries at most 200000/s per CPU\n"
            ),
            "{list}"
        );
        let text = render_text(&shown, None);
        assert!(
            text.contains(
                "\n  connections tracked: 5 of 262144; half-open: 65000 of 65536\n  new entries \
                 at most 200000/s per CPU\n"
            ),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&shown).expect("json")).expect("parse");
        assert_eq!(json["half_open"], 65_000);
        assert_eq!(json["half_open_capacity"], 65_536);
        assert_eq!(json["new_flows_per_cpu"], 200_000);
        let prom = render_prometheus(&shown).expect("prometheus");
        for line in [
            "lb_half_open_entries 65000",
            "lb_half_open_capacity 65536",
            "lb_new_flows_per_cpu 200000",
        ] {
            assert!(prom.lines().any(|l| l == line), "no `{line}` in:\n{prom}");
        }
    }

    #[test]
    fn announced_services_are_listed_and_exported() {
        let mut shown = sample();
        let report = |service: &str, announced: bool, state: &str| crate::net::announced::Report {
            service: service.into(),
            vip: "192.168.58.133".into(),
            table: 100,
            via: "bird".into(),
            withdraw_when: "no_backend".into(),
            announced,
            state: state.into(),
            pid: 42,
        };
        shown.announce = vec![
            report("web", true, "announced"),
            report("dns", false, "withdrawn: no backend"),
        ];
        let lines = "Announce web 192.168.58.133 table 100 (bird, withdraw when no_backend): \
                     announced\nAnnounce dns 192.168.58.133 table 100 (bird, withdraw when \
                     no_backend): withdrawn: no backend\n";
        assert!(
            crate::cli::list::render(&shown, &[]).ends_with(lines),
            "{}",
            crate::cli::list::render(&shown, &[])
        );
        assert!(render_text(&shown, None).ends_with(lines));
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&shown).expect("json")).expect("parse");
        assert_eq!(json["announce"][0]["state"], "announced");
        assert_eq!(json["announce"][1]["announced"], false);
        let prom = render_prometheus(&shown).expect("prometheus");
        assert!(
            prom.contains("lb_announced{service=\"web\",vip=\"192.168.58.133\",table=\"100\"} 1\n"),
            "{prom}"
        );
        assert!(
            prom.contains("lb_announced{service=\"dns\",vip=\"192.168.58.133\",table=\"100\"} 0\n")
        );
    }
}
