//! `announce:`: hand a service's VIP to the local BGP speaker while the service is healthy
//! enough, for several active directors behind ECMP. At the top level it is every service's
//! default; a service's own block replaces it key by key (as `tunnel:` blocks merge).
//!
//! ```yaml
//! announce:
//!   via: bird                 # bird | frr | kernel: one mechanism (a route in `table`); the
//!                             # name says which speaker's snippet in examples/ fits
//!   table: 100                # the kernel routing table the speaker imports; default 100,
//!                             # 1..=4294967295 but not 253, 254, 255 (default, main, local)
//!   withdraw_when: no_backend # no_backend (default) | below_quorum (needs `quorum`)
//!   drain: 5s                 # on SIGTERM: withdraw, keep forwarding this long; default 0s
//! ```

use std::time::Duration;

use super::fields::{Diags, Field, Fields, choice, duration, integer};
use super::tree::join_key;

pub(super) const ANNOUNCE_FIELDS: &[&str] = &["via", "table", "withdraw_when", "drain"];

/// The table a block that names none uses.
pub const DEFAULT_TABLE: u32 = 100;

/// A service's announcement, its block merged with the top-level one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Announce {
    pub via: Via,
    /// The kernel routing table the VIP's route is kept in.
    pub table: u32,
    pub withdraw_when: WithdrawWhen,
    /// How long to keep forwarding after the withdrawal on SIGTERM/SIGINT.
    pub drain: Duration,
}

/// `announce.via`: the speaker the route is meant for. All take the same route; the name is
/// for people (and says which example snippet fits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    Bird,
    Frr,
    Kernel,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Bird => "bird",
            Via::Frr => "frr",
            Via::Kernel => "kernel",
        }
    }
}

/// `announce.withdraw_when`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WithdrawWhen {
    /// No backend is up with a weight above 0 (a sorry server does not count).
    NoBackend,
    /// The service's quorum (`quorum`, `hysteresis`) is lost.
    BelowQuorum,
}

impl WithdrawWhen {
    pub fn as_str(self) -> &'static str {
        match self {
            WithdrawWhen::NoBackend => "no_backend",
            WithdrawWhen::BelowQuorum => "below_quorum",
        }
    }
}

/// One `announce:` block as written, each value with the line and path it came from.
#[derive(Clone, Default)]
pub(super) struct Written {
    pub via: Option<Via>,
    pub table: Option<u32>,
    /// With the line and path of the key (a service without `quorum` is reported there).
    pub withdraw_when: Option<(WithdrawWhen, usize, String)>,
    pub drain: Option<Duration>,
    /// The block's line, when given.
    pub line: Option<usize>,
    /// False when any of it was invalid (reported).
    pub valid: bool,
}

/// Reads the `announce:` block of `f` (the file's top level, or a service).
pub(super) fn read(f: &Fields, d: &mut Diags) -> Written {
    let mut w = Written {
        valid: true,
        ..Written::default()
    };
    let Some(field) = f.optional("announce") else {
        return w;
    };
    let path = field.path();
    w.line = Some(field.line);
    let what = (
        "a mapping like `{ via: bird, table: 100, withdraw_when: no_backend, drain: 5s }`",
        None,
    );
    let Some(a) = Fields::of(&field, &path, ANNOUNCE_FIELDS, what, d) else {
        w.valid = false;
        return w;
    };
    let mut take = |key: &str, d: &mut Diags, f: &mut dyn FnMut(Field, &mut Diags) -> bool| {
        if let Some(v) = a.optional(key)
            && !f(v, d)
        {
            w.valid = false;
        }
    };
    let mut via = None;
    take("via", d, &mut |v, d| {
        let r = choice(
            v.node,
            "a speaker",
            "`bird`, `frr` or `kernel`",
            |s| match s {
                "bird" => Some(Via::Bird),
                "frr" => Some(Via::Frr),
                "kernel" => Some(Via::Kernel),
                _ => None,
            },
        );
        via = d.ok(&v, r);
        via.is_some()
    });
    let mut table = None;
    take("table", d, &mut |v, d| {
        let r = integer(v.node, 1, u32::MAX.into()).and_then(|t| match t {
            253..=255 => Err(format!(
                "table {t} is the kernel's {} table, which the director itself routes by; \
                 give a table of its own that no `ip rule` uses (default {DEFAULT_TABLE})",
                ["default", "main", "local"][(t - 253) as usize]
            )),
            t => Ok(t as u32),
        });
        table = d.ok(&v, r);
        table.is_some()
    });
    let mut withdraw_when = None;
    take("withdraw_when", d, &mut |v, d| {
        let r = choice(
            v.node,
            "a withdrawal condition",
            "`no_backend` or `below_quorum`",
            |s| match s {
                "no_backend" => Some(WithdrawWhen::NoBackend),
                "below_quorum" => Some(WithdrawWhen::BelowQuorum),
                _ => None,
            },
        );
        withdraw_when = d.ok(&v, r).map(|x| (x, v.line, v.path()));
        withdraw_when.is_some()
    });
    let mut drain = None;
    take("drain", d, &mut |v, d| {
        drain = d.ok(&v, duration(v.node));
        drain.is_some()
    });
    w.via = via;
    w.table = table;
    w.withdraw_when = withdraw_when;
    w.drain = drain;
    w
}

/// A service's announcement: its own block over the file's, key by key; `Some(None)` when
/// neither has one, None when invalid (reported). `quorum` is the service's; `path` and
/// `line` are the service entry's.
pub(super) fn service(
    top: &Written,
    own: &Written,
    quorum: Option<u32>,
    path: &str,
    line: usize,
    d: &mut Diags,
) -> Option<Option<Announce>> {
    if !top.valid || !own.valid {
        return None;
    }
    if top.line.is_none() && own.line.is_none() {
        return Some(None);
    }
    let withdraw_when = own.withdraw_when.as_ref().or(top.withdraw_when.as_ref());
    if let (Some((WithdrawWhen::BelowQuorum, at, at_path)), None) = (withdraw_when, quorum) {
        let inherited = own.withdraw_when.is_none();
        let (at_line, at_path, whose) = if inherited {
            (
                line,
                join_key(path, "announce.withdraw_when"),
                format!(" (the top-level `announce.withdraw_when`, line {at})"),
            )
        } else {
            (*at, at_path.clone(), String::new())
        };
        d.at(
            at_line,
            &at_path,
            format!(
                "`below_quorum`{whose} needs the service's `quorum`; add `quorum: N` to the \
                 service, or write `withdraw_when: no_backend`"
            ),
        );
        return None;
    }
    Some(Some(Announce {
        via: own.via.or(top.via).unwrap_or(Via::Bird),
        table: own.table.or(top.table).unwrap_or(DEFAULT_TABLE),
        withdraw_when: withdraw_when.map_or(WithdrawWhen::NoBackend, |w| w.0),
        drain: own.drain.or(top.drain).unwrap_or(Duration::ZERO),
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Config, Diagnostic, parse};

    fn ok(text: &str) -> Config {
        parse(text, "f.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn errs(text: &str) -> Vec<Diagnostic> {
        match parse(text, "f.yaml") {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.diagnostics,
        }
    }

    use crate::config::test_util::has;

    /// A file of one service `web` with `service` lines added to it, after `top` lines.
    fn file(top: &str, service: &str) -> String {
        format!(
            "{top}services:\n  - name: web\n    vip: 192.168.58.133\n    port: 80\n{service}    \
             backends:\n      - address: 192.168.58.135\n"
        )
    }

    #[test]
    fn every_field_and_the_defaults() {
        let c = ok(&file(
            "",
            "    quorum: 1\n    announce:\n      via: frr\n      table: 4000000000\n      \
             withdraw_when: below_quorum\n      drain: 1m30s\n",
        ));
        assert_eq!(
            c.services[0].announce,
            Some(Announce {
                via: Via::Frr,
                table: 4_000_000_000,
                withdraw_when: WithdrawWhen::BelowQuorum,
                drain: Duration::from_secs(90),
            })
        );
        // An empty mapping takes every default.
        let c = ok(&file("", "    announce: {}\n"));
        assert_eq!(
            c.services[0].announce,
            Some(Announce {
                via: Via::Bird,
                table: 100,
                withdraw_when: WithdrawWhen::NoBackend,
                drain: Duration::ZERO,
            })
        );
        // No block anywhere: nothing is announced.
        assert_eq!(ok(&file("", "")).services[0].announce, None);
        let c = ok(&file("", "    announce: { via: kernel, table: 1 }\n"));
        assert_eq!(
            c.services[0].announce.map(|a| (a.via, a.table)),
            Some((Via::Kernel, 1))
        );
    }

    #[test]
    fn a_service_block_replaces_the_top_level_one_key_by_key() {
        let top = "announce:\n  via: frr\n  table: 200\n  drain: 5s\n";
        let text = format!(
            "{top}services:\n  - name: a\n    vip: 192.168.58.133\n    port: 80\n  - name: b\n    \
             vip: 192.168.58.134\n    port: 80\n    quorum: 2\n    announce:\n      table: 300\n      \
             withdraw_when: below_quorum\n"
        );
        let c = ok(&text);
        assert_eq!(
            c.services[0].announce,
            Some(Announce {
                via: Via::Frr,
                table: 200,
                withdraw_when: WithdrawWhen::NoBackend,
                drain: Duration::from_secs(5),
            })
        );
        assert_eq!(
            c.services[1].announce,
            Some(Announce {
                via: Via::Frr,
                table: 300,
                withdraw_when: WithdrawWhen::BelowQuorum,
                drain: Duration::from_secs(5),
            })
        );
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let d = errs(&file(
            "",
            "    announce:\n      via: gobgp\n      table: 254\n      withdraw_when: sometimes\n      \
             drain: -5s\n      color: red\n",
        ));
        has(
            &d,
            6,
            "services[0].announce.via",
            "`gobgp` is not a speaker; expected `bird`, `frr` or `kernel`",
        );
        has(
            &d,
            7,
            "services[0].announce.table",
            "table 254 is the kernel's main table",
        );
        has(
            &d,
            8,
            "services[0].announce.withdraw_when",
            "expected `no_backend` or `below_quorum`",
        );
        has(&d, 9, "services[0].announce.drain", "not a duration");
        has(
            &d,
            10,
            "services[0].announce.color",
            "unknown field `color`",
        );
        for (table, what) in [
            ("0", "out of range"),
            ("4294967296", "out of range"),
            ("253", "default table"),
            ("255", "local table"),
        ] {
            let d = errs(&file("", &format!("    announce: {{ table: {table} }}\n")));
            has(&d, 5, "services[0].announce.table", what);
        }
        let d = errs(&file("", "    announce: bird\n"));
        has(&d, 5, "services[0].announce", "expected a mapping like");
        let d = errs(&file("announce: { drain: 5 }\n", ""));
        has(&d, 1, "announce.drain", "expected a duration");
    }

    #[test]
    fn below_quorum_needs_a_quorum() {
        let d = errs(&file(
            "",
            "    announce:\n      withdraw_when: below_quorum\n",
        ));
        has(
            &d,
            6,
            "services[0].announce.withdraw_when",
            "needs the service's `quorum`",
        );
        // Inherited from the top level: reported at the service, naming the top-level line.
        let d = errs(&file("announce:\n  withdraw_when: below_quorum\n", ""));
        has(
            &d,
            4,
            "services[0].announce.withdraw_when",
            "(the top-level `announce.withdraw_when`, line 2) needs the service's `quorum`",
        );
        // With a quorum it is fine.
        ok(&file(
            "announce:\n  withdraw_when: below_quorum\n",
            "    quorum: 1\n",
        ));
    }
}
