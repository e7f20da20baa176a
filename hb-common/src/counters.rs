//! Per-CPU counters of what the XDP program did with each packet.
//!
//! Every packet the program sees increments exactly one *outcome* counter
//! (why) and exactly one *verdict* counter (what), so
//! `sum(outcomes) == passed + dropped == packets seen`.

/// Index of a counter in the `HB_COUNTERS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A valid heartbeat of a known node that advanced its sequence: recorded.
    Accepted = 0,
    /// Not a UDP packet to the heartbeat port (or not parseable as one):
    /// passed on untouched.
    NotHeartbeat = 1,
    /// UDP to the heartbeat port, but wrong magic, version or length:
    /// passed on untouched.
    Malformed = 2,
    /// A well-formed heartbeat whose node id is not in the configured table
    /// (or beyond `max_nodes`): not recorded.
    UnknownNode = 3,
    /// A well-formed heartbeat whose (incarnation, sequence) does not move
    /// forward: a duplicate, reordered or replayed packet. Not recorded.
    StaleSequence = 4,
    /// Verdict: the packet was passed to the network stack (XDP_PASS).
    Passed = 5,
    /// Verdict: the packet was consumed (XDP_DROP).
    Dropped = 6,
}

impl Counter {
    /// Number of counters (the size of the per-CPU array).
    pub const COUNT: u32 = 7;
    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Accepted,
        Counter::NotHeartbeat,
        Counter::Malformed,
        Counter::UnknownNode,
        Counter::StaleSequence,
        Counter::Passed,
        Counter::Dropped,
    ];

    /// The counter's name as shown by `hb status`.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Accepted => "accepted",
            Counter::NotHeartbeat => "not_heartbeat",
            Counter::Malformed => "malformed",
            Counter::UnknownNode => "unknown_node",
            Counter::StaleSequence => "stale_sequence",
            Counter::Passed => "passed",
            Counter::Dropped => "dropped",
        }
    }

    /// True for the outcome counters (one per packet), false for the verdicts.
    pub const fn is_outcome(self) -> bool {
        !matches!(self, Counter::Passed | Counter::Dropped)
    }
}
