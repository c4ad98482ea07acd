//! Reading typed fields out of the tree, and collecting every problem on the way.
//!
//! A [`Fields`] is one mapping of the file with the keys its struct takes: unknown keys are
//! reported when it is made, and each field is then read by key, as absent, null or a [`Field`]
//! (its node, line and path). Converters (`string`, `port`, `address`, ...) turn a node into a
//! value or a message; [`Diags::ok`] files the message at the field's line and path. Nothing
//! stops at the first problem: a field that is wrong is reported and the others are still read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::limits::NAME_LEN;

use super::Diagnostic;
use super::shown::{MAX_MESSAGE_CHARS, cut, escape_controls, shown};
use super::tree::{Entry, Node, Value, join_index, join_key, path_key};

/// The diagnostics found so far.
pub(crate) struct Diags<'a> {
    pub file: &'a str,
    pub list: Vec<Diagnostic>,
}

impl Diags<'_> {
    /// A problem at `line`. What the message and field quote from the file was cut and escaped
    /// where it was quoted; as a last guard, both are escaped and bounded here too.
    pub(crate) fn at(&mut self, line: usize, field: &str, message: impl Into<String>) {
        let message = message.into();
        self.list.push(Diagnostic {
            file: self.file.to_string(),
            line,
            field: escape_controls(&cut(field, MAX_MESSAGE_CHARS)),
            message: escape_controls(&cut(&message, MAX_MESSAGE_CHARS)),
        });
    }

    /// A problem with `f`, at its line.
    pub(crate) fn field(&mut self, f: &Field, message: impl Into<String>) {
        self.at(f.line, &f.path(), message);
    }

    /// The value, or None with the message filed at `f`.
    pub(crate) fn ok<T>(&mut self, f: &Field, r: Result<T, String>) -> Option<T> {
        r.map_err(|m| self.field(f, m)).ok()
    }
}

/// One value of the file: its node, the line a diagnostic gives it (a key's line, or a list
/// item's start) and its path, made only when a problem is reported.
#[derive(Clone, Copy)]
pub(crate) struct Field<'n, 'p> {
    pub node: &'n Node,
    pub line: usize,
    parent: &'p str,
    key: Key<'n>,
}

#[derive(Clone, Copy)]
enum Key<'n> {
    Name(&'n str),
    Index(usize),
    None,
}

impl<'n, 'p> Field<'n, 'p> {
    /// The value at `path` (the root, or a value whose path was made already).
    pub(crate) fn at(node: &'n Node, line: usize, path: &'p str) -> Self {
        Field {
            node,
            line,
            parent: path,
            key: Key::None,
        }
    }

    pub(crate) fn path(&self) -> String {
        match self.key {
            Key::Name(k) => join_key(self.parent, &path_key(k)),
            Key::Index(i) => join_index(self.parent, i),
            Key::None => self.parent.to_string(),
        }
    }

    /// The items of a list, each a field at its own line; None when this is no list.
    pub(crate) fn items(
        &self,
        path: &'p str,
    ) -> Option<impl Iterator<Item = Field<'n, 'p>> + use<'n, 'p>> {
        match &self.node.value {
            Value::Seq(items) => Some(items.iter().enumerate().map(move |(i, node)| Field {
                node,
                line: node.line,
                parent: path,
                key: Key::Index(i),
            })),
            _ => None,
        }
    }
}

/// One mapping of the file, with the keys it may have.
pub(crate) struct Fields<'n, 'p> {
    entries: &'n [Entry],
    pub path: &'p str,
    pub line: usize,
}

impl<'n, 'p> Fields<'n, 'p> {
    /// The mapping `entries` at `path` (whose entry starts at `line`); every key not in
    /// `known` is reported.
    pub(crate) fn new(
        entries: &'n [Entry],
        path: &'p str,
        line: usize,
        known: &[&str],
        d: &mut Diags,
    ) -> Self {
        for e in entries {
            if !known.contains(&e.key.as_str()) {
                d.at(
                    e.line,
                    &join_key(path, &path_key(&e.key)),
                    unknown_field(&e.key, known),
                );
            }
        }
        Fields {
            entries,
            path,
            line,
        }
    }

    /// The mapping at `f` (whose path is `path`) with the keys `known`; None (reported) when
    /// it is no mapping: `expected` says what was (`a check (a mapping with `type`, ...)`),
    /// `empty` what to say of an empty entry (`None`: as of any other value).
    pub(crate) fn of(
        f: &Field<'n, '_>,
        path: &'p str,
        known: &[&str],
        (expected, empty): (&str, Option<&str>),
        d: &mut Diags,
    ) -> Option<Self> {
        match (f.node.entries(), empty) {
            (Some(entries), _) => Some(Fields::new(entries, path, f.line, known, d)),
            (None, Some(empty)) if f.node.is_null() => {
                d.at(f.line, path, empty);
                None
            }
            (None, _) => {
                let found = f.node.describe();
                d.at(f.line, path, format!("expected {expected}, found {found}"));
                None
            }
        }
    }

    /// The entries in file order.
    pub(crate) fn entries(&self) -> &'n [Entry] {
        self.entries
    }

    /// `key` with its value, null or not; None when absent.
    pub(crate) fn get(&self, key: &str) -> Option<Field<'n, 'p>> {
        self.entries.iter().find(|e| e.key == key).map(|e| Field {
            node: &e.value,
            line: e.line,
            parent: self.path,
            key: Key::Name(&e.key),
        })
    }

    /// `key` when it has a value; None when absent or null (an optional field's default).
    pub(crate) fn optional(&self, key: &str) -> Option<Field<'n, 'p>> {
        self.get(key).filter(|f| !f.node.is_null())
    }

    /// `key`, reported when absent or null.
    pub(crate) fn required(&self, key: &str, d: &mut Diags) -> Option<Field<'n, 'p>> {
        match self.get(key) {
            None => {
                d.at(
                    self.line,
                    &join_key(self.path, key),
                    format!("missing required field `{key}`"),
                );
                None
            }
            Some(f) if f.node.is_null() => {
                d.field(&f, format!("`{key}` has no value"));
                None
            }
            f => f,
        }
    }

    /// An optional field read with `convert`: `default` when absent or null, None when invalid
    /// (reported).
    pub(crate) fn or<T>(
        &self,
        key: &str,
        default: T,
        d: &mut Diags,
        convert: impl FnOnce(&Node) -> Result<T, String>,
    ) -> Option<T> {
        match self.optional(key) {
            None => Some(default),
            Some(f) => d.ok(&f, convert(f.node)),
        }
    }

    /// A required field read with `convert`; None when missing or invalid (reported).
    pub(crate) fn req<T>(
        &self,
        key: &str,
        d: &mut Diags,
        convert: impl FnOnce(&Node) -> Result<T, String>,
    ) -> Option<T> {
        let f = self.required(key, d)?;
        d.ok(&f, convert(f.node))
    }
}

/// `unknown field `k`; expected one of `a`, `b``.
pub(crate) fn unknown_field(key: &str, known: &[&str]) -> String {
    let expected = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("unknown field `{}`; expected one of {expected}", shown(key))
}

/// A string.
pub(crate) fn string(n: &Node) -> Result<String, String> {
    match &n.value {
        Value::Str(s) => Ok(s.to_string()),
        Value::Int(_) | Value::Float(_) | Value::Bool(_) => Err(format!(
            "expected a string, found {} (put it in quotes)",
            n.describe()
        )),
        _ => Err(format!("expected a string, found {}", n.describe())),
    }
}

/// An integer in `min..=max`; `range` is how the range is shown.
pub(crate) fn integer(n: &Node, min: i128, max: i128) -> Result<i128, String> {
    match n.value {
        Value::Int(v) if (min..=max).contains(&v) => Ok(v),
        Value::Int(v) => Err(format!("{v} is out of range ({min}..={max})")),
        _ => Err(format!(
            "expected an integer ({min}..={max}), found {}",
            n.describe()
        )),
    }
}

/// A port, or a weight: 0..=65535.
pub(crate) fn u16_value(n: &Node) -> Result<u16, String> {
    integer(n, 0, u16::MAX.into()).map(|v| v as u16)
}

/// A `u32` of at least `min`.
pub(crate) fn u32_value(n: &Node, min: u32) -> Result<u32, String> {
    integer(n, min.into(), u32::MAX.into()).map(|v| v as u32)
}

/// An interface name: 1-15 characters, no `/`, `:` or spaces, not `.` or `..`.
pub(crate) fn interface(n: &Node) -> Result<String, String> {
    let s = string(n)?;
    if s.is_empty()
        || s.len() >= libc::IFNAMSIZ
        || s.contains(['/', ' ', '\t', ':'])
        || s == "."
        || s == ".."
    {
        return Err(format!(
            "`{}` is not an interface name (1-15 characters, no `/`, `:` or spaces)",
            shown(&s)
        ));
    }
    Ok(s)
}

/// A boolean.
pub(crate) fn boolean(n: &Node) -> Result<bool, String> {
    match n.value {
        Value::Bool(b) => Ok(b),
        _ => Err(format!(
            "expected `true` or `false`, found {}",
            n.describe()
        )),
    }
}

/// A command: a non-empty string.
pub(crate) fn command(n: &Node) -> Result<String, String> {
    match &n.value {
        Value::Str(s) if !s.trim().is_empty() => Ok(s.to_string()),
        _ => Err(format!(
            "expected a command (a non-empty string), found {}",
            n.describe()
        )),
    }
}

/// A duration string (`500ms`, `1m30s`).
pub(crate) fn duration(n: &Node) -> Result<std::time::Duration, String> {
    match &n.value {
        Value::Str(s) => super::parse_duration(s),
        _ => Err(format!(
            "expected a duration such as `1s` or `500ms`, found {}",
            n.describe()
        )),
    }
}

/// One of `names` (`what` is `a protocol`, ...; `choices` lists them).
pub(crate) fn choice<T>(
    n: &Node,
    what: &str,
    choices: &str,
    from_name: impl FnOnce(&str) -> Option<T>,
) -> Result<T, String> {
    match &n.value {
        Value::Str(s) => {
            from_name(s).ok_or_else(|| format!("`{}` is not {what}; expected {choices}", shown(s)))
        }
        _ => Err(format!("expected {choices}, found {}", n.describe())),
    }
}

/// A unicast IPv4 or IPv6 address that can be `role` (`a VIP`, ...), see [`check_ip`].
pub(crate) fn address(n: &Node, role: &str) -> Result<IpAddr, String> {
    match &n.value {
        Value::Str(s) => check_ip(s, role),
        _ => Err(format!(
            "expected an IPv4 or IPv6 address, found {}",
            n.describe()
        )),
    }
}

/// Name rules: 1..=32 bytes of `[A-Za-z0-9_.-]`.
pub(crate) fn name(n: &Node) -> Result<String, String> {
    let name = string(n)?;
    if name.is_empty() {
        return Err("the name is empty".to_string());
    }
    if name.len() > NAME_LEN {
        return Err(format!(
            "`{}` is {} bytes long; at most {NAME_LEN} are allowed",
            shown(&name),
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "`{}` contains {c:?}; only letters, digits, `_`, `.` and `-` are allowed",
            shown(&name)
        ));
    }
    Ok(name)
}

/// An IPv4 unicast address that can be a VIP or a backend (`role`: "a VIP", ...): not in
/// 0.0.0.0/8 ("this network"), 127.0.0.0/8, 224.0.0.0/4 (multicast), 240.0.0.0/4 (reserved)
/// and not 255.255.255.255.
pub(crate) fn check_address(s: &str, role: &str) -> Result<Ipv4Addr, String> {
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

/// An error when `addr` (a `role`, "a backend") and the service's `vip` differ in family: in
/// direct routing the packet reaches the real server unchanged, addressed to the VIP.
pub(crate) fn same_family(addr: IpAddr, vip: Option<IpAddr>, role: &str) -> Result<(), String> {
    let family = |a: IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
    match vip {
        Some(vip) if vip.is_ipv4() != addr.is_ipv4() => Err(format!(
            "{addr} is an {} address but the service's VIP {vip} is {}; {role} must have the \
             VIP's family, since direct routing forwards the packet unchanged",
            family(addr),
            family(vip)
        )),
        _ => Ok(()),
    }
}

/// An IPv4 address as [`check_address`] takes it, or an IPv6 unicast address that can be a VIP
/// or a backend: not the unspecified address, loopback, multicast (ff00::/8), an IPv4-mapped
/// address (`::ffff:a.b.c.d`: write the IPv4 address itself) or link-local (fe80::/10, which
/// needs a zone the file cannot give).
pub(crate) fn check_ip(s: &str, role: &str) -> Result<IpAddr, String> {
    check_ip_in(s, role, false)
}

/// As [`check_ip`]; `link_local`: an IPv6 link-local address is allowed (VRRP peers and
/// virtual addresses live on one link; a service's addresses need no zone).
pub(crate) fn check_ip_in(s: &str, role: &str, link_local: bool) -> Result<IpAddr, String> {
    let Ok(addr) = s.parse::<Ipv6Addr>() else {
        return match s.parse::<Ipv4Addr>() {
            Ok(_) => check_address(s, role).map(IpAddr::V4),
            Err(_) => Err(format!(
                "`{}` is not a valid IPv4 or IPv6 address",
                shown(s)
            )),
        };
    };
    let zoned = (!link_local && addr.is_unicast_link_local())
        .then_some("a link-local address (fe80::/10, which needs an interface zone)");
    match not_unicast_v6(addr).or(zoned) {
        Some(what) => Err(format!(
            "{addr} is {what} and cannot be {role}; give a unicast address"
        )),
        None => Ok(IpAddr::V6(addr)),
    }
}

/// What an IPv6 `addr` is when it is no unicast host address, or None.
pub(crate) fn not_unicast_v6(addr: Ipv6Addr) -> Option<&'static str> {
    Some(if addr.is_unspecified() {
        "the unspecified address (::)"
    } else if addr.is_loopback() {
        "the loopback address (::1)"
    } else if addr.is_multicast() {
        "a multicast address (ff00::/8)"
    } else if addr.to_ipv4_mapped().is_some() {
        "an IPv4-mapped address (write the IPv4 address itself)"
    } else {
        return None;
    })
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
