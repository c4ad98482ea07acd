//! The `vrrp:` list of the service file: VRRP instances (keepalived's `vrrp_instance`), each
//! holding virtual addresses on an interface while it is master.
//!
//! ```yaml
//! vrrp:
//!   - name: VI_1                      # unique, required; 1-32 of [A-Za-z0-9_.-]
//!     interface: eth0                 # required
//!     virtual_router_id: 51           # required, 1-255; unique per interface
//!     priority: 150                   # 1-254, 255 = address owner; default 100
//!     advert_interval: 1s             # v2: whole seconds 1s-255s; v3: 10ms-40950ms in 10 ms
//!     virtual_addresses: [192.168.58.133/32]   # required; `/len` optional (default /32)
//!     preempt: true                   # default true
//!     preempt_delay: 0s               # default 0s
//!     version: 2                      # 2 | 3; default 2
//!     auth_pass: "1111"               # v2 only, optional, 1-8 characters (auth_type PASS)
//!     unicast_peers: []               # addresses; empty = multicast 224.0.0.18
//!     garp_count: 5                   # gratuitous ARPs per address on becoming master
//!     garp_delay: 1s                  # between them
//!     notify_master: /usr/local/bin/master.sh   # run by /bin/sh -c on entering the state
//!     notify_backup: /usr/local/bin/backup.sh
//!     notify_fault: /usr/local/bin/fault.sh
//! ```
//!
//! This module is a child of `validate` and uses its helpers ([`Diags`], [`Field`], ...).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

use super::{
    Diags, Field, check_address, check_name, describe, invalid_string, join_index, join_key, shown,
    strip_unknown, take,
};
use crate::config::parse_duration;
use crate::vrrp::packet::Version;

/// One entry of `vrrp:`, every default filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpConfig {
    pub name: String,
    pub interface: String,
    pub virtual_router_id: u8,
    /// 1-254; 255 = the address owner.
    pub priority: u8,
    pub advert_interval: Duration,
    /// Address and prefix length, in file order.
    pub virtual_addresses: Vec<(Ipv4Addr, u8)>,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub version: Version,
    /// v2 simple-password authentication (keepalived's `auth_type PASS`).
    pub auth_pass: Option<String>,
    /// Send adverts to these instead of multicast (and accept unicast ones from them).
    pub unicast_peers: Vec<Ipv4Addr>,
    pub garp_count: u32,
    pub garp_delay: Duration,
    pub notify_master: Option<String>,
    pub notify_backup: Option<String>,
    pub notify_fault: Option<String>,
    /// 1-based line of the entry.
    pub line: usize,
}

pub const DEFAULT_PRIORITY: u8 = 100;
pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_GARP_COUNT: u32 = 5;
pub const DEFAULT_GARP_DELAY: Duration = Duration::from_secs(1);
const MAX_GARP_COUNT: i64 = 100;
const MAX_PREEMPT_DELAY: Duration = Duration::from_secs(1000);

const FIELDS: &[&str] = &[
    "name",
    "interface",
    "virtual_router_id",
    "priority",
    "advert_interval",
    "virtual_addresses",
    "preempt",
    "preempt_delay",
    "version",
    "auth_pass",
    "unicast_peers",
    "garp_count",
    "garp_delay",
    "notify_master",
    "notify_backup",
    "notify_fault",
];

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawVrrp {
    name: Field<String>,
    interface: Field<String>,
    virtual_router_id: Field<i64>,
    priority: Field<i64>,
    advert_interval: Field<String>,
    virtual_addresses: Field<Vec<Field<String>>>,
    preempt: Field<bool>,
    preempt_delay: Field<String>,
    version: Field<i64>,
    auth_pass: Field<String>,
    unicast_peers: Field<Vec<Field<String>>>,
    garp_count: Field<i64>,
    garp_delay: Field<String>,
    notify_master: Field<String>,
    notify_backup: Field<String>,
    notify_fault: Field<String>,
}

/// Checks the `vrrp:` value; `Some(list)` when valid (empty when absent).
pub(super) fn check_vrrp(field: Field<Value>, d: &mut Diags) -> Option<Vec<VrrpConfig>> {
    let list = match field {
        Field::Absent | Field::Null => return Some(Vec::new()),
        Field::Value(Value::Sequence(list)) => list,
        Field::Value(v) | Field::Invalid(v) => {
            d.field(
                "vrrp",
                format!("expected a list of VRRP instances, found {}", describe(&v)),
            );
            return None;
        }
    };
    let mut out = Vec::new();
    let mut complete = true;
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut vrids: HashMap<(String, u8), usize> = HashMap::new();
    let mut addresses: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, value) in list.into_iter().enumerate() {
        let path = join_index("vrrp", i);
        let line = d.line(&path);
        let mut map = match value {
            Value::Mapping(m) => m,
            other => {
                d.at(
                    line,
                    &path,
                    format!(
                        "expected a VRRP instance (a mapping with `name`, `interface`, \
                         `virtual_router_id`, `virtual_addresses`), found {}",
                        describe(&other)
                    ),
                );
                complete = false;
                continue;
            }
        };
        strip_unknown(&mut map, &path, FIELDS, d);
        let raw = match RawVrrp::deserialize(Value::Mapping(map)) {
            Ok(raw) => raw,
            Err(err) => {
                d.at(line, &path, err.to_string());
                complete = false;
                continue;
            }
        };
        match check_instance(&path, line, raw, d) {
            Some(v) => {
                if let Some(first) = names.insert(v.name.clone(), line) {
                    d.field(
                        &join_key(&path, "name"),
                        format!(
                            "duplicate VRRP instance name `{}` (first defined at line {first})",
                            v.name
                        ),
                    );
                    complete = false;
                }
                let key = (v.interface.clone(), v.virtual_router_id);
                if let Some(first) = vrids.insert(key, line) {
                    d.field(
                        &join_key(&path, "virtual_router_id"),
                        format!(
                            "virtual router {} on {} is already defined at line {first}; each \
                             interface needs distinct ids",
                            v.virtual_router_id, v.interface
                        ),
                    );
                    complete = false;
                }
                for (j, (addr, _)) in v.virtual_addresses.iter().enumerate() {
                    if let Some(first) = addresses.insert(*addr, line)
                        && first != line
                    {
                        d.field(
                            &join_index(&join_key(&path, "virtual_addresses"), j),
                            format!(
                                "{addr} is already a virtual address of the instance at line \
                                 {first}"
                            ),
                        );
                        complete = false;
                    }
                }
                out.push(v);
            }
            None => complete = false,
        }
    }
    complete.then_some(out)
}

fn check_instance(path: &str, line: usize, raw: RawVrrp, d: &mut Diags) -> Option<VrrpConfig> {
    let p = |key: &str| join_key(path, key);

    let name = take(d, &p("name"), raw.name, true, invalid_string).and_then(|name| {
        check_name(&name)
            .map_err(|msg| d.field(&p("name"), msg))
            .ok()
            .map(|()| name)
    });

    let interface = take(d, &p("interface"), raw.interface, true, invalid_string).and_then(|s| {
        if s.is_empty()
            || s.len() >= libc::IFNAMSIZ
            || s.contains(['/', ' ', '\t', ':'])
            || s == "."
            || s == ".."
        {
            d.field(
                &p("interface"),
                format!(
                    "`{}` is not an interface name (1-15 characters, no `/`, `:` or spaces)",
                    shown(&s)
                ),
            );
            None
        } else {
            Some(s)
        }
    });

    let vrid = take(
        d,
        &p("virtual_router_id"),
        raw.virtual_router_id,
        true,
        invalid_int("1..=255"),
    )
    .and_then(|n| in_range(d, &p("virtual_router_id"), n, 1, 255));

    let priority = match raw.priority {
        Field::Absent | Field::Null => Some(DEFAULT_PRIORITY),
        f => take(d, &p("priority"), f, false, invalid_int("1..=255")).and_then(|n| {
            if n == 0 {
                d.field(
                    &p("priority"),
                    "priority 0 is reserved (a master sends it when it stops); use 1..=254, \
                         or 255 for the address owner",
                );
                return None;
            }
            in_range(d, &p("priority"), n, 1, 255)
        }),
    };

    let version =
        match raw.version {
            Field::Absent | Field::Null => Some(Version::V2),
            f => take(d, &p("version"), f, false, invalid_int("2 or 3")).and_then(|n| {
                match u8::try_from(n).ok().and_then(Version::from_number) {
                    Some(v) => Some(v),
                    None => {
                        d.field(&p("version"), format!("version {n}: expected 2 or 3"));
                        None
                    }
                }
            }),
        };

    let interval_path = p("advert_interval");
    let advert_interval = match raw.advert_interval {
        Field::Absent | Field::Null => Some(DEFAULT_ADVERT_INTERVAL),
        f => duration(d, &interval_path, f),
    }
    .and_then(|t| {
        let ms = t.as_millis();
        match version {
            Some(Version::V2) if ms % 1000 != 0 || !(1000..=255_000).contains(&ms) => {
                d.field(
                    &interval_path,
                    format!(
                        "{ms} ms: version 2 advertises whole seconds, 1s to 255s (use \
                         `version: 3` for sub-second intervals)"
                    ),
                );
                None
            }
            Some(Version::V3) if ms % 10 != 0 || !(10..=40_950).contains(&ms) => {
                d.field(
                    &interval_path,
                    format!(
                        "{ms} ms: version 3 advertises centiseconds, 10ms to 40950ms in steps \
                         of 10ms"
                    ),
                );
                None
            }
            _ => Some(t),
        }
    });

    let va_path = p("virtual_addresses");
    let virtual_addresses = match take(d, &va_path, raw.virtual_addresses, true, |v| {
        format!("expected a list of addresses, found {}", describe(v))
    }) {
        None => None,
        Some(list) if list.is_empty() => {
            d.field(&va_path, "no virtual addresses; list at least one");
            None
        }
        Some(list) if list.len() > 255 => {
            d.field(&va_path, "more than 255 virtual addresses");
            None
        }
        Some(list) => {
            let mut out = Vec::new();
            let mut ok = true;
            for (j, f) in list.into_iter().enumerate() {
                let ap = join_index(&va_path, j);
                match take(d, &ap, f, true, invalid_string).and_then(|s| cidr(d, &ap, &s)) {
                    Some(a) if out.iter().any(|(x, _)| *x == a.0) => {
                        d.field(&ap, format!("{} is listed twice", a.0));
                        ok = false;
                    }
                    Some(a) => out.push(a),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
    };

    let preempt = match raw.preempt {
        Field::Absent | Field::Null => Some(true),
        f => take(d, &p("preempt"), f, false, |v| {
            format!("expected true or false, found {}", describe(v))
        }),
    };
    let preempt_delay = match raw.preempt_delay {
        Field::Absent | Field::Null => Some(Duration::ZERO),
        f => duration(d, &p("preempt_delay"), f).and_then(|t| {
            if t > MAX_PREEMPT_DELAY {
                d.field(&p("preempt_delay"), "at most 1000s");
                return None;
            }
            Some(t)
        }),
    };

    let auth_pass = match raw.auth_pass {
        Field::Absent | Field::Null => Some(None),
        f => take(d, &p("auth_pass"), f, false, invalid_string).and_then(|s| {
            if version == Some(Version::V3) {
                d.field(
                    &p("auth_pass"),
                    "version 3 has no authentication (RFC 5798); remove `auth_pass` or use \
                     `version: 2`",
                );
                None
            } else if s.is_empty() || s.len() > 8 || !s.is_ascii() {
                d.field(
                    &p("auth_pass"),
                    "a password of 1 to 8 ASCII characters (keepalived's auth_type PASS \
                     uses 8 at most)",
                );
                None
            } else {
                Some(Some(s))
            }
        }),
    };

    let peers_path = p("unicast_peers");
    let unicast_peers = match raw.unicast_peers {
        Field::Absent | Field::Null => Some(Vec::new()),
        f => take(d, &peers_path, f, false, |v| {
            format!("expected a list of addresses, found {}", describe(v))
        })
        .and_then(|list| {
            let mut out = Vec::new();
            let mut ok = true;
            for (j, f) in list.into_iter().enumerate() {
                let pp = join_index(&peers_path, j);
                match take(d, &pp, f, true, invalid_string).and_then(|s| {
                    check_address(&s, "a unicast peer")
                        .map_err(|m| d.field(&pp, m))
                        .ok()
                }) {
                    Some(a) if out.contains(&a) => {
                        d.field(&pp, format!("{a} is listed twice"));
                        ok = false;
                    }
                    Some(a) => out.push(a),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }),
    };

    let garp_count = match raw.garp_count {
        Field::Absent | Field::Null => Some(DEFAULT_GARP_COUNT),
        f => take(d, &p("garp_count"), f, false, invalid_int("0..=100"))
            .and_then(|n| in_range(d, &p("garp_count"), n, 0, MAX_GARP_COUNT))
            .map(u32::from),
    };
    let garp_delay = match raw.garp_delay {
        Field::Absent | Field::Null => Some(DEFAULT_GARP_DELAY),
        f => duration(d, &p("garp_delay"), f),
    };

    let mut hook = |key: &str, f: Field<String>| -> Option<Option<String>> {
        match f {
            Field::Absent | Field::Null => Some(None),
            f => take(d, &p(key), f, false, invalid_string).and_then(|s| {
                if s.trim().is_empty() {
                    d.field(&p(key), "an empty command");
                    None
                } else {
                    Some(Some(s))
                }
            }),
        }
    };
    let notify_master = hook("notify_master", raw.notify_master);
    let notify_backup = hook("notify_backup", raw.notify_backup);
    let notify_fault = hook("notify_fault", raw.notify_fault);

    Some(VrrpConfig {
        name: name?,
        interface: interface?,
        virtual_router_id: vrid?,
        priority: priority?,
        advert_interval: advert_interval?,
        virtual_addresses: virtual_addresses?,
        preempt: preempt?,
        preempt_delay: preempt_delay?,
        version: version?,
        auth_pass: auth_pass?,
        unicast_peers: unicast_peers?,
        garp_count: garp_count?,
        garp_delay: garp_delay?,
        notify_master: notify_master?,
        notify_backup: notify_backup?,
        notify_fault: notify_fault?,
        line,
    })
}

fn invalid_int(range: &'static str) -> impl FnOnce(&Value) -> String {
    move |v| format!("expected an integer ({range}), found {}", describe(v))
}

fn in_range(d: &mut Diags, path: &str, n: i64, min: i64, max: i64) -> Option<u8> {
    if (min..=max).contains(&n) {
        u8::try_from(n).ok()
    } else {
        d.field(path, format!("{n} is out of range ({min}..={max})"));
        None
    }
}

fn duration(d: &mut Diags, path: &str, f: Field<String>) -> Option<Duration> {
    take(d, path, f, false, |v| {
        format!(
            "expected a duration like `1s` or `200ms`, found {}",
            describe(v)
        )
    })
    .and_then(|s| parse_duration(&s).map_err(|e| d.field(path, e)).ok())
}

/// `a.b.c.d` or `a.b.c.d/len`.
fn cidr(d: &mut Diags, path: &str, s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => match l.parse::<u8>() {
            Ok(l) if l <= 32 => (a, l),
            _ => {
                d.field(
                    path,
                    format!("`{}`: the prefix length must be 0..=32", shown(s)),
                );
                return None;
            }
        },
        None => (s, 32),
    };
    check_address(addr, "a virtual address")
        .map_err(|m| d.field(path, m))
        .ok()
        .map(|a| (a, len))
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Diagnostic, parse};

    use super::*;

    fn ok(text: &str) -> Config {
        parse(text, "f.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn errs(text: &str) -> Vec<Diagnostic> {
        parse(text, "f.yaml").unwrap_err().diagnostics
    }

    fn has(diags: &[Diagnostic], line: usize, field: &str, contains: &str) {
        assert!(
            diags
                .iter()
                .any(|d| d.line == line && d.field == field && d.message.contains(contains)),
            "no {line}: {field}: ...{contains}... in {diags:#?}"
        );
    }

    const FULL: &str = "\
services: []
vrrp:
  - name: VI_1
    interface: eth0
    virtual_router_id: 51
    priority: 150
    advert_interval: 1s
    virtual_addresses: [192.168.58.133/32, 10.0.0.1]
    preempt: true
    preempt_delay: 0s
    version: 2
    auth_pass: \"1111\"
    unicast_peers: []
    garp_count: 5
    garp_delay: 1s
    notify_master: /usr/local/bin/master.sh
    notify_backup: /usr/local/bin/backup.sh
    notify_fault: /usr/local/bin/fault.sh
";

    #[test]
    fn full_instance() {
        let c = ok(FULL);
        assert_eq!(
            c.vrrp,
            vec![VrrpConfig {
                name: "VI_1".into(),
                interface: "eth0".into(),
                virtual_router_id: 51,
                priority: 150,
                advert_interval: Duration::from_secs(1),
                virtual_addresses: vec![
                    (Ipv4Addr::new(192, 168, 58, 133), 32),
                    (Ipv4Addr::new(10, 0, 0, 1), 32)
                ],
                preempt: true,
                preempt_delay: Duration::ZERO,
                version: Version::V2,
                auth_pass: Some("1111".into()),
                unicast_peers: vec![],
                garp_count: 5,
                garp_delay: Duration::from_secs(1),
                notify_master: Some("/usr/local/bin/master.sh".into()),
                notify_backup: Some("/usr/local/bin/backup.sh".into()),
                notify_fault: Some("/usr/local/bin/fault.sh".into()),
                line: 3,
            }]
        );
    }

    #[test]
    fn defaults_and_no_vrrp() {
        assert!(ok("services: []\n").vrrp.is_empty());
        let c = ok(
            "services: []\nvrrp:\n  - name: v\n    interface: eth0\n    \
                    virtual_router_id: 1\n    virtual_addresses: [10.1.1.1]\n",
        );
        let v = &c.vrrp[0];
        assert_eq!(
            (
                v.priority,
                v.version,
                v.advert_interval,
                v.preempt,
                v.garp_count
            ),
            (100, Version::V2, Duration::from_secs(1), true, 5)
        );
        let c = ok(
            "services: []\nvrrp:\n  - name: v\n    interface: eth0\n    \
                    virtual_router_id: 1\n    version: 3\n    advert_interval: 200ms\n    \
                    virtual_addresses: [10.1.1.1]\n    unicast_peers: [10.1.1.2]\n",
        );
        assert_eq!(c.vrrp[0].advert_interval, Duration::from_millis(200));
        assert_eq!(c.vrrp[0].unicast_peers, vec![Ipv4Addr::new(10, 1, 1, 2)]);
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = errs(
            "services: []
vrrp:
  - name: VI_1
    interface: eth0
    virtual_router_id: 0
    priority: 0
    advert_interval: 200ms
    virtual_addresses: [224.0.0.18, 10.0.0.1/40]
    auth_pass: \"123456789\"
    colour: red
  - name: VI_1
    interface: eth0
    virtual_router_id: 9
    version: 3
    auth_pass: x
    advert_interval: 5ms
    virtual_addresses: []
    garp_count: 1000
    unicast_peers: [nope]
",
        );
        has(&e, 5, "vrrp[0].virtual_router_id", "out of range (1..=255)");
        has(&e, 6, "vrrp[0].priority", "reserved");
        has(&e, 7, "vrrp[0].advert_interval", "whole seconds");
        has(&e, 8, "vrrp[0].virtual_addresses[0]", "multicast");
        has(&e, 8, "vrrp[0].virtual_addresses[1]", "prefix length");
        has(&e, 9, "vrrp[0].auth_pass", "1 to 8");
        has(&e, 10, "vrrp[0].colour", "unknown field");
        has(
            &e,
            15,
            "vrrp[1].auth_pass",
            "version 3 has no authentication",
        );
        has(&e, 16, "vrrp[1].advert_interval", "centiseconds");
        has(&e, 17, "vrrp[1].virtual_addresses", "at least one");
        has(&e, 18, "vrrp[1].garp_count", "out of range");
        has(&e, 19, "vrrp[1].unicast_peers[0]", "not a valid IPv4");
    }

    #[test]
    fn duplicates_across_instances() {
        let e = errs(
            "services: []
vrrp:
  - name: a
    interface: eth0
    virtual_router_id: 1
    virtual_addresses: [10.0.0.1]
  - name: a
    interface: eth0
    virtual_router_id: 1
    virtual_addresses: [10.0.0.1]
",
        );
        has(&e, 7, "vrrp[1].name", "duplicate VRRP instance name");
        has(
            &e,
            9,
            "vrrp[1].virtual_router_id",
            "already defined at line 3",
        );
        has(&e, 10, "vrrp[1].virtual_addresses[0]", "line 3");
        let e = errs("services: []\nvrrp: 5\n");
        has(&e, 2, "vrrp", "expected a list of VRRP instances");
    }
}
