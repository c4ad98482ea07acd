//! Writing a plan into the maps, in the plan's order, and `apply`: read, plan, write.

use anyhow::{Context as _, Result};
use lb_common::{Backend, Service, ServiceKey};

use super::{Maps, array_update_batch, derived};
use crate::{
    config::Config,
    plan::{self, Current, Down, Plan, Resolved, Write},
};

impl Plan {
    /// Writes the plan to the maps, in the order `plan` gave its writes. `VIP_FILTER` and
    /// `SERVICE_KEYS` get new services' bits and keys before their services are written, and
    /// lose those of services removed after ([`derived`]). Then the flow caches' generation
    /// moves on ([`Maps::bump_generation`]).
    pub fn execute(&self, maps: &mut Maps) -> Result<()> {
        let puts: Vec<(ServiceKey, Service)> = self
            .writes()
            .iter()
            .filter_map(|w| match w {
                Write::PutService(k, s) => Some((*k, *s)),
                _ => None,
            })
            .collect();
        let deletes = self
            .writes()
            .iter()
            .any(|w| matches!(w, Write::DeleteService(_)));
        if !puts.is_empty() {
            derived::sync(maps, &puts)?;
        }
        self.write_in_order(maps)?;
        if deletes {
            derived::sync(maps, &[])?;
        }
        if !self.writes().is_empty() {
            // Every CPU's cached flows were decided from the maps as they were.
            maps.bump_generation()?;
        }
        Ok(())
    }

    fn write_in_order(&self, maps: &mut Maps) -> Result<()> {
        for w in self.writes() {
            match w {
                Write::ResetBackendCounters(id) => maps.reset_backend_counters(*id)?,
                Write::SetBackend(id, b) => maps
                    .backends
                    .set(*id, b, 0)
                    .with_context(|| format!("writing backend {id}"))?,
                Write::SetTable(offset, seq) => {
                    array_update_batch(&maps.table, *offset, seq).context("writing TABLE")?
                }
                Write::ResetServiceCounters(id) => maps.reset_service_counters(*id)?,
                Write::PutService(k, s) => maps
                    .services
                    .insert(k, s, 0)
                    .with_context(|| format!("writing service {}", s.id))?,
                Write::DeleteService(k) => maps.services.remove(k).context("removing a service")?,
                Write::ClearBackend(id) => maps
                    .backends
                    .set(*id, Backend::default(), 0)
                    .with_context(|| format!("clearing backend {id}"))?,
                Write::PutSettings(s) => maps.settings.set(0, s, 0).context("writing SETTINGS")?,
            }
        }
        Ok(())
    }
}

/// Reads the maps, plans, and (unless `dry_run`) writes. Returns the plan that was (or would
/// be) applied.
pub fn apply(
    maps: &mut Maps,
    config: &Config,
    resolved: &Resolved,
    down: &Down,
    dry_run: bool,
) -> Result<Plan> {
    let current = Current::read(maps)?;
    apply_read(maps, &current, config, resolved, down, dry_run)
}

/// [`apply`] with the maps already read: `lb-ctl apply -f` reads them while the file is
/// parsed (on another thread, under the write lock, so nothing else writes them meanwhile).
pub fn apply_read(
    maps: &mut Maps,
    current: &Current,
    config: &Config,
    resolved: &Resolved,
    down: &Down,
    dry_run: bool,
) -> Result<Plan> {
    let plan = plan::plan(current, config, resolved, down)?;
    if !dry_run {
        plan.execute(maps)?;
    }
    Ok(plan)
}
