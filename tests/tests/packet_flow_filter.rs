//! Packet-level tests of the connection table's membership bitmap (`FLOW_FILTER`): a packet
//! whose bit is clear skips the `FLOWS` lookup, so every writer of `FLOWS` must set the bit
//! (the data path's ACK that moves a half-open entry, user space's `Maps::insert_flow`), and
//! the rebuild must drop only the bits of entries that are gone. The real program, maps filled
//! by `apply`, frames run with BPF_PROG_TEST_RUN; needs root.

use lb_common::{Flow, FlowKey, TcpState, flow_filter_hash, flow_filter_word};
use lb_tests::packet::{Harness, backend_of, flow_key, web_service};
use lb_tests::packet::{client_addr as client, tcp_to_web as tcp};

fn key(client: [u8; 4], sport: u16) -> FlowKey {
    flow_key(client, sport, 80)
}

#[test]
fn an_ack_that_makes_a_connection_sets_its_bit_and_a_rebuild_keeps_only_live_entries() {
    let mut h = Harness::with_config(&web_service("rr", ""));
    let side = h.maps().filter.side();
    // A SYN makes only a half-open entry: no bit yet.
    let syn = tcp(client(1), 41000, "S");
    let b = backend_of(&syn, &h.run(&syn));
    assert!(
        !h.maps().filter.may_hold(&key(client(1), 41000)),
        "a SYN set the bit"
    );
    // Its ACK moves it to FLOWS and sets the bit.
    let ack = tcp(client(1), 41000, "A");
    assert_eq!(backend_of(&ack, &h.run(&ack)), b);
    assert!(
        h.maps().filter.may_hold(&key(client(1), 41000)),
        "no bit after the ACK"
    );
    // A second connection, then the first one leaves FLOWS (as an eviction would).
    let mut second = Vec::new();
    for flags in ["S", "A"] {
        let f = tcp(client(2), 42000, flags);
        second.push(backend_of(&f, &h.run(&f)));
    }
    assert!(
        h.remove_flow(client(1), 41000, 80),
        "the first connection's entry"
    );
    assert!(
        h.maps().filter.may_hold(&key(client(1), 41000)),
        "a removal cleared the bit"
    );
    // The rebuild walks FLOWS: the gone entry's bit goes, the live one's stays, and the other
    // bitmap is the active one now.
    let maps = h.maps();
    assert_eq!(maps.filter.rebuild(&maps.flows).expect("rebuild"), 1);
    assert_eq!(maps.filter.side(), 1 - side);
    assert!(
        !maps.filter.may_hold(&key(client(1), 41000)),
        "a gone entry's bit kept"
    );
    assert!(
        maps.filter.may_hold(&key(client(2), 42000)),
        "a live entry's bit lost"
    );
    // Only the live entry's bits (two, or one when its two hashes agree).
    let (_, mask) = flow_filter_word(0, flow_filter_hash(&key(client(2), 42000)));
    assert_eq!(maps.filter.ones(), u64::from(mask.count_ones()));
    // The live connection still goes to its backend, through its entry.
    let data = tcp(client(2), 42000, "PA");
    assert_eq!(backend_of(&data, &h.run(&data)), second[0]);
}

#[test]
fn a_syn_finds_an_entry_that_user_space_wrote() {
    // An established entry written by the control plane (as sync installs a peer's
    // connection) on the fourth backend: a SYN of the tuple goes there, not to rr's next
    // pick, so the SYN looked the entry up.
    let mut h = Harness::with_config(&web_service("rr", ""));
    let k = key(client(3), 43000);
    let sid = lb_tests::icmp::service_entry(&mut h, "web").1.id;
    let backend = lb_tests::icmp::backend_ids(&mut h, sid)[3];
    let entry = Flow {
        last_seen_ns: lb_ctl::maps::view::now_ns(),
        backend,
        service_id: sid,
        state: TcpState::Established as u8,
        _pad: [0; 7],
    };
    h.maps().insert_flow(&k, &entry).expect("writing the entry");
    assert!(h.maps().filter.may_hold(&k));
    for _ in 0..3 {
        let syn = tcp(client(3), 43000, "S");
        assert_eq!(backend_of(&syn, &h.run(&syn)), 3, "the entry's backend");
    }
    // After a rebuild too.
    let maps = h.maps();
    maps.filter.rebuild(&maps.flows).expect("rebuild");
    let syn = tcp(client(3), 43000, "S");
    assert_eq!(backend_of(&syn, &h.run(&syn)), 3, "after a rebuild");
}
