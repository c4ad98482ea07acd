//! The daemon's side of connection-state sync (`sync:`): it reads and writes the maps, so the
//! daemon stays their one writer. Every `interval`, while it sends (role `master` or `both`,
//! or `auto` while a VRRP instance on the sync interface is master), it reads FLOWS, SYNS (the
//! half-open connections) and PERSIST, picks what is new or changed ([`Tracker`]), within `max_rate` ([`Rate`]), and
//! sends it in datagrams of `batch` entries. The socket's task judges what arrives
//! ([`Receiver`]) and hands accepted datagrams to the main loop, which installs their entries
//! ([`Syncer::install`]) while it receives (`backup`, `both`, or `auto` while no instance on
//! the interface is master): a TCP entry in state SYN into SYNS, any other into FLOWS, as the
//! data path keeps them ([`decide`]).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use lb_common::{
    Addr, BACKEND_CONFIGURED, Flow, FlowKey, PROTO_TCP, Persist, PersistKey, ServiceKey, TcpState,
};
use tokio::{net::UdpSocket, sync::mpsc, task::JoinHandle};
use tracing::{info, warn};

use crate::{
    config::{MIN_KEY_BYTES, SyncConfig, SyncKey, SyncRole, key_of_file},
    maps::{Maps, hash_batch, view::now_ns},
    sync::{
        packet::{self, Datagram, FlowEntry, Header, PersistEntry},
        receiver::{Outcome, Receiver},
        report::{self, Report, Stats},
        sender::{Rate, Seen, Tracker},
    },
};

const NS_PER_S: u64 = 1_000_000_000;
/// How often the report for `list`/`stats` is written.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How long the backend index is trusted (an apply also drops it).
const INDEX_TTL: Duration = Duration::from_secs(1);

/// (service id, backend address, port in network order) -> backend id.
type BackendIndex = HashMap<(u32, Addr, u16), u32>;

/// The running sync.
pub struct Syncer {
    pub cfg: SyncConfig,
    key: Vec<u8>,
    sender: u32,
    seq: u64,
    flows: Tracker<FlowKey>,
    persist: Tracker<PersistKey>,
    rate: Rate,
    stats: Arc<Stats>,
    socket: Arc<UdpSocket>,
    dests: Vec<SocketAddr>,
    receiving: Arc<AtomicBool>,
    sending: bool,
    task: JoinHandle<()>,
    report: PathBuf,
    /// When the report was last written; None: not yet.
    reported: Option<tokio::time::Instant>,
    /// (service id, backend address, port in network order) -> backend id, and when built.
    index: Option<(BackendIndex, tokio::time::Instant)>,
}

/// Reads the key of `cfg` (a key file is read now), checked for its length.
pub fn key_of(cfg: &SyncConfig, file: &str) -> Result<Vec<u8>> {
    match &cfg.key {
        SyncKey::Inline(k) => Ok(k.clone()),
        SyncKey::File(path, line) => {
            let bytes = std::fs::read(path).with_context(|| {
                format!(
                    "{file}:{line}: sync.key_file: reading {}; create it (e.g. `head -c 32 \
                     /dev/urandom | base64 > {0}`, mode 600) or give `key:`",
                    path.display()
                )
            })?;
            let key = key_of_file(&bytes).to_vec();
            if key.len() < MIN_KEY_BYTES {
                bail!(
                    "{file}:{line}: sync.key_file: {} holds {} bytes; give at least \
                     {MIN_KEY_BYTES}",
                    path.display(),
                    key.len()
                );
            }
            Ok(key)
        }
    }
}

/// A random sender id, so that a restarted sender starts a new replay window.
fn random_id() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    let id = u32::from_ne_bytes(b);
    match id {
        0 => std::process::id() ^ (now_ns() as u32) | 1,
        id => id,
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Syncer {
    /// Opens the socket and starts its task; accepted datagrams go to `tx`.
    pub fn start(
        cfg: SyncConfig,
        key: Vec<u8>,
        report: PathBuf,
        tx: mpsc::Sender<Datagram>,
    ) -> Result<Syncer> {
        let ifindex = crate::net::link::ifindex(&cfg.interface)
            .with_context(|| format!("sync.interface {}", cfg.interface))?;
        let (socket, dests) = crate::sync::socket::open(&cfg, ifindex)?;
        let socket = Arc::new(socket);
        let stats = Arc::new(Stats::default());
        let sender = random_id();
        // Until the first tick decides: receive unless this director only sends.
        let receiving = Arc::new(AtomicBool::new(cfg.role != SyncRole::Master));
        let task = tokio::spawn(receive(
            socket.clone(),
            key.clone(),
            sender,
            stats.clone(),
            receiving.clone(),
            tx,
        ));
        info!(
            interface = %cfg.interface,
            port = cfg.port,
            peers = ?cfg.peers,
            role = cfg.role.as_str(),
            "sync started"
        );
        Ok(Syncer {
            rate: Rate::new(cfg.max_rate),
            cfg,
            key,
            sender,
            seq: 0,
            flows: Tracker::new(),
            persist: Tracker::new(),
            stats,
            socket,
            dests,
            receiving,
            sending: false,
            task,
            report,
            reported: None,
            index: None,
        })
    }

    /// Stops the task and removes the report.
    pub fn stop(self) {
        self.task.abort();
        report::remove(&self.report);
    }

    /// The backends changed (an apply): the index is read again before the next install.
    pub fn backends_changed(&mut self) {
        self.index = None;
    }

    /// One tick: decides the role now (`master`: a VRRP instance on the interface is
    /// master), sends what is due while sending, writes the report every second and at once
    /// when the role changes (`list`/`stats` must not show a new master as receiving).
    pub fn tick(&mut self, maps: &Maps, master: bool) {
        let (send, receive) = match self.cfg.role {
            SyncRole::Auto => (master, !master),
            SyncRole::Master => (true, false),
            SyncRole::Backup => (false, true),
            SyncRole::Both => (true, true),
        };
        let role_changed =
            send != self.sending || receive != self.receiving.load(Ordering::Relaxed);
        if send && !self.sending {
            // A new sender: the peers may hold nothing yet, send the whole table.
            self.flows.clear();
            self.persist.clear();
            info!("sync: sending");
        }
        if !send && self.sending {
            info!("sync: receiving");
        }
        self.sending = send;
        self.receiving.store(receive, Ordering::Relaxed);
        if send && let Err(e) = self.send(maps) {
            warn!(error = %format!("{e:#}"), "sync: reading the tables to send");
        }
        if role_changed || self.reported.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
            self.reported = Some(tokio::time::Instant::now());
            let active = match (send, receive) {
                (true, true) => "sending+receiving",
                (true, false) => "sending",
                _ => "receiving",
            };
            let peers = match self.cfg.peers.is_empty() {
                true => vec![crate::config::SYNC_GROUP.to_string()],
                false => self.cfg.peers.iter().map(ToString::to_string).collect(),
            };
            let r = Report {
                role: self.cfg.role.as_str().into(),
                active: active.into(),
                interface: self.cfg.interface.clone(),
                peers,
                port: self.cfg.port,
                ..Report::default()
            }
            .counters(&self.stats);
            if let Err(e) = report::write(&self.report, &r) {
                warn!(error = %format!("{e:#}"), "writing the sync status for list/stats");
            }
        }
    }

    /// Reads FLOWS, SYNS and PERSIST and sends what is due.
    fn send(&mut self, maps: &Maps) -> Result<()> {
        let now = now_ns();
        let budget = self
            .rate
            .available(now, self.cfg.interval.as_nanos() as u64);
        if budget == 0 {
            return Ok(());
        }
        let services: HashMap<u32, (ServiceKey, u32)> = hash_batch(&maps.services)
            .context("reading SERVICES")?
            .into_iter()
            .map(|(k, s)| (s.id, (k, s.persist_timeout_s)))
            .collect();
        let backends = maps.backend_slots()?;
        let backend = |id: u32| {
            backends
                .get(id as usize)
                .filter(|b| b.flags & BACKEND_CONFIGURED != 0)
                .map(|b| (b.addr, u16::from_be(b.port)))
        };
        let flows = live_flows(
            hash_batch(&maps.flows).context("reading FLOWS")?,
            maps.half_open()?,
            now,
        );
        let scan: Vec<(FlowKey, Seen)> = (flows.iter())
            .map(|(k, f)| {
                let refresh_ns = f.state().timeout_s(k.proto) * NS_PER_S / 8;
                (*k, seen(f.last_seen_ns, f.backend, f.state, refresh_ns))
            })
            .collect();
        let mut out_flows = Vec::new();
        for i in self.flows.select(&scan, now, budget) {
            let (k, f) = &flows[i];
            let (Some((sk, _)), Some((addr, port))) =
                (services.get(&f.service_id), backend(f.backend))
            else {
                continue;
            };
            out_flows.push(FlowEntry {
                client: wire(k.src),
                vip: wire(k.dst),
                client_port: u16::from_be(k.sport),
                vip_port: u16::from_be(k.dport),
                service_port: u16::from_be(sk.port),
                proto: k.proto,
                state: f.state,
                backend: wire(addr),
                backend_port: port,
                age_ms: age_ms(now, f.last_seen_ns),
            });
        }
        let persist: Vec<(PersistKey, Persist, u32)> = maps
            .persist_entries()?
            .into_iter()
            .filter_map(|(k, p)| {
                let timeout = services.get(&k.service_id)?.1;
                let live = now.saturating_sub(p.last_seen_ns) <= u64::from(timeout) * NS_PER_S;
                live.then_some((k, p, timeout))
            })
            .collect();
        let scan: Vec<(PersistKey, Seen)> = (persist.iter())
            .map(|(k, p, t)| {
                (
                    *k,
                    seen(p.last_seen_ns, p.backend, 0, u64::from(*t) * NS_PER_S / 8),
                )
            })
            .collect();
        let left = budget.saturating_sub(out_flows.len());
        let mut out_persist = Vec::new();
        for i in self.persist.select(&scan, now, left) {
            let (k, p, _) = &persist[i];
            let (Some((sk, _)), Some((addr, port))) =
                (services.get(&k.service_id), backend(p.backend))
            else {
                continue;
            };
            out_persist.push(PersistEntry {
                client: wire(k.client),
                vip: wire(sk.addr),
                service_port: u16::from_be(sk.port),
                proto: sk.proto,
                backend: wire(addr),
                backend_port: port,
                age_ms: age_ms(now, p.last_seen_ns),
            });
        }
        self.rate.spend(out_flows.len() + out_persist.len());
        self.transmit(&out_flows, &out_persist);
        Ok(())
    }

    /// Sends the entries in datagrams of at most `batch` entries.
    fn transmit(&mut self, flows: &[FlowEntry], persist: &[PersistEntry]) {
        let batch = usize::from(self.cfg.batch).clamp(1, packet::MAX_ENTRIES);
        let mut f = flows;
        let mut p = persist;
        while !f.is_empty() || !p.is_empty() {
            let nf = f.len().min(batch);
            let np = p.len().min(batch - nf);
            self.seq += 1;
            let header = Header {
                sender: self.sender,
                seq: self.seq,
                time_ms: wall_ms(),
            };
            let b = packet::encode(&self.key, &header, &f[..nf], &p[..np]);
            for dest in &self.dests {
                match self.socket.try_send_to(&b, *dest) {
                    Ok(_) => {
                        Stats::add(&self.stats.sent_datagrams, 1);
                        Stats::add(&self.stats.sent_entries, (nf + np) as u64);
                    }
                    Err(e) => {
                        Stats::add(&self.stats.send_errors, 1);
                        warn!(to = %dest, error = %e, "sync: sending a datagram");
                    }
                }
            }
            f = &f[nf..];
            p = &p[np..];
        }
    }

    /// Installs the entries of an accepted datagram into FLOWS, SYNS and PERSIST (when
    /// receiving): service and backend mapped to the local ids, a local entry as recent or more
    /// kept (in either table), a half-open entry into SYNS and any other into FLOWS, the key's
    /// older entry in the other table removed, CONNS kept in step for TCP flows that become
    /// active, end or move ([`decide`]).
    pub fn install(&mut self, maps: &mut Maps, d: Datagram) {
        if !self.receiving.load(Ordering::Relaxed) {
            return;
        }
        let now = now_ns();
        if self
            .index
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() > INDEX_TTL)
        {
            match backend_index(maps) {
                Ok(i) => self.index = Some((i, tokio::time::Instant::now())),
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "sync: reading BACKENDS");
                    Stats::add(
                        &self.stats.install_errors,
                        (d.flows.len() + d.persist.len()) as u64,
                    );
                    return;
                }
            }
        }
        let Some((index, _)) = &self.index else {
            return;
        };
        let stats = &self.stats;
        let local = |maps: &Maps, vip: Addr, port: u16, proto: u8, b: Addr, bport: u16| {
            let key = ServiceKey {
                addr: vip,
                port: port.to_be(),
                proto,
                _pad: 0,
            };
            let Ok(svc) = maps.services.get(&key, 0) else {
                Stats::add(&stats.unknown_service, 1);
                return None;
            };
            match index.get(&(svc.id, b, bport.to_be())) {
                Some(id) => Some((svc.id, *id)),
                None => {
                    Stats::add(&stats.unknown_backend, 1);
                    None
                }
            }
        };
        let mut moved_any = false;
        for e in &d.flows {
            let Some((service_id, backend)) = local(
                maps,
                map_addr(e.vip),
                e.service_port,
                e.proto,
                map_addr(e.backend),
                e.backend_port,
            ) else {
                continue;
            };
            let key = FlowKey {
                src: map_addr(e.client),
                dst: map_addr(e.vip),
                sport: e.client_port.to_be(),
                dport: e.vip_port.to_be(),
                proto: e.proto,
                _pad: [0; 3],
            };
            let last_seen_ns = now.saturating_sub(u64::from(e.age_ms) * 1_000_000);
            let new = Flow {
                last_seen_ns,
                backend,
                service_id,
                state: e.state,
                _pad: [0; 7],
            };
            let in_flows = maps.flows.get(&key, 0).ok();
            // A flow this director knows, now sent elsewhere: the flow caches may hold it.
            let moved =
                in_flows.is_some_and(|f| (f.backend, f.service_id) != (backend, service_id));
            // Only TCP has half-open entries.
            let in_syns = match key.proto {
                PROTO_TCP => maps.half_open_entry(&key),
                _ => None,
            };
            let Install::Write {
                half_open,
                remove_other,
                conns,
            } = decide(key.proto, &new, in_flows, in_syns, now)
            else {
                Stats::add(&stats.kept_local, 1);
                continue;
            };
            let written = if half_open {
                maps.set_half_open(&key, &new).map(|evicted| {
                    // The slot's live half-open connection of another flow is evicted, as the
                    // data path's SYN would evict it.
                    evicted.filter(|o| o.is_live(PROTO_TCP, now) && o.is_active(PROTO_TCP))
                })
            } else {
                maps.insert_flow(&key, &new).map(|()| None)
            };
            let evicted = match written {
                Ok(evicted) => evicted,
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "sync: installing a flow");
                    Stats::add(&stats.install_errors, 1);
                    continue;
                }
            };
            if remove_other {
                // Gone already (the data path moved or evicted it) is as good.
                let _ = match half_open {
                    true => maps.flows.remove(&key).is_ok(),
                    false => maps.remove_half_open(&key).unwrap_or(false),
                };
            }
            Stats::add(&stats.installed, 1);
            moved_any |= moved;
            for (b, delta) in conns {
                add_conns(maps, b, delta);
            }
            if let Some(o) = evicted {
                add_conns(maps, o.backend, -1);
            }
        }
        if moved_any && let Err(e) = maps.bump_generation() {
            warn!(error = %format!("{e:#}"), "sync: the flow caches' generation");
        }
        for e in &d.persist {
            let Some((service_id, backend)) = local(
                maps,
                map_addr(e.vip),
                e.service_port,
                e.proto,
                map_addr(e.backend),
                e.backend_port,
            ) else {
                continue;
            };
            let key = PersistKey {
                client: map_addr(e.client),
                service_id,
            };
            let last_seen_ns = now.saturating_sub(u64::from(e.age_ms) * 1_000_000);
            if maps
                .persist_entry(&key)
                .is_ok_and(|o| o.is_some_and(|o| o.last_seen_ns >= last_seen_ns))
            {
                Stats::add(&stats.kept_local, 1);
                continue;
            }
            let value = Persist {
                last_seen_ns,
                backend,
                _pad: 0,
            };
            match maps.set_persist(&key, &value) {
                Ok(()) => Stats::add(&stats.installed, 1),
                Err(e) => {
                    warn!(error = %e, "sync: writing PERSIST");
                    Stats::add(&stats.install_errors, 1);
                }
            }
        }
    }
}

/// The live entries of both tables, to send: FLOWS (established connections, closing ones,
/// UDP) and SYNS (half-open). A key in both for a moment (the data path inserts into FLOWS
/// before it deletes from SYNS) is sent as FLOWS holds it.
fn live_flows(
    flows: Vec<(FlowKey, Flow)>,
    syns: Vec<(FlowKey, Flow)>,
    now: u64,
) -> Vec<(FlowKey, Flow)> {
    let live = |(k, f): &(FlowKey, Flow)| f.is_live(k.proto, now);
    let mut out: Vec<(FlowKey, Flow)> = flows.into_iter().filter(live).collect();
    let mut half_open: HashMap<FlowKey, Flow> = syns.into_iter().filter(live).collect();
    if !half_open.is_empty() {
        for (k, _) in &out {
            half_open.remove(k);
        }
        out.extend(half_open);
    }
    out
}

/// What installing a received flow entry does, given the local entries of its key.
#[derive(Debug, PartialEq, Eq)]
enum Install {
    /// A local entry, in either table, is as recent or more: nothing is written.
    KeepLocal,
    /// Write the entry into SYNS (`half_open`) or FLOWS; remove the key from the other table
    /// (`remove_other`: it holds an older entry); move `CONNS[backend]` by each delta.
    Write {
        half_open: bool,
        remove_other: bool,
        conns: Vec<(u32, i64)>,
    },
}

/// Where a received entry `new` goes, as the data path keeps its tables: a TCP entry in
/// state SYN is half-open (SYNS), any other is established or closing, or UDP (FLOWS); the
/// key's entry in the other table is older (else it is kept) and goes, as the data path
/// removes it when it moves an entry. `CONNS` loses each live active entry replaced and gains
/// the new one if it is active; a move to the same backend changes nothing.
fn decide(
    proto: u8,
    new: &Flow,
    in_flows: Option<Flow>,
    in_syns: Option<Flow>,
    now: u64,
) -> Install {
    let local = [in_flows, in_syns];
    if local
        .iter()
        .flatten()
        .any(|o| o.last_seen_ns >= new.last_seen_ns)
    {
        return Install::KeepLocal;
    }
    let half_open = proto == PROTO_TCP && new.state() == TcpState::Syn;
    let other = if half_open { in_flows } else { in_syns };
    let mut conns: Vec<(u32, i64)> = Vec::new();
    let mut add = |backend: u32, delta: i64| match conns.iter_mut().find(|(b, _)| *b == backend) {
        Some((_, d)) => *d += delta,
        None => conns.push((backend, delta)),
    };
    for o in local.iter().flatten() {
        if o.is_live(proto, now) && o.is_active(proto) {
            add(o.backend, -1);
        }
    }
    if new.is_active(proto) {
        add(new.backend, 1);
    }
    conns.retain(|(_, d)| *d != 0);
    Install::Write {
        half_open,
        remove_other: other.is_some(),
        conns,
    }
}

fn seen(last_seen_ns: u64, backend: u32, state: u8, refresh_ns: u64) -> Seen {
    Seen {
        last_seen_ns,
        backend,
        state,
        refresh_ns,
    }
}

/// A map address (16 bytes in network order, as four words) as the wire's 16 bytes.
fn wire(a: Addr) -> packet::Addr {
    let mut b = [0u8; 16];
    for (i, w) in a.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    b
}

/// The wire's 16 bytes as a map address.
fn map_addr(b: packet::Addr) -> Addr {
    let mut a = [0u32; 4];
    for (i, w) in a.iter_mut().enumerate() {
        *w = u32::from_ne_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
    }
    a
}

fn age_ms(now: u64, last_seen_ns: u64) -> u32 {
    (lb_common::age_ns(now, last_seen_ns) / 1_000_000).min(u64::from(u32::MAX)) as u32
}

/// (service id, address, port) -> id of every configured backend.
fn backend_index(maps: &Maps) -> Result<BackendIndex> {
    Ok((maps.backend_slots()?.iter().enumerate())
        .filter(|(_, b)| b.flags & BACKEND_CONFIGURED != 0)
        .map(|(id, b)| ((b.service_id, b.addr, b.port), id as u32))
        .collect())
}

/// CONNS[backend] += delta. The data path counts with atomic adds; this read and write can
/// lose one of its updates that lands in between, which the reconcile tick's recount
/// corrects.
fn add_conns(maps: &mut Maps, backend: u32, delta: i64) {
    let have = maps.conns.get(&backend, 0).unwrap_or(0);
    let want = have.saturating_add_signed(delta);
    let _ = maps.conns.set(backend, want, 0);
}

/// The socket's task: every datagram judged; accepted ones go to the main loop while
/// receiving.
async fn receive(
    socket: Arc<UdpSocket>,
    key: Vec<u8>,
    own: u32,
    stats: Arc<Stats>,
    receiving: Arc<AtomicBool>,
    tx: mpsc::Sender<Datagram>,
) {
    let mut r = Receiver::new(own);
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match socket.recv_from(&mut buf).await {
            Ok((n, _)) => n,
            Err(e) => {
                warn!(error = %e, "sync: receiving");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match r.accept(&key, &buf[..n], wall_ms()) {
            Outcome::Accepted(d) => {
                if !receiving.load(Ordering::Relaxed) {
                    continue;
                }
                Stats::add(&stats.received_datagrams, 1);
                Stats::add(
                    &stats.received_entries,
                    (d.flows.len() + d.persist.len()) as u64,
                );
                if tx.send(d).await.is_err() {
                    return;
                }
            }
            Outcome::Own => {}
            Outcome::Rejected(why) => stats.reject(why),
        }
    }
}

impl super::Daemon {
    /// A reload changed `sync:`: the old sync stops and the new one starts (a key file that
    /// cannot be read is logged, and the old sync keeps running).
    pub(super) fn restart_sync(&mut self) {
        let file = self.opts.file.display().to_string();
        let key = match self.config.sync.as_ref().map(|c| key_of(c, &file)) {
            Some(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "reload: the sync keeps its old settings");
                return;
            }
            Some(Ok(k)) => Some(k),
            None => None,
        };
        if let Some(s) = self.sync.take() {
            s.stop();
            info!("sync stopped");
        }
        let (Some(cfg), Some(key)) = (self.config.sync.clone(), key) else {
            return;
        };
        let report = crate::maps::lock::sync_report(&self.opts.pin_dir);
        match Syncer::start(cfg, key, report, self.sync_tx.clone()) {
            Ok(s) => self.sync = Some(s),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reload: the sync could not start")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lb_common::PROTO_UDP;

    use super::*;

    const S: u64 = NS_PER_S;
    const NOW: u64 = 86_400 * S;

    fn flow(state: TcpState, backend: u32, age_s: u64) -> Flow {
        Flow {
            last_seen_ns: NOW - age_s * S,
            backend,
            service_id: 1,
            state: state as u8,
            _pad: [0; 7],
        }
    }

    fn key(port: u16, proto: u8) -> FlowKey {
        FlowKey {
            src: [1, 0, 0, 0],
            dst: [2, 0, 0, 0],
            sport: port.to_be(),
            dport: 80u16.to_be(),
            proto,
            _pad: [0; 3],
        }
    }

    fn write(half_open: bool, remove_other: bool, conns: &[(u32, i64)]) -> Install {
        Install::Write {
            half_open,
            remove_other,
            conns: conns.to_vec(),
        }
    }

    #[test]
    fn a_received_syn_is_half_open_and_anything_else_established() {
        use TcpState::{Established, Fin, Syn};
        let tcp = PROTO_TCP;
        // New keys: a SYN into SYNS, active on its backend; an ESTABLISHED into FLOWS.
        assert_eq!(
            decide(tcp, &flow(Syn, 3, 1), None, None, NOW),
            write(true, false, &[(3, 1)])
        );
        assert_eq!(
            decide(tcp, &flow(Established, 3, 1), None, None, NOW),
            write(false, false, &[(3, 1)])
        );
        // UDP is never half-open and never active.
        assert_eq!(
            decide(PROTO_UDP, &flow(Syn, 3, 1), None, None, NOW),
            write(false, false, &[])
        );
        // The client's ACK reached the sender: the local half-open entry moves to FLOWS, on
        // the same backend, so CONNS does not change.
        assert_eq!(
            decide(
                tcp,
                &flow(Established, 3, 1),
                None,
                Some(flow(Syn, 3, 2)),
                NOW
            ),
            write(false, true, &[])
        );
        // ... on another backend: one less there, one more here.
        assert_eq!(
            decide(
                tcp,
                &flow(Established, 4, 1),
                None,
                Some(flow(Syn, 3, 2)),
                NOW
            ),
            write(false, true, &[(3, -1), (4, 1)])
        );
        // A FIN after a local half-open entry: it goes, and the connection is not active.
        assert_eq!(
            decide(tcp, &flow(Fin, 3, 1), None, Some(flow(Syn, 3, 2)), NOW),
            write(false, true, &[(3, -1)])
        );
        // A new SYN on the tuple of a closed local connection: the old entry goes (it was not
        // active), the half-open one is.
        assert_eq!(
            decide(tcp, &flow(Syn, 3, 1), Some(flow(Fin, 4, 5)), None, NOW),
            write(true, true, &[(3, 1)])
        );
        // A retransmitted SYN over the local half-open entry: rewritten, counted once.
        assert_eq!(
            decide(tcp, &flow(Syn, 3, 1), None, Some(flow(Syn, 3, 2)), NOW),
            write(true, false, &[])
        );
        // An expired local entry is no active connection any more (the recount agrees).
        assert_eq!(
            decide(
                tcp,
                &flow(Established, 3, 1),
                None,
                Some(flow(Syn, 3, 3_600)),
                NOW
            ),
            write(false, true, &[(3, 1)])
        );
    }

    #[test]
    fn a_local_entry_as_recent_or_more_is_kept_in_either_table() {
        use TcpState::{Established, Syn};
        let tcp = PROTO_TCP;
        for (in_flows, in_syns) in [
            (Some(flow(Established, 4, 1)), None),
            (None, Some(flow(Syn, 4, 1))),
            (Some(flow(Established, 4, 0)), Some(flow(Syn, 4, 9))),
            (Some(flow(Established, 4, 9)), Some(flow(Syn, 4, 0))),
        ] {
            for new in [flow(Syn, 3, 1), flow(Established, 3, 1)] {
                assert_eq!(
                    decide(tcp, &new, in_flows, in_syns, NOW),
                    Install::KeepLocal,
                    "{new:?} over {in_flows:?} / {in_syns:?}"
                );
            }
        }
    }

    #[test]
    fn the_sender_reads_live_entries_of_both_tables_once() {
        use TcpState::{Established, Syn};
        let flows = vec![
            (key(1, PROTO_TCP), flow(Established, 3, 1)),
            (key(2, PROTO_UDP), flow(Established, 3, 1)),
            // Expired (UDP: 300 s).
            (key(3, PROTO_UDP), flow(Established, 3, 3_600)),
            // Moved a moment ago: still in SYNS too.
            (key(4, PROTO_TCP), flow(Established, 5, 0)),
        ];
        let syns = vec![
            (key(4, PROTO_TCP), flow(Syn, 5, 1)),
            (key(5, PROTO_TCP), flow(Syn, 6, 1)),
            // Expired (SYN: 60 s).
            (key(6, PROTO_TCP), flow(Syn, 6, 3_600)),
        ];
        let mut got: Vec<(u16, u8)> = live_flows(flows, syns, NOW)
            .into_iter()
            .map(|(k, f)| (u16::from_be(k.sport), f.state))
            .collect();
        got.sort_unstable();
        let (syn, est) = (Syn as u8, Established as u8);
        assert_eq!(got, [(1, est), (2, est), (4, est), (5, syn)]);
    }
}
