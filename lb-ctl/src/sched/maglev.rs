//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, section 3.4), with weights.
//!
//! Each backend gets a permutation of the table's slots from two hashes of its name
//! (`offset`, `skip`); backends take turns claiming their next preferred free slot until the
//! table is full. A backend of weight `w` takes `w` turns a round (weights reduced by their
//! gcd first), so its share of the table is its share of the weight. The table size must be
//! prime, so every `skip` walks every slot.
//!
//! Everything depends only on the backends' names, weights and the table size, never on
//! their order in the file or on ids, so two directors given the same backends build the same
//! table. Removing one of N backends moves only about 1/N of the slots: those it held, plus a
//! few others.

/// FNV-1a 64 over `bytes` with a salt, then splitmix64's finaliser: fixed (no random keys),
/// so every director computes the same permutations.
fn hash(salt: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ salt;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// One backend as Maglev sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member<'a> {
    /// What the table holds for this backend.
    pub id: u32,
    pub weight: u32,
    /// Its stable name, e.g. `192.168.58.135:80`: the permutation comes from it.
    pub name: &'a str,
}

/// Builds a table of `size` slots (a prime) holding member ids. Members of weight 0 get no
/// slot; with no member of weight > 0 the table is empty.
pub fn build(members: &[Member], size: u32) -> Vec<u32> {
    let mut live: Vec<&Member> = members.iter().filter(|m| m.weight > 0).collect();
    if live.is_empty() || size == 0 {
        return Vec::new();
    }
    // A canonical order: the file's order must not matter.
    live.sort_by(|a, b| a.name.cmp(b.name).then(a.id.cmp(&b.id)));
    let g = live.iter().fold(0, |g, m| gcd(g, m.weight));
    let m = size as u64;
    let perms: Vec<(u64, u64)> = live
        .iter()
        .map(|b| {
            let offset = hash(0x6f66_6673_6574, b.name.as_bytes()) % m;
            let skip = hash(0x736b_6970, b.name.as_bytes()) % (m - 1).max(1) + 1;
            (offset, skip)
        })
        .collect();
    let turns: Vec<u32> = live.iter().map(|b| b.weight / g).collect();
    let mut next = vec![0u64; live.len()];
    let mut table = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    'fill: loop {
        for (i, b) in live.iter().enumerate() {
            for _ in 0..turns[i] {
                let (offset, skip) = perms[i];
                let mut slot = (offset + next[i] * skip) % m;
                while table[slot as usize] != u32::MAX {
                    next[i] += 1;
                    slot = (offset + next[i] * skip) % m;
                }
                table[slot as usize] = b.id;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:80", i / 250, i % 250 + 1))
            .collect()
    }

    fn members(names: &[String], weight: impl Fn(usize) -> u32) -> Vec<Member<'_>> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Member {
                id: i as u32,
                weight: weight(i),
                name: n,
            })
            .collect()
    }

    fn shares(table: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &id in table {
            c[id as usize] += 1;
        }
        c
    }

    #[test]
    fn every_slot_is_filled_and_shares_are_even() {
        let n = names(10);
        let t = build(&members(&n, |_| 1), 65537);
        assert_eq!(t.len(), 65537);
        for (i, c) in shares(&t, 10).iter().enumerate() {
            let share = *c as f64 / 65537.0;
            assert!((share - 0.1).abs() < 0.002, "backend {i}: {share}");
        }
    }

    #[test]
    fn shares_follow_weights() {
        let n = names(3);
        let t = build(&members(&n, |i| [1, 2, 5][i]), 65537);
        for (i, c) in shares(&t, 3).iter().enumerate() {
            let want = [1.0, 2.0, 5.0][i] / 8.0;
            let share = *c as f64 / 65537.0;
            assert!(
                (share - want).abs() < 0.01,
                "backend {i}: {share} vs {want}"
            );
        }
    }

    #[test]
    fn weight_zero_gets_nothing_and_nothing_gives_an_empty_table() {
        let n = names(3);
        let t = build(&members(&n, |i| if i == 1 { 0 } else { 1 }), 251);
        assert_eq!(shares(&t, 3)[1], 0);
        assert!(build(&members(&n, |_| 0), 251).is_empty());
    }

    #[test]
    fn identical_across_builds_and_file_orders() {
        let n = names(20);
        let a = build(&members(&n, |i| 1 + i as u32 % 3), 4093);
        let mut reversed = members(&n, |i| 1 + i as u32 % 3);
        reversed.reverse();
        assert_eq!(a, build(&reversed, 4093));
        assert_eq!(a, build(&members(&n, |i| 1 + i as u32 % 3), 4093));
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        let n = names(10);
        let all = members(&n, |_| 1);
        let before = build(&all, 65537);
        let without: Vec<Member> = all.iter().filter(|m| m.id != 3).cloned().collect();
        let after = build(&without, 65537);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let held = before.iter().filter(|&&id| id == 3).count();
        // Every slot of the removed backend moves; few others do.
        assert!(moved >= held);
        let fraction = moved as f64 / 65537.0;
        assert!(fraction < 0.1 * 1.2, "{fraction} of slots moved");
        // And adding it back restores the table exactly.
        assert_eq!(build(&all, 65537), before);
    }

    #[test]
    fn adding_one_moves_little() {
        let n = names(11);
        let ten: Vec<Member> = members(&n, |_| 1).into_iter().take(10).collect();
        let before = build(&ten, 65537);
        let after = build(&members(&n, |_| 1), 65537);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let fraction = moved as f64 / 65537.0;
        assert!(fraction < (1.0 / 11.0) * 1.2, "{fraction} of slots moved");
    }
}
