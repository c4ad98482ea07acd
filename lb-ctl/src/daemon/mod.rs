//! `lb-ctl run`: the daemon. Attaches (or adopts an attachment), applies the service file, then
//! checks every backend that has a check and keeps the data path in line with the results,
//! the job keepalived's checkers do for IPVS.
//!
//! - One tokio task per checked backend runs its checks (at most `max_concurrent` at a time,
//!   a semaphore) and its [`Tracker`]; it sends every outcome to the main loop.
//! - The main loop owns the maps. On a transition it logs it (tracing: service, backend,
//!   from, to, reason), runs the service's `notify_up`/`notify_down`, updates the quorum and
//!   re-applies: [`effective`] turns the results into the config and the `Down` set that
//!   [`plan::apply`] writes (down backends get no new flows and their flows are rescheduled).
//! - SIGHUP, or a whole new file ([`crate::daemon::watch`], polled every second: a rename at once, an
//!   in-place change once it has settled), reloads: the file is validated first and a bad one
//!   is logged and refused (the running config stays); a file never stops the daemon.
//!   Backends whose check did not change keep their state.
//! - It reconciles: the kernel's neighbour events (RTNLGRP_NEIGH) update a backend's MAC as
//!   soon as the kernel learns a new one (a replaced NIC's gratuitous ARP), and a backend whose
//!   entry FAILED gets no traffic; every `reconcile_every` the pins are repaired
//!   ([`repair::pins`]: detached interfaces attached again, missing pins pinned again) and the
//!   maps compared with the desired state (file + health + MACs), every difference written
//!   back and logged. Unresolved backend MACs are retried then too.
//! - It holds the pin directory's write lock ([`crate::maps::lock`]) while it runs, so it is the only
//!   writer: `lb-ctl apply`, `attach` and `detach` are refused meanwhile.
//! - Checks and hooks never leave processes behind: a check's or hook's process group is
//!   killed when it ends, times out or its task is aborted ([`health::exec`]); hooks are
//!   tracked ([`Hooks`]) with a timeout.
//! - SIGTERM/SIGINT stop the checks (aborted and waited for), kill the hooks that still run,
//!   and leave the data path forwarding as it is, unless `--detach-on-exit`.

pub mod conditions;
pub mod tasks;
pub mod watch;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{Semaphore, mpsc},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};
use tracing::{error, info, warn};

use crate::{
    config::{self, Config},
    daemon::conditions::{Budget, Conditions, named},
    exec::hooks::Hooks,
    health::{
        self, State,
        probes::{self, Delays, ProbeEvent, ProbeId},
        state::{Key, Quorum, effective, live_weight},
    },
    maps::Maps,
    maps::loader::Sizes,
    maps::pins::{self, Mode},
    maps::repair,
    net::neigh::{self, NeighEvent, NeighState},
    net::resolve,
    plan::{self, Macs},
};

/// How `run` was asked to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub file: PathBuf,
    pub ifaces: Vec<String>,
    pub mode: Mode,
    pub pin_dir: PathBuf,
    pub detach_on_exit: bool,
    pub resolve_timeout: Duration,
    /// Checks running at the same time, at most.
    pub max_concurrent: usize,
    /// How often the pins and the maps are compared with the desired state and repaired.
    pub reconcile_every: Duration,
    /// How long a notify hook may run.
    pub hook_timeout: Duration,
    /// How long a file changed in place must stay unchanged before it is reloaded.
    pub reload_settle: Duration,
    /// How often the periodic summary is logged (checks' timeliness, what still holds).
    pub summary_every: Duration,
}

/// The cause of the periodic apply that repairs drift.
const RECONCILE: &str = "reconcile";

/// At most one apply of health transitions per BATCH: the longest a transition waits to be
/// applied with others.
const BATCH: Duration = Duration::from_millis(100);
/// Transitions (map changes, failed services) logged one line each at once, and per second;
/// more are summarized.
const TRANSITIONS_NAMED: usize = 8;
/// Unresolved MACs are asked for again after RESOLVE_MIN, doubling up to RESOLVE_MAX.
const RESOLVE_MIN: Duration = Duration::from_secs(5);
const RESOLVE_MAX: Duration = Duration::from_secs(60);

/// How long stopping waits for the checkers' and hooks' tasks to end.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Sets up logging to stderr (`RUST_LOG` filters; default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Runs the daemon until SIGTERM or SIGINT. Call it after entering the network namespace and
/// before any other thread exists: it starts the tokio runtime.
pub fn run(opts: Options) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lb-ctl-run")
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(main_loop(opts))
}

/// One running probe, and the backends that share it.
struct Probe {
    generation: u64,
    handle: JoinHandle<()>,
    state: State,
    /// Why it is down (its last transition's reason).
    reason: String,
    backends: Vec<Key>,
}

/// A backend's transition waiting to be applied and logged.
struct Pending {
    key: Key,
    backend_port: u16,
    transition: health::Transition,
}

struct Daemon {
    opts: Options,
    config: Config,
    maps: Maps,
    ifindexes: Vec<u32>,
    macs: Macs,
    probes: HashMap<ProbeId, Probe>,
    /// Transitions received and not applied yet (applied in batches).
    pending: Vec<Pending>,
    /// How late checks start against their schedule.
    delays: Arc<Delays>,
    /// What the last apply warned about (backends without a MAC...), logged as it changes.
    warnings: Conditions,
    /// One line per transition, map change or failed service while few; summaries past it.
    budgets: [Budget; 3],
    /// When unresolved MACs are next asked for, and the wait after that.
    resolve_due: Instant,
    resolve_backoff: Duration,
    /// Backends whose checks failed, with why.
    health_down: HashMap<Key, String>,
    /// Service name -> quorum state (services with a `quorum` only).
    quorum: HashMap<String, Quorum>,
    /// Services that had failed at the last apply (to log the sorry server once).
    failed: HashSet<String>,
    next_generation: u64,
    semaphore: Arc<Semaphore>,
    tx: mpsc::Sender<ProbeEvent>,
    hooks: Hooks,
    /// When the file is to be reloaded.
    watch: crate::daemon::watch::Watch,
}

async fn main_loop(opts: Options) -> Result<()> {
    let mut watch = crate::daemon::watch::Watch::new(&opts.file, opts.reload_settle);
    let file = opts.file.display().to_string();
    let config = match watch
        .read_now()
        .and_then(|text| config::parse(&text, &file))
    {
        Ok(c) => c,
        Err(e) => bail!("{e}"),
    };
    let dir_buf = opts.pin_dir.clone();
    let dir = dir_buf.as_path();
    let maps = pins::attach_all(dir, &opts.ifaces, opts.mode, &Sizes::default(), |l| {
        info!("{l}")
    })?;
    let ifindexes = attached_ifindexes(&maps)?;
    crate::net::own_addresses::check(&config, &file, &ifindexes)?;
    // Subscribed before the first resolution, so no answer the kernel learns is missed.
    let (neigh_tx, mut neigh_rx) = mpsc::channel::<NeighEvent>(4096);
    let _neigh_thread = neigh::watch(move |ev| neigh_tx.blocking_send(ev).is_ok())?;

    let (tx, mut rx) = mpsc::channel(1024);
    let mut d = Daemon {
        macs: Macs::new(),
        config,
        maps,
        ifindexes,
        probes: HashMap::new(),
        pending: Vec::new(),
        delays: Arc::new(Delays::default()),
        warnings: Conditions::new("apply warnings"),
        budgets: [(); 3].map(|()| Budget::new(TRANSITIONS_NAMED)),
        resolve_due: Instant::now() + RESOLVE_MIN,
        resolve_backoff: RESOLVE_MIN,
        health_down: HashMap::new(),
        quorum: HashMap::new(),
        failed: HashSet::new(),
        next_generation: 0,
        semaphore: Arc::new(Semaphore::new(opts.max_concurrent.max(1))),
        tx,
        hooks: Hooks::new(opts.hook_timeout),
        watch,
        opts,
    };
    let mut datapath_log = crate::maps::datapath_log::DataPathLog::default();
    datapath_log.follow(&d.maps);
    d.resolve();
    d.reset_quorum();
    d.apply("start");
    d.sync_probes();
    info!(
        file = %d.opts.file.display(),
        services = d.config.services.len(),
        backends_checked = d.health_keys(),
        probes = d.probes.len(),
        "running"
    );
    // VRRP (the `vrrp:` list): a task per instance; the master holds the virtual addresses.
    let (vrrp_stop, vrrp_rx) = tokio::sync::watch::channel(false);
    let vrrp: Vec<_> = (d.config.vrrp.iter())
        .map(|c| crate::vrrp::io::spawn(c.clone(), vrrp_rx.clone(), d.hooks.clone()))
        .collect();
    let vrrp_reports = crate::vrrp::report::dir_for(dir);

    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut reconcile_tick = tokio::time::interval(d.opts.reconcile_every);
    reconcile_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate: the start has just applied.
    reconcile_tick.tick().await;
    let mut summary_tick = tokio::time::interval(d.opts.summary_every);
    summary_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    summary_tick.tick().await;
    // Transitions are applied in batches: at once when none was applied for BATCH, else
    // BATCH after the last one, so a burst is one apply and a lone failure waits for nothing.
    let mut flush_at: Option<Instant> = None;
    let mut last_flush = Instant::now();

    let why = loop {
        tokio::select! {
            Some(ev) = rx.recv() => {
                d.probe_event(ev);
                while let Ok(ev) = rx.try_recv() {
                    d.probe_event(ev);
                }
                if !d.pending.is_empty() && flush_at.is_none() {
                    flush_at = Some((last_flush + BATCH).max(Instant::now()));
                }
            }
            _ = sleep_until_opt(flush_at) => {
                flush_at = None;
                d.settle_transitions();
                last_flush = Instant::now();
            }
            _ = summary_tick.tick() => d.summary(),
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                let text = d.watch.read_now();
                d.reload(text);
            }
            _ = poll.tick() => {
                if let Err(e) = crate::vrrp::report::write_all(&vrrp_reports, &vrrp) {
                    warn!(error = %format!("{e:#}"), "writing the VRRP status for list/stats");
                }
                if let Some(r) = d.watch.poll(Instant::now().into_std()) {
                    info!(file = %d.opts.file.display(), cause = r.cause, "the file changed: reloading");
                    d.reload(r.text);
                }
            }
            Some(ev) = neigh_rx.recv() => {
                // A burst (a rack answering ARP) is one apply.
                let mut changed = d.neigh_event(ev);
                while let Ok(ev) = neigh_rx.try_recv() {
                    changed |= d.neigh_event(ev);
                }
                if changed {
                    d.apply("neighbour table");
                }
            }
            _ = reconcile_tick.tick() => {
                d.reconcile();
                datapath_log.follow(&d.maps);
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };
    // Waited for, so that every check's process group is killed before the exit.
    let checkers = d.probes.drain().map(|(_, p)| p.handle).collect();
    let left = crate::daemon::tasks::abort_and_wait(checkers, STOP_WAIT).await;
    // A master hands over at once (priority 0) and removes its addresses.
    crate::vrrp::report::remove_all(&vrrp_reports, &vrrp);
    crate::vrrp::io::stop_all(vrrp_stop, vrrp).await;
    let left = left + d.hooks.stop(STOP_WAIT).await;
    if left > 0 {
        warn!(tasks = left, "checks or hooks did not stop within 2 s");
    }
    if d.opts.detach_on_exit {
        for iface in &d.opts.ifaces {
            match pins::detach(dir, iface) {
                Ok(_) => info!(iface = %iface, "detached"),
                Err(e) => error!(iface = %iface, error = %format!("{e:#}"), "detach failed"),
            }
        }
        info!(signal = why, "stopped; detached");
    } else {
        info!(signal = why, "stopped; the data path keeps forwarding");
    }
    Ok(())
}

/// Sleeps until `at`, or forever without one (a `select!` branch that is off).
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The interfaces registered in IFACES, by index.
fn attached_ifindexes(maps: &Maps) -> Result<Vec<u32>> {
    maps.ifaces
        .keys()
        .collect::<Result<_, _>>()
        .context("reading IFACES")
}

impl Daemon {
    /// Repairs the pins, retries unresolved MACs, and writes back whatever differs between
    /// the maps and the desired state.
    fn reconcile(&mut self) {
        let dir = self.opts.pin_dir.clone();
        match repair::pins(&dir, &self.opts.ifaces, self.opts.mode, &mut self.maps) {
            Ok(repaired) => {
                for r in &repaired {
                    warn!(repair = %r, "reconcile: repaired");
                }
                if !repaired.is_empty() {
                    match attached_ifindexes(&self.maps) {
                        Ok(i) => self.ifindexes = i,
                        Err(e) => error!(error = %format!("{e:#}"), "reconcile"),
                    }
                }
            }
            Err(e) => error!(error = %format!("{e:#}"), "reconcile: repairing the pins failed"),
        }
        // Unresolved MACs are asked for again with a backoff (5 s doubling to 60 s), so that
        // a dead address or a full neighbour table is not hammered every period.
        if self.macs.values().any(Result::is_err) && Instant::now() >= self.resolve_due {
            let before = self.macs.clone();
            self.resolve();
            // Only a newly resolved (or lost) MAC is an apply of its own; otherwise the
            // reconcile apply below is the only one this tick.
            if self.macs != before {
                self.apply("MAC resolution");
            }
            self.resolve_backoff = if self.macs.values().any(Result::is_err) {
                (self.resolve_backoff * 2).min(RESOLVE_MAX)
            } else {
                RESOLVE_MIN
            };
            self.resolve_due = Instant::now() + self.resolve_backoff;
        }
        self.apply(RECONCILE);
        // lc/wlc counts: drop connections that vanished without FIN or RST.
        match crate::maps::recount_connections(&mut self.maps, crate::maps::view::now_ns()) {
            Ok(0) => {}
            Ok(n) => info!(backends = n, "active connection counts corrected"),
            Err(e) => warn!(error = %format!("{e:#}"), "recounting connections"),
        }
    }

    /// Takes in what the kernel says of a neighbour; true when a backend's MAC changed (the
    /// caller applies).
    fn neigh_event(&mut self, ev: NeighEvent) -> bool {
        match ev {
            NeighEvent::Changed {
                ifindex,
                addr,
                state,
                usable,
            } => {
                if !self.ifindexes.contains(&ifindex) {
                    return false;
                }
                let Some(current) = self.macs.get(&addr) else {
                    return false;
                };
                match usable {
                    Some(n) if current.as_ref().ok() != Some(&n.mac) => {
                        let mac = crate::net::link::format_mac(&n.mac);
                        match current {
                            Ok(old) => info!(
                                backend = %addr,
                                old = %crate::net::link::format_mac(old),
                                new = %mac,
                                "backend MAC changed in the neighbour table: following it"
                            ),
                            Err(_) => info!(backend = %addr, mac = %mac, "backend MAC resolved"),
                        }
                        self.macs.insert(addr, Ok(n.mac));
                        true
                    }
                    None if state == NeighState::Failed && current.is_ok() => {
                        warn!(
                            backend = %addr,
                            "backend does not answer ARP (neighbour entry FAILED): no traffic \
                             until it does"
                        );
                        self.macs.insert(
                            addr,
                            Err("no answer to ARP (the kernel's neighbour entry FAILED)".into()),
                        );
                        true
                    }
                    _ => false,
                }
            }
            NeighEvent::Deleted { ifindex, addr } => {
                // The kernel forgot it (garbage collection): have it resolved again, so that a
                // later change of MAC (a gratuitous ARP) updates an entry that exists.
                if self.ifindexes.contains(&ifindex)
                    && self.macs.contains_key(&addr)
                    && let Err(e) = neigh::trigger(ifindex, addr)
                {
                    tracing::debug!(backend = %addr, error = %format!("{e:#}"), "resolving again");
                }
                false
            }
            NeighEvent::Overrun => {
                warn!("neighbour events were lost (socket buffer full): reading the table again");
                self.resolve();
                true
            }
        }
    }

    fn resolve(&mut self) {
        // Sorry servers need MACs too.
        let mut all = self.config.clone();
        for s in &mut all.services {
            if let Some(sorry) = s.health.sorry_server {
                s.backends.push(config::BackendConfig {
                    address: sorry,
                    port: s.port,
                    weight: 1,
                    line: s.line,
                });
            }
        }
        let (ifindexes, timeout) = (self.ifindexes.clone(), self.opts.resolve_timeout);
        self.macs =
            tokio::task::block_in_place(|| resolve::backend_macs(&all, &ifindexes, timeout));
    }

    /// Quorum states from the current health (at start and after a reload).
    fn reset_quorum(&mut self) {
        self.quorum.clear();
        for s in &self.config.services {
            if let Some(q) = s.health.quorum {
                let live = live_weight(s, &self.health_down);
                self.quorum.insert(s.name.clone(), Quorum::new(live, q));
            }
        }
    }

    /// Updates the quorum states; logs the changes.
    fn update_quorum(&mut self) {
        for s in &self.config.services {
            let (Some(q), Some(state)) = (s.health.quorum, self.quorum.get_mut(&s.name)) else {
                continue;
            };
            let live = live_weight(s, &self.health_down);
            if let Some(up) = state.update(live, q, s.health.hysteresis) {
                if up {
                    info!(service = %s.name, live_weight = live, quorum = q, "quorum regained");
                } else {
                    warn!(service = %s.name, live_weight = live, quorum = q, "quorum lost");
                }
            }
        }
    }

    /// Writes the config with the health results to the maps.
    fn apply(&mut self, why: &str) {
        let lost: HashSet<String> = self
            .quorum
            .iter()
            .filter(|(_, q)| !q.up)
            .map(|(n, _)| n.clone())
            .collect();
        let eff = effective(&self.config, &self.health_down, &lost);
        let failed: HashSet<String> = eff.failed.iter().cloned().collect();
        let mut newly: Vec<&String> = failed.difference(&self.failed).collect();
        let mut recovered: Vec<&String> = self.failed.difference(&failed).collect();
        newly.sort();
        recovered.sort();
        let few = newly.len() + recovered.len();
        let few = few == 0 || self.budgets[2].take(few);
        if !few && !newly.is_empty() {
            warn!(
                count = newly.len(),
                failed = failed.len(),
                "services failed (no backend up; sorry servers in where configured): {}",
                named(&newly)
            );
        } else if few {
            for name in &newly {
                let sorry = self
                    .config
                    .services
                    .iter()
                    .find(|s| &s.name == *name)
                    .and_then(|s| s.health.sorry_server);
                match sorry {
                    Some(addr) => {
                        warn!(service = %name, sorry_server = %addr, "service failed: sorry server in")
                    }
                    None => warn!(service = %name, "service failed: no backend is up"),
                }
            }
        }
        if !few && !recovered.is_empty() {
            info!(
                count = recovered.len(),
                failed = failed.len(),
                "services recovered: {}",
                named(&recovered)
            );
        } else if few {
            for name in &recovered {
                info!(service = %name, "service recovered");
            }
        }
        self.failed = failed;
        match plan::apply(&mut self.maps, &eff.config, &self.macs, &eff.down, false) {
            Ok(plan) => {
                // Each change on its own line when few; else a count, a few named, and each
                // at debug level (a lost rack is one line, not a thousand).
                let many = !plan.changes.is_empty() && !self.budgets[1].take(plan.changes.len());
                for c in &plan.changes {
                    if many {
                        tracing::debug!(cause = why, change = %c, "applied");
                    } else if why == RECONCILE {
                        // Nothing of the daemon's changed: the maps had drifted.
                        warn!(change = %c, "reconcile: the maps differed from the desired state; repaired");
                    } else {
                        info!(cause = why, change = %c, "applied");
                    }
                }
                if many {
                    let text = named(&plan.changes);
                    if why == RECONCILE {
                        warn!(
                            count = plan.changes.len(),
                            "reconcile: the maps differed from the desired state; repaired: {text}"
                        );
                    } else {
                        info!(cause = why, count = plan.changes.len(), "applied: {text}");
                    }
                }
                self.warnings.update(plan.warnings);
            }
            Err(e) => error!(cause = why, error = %format!("{e:#}"), "apply failed"),
        }
    }

    /// How many backends have a check.
    fn health_keys(&self) -> usize {
        self.probes.values().map(|p| p.backends.len()).sum()
    }

    /// Starts, keeps or stops probes to match the config; backends that are checked the same
    /// way share one ([`ProbeId`]). A probe that stays keeps its state and its task, also when
    /// the backends sharing it change.
    fn sync_probes(&mut self) {
        let mut wanted: HashMap<ProbeId, Vec<Key>> = HashMap::new();
        for s in &self.config.services {
            for b in &s.backends {
                if let Some(check) = s.health.check_for(b.address) {
                    let id = ProbeId::new(&s.name, b.address, b.port, check);
                    wanted
                        .entry(id)
                        .or_default()
                        .push((s.name.clone(), b.address));
                }
            }
        }
        // Stop what is gone.
        self.probes.retain(|id, p| {
            let keep = wanted.contains_key(id);
            if !keep {
                p.handle.abort();
            }
            keep
        });
        // Backends without a check are never down.
        let checked: HashSet<&Key> = wanted.values().flatten().collect();
        self.health_down.retain(|k, _| checked.contains(k));
        for (id, backends) in wanted {
            if let Some(p) = self.probes.get_mut(&id) {
                // A backend that joins an existing probe takes its state.
                for k in &backends {
                    match p.state {
                        State::Down => {
                            self.health_down.insert(k.clone(), p.reason.clone());
                        }
                        State::Up => {
                            self.health_down.remove(k);
                        }
                    }
                }
                p.backends = backends;
                continue;
            }
            // New: down if every backend it serves was down before.
            let initial = if backends.iter().all(|k| self.health_down.contains_key(k)) {
                State::Down
            } else {
                State::Up
            };
            let reason = backends
                .first()
                .and_then(|k| self.health_down.get(k).cloned())
                .unwrap_or_default();
            for k in &backends {
                match initial {
                    State::Down => {
                        self.health_down.insert(k.clone(), reason.clone());
                    }
                    State::Up => {
                        self.health_down.remove(k);
                    }
                }
            }
            let generation = self.next_generation;
            self.next_generation += 1;
            let handle = tokio::spawn(probes::run(
                id.clone(),
                generation,
                initial,
                self.semaphore.clone(),
                self.tx.clone(),
                self.delays.clone(),
            ));
            self.probes.insert(
                id,
                Probe {
                    generation,
                    handle,
                    state: initial,
                    reason,
                    backends,
                },
            );
        }
    }

    /// Takes in a probe's transition for every backend that shares it (applied later, in a
    /// batch, by [`Daemon::settle_transitions`]).
    fn probe_event(&mut self, ev: ProbeEvent) {
        let Some(p) = self.probes.get_mut(&ev.id) else {
            return;
        };
        if p.generation != ev.generation {
            return;
        }
        let t = ev.transition;
        p.state = t.to;
        p.reason = t.reason.clone();
        for key in &p.backends {
            match t.to {
                State::Down => self.health_down.insert(key.clone(), t.reason.clone()),
                State::Up => self.health_down.remove(key),
            };
            self.pending.push(Pending {
                key: key.clone(),
                backend_port: ev.id.target.backend_port,
                transition: t.clone(),
            });
        }
    }

    /// Applies the transitions received since the last batch with one apply, then logs them
    /// (each on its own line when few, else a summary and each at debug level) and runs the
    /// services' notify hooks.
    fn settle_transitions(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return;
        }
        self.update_quorum();
        // Applied first, so that the log lines mean "in effect".
        self.apply("health check");
        let many = !self.budgets[0].take(pending.len());
        for p in &pending {
            let ((service, addr), t) = (&p.key, &p.transition);
            match (t.to, many) {
                (State::Down, false) => {
                    warn!(service = %service, backend = %addr, from = %t.from, to = %t.to, reason = %t.reason, "backend down")
                }
                (State::Up, false) => {
                    info!(service = %service, backend = %addr, from = %t.from, to = %t.to, reason = %t.reason, "backend up")
                }
                (_, true) => {
                    tracing::debug!(service = %service, backend = %addr, from = %t.from, to = %t.to, reason = %t.reason, "backend {}", t.to)
                }
            }
        }
        if many {
            for to in [State::Down, State::Up] {
                let of: Vec<&Pending> = pending.iter().filter(|p| p.transition.to == to).collect();
                if of.is_empty() {
                    continue;
                }
                let all: Vec<String> = of
                    .iter()
                    .map(|p| format!("{}/{} ({})", p.key.0, p.key.1, p.transition.reason))
                    .collect();
                let text = named(&all);
                let down_now = self.health_down.len();
                match to {
                    State::Down => {
                        warn!(count = of.len(), down = down_now, "backends down: {text}")
                    }
                    State::Up => info!(count = of.len(), down = down_now, "backends up: {text}"),
                }
            }
        }
        for p in pending {
            self.notify(&p);
        }
    }

    /// Runs the service's notify_up / notify_down hook for one transition.
    fn notify(&self, p: &Pending) {
        let ((service, addr), t, port) = (&p.key, &p.transition, p.backend_port);
        let hook = self
            .config
            .services
            .iter()
            .find(|s| &s.name == service)
            .and_then(|s| match t.to {
                State::Up => s.health.notify_up.clone(),
                State::Down => s.health.notify_down.clone(),
            });
        if let Some(cmd) = hook {
            let env = vec![
                ("LB_SERVICE", service.clone()),
                ("LB_BACKEND_ADDRESS", addr.to_string()),
                ("LB_BACKEND_PORT", port.to_string()),
                ("LB_STATE", t.to.as_str().to_string()),
                ("LB_REASON", t.reason.clone()),
            ];
            let (service, backend, command) = (service.clone(), *addr, cmd.clone());
            let done = Box::new(move |result| match result {
                Ok(0) => {}
                Ok(code) => {
                    warn!(service = %service, backend = %backend, command = %command, status = code, "notify hook failed")
                }
                Err(e) => {
                    warn!(service = %service, backend = %backend, command = %command, error = %e, "notify hook failed")
                }
            });
            self.hooks.spawn(cmd, env, done);
        }
    }

    /// The periodic summary: how the checks kept their schedule, what still holds.
    fn summary(&mut self) {
        if let Some(s) = self.delays.take() {
            info!(
                checks = s.checks,
                backends_checked = self.health_keys(),
                probes = self.probes.len(),
                down = self.health_down.len(),
                late_p50_ms = s.p50.as_secs_f64() * 1e3,
                late_p99_ms = s.p99.as_secs_f64() * 1e3,
                late_max_ms = s.max.as_secs_f64() * 1e3,
                waited_for_slot = s.waited,
                "health checks: started late against their schedule (p50, p99: bucket bounds)"
            );
        }
        self.warnings.summary();
    }

    /// Parses the file's `text` again; a valid one replaces the running config.
    fn reload(&mut self, text: Result<String, config::ConfigError>) {
        let file = self.opts.file.display().to_string();
        let config = text.and_then(|text| config::parse(&text, &file));
        let config = match config {
            Ok(c) => match crate::net::own_addresses::check(&c, &file, &self.ifindexes) {
                Ok(()) => c,
                Err(e) => {
                    error!(file = %file, errors = %format!("{e:#}").replace('\n', "; "), "reload refused; the running config stays");
                    return;
                }
            },
            Err(e) => {
                let diagnostics: Vec<String> =
                    e.diagnostics.iter().map(ToString::to_string).collect();
                error!(
                    file = %self.opts.file.display(),
                    errors = %diagnostics.join("; "),
                    "reload refused: the file is not valid; the running config stays"
                );
                return;
            }
        };
        if config == self.config {
            info!("reload: no changes");
            return;
        }
        if config.vrrp != self.config.vrrp {
            warn!("reload: changes to `vrrp:` take effect at the next start of the daemon");
        }
        self.config = config;
        self.sync_probes();
        self.reset_quorum();
        self.resolve();
        self.resolve_backoff = RESOLVE_MIN;
        self.resolve_due = Instant::now() + RESOLVE_MIN;
        self.apply("reload");
        info!(
            services = self.config.services.len(),
            backends_checked = self.health_keys(),
            probes = self.probes.len(),
            "reloaded"
        );
    }
}
