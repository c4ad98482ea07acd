//! Shared helpers of the integration tests.

pub mod lab;
pub mod packet;
pub mod lbctl;
