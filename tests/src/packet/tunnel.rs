//! Tunnel backends at packet level: a namespace whose FIB the data path's `bpf_fib_lookup`
//! reads during BPF_PROG_TEST_RUN (the lookup uses the namespace of the thread that runs the
//! test, and the ingress interface named in `ctx_in`), a way to make a backend a tunnel
//! backend in the maps directly, and the frame the director must send for a tunnel backend
//! ([`encapsulated`], built with etherparse).
//!
//! The namespace (`lbl-<pid>-<n>-fib`, swept like a lab's) has a veth pair `d0`/`d1`, `d0`
//! with [`super::DIRECTOR_MAC`], 10.99.0.1/24 and fd99::1/64, forwarding on, and:
//! - 10.20.0.0/24 and fd20::/64 via the router (10.99.0.254 / fd99::fe, a permanent
//!   neighbour with [`ROUTER_MAC`]);
//! - 10.21.0.0/24 and fd21::/64 via the router with a locked route MTU of [`ROUTE_MTU`] (the
//!   FIB applies a route MTU to forwarded packets only when it is locked);
//! - 10.30.0.0/24 and fd30::/64 via a next hop with no neighbour entry (10.99.0.253 /
//!   fd99::fd);
//! - nothing else (no default route): 10.40.0.0 has no route.

use std::{
    fs::File,
    net::IpAddr,
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, bail};
use aya::programs::{TestRun, TestRunOptions};
use etherparse::{IpDscp, IpEcn, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header};
use lb_common::{Backend, FlowKey, Forward, hash_flow};
use lb_ctl::plan::convert::{self, addr_of};

use super::{DIRECTOR_MAC, Harness, Output};
use crate::lab::{BASE_PREFIX, sweep_leftovers};

pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
/// The MTU of the routes to 10.21.0.0/24 and fd21::/64.
pub const ROUTE_MTU: u16 = 1400;
/// The director's address on `d0`, the tunnels' outer source.
pub const DIRECTOR_V4: [u8; 4] = [10, 99, 0, 1];
pub const DIRECTOR_V6: &str = "fd99::1";

/// The namespace; dropping it deletes it.
pub struct FibNs {
    pub name: String,
    /// `d0`'s index inside the namespace: the ingress interface of every test run.
    pub ifindex: u32,
}

fn ip(ns: &str, args: &str) -> Result<()> {
    let mut cmd = Command::new("ip");
    if !ns.is_empty() {
        cmd.args(["-n", ns]);
    }
    let out = cmd
        .args(args.split_whitespace())
        .output()
        .with_context(|| format!("running ip {args}"))?;
    if !out.status.success() {
        bail!(
            "ip -n {ns} {args}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl FibNs {
    pub fn new() -> Result<FibNs> {
        static N: AtomicU32 = AtomicU32::new(0);
        sweep_leftovers().context("sweeping leftovers of earlier runs")?;
        let name = format!(
            "{BASE_PREFIX}{}-{}-fib",
            std::process::id(),
            900_000 + N.fetch_add(1, Ordering::Relaxed)
        );
        ip("", &format!("netns add {name}"))?;
        let mut ns = FibNs { name, ifindex: 0 };
        let mac = DIRECTOR_MAC
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let router = "02:00:00:00:00:fe";
        for cmd in [
            "link set lo up".to_string(),
            "link add d0 type veth peer name d1".to_string(),
            format!("link set d0 address {mac}"),
            "link set d0 up".to_string(),
            "link set d1 up".to_string(),
            "addr add 10.99.0.1/24 dev d0".to_string(),
            "addr add fd99::1/64 dev d0 nodad".to_string(),
            format!("neigh add 10.99.0.254 lladdr {router} dev d0 nud permanent"),
            format!("neigh add fd99::fe lladdr {router} dev d0 nud permanent"),
            "route add 10.20.0.0/24 via 10.99.0.254".to_string(),
            format!("route add 10.21.0.0/24 via 10.99.0.254 mtu lock {ROUTE_MTU}"),
            "route add 10.30.0.0/24 via 10.99.0.253".to_string(),
            "route add fd20::/64 via fd99::fe".to_string(),
            format!("route add fd21::/64 via fd99::fe mtu lock {ROUTE_MTU}"),
            "route add fd30::/64 via fd99::fd".to_string(),
        ] {
            ip(&ns.name, &cmd)?;
        }
        for key in [
            "net.ipv4.conf.all.forwarding",
            "net.ipv4.conf.d0.forwarding",
            "net.ipv6.conf.all.forwarding",
            "net.ipv6.conf.d0.forwarding",
        ] {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns.name,
                    "sysctl",
                    "-qw",
                    &format!("{key}=1"),
                ])
                .output()
                .context("running sysctl")?;
            if !out.status.success() {
                bail!("sysctl {key}=1: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        ns.ifindex = lb_ctl::net::netns::run_in(&ns.name, || lb_ctl::net::link::ifindex("d0"))?;
        Ok(ns)
    }

    /// Moves the calling thread into the namespace until the guard is dropped.
    pub fn enter(&self) -> Result<Entered> {
        let home = File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?;
        lb_ctl::net::netns::enter(&self.name)?;
        Ok(Entered { home })
    }

    /// Adds a route (`ip route ARGS` inside the namespace), e.g. to move a next hop.
    pub fn route(&self, args: &str) -> Result<()> {
        ip(&self.name, &format!("route {args}"))
    }
}

impl Drop for FibNs {
    fn drop(&mut self) {
        let _ = ip("", &format!("netns del {}", self.name));
    }
}

/// The calling thread inside a [`FibNs`]; dropping it moves the thread back.
pub struct Entered {
    home: File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        // SAFETY: setns on a valid fd we own.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// How a backend is made a tunnel backend.
#[derive(Clone, Copy, Debug)]
pub struct Tunnel {
    pub forward: Forward,
    /// The outer destination (the backend's address in the maps).
    pub addr: IpAddr,
    /// The outer source; `None` = unspecified (the kernel's choice).
    pub src: Option<IpAddr>,
    /// GUE's UDP port.
    pub port: u16,
}

impl Harness {
    /// Registers `ifindex` (a [`FibNs`]'s `d0`) as an interface of the program, with
    /// [`DIRECTOR_MAC`].
    pub fn register_iface(&mut self, ifindex: u32) {
        self.maps()
            .register_iface("d0", ifindex, DIRECTOR_MAC)
            .expect("registering the interface");
    }

    /// Makes the backend `addr` of `service` a tunnel backend, in the maps directly (what
    /// `lb-ctl apply` writes for `forward: tunnel`): its address becomes `t.addr`.
    pub fn make_tunnel(&mut self, service: &str, addr: impl Into<IpAddr>, t: Tunnel) {
        let addr = addr.into();
        let sid = self.service_id(service);
        let want = convert::addr_of(addr);
        let backends = &mut self.maps().backends;
        let id = (0..lb_common::limits::MAX_BACKENDS)
            .find(|&i| {
                backends
                    .get(&i, 0)
                    .is_ok_and(|b: Backend| b.service_id == sid && b.addr == want && b.flags != 0)
            })
            .unwrap_or_else(|| panic!("no backend {addr} in {service}"));
        let mut b = backends.get(&id, 0).expect("reading the backend");
        b.addr = convert::addr_of(t.addr);
        b.forward = t.forward as u8;
        b.tunnel_src = t.src.map_or([0; 4], convert::addr_of);
        b.tunnel_port = t.port.to_be();
        backends.set(id, b, 0).expect("writing the backend");
    }

    /// Runs `frame` as if it arrived on interface `ifindex` (BPF_PROG_TEST_RUN's `ctx_in`),
    /// in the calling thread's namespace.
    pub fn run_on(&mut self, ifindex: u32, frame: &[u8]) -> Output {
        let prog = self.program();
        let ctx = super::xdp_md(frame.len(), ifindex);
        let mut out = vec![0u8; frame.len() + 4096];
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::new()
            })
            .expect("BPF_PROG_TEST_RUN with an ingress interface");
        assert!(res.data_size_out as usize <= out.len(), "output size");
        out.truncate(res.data_size_out as usize);
        Output {
            action: res.return_value,
            data: out,
        }
    }
}

/// The hash the data path uses for the outer UDP source port and IPv6 flow label, of the TCP
/// flow `client:sport -> vip:dport`.
pub fn flow_hash(client: IpAddr, vip: IpAddr, sport: u16, dport: u16) -> u32 {
    hash_flow(&FlowKey {
        src: addr_of(client),
        dst: addr_of(vip),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto: 6,
        _pad: [0; 3],
    })
}

/// The outer header for `inner` (an IP packet): IPv4 or IPv6 by `dst`'s family, then UDP to
/// `gue_port` if given. TOS/traffic class and TTL/hop limit are the inner's.
pub fn outer(
    inner: &[u8],
    src: IpAddr,
    dst: IpAddr,
    gue_port: Option<u16>,
    hash: u32,
) -> (u16, Vec<u8>) {
    let inner_v6 = inner[0] >> 4 == 6;
    let (tos, ttl) = if inner_v6 {
        ((inner[0] << 4) | (inner[1] >> 4), inner[7])
    } else {
        (inner[1], inner[8])
    };
    let mut udp = Vec::new();
    if let Some(port) = gue_port {
        let sport = 0xc000 | (hash & 0x3fff) as u16;
        udp.extend_from_slice(&sport.to_be_bytes());
        udp.extend_from_slice(&port.to_be_bytes());
        udp.extend_from_slice(&((8 + inner.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
    }
    let proto = match (gue_port, inner_v6) {
        (Some(_), _) => IpNumber::UDP,
        (None, false) => IpNumber(4),
        (None, true) => IpNumber(41),
    };
    let payload_len = (udp.len() + inner.len()) as u16;
    let mut head = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = Ipv4Header::new(payload_len, ttl, proto, s.octets(), d.octets()).unwrap();
            h.dscp = IpDscp::try_new(tos >> 2).unwrap();
            h.ecn = IpEcn::try_new(tos & 3).unwrap();
            h.dont_fragment = true;
            h.identification = 0;
            h.header_checksum = h.calc_header_checksum();
            h.to_bytes().to_vec()
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => Ipv6Header {
            traffic_class: tos,
            flow_label: Ipv6FlowLabel::try_new(hash & 0xfffff).unwrap(),
            payload_length: payload_len,
            next_header: proto,
            hop_limit: ttl,
            source: s.octets(),
            destination: d.octets(),
        }
        .to_bytes()
        .to_vec(),
        _ => panic!("outer source and destination of one family"),
    };
    head.extend_from_slice(&udp);
    let ethertype = if dst.is_ipv4() { 0x0800 } else { 0x86dd };
    (ethertype, head)
}

/// The frame the director must send: to the router, from the director, `outer` in front of
/// the input's IP packet.
pub fn encapsulated(
    input: &[u8],
    src: IpAddr,
    dst: IpAddr,
    gue: Option<u16>,
    hash: u32,
) -> Vec<u8> {
    let (ethertype, head) = outer(&input[14..], src, dst, gue, hash);
    let mut v = Vec::new();
    v.extend_from_slice(&ROUTER_MAC);
    v.extend_from_slice(&DIRECTOR_MAC);
    v.extend_from_slice(&u16::to_be_bytes(ethertype));
    v.extend_from_slice(&head);
    v.extend_from_slice(&input[14..]);
    v
}
