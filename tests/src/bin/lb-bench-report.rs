//! `cargo xtask bench` (last step): gathers what the bench binaries wrote into
//! `bench/results/` (`datapath.json` from `lb-bench`, `lab.json` from `lb-bench-lab`,
//! `scale.json` from `lb-bench-scale`, `daemon.json` from `lb-bench-daemon`; any of them may be
//! missing), adds the machine, kernel,
//! date and commit, and writes
//!
//! - `latest.md`: Markdown tables with each target and whether it was met (also printed);
//! - `latest.json`: the same data, machine-readable;
//! - `latest.png`: a chart of ns/packet per data-path path against the XDP_TX baseline, and of
//!   requests/s per end-to-end setup (plotters, bitmap backend; text in DejaVu Sans or another
//!   TTF font found on the system: without one, the chart is skipped with a warning).
//!
//! Needs no root and sends no traffic.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use plotters::{prelude::*, style::FontStyle};
use serde_json::{Value, json};

fn parse_args() -> Result<PathBuf> {
    let mut dir = lb_tests::bench_results_dir();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = PathBuf::from(it.next().context("--dir needs a value")?),
            "--help" | "-h" => {
                println!("lb-bench-report [--dir DIR (bench/results)]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; see --help"),
        }
    }
    Ok(dir)
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not JSON", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn command_out(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock (civil-from-days, proleptic Gregorian).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn machine() -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let commit = command_out(
        Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(&root),
    )
    .unwrap_or_else(|| "unknown".into());
    let dirty = command_out(
        Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .current_dir(&root),
    )
    .is_some_and(|s| !s.is_empty());
    json!({
        "nproc": nproc,
        "cpu_model": model,
        "memory_bytes": mem_kib * 1024,
        "kernel": kernel,
        "date": utc_now(),
        "commit": commit,
        "dirty": dirty,
    })
}

fn met_str(met: &Value) -> &'static str {
    match met.as_bool() {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "-",
    }
}

fn f(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

fn datapath_md(md: &mut String, d: &Value) {
    let _ = writeln!(
        md,
        "## Data path: ns per packet (BPF_PROG_TEST_RUN)\n\n{} rounds of {} packets each, \
         interleaved with a minimal XDP_TX program (swaps MACs) as the baseline; the verifier \
         processed {} instructions of the director program.\n",
        d["rounds"], d["repeat"], d["verified_insns"]
    );
    let rows = d["rows"].as_array().into_iter().flatten();
    if rows.clone().any(|r| r["tunnel"].as_bool() == Some(true)) {
        md.push_str(
            "The tunnel rows run inside a namespace whose FIB gives the outer packet's next \
             hop, every run arriving on its interface (`ctx_in`), their baseline runs too; the \
             restore program takes the outer header off before each run.\n\n",
        );
    }
    let _ = writeln!(
        md,
        "| path | director ns/pkt (min / median / max) | XDP_TX baseline ns/pkt | ratio | target | met |\n\
         | --- | --- | --- | --- | --- | --- |"
    );
    for r in rows {
        let ns = &r["director_ns"];
        let target = r["target"]
            .as_f64()
            .map_or("-".to_string(), |t| format!("<= {t}x"));
        let _ = writeln!(
            md,
            "| {} | {} / {} / {} | {} | {}x | {target} | {} |",
            r["path"].as_str().unwrap_or("?"),
            f(&ns["min"], 1),
            f(&ns["median"], 1),
            f(&ns["max"], 1),
            f(&r["baseline_ns"], 1),
            f(&r["ratio"], 2),
            met_str(&r["met"])
        );
    }
    // What a row measures beyond its name (the flood rows' setup, what the known- and
    // new-flow rows hit), one line each under the table.
    let notes: Vec<String> = d["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some(format!(
                "- {}: {}",
                r["path"].as_str().unwrap_or("?"),
                r["note"].as_str()?
            ))
        })
        .collect();
    if !notes.is_empty() {
        md.push('\n');
        for n in notes {
            let _ = writeln!(md, "{n}");
        }
    }
    md.push('\n');
    full_table_md(md, d);
    katran_md(md, d);
}

/// Katran timed in the same run (`lb-bench --katran-object`): each Katran row against our rows
/// of the same path, or the reason it was skipped.
fn katran_md(md: &mut String, d: &Value) {
    let k = &d["katran"];
    if k.is_null() {
        return;
    }
    md.push_str("### Katran in the same run\n\n");
    if let Some(skipped) = k["skipped"].as_str() {
        let _ = writeln!(md, "skipped: {skipped}\n");
        return;
    }
    let _ = writeln!(
        md,
        "Katran's `balancer_ingress` (`{}`, built by the user from Katran's repository) in \
         the director's place, timed in the same rounds against the same baseline, on the same \
         frames. Katran encapsulates every forwarded packet in IPIP (a 20-byte outer IPv4 \
         header to the real) where this director rewrites MACs; its connection table is an LRU \
         per CPU of {} entries; its ring has {} slots a VIP. Target: our known-flow and \
         new-flow rows at most 0.5x Katran's.\n",
        k["object"].as_str().unwrap_or("?"),
        k["lru_entries_per_cpu"],
        k["ring_size"],
    );
    let _ = writeln!(
        md,
        "| Katran row | Katran ratio (ns/pkt) | our row | our ratio (ns/pkt) | ours / Katran | \
         target | met |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    let rows: Vec<&Value> = k["rows"].as_array().into_iter().flatten().collect();
    for r in &rows {
        for o in r["ours"].as_array().into_iter().flatten() {
            let _ = writeln!(
                md,
                "| {} | {}x ({}) | {} | {}x ({}) | {} | {} | {} |",
                r["path"].as_str().unwrap_or("?"),
                f(&r["ratio"], 2),
                f(&r["ns"], 1),
                o["path"].as_str().unwrap_or("?"),
                f(&o["ratio"], 2),
                f(&o["ns"], 1),
                f(&o["relative"], 2),
                r["target"]
                    .as_f64()
                    .map_or("-".to_string(), |t| format!("<= {t}")),
                met_str(&o["met"]),
            );
        }
    }
    if let Some(limit) = k["conn_rate_limit"].as_u64() {
        let _ = writeln!(
            md,
            "\nKatran's new-connection limit, found by probing the object: {limit} a second per \
             CPU; beyond it Katran takes the traffic for a SYN flood and writes no new flow to \
             its LRU."
        );
    }
    for r in &rows {
        if let Some(over) = r["over_conn_rate_limit"].as_array() {
            let over: Vec<String> = over.iter().map(|n| n.to_string()).collect();
            let _ = writeln!(
                md,
                "- {}: SYNs of each round's measured run beyond that limit: {}",
                r["path"].as_str().unwrap_or("?"),
                over.join(", ")
            );
        }
    }
    md.push('\n');
}

/// The rows measured with 1,000,000 connections in the table, each against its empty-table
/// twin: within 20% of the twin's ratio, or not.
fn full_table_md(md: &mut String, d: &Value) {
    let rows: Vec<&Value> = d["full_table"].as_array().into_iter().flatten().collect();
    if rows.is_empty() {
        return;
    }
    md.push_str(
        "With 1,000,000 connections in the table (FLOWS of 1,048,576 entries), against the \
         same row with the table empty:\n\n\
         | path, with 1,000,000 flows in FLOWS | ratio | empty-table ratio | full / empty | \
         within 20% |\n| --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {}x | {}x | {} | {} |",
            r["twin"].as_str().unwrap_or("?"),
            f(&r["ratio"], 2),
            f(&r["twin_ratio"], 2),
            f(&r["relative"], 2),
            met_str(&r["met"])
        );
    }
    md.push('\n');
}

fn lab_md(md: &mut String, l: &Value) {
    let w = &l["wrk"];
    let _ = writeln!(
        md,
        "## End to end: HTTP through the lab (wrk)\n\n`wrk -t{} -c{} -d{}s --latency` from the \
         client namespace against `lab-server` on the real servers (keep-alive), the best of {} \
         rounds per setup; all hosts share this machine's CPUs. (d), where run, is the floor of \
         any XDP director: the bench's `lb_floor` on the director's interface in place of the \
         director's program (MAC rewrite and XDP_TX, no lookup), splitting connections over the \
         same two servers by a hash bit of the source port.\n",
        w["threads"],
        w["connections"],
        w["duration_s"],
        w["rounds"].as_u64().unwrap_or(1)
    );
    let _ = writeln!(
        md,
        "| setup | requests/s | p50 ms | p90 ms | p99 ms | machine CPU busy | requests per server |\n\
         | --- | --- | --- | --- | --- | --- | --- |"
    );
    for s in l["setups"].as_array().into_iter().flatten() {
        let lat = &s["latency_ms"];
        let per_server: Vec<String> = s["per_server_requests"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, n)| n.to_string())
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {}% | {} |",
            s["label"].as_str().unwrap_or("?"),
            f(&s["requests_per_s"], 0),
            f(&lat["p50"], 2),
            f(&lat["p90"], 2),
            f(&lat["p99"], 2),
            s["machine_cpu_busy"]
                .as_f64()
                .map_or("-".into(), |b| format!("{:.0}", b * 100.0)),
            per_server.join(" / ")
        );
    }
    let _ = writeln!(md, "\n| target | value | met |\n| --- | --- | --- |");
    for t in l["targets"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} >= {}x | {}x | {} |",
            t["name"].as_str().unwrap_or("?"),
            f(&t["target"], 2),
            f(&t["value"], 2),
            met_str(&t["met"])
        );
    }
    rates_md(md, l);
    md.push('\n');
}

/// The raw packet rates of `lab.json`: one row per generator, or why it did not run.
fn rates_md(md: &mut String, l: &Value) {
    let rows: Vec<(&str, &Value)> = [
        (
            "generator",
            "bench_gen in live-frames mode (in-kernel, IPv4 UDP)",
        ),
        ("trafficgen", "xdp-trafficgen udp (xdp-tools, IPv6 UDP)"),
        ("udp_flood", "one UDP socket thread (IPv4)"),
    ]
    .into_iter()
    .filter(|(k, _)| l[*k].is_object())
    .map(|(k, name)| (name, &l[k]))
    .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nRaw packet rate through the director (native XDP, `rr`, 60/62-byte UDP frames from the \
         client): the director's `forwarded` counter per second, and the busy cores of the whole \
         machine over the same window (/proc/stat, all CPUs; XDP runs in softirq). The busy \
         cores include the generator, the switch and the real servers, so packets/s per busy \
         core is a lower bound for one core of a director.\n\n\
         | generator | packets/s forwarded | busy cores (softirq) of CPUs | packets/s per busy core |\n\
         | --- | --- | --- | --- |"
    );
    let mut failures = Vec::new();
    for (name, r) in rows {
        if let Some(e) = r["error"].as_str() {
            let _ = writeln!(md, "| {name} | not measured (below) | - | - |");
            failures.push(format!("- {name}: {}", e.replace('\n', " / ")));
            continue;
        }
        let _ = writeln!(
            md,
            "| {name} | {} | {} ({}) of {} | {} |",
            f(&r["forwarded_per_s"], 0),
            f(&r["busy_cores"], 2),
            f(&r["softirq_cores"], 2),
            r["cpus"],
            f(&r["forwarded_per_s_per_busy_core"], 0)
        );
    }
    if let Some(sent) = l["udp_flood"]["sent_per_s"].as_f64() {
        let _ = writeln!(
            md,
            "\nThe socket thread sent {sent:.0} packets/s: when the director forwarded as many, \
             the sender was the limit."
        );
    }
    if !failures.is_empty() {
        md.push('\n');
        for line in failures {
            let _ = writeln!(md, "{line}");
        }
    }
}

fn scale_md(md: &mut String, s: &Value) {
    let _ = writeln!(
        md,
        "## Control plane: {} services x {} backends\n\nIn-process (`lb_ctl` as a library, the \
         program loaded at its default map sizes: TABLE {} entries, FLOWS {}), backend MACs \
         supplied.\n",
        s["services"], s["backends_per_service"], s["sizes"]["table_entries"], s["sizes"]["flows"]
    );
    let _ = writeln!(
        md,
        "| measurement | median (min / max) | target | met |\n| --- | --- | --- | --- |"
    );
    for r in s["rows"].as_array().into_iter().flatten() {
        let unit = r["unit"].as_str().unwrap_or("");
        let target = r["target"]
            .as_f64()
            .map_or("-".to_string(), |t| format!("< {t} {unit}"));
        let _ = writeln!(
            md,
            "| {} | {} {unit} ({} / {}) | {target} | {} |",
            r["name"].as_str().unwrap_or("?"),
            f(&r["median"], 1),
            f(&r["min"], 1),
            f(&r["max"], 1),
            met_str(&r["met"])
        );
    }
    let mem = &s["memory"];
    if let Some(total) = mem["total_bytes"].as_u64() {
        let maps: Vec<String> = mem["maps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let b = m["memlock_bytes"].as_u64()?;
                (b >= 1 << 20).then(|| {
                    format!(
                        "{} {:.1} MiB",
                        m["name"].as_str().unwrap_or("?"),
                        b as f64 / f64::from(1 << 20)
                    )
                })
            })
            .collect();
        let _ = writeln!(
            md,
            "| kernel memory of the maps at default sizes | {:.1} MiB ({}) | - | - |",
            total as f64 / f64::from(1 << 20),
            maps.join(", ")
        );
    }
    md.push('\n');
}

fn daemon_md(md: &mut String, d: &Value) {
    let _ = writeln!(
        md,
        "## The daemon at scale: {} services x {} backends under `lb-ctl run`\n\nIn the lab, `{}` \
         checks; a real server's addresses are the backends; one real server (the rack) has its \
         link pulled after the steady window. Targets: all usable within {} s, 0 false downs, p99 \
         of how late checks start <= {} ms, under {} log lines a minute, the rack out within {}.\n",
        d["services"],
        d["backends_per_service"],
        d["check"].as_str().unwrap_or("?"),
        d["targets"]["all_up_s"],
        d["targets"]["late_p99_ms"],
        d["targets"]["log_lines_per_minute"],
        d["targets"]["rack_out"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        md,
        "| addresses | probes | all usable after | false downs | daemon CPU | memory (RSS / peak) \
         | checks in window | late p50 / p99 / max | log lines / min | rack: backends out after \
         | rack log lines |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for r in d["runs"].as_array().into_iter().flatten() {
        let met = |k: &str| met_str(&r[k]);
        let _ = writeln!(
            md,
            "| {} | {} | {} s ({}) | {} ({}) | {}% of a core | {} / {} MiB | {} | {} / {} / {} ms \
             ({}) | {} ({}) | {}: {} s ({}) | {} |",
            r["addresses"],
            r["probes"],
            f(&r["all_up_s"], 1),
            met("all_up_met"),
            r["false_downs"],
            met("false_downs_met"),
            f(&r["cpu_percent_of_a_core"], 1),
            f(&r["rss_mib"], 1),
            f(&r["peak_rss_mib"], 1),
            r["checks"],
            f(&r["late_p50_ms"], 1),
            f(&r["late_p99_ms"], 1),
            f(&r["late_max_ms"], 1),
            met("late_p99_met"),
            f(&r["log_lines_per_minute"], 1),
            met("log_met"),
            r["rack_backends"],
            f(&r["rack_out_s"], 2),
            met("rack_out_met"),
            r["rack_log_lines"],
        );
    }
    md.push('\n');
}

/// Registers the first TTF font found as "sans-serif"; false if there is none.
fn register_font() -> bool {
    const CANDIDATES: &[&str] = &[
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    ];
    for path in CANDIDATES {
        if let Ok(bytes) = fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// One horizontal bar chart: `bars` are (label, value, colour), top to bottom.
fn bar_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    bars: &[(String, f64, RGBColor)],
) -> Result<()> {
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0);
    let n = bars.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(8)
        .build_cartesian_2d(0.0..max * 1.3, 0.0..n)
        .map_err(|e| anyhow::anyhow!("chart: {e}"))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc(unit)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .max_light_lines(1)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow::anyhow!("chart mesh: {e}"))?;
    for (i, (label, value, colour)) in bars.iter().enumerate() {
        let top = n - i as f64;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, top - 0.9), (*value, top - 0.45)],
                colour.filled(),
            )))
            .map_err(|e| anyhow::anyhow!("bar: {e}"))?;
        chart
            .draw_series(std::iter::once(Text::new(
                if *value >= 1000.0 {
                    format!("{label}: {value:.0}")
                } else {
                    format!("{label}: {value:.1}")
                },
                (max * 0.005, top - 0.15),
                ("sans-serif", 13).into_font(),
            )))
            .map_err(|e| anyhow::anyhow!("label: {e}"))?;
    }
    Ok(())
}

const DIRECTOR: RGBColor = RGBColor(31, 119, 180);
const BASELINE: RGBColor = RGBColor(160, 160, 160);
const OTHER: RGBColor = RGBColor(255, 127, 14);

fn chart(path: &Path, datapath: Option<&Value>, lab: Option<&Value>) -> Result<()> {
    let mut dp_bars = Vec::new();
    if let Some(d) = datapath {
        for r in d["rows"].as_array().into_iter().flatten() {
            let name = r["path"].as_str().unwrap_or("?").to_string();
            if let Some(v) = r["director_ns"]["median"].as_f64() {
                dp_bars.push((format!("{name}, director"), v, DIRECTOR));
            }
            if let Some(v) = r["baseline_ns"].as_f64() {
                dp_bars.push((format!("{name}, XDP_TX baseline"), v, BASELINE));
            }
        }
    }
    let mut lab_bars = Vec::new();
    if let Some(l) = lab {
        for s in l["setups"].as_array().into_iter().flatten() {
            let colour = match s["key"].as_str() {
                Some("xdp") => DIRECTOR,
                Some("direct") | Some("floor") => BASELINE,
                _ => OTHER,
            };
            if let Some(v) = s["requests_per_s"].as_f64() {
                lab_bars.push((s["label"].as_str().unwrap_or("?").to_string(), v, colour));
            }
        }
    }
    let height = (120 + 34 * dp_bars.len().max(lab_bars.len())).max(360) as u32;
    let root = BitMapBackend::new(path, (1400, height)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| anyhow::anyhow!("chart: {e}"))?;
    let (left, right) = root.split_horizontally(760);
    if dp_bars.is_empty() {
        left.draw(&Text::new(
            "no data-path results (datapath.json)",
            (20, 40),
            ("sans-serif", 16).into_font(),
        ))
        .map_err(|e| anyhow::anyhow!("chart: {e}"))?;
    } else {
        bar_panel(
            &left,
            "Data path: ns per packet (median)",
            "ns/packet",
            &dp_bars,
        )?;
    }
    if lab_bars.is_empty() {
        right
            .draw(&Text::new(
                "no end-to-end results (lab.json)",
                (20, 40),
                ("sans-serif", 16).into_font(),
            ))
            .map_err(|e| anyhow::anyhow!("chart: {e}"))?;
    } else {
        bar_panel(
            &right,
            "End to end: HTTP requests/s",
            "requests/s",
            &lab_bars,
        )?;
    }
    root.present()
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

fn main() -> Result<()> {
    let dir = parse_args()?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let datapath = read_json(&dir.join("datapath.json"))?;
    let lab = read_json(&dir.join("lab.json"))?;
    let scale = read_json(&dir.join("scale.json"))?;
    let daemon = read_json(&dir.join("daemon.json"))?;
    if datapath.is_none() && lab.is_none() && scale.is_none() && daemon.is_none() {
        bail!(
            "no results in {} (datapath.json, lab.json, scale.json): run `cargo xtask bench`",
            dir.display()
        );
    }
    let m = machine();
    let mut md = format!(
        "# Benchmark results\n\n{} x {}, {:.1} GiB of memory; Linux {}; {}; commit {}{}.\n\n",
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["memory_bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 30),
        m["kernel"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?"),
        m["commit"].as_str().unwrap_or("?"),
        if m["dirty"].as_bool() == Some(true) {
            " (with uncommitted changes)"
        } else {
            ""
        }
    );
    match &datapath {
        Some(d) => datapath_md(&mut md, d),
        None => md.push_str("## Data path\n\nNot run (no datapath.json).\n\n"),
    }
    match &lab {
        Some(l) => lab_md(&mut md, l),
        None => md.push_str("## End to end\n\nNot run (no lab.json).\n\n"),
    }
    match &scale {
        Some(s) => scale_md(&mut md, s),
        None => md.push_str("## Control plane\n\nNot run (no scale.json).\n\n"),
    }
    match &daemon {
        Some(d) => daemon_md(&mut md, d),
        None => md.push_str("## The daemon at scale\n\nNot run (no daemon.json).\n\n"),
    }
    md.push_str("Reproduce with `cargo xtask bench` (root); targets are reported, not asserted.\n");

    let md_path = dir.join("latest.md");
    fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    let all = json!({
        "machine": m,
        "datapath": datapath,
        "lab": lab,
        "scale": scale,
        "daemon": daemon,
    });
    let json_path = dir.join("latest.json");
    fs::write(&json_path, serde_json::to_string_pretty(&all)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let png_path = dir.join("latest.png");
    if register_font() {
        chart(&png_path, datapath.as_ref(), lab.as_ref())?;
    } else {
        eprintln!(
            "warning: no TTF font found (Debian: fonts-dejavu-core); {} not written",
            png_path.display()
        );
    }
    println!("{md}");
    eprintln!(
        "==> wrote {}, {} and {}",
        md_path.display(),
        json_path.display(),
        png_path.display()
    );
    Ok(())
}
