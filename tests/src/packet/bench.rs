//! The bench programs (`lb-ebpf/src/bench.rs`) from user space: the MAC-swapping XDP_TX
//! baseline alone, or the restore program in front of a program under test, run with
//! BPF_PROG_TEST_RUN `repeat` times over one buffer. `lb-bench` measures with them;
//! `packet_bench` checks that a run of `repeat N` is N runs of the same packet.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, ProgramArray},
    programs::{ProgramFd, TestRun, TestRunOptions, Xdp},
};
use lb_common::BenchFrame;
use lb_ctl::maps::loader::{self, BENCH_OBJECT};

/// The tunnel services of the bench, as items of a `services:` list: an IPv4 VIP's IPIP
/// backend (port 90), two IPIP backends for new flows (port 91, `rr`), a GUE backend (port 92,
/// UDP 6080), and an IPv6 VIP's IPv6 IPIP backend (6in6, port 90). Every backend is behind
/// the router of a [`super::FibNs`], the outer source its `d0` address.
pub const BENCH_TUNNEL_SERVICES: &str = "
  - { name: ipip, vip: 192.168.58.133, port: 90, scheduler: rr, forward: tunnel,
      tunnel: { type: ipip, source: 10.99.0.1 },
      backends: [ { address: 10.20.0.11 } ] }
  - { name: ipip-rr, vip: 192.168.58.133, port: 91, scheduler: rr, forward: tunnel,
      tunnel: { type: ipip, source: 10.99.0.1 },
      backends: [ { address: 10.20.0.11 }, { address: 10.20.0.12 } ] }
  - { name: gue, vip: 192.168.58.133, port: 92, scheduler: rr, forward: tunnel,
      tunnel: { type: gue, port: 6080, source: 10.99.0.1 },
      backends: [ { address: 10.20.0.13 } ] }
  - { name: ipip6, vip: \"fd00:58::133\", port: 90, scheduler: rr, forward: tunnel,
      tunnel: { type: ipip, source: \"fd99::1\" },
      backends: [ { address: \"fd20::11\" } ] }
";

/// A `struct xdp_md` for BPF_PROG_TEST_RUN's `ctx_in`: the frame arrives on `ifindex` (an
/// interface of the calling thread's namespace).
pub fn xdp_md(frame_len: usize, ifindex: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame_len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// What the restore program writes back before each run of `frame`: its Ethernet header; with
/// `vary_sport`, a new source port at that offset each run; with `restore_len`, the frame's
/// length, to take off an outer header a tunnel backend pushed in front.
pub fn bench_frame(frame: &[u8], vary_sport: Option<u16>, restore_len: bool) -> Result<BenchFrame> {
    Ok(BenchFrame {
        eth: frame
            .get(..14)
            .context("a frame shorter than an Ethernet header")?
            .try_into()?,
        sport_offset: vary_sport.unwrap_or(0),
        vary_sport: u16::from(vary_sport.is_some()),
        len: if restore_len {
            u16::try_from(frame.len()).context("a frame longer than 65535 bytes")?
        } else {
            0
        },
    })
}

impl super::Harness {
    /// A copy of the director program's fd, to put behind the restore program.
    pub fn director_fd(&mut self) -> Result<ProgramFd> {
        self.program()
            .fd()
            .context("the director program's fd")?
            .try_clone()
            .context("copying the director program's fd")
    }
}

/// One test run: the last run's action and frame, and the average time per run.
#[derive(Debug)]
pub struct BenchRun {
    pub action: u32,
    pub per_packet: Duration,
    pub data: Vec<u8>,
}

/// The loaded bench object.
pub struct BenchProgs {
    ebpf: Ebpf,
    slots: ProgramArray<MapData>,
    frame: Array<MapData, BenchFrame>,
}

impl BenchProgs {
    pub fn load() -> Result<BenchProgs> {
        let mut ebpf = EbpfLoader::new()
            .load(BENCH_OBJECT)
            .context("loading the bench object")?;
        for name in ["bench_tx", "bench_restore"] {
            loader::program(&mut ebpf, name)?
                .load()
                .with_context(|| format!("loading {name} (the verifier refused it?)"))?;
        }
        let slots = ebpf
            .take_map("BENCH_PROGS")
            .context("BENCH_PROGS")?
            .try_into()?;
        let frame = ebpf
            .take_map("BENCH_FRAME")
            .context("BENCH_FRAME")?
            .try_into()?;
        Ok(BenchProgs { ebpf, slots, frame })
    }

    /// The baseline program, to run behind the restore program.
    pub fn baseline(&mut self) -> Result<ProgramFd> {
        Ok(loader::program(&mut self.ebpf, "bench_tx")?
            .fd()?
            .try_clone()?)
    }

    /// Sets what the restore program writes back (see [`bench_frame`]).
    pub fn set_frame(&mut self, frame: BenchFrame) -> Result<()> {
        self.frame.set(0, frame, 0).context("writing BENCH_FRAME")
    }

    /// Runs `data` `repeat` times over one buffer: through the baseline alone (`behind`
    /// `None`), or through the restore program, which tail-calls `behind`. With `ifindex` the
    /// frame arrives on that interface of the calling thread's namespace (`ctx_in`), else on
    /// the loopback device.
    pub fn run(
        &mut self,
        behind: Option<&ProgramFd>,
        data: &[u8],
        repeat: u32,
        ifindex: Option<u32>,
    ) -> Result<BenchRun> {
        let prog: &mut Xdp = match behind {
            Some(fd) => {
                self.slots.set(0, fd, 0).context("writing BENCH_PROGS")?;
                loader::program(&mut self.ebpf, "bench_restore")?
            }
            None => loader::program(&mut self.ebpf, "bench_tx")?,
        };
        let ctx = ifindex.map(|i| xdp_md(data.len(), i));
        let mut out = vec![0u8; data.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(data),
                data_out: Some(&mut out),
                ctx_in: ctx.as_ref().map(|c| &c[..]),
                repeat,
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_TEST_RUN")?;
        if r.data_size_out as usize > out.len() {
            bail!("the kernel wrote {} bytes", r.data_size_out);
        }
        out.truncate(r.data_size_out as usize);
        Ok(BenchRun {
            action: r.return_value,
            per_packet: r.duration,
            data: out,
        })
    }
}
