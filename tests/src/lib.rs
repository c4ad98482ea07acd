//! Shared helpers of the integration tests.

pub mod lab;
pub mod lbctl;
pub mod packet;
