//! Packet-level tests of TCP packets that belong to no known connection: a packet that is not
//! a SYN and has no live connection-table entry makes no entry and counts no connection.
//! `mh` and `sh` forward it statelessly to the backend their hash picks (`forwarded_stateless`),
//! the other schedulers drop it (`drop_no_flow`). The real program, maps filled by `apply`,
//! frames run with BPF_PROG_TEST_RUN; needs root.

use std::{net::Ipv4Addr, thread, time::Duration};

use lb_common::{Flow, FlowKey, PersistKey, Reason, v4_mapped};
use lb_tests::packet::{Harness, XDP_DROP, backend_of, web_service};

/// Flag sets of packets that do not open a connection: a bare ACK, data, FIN, RST, and a
/// SYN that also carries RST (IPVS schedules only `syn && !rst`).
const NON_SYN: [&str; 6] = ["A", "PA", "FA", "R", "RA", "SR"];

use lb_tests::packet::{client_addr as client, tcp_to_web as tcp};

/// A service `web` on VIP:80 over backends .135 to .138 (weight 1 each).
fn service(scheduler: &str, extra: &str) -> String {
    web_service(scheduler, extra)
}

/// The key of the TCP flow `client:sport -> VIP:80`.
fn flow_key(client: [u8; 4], sport: u16) -> FlowKey {
    lb_tests::packet::flow_key(client, sport, 80)
}

#[test]
fn rr_wrr_lc_wlc_drop_a_non_syn_without_an_entry_and_count_nothing_else() {
    for scheduler in ["rr", "wrr", "lc", "wlc"] {
        let mut h = Harness::with_config(&service(scheduler, ""));
        // An empty table: every kind of non-SYN is dropped, nothing is recorded.
        for (i, flags) in NON_SYN.iter().enumerate() {
            let out = h.run(&tcp(client(1), 1000 + i as u16, flags));
            assert_eq!(out.action, XDP_DROP, "{scheduler}: {flags}");
        }
        h.assert_reasons(&[(Reason::DropNoFlow, NON_SYN.len() as u64)]);
        assert_eq!(h.flow_count(), 0, "{scheduler}: entries made by non-SYNs");
        assert_eq!(h.active_connections(), vec![0; 4], "{scheduler}");
        h.assert_service("web", 0, 0, 0);
        // Four real connections (SYNs make entries and count) ...
        for p in 0..4u16 {
            let syn = tcp(client(2), 2000 + p, "S");
            backend_of(&syn, &h.run(&syn));
        }
        assert_eq!(h.flow_count(), 4, "{scheduler}: a SYN makes an entry");
        assert_eq!(h.active_connections(), vec![1; 4], "{scheduler}");
        // ... and non-SYNs of other tuples change neither the table nor the counts lc/wlc
        // compare.
        for (i, flags) in NON_SYN.iter().enumerate() {
            let out = h.run(&tcp(client(3), 3000 + i as u16, flags));
            assert_eq!(out.action, XDP_DROP, "{scheduler}: {flags}");
        }
        assert_eq!(h.flow_count(), 4, "{scheduler}");
        assert_eq!(h.active_connections(), vec![1; 4], "{scheduler}");
        h.assert_service("web", 4, 4 * 40, 4);
        h.assert_reasons(&[
            (Reason::Forwarded, 4),
            (Reason::DropNoFlow, 2 * NON_SYN.len() as u64),
        ]);
    }
}

#[test]
fn mh_and_sh_forward_a_non_syn_without_an_entry_where_its_syn_would_go() {
    for scheduler in ["mh", "sh"] {
        let mut h = Harness::with_config(&service(scheduler, "    table_size: 4093\n"));
        let frames = |flags: &dyn Fn(u32) -> &'static str| -> Vec<Vec<u8>> {
            (0..200u32)
                .map(|i| tcp(client(i), 30000 + i as u16, flags(i)))
                .collect()
        };
        let non_syn = frames(&|i| NON_SYN[i as usize % 4]);
        let stateless: Vec<usize> = non_syn.iter().map(|f| backend_of(f, &h.run(f))).collect();
        assert_eq!(h.flow_count(), 0, "{scheduler}: entries made by non-SYNs");
        assert_eq!(h.active_connections(), vec![0; 4], "{scheduler}");
        h.assert_reasons(&[(Reason::ForwardedStateless, 200)]);
        // Counted as traffic of the service, not as new connections.
        h.assert_service("web", 200, 200 * 40, 0);
        let mut per_backend = [0; 4];
        for b in &stateless {
            per_backend[*b] += 1;
        }
        assert!(
            per_backend.iter().all(|&n| n >= 20),
            "{scheduler}: the hash should spread 200 tuples: {per_backend:?}"
        );
        // A SYN of each tuple goes to the same backend, and now makes its entry.
        let syn = frames(&|_| "S");
        for (i, f) in syn.iter().enumerate() {
            assert_eq!(
                backend_of(f, &h.run(f)),
                stateless[i],
                "{scheduler}: tuple {i}"
            );
        }
        assert_eq!(h.flow_count(), 200, "{scheduler}");
        h.assert_reasons(&[(Reason::ForwardedStateless, 200), (Reason::Forwarded, 200)]);
    }
}

#[test]
fn with_persistence_a_non_syn_without_an_entry_goes_to_the_remembered_backend_read_only() {
    let persist =
        "    table_size: 4093\n    persistence: { timeout: 60s, netmask: 255.255.255.0 }\n";
    let mut h = Harness::with_config(&service("mh", persist));
    // The same service without persistence: what the hash alone picks.
    let mut hash_only = Harness::with_config(&service("mh", "    table_size: 4093\n"));
    let syn = tcp([10, 2, 3, 4], 40000, "S");
    let remembered = backend_of(&syn, &h.run(&syn));
    let persist_entries = |h: &mut Harness| h.maps().persist_entries().expect("PERSIST").len();
    assert_eq!(persist_entries(&mut h), 1);
    // The SYN's entry is half-open (no ACK yet).
    let service_id = h
        .syn_entry(&flow_key([10, 2, 3, 4], 40000))
        .expect("the SYN's half-open entry")
        .service_id;
    let key = PersistKey {
        client: v4_mapped(u32::from_ne_bytes([10, 2, 3, 0])),
        service_id,
    };
    let stamp = h
        .maps()
        .persist_entry(&key)
        .expect("reading PERSIST")
        .expect("the persistence entry");
    // Past a tick of the coarse clock, so a refresh would show.
    thread::sleep(Duration::from_millis(30));
    let mut elsewhere = 0;
    for x in 10..60u8 {
        let ack = tcp([10, 2, 3, x], 41000 + x as u16, "A");
        if backend_of(&ack, &hash_only.run(&ack)) == remembered {
            continue;
        }
        elsewhere += 1;
        assert_eq!(
            backend_of(&ack, &h.run(&ack)),
            remembered,
            "10.2.3.{x}: the client network's remembered backend"
        );
    }
    assert!(
        elsewhere >= 10,
        "only {elsewhere} of 50 tuples hash elsewhere"
    );
    // Another client network has no entry: the hash's pick, and no entry is made for it.
    let other = tcp([10, 2, 4, 1], 42000, "A");
    assert_eq!(
        backend_of(&other, &h.run(&other)),
        backend_of(&other, &hash_only.run(&other))
    );
    assert_eq!(h.flow_count(), 1, "non-SYNs made connection entries");
    assert_eq!(
        persist_entries(&mut h),
        1,
        "a non-SYN made a persistence entry"
    );
    assert_eq!(
        h.maps()
            .persist_entry(&key)
            .expect("reading PERSIST")
            .expect("the persistence entry"),
        stamp,
        "a non-SYN refreshed the persistence entry"
    );
    h.assert_reasons(&[
        (Reason::Forwarded, 1),
        (Reason::ForwardedStateless, elsewhere + 1),
    ]);
}

#[test]
fn a_live_entry_whose_backend_went_down_still_reschedules_a_non_syn() {
    let two = "services:\n  - name: web\n    vip: 192.168.58.133\n    port: 80\n    scheduler: rr\n    backends:\n      - address: 192.168.58.135\n      - address: 192.168.58.136\n";
    let mut h = Harness::with_config(two);
    let picks: Vec<usize> = (0..2u16)
        .map(|p| {
            let syn = tcp(client(6), 46000 + p, "S");
            backend_of(&syn, &h.run(&syn))
        })
        .collect();
    assert_eq!(picks, vec![0, 1]);
    h.apply_with_down(two, &[("web", Ipv4Addr::new(192, 168, 58, 135))]);
    h.reset_reasons();
    // The entry proves a real connection: it moves (the new backend answers RST at once).
    let ack = tcp(client(6), 46000, "PA");
    assert_eq!(backend_of(&ack, &h.run(&ack)), 1);
    h.assert_reasons(&[(Reason::Forwarded, 1)]);
    assert_eq!(h.flow_count(), 2);
    assert_eq!(h.active_connections(), vec![0, 2]);
    // A tuple without an entry is still dropped.
    assert_eq!(h.run(&tcp(client(6), 46002, "A")).action, XDP_DROP);
    h.assert_reasons(&[(Reason::Forwarded, 1), (Reason::DropNoFlow, 1)]);
}

#[test]
fn an_expired_entry_does_not_admit_a_non_syn_and_a_syn_replaces_it() {
    let mut h = Harness::with_config(&service("rr", ""));
    let syn = tcp(client(8), 47000, "S");
    assert_eq!(backend_of(&syn, &h.run(&syn)), 0);
    // The client's ACK makes it an established connection.
    let ack = tcp(client(8), 47000, "A");
    assert_eq!(backend_of(&ack, &h.run(&ack)), 0);
    assert_eq!(h.active_connections(), vec![1, 0, 0, 0]);
    // The entry's last packet was 901 s ago: established flows expire after 900 s.
    let key = flow_key(client(8), 47000);
    let flow = h.maps().flows.get(&key, 0).expect("the connection's entry");
    let old = Flow {
        last_seen_ns: lb_ctl::maps::view::now_ns().wrapping_sub(901_000_000_000),
        state: lb_common::TcpState::Established as u8,
        ..flow
    };
    h.maps().insert_flow(&key, &old).expect("ageing the entry");
    assert_eq!(h.run(&ack).action, XDP_DROP);
    h.assert_reasons(&[(Reason::Forwarded, 2), (Reason::DropNoFlow, 1)]);
    // The expired entry went with that packet, and its connection with it.
    assert!(h.maps().flows.get(&key, 0).is_err(), "expired entry kept");
    assert_eq!(h.active_connections(), vec![0, 0, 0, 0]);
    // A new SYN on the tuple is a new connection: rr's next pick.
    assert_eq!(backend_of(&syn, &h.run(&syn)), 1);
    assert_eq!(h.active_connections(), vec![0, 1, 0, 0]);
}
