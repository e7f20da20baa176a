//! The liveness state machine: turns the node table the datapath writes into
//! per-node states and transitions, one sweep at a time.
//!
//! ```text
//!   unseen --heartbeat--> up --silent past suspect deadline--> suspect
//!                          ^                                     |
//!                          +------------- heartbeat -------------+
//!                          |                                     | silent past timeout
//!                          |                                     v
//!                          +---- `rise` heartbeats in a row ---- down
//!                          |                                     | came back, but went down
//!                          |                                     v more than flap_max times
//!                          +-- heard steadily for flap_stable -- flapping
//!   any state --leave heartbeat--> left --heartbeat--> up
//! ```
//!
//! `suspect` comes first: a node is suspected at its suspect deadline (the
//! timeout rule: one interval before the timeout; phi: when phi reaches
//! `suspect_phi`) and down at its timeout. A heartbeat clears a suspicion at
//! once; a down node must be heard `rise` times in a row (no silence past
//! its suspect deadline in between) to be up again. A node that went down
//! more than `flap_max` times within `flap_window` is held as `flapping`
//! when it comes back, until it has been heard steadily for `flap_stable`.
//! Only nodes in trouble have rise or flap bookkeeping (a map entry each).
//!
//! Time is the monitor's own monotonic clock (the kernel's `bpf_ktime_get_ns`
//! at arrival, compared with `CLOCK_MONOTONIC` now), never the sender's. A
//! node's timeout (how long it may stay silent) comes from one of two rules:
//!
//! - [`Rule::Timeout`]: `timeout_multiplier x interval`, where the interval
//!   is the node's configured one, else the one it advertises, else the
//!   default.
//! - [`Rule::Phi`]: phi accrual ([`crate::detect::phi`]) over the interval the
//!   datapath measures (`hb_common::table::intervals`): the silence after
//!   which phi reaches the threshold, `mean + pause + y x sd`. It changes
//!   only when a heartbeat arrives, so it is recomputed then (each new
//!   heartbeat of an up node takes the slow path once): O(1) per node and
//!   sweep, no transcendental function. Until a node has an interval
//!   sample, its mean is the interval it is expected to keep (configured,
//!   advertised or default) and its deviation the minimum.
//!
//! A sweep that starts more than `stall_ns` after the previous one means the
//! agent itself was stalled (a pause, an overloaded host): it then convicts
//! nobody until every node has had a full timeout to be heard again, as
//! after a restart.
//!
//! Built for millions of nodes: a sweep's fast pass (`detect/scan.rs`)
//! reads 12 bytes per node, front to back (the node's 8-byte seen word and
//! a 4-byte watch word of the detector's own), with no syscall, allocation,
//! division or branch per node. Only nodes that may change state (a live
//! node past its deadline or with a leave, any other node with a heartbeat
//! newer than the previous sweep) take the slow path, which reads the
//! node's cold record. The pass also finds the earliest deadline of the
//! others ([`Detector::next_look_ns`]): the sweep need not run before it.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicU64, Ordering},
};

use hb_common::table::{intervals, seen};
use serde::{Deserialize, Serialize};

use crate::detect::{
    phi::PhiDetector,
    scan::{self, Pass, Watch},
};

/// Where a node stands, as far as this monitor knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Silent past its suspect deadline, not yet its timeout.
    Suspect = 4,
    /// Back after going down too often: held down until heard steadily.
    Flapping = 5,
}

impl NodeState {
    /// Every state, in the order `hb status` and the metrics list them.
    pub const ALL: [NodeState; 6] = [
        NodeState::Unseen,
        NodeState::Up,
        NodeState::Suspect,
        NodeState::Down,
        NodeState::Flapping,
        NodeState::Left,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            NodeState::Unseen => "unseen",
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Left => "left",
            NodeState::Suspect => "suspect",
            NodeState::Flapping => "flapping",
        }
    }

    /// The state a watch word holds; an unwatched slot reads as unseen.
    pub(super) const fn from_bits(bits: u32) -> Self {
        match bits & 7 {
            1 => NodeState::Up,
            2 => NodeState::Down,
            3 => NodeState::Left,
            4 => NodeState::Suspect,
            5 => NodeState::Flapping,
            _ => NodeState::Unseen,
        }
    }

    /// The state numbered `value` (`NodeState as u8`), if any.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(NodeState::Unseen),
            1..=5 => Some(Self::from_bits(value as u32)),
            _ => None,
        }
    }

    /// Up or suspect: heard recently enough not to be down.
    pub const fn is_live(self) -> bool {
        matches!(self, NodeState::Up | NodeState::Suspect)
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
    /// How many heartbeats of the node were accepted.
    fn heartbeats(&self, node_id: u32) -> u64;
    /// A hint that the node's record and interval word will be read soon.
    fn prefetch(&self, _node_id: u32) {}
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
        /// Down at this detector's threshold.
        detector: PhiDetector,
        /// Suspect at this one's (a lower threshold).
        suspect: PhiDetector,
        /// Added to the mean interval; `None`: one mean interval (a lost
        /// heartbeat's worth of extra silence).
        acceptable_pause_ns: Option<u64>,
    },
}

/// Flap damping: a node that went down more than `max_flaps` times within
/// `window_ns` is held as flapping when it comes back, until heard steadily
/// for `stable_ns`. `max_flaps == 0` turns it off.
#[derive(Clone, Copy, Debug)]
pub struct FlapSettings {
    pub max_flaps: u32,
    pub window_ns: u64,
    pub stable_ns: u64,
}

/// When a node will be suspected and when declared down, as silence after
/// its last heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    pub suspect_ns: u64,
    pub down_ns: u64,
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
    /// Heartbeats in a row that bring a down node back up (at least 1).
    pub rise: u32,
    pub flap: FlapSettings,
}

impl DetectorSettings {
    /// The fixed timeout and nothing else: no stall guard, a node is up at
    /// its first heartbeat again, no flap damping (benchmarks, tests).
    pub const fn plain_timeout(default_interval_ns: u64, timeout_multiplier: u32) -> Self {
        DetectorSettings {
            default_interval_ns,
            timeout_multiplier,
            rule: Rule::Timeout,
            stall_ns: u64::MAX,
            rise: 1,
            flap: FlapSettings {
                max_flaps: 0,
                window_ns: 0,
                stable_ns: 0,
            },
        }
    }
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
pub const STORE_MARGIN_NS: u64 = 1_000_000;

/// The slow path asks for the record of the node this many candidates
/// ahead.
const PREFETCH_AHEAD: usize = 16;

/// Runs every watched node through the state machine.
#[derive(Debug)]
pub struct Detector {
    settings: DetectorSettings,
    /// One per node id (the table's size), what the fast pass reads:
    /// [`Watch::UNWATCHED`] for ids no configured node uses.
    watches: Vec<Watch>,
    /// One per node id: unconfigured ids stay unseen forever, since nothing
    /// records heartbeats for them.
    states: Vec<NodeState>,
    configured_interval_ns: HashMap<u32, u64>,
    /// Seen words above this are heartbeats no sweep has looked at yet.
    new_since_ns: u64,
    /// No node is convicted on silence measured from before this instant:
    /// the agent's start, so that nodes get a full timeout to be heard by a
    /// freshly started agent, unless the table recorded while no agent ran
    /// ([`trust_arrivals`](Self::trust_arrivals)); and the end of a stall.
    grace_floor_ns: u64,
    /// When this detector started: a node never heard (word 0) is not
    /// convicted on silence from before it.
    started_ns: u64,
    /// Ids the last sweep's fast pass set aside (kept to reuse the memory).
    candidates: Vec<u32>,
    /// When the previous sweep ran (0: none yet).
    last_sweep_ns: u64,
    /// See [`next_look_ns`](Self::next_look_ns).
    next_look_ns: u64,
    /// Down nodes heard again, on their way back up.
    rising: HashMap<u32, Rising>,
    /// Nodes that went down recently (flap damping).
    flaps: HashMap<u32, Flaps>,
    /// How many watched nodes are in each state (by `NodeState as usize`).
    counts: [usize; 6],
    /// Probed nodes (see [`Detector::set_probed`]); empty without probes.
    probed: HashSet<u32>,
}

/// A down node being heard again.
#[derive(Clone, Copy, Debug)]
struct Rising {
    /// The node's heartbeat count before the first of the run.
    heartbeats_before: u64,
    /// The last heartbeat of the run.
    last_arrival_ns: u64,
}

/// When a node went down lately, and since when a flapping one has been
/// heard without a silence.
#[derive(Clone, Debug, Default)]
struct Flaps {
    downs_ns: std::collections::VecDeque<u64>,
    steady_since_ns: u64,
    last_arrival_ns: u64,
}

/// One node's flap history as the state file keeps it (monotonic times).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlapHistory {
    pub id: u32,
    /// When it went down lately, oldest first.
    pub downs_ns: Vec<u64>,
    /// Flapping: since when it has been heard without a silence (0: not
    /// flapping).
    pub steady_since_ns: u64,
    pub last_arrival_ns: u64,
}

impl FlapHistory {
    /// Applies `f` to every time; a down that maps to 0 is dropped.
    pub fn move_times(&mut self, f: impl Fn(u64) -> u64) {
        self.downs_ns = self
            .downs_ns
            .iter()
            .map(|&t| f(t))
            .filter(|&t| t != 0)
            .collect();
        if self.steady_since_ns != 0 {
            self.steady_since_ns = f(self.steady_since_ns);
            self.last_arrival_ns = f(self.last_arrival_ns);
        }
    }

    /// Nothing left to remember.
    pub fn is_empty(&self) -> bool {
        self.downs_ns.is_empty() && self.steady_since_ns == 0
    }
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
            watches: vec![Watch::UNWATCHED; table_len as usize],
            states: vec![NodeState::Unseen; table_len as usize],
            configured_interval_ns,
            new_since_ns: 0,
            grace_floor_ns: now_ns,
            started_ns: now_ns,
            candidates: Vec::new(),
            last_sweep_ns: 0,
            next_look_ns: 0,
            rising: HashMap::new(),
            flaps: HashMap::new(),
            counts: [0; 6],
            probed: HashSet::new(),
        };
        detector.counts[NodeState::Unseen as usize] = nodes.len();
        for node in nodes {
            detector.watches[node.node_id as usize] = detector.watch_word(NodeState::Unseen, 0);
        }
        detector
    }

    pub fn settings(&self) -> &DetectorSettings {
        &self.settings
    }

    /// New settings (a reload). Nodes keep their states; their deadlines
    /// follow the new settings from their next look (a heartbeat, or the
    /// deadline they have now).
    pub fn set_settings(&mut self, settings: DetectorSettings) {
        let looked_at_new_up = self.looks_at_new_up();
        self.settings = settings;
        if self.looks_at_new_up() != looked_at_new_up {
            // The rule changed between timeout and phi: whether an up
            // node's heartbeats need a look changes with it.
            for id in 0..self.watches.len() {
                if self.states[id] == NodeState::Up && self.watches[id] != Watch::UNWATCHED {
                    let timeout = self.watches[id].timeout_ns();
                    self.watches[id] = self.watch_word(NodeState::Up, timeout);
                }
            }
        }
    }

    /// Whether every new heartbeat of an up node needs a look: the phi
    /// rule recomputes the node's deadlines then.
    #[inline]
    fn looks_at_new_up(&self) -> bool {
        matches!(self.settings.rule, Rule::Phi { .. })
    }

    /// The watch word of a node in `state` that needs a look after
    /// `timeout_ns` of silence (if live).
    #[inline]
    fn watch_word(&self, state: NodeState, timeout_ns: u64) -> Watch {
        Watch::new(state, timeout_ns, self.looks_at_new_up())
    }

    /// Starts watching a node added by a reload: unseen until heard, so it
    /// fires no event until it is. Its configured interval, if any, counts
    /// from now on; a node watched already only gets its interval updated.
    pub fn watch(&mut self, node: WatchedNode) {
        match node.interval_ns {
            Some(interval) => self.configured_interval_ns.insert(node.node_id, interval),
            None => self.configured_interval_ns.remove(&node.node_id),
        };
        if self.watches[node.node_id as usize] == Watch::UNWATCHED {
            self.counts[NodeState::Unseen as usize] += 1;
            self.states[node.node_id as usize] = NodeState::Unseen;
            self.watches[node.node_id as usize] = self.watch_word(NodeState::Unseen, 0);
        }
    }

    /// The nodes that are probed (pull monitoring): the phi rule judges them
    /// by their configured interval, never by a measured one, and their
    /// silence counts from this detector's start at the latest even when
    /// the table's arrival times are trusted (no probe went out before it).
    pub fn set_probed(&mut self, probed: HashSet<u32>) {
        self.probed = probed;
    }

    #[inline]
    fn is_probed(&self, id: u32) -> bool {
        !self.probed.is_empty() && self.probed.contains(&id)
    }

    /// Stops watching a node removed by a reload: no event, no count, and
    /// whatever it sends from now on is never looked at.
    pub fn unwatch(&mut self, id: u32) {
        if self.watches[id as usize] == Watch::UNWATCHED {
            return;
        }
        let state = self.states[id as usize] as usize;
        self.counts[state] = self.counts[state].saturating_sub(1);
        self.watches[id as usize] = Watch::UNWATCHED;
        self.states[id as usize] = NodeState::Unseen;
        self.configured_interval_ns.remove(&id);
        self.rising.remove(&id);
        self.flaps.remove(&id);
    }

    /// Restores what a previous run of the agent knew about node `id`: its
    /// state, the interval of its last heartbeat (0 if unknown) and its
    /// interval word, from which its deadlines are computed.
    pub fn restore(
        &mut self,
        id: u32,
        state: NodeState,
        advertised_interval_ms: u32,
        interval_word: u64,
    ) {
        let deadlines = self.deadlines_for(id, advertised_interval_ms, interval_word);
        self.set(id, state, deadlines);
    }

    /// The table recorded heartbeats while no agent ran (a pinned XDP
    /// datapath): the arrival times in it are true, and a node silent past
    /// its timeout is convicted at once rather than after a full timeout
    /// from this start. Nodes never heard still get one.
    pub fn trust_arrivals(&mut self) {
        self.grace_floor_ns = 0;
    }

    /// Heartbeats that arrived after this monotonic instant have not been
    /// looked at by a sweep yet.
    pub fn swept_until_ns(&self) -> u64 {
        self.new_since_ns
    }

    /// Restores [`swept_until_ns`](Self::swept_until_ns) from a previous
    /// run, so that a heartbeat it already looked at is not taken for a new
    /// one (a down node is not brought back by its own last heartbeat).
    pub fn set_swept_until(&mut self, ns: u64) {
        self.new_since_ns = ns;
    }

    /// The flap history of every node that has one.
    pub fn flap_history(&self) -> Vec<FlapHistory> {
        let mut out: Vec<FlapHistory> = self
            .flaps
            .iter()
            .map(|(&id, f)| FlapHistory {
                id,
                downs_ns: f.downs_ns.iter().copied().collect(),
                steady_since_ns: f.steady_since_ns,
                last_arrival_ns: f.last_arrival_ns,
            })
            .collect();
        out.sort_unstable_by_key(|f| f.id);
        out
    }

    /// Restores flap history saved by a previous run (watched nodes only).
    pub fn restore_flaps(&mut self, history: impl IntoIterator<Item = FlapHistory>) {
        for f in history {
            if self
                .watches
                .get(f.id as usize)
                .is_none_or(|w| *w == Watch::UNWATCHED)
            {
                continue;
            }
            self.flaps.insert(
                f.id,
                Flaps {
                    downs_ns: f.downs_ns.into(),
                    steady_since_ns: f.steady_since_ns,
                    last_arrival_ns: f.last_arrival_ns,
                },
            );
        }
    }

    /// How many watched nodes are in `state`.
    pub fn count(&self, state: NodeState) -> usize {
        self.counts[state as usize]
    }

    /// Puts node `id` in state `to` with `deadlines`, keeping the state
    /// counts.
    fn set(&mut self, id: u32, to: NodeState, deadlines: Deadlines) {
        let old = self.states[id as usize];
        self.counts[old as usize] = self.counts[old as usize].saturating_sub(1);
        self.counts[to as usize] += 1;
        self.states[id as usize] = to;
        self.watches[id as usize] = self.watch_word(to, Self::look_after(to, deadlines));
    }

    pub fn state(&self, id: u32) -> NodeState {
        self.states[id as usize]
    }

    /// When node `id` will be declared down if it stays silent; `None` if it
    /// is not up or suspect.
    pub fn down_at_ns<T: TableView + ?Sized>(&self, id: u32, table: &T) -> Option<u64> {
        self.state(id).is_live().then(|| {
            let word = table.seen_words()[id as usize].load(Ordering::Relaxed);
            let deadlines = self.deadlines(id, table);
            let arrival = seen::arrival_ns(word);
            let (heard_floor, unheard_floor) = self.floors();
            let floor = if arrival == 0 || self.is_probed(id) {
                unheard_floor
            } else {
                heard_floor
            };
            arrival.max(floor).saturating_add(deadlines.down_ns)
        })
    }

    /// Node `id`'s deadlines from what the table says about it now.
    #[inline]
    pub fn deadlines<T: TableView + ?Sized>(&self, id: u32, table: &T) -> Deadlines {
        match self.settings.rule {
            Rule::Timeout => self.deadlines_for(id, table.advertised_interval_ms(id), 0),
            Rule::Phi { .. } => {
                let interval_word = table.interval_word(id);
                let advertised = if intervals::mean_us(interval_word) == 0 {
                    table.advertised_interval_ms(id)
                } else {
                    0 // not read: the measured interval decides
                };
                self.deadlines_for(id, advertised, interval_word)
            }
        }
    }

    /// Node `id`'s deadlines when it advertises `advertised_ms` and its
    /// measured interval is `interval_word`, by the detector's rule. The
    /// timeout rule suspects a node one interval before its timeout.
    #[inline]
    pub fn deadlines_for(&self, id: u32, advertised_ms: u32, interval_word: u64) -> Deadlines {
        // A probed node is judged by its configured (probe) interval: probe
        // answers feed no interval estimate, and a hybrid node's estimate is
        // its sender's, which must not convict it while its probe answers.
        let interval_word = if self.is_probed(id) { 0 } else { interval_word };
        if let Rule::Phi {
            detector,
            suspect,
            acceptable_pause_ns,
        } = self.settings.rule
        {
            // No sample yet: the interval the node is expected to keep,
            // with no spread (the minimum deviation applies).
            let (mean_us, mad_us) = match intervals::mean_us(interval_word) {
                0 => (
                    u32::try_from(self.interval_ns(id, advertised_ms) / 1_000).unwrap_or(u32::MAX),
                    0,
                ),
                mean_us => (mean_us, intervals::mad_us(interval_word)),
            };
            let pause = acceptable_pause_ns.unwrap_or(u64::from(mean_us) * 1_000);
            let at = |phi: PhiDetector| {
                phi.deadline_ns(mean_us, mad_us)
                    .map(|deadline| deadline.saturating_add(pause).max(MIN_INTERVAL_NS))
            };
            if let (Some(suspect_ns), Some(down_ns)) = (at(suspect), at(detector)) {
                return Deadlines {
                    suspect_ns: suspect_ns.min(down_ns),
                    down_ns,
                };
            }
        }
        let interval = self.interval_ns(id, advertised_ms);
        let down_ns = interval.saturating_mul(u64::from(self.settings.timeout_multiplier));
        Deadlines {
            suspect_ns: down_ns.saturating_sub(interval).max(interval.min(down_ns)),
            down_ns,
        }
    }

    /// The phi of node `id` after `silence_ns` without a heartbeat, if the
    /// detector uses phi and the node has an interval sample.
    pub fn phi(&self, silence_ns: u64, interval_word: u64) -> Option<f64> {
        let Rule::Phi {
            detector,
            acceptable_pause_ns,
            ..
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

    /// The interval of node `id`: the configured one, else the advertised
    /// one (clamped), else the default.
    fn interval_ns(&self, id: u32, advertised_ms: u32) -> u64 {
        match self.configured_interval_ns.get(&id) {
            Some(&configured) => configured,
            None if advertised_ms != 0 => {
                (u64::from(advertised_ms) * 1_000_000).clamp(MIN_INTERVAL_NS, MAX_INTERVAL_NS)
            }
            None => self.settings.default_interval_ns,
        }
    }

    /// The silence the watch word keeps for a node in `state`.
    #[inline]
    fn look_after(state: NodeState, deadlines: Deadlines) -> u64 {
        match state {
            NodeState::Up => deadlines.suspect_ns,
            _ => deadlines.down_ns,
        }
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
        let pass = Pass {
            now_ns,
            new_since_ns: self.new_since_ns,
        };
        let mut candidates = std::mem::take(&mut self.candidates);
        candidates.clear();
        let mut next_look = scan::scan(words, &self.watches, pass, &mut candidates);
        for (k, &id) in candidates.iter().enumerate() {
            // Most of a slow path is the wait for the node's record: ask
            // for the ones a few nodes ahead now.
            if let Some(&ahead) = candidates.get(k + PREFETCH_AHEAD) {
                table.prefetch(ahead);
            }
            if let Some(look) = self.examine(id, now_ns, table, out) {
                next_look = next_look.min(look);
            }
        }
        self.candidates = candidates;
        self.new_since_ns = now_ns.saturating_sub(STORE_MARGIN_NS);
        self.next_look_ns = next_look;
        stalled
    }

    /// The first monotonic instant at which a node may change state
    /// without a new heartbeat (just past an up node's suspect deadline, a
    /// suspect one's timeout), as of the last sweep; `u64::MAX` if none can.
    /// Heartbeats only ever move it later, so a sweep at this instant is
    /// never late; what a new heartbeat changes (a down node heard, a
    /// leave) waits for the next sweep.
    pub fn next_look_ns(&self) -> u64 {
        self.next_look_ns
    }

    /// The instants silence is measured from at the latest: for a node
    /// heard (`.0`: the grace floor) and for one never heard (`.1`: the
    /// grace floor, at the latest this detector's start).
    #[inline]
    fn floors(&self) -> (u64, u64) {
        (
            self.grace_floor_ns,
            self.grace_floor_ns.max(self.started_ns),
        )
    }

    /// The slow path for one node the fast pass set aside. Returns when
    /// the node needs its next look if it stays silent (exactly), if it is
    /// live.
    fn examine<T: TableView + ?Sized>(
        &mut self,
        id: u32,
        now_ns: u64,
        table: &T,
        out: &mut Vec<Transition>,
    ) -> Option<u64> {
        let word = table.seen_words()[id as usize].load(Ordering::Relaxed);
        let arrival = seen::arrival_ns(word);
        let from = self.states[id as usize];
        let deadlines = self.deadlines(id, table);
        // A restored up node may not have been heard yet (word 0): its
        // silence counts from the grace floor, at the latest from the start.
        // So does a probed node's: nothing probed it before this start, so
        // a silence from before it (an agent restart longer than its
        // timeout) is the agent's, not the node's.
        let (heard_floor, unheard_floor) = self.floors();
        let floor = if arrival == 0 || self.is_probed(id) {
            unheard_floor
        } else {
            heard_floor
        };
        let silent_since = arrival.max(floor);
        let silence = now_ns.saturating_sub(silent_since);
        // Silence strictly past a deadline changes the state: the next look
        // is the first instant past it.
        let past = |deadline_ns: u64| silent_since.saturating_add(deadline_ns).saturating_add(1);
        if from == NodeState::Up && !seen::is_leave(word) && silence <= deadlines.suspect_ns {
            // Still up, heard (the phi rule recomputes its deadlines then)
            // or looked at early (the watch word's timeout is rounded
            // down): only its next look moves.
            self.watches[id as usize] = self.watch_word(NodeState::Up, deadlines.suspect_ns);
            return Some(past(deadlines.suspect_ns));
        }
        let heard = word > self.new_since_ns;
        let to = match from {
            _ if seen::is_leave(word) => NodeState::Left,
            NodeState::Up | NodeState::Suspect if silence > deadlines.down_ns => {
                if from == NodeState::Up {
                    // Suspected on the way down, in the same sweep.
                    self.push(out, id, NodeState::Up, NodeState::Suspect, now_ns, arrival);
                }
                self.went_down(id, now_ns);
                NodeState::Down
            }
            NodeState::Up | NodeState::Suspect if silence > deadlines.suspect_ns => {
                NodeState::Suspect
            }
            NodeState::Up | NodeState::Suspect => NodeState::Up,
            NodeState::Down if heard => self.rise(id, arrival, deadlines, table),
            NodeState::Flapping if heard => self.steady(id, now_ns, arrival, deadlines),
            NodeState::Unseen | NodeState::Left if heard => NodeState::Up,
            other => other,
        };
        self.set(id, to, deadlines);
        let reported_from = if from == NodeState::Up && to == NodeState::Down {
            NodeState::Suspect
        } else {
            from
        };
        if to != reported_from {
            self.push(out, id, reported_from, to, now_ns, arrival);
        }
        to.is_live().then(|| past(Self::look_after(to, deadlines)))
    }

    fn push(
        &self,
        out: &mut Vec<Transition>,
        node_id: u32,
        from: NodeState,
        to: NodeState,
        now_ns: u64,
        arrival: u64,
    ) {
        out.push(Transition {
            node_id,
            from,
            to,
            since_last_heartbeat_ns: (arrival != 0).then(|| now_ns.saturating_sub(arrival)),
        });
    }

    /// Flap bookkeeping for a node going down.
    fn went_down(&mut self, id: u32, now_ns: u64) {
        self.rising.remove(&id);
        if self.settings.flap.max_flaps == 0 {
            return;
        }
        let flaps = self.flaps.entry(id).or_default();
        flaps.downs_ns.push_back(now_ns);
        let window = self.settings.flap.window_ns;
        while flaps
            .downs_ns
            .front()
            .is_some_and(|&at| now_ns.saturating_sub(at) > window)
        {
            flaps.downs_ns.pop_front();
        }
    }

    /// A down node heard again: up after `rise` heartbeats in a row, or
    /// flapping if it went down too often lately.
    fn rise<T: TableView + ?Sized>(
        &mut self,
        id: u32,
        arrival: u64,
        deadlines: Deadlines,
        table: &T,
    ) -> NodeState {
        let heartbeats = table.heartbeats(id);
        let rising = self.rising.entry(id).or_insert(Rising {
            heartbeats_before: heartbeats.saturating_sub(1),
            last_arrival_ns: arrival,
        });
        // A silence past the suspect deadline breaks the run.
        if arrival.saturating_sub(rising.last_arrival_ns) > deadlines.suspect_ns {
            rising.heartbeats_before = heartbeats.saturating_sub(1);
        }
        rising.last_arrival_ns = arrival;
        if heartbeats.saturating_sub(rising.heartbeats_before)
            < u64::from(self.settings.rise.max(1))
        {
            return NodeState::Down;
        }
        self.rising.remove(&id);
        let flap = self.settings.flap;
        match self.flaps.get_mut(&id) {
            Some(flaps) if flap.max_flaps > 0 && flaps.downs_ns.len() > flap.max_flaps as usize => {
                flaps.steady_since_ns = arrival;
                flaps.last_arrival_ns = arrival;
                NodeState::Flapping
            }
            _ => NodeState::Up,
        }
    }

    /// A flapping node heard again: up once heard without a silence past its
    /// suspect deadline for `flap.stable_ns`.
    fn steady(&mut self, id: u32, now_ns: u64, arrival: u64, deadlines: Deadlines) -> NodeState {
        let flaps = self.flaps.entry(id).or_default();
        if arrival.saturating_sub(flaps.last_arrival_ns) > deadlines.suspect_ns {
            flaps.steady_since_ns = arrival;
        }
        flaps.last_arrival_ns = arrival;
        if now_ns.saturating_sub(flaps.steady_since_ns) < self.settings.flap.stable_ns {
            return NodeState::Flapping;
        }
        self.flaps.remove(&id);
        NodeState::Up
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
        heartbeats: Vec<u64>,
    }

    impl FakeTable {
        fn new(len: usize) -> Self {
            FakeTable {
                seen: (0..len).map(|_| AtomicU64::new(0)).collect(),
                intervals: vec![0; len],
                measured: vec![0; len],
                heartbeats: vec![0; len],
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
        fn heartbeats(&self, node_id: u32) -> u64 {
            self.heartbeats[node_id as usize]
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
            self.table.heartbeats[id as usize] += 1;
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

        /// Like `advance_and_sweep`, without the suspicions: the tests of
        /// the timeout itself look at downs and ups (suspicions have their
        /// own tests).
        fn decisions(&mut self, ms: u64) -> Vec<(u32, NodeState, NodeState)> {
            self.advance_and_sweep(ms)
                .into_iter()
                .filter(|&(_, _, to)| to != Suspect)
                .collect()
        }
    }

    fn settings() -> DetectorSettings {
        DetectorSettings {
            stall_ns: 10_000 * MS,
            ..DetectorSettings::plain_timeout(100 * MS, 3)
        }
    }

    /// Phi with threshold 8, a 10 ms minimum deviation and a fixed 50 ms
    /// acceptable pause.
    fn phi_settings() -> DetectorSettings {
        DetectorSettings {
            rule: Rule::Phi {
                detector: PhiDetector::new(crate::detect::phi::PhiSettings {
                    threshold: 8.0,
                    min_std_dev: std::time::Duration::from_millis(10),
                    acceptable_pause: std::time::Duration::ZERO,
                })
                .unwrap(),
                suspect: PhiDetector::new(crate::detect::phi::PhiSettings {
                    threshold: 3.0,
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
    fn phi_judges_a_probed_node_by_its_configured_interval_not_its_senders() {
        let nodes = [WatchedNode {
            node_id: 1,
            interval_ns: Some(1_000 * MS),
        }];
        let mut detector = Detector::new(phi_settings(), 4, &nodes, 0);
        // The sender's measured interval: 100 ms, steady.
        let sender = intervals::word(100_000, 1_000);
        let by_sender = detector.deadlines_for(1, 100, sender);
        assert!(by_sender.down_ns < 300 * MS, "{by_sender:?}");
        detector.set_probed([1].into());
        let by_probe = detector.deadlines_for(1, 100, sender);
        assert!(by_probe.down_ns > 1_000 * MS, "{by_probe:?}");
        assert_eq!(by_probe, detector.deadlines_for(1, 100, 0));
    }

    /// Sweeps at the instants `next_look_ns` names, as the sweep thread
    /// does, from `now` until `until`; the transitions and when they came.
    fn follow_deadlines(fake: &mut Fake, until: u64) -> Vec<(u64, NodeState, NodeState)> {
        let mut seen: Vec<_> = fake
            .sweep()
            .iter()
            .map(|t| (fake.now, t.from, t.to))
            .collect();
        let mut wakes = 0;
        while fake.now < until {
            wakes += 1;
            assert!(wakes < 100, "woken {wakes} times: a deadline in the past?");
            let next = fake.detector.next_look_ns();
            assert!(
                next >= fake.now,
                "next look {next} before the sweep at {}",
                fake.now
            );
            fake.now = next.min(until);
            seen.extend(fake.sweep().iter().map(|t| (fake.now, t.from, t.to)));
        }
        seen
    }

    #[test]
    fn the_next_look_is_the_earliest_deadline_and_never_late() {
        let mut fake = Fake::new(&nodes(&[1, 2]));
        // Node 1 advertises 100 ms (suspect at 200 ms, down at 300 ms),
        // node 2 advertises 50 ms (150 ms, 200 ms), both heard now.
        let heard = fake.now;
        fake.beat(1, 100, false);
        fake.beat(2, 50, false);
        assert_eq!(fake.advance_and_sweep(1).len(), 2, "both up");
        let next = fake.detector.next_look_ns();
        assert_eq!(
            next,
            heard + 100 * MS + 1,
            "just past node 2's suspect deadline"
        );
        // A sweep that finds both quiet (the fast pass alone) may name it
        // up to one watch unit (2^20 ns) early, never late.
        fake.now += 10 * MS;
        assert!(fake.sweep().is_empty());
        let early = (heard + 100 * MS + 1) - fake.detector.next_look_ns();
        assert!(early < 1 << 20, "{early} ns early");
        // Swept only when the next look says, the transitions come at their
        // deadlines to the nanosecond (silence strictly past them).
        let seen = follow_deadlines(&mut fake, heard + 400 * MS);
        assert_eq!(
            seen,
            vec![
                (heard + 100 * MS + 1, Up, Suspect),
                (heard + 150 * MS + 1, Suspect, Down),
                (heard + 200 * MS + 1, Up, Suspect),
                (heard + 300 * MS + 1, Suspect, Down),
            ]
            .into_iter()
            .zip([2, 2, 1, 1])
            .map(|((at, from, to), _)| (at, from, to))
            .collect::<Vec<_>>()
        );
        assert_eq!(
            fake.detector.next_look_ns(),
            u64::MAX,
            "nothing left to time"
        );
    }

    #[test]
    fn the_next_look_waits_for_the_grace_period() {
        // A restored up node never heard: a full timeout from the start,
        // not a wake-up at every sweep until then.
        let mut fake = Fake::new(&nodes(&[3]));
        let start = fake.now;
        fake.detector.restore(3, Up, 100, 0);
        let seen = follow_deadlines(&mut fake, start + 1_000 * MS);
        assert_eq!(
            seen,
            vec![
                (start + 200 * MS + 1, Up, Suspect),
                (start + 300 * MS + 1, Suspect, Down)
            ]
        );
    }

    #[test]
    fn states_are_counted() {
        let mut fake = Fake::new(&nodes(&[1, 2, 3]));
        assert_eq!(fake.detector.count(Unseen), 3);
        fake.beat(1, 100, false);
        fake.beat(2, 100, false);
        fake.advance_and_sweep(1);
        assert_eq!(
            (fake.detector.count(Up), fake.detector.count(Unseen)),
            (2, 1)
        );
        fake.advance_and_sweep(150);
        fake.beat(2, 100, false);
        fake.advance_and_sweep(100);
        assert_eq!(
            (fake.detector.count(Up), fake.detector.count(Suspect)),
            (1, 1)
        );
        fake.advance_and_sweep(200);
        assert_eq!(
            (fake.detector.count(Down), fake.detector.count(Suspect)),
            (1, 1)
        );
        assert_eq!(fake.detector.count(Up) + fake.detector.count(Unseen), 1);
    }

    #[test]
    fn suspect_comes_first_and_a_heartbeat_clears_it() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 100, false);
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Unseen, Up)]);
        // Suspect one interval before the 300 ms timeout.
        assert!(fake.advance_and_sweep(199).is_empty());
        assert_eq!(fake.advance_and_sweep(2), vec![(1, Up, Suspect)]);
        fake.beat(1, 100, false);
        assert_eq!(fake.advance_and_sweep(1), vec![(1, Suspect, Up)]);
        assert_eq!(fake.advance_and_sweep(250), vec![(1, Up, Suspect)]);
        assert_eq!(fake.advance_and_sweep(100), vec![(1, Suspect, Down)]);
        assert!(fake.advance_and_sweep(1_000).is_empty(), "down once");
    }

    fn damped() -> DetectorSettings {
        DetectorSettings {
            rise: 3,
            flap: FlapSettings {
                max_flaps: 2,
                window_ns: 60_000 * MS,
                stable_ns: 1_000 * MS,
            },
            ..settings()
        }
    }

    #[test]
    fn a_down_node_is_up_again_only_after_rise_heartbeats_in_a_row() {
        let mut fake = Fake::with(damped(), &nodes(&[1]));
        fake.beat(1, 100, false);
        assert_eq!(fake.decisions(1), vec![(1, Unseen, Up)], "first contact");
        assert_eq!(fake.decisions(400), vec![(1, Suspect, Down)]);
        for _ in 0..2 {
            fake.beat(1, 100, false);
            assert!(fake.decisions(100).is_empty(), "not yet: rise is 3");
        }
        // A silence past the suspect deadline breaks the run.
        fake.now += 500 * MS;
        for _ in 0..2 {
            fake.beat(1, 100, false);
            assert!(fake.decisions(100).is_empty(), "the run started over");
        }
        fake.beat(1, 100, false);
        assert_eq!(fake.decisions(100), vec![(1, Down, Up)]);
    }

    #[test]
    fn a_node_that_keeps_going_down_is_held_as_flapping_until_steady() {
        let mut fake = Fake::with(damped(), &nodes(&[1]));
        let cycle = |fake: &mut Fake| {
            assert_eq!(fake.decisions(400), vec![(1, Suspect, Down)]);
            let mut seen = Vec::new();
            for _ in 0..3 {
                fake.beat(1, 100, false);
                seen.extend(fake.decisions(100));
            }
            seen
        };
        fake.beat(1, 100, false);
        fake.decisions(1);
        assert_eq!(cycle(&mut fake), vec![(1, Down, Up)], "flap 1");
        assert_eq!(cycle(&mut fake), vec![(1, Down, Up)], "flap 2");
        assert_eq!(
            cycle(&mut fake),
            vec![(1, Down, Flapping)],
            "down a third time within the window: more than 2 flaps"
        );
        // Silent while flapping: no new event, still held.
        assert!(fake.decisions(2_000).is_empty());
        assert_eq!(fake.detector.state(1), Flapping);
        // Heard steadily for the stable time (1 s): up.
        let mut seen = Vec::new();
        for _ in 0..12 {
            fake.beat(1, 100, false);
            seen.extend(fake.decisions(100));
        }
        assert_eq!(seen, vec![(1, Flapping, Up)]);
        assert_eq!(fake.detector.state(1), Up);
    }

    #[test]
    fn a_restored_suspect_node_stays_suspect_and_gets_a_full_timeout() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.detector.restore(1, Suspect, 100, 0);
        assert_eq!(fake.detector.state(1), Suspect);
        assert!(
            fake.advance_and_sweep(299).is_empty(),
            "its suspicion is not repeated"
        );
        assert_eq!(fake.advance_and_sweep(2), vec![(1, Suspect, Down)]);
    }

    #[test]
    fn trusted_arrivals_convict_at_once_and_old_heartbeats_are_not_news() {
        let start = 100_000 * MS;
        let mut table = FakeTable::new(8);
        table.intervals = vec![100; 8];
        let heard = |table: &FakeTable, id: usize, at: u64| {
            table.seen[id].store(seen::word(at, false), Ordering::Relaxed);
        };
        // Recorded while no agent ran: 1 fell silent 250 ms before this
        // start, 2 kept beating, 3 was down and stayed silent, 4 was down and
        // came back after the last sweep of the previous run, 5 was restored
        // up but never heard (a new slot).
        heard(&table, 1, start - 250 * MS);
        heard(&table, 2, start - 20 * MS);
        heard(&table, 3, start - 5_000 * MS);
        heard(&table, 4, start - 30 * MS);
        table.heartbeats = vec![1; 8];
        let mut fake = Fake {
            table,
            now: start,
            detector: Detector::new(settings(), 8, &nodes(&[1, 2, 3, 4, 5]), start),
        };
        for (id, state) in [(1, Up), (2, Up), (3, Down), (4, Down), (5, Up)] {
            fake.detector.restore(id, state, 100, 0);
        }
        fake.detector.trust_arrivals();
        fake.detector.set_swept_until(start - 1_000 * MS);
        let first = fake.advance_and_sweep(60);
        assert_eq!(
            first,
            vec![(1, Up, Suspect), (1, Suspect, Down), (4, Down, Up)],
            "1 is down 310 ms after its last heartbeat, not a timeout after the start"
        );
        // Each then goes down a timeout after its own last heartbeat; 5
        // (never heard) a timeout after the start.
        assert_eq!(fake.decisions(215), vec![(4, Suspect, Down)]);
        assert_eq!(fake.decisions(10), vec![(2, Suspect, Down)]);
        assert_eq!(fake.decisions(20), vec![(5, Suspect, Down)]);
    }

    #[test]
    fn a_probed_node_is_not_convicted_for_a_silence_from_before_the_start() {
        let start = 100_000 * MS;
        let mut table = FakeTable::new(8);
        table.intervals = vec![100; 8];
        // Both fell silent 250 ms before this start (timeout 300 ms): 1
        // sends heartbeats (recorded throughout), 2 is probed (nobody
        // probed it while no agent ran).
        for id in [1, 2] {
            table.seen[id].store(seen::word(start - 250 * MS, false), Ordering::Relaxed);
        }
        table.heartbeats = vec![1; 8];
        let mut fake = Fake {
            table,
            now: start,
            detector: Detector::new(settings(), 8, &nodes(&[1, 2]), start),
        };
        for id in [1, 2] {
            fake.detector.restore(id, Up, 100, 0);
        }
        fake.detector.set_probed([2].into());
        fake.detector.trust_arrivals();
        assert_eq!(
            fake.advance_and_sweep(60),
            vec![(1, Up, Suspect), (1, Suspect, Down)]
        );
        assert_eq!(
            fake.detector.down_at_ns(2, &fake.table),
            Some(start + 300 * MS),
            "a timeout from the start"
        );
        assert_eq!(fake.decisions(200), vec![], "suspect at most");
        assert_eq!(fake.decisions(50), vec![(2, Suspect, Down)]);
    }

    #[test]
    fn phi_uses_the_measured_interval_once_there_is_one() {
        let mut fake = Fake::with(phi_settings(), &nodes(&[1]));
        // No sample yet: the advertised 200 ms, the minimum deviation:
        // 200 + 50 + 5.226 x 10 = 302.26 ms.
        fake.beat(1, 200, false);
        assert_eq!(fake.decisions(1), vec![(1, Unseen, Up)]);
        assert_eq!(
            fake.detector.deadlines(1, &fake.table).down_ns.div_ceil(MS),
            303
        );
        // Measured 100 ms, deviation 4 ms (sd 5 ms, floored to 10 ms):
        // 100 + 50 + 5.226 x 10 = 202.26 ms, recomputed on the heartbeat.
        fake.table.measured[1] = intervals::word(100_000, 4_000);
        fake.beat(1, 100, false);
        assert!(fake.decisions(1).is_empty());
        assert_eq!(
            fake.detector.deadlines(1, &fake.table).down_ns.div_ceil(MS),
            203
        );
        assert!(fake.decisions(201).is_empty());
        assert_eq!(fake.decisions(2), vec![(1, Suspect, Down)]);
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
        let steady = fake.detector.deadlines(1, &fake.table).down_ns;
        // The sender gets jittery: a mean absolute deviation of 40 ms.
        fake.table.measured[1] = intervals::word(100_000, 40_000);
        assert!(fake.beat_for(1, 100, 200).is_empty());
        let jittery = fake.detector.deadlines(1, &fake.table).down_ns;
        assert!(jittery > steady + 200 * MS, "{steady} -> {jittery}");
        // And calms down again: the deadline shrinks back with the next
        // heartbeat, not only when the old deadline passes.
        fake.table.measured[1] = intervals::word(100_000, 4_000);
        assert!(fake.beat_for(1, 100, 100).is_empty());
        assert_eq!(fake.detector.deadlines(1, &fake.table).down_ns, steady);
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
        assert_eq!(fake.decisions(1), vec![(1, Unseen, Up), (2, Unseen, Up)]);
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
        assert!(fake.decisions(299).is_empty());
        fake.beat(1, 100, false);
        assert_eq!(
            fake.decisions(2),
            vec![(1, Suspect, Up), (2, Suspect, Down)],
            "node 1 was only suspected (its heartbeats are 299 ms apart)"
        );
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
    fn watch_words_say_what_needs_a_look() {
        let settings = settings();
        let detector = Detector::new(settings, 1, &[], 0);
        for state in [Unseen, Down, Left, Flapping] {
            assert!(!detector.watch_word(state, 300 * MS).is_live(), "{state}");
        }
        for state in [Up, Suspect] {
            let watch = detector.watch_word(state, 300 * MS);
            assert!(watch.is_live(), "{state}");
            let units = (300 * MS) >> 20;
            assert_eq!(watch.timeout_ns(), units << 20, "rounded down, never late");
            assert!(300 * MS - watch.timeout_ns() < 1 << 20);
        }
        assert!(
            detector.watch_word(Up, u64::MAX).timeout_ns() > 10 * 24 * 3600 * 1_000_000_000,
            "a huge timeout saturates at 13 days, not overflows"
        );
        assert_ne!(detector.watch_word(Up, 0), Watch::UNWATCHED);
    }

    #[test]
    fn never_seen_node_stays_unseen_without_events() {
        let mut fake = Fake::new(&nodes(&[1]));
        assert!(fake.decisions(10_000).is_empty());
        assert_eq!(fake.detector.state(1), Unseen);
    }

    #[test]
    fn up_down_up_with_advertised_interval() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 100, false);
        assert_eq!(fake.decisions(1), vec![(1, Unseen, Up)]);
        // Timeout = 3 x 100 ms from the last heartbeat, which was 1 ms ago.
        assert!(
            fake.decisions(298).is_empty(),
            "299 ms of silence is within timeout"
        );
        assert!(
            fake.decisions(1).is_empty(),
            "exactly at the deadline is not past it"
        );
        assert_eq!(fake.decisions(1), vec![(1, Suspect, Down)]);
        assert!(fake.decisions(5_000).is_empty(), "down is reported once");
        fake.beat(1, 100, false);
        assert_eq!(fake.decisions(1), vec![(1, Down, Up)]);
    }

    #[test]
    fn a_reload_watches_added_nodes_and_forgets_removed_ones_without_events() {
        let mut fake = Fake::new(&nodes(&[1, 2]));
        fake.beat(1, 100, false);
        fake.beat(2, 100, false);
        assert_eq!(fake.decisions(1), vec![(1, Unseen, Up), (2, Unseen, Up)]);
        // Node 3 is not watched: its heartbeats are never looked at.
        fake.beat(3, 100, false);
        assert!(fake.decisions(1).is_empty());
        assert_eq!(fake.detector.count(Up), 2);

        // Removed while up: no event, not counted, silent for ever after.
        fake.detector.unwatch(2);
        assert_eq!(fake.detector.count(Up), 1);
        fake.beat(1, 100, false);
        assert!(fake.decisions(1).is_empty());
        assert!(fake.decisions(1_000).iter().all(|&(id, _, _)| id == 1));

        // Added: unseen (counted) until its next heartbeat, then up.
        fake.detector.watch(WatchedNode {
            node_id: 3,
            interval_ns: None,
        });
        assert_eq!(fake.detector.count(Unseen), 1);
        fake.detector.watch(WatchedNode {
            node_id: 3,
            interval_ns: None,
        });
        assert_eq!(fake.detector.count(Unseen), 1, "watching twice counts once");
        fake.beat(3, 100, false);
        assert_eq!(fake.decisions(1), vec![(3, Unseen, Up)]);
        assert_eq!(
            fake.detector.state(2),
            Unseen,
            "an unwatched slot reads unseen"
        );
    }

    #[test]
    fn regular_heartbeats_keep_a_node_up() {
        let mut fake = Fake::new(&nodes(&[1, 2]));
        for round in 0..100 {
            fake.beat(1, 100, false);
            fake.beat(2, 100, false);
            let events = fake.advance_and_sweep(150);
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
        fake.decisions(0);
        assert!(
            fake.decisions(2_900).is_empty(),
            "timeout is 3 x 1 s, not 3 x 100 ms"
        );
        assert_eq!(fake.decisions(200), vec![(1, Suspect, Down)]);
    }

    #[test]
    fn default_interval_applies_when_nothing_is_advertised() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 0, false);
        fake.decisions(0);
        assert!(fake.decisions(300).is_empty());
        assert_eq!(fake.decisions(1), vec![(1, Suspect, Down)]);
    }

    #[test]
    fn absurd_advertised_interval_is_clamped() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 1, false); // 1 ms: clamped up to 10 ms, timeout 30 ms
        fake.decisions(0);
        assert!(fake.decisions(30).is_empty());
        assert_eq!(fake.decisions(1), vec![(1, Suspect, Down)]);
    }

    #[test]
    fn a_longer_advertised_interval_is_honoured_before_convicting() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 100, false);
        fake.decisions(0);
        // The sender now advertises 1 s (its next heartbeat says so).
        fake.beat(1, 1_000, false);
        assert!(fake.decisions(2_000).is_empty(), "timeout is now 3 s");
        assert_eq!(fake.decisions(1_001), vec![(1, Suspect, Down)]);
    }

    #[test]
    fn graceful_leave_is_left_not_down_and_a_new_heartbeat_brings_it_back() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 100, false);
        fake.decisions(1);
        fake.beat(1, 100, true);
        assert_eq!(fake.decisions(1), vec![(1, Up, Left)]);
        assert!(
            fake.decisions(60_000).is_empty(),
            "a node that left is never declared down"
        );
        fake.beat(1, 100, false);
        assert_eq!(fake.decisions(1), vec![(1, Left, Up)]);
    }

    #[test]
    fn a_down_node_that_leaves_goes_to_left() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 100, false);
        fake.decisions(1);
        assert_eq!(fake.decisions(400), vec![(1, Suspect, Down)]);
        fake.beat(1, 100, true);
        assert_eq!(fake.decisions(1), vec![(1, Down, Left)]);
    }

    #[test]
    fn a_heartbeat_landing_just_before_the_sweep_is_not_missed() {
        let mut fake = Fake::new(&nodes(&[1]));
        fake.beat(1, 100, false);
        fake.decisions(1);
        assert_eq!(fake.decisions(400), vec![(1, Suspect, Down)]);
        // Stamped within the store margin before the previous sweep's start,
        // but only visible now.
        fake.table.seen[1].store(
            seen::word(fake.now - STORE_MARGIN_NS / 2, false),
            Ordering::Relaxed,
        );
        assert_eq!(fake.decisions(1), vec![(1, Down, Up)]);
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
            fake.decisions(299).is_empty(),
            "no event within a timeout of the restart"
        );
        assert_eq!(
            fake.decisions(2),
            vec![(1, Suspect, Down)],
            "and a silent node then goes down"
        );
    }

    #[test]
    fn transitions_carry_time_since_last_heartbeat() {
        let mut fake = Fake::new(&nodes(&[3]));
        fake.beat(3, 100, false);
        fake.decisions(5);
        fake.now += 400 * MS;
        assert_eq!(
            fake.sweep(),
            vec![
                Transition {
                    node_id: 3,
                    from: Up,
                    to: Suspect,
                    since_last_heartbeat_ns: Some(405 * MS)
                },
                Transition {
                    node_id: 3,
                    from: Suspect,
                    to: Down,
                    since_last_heartbeat_ns: Some(405 * MS)
                }
            ],
            "suspected and down in the same sweep"
        );
    }

    #[test]
    fn the_last_slot_of_the_table_is_watched_like_any_other() {
        let mut fake = Fake::new(&nodes(&[7]));
        fake.beat(7, 100, false);
        assert_eq!(fake.decisions(1), vec![(7, Unseen, Up)]);
        assert_eq!(fake.decisions(400), vec![(7, Suspect, Down)]);
    }
}
