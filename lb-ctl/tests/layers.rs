//! The import rules between lb-ctl's folders, checked on the source: a folder may name only
//! the folders its row allows (through `crate::` paths). docs/architecture.md describes the
//! layering; these rows are the part of it that is enforced.

use std::{collections::BTreeSet, fs, path::Path};

/// (folder, the other folders it may import), from the bottom up, as docs/architecture.md's
/// layout table says. config, sched and plan are pure; maps is the only folder that makes bpf
/// syscalls; health reports and the daemon decides, so health and vrrp reach neither the plan
/// nor the maps (both use `net`: routes, neighbours, raw frames); sync (the wire format, its
/// HMAC, what is sent and accepted) is pure but for its socket, and the daemon reads and writes
/// the maps for it; exec runs commands for health and VRRP and knows neither; import (a
/// keepalived.conf into a service file) is pure and reads config only. daemon and cli,
/// at the top, may import every folder (cli all but daemon).
const RULES: &[(&str, &[&str])] = &[
    ("config", &[]),
    ("sched", &[]),
    ("exec", &[]),
    ("plan", &["config", "sched"]),
    ("net", &["config", "plan"]),
    ("maps", &["config", "plan", "net"]),
    ("health", &["config", "exec", "net"]),
    ("vrrp", &["config", "exec", "net"]),
    ("sync", &["config"]),
    ("realserver", &["maps", "net"]),
    ("doctor", &["config", "maps", "net", "health"]),
    ("import", &["config"]),
    (
        "cli",
        &[
            "config",
            "sched",
            "plan",
            "maps",
            "net",
            "exec",
            "health",
            "vrrp",
            "sync",
            "realserver",
            "doctor",
            "import",
        ],
    ),
    (
        "live",
        &[
            "config", "sched", "plan", "maps", "net", "exec", "health", "vrrp", "sync", "cli",
        ],
    ),
];

/// The top-level modules that `text` names through `crate::` (`crate::a::b`,
/// `crate::{a, b::c}`).
fn crate_imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            out.insert(ident(rest));
            continue;
        };
        // The names at the group's first level: after its `{` and after each `,` there.
        let mut depth = 1;
        let mut at_name = true;
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => break,
                '}' => depth -= 1,
                ',' if depth == 1 => at_name = true,
                c if at_name && !c.is_whitespace() => {
                    out.insert(ident(&group[j..]));
                    at_name = false;
                }
                _ => {}
            }
        }
    }
    out.remove("");
    out
}

/// Every `.rs` file below `dir`, with its text.
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            out.push((path.display().to_string(), text));
        }
    }
    out
}

#[test]
fn the_parser_sees_plain_and_grouped_paths() {
    let text = "use crate::{\n    config::{A, B},\n    exec::run,\n};\nlet x = crate::plan::apply(); \
                // crate::maps::Maps\n";
    let seen: Vec<String> = crate_imports(text).into_iter().collect();
    assert_eq!(seen, ["config", "exec", "maps", "plan"]);
}

#[test]
fn folders_import_only_what_their_layer_allows() {
    let root = format!("{}/", env!("CARGO_MANIFEST_DIR"));
    let src = Path::new(&root).join("src");
    let mut broken = Vec::new();
    for (folder, allowed) in RULES {
        let files = sources(&src.join(folder));
        assert!(!files.is_empty(), "no source files in src/{folder}");
        for (path, text) in files {
            let path = path.strip_prefix(&*root).unwrap_or(&path);
            if text.contains("super::super") {
                broken.push(format!("{path}: `super::super` leaves src/{folder}"));
            }
            for name in crate_imports(&text) {
                if name != *folder && !allowed.contains(&name.as_str()) {
                    broken.push(format!("{path}: imports crate::{name}"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports across the layers (see the rules in this file):\n{}",
        broken.join("\n")
    );
}
