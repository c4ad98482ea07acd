//! Tables: the sequence of backend ids a service's scheduler walks or hashes into, and the
//! region of `TABLE` it lives in. A changed table goes into a region no live service uses
//! (first fit), so the switch to it is the service entry's one atomic update.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use lb_common::{Service, limits};

use super::{Current, Write, Writes, backends::Member};
use crate::{
    config::{Scheduler, ServiceConfig},
    plan::convert::host_port,
    sched::{maglev, table},
};

/// The table `sc`'s scheduler builds from its usable backends (in file order).
pub(super) fn sequence(
    sc: &ServiceConfig,
    members: &[Member],
    warnings: &mut Vec<String>,
) -> Vec<u32> {
    let weighted = || members.iter().map(|m| (m.id, m.weight)).collect::<Vec<_>>();
    let seq = match sc.scheduler {
        Scheduler::Rr | Scheduler::Lc | Scheduler::Wlc => table::round_robin(&weighted()),
        Scheduler::Wrr => table::weighted_round_robin(&weighted()),
        Scheduler::Sh | Scheduler::Mh => {
            let names: Vec<String> = members
                .iter()
                // `address:port`, `[v6]:port`: the names every director hashes alike.
                .map(|m| host_port(m.config.address, m.config.port))
                .collect();
            let m: Vec<maglev::Member> = members
                .iter()
                .zip(&names)
                .map(|(m, name)| maglev::Member {
                    id: m.id,
                    weight: m.weight,
                    name,
                })
                .collect();
            maglev::build(&m, sc.table_size)
        }
    };
    if matches!(sc.scheduler, Scheduler::Lc | Scheduler::Wlc)
        && seq.len() > limits::LC_MAX_BACKENDS as usize
    {
        warnings.push(format!(
            "service {}: {} compares the first {} of its {} backends only",
            sc.name,
            sc.scheduler,
            limits::LC_MAX_BACKENDS,
            seq.len()
        ));
    }
    seq
}

/// The regions of `TABLE` in use: the live services' and the ones this plan fills.
pub(super) struct Regions {
    /// Offset -> length; empty regions are not kept.
    used: BTreeMap<u32, u32>,
    size: u32,
}

impl Regions {
    pub(super) fn of(current: &Current) -> Regions {
        let mut regions = Regions {
            used: BTreeMap::new(),
            size: current.table_entries,
        };
        for s in current.services.values() {
            regions.take(s.table_offset, s.table_len);
        }
        regions
    }

    fn take(&mut self, offset: u32, len: u32) {
        if len > 0 {
            let l = self.used.entry(offset).or_default();
            *l = (*l).max(len);
        }
    }

    /// Where the service's table `seq` lives: its live region when the contents are the
    /// same, else a free region the table is written to. Returns `(offset, len)`.
    pub(super) fn place(
        &mut self,
        sc: &ServiceConfig,
        old: Option<&Service>,
        current: &Current,
        seq: Vec<u32>,
        w: &mut Writes,
    ) -> Result<(u32, u32)> {
        let len = seq.len() as u32;
        if let Some(o) = old
            && current.tables.get(&o.id) == Some(&seq)
        {
            return Ok((o.table_offset, len));
        }
        if len == 0 {
            return Ok((0, 0));
        }
        let offset = first_fit(self.used.iter().map(|(&o, &l)| (o, l)), len, self.size)
            .with_context(|| {
                format!(
                    "the lookup table has no room for {len} more entries for service {} \
                     (size {}); attach with a larger --table-entries",
                    sc.name, self.size
                )
            })?;
        self.take(offset, len);
        w.tables.push(Write::SetTable(offset, seq));
        Ok((offset, len))
    }
}

/// First free region of `len` entries in `0..size`, between `used` `(offset, len)` regions
/// given in order of offset.
fn first_fit(used: impl IntoIterator<Item = (u32, u32)>, len: u32, size: u32) -> Option<u32> {
    let mut start = 0u32;
    for (off, l) in used {
        if off >= start && off - start >= len {
            return Some(start);
        }
        start = start.max(off.saturating_add(l));
    }
    (size.checked_sub(start)? >= len).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First fit over regions in any order, as [`Regions`] keeps them.
    fn find_region(used: &[(u32, u32)], len: u32, size: u32) -> Option<u32> {
        let mut r = Regions {
            used: BTreeMap::new(),
            size,
        };
        for &(o, l) in used {
            r.take(o, l);
        }
        first_fit(r.used.iter().map(|(&o, &l)| (o, l)), len, r.size)
    }

    #[test]
    fn regions_are_first_fit_and_never_overlap() {
        assert_eq!(find_region(&[], 4, 10), Some(0));
        assert_eq!(find_region(&[(0, 4)], 4, 10), Some(4));
        assert_eq!(find_region(&[(0, 4), (8, 2)], 4, 10), Some(4));
        assert_eq!(find_region(&[(0, 4), (8, 2)], 5, 10), None);
        assert_eq!(find_region(&[(0, 4), (8, 2)], 3, 12), Some(4));
        assert_eq!(find_region(&[(2, 2)], 2, 10), Some(0));
        assert_eq!(find_region(&[(5, 0)], 10, 10), Some(0));
        assert_eq!(find_region(&[(3, 3), (0, 3)], 4, 10), Some(6));
    }
}
