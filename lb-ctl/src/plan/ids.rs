//! Service and backend ids: kept for what exists, and for what is new, the lowest free
//! service id and a backend id past the highest in use (so a removed backend's id is not
//! handed out again while flows may still name it).

use anyhow::{Context as _, Result};
use lb_common::limits;

use super::Current;

/// Which ids are taken: by the maps, or by this plan.
pub(super) struct Ids {
    services: Vec<bool>,
    backends: Vec<bool>,
    /// No free service id is below this.
    service_floor: u32,
    /// No free backend id is below this (once the ids have wrapped).
    backend_floor: u32,
    /// One past the highest backend id in use or taken.
    backend_high: u32,
}

impl Ids {
    pub(super) fn of(current: &Current) -> Ids {
        Ids::new(
            current.services.values().map(|s| s.id),
            current.backends.keys().copied(),
        )
    }

    fn new(
        services: impl IntoIterator<Item = u32>,
        backends: impl IntoIterator<Item = u32>,
    ) -> Ids {
        let mut ids = Ids {
            services: vec![false; limits::MAX_SERVICES as usize],
            backends: vec![false; limits::MAX_BACKENDS as usize],
            service_floor: 0,
            backend_floor: 0,
            backend_high: 0,
        };
        for id in services {
            if let Some(slot) = ids.services.get_mut(id as usize) {
                *slot = true;
            }
        }
        for id in backends {
            if let Some(slot) = ids.backends.get_mut(id as usize) {
                *slot = true;
                ids.backend_high = ids.backend_high.max(id + 1);
            }
        }
        ids
    }

    /// The lowest free service id.
    pub(super) fn new_service(&mut self) -> Result<u32> {
        let id = lowest_free(&self.services, &mut self.service_floor)
            .context("no free service id: at most 4096 services")?;
        self.services[id as usize] = true;
        Ok(id)
    }

    /// A free backend id past the highest one in use, or once those run out the lowest free
    /// one: flows that still name a removed backend's id age out of the connection table
    /// before the id comes round again.
    pub(super) fn new_backend(&mut self) -> Result<u32> {
        let id = if self.backend_high < limits::MAX_BACKENDS {
            self.backend_high
        } else {
            lowest_free(&self.backends, &mut self.backend_floor)
                .context("no free backend slot: at most 65536 backends")?
        };
        self.backends[id as usize] = true;
        self.backend_high = self.backend_high.max(id + 1);
        Ok(id)
    }
}

/// The lowest `false` slot at or past `floor`, which moves up to it (ids are only taken
/// during a plan, so no lower one frees up).
fn lowest_free(taken: &[bool], floor: &mut u32) -> Option<u32> {
    let found = taken[*floor as usize..].iter().position(|&t| !t)? as u32 + *floor;
    *floor = found;
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_ids_move_forward_before_reusing() {
        let mut ids = Ids::new([], [0, 1, 5]);
        assert_eq!(ids.new_backend().ok(), Some(6));
        assert_eq!(ids.new_backend().ok(), Some(7));
        let mut full = Ids::new([], [limits::MAX_BACKENDS - 1]);
        assert_eq!(full.new_backend().ok(), Some(0));
        assert_eq!(full.new_backend().ok(), Some(1));
    }

    #[test]
    fn service_ids_are_the_lowest_free() {
        let mut ids = Ids::new([0, 2], []);
        assert_eq!(ids.new_service().ok(), Some(1));
        assert_eq!(ids.new_service().ok(), Some(3));
        let mut all = Ids::new(0..limits::MAX_SERVICES, []);
        assert!(all.new_service().is_err());
    }
}
