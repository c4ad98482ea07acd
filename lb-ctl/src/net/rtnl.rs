//! A minimal synchronous rtnetlink client: one request, its replies, then the socket is closed.
//!
//! A fresh socket is opened for every request, so it lives in the network namespace of the
//! calling thread at the time of the call (a thread that entered another namespace with
//! `netns::enter` talks to that namespace's kernel tables).

use std::{
    fmt, io,
    os::fd::AsRawFd,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// How long to wait for the kernel's answer before giving up (it normally answers at once).
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;

/// `NLMSGERR_ATTR_MSG`: the extended-ack attribute carrying the kernel's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;

static SEQUENCE: AtomicU32 = AtomicU32::new(1);

/// An error the kernel answered a request with: an errno and, where the kernel gave one, its
/// extended-ack message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    pub errno: i32,
    pub message: Option<String>,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.errno))?;
        if let Some(message) = &self.message {
            write!(f, " ({message})")?;
        }
        Ok(())
    }
}

impl std::error::Error for KernelError {}

/// The errno of a kernel answer inside an error chain, if that is what the error is.
pub fn errno(err: &anyhow::Error) -> Option<i32> {
    err.chain()
        .find_map(|e| e.downcast_ref::<KernelError>())
        .map(|e| e.errno)
}

/// Sends `message` with `NLM_F_REQUEST | NLM_F_ACK | extra_flags` and collects the messages the
/// kernel answers with, until the acknowledgement (or, for a dump, `NLMSG_DONE`). A refusal by
/// the kernel comes back as a [`KernelError`] inside the returned error.
pub fn request(message: RouteNetlinkMessage, extra_flags: u16) -> Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE).context("opening a netlink socket")?;
    socket.bind_auto().context("binding a netlink socket")?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connecting a netlink socket")?;
    // Best effort: error texts from the kernel, without an echo of the whole request.
    let _ = socket.set_ext_ack(true);
    let _ = socket.set_cap_ack(true);
    set_recv_timeout(&socket, RECV_TIMEOUT)?;

    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | extra_flags;
    header.sequence_number = sequence;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).context("sending a netlink request")?;

    let is_dump = extra_flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut answers = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full().map_err(|e| {
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                anyhow::anyhow!(
                    "the kernel did not answer a netlink request within {RECV_TIMEOUT:?}"
                )
            } else {
                anyhow::Error::new(e).context("reading a netlink answer")
            }
        })?;
        for parsed in messages(&data) {
            let parsed = parsed?;
            if parsed.header.sequence_number != sequence {
                continue;
            }
            match parsed.payload {
                NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                NetlinkPayload::Done(done) => {
                    if done.code != 0 {
                        return Err(KernelError {
                            errno: done.code.abs(),
                            message: None,
                        }
                        .into());
                    }
                    return Ok(answers);
                }
                NetlinkPayload::Error(err) => match err.code {
                    // The acknowledgement; a dump ends with NLMSG_DONE instead.
                    None if !is_dump => return Ok(answers),
                    None => {}
                    Some(code) => {
                        let message = if parsed.header.flags & NLM_F_ACK_TLVS != 0 {
                            ext_ack_message(&err.header)
                        } else {
                            None
                        };
                        return Err(KernelError {
                            errno: code.get().abs(),
                            message,
                        }
                        .into());
                    }
                },
                _ => {}
            }
        }
    }
}

/// The netlink messages of one datagram, in order; a length that does not fit or a message
/// that does not decode is an error (and the last item).
pub fn messages(data: &[u8]) -> impl Iterator<Item = Result<NetlinkMessage<RouteNetlinkMessage>>> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        if data.len().saturating_sub(offset) < NLMSG_HDRLEN {
            return None;
        }
        let rest = &data[offset..];
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if !(NLMSG_HDRLEN..=rest.len()).contains(&len) {
            offset = data.len();
            return Some(Err(anyhow::anyhow!(
                "malformed netlink message (length {len}, {} bytes left)",
                rest.len()
            )));
        }
        offset += (len + 3) & !3;
        Some(
            NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len])
                .context("decoding a netlink message"),
        )
    })
}

/// The kernel's error text from the TLVs that follow the (capped) original header in an
/// `NLMSG_ERROR` payload.
fn ext_ack_message(payload: &[u8]) -> Option<String> {
    // With NETLINK_CAP_ACK the original message is echoed as its header alone.
    let mut tlvs = payload.get(NLMSG_HDRLEN..)?;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let text = text.split(|&b| b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        tlvs = tlvs.get((len + 3) & !3..).unwrap_or_default();
    }
    None
}

fn set_recv_timeout(socket: &Socket, timeout: Duration) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt on a valid fd with a correctly sized timeval.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("setting a netlink socket's timeout");
    }
    Ok(())
}
