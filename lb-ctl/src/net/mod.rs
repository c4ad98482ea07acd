//! Interfaces, neighbours (backend MACs) and network namespaces.

pub mod addr;
pub mod link;
pub mod neigh;
pub mod netns;
mod rtnl;
#[cfg(test)]
mod testlab;
