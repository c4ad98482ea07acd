//! The plan: the pure difference between what the maps hold ([`Current`], read by
//! `maps::current`) and a validated service file, and the writes that make the maps match it
//! (carried out by `maps::write`). Nothing here touches the kernel.
//!
//! [`plan`] is a short pipeline, per configured service:
//! 1. [`services`]: its id (kept for what exists, by `(vip, port, proto)`) and its entry;
//! 2. [`backends`]: its backends (ids kept by address), what changed, their writes;
//! 3. [`tables`]: the lookup table its scheduler builds from the usable ones, and the region
//!    of `TABLE` it goes to (the live one when unchanged, else a free one);
//!
//! then the services the file no longer has, the backends left without a service, and the
//! data path's settings (`SETTINGS`: the `flood:` budget), written only when they differ.
//! Everything that can fail (capacity, table room) fails here, before anything is written.
//!
//! The writes come out in an order that never lets a packet see a half-written service: new
//! backends first, then each changed service's new table into an idle region of `TABLE`, then
//! the service entry that switches to it (one atomic hash-map update), and only then removals.

mod backends;
pub mod convert;
mod ids;
mod services;
mod tables;

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::IpAddr,
};

use anyhow::Result;
use lb_common::{Backend, Service, ServiceKey, Settings};

use crate::{config::Config, plan::convert::service_key};

/// Backend MACs by address: `Err` holds why one could not be resolved.
pub type Macs = HashMap<IpAddr, Result<[u8; 6], String>>;

/// The outer source of tunnel backends that configure none, by backend address: the source
/// the kernel's route to the backend has (`net::route`); `Err` holds why there is none.
pub type Sources = HashMap<IpAddr, Result<IpAddr, String>>;

/// What the kernel says of the backends, looked up in `net/` and passed in so that the plan
/// stays pure: route backends' MACs, tunnel backends' outer sources. A tunnel backend needs
/// no MAC of its own (the data path asks the kernel's FIB for the next hop per packet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub macs: Macs,
    pub sources: Sources,
}

impl From<Macs> for Resolved {
    /// Route backends only (tunnel backends without a configured source get none).
    fn from(macs: Macs) -> Resolved {
        Resolved {
            macs,
            sources: Sources::new(),
        }
    }
}

impl Resolved {
    /// Whether any lookup failed (the daemon asks again later).
    pub fn any_unresolved(&self) -> bool {
        self.macs.values().any(Result::is_err) || self.sources.values().any(Result::is_err)
    }
}

/// Backends that health checks hold down, by (service name, address), with the reason. A
/// down backend stays configured (its counters and id are kept) but is not usable: it gets no
/// new flows and its existing flows are rescheduled, as IPVS's `expire_nodest_conn` does.
pub type Down = HashMap<(String, IpAddr), String>;

/// What the maps hold now (`maps::current` reads it).
#[derive(Clone, Debug, Default)]
pub struct Current {
    pub services: BTreeMap<ServiceKey, Service>,
    /// Configured backends by id.
    pub backends: BTreeMap<u32, Backend>,
    /// Each service's table contents, by service id.
    pub tables: HashMap<u32, Vec<u32>>,
    /// Entries of `TABLE` that service tables may use.
    pub table_entries: u32,
    /// The data path's settings (`SETTINGS[0]`).
    pub settings: Settings,
}

/// One difference between the file and the maps, as a person reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    AddService {
        name: String,
        what: String,
    },
    RemoveService {
        name: String,
        what: String,
    },
    ChangeService {
        name: String,
        what: String,
    },
    AddBackend {
        service: String,
        what: String,
    },
    RemoveBackend {
        service: String,
        what: String,
    },
    ChangeBackend {
        service: String,
        what: String,
    },
    /// The `flood:` block's budget: `SETTINGS`.
    ChangeFlood {
        what: String,
    },
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
            Change::ChangeFlood { what } => write!(f, "~ flood: {what}"),
        }
    }
}

/// One map write, in execution order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    ResetBackendCounters(u32),
    SetBackend(u32, Backend),
    /// A table's sequence at an offset of `TABLE`.
    SetTable(u32, Vec<u32>),
    ResetServiceCounters(u32),
    PutService(ServiceKey, Service),
    DeleteService(ServiceKey),
    ClearBackend(u32),
    /// The whole of `SETTINGS[0]`.
    PutSettings(Settings),
}

/// The difference between a file and the maps, and how to write it.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Backends that get no traffic because their MAC (or tunnel source) could not be
    /// resolved.
    pub warnings: Vec<String>,
    pub(crate) writes: Vec<Write>,
}

impl Plan {
    /// Nothing to write: the maps already match the file.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The writes, in the order they must be made.
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }
}

/// The writes of a plan in the groups that order them.
#[derive(Default)]
struct Writes {
    /// New backends (their counters zeroed first) and changed backends that stay usable.
    pre: Vec<Write>,
    /// New tables, into regions no live service uses.
    tables: Vec<Write>,
    /// Service entries: the switch to the new tables.
    switch: Vec<Write>,
    /// Removals, and backends that lose usability (after the switch away from them).
    post: Vec<Write>,
}

impl Writes {
    fn into_vec(mut self) -> Vec<Write> {
        // Clearing a backend comes after every other removal.
        self.post
            .sort_by_key(|w| matches!(w, Write::ClearBackend(_)));
        [self.pre, self.tables, self.switch, self.post].concat()
    }
}

/// Computes what `config` needs written over `current`. Nothing is written.
pub fn plan(current: &Current, config: &Config, resolved: &Resolved, down: &Down) -> Result<Plan> {
    let mut p = Plan::default();
    let mut w = Writes::default();
    let mut ids = ids::Ids::of(current);
    let mut regions = tables::Regions::of(current);
    let mut existing = backends::ByService::of(current);
    let down = backends::DownSet::new(down);
    for sc in &config.services {
        let key = service_key(sc);
        let old = current.services.get(&key);
        let mut want = services::entry(sc, old, &mut ids)?;
        services::describe(&mut p.changes, sc, &key, &want, old);
        // A new service takes over no backends, even ones that name a free id.
        let have = match old {
            Some(_) => existing.take(want.id),
            None => backends::Existing::default(),
        };
        let ctx = backends::Context {
            resolved,
            down: down.of(&sc.name),
            service: sc,
            id: want.id,
        };
        let members = backends::plan(&ctx, have, &mut ids, &mut p, &mut w)?;
        let seq = tables::sequence(sc, &members, &mut p.warnings);
        let (offset, len) = regions.place(sc, old, current, seq, &mut w)?;
        want.table_offset = offset;
        want.table_len = len;
        services::put(key, want, old, &mut w);
    }
    services::remove_unwanted(current, config, &mut p.changes, &mut w);
    // Backends of services that are gone (those of kept services were handled above).
    w.post
        .extend(existing.rest().into_iter().map(Write::ClearBackend));

    settings(current, config, &mut p.changes, &mut w);

    p.writes = w.into_vec();
    Ok(p)
}

/// `SETTINGS` as the file wants it, written only when it differs from what the map holds (a
/// file without `flood:` wants no limit). It is independent of the services, so it goes with
/// the other switches.
fn settings(current: &Current, config: &Config, changes: &mut Vec<Change>, w: &mut Writes) {
    let want = Settings {
        new_flows_per_cpu: config.flood.new_flows_per_cpu,
        ..Settings::default()
    };
    if want == current.settings {
        return;
    }
    let budget = |n: u32| match n {
        0 => "0 (no limit)".to_string(),
        n => n.to_string(),
    };
    let (old, new) = (current.settings.new_flows_per_cpu, want.new_flows_per_cpu);
    let what = if old == new {
        // Only the padding differs (a hand-written value): the write makes it whole again.
        format!("new_flows_per_cpu {}, settings rewritten", budget(new))
    } else {
        format!("new_flows_per_cpu {} -> {}", budget(old), budget(new))
    };
    changes.push(Change::ChangeFlood { what });
    w.switch.push(Write::PutSettings(want));
}

#[cfg(test)]
mod tests {
    use lb_common::{BACKEND_CONFIGURED, BACKEND_DOWN, BACKEND_USABLE};

    use std::net::Ipv4Addr;

    use super::*;
    use crate::config::parse;

    const MAC1: [u8; 6] = [2, 0, 0, 0, 0, 0x87];
    const MAC2: [u8; 6] = [2, 0, 0, 0, 0, 0x88];

    fn macs() -> Macs {
        [
            (Ipv4Addr::new(10, 0, 0, 1).into(), Ok(MAC1)),
            (Ipv4Addr::new(10, 0, 0, 2).into(), Ok(MAC2)),
            (
                Ipv4Addr::new(10, 0, 0, 9).into(),
                Err("no ARP reply".to_string()),
            ),
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
                Write::PutSettings(s) => next.settings = *s,
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
        let p = plan(cur, cfg, &macs().into(), &Down::new()).expect("plan");
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
            ("web".to_string(), Ipv4Addr::new(10, 0, 0, 1).into()),
            "HTTP 500".to_string(),
        )]
        .into();
        let p = plan(&cur, &cfg, &macs().into(), &down).expect("plan");
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
            &macs().into(),
            &Down::new(),
        )
        .expect_err("4 entries do not fit in 3");
        assert!(format!("{err:#}").contains("--table-entries"), "{err:#}");
    }

    /// An IPv6 service beside an IPv4 one: its key and backends hold the 16 bytes of the
    /// address (not IPv4-mapped), its persistence mask is the /64 prefix, and every change
    /// line writes the address as ipvsadm does.
    #[test]
    fn an_ipv6_service_beside_an_ipv4_one() {
        let cfg = config(
            "services:
  - name: web
    vip: 10.0.0.100
    port: 80
    persistence: { timeout: 30s, netmask: 255.255.0.0 }
    backends: [{address: 10.0.0.1}]
  - name: web6
    vip: \"fd00:58::133\"
    port: 80
    scheduler: mh
    table_size: 7
    persistence: { timeout: 50s, netmask: 64 }
    backends: [{address: \"fd00:58::135\"}, {address: \"fd00:58::136\"}]
",
        );
        let v6 = |s: &str| -> std::net::IpAddr { s.parse().expect("address") };
        let mut macs = macs();
        macs.insert(v6("fd00:58::135"), Ok(MAC1));
        macs.insert(v6("fd00:58::136"), Err("no neighbour advertisement".into()));
        let macs = macs.into();
        let p = plan(&empty(), &cfg, &macs, &Down::new()).expect("plan");
        assert_eq!(
            lines(&p),
            [
                "+ service web: TCP 10.0.0.100:80 wrr persistent 30s mask 255.255.0.0",
                "+   backend 10.0.0.1:80 weight 1 (service web)",
                "+ service web6: TCP [fd00:58::133]:80 mh persistent 50s mask 64",
                "+   backend [fd00:58::135]:80 weight 1 (service web6)",
                "+   backend [fd00:58::136]:80 weight 1 (service web6)",
            ]
        );
        assert_eq!(
            p.warnings,
            [
                "backend [fd00:58::136]:80 of service web6: no MAC address (no neighbour \
              advertisement); it gets no traffic"
            ]
        );
        let cur = simulate(&empty(), &p);
        let word = |b: [u8; 4]| u32::from_ne_bytes(b);
        let (key, svc) = cur
            .services
            .iter()
            .find(|(_, s)| convert::service_name(s) == "web6")
            .expect("web6");
        // fd00:0058:0000:0000:0000:0000:0000:0133, word by word in network order.
        assert_eq!(
            key.addr,
            [word([0xfd, 0, 0, 0x58]), 0, 0, word([0, 0, 0x01, 0x33])]
        );
        assert_eq!(svc.persist_timeout_s, 50);
        assert_eq!(svc.persist_mask, [u32::MAX, u32::MAX, 0, 0]);
        let (_, svc4) = cur
            .services
            .iter()
            .find(|(_, s)| convert::service_name(s) == "web")
            .expect("web");
        assert_eq!(
            svc4.persist_mask,
            [u32::MAX, u32::MAX, u32::MAX, word([255, 255, 0, 0])]
        );
        let addrs: Vec<(String, u16)> = cur
            .backends
            .values()
            .filter(|b| b.service_id == svc.id)
            .map(|b| (convert::describe_backend(b), b.flags))
            .collect();
        assert_eq!(
            addrs,
            [
                (
                    "[fd00:58::135]:80".to_string(),
                    BACKEND_CONFIGURED | BACKEND_USABLE
                ),
                ("[fd00:58::136]:80".to_string(), BACKEND_CONFIGURED),
            ]
        );
        // Only the usable backend is in the Maglev table, all 7 slots.
        let b135 = cur
            .backends
            .iter()
            .find(|(_, b)| b.flags & BACKEND_USABLE != 0 && b.service_id == svc.id)
            .map(|(id, _)| *id)
            .expect("the usable backend");
        assert_eq!(cur.tables[&svc.id], vec![b135; 7]);

        // The same file again: nothing to do.
        let again = plan(&cur, &cfg, &macs, &Down::new()).expect("plan");
        assert!(again.is_empty(), "{:?}", again.changes);
    }

    /// Tunnel backends: the method, the GUE port in network order and the outer source in the
    /// 16-byte form (configured, else the route's), no MAC needed; an IPv6 backend of an IPv4
    /// VIP; a route backend beside them unchanged; a backend without a source unusable.
    #[test]
    fn tunnel_backends_carry_method_port_and_source() {
        let cfg = config(
            "services:
  - name: web
    vip: 10.0.0.100
    port: 80
    scheduler: rr
    forward: tunnel
    tunnel: {type: gue, port: 6081}
    backends:
      - address: 10.20.0.11
      - address: \"fd00:20::11\"
        tunnel: {type: ipip, source: \"fd00:58::134\"}
      - address: 10.0.0.1
        forward: route
      - address: 10.20.0.12
      - address: 10.20.0.13
        tunnel: {source: 10.0.0.34}
",
        );
        let ip = |s: &str| -> IpAddr { s.parse().expect("address") };
        let mut resolved = Resolved::from(macs());
        resolved
            .sources
            .insert(ip("10.20.0.11"), Ok(ip("10.0.0.50")));
        resolved
            .sources
            .insert(ip("10.20.0.12"), Err("no route to 10.20.0.12".into()));
        // A looked-up source is not used where one is configured.
        resolved
            .sources
            .insert(ip("10.20.0.13"), Ok(ip("10.0.0.50")));
        let p = plan(&empty(), &cfg, &resolved, &Down::new()).expect("plan");
        assert_eq!(
            lines(&p),
            [
                "+ service web: TCP 10.0.0.100:80 rr",
                "+   backend 10.20.0.11:80 weight 1 gue 6081 from 10.0.0.50 (service web)",
                "+   backend [fd00:20::11]:80 weight 1 ipip from fd00:58::134 (service web)",
                "+   backend 10.0.0.1:80 weight 1 (service web)",
                "+   backend 10.20.0.12:80 weight 1 gue 6081 without a source (service web)",
                "+   backend 10.20.0.13:80 weight 1 gue 6081 from 10.0.0.34 (service web)",
            ]
        );
        assert_eq!(
            p.warnings,
            [
                "backend 10.20.0.12:80 of service web: no tunnel source address (no route to \
              10.20.0.12); it gets no traffic"
            ]
        );
        let cur = simulate(&empty(), &p);
        let by_addr = |a: &str| {
            *cur.backends
                .values()
                .find(|b| convert::addr_ip(&b.addr) == ip(a))
                .expect("the backend")
        };
        let usable = BACKEND_CONFIGURED | BACKEND_USABLE;
        let gue = by_addr("10.20.0.11");
        assert_eq!(gue.forward, lb_common::Forward::Gue as u8);
        assert_eq!(gue.tunnel_port, 6081u16.to_be());
        assert_eq!(gue.tunnel_port.to_ne_bytes(), [0x17, 0xc1]);
        // ::ffff:10.0.0.50, word by word in network order.
        assert_eq!(
            gue.tunnel_src,
            [
                0,
                0,
                u32::from_ne_bytes([0, 0, 0xff, 0xff]),
                u32::from_ne_bytes([10, 0, 0, 50])
            ]
        );
        assert_eq!((gue.mac, gue.flags), ([0; 6], usable));
        let v6 = by_addr("fd00:20::11");
        assert_eq!(v6.forward, lb_common::Forward::Ipip as u8);
        assert_eq!(v6.tunnel_port, 0);
        assert_eq!(
            convert::addr_ip(&v6.tunnel_src),
            ip("fd00:58::134"),
            "the IPv6 source of an IPv6 backend of an IPv4 VIP"
        );
        assert_eq!(v6.tunnel_src[0], u32::from_ne_bytes([0xfd, 0, 0, 0x58]));
        assert_eq!(v6.flags, usable);
        let route = by_addr("10.0.0.1");
        assert_eq!(
            (
                route.forward,
                route.mac,
                route.tunnel_src,
                route.tunnel_port
            ),
            (lb_common::Forward::Route as u8, MAC1, [0; 4], 0)
        );
        assert_eq!(by_addr("10.20.0.12").flags, BACKEND_CONFIGURED);
        assert_eq!(
            convert::addr_ip(&by_addr("10.20.0.13").tunnel_src),
            ip("10.0.0.34")
        );
        let id = cur.services.values().next().expect("service").id;
        let in_table: Vec<IpAddr> = cur.tables[&id]
            .iter()
            .map(|b| convert::addr_ip(&cur.backends[b].addr))
            .collect();
        assert_eq!(
            in_table,
            [
                ip("10.20.0.11"),
                ip("fd00:20::11"),
                ip("10.0.0.1"),
                ip("10.20.0.13")
            ]
        );

        // The route moves: the source follows, as a change of that backend only.
        resolved
            .sources
            .insert(ip("10.20.0.11"), Ok(ip("10.0.0.51")));
        let next = plan(&cur, &cfg, &resolved, &Down::new()).expect("plan");
        assert_eq!(
            lines(&next),
            [
                "~   backend 10.20.0.11:80 forward gue 6081 from 10.0.0.50 -> gue 6081 from \
              10.0.0.51 (service web)"
            ]
        );
        // A health check's down still holds a tunnel backend down.
        let down: Down = [(
            ("web".to_string(), ip("fd00:20::11")),
            "HTTP 500".to_string(),
        )]
        .into();
        let held = plan(&cur, &cfg, &resolved, &down).expect("plan");
        assert!(
            lines(&held).contains(&"~   backend [fd00:20::11]:80 down (service web)".to_string()),
            "{:?}",
            held.changes
        );
    }

    /// `flood:` goes to `SETTINGS` only when it differs: set, changed, unchanged (nothing to
    /// write), removed (back to 0), and a hand-written value repaired.
    #[test]
    fn the_flood_budget_is_written_when_it_differs() {
        let with = |n: &str| config(&format!("services: []\nflood:\n  new_flows_per_cpu: {n}\n"));
        let (p, cur) = apply_to(&empty(), &with("200000"));
        assert_eq!(
            lines(&p),
            ["~ flood: new_flows_per_cpu 0 (no limit) -> 200000"]
        );
        assert_eq!(
            p.writes,
            [Write::PutSettings(Settings {
                new_flows_per_cpu: 200_000,
                _pad: 0
            })]
        );
        assert_eq!(cur.settings.new_flows_per_cpu, 200_000);
        let (again, _) = apply_to(&cur, &with("200000"));
        assert!(again.is_empty(), "{:?}", again.writes);
        let (p, cur) = apply_to(&cur, &with("1000"));
        assert_eq!(lines(&p), ["~ flood: new_flows_per_cpu 200000 -> 1000"]);
        assert_eq!(cur.settings.new_flows_per_cpu, 1000);
        // The block removed: no limit.
        let (p, cur) = apply_to(&cur, &config("services: []\n"));
        assert_eq!(
            lines(&p),
            ["~ flood: new_flows_per_cpu 1000 -> 0 (no limit)"]
        );
        assert_eq!(cur.settings, Settings::default());
        // A value written by hand (or by another tool) is put back.
        let drifted = Current {
            settings: Settings {
                new_flows_per_cpu: 7,
                _pad: 0,
            },
            ..cur.clone()
        };
        let (p, back) = apply_to(&drifted, &config("services: []\n"));
        assert_eq!(lines(&p), ["~ flood: new_flows_per_cpu 7 -> 0 (no limit)"]);
        assert_eq!(back.settings, Settings::default());
        let padded = Current {
            settings: Settings {
                new_flows_per_cpu: 0,
                _pad: 1,
            },
            ..cur
        };
        let (p, back) = apply_to(&padded, &config("services: []\n"));
        assert_eq!(
            lines(&p),
            ["~ flood: new_flows_per_cpu 0 (no limit), settings rewritten"]
        );
        assert_eq!(back.settings, Settings::default());
        // Beside services: the settings do not disturb their order.
        let (p, _) = apply_to(&empty(), &{
            let mut c = web(&[(1, 1)], "web", "rr");
            c.flood.new_flows_per_cpu = 5;
            c
        });
        assert_eq!(
            lines(&p),
            [
                "+ service web: TCP 10.0.0.100:80 rr",
                "+   backend 10.0.0.1:80 weight 1 (service web)",
                "~ flood: new_flows_per_cpu 0 (no limit) -> 5",
            ]
        );
        let table = position(&p, |w| matches!(w, Write::SetTable(..)));
        let settings = position(&p, |w| matches!(w, Write::PutSettings(..)));
        assert!(table < settings, "{:?}", p.writes);
    }

    /// A backend that switches from route to tunnel is one change line naming both.
    #[test]
    fn switching_a_backend_to_a_tunnel_is_a_change() {
        let route = web(&[(1, 1)], "web", "rr");
        let (_, cur) = apply_to(&empty(), &route);
        let tunnel = config(
            "services:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n    scheduler: rr\n    \
             backends:\n      - address: 10.0.0.1\n        forward: tunnel\n        tunnel: \
             {source: 10.0.0.34}\n",
        );
        let (p, next) = apply_to(&cur, &tunnel);
        assert_eq!(
            lines(&p),
            [
                "~   backend 10.0.0.1:80 mac 02:00:00:00:00:87 -> 00:00:00:00:00:00, forward \
                 route -> ipip from 10.0.0.34 (service web)"
            ]
        );
        assert_eq!(next.backends[&0].forward, lb_common::Forward::Ipip as u8);
        assert_eq!(next.backends[&0].flags & BACKEND_USABLE, BACKEND_USABLE);
    }
}
