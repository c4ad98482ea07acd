//! The data path's log records (aya-log): `lb-ctl run` reads them and logs them through
//! tracing, target `datapath`. The data path writes one only for a rare event the counters
//! cannot explain (a `drop_bad_backend`: a table slot outside `TABLE`, or naming a backend
//! that is not a usable backend of the service), at most once per CPU per second.
//!
//! Each loaded instance of the program has its own ring buffer (`AYA_LOGS`, 128 KiB), and a
//! second interface's attach loads a second instance on the same maps; so every instance of
//! `lb_xdp` that uses this daemon's `SERVICES` map is read, found by the kernel's program list
//! (which also finds a pinned program loaded by an earlier `lb-ctl attach`).

use std::collections::{HashMap, HashSet, hash_map::Entry};

use anyhow::{Context as _, Result};
use aya::programs::loaded_programs;
use aya_log::EbpfLogger;
use lb_common::names;
use tokio::{
    io::{Interest, unix::AsyncFd},
    task::JoinHandle,
};
use tracing::{debug, error, info, trace, warn};

use crate::maps::Maps;

/// The readers of the program instances that use one set of maps.
#[derive(Default)]
pub struct DataPathLog {
    readers: HashMap<u32, JoinHandle<()>>,
}

impl DataPathLog {
    /// Starts reading every instance not read yet and stops reading instances that are gone.
    /// Call it after attaching and after each repair (a re-attach loads a new instance).
    /// Needs a tokio runtime. Failures are logged: the data path works without its log.
    pub fn follow(&mut self, maps: &Maps) {
        if let Err(e) = self.try_follow(maps) {
            warn!(error = %format!("{e:#}"), "reading the data path's log records");
        }
    }

    fn try_follow(&mut self, maps: &Maps) -> Result<()> {
        let ours = instances(maps.id()?);
        self.readers.retain(|id, reader| {
            let keep = ours.contains(id) && !reader.is_finished();
            if !keep {
                reader.abort();
            }
            keep
        });
        for id in ours {
            if let Entry::Vacant(slot) = self.readers.entry(id) {
                slot.insert(read(id)?);
                debug!(program = id, "reading the data path's log records");
            }
        }
        Ok(())
    }
}

impl Drop for DataPathLog {
    fn drop(&mut self) {
        for reader in self.readers.values() {
            reader.abort();
        }
    }
}

/// The ids of the loaded director programs that use the `SERVICES` map `services`.
fn instances(services: u32) -> HashSet<u32> {
    loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(names::PROGRAM))
        .filter(|p| matches!(p.map_ids(), Ok(Some(ids)) if ids.contains(&services)))
        .map(|p| p.id())
        .collect()
}

/// A task that logs program `id`'s records as they arrive.
fn read(id: u32) -> Result<JoinHandle<()>> {
    let logger = EbpfLogger::init_from_id_with_logger(id, ToTracing)
        .with_context(|| format!("opening the log ring buffer of program {id}"))?;
    // SAFETY: the logger owns its ring buffer's fd (an `OwnedFd` inside `MapData`) and
    // returns that same fd for as long as it lives, which the AsyncFd's ownership covers.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering the log ring buffer with tokio")?;
    Ok(tokio::spawn(async move {
        while let Ok(mut ready) = fd.readable_mut().await {
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    }))
}

/// aya-log speaks the `log` crate; the daemon logs through tracing.
struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args();
        match record.level() {
            log::Level::Error => error!(target: "datapath", "{message}"),
            log::Level::Warn => warn!(target: "datapath", "{message}"),
            log::Level::Info => info!(target: "datapath", "{message}"),
            log::Level::Debug => debug!(target: "datapath", "{message}"),
            log::Level::Trace => trace!(target: "datapath", "{message}"),
        }
    }

    fn flush(&self) {}
}
