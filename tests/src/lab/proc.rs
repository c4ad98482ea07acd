//! Background processes that are killed when their guard is dropped.

use std::{
    io,
    os::unix::process::CommandExt as _,
    process::{Child, Command, ExitStatus},
    sync::{Mutex, OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// A background process (usually started inside a lab namespace by [`super::Host::spawn`]).
/// Dropping it kills it (SIGKILL) and reaps it. A lab's teardown also kills every process
/// still inside its namespaces, so one that outlives its guard does not outlive the lab, and
/// none outlives this process ([`spawn_child`]).
#[derive(Debug)]
pub struct Proc {
    child: Child,
    what: String,
    reaped: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` and guards it; `what` names it in error messages.
    /// It gets SIGKILL if this process dies (see [`spawn_child`]).
    pub fn spawn(cmd: Command, what: impl Into<String>) -> Result<Proc> {
        let what = what.into();
        let child = spawn_child(cmd).with_context(|| format!("starting {what}"))?;
        Ok(Proc {
            child,
            what,
            reaped: None,
        })
    }

    pub(crate) fn from_child(child: Child, what: String) -> Proc {
        Proc {
            child,
            what,
            reaped: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What this process is (for messages).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The underlying child, e.g. to take its piped stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Its exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.reaped {
            return Ok(Some(status));
        }
        let status = self
            .child
            .try_wait()
            .with_context(|| format!("waiting for {}", self.what))?;
        self.reaped = status;
        Ok(status)
    }

    /// Waits at most `timeout` for it to exit by itself; `None` if it still runs then.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends it `signal` (e.g. `libc::SIGINT`, to let tcpdump flush) unless it has exited.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: plain kill(2) on our own, not yet reaped child.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("signalling {}", self.what));
        }
        Ok(())
    }

    /// Asks it to stop with SIGTERM, waits up to `grace`, then kills it; returns its status.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        if let Some(status) = self.wait_timeout(grace)? {
            return Ok(status);
        }
        self.kill()
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .with_context(|| format!("reaping {}", self.what))?;
        self.reaped = Some(status);
        Ok(status)
    }
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that the kernel kills it (SIGKILL) when this process dies, however it dies
/// (a crash, SIGKILL, or a signal that tears the labs down while a test is still starting
/// processes). `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, so every
/// child is forked by one thread that lives as long as the process.
pub fn spawn_child(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        thread::Builder::new()
            .name("lab-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_tied(&mut cmd));
                }
            })
            .expect("starting the lab's spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("the lab's spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the lab's spawner thread is gone"))?
}

fn spawn_tied(cmd: &mut Command) -> io::Result<Child> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only makes async-signal-safe calls (prctl, getppid, raise).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl.
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
