//! The Prometheus metrics of `GET /metrics`, with the `prometheus-client`
//! crate. Nothing here costs per heartbeat: the sweep thread records each
//! sweep ([`Metrics::record_sweep`]: atomics only when nothing changed,
//! O(transitions) otherwise), the action runner each finished run
//! ([`ActionMetrics`]), and what is a level rather than an event (node
//! counts, the datapath's counters, the brake, per-node series) is read at
//! scrape time from a [`Scrape`].
//!
//! No per-node label by default: a million nodes would be a million series.
//! `hb_node_up{node}` and `hb_node_last_heard_seconds{node}` exist only when
//! built with a per-node limit and the cluster is within it.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hb_common::counters::{Counter, CounterValues};
use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
        prometheus_text, text,
    },
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter as PromCounter},
        family::Family,
        gauge::Gauge,
        histogram::Histogram,
        info::Info,
    },
    registry::{Registry, Unit},
};

use crate::{
    detect::{detector::NodeState, sweep::SweepOutcome},
    sinks::state_file::SaveHealth,
};

/// Every state, in the order `hb_nodes` lists them.
const STATES: [NodeState; 6] = [
    NodeState::Unseen,
    NodeState::Up,
    NodeState::Suspect,
    NodeState::Down,
    NodeState::Flapping,
    NodeState::Left,
];

/// `hb_action_duration_seconds` buckets: from a 5 ms script to one that
/// takes minutes (an action's timeout is its own, often tens of seconds).
const ACTION_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// `hb_detection_seconds` buckets: a node is convicted after its timeout,
/// from sub-second phi settings to minutes of tolerated silence.
const DETECTION_BUCKETS: [f64; 15] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 300.0,
];

/// `hb_sweep_duration_seconds` buckets: 10 µs to 1 s in 1-2.5-5 steps (a
/// sweep of a million nodes takes about 1 ms).
const SWEEP_BUCKETS: [f64; 16] = [
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// `hb_sweep_lateness_seconds` buckets: 10 µs to 1 s. A sweep woken on
/// time is late by the scheduler's wake-up latency, tens of microseconds;
/// milliseconds mean a starved or stalled agent.
const LATENESS_BUCKETS: [f64; 15] = [
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The text format a scrape is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The classic Prometheus text format (0.0.4): what every Prometheus
    /// scrapes and what `promtool check metrics` reads.
    Prometheus,
    /// OpenMetrics 1.0 text, ending in `# EOF`, for scrapers that ask for it
    /// (`Accept: application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// What a scrape reads from the agent at scrape time.
pub struct Scrape<'a> {
    /// Nodes per state; a state missing here is exposed as 0.
    pub states: &'a [(NodeState, u64)],
    /// The datapath's counters, as absolute values since it was loaded.
    pub counters: &'a CounterValues,
    pub brake_engaged: bool,
    /// `down` actions the brake holds now.
    pub brake_held: u64,
    /// How saving the state file goes.
    pub state_saving: &'a SaveHealth,
    /// Every node, when the caller has them at hand; exposed only if the
    /// per-node limit allows (see [`Metrics::new`]).
    pub per_node: Option<&'a [NodeSample<'a>]>,
}

/// One node's per-node series.
pub struct NodeSample<'a> {
    pub name: &'a str,
    /// Live: up or suspect ([`NodeState::is_live`]).
    pub up: bool,
    /// Seconds since its last accepted heartbeat; `None` if never heard (the
    /// series is then left out rather than faked).
    pub last_heard_seconds: Option<f64>,
}

/// How a finished action run ended (`hb_actions_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunResult {
    Succeeded,
    Failed,
    TimedOut,
}

impl RunResult {
    pub const ALL: [RunResult; 3] = [RunResult::Succeeded, RunResult::Failed, RunResult::TimedOut];

    pub const fn name(self) -> &'static str {
        match self {
            RunResult::Succeeded => "succeeded",
            RunResult::Failed => "failed",
            RunResult::TimedOut => "timed_out",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionResultLabels {
    action: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A family whose HELP and TYPE are written even before its first series
/// (the crate leaves empty families out), so a dashboard or a test finds
/// every `hb_*` family from the first scrape.
#[derive(Debug)]
struct Declared<M>(M);

impl<M: EncodeMetric> EncodeMetric for Declared<M> {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// The handle the action runner records finished runs with. Cheap to clone
/// (the families are shared).
#[derive(Clone, Debug)]
pub struct ActionMetrics {
    runs: Family<ActionResultLabels, PromCounter>,
    durations: HistogramFamily<ActionLabels>,
}

impl ActionMetrics {
    /// Creates `action`'s series at zero, so they exist before its first
    /// run (a rate over a series that appears mid-range loses the first run).
    pub fn declare(&self, action: &str) {
        for result in RunResult::ALL {
            self.runs.get_or_create_owned(&ActionResultLabels {
                action: action.to_owned(),
                result: result.name(),
            });
        }
        self.durations.get_or_create_owned(&ActionLabels {
            action: action.to_owned(),
        });
    }

    /// Counts one finished run of `action` and its wall time.
    pub fn record(&self, action: &str, result: RunResult, took: Duration) {
        self.runs
            .get_or_create(&ActionResultLabels {
                action: action.to_owned(),
                result: result.name(),
            })
            .inc();
        self.durations
            .get_or_create(&ActionLabels {
                action: action.to_owned(),
            })
            .observe(took.as_secs_f64());
    }
}

/// The per-node families, registered only with a per-node limit.
struct PerNode {
    limit: usize,
    up: Family<NodeLabels, Gauge>,
    last_heard: Family<NodeLabels, Gauge<f64, AtomicU64>>,
}

/// Every `hb_*` metric, and the registry that writes them out.
pub struct Metrics {
    registry: Registry,
    nodes: Family<StateLabels, Gauge>,
    transitions: Family<TransitionLabels, PromCounter>,
    detection: Histogram,
    sweep_duration: AtomicHistogram<{ SWEEP_BUCKETS.len() }>,
    sweep_lateness: AtomicHistogram<{ LATENESS_BUCKETS.len() }>,
    stalls: PromCounter,
    brake_engaged: Gauge,
    brake_held: Gauge,
    state_saved: Gauge,
    state_save_failures: Gauge,
    state_last_save: Gauge<f64, AtomicU64>,
    datapath: Arc<DatapathCounters>,
    per_node: Option<PerNode>,
    actions: ActionMetrics,
    /// Held through a whole scrape, so two concurrent scrapes do not write
    /// each other's scrape-time values.
    scraping: Mutex<()>,
}

impl Metrics {
    /// `per_node_limit`: expose `hb_node_up` and `hb_node_last_heard_seconds`
    /// when the cluster has at most this many nodes; 0 never does.
    pub fn new(per_node_limit: u32) -> Self {
        let mut registry = Registry::with_prefix("hb");
        let nodes = Family::<StateLabels, Gauge>::default();
        registry.register("nodes", "Nodes in each state", nodes.clone());
        let transitions = Family::<TransitionLabels, PromCounter>::default();
        registry.register(
            "transitions",
            "Node state changes, by previous and new state",
            Declared(transitions.clone()),
        );
        let detection = Histogram::new(DETECTION_BUCKETS);
        registry.register_with_unit(
            "detection",
            "Silence of a node when it was convicted down (last heartbeat to down)",
            Unit::Seconds,
            detection.clone(),
        );
        let sweep_duration = AtomicHistogram::new(SWEEP_BUCKETS);
        registry.register_with_unit(
            "sweep_duration",
            "Wall time of one sweep of the node table",
            Unit::Seconds,
            sweep_duration.clone(),
        );
        let sweep_lateness = AtomicHistogram::new(LATENESS_BUCKETS);
        registry.register_with_unit(
            "sweep_lateness",
            "How long after its planned instant (a node's deadline, or a sweep period) a sweep \
             woke",
            Unit::Seconds,
            sweep_lateness.clone(),
        );
        let stalls = PromCounter::default();
        registry.register(
            "agent_stalls",
            "Sweeps that found the agent had stalled (no conviction before a full timeout)",
            stalls.clone(),
        );
        let brake_engaged = Gauge::default();
        registry.register(
            "brake_engaged",
            "1 while the brake suspects a partition and holds down actions",
            brake_engaged.clone(),
        );
        let brake_held = Gauge::default();
        registry.register(
            "brake_held_actions",
            "Down actions the brake holds now",
            brake_held.clone(),
        );
        let state_saved = Gauge::default();
        registry.register(
            "state_saved",
            "1 while the state file is saved; 0 after a failed save or journal write (a restart \
             would lose node states)",
            state_saved.clone(),
        );
        let state_save_failures = Gauge::default();
        registry.register(
            "state_save_failures",
            "State file saves and journal writes that failed since the agent started",
            state_save_failures.clone(),
        );
        let state_last_save = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "state_last_save_timestamp",
            "When the state file was last saved (Unix time)",
            Unit::Seconds,
            state_last_save.clone(),
        );
        registry.register(
            "build",
            "The running hb's version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let actions = register_actions(&mut registry);
        let per_node =
            (per_node_limit > 0).then(|| register_per_node(&mut registry, per_node_limit));
        let datapath = Arc::new(DatapathCounters::default());
        registry.register_collector(Box::new(Arc::clone(&datapath)));
        Metrics {
            registry,
            nodes,
            transitions,
            detection,
            sweep_duration,
            sweep_lateness,
            stalls,
            brake_engaged,
            brake_held,
            state_saved,
            state_save_failures,
            state_last_save,
            datapath,
            per_node,
            actions,
            scraping: Mutex::new(()),
        }
    }

    /// Called once per sweep by the sweep thread, with the sweep's wall
    /// time. A sweep that changed nothing touches atomics only (no lock a
    /// scrape could hold); transitions cost one family lookup per distinct
    /// (from, to), downs one observation of the detection histogram.
    /// How late a sweep woke after the instant it was planned for.
    pub fn record_wake_lateness(&self, late_ns: u64) {
        self.sweep_lateness.observe(Duration::from_nanos(late_ns));
    }

    pub fn record_sweep(&self, outcome: &SweepOutcome) {
        self.sweep_duration.observe(outcome.took);
        if outcome.stalled_ns.is_some() {
            self.stalls.inc();
        }
        if outcome.transitions.is_empty() {
            return;
        }
        let mut tally = [[0u64; 6]; 6];
        for transition in &outcome.transitions {
            tally[transition.from as usize][transition.to as usize] += 1;
            if let (NodeState::Down, Some(silence)) =
                (transition.to, transition.since_last_heartbeat_ns)
            {
                self.detection
                    .observe(Duration::from_nanos(silence).as_secs_f64());
            }
        }
        for from in STATES {
            for to in STATES {
                let count = tally[from as usize][to as usize];
                if count != 0 {
                    self.transitions
                        .get_or_create(&TransitionLabels {
                            from: from.name(),
                            to: to.name(),
                        })
                        .inc_by(count);
                }
            }
        }
    }

    /// Registers the monitor group's series (`hb_group_*`); only an agent
    /// with `[group]` has them.
    pub fn register_group(&mut self) -> crate::group::GroupMetrics {
        crate::group::GroupMetrics::register(&mut self.registry)
    }

    /// Registers the prober's series (`hb_probes_sent_total`, ...), read
    /// from `stats` at each scrape.
    pub fn register_probes(&mut self, stats: Arc<crate::probe::ProbeStats>) {
        self.registry
            .register_collector(Box::new(crate::probe::ProbeMetrics(stats)));
    }

    /// A handle the action runner records finished runs with.
    pub fn actions(&self) -> ActionMetrics {
        self.actions.clone()
    }

    /// The text of one scrape: sets the scrape-time values from `scrape`,
    /// then encodes every family. Writing into a `String` does not fail, so
    /// an error is the crate refusing a metric: answer the scrape with a 500
    /// rather than a partial exposition.
    pub fn encode(&self, scrape: &Scrape<'_>, format: Format) -> Result<String, std::fmt::Error> {
        let _scraping = lock(&self.scraping);
        for state in STATES {
            let count = scrape
                .states
                .iter()
                .filter(|(s, _)| *s == state)
                .map(|(_, n)| *n)
                .sum::<u64>();
            self.nodes
                .get_or_create(&StateLabels {
                    state: state.name(),
                })
                .set(gauge_value(count));
        }
        self.brake_engaged.set(i64::from(scrape.brake_engaged));
        self.brake_held.set(gauge_value(scrape.brake_held));
        let saving = scrape.state_saving;
        self.state_saved.set(i64::from(saving.error.is_none()));
        self.state_save_failures.set(gauge_value(saving.failures));
        if let Some(ms) = saving.last_saved_unix_ms {
            self.state_last_save.set(ms as f64 / 1e3);
        }
        *lock(&self.datapath.values) = *scrape.counters;
        if let Some(per_node) = &self.per_node {
            per_node.set(scrape.per_node);
        }
        let mut out = String::new();
        match format {
            Format::Prometheus => prometheus_text::encode(&mut out, &self.registry)?,
            Format::OpenMetrics => text::encode(&mut out, &self.registry)?,
        }
        Ok(out)
    }
}

fn register_actions(registry: &mut Registry) -> ActionMetrics {
    let actions = ActionMetrics {
        runs: Family::default(),
        durations: Family::new_with_constructor(|| Histogram::new(ACTION_BUCKETS)),
    };
    registry.register(
        "actions",
        "Finished action runs, by action and result (succeeded, failed, timed_out)",
        Declared(actions.runs.clone()),
    );
    registry.register_with_unit(
        "action_duration",
        "Wall time of finished action runs",
        Unit::Seconds,
        Declared(actions.durations.clone()),
    );
    actions
}

fn register_per_node(registry: &mut Registry, limit: u32) -> PerNode {
    let per_node = PerNode {
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
        up: Family::default(),
        last_heard: Family::default(),
    };
    registry.register(
        "node_up",
        "1 if the node is up or suspect, else 0 (only for clusters within the per-node limit)",
        per_node.up.clone(),
    );
    registry.register_with_unit(
        "node_last_heard",
        "Seconds since the node's last accepted heartbeat (only for clusters within the \
         per-node limit)",
        Unit::Seconds,
        per_node.last_heard.clone(),
    );
    per_node
}

impl PerNode {
    /// Replaces the per-node series: none when the caller has no samples or
    /// the cluster is over the limit (a family with no series is left out).
    fn set(&self, samples: Option<&[NodeSample<'_>]>) {
        self.up.clear();
        self.last_heard.clear();
        let Some(samples) = samples.filter(|s| s.len() <= self.limit) else {
            return;
        };
        for sample in samples {
            let labels = NodeLabels {
                node: sample.name.to_owned(),
            };
            self.up.get_or_create(&labels).set(i64::from(sample.up));
            if let Some(seconds) = sample.last_heard_seconds {
                self.last_heard.get_or_create(&labels).set(seconds);
            }
        }
    }
}

/// `hb_packets_total{outcome}` and `hb_verdicts_total{verdict}`: the
/// datapath's absolute counters, copied in at scrape time and written as
/// const counters. Their value is the datapath's own, so it matches `hb
/// status`, and a datapath reloaded from zero reads as the counter reset
/// Prometheus' `rate()` expects; counters advanced by deltas would need the
/// previous scrape's values and a reset rule of their own.
#[derive(Debug, Default)]
struct DatapathCounters {
    values: Mutex<CounterValues>,
}

impl Collector for DatapathCounters {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let values = *lock(&self.values);
        for (name, help, outcome) in [
            (
                "packets",
                "Packets the datapath saw, by outcome (each packet has exactly one).",
                true,
            ),
            (
                "verdicts",
                "Packets the datapath saw, by verdict (passed or dropped).",
                false,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            let label = if outcome { "outcome" } else { "verdict" };
            for counter in Counter::ALL
                .into_iter()
                .filter(|c| c.is_outcome() == outcome)
            {
                let labels = [(label, counter.name())];
                let series = family.encode_family(&labels)?;
                ConstCounter::new(values[counter as usize]).encode(series)?;
            }
        }
        Ok(())
    }
}

/// A histogram of durations kept in atomics: observed without a lock, so
/// that the sweep thread never waits on a scrape (the crate's `Histogram`
/// is behind a mutex the encoder holds). `N` finite buckets (upper bounds
/// in seconds, ascending) and the `+Inf` one; the sum is kept in
/// nanoseconds. A scrape reads each atomic once, so one taken during an
/// observation may see it in its bucket and not yet in the sum (the next
/// scrape is whole). Cheap to clone: the cells are shared.
#[derive(Clone, Debug)]
pub struct AtomicHistogram<const N: usize>(Arc<Cells<N>>);

#[derive(Debug)]
struct Cells<const N: usize> {
    bounds_ns: [u64; N],
    bounds: [f64; N],
    /// Per bucket, not cumulative.
    buckets: [AtomicU64; N],
    /// Above the last bound (`+Inf`).
    over: AtomicU64,
    sum_ns: AtomicU64,
}

impl<const N: usize> AtomicHistogram<N> {
    /// Buckets with these upper bounds, in seconds, ascending.
    pub fn new(bounds: [f64; N]) -> Self {
        AtomicHistogram(Arc::new(Cells {
            bounds_ns: bounds.map(|b| (b * 1e9) as u64),
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            over: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }))
    }

    /// Counts one duration.
    pub fn observe(&self, took: Duration) {
        let cells = &*self.0;
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = cells
            .bounds_ns
            .iter()
            .position(|&bound| ns <= bound)
            .map_or(&cells.over, |i| &cells.buckets[i]);
        bucket.fetch_add(1, Ordering::Relaxed);
        cells.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Durations observed so far.
    pub fn count(&self) -> u64 {
        let cells = &*self.0;
        cells
            .buckets
            .iter()
            .chain([&cells.over])
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }
}

impl<const N: usize> EncodeMetric for AtomicHistogram<N> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let cells = &*self.0;
        let mut buckets: Vec<(f64, u64)> = cells
            .bounds
            .iter()
            .zip(&cells.buckets)
            .map(|(&bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        buckets.push((f64::INFINITY, cells.over.load(Ordering::Relaxed)));
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = cells.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A gauge's value from a count (gauges are i64 in the crate).
fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Locks `mutex`; a panic elsewhere while holding it leaves plain values
/// behind, still fit to read and overwrite.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
