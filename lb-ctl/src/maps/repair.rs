//! The daemon's repair of its pins: whatever removed or replaced them (a `bpftool`, an `rm`, a
//! re-attach by hand), the interfaces it runs on end up attached again, to the maps it
//! writes, and those maps pinned where `list` and `stats` look for them.
//!
//! The map contents are repaired by the daemon's next apply (it compares the maps with the
//! desired state); this module puts back the pins and the interface registrations.

use std::path::Path;

use anyhow::{Context as _, Result};
use aya::{maps::MapInfo, programs::links::PinnedLink};
use lb_common::{Iface, names};

use crate::{
    maps::Maps,
    maps::loader::Sizes,
    maps::lock,
    maps::pins::{self, Attached, Mode},
    net::link,
};

/// Puts the pins under `dir` right for a daemon that writes `maps` and runs on `ifaces`;
/// returns what it repaired, one line each (empty when everything was in place).
///
/// - maps pinned under `dir` that are not `maps` (someone detached and attached again):
///   `maps` becomes the pinned ones, so the next apply fills what the program uses;
/// - a map pin missing: `maps` is pinned there again;
/// - an interface without its link pin (detached): attached again, to the same maps;
/// - an interface missing from IFACES, or with an old MAC there: registered again.
pub fn pins(dir: &Path, ifaces: &[String], mode: Mode, maps: &mut Maps) -> Result<Vec<String>> {
    let mut repaired = Vec::new();
    pins::ensure_bpffs(dir)?;
    lock::private_dir(dir)?;
    let services_pin = dir.join(names::SERVICES);
    if services_pin.exists() {
        let pinned = MapInfo::from_pin(&services_pin)
            .with_context(|| format!("reading {}", services_pin.display()))?
            .id();
        if pinned != maps.id()? {
            *maps = Maps::from_pins(dir)?;
            repaired.push(format!(
                "the maps pinned under {} were not the ones the daemon wrote (attached again \
                 by hand?): now writing the pinned ones",
                dir.display()
            ));
        }
    }
    let mut pinned_again = Vec::new();
    for (name, data) in maps.all() {
        let path = dir.join(name);
        if !path.exists() {
            data.pin(&path)
                .with_context(|| format!("pinning {} again", path.display()))?;
            pinned_again.push(name);
        }
    }
    if !pinned_again.is_empty() {
        repaired.push(format!(
            "map pins missing under {}: pinned again: {}",
            dir.display(),
            pinned_again.join(", ")
        ));
    }
    for iface in ifaces {
        let link_path = pins::link_pin(dir, iface);
        if link_path.exists() && PinnedLink::from_pin(&link_path).is_err() {
            std::fs::remove_file(&link_path)
                .with_context(|| format!("removing {}", link_path.display()))?;
            repaired.push(format!("{} was not a link: removed", link_path.display()));
        }
        if pins::attach(dir, iface, mode, &Sizes::default())? == Attached::New {
            repaired.push(format!("{iface} was detached: attached again"));
        }
        let ifindex = link::ifindex(iface)?;
        let want = Iface::new(link::mac(ifindex)?);
        if maps.iface(ifindex) != Some(want) {
            maps.register_iface(iface, ifindex, want.mac)?;
            repaired.push(format!(
                "{iface} (index {ifindex}) was missing from IFACES or had an old MAC: \
                 registered again as {}",
                crate::plan::convert::format_mac(&want.mac)
            ));
        }
    }
    Ok(repaired)
}
