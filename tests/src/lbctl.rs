//! Driving the real `lb-ctl` binary against a lab's director, for end-to-end tests.
//!
//! [`LbCtl`] runs `target/<profile>/lb-ctl` (build it with `cargo build -p lb-ctl`) with
//! `--netns <director's namespace> --pin-dir /sys/fs/bpf/<lab prefix>` (the same directory as
//! [`pin_dir_for`] gives; a second director gets `/sys/fs/bpf/<lab prefix>-director-2`), and
//! writes the service files it applies into `$TMPDIR/<lab prefix>-<host>-lbctl/`. Every command
//! has a deadline ([`COMMAND_TIMEOUT`]).
//!
//! Dropping an [`LbCtl`] (also while a failed test unwinds) detaches every interface it
//! attached, then removes its pin directory and its file directory, whatever is left in them.
//! Drop it before the [`Lab`] (declare it after the lab, or put it first in a struct), so the
//! director's namespace still exists when `lb-ctl detach` runs; if it does not, the pins are
//! removed all the same. What crashed runs left behind (pin and file directories of
//! `lbl-<pid>-...` whose pid is dead) is swept by [`Lab::build`] (`lab::sweep_leftovers`).
//!
//! [`LbCtl::out`] and [`lb_ctl`] return an [`Out`] for tests that assert on exactly what a
//! command printed and how it ended ([`Out::ok`], [`Out::fails`]).
//!
//! ```no_run
//! use lb_tests::{lab::{Lab, LabSpec}, lbctl::LbCtl};
//! let lab = Lab::build(&LabSpec::default())?;
//! let ctl = LbCtl::new(&lab, lab.director(0))?;
//! ctl.attach("eth0")?;
//! ctl.apply("services: []\n")?;
//! println!("{}", ctl.list()?);
//! # anyhow::Ok(())
//! ```

use std::{
    env, fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Output, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::lab::{BPFFS, Host, Lab, spawn_child};

/// How long one `lb-ctl` command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds the `lb-ctl` binary: `$LB_CTL` if set; else `lb-ctl` next to the running executable
/// or in its parent directory (a test runs from `target/<profile>/deps/`); else
/// `<workspace>/target/debug/lb-ctl`.
pub fn find_lb_ctl() -> Result<PathBuf> {
    const HOW: &str = "run `cargo build -p lb-ctl` first";
    if let Some(path) = env::var_os("LB_CTL") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("LB_CTL={} is not a file; {HOW}", path.display());
        }
        return Ok(path);
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).take(2).map(|d| d.join("lb-ctl")));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/lb-ctl"));
    let found = candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "the lb-ctl binary was not found (looked at {}); {HOW}",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    warn_if_stale(&found);
    Ok(found)
}

/// Warns when a source file of lb-ctl, its XDP program or their shared types is newer than
/// the binary (cargo does not rebuild the binary for these tests).
fn warn_if_stale(bin: &Path) {
    let Ok(built) = fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stack: Vec<PathBuf> = ["lb-ctl/src", "lb-ebpf/src", "lb-common/src"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) if m.modified().is_ok_and(|t| t > built) => {
                    eprintln!(
                        "warning: {} is newer than {}: run `cargo build -p lb-ctl` to test the \
                         current code",
                        path.display(),
                        bin.display()
                    );
                    return;
                }
                _ => {}
            }
        }
    }
}

/// The pin directory [`LbCtl`] uses for `director` of `lab`: `/sys/fs/bpf/<prefix>` for
/// director-1, `/sys/fs/bpf/<prefix>-<name>` for another.
pub fn pin_dir_for(lab: &Lab, director: &Host) -> PathBuf {
    if director.name == "director-1" {
        Path::new(BPFFS).join(lab.prefix())
    } else {
        Path::new(BPFFS).join(format!("{}-{}", lab.prefix(), director.name))
    }
}

/// `lb-ctl` bound to one director of a lab: its namespace, its pin directory, a directory
/// for service files. Dropping it detaches and removes everything (module doc).
#[derive(Debug)]
pub struct LbCtl {
    bin: PathBuf,
    netns: String,
    host: String,
    pin_dir: PathBuf,
    files: PathBuf,
    attached: Mutex<Vec<String>>,
    next_file: AtomicU32,
}

impl LbCtl {
    /// Prepares to drive `director` of `lab` (nothing is attached yet). Fails when lb-ctl is
    /// not built or when not root.
    pub fn new(lab: &Lab, director: &Host) -> Result<LbCtl> {
        require_root()?;
        let bin = find_lb_ctl()?;
        let files = env::temp_dir().join(format!("{}-{}-lbctl", lab.prefix(), director.name));
        fs::create_dir_all(&files).with_context(|| format!("creating {}", files.display()))?;
        Ok(LbCtl {
            bin,
            netns: director.netns.clone(),
            host: director.name.clone(),
            pin_dir: pin_dir_for(lab, director),
            files,
            attached: Mutex::new(Vec::new()),
            next_file: AtomicU32::new(0),
        })
    }

    /// The `lb-ctl` binary used.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The directory of the service files it writes.
    pub fn files_dir(&self) -> &Path {
        &self.files
    }

    /// The `--pin-dir` given to every command.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Runs `lb-ctl --netns NS --pin-dir DIR args...` and returns its output whatever its
    /// exit status; fails if it cannot be started or runs longer than [`COMMAND_TIMEOUT`].
    /// The interface of an `attach IFACE ...` is remembered before it runs (a half-done
    /// attach is cleaned up too), and forgotten after a `detach IFACE` that succeeded.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let attached = || self.attached.lock().unwrap_or_else(|e| e.into_inner());
        if let ["attach", iface, ..] = args {
            let mut attached = attached();
            if !attached.iter().any(|i| i == iface) {
                attached.push((*iface).to_owned());
            }
        }
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--netns")
            .arg(&self.netns)
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .args(args);
        let out = run_with_deadline(cmd, COMMAND_TIMEOUT)
            .with_context(|| format!("running lb-ctl {args:?} for {}", self.host))?;
        if let ["detach", iface, ..] = args
            && out.status.success()
        {
            attached().retain(|i| i != iface);
        }
        Ok(out)
    }

    /// Runs the commands at the same time, one thread each, and returns their outputs in
    /// order (see [`LbCtl::run`]).
    pub fn run_at_once(&self, commands: &[&[&str]]) -> Result<Vec<Output>> {
        thread::scope(|s| {
            let handles: Vec<_> = commands
                .iter()
                .map(|args| s.spawn(|| self.run(args)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("an lb-ctl thread panicked")))
                })
                .collect()
        })
    }

    /// [`LbCtl::run`] as an [`Out`]; panics if it cannot be run or does not end in time.
    pub fn out(&self, args: &[&str]) -> Out {
        Out::of(
            format!("lb-ctl {} (in {})", args.join(" "), self.host),
            self.run(args),
        )
    }

    /// Like [`LbCtl::run`], but fails unless it exits 0; returns its stdout.
    pub fn run_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!(
                "lb-ctl {args:?} for {} failed ({}):\nstdout: {}\nstderr: {}",
                self.host,
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `lb-ctl attach IFACE` (native mode); remembers it for the cleanup.
    pub fn attach(&self, iface: &str) -> Result<String> {
        self.attach_mode(iface, "native")
    }

    /// `lb-ctl attach IFACE --mode MODE`.
    pub fn attach_mode(&self, iface: &str, mode: &str) -> Result<String> {
        self.attach_with(iface, mode, &[])
    }

    /// `lb-ctl attach IFACE --mode MODE EXTRA...` (e.g. `--flows 4096`).
    pub fn attach_with(&self, iface: &str, mode: &str, extra: &[&str]) -> Result<String> {
        let mut args = vec!["attach", iface, "--mode", mode];
        args.extend_from_slice(extra);
        self.run_ok(&args)
    }

    /// `lb-ctl detach IFACE`.
    pub fn detach(&self, iface: &str) -> Result<String> {
        self.run_ok(&["detach", iface])
    }

    /// Writes `yaml` to a new file and runs `lb-ctl apply -f FILE`; returns its stdout.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        let file = self.write_file(yaml)?;
        self.run_ok(&["apply", "-f", path_str(&file)?])
    }

    /// Writes `yaml` to a new file in this director's file directory and returns its path.
    pub fn write_file(&self, yaml: &str) -> Result<PathBuf> {
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        let file = self.files.join(format!("services-{n}.yaml"));
        fs::write(&file, yaml).with_context(|| format!("writing {}", file.display()))?;
        Ok(file)
    }

    /// `lb-ctl stats --json` (the raw text).
    pub fn stats_json(&self) -> Result<String> {
        self.run_ok(&["stats", "--json"])
    }

    /// `lb-ctl list`.
    pub fn list(&self) -> Result<String> {
        self.run_ok(&["list"])
    }

    /// Detaches every interface this attached, then removes the pin directory and the file
    /// directory (whatever is left in them). Safe to call more than once; [`Drop`] calls it.
    pub fn cleanup(&self) -> Result<()> {
        let mut errors = Vec::new();
        let ifaces: Vec<String> = self
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for iface in ifaces {
            // Fails when the namespace is already gone (its veth, and so the attachment,
            // went with it); the pins are removed below either way.
            if let Err(e) = self.detach(&iface) {
                errors.push(format!("{e:#}"));
            }
        }
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for dir in [&self.pin_dir, &self.files] {
            match fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("removing {}: {e}", dir.display())),
            }
        }
        if self.pin_dir.exists() {
            bail!(
                "the pin directory {} is still there after cleanup: {}",
                self.pin_dir.display(),
                errors.join("; ")
            );
        }
        if !errors.is_empty() {
            // Detach errors with the pins gone are not fatal: report them for the log only.
            eprintln!("lb-ctl cleanup for {}: {}", self.host, errors.join("; "));
        }
        Ok(())
    }
}

impl Drop for LbCtl {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("lb-ctl cleanup: {e:#}");
        }
    }
}

/// Fails unless this runs as root, which lb-ctl needs for BPF, XDP and namespaces.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("lb-ctl needs root (BPF, XDP, namespaces): run the tests as root");
    }
    Ok(())
}

/// `lb-ctl ARGS` with no lab: no `--netns`, no `--pin-dir`, `LB_PIN_DIR` unset (for
/// `--help` and the errors of bad arguments). Panics if lb-ctl is not built or does not end
/// in time.
pub fn lb_ctl(args: &[&str]) -> Out {
    let bin = find_lb_ctl().unwrap_or_else(|e| panic!("{e:#}"));
    let mut cmd = Command::new(bin);
    cmd.env_remove("LB_PIN_DIR").args(args);
    Out::of(
        format!("lb-ctl {}", args.join(" ")),
        run_with_deadline(cmd, COMMAND_TIMEOUT),
    )
}

/// What a finished command printed, and how it ended.
#[derive(Debug)]
pub struct Out {
    /// The command, for messages.
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// The output of `what`; panics with the error if it could not be run to its end.
    pub(crate) fn of(what: String, out: Result<Output>) -> Out {
        let out = out.unwrap_or_else(|e| panic!("`{what}`: {e:#}"));
        Out {
            what,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts that the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Out {
        assert!(self.status.success(), "expected success:\n{self}");
        self
    }

    /// Asserts that the command failed the way `lb-ctl` reports errors: exit status 1, a
    /// message `lb-ctl: ...` on stderr and nothing on stdout.
    #[track_caller]
    pub fn fails(self) -> Out {
        assert_eq!(
            self.status.code(),
            Some(1),
            "expected exit status 1:\n{self}"
        );
        assert!(
            self.stderr.starts_with("lb-ctl: "),
            "expected an `lb-ctl: ...` error:\n{self}"
        );
        assert_eq!(self.stdout, "", "expected nothing on stdout:\n{self}");
        self
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` ended with {}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// Runs `cmd` (stdin null, stdout and stderr captured), killing it after `timeout`.
pub fn run_with_deadline(mut cmd: Command, timeout: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_child(cmd).context("starting it")?;
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .map(|pipe| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("it did not finish within {timeout:?} (killed)");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let mut outs = readers.into_iter().map(|r| r.join().unwrap_or_default());
    Ok(Output {
        status,
        stdout: outs.next().unwrap_or_default(),
        stderr: outs.next().unwrap_or_default(),
    })
}
