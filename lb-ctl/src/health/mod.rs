//! Health checks for `lb-ctl run`: the checkers (`http_get`, `https_get`, `tcp`, `exec`, and
//! `tcp` with `via_vip`: a handshake with the VIP at the backend's MAC, [`via_vip`]) and
//! the state machine ([`state`]) that turns their outcomes into up/down. Health reports which
//! backends it holds down and why ([`state::Held`]); it never touches the plan or the maps:
//! the daemon decides what the report means for them.

pub mod exec;
pub mod http;
pub mod latency;
pub mod probes;
pub mod segment;
pub mod state;
pub mod via_vip;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use crate::config::{CheckConfig, CheckKind};

pub use crate::exec::show;
pub use state::{Outcome, State, Tracker, Transition};

/// What one check looks at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub service: String,
    pub address: IpAddr,
    /// The port checked: the check's `port`, else the backend's.
    pub port: u16,
    /// The backend's own port (for exec's `LB_BACKEND_PORT`).
    pub backend_port: u16,
    /// The service's VIP, for `via_vip` checks only (which go to VIP:port at the backend's
    /// MAC); `None` for every other check, so that services share their probes.
    pub vip: Option<IpAddr>,
}

impl Target {
    /// `10.0.0.1:80` or `[fd00::1]:80`: the address and port checked.
    pub fn shown(&self) -> String {
        SocketAddr::new(self.address, self.port).to_string()
    }
}

/// Runs one check of `target`, bounded by the check's timeout.
pub async fn run_check(check: &CheckConfig, target: &Target) -> Outcome {
    let limit = check.timeout;
    if let (CheckKind::Tcp, true, Some(vip)) = (check.kind, check.via_vip, target.vip) {
        // It keeps its own deadline, to say what did not answer.
        return via_vip::check(target, vip, limit).await;
    }
    let work = async {
        match check.kind {
            CheckKind::Tcp => tcp(target, limit).await,
            CheckKind::HttpGet | CheckKind::HttpsGet => http::check(check, target).await,
            CheckKind::Exec => exec::check(check, target).await,
        }
    };
    match tokio::time::timeout(limit, work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {}", show(limit))),
    }
}

async fn tcp(target: &Target, limit: Duration) -> Outcome {
    let addr = (target.address, target.port);
    match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(format!("tcp {} connected", target.shown())),
        Ok(Err(e)) => Err(format!("tcp {}: {e}", target.shown())),
        Err(_) => Err(format!(
            "tcp {}: no connection within {}",
            target.shown(),
            show(limit)
        )),
    }
}
