//! The brake on mass failure: when a large share of the cluster goes silent
//! at once, hb suspects its own side (its link, a partition, its own pause)
//! rather than the nodes, says so once (`partition-suspected`), and holds
//! back `down` actions until the picture is clear.
//!
//! One monitor cannot tell "60 nodes died in the same second" from "the
//! monitor lost its uplink": both look like 60 heartbeats stopping. The
//! first is rare; the second (a switch port, a routing change, a paused VM,
//! a saturated NIC) is not, and acting on it (pulling 60 nodes out of a
//! load balancer, promoting 60 standbys) turns a monitoring outage into a
//! service outage. So hb treats a *correlated* mass silence as evidence
//! against itself, the way Kubernetes' node lifecycle controller stops
//! evicting pods when a zone goes dark \[1\].
//!
//! The module is pure: no clock, no I/O, no logging. The agent calls
//! [`Brake::sweep`] once per sweep with the monotonic time and the sweep's
//! changes, then asks [`Brake::admit_down`] before running a node's `down`
//! actions and [`Brake::admit_up`] before running its `up` actions.
//!
//! # Terms
//!
//! - A node is **silent** from the sweep that reports it as
//!   [`Change::Silent`] (it stopped being heard: up → down, or up → a
//!   suspicion state that precedes down) until a sweep reports it as
//!   [`Change::Heard`] (it is heard again: → up, or a graceful leave).
//! - **live** (the count [`Brake::sweep`] takes) is how many watched nodes
//!   are *not* silent after the sweep's changes: the up nodes, not counting
//!   suspected ones. Unseen, down and left nodes are not live.
//! - The **recent silent set** `S` holds the nodes that went silent within
//!   the last `window` and have not been heard since, each with the time it
//!   went silent. A node reported silent twice (up → suspect → down) keeps
//!   its first time and counts once; a node heard and then silent again
//!   counts again, from its new time. Entries older than `window` drop out:
//!   a node that has been silent that long is an old, independent failure,
//!   not part of a burst.
//! - The **population** is `live + |S|`: the nodes heard now plus those that
//!   went silent recently, that is the nodes that were live at the window's
//!   start (give or take nodes that joined or came back since), without
//!   keeping any history per node.
//!
//! # The rule
//!
//! **Engage** at the end of a sweep when
//!
//! ```text
//! |S| >= min_silent   and   |S| >= share × (live + |S|)
//! ```
//!
//! This is Kubernetes' "partial disruption" test (`notReady > 2 &&
//! notReady / total >= 0.55`, `ComputeZoneState` \[1\]) applied to the nodes
//! that went silent *within the window* rather than to every node not
//! ready: silence spread over longer than `window` (nodes failing one by
//! one, a rolling restart) never trips it, whatever its total. `min_silent`
//! (3, Kubernetes' `> 2`) keeps small clusters out: one node of two, or
//! two of two, going silent is acted on normally. The engaging sweep
//! reports [`Decisions::partition_suspected`], exactly once per engagement.
//!
//! The burst must be seen *before* the `down` transitions it would hold:
//! downs admitted in sweeps before the brake engaged have run. Nodes of a
//! lost link reach their timeouts spread over about one heartbeat interval,
//! so the agent should report a node silent as early as it can (at its
//! first suspicion, before it is down), and `window` should exceed that
//! spread by a margin.
//!
//! **While engaged**, [`Brake::admit_down`] holds every `down` (returns
//! `false`) and remembers the node. Held nodes are released oldest first at
//! `release_per_minute` (6 per minute: one every 10 s), like Kubernetes'
//! `secondary-node-eviction-rate` in a partially disrupted zone; 0 (the
//! default) releases none while engaged. The pace is a token bucket that
//! starts empty at engagement (the first release comes one period after it),
//! refills with the time between sweeps, and keeps at most one token while
//! nothing is held; sweeps further apart than the period release several
//! nodes at once. When *every*
//! watched node is silent (`live == 0`) nothing is released and `max_hold`
//! does not run out: it is then all but certain that hb is the one cut off
//! (and if every node really is dead there is nowhere to fail over to), as
//! Kubernetes stops evicting when every zone is fully disrupted. New
//! silences during the engagement join `S` and are no longer dropped after
//! `window`: `S` becomes the *episode*, every node silent since the burst.
//! A held node that is heard again is dropped from the held set: its `down`
//! actions never ran, so [`Brake::admit_up`] returns `false` (nothing to
//! undo).
//!
//! **Clear** (disengage) at the end of a sweep when either
//!
//! - the episode is over: no node of `S` is still silent, or the silent
//!   share has stayed below `share × CLEAR_FRACTION` (27.5% by default)
//!   for a whole `window`. The hysteresis keeps the brake from flapping
//!   around the threshold; the wait lets the stragglers of a healing
//!   partition (heard up to one interval after the others) come back
//!   before their `down` actions run. Nodes still silent then stayed dark
//!   while the rest came back: they are judged down. ([`Clear::Recovered`]);
//! - or the brake has been engaged for `max_hold` (if set) and at least one
//!   node is live: a silence that long is judged real. ([`Clear::Expired`]).
//!
//! The clearing sweep reports [`Decisions::partition_cleared`], exactly once
//! per engagement, and returns every node still held in
//! [`Decisions::release`] at once (they have waited long enough: a trickle,
//! if wanted, is what `release_per_minute` is for, and the action runner
//! bounds concurrency anyway). `S` is then emptied: the episode's silences
//! have been settled (heard again or judged down) and do not count towards
//! the next engagement.
//!
//! With `max_hold` unset (the default) the brake holds for as long as the
//! burst lasts, as Kubernetes does: a monitor on the wrong side of a
//! partition never acts on it. A burst that is real (a rack losing power)
//! then needs a person, whom `partition-suspected` has told; `max_hold`
//! trades that for eventual automatic failover.
//!
//! # In the agent
//!
//! ```text
//! each sweep, after the detector's:
//!   changes: Silent(id) for up -> suspected or -> down,
//!            Heard(id) for suspected/down -> up or -> left
//!   d = brake.sweep(now, live, &changes)      live: up nodes after the sweep
//!   d.partition_suspected  -> event `partition-suspected` (d.silent of d.population)
//!   each -> down:          brake.admit_down(now, id) ? run down actions : log "held"
//!   each down -> up:       brake.admit_up(id) ? run up actions : (nothing ran to undo)
//!   each id in d.release:  run its down actions
//!   d.partition_cleared    -> event `partition-cleared` (cause, d.release.len() released)
//! ```
//!
//! A held node that leaves gracefully (down → left) is reported `Heard`:
//! its `down` actions are dropped, as a leave never fails over. `admit_up`
//! must be called in the sweep that reported the node heard (the brake
//! forgets which held nodes came back at the next sweep).
//!
//! # Cost
//!
//! A sweep costs O(changes × log |S|) plus the entries it prunes or releases
//! (each entry is inserted once and removed once): no per-node scan. Memory
//! is proportional to the recent silent set and the held set, both bounded
//! by the nodes that went silent recently (or during the episode).
//!
//! \[1\] Kubernetes, node lifecycle controller:
//! `pkg/controller/nodelifecycle/node_lifecycle_controller.go`
//! (`ComputeZoneState`, `handleDisruption`), flags
//! `--unhealthy-zone-threshold` (0.55), `--secondary-node-eviction-rate`,
//! `--large-cluster-size-threshold`.

use std::{
    collections::{BTreeSet, HashMap, HashSet, hash_map::Entry},
    time::Duration,
};

/// The brake clears once the silent share has stayed below
/// `share × CLEAR_FRACTION` for a whole window: half the engaging share.
pub const CLEAR_FRACTION: f64 = 0.5;

/// Kubernetes' `--unhealthy-zone-threshold`.
pub const DEFAULT_SHARE: f64 = 0.55;

/// Five heartbeat intervals at the default 2 s: wide enough for the silences
/// of one lost link (spread over about one interval), short enough that
/// independent failures rarely fall in the same one.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// Kubernetes' `notReadyNodes > 2`.
pub const DEFAULT_MIN_SILENT: usize = 3;

/// When the brake engages and how it lets go. See the module doc.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BrakeSettings {
    /// The share of the population that must go silent within `window` to
    /// engage, in (0, 1]. Default 0.55.
    pub share: f64,
    /// How recent a silence must be to count towards a burst, and how long
    /// the share must stay low before the brake clears. Default 10 s.
    pub window: Duration,
    /// The fewest recent silences that can engage the brake, at least 1.
    /// Default 3.
    pub min_silent: usize,
    /// Held `down` actions released per minute while engaged (oldest
    /// first); 0 holds them all until the brake clears. Default 0.
    pub release_per_minute: u32,
    /// The longest an engagement lasts while any node is live; then the
    /// silence is judged real and everything held is released. `None`
    /// holds until the picture clears. Default `None`.
    pub max_hold: Option<Duration>,
}

impl Default for BrakeSettings {
    fn default() -> Self {
        BrakeSettings {
            share: DEFAULT_SHARE,
            window: DEFAULT_WINDOW,
            min_silent: DEFAULT_MIN_SILENT,
            release_per_minute: 0,
            max_hold: None,
        }
    }
}

impl BrakeSettings {
    /// What is wrong with these settings, in words for the operator, if
    /// anything.
    pub fn check(&self) -> Result<(), String> {
        if !(self.share.is_finite() && self.share > 0.0 && self.share <= 1.0) {
            return Err(format!(
                "`share` is {}: set a fraction above 0 and at most 1 (0.55 is Kubernetes' choice)",
                self.share
            ));
        }
        if self.window.is_zero() {
            return Err("`window` is 0: set a duration such as \"10s\"".to_owned());
        }
        if self.min_silent == 0 {
            return Err("`min_silent` is 0: set at least 1 (3 is Kubernetes' choice)".to_owned());
        }
        if let Some(max_hold) = self.max_hold
            && max_hold < self.window
        {
            return Err(format!(
                "`max_hold` ({max_hold:?}) is shorter than `window` ({:?}): the brake would \
                 let go before a partition could be seen to heal",
                self.window
            ));
        }
        Ok(())
    }
}

/// One node's change in a sweep, as far as the brake is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The node stopped being heard: up → down, or up → suspected. Report it
    /// as early as possible; reporting it again (suspected → down) is
    /// harmless.
    Silent(u32),
    /// The node is heard again: → up, or a graceful leave. A held `down`
    /// is dropped (the node's `up` actions are then suppressed).
    Heard(u32),
}

/// Why the brake let go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clear {
    /// The silent nodes came back (or the share stayed low for a window).
    Recovered,
    /// Engaged for `max_hold`: the silence is judged real.
    Expired,
}

impl Clear {
    /// The cause as events and logs name it.
    pub const fn name(self) -> &'static str {
        match self {
            Clear::Recovered => "recovered",
            Clear::Expired => "expired",
        }
    }
}

/// What one sweep asks of the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    /// The brake engaged in this sweep: emit one `partition-suspected` event.
    pub partition_suspected: bool,
    /// The brake let go in this sweep: emit one `partition-cleared` event.
    pub partition_cleared: Option<Clear>,
    /// Held nodes whose `down` actions run now, oldest hold first. Allocated
    /// only when not empty.
    pub release: Vec<u32>,
    /// The recent silent set (or episode) after this sweep, for the event:
    /// `silent` of `population` nodes went silent.
    pub silent: usize,
    /// `live + silent`.
    pub population: usize,
}

/// What the state file keeps of the brake (monotonic times): an episode in
/// progress and the `down` actions it holds survive a restart of the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BrakeMemory {
    pub engaged_since_ns: Option<u64>,
    pub calm_since_ns: Option<u64>,
    pub credit_ns: u64,
    /// The recent silent set: (node, when it went silent), oldest first.
    pub silent: Vec<(u32, u64)>,
    /// The held `down` actions: (node, when it was held), oldest first.
    pub held: Vec<(u32, u64)>,
}

impl BrakeMemory {
    /// Applies `f` to every time.
    pub fn move_times(&mut self, f: impl Fn(u64) -> u64) {
        self.engaged_since_ns = self.engaged_since_ns.map(&f);
        self.calm_since_ns = self.calm_since_ns.map(&f);
        for (_, at) in self.silent.iter_mut().chain(self.held.iter_mut()) {
            *at = f(*at);
        }
    }
}

/// The brake's state. See the module doc.
#[derive(Debug)]
pub struct Brake {
    settings: BrakeSettings,
    window_ns: u64,
    max_hold_ns: Option<u64>,
    /// Token bucket credit one release costs, in nanoseconds (one period of
    /// `release_per_minute`); 0 when the rate is 0.
    release_cost_ns: u64,
    /// Recent silent set: node → when it went silent.
    silent: HashMap<u32, u64>,
    /// The same entries ordered by time, for pruning.
    silent_order: BTreeSet<(u64, u32)>,
    /// Held nodes: node → when its `down` was held.
    held: HashMap<u32, u64>,
    /// The same entries ordered by time, for releasing oldest first.
    held_order: BTreeSet<(u64, u32)>,
    /// Held nodes heard again in the current sweep: their `up` is suppressed.
    /// Emptied at the start of each sweep.
    dropped: HashSet<u32>,
    engaged_since: Option<u64>,
    /// Since when the silent share has been below the clear threshold.
    calm_since: Option<u64>,
    /// Token bucket credit, in nanoseconds.
    credit_ns: u64,
    last_sweep_ns: Option<u64>,
}

impl Brake {
    /// A disengaged brake that has seen no silence. `settings` should pass
    /// [`BrakeSettings::check`].
    pub fn new(settings: BrakeSettings) -> Self {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Brake {
            settings,
            window_ns: ns(settings.window),
            max_hold_ns: settings.max_hold.map(ns),
            release_cost_ns: match settings.release_per_minute {
                0 => 0,
                rate => 60_000_000_000 / u64::from(rate),
            },
            silent: HashMap::new(),
            silent_order: BTreeSet::new(),
            held: HashMap::new(),
            held_order: BTreeSet::new(),
            dropped: HashSet::new(),
            engaged_since: None,
            calm_since: None,
            credit_ns: 0,
            last_sweep_ns: None,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &BrakeSettings {
        &self.settings
    }

    /// New settings (a reload), from the next sweep on. What the brake holds
    /// and has seen stays: an episode in progress goes on under the new
    /// rule.
    pub fn set_settings(&mut self, settings: BrakeSettings) {
        let fresh = Brake::new(settings);
        self.settings = fresh.settings;
        self.window_ns = fresh.window_ns;
        self.max_hold_ns = fresh.max_hold_ns;
        self.release_cost_ns = fresh.release_cost_ns;
    }

    /// What the state file keeps of the brake.
    pub fn memory(&self) -> BrakeMemory {
        BrakeMemory {
            engaged_since_ns: self.engaged_since,
            calm_since_ns: self.calm_since,
            credit_ns: self.credit_ns,
            silent: self.silent_order.iter().map(|&(at, id)| (id, at)).collect(),
            held: self.held_order.iter().map(|&(at, id)| (id, at)).collect(),
        }
    }

    /// Restores what a previous run held and had seen, at monotonic time
    /// `now_ns`. Held `down` actions stay held; if the brake that held them
    /// is not remembered as engaged (it engaged after the last snapshot), it
    /// engages again now, so they are released by its rate or when it
    /// clears, never forgotten.
    pub fn restore(&mut self, memory: BrakeMemory, now_ns: u64) {
        for (id, at) in memory.silent {
            if let Entry::Vacant(entry) = self.silent.entry(id) {
                entry.insert(at);
                self.silent_order.insert((at, id));
            }
        }
        for (id, at) in memory.held {
            if let Entry::Vacant(entry) = self.held.entry(id) {
                entry.insert(at);
                self.held_order.insert((at, id));
            }
        }
        self.calm_since = memory.calm_since_ns;
        self.credit_ns = memory.credit_ns;
        self.engaged_since = match memory.engaged_since_ns {
            None if !self.held.is_empty() => Some(now_ns),
            other => other,
        };
    }

    /// Whether `down` actions are being held.
    pub fn engaged(&self) -> bool {
        self.engaged_since.is_some()
    }

    /// How many nodes' `down` actions are held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether node `id`'s `down` actions are held.
    pub fn is_held(&self, id: u32) -> bool {
        self.held.contains_key(&id)
    }

    /// How many nodes are in the recent silent set (the episode while
    /// engaged).
    pub fn silent(&self) -> usize {
        self.silent.len()
    }

    /// One sweep at monotonic time `now_ns`: applies `changes`, then decides
    /// whether the brake engages, releases or clears. `live` is how many
    /// watched nodes are heard (up, not suspected) *after* these changes.
    /// Call it before this sweep's [`admit_down`](Self::admit_down) and
    /// [`admit_up`](Self::admit_up) calls, so that a burst holds the downs
    /// of the very sweep that reveals it.
    pub fn sweep(&mut self, now_ns: u64, live: usize, changes: &[Change]) -> Decisions {
        let elapsed_ns = self
            .last_sweep_ns
            .map_or(0, |last| now_ns.saturating_sub(last));
        self.last_sweep_ns = Some(now_ns);
        self.dropped.clear();
        for &change in changes {
            match change {
                Change::Silent(id) => {
                    if let Entry::Vacant(entry) = self.silent.entry(id) {
                        entry.insert(now_ns);
                        self.silent_order.insert((now_ns, id));
                    }
                }
                Change::Heard(id) => {
                    if let Some(since) = self.silent.remove(&id) {
                        self.silent_order.remove(&(since, id));
                    }
                    if self.unhold(id) {
                        self.dropped.insert(id);
                    }
                }
            }
        }

        let mut decisions = Decisions::default();
        match self.engaged_since {
            None => {
                self.prune(now_ns);
                let silent = self.silent.len();
                if silent >= self.settings.min_silent
                    && silent as f64 >= self.settings.share * (live + silent) as f64
                {
                    self.engaged_since = Some(now_ns);
                    self.calm_since = None;
                    self.credit_ns = 0;
                    decisions.partition_suspected = true;
                }
            }
            Some(since) => {
                if let Some(cause) = self.clear_cause(now_ns, since, live) {
                    decisions.partition_cleared = Some(cause);
                    decisions.release = self.held_order.iter().map(|&(_, id)| id).collect();
                    self.held.clear();
                    self.held_order.clear();
                    self.silent.clear();
                    self.silent_order.clear();
                    self.engaged_since = None;
                    self.calm_since = None;
                } else if self.release_cost_ns != 0 && live > 0 {
                    self.credit_ns = self.credit_ns.saturating_add(elapsed_ns);
                    while self.credit_ns >= self.release_cost_ns {
                        let Some((_, id)) = self.held_order.pop_first() else {
                            // Nothing to release: keep at most one token.
                            self.credit_ns = self.release_cost_ns;
                            break;
                        };
                        self.held.remove(&id);
                        decisions.release.push(id);
                        self.credit_ns -= self.release_cost_ns;
                    }
                }
            }
        }
        decisions.silent = self.silent.len();
        decisions.population = live + decisions.silent;
        decisions
    }

    /// A node is going down: whether its `down` actions run now (`true`) or
    /// are held (`false`; the node is remembered, and released later in
    /// [`Decisions::release`] unless it is heard first). Idempotent: holding
    /// a held node again changes nothing. The node should have been
    /// reported as [`Change::Silent`] in this sweep or an earlier one.
    pub fn admit_down(&mut self, now_ns: u64, node_id: u32) -> bool {
        if self.engaged_since.is_none() {
            return true;
        }
        if let Entry::Vacant(entry) = self.held.entry(node_id) {
            entry.insert(now_ns);
            self.held_order.insert((now_ns, node_id));
        }
        false
    }

    /// A node came back up: whether its `up` actions run. `false` if its
    /// `down` actions were held and never ran (nothing to undo); the held
    /// `down` is dropped. Call it in the sweep that reported the node
    /// [`Change::Heard`].
    pub fn admit_up(&mut self, node_id: u32) -> bool {
        !(self.dropped.remove(&node_id) || self.unhold(node_id))
    }

    /// Removes a node from the held set; whether it was held.
    fn unhold(&mut self, node_id: u32) -> bool {
        match self.held.remove(&node_id) {
            Some(at) => {
                self.held_order.remove(&(at, node_id));
                true
            }
            None => false,
        }
    }

    /// Drops the silences older than the window (only while not engaged).
    fn prune(&mut self, now_ns: u64) {
        while let Some(&(at, id)) = self.silent_order.first() {
            if at.saturating_add(self.window_ns) > now_ns {
                break;
            }
            self.silent_order.pop_first();
            self.silent.remove(&id);
        }
    }

    /// Whether an engagement that began at `since_ns` ends in this sweep.
    fn clear_cause(&mut self, now_ns: u64, since_ns: u64, live: usize) -> Option<Clear> {
        let silent = self.silent.len();
        if silent == 0 {
            return Some(Clear::Recovered);
        }
        let population = (live + silent) as f64;
        if (silent as f64) < self.settings.share * CLEAR_FRACTION * population {
            let calm = *self.calm_since.get_or_insert(now_ns);
            if now_ns.saturating_sub(calm) >= self.window_ns {
                return Some(Clear::Recovered);
            }
        } else {
            self.calm_since = None;
        }
        match self.max_hold_ns {
            Some(max_hold) if live > 0 && now_ns.saturating_sub(since_ns) >= max_hold => {
                Some(Clear::Expired)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn ids(range: std::ops::Range<u32>) -> Vec<u32> {
        range.collect()
    }

    /// A fake agent: a clock, a live count kept from the changes it reports,
    /// and a record of what the brake let it do. Every node reported silent
    /// goes down in the same sweep, the harshest case for the brake.
    struct Agent {
        brake: Brake,
        now_ns: u64,
        live: usize,
        ran_down: Vec<u32>,
        ran_up: Vec<u32>,
        suspected: usize,
        cleared: Vec<Clear>,
    }

    impl Agent {
        fn new(settings: BrakeSettings, nodes: usize) -> Self {
            settings.check().expect("valid settings");
            Agent {
                brake: Brake::new(settings),
                now_ns: 1_000 * SEC,
                live: nodes,
                ran_down: Vec::new(),
                ran_up: Vec::new(),
                suspected: 0,
                cleared: Vec::new(),
            }
        }

        /// Advances the clock by `advance_ms`, then runs one sweep in which
        /// `silent` went down and `heard` came back up.
        fn sweep(&mut self, advance_ms: u64, silent: &[u32], heard: &[u32]) -> Decisions {
            self.now_ns += advance_ms * 1_000_000;
            self.live = self.live - silent.len() + heard.len();
            let changes: Vec<Change> = silent
                .iter()
                .map(|&id| Change::Silent(id))
                .chain(heard.iter().map(|&id| Change::Heard(id)))
                .collect();
            let decisions = self.brake.sweep(self.now_ns, self.live, &changes);
            if decisions.partition_suspected {
                self.suspected += 1;
            }
            self.cleared.extend(decisions.partition_cleared);
            for &id in silent {
                if self.brake.admit_down(self.now_ns, id) {
                    self.ran_down.push(id);
                }
            }
            for &id in heard {
                if self.brake.admit_up(id) {
                    self.ran_up.push(id);
                }
            }
            self.ran_down.extend(&decisions.release);
            decisions
        }

        /// Quiet sweeps every second for `secs` seconds; the releases.
        fn idle(&mut self, secs: u64) -> Vec<u32> {
            let mut released = Vec::new();
            for _ in 0..secs {
                released.extend(self.sweep(1_000, &[], &[]).release);
            }
            released
        }
    }

    #[test]
    fn defaults_follow_kubernetes_and_are_valid() {
        let settings = BrakeSettings::default();
        assert_eq!(settings.share, 0.55);
        assert_eq!(settings.window, Duration::from_secs(10));
        assert_eq!(settings.min_silent, 3);
        assert_eq!(settings.release_per_minute, 0);
        assert_eq!(settings.max_hold, None);
        assert_eq!(settings.check(), Ok(()));
    }

    #[test]
    fn bad_settings_are_refused_with_the_field_named() {
        let bad = [
            (
                BrakeSettings {
                    share: 0.0,
                    ..Default::default()
                },
                "`share` is 0",
            ),
            (
                BrakeSettings {
                    share: 1.5,
                    ..Default::default()
                },
                "`share` is 1.5",
            ),
            (
                BrakeSettings {
                    share: f64::NAN,
                    ..Default::default()
                },
                "`share` is NaN",
            ),
            (
                BrakeSettings {
                    window: Duration::ZERO,
                    ..Default::default()
                },
                "`window` is 0",
            ),
            (
                BrakeSettings {
                    min_silent: 0,
                    ..Default::default()
                },
                "`min_silent` is 0",
            ),
            (
                BrakeSettings {
                    max_hold: Some(Duration::from_secs(5)),
                    ..Default::default()
                },
                "`max_hold` (5s) is shorter than `window` (10s)",
            ),
        ];
        for (settings, expected) in bad {
            let err = settings.check().expect_err(expected);
            assert!(
                err.starts_with(expected),
                "{err:?} should start with {expected:?}"
            );
        }
        let share_one = BrakeSettings {
            share: 1.0,
            ..Default::default()
        };
        assert_eq!(share_one.check(), Ok(()));
    }

    #[test]
    fn a_burst_that_comes_back_engages_once_runs_no_down_and_no_up() {
        let mut agent = Agent::new(BrakeSettings::default(), 100);
        let burst = ids(0..60);
        let decisions = agent.sweep(1_000, &burst, &[]);
        assert!(decisions.partition_suspected);
        assert_eq!((decisions.silent, decisions.population), (60, 100));
        assert!(agent.brake.engaged());
        assert_eq!(agent.brake.held(), 60);
        assert_eq!(agent.ran_down, Vec::<u32>::new(), "no down admitted");

        assert!(agent.idle(30).is_empty());
        assert_eq!(agent.suspected, 1, "one event per engagement");
        assert_eq!(
            agent.brake.silent(),
            60,
            "the episode is not pruned while engaged"
        );

        let decisions = agent.sweep(1_000, &[], &burst);
        assert_eq!(decisions.partition_cleared, Some(Clear::Recovered));
        assert!(decisions.release.is_empty());
        assert!(!agent.brake.engaged());
        assert_eq!(agent.brake.held(), 0);
        assert_eq!(agent.ran_down, Vec::<u32>::new(), "no down ever ran");
        assert_eq!(agent.ran_up, Vec::<u32>::new(), "nothing to undo");

        agent.idle(30);
        assert_eq!((agent.suspected, agent.cleared.len()), (1, 1));
    }

    #[test]
    fn a_burst_that_stays_down_is_held_while_it_lasts_by_default() {
        let mut agent = Agent::new(BrakeSettings::default(), 100);
        agent.sweep(1_000, &ids(0..60), &[]);
        assert!(agent.idle(3_600).is_empty());
        assert!(agent.brake.engaged());
        assert_eq!(agent.brake.held(), 60);
        assert_eq!((agent.suspected, agent.cleared.len()), (1, 0));
    }

    #[test]
    fn max_hold_judges_a_lasting_burst_real_and_releases_everything_held() {
        let settings = BrakeSettings {
            max_hold: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let mut agent = Agent::new(settings, 100);
        agent.sweep(1_000, &ids(0..60), &[]);
        assert!(agent.idle(59).is_empty());
        assert!(agent.brake.engaged());
        let decisions = agent.sweep(1_000, &[], &[]);
        assert_eq!(decisions.partition_cleared, Some(Clear::Expired));
        assert_eq!(
            decisions.release,
            ids(0..60),
            "oldest hold first, then by id"
        );
        assert_eq!(agent.brake.held(), 0);
        assert_eq!(
            agent.brake.silent(),
            0,
            "the episode's silences are settled"
        );

        // They stay down: no new engagement, and one that comes back later
        // runs its up actions (its down actions ran).
        assert!(agent.idle(60).is_empty());
        assert_eq!(agent.suspected, 1);
        agent.sweep(1_000, &[], &[7]);
        assert_eq!(agent.ran_up, vec![7]);
    }

    #[test]
    fn stragglers_get_a_window_to_come_back_before_their_downs_run() {
        let mut agent = Agent::new(BrakeSettings::default(), 100);
        agent.sweep(1_000, &ids(0..60), &[]);
        // Most come back; 10 of 100 still silent is below 27.5%: calm starts.
        let decisions = agent.sweep(4_000, &[], &ids(0..50));
        assert_eq!(decisions.partition_cleared, None);
        // Five stragglers come back within the window...
        agent.sweep(1_000, &[], &ids(50..55));
        assert!(agent.idle(8).is_empty());
        assert!(agent.brake.engaged());
        // ... and two more in the very sweep that clears: not released.
        let decisions = agent.sweep(1_000, &[], &[55, 56]);
        assert_eq!(decisions.partition_cleared, Some(Clear::Recovered));
        assert_eq!(decisions.release, vec![57, 58, 59]);
        assert_eq!(agent.ran_down, vec![57, 58, 59]);
        assert_eq!(agent.ran_up, Vec::<u32>::new());
    }

    #[test]
    fn the_brake_clears_only_below_half_the_share_hysteresis() {
        let mut agent = Agent::new(BrakeSettings::default(), 100);
        agent.sweep(1_000, &ids(0..60), &[]);
        // 30% silent: below 55%, above 27.5%: stays engaged.
        agent.sweep(1_000, &[], &ids(0..30));
        assert!(agent.idle(120).is_empty());
        assert!(agent.brake.engaged());
        // 25%: clears after a calm window.
        agent.sweep(1_000, &[], &ids(30..35));
        assert!(agent.idle(9).is_empty());
        // A relapse above the clear threshold (28%) restarts the calm window.
        agent.sweep(1_000, &ids(100..103), &[]);
        assert!(agent.idle(9).is_empty());
        agent.sweep(1_000, &[], &ids(100..103));
        assert!(agent.idle(9).is_empty(), "calm again for 9 s only");
        let released = agent.idle(1);
        assert_eq!(released, ids(35..60));
        assert_eq!(agent.cleared, vec![Clear::Recovered]);
        assert_eq!(agent.ran_down, ids(35..60), "no down ran before the clear");
        assert_eq!(agent.ran_up, Vec::<u32>::new(), "the relapse was held too");
    }

    #[test]
    fn a_slow_release_rate_is_honoured_oldest_first() {
        let settings = BrakeSettings {
            release_per_minute: 6,
            ..Default::default()
        };
        let mut agent = Agent::new(settings, 100);
        agent.sweep(1_000, &ids(0..60), &[]);
        for expected in 0..6 {
            assert!(agent.idle(9).is_empty(), "nothing between releases");
            assert_eq!(agent.idle(1), vec![expected], "one every 10 s");
        }
        assert_eq!(agent.brake.held(), 54);
        // Later holds queue behind the earlier ones.
        agent.sweep(1_000, &[99], &[]);
        assert!(agent.idle(8).is_empty());
        assert_eq!(agent.idle(1), vec![6]);

        // A released node that comes back runs its up actions; a held one
        // does not, and is never released.
        agent.sweep(1_000, &[], &[0, 7]);
        assert_eq!(agent.ran_up, vec![0]);
        assert!(agent.idle(8).is_empty());
        assert_eq!(agent.idle(1), vec![8]);

        // Sweeps slower than the rate release several at once.
        assert_eq!(agent.sweep(30_000, &[], &[]).release, vec![9, 10, 11]);
    }

    #[test]
    fn total_silence_releases_nothing_and_never_expires() {
        let settings = BrakeSettings {
            release_per_minute: 60,
            max_hold: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        let mut agent = Agent::new(settings, 10);
        let decisions = agent.sweep(1_000, &ids(0..10), &[]);
        assert!(decisions.partition_suspected);
        assert_eq!((decisions.silent, decisions.population), (10, 10));
        assert!(agent.idle(600).is_empty());
        assert!(agent.brake.engaged());
        // One node is heard: hb is not cut off after all, and it has held
        // for longer than max_hold.
        let decisions = agent.sweep(1_000, &[], &[3]);
        assert_eq!(decisions.partition_cleared, Some(Clear::Expired));
        assert_eq!(decisions.release, vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
        assert_eq!(agent.ran_up, Vec::<u32>::new());
    }

    #[test]
    fn a_silent_share_below_the_threshold_never_engages() {
        let mut agent = Agent::new(BrakeSettings::default(), 100);
        let decisions = agent.sweep(1_000, &ids(0..40), &[]);
        assert!(!decisions.partition_suspected);
        assert_eq!((decisions.silent, decisions.population), (40, 100));
        agent.idle(60);
        assert_eq!(agent.ran_down, ids(0..40), "every down admitted");
        assert_eq!(agent.suspected, 0);
    }

    #[test]
    fn silence_spread_over_longer_than_the_window_never_engages() {
        let mut agent = Agent::new(BrakeSettings::default(), 100);
        for id in 0..60 {
            let decisions = agent.sweep(2_000, &[id], &[]);
            assert!(!decisions.partition_suspected, "node {id}");
            assert!(decisions.silent <= 5, "only the last window counts");
        }
        assert_eq!(agent.ran_down, ids(0..60));
    }

    #[test]
    fn a_burst_spread_over_sweeps_within_the_window_engages() {
        let mut agent = Agent::new(BrakeSettings::default(), 100);
        agent.sweep(1_000, &ids(0..20), &[]);
        agent.sweep(3_000, &ids(20..40), &[]);
        assert!(!agent.brake.engaged(), "40 of 100");
        let decisions = agent.sweep(3_000, &ids(40..60), &[]);
        assert!(decisions.partition_suspected, "60 of 100 within 7 s");
        assert_eq!(agent.ran_down, ids(0..40), "downs before the brake ran");
        assert_eq!(agent.brake.held(), 20);
    }

    #[test]
    fn the_window_drops_silences_exactly_window_old() {
        let mut agent = Agent::new(BrakeSettings::default(), 10);
        agent.sweep(1_000, &ids(0..4), &[]);
        assert_eq!(agent.sweep(9_999, &[], &[]).silent, 4);
        // 10 s after the first four: they no longer count, so the next two
        // are 2 of 8, not 6 of 10.
        let decisions = agent.sweep(1, &[4, 5], &[]);
        assert_eq!((decisions.silent, decisions.population), (2, 6));
        assert!(!decisions.partition_suspected);
    }

    #[test]
    fn tiny_clusters_need_min_silent_nodes() {
        for nodes in [1, 2] {
            let mut agent = Agent::new(BrakeSettings::default(), nodes);
            let all = ids(0..nodes as u32);
            assert!(!agent.sweep(1_000, &all, &[]).partition_suspected);
            assert_eq!(agent.ran_down, all, "{nodes} of {nodes} acted on");
        }
        let mut agent = Agent::new(BrakeSettings::default(), 3);
        assert!(agent.sweep(1_000, &ids(0..3), &[]).partition_suspected);
        assert!(agent.ran_down.is_empty());
        // Two of four is 50%: not enough, whatever the count.
        let mut agent = Agent::new(BrakeSettings::default(), 4);
        assert!(!agent.sweep(1_000, &ids(0..2), &[]).partition_suspected);

        let single = BrakeSettings {
            min_silent: 1,
            ..Default::default()
        };
        let mut agent = Agent::new(single, 1);
        assert!(agent.sweep(1_000, &[0], &[]).partition_suspected);
    }

    #[test]
    fn admit_down_is_idempotent() {
        let mut agent = Agent::new(BrakeSettings::default(), 10);
        agent.sweep(1_000, &ids(0..6), &[]);
        let now = agent.now_ns;
        assert!(!agent.brake.admit_down(now, 0));
        assert!(!agent.brake.admit_down(now + SEC, 0));
        assert_eq!(agent.brake.held(), 6);
        let decisions = agent.sweep(1_000, &[], &ids(1..6));
        assert_eq!(
            decisions.partition_cleared, None,
            "1 of 10 still silent: calm starts"
        );
        assert_eq!(agent.idle(10), vec![0], "released once");
    }

    #[test]
    fn a_node_counts_once_within_the_window_and_again_after_it_is_heard() {
        let mut agent = Agent::new(BrakeSettings::default(), 10);
        // t = 0: suspected; t = 1 s: down. One silence each, from t = 0.
        let start = agent.now_ns;
        let changes: Vec<Change> = (0..5).map(Change::Silent).collect();
        let decisions = agent.brake.sweep(start, 5, &changes);
        assert_eq!((decisions.silent, decisions.population), (5, 10));
        let decisions = agent.brake.sweep(start + SEC, 5, &changes);
        assert_eq!((decisions.silent, decisions.population), (5, 10));
        assert!(!decisions.partition_suspected, "5 of 10, not 10 of 15");
        agent.live = 5;
        agent.now_ns = start + SEC;
        // t = 3 s: node 0 heard; t = 4 s: silent again, counted from 4 s.
        assert_eq!(agent.sweep(2_000, &[], &[0]).silent, 4);
        assert_eq!(agent.sweep(1_000, &[0], &[]).silent, 5);
        // Nodes 1..5 age out at 10 s; node 0 counts until 14 s.
        assert_eq!(agent.sweep(5_999, &[], &[]).silent, 5);
        assert_eq!(agent.sweep(1, &[], &[]).silent, 1);
        assert_eq!(agent.sweep(3_999, &[], &[]).silent, 1);
        assert_eq!(agent.sweep(1, &[], &[]).silent, 0);
        assert_eq!(agent.suspected, 0);
    }

    #[test]
    fn new_silences_while_engaged_are_held_and_join_the_episode() {
        let mut agent = Agent::new(BrakeSettings::default(), 100);
        agent.sweep(1_000, &ids(0..60), &[]);
        agent.idle(20);
        agent.sweep(1_000, &ids(60..70), &[]);
        assert_eq!(agent.brake.held(), 70);
        assert_eq!(agent.brake.silent(), 70);
        agent.sweep(1_000, &[], &ids(0..70));
        assert_eq!(agent.cleared, vec![Clear::Recovered]);
        assert!(agent.ran_down.is_empty() && agent.ran_up.is_empty());
    }

    #[test]
    fn each_engagement_reports_once_and_each_clear_once() {
        let mut agent = Agent::new(BrakeSettings::default(), 100);
        for _ in 0..3 {
            agent.sweep(1_000, &ids(0..60), &[]);
            agent.idle(5);
            agent.sweep(1_000, &[], &ids(0..60));
            agent.idle(5);
        }
        assert_eq!(agent.suspected, 3);
        assert_eq!(agent.cleared, vec![Clear::Recovered; 3]);
        assert!(agent.ran_down.is_empty() && agent.ran_up.is_empty());
    }

    #[test]
    fn up_is_admitted_for_nodes_never_held() {
        let mut brake = Brake::new(BrakeSettings::default());
        assert!(brake.admit_up(3));
        brake.sweep(SEC, 9, &[Change::Silent(3)]);
        assert!(brake.admit_down(SEC, 3));
        brake.sweep(2 * SEC, 10, &[Change::Heard(3)]);
        assert!(brake.admit_up(3));
    }

    #[test]
    fn what_it_holds_survives_a_restart() {
        let mut brake = Brake::new(BrakeSettings::default());
        let silent: Vec<Change> = (0..60).map(Change::Silent).collect();
        brake.sweep(SEC, 40, &silent);
        assert!(brake.engaged());
        for id in 0..60 {
            assert!(!brake.admit_down(SEC, id));
        }
        let memory = brake.memory();
        assert_eq!(memory.held.len(), 60);

        let mut restarted = Brake::new(BrakeSettings::default());
        restarted.restore(memory.clone(), 5 * SEC);
        assert!(restarted.engaged());
        assert_eq!(restarted.held(), 60);
        assert_eq!(restarted.memory(), memory);

        // Held downs whose engagement was not saved: engaged again, not lost.
        let held_only = BrakeMemory {
            held: vec![(7, SEC)],
            ..BrakeMemory::default()
        };
        let mut restarted = Brake::new(BrakeSettings::default());
        restarted.restore(held_only, 5 * SEC);
        assert_eq!((restarted.engaged(), restarted.held()), (true, 1));
    }
}
