//! A lab network of hosts made of network namespaces, for the end-to-end tests, the demo and
//! the benchmarks (see `docs/lab.md` for the rules it keeps).
//!
//! ```text
//!  client (.100) ──┐
//!                  ├── switch (bridge br0, own namespace) ──┬── director-1 (DIP .134, VIP on eth0)
//!                  │                                        ├── director-2 (DIP .137, optional)
//!                  │                                        ├── real-server-1 (RIP .135, VIP on lo)
//!                  │                                        ├── real-server-2 (RIP .136, VIP on lo)
//!                  │                                        └── real-server-k (RIP .(135+k), k >= 3)
//! ```
//!
//! # Addresses and names
//! Everything is in 192.168.58.0/24 (`/24` on every host's `eth0`) and, for IPv6, in the ULA
//! prefix fd00:58::/64 (`/64` on every `eth0`, added `nodad`), where each host's address
//! mirrors its IPv4 one ([`addr6_of`]: `.135` -> `fd00:58::135`, VIP [`DEFAULT_VIP6`]
//! `fd00:58::133`). Addresses: client `.100`,
//! director-1 `.134`, director-2 `.137`, real-server-1 `.135`, real-server-2 `.136`,
//! real-server-k `.(135 + k)` for k >= 3 (`.138`, `.139`, ...: `.137` stays director-2's even
//! in labs without it), at most [`MAX_SERVERS`] servers. The VIP is [`DEFAULT_VIP`]
//! (`.133`) unless the spec says otherwise. Each host's `eth0` has the MAC
//! `02:00:00:00:00:XX` (XX = last octet of its address, in hex), its switch-side veth
//! `02:00:00:00:01:XX`.
//!
//! Each lab has a per-run prefix `lbl-<pid>-<n>` ([`Lab::prefix`]); the namespaces are
//! `<prefix>-switch`, `<prefix>-client`, `<prefix>-director-1`, `<prefix>-real-server-1`, ...
//! Interfaces live only inside those namespaces (created there directly, never in the root
//! namespace), so their names need no prefix: each host has `lo` and `eth0`; the switch has
//! `br0` and one port per host, `sw-client`, `sw-director-1`, `sw-server-1` (up to 15
//! characters: [`Lab::switch_port_of`]). Nothing is added to the root namespace, and no lab
//! namespace has a link to it.
//!
//! # What each host gets
//! - all: IPv6 on but quiet (no router solicitations, no RAs taken, no duplicate address
//!   detection; link-local addresses as usual), `rp_filter`, `arp_ignore`, `arp_announce` reset
//!   to 0 (new namespaces inherit the host's IPv4 settings).
//! - director-1: the VIP as `/32` and the IPv6 VIP as `/128` on `eth0`, so it answers ARP and
//!   neighbour solicitations for them. director-2 has no VIP
//!   ([`Lab::add_vip`] / [`Lab::del_vip`], or keepalived, move it). On the switch side of each
//!   director's link: TX checksum offload off (`ethtool -K sw-director-N tx off`) and a
//!   pass-through XDP program (`lb_ctl::maps::loader::attach_pass_through`), both needed for
//!   native-mode XDP_TX on veth (docs/lab.md).
//! - client: TX checksum offload off on its `eth0`.
//! - real servers: the VIP `/32` and the IPv6 VIP `/128` on `lo`, `arp_ignore=1` and
//!   `arp_announce=2` for `all` and `eth0` (IPv6 needs no sysctl: Linux answers neighbour
//!   solicitations only for addresses of the interface they arrive on), and two servers from
//!   the `lab-server` binary of this crate: HTTP on [`LabSpec::http_port`] (80, both families)
//!   answering `real-server-N\n`, and a UDP echo on [`LabSpec::udp_port`] (5353, bound to the
//!   RIP, the VIP and loopback of both families) answering `real-server-N PAYLOAD`. See
//!   `src/bin/lab-server.rs` for the paths (`/count`, `/reset`, `/hold?ms=N`, `/whoami`).
//!
//! # Finding `lab-server`
//! In this order: [`LabSpec::server_bin`]; the environment variable `LB_LAB_SERVER`; a
//! `lab-server` next to the running executable or in its parent directory (a test binary runs
//! from `target/<profile>/deps/`); the newest of `$CARGO_TARGET_DIR/{debug,release}/lab-server`
//! and `<workspace>/target/{debug,release}/lab-server`. Integration tests of this crate pass
//! `env!("CARGO_BIN_EXE_lab-server")` (cargo builds it for them); other users build it first
//! with `cargo build -p lb-tests --bin lab-server`. With `start_servers: false` none is needed.
//!
//! # Teardown
//! [`Lab`] owns everything: dropping it (also while unwinding from a panic) kills the processes
//! it started and every other process inside its namespaces, and deletes its namespaces (which
//! deletes the veths and the bridge). SIGINT/SIGTERM/SIGHUP tear down every live lab of the
//! process before it ends ([`install_signal_handler`]). Every process the lab starts
//! ([`Host::spawn`], the servers) gets SIGKILL from the kernel if this process dies in any way
//! ([`spawn_child`]). [`Lab::build`] first sweeps what crashed runs left ([`sweep_leftovers`]:
//! namespaces `lbl-<pid>-...` whose pid is dead, and those runs' pin, runtime and service-file
//! directories); it is the tests' only sweep.
//!
//! # Indexing
//! [`Lab::director`] and [`Lab::server`] count from 0: `director(0)` is director-1,
//! `server(0)` is real-server-1 (the same as `servers()[0]`).
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use lb_tests::lab::{Lab, LabSpec, http_get};
//! let lab = Lab::build(&LabSpec { servers: 2, ..LabSpec::default() })?;
//! let rs1 = lab.server(0);
//! let (status, body) = http_get(lab.client(), rs1.addr, 80, "/", Duration::from_secs(2))?;
//! assert_eq!((status, body.as_str()), (200, "real-server-1\n"));
//! assert_eq!(lab.request_count(rs1)?, 1);
//! # anyhow::Ok(())
//! ```

mod capture;
mod client;
mod ecmp;
pub mod icmp;
mod proc;
mod routed;
mod teardown;

use std::{
    env, fs,
    io::{BufRead as _, BufReader, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

pub use capture::Capture;
pub use client::{
    Connect, HttpConn, PacketSocket, http_get, http_get_from, http_post, send_frames, tcp_connect,
    tcp_stream, tcp_stream_from, udp_request, udp_socket,
};
pub use ecmp::{
    CLIENT_BRIDGE, CLIENT_SUBNET, CLIENT_SUBNET_LEN, EcmpSpec, MAX_CLIENTS, ROUTER_CLIENT_ADDR,
    ROUTER_CLIENT_IFACE, client_addr, client_addrs,
};
/// MACs are written and read as lb-ctl does (`02:00:00:00:00:87`).
pub use lb_ctl::plan::convert::{format_mac, parse_mac};
pub use proc::{Proc, spawn_child};
pub use routed::{
    MAX_REMOTE_SERVERS, REMOTE_BRIDGE, REMOTE_SUBNET, REMOTE_SUBNET_LEN, REMOTE_SUBNET6,
    REMOTE_SUBNET6_LEN, ROUTER_INNER_IFACE, RoutedSpec, Router, addr6_in_plan, remote_server_addr,
    router_addr, router_inner_addr,
};
pub(crate) use teardown::BPFFS;
use teardown::NETNS_DIR;
pub use teardown::{
    BASE_PREFIX, install_signal_handler, on_signal_before_teardown, sweep_leftovers, teardown_all,
};

/// The lab's subnet; every host's `eth0` has an address in it, with this prefix length.
pub const SUBNET: Ipv4Addr = Ipv4Addr::new(192, 168, 58, 0);
/// Prefix length of [`SUBNET`].
pub const SUBNET_LEN: u8 = 24;
/// The VIP of the seed topology.
pub const DEFAULT_VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 58, 133);
/// The client's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 58, 100);
/// The lab's IPv6 prefix (a ULA /64): every host's `eth0` also has an address in it.
pub const SUBNET6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 0);
/// Prefix length of [`SUBNET6`].
pub const SUBNET6_LEN: u8 = 64;
/// The IPv6 VIP of the seed topology (`fd00:58::133`, [`addr6_of`] of [`DEFAULT_VIP`]).
pub const DEFAULT_VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 0x133);
/// The client's IPv6 address (`fd00:58::100`).
pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 0x100);
/// Most real servers a lab can have.
pub const MAX_SERVERS: usize = 100;
/// The bridge inside the switch namespace.
pub const BRIDGE: &str = "br0";
/// Each host's interface on the switch.
pub const HOST_IFACE: &str = "eth0";

/// What to build. `LabSpec::default()` is the seed topology: 1 director, 2 real servers.
#[derive(Clone, Debug)]
pub struct LabSpec {
    /// 1 or 2 directors (3 in an ECMP lab).
    pub directors: usize,
    /// 1 to [`MAX_SERVERS`] real servers.
    pub servers: usize,
    /// The VIP (on director-1's `eth0` and on every real server's `lo`).
    pub vip: Ipv4Addr,
    /// The IPv6 VIP (`/128`, the same places as [`LabSpec::vip`]).
    pub vip6: Ipv6Addr,
    /// Start the HTTP and UDP servers on the real servers.
    pub start_servers: bool,
    /// The `lab-server` binary; `None` searches for it (see the module doc).
    pub server_bin: Option<PathBuf>,
    /// Port of the real servers' HTTP server.
    pub http_port: u16,
    /// Port of the real servers' UDP echo server.
    pub udp_port: u16,
    /// Put a pass-through XDP program on the switch side of each director's link (needed for
    /// native-mode XDP_TX; needs lb-ctl built with its XDP object).
    pub pass_through: bool,
    /// Install the SIGINT/SIGTERM/SIGHUP handler that tears labs down ([`install_signal_handler`]).
    pub install_signal_handler: bool,
    /// Routers and a second subnet behind them with real servers of its own (module
    /// `routed`: [`RoutedSpec`]); `None`, the default, builds the switch's subnet only.
    pub routed: Option<RoutedSpec>,
    /// Several active directors behind router-1 and a subnet of clients behind it (module
    /// `ecmp`: [`EcmpSpec`]); no director holds the VIP. Needs [`LabSpec::routed`]: see
    /// [`LabSpec::ecmp_lab`].
    pub ecmp: Option<EcmpSpec>,
}

impl LabSpec {
    /// The ECMP lab: 3 directors without the VIP, 3 real servers, router-1 (no remote
    /// servers) between them and 64 client addresses (module `ecmp`).
    pub fn ecmp_lab() -> LabSpec {
        LabSpec {
            directors: 3,
            servers: 3,
            routed: Some(RoutedSpec {
                routers: 1,
                servers: 0,
            }),
            ecmp: Some(EcmpSpec::default()),
            ..LabSpec::default()
        }
    }
}

impl Default for LabSpec {
    fn default() -> Self {
        LabSpec {
            directors: 1,
            servers: 2,
            vip: DEFAULT_VIP,
            vip6: DEFAULT_VIP6,
            start_servers: true,
            server_bin: None,
            http_port: 80,
            udp_port: 5353,
            pass_through: true,
            install_signal_handler: true,
            routed: None,
            ecmp: None,
        }
    }
}

/// What a host is in the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Director,
    Server,
    /// A router of a routed lab ([`LabSpec::routed`]).
    Router,
}

/// One host of the lab: a network namespace with one link (`eth0`) to the switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// `client`, `director-1`, `real-server-1`, ...
    pub name: String,
    pub role: Role,
    /// The namespace's name (`/run/netns/<netns>`).
    pub netns: String,
    /// Its interface on the switch: `eth0`.
    pub iface: String,
    /// Its address on `eth0` (client address, DIP or RIP).
    pub addr: Ipv4Addr,
    /// Its IPv6 address on `eth0` ([`addr6_of`] of `addr`: `.135` -> `fd00:58::135`).
    pub addr6: Ipv6Addr,
    /// The MAC of its `eth0`.
    pub mac: [u8; 6],
    /// The switch-side end of its link (inside the switch namespace).
    pub switch_port: String,
}

impl Host {
    /// A command that runs `args` inside this host's namespace (`nsenter --net=...`, which
    /// keeps the caller's mounts, so `/sys/fs/bpf` and its pins stay visible).
    pub fn command(&self, args: &[&str]) -> Command {
        netns_command(&self.netns, args)
    }

    /// Runs `args` inside the namespace and returns its output (whatever its exit status).
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {args:?} in {}", self.name))
    }

    /// Runs `args` inside the namespace; fails unless it exits 0; returns its stdout.
    pub fn exec_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.exec(args)?;
        check_output(&out, &format!("{args:?} in {}", self.name))
    }

    /// Starts `args` in the background inside the namespace (stdin null, stdout and stderr
    /// inherited) and returns once it is inside (or has already exited). The process is
    /// killed when the returned guard is dropped, and at the latest when the lab is torn down.
    pub fn spawn(&self, args: &[&str]) -> Result<Proc> {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null());
        let mut proc = Proc::spawn(cmd, format!("{args:?} in {}", self.name))?;
        self.wait_entered(&mut proc)?;
        Ok(proc)
    }

    /// Waits (at most 5 s) until `proc`, started with [`Host::command`], has entered this
    /// host's namespace or has exited, so that a teardown right after finds it there.
    pub fn wait_entered(&self, proc: &mut Proc) -> Result<()> {
        let id = teardown::netns_id(&self.netns)
            .with_context(|| format!("the namespace {} is gone", self.netns))?;
        let ns_file = format!("/proc/{}/ns/net", proc.pid());
        let entered = wait_until(Duration::from_secs(5), || {
            proc.try_wait().is_ok_and(|s| s.is_some())
                || fs::metadata(&ns_file).is_ok_and(|m| (m.dev(), m.ino()) == id)
        });
        ensure!(
            entered,
            "{} did not enter {} within 5 s",
            proc.what(),
            self.netns
        );
        Ok(())
    }

    /// Runs iproute2 commands (one per line, `ip -batch`) inside this host's namespace: many
    /// addresses or routes in one process.
    pub fn ip_batch(&self, cmds: &[String]) -> Result<()> {
        ip_batch(&self.netns, cmds).with_context(|| format!("ip -batch in {}", self.name))
    }

    /// Runs `f` on a thread inside this host's namespace (sockets it opens stay there).
    pub fn run_in<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        lb_ctl::net::netns::run_in(&self.netns, f)
    }

    /// The MAC in this host's neighbour table (ARP, or NDP for IPv6) for `ip` on `eth0`, if it
    /// has a usable entry (not FAILED/INCOMPLETE).
    pub fn neighbour_mac(&self, ip: impl Into<IpAddr>) -> Result<Option<[u8; 6]>> {
        let ip = ip.into();
        let out = run_ok(
            Command::new("ip").args(["-n", &self.netns, "neigh", "show", &ip.to_string()]),
            "ip neigh show",
        )?;
        for line in out.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| *w == "lladdr")
                && let Some(mac) = words.get(i + 1).and_then(|m| parse_mac(m))
                && !words.contains(&"FAILED")
                && !words.contains(&"INCOMPLETE")
            {
                return Ok(Some(mac));
            }
        }
        Ok(None)
    }

    /// Forgets the neighbour entry for `ip` (so the next packet asks ARP or NDP again).
    pub fn flush_neighbour(&self, ip: impl Into<IpAddr>) -> Result<()> {
        let ip = ip.into();
        run_ok(
            Command::new("ip").args(["-n", &self.netns, "neigh", "flush", "to", &ip.to_string()]),
            "ip neigh flush",
        )?;
        Ok(())
    }

    /// The MAC as `02:00:00:00:00:87`.
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }
}

/// The lab: owns its namespaces, processes and XDP pass-through programs; dropping it tears
/// everything down.
pub struct Lab {
    spec: LabSpec,
    prefix: String,
    switch_ns: String,
    client: Host,
    directors: Vec<Host>,
    servers: Vec<Host>,
    routers: Vec<Router>,
    remote_servers: Vec<Host>,
    ecmp_clients: Option<Host>,
    server_bin: Option<PathBuf>,
    // Last: dropped after the rest.
    res: Resources,
}

/// What has to go when the lab goes (also used while a failed build unwinds).
struct Resources {
    id: u64,
    namespaces: Vec<String>,
    procs: Mutex<Vec<Proc>>,
    pass_through: Mutex<Vec<lb_ctl::maps::loader::PassThrough>>,
}

impl Resources {
    fn add_netns(&mut self, ns: &str) -> Result<()> {
        self.namespaces.push(ns.to_owned());
        teardown::register_and(self.id, ns, || {
            run_ok(
                Command::new("ip").args(["netns", "add", ns]),
                "ip netns add",
            )
        })
        .with_context(|| {
            format!(
                "creating network namespace {ns} (is /run writable, and are network \
                 namespaces allowed here? the lab needs root with CAP_SYS_ADMIN)"
            )
        })?;
        Ok(())
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        self.pass_through
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for mut p in self
            .procs
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = p.kill();
        }
        for e in teardown::destroy_namespaces(&self.namespaces) {
            eprintln!("lab teardown: {e:#}");
        }
        teardown::unregister(self.id);
    }
}

static NEXT_LAB: AtomicU64 = AtomicU64::new(0);

impl Lab {
    /// Builds the lab. Fails with a message saying what is missing when not root, when `ip`,
    /// `nsenter` or `ethtool` is missing, or when namespaces cannot be made. On failure,
    /// whatever was already built is torn down.
    pub fn build(spec: &LabSpec) -> Result<Lab> {
        let most = if spec.ecmp.is_some() { 3 } else { 2 };
        ensure!(
            (1..=most).contains(&spec.directors),
            "a lab has 1 to {most} directors (3 only with LabSpec::ecmp), not {}",
            spec.directors
        );
        ensure!(
            (1..=MAX_SERVERS).contains(&spec.servers),
            "a lab has 1 to {MAX_SERVERS} real servers, not {}",
            spec.servers
        );
        ensure!(
            in_subnet(spec.vip) && !host_octets(spec).contains(&spec.vip.octets()[3]),
            "the VIP {} must be in {SUBNET}/{SUBNET_LEN} and not a host's address",
            spec.vip
        );
        if let Some(routed) = &spec.routed {
            routed::validate(routed)?;
        }
        if let Some(ecmp) = &spec.ecmp {
            ecmp::validate(spec, ecmp)?;
        }
        check_prerequisites()?;
        let server_bin = if spec.start_servers {
            Some(find_server_bin(spec.server_bin.as_deref())?)
        } else {
            None
        };
        if spec.install_signal_handler {
            install_signal_handler()?;
        }
        sweep_leftovers().context("sweeping namespaces left by earlier lab runs")?;

        let id = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{BASE_PREFIX}{}-{id}", std::process::id());
        let mut res = Resources {
            id,
            namespaces: Vec::new(),
            procs: Mutex::new(Vec::new()),
            pass_through: Mutex::new(Vec::new()),
        };

        let switch_ns = format!("{prefix}-switch");
        res.add_netns(&switch_ns)?;
        write_sysctls(&switch_ns, &base_sysctls())?;
        ip_batch(
            &switch_ns,
            &[
                "link set lo up".into(),
                format!(
                    "link add {BRIDGE} address {} type bridge stp_state 0",
                    format_mac(&[2, 0, 0, 0, 1, 1])
                ),
                format!("link set {BRIDGE} up"),
            ],
        )?;

        let mut lab_hosts = Vec::new();
        lab_hosts.push(("client".to_owned(), Role::Client, CLIENT_ADDR));
        for d in 1..=spec.directors {
            lab_hosts.push((format!("director-{d}"), Role::Director, director_addr(d)));
        }
        for s in 1..=spec.servers {
            lab_hosts.push((format!("real-server-{s}"), Role::Server, server_addr(s)));
        }

        let mut hosts = Vec::new();
        for (name, role, addr) in lab_hosts {
            let host = add_host(&mut res, &switch_ns, &prefix, &name, role, addr)?;
            configure_host(&res, &switch_ns, &host, spec)?;
            hosts.push(host);
        }
        let client = hosts.remove(0);
        let directors: Vec<Host> = hosts.drain(..spec.directors).collect();
        let servers = hosts;
        let (routers, remote_servers) = match &spec.routed {
            Some(routed) => {
                let built = routed::build(&mut res, &switch_ns, &prefix, spec, routed)?;
                for host in std::iter::once(&client).chain(&directors) {
                    ip_batch(&host.netns, &routed::route_commands(1))?;
                }
                for director in &directors {
                    write_sysctls(&director.netns, &routed::director_sysctls(&director.iface))?;
                }
                built
            }
            None => (Vec::new(), Vec::new()),
        };
        let ecmp_clients = match (&spec.ecmp, routers.first()) {
            (Some(ecmp), Some(router)) => {
                let on_switch: Vec<&Host> = directors.iter().chain(&servers).collect();
                Some(ecmp::build(
                    &mut res,
                    &switch_ns,
                    &prefix,
                    ecmp,
                    &router.outer,
                    &on_switch,
                )?)
            }
            _ => None,
        };

        let lab = Lab {
            spec: spec.clone(),
            prefix,
            switch_ns,
            client,
            directors,
            servers,
            routers,
            remote_servers,
            ecmp_clients,
            server_bin,
            res,
        };
        if let Some(bin) = &lab.server_bin {
            for server in lab.servers.iter().chain(&lab.remote_servers) {
                lab.start_servers(bin, server)?;
            }
        }
        Ok(lab)
    }

    /// Where to pin the director's program and maps for this lab (`--pin-dir`): removed with
    /// the lab, also on Ctrl-C and by the sweep of crashed runs.
    pub fn pin_dir(&self) -> std::path::PathBuf {
        teardown::pin_dir(self.prefix())
    }

    /// The per-run prefix of every namespace of this lab (`lbl-<pid>-<n>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The spec the lab was built from.
    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }

    /// The VIP.
    pub fn vip(&self) -> Ipv4Addr {
        self.spec.vip
    }

    /// The IPv6 VIP.
    pub fn vip6(&self) -> Ipv6Addr {
        self.spec.vip6
    }

    /// The client (`.100`).
    pub fn client(&self) -> &Host {
        &self.client
    }

    /// Director `i`, counted from 0: `director(0)` is director-1.
    pub fn director(&self, i: usize) -> &Host {
        self.directors.get(i).unwrap_or_else(|| {
            panic!(
                "director({i}): the lab has {} director(s), counted from 0",
                self.directors.len()
            )
        })
    }

    /// All directors, director-1 first.
    pub fn directors(&self) -> &[Host] {
        &self.directors
    }

    /// Real server `i`, counted from 0: `server(0)` is real-server-1.
    pub fn server(&self, i: usize) -> &Host {
        self.servers.get(i).unwrap_or_else(|| {
            panic!(
                "server({i}): the lab has {} real server(s), counted from 0",
                self.servers.len()
            )
        })
    }

    /// All real servers, real-server-1 first.
    pub fn servers(&self) -> &[Host] {
        &self.servers
    }

    /// The routers of a routed lab (none otherwise), router-1 first.
    pub fn routers(&self) -> &[Router] {
        &self.routers
    }

    /// Router `i`, counted from 0: `router(0)` is router-1.
    pub fn router(&self, i: usize) -> &Router {
        self.routers.get(i).unwrap_or_else(|| {
            panic!(
                "router({i}): the lab has {} router(s), counted from 0 (LabSpec::routed)",
                self.routers.len()
            )
        })
    }

    /// The real servers behind the routers (none unless [`LabSpec::routed`]).
    pub fn remote_servers(&self) -> &[Host] {
        &self.remote_servers
    }

    /// Remote server `i`, counted from 0: `remote_server(0)` is remote-server-1 (10.20.0.11).
    pub fn remote_server(&self, i: usize) -> &Host {
        self.remote_servers.get(i).unwrap_or_else(|| {
            panic!(
                "remote_server({i}): the lab has {} remote server(s), counted from 0 \
                 (LabSpec::routed)",
                self.remote_servers.len()
            )
        })
    }

    /// The clients' namespace of an ECMP lab (addresses [`client_addr`]), behind router-1.
    pub fn ecmp_clients(&self) -> &Host {
        self.ecmp_clients
            .as_ref()
            .unwrap_or_else(|| panic!("ecmp_clients(): not an ECMP lab (LabSpec::ecmp_lab)"))
    }

    /// Routes the remote subnets (both families) of `host` via router `i` (counted from 0),
    /// replacing the route it had: the next hop of every remote server moves.
    pub fn route_remote_via(&self, host: &Host, i: usize) -> Result<()> {
        let r = self.router(i);
        host.ip_batch(&routed::route_commands(i + 1))
            .with_context(|| {
                format!(
                    "routing the remote subnet of {} via {}",
                    host.name,
                    r.name()
                )
            })
    }

    /// Every host: client, directors, real servers (not the routers and remote servers of a
    /// routed lab: [`Lab::routers`], [`Lab::remote_servers`]).
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        std::iter::once(&self.client)
            .chain(&self.directors)
            .chain(&self.servers)
    }

    /// The host called `name` (`client`, `director-1`, `real-server-2`, ...).
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts().find(|h| h.name == name)
    }

    /// The switch's namespace (holds the bridge [`BRIDGE`] and the switch-side ports).
    pub fn switch_ns(&self) -> &str {
        &self.switch_ns
    }

    /// The bridge-side veth of `host`'s link, inside [`Lab::switch_ns`] (e.g. `sw-director-1`).
    pub fn switch_port_of<'a>(&self, host: &'a Host) -> &'a str {
        &host.switch_port
    }

    /// Runs `args` inside the switch namespace; fails unless it exits 0; returns its stdout.
    pub fn switch_exec_ok(&self, args: &[&str]) -> Result<String> {
        let out = netns_command(&self.switch_ns, args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {args:?} in the switch"))?;
        check_output(&out, &format!("{args:?} in the switch"))
    }

    /// Plugs (`up`) or pulls (`!up`) `host`'s cable: sets its switch-side port up or down. The
    /// host's `eth0` stays administratively up and sees its carrier come and go (`NO-CARRIER`),
    /// as with a real cable.
    pub fn set_link(&self, host: &Host, up: bool) -> Result<()> {
        ip_batch(
            &self.switch_ns,
            &[format!(
                "link set {} {}",
                host.switch_port,
                if up { "up" } else { "down" }
            )],
        )
        .with_context(|| {
            format!(
                "setting the link of {} {}",
                host.name,
                if up { "up" } else { "down" }
            )
        })
    }

    /// Gives `host` a second link to the switch: `iface` (with `mac`, up, no address) in its
    /// namespace, `switch_port` on the bridge. Deleted with the lab.
    pub fn add_link(
        &self,
        host: &Host,
        iface: &str,
        mac: [u8; 6],
        switch_port: &str,
    ) -> Result<()> {
        ip_batch(
            &self.switch_ns,
            &[
                format!(
                    "link add {switch_port} type veth peer name {iface} address {} netns {}",
                    format_mac(&mac),
                    host.netns
                ),
                format!("link set {switch_port} master {BRIDGE}"),
                format!("link set {switch_port} up"),
            ],
        )?;
        host.ip_batch(&[format!("link set {iface} up")])
            .with_context(|| format!("adding {iface} to {}", host.name))
    }

    /// Adds both VIPs to `host`'s `eth0` (a director taking over the VIP): the IPv4 VIP as
    /// `/32` (so the director answers ARP for it), the IPv6 VIP as `/128 nodad` (so it answers
    /// neighbour solicitations for it at once).
    pub fn add_vip(&self, host: &Host) -> Result<()> {
        ip_batch(&host.netns, &vip_commands("add", &self.spec, HOST_IFACE))
    }

    /// Removes both VIPs from `host`'s `eth0`.
    pub fn del_vip(&self, host: &Host) -> Result<()> {
        ip_batch(&host.netns, &vip_commands("del", &self.spec, HOST_IFACE))
    }

    /// Adds both VIPs to real server `host`'s `lo` again (as the lab configured it).
    pub fn add_server_vip(&self, host: &Host) -> Result<()> {
        ip_batch(&host.netns, &vip_commands("add", &self.spec, "lo"))
    }

    /// Removes both VIPs from real server `host`'s `lo`: it drops what clients send to them.
    pub fn del_server_vip(&self, host: &Host) -> Result<()> {
        ip_batch(&host.netns, &vip_commands("del", &self.spec, "lo"))
    }

    /// The `lab-server` binary used (`None` when the lab started no servers).
    pub fn server_bin(&self) -> Option<&Path> {
        self.server_bin.as_deref()
    }

    /// How many HTTP requests `server` has served (asked over its own `lo`, so it works while
    /// its link is down; the query itself is not counted).
    pub fn request_count(&self, server: &Host) -> Result<u64> {
        self.local_http(server, "/count")
    }

    /// Sets `server`'s request count back to 0; returns the count it had.
    pub fn reset_count(&self, server: &Host) -> Result<u64> {
        self.local_http(server, "/reset")
    }

    fn local_http(&self, server: &Host, path: &str) -> Result<u64> {
        let (status, body) = http_get(
            server,
            Ipv4Addr::LOCALHOST,
            self.spec.http_port,
            path,
            Duration::from_secs(5),
        )?;
        ensure!(status == 200, "{path} on {}: status {status}", server.name);
        body.trim()
            .parse()
            .with_context(|| format!("{path} on {}: bad answer {body:?}", server.name))
    }

    /// Keeps `proc` alive as long as the lab (killed at teardown).
    pub fn adopt(&self, proc: Proc) {
        self.res
            .procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(proc);
    }

    /// The pids of the processes the lab started itself (its servers).
    pub fn server_pids(&self) -> Vec<u32> {
        self.res
            .procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(Proc::pid)
            .collect()
    }

    /// The pids of every process currently inside one of the lab's namespaces.
    pub fn pids_inside(&self) -> Vec<i32> {
        let ids: Vec<_> = self
            .res
            .namespaces
            .iter()
            .filter_map(|ns| teardown::netns_id(ns))
            .collect();
        teardown::pids_in(&ids)
    }

    /// Where the lab's BGP speakers keep their configuration and control sockets
    /// (`$TMPDIR/<prefix>-bird`, `lb_tests::bird`): removed with the lab.
    pub fn bird_dir(&self) -> PathBuf {
        env::temp_dir().join(format!("{}-bird", self.prefix))
    }

    /// Every namespace of the lab.
    pub fn namespaces(&self) -> &[String] {
        &self.res.namespaces
    }

    /// Tears the lab down now (as dropping it does) and fails if any of its namespaces is
    /// still there afterwards.
    pub fn close(self) -> Result<()> {
        let namespaces = self.namespaces().to_vec();
        drop(self);
        let left: Vec<&String> = namespaces
            .iter()
            .filter(|ns| Path::new(NETNS_DIR).join(ns).exists())
            .collect();
        ensure!(left.is_empty(), "namespaces left after the lab: {left:?}");
        Ok(())
    }

    fn start_servers(&self, bin: &Path, server: &Host) -> Result<()> {
        let bin = bin.to_str().context("the lab-server path is not UTF-8")?;
        let http_port = self.spec.http_port.to_string();
        let udp_port = self.spec.udp_port.to_string();
        let (rip, vip) = (server.addr.to_string(), self.spec.vip.to_string());
        let (rip6, vip6) = (server.addr6.to_string(), self.spec.vip6.to_string());
        let runs: [Vec<&str>; 2] = [
            vec![bin, "http", "--name", &server.name, "--port", &http_port],
            vec![
                bin,
                "udp-echo",
                "--name",
                &server.name,
                "--port",
                &udp_port,
                "--addr",
                &rip,
                "--addr",
                &vip,
                "--addr",
                "127.0.0.1",
                "--addr",
                &rip6,
                "--addr",
                &vip6,
                "--addr",
                "::1",
            ],
        ];
        for args in runs {
            self.start_server_process(server, &args)?;
        }
        Ok(())
    }

    /// Starts one more `lab-server http` on `server`, on `port` (both families, every address),
    /// owned by the lab like the others; waits (at most 10 s) until it is ready. For services
    /// on ports other than [`LabSpec::http_port`] (DR keeps the port: the real server must
    /// listen on the VIP's port).
    pub fn start_http(&self, server: &Host, port: u16) -> Result<()> {
        let bin = self
            .server_bin
            .as_deref()
            .context("this lab runs no lab-server (start_servers: false)")?;
        let bin = bin.to_str().context("the lab-server path is not UTF-8")?;
        let port = port.to_string();
        self.start_server_process(
            server,
            &[bin, "http", "--name", &server.name, "--port", &port],
        )
    }

    /// Starts `args` (`lab-server MODE ...`) on `server` and waits for its `ready` line.
    fn start_server_process(&self, server: &Host, args: &[&str]) -> Result<()> {
        let what = format!("lab-server {} in {}", args[1], server.name);
        let mut cmd = server.command(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut child = proc::spawn_child(cmd).with_context(|| format!("starting {what}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        self.adopt(Proc::from_child(child, what.clone()));
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(Ok(line))) if line.starts_with("ready") => {}
            Ok(Some(Ok(line))) => bail!("{what} said {line:?} instead of ready"),
            Ok(_) => bail!("{what} exited before it was ready (its error is on stderr)"),
            Err(_) => bail!("{what} was not ready after 10 s"),
        }
        Ok(())
    }
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.prefix)
            .field("client", &self.client)
            .field("directors", &self.directors)
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

/// Director `d`'s address (1-based): `.134`, `.137`, `.132` (the third only in ECMP labs).
pub fn director_addr(d: usize) -> Ipv4Addr {
    match d {
        1 => Ipv4Addr::new(192, 168, 58, 134),
        2 => Ipv4Addr::new(192, 168, 58, 137),
        3 => Ipv4Addr::new(192, 168, 58, 132),
        _ => panic!("a lab has directors 1 to 3 only, not {d}"),
    }
}

/// Real server `s`'s address (1-based): `.135`, `.136`, then `.(135 + s)`: `.138`, `.139`, ...
pub fn server_addr(s: usize) -> Ipv4Addr {
    assert!(
        (1..=MAX_SERVERS).contains(&s),
        "real servers are numbered 1 to {MAX_SERVERS}, not {s}"
    );
    let last = match s {
        1 => 135,
        2 => 136,
        _ => 135 + s as u8,
    };
    Ipv4Addr::new(192, 168, 58, last)
}

/// The IPv6 address of the host with the IPv4 address `addr`: in [`SUBNET6`], the last
/// octet's decimal digits read as hex, so the two look alike: `.135` -> `fd00:58::135`.
pub fn addr6_of(addr: Ipv4Addr) -> Ipv6Addr {
    let last = addr.octets()[3];
    let digits = u16::from(last / 100) << 8 | u16::from(last / 10 % 10) << 4 | u16::from(last % 10);
    let mut segments = SUBNET6.segments();
    segments[7] = digits;
    Ipv6Addr::from(segments)
}

/// The MAC the lab gives the host with address `addr`: `02:00:00:00:00:<last octet>`.
pub fn host_mac(addr: Ipv4Addr) -> [u8; 6] {
    [2, 0, 0, 0, 0, addr.octets()[3]]
}

/// Finds the `lab-server` binary (order in the module doc).
pub fn find_server_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    const HOW: &str = "build it with `cargo build -p lb-tests --bin lab-server`, or give its path \
                       in LabSpec::server_bin or the environment variable LB_LAB_SERVER";
    if let Some(path) = explicit {
        ensure!(
            path.is_file(),
            "lab-server binary {} not found",
            path.display()
        );
        return Ok(path.to_owned());
    }
    if let Some(path) = env::var_os("LB_LAB_SERVER") {
        let path = PathBuf::from(path);
        ensure!(
            path.is_file(),
            "LB_LAB_SERVER={} is not a file; {HOW}",
            path.display()
        );
        return Ok(path);
    }
    if let Ok(exe) = env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join("lab-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let mut target_dirs = Vec::new();
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR") {
        target_dirs.push(PathBuf::from(dir));
    }
    target_dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target_dirs
        .iter()
        .flat_map(|t| ["debug", "release"].map(|p| t.join(p).join("lab-server")))
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .with_context(|| format!("the lab-server binary was not found; {HOW}"))
}

fn in_subnet(ip: Ipv4Addr) -> bool {
    ip.octets()[..3] == SUBNET.octets()[..3]
}

fn host_octets(spec: &LabSpec) -> Vec<u8> {
    let mut v = vec![CLIENT_ADDR.octets()[3]];
    v.extend((1..=spec.directors).map(|d| director_addr(d).octets()[3]));
    v.extend((1..=spec.servers).map(|s| server_addr(s).octets()[3]));
    v.extend([0, 1, 255]);
    if spec.routed.as_ref().is_some_and(|r| r.routers > 1) {
        v.push(router_addr(2).octets()[3]);
    }
    v
}

fn check_prerequisites() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the lab needs root (it creates network namespaces, veths and XDP programs): run \
             the tests as root, e.g. `sudo -E cargo test -p lb-tests`"
        );
    }
    if !Path::new("/proc/self/ns/net").exists() {
        bail!("this kernel has no network namespaces (/proc/self/ns/net is missing)");
    }
    for (tool, args, what) in [
        (
            "ip",
            &["-V"][..],
            "iproute2's `ip` (apt-get install iproute2)",
        ),
        ("nsenter", &["--version"][..], "util-linux's `nsenter`"),
        (
            "ethtool",
            &["--version"][..],
            "`ethtool`: run `cargo xtask setup` (it installs it)",
        ),
    ] {
        let ok = Command::new(tool)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!("the lab needs {what}, and `{tool}` is not installed or does not run");
        }
    }
    Ok(())
}

/// `nsenter --net=/run/netns/NS -- args...`.
fn netns_command(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .args(args);
    cmd
}

fn check_output(out: &Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    check_output(&out, what)
}

/// Runs iproute2 commands (one per line) inside `ns` with `ip -n NS -batch -`.
fn ip_batch(ns: &str, cmds: &[String]) -> Result<()> {
    let script = cmds.join("\n") + "\n";
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running `ip -batch`")?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`ip -n {ns}` failed: {}\ncommands:\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Writes sysctls (`net/ipv4/...` relative to /proc/sys) inside `ns`, from a thread that has
/// entered it (`/proc/sys/net` shows the namespace of the thread that opens it). Keys whose
/// file does not exist (e.g. IPv6 compiled out) are skipped.
fn write_sysctls(ns: &str, settings: &[(String, &'static str)]) -> Result<()> {
    let settings = settings.to_vec();
    let ns_name = ns.to_owned();
    lb_ctl::net::netns::run_in(ns, move || {
        for (key, value) in settings {
            let path = Path::new("/proc/sys").join(&key);
            if !path.exists() {
                continue;
            }
            fs::write(&path, value)
                .with_context(|| format!("setting {key}={value} in {ns_name}"))?;
        }
        Ok(())
    })
}

/// Set in every namespace before its `eth0` exists (`default` then applies to it). IPv6 is on,
/// but quiet: no router solicitations, no router advertisements taken, no duplicate address
/// detection (the lab adds its addresses with `nodad` too), so the wire carries only the
/// neighbour discovery and MLD reports the addresses need.
fn base_sysctls() -> Vec<(String, &'static str)> {
    let mut v = Vec::new();
    for scope in ["all", "default"] {
        for (key, value) in [
            ("disable_ipv6", "0"),
            ("accept_ra", "0"),
            ("router_solicitations", "0"),
            ("accept_dad", "0"),
            ("dad_transmits", "0"),
        ] {
            v.push((format!("net/ipv6/conf/{scope}/{key}"), value));
        }
        for key in ["rp_filter", "arp_ignore", "arp_announce"] {
            v.push((format!("net/ipv4/conf/{scope}/{key}"), "0"));
        }
    }
    v
}

fn add_host(
    res: &mut Resources,
    switch_ns: &str,
    prefix: &str,
    name: &str,
    role: Role,
    addr: Ipv4Addr,
) -> Result<Host> {
    let netns = format!("{prefix}-{name}");
    res.add_netns(&netns)?;
    write_sysctls(&netns, &base_sysctls())?;
    let switch_port = format!("sw-{}", name.strip_prefix("real-").unwrap_or(name));
    ensure!(
        switch_port.len() <= 15,
        "interface name {switch_port} too long"
    );
    let mac = host_mac(addr);
    let addr6 = addr6_of(addr);
    let port_mac = [2, 0, 0, 0, 1, addr.octets()[3]];
    ip_batch(
        switch_ns,
        &[
            format!(
                "link add {switch_port} address {} type veth peer name {HOST_IFACE} address {} \
                 netns {netns}",
                format_mac(&port_mac),
                format_mac(&mac)
            ),
            format!("link set {switch_port} master {BRIDGE}"),
            format!("link set {switch_port} up"),
        ],
    )?;
    ip_batch(
        &netns,
        &[
            "link set lo up".into(),
            format!("addr add {addr}/{SUBNET_LEN} dev {HOST_IFACE}"),
            format!("addr add {addr6}/{SUBNET6_LEN} dev {HOST_IFACE} nodad"),
            format!("link set {HOST_IFACE} up"),
        ],
    )?;
    Ok(Host {
        name: name.to_owned(),
        role,
        netns,
        iface: HOST_IFACE.to_owned(),
        addr,
        addr6,
        mac,
        switch_port,
    })
}

/// `ip addr add|del` of both VIPs on `dev`: the IPv4 VIP `/32`, the IPv6 VIP `/128 nodad`.
/// On a director's `eth0` the IPv6 VIP is also `preferred_lft 0` (deprecated): still valid, so
/// the director answers neighbour solicitations for it and takes packets to it, but never
/// chosen as the source of the director's own connections. Otherwise IPv6 source selection
/// may pick the VIP (it did here, for connections to the real servers), and a real server
/// answers a health check sent from the VIP to itself, the VIP being on its `lo`. (IPv4 takes
/// the subnet's primary address, never the `/32`.)
fn vip_commands(op: &str, spec: &LabSpec, dev: &str) -> Vec<String> {
    let flags = match (op, dev) {
        ("add", HOST_IFACE) => " nodad preferred_lft 0",
        ("add", _) => " nodad",
        _ => "",
    };
    vec![
        format!("addr {op} {}/32 dev {dev}", spec.vip),
        format!("addr {op} {}/128 dev {dev}{flags}", spec.vip6),
    ]
}

fn configure_host(res: &Resources, switch_ns: &str, host: &Host, spec: &LabSpec) -> Result<()> {
    match host.role {
        Role::Client => {
            ethtool_tx_off(&host.netns, HOST_IFACE)?;
        }
        Role::Director => {
            if host.name == "director-1" && spec.ecmp.is_none() {
                ip_batch(&host.netns, &vip_commands("add", spec, HOST_IFACE))?;
            }
            ethtool_tx_off(switch_ns, &host.switch_port)?;
            if spec.pass_through {
                let guard = attach_pass_through(switch_ns, &host.switch_port)?;
                res.pass_through
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(guard);
            }
        }
        Role::Router => {}
        Role::Server => {
            // IPv6 needs no sysctl: Linux answers neighbour solicitations only for addresses
            // of the interface they arrive on, and the VIP is on `lo` (README, real servers).
            ip_batch(&host.netns, &vip_commands("add", spec, "lo"))?;
            let mut sysctls = Vec::new();
            for scope in ["all", HOST_IFACE] {
                sysctls.push((format!("net/ipv4/conf/{scope}/arp_ignore"), "1"));
                sysctls.push((format!("net/ipv4/conf/{scope}/arp_announce"), "2"));
            }
            write_sysctls(&host.netns, &sysctls)?;
        }
    }
    Ok(())
}

fn ethtool_tx_off(ns: &str, iface: &str) -> Result<()> {
    let out = netns_command(ns, &["ethtool", "-K", iface, "tx", "off"])
        .stdin(Stdio::null())
        .output()
        .context("running ethtool (install it with `cargo xtask setup`)")?;
    check_output(&out, &format!("`ethtool -K {iface} tx off` in {ns}"))?;
    Ok(())
}

/// The pass-through XDP program on the switch side of a director's link (docs/lab.md: without it
/// veth drops the frames the director sends with XDP_TX).
fn attach_pass_through(switch_ns: &str, port: &str) -> Result<lb_ctl::maps::loader::PassThrough> {
    lb_ctl::maps::loader::attach_pass_through(switch_ns, port).with_context(|| {
        format!(
            "attaching the pass-through XDP program to {port} in {switch_ns} (set \
             LabSpec::pass_through to false for labs that do not run XDP_TX)"
        )
    })
}

/// Waits until `f` returns true, polling every 20 ms, at most `timeout`; returns whether it did.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a TCP connection from inside `host` to `addr:port` can be opened within `timeout`.
pub fn can_connect(host: &Host, addr: Ipv4Addr, port: u16, timeout: Duration) -> bool {
    let target = std::net::SocketAddr::from((addr, port));
    host.run_in(move || Ok(TcpStream::connect_timeout(&target, timeout).is_ok()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_scheme() {
        assert_eq!(server_addr(1), Ipv4Addr::new(192, 168, 58, 135));
        assert_eq!(server_addr(2), Ipv4Addr::new(192, 168, 58, 136));
        assert_eq!(server_addr(3), Ipv4Addr::new(192, 168, 58, 138));
        assert_eq!(server_addr(MAX_SERVERS), Ipv4Addr::new(192, 168, 58, 235));
        assert_eq!(director_addr(2), Ipv4Addr::new(192, 168, 58, 137));
        assert_eq!(host_mac(server_addr(1)), [2, 0, 0, 0, 0, 0x87]);
        assert_eq!(addr6_of(server_addr(1)).to_string(), "fd00:58::135");
        assert_eq!(
            addr6_of(server_addr(MAX_SERVERS)).to_string(),
            "fd00:58::235"
        );
        assert_eq!(addr6_of(CLIENT_ADDR), CLIENT_ADDR6);
        assert_eq!(addr6_of(DEFAULT_VIP), DEFAULT_VIP6);
        assert_eq!(
            addr6_of(Ipv4Addr::new(10, 0, 0, 7)).to_string(),
            "fd00:58::7"
        );
        let spec = LabSpec {
            directors: 2,
            servers: MAX_SERVERS,
            ..LabSpec::default()
        };
        let mut octets = host_octets(&spec);
        let n = octets.len();
        octets.sort_unstable();
        octets.dedup();
        assert_eq!(octets.len(), n, "addresses collide");
        assert!(!octets.contains(&DEFAULT_VIP.octets()[3]));
    }

    #[test]
    fn macs_round_trip() {
        let mac = [2, 0, 0, 0, 0, 0x86];
        assert_eq!(format_mac(&mac), "02:00:00:00:00:86");
        assert_eq!(parse_mac("02:00:00:00:00:86"), Some(mac));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:86:01"), None);
    }
}
