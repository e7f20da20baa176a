//! Types shared by the XDP program (`hb-ebpf`) and userspace (`hb-userspace`).
//!
//! One module per topic: [`wire`] is the UDP heartbeat format, [`table`] the
//! per-node record the XDP program writes, [`counters`] the per-CPU outcome
//! counters, [`globals`] the names of the load-time constants of the program,
//! [`siphash`] the keyed MAC both sides compute.
//! Every shared struct is `#[repr(C)]` with no implicit padding and a size
//! assertion, so a layout change is a compile error on both sides.
#![no_std]

pub mod counters;
pub mod globals;
pub mod siphash;
pub mod table;
pub mod wire;
