//! Packet-level tests of the schedulers, the connection table and persistence: the real
//! program, maps filled by `apply`, synthetic flows run with BPF_PROG_TEST_RUN.

use std::{collections::HashMap, net::Ipv4Addr, thread, time::Duration};

use lb_common::{PersistKey, Reason, persist_bucket, v4_mapped};
use lb_tests::packet::{
    BACKEND_MACS, CLIENT_MAC, DIRECTOR_MAC, Harness, Output, XDP_TX, pin_to_one_cpu, tcp_frame,
};

const VIP: [u8; 4] = [192, 168, 58, 133];

/// A TCP packet from `client:sport` to VIP:dport with the given flags.
fn tcp(client: [u8; 4], sport: u16, dport: u16, flags: &str) -> Vec<u8> {
    tcp_frame(
        (CLIENT_MAC, DIRECTOR_MAC),
        (client, sport),
        (VIP, dport),
        flags,
    )
}

/// The client address of synthetic flow `i` (spread over a /16).
fn client(i: u32) -> [u8; 4] {
    [10, 1, (i >> 8) as u8, i as u8]
}

/// Which of BACKEND_MACS a forwarded frame went to.
fn backend_of(out: &Output) -> usize {
    assert_eq!(out.action, XDP_TX);
    BACKEND_MACS
        .iter()
        .position(|m| m[..] == out.data[0..6])
        .expect("a known backend MAC")
}

fn service(scheduler: &str, weights: &[u32], extra: &str) -> String {
    let mut s = format!(
        "services:\n  - name: web\n    vip: 192.168.58.133\n    port: 80\n    scheduler: {scheduler}\n{extra}    backends:\n"
    );
    for (i, w) in weights.iter().enumerate() {
        s += &format!(
            "      - address: 192.168.58.{}\n        weight: {w}\n",
            135 + i
        );
    }
    s
}

/// Runs `n` new flows (distinct clients and ports) and counts them per backend.
fn distribution(h: &mut Harness, n: u32) -> Vec<usize> {
    let mut counts = vec![0; BACKEND_MACS.len()];
    for i in 0..n {
        let out = h.run(&tcp(client(i), 30000 + (i % 20000) as u16, 80, "S"));
        counts[backend_of(&out)] += 1;
    }
    counts
}

#[test]
fn wrr_follows_the_exact_sequence_over_10000_flows() {
    let mut h = Harness::with_config(&service("wrr", &[5, 3, 1], ""));
    let cycle = [0, 0, 0, 1, 0, 1, 0, 1, 2];
    for i in 0..10_000u32 {
        let out = h.run(&tcp(client(i), 30000, 80, "S"));
        assert_eq!(backend_of(&out), cycle[i as usize % 9], "flow {i}");
    }
}

#[test]
fn mh_shares_are_within_two_percent_of_weight_shares() {
    let weights = [1u32, 2, 3, 4];
    let mut h = Harness::with_config(&service("mh", &weights, "    table_size: 65537\n"));
    let counts = distribution(&mut h, 10_000);
    let total: u32 = weights.iter().sum();
    for (i, w) in weights.iter().enumerate() {
        let share = counts[i] as f64 / 10_000.0;
        let want = *w as f64 / total as f64;
        assert!(
            (share - want).abs() <= 0.02,
            "backend {i}: {share:.4} of flows, weight share {want:.4} ({counts:?})"
        );
    }
}

#[test]
fn mh_and_sh_give_every_director_the_same_answer_even_with_an_empty_table() {
    // ECMP: two directors, loaded and configured independently, one with the backends listed
    // in another order. Every flow gets the same backend from both; and a director that never
    // saw the flow's SYN (restarted with an empty connection table, or the router re-hashed
    // the flow to it) forwards its later packets to that backend too, without an entry.
    for sched in ["mh", "sh"] {
        let mut a = Harness::with_config(&service(
            sched,
            &[1, 1, 1],
            "    table_size: 4093
",
        ));
        let reversed = format!(
            "services:\n  - name: web\n    vip: 192.168.58.133\n    port: 80\n    scheduler: {sched}\n    table_size: 4093\n    backends:\n      - address: 192.168.58.137\n      - address: 192.168.58.136\n      - address: 192.168.58.135\n"
        );
        let mut b = Harness::with_config(&reversed);
        let mut fresh = Harness::with_config(&reversed);
        for i in 0..2000u32 {
            let syn = tcp(client(i), 40000 + i as u16, 80, "S");
            let picked = backend_of(&a.run(&syn));
            assert_eq!(picked, backend_of(&b.run(&syn)), "{sched} flow {i}");
            let ack = tcp(client(i), 40000 + i as u16, 80, "A");
            assert_eq!(
                picked,
                backend_of(&fresh.run(&ack)),
                "{sched} flow {i} on a director without its entry"
            );
        }
        assert_eq!(
            fresh.flow_count(),
            0,
            "{sched}: the stateless path makes no entry"
        );
        fresh.assert_reasons(&[(Reason::ForwardedStateless, 2000)]);
    }
}

#[test]
fn mh_removing_one_of_four_moves_about_a_quarter_of_new_flows() {
    let mut h = Harness::with_config(&service("mh", &[1, 1, 1, 1], ""));
    let frames: Vec<Vec<u8>> = (0..4000u32)
        .map(|i| tcp(client(i), 40000, 80, "S"))
        .collect();
    let before: Vec<usize> = frames.iter().map(|f| backend_of(&h.run(f))).collect();
    // Drop backend .138 and clear the connection table, so every flow is scheduled afresh.
    h.apply(&service("mh", &[1, 1, 1], ""));
    h.clear_flows();
    let after: Vec<usize> = frames.iter().map(|f| backend_of(&h.run(f))).collect();
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let on_removed = before.iter().filter(|&&b| b == 3).count();
    // Exactly the removed backend's flows must move; Maglev allows a few more.
    assert!(moved >= on_removed);
    let fraction = moved as f64 / frames.len() as f64;
    eprintln!(
        "mh, 4 -> 3 backends: {moved} of {} flows moved ({:.1}%), {on_removed} were on the removed one",
        frames.len(),
        fraction * 100.0
    );
    assert!(
        fraction < 0.25 * 1.2,
        "{moved} of {} flows moved ({on_removed} were on the removed backend)",
        frames.len()
    );
    for (b, a) in before.iter().zip(&after) {
        if *b != 3 {
            // Flows of the remaining backends mostly stay; none goes to the removed one.
            assert_ne!(*a, 3);
        }
    }
}

#[test]
fn sh_sends_a_source_to_one_backend_on_every_port() {
    let mut h = Harness::with_config(&service("sh", &[1, 1, 1], "    table_size: 4093\n"));
    let mut per_backend = [0; 4];
    for c in 0..300u32 {
        let first = backend_of(&h.run(&tcp(client(c), 20000, 80, "S")));
        for port in 1..5u16 {
            let out = h.run(&tcp(client(c), 20000 + port * 7, 80, "S"));
            assert_eq!(backend_of(&out), first, "client {c} port {port}");
        }
        per_backend[first] += 1;
    }
    for (i, n) in per_backend.iter().take(3).enumerate() {
        assert!((60..=140).contains(n), "backend {i}: {n} of 300 sources");
    }
}

#[test]
fn flows_stay_put_when_weights_change_under_mh() {
    let mut h = Harness::with_config(&service("mh", &[1, 1, 1], ""));
    let first: Vec<usize> = (0..300u32)
        .map(|i| backend_of(&h.run(&tcp(client(i), 50000, 80, "S"))))
        .collect();
    h.apply(&service("mh", &[5, 1, 0], ""));
    for (i, b) in first.iter().enumerate() {
        let out = h.run(&tcp(client(i as u32), 50000, 80, "A"));
        assert_eq!(backend_of(&out), *b, "flow {i} moved after a reweight");
    }
}

#[test]
fn least_connections_follow_active_connections() {
    let mut h = Harness::with_config(&service("lc", &[1, 1, 1], ""));
    // Six connections: lc fills the backends evenly, in table order on ties.
    let picks: Vec<usize> = (0..6u16)
        .map(|p| backend_of(&h.run(&tcp(client(1), 1000 + p, 80, "S"))))
        .collect();
    assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    assert_eq!(h.active_connections(), vec![2, 2, 2]);
    // Both connections of backend 1 end (a FIN each): it has the fewest now.
    for p in [1001u16, 1004] {
        assert_eq!(backend_of(&h.run(&tcp(client(1), p, 80, "FA"))), 1);
    }
    assert_eq!(h.active_connections(), vec![2, 0, 2]);
    let next: Vec<usize> = (0..2u16)
        .map(|p| backend_of(&h.run(&tcp(client(2), 2000 + p, 80, "S"))))
        .collect();
    assert_eq!(next, vec![1, 1]);
    // A reset also ends a connection; ACKs after a FIN do not reopen it.
    backend_of(&h.run(&tcp(client(1), 1000, 80, "R")));
    backend_of(&h.run(&tcp(client(1), 1001, 80, "A")));
    assert_eq!(h.active_connections(), vec![1, 2, 2]);
}

#[test]
fn weighted_least_connections_share_by_weight() {
    let mut h = Harness::with_config(&service("wlc", &[2, 1], ""));
    let mut counts = [0; 2];
    for p in 0..30u16 {
        counts[backend_of(&h.run(&tcp(client(3), 3000 + p, 80, "S")))] += 1;
    }
    assert_eq!(counts, [20, 10]);
}

#[test]
fn persistence_holds_a_client_network_inside_the_timeout_only() {
    let extra = "    persistence: { timeout: 1s, netmask: 255.255.255.0 }\n";
    let mut h = Harness::with_config(&service("rr", &[1, 1], extra));
    let first = backend_of(&h.run(&tcp([10, 2, 3, 4], 40000, 80, "S")));
    // New connections from the same /24, other ports: same backend, though rr would alternate.
    for (i, c) in [[10, 2, 3, 4], [10, 2, 3, 99], [10, 2, 3, 4]]
        .iter()
        .enumerate()
    {
        let out = h.run(&tcp(*c, 41000 + i as u16, 80, "S"));
        assert_eq!(backend_of(&out), first, "connection {i} within the timeout");
    }
    // Another network is scheduled normally (rr: the next backend).
    let other = backend_of(&h.run(&tcp([10, 2, 4, 1], 40000, 80, "S")));
    assert_ne!(other, first);
    // A third network takes rr's next pick, so rr's pick after that is not `first`.
    assert_eq!(
        backend_of(&h.run(&tcp([10, 2, 5, 1], 40000, 80, "S"))),
        first
    );
    // Past the timeout, the client network is scheduled afresh, then held again.
    thread::sleep(Duration::from_millis(1300));
    let again = backend_of(&h.run(&tcp([10, 2, 3, 4], 42000, 80, "S")));
    assert_ne!(again, first, "rr's next pick, not the expired backend");
    assert_eq!(
        backend_of(&h.run(&tcp([10, 2, 3, 7], 42001, 80, "S"))),
        again
    );
}

#[test]
fn a_new_connection_renews_its_client_networks_persistence() {
    let extra = "    persistence: { timeout: 1s, netmask: 255.255.255.0 }\n";
    let mut h = Harness::with_config(&service("rr", &[1, 1], extra));
    let first = backend_of(&h.run(&tcp([10, 2, 3, 4], 40000, 80, "S")));
    let stamp = |h: &mut Harness| -> Vec<u64> {
        let entries = h.maps().persist_entries().expect("reading PERSIST");
        entries.iter().map(|(_, p)| p.last_seen_ns).collect()
    };
    let before = stamp(&mut h);
    assert_eq!(before.len(), 1, "one entry for the /24");
    // 0.7 s later a new connection from the network renews the entry: 1.4 s after the first
    // connection (past the 1 s timeout counted from it) the network is still held.
    for (i, sport) in [(1, 40001u16), (2, 40002)] {
        thread::sleep(Duration::from_millis(700));
        let out = h.run(&tcp([10, 2, 3, 9], sport, 80, "S"));
        assert_eq!(
            backend_of(&out),
            first,
            "connection {i}, 0.7 s after the one before"
        );
        let after = stamp(&mut h);
        assert_eq!(after.len(), 1, "still one entry for the /24");
        assert!(
            after[0] > before[0],
            "connection {i} renewed the entry: {before:?} -> {after:?}"
        );
    }
}

/// The persistence table is buckets of four slots: a fifth client network whose key falls in
/// a full bucket evicts the network seen least recently there, and no other.
#[test]
fn a_full_persistence_bucket_evicts_its_least_recently_seen_network() {
    let extra = "    persistence: { timeout: 60s, netmask: 255.255.255.0 }\n";
    let mut h = Harness::with_config(&service("rr", &[1, 1], extra));
    let service_id = h.service_id("web");
    let key = |net: [u8; 4]| PersistKey {
        client: v4_mapped(u32::from_ne_bytes(net)),
        service_id,
    };
    // Five /24 networks whose keys share a bucket.
    let mut by_bucket: HashMap<u32, Vec<[u8; 4]>> = HashMap::new();
    let nets = (0..=255u8).flat_map(|a| (0..=255u8).map(move |b| [10, a, b, 0]));
    let same = nets
        .filter_map(|net| {
            let group = by_bucket.entry(persist_bucket(&key(net))).or_default();
            group.push(net);
            (group.len() == 5).then(|| group.clone())
        })
        .next()
        .expect("five networks in one bucket");
    let syn = |net: [u8; 4], sport: u16| tcp([net[0], net[1], net[2], 7], sport, 80, "S");
    // Four fill the bucket, a tick of the coarse clock apart; then the first is seen again.
    for (i, &net) in same[..4].iter().enumerate() {
        h.run(&syn(net, 40000 + i as u16));
        thread::sleep(Duration::from_millis(20));
    }
    h.run(&syn(same[0], 40010));
    thread::sleep(Duration::from_millis(20));
    let held = |h: &mut Harness| -> Vec<bool> {
        same.iter()
            .map(|&net| {
                let entry = h.maps().persist_entry(&key(net));
                entry.expect("reading PERSIST").is_some()
            })
            .collect()
    };
    assert_eq!(held(&mut h), [true, true, true, true, false]);
    // The fifth takes the slot of the second, now the least recently seen.
    h.run(&syn(same[4], 40020));
    assert_eq!(held(&mut h), [true, false, true, true, true]);
    assert_eq!(
        h.maps().persist_entries().expect("reading PERSIST").len(),
        4
    );
}

#[test]
fn persistence_spans_the_ports_of_an_all_ports_service() {
    let config = "services:\n  - name: any\n    vip: 192.168.58.133\n    port: 0\n    scheduler: rr\n    persistence: { timeout: 60s }\n    backends:\n      - address: 192.168.58.135\n      - address: 192.168.58.136\n";
    let mut h = Harness::with_config(config);
    let first = backend_of(&h.run(&tcp([10, 9, 9, 9], 40000, 21, "S")));
    for port in [20u16, 443, 8080, 30000] {
        let out = h.run(&tcp([10, 9, 9, 9], 40001, port, "S"));
        assert_eq!(backend_of(&out), first, "port {port}");
    }
    // Another client is not held.
    assert_ne!(
        backend_of(&h.run(&tcp([10, 9, 9, 8], 40000, 21, "S"))),
        first
    );
}

#[test]
fn a_new_syn_on_a_closed_tuple_is_a_new_connection() {
    let mut h = Harness::with_config(&service("rr", &[1, 1], ""));
    let a = backend_of(&h.run(&tcp(client(5), 45000, 80, "S")));
    assert_eq!(backend_of(&h.run(&tcp(client(5), 45000, 80, "FA"))), a);
    // The client reuses the port: rr schedules the new connection to the next backend.
    let b = backend_of(&h.run(&tcp(client(5), 45000, 80, "S")));
    assert_ne!(a, b);
    assert_eq!(h.service_counters("web").new_flows, 2);
    // A SYN retransmitted on a live connection stays.
    assert_eq!(backend_of(&h.run(&tcp(client(5), 45000, 80, "S"))), b);
}

#[test]
fn a_down_backend_releases_its_flows() {
    let mut h = Harness::with_config(&service("rr", &[1, 1], ""));
    let picks: Vec<usize> = (0..4u16)
        .map(|p| backend_of(&h.run(&tcp(client(6), 46000 + p, 80, "S"))))
        .collect();
    assert_eq!(picks, vec![0, 1, 0, 1]);
    h.apply_with_down(
        &service("rr", &[1, 1], ""),
        &[("web", Ipv4Addr::new(192, 168, 58, 135))],
    );
    for p in 0..4u16 {
        let out = h.run(&tcp(client(6), 46000 + p, 80, "A"));
        assert_eq!(backend_of(&out), 1, "flow {p} after its backend went down");
    }
    // Its active connections moved with them.
    assert_eq!(h.active_connections(), vec![0, 4]);
    // Everything down: dropped and counted.
    h.apply_with_down(
        &service("rr", &[1, 1], ""),
        &[
            ("web", Ipv4Addr::new(192, 168, 58, 135)),
            ("web", Ipv4Addr::new(192, 168, 58, 136)),
        ],
    );
    h.reset_reasons();
    assert_eq!(
        h.run(&tcp(client(6), 46000, 80, "A")).action,
        lb_tests::packet::XDP_DROP
    );
    h.assert_reasons(&[(Reason::DropNoBackend, 1)]);
}

#[test]
fn a_full_connection_table_keeps_mh_flows_on_their_backend() {
    // The harness's connection table holds 4096 flows; 12,000 more evict the first ones, and
    // mh still sends them where they were. FLOWS keeps one LRU list per CPU and a test run
    // inserts on the CPU its thread is on: pinned to one CPU, every flow shares one list, as
    // one CPU's traffic does (a thread moved between CPUs midway evicted none of the early
    // flows from the other CPU's list).
    let _pin = pin_to_one_cpu();
    let mut h = Harness::with_config(&service("mh", &[1, 1, 1, 1], ""));
    let early: Vec<usize> = (0..200u32)
        .map(|i| backend_of(&h.run(&tcp(client(i), 47000, 80, "S"))))
        .collect();
    for i in 200..12_200u32 {
        h.run(&tcp(client(i), 47001, 80, "S"));
    }
    let capacity = h.flow_capacity() as usize;
    assert!(
        h.flow_count() <= capacity,
        "the LRU keeps at most {capacity}"
    );
    let evicted = (0..200u32)
        .filter(|&i| !h.has_flow(client(i), 47000, 80))
        .count();
    assert!(
        evicted > 100,
        "only {evicted} of the early flows were evicted"
    );
    let flows = h.flow_count();
    for (i, b) in early.iter().enumerate() {
        let out = h.run(&tcp(client(i as u32), 47000, 80, "A"));
        assert_eq!(backend_of(&out), *b, "early flow {i}");
    }
    // The evicted flows' ACKs went by the hash alone, without coming back into the table.
    assert_eq!(h.flow_count(), flows);
    h.assert_reasons(&[
        (Reason::Forwarded, 200 + 12_000 + 200 - evicted as u64),
        (Reason::ForwardedStateless, evicted as u64),
    ]);
}

#[test]
fn a_recount_drops_connections_that_vanished_silently() {
    let mut h = Harness::with_config(&service("lc", &[1, 1], ""));
    for p in 0..4u16 {
        backend_of(&h.run(&tcp(client(7), 48000 + p, 80, "S")));
    }
    assert_eq!(h.active_connections(), vec![2, 2]);
    // Two connections of the first backend vanish without FIN or RST (evicted, say) ...
    let mut gone = 0;
    for p in [48000u16, 48002] {
        gone += usize::from(h.remove_flow(client(7), p, 80));
    }
    assert_eq!(gone, 2);
    assert_eq!(
        h.active_connections(),
        vec![2, 2],
        "the data path cannot see that"
    );
    // ... and the daemon's recount corrects the counts lc compares.
    let changed =
        lb_ctl::maps::recount_connections(h.maps(), lb_ctl::maps::view::now_ns()).expect("recount");
    assert_eq!(changed, 1);
    assert_eq!(h.active_connections(), vec![0, 2]);
    // A recount of correct counts changes nothing.
    let changed =
        lb_ctl::maps::recount_connections(h.maps(), lb_ctl::maps::view::now_ns()).expect("recount");
    assert_eq!(changed, 0);
    assert_eq!(backend_of(&h.run(&tcp(client(7), 48010, 80, "S"))), 0);
}
