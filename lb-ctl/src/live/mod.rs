//! `lb-ctl run --listen`: what the daemon shows over HTTP while it runs. [`Live`] is shared
//! between the daemon and the server: the daemon feeds it (a read of the maps every second,
//! [`Live::sample`]; the events where it logs them, [`Live::event`]; check durations and
//! transitions counted, [`metrics`]) and the server ([`server`]) renders it on each request:
//! `/metrics` ([`metrics`]), `/api/v1/status` ([`status`]) and the page (`page.html`).

pub mod events;
pub mod metrics;
pub mod rates;
pub mod server;
pub mod status;

use std::{
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;

use crate::{cli::director::Director, health::latency::Latency};

/// The latest read of the director and what the daemon recorded.
#[derive(Debug, Default)]
pub struct Live {
    /// Check durations (recorded by the probes).
    pub latency: Latency,
    pub transitions: metrics::Transitions,
    events: Mutex<events::Events>,
    sampled: Mutex<Sampled>,
}

#[derive(Default)]
struct Sampled {
    director: Option<(Director, Instant)>,
    ring: rates::Ring,
}

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampled")
            .field("read", &self.director.is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Live {
    /// Records an event (see [`events::Event`]).
    pub fn event(
        &self,
        kind: &'static str,
        subject: String,
        transition: Option<(&str, &str)>,
        reason: String,
    ) {
        let transition = transition.map(|(f, t)| (f.to_string(), t.to_string()));
        lock(&self.events).push(now_ms(), kind, subject, transition, reason);
    }

    /// A backend's health transition: an event, counted.
    pub fn health(&self, service: &str, backend: &str, from: &str, to: &str, reason: &str) {
        self.transitions.health(service, backend, to);
        self.event(
            "health",
            format!("{service} {backend}"),
            Some((from, to)),
            reason.to_string(),
        );
    }

    /// A reload: `applied`, `unchanged` or `refused` (an event with why), counted.
    pub fn reload(&self, file: &str, result: &'static str, reason: String) {
        self.transitions.reload(result);
        let kind = if result == "refused" {
            "reload_refused"
        } else {
            "reload"
        };
        self.event(kind, file.to_string(), None, reason);
    }

    /// A new read of the director: the rates since the last read go into the ring, VRRP
    /// state changes since then are events (counted).
    pub fn sample(&self, new: Director) {
        let now = Instant::now();
        let mut guard = lock(&self.sampled);
        let s = &mut *guard;
        if let Some((old, at)) = &s.director {
            (s.ring).push(&old.maps, &new.maps, now.duration_since(*at), now_ms());
            for r in &new.vrrp {
                let before = (old.vrrp.iter())
                    .find(|o| o.instance == r.instance)
                    .map(|o| o.state.as_str());
                if let Some(before) = before.filter(|b| *b != r.state) {
                    self.transitions.vrrp(&r.instance, &r.state);
                    let master = r.master.as_deref().unwrap_or("unknown");
                    self.event(
                        "vrrp",
                        r.instance.clone(),
                        Some((before, &r.state)),
                        format!("master: {master}"),
                    );
                }
            }
        }
        s.director = Some((new, now));
    }

    /// `/api/v1/status`, as text; `None` before the first read.
    pub fn status_json(&self) -> Result<Option<String>> {
        let events = lock(&self.events).list();
        let s = lock(&self.sampled);
        let Some((shown, _)) = &s.director else {
            return Ok(None);
        };
        let v = status::render(shown, &s.ring, &events, now_ms())?;
        Ok(Some(serde_json::to_string(&v)?))
    }

    /// `/metrics`.
    pub fn metrics_text(&self) -> Result<String> {
        let s = lock(&self.sampled);
        metrics::render(
            s.director.as_ref().map(|(d, _)| d),
            &self.latency,
            &self.transitions,
        )
    }
}
