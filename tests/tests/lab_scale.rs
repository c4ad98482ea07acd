//! End to end: `lb-ctl run` checking 2,000 backends (100 services x 20, over 20 real-server
//! addresses, `tcp` checks every second) in the namespace lab: all usable within 10 s of
//! start, no false down, checks on schedule, a quiet log; then a rack of 1,000 backends (10
//! addresses on one real server) lost at once: all out of the data path within two check
//! intervals, in a handful of log lines. The full-size run (1,000 x 16) is in
//! `cargo xtask bench` (`lb_tests::scale`).

use std::{path::PathBuf, time::Duration};

use lb_tests::{
    lab::{Lab, LabSpec},
    lbctl::LbCtl,
    scale::{self, Spec},
};

#[test]
fn two_thousand_checked_backends_and_a_lost_rack() {
    let lab = Lab::build(&LabSpec {
        servers: 3,
        server_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_lab-server"))),
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab failed: {e:#}"));
    let spec = Spec {
        services: 100,
        backends_per_service: 20,
        addresses: 20,
        rack_addresses: 10,
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(200),
        retries: 2,
        retry_delay: Duration::from_millis(100),
        window: Duration::from_secs(10),
    };
    let rack = scale::set_up(&lab, &spec).unwrap_or_else(|e| panic!("{e:#}"));
    let ctl = LbCtl::new(&lab, lab.director(0)).unwrap_or_else(|e| panic!("{e:#}"));
    ctl.attach("eth0").unwrap_or_else(|e| panic!("{e:#}"));
    let file = ctl
        .write_file(&scale::services_yaml(lab.vip(), &spec))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let r = scale::run(&lab, &ctl, &file, &spec, &rack, |m| eprintln!("scale: {m}"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{r:#?}");
    assert_eq!(r.backends, 2000);
    // Backends checked the same way share a probe: one per address.
    assert_eq!(r.probes, 20, "{r:?}");
    assert!(r.all_up_after <= Duration::from_secs(10), "{r:?}");
    assert_eq!(r.false_downs, 0, "{r:?}");
    // 20 probes, one check a second each, over the 10 s window.
    assert!((150..=260).contains(&r.checks), "{r:?}");
    assert!(r.late_p99_ms <= 100.0, "{r:?}");
    assert!(r.log_lines_per_minute < 100.0, "{r:?}");
    assert_eq!(r.rack_backends, 1000, "{r:?}");
    // About one check cycle: the next check (at most one interval away), its retries
    // (2 x 200 ms + 100 ms), the batch (100 ms), the apply and this test's polling read of
    // 16,000 backends: 1.6-2.1 s measured. The bound is three intervals, not two, so a loaded
    // machine does not fail it; a backend-by-backend removal (one apply each) would take
    // tens of seconds. The figure itself is the bench's (`rack_out_s` in daemon.json).
    assert!(r.rack_out_after <= spec.interval * 3, "{r:?}");
    assert!(r.rack_log_lines <= 20, "{r:?}");
}
