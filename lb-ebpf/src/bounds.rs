//! Bounds-checked pointers into the frame, shared by the director's program and the real
//! servers' decapsulation program.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

/// A pointer to a `T` at `offset` bytes into the frame, if the frame holds all of it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// As [`ptr_at`], for an offset known only at run time (after IP options or extension
/// headers). The verifier ties a bounds check to the pointer register it was made on; left
/// alone, LLVM may check `data + (offset + size)` and read through `data + offset`, another
/// register, which the verifier refuses. The volatile read keeps one pointer for both.
#[inline(always)]
pub fn ptr_at_var<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let p = ctx.data() + offset;
    let p = unsafe { core::ptr::read_volatile(&p) };
    if p + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some(p as *mut T)
}
