//! Tests of what the config refuses before it parses, and how it quotes the file: file kinds,
//! size, nesting depth, alias expansion, escaping and cutting of quoted text, and address
//! classes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("lb-ctl-input-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
    TempDir(d)
}

/// The only diagnostic of loading `path`, which must fail.
fn load_err(path: &Path) -> Diagnostic {
    match load(path) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => {
            assert_eq!(e.diagnostics.len(), 1, "{e}");
            e.diagnostics
                .into_iter()
                .next()
                .unwrap_or_else(|| unreachable!())
        }
    }
}

/// The only diagnostic of parsing `text`, which must fail.
fn parse_err(text: &str) -> Diagnostic {
    match parse(text, "s.yaml") {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => {
            assert_eq!(e.diagnostics.len(), 1, "{e}");
            e.diagnostics
                .into_iter()
                .next()
                .unwrap_or_else(|| unreachable!())
        }
    }
}

/// `[[[ ... ]]]`, `bytes` long.
fn nested(bytes: usize) -> String {
    "[".repeat(bytes / 2) + &"]".repeat(bytes / 2)
}

/// Peak resident memory of this process so far (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let d = temp_dir("fifo");
    let fifo = d.0.join("services.yaml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A blocked open would hang this test; run it on a thread with a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    let p = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(load_err(&p));
    });
    let d0 = rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("loading a FIFO blocked for 5 s"));
    assert_eq!(d0.line, 0);
    assert!(
        d0.message
            .starts_with("is a FIFO (named pipe), not a regular file; give the path"),
        "{d0}"
    );
    assert!(
        d0.to_string().starts_with(&fifo.display().to_string()),
        "{d0}"
    );
}

#[test]
fn devices_directories_and_symlinks_to_them_are_refused() {
    let zero = load_err(Path::new("/dev/zero"));
    assert!(
        zero.message
            .starts_with("is a character device, not a regular file"),
        "{zero}"
    );

    let d = temp_dir("kinds");
    let dir = load_err(&d.0);
    assert!(
        dir.message
            .starts_with("is a directory, not a regular file"),
        "{dir}"
    );

    let link = d.0.join("services.yaml");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let via = load_err(&link);
    assert!(via.message.starts_with("is a character device"), "{via}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // A symlink to a regular file is read.
    let real = d.0.join("real.yaml");
    std::fs::write(&real, "services: []\n").unwrap_or_else(|e| panic!("{e}"));
    let ok = d.0.join("ok.yaml");
    std::os::unix::fs::symlink(&real, &ok).unwrap_or_else(|e| panic!("{e}"));
    assert!(load(&ok).is_ok());
}

#[test]
fn a_file_over_the_size_limit_is_refused() {
    let d = temp_dir("size");
    let path = d.0.join("big.yaml");
    let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    // Sparse: no disk space taken.
    file.set_len(MAX_FILE_BYTES + 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let e = load_err(&path);
    assert_eq!(e.line, 0);
    assert!(
        e.message
            .starts_with("the file is larger than 16777216 bytes (16 MiB, the limit; 16777217"),
        "{e}"
    );
    // Exactly at the limit is read (and then is no service file: NUL bytes are no YAML).
    file.set_len(MAX_FILE_BYTES)
        .unwrap_or_else(|e| panic!("{e}"));
    let at = load_err(&path);
    assert!(!at.message.contains("larger than"), "{at}");
}

#[test]
fn deep_nesting_is_refused_before_parsing_cheaply() {
    let text = nested(80 * 1024);
    let rss_before = peak_rss_kib();
    let started = Instant::now();
    let d = parse_err(&text);
    let took = started.elapsed();
    let grew = peak_rss_kib().saturating_sub(rss_before);
    eprintln!("80 KB nested file: refused in {took:?}, peak RSS grew by {grew} KiB");
    assert_eq!((d.line, d.field.as_str()), (1, ""), "{d}");
    assert!(
        d.message
            .starts_with("lists and mappings are nested more than 64 deep here, the limit"),
        "{d}"
    );
    assert!(took < Duration::from_millis(200), "took {took:?}");
    // Tests share the process: the bound is loose, the figure is what is reported.
    assert!(grew < 64 * 1024, "peak RSS grew by {grew} KiB");

    // Block style counts the same: 65 levels of `- ` on one line each.
    let mut block = String::from("services:\n");
    for i in 0..65 {
        block += &" ".repeat(2 * i + 2);
        block += "-\n";
    }
    let d = parse_err(&block);
    assert!(d.message.contains("nested more than 64 deep"), "{d}");
    assert!(d.line > 60, "{d}");
    // 64 levels are YAML enough (and then no service file).
    let ok_depth = format!("services: {}\n", nested(2 * 63));
    assert!(!parse_err(&ok_depth).message.contains("nested more than"));
}

#[test]
fn alias_bombs_are_refused_before_expansion() {
    let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for n in names {
        text += &format!("{n}: &{n} [{}]\n", vec![format!("*{prev}"); 10].join(", "));
        prev = n;
    }
    let started = Instant::now();
    let d = parse_err(&text);
    assert!(
        d.message
            .starts_with("the document has more than 2000000 nodes once its aliases"),
        "{d}"
    );
    assert_eq!(d.line, 7, "{d}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn quoted_text_is_cut_and_escaped() {
    let evil = format!("\x1b]0;owned\x07\x1b[2J{}\n", "n".repeat(5 * 1024 * 1024));
    let text = format!(
        "services:\n  - name: \"{}\"\n    vip: 10.0.0.1\n    port: 80\n",
        evil.replace('\x1b', "\\e")
            .replace('\x07', "\\a")
            .replace('\n', "\\n")
    );
    let started = Instant::now();
    let d = parse_err(&text);
    eprintln!("5 MB name: refused in {:?}", started.elapsed());
    assert_eq!((d.line, d.field.as_str()), (2, "services[0].name"), "{d}");
    let shown = d.to_string();
    assert!(shown.len() < 400, "{} bytes: {shown}", shown.len());
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    assert!(
        shown.starts_with(
            "s.yaml:2: services[0].name: `\\x1b]0;owned\\x07\\x1b[2Jnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn… (5242895 bytes in all)` is 5242895 bytes long; at most 32 are allowed"
        ),
        "{shown}"
    );

    // An unknown key (an explicit `?` key: YAML's implicit keys end at 1024 characters): cut
    // and escaped in the field and the message, at its own line.
    let key = format!("k\x1b[1m{}", "y".repeat(100_000));
    let text = format!(
        "services:\n  - name: a\n    vip: 10.0.0.1\n    port: 80\n    ? \"{}\"\n    : 1\n",
        key.replace('\x1b', "\\e")
    );
    let d = parse_err(&text);
    assert_eq!(d.line, 5, "{d}");
    assert!(d.field.starts_with("services[0].k\\x1b[1myyy"), "{d}");
    assert!(d.field.ends_with("… (100005 bytes in all)"), "{d}");
    assert!(
        d.message.starts_with("unknown field `k\\x1b[1myyyy") && d.message.len() < 400,
        "{d}"
    );

    // A value of the wrong kind, a bad address, a bad duration, a bad choice.
    let long = "z".repeat(1000);
    for (extra, field) in [
        (
            format!("    scheduler: \"{long}\\e\"\n"),
            "services[0].scheduler",
        ),
        (
            format!("    persistence: {{timeout: \"{long}\"}}\n"),
            "services[0].persistence.timeout",
        ),
        (
            format!("    protocol: [\"{long}\"]\n"),
            "services[0].protocol",
        ),
    ] {
        let text = format!("services:\n  - name: a\n    vip: 10.0.0.1\n    port: 80\n{extra}");
        let d = parse_err(&text);
        assert_eq!(d.field, field, "{d}");
        assert!(d.message.len() < 400, "{} bytes: {d}", d.message.len());
        assert!(!d.message.chars().any(char::is_control), "{d}");
    }
    let d = parse_err(&format!(
        "services:\n  - name: a\n    vip: \"1.2.3.4\\e[31m{long}\"\n    port: 80\n"
    ));
    assert!(d.message.starts_with("`1.2.3.4\\x1b[31mzzz"), "{d}");
    assert!(
        d.message
            .contains("… (1012 bytes in all)` is not a valid IPv4 or IPv6 address"),
        "{d}"
    );
}

#[test]
fn every_non_unicast_address_class_is_refused() {
    let cases = [
        ("0.0.0.0", "the unspecified address"),
        (
            "0.1.2.3",
            "in 0.0.0.0/8 (\"this network\", never a host's address)",
        ),
        ("127.0.0.1", "a loopback address (127.0.0.0/8)"),
        ("224.0.0.18", "a multicast address (224.0.0.0/4)"),
        ("239.255.255.255", "a multicast address (224.0.0.0/4)"),
        ("240.0.0.1", "a reserved address (240.0.0.0/4)"),
        ("254.1.1.1", "a reserved address (240.0.0.0/4)"),
        ("255.255.255.255", "the limited broadcast address"),
    ];
    for (addr, what) in cases {
        let vip = parse_err(&format!(
            "services:\n  - name: a\n    vip: {addr}\n    port: 80\n"
        ));
        assert_eq!(
            (vip.line, vip.field.as_str()),
            (3, "services[0].vip"),
            "{vip}"
        );
        assert_eq!(
            vip.message,
            format!("{addr} is {what} and cannot be a VIP; give a unicast address")
        );
        let backend = parse_err(&format!(
            "services:\n  - name: a\n    vip: 10.0.0.1\n    port: 80\n    backends:\n      - address: {addr}\n"
        ));
        assert_eq!(
            (backend.line, backend.field.as_str()),
            (6, "services[0].backends[0].address"),
            "{backend}"
        );
        assert!(
            backend
                .message
                .contains(&format!("{what} and cannot be a backend address"))
        );
        let sorry = parse_err(&format!(
            "services:\n  - name: a\n    vip: 10.0.0.1\n    port: 80\n    sorry_server: {addr}\n"
        ));
        assert_eq!(sorry.field, "services[0].sorry_server", "{sorry}");
        assert!(
            sorry.message.contains("cannot be a sorry server"),
            "{sorry}"
        );
        let vrrp = parse_err(&format!(
            "vrrp:\n  - name: VI_1\n    interface: eth0\n    virtual_router_id: 51\n    virtual_addresses: [{addr}/32]\nservices: []\n"
        ));
        assert_eq!(vrrp.field, "vrrp[0].virtual_addresses[0]", "{vrrp}");
        assert!(
            vrrp.message.contains("cannot be a virtual address"),
            "{vrrp}"
        );
    }
    // Unicast neighbours of those classes pass.
    for addr in ["1.0.0.1", "126.255.255.254", "128.0.0.1", "223.255.255.254"] {
        let text = format!(
            "services:\n  - name: a\n    vip: {addr}\n    port: 80\n    backends: [{{address: 10.0.0.2}}]\n"
        );
        assert!(parse(&text, "s.yaml").is_ok(), "{addr}");
    }
}
