//! The liveness state machine: turns the node table the datapath writes into
//! per-node states and transitions, one sweep at a time.
//!
//! ```text
//!   unseen --heartbeat--> up --silent past timeout--> down --heartbeat--> up
//!      \                   |                            |
//!       +------------------+-------leave heartbeat------+--> left --heartbeat--> up
//! ```
//!
//! Time is the monitor's own monotonic clock (the kernel's `bpf_ktime_get_ns`
//! at arrival, compared with `CLOCK_MONOTONIC` now), never the sender's. A
//! node's timeout (how long it may stay silent) comes from one of two rules:
//!
//! - [`Rule::Timeout`]: `timeout_multiplier x interval`, where the interval
//!   is the node's configured one, else the one it advertises, else the
//!   default.
//! - [`Rule::Phi`]: phi accrual ([`crate::phi`]) over the interval the
//!   datapath measures (`hb_common::table::intervals`): the silence after
//!   which phi reaches the threshold, `mean + pause + y x sd`. It changes
//!   only when a heartbeat arrives, so it is recomputed then (each new
//!   heartbeat of an up node takes the slow path once): O(1) per node and
//!   sweep, no transcendental function. Until a node has an interval
//!   sample, the timeout rule applies to it.
//!
//! A sweep that starts more than `stall_ns` after the previous one means the
//! agent itself was stalled (a pause, an overloaded host): it then convicts
//! nobody until every node has had a full timeout to be heard again, as
//! after a restart.
//!
//! Built for millions of nodes: a sweep reads 12 bytes per node, front to
//! back (the node's 8-byte seen word and a 4-byte [`Watch`] word of the
//! detector's own), with no syscall, allocation or division. Only nodes
//! that may change state (an up node past its timeout or with a leave, any
//! other node with a heartbeat newer than the previous sweep) take the slow
//! path, which reads the node's cold record.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
};

use hb_common::table::{intervals, seen};
use serde::{Deserialize, Serialize};

use crate::phi::PhiDetector;

/// Where a node stands, as far as this monitor knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum NodeState {
    /// Configured but never heard from since the agent has known it.
    #[default]
    Unseen = 0,
    /// Heartbeats arrive within the timeout.
    Up = 1,
    /// Silent past its timeout: failover actions ran.
    Down = 2,
    /// Said goodbye with a graceful-leave heartbeat: no failover.
    Left = 3,
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

    const fn from_bits(bits: u32) -> Self {
        match bits & 3 {
            0 => NodeState::Unseen,
            1 => NodeState::Up,
            2 => NodeState::Down,
            _ => NodeState::Left,
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the detector reads from the node table: the memory-mapped table in
/// the agent, plain vectors in tests.
pub trait TableView {
    /// The seen words (`hb_common::table::seen`), indexed by node id.
    fn seen_words(&self) -> &[AtomicU64];
    /// The interval (ms) the node advertised in its last heartbeat, 0 if none.
    fn advertised_interval_ms(&self, node_id: u32) -> u32;
    /// The node's interval word (`hb_common::table::intervals`).
    fn interval_word(&self, node_id: u32) -> u64;
}

impl TableView for crate::table::NodeTable {
    fn seen_words(&self) -> &[AtomicU64] {
        self.seen.atomics()
    }

    fn advertised_interval_ms(&self, node_id: u32) -> u32 {
        self.records.get(node_id).interval_ms
    }

    fn interval_word(&self, node_id: u32) -> u64 {
        self.intervals.get(node_id)
    }
}

/// One state change found by a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub node_id: u32,
    pub from: NodeState,
    pub to: NodeState,
    /// Time since the node's last accepted heartbeat, if it was ever heard.
    pub since_last_heartbeat_ns: Option<u64>,
}

/// How a node's timeout is decided.
#[derive(Clone, Copy, Debug)]
pub enum Rule {
    /// `timeout_multiplier x interval`.
    Timeout,
    /// Phi accrual over the measured interval; the timeout rule until the
    /// node has an interval sample.
    Phi {
        detector: PhiDetector,
        /// Added to the mean interval; `None`: one mean interval (a lost
        /// heartbeat's worth of extra silence).
        acceptable_pause_ns: Option<u64>,
    },
}

/// Settings shared by every node.
#[derive(Clone, Copy, Debug)]
pub struct DetectorSettings {
    /// Interval assumed for a node that neither has one configured nor
    /// advertises one.
    pub default_interval_ns: u64,
    /// timeout = multiplier x interval.
    pub timeout_multiplier: u32,
    pub rule: Rule,
    /// A sweep this long after the previous one means the agent stalled.
    pub stall_ns: u64,
}

/// A node to watch, with its configured interval if it has one.
#[derive(Clone, Copy, Debug)]
pub struct WatchedNode {
    pub node_id: u32,
    pub interval_ns: Option<u64>,
}

/// Advertised intervals are clamped to this range before use, so a sender
/// cannot make itself undetectable by advertising an absurd interval.
pub const MIN_INTERVAL_NS: u64 = 10_000_000;
pub const MAX_INTERVAL_NS: u64 = 3_600_000_000_000;

/// A heartbeat stamped up to this long before a sweep started may not yet
/// have been stored when the sweep read its node (the store follows the
/// timestamp by nanoseconds); the next sweep looks at it again.
const STORE_MARGIN_NS: u64 = 1_000_000;

/// The detector's 4 bytes per node: the state in the top 2 bits, the
/// node's timeout in milliseconds below (up to about 12 days).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Watch(u32);

impl Watch {
    const STATE_SHIFT: u32 = 30;
    const TIMEOUT_MASK: u32 = (1 << Self::STATE_SHIFT) - 1;
    const UP: u32 = NodeState::Up as u32;

    fn new(state: NodeState, timeout_ns: u64) -> Self {
        let ms = timeout_ns
            .div_ceil(1_000_000)
            .min(u64::from(Self::TIMEOUT_MASK)) as u32;
        Watch((state as u32) << Self::STATE_SHIFT | ms)
    }

    fn state(self) -> NodeState {
        NodeState::from_bits(self.0 >> Self::STATE_SHIFT)
    }

    fn timeout_ns(self) -> u64 {
        u64::from(self.0 & Self::TIMEOUT_MASK) * 1_000_000
    }

    /// Whether a sweep can leave the node alone: an up node heard within
    /// its timeout without a leave, or any other node with nothing new.
    #[inline(always)]
    fn is_quiet(self, word: u64, now_ns: u64, new_since_ns: u64) -> bool {
        if self.0 >> Self::STATE_SHIFT == Self::UP {
            !seen::is_leave(word)
                && now_ns.saturating_sub(seen::arrival_ns(word)) <= self.timeout_ns()
        } else {
            word <= new_since_ns
        }
    }
}

/// Runs every watched node through the state machine.
#[derive(Debug)]
pub struct Detector {
    settings: DetectorSettings,
    /// One per node id (the table's size): unconfigured ids stay unseen
    /// forever, since nothing records heartbeats for them.
    watches: Vec<Watch>,
    configured_interval_ns: HashMap<u32, u64>,
    /// Seen words above this are heartbeats no sweep has looked at yet.
    new_since_ns: u64,
    /// No node is convicted on silence measured from before this instant:
    /// the agent's start (or restart), so that nodes get a full timeout to
    /// be heard by a freshly started agent.
    grace_floor_ns: u64,
    /// Ids the last sweep's fast pass set aside (kept to reuse the memory).
    candidates: Vec<u32>,
    /// When the previous sweep ran (0: none yet).
    last_sweep_ns: u64,
}

impl Detector {
    /// Starts watching `nodes` (ids below `table_len`) at monotonic time
    /// `now_ns`, all unseen.
    pub fn new(
        settings: DetectorSettings,
        table_len: u32,
        nodes: &[WatchedNode],
        now_ns: u64,
    ) -> Self {
        let configured_interval_ns = nodes
            .iter()
            .filter_map(|n| Some((n.node_id, n.interval_ns?)))
            .collect();
        let mut detector = Detector {
            settings,
            watches: vec![Watch::default(); table_len as usize],
            configured_interval_ns,
            new_since_ns: 0,
            grace_floor_ns: now_ns,
            candidates: Vec::new(),
            last_sweep_ns: 0,
        };
        for node in nodes {
            detector.watches[node.node_id as usize] = Watch::new(
                NodeState::Unseen,
                detector.fixed_timeout_ns(node.node_id, 0),
            );
        }
        detector
    }

    pub fn settings(&self) -> &DetectorSettings {
        &self.settings
    }

    /// Restores what a previous run of the agent knew about node `id`: its
    /// state, the interval of its last heartbeat (0 if unknown) and its
    /// interval word, from which its timeout is computed.
    pub fn restore(
        &mut self,
        id: u32,
        state: NodeState,
        advertised_interval_ms: u32,
        interval_word: u64,
    ) {
        self.watches[id as usize] = Watch::new(
            state,
            self.timeout_ns_for(id, advertised_interval_ms, interval_word),
        );
    }

    pub fn state(&self, id: u32) -> NodeState {
        self.watches[id as usize].state()
    }

    /// The node's current timeout (ms precision).
    pub fn timeout_ns(&self, id: u32) -> u64 {
        self.watches[id as usize].timeout_ns()
    }

    /// When node `id`, whose seen word is `word`, will be declared down if it
    /// stays silent; `None` if it is not up.
    pub fn deadline_ns(&self, id: u32, word: u64) -> Option<u64> {
        let watch = self.watches[id as usize];
        (watch.state() == NodeState::Up).then(|| {
            seen::arrival_ns(word)
                .max(self.grace_floor_ns)
                .saturating_add(watch.timeout_ns())
        })
    }

    /// The timeout of node `id` when it advertises `advertised_ms` and its
    /// measured interval is `interval_word`, by the detector's rule.
    pub fn timeout_ns_for(&self, id: u32, advertised_ms: u32, interval_word: u64) -> u64 {
        match self.settings.rule {
            Rule::Phi {
                detector,
                acceptable_pause_ns,
            } => {
                let (mean_us, mad_us) = (
                    intervals::mean_us(interval_word),
                    intervals::mad_us(interval_word),
                );
                match detector.deadline_ns(mean_us, mad_us) {
                    Some(deadline) => {
                        let pause = acceptable_pause_ns.unwrap_or(u64::from(mean_us) * 1_000);
                        deadline.saturating_add(pause).max(MIN_INTERVAL_NS)
                    }
                    None => self.fixed_timeout_ns(id, advertised_ms),
                }
            }
            Rule::Timeout => self.fixed_timeout_ns(id, advertised_ms),
        }
    }

    /// The phi of node `id` after `silence_ns` without a heartbeat, if the
    /// detector uses phi and the node has an interval sample.
    pub fn phi(&self, silence_ns: u64, interval_word: u64) -> Option<f64> {
        let Rule::Phi {
            detector,
            acceptable_pause_ns,
        } = self.settings.rule
        else {
            return None;
        };
        let mean_us = intervals::mean_us(interval_word);
        let pause = acceptable_pause_ns.unwrap_or(u64::from(mean_us) * 1_000);
        detector.phi(
            silence_ns.saturating_sub(pause),
            mean_us,
            intervals::mad_us(interval_word),
        )
    }

    /// The timeout rule: `timeout_multiplier x interval`, the interval being
    /// the configured one, else the advertised one (clamped), else the
    /// default.
    fn fixed_timeout_ns(&self, id: u32, advertised_ms: u32) -> u64 {
        let interval = match self.configured_interval_ns.get(&id) {
            Some(&configured) => configured,
            None if advertised_ms != 0 => {
                (u64::from(advertised_ms) * 1_000_000).clamp(MIN_INTERVAL_NS, MAX_INTERVAL_NS)
            }
            None => self.settings.default_interval_ns,
        };
        interval.saturating_mul(u64::from(self.settings.timeout_multiplier))
    }

    /// Reads every node's seen word once at monotonic time `now_ns` and
    /// appends the state changes to `out`. Returns how long the agent was
    /// stalled if this sweep found it was (see the module doc).
    pub fn sweep<T: TableView + ?Sized>(
        &mut self,
        now_ns: u64,
        table: &T,
        out: &mut Vec<Transition>,
    ) -> Option<u64> {
        let since_last = now_ns.saturating_sub(self.last_sweep_ns);
        let stalled =
            (self.last_sweep_ns != 0 && since_last > self.settings.stall_ns).then_some(since_last);
        if stalled.is_some() {
            self.grace_floor_ns = self.grace_floor_ns.max(now_ns);
        }
        self.last_sweep_ns = now_ns;
        let words = table.seen_words();
        let new_since_ns = self.new_since_ns;
        let refresh_on_heartbeat = matches!(self.settings.rule, Rule::Phi { .. });
        let mut candidates = std::mem::take(&mut self.candidates);
        candidates.clear();
        for (id, (word, watch)) in words.iter().zip(&self.watches).enumerate() {
            let word = word.load(Ordering::Relaxed);
            if !watch.is_quiet(word, now_ns, new_since_ns)
                || (refresh_on_heartbeat && word > new_since_ns)
            {
                candidates.push(id as u32);
            }
        }
        for &id in &candidates {
            self.examine(id, now_ns, table, out);
        }
        self.candidates = candidates;
        self.new_since_ns = now_ns.saturating_sub(STORE_MARGIN_NS);
        stalled
    }

    /// The slow path for one node the fast pass set aside.
    fn examine<T: TableView + ?Sized>(
        &mut self,
        id: u32,
        now_ns: u64,
        table: &T,
        out: &mut Vec<Transition>,
    ) {
        // A restored up node may not have been heard yet (word 0): its
        // silence counts from the grace floor.
        let word = table.seen_words()[id as usize].load(Ordering::Relaxed);
        let arrival = seen::arrival_ns(word);
        let from = self.watches[id as usize].state();
        let timeout = match self.settings.rule {
            Rule::Timeout => self.fixed_timeout_ns(id, table.advertised_interval_ms(id)),
            Rule::Phi { .. } => {
                let interval_word = table.interval_word(id);
                let advertised = if intervals::mean_us(interval_word) == 0 {
                    table.advertised_interval_ms(id)
                } else {
                    0 // not read: the measured interval decides
                };
                self.timeout_ns_for(id, advertised, interval_word)
            }
        };
        let to = match from {
            _ if seen::is_leave(word) => NodeState::Left,
            NodeState::Up if now_ns > arrival.max(self.grace_floor_ns).saturating_add(timeout) => {
                NodeState::Down
            }
            NodeState::Up => NodeState::Up,
            // Not up and a heartbeat newer than the last sweep: it is back.
            _ if word > self.new_since_ns => NodeState::Up,
            other => other,
        };
        self.watches[id as usize] = Watch::new(to, timeout);
        if to != from {
            out.push(Transition {
                node_id: id,
                from,
                to,
                since_last_heartbeat_ns: (arrival != 0).then(|| now_ns.saturating_sub(arrival)),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    use NodeState::*;

    /// A fake datapath: seen words and advertised intervals the test writes.
    struct FakeTable {
        seen: Vec<AtomicU64>,
        intervals: Vec<u32>,
        measured: Vec<u64>,
    }

    impl FakeTable {
        fn new(len: usize) -> Self {
            FakeTable {
                seen: (0..len).map(|_| AtomicU64::new(0)).collect(),
                intervals: vec![0; len],
                measured: vec![0; len],
            }
        }
    }

    impl TableView for FakeTable {
        fn seen_words(&self) -> &[AtomicU64] {
            &self.seen
        }
        fn advertised_interval_ms(&self, node_id: u32) -> u32 {
            self.intervals[node_id as usize]
        }
        fn interval_word(&self, node_id: u32) -> u64 {
            self.measured[node_id as usize]
        }
    }

    /// The fake table, a clock the test moves, and the detector under test.
    struct Fake {
        table: FakeTable,
        now: u64,
        detector: Detector,
    }

    impl Fake {
        fn new(nodes: &[WatchedNode]) -> Self {
            Self::with(settings(), nodes)
        }

        fn with(settings: DetectorSettings, nodes: &[WatchedNode]) -> Self {
            let now = 1_000 * MS;
            Fake {
                table: FakeTable::new(8),
                now,
                detector: Detector::new(settings, 8, nodes, now),
            }
        }

        fn beat(&mut self, id: u32, interval_ms: u32, leave: bool) {
            self.table.seen[id as usize].store(seen::word(self.now, leave), Ordering::Relaxed);
            self.table.intervals[id as usize] = interval_ms;
        }

        fn sweep(&mut self) -> Vec<Transition> {
            let mut out = Vec::new();
            self.detector.sweep(self.now, &self.table, &mut out);
            out
        }

        /// Heartbeats of node `id` every `interval_ms` for `ms`, a sweep
        /// after each; the transitions seen.
        fn beat_for(
            &mut self,
            id: u32,
            interval_ms: u64,
            ms: u64,
        ) -> Vec<(u32, NodeState, NodeState)> {
            let mut seen = Vec::new();
            for _ in 0..ms / interval_ms {
                self.beat(id, interval_ms as u32, false);
                seen.extend(self.advance_and_sweep(interval_ms));
            }
            seen
        }

        fn advance_and_sweep(&mut self, ms: u64) -> Vec<(u32, NodeState, NodeState)> {
            self.now += ms * MS;
            self.sweep()
                .iter()
                .map(|t| (t.node_id, t.from, t.to))
                .collect()
        }
    }

    fn settings() -> DetectorSettings {
        DetectorSettings {
            default_interval_ns: 100 * MS,
            timeout_multiplier: 3,
            rule: Rule::Timeout,
            stall_ns: 10_000 * MS,
        }
    }

    /// Phi with threshold 8, a 10 ms minimum deviation and a fixed 50 ms
    /// acceptable pause.
    fn phi_settings() -> DetectorSettings {
        DetectorSettings {
            rule: Rule::Phi {
                detector: PhiDetector::new(crate::phi::PhiSettings {
                    threshold: 8.0,
                    min_std_dev: std::time::Duration::from_millis(10),
                    acceptable_pause: std::time::Duration::ZERO,
                })
                .unwrap(),
                acceptable_pause_ns: Some(50 * MS),
            },
            ..settings()
        }
    }

    #[test]
    fn phi_uses_the_measured_interval_once_there_is_one() {
        let mut fake = Fake::with(phi_settings(), &nodes(&[1]));
        // No sample yet: the timeout rule (3 x 100 ms advertised).
        fake.beat(1, 100, false);
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Unseen, Up)]);
        assert_eq!(fake.detector.timeout_ns(1), 300 * MS);
        // Measured 100 ms, deviation 4 ms (sd 5 ms, floored to 10 ms):
        // 100 + 50 + 5.226 x 10 = 202.26 ms, recomputed on the heartbeat.
        fake.table.measured[1] = intervals::word(100_000, 4_000);
        fake.beat(1, 100, false);
        assert!(fake.advance_and_sweep(1).is_empty());
        assert_eq!(fake.detector.timeout_ns(1), 203 * MS, "ms, rounded up");
        assert!(fake.advance_and_sweep(201).is_empty());
        assert_eq!(fake.advance_and_sweep(2), vec![(1, Up, Down)]);
        let phi = fake
            .detector
            .phi(202_260_000, fake.table.measured[1])
            .unwrap();
        assert!((phi - 8.0).abs() < 0.01, "phi at the deadline: {phi}");
    }

    #[test]
    fn phi_deadlines_follow_the_spread_when_heartbeats_arrive() {
        let mut fake = Fake::with(phi_settings(), &nodes(&[1]));
        fake.table.measured[1] = intervals::word(100_000, 4_000);
        assert_eq!(fake.beat_for(1, 100, 1_000), vec![(1, Unseen, Up)]);
        let steady = fake.detector.timeout_ns(1);
        // The sender gets jittery: a mean absolute deviation of 40 ms.
        fake.table.measured[1] = intervals::word(100_000, 40_000);
        assert!(fake.beat_for(1, 100, 200).is_empty());
        let jittery = fake.detector.timeout_ns(1);
        assert!(jittery > steady + 200 * MS, "{steady} -> {jittery}");
        // And calms down again: the deadline shrinks back with the next
        // heartbeat, not only when the old deadline passes.
        fake.table.measured[1] = intervals::word(100_000, 4_000);
        assert!(fake.beat_for(1, 100, 100).is_empty());
        assert_eq!(fake.detector.timeout_ns(1), steady);
    }

    #[test]
    fn a_stalled_agent_convicts_nobody_before_a_full_timeout() {
        let mut fake = Fake::with(
            DetectorSettings {
                stall_ns: 1_000 * MS,
                ..settings()
            },
            &nodes(&[1, 2]),
        );
        fake.beat(1, 100, false);
        fake.beat(2, 100, false);
        assert_eq!(
            fake.advance_and_sweep(1),
            vec![(1, Unseen, Up), (2, Unseen, Up)]
        );
        // The agent is stopped for 2 s; node 1 kept sending (its heartbeat
        // landed just now), node 2 died.
        fake.now += 2_000 * MS;
        fake.beat(1, 100, false);
        let mut out = Vec::new();
        let stalled = fake.detector.sweep(fake.now, &fake.table, &mut out);
        assert_eq!(stalled, Some(2_000 * MS));
        assert!(
            out.is_empty(),
            "nobody convicted on silence measured across the stall: {out:?}"
        );
        fake.beat(1, 100, false);
        assert!(fake.advance_and_sweep(299).is_empty());
        fake.beat(1, 100, false);
        assert_eq!(fake.advance_and_sweep(2), vec![(2, Up, Down)]);
    }

    fn nodes(ids: &[u32]) -> Vec<WatchedNode> {
        ids.iter()
            .map(|&node_id| WatchedNode {
                node_id,
                interval_ns: None,
            })
            .collect()
    }

    #[test]
    fn watch_word_packs_state_and_timeout() {
        for state in [Unseen, Up, Down, Left] {
            let w = Watch::new(state, 300 * MS);
            assert_eq!((w.state(), w.timeout_ns()), (state, 300 * MS));
        }
        assert_eq!(Watch::new(Up, 1).timeout_ns(), MS, "rounded up to whole ms");
        assert_eq!(
            Watch::new(Left, u64::MAX).state(),
            Left,
            "a huge timeout saturates, not overflows"
        );
    }

    #[test]
    fn never_seen_node_stays_unseen_without_events() {
        let mut fake = Fake::new(&nodes(&[1]));
        assert!(fake.advance_and_sweep(10_000).is_empty());
        assert_eq!(fake.detector.state(1), Unseen);
    }

    #[test]
    fn up_down_up_with_advertised_interval() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 100, false);
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
        fake.beat(1, 100, false);
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Down, Up)]);
    }

    #[test]
    fn regular_heartbeats_keep_a_node_up() {
        let mut fake = Fake::new(&nodes(&[1, 2]));
        for round in 0..100 {
            fake.beat(1, 100, false);
            fake.beat(2, 100, false);
            let events = fake.advance_and_sweep(250);
            if round == 0 {
                assert_eq!(events, vec![(1, Unseen, Up), (2, Unseen, Up)]);
            } else {
                assert!(events.is_empty(), "round {round}: {events:?}");
            }
        }
        assert_eq!((fake.detector.state(1), fake.detector.state(2)), (Up, Up));
    }

    #[test]
    fn configured_interval_wins_over_advertised_one() {
        let mut fake = Fake::new(&[WatchedNode {
            node_id: 1,
            interval_ns: Some(1_000 * MS),
        }]);
        fake.beat(1, 100, false);
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
        fake.beat(1, 0, false);
        fake.advance_and_sweep(0);
        assert!(fake.advance_and_sweep(300).is_empty());
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Up, Down)]);
    }

    #[test]
    fn absurd_advertised_interval_is_clamped() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 1, false); // 1 ms: clamped up to 10 ms, timeout 30 ms
        fake.advance_and_sweep(0);
        assert!(fake.advance_and_sweep(30).is_empty());
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Up, Down)]);
    }

    #[test]
    fn a_longer_advertised_interval_is_honoured_before_convicting() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 100, false);
        fake.advance_and_sweep(0);
        // The sender now advertises 1 s (its next heartbeat says so).
        fake.beat(1, 1_000, false);
        assert!(
            fake.advance_and_sweep(2_000).is_empty(),
            "timeout is now 3 s"
        );
        assert_eq!(fake.advance_and_sweep(1_001), vec![(1, Up, Down)]);
    }

    #[test]
    fn graceful_leave_is_left_not_down_and_a_new_heartbeat_brings_it_back() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 100, false);
        fake.advance_and_sweep(1);
        fake.beat(1, 100, true);
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Up, Left)]);
        assert!(
            fake.advance_and_sweep(60_000).is_empty(),
            "a node that left is never declared down"
        );
        fake.beat(1, 100, false);
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Left, Up)]);
    }

    #[test]
    fn a_down_node_that_leaves_goes_to_left() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 100, false);
        fake.advance_and_sweep(1);
        assert_eq!(fake.advance_and_sweep(400), vec![(1, Up, Down)]);
        fake.beat(1, 100, true);
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Down, Left)]);
    }

    #[test]
    fn a_heartbeat_landing_just_before_the_sweep_is_not_missed() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 100, false);
        fake.advance_and_sweep(1);
        assert_eq!(fake.advance_and_sweep(400), vec![(1, Up, Down)]);
        // Stamped within the store margin before the previous sweep's start,
        // but only visible now.
        fake.table.seen[1].store(
            seen::word(fake.now - STORE_MARGIN_NS / 2, false),
            Ordering::Relaxed,
        );
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Down, Up)]);
    }

    #[test]
    fn a_restarted_agent_gives_nodes_a_full_timeout_and_fires_nothing() {
        let start = 100_000 * MS;
        let mut table = FakeTable::new(4);
        table.intervals = vec![100; 4];
        let mut fake = Fake {
            table,
            now: start,
            detector: Detector::new(settings(), 4, &nodes(&[1, 2]), start),
        };
        fake.detector.restore(1, Up, 100, 0);
        fake.detector.restore(2, Down, 100, 0);
        assert!(
            fake.advance_and_sweep(299).is_empty(),
            "no event within a timeout of the restart"
        );
        assert_eq!(
            fake.advance_and_sweep(2),
            vec![(1, Up, Down)],
            "and a silent node then goes down"
        );
    }

    #[test]
    fn transitions_carry_time_since_last_heartbeat() {
        let mut fake = Fake::new(&nodes(&[3]));
        fake.beat(3, 100, false);
        fake.advance_and_sweep(5);
        fake.now += 400 * MS;
        assert_eq!(
            fake.sweep(),
            vec![Transition {
                node_id: 3,
                from: Up,
                to: Down,
                since_last_heartbeat_ns: Some(405 * MS)
            }]
        );
    }

    #[test]
    fn the_last_slot_of_the_table_is_watched_like_any_other() {
        let mut fake = Fake::new(&nodes(&[7]));
        fake.beat(7, 100, false);
        assert_eq!(fake.advance_and_sweep(1), vec![(7, Unseen, Up)]);
        assert_eq!(fake.advance_and_sweep(400), vec![(7, Up, Down)]);
    }
}
