//! The next hop of a tunnel's outer packet, from the kernel's FIB (`bpf_fib_lookup`).
//!
//! The lookup is made as the kernel would forward a packet that arrived on the ingress
//! interface: its routes (policy rules too), its neighbour table, its MTUs. So a route change
//! or a next hop that moved takes effect with the next packet, without a reload. The kernel
//! answers only for an interface that forwards (`net.ipv4.conf.IFACE.forwarding`,
//! `net.ipv6.conf.IFACE.forwarding`); elsewhere every lookup fails and tunnel packets pass.

use aya_ebpf::{
    helpers::generated::bpf_fib_lookup, macros::map, maps::PerCpuArray, programs::XdpContext,
};
use lb_common::Addr;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
/// Also fill in the source address the kernel would use for the destination (Linux 6.7+).
pub const LOOKUP_SRC: u32 = 16;
pub const RET_SUCCESS: i64 = 0;
/// The packet (`Params::tot_len`) exceeds the route's MTU; `tot_len` then holds the MTU.
pub const RET_FRAG_NEEDED: i64 = 8;

/// `struct bpf_fib_lookup` (64 bytes) with its unions spelled as the fields this program uses.
#[repr(C)]
pub struct Params {
    pub family: u8,
    pub l4_protocol: u8,
    /// Network byte order (the outer UDP ports of GUE, which ECMP may hash).
    pub sport: u16,
    pub dport: u16,
    /// In: the outer packet's IP length, checked against the route's MTU. Out: the MTU.
    pub tot_len: u16,
    /// In: the ingress interface. Out: the egress interface.
    pub ifindex: u32,
    /// IPv4: the TOS byte (first byte); IPv6: the flow information (network byte order).
    pub tos_flowinfo: u32,
    /// IPv4 addresses are the first word.
    pub src: Addr,
    pub dst: Addr,
    /// Out: a VLAN (unused: the program sends untagged). In: a table id (unused).
    pub vlan: u32,
    /// In: the first 4 bytes are the packet mark (0). Out: the egress interface's MAC.
    pub smac: [u8; 6],
    /// Out: the next hop's MAC.
    pub dmac: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<Params>() == 64);

/// The lookup's parameters, per CPU: in a map value rather than on the stack, which the
/// data path's frames together nearly fill.
#[map]
static FIB_PARAMS: PerCpuArray<Params> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's parameters, to fill in whole before each lookup.
#[inline(always)]
pub fn params() -> Option<&'static mut Params> {
    FIB_PARAMS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Looks `p` up; the return value is the kernel's (`RET_*`, or a negative error).
#[inline(always)]
pub fn lookup(ctx: &XdpContext, p: &mut Params, flags: u32) -> i64 {
    unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            p as *mut Params as *mut _,
            core::mem::size_of::<Params>() as i32,
            flags,
        )
    }
}
