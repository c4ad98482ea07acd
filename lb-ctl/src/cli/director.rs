//! What `list` and `stats` show of this director: one read of the maps, and the VRRP
//! instances and the announced VIPs of a daemon running for the same pins (from their report
//! files).

use std::path::Path;

use anyhow::Result;

use crate::{
    maps::{Maps, view::Snapshot},
    net::announced,
    vrrp::report::{self, Report},
};

pub struct Director {
    pub maps: Snapshot,
    /// By instance name; empty when no daemon runs VRRP for these pins.
    pub vrrp: Vec<Report>,
    /// The services with `announce:` of a daemon running for these pins; empty when none.
    pub announce: Vec<announced::Report>,
}

impl Director {
    pub fn read(maps: &Maps, pin_dir: &Path) -> Result<Director> {
        Ok(Director {
            maps: Snapshot::read(maps)?,
            vrrp: report::read_all(&crate::maps::lock::vrrp_reports_dir(pin_dir)),
            announce: announced::read(&crate::maps::lock::announce_report(pin_dir)),
        })
    }
}
