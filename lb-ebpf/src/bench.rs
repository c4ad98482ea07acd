//! Programs for measuring the data path with BPF_PROG_TEST_RUN (`cargo xtask bench`).
//!
//! - `bench_tx`: the baseline: swaps the two MAC addresses and returns XDP_TX, the least an
//!   XDP forwarder can do.
//! - `bench_restore`: with `repeat N` the kernel reuses one buffer, so iteration 2 would see
//!   what iteration 1 rewrote. This program writes the original MACs back, then tail-calls
//!   the program under test (slot 0 of `BENCH_PROGS`); with the slot empty it returns XDP_TX,
//!   which measures its own cost.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, ProgramArray},
    programs::XdpContext,
};

#[map]
static BENCH_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);
/// The frame's original destination and source MACs.
#[map]
static BENCH_ETH: Array<[u8; 12]> = Array::with_max_entries(1, 0);

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
    if let (Some(eth), Some(orig)) = (macs(&ctx), BENCH_ETH.get(0)) {
        *eth = *orig;
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
