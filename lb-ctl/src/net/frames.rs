//! AF_PACKET sockets: [`Frames`] sends whole Ethernet frames out of one interface (VRRP's
//! gratuitous ARP and unsolicited neighbour advertisements, the via-VIP health check's TCP
//! segments); [`Capture`] receives the frames of one protocol that arrive on one interface
//! (what XDP passes to the kernel), with a deadline.

use std::{
    io::{self, Read as _},
    time::Instant,
};

use anyhow::{Context as _, Result};
use socket2::{Domain, SockAddr, SockAddrStorage, Socket, Type};

/// An AF_PACKET socket that sends Ethernet frames out of one interface.
pub struct Frames {
    socket: Socket,
    ifindex: u32,
}

impl Frames {
    /// Protocol 0: it sends only, and receives nothing.
    pub fn open(ifindex: u32) -> Result<Frames> {
        let socket = Socket::new(Domain::PACKET, Type::RAW, None)
            .context("opening an AF_PACKET socket to send frames (needs CAP_NET_RAW)")?;
        Ok(Frames { socket, ifindex })
    }

    /// Sends `frame` (Ethernet header included, at least 14 bytes) as it is.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let (Some(dst), Some(proto)) = (frame.get(0..6), frame.get(12..14)) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a frame without header",
            ));
        };
        let mut mac = [0u8; 6];
        mac.copy_from_slice(dst);
        let to = link_layer(self.ifindex, u16::from_be_bytes([proto[0], proto[1]]), mac);
        self.socket.send_to(frame, &to)?;
        Ok(())
    }
}

/// `struct sockaddr_ll` for frames of `protocol` out of `ifindex` to `dst`.
fn link_layer(ifindex: u32, protocol: u16, dst: [u8; 6]) -> SockAddr {
    let mut sll_addr = [0u8; 8];
    sll_addr[..6].copy_from_slice(&dst);
    let ll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol.to_be(),
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

/// An AF_PACKET socket that receives the frames of one Ethernet protocol on one interface.
pub struct Capture {
    socket: Socket,
}

impl Capture {
    /// Frames of `protocol` (an EtherType: 0x0800 IPv4, 0x86dd IPv6) on `ifindex`, from now on.
    pub fn open(ifindex: u32, protocol: u16) -> Result<Capture> {
        let socket = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(i32::from(protocol.to_be()).into()),
        )
        .context("opening an AF_PACKET socket to receive frames (needs CAP_NET_RAW)")?;
        socket
            .bind(&link_layer(ifindex, protocol, [0; 6]))
            .with_context(|| format!("binding an AF_PACKET socket to interface {ifindex}"))?;
        Ok(Capture { socket })
    }

    /// The next frame into `buf` (its length), or `Ok(None)` once `deadline` has passed.
    pub fn next(&self, buf: &mut [u8], deadline: Instant) -> io::Result<Option<usize>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket.set_read_timeout(Some(left))?;
            match (&self.socket).read(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }
}
