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

mod analysis;
mod comparison;
mod measure;
mod plots;
mod report;
mod scenarios;
mod targets;
#[cfg(test)]
mod tests;

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use serde_json::{Value, json};

use self::{
    comparison::{Comparison, Pooled, Ratio, pooled},
    measure::measure,
    scenarios::{Detector, Scenario, matched_interval_ms, phi_deadline_ms, scenarios},
};
use super::{Ctx, PhaseOutput, output::Progress, rig::Rig};

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

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let size = Size::of(ctx.quick);
    let scenarios = scenarios();
    let planned = (size.run + Duration::from_secs(4)) * 2 * scenarios.len() as u32;
    let rig = Rig::build(ctx.hb, ctx.tools, ctx.work.join(PHASE))?;
    println!("  {}", rig.describe());
    print_setting(size);
    let progress = Progress::start(PHASE, planned);
    let comparisons = scenarios
        .into_iter()
        .map(|scenario| compare(&rig, scenario, size, &progress))
        .collect::<Result<Vec<_>>>()?;
    drop(progress);
    drop(rig);

    for c in &comparisons {
        report::print_scenario(c, size);
    }
    let pooled = pooled(&comparisons);
    report::print_summary(&comparisons, &pooled);

    let (targets, facts) = targets::targets(&comparisons, &pooled);
    let mistakes = ctx.svg("quality-mistakes");
    plots::mistakes_plot(&mistakes, &comparisons)?;
    let durations = ctx.svg("quality-mistake-durations");
    plots::durations_plot(&durations, &comparisons)?;

    Ok(PhaseOutput {
        json: results_json(size, &comparisons, &pooled),
        targets,
        plots: vec![mistakes, durations],
        facts,
    })
}

/// The lines under the lab: the load and both detectors' settings.
fn print_setting(size: Size) {
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
}

/// Runs phi through `scenario`, then the timeout detector at phi's median
/// detection time, and says how many mistakes each made.
fn compare(
    rig: &Rig<'_>,
    scenario: Scenario,
    size: Size,
    progress: &Progress,
) -> Result<Comparison> {
    let phi = measure(rig, &scenario, size, Detector::Phi, progress)?;
    let matched = Detector::Timeout {
        interval_ms: matched_interval_ms(phi.p50_ns),
    };
    let timeout = measure(rig, &scenario, size, matched, progress)?;
    progress.say(format!(
        "  {}: false suspicions phi {} / timeout {}, false downs phi {} / timeout {}",
        scenario.label(),
        phi.false_suspicions,
        timeout.false_suspicions,
        phi.false_downs,
        timeout.false_downs
    ));
    Ok(Comparison {
        scenario,
        ratio: Ratio::of(timeout.sample(), phi.sample()),
        ratio_after_warm_up: Ratio::of(timeout.sample_after_warm_up(), phi.sample_after_warm_up()),
        phi,
        timeout,
    })
}

/// The phase's part of the results file: the setting, then every outcome.
fn results_json(size: Size, comparisons: &[Comparison], pooled: &Pooled) -> Value {
    json!({
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
    })
}
