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
//!       via_vip: false            # tcp; true: the handshake goes to VIP:port at the backend's MAC
//!       command: /usr/local/bin/chk   # exec (run by /bin/sh -c); exit 0 = up
//!       interval: 1s              # keepalived delay_loop
//!       timeout: 1s
//!       retries: 2                # consecutive failures before down (nb_get_retry)
//!       retry_delay: 500ms        # delay_before_retry
//!       rise: 1                   # consecutive successes before up
//!       warmup: 0s                # the first check comes up to this late (spreads checks)
//!       alpha: false              # keepalived's alpha: a new backend starts down and gets
//!                                 # no traffic until its first good check (`rise` of them)
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

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::fields::{
    Diags, Field, Fields, address, boolean, choice, command, duration, integer, same_family,
    string, u32_value,
};
use super::services::BackendCheck;
use super::shown::shown;
use super::tree::{Node, Value, join_index, join_key};
use crate::config::BackendConfig;

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

    pub(crate) fn from_name(s: &str) -> Option<CheckKind> {
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
    /// tcp: the handshake goes to the service's VIP (at the backend's MAC, through the real
    /// server's own stack) instead of the backend's own address.
    pub via_vip: bool,
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
    /// keepalived's `alpha`: a backend new to the daemon starts down, not up, until its
    /// first good check(s).
    pub alpha: bool,
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
            via_vip: false,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            retry_delay: DEFAULT_RETRY_DELAY,
            rise: DEFAULT_RISE,
            warmup: Duration::ZERO,
            alpha: false,
        }
    }
}

/// The health part of one service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// The service's `check:`.
    pub check: Option<CheckConfig>,
    /// Backends with their own `check:` (merged over the service's), by address.
    pub backend_checks: BTreeMap<IpAddr, CheckConfig>,
    /// Gets the service's traffic when it has failed (every backend down, or quorum lost).
    pub sorry_server: Option<IpAddr>,
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
    pub fn check_for(&self, addr: IpAddr) -> Option<&CheckConfig> {
        self.backend_checks.get(&addr).or(self.check.as_ref())
    }
}

/// The keys of a `check:` block.
const CHECK_FIELDS: &[&str] = &[
    "type",
    "path",
    "status",
    "digest",
    "host",
    "port",
    "command",
    "via_vip",
    "interval",
    "timeout",
    "retries",
    "retry_delay",
    "rise",
    "warmup",
    "alpha",
];

/// Keys only some types take, with the types.
fn applies(key: &str, kind: CheckKind) -> bool {
    match key {
        "path" | "status" | "digest" | "host" => kind.is_http(),
        "command" => kind == CheckKind::Exec,
        "via_vip" => kind == CheckKind::Tcp,
        _ => true,
    }
}

fn takers(key: &str) -> &'static str {
    match key {
        "command" => "`exec`",
        "via_vip" => "`tcp`",
        _ => "`http_get` and `https_get`",
    }
}

/// One key of a check block, with where it was written.
#[derive(Clone)]
struct Setting<'n> {
    key: &'n str,
    node: &'n Node,
    line: usize,
    path: String,
    /// Comes from the service's block into a backend's (already reported there).
    inherited: bool,
}

/// The settings of the check block `f`, unknown keys reported (and left out); None
/// (reported) when it is not a mapping.
fn settings<'n>(f: &Field<'n, '_>, d: &mut Diags) -> Option<Vec<Setting<'n>>> {
    let path = f.path();
    let what = ("a check (a mapping with `type`, ...)", None);
    let block = Fields::of(f, &path, CHECK_FIELDS, what, d)?;
    Some(
        block
            .entries()
            .iter()
            .filter(|e| CHECK_FIELDS.contains(&e.key.as_str()))
            .map(|e| Setting {
                key: &e.key,
                node: &e.value,
                line: e.line,
                path: join_key(&path, &e.key),
                inherited: false,
            })
            .collect(),
    )
}

/// The value of `s`, or None, reported unless the setting was inherited (then it was reported
/// in the service's block).
fn report<T>(d: &mut Diags, s: &Setting, r: Result<T, String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(message) => {
            if !s.inherited {
                d.at(s.line, &s.path, message);
            }
            None
        }
    }
}

/// A string that is not blank.
fn text(n: &Node) -> Result<String, String> {
    match string(n)? {
        s if s.trim().is_empty() => Err("the string is empty".to_string()),
        s => Ok(s),
    }
}

fn check_duration(n: &Node, key: &str, nonzero: bool) -> Result<Duration, String> {
    match duration(n)? {
        t if nonzero && t.is_zero() => Err(format!("`{key}` must be longer than 0")),
        t => Ok(t),
    }
}

/// A text setting that `ok` accepts once `normal` made it canonical; else "`text` is not
/// `what`".
fn text_that(
    n: &Node,
    normal: fn(String) -> String,
    ok: fn(&str) -> bool,
    what: &str,
) -> Result<String, String> {
    let s = normal(text(n)?);
    if ok(&s) {
        Ok(s)
    } else {
        Err(format!("`{}` is not {what}", shown(&s)))
    }
}

fn no_spaces(s: &str) -> bool {
    !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn http_path(n: &Node) -> Result<String, String> {
    let ok = |p: &str| p.starts_with('/') && no_spaces(p);
    text_that(
        n,
        |s| s,
        ok,
        "a path: it must start with `/` and have no spaces",
    )
}

fn digest(n: &Node) -> Result<String, String> {
    let normal = |s: String| s.trim().to_ascii_lowercase();
    let ok = |s: &str| s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit());
    let what = "an MD5 digest (32 hex digits; `lb-ctl genhash` prints it)";
    text_that(n, normal, ok, what)
}

fn host(n: &Node) -> Result<String, String> {
    text_that(n, |s| s, no_spaces, "a host name (no spaces)")
}

fn kind(n: &Node) -> Result<CheckKind, String> {
    choice(
        n,
        "a check type",
        "`http_get`, `https_get`, `tcp` or `exec`",
        CheckKind::from_name,
    )
}

/// Builds a check from `list` (later settings win). `path` and `line` are the block's (for the
/// missing `type`); `service_port` is the port of the backends. None when anything is wrong
/// (reported, except for inherited settings).
fn build(
    list: Vec<Setting>,
    (path, line): (&str, usize),
    service_port: Option<u16>,
    d: &mut Diags,
) -> Option<CheckConfig> {
    let mut by_key: BTreeMap<&str, Setting> = BTreeMap::new();
    for s in list {
        by_key.insert(s.key, s);
    }
    let type_setting = by_key.remove("type");
    let kind = match &type_setting {
        None => {
            d.at(
                line,
                path,
                "missing required field `type` (http_get, https_get, tcp or exec)",
            );
            None
        }
        Some(s) => report(d, s, kind(s.node)),
    };
    // With no valid type, the other keys are still checked (as if it took them all).
    let type_ok = kind.is_some();
    let type_inherited = type_setting.as_ref().is_some_and(|s| s.inherited);
    let mut c = CheckConfig::new(kind.unwrap_or(CheckKind::HttpGet));
    let kind = c.kind;
    let mut ok = type_ok;
    for (key, s) in &by_key {
        if type_ok && !applies(key, kind) {
            // Inherited keys of another type are dropped: the backend changed the type.
            if !s.inherited || type_inherited {
                let message = format!(
                    "`{key}` applies to {} checks only, not to `{}`",
                    takers(key),
                    kind.as_str()
                );
                report::<()>(d, s, Err(message));
                ok = false;
            }
            continue;
        }
        let n = s.node;
        let good = match *key {
            "path" => report(d, s, http_path(n)).map(|p| c.path = p),
            "status" => status(d, s).map(|v| c.status = v),
            "digest" => report(d, s, digest(n)).map(|v| c.digest = Some(v)),
            "host" => report(d, s, host(n)).map(|h| c.host = Some(h)),
            "port" => report(d, s, integer(n, 1, u16::MAX.into())).map(|p| c.port = Some(p as u16)),
            "command" => report(d, s, text(n)).map(|v| c.command = Some(v)),
            "via_vip" => report(d, s, boolean(n)).map(|v| c.via_vip = v),
            "interval" => report(d, s, check_duration(n, key, true)).map(|t| c.interval = t),
            "timeout" => report(d, s, check_duration(n, key, true)).map(|t| c.timeout = t),
            "retry_delay" => report(d, s, check_duration(n, key, false)).map(|t| c.retry_delay = t),
            "warmup" => report(d, s, check_duration(n, key, false)).map(|t| c.warmup = t),
            "retries" => report(d, s, u32_value(n, 1)).map(|v| c.retries = v),
            "rise" => report(d, s, u32_value(n, 1)).map(|v| c.rise = v),
            "alpha" => report(d, s, boolean(n)).map(|v| c.alpha = v),
            _ => Some(()),
        };
        ok &= good.is_some();
    }
    if !ok {
        return None;
    }
    if kind == CheckKind::Exec && c.command.is_none() {
        d.at(line, path, "an `exec` check needs `command`");
        return None;
    }
    if kind != CheckKind::Exec && c.port.is_none() && service_port == Some(0) {
        d.at(
            line,
            path,
            "the service takes every port (port 0): give the check a `port`",
        );
        return None;
    }
    Some(c)
}

fn status(d: &mut Diags, s: &Setting) -> Option<Vec<u16>> {
    let items: Vec<&Node> = match &s.node.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Int(_) => vec![s.node],
        _ => {
            let message = format!(
                "expected a list of HTTP status codes such as [200], found {}",
                s.node.describe()
            );
            return report(d, s, Err(message));
        }
    };
    if items.is_empty() {
        let message = "the list is empty; give at least one status code".to_string();
        return report(d, s, Err(message));
    }
    let mut out = Vec::new();
    for (i, v) in items.iter().enumerate() {
        match v.value {
            Value::Int(n) if (100..=599).contains(&n) => out.push(n as u16),
            _ => {
                if !s.inherited {
                    d.at(
                        s.line,
                        &join_index(&s.path, i),
                        format!(
                            "expected an HTTP status code (100..=599), found {}",
                            v.describe()
                        ),
                    );
                }
                return None;
            }
        }
    }
    Some(out)
}

/// Checks the health fields of the service `service` whose backends are `backends` (None when
/// some were invalid), with the `check:` of each backend by index.
pub(super) fn check_health(
    service: &Fields,
    backend_checks: Vec<BackendCheck>,
    backends: Option<&[BackendConfig]>,
    vip: Option<IpAddr>,
    port: Option<u16>,
    d: &mut Diags,
) -> Option<Health> {
    let mut ok = true;
    let mut h = Health::default();

    let service_settings = match service.optional("check") {
        Some(f) => {
            let list = settings(&f, d);
            match &list {
                Some(list) => match build(list.clone(), (&f.path(), f.line), port, d) {
                    Some(c) => h.check = Some(c),
                    None => ok = false,
                },
                None => ok = false,
            }
            list
        }
        None => None,
    };

    for BackendCheck { index, node, line } in backend_checks {
        let path = join_key(
            &join_index(&join_key(service.path, "backends"), index),
            "check",
        );
        let f = Field::at(node, line, &path);
        let Some(own) = settings(&f, d) else {
            ok = false;
            continue;
        };
        let mut merged: Vec<Setting> = service_settings
            .iter()
            .flatten()
            .map(|s| Setting {
                inherited: true,
                ..s.clone()
            })
            .collect();
        merged.extend(own);
        match build(merged, (&f.path(), f.line), port, d) {
            Some(c) => {
                if let Some(addr) = backends.and_then(|b| b.get(index)).map(|b| b.address) {
                    h.backend_checks.insert(addr, c);
                }
            }
            None => ok = false,
        }
    }

    // A via-VIP check sends its SYN to the backend's MAC: only direct-routing backends have one.
    for (i, b) in backends.into_iter().flatten().enumerate() {
        let tunnel = matches!(b.forward, crate::config::Forwarding::Tunnel(_));
        if tunnel && h.check_for(b.address).is_some_and(|c| c.via_vip) {
            d.at(
                b.line,
                &join_index(&join_key(service.path, "backends"), i),
                format!(
                    "{} is a tunnel backend (`forward: tunnel`): a `via_vip` check reaches a \
                     backend at its MAC on the director's link, which a tunnel backend does \
                     not have; give this backend its own check without `via_vip`",
                    b.address
                ),
            );
            ok = false;
        }
    }

    let sorry = service.optional("sorry_server").map(|f| {
        let r = address(f.node, "a sorry server").and_then(|addr| {
            same_family(addr, vip, "a sorry server")?;
            if Some(addr) == vip {
                Err(format!(
                    "{addr} is the service's VIP; a sorry server must be a real server"
                ))
            } else if backends.is_some_and(|b| b.iter().any(|b| b.address == addr)) {
                Err(format!(
                    "{addr} is also a backend of this service; a sorry server is used when \
                     every backend is down"
                ))
            } else {
                Ok(addr)
            }
        });
        d.ok(&f, r)
    });
    match sorry {
        Some(None) => ok = false,
        other => h.sorry_server = other.flatten(),
    }

    match service.or("inhibit_on_failure", false, d, boolean) {
        Some(b) => h.inhibit_on_failure = b,
        None => ok = false,
    }

    let mut number = |key: &str, min: u32, d: &mut Diags| -> Option<u32> {
        let f = service.optional(key)?;
        let r = u32_value(f.node, min).map_err(|_| {
            format!(
                "expected an integer ({min}..={}), found {}",
                u32::MAX,
                f.node.describe()
            )
        });
        let n = d.ok(&f, r);
        ok &= n.is_some();
        n
    };
    h.quorum = number("quorum", 1, d);
    h.hysteresis = number("hysteresis", 0, d).unwrap_or(0);
    if h.hysteresis > 0
        && let Some(f) = service.optional("hysteresis")
    {
        match h.quorum {
            None => {
                d.field(&f, "`hysteresis` needs a `quorum`");
                ok = false;
            }
            Some(q) if h.hysteresis >= q => {
                d.field(
                    &f,
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

    let mut hook = |key: &str| -> Option<String> {
        let f = service.optional(key)?;
        let r = d.ok(&f, command(f.node));
        ok &= r.is_some();
        r
    };
    h.notify_up = hook("notify_up");
    h.notify_down = hook("notify_down");

    ok.then_some(h)
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

    use crate::config::test_util::has;

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
            via_vip: false,
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(500),
            retries: 3,
            retry_delay: Duration::from_millis(100),
            rise: 2,
            warmup: Duration::from_secs(1),
            alpha: false,
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
    fn via_vip_is_a_key_of_tcp_checks_of_direct_routing_backends() {
        let c = ok(&svc(
            "    check: {type: tcp, via_vip: true}\n",
            "        check: {via_vip: false}\n",
        ));
        let h = &c.services[0].health;
        let want = CheckConfig {
            via_vip: true,
            ..CheckConfig::new(CheckKind::Tcp)
        };
        assert_eq!(h.check.as_ref(), Some(&want));
        let b2 = "10.0.0.2".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(h.check_for(b2), Some(&CheckConfig::new(CheckKind::Tcp)));
        // Another type, or not a boolean.
        let d = errs(&svc("    check: {type: http_get, via_vip: true}\n", ""));
        has(
            &d,
            5,
            "services[0].check.via_vip",
            "applies to `tcp` checks only",
        );
        let d = errs(&svc("    check: {type: tcp, via_vip: yes please}\n", ""));
        has(
            &d,
            5,
            "services[0].check.via_vip",
            "expected `true` or `false`",
        );
        // A backend that switches to http drops the inherited key.
        ok(&svc(
            "    check: {type: tcp, via_vip: true}\n",
            "        check: {type: http_get}\n",
        ));
        // A tunnel backend has no MAC on the director's link.
        let d = errs(&svc(
            "    check: {type: tcp, via_vip: true}\n",
            "        forward: tunnel\n        tunnel: {type: ipip, source: 10.0.0.9}\n",
        ));
        has(&d, 8, "services[0].backends[1]", "a tunnel backend");
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
            "not a valid IPv4 or IPv6 address",
        );
        has(&d, 7, "services[0].hysteresis", "smaller than the quorum 2");
        // The VIP is IPv4 (10.0.0.100): an IPv6 sorry server is of the other family.
        let d = errs(&svc("    sorry_server: \"fd00::9\"\n", ""));
        has(
            &d,
            5,
            "services[0].sorry_server",
            "fd00::9 is an IPv6 address but the service's VIP 10.0.0.100 is IPv4; a sorry server \
             must have the VIP's family",
        );
        let d = errs(&svc("", "        chek: {type: tcp}\n"));
        has(
            &d,
            8,
            "services[0].backends[1].chek",
            "unknown field `chek`",
        );
    }

    #[test]
    fn alpha_at_service_and_backend_level() {
        let c = ok("services:
  - name: web
    vip: 192.168.58.133
    port: 80
    check: {type: tcp, alpha: true}
    backends:
      - address: 192.168.58.135
      - address: 192.168.58.136
        check: {alpha: false}
");
        let h = &c.services[0].health;
        assert!(h.check.as_ref().is_some_and(|c| c.alpha));
        let own = h.check_for("192.168.58.136".parse().unwrap());
        assert!(own.is_some_and(|c| !c.alpha && c.kind == CheckKind::Tcp));
        assert!(!CheckConfig::new(CheckKind::Tcp).alpha, "off by default");
        let e = errs(
            "services:
  - name: web
    vip: 192.168.58.133
    port: 80
    check: {type: tcp, alpha: yes}
    backends: []
",
        );
        has(
            &e,
            5,
            "services[0].check.alpha",
            "expected `true` or `false`",
        );
    }
}
