//! One consistent read of the maps for people and machines: services, their backends, the
//! counters summed over CPUs, connection counts, and the data path's per-reason counters.
//! `list` and `stats` both render a [`Snapshot`].

use std::{collections::HashMap, net::IpAddr, time::Duration};

use anyhow::{Context as _, Result};
use lb_common::{
    BACKEND_DOWN, BACKEND_USABLE, Backend, Counters, Flow, FlowKey, Forward, Reason, Service,
    ServiceKey, TcpState,
};
use serde::Serialize;

use crate::{
    config::Protocol,
    maps::Maps,
    plan::convert::format_mac,
    plan::convert::{addr_ip, host_port, mask_of, persist_prefix_len, scheduler_of, service_name},
};

/// ipvsadm's name for a state.
pub fn state_name(proto: u8, state: TcpState) -> &'static str {
    if proto != lb_common::PROTO_TCP {
        return "UDP";
    }
    match state {
        TcpState::Syn => "SYN_RECV",
        TcpState::Established => "ESTABLISHED",
        TcpState::Fin => "FIN_WAIT",
        TcpState::Rst => "CLOSE",
        TcpState::None => "NONE",
    }
}

/// One live entry of the connection table, as `ipvsadm -L -n -c` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ConnView {
    pub protocol: &'static str,
    /// Seconds until the entry expires.
    pub expires_in: u64,
    pub state: &'static str,
    pub client: String,
    pub virtual_address: String,
    pub backend: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct BackendView {
    #[serde(skip)]
    pub id: u32,
    /// IPv4 or IPv6, the service's family.
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub mac: String,
    /// How it is forwarded to: `route`, `ipip` or `gue` in JSON (`?`: a byte no lb-ctl
    /// writes); `list` shows `Route` or `Tunnel`, as ipvsadm does.
    #[serde(serialize_with = "forward_name")]
    pub forward: Option<Forward>,
    /// Tunnels: the outer source address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_source: Option<IpAddr>,
    /// GUE: the UDP port the backend decapsulates on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_port: Option<u16>,
    /// It takes traffic: its MAC (route) or outer source (tunnel) is known and it is not down.
    pub usable: bool,
    /// Health checks hold it down.
    pub down: bool,
    pub packets: u64,
    pub bytes: u64,
    pub connections: u64,
    /// Live TCP connections in SYN or ESTABLISHED state (ipvsadm's ActiveConn), half-open
    /// entries (`SYNS`) included: the count the data path keeps in `CONNS` and `lc`/`wlc`
    /// compare (`lb_common::Flow::is_active`).
    pub active_connections: u64,
    /// Other live entries (FIN, RST, UDP), as ipvsadm's InActConn.
    pub inactive_connections: u64,
}

impl BackendView {
    /// What `list` shows: `down` (held down by health checks), `unresolved` (no MAC or tunnel
    /// source yet), `draining` (weight 0), else `up`.
    pub fn state(&self) -> &'static str {
        match (self.usable, self.weight) {
            _ if self.down => "down",
            (false, _) => "unresolved",
            (true, 0) => "draining",
            (true, _) => "up",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: &'static str,
    pub scheduler: &'static str,
    /// Persistence timeout in seconds; 0 = off.
    pub persistence_timeout: u32,
    /// The client granularity as a mask in the VIP's family (`255.255.255.0`,
    /// `ffff:ffff:ffff:ffff::`) ...
    pub persistence_netmask: IpAddr,
    /// ... and as a prefix length (`24`, `64`).
    pub persistence_prefix_len: u8,
    pub packets: u64,
    pub bytes: u64,
    pub connections: u64,
    pub backends: Vec<BackendView>,
    /// Entries of the service's table: the Maglev table size for `sh`/`mh`, the sequence's
    /// length for the others; 0 while no backend is usable.
    #[serde(skip)]
    pub table_len: u32,
    #[serde(skip)]
    pub key: ServiceKey,
    #[serde(skip)]
    pub id: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub services: Vec<ServiceView>,
    /// Packets by what the data path did with them.
    pub datapath: Vec<ReasonCount>,
    /// Live entries in the connection table: established TCP connections, closing ones, UDP
    /// flows.
    pub flows: u64,
    /// Entries the connection table can hold (the least recently used go first).
    pub flows_capacity: u32,
    /// Live entries in the half-open table (`SYNS`): TCP connections whose client has sent
    /// its SYN but not yet its ACK. Many of them, near the capacity, is a SYN flood.
    pub half_open: u64,
    /// Entries the half-open table can hold (the least recently used go first).
    pub half_open_capacity: u32,
    /// The budget of new entries one CPU may create per second (`flood:`); 0 = no limit.
    pub new_flows_per_cpu: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReasonCount {
    pub reason: &'static str,
    pub action: &'static str,
    pub packets: u64,
}

fn action_of(r: Reason) -> &'static str {
    match r {
        r if r.is_tx() => "tx",
        r if r.is_drop() => "drop",
        _ => "pass",
    }
}

/// Monotonic clock in nanoseconds, the clock of the data path's `bpf_ktime_get_coarse_ns`.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Snapshot {
    pub fn read(maps: &Maps) -> Result<Snapshot> {
        let mut services: Vec<(ServiceKey, Service)> = maps
            .services
            .iter()
            .collect::<Result<_, _>>()
            .context("reading SERVICES")?;
        services.sort_by_key(|(k, _)| (addr_ip(&k.addr), u16::from_be(k.port), k.proto));

        let mut backends: HashMap<u32, Vec<(u32, Backend)>> = HashMap::new();
        let all = maps.backend_slots()?;
        for (id, b) in all.into_iter().enumerate() {
            if b.flags != 0 {
                backends
                    .entry(b.service_id)
                    .or_default()
                    .push((id as u32, b));
            }
        }

        // Connection counts per backend from both tables: a half-open entry is an active
        // connection, as the data path counts it.
        let now = now_ns();
        let mut conns: HashMap<u32, (u64, u64)> = HashMap::new();
        let (mut flows, mut half_open) = (0, 0);
        let established = maps.flows.iter().filter_map(|e| e.ok()).map(|e| (e, false));
        let tables = established.chain(maps.half_open()?.into_iter().map(|e| (e, true)));
        for ((key, flow), syn) in tables {
            if !flow.is_live(key.proto, now) {
                continue;
            }
            match syn {
                true => half_open += 1,
                false => flows += 1,
            }
            let c = conns.entry(flow.backend).or_default();
            // The data path's rule (`Flow::is_active`): what CONNS counts and lc/wlc compare.
            if flow.is_active(key.proto) {
                c.0 += 1
            } else {
                c.1 += 1
            }
        }

        let mut out = Vec::new();
        for (key, s) in services {
            let total = maps.service_counters(s.id)?;
            let mut bs = Vec::new();
            for (id, b) in backends.remove(&s.id).unwrap_or_default() {
                let c: Counters = maps.backend_counters(id)?;
                let (active, inactive) = conns.get(&id).copied().unwrap_or_default();
                bs.push(BackendView {
                    id,
                    address: addr_ip(&b.addr),
                    port: u16::from_be(b.port),
                    weight: b.weight,
                    mac: format_mac(&b.mac),
                    forward: Forward::from_u8(b.forward),
                    tunnel_source: (b.forward != Forward::Route as u8 && b.tunnel_src != [0; 4])
                        .then(|| addr_ip(&b.tunnel_src)),
                    tunnel_port: (b.forward == Forward::Gue as u8)
                        .then(|| u16::from_be(b.tunnel_port)),
                    usable: b.flags & BACKEND_USABLE != 0,
                    down: b.flags & BACKEND_DOWN != 0,
                    packets: c.packets,
                    bytes: c.bytes,
                    connections: c.new_flows,
                    active_connections: active,
                    inactive_connections: inactive,
                });
            }
            bs.sort_by_key(|b| (b.address, b.port));
            let vip = addr_ip(&key.addr);
            let prefix_len = persist_prefix_len(vip, &s.persist_mask);
            out.push(ServiceView {
                name: service_name(&s),
                vip,
                port: u16::from_be(key.port),
                protocol: Protocol::from_number(key.proto).map_or("?", |p| p.as_str()),
                scheduler: scheduler_of(&s).map_or("?", |s| s.as_str()),
                persistence_timeout: s.persist_timeout_s,
                persistence_netmask: mask_of(vip, prefix_len),
                persistence_prefix_len: prefix_len,
                packets: total.packets,
                bytes: total.bytes,
                connections: total.new_flows,
                backends: bs,
                table_len: s.table_len,
                key,
                id: s.id,
            });
        }
        let datapath = maps
            .reason_counts()?
            .into_iter()
            .map(|(r, n)| ReasonCount {
                reason: r.name(),
                action: action_of(r),
                packets: n,
            })
            .collect();
        Ok(Snapshot {
            services: out,
            datapath,
            flows,
            flows_capacity: maps.flows_capacity()?,
            half_open,
            half_open_capacity: maps.syns_capacity()?,
            new_flows_per_cpu: maps
                .settings
                .get(&0, 0)
                .context("reading SETTINGS")?
                .new_flows_per_cpu,
        })
    }
}

/// The live entries of the connection table and of the half-open table (state `SYN_RECV`),
/// oldest expiry first.
pub fn connections(maps: &Maps) -> Result<Vec<ConnView>> {
    let now = now_ns();
    let mut backends: HashMap<u32, Backend> = HashMap::new();
    let mut out = Vec::new();
    let established = maps.flows.iter().filter_map(|e| e.ok());
    for (key, flow) in established.chain(maps.half_open()?) {
        let Some(remaining_ns) = flow.remaining_ns(key.proto, now) else {
            continue;
        };
        let b = match backends.get(&flow.backend) {
            Some(b) => *b,
            None => {
                let b = maps
                    .backends
                    .get(&flow.backend, 0)
                    .context("reading BACKENDS")?;
                backends.insert(flow.backend, b);
                b
            }
        };
        out.push(conn_view(&key, &flow, &b, remaining_ns));
    }
    out.sort_by_key(|c| c.expires_in);
    Ok(out)
}

/// One connection-table entry for people: addresses as ipvsadm writes them
/// (`192.168.58.100:40000`, `[fd00:58::100]:40000`), the backend with the flow's port.
fn conn_view(key: &FlowKey, flow: &Flow, b: &Backend, remaining_ns: u64) -> ConnView {
    ConnView {
        protocol: Protocol::from_number(key.proto).map_or("?", |p| p.as_str()),
        expires_in: Duration::from_nanos(remaining_ns).as_secs(),
        state: state_name(key.proto, flow.state()),
        client: host_port(addr_ip(&key.src), u16::from_be(key.sport)),
        virtual_address: host_port(addr_ip(&key.dst), u16::from_be(key.dport)),
        backend: host_port(addr_ip(&b.addr), u16::from_be(key.dport)),
    }
}

/// `route`, `ipip`, `gue`, or `?` for a method no lb-ctl writes.
fn forward_name<S: serde::Serializer>(f: &Option<Forward>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(f.map_or("?", Forward::name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::convert::addr_of;

    #[test]
    fn connection_rows_of_both_families() {
        let ip = |s: &str| addr_of(s.parse().expect("address"));
        let row = |src: &str, dst: &str, backend: &str| {
            let key = FlowKey {
                src: ip(src),
                dst: ip(dst),
                sport: 40000u16.to_be(),
                dport: 80u16.to_be(),
                proto: lb_common::PROTO_TCP,
                _pad: [0; 3],
            };
            let flow = Flow {
                state: TcpState::Established as u8,
                ..Flow::default()
            };
            let b = Backend {
                addr: ip(backend),
                ..Backend::default()
            };
            let c = conn_view(&key, &flow, &b, 899_500_000_000);
            assert_eq!(
                (c.protocol, c.expires_in, c.state),
                ("tcp", 899, "ESTABLISHED")
            );
            [c.client, c.virtual_address, c.backend]
        };
        assert_eq!(
            row("192.168.58.100", "192.168.58.133", "192.168.58.135"),
            [
                "192.168.58.100:40000",
                "192.168.58.133:80",
                "192.168.58.135:80"
            ]
        );
        assert_eq!(
            row("fd00:58::100", "fd00:58::133", "fd00:58::135"),
            [
                "[fd00:58::100]:40000",
                "[fd00:58::133]:80",
                "[fd00:58::135]:80"
            ]
        );
    }
}
