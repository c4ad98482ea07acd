//! `lb-ctl stats`: counters summed over CPUs, as a table, JSON or Prometheus text; with
//! `--watch`, per-second rates like `ipvsadm -L -n --rate`.

use std::{collections::HashMap, fmt::Write as _, time::Duration};

use anyhow::Result;
use serde::Serialize;

use crate::maps::view::Snapshot;

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
pub fn render_text(snap: &Snapshot, rates: Option<&Rates>) -> String {
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
            format!("{}:{} ({})", s.vip, s.port, s.name),
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
                format!("{}:{}", b.address, b.port),
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
        let _ = writeln!(out, "  {:<20} {:<5} {:>12}", r.reason, r.action, r.packets);
    }
    let _ = writeln!(out, "  connections tracked: {}", snap.flows);
    out.push_str(&crate::cli::list::render_vrrp(&snap.vrrp));
    out
}

#[derive(Serialize)]
struct JsonOut<'a> {
    #[serde(flatten)]
    snap: &'a Snapshot,
}

pub fn render_json(snap: &Snapshot) -> Result<String> {
    Ok(serde_json::to_string_pretty(&JsonOut { snap })?)
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render_prometheus(snap: &Snapshot) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    };
    let svc_labels = |s: &crate::maps::view::ServiceView| {
        format!(
            "service=\"{}\",vip=\"{}\",port=\"{}\",protocol=\"{}\"",
            label(&s.name),
            s.vip,
            s.port,
            s.protocol
        )
    };
    type Pick = fn(&crate::maps::view::ServiceView) -> u64;
    let service_metrics: [(&str, &str, Pick); 3] = [
        (
            "lb_service_packets_total",
            "Packets forwarded for the service.",
            |s| s.packets,
        ),
        (
            "lb_service_bytes_total",
            "IP bytes forwarded for the service.",
            |s| s.bytes,
        ),
        (
            "lb_service_connections_total",
            "Connections scheduled for the service.",
            |s| s.connections,
        ),
    ];
    for (name, help, pick) in service_metrics {
        let samples = snap
            .services
            .iter()
            .map(|s| (svc_labels(s), pick(s)))
            .collect();
        family(name, "counter", help, samples);
    }
    type PickB = fn(&crate::maps::view::BackendView) -> u64;
    let backend_metrics: [(&str, &str, &str, PickB); 6] = [
        (
            "lb_backend_packets_total",
            "counter",
            "Packets forwarded to the backend.",
            |b| b.packets,
        ),
        (
            "lb_backend_bytes_total",
            "counter",
            "IP bytes forwarded to the backend.",
            |b| b.bytes,
        ),
        (
            "lb_backend_connections_total",
            "counter",
            "Connections scheduled to the backend.",
            |b| b.connections,
        ),
        (
            "lb_backend_active_connections",
            "gauge",
            "Live TCP connections in SYN or ESTABLISHED, as lc/wlc count them (ipvsadm ActiveConn).",
            |b| b.active_connections,
        ),
        (
            "lb_backend_inactive_connections",
            "gauge",
            "Other live connections (ipvsadm InActConn).",
            |b| b.inactive_connections,
        ),
        (
            "lb_backend_weight",
            "gauge",
            "Configured weight (0 = draining).",
            |b| b.weight as u64,
        ),
    ];
    for (name, kind, help, pick) in backend_metrics {
        let samples = snap
            .services
            .iter()
            .flat_map(|s| {
                s.backends.iter().map(move |b| {
                    (
                        format!("{},backend=\"{}:{}\"", svc_labels(s), b.address, b.port),
                        pick(b),
                    )
                })
            })
            .collect();
        family(name, kind, help, samples);
    }
    let samples = snap
        .services
        .iter()
        .flat_map(|s| {
            s.backends.iter().map(move |b| {
                (
                    format!("{},backend=\"{}:{}\"", svc_labels(s), b.address, b.port),
                    b.usable as u64,
                )
            })
        })
        .collect();
    family(
        "lb_backend_usable",
        "gauge",
        "1 when the backend's MAC is known and it takes traffic.",
        samples,
    );
    let samples = snap
        .services
        .iter()
        .flat_map(|s| {
            s.backends.iter().map(move |b| {
                (
                    format!("{},backend=\"{}:{}\"", svc_labels(s), b.address, b.port),
                    u64::from(!b.down),
                )
            })
        })
        .collect();
    family(
        "lb_backend_up",
        "gauge",
        "Health: 1 unless health checks (lb-ctl run) hold the backend down.",
        samples,
    );
    let samples = snap
        .datapath
        .iter()
        .map(|r| {
            (
                format!("reason=\"{}\",action=\"{}\"", r.reason, r.action),
                r.packets,
            )
        })
        .collect();
    family(
        "lb_datapath_packets_total",
        "counter",
        "Packets seen by the XDP program, by what it did with them.",
        samples,
    );
    family(
        "lb_flows",
        "gauge",
        "Live entries in the connection table.",
        vec![(String::new(), snap.flows)],
    );
    if !snap.vrrp.is_empty() {
        let inst = |r: &crate::vrrp::report::Report| format!("instance=\"{}\"", label(&r.instance));
        let vrrp = |f: fn(&crate::vrrp::report::Report) -> u64| -> Vec<(String, u64)> {
            snap.vrrp.iter().map(|r| (inst(r), f(r))).collect()
        };
        family(
            "lb_vrrp_master",
            "gauge",
            "1 while this director is the VRRP master.",
            vrrp(|r| u64::from(r.state == "master")),
        );
        family(
            "lb_vrrp_adverts_sent_total",
            "counter",
            "VRRP adverts sent.",
            vrrp(|r| r.adverts_sent),
        );
        family(
            "lb_vrrp_adverts_received_total",
            "counter",
            "VRRP adverts received.",
            vrrp(|r| r.adverts_received),
        );
        family(
            "lb_vrrp_errors_total",
            "counter",
            "Malformed or unauthenticated VRRP adverts, ignored.",
            vrrp(|r| r.errors),
        );
    }
    out
}
