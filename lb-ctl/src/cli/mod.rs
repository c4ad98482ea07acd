//! The command line: the views that `list`, `stats`, `export` and `decap` print, `genhash`, and the
//! privilege check every command but `genhash` makes first.

pub mod args;
pub mod decap;
pub mod director;
pub mod export;
pub mod genhash;
pub mod list;
pub mod manual;
pub mod privileges;
pub mod stats;
