//! What `list` and `stats` show of this director: one read of the maps, the VRRP instances
//! the announced VIPs and the connection-state sync of a daemon running for the same pins (from their report files), and
//! the attached interfaces that do not forward a family the tunnel backends need.

use std::path::Path;

use anyhow::Result;

use lb_common::Forward;

use crate::{
    maps::{Maps, pins, view::Snapshot},
    net::announced,
    net::forwarding::{self, Families, Off},
    vrrp::report::{self, Report},
};

pub struct Director {
    pub maps: Snapshot,
    /// By instance name; empty when no daemon runs VRRP for these pins.
    pub vrrp: Vec<Report>,
    /// Attached interfaces that do not forward a family some tunnel backend needs.
    pub forwarding_off: Vec<Off>,
    /// The services with `announce:` of a daemon running for these pins; empty when none.
    pub announce: Vec<announced::Report>,
    /// The connection-state sync of a daemon running for these pins (`sync:`).
    pub sync: Option<crate::sync::report::Report>,
}

impl Director {
    pub fn read(maps: &Maps, pin_dir: &Path) -> Result<Director> {
        let maps = Snapshot::read(maps)?;
        let need = Families::of(
            (maps.services.iter())
                .flat_map(|s| s.backends.iter())
                .filter(|b| b.forward.is_some_and(|f| f != Forward::Route))
                .map(|b| b.address),
        );
        // Two small files per interface, and only with tunnel backends; an interface whose
        // setting cannot be read is left out (`apply` and `run` report it).
        let forwarding_off = if need == Families::default() {
            Vec::new()
        } else {
            let ifaces = pins::attached_interfaces(pin_dir)?;
            forwarding::off(&ifaces, need)
                .into_iter()
                .filter_map(Result::ok)
                .collect()
        };
        Ok(Director {
            maps,
            vrrp: report::read_all(&crate::maps::lock::vrrp_reports_dir(pin_dir)),
            forwarding_off,
            announce: announced::read(&crate::maps::lock::announce_report(pin_dir)),
            sync: crate::sync::report::read(&crate::maps::lock::sync_report(pin_dir)),
        })
    }
}
