//! The servers that run on the lab's real servers (std, and socket2 for IPv6-only sockets).
//!
//! ```text
//! lab-server http     --name NAME [--port 80]   [--addr IP]...
//! lab-server udp-echo --name NAME [--port 5353] [--addr IP]...
//! ```
//!
//! Once every socket is bound, the server prints one line `ready ...` to stdout (the lab waits
//! for it) and then writes nothing more to stdout; errors go to stderr.
//!
//! `http` (HTTP/1.0 and 1.1, a thread per connection, keep-alive unless the client asks for
//! `Connection: close`; an idle connection is closed after 120 s):
//! - `GET /count`: the number of requests served so far, as a decimal and `\n`; not counted.
//! - `GET /reset`: sets that number to 0 and answers the number it had; not counted.
//! - `GET /hold?ms=N`: waits N ms (at most 600000; 1000 without `ms`), then answers as `/`.
//! - `GET /whoami`: `NAME local=IP:PORT peer=IP:PORT\n` (the addresses of the connection).
//! - any other path: `NAME\n`.
//!
//! Every answer carries `Content-Length` and the header `X-Server: NAME`.
//!
//! `udp-echo`: answers every datagram with `NAME ` followed by the datagram's payload, whole
//! (any size a UDP datagram can have: 65,507 bytes over IPv4, 65,527 over IPv6). A datagram so
//! large that the name no longer fits in front of it is echoed alone, unchanged.
//!
//! Without `--addr` both servers bind `0.0.0.0` and `::` (the IPv6 socket IPv6-only, so the two
//! coexist and IPv4 peers show as IPv4); a socket bound to a wildcard address answers from the
//! address the route to the client picks, not necessarily the one the datagram was sent to, so
//! a real server that has the VIP on `lo` is given `--addr RIP --addr VIP` (one socket each).
//! The HTTP server binds the same way (TCP answers from the address the client connected to).

use std::{
    env,
    io::{self, BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

const USAGE: &str = "usage: lab-server http --name NAME [--port 80] [--addr IP]...\n       \
                     lab-server udp-echo --name NAME [--port 5353] [--addr IP]...";

/// Longest request line or header line accepted.
const MAX_LINE: usize = 8192;
/// Most header lines accepted in one request.
const MAX_HEADERS: usize = 100;
/// Largest request body read (and thrown away).
const MAX_BODY: u64 = 1 << 20;
/// An idle keep-alive connection is closed after this long.
const IDLE: Duration = Duration::from_secs(120);
/// Longest wait `/hold` accepts.
const MAX_HOLD_MS: u64 = 600_000;
/// The largest UDP payload over IPv4 (65,535 - 20 - 8) and over IPv6 (65,535 - 8).
const MAX_UDP4: usize = 65_507;
const MAX_UDP6: usize = 65_527;

struct Args {
    mode: String,
    name: String,
    port: u16,
    addrs: Vec<IpAddr>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = env::args().skip(1);
    let mode = it.next().ok_or("missing subcommand")?;
    let (mut name, mut port, mut addrs) = (None, None, Vec::new());
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--name" => name = Some(value()?),
            "--port" => {
                let v = value()?;
                port = Some(v.parse().map_err(|_| format!("bad port {v}"))?);
            }
            "--addr" => {
                let v = value()?;
                addrs.push(v.parse().map_err(|_| format!("bad address {v}"))?);
            }
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    let default_port = match mode.as_str() {
        "http" => 80,
        "udp-echo" => 5353,
        _ => return Err(format!("unknown subcommand {mode}")),
    };
    if addrs.is_empty() {
        addrs.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        addrs.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }
    Ok(Args {
        mode,
        name: name.ok_or("--name is required")?,
        port: port.unwrap_or(default_port),
        addrs,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("lab-server: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match args.mode.as_str() {
        "http" => http(&args),
        _ => udp_echo(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab-server {} {}: {e}", args.mode, args.name);
            ExitCode::FAILURE
        }
    }
}

fn ready(args: &Args) -> io::Result<()> {
    let addrs: Vec<String> = args.addrs.iter().map(|a| a.to_string()).collect();
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "ready {} {} port {} on {}",
        args.mode,
        args.name,
        args.port,
        addrs.join(",")
    )?;
    out.flush()
}

/// A socket of `kind` bound to `ip:port` (listening, for a stream socket). An IPv6 socket is
/// IPv6-only, so `::` and `0.0.0.0` can both be bound on one port.
fn bind(ip: IpAddr, port: u16, kind: socket2::Type) -> io::Result<socket2::Socket> {
    let addr = SocketAddr::new(ip, port);
    let with = |e: io::Error| io::Error::new(e.kind(), format!("binding {addr}: {e}"));
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), kind, None)?;
    if ip.is_ipv6() {
        socket.set_only_v6(true).map_err(with)?;
    }
    if kind == socket2::Type::STREAM {
        socket.set_reuse_address(true).map_err(with)?;
    }
    socket.bind(&addr.into()).map_err(with)?;
    if kind == socket2::Type::STREAM {
        socket.listen(1024).map_err(with)?;
    }
    Ok(socket)
}

// ---------------------------------------------------------------------------------------------
// HTTP

struct Shared {
    name: String,
    served: AtomicU64,
}

fn http(args: &Args) -> io::Result<()> {
    let listeners = args
        .addrs
        .iter()
        .map(|&ip| bind(ip, args.port, socket2::Type::STREAM).map(TcpListener::from))
        .collect::<io::Result<Vec<_>>>()?;
    let shared = Arc::new(Shared {
        name: args.name.clone(),
        served: AtomicU64::new(0),
    });
    ready(args)?;
    let mut acceptors = Vec::new();
    for listener in listeners {
        let shared = Arc::clone(&shared);
        acceptors.push(thread::spawn(move || accept_loop(&listener, &shared)));
    }
    for a in acceptors {
        a.join()
            .map_err(|_| io::Error::other("an accept thread panicked"))??;
    }
    Ok(())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) -> io::Result<()> {
    loop {
        let (stream, _) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(24 /* EMFILE */) => {
                thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => return Err(e),
        };
        let shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                // A connection's errors (a reset, a timeout) only end that connection.
                let _ = serve_connection(stream, &shared);
            });
        if let Err(e) = spawned {
            eprintln!("lab-server: cannot start a connection thread: {e}");
        }
    }
}

struct Request {
    path: String,
    keep_alive: bool,
}

/// Reads one request; `None` when the client closed the connection before sending one.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    // Tolerate empty lines before a request line (RFC 9112 section 2.2).
    loop {
        line.clear();
        if read_line(reader, &mut line)? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(_method), Some(t), Some(v)) => (t.to_owned(), v.to_owned()),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad request line",
            ));
        }
    };
    let mut keep_alive = version == "HTTP/1.1";
    let mut body_len = 0u64;
    for _ in 0..MAX_HEADERS {
        line.clear();
        if read_line(reader, &mut line)? == 0 {
            return Ok(None);
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((key, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if key.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        } else if key.eq_ignore_ascii_case("content-length") {
            body_len = value.parse().unwrap_or(0);
        }
    }
    if body_len > MAX_BODY {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
    }
    io::copy(&mut reader.by_ref().take(body_len), &mut io::sink())?;
    Ok(Some(Request {
        path: target,
        keep_alive,
    }))
}

fn read_line(reader: &mut BufReader<TcpStream>, line: &mut String) -> io::Result<usize> {
    let n = reader.by_ref().take(MAX_LINE as u64).read_line(line)?;
    if n == MAX_LINE && !line.ends_with('\n') {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
    }
    Ok(n)
}

fn serve_connection(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr()?;
    let peer = stream.peer_addr()?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_request(&mut reader)? {
        let (path, query) = match req.path.split_once('?') {
            Some((p, q)) => (p, q),
            None => (req.path.as_str(), ""),
        };
        let body = match path {
            "/count" => format!("{}\n", shared.served.load(Ordering::SeqCst)),
            "/reset" => format!("{}\n", shared.served.swap(0, Ordering::SeqCst)),
            _ => {
                shared.served.fetch_add(1, Ordering::SeqCst);
                match path {
                    "/hold" => {
                        let ms = query
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("ms="))
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(1000)
                            .min(MAX_HOLD_MS);
                        thread::sleep(Duration::from_millis(ms));
                        format!("{}\n", shared.name)
                    }
                    "/whoami" => format!("{} local={local} peer={peer}\n", shared.name),
                    _ => format!("{}\n", shared.name),
                }
            }
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             X-Server: {}\r\nConnection: {}\r\n\r\n{body}",
            body.len(),
            shared.name,
            if req.keep_alive {
                "keep-alive"
            } else {
                "close"
            },
        );
        writer.write_all(response.as_bytes())?;
        writer.flush()?;
        if !req.keep_alive {
            break;
        }
    }
    let _ = writer.shutdown(std::net::Shutdown::Write);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// UDP echo

fn udp_echo(args: &Args) -> io::Result<()> {
    let sockets = args
        .addrs
        .iter()
        .map(|&ip| bind(ip, args.port, socket2::Type::DGRAM).map(UdpSocket::from))
        .collect::<io::Result<Vec<_>>>()?;
    ready(args)?;
    let mut threads = Vec::new();
    for socket in sockets {
        let name = args.name.clone();
        threads.push(thread::spawn(move || -> io::Result<()> {
            let mut buf = vec![0u8; 65536];
            loop {
                let (n, from) = match socket.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                let max = if from.is_ipv4() { MAX_UDP4 } else { MAX_UDP6 };
                let mut reply = Vec::with_capacity(name.len() + 1 + n);
                if name.len() + 1 + n <= max {
                    reply.extend_from_slice(name.as_bytes());
                    reply.push(b' ');
                }
                reply.extend_from_slice(&buf[..n]);
                // A failed send (e.g. no route while a link is down) drops that one reply.
                let _ = socket.send_to(&reply, from);
            }
        }));
    }
    for t in threads {
        t.join()
            .map_err(|_| io::Error::other("a UDP thread panicked"))??;
    }
    Ok(())
}
