//! Types shared by the XDP program (`hb-ebpf`) and userspace (`hb-userspace`).
//!
//! One module per topic: [`wire`] is the UDP heartbeat format, [`auth`] its
//! tag and the monitor's key slots, [`siphash`] the keyed MAC both sides
//! compute, [`admission`] the checks a heartbeat passes before it is
//! recorded, [`table`] the per-node record the datapath writes, [`counters`]
//! the per-packet outcome counters, [`globals`] the names of the XDP
//! program's load-time constants and maps, [`probe`] the ICMP echo probes
//! and the replies the XDP program records.
//! Every shared struct is `#[repr(C)]` with no implicit padding and a size
//! assertion, so a layout change is a compile error on both sides.
#![no_std]

pub mod admission;
pub mod auth;
pub mod counters;
pub mod globals;
pub mod probe;
pub mod siphash;
pub mod table;
pub mod wire;
