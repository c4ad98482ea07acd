//! `lb-ctl completions SHELL` and `lb-ctl man [DIR]`: the shell completion scripts and the
//! manual pages, generated from the clap definitions of `args.rs`, so that they say what
//! `--help` says.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use super::args::Cli;

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    out
}

/// Writes `lb-ctl.1` and one page per subcommand, at every depth (`lb-ctl-decap-attach.1`),
/// into `dir`; returns the paths written, the command's own page first.
pub fn write_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating {} for the manual pages", dir.display()))?;
    let mut cmd = Cli::command();
    // Global options (--pin-dir, --netns ...) are then listed on every subcommand's page too.
    cmd.build();
    let mut written = Vec::new();
    page(&cmd, "lb-ctl", dir, &mut written)?;
    Ok(written)
}

/// Renders `cmd` as the page `name`.1, then its subcommands as `name-SUB`.1.
fn page(cmd: &clap::Command, name: &str, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    // The page's NAME and SYNOPSIS use the command's name: `lb-ctl-decap-attach`.
    let named = cmd.clone().name(name.to_string());
    let mut text = Vec::new();
    clap_mangen::Man::new(named)
        .render(&mut text)
        .with_context(|| format!("rendering the manual page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        page(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_for_every_subcommand() {
        let dir = std::env::temp_dir().join(format!("lb-ctl-man-{}", std::process::id()));
        let written = write_pages(&dir).expect("writing the pages");
        let names: Vec<String> = (written.iter())
            .map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .map(Option::unwrap_or_default)
            .collect();
        for want in [
            "lb-ctl.1",
            "lb-ctl-run.1",
            "lb-ctl-list.1",
            "lb-ctl-decap.1",
            "lb-ctl-decap-attach.1",
            "lb-ctl-man.1",
        ] {
            assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
        }
        let run = std::fs::read_to_string(dir.join("lb-ctl-run.1")).expect("lb-ctl-run.1");
        assert!(run.contains("lb\\-ctl\\-run"), "{run}");
        assert!(run.contains("reload\\-settle"), "{run}");
        // Global options are on every page.
        assert!(run.contains("pin\\-dir"), "{run}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
