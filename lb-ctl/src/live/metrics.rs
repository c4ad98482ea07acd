//! `/metrics`: the families of `stats --prometheus` (the same code, [`stats::families`]), then
//! what only the daemon knows: each backend's state and each VRRP instance's state as 0/1
//! gauges, the connection table's capacity, the health checks' durations (a histogram per
//! checked address, [`Latency`]) and the transitions counted, all written by prometheus-client.

use anyhow::{Context as _, Result};
use prometheus_client::{
    encoding::prometheus_text,
    metrics::{MetricType::Gauge, counter::Counter, family::Family},
    registry::Registry,
};

use crate::{
    cli::{
        director::Director,
        stats::{self, Families, Family as Fam, Labels},
    },
    health::latency::Latency,
};

/// The states a backend is shown in (`lb_backend_state`).
pub const BACKEND_STATES: [&str; 4] = ["up", "down", "draining", "unresolved"];
/// The states of a VRRP instance (`lb_vrrp_state`).
pub const VRRP_STATES: [&str; 4] = ["init", "backup", "master", "fault"];

type Counters = Family<Vec<(&'static str, String)>, Counter>;

/// The daemon's own counters.
#[derive(Clone, Debug, Default)]
pub struct Transitions {
    /// Health transitions by service, backend and the state entered.
    pub health: Counters,
    /// VRRP transitions by instance and the state entered.
    pub vrrp: Counters,
    /// Reloads by result: `applied`, `unchanged`, `refused`.
    pub reloads: Counters,
}

impl Transitions {
    pub fn health(&self, service: &str, backend: &str, to: &str) {
        let labels = vec![
            ("service", service.to_string()),
            ("backend", backend.to_string()),
            ("to", to.to_string()),
        ];
        self.health.get_or_create(&labels).inc();
    }

    pub fn vrrp(&self, instance: &str, to: &str) {
        let labels = vec![("instance", instance.to_string()), ("to", to.to_string())];
        self.vrrp.get_or_create(&labels).inc();
    }

    pub fn reload(&self, result: &str) {
        self.reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }
}

/// The gauges read from the director's state (not counted in this process).
fn state_families(shown: &Director) -> Vec<Fam> {
    let mut state = Vec::new();
    for s in &shown.maps.services {
        for b in &s.backends {
            for name in BACKEND_STATES {
                let mut labels: Labels = stats::backend_labels(s, b);
                labels.push(("state", name.to_string()));
                state.push((labels, u64::from(b.state() == name)));
            }
        }
    }
    let mut vrrp = Vec::new();
    for r in &shown.vrrp {
        for name in VRRP_STATES {
            let labels = vec![
                ("instance", r.instance.clone()),
                ("state", name.to_string()),
            ];
            vrrp.push((labels, u64::from(r.state == name)));
        }
    }
    let mut out = vec![
        Fam {
            name: "lb_backend_state",
            help: "1 for the backend's state as `list` shows it (up, down: held down by health checks, draining: weight 0, unresolved: no MAC or tunnel source), 0 for the others.",
            kind: Gauge,
            samples: state,
        },
        Fam {
            name: "lb_flows_capacity",
            help: "Entries the connection table can hold (the least recently used go first).",
            kind: Gauge,
            samples: vec![(Vec::new(), u64::from(shown.maps.flows_capacity))],
        },
    ];
    if !vrrp.is_empty() {
        out.push(Fam {
            name: "lb_vrrp_state",
            help: "1 for the VRRP instance's state (init, backup, master, fault), 0 for the others.",
            kind: Gauge,
            samples: vrrp,
        });
    }
    out
}

/// The whole exposition: `shown` (when read yet), the state gauges, check durations and
/// transitions.
pub fn render(shown: Option<&Director>, latency: &Latency, t: &Transitions) -> Result<String> {
    let mut registry = Registry::default();
    if let Some(shown) = shown {
        registry.register_collector(Box::new(Families(stats::families(shown))));
        registry.register_collector(Box::new(Families(state_families(shown))));
    }
    registry.register(
        "lb_health_check_duration_seconds",
        "How long health checks took, by checked address, check type and result",
        latency.family(),
    );
    registry.register(
        "lb_health_transitions",
        "Health transitions, by service, backend and the state entered",
        t.health.clone(),
    );
    registry.register(
        "lb_vrrp_transitions",
        "VRRP state changes seen by the daemon (sampled every second), by instance and the state entered",
        t.vrrp.clone(),
    );
    registry.register(
        "lb_reloads",
        "Reloads of the service file, by result (applied, unchanged, refused)",
        t.reloads.clone(),
    );
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry).context("writing the Prometheus text")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::health::Target;

    #[test]
    fn states_durations_and_transitions_are_exposed() {
        let mut snap = crate::live::rates::tests::snapshot(3, 30, 1800);
        snap.services[0].backends[0].down = true;
        let shown = Director {
            maps: snap,
            vrrp: vec![crate::vrrp::report::Report {
                instance: "VI_1".into(),
                state: "master".into(),
                ..Default::default()
            }],
            forwarding_off: Vec::new(),
            announce: Vec::new(),
            sync: None,
        };
        let latency = Latency::default();
        let target = Target {
            service: "web".into(),
            address: "192.168.58.135".parse().unwrap_or_else(|_| unreachable!()),
            port: 80,
            backend_port: 80,
            vip: None,
        };
        latency.observe("http_get", &target, Duration::from_millis(3), true);
        latency.observe("http_get", &target, Duration::from_millis(300), false);
        let t = Transitions::default();
        t.health("web", "192.168.58.135", "down");
        t.health("web", "192.168.58.135", "down");
        t.vrrp("VI_1", "master");
        t.reload("refused");
        let text = render(Some(&shown), &latency, &t).unwrap_or_else(|e| panic!("{e:#}"));
        let has = |line: &str| {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        };
        // The families of `stats --prometheus`, unchanged.
        has(
            "lb_backend_up{service=\"web\",vip=\"192.168.58.133\",port=\"80\",protocol=\"tcp\",backend=\"192.168.58.135:80\",forward=\"route\"} 0",
        );
        has(
            "lb_backend_packets_total{service=\"web\",vip=\"192.168.58.133\",port=\"80\",protocol=\"tcp\",backend=\"192.168.58.135:80\",forward=\"route\"} 30",
        );
        has(
            "lb_backend_state{service=\"web\",vip=\"192.168.58.133\",port=\"80\",protocol=\"tcp\",backend=\"192.168.58.135:80\",forward=\"route\",state=\"down\"} 1",
        );
        has(
            "lb_backend_state{service=\"web\",vip=\"192.168.58.133\",port=\"80\",protocol=\"tcp\",backend=\"192.168.58.135:80\",forward=\"route\",state=\"up\"} 0",
        );
        has("lb_vrrp_state{instance=\"VI_1\",state=\"master\"} 1");
        has("lb_vrrp_state{instance=\"VI_1\",state=\"backup\"} 0");
        has("lb_flows_capacity 1024");
        has("lb_half_open_entries 0");
        has("lb_half_open_capacity 256");
        has("lb_new_flows_per_cpu 0");
        has(
            "lb_health_transitions_total{service=\"web\",backend=\"192.168.58.135\",to=\"down\"} 2",
        );
        has("lb_vrrp_transitions_total{instance=\"VI_1\",to=\"master\"} 1");
        has("lb_reloads_total{result=\"refused\"} 1");
        has(
            "lb_health_check_duration_seconds_count{backend=\"192.168.58.135:80\",check=\"http_get\",result=\"ok\"} 1",
        );
        has(
            "lb_health_check_duration_seconds_bucket{backend=\"192.168.58.135:80\",check=\"http_get\",result=\"ok\",le=\"0.004\"} 1",
        );
        has(
            "lb_health_check_duration_seconds_bucket{backend=\"192.168.58.135:80\",check=\"http_get\",result=\"ok\",le=\"0.002\"} 0",
        );
        has(
            "# HELP lb_reloads_total Reloads of the service file, by result (applied, unchanged, refused).",
        );
        // Before the first read: only what the daemon counts.
        let early = render(None, &latency, &t).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(!early.contains("lb_backend_up"), "{early}");
        assert!(early.contains("lb_reloads_total"), "{early}");
    }
}
