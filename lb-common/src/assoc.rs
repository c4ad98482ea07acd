//! Set-associative tables: arrays whose slots are grouped in buckets of [`WAYS`], a key's
//! entry in one slot of the bucket a hash of the key names. The half-open table (`SYNS`,
//! [`HalfOpen`](crate::HalfOpen)) and the persistence table (`PERSIST`,
//! [`PersistSlot`](crate::PersistSlot)) are such tables: a lookup reads at most four slots,
//! array reads that the verifier inlines, where an LRU hash map's lookup is a helper call
//! (its hash, its bucket walk) and its insert a free-list pop and a bucket lock.
//!
//! A new entry takes, in its bucket, its key's own slot, else an empty one, else the one
//! seen least recently ([`Slot::rank`]): as an LRU map evicts its oldest entry, but among
//! four. The data path and user space choose the slot by the same rule.

/// Slots of a bucket: a key's entry is in one of them.
pub const WAYS: u32 = 4;

/// A slot of a set-associative table: what a table says of its slots (filled, whose key,
/// stamped when); the rule that finds and places entries is the trait's, the same for every
/// table.
pub trait Slot {
    type Key: PartialEq;

    /// Whether the slot holds an entry (of its key).
    fn filled(&self) -> bool;

    /// The key of the slot's entry (meaningless in an empty slot).
    fn key(&self) -> &Self::Key;

    /// When the slot's entry was last seen.
    fn last_seen_ns(&self) -> u64;

    /// Whether the slot holds `key`'s entry.
    #[inline(always)]
    fn holds(&self, key: &Self::Key) -> bool {
        self.filled() && self.key() == key
    }

    /// How readily a new entry of `key` takes this slot, lowest first: `key`'s own entry
    /// (0), an empty slot (1), else the entry seen least recently (2 + its stamp; an expired
    /// entry is older than any live one).
    #[inline(always)]
    fn rank(&self, key: &Self::Key) -> u64 {
        if !self.filled() {
            1
        } else if self.key() == key {
            0
        } else {
            self.last_seen_ns().saturating_add(2)
        }
    }
}
