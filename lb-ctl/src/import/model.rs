//! What an import makes of keepalived.conf: the service file's parts as plain values, in the
//! words the YAML file uses, before they are written out (`emit.rs`).

#[derive(Debug, Default)]
pub struct Model {
    pub services: Vec<Service>,
    pub vrrp: Vec<Vrrp>,
    pub scripts: Vec<Script>,
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone)]
pub struct Service {
    /// Where it came from: `virtual_server` (or the group entry).
    pub from: String,
    pub name: String,
    pub vip: String,
    pub port: u16,
    pub protocol: &'static str,
    pub scheduler: Option<&'static str>,
    /// Persistence timeout ("50s") and netmask.
    pub persistence: Option<(String, Option<String>)>,
    /// `tunnel`, and the tunnel's type and GUE port.
    pub tunnel: Option<(&'static str, Option<u16>)>,
    pub sorry_server: Option<String>,
    pub quorum: Option<u32>,
    pub hysteresis: Option<u32>,
    pub inhibit_on_failure: bool,
    pub notify_up: Option<String>,
    pub notify_down: Option<String>,
    pub backends: Vec<Backend>,
    /// Comments written above the service (what was changed and why).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub address: String,
    pub weight: Option<u32>,
    pub check: Option<Check>,
    pub line: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Check {
    /// http_get | https_get | tcp | exec
    pub kind: &'static str,
    pub path: Option<String>,
    pub digest: Option<String>,
    pub status: Vec<u16>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub command: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub retry_delay: Option<String>,
    pub warmup: Option<String>,
    pub alpha: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Vrrp {
    /// Where it came from: `vrrp_instance NAME` at FILE:LINE.
    pub from: String,
    pub name: String,
    pub interface: Option<String>,
    pub virtual_router_id: Option<u8>,
    pub priority: Option<u8>,
    pub advert_interval: Option<String>,
    pub version: Option<u8>,
    pub virtual_addresses: Vec<String>,
    pub preempt: Option<bool>,
    pub preempt_delay: Option<String>,
    pub auth_pass: Option<String>,
    pub unicast_peers: Vec<String>,
    pub garp_count: Option<u32>,
    pub garp_delay: Option<String>,
    pub garp_master_refresh: Option<String>,
    pub garp_master_refresh_repeat: Option<u32>,
    pub notify_master: Option<String>,
    pub notify_backup: Option<String>,
    pub notify_fault: Option<String>,
    /// (name, weight)
    pub track_script: Vec<(String, Option<i32>)>,
    pub track_interface: Vec<(String, Option<i32>)>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Script {
    pub line: usize,
    pub name: String,
    pub script: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub weight: Option<i32>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub line: usize,
    pub name: String,
    pub instances: Vec<String>,
}
