//! The routed part of a lab ([`super::LabSpec::routed`]): one or two routers with a leg on the
//! switch, and a second subnet behind them, on its own bridge, with real servers of its own.
//! Tunnel mode sends to these servers across a router; direct routing cannot reach them.
//!
//! ```text
//!                  ┌── router-1 (.1 | 10.20.0.1) ──┐
//!  switch br0 ─────┤                               ├── br1 ──┬── remote-server-1 (10.20.0.11)
//!  192.168.58.0/24 └── router-2 (.2 | 10.20.0.2) ──┘ (10.20/24)└── remote-server-2 (10.20.0.12)
//! ```
//!
//! - Addresses: 10.20.0.0/24 and fd00:20::/64. Router `r` has `192.168.58.r` / `fd00:58::r` on
//!   its `eth0` (on the switch's `br0`) and `10.20.0.r` / `fd00:20::r` on its `eth1` (on
//!   `br1`, a second bridge in the switch's namespace). Remote server `k` has `10.20.0.(10 + k)`
//!   and `fd00:20::(10 + k)` (digits read as hex, as in [`super::addr6_of`]) on its `eth0`.
//! - MACs: a host's leg on `br1` is `02:00:00:00:20:XX`, its switch-side port
//!   `02:00:00:00:21:XX` (XX = last octet of the address); a router's leg on `br0` follows the
//!   main plan (`02:00:00:00:00:01`).
//! - Names: namespaces `<prefix>-router-1`, `<prefix>-remote-server-1`; switch ports
//!   `sw-router-1` (on `br0`), `sw2-router-1`, `sw2-remote-1` (on `br1`).
//! - Routing: the routers forward both families; the client and the directors route
//!   10.20.0.0/24 and fd00:20::/64 via router-1 ([`super::Lab::route_remote_via`] moves that);
//!   the remote servers' default routes (both families) go via router-1, so their replies to
//!   the client pass router-1 and never the director. Router-2 is only used once a host's
//!   route is moved to it. The directors' `eth0` forwards (both families): the data path's
//!   next-hop lookup for tunnel backends needs it.
//! - Remote servers: both VIPs on `lo`, `arp_ignore=1`, `arp_announce=2` (as on the local real
//!   servers), `rp_filter` loose (2: the inner source, the client, arrives on `eth0`),
//!   the same `lab-server` HTTP and UDP servers. They cannot take tunnelled packets by
//!   themselves without the kernel's tunnel modules: a test attaches the project's decapsulation
//!   program (`lb-ctl decap attach eth0`, `lb_tests::tunnel::Decap`).
//! - Wire: TX checksum offload off on both legs of each router (forwarded packets leave
//!   complete, as on a physical wire), and a pass-through XDP program on the switch-side port
//!   of each remote server (native XDP on the server's `eth0` needs it, as for directors).

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Result, ensure};

use super::{
    BRIDGE, HOST_IFACE, Host, Resources, Role, SUBNET, SUBNET_LEN, SUBNET6, SUBNET6_LEN,
    attach_pass_through, base_sysctls, ethtool_tx_off, format_mac, host_mac, ip_batch,
    vip_commands, write_sysctls,
};

/// The subnet behind the routers.
pub const REMOTE_SUBNET: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 0);
/// Prefix length of [`REMOTE_SUBNET`].
pub const REMOTE_SUBNET_LEN: u8 = 24;
/// The IPv6 subnet behind the routers.
pub const REMOTE_SUBNET6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 0);
/// Prefix length of [`REMOTE_SUBNET6`].
pub const REMOTE_SUBNET6_LEN: u8 = 64;
/// The bridge of the remote subnet (in the switch's namespace).
pub const REMOTE_BRIDGE: &str = "br1";
/// A router's leg on the remote subnet.
pub const ROUTER_INNER_IFACE: &str = "eth1";
/// Most real servers the remote subnet can have.
pub const MAX_REMOTE_SERVERS: usize = 50;

/// The routed part of a lab.
#[derive(Clone, Debug)]
pub struct RoutedSpec {
    /// 1 or 2 routers between the switch and the remote subnet.
    pub routers: usize,
    /// 0 to [`MAX_REMOTE_SERVERS`] real servers on the remote subnet.
    pub servers: usize,
}

impl Default for RoutedSpec {
    fn default() -> Self {
        RoutedSpec {
            routers: 1,
            servers: 2,
        }
    }
}

/// A router: its leg on the switch (`outer`, `eth0`) and its leg on the remote subnet
/// (`inner`, `eth1`), both in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Router {
    /// `eth0` on `br0`: `192.168.58.r`, `fd00:58::r`.
    pub outer: Host,
    /// `eth1` on `br1`: `10.20.0.r`, `fd00:20::r`.
    pub inner: Host,
}

impl Router {
    /// `router-1`, `router-2`.
    pub fn name(&self) -> &str {
        &self.outer.name
    }
}

/// Router `r`'s address on the switch (1-based): `192.168.58.r`.
pub fn router_addr(r: usize) -> Ipv4Addr {
    assert!((1..=2).contains(&r), "routers are 1 and 2, not {r}");
    Ipv4Addr::new(192, 168, 58, r as u8)
}

/// Router `r`'s address on the remote subnet (1-based): `10.20.0.r`.
pub fn router_inner_addr(r: usize) -> Ipv4Addr {
    assert!((1..=2).contains(&r), "routers are 1 and 2, not {r}");
    Ipv4Addr::new(10, 20, 0, r as u8)
}

/// Remote server `k`'s address (1-based): `10.20.0.(10 + k)`.
pub fn remote_server_addr(k: usize) -> Ipv4Addr {
    assert!(
        (1..=MAX_REMOTE_SERVERS).contains(&k),
        "remote servers are numbered 1 to {MAX_REMOTE_SERVERS}, not {k}"
    );
    Ipv4Addr::new(10, 20, 0, 10 + k as u8)
}

/// The IPv6 address of `addr` (an address of the switch's subnet or of the remote one): the
/// same host in fd00:58::/64 or fd00:20::/64, last octet's decimal digits read as hex.
pub fn addr6_in_plan(addr: Ipv4Addr) -> Ipv6Addr {
    let mut segments = if addr.octets()[..3] == REMOTE_SUBNET.octets()[..3] {
        REMOTE_SUBNET6.segments()
    } else {
        SUBNET6.segments()
    };
    segments[7] = super::addr6_of(addr).segments()[7];
    Ipv6Addr::from(segments)
}

/// Checks a routed spec.
pub(super) fn validate(spec: &RoutedSpec) -> Result<()> {
    ensure!(
        (1..=2).contains(&spec.routers),
        "a routed lab has 1 or 2 routers, not {}",
        spec.routers
    );
    ensure!(
        (0..=MAX_REMOTE_SERVERS).contains(&spec.servers),
        "a routed lab has 0 to {MAX_REMOTE_SERVERS} remote servers, not {}",
        spec.servers
    );
    Ok(())
}

/// Builds the routers, the remote bridge and the remote servers (not their `lab-server`s).
pub(super) fn build(
    res: &mut Resources,
    switch_ns: &str,
    prefix: &str,
    spec: &super::LabSpec,
    routed: &RoutedSpec,
) -> Result<(Vec<Router>, Vec<Host>)> {
    ip_batch(
        switch_ns,
        &[
            format!(
                "link add {REMOTE_BRIDGE} address {} type bridge stp_state 0",
                format_mac(&[2, 0, 0, 0, 0x21, 1])
            ),
            format!("link set {REMOTE_BRIDGE} up"),
        ],
    )?;
    let mut routers = Vec::new();
    for r in 1..=routed.routers {
        routers.push(add_router(res, switch_ns, prefix, r)?);
    }
    let mut servers = Vec::new();
    for k in 1..=routed.servers {
        let name = format!("remote-server-{k}");
        let netns = format!("{prefix}-{name}");
        res.add_netns(&netns)?;
        write_sysctls(&netns, &base_sysctls())?;
        let addr = remote_server_addr(k);
        let host = plug(
            switch_ns,
            Leg {
                name: &name,
                role: Role::Server,
                netns: &netns,
                iface: HOST_IFACE,
                addr,
                bridge: REMOTE_BRIDGE,
                switch_port: format!("sw2-remote-{k}"),
            },
        )?;
        let (gw, gw6) = (router_inner_addr(1), addr6_in_plan(router_inner_addr(1)));
        let mut cmds = vip_commands("add", spec, "lo");
        cmds.push(format!("route add default via {gw}"));
        cmds.push(format!("route add default via {gw6}"));
        ip_batch(&netns, &cmds)?;
        let mut sysctls = Vec::new();
        for scope in ["all", "default", HOST_IFACE] {
            sysctls.push((format!("net/ipv4/conf/{scope}/rp_filter"), "2"));
        }
        // As on any real server with the VIP on lo (README): never answer ARP for it.
        for scope in ["all", HOST_IFACE] {
            sysctls.push((format!("net/ipv4/conf/{scope}/arp_ignore"), "1"));
            sysctls.push((format!("net/ipv4/conf/{scope}/arp_announce"), "2"));
        }
        write_sysctls(&netns, &sysctls)?;
        if spec.pass_through {
            let guard = attach_pass_through(switch_ns, &host.switch_port)?;
            res.pass_through
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(guard);
        }
        servers.push(host);
    }
    Ok((routers, servers))
}

fn add_router(res: &mut Resources, switch_ns: &str, prefix: &str, r: usize) -> Result<Router> {
    let name = format!("router-{r}");
    let netns = format!("{prefix}-{name}");
    res.add_netns(&netns)?;
    let mut sysctls = base_sysctls();
    sysctls.push(("net/ipv4/ip_forward".into(), "1"));
    sysctls.push(("net/ipv6/conf/all/forwarding".into(), "1"));
    write_sysctls(&netns, &sysctls)?;
    let outer = plug(
        switch_ns,
        Leg {
            name: &name,
            role: Role::Router,
            netns: &netns,
            iface: HOST_IFACE,
            addr: router_addr(r),
            bridge: BRIDGE,
            switch_port: format!("sw-{name}"),
        },
    )?;
    let inner = plug(
        switch_ns,
        Leg {
            name: &name,
            role: Role::Router,
            netns: &netns,
            iface: ROUTER_INNER_IFACE,
            addr: router_inner_addr(r),
            bridge: REMOTE_BRIDGE,
            switch_port: format!("sw2-{name}"),
        },
    )?;
    for iface in [HOST_IFACE, ROUTER_INNER_IFACE] {
        ethtool_tx_off(&netns, iface)?;
    }
    Ok(Router { outer, inner })
}

/// One veth from a bridge of the switch to a host's namespace.
struct Leg<'a> {
    name: &'a str,
    role: Role,
    netns: &'a str,
    iface: &'a str,
    addr: Ipv4Addr,
    bridge: &'a str,
    switch_port: String,
}

/// Plugs `leg` into its bridge: the veth, its MACs, both addresses (`nodad`), up.
fn plug(switch_ns: &str, leg: Leg<'_>) -> Result<Host> {
    ensure!(
        leg.switch_port.len() <= 15,
        "interface name {} too long",
        leg.switch_port
    );
    let remote = leg.bridge == REMOTE_BRIDGE;
    let last = leg.addr.octets()[3];
    let (mac, port_mac) = if remote {
        ([2, 0, 0, 0, 0x20, last], [2, 0, 0, 0, 0x21, last])
    } else {
        (host_mac(leg.addr), [2, 0, 0, 0, 1, last])
    };
    let (len, len6) = if remote {
        (REMOTE_SUBNET_LEN, REMOTE_SUBNET6_LEN)
    } else {
        (SUBNET_LEN, SUBNET6_LEN)
    };
    debug_assert!(remote || leg.addr.octets()[..3] == SUBNET.octets()[..3]);
    let addr6 = addr6_in_plan(leg.addr);
    let (iface, netns, port) = (leg.iface, leg.netns, &leg.switch_port);
    ip_batch(
        switch_ns,
        &[
            format!(
                "link add {port} address {} type veth peer name {iface} address {} netns {netns}",
                format_mac(&port_mac),
                format_mac(&mac)
            ),
            format!("link set {port} master {}", leg.bridge),
            format!("link set {port} up"),
        ],
    )?;
    ip_batch(
        netns,
        &[
            "link set lo up".into(),
            format!("addr add {}/{len} dev {iface}", leg.addr),
            format!("addr add {addr6}/{len6} dev {iface} nodad"),
            format!("link set {iface} up"),
        ],
    )?;
    Ok(Host {
        name: leg.name.to_owned(),
        role: leg.role,
        netns: netns.to_owned(),
        iface: iface.to_owned(),
        addr: leg.addr,
        addr6,
        mac,
        switch_port: leg.switch_port,
    })
}

/// What a director of a routed lab needs for tunnel backends: the kernel's FIB answers the
/// data path's next-hop lookups (`bpf_fib_lookup`) only for an interface that forwards, for
/// IPv4 and IPv6 outer headers alike.
pub(super) fn director_sysctls(iface: &str) -> Vec<(String, &'static str)> {
    vec![
        (format!("net/ipv4/conf/{iface}/forwarding"), "1"),
        (format!("net/ipv6/conf/{iface}/forwarding"), "1"),
    ]
}

/// The `ip` commands that route the remote subnets (both families) of `host` via router `r`
/// (1-based); `replace`, so they also move an existing route.
pub(super) fn route_commands(r: usize) -> Vec<String> {
    let (gw, gw6) = (router_addr(r), addr6_in_plan(router_addr(r)));
    vec![
        format!("route replace {REMOTE_SUBNET}/{REMOTE_SUBNET_LEN} via {gw}"),
        format!("route replace {REMOTE_SUBNET6}/{REMOTE_SUBNET6_LEN} via {gw6}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_plan() {
        assert_eq!(router_addr(1).to_string(), "192.168.58.1");
        assert_eq!(router_inner_addr(2).to_string(), "10.20.0.2");
        assert_eq!(remote_server_addr(1).to_string(), "10.20.0.11");
        assert_eq!(remote_server_addr(2).to_string(), "10.20.0.12");
        assert_eq!(
            addr6_in_plan(remote_server_addr(1)).to_string(),
            "fd00:20::11"
        );
        assert_eq!(addr6_in_plan(router_addr(2)).to_string(), "fd00:58::2");
        assert_eq!(
            route_commands(2),
            [
                "route replace 10.20.0.0/24 via 192.168.58.2",
                "route replace fd00:20::/64 via fd00:58::2"
            ]
        );
    }
}
