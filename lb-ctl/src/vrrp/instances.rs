//! Every VRRP instance of a file, as one group: started together, their reports written for
//! `list` and `stats` every second (the one writer of [`super::report`] files), stopped
//! together. `lb-ctl run` holds a group beside its services; `lb-ctl vrrp` runs one alone
//! ([`run_until_signal`]).

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, bail};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

use super::{
    instance::{self, Handle},
    report,
    status::Status,
};
use crate::{config::VrrpConfig, exec::hooks::Hooks};

/// How often the reports are written: a transition shows in `list` within this.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How long each instance gets to hand over (a priority-0 advert) at stop.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// The running instances of one file.
pub struct Instances {
    handles: Vec<Handle>,
    /// Each handle's interface.
    interfaces: Vec<String>,
    stop: watch::Sender<bool>,
    reports: PathBuf,
    writer: Option<JoinHandle<()>>,
}

impl Instances {
    /// Starts every instance of `list` (none is fine: then nothing runs and nothing is
    /// written); their hooks run in `hooks`, their reports go to `reports`.
    pub fn start(list: &[VrrpConfig], hooks: &Hooks, reports: PathBuf) -> Instances {
        let (stop, rx) = watch::channel(false);
        let handles: Vec<Handle> = (list.iter())
            .map(|c| instance::spawn(c.clone(), rx.clone(), hooks.clone()))
            .collect();
        let shown: Vec<(String, Arc<Status>)> = (handles.iter())
            .map(|h| (h.name.clone(), h.status.clone()))
            .collect();
        let writer = (!shown.is_empty()).then(|| tokio::spawn(write_every(reports.clone(), shown)));
        Instances {
            handles,
            interfaces: list.iter().map(|c| c.interface.clone()).collect(),
            stop,
            reports,
            writer,
        }
    }

    /// Whether an instance on `iface` is master now.
    pub fn master_on(&self, iface: &str) -> bool {
        (self.handles.iter().zip(&self.interfaces))
            .any(|(h, i)| i == iface && h.status.state() == Some(super::state::State::Master))
    }

    /// Removes the reports, then tells every instance to stop (a master hands over with
    /// priority 0) and waits for each at most 2 s.
    pub async fn stop(mut self) {
        if let Some(w) = self.writer.take() {
            w.abort();
            let _ = w.await;
        }
        report::remove_all(&self.reports, self.handles.iter().map(|h| h.name.as_str()));
        let _ = self.stop.send(true);
        for h in self.handles {
            if tokio::time::timeout(STOP_WAIT, h.task).await.is_err() {
                warn!(instance = %h.name, "VRRP instance did not stop within 2 s");
            }
        }
    }
}

/// Writes the reports of `shown` every [`REPORT_EVERY`], the first at once.
async fn write_every(dir: PathBuf, shown: Vec<(String, Arc<Status>)>) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let reports: Vec<report::Report> = (shown.iter())
            .map(|(name, status)| status.report(name))
            .collect();
        if let Err(e) = report::write_all(&dir, &reports) {
            warn!(error = %format!("{e:#}"), "writing the VRRP status for list/stats");
        }
    }
}

/// Runs every instance of `list` until SIGTERM or SIGINT; then each master hands over with
/// priority 0 (waited for at most 2 s) and the hooks that still run are killed. Each hook may
/// run `hook_timeout`. For `lb-ctl vrrp`.
pub async fn run_until_signal(
    list: Vec<VrrpConfig>,
    reports: PathBuf,
    hook_timeout: Duration,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    if list.is_empty() {
        bail!("the file has no `vrrp:` instances");
    }
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let hooks = Hooks::new(hook_timeout);
    let instances = Instances::start(&list, &hooks, reports);
    let why = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(signal = why, "stopping VRRP");
    instances.stop().await;
    if hooks.stop(STOP_WAIT).await > 0 {
        warn!("notify hooks did not stop within 2 s");
    }
    Ok(())
}
