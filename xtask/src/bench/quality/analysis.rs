//! From the agent's event log and the load generator's report to what a
//! detector did: detection times, false suspicions and how long they
//! lasted, node-hours (see the phase's doc for what is counted).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{
    DOWN_EVENT, FALSE_DOWNS_LISTED, SUSPECT_EVENTS, UP_EVENT, WARM_UP, scenarios::Detector,
};
use crate::bench::{rig::LoadReport, stats::percentile};

/// The fields of the agent's event log read here.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Event {
    pub(super) mono_ns: u64,
    pub(super) event: String,
    pub(super) node_id: u32,
    #[serde(default)]
    pub(super) since_last_heartbeat_ms: Option<u64>,
}

/// When the agent was stopped and continued, `CLOCK_MONOTONIC` ns.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Stall {
    pub(super) stopped_mono_ns: u64,
    pub(super) continued_mono_ns: u64,
    /// Lines of the agent's output saying it noticed.
    pub(super) noticed_in_log: usize,
}

/// A summary of a sorted sample of durations, ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(super) struct Spread {
    pub(super) count: usize,
    pub(super) mean_ms: Option<f64>,
    pub(super) p50_ms: Option<f64>,
    pub(super) p99_ms: Option<f64>,
    pub(super) max_ms: Option<f64>,
}

impl Spread {
    pub(super) fn of(sorted_ns: &[u64]) -> Self {
        let ms = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1e6);
        Self {
            count: sorted_ns.len(),
            mean_ms: (!sorted_ns.is_empty())
                .then(|| sorted_ns.iter().map(|&ns| ns as f64).sum::<f64>() / 1e6)
                .map(|sum| sum / sorted_ns.len() as f64),
            p50_ms: ms(percentile(sorted_ns, 0.5)),
            p99_ms: ms(percentile(sorted_ns, 0.99)),
            max_ms: ms(sorted_ns.last().copied()),
        }
    }
}

/// What one detector did in one scenario.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    pub(super) detector: Detector,
    pub(super) timeout_ms: Option<u64>,
    /// The event that starts suspicions in this log: `suspect` if the agent
    /// logged any, else `down`.
    pub(super) suspicion_event: &'static str,
    /// Time the nodes were alive during the run.
    pub(super) node_hours: f64,
    pub(super) false_suspicions: usize,
    pub(super) false_suspicions_per_node_hour: f64,
    /// False suspicions that reached `down`.
    pub(super) false_downs: usize,
    /// Of those counted above, the mistakes that started in the warm-up.
    pub(super) warm_up: WarmUp,
    /// The first false downs whose suspicion started in the warm-up, and
    /// the first of the others ([`FALSE_DOWNS_LISTED`] each).
    pub(super) false_downs_listed: Vec<FalseDown>,
    /// How long the node had been silent when it was falsely declared down.
    pub(super) silence_at_false_down: Spread,
    /// False suspicions still open at the end of the run (or at the node's
    /// death), counted up to then.
    pub(super) open_at_end: usize,
    /// How long the false suspicions lasted.
    pub(super) mistake_duration: Spread,
    /// Their durations, sorted, ns (for the plot).
    #[serde(skip)]
    pub(super) mistake_durations_ns: Vec<u64>,
    /// How long the node had been silent when it was falsely suspected
    /// (the event log's `since_last_heartbeat_ms`).
    pub(super) silence_at_false_suspicion: Spread,
    pub(super) stopped: usize,
    pub(super) detected: usize,
    /// Dead nodes never declared down.
    pub(super) missed: usize,
    /// Dead nodes that never sent a heartbeat (not measurable).
    pub(super) never_sent: usize,
    /// Sorted detection times, ns.
    pub(super) latencies_ns: Vec<u64>,
    pub(super) p50_ns: Option<u64>,
    pub(super) p99_ns: Option<u64>,
    pub(super) max_ns: Option<u64>,
    /// From a dead node's last heartbeat to its first suspicion.
    pub(super) time_to_suspect: Spread,
    /// The p99 with missed nodes counted as infinitely late (null: infinite).
    pub(super) p99_with_missed_ns: Option<u64>,
    pub(super) stall: Option<Stall>,
    pub(super) load: LoadReport,
}

impl Outcome {
    /// (False suspicions, node-hours).
    pub(super) fn sample(&self) -> (usize, f64) {
        (self.false_suspicions, self.node_hours)
    }

    /// (False suspicions, node-hours) after the warm-up.
    pub(super) fn sample_after_warm_up(&self) -> (usize, f64) {
        (
            self.false_suspicions - self.warm_up.false_suspicions,
            self.node_hours - self.warm_up.node_hours,
        )
    }
}

/// A false suspicion in progress.
#[derive(Debug, Clone, Copy)]
struct Open {
    pub(super) since_ns: u64,
    pub(super) reached_down: bool,
}

/// A live node declared down.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct FalseDown {
    pub(super) node_id: u32,
    /// When, from the start of the load.
    pub(super) at_ms: f64,
    /// How long it had been silent then (the event log's
    /// `since_last_heartbeat_ms`).
    pub(super) silence_ms: Option<u64>,
}

/// Mistakes that started in the first [`WARM_UP`] of the run (included in
/// the totals).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(super) struct WarmUp {
    pub(super) false_suspicions: usize,
    pub(super) false_downs: usize,
    /// The time the nodes were alive in the warm-up.
    pub(super) node_hours: f64,
}

pub(super) fn analyse(
    detector: Detector,
    load: LoadReport,
    events: &[Event],
    stall: Option<Stall>,
) -> Outcome {
    let lives = Lives::of(&load);
    let suspect_logged = events.iter().any(|e| is_suspicion(&e.event));
    let warm_up_end = lives.start + WARM_UP.as_nanos() as u64;
    let (mut mistakes, detections) = tally(events, &lives, warm_up_end);
    let open_at_end = mistakes.close_open(&lives);
    let node_hours = lives.node_hours_to(lives.end);
    mistakes.warm_up.node_hours = lives.node_hours_to(warm_up_end);

    let never_sent = lives.last_sent.values().filter(|l| l.is_none()).count();
    let latencies = lives.since_last_heartbeat(&detections.first_down);
    let suspected = lives.since_last_heartbeat(&detections.first_suspicion);
    let missed = lives.last_sent.len() - never_sent - latencies.len();
    let mut with_missed = latencies.clone();
    with_missed.extend(std::iter::repeat_n(u64::MAX, missed));
    Outcome {
        detector,
        timeout_ms: detector.timeout_ms(),
        suspicion_event: if suspect_logged {
            SUSPECT_EVENTS[0]
        } else {
            DOWN_EVENT
        },
        node_hours,
        false_suspicions: mistakes.false_suspicions,
        false_suspicions_per_node_hour: mistakes.false_suspicions as f64 / node_hours,
        false_downs: mistakes.false_downs,
        warm_up: mistakes.warm_up,
        false_downs_listed: mistakes.false_downs_listed,
        silence_at_false_down: Spread::of(&mistakes.down_silences),
        open_at_end,
        mistake_duration: Spread::of(&mistakes.durations),
        mistake_durations_ns: mistakes.durations,
        silence_at_false_suspicion: Spread::of(&mistakes.silences),
        stopped: lives.last_sent.len(),
        detected: latencies.len(),
        missed,
        never_sent,
        p50_ns: percentile(&latencies, 0.5),
        p99_ns: percentile(&latencies, 0.99),
        max_ns: latencies.last().copied(),
        time_to_suspect: Spread::of(&suspected),
        p99_with_missed_ns: percentile(&with_missed, 0.99).filter(|&ns| ns != u64::MAX),
        latencies_ns: latencies,
        stall,
        load,
    }
}

fn is_suspicion(event: &str) -> bool {
    SUSPECT_EVENTS.contains(&event)
}

/// Goes through the events in time order: those of a live node are
/// mistakes (or end one), those of a dead node after its last heartbeat
/// detections. Events after the end of the load are the nodes' silence at
/// the end, not counted.
fn tally(events: &[Event], lives: &Lives, warm_up_end: u64) -> (Mistakes, Detections) {
    let mut events: Vec<&Event> = events.iter().collect();
    events.sort_by_key(|e| e.mono_ns);
    let mut mistakes = Mistakes::default();
    let mut detections = Detections::default();
    for e in events {
        if e.mono_ns >= lives.alive_until(e.node_id) {
            // A dead node after its last heartbeat: a detection.
            detections.saw(e, lives);
        } else if e.event == DOWN_EVENT || is_suspicion(&e.event) {
            mistakes.suspected(e, lives.start, warm_up_end);
        } else if e.event == UP_EVENT {
            mistakes.trusted_again(e);
        }
    }
    (mistakes, detections)
}

/// When each node was alive during the run, from the load generator's
/// report: a dead node until its last heartbeat, the others to the end.
struct Lives {
    /// The dead nodes' last heartbeats (none: it never sent one).
    last_sent: HashMap<u32, Option<u64>>,
    start: u64,
    end: u64,
    nodes: u32,
}

impl Lives {
    fn of(load: &LoadReport) -> Self {
        Self {
            last_sent: load.last_sent_by_node(),
            start: load.started_mono_ns,
            end: load.ended_mono_ns,
            nodes: load.nodes,
        }
    }

    /// Until when a node was alive (and could be wrongly suspected).
    fn alive_until(&self, id: u32) -> u64 {
        match self.last_sent.get(&id) {
            Some(&Some(last)) => last.min(self.end),
            Some(None) => self.start,
            None => self.end,
        }
    }

    /// Whether node `id` died and `mono_ns` is at or after its last
    /// heartbeat.
    fn dead_at(&self, id: u32, mono_ns: u64) -> bool {
        matches!(self.last_sent.get(&id), Some(&Some(last)) if mono_ns >= last)
    }

    /// Node-hours alive from the start to `until`.
    fn node_hours_to(&self, until: u64) -> f64 {
        let running = u64::from(self.nodes).saturating_sub(self.last_sent.len() as u64);
        let until = until.min(self.end);
        let ns = running as f64 * until.saturating_sub(self.start) as f64
            + self
                .last_sent
                .values()
                .flatten()
                .map(|&last| last.min(until).saturating_sub(self.start) as f64)
                .sum::<f64>();
        ns / 3.6e12
    }

    /// From each dead node's last heartbeat to its time in `first`, sorted.
    fn since_last_heartbeat(&self, first: &HashMap<u32, u64>) -> Vec<u64> {
        let mut times: Vec<u64> = self
            .last_sent
            .iter()
            .filter_map(|(id, last)| Some(first.get(id)? - (*last)?))
            .collect();
        times.sort_unstable();
        times
    }
}

/// Each dead node's first suspicion and first `down` after its last
/// heartbeat, `CLOCK_MONOTONIC` ns.
#[derive(Default)]
struct Detections {
    first_suspicion: HashMap<u32, u64>,
    first_down: HashMap<u32, u64>,
}

impl Detections {
    fn saw(&mut self, e: &Event, lives: &Lives) {
        if !lives.dead_at(e.node_id, e.mono_ns) {
            return;
        }
        let down = e.event == DOWN_EVENT;
        if down || is_suspicion(&e.event) {
            self.first_suspicion.entry(e.node_id).or_insert(e.mono_ns);
        }
        if down {
            self.first_down.entry(e.node_id).or_insert(e.mono_ns);
        }
    }
}

/// The false suspicions counted so far, and those still open.
#[derive(Default)]
struct Mistakes {
    open: HashMap<u32, Open>,
    /// How long the closed ones lasted, ns.
    durations: Vec<u64>,
    /// How long the node had been silent at each false suspicion, ns.
    silences: Vec<u64>,
    false_suspicions: usize,
    false_downs: usize,
    false_downs_listed: Vec<FalseDown>,
    /// How long the node had been silent at each false down, ns.
    down_silences: Vec<u64>,
    warm_up: WarmUp,
}

impl Mistakes {
    /// A live node suspected or declared down: a mistake starts, unless one
    /// is open; a `down` makes it a false down.
    fn suspected(&mut self, e: &Event, start: u64, warm_up_end: u64) {
        let entry = self.open.entry(e.node_id).or_insert_with(|| {
            self.false_suspicions += 1;
            if e.mono_ns < warm_up_end {
                self.warm_up.false_suspicions += 1;
            }
            self.silences
                .extend(e.since_last_heartbeat_ms.map(|ms| ms * 1_000_000));
            Open {
                since_ns: e.mono_ns,
                reached_down: false,
            }
        });
        if e.event != DOWN_EVENT || entry.reached_down {
            return;
        }
        entry.reached_down = true;
        let early = entry.since_ns < warm_up_end;
        if early {
            self.warm_up.false_downs += 1;
        }
        self.false_downs += 1;
        self.down_silences
            .extend(e.since_last_heartbeat_ms.map(|ms| ms * 1_000_000));
        let listed = if early {
            self.warm_up.false_downs
        } else {
            self.false_downs - self.warm_up.false_downs
        };
        if listed <= FALSE_DOWNS_LISTED {
            self.false_downs_listed.push(FalseDown {
                node_id: e.node_id,
                at_ms: e.mono_ns.saturating_sub(start) as f64 / 1e6,
                silence_ms: e.since_last_heartbeat_ms,
            });
        }
    }

    /// The node is trusted again: its mistake, if any, ends.
    fn trusted_again(&mut self, e: &Event) {
        if let Some(o) = self.open.remove(&e.node_id) {
            self.durations.push(e.mono_ns - o.since_ns);
        }
    }

    /// Ends the mistakes still open at the node's death or the end of the
    /// run, sorts the samples, and says how many were open.
    fn close_open(&mut self, lives: &Lives) -> usize {
        let open_at_end = self.open.len();
        for (id, o) in self.open.drain() {
            self.durations
                .push(lives.alive_until(id).saturating_sub(o.since_ns));
        }
        self.durations.sort_unstable();
        self.silences.sort_unstable();
        self.down_silences.sort_unstable();
        open_at_end
    }
}
