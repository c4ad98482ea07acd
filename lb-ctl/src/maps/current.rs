//! Reading what the maps hold now into a [`Current`], the input of `plan`: the services, the
//! configured backends, each service's table and the data path's settings. `SERVICES` in one
//! batch call, `BACKENDS` as one memory copy ([`Maps::backend_slots`]), and only the tables'
//! regions (neighbouring regions in one call).

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, Result};
use lb_common::{BACKEND_CONFIGURED, Backend, Service, ServiceKey};

use super::{Maps, array_batch, hash_batch};
use crate::plan::Current;

/// Regions of `TABLE` at most this far apart are read in one call: reading a few unused
/// entries costs less than another syscall.
const MERGE_GAP: u32 = 64;

impl Current {
    /// Reads the maps.
    pub fn read(maps: &Maps) -> Result<Current> {
        let services: Services = hash_batch(&maps.services)
            .context("reading SERVICES")?
            .into_iter()
            .collect();
        let tables = read_tables(maps, &services)?;
        Ok(Current {
            services,
            backends: configured_backends(maps)?,
            tables,
            table_entries: maps.table.len(),
            settings: maps.settings.get(&0, 0).context("reading SETTINGS")?,
        })
    }
}

type Services = BTreeMap<ServiceKey, Service>;

/// The configured backends, by id.
fn configured_backends(maps: &Maps) -> Result<BTreeMap<u32, Backend>> {
    Ok(maps
        .backend_slots()?
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
