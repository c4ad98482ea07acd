//! `apply`: from a validated service file to the data path's maps.
//!
//! 1. [`Current::read`] reads what the maps hold now.
//! 2. [`plan`] computes the desired contents (ids kept for what already exists), the
//!    difference as changes a person reads, and the writes that make it so. Everything that
//!    can fail (capacity, table room) fails here, before anything is written.
//! 3. [`Plan::execute`] writes in an order that never lets a packet see a half-written
//!    service: new backends first, then each changed service's new table into an idle region
//!    of `TABLE`, then the service entry that switches to it (one atomic hash-map update), and
//!    only then removals.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::Ipv4Addr,
};

use anyhow::{Context as _, Result};
use lb_common::{
    BACKEND_CONFIGURED, BACKEND_DOWN, BACKEND_USABLE, Backend, Sched, Service, ServiceKey, limits,
    v4_mapped,
};

use crate::{
    config::{Config, Protocol, Scheduler, ServiceConfig},
    maps::Maps,
    sched::maglev,
    sched::table,
};

/// Backend MACs by address: `Err` holds why one could not be resolved.
pub type Macs = HashMap<Ipv4Addr, Result<[u8; 6], String>>;

/// Backends that health checks hold down, by (service name, address), with the reason. A
/// down backend stays configured (its counters and id are kept) but is not usable: it gets no
/// new flows and its existing flows are rescheduled, as IPVS's `expire_nodest_conn` does.
pub type Down = HashMap<(String, Ipv4Addr), String>;

/// What the maps hold now.
#[derive(Clone, Debug, Default)]
pub struct Current {
    pub services: BTreeMap<ServiceKey, Service>,
    /// Configured backends by id.
    pub backends: BTreeMap<u32, Backend>,
    /// Each service's table contents, by service id.
    pub tables: HashMap<u32, Vec<u32>>,
    /// Size of `TABLE`.
    pub table_entries: u32,
}

impl Current {
    pub fn read(maps: &Maps) -> Result<Current> {
        let mut services = BTreeMap::new();
        for entry in maps.services.iter() {
            let (k, v) = entry.context("reading SERVICES")?;
            services.insert(k, v);
        }
        let mut backends = BTreeMap::new();
        let all = crate::maps::array_batch(&maps.backends, 0, maps.backends.len())?;
        for (id, b) in all.into_iter().enumerate() {
            if b.flags & BACKEND_CONFIGURED != 0 {
                backends.insert(id as u32, b);
            }
        }
        let mut tables = HashMap::new();
        for s in services.values() {
            let seq = crate::maps::array_batch(&maps.table, s.table_offset, s.table_len)
                .context("reading TABLE")?;
            tables.insert(s.id, seq);
        }
        Ok(Current {
            services,
            backends,
            tables,
            table_entries: maps.table.len(),
        })
    }
}

/// One difference between the file and the maps, as a person reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    AddService { name: String, what: String },
    RemoveService { name: String, what: String },
    ChangeService { name: String, what: String },
    AddBackend { service: String, what: String },
    RemoveBackend { service: String, what: String },
    ChangeBackend { service: String, what: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddService { name, what } => write!(f, "+ service {name}: {what}"),
            Change::RemoveService { name, what } => write!(f, "- service {name}: {what}"),
            Change::ChangeService { name, what } => write!(f, "~ service {name}: {what}"),
            Change::AddBackend { service, what } => {
                write!(f, "+   backend {what} (service {service})")
            }
            Change::RemoveBackend { service, what } => {
                write!(f, "-   backend {what} (service {service})")
            }
            Change::ChangeBackend { service, what } => {
                write!(f, "~   backend {what} (service {service})")
            }
        }
    }
}

/// One map write, in execution order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Write {
    ResetBackendCounters(u32),
    SetBackend(u32, Backend),
    SetTable(u32, Vec<u32>),
    ResetServiceCounters(u32),
    PutService(ServiceKey, Service),
    DeleteService(ServiceKey),
    ClearBackend(u32),
}

/// The difference between a file and the maps, and how to write it.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Backends that get no traffic because their MAC could not be resolved.
    pub warnings: Vec<String>,
    writes: Vec<Write>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Writes the plan to the maps, in the order described in the module documentation.
    pub fn execute(&self, maps: &mut Maps) -> Result<()> {
        for w in &self.writes {
            match w {
                Write::ResetBackendCounters(id) => maps.reset_backend_counters(*id)?,
                Write::SetBackend(id, b) => maps
                    .backends
                    .set(*id, b, 0)
                    .with_context(|| format!("writing backend {id}"))?,
                Write::SetTable(offset, seq) => {
                    crate::maps::array_update_batch(&maps.table, *offset, seq)
                        .context("writing TABLE")?
                }
                Write::ResetServiceCounters(id) => maps.reset_service_counters(*id)?,
                Write::PutService(k, s) => maps
                    .services
                    .insert(k, s, 0)
                    .with_context(|| format!("writing service {}", s.id))?,
                Write::DeleteService(k) => maps.services.remove(k).context("removing a service")?,
                Write::ClearBackend(id) => maps
                    .backends
                    .set(*id, Backend::default(), 0)
                    .with_context(|| format!("clearing backend {id}"))?,
            }
        }
        Ok(())
    }
}

/// The key of a configured service.
pub fn service_key(s: &ServiceConfig) -> ServiceKey {
    ServiceKey {
        addr: v4_mapped(u32::from_ne_bytes(s.vip.octets())),
        port: s.port.to_be(),
        proto: s.protocol.number(),
        _pad: 0,
    }
}

/// The IPv4 address of a v4-mapped map address.
pub fn addr_v4(addr: &lb_common::Addr) -> Ipv4Addr {
    Ipv4Addr::from(addr[3].to_ne_bytes())
}

/// `TCP 192.168.58.133:80`, as ipvsadm writes a service.
pub fn describe_key(k: &ServiceKey) -> String {
    let proto = Protocol::from_number(k.proto).map_or("?", |p| p.as_str());
    format!(
        "{} {}:{}",
        proto.to_uppercase(),
        addr_v4(&k.addr),
        u16::from_be(k.port)
    )
}

pub fn service_name(s: &Service) -> String {
    let end = s.name.iter().position(|&b| b == 0).unwrap_or(s.name.len());
    String::from_utf8_lossy(&s.name[..end]).into_owned()
}

fn name_bytes(name: &str) -> [u8; limits::NAME_LEN] {
    let mut out = [0u8; limits::NAME_LEN];
    let n = name.len().min(limits::NAME_LEN);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

pub fn scheduler_of(s: &Service) -> Option<Scheduler> {
    Some(match Sched::from_u8(s.sched)? {
        Sched::Rr => Scheduler::Rr,
        Sched::Wrr => Scheduler::Wrr,
        Sched::Sh => Scheduler::Sh,
        Sched::Mh => Scheduler::Mh,
        Sched::Lc => Scheduler::Lc,
        Sched::Wlc => Scheduler::Wlc,
    })
}

/// The `Service::sched` and `Service::pick` bytes of a scheduler.
fn sched_id(s: Scheduler) -> (u8, u8) {
    let sched = match s {
        Scheduler::Rr => Sched::Rr,
        Scheduler::Wrr => Sched::Wrr,
        Scheduler::Sh => Sched::Sh,
        Scheduler::Mh => Sched::Mh,
        Scheduler::Lc => Sched::Lc,
        Scheduler::Wlc => Sched::Wlc,
    };
    (sched as u8, sched.pick() as u8)
}

/// `50s mask 255.255.255.0`, or `off`.
pub fn describe_persistence(timeout_s: u32, mask: &lb_common::Addr) -> String {
    if timeout_s == 0 {
        return "off".to_string();
    }
    format!("{timeout_s}s mask {}", addr_v4(mask))
}

fn describe_backend(b: &Backend) -> String {
    format!("{}:{}", addr_v4(&b.addr), u16::from_be(b.port))
}

/// Lowest id in `0..limit` that is in neither set.
fn lowest_free(used: &BTreeSet<u32>, taken: &BTreeSet<u32>, limit: u32) -> Option<u32> {
    (0..limit).find(|i| !used.contains(i) && !taken.contains(i))
}

/// Picks backend ids past the highest one in use before wrapping, so a freed id is not
/// handed out again soon (flows still naming it age out of the connection table first).
fn next_backend_id(used: &BTreeSet<u32>, taken: &BTreeSet<u32>) -> Option<u32> {
    // BTreeSet::last is O(log n): this runs once per new backend.
    let high = used.last().max(taken.last()).map_or(0, |m| m + 1);
    (high..limits::MAX_BACKENDS)
        .find(|i| !used.contains(i) && !taken.contains(i))
        .or_else(|| lowest_free(used, taken, limits::MAX_BACKENDS))
}

/// First free region of `len` entries in `0..size`, avoiding `used` `(offset, len)` regions.
fn find_region(used: &[(u32, u32)], len: u32, size: u32) -> Option<u32> {
    let mut regions: Vec<(u32, u32)> = used.iter().copied().filter(|r| r.1 > 0).collect();
    regions.sort_unstable();
    let mut start = 0u32;
    for (off, l) in regions {
        if off >= start && off - start >= len {
            return Some(start);
        }
        start = start.max(off.saturating_add(l));
    }
    (size.checked_sub(start)? >= len).then_some(start)
}

/// Computes what `config` needs written over `current`. Nothing is written.
pub fn plan(current: &Current, config: &Config, macs: &Macs, down: &Down) -> Result<Plan> {
    let mut p = Plan::default();
    let mut pre = Vec::new(); // new and still-usable backends, counters of new ids
    let mut tables = Vec::new();
    let mut switch = Vec::new(); // service entries
    let mut post = Vec::new(); // removals, backends that lose usability

    let used_service_ids: BTreeSet<u32> = current.services.values().map(|s| s.id).collect();
    let used_backend_ids: BTreeSet<u32> = current.backends.keys().copied().collect();
    let mut new_service_ids = BTreeSet::new();
    let mut new_backend_ids = BTreeSet::new();
    let mut regions: Vec<(u32, u32)> = current
        .services
        .values()
        .map(|s| (s.table_offset, s.table_len))
        .collect();
    let mut kept_backends = BTreeSet::new();

    let wanted: BTreeSet<ServiceKey> = config.services.iter().map(service_key).collect();
    // The configured backends of each service id, by address (one pass, not one per service).
    let mut by_service: HashMap<u32, HashMap<Ipv4Addr, (u32, Backend)>> = HashMap::new();
    for (&bid, b) in &current.backends {
        by_service
            .entry(b.service_id)
            .or_default()
            .insert(addr_v4(&b.addr), (bid, *b));
    }
    for sc in &config.services {
        let key = service_key(sc);
        let old = current.services.get(&key);
        let id = match old {
            Some(s) => s.id,
            None => {
                let id = lowest_free(&used_service_ids, &new_service_ids, limits::MAX_SERVICES)
                    .context("no free service id: at most 4096 services")?;
                new_service_ids.insert(id);
                id
            }
        };
        let (sched, pick) = sched_id(sc.scheduler);
        let persist = match sc.persistence {
            Some(p) => (
                p.timeout.as_secs().min(u32::MAX as u64) as u32,
                [
                    u32::MAX,
                    u32::MAX,
                    u32::MAX,
                    u32::from_ne_bytes(p.netmask.octets()),
                ],
            ),
            None => (0, [0; 4]),
        };
        let mut what = format!("{} {}", describe_key(&key), sc.scheduler.as_str());
        if persist.0 != 0 {
            what += &format!(
                " persistent {}",
                describe_persistence(persist.0, &persist.1)
            );
        }
        match old {
            None => p.changes.push(Change::AddService {
                name: sc.name.clone(),
                what,
            }),
            Some(o) => {
                let old_name = service_name(o);
                if old_name != sc.name {
                    p.changes.push(Change::ChangeService {
                        name: sc.name.clone(),
                        what: format!("renamed from {old_name}"),
                    });
                }
                if (o.persist_timeout_s, o.persist_mask) != persist {
                    p.changes.push(Change::ChangeService {
                        name: sc.name.clone(),
                        what: format!(
                            "persistence {} -> {}",
                            describe_persistence(o.persist_timeout_s, &o.persist_mask),
                            describe_persistence(persist.0, &persist.1)
                        ),
                    });
                }
                if o.sched != sched {
                    let old_sched = scheduler_of(o).map_or("?", |s| s.as_str());
                    p.changes.push(Change::ChangeService {
                        name: sc.name.clone(),
                        what: format!("scheduler {old_sched} -> {}", sc.scheduler.as_str()),
                    });
                }
            }
        }

        // Backends of this service: keep ids by address.
        let existing: HashMap<Ipv4Addr, (u32, Backend)> = match old {
            Some(_) => by_service.get(&id).cloned().unwrap_or_default(),
            None => HashMap::new(),
        };
        let mut members = Vec::new(); // (id, weight) of usable backends, in file order
        let mut member_names = Vec::new(); // their "address:port", for Maglev
        for bc in &sc.backends {
            let mac = macs
                .get(&bc.address)
                .cloned()
                .unwrap_or_else(|| Err("not resolved (no neighbour lookup was made)".to_string()));
            let (mac, resolved) = match mac {
                Ok(m) => (m, true),
                Err(why) => {
                    p.warnings.push(format!(
                        "backend {}:{} of service {}: no MAC address ({why}); it gets no traffic",
                        bc.address, bc.port, sc.name
                    ));
                    ([0; 6], false)
                }
            };
            let is_down = down.contains_key(&(sc.name.clone(), bc.address));
            let usable = resolved && !is_down;
            let want = Backend {
                addr: v4_mapped(u32::from_ne_bytes(bc.address.octets())),
                mac,
                flags: BACKEND_CONFIGURED
                    | if usable { BACKEND_USABLE } else { 0 }
                    | if is_down { BACKEND_DOWN } else { 0 },
                service_id: id,
                weight: bc.weight,
                port: bc.port.to_be(),
                _pad: [0; 2],
            };
            let bid = match existing.get(&bc.address) {
                Some(&(bid, have)) => {
                    kept_backends.insert(bid);
                    if have != want {
                        p.changes.push(Change::ChangeBackend {
                            service: sc.name.clone(),
                            what: format!(
                                "{} {}",
                                describe_backend(&want),
                                backend_delta(&have, &want)
                            ),
                        });
                        let loses = have.flags & BACKEND_USABLE != 0 && !usable;
                        let w = Write::SetBackend(bid, want);
                        if loses { post.push(w) } else { pre.push(w) }
                    }
                    bid
                }
                None => {
                    let bid = next_backend_id(&used_backend_ids, &new_backend_ids)
                        .context("no free backend slot: at most 65536 backends")?;
                    new_backend_ids.insert(bid);
                    p.changes.push(Change::AddBackend {
                        service: sc.name.clone(),
                        what: format!("{} weight {}", describe_backend(&want), bc.weight),
                    });
                    pre.push(Write::ResetBackendCounters(bid));
                    pre.push(Write::SetBackend(bid, want));
                    bid
                }
            };
            if usable {
                members.push((bid, bc.weight));
                member_names.push(format!("{}:{}", bc.address, bc.port));
            }
        }
        for (addr, (bid, b)) in &existing {
            if !sc.backends.iter().any(|bc| bc.address == *addr) {
                p.changes.push(Change::RemoveBackend {
                    service: sc.name.clone(),
                    what: describe_backend(b),
                });
                post.push(Write::ClearBackend(*bid));
            }
        }

        let seq = match sc.scheduler {
            Scheduler::Rr | Scheduler::Lc | Scheduler::Wlc => table::round_robin(&members),
            Scheduler::Wrr => table::weighted_round_robin(&members),
            Scheduler::Sh | Scheduler::Mh => {
                let m: Vec<maglev::Member> = members
                    .iter()
                    .zip(&member_names)
                    .map(|(&(id, weight), name)| maglev::Member { id, weight, name })
                    .collect();
                maglev::build(&m, sc.table_size)
            }
        };
        if matches!(sc.scheduler, Scheduler::Lc | Scheduler::Wlc)
            && seq.len() > limits::LC_MAX_BACKENDS as usize
        {
            p.warnings.push(format!(
                "service {}: {} compares the first {} of its {} backends only",
                sc.name,
                sc.scheduler,
                limits::LC_MAX_BACKENDS,
                seq.len()
            ));
        }
        let len = seq.len() as u32;
        let same_table = old.is_some_and(|o| current.tables.get(&o.id) == Some(&seq));
        let offset = match old {
            Some(o) if same_table => o.table_offset,
            _ if len == 0 => 0,
            _ => {
                let off = find_region(&regions, len, current.table_entries).with_context(|| {
                    format!(
                        "the lookup table has no room for {len} more entries for service {} \
                         (size {}); attach with a larger --table-entries",
                        sc.name, current.table_entries
                    )
                })?;
                regions.push((off, len));
                tables.push(Write::SetTable(off, seq));
                off
            }
        };
        let (persist_timeout_s, persist_mask) = persist;
        let want = Service {
            id,
            table_offset: offset,
            table_len: len,
            pick,
            sched,
            flags: 0,
            persist_timeout_s,
            persist_mask,
            name: name_bytes(&sc.name),
        };
        if old != Some(&want) {
            if old.is_none() {
                switch.push(Write::ResetServiceCounters(id));
            }
            switch.push(Write::PutService(key, want));
        }
    }

    for (key, s) in &current.services {
        if wanted.contains(key) {
            continue;
        }
        p.changes.push(Change::RemoveService {
            name: service_name(s),
            what: describe_key(key),
        });
        post.push(Write::DeleteService(*key));
    }
    let kept_service_ids: BTreeSet<u32> = current
        .services
        .iter()
        .filter(|(k, _)| wanted.contains(k))
        .map(|(_, s)| s.id)
        .collect();
    for (bid, b) in &current.backends {
        let service_kept = kept_service_ids.contains(&b.service_id);
        if !kept_backends.contains(bid) && !service_kept {
            // Backends of removed services (those of kept services were handled above).
            post.push(Write::ClearBackend(*bid));
        }
    }
    // Removals go last; clearing a backend comes after the switch away from it.
    post.sort_by_key(|w| matches!(w, Write::ClearBackend(_)));

    p.writes = [pre, tables, switch, post].concat();
    Ok(p)
}

fn backend_delta(have: &Backend, want: &Backend) -> String {
    let mut parts = Vec::new();
    if have.weight != want.weight {
        let drain = if want.weight == 0 { " (drain)" } else { "" };
        parts.push(format!("weight {} -> {}{drain}", have.weight, want.weight));
    }
    if have.mac != want.mac {
        parts.push(format!(
            "mac {} -> {}",
            crate::net::link::format_mac(&have.mac),
            crate::net::link::format_mac(&want.mac)
        ));
    }
    if (have.flags ^ want.flags) & BACKEND_DOWN != 0 {
        parts.push(
            if want.flags & BACKEND_DOWN != 0 {
                "down"
            } else {
                "up"
            }
            .to_string(),
        );
    } else if (have.flags ^ want.flags) & BACKEND_USABLE != 0 {
        parts.push(if want.flags & BACKEND_USABLE != 0 {
            "resolved".to_string()
        } else {
            "unresolved".to_string()
        });
    }
    if have.port != want.port {
        parts.push(format!(
            "port {} -> {}",
            u16::from_be(have.port),
            u16::from_be(want.port)
        ));
    }
    parts.join(", ")
}

/// Reads the maps, plans, and (unless `dry_run`) writes. Returns the plan that was (or would
/// be) applied.
pub fn apply(
    maps: &mut Maps,
    config: &Config,
    macs: &Macs,
    down: &Down,
    dry_run: bool,
) -> Result<Plan> {
    let current = Current::read(maps)?;
    let plan = plan(&current, config, macs, down)?;
    if !dry_run {
        plan.execute(maps)?;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const MAC1: [u8; 6] = [2, 0, 0, 0, 0, 0x87];
    const MAC2: [u8; 6] = [2, 0, 0, 0, 0, 0x88];

    fn macs() -> Macs {
        [
            (Ipv4Addr::new(10, 0, 0, 1), Ok(MAC1)),
            (Ipv4Addr::new(10, 0, 0, 2), Ok(MAC2)),
            (Ipv4Addr::new(10, 0, 0, 9), Err("no ARP reply".to_string())),
        ]
        .into()
    }

    fn config(yaml: &str) -> Config {
        parse(yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn web(weights: &[(u8, u32)], name: &str, sched: &str) -> Config {
        let mut s = format!(
            "services:\n  - name: {name}\n    vip: 10.0.0.100\n    port: 80\n    scheduler: {sched}\n    backends:\n"
        );
        for (last, w) in weights {
            s += &format!("      - address: 10.0.0.{last}\n        weight: {w}\n");
        }
        config(&s)
    }

    /// Applies a plan's writes to an in-memory copy of the maps, as `execute` does to the
    /// kernel's.
    fn simulate(cur: &Current, plan: &Plan) -> Current {
        let mut next = cur.clone();
        let mut table: HashMap<u32, u32> = HashMap::new();
        for s in cur.services.values() {
            for (i, b) in cur.tables[&s.id].iter().enumerate() {
                table.insert(s.table_offset + i as u32, *b);
            }
        }
        for w in &plan.writes {
            match w {
                Write::SetBackend(id, b) => {
                    next.backends.insert(*id, *b);
                }
                Write::ClearBackend(id) => {
                    next.backends.remove(id);
                }
                Write::SetTable(off, seq) => {
                    for (i, b) in seq.iter().enumerate() {
                        table.insert(off + i as u32, *b);
                    }
                }
                Write::PutService(k, s) => {
                    next.services.insert(*k, *s);
                }
                Write::DeleteService(k) => {
                    next.services.remove(k);
                }
                Write::ResetBackendCounters(_) | Write::ResetServiceCounters(_) => {}
            }
        }
        next.tables = next
            .services
            .values()
            .map(|s| {
                let seq = (s.table_offset..s.table_offset + s.table_len)
                    .map(|i| table[&i])
                    .collect();
                (s.id, seq)
            })
            .collect();
        next
    }

    fn empty() -> Current {
        Current {
            table_entries: 64,
            ..Current::default()
        }
    }

    fn apply_to(cur: &Current, cfg: &Config) -> (Plan, Current) {
        let p = plan(cur, cfg, &macs(), &Down::new()).expect("plan");
        let next = simulate(cur, &p);
        (p, next)
    }

    fn lines(p: &Plan) -> Vec<String> {
        p.changes.iter().map(|c| c.to_string()).collect()
    }

    fn position(p: &Plan, f: impl Fn(&Write) -> bool) -> usize {
        p.writes.iter().position(f).expect("a write")
    }

    #[test]
    fn adding_writes_backends_then_table_then_service() {
        let (p, cur) = apply_to(&empty(), &web(&[(1, 1), (2, 1)], "web", "rr"));
        assert_eq!(
            lines(&p),
            [
                "+ service web: TCP 10.0.0.100:80 rr",
                "+   backend 10.0.0.1:80 weight 1 (service web)",
                "+   backend 10.0.0.2:80 weight 1 (service web)",
            ]
        );
        let table = position(&p, |w| matches!(w, Write::SetTable(..)));
        let service = position(&p, |w| matches!(w, Write::PutService(..)));
        let last_backend = p
            .writes
            .iter()
            .rposition(|w| matches!(w, Write::SetBackend(..)))
            .expect("backends");
        assert!(last_backend < table && table < service, "{:?}", p.writes);
        let s = cur.services.values().next().expect("one service");
        assert_eq!(cur.tables[&s.id], vec![0, 1]);
        assert_eq!(cur.backends[&0].mac, MAC1);
        assert_eq!(cur.backends[&1].mac, MAC2);
        // The same file again: nothing to do.
        let (again, _) = apply_to(&cur, &web(&[(1, 1), (2, 1)], "web", "rr"));
        assert!(again.is_empty(), "{:?}", again.writes);
        assert!(again.changes.is_empty());
    }

    #[test]
    fn reweighting_writes_a_new_table_beside_the_live_one() {
        let (_, cur) = apply_to(&empty(), &web(&[(1, 1), (2, 1)], "web", "wrr"));
        let old = *cur.services.values().next().expect("service");
        let (p, next) = apply_to(&cur, &web(&[(1, 3), (2, 1)], "web", "wrr"));
        assert_eq!(
            lines(&p),
            ["~   backend 10.0.0.1:80 weight 1 -> 3 (service web)"]
        );
        let new = *next.services.values().next().expect("service");
        assert_eq!(new.id, old.id);
        assert_eq!(next.tables[&new.id], vec![0, 0, 0, 1]);
        let old_range = old.table_offset..old.table_offset + old.table_len;
        let new_range = new.table_offset..new.table_offset + new.table_len;
        assert!(
            !new_range.clone().any(|i| old_range.contains(&i)),
            "new table {new_range:?} overlaps the live one {old_range:?}"
        );
    }

    #[test]
    fn draining_keeps_the_backend_but_not_in_the_table() {
        let (_, cur) = apply_to(&empty(), &web(&[(1, 1), (2, 1)], "web", "rr"));
        let (p, next) = apply_to(&cur, &web(&[(1, 0), (2, 1)], "web", "rr"));
        assert_eq!(
            lines(&p),
            ["~   backend 10.0.0.1:80 weight 1 -> 0 (drain) (service web)"]
        );
        let id = next.services.values().next().expect("service").id;
        assert_eq!(next.tables[&id], vec![1]);
        let drained = next.backends[&0];
        assert_eq!(drained.weight, 0);
        assert_ne!(
            drained.flags & BACKEND_USABLE,
            0,
            "existing flows keep using it"
        );
    }

    #[test]
    fn renaming_and_rescheduling_keep_the_id() {
        let (_, cur) = apply_to(&empty(), &web(&[(1, 1), (2, 1)], "web", "rr"));
        let (p, next) = apply_to(&cur, &web(&[(1, 1), (2, 1)], "www", "rr"));
        assert_eq!(lines(&p), ["~ service www: renamed from web"]);
        assert!(!p.writes.iter().any(|w| matches!(w, Write::SetTable(..))));
        let (p, _) = apply_to(&next, &web(&[(1, 1), (2, 1)], "www", "wrr"));
        assert_eq!(lines(&p), ["~ service www: scheduler rr -> wrr"]);
    }

    #[test]
    fn removals_come_after_the_switch() {
        let (_, cur) = apply_to(&empty(), &web(&[(1, 1), (2, 1)], "web", "rr"));
        let (p, next) = apply_to(&cur, &web(&[(2, 1)], "web", "rr"));
        assert_eq!(lines(&p), ["-   backend 10.0.0.1:80 (service web)"]);
        let switch = position(&p, |w| matches!(w, Write::PutService(..)));
        let clear = position(&p, |w| matches!(w, Write::ClearBackend(0)));
        assert!(switch < clear, "{:?}", p.writes);
        assert!(!next.backends.contains_key(&0));

        let (p, next) = apply_to(&next, &config("services: []\n"));
        assert_eq!(lines(&p), ["- service web: TCP 10.0.0.100:80"]);
        let delete = position(&p, |w| matches!(w, Write::DeleteService(..)));
        let clear = position(&p, |w| matches!(w, Write::ClearBackend(1)));
        assert!(delete < clear, "{:?}", p.writes);
        assert!(next.services.is_empty() && next.backends.is_empty());
    }

    #[test]
    fn an_unresolved_backend_is_configured_but_gets_no_slot() {
        let (p, cur) = apply_to(&empty(), &web(&[(1, 1), (9, 1)], "web", "rr"));
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("10.0.0.9:80") && p.warnings[0].contains("no ARP reply"));
        let id = cur.services.values().next().expect("service").id;
        assert_eq!(cur.tables[&id], vec![0]);
        assert_eq!(cur.backends[&1].flags & BACKEND_USABLE, 0);
    }

    #[test]
    fn a_down_backend_keeps_its_id_and_leaves_the_table() {
        let cfg = web(&[(1, 1), (2, 1)], "web", "rr");
        let (_, cur) = apply_to(&empty(), &cfg);
        let down: Down = [(
            ("web".to_string(), Ipv4Addr::new(10, 0, 0, 1)),
            "HTTP 500".to_string(),
        )]
        .into();
        let p = plan(&cur, &cfg, &macs(), &down).expect("plan");
        assert_eq!(lines(&p), ["~   backend 10.0.0.1:80 down (service web)"]);
        let next = simulate(&cur, &p);
        let id = next.services.values().next().expect("service").id;
        assert_eq!(next.tables[&id], vec![1]);
        assert_eq!(
            next.backends[&0].flags & (BACKEND_USABLE | BACKEND_DOWN),
            BACKEND_DOWN
        );
        let (p, back) = apply_to(&next, &cfg);
        assert_eq!(lines(&p), ["~   backend 10.0.0.1:80 up (service web)"]);
        assert_eq!(back.tables[&id], vec![0, 1]);
    }

    #[test]
    fn a_full_table_fails_before_writing_anything() {
        let small = Current {
            table_entries: 3,
            ..Current::default()
        };
        let err = plan(
            &small,
            &web(&[(1, 3), (2, 1)], "web", "wrr"),
            &macs(),
            &Down::new(),
        )
        .expect_err("4 entries do not fit in 3");
        assert!(format!("{err:#}").contains("--table-entries"), "{err:#}");
    }

    #[test]
    fn regions_are_first_fit_and_never_overlap() {
        assert_eq!(find_region(&[], 4, 10), Some(0));
        assert_eq!(find_region(&[(0, 4)], 4, 10), Some(4));
        assert_eq!(find_region(&[(0, 4), (8, 2)], 4, 10), Some(4));
        assert_eq!(find_region(&[(0, 4), (8, 2)], 5, 10), None);
        assert_eq!(find_region(&[(0, 4), (8, 2)], 3, 12), Some(4));
        assert_eq!(find_region(&[(2, 2)], 2, 10), Some(0));
        assert_eq!(find_region(&[(5, 0)], 10, 10), Some(0));
        assert_eq!(find_region(&[(3, 3), (0, 3)], 4, 10), Some(6));
    }

    #[test]
    fn backend_ids_move_forward_before_reusing() {
        let used: BTreeSet<u32> = [0, 1, 5].into();
        assert_eq!(next_backend_id(&used, &BTreeSet::new()), Some(6));
        let taken: BTreeSet<u32> = [6].into();
        assert_eq!(next_backend_id(&used, &taken), Some(7));
        let full: BTreeSet<u32> = [limits::MAX_BACKENDS - 1].into();
        assert_eq!(next_backend_id(&full, &BTreeSet::new()), Some(0));
    }
}
