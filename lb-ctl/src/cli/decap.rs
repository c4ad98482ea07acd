//! What `lb-ctl decap` prints: where the real servers' decapsulation program is attached,
//! its settings and its counters.

use std::path::Path;

use crate::maps::decap::Status;

/// The status in a few lines; `None` (nothing attached) says how to attach.
pub fn render(status: Option<&Status>, dir: &Path) -> String {
    let Some(s) = status else {
        return format!(
            "decapsulation is not attached (nothing pinned under {}); `lb-ctl decap attach \
             IFACE` attaches it\n",
            dir.display()
        );
    };
    let mut out = format!(
        "decapsulation (lb_decap): attached to {}; pinned under {}\n{}\n",
        if s.ifaces.is_empty() {
            "no interface".to_string()
        } else {
            s.ifaces.join(", ")
        },
        dir.display(),
        s.settings.describe()
    );
    let width = s
        .counts
        .iter()
        .map(|(r, _)| r.name().len())
        .max()
        .unwrap_or(0);
    for (reason, n) in &s.counts {
        out += &format!("  {:width$}  {n}\n", reason.name());
    }
    out
}

#[cfg(test)]
mod tests {
    use lb_common::decap::DecapReason;

    use super::*;
    use crate::maps::decap::Settings;

    #[test]
    fn status_names_interfaces_settings_and_every_counter() {
        let status = Status {
            ifaces: vec!["eth0".into(), "eth1".into()],
            settings: Settings {
                gue_port: 6080,
                dsts: vec!["10.20.0.11".parse().expect("an address")],
            },
            counts: DecapReason::ALL
                .iter()
                .map(|&r| (r, r as u64 * 10))
                .collect(),
        };
        assert_eq!(
            render(Some(&status), Path::new("/sys/fs/bpf/lb/decap")),
            "decapsulation (lb_decap): attached to eth0, eth1; pinned under /sys/fs/bpf/lb/decap
IPIP, IPv6 and GUE on UDP port 6080; outer destinations 10.20.0.11
  decap_ipip       0
  decap_ip6        10
  decap_gue        20
  pass_not_tunnel  30
  pass_other_dst   40
  pass_fragment    50
  pass_malformed   60
  drop_ce_not_ect  70
"
        );
        assert!(render(None, Path::new("/x/decap")).contains("nothing pinned under /x/decap"));
    }
}
