//! `lb-ctl import`: a keepalived.conf read and written as the equivalent service file.
//!
//! Pure (files in, text out): `lexer.rs` reads keepalived's block syntax (includes, comments,
//! quotes, lines kept), `keepalived.rs` maps its keywords onto the service file's parts
//! (`model.rs`), `emit.rs` writes them as YAML. What cannot be expressed is a [`Note`]:
//! `FILE:LINE: what: not supported: why` (the import is incomplete) or `... not needed: ...`
//! (nothing is lost: a keepalived process setting, an ifconfig label).

mod emit;
mod keepalived;
mod lexer;
mod model;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

pub use lexer::{ParseError, Pos};

/// Whether a note makes the import incomplete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Nothing to do here; the result behaves the same.
    NotNeeded,
    /// Left out or changed: the result differs from what keepalived does.
    NotSupported,
}

/// A line of keepalived.conf that was not imported as it is, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub pos: Pos,
    /// The line's keyword and words (`lb_algo lblc`).
    pub what: String,
    pub kind: Kind,
    pub why: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::NotNeeded => "not needed",
            Kind::NotSupported => "not supported",
        };
        write!(f, "{}: {}: {kind}: {}", self.pos, self.what, self.why)
    }
}

/// The service file made of a keepalived.conf, and what it does not carry over.
#[derive(Debug)]
pub struct Imported {
    pub yaml: String,
    pub notes: Vec<Note>,
}

impl Imported {
    /// Whether everything that matters was imported (no `not supported` note).
    pub fn complete(&self) -> bool {
        self.notes.iter().all(|n| n.kind == Kind::NotNeeded)
    }
}

/// Imports the keepalived.conf at `path` (and the files it includes).
pub fn import_file(path: &Path) -> Result<Imported, ParseError> {
    let (items, mut notes) = lexer::parse_file(path)?;
    Ok(finish(&items, &mut notes, &path.display().to_string()))
}

/// Imports `text` as the keepalived.conf `name` (includes relative to `dir`).
pub fn import_text(text: &str, name: &str, dir: &Path) -> Result<Imported, ParseError> {
    let (items, mut notes) = lexer::parse_text(text, name, dir)?;
    Ok(finish(&items, &mut notes, name))
}

fn finish(items: &[lexer::Item], notes: &mut Vec<Note>, name: &str) -> Imported {
    let model = keepalived::map(items, notes);
    Imported {
        yaml: emit::yaml(&model, name),
        notes: keepalived::dedup(std::mem::take(notes)),
    }
}
