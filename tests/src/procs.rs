//! The machine's process table as `/proc/<pid>/stat` shows it: what a test counts to prove
//! that nothing it started is left running (live processes and zombies, by name or parent).

use std::fs;

/// One process: its pid, name (`comm`, at most 15 bytes), state letter and parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    /// `R`, `S`, `D`, `Z` (zombie: exited, not reaped yet), ...
    pub state: char,
    pub ppid: i32,
}

impl ProcStat {
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// Every process now (those that exit while being read are skipped).
pub fn all() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?))
        .collect()
}

/// `pid (comm) state ppid ...`; the name may hold spaces and parentheses.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let (pid, rest) = line.split_once(" (")?;
    let (comm, rest) = rest.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid: pid.trim().parse().ok()?,
        comm: comm.to_string(),
        state,
        ppid,
    })
}

/// The name a program gets in `/proc/<pid>/stat` when run as `path`: its file name cut to
/// 15 bytes (what the kernel keeps).
pub fn comm_of(path: &std::path::Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.chars().take(15).collect()
}

/// The CPU time `pid` has used (user + system), in clock ticks ([`ticks_per_second`]).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime are fields 14 and 15 (1-based) of the whole line.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second, the unit of [`cpu_ticks`].
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// `pid`'s resident memory now and at its peak (`VmRSS`, `VmHWM`), in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let p = parse_stat("4242 (a (b) c) Z 1 4242 4242 0 -1").unwrap_or_else(|| panic!());
        assert_eq!(
            p,
            ProcStat {
                pid: 4242,
                comm: "a (b) c".into(),
                state: 'Z',
                ppid: 1
            }
        );
        assert!(p.is_zombie());
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(
            comm_of(std::path::Path::new("/x/lbchk-a-1234567890")),
            "lbchk-a-1234567"
        );
    }

    #[test]
    fn finds_this_process() {
        let me = std::process::id() as i32;
        let found = all().into_iter().find(|p| p.pid == me);
        assert!(found.is_some_and(|p| !p.is_zombie()));
    }
}
