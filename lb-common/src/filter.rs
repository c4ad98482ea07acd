//! The membership bitmap of the connection table (`FLOW_FILTER`): a clear bit proves that
//! `FLOWS` holds no entry of a flow, so its packet (a SYN, mostly) is spared the hash-map
//! lookup that would miss.
//!
//! The map holds two bitmaps of [`FLOW_FILTER_WORDS`] words each, then one word that says
//! which is active ([`FLOW_FILTER_SIDE`]). A key has two bits, in one 64-bit word
//! ([`flow_filter_word`]: a blocked Bloom filter of two hashes): `FLOWS` may hold the key
//! only if both are set. One word read and one atomic OR, as with one bit, and fewer false
//! hits: with 1,000,000 keys in 2^24 bits about 1.5% of other keys find both bits set, where
//! 5.8% found their one bit set. The rule that makes a clear bit a proof: every writer of
//! `FLOWS` sets the key's bits in both bitmaps after its insert, with an atomic OR
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

/// A flow's hash for the bitmaps: the half-open table's ([`flow_filter_word`] takes its
/// bits).
#[inline(always)]
pub const fn flow_filter_hash(f: &FlowKey) -> u32 {
    crate::cache::flow_fmix(f)
}

/// The word of bitmap `side` (0 or 1) that holds the bits of a flow whose
/// [`flow_filter_hash`] is `hash`, and their mask in it: the top bits of the hash name the
/// word, the next two groups of six bits the two bits (the same bit, for one flow in 64).
#[inline(always)]
pub const fn flow_filter_word(side: u32, hash: u32) -> (u32, u64) {
    let word = hash >> (32 - (FLOW_FILTER_BITS - 6));
    let first = (hash >> 8) & 63;
    let second = (hash >> 2) & 63;
    (
        (side & 1) * FLOW_FILTER_WORDS + word,
        (1u64 << first) | (1u64 << second),
    )
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::v4_mapped;

    fn key(i: u32) -> FlowKey {
        FlowKey {
            src: v4_mapped((0x0a00_0000 | i >> 16).to_be()),
            dst: v4_mapped(0xc0a8_3a85u32.to_be()),
            sport: (i as u16).to_be(),
            dport: 80u16.to_be(),
            proto: crate::PROTO_TCP,
            _pad: [0; 3],
        }
    }

    #[test]
    fn a_key_has_at_most_two_bits_in_one_word_of_each_bitmap() {
        for i in 0..10_000 {
            let h = flow_filter_hash(&key(i));
            let (w0, m0) = flow_filter_word(0, h);
            let (w1, m1) = flow_filter_word(1, h);
            assert_eq!(w1, w0 + FLOW_FILTER_WORDS);
            assert_eq!(m0, m1);
            assert!(w0 < FLOW_FILTER_WORDS && (1..=2).contains(&m0.count_ones()));
        }
    }

    /// The share of other keys that find both their bits set with 1,000,000 keys marked:
    /// about 1.5% (one bit a key: 5.8%).
    #[test]
    fn a_million_keys_leave_few_false_hits() {
        let mut bits = alloc_words();
        for i in 0..1_000_000 {
            let (w, m) = flow_filter_word(0, flow_filter_hash(&key(i)));
            bits[w as usize] |= m;
        }
        let probes = 100_000u32;
        let hits = (0..probes)
            .filter(|p| {
                let (w, m) = flow_filter_word(0, flow_filter_hash(&key(2_000_000 + p)));
                bits[w as usize] & m == m
            })
            .count();
        assert!(hits < 2_200, "{hits} of {probes} false hits");
    }

    fn alloc_words() -> std::vec::Vec<u64> {
        std::vec![0u64; FLOW_FILTER_WORDS as usize]
    }
}
