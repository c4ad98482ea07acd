//! The packet-level harness: the real XDP program loaded without attaching it, its maps
//! filled by `lb_ctl::maps::apply` (the code `lb-ctl apply` runs), frames run with
//! BPF_PROG_TEST_RUN. Services of both families come from a service file, as `lb-ctl apply`
//! reads it; frames of both families, with extension headers and fragments, come from
//! [`frames`].

mod bench;
mod frames;
mod halfopen;
mod katran;
mod tunnel;

pub use bench::*;
pub use frames::*;
pub use halfopen::*;
pub use katran::*;
pub use tunnel::*;

use std::{collections::HashMap, net::IpAddr};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    maps::PerCpuValues,
    programs::{TestRun, TestRunOptions},
    util::nr_cpus,
};
use lb_common::{Counters, FlowKey, Frag, FragKey, Reason, ServiceKey, names, v4_mapped};
use lb_ctl::{
    maps::loader::{self, Sizes},
    maps::{self, Maps},
    plan::{self, Macs, Plan, Resolved, convert},
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// The director's MAC: frames to a VIP must be addressed to it.
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 134];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 100];
/// The MACs of backends 192.168.58.135 to .138 (and fd00:58::135 to ::138), in that order.
/// Other addresses are unresolved.
pub const BACKEND_MACS: [[u8; 6]; 4] = [
    [0x02, 0, 0, 0, 0, 135],
    [0x02, 0, 0, 0, 0, 136],
    [0x02, 0, 0, 0, 0, 137],
    [0x02, 0, 0, 0, 0, 138],
];

/// An Ethernet + IPv4 + TCP frame without payload; `flags` is any of `S`, `A`, `F`, `R`, `P`
/// (SYN, ACK, FIN, RST, PSH). Checksums are computed, so a real host accepts it.
pub fn tcp_frame(
    macs: ([u8; 6], [u8; 6]),
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    flags: &str,
) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, 1, 64240);
    let b = with_tcp_flags(b, flags);
    let mut v = Vec::with_capacity(54);
    b.write(&mut v, &[])
        .expect("a TCP frame without payload always fits");
    v
}

/// Sets the TCP flags named in `flags`: any of `S`, `A`, `F`, `R`, `P`.
pub fn with_tcp_flags(
    mut b: etherparse::PacketBuilderStep<etherparse::TcpHeader>,
    flags: &str,
) -> etherparse::PacketBuilderStep<etherparse::TcpHeader> {
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(1),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            _ => panic!("TCP flag {f:?}: use S, A, F, R or P"),
        };
    }
    b
}

/// The frame the director must send for `input`: only the MACs differ, the destination set to
/// the backend's `mac` and the source to the director's.
pub fn forwarded(input: &[u8], mac: [u8; 6]) -> Vec<u8> {
    let mut out = input.to_vec();
    out[0..6].copy_from_slice(&mac);
    out[6..12].copy_from_slice(&DIRECTOR_MAC);
    out
}

/// Which of [`BACKEND_MACS`] `input` was sent to; asserts it was forwarded (XDP_TX) with only
/// its MACs changed.
pub fn backend_of(input: &[u8], out: &Output) -> usize {
    assert_eq!(out.action, XDP_TX, "forwarded");
    let i = BACKEND_MACS
        .iter()
        .position(|m| m[..] == out.data[0..6])
        .expect("a known backend MAC");
    assert_eq!(out.data, forwarded(input, BACKEND_MACS[i]));
    i
}

/// Fails the test, saying what is missing, unless this process may load BPF programs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test loads BPF programs and needs root (or CAP_BPF + CAP_NET_ADMIN); \
             run `cargo xtask test` as root"
        );
    }
}

/// What came out of one run.
#[derive(Debug)]
pub struct Output {
    pub action: u32,
    pub data: Vec<u8>,
}

/// Runs `frame` through `prog` once with BPF_PROG_TEST_RUN.
pub fn test_run(prog: &mut aya::programs::Xdp, frame: &[u8]) -> Result<Output> {
    let mut out = vec![0u8; frame.len() + 4096];
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN")?;
    if res.data_size_out as usize > out.len() {
        bail!("the kernel wrote {} bytes", res.data_size_out);
    }
    out.truncate(res.data_size_out as usize);
    Ok(Output {
        action: res.return_value,
        data: out,
    })
}

pub struct Harness {
    ebpf: Ebpf,
    maps: Maps,
    last_plan: Plan,
}

/// The outer source of a test's tunnel backends that configure none (as the kernel's route
/// would give it): the director's address of the backend's family.
pub const TUNNEL_SOURCES: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 58, 134)),
    IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 0x134)),
];

/// Route backends' MACs ([`BACKEND_MACS`]) and tunnel backends' sources ([`TUNNEL_SOURCES`]).
fn resolved_for(config: &lb_ctl::config::Config) -> Resolved {
    let sources = config
        .services
        .iter()
        .flat_map(|s| &s.backends)
        .filter(|b| b.forward.tunnel().is_some())
        .map(|b| {
            (
                b.address,
                Ok(TUNNEL_SOURCES[usize::from(b.address.is_ipv6())]),
            )
        })
        .collect();
    Resolved {
        macs: macs_for(config),
        sources,
    }
}

fn macs_for(config: &lb_ctl::config::Config) -> Macs {
    let mut macs = HashMap::new();
    for s in &config.services {
        for b in &s.backends {
            // .135-.138 of 192.168.58.0/24 or fd00:58::/64 (the lab's IPv6 subnet).
            let last = match b.address {
                IpAddr::V4(a) if a.octets()[..3] == [192, 168, 58] => Some(a.octets()[3]),
                IpAddr::V6(a) if a.segments()[..7] == [0xfd00, 0x58, 0, 0, 0, 0, 0] => {
                    format!("{:x}", a.segments()[7]).parse::<u8>().ok()
                }
                _ => None,
            };
            let mac = match last {
                Some(d @ 135..=138) => Ok(BACKEND_MACS[(d - 135) as usize]),
                _ => Err("no neighbour entry".to_string()),
            };
            macs.insert(b.address, mac);
        }
    }
    macs
}

/// The map sizes of [`Harness::new`]: tables small enough for a test to fill quickly.
pub const TEST_SIZES: Sizes = Sizes {
    table_entries: 1 << 18,
    flows: 4096,
    syns: 4096,
};

impl Harness {
    /// Loads the program with small maps ([`TEST_SIZES`]) and registers the loopback device
    /// (which test runs arrive on) with [`DIRECTOR_MAC`].
    pub fn new() -> Harness {
        Harness::sized(&TEST_SIZES)
    }

    /// [`Harness::new`] with the maps of `sizes`.
    pub fn sized(sizes: &Sizes) -> Harness {
        require_root();
        let mut ebpf = loader::load(sizes, None).expect("loading the XDP program");
        let mut maps = Maps::from_ebpf(&mut ebpf).expect("opening the maps");
        let lo = lb_ctl::net::link::ifindex("lo").expect("the loopback device");
        maps.register_iface("lo", lo, DIRECTOR_MAC)
            .expect("registering lo");
        Harness {
            ebpf,
            maps,
            last_plan: Plan::default(),
        }
    }

    pub fn with_config(yaml: &str) -> Harness {
        Harness::with_config_sized(yaml, &TEST_SIZES)
    }

    /// [`Harness::with_config`] with the maps of `sizes`.
    pub fn with_config_sized(yaml: &str, sizes: &Sizes) -> Harness {
        let mut h = Harness::sized(sizes);
        h.apply(yaml);
        h
    }

    /// Applies a service file, as `lb-ctl apply` does, with backend MACs from
    /// [`BACKEND_MACS`].
    pub fn apply(&mut self, yaml: &str) -> Plan {
        let config = lb_ctl::config::parse(yaml, "test.yaml")
            .unwrap_or_else(|e| panic!("test config does not parse:\n{e}"));
        let plan = maps::apply(
            &mut self.maps,
            &config,
            &resolved_for(&config),
            &plan::Down::new(),
            false,
        )
        .expect("applying the test config");
        self.last_plan = plan.clone();
        plan
    }

    /// Applies a service file with some backends (of either family) held down, as the health
    /// checker does.
    pub fn apply_with_down<A: Into<IpAddr> + Copy>(
        &mut self,
        yaml: &str,
        down: &[(&str, A)],
    ) -> Plan {
        let config = lb_ctl::config::parse(yaml, "test.yaml")
            .unwrap_or_else(|e| panic!("test config does not parse:\n{e}"));
        let down: plan::Down = down
            .iter()
            .map(|(s, a)| ((s.to_string(), (*a).into()), "test".to_string()))
            .collect();
        let plan = maps::apply(
            &mut self.maps,
            &config,
            &resolved_for(&config),
            &down,
            false,
        )
        .expect("applying the test config");
        self.last_plan = plan.clone();
        plan
    }

    /// Empties the connection table and the half-open table, and the flow caches with them
    /// (a new generation), as a control plane that deletes flows must.
    pub fn clear_flows(&mut self) {
        let keys: Vec<FlowKey> = self.maps.flows.keys().filter_map(|k| k.ok()).collect();
        for k in keys {
            let _ = self.maps.flows.remove(&k);
        }
        self.clear_half_open().expect("emptying SYNS");
        self.maps.bump_generation().expect("bumping GENERATION");
    }

    /// Removes the TCP flow `client:sport -> VIP:dport` from the connection table or the
    /// half-open table, as an eviction would, and empties the flow caches (a new generation:
    /// an evicted flow's slot would otherwise serve it for up to a second); returns whether
    /// it was there.
    pub fn remove_flow(&mut self, client: [u8; 4], sport: u16, dport: u16) -> bool {
        let key = flow_key(client, sport, dport);
        let established = self.maps.flows.remove(&key).is_ok();
        let half_open = self
            .maps
            .remove_half_open(&key)
            .expect("emptying a SYNS slot");
        self.maps.bump_generation().expect("bumping GENERATION");
        established || half_open
    }

    /// The flow-cache slots (of any CPU) that hold `key`, as (CPU, slot).
    pub fn cached(&self, key: &FlowKey) -> Vec<(usize, lb_common::CachedFlow)> {
        let slot = lb_common::cache_slot(key);
        per_cpu_slot(&self.maps.flow_cache, slot, names::FLOW_CACHE, |c| {
            c.key == *key && c.fresh_until != 0
        })
    }

    /// The service-cache slots (of any CPU) filled for `key`, as (CPU, slot).
    pub fn cached_service(&self, key: &ServiceKey) -> Vec<(usize, lb_common::CachedService)> {
        let slot = lb_common::service_cache_slot(key);
        per_cpu_slot(&self.maps.service_cache, slot, names::SERVICE_CACHE, |c| {
            c.key == *key && c.filled != 0
        })
    }

    /// `GENERATION[0]`: what a slot's generation must be for the data path to trust it.
    pub fn generation(&self) -> u32 {
        self.maps.generation.get(&0, 0).expect("reading GENERATION")
    }

    pub fn flow_capacity(&self) -> u32 {
        self.maps.flows_capacity().expect("FLOWS capacity")
    }

    /// Entries of the connection table and the half-open table together.
    pub fn flow_count(&self) -> usize {
        self.established_count() + self.half_open_count()
    }

    /// Entries of the connection table (established connections, UDP flows), read in batches
    /// (a bench's table holds a million).
    pub fn established_count(&self) -> usize {
        maps::hash_batch(&self.maps.flows)
            .expect("reading FLOWS")
            .len()
    }

    /// Entries of the half-open table (SYNs not yet followed by the client's ACK).
    pub fn half_open_count(&self) -> usize {
        self.half_open_entries().len()
    }

    /// Whether either table holds the TCP flow `client:sport -> VIP:dport`.
    pub fn has_flow(&self, client: [u8; 4], sport: u16, dport: u16) -> bool {
        self.is_established(client, sport, dport) || self.is_half_open(client, sport, dport)
    }

    /// Whether the connection table holds the TCP flow `client:sport -> VIP:dport`.
    pub fn is_established(&self, client: [u8; 4], sport: u16, dport: u16) -> bool {
        self.maps
            .flows
            .get(&flow_key(client, sport, dport), 0)
            .is_ok()
    }

    /// Whether the half-open table holds the TCP flow `client:sport -> VIP:dport`.
    pub fn is_half_open(&self, client: [u8; 4], sport: u16, dport: u16) -> bool {
        self.in_syns(&flow_key(client, sport, dport))
    }

    /// Active connections as the data path counts them, for the configured backends in the
    /// order of their addresses (.135 to .138, fd00:58::135 to ::138).
    pub fn active_connections(&self) -> Vec<u64> {
        let mut by_addr: Vec<(IpAddr, u64)> = self
            .maps
            .backends
            .iter()
            .enumerate()
            .filter_map(|(id, b)| {
                let b = b.ok().filter(|b| b.flags != 0)?;
                let n = self.maps.conns.get(&(id as u32), 0).ok()?;
                Some((convert::addr_ip(&b.addr), n))
            })
            .collect();
        by_addr.sort();
        by_addr.into_iter().map(|(_, n)| n).collect()
    }

    pub fn last_plan_warnings(&self) -> &[String] {
        &self.last_plan.warnings
    }

    pub fn maps(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// The loaded director program.
    pub fn program(&mut self) -> &mut aya::programs::Xdp {
        loader::program(&mut self.ebpf, names::PROGRAM).expect("the director program")
    }

    pub fn try_run(&mut self, frame: &[u8]) -> Result<Output> {
        test_run(loader::program(&mut self.ebpf, names::PROGRAM)?, frame)
    }

    pub fn run(&mut self, frame: &[u8]) -> Output {
        self.try_run(frame)
            .expect("running a frame through the program")
    }

    /// The id of the service named `name`.
    pub fn service_id(&self, name: &str) -> u32 {
        self.maps
            .services
            .iter()
            .filter_map(|e| e.ok())
            .find(|(_, s)| convert::service_name(s) == name)
            .map(|(_, s)| s.id)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    pub fn service_counters(&self, name: &str) -> Counters {
        self.maps
            .service_counters(self.service_id(name))
            .expect("service counters")
    }

    pub fn backend_counters(&self, service: &str, addr: impl Into<IpAddr>) -> Counters {
        let addr = addr.into();
        let want = convert::addr_of(addr);
        let sid = self.service_id(service);
        let id = self
            .maps
            .backends
            .iter()
            .enumerate()
            .find(|(_, b)| {
                b.as_ref()
                    .is_ok_and(|b| b.service_id == sid && b.addr == want && b.flags != 0)
            })
            .map(|(i, _)| i as u32)
            .unwrap_or_else(|| panic!("no backend {addr} in {service}"));
        self.maps.backend_counters(id).expect("backend counters")
    }

    pub fn assert_service(&self, name: &str, packets: u64, bytes: u64, new_flows: u64) {
        let want = Counters {
            packets,
            bytes,
            new_flows,
        };
        assert_eq!(
            self.service_counters(name),
            want,
            "counters of service {name}"
        );
    }

    pub fn assert_backend(
        &self,
        service: &str,
        addr: impl Into<IpAddr>,
        packets: u64,
        bytes: u64,
        new_flows: u64,
    ) {
        let addr = addr.into();
        let want = Counters {
            packets,
            bytes,
            new_flows,
        };
        assert_eq!(
            self.backend_counters(service, addr),
            want,
            "counters of backend {addr} of {service}"
        );
    }

    /// Packets per reason, summed over CPUs, in `Reason::ALL` order.
    pub fn reason_counts(&self) -> Result<Vec<(Reason, u64)>> {
        self.maps.reason_counts()
    }

    /// Asserts the per-reason counters: the listed ones have these values, all others are 0.
    pub fn assert_reasons(&self, expected: &[(Reason, u64)]) {
        for (reason, n) in self.reason_counts().expect("reason counters") {
            let want = expected
                .iter()
                .find(|(r, _)| *r == reason)
                .map_or(0, |(_, n)| *n);
            assert_eq!(n, want, "packets counted as {}", reason.name());
        }
    }

    /// The fragmented datagrams the data path remembers.
    pub fn frag_entries(&self) -> Vec<(FragKey, Frag)> {
        self.maps.frags.iter().filter_map(|e| e.ok()).collect()
    }

    /// Makes every remembered datagram `secs` seconds older, as if that much time had passed.
    pub fn age_frags(&mut self, secs: u64) {
        for (k, mut f) in self.frag_entries() {
            f.last_seen_ns = f.last_seen_ns.saturating_sub(secs * 1_000_000_000);
            self.maps.frags.insert(k, f, 0).expect("writing FRAGS");
        }
    }

    /// Runs `frame` and asserts it went to the kernel untouched, counted under `reason` alone
    /// (the reason counters are zeroed before and after).
    pub fn assert_passed(&mut self, frame: &[u8], reason: Reason) {
        self.reset_reasons();
        let out = self.run(frame);
        assert_eq!(out.action, XDP_PASS, "{reason:?}: frame {frame:02x?}");
        assert_eq!(
            out.data, frame,
            "{reason:?}: a passed frame must not change"
        );
        self.assert_reasons(&[(reason, 1)]);
        self.reset_reasons();
    }

    pub fn reset_reasons(&mut self) {
        let cpus = nr_cpus().expect("possible CPUs");
        for r in Reason::ALL {
            let zeros = PerCpuValues::try_from(vec![0u64; cpus]).expect("per-CPU values");
            self.maps
                .reasons
                .set(r as u32, zeros, 0)
                .expect("zeroing reasons");
        }
    }
}

/// The key of the TCP flow `client:sport -> VIP:dport` (VIP 192.168.58.133).
pub fn flow_key(client: [u8; 4], sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        src: v4_mapped(u32::from_ne_bytes(client)),
        dst: v4_mapped(u32::from_ne_bytes([192, 168, 58, 133])),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto: lb_common::PROTO_TCP,
        _pad: [0; 3],
    }
}

/// A TCP frame from `client:sport` to 192.168.58.133:80 (the VIP of [`web_service`]).
pub fn tcp_to_web(client: [u8; 4], sport: u16, flags: &str) -> Vec<u8> {
    tcp_frame(
        (CLIENT_MAC, DIRECTOR_MAC),
        (client, sport),
        ([192, 168, 58, 133], 80),
        flags,
    )
}

/// The `i`th client address of the packet tests' real connections (10.1.x.x).
pub fn client_addr(i: u32) -> [u8; 4] {
    [10, 1, (i >> 8) as u8, i as u8]
}

/// A service `web` on 192.168.58.133:80 with `scheduler` over backends .135 to .138 (weight 1
/// each); `extra` (indented lines of the service) goes before its backends.
pub fn web_service(scheduler: &str, extra: &str) -> String {
    let mut s = format!(
        "services:\n  - name: web\n    vip: 192.168.58.133\n    port: 80\n    scheduler: {scheduler}\n{extra}    backends:\n"
    );
    for i in 0..4 {
        s += &format!("      - address: 192.168.58.{}\n", 135 + i);
    }
    s
}

/// Slot `slot` of each CPU's copy of the per-CPU array `map` (named `name`) that `holds`
/// accepts, as (CPU, slot).
fn per_cpu_slot<T: aya::Pod>(
    map: &aya::maps::PerCpuArray<aya::maps::MapData, T>,
    slot: u32,
    name: &str,
    holds: impl Fn(&T) -> bool,
) -> Vec<(usize, T)> {
    let values = map
        .get(&slot, 0)
        .unwrap_or_else(|e| panic!("reading {name}: {e}"));
    values
        .iter()
        .enumerate()
        .filter(|(_, c)| holds(c))
        .map(|(cpu, c)| (cpu, *c))
        .collect()
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

/// Pins the calling thread to the CPU it runs on, until the guard is dropped: every packet of
/// a test run then lands on that CPU's LRU lists and budget.
pub fn pin_to_one_cpu() -> Pinned {
    Pinned::here().expect("pinning the test thread to its CPU")
}
