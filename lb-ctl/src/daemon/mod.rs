//! `lb-ctl run`: the daemon. Attaches (or adopts an attachment), applies the service file, then
//! checks every backend that has a check and keeps the data path in line with the results,
//! the job keepalived's checkers do for IPVS. Health and VRRP report; the daemon decides what
//! the maps hold. Its files, one idea each:
//!
//! - here: [`Options`], start-up, and the main loop's `select!` over its event sources;
//! - [`health`](self::health): one tokio task per probe (backends checked the same way share
//!   one; at most `max_concurrent` checks at a time, a semaphore); its transitions are logged
//!   (service, backend, from, to, reason), run the service's `notify_up`/`notify_down`, update
//!   the quorum and are applied in batches;
//! - [`apply`](self::apply): [`effective`](crate::health::state::effective) turns the health
//!   report into the config and the backends held down, which [`maps::apply`](crate::maps::apply) writes (down
//!   backends get no new flows and their flows are rescheduled), from one place;
//! - [`reload`](self::reload): SIGHUP, or a whole new file ([`watch`], polled every second: a
//!   rename at once, an in-place change once it has settled), reloads: the file is validated
//!   first and a bad one is logged and refused (the running config stays); a file never stops
//!   the daemon. Backends whose check did not change keep their state;
//! - [`reconcile`](self::reconcile): the kernel's neighbour events (RTNLGRP_NEIGH) update a
//!   backend's MAC as soon as the kernel learns a new one (a replaced NIC's gratuitous ARP),
//!   and a backend whose entry FAILED gets no traffic; every `reconcile_every` the pins are
//!   repaired ([`repair::pins`](crate::maps::repair::pins): detached interfaces attached
//!   again, missing pins pinned again) and the maps compared with the desired state (file +
//!   health + MACs), every difference written back and logged. Unresolved backend MACs are
//!   retried then too, with a backoff;
//! - [`tunnels`]: what tunnel backends need of the kernel: interfaces that forward (checked
//!   at every apply, logged when it starts and ends) and their next hops kept resolved
//!   (managed neighbour entries, followed at every reconcile tick);
//! - [`conditions`]: apply warnings logged when they start and end; [`tasks`]: stopping tasks
//!   so that what they own is dropped before the exit.
//! - `--listen` ([`crate::live`]): the address is bound before anything is attached; the maps
//!   are read once a second for the server, and health transitions, reloads, refusals and
//!   failed services are recorded as events where they are logged.
//!
//! It holds the pin directory's write lock ([`crate::maps::lock`]) while it runs, so it is the
//! only writer: `lb-ctl apply`, `attach` and `detach` are refused meanwhile. Checks and hooks
//! never leave processes behind: a check's or hook's process group is killed when it ends,
//! times out or its task is aborted ([`crate::exec`]); hooks are tracked ([`Hooks`]) with a
//! timeout. SIGTERM/SIGINT stop the checks (aborted and waited for), kill the hooks that still
//! run, and leave the data path forwarding as it is, unless `--detach-on-exit`.

mod announce;
mod apply;
pub mod conditions;
mod health;
pub mod notify;
mod reconcile;
mod reload;
mod sync;
pub mod tasks;
mod tunnels;
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
    time::{Instant, MissedTickBehavior},
};
use tracing::{error, info, warn};

use crate::{
    config::{self, Config},
    daemon::conditions::{Budget, Conditions},
    exec::hooks::Hooks,
    health::{
        probes::{Delays, ProbeId},
        state::{Held, Quorum},
    },
    maps::Maps,
    maps::loader::Sizes,
    maps::pins::{self, Mode},
    net::neigh::{self, NeighEvent},
    plan::Resolved,
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
    /// Where `/metrics`, `/api/v1/status` and the page are served (`--listen`); off if None.
    pub listen: Option<std::net::SocketAddr>,
}

/// The cause of the periodic apply that repairs drift.
const RECONCILE: &str = "reconcile";

/// At most one apply of health transitions per BATCH: the longest a transition waits to be
/// applied with others.
const BATCH: Duration = Duration::from_millis(100);
/// Transitions (map changes, failed services) logged one line each at once, and per second;
/// more are summarized.
const TRANSITIONS_NAMED: usize = 8;
/// Unresolved MACs (and tunnel sources) are asked for again after RESOLVE_MIN, doubling up to
/// RESOLVE_MAX.
const RESOLVE_MIN: Duration = Duration::from_secs(5);
const RESOLVE_MAX: Duration = Duration::from_secs(60);

/// How long stopping waits for the checkers' and hooks' tasks to end.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Sets up logging to stderr (`RUST_LOG` filters; default `info`).
pub fn init_logging(format: crate::cli::args::LogFormat) {
    use crate::cli::args::LogFormat;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => fmt.try_init(),
        // One object a line: timestamp, level, fields (message and the rest), target.
        LogFormat::Json => fmt.json().try_init(),
    };
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

/// What the daemon holds: the desired state (the file, the health report, the backend MACs),
/// the maps it writes, and the tasks and budgets that feed and pace it.
struct Daemon {
    opts: Options,
    config: Config,
    maps: Maps,
    ifindexes: Vec<u32>,
    /// Route backends' MACs and tunnel backends' outer sources.
    resolved: Resolved,
    /// Tunnel backends without a route now, whose last source is kept (logged once).
    unrouted: HashSet<std::net::IpAddr>,
    probes: HashMap<ProbeId, health::Probe>,
    /// Transitions received and not applied yet (applied in batches).
    pending: Vec<health::Pending>,
    /// How late checks start against their schedule.
    delays: Arc<Delays>,
    /// What the last apply warned about (backends without a MAC...), logged as it changes.
    warnings: Conditions,
    /// Attached interfaces that do not forward a family the tunnel backends need.
    forwarding: Conditions,
    /// The tunnel next hops given a managed neighbour entry (or resolution requests).
    next_hops: std::collections::BTreeMap<crate::net::nexthop::NextHop, crate::net::nexthop::Kept>,
    /// Tunnel next hops the kernel refused to keep resolved, with why.
    next_hop_errors: Conditions,
    /// One line per transition, map change or failed service while few; summaries past it.
    budgets: [Budget; 3],
    /// When unresolved MACs are next asked for, and the wait after that.
    resolve_due: Instant,
    resolve_backoff: Duration,
    /// Backends whose checks failed, with why.
    health_down: Held,
    /// Service name -> quorum state (services with a `quorum` only).
    quorum: HashMap<String, Quorum>,
    /// Services that had failed at the last apply (to log the sorry server once).
    failed: HashSet<String>,
    next_generation: u64,
    semaphore: Arc<Semaphore>,
    tx: mpsc::Sender<crate::health::probes::ProbeEvent>,
    hooks: Hooks,
    /// When the file is to be reloaded.
    watch: crate::daemon::watch::Watch,
    /// The VIP routes for the local BGP speaker (`announce:`).
    announce: announce::Announcer,
    /// Connection-state sync (`sync:`), when configured and started.
    sync: Option<sync::Syncer>,
    /// Where the sync's socket task hands accepted datagrams.
    sync_tx: mpsc::Sender<crate::sync::packet::Datagram>,
    /// What `--listen` serves: fed here (events, counters) and by the probes (durations).
    live: Arc<crate::live::Live>,
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
    // Bound before anything is attached, so that an address in use stops the start cleanly.
    let listener = match opts.listen {
        Some(addr) => Some(crate::live::server::bind(addr).await?),
        None => None,
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

    // Managed next-hop entries an earlier daemon left: the first resolution keeps those still
    // wanted and removes the others.
    let left_over = crate::net::nexthop::left_over(&ifindexes).unwrap_or_else(|e| {
        warn!(error = %format!("{e:#}"), "reading the managed neighbour entries an earlier daemon left");
        Vec::new()
    });
    let (tx, mut rx) = mpsc::channel(1024);
    let (sync_tx, mut sync_rx) = mpsc::channel(256);
    let mut d = Daemon {
        resolved: Resolved::default(),
        unrouted: HashSet::new(),
        config,
        maps,
        ifindexes,
        probes: HashMap::new(),
        pending: Vec::new(),
        delays: Arc::new(Delays::default()),
        warnings: Conditions::new("apply warnings"),
        forwarding: Conditions::new("interfaces that do not forward for tunnel backends"),
        next_hops: (left_over.into_iter())
            .map(|hop| (hop, crate::net::nexthop::Kept::Managed))
            .collect(),
        next_hop_errors: Conditions::new("tunnel next hops not kept resolved"),
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
        announce: announce::Announcer::new(crate::maps::lock::announce_report(dir)),
        sync: None,
        sync_tx,
        live: Arc::new(crate::live::Live::default()),
        opts,
    };
    let mut datapath_log = crate::maps::datapath_log::DataPathLog::default();
    datapath_log.follow(&d.maps);
    d.resolve();
    d.reset_quorum();
    // Probes first: backends with `alpha` start down, so the first apply leaves them out.
    d.sync_probes();
    d.apply("start");
    info!(
        file = %d.opts.file.display(),
        services = d.config.services.len(),
        backends_checked = d.health_keys(),
        probes = d.probes.len(),
        "running"
    );
    // VRRP (the `vrrp:` list): a task per instance; the master holds the virtual addresses.
    let mut vrrp = crate::vrrp::instances::Instances::start(
        &d.config,
        &d.hooks,
        crate::maps::lock::vrrp_reports_dir(dir),
    );
    vrrp.set_services(d.service_health());
    // `--listen`: the maps read every second (rates, states), served over HTTP.
    let server = listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            info!(address = %addr, "serving /metrics, /api/v1/status and the page");
        }
        crate::live::server::serve(l, d.live.clone())
    });
    let mut live_tick = tokio::time::interval(Duration::from_secs(1));
    live_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Connection-state sync (`sync:`): a key file that cannot be read stops the start.
    if let Some(cfg) = d.config.sync.clone() {
        let key = sync::key_of(&cfg, &file)?;
        d.sync = Some(sync::Syncer::start(
            cfg,
            key,
            crate::maps::lock::sync_report(dir),
            d.sync_tx.clone(),
        )?);
    }
    let mut sync_tick = tokio::time::interval(sync_interval(&d.config));
    sync_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // Applied, and a SIGHUP from now on reloads instead of killing: ready.
    notify::send("READY=1");
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
    // With `announce`, a stop withdraws first and keeps forwarding until then.
    let mut drain_until: Option<Instant> = None;
    let mut stopping = "SIGTERM";

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
                vrrp.set_services(d.service_health());
                last_flush = Instant::now();
            }
            _ = summary_tick.tick() => d.summary(),
            _ = live_tick.tick(), if server.is_some() => d.sample_live(),
            Some(dg) = sync_rx.recv() => {
                if let Some(s) = d.sync.as_mut() {
                    s.install(&mut d.maps, dg);
                }
            }
            _ = sync_tick.tick() => {
                if let Some(s) = d.sync.as_mut() {
                    s.tick(&d.maps, vrrp.master_on(&s.cfg.interface));
                }
                if sync_tick.period() != sync_interval(&d.config) {
                    sync_tick = tokio::time::interval(sync_interval(&d.config));
                    sync_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                }
            }
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                notify::send("RELOADING=1");
                let text = d.watch.read_now();
                if d.reload(text) {
                    vrrp.update(&d.config);
                    vrrp.set_services(d.service_health());
                }
                // Also after a refused file: the running config serves on.
                notify::send("READY=1");
            }
            _ = poll.tick() => {
                if let Some(r) = d.watch.poll(Instant::now().into_std()) {
                    info!(file = %d.opts.file.display(), cause = r.cause, "the file changed: reloading");
                    if d.reload(r.text) {
                        vrrp.update(&d.config);
                        vrrp.set_services(d.service_health());
                    }
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
            _ = sleep_until_opt(drain_until) => break stopping,
            _ = term.recv() => match d.drain(&mut drain_until) {
                true => stopping = "SIGTERM",
                false => break "SIGTERM",
            },
            _ = int.recv() => match d.drain(&mut drain_until) {
                true => stopping = "SIGINT",
                false => break "SIGINT",
            },
        }
    };
    d.stop_announce();
    if let Some(s) = &server {
        s.abort();
    }
    if let Some(s) = d.sync.take() {
        s.stop();
    }
    // Waited for, so that every check's process group is killed before the exit.
    let checkers = d.take_checkers();
    let left = crate::daemon::tasks::abort_and_wait(checkers, STOP_WAIT).await;
    // A master hands over at once (priority 0) and removes its addresses.
    vrrp.stop().await;
    let left = left + d.hooks.stop(STOP_WAIT).await;
    if left > 0 {
        warn!(tasks = left, "checks or hooks did not stop within 2 s");
    }
    if d.opts.detach_on_exit {
        d.release_next_hops();
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

impl Daemon {
    /// `--listen`: one read of the maps (and of the VRRP, announce and sync reports) for the
    /// server. A read that fails is logged at debug level and skipped.
    fn sample_live(&mut self) {
        match crate::cli::director::Director::read(&self.maps, &self.opts.pin_dir) {
            Ok(shown) => self.live.sample(shown),
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "--listen: reading the maps"),
        }
    }

    /// A stop signal: true when the daemon is to keep running until `until` (set here) after
    /// withdrawing its VIPs; false when it stops now (no `announce`, a drain of 0 s, or a
    /// second signal during the drain).
    fn drain(&mut self, until: &mut Option<Instant>) -> bool {
        notify::send("STOPPING=1");
        if until.is_some() {
            info!("a second stop signal: stopping now");
            return false;
        }
        match self.start_drain() {
            Some(drain) if !drain.is_zero() => {
                *until = Some(Instant::now() + drain);
                true
            }
            _ => false,
        }
    }
}

/// How often the sync ticks: its `interval`, or once a second without `sync:` (nothing to do).
fn sync_interval(config: &Config) -> Duration {
    config
        .sync
        .as_ref()
        .map_or(Duration::from_secs(1), |s| s.interval)
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
    maps.iface_indexes()
}
