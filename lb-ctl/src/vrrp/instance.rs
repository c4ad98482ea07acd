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
//!   advertisements for IPv6), `garp_count` per address, `garp_delay` apart, then again
//!   `garp_master_refresh_repeat` per address every `garp_master_refresh` while master.
//!   Leaving master removes them.
//! - Faults: the interface's state ([`crate::net::carrier`]) and tracked interfaces are
//!   polled; tracked scripts and services come in as [`Results`] ([`super::track`]). A
//!   failure of weight 0 is a fault; other weights move the priority ([`Event::Params`]).
//! - A member of a sync group ([`super::group`]) moves with it.
//! - A reload hands in a new [`Setup`]: priority, interval, addresses, tracking and hooks
//!   change in place, the state stays.
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
use tokio::{
    io::unix::AsyncFd,
    sync::{broadcast, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, error, info, warn};

use super::{
    announce,
    group::{Group, Member, Msg},
    packet::{self, Advert, Expect, IpInfo, PacketError, Version},
    socket,
    state::{Action, Event, Machine, Params, State},
    status::Status,
    track::{Results, Tracking, evaluate},
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

/// What an instance runs with; a reload may hand in another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    pub cfg: VrrpConfig,
    pub tracking: Tracking,
}

/// A running instance: its task, its status, and how to reconfigure and stop it.
pub struct Handle {
    pub name: String,
    pub status: Arc<Status>,
    pub task: JoinHandle<()>,
    pub setup: watch::Sender<Setup>,
    pub stop: watch::Sender<bool>,
}

/// Starts `setup` as a task; it runs until its `stop` turns true (then hands over with
/// priority 0 if master) or fails to start (logged). It follows `results` (tracked scripts
/// and services) and `group`; its notify hooks run in `hooks`.
pub fn spawn(
    setup: Setup,
    group: Option<Arc<Group>>,
    results: watch::Receiver<Results>,
    hooks: Hooks,
) -> Handle {
    let status = Arc::new(Status::default());
    status.set_addresses(&setup.cfg.virtual_addresses);
    let name = setup.cfg.name.clone();
    let (setup_tx, setup_rx) = watch::channel(setup);
    let (stop_tx, stop) = watch::channel(false);
    let st = status.clone();
    let inputs = Inputs {
        setup: setup_rx,
        stop,
        group,
        results,
    };
    let task_name = name.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = run(inputs, st, hooks).await {
            error!(instance = %task_name, error = %format!("{e:#}"), "VRRP instance stopped");
        }
    });
    Handle {
        name,
        status,
        task,
        setup: setup_tx,
        stop: stop_tx,
    }
}

/// What an instance listens to besides the wire.
struct Inputs {
    setup: watch::Receiver<Setup>,
    stop: watch::Receiver<bool>,
    group: Option<Arc<Group>>,
    results: watch::Receiver<Results>,
}

struct Instance {
    cfg: VrrpConfig,
    tracking: Tracking,
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
    /// While master with `garp_master_refresh`: when the next refresh is due.
    refresh_at: Option<Instant>,
    hooks: Hooks,
    group: Option<Arc<Group>>,
    results: watch::Receiver<Results>,
    link_up: bool,
    /// The instance's own fault (its link, a tracked thing of weight 0), not its group's.
    own_fault: Option<String>,
}

fn expect_of(cfg: &VrrpConfig) -> Expect {
    Expect {
        version: cfg.version,
        auth: cfg.auth_pass.as_deref().map(packet::auth_data),
        interval: cfg.advert_interval.as_secs() as u16,
    }
}

/// Runs one instance until `stop`.
async fn run(mut inputs: Inputs, status: Arc<Status>, hooks: Hooks) -> Result<()> {
    let Setup { cfg, tracking } = inputs.setup.borrow_and_update().clone();
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
    let mut group_rx = inputs.group.as_ref().map(|g| g.subscribe());
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
        expect: expect_of(&cfg),
        status,
        garps: None,
        refresh_at: None,
        hooks,
        group: inputs.group.clone(),
        results: inputs.results.clone(),
        link_up: false,
        own_fault: None,
        tracking,
        cfg,
    };
    info!(
        instance = %inst.cfg.name,
        interface = %inst.cfg.interface,
        vrid = inst.cfg.virtual_router_id,
        priority = inst.cfg.priority,
        version = %inst.cfg.version,
        primary = %primary,
        group = %inst.group.as_ref().map_or("-", |g| g.name.as_str()),
        "VRRP instance starting"
    );
    let mut m = Machine::new(inst.params(inst.cfg.priority));
    inst.link_up = link_is_up(&inst.cfg.interface);
    inst.reassess(&mut m).await;
    let mut poll = tokio::time::interval(LINK_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 4096];
    loop {
        let deadline = m.deadline().map(Instant::from_std);
        tokio::select! {
            _ = inputs.stop.changed() => {
                inst.step(&mut m, Event::Shutdown, true).await;
                break;
            }
            _ = sleep_until(deadline) => inst.step(&mut m, Event::Timer, false).await,
            _ = sleep_until(inst.refresh_at) => inst.refresh_garps(),
            _ = poll.tick() => {
                let up = link_is_up(&inst.cfg.interface);
                if up != inst.link_up {
                    info!(instance = %inst.cfg.name, up, "interface state changed");
                    inst.link_up = up;
                }
                inst.reassess(&mut m).await;
            }
            _ = changed(&mut inputs.results) => inst.reassess(&mut m).await,
            _ = changed(&mut inputs.setup) => {
                let setup = inputs.setup.borrow_and_update().clone();
                inst.reconfigure(&mut m, setup).await;
            }
            msg = group_msg(&mut group_rx) => {
                let me = inst.cfg.name.clone();
                match msg {
                    Ok(Msg::Master { from }) if from != me => {
                        inst.step(&mut m, Event::GroupMaster, true).await
                    }
                    Ok(Msg::Backup { from }) if from != me => {
                        inst.step(&mut m, Event::GroupBackup, true).await
                    }
                    _ => inst.reassess(&mut m).await,
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
                    inst.step(&mut m, event, false).await;
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

/// A change of `rx`; never, once its sender is gone.
async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The next message of the group; never without one.
async fn group_msg(
    rx: &mut Option<broadcast::Receiver<Msg>>,
) -> Result<Msg, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
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
                    self.refresh_at = None;
                    if to == State::Master {
                        self.status.became_master.fetch_add(1, Ordering::Relaxed);
                        self.refresh_at = self.first_refresh();
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
        self.change_addresses(self.cfg.virtual_addresses.clone(), add)
            .await;
    }

    async fn change_addresses(&self, list: Vec<(IpAddr, u8)>, add: bool) {
        let ifindex = self.ifindex;
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

impl Instance {
    /// The machine's parameters with `priority` (the configured one moved by tracking).
    fn params(&self, priority: u8) -> Params {
        Params {
            priority,
            interval: self.cfg.advert_interval,
            preempt: self.cfg.preempt,
            preempt_delay: self.cfg.preempt_delay,
            primary: self.primary,
            learn_interval: self.cfg.version == Version::V3,
            grouped: self.group.is_some(),
        }
    }

    /// Feeds `event` to the machine and carries out what it says; then tells the group
    /// (unless the group caused it) and joins the group's move to master when this was the
    /// last member waiting for it.
    async fn step(&mut self, m: &mut Machine, event: Event, by_group: bool) {
        let before = m.state();
        let actions = m.handle(now(), event);
        self.execute(m, actions).await;
        let Some(g) = self.group.clone() else {
            return;
        };
        let me = self.cfg.name.clone();
        if !by_group {
            match (before, m.state()) {
                (b, State::Master) if b != State::Master => {
                    g.send(Msg::Master { from: me.clone() })
                }
                (State::Master, State::Backup) => g.send(Msg::Backup { from: me.clone() }),
                _ => {}
            }
        }
        self.publish(m);
        if m.wants_master() && g.others_ready(&me) {
            info!(instance = %me, group = %g.name, "every member of the sync group is ready: master");
            g.send(Msg::Master { from: me });
            let actions = m.handle(now(), Event::GroupMaster);
            self.execute(m, actions).await;
            self.publish(m);
        }
    }

    /// Shows the group this member's state; a change of its own fault is sent to all.
    fn publish(&self, m: &Machine) {
        let Some(g) = &self.group else {
            return;
        };
        let member = Member {
            state: m.state(),
            wants_master: m.wants_master(),
            fault: self.own_fault.is_some(),
        };
        let was = g.update(&self.cfg.name, member);
        if was.map(|w| w.fault) != Some(member.fault) {
            g.send(Msg::Faults);
        }
    }

    /// Looks at everything that makes a fault or moves the priority (the link, tracked
    /// scripts, interfaces and services, the group) and tells the machine what changed.
    async fn reassess(&mut self, m: &mut Machine) {
        let results = self.results.borrow().clone();
        let (tracked_fault, priority) = if self.tracking.is_empty() {
            (None, self.cfg.priority)
        } else {
            evaluate(self.cfg.priority, &self.tracking, &results, link_is_up)
        };
        let own = if self.link_up {
            tracked_fault
        } else {
            Some("interface down".to_string())
        };
        let own_changed = own != self.own_fault;
        self.own_fault = own;
        let group_fault = self.group.as_ref().and_then(|g| {
            g.fault_of_others(&self.cfg.name)
                .map(|other| format!("sync group {}: {other} is in fault", g.name))
        });
        let fault = self.own_fault.clone().or(group_fault);
        let params = self.params(priority);
        if params != *m.params() {
            if params.priority != m.params().priority {
                info!(instance = %self.cfg.name, from = m.params().priority, to = params.priority, "VRRP priority changed");
            }
            self.step(m, Event::Params(params), false).await;
        }
        match (fault, m.state()) {
            (Some(why), State::Initialize) if self.status.state() != Some(State::Fault) => {
                warn!(instance = %self.cfg.name, reason = %why, "fault at start");
                self.status.set_state(State::Fault);
                self.notify(State::Fault, &why);
            }
            (Some(why), State::Backup | State::Master) => {
                self.step(m, Event::Fault(why), false).await
            }
            (None, State::Initialize) => self.step(m, Event::Startup, false).await,
            (None, State::Fault) => self.step(m, Event::FaultCleared, false).await,
            _ => {}
        }
        if own_changed {
            self.publish(m);
        }
    }

    /// Takes a reloaded setup in place: the machine keeps its state.
    async fn reconfigure(&mut self, m: &mut Machine, setup: Setup) {
        let old = std::mem::replace(&mut self.cfg, setup.cfg);
        self.tracking = setup.tracking;
        self.expect = expect_of(&self.cfg);
        if old.virtual_addresses != self.cfg.virtual_addresses {
            self.status.set_addresses(&self.cfg.virtual_addresses);
            if m.state() == State::Master {
                let gone: Vec<(IpAddr, u8)> = (old.virtual_addresses.iter())
                    .filter(|a| !self.cfg.virtual_addresses.contains(a))
                    .copied()
                    .collect();
                self.change_addresses(gone, false).await;
                self.addresses(true).await;
                self.start_garps();
            }
        }
        if m.state() == State::Master && old.garp_master_refresh != self.cfg.garp_master_refresh {
            self.refresh_at = self.first_refresh();
        }
        info!(instance = %self.cfg.name, "VRRP instance reconfigured (reload)");
        self.reassess(m).await;
    }

    /// When the first refresh is due after becoming master.
    fn first_refresh(&self) -> Option<Instant> {
        let every = self.cfg.garp_master_refresh;
        (!every.is_zero()).then(|| Instant::now() + every)
    }

    /// `garp_master_refresh_repeat` announcements per address, now; the next one is due a
    /// refresh period later.
    fn refresh_garps(&mut self) {
        self.refresh_at = self.first_refresh();
        for (a, _) in &self.cfg.virtual_addresses {
            let frame = announce::frame(self.mac, *a);
            for _ in 0..self.cfg.garp_master_refresh_repeat {
                if let Err(e) = self.frames.send(&frame) {
                    debug!(instance = %self.cfg.name, error = %e, "sending a refresh gratuitous ARP / neighbour advert");
                }
            }
        }
    }
}
