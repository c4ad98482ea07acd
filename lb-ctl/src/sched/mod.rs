//! The schedulers' lookup tables: which backend id each of a service's table slots holds.
//! Pure functions of the backends and their weights; nothing here touches a map.

pub mod maglev;
pub mod table;
