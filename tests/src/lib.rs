//! Harness helpers for hb's end-to-end tests and for `cargo xtask demo`.
//!
//! Everything here builds its own hosts out of network namespaces and veth
//! pairs, uses only addresses from 198.18.0.0/15, bounds every wait in time,
//! and removes what it created on Drop (also when a test panics):
//!
//! - [`netns`]: the [`NetNs`] guard and a runner for `ip` commands;
//! - [`lab`]: a monitor namespace wired to N node namespaces ([`Lab`]);
//! - [`process`]: the [`ChildGuard`] and [`Hb`], which runs the `hb` binary;
//! - [`config`]: per-test temporary directories and agent configurations;
//! - [`events`]: reading the log the configured action appends to;
//! - [`keys`]: heartbeat keys written by `hb keygen`, for signing and
//!   forging heartbeats ([`TestKey`]);
//! - [`attacker`]: a thread inside a lab namespace sending crafted
//!   heartbeats at a bounded rate ([`Attacker`]);
//! - [`hog`]: busy loops competing with the agent for the CPUs, SCHED_OTHER
//!   or SCHED_FIFO, bounded in time and stopped on Drop ([`Hogs`]), and the
//!   kernel's RT throttling;
//! - [`sender`]: `hb send` for one lab node, optionally SCHED_FIFO and
//!   pinned to CPUs, frozen with SIGSTOP and thawed with SIGCONT ([`Sender`]);
//! - [`interrupt`]: Ctrl-C turns every wait into an [`Error::Interrupted`];
//! - [`pins`]: the agent instance's pins in bpffs, removed on Drop
//!   ([`PinGuard`]), and running an agent that shares the host's bpffs;
//! - [`etcd`]: a real etcd cluster, one member per namespace joined by a
//!   bridge, whose members can be killed, restarted and cut off
//!   ([`EtcdCluster`]);
//! - [`group`]: three monitors, each an etcd member and an agent, and
//!   nodes sending to all three, with the faults of a monitor group: node
//!   crashes, killed agents, monitors cut off from the nodes or from etcd
//!   ([`GroupLab`]);
//! - [`probe`]: the probe tests' lab (issue 15): configurations with
//!   probed nodes, IPv6 links, a TCP listener and an HTTP health server in a
//!   node's namespace, a sniffer of hb's echo requests and a forger of echo
//!   replies, the agent's HTTP API;
//! - [`soak`]: a fleet with loss and pauses, the agent killed and restarted
//!   throughout, checked against the load generator's ground truth (the
//!   bench phase `soak` and its shortened test).

pub mod attacker;
pub mod browser;
pub mod config;
pub mod error;
pub mod etcd;
pub mod events;
pub mod group;
pub mod haproxy;
pub mod hog;
pub mod http;
pub mod interrupt;
pub mod keys;
pub mod lab;
pub mod netns;
pub mod pins;
pub mod probe;
pub mod process;
pub mod sender;
pub mod soak;

pub use attacker::{Attacker, Flood, Stream};
pub use config::{ConfigOptions, TempDir, TestConfig, Timing};
pub use error::{Error, Result};
pub use etcd::EtcdCluster;
pub use events::{Event, wait_for_event, wait_for_line};
pub use group::{GroupLab, GroupLabOptions, GroupSettings, Run};
pub use hog::{Hog, Hogs, Policy};
pub use keys::TestKey;
pub use lab::{Lab, Node, unique_prefix};
pub use netns::NetNs;
pub use pins::PinGuard;
pub use process::{ChildGuard, Hb, Signal};
pub use sender::{Sched, Sender};

/// UDP port the agent listens on in every lab.
pub const HEARTBEAT_PORT: u16 = 7979;

/// `CLOCK_MONOTONIC` now, ns: the clock of the XDP program's arrival times,
/// the agent's event log, the load generator's report and the pinned-counter
/// probe.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which lives on our stack.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    assert_eq!(status, 0, "CLOCK_MONOTONIC is always readable");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Whether this process runs as root (network namespaces and XDP need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
