//! Phase `quality`: detection quality of the `timeout` and `phi` detectors,
//! measured as Chen, Toueg and Aguilera define it \[1\]: how fast a crash
//! is detected (detection time), and how often and for how long a live node
//! is wrongly suspected (mistakes per node-hour, mistake duration).
//!
//! # Traffic
//!
//! `hb-tools loadgen` plays 5000 nodes (quick: 1000) beating every 100 ms for
//! 40 s (quick: 10 s) to an agent on the XDP datapath that sweeps every
//! 10 ms, in four scenarios:
//!
//! - (a) `--loss 5`: each heartbeat lost at random with probability 5%;
//! - (b) `--burst-loss 2`: 2% of the heartbeats start a burst in which it
//!   and the node's next 1 or 2 are lost (bursts of 2-3, about one per
//!   node every 5 s, about 5% of the heartbeats in all). The load generator
//!   may start a burst on the heartbeat right after one, so 2% of the
//!   bursts run into another: 4-6 heartbeats lost in a row (up to 700 ms
//!   of silence), and 0.04% into two more (7-9, up to 1 s);
//! - (c) `--pause-every 10s --pause-for 500ms`: each node stalls at random
//!   moments, once per 10 s on average, sending nothing for 500 ms (a
//!   silence of 500-600 ms);
//! - (d) no injected fault, but the agent itself is stopped (SIGSTOP) for
//!   2 s at 60% of the run, then continued (SIGCONT).
//!
//! In every scenario 1% of the nodes truly die (`--stop-fraction 0.01`) at
//! 30% of the run: before the stall of (d), so that the stall (during which
//! nothing can be detected) does not count as detection time. Lost
//! heartbeats advance the node's sequence; a paused node's does not.
//! The load generator's seed is fixed, so both detectors of a scenario see
//! the same losses, pauses and deaths.
//!
//! # The detectors
//!
//! - `phi`: `phi_threshold` 8, `min_std_dev` 50 ms, `acceptable_pause`
//!   400 ms; for a steady 100 ms sender (measured sd below the floor) down
//!   after 100 + 400 + 5.226 x 50 = 761 ms of silence: above the longest
//!   silence of (c) (600 ms) and of two bursts of (b) back to back
//!   (700 ms), with room below 1 s for a mean and sd that pauses inflated.
//!   `suspect_phi`, `rise`, flap damping and `timeout_multiplier` (3) are
//!   the agent's defaults.
//! - `timeout`: run second, at the same median detection time. Its
//!   timeout (`timeout_multiplier` 3 x an interval configured for the node
//!   range) is phi's median detection time in the same scenario minus half
//!   a sweep period, since a fixed timeout is detected on average half a
//!   sweep period after it expires; the interval is rounded to the
//!   millisecond. Both medians are reported. (Matching the time to `down`
//!   is what the targets ask; the two detectors' `suspect` thresholds then
//!   differ: the timeout rule suspects one interval, a third of the
//!   timeout, before it, phi at `suspect_phi`. How long each takes to
//!   suspect a dead node is reported too.)
//!
//! # What is counted
//!
//! From the agent's event log (`CLOCK_MONOTONIC` of the sweep that saw
//! the change) and the load generator's report (`CLOCK_MONOTONIC` of each
//! dead node's last heartbeat):
//!
//! - detection time of a dead node: its first [`DOWN_EVENT`] after its last
//!   heartbeat, minus that heartbeat; p50, p99 and max (a dead node never
//!   declared down is *missed*, and counts as infinitely late in the p99
//!   of the target); and the time to its first suspicion (Chen and
//!   Toueg's detection time, for a detector whose output is "suspected");
//! - a false suspicion (mistake): a live node (running, or a dead one
//!   before its last heartbeat) entering a [`SUSPECT_EVENTS`] state, or
//!   [`DOWN_EVENT`] while not suspected (so that an agent without a
//!   `suspect` state is judged by its `down`s). It lasts until the node's
//!   next [`UP_EVENT`] (through `down` and `flapping`, if it goes there),
//!   else until the end of the run or the node's death. A mistake that
//!   reached `down` is also a *false down*;
//! - node-hours: the time each node was alive during the run (from the
//!   start to the end, or to its last heartbeat); mistakes per node-hour
//!   = false suspicions / node-hours.
//!
//! Events after the end of the load (when every node falls silent) are
//! not counted. Mistakes that start in the first [`WARM_UP`] are counted,
//! and also shown apart.
//!
//! # Targets
//!
//! For phi in each scenario: no false down, and the p99 of the detection
//! time below 1 s. At the same median detection time, phi makes at least
//! 50x fewer false suspicions per node-hour than the timeout (Lifeguard \[2\]
//! reports 50x fewer than plain SWIM), in each scenario where either made
//! any (where neither did, there is nothing to compare: a note says so),
//! and pooled over the four. When phi made none, the ratio is computed with
//! one phi false suspicion instead and is a lower bound (`>=`). Targets
//! count the whole run; the ratio without the warm-up is shown beside.
//!
//! Plots: false suspicions per node-hour per scenario (log scale), and how
//! long they lasted (CDFs). (Detection times are not plotted: matched, they
//! lie within a few ms of each other.)
//!
//! \[1\] W. Chen, S. Toueg, M. K. Aguilera, "On the quality of service of
//! failure detectors", IEEE Transactions on Computers 51(5), 2002.
//! \[2\] A. Dadgar, J. Phillips, J. Currey, "Lifeguard: Local health
//! awareness for more accurate failure detection", DSN Workshops 2018.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};
use hb_tests::interrupt;
use plotters::{
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Ctx, PhaseOutput,
    output::{Bound, Progress, Table, Target, number, si},
    plot::{self, Series},
    rig::{AgentSetup, Faults, Load, LoadReport, Pace, Rig},
    stats::percentile,
};

const PHASE: &str = "quality";
/// Every node's heartbeat interval.
const INTERVAL: Duration = Duration::from_millis(100);
const SWEEP: Duration = Duration::from_millis(10);
/// Fraction of the nodes that truly die.
const STOP_FRACTION: f64 = 0.01;
/// They die this far into a run (fraction of its length).
const STOP_AT: f64 = 0.3;
/// In (d) the agent is stopped this far into a run (fraction of its length).
const STALL_AT: f64 = 0.6;
/// For this long.
const STALL: Duration = Duration::from_secs(2);
/// A line of the agent's output that says it noticed a stall contains this.
const STALL_LOG: &str = "was stalled";
const LOSS_PERCENT: f64 = 5.0;
const BURST_LOSS_PERCENT: f64 = 2.0;
const PAUSE_EVERY: Duration = Duration::from_secs(10);
const PAUSE_FOR: Duration = Duration::from_millis(500);

const PHI_THRESHOLD: f64 = 8.0;
/// `y` at which Akka's phi reaches [`PHI_THRESHOLD`] (see `hb::phi`), for
/// the deadline shown in the report.
const PHI_Y: f64 = 5.226;
const PHI_MIN_STD_DEV: Duration = Duration::from_millis(50);
const PHI_ACCEPTABLE_PAUSE: Duration = Duration::from_millis(400);
/// `defaults.timeout_multiplier`: of the timeout detector, and of the rule
/// phi falls back on before a node has an interval sample.
const MULTIPLIER: u32 = 3;

/// Events that start a suspicion (the agent's names).
const SUSPECT_EVENTS: &[&str] = &["suspect"];
/// The event of a node declared down; it also starts a suspicion when the
/// node was not suspected before.
const DOWN_EVENT: &str = "down";
/// The event that ends a suspicion: the node is trusted again.
const UP_EVENT: &str = "up";

/// Mistakes that start this early in a run are also counted apart: a node
/// has no interval sample before its second heartbeat, and the detector
/// judges it by a rule of its own until then (before phi used the interval
/// it expects, it was the timeout rule, 3 x 100 ms, which wrongly convicted
/// nodes whose first heartbeats were lost).
const WARM_UP: Duration = Duration::from_secs(2);
/// The false downs listed in the results, at most, of those that started
/// in the warm-up and of the others each.
const FALSE_DOWNS_LISTED: usize = 10;

/// Phi's p99 detection time must be below this.
const P99_LIMIT_MS: f64 = 1000.0;
/// Timeout's false suspicions per node-hour over phi's, at least.
const RATIO_LIMIT: f64 = 50.0;

/// How big the runs are.
#[derive(Debug, Clone, Copy, Serialize)]
struct Size {
    nodes: u32,
    #[serde(serialize_with = "seconds")]
    run: Duration,
}

impl Size {
    fn of(quick: bool) -> Self {
        if quick {
            Self {
                nodes: 1000,
                run: Duration::from_secs(10),
            }
        } else {
            Self {
                nodes: 5000,
                run: Duration::from_secs(40),
            }
        }
    }
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// One kind of trouble.
#[derive(Debug, Clone, Serialize)]
struct Scenario {
    key: &'static str,
    title: &'static str,
    #[serde(skip)]
    faults: Faults,
    /// The agent is stopped for [`STALL`] at [`STALL_AT`].
    agent_stall: bool,
}

fn scenarios() -> Vec<Scenario> {
    let none = Faults::default();
    vec![
        Scenario {
            key: "a",
            title: "5% random loss",
            faults: Faults {
                loss_percent: LOSS_PERCENT,
                ..none
            },
            agent_stall: false,
        },
        Scenario {
            key: "b",
            title: "bursts of 2-3 lost",
            faults: Faults {
                burst_loss_percent: BURST_LOSS_PERCENT,
                ..none
            },
            agent_stall: false,
        },
        Scenario {
            key: "c",
            title: "500 ms sender pauses",
            faults: Faults {
                pause: Some((PAUSE_EVERY, PAUSE_FOR)),
                ..none
            },
            agent_stall: false,
        },
        Scenario {
            key: "d",
            title: "agent stalled 2 s",
            faults: none,
            agent_stall: true,
        },
    ]
}

impl Scenario {
    fn label(&self) -> String {
        format!("({}) {}", self.key, self.title)
    }
}

/// The detector an agent runs.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Detector {
    Phi,
    /// Timeout [`MULTIPLIER`] x `interval_ms`.
    Timeout {
        interval_ms: u64,
    },
}

impl Detector {
    fn name(self) -> &'static str {
        match self {
            Self::Phi => "phi",
            Self::Timeout { .. } => "timeout",
        }
    }

    /// The interval configured for the nodes.
    fn interval(self) -> Duration {
        match self {
            Self::Phi => INTERVAL,
            Self::Timeout { interval_ms } => Duration::from_millis(interval_ms),
        }
    }

    fn timeout_ms(self) -> Option<u64> {
        match self {
            Self::Phi => None,
            Self::Timeout { interval_ms } => Some(interval_ms * u64::from(MULTIPLIER)),
        }
    }

    /// How it is set, in a few words.
    fn setting(self) -> String {
        match self {
            Self::Phi => format!(
                "phi {PHI_THRESHOLD}, sd >= {} ms, pause {} ms",
                PHI_MIN_STD_DEV.as_millis(),
                PHI_ACCEPTABLE_PAUSE.as_millis()
            ),
            Self::Timeout { interval_ms } => format!(
                "{MULTIPLIER} x {interval_ms} ms = {} ms",
                interval_ms * u64::from(MULTIPLIER)
            ),
        }
    }

    /// The agent configuration's `[detector]` section.
    fn section(self) -> String {
        match self {
            Self::Phi => format!(
                "[detector]\n\
                 kind = \"phi\"\n\
                 phi_threshold = {PHI_THRESHOLD:?}\n\
                 min_std_dev = \"{}ms\"\n\
                 acceptable_pause = \"{}ms\"\n",
                PHI_MIN_STD_DEV.as_millis(),
                PHI_ACCEPTABLE_PAUSE.as_millis()
            ),
            Self::Timeout { .. } => "[detector]\nkind = \"timeout\"\n".to_owned(),
        }
    }
}

/// Phi's deadline for a steady sender at [`INTERVAL`], ms.
fn phi_deadline_ms() -> f64 {
    (INTERVAL + PHI_ACCEPTABLE_PAUSE).as_secs_f64() * 1e3
        + PHI_Y * PHI_MIN_STD_DEV.as_secs_f64() * 1e3
}

/// The timeout detector's interval whose timeout matches phi's median
/// detection time `phi_p50_ns` (see the module doc); phi's deadline for a
/// steady sender if phi detected nothing.
fn matched_interval_ms(phi_p50_ns: Option<u64>) -> u64 {
    let median_ms = phi_p50_ns.map_or_else(phi_deadline_ms, |ns| ns as f64 / 1e6);
    let timeout_ms = median_ms - SWEEP.as_secs_f64() * 1e3 / 2.0;
    let interval_ms = (timeout_ms / f64::from(MULTIPLIER)).round() as u64;
    // The agent wants the sweep period at most the interval.
    interval_ms.max(SWEEP.as_millis() as u64)
}

/// The fields of the agent's event log read here.
#[derive(Debug, Clone, Deserialize)]
struct Event {
    mono_ns: u64,
    event: String,
    node_id: u32,
    #[serde(default)]
    since_last_heartbeat_ms: Option<u64>,
}

/// When the agent was stopped and continued, `CLOCK_MONOTONIC` ns.
#[derive(Debug, Clone, Copy, Serialize)]
struct Stall {
    stopped_mono_ns: u64,
    continued_mono_ns: u64,
    /// Lines of the agent's output saying it noticed.
    noticed_in_log: usize,
}

/// A summary of a sorted sample of durations, ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Spread {
    count: usize,
    mean_ms: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

impl Spread {
    fn of(sorted_ns: &[u64]) -> Self {
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
struct Outcome {
    detector: Detector,
    timeout_ms: Option<u64>,
    /// The event that starts suspicions in this log: `suspect` if the agent
    /// logged any, else `down`.
    suspicion_event: &'static str,
    /// Time the nodes were alive during the run.
    node_hours: f64,
    false_suspicions: usize,
    false_suspicions_per_node_hour: f64,
    /// False suspicions that reached `down`.
    false_downs: usize,
    /// Of those counted above, the mistakes that started in the warm-up.
    warm_up: WarmUp,
    /// The first false downs whose suspicion started in the warm-up, and
    /// the first of the others ([`FALSE_DOWNS_LISTED`] each).
    false_downs_listed: Vec<FalseDown>,
    /// How long the node had been silent when it was falsely declared down.
    silence_at_false_down: Spread,
    /// False suspicions still open at the end of the run (or at the node's
    /// death), counted up to then.
    open_at_end: usize,
    /// How long the false suspicions lasted.
    mistake_duration: Spread,
    /// Their durations, sorted, ns (for the plot).
    #[serde(skip)]
    mistake_durations_ns: Vec<u64>,
    /// How long the node had been silent when it was falsely suspected
    /// (the event log's `since_last_heartbeat_ms`).
    silence_at_false_suspicion: Spread,
    stopped: usize,
    detected: usize,
    /// Dead nodes never declared down.
    missed: usize,
    /// Dead nodes that never sent a heartbeat (not measurable).
    never_sent: usize,
    /// Sorted detection times, ns.
    latencies_ns: Vec<u64>,
    p50_ns: Option<u64>,
    p99_ns: Option<u64>,
    max_ns: Option<u64>,
    /// From a dead node's last heartbeat to its first suspicion.
    time_to_suspect: Spread,
    /// The p99 with missed nodes counted as infinitely late (null: infinite).
    p99_with_missed_ns: Option<u64>,
    stall: Option<Stall>,
    load: LoadReport,
}

/// Both detectors in one scenario.
#[derive(Debug, Serialize)]
struct Comparison {
    scenario: Scenario,
    phi: Outcome,
    timeout: Outcome,
    /// Timeout's false suspicions per node-hour over phi's.
    ratio: Ratio,
    /// The same without the first [`WARM_UP`] of the runs.
    ratio_after_warm_up: Ratio,
}

/// Timeout's false suspicions per node-hour over phi's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct Ratio {
    value: f64,
    /// Phi made no false suspicion: one is counted instead, and `value` is
    /// a lower bound.
    lower_bound: bool,
}

impl Ratio {
    /// From both detectors' (false suspicions, node-hours).
    /// From both detectors' (false suspicions, node-hours); NaN (null in
    /// the results) when neither made any.
    fn of(timeout: (usize, f64), phi: (usize, f64)) -> Self {
        let rate = |(count, hours): (usize, f64)| count as f64 / hours;
        Self {
            value: if timeout.0 == 0 && phi.0 == 0 {
                f64::NAN
            } else {
                rate(timeout) / rate((phi.0.max(1), phi.1))
            },
            lower_bound: phi.0 == 0,
        }
    }

    fn text(self) -> String {
        if self.value.is_nan() {
            return "-".to_owned();
        }
        let value = if self.value >= 100.0 {
            format!("{:.0}", self.value)
        } else {
            number(self.value)
        };
        format!("{}{value}", if self.lower_bound { ">= " } else { "" })
    }
}

impl Outcome {
    /// (False suspicions, node-hours).
    fn sample(&self) -> (usize, f64) {
        (self.false_suspicions, self.node_hours)
    }

    /// (False suspicions, node-hours) after the warm-up.
    fn sample_after_warm_up(&self) -> (usize, f64) {
        (
            self.false_suspicions - self.warm_up.false_suspicions,
            self.node_hours - self.warm_up.node_hours,
        )
    }
}

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let size = Size::of(ctx.quick);
    let scenarios = scenarios();
    let planned = (size.run + Duration::from_secs(4)) * 2 * scenarios.len() as u32;
    let rig = Rig::build(ctx.hb, ctx.tools, ctx.work.join(PHASE))?;
    println!("  {}", rig.describe());
    println!(
        "  {} nodes every {} ms for {} s, {:.0}% die at {:.0} s; XDP, sweep {} ms",
        size.nodes,
        INTERVAL.as_millis(),
        size.run.as_secs(),
        100.0 * STOP_FRACTION,
        size.run.as_secs_f64() * STOP_AT,
        SWEEP.as_millis()
    );
    println!(
        "  phi: threshold {PHI_THRESHOLD}, min_std_dev {} ms, acceptable_pause {} ms (down after \
         {:.0} ms for a steady sender); timeout: {MULTIPLIER} x interval, matched to phi's median",
        PHI_MIN_STD_DEV.as_millis(),
        PHI_ACCEPTABLE_PAUSE.as_millis(),
        phi_deadline_ms()
    );
    let progress = Progress::start(PHASE, planned);
    let mut comparisons = Vec::new();
    for scenario in scenarios {
        let phi = measure(&rig, &scenario, size, Detector::Phi, &progress)?;
        let matched = Detector::Timeout {
            interval_ms: matched_interval_ms(phi.p50_ns),
        };
        let timeout = measure(&rig, &scenario, size, matched, &progress)?;
        progress.say(format!(
            "  {}: false suspicions phi {} / timeout {}, false downs phi {} / timeout {}",
            scenario.label(),
            phi.false_suspicions,
            timeout.false_suspicions,
            phi.false_downs,
            timeout.false_downs
        ));
        comparisons.push(Comparison {
            scenario,
            ratio: Ratio::of(timeout.sample(), phi.sample()),
            ratio_after_warm_up: Ratio::of(
                timeout.sample_after_warm_up(),
                phi.sample_after_warm_up(),
            ),
            phi,
            timeout,
        });
    }
    drop(progress);
    drop(rig);

    for c in &comparisons {
        print_scenario(c, size);
    }
    let pooled = pooled(&comparisons);
    print_summary(&comparisons, &pooled);

    let (targets, facts) = targets(&comparisons, &pooled);
    let mistakes = ctx.svg("quality-mistakes");
    mistakes_plot(&mistakes, &comparisons)?;
    let durations = ctx.svg("quality-mistake-durations");
    durations_plot(&durations, &comparisons)?;

    Ok(PhaseOutput {
        json: json!({
            "nodes": size.nodes,
            "run_s": size.run.as_secs_f64(),
            "interval_ms": INTERVAL.as_secs_f64() * 1e3,
            "sweep_period_ms": SWEEP.as_secs_f64() * 1e3,
            "datapath": "xdp",
            "stop_fraction": STOP_FRACTION,
            "stop_at_s": size.run.as_secs_f64() * STOP_AT,
            "stall_at_s": size.run.as_secs_f64() * STALL_AT,
            "stall_s": STALL.as_secs_f64(),
            "faults": {
                "loss_percent": LOSS_PERCENT,
                "burst_loss_percent": BURST_LOSS_PERCENT,
                "pause_every_s": PAUSE_EVERY.as_secs_f64(),
                "pause_for_ms": PAUSE_FOR.as_secs_f64() * 1e3,
            },
            "phi": {
                "threshold": PHI_THRESHOLD,
                "min_std_dev_ms": PHI_MIN_STD_DEV.as_secs_f64() * 1e3,
                "acceptable_pause_ms": PHI_ACCEPTABLE_PAUSE.as_secs_f64() * 1e3,
                "steady_deadline_ms": phi_deadline_ms(),
                "other_keys": "agent defaults",
            },
            "timeout_multiplier": MULTIPLIER,
            "matching": "timeout = phi's median detection time in the scenario - sweep period / 2, \
                         as timeout_multiplier x a per-range interval rounded to 1 ms",
            "events": {
                "suspect": SUSPECT_EVENTS,
                "down": DOWN_EVENT,
                "up": UP_EVENT,
            },
            "scenarios": comparisons,
            "pooled": pooled,
        }),
        targets,
        plots: vec![mistakes, durations],
        facts,
    })
}

/// Runs one detector through one scenario and analyses what it did.
fn measure(
    rig: &Rig<'_>,
    scenario: &Scenario,
    size: Size,
    detector: Detector,
    progress: &Progress,
) -> Result<Outcome> {
    let setup = AgentSetup {
        datapath: "xdp",
        nodes: size.nodes,
        interval: detector.interval(),
        timeout_multiplier: MULTIPLIER,
        sweep_period: SWEEP,
    };
    let step = format!(
        "{} {} ({})",
        scenario.label(),
        detector.name(),
        detector.setting()
    );
    progress.step(format!("{step}: starting the agent"));
    let mut agent = rig.start_agent_with(&setup, &detector.section())?;
    let load = Load {
        stop: Some((STOP_FRACTION, size.run.mul_f64(STOP_AT))),
        faults: scenario.faults,
        ..Load::new(size.nodes, Pace::Interval(INTERVAL), size.run)
    };
    progress.step(step.clone());
    let running = rig.start_load(&load)?;
    let stall = if scenario.agent_stall {
        let at = running.started() + size.run.mul_f64(STALL_AT);
        interrupt::sleep(at.saturating_duration_since(Instant::now()))?;
        progress.step(format!("{step}: agent stopped for {} s", STALL.as_secs()));
        let (stopped_mono_ns, continued_mono_ns) = agent.stall(STALL)?;
        progress.step(step);
        Some((stopped_mono_ns, continued_mono_ns))
    } else {
        None
    };
    let report = running.finish()?;
    report.ensure_complete()?;
    // The event log is written once per sweep; SIGTERM flushes it too.
    interrupt::sleep(SWEEP * 5)?;
    agent.stop()?;
    let stall = stall.map(|(stopped_mono_ns, continued_mono_ns)| Stall {
        stopped_mono_ns,
        continued_mono_ns,
        noticed_in_log: agent.log_lines_containing(STALL_LOG),
    });
    let events: Vec<Event> = agent.records()?;
    Ok(analyse(detector, report, &events, stall))
}

/// A false suspicion in progress.
#[derive(Debug, Clone, Copy)]
struct Open {
    since_ns: u64,
    reached_down: bool,
}

/// A live node declared down.
#[derive(Debug, Clone, Copy, Serialize)]
struct FalseDown {
    node_id: u32,
    /// When, from the start of the load.
    at_ms: f64,
    /// How long it had been silent then (the event log's
    /// `since_last_heartbeat_ms`).
    silence_ms: Option<u64>,
}

/// Mistakes that started in the first [`WARM_UP`] of the run (included in
/// the totals).
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct WarmUp {
    false_suspicions: usize,
    false_downs: usize,
    /// The time the nodes were alive in the warm-up.
    node_hours: f64,
}

fn analyse(
    detector: Detector,
    load: LoadReport,
    events: &[Event],
    stall: Option<Stall>,
) -> Outcome {
    let last_sent: HashMap<u32, Option<u64>> = load
        .stopped
        .iter()
        .map(|s| (s.id, s.last_sent_mono_ns))
        .collect();
    let (start, end) = (load.started_mono_ns, load.ended_mono_ns);
    // Until when a node was alive (and could be wrongly suspected).
    let alive_until = |id: u32| match last_sent.get(&id) {
        Some(&Some(last)) => last.min(end),
        Some(None) => start,
        None => end,
    };
    let suspect_logged = events
        .iter()
        .any(|e| SUSPECT_EVENTS.contains(&e.event.as_str()));
    let mut events: Vec<&Event> = events.iter().collect();
    events.sort_by_key(|e| e.mono_ns);

    let mut open: HashMap<u32, Open> = HashMap::new();
    let mut durations: Vec<u64> = Vec::new();
    let mut silences: Vec<u64> = Vec::new();
    let mut false_suspicions = 0;
    let mut false_downs = 0;
    let mut false_downs_listed = Vec::new();
    let mut down_silences: Vec<u64> = Vec::new();
    let mut warm_up = WarmUp::default();
    let warm_up_end = start + WARM_UP.as_nanos() as u64;
    let mut first_down: HashMap<u32, u64> = HashMap::new();
    let mut first_suspicion: HashMap<u32, u64> = HashMap::new();
    for e in events {
        let down = e.event == DOWN_EVENT;
        if e.mono_ns >= alive_until(e.node_id) {
            // A dead node after its last heartbeat: a detection.
            if (down || SUSPECT_EVENTS.contains(&e.event.as_str()))
                && let Some(&Some(last)) = last_sent.get(&e.node_id)
                && e.mono_ns >= last
            {
                first_suspicion.entry(e.node_id).or_insert(e.mono_ns);
            }
            if down
                && let Some(&Some(last)) = last_sent.get(&e.node_id)
                && e.mono_ns >= last
            {
                first_down.entry(e.node_id).or_insert(e.mono_ns);
            }
            continue;
        }
        if down || SUSPECT_EVENTS.contains(&e.event.as_str()) {
            let entry = open.entry(e.node_id).or_insert_with(|| {
                false_suspicions += 1;
                if e.mono_ns < warm_up_end {
                    warm_up.false_suspicions += 1;
                }
                silences.extend(e.since_last_heartbeat_ms.map(|ms| ms * 1_000_000));
                Open {
                    since_ns: e.mono_ns,
                    reached_down: false,
                }
            });
            if down && !entry.reached_down {
                entry.reached_down = true;
                let early = entry.since_ns < warm_up_end;
                if early {
                    warm_up.false_downs += 1;
                }
                false_downs += 1;
                down_silences.extend(e.since_last_heartbeat_ms.map(|ms| ms * 1_000_000));
                let listed = if early {
                    warm_up.false_downs
                } else {
                    false_downs - warm_up.false_downs
                };
                if listed <= FALSE_DOWNS_LISTED {
                    false_downs_listed.push(FalseDown {
                        node_id: e.node_id,
                        at_ms: e.mono_ns.saturating_sub(start) as f64 / 1e6,
                        silence_ms: e.since_last_heartbeat_ms,
                    });
                }
            }
        } else if e.event == UP_EVENT
            && let Some(o) = open.remove(&e.node_id)
        {
            durations.push(e.mono_ns - o.since_ns);
        }
    }
    let open_at_end = open.len();
    for (id, o) in open {
        durations.push(alive_until(id).saturating_sub(o.since_ns));
    }
    durations.sort_unstable();
    silences.sort_unstable();
    down_silences.sort_unstable();

    let running = u64::from(load.nodes).saturating_sub(last_sent.len() as u64);
    // Node-hours alive from the start to `until`.
    let node_hours_to = |until: u64| {
        let until = until.min(end);
        let ns = running as f64 * until.saturating_sub(start) as f64
            + last_sent
                .values()
                .flatten()
                .map(|&last| last.min(until).saturating_sub(start) as f64)
                .sum::<f64>();
        ns / 3.6e12
    };
    let node_hours = node_hours_to(end);
    warm_up.node_hours = node_hours_to(warm_up_end);

    let never_sent = last_sent.values().filter(|l| l.is_none()).count();
    let mut latencies: Vec<u64> = last_sent
        .iter()
        .filter_map(|(id, last)| Some(first_down.get(id)? - (*last)?))
        .collect();
    latencies.sort_unstable();
    let mut suspected: Vec<u64> = last_sent
        .iter()
        .filter_map(|(id, last)| Some(first_suspicion.get(id)? - (*last)?))
        .collect();
    suspected.sort_unstable();
    let missed = last_sent.len() - never_sent - latencies.len();
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
        false_suspicions,
        false_suspicions_per_node_hour: false_suspicions as f64 / node_hours,
        false_downs,
        warm_up,
        false_downs_listed,
        silence_at_false_down: Spread::of(&down_silences),
        open_at_end,
        mistake_duration: Spread::of(&durations),
        mistake_durations_ns: durations,
        silence_at_false_suspicion: Spread::of(&silences),
        stopped: last_sent.len(),
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

/// Both detectors' false suspicions over every scenario.
#[derive(Debug, Serialize)]
struct Pooled {
    phi_false_suspicions: usize,
    phi_node_hours: f64,
    timeout_false_suspicions: usize,
    timeout_node_hours: f64,
    ratio: Ratio,
    ratio_after_warm_up: Ratio,
}

fn pooled(comparisons: &[Comparison]) -> Pooled {
    let sum = |pick: Pick, sample: fn(&Outcome) -> (usize, f64)| {
        comparisons
            .iter()
            .map(|c| sample(pick(c)))
            .fold((0, 0.0), |(n, h), (count, hours)| (n + count, h + hours))
    };
    let phi = sum(|c| &c.phi, Outcome::sample);
    let timeout = sum(|c| &c.timeout, Outcome::sample);
    Pooled {
        phi_false_suspicions: phi.0,
        phi_node_hours: phi.1,
        timeout_false_suspicions: timeout.0,
        timeout_node_hours: timeout.1,
        ratio: Ratio::of(timeout, phi),
        ratio_after_warm_up: Ratio::of(
            sum(|c| &c.timeout, Outcome::sample_after_warm_up),
            sum(|c| &c.phi, Outcome::sample_after_warm_up),
        ),
    }
}

fn ms(ns: Option<u64>) -> String {
    ns.map_or_else(|| "-".to_owned(), |ns| format!("{:.1}", ns as f64 / 1e6))
}

fn ms_f(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0}"))
}

fn print_scenario(c: &Comparison, size: Size) {
    let mut table = Table::new(&[
        "detector",
        "setting",
        "p50 ms",
        "p99 ms",
        "max ms",
        "suspected p50",
        "detected",
        "missed",
        "false susp.",
        "per node-h",
        "false downs",
        "in warm-up",
        "mistake mean ms",
        "max ms",
    ])
    .text_column(1);
    for o in [&c.phi, &c.timeout] {
        table.row(vec![
            o.detector.name().to_owned(),
            o.detector.setting(),
            ms(o.p50_ns),
            ms(o.p99_ns),
            ms(o.max_ns),
            o.time_to_suspect
                .p50_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}")),
            format!("{}/{}", o.detected, o.stopped - o.never_sent),
            o.missed.to_string(),
            o.false_suspicions.to_string(),
            number(o.false_suspicions_per_node_hour),
            o.false_downs.to_string(),
            format!("{}/{}", o.warm_up.false_suspicions, o.warm_up.false_downs),
            ms_f(o.mistake_duration.mean_ms),
            ms_f(o.mistake_duration.max_ms),
        ]);
    }
    let faults = &c.phi.load.faults;
    let injected = if c.scenario.agent_stall {
        match c.phi.stall.zip(c.timeout.stall) {
            Some((a, b)) => format!(
                "agent stopped {:.2} s / {:.2} s; it logged the stall {} / {} times",
                (a.continued_mono_ns - a.stopped_mono_ns) as f64 / 1e9,
                (b.continued_mono_ns - b.stopped_mono_ns) as f64 / 1e9,
                a.noticed_in_log,
                b.noticed_in_log
            ),
            None => "agent not stopped".to_owned(),
        }
    } else if faults.pauses > 0 {
        format!("{} pauses", si(faults.pauses as f64))
    } else {
        let lost = faults.lost_random + faults.lost_in_bursts;
        format!(
            "{} heartbeats lost ({:.2}%){}",
            si(lost as f64),
            100.0 * lost as f64 / c.phi.load.heartbeats.max(1) as f64,
            if faults.bursts > 0 {
                format!(" in {} bursts", si(faults.bursts as f64))
            } else {
                String::new()
            }
        )
    };
    table.print(&format!(
        "{}: {} nodes every {} ms for {} s, {} die; {injected}; a suspicion is a `{}` (phi) / \
         `{}` (timeout); in warm-up: false suspicions/downs in the first {} s",
        c.scenario.label(),
        si(f64::from(size.nodes)),
        INTERVAL.as_millis(),
        size.run.as_secs(),
        c.phi.stopped,
        c.phi.suspicion_event,
        c.timeout.suspicion_event,
        WARM_UP.as_secs()
    ));
}

fn print_summary(comparisons: &[Comparison], pooled: &Pooled) {
    let mut table = Table::new(&[
        "scenario",
        "phi p50 ms",
        "timeout p50 ms",
        "phi /node-h",
        "timeout /node-h",
        "timeout / phi",
        "after warm-up",
    ]);
    for c in comparisons {
        table.row(vec![
            c.scenario.label(),
            ms(c.phi.p50_ns),
            ms(c.timeout.p50_ns),
            number(c.phi.false_suspicions_per_node_hour),
            number(c.timeout.false_suspicions_per_node_hour),
            c.ratio.text(),
            c.ratio_after_warm_up.text(),
        ]);
    }
    table.row(vec![
        "pooled".to_owned(),
        String::new(),
        String::new(),
        number(pooled.phi_false_suspicions as f64 / pooled.phi_node_hours),
        number(pooled.timeout_false_suspicions as f64 / pooled.timeout_node_hours),
        pooled.ratio.text(),
        pooled.ratio_after_warm_up.text(),
    ]);
    table.print(&format!(
        "False suspicions per node-hour at the same median detection time (>=: phi made \
             none, one counted; after warm-up: without the first {} s)",
        WARM_UP.as_secs()
    ));
}

fn targets(comparisons: &[Comparison], pooled: &Pooled) -> (Vec<Target>, Vec<String>) {
    let mut targets = Vec::new();
    let mut facts = Vec::new();
    for c in comparisons {
        let label = c.scenario.label();
        let phi = &c.phi;
        targets.push(
            Target::new(
                PHASE,
                format!("phi false downs, {label}"),
                phi.false_downs as f64,
                "",
                Bound::AtMost,
                0.0,
            )
            .with_note(format!(
                "{} in the first {} s; {} false suspicions in {:.1} node-hours (timeout at the \
                 same median: {} false downs, {} false suspicions)",
                phi.warm_up.false_downs,
                WARM_UP.as_secs(),
                phi.false_suspicions,
                phi.node_hours,
                c.timeout.false_downs,
                c.timeout.false_suspicions
            )),
        );
        targets.push(
            Target::new(
                PHASE,
                format!("phi detection p99, {label}"),
                phi.p99_with_missed_ns
                    .map_or(f64::INFINITY, |ns| ns as f64 / 1e6),
                "ms",
                Bound::Below,
                P99_LIMIT_MS,
            )
            .with_note(format!(
                "{} of {} dead nodes detected ({} missed, counted as never), p50 {} ms, max {} ms",
                phi.detected,
                phi.stopped - phi.never_sent,
                phi.missed,
                ms(phi.p50_ns),
                ms(phi.max_ns)
            )),
        );
        let medians = format!(
            "medians phi {} ms, timeout {} ms ({})",
            ms(phi.p50_ns),
            ms(c.timeout.p50_ns),
            c.timeout.detector.setting()
        );
        if c.timeout.false_suspicions == 0 && phi.false_suspicions == 0 {
            facts.push(format!(
                "{PHASE}: {label}: neither detector made a false suspicion at the same median \
                 detection time: no ratio to measure; {medians}"
            ));
        } else {
            targets.push(
                Target::new(
                    PHASE,
                    format!("false suspicions timeout/phi, {label}"),
                    c.ratio.value,
                    "x",
                    Bound::AtLeast,
                    RATIO_LIMIT,
                )
                .with_note(format!(
                    "{}per node-hour: timeout {} ({}), phi {} ({}); after the first {} s: {}x; \
                     {medians}",
                    if c.ratio.lower_bound {
                        "a lower bound (phi made none: one counted); "
                    } else {
                        ""
                    },
                    number(c.timeout.false_suspicions_per_node_hour),
                    c.timeout.false_suspicions,
                    number(phi.false_suspicions_per_node_hour),
                    phi.false_suspicions,
                    WARM_UP.as_secs(),
                    c.ratio_after_warm_up.text(),
                )),
            );
        }
    }
    targets.push(
        Target::new(
            PHASE,
            "false suspicions timeout/phi, pooled",
            pooled.ratio.value,
            "x",
            Bound::AtLeast,
            RATIO_LIMIT,
        )
        .with_note(format!(
            "{}timeout {} in {:.1} node-hours, phi {} in {:.1}, each scenario at phi's median; \
             after the first {} s: {}x",
            if pooled.ratio.lower_bound {
                "a lower bound (phi made none: one counted); "
            } else {
                ""
            },
            pooled.timeout_false_suspicions,
            pooled.timeout_node_hours,
            pooled.phi_false_suspicions,
            pooled.phi_node_hours,
            WARM_UP.as_secs(),
            pooled.ratio_after_warm_up.text(),
        )),
    );
    (targets, facts)
}

/// One detector's outcome of a comparison.
type Pick = fn(&Comparison) -> &Outcome;

const PHI_COLOR: RGBColor = RGBColor(0, 114, 178);
const TIMEOUT_COLOR: RGBColor = RGBColor(213, 94, 0);

/// Labels of a log axis: 1, 2 and 5 times a power of ten, as plain numbers.
fn log_label(v: &f64) -> String {
    if *v <= 0.0 {
        return String::new();
    }
    let exponent = v.log10().floor();
    let mantissa = v / 10f64.powf(exponent);
    if ![1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m: &f64| (mantissa - m).abs() < 1e-6 * m)
    {
        return String::new();
    }
    let decimals = (-exponent).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// Bars of the false suspicions per node-hour, timeout and phi side by side
/// per scenario, on a log scale; a detector that made none gets an empty
/// box labelled 0 at the bottom.
fn mistakes_plot(path: &Path, comparisons: &[Comparison]) -> Result<()> {
    let failed = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let rates: Vec<f64> = comparisons
        .iter()
        .flat_map(|c| [&c.phi, &c.timeout])
        .map(|o| o.false_suspicions_per_node_hour)
        .collect();
    // Down to a decade below one mistake in the largest sample (what one
    // false suspicion would read), up to a decade above the largest rate.
    let resolution = comparisons
        .iter()
        .flat_map(|c| [&c.phi, &c.timeout])
        .map(|o| 1.0 / o.node_hours)
        .chain(rates.iter().copied().filter(|&r| r > 0.0))
        .fold(f64::INFINITY, f64::min);
    let low = 10f64.powf(resolution.log10().floor() - 1.0);
    let high = 10f64.powf(
        rates
            .iter()
            .copied()
            .fold(resolution, f64::max)
            .log10()
            .ceil()
            + 1.0,
    );
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let groups = comparisons.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "False suspicions at the same median detection time",
            ("sans-serif", 28),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..groups, (low..high).log_scale())
        .map_err(|e| failed(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("false suspicions per node-hour")
        .y_label_formatter(&log_label)
        .label_style(("sans-serif", 17))
        .axis_desc_style(("sans-serif", 19))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| failed(&e))?;
    let detectors: [(&str, RGBColor, Pick, f64); 2] = [
        ("timeout (same median)", TIMEOUT_COLOR, |c| &c.timeout, 0.12),
        ("phi", PHI_COLOR, |c| &c.phi, 0.52),
    ];
    for (name, color, outcome, offset) in detectors {
        let bars: Vec<Rectangle<(f64, f64)>> = comparisons
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let rate = outcome(c).false_suspicions_per_node_hour;
                let x = i as f64 + offset;
                if rate > 0.0 {
                    Rectangle::new([(x, low), (x + 0.36, rate)], color.filled())
                } else {
                    Rectangle::new([(x, low), (x + 0.36, low * 1.4)], color.stroke_width(2))
                }
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(|e| failed(&e))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], color.filled()));
        let zeros: Vec<Text<'_, (f64, f64), String>> = comparisons
            .iter()
            .enumerate()
            .filter(|(_, c)| outcome(c).false_suspicions == 0)
            .map(|(i, _)| {
                Text::new(
                    "0".to_owned(),
                    (i as f64 + offset + 0.18, low * 1.5),
                    ("sans-serif", 17)
                        .into_font()
                        .color(&color)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            })
            .collect();
        chart.draw_series(zeros).map_err(|e| failed(&e))?;
    }
    for (i, c) in comparisons.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, low));
        root.draw(&Text::new(
            c.scenario.label(),
            (x, y + 10),
            ("sans-serif", 17)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(|e| failed(&e))?;
    }
    plot::legend_and_present(&mut chart, &root, path)
}

/// Points of the CDF of `sorted` (ns, shown in ms), at most about
/// [`CDF_POINTS`] of them.
fn cdf_points(sorted: &[u64]) -> Vec<(f64, f64)> {
    let n = sorted.len();
    let step = n.div_ceil(CDF_POINTS).max(1);
    (0..n)
        .filter(|k| k % step == 0 || k + 1 == n)
        .map(|k| (sorted[k] as f64 / 1e6, (k + 1) as f64 / n as f64))
        .collect()
}

/// Points a CDF is drawn with, at most about.
const CDF_POINTS: usize = 200;

/// How long the false suspicions lasted (CDFs): a colour per scenario, phi
/// solid, timeout dashed; a detector without mistakes has no curve.
fn durations_plot(path: &Path, comparisons: &[Comparison]) -> Result<()> {
    let mut series = Vec::new();
    for (i, c) in comparisons.iter().enumerate() {
        for o in [&c.phi, &c.timeout] {
            if o.mistake_durations_ns.is_empty() {
                continue;
            }
            let name = format!(
                "{} {} ({})",
                c.scenario.label(),
                o.detector.name(),
                o.false_suspicions
            );
            let points = cdf_points(&o.mistake_durations_ns);
            series.push(match o.detector {
                Detector::Phi => Series::line(name, points, i),
                Detector::Timeout { .. } => Series::dashed(name, points, i),
            });
        }
    }
    plot::linear(
        path,
        "How long false suspicions lasted (CDF; phi solid, timeout dashed)",
        ("suspected -> up again (ms)", plot::plain_format),
        ("fraction of the false suspicions", plot::plain_format),
        &series,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(nodes: u32, stopped: &[(u32, Option<u64>)]) -> LoadReport {
        serde_json::from_value(json!({
            "nodes": nodes, "interval_ns": 100_000_000, "rate": 100.0, "achieved_rate": 100.0,
            "heartbeats": 1, "sent": 1, "send_errors": 0, "unsent": 0,
            "started_mono_ns": 0, "ended_mono_ns": 3_600_000_000_000_u64, "stop_mono_ns": 300,
            "max_lag_ns": 0, "late_batches": 0, "interrupted": false,
            "stopped": stopped.iter().map(|(id, last)| json!({"id": id, "last_sent_mono_ns": last})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn event(node_id: u32, event: &str, mono_ns: u64) -> Event {
        Event {
            mono_ns,
            event: event.to_owned(),
            node_id,
            since_last_heartbeat_ms: Some(500),
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn suspicions_with_a_suspect_state() {
        // 4 nodes for an hour; node 4 dies at 1800 s.
        let load = report(4, &[(4, Some(1800 * S))]);
        let events = vec![
            event(1, "up", S),
            event(2, "up", S),
            event(3, "up", S),
            event(4, "up", S),
            event(1, "suspect", 10 * S), // a suspicion of 1 s
            event(1, "up", 11 * S),
            event(2, "suspect", 20 * S), // to down, back after 5 s
            event(2, "down", 21 * S),
            event(2, "flapping", 23 * S),
            event(2, "up", 25 * S),
            event(4, "suspect", 1000 * S), // before it died: false
            event(4, "up", 1000 * S + S / 2),
            event(4, "suspect", 1800 * S + S / 2), // after: a detection
            event(4, "down", 1800 * S + S * 7 / 10),
            event(3, "suspect", 3599 * S),  // open at the end
            event(3, "down", 3600 * S + 1), // after the end: not counted
        ];
        let o = analyse(Detector::Phi, load, &events, None);
        assert_eq!(o.suspicion_event, "suspect");
        assert_eq!(o.false_suspicions, 4);
        assert_eq!(o.false_downs, 1);
        assert_eq!(o.open_at_end, 1);
        assert_eq!(o.mistake_duration.count, 4);
        assert_eq!(o.mistake_duration.max_ms, Some(5000.0));
        assert_eq!(
            o.mistake_duration.mean_ms,
            Some((1000.0 + 5000.0 + 500.0 + 1000.0) / 4.0)
        );
        assert_eq!(o.latencies_ns, vec![S * 7 / 10]);
        assert_eq!(o.time_to_suspect.max_ms, Some(500.0));
        assert_eq!((o.detected, o.missed), (1, 0));
        assert!((o.node_hours - 3.5).abs() < 1e-9, "{}", o.node_hours);
        assert!((o.false_suspicions_per_node_hour - 4.0 / 3.5).abs() < 1e-9);
        assert_eq!(o.p99_with_missed_ns, Some(S * 7 / 10));
    }

    #[test]
    fn suspicions_are_downs_without_a_suspect_state() {
        let load = report(3, &[(3, Some(100 * S)), (2, None)]);
        let events = vec![
            event(1, "up", S),
            event(1, "down", 5 * S),
            event(1, "up", 7 * S),
            event(1, "down", 9 * S),
        ];
        let o = analyse(Detector::Timeout { interval_ms: 220 }, load, &events, None);
        assert_eq!(o.suspicion_event, "down");
        assert_eq!(
            (o.false_suspicions, o.false_downs, o.open_at_end),
            (2, 2, 1)
        );
        assert_eq!(o.mistake_duration.max_ms, Some(3591.0 * 1e3));
        // Node 3 never declared down: missed; node 2 never sent.
        assert_eq!(
            (o.stopped, o.detected, o.missed, o.never_sent),
            (2, 0, 1, 1)
        );
        assert_eq!(o.p99_with_missed_ns, None);
        assert_eq!(o.timeout_ms, Some(660));
    }

    #[test]
    fn warm_up_mistakes_are_counted_apart() {
        let load = report(2, &[]);
        let events = vec![
            event(1, "up", S / 10),
            event(1, "suspect", S / 2),
            event(1, "down", S),
            event(1, "up", 3 * S),
            event(2, "suspect", 5 * S),
            event(2, "up", 6 * S),
        ];
        let o = analyse(Detector::Phi, load, &events, None);
        assert_eq!((o.false_suspicions, o.false_downs), (2, 1));
        assert_eq!((o.warm_up.false_suspicions, o.warm_up.false_downs), (1, 1));
        assert!((o.warm_up.node_hours - 4.0 / 3600.0).abs() < 1e-12);
        assert_eq!(o.sample_after_warm_up().0, 1);
        assert_eq!(o.false_downs_listed[0].at_ms, 1000.0);
    }

    #[test]
    fn matching_and_ratios() {
        // Phi's median 668 ms: timeout 663 ms = 3 x 221 ms.
        assert_eq!(matched_interval_ms(Some(668_000_000)), 221);
        assert!((phi_deadline_ms() - 761.3).abs() < 1e-9);
        assert_eq!(matched_interval_ms(None), 252);
        let ratio = |t, p| {
            let r = Ratio::of(t, p);
            (r.value, r.lower_bound)
        };
        assert_eq!(ratio((100, 10.0), (2, 10.0)), (50.0, false));
        assert_eq!(ratio((30, 10.0), (0, 10.0)), (30.0, true));
        assert_eq!(Ratio::of((30, 10.0), (0, 10.0)).text(), ">= 30");
        assert_eq!(ratio((0, 10.0), (3, 10.0)), (0.0, false));
        assert!(ratio((0, 10.0), (0, 10.0)).0.is_nan());
        assert_eq!(Ratio::of((0, 1.0), (0, 1.0)).text(), "-");
        assert_eq!(Ratio::of((16094, 1.0), (0, 1.0)).text(), ">= 16094");
        assert_eq!(log_label(&0.01), "0.01");
        assert_eq!(log_label(&200.0), "200");
        assert_eq!(log_label(&300.0), "");
        assert!(Detector::Phi.section().contains("phi_threshold = 8.0\n"));
    }

    #[test]
    fn draws_the_mistakes_plot() {
        let dir = std::env::temp_dir().join(format!("xtask-quality-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.svg");
        let outcome = |detector, suspicions: usize| {
            let mut o = analyse(detector, report(10, &[]), &[], None);
            o.false_suspicions = suspicions;
            o.false_suspicions_per_node_hour = suspicions as f64 / o.node_hours;
            o
        };
        let comparisons: Vec<Comparison> = scenarios()
            .into_iter()
            .enumerate()
            .map(|(i, scenario)| Comparison {
                scenario,
                phi: outcome(Detector::Phi, i % 2),
                timeout: outcome(Detector::Timeout { interval_ms: 220 }, 10 * i),
                ratio: Ratio::of((1, 1.0), (1, 1.0)),
                ratio_after_warm_up: Ratio::of((1, 1.0), (0, 1.0)),
            })
            .collect();
        mistakes_plot(&path, &comparisons).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("(c) 500 ms sender pauses"), "{svg}");
        assert!(svg.contains(">\n0\n</text>"), "{svg}");
        durations_plot(&path, &comparisons).unwrap();
        let points = cdf_points(&(1..=1000).collect::<Vec<u64>>());
        assert!(points.len() <= CDF_POINTS + 1, "{}", points.len());
        assert_eq!(points.last(), Some(&(1000.0 / 1e6, 1.0)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
