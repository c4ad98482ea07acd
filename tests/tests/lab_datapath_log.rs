//! End to end: the data path's log records reach `lb-ctl run`'s log. A backend's slot in the
//! `BACKENDS` map is made unusable by hand (the table still names it), so SYNs that the round
//! robin sends to it are dropped as `drop_bad_backend`; the daemon must log the slot and the
//! backend (target `datapath`), and no more than once per CPU per second however many drop.
//!
//! The lab is built by `lb_tests::lab`; all traffic is a bounded burst of frames with a
//! deadline; the daemon, `LbCtl` (pins) and the lab are dropped in that order, also on
//! failure. Without root, BPF or namespaces the test fails saying what is missing.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use lb_common::{BACKEND_CONFIGURED, Reason};
use lb_ctl::maps::{Maps, view::Snapshot};
use lb_tests::{
    daemon::Daemon,
    lab::{self, Lab, LabSpec, send_frames},
    lbctl::LbCtl,
    packet::tcp_frame,
};

const VIP: Ipv4Addr = lab::DEFAULT_VIP;
/// SYNs in the burst: half of them land on the broken slot.
const SYNS: u32 = 200;

fn drops(maps: &Maps) -> u64 {
    let counts = maps.reason_counts().unwrap_or_else(|e| panic!("{e:#}"));
    counts
        .iter()
        .find(|(r, _)| *r == Reason::DropBadBackend)
        .map_or(0, |(_, n)| *n)
}

#[test]
fn a_bad_backend_drop_is_logged_by_the_daemon_at_most_once_per_cpu_per_second() {
    let lab = Lab::build(&LabSpec {
        servers: 2,
        server_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_lab-server"))),
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab failed: {e:#}"));
    let ctl = LbCtl::new(&lab, lab.director(0))
        .unwrap_or_else(|e| panic!("preparing lb-ctl failed: {e:#}"));
    ctl.attach("eth0")
        .unwrap_or_else(|e| panic!("lb-ctl attach failed: {e:#}"));
    let (rs1, rs2) = (lab.server(0).addr, lab.server(1).addr);
    let file = ctl
        .write_file(&format!(
            "services:\n  - name: web\n    vip: {VIP}\n    port: 80\n    scheduler: rr\n    \
             backends:\n      - address: {rs1}\n      - address: {rs2}\n"
        ))
        .unwrap_or_else(|e| panic!("{e:#}"));
    // No reconcile during the test: the map written by hand stays as written.
    let daemon = Daemon::start(
        &ctl,
        lab.director(0),
        &file,
        &["--reconcile-interval", "300s"],
    );

    // rs2's slot loses BACKEND_USABLE; the service's table still names it.
    let mut maps = Maps::from_pins(ctl.pin_dir()).unwrap_or_else(|e| panic!("{e:#}"));
    let snap = Snapshot::read(&maps).unwrap_or_else(|e| panic!("{e:#}"));
    let web = snap
        .services
        .iter()
        .find(|s| s.name == "web")
        .unwrap_or_else(|| panic!("no service web"));
    let bad = web
        .backends
        .iter()
        .find(|b| b.address == rs2)
        .unwrap_or_else(|| panic!("no backend {rs2}"))
        .id;
    let mut slot = maps.backends.get(&bad, 0).unwrap_or_else(|e| panic!("{e}"));
    assert!(slot.flags & lb_common::BACKEND_USABLE != 0, "{slot:?}");
    slot.flags = BACKEND_CONFIGURED;
    maps.backends
        .set(bad, slot, 0)
        .unwrap_or_else(|e| panic!("{e}"));
    let before = drops(&maps);
    let skip = daemon.lines().len();

    // A burst of SYNs from the client, new source ports, well inside one second.
    let client = lab.client();
    let (src_mac, dst_mac, src) = (client.mac, lab.director(0).mac, client.addr.octets());
    let started = Instant::now();
    let (sent, took) = send_frames(client, "eth0", SYNS, Duration::from_secs(2), move |i| {
        tcp_frame(
            (src_mac, dst_mac),
            (src, 20000 + i as u16),
            (VIP.octets(), 80),
            "S",
        )
    })
    .unwrap_or_else(|e| panic!("sending SYNs: {e:#}"));
    assert_eq!(sent, SYNS, "sent {sent} of {SYNS} in {took:?}");

    // Round robin over two slots: every second SYN hits the broken one.
    let counted = lab::wait_until(Duration::from_secs(2), || {
        drops(&maps) - before >= u64::from(SYNS / 2)
    });
    let dropped = drops(&maps) - before;
    assert!(
        counted,
        "drop_bad_backend +{dropped}, expected +{}",
        SYNS / 2
    );
    assert_eq!(dropped, u64::from(SYNS / 2), "drop_bad_backend");

    let wanted = format!("drop_bad_backend: service {} table slot ", web.id);
    let names = format!("names backend {bad} (flags 1, service {})", web.id);
    let (line, _) = daemon.wait_log_after(
        skip,
        Duration::from_secs(3),
        |l| l.contains(&wanted) && l.contains(&names),
        "the data path's drop_bad_backend record",
    );
    assert!(
        line.contains("ERROR") && line.contains("datapath:"),
        "{line}"
    );
    // Records of one burst: at most one per CPU per second it lasted (plus the second it
    // started in), however many packets dropped.
    std::thread::sleep(Duration::from_millis(500));
    let seconds = started.elapsed().as_secs() + 1;
    let cpus = aya::util::nr_cpus().unwrap_or_else(|e| panic!("{e:?}")) as u64;
    let logged = daemon.lines()[skip..]
        .iter()
        .filter(|l| l.contains("drop_bad_backend:"))
        .count() as u64;
    eprintln!("{dropped} drops in {took:?} ({cpus} CPUs), {logged} records logged; first: {line}");
    assert!(
        (1..=cpus * seconds).contains(&logged),
        "{logged} records for {dropped} drops over {seconds} s on {cpus} CPUs"
    );
    drop(daemon);
    drop(ctl);
    drop(lab);
}
