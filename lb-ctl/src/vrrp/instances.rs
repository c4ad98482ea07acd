//! Every VRRP instance of a file, as one group: started together with their tracked scripts
//! and sync groups, their reports written for `list` and `stats` every second (the one
//! writer of [`super::report`] files), changed in place by a reload ([`Instances::update`]),
//! stopped together. `lb-ctl run` holds a group beside its services and tells it which
//! services are healthy ([`Instances::set_services`]); `lb-ctl vrrp` runs one alone
//! ([`run_until_signal`]; there, tracked services count as healthy).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{error, info, warn};

use super::{
    group::Group,
    instance::{self, Handle, Setup},
    report,
    status::Status,
    track::{self, Results, Tracking},
};
use crate::{
    config::{Config, SyncGroup, VrrpConfig, VrrpScript},
    exec::hooks::Hooks,
};

/// How often the reports are written (for the counters).
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often the writer looks for a change of state or master, which it writes at once: a
/// transition shows in `list` and `stats` within this.
const CHANGE_POLL: Duration = Duration::from_millis(100);
/// How long each instance gets to hand over (a priority-0 advert) at stop.
const STOP_WAIT: Duration = Duration::from_secs(2);

type Shown = Arc<Mutex<Vec<(String, Arc<Status>)>>>;

/// The running instances of one file.
pub struct Instances {
    handles: Vec<Handle>,
    /// The groups as configured, and the running ones by name.
    groups: Vec<SyncGroup>,
    running_groups: BTreeMap<String, Arc<Group>>,
    scripts: Vec<(VrrpScript, JoinHandle<()>)>,
    results: watch::Sender<Results>,
    hooks: Hooks,
    reports: PathBuf,
    shown: Shown,
    writer: Option<JoinHandle<()>>,
}

/// Whether `a` can become `b` in place: same sockets (interface, router id, version,
/// password, peers).
fn in_place(a: &VrrpConfig, b: &VrrpConfig) -> bool {
    a.interface == b.interface
        && a.virtual_router_id == b.virtual_router_id
        && a.version == b.version
        && a.auth_pass == b.auth_pass
        && a.unicast_peers == b.unicast_peers
}

/// The group `instance` is in, if any.
fn group_of<'a>(groups: &'a [SyncGroup], instance: &str) -> Option<&'a SyncGroup> {
    groups
        .iter()
        .find(|g| g.instances.iter().any(|i| i == instance))
}

/// What makes two groups the same for their members: the name and the members.
fn same_group(a: Option<&SyncGroup>, b: Option<&SyncGroup>) -> bool {
    a.map(|g| (&g.name, &g.instances)) == b.map(|g| (&g.name, &g.instances))
}

impl Instances {
    /// Starts every instance of `config.vrrp` (none is fine: then nothing runs and nothing is
    /// written) with their scripts and groups; hooks run in `hooks`, reports go to `reports`.
    pub fn start(config: &Config, hooks: &Hooks, reports: PathBuf) -> Instances {
        let mut all = Instances {
            handles: Vec::new(),
            groups: Vec::new(),
            running_groups: BTreeMap::new(),
            scripts: Vec::new(),
            results: watch::channel(Results::default()).0,
            hooks: hooks.clone(),
            reports,
            shown: Arc::new(Mutex::new(Vec::new())),
            writer: None,
        };
        all.update(config);
        all
    }

    /// Makes the running instances those of `config`: unchanged ones keep running untouched;
    /// changed ones take their new setup in place (their state stays), or restart when their
    /// sockets or sync group changed; removed ones stop (a master hands over), new ones start.
    pub fn update(&mut self, config: &Config) {
        self.update_scripts(&config.vrrp_scripts);
        let old_groups = std::mem::replace(&mut self.groups, config.vrrp_sync_groups.clone());
        self.running_groups
            .retain(|name, _| config.vrrp_sync_groups.iter().any(|g| &g.name == name));
        let mut stopping = Vec::new();
        let mut kept = Vec::new();
        for h in std::mem::take(&mut self.handles) {
            let old = h.setup.borrow().cfg.clone();
            let new = config.vrrp.iter().find(|c| c.name == h.name);
            let group_same = same_group(
                group_of(&old_groups, &h.name),
                group_of(&config.vrrp_sync_groups, &h.name),
            );
            match new {
                Some(new) if in_place(&old, new) && group_same => {
                    let setup = Setup {
                        cfg: new.clone(),
                        tracking: Tracking::of(new, &config.vrrp_scripts),
                    };
                    h.setup.send_if_modified(|s| {
                        let changed = *s != setup;
                        *s = setup;
                        changed
                    });
                    kept.push(h);
                }
                Some(_) => {
                    info!(instance = %h.name, "VRRP instance restarts: its interface, router id, version, password, peers or sync group changed");
                    stopping.push(h);
                }
                None => {
                    info!(instance = %h.name, "VRRP instance removed");
                    stopping.push(h);
                }
            }
        }
        // A restarted member gets a fresh group: stop the others of a changed group too.
        for g in &config.vrrp_sync_groups {
            let was = old_groups.iter().find(|o| o.name == g.name);
            if !same_group(was, Some(g)) {
                self.running_groups.remove(&g.name);
            }
        }
        self.handles = kept;
        for h in stopping {
            self.stop_one(h);
        }
        for cfg in &config.vrrp {
            if self.handles.iter().any(|h| h.name == cfg.name) {
                continue;
            }
            let group = group_of(&config.vrrp_sync_groups, &cfg.name).map(|g| {
                self.running_groups
                    .entry(g.name.clone())
                    .or_insert_with(|| Group::new(&g.name, &g.instances))
                    .clone()
            });
            let setup = Setup {
                cfg: cfg.clone(),
                tracking: Tracking::of(cfg, &config.vrrp_scripts),
            };
            let h = instance::spawn(setup, group, self.results.subscribe(), self.hooks.clone());
            self.handles.push(h);
        }
        // File order, as `list` shows them.
        self.handles.sort_by_key(|h| {
            (config.vrrp.iter())
                .position(|c| c.name == h.name)
                .unwrap_or(usize::MAX)
        });
        let shown: Vec<(String, Arc<Status>)> = (self.handles.iter())
            .map(|h| (h.name.clone(), h.status.clone()))
            .collect();
        *self.shown.lock().unwrap_or_else(|e| e.into_inner()) = shown;
        if self.writer.is_none() && !self.handles.is_empty() {
            self.writer = Some(tokio::spawn(write_every(
                self.reports.clone(),
                self.shown.clone(),
            )));
        }
    }

    /// Whether an instance on `iface` is master now.
    pub fn master_on(&self, iface: &str) -> bool {
        self.handles.iter().any(|h| {
            h.setup.borrow().cfg.interface == iface
                && h.status.state() == Some(super::state::State::Master)
        })
    }

    /// Scripts that changed restart; removed ones stop (their result is forgotten).
    fn update_scripts(&mut self, wanted: &[VrrpScript]) {
        let mut keep = Vec::new();
        for (s, task) in std::mem::take(&mut self.scripts) {
            if wanted.contains(&s) {
                keep.push((s, task));
            } else {
                task.abort();
                self.results.send_modify(|r| {
                    r.scripts.remove(&s.name);
                });
            }
        }
        for s in wanted {
            if !keep.iter().any(|(k, _)| k == s) {
                let task = tokio::spawn(track::run_script(s.clone(), self.results.clone()));
                keep.push((s.clone(), task));
            }
        }
        self.scripts = keep;
    }

    /// Tells the instances which services are healthy (at least one backend up with a
    /// weight above 0), by name.
    pub fn set_services(&self, healthy: BTreeMap<String, bool>) {
        self.results.send_if_modified(|r| {
            let changed = r.services != healthy;
            r.services = healthy;
            changed
        });
    }

    /// Stops one instance in the background (a master hands over first); its report goes.
    fn stop_one(&self, h: Handle) {
        let _ = h.stop.send(true);
        let dir = self.reports.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(STOP_WAIT, h.task).await.is_err() {
                warn!(instance = %h.name, "VRRP instance did not stop within 2 s");
            }
            report::remove_all(&dir, std::iter::once(h.name.as_str()));
        });
    }

    /// Removes the reports, then tells every instance to stop (a master hands over with
    /// priority 0) and waits for each at most 2 s.
    pub async fn stop(mut self) {
        if let Some(w) = self.writer.take() {
            w.abort();
            let _ = w.await;
        }
        for (_, task) in self.scripts.drain(..) {
            task.abort();
        }
        report::remove_all(&self.reports, self.handles.iter().map(|h| h.name.as_str()));
        for h in &self.handles {
            let _ = h.stop.send(true);
        }
        for h in self.handles {
            if tokio::time::timeout(STOP_WAIT, h.task).await.is_err() {
                warn!(instance = %h.name, "VRRP instance did not stop within 2 s");
            }
        }
    }
}

/// Writes the reports of `shown` every [`REPORT_EVERY`], the first at once, and within
/// [`CHANGE_POLL`] of a change of an instance's state or master.
async fn write_every(dir: PathBuf, shown: Shown) {
    let mut tick = tokio::time::interval(CHANGE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written: Option<(tokio::time::Instant, u64)> = None;
    loop {
        tick.tick().await;
        let (reports, changes) = {
            let shown = shown.lock().unwrap_or_else(|e| e.into_inner());
            let changes: u64 = (shown.iter())
                .map(|(_, status)| status.changes.load(Ordering::Relaxed))
                .sum();
            let due =
                written.is_none_or(|(at, seen)| seen != changes || at.elapsed() >= REPORT_EVERY);
            if !due {
                continue;
            }
            let reports: Vec<report::Report> = (shown.iter())
                .map(|(name, status)| status.report(name))
                .collect();
            (reports, changes)
        };
        written = Some((tokio::time::Instant::now(), changes));
        if let Err(e) = report::write_all(&dir, &reports) {
            warn!(error = %format!("{e:#}"), "writing the VRRP status for list/stats");
        }
    }
}

/// Runs every instance of `config` until SIGTERM or SIGINT; then each master hands over
/// with priority 0 (waited for at most 2 s) and the hooks that still run are killed. Each
/// hook may run `hook_timeout`. SIGHUP reads `file` again and applies its `vrrp:` part as
/// `lb-ctl run` does on a reload (a file with errors is refused, the running one stays). For
/// `lb-ctl vrrp` (no health checks: tracked services count as healthy).
pub async fn run_until_signal(
    config: Config,
    file: PathBuf,
    reports: PathBuf,
    hook_timeout: Duration,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    if config.vrrp.is_empty() {
        bail!("the file has no `vrrp:` instances");
    }
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let hooks = Hooks::new(hook_timeout);
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut instances = Instances::start(&config, &hooks, reports);
    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => match crate::config::load(&file) {
                Ok(c) if c.vrrp.is_empty() => {
                    error!(file = %file.display(), "reload refused: the file has no `vrrp:` instances");
                }
                Ok(c) => {
                    info!(file = %file.display(), "SIGHUP: reloading the VRRP instances");
                    instances.update(&c);
                }
                Err(e) => {
                    let errors: Vec<String> = e.diagnostics.iter().map(ToString::to_string).collect();
                    error!(file = %file.display(), errors = %errors.join("; "), "reload refused: the file is not valid; the running instances stay");
                }
            },
        }
    };
    info!(signal = why, "stopping VRRP");
    instances.stop().await;
    if hooks.stop(STOP_WAIT).await > 0 {
        warn!("notify hooks did not stop within 2 s");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::state::State;

    /// A transition reaches the report file within a few polls, not a whole
    /// [`REPORT_EVERY`] later.
    #[tokio::test(flavor = "current_thread")]
    async fn a_transition_is_written_at_once() {
        let dir = PathBuf::from(format!("/tmp/lb-vrrp-writer-test-{}", std::process::id()));
        let status = Arc::new(Status::default());
        let shown: Shown = Arc::new(Mutex::new(vec![("VI_1".into(), status.clone())]));
        let writer = tokio::spawn(write_every(dir.clone(), shown));
        let state_of = || report::read_all(&dir).first().map(|r| r.state.clone());
        // The first report at once: no state yet.
        let start = tokio::time::Instant::now();
        while state_of().is_none() && start.elapsed() < REPORT_EVERY {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(state_of().as_deref(), Some("init"));
        // Right after the first write: the next periodic one is a second away.
        status.set_state(State::Master);
        let changed = tokio::time::Instant::now();
        while state_of().as_deref() != Some("master") && changed.elapsed() < REPORT_EVERY {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = changed.elapsed();
        writer.abort();
        report::remove_all(&dir, ["VI_1"]);
        assert_eq!(state_of(), None);
        assert!(
            took < CHANGE_POLL * 3,
            "the transition showed after {took:?} (polling every {CHANGE_POLL:?})"
        );
    }
}
