//! `forward:` and `tunnel:`: how a service's packets reach each backend, direct routing (the
//! default) or a tunnel (IPIP or GUE), per service with a per-backend override, key by key as
//! IPVS allows a forwarding method per real server.
//!
//! ```yaml
//! forward: tunnel            # route (default) | tunnel; a backend may override it
//! tunnel:                    # optional with `forward: tunnel` (IPIP from the route's source)
//!   type: gue                # ipip (default) | gue
//!   port: 6080               # gue only, 1..=65535; default 6080
//!   source: 192.168.58.134   # optional outer source; default: the kernel's route's source
//! ```

use std::net::IpAddr;

use super::fields::{Diags, Fields, address, choice, integer};
use super::tree::join_key;
use super::{Forwarding, Tunnel, TunnelKind};

pub(super) const TUNNEL_FIELDS: &[&str] = &["type", "port", "source"];

/// The UDP port a GUE tunnel goes to when `tunnel.port` is not given. Linux's FOU/GUE has no
/// default; this is the port of the project's examples and of the lab.
pub const DEFAULT_GUE_PORT: u16 = 6080;

/// One `forward:` and `tunnel:` pair as written (a service's or a backend's), each value with
/// the line and path a later problem is filed at.
#[derive(Clone, Default)]
pub(super) struct Written {
    /// `Some(true)`: `forward: tunnel`; `Some(false)`: `forward: route`; None: not given.
    pub tunnel: Option<bool>,
    pub kind: Option<TunnelKind>,
    /// The port with its line and path.
    pub port: Option<(u16, usize, String)>,
    /// The source with its line and path.
    pub source: Option<(IpAddr, usize, String)>,
    /// The `tunnel:` block's line and path, when it is given.
    pub block: Option<(usize, String)>,
    /// False when any of it was invalid (reported).
    pub valid: bool,
}

/// Reads `forward` and `tunnel` of the mapping `f`: a service's, or a backend's (`inherits`:
/// what it does not give comes from its service).
pub(super) fn read(f: &Fields, inherits: bool, d: &mut Diags) -> Written {
    let mut w = Written {
        valid: true,
        ..Written::default()
    };
    match f.optional("forward") {
        None => {}
        Some(field) => {
            let r = choice(
                field.node,
                "a forwarding method",
                "`route` or `tunnel`",
                |s| match s {
                    "route" => Some(false),
                    "tunnel" => Some(true),
                    _ => None,
                },
            );
            match d.ok(&field, r) {
                Some(t) => w.tunnel = Some(t),
                None => w.valid = false,
            }
        }
    }
    let Some(field) = f.optional("tunnel") else {
        return w;
    };
    let path = field.path();
    w.block = Some((field.line, path.clone()));
    let what = (
        "a mapping like `{ type: ipip }` or `{ type: gue, port: 6080 }`",
        None,
    );
    let Some(t) = Fields::of(&field, &path, TUNNEL_FIELDS, what, d) else {
        w.valid = false;
        return w;
    };
    let kind = t.or("type", None, d, |n| {
        choice(n, "a tunnel type", "`ipip` or `gue`", |s| match s {
            "ipip" => Some(TunnelKind::Ipip),
            "gue" => Some(TunnelKind::Gue),
            _ => None,
        })
        .map(Some)
    });
    match kind {
        Some(k) => w.kind = k,
        None => w.valid = false,
    }
    if let Some(pf) = t.optional("port") {
        let r = integer(pf.node, 1, u16::MAX.into()).map(|p| p as u16);
        match d.ok(&pf, r) {
            Some(p) => w.port = Some((p, pf.line, pf.path())),
            None => w.valid = false,
        }
    }
    if let Some(sf) = t.optional("source") {
        match d.ok(&sf, address(sf.node, "a tunnel's source")) {
            Some(a) => w.source = Some((a, sf.line, sf.path())),
            None => w.valid = false,
        }
    }
    // `port` belongs to GUE: on an IPIP block (written or by default) it is a mistake. A
    // backend's block without `type` takes its service's, known later (`backend`).
    if w.kind == Some(TunnelKind::Ipip) || (w.kind.is_none() && !inherits) {
        w.valid &= port_without_gue(&w, w.kind.is_some(), d);
    }
    w
}

/// Reports `w`'s port, if it has one, on an IPIP tunnel (`written`: the block says `type:
/// ipip`); true when there is none.
fn port_without_gue(w: &Written, written: bool, d: &mut Diags) -> bool {
    let Some((_, line, path)) = &w.port else {
        return true;
    };
    let what = if written {
        "`type: ipip`"
    } else {
        "an IPIP tunnel (the default `type`)"
    };
    d.at(
        *line,
        path,
        format!(
            "`port` is the UDP port of a GUE tunnel, and this is {what}, which has no port; \
             remove `port` or write `type: gue`"
        ),
    );
    false
}

/// How the backend whose own settings are `own` (at `path`, address `addr`) is forwarded,
/// given its service's `service` settings; None when invalid (reported).
pub(super) fn backend(
    service: &Written,
    own: &Written,
    addr: Option<IpAddr>,
    path: &str,
    line: usize,
    d: &mut Diags,
) -> Option<Forwarding> {
    if !service.valid || !own.valid {
        return None;
    }
    if !own.tunnel.or(service.tunnel).unwrap_or(false) {
        if let Some((block_line, block_path)) = &own.block {
            d.at(
                *block_line,
                block_path,
                "tunnel settings on a backend that is forwarded by direct routing; add \
                 `forward: tunnel` to it (or to its service), or remove `tunnel`",
            );
            return None;
        }
        return Some(Forwarding::Route);
    }
    // Key by key: the backend's own, else the service's; an inherited GUE port does not
    // apply to a backend that chose IPIP itself.
    let kind = own.kind.or(service.kind).unwrap_or(TunnelKind::Ipip);
    if kind == TunnelKind::Ipip
        && own.kind.is_none()
        && !port_without_gue(own, service.kind.is_some(), d)
    {
        return None;
    }
    let port = match kind {
        TunnelKind::Ipip => 0,
        TunnelKind::Gue => own
            .port
            .as_ref()
            .or(service.port.as_ref())
            .map_or(DEFAULT_GUE_PORT, |p| p.0),
    };
    let source = own.source.as_ref().or(service.source.as_ref());
    if let (Some((src, src_line, src_path)), Some(addr)) = (source, addr)
        && src.is_ipv4() != addr.is_ipv4()
    {
        let family = |a: &IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
        let (at_line, at_path, whose) = if own.source.is_some() {
            (*src_line, src_path.clone(), String::new())
        } else {
            (
                line,
                join_key(path, "address"),
                format!(" (the service's `tunnel.source`, line {src_line})"),
            )
        };
        d.at(
            at_line,
            &at_path,
            format!(
                "the tunnel source {src}{whose} is {} but the backend {addr} is {}: the outer \
                 header has the backend's family; give this backend a `tunnel: {{ source: ... }}` \
                 of its family, or omit `source` (the kernel's route to the backend then gives it)",
                family(src),
                family(&addr)
            ),
        );
        return None;
    }
    Some(Forwarding::Tunnel(Tunnel {
        kind,
        port,
        source: source.map(|s| s.0),
    }))
}

/// The service's own forwarding (what its sorry server gets): `forward` and `tunnel` without
/// a backend's override.
pub(super) fn service(w: &Written) -> Option<Forwarding> {
    let mut none = Diags {
        file: "",
        list: Vec::new(),
    };
    // The service's settings were checked when read; nothing is reported here.
    backend(
        w,
        &Written {
            valid: true,
            ..Written::default()
        },
        None,
        "",
        0,
        &mut none,
    )
}

/// Reports a service's `tunnel:` block that no backend (and not the service) uses.
pub(super) fn unused_block(service: &Written, any_tunnel: bool, d: &mut Diags) {
    if let (Some((line, path)), false) = (&service.block, any_tunnel) {
        d.at(
            *line,
            path,
            "tunnel settings, but neither the service nor any backend has `forward: tunnel`; \
             add `forward: tunnel` (to the service, or to the backends that tunnel) or remove \
             `tunnel`",
        );
    }
}
