//! The subcommands of `hb-tools`, one file each: their flags (the clap
//! doc comments are the help text) and how they run.

pub mod bench;
pub mod datapath_counters;
pub mod loadgen;
