//! Making requests from inside a lab host without external tools: each socket is created on a
//! short-lived thread that has entered the host's namespace (a socket stays in the namespace it
//! was created in), then used from the caller's thread. Every call has a deadline.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::Host;

/// Opens a TCP connection from inside `host`'s namespace, waiting at most `timeout`.
pub fn tcp_stream(
    host: &Host,
    addr: impl Into<IpAddr>,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream> {
    tcp_stream_from(host, None, SocketAddr::new(addr.into(), port), timeout)
}

/// [`tcp_stream`] from the source address `src` (one of `host`'s addresses), or the one the
/// kernel picks for `None`.
pub fn tcp_stream_from(
    host: &Host,
    src: Option<IpAddr>,
    target: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream> {
    let stream = host
        .run_in(move || {
            let Some(src) = src else {
                return TcpStream::connect_timeout(&target, timeout)
                    .with_context(|| format!("connecting to {target}"));
            };
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(target),
                socket2::Type::STREAM,
                None,
            )?;
            socket
                .bind(&SocketAddr::new(src, 0).into())
                .with_context(|| format!("binding {src} (is it an address of the host?)"))?;
            socket
                .connect_timeout(&target.into(), timeout)
                .with_context(|| format!("connecting from {src} to {target}"))?;
            Ok(TcpStream::from(socket))
        })
        .with_context(|| format!("from {}", host.name))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// How a TCP connection attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connect {
    /// The handshake completed (the connection has been closed again).
    Established,
    /// The peer answered with a RST.
    Refused,
    /// No answer before the deadline.
    TimedOut,
    /// Something else (no route, host unreachable, ...).
    Failed(String),
}

/// Tries a TCP connection from inside `host` and reports how it ended.
pub fn tcp_connect(
    host: &Host,
    addr: impl Into<IpAddr>,
    port: u16,
    timeout: Duration,
) -> Result<Connect> {
    let target = SocketAddr::new(addr.into(), port);
    host.run_in(move || {
        Ok(match TcpStream::connect_timeout(&target, timeout) {
            Ok(stream) => {
                let _ = stream.shutdown(Shutdown::Both);
                Connect::Established
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Connect::Refused,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                Connect::TimedOut
            }
            Err(e) => Connect::Failed(e.to_string()),
        })
    })
}

/// One `GET path` with `Connection: close` from inside `host` to `addr:port`; returns the
/// status code and the body. The whole exchange takes at most about `timeout`.
pub fn http_get(
    host: &Host,
    addr: impl Into<IpAddr>,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    let target = SocketAddr::new(addr.into(), port);
    let mut conn = HttpConn::connect(host, target.ip(), port, timeout)?;
    conn.request(path, false, None)
        .with_context(|| format!("GET http://{target}{path} from {}", host.name))
}

/// [`http_get`] from the source address `src` (one of `host`'s addresses) to `target`.
pub fn http_get_from(
    host: &Host,
    src: IpAddr,
    target: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    let mut conn = HttpConn::connect_from(host, Some(src), target, timeout)?;
    conn.request(path, false, None)
        .with_context(|| format!("GET http://{target}{path} from {src} in {}", host.name))
}

/// One `POST path` of a body of `len` bytes (`x`), with `Connection: close`, from inside
/// `host` to `addr:port`; returns the status code and the body of the answer. The whole
/// exchange, upload included, takes at most about `timeout`: an upload that stalls fails
/// with a timeout.
pub fn http_post(
    host: &Host,
    addr: impl Into<IpAddr>,
    port: u16,
    path: &str,
    len: usize,
    timeout: Duration,
) -> Result<(u16, String)> {
    let target = SocketAddr::new(addr.into(), port);
    let mut conn = HttpConn::connect(host, target.ip(), port, timeout)?;
    conn.request(path, false, Some(&vec![b'x'; len]))
        .with_context(|| {
            format!(
                "POST of {len} bytes to http://{target}{path} from {}",
                host.name
            )
        })
}

/// An HTTP/1.1 connection that stays open for several requests (keep-alive), opened from
/// inside a lab host. For tests of long-lived connections (e.g. draining a server).
#[derive(Debug)]
pub struct HttpConn {
    reader: BufReader<TcpStream>,
    timeout: Duration,
    host_header: String,
}

impl HttpConn {
    /// Connects from inside `host` to `addr:port`; `timeout` bounds the connect and each later
    /// request.
    pub fn connect(
        host: &Host,
        addr: impl Into<IpAddr>,
        port: u16,
        timeout: Duration,
    ) -> Result<HttpConn> {
        Self::connect_from(host, None, SocketAddr::new(addr.into(), port), timeout)
    }

    /// [`HttpConn::connect`] from the source address `src` (`None`: the kernel picks).
    pub fn connect_from(
        host: &Host,
        src: Option<IpAddr>,
        target: SocketAddr,
        timeout: Duration,
    ) -> Result<HttpConn> {
        let stream = tcp_stream_from(host, src, target, timeout)?;
        Ok(HttpConn {
            reader: BufReader::new(stream),
            timeout,
            // `192.168.58.133:80`, `[fd00:58::133]:80`.
            host_header: target.to_string(),
        })
    }

    /// Opens `n` connections from `host` to `addr:port` and makes one `GET /` on each, which
    /// must answer 200; returns the connections, still open, and the bodies, in order.
    pub fn open_many(
        host: &Host,
        addr: impl Into<IpAddr>,
        port: u16,
        n: usize,
        timeout: Duration,
    ) -> Result<(Vec<HttpConn>, Vec<String>)> {
        let addr = addr.into();
        let mut conns = Vec::new();
        let mut bodies = Vec::new();
        for i in 0..n {
            let mut c = HttpConn::connect(host, addr, port, timeout)
                .with_context(|| format!("connection {i} to {addr}:{port}"))?;
            let (status, body) = c
                .get("/")
                .with_context(|| format!("connection {i}: first request"))?;
            ensure!(status == 200, "connection {i}: status {status}: {body}");
            bodies.push(body);
            conns.push(c);
        }
        Ok((conns, bodies))
    }

    /// `GET path`, keeping the connection open; returns the status code and the body.
    pub fn get(&mut self, path: &str) -> Result<(u16, String)> {
        self.request(path, true, None)
    }

    /// The connection's local address (the client's address and port).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.reader.get_ref().local_addr()?)
    }

    fn request(
        &mut self,
        path: &str,
        keep_alive: bool,
        body: Option<&[u8]>,
    ) -> Result<(u16, String)> {
        let deadline = Instant::now() + self.timeout;
        let (method, length) = match body {
            Some(b) => ("POST", format!("Content-Length: {}\r\n", b.len())),
            None => ("GET", String::new()),
        };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: {}\r\nUser-Agent: \
             lb-tests\r\n{length}\r\n",
            self.host_header,
            if keep_alive { "keep-alive" } else { "close" }
        );
        let stream = self.reader.get_mut();
        stream.set_write_timeout(Some(remaining(deadline)?))?;
        stream
            .write_all(req.as_bytes())
            .context("sending the request")?;
        let mut sent = 0;
        for chunk in body.unwrap_or_default().chunks(16 * 1024) {
            stream.set_write_timeout(Some(remaining(deadline)?))?;
            stream
                .write_all(chunk)
                .with_context(|| format!("sending the body ({sent} bytes sent)"))?;
            sent += chunk.len();
        }
        stream.flush()?;

        let mut line = String::new();
        self.read_line(&mut line, deadline)?;
        if line.is_empty() {
            bail!("the server closed the connection without answering");
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut content_length = None;
        loop {
            line.clear();
            self.read_line(&mut line, deadline)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                content_length = Some(v.trim().parse::<usize>().context("bad Content-Length")?);
            }
        }
        let mut body = Vec::new();
        match content_length {
            Some(len) => {
                body.resize(len, 0);
                let mut got = 0;
                while got < len {
                    self.set_timeout(deadline)?;
                    let n = self
                        .reader
                        .read(&mut body[got..])
                        .context("reading the body")?;
                    if n == 0 {
                        bail!("the connection closed after {got} of {len} body bytes");
                    }
                    got += n;
                }
            }
            None => loop {
                self.set_timeout(deadline)?;
                let mut chunk = [0u8; 4096];
                let n = self.reader.read(&mut chunk).context("reading the body")?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            },
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    fn set_timeout(&mut self, deadline: Instant) -> Result<()> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(remaining(deadline)?))?;
        Ok(())
    }

    fn read_line(&mut self, line: &mut String, deadline: Instant) -> Result<()> {
        self.set_timeout(deadline)?;
        (&mut self.reader)
            .take(8192)
            .read_line(line)
            .context("reading the response")?;
        Ok(())
    }
}

fn remaining(deadline: Instant) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        bail!("timed out");
    }
    Ok(left)
}

/// Sends one UDP datagram from inside `host` to `addr:port` and returns the first reply from
/// that address (the socket is connected, so replies from another address are not taken), or
/// fails after `timeout`. The lab's echo server answers `NAME PAYLOAD`.
pub fn udp_request(
    host: &Host,
    addr: impl Into<IpAddr>,
    port: u16,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>> {
    let target = SocketAddr::new(addr.into(), port);
    let socket = udp_socket(host, target)?;
    socket.set_read_timeout(Some(timeout))?;
    socket
        .send(payload)
        .with_context(|| format!("sending to {target} from {}", host.name))?;
    let mut buf = vec![0u8; 65536];
    let n = socket
        .recv(&mut buf)
        .with_context(|| format!("waiting for a UDP reply from {target} in {}", host.name))?;
    buf.truncate(n);
    Ok(buf)
}

/// A UDP socket made inside `host`, bound to a new ephemeral port of `target`'s family and
/// connected to `target` (so only replies from `target` are taken).
pub fn udp_socket(host: &Host, target: SocketAddr) -> Result<UdpSocket> {
    host.run_in(move || {
        let any: IpAddr = if target.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let socket = UdpSocket::bind((any, 0)).context("binding a UDP socket")?;
        socket
            .connect(target)
            .with_context(|| format!("connecting a UDP socket to {target}"))?;
        Ok(socket)
    })
    .with_context(|| format!("in {}", host.name))
}

/// Sends `count` whole Ethernet frames, `frame(n)` for n = 0, 1, ..., out of `iface` inside
/// `host` through an `AF_PACKET` socket, stopping early after `limit`; returns how many were
/// sent and how long it took. A full device queue (ENOBUFS) is waited out, not an error.
pub fn send_frames(
    host: &Host,
    iface: &str,
    count: u32,
    limit: Duration,
    mut frame: impl FnMut(u32) -> Vec<u8>,
) -> Result<(u32, Duration)> {
    let socket = PacketSocket::open(host, iface)?;
    let start = Instant::now();
    let mut sent = 0;
    while sent < count && start.elapsed() < limit {
        let bytes = frame(sent);
        socket.send_batch(&[bytes.as_slice()])?;
        sent += 1;
    }
    Ok((sent, start.elapsed()))
}

/// An `AF_PACKET` socket made inside a lab host's namespace for one of its interfaces: whole
/// Ethernet frames written to it leave that interface as they are. Usable from any thread
/// (several at once, one socket each, send in parallel).
#[derive(Debug)]
pub struct PacketSocket {
    fd: std::os::fd::OwnedFd,
    to: libc::sockaddr_ll,
    iface: String,
}

impl PacketSocket {
    /// Opens the socket for `iface` inside `host` (needs CAP_NET_RAW).
    pub fn open(host: &Host, iface: &str) -> Result<PacketSocket> {
        let iface = iface.to_owned();
        host.run_in(move || {
            let ifindex = lb_ctl::net::link::ifindex(&iface)?;
            // SAFETY: a plain socket(2) call; the descriptor is owned below.
            let fd =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error())
                    .context("opening an AF_PACKET socket (needs CAP_NET_RAW)");
            }
            // SAFETY: fd is a fresh descriptor owned by nothing else.
            let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
            let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            to.sll_family = libc::AF_PACKET as u16;
            to.sll_ifindex = ifindex as i32;
            to.sll_halen = 6;
            Ok(PacketSocket { fd, to, iface })
        })
        .with_context(|| format!("in {}", host.name))
    }

    /// Sends every frame of `frames` (whole Ethernet frames, at least 14 bytes; all to the
    /// destination MAC of the first) with as few `sendmmsg(2)` calls as the kernel allows. A
    /// full device queue (ENOBUFS) is waited out, not an error.
    pub fn send_batch<F: AsRef<[u8]>>(&self, frames: &[F]) -> Result<()> {
        let Some(first) = frames.first() else {
            return Ok(());
        };
        let mut to = self.to;
        to.sll_addr[..6].copy_from_slice(&first.as_ref()[..6.min(first.as_ref().len())]);
        let mut iovecs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ref().as_ptr() as *mut libc::c_void,
                iov_len: f.as_ref().len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero msghdr is valid; the fields that matter are set below.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_name = (&mut to as *mut libc::sockaddr_ll).cast();
                hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                hdr.msg_iov = iov;
                hdr.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                }
            })
            .collect();
        let mut done = 0;
        while done < msgs.len() {
            let rest = &mut msgs[done..];
            // SAFETY: every header points at a live buffer, iovec and address of the lengths
            // given; `rest.len()` headers follow the pointer.
            let rc = unsafe {
                libc::sendmmsg(
                    std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                    rest.as_mut_ptr(),
                    rest.len() as u32,
                    0,
                )
            };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::ENOBUFS) {
                    // The device queue is full: let it drain, send the frame again.
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                return Err(err)
                    .with_context(|| format!("sending frame {done} of a batch on {}", self.iface));
            }
            done += rc as usize;
        }
        Ok(())
    }
}
