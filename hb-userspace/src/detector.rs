//! The liveness state machine: turns the node table the XDP program writes
//! into per-node states and transitions, one sweep at a time.
//!
//! ```text
//!   unseen --heartbeat--> up --silent past timeout--> down --heartbeat--> up
//!      \                   |                            |
//!       +------------------+-------leave heartbeat------+--> left --heartbeat--> up
//! ```
//!
//! Time is the monitor's own monotonic clock (the kernel's `bpf_ktime_get_ns`
//! at arrival, compared with `CLOCK_MONOTONIC` now), never the sender's. The
//! timeout of a node is `timeout_multiplier x interval`, where the interval is
//! the node's configured one, else the one it advertises, else the default.
//! A sweep is O(1) per node with no syscall: it reads each record once.

use hb_common::{table::NodeRecord, wire::flags};
use serde::{Deserialize, Serialize};

/// Where a node stands, as far as this monitor knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Configured but never heard from since the agent has known it.
    #[default]
    Unseen,
    /// Heartbeats arrive within the timeout.
    Up,
    /// Silent past its timeout: failover actions ran.
    Down,
    /// Said goodbye with a graceful-leave heartbeat: no failover.
    Left,
}

impl NodeState {
    pub const fn name(self) -> &'static str {
        match self {
            NodeState::Unseen => "unseen",
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Left => "left",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the detector reads node records from: the memory-mapped kernel
/// table in the agent, a plain slice in tests.
pub trait RecordSource {
    fn record(&self, node_id: u32) -> NodeRecord;
}

impl RecordSource for [NodeRecord] {
    fn record(&self, node_id: u32) -> NodeRecord {
        self[node_id as usize]
    }
}

impl RecordSource for crate::datapath::NodeTable {
    fn record(&self, node_id: u32) -> NodeRecord {
        self.get(node_id)
    }
}

/// One state change found by a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Index of the node in the detector's node list (the order given to
    /// [`Detector::new`]).
    pub index: usize,
    pub node_id: u32,
    pub from: NodeState,
    pub to: NodeState,
    /// Time since the node's last accepted heartbeat, if it was ever heard.
    pub since_last_heartbeat_ns: Option<u64>,
}

/// Settings shared by every node.
#[derive(Clone, Copy, Debug)]
pub struct DetectorSettings {
    /// Interval assumed for a node that neither has one configured nor
    /// advertises one.
    pub default_interval_ns: u64,
    /// timeout = multiplier x interval.
    pub timeout_multiplier: u32,
}

/// A node to watch, with its configured interval if it has one.
#[derive(Clone, Copy, Debug)]
pub struct WatchedNode {
    pub node_id: u32,
    pub interval_ns: Option<u64>,
}

/// The agent's per-node memory: 32 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeTrack {
    /// Heartbeat count of the record at the last sweep: a different count
    /// means new heartbeats arrived.
    pub heartbeats_seen: u64,
    /// Arrival time of the last heartbeat seen; 0 = never.
    pub last_seen_ns: u64,
    /// The node's timeout, fixed when its last heartbeat was seen.
    pub timeout_ns: u64,
    /// The node's configured interval (0 = none).
    pub configured_interval_ns: u64,
    pub state: NodeState,
}

const _: () = assert!(size_of::<NodeTrack>() <= 64);

/// Advertised intervals are clamped to this range before use, so a sender
/// cannot make itself undetectable by advertising an absurd interval.
pub const MIN_INTERVAL_NS: u64 = 10_000_000;
pub const MAX_INTERVAL_NS: u64 = 3_600_000_000_000;

/// Runs every watched node through the state machine.
#[derive(Debug)]
pub struct Detector {
    settings: DetectorSettings,
    node_ids: Vec<u32>,
    tracks: Vec<NodeTrack>,
    /// No node is convicted on silence measured from before this instant:
    /// the agent's start (or restart), so that nodes get a full timeout to
    /// be heard by a freshly started agent.
    grace_floor_ns: u64,
}

impl Detector {
    /// Starts watching `nodes` at monotonic time `now_ns`, all unseen.
    pub fn new(settings: DetectorSettings, nodes: &[WatchedNode], now_ns: u64) -> Self {
        let tracks = nodes
            .iter()
            .map(|n| NodeTrack {
                configured_interval_ns: n.interval_ns.unwrap_or(0),
                ..Default::default()
            })
            .collect();
        Detector {
            settings,
            node_ids: nodes.iter().map(|n| n.node_id).collect(),
            tracks,
            grace_floor_ns: now_ns,
        }
    }

    /// Restores what a previous run of the agent knew about node `index`: its
    /// state and the heartbeat count already accounted for. Heartbeats seen
    /// before the restart do not count as new, so no event fires for them.
    /// `advertised_interval_ms` is the interval of the node's last heartbeat
    /// (0 if unknown), from which its timeout is computed.
    pub fn restore(
        &mut self,
        index: usize,
        state: NodeState,
        heartbeats_seen: u64,
        advertised_interval_ms: u32,
    ) {
        let settings = self.settings;
        let track = &mut self.tracks[index];
        track.state = state;
        track.heartbeats_seen = heartbeats_seen;
        track.timeout_ns = timeout_ns(
            settings,
            track.configured_interval_ns,
            advertised_interval_ms,
        );
    }

    pub fn node_ids(&self) -> &[u32] {
        &self.node_ids
    }

    pub fn tracks(&self) -> &[NodeTrack] {
        &self.tracks
    }

    /// When node `index` will be declared down if it stays silent, or `None`
    /// if it is not up.
    pub fn deadline_ns(&self, index: usize) -> Option<u64> {
        let track = &self.tracks[index];
        (track.state == NodeState::Up).then(|| {
            track
                .last_seen_ns
                .max(self.grace_floor_ns)
                .saturating_add(track.timeout_ns)
        })
    }

    /// Reads every watched node's record once at monotonic time `now_ns` and
    /// appends the state changes to `out`.
    pub fn sweep<S: RecordSource + ?Sized>(
        &mut self,
        now_ns: u64,
        source: &S,
        out: &mut Vec<Transition>,
    ) {
        let settings = self.settings;
        let grace_floor_ns = self.grace_floor_ns;
        for (index, (&node_id, track)) in self.node_ids.iter().zip(&mut self.tracks).enumerate() {
            let record = source.record(node_id);
            let from = track.state;
            if record.heartbeats != track.heartbeats_seen {
                track.heartbeats_seen = record.heartbeats;
                track.last_seen_ns = record.last_seen_ns;
                track.timeout_ns =
                    timeout_ns(settings, track.configured_interval_ns, record.interval_ms);
                let to = if record.heartbeat_flags & flags::LEAVE != 0 {
                    NodeState::Left
                } else {
                    NodeState::Up
                };
                if to != from {
                    track.state = to;
                    out.push(Transition {
                        index,
                        node_id,
                        from,
                        to,
                        since_last_heartbeat_ns: Some(now_ns.saturating_sub(record.last_seen_ns)),
                    });
                }
            } else if from == NodeState::Up {
                let deadline = track
                    .last_seen_ns
                    .max(grace_floor_ns)
                    .saturating_add(track.timeout_ns);
                if now_ns > deadline {
                    track.state = NodeState::Down;
                    out.push(Transition {
                        index,
                        node_id,
                        from,
                        to: NodeState::Down,
                        since_last_heartbeat_ns: (track.last_seen_ns != 0)
                            .then(|| now_ns.saturating_sub(track.last_seen_ns)),
                    });
                }
            }
        }
    }
}

/// The timeout of a node: `timeout_multiplier x interval`, where the interval
/// is the configured one (`configured_interval_ns`, 0 = none), else the one
/// the node advertised (clamped), else the default.
pub fn timeout_ns(
    settings: DetectorSettings,
    configured_interval_ns: u64,
    advertised_ms: u32,
) -> u64 {
    let interval = if configured_interval_ns != 0 {
        configured_interval_ns
    } else if advertised_ms != 0 {
        (u64::from(advertised_ms) * 1_000_000).clamp(MIN_INTERVAL_NS, MAX_INTERVAL_NS)
    } else {
        settings.default_interval_ns
    };
    interval.saturating_mul(u64::from(settings.timeout_multiplier))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// A fake kernel: a node table the test writes heartbeats into, and a
    /// clock the test moves.
    struct Fake {
        table: Vec<NodeRecord>,
        now: u64,
        detector: Detector,
        sequence: u64,
    }

    impl Fake {
        fn new(nodes: &[WatchedNode]) -> Self {
            let now = 1_000 * MS;
            let settings = DetectorSettings {
                default_interval_ns: 100 * MS,
                timeout_multiplier: 3,
            };
            Fake {
                table: vec![NodeRecord::default(); 8],
                now,
                detector: Detector::new(settings, nodes, now),
                sequence: 0,
            }
        }

        fn beat(&mut self, id: u32, interval_ms: u32, heartbeat_flags: u8) {
            self.sequence += 1;
            let record = &mut self.table[id as usize];
            record.heartbeats += 1;
            record.sequence = self.sequence;
            record.last_seen_ns = self.now;
            record.interval_ms = interval_ms;
            record.heartbeat_flags = heartbeat_flags;
        }

        fn advance_and_sweep(&mut self, ms: u64) -> Vec<(u32, NodeState, NodeState)> {
            self.now += ms * MS;
            let mut out = Vec::new();
            self.detector
                .sweep(self.now, self.table.as_slice(), &mut out);
            out.iter().map(|t| (t.node_id, t.from, t.to)).collect()
        }
    }

    fn nodes(ids: &[u32]) -> Vec<WatchedNode> {
        ids.iter()
            .map(|&node_id| WatchedNode {
                node_id,
                interval_ns: None,
            })
            .collect()
    }

    use NodeState::*;

    #[test]
    fn never_seen_node_stays_unseen_without_events() {
        let mut fake = Fake::new(&nodes(&[1]));
        assert!(fake.advance_and_sweep(10_000).is_empty());
        assert_eq!(fake.detector.tracks()[0].state, Unseen);
    }

    #[test]
    fn up_down_up_with_advertised_interval() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 100, 0);
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Unseen, Up)]);
        // Timeout = 3 x 100 ms from the last heartbeat, which was 1 ms ago.
        assert!(
            fake.advance_and_sweep(298).is_empty(),
            "299 ms of silence is within timeout"
        );
        assert!(
            fake.advance_and_sweep(1).is_empty(),
            "exactly at the deadline is not past it"
        );
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Up, Down)]);
        assert!(
            fake.advance_and_sweep(5_000).is_empty(),
            "down is reported once"
        );
        fake.beat(1, 100, 0);
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Down, Up)]);
    }

    #[test]
    fn regular_heartbeats_keep_a_node_up() {
        let mut fake = Fake::new(&nodes(&[1, 2]));
        for _ in 0..100 {
            fake.beat(1, 100, 0);
            fake.beat(2, 100, 0);
            let events = fake.advance_and_sweep(250);
            assert!(
                events.iter().all(|e| e.2 == Up),
                "only the first sweep reports up: {events:?}"
            );
        }
        assert_eq!(fake.detector.tracks()[0].state, Up);
        assert_eq!(fake.detector.tracks()[1].state, Up);
    }

    #[test]
    fn configured_interval_wins_over_advertised_one() {
        let mut fake = Fake::new(&[WatchedNode {
            node_id: 1,
            interval_ns: Some(1_000 * MS),
        }]);
        fake.beat(1, 100, 0);
        fake.advance_and_sweep(0);
        assert!(
            fake.advance_and_sweep(2_900).is_empty(),
            "timeout is 3 x 1 s, not 3 x 100 ms"
        );
        assert_eq!(fake.advance_and_sweep(200), vec![(1, Up, Down)]);
    }

    #[test]
    fn default_interval_applies_when_nothing_is_advertised() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 0, 0);
        fake.advance_and_sweep(0);
        assert!(fake.advance_and_sweep(300).is_empty());
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Up, Down)]);
    }

    #[test]
    fn absurd_advertised_interval_is_clamped() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 1, 0); // 1 ms: clamped up to 10 ms, timeout 30 ms
        fake.advance_and_sweep(0);
        assert!(fake.advance_and_sweep(30).is_empty());
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Up, Down)]);
    }

    #[test]
    fn graceful_leave_is_left_not_down_and_a_new_heartbeat_brings_it_back() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 100, 0);
        fake.advance_and_sweep(1);
        fake.beat(1, 100, flags::LEAVE);
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Up, Left)]);
        assert!(
            fake.advance_and_sweep(60_000).is_empty(),
            "a node that left is never declared down"
        );
        fake.beat(1, 100, 0);
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Left, Up)]);
    }

    #[test]
    fn a_down_node_that_leaves_goes_to_left() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 100, 0);
        fake.advance_and_sweep(1);
        assert_eq!(fake.advance_and_sweep(400), vec![(1, Up, Down)]);
        fake.beat(1, 100, flags::LEAVE);
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Down, Left)]);
    }

    #[test]
    fn a_restarted_agent_gives_nodes_a_full_timeout_and_fires_nothing_for_old_beats() {
        // The node was up, its last heartbeat long before the agent started.
        let mut table = vec![NodeRecord::default(); 4];
        table[1] = NodeRecord {
            heartbeats: 50,
            last_seen_ns: 10 * MS,
            interval_ms: 100,
            ..Default::default()
        };
        let settings = DetectorSettings {
            default_interval_ns: 100 * MS,
            timeout_multiplier: 3,
        };
        let start = 100_000 * MS;
        let mut detector = Detector::new(settings, &nodes(&[1]), start);
        detector.restore(0, Up, 50, 100);
        let mut out = Vec::new();
        detector.sweep(start + 299 * MS, table.as_slice(), &mut out);
        assert!(
            out.is_empty(),
            "no event within a timeout of the restart: {out:?}"
        );
        detector.sweep(start + 301 * MS, table.as_slice(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].from, out[0].to), (Up, Down));
    }

    #[test]
    fn transitions_carry_time_since_last_heartbeat() {
        let mut fake = Fake::new(&nodes(&[3]));
        fake.beat(3, 100, 0);
        fake.advance_and_sweep(5);
        fake.now += 400 * MS;
        let mut out = Vec::new();
        fake.detector
            .sweep(fake.now, fake.table.as_slice(), &mut out);
        assert_eq!(out[0].since_last_heartbeat_ns, Some(405 * MS));
        assert_eq!(out[0].index, 0);
    }
}
