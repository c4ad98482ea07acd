//! The sockets of one VRRP instance, on socket2:
//!
//! - [`receiver`]: a raw IPv4 socket for protocol 112, non-blocking, bound to the interface
//!   (SO_BINDTODEVICE), member of 224.0.0.18 on it (IP_ADD_MEMBERSHIP with the ifindex)
//!   unless the instance talks to unicast peers.
//! - [`sender`]: a second raw socket bound to the interface and to the primary address (the
//!   source of our adverts), TTL and multicast TTL 255, multicast out of the primary address's
//!   interface, no loopback, and almost no receive buffer (it only sends).
//! - [`Arp`]: an AF_PACKET socket that sends whole Ethernet frames (gratuitous ARP) out of
//!   the interface.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
};

use anyhow::{Context as _, Result};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, SockAddrStorage, Socket, Type};

use super::packet;

const ETH_P_ARP: u16 = 0x0806;

/// A raw socket for VRRP (IP protocol 112); EPERM says what is missing.
fn raw() -> Result<Socket> {
    Socket::new(
        Domain::IPV4,
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
    let socket = raw()?;
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

/// An AF_PACKET socket that sends Ethernet frames out of one interface.
pub struct Arp {
    socket: Socket,
    to: SockAddr,
}

impl Arp {
    /// Protocol 0: it sends only, and receives nothing.
    pub fn open(ifindex: u32) -> Result<Arp> {
        let socket = Socket::new(Domain::PACKET, Type::RAW, None)
            .context("opening the ARP (AF_PACKET) socket")?;
        Ok(Arp {
            socket,
            to: link_layer(ifindex),
        })
    }

    /// Sends `frame` (Ethernet header included) as it is.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.socket.send_to(frame, &self.to)?;
        Ok(())
    }
}

/// `struct sockaddr_ll` for ARP frames out of `ifindex` to the broadcast address.
fn link_layer(ifindex: u32) -> SockAddr {
    let mut sll_addr = [0u8; 8];
    sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let ll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr,
    };
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: socket2 has no constructor for link-layer addresses. `view_as` needs a type no
    // larger than sockaddr_storage (128 bytes; sockaddr_ll is 20) that any bytes make valid
    // (plain integers), and `SockAddr::new` needs storage initialised up to `len` bytes: the
    // whole sockaddr_ll was written just before, and its length is what we pass.
    unsafe {
        *storage.view_as::<libc::sockaddr_ll>() = ll;
        SockAddr::new(
            storage,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    }
}
