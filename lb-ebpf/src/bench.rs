//! Programs for measuring the data path with BPF_PROG_TEST_RUN (`cargo xtask bench`).
//!
//! - `bench_tx`: the baseline: swaps the two MAC addresses and returns XDP_TX, the least an
//!   XDP forwarder can do.
//! - `bench_restore`: with `repeat N` the kernel reuses one buffer, so iteration 2 would see
//!   what iteration 1 rewrote. This program writes the original Ethernet header back, then
//!   tail-calls the program under test (slot 0 of `BENCH_PROGS`); with the slot empty it
//!   returns XDP_TX, which measures its own cost. With `vary_sport` it also writes a new
//!   source port each run (a per-CPU counter), so every packet starts a new flow. With `len`
//!   (the tunnel rows) it first takes the frame back to that length from the front
//!   (`bpf_xdp_adjust_head`): a tunnel backend's outer header (IPIP, GUE) is pushed in front
//!   of the packet, which it leaves untouched behind it, and overwrites the Ethernet header.
//!   The call is made also when the frame kept its length (a delta of 0), so the restore
//!   costs the same in front of the baseline as in front of the director.
//! - `lb_floor`: the end-to-end floor of any XDP director (`lb-bench-lab`, row (d)), attached
//!   natively to a lab director's interface in place of the director's program: an IPv4
//!   frame addressed to `FLOOR_MAC` for the destination `FLOOR_VIP` gets source MAC :=
//!   destination MAC and destination MAC := one of `FLOOR_BACKENDS`, then XDP_TX; every other
//!   frame XDP_PASS. No map lookup, no connection state: the backend is bit 31 of the source
//!   port times a Fibonacci constant (the same two-way split the director's rr gives the
//!   bench's HTTP connections; Linux picks even local ports, so the port's low bit would send
//!   every connection one way), the first backend for a header with options. The three
//!   globals are set by the loader (`EbpfLoader::override_global`); in the read-only data,
//!   the verifier knows their values.
//! - `bench_gen`: the lab's packet generator (`lb-bench-lab`'s raw rate): returns XDP_TX and
//!   nothing else. Run with BPF_PROG_RUN in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`)
//!   on a client's interface, every repetition sends the test frame out of that interface,
//!   built and sent in the kernel, as `xdp-trafficgen` does.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::bpf_xdp_adjust_head,
    macros::{map, xdp},
    maps::{Array, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use lb_common::BenchFrame;

#[map]
static BENCH_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);
/// What to restore in the frame.
#[map]
static BENCH_FRAME: Array<BenchFrame> = Array::with_max_entries(1, 0);
/// The next source port, per CPU.
#[map]
static BENCH_PORT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn head<const N: usize>(ctx: &XdpContext) -> Option<&mut [u8; N]> {
    let start = ctx.data();
    if start + N > ctx.data_end() {
        return None;
    }
    Some(unsafe { &mut *(start as *mut [u8; N]) })
}

#[xdp]
pub fn bench_tx(ctx: XdpContext) -> u32 {
    let Some(eth) = head::<12>(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let mut dst = [0u8; 6];
    dst.copy_from_slice(&eth[..6]);
    eth.copy_within(6..12, 0);
    eth[6..].copy_from_slice(&dst);
    xdp_action::XDP_TX
}

/// `lb_floor`'s VIP, the IPv4 destination address as it is on the wire.
#[unsafe(no_mangle)]
static FLOOR_VIP: [u8; 4] = [0; 4];
/// `lb_floor`'s own MAC: frames to other MACs pass.
#[unsafe(no_mangle)]
static FLOOR_MAC: [u8; 6] = [0; 6];
/// `lb_floor`'s two backends' MACs (the same one twice for one fixed backend).
#[unsafe(no_mangle)]
static FLOOR_BACKENDS: [[u8; 6]; 2] = [[0; 6]; 2];

#[xdp]
pub fn lb_floor(ctx: XdpContext) -> u32 {
    // Ethernet (14), an IPv4 header without options (20), the transport's source port (2).
    let Some(f) = head::<36>(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let (vip, mac) = unsafe {
        (
            core::ptr::read_volatile(&FLOOR_VIP),
            core::ptr::read_volatile(&FLOOR_MAC),
        )
    };
    if f[..6] != mac || f[12..14] != [0x08, 0x00] || f[30..34] != vip {
        return xdp_action::XDP_PASS;
    }
    let pick = if f[14] == 0x45 {
        let sport = u32::from(u16::from_be_bytes([f[34], f[35]]));
        (sport.wrapping_mul(0x9e37_79b1) >> 31) as usize
    } else {
        0
    };
    let backend = unsafe { core::ptr::read_volatile(&FLOOR_BACKENDS[pick & 1]) };
    f[6..12].copy_from_slice(&mac);
    f[..6].copy_from_slice(&backend);
    xdp_action::XDP_TX
}

#[xdp]
pub fn bench_gen(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[xdp]
pub fn bench_restore(ctx: XdpContext) -> u32 {
    let Some(frame) = BENCH_FRAME.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    if frame.len != 0 {
        // A scalar before the subtraction feeds the helper (pointer arithmetic stays 64-bit).
        let len = unsafe { core::ptr::read_volatile(&(ctx.data_end() - ctx.data())) };
        let delta = len as i32 - frame.len as i32;
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
            return xdp_action::XDP_ABORTED;
        }
    }
    if let Some(eth) = head::<14>(&ctx) {
        *eth = frame.eth;
    }
    if frame.vary_sport != 0
        && let Some(port) = BENCH_PORT.get_ptr_mut(0)
    {
        let off = (frame.sport_offset & 0x7f) as usize;
        let start = ctx.data();
        if start + off + 2 <= ctx.data_end() {
            let p = unsafe { &mut *port };
            *p = p.wrapping_add(1);
            let sport = (1024 + (*p % 60000) as u16).to_be_bytes();
            unsafe { *((start + off) as *mut [u8; 2]) = sport };
        }
    }
    unsafe {
        let _ = BENCH_PROGS.tail_call(&ctx, 0);
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
