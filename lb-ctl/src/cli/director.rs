//! What `list` and `stats` show of this director: one read of the maps, and the VRRP
//! instances of a daemon running for the same pins (from their report files).

use std::path::Path;

use anyhow::Result;

use crate::{
    maps::{Maps, view::Snapshot},
    vrrp::report::{self, Report},
};

pub struct Director {
    pub maps: Snapshot,
    /// By instance name; empty when no daemon runs VRRP for these pins.
    pub vrrp: Vec<Report>,
}

impl Director {
    pub fn read(maps: &Maps, pin_dir: &Path) -> Result<Director> {
        Ok(Director {
            maps: Snapshot::read(maps)?,
            vrrp: report::read_all(&crate::maps::lock::vrrp_reports_dir(pin_dir)),
        })
    }
}
