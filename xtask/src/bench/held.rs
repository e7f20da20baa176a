//! Phase `held`: a million nodes beating once a second, held by the XDP
//! agent (quick: 100k nodes).
//!
//! The agent watches nodes 1..=N (`max_nodes` 1048576, interval 1 s,
//! timeout 3 s, sweep every 100 ms) while `hb-tools loadgen --nodes N --interval
//! 1s` runs for 20 s (quick: 10 s). After a warm-up of 2 intervals the
//! agent's own CPU (utime + stime over wall time) is measured until shortly
//! before the load ends; then `hb status` must count no node down, and the
//! event log must hold no `down` event from the time the load ran (false
//! downs). Targets: under 10% of one core, 0 false downs. Run twice: with
//! the fixed-timeout detector and with phi (`[detector] kind = "phi"`, where
//! every heartbeat of an up node takes the sweep's slow path once to
//! recompute its deadline), each in a fresh lab.

use std::time::{Duration, Instant};

use anyhow::Result;
use hb_tests::interrupt;
use serde::Serialize;
use serde_json::json;

use super::{
    Ctx, PhaseOutput,
    machine::CpuSample,
    output::{Bound, Progress, Table, Target, si},
    plot::{self, Series},
    rig::{AgentSetup, Load, Pace, Rig},
};

const PHASE: &str = "held";
const INTERVAL: Duration = Duration::from_secs(1);
const WARM_UP_INTERVALS: u32 = 2;
/// The measurement ends this long before the load does.
const BEFORE_END: Duration = Duration::from_millis(500);
/// Share of one core the agent may use.
const CPU_LIMIT_PERCENT: f64 = 10.0;

/// The agent's CPU over one second of the run.
#[derive(Debug, Clone, Serialize)]
struct Second {
    /// Seconds since the load started, at the end of this sample.
    t_s: f64,
    cpu_percent: f64,
}

/// The detectors the phase holds the nodes with, and the `[detector]`
/// section each needs.
const DETECTORS: [(&str, &str); 2] = [("timeout", ""), ("phi", "[detector]\nkind = \"phi\"\n")];

/// One detector's run.
struct Held {
    detector: &'static str,
    json: serde_json::Value,
    targets: Vec<Target>,
    facts: Vec<String>,
    seconds: Vec<Second>,
}

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let (nodes, duration) = if ctx.quick {
        (100_000u32, Duration::from_secs(10))
    } else {
        (1_000_000, Duration::from_secs(20))
    };
    let mut runs = Vec::new();
    for (detector, extra) in DETECTORS {
        runs.push(hold(ctx, nodes, duration, detector, extra)?);
    }
    let path = ctx.svg("held-cpu");
    let mut series: Vec<Series> = runs
        .iter()
        .enumerate()
        .map(|(index, run)| {
            Series::new(
                format!("agent utime + stime per second, {}", run.detector),
                run.seconds.iter().map(|s| (s.t_s, s.cpu_percent)).collect(),
                index,
            )
        })
        .collect();
    series.push(Series::dashed(
        "target",
        vec![
            (0.0, CPU_LIMIT_PERCENT),
            (duration.as_secs_f64(), CPU_LIMIT_PERCENT),
        ],
        runs.len(),
    ));
    plot::linear(
        &path,
        &format!(
            "Agent CPU holding {} nodes beating every second",
            si(f64::from(nodes))
        ),
        ("seconds since the load started", plot::plain_format),
        ("agent CPU (% of one core)", plot::plain_format),
        &series,
    )?;
    let mut json = serde_json::Map::new();
    let mut targets = Vec::new();
    let mut facts = Vec::new();
    for run in runs {
        json.insert(run.detector.to_owned(), run.json);
        targets.extend(run.targets);
        facts.extend(run.facts);
    }
    Ok(PhaseOutput {
        json: serde_json::Value::Object(json),
        targets,
        plots: vec![path],
        facts,
    })
}

/// Holds `nodes` nodes for `duration` with one detector, in a fresh lab.
fn hold(
    ctx: &Ctx<'_>,
    nodes: u32,
    duration: Duration,
    detector: &'static str,
    extra: &str,
) -> Result<Held> {
    let setup = AgentSetup {
        datapath: "xdp",
        nodes,
        interval: INTERVAL,
        timeout_multiplier: 3,
        sweep_period: Duration::from_millis(100),
    };
    let rig = Rig::build(ctx.hb, ctx.tools, ctx.work.join(PHASE))?;
    println!("  {}", rig.describe());
    let progress = Progress::start(PHASE, duration + Duration::from_secs(5));
    progress.step(format!(
        "starting the agent ({} nodes)",
        si(f64::from(nodes))
    ));
    let mut agent = rig.start_agent_with(&setup, extra)?;
    progress.step(format!(
        "{} nodes beating every {} s for {} s",
        si(f64::from(nodes)),
        INTERVAL.as_secs_f64(),
        duration.as_secs_f64()
    ));
    let load = rig.start_load(&Load::new(nodes, Pace::Interval(INTERVAL), duration))?;
    let started = load.started();
    let warm_up = INTERVAL * WARM_UP_INTERVALS;
    let end = started + duration - BEFORE_END;

    // One sample a second for the record; the target uses warm-up .. end.
    let mut seconds = Vec::new();
    let mut previous = agent.sample()?;
    let mut window_start = None;
    let mut next = started + Duration::from_secs(1);
    loop {
        let at = next.min(end);
        interrupt::sleep(at.saturating_duration_since(Instant::now()))?;
        let sample = agent.sample()?;
        let spent = previous.until(&sample);
        seconds.push(Second {
            t_s: sample.at.duration_since(started).as_secs_f64(),
            cpu_percent: 100.0 * spent.process_s / spent.wall_s,
        });
        if window_start.is_none() && sample.at >= started + warm_up {
            window_start = Some(sample);
        }
        previous = sample;
        if at >= end {
            break;
        }
        next += Duration::from_secs(1);
    }
    let window_end = previous;
    let window_start: CpuSample = window_start.unwrap_or(window_end);
    let spent = window_start.until(&window_end);
    let cpu_percent = 100.0 * spent.process_s / spent.wall_s.max(1e-9);
    let mut steady: Vec<f64> = seconds
        .iter()
        .filter(|s| s.t_s > warm_up.as_secs_f64() + 0.5)
        .map(|s| s.cpu_percent)
        .collect();
    steady.sort_by(f64::total_cmp);
    let median_second = steady.get(steady.len() / 2).copied();
    let states = agent.states()?;
    progress.step("waiting for the load generator to finish");
    let report = load.finish()?;
    report.ensure_complete()?;
    progress.step("stopping the agent");
    agent.stop()?;
    let events = agent.events()?;
    drop(progress);
    drop(rig);

    let false_downs = events
        .iter()
        .filter(|e| e.event == "down" && e.mono_ns <= report.ended_mono_ns)
        .count();
    let later_downs = events
        .iter()
        .filter(|e| e.event == "down" && e.mono_ns > report.ended_mono_ns)
        .count();
    let count = |state: &str| states.get(state).copied().unwrap_or(0);

    let mut table = Table::new(&["measure", "value"]).text_column(1);
    let rows: Vec<(&str, String)> = vec![
        ("nodes", nodes.to_string()),
        (
            "load: requested / achieved heartbeats/s",
            format!("{} / {}", si(report.rate), si(report.achieved_rate)),
        ),
        (
            "load: max lag behind schedule",
            format!("{:.1} ms", report.max_lag_ns as f64 / 1e6),
        ),
        ("load: batches > 1 ms late", report.late_batches.to_string()),
        (
            "agent CPU window",
            format!(
                "{:.1} s after a {} s warm-up",
                spent.wall_s,
                warm_up.as_secs_f64()
            ),
        ),
        (
            "agent CPU (utime + stime)",
            format!("{:.2} s = {cpu_percent:.2}% of one core", spent.process_s),
        ),
        (
            "agent CPU, median second of the window",
            median_second.map_or_else(|| "-".to_owned(), |p| format!("{p:.1}% of one core")),
        ),
        ("nodes up at the check", count("up").to_string()),
        ("nodes down at the check", count("down").to_string()),
        (
            "nodes never heard at the check",
            count("unseen").to_string(),
        ),
        ("down events while the load ran", false_downs.to_string()),
    ];
    for (name, value) in rows {
        table.row(vec![name.to_owned(), value]);
    }
    table.print(&format!(
        "{} nodes beating every {} s, held by the XDP agent, {detector} detector ({} s)",
        si(f64::from(nodes)),
        INTERVAL.as_secs_f64(),
        duration.as_secs_f64()
    ));

    let mut facts = Vec::new();
    if later_downs > 0 {
        facts.push(format!(
            "held ({detector}): {later_downs} down events after the load ended (expected: the \
             nodes went silent), not counted"
        ));
    }
    let targets =
        vec![
        Target::new(
            PHASE,
            format!(
                "agent CPU holding {} nodes at 1/s, {detector}",
                si(f64::from(nodes))
            ),
            cpu_percent,
            "% of a core",
            Bound::Below,
            CPU_LIMIT_PERCENT,
        )
        .with_note(format!(
            "utime + stime over {:.1} s after a {} s warm-up (median second: {}); load achieved \
             {}/s of {}/s",
            spent.wall_s,
            warm_up.as_secs_f64(),
            median_second.map_or_else(|| "-".to_owned(), |p| format!("{p:.1}%")),
            si(report.achieved_rate),
            si(report.rate)
        )),
        Target::new(
            PHASE,
            format!("false downs holding {} nodes, {detector}", si(f64::from(nodes))),
            (false_downs as u64).max(count("down")) as f64,
            "nodes",
            Bound::AtMost,
            0.0,
        )
        .with_note(format!(
            "{false_downs} down events while the load ran; {} nodes down at the check",
            count("down")
        )),
    ];

    Ok(Held {
        detector,
        json: json!({
            "detector": detector,
            "nodes": nodes,
            "max_nodes": setup.max_nodes(),
            "interval_s": INTERVAL.as_secs_f64(),
            "timeout_s": setup.timeout().as_secs_f64(),
            "sweep_period_ms": setup.sweep_period.as_secs_f64() * 1e3,
            "duration_s": duration.as_secs_f64(),
            "warm_up_s": warm_up.as_secs_f64(),
            "window": spent,
            "agent_cpu_percent": cpu_percent,
            "agent_cpu_percent_median_second": median_second,
            "per_second": seconds,
            "states_at_check": states,
            "false_downs": false_downs,
            "downs_after_load": later_downs,
            "load": report,
        }),
        targets,
        facts,
        seconds,
    })
}
