//! The end of the backend ids in use, recorded in the last two entries of `TABLE`, past every
//! region a service's table may take: `[MAGIC, end]`. Every configured backend's id is below
//! `end`, so reading the maps reads `BACKENDS` only up to it instead of all 65,536 slots (the
//! kernel copies a batch entry by entry). The data path never reads these entries: a
//! service's table is `[offset, offset + len)` inside the regions. `plan` moves the end up
//! before new backends are written and down only after removed ones are cleared, so it
//! covers every configured backend at every moment.

use anyhow::{Context as _, Result};

use super::{Maps, array_batch, array_update_batch};

/// Entries at the end of `TABLE` that hold the record.
pub const RESERVED: u32 = 2;

/// Marks the record (ASCII `lbBE`), so that zeros or a table's ids are never taken for one.
const MAGIC: u32 = u32::from_be_bytes(*b"lbBE");

/// The recorded end, if `TABLE` holds a record.
pub fn read(maps: &Maps) -> Result<Option<u32>> {
    let Some(at) = maps.table.len().checked_sub(RESERVED) else {
        return Ok(None);
    };
    let record = array_batch(&maps.table, at, RESERVED).context("reading TABLE's last entries")?;
    Ok(match record[..] {
        [MAGIC, end] if end <= maps.backends.len() => Some(end),
        _ => None,
    })
}

/// Records `end`.
pub fn write(maps: &Maps, end: u32) -> Result<()> {
    let at = maps
        .table
        .len()
        .checked_sub(RESERVED)
        .context("TABLE is too small to record the end of the backend ids")?;
    array_update_batch(&maps.table, at, &[MAGIC, end])
        .context("recording the end of the backend ids in TABLE")
}
