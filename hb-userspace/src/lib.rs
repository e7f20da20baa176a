//! hb's userspace: the agent, the sender and the status client.
//!
//! The folders follow a heartbeat through the agent:
//! - [`config`]: the agent's TOML configuration, its validation, and the
//!   settings each layer below is built from.
//! - [`datapath`]: what records heartbeats into the node table: the XDP
//!   program (default) or a UDP socket.
//! - [`detect`]: the sweep that turns the table into node states: the
//!   detector, phi accrual, and the brake on mass failure.
//! - [`sinks`]: what consumes a sweep's outcome: the log, the event log,
//!   failover actions and the state file.
//! - [`probe`]: pull monitoring: ICMP, TCP and HTTP probes of nodes that
//!   run no sender, whose answers refresh the same node table.
//! - [`group`]: several monitors agreeing through etcd: this monitor's
//!   opinions, the majority's verdict, and one leader acting once per
//!   incident (only with `[group]`).
//! - [`agent`]: start-up, the main loop, status serving and key reload.
//! - [`cli`]: the `hb` command line, one file per subcommand.
//!
//! Leaves: [`clock`] (the monotonic clock liveness is measured with),
//! [`nodes`] (the configured nodes by id), [`keys`] (heartbeat key files and
//! the keyring), [`sender`] (`hb send`), [`sys`] (the raw syscalls).

pub mod agent;
pub mod cli;
pub mod clock;
pub mod config;
pub mod datapath;
pub mod detect;
pub mod group;
pub mod keys;
pub mod nodes;
pub mod probe;
pub mod sender;
pub mod sinks;
pub mod sys;
pub mod web;
