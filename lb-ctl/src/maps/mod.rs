//! The kernel side of the control plane: loading the program ([`loader`]), its pins
//! ([`pins`]), the one-writer lock ([`lock`]), their repair ([`repair`]), typed access to the
//! maps (here) and the batch syscalls ([`batch`]), reading the state a plan starts from
//! ([`current`]), writing a plan ([`write`]), one consistent read for people ([`view`]) and
//! the data path's log records ([`datapath_log`]); the real servers' decapsulation program
//! ([`decap`]).

mod assoc;
pub mod batch;
pub mod current;
pub mod datapath_log;
pub mod decap;
pub mod derived;
pub mod filter;
pub mod loader;
pub mod lock;
pub mod mapped;
pub mod pins;
pub mod repair;
pub mod view;
pub mod write;

pub use batch::{array_batch, array_update_batch, hash_batch};
pub use write::apply;

use std::path::Path;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{Array, HashMap, IterableMap as _, Map, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use lb_common::{
    Backend, Budget, CachedFlow, CachedService, Counters, Flow, FlowKey, Frag, FragKey, HalfOpen,
    Iface, Persist, PersistKey, PersistSlot, Reason, Service, ServiceKey, Settings,
    half_open_bucket, half_open_shift, limits, names, persist_bucket,
};

/// An interface the program can serve: IFACES is an array indexed by ifindex, with
/// [`limits::IFINDEX_SLOTS`] slots.
pub fn check_ifindex(iface: &str, ifindex: u32) -> Result<()> {
    if ifindex >= limits::IFINDEX_SLOTS {
        anyhow::bail!(
            "{iface} has interface index {ifindex}, and the director serves only interfaces \
             whose index is below {} (its interface table is an array indexed by ifindex); \
             indexes are allocated per network namespace: use an interface of a namespace \
             with fewer past interfaces, or re-create {iface} after its namespace is restarted",
            limits::IFINDEX_SLOTS
        );
    }
    Ok(())
}

/// Every map of the data path.
pub struct Maps {
    pub services: HashMap<MapData, ServiceKey, Service>,
    pub backends: Array<MapData, Backend>,
    pub table: Array<MapData, u32>,
    pub cursors: Array<MapData, u64>,
    pub flows: HashMap<MapData, FlowKey, Flow>,
    /// The interfaces the program is attached to, by ifindex ([`Maps::register_iface`]).
    pub ifaces: Array<MapData, Iface>,
    pub service_stats: PerCpuArray<MapData, Counters>,
    pub backend_stats: PerCpuArray<MapData, Counters>,
    pub reasons: PerCpuArray<MapData, u64>,
    /// Active connections per backend, as the data path counts them for lc/wlc.
    pub conns: Array<MapData, u64>,
    /// The persistence table: buckets of four slots; read and write it through
    /// [`Maps::persist_entries`], [`Maps::persist_entry`] and [`Maps::set_persist`].
    pub persist: Array<MapData, PersistSlot>,
    /// The backend of each fragmented datagram whose first fragment was forwarded.
    pub frags: HashMap<MapData, FragKey, Frag>,
    /// Half-open TCP connections (SYN seen, no ACK yet), in slots indexed by a hash of the
    /// flow ([`Maps::half_open`] and the methods after it); the client's ACK moves an entry
    /// to `flows`.
    pub syns: Array<MapData, HalfOpen>,
    /// The data path's global settings (one entry).
    pub settings: Array<MapData, Settings>,
    /// Each CPU's window of the new-entry budget.
    pub budget: PerCpuArray<MapData, Budget>,
    /// The VIPs' pre-filter bitmap ([`derived`]).
    pub vip_filter: Array<MapData, u64>,
    /// Each service id's key ([`derived`]).
    pub service_keys: Array<MapData, ServiceKey>,
    /// Each CPU's flow cache (the data path writes it; user space only reads it).
    pub flow_cache: PerCpuArray<MapData, CachedFlow>,
    /// Each CPU's service cache (the data path writes it; user space only reads it).
    pub service_cache: PerCpuArray<MapData, CachedService>,
    /// The generation cached flows and services are checked against
    /// ([`Maps::bump_generation`]).
    pub generation: Array<MapData, u32>,
    /// The membership bitmaps of `flows` ([`filter`]); write `flows` through
    /// [`Maps::insert_flow`], which keeps them.
    pub flow_filter: Array<MapData, u64>,
    /// `flow_filter`, mapped for atomic ORs.
    pub filter: filter::FilterMapping,
}

impl Maps {
    /// Every slot of `BACKENDS`, by id: one memory copy of the mmapable array
    /// ([`mapped::array_copy`]), or a batch call for maps pinned without `BPF_F_MMAPABLE`.
    pub fn backend_slots(&self) -> Result<Vec<Backend>> {
        match mapped::array_copy(&self.backends).context("reading BACKENDS")? {
            Some(slots) => Ok(slots),
            None => array_batch(&self.backends, 0, self.backends.len()).context("reading BACKENDS"),
        }
    }

    /// Takes the maps out of a loaded object (the program keeps using them).
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Maps> {
        Self::build(|name| {
            ebpf.take_map(name)
                .with_context(|| format!("the XDP object has no map {name}"))
        })
    }

    /// Opens the maps pinned under `dir` by `lb-ctl attach`.
    pub fn from_pins(dir: &Path) -> Result<Maps> {
        Self::build(|name| {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).with_context(|| {
                format!(
                    "opening pinned map {} (is the program attached? `lb-ctl attach IFACE`)",
                    path.display()
                )
            })?;
            Map::from_map_data(data).with_context(|| format!("map {}", path.display()))
        })
    }

    fn build(mut take: impl FnMut(&str) -> Result<Map>) -> Result<Maps> {
        macro_rules! typed {
            ($name:expr) => {{
                let name = $name;
                take(name)?
                    .try_into()
                    .with_context(|| format!("map {name} has an unexpected type or size"))?
            }};
        }
        let flow_filter: Array<MapData, u64> = typed!(names::FLOW_FILTER);
        let filter = filter::FilterMapping::new(&flow_filter)?;
        Ok(Maps {
            flow_filter,
            filter,
            services: typed!(names::SERVICES),
            backends: typed!(names::BACKENDS),
            table: typed!(names::TABLE),
            cursors: typed!(names::CURSORS),
            flows: typed!(names::FLOWS),
            ifaces: typed!(names::IFACES),
            service_stats: typed!(names::SERVICE_STATS),
            backend_stats: typed!(names::BACKEND_STATS),
            reasons: typed!(names::REASONS),
            conns: typed!(names::CONNS),
            persist: typed!(names::PERSIST),
            frags: typed!(names::FRAGS),
            syns: typed!(names::SYNS),
            settings: typed!(names::SETTINGS),
            budget: typed!(names::BUDGET),
            vip_filter: typed!(names::VIP_FILTER),
            service_keys: typed!(names::SERVICE_KEYS),
            flow_cache: typed!(names::FLOW_CACHE),
            service_cache: typed!(names::SERVICE_CACHE),
            generation: typed!(names::GENERATION),
        })
    }

    /// Every map with its name, in [`names::MAPS`] order.
    pub fn all(&self) -> [(&'static str, &MapData); 21] {
        [
            (names::SERVICES, self.services.map()),
            (names::BACKENDS, self.backends.map()),
            (names::TABLE, self.table.map()),
            (names::CURSORS, self.cursors.map()),
            (names::FLOWS, self.flows.map()),
            (names::IFACES, self.ifaces.map()),
            (names::SERVICE_STATS, self.service_stats.map()),
            (names::BACKEND_STATS, self.backend_stats.map()),
            (names::REASONS, self.reasons.map()),
            (names::CONNS, self.conns.map()),
            (names::PERSIST, self.persist.map()),
            (names::FRAGS, self.frags.map()),
            (names::SYNS, self.syns.map()),
            (names::SETTINGS, self.settings.map()),
            (names::BUDGET, self.budget.map()),
            (names::VIP_FILTER, self.vip_filter.map()),
            (names::SERVICE_KEYS, self.service_keys.map()),
            (names::FLOW_CACHE, self.flow_cache.map()),
            (names::GENERATION, self.generation.map()),
            (names::FLOW_FILTER, self.flow_filter.map()),
            (names::SERVICE_CACHE, self.service_cache.map()),
        ]
    }

    /// Empties every CPU's flow cache and service cache at once: the data path trusts a
    /// cached flow or service only while its generation is the current one. Call it after any
    /// write that can change where a known flow goes (services, backends, tables, connection
    /// entries), and after every write of `SERVICES`; the writes before it are what the next
    /// packet of every flow is judged by.
    pub fn bump_generation(&mut self) -> Result<u32> {
        let now = self.generation.get(&0, 0).context("reading GENERATION")?;
        let next = now.wrapping_add(1);
        self.generation
            .set(0, next, 0)
            .context("writing GENERATION")?;
        Ok(next)
    }

    /// The kernel's id of the services map: two handles with the same id are the same maps.
    pub fn id(&self) -> Result<u32> {
        Ok(self
            .services
            .map()
            .info()
            .context("reading the services map's id")?
            .id())
    }

    /// A service's counters summed over CPUs.
    pub fn service_counters(&self, id: u32) -> Result<Counters> {
        sum(&self.service_stats, id)
    }

    /// A backend's counters summed over CPUs.
    pub fn backend_counters(&self, id: u32) -> Result<Counters> {
        sum(&self.backend_stats, id)
    }

    /// Packets per reason, summed over CPUs, in `Reason::ALL` order.
    pub fn reason_counts(&self) -> Result<Vec<(Reason, u64)>> {
        Reason::ALL
            .iter()
            .map(|&r| {
                let per_cpu = self
                    .reasons
                    .get(&(r as u32), 0)
                    .context("reading REASONS")?;
                Ok((r, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// Zeroes a service's counters (before a new service takes over the id).
    pub fn reset_service_counters(&mut self, id: u32) -> Result<()> {
        zero(&mut self.service_stats, id)
    }

    /// Zeroes a backend's counters and connection count (before a new backend takes over
    /// the id).
    pub fn reset_backend_counters(&mut self, id: u32) -> Result<()> {
        self.conns
            .set(id, 0, 0)
            .with_context(|| format!("zeroing connections {id}"))?;
        zero(&mut self.backend_stats, id)
    }

    /// Registers interface `ifindex` (named `iface` in errors) with its own MAC in IFACES.
    pub fn register_iface(&mut self, iface: &str, ifindex: u32, mac: [u8; 6]) -> Result<()> {
        check_ifindex(iface, ifindex)?;
        self.ifaces
            .set(ifindex, Iface::new(mac), 0)
            .with_context(|| format!("registering {iface} (index {ifindex}) in IFACES"))
    }

    /// Clears interface `ifindex`'s slot of IFACES: the program passes its frames.
    pub fn forget_iface(&mut self, ifindex: u32) -> Result<()> {
        if ifindex >= self.ifaces.len() {
            return Ok(());
        }
        self.ifaces
            .set(ifindex, Iface::default(), 0)
            .with_context(|| format!("clearing interface index {ifindex} in IFACES"))
    }

    /// The registered entry of interface `ifindex`, if any.
    pub fn iface(&self, ifindex: u32) -> Option<Iface> {
        self.ifaces
            .get(&ifindex, 0)
            .ok()
            .filter(|i| i.registered != 0)
    }

    /// The indexes of the interfaces registered in IFACES, in order.
    pub fn iface_indexes(&self) -> Result<Vec<u32>> {
        let slots = array_batch(&self.ifaces, 0, self.ifaces.len()).context("reading IFACES")?;
        Ok((0u32..)
            .zip(slots)
            .filter(|(_, i)| i.registered != 0)
            .map(|(ifindex, _)| ifindex)
            .collect())
    }

    /// Writes `flow` as the connection-table entry of `key`, and sets `key`'s bit in the
    /// table's membership bitmaps ([`filter`]): the one way user space writes `FLOWS`.
    pub fn insert_flow(&mut self, key: &FlowKey, flow: &Flow) -> Result<()> {
        self.flows.insert(key, flow, 0).context("writing FLOWS")?;
        self.filter.mark(key);
        Ok(())
    }

    /// Entries the connection table can hold.
    pub fn flows_capacity(&self) -> Result<u32> {
        Ok(self.flows.map().info().context("FLOWS info")?.max_entries())
    }

    /// Entries (slots) the half-open table can hold.
    pub fn syns_capacity(&self) -> Result<u32> {
        Ok(self.syns.len())
    }

    /// The half-open table's entries: each slot that holds a flow in the SYN state, live or
    /// not (callers judge with [`Flow::is_live`]).
    pub fn half_open(&self) -> Result<Vec<(FlowKey, Flow)>> {
        let slots = assoc::filled(&self.syns, names::SYNS)?;
        Ok(slots.into_iter().map(|s| (s.key, s.flow)).collect())
    }

    /// The first slot of `key`'s bucket of the half-open table, as the data path computes it.
    fn half_open_bucket(&self, key: &FlowKey) -> Result<u32> {
        let shift = half_open_shift(self.syns.len())
            .with_context(|| format!("SYNS has {} slots, not a power of two", self.syns.len()))?;
        Ok(half_open_bucket(key, shift))
    }

    /// The half-open entry of `key`, if its bucket holds it.
    pub fn half_open_entry(&self, key: &FlowKey) -> Option<Flow> {
        let first = self.half_open_bucket(key).ok()?;
        let found = assoc::find(&self.syns, first, key, names::SYNS).ok()?;
        found.map(|(_, s)| s.flow)
    }

    /// Writes `flow` (in the SYN state) as the half-open entry of `key`, into the slot of its
    /// bucket the data path's SYN would take. Returns the half-open entry of another flow
    /// that slot held, which is gone.
    pub fn set_half_open(&mut self, key: &FlowKey, flow: &Flow) -> Result<Option<Flow>> {
        let first = self.half_open_bucket(key)?;
        let slot = HalfOpen {
            key: *key,
            flow: *flow,
        };
        let evicted = assoc::put(&mut self.syns, first, key, slot, names::SYNS)?;
        Ok(evicted.map(|s| s.flow))
    }

    /// Empties the half-open entry of `key`; false if its bucket did not hold it.
    pub fn remove_half_open(&mut self, key: &FlowKey) -> Result<bool> {
        let first = self.half_open_bucket(key)?;
        let Some((slot, _)) = assoc::find(&self.syns, first, key, names::SYNS)? else {
            return Ok(false);
        };
        self.syns
            .set(slot, HalfOpen::default(), 0)
            .with_context(|| format!("emptying SYNS slot {slot}"))?;
        Ok(true)
    }

    /// The persistence table's entries, live or not (callers judge by the service's
    /// timeout).
    pub fn persist_entries(&self) -> Result<Vec<(PersistKey, Persist)>> {
        let slots = assoc::filled(&self.persist, names::PERSIST)?;
        Ok(slots.into_iter().map(|s| (s.key, s.persist)).collect())
    }

    /// The persistence entry of `key`, if its bucket holds it.
    pub fn persist_entry(&self, key: &PersistKey) -> Result<Option<Persist>> {
        let found = assoc::find(&self.persist, persist_bucket(key), key, names::PERSIST)?;
        Ok(found.map(|(_, s)| s.persist))
    }

    /// Writes `p` as the persistence entry of `key`, into the slot of its bucket the data
    /// path would give it (evicting the least recently seen entry of a full bucket).
    pub fn set_persist(&mut self, key: &PersistKey, p: &Persist) -> Result<()> {
        let slot = PersistSlot {
            key: *key,
            filled: 1,
            persist: *p,
        };
        assoc::put(
            &mut self.persist,
            persist_bucket(key),
            key,
            slot,
            names::PERSIST,
        )?;
        Ok(())
    }
}

fn sum(map: &PerCpuArray<MapData, Counters>, id: u32) -> Result<Counters> {
    let per_cpu = map
        .get(&id, 0)
        .with_context(|| format!("reading counters {id}"))?;
    let mut total = Counters::default();
    for c in per_cpu.iter() {
        total.add(c);
    }
    Ok(total)
}

fn zero(map: &mut PerCpuArray<MapData, Counters>, id: u32) -> Result<()> {
    let cpus = nr_cpus()
        .map_err(|(_, e)| e)
        .context("counting possible CPUs")?;
    let values = PerCpuValues::try_from(vec![Counters::default(); cpus])
        .context("building per-CPU values")?;
    map.set(id, values, 0)
        .with_context(|| format!("zeroing counters {id}"))
}

/// Recounts the active connections per backend (`CONNS`, what lc/wlc compare) from the live
/// entries of the connection table: a TCP flow that vanished without a FIN or RST (evicted,
/// idle past its timeout) is not counted any more. The data path keeps the counts up to date
/// as flows start and end; this corrects their drift. Returns how many counts changed.
pub fn recount_connections(maps: &mut Maps, now_ns: u64) -> Result<usize> {
    use std::collections::HashMap;

    let mut live: HashMap<u32, u64> = HashMap::new();
    // Half-open entries count as the data path counts them: a SYN is an active connection.
    let half_open = maps.half_open()?;
    let flows = maps.flows.iter().filter_map(|e| e.ok());
    for (key, flow) in flows.chain(half_open) {
        if flow.is_live(key.proto, now_ns) && flow.is_active(key.proto) {
            *live.entry(flow.backend).or_default() += 1;
        }
    }
    let counts = array_batch(&maps.conns, 0, maps.conns.len())?;
    let mut changed = 0;
    for (id, have) in counts.into_iter().enumerate() {
        let want = live.get(&(id as u32)).copied().unwrap_or(0);
        if have != want {
            maps.conns
                .set(id as u32, want, 0)
                .with_context(|| format!("writing connections {id}"))?;
            changed += 1;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ifindex_past_the_interface_array_is_refused_by_name() {
        check_ifindex("eth0", 2).unwrap();
        check_ifindex("eth0", limits::IFINDEX_SLOTS - 1).unwrap();
        let e = check_ifindex("veth9", limits::IFINDEX_SLOTS).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("veth9 has interface index 65536"), "{msg}");
        assert!(msg.contains("below 65536"), "{msg}");
    }
}
