//! Fragments of a datagram to a VIP (`FRAGS`): the backend a first fragment went to, so that
//! the later fragments, which carry no ports, follow it. The director never reassembles.

use crate::Addr;

/// How long an entry lives after the last fragment that used it, per family: Linux's
/// reassembly timers (`net.ipv4.ipfrag_time`, `net.ipv6.ip6frag_time`). A fragment later
/// than that would be dropped by the backend's reassembly anyway.
pub mod frag_timeouts {
    pub const IPV4_S: u32 = 30;
    pub const IPV6_S: u32 = 60;
}

/// Key of `FRAGS`: one datagram, as the receiver's reassembly identifies it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: Addr,
    pub dst: Addr,
    /// The IPv4 identification (16 bits, network byte order, in the low bytes as read) or the
    /// IPv6 fragment header's identification (32 bits, as read).
    pub id: u32,
    /// IPv4: the protocol; IPv6: the fragment header's next header (the same in every
    /// fragment of a datagram).
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of `FRAGS`: where the datagram's first fragment went, and when a fragment of it was
/// last seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frag {
    pub last_seen_ns: u64,
    pub backend: u32,
    pub service_id: u32,
    /// [`frag_timeouts`] of the datagram's family.
    pub timeout_s: u32,
    pub _pad: u32,
}
