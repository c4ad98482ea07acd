//! One VRRP instance on the wire: a tokio task that runs the [`Machine`] with the sockets of
//! [`super::socket`].
//!
//! - Receive: every packet is checked (TTL 255, length, checksum, version, authentication);
//!   bad ones are counted, logged and ignored. With unicast peers, only theirs count.
//! - Send: adverts go to 224.0.0.18 (IPv6: ff02::12), or to each unicast peer.
//! - An IPv6 instance (RFC 5798) sends from the interface's link-local address, which is
//!   also its primary address (the tie-break between equal priorities).
//! - Master: the virtual addresses are added with rtnetlink ([`crate::net::addr`]; IPv6 ones
//!   `nodad`) and announced ([`super::announce`]: gratuitous ARP, or unsolicited neighbour
//!   advertisements for IPv6), `garp_count` per address, `garp_delay` apart. Leaving master
//!   removes them.
//! - The interface's state ([`crate::net::carrier`]) is polled: losing the carrier is a fault.
//! - Transitions are logged and run `notify_master` / `notify_backup` / `notify_fault`
//!   (`/bin/sh -c`, with `LB_VRRP_INSTANCE`, `LB_VRRP_STATE`, `LB_VRRP_REASON` set), tracked
//!   by the caller's [`Hooks`] (a timeout each; killed, process group and all, on stop).

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result};
use socket2::Socket;
use tokio::{io::unix::AsyncFd, sync::watch, task::JoinHandle, time::Instant};
use tracing::{debug, error, info, warn};

use super::{
    announce,
    packet::{self, Advert, Expect, IpInfo, PacketError, Version},
    socket,
    state::{Action, Event, Machine, Params, State},
    status::Status,
};
use crate::{
    config::VrrpConfig,
    exec::hooks::Hooks,
    net::{addr, carrier::link_is_up, link},
};

/// How often the interface's state is looked at.
const LINK_POLL: Duration = Duration::from_millis(100);
/// Invalid packets of one kind logged at warn level before the rest go to debug.
const WARN_FIRST: u64 = 10;

/// A running instance: its task and its status.
pub struct Handle {
    pub name: String,
    pub status: Arc<Status>,
    pub task: JoinHandle<()>,
}

/// Starts `cfg` as a task; it runs until `stop` turns true (then hands over with priority 0
/// if master) or fails to start (logged). Its notify hooks run in `hooks`.
pub fn spawn(cfg: VrrpConfig, stop: watch::Receiver<bool>, hooks: Hooks) -> Handle {
    let status = Arc::new(Status {
        virtual_addresses: (cfg.virtual_addresses.iter())
            .map(|(a, len)| format!("{a}/{len}"))
            .collect(),
        ..Status::default()
    });
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
    /// IPv4, or the interface's IPv6 link-local address.
    primary: IpAddr,
    recv: AsyncFd<Socket>,
    send: Socket,
    frames: Arc<socket::Frames>,
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
    let vips: Vec<IpAddr> = cfg.virtual_addresses.iter().map(|(a, _)| *a).collect();
    let primary = primary_address(&cfg.interface, ifindex, vips).await?;
    let multicast = cfg.unicast_peers.is_empty();
    let iface = cfg.interface.as_str();
    let (recv, send) = match primary {
        IpAddr::V4(p) => (
            socket::receiver(iface, ifindex, multicast),
            socket::sender(iface, p),
        ),
        IpAddr::V6(p) => (
            socket::receiver_v6(iface, ifindex, multicast),
            socket::sender_v6(iface, ifindex, p),
        ),
    };
    let recv = recv.with_context(|| format!("opening the VRRP receive socket on {iface}"))?;
    let send = send.with_context(|| format!("opening the VRRP send socket on {iface}"))?;
    let frames = Arc::new(socket::Frames::open(ifindex)?);
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
        // SAFETY: `recv` is an open socket that the AsyncFd takes ownership of: it stays open,
        // with the same descriptor, until the AsyncFd drops it, and nothing else closes it.
        // (tokio's safe constructors for this are deprecated as unsound.)
        recv: unsafe { AsyncFd::register_with_interest(recv, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering the VRRP socket: {e}"))?,
        send,
        frames,
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
        inst.status.set_state(State::Fault);
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
                let ipv6 = inst.primary.is_ipv6();
                loop {
                    let read = guard.try_io(|fd| {
                        if ipv6 {
                            socket::receive_v6(fd.get_ref(), &mut buf).map(|(n, i)| (n, Some(i)))
                        } else {
                            socket::receive(fd.get_ref(), &mut buf).map(|n| (n, None))
                        }
                    });
                    let (n, info) = match read {
                        Ok(Ok(x)) => x,
                        Ok(Err(e)) => {
                            warn!(instance = %inst.cfg.name, error = %e, "reading a VRRP packet");
                            break;
                        }
                        Err(_would_block) => break,
                    };
                    events.extend(inst.receive(&buf[..n], info));
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

/// The address adverts are sent from: the interface's first IPv4 address that is not a
/// virtual one, or for an IPv6 instance (its first virtual address is IPv6) its link-local
/// address (RFC 5798 5.1.2.2).
async fn primary_address(iface: &str, ifindex: u32, vips: Vec<IpAddr>) -> Result<IpAddr> {
    let ipv6 = vips.first().is_some_and(IpAddr::is_ipv6);
    let found = blocking(move || {
        Ok(if ipv6 {
            (addr::link_locals(ifindex)?.into_iter())
                .map(IpAddr::V6)
                .find(|a| !vips.contains(a))
        } else {
            (addr::list(ifindex)?.into_iter())
                .map(|(a, _)| IpAddr::V4(a))
                .find(|a| !vips.contains(a))
        })
    })
    .await?;
    found.with_context(|| {
        if ipv6 {
            format!(
                "{iface} has no IPv6 link-local address to send VRRP adverts from (is IPv6 \
                 disabled on it, or its addrgenmode none?)"
            )
        } else {
            format!("{iface} has no IPv4 address of its own to send VRRP adverts from")
        }
    })
}

/// Runs a blocking call (rtnetlink) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a blocking task panicked")?
}

impl Instance {
    /// Checks one received packet (IPv4: with its IP header; IPv6: the VRRP message, `info`
    /// from the socket); an event for the machine if it is a valid advert of ours.
    fn receive(&self, packet: &[u8], info: Option<IpInfo>) -> Option<Event> {
        let name = &self.cfg.name;
        let parsed = match info {
            None => packet::parse_ipv4(packet),
            Some(info) => info.check_ttl().map(|i| (i, packet)),
        };
        let (ip, msg) = match parsed {
            Ok(x) => x,
            Err(e) => {
                let src = info.map(|i| i.src).or_else(|| {
                    (packet.len() >= 20).then(|| {
                        IpAddr::V4(Ipv4Addr::new(
                            packet[12], packet[13], packet[14], packet[15],
                        ))
                    })
                });
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
        let ours: Vec<IpAddr> = self.cfg.virtual_addresses.iter().map(|(a, _)| *a).collect();
        if advert.priority != 0 && advert.addresses != ours {
            debug!(instance = %name, src = %ip.src, addresses = ?advert.addresses, "advert lists other addresses than ours");
        }
        Some(Event::Advert {
            src: ip.src,
            priority: advert.priority,
            interval: advert.interval_duration(),
        })
    }

    fn invalid(&self, e: &PacketError, src: Option<IpAddr>) {
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
                    self.status.set_state(to);
                    self.status.set_master(m.master());
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
        self.status.set_master(m.master());
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
        let dests: Vec<IpAddr> = if self.cfg.unicast_peers.is_empty() {
            vec![packet::multicast(self.primary)]
        } else {
            self.cfg.unicast_peers.clone()
        };
        for dst in dests {
            let msg = packet::encode(&advert, self.primary, dst);
            match socket::send_to(&self.send, &msg, dst, self.ifindex) {
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
        let frames: Vec<Vec<u8>> = (self.cfg.virtual_addresses.iter())
            .map(|(a, _)| announce::frame(self.mac, *a))
            .collect();
        // Its own handle on the socket: the task may outlive this borrow.
        let socket = self.frames.clone();
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
                    if let Err(e) = socket.send(f) {
                        debug!(instance = %name, error = %e, "sending a gratuitous ARP / neighbour advert");
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
