//! Programs for measuring the data path with BPF_PROG_TEST_RUN (`cargo xtask bench`).
//!
//! - `bench_tx`: the baseline: swaps the two MAC addresses and returns XDP_TX, the least an
//!   XDP forwarder can do.
//! - `bench_restore`: with `repeat N` the kernel reuses one buffer, so iteration 2 would see
//!   what iteration 1 rewrote. This program writes the original MACs back, then tail-calls
//!   the program under test (slot 0 of `BENCH_PROGS`); with the slot empty it returns XDP_TX,
//!   which measures its own cost. With `vary_sport` it also writes a new source port each
//!   run (a per-CPU counter), so every packet starts a new flow.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
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
fn macs(ctx: &XdpContext) -> Option<&mut [u8; 12]> {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return None;
    }
    Some(unsafe { &mut *(start as *mut [u8; 12]) })
}

#[xdp]
pub fn bench_tx(ctx: XdpContext) -> u32 {
    let Some(eth) = macs(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let mut dst = [0u8; 6];
    dst.copy_from_slice(&eth[..6]);
    eth.copy_within(6..12, 0);
    eth[6..].copy_from_slice(&dst);
    xdp_action::XDP_TX
}

#[xdp]
pub fn bench_restore(ctx: XdpContext) -> u32 {
    let Some(frame) = BENCH_FRAME.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    if let Some(eth) = macs(&ctx) {
        *eth = frame.macs;
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
