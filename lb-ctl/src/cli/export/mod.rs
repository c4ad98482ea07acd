//! `lb-ctl export`: what the maps hold now, written for another tool. `--ipvsadm` writes the
//! rules `ipvsadm -S -n` prints (`ipvsadm.rs`), to compare with or restore on a host with
//! IPVS; `--yaml` writes a service file `lb-ctl apply` takes (`yaml.rs`). Both are pure
//! functions of a [`Snapshot`](crate::maps::view::Snapshot): what the maps do not hold
//! (checks, VRRP, hooks) is not known to them.

pub mod ipvsadm;
pub mod yaml;

#[cfg(test)]
mod tests;
