//! The maps the data path reads that follow `SERVICES`, rebuilt from it rather than kept in
//! step write by write:
//!
//! - `VIP_FILTER`, the pre-filter of destination addresses: a bitmap with the
//!   [`vip_filter_bit`] of every VIP set. A bit that two VIPs share stays set while either has
//!   a service, with no count to keep right.
//! - `SERVICE_KEYS`, each service id's `SERVICES` key (all zero for a free id): the data path
//!   trusts a connection-table entry's service id only if that service still serves the
//!   packet's tuple (ids are reused; an entry may outlive its service).

use std::collections::BTreeSet;

use anyhow::{Context as _, Result};
use aya::maps::{Array, MapData};
use lb_common::{Service, ServiceKey, limits, vip_filter_bit};

use super::{Maps, array_batch, hash_batch};

/// The bitmap with the bits of the VIPs of `keys` set.
pub fn words<'a>(keys: impl IntoIterator<Item = &'a ServiceKey>) -> Vec<u64> {
    let mut words = vec![0u64; limits::VIP_FILTER_WORDS as usize];
    let addrs: BTreeSet<_> = keys.into_iter().map(|k| k.addr).collect();
    for addr in &addrs {
        let bit = vip_filter_bit(addr);
        words[(bit / 64) as usize] |= 1 << (bit % 64);
    }
    words
}

/// `SERVICE_KEYS` for `services`: slot `id` holds the key of service `id`.
pub fn keys<'a>(services: impl IntoIterator<Item = &'a (ServiceKey, Service)>) -> Vec<ServiceKey> {
    let mut slots = vec![ServiceKey::default(); limits::MAX_SERVICES as usize];
    for (k, s) in services {
        if let Some(slot) = slots.get_mut(s.id as usize) {
            *slot = *k;
        }
    }
    slots
}

/// What [`sync`] had to write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub filter_words: usize,
    pub key_slots: usize,
}

/// Makes `VIP_FILTER` and `SERVICE_KEYS` follow `SERVICES` and `also` (the services a plan is
/// about to write: their bits and keys are in place before their entries exist, so no packet
/// of theirs is passed as not-a-VIP). Writes only what differs.
pub fn sync(maps: &mut Maps, also: &[(ServiceKey, Service)]) -> Result<Synced> {
    let mut services = hash_batch(&maps.services).context("reading SERVICES")?;
    services.extend_from_slice(also);
    let filter = words(services.iter().map(|(k, _)| k));
    let keys = keys(&services);
    Ok(Synced {
        filter_words: write_changed(&mut maps.vip_filter, &filter, "VIP_FILTER")?,
        key_slots: write_changed(&mut maps.service_keys, &keys, "SERVICE_KEYS")?,
    })
}

/// Writes the slots of `map` that differ from `want`; returns how many.
fn write_changed<T: aya::Pod + Default + PartialEq>(
    map: &mut Array<MapData, T>,
    want: &[T],
    name: &str,
) -> Result<usize> {
    let have = array_batch(map, 0, want.len() as u32).with_context(|| format!("reading {name}"))?;
    let mut changed = 0;
    for (i, w) in (0u32..).zip(want) {
        if have.get(i as usize) != Some(w) {
            map.set(i, w, 0)
                .with_context(|| format!("writing slot {i} of {name}"))?;
            changed += 1;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use lb_common::v4_mapped;

    use super::*;

    fn key(addr: [u32; 4], port: u16) -> ServiceKey {
        ServiceKey {
            addr,
            port,
            proto: 6,
            _pad: 0,
        }
    }

    fn is_set(words: &[u64], addr: &[u32; 4]) -> bool {
        let bit = vip_filter_bit(addr);
        words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    #[test]
    fn each_service_id_holds_its_key_and_free_ids_hold_none() {
        let v4 = v4_mapped(u32::from_ne_bytes([10, 0, 0, 1]));
        let service = |id| Service {
            id,
            ..Service::default()
        };
        let slots = keys(&[(key(v4, 80), service(3)), (key(v4, 0), service(0))]);
        assert_eq!(slots.len(), limits::MAX_SERVICES as usize);
        assert_eq!(slots[3], key(v4, 80));
        assert_eq!(slots[0], key(v4, 0));
        assert!(
            slots
                .iter()
                .enumerate()
                .all(|(i, k)| i == 0 || i == 3 || *k == ServiceKey::default())
        );
    }

    #[test]
    fn every_vip_of_either_family_has_its_bit_and_nothing_else_is_set() {
        let v4 = v4_mapped(u32::from_ne_bytes([10, 0, 0, 1]));
        let v6 = [0x20010db8u32.to_be(), 0, 0, 1u32.to_be()];
        let keys = [key(v4, 80), key(v4, 0), key(v6, 443)];
        let w = words(&keys);
        assert!(is_set(&w, &v4) && is_set(&w, &v6));
        let ones: u32 = w.iter().map(|x| x.count_ones()).sum();
        assert_eq!(ones, 2, "one bit per VIP address, whatever its ports");
        assert!(!is_set(&words(&[key(v6, 443)]), &v4));
    }
}
