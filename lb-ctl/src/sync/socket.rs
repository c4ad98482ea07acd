//! The sync's UDP socket: bound to the sync port on the sync interface (SO_BINDTODEVICE), a
//! member of 224.0.0.81 there when there are no unicast peers; datagrams go to the peers or
//! the group (TTL 1, not looped back).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context as _, Result};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

use crate::config::{SYNC_GROUP, SyncConfig};

/// Opens the socket of `cfg` on interface `ifindex` (`cfg.interface`); returns it with where
/// datagrams go. Call it inside the tokio runtime.
pub fn open(cfg: &SyncConfig, ifindex: u32) -> Result<(tokio::net::UdpSocket, Vec<SocketAddr>)> {
    let what = || format!("the sync socket on {} port {}", cfg.interface, cfg.port);
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).with_context(what)?;
    s.set_reuse_address(true).with_context(what)?;
    s.bind_device(Some(cfg.interface.as_bytes()))
        .with_context(|| format!("{}: SO_BINDTODEVICE", what()))?;
    s.set_nonblocking(true).with_context(what)?;
    let dests: Vec<SocketAddr> = if cfg.peers.is_empty() {
        s.join_multicast_v4_n(&SYNC_GROUP, &InterfaceIndexOrAddress::Index(ifindex))
            .with_context(|| format!("{}: joining {SYNC_GROUP}", what()))?;
        s.set_multicast_ttl_v4(1).with_context(what)?;
        s.set_multicast_loop_v4(false).with_context(what)?;
        vec![SocketAddr::V4(SocketAddrV4::new(SYNC_GROUP, cfg.port))]
    } else {
        (cfg.peers.iter())
            .filter_map(|p| match p {
                IpAddr::V4(a) => Some(SocketAddr::V4(SocketAddrV4::new(*a, cfg.port))),
                IpAddr::V6(_) => None,
            })
            .collect()
    };
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, cfg.port)).into())
        .with_context(|| format!("{}: binding", what()))?;
    let s = tokio::net::UdpSocket::from_std(s.into()).with_context(what)?;
    Ok((s, dests))
}
