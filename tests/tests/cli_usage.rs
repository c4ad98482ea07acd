//! `lb-ctl --help` is the manual, and a namespace that does not exist is a clear error. No
//! lab: the binary runs without `--pin-dir` (and `LB_PIN_DIR` unset), or with a namespace and
//! a pin directory that do not exist, read-only commands only.

use std::path::Path;

use lb_tests::{
    lab::BASE_PREFIX,
    lbctl::{lb_ctl, require_root},
};

#[test]
fn help_is_the_manual() {
    let out = lb_ctl(&["--help"]).ok();
    for text in [
        "LVS-DR",
        "Typical use:",
        "lb-ctl apply -f services.yaml",
        "attach",
        "detach",
        "apply",
        "list",
        "stats",
        "--pin-dir",
        "--netns",
    ] {
        assert!(out.stdout.contains(text), "no `{text}` in:\n{out}");
    }
    let out = lb_ctl(&["apply", "--help"]).ok();
    for text in [
        "Example file:",
        "services:",
        "- address: 192.168.58.135",
        "--dry-run",
        "--resolve-timeout",
    ] {
        assert!(out.stdout.contains(text), "no `{text}` in:\n{out}");
    }
    let out = lb_ctl(&["stats", "--help"]).ok();
    for text in ["--json", "--prometheus", "--watch", "lb_*"] {
        assert!(out.stdout.contains(text), "no `{text}` in:\n{out}");
    }
    let out = lb_ctl(&["attach", "--help"]).ok();
    assert!(out.stdout.contains("--mode"), "{out}");
}

#[test]
fn an_unknown_namespace_is_a_clear_error() {
    require_root().unwrap_or_else(|e| panic!("{e:#}"));
    let name = format!("{BASE_PREFIX}{}-nosuchns", std::process::id());
    assert!(!Path::new("/run/netns").join(&name).exists());
    let pin_dir = format!("/sys/fs/bpf/{name}");
    // Read-only commands only: a bug that ignored --netns must not touch the root namespace.
    for args in [&["list"][..], &["stats", "--json"]] {
        let mut full = vec!["--pin-dir", &pin_dir, "--netns", &name];
        full.extend_from_slice(args);
        let out = lb_ctl(&full).fails();
        assert!(
            out.stderr.contains(&format!(
                "opening network namespace /run/netns/{name} (does it exist?"
            )),
            "{out}"
        );
    }
    assert!(!Path::new(&pin_dir).exists());
}
