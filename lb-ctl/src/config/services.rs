//! From text to a checked [`Config`]: the file, its services, their backends and persistence,
//! each problem a [`Diagnostic`] at its line and field path, all of them at once.

use std::collections::HashMap;
use std::net::IpAddr;

use lb_common::limits::{MAX_BACKENDS, MAX_SERVICES};

use super::announce;
use super::fields::{Diags, Field, Fields, address, choice, name, same_family, string, u16_value};
use super::forward::{self, Written};
use super::shown::shown;
use super::tree::{self, DuplicateKey, Node, Refusal, Value, join_index, join_key};
use super::{
    BackendConfig, Config, ConfigError, DEFAULT_SCHEDULER, DEFAULT_TABLE_SIZE, Diagnostic,
    Persistence, Protocol, Scheduler, ServiceConfig, check, vrrp, vrrp_track,
};

const FILE_FIELDS: &[&str] = &[
    "services",
    "vrrp",
    "announce",
    "vrrp_scripts",
    "vrrp_sync_groups",
    "sync",
    "flood",
];
const SERVICE_FIELDS: &[&str] = &[
    "name",
    "vip",
    "port",
    "protocol",
    "scheduler",
    "table_size",
    "persistence",
    "backends",
    "forward",
    "tunnel",
    "announce",
    // Health (check.rs).
    "check",
    "sorry_server",
    "inhibit_on_failure",
    "quorum",
    "hysteresis",
    "notify_up",
    "notify_down",
];
const PERSISTENCE_FIELDS: &[&str] = &["timeout", "netmask"];
const BACKEND_FIELDS: &[&str] = &["address", "port", "weight", "check", "forward", "tunnel"];

const DEFAULT_WEIGHT: u32 = 1;

/// The largest Maglev table a service may ask for (a prime, 4 bytes an entry).
const MAX_TABLE_SIZE: i128 = 16_777_213;

pub(super) fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let mut d = Diags {
        file,
        list: Vec::new(),
    };
    let config = match tree::parse(text) {
        Ok(root) => check_file(root.as_ref(), &mut d),
        Err(Refusal::At { line, message }) => {
            d.at(line, "", message);
            None
        }
        Err(Refusal::Duplicates(list)) => {
            for DuplicateKey {
                path,
                key,
                line,
                first_line,
            } in list
            {
                d.at(
                    line,
                    &path,
                    format!(
                        "duplicate key `{}` (first at line {first_line})",
                        shown(&key)
                    ),
                );
            }
            None
        }
    };
    let mut list = d.list;
    match config {
        Some(config) if list.is_empty() => Ok(config),
        _ => {
            if list.is_empty() {
                // Not expected: every path that yields no Config reports why.
                list.push(Diagnostic {
                    file: file.to_string(),
                    line: 1,
                    field: String::new(),
                    message: "the file could not be read as a service file".to_string(),
                });
            }
            list.sort_by_key(|d| d.line);
            Err(ConfigError { diagnostics: list })
        }
    }
}

/// State of the checks across services.
#[derive(Default)]
struct Seen {
    /// Service name -> line of its entry.
    names: HashMap<String, usize>,
    /// (VIP, port, protocol) -> (description of the service, line of its entry).
    listeners: HashMap<(IpAddr, u16, Protocol), (String, usize)>,
    /// Backend entries so far, over all services.
    backends: usize,
}

fn check_file(root: Option<&Node>, d: &mut Diags) -> Option<Config> {
    let root = match root {
        Some(root) if !root.is_null() => root,
        _ => {
            d.at(
                1,
                "services",
                "the file is empty: expected a `services:` list",
            );
            return None;
        }
    };
    let Some(entries) = root.entries() else {
        d.at(
            root.line,
            "",
            format!(
                "expected a mapping with a `services:` list at the top level, found {}",
                root.describe()
            ),
        );
        return None;
    };
    let top = Fields::new(entries, "", root.line, FILE_FIELDS, d);
    let vrrp = vrrp::check_vrrp(top.optional("vrrp"), d);
    let vrrp_scripts = vrrp_track::scripts(&top, d);
    let vrrp_sync_groups = vrrp_track::groups(&top, d);
    let announce = announce::read(&top, d);
    let sync = super::sync::read(&top, d);
    let flood = super::flood::read(&top, d);
    let services = match top.get("services") {
        None => {
            d.at(root.line, "services", "missing required field `services`");
            return None;
        }
        Some(f) if f.node.is_null() => {
            d.field(
                &f,
                "`services` has no value; write `services: []` for no services",
            );
            return None;
        }
        Some(f) => f,
    };
    let Some(items) = services.items("services") else {
        d.field(
            &services,
            format!(
                "expected a list of services, found {}",
                services.node.describe()
            ),
        );
        return None;
    };
    let items: Vec<Field> = items.collect();
    let max_services = MAX_SERVICES as usize;
    if let Some(first_over) = items.get(max_services) {
        d.at(
            first_over.line,
            "services",
            format!(
                "{} services are listed; at most {max_services} are supported",
                items.len()
            ),
        );
    }
    let mut seen = Seen::default();
    let mut out = Vec::with_capacity(items.len());
    let mut complete = true;
    for (i, item) in items.iter().enumerate() {
        match check_service(i, item, &announce, &mut seen, d) {
            Some(service) => out.push(service),
            None => complete = false,
        }
    }
    let (vrrp, vrrp_scripts, vrrp_sync_groups) = (vrrp?, vrrp_scripts?, vrrp_sync_groups?);
    let sync = sync?;
    let flood = flood?;
    let names: Vec<String> = out.iter().map(|s| s.name.clone()).collect();
    // With a service missing (invalid, reported), its name cannot be told unknown.
    let services_known = complete;
    let tracked_ok = vrrp_track::cross_check(
        &vrrp,
        &vrrp_scripts,
        &vrrp_sync_groups,
        services_known.then_some(names.as_slice()),
        d,
    );
    (complete && tracked_ok).then_some(Config {
        services: out,
        vrrp,
        vrrp_scripts,
        vrrp_sync_groups,
        sync,
        flood,
    })
}

fn check_service(
    i: usize,
    item: &Field,
    top_announce: &announce::Written,
    seen: &mut Seen,
    d: &mut Diags,
) -> Option<ServiceConfig> {
    let path = join_index("services", i);
    let line = item.line;
    let what = (
        "a service (a mapping with `name`, `vip`, `port`, ...)",
        Some("empty service entry; expected a mapping with `name`, `vip`, `port`"),
    );
    let f = Fields::of(item, &path, SERVICE_FIELDS, what, d)?;

    let name = f.req("name", d, name);
    let vip = f.req("vip", d, |n| address(n, "a VIP"));
    let port = f.req("port", d, u16_value);
    // Optional fields: None below means invalid (and reported), not absent.
    let protocol = f.or("protocol", Protocol::Tcp, d, |n| {
        choice(n, "a protocol", "`tcp` or `udp`", |s| match s {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        })
    });
    let scheduler = f.or("scheduler", DEFAULT_SCHEDULER, d, |n| {
        choice(
            n,
            "a scheduler",
            "`rr`, `wrr`, `sh`, `mh`, `lc` or `wlc`",
            Scheduler::from_name,
        )
    });
    if let (Some(Scheduler::Lc | Scheduler::Wlc), Some(Protocol::Udp), Some(s)) =
        (scheduler, protocol, f.optional("scheduler"))
    {
        d.field(
            &s,
            "lc and wlc count active TCP connections, and a director sees no end of a UDP \
             flow; use rr, wrr, sh or mh for UDP",
        );
    }
    let table_size = f.or("table_size", DEFAULT_TABLE_SIZE, d, |n| {
        let Value::Int(size) = n.value else {
            return Err(format!("expected an integer, found {}", n.describe()));
        };
        if !(2..=MAX_TABLE_SIZE).contains(&size) || !is_prime(size as u64) {
            return Err(format!(
                "{size} is not a prime in 2..={MAX_TABLE_SIZE}; Maglev needs a prime table size \
                 (e.g. 251, 4093, 65537, 655373)"
            ));
        }
        Ok(size as u32)
    });
    let persistence = check_persistence(&f, vip, d);
    let forwarding = forward::read(&f, false, d);
    let own_announce = announce::read(&f, d);

    // Across services: names and listeners are unique.
    if let (Some(name), Some(field)) = (&name, f.get("name")) {
        match seen.names.get(name) {
            Some(first) => d.field(
                &field,
                format!("duplicate service name `{name}` (first defined at line {first})"),
            ),
            None => {
                seen.names.insert(name.clone(), line);
            }
        }
    }
    if let (Some(vip), Some(port), Some(protocol)) = (vip, port, protocol) {
        let this = match &name {
            Some(name) => format!("service `{name}`"),
            None => path.clone(),
        };
        match seen.listeners.get(&(vip, port, protocol)) {
            Some((first, first_line)) => d.at(
                line,
                &path,
                format!(
                    "{}/{protocol} is already served by {first} (line {first_line}); \
                     each (vip, port, protocol) may appear only once",
                    std::net::SocketAddr::new(vip, port)
                ),
            ),
            None => {
                seen.listeners.insert((vip, port, protocol), (this, line));
            }
        }
    }

    let backends_path = join_key(&path, "backends");
    let (backends, backend_checks) = match f.optional("backends") {
        None => (Some(Vec::new()), Vec::new()),
        Some(list) => {
            let Some(items) = list.items(&backends_path) else {
                d.field(
                    &list,
                    format!(
                        "expected a list of backends, found {}",
                        list.node.describe()
                    ),
                );
                return None;
            };
            check_backends(items, &backends_path, vip, port, &forwarding, seen, d)
        }
    };
    let any_tunnel = forwarding.tunnel == Some(true)
        || backends
            .iter()
            .flatten()
            .any(|b| b.forward != super::Forwarding::Route);
    if backends.is_some() {
        forward::unused_block(&forwarding, any_tunnel, d);
    }
    let service_forward = forward::service(&forwarding);
    let health = check::check_health(&f, backend_checks, backends.as_deref(), vip, port, d)?;
    let announce = announce::service(top_announce, &own_announce, health.quorum, &path, line, d);

    Some(ServiceConfig {
        health,
        announce: announce?,
        name: name?,
        vip: vip?,
        port: port?,
        protocol: protocol?,
        scheduler: scheduler?,
        table_size: table_size?,
        persistence: persistence?,
        backends: backends?,
        forward: service_forward?,
        line,
    })
}

/// The `check:` of the backend at `index`, at `line`.
pub(super) struct BackendCheck<'n> {
    pub index: usize,
    pub node: &'n Node,
    pub line: usize,
}

/// The backends of one service (None when any is invalid), and each one's `check:` field with
/// its index.
fn check_backends<'n, 'p>(
    items: impl Iterator<Item = Field<'n, 'p>>,
    path: &'p str,
    vip: Option<IpAddr>,
    port: Option<u16>,
    service_forward: &Written,
    seen: &mut Seen,
    d: &mut Diags,
) -> (Option<Vec<BackendConfig>>, Vec<BackendCheck<'n>>) {
    let mut backends = Vec::new();
    let mut checks = Vec::new();
    let mut ok = true;
    // Backend address -> line of its entry.
    let mut addresses: HashMap<IpAddr, usize> = HashMap::new();
    for (j, item) in items.enumerate() {
        seen.backends += 1;
        if seen.backends == MAX_BACKENDS as usize + 1 {
            d.field(
                &item,
                format!(
                    "more than {MAX_BACKENDS} backends in total; at most {MAX_BACKENDS} are \
                     supported"
                ),
            );
        }
        let backend_path = join_index(path, j);
        let (backend, check) = check_backend(
            &backend_path,
            &item,
            (vip, port, service_forward),
            &mut addresses,
            d,
        );
        checks.extend(check.map(|c| BackendCheck {
            index: j,
            node: c.node,
            line: c.line,
        }));
        match backend {
            Some(backend) => backends.push(backend),
            None => ok = false,
        }
    }
    (ok.then_some(backends), checks)
}

/// `Some(None)`: no persistence; `None`: invalid (reported). `vip` (None when invalid) says
/// how `netmask` is written: a dotted mask for IPv4, a prefix length for IPv6.
fn check_persistence(
    service: &Fields,
    vip: Option<IpAddr>,
    d: &mut Diags,
) -> Option<Option<Persistence>> {
    let Some(field) = service.optional("persistence") else {
        return Some(None);
    };
    let path = field.path();
    let what = (
        "a mapping like `{ timeout: 50s, netmask: 255.255.255.0 }`",
        None,
    );
    let f = Fields::of(&field, &path, PERSISTENCE_FIELDS, what, d)?;
    let timeout = f.req("timeout", d, |n| {
        let s = string(n)?;
        match super::parse_duration(&s)? {
            t if t.as_secs() >= 1 && t.as_secs() <= u32::MAX as u64 => Ok(t),
            _ => Err(format!(
                "`{}`: persistence needs a timeout of at least 1s",
                shown(&s)
            )),
        }
    });
    let v6 = vip.is_some_and(|v| v.is_ipv6());
    let whole = if v6 { 128 } else { 32 };
    let prefix_len = f.or("netmask", whole, d, |n| netmask(n, vip));
    Some(Some(Persistence {
        timeout: timeout?,
        prefix_len: prefix_len?,
    }))
}

/// A persistence `netmask` as a prefix length: for an IPv4 service a dotted mask
/// (`255.255.255.0`), for an IPv6 one a prefix length (`64` or `"/64"`, 0..=128), as
/// ipvsadm's `-M` takes them. With an invalid VIP either form is taken.
fn netmask(n: &Node, vip: Option<IpAddr>) -> Result<u8, String> {
    let prefix = match &n.value {
        Value::Int(len) => Some(Ok(*len)),
        Value::Str(s) => s
            .strip_prefix('/')
            .map(|len| len.parse::<i128>().map_err(|_| s.clone())),
        _ => None,
    };
    let hint_v6 = "an IPv6 service takes a prefix length such as `64` or \"/64\" (0..=128)";
    match (prefix, vip) {
        (Some(Ok(len)), Some(IpAddr::V6(_)) | None) if (0..=128).contains(&len) => Ok(len as u8),
        (Some(Ok(len)), Some(IpAddr::V6(_)) | None) => {
            Err(format!("prefix length {len} is out of range; {hint_v6}"))
        }
        (Some(_), Some(IpAddr::V4(vip))) => Err(format!(
            "the VIP {vip} is IPv4, whose persistence netmask is a dotted mask such as \
             255.255.255.0, not a prefix length"
        )),
        (Some(Err(s)), _) => Err(format!("`{}` is not a prefix length; {hint_v6}", shown(&s))),
        (None, Some(IpAddr::V6(vip))) => Err(format!(
            "{} is not a prefix length; the VIP {vip} is IPv6, and {hint_v6}",
            describe_mask(n)
        )),
        (None, _) => {
            let m = string(n)?;
            match m.parse::<std::net::Ipv4Addr>() {
                Ok(mask) if (!u32::from(mask)).wrapping_add(1).is_power_of_two() => {
                    Ok(u32::from(mask).leading_ones() as u8)
                }
                _ => Err(format!(
                    "`{}` is not a netmask (like 255.255.255.0)",
                    shown(&m)
                )),
            }
        }
    }
}

/// `` `255.255.255.0` `` for a string node, else what the node is.
fn describe_mask(n: &Node) -> String {
    match &n.value {
        Value::Str(s) => format!("`{}`", shown(s)),
        _ => n.describe(),
    }
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// One backend (None when invalid, reported), and its `check:` field if it has one.
fn check_backend<'n, 'p>(
    path: &'p str,
    item: &Field<'n, '_>,
    (vip, service_port, service_forward): (Option<IpAddr>, Option<u16>, &Written),
    addresses: &mut HashMap<IpAddr, usize>,
    d: &mut Diags,
) -> (Option<BackendConfig>, Option<Field<'n, 'p>>) {
    let line = item.line;
    let what = (
        "a backend (a mapping with `address`, and optionally `port`, `weight`)",
        Some("empty backend entry; expected a mapping with `address`"),
    );
    let Some(f) = Fields::of(item, path, BACKEND_FIELDS, what, d) else {
        return (None, None);
    };

    let own_forward = forward::read(&f, true, d);
    // A tunnel backend may have the other family (the outer header is the backend's).
    let tunnels = own_forward
        .tunnel
        .or(service_forward.tunnel)
        .unwrap_or(false);
    let address = f.req("address", d, |n| {
        let addr = address(n, "a backend address")?;
        if !tunnels {
            same_family(addr, vip, "a backend").map_err(|e| {
                format!("{e}; a backend of the other family needs `forward: tunnel`")
            })?;
        }
        if Some(addr) == vip {
            return Err(format!(
                "{addr} is the service's VIP; a backend must be a real server's own address"
            ));
        }
        match addresses.get(&addr) {
            Some(first) => Err(format!(
                "{addr} is listed twice in this service (first at line {first})"
            )),
            None => {
                addresses.insert(addr, line);
                Ok(addr)
            }
        }
    });

    // The port is the service's: a backend may only repeat it.
    let port = match f.optional("port") {
        None => service_port,
        Some(field) => {
            let r = u16_value(field.node).and_then(|p| match service_port {
                Some(sp) if sp != p => {
                    let why = if sp == 0 {
                        "the service takes every port of its VIP (port 0), and the director \
                         forwards packets unchanged (direct routing rewrites only MACs, a tunnel \
                         only wraps the packet in an outer header), so it cannot rewrite ports; \
                         omit `port` or set it to 0"
                            .to_string()
                    } else {
                        format!(
                            "the director forwards packets unchanged (direct routing rewrites \
                             only MACs, a tunnel only wraps the packet in an outer header), so it \
                             cannot rewrite ports; omit `port` or set it to {sp}"
                        )
                    };
                    Err(format!(
                        "port {p} differs from the service port {sp}: {why}"
                    ))
                }
                _ => Ok(p),
            });
            d.ok(&field, r)
        }
    };
    let weight = f.or("weight", DEFAULT_WEIGHT, d, |n| u16_value(n).map(u32::from));
    let forward = forward::backend(service_forward, &own_forward, address, path, line, d);

    let backend = (|| {
        Some(BackendConfig {
            address: address?,
            port: port?,
            weight: weight?,
            forward: forward?,
            line,
        })
    })();
    (backend, f.optional("check"))
}
