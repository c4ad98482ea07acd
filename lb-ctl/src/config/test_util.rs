//! What the config tests share.

use super::{Config, Diagnostic, parse};

/// `text` (top-level blocks) after an empty `services:` list, parsed; panics on an error.
#[track_caller]
pub(super) fn parse_ok(text: &str) -> Config {
    parse(&format!("services: []\n{text}"), "t.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// The error of `text` (top-level blocks) after an empty `services:` list; panics if it
/// parses.
#[track_caller]
pub(super) fn parse_err(text: &str) -> String {
    parse(&format!("services: []\n{text}"), "t.yaml")
        .expect_err("must be refused")
        .to_string()
}

/// Asserts that `diags` has one at `line` for `field` whose message contains `contains`.
#[track_caller]
pub(super) fn has(diags: &[Diagnostic], line: usize, field: &str, contains: &str) {
    assert!(
        diags
            .iter()
            .any(|d| d.line == line && d.field == field && d.message.contains(contains)),
        "no `{line}: {field}: ...{contains}...` in:\n{}",
        diags
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
