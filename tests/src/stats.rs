//! Reading `lb-ctl stats --json` in tests: a service, a backend, a data-path reason. Each
//! panics with the whole document when what it looks for is not there.

use serde_json::Value;

/// The service named `name`.
#[track_caller]
pub fn service<'a>(stats: &'a Value, name: &str) -> &'a Value {
    find(stats, "services", "name", name)
        .unwrap_or_else(|| panic!("no service {name} in stats --json:\n{stats:#}"))
}

/// The backend with `address` (`192.168.58.135`) of a service.
#[track_caller]
pub fn backend(service: &Value, address: impl std::fmt::Display) -> &Value {
    let address = address.to_string();
    find(service, "backends", "address", &address)
        .unwrap_or_else(|| panic!("no backend {address} in:\n{service:#}"))
}

/// `v[key]` as a number.
#[track_caller]
pub fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v:#}"))
}

/// The data-path entry of `reason` (`forwarded`, `pass_not_vip`, ...).
#[track_caller]
pub fn reason<'a>(stats: &'a Value, reason: &str) -> &'a Value {
    find(stats, "datapath", "reason", reason)
        .unwrap_or_else(|| panic!("no data-path reason {reason} in:\n{stats:#}"))
}

/// The packets the data path counted under `reason`.
#[track_caller]
pub fn datapath(stats: &Value, reason_name: &str) -> u64 {
    num(reason(stats, reason_name), "packets")
}

/// Parses the text of `stats --json`.
#[track_caller]
pub fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("stats --json is not JSON ({e}):\n{text}"))
}

/// The entry of the array `v[list]` whose `key` is `value`.
fn find<'a>(v: &'a Value, list: &str, key: &str, value: &str) -> Option<&'a Value> {
    v[list].as_array()?.iter().find(|e| e[key] == value)
}
