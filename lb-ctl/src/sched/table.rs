//! Building a rr/wrr service's backend table: the sequence of backend ids the data path walks.
//! The hashing schedulers (mh, sh) index a Maglev table instead ([`super::maglev`]).

/// The longest sequence a rr/wrr service gets. Weights whose cycle would be longer are scaled
/// down in proportion (each keeps at least one slot), as a table has to be finite.
pub const MAX_SEQUENCE: usize = 65536;

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Round robin: every backend of weight > 0 once, in the given order.
pub fn round_robin(backends: &[(u32, u32)]) -> Vec<u32> {
    backends
        .iter()
        .filter(|&&(_, w)| w > 0)
        .map(|&(id, _)| id)
        .collect()
}

/// Weighted round robin as IPVS's `ip_vs_wrr` walks it: the current weight starts at the
/// largest weight and falls by the weights' gcd each pass; a pass picks, in order, every
/// backend whose weight is at least the current weight. Weights 3:1 give `A A A B`; 5:3:1
/// give `A A A B A B A B C`: interleaved, not in blocks. Backends of weight 0 never appear.
///
/// `backends` is `(id, weight)` in configuration order.
pub fn weighted_round_robin(backends: &[(u32, u32)]) -> Vec<u32> {
    let live: Vec<(u32, u32)> = backends.iter().copied().filter(|&(_, w)| w > 0).collect();
    let live = scale_to_fit(&live);
    let Some(max) = live.iter().map(|&(_, w)| w).max() else {
        return Vec::new();
    };
    let g = live.iter().fold(0, |g, &(_, w)| gcd(g, w));
    let mut seq = Vec::new();
    let mut current = max;
    while current > 0 {
        seq.extend(
            live.iter()
                .filter(|&&(_, w)| w >= current)
                .map(|&(id, _)| id),
        );
        current -= g;
    }
    seq
}

/// Weights reduced by their gcd; scaled down in proportion when their cycle would exceed
/// [`MAX_SEQUENCE`].
fn scale_to_fit(backends: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let g = backends.iter().fold(0, |g, &(_, w)| gcd(g, w)).max(1);
    let reduced: Vec<(u32, u32)> = backends.iter().map(|&(id, w)| (id, w / g)).collect();
    let total: u64 = reduced.iter().map(|&(_, w)| w as u64).sum();
    if total <= MAX_SEQUENCE as u64 {
        return reduced;
    }
    reduced
        .iter()
        .map(|&(id, w)| {
            let scaled = (w as u64 * MAX_SEQUENCE as u64 / total).max(1);
            (id, scaled as u32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rr_lists_live_backends_once_in_order() {
        assert_eq!(
            round_robin(&[(7, 1), (3, 5), (9, 0), (4, 1)]),
            vec![7, 3, 4]
        );
        assert!(round_robin(&[(1, 0)]).is_empty());
        assert!(round_robin(&[]).is_empty());
    }

    #[test]
    fn wrr_interleaves_like_ipvs() {
        assert_eq!(weighted_round_robin(&[(0, 3), (1, 1)]), vec![0, 0, 0, 1]);
        assert_eq!(
            weighted_round_robin(&[(10, 5), (11, 3), (12, 1)]),
            vec![10, 10, 10, 11, 10, 11, 10, 11, 12]
        );
        assert_eq!(weighted_round_robin(&[(0, 1), (1, 1)]), vec![0, 1]);
    }

    #[test]
    fn wrr_reduces_by_gcd_and_skips_weight_zero() {
        assert_eq!(
            weighted_round_robin(&[(0, 300), (1, 100), (2, 0)]),
            vec![0, 0, 0, 1]
        );
        assert!(weighted_round_robin(&[(0, 0), (1, 0)]).is_empty());
    }

    #[test]
    fn wrr_share_matches_weight_share() {
        let seq = weighted_round_robin(&[(0, 7), (1, 2), (2, 4)]);
        assert_eq!(seq.len(), 13);
        for (id, w) in [(0, 7), (1, 2), (2, 4)] {
            assert_eq!(seq.iter().filter(|&&x| x == id).count(), w);
        }
    }

    #[test]
    fn wrr_long_cycles_are_scaled_not_truncated() {
        let backends: Vec<(u32, u32)> = (0..4).map(|i| (i, 65535 - i)).collect();
        let seq = weighted_round_robin(&backends);
        assert!(seq.len() <= MAX_SEQUENCE, "{}", seq.len());
        for id in 0..4 {
            let n = seq.iter().filter(|&&x| x == id).count();
            assert!((n as i64 - seq.len() as i64 / 4).abs() <= 1, "id {id}: {n}");
        }
        let seq = weighted_round_robin(&[(0, 65535), (1, 1), (2, 65535)]);
        assert!(seq.contains(&1), "a small weight keeps a slot");
    }
}
