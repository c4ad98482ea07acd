//! The health-check part of a service: its `check:` block (and each backend's override) and
//! keepalived's service options `sorry_server`, `inhibit_on_failure`, `quorum`, `hysteresis`,
//! `notify_up` and `notify_down`.
//!
//! ```yaml
//! services:
//!   - name: web
//!     check:                      # per service; a backend may carry its own `check:`
//!       type: http_get            # http_get | https_get | tcp | exec
//!       path: /                   # http(s)_get; default /
//!       status: [200]             # http(s)_get; default [200]
//!       digest: 9b3a...           # http(s)_get; optional MD5 of the body (lb-ctl genhash)
//!       host: www.example.com     # http(s)_get; optional Host header
//!       port: 80                  # default: the backend's port
//!       command: /usr/local/bin/chk   # exec (run by /bin/sh -c); exit 0 = up
//!       interval: 1s              # keepalived delay_loop
//!       timeout: 1s
//!       retries: 2                # consecutive failures before down (nb_get_retry)
//!       retry_delay: 500ms        # delay_before_retry
//!       rise: 1                   # consecutive successes before up
//!       warmup: 0s                # the first check comes up to this late (spreads checks)
//!     sorry_server: 192.168.58.140
//!     inhibit_on_failure: false
//!     quorum: 1
//!     hysteresis: 0
//!     notify_up: /usr/local/bin/up.sh
//!     notify_down: /usr/local/bin/down.sh
//! ```
//!
//! A backend's `check:` overrides the service's key by key; when it changes `type`, the
//! service's keys that do not apply to the new type are dropped. Keys that do not apply to the
//! type of their own block are errors, as are unknown keys. A service without any check is
//! never marked down.
//!
//! This module is a child of `validate` and uses its helpers ([`Diags`], [`Field`], ...).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::{Diags, Field, check_address, describe, join_index, join_key, path_key, shown};
use crate::config::{BackendConfig, parse_duration};

/// What a check does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// An HTTP/1.0 GET: the status must be one of `status`, the body's MD5 `digest` if given.
    HttpGet,
    /// The same over TLS; the certificate is not verified (keepalived's SSL_GET).
    HttpsGet,
    /// A TCP connection that opens within the timeout.
    Tcp,
    /// A command (`/bin/sh -c`) that exits 0 within the timeout.
    Exec,
}

impl CheckKind {
    /// As written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::HttpGet => "http_get",
            CheckKind::HttpsGet => "https_get",
            CheckKind::Tcp => "tcp",
            CheckKind::Exec => "exec",
        }
    }

    fn from_name(s: &str) -> Option<CheckKind> {
        Some(match s {
            "http_get" => CheckKind::HttpGet,
            "https_get" => CheckKind::HttpsGet,
            "tcp" => CheckKind::Tcp,
            "exec" => CheckKind::Exec,
            _ => return None,
        })
    }

    pub fn is_http(self) -> bool {
        matches!(self, CheckKind::HttpGet | CheckKind::HttpsGet)
    }
}

/// One backend's check, every default filled in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CheckConfig {
    pub kind: CheckKind,
    /// http(s)_get: the path requested (starts with `/`).
    pub path: String,
    /// http(s)_get: the status codes that mean up.
    pub status: Vec<u16>,
    /// http(s)_get: the MD5 of the body, 32 lowercase hex digits.
    pub digest: Option<String>,
    /// http(s)_get: the Host header (default: the backend's address, and port if not default).
    pub host: Option<String>,
    /// The port checked; `None` = the backend's port.
    pub port: Option<u16>,
    /// exec: the command line, run by `/bin/sh -c`.
    pub command: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures before down (at least 1).
    pub retries: u32,
    /// The wait before the next try after a failure, while not yet down.
    pub retry_delay: Duration,
    /// Consecutive successes before a down backend is up again (at least 1).
    pub rise: u32,
    /// The first check comes at most this late (a fixed spread per backend).
    pub warmup: Duration,
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(500);
pub const DEFAULT_RISE: u32 = 1;

impl CheckConfig {
    /// A check of `kind` with every default.
    pub fn new(kind: CheckKind) -> CheckConfig {
        CheckConfig {
            kind,
            path: "/".to_string(),
            status: vec![200],
            digest: None,
            host: None,
            port: None,
            command: None,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            retry_delay: DEFAULT_RETRY_DELAY,
            rise: DEFAULT_RISE,
            warmup: Duration::ZERO,
        }
    }
}

/// The health part of one service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// The service's `check:`.
    pub check: Option<CheckConfig>,
    /// Backends with their own `check:` (merged over the service's), by address.
    pub backend_checks: BTreeMap<Ipv4Addr, CheckConfig>,
    /// Gets the service's traffic when it has failed (every backend down, or quorum lost).
    pub sorry_server: Option<Ipv4Addr>,
    /// A failed backend gets weight 0 (its flows stay) instead of being marked down.
    pub inhibit_on_failure: bool,
    /// The least total weight of up backends for the service to be up; `None`: not used
    /// (the service fails only when every backend is down).
    pub quorum: Option<u32>,
    /// The quorum is lost below `quorum - hysteresis` and regained at `quorum + hysteresis`.
    pub hysteresis: u32,
    /// Run (by `/bin/sh -c`) when a backend comes up, and when one goes down.
    pub notify_up: Option<String>,
    pub notify_down: Option<String>,
}

impl Health {
    /// The check of the backend at `addr`: its own, else the service's.
    pub fn check_for(&self, addr: Ipv4Addr) -> Option<&CheckConfig> {
        self.backend_checks.get(&addr).or(self.check.as_ref())
    }
}

/// The raw health fields of one service, as found in the file.
#[derive(Debug, Default)]
pub(super) struct RawHealth {
    pub check: Field<Value>,
    pub sorry_server: Field<Value>,
    pub inhibit_on_failure: Field<Value>,
    pub quorum: Field<Value>,
    pub hysteresis: Field<Value>,
    pub notify_up: Field<Value>,
    pub notify_down: Field<Value>,
}

/// The keys of a `check:` block.
pub(super) const CHECK_FIELDS: &[&str] = &[
    "type",
    "path",
    "status",
    "digest",
    "host",
    "port",
    "command",
    "interval",
    "timeout",
    "retries",
    "retry_delay",
    "rise",
    "warmup",
];

/// Keys only some types take, with the types.
fn applies(key: &str, kind: CheckKind) -> bool {
    match key {
        "path" | "status" | "digest" | "host" => kind.is_http(),
        "command" => kind == CheckKind::Exec,
        _ => true,
    }
}

fn takers(key: &str) -> &'static str {
    match key {
        "command" => "`exec`",
        _ => "`http_get` and `https_get`",
    }
}

/// One key of a check block, with where it was written.
struct Entry {
    key: String,
    value: Value,
    path: String,
    /// Comes from the service's block into a backend's (already reported there).
    inherited: bool,
}

/// The entries of the mapping at `path`, unknown keys reported (and left out); None (reported)
/// when it is not a mapping.
fn entries(value: Value, path: &str, d: &mut Diags) -> Option<Vec<Entry>> {
    let map: Mapping = match value {
        Value::Mapping(m) => m,
        other => {
            d.field(
                path,
                format!(
                    "expected a check (a mapping with `type`, ...), found {}",
                    describe(&other)
                ),
            );
            return None;
        }
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let key = match &k {
            Value::String(s) => s.clone(),
            other => describe(other),
        };
        let p = join_key(path, &path_key(&key));
        if !CHECK_FIELDS.contains(&key.as_str()) {
            let expected = CHECK_FIELDS
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            d.field(
                &p,
                format!(
                    "unknown field `{}`; expected one of {expected}",
                    shown(&key)
                ),
            );
            continue;
        }
        out.push(Entry {
            key,
            value: v,
            path: p,
            inherited: false,
        });
    }
    Some(out)
}

/// Reports unless the entry was inherited (then it was reported in the service's block).
fn report(d: &mut Diags, e: &Entry, message: String) {
    if !e.inherited {
        d.field(&e.path, message);
    }
}

fn as_u32(d: &mut Diags, e: &Entry, min: u32) -> Option<u32> {
    match &e.value {
        Value::Number(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n >= min => Some(n),
            _ => {
                report(d, e, format!("{n} is out of range ({min}..={})", u32::MAX));
                None
            }
        },
        other => {
            report(
                d,
                e,
                format!("expected an integer, found {}", describe(other)),
            );
            None
        }
    }
}

fn as_string(d: &mut Diags, e: &Entry) -> Option<String> {
    match &e.value {
        Value::String(s) if s.trim().is_empty() => {
            report(d, e, "the string is empty".to_string());
            None
        }
        Value::String(s) => Some(s.clone()),
        other => {
            report(
                d,
                e,
                format!("expected a string, found {}", describe(other)),
            );
            None
        }
    }
}

fn as_duration(d: &mut Diags, e: &Entry, nonzero: bool) -> Option<Duration> {
    let Value::String(s) = &e.value else {
        report(
            d,
            e,
            format!(
                "expected a duration such as `1s` or `500ms`, found {}",
                describe(&e.value)
            ),
        );
        return None;
    };
    match parse_duration(s) {
        Ok(t) if nonzero && t.is_zero() => {
            report(d, e, format!("`{}` must be longer than 0", e.key));
            None
        }
        Ok(t) => Some(t),
        Err(msg) => {
            report(d, e, msg);
            None
        }
    }
}

/// Builds a check from `list` (later entries win). `path` is the block's path (for the
/// missing `type`); `service_port` is the port of the backends. None when anything is wrong
/// (reported, except for inherited entries).
fn build(
    list: Vec<Entry>,
    path: &str,
    service_port: Option<u16>,
    d: &mut Diags,
) -> Option<CheckConfig> {
    let mut by_key: BTreeMap<String, Entry> = BTreeMap::new();
    for e in list {
        by_key.insert(e.key.clone(), e);
    }
    let type_entry = by_key.remove("type");
    let kind = match type_entry.as_ref().map(|e| (e, &e.value)) {
        None => {
            d.field(
                path,
                "missing required field `type` (http_get, https_get, tcp or exec)",
            );
            None
        }
        Some((e, Value::String(s))) => {
            let kind = CheckKind::from_name(s);
            if kind.is_none() {
                report(
                    d,
                    e,
                    format!(
                        "`{}` is not a check type; expected `http_get`, `https_get`, `tcp` or \
                         `exec`",
                        shown(s)
                    ),
                );
            }
            kind
        }
        Some((e, other)) => {
            report(
                d,
                e,
                format!(
                    "expected `http_get`, `https_get`, `tcp` or `exec`, found {}",
                    describe(other)
                ),
            );
            None
        }
    };
    // With no valid type, the other keys are still checked (as if it took them all).
    let type_ok = kind.is_some();
    let type_inherited = type_entry.as_ref().is_some_and(|e| e.inherited);
    let mut c = CheckConfig::new(kind.unwrap_or(CheckKind::HttpGet));
    let kind = c.kind;
    let mut ok = type_ok;
    for (key, e) in &by_key {
        if type_ok && !applies(key, kind) {
            // Inherited keys of another type are dropped: the backend changed the type.
            if !e.inherited || type_inherited {
                report(
                    d,
                    e,
                    format!(
                        "`{key}` applies to {} checks only, not to `{}`",
                        takers(key),
                        kind.as_str()
                    ),
                );
                ok = false;
            }
            continue;
        }
        let good = match key.as_str() {
            "path" => as_string(d, e).and_then(|p| {
                if p.starts_with('/') && !p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    c.path = p;
                    Some(())
                } else {
                    report(
                        d,
                        e,
                        format!(
                            "`{}` is not a path: it must start with `/` and have no spaces",
                            shown(&p)
                        ),
                    );
                    None
                }
            }),
            "status" => status(d, e).map(|s| c.status = s),
            "digest" => as_string(d, e).and_then(|s| {
                let s = s.trim().to_ascii_lowercase();
                if s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit()) {
                    c.digest = Some(s);
                    Some(())
                } else {
                    report(
                        d,
                        e,
                        format!(
                            "`{}` is not an MD5 digest (32 hex digits; `lb-ctl genhash` \
                             prints it)",
                            shown(&s)
                        ),
                    );
                    None
                }
            }),
            "host" => as_string(d, e).and_then(|h| {
                if h.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    report(d, e, format!("`{h}` is not a host name (no spaces)"));
                    None
                } else {
                    c.host = Some(h);
                    Some(())
                }
            }),
            "port" => as_u32(d, e, 1).and_then(|n| match u16::try_from(n) {
                Ok(p) => {
                    c.port = Some(p);
                    Some(())
                }
                Err(_) => {
                    report(d, e, format!("{n} is out of range (1..=65535)"));
                    None
                }
            }),
            "command" => as_string(d, e).map(|s| c.command = Some(s)),
            "interval" => as_duration(d, e, true).map(|t| c.interval = t),
            "timeout" => as_duration(d, e, true).map(|t| c.timeout = t),
            "retry_delay" => as_duration(d, e, false).map(|t| c.retry_delay = t),
            "warmup" => as_duration(d, e, false).map(|t| c.warmup = t),
            "retries" => as_u32(d, e, 1).map(|n| c.retries = n),
            "rise" => as_u32(d, e, 1).map(|n| c.rise = n),
            _ => Some(()),
        };
        ok &= good.is_some();
    }
    if !ok {
        return None;
    }
    if kind == CheckKind::Exec && c.command.is_none() {
        d.field(path, "an `exec` check needs `command`");
        return None;
    }
    if kind != CheckKind::Exec && c.port.is_none() && service_port == Some(0) {
        d.field(
            path,
            "the service takes every port (port 0): give the check a `port`",
        );
        return None;
    }
    ok.then_some(c)
}

fn status(d: &mut Diags, e: &Entry) -> Option<Vec<u16>> {
    let items = match &e.value {
        Value::Sequence(items) => items.clone(),
        Value::Number(_) => vec![e.value.clone()],
        other => {
            report(
                d,
                e,
                format!(
                    "expected a list of HTTP status codes such as [200], found {}",
                    describe(other)
                ),
            );
            return None;
        }
    };
    if items.is_empty() {
        report(
            d,
            e,
            "the list is empty; give at least one status code".into(),
        );
        return None;
    }
    let mut out = Vec::new();
    for (i, v) in items.iter().enumerate() {
        match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(n) if (100..=599).contains(&n) => out.push(n),
            _ => {
                if !e.inherited {
                    d.field(
                        &join_index(&e.path, i),
                        format!(
                            "expected an HTTP status code (100..=599), found {}",
                            describe(v)
                        ),
                    );
                }
                return None;
            }
        }
    }
    Some(out)
}

/// Checks the health fields of the service at `path` whose backends are `backends` (None when
/// some were invalid), with the raw `check:` of each backend by index.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_health(
    path: &str,
    raw: RawHealth,
    backend_checks: Vec<(usize, Field<Value>)>,
    backends: Option<&[BackendConfig]>,
    vip: Option<Ipv4Addr>,
    port: Option<u16>,
    d: &mut Diags,
) -> Option<Health> {
    let mut ok = true;
    let mut h = Health::default();

    let check_path = join_key(path, "check");
    let service_entries = match raw.check {
        Field::Value(v) => match entries(v, &check_path, d) {
            Some(list) => Some(list),
            None => {
                ok = false;
                None
            }
        },
        Field::Invalid(v) => {
            d.field(
                &check_path,
                format!(
                    "expected a check (a mapping with `type`, ...), found {}",
                    describe(&v)
                ),
            );
            ok = false;
            None
        }
        Field::Absent | Field::Null => None,
    };
    if let Some(list) = &service_entries {
        let copy = list.iter().map(clone_entry).collect();
        match build(copy, &check_path, port, d) {
            Some(c) => h.check = Some(c),
            None => ok = false,
        }
    }

    for (j, field) in backend_checks {
        let bpath = join_key(&join_index(&join_key(path, "backends"), j), "check");
        let value = match field {
            Field::Value(v) => v,
            Field::Invalid(v) => {
                d.field(
                    &bpath,
                    format!(
                        "expected a check (a mapping with `type`, ...), found {}",
                        describe(&v)
                    ),
                );
                ok = false;
                continue;
            }
            Field::Absent | Field::Null => continue,
        };
        let Some(own) = entries(value, &bpath, d) else {
            ok = false;
            continue;
        };
        let mut merged: Vec<Entry> = service_entries
            .iter()
            .flatten()
            .map(|e| Entry {
                inherited: true,
                ..clone_entry(e)
            })
            .collect();
        merged.extend(own);
        match build(merged, &bpath, port, d) {
            Some(c) => {
                if let Some(addr) = backends.and_then(|b| b.get(j)).map(|b| b.address) {
                    h.backend_checks.insert(addr, c);
                }
            }
            None => ok = false,
        }
    }

    let sorry_path = join_key(path, "sorry_server");
    match raw.sorry_server {
        Field::Absent | Field::Null => {}
        Field::Value(Value::String(s)) | Field::Invalid(Value::String(s)) => {
            match check_address(&s, "a sorry server") {
                Ok(addr) if Some(addr) == vip => {
                    d.field(
                        &sorry_path,
                        format!(
                            "{addr} is the service's VIP; a sorry server must be a real server"
                        ),
                    );
                    ok = false;
                }
                Ok(addr) => {
                    if backends.is_some_and(|b| b.iter().any(|b| b.address == addr)) {
                        d.field(
                            &sorry_path,
                            format!(
                                "{addr} is also a backend of this service; a sorry server is \
                                 used when every backend is down"
                            ),
                        );
                        ok = false;
                    } else {
                        h.sorry_server = Some(addr);
                    }
                }
                Err(msg) => {
                    d.field(&sorry_path, msg);
                    ok = false;
                }
            }
        }
        Field::Value(v) | Field::Invalid(v) => {
            d.field(
                &sorry_path,
                format!("expected an IPv4 address, found {}", describe(&v)),
            );
            ok = false;
        }
    }

    let inhibit_path = join_key(path, "inhibit_on_failure");
    match raw.inhibit_on_failure {
        Field::Absent | Field::Null => {}
        Field::Value(Value::Bool(b)) | Field::Invalid(Value::Bool(b)) => h.inhibit_on_failure = b,
        Field::Value(v) | Field::Invalid(v) => {
            d.field(
                &inhibit_path,
                format!("expected `true` or `false`, found {}", describe(&v)),
            );
            ok = false;
        }
    }

    let mut number = |field: Field<Value>, key: &str, min: u64, d: &mut Diags| -> Option<u32> {
        let p = join_key(path, key);
        match field {
            Field::Absent | Field::Null => None,
            Field::Value(v) | Field::Invalid(v) => {
                match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) if u64::from(n) >= min => Some(n),
                    _ => {
                        d.field(
                            &p,
                            format!(
                                "expected an integer ({min}..={}), found {}",
                                u32::MAX,
                                describe(&v)
                            ),
                        );
                        ok = false;
                        None
                    }
                }
            }
        }
    };
    h.quorum = number(raw.quorum, "quorum", 1, d);
    let hysteresis_given = !matches!(raw.hysteresis, Field::Absent | Field::Null);
    h.hysteresis = number(raw.hysteresis, "hysteresis", 0, d).unwrap_or(0);
    if hysteresis_given && h.hysteresis > 0 {
        let p = join_key(path, "hysteresis");
        match h.quorum {
            None => {
                d.field(&p, "`hysteresis` needs a `quorum`");
                ok = false;
            }
            Some(q) if h.hysteresis >= q => {
                d.field(
                    &p,
                    format!(
                        "hysteresis {} must be smaller than the quorum {q}",
                        h.hysteresis
                    ),
                );
                ok = false;
            }
            Some(_) => {}
        }
    }

    for (key, field) in [
        ("notify_up", raw.notify_up),
        ("notify_down", raw.notify_down),
    ] {
        let p = join_key(path, key);
        let value = match field {
            Field::Absent | Field::Null => continue,
            Field::Value(Value::String(s)) | Field::Invalid(Value::String(s))
                if !s.trim().is_empty() =>
            {
                s
            }
            Field::Value(v) | Field::Invalid(v) => {
                d.field(
                    &p,
                    format!(
                        "expected a command (a non-empty string), found {}",
                        describe(&v)
                    ),
                );
                ok = false;
                continue;
            }
        };
        if key == "notify_up" {
            h.notify_up = Some(value);
        } else {
            h.notify_down = Some(value);
        }
    }

    ok.then_some(h)
}

fn clone_entry(e: &Entry) -> Entry {
    Entry {
        key: e.key.clone(),
        value: e.value.clone(),
        path: e.path.clone(),
        inherited: e.inherited,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{CheckConfig, CheckKind, Config, Diagnostic, parse};

    const FILE: &str = "s.yaml";

    fn ok(text: &str) -> Config {
        parse(text, FILE).unwrap_or_else(|e| panic!("rejected:\n{e}"))
    }

    fn errs(text: &str) -> Vec<Diagnostic> {
        match parse(text, FILE) {
            Ok(c) => panic!("accepted: {c:#?}"),
            Err(e) => e.diagnostics,
        }
    }

    #[track_caller]
    fn has(diags: &[Diagnostic], line: usize, field: &str, contains: &str) {
        assert!(
            diags
                .iter()
                .any(|d| d.line == line && d.field == field && d.message.contains(contains)),
            "no `{line}: {field}: ...{contains}...` in:\n{}",
            diags
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// A service `web` on port 80 with `extra` service lines (indented 4) and two backends,
    /// the second with `backend2` lines (indented 8).
    fn svc(extra: &str, backend2: &str) -> String {
        format!(
            "services:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n{extra}    backends:\n      - address: 10.0.0.1\n      - address: 10.0.0.2\n{backend2}"
        )
    }

    #[test]
    fn full_block_and_service_options() {
        let c = ok(&svc(
            "    check:\n      type: http_get\n      path: /health\n      status: [200, 204]\n      digest: 9B3A0C5E9F6D4B1A2C3D4E5F60718293\n      host: www.example.com\n      port: 8080\n      interval: 2s\n      timeout: 500ms\n      retries: 3\n      retry_delay: 100ms\n      rise: 2\n      warmup: 1s\n    sorry_server: 10.0.0.9\n    inhibit_on_failure: true\n    quorum: 3\n    hysteresis: 1\n    notify_up: /bin/up.sh\n    notify_down: /bin/down.sh x\n",
            "",
        ));
        let h = &c.services[0].health;
        let want = CheckConfig {
            kind: CheckKind::HttpGet,
            path: "/health".into(),
            status: vec![200, 204],
            digest: Some("9b3a0c5e9f6d4b1a2c3d4e5f60718293".into()),
            host: Some("www.example.com".into()),
            port: Some(8080),
            command: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(500),
            retries: 3,
            retry_delay: Duration::from_millis(100),
            rise: 2,
            warmup: Duration::from_secs(1),
        };
        assert_eq!(h.check.as_ref(), Some(&want));
        assert_eq!(
            h.sorry_server,
            Some("10.0.0.9".parse().unwrap_or_else(|_| unreachable!()))
        );
        assert!(h.inhibit_on_failure);
        assert_eq!((h.quorum, h.hysteresis), (Some(3), 1));
        assert_eq!(h.notify_up.as_deref(), Some("/bin/up.sh"));
        assert_eq!(h.notify_down.as_deref(), Some("/bin/down.sh x"));
        let b1 = "10.0.0.1".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(h.check_for(b1), Some(&want));
    }

    #[test]
    fn defaults() {
        let c = ok(&svc("    check: {type: http_get}\n", ""));
        let h = &c.services[0].health;
        assert_eq!(h.check, Some(CheckConfig::new(CheckKind::HttpGet)));
        let check = CheckConfig::new(CheckKind::Tcp);
        assert_eq!(
            (check.path.as_str(), check.status.as_slice()),
            ("/", &[200][..])
        );
        assert_eq!(check.interval, Duration::from_secs(1));
        assert_eq!((check.retries, check.rise), (2, 1));
        assert_eq!(h.sorry_server, None);
        assert!(!h.inhibit_on_failure);
        assert_eq!((h.quorum, h.hysteresis), (None, 0));
        // No check at all: nothing is ever marked down.
        let c = ok(&svc("", ""));
        assert_eq!(c.services[0].health, super::Health::default());
    }

    #[test]
    fn backend_override_merges_key_by_key() {
        let c = ok(&svc(
            "    check:\n      type: http_get\n      path: /a\n      interval: 2s\n",
            "        check:\n          path: /b\n",
        ));
        let h = &c.services[0].health;
        let b2 = "10.0.0.2".parse().unwrap_or_else(|_| unreachable!());
        let b1 = "10.0.0.1".parse().unwrap_or_else(|_| unreachable!());
        let own = h.check_for(b2).unwrap_or_else(|| unreachable!());
        assert_eq!(
            (own.path.as_str(), own.interval),
            ("/b", Duration::from_secs(2))
        );
        assert_eq!(h.check_for(b1).map(|c| c.path.as_str()), Some("/a"));
        // Changing the type drops the service's keys that do not apply.
        let c = ok(&svc(
            "    check:\n      type: http_get\n      path: /a\n      retries: 5\n",
            "        check: {type: exec, command: /bin/true}\n",
        ));
        let own = c.services[0]
            .health
            .check_for(b2)
            .cloned()
            .unwrap_or_else(|| unreachable!());
        assert_eq!(own.kind, CheckKind::Exec);
        assert_eq!(own.retries, 5);
        assert_eq!(own.command.as_deref(), Some("/bin/true"));
        // A backend may have a check when the service has none.
        let c = ok(&svc("", "        check: {type: tcp, port: 22}\n"));
        let h = &c.services[0].health;
        assert_eq!(h.check_for(b1), None);
        assert_eq!(h.check_for(b2).and_then(|c| c.port), Some(22));
    }

    #[test]
    fn errors_name_line_and_field() {
        let text = svc(
            "    check:\n      type: http_gett\n      retries: 0\n",
            "        check:\n          interval: 5\n",
        );
        let d = errs(&text);
        has(
            &d,
            6,
            "services[0].check.type",
            "`http_gett` is not a check type",
        );
        has(&d, 7, "services[0].check.retries", "out of range (1..=");
        has(
            &d,
            12,
            "services[0].backends[1].check.interval",
            "expected a duration",
        );

        let d = errs(&svc(
            "    check:\n      type: tcp\n      path: /x\n      timeout: 0s\n      intervall: 1s\n      status: [200, 700]\n",
            "",
        ));
        has(
            &d,
            7,
            "services[0].check.path",
            "applies to `http_get` and `https_get` checks only",
        );
        has(&d, 8, "services[0].check.timeout", "must be longer than 0");
        has(
            &d,
            9,
            "services[0].check.intervall",
            "unknown field `intervall`",
        );
        has(&d, 10, "services[0].check.status", "applies to");

        let d = errs(&svc(
            "    check:\n      type: http_get\n      status: [200, 700]\n      digest: abc\n      path: health\n",
            "",
        ));
        has(
            &d,
            7,
            "services[0].check.status[1]",
            "expected an HTTP status code",
        );
        has(&d, 8, "services[0].check.digest", "is not an MD5 digest");
        has(&d, 9, "services[0].check.path", "must start with `/`");

        let d = errs(&svc("    check:\n      path: /\n", ""));
        has(&d, 5, "services[0].check", "missing required field `type`");
        let d = errs(&svc("    check: {type: exec}\n", ""));
        has(&d, 5, "services[0].check", "needs `command`");
        let d = errs(&svc("    check: tcp\n", ""));
        has(&d, 5, "services[0].check", "expected a check");
        let d = errs(&svc("    check: {type: tcp, port: 70000}\n", ""));
        has(&d, 5, "services[0].check.port", "out of range");
    }

    #[test]
    fn all_ports_service_needs_a_check_port() {
        let text = "services:\n  - name: all\n    vip: 10.0.0.100\n    port: 0\n    check: {type: tcp}\n    backends:\n      - address: 10.0.0.1\n";
        has(
            &errs(text),
            5,
            "services[0].check",
            "give the check a `port`",
        );
        ok(&text.replace("{type: tcp}", "{type: tcp, port: 22}"));
        ok(&text.replace("{type: tcp}", "{type: exec, command: 'true'}"));
    }

    #[test]
    fn service_option_errors() {
        let d = errs(&svc(
            "    sorry_server: 10.0.0.1\n    inhibit_on_failure: yes please\n    quorum: 0\n    notify_up: ''\n",
            "",
        ));
        has(&d, 5, "services[0].sorry_server", "also a backend");
        has(
            &d,
            6,
            "services[0].inhibit_on_failure",
            "expected `true` or `false`",
        );
        has(&d, 7, "services[0].quorum", "expected an integer (1..=");
        has(&d, 8, "services[0].notify_up", "expected a command");
        let d = errs(&svc(
            "    sorry_server: 10.0.0.100\n    hysteresis: 1\n",
            "",
        ));
        has(&d, 5, "services[0].sorry_server", "the service's VIP");
        has(&d, 6, "services[0].hysteresis", "needs a `quorum`");
        let d = errs(&svc(
            "    sorry_server: nope\n    quorum: 2\n    hysteresis: 2\n",
            "",
        ));
        has(
            &d,
            5,
            "services[0].sorry_server",
            "not a valid IPv4 address",
        );
        has(&d, 7, "services[0].hysteresis", "smaller than the quorum 2");
        let d = errs(&svc("", "        chek: {type: tcp}\n"));
        has(
            &d,
            8,
            "services[0].backends[1].chek",
            "unknown field `chek`",
        );
    }
}
