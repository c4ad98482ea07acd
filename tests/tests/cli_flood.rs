//! `flood:` in the service file and what `list` and `stats` show of the half-open table: the
//! budget goes to the data path's `SETTINGS` through `apply` (shown by `--dry-run`, written
//! only when it differs, refused with file, line and field when bad, back to 0 when the block
//! goes, a value written by hand put back), and the half-open table's size is `attach
//! --syn-flows`.
//!
//! Each test builds its own lab with [`CliLab`]
//! (`lb_tests::cli`: the seed topology without servers, director-1 `.134` with the VIP `.133`;
//! `docs/lab.md` has the rules kept here) and runs the real binary (`cargo build -p lb-ctl`
//! first; `cargo xtask test` does) with `--netns <director-1> --pin-dir /sys/fs/bpf/<lab
//! prefix>`. Dropping the lab detaches, removes the pins and deletes the namespaces, also when
//! a test fails. Without root, BPF or namespaces the tests fail saying what is missing.
//! There is no traffic but ARP.

use lb_tests::cli::{CliLab, SERVICES_V1, bpftool};
use serde_json::Value;

const SYN_FLOWS: u64 = 4096;
const FLOWS: u64 = 8192;

/// The JSON fields of both tables and the budget.
fn tables(stats: &Value) -> [u64; 5] {
    [
        "flows",
        "flows_capacity",
        "half_open",
        "half_open_capacity",
        "new_flows_per_cpu",
    ]
    .map(|k| {
        stats[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no number `{k}` in:\n{stats:#}"))
    })
}

fn budget(net: &CliLab) -> u64 {
    tables(&net.stats_json())[4]
}

fn with_flood(block: &str) -> String {
    format!("{SERVICES_V1}flood:\n{block}")
}

#[test]
fn the_flood_budget_is_applied_shown_refused_and_removed() {
    let net = CliLab::new();
    net.ctl(&[
        "attach",
        "eth0",
        "--syn-flows",
        &SYN_FLOWS.to_string(),
        "--flows",
        &FLOWS.to_string(),
    ])
    .ok();
    net.apply("services.yaml", SERVICES_V1).ok();

    // No block: no limit; the half-open table has the size attach was given.
    assert_eq!(tables(&net.stats_json()), [0, FLOWS, 0, SYN_FLOWS, 0]);
    let list = net.list();
    let first = list.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!(
            "XDP director (lb-ctl): 3 service(s), attached to eth0; connection table 0 of \
             {FLOWS} in use, half-open 0 of {SYN_FLOWS}"
        ),
        "{list}"
    );

    // A dry run shows the change and writes nothing.
    let file = net.file("flood.yaml", &with_flood("  new_flows_per_cpu: 200000\n"));
    let out = net.ctl(&["apply", "-f", &file, "--dry-run"]).ok();
    assert_eq!(
        out.stdout,
        "~ flood: new_flows_per_cpu 0 (no limit) -> 200000\ndry run: 1 change(s) not applied\n",
        "{out}"
    );
    assert_eq!(budget(&net), 0, "a dry run changed SETTINGS");

    // Applied: in SETTINGS, and in every view.
    let out = net.ctl(&["apply", "-f", &file]).ok();
    assert_eq!(
        out.stdout,
        format!("~ flood: new_flows_per_cpu 0 (no limit) -> 200000\napplied {file}: 1 change(s)\n"),
        "{out}"
    );
    assert_eq!(tables(&net.stats_json()), [0, FLOWS, 0, SYN_FLOWS, 200_000]);
    let list = net.list();
    assert!(
        list.lines().next().unwrap_or_default().ends_with(&format!(
            "half-open 0 of {SYN_FLOWS}; new entries at most 200000/s per CPU"
        )),
        "{list}"
    );
    let text = net.ctl(&["stats"]).ok().stdout;
    for line in [
        format!("  connections tracked: 0 of {FLOWS}; half-open: 0 of {SYN_FLOWS}"),
        "  new entries at most 200000/s per CPU".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    for reason in ["forwarded_over_budget", "drop_over_budget"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{reason} "))),
            "no `{reason}` row in:\n{text}"
        );
    }
    let prom = net.ctl(&["stats", "--prometheus"]).ok().stdout;
    for line in [
        "lb_half_open_entries 0".to_string(),
        format!("lb_half_open_capacity {SYN_FLOWS}"),
        "lb_new_flows_per_cpu 200000".to_string(),
    ] {
        assert!(prom.lines().any(|l| l == line), "no `{line}` in:\n{prom}");
    }

    // The same file again: nothing to write.
    let out = net.ctl(&["apply", "-f", &file]).ok();
    assert_eq!(
        out.stdout,
        format!("no changes: the data path already matches {file}\n"),
        "{out}"
    );

    // Bad values are refused with file, line and field, and change nothing, not even the
    // service the same file adds.
    let extra = "  - name: extra\n    vip: 192.168.58.133\n    port: 8080\n";
    for (value, message) in [
        ("-1", "-1 is out of range (0..=4294967295)"),
        ("lots", "expected an integer (0..=4294967295), found"),
        ("4294967296", "4294967296 is out of range (0..=4294967295)"),
    ] {
        let text = format!("{SERVICES_V1}{extra}flood:\n  new_flows_per_cpu: {value}\n");
        let line = text.lines().count();
        let bad = net.file("bad.yaml", &text);
        let out = net.ctl(&["apply", "-f", &bad]).fails();
        let want = format!("{bad}:{line}: flood.new_flows_per_cpu: {message}");
        assert!(out.stderr.contains(&want), "no `{want}` in:\n{out}");
        assert!(out.stderr.contains("1 error; nothing was applied"), "{out}");
        assert_eq!(budget(&net), 200_000, "a refused file changed SETTINGS");
        assert!(
            !net.list().contains("extra"),
            "a refused file added a service"
        );
    }

    // A value written by hand is put back by the next apply of the file.
    let pin = net.pins().join("SETTINGS").display().to_string();
    bpftool(&[
        "map", "update", "pinned", &pin, "key", "0", "0", "0", "0", "value", "7", "0", "0", "0",
        "0", "0", "0", "0",
    ])
    .ok();
    assert_eq!(budget(&net), 7, "bpftool's write is not what stats reads");
    let out = net.ctl(&["apply", "-f", &file]).ok();
    assert_eq!(
        out.stdout,
        format!("~ flood: new_flows_per_cpu 7 -> 200000\napplied {file}: 1 change(s)\n"),
        "{out}"
    );
    assert_eq!(budget(&net), 200_000);

    // The block removed: no limit again.
    let plain = net.file("services.yaml", SERVICES_V1);
    let out = net.ctl(&["apply", "-f", &plain]).ok();
    assert_eq!(
        out.stdout,
        format!(
            "~ flood: new_flows_per_cpu 200000 -> 0 (no limit)\napplied {plain}: 1 change(s)\n"
        ),
        "{out}"
    );
    assert_eq!(tables(&net.stats_json()), [0, FLOWS, 0, SYN_FLOWS, 0]);
    assert!(
        !net.list().contains("new entries at most"),
        "{}",
        net.list()
    );
}
