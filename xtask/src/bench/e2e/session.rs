//! One agent's session: started, warmed up, then a load step after another,
//! each measured (loss, kernel drops, CPU in a window).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Result;
use hb_tests::interrupt;

use super::{DRAIN, NODES, Step, WARM_UP, WINDOW_MARGIN};
use crate::bench::{
    machine::CpuSpent,
    output::{Progress, si},
    rig::{Agent, AgentSetup, Load, LoadReport, Pace, Rig, threads_delta_ns},
};

/// Starts an agent with `datapath`, warms it up, runs `steps` (rate,
/// duration) and stops it.
pub(super) fn session(
    rig: &Rig<'_>,
    datapath: &'static str,
    steps: &[(f64, Duration)],
    threaded: bool,
    progress: &Progress,
) -> Result<Vec<Step>> {
    progress.step(format!("{datapath}: starting the agent"));
    let mut agent = rig.start_agent(&AgentSetup {
        datapath,
        nodes: NODES,
        interval: Duration::from_secs(60),
        timeout_multiplier: 3,
        sweep_period: Duration::from_millis(100),
    })?;
    progress.step(format!("{datapath}: warm-up"));
    rig.run_load(
        &Load::new(NODES, Pace::Rate(f64::from(NODES)), WARM_UP).one_datagram_per_packet(),
    )?
    .ensure_complete()?;
    interrupt::sleep(DRAIN)?;
    if threaded {
        rig.prioritize_receive_threads()?;
    }
    let mut results = Vec::new();
    for &(rate, duration) in steps {
        progress.step(format!(
            "{datapath}: {}/s for {} s",
            si(rate),
            duration.as_secs_f64()
        ));
        let step = measure_step(rig, &mut agent, datapath, rate, duration)?;
        print_step(&step, threaded, progress);
        results.push(step);
    }
    agent.stop()?;
    Ok(results)
}

/// What was read around one step: counters over the whole step, and over
/// its CPU window.
struct Readings {
    counters: BTreeMap<String, i64>,
    drops: BTreeMap<String, i64>,
    window_counters: BTreeMap<String, i64>,
    window_drops: BTreeMap<String, i64>,
    receive_ns: u64,
    spent: CpuSpent,
    load: LoadReport,
}

/// Runs the load at `rate` for `duration` and reads the counters and CPU
/// times around it.
fn measure_step(
    rig: &Rig<'_>,
    agent: &mut Agent<'_>,
    datapath: &'static str,
    rate: f64,
    duration: Duration,
) -> Result<Step> {
    let before = agent.counters()?;
    let drops_before = rig.drop_counters()?;
    let load =
        rig.start_load(&Load::new(NODES, Pace::Rate(rate), duration).one_datagram_per_packet())?;
    let started = load.started();
    // The first beat of every node starts a new incarnation (a new
    // load generator run), which the agent logs: measure after it.
    interrupt::sleep(
        (started + node_interval(rate) + WINDOW_MARGIN).saturating_duration_since(Instant::now()),
    )?;
    let window_before = agent.counters()?;
    let window_drops_before = rig.drop_counters()?;
    let receive_before = rig.receive_thread_ns()?;
    let cpu_before = agent.sample()?;
    interrupt::sleep(
        (started + duration - WINDOW_MARGIN).saturating_duration_since(Instant::now()),
    )?;
    let cpu_after = agent.sample()?;
    let receive_after = rig.receive_thread_ns()?;
    let window_after = agent.counters()?;
    let window_drops = delta(&window_drops_before, &rig.drop_counters()?);
    let load = load.finish()?;
    load.ensure_complete()?;
    interrupt::sleep(DRAIN)?;
    let after = agent.counters()?;
    let drops = delta(&drops_before, &rig.drop_counters()?);
    Ok(Step::of(
        datapath,
        Readings {
            counters: delta(&before, &after),
            drops,
            window_counters: delta(&window_before, &window_after),
            window_drops,
            receive_ns: threads_delta_ns(&receive_before, &receive_after),
            spent: cpu_before.until(&cpu_after),
            load,
        },
    ))
}

impl Step {
    fn of(datapath: &'static str, r: Readings) -> Self {
        let Readings {
            counters,
            drops,
            window_counters,
            window_drops,
            receive_ns,
            spent,
            load,
        } = r;
        let receive_cpu_s = receive_ns as f64 / 1e9;
        let accepted = |counters: &BTreeMap<String, i64>| {
            counters.get("accepted").copied().unwrap_or(0).max(0) as u64
        };
        let accepted_in_step = accepted(&counters);
        let window_accepted = accepted(&window_counters);
        let cpu_s = receive_cpu_s + spent.softirq_s + spent.process_s;
        Self {
            datapath,
            requested_rate: load.rate,
            achieved_rate: load.achieved_rate,
            sent: load.sent,
            accepted: accepted_in_step,
            loss: if load.sent > 0 {
                1.0 - accepted_in_step as f64 / load.sent as f64
            } else {
                1.0
            },
            counters,
            drops,
            window_s: spent.wall_s,
            window_accepted,
            window_drops,
            receive_cpu_s,
            softirq_ticks: spent.softirq_ticks,
            softirq_cpu_s: spent.softirq_s,
            agent_ticks: spent.process_ticks,
            agent_cpu_s: spent.process_s,
            cpu_ns_per_heartbeat: (window_accepted > 0)
                .then(|| cpu_s * 1e9 / window_accepted as f64),
            machine_busy: spent.machine_busy,
            load,
        }
    }
}

/// The step's line under the progress bar.
fn print_step(step: &Step, threaded: bool, progress: &Progress) {
    let dropped: Vec<String> = step
        .drops
        .iter()
        .filter(|&(_, &n)| n != 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    // Without the threaded receive path the CPU figure is tick-sampled.
    let cpu = match step.cpu_ns_per_heartbeat {
        Some(ns) if threaded => format!(", {ns:.0} ns CPU/heartbeat"),
        _ => String::new(),
    };
    progress.say(format!(
        "  {:<6} {:>5}/s offered, {:>5}/s achieved, loss {:.3}%{cpu}{}",
        step.datapath,
        si(step.requested_rate),
        si(step.achieved_rate),
        100.0 * step.loss,
        if dropped.is_empty() {
            String::new()
        } else {
            format!(" (kernel drops: {})", dropped.join(", "))
        }
    ));
}

/// `after - before`, counter by counter.
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, i64> {
    after
        .iter()
        .map(|(name, &value)| {
            let old = before.get(name).copied().unwrap_or(0);
            (name.clone(), value as i64 - old as i64)
        })
        .collect()
}

/// Each node's interval at aggregate `rate`.
fn node_interval(rate: f64) -> Duration {
    Duration::from_secs_f64(f64::from(NODES) / rate)
}

/// A step of at least `base` that leaves a CPU window of at least
/// `window` after the first interval.
pub(super) fn step_duration(rate: f64, base: Duration, window: Duration) -> Duration {
    base.max(node_interval(rate) + window + 2 * WINDOW_MARGIN)
}
