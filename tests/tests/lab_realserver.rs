//! End to end: `lb-ctl realserver up|down|check` on a real server of the namespace lab, and
//! `lb-ctl doctor` on its director.
//!
//! The lab's real servers come with the VIPs on `lo` and the ARP sysctls set; the first test
//! takes them away first (leaving a few in place, which `up` must not change and `down` must
//! leave). `down` must leave `sysctl -a | grep arp_` and `ip addr` exactly as they were before
//! `up`. The second test resets one real server's `arp_ignore` to 0 (the VIP stays on its `lo`):
//! `doctor` names it as answering ARP for the VIP, and only it. Traffic is bounded (one ARP
//! request per VIP, a few resolutions and handshakes); everything is removed at the end.

use std::{fs, path::Path};

use lb_tests::{
    lab::{Host, Lab, LabSpec},
    lbctl::LbCtl,
};

fn lab(servers: usize) -> Lab {
    Lab::build(&LabSpec {
        servers,
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"))
}

fn sh(host: &Host, script: &str) -> String {
    host.exec_ok(&["sh", "-c", script])
        .unwrap_or_else(|e| panic!("`{script}` on {}: {e:#}", host.name))
}

/// What `down` must restore: every ARP sysctl and every address of the host.
fn snapshot(host: &Host) -> String {
    sh(host, "sysctl -a 2>/dev/null | grep arp_ | sort; ip addr")
}

#[test]
fn up_then_check_is_all_ok_and_down_restores_the_host_exactly() {
    let lab = lab(1);
    let rs = lab.server(0);
    let (vip, vip6) = (lab.vip(), lab.vip6());
    // A host that has only some of it: the IPv6 VIP already on lo and all.arp_ignore=1
    // already (both must stay after down); the IPv4 VIP and the rest are not there.
    lab.del_server_vip(rs).expect("removing the VIPs");
    sh(
        rs,
        &format!(
            "ip addr add {vip6}/128 dev lo nodad && sysctl -qw net.ipv4.conf.all.arp_ignore=1 \
             net.ipv4.conf.all.arp_announce=0 net.ipv4.conf.eth0.arp_ignore=0 \
             net.ipv4.conf.eth0.arp_announce=0"
        ),
    );
    let before = snapshot(rs);
    let ctl = LbCtl::new(&lab, rs).expect("lb-ctl");
    let root = ctl.files_dir().join("root");
    let root_s = root.to_str().expect("a UTF-8 path");
    let vips = format!("{vip},{vip6}");
    let want = ["--vip", &vips, "--interface", "eth0", "--root", root_s];

    // check on the bare host: the four missing settings are wrong, each with its fix; exit 1.
    let out = ctl
        .run(&[&["realserver", "check"][..], &want].concat())
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(
        text,
        format!(
            "net.ipv4.conf.all.arp_ignore = 1: ok
net.ipv4.conf.all.arp_announce = 2: wrong: 0, want 2; fix: sysctl -w net.ipv4.conf.all.arp_announce=2
net.ipv4.conf.eth0.arp_ignore = 1: wrong: 0, want 1; fix: sysctl -w net.ipv4.conf.eth0.arp_ignore=1
net.ipv4.conf.eth0.arp_announce = 2: wrong: 0, want 2; fix: sysctl -w net.ipv4.conf.eth0.arp_announce=2
{vip}/32 on lo: wrong: absent, want present; fix: ip addr add {vip}/32 dev lo
{vip6}/128 on lo: ok
"
        )
    );

    // up --persist: four changes, two files; then check is all ok (exit 0).
    let up = ctl
        .run_ok(&[&["realserver", "up", "--persist"][..], &want].concat())
        .expect("up");
    assert!(up.contains("4 change(s), recorded in"), "{up}");
    let sysctl_file = root.join("etc/sysctl.d/90-lb-realserver.conf");
    let networkd_file = root.join("etc/systemd/network/90-lb-realserver-lo.network");
    for f in [&sysctl_file, &networkd_file] {
        assert!(up.contains(&format!("wrote {}", f.display())), "{up}");
    }
    let sysctls = fs::read_to_string(&sysctl_file).expect("the sysctl.d file");
    assert!(
        sysctls.contains("\nnet.ipv4.conf.eth0.arp_announce = 2\n"),
        "{sysctls}"
    );
    let networkd = fs::read_to_string(&networkd_file).expect("the networkd file");
    assert!(
        networkd.contains("Name=lo\n") && networkd.contains(&format!("Address={vip}/32\n")),
        "{networkd}"
    );
    assert!(root.join("run/lb-ctl/realserver.json").is_file());
    let out = ctl
        .run(&[&["realserver", "check"][..], &want].concat())
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.ends_with(": ok")).count(),
        6,
        "{text}"
    );
    let mid = snapshot(rs);
    assert!(mid.contains("net.ipv4.conf.eth0.arp_ignore = 1"), "{mid}");
    assert!(
        mid.contains(&format!("inet {vip}/32 scope global lo")),
        "{mid}"
    );

    // down --persist: four steps back, the files and the state gone, the host as before.
    let down = ctl
        .run_ok(&["realserver", "down", "--persist", "--root", root_s])
        .expect("down");
    assert_eq!(
        down.lines().filter(|l| l.starts_with("sysctl -w ")).count(),
        3,
        "{down}"
    );
    assert!(
        down.contains(&format!("ip addr del {vip}/32 dev lo")),
        "{down}"
    );
    assert!(!sysctl_file.exists() && !networkd_file.exists(), "{down}");
    assert!(!root.join("run/lb-ctl/realserver.json").exists());
    assert_eq!(snapshot(rs), before);

    // With ifupdown (etc/network/interfaces exists) the VIPs go into its snippet.
    fs::create_dir_all(root.join("etc/network")).expect("mkdir");
    fs::write(
        root.join("etc/network/interfaces"),
        "source /etc/network/interfaces.d/*\n",
    )
    .expect("interfaces");
    let up = ctl
        .run_ok(&[&["realserver", "up", "--persist"][..], &want].concat())
        .expect("up");
    let snippet = root.join("etc/network/interfaces.d/lb-realserver");
    assert!(up.contains(&format!("wrote {}", snippet.display())), "{up}");
    let text = fs::read_to_string(&snippet).expect("the ifupdown snippet");
    assert!(
        text.contains(&format!("    up ip addr add {vip}/32 dev lo\n")),
        "{text}"
    );
    ctl.run_ok(&["realserver", "down", "--persist", "--root", root_s])
        .expect("down");
    assert!(!snippet.exists());
    assert!(
        Path::new(&root.join("etc/network/interfaces")).exists(),
        "not ours: kept"
    );
    assert_eq!(snapshot(rs), before);
}

#[test]
fn doctor_names_the_real_server_that_answers_arp_for_the_vip() {
    let lab = lab(2);
    let (rs1, rs2) = (lab.server(0), lab.server(1));
    let director = lab.director(0);
    let ctl = LbCtl::new(&lab, director).expect("lb-ctl");
    ctl.attach("eth0").expect("attach");
    let file = ctl
        .write_file(&format!(
            "services:
  - name: web
    vip: {}
    port: 80
    scheduler: rr
    backends: [{{address: {}}}, {{address: {}}}]
",
            lab.vip(),
            rs1.addr,
            rs2.addr
        ))
        .expect("service file");
    let file = file.to_str().expect("a UTF-8 path");

    // Healthy: every line ok, exit 0.
    let out = ctl.out(&["doctor", "-f", file, "--timeout", "1s"]).ok();
    assert!(out.stdout.contains("ok    iface eth0: XDP native"), "{out}");
    assert!(
        out.stdout
            .contains(&format!("ok    vip {}: held on eth0", lab.vip())),
        "{out}"
    );
    assert!(out.stdout.ends_with("all ok\n"), "{out}");

    // real-server-2 answers ARP for any of its addresses again; its VIP stays on lo.
    sh(
        rs2,
        "sysctl -qw net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.eth0.arp_ignore=0",
    );
    let out = ctl.out(&["doctor", "-f", file, "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let fails: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert_eq!(fails.len(), 1, "{out}");
    assert!(
        fails[0].starts_with(&format!(
            "FAIL  backend {}: answers ARP for the VIP {} ({})",
            rs2.addr,
            lab.vip(),
            rs2.mac_string()
        )),
        "{out}"
    );
    assert!(
        fails[0].contains("fix: arp_ignore=1 arp_announce=2 on the real server"),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!(
            "ok    backend {}: does not answer ARP for the VIP",
            rs1.addr
        )),
        "{out}"
    );
    // Both answer their port, directly and through the director's path.
    for rs in [rs1, rs2] {
        assert!(
            out.stdout.contains(&format!(
                "ok    backend {}:80: answers through the director's path",
                rs.addr
            )),
            "{out}"
        );
    }
    // The same for machines.
    let out = ctl.out(&["doctor", "-f", file, "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let failed: Vec<&serde_json::Value> = json
        .as_array()
        .expect("an array")
        .iter()
        .filter(|l| l["status"] == "fail")
        .collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert_eq!(failed[0]["check"], format!("backend {}", rs2.addr));
}
