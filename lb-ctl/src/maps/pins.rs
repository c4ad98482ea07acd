//! `attach` and `detach`: the program, its XDP links and its maps pinned under one bpffs
//! directory, so the data path outlives the command and later commands find it.
//!
//! Layout of the pin directory (default `/sys/fs/bpf/lb`):
//!
//! ```text
//! lb_xdp            the program (the instance of the first attach)
//! link-IFACE        one XDP link per interface; unpinning it detaches
//! SERVICES ...      every map, shared by all attached interfaces
//! ```

use std::{
    ffi::CString,
    fs,
    io::ErrorKind,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use aya::programs::{
    Xdp, XdpMode,
    links::{FdLink, PinnedLink},
};
use lb_common::names;

use crate::{
    maps::Maps,
    maps::loader::{self, Sizes},
    maps::lock,
    net::link,
};

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lb";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const LINK_PREFIX: &str = "link-";

/// How the program runs on the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// In the driver, before any socket buffer exists (what production runs).
    Native,
    /// In the kernel's generic path: works on any interface, slower.
    Generic,
}

impl Mode {
    pub fn xdp(self) -> XdpMode {
        match self {
            Mode::Native => XdpMode::Driver,
            Mode::Generic => XdpMode::Skb,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Generic => "generic",
        }
    }
}

fn statfs_type(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out-pointer.
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
}

/// `dir`, or its nearest ancestor that exists.
fn existing_ancestor(dir: &Path) -> &Path {
    let mut existing = dir;
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    existing
}

/// Whether `dir` (or, while it does not exist, its nearest existing ancestor) is on a bpf
/// filesystem; nothing is mounted.
pub fn on_bpffs(dir: &Path) -> bool {
    statfs_type(existing_ancestor(dir)) == Some(BPF_FS_MAGIC)
}

/// Makes sure `dir` can hold pins: it must be on a bpf filesystem. `/sys/fs/bpf` is mounted
/// when it is not (a fresh machine has it unmounted); any other place must already be bpffs.
pub fn ensure_bpffs(dir: &Path) -> Result<()> {
    let existing = existing_ancestor(dir);
    if on_bpffs(dir) {
        return Ok(());
    }
    let sys = Path::new("/sys/fs/bpf");
    if dir.starts_with(sys) && existing == sys {
        let src = CString::new("bpf")?;
        let target = CString::new("/sys/fs/bpf")?;
        // Root's alone, as systemd mounts it: bpffs's own default (1777) would let any user
        // make directories there.
        let data = CString::new("mode=0700")?;
        // SAFETY: valid C strings.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .context("mounting bpffs at /sys/fs/bpf (`mount -t bpf bpf /sys/fs/bpf`)");
        }
        return Ok(());
    }
    bail!(
        "{} is not on a bpf filesystem, so nothing can be pinned there; mount one \
         (`mount -t bpf bpf DIR`) or choose another --pin-dir",
        dir.display()
    )
}

pub fn link_pin(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("{LINK_PREFIX}{iface}"))
}

/// The interfaces that have a pinned link under `dir`.
pub fn attached_interfaces(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in entries {
        let name = e?.file_name();
        if let Some(iface) = name.to_str().and_then(|n| n.strip_prefix(LINK_PREFIX)) {
            out.push(iface.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// What `attach` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Attached {
    New,
    Already,
}

impl Attached {
    /// What attaching `iface` did, in one line for the operator.
    pub fn describe(&self, iface: &str, mode: Mode, dir: &Path) -> String {
        match self {
            Attached::New => format!(
                "attached to {iface} in {} mode; pinned under {}",
                mode.as_str(),
                dir.display()
            ),
            Attached::Already => format!(
                "{iface} is already attached (pinned under {}); nothing to do \
                 (to change its mode, detach it first)",
                dir.display()
            ),
        }
    }
}

/// Attaches the program to each of `ifaces`, or adopts the attachment already there, tells
/// `say` what it did for each (one line), and opens the maps they share.
pub fn attach_all(
    dir: &Path,
    ifaces: &[String],
    mode: Mode,
    sizes: &Sizes,
    mut say: impl FnMut(&str),
) -> Result<Maps> {
    for iface in ifaces {
        say(&attach(dir, iface, mode, sizes)?.describe(iface, mode, dir));
    }
    open(dir)
}

/// The maps pinned under `dir`, or an error that says nothing is attached there.
pub fn open(dir: &Path) -> Result<Maps> {
    if !dir.join(names::SERVICES).exists() {
        bail!(
            "nothing is attached: no maps are pinned under {} (run `lb-ctl attach IFACE` first, \
             or give the --pin-dir it used)",
            dir.display()
        );
    }
    Maps::from_pins(dir)
}

/// Loads the program (sharing the maps pinned under `dir`, or creating them), attaches it to
/// `iface` and pins what it made.
pub fn attach(dir: &Path, iface: &str, mode: Mode, sizes: &Sizes) -> Result<Attached> {
    let ifindex = link::ifindex(iface)?;
    super::check_ifindex(iface, ifindex)?;
    let mac = link::mac(ifindex)?;
    ensure_bpffs(dir)?;
    // Pins are root's: made 0700, and an existing directory anyone else could write is refused
    // (also when the interface is attached already: its pins are not adopted then).
    lock::private_dir(dir)?;
    let link_path = link_pin(dir, iface);
    if link_path.exists() {
        PinnedLink::from_pin(&link_path).with_context(|| {
            format!(
                "{} exists but is not a usable link; `lb-ctl detach {iface}` removes it",
                link_path.display()
            )
        })?;
        return Ok(Attached::Already);
    }
    let first = !dir.join(names::SERVICES).exists();
    let result = attach_new(dir, iface, ifindex, mac, mode, sizes);
    if result.is_err() {
        // Leave nothing behind from an attach that did not happen.
        if first {
            let _ = remove_pins(dir);
        } else if let Ok(mut maps) = Maps::from_pins(dir) {
            let _ = maps.forget_iface(ifindex);
        }
    }
    result.map(|()| Attached::New)
}

fn attach_new(
    dir: &Path,
    iface: &str,
    ifindex: u32,
    mac: [u8; 6],
    mode: Mode,
    sizes: &Sizes,
) -> Result<()> {
    let mut ebpf = loader::load(sizes, Some(dir))?;
    {
        let mut maps = Maps::from_ebpf(&mut ebpf)?;
        maps.register_iface(iface, ifindex, mac)?;
    }
    let prog = loader::program(&mut ebpf, names::PROGRAM)?;
    attach_and_pin(prog, dir, names::PROGRAM, iface, mode, "", "lb-ctl attach")
}

/// Pins `prog` at `dir/name` (once), attaches it to `iface` in `mode` and pins the link
/// under `dir`: what keeps it attached after the command exits. `subject` names the program
/// in the error (` the decapsulation program`, or empty for the director's), `command` the
/// command to retry with in generic mode.
pub(crate) fn attach_and_pin(
    prog: &mut Xdp,
    dir: &Path,
    name: &str,
    iface: &str,
    mode: Mode,
    subject: &str,
    command: &str,
) -> Result<()> {
    let prog_pin = dir.join(name);
    if !prog_pin.exists() {
        prog.pin(&prog_pin)
            .with_context(|| format!("pinning the program at {}", prog_pin.display()))?;
    }
    let id = prog.attach(iface, mode.xdp()).map_err(|e| {
        let hint = match mode {
            Mode::Native => format!(
                " (the driver of {iface} may not run XDP natively: try `{command} {iface} \
                 --mode generic`)"
            ),
            Mode::Generic => String::new(),
        };
        anyhow::Error::new(e).context(format!(
            "attaching{subject} to {iface} in {} mode failed{hint}",
            mode.as_str()
        ))
    })?;
    let link = prog.take_link(id).context("taking the XDP link")?;
    let fd_link = FdLink::try_from(link).context(
        "the kernel attached the program without a BPF link (too old for pinning links)",
    )?;
    let link_path = link_pin(dir, iface);
    fd_link
        .pin(&link_path)
        .with_context(|| format!("pinning the link at {}", link_path.display()))?;
    Ok(())
}

/// What `detach` did.
#[derive(Debug, PartialEq, Eq)]
pub struct Detached {
    /// No interface is left: the program and the maps were unpinned too.
    pub last: bool,
}

/// Detaches the program from `iface`; when no interface is left, removes every pin.
pub fn detach(dir: &Path, iface: &str) -> Result<Detached> {
    let link_path = link_pin(dir, iface);
    if !link_path.exists() {
        let attached = attached_interfaces(dir)?;
        let hint = if attached.is_empty() {
            "nothing is attached".to_string()
        } else {
            format!("attached: {}", attached.join(", "))
        };
        bail!("{iface} is not attached under {} ({hint})", dir.display());
    }
    // Forget the interface in the shared maps while its index still means it.
    if let Ok(ifindex) = link::ifindex(iface)
        && let Ok(mut maps) = Maps::from_pins(dir)
    {
        let _ = maps.forget_iface(ifindex);
    }
    let link = PinnedLink::from_pin(&link_path)
        .with_context(|| format!("opening {}", link_path.display()))?;
    // Unpinning and dropping the last reference detaches the program from the interface.
    drop(link.unpin().context("unpinning the link")?);
    if attached_interfaces(dir)?.is_empty() {
        remove_pins(dir)?;
        return Ok(Detached { last: true });
    }
    Ok(Detached { last: false })
}

/// Removes the program and map pins under `dir`, and `dir` itself when it is then empty.
fn remove_pins(dir: &Path) -> Result<()> {
    for name in names::MAPS.iter().chain([&names::PROGRAM]) {
        match fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing pin {name}")),
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        // The real servers' decapsulation program is pinned there too (`lb-ctl decap`).
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::DirectoryNotEmpty) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}
