//! The one parse of a service file: YAML text to a tree of [`Node`]s that keep their lines.
//!
//! `saphyr-parser`'s event parser reads the text once, event by event (no recursion), and the tree
//! is built from the events on an explicit stack. The same loop is the input guard: the
//! [`Guard`] sees every event first and stops the parse at the first node nested deeper than
//! [`MAX_DEPTH`](super::MAX_DEPTH), or once aliases would expand the document past
//! [`MAX_EXPANDED_NODES`](super::MAX_EXPANDED_NODES) nodes, before anything is copied.
//!
//! Plain scalars are typed as YAML 1.2's core schema does (`~`/`null`, `true`/`false`, decimal,
//! `0x`/`0o`/`0b` integers, floats); quoted scalars are strings. Aliases are expanded, merge
//! keys (`<<`) applied, and duplicate keys collected, each with its path and both lines.

use std::collections::HashMap;
use std::rc::Rc;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, ScanError, Tag};
use smol_str::SmolStr;

use super::guard::Guard;
use super::shown::shown;

/// A value of the file with the line where it starts (1-based).
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Clone, Debug)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    /// A float, kept as written.
    Float(String),
    /// Inline up to 23 bytes (keys, addresses, names): a tree of a large file is mostly no
    /// heap allocations, and drops fast.
    Str(SmolStr),
    /// Shared, so an alias is a reference, not a copy.
    Seq(Rc<[Node]>),
    Map(Rc<[Entry]>),
    /// A scalar or collection with a tag other than YAML's own (`!thing`).
    Tagged(String),
}

/// One key of a mapping and its value.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The key as written (a collection used as a key is described: `a mapping`).
    pub key: SmolStr,
    /// The line of the key.
    pub line: usize,
    pub value: Node,
}

impl Node {
    /// The entries, when this is a mapping.
    pub(crate) fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(&entries[..]),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// What the value is, for "expected X, found Y".
    pub(crate) fn describe(&self) -> String {
        match &self.value {
            Value::Null => "nothing".to_string(),
            Value::Bool(b) => format!("the boolean `{b}`"),
            Value::Int(n) => format!("the number `{n}`"),
            Value::Float(f) => format!("the number `{}`", shown(f)),
            Value::Str(s) => format!("the string `{}`", shown(s)),
            Value::Seq(_) => "a list".to_string(),
            Value::Map(_) => "a mapping".to_string(),
            Value::Tagged(t) => format!("a value tagged `{}`", shown(t)),
        }
    }
}

/// A key that appears twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DuplicateKey {
    /// Path of the key, e.g. `services[0].port`.
    pub path: String,
    pub key: SmolStr,
    /// Line of the second occurrence.
    pub line: usize,
    /// Line of the first occurrence.
    pub first_line: usize,
}

/// Why the text is no tree: a line, and what to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A syntax error, a limit passed, a second document, a bad merge: one diagnostic.
    At { line: usize, message: String },
    /// Keys repeated in a mapping (YAML forbids it): one diagnostic each.
    Duplicates(Vec<DuplicateKey>),
}

/// Reads `text` into a tree; `Ok(None)` when it holds no document (empty, or only comments).
pub(crate) fn parse(text: &str) -> Result<Option<Node>, Refusal> {
    let mut b = Builder {
        stack: Vec::new(),
        entries: Vec::new(),
        items: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        duplicates: false,
        documents: 0,
    };
    let mut guard = Guard::default();
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (ev, span) = next.map_err(|e| syntax_error(text, &e))?;
        if ev == Event::StreamEnd {
            break;
        }
        let mark = span.start;
        guard.event(&ev).map_err(|message| Refusal::At {
            line: mark.line().max(1),
            message,
        })?;
        b.event(ev, &mark)?;
    }
    let root = b.root.take();
    if b.duplicates
        && let Some(root) = &root
    {
        let mut found = Vec::new();
        find_duplicates(root, "", &mut found);
        found.sort_by_key(|d| d.line);
        return Err(Refusal::Duplicates(found));
    }
    Ok(root)
}

fn syntax_error(text: &str, e: &ScanError) -> Refusal {
    let line = e.marker().line().max(1);
    let info = e.info();
    if info == "recursion limit exceeded" {
        // The scanner looks ahead through flow collections (`[[[...`) and stops at 256 levels,
        // before the guard sees their first event.
        return Refusal::At {
            line,
            message: Guard::too_deep(),
        };
    }
    let mut message = info.to_string();
    let tabs = |l: usize| {
        text.lines()
            .nth(l.saturating_sub(1))
            .is_some_and(|s| s.contains('\t'))
    };
    if tabs(line) || (line > 1 && tabs(line - 1) && info.contains("tab")) {
        message.push_str(" (YAML does not allow tabs for indentation; use spaces)");
    }
    Refusal::At { line, message }
}

enum Frame {
    Map {
        line: usize,
        anchor: usize,
        /// Where its entries start in [`Builder::entries`].
        start: usize,
        /// The key read, waiting for its value: (text, line).
        key: Option<(SmolStr, usize)>,
        /// Key -> index, once the mapping is large enough for a linear search to cost.
        index: Option<HashMap<SmolStr, usize>>,
    },
    Seq {
        line: usize,
        anchor: usize,
        /// Where its items start in [`Builder::items`].
        start: usize,
    },
}

/// Mappings with more keys than this are searched for duplicates through a hash map.
const LINEAR_KEYS: usize = 16;

struct Builder {
    stack: Vec<Frame>,
    /// The entries and items of the open collections, each collection's at the end: a
    /// finished one is moved out into one allocation of its exact size.
    entries: Vec<Entry>,
    items: Vec<Node>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    /// A mapping repeated a key: the tree is walked for them once it is built.
    duplicates: bool,
    documents: usize,
}

impl Builder {
    fn event(&mut self, ev: Event<'_>, mark: &Marker) -> Result<(), Refusal> {
        let line = mark.line().max(1);
        match ev {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Refusal::At {
                        line,
                        message: "the file holds more than one document (a second `---`); a \
                                  service file is one document"
                            .to_string(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = if self.expecting_key() {
                    // Keys stay text: a key's path is what was written.
                    Value::Str(SmolStr::new(&text))
                } else {
                    scalar(&text, style, tag.as_deref())
                };
                self.done(Node { line, value }, anchor)?;
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id) else {
                    return Err(Refusal::At {
                        line,
                        message: "an alias names an unknown anchor".to_string(),
                    });
                };
                let mut node = node.clone();
                node.line = line;
                self.done(node, 0)?;
            }
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                line,
                anchor,
                start: self.entries.len(),
                key: None,
                index: None,
            }),
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                line,
                anchor,
                start: self.items.len(),
            }),
            Event::MappingEnd | Event::SequenceEnd => {
                let (line, anchor, value) = match self.stack.pop() {
                    Some(Frame::Map {
                        line,
                        anchor,
                        start,
                        ..
                    }) => {
                        let entries = if self.entries[start..].iter().any(|e| e.key == "<<") {
                            Rc::from(merge(self.entries.drain(start..).collect())?)
                        } else {
                            self.entries.drain(start..).collect()
                        };
                        (line, anchor, Value::Map(entries))
                    }
                    Some(Frame::Seq {
                        line,
                        anchor,
                        start,
                    }) => (
                        line,
                        anchor,
                        Value::Seq(self.items.drain(start..).collect()),
                    ),
                    None => return Ok(()),
                };
                self.done(Node { line, value }, anchor)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    /// A node is complete: it goes into its parent (as a key or a value) or is the root.
    fn done(&mut self, node: Node, anchor: usize) -> Result<(), Refusal> {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { .. }) => self.items.push(node),
            Some(Frame::Map {
                start, key, index, ..
            }) => match key.take() {
                None => {
                    let text = match node.value {
                        Value::Str(s) if s.is_empty() => SmolStr::new_static("~"),
                        Value::Str(s) => s,
                        _ => SmolStr::new(node.describe()),
                    };
                    *key = Some((text, node.line));
                }
                Some((text, key_line)) => {
                    let entries = &self.entries[*start..];
                    let seen = match index {
                        Some(index) => index.contains_key(&text),
                        None => entries.iter().any(|e| e.key == text),
                    };
                    self.duplicates |= seen && text != "<<";
                    if let Some(index) = index {
                        index.entry(text.clone()).or_insert(entries.len());
                    } else if entries.len() == LINEAR_KEYS {
                        let mut map: HashMap<SmolStr, usize> = HashMap::new();
                        for (i, e) in entries.iter().enumerate() {
                            map.entry(e.key.clone()).or_insert(i);
                        }
                        map.entry(text.clone()).or_insert(entries.len());
                        *index = Some(map);
                    }
                    self.entries.push(Entry {
                        key: text,
                        line: key_line,
                        value: node,
                    });
                }
            },
        }
        Ok(())
    }
}

/// Applies merge keys: the entries of `<<: *map` (or `<<: [*a, *b]`, the first winning) that
/// the mapping does not have itself are added after its own.
fn merge(entries: Vec<Entry>) -> Result<Vec<Entry>, Refusal> {
    let (merges, mut own): (Vec<Entry>, Vec<Entry>) =
        entries.into_iter().partition(|e| e.key == "<<");
    for m in merges {
        let sources = match m.value.value {
            Value::Map(_) => vec![m.value],
            Value::Seq(items) => items.to_vec(),
            _ => {
                return Err(Refusal::At {
                    line: m.line,
                    message: format!(
                        "bad merge key `<<`: expected a mapping or a list of mappings, found {}",
                        m.value.describe()
                    ),
                });
            }
        };
        for source in sources {
            let Value::Map(added) = source.value else {
                return Err(Refusal::At {
                    line: m.line,
                    message: "bad merge key `<<`: a list of merged values may hold only \
                              mappings"
                        .to_string(),
                });
            };
            for e in added.iter() {
                if !own.iter().any(|o| o.key == e.key) {
                    own.push(e.clone());
                }
            }
        }
    }
    Ok(own)
}

/// Every repeated key under `node` (at `path`), with both lines.
fn find_duplicates(node: &Node, path: &str, out: &mut Vec<DuplicateKey>) {
    match &node.value {
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                find_duplicates(item, &join_index(path, i), out);
            }
        }
        Value::Map(entries) => {
            let mut first: HashMap<&str, usize> = HashMap::new();
            for e in entries.iter() {
                let p = join_key(path, &path_key(&e.key));
                match first.get(e.key.as_str()) {
                    Some(&first_line) => out.push(DuplicateKey {
                        path: p.clone(),
                        key: e.key.clone(),
                        line: e.line,
                        first_line,
                    }),
                    None => {
                        first.insert(&e.key, e.line);
                    }
                }
                find_duplicates(&e.value, &p, out);
            }
        }
        _ => {}
    }
}

/// Keys longer than this are cut (with [`shown`]) in paths, which repeat every key of their
/// ancestors; the format's own keys are all shorter.
const MAX_PATH_KEY: usize = 64;

/// A mapping key as it appears in paths: cut when longer than the format's keys ever are.
pub(crate) fn path_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.chars().count() <= MAX_PATH_KEY {
        std::borrow::Cow::Borrowed(key)
    } else {
        std::borrow::Cow::Owned(shown(key))
    }
}

/// `parent.key`, or `key` at the top.
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[index]`.
pub(crate) fn join_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// A scalar's value: quoted ones are strings, plain ones typed by YAML 1.2's core schema, a
/// core tag (`!!str`) forces its type.
fn scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(tag) = tag {
        let core = tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!";
        return match tag.suffix.as_str() {
            "str" if core => Value::Str(SmolStr::new(text)),
            "int" | "float" | "bool" | "null" if core => plain(text),
            _ => Value::Tagged(format!("{}{}", tag.handle, tag.suffix)),
        };
    }
    if style == ScalarStyle::Plain {
        plain(text)
    } else {
        Value::Str(SmolStr::new(text))
    }
}

fn plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = integer(text) {
        return Value::Int(n);
    }
    if is_float(text) {
        return Value::Float(text.to_string());
    }
    Value::Str(SmolStr::new(text))
}

/// `[-+]?` then decimal digits (no leading zero: `0123` is a string, as in YAML 1.2), or
/// `0x`, `0o`, `0b` digits.
fn integer(s: &str) -> Option<i128> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(d) = digits.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = digits.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = digits.strip_prefix("0b") {
        (2, d)
    } else {
        if digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let n = i128::from_str_radix(digits, radix).ok()?;
    Some(if negative { -n } else { n })
}

fn is_float(s: &str) -> bool {
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if unsigned.len() > 1
        && unsigned.starts_with('0')
        && unsigned.bytes().all(|b| b.is_ascii_digit())
    {
        // Leading zeros: a string in YAML 1.2, as for integers.
        return false;
    }
    matches!(
        unsigned,
        ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN"
    ) || (unsigned.bytes().any(|b| b.is_ascii_digit())
        && unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && unsigned.parse::<f64>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line a diagnostic gives the field at `path` (a key's line; a list item's start).
    fn line_of(root: &Node, path: &str) -> Option<usize> {
        let mut node = root;
        let mut line = root.line;
        for part in path.split('.') {
            let (key, indexes) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !key.is_empty() {
                let e = node.entries()?.iter().find(|e| e.key == key)?;
                line = e.line;
                node = &e.value;
            }
            for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
                let Value::Seq(items) = &node.value else {
                    return None;
                };
                node = items.get(index.parse::<usize>().ok()?)?;
                line = node.line;
            }
        }
        Some(line)
    }

    fn tree(text: &str) -> Node {
        match parse(text) {
            Ok(Some(node)) => node,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn maps_keys_and_items() {
        let text = "\
services:
  - name: web
    vip: 1.2.3.4
    backends:
      - address: 10.0.0.1
        weight: 2
      - {address: 10.0.0.2, port: 80}
  -
    name: dns
    ? [complex, key]
    : {a: 1}
    port: 53
";
        let m = tree(text);
        let line = |p: &str| line_of(&m, p);
        assert_eq!(line("services"), Some(1));
        assert_eq!(line("services[0]"), Some(2));
        assert_eq!(line("services[0].name"), Some(2));
        assert_eq!(line("services[0].vip"), Some(3));
        assert_eq!(line("services[0].backends"), Some(4));
        assert_eq!(line("services[0].backends[0]"), Some(5));
        assert_eq!(line("services[0].backends[0].weight"), Some(6));
        assert_eq!(line("services[0].backends[1]"), Some(7));
        assert_eq!(line("services[0].backends[1].port"), Some(7));
        assert_eq!(line("services[1]"), Some(9));
        assert_eq!(line("services[1].name"), Some(9));
        assert_eq!(line("services[1].port"), Some(12));
        assert_eq!(line("services[1].a"), None);
        assert_eq!(line("services[1].a list"), Some(10));
    }

    #[test]
    fn finds_duplicate_keys() {
        assert_eq!(
            parse("services:\n  - name: a\n    port: 1\n    port: 2\n").map(|_| ()),
            Err(Refusal::Duplicates(vec![DuplicateKey {
                path: "services[0].port".into(),
                key: "port".into(),
                line: 4,
                first_line: 3,
            }]))
        );
    }

    #[test]
    fn empty_items_are_at_their_dash() {
        let m = tree("list:\n  -\n\n  - ~\n  -   # note\n\n\n  - x\n  -\n");
        assert_eq!(line_of(&m, "list[0]"), Some(2));
        assert_eq!(line_of(&m, "list[1]"), Some(4));
        assert_eq!(line_of(&m, "list[2]"), Some(5));
        assert_eq!(line_of(&m, "list[3]"), Some(8));
        assert_eq!(line_of(&m, "list[4]"), Some(9));
    }

    #[test]
    fn scalars_are_typed_as_yaml_1_2_core() {
        let m = tree(
            "a: [~, null, '', true, False, 12, -3, 0x10, 0o17, 0b11, 1.5, 1e3, .inf, 0123, \
             yes, '12', !!str 7, 99999999999999999999]\n",
        );
        let Some(Value::Seq(items)) = m.entries().map(|e| e[0].value.value.clone()) else {
            unreachable!()
        };
        let got: Vec<String> = items.iter().map(Node::describe).collect();
        assert_eq!(
            got,
            [
                "nothing",
                "nothing",
                "the string ``",
                "the boolean `true`",
                "the boolean `false`",
                "the number `12`",
                "the number `-3`",
                "the number `16`",
                "the number `15`",
                "the number `3`",
                "the number `1.5`",
                "the number `1e3`",
                "the number `.inf`",
                "the string `0123`",
                "the string `yes`",
                "the string `12`",
                "the string `7`",
                "the number `99999999999999999999`",
            ]
        );
    }
}
