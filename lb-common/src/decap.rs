//! What the real servers' decapsulation program (`lb_decap`, `lb-ebpf/src/decap.rs`) and
//! `lb-ctl decap` share: its map names, its settings and its counters.
//!
//! The program is a separate object from the director's: a real server loads only it.

use crate::Addr;

/// Names of the decapsulation program and its maps, as the object declares them and as they
/// are pinned (under `<pin dir>/decap`).
pub mod names {
    pub const PROGRAM: &str = "lb_decap";
    pub const CONFIG: &str = "DECAP_CONFIG";
    pub const DSTS: &str = "DECAP_DSTS";
    pub const STATS: &str = "DECAP_STATS";

    /// Every map of the program, in the order they are pinned.
    pub const MAPS: [&str; 3] = [CONFIG, DSTS, STATS];
}

/// The GUE port `lb-ctl decap attach` uses unless told otherwise (the director's default).
pub const DEFAULT_GUE_PORT: u16 = 6080;

/// Entries of `DECAP_DSTS`: the outer destinations a real server accepts, when it lists them.
pub const MAX_DSTS: u32 = 64;

/// `DECAP_CONFIG[0]`, written by `lb-ctl decap attach`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecapConfig {
    /// The UDP destination port of GUE packets, network byte order; 0: GUE is not
    /// decapsulated.
    pub gue_port: u16,
    /// 1: only packets whose outer destination is a key of `DECAP_DSTS` are decapsulated;
    /// 0: any outer destination.
    pub only_listed: u8,
    pub _pad: u8,
}

/// A key of `DECAP_DSTS` (16 bytes, an IPv4 address IPv4-mapped).
pub type DecapDst = Addr;

/// What the decapsulation program did with a packet: the index into `DECAP_STATS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapReason {
    /// Decapsulated: IP in IPv4 (protocol 4 or 41).
    Ipip = 0,
    /// Decapsulated: IP in IPv6 (next header 4 or 41).
    Ip6 = 1,
    /// Decapsulated: GUE (outer IPv4 or IPv6, UDP to the configured port).
    Gue = 2,
    /// Passed untouched: not a tunnel packet (every other packet of the server).
    PassNotTunnel = 3,
    /// Passed untouched: a tunnel packet to an outer destination that is not listed.
    PassOtherDst = 4,
    /// Passed untouched: a fragment of a tunnel packet (the program cannot reassemble it).
    PassFragment = 5,
    /// Passed untouched: a tunnel packet whose outer or inner header is truncated or
    /// inconsistent, an outer IPv4 header with a bad checksum, or a GUE header this program
    /// does not decapsulate (control messages, extension fields, another protocol).
    PassMalformed = 6,
    /// Dropped (XDP_DROP): a tunnel packet whose outer header says congestion was experienced
    /// (ECN CE) around a packet that is not ECN-capable (Not-ECT), which cannot carry the
    /// mark on (RFC 6040 4.2: drop it, as a congested router would have).
    DropCeNotEct = 7,
}

impl DecapReason {
    pub const COUNT: u32 = 8;
    pub const ALL: [DecapReason; Self::COUNT as usize] = [
        DecapReason::Ipip,
        DecapReason::Ip6,
        DecapReason::Gue,
        DecapReason::PassNotTunnel,
        DecapReason::PassOtherDst,
        DecapReason::PassFragment,
        DecapReason::PassMalformed,
        DecapReason::DropCeNotEct,
    ];

    /// A stable snake_case name, as `lb-ctl decap` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            DecapReason::Ipip => "decap_ipip",
            DecapReason::Ip6 => "decap_ip6",
            DecapReason::Gue => "decap_gue",
            DecapReason::PassNotTunnel => "pass_not_tunnel",
            DecapReason::PassOtherDst => "pass_other_dst",
            DecapReason::PassFragment => "pass_fragment",
            DecapReason::PassMalformed => "pass_malformed",
            DecapReason::DropCeNotEct => "drop_ce_not_ect",
        }
    }
}

const _: () = assert!(core::mem::size_of::<DecapConfig>() == 4);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, integers only, no implicit padding (size asserted above).
    unsafe impl aya::Pod for super::DecapConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_indexed_by_their_value() {
        for (i, r) in DecapReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
    }
}
