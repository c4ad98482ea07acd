//! What a real server needs, what `up` changes, what `down` undoes and what `check` reports,
//! pure: the system's state comes in as an [`Observed`], and what to do goes out as [`Step`]s.
//!
//! `up` records each [`Change`] with the value it found before, so that `down` restores
//! exactly that: a sysctl that already had the wanted value is no change and stays; an
//! address that was already on `lo` is no change and stays.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

/// How the director reaches the real server: direct routing (no decapsulation) or a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// IPIP (IPv4 or IPv6 inside); GUE off.
    Ipip,
    /// GUE on this UDP port, and IPIP.
    Gue(u16),
}

/// What `lb-ctl realserver up|check` was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub vips: Vec<IpAddr>,
    /// The interfaces toward the director(s).
    pub ifaces: Vec<String>,
    pub tunnel: Option<Tunnel>,
}

/// One setting a real server needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// `key` (a path below /proc/sys, `net/ipv4/conf/all/arp_ignore`) at `value`; the values
    /// in `also_ok` are as good.
    Sysctl {
        key: String,
        value: &'static str,
        also_ok: &'static [&'static str],
    },
    /// The VIP on `lo`.
    Addr { addr: IpAddr, prefix: u8 },
    /// `lb-ctl decap` attached to `iface` with this GUE port (0: GUE off).
    Decap { iface: String, gue_port: u16 },
}

/// The loopback interface the VIPs go on.
pub const LO: &str = "lo";

fn conf(iface: &str, key: &str) -> String {
    format!("net/ipv4/conf/{iface}/{key}")
}

/// Every setting `req` needs, in the order `up` makes them: the ARP sysctls first (so the
/// VIP is never answered for on the link), decapsulation, then the VIPs.
pub fn wanted(req: &Request) -> Vec<Want> {
    let mut scopes = vec!["all".to_string()];
    scopes.extend(req.ifaces.iter().filter(|i| *i != "all").cloned());
    let mut out = Vec::new();
    for scope in &scopes {
        // arp_ignore 2 (the sender's subnet too) is stricter than 1 and as good.
        out.push(Want::Sysctl {
            key: conf(scope, "arp_ignore"),
            value: "1",
            also_ok: &["2"],
        });
        out.push(Want::Sysctl {
            key: conf(scope, "arp_announce"),
            value: "2",
            also_ok: &[],
        });
    }
    if let Some(t) = req.tunnel {
        // The inner source is the client: strict reverse-path filtering drops it. Off is as
        // good as loose (the kernel takes the higher of `all` and the interface).
        for scope in &scopes {
            out.push(Want::Sysctl {
                key: conf(scope, "rp_filter"),
                value: "2",
                also_ok: &["0"],
            });
        }
        let gue_port = match t {
            Tunnel::Ipip => 0,
            Tunnel::Gue(p) => p,
        };
        for iface in &req.ifaces {
            out.push(Want::Decap {
                iface: iface.clone(),
                gue_port,
            });
        }
    }
    for &addr in &req.vips {
        out.push(Want::Addr {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        });
    }
    out
}

/// What the system holds now, for the settings in question.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Each sysctl's value; `None`: no such file (no such interface).
    pub sysctls: BTreeMap<String, Option<String>>,
    /// The addresses of `lo`.
    pub lo: Vec<(IpAddr, u8)>,
    /// Where decapsulation is attached and its GUE port; `None`: nowhere.
    pub decap: Option<(Vec<String>, u16)>,
}

impl Observed {
    fn sysctl(&self, key: &str) -> Option<&str> {
        self.sysctls.get(key).and_then(|v| v.as_deref())
    }

    fn has_addr(&self, addr: IpAddr, prefix: u8) -> bool {
        self.lo.contains(&(addr, prefix))
    }

    /// The GUE port of decapsulation on `iface`, if it is attached there.
    fn decap_on(&self, iface: &str) -> Option<u16> {
        let (ifaces, port) = self.decap.as_ref()?;
        ifaces.iter().any(|i| i == iface).then_some(*port)
    }
}

/// One change `up` made, recorded in the state file with what was there before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    Sysctl {
        key: String,
        before: String,
        after: String,
    },
    /// An address added to `lo` (it was not there).
    Addr { addr: IpAddr, prefix: u8 },
    /// Decapsulation attached to `iface` (`gue_port_before: None`: it was not attached
    /// there), or its GUE port changed from `gue_port_before`.
    Decap {
        iface: String,
        gue_port: u16,
        gue_port_before: Option<u16>,
    },
}

/// What `up` recorded: the state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub changes: Vec<Change>,
}

/// One action on the system; its text is the command that does the same by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Sysctl { key: String, value: String },
    AddAddr { addr: IpAddr, prefix: u8 },
    DelAddr { addr: IpAddr, prefix: u8 },
    Attach { iface: String, gue_port: u16 },
    Detach { iface: String },
}

/// A sysctl key as `sysctl` names it: `net.ipv4.conf.eth0.arp_ignore` (an interface name
/// with a dot keeps the slashes, as `sysctl` wants it: `net/ipv4/conf/eth0.100/arp_ignore`).
pub fn dotted(key: &str) -> String {
    if key.split('/').any(|part| part.contains('.')) {
        key.to_string()
    } else {
        key.replace('/', ".")
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Sysctl { key, value } => write!(f, "sysctl -w {}={value}", dotted(key)),
            Step::AddAddr { addr, prefix } => {
                let nodad = if addr.is_ipv6() { " nodad" } else { "" };
                write!(f, "ip addr add {addr}/{prefix} dev {LO}{nodad}")
            }
            Step::DelAddr { addr, prefix } => write!(f, "ip addr del {addr}/{prefix} dev {LO}"),
            Step::Attach { iface, gue_port } => {
                write!(f, "lb-ctl decap attach {iface} --gue-port {gue_port}")
            }
            Step::Detach { iface } => write!(f, "lb-ctl decap detach {iface}"),
        }
    }
}

impl Change {
    /// The step that makes this change.
    pub fn step(&self) -> Step {
        match self {
            Change::Sysctl { key, after, .. } => Step::Sysctl {
                key: key.clone(),
                value: after.clone(),
            },
            Change::Addr { addr, prefix } => Step::AddAddr {
                addr: *addr,
                prefix: *prefix,
            },
            Change::Decap {
                iface, gue_port, ..
            } => Step::Attach {
                iface: iface.clone(),
                gue_port: *gue_port,
            },
        }
    }
}

/// How one wanted setting stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    Ok,
    /// Not as wanted: what was found, and the change that would fix it.
    Wrong {
        found: String,
        change: Change,
    },
    /// Cannot be had here (a sysctl of an interface that does not exist).
    Missing(String),
}

/// Where `want` stands on `observed`.
pub fn standing(want: &Want, observed: &Observed) -> Standing {
    match want {
        Want::Sysctl {
            key,
            value,
            also_ok,
        } => match observed.sysctl(key) {
            None => Standing::Missing(format!(
                "/proc/sys/{key} does not exist (no such interface, or IPv4 is off)"
            )),
            Some(v) if v == *value || also_ok.contains(&v) => Standing::Ok,
            Some(v) => Standing::Wrong {
                found: v.to_string(),
                change: Change::Sysctl {
                    key: key.clone(),
                    before: v.to_string(),
                    after: value.to_string(),
                },
            },
        },
        Want::Addr { addr, prefix } if observed.has_addr(*addr, *prefix) => Standing::Ok,
        Want::Addr { addr, prefix } => Standing::Wrong {
            found: "absent".into(),
            change: Change::Addr {
                addr: *addr,
                prefix: *prefix,
            },
        },
        Want::Decap { iface, gue_port } => match observed.decap_on(iface) {
            Some(p) if p == *gue_port => Standing::Ok,
            before => Standing::Wrong {
                found: match before {
                    None => "not attached".into(),
                    Some(0) => "attached with GUE off".into(),
                    Some(p) => format!("attached with GUE port {p}"),
                },
                change: Change::Decap {
                    iface: iface.clone(),
                    gue_port: *gue_port,
                    gue_port_before: before,
                },
            },
        },
    }
}

/// The changes `up` makes, in order: every wanted setting that is not as wanted. A setting
/// that cannot be had is an error naming it.
pub fn plan_up(wants: &[Want], observed: &Observed) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    for w in wants {
        match standing(w, observed) {
            Standing::Ok => {}
            Standing::Wrong { change, .. } => out.push(change),
            Standing::Missing(why) => return Err(why),
        }
    }
    Ok(out)
}

/// What `down` does to undo `changes` (newest first), and the changes it leaves alone because
/// the system no longer shows what `up` set (someone changed it since), each with why.
pub fn plan_down(changes: &[Change], observed: &Observed) -> (Vec<Step>, Vec<String>) {
    let mut steps = Vec::new();
    let mut kept = Vec::new();
    for c in changes.iter().rev() {
        match c {
            Change::Sysctl { key, before, after } => match observed.sysctl(key) {
                Some(v) if v == after => steps.push(Step::Sysctl {
                    key: key.clone(),
                    value: before.clone(),
                }),
                found => kept.push(format!(
                    "{} left at {}: `up` set it to {after}, it has changed since (it was \
                     {before} before `up`)",
                    dotted(key),
                    found.unwrap_or("nothing (gone)")
                )),
            },
            Change::Addr { addr, prefix } if observed.has_addr(*addr, *prefix) => {
                steps.push(Step::DelAddr {
                    addr: *addr,
                    prefix: *prefix,
                })
            }
            Change::Addr { addr, prefix } => kept.push(format!(
                "{addr}/{prefix} is no longer on {LO}: nothing to remove"
            )),
            Change::Decap {
                iface,
                gue_port,
                gue_port_before,
            } => match (observed.decap_on(iface), gue_port_before) {
                (Some(p), None) if p == *gue_port => steps.push(Step::Detach {
                    iface: iface.clone(),
                }),
                (Some(p), Some(before)) if p == *gue_port => steps.push(Step::Attach {
                    iface: iface.clone(),
                    gue_port: *before,
                }),
                (found, _) => kept.push(format!(
                    "decapsulation on {iface} left as it is ({}): it has changed since `up`",
                    match found {
                        None => "not attached".to_string(),
                        Some(p) => format!("GUE port {p}"),
                    }
                )),
            },
        }
    }
    (steps, kept)
}

/// One line of `check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub what: String,
    pub standing: Standing,
}

/// What a wanted setting is called in `check`'s lines.
pub fn name(want: &Want) -> String {
    match want {
        Want::Sysctl { key, value, .. } => format!("{} = {value}", dotted(key)),
        Want::Addr { addr, prefix } => format!("{addr}/{prefix} on {LO}"),
        Want::Decap { iface, gue_port } => match gue_port {
            0 => format!("decapsulation on {iface} (IPIP, GUE off)"),
            p => format!("decapsulation on {iface} (IPIP, GUE port {p})"),
        },
    }
}

/// Every wanted setting with where it stands.
pub fn check(wants: &[Want], observed: &Observed) -> Vec<Line> {
    wants
        .iter()
        .map(|w| Line {
            what: name(w),
            standing: standing(w, observed),
        })
        .collect()
}

/// The lines for people: `WHAT: ok` or `WHAT: wrong: FOUND, want X; fix: COMMAND`.
pub fn render_check(lines: &[Line]) -> String {
    let mut out = String::new();
    for l in lines {
        let (what, status) = (&l.what, &l.standing);
        let want = what.rsplit_once(" = ").map(|(_, v)| v).unwrap_or("present");
        out += &match status {
            Standing::Ok => format!("{what}: ok\n"),
            Standing::Wrong { found, change } => {
                format!(
                    "{what}: wrong: {found}, want {want}; fix: {}\n",
                    change.step()
                )
            }
            Standing::Missing(why) => {
                format!("{what}: wrong: {why}; fix: check the interface name\n")
            }
        };
    }
    out
}

/// Whether every line is ok.
pub fn all_ok(lines: &[Line]) -> bool {
    lines.iter().all(|l| l.standing == Standing::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(tunnel: Option<Tunnel>) -> Request {
        Request {
            vips: vec!["10.0.0.9".parse().unwrap(), "fd00::9".parse().unwrap()],
            ifaces: vec!["eth0".into()],
            tunnel,
        }
    }

    /// A bare host: every sysctl 0, `lo` with its own addresses only.
    fn bare() -> Observed {
        let mut sysctls = BTreeMap::new();
        for scope in ["all", "eth0"] {
            for key in ["arp_ignore", "arp_announce", "rp_filter"] {
                sysctls.insert(conf(scope, key), Some("0".to_string()));
            }
        }
        sysctls.insert(conf("all", "rp_filter"), Some("1".to_string()));
        Observed {
            sysctls,
            lo: vec![
                ("127.0.0.1".parse().unwrap(), 8),
                ("::1".parse().unwrap(), 128),
            ],
            decap: None,
        }
    }

    /// `observed` after `steps` ran.
    fn run(mut o: Observed, steps: &[Step]) -> Observed {
        for s in steps {
            match s {
                Step::Sysctl { key, value } => {
                    o.sysctls.insert(key.clone(), Some(value.clone()));
                }
                Step::AddAddr { addr, prefix } => o.lo.push((*addr, *prefix)),
                Step::DelAddr { addr, prefix } => o.lo.retain(|a| a != &(*addr, *prefix)),
                Step::Attach { iface, gue_port } => {
                    let (mut ifaces, _) = o.decap.take().unwrap_or_default();
                    if !ifaces.contains(iface) {
                        ifaces.push(iface.clone());
                    }
                    o.decap = Some((ifaces, *gue_port));
                }
                Step::Detach { iface } => {
                    if let Some((ifaces, p)) = o.decap.take() {
                        let left: Vec<String> = ifaces.into_iter().filter(|i| i != iface).collect();
                        o.decap = (!left.is_empty()).then_some((left, p));
                    }
                }
            }
        }
        o
    }

    fn steps_of(changes: &[Change]) -> Vec<Step> {
        changes.iter().map(Change::step).collect()
    }

    #[test]
    fn up_on_a_bare_host_sets_sysctls_first_then_the_vips_and_down_restores_it_exactly() {
        let wants = wanted(&req(None));
        let before = bare();
        let changes = plan_up(&wants, &before).expect("a plan");
        let texts: Vec<String> = steps_of(&changes).iter().map(Step::to_string).collect();
        assert_eq!(
            texts,
            [
                "sysctl -w net.ipv4.conf.all.arp_ignore=1",
                "sysctl -w net.ipv4.conf.all.arp_announce=2",
                "sysctl -w net.ipv4.conf.eth0.arp_ignore=1",
                "sysctl -w net.ipv4.conf.eth0.arp_announce=2",
                "ip addr add 10.0.0.9/32 dev lo",
                "ip addr add fd00::9/128 dev lo nodad",
            ]
        );
        let up = run(before.clone(), &steps_of(&changes));
        assert!(
            all_ok(&check(&wants, &up)),
            "{}",
            render_check(&check(&wants, &up))
        );
        assert_eq!(
            plan_up(&wants, &up),
            Ok(vec![]),
            "a second up changes nothing"
        );
        // The state file round-trips, and down undoes newest first.
        let state: State = serde_json::from_str(
            &serde_json::to_string(&State {
                changes: changes.clone(),
            })
            .unwrap(),
        )
        .unwrap();
        let (steps, kept) = plan_down(&state.changes, &up);
        assert!(kept.is_empty(), "{kept:?}");
        assert_eq!(
            steps[0].to_string(),
            "ip addr del fd00::9/128 dev lo",
            "addresses go first"
        );
        let mut after = run(up, &steps);
        after.lo.sort();
        let mut want = before;
        want.lo.sort();
        assert_eq!(after, want);
    }

    #[test]
    fn what_was_already_set_is_no_change_and_stays_after_down() {
        let wants = wanted(&req(None));
        let mut before = bare();
        before
            .sysctls
            .insert(conf("all", "arp_ignore"), Some("2".into()));
        before
            .sysctls
            .insert(conf("eth0", "arp_announce"), Some("2".into()));
        before.lo.push(("10.0.0.9".parse().unwrap(), 32));
        let changes = plan_up(&wants, &before).expect("a plan");
        let texts: Vec<String> = steps_of(&changes).iter().map(Step::to_string).collect();
        assert_eq!(
            texts,
            [
                "sysctl -w net.ipv4.conf.all.arp_announce=2",
                "sysctl -w net.ipv4.conf.eth0.arp_ignore=1",
                "ip addr add fd00::9/128 dev lo nodad",
            ]
        );
        let up = run(before.clone(), &steps_of(&changes));
        let (steps, _) = plan_down(&changes, &up);
        let after = run(up, &steps);
        assert_eq!(after.sysctl(&conf("all", "arp_ignore")), Some("2"));
        assert_eq!(after.sysctl(&conf("eth0", "arp_announce")), Some("2"));
        assert!(after.has_addr("10.0.0.9".parse().unwrap(), 32));
        assert_eq!(after.sysctls, before.sysctls);
    }

    #[test]
    fn down_leaves_what_changed_since_up_and_says_so() {
        let wants = wanted(&req(None));
        let before = bare();
        let changes = plan_up(&wants, &before).unwrap();
        let mut up = run(before, &steps_of(&changes));
        up.sysctls
            .insert(conf("eth0", "arp_ignore"), Some("8".into()));
        up.lo
            .retain(|(a, _)| *a != "10.0.0.9".parse::<IpAddr>().unwrap());
        let (steps, kept) = plan_down(&changes, &up);
        assert_eq!(steps.len(), 4, "{steps:?}");
        assert_eq!(
            kept,
            [
                "10.0.0.9/32 is no longer on lo: nothing to remove",
                "net.ipv4.conf.eth0.arp_ignore left at 8: `up` set it to 1, it has changed since \
                 (it was 0 before `up`)",
            ]
        );
    }

    #[test]
    fn tunnel_mode_wants_loose_rp_filter_and_decapsulation_and_down_detaches_it() {
        let wants = wanted(&req(Some(Tunnel::Gue(6080))));
        let before = bare();
        let lines = check(&wants, &before);
        let text = render_check(&lines);
        assert!(
            text.contains(
                "net.ipv4.conf.all.rp_filter = 2: wrong: 1, want 2; fix: sysctl -w \
                 net.ipv4.conf.all.rp_filter=2\n"
            ),
            "{text}"
        );
        // rp_filter 0 (off) is as good as loose.
        assert!(
            text.contains("net.ipv4.conf.eth0.rp_filter = 2: ok\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "decapsulation on eth0 (IPIP, GUE port 6080): wrong: not attached, want present; \
                 fix: lb-ctl decap attach eth0 --gue-port 6080\n"
            ),
            "{text}"
        );
        let changes = plan_up(&wants, &before).unwrap();
        let up = run(before.clone(), &steps_of(&changes));
        assert!(all_ok(&check(&wants, &up)));
        let (steps, kept) = plan_down(&changes, &up);
        assert!(kept.is_empty());
        assert!(steps.contains(&Step::Detach {
            iface: "eth0".into()
        }));
        let mut after = run(up, &steps);
        after.lo.sort();
        let mut want = before;
        want.lo.sort();
        assert_eq!(after, want);
        // Already attached with another port: down puts that port back.
        let mut other = bare();
        other.decap = Some((vec!["eth0".into()], 0));
        let changes = plan_up(&wants, &other).unwrap();
        let up = run(other, &steps_of(&changes));
        let (steps, _) = plan_down(&changes, &up);
        assert!(steps.contains(&Step::Attach {
            iface: "eth0".into(),
            gue_port: 0
        }));
    }

    #[test]
    fn check_lines_on_a_bare_host_name_the_setting_what_was_found_and_the_fix() {
        let wants = wanted(&req(None));
        let mut o = bare();
        o.sysctls
            .insert(conf("all", "arp_ignore"), Some("1".into()));
        let lines = check(&wants, &o);
        assert!(!all_ok(&lines));
        assert_eq!(
            render_check(&lines),
            "net.ipv4.conf.all.arp_ignore = 1: ok
net.ipv4.conf.all.arp_announce = 2: wrong: 0, want 2; fix: sysctl -w net.ipv4.conf.all.arp_announce=2
net.ipv4.conf.eth0.arp_ignore = 1: wrong: 0, want 1; fix: sysctl -w net.ipv4.conf.eth0.arp_ignore=1
net.ipv4.conf.eth0.arp_announce = 2: wrong: 0, want 2; fix: sysctl -w net.ipv4.conf.eth0.arp_announce=2
10.0.0.9/32 on lo: wrong: absent, want present; fix: ip addr add 10.0.0.9/32 dev lo
fd00::9/128 on lo: wrong: absent, want present; fix: ip addr add fd00::9/128 dev lo nodad
"
        );
    }

    #[test]
    fn an_interface_without_sysctls_is_an_error_naming_it() {
        let wants = wanted(&Request {
            vips: vec![],
            ifaces: vec!["nosuch0".into()],
            tunnel: None,
        });
        let err = plan_up(&wants, &bare()).unwrap_err();
        assert!(
            err.contains("/proc/sys/net/ipv4/conf/nosuch0/arp_ignore"),
            "{err}"
        );
        assert_eq!(
            dotted("net/ipv4/conf/eth0.100/arp_ignore"),
            "net/ipv4/conf/eth0.100/arp_ignore"
        );
    }
}
