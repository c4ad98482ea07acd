//! The half-open table (`SYNS`) and the new-entry budget (`SETTINGS`, `BUDGET`) from the
//! harness: filling the table to what it can hold, counting its entries, setting the budget and
//! spending it, and the CPU pinning both need; the connection table (`FLOWS`) filled the same
//! way, for the bench's rows with a million connections.
//!
//! `SYNS` is an array of slots (`lb_common::HalfOpen`): it is full when every slot holds a
//! half-open entry, and a fill writes every slot.
//!
//! `FLOWS` is an LRU map with per-CPU lists (`BPF_F_NO_COMMON_LRU`): each possible CPU holds
//! `max_entries / possible CPUs` entries, and an insert, by the data path or by a map update
//! from user space, takes a free entry of the CPU it runs on, evicting that CPU's least
//! recently used ones when it has none (up to 4 at a time, the kernel's `PERCPU_FREE_TARGET`).
//! So the table is full when every online CPU's share is, and a thread fills a share by
//! writing from that CPU.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, Result, bail};
use aya::maps::PerCpuValues;
use aya::util::{nr_cpus, online_cpus};
use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
use lb_common::{
    Budget, Flow, FlowKey, HalfOpen, PROTO_TCP, PROTO_UDP, ServiceKey, Settings, TcpState,
};
use lb_ctl::maps::{array_update_batch, hash_batch, view::now_ns};
use lb_ctl::plan::convert::addr_of;

use super::Harness;
use crate::icmp::{backend_ids, service_entry};

/// Entries an LRU map with per-CPU lists may free at once when a CPU's share is full: a full
/// table reads as up to this many entries short per online CPU.
pub const LRU_FREE_BATCH: usize = 4;

/// The first source address of the entries [`Harness::fill_syns`] writes (10.200.0.0 on):
/// no client of the tests or the bench sends from there, so no packet finds them.
pub const FILL_CLIENTS: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 0);

/// The first source address of the entries [`Harness::fill_flows`] writes (10.210.0.0 on,
/// 18 addresses for 1,048,576 entries): no client of the tests or the bench sends from there.
pub const FLOW_FILL_CLIENTS: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 0);

/// How often [`Harness::fill_flows`] reports its progress, in entries written.
pub const FILL_PROGRESS_EVERY: usize = 1 << 18;

/// Whether `key` is one a fill from `first` writes: its client in the /16 from `first` on.
fn filled_from(first: Ipv4Addr, key: &FlowKey) -> bool {
    let first = u32::from(first);
    match lb_ctl::plan::convert::addr_ip(&key.src) {
        IpAddr::V4(a) => (first..first + (1 << 16)).contains(&u32::from(a)),
        IpAddr::V6(_) => false,
    }
}

/// The `i`th key of a fill of TCP flows to `vip` from `first` on (60,000 ports a client).
fn fill_key(first: Ipv4Addr, i: u32, vip: &ServiceKey) -> FlowKey {
    let src = Ipv4Addr::from(u32::from(first) + i / 60_000);
    FlowKey {
        src: addr_of(IpAddr::V4(src)),
        dst: vip.addr,
        sport: (1024 + (i % 60_000) as u16).to_be(),
        dport: vip.port,
        proto: PROTO_TCP,
        _pad: [0; 3],
    }
}

/// The `FLOWS`/`SYNS` key of a TCP or UDP frame (Ethernet, an optional 802.1Q tag, IPv4 or
/// IPv6): the client's side of the flow.
pub fn flow_key_of(frame: &[u8]) -> Result<FlowKey> {
    let h = PacketHeaders::from_ethernet_slice(frame).context("parsing the frame")?;
    let (src, dst) = match &h.net {
        Some(NetHeaders::Ipv4(ip, _)) => (IpAddr::from(ip.source), IpAddr::from(ip.destination)),
        Some(NetHeaders::Ipv6(ip, _)) => (IpAddr::from(ip.source), IpAddr::from(ip.destination)),
        _ => bail!("a frame without an IP header"),
    };
    let (sport, dport, proto) = match &h.transport {
        Some(TransportHeader::Tcp(t)) => (t.source_port, t.destination_port, PROTO_TCP),
        Some(TransportHeader::Udp(u)) => (u.source_port, u.destination_port, PROTO_UDP),
        _ => bail!("a frame that is neither TCP nor UDP"),
    };
    Ok(FlowKey {
        src: addr_of(src),
        dst: addr_of(dst),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        _pad: [0; 3],
    })
}

/// The CPUs the calling thread may run on.
fn affinity() -> Result<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; the call writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
    }
    Ok(set)
}

fn set_affinity(set: &libc::cpu_set_t) -> Result<()> {
    // SAFETY: a valid set of the size given.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
    }
    Ok(())
}

/// Pins the calling thread to `cpu` until dropped, which gives it back the CPUs it had.
pub struct Pinned {
    before: libc::cpu_set_t,
    pub cpu: u32,
}

impl Pinned {
    pub fn to(cpu: u32) -> Result<Pinned> {
        let before = affinity()?;
        // SAFETY: as in `affinity`; CPU_SET stays within the set for cpu < CPU_SETSIZE.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        if cpu as usize >= libc::CPU_SETSIZE as usize {
            bail!("CPU {cpu} is beyond what a cpu_set_t holds");
        }
        unsafe { libc::CPU_SET(cpu as usize, &mut set) };
        set_affinity(&set).with_context(|| format!("pinning the thread to CPU {cpu}"))?;
        Ok(Pinned { before, cpu })
    }

    /// Pins the calling thread to the CPU it runs on now.
    pub fn here() -> Result<Pinned> {
        // SAFETY: no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        let cpu = u32::try_from(cpu)
            .map_err(|_| std::io::Error::last_os_error())
            .context("sched_getcpu")?;
        Pinned::to(cpu)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = set_affinity(&self.before);
    }
}

fn online() -> Result<Vec<u32>> {
    online_cpus().map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))
}

fn possible() -> Result<usize> {
    nr_cpus().map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))
}

impl Harness {
    /// Entries of the half-open table whose client is `src`.
    pub fn syns_from(&self, src: IpAddr) -> usize {
        let src = addr_of(src);
        self.half_open_entries()
            .iter()
            .filter(|(k, _)| k.src == src)
            .count()
    }

    /// The half-open table's entries (slots in the SYN state, live or not).
    pub fn half_open_entries(&self) -> Vec<(FlowKey, Flow)> {
        self.maps.half_open().expect("reading SYNS")
    }

    /// Empties the half-open table (every slot); the connection table keeps its entries.
    pub fn clear_half_open(&mut self) -> Result<()> {
        let empty = vec![HalfOpen::default(); self.maps.syns.len() as usize];
        array_update_batch(&self.maps.syns, 0, &empty).context("emptying SYNS")?;
        match self.half_open_count() {
            0 => Ok(()),
            n => bail!("{n} entries left in SYNS after emptying every slot"),
        }
    }

    /// Whether the half-open table holds `key`.
    pub fn in_syns(&self, key: &FlowKey) -> bool {
        self.maps.half_open_entry(key).is_some()
    }

    /// Whether the connection table (established entries) holds `key`.
    pub fn in_flows(&self, key: &FlowKey) -> bool {
        self.maps.flows.get(key, 0).is_ok()
    }

    /// The entry of the half-open table of `key`, if any.
    pub fn syn_entry(&self, key: &FlowKey) -> Option<Flow> {
        self.maps.half_open_entry(key)
    }

    /// The most the half-open table can hold: one entry a slot.
    pub fn syns_reachable(&self) -> Result<usize> {
        Ok(self.maps.syns_capacity().context("SYNS capacity")? as usize)
    }

    /// Whether the half-open table is full: every slot holds a half-open entry.
    pub fn syns_full(&self) -> Result<bool> {
        Ok(self.half_open_count() >= self.syns_reachable()?)
    }

    /// Fills the half-open table: every slot gets a half-open entry of a TCP flow to
    /// `service` from [`FILL_CLIENTS`] on, on its first backend, last seen now (its key is
    /// one no packet sends, so only a SYN that takes its slot removes it). Returns the entries
    /// written; the table is then full ([`Harness::syns_full`]), whatever it held before.
    pub fn fill_syns(&mut self, service: &str) -> Result<usize> {
        let (key, s) = service_entry(self, service);
        let backend = *backend_ids(self, s.id)
            .first()
            .with_context(|| format!("service {service} has no backend"))?;
        let flow = Flow {
            last_seen_ns: now_ns(),
            backend,
            service_id: s.id,
            state: TcpState::Syn as u8,
            _pad: [0; 7],
        };
        let slots: Vec<HalfOpen> = (0..self.maps.syns.len())
            .map(|i| HalfOpen {
                key: fill_key(FILL_CLIENTS, i, &key),
                flow,
            })
            .collect();
        array_update_batch(&self.maps.syns, 0, &slots).context("filling SYNS")?;
        Ok(slots.len())
    }

    /// Fills the connection table as [`Harness::fill_syns`] fills the half-open one: on each
    /// online CPU, a CPU's share of `FLOWS` of established TCP flows to `service` from
    /// [`FLOW_FILL_CLIENTS`] on. `progress` is told (entries written, entries to write) after
    /// each CPU's share and every [`FILL_PROGRESS_EVERY`] entries. Returns the entries written.
    pub fn fill_flows(
        &mut self,
        service: &str,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<usize> {
        self.fill_lru(service, progress)
    }

    /// The most the connection table can hold from the online CPUs (as
    /// [`Harness::syns_reachable`] for the half-open table).
    pub fn flows_reachable(&self) -> Result<usize> {
        Ok(self.flow_capacity() as usize / possible()? * online()?.len())
    }

    /// Entries of the connection table from [`FLOW_FILL_CLIENTS`] on (what
    /// [`Harness::fill_flows`] wrote and nothing evicted yet).
    pub fn flow_fill_entries(&self) -> Result<usize> {
        Ok(hash_batch(&self.maps.flows)
            .context("reading FLOWS")?
            .iter()
            .filter(|(k, _)| filled_from(FLOW_FILL_CLIENTS, k))
            .count())
    }

    /// Removes what [`Harness::fill_flows`] wrote from the connection table (the other
    /// entries stay); returns how many it removed.
    pub fn clear_flow_fill(&mut self) -> Result<usize> {
        let keys: Vec<FlowKey> = hash_batch(&self.maps.flows)
            .context("reading FLOWS")?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| filled_from(FLOW_FILL_CLIENTS, k))
            .collect();
        for k in &keys {
            // An entry evicted in between is gone all the same.
            let _ = self.maps.flows.remove(k);
        }
        Ok(keys.len())
    }

    /// Writes a CPU's share of `FLOWS` from each online CPU (see [`Harness::fill_flows`]).
    fn fill_lru(&mut self, service: &str, progress: &mut dyn FnMut(usize, usize)) -> Result<usize> {
        let (key, s) = service_entry(self, service);
        let backend = *backend_ids(self, s.id)
            .first()
            .with_context(|| format!("service {service} has no backend"))?;
        let capacity = self.maps.flows_capacity().context("FLOWS capacity")?;
        let state = TcpState::Established;
        let share = capacity as usize / possible()?;
        let cpus = online()?;
        let total = share * cpus.len();
        let mut written = 0usize;
        for cpu in cpus {
            let _pinned = Pinned::to(cpu)?;
            let flow = Flow {
                last_seen_ns: now_ns(),
                backend,
                service_id: s.id,
                state: state as u8,
                _pad: [0; 7],
            };
            for _ in 0..share {
                let i = u32::try_from(written).context("too many entries")?;
                let k = fill_key(FLOW_FILL_CLIENTS, i, &key);
                self.maps
                    .insert_flow(&k, &flow)
                    .with_context(|| format!("writing entry {written} of {total} into FLOWS"))?;
                written += 1;
                if written.is_multiple_of(FILL_PROGRESS_EVERY) {
                    progress(written, total);
                }
            }
            progress(written, total);
        }
        Ok(written)
    }

    /// Entries of the half-open table from [`FILL_CLIENTS`] on (what
    /// [`Harness::fill_syns`] wrote and no packet evicted yet).
    pub fn fill_entries(&self) -> usize {
        self.half_open_entries()
            .iter()
            .filter(|(k, _)| filled_from(FILL_CLIENTS, k))
            .count()
    }

    /// Sets the budget of new entries per CPU and second (`SETTINGS.new_flows_per_cpu`; 0 = no
    /// limit), as `lb-ctl apply` writes it.
    pub fn set_new_flows_per_cpu(&mut self, limit: u32) -> Result<()> {
        self.maps
            .settings
            .set(
                0,
                Settings {
                    new_flows_per_cpu: limit,
                    _pad: 0,
                },
                0,
            )
            .context("writing SETTINGS")
    }

    /// Gives every CPU a fresh budget: its next new entry starts a new window.
    pub fn refill_budget(&mut self) -> Result<()> {
        let fresh = vec![Budget::default(); possible()?];
        let values = PerCpuValues::try_from(fresh).context("per-CPU values")?;
        self.maps.budget.set(0, values, 0).context("writing BUDGET")
    }

    /// Spends every CPU's budget for the window that starts now: until a second has passed,
    /// each packet that would make an entry is over budget (with any limit of at most
    /// `u32::MAX`).
    pub fn spend_budget(&mut self) -> Result<()> {
        let spent = Budget {
            window_start_ns: now_ns(),
            used: u64::from(u32::MAX),
        };
        let values = PerCpuValues::try_from(vec![spent; possible()?]).context("per-CPU values")?;
        self.maps.budget.set(0, values, 0).context("writing BUDGET")
    }
}
