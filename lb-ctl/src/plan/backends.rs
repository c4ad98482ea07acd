//! Backends: each configured one's entry in `BACKENDS` (its id kept by address within its
//! service), whether it is usable (MAC known, not held down), what changed, and the backends
//! its service no longer has.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
};

use lb_common::{BACKEND_CONFIGURED, BACKEND_DOWN, BACKEND_USABLE, Backend};

use super::{Change, Current, Down, Macs, Plan, Write, Writes, ids::Ids};
use crate::{
    config::{BackendConfig, ServiceConfig},
    maps::convert::{addr_mapped, addr_v4, describe_backend},
    net::link::format_mac,
};

/// A service's configured backends in the maps, by address: `(id, entry)`.
pub(super) type Existing = HashMap<Ipv4Addr, (u32, Backend)>;

/// The configured backends of each service id, by address (one pass over all of them).
pub(super) fn by_service(current: &Current) -> HashMap<u32, Existing> {
    let mut out: HashMap<u32, Existing> = HashMap::new();
    for (&id, b) in &current.backends {
        out.entry(b.service_id)
            .or_default()
            .insert(addr_v4(&b.addr), (id, *b));
    }
    out
}

/// [`Down`] by service name, so a lookup needs no key built per backend.
pub(super) struct DownSet<'a>(HashMap<&'a str, HashSet<Ipv4Addr>>);

impl<'a> DownSet<'a> {
    pub(super) fn new(down: &'a Down) -> DownSet<'a> {
        let mut by_name: HashMap<&str, HashSet<Ipv4Addr>> = HashMap::new();
        for (service, addr) in down.keys() {
            by_name.entry(service.as_str()).or_default().insert(*addr);
        }
        DownSet(by_name)
    }

    fn contains(&self, service: &str, addr: Ipv4Addr) -> bool {
        self.0.get(service).is_some_and(|s| s.contains(&addr))
    }
}

/// What a service's backends are planned against.
pub(super) struct Context<'a> {
    pub macs: &'a Macs,
    pub down: &'a DownSet<'a>,
    pub service: &'a ServiceConfig,
    /// The service's id.
    pub id: u32,
}

/// A usable backend of a service: what its table is built from.
pub(super) struct Member<'a> {
    pub id: u32,
    pub weight: u32,
    pub config: &'a BackendConfig,
}

/// Plans the backends of `ctx.service` over `have` (its backends in the maps); returns the
/// usable ones in file order.
pub(super) fn plan<'a>(
    ctx: &Context<'a>,
    mut have: Existing,
    ids: &mut Ids,
    p: &mut Plan,
    w: &mut Writes,
) -> anyhow::Result<Vec<Member<'a>>> {
    let sc = ctx.service;
    let mut members = Vec::with_capacity(sc.backends.len());
    for bc in &sc.backends {
        let (want, usable) = desired(ctx, bc, &mut p.warnings);
        let id = match have.remove(&bc.address) {
            Some((id, old)) => {
                if old != want {
                    p.changes.push(Change::ChangeBackend {
                        service: sc.name.clone(),
                        what: format!("{} {}", describe_backend(&want), delta(&old, &want)),
                    });
                    let write = Write::SetBackend(id, want);
                    // One that loses usability changes after the switch away from it.
                    if old.flags & BACKEND_USABLE != 0 && !usable {
                        w.post.push(write);
                    } else {
                        w.pre.push(write);
                    }
                }
                id
            }
            None => {
                let id = ids.new_backend()?;
                p.changes.push(Change::AddBackend {
                    service: sc.name.clone(),
                    what: format!("{} weight {}", describe_backend(&want), bc.weight),
                });
                w.pre.push(Write::ResetBackendCounters(id));
                w.pre.push(Write::SetBackend(id, want));
                id
            }
        };
        if usable {
            members.push(Member {
                id,
                weight: bc.weight,
                config: bc,
            });
        }
    }
    // What is left in the maps is no longer in the file.
    let mut removed: Vec<(u32, Backend)> = have.into_values().collect();
    removed.sort_unstable_by_key(|&(id, _)| id);
    for (id, b) in removed {
        p.changes.push(Change::RemoveBackend {
            service: sc.name.clone(),
            what: describe_backend(&b),
        });
        w.post.push(Write::ClearBackend(id));
    }
    Ok(members)
}

/// The entry a configured backend wants, and whether it is usable. An unresolved MAC is a
/// warning: the backend is configured but gets no traffic.
fn desired(ctx: &Context, bc: &BackendConfig, warnings: &mut Vec<String>) -> (Backend, bool) {
    let sc = ctx.service;
    let mac = match ctx.macs.get(&bc.address) {
        Some(Ok(mac)) => Some(*mac),
        Some(Err(why)) => {
            warnings.push(unresolved(bc, &sc.name, why));
            None
        }
        None => {
            let why = "not resolved (no neighbour lookup was made)";
            warnings.push(unresolved(bc, &sc.name, why));
            None
        }
    };
    let is_down = ctx.down.contains(&sc.name, bc.address);
    let usable = mac.is_some() && !is_down;
    let want = Backend {
        addr: addr_mapped(bc.address),
        mac: mac.unwrap_or([0; 6]),
        flags: BACKEND_CONFIGURED
            | if usable { BACKEND_USABLE } else { 0 }
            | if is_down { BACKEND_DOWN } else { 0 },
        service_id: ctx.id,
        weight: bc.weight,
        port: bc.port.to_be(),
        _pad: [0; 2],
    };
    (want, usable)
}

fn unresolved(bc: &BackendConfig, service: &str, why: &str) -> String {
    format!(
        "backend {}:{} of service {service}: no MAC address ({why}); it gets no traffic",
        bc.address, bc.port
    )
}

/// `weight 1 -> 3`, `mac ... -> ...`, `down`, ...: what differs between two entries.
fn delta(have: &Backend, want: &Backend) -> String {
    let mut parts = Vec::new();
    if have.weight != want.weight {
        let drain = if want.weight == 0 { " (drain)" } else { "" };
        parts.push(format!("weight {} -> {}{drain}", have.weight, want.weight));
    }
    if have.mac != want.mac {
        parts.push(format!(
            "mac {} -> {}",
            format_mac(&have.mac),
            format_mac(&want.mac)
        ));
    }
    let flipped = have.flags ^ want.flags;
    if flipped & BACKEND_DOWN != 0 {
        let now_down = want.flags & BACKEND_DOWN != 0;
        parts.push(if now_down { "down" } else { "up" }.to_string());
    } else if flipped & BACKEND_USABLE != 0 {
        let now_usable = want.flags & BACKEND_USABLE != 0;
        parts.push(if now_usable { "resolved" } else { "unresolved" }.to_string());
    }
    if have.port != want.port {
        parts.push(format!(
            "port {} -> {}",
            u16::from_be(have.port),
            u16::from_be(want.port)
        ));
    }
    parts.join(", ")
}
