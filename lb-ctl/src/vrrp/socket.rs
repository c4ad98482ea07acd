//! The sockets of one VRRP instance, on socket2:
//!
//! - [`receiver`]: a raw IPv4 socket for protocol 112, non-blocking, bound to the interface
//!   (SO_BINDTODEVICE), member of 224.0.0.18 on it (IP_ADD_MEMBERSHIP with the ifindex)
//!   unless the instance talks to unicast peers.
//! - [`sender`]: a second raw socket bound to the interface and to the primary address (the
//!   source of our adverts), TTL and multicast TTL 255, multicast out of the primary address's
//!   interface, no loopback, and almost no receive buffer (it only sends).
//! - IPv6 (RFC 5798): [`receiver_v6`] and [`sender_v6`], the same with raw IPv6 sockets: ff02::12
//!   joined on the interface (IPV6_ADD_MEMBERSHIP), hop limits 255 (IPV6_MULTICAST_HOPS,
//!   IPV6_UNICAST_HOPS), no loopback, the sender bound to the interface's link-local address.
//!   A raw IPv6 socket gets no IP header, so the receiver asks for the hop limit and the
//!   destination as control messages (IPV6_RECVHOPLIMIT, IPV6_RECVPKTINFO) and
//!   [`receive_v6`] reads them with recvmsg, the source from the message's address.
//! - [`Frames`] (from `net::frames`): an AF_PACKET socket that sends whole Ethernet frames
//!   (gratuitous ARP, unsolicited neighbour advertisements) out of the interface.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6},
    os::fd::AsRawFd as _,
};

use anyhow::{Context as _, Result};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

use super::packet::{self, IpInfo};

/// A raw socket for VRRP (IP protocol 112); EPERM says what is missing.
fn raw() -> Result<Socket> {
    raw_of(Domain::IPV4)
}

fn raw_of(domain: Domain) -> Result<Socket> {
    Socket::new(
        domain,
        Type::RAW.nonblocking(),
        Some(Protocol::from(i32::from(packet::PROTO))),
    )
    .map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            anyhow::anyhow!("opening a raw socket: permission denied (needs root or CAP_NET_RAW)")
        } else {
            anyhow::Error::new(e).context("opening a raw socket")
        }
    })
}

fn bound_to(iface: &str) -> Result<Socket> {
    bind_device(raw()?, iface)
}

fn bind_device(socket: Socket, iface: &str) -> Result<Socket> {
    socket
        .bind_device(Some(iface.as_bytes()))
        .context("setting SO_BINDTODEVICE")?;
    Ok(socket)
}

/// The receive socket: every VRRP packet that arrives on `iface`.
pub fn receiver(iface: &str, ifindex: u32, multicast: bool) -> Result<Socket> {
    let socket = bound_to(iface)?;
    if multicast {
        socket
            .join_multicast_v4_n(&packet::MULTICAST, &InterfaceIndexOrAddress::Index(ifindex))
            .context("setting IP_ADD_MEMBERSHIP")?;
    }
    Ok(socket)
}

/// The send socket: adverts from `primary` out of `iface`.
pub fn sender(iface: &str, primary: Ipv4Addr) -> Result<Socket> {
    let socket = bound_to(iface)?;
    let ttl = u32::from(packet::TTL);
    socket.set_ttl_v4(ttl).context("setting IP_TTL")?;
    (socket.set_multicast_ttl_v4(ttl)).context("setting IP_MULTICAST_TTL")?;
    (socket.set_multicast_loop_v4(false)).context("setting IP_MULTICAST_LOOP")?;
    (socket.set_multicast_if_v4(&primary)).context("setting IP_MULTICAST_IF")?;
    // It only sends: keep what it would queue of received packets small.
    socket
        .set_recv_buffer_size(1)
        .context("setting SO_RCVBUF")?;
    socket
        .bind(&SocketAddrV4::new(primary, 0).into())
        .with_context(|| format!("binding to {primary}"))?;
    Ok(socket)
}

/// Sends one advert (the VRRP message, without IP header) to `dst`.
pub fn send_advert(socket: &Socket, msg: &[u8], dst: Ipv4Addr) -> io::Result<()> {
    socket.send_to(msg, &SocketAddrV4::new(dst, 0).into())?;
    Ok(())
}

/// Receives one packet (IP header included) into `buf`; `WouldBlock` when there is none.
pub fn receive(socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    io::Read::read(&mut &*socket, buf)
}

/// The receive socket of an IPv6 instance: every VRRP packet that arrives on `iface`, with
/// its hop limit and destination as control messages.
pub fn receiver_v6(iface: &str, ifindex: u32, multicast: bool) -> Result<Socket> {
    let socket = bind_device(raw_of(Domain::IPV6)?, iface)?;
    if multicast {
        socket
            .join_multicast_v6(&packet::MULTICAST_V6, ifindex)
            .context("setting IPV6_ADD_MEMBERSHIP for ff02::12")?;
    }
    socket
        .set_recv_hoplimit_v6(true)
        .context("setting IPV6_RECVHOPLIMIT")?;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int; the descriptor
    // is the open socket owned by `socket`. (socket2 has no setter for IPV6_RECVPKTINFO.)
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("setting IPV6_RECVPKTINFO");
    }
    Ok(socket)
}

/// The send socket of an IPv6 instance: adverts from the link-local address `primary` (of
/// interface `ifindex`) out of `iface`, hop limit 255.
pub fn sender_v6(iface: &str, ifindex: u32, primary: Ipv6Addr) -> Result<Socket> {
    let socket = bind_device(raw_of(Domain::IPV6)?, iface)?;
    let hops = u32::from(packet::TTL);
    (socket.set_unicast_hops_v6(hops)).context("setting IPV6_UNICAST_HOPS")?;
    (socket.set_multicast_hops_v6(hops)).context("setting IPV6_MULTICAST_HOPS")?;
    (socket.set_multicast_loop_v6(false)).context("setting IPV6_MULTICAST_LOOP")?;
    (socket.set_multicast_if_v6(ifindex)).context("setting IPV6_MULTICAST_IF")?;
    // The link-local address may still be tentative (duplicate address detection) right
    // after the link came up: bind anyway.
    (socket.set_freebind_v6(true)).context("setting IPV6_FREEBIND")?;
    socket
        .set_recv_buffer_size(1)
        .context("setting SO_RCVBUF")?;
    socket
        .bind(&SocketAddrV6::new(primary, 0, 0, ifindex).into())
        .with_context(|| format!("binding to {primary}%{iface}"))?;
    Ok(socket)
}

/// Sends one advert (the VRRP message, without IP header) to `dst`, of either family; a
/// link-scoped IPv6 destination goes out of `ifindex`.
pub fn send_to(socket: &Socket, msg: &[u8], dst: IpAddr, ifindex: u32) -> io::Result<()> {
    match dst {
        IpAddr::V4(dst) => send_advert(socket, msg, dst),
        IpAddr::V6(dst) => {
            let link_scoped = crate::net::addr::is_link_local(&dst)
                || (dst.is_multicast() && dst.segments()[0] & 0x000f == 2);
            let scope = if link_scoped { ifindex } else { 0 };
            socket.send_to(msg, &SocketAddrV6::new(dst, 0, 0, scope).into())?;
            Ok(())
        }
    }
}

/// Bytes of control messages [`receive_v6`] makes room for (a hop limit and a packet info,
/// each well under 64).
const CONTROL_LEN: usize = 128;

/// Receives one VRRP message of an IPv6 socket into `buf` (no IP header: the kernel strips
/// it): its length, and the source, destination and hop limit the kernel reported. A message
/// without hop limit or destination reports hop limit 0 (refused as a TTL error) or the
/// unspecified destination (refused by the checksum). `WouldBlock` when there is none.
pub fn receive_v6(socket: &Socket, buf: &mut [u8]) -> io::Result<(usize, IpInfo)> {
    let mut from: libc::sockaddr_in6 = zeroed_sockaddr_in6();
    let mut control = [0u8; CONTROL_LEN];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain integers and pointers; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = CONTROL_LEN as _;
    // SAFETY: every pointer in `msg` points at a live buffer of the length given beside it
    // (`from`, `iov` -> `buf`, `control`), all outliving the call; the kernel writes at most
    // those lengths and updates msg_namelen / msg_controllen.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let used = (msg.msg_controllen as usize).min(CONTROL_LEN);
    let (hop_limit, dst) = control_messages(&control[..used]);
    Ok((
        n as usize,
        IpInfo {
            src: IpAddr::V6(Ipv6Addr::from(from.sin6_addr.s6_addr)),
            dst: IpAddr::V6(dst.unwrap_or(Ipv6Addr::UNSPECIFIED)),
            ttl: hop_limit.unwrap_or(0),
        },
    ))
}

fn zeroed_sockaddr_in6() -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain integers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// The hop limit (IPV6_HOPLIMIT) and destination (IPV6_PKTINFO) among the control messages
/// `control` (Linux's layout: `struct cmsghdr` = length (a size_t), level, type (ints), then
/// the data; each message padded to a size_t). Read field by field, never by pointer casts.
pub fn control_messages(control: &[u8]) -> (Option<u8>, Option<Ipv6Addr>) {
    const WORD: usize = std::mem::size_of::<usize>();
    const HEADER: usize = WORD + 8;
    let (mut hop_limit, mut dst) = (None, None);
    let mut at = 0;
    while at + HEADER <= control.len() {
        let word = |i: usize, n: usize| control.get(at + i..at + i + n);
        let Some(len) = word(0, WORD)
            .and_then(|b| b.try_into().ok())
            .map(usize::from_ne_bytes)
        else {
            break;
        };
        let int = |i: usize| {
            word(i, 4)
                .and_then(|b| b.try_into().ok())
                .map(i32::from_ne_bytes)
        };
        let (Some(level), Some(kind)) = (int(WORD), int(WORD + 4)) else {
            break;
        };
        if len < HEADER || at + len > control.len() {
            break;
        }
        let data = &control[at + HEADER..at + len];
        if level == libc::IPPROTO_IPV6 {
            if kind == libc::IPV6_HOPLIMIT && data.len() >= 4 {
                let v = i32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
                hop_limit = u8::try_from(v).ok();
            } else if kind == libc::IPV6_PKTINFO && data.len() >= 16 {
                let mut a = [0u8; 16];
                a.copy_from_slice(&data[..16]);
                dst = Some(Ipv6Addr::from(a));
            }
        }
        at += len.div_ceil(WORD) * WORD;
    }
    (hop_limit, dst)
}

pub use crate::net::frames::Frames;

#[cfg(test)]
mod tests {
    use super::*;

    /// One control message as Linux lays it out: length, level, type, data, padding.
    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let word = std::mem::size_of::<usize>();
        let len = word + 8 + data.len();
        let mut out = len.to_ne_bytes().to_vec();
        out.extend_from_slice(&level.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(data);
        out.resize(len.div_ceil(word) * word, 0);
        out
    }

    #[test]
    fn hop_limit_and_destination_from_control_messages() {
        let dst = packet::MULTICAST_V6;
        let mut info = dst.octets().to_vec();
        info.extend_from_slice(&7u32.to_ne_bytes()); // ifindex
        let mut control = cmsg(
            libc::IPPROTO_IPV6,
            libc::IPV6_HOPLIMIT,
            &255i32.to_ne_bytes(),
        );
        control.extend(cmsg(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info));
        assert_eq!(control_messages(&control), (Some(255), Some(dst)));
        let routed = cmsg(
            libc::IPPROTO_IPV6,
            libc::IPV6_HOPLIMIT,
            &64i32.to_ne_bytes(),
        );
        assert_eq!(control_messages(&routed), (Some(64), None));
        // Other levels, nothing, a length past the end: nothing read, no panic.
        let other = cmsg(libc::SOL_SOCKET, libc::IPV6_HOPLIMIT, &255i32.to_ne_bytes());
        assert_eq!(control_messages(&other), (None, None));
        assert_eq!(control_messages(&[]), (None, None));
        assert_eq!(control_messages(&control[..12]), (None, None));
        // The first message whole (20 bytes, its padding cut): still read.
        assert_eq!(control_messages(&control[..20]), (Some(255), None));
        let mut long = control.clone();
        long[0] = 200;
        assert_eq!(control_messages(&long), (None, None));
    }
}
