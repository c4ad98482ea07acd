//! Floods of spoofed TCP segments for the lab tests, as an attacker sends them: Ethernet frames
//! addressed to a director's MAC, from random sources in 10.0.0.0/8 (a range no lab host
//! routes, so whatever a real server answers them never leaves it) and random source ports, to
//! a VIP on one of a few ports, written straight to the client's interface through `AF_PACKET`
//! sockets ([`PacketSocket`]), in batches (`sendmmsg`), from several threads at once, in the
//! background while the test goes on ([`Flood::start`], [`Flood::wait`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use lb_tests::{env::Env, flood::{Flood, Spoofed}, lab_spec};
//! let env = Env::attached(&lab_spec!(), &[]);
//! let spoofed = Spoofed::new("S", env.client().mac, env.lab.director(0).mac, env.lab.vip(), &[80]);
//! let flood = Flood::start(env.client(), &spoofed, 100_000, 2, Duration::from_secs(30))?;
//! // ... real connections while it runs ...
//! let done = flood.wait()?;
//! println!("{} SYNs in {:.2?} ({:.0}/s)", done.sent, done.took, done.rate());
//! # anyhow::Ok(())
//! ```

use std::{
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};

use crate::{
    lab::{HOST_IFACE, Host, PacketSocket},
    packet::tcp_frame,
};

/// Length of every frame of a flood: Ethernet, IPv4 without options, TCP without options.
pub const FRAME_LEN: usize = 54;
/// Frames per `sendmmsg` call.
const BATCH: usize = 256;

/// What a flood sends: TCP segments with `flags` (as [`tcp_frame`] takes them: `S`, `A`, ...)
/// from `src_mac` to `dst_mac` (the director's), to `dst` on a port drawn from `ports`, from
/// random addresses of 10.0.0.0/8 and random ports >= 1024.
#[derive(Clone, Debug)]
pub struct Spoofed {
    pub flags: &'static str,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub dst: Ipv4Addr,
    pub ports: Vec<u16>,
    /// Start of the random sequence: the same seed gives the same frames.
    pub seed: u64,
}

impl Spoofed {
    /// A flood of `flags` segments to `dst` on `ports`, with a fixed seed.
    pub fn new(
        flags: &'static str,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        dst: Ipv4Addr,
        ports: &[u16],
    ) -> Spoofed {
        Spoofed {
            flags,
            src_mac,
            dst_mac,
            dst,
            ports: ports.to_vec(),
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// The endless, reproducible sequence of frames of this flood from `seed`.
    pub fn frames(&self) -> Frames {
        let port = self.ports.first().copied().unwrap_or(80);
        let template = tcp_frame(
            (self.src_mac, self.dst_mac),
            ([10, 0, 0, 1], 1024),
            (self.dst.octets(), port),
            self.flags,
        );
        let mut t = [0u8; FRAME_LEN];
        t.copy_from_slice(&template[..FRAME_LEN]);
        Frames {
            template: t,
            ports: if self.ports.is_empty() {
                vec![port]
            } else {
                self.ports.clone()
            },
            // xorshift must not start at 0.
            state: self.seed | 1,
        }
    }
}

/// The frames of a [`Spoofed`] flood ([`Spoofed::frames`]).
#[derive(Clone, Debug)]
pub struct Frames {
    template: [u8; FRAME_LEN],
    ports: Vec<u16>,
    state: u64,
}

impl Iterator for Frames {
    type Item = [u8; FRAME_LEN];

    fn next(&mut self) -> Option<[u8; FRAME_LEN]> {
        // xorshift64
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let r = self.state;
        let mut f = self.template;
        f[26..30].copy_from_slice(&[10, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8 | 1]);
        f[34..36].copy_from_slice(&((r >> 32) as u16 | 1024).to_be_bytes());
        let port = self.ports[(r >> 48) as usize % self.ports.len()];
        f[36..38].copy_from_slice(&port.to_be_bytes());
        // IPv4 header checksum (bytes 24..26 of the frame).
        f[24..26].fill(0);
        let ip = fold(sum16(&f[14..34]));
        f[24..26].copy_from_slice(&ip.to_be_bytes());
        // TCP checksum (50..52) over the pseudo header (addresses, protocol 6, length 20).
        f[50..52].fill(0);
        let tcp = fold(sum16(&f[26..34]) + 6 + 20 + sum16(&f[34..54]));
        f[50..52].copy_from_slice(&tcp.to_be_bytes());
        Some(f)
    }
}

/// The one's complement sum of `bytes` as 16-bit words (an even number of bytes).
fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum()
}

/// The checksum of a one's complement sum.
fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A flood on its way: threads sending from a lab host's `eth0`.
#[derive(Debug)]
pub struct Flood {
    threads: Vec<JoinHandle<Result<(u64, Instant)>>>,
    running: Arc<AtomicUsize>,
    start: Instant,
    count: u64,
}

/// A flood that is over: the frames sent and how long it took.
#[derive(Clone, Copy, Debug)]
pub struct Flooded {
    pub sent: u64,
    pub took: Duration,
}

impl Flooded {
    /// Frames per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

impl Flood {
    /// Starts sending `count` frames of `spoofed` out of `host`'s `eth0` from `threads`
    /// threads (each its own socket and its own part of the random sequence), in the
    /// background; each thread stops after `limit` even if its part is not all out.
    pub fn start(
        host: &Host,
        spoofed: &Spoofed,
        count: u64,
        threads: usize,
        limit: Duration,
    ) -> Result<Flood> {
        ensure!(threads > 0, "a flood needs at least one thread");
        let sockets = (0..threads)
            .map(|_| PacketSocket::open(host, HOST_IFACE))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("flooding from {}", host.name))?;
        let running = Arc::new(AtomicUsize::new(threads));
        let start = Instant::now();
        let threads = sockets
            .into_iter()
            .enumerate()
            .map(|(i, socket)| {
                let share = count / threads as u64 + u64::from((i as u64) < count % threads as u64);
                let mut part = spoofed.clone();
                part.seed = spoofed
                    .seed
                    .wrapping_add((i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
                let running = running.clone();
                thread::spawn(move || {
                    let result = send(&socket, &part, share, start, limit);
                    running.fetch_sub(1, Ordering::SeqCst);
                    result.map(|sent| (sent, Instant::now()))
                })
            })
            .collect();
        Ok(Flood {
            threads,
            running,
            start,
            count,
        })
    }

    /// Whether some thread is still sending.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst) > 0
    }

    /// The frames asked for.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Waits for every thread; the frames sent and the time from the start to the last
    /// thread's end.
    pub fn wait(self) -> Result<Flooded> {
        let mut sent = 0;
        let mut end = self.start;
        for t in self.threads {
            let (n, at) = t
                .join()
                .map_err(|_| anyhow::anyhow!("a flood thread panicked"))??;
            sent += n;
            end = end.max(at);
        }
        Ok(Flooded {
            sent,
            took: end - self.start,
        })
    }
}

/// Sends `count` frames of `spoofed` on `socket` in batches, until done or `limit` after
/// `start`; the frames sent.
fn send(
    socket: &PacketSocket,
    spoofed: &Spoofed,
    count: u64,
    start: Instant,
    limit: Duration,
) -> Result<u64> {
    let mut frames = spoofed.frames();
    let mut batch = Vec::with_capacity(BATCH);
    let mut sent = 0;
    while sent < count && start.elapsed() < limit {
        batch.clear();
        batch.extend(frames.by_ref().take(BATCH.min((count - sent) as usize)));
        socket.send_batch(&batch)?;
        sent += batch.len() as u64;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_what_tcp_frame_builds_for_their_addresses() {
        let s = Spoofed::new(
            "S",
            [2, 0, 0, 0, 0, 100],
            [2, 0, 0, 0, 0, 134],
            Ipv4Addr::new(192, 168, 58, 133),
            &[80, 81, 82],
        );
        let mut ports = std::collections::BTreeSet::new();
        for f in s.frames().take(1000) {
            let src = [f[26], f[27], f[28], f[29]];
            let sport = u16::from_be_bytes([f[34], f[35]]);
            let dport = u16::from_be_bytes([f[36], f[37]]);
            assert_eq!(src[0], 10, "a source in 10.0.0.0/8");
            assert!(sport >= 1024);
            ports.insert(dport);
            let want = tcp_frame(
                ([2, 0, 0, 0, 0, 100], [2, 0, 0, 0, 0, 134]),
                (src, sport),
                ([192, 168, 58, 133], dport),
                "S",
            );
            assert_eq!(
                f.as_slice(),
                want.as_slice(),
                "checksums as etherparse computes them"
            );
        }
        assert_eq!(ports.into_iter().collect::<Vec<_>>(), [80, 81, 82]);
    }
}
