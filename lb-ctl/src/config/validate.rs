//! From text to a checked [`Config`], collecting every problem on the way.
//!
//! 1. serde_yaml reads the text into a [`Value`] (YAML syntax errors stop here: there is no
//!    tree to check), and `<<` merge keys are applied.
//! 2. Unknown keys are reported, each at its own line, and taken out of the tree.
//! 3. What is left is deserialized into the typed `Raw*` structs (`deny_unknown_fields`, a
//!    guard: step 2 removed the unknown keys). Every field is a [`Field`], which never fails: a
//!    value of the wrong type is kept as [`Field::Invalid`], so one bad field does not hide the
//!    others.
//! 4. The raw structs are checked field by field, then across services, and each problem becomes
//!    a [`Diagnostic`] whose line comes from the [`LineMap`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::limits::{MAX_BACKENDS, MAX_SERVICES, NAME_LEN};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_yaml::{Mapping, Value};

use super::lines::{LineMap, join_index, join_key, path_key};
use super::shown::{MAX_MESSAGE_CHARS, cut, escape_controls, shown};
use super::{
    BackendConfig, Config, ConfigError, DEFAULT_SCHEDULER, Diagnostic, Protocol, Scheduler,
    ServiceConfig,
};

// The health checks and keepalived's service options (a child module: it uses the helpers here).
#[path = "check.rs"]
pub(super) mod check;

// The `vrrp:` list (a child module: it uses the helpers here).
#[path = "vrrp.rs"]
pub(super) mod vrrp;

const FILE_FIELDS: &[&str] = &["services", "vrrp"];
const SERVICE_FIELDS: &[&str] = &[
    "name",
    "vip",
    "port",
    "protocol",
    "scheduler",
    "table_size",
    "persistence",
    "backends",
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
const BACKEND_FIELDS: &[&str] = &["address", "port", "weight", "check"];

/// Highest port, and highest weight.
const MAX_U16: i64 = u16::MAX as i64;
const DEFAULT_WEIGHT: u32 = 1;

/// A field as found in the file: never a deserialization error by itself.
#[derive(Debug, Default)]
enum Field<T> {
    /// The key is not there.
    #[default]
    Absent,
    /// The key is there with no value (`port:` or `port: ~`).
    Null,
    Value(T),
    /// A value that is not a `T`, kept to describe it.
    Invalid(Value),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        if value.is_null() {
            return Ok(Field::Null);
        }
        Ok(match T::deserialize(&value) {
            Ok(v) => Field::Value(v),
            Err(_) => Field::Invalid(value),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawFile {
    services: Field<Vec<Field<RawService>>>,
    vrrp: Field<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawService {
    name: Field<String>,
    vip: Field<String>,
    port: Field<i64>,
    protocol: Field<Protocol>,
    scheduler: Field<Scheduler>,
    table_size: Field<i64>,
    persistence: Field<RawPersistence>,
    backends: Field<Vec<Field<RawBackend>>>,
    // Health (check.rs).
    check: Field<Value>,
    sorry_server: Field<Value>,
    inhibit_on_failure: Field<Value>,
    quorum: Field<Value>,
    hysteresis: Field<Value>,
    notify_up: Field<Value>,
    notify_down: Field<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawPersistence {
    timeout: Field<String>,
    netmask: Field<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawBackend {
    address: Field<String>,
    port: Field<i64>,
    weight: Field<i64>,
    check: Field<Value>,
}

/// The diagnostics found so far.
struct Diags<'a> {
    file: &'a str,
    text: &'a str,
    lines: &'a LineMap,
    list: Vec<Diagnostic>,
}

impl Diags<'_> {
    /// A problem at `line`. What the message and field quote from the file was cut and
    /// escaped where it was quoted; as a last guard, both are escaped and bounded here too.
    fn at(&mut self, line: usize, field: &str, message: impl Into<String>) {
        let message = message.into();
        self.list.push(Diagnostic {
            file: self.file.to_string(),
            line,
            field: escape_controls(&cut(field, MAX_MESSAGE_CHARS)),
            message: escape_controls(&cut(&message, MAX_MESSAGE_CHARS)),
        });
    }

    /// A problem with the field at `path`, at its line (or its nearest ancestor's).
    fn field(&mut self, path: &str, message: impl Into<String>) {
        let line = self.lines.line_or_parent(path);
        self.at(line, path, message);
    }

    fn line(&self, path: &str) -> usize {
        self.lines.line_or_parent(path)
    }
}

pub(super) fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let lines = LineMap::build(text);
    if let Some(limit) = &lines.limit {
        // Too deep or too large once expanded: refused before any recursive parser runs.
        return Err(ConfigError {
            diagnostics: vec![Diagnostic {
                file: file.to_string(),
                line: limit.line,
                field: String::new(),
                message: limit.message.clone(),
            }],
        });
    }
    let mut diags = Diags {
        file,
        text,
        lines: &lines,
        list: Vec::new(),
    };
    let config = check(text, &mut diags);
    let mut list = diags.list;
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

/// The checked config, or None; either way every problem found is in `d`.
fn check(text: &str, d: &mut Diags) -> Option<Config> {
    let mut value: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(err) => {
            yaml_error(&err, d);
            return None;
        }
    };
    if let Err(err) = value.apply_merge() {
        let line = d.lines.first_line_of_key("<<").unwrap_or(1);
        d.at(line, "", format!("bad merge key `<<`: {err}"));
        return None;
    }
    let mut top = match value {
        Value::Mapping(m) => m,
        Value::Null => {
            d.at(
                1,
                "services",
                "the file is empty: expected a `services:` list",
            );
            return None;
        }
        other => {
            d.at(
                d.line(""),
                "",
                format!(
                    "expected a mapping with a `services:` list at the top level, found {}",
                    describe(&other)
                ),
            );
            return None;
        }
    };
    strip_unknown_keys(&mut top, d);
    let raw = match RawFile::deserialize(Value::Mapping(top)) {
        Ok(raw) => raw,
        Err(err) => {
            d.at(1, "", err.to_string());
            return None;
        }
    };
    check_file(raw, d)
}

/// Turns a serde_yaml error (syntax, or a value serde_yaml cannot hold) into a diagnostic.
fn yaml_error(err: &serde_yaml::Error, d: &mut Diags) {
    let mut message = err.to_string();
    if message.contains("duplicate entry with key") && !d.lines.duplicates.is_empty() {
        // serde_yaml names the first duplicate only, at the line of the mapping.
        for dup in d.lines.duplicates.clone() {
            d.at(
                dup.line,
                &dup.path,
                format!(
                    "duplicate key `{}` (first at line {})",
                    shown(&dup.key),
                    dup.first_line
                ),
            );
        }
        return;
    }
    let line = match err.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(i) = message.find(&suffix) {
                message.replace_range(i..i + suffix.len(), "");
            }
            loc.line().max(1)
        }
        None if message.contains("more than one document") => {
            d.lines.documents.get(1).copied().unwrap_or(1)
        }
        None => 1,
    };
    // serde_yaml puts the path first when it has one: `services[0].port: invalid type: ...`.
    let (field, mut message) = match message.split_once(": ") {
        Some((path, rest)) if is_path(path) => (path.to_string(), rest.to_string()),
        _ => (String::new(), message),
    };
    if message.contains(" as u128") || message.contains(" as i128") {
        // An integer that fits no 64-bit type: `invalid type: integer `N` as u128, ...`.
        if let Some(n) = message.split('`').nth(1) {
            message = format!("{n} is out of range (too large a number)");
        }
    }
    if message.contains("cannot start any token")
        && text_line(d, line).is_some_and(|l| l.contains('\t'))
    {
        message.push_str(" (YAML does not allow tabs for indentation; use spaces)");
    }
    d.at(line, &field, message);
}

/// Line `line` (1-based) of the text being checked.
fn text_line<'a>(d: &Diags<'a>, line: usize) -> Option<&'a str> {
    d.text.lines().nth(line.checked_sub(1)?)
}

fn is_path(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-[]".contains(c))
}

/// Reports every key that is not a field, at every level, and removes it.
fn strip_unknown_keys(top: &mut Mapping, d: &mut Diags) {
    strip_unknown(top, "", FILE_FIELDS, d);
    let Some(Value::Sequence(services)) = top.get_mut("services") else {
        return;
    };
    for (i, service) in services.iter_mut().enumerate() {
        let Value::Mapping(service) = service else {
            continue;
        };
        let service_path = join_index("services", i);
        strip_unknown(service, &service_path, SERVICE_FIELDS, d);
        if let Some(Value::Mapping(p)) = service.get_mut("persistence") {
            strip_unknown(
                p,
                &join_key(&service_path, "persistence"),
                PERSISTENCE_FIELDS,
                d,
            );
        }
        let Some(Value::Sequence(backends)) = service.get_mut("backends") else {
            continue;
        };
        let backends_path = join_key(&service_path, "backends");
        for (j, backend) in backends.iter_mut().enumerate() {
            if let Value::Mapping(backend) = backend {
                strip_unknown(backend, &join_index(&backends_path, j), BACKEND_FIELDS, d);
            }
        }
    }
}

fn strip_unknown(map: &mut Mapping, path: &str, known: &[&str], d: &mut Diags) {
    let expected = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    map.retain(|key, _| {
        if key.as_str().is_some_and(|k| known.contains(&k)) {
            return true;
        }
        let name = key_text(key);
        d.field(
            &join_key(path, &path_key(&name)),
            format!(
                "unknown field `{}`; expected one of {expected}",
                shown(&name)
            ),
        );
        false
    });
}

/// A mapping key as written (near enough) in the file.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "~".to_string(),
        other => describe(other),
    }
}

/// What a value is, for "expected X, found Y".
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_string(),
        Value::Bool(b) => format!("the boolean `{b}`"),
        Value::Number(n) => format!("the number `{n}`"),
        Value::String(s) => format!("the string `{}`", shown(s)),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a value tagged `{}`", shown(&t.tag.to_string())),
    }
}

/// The value of a field; reports it (and returns None) when missing, empty or invalid.
/// A null optional field counts as absent.
fn take<T>(
    d: &mut Diags,
    path: &str,
    field: Field<T>,
    required: bool,
    invalid: impl FnOnce(&Value) -> String,
) -> Option<T> {
    let key = path.rsplit('.').next().unwrap_or(path);
    match field {
        Field::Value(v) => Some(v),
        Field::Absent if required => {
            d.field(path, format!("missing required field `{key}`"));
            None
        }
        Field::Null if required => {
            d.field(path, format!("`{key}` has no value"));
            None
        }
        Field::Absent | Field::Null => None,
        Field::Invalid(v) => {
            d.field(path, invalid(&v));
            None
        }
    }
}

fn invalid_integer(v: &Value) -> String {
    match v {
        // Larger than i64::MAX.
        Value::Number(n) if n.as_u64().is_some() => {
            format!("{n} is out of range (0..={MAX_U16})")
        }
        _ => format!("expected an integer (0..={MAX_U16}), found {}", describe(v)),
    }
}

fn invalid_string(v: &Value) -> String {
    match v {
        Value::Number(_) | Value::Bool(_) => format!(
            "expected a string, found {} (put it in quotes)",
            describe(v)
        ),
        _ => format!("expected a string, found {}", describe(v)),
    }
}

fn invalid_address(v: &Value) -> String {
    format!("expected an IPv4 address, found {}", describe(v))
}

fn invalid_choice(what: &str, choices: &str) -> impl FnOnce(&Value) -> String {
    move |v| match v {
        Value::String(s) => format!("`{}` is not a {what}; expected {choices}", shown(s)),
        _ => format!("expected {choices}, found {}", describe(v)),
    }
}

/// `n` if it is in 0..=65535; else reports it.
fn in_u16_range(d: &mut Diags, path: &str, n: i64) -> Option<u16> {
    match u16::try_from(n) {
        Ok(n) => Some(n),
        Err(_) => {
            d.field(path, format!("{n} is out of range (0..={MAX_U16})"));
            None
        }
    }
}

/// Name rules: 1..=32 bytes of `[A-Za-z0-9_.-]`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".to_string());
    }
    if name.len() > NAME_LEN {
        return Err(format!(
            "`{}` is {} bytes long; at most {NAME_LEN} are allowed",
            shown(name),
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "`{}` contains {c:?}; only letters, digits, `_`, `.` and `-` are allowed",
            shown(name)
        ));
    }
    Ok(())
}

/// An IPv4 unicast address that can be a VIP or a backend (`role`: "a VIP", ...): not in
/// 0.0.0.0/8 ("this network"), 127.0.0.0/8, 224.0.0.0/4 (multicast), 240.0.0.0/4 (reserved)
/// and not 255.255.255.255.
fn check_address(s: &str, role: &str) -> Result<Ipv4Addr, String> {
    let addr: Ipv4Addr = match s.parse() {
        Ok(addr) => addr,
        Err(_) if s.parse::<Ipv6Addr>().is_ok() => {
            return Err(format!(
                "`{}` is an IPv6 address; only IPv4 is supported for now",
                shown(s)
            ));
        }
        Err(_) => return Err(format!("`{}` is not a valid IPv4 address", shown(s))),
    };
    match not_unicast(addr) {
        Some(what) => Err(format!(
            "{addr} is {what} and cannot be {role}; give a unicast address"
        )),
        None => Ok(addr),
    }
}

/// What `addr` is when it is no unicast host address, or None when it is one.
pub(crate) fn not_unicast(addr: Ipv4Addr) -> Option<&'static str> {
    let first = addr.octets()[0];
    Some(if addr.is_unspecified() {
        "the unspecified address"
    } else if first == 0 {
        "in 0.0.0.0/8 (\"this network\", never a host's address)"
    } else if addr.is_broadcast() {
        "the limited broadcast address"
    } else if addr.is_multicast() {
        "a multicast address (224.0.0.0/4)"
    } else if first >= 240 {
        "a reserved address (240.0.0.0/4)"
    } else if addr.is_loopback() {
        "a loopback address (127.0.0.0/8)"
    } else {
        return None;
    })
}

/// State of the checks across services.
#[derive(Default)]
struct Seen {
    /// Service name -> line of its entry.
    names: HashMap<String, usize>,
    /// (VIP, port, protocol) -> (description of the service, line of its entry).
    listeners: HashMap<(Ipv4Addr, u16, Protocol), (String, usize)>,
    /// Backend entries so far, over all services.
    backends: usize,
}

fn check_file(mut raw: RawFile, d: &mut Diags) -> Option<Config> {
    let vrrp = vrrp::check_vrrp(std::mem::take(&mut raw.vrrp), d);
    let services = match raw.services {
        Field::Value(services) => services,
        Field::Absent => {
            d.field("services", "missing required field `services`");
            return None;
        }
        Field::Null => {
            d.field(
                "services",
                "`services` has no value; write `services: []` for no services",
            );
            return None;
        }
        Field::Invalid(v) => {
            d.field(
                "services",
                format!("expected a list of services, found {}", describe(&v)),
            );
            return None;
        }
    };
    let max_services = MAX_SERVICES as usize;
    if services.len() > max_services {
        let line = d.line(&join_index("services", max_services));
        d.at(
            line,
            "services",
            format!(
                "{} services are listed; at most {max_services} are supported",
                services.len()
            ),
        );
    }
    let mut seen = Seen::default();
    let mut out = Vec::with_capacity(services.len());
    let mut complete = true;
    for (i, service) in services.into_iter().enumerate() {
        match check_service(i, service, &mut seen, d) {
            Some(service) => out.push(service),
            None => complete = false,
        }
    }
    let vrrp = vrrp?;
    complete.then_some(Config {
        services: out,
        vrrp,
    })
}

fn check_service(
    i: usize,
    service: Field<RawService>,
    seen: &mut Seen,
    d: &mut Diags,
) -> Option<ServiceConfig> {
    let path = join_index("services", i);
    let line = d.line(&path);
    let raw = match service {
        Field::Value(raw) => raw,
        Field::Absent | Field::Null => {
            d.at(
                line,
                &path,
                "empty service entry; expected a mapping with `name`, `vip`, `port`",
            );
            return None;
        }
        Field::Invalid(v) => {
            d.at(
                line,
                &path,
                format!(
                    "expected a service (a mapping with `name`, `vip`, `port`, ...), found {}",
                    describe(&v)
                ),
            );
            return None;
        }
    };

    let name_path = join_key(&path, "name");
    let name =
        take(d, &name_path, raw.name, true, invalid_string).and_then(|name| {
            match check_name(&name) {
                Ok(()) => Some(name),
                Err(msg) => {
                    d.field(&name_path, msg);
                    None
                }
            }
        });

    let vip_path = join_key(&path, "vip");
    let vip = take(d, &vip_path, raw.vip, true, invalid_address).and_then(|s| {
        check_address(&s, "a VIP")
            .map_err(|msg| d.field(&vip_path, msg))
            .ok()
    });

    let port_path = join_key(&path, "port");
    let port = take(d, &port_path, raw.port, true, invalid_integer)
        .and_then(|n| in_u16_range(d, &port_path, n));

    // Optional fields: None below means invalid (and reported), not absent.
    let protocol = match raw.protocol {
        Field::Absent | Field::Null => Some(Protocol::Tcp),
        field => take(
            d,
            &join_key(&path, "protocol"),
            field,
            false,
            invalid_choice("protocol", "`tcp` or `udp`"),
        ),
    };
    let scheduler = match raw.scheduler {
        Field::Absent | Field::Null => Some(DEFAULT_SCHEDULER),
        field => take(
            d,
            &join_key(&path, "scheduler"),
            field,
            false,
            invalid_choice("scheduler", "`rr`, `wrr`, `sh`, `mh`, `lc` or `wlc`"),
        ),
    };
    if let (Some(Scheduler::Lc | Scheduler::Wlc), Some(Protocol::Udp)) = (scheduler, protocol) {
        d.field(
            &join_key(&path, "scheduler"),
            "lc and wlc count active TCP connections, and a director sees no end of a UDP \
             flow; use rr, wrr, sh or mh for UDP",
        );
    }
    let table_size_path = join_key(&path, "table_size");
    let table_size = match raw.table_size {
        Field::Absent | Field::Null => Some(super::DEFAULT_TABLE_SIZE),
        field => take(d, &table_size_path, field, false, invalid_integer).and_then(|n| {
            if !(2..=MAX_TABLE_SIZE).contains(&n) || !is_prime(n as u64) {
                d.field(
                    &table_size_path,
                    format!(
                        "{n} is not a prime in 2..={MAX_TABLE_SIZE}; Maglev needs a prime table \
                         size (e.g. 251, 4093, 65537, 655373)"
                    ),
                );
                return None;
            }
            Some(n as u32)
        }),
    };
    let persistence = check_persistence(d, &join_key(&path, "persistence"), raw.persistence);

    // Across services: names and listeners are unique.
    if let Some(name) = &name {
        match seen.names.get(name) {
            Some(first) => d.field(
                &name_path,
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
                    "{vip}:{port}/{protocol} is already served by {first} (line {first_line}); \
                     each (vip, port, protocol) may appear only once"
                ),
            ),
            None => {
                seen.listeners.insert((vip, port, protocol), (this, line));
            }
        }
    }

    let raw_health = check::RawHealth {
        check: raw.check,
        sorry_server: raw.sorry_server,
        inhibit_on_failure: raw.inhibit_on_failure,
        quorum: raw.quorum,
        hysteresis: raw.hysteresis,
        notify_up: raw.notify_up,
        notify_down: raw.notify_down,
    };
    let mut backend_checks = Vec::new();

    let backends_path = join_key(&path, "backends");
    let raw_backends = match raw.backends {
        Field::Value(list) => list,
        Field::Absent | Field::Null => Vec::new(),
        Field::Invalid(v) => {
            d.field(
                &backends_path,
                format!("expected a list of backends, found {}", describe(&v)),
            );
            return None;
        }
    };
    let mut backends = Vec::with_capacity(raw_backends.len());
    let mut backends_ok = true;
    // Backend address -> line of its entry.
    let mut addresses: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (j, mut backend) in raw_backends.into_iter().enumerate() {
        if let Field::Value(raw) = &mut backend {
            backend_checks.push((j, std::mem::take(&mut raw.check)));
        }
        let backend_path = join_index(&backends_path, j);
        seen.backends += 1;
        if seen.backends == MAX_BACKENDS as usize + 1 {
            d.field(
                &backend_path,
                format!(
                    "more than {MAX_BACKENDS} backends in total; at most {MAX_BACKENDS} are \
                     supported"
                ),
            );
        }
        match check_backend(&backend_path, backend, vip, port, &mut addresses, d) {
            Some(b) => backends.push(b),
            None => backends_ok = false,
        }
    }

    let health = check::check_health(
        &path,
        raw_health,
        backend_checks,
        backends_ok.then_some(backends.as_slice()),
        vip,
        port,
        d,
    );

    Some(ServiceConfig {
        health: health?,
        name: name?,
        vip: vip?,
        port: port?,
        protocol: protocol?,
        scheduler: scheduler?,
        table_size: table_size?,
        persistence: persistence?,
        backends: backends_ok.then_some(backends)?,
        line,
    })
}

/// The largest Maglev table a service may ask for (a prime, 4 bytes an entry).
const MAX_TABLE_SIZE: i64 = 16_777_213;

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// `Some(None)`: no persistence; `None`: invalid (reported).
fn check_persistence(
    d: &mut Diags,
    path: &str,
    field: Field<RawPersistence>,
) -> Option<Option<super::Persistence>> {
    let raw = match field {
        Field::Absent | Field::Null => return Some(None),
        Field::Value(raw) => raw,
        Field::Invalid(v) => {
            d.field(
                path,
                format!(
                    "expected a mapping like `{{ timeout: 50s, netmask: 255.255.255.0 }}`, found {}",
                    describe(&v)
                ),
            );
            return None;
        }
    };
    let timeout_path = join_key(path, "timeout");
    let timeout = take(d, &timeout_path, raw.timeout, true, invalid_string).and_then(|t| {
        match super::parse_duration(&t) {
            Ok(t) if t.as_secs() >= 1 && t.as_secs() <= u32::MAX as u64 => Some(t),
            Ok(_) => {
                d.field(
                    &timeout_path,
                    format!(
                        "`{}`: persistence needs a timeout of at least 1s",
                        shown(&t)
                    ),
                );
                None
            }
            Err(e) => {
                d.field(&timeout_path, e);
                None
            }
        }
    });
    let mask_path = join_key(path, "netmask");
    let netmask = match raw.netmask {
        Field::Absent | Field::Null => Some(Ipv4Addr::BROADCAST),
        field => take(d, &mask_path, field, false, invalid_string).and_then(|m| {
            match m.parse::<Ipv4Addr>() {
                Ok(mask) if (!u32::from(mask)).wrapping_add(1).is_power_of_two() => Some(mask),
                _ => {
                    d.field(
                        &mask_path,
                        format!("`{}` is not a netmask (like 255.255.255.0)", shown(&m)),
                    );
                    None
                }
            }
        }),
    };
    Some(Some(super::Persistence {
        timeout: timeout?,
        netmask: netmask?,
    }))
}

fn check_backend(
    path: &str,
    backend: Field<RawBackend>,
    vip: Option<Ipv4Addr>,
    service_port: Option<u16>,
    addresses: &mut HashMap<Ipv4Addr, usize>,
    d: &mut Diags,
) -> Option<BackendConfig> {
    let line = d.line(path);
    let raw = match backend {
        Field::Value(raw) => raw,
        Field::Absent | Field::Null => {
            d.at(
                line,
                path,
                "empty backend entry; expected a mapping with `address`",
            );
            return None;
        }
        Field::Invalid(v) => {
            d.at(
                line,
                path,
                format!(
                    "expected a backend (a mapping with `address`, and optionally `port`, \
                     `weight`), found {}",
                    describe(&v)
                ),
            );
            return None;
        }
    };

    let address_path = join_key(path, "address");
    let address = take(d, &address_path, raw.address, true, invalid_address).and_then(|s| {
        check_address(&s, "a backend address")
            .map_err(|msg| d.field(&address_path, msg))
            .ok()
    });
    let address = address.and_then(|addr| {
        if Some(addr) == vip {
            d.field(
                &address_path,
                format!(
                    "{addr} is the service's VIP; a backend must be a real server's own address"
                ),
            );
            return None;
        }
        match addresses.get(&addr) {
            Some(first) => {
                d.field(
                    &address_path,
                    format!("{addr} is listed twice in this service (first at line {first})"),
                );
                None
            }
            None => {
                addresses.insert(addr, line);
                Some(addr)
            }
        }
    });

    // The port is the service's: a backend may only repeat it.
    let port_path = join_key(path, "port");
    let port = match raw.port {
        Field::Absent | Field::Null => service_port,
        field => take(d, &port_path, field, false, invalid_integer)
            .and_then(|n| in_u16_range(d, &port_path, n))
            .and_then(|p| match service_port {
                Some(sp) if sp != p => {
                    let why = if sp == 0 {
                        "the service takes every port of its VIP (port 0), and in DR mode the \
                         director forwards packets unchanged, so it cannot rewrite ports; omit \
                         `port` or set it to 0"
                            .to_string()
                    } else {
                        format!(
                            "in DR mode the director forwards packets unchanged, so it cannot \
                             rewrite ports; omit `port` or set it to {sp}"
                        )
                    };
                    d.field(
                        &port_path,
                        format!("port {p} differs from the service port {sp}: {why}"),
                    );
                    None
                }
                _ => Some(p),
            }),
    };

    let weight_path = join_key(path, "weight");
    let weight = match raw.weight {
        Field::Absent | Field::Null => Some(DEFAULT_WEIGHT),
        field => take(d, &weight_path, field, false, invalid_integer)
            .and_then(|n| in_u16_range(d, &weight_path, n))
            .map(u32::from),
    };

    Some(BackendConfig {
        address: address?,
        port: port?,
        weight: weight?,
        line,
    })
}
