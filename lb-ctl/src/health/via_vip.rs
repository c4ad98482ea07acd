//! The via-VIP check (`type: tcp`, `via_vip: true`): a TCP handshake with the service's VIP
//! sent the way the data path sends clients' packets, so it tests what a client's connection
//! needs of the real server and not only that the server is alive.
//!
//! A plain `tcp` check connects to the backend's own address. A real server that lost the VIP
//! from `lo` (or its ARP settings) still passes it, while every client packet the director
//! sends it is dropped. And the director usually holds the VIP itself, so a `connect()` to
//! VIP:port would be answered by the director's own stack. This check instead:
//!
//! 1. finds the way to the backend as the data path does: the kernel's route (on-link, no
//!    gateway: its interface and the director's own address on it) and the backend's MAC
//!    from the kernel's neighbour table (resolved if it has no usable entry), the same entries
//!    the daemon follows for the data path;
//! 2. reserves a local port (a bound TCP socket the kernel will not hand out meanwhile);
//! 3. sends, as a raw Ethernet frame (AF_PACKET) out of that interface, a SYN from the
//!    director's address and that port to VIP:port, addressed to the backend's MAC;
//! 4. waits (AF_PACKET receive on that interface, until the check's timeout) for the answer
//!    from VIP:port to that port: a SYN-ACK acknowledging our sequence number is up, a RST is
//!    down ("refused"), nothing is down ("no answer");
//! 5. after a SYN-ACK, sends a RST to the backend's MAC (sequence = its acknowledgement), so
//!    the real server drops the half-open connection at once. (The director's kernel, which
//!    knows nothing of the connection, also answers the SYN-ACK with a RST, but addressed to
//!    the VIP, which the director usually holds itself, so that one never reaches the real
//!    server.)
//!
//! A real server without the VIP on `lo` drops a packet for an address it does not have, so
//! the check fails while a plain check of the same backend passes. It checks the TCP
//! handshake only: an HTTP request over it would need a TCP stack of our own.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher as _, Hasher as _},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant, SystemTime},
};

use socket2::{Domain, Protocol, Socket, Type};

use super::{
    Outcome, Target,
    segment::{self, ACK, Endpoints, RST, SYN},
};
use crate::net::{
    frames::{Capture, Frames},
    link,
    neigh::{self, Resolution},
    route,
};

/// The way to a backend: the interface, the director's address and MAC on it, the backend's
/// MAC.
#[derive(Clone, Copy, Debug)]
struct Path {
    ifindex: u32,
    src: IpAddr,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
}

/// How long past its deadline the check's thread may take to report (a slow netlink answer)
/// before the check fails anyway.
const GRACE: Duration = Duration::from_millis(200);

/// Checks `target` by a handshake with `vip` at the target's MAC, within `limit`. Runs on a
/// blocking thread (netlink and socket calls), which stops waiting for the answer at `limit`.
pub async fn check(target: &Target, vip: IpAddr, limit: Duration) -> Outcome {
    let shown = SocketAddr::new(vip, target.port);
    let deadline = Instant::now() + limit;
    let target = target.clone();
    let thread = tokio::task::spawn_blocking(move || handshake(&target, vip, deadline));
    match tokio::time::timeout(limit + GRACE, thread).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => Err(format!(
            "tcp via VIP {shown}: the check's thread failed: {e}"
        )),
        Err(_) => Err(format!(
            "tcp via VIP {shown}: no result within {} (the kernel's route or neighbour \
             lookup did not answer)",
            super::show(limit + GRACE)
        )),
    }
}

fn mac(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// The route and neighbour entry to `backend`, as direct routing uses them.
fn path_to(backend: IpAddr, deadline: Instant) -> Result<Path, String> {
    let route = route::get(backend)
        .map_err(|e| format!("{e:#}"))?
        .ok_or_else(|| format!("no route to {backend}"))?;
    let (Some(ifindex), Some(src), None) = (route.oif, route.source, route.gateway) else {
        return Err(format!(
            "{backend} is not on a link of this director (the route to it has a gateway or no \
             source): a via-VIP check needs a direct-routing backend"
        ));
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let dst_mac = match neigh::resolve(ifindex, backend, left).map_err(|e| format!("{e:#}"))? {
        Resolution::Resolved(m) => m,
        Resolution::Unresolved(why) => return Err(format!("no MAC for {backend}: {why}")),
    };
    let src_mac = link::mac(ifindex).map_err(|e| format!("{e:#}"))?;
    Ok(Path {
        ifindex,
        src,
        src_mac,
        dst_mac,
    })
}

/// A sequence number nobody can guess from outside.
fn initial_sequence() -> u32 {
    let mut h = RandomState::new().build_hasher();
    if let Ok(t) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish() as u32
}

/// A local port for `src` that the kernel will not hand out while the socket lives.
fn reserve_port(src: IpAddr) -> Result<(Socket, u16), String> {
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(src, 0)),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(|e| format!("opening a TCP socket: {e}"))?;
    socket
        .bind(&SocketAddr::new(src, 0).into())
        .map_err(|e| format!("reserving a local port on {src}: {e}"))?;
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .ok_or_else(|| format!("reading the port reserved on {src}"))?;
    Ok((socket, port))
}

fn handshake(target: &Target, vip: IpAddr, deadline: Instant) -> Outcome {
    let shown = SocketAddr::new(vip, target.port);
    let path = path_to(target.address, deadline)?;
    let at = format!("{shown} at {} ({})", target.address, mac(path.dst_mac));
    let (_reserved, sport) = reserve_port(path.src)?;
    let capture =
        Capture::open(path.ifindex, segment::ethertype(vip)).map_err(|e| format!("{e:#}"))?;
    let frames = Frames::open(path.ifindex).map_err(|e| format!("{e:#}"))?;
    let ends = Endpoints {
        src_mac: path.src_mac,
        dst_mac: path.dst_mac,
        src: path.src,
        dst: vip,
        sport,
        dport: target.port,
    };
    let isn = initial_sequence();
    let syn = segment::frame(&ends, isn, 0, SYN)
        .ok_or_else(|| format!("{} and the VIP {vip} are of different families", path.src))?;
    frames
        .send(&syn)
        .map_err(|e| format!("sending the SYN to {at}: {e}"))?;
    let mut buf = [0u8; 2048];
    loop {
        let n = match capture.next(&mut buf, deadline) {
            Ok(Some(n)) => n,
            Ok(None) => {
                return Err(format!(
                    "tcp via VIP {at}: no answer within the timeout (does the real server have \
                     the VIP on lo, and a listener on the port?)"
                ));
            }
            Err(e) => return Err(format!("receiving the answer of {at}: {e}")),
        };
        let Some(s) = buf.get(..n).and_then(segment::parse) else {
            continue;
        };
        if (s.src, s.sport, s.dst, s.dport) != (vip, target.port, path.src, sport) {
            continue;
        }
        if s.flags & RST != 0 {
            return Err(format!("tcp via VIP {at}: refused (RST)"));
        }
        if s.flags & (SYN | ACK) == SYN | ACK && s.ack == isn.wrapping_add(1) {
            let reset = segment::frame(&ends, s.ack, 0, RST);
            if let Some(reset) = reset
                && let Err(e) = frames.send(&reset)
            {
                tracing::debug!(backend = %target.address, error = %e, "sending the RST after a via-VIP check");
            }
            return Ok(format!("tcp via VIP {at}: SYN-ACK"));
        }
    }
}
