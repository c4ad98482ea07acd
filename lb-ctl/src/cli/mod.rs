//! The command line: the views that `list` and `stats` print, `genhash`, and the privilege
//! check every command but `genhash` makes first.

pub mod args;
pub mod director;
pub mod genhash;
pub mod list;
pub mod privileges;
pub mod stats;
