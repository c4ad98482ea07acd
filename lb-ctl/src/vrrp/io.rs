//! One VRRP instance on the wire: a tokio task that runs the [`Machine`] with raw sockets.
//!
//! - Receive: a raw IPv4 socket for protocol 112, bound to the interface (SO_BINDTODEVICE),
//!   member of 224.0.0.18 on it (IP_ADD_MEMBERSHIP with the ifindex). Every packet is
//!   checked (TTL 255, length, checksum, version, authentication); bad ones are counted,
//!   logged and ignored.
//! - Send: a second raw socket bound to the primary address (the source of our adverts),
//!   TTL and multicast TTL 255, multicast out of the interface, no loopback; to 224.0.0.18,
//!   or to each unicast peer.
//! - Master: the virtual addresses are added with rtnetlink ([`crate::net::addr`]) and
//!   announced with gratuitous ARP (an AF_PACKET socket), `garp_count` per address,
//!   `garp_delay` apart. Leaving master removes them.
//! - The interface's state (IFF_UP and IFF_RUNNING) is polled: losing the carrier is a fault.
//! - Transitions are logged and run `notify_master` / `notify_backup` / `notify_fault`
//!   (`/bin/sh -c`, with `LB_VRRP_INSTANCE`, `LB_VRRP_STATE`, `LB_VRRP_REASON` set), tracked
//!   by the caller's [`Hooks`] (a timeout each; killed, process group and all, on stop).

use std::{
    io,
    mem::size_of,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use tokio::{io::unix::AsyncFd, sync::watch, task::JoinHandle, time::Instant};
use tracing::{debug, error, info, warn};

use super::{
    packet::{self, Advert, Expect, PacketError, Version},
    state::{Action, Event, Machine, Params, State},
};
use crate::{
    config::VrrpConfig,
    exec::hooks::Hooks,
    net::{addr, link},
};

/// How often the interface's state is looked at.
const LINK_POLL: Duration = Duration::from_millis(100);
/// Invalid packets of one kind logged at warn level before the rest go to debug.
const WARN_FIRST: u64 = 10;

/// Counters and state of one instance, shared with whoever shows them.
#[derive(Debug, Default)]
pub struct Status {
    pub state: Mutex<Option<State>>,
    pub master: Mutex<Option<Ipv4Addr>>,
    pub adverts_sent: AtomicU64,
    pub adverts_received: AtomicU64,
    /// Truncated, wrong version or type, bad length or checksum.
    pub malformed: AtomicU64,
    /// TTL not 255.
    pub bad_ttl: AtomicU64,
    /// v2 authentication mismatch.
    pub bad_auth: AtomicU64,
    /// v2 interval differs from ours, or the other version.
    pub mismatched: AtomicU64,
    /// Transitions to master.
    pub became_master: AtomicU64,
}

impl Status {
    /// `state=master master=... sent=N received=N malformed=N ttl=N auth=N mismatched=N`.
    pub fn summary(&self) -> String {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or("-", State::as_str);
        let master = self
            .master
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or("-".to_string(), |a| a.to_string());
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "state={state} master={master} adverts_sent={} adverts_received={} malformed={} \
             bad_ttl={} bad_auth={} mismatched={} became_master={}",
            n(&self.adverts_sent),
            n(&self.adverts_received),
            n(&self.malformed),
            n(&self.bad_ttl),
            n(&self.bad_auth),
            n(&self.mismatched),
            n(&self.became_master),
        )
    }
}

/// A running instance: its task and its status.
pub struct Handle {
    pub name: String,
    pub status: Arc<Status>,
    pub task: JoinHandle<()>,
}

/// Starts `cfg` as a task; it runs until `stop` turns true (then hands over with priority 0
/// if master) or fails to start (logged). Its notify hooks run in `hooks`.
pub fn spawn(cfg: VrrpConfig, stop: watch::Receiver<bool>, hooks: Hooks) -> Handle {
    let status = Arc::new(Status::default());
    let name = cfg.name.clone();
    let st = status.clone();
    let task = tokio::spawn(async move {
        let name = cfg.name.clone();
        if let Err(e) = run(cfg, stop, st, hooks).await {
            error!(instance = %name, error = %format!("{e:#}"), "VRRP instance stopped");
        }
    });
    Handle { name, status, task }
}

struct Instance {
    cfg: VrrpConfig,
    ifindex: u32,
    mac: [u8; 6],
    primary: Ipv4Addr,
    recv: AsyncFd<OwnedFd>,
    send: OwnedFd,
    arp: OwnedFd,
    expect: Expect,
    status: Arc<Status>,
    garps: Option<JoinHandle<()>>,
    hooks: Hooks,
}

/// Runs one instance until `stop`.
pub async fn run(
    cfg: VrrpConfig,
    mut stop: watch::Receiver<bool>,
    status: Arc<Status>,
    hooks: Hooks,
) -> Result<()> {
    let ifindex = link::ifindex(&cfg.interface)?;
    let mac = link::mac(ifindex)?;
    let vips: Vec<Ipv4Addr> = cfg.virtual_addresses.iter().map(|(a, _)| *a).collect();
    let primary = blocking(move || addr::list(ifindex))
        .await?
        .into_iter()
        .map(|(a, _)| a)
        .find(|a| !vips.contains(a))
        .with_context(|| {
            format!(
                "{} has no IPv4 address of its own to send VRRP adverts from",
                cfg.interface
            )
        })?;
    let multicast = cfg.unicast_peers.is_empty();
    let recv = recv_socket(&cfg.interface, ifindex, multicast)
        .with_context(|| format!("opening the VRRP receive socket on {}", cfg.interface))?;
    let send = send_socket(&cfg.interface, ifindex, primary)
        .with_context(|| format!("opening the VRRP send socket on {}", cfg.interface))?;
    let arp = arp_socket().context("opening the ARP (AF_PACKET) socket")?;
    let expect = Expect {
        version: cfg.version,
        auth: cfg.auth_pass.as_deref().map(packet::auth_data),
        interval: cfg.advert_interval.as_secs() as u16,
    };
    let params = Params {
        priority: cfg.priority,
        interval: cfg.advert_interval,
        preempt: cfg.preempt,
        preempt_delay: cfg.preempt_delay,
        primary,
        learn_interval: cfg.version == Version::V3,
    };
    let mut inst = Instance {
        ifindex,
        mac,
        primary,
        // SAFETY: the OwnedFd is a valid socket that only the AsyncFd owns and closes.
        recv: unsafe { AsyncFd::register_with_interest(recv, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering the VRRP socket: {e}"))?,
        send,
        arp,
        expect,
        status,
        garps: None,
        hooks,
        cfg,
    };
    info!(
        instance = %inst.cfg.name,
        interface = %inst.cfg.interface,
        vrid = inst.cfg.virtual_router_id,
        priority = inst.cfg.priority,
        version = %inst.cfg.version,
        primary = %primary,
        "VRRP instance starting"
    );
    let mut m = Machine::new(params);
    let mut link_up = link_is_up(&inst.cfg.interface);
    if link_up {
        let actions = m.handle(now(), Event::Startup);
        inst.execute(&m, actions).await;
    } else {
        warn!(instance = %inst.cfg.name, "interface is down at start: fault");
        *inst.status.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(State::Fault);
        // From Initialize, a link-up later is a startup.
    }
    let mut poll = tokio::time::interval(LINK_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 4096];
    loop {
        let deadline = m.deadline().map(Instant::from_std);
        tokio::select! {
            _ = stop.changed() => {
                let actions = m.handle(now(), Event::Shutdown);
                inst.execute(&m, actions).await;
                break;
            }
            _ = sleep_until(deadline) => {
                let actions = m.handle(now(), Event::Timer);
                inst.execute(&m, actions).await;
            }
            _ = poll.tick() => {
                let up = link_is_up(&inst.cfg.interface);
                if up != link_up {
                    link_up = up;
                    let event = match (up, m.state()) {
                        (true, State::Initialize) => Event::Startup,
                        (true, _) => Event::LinkUp,
                        (false, _) => Event::LinkDown,
                    };
                    info!(instance = %inst.cfg.name, up, "interface state changed");
                    let actions = m.handle(now(), event);
                    inst.execute(&m, actions).await;
                }
            }
            ready = inst.recv.readable() => {
                let mut guard = ready.context("waiting for VRRP packets")?;
                let mut events = Vec::new();
                loop {
                    let n = match guard.try_io(|fd| recv_from(fd.get_ref().as_raw_fd(), &mut buf)) {
                        Ok(Ok(n)) => n,
                        Ok(Err(e)) => {
                            warn!(instance = %inst.cfg.name, error = %e, "reading a VRRP packet");
                            break;
                        }
                        Err(_would_block) => break,
                    };
                    events.extend(inst.receive(&buf[..n]));
                }
                drop(guard);
                for event in events {
                    let actions = m.handle(now(), event);
                    inst.execute(&m, actions).await;
                }
            }
        }
    }
    if let Some(g) = inst.garps.take() {
        g.abort();
    }
    info!(instance = %inst.cfg.name, status = %inst.status.summary(), "VRRP instance stopped");
    Ok(())
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Runs a blocking call (rtnetlink) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a blocking task panicked")?
}

impl Instance {
    /// Checks one received packet; an event for the machine if it is a valid advert of ours.
    fn receive(&self, packet: &[u8]) -> Option<Event> {
        let name = &self.cfg.name;
        let (ip, msg) = match packet::parse_ipv4(packet) {
            Ok(x) => x,
            Err(e) => {
                let src = (packet.len() >= 20)
                    .then(|| Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]));
                self.invalid(&e, src);
                return None;
            }
        };
        if ip.src == self.primary {
            return None; // our own
        }
        // With unicast peers, only they count (keepalived's behaviour).
        if !self.cfg.unicast_peers.is_empty() && !self.cfg.unicast_peers.contains(&ip.src) {
            debug!(instance = %name, src = %ip.src, "VRRP packet from a non-peer ignored");
            return None;
        }
        let advert = match packet::decode(msg, ip.src, ip.dst) {
            Ok(a) => a,
            Err(e) => {
                self.invalid(&e, Some(ip.src));
                return None;
            }
        };
        if advert.vrid != self.cfg.virtual_router_id {
            return None; // another virtual router on the same link
        }
        if let Err(e) = self.expect.check(&advert) {
            self.invalid(&e, Some(ip.src));
            return None;
        }
        self.status.adverts_received.fetch_add(1, Ordering::Relaxed);
        let ours: Vec<Ipv4Addr> = self.cfg.virtual_addresses.iter().map(|(a, _)| *a).collect();
        if advert.priority != 0 && advert.addresses != ours {
            debug!(instance = %name, src = %ip.src, addresses = ?advert.addresses, "advert lists other addresses than ours");
        }
        Some(Event::Advert {
            src: ip.src,
            priority: advert.priority,
            interval: advert.interval_duration(),
        })
    }

    fn invalid(&self, e: &PacketError, src: Option<Ipv4Addr>) {
        let counter = match e {
            PacketError::Ttl(_) => &self.status.bad_ttl,
            PacketError::Auth => &self.status.bad_auth,
            PacketError::Interval { .. } | PacketError::Version(_) => &self.status.mismatched,
            _ => &self.status.malformed,
        };
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let src = src.map_or("-".to_string(), |s| s.to_string());
        if n <= WARN_FIRST {
            warn!(instance = %self.cfg.name, src = %src, error = %e, count = n, "invalid VRRP packet ignored");
        } else {
            debug!(instance = %self.cfg.name, src = %src, error = %e, count = n, "invalid VRRP packet ignored");
        }
    }

    async fn execute(&mut self, m: &Machine, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SendAdvert { priority } => self.send_advert(priority),
                Action::AddAddresses => self.addresses(true).await,
                Action::RemoveAddresses => {
                    if let Some(g) = self.garps.take() {
                        g.abort();
                    }
                    self.addresses(false).await;
                }
                Action::SendGarps => self.start_garps(),
                Action::Transition { from, to, reason } => {
                    *self.status.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(to);
                    *self.status.master.lock().unwrap_or_else(|e| e.into_inner()) = m.master();
                    if to == State::Master {
                        self.status.became_master.fetch_add(1, Ordering::Relaxed);
                    }
                    info!(
                        instance = %self.cfg.name,
                        from = %from,
                        to = %to,
                        reason = %reason,
                        "VRRP transition"
                    );
                    self.notify(to, &reason);
                }
            }
        }
        *self.status.master.lock().unwrap_or_else(|e| e.into_inner()) = m.master();
    }

    fn send_advert(&self, priority: u8) {
        let interval = match self.cfg.version {
            Version::V2 => self.cfg.advert_interval.as_secs() as u16,
            Version::V3 => (self.cfg.advert_interval.as_millis() / 10) as u16,
        };
        let advert = Advert {
            version: self.cfg.version,
            vrid: self.cfg.virtual_router_id,
            priority,
            interval,
            addresses: self.cfg.virtual_addresses.iter().map(|(a, _)| *a).collect(),
            auth: self.expect.auth,
        };
        let dests: Vec<Ipv4Addr> = if self.cfg.unicast_peers.is_empty() {
            vec![packet::MULTICAST]
        } else {
            self.cfg.unicast_peers.clone()
        };
        for dst in dests {
            let msg = packet::encode(&advert, self.primary, dst);
            match send_to(self.send.as_raw_fd(), &msg, dst) {
                Ok(()) => {
                    self.status.adverts_sent.fetch_add(1, Ordering::Relaxed);
                }
                // A down link refuses; the link poll turns that into a fault.
                Err(e) => {
                    debug!(instance = %self.cfg.name, dst = %dst, error = %e, "sending an advert")
                }
            }
        }
    }

    async fn addresses(&self, add: bool) {
        let ifindex = self.ifindex;
        let list = self.cfg.virtual_addresses.clone();
        let name = self.cfg.name.clone();
        let result = blocking(move || {
            let mut changed = Vec::new();
            for (a, len) in list {
                let done = if add {
                    addr::add(ifindex, a, len)
                } else {
                    addr::del(ifindex, a, len)
                };
                match done {
                    Ok(true) => changed.push(format!("{a}/{len}")),
                    Ok(false) => {}
                    Err(e) => error!(instance = %name, error = %format!("{e:#}"), "changing a virtual address"),
                }
            }
            Ok(changed)
        })
        .await;
        match result {
            Ok(changed) if !changed.is_empty() => info!(
                instance = %self.cfg.name,
                interface = %self.cfg.interface,
                addresses = %changed.join(" "),
                "{}",
                if add { "virtual addresses added" } else { "virtual addresses removed" }
            ),
            Ok(_) => {}
            Err(e) => {
                error!(instance = %self.cfg.name, error = %format!("{e:#}"), "changing virtual addresses")
            }
        }
    }

    fn start_garps(&mut self) {
        if let Some(g) = self.garps.take() {
            g.abort();
        }
        if self.cfg.garp_count == 0 {
            return;
        }
        let frames: Vec<[u8; 42]> = self
            .cfg
            .virtual_addresses
            .iter()
            .map(|(a, _)| garp_frame(self.mac, *a))
            .collect();
        let ifindex = self.ifindex;
        // Its own handle on the socket: the task may outlive this borrow.
        let owned = match self.arp.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                warn!(instance = %self.cfg.name, error = %e, "cannot duplicate the ARP socket; no gratuitous ARP");
                return;
            }
        };
        let (count, delay, name) = (
            self.cfg.garp_count,
            self.cfg.garp_delay,
            self.cfg.name.clone(),
        );
        self.garps = Some(tokio::spawn(async move {
            for i in 0..count {
                if i > 0 {
                    tokio::time::sleep(delay).await;
                }
                for f in &frames {
                    if let Err(e) = send_frame(owned.as_raw_fd(), ifindex, f) {
                        debug!(instance = %name, error = %e, "sending a gratuitous ARP");
                    }
                }
            }
        }));
    }

    fn notify(&self, to: State, reason: &str) {
        let cmd = match to {
            State::Master => &self.cfg.notify_master,
            State::Backup => &self.cfg.notify_backup,
            State::Fault => &self.cfg.notify_fault,
            State::Initialize => &None,
        };
        let Some(cmd) = cmd.clone() else {
            return;
        };
        let env = vec![
            ("LB_VRRP_INSTANCE", self.cfg.name.clone()),
            ("LB_VRRP_STATE", to.as_str().to_string()),
            ("LB_VRRP_REASON", reason.to_string()),
        ];
        let (name, command) = (self.cfg.name.clone(), cmd.clone());
        let done = Box::new(move |result| match result {
            Ok(0) => {}
            Ok(code) => {
                warn!(instance = %name, command = %command, status = code, "notify hook failed")
            }
            Err(e) => warn!(instance = %name, command = %command, error = %e, "notify hook failed"),
        });
        self.hooks.spawn(cmd, env, done);
    }
}

/// A gratuitous ARP request for `ip` from `mac`: broadcast, sender = target = `ip`.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // Target MAC zero (RFC 5227), target IP = sender IP.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Whether the interface is up and has a carrier.
pub fn link_is_up(name: &str) -> bool {
    let Ok(fd) = socket(libc::AF_INET, libc::SOCK_DGRAM, 0) else {
        return false;
    };
    // SAFETY: ifreq is plain old data.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_flags.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return false;
    }
    // SAFETY: the kernel filled in the flags member.
    let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
    flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0
}

fn socket(domain: i32, ty: i32, proto: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(fd: RawFd, level: i32, name: i32, value: &T, what: &str) -> Result<()> {
    // SAFETY: value points at a T of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("setting {what}"));
    }
    Ok(())
}

fn bind_to_device(fd: RawFd, iface: &str) -> Result<()> {
    // SAFETY: the name's bytes and length.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            iface.as_ptr().cast(),
            iface.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("setting SO_BINDTODEVICE");
    }
    Ok(())
}

fn in_addr(a: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from(a).to_be(),
    }
}

fn raw_socket() -> Result<OwnedFd> {
    socket(
        libc::AF_INET,
        libc::SOCK_RAW | libc::SOCK_NONBLOCK,
        i32::from(packet::PROTO),
    )
    .map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            anyhow::anyhow!("opening a raw socket: permission denied (needs root or CAP_NET_RAW)")
        } else {
            anyhow::Error::new(e).context("opening a raw socket")
        }
    })
}

fn recv_socket(iface: &str, ifindex: u32, multicast: bool) -> Result<OwnedFd> {
    let fd = raw_socket()?;
    let raw = fd.as_raw_fd();
    bind_to_device(raw, iface)?;
    if multicast {
        let mreq = libc::ip_mreqn {
            imr_multiaddr: in_addr(packet::MULTICAST),
            imr_address: in_addr(Ipv4Addr::UNSPECIFIED),
            imr_ifindex: ifindex as i32,
        };
        setsockopt(
            raw,
            libc::IPPROTO_IP,
            libc::IP_ADD_MEMBERSHIP,
            &mreq,
            "IP_ADD_MEMBERSHIP",
        )?;
    }
    Ok(fd)
}

fn send_socket(iface: &str, ifindex: u32, primary: Ipv4Addr) -> Result<OwnedFd> {
    let fd = raw_socket()?;
    let raw = fd.as_raw_fd();
    bind_to_device(raw, iface)?;
    let ttl: libc::c_int = packet::TTL.into();
    setsockopt(raw, libc::IPPROTO_IP, libc::IP_TTL, &ttl, "IP_TTL")?;
    setsockopt(
        raw,
        libc::IPPROTO_IP,
        libc::IP_MULTICAST_TTL,
        &ttl,
        "IP_MULTICAST_TTL",
    )?;
    let off: libc::c_int = 0;
    setsockopt(
        raw,
        libc::IPPROTO_IP,
        libc::IP_MULTICAST_LOOP,
        &off,
        "IP_MULTICAST_LOOP",
    )?;
    let mreq = libc::ip_mreqn {
        imr_multiaddr: in_addr(Ipv4Addr::UNSPECIFIED),
        imr_address: in_addr(primary),
        imr_ifindex: ifindex as i32,
    };
    setsockopt(
        raw,
        libc::IPPROTO_IP,
        libc::IP_MULTICAST_IF,
        &mreq,
        "IP_MULTICAST_IF",
    )?;
    // It only sends: keep what it would queue of received packets small.
    let small: libc::c_int = 1;
    setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &small, "SO_RCVBUF")?;
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: in_addr(primary),
        sin_zero: [0; 8],
    };
    // SAFETY: a sockaddr_in of the right size.
    let rc = unsafe {
        libc::bind(
            raw,
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("binding to {primary}"));
    }
    Ok(fd)
}

fn arp_socket() -> Result<OwnedFd> {
    // Protocol 0: it sends only, and receives nothing.
    Ok(socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?)
}

fn recv_from(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn send_to(fd: RawFd, msg: &[u8], dst: Ipv4Addr) -> io::Result<()> {
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: in_addr(dst),
        sin_zero: [0; 8],
    };
    // SAFETY: msg and sa are valid for their sizes.
    let n = unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn send_frame(fd: RawFd, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = 0x0806u16.to_be();
    sa.sll_ifindex = ifindex as i32;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: frame and sa are valid for their sizes.
    let n = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sa as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs every instance of `list` until SIGTERM or SIGINT; then each master hands over with
/// priority 0 (waited for at most 2 s) and the hooks that still run are killed. Each hook may
/// run `hook_timeout`. For `lb-ctl vrrp`.
pub async fn run_all(
    list: Vec<VrrpConfig>,
    report_dir: &std::path::Path,
    hook_timeout: Duration,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    if list.is_empty() {
        bail!("the file has no `vrrp:` instances");
    }
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let (tx, rx) = watch::channel(false);
    let hooks = Hooks::new(hook_timeout);
    let handles: Vec<Handle> = (list.into_iter())
        .map(|c| spawn(c, rx.clone(), hooks.clone()))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let why = loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = super::report::write_all(report_dir, &handles) {
                    warn!(error = %format!("{e:#}"), "writing the VRRP status for list/stats");
                }
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };
    info!(signal = why, "stopping VRRP");
    super::report::remove_all(report_dir, &handles);
    stop_all(tx, handles).await;
    if hooks.stop(Duration::from_secs(2)).await > 0 {
        warn!("notify hooks did not stop within 2 s");
    }
    Ok(())
}

/// Tells every instance to stop and waits (at most 2 s) for them.
pub async fn stop_all(tx: watch::Sender<bool>, handles: Vec<Handle>) {
    let _ = tx.send(true);
    for h in handles {
        if tokio::time::timeout(Duration::from_secs(2), h.task)
            .await
            .is_err()
        {
            warn!(instance = %h.name, "VRRP instance did not stop within 2 s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_frame_layout() {
        let f = garp_frame([2, 0, 0, 0, 0, 0x86], Ipv4Addr::new(192, 168, 58, 133));
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0x86, 0x08, 0x06, // Ethernet
            0, 1, 0x08, 0, 6, 4, 0, 1, // ARP request, Ethernet/IPv4
            2, 0, 0, 0, 0, 0x86, 192, 168, 58, 133, // sender
            0, 0, 0, 0, 0, 0, 192, 168, 58, 133, // target
        ];
        assert_eq!(f, want);
    }
}
