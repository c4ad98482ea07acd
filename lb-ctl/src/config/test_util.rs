//! What the config tests share.

use super::Diagnostic;

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
