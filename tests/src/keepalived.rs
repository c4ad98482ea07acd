//! keepalived (Debian's 2.x, VRRP only) as a peer of `lb-ctl`'s VRRP in a lab director, in
//! the foreground, with its own pid files. Dropping it stops it (SIGTERM, so it removes its
//! virtual addresses); the lab's teardown kills whatever is left.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::lab::{Host, Proc};

/// keepalived 2.x (`apt-get install keepalived`; `cargo xtask setup` installs it).
pub fn keepalived_bin() -> PathBuf {
    for p in ["/usr/sbin/keepalived", "/usr/local/sbin/keepalived"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "keepalived is not installed: run `cargo xtask setup` (it installs the Debian package \
         keepalived), or `apt-get install keepalived`"
    );
}

/// keepalived in a director's namespace.
pub struct Keepalived {
    proc: Proc,
}

impl Keepalived {
    /// Writes `conf` and its pid files into `dir` (named after the host) and starts it on
    /// `host`: `keepalived -n -l -D -P -f CONF -p PID -r VRRP_PID`.
    pub fn start(dir: &Path, host: &Host, conf: &str) -> Keepalived {
        let bin = keepalived_bin();
        let name = &host.name;
        let conf_path = dir.join(format!("keepalived-{name}.conf"));
        fs::write(&conf_path, conf)
            .unwrap_or_else(|e| panic!("writing {}: {e}", conf_path.display()));
        let pid = dir.join(format!("keepalived-{name}.pid"));
        let vrrp_pid = dir.join(format!("keepalived-{name}-vrrp.pid"));
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let args = [
            path(&bin),
            "-n".into(),
            "-l".into(),
            "-D".into(),
            "-P".into(),
            "-f".into(),
            path(&conf_path),
            "-p".into(),
            path(&pid),
            "-r".into(),
            path(&vrrp_pid),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = host.spawn(&args).unwrap_or_else(|e| panic!("{e:#}"));
        Keepalived { proc }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let _ = self.proc.signal(libc::SIGTERM);
        let _ = self.proc.wait_timeout(Duration::from_secs(3));
    }
}
