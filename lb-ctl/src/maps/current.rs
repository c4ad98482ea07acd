//! Reading what the maps hold now into a [`Current`], the input of `plan`: the services, the
//! configured backends and each service's table. Batch reads throughout, and only what the
//! plan needs: `BACKENDS` up to the recorded end of the ids ([`super::backends_end`]), the
//! tables' regions (neighbouring regions in one call).

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, Result};
use lb_common::{BACKEND_CONFIGURED, Backend, Service, ServiceKey};

use super::{Maps, array_batch, backends_end, hash_batch};
use crate::plan::Current;

/// Regions of `TABLE` at most this far apart are read in one call: reading a few unused
/// entries costs less than another syscall.
const MERGE_GAP: u32 = 64;

impl Current {
    /// Reads the maps. `BACKENDS` is read on a second thread meanwhile `SERVICES` and the
    /// tables are read on this one: the kernel copies batch entries one by one, so the two
    /// halves take about as long each.
    pub fn read(maps: &Maps) -> Result<Current> {
        let (backends, services) = std::thread::scope(|scope| {
            let backends = scope.spawn(|| read_backends(maps));
            let services = read_services(maps);
            let backends = backends
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (backends, services)
        });
        let (services, tables) = services?;
        let (mut backends, backends_end) = backends?;
        let size = maps.table.len();
        let usable = size.saturating_sub(backends_end::RESERVED);
        // Tables written before the end was recorded may reach into the record's place; then
        // there is no record, whatever those entries hold.
        let can_record_end = size >= backends_end::RESERVED
            && services
                .values()
                .all(|s| u64::from(s.table_offset) + u64::from(s.table_len) <= u64::from(usable));
        let backends_end = match backends_end {
            Some(_) if !can_record_end => {
                backends = read_configured(maps, maps.backends.len())?;
                None
            }
            end => end,
        };
        Ok(Current {
            services,
            backends,
            tables,
            table_entries: if can_record_end { usable } else { size },
            backends_end,
            can_record_end,
        })
    }
}

type Services = BTreeMap<ServiceKey, Service>;

/// The services and their tables.
fn read_services(maps: &Maps) -> Result<(Services, HashMap<u32, Vec<u32>>)> {
    let services: Services = hash_batch(&maps.services)
        .context("reading SERVICES")?
        .into_iter()
        .collect();
    let tables = read_tables(maps, &services)?;
    Ok((services, tables))
}

/// The configured backends, up to the recorded end of their ids if there is one; and that end.
fn read_backends(maps: &Maps) -> Result<(BTreeMap<u32, Backend>, Option<u32>)> {
    let end = backends_end::read(maps)?;
    let backends = read_configured(maps, end.unwrap_or_else(|| maps.backends.len()))?;
    Ok((backends, end))
}

/// The configured backends among the first `end` slots.
fn read_configured(maps: &Maps, end: u32) -> Result<BTreeMap<u32, Backend>> {
    let slots: Vec<Backend> = array_batch(&maps.backends, 0, end).context("reading BACKENDS")?;
    Ok(slots
        .into_iter()
        .enumerate()
        .filter(|(_, b)| b.flags & BACKEND_CONFIGURED != 0)
        .map(|(id, b)| (id as u32, b))
        .collect())
}

/// Each service's table, by service id.
fn read_tables(maps: &Maps, services: &Services) -> Result<HashMap<u32, Vec<u32>>> {
    let mut regions: Vec<(u32, u32, u32)> = services
        .values()
        .map(|s| (s.table_offset, s.table_len, s.id))
        .collect();
    regions.sort_unstable();
    let mut tables = HashMap::with_capacity(regions.len());
    let mut rest = &regions[..];
    while let Some(&(start, _, _)) = rest.first() {
        // The run of regions that starts here, and where it ends.
        let mut end = start;
        let mut n = 0;
        for &(offset, len, _) in rest {
            if offset > end.saturating_add(MERGE_GAP) && n > 0 {
                break;
            }
            end = end.max(offset.saturating_add(len));
            n += 1;
        }
        let entries = array_batch(&maps.table, start, end - start).context("reading TABLE")?;
        for &(offset, len, id) in &rest[..n] {
            let from = (offset - start) as usize;
            let to = (from + len as usize).min(entries.len());
            tables.insert(id, entries.get(from..to).unwrap_or_default().to_vec());
        }
        rest = &rest[n..];
    }
    Ok(tables)
}
