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

/// The `T` (a `u16` or `u32` header field) at byte `at` of a header the frame holds whole,
/// in one load. Headers sit at any even offset of a frame (the IP header at 14), so the load
/// may be unaligned: the BPF JITs of the architectures with efficient unaligned access
/// (x86-64, arm64) load from any address, and the verifier allows unaligned packet reads
/// there (it is strict only for the stack, or with `BPF_F_STRICT_ALIGNMENT`, which the loader
/// does not set). Read byte-wise, LLVM makes each word four loads, three shifts and three ORs.
/// Only for pointers into the frame, or into a map value at an offset aligned for `T` (the
/// verifier is strict for the stack).
#[inline(always)]
pub fn field<T: Copy, const N: usize>(header: &[u8; N], at: usize) -> T {
    // Folded away: `at` is a constant after inlining.
    if at + size_of::<T>() > N {
        panic!()
    }
    unsafe { header.as_ptr().add(at).cast::<T>().read() }
}

/// Writes `value` at byte `at` of a header in the frame, in one store ([`field`]'s rules).
#[inline(always)]
pub fn set_field<T: Copy, const N: usize>(header: &mut [u8; N], at: usize, value: T) {
    if at + size_of::<T>() > N {
        panic!()
    }
    unsafe { header.as_mut_ptr().add(at).cast::<T>().write(value) }
}

/// A MAC as a word and a half-word (two loads; [`field`]'s rules).
#[inline(always)]
pub fn mac_at<const N: usize>(header: &[u8; N], at: usize) -> (u32, u16) {
    (field(header, at), field(header, at + 4))
}
