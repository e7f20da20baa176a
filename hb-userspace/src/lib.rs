//! hb's userspace: the agent, the sender and the status client.
//!
//! - [`config`]: the agent's TOML configuration and its validation.
//! - [`datapath`]: loading and attaching the XDP program.
//! - [`table`]: the node table (hot seen words, cold records) in shared memory.
//! - [`detector`]: the per-node state machine the sweep runs.
//! - [`actions`]: running failover actions with a bound and a timeout.
//! - [`agent`]: the agent's main loop tying these together.
//! - [`state_file`]: node states saved across agent restarts.
//! - [`status`]: the status socket protocol and the `hb status` table.
//! - [`sender`]: `hb send`, the heartbeat sender.

pub mod actions;
pub mod agent;
pub mod config;
pub mod datapath;
pub mod detector;
pub mod sender;
pub mod state_file;
pub mod status;
pub mod table;
