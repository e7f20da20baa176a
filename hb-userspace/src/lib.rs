//! hb's userspace: the agent, the sender and the status client.
//!
//! - [`config`]: the agent's TOML configuration and its validation.
//! - [`datapath`]: what records heartbeats: [`xdp`] (default) or [`socket`].
//! - [`frame`]: Ethernet frames for `BPF_PROG_TEST_RUN` (tests, bench).
//! - [`clock`]: the monotonic clock liveness is measured with, and the wall clock.
//! - [`table`]: the node table (hot seen words, cold records) in shared memory.
//! - [`nodes`]: the configured nodes (listed and ranged) by id.
//! - [`detector`]: the per-node state machine the sweep runs.
//! - [`phi`]: phi-accrual suspicion and the per-node deadlines it implies.
//! - [`brake`]: holding back `down` actions when much of the cluster goes silent at once.
//! - [`event_log`]: the optional JSON-lines log of state changes.
//! - [`actions`]: running failover actions with a bound and a timeout.
//! - [`agent`]: the agent's main loop tying these together.
//! - [`state_file`]: node states saved across agent restarts.
//! - [`status`]: the status socket protocol and the `hb status` table.
//! - [`keys`]: heartbeat key files (`hb keygen`) and the monitor's keyring.
//! - [`sender`]: `hb send`, the heartbeat sender.
//! - [`bench`]: `hb bench`, measurements for `cargo xtask bench`.
//! - [`hostile`]: `hb bench hostile`, generated hostile packets through the XDP program.
//! - [`loadgen`]: `hb loadgen`, a simulated fleet of senders for load tests.

pub mod actions;
pub mod agent;
pub mod bench;
pub mod brake;
pub mod clock;
pub mod config;
pub mod datapath;
pub mod detector;
pub mod event_log;
pub mod frame;
pub mod hostile;
pub mod keys;
pub mod loadgen;
pub mod nodes;
pub mod phi;
pub mod sender;
pub mod socket;
pub mod state_file;
pub mod status;
pub mod table;
pub mod xdp;
