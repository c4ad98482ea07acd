//! systemd's readiness protocol (`Type=notify`, sd_notify(3)): `READY=1` after the first
//! apply, `RELOADING=1` and `READY=1` around a SIGHUP reload, `STOPPING=1` at a stop signal,
//! each a datagram to the unix socket named by `NOTIFY_SOCKET` (a path, or `@name` for the
//! abstract namespace). Without the variable every call does nothing.
//!
//! [`init`] opens and connects the socket before `--netns` is entered: an abstract socket
//! name belongs to the network namespace, so it is resolved in the one systemd started us in.

use std::{
    os::unix::net::{SocketAddr, UnixDatagram},
    sync::OnceLock,
};

use anyhow::{Context as _, Result};
use tracing::warn;

static SOCKET: OnceLock<UnixDatagram> = OnceLock::new();

/// Connects to `$NOTIFY_SOCKET` if it is set; an error names the variable's value.
pub fn init() -> Result<()> {
    let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let shown = name.to_string_lossy().into_owned();
    let socket = connect(&name).with_context(|| {
        format!("connecting to NOTIFY_SOCKET={shown} (systemd's readiness socket); unset it when not started by systemd")
    })?;
    let _ = SOCKET.set(socket);
    Ok(())
}

fn connect(name: &std::ffi::OsStr) -> Result<UnixDatagram> {
    use std::os::{linux::net::SocketAddrExt as _, unix::ffi::OsStrExt as _};
    let bytes = name.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None => SocketAddr::from_pathname(name)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.connect_addr(&addr)?;
    Ok(socket)
}

/// Sends `state` (`READY=1`, ...) when [`init`] found a socket; a failure is logged.
pub fn send(state: &str) {
    if let Some(socket) = SOCKET.get()
        && let Err(e) = socket.send(state.as_bytes())
    {
        warn!(state, error = %e, "could not notify systemd");
    }
}
