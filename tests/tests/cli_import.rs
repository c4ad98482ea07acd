//! `lb-ctl import`: the binary's exit status (0 complete, 1 incomplete, 2 unreadable), the
//! YAML on stdout and the notes on stderr, and include files named in their own notes. No lab
//! and no root: the command only reads files.

use std::fs;
use std::path::PathBuf;

use lb_tests::lbctl::lb_ctl;

/// A fresh folder for this test's files.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lb-cli-import-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

const COMPLETE: &str = "\
! the typical LVS-DR director
vrrp_instance LVS {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    virtual_ipaddress {
        192.168.58.133
    }
}
include conf.d/*.conf
";

const SERVICE: &str = "\
virtual_server 192.168.58.133 80 {
    delay_loop 6
    lb_algo rr
    lb_kind DR
    persistence_timeout 50
    protocol TCP
    real_server 192.168.58.135 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 3
        }
    }
}
";

#[test]
fn a_complete_import_exits_0_with_the_yaml_on_stdout() {
    let d = dir("complete");
    fs::create_dir_all(d.join("conf.d")).unwrap();
    fs::write(d.join("conf.d/web.conf"), SERVICE).unwrap();
    let file = d.join("keepalived.conf");
    fs::write(&file, COMPLETE).unwrap();
    let out = lb_ctl(&["import", file.to_str().unwrap()]).ok();
    assert_eq!(out.stderr, "", "{out}");
    for text in [
        "vrrp:\n",
        "  - name: LVS\n",
        "    auth_pass: \"1111\"\n",
        "    virtual_addresses: [192.168.58.133]\n",
        "services:\n",
        "    vip: 192.168.58.133\n",
        "    scheduler: rr\n",
        "      timeout: 50s\n",
        "      - address: 192.168.58.135   # real_server, line 7\n",
        "          type: tcp\n",
        "# virtual_server 192.168.58.133 80 (",
    ] {
        assert!(out.stdout.contains(text), "no {text:?} in:\n{out}");
    }
    assert!(out.stdout.contains("conf.d/web.conf:1)"), "{out}");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn unsupported_lines_exit_1_named_by_file_and_line_with_the_yaml_still_printed() {
    let d = dir("incomplete");
    fs::create_dir_all(d.join("conf.d")).unwrap();
    fs::write(
        d.join("conf.d/web.conf"),
        SERVICE
            .replace("lb_algo rr", "lb_algo lblc")
            .replace("lb_kind DR", "lb_kind NAT"),
    )
    .unwrap();
    let file = d.join("keepalived.conf");
    fs::write(&file, COMPLETE.replace("auth_type PASS", "auth_type AH")).unwrap();
    let out = lb_ctl(&["import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let web = d.join("conf.d/web.conf").display().to_string();
    let main = file.display().to_string();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(&format!(
            "{main}:8: authentication: not supported: auth_type AH"
        )),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{web}:3: lb_algo lblc: not supported: the scheduler `lblc`"
        )),
        "{out}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{web}:4: lb_kind NAT: not supported: NAT rewrites"
        )),
        "{out}"
    );
    assert!(out.stdout.contains("services:\n"), "{out}");
    assert!(
        out.stdout
            .contains("# lb_algo lblc is not supported: wrr instead"),
        "{out}"
    );
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_file_that_cannot_be_read_exits_2_and_prints_nothing() {
    let d = dir("broken");
    let file = d.join("keepalived.conf");
    fs::write(&file, "virtual_server 10.0.0.1 80 {\n  lb_algo rr\n").unwrap();
    let out = lb_ctl(&["import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert_eq!(out.stdout, "", "{out}");
    assert_eq!(
        out.stderr.trim(),
        format!(
            "lb-ctl: import: {}:1: this block is never closed: a `}}` is missing",
            file.display()
        )
    );
    let out = lb_ctl(&["import", d.join("missing.conf").to_str().unwrap()]);
    assert_eq!(
        (out.status.code(), out.stdout.as_str()),
        (Some(2), ""),
        "{out}"
    );
    assert!(out.stderr.contains("missing.conf: No such file"), "{out}");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn import_help_says_what_maps_and_what_is_refused() {
    let out = lb_ctl(&["import", "--help"]).ok();
    for text in [
        "virtual_server",
        "lb_kind NAT",
        "fwmark",
        "Exit status: 0",
        "not supported",
    ] {
        assert!(out.stdout.contains(text), "no `{text}` in:\n{out}");
    }
}
