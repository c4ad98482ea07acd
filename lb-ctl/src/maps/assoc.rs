//! The set-associative tables from user space (`lb_common::assoc`): the half-open table
//! (`SYNS`) and the persistence table (`PERSIST`). A key's bucket is read slot by slot, and
//! a new entry goes to the slot the data path would give it ([`Slot::rank`]).

use anyhow::{Context as _, Result};
use aya::{
    Pod,
    maps::{Array, MapData},
};
use lb_common::assoc::{Slot, WAYS};

use super::array_batch;

/// The bucket of `map` that starts at slot `first`: (slot index, slot) of each way.
pub(crate) fn bucket<T: Pod>(
    map: &Array<MapData, T>,
    first: u32,
    name: &str,
) -> Result<Vec<(u32, T)>> {
    (first..first + WAYS)
        .map(|i| {
            let slot = map
                .get(&i, 0)
                .with_context(|| format!("reading {name} slot {i}"))?;
            Ok((i, slot))
        })
        .collect()
}

/// The slot of `map`'s bucket at `first` that holds `key`'s entry.
pub(crate) fn find<T: Pod + Slot>(
    map: &Array<MapData, T>,
    first: u32,
    key: &T::Key,
    name: &str,
) -> Result<Option<(u32, T)>> {
    Ok(bucket(map, first, name)?
        .into_iter()
        .find(|(_, s)| s.holds(key)))
}

/// Writes `slot` (an entry of `key`) into the slot of `map`'s bucket at `first` that the
/// data path would give it. Returns what that slot held if it was another key's entry, which
/// is gone.
pub(crate) fn put<T: Pod + Slot>(
    map: &mut Array<MapData, T>,
    first: u32,
    key: &T::Key,
    slot: T,
    name: &str,
) -> Result<Option<T>> {
    let (at, old) = bucket(map, first, name)?
        .into_iter()
        .min_by_key(|(_, s)| s.rank(key))
        .context("a bucket of no slots")?;
    map.set(at, slot, 0)
        .with_context(|| format!("writing {name} slot {at}"))?;
    // A rank above 1 is another key's entry.
    Ok((old.rank(key) > 1).then_some(old))
}

/// Every slot of `map` that holds an entry ([`Slot::filled`]), in one batch read.
pub(crate) fn filled<T: Pod + Default + Slot>(
    map: &Array<MapData, T>,
    name: &str,
) -> Result<Vec<T>> {
    let slots = array_batch(map, 0, map.len()).with_context(|| format!("reading {name}"))?;
    Ok(slots.into_iter().filter(Slot::filled).collect())
}
