//! Every interface of the calling thread's network namespace, from one rtnetlink dump: its
//! name, whether it is up, and the XDP program the kernel reports on it (`ip link`'s `xdp`,
//! `xdpgeneric`, `xdpoffload`) with the mode it runs in.

use anyhow::{Context as _, Result};
use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkMessage, LinkXdp, XdpAttached},
};

use super::rtnl;

/// How the kernel runs an interface's XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (`xdp`, XDP_ATTACHED_DRV).
    Native,
    /// In the kernel's generic path (`xdpgeneric`, XDP_ATTACHED_SKB).
    Generic,
    /// On the NIC (`xdpoffload`).
    Offload,
    /// Several programs in several modes.
    Multiple,
}

impl XdpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
            XdpMode::Offload => "offload",
            XdpMode::Multiple => "multiple",
        }
    }
}

/// One interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFF_UP (administratively up).
    pub up: bool,
    pub loopback: bool,
    /// The attached XDP program's mode and id, if any.
    pub xdp: Option<(XdpMode, u32)>,
}

/// Every interface, in the kernel's order.
pub fn all() -> Result<Vec<Link>> {
    let answers = rtnl::request(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_DUMP,
    )
    .context("listing the interfaces")?;
    Ok(answers
        .into_iter()
        .filter_map(|a| match a {
            RouteNetlinkMessage::NewLink(msg) => Some(of_message(&msg)),
            _ => None,
        })
        .collect())
}

/// The interface called `name`, if it exists.
pub fn by_name(name: &str) -> Result<Option<Link>> {
    Ok(all()?.into_iter().find(|l| l.name == name))
}

fn of_message(msg: &LinkMessage) -> Link {
    let mut name = String::new();
    let mut xdp = None;
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Xdp(parts) => xdp = xdp_of(parts),
            _ => {}
        }
    }
    Link {
        index: msg.header.index,
        name,
        up: msg.header.flags.contains(LinkFlags::Up),
        loopback: msg.header.flags.contains(LinkFlags::Loopback),
        xdp,
    }
}

fn xdp_of(parts: &[LinkXdp]) -> Option<(XdpMode, u32)> {
    let mode = parts.iter().find_map(|p| match p {
        LinkXdp::Attached(XdpAttached::Driver) => Some(XdpMode::Native),
        LinkXdp::Attached(XdpAttached::SocketBuffer) => Some(XdpMode::Generic),
        LinkXdp::Attached(XdpAttached::Hardware) => Some(XdpMode::Offload),
        LinkXdp::Attached(XdpAttached::Multiple) => Some(XdpMode::Multiple),
        _ => None,
    })?;
    let id = parts
        .iter()
        .find_map(|p| match p {
            LinkXdp::ProgId(id) => Some(*id),
            _ => None,
        })
        .unwrap_or(0);
    Some((mode, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_up_and_without_xdp() {
        let lo = by_name("lo").expect("listing links").expect("lo exists");
        assert!(lo.up && lo.loopback, "{lo:?}");
        assert_eq!(lo.xdp, None);
        assert_eq!(by_name("lb-no-such-if").expect("listing links"), None);
    }
}
