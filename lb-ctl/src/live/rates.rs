//! Rates for the page's charts: the daemon samples the counters every second; each sample
//! is the per-second rate since the one before (new flows/s, packets/s, bytes/s per service
//! and backend, [`Rates::between`], as `stats --watch` computes them). The last 5 minutes
//! are kept.

use std::{collections::VecDeque, time::Duration};

use serde::Serialize;

use crate::{cli::stats::Rates, maps::view::Snapshot};

/// Samples kept: 5 minutes at one a second.
pub const KEPT: usize = 300;

/// One sample: the rates over `interval` ending at `at_ms` (Unix milliseconds).
#[derive(Clone, Debug)]
pub struct Sample {
    pub at_ms: u64,
    pub interval: Duration,
    pub rates: Rates,
}

/// Per-second rates of one service or backend: new flows, packets, IP bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rate {
    pub new_flows: f64,
    pub packets: f64,
    pub bytes: f64,
}

impl From<[f64; 3]> for Rate {
    fn from([new_flows, packets, bytes]: [f64; 3]) -> Rate {
        Rate {
            new_flows,
            packets,
            bytes,
        }
    }
}

/// The history of one rate per sample, oldest first (0 where the service or backend did not
/// exist).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct History {
    pub new_flows: Vec<f64>,
    pub packets: Vec<f64>,
    pub bytes: Vec<f64>,
}

/// Which of a sample's maps: services (by service id) or backends (by backend id).
#[derive(Clone, Copy, Debug)]
pub enum Of {
    Service,
    Backend,
}

/// The ring of samples, oldest first.
#[derive(Debug)]
pub struct Ring {
    samples: VecDeque<Sample>,
    cap: usize,
}

impl Default for Ring {
    fn default() -> Ring {
        Ring::with_capacity(KEPT)
    }
}

impl Ring {
    pub fn with_capacity(cap: usize) -> Ring {
        Ring {
            samples: VecDeque::with_capacity(cap),
            cap: cap.max(1),
        }
    }

    /// Adds the rates between two reads of the counters, `elapsed` apart, the newer at `at_ms`.
    pub fn push(&mut self, old: &Snapshot, new: &Snapshot, elapsed: Duration, at_ms: u64) {
        if self.samples.len() == self.cap {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at_ms,
            interval: elapsed,
            rates: Rates::between(old, new, elapsed),
        });
    }

    /// The newest sample.
    pub fn last(&self) -> Option<&Sample> {
        self.samples.back()
    }

    /// The samples' times, oldest first.
    pub fn times(&self) -> Vec<u64> {
        self.samples.iter().map(|s| s.at_ms).collect()
    }

    /// The newest rate of service or backend `id` (0 before the first sample).
    pub fn now(&self, of: Of, id: u32) -> Rate {
        self.last()
            .and_then(|s| pick(&s.rates, of).get(&id))
            .map_or_else(Rate::default, |r| Rate::from(*r))
    }

    /// Every sample's rate of service or backend `id`, oldest first.
    pub fn history(&self, of: Of, id: u32) -> History {
        let mut h = History::default();
        for s in &self.samples {
            let r = pick(&s.rates, of).get(&id).copied().unwrap_or_default();
            h.new_flows.push(r[0]);
            h.packets.push(r[1]);
            h.bytes.push(r[2]);
        }
        h
    }
}

fn pick(r: &Rates, of: Of) -> &std::collections::HashMap<u32, [f64; 3]> {
    match of {
        Of::Service => &r.service,
        Of::Backend => &r.backend,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::maps::view::{BackendView, ServiceView};

    /// A snapshot of one service (id 0) with one backend (id 7) and these counters.
    pub(crate) fn snapshot(connections: u64, packets: u64, bytes: u64) -> Snapshot {
        let backend = BackendView {
            id: 7,
            address: Ipv4Addr::new(192, 168, 58, 135).into(),
            port: 80,
            weight: 1,
            mac: "02:00:00:00:00:87".into(),
            forward: Some(lb_common::Forward::Route),
            tunnel_source: None,
            tunnel_port: None,
            usable: true,
            down: false,
            packets,
            bytes,
            connections,
            active_connections: 0,
            inactive_connections: 0,
        };
        Snapshot {
            services: vec![ServiceView {
                name: "web".into(),
                vip: Ipv4Addr::new(192, 168, 58, 133).into(),
                port: 80,
                protocol: "tcp",
                scheduler: "rr",
                persistence_timeout: 0,
                persistence_netmask: Ipv4Addr::BROADCAST.into(),
                persistence_prefix_len: 32,
                packets,
                bytes,
                connections,
                backends: vec![backend],
                key: lb_common::ServiceKey::default(),
                id: 0,
                table_len: 0,
            }],
            datapath: Vec::new(),
            flows: 0,
            flows_capacity: 1024,
            half_open: 0,
            half_open_capacity: 256,
            new_flows_per_cpu: 0,
        }
    }

    #[test]
    fn rates_are_per_second_over_the_interval() {
        let mut ring = Ring::default();
        assert_eq!(ring.now(Of::Service, 0), Rate::default());
        let (a, b, c) = (
            snapshot(10, 100, 6_000),
            snapshot(30, 400, 24_000),
            snapshot(30, 400, 24_000),
        );
        // 20 new flows, 300 packets, 18,000 bytes in 2 s.
        ring.push(&a, &b, Duration::from_secs(2), 2_000);
        assert_eq!(
            ring.now(Of::Service, 0),
            Rate {
                new_flows: 10.0,
                packets: 150.0,
                bytes: 9_000.0
            }
        );
        assert_eq!(ring.now(Of::Backend, 7).packets, 150.0);
        // Nothing moved in the next 500 ms; an unknown id is 0.
        ring.push(&b, &c, Duration::from_millis(500), 2_500);
        assert_eq!(ring.now(Of::Backend, 7), Rate::default());
        assert_eq!(ring.now(Of::Backend, 8), Rate::default());
        assert_eq!(ring.times(), vec![2_000, 2_500]);
        let h = ring.history(Of::Backend, 7);
        assert_eq!(h.new_flows, vec![10.0, 0.0]);
        assert_eq!(h.bytes, vec![9_000.0, 0.0]);
        // Counters that went back (a backend removed and added again) give 0, not a wrap.
        ring.push(&c, &a, Duration::from_secs(1), 3_500);
        assert_eq!(ring.now(Of::Service, 0), Rate::default());
    }

    #[test]
    fn the_ring_keeps_five_minutes() {
        let mut ring = Ring::default();
        let (a, b) = (snapshot(0, 0, 0), snapshot(1, 1, 1));
        for i in 0..(KEPT as u64 + 20) {
            ring.push(&a, &b, Duration::from_secs(1), i * 1000);
        }
        let times = ring.times();
        assert_eq!(times.len(), KEPT);
        assert_eq!(times[0], 20_000);
        assert_eq!(ring.history(Of::Service, 0).packets.len(), KEPT);
    }
}
