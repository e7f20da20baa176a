//! What `hb-tools loadgen` is asked to do, and the bounds of each option
//! (checked by `Plan::new`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use hb::keys::KeyFile;

/// The most nodes one load generator simulates.
pub const MAX_NODES: u32 = 1_000_000;
/// The longest run.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// The most heartbeats `--count` may ask for.
pub const MAX_COUNT: u64 = 10_000_000_000;
/// The largest batch (without GSO, one `sendmmsg(2)` takes at most
/// `UIO_MAXIOV` = 1024 messages; longer vectors take several calls).
pub const MAX_BATCH: usize = 1024;

/// How fast the fleet beats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Every node beats once per interval.
    Interval(Duration),
    /// Aggregate heartbeats per second; the interval is nodes / rate.
    Rate(f64),
}

/// What `hb-tools loadgen` was asked to do.
#[derive(Clone, Debug)]
pub struct LoadgenOptions {
    /// How many nodes to simulate, 1 ..= [`MAX_NODES`].
    pub nodes: u32,
    /// The first node id; the others follow consecutively.
    pub first_id: u32,
    /// Every heartbeat goes to each of these (all of one address family).
    pub targets: Vec<SocketAddr>,
    pub pace: Pace,
    /// Stop after this long (at most [`MAX_DURATION`]).
    pub duration: Option<Duration>,
    /// Stop after this many heartbeats (at most [`MAX_COUNT`]; each goes to
    /// every target; lost ones count).
    pub count: Option<u64>,
    /// Heartbeats per `sendmmsg(2)`, 1 ..= [`MAX_BATCH`].
    pub batch: usize,
    /// Fraction of the nodes, in [0, 1], that stop at `stop_after`.
    pub stop_fraction: f64,
    /// When the stopping nodes stop, as time into the run.
    pub stop_after: Option<Duration>,
    /// Probability, in [0, 1], that a heartbeat is lost: not sent, though
    /// its node's sequence advances (`--loss`, a percentage on the CLI).
    pub loss: f64,
    /// Probability, in [0, 1], that a heartbeat starts a burst of loss: it
    /// and its node's next 1 or 2 heartbeats are lost (`--burst-loss`).
    pub burst_loss: f64,
    /// Each node pauses at random moments, on average once per this long
    /// (start to start); needs `pause_for`.
    pub pause_every: Option<Duration>,
    /// How long a pause lasts (shorter than `pause_every`): no heartbeat is
    /// due, the sequence does not advance, and the node beats when it ends.
    pub pause_for: Option<Duration>,
    /// List every pause in the report (`pause_windows`): the node, and when
    /// its last heartbeat before the pause and its first after were handed
    /// to the kernel. The ground truth of a soak; off by default, as the
    /// list grows with the pauses.
    pub report_pauses: bool,
    /// Seeds the choice of stopping nodes, the phase jitter and the faults.
    pub seed: u64,
    /// At the end, send a graceful-leave heartbeat for every running node
    /// (paused ones too; leaves are never lost).
    pub leave_at_end: bool,
    /// Where to write the JSON report.
    pub report: Option<PathBuf>,
    /// Let the kernel cut each message into datagrams (UDP GSO, when
    /// available): about half the CPU per heartbeat on veth.
    pub gso: bool,
    /// Sign every heartbeat with this key; `None`: unauthenticated.
    pub key: Option<KeyFile>,
}

impl LoadgenOptions {
    /// Options with the CLI's defaults for everything but the essentials.
    pub fn new(nodes: u32, targets: Vec<SocketAddr>, pace: Pace) -> Self {
        LoadgenOptions {
            nodes,
            first_id: 1,
            targets,
            pace,
            duration: None,
            count: None,
            batch: 64,
            stop_fraction: 0.0,
            stop_after: None,
            loss: 0.0,
            burst_loss: 0.0,
            pause_every: None,
            pause_for: None,
            report_pauses: false,
            seed: 1,
            leave_at_end: false,
            report: None,
            gso: true,
            key: None,
        }
    }
}
