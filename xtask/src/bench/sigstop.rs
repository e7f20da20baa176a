//! SIGSTOP faults on one node, shared by the phases `single` and
//! `starved`. `hb send` beats for node 1 every 10 ms (no jitter) to an agent
//! on the XDP datapath with timeout 3 x 10 ms and `sweep_period` 10 ms (the
//! longest the configuration allows at a 10 ms interval). Each fault:
//!
//! 1. waits [`SETTLE`] plus a fraction of an interval that differs from
//!    fault to fault (golden-ratio steps, so the stop falls at every phase
//!    of the sender's and the sweep's schedules, reproducibly);
//! 2. reads `CLOCK_MONOTONIC` and stops the sender at once (SIGSTOP);
//! 3. waits for the node's `down` in the agent's event log;
//! 4. continues the sender (SIGCONT) and waits for its `up`.
//!
//! Detection = the `down`'s `mono_ns` (when the sweep that convicted the
//! node started) - the stop time, as bfdd was measured in the same harness
//! (issue 12). Any other `down` of the node is a false down; a fault
//! without a `down` within [`DOWN_WAIT`] is missed. Flap damping is off
//! (`flap_max = 0`), so every fault is judged alone.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use hb_tests::{Sender, interrupt, monotonic_ns};
use serde::Serialize;

use super::{
    output::{Bound, Progress, Target, ms},
    plot::{self, Series},
    rig::{Agent, AgentSetup, EventRecord, EventTail},
    stats::percentile,
};

/// The node `hb send` beats for.
pub const NODE: u32 = 1;
pub const INTERVAL: Duration = Duration::from_millis(10);
pub const MULTIPLIER: u32 = 3;
/// `defaults.sweep_period`: at most the interval. An agent whose sweep
/// wakes at deadlines sweeps at least this often, to see new heartbeats
/// and leaves in time.
pub const SWEEP: Duration = Duration::from_millis(10);
/// The `[detector]` section: no flap damping, every fault stands alone.
pub const DETECTOR: &str = "[detector]\nflap_max = 0\n";
/// The node beats this long (plus a fraction of an interval) between
/// coming back up and the next fault.
const SETTLE: Duration = Duration::from_millis(200);
/// How long a fault waits for the `down` before it counts as missed.
const DOWN_WAIT: Duration = Duration::from_secs(2);
/// How long the node may take to be `up` again after SIGCONT (the
/// detector's `rise` is 2 heartbeats: 20 ms).
const UP_WAIT: Duration = Duration::from_secs(2);
/// How long the node may take to be `up` the first time.
const FIRST_UP_WAIT: Duration = Duration::from_secs(10);
/// How often the event log is read while waiting.
const POLL: Duration = Duration::from_millis(1);

/// The agent's setup: node 1, 10 ms x 3, sweep 10 ms, XDP.
pub fn setup() -> AgentSetup {
    AgentSetup {
        datapath: "xdp",
        nodes: 1,
        interval: INTERVAL,
        timeout_multiplier: MULTIPLIER,
        sweep_period: SWEEP,
    }
}

/// The longest `faults` faults can take, every wait included: a bound for
/// what runs beside them.
pub fn worst_case(faults: u32) -> Duration {
    (SETTLE + INTERVAL + DOWN_WAIT + UP_WAIT) * faults + FIRST_UP_WAIT
}

/// About how long `faults` faults take when every one is detected in time.
pub fn expected(faults: u32) -> Duration {
    (SETTLE + INTERVAL * 8) * faults
}

/// One fault, as it happened.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Fault {
    /// `CLOCK_MONOTONIC` right before SIGSTOP, ns.
    pub stopped_ns: u64,
    /// Right after SIGCONT.
    pub continued_ns: u64,
}

/// Waits until node 1 is `up` (the first time after the agent started).
pub fn wait_until_up(tail: &mut EventTail) -> Result<u64> {
    wait_for(tail, "up", 0, FIRST_UP_WAIT)?
        .with_context(|| format!("node {NODE} was not up within {FIRST_UP_WAIT:?}"))
}

/// Injects `faults` SIGSTOP faults into `sender`, watched by `agent`
/// (whose node 1 must be up). Every wait is bounded; the sender is left
/// running.
pub fn inject(
    agent: &mut Agent<'_>,
    sender: &mut Sender,
    faults: u32,
    progress: &Progress,
    label: &str,
) -> Result<Vec<Fault>> {
    let mut tail = agent.tail()?;
    let mut done = Vec::new();
    for k in 0..faults {
        interrupt::sleep(SETTLE + phase_offset(k))?;
        sender.ensure_running()?;
        agent.ensure_running()?;
        let stopped_ns = sender.freeze()?;
        let down = wait_for(&mut tail, "down", stopped_ns, DOWN_WAIT);
        let continued_ns = sender.thaw()?;
        let down = down?;
        done.push(Fault {
            stopped_ns,
            continued_ns,
        });
        if wait_for(&mut tail, "up", continued_ns, UP_WAIT)?.is_none() {
            bail!(
                "{label}: node {NODE} was not up again within {UP_WAIT:?} of SIGCONT (fault {})",
                k + 1
            );
        }
        progress.step(format!(
            "{label}: fault {}/{faults}: {}",
            k + 1,
            down.map_or_else(
                || "no down".to_owned(),
                |at| format!("down after {} ms", ms(Some(at.saturating_sub(stopped_ns))))
            )
        ));
    }
    Ok(done)
}

/// Fault `k`'s extra wait: `frac(k / golden ratio)` of an interval.
fn phase_offset(k: u32) -> Duration {
    let fraction = (f64::from(k) * 0.618_033_988_749_895).fract();
    INTERVAL.mul_f64(fraction)
}

/// The `mono_ns` of the first `event` of node 1 at or after `since_ns`
/// that the event log shows within `within`; `None` if none did.
fn wait_for(
    tail: &mut EventTail,
    event: &str,
    since_ns: u64,
    within: Duration,
) -> Result<Option<u64>> {
    let deadline = monotonic_ns() + within.as_nanos() as u64;
    loop {
        let found = tail
            .read()?
            .into_iter()
            .find(|e| e.node_id == NODE && e.event == event && e.mono_ns >= since_ns);
        if let Some(record) = found {
            return Ok(Some(record.mono_ns));
        }
        if monotonic_ns() >= deadline {
            return Ok(None);
        }
        interrupt::sleep(POLL)?;
    }
}

/// What the agent made of the faults.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    pub faults: usize,
    pub detected: usize,
    /// Faults with no `down` before SIGCONT.
    pub missed: usize,
    /// `down`s of the node outside a fault, or a second one in a fault.
    pub false_downs: usize,
    /// When each false down came, ns after the last SIGCONT before it
    /// (none: before the first fault).
    pub false_downs_after_continue_ns: Vec<Option<u64>>,
    /// Sorted detection latencies (down - stop), ns.
    pub latencies_ns: Vec<u64>,
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub max_ns: Option<u64>,
    pub min_ns: Option<u64>,
    /// Each fault, with its latency (none: missed), in order.
    pub records: Vec<FaultRecord>,
}

/// One fault and its detection.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FaultRecord {
    #[serde(flatten)]
    pub fault: Fault,
    pub latency_ns: Option<u64>,
}

impl Detection {
    /// The target every run of faults is held to: no false down, no fault
    /// missed.
    pub fn errors_target(&self, phase: &'static str, name: String) -> Target {
        Target::new(
            phase,
            name,
            (self.false_downs + self.missed) as f64,
            "",
            Bound::AtMost,
            0.0,
        )
        .with_note(format!(
            "{} false downs, {} of {} faults missed",
            self.false_downs, self.missed, self.faults
        ))
    }

    /// Judges `faults` by the agent's whole event log.
    pub fn analyse(faults: &[Fault], events: &[EventRecord]) -> Self {
        let downs: Vec<u64> = events
            .iter()
            .filter(|e| e.node_id == NODE && e.event == "down")
            .map(|e| e.mono_ns)
            .collect();
        let first_in = |fault: &Fault| {
            downs
                .iter()
                .copied()
                .filter(|&at| at >= fault.stopped_ns && at < fault.continued_ns)
                .min()
        };
        let records: Vec<FaultRecord> = faults
            .iter()
            .map(|fault| FaultRecord {
                fault: *fault,
                latency_ns: first_in(fault).map(|at| at - fault.stopped_ns),
            })
            .collect();
        let matched: Vec<u64> = faults.iter().filter_map(first_in).collect();
        let false_downs_after_continue_ns: Vec<Option<u64>> = downs
            .iter()
            .filter(|at| !matched.contains(at))
            .map(|&at| {
                faults
                    .iter()
                    .filter(|f| f.continued_ns <= at)
                    .map(|f| at - f.continued_ns)
                    .min()
            })
            .collect();
        let mut latencies: Vec<u64> = records.iter().filter_map(|r| r.latency_ns).collect();
        latencies.sort_unstable();
        Self {
            faults: faults.len(),
            detected: latencies.len(),
            missed: faults.len() - latencies.len(),
            false_downs: false_downs_after_continue_ns.len(),
            false_downs_after_continue_ns,
            p50_ns: percentile(&latencies, 0.5),
            p99_ns: percentile(&latencies, 0.99),
            max_ns: latencies.last().copied(),
            min_ns: latencies.first().copied(),
            latencies_ns: latencies,
            records,
        }
    }

    /// The p99 in ms, infinite when nothing was detected.
    pub fn p99_ms(&self) -> f64 {
        self.p99_ns.map_or(f64::INFINITY, |ns| ns as f64 / 1e6)
    }

    /// `median 24.1 ms, p99 29.8 ms, max 29.8 ms (40 faults)`.
    pub fn summary(&self) -> String {
        format!(
            "median {} ms, p99 {} ms, max {} ms, min {} ms ({} of {} faults detected, {} false \
             downs)",
            ms(self.p50_ns),
            ms(self.p99_ns),
            ms(self.max_ns),
            ms(self.min_ns),
            self.detected,
            self.faults,
            self.false_downs
        )
    }
}

/// The CDF of the detection latencies, one curve per run, with dashed
/// vertical lines at `marks` (label, ms).
pub fn cdf_plot(
    path: &Path,
    title: &str,
    curves: &[(String, &Detection)],
    marks: &[(&str, f64)],
) -> Result<()> {
    let mut series: Vec<Series> = curves
        .iter()
        .enumerate()
        .map(|(i, (label, d))| {
            let n = d.latencies_ns.len() as f64;
            Series::line(
                label.clone(),
                d.latencies_ns
                    .iter()
                    .enumerate()
                    .map(|(k, &ns)| (ns as f64 / 1e6, (k + 1) as f64 / n))
                    .collect(),
                i,
            )
        })
        .collect();
    for (i, (label, at_ms)) in marks.iter().enumerate() {
        series.push(Series::dashed(
            *label,
            vec![(*at_ms, 0.0), (*at_ms, 1.0)],
            curves.len() + i,
        ));
    }
    plot::linear(
        path,
        title,
        ("SIGSTOP -> down (ms)", plot::plain_format),
        ("fraction of faults detected", plot::plain_format),
        &series,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, node_id: u32, mono_ns: u64) -> EventRecord {
        EventRecord {
            mono_ns,
            event: event.into(),
            node_id,
        }
    }

    #[test]
    fn latencies_misses_and_false_downs() {
        let faults = [
            Fault {
                stopped_ns: 1000,
                continued_ns: 2000,
            },
            Fault {
                stopped_ns: 3000,
                continued_ns: 4000,
            },
            Fault {
                stopped_ns: 5000,
                continued_ns: 6000,
            },
        ];
        let events = vec![
            event("up", 1, 10),
            event("down", 1, 500), // before any fault: false
            event("suspect", 1, 1010),
            event("down", 1, 1025),
            event("down", 1, 1900), // a second one in the same fault: false
            event("up", 1, 2020),
            event("down", 2, 3010), // another node: not ours
            // fault 2: missed
            event("down", 1, 4500), // between faults: false
            event("down", 1, 5030),
        ];
        let d = Detection::analyse(&faults, &events);
        assert_eq!(d.latencies_ns, vec![25, 30]);
        assert_eq!((d.faults, d.detected, d.missed), (3, 2, 1));
        assert_eq!(d.false_downs, 3);
        assert_eq!(d.false_downs_after_continue_ns, vec![None, None, Some(500)]);
        assert_eq!(
            (d.p50_ns, d.p99_ns, d.max_ns, d.min_ns),
            (Some(25), Some(30), Some(30), Some(25))
        );
        assert_eq!(d.records[1].latency_ns, None);
        assert_eq!(d.records[2].latency_ns, Some(30));
    }

    #[test]
    fn fault_phases_spread_over_an_interval() {
        let mut offsets: Vec<Duration> = (0..40).map(phase_offset).collect();
        assert_eq!(offsets[0], Duration::ZERO);
        assert!(offsets.iter().all(|o| *o < INTERVAL));
        offsets.sort();
        // Every tenth of the interval holds some.
        for tenth in 0..10 {
            let (low, high) = (INTERVAL * tenth / 10, INTERVAL * (tenth + 1) / 10);
            assert!(offsets.iter().any(|o| *o >= low && *o < high), "{tenth}");
        }
    }
}
