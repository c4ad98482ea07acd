//! What VRRP instances follow besides their peers (keepalived's `vrrp_script`,
//! `track_script`, `track_interface`, and `track_service`, which keepalived does not have), and
//! the instances that move together (keepalived's `vrrp_sync_group`).
//!
//! ```yaml
//! vrrp_scripts:                       # top level, keepalived's vrrp_script
//!   - name: chk_web                   # unique, required
//!     script: "curl -sf http://127.0.0.1/"   # required; /bin/sh -c, exit 0 = success
//!     interval: 1s                    # default 1s
//!     timeout: 1s                     # default: the interval
//!     weight: 0                       # -254..=254; default 0 (failure = fault)
//!     rise: 1                         # consecutive successes to succeed again; default 1
//!     fall: 1                         # consecutive failures to fail; default 1
//! vrrp_sync_groups:                   # top level, keepalived's vrrp_sync_group
//!   - name: G1
//!     instances: [VI_1, VI_2]         # at least two; an instance is in one group at most
//! vrrp:
//!   - name: VI_1
//!     track_script: [chk_web]         # or {name: chk_web, weight: -20} (over the script's)
//!     track_interface: [eth1]         # or {name: eth1, weight: -20}; default weight 0
//!     track_service: [web]            # a service of this file; or {name: web, weight: -50}
//!     ...
//! ```
//!
//! Weights as in keepalived: 0, a failure is a fault (the instance leaves master and sends
//! nothing); above 0, the priority rises by it while the tracked thing succeeds; below 0, it
//! falls by it while the thing fails. The result stays in 1..=254; an address owner (255)
//! keeps 255. A service fails when none of its backends is up with a weight above 0.

use std::collections::HashMap;
use std::time::Duration;

use super::fields::{Diags, Field, Fields, command, duration, integer, name, string, u32_value};
use super::tree::{Value, join_key};
use super::vrrp::VrrpConfig;

/// One entry of `vrrp_scripts:`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VrrpScript {
    pub name: String,
    /// Run by `/bin/sh -c`; exit status 0 is a success.
    pub script: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// -254..=254.
    pub weight: i32,
    /// Consecutive successes before a failed script succeeds again (at least 1).
    pub rise: u32,
    /// Consecutive failures before a succeeding script fails (at least 1).
    pub fall: u32,
    pub line: usize,
}

/// One entry of `vrrp_sync_groups:`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SyncGroup {
    pub name: String,
    /// Names of `vrrp:` instances, in file order.
    pub instances: Vec<String>,
    /// 1-based line of each of `instances`.
    pub lines: Vec<usize>,
    pub line: usize,
}

/// One entry of an instance's `track_script`, `track_interface` or `track_service`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Track {
    pub name: String,
    /// The entry's own weight; None: the script's (`track_script`) or 0.
    pub weight: Option<i32>,
    /// 1-based line of the entry.
    pub line: usize,
}

pub const MAX_WEIGHT: i32 = 254;
const SCRIPT_FIELDS: &[&str] = &[
    "name", "script", "interval", "timeout", "weight", "rise", "fall",
];
const GROUP_FIELDS: &[&str] = &["name", "instances"];
const TRACK_FIELDS: &[&str] = &["name", "weight"];

fn weight(n: &super::tree::Node) -> Result<i32, String> {
    integer(n, (-MAX_WEIGHT).into(), MAX_WEIGHT.into()).map(|w| w as i32)
}

/// The list at `key` of `f`, each item read by `item`; an empty list when absent, None when
/// anything is wrong (reported).
fn list_of<T>(
    f: Option<Field>,
    what: &str,
    d: &mut Diags,
    mut item: impl FnMut(&Field, &mut Diags) -> Option<T>,
) -> Option<Vec<T>> {
    let Some(f) = f else {
        return Some(Vec::new());
    };
    let path = f.path();
    let Some(items) = f.items(&path) else {
        d.field(
            &f,
            format!("expected a list of {what}, found {}", f.node.describe()),
        );
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for i in items {
        match item(&i, d) {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `vrrp_scripts:`; names unique.
pub(super) fn scripts(top: &Fields, d: &mut Diags) -> Option<Vec<VrrpScript>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    list_of(top.optional("vrrp_scripts"), "scripts", d, |item, d| {
        let path = item.path();
        let what = ("a script (a mapping with `name` and `script`)", None);
        let f = Fields::of(item, &path, SCRIPT_FIELDS, what, d)?;
        let name = f.req("name", d, name);
        let script = f.req("script", d, command);
        let interval = f.or("interval", Duration::from_secs(1), d, |n| {
            match duration(n)? {
                t if t.is_zero() => Err("`interval` must be longer than 0".to_string()),
                t => Ok(t),
            }
        });
        let timeout = f.or("timeout", None, d, |n| match duration(n)? {
            t if t.is_zero() => Err("`timeout` must be longer than 0".to_string()),
            t => Ok(Some(t)),
        });
        let w = f.or("weight", 0, d, weight);
        let rise = f.or("rise", 1, d, |n| u32_value(n, 1));
        let fall = f.or("fall", 1, d, |n| u32_value(n, 1));
        let name = name?;
        if let Some(first) = seen.insert(name.clone(), item.line) {
            if let Some(nf) = f.get("name") {
                d.field(
                    &nf,
                    format!("duplicate script name `{name}` (first defined at line {first})"),
                );
            }
            return None;
        }
        let interval = interval?;
        Some(VrrpScript {
            name,
            script: script?,
            interval,
            timeout: timeout?.unwrap_or(interval),
            weight: w?,
            rise: rise?,
            fall: fall?,
            line: item.line,
        })
    })
}

/// `vrrp_sync_groups:`; names unique, each with two instances or more (checked against the
/// instances by [`cross_check`]).
pub(super) fn groups(top: &Fields, d: &mut Diags) -> Option<Vec<SyncGroup>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    list_of(
        top.optional("vrrp_sync_groups"),
        "sync groups",
        d,
        |item, d| {
            let path = item.path();
            let what = ("a sync group (a mapping with `name` and `instances`)", None);
            let f = Fields::of(item, &path, GROUP_FIELDS, what, d)?;
            let name = f.req("name", d, name);
            let instances = f.required("instances", d).and_then(|l| {
                let names = list_of(Some(l), "instance names", d, |i, d| {
                    d.ok(i, string(i.node)).map(|s| (s, i.line))
                })?;
                if names.len() < 2 {
                    d.field(&l, "a sync group needs at least two instances");
                    return None;
                }
                Some(names)
            });
            let name = name?;
            if let Some(first) = seen.insert(name.clone(), item.line) {
                if let Some(nf) = f.get("name") {
                    d.field(
                        &nf,
                        format!(
                            "duplicate sync group name `{name}` (first defined at line {first})"
                        ),
                    );
                }
                return None;
            }
            let (instances, lines) = instances?.into_iter().unzip();
            Some(SyncGroup {
                name,
                instances,
                lines,
                line: item.line,
            })
        },
    )
}

/// An instance's `key` list (`track_script`, ...): names, or `{name, weight}` mappings.
pub(super) fn tracks(f: &Fields, key: &str, d: &mut Diags) -> Option<Vec<Track>> {
    let what = "names (or mappings with `name` and `weight`)";
    list_of(f.optional(key), what, d, |item, d| {
        if let Value::Str(_) = item.node.value {
            let n = d.ok(item, name(item.node))?;
            return Some(Track {
                name: n,
                weight: None,
                line: item.line,
            });
        }
        let path = item.path();
        let what = ("a name, or a mapping with `name` and `weight`", None);
        let t = Fields::of(item, &path, TRACK_FIELDS, what, d)?;
        let n = t.req("name", d, name);
        let w = t.or("weight", None, d, |n| weight(n).map(Some));
        Some(Track {
            name: n?,
            weight: w?,
            line: item.line,
        })
    })
}

/// What only the whole file can tell: every tracked script and service exists, every group
/// names existing instances and no instance is in two groups. `services` are the names of
/// the file's services (None when some service was invalid: then none is unknown).
pub(super) fn cross_check(
    vrrp: &[VrrpConfig],
    scripts: &[VrrpScript],
    groups: &[SyncGroup],
    services: Option<&[String]>,
    d: &mut Diags,
) -> bool {
    let mut ok = true;
    for (i, v) in vrrp.iter().enumerate() {
        for (j, t) in v.track_script.iter().enumerate() {
            if !scripts.iter().any(|s| s.name == t.name) {
                let known: Vec<&str> = scripts.iter().map(|s| s.name.as_str()).collect();
                d.at(
                    t.line,
                    &format!("vrrp[{i}].track_script[{j}]"),
                    format!(
                        "no script `{}` in `vrrp_scripts:` (defined: {}); define it there or \
                         remove it",
                        t.name,
                        listed(&known)
                    ),
                );
                ok = false;
            }
        }
        for (j, t) in v.track_service.iter().enumerate() {
            if services.is_some_and(|s| !s.contains(&t.name)) {
                d.at(
                    t.line,
                    &format!("vrrp[{i}].track_service[{j}]"),
                    format!(
                        "no service `{}` in this file's `services:`; a tracked service must be \
                         one of them",
                        t.name
                    ),
                );
                ok = false;
            }
        }
    }
    let mut member_of: HashMap<&str, &str> = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        for (j, inst) in g.instances.iter().enumerate() {
            let field = join_key(
                &format!("vrrp_sync_groups[{i}]"),
                &format!("instances[{j}]"),
            );
            if !vrrp.iter().any(|v| &v.name == inst) {
                let line = g.lines.get(j).copied().unwrap_or(g.line);
                d.at(
                    line,
                    &field,
                    format!("no VRRP instance `{inst}` in `vrrp:`"),
                );
                ok = false;
            } else if let Some(other) = member_of.insert(inst, &g.name) {
                let message = if other == g.name {
                    format!("`{inst}` is listed twice")
                } else {
                    format!(
                        "`{inst}` is already in sync group `{other}`; an instance belongs to one \
                         group at most"
                    )
                };
                d.at(g.lines.get(j).copied().unwrap_or(g.line), &field, message);
                ok = false;
            }
        }
    }
    ok
}

fn listed(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{Diagnostic, parse};

    use super::*;

    fn errs(text: &str) -> Vec<Diagnostic> {
        parse(text, "f.yaml").unwrap_err().diagnostics
    }

    use crate::config::test_util::has;

    const FULL: &str = "\
services:
  - name: web
    vip: 192.168.58.133
    port: 80
    backends: []
vrrp_scripts:
  - name: chk_web
    script: \"curl -sf http://127.0.0.1/\"
    interval: 2s
    weight: -20
    rise: 2
    fall: 3
  - name: chk_zero
    script: /bin/true
vrrp_sync_groups:
  - name: G1
    instances: [VI_1, VI_2]
vrrp:
  - name: VI_1
    interface: eth0
    virtual_router_id: 51
    virtual_addresses: [192.168.58.133]
    garp_master_refresh: 60s
    garp_master_refresh_repeat: 2
    track_script: [chk_web, {name: chk_zero, weight: 10}]
    track_interface: [eth1, {name: eth2, weight: -30}]
    track_service: [{name: web, weight: -50}]
  - name: VI_2
    interface: eth0
    virtual_router_id: 52
    virtual_addresses: [192.168.58.134]
";

    #[test]
    fn every_field_is_read() {
        let c = parse(FULL, "f.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.vrrp_scripts[0],
            VrrpScript {
                name: "chk_web".into(),
                script: "curl -sf http://127.0.0.1/".into(),
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(2),
                weight: -20,
                rise: 2,
                fall: 3,
                line: 7,
            }
        );
        let z = &c.vrrp_scripts[1];
        assert_eq!(
            (z.interval, z.timeout, z.weight, z.rise, z.fall),
            (Duration::from_secs(1), Duration::from_secs(1), 0, 1, 1)
        );
        assert_eq!(c.vrrp_sync_groups[0].name, "G1");
        assert_eq!(c.vrrp_sync_groups[0].instances, ["VI_1", "VI_2"]);
        let v = &c.vrrp[0];
        assert_eq!(v.garp_master_refresh, Duration::from_secs(60));
        assert_eq!(v.garp_master_refresh_repeat, 2);
        let named = |l: &[Track]| -> Vec<(String, Option<i32>)> {
            l.iter().map(|t| (t.name.clone(), t.weight)).collect()
        };
        assert_eq!(
            named(&v.track_script),
            [("chk_web".into(), None), ("chk_zero".into(), Some(10))]
        );
        assert_eq!(
            named(&v.track_interface),
            [("eth1".into(), None), ("eth2".into(), Some(-30))]
        );
        assert_eq!(named(&v.track_service), [("web".into(), Some(-50))]);
        // Defaults.
        let w = &c.vrrp[1];
        assert_eq!(
            (w.garp_master_refresh, w.garp_master_refresh_repeat),
            (Duration::ZERO, 1)
        );
        assert!(w.track_script.is_empty() && w.track_service.is_empty());
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = errs(
            "services:
  - name: web
    vip: 192.168.58.133
    port: 80
    backends: []
vrrp_scripts:
  - name: chk
    script: \"\"
    weight: 300
    rise: 0
  - name: chk
    script: /bin/true
vrrp_sync_groups:
  - name: G1
    instances: [VI_1, VI_9]
  - name: G2
    instances:
      - VI_1
      - VI_2
  - name: G3
    instances: [VI_2]
vrrp:
  - name: VI_1
    interface: eth0
    virtual_router_id: 51
    virtual_addresses: [192.168.58.133]
    track_script: [nope]
    track_service: [{name: db, weight: 1}]
    track_interface: [{name: eth1, weight: -255}]
    garp_master_refresh_repeat: 0
  - name: VI_2
    interface: eth0
    virtual_router_id: 52
    virtual_addresses: [192.168.58.134]
",
        );
        has(&e, 8, "vrrp_scripts[0].script", "non-empty");
        has(&e, 9, "vrrp_scripts[0].weight", "out of range (-254..=254)");
        has(&e, 10, "vrrp_scripts[0].rise", "out of range");
        has(&e, 11, "vrrp_scripts[1].name", "duplicate script name");
        has(&e, 21, "vrrp_sync_groups[2].instances", "at least two");
        has(&e, 29, "vrrp[0].track_interface[0].weight", "out of range");
        has(&e, 30, "vrrp[0].garp_master_refresh_repeat", "out of range");
        // The whole-file checks run once every entry is valid.
        let e = errs(
            "services:
  - name: web
    vip: 192.168.58.133
    port: 80
    backends: []
vrrp_scripts:
  - name: chk
    script: /bin/true
vrrp_sync_groups:
  - name: G1
    instances: [VI_1, VI_9]
  - name: G2
    instances:
      - VI_2
      - VI_1
vrrp:
  - name: VI_1
    interface: eth0
    virtual_router_id: 51
    virtual_addresses: [192.168.58.133]
    track_script: [chk, nope]
    track_service: [{name: db, weight: 1}]
  - name: VI_2
    interface: eth0
    virtual_router_id: 52
    virtual_addresses: [192.168.58.134]
",
        );
        has(
            &e,
            11,
            "vrrp_sync_groups[0].instances[1]",
            "no VRRP instance `VI_9`",
        );
        has(
            &e,
            15,
            "vrrp_sync_groups[1].instances[1]",
            "already in sync group `G1`",
        );
        has(&e, 21, "vrrp[0].track_script[1]", "no script `nope`");
        has(&e, 22, "vrrp[0].track_service[0]", "no service `db`");
        assert_eq!(e.len(), 4, "{e:#?}");
    }
}
