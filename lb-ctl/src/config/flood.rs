//! `flood:`: the budget of new connection-table entries, against a flood of new connections
//! (spoofed SYNs, or UDP from random sources). It goes to the data path's `SETTINGS` map.
//!
//! ```yaml
//! flood:
//!   new_flows_per_cpu: 200000   # new entries (half-open TCP, new UDP flows) one CPU may
//!                               # create per second; 0 or absent = no limit
//! ```
//!
//! Past the budget, `mh` and `sh` services forward by their hash without an entry
//! (`forwarded_over_budget`); `rr`, `wrr`, `lc` and `wlc` drop (`drop_over_budget`).

use super::fields::{Diags, Fields, integer};

pub(super) const FLOOD_FIELDS: &[&str] = &["new_flows_per_cpu"];

/// The `flood:` block; its default (no block) sets no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flood {
    /// New connection-table entries one CPU may create per second; 0 = no limit.
    pub new_flows_per_cpu: u32,
}

/// Reads the top-level `flood:` block: the default without one (or with an empty one), None
/// when invalid (reported).
pub(super) fn read(top: &Fields, d: &mut Diags) -> Option<Flood> {
    let Some(field) = top.optional("flood") else {
        return Some(Flood::default());
    };
    let path = field.path();
    let what = ("a mapping like `{ new_flows_per_cpu: 200000 }`", None);
    let f = Fields::of(&field, &path, FLOOD_FIELDS, what, d)?;
    let errors = d.list.len();
    let new_flows_per_cpu = f.or("new_flows_per_cpu", 0, d, |n| {
        integer(n, 0, u32::MAX.into())
            .map(|v| v as u32)
            .map_err(|e| {
                format!(
                    "{e}: give the new connection-table entries one CPU may create per second \
                     (e.g. 200000), or 0 for no limit"
                )
            })
    });
    if d.list.len() > errors {
        return None;
    }
    Some(Flood {
        new_flows_per_cpu: new_flows_per_cpu?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    use crate::config::test_util::{parse_err as err, parse_ok as ok};

    #[test]
    fn absent_empty_and_set() {
        assert_eq!(ok("").flood, Flood::default());
        assert_eq!(ok("flood:\n").flood.new_flows_per_cpu, 0);
        assert_eq!(ok("flood: {}\n").flood.new_flows_per_cpu, 0);
        assert_eq!(
            ok("flood:\n  new_flows_per_cpu: 0\n")
                .flood
                .new_flows_per_cpu,
            0
        );
        assert_eq!(
            ok("flood:\n  new_flows_per_cpu: 200000\n")
                .flood
                .new_flows_per_cpu,
            200_000
        );
        assert_eq!(
            ok("flood:\n  new_flows_per_cpu: 4294967295\n")
                .flood
                .new_flows_per_cpu,
            u32::MAX
        );
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = err("flood:\n  new_flows_per_cpu: -1\n");
        assert!(
            e.contains(
                "t.yaml:3: flood.new_flows_per_cpu: -1 is out of range (0..=4294967295): give \
                 the new connection-table entries one CPU may create per second"
            ),
            "{e}"
        );
        assert!(e.ends_with("1 error; nothing was applied"), "{e}");
        let e = err("flood:\n  new_flows_per_cpu: lots\n");
        assert!(
            e.contains(
                "t.yaml:3: flood.new_flows_per_cpu: expected an integer (0..=4294967295), found"
            ),
            "{e}"
        );
        let e = err("flood:\n  new_flows_per_cpu: 4294967296\n");
        assert!(
            e.contains("t.yaml:3: flood.new_flows_per_cpu: 4294967296 is out of range"),
            "{e}"
        );
        let e = err("flood:\n  new_flows_per_second: 10\n");
        assert!(
            e.contains(
                "t.yaml:3: flood.new_flows_per_second: unknown field `new_flows_per_second`; \
                 expected one of `new_flows_per_cpu`"
            ),
            "{e}"
        );
        let e = err("flood: 200000\n");
        assert!(
            e.contains("t.yaml:2: flood: expected a mapping like `{ new_flows_per_cpu: 200000 }`"),
            "{e}"
        );
        // A bad flood block beside a bad service: both reported, in line order.
        let e = parse(
            "services:\n  - name: a\n    vip: 10.0.0.1\n    port: 99999\nflood:\n  \
             new_flows_per_cpu: 1.5\n",
            "t.yaml",
        )
        .expect_err("must be refused")
        .to_string();
        let port = e.find("t.yaml:4: services[0].port").expect(&e);
        let flood = e.find("t.yaml:6: flood.new_flows_per_cpu").expect(&e);
        assert!(port < flood, "{e}");
    }
}
