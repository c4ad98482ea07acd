//! How long checks take: a histogram per checked address, port and check type, by result
//! (`ok`, `failed`), kept with prometheus-client for `lb-ctl run --listen`'s `/metrics`.

use std::time::Duration;

use prometheus_client::metrics::{
    family::Family,
    histogram::{Histogram, exponential_buckets},
};

use super::Target;

type Labels = Vec<(&'static str, String)>;

/// The histogram's buckets: 0.5 ms doubling up to about 8 s (14 bounds), then +Inf.
fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Check durations, shared by every probe task (cheap to clone: the family is shared).
#[derive(Clone, Debug)]
pub struct Latency(Family<Labels, Histogram, fn() -> Histogram>);

impl Default for Latency {
    fn default() -> Latency {
        Latency(Family::new_with_constructor(histogram as fn() -> Histogram))
    }
}

impl Latency {
    /// Records one check of `target` by a check of type `check` that took `took`.
    pub fn observe(&self, check: &'static str, target: &Target, took: Duration, ok: bool) {
        let labels = vec![
            (
                "backend",
                std::net::SocketAddr::new(target.address, target.port).to_string(),
            ),
            ("check", check.to_string()),
            ("result", if ok { "ok" } else { "failed" }.to_string()),
        ];
        self.0.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// The family, to be registered for an exposition.
    pub fn family(&self) -> Family<Labels, Histogram, fn() -> Histogram> {
        self.0.clone()
    }
}
