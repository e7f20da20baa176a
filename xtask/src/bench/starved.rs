//! Phase `starved`: the single-node detection of phase `single` ([`sigstop`]:
//! `hb send` every 10 ms, timeout 3 x 10 ms, `sweep_period` 10 ms, 40
//! SIGSTOP faults, quick 10) while busy loops compete with the agent for
//! the CPUs (issue 12). Scenarios, each with a fresh agent:
//!
//! - idle: no busy loop, with `sweep_priority` (the baseline of the plot);
//! - (a) one SCHED_OTHER busy loop pinned to each CPU, with
//!   `sweep_priority`;
//! - (a) the same without `sweep_priority`, for comparison (no target);
//! - (b) one SCHED_FIFO busy loop at priority 40 (below the sweep's 50)
//!   pinned to the last CPU, with `sweep_priority`.
//!
//! "With `sweep_priority`" is `defaults.sweep_priority = 50` (the sweep
//! thread SCHED_FIFO 50) and `defaults.lock_memory = true` (mlockall), set
//! only in those runs. The busy loops are threads of the bench, started once the node is
//! up, bounded in time and stopped when the scenario ends.
//!
//! RT throttling must be on (checked at the start): with
//! `sched_rt_runtime_us` 950000 of 1000000, the SCHED_FIFO busy loop leaves
//! 50 ms of every second of its CPU to ordinary tasks; with it off, (b) is
//! skipped. The throttle is per CPU and stops every real-time task there,
//! whatever its priority, for those 50 ms.
//!
//! The sender stands for the node under test, not the monitor, which on a
//! real network is another machine: it runs as SCHED_FIFO 45 (`chrt -f
//! 45`) in every scenario, so that the busy loops do not stop it sending,
//! and in (b) on the CPUs the busy loop leaves free (`taskset`), or the
//! throttle would hold its heartbeats back 50 ms a second: the first full
//! run, unpinned, counted 9 false downs in (b), 40 to 220 ms after a
//! SIGCONT, while the sweep was not real-time at all. The agent is not
//! pinned: a real-time sweep woken on the busy loop's CPU during its
//! throttle waits like any task there, and the figures show it.
//!
//! Targets, with `sweep_priority`, under (a) and (b): p99 <= 31 ms (as in
//! `single`) and no false down or missed fault.

use std::time::Duration;

use anyhow::Result;
use hb_tests::{
    Hog, Hogs, Policy, Sched,
    hog::{self, RtThrottle},
    interrupt,
};
use serde::Serialize;
use serde_json::json;

use super::{
    Ctx, PhaseOutput,
    output::{Bound, Progress, Table, Target, ms},
    rig::{Realtime, Rig},
    sigstop::{self, Detection, INTERVAL},
};

const PHASE: &str = "starved";
const REALTIME: Realtime = Realtime {
    sweep_priority: 50,
    lock_memory: true,
};
/// The SCHED_FIFO busy loop's priority: below the sweep's.
const HOG_PRIORITY: u8 = 40;
/// The sender's SCHED_FIFO priority: above the busy loop's.
const SENDER_PRIORITY: u8 = 45;
const P99_LIMIT_MS: f64 = 31.0;
/// The busy loops run this long before the first fault.
const HOGS_FIRST: Duration = Duration::from_millis(500);
/// After the last fault, the agent runs on this long (busy loops still
/// on) before it is stopped, so a late false down is seen.
const QUIET_END: Duration = Duration::from_millis(300);

/// What competes with the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Starvation {
    Idle,
    /// One SCHED_OTHER busy loop pinned to each CPU.
    OtherEveryCpu,
    /// One SCHED_FIFO busy loop pinned to one CPU.
    FifoOneCpu,
}

struct Scenario {
    name: &'static str,
    starvation: Starvation,
    /// Runs with `sweep_priority` and `lock_memory`.
    priority: bool,
    /// Checked against the targets.
    judged: bool,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "idle",
        starvation: Starvation::Idle,
        priority: true,
        judged: false,
    },
    Scenario {
        name: "a",
        starvation: Starvation::OtherEveryCpu,
        priority: true,
        judged: true,
    },
    Scenario {
        name: "a",
        starvation: Starvation::OtherEveryCpu,
        priority: false,
        judged: false,
    },
    Scenario {
        name: "b",
        starvation: Starvation::FifoOneCpu,
        priority: true,
        judged: true,
    },
];

/// One scenario's run.
#[derive(Debug, Serialize)]
struct Outcome {
    name: &'static str,
    /// The busy loops, as described.
    busy_loops: String,
    /// `sweep_priority 50, lock_memory`, or none.
    realtime: Option<String>,
    /// `SCHED_FIFO 45`, `SCHED_FIFO 45 on CPUs 0`.
    sender: String,
    judged: bool,
    detection: Detection,
}

impl Outcome {
    fn label(&self) -> String {
        let priority = match &self.realtime {
            Some(r) => r.clone(),
            None => "no sweep_priority".to_owned(),
        };
        let name = if self.name == "idle" {
            "idle".to_owned()
        } else {
            format!("({})", self.name)
        };
        format!("{name}, {priority}")
    }
}

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let faults = if ctx.quick { 10 } else { 40 };
    let throttle = hog::rt_throttle()?;
    let cpus = hog::allowed_cpus()?;
    match throttle {
        Some(t) => println!(
            "  RT throttling on: SCHED_FIFO may take {} of every {} µs per CPU, so the SCHED_FIFO \
             busy loop leaves {} ms per second of its CPU to ordinary tasks",
            t.runtime_us,
            t.period_us,
            t.yielded().as_millis()
        ),
        None => println!(
            "  RT throttling is off (sched_rt_runtime_us = -1): a SCHED_FIFO busy loop would keep \
             its CPU, so scenario (b) is skipped"
        ),
    }
    let rig = Rig::build(ctx.hb, ctx.tools, ctx.work.join(PHASE))?;
    println!("  {}", rig.describe());
    let scenarios: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| s.starvation != Starvation::FifoOneCpu || throttle.is_some())
        .collect();
    let planned = (sigstop::expected(faults) + Duration::from_secs(3)) * scenarios.len() as u32;
    let progress = Progress::start(PHASE, planned);
    let mut outcomes = Vec::new();
    for scenario in scenarios {
        outcomes.push(measure(&rig, scenario, faults, &cpus, &progress)?);
    }
    drop(progress);
    drop(rig);

    print_table(&outcomes);
    let path = ctx.svg("starved-detection-cdf");
    let curves: Vec<(String, &Detection)> =
        outcomes.iter().map(|o| (o.label(), &o.detection)).collect();
    sigstop::cdf_plot(
        &path,
        "Detection of one node at 10 ms x 3 under CPU starvation (SIGSTOP -> down, CDF)",
        &curves,
        &[("target: p99 <= 31 ms", P99_LIMIT_MS)],
    )?;
    let targets = outcomes
        .iter()
        .filter(|o| o.judged)
        .flat_map(targets)
        .collect();
    let mut facts: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.judged)
        .map(|o| format!("starved {}: {}", o.label(), o.detection.summary()))
        .collect();
    if throttle.is_none() {
        facts.push("starved: RT throttling is off; scenario (b) was skipped".to_owned());
    }
    Ok(PhaseOutput {
        json: json!({
            "interval_ms": INTERVAL.as_secs_f64() * 1e3,
            "rt_throttle": throttle.map(|t: RtThrottle| json!({
                "sched_rt_runtime_us": t.runtime_us,
                "sched_rt_period_us": t.period_us,
            })),
            "cpus": cpus,
            "hog_fifo_priority": HOG_PRIORITY,
            "sweep_priority": REALTIME.sweep_priority,
            "scenarios": outcomes,
        }),
        targets,
        plots: vec![path],
        facts,
    })
}

fn measure(
    rig: &Rig<'_>,
    scenario: &Scenario,
    faults: u32,
    cpus: &[usize],
    progress: &Progress,
) -> Result<Outcome> {
    let realtime = scenario.priority.then_some(REALTIME);
    let label = match scenario.starvation {
        Starvation::Idle => "idle".to_owned(),
        _ => format!("({})", scenario.name),
    };
    progress.step(format!("{label}: starting the agent and the sender"));
    let mut agent = rig.start_agent_tuned(&sigstop::setup(), realtime, sigstop::DETECTOR)?;
    let mut tail = agent.tail()?;
    // The FIFO busy loop's CPU, and the sender's CPUs: the others.
    let hog_cpu = cpus.last().copied();
    let sched = Sched {
        fifo: Some(SENDER_PRIORITY),
        cpus: (scenario.starvation == Starvation::FifoOneCpu)
            .then(|| {
                cpus.iter()
                    .copied()
                    .filter(|&c| Some(c) != hog_cpu)
                    .collect()
            })
            .filter(|others: &Vec<usize>| !others.is_empty()),
    };
    let mut sender = rig.start_sender(INTERVAL, &sched)?;
    sigstop::wait_until_up(&mut tail)?;
    let bound = sigstop::worst_case(faults) + HOGS_FIRST + QUIET_END;
    let hogs = match scenario.starvation {
        Starvation::Idle => None,
        Starvation::OtherEveryCpu => Some(Hogs::one_per_cpu(Policy::Other, bound)?),
        Starvation::FifoOneCpu => Some(Hogs::start(
            &[Hog {
                policy: Policy::Fifo(HOG_PRIORITY),
                cpu: hog_cpu,
            }],
            bound,
        )?),
    };
    let busy_loops = hogs
        .as_ref()
        .map_or_else(|| "none".to_owned(), Hogs::describe);
    progress.say(format!("  {label}: {busy_loops}"));
    interrupt::sleep(HOGS_FIRST)?;
    let done = sigstop::inject(&mut agent, &mut sender, faults, progress, &label)?;
    interrupt::sleep(QUIET_END)?;
    if hogs.as_ref().is_some_and(Hogs::expired) {
        anyhow::bail!("{label}: the busy loops reached their bound before the faults ended");
    }
    drop(hogs);
    agent.stop()?;
    let events = agent.events()?;
    drop(sender);
    let detection = Detection::analyse(&done, &events);
    progress.say(format!("  {label}: {}", detection.summary()));
    Ok(Outcome {
        name: scenario.name,
        busy_loops,
        realtime: realtime.map(|r| r.describe()),
        sender: sched.describe(),
        judged: scenario.judged,
        detection,
    })
}

fn print_table(outcomes: &[Outcome]) {
    let mut table = Table::new(&[
        "scenario",
        "faults",
        "missed",
        "false downs",
        "p50 ms",
        "p99 ms",
        "max ms",
        "busy loops",
    ])
    .text_column(7);
    for o in outcomes {
        let d = &o.detection;
        table.row(vec![
            o.label(),
            d.faults.to_string(),
            d.missed.to_string(),
            d.false_downs.to_string(),
            ms(d.p50_ns),
            ms(d.p99_ns),
            ms(d.max_ns),
            o.busy_loops.clone(),
        ]);
    }
    table.print(&format!(
        "Detection of one node under CPU starvation (hb send SCHED_FIFO {SENDER_PRIORITY} every \
         10 ms, in (b) off the busy loop's CPU; timeout 3 x 10 ms; SIGSTOP -> down)"
    ));
}

/// p99 within the limit, and no false down or missed fault.
fn targets(o: &Outcome) -> [Target; 2] {
    let d = &o.detection;
    let name = format!("({})", o.name);
    [
        Target::new(
            PHASE,
            format!("detection p99 starved {name}"),
            d.p99_ms(),
            "ms",
            Bound::AtMost,
            P99_LIMIT_MS,
        )
        .with_note(format!("{}; {}", o.busy_loops, d.summary())),
        d.errors_target(PHASE, format!("false downs + missed, starved {name}")),
    ]
}
