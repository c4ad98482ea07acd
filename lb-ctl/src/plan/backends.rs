//! Backends: each configured one's entry in `BACKENDS` (its id kept by address within its
//! service), whether it is usable (MAC known, not held down), what changed, and the backends
//! its service no longer has.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use lb_common::{BACKEND_CONFIGURED, BACKEND_DOWN, BACKEND_USABLE, Backend, limits};

use super::{Change, Current, Down, Plan, Resolved, Write, Writes, ids::Ids};
use crate::{
    config::{BackendConfig, Forwarding, ServiceConfig},
    plan::convert::{
        addr_ip, addr_of, describe_backend, describe_forward, format_mac, forward_of, host_port,
    },
};

/// A service's configured backends in the maps, found by address and taken once each.
#[derive(Default)]
pub(super) struct Existing {
    /// `(address, id, entry)` in order of address; `None` once taken.
    entries: Vec<(IpAddr, Option<(u32, Backend)>)>,
}

impl Existing {
    /// The backend of this address, unless already taken.
    fn take(&mut self, addr: IpAddr) -> Option<(u32, Backend)> {
        let i = self.entries.binary_search_by_key(&addr, |e| e.0).ok()?;
        self.entries[i].1.take()
    }

    /// `(id, entry)` of those not taken, in order of address.
    pub(super) fn rest(self) -> impl Iterator<Item = (u32, Backend)> {
        self.entries.into_iter().filter_map(|e| e.1)
    }
}

/// The configured backends of each service id (one pass over all of them); those of an id
/// past every service's come last.
pub(super) struct ByService(Vec<Existing>);

impl ByService {
    pub(super) fn of(current: &Current) -> ByService {
        let mut all: Vec<Existing> = Vec::new();
        all.resize_with(limits::MAX_SERVICES as usize + 1, Existing::default);
        for (&id, b) in &current.backends {
            let at = (b.service_id as usize).min(limits::MAX_SERVICES as usize);
            all[at].entries.push((addr_ip(&b.addr), Some((id, *b))));
        }
        for e in &mut all {
            e.entries.sort_by_key(|e| e.0);
        }
        ByService(all)
    }

    /// Takes the backends of a service id.
    pub(super) fn take(&mut self, service_id: u32) -> Existing {
        self.0
            .get_mut(service_id as usize)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The ids of every backend not taken (of services that are gone), in order.
    pub(super) fn rest(self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .0
            .into_iter()
            .flat_map(Existing::rest)
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// [`Down`] by service name, so a lookup needs no key built per backend.
pub(super) struct DownSet<'a>(HashMap<&'a str, HashSet<IpAddr>>);

impl<'a> DownSet<'a> {
    pub(super) fn new(down: &'a Down) -> DownSet<'a> {
        let mut by_name: HashMap<&str, HashSet<IpAddr>> = HashMap::new();
        for (service, addr) in down.keys() {
            by_name.entry(service.as_str()).or_default().insert(*addr);
        }
        DownSet(by_name)
    }

    /// The addresses held down in one service.
    pub(super) fn of(&self, service: &str) -> Option<&HashSet<IpAddr>> {
        self.0.get(service)
    }
}

/// What a service's backends are planned against.
pub(super) struct Context<'a> {
    pub resolved: &'a Resolved,
    /// The service's backends that health checks hold down.
    pub down: Option<&'a HashSet<IpAddr>>,
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
        let id = match have.take(bc.address) {
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
                let via = match bc.forward {
                    Forwarding::Route => String::new(),
                    Forwarding::Tunnel(_) => format!(" {}", describe_forward(&want)),
                };
                p.changes.push(Change::AddBackend {
                    service: sc.name.clone(),
                    what: format!("{} weight {}{via}", describe_backend(&want), bc.weight),
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
    for (id, b) in have.rest() {
        p.changes.push(Change::RemoveBackend {
            service: sc.name.clone(),
            what: describe_backend(&b),
        });
        w.post.push(Write::ClearBackend(id));
    }
    Ok(members)
}

/// The entry a configured backend wants, and whether it is usable. A route backend needs its
/// MAC, a tunnel backend an outer source (configured, else the kernel's route's); without it
/// the backend is configured but gets no traffic, and a warning says why.
fn desired(ctx: &Context, bc: &BackendConfig, warnings: &mut Vec<String>) -> (Backend, bool) {
    let sc = ctx.service;
    let mut want = Backend {
        addr: addr_of(bc.address),
        service_id: ctx.id,
        weight: bc.weight,
        port: bc.port.to_be(),
        forward: forward_of(&bc.forward) as u8,
        ..Backend::default()
    };
    let found = match &bc.forward {
        Forwarding::Route => match ctx.resolved.macs.get(&bc.address) {
            Some(Ok(mac)) => {
                want.mac = *mac;
                true
            }
            Some(Err(why)) => {
                warnings.push(unresolved(bc, &sc.name, why));
                false
            }
            None => {
                let why = "not resolved (no neighbour lookup was made)";
                warnings.push(unresolved(bc, &sc.name, why));
                false
            }
        },
        Forwarding::Tunnel(t) => {
            want.tunnel_port = t.port.to_be();
            let source = match t.source {
                Some(configured) => Ok(configured),
                None => match ctx.resolved.sources.get(&bc.address) {
                    Some(r) => r.clone(),
                    None => Err("no route lookup was made".to_string()),
                },
            };
            match source {
                Ok(src) => {
                    want.tunnel_src = addr_of(src);
                    true
                }
                Err(why) => {
                    warnings.push(format!(
                        "backend {} of service {}: no tunnel source address ({why}); it gets \
                         no traffic",
                        host_port(bc.address, bc.port),
                        sc.name
                    ));
                    false
                }
            }
        }
    };
    let is_down = ctx.down.is_some_and(|d| d.contains(&bc.address));
    let usable = found && !is_down;
    want.flags = BACKEND_CONFIGURED
        | if usable { BACKEND_USABLE } else { 0 }
        | if is_down { BACKEND_DOWN } else { 0 };
    (want, usable)
}

fn unresolved(bc: &BackendConfig, service: &str, why: &str) -> String {
    format!(
        "backend {} of service {service}: no MAC address ({why}); it gets no traffic",
        host_port(bc.address, bc.port)
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
    if (have.forward, have.tunnel_src, have.tunnel_port)
        != (want.forward, want.tunnel_src, want.tunnel_port)
    {
        parts.push(format!(
            "forward {} -> {}",
            describe_forward(have),
            describe_forward(want)
        ));
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
