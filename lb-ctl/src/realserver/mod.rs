//! `lb-ctl realserver up|down|check`: a real server's side of LVS-DR (and of tunnel mode),
//! what guides have people do by hand: the VIPs on `lo`, `arp_ignore=1` and `arp_announce=2`
//! on `all` and the interfaces toward the director, and for a tunnel loose `rp_filter` and
//! `lb-ctl decap` on those interfaces.
//!
//! [`plan`] decides (pure), [`persist`] writes the boot-time files' text (pure), and this
//! module reads the system and carries the steps out: sysctls through `/proc/sys` (of the
//! calling thread's network namespace), addresses over rtnetlink (`net::addr`),
//! decapsulation through `maps::decap`. `up` records each change with the value it found in
//! the state file ([`STATE_FILE`] below `--root`) before making it, so `down` undoes exactly
//! what `up` changed.

pub mod persist;
pub mod plan;

use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    maps::{decap, lock, pins::Mode},
    net::{addr, link, links},
};
use plan::{Change, Line, Observed, Request, State, Step, Want};

/// Where `up` records what it changed, below `--root`.
pub const STATE_FILE: &str = "run/lb-ctl/realserver.json";

/// Where the command works.
#[derive(Clone, Debug)]
pub struct Options {
    /// The root below which the state file and the `--persist` files live (`/`; tests use
    /// another directory).
    pub root: PathBuf,
    /// The global `--pin-dir` (decapsulation pins under `PIN_DIR/decap`).
    pub pin_dir: PathBuf,
    /// How long to wait for another writer of the decapsulation pins.
    pub wait: Duration,
}

impl Options {
    pub fn state_file(&self) -> PathBuf {
        self.root.join(STATE_FILE)
    }
}

/// The interfaces given, or every non-loopback interface that is up.
pub fn ifaces_or_default(given: &[String]) -> Result<Vec<String>> {
    if !given.is_empty() {
        for i in given {
            link::ifindex(i).with_context(|| format!("--interface {i}"))?;
        }
        return Ok(given.to_vec());
    }
    let found: Vec<String> = links::all()?
        .into_iter()
        .filter(|l| l.up && !l.loopback)
        .map(|l| l.name)
        .collect();
    if found.is_empty() {
        bail!("no interface but lo is up here; name the one toward the director with --interface");
    }
    Ok(found)
}

fn read_sysctl(key: &str) -> Result<Option<String>> {
    let path = Path::new("/proc/sys").join(key);
    match fs::read_to_string(&path) {
        Ok(v) => Ok(Some(v.trim().to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// What the system holds for these sysctls, `lo`'s addresses, and decapsulation if `decap`.
fn observe(keys: &[&str], decap: bool, opts: &Options) -> Result<Observed> {
    let mut o = Observed::default();
    for k in keys {
        o.sysctls.insert(k.to_string(), read_sysctl(k)?);
    }
    o.lo = addr::list_all(link::ifindex(plan::LO)?)?;
    if decap {
        o.decap =
            decap::status(&decap::pin_dir(&opts.pin_dir))?.map(|s| (s.ifaces, s.settings.gue_port));
    }
    Ok(o)
}

fn observe_wants(wants: &[Want], opts: &Options) -> Result<Observed> {
    let keys: Vec<&str> = wants
        .iter()
        .filter_map(|w| match w {
            Want::Sysctl { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    let decap = wants.iter().any(|w| matches!(w, Want::Decap { .. }));
    observe(&keys, decap, opts)
}

fn run_step(step: &Step, opts: &Options) -> Result<()> {
    let what = || format!("`{step}`");
    let dir = decap::pin_dir(&opts.pin_dir);
    match step {
        Step::Sysctl { key, value } => {
            let path = Path::new("/proc/sys").join(key);
            fs::write(&path, value).with_context(|| format!("writing {}", path.display()))
        }
        Step::AddAddr { addr: a, prefix } => {
            addr::add(link::ifindex(plan::LO)?, *a, *prefix).map(|_| ())
        }
        Step::DelAddr { addr: a, prefix } => {
            addr::del(link::ifindex(plan::LO)?, *a, *prefix).map(|_| ())
        }
        Step::Attach { iface, gue_port } => {
            let _lock = decap_lock(&dir, opts.wait)?;
            let settings = decap::Settings {
                gue_port: *gue_port,
                dsts: Vec::new(),
            };
            decap::attach(&dir, iface, Mode::Native, &settings).map(|_| ())
        }
        Step::Detach { iface } => {
            let _lock = decap_lock(&dir, opts.wait)?;
            decap::detach(&dir, iface).map(|_| ())
        }
    }
    .with_context(what)
}

fn decap_lock(dir: &Path, wait: Duration) -> Result<lock::WriteLock> {
    let me = lock::Holder::me("lb-ctl realserver", false);
    lock::acquire(dir, &me, wait, |h| {
        eprintln!(
            "waiting for {}: pid {} is writing it (`{}`)",
            dir.display(),
            h.pid,
            h.command
        )
    })
}

/// The state file, or an empty state when there is none.
pub fn read_state(opts: &Options) -> Result<State> {
    let path = opts.state_file();
    match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a state file of `lb-ctl realserver up`; move it away to start afresh",
                path.display()
            )
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_state(opts: &Options, state: &State) -> Result<()> {
    let path = opts.state_file();
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(state).context("encoding the state")?;
    let tmp = path.with_extension("json.new");
    fs::write(&tmp, text + "\n").with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming {} into place", tmp.display()))
}

/// What `up` did, for people.
pub struct UpReport {
    pub changes: Vec<Change>,
    pub written: Vec<PathBuf>,
}

/// `lb-ctl realserver up`: records, then makes, every change `req` needs; with `persist`,
/// writes the boot-time files.
pub fn up(req: &Request, persist: bool, opts: &Options) -> Result<UpReport> {
    let wants = plan::wanted(req);
    let observed = observe_wants(&wants, opts)?;
    let changes = plan::plan_up(&wants, &observed).map_err(anyhow::Error::msg)?;
    let mut state = read_state(opts)?;
    let kept = state.changes.len();
    state.changes.extend(changes.iter().cloned());
    // Recorded before anything changes: a failure half-way leaves a state `down` can undo.
    write_state(opts, &state)?;
    for (i, c) in changes.iter().enumerate() {
        if let Err(e) = run_step(&c.step(), opts) {
            state.changes.truncate(kept + i);
            write_state(opts, &state)?;
            return Err(e.context(format!(
                "{} change(s) made before this one; `lb-ctl realserver down` undoes them",
                i
            )));
        }
    }
    let mut written = Vec::new();
    if persist {
        let ifupdown = opts.root.join(persist::IFUPDOWN_MAIN).exists();
        for (path, text) in persist::files(&opts.root, &wants, ifupdown) {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            written.push(path);
        }
    }
    Ok(UpReport { changes, written })
}

/// What `down` did, for people.
pub struct DownReport {
    pub steps: Vec<Step>,
    /// Changes left alone, each with why.
    pub kept: Vec<String>,
    pub removed: Vec<PathBuf>,
}

/// `lb-ctl realserver down`: undoes what the state file records, then removes it; with
/// `persist`, removes the boot-time files `up --persist` wrote.
pub fn down(persist: bool, opts: &Options) -> Result<DownReport> {
    let state = read_state(opts)?;
    let keys: Vec<&str> = state
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Sysctl { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    let decap = state
        .changes
        .iter()
        .any(|c| matches!(c, Change::Decap { .. }));
    let observed = observe(&keys, decap, opts)?;
    let (steps, kept) = plan::plan_down(&state.changes, &observed);
    for s in &steps {
        run_step(s, opts)?;
    }
    match fs::remove_file(opts.state_file()) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing {}", opts.state_file().display()));
        }
    }
    let mut removed = Vec::new();
    if persist {
        for path in persist::all_paths(&opts.root) {
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            if !text.starts_with(persist::HEADER) {
                eprintln!(
                    "warning: {} was not written by `lb-ctl realserver up --persist`; left as it is",
                    path.display()
                );
                continue;
            }
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            removed.push(path);
        }
    }
    Ok(DownReport {
        steps,
        kept,
        removed,
    })
}

/// `lb-ctl realserver check`: every setting `req` needs, with where it stands.
pub fn check(req: &Request, opts: &Options) -> Result<Vec<Line>> {
    let wants = plan::wanted(req);
    let observed = observe_wants(&wants, opts)?;
    Ok(plan::check(&wants, &observed))
}

/// What `up` printed: each change and each file.
pub fn render_up(r: &UpReport, state_file: &Path) -> String {
    let mut out = String::new();
    if r.changes.is_empty() {
        out += "nothing to change: every setting was already in place\n";
    } else {
        for c in &r.changes {
            out += &match c {
                Change::Sysctl { before, .. } => format!("{} (was {before})\n", c.step()),
                _ => format!("{}\n", c.step()),
            };
        }
        out += &format!(
            "{} change(s), recorded in {}; `lb-ctl realserver down` undoes them\n",
            r.changes.len(),
            state_file.display()
        );
    }
    for p in &r.written {
        out += &format!("wrote {}\n", p.display());
    }
    out
}

/// What `down` printed.
pub fn render_down(r: &DownReport) -> String {
    let mut out = String::new();
    if r.steps.is_empty() && r.kept.is_empty() {
        out += "nothing to undo: no change of `lb-ctl realserver up` is recorded\n";
    }
    for s in &r.steps {
        out += &format!("{s}\n");
    }
    for k in &r.kept {
        out += &format!("kept: {k}\n");
    }
    for p in &r.removed {
        out += &format!("removed {}\n", p.display());
    }
    out
}
