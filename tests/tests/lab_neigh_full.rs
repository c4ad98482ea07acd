//! End to end: the kernel's neighbour table is full. `net.ipv4.neigh.default.gc_thresh3`
//! (1024 by default) bounds the neighbour entries of the whole host, every network namespace
//! together. A director whose backends need more entries than that gets ENOBUFS for the rest:
//! `lb-ctl run` must say so once, naming the limit and a value to raise it to, and not flood
//! its log with one line per backend per retry.
//!
//! The lab's real server holds gc_thresh3 + 256 addresses, all backends of one service, so
//! resolving them fills the table for a few seconds. (That is host-wide while it lasts; this
//! binary holds this one test, so no other test's lab runs meanwhile.) Without root,
//! namespaces or BPF the test fails saying what is missing.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use lb_tests::{
    daemon::Daemon,
    lab::{Lab, LabSpec},
    lbctl::LbCtl,
    scale::{DIRECTOR, address},
};

#[test]
fn a_full_neighbour_table_is_named_once() {
    let limit: usize = std::fs::read_to_string(lb_ctl::net::neigh::GC_THRESH3)
        .unwrap_or_else(|e| {
            panic!("reading gc_thresh3 (this test needs the host's /proc/sys): {e}")
        })
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("gc_thresh3: {e}"));
    assert!(
        limit <= 8192,
        "gc_thresh3 is {limit}: this test fills the neighbour table with that many addresses \
         and is sized for the default (1024) up to 8192"
    );
    let n = limit + 256;
    let lab = Lab::build(&LabSpec {
        servers: 1,
        server_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_lab-server"))),
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab failed: {e:#}"));
    lab.director(0)
        .ip_batch(&[format!("addr add {DIRECTOR}/16 dev eth0")])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let adds: Vec<String> = (0..n)
        .map(|i| format!("addr add {}/16 dev eth0", address(i)))
        .collect();
    lab.server(0)
        .ip_batch(&adds)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut yaml = format!(
        "services:\n  - name: many\n    vip: {}\n    port: 80\n    scheduler: rr\n    backends:\n",
        lab.vip()
    );
    for i in 0..n {
        yaml.push_str(&format!("      - address: {}\n", address(i)));
    }
    let ctl = LbCtl::new(&lab, lab.director(0)).unwrap_or_else(|e| panic!("{e:#}"));
    ctl.attach("eth0").unwrap_or_else(|e| panic!("{e:#}"));
    let file = ctl.write_file(&yaml).unwrap_or_else(|e| panic!("{e:#}"));
    let started = Instant::now();
    let daemon = Daemon::start(&ctl, lab.director(0), &file, &["--summary-interval", "5s"]);
    let (line, _) = daemon.wait_log(
        Duration::from_secs(20),
        |l| l.contains("gc_thresh3"),
        "a line naming gc_thresh3",
    );
    eprintln!("{line}");
    assert!(line.contains("neighbour table is full"), "{line}");
    assert!(line.contains("raise it to at least"), "{line}");
    assert!(
        line.contains("sysctl -w net.ipv4.neigh.default.gc_thresh3="),
        "{line}"
    );
    // Watch 12 s: the condition is logged when it starts and summarized; nothing floods.
    std::thread::sleep(Duration::from_secs(12).saturating_sub(started.elapsed()));
    let lines = daemon.lines();
    let naming = lines.iter().filter(|l| l.contains("gc_thresh3")).count();
    eprintln!(
        "{n} backends, {} log lines in {:.1} s, {naming} of them naming gc_thresh3",
        lines.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        naming <= 6,
        "gc_thresh3 named {naming} times:\n{}",
        lines.join("\n")
    );
    assert!(
        lines.len() <= 40,
        "{} log lines:\n{}",
        lines.len(),
        lines.join("\n")
    );
}
