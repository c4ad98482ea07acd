//! Katran (Meta's XDP load balancer) in the bench's runs, for comparison in the same run:
//! a loader and configuration for an object the user built from Katran's own repository (its
//! `balancer.bpf.o`, XDP program `balancer_ingress`). Nothing of Katran is part of this
//! repository: the structs below describe the interface of its maps (their C layout), as its
//! user space (`KatranLb`) writes them.
//!
//! The configuration is what Katran's user space writes for one IPv4 TCP VIP and one IPv4 UDP
//! VIP with [`REALS`] as their reals:
//! - `ctl_array[0]`: the default gateway's MAC, the destination of every encapsulated packet;
//! - `vip_map`: each VIP (address, port, protocol) to its number and flags (none);
//! - `reals`: real 1 to [`REALS`]`.len()` (index 0 means "no real" to Katran);
//! - `ch_rings`: the VIP's consistent-hash ring (its `RING_SIZE` slots, from
//!   `vip_num * RING_SIZE`), each slot a real's index;
//! - `lru_mapping`: a connection table (LRU hash) per online CPU, the total divided among them
//!   as `KatranLb` divides its LRU size among its forwarding cores. Without one, Katran falls
//!   back to a small shared LRU and counts every such packet.
//!
//! Katran encapsulates every forwarded packet in IPIP (an outer IPv4 header to the real, the
//! gateway's MAC as destination) and returns XDP_TX; packets to no VIP go to the kernel
//! (XDP_PASS). [`check_ipip`] checks an output frame is that.
//!
//! The sizes Katran was built with (`MAX_VIPS`, `RING_SIZE`) are read from its maps, so an
//! object built with other values of those defines is configured right.

use std::{net::Ipv4Addr, path::Path};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, ArrayOfMaps, HashMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{ProgramFd, TestRun, TestRunOptions, Xdp},
};

/// The name of Katran's XDP program in its object.
pub const KATRAN_PROGRAM: &str = "balancer_ingress";

/// The gateway MAC Katran sends every encapsulated packet to (`ctl_array[0]`).
pub const KATRAN_GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

/// The reals of both VIPs, Katran's real indexes 1, 2 and 3 in this order.
pub const REALS: [[u8; 4]; 3] = [[10, 20, 0, 21], [10, 20, 0, 22], [10, 20, 0, 23]];

/// `IPPROTO_IPIP`: the outer header's protocol.
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// `BPF_MAP_TYPE_LRU_HASH`.
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// Katran's `struct vip_definition`: the address (IPv4 in the first 4 bytes), the port in
/// network order, the protocol.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct VipDefinition {
    pub addr: [u8; 16],
    pub port: [u8; 2],
    pub proto: u8,
    pub pad: u8,
}

/// Katran's `struct vip_meta`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct VipMeta {
    pub flags: u32,
    pub vip_num: u32,
}

/// Katran's `struct real_definition`: the real's address (IPv4 in the first 4 bytes), flags
/// (bit 0: IPv6).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct RealDefinition {
    pub addr: [u8; 16],
    pub flags: u8,
    pub pad: [u8; 3],
}

/// Katran's `struct ctl_value` (a union of 8 bytes; index 0 holds a MAC).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct CtlValue {
    pub mac: [u8; 6],
    pub pad: [u8; 2],
}

/// Katran's `struct lb_stats`: two counters whose meaning depends on the index.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct LbStats {
    pub v1: u64,
    pub v2: u64,
}

/// Katran's `struct flow_key`, the key of its connection tables: addresses (IPv4 in the first
/// 4 bytes), ports in network order, protocol.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct KatranFlow {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub pad: [u8; 3],
}

/// Katran's `struct real_pos_lru`: the real's index, the last time (UDP only).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct RealPosLru {
    pub pos: u32,
    pub pad: u32,
    pub atime: u64,
}

// SAFETY: #[repr(C)], Copy, integers and byte arrays only, no implicit padding (the sizes
// below cover every byte).
unsafe impl aya::Pod for VipDefinition {}
unsafe impl aya::Pod for VipMeta {}
unsafe impl aya::Pod for RealDefinition {}
unsafe impl aya::Pod for CtlValue {}
unsafe impl aya::Pod for LbStats {}
unsafe impl aya::Pod for KatranFlow {}
unsafe impl aya::Pod for RealPosLru {}

// Katran's C layouts (aya also checks each map's key and value sizes against the object).
const _: () = assert!(size_of::<VipDefinition>() == 20);
const _: () = assert!(size_of::<VipMeta>() == 8);
const _: () = assert!(size_of::<RealDefinition>() == 20);
const _: () = assert!(size_of::<CtlValue>() == 8);
const _: () = assert!(size_of::<LbStats>() == 16);
const _: () = assert!(size_of::<KatranFlow>() == 40);
const _: () = assert!(size_of::<RealPosLru>() == 16);

/// Indexes of Katran's global counters in `stats`, after the per-VIP ones (`MAX_VIPS + i`).
mod counter {
    /// v1: packets of a VIP that went through the connection table; v2: of them, misses.
    pub const LRU: u32 = 0;
    /// v1: TCP misses of SYNs (new flows); v2: of other packets.
    pub const LRU_MISS: u32 = 1;
    /// v1: new connections in the current one-second window; v2: the window's start (ns).
    pub const NEW_CONN_RATE: u32 = 2;
    /// v1: packets that found no per-CPU connection table and used the shared fallback.
    pub const FALLBACK_LRU: u32 = 3;
    /// v1: ring slot held 0; v2: ring slot held no real.
    pub const CH_DROP: u32 = 9;
    pub const XDP_TOTAL: u32 = 16;
    pub const XDP_TX: u32 = 17;
    pub const XDP_DROP: u32 = 18;
    pub const XDP_PASS: u32 = 19;
}

/// One VIP of the configuration.
pub struct KatranVip {
    pub addr: [u8; 4],
    pub port: u16,
    pub proto: u8,
}

/// The two VIPs: TCP `vip:tcp_port` and UDP `vip:udp_port`, both over [`REALS`].
pub fn katran_vips(vip: [u8; 4], tcp_port: u16, udp_port: u16) -> [KatranVip; 2] {
    [
        KatranVip {
            addr: vip,
            port: tcp_port,
            proto: IPPROTO_TCP,
        },
        KatranVip {
            addr: vip,
            port: udp_port,
            proto: IPPROTO_UDP,
        },
    ]
}

/// Katran's counters this bench reads, summed over CPUs.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct KatranCounts {
    pub total: u64,
    pub tx: u64,
    pub pass: u64,
    pub drop: u64,
    /// Packets of a VIP through the connection table, and of them misses.
    pub lru: u64,
    pub lru_misses: u64,
    /// TCP misses: of SYNs, of other packets.
    pub syn_misses: u64,
    pub non_syn_misses: u64,
    pub fallback: u64,
    pub ch_drops: u64,
}

impl KatranCounts {
    /// What grew from `before` to `self`.
    pub fn since(&self, before: &KatranCounts) -> KatranCounts {
        KatranCounts {
            total: self.total - before.total,
            tx: self.tx - before.tx,
            pass: self.pass - before.pass,
            drop: self.drop - before.drop,
            lru: self.lru - before.lru,
            lru_misses: self.lru_misses - before.lru_misses,
            syn_misses: self.syn_misses - before.syn_misses,
            non_syn_misses: self.non_syn_misses - before.non_syn_misses,
            fallback: self.fallback - before.fallback,
            ch_drops: self.ch_drops - before.ch_drops,
        }
    }
}

/// Katran's object loaded and configured.
pub struct Katran {
    ebpf: Ebpf,
    /// `MAX_VIPS` of the build: the global counters' base index in `stats`.
    max_vips: u32,
    /// `RING_SIZE` of the build.
    pub ring_size: u32,
    /// The per-CPU connection tables, by CPU.
    lrus: Vec<(u32, HashMap<MapData, KatranFlow, RealPosLru>)>,
    /// Entries of each CPU's connection table.
    pub lru_entries: u32,
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Map> {
    ebpf.map_mut(name).with_context(|| {
        format!("Katran's object has no map {name}: is it Katran's balancer.bpf.o?")
    })
}

impl Katran {
    /// Loads Katran's object from `path` (the verifier checks `balancer_ingress`) and
    /// configures `vips` over [`REALS`], with connection tables of `flows` entries in all,
    /// divided among the online CPUs.
    pub fn load(path: &Path, vips: &[KatranVip], flows: u32) -> Result<Katran> {
        let mut ebpf = EbpfLoader::new().load_file(path).with_context(|| {
            format!(
                "loading Katran's object {} (aya could not create its maps or read it)",
                path.display()
            )
        })?;
        let prog: &mut Xdp = ebpf
            .program_mut(KATRAN_PROGRAM)
            .with_context(|| {
                format!(
                    "{} has no program {KATRAN_PROGRAM}: is it Katran's balancer.bpf.o?",
                    path.display()
                )
            })?
            .try_into()
            .with_context(|| format!("{KATRAN_PROGRAM} in {} is not XDP", path.display()))?;
        prog.load().with_context(|| {
            format!(
                "loading {KATRAN_PROGRAM} of {} (the verifier refused it?)",
                path.display()
            )
        })?;
        let stats_len = PerCpuArray::<_, LbStats>::try_from(map(&mut ebpf, "stats")?)
            .context("Katran's stats map")?
            .len();
        // STATS_MAP_SIZE is MAX_VIPS * 2.
        let max_vips = stats_len / 2;
        let ring_len = Array::<_, u32>::try_from(map(&mut ebpf, "ch_rings")?)
            .context("Katran's ch_rings map")?
            .len();
        // CH_RINGS_SIZE is MAX_VIPS * RING_SIZE.
        let ring_size = ring_len / max_vips;
        ensure!(
            ring_size > 0 && vips.len() as u32 <= max_vips,
            "Katran's maps hold {max_vips} VIPs of {ring_size} ring slots; {} VIPs wanted",
            vips.len()
        );
        let mut k = Katran {
            ebpf,
            max_vips,
            ring_size,
            lrus: Vec::new(),
            lru_entries: 0,
        };
        k.configure(vips)?;
        k.add_lrus(flows)?;
        Ok(k)
    }

    fn configure(&mut self, vips: &[KatranVip]) -> Result<()> {
        let mut ctl = Array::<_, CtlValue>::try_from(map(&mut self.ebpf, "ctl_array")?)
            .context("Katran's ctl_array map")?;
        ctl.set(
            0,
            CtlValue {
                mac: KATRAN_GATEWAY_MAC,
                pad: [0; 2],
            },
            0,
        )
        .context("writing the gateway MAC to Katran's ctl_array[0]")?;
        let mut reals = Array::<_, RealDefinition>::try_from(map(&mut self.ebpf, "reals")?)
            .context("Katran's reals map")?;
        for (i, r) in REALS.iter().enumerate() {
            let mut addr = [0; 16];
            addr[..4].copy_from_slice(r);
            reals
                .set(
                    i as u32 + 1,
                    RealDefinition {
                        addr,
                        ..Default::default()
                    },
                    0,
                )
                .with_context(|| format!("writing real {} to Katran's reals", i + 1))?;
        }
        let mut vip_map =
            HashMap::<_, VipDefinition, VipMeta>::try_from(map(&mut self.ebpf, "vip_map")?)
                .context("Katran's vip_map")?;
        for (num, v) in vips.iter().enumerate() {
            vip_map
                .insert(
                    vip_key(v),
                    VipMeta {
                        flags: 0,
                        vip_num: num as u32,
                    },
                    0,
                )
                .with_context(|| format!("writing VIP {num} to Katran's vip_map"))?;
        }
        let ring_size = self.ring_size;
        let mut rings = Array::<_, u32>::try_from(map(&mut self.ebpf, "ch_rings")?)
            .context("Katran's ch_rings map")?;
        for num in 0..vips.len() as u32 {
            // Any spread of the reals serves; Katran's user space computes it with Maglev.
            for slot in 0..ring_size {
                rings
                    .set(num * ring_size + slot, slot % REALS.len() as u32 + 1, 0)
                    .with_context(|| {
                        format!("writing slot {slot} of VIP {num}'s ring to Katran's ch_rings")
                    })?;
            }
        }
        Ok(())
    }

    /// A connection table per online CPU in `lru_mapping`, as `KatranLb` makes one per
    /// forwarding core: `flows` entries divided among them.
    fn add_lrus(&mut self, flows: u32) -> Result<()> {
        let cpus =
            aya::util::online_cpus().map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))?;
        let entries = flows / cpus.len().max(1) as u32;
        let mut outer = ArrayOfMaps::<_, MapData>::try_from(map(&mut self.ebpf, "lru_mapping")?)
            .context("Katran's lru_mapping map")?;
        for cpu in cpus {
            let def = aya_obj::Map::new_from_params(
                BPF_MAP_TYPE_LRU_HASH,
                size_of::<KatranFlow>() as u32,
                size_of::<RealPosLru>() as u32,
                entries,
                0,
            );
            let md = MapData::create(def, &format!("katran_lru{cpu}"), None)
                .with_context(|| format!("creating Katran's connection table for CPU {cpu}"))?;
            outer
                .set(cpu, &md, 0)
                .with_context(|| format!("putting CPU {cpu}'s table in Katran's lru_mapping"))?;
            let table = HashMap::try_from(Map::LruHashMap(md))
                .with_context(|| format!("CPU {cpu}'s connection table"))?;
            self.lrus.push((cpu, table));
        }
        self.lru_entries = entries;
        Ok(())
    }

    /// A copy of `balancer_ingress`'s fd, to put behind the bench's restore program.
    pub fn fd(&mut self) -> Result<ProgramFd> {
        self.program()?
            .fd()
            .context("Katran's program fd")?
            .try_clone()
            .context("copying Katran's program fd")
    }

    fn program(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(KATRAN_PROGRAM)
            .context(KATRAN_PROGRAM)?
            .try_into()?)
    }

    /// Runs `frame` once through Katran: its action and output frame.
    pub fn run(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let mut out = vec![0u8; frame.len() + 256];
        let r = self
            .program()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: 1,
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_TEST_RUN of Katran")?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    fn stats(&mut self) -> Result<PerCpuArray<&mut MapData, LbStats>> {
        PerCpuArray::try_from(map(&mut self.ebpf, "stats")?).context("Katran's stats map")
    }

    fn global(&mut self, counter: u32) -> Result<LbStats> {
        let index = self.max_vips + counter;
        let values = self
            .stats()?
            .get(&index, 0)
            .with_context(|| format!("reading Katran's stats[{index}]"))?;
        Ok(values.iter().fold(LbStats::default(), |a, v| LbStats {
            v1: a.v1 + v.v1,
            v2: a.v2 + v.v2,
        }))
    }

    /// Katran's counters, summed over CPUs.
    pub fn counts(&mut self) -> Result<KatranCounts> {
        let lru = self.global(counter::LRU)?;
        let miss = self.global(counter::LRU_MISS)?;
        Ok(KatranCounts {
            total: self.global(counter::XDP_TOTAL)?.v1,
            tx: self.global(counter::XDP_TX)?.v1,
            pass: self.global(counter::XDP_PASS)?.v1,
            drop: self.global(counter::XDP_DROP)?.v1,
            lru: lru.v1,
            lru_misses: lru.v2,
            syn_misses: miss.v1,
            non_syn_misses: miss.v2,
            fallback: self.global(counter::FALLBACK_LRU)?.v1,
            ch_drops: {
                let c = self.global(counter::CH_DROP)?;
                c.v1 + c.v2
            },
        })
    }

    /// Starts Katran's new-connection window on `cpu` afresh (no new connection counted, the
    /// window starting now), so that the next runs are below its SYN-flood threshold until
    /// they make that many new connections within a second.
    pub fn reset_conn_rate(&mut self, cpu: u32) -> Result<()> {
        self.set_conn_rate(cpu, 0)
    }

    fn set_conn_rate(&mut self, cpu: u32, count: u64) -> Result<()> {
        let index = self.max_vips + counter::NEW_CONN_RATE;
        let mut stats = self.stats()?;
        let mut values: Vec<LbStats> = stats.get(&index, 0)?.iter().copied().collect();
        let slot = values
            .get_mut(cpu as usize)
            .with_context(|| format!("no CPU {cpu} in Katran's stats"))?;
        *slot = LbStats {
            v1: count,
            v2: monotonic_ns()?,
        };
        stats
            .set(index, PerCpuValues::try_from(values)?, 0)
            .context("writing Katran's new-connection window")
    }

    /// The new connections Katran counted in its current window on `cpu`.
    pub fn conn_rate_count(&mut self, cpu: u32) -> Result<u64> {
        let index = self.max_vips + counter::NEW_CONN_RATE;
        let values = self.stats()?.get(&index, 0)?;
        Ok(values.get(cpu as usize).map_or(0, |v| v.v1))
    }

    /// The real index of `flow` in `cpu`'s connection table.
    pub fn lru_entry(&self, cpu: u32, flow: &KatranFlow) -> Option<u32> {
        let (_, table) = self.lrus.iter().find(|(c, _)| *c == cpu)?;
        table.get(flow, 0).ok().map(|v| v.pos)
    }

    fn lru_remove(&mut self, cpu: u32, flow: &KatranFlow) {
        if let Some((_, table)) = self.lrus.iter_mut().find(|(c, _)| *c == cpu) {
            let _ = table.remove(flow);
        }
    }

    /// Katran's new-connection limit per second and CPU (`MAX_CONN_RATE`, 125,000 in its
    /// default build): from that many new connections in a window on, it takes the traffic
    /// for a SYN flood and stops writing new flows to its connection table. Found by running
    /// `syn` (a SYN to a VIP, on `cpu`) with the window's count set to each candidate and
    /// looking for its flow in the table; `None` when even 2^32 new connections are below it.
    pub fn conn_rate_limit(&mut self, cpu: u32, syn: &[u8]) -> Result<Option<u64>> {
        let flow = katran_flow(syn)?;
        // Whether a SYN with `count` connections already in the window writes its flow.
        let writes = |k: &mut Katran, count: u64| -> Result<bool> {
            k.lru_remove(cpu, &flow);
            k.set_conn_rate(cpu, count)?;
            let (action, _) = k.run(syn)?;
            if action != crate::packet::XDP_TX {
                bail!("Katran returned {action} for a SYN to its VIP, expected XDP_TX");
            }
            Ok(k.lru_entry(cpu, &flow).is_some())
        };
        if !writes(self, 0)? {
            bail!(
                "Katran did not write a SYN's flow to CPU {cpu}'s connection table with no \
                 new connection counted: is lru_mapping in use?"
            );
        }
        let (mut lo, mut hi) = (0u64, 1u64 << 32);
        if writes(self, hi)? {
            self.reset_conn_rate(cpu)?;
            return Ok(None);
        }
        // writes(lo), !writes(hi): the limit is lo + 1 for the last lo that writes.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if writes(self, mid)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.reset_conn_rate(cpu)?;
        Ok(Some(lo + 1))
    }
}

fn vip_key(v: &KatranVip) -> VipDefinition {
    let mut addr = [0; 16];
    addr[..4].copy_from_slice(&v.addr);
    VipDefinition {
        addr,
        port: v.port.to_be_bytes(),
        proto: v.proto,
        pad: 0,
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error()).context("clock_gettime(CLOCK_MONOTONIC)");
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Katran's connection-table key of an untagged IPv4 TCP or UDP frame to a port-specific VIP.
pub fn katran_flow(frame: &[u8]) -> Result<KatranFlow> {
    let ip = frame
        .get(14..34)
        .context("a frame too short for Ethernet and IPv4")?;
    ensure!(
        frame[12..14] == [0x08, 0x00] && ip[0] == 0x45,
        "not an untagged IPv4 frame without options"
    );
    let l4 = frame.get(34..38).context("no transport ports")?;
    let mut flow = KatranFlow {
        proto: ip[9],
        ..Default::default()
    };
    flow.src[..4].copy_from_slice(&ip[12..16]);
    flow.dst[..4].copy_from_slice(&ip[16..20]);
    flow.sport.copy_from_slice(&l4[..2]);
    flow.dport.copy_from_slice(&l4[2..4]);
    Ok(flow)
}

/// Checks that `out` is `input` (an untagged IPv4 frame) as Katran forwards it: an outer IPv4
/// header of protocol IPIP to one of [`REALS`] pushed in front of the IP packet, which is
/// unchanged but for the source port (a new-flow row varies it), in a frame to
/// [`KATRAN_GATEWAY_MAC`]. Returns the real's address.
pub fn check_ipip(input: &[u8], out: &[u8]) -> Result<Ipv4Addr> {
    ensure!(
        out.len() == input.len() + 20,
        "Katran's output is {} bytes, expected {} (the {}-byte frame and a 20-byte outer IPv4 \
         header)",
        out.len(),
        input.len() + 20,
        input.len()
    );
    ensure!(
        out[..6] == KATRAN_GATEWAY_MAC && out[12..14] == [0x08, 0x00],
        "Katran's output is not an IPv4 frame to the gateway MAC: {:02x?}",
        &out[..14]
    );
    let outer = &out[14..34];
    ensure!(
        outer[0] == 0x45 && outer[9] == IPPROTO_IPIP,
        "Katran's outer header is not IPv4 of protocol IPIP: {outer:02x?}"
    );
    let real: [u8; 4] = outer[16..20].try_into()?;
    ensure!(
        REALS.contains(&real),
        "Katran's outer destination {} is none of its reals",
        Ipv4Addr::from(real)
    );
    let total = u16::from_be_bytes([outer[2], outer[3]]) as usize;
    ensure!(
        total == input.len() - 14 + 20,
        "Katran's outer total length is {total}, expected {}",
        input.len() - 14 + 20
    );
    // The inner packet: the input's IP packet, the source port aside.
    let (inner, original) = (&out[34..], &input[14..]);
    let differs: Vec<usize> = (0..original.len())
        .filter(|&i| inner[i] != original[i] && !(20..22).contains(&i))
        .collect();
    ensure!(
        differs.is_empty(),
        "Katran changed the inner packet at byte(s) {differs:?} of its IP header and payload"
    );
    Ok(Ipv4Addr::from(real))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Vec<u8> {
        crate::packet::tcp_frame(
            (crate::packet::CLIENT_MAC, crate::packet::DIRECTOR_MAC),
            ([192, 168, 58, 100], 40000),
            ([192, 168, 58, 133], 80),
            "A",
        )
    }

    /// What Katran's encapsulation leaves: the gateway MAC, an outer IPIP header to a real.
    fn encapsulated(input: &[u8], real: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&KATRAN_GATEWAY_MAC);
        out.extend_from_slice(&input[..6]);
        out.extend_from_slice(&[0x08, 0x00]);
        let total = (input.len() - 14 + 20) as u16;
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[8] = 64;
        ip[9] = IPPROTO_IPIP;
        ip[12..16].copy_from_slice(&[172, 16, 0, 1]);
        ip[16..20].copy_from_slice(&real);
        out.extend_from_slice(&ip);
        out.extend_from_slice(&input[14..]);
        out
    }

    #[test]
    fn ipip_to_a_real_passes() {
        let f = frame();
        let real = check_ipip(&f, &encapsulated(&f, REALS[1])).expect("a good encapsulation");
        assert_eq!(real, Ipv4Addr::from(REALS[1]));
    }

    #[test]
    fn ipip_checks_fail_on_what_katran_must_not_do() {
        let f = frame();
        // To an address that is no real.
        assert!(check_ipip(&f, &encapsulated(&f, [10, 20, 0, 99])).is_err());
        // Not encapsulated at all (the frame as it came).
        assert!(check_ipip(&f, &f).is_err());
        // Not IPIP.
        let mut gre = encapsulated(&f, REALS[0]);
        gre[14 + 9] = 47;
        assert!(check_ipip(&f, &gre).is_err());
        // The inner destination changed.
        let mut moved = encapsulated(&f, REALS[0]);
        moved[34 + 19] ^= 1;
        assert!(check_ipip(&f, &moved).is_err());
        // The source port may change (a new-flow row varies it).
        let mut sport = encapsulated(&f, REALS[0]);
        sport[34 + 20] ^= 1;
        assert!(check_ipip(&f, &sport).is_ok());
    }

    #[test]
    fn flow_key_of_a_frame() {
        let k = katran_flow(&frame()).expect("a key");
        assert_eq!(&k.src[..4], &[192, 168, 58, 100]);
        assert_eq!(&k.dst[..4], &[192, 168, 58, 133]);
        assert_eq!(k.sport, 40000u16.to_be_bytes());
        assert_eq!(k.dport, 80u16.to_be_bytes());
        assert_eq!(k.proto, IPPROTO_TCP);
        assert_eq!(k.src[4..], [0; 12]);
    }
}
