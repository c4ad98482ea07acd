//! `lb-ctl decap`: the real servers' decapsulation program (`lb_decap`), attached to a real
//! server's interface and pinned so it outlives the command, its settings and its counters.
//!
//! Layout of its pin directory, `<pin dir>/decap` (default `/sys/fs/bpf/lb/decap`):
//!
//! ```text
//! lb_decap          the program (the instance of the first attach)
//! link-IFACE        one XDP link per interface; unpinning it detaches
//! DECAP_CONFIG      the GUE port and whether outer destinations are restricted
//! DECAP_DSTS        the accepted outer destinations (when restricted)
//! DECAP_STATS       packets per DecapReason, per CPU
//! ```

use std::{
    fs,
    io::ErrorKind,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::links::PinnedLink,
};
use lb_common::{
    Addr,
    decap::{DecapConfig, DecapReason, names},
};

use crate::{
    maps::loader,
    maps::lock,
    maps::pins::{self, Mode},
    net::link,
    plan::convert,
};

/// The decapsulation program's pin directory under the global `--pin-dir`.
pub fn pin_dir(global: &Path) -> PathBuf {
    global.join("decap")
}

/// What a real server decapsulates, shared by all its attached interfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The UDP port of GUE packets; 0: GUE is not decapsulated.
    pub gue_port: u16,
    /// Only packets to these outer destinations are decapsulated; empty: any.
    pub dsts: Vec<IpAddr>,
}

impl Settings {
    /// The settings in one line for the operator.
    pub fn describe(&self) -> String {
        let gue = match self.gue_port {
            0 => "GUE off".to_string(),
            p => format!("GUE on UDP port {p}"),
        };
        let dsts = if self.dsts.is_empty() {
            "any outer destination".to_string()
        } else {
            let list: Vec<String> = self.dsts.iter().map(IpAddr::to_string).collect();
            format!("outer destinations {}", list.join(", "))
        };
        format!("IPIP, IPv6 and {gue}; {dsts}")
    }
}

/// The decapsulation program's maps.
pub struct DecapMaps {
    pub config: Array<MapData, DecapConfig>,
    pub dsts: HashMap<MapData, Addr, u8>,
    pub stats: PerCpuArray<MapData, u64>,
}

impl DecapMaps {
    /// Takes the maps out of a loaded object.
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<DecapMaps> {
        Self::build(|name| {
            ebpf.take_map(name)
                .with_context(|| format!("the decapsulation object has no map {name}"))
        })
    }

    /// Opens the maps pinned under `dir` (the decapsulation pin directory).
    pub fn from_pins(dir: &Path) -> Result<DecapMaps> {
        Self::build(|name| {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).with_context(|| {
                format!(
                    "opening pinned map {} (is decapsulation attached? `lb-ctl decap attach \
                     IFACE`)",
                    path.display()
                )
            })?;
            Map::from_map_data(data).with_context(|| format!("map {}", path.display()))
        })
    }

    fn build(mut take: impl FnMut(&str) -> Result<Map>) -> Result<DecapMaps> {
        Ok(DecapMaps {
            config: take(names::CONFIG)?
                .try_into()
                .context("DECAP_CONFIG has an unexpected type")?,
            dsts: take(names::DSTS)?
                .try_into()
                .context("DECAP_DSTS has an unexpected type")?,
            stats: take(names::STATS)?
                .try_into()
                .context("DECAP_STATS has an unexpected type")?,
        })
    }

    /// Writes `settings`. A newly accepted destination is added before the restriction is
    /// switched on, and one no longer accepted removed after, so no packet to an address
    /// accepted before and after is ever passed undecapsulated.
    pub fn write(&mut self, settings: &Settings) -> Result<()> {
        let want: Vec<Addr> = settings.dsts.iter().map(|a| convert::addr_of(*a)).collect();
        for addr in &want {
            self.dsts
                .insert(addr, 1, 0)
                .context("writing DECAP_DSTS (at most 64 destinations)")?;
        }
        let config = DecapConfig {
            gue_port: settings.gue_port.to_be(),
            only_listed: u8::from(!want.is_empty()),
            _pad: 0,
        };
        self.config
            .set(0, config, 0)
            .context("writing DECAP_CONFIG")?;
        let stale: Vec<Addr> = self
            .dsts
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.contains(k))
            .collect();
        for addr in stale {
            self.dsts
                .remove(&addr)
                .context("removing from DECAP_DSTS")?;
        }
        Ok(())
    }

    /// The settings the maps hold.
    pub fn settings(&self) -> Result<Settings> {
        let config = self.config.get(&0, 0).context("reading DECAP_CONFIG")?;
        let mut dsts = Vec::new();
        if config.only_listed != 0 {
            for k in self.dsts.keys() {
                dsts.push(convert::addr_ip(&k.context("reading DECAP_DSTS")?));
            }
            dsts.sort();
        }
        Ok(Settings {
            gue_port: u16::from_be(config.gue_port),
            dsts,
        })
    }

    /// Packets per reason, summed over CPUs.
    pub fn counts(&self) -> Result<Vec<(DecapReason, u64)>> {
        DecapReason::ALL
            .iter()
            .map(|&r| {
                let per_cpu = self
                    .stats
                    .get(&(r as u32), 0)
                    .context("reading DECAP_STATS")?;
                Ok((r, per_cpu.iter().sum()))
            })
            .collect()
    }
}

/// What `decap attach` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Attached {
    New,
    /// The interface was attached already; only the settings were written.
    Already,
}

/// Attaches the decapsulation program to `iface` (or finds it attached), and writes
/// `settings`, which hold for every attached interface. `dir` is the decapsulation pin
/// directory ([`pin_dir`]).
pub fn attach(dir: &Path, iface: &str, mode: Mode, settings: &Settings) -> Result<Attached> {
    link::ifindex(iface)?;
    pins::ensure_bpffs(dir)?;
    lock::private_dir(dir)?;
    let link_path = pins::link_pin(dir, iface);
    if link_path.exists() {
        PinnedLink::from_pin(&link_path).with_context(|| {
            format!(
                "{} exists but is not a usable link; `lb-ctl decap detach {iface}` removes it",
                link_path.display()
            )
        })?;
        DecapMaps::from_pins(dir)?.write(settings)?;
        return Ok(Attached::Already);
    }
    let first = !dir.join(names::PROGRAM).exists();
    let result = attach_new(dir, iface, mode, settings);
    if result.is_err() && first {
        // Leave nothing behind from an attach that did not happen.
        let _ = remove_pins(dir);
    }
    result.map(|()| Attached::New)
}

fn attach_new(dir: &Path, iface: &str, mode: Mode, settings: &Settings) -> Result<()> {
    let mut ebpf = loader::load_decap(Some(dir))?;
    DecapMaps::from_ebpf(&mut ebpf)?.write(settings)?;
    let prog = loader::program(&mut ebpf, names::PROGRAM)?;
    pins::attach_and_pin(
        prog,
        dir,
        names::PROGRAM,
        iface,
        mode,
        " the decapsulation program",
        "lb-ctl decap attach",
    )
}

/// Detaches the decapsulation program from `iface`; with no interface left, removes its
/// pins. Returns whether none is left.
pub fn detach(dir: &Path, iface: &str) -> Result<bool> {
    let link_path = pins::link_pin(dir, iface);
    if !link_path.exists() {
        let attached = pins::attached_interfaces(dir)?;
        let hint = if attached.is_empty() {
            "decapsulation is attached nowhere".to_string()
        } else {
            format!("attached: {}", attached.join(", "))
        };
        bail!("{iface} is not attached under {} ({hint})", dir.display());
    }
    let link = PinnedLink::from_pin(&link_path)
        .with_context(|| format!("opening {}", link_path.display()))?;
    // Unpinning and dropping the last reference detaches the program from the interface.
    drop(link.unpin().context("unpinning the link")?);
    if pins::attached_interfaces(dir)?.is_empty() {
        remove_pins(dir)?;
        return Ok(true);
    }
    Ok(false)
}

/// What `lb-ctl decap` shows.
pub struct Status {
    pub ifaces: Vec<String>,
    pub settings: Settings,
    pub counts: Vec<(DecapReason, u64)>,
}

/// The attached interfaces, settings and counters, or `None` when nothing is attached.
pub fn status(dir: &Path) -> Result<Option<Status>> {
    let ifaces = pins::attached_interfaces(dir)?;
    if ifaces.is_empty() && !dir.join(names::CONFIG).exists() {
        return Ok(None);
    }
    let maps = DecapMaps::from_pins(dir)?;
    Ok(Some(Status {
        ifaces,
        settings: maps.settings()?,
        counts: maps.counts()?,
    }))
}

/// Removes the program and map pins under `dir`, `dir` itself, and its parent when that is
/// then empty (a real server that is no director has nothing else there).
fn remove_pins(dir: &Path) -> Result<()> {
    for name in names::MAPS.iter().chain([&names::PROGRAM]) {
        match fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing pin {name}")),
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
    }
    if let Some(parent) = dir.parent() {
        // Not empty: a director's pins live there too.
        let _ = fs::remove_dir(parent);
    }
    Ok(())
}
