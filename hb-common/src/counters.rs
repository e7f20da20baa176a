//! Per-CPU counters of what the datapath did with each packet.
//!
//! Every packet the program sees increments exactly one *outcome* counter
//! (why) and exactly one *verdict* counter (what), so
//! `sum(outcomes) == passed + dropped == packets seen`. Outcomes after
//! `malformed` are well-formed heartbeats that were refused, one counter per
//! reason, in the order the checks are made. The `probe_*` outcomes are the
//! same for ICMP echo replies carrying hb's identifier ([`crate::probe`]):
//! they come last, after the verdicts, so the heartbeat counters keep their
//! indices.
//!
//! The XDP program keeps them in one [`CounterBlock`] per CPU (`HB_COUNTERS`
//! has a single entry): one map lookup per packet for both counters.

/// A counter: its index in a [`CounterBlock`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A valid heartbeat of a known node that advanced its sequence: recorded.
    Accepted = 0,
    /// Not a UDP packet to the heartbeat port (or not parseable as one):
    /// passed on untouched.
    NotHeartbeat = 1,
    /// UDP to the heartbeat port, but wrong magic, version, length, reserved
    /// byte or flags: passed on untouched.
    Malformed = 2,
    /// An unauthenticated heartbeat (key id 0) where authentication is
    /// required: by the config, or because the node has sent authenticated
    /// heartbeats before. Not recorded.
    Unauthenticated = 3,
    /// A heartbeat whose key id has no key on this monitor. Not recorded.
    UnknownKey = 4,
    /// A heartbeat whose tag is wrong: forged, corrupted, or signed with
    /// another key under the same id. Not recorded.
    BadTag = 5,
    /// A heartbeat whose node id is not in the configured table (or beyond
    /// `max_nodes`). Not recorded.
    UnknownNode = 6,
    /// A heartbeat of a node pinned to a source address, from another
    /// address. Not recorded.
    WrongSource = 7,
    /// A heartbeat whose (incarnation, sequence) does not move forward: a
    /// duplicate, reordered or replayed packet. Not recorded.
    Replay = 8,
    /// Verdict: the packet was passed to the network stack (XDP_PASS).
    Passed = 9,
    /// Verdict: the packet was consumed (XDP_DROP).
    Dropped = 10,
    /// An echo reply with hb's identifier whose data is not an hb probe
    /// (wrong length, magic, version or reserved bytes): passed on
    /// untouched.
    ProbeMalformed = 11,
    /// A probe reply with the right tag, of a configured node, whose
    /// sequence advanced: recorded.
    ProbeAccepted = 12,
    /// A probe reply whose tag is wrong: forged, corrupted, tagged under
    /// another secret (an earlier start's), or from another address than
    /// the one probed. Not recorded.
    ProbeBadTag = 13,
    /// A probe reply whose node id is not configured (or beyond
    /// `max_nodes`). Not recorded.
    ProbeUnknownNode = 14,
    /// A probe reply whose sequence does not move forward: a duplicate,
    /// reordered or replayed reply. Not recorded.
    ProbeReplay = 15,
}

impl Counter {
    /// Number of counters (the size of the per-CPU array).
    pub const COUNT: u32 = 16;
    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Accepted,
        Counter::NotHeartbeat,
        Counter::Malformed,
        Counter::Unauthenticated,
        Counter::UnknownKey,
        Counter::BadTag,
        Counter::UnknownNode,
        Counter::WrongSource,
        Counter::Replay,
        Counter::Passed,
        Counter::Dropped,
        Counter::ProbeMalformed,
        Counter::ProbeAccepted,
        Counter::ProbeBadTag,
        Counter::ProbeUnknownNode,
        Counter::ProbeReplay,
    ];

    /// The counter's name as shown by `hb status`.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Accepted => "accepted",
            Counter::NotHeartbeat => "not_heartbeat",
            Counter::Malformed => "malformed",
            Counter::Unauthenticated => "unauthenticated",
            Counter::UnknownKey => "unknown_key",
            Counter::BadTag => "bad_tag",
            Counter::UnknownNode => "unknown_node",
            Counter::WrongSource => "wrong_source",
            Counter::Replay => "replay",
            Counter::Passed => "passed",
            Counter::Dropped => "dropped",
            Counter::ProbeMalformed => "probe_malformed",
            Counter::ProbeAccepted => "probe_accepted",
            Counter::ProbeBadTag => "probe_bad_tag",
            Counter::ProbeUnknownNode => "probe_unknown_node",
            Counter::ProbeReplay => "probe_replay",
        }
    }

    /// True for the outcome counters (one per packet), false for the verdicts.
    pub const fn is_outcome(self) -> bool {
        !matches!(self, Counter::Passed | Counter::Dropped)
    }

    /// True for the outcomes of a well-formed heartbeat (recorded or
    /// refused): the packets the datapath consumes unless told to pass them.
    pub const fn is_heartbeat(self) -> bool {
        (self as u32) < Counter::Passed as u32
            && !matches!(self, Counter::NotHeartbeat | Counter::Malformed)
    }

    /// True for the outcomes of an echo reply carrying hb's identifier.
    pub const fn is_probe(self) -> bool {
        self as u32 >= Counter::ProbeMalformed as u32
    }

    /// True for the outcomes of a well-formed probe reply (recorded or
    /// refused): always consumed (XDP_DROP), since hb sent the request and
    /// no one else waits for the reply.
    #[inline(always)]
    pub const fn is_consumed_probe(self) -> bool {
        self as u32 >= Counter::ProbeAccepted as u32
    }
}

/// Every counter's value, in [`Counter::ALL`] order (summed over CPUs or
/// receive threads).
pub type CounterValues = [u64; Counter::COUNT as usize];

/// The value of `HB_COUNTERS`' only entry, one per CPU: every counter,
/// indexed by [`Counter`], in a power-of-two array so that an index masked
/// with [`CounterBlock::MASK`] is in bounds for the compiler and the
/// verifier alike; the slots past [`Counter::COUNT`] stay zero. 128 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterBlock {
    pub slots: [u64; CounterBlock::SLOTS],
}

const _: () = assert!(size_of::<CounterBlock>() == 128);
const _: () = assert!(Counter::COUNT as usize <= CounterBlock::SLOTS);

impl CounterBlock {
    /// Slots in a block (at least [`Counter::COUNT`], a power of two).
    pub const SLOTS: usize = 16;
    /// `SLOTS - 1`.
    pub const MASK: usize = Self::SLOTS - 1;

    /// Adds one to `counter`.
    #[inline(always)]
    pub fn bump(&mut self, counter: Counter) {
        self.slots[counter as usize & Self::MASK] += 1;
    }

    /// The counters' values in [`Counter::ALL`] order.
    pub fn values(&self) -> CounterValues {
        core::array::from_fn(|i| self.slots[i])
    }
}

#[cfg(feature = "user")]
// SAFETY: `CounterBlock` is `repr(C)`, has no padding (an array of u64) and
// every bit pattern is a valid value.
unsafe impl aya::Pod for CounterBlock {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order() {
        for (index, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, index);
        }
    }

    #[test]
    fn outcome_kinds_partition_the_counters() {
        for counter in Counter::ALL {
            let kinds = [
                counter.is_heartbeat(),
                counter.is_probe(),
                !counter.is_outcome(),
                matches!(counter, Counter::NotHeartbeat | Counter::Malformed),
            ];
            assert_eq!(kinds.iter().filter(|k| **k).count(), 1, "{counter:?}");
            assert_eq!(
                counter.is_consumed_probe(),
                counter.is_probe() && counter != Counter::ProbeMalformed
            );
        }
    }

    #[test]
    fn a_block_counts_each_counter_in_its_slot() {
        let mut block = CounterBlock::default();
        for (n, counter) in Counter::ALL.iter().enumerate() {
            for _ in 0..=n {
                block.bump(*counter);
            }
        }
        let values = block.values();
        assert!(values.iter().enumerate().all(|(n, v)| *v == n as u64 + 1));
        assert!(
            block.slots[Counter::COUNT as usize..]
                .iter()
                .all(|v| *v == 0)
        );
    }
}
