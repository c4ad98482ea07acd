//! Line numbers of the fields of a YAML document.
//!
//! serde_yaml reports a line for syntax errors but none for values once parsed, so the text is
//! read a second time with `yaml-rust2`'s event parser, whose events carry positions, and every
//! node is given the path a diagnostic uses for it: `services`, `services[1]`,
//! `services[1].backends[0].weight`. A key's path maps to the line of the key; a sequence item's
//! path maps to the line where the item starts (for `- name: web`, the line of `name`).
//!
//! The pass is also the guard that runs before any recursive parser sees the text: it reads the
//! events one by one (no recursion), and stops at the first node nested deeper than
//! [`MAX_DEPTH`] or once aliases would expand the document past [`MAX_EXPANDED_NODES`] nodes
//! (serde_yaml copies an alias's whole subtree each time it is used). [`LineMap::limit`] then
//! says where, and the file is refused without being parsed further.
//!
//! Otherwise this pass is best-effort: serde_yaml decides what is valid YAML. If `yaml-rust2` stops early
//! on something serde_yaml accepted, the paths it had seen keep their lines and the others fall
//! back to their nearest ancestor's line (see [`LineMap::line_or_parent`]).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A key that appears twice in one mapping (YAML forbids it; serde_yaml names only the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DuplicateKey {
    /// Path of the key, e.g. `services[0].port`.
    pub path: String,
    /// The key itself, e.g. `port`.
    pub key: String,
    /// Line of the second occurrence.
    pub line: usize,
    /// Line of the first occurrence.
    pub first_line: usize,
}

/// How deep collections may nest in a service file. The deepest the format uses is 6
/// (`services[0].check.status[0]`); 64 leaves room for anything YAML-shaped and keeps every
/// recursive parser far from the end of its stack.
pub const MAX_DEPTH: usize = 64;

/// How many nodes (scalars, lists, mappings) a service file may have once every alias is
/// expanded. 1000 services x 16 backends are about 150,000.
pub const MAX_EXPANDED_NODES: u64 = 2_000_000;

/// Keys longer than this are cut (with [`super::shown`]) in paths, which repeat every key of
/// their ancestors; the format's own keys are all shorter.
const MAX_PATH_KEY: usize = 64;

/// A limit the text went past: where, and what to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limit {
    pub line: usize,
    pub message: String,
}

/// Path -> 1-based line, for the first document of a YAML text.
#[derive(Debug, Default)]
pub(crate) struct LineMap {
    lines: HashMap<String, usize>,
    /// Set when the text nests too deep or expands too far: it must not be parsed further.
    pub limit: Option<Limit>,
    /// Duplicate keys, in document order.
    pub duplicates: Vec<DuplicateKey>,
    /// Line of the start of each document seen (a second one is an error for serde_yaml).
    pub documents: Vec<usize>,
}

impl LineMap {
    /// Reads `text` and records the line of every path it can, or stops at the first limit
    /// passed (see [`LineMap::limit`]).
    pub(crate) fn build(text: &str) -> LineMap {
        let mut builder = Builder {
            chars: text.chars().collect(),
            ..Builder::default()
        };
        let mut guard = Guard::default();
        let mut parser = Parser::new_from_str(text);
        // Event by event, not `Parser::load`, which recurses once per level of nesting. A scan
        // error only ends the pass: what was recorded before it stays usable.
        loop {
            let (ev, mark) = match parser.next_token() {
                Ok(next) => next,
                Err(e) => {
                    // yaml-rust2's scanner looks ahead through flow collections (`[[[...`) and
                    // stops at 256 levels, before the first event of the collection.
                    if e.info() == "recursion limit exceeded" {
                        builder.map.limit = Some(Limit {
                            line: e.marker().line().max(1),
                            message: Guard::too_deep(),
                        });
                    }
                    break;
                }
            };
            if ev == Event::StreamEnd {
                break;
            }
            if let Err(message) = guard.event(&ev) {
                builder.map.limit = Some(Limit {
                    line: mark.line().max(1),
                    message,
                });
                break;
            }
            builder.on_event(ev, mark);
        }
        builder.map
    }

    /// The line of `path`, if the path was seen.
    pub(crate) fn line(&self, path: &str) -> Option<usize> {
        self.lines.get(path).copied()
    }

    /// The first line where a mapping has the key `key`, at any depth.
    pub(crate) fn first_line_of_key(&self, key: &str) -> Option<usize> {
        self.lines
            .iter()
            .filter(|(path, _)| *path == key || path.ends_with(&format!(".{key}")))
            .map(|(_, line)| *line)
            .min()
    }

    /// The line of `path`, or else of its nearest ancestor that was seen, or else 1.
    pub(crate) fn line_or_parent(&self, path: &str) -> usize {
        let mut path = path;
        loop {
            if let Some(line) = self.line(path) {
                return line;
            }
            match parent(path) {
                Some(p) => path = p,
                None => return 1,
            }
        }
    }
}

/// The path without its last component: `a[1].b` -> `a[1]` -> `a` -> none.
pub(crate) fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = if path.ends_with(']') {
        path.rfind('[')
    } else {
        path.rfind('.')
    };
    Some(cut.map_or("", |i| &path[..i]))
}

/// A mapping key as it appears in paths: cut when longer than the format's keys ever are.
pub(crate) fn path_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.chars().count() <= MAX_PATH_KEY {
        std::borrow::Cow::Borrowed(key)
    } else {
        std::borrow::Cow::Owned(super::shown::shown(key))
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

enum Frame {
    /// A mapping at `path`. `key` is the path of the value expected next; `None` while a key is
    /// expected, or when the key was not a plain scalar (its value then gets no path).
    Map {
        path: String,
        expecting_key: bool,
        key: Option<String>,
    },
    /// A sequence at `path`; `next` is the index of its next item.
    Seq { path: String, next: usize },
    /// Inside a node that has no path (a complex key, or the value of one): nesting depth.
    Skip { depth: usize },
}

#[derive(Default)]
struct Builder {
    /// The text, to find where an empty node is (see [`Builder::empty_node_line`]).
    chars: Vec<char>,
    map: LineMap,
    stack: Vec<Frame>,
    /// Only the first document is mapped; a second one is reported by serde_yaml.
    done: bool,
}

impl Builder {
    /// The line of an empty node (`-` or `key:` with nothing after it). Its event's mark points
    /// at the next token's content, possibly lines below and past that token's own `- `: the
    /// node is on the line of the last non-blank character before, once such a `-` on the
    /// mark's line is skipped. `mark` counts characters.
    fn empty_node_line(&self, mark: &Marker) -> usize {
        let line = mark.line().max(1);
        let mut newlines = 0;
        let mut skipped_dash = false;
        let mut i = mark.index().min(self.chars.len());
        while i > 0 {
            i -= 1;
            match self.chars[i] {
                '\n' => newlines += 1,
                c if c.is_whitespace() => {}
                '-' if newlines == 0 && !skipped_dash => skipped_dash = true,
                _ => break,
            }
        }
        line.saturating_sub(newlines).max(1)
    }

    fn record(&mut self, path: &str, line: usize) {
        self.map.lines.entry(path.to_string()).or_insert(line);
    }

    /// A node starts at `line`; `container` says whether it is a mapping or a sequence, and
    /// `key` holds the scalar's text when it is a plain scalar.
    fn node(&mut self, line: usize, container: Option<bool>, key: Option<&str>) {
        // The path of this node, or None when it has none (inside a complex key).
        let path: Option<String> = match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Skip { depth }) => {
                if container.is_some() {
                    *depth += 1;
                }
                return;
            }
            Some(Frame::Map {
                path,
                expecting_key,
                key: slot,
            }) => {
                if *expecting_key {
                    *expecting_key = false;
                    match (container, key) {
                        (None, Some(k)) => {
                            let key_path = join_key(path, &path_key(k));
                            *slot = Some(key_path.clone());
                            match self.map.lines.get(&key_path) {
                                Some(&first_line) => self.map.duplicates.push(DuplicateKey {
                                    path: key_path,
                                    key: k.to_string(),
                                    line,
                                    first_line,
                                }),
                                None => {
                                    self.map.lines.insert(key_path, line);
                                }
                            }
                        }
                        (None, None) => *slot = None,
                        (Some(_), _) => {
                            *slot = None;
                            self.stack.push(Frame::Skip { depth: 1 });
                        }
                    }
                    return;
                }
                *expecting_key = true;
                slot.take()
            }
            Some(Frame::Seq { path, next }) => {
                let item = join_index(path, *next);
                *next += 1;
                Some(item)
            }
        };
        match path {
            Some(path) => {
                self.record(&path, line);
                match container {
                    Some(true) => self.stack.push(Frame::Map {
                        path,
                        expecting_key: true,
                        key: None,
                    }),
                    Some(false) => self.stack.push(Frame::Seq { path, next: 0 }),
                    None => {}
                }
            }
            None => {
                if container.is_some() {
                    self.stack.push(Frame::Skip { depth: 1 });
                }
            }
        }
    }

    fn end(&mut self) {
        if let Some(Frame::Skip { depth }) = self.stack.last_mut()
            && *depth > 1
        {
            *depth -= 1;
            return;
        }
        self.stack.pop();
    }
}

/// Depth and alias expansion so far (see [`MAX_DEPTH`], [`MAX_EXPANDED_NODES`]).
#[derive(Default)]
struct Guard {
    depth: usize,
    /// Nodes so far, counting an alias as the nodes of what it names.
    nodes: u64,
    /// Anchored collections being read: (anchor id, `nodes` at their start, `depth` there).
    open: Vec<(usize, u64, usize)>,
    /// Anchor id -> (nodes, depth below it) of its subtree.
    anchors: HashMap<usize, (u64, usize)>,
    /// The deepest `depth` reached inside each open anchored collection (parallel to `open`).
    deepest: Vec<usize>,
}

impl Guard {
    fn event(&mut self, ev: &Event) -> Result<(), String> {
        match ev {
            Event::Scalar(_, _, anchor, _) => {
                self.add(1)?;
                if *anchor > 0 {
                    self.anchors.insert(*anchor, (1, 0));
                }
            }
            Event::Alias(anchor) => {
                let (nodes, below) = self.anchors.get(anchor).copied().unwrap_or((1, 0));
                self.add(nodes)?;
                self.reach(self.depth + below)?;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.add(1)?;
                self.depth += 1;
                self.reach(self.depth)?;
                if *anchor > 0 {
                    self.open.push((*anchor, self.nodes - 1, self.depth));
                    self.deepest.push(self.depth);
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(&(anchor, start, depth)) = self.open.last()
                    && depth == self.depth
                {
                    self.open.pop();
                    let deepest = self.deepest.pop().unwrap_or(depth);
                    self.anchors
                        .insert(anchor, (self.nodes - start, deepest + 1 - depth));
                }
                self.depth = self.depth.saturating_sub(1);
            }
            _ => {}
        }
        Ok(())
    }

    fn add(&mut self, nodes: u64) -> Result<(), String> {
        self.nodes = self.nodes.saturating_add(nodes);
        if self.nodes > MAX_EXPANDED_NODES {
            return Err(format!(
                "the document has more than {MAX_EXPANDED_NODES} nodes once its aliases (`*name`) \
                 are expanded, the limit; write the values out, or use fewer aliases of large \
                 anchors"
            ));
        }
        Ok(())
    }

    /// A node at nesting depth `depth` was seen.
    fn reach(&mut self, depth: usize) -> Result<(), String> {
        for d in &mut self.deepest {
            *d = (*d).max(depth);
        }
        if depth > MAX_DEPTH {
            return Err(Guard::too_deep());
        }
        Ok(())
    }

    fn too_deep() -> String {
        format!(
            "lists and mappings are nested more than {MAX_DEPTH} deep here, the limit; a service \
             file needs at most 6 levels: check the indentation and the brackets"
        )
    }
}

impl Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line().max(1);
        if let Event::DocumentStart = ev {
            self.map.documents.push(line);
            if self.map.documents.len() > 1 {
                self.done = true;
            }
            return;
        }
        if self.done {
            return;
        }
        match ev {
            Event::Scalar(ref text, style, ..) => {
                let line = if text.is_empty() && style == TScalarStyle::Plain {
                    self.empty_node_line(&mark)
                } else {
                    line
                };
                self.node(line, None, Some(text))
            }
            Event::Alias(_) => self.node(line, None, None),
            Event::MappingStart(..) => self.node(line, Some(true), None),
            Event::SequenceStart(..) => self.node(line, Some(false), None),
            Event::MappingEnd | Event::SequenceEnd => self.end(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let m = LineMap::build(text);
        assert_eq!(m.line("services"), Some(1));
        assert_eq!(m.line("services[0]"), Some(2));
        assert_eq!(m.line("services[0].name"), Some(2));
        assert_eq!(m.line("services[0].vip"), Some(3));
        assert_eq!(m.line("services[0].backends"), Some(4));
        assert_eq!(m.line("services[0].backends[0]"), Some(5));
        assert_eq!(m.line("services[0].backends[0].weight"), Some(6));
        assert_eq!(m.line("services[0].backends[1]"), Some(7));
        assert_eq!(m.line("services[0].backends[1].port"), Some(7));
        assert_eq!(m.line("services[1]"), Some(9));
        assert_eq!(m.line("services[1].name"), Some(9));
        assert_eq!(m.line("services[1].port"), Some(12));
        assert_eq!(m.line("services[1].a"), None);
        assert_eq!(m.line_or_parent("services[1].backends[3].weight"), 9);
        assert_eq!(m.line_or_parent("nothing.here"), 1);
        assert!(m.duplicates.is_empty());
    }

    #[test]
    fn finds_duplicate_keys() {
        let m = LineMap::build("services:\n  - name: a\n    port: 1\n    port: 2\n");
        assert_eq!(
            m.duplicates,
            vec![DuplicateKey {
                path: "services[0].port".into(),
                key: "port".into(),
                line: 4,
                first_line: 3,
            }]
        );
    }

    #[test]
    fn empty_items_are_at_their_dash() {
        let m = LineMap::build("list:\n  -\n\n  - ~\n  -   # note\n\n\n  - x\n  -\n");
        assert_eq!(m.line("list[0]"), Some(2));
        assert_eq!(m.line("list[1]"), Some(4));
        assert_eq!(m.line("list[2]"), Some(5));
        assert_eq!(m.line("list[3]"), Some(8));
        assert_eq!(m.line("list[4]"), Some(9));
    }

    #[test]
    fn parents() {
        assert_eq!(parent("a[1].b"), Some("a[1]"));
        assert_eq!(parent("a[1]"), Some("a"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
    }
}
