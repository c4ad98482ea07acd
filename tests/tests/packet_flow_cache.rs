//! Packet-level tests of the per-CPU flow cache (`FLOW_CACHE`) in front of the connection
//! table: what fills a slot, that a hit leaves the connection table alone for at most a
//! second and then refreshes it, and the generation switch: a change of the maps empties
//! every slot at once, a flow that started before it keeps its backend, a new one gets the
//! new pick.

use std::{net::Ipv4Addr, thread, time::Duration};

use lb_common::{Reason, TcpState};
use lb_tests::packet::{
    BACKEND_MACS, Harness, Output, XDP_TX, client_addr, flow_key, pin_to_one_cpu, tcp_to_web,
    web_service,
};

/// Which of BACKEND_MACS a forwarded frame went to.
fn backend_of(out: &Output) -> usize {
    assert_eq!(out.action, XDP_TX, "the packet was not forwarded");
    BACKEND_MACS
        .iter()
        .position(|m| m[..] == out.data[0..6])
        .expect("a known backend MAC")
}

/// The `FLOWS` entry's last-seen stamp of the flow `client:sport`.
fn last_seen(h: &mut Harness, client: [u8; 4], sport: u16) -> u64 {
    h.maps()
        .flows
        .get(&flow_key(client, sport, 80), 0)
        .expect("the flow's FLOWS entry")
        .last_seen_ns
}

/// Opens the connection `client:sport` (SYN, then the client's ACK); returns its backend.
fn open(h: &mut Harness, client: [u8; 4], sport: u16) -> usize {
    let b = backend_of(&h.run(&tcp_to_web(client, sport, "S")));
    assert_eq!(backend_of(&h.run(&tcp_to_web(client, sport, "A"))), b);
    b
}

#[test]
fn an_established_flow_is_served_from_its_cpus_slot_and_refreshes_its_entry_each_second() {
    let _pinned = pin_to_one_cpu();
    let mut h = Harness::with_config(&web_service("rr", ""));
    let (c, p) = (client_addr(1), 41000);
    let key = flow_key(c, p, 80);
    let b = open(&mut h, c, p);
    // The SYN made a half-open entry and the ACK moved it: neither fills a slot.
    assert!(
        h.cached(&key).is_empty(),
        "a slot filled before the first established hit"
    );
    // The next packet finds the established entry and fills this CPU's slot.
    assert_eq!(backend_of(&h.run(&tcp_to_web(c, p, "A"))), b);
    let slots = h.cached(&key);
    assert_eq!(slots.len(), 1, "one CPU's slot holds the flow: {slots:?}");
    let (_, slot) = slots[0];
    let entry = h.maps().flows.get(&key, 0).expect("the FLOWS entry");
    assert_eq!(
        (slot.backend, slot.service_id),
        (entry.backend, entry.service_id)
    );
    assert_eq!(slot.generation, h.generation());

    // Age the entry by 100 s (still live: ESTABLISHED lasts 900 s). Packets within the
    // second are served from the slot: the entry's stamp stays where it was put.
    let mut aged = entry;
    aged.last_seen_ns -= 100_000_000_000;
    h.maps()
        .insert_flow(&key, &aged)
        .expect("writing the aged entry");
    for _ in 0..10 {
        assert_eq!(backend_of(&h.run(&tcp_to_web(c, p, "A"))), b);
    }
    assert_eq!(last_seen(&mut h, c, p), aged.last_seen_ns);
    h.assert_service("web", 13, 13 * 40, 1);
    // A second later the slot is stale: the next packet goes the whole way, which stamps
    // the entry and fills the slot again.
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(backend_of(&h.run(&tcp_to_web(c, p, "A"))), b);
    assert!(
        last_seen(&mut h, c, p) >= entry.last_seen_ns + 1_000_000_000,
        "the entry was not refreshed after the slot went stale"
    );
    assert!(h.cached(&key)[0].1.fresh_until > slot.fresh_until);
}

#[test]
fn packets_that_change_a_connections_state_go_the_whole_way_and_empty_its_slot() {
    let _pinned = pin_to_one_cpu();
    let mut h = Harness::with_config(&web_service("rr", ""));
    let (c, p) = (client_addr(2), 42000);
    let key = flow_key(c, p, 80);
    let a = open(&mut h, c, p);
    assert_eq!(backend_of(&h.run(&tcp_to_web(c, p, "A"))), a);
    assert_eq!(h.cached(&key).len(), 1);
    // The FIN moves the entry to FIN and empties the slot; a later ACK is not cached (the
    // entry is not ESTABLISHED any more).
    assert_eq!(backend_of(&h.run(&tcp_to_web(c, p, "FA"))), a);
    assert!(h.cached(&key).is_empty(), "a FIN left the slot filled");
    assert_eq!(backend_of(&h.run(&tcp_to_web(c, p, "A"))), a);
    assert!(h.cached(&key).is_empty(), "a closing connection was cached");
    let entry = h.maps().flows.get(&key, 0).expect("the FLOWS entry");
    assert_eq!(entry.state(), TcpState::Fin);
    // The client reuses the port within the second: the SYN is a new connection, rr gives it
    // the next backend, and its ACK follows it there, not to the slot's old backend.
    let b = backend_of(&h.run(&tcp_to_web(c, p, "S")));
    assert_ne!(a, b);
    for _ in 0..3 {
        assert_eq!(backend_of(&h.run(&tcp_to_web(c, p, "A"))), b);
    }
    let reused = h
        .maps()
        .flows
        .get(&key, 0)
        .expect("the new connection's entry");
    assert_ne!(reused.backend, entry.backend);
    assert_eq!(h.cached(&key)[0].1.backend, reused.backend);
    // An RST is never served from the slot either.
    assert_eq!(backend_of(&h.run(&tcp_to_web(c, p, "R"))), b);
    assert!(h.cached(&key).is_empty(), "an RST left the slot filled");
    assert_eq!(
        h.maps().flows.get(&key, 0).map(|f| f.state()).ok(),
        Some(TcpState::Rst)
    );
}

#[test]
fn a_cached_flow_whose_backend_goes_down_moves_at_its_next_packet() {
    let _pinned = pin_to_one_cpu();
    let config = web_service("rr", "");
    let mut h = Harness::with_config(&config);
    let (c, p) = (client_addr(3), 43000);
    let a = open(&mut h, c, p);
    assert_eq!(backend_of(&h.run(&tcp_to_web(c, p, "A"))), a);
    assert_eq!(h.cached(&flow_key(c, p, 80)).len(), 1);
    let before = h.generation();
    let down = Ipv4Addr::new(192, 168, 58, 135 + a as u8);
    h.apply_with_down(&config, &[("web", down)]);
    assert_ne!(
        h.generation(),
        before,
        "an apply that changed the maps kept the generation"
    );
    // The live connection is rescheduled off the down backend, as before the cache.
    let b = backend_of(&h.run(&tcp_to_web(c, p, "A")));
    assert_ne!(a, b);
    assert_eq!(backend_of(&h.run(&tcp_to_web(c, p, "A"))), b);
    assert_eq!(
        h.cached(&flow_key(c, p, 80))[0].1.generation,
        h.generation()
    );
}

/// The backends mh gives new flows `client:sport` under `config`, in a harness of its own.
fn fresh_picks(config: &str, client: [u8; 4], sports: std::ops::Range<u16>) -> Vec<usize> {
    let mut h = Harness::with_config(config);
    sports
        .map(|sport| backend_of(&h.run(&tcp_to_web(client, sport, "S"))))
        .collect()
}

#[test]
fn the_generation_switch_keeps_started_flows_and_gives_new_ones_the_new_pick() {
    let _pinned = pin_to_one_cpu();
    let three = web_service("mh", "").replace("      - address: 192.168.58.138\n", "");
    let four = web_service("mh", "");
    let mut h = Harness::with_config(&three);
    // Flows whose pick the fourth backend changes: those that Maglev moves to it.
    let old_picks = fresh_picks(&three, client_addr(4), 44000..44400);
    let new_picks = fresh_picks(&four, client_addr(4), 44000..44400);
    let moved: Vec<(usize, usize)> = (0..400)
        .filter(|&i| old_picks[i] != new_picks[i])
        .map(|i| (i, old_picks[i]))
        .collect();
    assert!(moved.len() >= 20, "only {} of 400 flows move", moved.len());
    let (started, later) = moved.split_at(moved.len() / 2);
    // The started half: open, and one more packet each, which fills the slots.
    for &(i, old) in started {
        let port = 44000 + i as u16;
        assert_eq!(open(&mut h, client_addr(4), port), old);
        assert_eq!(
            backend_of(&h.run(&tcp_to_web(client_addr(4), port, "A"))),
            old
        );
    }
    let g = h.generation();
    h.apply(&four);
    assert_ne!(h.generation(), g);
    h.reset_reasons();
    for &(i, old) in started {
        let (c, port) = (client_addr(4), 44000 + i as u16);
        // Every slot is of the old generation: the packet goes the whole way and finds the
        // connection's entry, which keeps its backend, and fills the slot again.
        assert_eq!(backend_of(&h.run(&tcp_to_web(c, port, "A"))), old);
        let slot = h.cached(&flow_key(c, port, 80));
        assert_eq!(slot.len(), 1);
        assert_eq!(slot[0].1.generation, h.generation());
        assert_eq!(backend_of(&h.run(&tcp_to_web(c, port, "A"))), old);
    }
    // New connections get the new table's pick.
    for &(i, old) in later {
        let port = 44000 + i as u16;
        let new = open(&mut h, client_addr(4), port);
        assert_ne!(new, old);
        assert_eq!(new, new_picks[i]);
    }
    h.assert_reasons(&[(
        Reason::Forwarded,
        (started.len() * 2 + later.len() * 2) as u64,
    )]);
}
