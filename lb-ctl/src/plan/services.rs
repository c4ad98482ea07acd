//! Services: each configured one's entry in `SERVICES` (its id kept by `(vip, port, proto)`),
//! what changed about it, and the services the file no longer has.

use std::collections::HashSet;

use anyhow::Result;
use lb_common::{Service, ServiceKey};

use super::{Change, Current, Write, Writes, ids::Ids};
use crate::{
    config::{Config, ServiceConfig},
    plan::convert::{
        describe_key, describe_persistence, name_bytes, persist_mask, sched_id, scheduler_of,
        service_key, service_name,
    },
};

/// The entry `sc` wants, with its table still to be placed (offset and length 0).
pub(super) fn entry(sc: &ServiceConfig, old: Option<&Service>, ids: &mut Ids) -> Result<Service> {
    let id = match old {
        Some(s) => s.id,
        None => ids.new_service()?,
    };
    let (sched, pick) = sched_id(sc.scheduler);
    let (persist_timeout_s, persist_mask) = match sc.persistence {
        Some(p) => (
            p.timeout.as_secs().min(u32::MAX as u64) as u32,
            persist_mask(sc.vip, p.prefix_len),
        ),
        None => (0, [0; 4]),
    };
    Ok(Service {
        id,
        table_offset: 0,
        table_len: 0,
        pick,
        sched,
        flags: 0,
        persist_timeout_s,
        persist_mask,
        name: name_bytes(&sc.name),
    })
}

/// What a person is told about the service itself: added, or renamed, persistence or
/// scheduler changed.
pub(super) fn describe(
    changes: &mut Vec<Change>,
    sc: &ServiceConfig,
    key: &ServiceKey,
    want: &Service,
    old: Option<&Service>,
) {
    let persistence =
        |s: &Service| describe_persistence(sc.vip, s.persist_timeout_s, &s.persist_mask);
    let changed = |what: String| Change::ChangeService {
        name: sc.name.clone(),
        what,
    };
    let Some(o) = old else {
        let mut what = format!("{} {}", describe_key(key), sc.scheduler.as_str());
        if want.persist_timeout_s != 0 {
            what += &format!(" persistent {}", persistence(want));
        }
        changes.push(Change::AddService {
            name: sc.name.clone(),
            what,
        });
        return;
    };
    if o.name != want.name {
        changes.push(changed(format!("renamed from {}", service_name(o))));
    }
    if (o.persist_timeout_s, o.persist_mask) != (want.persist_timeout_s, want.persist_mask) {
        changes.push(changed(format!(
            "persistence {} -> {}",
            persistence(o),
            persistence(want)
        )));
    }
    if o.sched != want.sched {
        let old_sched = scheduler_of(o).map_or("?", |s| s.as_str());
        changes.push(changed(format!(
            "scheduler {old_sched} -> {}",
            sc.scheduler.as_str()
        )));
    }
}

/// Writes the entry if it differs: the switch to its table. A new service's counters are
/// zeroed first (its id may have been another's).
pub(super) fn put(key: ServiceKey, want: Service, old: Option<&Service>, w: &mut Writes) {
    if old == Some(&want) {
        return;
    }
    if old.is_none() {
        w.switch.push(Write::ResetServiceCounters(want.id));
    }
    w.switch.push(Write::PutService(key, want));
}

/// Removes the services the file no longer has.
pub(super) fn remove_unwanted(
    current: &Current,
    config: &Config,
    changes: &mut Vec<Change>,
    w: &mut Writes,
) {
    let wanted: HashSet<ServiceKey> = config.services.iter().map(service_key).collect();
    for (key, s) in &current.services {
        if wanted.contains(key) {
            continue;
        }
        changes.push(Change::RemoveService {
            name: service_name(s),
            what: describe_key(key),
        });
        w.post.push(Write::DeleteService(*key));
    }
}
