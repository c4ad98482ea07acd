//! The membership bitmap of the connection table (`FLOW_FILTER`): a clear bit proves that
//! `FLOWS` holds no entry of a flow, so its packet (a SYN, mostly) is spared the hash-map
//! lookup that would miss.
//!
//! The map holds two bitmaps of [`FLOW_FILTER_WORDS`] words each, then one word that says
//! which is active ([`FLOW_FILTER_SIDE`]). The rule that makes a clear bit a proof: every
//! writer of `FLOWS` sets the key's bit in both bitmaps after its insert, with an atomic OR
//! (the data path, and user space through a shared mapping of the array: a map update would
//! overwrite bits set meanwhile), and nothing clears a bit of the active bitmap. The daemon
//! rebuilds the inactive one (zeroes it, then ORs in the bit of every entry of a walk of
//! `FLOWS`: an entry inserted before the walk is in it, one inserted after the zeroing set its
//! own bit) and then makes it the active one; an entry that leaves `FLOWS` (expired, evicted)
//! leaves its bit set until then. Without the daemon the bits only fill, and a full bitmap
//! costs the lookup of before.

use crate::FlowKey;

/// Bits of one bitmap: 2^24, 2 MiB.
pub const FLOW_FILTER_BITS: u32 = 24;
/// Words of one bitmap.
pub const FLOW_FILTER_WORDS: u32 = 1 << (FLOW_FILTER_BITS - 6);
/// The index of the word that names the active bitmap (0 or 1), after both bitmaps.
pub const FLOW_FILTER_SIDE: u32 = 2 * FLOW_FILTER_WORDS;
/// Entries of `FLOW_FILTER`: two bitmaps and the side word.
pub const FLOW_FILTER_ENTRIES: u32 = FLOW_FILTER_SIDE + 1;

/// A flow's bit: the top bits of the half-open table's hash.
#[inline(always)]
pub const fn flow_filter_bit(f: &FlowKey) -> u32 {
    crate::cache::flow_fmix(f) >> (32 - FLOW_FILTER_BITS)
}

/// The word of bitmap `side` (0 or 1) that holds `bit`, and the bit's mask in it.
#[inline(always)]
pub const fn flow_filter_word(side: u32, bit: u32) -> (u32, u64) {
    (
        (side & 1) * FLOW_FILTER_WORDS + (bit >> 6),
        1u64 << (bit & 63),
    )
}
