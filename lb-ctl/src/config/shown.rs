//! Text from a service file, made safe to show in a diagnostic or a log line: control
//! characters (and Unicode's bidirectional overrides) are escaped, never written raw, and long
//! text is cut with a note of its full length, so a file cannot write terminal escape
//! sequences or megabytes into an error.

use std::fmt::Write as _;

/// How many characters of one value, key or name a diagnostic quotes.
pub const SHOWN_CHARS: usize = 64;

/// How long one diagnostic's message or field path may be, at most (a last guard; the values
/// quoted in it are cut to [`SHOWN_CHARS`] already).
pub(crate) const MAX_MESSAGE_CHARS: usize = 1024;

/// `s` escaped, and cut to its first [`SHOWN_CHARS`] characters with its full length noted:
/// `aaaa...` becomes `aaaa… (5242880 bytes in all)`.
pub fn shown(s: &str) -> String {
    cut(s, SHOWN_CHARS)
}

/// `s` escaped, and cut to its first `max` characters with its full length noted.
pub(crate) fn cut(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    for c in chars.by_ref().take(max) {
        escape_char(c, &mut out);
    }
    if chars.next().is_some() {
        let _ = write!(out, "… ({} bytes in all)", s.len());
    }
    out
}

/// `s` with every control character escaped (`\x1b`, `\n`, `\u{202e}`); everything else as
/// is. Idempotent: its output has no control characters left.
pub(crate) fn escape_controls(s: &str) -> String {
    if !s.chars().any(needs_escape) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        escape_char(c, &mut out);
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        // Bidirectional marks, embeddings, overrides and isolates: they reorder what a
        // terminal shows.
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if needs_escape(c) && (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_cuts() {
        assert_eq!(shown("web"), "web");
        assert_eq!(shown("a\x1b[31mb\n\u{202e}c"), "a\\x1b[31mb\\n\\u{202e}c");
        assert_eq!(shown("\u{9b}x"), "\\x9bx");
        let long = "x".repeat(100);
        assert_eq!(
            shown(&long),
            format!("{}… (100 bytes in all)", "x".repeat(64))
        );
        assert_eq!(escape_controls(&shown("\x07")), "\\x07");
        assert_eq!(escape_controls("plain"), "plain");
    }
}
