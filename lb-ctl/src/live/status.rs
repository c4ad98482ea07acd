//! `/api/v1/status`: what `stats --json` prints (services and backends with their counters,
//! the data path's reasons, the connection table, VRRP, announce, sync), with each service
//! and backend given its rates now and their last minutes (`rate`, `history`), each backend
//! its `state`, and at the top the samples' `times`, the tables' `flows_fill` and
//! `half_open_fill` (the half-open table's, full under a SYN flood) and the last `events`.

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    events::Event,
    rates::{Of, Ring},
};
use crate::cli::{director::Director, stats};

/// The JSON of `/api/v1/status` at `now_ms` (Unix milliseconds).
pub fn render(shown: &Director, ring: &Ring, events: &[Event], now_ms: u64) -> Result<Value> {
    let mut v = stats::json_value(shown)?;
    let services = (v.get_mut("services").and_then(Value::as_array_mut))
        .context("the stats JSON has no `services` list")?;
    for (sv, s) in services.iter_mut().zip(&shown.maps.services) {
        let Some(obj) = sv.as_object_mut() else {
            continue;
        };
        obj.insert("rate".into(), json!(ring.now(Of::Service, s.id)));
        obj.insert("history".into(), json!(ring.history(Of::Service, s.id)));
        let Some(backends) = obj.get_mut("backends").and_then(Value::as_array_mut) else {
            continue;
        };
        for (bv, b) in backends.iter_mut().zip(&s.backends) {
            if let Some(o) = bv.as_object_mut() {
                o.insert("state".into(), json!(b.state()));
                o.insert("rate".into(), json!(ring.now(Of::Backend, b.id)));
                o.insert("history".into(), json!(ring.history(Of::Backend, b.id)));
            }
        }
    }
    let obj = v
        .as_object_mut()
        .context("the stats JSON is not an object")?;
    let capacity = f64::from(shown.maps.flows_capacity.max(1));
    obj.insert("time_ms".into(), json!(now_ms));
    obj.insert(
        "flows_fill".into(),
        json!(shown.maps.flows as f64 / capacity),
    );
    let half_open_capacity = f64::from(shown.maps.half_open_capacity.max(1));
    obj.insert(
        "half_open_fill".into(),
        json!(shown.maps.half_open as f64 / half_open_capacity),
    );
    obj.insert(
        "rates".into(),
        json!({
            "interval_ms": ring.last().map_or(0, |s| s.interval.as_millis() as u64),
            "times": ring.times(),
        }),
    );
    obj.insert("events".into(), json!(events));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::live::{events::Events, rates::tests::snapshot};

    #[test]
    fn the_status_is_stats_json_with_rates_states_and_events() {
        let (old, new) = (snapshot(0, 0, 0), snapshot(4, 40, 2_400));
        let mut ring = Ring::default();
        ring.push(&old, &new, Duration::from_secs(2), 5_000);
        let mut maps = new;
        maps.flows = 256;
        maps.half_open = 64;
        maps.new_flows_per_cpu = 1000;
        maps.services[0].backends[0].weight = 0;
        let shown = Director {
            maps,
            vrrp: Vec::new(),
            forwarding_off: Vec::new(),
            announce: Vec::new(),
            sync: None,
        };
        let mut events = Events::default();
        events.push(
            4_900,
            "health",
            "web 192.168.58.135".into(),
            Some(("up".into(), "down".into())),
            "connection refused".into(),
        );
        let v = render(&shown, &ring, &events.list(), 5_010).unwrap_or_else(|e| panic!("{e:#}"));
        // Everything `stats --json` has is there, unchanged.
        let plain = stats::json_value(&shown).unwrap_or_else(|e| panic!("{e:#}"));
        for key in [
            "datapath",
            "flows",
            "flows_capacity",
            "half_open",
            "half_open_capacity",
            "new_flows_per_cpu",
        ] {
            assert_eq!(v[key], plain[key], "{key}");
        }
        assert_eq!(v["services"][0]["name"], "web");
        assert_eq!(v["services"][0]["packets"], 40);
        let b = &v["services"][0]["backends"][0];
        assert_eq!(b["address"], "192.168.58.135");
        assert_eq!(b["state"], "draining");
        assert_eq!(
            b["rate"],
            json!({"new_flows": 2.0, "packets": 20.0, "bytes": 1200.0})
        );
        assert_eq!(b["history"]["packets"], json!([20.0]));
        assert_eq!(v["services"][0]["rate"]["bytes"], 1200.0);
        assert_eq!(v["services"][0]["history"]["new_flows"], json!([2.0]));
        assert_eq!(v["time_ms"], 5_010);
        assert_eq!(v["flows_fill"], 0.25);
        assert_eq!(
            (&v["half_open"], &v["half_open_capacity"]),
            (&json!(64), &json!(256))
        );
        assert_eq!(v["half_open_fill"], 0.25);
        assert_eq!(v["new_flows_per_cpu"], 1000);
        assert_eq!(v["rates"], json!({"interval_ms": 2000, "times": [5000]}));
        assert_eq!(v["events"][0]["to"], "down");
        assert_eq!(v["events"][0]["reason"], "connection refused");
        assert_eq!(v["events"][0]["at_ms"], 4_900);
    }
}
