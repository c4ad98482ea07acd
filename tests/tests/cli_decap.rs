//! `lb-ctl decap` on a real server of the lab (the seed topology without its HTTP and UDP
//! servers): attach pins the program, its link and its maps under `PIN_DIR/decap` and the
//! server's stack then receives what the client sends it inside IPIP (over IPv4 and over
//! IPv6) and GUE, addressed to the VIP it holds on `lo`; before attach and after detach the
//! same packets reach nothing. Status prints the settings and the counters; detach removes
//! the link, the pins and the program. A director's program on the same host shares the pin
//! directory, and each one's last detach leaves the other's pins.
//!
//! The client sends the tunnel packets itself (a raw IPIP or IPv6-in-IPv6 socket, a UDP
//! socket to the GUE port): this kernel cannot decapsulate them, so only the program can
//! deliver them. Without root, BPF or namespaces the test fails saying what is missing.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use lb_common::decap::names;
use lb_tests::{
    cli::{bpf_object_goes_away, bpftool, link_words, xdp_prog_id},
    lab::{Host, Lab, LabSpec},
    lbctl::LbCtl,
};
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};

const PORT: u16 = 9999;
const GUE_PORT: u16 = 6080;

/// An IPv4 or IPv6 UDP datagram from `from` to `to`:PORT, checksums filled in.
fn inner(from: IpAddr, to: IpAddr, payload: &[u8]) -> Vec<u8> {
    let b = match (from, to) {
        (IpAddr::V4(f), IpAddr::V4(t)) => {
            etherparse::PacketBuilder::ipv4(f.octets(), t.octets(), 64)
        }
        (IpAddr::V6(f), IpAddr::V6(t)) => {
            etherparse::PacketBuilder::ipv6(f.octets(), t.octets(), 64)
        }
        _ => panic!("one family"),
    };
    let mut v = Vec::new();
    b.udp(40001, PORT)
        .write(&mut v, payload)
        .expect("an inner datagram");
    v
}

#[derive(Clone, Copy, Debug)]
enum Tunnel {
    /// A raw socket of protocol 4 (IPv4 in IPv4) or 41 (IPv6 in IPv6): the kernel adds the
    /// outer header.
    Raw,
    /// UDP to the GUE port, variant 1 (the inner packet right after UDP).
    Gue,
}

/// Sends `packet` from the client to `server` inside `tunnel`.
fn send(client: &Host, server: IpAddr, tunnel: Tunnel, packet: Vec<u8>) {
    client
        .run_in(move || {
            match tunnel {
                Tunnel::Raw => {
                    let (domain, proto) = match server {
                        IpAddr::V4(_) => (Domain::IPV4, 4),
                        IpAddr::V6(_) => (Domain::IPV6, 41),
                    };
                    let s = Socket::new(domain, Type::RAW, Some(Protocol::from(proto)))?;
                    s.send_to(&packet, &SocketAddr::new(server, 0).into())?;
                }
                Tunnel::Gue => {
                    let any: IpAddr = match server {
                        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
                    };
                    UdpSocket::bind((any, 0))?.send_to(&packet, (server, GUE_PORT))?;
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("sending from the client: {e:#}"));
}

/// A UDP socket on the server bound to `vip`:PORT (the VIP is on its `lo`).
fn listen(server: &Host, vip: IpAddr) -> UdpSocket {
    let s = server
        .run_in(move || Ok(UdpSocket::bind((vip, PORT))?))
        .unwrap_or_else(|e| panic!("binding {vip}:{PORT} on the server: {e:#}"));
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("a read timeout");
    s
}

/// What arrives within the socket's timeout, with its source.
fn received(s: &UdpSocket) -> Option<(String, IpAddr)> {
    let mut buf = [0u8; 1500];
    let (n, from) = s.recv_from(&mut buf).ok()?;
    Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from.ip()))
}

#[test]
fn decap_attach_delivers_tunnelled_packets_and_detach_removes_everything() {
    let lab = Lab::build(&LabSpec {
        start_servers: false,
        servers: 1,
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    let server = lab.server(0);
    let client = lab.client();
    let ctl = LbCtl::new(&lab, server).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = ctl.pin_dir().join("decap");
    let dir_text = dir.display().to_string();
    let (vip4, vip6) = (IpAddr::from(lab.vip()), IpAddr::from(lab.vip6()));
    let (rip4, rip6) = (IpAddr::from(server.addr), IpAddr::from(server.addr6));
    let (client4, client6) = (IpAddr::from(client.addr), IpAddr::from(client.addr6));
    let sock4 = listen(server, vip4);
    let sock6 = listen(server, vip6);
    // Each case: the tunnel, to the server's address of the inner family, and the socket.
    let cases = [
        ("ipip", Tunnel::Raw, rip4, client4, vip4, &sock4),
        ("gue", Tunnel::Gue, rip4, client4, vip4, &sock4),
        ("ip6ip6", Tunnel::Raw, rip6, client6, vip6, &sock6),
    ];

    let out = ctl.out(&["decap"]).ok();
    assert_eq!(
        out.stdout,
        format!(
            "decapsulation is not attached (nothing pinned under {dir_text}); `lb-ctl decap \
             attach IFACE` attaches it\n"
        ),
        "{out}"
    );
    // Without the program, the kernel cannot deliver any of them.
    for (what, tunnel, rip, from, vip, sock) in cases {
        send(client, rip, tunnel, inner(from, vip, what.as_bytes()));
        assert_eq!(
            received(sock),
            None,
            "{what} delivered without decapsulation"
        );
    }

    let out = ctl.out(&["decap", "attach", "eth0"]).ok();
    assert_eq!(
        out.stdout,
        format!(
            "decapsulation attached to eth0 in native mode; pinned under {dir_text}\n\
             IPIP, IPv6 and GUE on UDP port 6080; any outer destination\n"
        ),
        "{out}"
    );
    for name in names::MAPS
        .iter()
        .copied()
        .chain([names::PROGRAM, "link-eth0"])
    {
        assert!(
            dir.join(name).exists(),
            "{name} is not pinned under {dir_text}"
        );
    }
    let link = server
        .exec_ok(&["ip", "link", "show", "eth0"])
        .expect("ip link");
    assert!(
        link_words(&link).contains(&"xdp"),
        "not native XDP:\n{link}"
    );
    let id = xdp_prog_id(&link).unwrap_or_else(|| panic!("no XDP program on eth0:\n{link}"));
    let out = bpftool(&["-j", "prog", "show", "id", &id.to_string()]);
    let prog: Value = serde_json::from_str(&out.stdout).expect("bpftool -j prog show");
    assert_eq!(prog["name"], names::PROGRAM, "{prog:#}");

    for (what, tunnel, rip, from, vip, sock) in cases {
        send(client, rip, tunnel, inner(from, vip, what.as_bytes()));
        assert_eq!(
            received(sock),
            Some((what.to_string(), from)),
            "{what}: the inner datagram, from the client, to the VIP"
        );
    }
    let out = ctl.out(&["decap"]).ok();
    for line in [
        format!("decapsulation (lb_decap): attached to eth0; pinned under {dir_text}"),
        "IPIP, IPv6 and GUE on UDP port 6080; any outer destination".to_string(),
        "  decap_ipip       1".to_string(),
        "  decap_ip6        1".to_string(),
        "  decap_gue        1".to_string(),
        "  pass_other_dst   0".to_string(),
        "  pass_malformed   0".to_string(),
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "no line {line:?}:\n{out}"
        );
    }

    // Restricted to an address that is not the server's: IPIP passes untouched again.
    let out = ctl
        .out(&[
            "decap",
            "attach",
            "eth0",
            "--accept-dst",
            "10.99.0.1",
            "--gue-port",
            "0",
        ])
        .ok();
    assert_eq!(
        out.stdout,
        format!(
            "eth0 is already attached (pinned under {dir_text}); settings written\n\
             IPIP, IPv6 and GUE off; outer destinations 10.99.0.1\n"
        ),
        "{out}"
    );
    send(
        client,
        rip4,
        Tunnel::Raw,
        inner(client4, vip4, b"not for us"),
    );
    assert_eq!(
        received(&sock4),
        None,
        "decapsulated for another destination"
    );
    let out = ctl.out(&["decap"]).ok();
    assert!(out.stdout.contains("\n  pass_other_dst   1\n"), "{out}");

    let out = ctl.out(&["decap", "detach", "eth0"]).ok();
    assert_eq!(
        out.stdout,
        format!(
            "decapsulation detached from eth0; no interface left, removed the pins under \
             {dir_text}\n"
        ),
        "{out}"
    );
    let link = server
        .exec_ok(&["ip", "link", "show", "eth0"])
        .expect("ip link");
    assert!(xdp_prog_id(&link).is_none(), "XDP still attached:\n{link}");
    assert!(!dir.exists(), "{dir_text} is still there");
    assert!(
        bpf_object_goes_away("prog", id),
        "program {id} still loaded"
    );
    send(
        client,
        rip4,
        Tunnel::Raw,
        inner(client4, vip4, b"after detach"),
    );
    assert_eq!(received(&sock4), None, "delivered after detach");

    let out = ctl.out(&["decap", "detach", "eth0"]).fails();
    assert!(
        out.stderr.contains(&format!(
            "eth0 is not attached under {dir_text} (decapsulation is attached nowhere)"
        )),
        "{out}"
    );
}

#[test]
fn a_director_and_decapsulation_share_a_pin_directory_and_detach_apart() {
    let lab = Lab::build(&LabSpec {
        start_servers: false,
        servers: 1,
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    let server = lab.server(0);
    let ctl = LbCtl::new(&lab, server).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = ctl.pin_dir().to_path_buf();

    // A second interface for the director's program: a veth pair inside the server.
    server
        .ip_batch(&["link add dir0 type veth peer name dir1".to_string()])
        .unwrap_or_else(|e| panic!("test setup failed: {e:#}"));
    ctl.out(&["decap", "attach", "eth0"]).ok();
    ctl.out(&["attach", "dir0", "--mode", "generic"]).ok();
    // The director's last detach removes its own pins and leaves decapsulation's.
    let out = ctl.out(&["detach", "dir0"]).ok();
    assert!(out.stdout.contains("no interface left"), "{out}");
    assert!(!dir.join(lb_common::names::SERVICES).exists());
    assert!(dir.join("decap").join("link-eth0").exists());
    let out = ctl.out(&["decap"]).ok();
    assert!(
        out.stdout
            .starts_with("decapsulation (lb_decap): attached to eth0;"),
        "{out}"
    );
    // And decapsulation's last detach removes the pin directory, now empty.
    ctl.out(&["decap", "detach", "eth0"]).ok();
    assert!(!dir.exists(), "{} is still there", dir.display());
}
