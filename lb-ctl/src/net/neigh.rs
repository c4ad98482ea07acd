//! Backend MACs from the kernel's neighbour tables (ARP for IPv4, NDP for IPv6), and the check
//! that a backend is on the director's own L2 segment.
//!
//! All of it is rtnetlink on a socket opened by the calling thread, so it works on the network
//! namespace the thread is in (also after `netns::enter`).
//!
//! Resolution is the kernel's own: for an address without a usable entry we send one
//! `RTM_NEWNEIGH` with `NTF_USE` (what `ip neigh replace ADDR dev DEV use nud none` does), which
//! creates the entry if needed and makes the kernel start ARP (IPv4) or neighbour solicitation
//! (IPv6) for it exactly as if a packet were waiting (state INCOMPLETE, probes at
//! `retrans_time`, FAILED after `mcast_probes`). The same request works for both families.
//! Nothing but ARP or NDP goes on the wire, and no route is consulted, so the probe leaves
//! through the given interface. Then the table is polled every [`POLL_INTERVAL`].

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
    route::RouteType,
};

use super::{link, route, rtnl};

/// How often the neighbour table is read while waiting for ARP or NDP answers.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Resolution requests sent to the kernel at once, before a pause of [`POLL_INTERVAL`].
pub const TRIGGER_BURST: usize = 256;

const NUD_INCOMPLETE: u16 = 0x01;
const NUD_REACHABLE: u16 = 0x02;
const NUD_STALE: u16 = 0x04;
const NUD_DELAY: u16 = 0x08;
const NUD_PROBE: u16 = 0x10;
const NUD_FAILED: u16 = 0x20;
const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;
/// The states in which an entry holds a link-layer address (the kernel's NUD_VALID).
const NUD_VALID: u16 =
    NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP;

/// The state of a neighbour table entry (`NUD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NeighState {
    Incomplete,
    Reachable,
    Stale,
    Delay,
    Probe,
    Failed,
    NoArp,
    Permanent,
    /// `NUD_NONE`: just created, no resolution started.
    None,
    /// A value this code does not know by name (the raw `NUD_*` bits).
    Other(u16),
}

impl NeighState {
    pub fn from_raw(raw: u16) -> NeighState {
        match raw {
            NUD_INCOMPLETE => NeighState::Incomplete,
            NUD_REACHABLE => NeighState::Reachable,
            NUD_STALE => NeighState::Stale,
            NUD_DELAY => NeighState::Delay,
            NUD_PROBE => NeighState::Probe,
            NUD_FAILED => NeighState::Failed,
            NUD_NOARP => NeighState::NoArp,
            NUD_PERMANENT => NeighState::Permanent,
            0 => NeighState::None,
            other => NeighState::Other(other),
        }
    }

    pub fn raw(self) -> u16 {
        match self {
            NeighState::Incomplete => NUD_INCOMPLETE,
            NeighState::Reachable => NUD_REACHABLE,
            NeighState::Stale => NUD_STALE,
            NeighState::Delay => NUD_DELAY,
            NeighState::Probe => NUD_PROBE,
            NeighState::Failed => NUD_FAILED,
            NeighState::NoArp => NUD_NOARP,
            NeighState::Permanent => NUD_PERMANENT,
            NeighState::None => 0,
            NeighState::Other(raw) => raw,
        }
    }

    /// Whether an entry in this state holds a MAC the kernel itself would send to (REACHABLE,
    /// STALE, DELAY, PROBE, PERMANENT, NOARP); INCOMPLETE, FAILED and NONE do not.
    pub fn has_mac(self) -> bool {
        self.raw() & NUD_VALID != 0
    }
}

impl fmt::Display for NeighState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NeighState::Incomplete => f.write_str("INCOMPLETE"),
            NeighState::Reachable => f.write_str("REACHABLE"),
            NeighState::Stale => f.write_str("STALE"),
            NeighState::Delay => f.write_str("DELAY"),
            NeighState::Probe => f.write_str("PROBE"),
            NeighState::Failed => f.write_str("FAILED"),
            NeighState::NoArp => f.write_str("NOARP"),
            NeighState::Permanent => f.write_str("PERMANENT"),
            NeighState::None => f.write_str("NONE"),
            NeighState::Other(raw) => write!(f, "state {raw:#x}"),
        }
    }
}

/// A usable neighbour table entry: the MAC and the state it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: [u8; 6],
    pub state: NeighState,
}

/// The outcome of resolving one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Resolved([u8; 6]),
    /// Why no MAC could be had, for people to read.
    Unresolved(String),
}

/// The entry for `addr` on interface `ifindex` if it holds a unicast MAC (see
/// [`NeighState::has_mac`]); `None` when there is no entry or it is INCOMPLETE, FAILED or NONE.
pub fn lookup(ifindex: u32, addr: IpAddr) -> Result<Option<Neighbour>> {
    let table = read_table(ifindex)?;
    Ok(table.get(&addr).and_then(Entry::usable))
}

/// The MAC of `addr` on interface `ifindex`: at once from the neighbour table if it has a usable
/// entry, otherwise after asking the kernel to resolve it and polling the table until it is
/// resolved or `timeout` has passed. Errors are failures to talk to the kernel (or an unknown
/// interface); an address that does not answer ARP (or NDP) is `Ok(Unresolved(reason))`.
pub fn resolve(ifindex: u32, addr: IpAddr, timeout: Duration) -> Result<Resolution> {
    let mut results = resolve_many(ifindex, &[addr], timeout)?;
    Ok(results.pop().expect("one result per address"))
}

/// [`resolve`] for many addresses at once: the kernel is asked to resolve all of them first,
/// then the table is polled for all together, so the whole call takes at most about `timeout`.
/// The results are in the order of `addrs`; a failure to talk to the kernel makes every address
/// not yet resolved `Unresolved` with that error as the reason.
pub fn resolve_all(ifindex: u32, addrs: &[IpAddr], timeout: Duration) -> Vec<(IpAddr, Resolution)> {
    match resolve_many(ifindex, addrs, timeout) {
        Ok(results) => addrs.iter().copied().zip(results).collect(),
        Err(err) => {
            let reason = format!("{err:#}");
            addrs
                .iter()
                .map(|&addr| (addr, Resolution::Unresolved(reason.clone())))
                .collect()
        }
    }
}

/// Checks that `addr` is on the L2 segment of interface `ifindex`, as direct routing needs: the
/// kernel's route to it (RTM_GETROUTE, like `ip route get ADDR`) must go out of that interface
/// without a gateway. The same for IPv4 and IPv6.
pub fn check_on_link(ifindex: u32, addr: IpAddr) -> Result<()> {
    let dev = link::name(ifindex)?;
    const NEED: &str = "direct routing needs every backend on the director's segment";

    let Some(route) = route::get(addr)? else {
        bail!(
            "backend {addr} is not on the link of {dev}: there is no route to it in this \
             network namespace; {NEED}"
        );
    };
    match route.kind {
        RouteType::Unicast => {}
        RouteType::Local => bail!(
            "backend {addr} is an address of this host itself, not a real server on the link \
             of {dev}"
        ),
        RouteType::Broadcast | RouteType::Multicast | RouteType::Anycast => {
            bail!(
                "backend {addr} is not a unicast address (the kernel routes it as {:?})",
                route.kind
            )
        }
        other => bail!(
            "backend {addr} is not on the link of {dev}: the kernel's route to it is of type \
             {other:?}; {NEED}"
        ),
    }
    let (gateway, oif) = (route.gateway, route.oif);
    let other_dev = match oif {
        Some(index) if index != ifindex => {
            Some(link::name(index).unwrap_or_else(|_| format!("interface index {index}")))
        }
        _ => None,
    };
    match (gateway, other_dev) {
        (Some(gw), None) => {
            bail!("backend {addr} is not on the link of {dev}: the route goes via {gw}; {NEED}")
        }
        (Some(gw), Some(other)) => bail!(
            "backend {addr} is not on the link of {dev}: the route goes via {gw} out of {other}; \
             {NEED}"
        ),
        (None, Some(other)) => bail!(
            "backend {addr} is not on the link of {dev}: the route goes out of {other}; {NEED}"
        ),
        (None, None) if oif.is_none() => {
            bail!("backend {addr}: the kernel's route to it names no outgoing interface; {NEED}")
        }
        (None, None) => Ok(()),
    }
}

/// One entry of the neighbour table as read.
#[derive(Debug, Clone, Copy)]
struct Entry {
    state: NeighState,
    mac: Option<[u8; 6]>,
}

impl Entry {
    /// The entry as a [`Neighbour`] if it holds a unicast MAC. (The kernel also keeps NOARP
    /// entries with the broadcast or a multicast MAC for such addresses; they are no backend.)
    fn usable(&self) -> Option<Neighbour> {
        match self.mac {
            Some(mac) if self.state.has_mac() && is_unicast_mac(&mac) => Some(Neighbour {
                mac,
                state: self.state,
            }),
            _ => None,
        }
    }
}

fn is_unicast_mac(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && *mac != [0; 6]
}

/// Whether `addr` can be a backend's address at all (and so is worth an ARP or NDP request).
fn is_unicast(addr: IpAddr) -> bool {
    let broadcast = matches!(addr, IpAddr::V4(a) if a.is_broadcast());
    !(broadcast || addr.is_multicast() || addr.is_unspecified() || addr.is_loopback())
}

/// How the kernel resolves `addr`, for people: `ARP` or `NDP`.
pub fn protocol(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "ARP",
        IpAddr::V6(_) => "NDP",
    }
}

/// The IPv4 and IPv6 neighbour tables of one interface (one RTM_GETNEIGH dump of every
/// family, filtered here).
fn read_table(ifindex: u32) -> Result<HashMap<IpAddr, Entry>> {
    let mut request = NeighbourMessage::default();
    request.header.family = AddressFamily::Unspec;
    let answers = rtnl::request(RouteNetlinkMessage::GetNeighbour(request), NLM_F_DUMP)
        .context("reading the kernel's neighbour table")?;
    let mut table = HashMap::new();
    for answer in answers {
        let RouteNetlinkMessage::NewNeighbour(msg) = answer else {
            continue;
        };
        if let Some((i, addr, entry)) = parse_entry(&msg)
            && i == ifindex
        {
            table.insert(addr, entry);
        }
    }
    Ok(table)
}

/// The interface, IP address and entry of an IPv4 or IPv6 neighbour message; `None` for other
/// families (the bridge's forwarding database, say).
fn parse_entry(msg: &NeighbourMessage) -> Option<(u32, IpAddr, Entry)> {
    if !matches!(
        msg.header.family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) {
        return None;
    }
    let mut addr = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                addr = Some(IpAddr::V4(*ip))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                addr = Some(IpAddr::V6(*ip))
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok();
            }
            _ => {}
        }
    }
    let state = NeighState::from_raw(u16::from(msg.header.state));
    Some((msg.header.ifindex, addr?, Entry { state, mac }))
}

/// What the kernel announced about one neighbour entry (RTNLGRP_NEIGH), or that announcements
/// were lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeighEvent {
    /// An entry was made or changed. `usable` is its MAC and state when it holds a unicast
    /// MAC ([`lookup`]'s rule); `state` is its state either way.
    Changed {
        ifindex: u32,
        addr: IpAddr,
        state: NeighState,
        usable: Option<Neighbour>,
    },
    /// An entry was removed (garbage collection, a flush, its interface going down).
    Deleted { ifindex: u32, addr: IpAddr },
    /// The socket's buffer overran: events were lost, the table must be read again.
    Overrun,
}

/// Follows the kernel's neighbour table: a thread reads RTNLGRP_NEIGH announcements of the
/// calling thread's network namespace (the group carries both families) and hands each IPv4
/// and IPv6 one to `on_event`, until `on_event`
/// returns false. The socket is subscribed before this returns, so nothing announced after
/// the call is missed (except on [`NeighEvent::Overrun`]).
pub fn watch(
    mut on_event: impl FnMut(NeighEvent) -> bool + Send + 'static,
) -> Result<thread::JoinHandle<()>> {
    use netlink_packet_core::NetlinkPayload;
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

    const RTMGRP_NEIGH: u32 = 1 << 2;
    let mut socket = Socket::new(NETLINK_ROUTE).context("opening a netlink socket")?;
    socket
        .bind(&SocketAddr::new(0, RTMGRP_NEIGH))
        .context("subscribing to the kernel's neighbour events")?;
    // Room for bursts (a rack of servers answering ARP at once); overruns are reported.
    let _ = socket.set_rx_buf_sz(4 << 20);
    thread::Builder::new()
        .name("lb-neigh".into())
        .spawn(move || {
            loop {
                let data = match socket.recv_from_full() {
                    Ok((data, _)) => data,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        if !on_event(NeighEvent::Overrun) {
                            return;
                        }
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                // A message that does not decode is skipped; the next reconcile reads the table.
                for parsed in rtnl::messages(&data).filter_map(Result::ok) {
                    let event = match parsed.payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => {
                            parse_entry(&m).map(|(ifindex, addr, e)| NeighEvent::Changed {
                                ifindex,
                                addr,
                                state: e.state,
                                usable: e.usable(),
                            })
                        }
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(m)) => {
                            parse_entry(&m)
                                .map(|(ifindex, addr, _)| NeighEvent::Deleted { ifindex, addr })
                        }
                        _ => None,
                    };
                    if let Some(ev) = event
                        && !on_event(ev)
                    {
                        return;
                    }
                }
            }
        })
        .context("starting the neighbour-event thread")
}

/// Asks the kernel to resolve `addr` on `ifindex`: RTM_NEWNEIGH with NTF_USE creates the entry
/// if needed and starts ARP (IPv4) or a neighbour solicitation (IPv6) as if a packet were
/// queued for it.
pub fn trigger(ifindex: u32, addr: IpAddr) -> Result<()> {
    let (family, destination) = match addr {
        IpAddr::V4(a) => (AddressFamily::Inet, NeighbourAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, NeighbourAddress::Inet6(a)),
    };
    let mut request = NeighbourMessage::default();
    request.header.family = family;
    request.header.ifindex = ifindex;
    request.header.state = NeighbourState::None;
    request.header.flags = NeighbourFlags::Use;
    request
        .attributes
        .push(NeighbourAttribute::Destination(destination));
    rtnl::request(
        RouteNetlinkMessage::NewNeighbour(request),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .map(drop)
    .map_err(|err| {
        if rtnl::errno(&err) == Some(libc::EPERM) {
            err.context("permission denied: asking the kernel to resolve needs CAP_NET_ADMIN")
        } else {
            err
        }
    })
}

fn resolve_many(ifindex: u32, addrs: &[IpAddr], timeout: Duration) -> Result<Vec<Resolution>> {
    let dev = link::name(ifindex)?;
    let deadline = Instant::now() + timeout;
    let mut results: Vec<Option<Resolution>> = vec![None; addrs.len()];

    let mut table = read_table(ifindex)?;
    for (result, addr) in results.iter_mut().zip(addrs) {
        *result = if is_unicast(*addr) {
            settled(*addr, table.get(addr))
        } else {
            Some(Resolution::Unresolved(format!(
                "{addr} is not a unicast address"
            )))
        };
    }

    // Ask for every missing address first, each once, then wait for all of them together.
    // The requests go out in bursts of TRIGGER_BURST, a poll interval apart, so that a
    // thousand backends do not put a thousand ARP requests on the wire in one instant. Once
    // the kernel's table is full, nothing more is asked: every later request would fail too.
    let mut last_state: HashMap<IpAddr, NeighState> = HashMap::new();
    let mut trigger_failed: HashMap<IpAddr, String> = HashMap::new();
    let missing = results.iter().filter(|r| r.is_none()).count();
    let mut table_full: Option<String> = None;
    let mut sent = 0usize;
    for (result, addr) in results.iter_mut().zip(addrs) {
        if result.is_some() {
            continue;
        }
        if !last_state.contains_key(addr) && !trigger_failed.contains_key(addr) {
            let outcome = match &table_full {
                Some(reason) => Err(reason.clone()),
                None => {
                    if sent > 0 && sent.is_multiple_of(TRIGGER_BURST) {
                        thread::sleep(POLL_INTERVAL);
                    }
                    sent += 1;
                    trigger(ifindex, *addr).map_err(|err| {
                        if rtnl::errno(&err) == Some(libc::ENOBUFS) {
                            let reason = table_full_reason(missing, addr.is_ipv6());
                            table_full = Some(reason.clone());
                            reason
                        } else {
                            format!("could not ask the kernel to resolve {addr} on {dev}: {err:#}")
                        }
                    })
                }
            };
            match outcome {
                Ok(()) => {
                    last_state.insert(*addr, NeighState::Incomplete);
                }
                Err(reason) => {
                    trigger_failed.insert(*addr, reason);
                }
            }
        }
        if let Some(reason) = trigger_failed.get(addr) {
            *result = Some(Resolution::Unresolved(reason.clone()));
        }
    }

    while results.iter().any(Option::is_none) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        thread::sleep(POLL_INTERVAL.min(deadline - now));
        table = read_table(ifindex).context("polling the neighbour table")?;
        let mut retrigger = Vec::new();
        for (result, addr) in results.iter_mut().zip(addrs) {
            if result.is_some() {
                continue;
            }
            let entry = table.get(addr);
            *result = settled(*addr, entry);
            let state = entry.map_or(NeighState::None, |e| e.state);
            // The kernel gave up (all its probes went unanswered) before our deadline: ask
            // again, so that a backend that comes up within the timeout is still found.
            if result.is_none()
                && state == NeighState::Failed
                && last_state.get(addr) != Some(&NeighState::Failed)
            {
                retrigger.push(*addr);
            }
            last_state.insert(*addr, state);
        }
        retrigger.sort_unstable();
        retrigger.dedup();
        for addr in retrigger {
            if Instant::now() < deadline && trigger(ifindex, addr).is_ok() {
                last_state.insert(addr, NeighState::Incomplete);
            }
        }
    }

    let millis = timeout.as_millis();
    Ok(results
        .into_iter()
        .zip(addrs)
        .map(|(result, addr)| {
            result.unwrap_or_else(|| {
                let state = match table.get(addr) {
                    Some(entry) => format!("neighbour entry {}", entry.state),
                    None => "no neighbour entry".to_owned(),
                };
                let reply = match addr {
                    IpAddr::V4(_) => "ARP reply",
                    IpAddr::V6(_) => "neighbour advertisement (NDP)",
                };
                Resolution::Unresolved(format!(
                    "no {reply} from {addr} on {dev} within {millis} ms ({state})"
                ))
            })
        })
        .collect())
}

/// The kernel's limit on IPv4 neighbour entries, and where it is set.
pub const GC_THRESH3: &str = "/proc/sys/net/ipv4/neigh/default/gc_thresh3";
/// The same limit of the IPv6 neighbour table.
pub const GC_THRESH3_V6: &str = "/proc/sys/net/ipv6/neigh/default/gc_thresh3";

/// Why an address could not be resolved when the kernel refuses a new neighbour entry
/// (ENOBUFS): its table (the IPv6 one when `v6`) is full. Names the limit, its value where
/// this process can read it, and a value to raise it to for `wanted` more addresses.
pub fn table_full_reason(wanted: usize, v6: bool) -> String {
    let (path, ip) = if v6 {
        (GC_THRESH3_V6, "ipv6")
    } else {
        (GC_THRESH3, "ipv4")
    };
    let current = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<usize>().ok());
    let limit = match current {
        Some(n) => format!("is {n}"),
        None => "is 1024 by default (readable in the host's first network namespace)".into(),
    };
    let suggest = (current.unwrap_or(1024) + wanted).next_power_of_two();
    format!(
        "the kernel's neighbour table is full (no buffer space for a new entry): \
         net.{ip}.neigh.default.gc_thresh3 {limit}, shared by every network namespace of the \
         host, and {wanted} backend address(es) still need an entry; raise it to at least \
         {suggest} on the host: `sysctl -w net.{ip}.neigh.default.gc_thresh3={suggest} \
         net.{ip}.neigh.default.gc_thresh2={}`",
        suggest / 2
    )
}

/// What a table entry settles for `addr`: its MAC if usable; `Unresolved` if the kernel holds a
/// broadcast or multicast MAC for it (a subnet's broadcast address, say), which no request
/// would change; `None` while there is nothing to go on yet.
fn settled(addr: IpAddr, entry: Option<&Entry>) -> Option<Resolution> {
    let entry = entry?;
    if let Some(n) = entry.usable() {
        return Some(Resolution::Resolved(n.mac));
    }
    match entry.mac {
        Some(mac) if entry.state.has_mac() => Some(Resolution::Unresolved(format!(
            "the kernel maps {addr} to {} ({}), which is no backend's MAC: {addr} is a \
             broadcast or multicast address",
            crate::plan::convert::format_mac(&mac),
            entry.state
        ))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::net::{netns, testlab::Lab};

    const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }
    const UNUSED_A: IpAddr = v4(192, 168, 58, 99);
    const UNUSED_B: IpAddr = v4(192, 168, 58, 98);
    const UNUSED_C: IpAddr = v4(192, 168, 58, 97);
    const UNUSED_6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0x58, 0, 0, 0, 0, 0, 0x99));

    #[test]
    fn a_full_table_names_the_limit_and_a_value() {
        let why = table_full_reason(2000, false);
        assert!(why.contains("net.ipv4.neigh.default.gc_thresh3"), "{why}");
        assert!(why.contains("2000 backend address(es)"), "{why}");
        // At least the default plus what is wanted, as a power of two.
        let suggested: usize = why
            .split("gc_thresh3=")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no value suggested: {why}"));
        assert!(suggested >= 3024 && suggested.is_power_of_two(), "{why}");
    }

    #[test]
    fn states_that_hold_a_mac() {
        for state in [
            NeighState::Reachable,
            NeighState::Stale,
            NeighState::Delay,
            NeighState::Probe,
            NeighState::Permanent,
            NeighState::NoArp,
        ] {
            assert!(state.has_mac(), "{state}");
            assert_eq!(NeighState::from_raw(state.raw()), state);
        }
        for state in [NeighState::Incomplete, NeighState::Failed, NeighState::None] {
            assert!(!state.has_mac(), "{state}");
            assert_eq!(NeighState::from_raw(state.raw()), state);
        }
        assert_eq!(NeighState::from_raw(0x100), NeighState::Other(0x100));
    }

    #[test]
    fn lookup_and_resolve_in_a_namespace() {
        let lab = Lab::new("n");
        netns::run_in(&lab.director, || {
            let index = link::ifindex(Lab::DIRECTOR_DEV)?;

            assert_eq!(lookup(index, UNUSED_C)?, None, "unknown neighbour");
            assert_eq!(lookup(index, Lab::PEER_IP)?, None, "not yet resolved");

            let start = Instant::now();
            let got = resolve(index, Lab::PEER_IP, Duration::from_secs(2))?;
            assert_eq!(got, Resolution::Resolved(Lab::PEER_MAC));
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "{:?}",
                start.elapsed()
            );

            let entry = lookup(index, Lab::PEER_IP)?.expect("entry after resolve");
            assert_eq!(entry.mac, Lab::PEER_MAC);
            assert!(entry.state.has_mac(), "{}", entry.state);

            // Already in the table: answered from it at once.
            let start = Instant::now();
            let again = resolve(index, Lab::PEER_IP, Duration::from_secs(2))?;
            assert_eq!(again, Resolution::Resolved(Lab::PEER_MAC));
            assert!(
                start.elapsed() < Duration::from_millis(200),
                "{:?}",
                start.elapsed()
            );

            // Nobody has this address: unresolved once the timeout has passed, not much later.
            let timeout = Duration::from_millis(300);
            let start = Instant::now();
            let none = resolve(index, UNUSED_A, timeout)?;
            let took = start.elapsed();
            match &none {
                Resolution::Unresolved(reason) => {
                    assert!(reason.contains("192.168.58.99"), "{reason}");
                    assert!(reason.contains(Lab::DIRECTOR_DEV), "{reason}");
                }
                other => panic!("expected Unresolved, got {other:?}"),
            }
            assert!(took >= timeout, "{took:?}");
            assert!(took < timeout + Duration::from_millis(500), "{took:?}");
            // The kernel is still trying (INCOMPLETE): that is no MAC.
            assert_eq!(lookup(index, UNUSED_A)?, None);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn resolve_all_waits_for_all_together() {
        let lab = Lab::new("a");
        netns::run_in(&lab.director, || {
            let index = link::ifindex(Lab::DIRECTOR_DEV)?;
            let timeout = Duration::from_millis(400);
            let addrs = [Lab::PEER_IP, UNUSED_B, UNUSED_C];
            let start = Instant::now();
            let results = resolve_all(index, &addrs, timeout);
            let took = start.elapsed();
            assert_eq!(results.len(), 3);
            assert_eq!(results[0], (Lab::PEER_IP, Resolution::Resolved(Lab::PEER_MAC)));
            for (i, addr) in [(1, UNUSED_B), (2, UNUSED_C)] {
                assert_eq!(results[i].0, addr);
                assert!(
                    matches!(&results[i].1, Resolution::Unresolved(r) if r.contains(&addr.to_string())),
                    "{:?}",
                    results[i]
                );
            }
            // Two unanswered addresses, yet about one timeout in all.
            assert!(took >= timeout, "{took:?}");
            assert!(took < timeout * 2, "{took:?}");

            // Both answered: no waiting for the timeout.
            let start = Instant::now();
            let both = resolve_all(index, &[Lab::PEER_IP, Lab::PEER_IP], Duration::from_secs(2));
            assert!(start.elapsed() < Duration::from_millis(200));
            assert!(both.iter().all(|(a, r)| *a == Lab::PEER_IP
                && *r == Resolution::Resolved(Lab::PEER_MAC)));

            // Broadcast addresses are no backends, and are said to be so without waiting.
            let start = Instant::now();
            let bcast = [IpAddr::V4(Ipv4Addr::BROADCAST), v4(192, 168, 58, 255)];
            let results = resolve_all(index, &bcast, Duration::from_secs(2));
            assert!(start.elapsed() < Duration::from_millis(500));
            assert!(
                matches!(&results[0].1, Resolution::Unresolved(r) if r.contains("not a unicast address")),
                "{results:?}"
            );
            assert!(
                matches!(&results[1].1, Resolution::Unresolved(r) if r.contains("broadcast or multicast")),
                "{results:?}"
            );
            assert_eq!(lookup(index, bcast[1])?, None);

            // An interface that does not exist: every address unresolved with the reason.
            let bad = resolve_all(0x7fff_fff0, &[Lab::PEER_IP], timeout);
            assert!(
                matches!(&bad[0].1, Resolution::Unresolved(r) if r.contains("no interface with index")),
                "{bad:?}"
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn check_on_link_in_a_namespace() {
        let lab = Lab::new("r");
        // A route via a gateway on the link, and a second segment on another interface.
        lab.ip(
            &lab.director,
            &["route", "add", "10.58.0.0/16", "via", "192.168.58.2"],
        );
        lab.ip(
            &lab.director,
            &[
                "link", "add", "lbnt-w0", "type", "veth", "peer", "name", "lbnt-w1",
            ],
        );
        lab.ip(
            &lab.director,
            &["addr", "add", "192.168.59.1/24", "dev", "lbnt-w0"],
        );
        lab.ip(&lab.director, &["link", "set", "lbnt-w0", "up"]);
        lab.ip(&lab.director, &["link", "set", "lbnt-w1", "up"]);

        netns::run_in(&lab.director, || {
            let index = link::ifindex(Lab::DIRECTOR_DEV)?;
            check_on_link(index, Lab::PEER_IP)?;
            // On the link even though nothing answers there: the route is what counts.
            check_on_link(index, UNUSED_A)?;

            let err = check_on_link(index, v4(10, 58, 1, 2)).unwrap_err();
            assert_eq!(
                err.to_string(),
                "backend 10.58.1.2 is not on the link of lbnt-dir0: the route goes via \
                 192.168.58.2; direct routing needs every backend on the director's segment"
            );

            let err = check_on_link(index, v4(192, 168, 59, 5)).unwrap_err();
            assert_eq!(
                err.to_string(),
                "backend 192.168.59.5 is not on the link of lbnt-dir0: the route goes out of \
                 lbnt-w0; direct routing needs every backend on the director's segment"
            );

            let err = check_on_link(index, Lab::DIRECTOR_IP)
                .unwrap_err()
                .to_string();
            assert!(err.contains("is an address of this host"), "{err}");

            let err = check_on_link(index, v4(172, 31, 0, 1))
                .unwrap_err()
                .to_string();
            assert!(err.contains("there is no route to it"), "{err}");
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_full_ipv6_table_names_the_ipv6_limit() {
        let why = table_full_reason(10, true);
        assert!(why.contains("net.ipv6.neigh.default.gc_thresh3"), "{why}");
        assert!(!why.contains("ipv4"), "{why}");
    }

    /// NDP as ARP: a missing entry is solicited (RTM_NEWNEIGH with NTF_USE on AF_INET6) and
    /// answered; an unanswered one is reported after the timeout; the route check follows
    /// IPv6 routes.
    #[test]
    fn ndp_resolution_and_on_link_check_in_a_namespace() {
        let lab = Lab::new("six");
        lab.ip(
            &lab.director,
            &["-6", "route", "add", "fd00:59::/64", "via", "fd00:58::2"],
        );
        netns::run_in(&lab.director, || {
            let index = link::ifindex(Lab::DIRECTOR_DEV)?;
            assert_eq!(lookup(index, Lab::PEER_IP6)?, None, "not yet resolved");

            let start = Instant::now();
            let got = resolve(index, Lab::PEER_IP6, Duration::from_secs(2))?;
            assert_eq!(got, Resolution::Resolved(Lab::PEER_MAC));
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "{:?}",
                start.elapsed()
            );
            let entry = lookup(index, Lab::PEER_IP6)?.expect("an IPv6 entry after resolve");
            assert_eq!(entry.mac, Lab::PEER_MAC);

            // Both families in one call, and nobody at fd00:58::99.
            let timeout = Duration::from_millis(300);
            let start = Instant::now();
            let results = resolve_all(index, &[Lab::PEER_IP, UNUSED_6, Lab::PEER_IP6], timeout);
            let took = start.elapsed();
            assert_eq!(
                results[0],
                (Lab::PEER_IP, Resolution::Resolved(Lab::PEER_MAC))
            );
            assert_eq!(
                results[2],
                (Lab::PEER_IP6, Resolution::Resolved(Lab::PEER_MAC))
            );
            match &results[1].1 {
                Resolution::Unresolved(r) => assert!(
                    r.starts_with("no neighbour advertisement (NDP) from fd00:58::99 on lbnt-dir0"),
                    "{r}"
                ),
                other => panic!("expected Unresolved, got {other:?}"),
            }
            assert!(took >= timeout && took < timeout * 2, "{took:?}");

            check_on_link(index, Lab::PEER_IP6)?;
            check_on_link(index, UNUSED_6)?;
            let err = check_on_link(index, "fd00:59::5".parse()?).unwrap_err();
            assert_eq!(
                err.to_string(),
                "backend fd00:59::5 is not on the link of lbnt-dir0: the route goes via \
                 fd00:58::2; direct routing needs every backend on the director's segment"
            );
            let err = check_on_link(index, Lab::DIRECTOR_IP6)
                .unwrap_err()
                .to_string();
            assert!(err.contains("is an address of this host"), "{err}");
            let err = check_on_link(index, "fd00:60::1".parse()?)
                .unwrap_err()
                .to_string();
            assert!(err.contains("there is no route to it"), "{err}");
            Ok(())
        })
        .unwrap();
    }

    /// The neighbour watch reports IPv6 entries too: resolving the peer's IPv6 address is
    /// announced as a usable entry with its MAC.
    #[test]
    fn watch_reports_ipv6_entries() {
        let lab = Lab::new("w");
        netns::run_in(&lab.director, || {
            let index = link::ifindex(Lab::DIRECTOR_DEV)?;
            let (tx, rx) = std::sync::mpsc::channel();
            let _thread = watch(move |ev| tx.send(ev).is_ok())?;
            trigger(index, Lab::PEER_IP6)?;
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(NeighEvent::Changed {
                        ifindex,
                        addr,
                        usable: Some(n),
                        ..
                    }) if addr == Lab::PEER_IP6 => {
                        assert_eq!((ifindex, n.mac), (index, Lab::PEER_MAC));
                        return Ok(());
                    }
                    Ok(_) => continue,
                    Err(e) => anyhow::bail!("no usable IPv6 neighbour event within 2 s: {e}"),
                }
            }
        })
        .unwrap();
    }
}
