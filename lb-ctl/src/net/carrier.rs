//! Whether an interface can carry traffic: up (IFF_UP) with a carrier (IFF_RUNNING), asked
//! of the kernel by name over rtnetlink in the calling thread's network namespace. A VRRP
//! instance whose interface loses either is in fault.

use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkMessage},
};

use super::rtnl;

/// Whether `name` is up and has a carrier; an interface that is gone, or a kernel that does
/// not answer, counts as down.
pub fn link_is_up(name: &str) -> bool {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    let Ok(answers) = rtnl::request(RouteNetlinkMessage::GetLink(msg), 0) else {
        return false;
    };
    answers.iter().any(|a| match a {
        RouteNetlinkMessage::NewLink(link) => link
            .header
            .flags
            .contains(LinkFlags::Up | LinkFlags::Running),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_up_and_a_missing_interface_is_down() {
        assert!(
            link_is_up("lo"),
            "lo is up with a carrier in every namespace"
        );
        assert!(!link_is_up("lb-no-such-if"));
    }
}
