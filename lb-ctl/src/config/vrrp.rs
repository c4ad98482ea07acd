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
//!     virtual_addresses: [192.168.58.133/32]   # required; `/len` optional (default /32, /128)
//!     preempt: true                   # default true
//!     preempt_delay: 0s               # default 0s
//!     version: 2                      # 2 | 3; default 2 (IPv4), 3 (IPv6; 2 is an error)
//!     auth_pass: "1111"               # v2 only, optional, 1-8 characters (auth_type PASS)
//!     unicast_peers: []               # addresses; empty = multicast 224.0.0.18 (ff02::12)
//!     garp_count: 5                   # gratuitous ARPs (IPv6: unsolicited neighbour
//!                                     # advertisements) per address on becoming master
//!     garp_delay: 1s                  # between them
//!     notify_master: /usr/local/bin/master.sh   # run by /bin/sh -c on entering the state
//!     notify_backup: /usr/local/bin/backup.sh
//!     notify_fault: /usr/local/bin/fault.sh
//!     garp_master_refresh: 0s         # while master, announce again every this; 0s = off
//!     garp_master_refresh_repeat: 1   # announcements per address at each refresh
//!     track_script: [chk_web]         # vrrp_track.rs: scripts, interfaces, services
//!     track_interface: [eth1]         # tracked; weight 0 = fault, else priority +-
//!     track_service: [web]
//! ```
//!
//! With `vrrp_scripts:` and `vrrp_sync_groups:` at the top level (`vrrp_track.rs`). On a
//! reload the daemon applies a changed list without restarting: an unchanged instance keeps
//! its state; a changed priority, interval, address list, tracking or hook takes effect in
//! place; a changed interface, virtual router id, version, password, peers or sync group
//! restarts that instance (a master hands over first); removed instances stop, new ones start.
//!
//! An instance is IPv4 or IPv6 (RFC 5798), by its virtual addresses: mixing families, an
//! IPv6 instance with `version: 2`, or a unicast peer of the other family is an error.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::fields::{Diags, Field, Fields, boolean, duration, integer, name, string};
use super::tree::join_key;
use super::vrrp_addr;
use super::vrrp_track::{self, Track};

/// One entry of `vrrp:`, every default filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpConfig {
    pub name: String,
    pub interface: String,
    pub virtual_router_id: u8,
    /// 1-254; 255 = the address owner.
    pub priority: u8,
    pub advert_interval: Duration,
    /// Address and prefix length, in file order; all of one family.
    pub virtual_addresses: Vec<(IpAddr, u8)>,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub version: Version,
    /// v2 simple-password authentication (keepalived's `auth_type PASS`).
    pub auth_pass: Option<String>,
    /// Send adverts to these instead of multicast (and accept unicast ones from them).
    pub unicast_peers: Vec<IpAddr>,
    pub garp_count: u32,
    pub garp_delay: Duration,
    pub notify_master: Option<String>,
    pub notify_backup: Option<String>,
    pub notify_fault: Option<String>,
    /// While master, gratuitous ARPs (unsolicited NAs) again every this; zero = off.
    pub garp_master_refresh: Duration,
    /// How many per address at each refresh (at least 1).
    pub garp_master_refresh_repeat: u32,
    /// Scripts of `vrrp_scripts:` whose result moves the priority or faults the instance.
    pub track_script: Vec<Track>,
    /// Interfaces whose state (up, with carrier) does the same.
    pub track_interface: Vec<Track>,
    /// Services of the file: one with no healthy backend counts as failed.
    pub track_service: Vec<Track>,
    /// 1-based line of the entry.
    pub line: usize,
}

pub const DEFAULT_PRIORITY: u8 = 100;
pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_GARP_COUNT: u32 = 5;
pub const DEFAULT_GARP_DELAY: Duration = Duration::from_secs(1);
const MAX_GARP_COUNT: i128 = 100;
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
    "garp_master_refresh",
    "garp_master_refresh_repeat",
    "track_script",
    "track_interface",
    "track_service",
];

/// The VRRP version of an instance (`version: 2 | 3`): RFC 3768 or RFC 5798.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }

    pub fn from_number(n: u8) -> Option<Version> {
        match n {
            2 => Some(Version::V2),
            3 => Some(Version::V3),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// Checks the `vrrp:` field; `Some(list)` when valid (empty when absent).
pub(super) fn check_vrrp(field: Option<Field>, d: &mut Diags) -> Option<Vec<VrrpConfig>> {
    let Some(field) = field else {
        return Some(Vec::new());
    };
    let Some(items) = field.items("vrrp") else {
        d.field(
            &field,
            format!(
                "expected a list of VRRP instances, found {}",
                field.node.describe()
            ),
        );
        return None;
    };
    let mut out = Vec::new();
    let mut complete = true;
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut vrids: HashMap<(String, u8), usize> = HashMap::new();
    let mut addresses: HashMap<IpAddr, usize> = HashMap::new();
    for item in items {
        let path = item.path();
        let line = item.line;
        let what = (
            "a VRRP instance (a mapping with `name`, `interface`, `virtual_router_id`, \
             `virtual_addresses`)",
            None,
        );
        let Some(f) = Fields::of(&item, &path, FIELDS, what, d) else {
            complete = false;
            continue;
        };
        let Some(v) = check_instance(&f, d) else {
            complete = false;
            continue;
        };
        let mut clash = |key: &str, message: String| {
            if let Some(field) = f.get(key) {
                d.field(&field, message);
            }
            complete = false;
        };
        if let Some(first) = names.insert(v.name.clone(), line) {
            clash(
                "name",
                format!(
                    "duplicate VRRP instance name `{}` (first defined at line {first})",
                    v.name
                ),
            );
        }
        if let Some(first) = vrids.insert((v.interface.clone(), v.virtual_router_id), line) {
            clash(
                "virtual_router_id",
                format!(
                    "virtual router {} on {} is already defined at line {first}; each interface \
                     needs distinct ids",
                    v.virtual_router_id, v.interface
                ),
            );
        }
        let va_path = join_key(&path, "virtual_addresses");
        let listed = f.get("virtual_addresses").and_then(|f| f.items(&va_path));
        for ((addr, _), item) in v.virtual_addresses.iter().zip(listed.into_iter().flatten()) {
            if let Some(first) = addresses.insert(*addr, line)
                && first != line
            {
                d.field(
                    &item,
                    format!("{addr} is already a virtual address of the instance at line {first}"),
                );
                complete = false;
            }
        }
        out.push(v);
    }
    complete.then_some(out)
}

fn check_instance(f: &Fields, d: &mut Diags) -> Option<VrrpConfig> {
    let name = f.req("name", d, name);
    let interface = f.req("interface", d, super::fields::interface);
    let vrid = f.req("virtual_router_id", d, |n| byte(n, 1, 255));
    let priority = f.or("priority", DEFAULT_PRIORITY, d, |n| {
        if matches!(n.value, super::tree::Value::Int(0)) {
            return Err(
                "priority 0 is reserved (a master sends it when it stops); use 1..=254, \
                        or 255 for the address owner"
                    .to_string(),
            );
        }
        byte(n, 1, 255)
    });
    let virtual_addresses = f.required("virtual_addresses", d).and_then(|list| {
        let addresses = addresses(&list, d, vrrp_addr::cidr)?;
        let message = match addresses.len() {
            0 => "no virtual addresses; list at least one",
            256.. => "more than 255 virtual addresses",
            _ => return one_family(&list, addresses, d),
        };
        d.field(&list, message);
        None
    });
    let ipv6 = matches!(virtual_addresses.as_deref(), Some([(IpAddr::V6(_), _), ..]));
    let default_version = if ipv6 { Version::V3 } else { Version::V2 };
    let version = f.or("version", default_version, d, |n| {
        let v = integer(n, i128::MIN, i128::MAX)
            .map_err(|_| format!("expected an integer (2 or 3), found {}", n.describe()))?;
        match u8::try_from(v).ok().and_then(Version::from_number) {
            None => Err(format!("version {v}: expected 2 or 3")),
            Some(Version::V2) if ipv6 => Err(
                "version 2 is IPv4 only (RFC 3768); an instance with IPv6 virtual addresses \
                 speaks version 3 (RFC 5798): set `version: 3` or leave it out"
                    .to_string(),
            ),
            Some(v) => Ok(v),
        }
    });
    let advert_interval = f.or("advert_interval", DEFAULT_ADVERT_INTERVAL, d, |n| {
        let t = duration(n)?;
        let ms = t.as_millis();
        match version {
            Some(Version::V2) if ms % 1000 != 0 || !(1000..=255_000).contains(&ms) => Err(format!(
                "{ms} ms: version 2 advertises whole seconds, 1s to 255s (use `version: 3` for \
                 sub-second intervals)"
            )),
            Some(Version::V3) if ms % 10 != 0 || !(10..=40_950).contains(&ms) => Err(format!(
                "{ms} ms: version 3 advertises centiseconds, 10ms to 40950ms in steps of 10ms"
            )),
            _ => Ok(t),
        }
    });
    let preempt = f.or("preempt", true, d, |n| {
        boolean(n).map_err(|_| format!("expected true or false, found {}", n.describe()))
    });
    let preempt_delay = f.or("preempt_delay", Duration::ZERO, d, |n| match duration(n)? {
        t if t > MAX_PREEMPT_DELAY => Err("at most 1000s".to_string()),
        t => Ok(t),
    });
    let auth_pass = f.or("auth_pass", None, d, |n| {
        let s = string(n)?;
        if version == Some(Version::V3) {
            Err(
                "version 3 has no authentication (RFC 5798); remove `auth_pass` or use \
                 `version: 2`"
                    .to_string(),
            )
        } else if s.is_empty() || s.len() > 8 || !s.is_ascii() {
            Err(
                "a password of 1 to 8 ASCII characters (keepalived's auth_type PASS uses 8 at \
                 most)"
                    .to_string(),
            )
        } else {
            Ok(Some(s))
        }
    });
    let unicast_peers = match f.optional("unicast_peers") {
        None => Some(Vec::new()),
        Some(list) => addresses(&list, d, |s| {
            let a = vrrp_addr::address(s, "a unicast peer")?;
            match virtual_addresses.as_deref() {
                Some([(v, _), ..]) if v.is_ipv4() != a.is_ipv4() => Err(format!(
                    "{a} is {} but the virtual addresses are {}: peers speak the instance's \
                     family",
                    vrrp_addr::family_name(&a),
                    vrrp_addr::family_name(v)
                )),
                _ => Ok((a, 0)),
            }
        })
        .map(|list| list.into_iter().map(|(a, _)| a).collect()),
    };
    let garp_count = f.or("garp_count", DEFAULT_GARP_COUNT, d, |n| {
        integer(n, 0, MAX_GARP_COUNT).map(|v| v as u32)
    });
    let garp_delay = f.or("garp_delay", DEFAULT_GARP_DELAY, d, duration);
    let mut hook = |key: &str| {
        f.or(key, None, d, |n| match string(n)? {
            s if s.trim().is_empty() => Err("an empty command".to_string()),
            s => Ok(Some(s)),
        })
    };
    let notify_master = hook("notify_master");
    let notify_backup = hook("notify_backup");
    let notify_fault = hook("notify_fault");
    let garp_master_refresh = f.or("garp_master_refresh", Duration::ZERO, d, duration);
    let garp_master_refresh_repeat = f.or("garp_master_refresh_repeat", 1, d, |n| {
        integer(n, 1, MAX_GARP_COUNT).map(|v| v as u32)
    });
    let track_script = vrrp_track::tracks(f, "track_script", d);
    let track_interface = vrrp_track::tracks(f, "track_interface", d);
    let track_service = vrrp_track::tracks(f, "track_service", d);

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
        garp_master_refresh: garp_master_refresh?,
        garp_master_refresh_repeat: garp_master_refresh_repeat?,
        track_script: track_script?,
        track_interface: track_interface?,
        track_service: track_service?,
        line: f.line,
    })
}

/// An integer in `min..=max` that fits a byte.
fn byte(n: &super::tree::Node, min: u8, max: u8) -> Result<u8, String> {
    integer(n, min.into(), max.into()).map(|v| v as u8)
}

/// The list of addresses `list`, each read by `parse` and listed once; None when anything is
/// wrong (reported at the item).
pub(super) fn addresses(
    list: &Field,
    d: &mut Diags,
    parse: impl Fn(&str) -> Result<(IpAddr, u8), String>,
) -> Option<Vec<(IpAddr, u8)>> {
    let path = list.path();
    let Some(items) = list.items(&path) else {
        d.field(
            list,
            format!(
                "expected a list of addresses, found {}",
                list.node.describe()
            ),
        );
        return None;
    };
    let mut out: Vec<(IpAddr, u8)> = Vec::new();
    let mut ok = true;
    for item in items {
        let r = string(item.node).and_then(|s| parse(&s)).and_then(|a| {
            if out.iter().any(|(x, _)| *x == a.0) {
                Err(format!("{} is listed twice", a.0))
            } else {
                Ok(a)
            }
        });
        match d.ok(&item, r) {
            Some(a) => out.push(a),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `addresses` if they are of one family; else the first of the other family is reported
/// at its item.
fn one_family(
    list: &Field,
    addresses: Vec<(IpAddr, u8)>,
    d: &mut Diags,
) -> Option<Vec<(IpAddr, u8)>> {
    let plain: Vec<IpAddr> = addresses.iter().map(|(a, _)| *a).collect();
    let Err((i, message)) = vrrp_addr::family_of(&plain) else {
        return Some(addresses);
    };
    match list
        .items(&list.path())
        .and_then(|items| items.into_iter().nth(i))
    {
        Some(item) => d.field(&item, message),
        None => d.field(list, message),
    }
    None
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use crate::config::{Config, Diagnostic, parse};

    use super::*;

    fn ok(text: &str) -> Config {
        parse(text, "f.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn errs(text: &str) -> Vec<Diagnostic> {
        parse(text, "f.yaml").unwrap_err().diagnostics
    }

    use crate::config::test_util::has;

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
                    (Ipv4Addr::new(192, 168, 58, 133).into(), 32),
                    (Ipv4Addr::new(10, 0, 0, 1).into(), 32)
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
                garp_master_refresh: Duration::ZERO,
                garp_master_refresh_repeat: 1,
                track_script: vec![],
                track_interface: vec![],
                track_service: vec![],
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
        assert_eq!(
            c.vrrp[0].unicast_peers,
            vec![IpAddr::from(Ipv4Addr::new(10, 1, 1, 2))]
        );
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

    #[test]
    fn ipv6_instances_speak_version_3() {
        let c = ok("services: []
vrrp:
  - name: VI_6
    interface: eth0
    virtual_router_id: 52
    advert_interval: 200ms
    virtual_addresses: [fd00:58::133, \"fe80::133/64\"]
    unicast_peers: [fe80::2]
");
        let v = &c.vrrp[0];
        assert_eq!(v.version, Version::V3, "the default for IPv6");
        assert_eq!(
            v.virtual_addresses,
            vec![
                ("fd00:58::133".parse().unwrap(), 128),
                ("fe80::133".parse().unwrap(), 64)
            ]
        );
        assert_eq!(v.unicast_peers, vec!["fe80::2".parse::<IpAddr>().unwrap()]);
        assert_eq!(v.advert_interval, Duration::from_millis(200));
    }

    #[test]
    fn ipv6_errors_name_line_and_field() {
        let e = errs(
            "services: []
vrrp:
  - name: mixed
    interface: eth0
    virtual_router_id: 1
    version: 3
    virtual_addresses:
      - 192.168.58.133
      - fd00:58::133
  - name: v2
    interface: eth0
    virtual_router_id: 2
    version: 2
    virtual_addresses: [fd00:58::134]
  - name: peers
    interface: eth0
    virtual_router_id: 3
    virtual_addresses: [fd00:58::135]
    unicast_peers: [192.168.58.137]
  - name: bad
    interface: eth0
    virtual_router_id: 4
    virtual_addresses: [ff02::12, fd00::1/129, \"::1\"]
  - name: ok6
    interface: eth0
    virtual_router_id: 5
    virtual_addresses: [fd00:58::140]
  - name: dup
    interface: eth0
    virtual_router_id: 6
    virtual_addresses: [fd00:58::140]
",
        );
        has(
            &e,
            9,
            "vrrp[0].virtual_addresses[1]",
            "fd00:58::133 is IPv6 but 192.168.58.133 is IPv4",
        );
        has(&e, 9, "vrrp[0].virtual_addresses[1]", "second instance");
        has(&e, 13, "vrrp[1].version", "version 2 is IPv4 only");
        has(
            &e,
            19,
            "vrrp[2].unicast_peers[0]",
            "peers speak the instance's family",
        );
        has(&e, 23, "vrrp[3].virtual_addresses[0]", "multicast");
        has(&e, 23, "vrrp[3].virtual_addresses[1]", "0..=128");
        has(&e, 23, "vrrp[3].virtual_addresses[2]", "loopback");
        has(&e, 31, "vrrp[5].virtual_addresses[0]", "line 24");
        // An IPv4 instance keeps version 2 as its default; 2 with IPv4 is fine.
        let c = ok(
            "services: []\nvrrp:\n  - name: v\n    interface: eth0\n    \
                    virtual_router_id: 1\n    version: 2\n    virtual_addresses: [10.1.1.1]\n",
        );
        assert_eq!(c.vrrp[0].version, Version::V2);
    }
}
