//! The ECMP part of a lab ([`super::LabSpec::ecmp`], built by [`super::LabSpec::ecmp_lab`]):
//! several active directors behind router-1, which spreads the flows to the VIP over them.
//!
//! ```text
//!  clients (10.30.0.10 .. 10.30.0.(9+n), one namespace) ── br2 ── router-1 (10.30.0.1 | .1)
//!                                                                   │ br0, 192.168.58.0/24
//!                          director-1 (.134), director-2 (.137), director-3 (.132),
//!                          real-server-1 (.135), real-server-2 (.136), real-server-3 (.138)
//! ```
//!
//! - The clients' namespace `<prefix>-clients` has `eth0` on `br2` (a third bridge in the
//!   switch's namespace, port `sw3-clients`) with [`EcmpSpec::clients`] addresses
//!   10.30.0.10, .11, ... (/24; the first one primary), TX checksum offload off, and a
//!   default route via router-1's `eth2` (10.30.0.1, port `sw3-router-1`).
//! - Router-1 (module `routed`) also forwards between `br0` and `br2`, with
//!   `fib_multipath_hash_policy=1` (a multipath route is chosen by addresses and ports).
//!   Its route to the VIP is what its BGP speaker installs (none at first).
//! - No director holds the VIP: router-1 routes it to them. The directors and the real servers
//!   route 10.30.0.0/24 via router-1, so the real servers' replies reach the clients through
//!   it, never through a director.
//! - MACs: the clients' `eth0` `02:00:00:00:30:0a`, router-1's `eth2` `02:00:00:00:30:01`,
//!   their switch-side ports `02:00:00:00:31:XX`.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Result, ensure};

use super::{
    Host, Resources, Role, base_sysctls, ethtool_tx_off, format_mac, ip_batch, routed,
    write_sysctls,
};

/// The clients' subnet behind router-1.
pub const CLIENT_SUBNET: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 0);
/// Prefix length of [`CLIENT_SUBNET`].
pub const CLIENT_SUBNET_LEN: u8 = 24;
/// Router-1's address on the clients' subnet.
pub const ROUTER_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 1);
/// The clients' bridge (in the switch's namespace).
pub const CLIENT_BRIDGE: &str = "br2";
/// Router-1's leg on the clients' subnet.
pub const ROUTER_CLIENT_IFACE: &str = "eth2";
/// Most client addresses.
pub const MAX_CLIENTS: usize = 200;

/// The ECMP part of a lab.
#[derive(Clone, Debug)]
pub struct EcmpSpec {
    /// How many client addresses (10.30.0.10 upwards), 1 to [`MAX_CLIENTS`].
    pub clients: usize,
}

impl Default for EcmpSpec {
    fn default() -> Self {
        EcmpSpec { clients: 64 }
    }
}

/// Client address `i`, counted from 0: 10.30.0.(10 + i).
pub fn client_addr(i: usize) -> Ipv4Addr {
    assert!(
        i < MAX_CLIENTS,
        "client addresses are 0 to {MAX_CLIENTS}, not {i}"
    );
    Ipv4Addr::new(10, 30, 0, 10 + i as u8)
}

pub(super) fn validate(spec: &super::LabSpec, ecmp: &EcmpSpec) -> Result<()> {
    ensure!(
        (1..=MAX_CLIENTS).contains(&ecmp.clients),
        "an ECMP lab has 1 to {MAX_CLIENTS} client addresses, not {}",
        ecmp.clients
    );
    ensure!(
        spec.routed.is_some(),
        "an ECMP lab needs its router (LabSpec::routed); build it with LabSpec::ecmp_lab"
    );
    Ok(())
}

/// Builds the clients' bridge, router-1's leg on it and the clients' namespace; routes the
/// clients' subnet of the directors and the real servers via router-1.
pub(super) fn build(
    res: &mut Resources,
    switch_ns: &str,
    prefix: &str,
    ecmp: &EcmpSpec,
    router: &Host,
    on_switch: &[&Host],
) -> Result<Host> {
    ip_batch(
        switch_ns,
        &[
            format!(
                "link add {CLIENT_BRIDGE} address {} type bridge stp_state 0",
                format_mac(&[2, 0, 0, 0, 0x31, 1])
            ),
            format!("link set {CLIENT_BRIDGE} up"),
        ],
    )?;
    // Router-1's third leg.
    let r_last = ROUTER_CLIENT_ADDR.octets()[3];
    ip_batch(
        switch_ns,
        &[
            format!(
                "link add sw3-router-1 address {} type veth peer name {ROUTER_CLIENT_IFACE} \
                 address {} netns {}",
                format_mac(&[2, 0, 0, 0, 0x31, r_last]),
                format_mac(&[2, 0, 0, 0, 0x30, r_last]),
                router.netns
            ),
            format!("link set sw3-router-1 master {CLIENT_BRIDGE}"),
            "link set sw3-router-1 up".into(),
        ],
    )?;
    ip_batch(
        &router.netns,
        &[
            format!("addr add {ROUTER_CLIENT_ADDR}/{CLIENT_SUBNET_LEN} dev {ROUTER_CLIENT_IFACE}"),
            format!("link set {ROUTER_CLIENT_IFACE} up"),
        ],
    )?;
    ethtool_tx_off(&router.netns, ROUTER_CLIENT_IFACE)?;
    write_sysctls(
        &router.netns,
        &[("net/ipv4/fib_multipath_hash_policy".into(), "1")],
    )?;

    // The clients.
    let netns = format!("{prefix}-clients");
    res.add_netns(&netns)?;
    write_sysctls(&netns, &base_sysctls())?;
    let first = client_addr(0);
    let mac = [2, 0, 0, 0, 0x30, first.octets()[3]];
    ip_batch(
        switch_ns,
        &[
            format!(
                "link add sw3-clients address {} type veth peer name eth0 address {} netns \
                 {netns}",
                format_mac(&[2, 0, 0, 0, 0x31, first.octets()[3]]),
                format_mac(&mac)
            ),
            format!("link set sw3-clients master {CLIENT_BRIDGE}"),
            "link set sw3-clients up".into(),
        ],
    )?;
    let mut cmds = vec!["link set lo up".to_owned()];
    for i in 0..ecmp.clients {
        cmds.push(format!(
            "addr add {}/{CLIENT_SUBNET_LEN} dev eth0",
            client_addr(i)
        ));
    }
    cmds.push("link set eth0 up".into());
    cmds.push(format!("route add default via {ROUTER_CLIENT_ADDR}"));
    ip_batch(&netns, &cmds)?;
    ethtool_tx_off(&netns, "eth0")?;

    let gw = routed::router_addr(1);
    for host in on_switch {
        ip_batch(
            &host.netns,
            &[format!(
                "route replace {CLIENT_SUBNET}/{CLIENT_SUBNET_LEN} via {gw}"
            )],
        )?;
    }
    Ok(Host {
        name: "clients".into(),
        role: Role::Client,
        netns,
        iface: "eth0".into(),
        addr: first,
        // IPv4 only.
        addr6: std::net::Ipv6Addr::UNSPECIFIED,
        mac,
        switch_port: "sw3-clients".into(),
    })
}

/// The first `n` client addresses, as the sources of the lab's requests.
pub fn client_addrs(n: usize) -> Vec<IpAddr> {
    (0..n).map(|i| client_addr(i).into()).collect()
}
