//! The membership bitmap of `FLOWS` (`FLOW_FILTER`, `lb_common::filter`) from user space:
//! the bits of each key the control plane writes into `FLOWS`, and the daemon's rebuild. Both
//! go through a shared mapping of the array, with atomic ORs: a map update would overwrite
//! the bits the data path sets meanwhile.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context as _, Result};
use aya::maps::{Array, IterableMap as _, MapData};
use lb_common::{
    FLOW_FILTER_ENTRIES, FLOW_FILTER_SIDE, FLOW_FILTER_WORDS, FlowKey, flow_filter_hash,
    flow_filter_word,
};

/// `FLOW_FILTER` mapped into this process, read and write.
pub struct FilterMapping {
    base: *mut AtomicU64,
}

// SAFETY: the mapping is shared memory accessed only through atomics; it lives as long as the
// value and is unmapped once, on drop.
unsafe impl Send for FilterMapping {}
unsafe impl Sync for FilterMapping {}

impl FilterMapping {
    const BYTES: usize = FLOW_FILTER_ENTRIES as usize * 8;

    /// Maps `map`, which must be `FLOW_FILTER` as this version creates it (mmapable).
    pub fn new(map: &Array<MapData, u64>) -> Result<FilterMapping> {
        if map.len() != FLOW_FILTER_ENTRIES {
            anyhow::bail!(
                "FLOW_FILTER has {} entries, not {FLOW_FILTER_ENTRIES}: it was pinned by \
                 another lb-ctl; `lb-ctl detach` every interface, then attach again",
                map.len()
            );
        }
        let fd = map.map().fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of the map's value area, exactly its size; only
        // atomics touch it, and `Drop` unmaps it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error()).context(
                "mapping FLOW_FILTER into memory (pinned by another lb-ctl? `lb-ctl detach` \
                 every interface, then attach again)",
            );
        }
        Ok(FilterMapping {
            base: base.cast::<AtomicU64>(),
        })
    }

    fn word(&self, i: u32) -> &AtomicU64 {
        assert!(i < FLOW_FILTER_ENTRIES, "FLOW_FILTER word {i}");
        // SAFETY: i is within the mapping, whose words are 8-byte aligned (page-aligned base).
        unsafe { &*self.base.add(i as usize) }
    }

    /// The active bitmap (0 or 1).
    pub fn side(&self) -> u32 {
        (self.word(FLOW_FILTER_SIDE).load(Ordering::SeqCst) & 1) as u32
    }

    fn set(&self, side: u32, key: &FlowKey) {
        let (word, mask) = flow_filter_word(side, flow_filter_hash(key));
        self.word(word).fetch_or(mask, Ordering::SeqCst);
    }

    /// Sets `key`'s bits in both bitmaps: after each insert of `key` into `FLOWS`.
    pub fn mark(&self, key: &FlowKey) {
        self.set(0, key);
        self.set(1, key);
    }

    /// Whether the active bitmap has both of `key`'s bits: `FLOWS` may hold it.
    pub fn may_hold(&self, key: &FlowKey) -> bool {
        let (word, mask) = flow_filter_word(self.side(), flow_filter_hash(key));
        self.word(word).load(Ordering::SeqCst) & mask == mask
    }

    /// Bits set in the active bitmap.
    pub fn ones(&self) -> u64 {
        let first = self.side() * FLOW_FILTER_WORDS;
        (first..first + FLOW_FILTER_WORDS)
            .map(|i| u64::from(self.word(i).load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// Rebuilds the inactive bitmap from `FLOWS` and makes it the active one: zeroed, then
    /// the bits of every key a batch walk of `flows` returns ORed in (a key inserted after the
    /// zeroing set its own bits). Returns the keys walked. Run it no more often than a packet
    /// takes to go through the program many times over: a packet that read the old index
    /// must find the old bitmap whole, and the next rebuild zeroes it.
    pub fn rebuild(
        &self,
        flows: &aya::maps::HashMap<MapData, FlowKey, lb_common::Flow>,
    ) -> Result<usize> {
        let other = 1 - self.side();
        let first = other * FLOW_FILTER_WORDS;
        for i in first..first + FLOW_FILTER_WORDS {
            self.word(i).store(0, Ordering::SeqCst);
        }
        let entries = super::hash_batch(flows).context("reading FLOWS")?;
        for (key, _) in &entries {
            self.set(other, key);
        }
        self.word(FLOW_FILTER_SIDE)
            .store(u64::from(other), Ordering::SeqCst);
        Ok(entries.len())
    }
}

impl Drop for FilterMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`.
        unsafe { libc::munmap(self.base.cast(), Self::BYTES) };
    }
}
