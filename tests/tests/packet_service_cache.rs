//! Packet-level tests of the per-CPU service cache (`SERVICE_CACHE`) in front of `SERVICES`:
//! a new flow fills its CPU's slot, later new flows of the service are placed from the slot,
//! and a new generation (every plan's write makes one) sends the next one to `SERVICES`
//! again: a changed, added or removed service is seen at once.

use lb_common::{Reason, service_key};
use lb_tests::packet::{
    CLIENT_MAC, DIRECTOR_MAC, Harness, XDP_DROP, XDP_PASS, XDP_TX, client_addr, flow_key,
    pin_to_one_cpu, tcp_frame, tcp_to_web, web_service,
};

#[test]
fn a_new_flow_fills_its_cpus_slot_which_serves_until_the_generation_moves() {
    let _pinned = pin_to_one_cpu();
    let mut h = Harness::with_config(&web_service("rr", ""));
    let c = client_addr(1);
    let key = service_key(&flow_key(c, 40000, 80));
    assert!(
        h.cached_service(&key).is_empty(),
        "a slot filled before any packet"
    );
    assert_eq!(h.run(&tcp_to_web(c, 40000, "S")).action, XDP_TX);
    let slots = h.cached_service(&key);
    assert_eq!(
        slots.len(),
        1,
        "one CPU's slot holds the service: {slots:?}"
    );
    let stored = h.maps().services.get(&key, 0).expect("the SERVICES entry");
    assert_eq!(slots[0].1.service, stored);
    assert_eq!(slots[0].1.generation, h.generation());

    // SERVICES written behind the data path's back, its table emptied, and no new
    // generation: the slot still places the next new flow...
    let emptied = lb_common::Service {
        table_len: 0,
        ..stored
    };
    h.maps()
        .services
        .insert(key, emptied, 0)
        .expect("writing SERVICES");
    assert_eq!(
        h.run(&tcp_to_web(c, 40001, "S")).action,
        XDP_TX,
        "the slot did not answer"
    );
    // ...until the generation moves, as after every plan's writes: then SERVICES answers,
    // and the slot is filled again from it.
    h.maps().bump_generation().expect("bumping GENERATION");
    assert_eq!(h.run(&tcp_to_web(c, 40002, "S")).action, XDP_DROP);
    let slots = h.cached_service(&key);
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].1.service, emptied);
    assert_eq!(slots[0].1.generation, h.generation());
    h.assert_reasons(&[(Reason::Forwarded, 2), (Reason::DropNoBackend, 1)]);
}

#[test]
fn a_port_given_its_own_service_leaves_the_vips_all_ports_service_at_the_next_syn() {
    let _pinned = pin_to_one_cpu();
    let any = "
services:
  - name: any
    vip: 192.168.58.133
    port: 0
    scheduler: rr
    backends:
      - address: 192.168.58.135
";
    let with_alt = format!(
        "{any}  - name: alt
    vip: 192.168.58.133
    port: 8080
    backends:
      - address: 192.168.58.136
        port: 8080
"
    );
    let syn = |sport: u16| {
        tcp_frame(
            (CLIENT_MAC, DIRECTOR_MAC),
            (client_addr(2), sport),
            ([192, 168, 58, 133], 8080),
            "S",
        )
    };
    let mut h = Harness::with_config(any);
    for sport in [41000, 41001] {
        assert_eq!(h.run(&syn(sport)).action, XDP_TX);
    }
    // The all-ports service is cached under the packet's own port.
    let key = service_key(&flow_key(client_addr(2), 41000, 8080));
    assert_eq!(h.cached_service(&key).len(), 1);
    h.assert_service("any", 2, 2 * 40, 2);

    h.apply(&with_alt);
    assert_eq!(h.run(&syn(41002)).action, XDP_TX);
    h.assert_service("any", 2, 2 * 40, 2);
    h.assert_service("alt", 1, 40, 1);
}

#[test]
fn a_removed_service_is_no_longer_served_from_a_slot() {
    let _pinned = pin_to_one_cpu();
    // Another service keeps the VIP's bit in VIP_FILTER: the packet reaches step 3.
    let tls = "  - name: tls\n    vip: 192.168.58.133\n    port: 443\n    backends:\n      - address: 192.168.58.135\n";
    let mut h = Harness::with_config(&format!("{}{tls}", web_service("rr", "")));
    let c = client_addr(3);
    assert_eq!(h.run(&tcp_to_web(c, 42000, "S")).action, XDP_TX);
    assert_eq!(
        h.cached_service(&service_key(&flow_key(c, 42000, 80)))
            .len(),
        1
    );
    h.apply(&format!("services:\n{tls}"));
    assert_eq!(h.run(&tcp_to_web(c, 42001, "S")).action, XDP_PASS);
    h.assert_reasons(&[(Reason::Forwarded, 1), (Reason::PassNotVip, 1)]);
}
