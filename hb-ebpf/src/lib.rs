//! The eBPF crate's library: the packet parsing both objects share. Its
//! library target also lets `hb-userspace` list the crate as a
//! build-dependency (cargo then rebuilds the objects when it changes). The
//! programs are the binaries: `hb-xdp` (`main.rs`, what the agent loads),
//! `hb-siphash` (`siphash_test.rs`, loaded only by the tests) and `hb-floor`
//! (`floor.rs`, loaded only by `hb-tools bench xdp-cost`).
#![no_std]

pub mod parse;
