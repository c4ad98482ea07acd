//! `lb-ctl completions` and `lb-ctl man`: the completion scripts load in their shell and the
//! manual pages render in `man` without a warning. No lab, no root.

use std::process::Command;

use lb_tests::lbctl::lb_ctl;

#[test]
fn bash_loads_the_completion() {
    let bin = lb_tests::lbctl::find_lb_ctl().expect("lb-ctl binary");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <('{}' completions bash) && complete -p lb-ctl",
            bin.display()
        ))
        .output()
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bash: {stdout}{stderr}");
    assert!(stderr.is_empty(), "bash warned: {stderr}");
    assert!(
        stdout.starts_with("complete ") && stdout.trim_end().ends_with(" lb-ctl"),
        "complete -p lb-ctl said: {stdout}"
    );
    // The script knows the subcommands and their options.
    let script = lb_ctl(&["completions", "bash"]).ok().stdout;
    for word in [
        "attach",
        "decap",
        "--reload-settle",
        "--rate",
        "--log-format",
    ] {
        assert!(script.contains(word), "no {word} in the bash completion");
    }
}

#[test]
fn zsh_and_fish_scripts() {
    let zsh = lb_ctl(&["completions", "zsh"]).ok().stdout;
    assert!(zsh.starts_with("#compdef lb-ctl"), "{zsh}");
    let fish = lb_ctl(&["completions", "fish"]).ok().stdout;
    assert!(
        fish.contains("complete -c lb-ctl") && fish.contains("reload-settle"),
        "{fish}"
    );
    // A shell it has no script for: clap's usage error (status 2).
    let bad = lb_ctl(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2), "{bad}");
    assert!(bad.stderr.contains("invalid value 'tcsh'"), "{bad}");
}

#[test]
fn man_renders_every_page_without_warnings() {
    let dir = std::env::temp_dir().join(format!("lb-ctl-man-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_s = dir.display().to_string();
    let out = lb_ctl(&["man", &dir_s]).ok();
    let pages: Vec<&str> = out.stdout.lines().collect();
    for name in [
        "lb-ctl.1",
        "lb-ctl-run.1",
        "lb-ctl-list.1",
        "lb-ctl-decap-attach.1",
    ] {
        assert!(
            pages.iter().any(|p| p.ends_with(&format!("/{name}"))),
            "no {name} among {pages:?}"
        );
    }
    // A page for the command and one for every subcommand at every depth (but `help`).
    fn count(c: &clap::Command) -> usize {
        1 + c
            .get_subcommands()
            .filter(|s| s.get_name() != "help")
            .map(count)
            .sum::<usize>()
    }
    let wanted = count(&<lb_ctl::cli::args::Cli as clap::CommandFactory>::command());
    assert!(wanted >= 15, "the definitions name {wanted} commands");
    assert_eq!(pages.len(), wanted, "{pages:?}");
    for page in &pages {
        let out = Command::new("man")
            .args(["--warnings", "-l", page])
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .output()
            .expect("running man (install man-db: cargo xtask setup)");
        let text = String::from_utf8_lossy(&out.stdout);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "man -l {page}: {warnings}");
        assert!(warnings.is_empty(), "man -l {page} warned:\n{warnings}");
        assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
        assert!(
            text.lines().all(|l| l.chars().count() <= 80),
            "{page}:\n{text}"
        );
    }
    let list = std::fs::read_to_string(dir.join("lb-ctl-list.1")).expect("lb-ctl-list.1");
    assert!(list.contains("ipvsadm \\-L \\-n \\-\\-rate"), "{list}");
    let _ = std::fs::remove_dir_all(&dir);
}
