//! Line numbers of the fields of a YAML document.
//!
//! serde_yaml reports a line for syntax errors but none for values once parsed, so the text is
//! read a second time with `yaml-rust2`'s event parser, whose events carry positions, and every
//! node is given the path a diagnostic uses for it: `services`, `services[1]`,
//! `services[1].backends[0].weight`. A key's path maps to the line of the key; a sequence item's
//! path maps to the line where the item starts (for `- name: web`, the line of `name`).
//!
//! This pass is best-effort: serde_yaml decides what is valid YAML. If `yaml-rust2` stops early
//! on something serde_yaml accepted, the paths it had seen keep their lines and the others fall
//! back to their nearest ancestor's line (see [`LineMap::line_or_parent`]).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
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

/// Path -> 1-based line, for the first document of a YAML text.
#[derive(Debug, Default)]
pub(crate) struct LineMap {
    lines: HashMap<String, usize>,
    /// Duplicate keys, in document order.
    pub duplicates: Vec<DuplicateKey>,
    /// Line of the start of each document seen (a second one is an error for serde_yaml).
    pub documents: Vec<usize>,
}

impl LineMap {
    /// Reads `text` and records the line of every path it can.
    pub(crate) fn build(text: &str) -> LineMap {
        let mut builder = Builder {
            chars: text.chars().collect(),
            ..Builder::default()
        };
        let mut parser = Parser::new_from_str(text);
        // A scan error only ends the pass: what was recorded before it stays usable.
        let _ = parser.load(&mut builder, true);
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
                            let key_path = join_key(path, k);
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

impl MarkedEventReceiver for Builder {
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
