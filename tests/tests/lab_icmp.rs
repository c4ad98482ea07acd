//! End to end: path-MTU discovery behind the director. In direct routing a real server's reply
//! leaves with the VIP as its source, so a router that cannot forward it sends "fragmentation
//! needed" (IPv4) or "packet too big" (IPv6) to the VIP, which leads to the director. The
//! director must hand it to the real server of that flow, whose kernel then lowers its path MTU
//! to the client.
//!
//! Here the client plays that router: it opens a UDP flow to the VIP, learns which real server
//! answered, and sends the ICMP error about that server's reply (source `VIP:5353`,
//! destination `client:port`) to the VIP from a raw socket. The servers' ICMP counters show
//! where it arrived, `ip route get CLIENT` on the server what its kernel made of it. The same
//! error sent straight to a real server shows the measurement itself works without a
//! director.
//!
//! The lab's rules (docs/lab.md) hold: its own lab per test, one flow and one ICMP message,
//! deadlines, everything removed at the end, loud failure without root.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use lb_tests::{
    env::Env,
    lab::{
        self, Capture, Host, Lab,
        icmp::{path_mtu, send_icmp, snmp_counter, too_big_message},
        udp_socket,
    },
    lab_spec, services,
};

const PORT: u16 = 5353;
/// Deadline of one echo, and of the path MTU change.
const T: Duration = Duration::from_secs(2);
/// The MTU the errors announce: below the lab's 1,500, at or above each family's minimum
/// (IPv4: Linux's min_pmtu 552; IPv6: 1,280).
const MTU4: u16 = 1200;
const MTU6: u16 = 1280;

/// What each family's test uses: the VIP, the client's address, the MTU and the counter of
/// the ICMP error that a receiving kernel raises.
struct Family {
    vip: IpAddr,
    client: IpAddr,
    mtu: u16,
    counter: &'static str,
}

fn family(lab: &Lab, v6: bool) -> Family {
    if v6 {
        Family {
            vip: lab.vip6().into(),
            client: lab.client().addr6.into(),
            mtu: MTU6,
            counter: "Icmp6InPktTooBigs",
        }
    } else {
        Family {
            vip: lab.vip().into(),
            client: lab.client().addr.into(),
            mtu: MTU4,
            counter: "IcmpInDestUnreachs",
        }
    }
}

fn counter(host: &Host, name: &str) -> u64 {
    snmp_counter(host, name).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Opens a UDP flow from the client to `vip:5353` (one datagram, one echo); the client's
/// socket address of the flow and the index of the real server that answered.
fn open_flow(lab: &Lab, vip: IpAddr) -> (SocketAddr, usize) {
    let socket =
        udp_socket(lab.client(), SocketAddr::new(vip, PORT)).unwrap_or_else(|e| panic!("{e:#}"));
    socket
        .set_read_timeout(Some(T))
        .unwrap_or_else(|e| panic!("{e}"));
    socket
        .send(b"flow")
        .unwrap_or_else(|e| panic!("sending to {vip}: {e}"));
    let mut buf = [0u8; 256];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no echo from [{vip}]:{PORT}: {e}"));
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    let server = lab
        .servers()
        .iter()
        .position(|s| reply == format!("{} flow", s.name))
        .unwrap_or_else(|| panic!("the echo {reply:?} names no real server"));
    let local = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
    (local, server)
}

/// Sends the "too big" error about server `server`'s reply on the flow `client_end` from the
/// client to `to`; returns, per real server, how much its counter of such errors rose, and
/// the path MTU to the client that `server` then has (`None` if none was learnt in 2 s).
fn send_too_big(
    lab: &Lab,
    f: &Family,
    client_end: SocketAddr,
    server: usize,
    to: IpAddr,
) -> (Vec<u64>, Option<u32>) {
    let rs = lab.server(server);
    assert_eq!(
        path_mtu(rs, f.client).unwrap_or_else(|e| panic!("{e:#}")),
        None,
        "{} already has a path MTU to the client",
        rs.name
    );
    let before: Vec<u64> = lab
        .servers()
        .iter()
        .map(|s| counter(s, f.counter))
        .collect();
    let quoted_from = SocketAddr::new(f.vip, PORT);
    let msg =
        too_big_message(quoted_from, client_end, 1500, f.mtu).unwrap_or_else(|e| panic!("{e:#}"));
    send_icmp(lab.client(), to, msg).unwrap_or_else(|e| panic!("{e:#}"));
    let mut mtu = None;
    lab::wait_until(T, || {
        mtu = path_mtu(rs, f.client).ok().flatten();
        mtu.is_some()
    });
    let rose = lab
        .servers()
        .iter()
        .zip(before)
        .map(|(s, b)| counter(s, f.counter) - b)
        .collect();
    (rose, mtu)
}

/// The error sent to the VIP goes through the director to the flow's real server (its counter
/// rises by one, the other's not, the director's kernel never sees it) and lowers that
/// server's path MTU to the client.
fn reaches_the_flows_server(v6: bool) {
    // `lb-ctl run` with a UDP service on the VIP of the family, over both real servers.
    let env = Env::running(
        &lab_spec!(),
        |lab| services::file(&[services::udp_echo(lab, v6, "mh")]),
        &[],
    );
    let lab = &env.lab;
    let f = family(lab, v6);
    let (client_end, server) = open_flow(lab, f.vip);
    let director = lab.director(0);
    let director_before = counter(director, f.counter);
    // Captured on every real server: the error as it arrives, with its MACs.
    let filter = if v6 {
        "icmp6 and ip6[40] == 2"
    } else {
        "icmp and icmp[0] == 3"
    };
    let captures: Vec<Capture> = lab
        .servers()
        .iter()
        .map(|s| Capture::start(s, "eth0", filter).unwrap_or_else(|e| panic!("{e:#}")))
        .collect();
    let (rose, mtu) = send_too_big(lab, &f, client_end, server, f.vip);
    let director_rose = counter(director, f.counter) - director_before;
    let seen: Vec<Vec<String>> = captures
        .into_iter()
        .map(|c| c.stop().unwrap_or_else(|e| panic!("{e:#}")))
        .collect();
    for (s, lines) in lab.servers().iter().zip(&seen) {
        eprintln!("captured on {}'s eth0: {lines:#?}", s.name);
    }
    eprintln!(
        "flow {client_end} -> [{}]:{PORT} on {}; after the error (MTU {}) sent to the VIP: \
         {} rose by {rose:?} on the real servers, by {director_rose} on the director; the \
         server's path MTU to the client: {mtu:?}",
        f.vip,
        lab.server(server).name,
        f.mtu,
        f.counter,
    );
    let mut want = vec![0; lab.servers().len()];
    want[server] = 1;
    assert_eq!(
        rose, want,
        "the error did not reach (only) the flow's real server"
    );
    assert_eq!(director_rose, 0, "the director's own kernel took the error");
    // On the wire: one frame at the flow's server, from the director's MAC to the server's,
    // addressed to the VIP; nothing at the other.
    let rs = lab.server(server);
    let macs = format!("{} > {}", director.mac_string(), rs.mac_string());
    for (i, lines) in seen.iter().enumerate() {
        if i == server {
            assert_eq!(lines.len(), 1, "{lines:#?}");
            assert!(lines[0].contains(&macs), "not {macs}: {}", lines[0]);
            assert!(lines[0].contains(&format!("> {}", f.vip)), "{}", lines[0]);
        } else {
            assert!(lines.is_empty(), "{}: {lines:#?}", lab.server(i).name);
        }
    }
    assert_eq!(
        mtu,
        Some(u32::from(f.mtu)),
        "the server's path MTU to the client"
    );
}

#[test]
fn fragmentation_needed_to_the_vip_reaches_the_flows_server() {
    reaches_the_flows_server(false);
}

#[test]
fn packet_too_big_to_the_vip_reaches_the_flows_server() {
    reaches_the_flows_server(true);
}

/// Without a director in the path: the same errors, sent to a real server's own address,
/// lower its path MTU to the client, since its UDP socket bound to the VIP owns the quoted
/// reply. What the tests above measure works.
#[test]
fn the_errors_sent_straight_to_a_real_server_lower_its_path_mtu() {
    let lab = Lab::build(&lab_spec!()).unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    for v6 in [false, true] {
        let f = family(&lab, v6);
        let rs = lab.server(1);
        let rip: IpAddr = if v6 { rs.addr6.into() } else { rs.addr.into() };
        let client_end = SocketAddr::new(f.client, 40000);
        let (rose, mtu) = send_too_big(&lab, &f, client_end, 1, rip);
        eprintln!(
            "the error (MTU {}) sent to {rip}: {} rose by {rose:?}; path MTU {mtu:?}",
            f.mtu, f.counter
        );
        assert_eq!(rose, vec![0, 1], "{}", f.counter);
        assert_eq!(mtu, Some(u32::from(f.mtu)));
    }
    lab.close().unwrap_or_else(|e| panic!("{e:#}"));
}
