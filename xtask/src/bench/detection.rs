//! Phase `detection`: how long after a node's last heartbeat the agent
//! declares it down, in two scenarios: (a) 100k nodes beating every 1 s
//! (quick: 10k), (b) 10k nodes every 100 ms. Timeout 3 x interval, sweep
//! every 10 ms, XDP datapath.
//!
//! `hb-tools loadgen --stop-fraction 0.01 --stop-after <3 intervals>` crashes 1%
//! of the nodes and reports when each sent its last heartbeat
//! (`stopped[].last_sent_mono_ns`); the agent's event log says when the
//! sweep that declared it down started (`mono_ns`). Both are
//! `CLOCK_MONOTONIC` on this host, so latency = down - last sent. A `down`
//! for a node that was not stopped, while the load ran, or for a stopped
//! node before its last heartbeat, is a false down; a stopped node never
//! declared down is missed. Target: p99 <= timeout + sweep period + 5 ms,
//! no false down, none missed.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::Duration,
};

use anyhow::Result;
use hb_tests::interrupt;
use serde::Serialize;
use serde_json::json;

use super::{
    Ctx, PhaseOutput,
    output::{Bound, Progress, Table, Target, ms, si},
    plot::{self, Series},
    rig::{AgentSetup, EventRecord, Load, LoadReport, Pace, Rig},
    stats::percentile,
};

const PHASE: &str = "detection";
const MULTIPLIER: u32 = 3;
const SWEEP: Duration = Duration::from_millis(10);
const STOP_FRACTION: f64 = 0.01;
/// The nodes stop this many intervals into the run.
const STOP_AFTER_INTERVALS: u32 = 3;
/// The load runs on this long after the last stopped node should have been
/// declared down.
const MARGIN: Duration = Duration::from_secs(1);
/// Slack on top of timeout + sweep period in the target.
const SLACK: Duration = Duration::from_millis(5);

struct Scenario {
    name: &'static str,
    nodes: u32,
    interval: Duration,
}

/// What one scenario measured.
#[derive(Debug, Serialize)]
struct Outcome {
    name: &'static str,
    nodes: u32,
    interval_ms: f64,
    timeout_ms: f64,
    sweep_period_ms: f64,
    stop_after_ms: f64,
    stopped: usize,
    detected: usize,
    /// Stopped nodes never declared down.
    missed: usize,
    /// Stopped nodes that never sent a heartbeat (not measurable).
    never_sent: usize,
    false_downs: usize,
    /// Sorted detection latencies, ns.
    latencies_ns: Vec<u64>,
    p50_ns: Option<u64>,
    p99_ns: Option<u64>,
    max_ns: Option<u64>,
    min_ns: Option<u64>,
    limit_ns: u64,
    load: LoadReport,
}

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let scenarios = [
        Scenario {
            name: "a",
            nodes: if ctx.quick { 10_000 } else { 100_000 },
            interval: Duration::from_secs(1),
        },
        Scenario {
            name: "b",
            nodes: 10_000,
            interval: Duration::from_millis(100),
        },
    ];
    let planned = scenarios
        .iter()
        .map(|s| load_duration(s) + Duration::from_secs(2))
        .sum();
    let rig = Rig::build(ctx.hb, ctx.tools, ctx.work.join(PHASE))?;
    println!("  {}", rig.describe());
    let progress = Progress::start(PHASE, planned);
    let mut outcomes = Vec::new();
    for scenario in &scenarios {
        outcomes.push(measure(&rig, scenario, &progress)?);
    }
    drop(progress);
    drop(rig);

    print_table(&outcomes);
    let targets = outcomes.iter().flat_map(targets).collect();
    let path = ctx.svg("detection-cdf");
    latency_plot(&path, &outcomes)?;

    Ok(PhaseOutput {
        json: json!({
            "timeout_multiplier": MULTIPLIER,
            "sweep_period_ms": SWEEP.as_secs_f64() * 1e3,
            "stop_fraction": STOP_FRACTION,
            "scenarios": outcomes,
        }),
        targets,
        plots: vec![path],
        facts: Vec::new(),
    })
}

fn print_table(outcomes: &[Outcome]) {
    let mut table = Table::new(&[
        "scenario",
        "timeout ms",
        "stopped",
        "detected",
        "missed",
        "false downs",
        "p50 ms",
        "p99 ms",
        "max ms",
        "limit ms",
    ]);
    for o in outcomes {
        table.row(vec![
            label(o),
            format!("{:.0}", o.timeout_ms),
            o.stopped.to_string(),
            o.detected.to_string(),
            o.missed.to_string(),
            o.false_downs.to_string(),
            ms(o.p50_ns),
            ms(o.p99_ns),
            ms(o.max_ns),
            ms(Some(o.limit_ns)),
        ]);
    }
    table.print(&format!(
        "Detection latency: last heartbeat sent -> down (sweep every {} ms, {:.0}% of nodes \
         crash)",
        SWEEP.as_millis(),
        100.0 * STOP_FRACTION
    ));
}

/// A scenario's p99 within its limit, and no false down or missed node.
fn targets(o: &Outcome) -> [Target; 2] {
    let p99 = o.p99_ns.map_or(f64::INFINITY, |ns| ns as f64 / 1e6);
    [
        Target::new(
            PHASE,
            format!("detection p99, {}", label(o)),
            p99,
            "ms",
            Bound::AtMost,
            o.limit_ns as f64 / 1e6,
        )
        .with_note(format!(
            "timeout {:.0} ms + sweep {:.0} ms + 5 ms; {} latencies, p50 {} ms, max {} ms",
            o.timeout_ms,
            o.sweep_period_ms,
            o.latencies_ns.len(),
            ms(o.p50_ns),
            ms(o.max_ns)
        )),
        Target::new(
            PHASE,
            format!("false downs + missed, {}", label(o)),
            (o.false_downs + o.missed) as f64,
            "nodes",
            Bound::AtMost,
            0.0,
        )
        .with_note(format!(
            "{} false downs, {} of {} stopped nodes never declared down",
            o.false_downs, o.missed, o.stopped
        )),
    ]
}

/// The CDF of the latencies beyond the timeout, a curve per scenario.
fn latency_plot(path: &Path, outcomes: &[Outcome]) -> Result<()> {
    let mut series: Vec<Series> = outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let n = o.latencies_ns.len() as f64;
            let timeout_ns = o.timeout_ms * 1e6;
            Series::line(
                label(o),
                o.latencies_ns
                    .iter()
                    .enumerate()
                    .map(|(k, &ns)| ((ns as f64 - timeout_ns) / 1e6, (k + 1) as f64 / n))
                    .collect(),
                i,
            )
        })
        .collect();
    let slack_ms = (SWEEP + SLACK).as_secs_f64() * 1e3;
    series.push(Series::dashed(
        "target: p99 within sweep period + 5 ms",
        vec![(slack_ms, 0.0), (slack_ms, 1.0)],
        4,
    ));
    plot::linear(
        path,
        "Detection latency beyond the timeout (CDF)",
        ("latency - timeout (ms)", plot::plain_format),
        ("fraction of crashed nodes detected", plot::plain_format),
        &series,
    )
}

fn label(o: &Outcome) -> String {
    format!(
        "({}) {} nodes every {}",
        o.name,
        si(f64::from(o.nodes)),
        if o.interval_ms >= 1000.0 {
            format!("{} s", o.interval_ms / 1000.0)
        } else {
            format!("{} ms", o.interval_ms)
        }
    )
}

fn load_duration(s: &Scenario) -> Duration {
    s.interval * (STOP_AFTER_INTERVALS + MULTIPLIER) + SWEEP + MARGIN
}

fn measure(rig: &Rig<'_>, scenario: &Scenario, progress: &Progress) -> Result<Outcome> {
    let setup = AgentSetup {
        datapath: "xdp",
        nodes: scenario.nodes,
        interval: scenario.interval,
        timeout_multiplier: MULTIPLIER,
        sweep_period: SWEEP,
    };
    progress.step(format!("({}) starting the agent", scenario.name));
    let mut agent = rig.start_agent(&setup)?;
    let stop_after = scenario.interval * STOP_AFTER_INTERVALS;
    let load = Load {
        stop: Some((STOP_FRACTION, stop_after)),
        ..Load::new(
            scenario.nodes,
            Pace::Interval(scenario.interval),
            load_duration(scenario),
        )
    };
    progress.step(format!(
        "({}) {} nodes, {:.0}% crash after {} ms",
        scenario.name,
        si(f64::from(scenario.nodes)),
        100.0 * STOP_FRACTION,
        stop_after.as_millis()
    ));
    let report = rig.run_load(&load)?;
    report.ensure_complete()?;
    // The event log is written once per sweep; SIGTERM flushes it too.
    interrupt::sleep(SWEEP * 5)?;
    agent.stop()?;
    let events = agent.events()?;
    let timeout = setup.timeout();
    let limit = timeout + SWEEP + SLACK;
    Ok(analyse(
        scenario, &setup, stop_after, limit, report, &events,
    ))
}

fn analyse(
    scenario: &Scenario,
    setup: &AgentSetup,
    stop_after: Duration,
    limit: Duration,
    load: LoadReport,
    events: &[EventRecord],
) -> Outcome {
    let last_sent = load.last_sent_by_node();
    let mut first_down: HashMap<u32, u64> = HashMap::new();
    let mut false_downs = 0;
    for event in events.iter().filter(|e| e.event == "down") {
        match last_sent.get(&event.node_id) {
            Some(&Some(last)) if event.mono_ns >= last => {
                first_down.entry(event.node_id).or_insert(event.mono_ns);
            }
            // Down before its last heartbeat left: it was still beating.
            Some(&Some(_)) => false_downs += 1,
            Some(None) => {}
            None if event.mono_ns <= load.ended_mono_ns => false_downs += 1,
            // After the load ended every node went silent: expected.
            None => {}
        }
    }
    let never_sent = last_sent.values().filter(|l| l.is_none()).count();
    let mut latencies: Vec<u64> = last_sent
        .iter()
        .filter_map(|(id, last)| Some(first_down.get(id)? - (*last)?))
        .collect();
    latencies.sort_unstable();
    let detected: HashSet<u32> = first_down.keys().copied().collect();
    let missed = last_sent
        .iter()
        .filter(|(id, last)| last.is_some() && !detected.contains(id))
        .count();
    Outcome {
        name: scenario.name,
        nodes: scenario.nodes,
        interval_ms: scenario.interval.as_secs_f64() * 1e3,
        timeout_ms: setup.timeout().as_secs_f64() * 1e3,
        sweep_period_ms: setup.sweep_period.as_secs_f64() * 1e3,
        stop_after_ms: stop_after.as_secs_f64() * 1e3,
        stopped: last_sent.len(),
        detected: latencies.len(),
        missed,
        never_sent,
        false_downs,
        p50_ns: percentile(&latencies, 0.5),
        p99_ns: percentile(&latencies, 0.99),
        max_ns: latencies.last().copied(),
        min_ns: latencies.first().copied(),
        limit_ns: limit.as_nanos() as u64,
        latencies_ns: latencies,
        load,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::rig::StoppedNode;

    fn report(stopped: Vec<StoppedNode>) -> LoadReport {
        serde_json::from_value(json!({
            "nodes": 10, "interval_ns": 100_000_000, "rate": 100.0, "achieved_rate": 100.0,
            "heartbeats": 1, "sent": 1, "send_errors": 0, "unsent": 0,
            "started_mono_ns": 0, "ended_mono_ns": 10_000, "stop_mono_ns": 300,
            "max_lag_ns": 0, "late_batches": 0, "interrupted": false,
            "stopped": stopped.iter().map(|s| json!({"id": s.id, "last_sent_mono_ns": s.last_sent_mono_ns})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn down(node_id: u32, mono_ns: u64) -> EventRecord {
        EventRecord {
            mono_ns,
            event: "down".into(),
            node_id,
        }
    }

    #[test]
    fn latencies_false_downs_and_misses() {
        let scenario = Scenario {
            name: "t",
            nodes: 10,
            interval: Duration::from_millis(100),
        };
        let setup = AgentSetup {
            datapath: "xdp",
            nodes: 10,
            interval: scenario.interval,
            timeout_multiplier: 3,
            sweep_period: SWEEP,
        };
        let load = report(vec![
            StoppedNode {
                id: 2,
                last_sent_mono_ns: Some(1000),
            },
            StoppedNode {
                id: 3,
                last_sent_mono_ns: Some(2000),
            },
            StoppedNode {
                id: 4,
                last_sent_mono_ns: Some(500),
            },
        ]);
        let events = vec![
            down(3, 1500), // before its last heartbeat: false
            down(2, 4000),
            down(3, 5000),
            down(2, 9000), // a later down of a detected node: ignored
            EventRecord {
                event: "up".into(),
                ..down(5, 100)
            },
            down(7, 9999),  // a running node while the load ran: false
            down(8, 20000), // after the load ended: expected
        ];
        let o = analyse(
            &scenario,
            &setup,
            Duration::from_millis(300),
            Duration::from_millis(315),
            load,
            &events,
        );
        assert_eq!(o.latencies_ns, vec![3000, 3000]);
        assert_eq!((o.stopped, o.detected, o.missed), (3, 2, 1));
        assert_eq!(o.false_downs, 2);
        assert_eq!((o.p50_ns, o.p99_ns), (Some(3000), Some(3000)));
        assert_eq!(o.limit_ns, 315_000_000);
    }
}
