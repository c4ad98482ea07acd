//! keepalived.conf's keywords mapped onto the service file (`model.rs`). Each keyword is
//! either mapped, or named in a [`Note`]: `not needed` (nothing to do here: global_defs'
//! process settings, an ifconfig label) or `not supported` (the import is incomplete: NAT,
//! fwmark, an unknown scheduler, SMTP alerts, ...).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::lexer::{Item, Pos};
use super::model::{Backend, Check, Group, Model, Script, Service, Vrrp};
use super::{Kind, Note};

/// keepalived's defaults where they differ from the service file's (keepalived.conf(5)).
const KA_DELAY_LOOP: &str = "60s";
const KA_CONNECT_TIMEOUT: &str = "5s";
/// Names in the service file: 1-32 of [A-Za-z0-9_.-].
const MAX_NAME: usize = 32;
/// Addresses a `virtual_server_group` range may expand to.
const MAX_RANGE: u32 = 256;

/// Maps the items of a keepalived.conf; what is not mapped is added to `notes`.
pub fn map(items: &[Item], notes: &mut Vec<Note>) -> Model {
    let mut m = Mapper {
        notes,
        model: Model::default(),
        names: BTreeSet::new(),
        refs: HashMap::new(),
    };
    let mut groups: HashMap<&str, &Item> = HashMap::new();
    for item in items {
        if item.key.text == "virtual_server_group" {
            match item.arg(0) {
                Some(name) => {
                    groups.insert(name, item);
                }
                None => m.unsupported(item, "a virtual_server_group needs a name"),
            }
        }
    }
    for item in items {
        match item.key.text.as_str() {
            "global_defs" => m.global_defs(item),
            "vrrp_script" => m.vrrp_script(item),
            "vrrp_instance" => m.vrrp_instance(item),
            "vrrp_sync_group" => m.vrrp_sync_group(item),
            "virtual_server_group" => {}
            "virtual_server" => m.virtual_server(item, &groups),
            "static_ipaddress" | "static_routes" | "static_rules" => m.unsupported(
                item,
                "addresses, routes and rules the director always has belong in its network \
                 configuration (networkd, ifupdown, ...)",
            ),
            _ => m.no_equivalent(item),
        }
    }
    m.check_vrrp_references();
    m.model
}

struct Mapper<'a> {
    notes: &'a mut Vec<Note>,
    model: Model,
    /// Service names given so far.
    names: BTreeSet<String>,
    /// Where an instance names a tracked script, or a group a member (or `""`: the group).
    refs: HashMap<(String, String), Pos>,
}

/// Check settings inherited from the virtual server and the real server by their checks.
#[derive(Clone, Default)]
struct CheckDefaults {
    interval: Option<String>,
    timeout: Option<String>,
    retry: Option<u32>,
    retry_delay: Option<String>,
    warmup: Option<String>,
    host: Option<String>,
    alpha: bool,
}

/// The first line of an item as a note names it: `lb_algo lblc`.
fn what(item: &Item) -> String {
    let mut s = item.key.text.clone();
    for a in &item.args {
        s.push(' ');
        s.push_str(&a.text);
    }
    if s.chars().count() > 60 {
        s = s.chars().take(57).collect::<String>() + "...";
    }
    s
}

/// A duration in keepalived's seconds (`3`, `0.5`) as the service file writes it.
fn seconds(s: &str) -> Option<String> {
    let x: f64 = s.parse().ok()?;
    if !x.is_finite() || !(0.0..=1e9).contains(&x) {
        return None;
    }
    let ms = (x * 1000.0).round() as u64;
    Some(if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}

/// `s` made a name of the service file (invalid characters become `_`), and whether it changed.
fn valid_name(s: &str) -> (String, bool) {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME)
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    let changed = out != s;
    (out, changed)
}

impl Mapper<'_> {
    fn note(&mut self, pos: &Pos, what: String, kind: Kind, why: impl Into<String>) {
        self.notes.push(Note {
            pos: pos.clone(),
            what,
            kind,
            why: why.into(),
        });
    }

    fn unsupported(&mut self, item: &Item, why: impl Into<String>) {
        self.note(item.pos(), what(item), Kind::NotSupported, why);
    }

    fn not_needed(&mut self, item: &Item, why: impl Into<String>) {
        self.note(item.pos(), what(item), Kind::NotNeeded, why);
    }

    fn no_equivalent(&mut self, item: &Item) {
        let why = format!(
            "keepalived's `{}` has no equivalent in the service file; it is left out",
            item.key.text
        );
        self.unsupported(item, why);
    }

    /// The item's first argument parsed, or a note saying what was expected.
    fn num<T: std::str::FromStr>(&mut self, item: &Item, expected: &str) -> Option<T> {
        let v = item.arg(0).and_then(|s| s.parse().ok());
        if v.is_none() {
            self.unsupported(item, format!("expected {expected}; the line is left out"));
        }
        v
    }

    fn secs(&mut self, item: &Item) -> Option<String> {
        let v = item.arg(0).and_then(seconds);
        if v.is_none() {
            self.unsupported(
                item,
                "expected seconds (such as 3 or 0.5); the line is left out",
            );
        }
        v
    }

    /// All the words after the keyword, as one string (a script written unquoted).
    fn command(&mut self, item: &Item) -> Option<String> {
        let s = item
            .args
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        if s.is_empty() {
            self.unsupported(item, "expected a command; the line is left out");
            return None;
        }
        Some(s)
    }

    fn global_defs(&mut self, item: &Item) {
        for c in item.children() {
            let k = c.key.text.as_str();
            if k.starts_with("notification_email") || k.starts_with("smtp_") || k == "email_faults"
            {
                self.unsupported(
                    c,
                    "email alerts; run a command from notify_up/notify_down or the VRRP \
                     notify_* hooks instead",
                );
            } else {
                self.not_needed(
                    c,
                    "a setting of the keepalived process (global_defs); lb-ctl has its own \
                     options",
                );
            }
        }
    }

    fn vrrp_script(&mut self, item: &Item) {
        let Some(raw) = item.arg(0) else {
            return self.unsupported(item, "a vrrp_script needs a name; it is left out");
        };
        let name = self.config_name(item, raw);
        let mut s = Script {
            line: item.pos().line,
            name,
            ..Script::default()
        };
        for c in item.children() {
            match c.key.text.as_str() {
                "script" => s.script = self.command(c),
                "interval" => s.interval = self.secs(c),
                "timeout" => s.timeout = self.secs(c),
                "weight" => {
                    s.weight = self.num(c, "a weight, -254 to 254");
                    if c.arg(1) == Some("reverse") {
                        self.unsupported(c, "`reverse` weights; the weight keeps its sign");
                    }
                }
                "rise" => s.rise = self.num(c, "a count"),
                "fall" => s.fall = self.num(c, "a count"),
                "user" => self.not_needed(c, "scripts run as the user lb-ctl runs as"),
                _ => self.no_equivalent(c),
            }
        }
        if s.script.is_none() {
            return self.unsupported(
                item,
                "the vrrp_script has no `script` (left out above?); it is left out, and so \
                 are the track_script entries that name it",
            );
        }
        self.model.scripts.push(s);
    }

    /// `raw` as a name of the file, with a note when it had to change.
    fn config_name(&mut self, item: &Item, raw: &str) -> String {
        let (name, changed) = valid_name(raw);
        if changed {
            self.not_needed(
                item,
                format!("renamed `{name}`: names are 1-32 of A-Za-z0-9_.-"),
            );
        }
        name
    }

    fn vrrp_instance(&mut self, item: &Item) {
        let Some(raw) = item.arg(0) else {
            return self.unsupported(item, "a vrrp_instance needs a name; it is left out");
        };
        let name = self.config_name(item, raw);
        let mut v = Vrrp {
            from: format!("vrrp_instance {raw} ({})", item.pos()),
            name,
            ..Vrrp::default()
        };
        let mut seen = BTreeSet::new();
        for c in item.children() {
            match c.key.text.as_str() {
                "state" => match c.arg(0) {
                    Some(s @ ("MASTER" | "BACKUP")) => v.notes.push(format!(
                        "state {s}: every instance starts as backup here; the priority decides"
                    )),
                    _ => self.unsupported(c, "state is MASTER or BACKUP"),
                },
                "interface" => v.interface = c.arg(0).map(str::to_string),
                "virtual_router_id" => v.virtual_router_id = self.num(c, "a number, 1-255"),
                "priority" => v.priority = self.num(c, "a priority, 1-255"),
                "advert_int" => v.advert_interval = self.secs(c),
                "version" => match c.arg(0) {
                    Some("2") => v.version = Some(2),
                    Some("3") => v.version = Some(3),
                    _ => self.unsupported(c, "the VRRP version is 2 or 3"),
                },
                "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                    if c.key.text == "virtual_ipaddress_excluded" {
                        self.not_needed(
                            c,
                            "imported as virtual addresses (also listed in the adverts)",
                        );
                    }
                    for a in c.children() {
                        self.virtual_address(a, &mut v, &mut seen);
                    }
                }
                "authentication" => self.authentication(c, &mut v),
                "unicast_peer" => {
                    for p in c.children() {
                        match p.key.text.parse::<IpAddr>() {
                            Ok(_) => v.unicast_peers.push(p.key.text.clone()),
                            Err(_) => self.unsupported(p, "not an IP address; left out"),
                        }
                        if !p.args.is_empty() {
                            self.unsupported(p, "per-peer options (min_ttl, max_ttl)");
                        }
                    }
                }
                "nopreempt" => v.preempt = Some(false),
                "preempt" => v.preempt = Some(true),
                "preempt_delay" => v.preempt_delay = self.secs(c),
                "garp_master_delay" => v.garp_delay = self.secs(c),
                "garp_master_repeat" => v.garp_count = self.num(c, "a count"),
                "garp_master_refresh" => v.garp_master_refresh = self.secs(c),
                "garp_master_refresh_repeat" => {
                    v.garp_master_refresh_repeat = self.num(c, "a count")
                }
                "notify_master" => v.notify_master = self.command(c),
                "notify_backup" => v.notify_backup = self.command(c),
                "notify_fault" => v.notify_fault = self.command(c),
                "track_script" => {
                    for t in c.children() {
                        if let Some(x) = self.tracked(t) {
                            self.refs
                                .insert((v.name.clone(), x.0.clone()), t.pos().clone());
                            v.track_script.push(x);
                        }
                    }
                }
                "track_interface" => {
                    for t in c.children() {
                        if let Some(x) = self.tracked(t) {
                            v.track_interface.push(x);
                        }
                    }
                }
                "smtp_alert" => self.unsupported(c, "email alerts; use the notify_* hooks"),
                "lvs_sync_daemon_interface" => self.unsupported(
                    c,
                    "IPVS's sync daemon; the service file's `sync:` block shares the \
                     connection table between directors",
                ),
                "virtual_routes" | "virtual_rules" => self.unsupported(
                    c,
                    "routes and rules that follow the master state; add them from the \
                     notify_master/notify_backup hooks",
                ),
                "use_vmac" | "vmac_xmit_base" => self.unsupported(
                    c,
                    "a VRRP MAC interface; the virtual addresses go on the interface itself",
                ),
                "dont_track_primary" | "debug" | "native_ipv6" | "strict_mode" => {
                    self.not_needed(c, "nothing to set here")
                }
                _ => self.no_equivalent(c),
            }
        }
        let missing = [
            ("interface", v.interface.is_none()),
            ("virtual_router_id", v.virtual_router_id.is_none()),
            ("virtual_ipaddress", v.virtual_addresses.is_empty()),
        ];
        if let Some((key, _)) = missing.iter().find(|(_, m)| *m) {
            return self.unsupported(
                item,
                format!("the instance has no (usable) {key}; it is left out"),
            );
        }
        self.model.vrrp.push(v);
    }

    fn virtual_address(&mut self, a: &Item, v: &mut Vrrp, seen: &mut BTreeSet<String>) {
        let addr = a.key.text.clone();
        let ip = addr.split('/').next().unwrap_or("");
        if ip.parse::<IpAddr>().is_err() {
            return self.unsupported(a, "not an IP address (or ADDRESS/LEN); left out");
        }
        let mut args = a.args.iter();
        while let Some(w) = args.next() {
            let value = args.next().map(|w| w.text.as_str());
            match w.text.as_str() {
                "dev" if value == v.interface.as_deref() => {}
                "dev" => {
                    let why = format!(
                        "an address on another interface ({}); it is held on the instance's \
                         interface here",
                        value.unwrap_or("?")
                    );
                    self.unsupported(a, why);
                }
                "label" => self.not_needed(a, "labels are for ifconfig; the address is kept"),
                "brd" | "broadcast" | "scope" => {
                    self.not_needed(a, "the kernel's defaults are used; the address is kept")
                }
                _ => {
                    self.unsupported(a, format!("address option `{}`; left out", w.text));
                    break;
                }
            }
        }
        if seen.insert(ip.to_string()) {
            v.virtual_addresses.push(addr);
        } else {
            self.not_needed(a, "the address is listed twice; once is enough");
        }
    }

    fn authentication(&mut self, c: &Item, v: &mut Vrrp) {
        let mut kind = None;
        let mut pass = None;
        for a in c.children() {
            match a.key.text.as_str() {
                "auth_type" => kind = a.arg(0).map(str::to_string),
                "auth_pass" => pass = a.arg(0).map(str::to_string),
                _ => self.no_equivalent(a),
            }
        }
        match kind.as_deref() {
            Some("PASS") => {
                let mut p = pass.unwrap_or_default();
                if p.chars().count() > 8 {
                    p = p.chars().take(8).collect();
                    self.not_needed(c, "auth_pass has more than 8 characters; keepalived uses the first 8, so does this file");
                }
                if p.is_empty() {
                    self.unsupported(c, "auth_type PASS without auth_pass");
                } else {
                    v.auth_pass = Some(p);
                }
            }
            Some("AH") => self.unsupported(
                c,
                "auth_type AH (IPsec AH, RFC 2338) is not supported; the instance is imported \
                 without authentication, so its peers must drop AH too (or use PASS)",
            ),
            _ => self.unsupported(c, "auth_type is PASS or AH"),
        }
    }

    /// `NAME [weight W]` of a track_script or track_interface block.
    fn tracked(&mut self, t: &Item) -> Option<(String, Option<i32>)> {
        let weight = match (t.arg(0), t.arg(1)) {
            (None, _) => None,
            (Some("weight"), Some(w)) => match w.parse() {
                Ok(w) => Some(w),
                Err(_) => {
                    self.unsupported(t, "the weight is a number, -254 to 254; left out");
                    return None;
                }
            },
            _ => {
                self.unsupported(t, "expected `NAME [weight W]`; left out");
                return None;
            }
        };
        if t.arg(2) == Some("reverse") {
            self.unsupported(t, "`reverse` weights; the weight keeps its sign");
        }
        Some((valid_name(&t.key.text).0, weight))
    }

    fn vrrp_sync_group(&mut self, item: &Item) {
        let Some(raw) = item.arg(0) else {
            return self.unsupported(item, "a vrrp_sync_group needs a name; it is left out");
        };
        let name = self.config_name(item, raw);
        let mut instances = Vec::new();
        self.refs
            .insert((name.clone(), String::new()), item.pos().clone());
        let mut member = |refs: &mut HashMap<(String, String), Pos>, i: &Item| {
            let n = valid_name(&i.key.text).0;
            refs.insert((name.clone(), n.clone()), i.pos().clone());
            instances.push(n);
        };
        for c in item.children() {
            match c.key.text.as_str() {
                "group" => {
                    for i in c.children() {
                        member(&mut self.refs, i);
                    }
                }
                "notify_master" | "notify_backup" | "notify_fault" | "notify" => self.unsupported(
                    c,
                    "a sync group's hooks; give each instance its own notify_* hook",
                ),
                "smtp_alert" => self.unsupported(c, "email alerts; use the notify_* hooks"),
                // Older files list the instances without `group { }`.
                k if c.args.is_empty()
                    && c.block.is_none()
                    && k.starts_with(char::is_alphabetic) =>
                {
                    member(&mut self.refs, c)
                }
                _ => self.no_equivalent(c),
            }
        }
        self.model.groups.push(Group {
            line: item.pos().line,
            name,
            instances,
        });
    }

    /// Tracked scripts and sync-group members that name something the import left out.
    fn check_vrrp_references(&mut self) {
        let scripts: BTreeSet<String> = self.model.scripts.iter().map(|s| s.name.clone()).collect();
        // (owner, name, why)
        let mut dropped: Vec<(String, String, &str)> = Vec::new();
        for v in &mut self.model.vrrp {
            v.track_script.retain(|(n, _)| {
                let keep = scripts.contains(n);
                if !keep {
                    dropped.push((
                        v.name.clone(),
                        n.clone(),
                        "there is no such vrrp_script (or it was left out); the entry is left out",
                    ));
                }
                keep
            });
        }
        let instances: BTreeSet<String> = self.model.vrrp.iter().map(|v| v.name.clone()).collect();
        let mut grouped = BTreeSet::new();
        let mut kept = Vec::new();
        for mut g in std::mem::take(&mut self.model.groups) {
            g.instances.retain(|i| {
                let ok = instances.contains(i) && grouped.insert(i.clone());
                if !ok {
                    dropped.push((
                        g.name.clone(),
                        i.clone(),
                        "no such instance (or it was left out), or in another group already; \
                         left out of the group",
                    ));
                }
                ok
            });
            if g.instances.len() < 2 {
                dropped.push((
                    g.name.clone(),
                    String::new(),
                    "a sync group needs two instances or more; the group is left out",
                ));
                for i in &g.instances {
                    grouped.remove(i);
                }
            } else {
                kept.push(g);
            }
        }
        self.model.groups = kept;
        for (owner, name, why) in dropped {
            let key = (owner.clone(), name.clone());
            let pos = self.refs.get(&key).cloned().unwrap_or(Pos {
                file: "".into(),
                line: 0,
            });
            let what = if name.is_empty() { owner } else { name };
            self.note(&pos, what, Kind::NotSupported, why);
        }
    }

    fn virtual_server(&mut self, item: &Item, groups: &HashMap<&str, &Item>) {
        let targets: Vec<(String, u16, String)> = match (item.arg(0), item.arg(1)) {
            (Some("fwmark"), _) => {
                return self.unsupported(
                    item,
                    "a firewall-mark service selects packets by the kernel's iptables/nftables \
                     marks, which the XDP program (before them) never sees; write one service \
                     per VIP and port (port 0: every port of the VIP); left out",
                );
            }
            (Some("group"), Some(g)) => {
                let Some(group) = groups.get(g) else {
                    return self.unsupported(
                        item,
                        format!("there is no virtual_server_group {g}; left out"),
                    );
                };
                self.group_targets(group)
            }
            (Some(ip), Some(port)) => match (ip.parse::<IpAddr>(), port.parse::<u16>()) {
                (Ok(_), Ok(p)) => vec![(ip.to_string(), p, what(item))],
                _ => {
                    return self.unsupported(item, "expected `virtual_server IP PORT`; left out");
                }
            },
            _ => return self.unsupported(item, "expected `virtual_server IP PORT`; left out"),
        };
        let Some(template) = self.service_template(item) else {
            return;
        };
        for (vip, port, from) in targets {
            let mut s = template.clone();
            s.from = format!("{from} ({})", item.pos());
            s.name = self.service_name(&vip, port, s.protocol);
            if let Some((_, Some(mask))) = &mut s.persistence {
                match netmask(&vip, mask) {
                    Ok(m) => *mask = m,
                    Err(why) => {
                        let at = item
                            .children()
                            .iter()
                            .find(|c| c.key.text == "persistence_granularity");
                        if let Some(c) = at {
                            self.unsupported(c, why);
                        }
                        s.persistence = s.persistence.take().map(|(t, _)| (t, None));
                    }
                }
            }
            s.vip = vip;
            s.port = port;
            self.real_servers(item, &mut s);
            self.model.services.push(s);
        }
    }

    /// A unique service name from its VIP, port and protocol.
    fn service_name(&mut self, vip: &str, port: u16, protocol: &str) -> String {
        let base = format!("{}-{port}", vip.replace(':', "_"));
        let base = if base.len() > MAX_NAME - 4 {
            format!("vs{}", self.model.services.len() + 1)
        } else {
            base
        };
        let mut name = base.clone();
        if self.names.contains(&name) {
            name = format!("{base}-{protocol}");
        }
        let mut n = 2;
        while self.names.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// The entries of a virtual_server_group: `IP PORT`, `IP-LAST PORT` (a range of the last
    /// byte or IPv6 group), `fwmark N` (refused).
    fn group_targets(&mut self, group: &Item) -> Vec<(String, u16, String)> {
        let mut out = Vec::new();
        for e in group.children() {
            let from = format!(
                "virtual_server_group {} entry {}",
                group.arg(0).unwrap_or(""),
                what(e)
            );
            if e.key.text == "fwmark" {
                self.unsupported(
                    e,
                    "a firewall-mark entry; the XDP program never sees the marks; left out",
                );
                continue;
            }
            let Some(port) = e.arg(0).and_then(|p| p.parse::<u16>().ok()) else {
                self.unsupported(e, "expected `IP PORT` or `IP-LAST PORT`; left out");
                continue;
            };
            match expand_range(&e.key.text) {
                Ok(addrs) => out.extend(addrs.into_iter().map(|a| (a, port, from.clone()))),
                Err(why) => self.unsupported(e, why),
            }
        }
        out
    }

    /// Everything of a virtual_server but its address, port, name and real servers.
    fn service_template(&mut self, item: &Item) -> Option<Service> {
        let mut s = Service {
            from: String::new(),
            name: String::new(),
            vip: String::new(),
            port: 0,
            protocol: "tcp",
            scheduler: None,
            persistence: None,
            tunnel: None,
            sorry_server: None,
            quorum: None,
            hysteresis: None,
            inhibit_on_failure: false,
            notify_up: None,
            notify_down: None,
            backends: Vec::new(),
            notes: Vec::new(),
        };
        let mut timeout = None;
        let mut netmask = None;
        let mut tun_type = None;
        for c in item.children() {
            match c.key.text.as_str() {
                "lb_algo" | "lvs_sched" => match c.arg(0) {
                    Some(a @ ("rr" | "wrr" | "lc" | "wlc" | "sh" | "mh")) => {
                        s.scheduler = ["rr", "wrr", "lc", "wlc", "sh", "mh"]
                            .into_iter()
                            .find(|x| *x == a);
                    }
                    Some(a) => {
                        let why = format!(
                            "the scheduler `{a}` is not supported (rr wrr lc wlc sh mh are); \
                             the service keeps the default, wrr"
                        );
                        self.unsupported(c, why);
                        s.notes
                            .push(format!("lb_algo {a} is not supported: wrr instead"));
                    }
                    None => self.unsupported(c, "lb_algo needs a scheduler"),
                },
                "lb_kind" | "lvs_method" => match c.arg(0) {
                    Some("DR") => {}
                    Some("TUN") => {
                        s.tunnel = Some(("ipip", None));
                        let mut rest = c.args.iter().skip(1).map(|w| w.text.as_str());
                        if rest.next() == Some("type") {
                            tun_type = Some((c, rest.collect::<Vec<_>>()));
                        }
                    }
                    Some("NAT") => {
                        self.unsupported(
                            c,
                            "NAT rewrites addresses and ports and needs the replies to pass \
                             through the director; this director forwards by direct routing \
                             (or tunnel), the real servers answer the clients themselves. The \
                             service is imported as direct routing: each real server must hold \
                             the VIP on lo and be on the director's link",
                        );
                        s.notes.push(
                            "lb_kind NAT is not supported: imported as direct routing".into(),
                        );
                    }
                    Some(k) => {
                        self.unsupported(c, format!("lb_kind {k}; imported as direct routing"))
                    }
                    None => self.unsupported(c, "lb_kind needs DR, TUN or NAT"),
                },
                "tun_type" => {
                    tun_type = Some((c, c.args.iter().map(|w| w.text.as_str()).collect()));
                }
                "protocol" => match c.arg(0) {
                    Some("TCP") => s.protocol = "tcp",
                    Some("UDP") => s.protocol = "udp",
                    _ => {
                        self.unsupported(
                            c,
                            "only TCP and UDP services are supported; the virtual server is \
                             left out",
                        );
                        return None;
                    }
                },
                "persistence_timeout" => timeout = self.secs(c),
                "persistence_granularity" => netmask = c.arg(0).map(str::to_string),
                "sorry_server" => s.sorry_server = c.arg(0).map(str::to_string),
                "quorum" => s.quorum = self.num(c, "a total weight"),
                "hysteresis" => s.hysteresis = self.num(c, "a weight"),
                "inhibit_on_failure" => s.inhibit_on_failure = true,
                "real_server" | "delay_loop" | "connect_timeout" | "retry" | "nb_get_retry"
                | "delay_before_retry" | "warmup" | "virtualhost" | "alpha" => {}
                "quorum_up" | "quorum_down" => self.unsupported(
                    c,
                    "quorum hooks; notify_up/notify_down run per backend, and `announce:` can \
                     withdraw the VIP below quorum",
                ),
                "omega" => self.unsupported(c, "running quorum_down on shutdown"),
                "ha_suspend" => {
                    self.unsupported(c, "checks run whether or not the director holds the VIP")
                }
                "sorry_server_inhibit" | "sorry_server_lvs_method" => {
                    self.unsupported(c, "the sorry server takes the service's method and weight")
                }
                "ops" | "one_packet" => self.unsupported(c, "one-packet scheduling"),
                "smtp_alert" => self.unsupported(c, "email alerts; use notify_up/notify_down"),
                "persistence_engine" => self.unsupported(c, "persistence engines (sip)"),
                _ => self.no_equivalent(c),
            }
        }
        if let Some(t) = timeout {
            s.persistence = Some((t, None));
        }
        if let Some(mask) = netmask {
            match &mut s.persistence {
                Some((_, m)) => *m = Some(mask),
                None => {
                    let at = item
                        .children()
                        .iter()
                        .find(|c| c.key.text == "persistence_granularity");
                    if let Some(c) = at {
                        self.not_needed(c, "without persistence_timeout it has no effect");
                    }
                }
            }
        }
        if let Some((c, words)) = tun_type {
            if s.tunnel.is_none() {
                self.not_needed(c, "tun_type applies to lb_kind TUN only");
            } else {
                match words.as_slice() {
                    ["ipip"] | [] => {}
                    ["gue", "port", p, ..] => match p.parse::<u16>() {
                        Ok(p) if p > 0 => {
                            s.tunnel = Some(("gue", Some(p)));
                            if words.len() > 3 {
                                self.unsupported(c, "GUE checksum options; none is sent");
                            }
                        }
                        _ => self.unsupported(c, "the GUE port is 1-65535; IPIP instead"),
                    },
                    [t, ..] => {
                        let why =
                            format!("tunnel type {t} (ipip and gue are supported); IPIP instead");
                        self.unsupported(c, why)
                    }
                }
            }
        }
        Some(s)
    }

    /// The real servers of the virtual server `item` for the service `s` (its port set).
    fn real_servers(&mut self, item: &Item, s: &mut Service) {
        let mut vs = CheckDefaults::default();
        for c in item.children() {
            self.check_default(c, &mut vs);
        }
        let mut notify_up = BTreeSet::new();
        let mut notify_down = BTreeSet::new();
        let mut inhibit = Vec::new();
        for rs in item
            .children()
            .iter()
            .filter(|c| c.key.text == "real_server")
        {
            let Some(addr) = rs.arg(0).filter(|a| a.parse::<IpAddr>().is_ok()) else {
                self.unsupported(rs, "expected `real_server IP PORT`; left out");
                continue;
            };
            if addr.parse::<IpAddr>().ok() == s.vip.parse::<IpAddr>().ok() {
                self.unsupported(
                    rs,
                    "the real server is the VIP itself (the director); a backend must be a \
                     real server's own address; left out",
                );
                continue;
            }
            let rs_port = match rs.arg(1).map(str::parse::<u16>) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(_)) => {
                    self.unsupported(rs, "the port is 0-65535; left out");
                    continue;
                }
            };
            if let Some(p) = rs_port.filter(|p| *p != s.port) {
                let why = format!(
                    "its port {p} differs from the virtual server's {}: direct routing does not \
                     rewrite ports, so the backend takes port {} (its check keeps port {p})",
                    s.port, s.port
                );
                self.unsupported(rs, why);
            }
            let mut d = vs.clone();
            for c in rs.children() {
                self.check_default(c, &mut d);
            }
            let mut b = Backend {
                address: addr.to_string(),
                weight: None,
                check: None,
                line: rs.pos().line,
            };
            let mut rs_inhibit = s.inhibit_on_failure;
            for c in rs.children() {
                match c.key.text.as_str() {
                    "weight" => b.weight = self.num(c, "a weight, 0-65535"),
                    "inhibit_on_failure" => rs_inhibit = true,
                    "notify_up" => {
                        if let Some(x) = self.command(c) {
                            notify_up.insert(x);
                        }
                    }
                    "notify_down" => {
                        if let Some(x) = self.command(c) {
                            notify_down.insert(x);
                        }
                    }
                    "HTTP_GET" | "SSL_GET" | "TCP_CHECK" | "MISC_CHECK" | "SMTP_CHECK" => {
                        if b.check.is_some() {
                            self.unsupported(
                                c,
                                "a backend has one check here; the first of its checkers is \
                                 kept, this one is left out",
                            );
                            continue;
                        }
                        let mut check = self.checker(c, &d);
                        if check.port.is_none() {
                            check.port = rs_port.filter(|p| *p != s.port);
                        }
                        b.check = Some(check);
                    }
                    "DNS_CHECK" | "UDP_CHECK" | "PING_CHECK" | "BFD_CHECK" | "FILE_CHECK" => {
                        let why = format!(
                            "{} has no equivalent (checks: http_get, https_get, tcp, exec); \
                             the backend is imported without it (an exec check can run a \
                             script that does it)",
                            c.key.text
                        );
                        self.unsupported(c, why)
                    }
                    "delay_loop" | "connect_timeout" | "retry" | "nb_get_retry"
                    | "delay_before_retry" | "warmup" | "virtualhost" | "alpha" => {}
                    "uthreshold" | "lthreshold" => {
                        self.unsupported(c, "connection thresholds per real server")
                    }
                    "smtp_alert" => self.unsupported(c, "email alerts; use notify_up/notify_down"),
                    _ => self.no_equivalent(c),
                }
            }
            inhibit.push((rs, rs_inhibit));
            s.backends.push(b);
        }
        let any = inhibit.iter().any(|(_, i)| *i);
        if any {
            s.inhibit_on_failure = true;
            for (rs, i) in &inhibit {
                if !i {
                    self.unsupported(
                        rs,
                        "inhibit_on_failure is set per service here; another real server of \
                         this virtual server has it, so this one gets it too",
                    );
                }
            }
        }
        for (set, slot, key) in [
            (notify_up, &mut s.notify_up, "notify_up"),
            (notify_down, &mut s.notify_down, "notify_down"),
        ] {
            if set.len() > 1 {
                let why = format!(
                    "the real servers have different {key} commands; the service has one \
                     (the first in order is kept); the hook gets LB_BACKEND_ADDRESS"
                );
                self.unsupported(item, why);
            }
            *slot = set.into_iter().next();
        }
        if let Some(sorry) = &s.sorry_server {
            let at = item
                .children()
                .iter()
                .find(|c| c.key.text == "sorry_server");
            if let (Some(c), Some(p)) = (at, at.and_then(|c| c.arg(1)))
                && p.parse::<u16>().ok() != Some(s.port)
            {
                let why = format!(
                    "the sorry server {sorry} gets port {} (direct routing does not rewrite \
                     ports), not {p}",
                    s.port
                );
                self.unsupported(c, why);
            }
        }
    }

    /// A check setting of a virtual or real server, inherited by its checkers.
    fn check_default(&mut self, c: &Item, d: &mut CheckDefaults) {
        match c.key.text.as_str() {
            "delay_loop" => d.interval = self.secs(c),
            "connect_timeout" => d.timeout = self.secs(c),
            "retry" | "nb_get_retry" => d.retry = self.num(c, "a count"),
            "delay_before_retry" => d.retry_delay = self.secs(c),
            "warmup" => d.warmup = self.secs(c),
            "virtualhost" => d.host = c.arg(0).map(str::to_string),
            "alpha" => d.alpha = true,
            _ => {}
        }
    }

    fn checker(&mut self, item: &Item, inherited: &CheckDefaults) -> Check {
        let kind = match item.key.text.as_str() {
            "HTTP_GET" => "http_get",
            "SSL_GET" => "https_get",
            "MISC_CHECK" => "exec",
            "SMTP_CHECK" => {
                self.unsupported(
                    item,
                    "the SMTP dialogue (HELO, QUIT) is not checked; imported as a tcp check of \
                     the same port (the connection only)",
                );
                "tcp"
            }
            _ => "tcp",
        };
        let mut d = inherited.clone();
        let mut urls = 0;
        let mut c = Check {
            kind,
            ..Check::default()
        };
        let mut misc_timeout = None;
        for k in item.children() {
            match k.key.text.as_str() {
                "delay_loop" | "connect_timeout" | "retry" | "nb_get_retry"
                | "delay_before_retry" | "warmup" | "virtualhost" | "alpha" => {
                    self.check_default(k, &mut d)
                }
                "connect_port" => c.port = self.num(k, "a port"),
                "url" if kind != "tcp" && kind != "exec" => {
                    urls += 1;
                    if urls > 1 {
                        self.unsupported(
                            k,
                            "a check fetches one url here; the first is kept, this one is \
                             left out",
                        );
                        continue;
                    }
                    self.url(k, &mut c);
                }
                "misc_path" if kind == "exec" => c.command = self.command(k),
                "misc_timeout" if kind == "exec" => misc_timeout = self.secs(k),
                "misc_dynamic" if kind == "exec" => self.unsupported(
                    k,
                    "weights from the script's exit status; exit 0 is up, anything else down",
                ),
                "user" if kind == "exec" => {
                    self.not_needed(k, "the command runs as the user lb-ctl runs as")
                }
                "connect_ip" | "bindto" | "bind_port" | "bind_if" | "fwmark" | "host" => self
                    .unsupported(
                        k,
                        "checks go from the director's own address to the real server's \
                         address; left out",
                    ),
                "helo_name" if item.key.text == "SMTP_CHECK" => {}
                "http_protocol" | "fast_recovery" | "enable_sni" | "sni_name" | "tls_compliant" => {
                    self.not_needed(k, "not configurable here; left out")
                }
                _ => self.no_equivalent(k),
            }
        }
        if kind == "exec" && c.command.is_none() {
            self.unsupported(item, "MISC_CHECK without misc_path; a tcp check instead");
            c.kind = "tcp";
        }
        c.interval = Some(d.interval.clone().unwrap_or_else(|| KA_DELAY_LOOP.into()));
        c.timeout = if c.kind == "exec" {
            // keepalived: misc_timeout, else the delay loop.
            misc_timeout.or_else(|| c.interval.clone())
        } else {
            Some(
                d.timeout
                    .clone()
                    .unwrap_or_else(|| KA_CONNECT_TIMEOUT.into()),
            )
        };
        // keepalived's `retry` counts the checks after the first failure.
        let default_retry = if c.kind == "exec" { 0 } else { 1 };
        c.retries = Some(d.retry.unwrap_or(default_retry).saturating_add(1));
        c.retry_delay = Some(d.retry_delay.clone().unwrap_or_else(|| {
            if kind == "http_get" || kind == "https_get" {
                "3s".into()
            } else {
                "1s".into()
            }
        }));
        c.warmup = d.warmup.clone();
        if c.kind == "http_get" || c.kind == "https_get" {
            c.host = c.host.take().or(d.host.clone());
        }
        c.alpha = d.alpha;
        c
    }

    fn url(&mut self, u: &Item, c: &mut Check) {
        for k in u.children() {
            match k.key.text.as_str() {
                "path" => c.path = k.arg(0).map(str::to_string),
                "digest" => c.digest = k.arg(0).map(str::to_ascii_lowercase),
                "virtualhost" => c.host = k.arg(0).map(str::to_string),
                "status_code" => {
                    for w in &k.args {
                        match status_range(&w.text) {
                            Some(r) => c.status.extend(r),
                            None => self.unsupported(
                                k,
                                format!(
                                    "`{}` is not a status code (100-599) or range; left out",
                                    w.text
                                ),
                            ),
                        }
                    }
                }
                "regex" | "regex_no_match" | "regex_options" | "regex_stack"
                | "regex_min_offset" | "regex_max_offset" => {
                    self.unsupported(k, "matching the body against a regex (digest is supported)")
                }
                "tls_compliant" => self.not_needed(k, "not configurable here; left out"),
                _ => self.no_equivalent(k),
            }
        }
        c.status.sort_unstable();
        c.status.dedup();
    }
}

/// keepalived's persistence_granularity as the service file's `netmask`: a dotted mask for
/// an IPv4 VIP (a prefix length is converted), a prefix length for an IPv6 one.
fn netmask(vip: &str, mask: &str) -> Result<String, String> {
    let v6 = vip.contains(':');
    let bare = mask.trim_start_matches('/');
    match (v6, bare.parse::<u8>(), mask.parse::<std::net::Ipv4Addr>()) {
        (false, Ok(n), _) if n <= 32 => Ok(crate::config::Persistence::v4_netmask(n).to_string()),
        (false, _, Ok(m)) => Ok(m.to_string()),
        (true, Ok(n), _) if n <= 128 => Ok(n.to_string()),
        _ => Err(format!(
            "`{mask}` is not a netmask of the VIP's family (IPv4: 255.255.255.0 or 24; IPv6: \
             a prefix length); persistence keeps the default (each client on its own)"
        )),
    }
}

/// `200` or `200-299` as status codes.
fn status_range(s: &str) -> Option<std::ops::RangeInclusive<u16>> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
    ((100..=599).contains(&a) && (a..=599).contains(&b)).then_some(a..=b)
}

/// `192.168.200.3-10` (the last byte) or `ae00::2-9` (the last group, hex) as addresses; a
/// plain address as itself.
fn expand_range(s: &str) -> Result<Vec<String>, String> {
    let Some((first, last)) = s.rsplit_once('-') else {
        return match s.parse::<IpAddr>() {
            Ok(_) => Ok(vec![s.to_string()]),
            Err(_) => Err("not an IP address; left out".into()),
        };
    };
    let bad = || format!("`{s}` is not an address range (IP-LAST); left out");
    let ip: IpAddr = first.parse().map_err(|_| bad())?;
    let out: Vec<String> = match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            let end: u8 = last.parse().map_err(|_| bad())?;
            (o[3]..=end)
                .map(|x| std::net::Ipv4Addr::new(o[0], o[1], o[2], x).to_string())
                .collect()
        }
        IpAddr::V6(a) => {
            let mut seg = a.segments();
            let end = u16::from_str_radix(last, 16).map_err(|_| bad())?;
            (seg[7]..=end)
                .map(|x| {
                    seg[7] = x;
                    std::net::Ipv6Addr::from(seg).to_string()
                })
                .collect()
        }
    };
    if out.is_empty() || out.len() > MAX_RANGE as usize {
        return Err(format!(
            "`{s}` expands to {} addresses (1-{MAX_RANGE} are imported); left out",
            out.len()
        ));
    }
    Ok(out)
}

/// The notes of one run, each once, in the order they were found.
pub fn dedup(notes: Vec<Note>) -> Vec<Note> {
    let mut seen = BTreeMap::new();
    for (i, n) in notes.into_iter().enumerate() {
        let key = (n.pos.to_string(), n.what.clone(), n.why.clone());
        seen.entry(key).or_insert((i, n));
    }
    let mut out: Vec<(usize, Note)> = seen.into_values().collect();
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, n)| n).collect()
}
