//! Interfaces, neighbours (backend MACs), network namespaces and the host's own addresses.

pub mod addr;
pub mod announce;
pub mod announced;
pub mod arp;
pub mod carrier;
pub mod checksum;
pub mod forwarding;
pub mod frames;
pub mod link;
pub mod links;
pub mod neigh;
pub mod netns;
pub mod nexthop;
pub mod own_addresses;
pub mod resolve;
pub mod route;
mod rtnl;
#[cfg(test)]
mod testlab;
