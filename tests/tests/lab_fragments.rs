//! End to end: UDP datagrams of 4,000 bytes, which the client's kernel fragments at the lab's
//! MTU of 1,500, echoed whole through the director (`lb-ctl run`, `mh` over two real servers),
//! for IPv4 and IPv6. Each datagram comes from a new socket (a new source port, so a new flow
//! that `mh` may put on either server), and its non-first fragments carry no ports: they reach
//! the server its first fragment went to, or the datagram is never reassembled and the echo
//! never comes.
//!
//! The lab's rules (docs/lab.md) hold: its own lab, 100 datagrams per family with a deadline
//! each, everything removed at the end, loud failure without root.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use lb_tests::{
    env::Env,
    lab::{Host, icmp::snmp_counter, udp_socket},
    lab_spec, services,
    stats::{self, service},
};

/// Datagrams per family.
const N: usize = 100;
/// Bytes of each datagram's payload: more than one 1,500-byte frame holds.
const SIZE: usize = 4000;
const PORT: u16 = 5353;
/// Deadline of one echo.
const T: Duration = Duration::from_secs(2);

/// `lb-ctl run` with the UDP service `echo4` (IPv4) or `echo6` (IPv6) on the VIP of that
/// family, `mh` over both real servers; the service's name and VIP.
fn env(v6: bool) -> (Env, String, IpAddr) {
    let mut service = None;
    let env = Env::running(
        &lab_spec!(),
        |lab| {
            let s = services::udp_echo(lab, v6, "mh");
            let yaml = services::file(std::slice::from_ref(&s));
            service = Some(s);
            yaml
        },
        &[],
    );
    let service = service.unwrap_or_else(|| panic!("no service was written"));
    (env, service.name, service.vip)
}

/// Kernel counters of `host`, by name.
fn counters(host: &Host, names: &[&str]) -> Vec<u64> {
    names
        .iter()
        .map(|n| snmp_counter(host, n).unwrap_or_else(|e| panic!("{e:#}")))
        .collect()
}

/// Sends [`N`] datagrams of [`SIZE`] bytes to `vip`, each from a new socket; asserts that every
/// echo is whole and names one server, that both servers answered some, and that the
/// servers, not the director, reassembled them.
fn echoes_whole(env: &Env, service_name: &str, vip: IpAddr) {
    let v6 = vip.is_ipv6();
    let (frag_creates, reasm_oks) = if v6 {
        ("Ip6FragCreates", "Ip6ReasmOKs")
    } else {
        ("IpFragCreates", "IpReasmOKs")
    };
    let client = env.client();
    let director = env.lab.director(0);
    let created0 = counters(client, &[frag_creates])[0];
    let director0 = counters(director, &[reasm_oks])[0];
    let servers0: Vec<u64> = env
        .lab
        .servers()
        .iter()
        .map(|s| counters(s, &[reasm_oks])[0])
        .collect();
    let before = env.stats();

    let target = SocketAddr::new(vip, PORT);
    let mut by_server: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for k in 0..N {
        let payload: Vec<u8> = (0..SIZE).map(|i| (i * 7 + k) as u8).collect();
        let result = (|| -> anyhow::Result<String> {
            let socket = udp_socket(client, target)?;
            socket.set_read_timeout(Some(T))?;
            socket.send(&payload)?;
            let mut buf = vec![0u8; 65536];
            let n = socket.recv(&mut buf)?;
            let reply = &buf[..n];
            let space = reply
                .iter()
                .position(|&b| b == b' ')
                .ok_or_else(|| anyhow::anyhow!("a reply of {n} bytes without a name"))?;
            let name = String::from_utf8_lossy(&reply[..space]).into_owned();
            anyhow::ensure!(name.starts_with("real-server-"), "the reply names {name:?}");
            anyhow::ensure!(
                &reply[space + 1..] == payload.as_slice(),
                "the echo from {name} is not the datagram: {} bytes instead of {SIZE}",
                n - space - 1
            );
            Ok(name)
        })();
        match result {
            Ok(name) => *by_server.entry(name).or_default() += 1,
            Err(e) => failures.push(format!("datagram {k}: {e:#}")),
        }
    }
    let after = env.settled_stats("forwarded", Duration::from_secs(2));
    let created = counters(client, &[frag_creates])[0] - created0;
    let director_reasm = counters(director, &[reasm_oks])[0] - director0;
    let servers_reasm: Vec<u64> = env
        .lab
        .servers()
        .iter()
        .zip(servers0)
        .map(|(s, b)| counters(s, &[reasm_oks])[0] - b)
        .collect();
    let svc = |s: &serde_json::Value| stats::num(service(s, service_name), "packets");
    let fragment_reason = |s: &serde_json::Value| {
        stats::reason(s, "forwarded_fragment")["packets"]
            .as_u64()
            .unwrap_or(0)
    };
    eprintln!(
        "{service_name} [{vip}]:{PORT}: {} of {N} datagrams of {SIZE} bytes echoed whole \
         ({by_server:?}); the client made {created} fragments; reassembled by the servers \
         {servers_reasm:?}, by the director {director_reasm}; the service counted {} packets, \
         forwarded_fragment +{}; failures: {failures:#?}",
        N - failures.len(),
        svc(&after) - svc(&before),
        fragment_reason(&after) - fragment_reason(&before),
    );
    assert!(failures.is_empty(), "{} of {N} failed", failures.len());
    assert_eq!(by_server.values().sum::<usize>(), N);
    assert_eq!(
        by_server.len(),
        2,
        "mh put every flow on one server: {by_server:?}"
    );
    // 4,000 bytes at MTU 1,500: three fragments a datagram.
    assert!(
        created >= 3 * N as u64,
        "the client made only {created} fragments"
    );
    assert_eq!(
        servers_reasm.iter().sum::<u64>(),
        N as u64,
        "{servers_reasm:?}"
    );
    for (s, (name, n)) in servers_reasm.iter().zip(&by_server) {
        assert_eq!(
            *s, *n as u64,
            "{name} reassembled {s} datagrams but answered {n}"
        );
    }
    assert_eq!(
        director_reasm, 0,
        "the director reassembled datagrams to the VIP"
    );
}

#[test]
fn udp_datagrams_of_4000_bytes_are_echoed_whole_over_ipv4() {
    let (env, name, vip) = env(false);
    echoes_whole(&env, &name, vip);
}

#[test]
fn udp_datagrams_of_4000_bytes_are_echoed_whole_over_ipv6() {
    let (env, name, vip) = env(true);
    echoes_whole(&env, &name, vip);
}
