//! Loading the embedded XDP object.
//!
//! The object is built from `lb-ebpf` by this crate's build script and embedded here, so the
//! `lb-ctl` binary is all a user installs.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::MapInfo,
    programs::{Xdp, XdpMode},
};
use lb_common::{HALF_OPEN_WAYS, decap, half_open_shift, limits, names, refresh_ticks};

/// The XDP object, as built for `bpfel-unknown-none`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// The measuring programs of `cargo xtask bench` (a MAC-swapping XDP_TX baseline, and a
/// program that restores a frame's MACs before tail-calling the program under test).
pub static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-bench"));

/// The real servers' decapsulation program (`lb-ctl decap`), an object of its own: a real
/// server loads none of the director's maps.
pub static DECAP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-decap"));

/// Map sizes chosen when the program is loaded (the others are fixed in `lb_common::limits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Entries of the shared backend lookup table (4 bytes each).
    pub table_entries: u32,
    /// Connection-table entries (LRU).
    pub flows: u32,
    /// Half-open table slots (a power of two).
    pub syns: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            table_entries: limits::TABLE_ENTRIES,
            flows: limits::FLOWS,
            syns: limits::SYNS,
        }
    }
}

fn check_object() -> Result<()> {
    if OBJECT.is_empty() {
        bail!(
            "this lb-ctl was built without its XDP object (LB_EBPF_OBJECT pointed at an empty \
             file); rebuild it with `cargo xtask build`"
        );
    }
    Ok(())
}

/// Loads the object and the director's program into the kernel (the verifier runs here).
/// With `pin_dir`, every map is opened from its pin there, or created and pinned there, so
/// every program instance loaded with the same directory shares the same maps.
pub fn load(sizes: &Sizes, pin_dir: Option<&Path>) -> Result<Ebpf> {
    check_object()?;
    let refresh = refresh_ticks(coarse_tick_ns()?);
    let syn_shift = half_open_shift(sizes.syns).with_context(|| {
        format!(
            "the half-open table's size must be a power of two of at least {HALF_OPEN_WAYS} \
             (--syn-flows {}); try {}",
            sizes.syns,
            sizes
                .syns
                .max(HALF_OPEN_WAYS)
                .checked_next_power_of_two()
                .unwrap_or(1 << 31)
        )
    })?;
    let mut loader = EbpfLoader::new();
    loader
        .override_global(names::REFRESH_TICKS, &refresh, true)
        .override_global(names::SYN_SLOT_SHIFT, &syn_shift, true)
        .map_max_entries(names::TABLE, sizes.table_entries)
        .map_max_entries(names::FLOWS, sizes.flows)
        .map_max_entries(names::SYNS, sizes.syns);
    if let Some(dir) = pin_dir {
        check_pins(dir)?;
        for name in names::MAPS {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(OBJECT).context(
        "loading the XDP object into the kernel (needs root or CAP_BPF + CAP_NET_ADMIN)",
    )?;
    program(&mut ebpf, names::PROGRAM)?
        .load()
        .context("the kernel's verifier rejected the XDP program")?;
    Ok(ebpf)
}

/// Refuses the maps pinned under `dir` when one of them is not what this program's map of
/// that name is (its type, key size or value size): pins made by another version of lb-ctl,
/// which the program would share and misread. The sizes given at the first attach
/// (`--flows`, ...) may differ.
fn check_pins(dir: &Path) -> Result<()> {
    let object = aya_obj::Object::parse(OBJECT).context("parsing the XDP object")?;
    let mut differ = Vec::new();
    for name in names::MAPS {
        let path = dir.join(name);
        let Some(want) = object.maps.get(name) else {
            continue;
        };
        if !path.exists() {
            continue;
        }
        let have = MapInfo::from_pin(&path)
            .with_context(|| format!("reading the pinned map {}", path.display()))?;
        let have_type = have.map_type().map_or(u32::MAX, |t| t as u32);
        let (want_type, want_key, want_value) =
            (want.map_type(), want.key_size(), want.value_size());
        if (have_type, have.key_size(), have.value_size()) != (want_type, want_key, want_value) {
            differ.push(format!(
                "{name} is {} of {}-byte keys and {}-byte values where this version's is {} of \
                 {want_key}-byte keys and {want_value}-byte values",
                map_type_name(have_type),
                have.key_size(),
                have.value_size(),
                map_type_name(want_type),
            ));
        }
    }
    if !differ.is_empty() {
        bail!(
            "the maps pinned under {} were made by another version of lb-ctl: {}. Detach every \
             interface that uses them (`lb-ctl detach IFACE`, which removes the pins; the \
             connections in the tables are forgotten), then attach again",
            dir.display(),
            differ.join("; ")
        );
    }
    Ok(())
}

/// A map type's name for people, with its article, from its `bpf_map_type` number.
fn map_type_name(t: u32) -> String {
    use aya_obj::generated::bpf_map_type as T;
    let name = match t {
        x if x == T::BPF_MAP_TYPE_HASH as u32 => "a hash map",
        x if x == T::BPF_MAP_TYPE_ARRAY as u32 => "an array",
        x if x == T::BPF_MAP_TYPE_PERCPU_ARRAY as u32 => "a per-CPU array",
        x if x == T::BPF_MAP_TYPE_LRU_HASH as u32 => "an LRU hash map",
        x if x == T::BPF_MAP_TYPE_LRU_PERCPU_HASH as u32 => "a per-CPU LRU hash map",
        x if x == T::BPF_MAP_TYPE_PERCPU_HASH as u32 => "a per-CPU hash map",
        _ => return format!("a map of type {t}"),
    };
    name.to_owned()
}

/// The kernel's tick in ns (`1 / HZ`): the resolution of `CLOCK_MONOTONIC_COARSE`, which
/// is what `bpf_jiffies64` counts.
pub fn coarse_tick_ns() -> Result<u64> {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `res` is a valid, writable timespec.
    if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) } != 0 {
        return Err(std::io::Error::last_os_error())
            .context("reading the kernel's tick (clock_getres CLOCK_MONOTONIC_COARSE)");
    }
    Ok(res.tv_sec as u64 * 1_000_000_000 + res.tv_nsec as u64)
}

/// Loads the decapsulation object and its program (the verifier runs here). With `pin_dir`,
/// its maps are opened from their pins there, or created and pinned there.
pub fn load_decap(pin_dir: Option<&Path>) -> Result<Ebpf> {
    if DECAP_OBJECT.is_empty() {
        bail!(
            "this lb-ctl was built without its decapsulation program (LB_EBPF_OBJECT was set); \
             rebuild it with `cargo xtask build`"
        );
    }
    let mut loader = EbpfLoader::new();
    if let Some(dir) = pin_dir {
        for name in decap::names::MAPS {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(DECAP_OBJECT).context(
        "loading the decapsulation object into the kernel (needs root or CAP_BPF + \
         CAP_NET_ADMIN)",
    )?;
    program(&mut ebpf, decap::names::PROGRAM)?
        .load()
        .context("the kernel's verifier rejected the decapsulation program")?;
    Ok(ebpf)
}

/// The XDP program called `name` in a loaded object.
pub fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .with_context(|| format!("the XDP object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

/// A pass-through XDP program attached to one interface; dropping it detaches it.
pub struct PassThrough {
    _ebpf: Ebpf,
}

/// Attaches a program that passes every frame to `iface` inside network namespace `netns`.
///
/// veth drops frames that its peer sent with XDP_TX unless the receiving end runs an XDP
/// program of its own; a lab puts this one on the switch-side end of a director's link.
pub fn attach_pass_through(netns: &str, iface: &str) -> Result<PassThrough> {
    check_object()?;
    let iface = iface.to_owned();
    crate::net::netns::run_in(netns, move || {
        let mut loader = EbpfLoader::new();
        // Only the program is used: keep the maps that come with the object tiny.
        for name in names::MAPS {
            loader.map_max_entries(name, 1);
        }
        let mut ebpf = loader.load(OBJECT).context("loading the XDP object")?;
        let prog = program(&mut ebpf, names::PASS_PROGRAM)?;
        prog.load().context("loading the pass-through program")?;
        prog.attach(&iface, XdpMode::Driver)
            .with_context(|| format!("attaching the pass-through program to {iface}"))?;
        Ok(PassThrough { _ebpf: ebpf })
    })
}
