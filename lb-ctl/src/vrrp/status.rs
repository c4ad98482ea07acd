//! The live state and counters of one instance: written by its task, read by whoever shows
//! them (the log line at stop, the report files for `list` and `stats`).

use std::{
    net::IpAddr,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use super::{report::Report, state::State};

/// Counters and state of one instance, shared with whoever shows them.
#[derive(Debug, Default)]
pub struct Status {
    pub state: Mutex<Option<State>>,
    pub master: Mutex<Option<IpAddr>>,
    /// The instance's virtual addresses (`addr/len`), as configured.
    pub virtual_addresses: Mutex<Vec<String>>,
    pub adverts_sent: AtomicU64,
    pub adverts_received: AtomicU64,
    /// Truncated, wrong version or type, bad length or checksum.
    pub malformed: AtomicU64,
    /// TTL not 255.
    pub bad_ttl: AtomicU64,
    /// v2 authentication mismatch.
    pub bad_auth: AtomicU64,
    /// v2 interval differs from ours, or the other version.
    pub mismatched: AtomicU64,
    /// Transitions to master.
    pub became_master: AtomicU64,
    /// Changes of state or master: the report writer writes at once when this moves.
    pub changes: AtomicU64,
}

fn n(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Status {
    pub fn set_state(&self, state: State) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_master(&self, master: Option<IpAddr>) {
        *self.master.lock().unwrap_or_else(|e| e.into_inner()) = master;
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// The configured virtual addresses, as shown.
    pub fn set_addresses(&self, list: &[(IpAddr, u8)]) {
        *self
            .virtual_addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner()) =
            list.iter().map(|(a, len)| format!("{a}/{len}")).collect();
    }

    pub fn state(&self) -> Option<State> {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn master(&self) -> Option<IpAddr> {
        *self.master.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `state=master master=... adverts_sent=N adverts_received=N malformed=N bad_ttl=N
    /// bad_auth=N mismatched=N became_master=N`.
    pub fn summary(&self) -> String {
        let state = self.state().map_or("-", State::as_str);
        let master = self.master().map_or("-".to_string(), |a| a.to_string());
        format!(
            "state={state} master={master} adverts_sent={} adverts_received={} malformed={} \
             bad_ttl={} bad_auth={} mismatched={} became_master={}",
            n(&self.adverts_sent),
            n(&self.adverts_received),
            n(&self.malformed),
            n(&self.bad_ttl),
            n(&self.bad_auth),
            n(&self.mismatched),
            n(&self.became_master),
        )
    }

    /// What `list` and `stats` show of instance `name`, run by this process.
    pub fn report(&self, name: &str) -> Report {
        Report {
            instance: name.to_string(),
            state: self.state().map_or("init", State::as_str).to_string(),
            master: self.master().map(|a| a.to_string()),
            virtual_addresses: (self.virtual_addresses.lock())
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            adverts_sent: n(&self.adverts_sent),
            adverts_received: n(&self.adverts_received),
            errors: n(&self.malformed) + n(&self.bad_ttl) + n(&self.bad_auth) + n(&self.mismatched),
            became_master: n(&self.became_master),
            pid: std::process::id(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_sums_every_kind_of_error() {
        let s = Status {
            virtual_addresses: Mutex::new(vec!["fd00:58::133/128".into()]),
            ..Status::default()
        };
        assert_eq!(s.report("VI_1").state, "init");
        s.set_state(State::Master);
        s.set_master(Some("fe80::2:0:0:134".parse().unwrap()));
        for (c, v) in [
            (&s.malformed, 1),
            (&s.bad_ttl, 2),
            (&s.bad_auth, 4),
            (&s.mismatched, 8),
            (&s.adverts_sent, 5),
            (&s.became_master, 1),
        ] {
            c.store(v, Ordering::Relaxed);
        }
        let r = s.report("VI_1");
        assert_eq!(
            (r.instance.as_str(), r.state.as_str(), r.master.as_deref()),
            ("VI_1", "master", Some("fe80::2:0:0:134"))
        );
        assert_eq!(r.virtual_addresses, ["fd00:58::133/128"]);
        assert_eq!((r.errors, r.adverts_sent, r.became_master), (15, 5, 1));
        assert_eq!(r.pid, std::process::id());
        assert!(
            s.summary()
                .starts_with("state=master master=fe80::2:0:0:134 adverts_sent=5 ")
        );
    }
}
