//! Packet-level tests of the half-open table and the new-entry budget: a SYN makes a half-open
//! entry (`SYNS`), the client's ACK moves it to the connection table (`FLOWS`), and a flood of
//! SYNs evicts half-open entries only, never an established connection. Past a CPU's budget of
//! new entries per second, mh/sh forward by hash without an entry and rr/wrr/lc/wlc drop. The
//! real program, maps filled by `apply`, frames run with BPF_PROG_TEST_RUN; needs root.
//!
//! The connection table keeps one LRU list per CPU, and the budget is per CPU: every test that
//! fills a table or spends the budget pins its thread to one CPU first, so every packet lands
//! on the same list (as one CPU's share of a flood does). The half-open table is shared by all
//! CPUs, in buckets of four slots.

use std::net::Ipv4Addr;

use lb_common::{
    Budget, Flow, FlowKey, HALF_OPEN_WAYS, PROTO_UDP, Reason, TcpState, half_open_bucket,
    half_open_shift,
};
use lb_tests::packet::{
    CLIENT_MAC, DIRECTOR_MAC, Harness, XDP_DROP, XDP_TX, backend_of, flow_key, pin_to_one_cpu,
    udp4_frame, web_service,
};

const VIP: [u8; 4] = [192, 168, 58, 133];
/// The harness's tables: 4096 established entries and 4096 half-open slots.
const CAPACITY: u32 = 4096;

use lb_tests::packet::{client_addr as client, tcp_to_web as tcp};

/// A spoofed source of the flood (10.200.x.x to 10.255.x.x).
fn spoofed(i: u32) -> [u8; 4] {
    [10, 200 + (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// A service `web` on VIP:80 over backends .135 to .138 (weight 1 each).
fn service(scheduler: &str) -> String {
    web_service(scheduler, "")
}

/// As [`service`], for `proto` (tcp or udp).
fn service_of(proto: &str, scheduler: &str) -> String {
    web_service(scheduler, &format!("    protocol: {proto}\n"))
}

fn key(client: [u8; 4], sport: u16) -> FlowKey {
    flow_key(client, sport, 80)
}

/// Sets the per-CPU budget of new entries per second (0 = no limit) and starts a fresh window.
fn set_budget(h: &mut Harness, per_cpu: u32) {
    h.set_new_flows_per_cpu(per_cpu)
        .expect("setting the budget");
    h.refill_budget().expect("refilling the budget");
}

#[test]
fn a_syn_is_half_open_until_the_clients_ack_moves_it_to_the_connection_table() {
    let mut h = Harness::with_config(&service("rr"));
    let syn = tcp(client(1), 40000, "S");
    let b = backend_of(&syn, &h.run(&syn));
    assert!(h.is_half_open(client(1), 40000, 80));
    assert!(!h.is_established(client(1), 40000, 80));
    assert_eq!(h.active_connections(), vec![1, 0, 0, 0]);
    // A retransmitted SYN keeps its backend (rr would pick the next one) and its one entry.
    assert_eq!(backend_of(&syn, &h.run(&syn)), b);
    assert_eq!((h.half_open_count(), h.established_count()), (1, 0));
    assert_eq!(h.service_counters("web").new_flows, 1);
    // The client's ACK: the same backend, now an established entry and no half-open one.
    let ack = tcp(client(1), 40000, "A");
    assert_eq!(backend_of(&ack, &h.run(&ack)), b);
    assert_eq!((h.half_open_count(), h.established_count()), (0, 1));
    let flow = h
        .maps()
        .flows
        .get(&key(client(1), 40000), 0)
        .expect("entry");
    assert_eq!(flow.state(), TcpState::Established);
    assert_eq!(h.active_connections(), vec![1, 0, 0, 0]);
    // Data and the FIN follow it; the FIN ends the active connection.
    for flags in ["PA", "FA"] {
        let f = tcp(client(1), 40000, flags);
        assert_eq!(backend_of(&f, &h.run(&f)), b, "{flags}");
    }
    assert_eq!(h.active_connections(), vec![0, 0, 0, 0]);
    h.assert_reasons(&[(Reason::Forwarded, 5)]);
}

#[test]
fn a_fin_or_rst_right_after_the_syn_also_closes_the_half_open_entry() {
    for (flags, state) in [("FA", TcpState::Fin), ("R", TcpState::Rst)] {
        let mut h = Harness::with_config(&service("rr"));
        let syn = tcp(client(2), 41000, "S");
        let b = backend_of(&syn, &h.run(&syn));
        let end = tcp(client(2), 41000, flags);
        assert_eq!(backend_of(&end, &h.run(&end)), b, "{flags}");
        assert_eq!((h.half_open_count(), h.established_count()), (0, 1));
        let flow = h
            .maps()
            .flows
            .get(&key(client(2), 41000), 0)
            .expect("entry");
        assert_eq!(flow.state(), state, "{flags}");
        assert_eq!(h.active_connections(), vec![0, 0, 0, 0], "{flags}");
    }
}

#[test]
fn an_expired_half_open_entry_admits_no_ack_and_gives_its_connection_back() {
    let mut h = Harness::with_config(&service("rr"));
    let syn = tcp(client(3), 42000, "S");
    assert_eq!(backend_of(&syn, &h.run(&syn)), 0);
    // The SYN was 31 s ago: half-open entries live 30 s.
    let k = key(client(3), 42000);
    let entry = h.syn_entry(&k).expect("half-open entry");
    let old = Flow {
        last_seen_ns: lb_ctl::maps::view::now_ns().wrapping_sub(31_000_000_000),
        ..entry
    };
    h.maps().set_half_open(&k, &old).expect("ageing the entry");
    assert_eq!(h.run(&tcp(client(3), 42000, "A")).action, XDP_DROP);
    h.assert_reasons(&[(Reason::Forwarded, 1), (Reason::DropNoFlow, 1)]);
    assert_eq!((h.half_open_count(), h.established_count()), (0, 0));
    assert_eq!(h.active_connections(), vec![0, 0, 0, 0]);
}

#[test]
fn a_half_open_entry_whose_backend_went_down_moves_with_its_ack() {
    let two = "services:\n  - name: web\n    vip: 192.168.58.133\n    port: 80\n    scheduler: rr\n    backends:\n      - address: 192.168.58.135\n      - address: 192.168.58.136\n";
    let mut h = Harness::with_config(two);
    let syn = tcp(client(4), 43000, "S");
    assert_eq!(backend_of(&syn, &h.run(&syn)), 0);
    h.apply_with_down(two, &[("web", Ipv4Addr::new(192, 168, 58, 135))]);
    // The half-open entry proves the SYN was scheduled: its ACK is rescheduled, not dropped.
    let ack = tcp(client(4), 43000, "A");
    assert_eq!(backend_of(&ack, &h.run(&ack)), 1);
    assert_eq!((h.half_open_count(), h.established_count()), (0, 1));
    assert_eq!(h.active_connections(), vec![0, 1]);
}

#[test]
fn a_syn_flood_of_four_times_the_table_evicts_no_established_connection() {
    let _pin = pin_to_one_cpu();
    for scheduler in ["rr", "wlc", "mh"] {
        let mut h = Harness::with_config(&service(scheduler));
        // 20 real connections: SYN, then the client's ACK.
        let mut real = Vec::new();
        for i in 0..20u32 {
            let syn = tcp(client(i), 44000, "S");
            let b = backend_of(&syn, &h.run(&syn));
            let ack = tcp(client(i), 44000, "A");
            assert_eq!(backend_of(&ack, &h.run(&ack)), b);
            real.push(b);
        }
        // 4 x 4096 spoofed SYNs, each from its own source, none followed by an ACK.
        for i in 0..4 * CAPACITY {
            let out = h.run(&tcp(spoofed(i), 1024 + (i % 50000) as u16, "S"));
            assert_eq!(out.action, XDP_TX, "{scheduler}: flood SYN {i}");
        }
        assert_eq!(h.established_count(), 20, "{scheduler}");
        // The flood holds every slot of the half-open table (16 SYNs a bucket of four).
        let half_open = h.half_open_count();
        assert_eq!(
            half_open, CAPACITY as usize,
            "{scheduler}: {half_open} half-open entries in {CAPACITY} slots"
        );
        // Eviction order within each bucket: the flood's first SYNs went first, its last ones
        // are still there.
        let first = (0..100).filter(|&i| h.is_half_open(spoofed(i), 1024 + i as u16, 80));
        assert_eq!(first.count(), 0, "{scheduler}: early flood entries kept");
        let last = (4 * CAPACITY - 100..4 * CAPACITY)
            .filter(|&i| h.is_half_open(spoofed(i), 1024 + (i % 50000) as u16, 80))
            .count();
        assert_eq!(last, 100, "{scheduler}: late flood entries evicted");
        // Every real connection still goes to its backend, from its established entry.
        h.reset_reasons();
        for (i, b) in real.iter().enumerate() {
            let data = tcp(client(i as u32), 44000, "PA");
            assert_eq!(
                backend_of(&data, &h.run(&data)),
                *b,
                "{scheduler}: conn {i}"
            );
        }
        h.assert_reasons(&[(Reason::Forwarded, 20)]);
        // The half-open entries the flood evicted leave counts behind that the daemon's
        // recount corrects: 20 established plus the live half-open entries.
        lb_ctl::maps::recount_connections(h.maps(), lb_ctl::maps::view::now_ns()).expect("recount");
        let active: u64 = h.active_connections().iter().sum();
        assert_eq!(active, 20 + h.half_open_count() as u64, "{scheduler}");
    }
}

#[test]
fn over_the_budget_mh_forwards_by_hash_without_an_entry_and_rr_drops() {
    let _pin = pin_to_one_cpu();
    for scheduler in ["rr", "wrr", "lc", "wlc", "mh", "sh"] {
        let hashed = matches!(scheduler, "mh" | "sh");
        let mut h = Harness::with_config(&service(scheduler));
        // What the scheduler's hash picks for each tuple, from a harness without a budget.
        let mut unlimited = Harness::with_config(&service(scheduler));
        set_budget(&mut h, 10);
        let mut admitted = Vec::new();
        for i in 0..15u32 {
            let syn = tcp(client(i), 45000, "S");
            let out = h.run(&syn);
            if i < 10 {
                admitted.push(backend_of(&syn, &out));
            } else if hashed {
                let want = backend_of(&syn, &unlimited.run(&syn));
                assert_eq!(backend_of(&syn, &out), want, "{scheduler}: SYN {i}");
            } else {
                assert_eq!(out.action, XDP_DROP, "{scheduler}: SYN {i}");
            }
        }
        assert_eq!(
            h.half_open_count(),
            10,
            "{scheduler}: entries past the budget"
        );
        let over = if hashed {
            Reason::ForwardedOverBudget
        } else {
            Reason::DropOverBudget
        };
        h.assert_reasons(&[(Reason::Forwarded, 10), (over, 5)]);
        assert_eq!(h.service_counters("web").new_flows, 10, "{scheduler}");
        // New UDP flows spend the same budget (lc and wlc do not serve UDP).
        if !scheduler.ends_with("lc") {
            let mut u = Harness::with_config(&service_of("udp", scheduler));
            set_budget(&mut u, 1);
            for i in 0..2u16 {
                let dgram = udp4_frame(
                    (CLIENT_MAC, DIRECTOR_MAC),
                    (client(99), 5353 + i),
                    (VIP, 80),
                    b"q",
                );
                let out = u.run(&dgram);
                if i == 0 || hashed {
                    assert_eq!(out.action, XDP_TX, "{scheduler}: UDP {i}");
                } else {
                    assert_eq!(out.action, XDP_DROP, "{scheduler}: UDP {i}");
                }
            }
            let udp_entries = u
                .maps()
                .flows
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.proto == PROTO_UDP)
                .count();
            assert_eq!(
                udp_entries, 1,
                "{scheduler}: UDP entries within a budget of 1"
            );
            u.assert_reasons(&[(Reason::Forwarded, 1), (over, 1)]);
        }
        // What is already admitted costs nothing: retransmitted SYNs and the clients' ACKs
        // of the admitted connections go through, and the ACKs promote them.
        h.reset_reasons();
        for (i, b) in admitted.iter().enumerate() {
            let syn = tcp(client(i as u32), 45000, "S");
            assert_eq!(
                backend_of(&syn, &h.run(&syn)),
                *b,
                "{scheduler}: retransmit {i}"
            );
            let ack = tcp(client(i as u32), 45000, "A");
            assert_eq!(backend_of(&ack, &h.run(&ack)), *b, "{scheduler}: ACK {i}");
        }
        h.assert_reasons(&[(Reason::Forwarded, 20)]);
        assert_eq!((h.half_open_count(), h.established_count()), (0, 10));
        // A second later the window refills.
        let cpus = aya::util::nr_cpus().expect("possible CPUs");
        let past = Budget {
            window_start_ns: lb_ctl::maps::view::now_ns().wrapping_sub(1_000_000_001),
            used: 10,
        };
        let values = aya::maps::PerCpuValues::try_from(vec![past; cpus]).expect("values");
        h.maps().budget.set(0, values, 0).expect("writing BUDGET");
        let syn = tcp(client(200), 45000, "S");
        backend_of(&syn, &h.run(&syn));
        assert!(
            h.is_half_open(client(200), 45000, 80),
            "{scheduler}: after a second"
        );
        // No budget (0): no limit.
        set_budget(&mut h, 0);
        for i in 300..400u32 {
            let syn = tcp(client(i), 45000, "S");
            backend_of(&syn, &h.run(&syn));
        }
        assert_eq!(h.half_open_count(), 101, "{scheduler}");
    }
}

/// The first `n` source ports from 20000 on whose flow from `client` to the VIP's port 80
/// falls into the same bucket of the half-open table as the first one.
fn same_bucket_ports(client: [u8; 4], n: usize) -> Vec<u16> {
    let shift = half_open_shift(CAPACITY).expect("a power of two");
    let bucket = |p: u16| half_open_bucket(&key(client, p), shift);
    let first = bucket(20000);
    let ports: Vec<u16> = (20000..u16::MAX)
        .filter(|&p| bucket(p) == first)
        .take(n)
        .collect();
    assert_eq!(ports.len(), n, "ports of one bucket");
    ports
}

#[test]
fn a_fifth_syn_into_a_bucket_evicts_its_oldest_half_open_entry_which_gives_back_its_connection() {
    for scheduler in ["rr", "lc"] {
        let mut h = Harness::with_config(&service(scheduler));
        let ports = same_bucket_ports(client(9), HALF_OPEN_WAYS as usize + 1);
        // Four half-open connections fill the bucket; each SYN counts an active connection.
        let mut backends = Vec::new();
        for &p in &ports[..4] {
            let syn = tcp(client(9), p, "S");
            backends.push(backend_of(&syn, &h.run(&syn)));
        }
        assert_eq!(h.half_open_count(), 4, "{scheduler}");
        assert_eq!(h.active_connections().iter().sum::<u64>(), 4, "{scheduler}");
        // The fifth takes the slot of the first, the least recently seen.
        let syn = tcp(client(9), ports[4], "S");
        backends.push(backend_of(&syn, &h.run(&syn)));
        assert_eq!(h.half_open_count(), 4, "{scheduler}");
        assert!(
            !h.is_half_open(client(9), ports[0], 80),
            "{scheduler}: the oldest kept"
        );
        for &p in &ports[1..] {
            assert!(
                h.is_half_open(client(9), p, 80),
                "{scheduler}: port {p} evicted"
            );
        }
        // The evicted connection is no longer counted: four active, one on each backend the
        // four kept SYNs went to.
        let mut want = vec![0u64; 4];
        for &b in &backends[1..] {
            want[b] += 1;
        }
        assert_eq!(h.active_connections(), want, "{scheduler}");
        // The evicted connection's ACK finds no entry: rr and lc cannot place it.
        h.reset_reasons();
        assert_eq!(h.run(&tcp(client(9), ports[0], "A")).action, XDP_DROP);
        h.assert_reasons(&[(Reason::DropNoFlow, 1)]);
        // The others' ACKs move them to the connection table, on the backend of their SYN.
        for (i, &p) in ports.iter().enumerate().skip(1) {
            let ack = tcp(client(9), p, "A");
            assert_eq!(
                backend_of(&ack, &h.run(&ack)),
                backends[i],
                "{scheduler}: port {p}"
            );
        }
        assert_eq!((h.half_open_count(), h.established_count()), (0, 4));
        assert_eq!(h.active_connections(), want, "{scheduler}");
    }
}

#[test]
fn a_retransmitted_syn_keeps_its_slot_and_backend_and_counts_once() {
    let mut h = Harness::with_config(&service("rr"));
    let ports = same_bucket_ports(client(10), HALF_OPEN_WAYS as usize);
    let syn = tcp(client(10), ports[0], "S");
    let first = backend_of(&syn, &h.run(&syn));
    for &p in &ports[1..] {
        h.run(&tcp(client(10), p, "S"));
    }
    // The bucket is full; the first SYN again (a retransmission) finds its own entry, so it
    // evicts nothing, keeps its backend and is no new connection.
    let again = tcp(client(10), ports[0], "S");
    assert_eq!(backend_of(&again, &h.run(&again)), first);
    assert_eq!(h.half_open_count(), 4);
    assert_eq!(h.active_connections().iter().sum::<u64>(), 4);
    h.assert_service("web", 5, 5 * 40, 4);
}
