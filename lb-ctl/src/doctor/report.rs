//! `lb-ctl doctor`'s lines, pure: each a check, what was found, and for a failure the fix.

use anyhow::{Context as _, Result};
use serde::Serialize;

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    /// What is checked: `kernel`, `bpffs`, `iface eth0`, `backend 192.168.58.135`, ...
    pub check: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// For a failure, what fixes it.
    pub fix: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fail,
    /// Not checked, and why (e.g. a tunnel backend's ARP).
    Skip,
}

impl Line {
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Line {
        Line {
            check: check.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Line {
        Line {
            check: check.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn skip(check: impl Into<String>, detail: impl Into<String>) -> Line {
        Line {
            check: check.into(),
            status: Status::Skip,
            detail: detail.into(),
            fix: None,
        }
    }
}

/// The report for people: `ok    CHECK: DETAIL`, `FAIL  CHECK: DETAIL; fix: FIX`,
/// `skip  CHECK: DETAIL`.
pub fn render(lines: &[Line]) -> String {
    let mut out = String::new();
    for l in lines {
        let tag = match l.status {
            Status::Ok => "ok  ",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        out += &format!("{tag}  {}: {}", l.check, l.detail);
        if let Some(fix) = &l.fix {
            out += &format!("; fix: {fix}");
        }
        out += "\n";
    }
    let failed = lines.iter().filter(|l| l.status == Status::Fail).count();
    out += &match failed {
        0 => format!("{} check(s), all ok\n", lines.len()),
        n => format!("{} check(s), {n} FAIL\n", lines.len()),
    };
    out
}

/// The report for machines: a JSON array of `{check, status, detail, fix}`.
pub fn render_json(lines: &[Line]) -> Result<String> {
    Ok(serde_json::to_string_pretty(lines).context("encoding the report")? + "\n")
}

/// No line failed.
pub fn all_ok(lines: &[Line]) -> bool {
    lines.iter().all(|l| l.status != Status::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_for_people_and_machines() {
        let lines = vec![
            Line::ok("kernel", "6.18.0"),
            Line::fail(
                "backend 10.0.0.5",
                "answers ARP for the VIP 10.0.0.9 (02:00:00:00:00:05)",
                "arp_ignore=1 arp_announce=2 on the real server, or `lb-ctl realserver up`",
            ),
            Line::skip("backend 10.1.0.5", "a tunnel backend"),
        ];
        assert_eq!(
            render(&lines),
            "ok    kernel: 6.18.0
FAIL  backend 10.0.0.5: answers ARP for the VIP 10.0.0.9 (02:00:00:00:00:05); fix: arp_ignore=1 arp_announce=2 on the real server, or `lb-ctl realserver up`
skip  backend 10.1.0.5: a tunnel backend
3 check(s), 1 FAIL
"
        );
        assert!(!all_ok(&lines));
        assert!(all_ok(&lines[..1]));
        let json: serde_json::Value = serde_json::from_str(&render_json(&lines).unwrap()).unwrap();
        assert_eq!(json[1]["status"], "fail");
        assert_eq!(json[0]["fix"], serde_json::Value::Null);
        assert_eq!(json[2]["check"], "backend 10.1.0.5");
    }
}
