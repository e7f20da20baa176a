//! Tools that are not the product: `cargo xtask bench` and the tests use
//! them; the shipped `hb` binary carries none of them.
//!
//! - [`loadgen`]: `hb-tools loadgen`, a simulated fleet of senders for load
//!   tests and the detection benches.
//! - [`hostile`]: `hb-tools bench hostile`, generated hostile packets
//!   through the XDP program, checked packet by packet.
//! - [`bench`](mod@bench): `hb-tools bench xdp-cost|sweep|state`, in-process
//!   measurements.
//! - [`frame`]: Ethernet frames for `BPF_PROG_TEST_RUN` (tests, benches).
//! - [`probe`]: `hb-tools datapath-counters`, the pinned datapath's
//!   counters sampled while no agent needs to run, and the blind window.
//! - [`rng`]: the one seeded random number generator.

pub mod bench;
pub mod frame;
pub mod hostile;
pub mod loadgen;
pub mod probe;
pub mod rng;
