//! `VIP_FILTER`, the data path's pre-filter of destination addresses: a bitmap with the
//! [`vip_filter_bit`] of every VIP set. It is rebuilt from `SERVICES` rather than counted per
//! bit: a bit that two VIPs share stays set while either has a service, with no count to
//! keep right.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result};
use lb_common::{ServiceKey, limits, vip_filter_bit};

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

/// Makes `VIP_FILTER` hold the bits of every VIP in `SERVICES` and of `also` (the services a
/// plan is about to write: their bits are set before their entries exist, so no packet of
/// theirs is passed as not-a-VIP). Writes only the words that differ; returns how many.
pub fn sync(maps: &mut Maps, also: &[ServiceKey]) -> Result<usize> {
    let services = hash_batch(&maps.services).context("reading SERVICES for VIP_FILTER")?;
    let want = words(services.iter().map(|(k, _)| k).chain(also));
    let have =
        array_batch(&maps.vip_filter, 0, limits::VIP_FILTER_WORDS).context("reading VIP_FILTER")?;
    let mut changed = 0;
    for (i, w) in (0u32..).zip(&want) {
        if have.get(i as usize) != Some(w) {
            maps.vip_filter
                .set(i, w, 0)
                .with_context(|| format!("writing word {i} of VIP_FILTER"))?;
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
