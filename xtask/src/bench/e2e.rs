//! Phase `e2e`: heartbeats over a veth pair, the XDP datapath against the
//! socket datapath, with the same load generator in the same run.
//!
//! For each datapath an agent watches 100k nodes (range interval 60 s, so
//! no node times out between steps) and `hb-tools loadgen --nodes 100000` offers
//! a rising rate, one bounded step at a time, one datagram per heartbeat
//! (`--no-gso`, as real nodes send them; see [`Load::one_datagram_per_packet`]).
//! Per step:
//!
//! - loss = 1 - (`counters.accepted` delta of `hb status --json`) / (the
//!   report's `sent`); the highest offered rate with loss < 0.1% is the
//!   sustained rate;
//! - the monitor's CPU per accepted heartbeat (whole-machine softirq +
//!   agent utime + stime), over a window that starts one node interval
//!   into the step: each run of the load generator is a new incarnation of
//!   every node, and the agent logs each node's first heartbeat of it.
//!
//! Those CPU figures are for reference only: the kernel's receive work
//! (veth, the XDP program or the UDP stack up to the socket) runs as
//! softirq inline in the load generator's `sendmmsg` calls, and this
//! kernel samples softirq time by tick (no `CONFIG_IRQ_TIME_ACCOUNTING`),
//! so it misses most of it (two identical steps read 0 and 19 ticks).
//!
//! Then, at the highest offered rate both datapaths sustained, one longer
//! step each, on a fresh veth pair whose monitor end has a NIC-like receive
//! path of its own ([`Rig::thread_receive_path`]: GRO on, NAPI threaded at
//! real-time priority): the exact CPU time of that thread + the machine's
//! softirq (whatever still runs there) + the agent, per heartbeat accepted
//! in the window. Target: XDP needs at least 5x less than the socket. The
//! loss curve comes from the unmodified pair: a threaded receive path adds
//! a 256-packet ring that overflows when the VM's scheduler is late.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Result;
use hb_tests::interrupt;
use serde::Serialize;
use serde_json::json;

use super::{
    Ctx, PhaseOutput,
    output::{Bound, Progress, Table, Target, si},
    plot::{self, Series},
    rig::{AgentSetup, Load, LoadReport, Pace, Rig, threads_delta_ns},
};

const PHASE: &str = "e2e";
/// Nodes of the simulated fleet.
const NODES: u32 = 100_000;
/// Loss below this fraction is sustained.
const LOSS_LIMIT: f64 = 0.001;
/// Socket / XDP monitor CPU per heartbeat wanted.
const RATIO_LIMIT: f64 = 5.0;
/// Pause after a load before the counters are read: lets the receive path
/// drain what is still queued.
const DRAIN: Duration = Duration::from_millis(300);
/// The first load of every agent (each node's first heartbeat is a state
/// change): not measured.
const WARM_UP: Duration = Duration::from_millis(1500);
/// Margin between the CPU window and the first interval / the end of a step.
const WINDOW_MARGIN: Duration = Duration::from_millis(200);
/// Below this share of the requested rate, the load generator is the limit.
const GENERATOR_SHORTFALL: f64 = 0.97;
const DATAPATHS: [&str; 2] = ["xdp", "socket"];

/// One measured load step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub datapath: &'static str,
    pub requested_rate: f64,
    pub achieved_rate: f64,
    pub sent: u64,
    pub accepted: u64,
    pub loss: f64,
    /// Deltas of every datapath counter over the step.
    pub counters: BTreeMap<String, i64>,
    /// Deltas of the kernel's drop counters (veth ends, monitor UDP).
    pub drops: BTreeMap<String, i64>,
    /// The CPU window: from one node interval into the step (every node
    /// has sent its first heartbeat of the run) to just before its end.
    pub window_s: f64,
    /// Heartbeats accepted in the window.
    pub window_accepted: u64,
    /// The kernel's drops in the window.
    pub window_drops: BTreeMap<String, i64>,
    /// CPU time of the monitor interface's NAPI thread (exact).
    pub receive_cpu_s: f64,
    /// The whole machine's softirq time (tick-sampled).
    pub softirq_ticks: u64,
    pub softirq_cpu_s: f64,
    /// The agent's utime + stime.
    pub agent_ticks: u64,
    pub agent_cpu_s: f64,
    /// (receive thread + softirq + agent CPU) / accepted heartbeats, over
    /// the window.
    pub cpu_ns_per_heartbeat: Option<f64>,
    /// Share of the machine's CPU that was busy during the step (the load
    /// generator, the monitor and anything else running).
    pub machine_busy: f64,
    pub load: LoadReport,
}

impl Step {
    fn sustained(&self) -> bool {
        self.loss < LOSS_LIMIT
    }

    fn generator_limited(&self) -> bool {
        self.achieved_rate < GENERATOR_SHORTFALL * self.requested_rate
    }
}

struct Plan {
    rates: Vec<f64>,
    /// Shortest step.
    step: Duration,
    /// Shortest CPU window of a step.
    window: Duration,
    cpu_step: Duration,
}

impl Plan {
    fn steps(&self) -> Vec<(f64, Duration)> {
        self.rates
            .iter()
            .map(|&rate| (rate, step_duration(rate, self.step, self.window)))
            .collect()
    }
}

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let plan = if ctx.quick {
        Plan {
            rates: vec![100e3, 400e3, 1.6e6],
            step: Duration::from_secs(1),
            window: Duration::from_millis(500),
            cpu_step: Duration::from_secs(3),
        }
    } else {
        Plan {
            rates: vec![50e3, 100e3, 200e3, 400e3, 800e3, 1.6e6],
            step: Duration::from_secs(3),
            window: Duration::from_secs(2),
            cpu_step: Duration::from_secs(10),
        }
    };
    let per_session = Duration::from_millis(500) + WARM_UP + DRAIN;
    let per_step = DRAIN + Duration::from_millis(300);
    let planned = 4 * per_session
        + 2 * plan
            .steps()
            .iter()
            .map(|&(_, duration)| duration + per_step)
            .sum::<Duration>()
        + 2 * (plan.cpu_step + per_step);
    let progress = Progress::start(PHASE, planned);

    // Loss vs rate, on the veth pair as created.
    let rig = Rig::build(ctx.hb, ctx.tools, ctx.work.join(PHASE))?;
    progress.say(format!("  {}", rig.describe()));
    progress.say("  loss vs offered rate (veth as created)");
    let mut sweeps: Vec<Vec<Step>> = Vec::new();
    for datapath in DATAPATHS {
        sweeps.push(session(&rig, datapath, &plan.steps(), false, &progress)?);
    }
    drop(rig);
    let (xdp, socket) = (&sweeps[0], &sweeps[1]);
    let common = plan
        .rates
        .iter()
        .enumerate()
        .rev()
        // Both sustained it, and the load generator really offered it: a
        // step the generator could not deliver says nothing of the monitor.
        .find(|&(i, _)| {
            [&xdp[i], &socket[i]]
                .iter()
                .all(|step| step.sustained() && !step.generator_limited())
        })
        .map(|(_, &rate)| rate);
    let cpu_rate = common.unwrap_or(plan.rates[0]);

    // CPU per heartbeat at one common rate, with the receive path threaded.
    let rig = Rig::build(ctx.hb, ctx.tools, ctx.work.join(format!("{PHASE}-cpu")))?;
    rig.thread_receive_path()?;
    progress.say(format!(
        "  CPU per heartbeat at {}/s (monitor's veth end: GRO on, NAPI threaded at real-time \
         priority, its CPU time measured exactly)",
        si(cpu_rate)
    ));
    let mut cpu_steps = Vec::new();
    for datapath in DATAPATHS {
        cpu_steps.extend(session(
            &rig,
            datapath,
            &[(cpu_rate, plan.cpu_step)],
            true,
            &progress,
        )?);
    }
    drop(rig);
    drop(progress);

    let mut table = Table::new(&[
        "datapath",
        "offered/s",
        "achieved/s",
        "sent",
        "accepted",
        "loss",
        "kernel drops",
        "agent CPU s",
        "machine busy",
    ]);
    for step in sweeps.iter().flatten() {
        table.row(vec![
            step.datapath.to_owned(),
            si(step.requested_rate),
            format!(
                "{}{}",
                si(step.achieved_rate),
                if step.generator_limited() { " *" } else { "" }
            ),
            step.sent.to_string(),
            step.accepted.to_string(),
            format!("{:.3}%", 100.0 * step.loss),
            step.drops.values().sum::<i64>().to_string(),
            format!("{:.2}", step.agent_cpu_s),
            format!("{:.0}%", 100.0 * step.machine_busy),
        ]);
    }
    table.print(&format!(
        "Loss vs offered rate over veth, {NODES} nodes (* = load generator below {:.0}% of the \
         offered rate; agent CPU over each step's window; machine busy: all CPUs, any process)",
        100.0 * GENERATOR_SHORTFALL
    ));
    let mut table = Table::new(&[
        "datapath",
        "offered/s",
        "loss",
        "drops in window",
        "window s",
        "accepted",
        "rx thread ns/hb",
        "softirq ns/hb",
        "agent ns/hb",
        "CPU ns/hb",
    ]);
    for step in &cpu_steps {
        let per = |cpu_s: f64| format!("{:.0}", cpu_s * 1e9 / step.window_accepted.max(1) as f64);
        table.row(vec![
            step.datapath.to_owned(),
            si(step.requested_rate),
            format!("{:.3}%", 100.0 * step.loss),
            step.window_drops.values().sum::<i64>().to_string(),
            format!("{:.1}", step.window_s),
            step.window_accepted.to_string(),
            per(step.receive_cpu_s),
            per(step.softirq_cpu_s),
            per(step.agent_cpu_s),
            step.cpu_ns_per_heartbeat
                .map_or_else(|| "-".to_owned(), |ns| format!("{ns:.0}")),
        ]);
    }
    table.print(&format!(
        "Monitor CPU per heartbeat at {}/s, {} s per datapath (receive thread exact, softirq \
         tick-sampled, agent utime + stime)",
        si(cpu_rate),
        plan.cpu_step.as_secs_f64()
    ));

    let mut facts = Vec::new();
    let mut sustained_json = serde_json::Map::new();
    for steps in &sweeps {
        let datapath = steps[0].datapath;
        let best = steps.iter().rev().find(|s| s.sustained());
        let fact = match best {
            Some(step) => format!(
                "{datapath}: sustained {}/s offered ({}/s achieved{}) with loss < {}%",
                si(step.requested_rate),
                si(step.achieved_rate),
                if step.generator_limited() {
                    ", limited by the load generator"
                } else {
                    ""
                },
                100.0 * LOSS_LIMIT
            ),
            None => format!(
                "{datapath}: no step had loss < {}% (lowest loss {:.3}%)",
                100.0 * LOSS_LIMIT,
                100.0 * steps.iter().map(|s| s.loss).fold(f64::INFINITY, f64::min)
            ),
        };
        facts.push(fact);
        sustained_json.insert(
            datapath.to_owned(),
            json!(best.map(|s| json!({
                "requested_rate": s.requested_rate,
                "achieved_rate": s.achieved_rate,
                "loss": s.loss,
                "generator_limited": s.generator_limited(),
            }))),
        );
    }
    let generator_max = sweeps
        .iter()
        .flatten()
        .map(|s| s.achieved_rate)
        .fold(0.0, f64::max);
    let first_short = sweeps
        .iter()
        .flatten()
        .filter(|s| s.generator_limited())
        .map(|s| s.requested_rate)
        .fold(f64::INFINITY, f64::min);
    facts.push(if first_short.is_finite() {
        format!(
            "load generator: at most {}/s achieved; below {:.0}% of the offered rate from {}/s on",
            si(generator_max),
            100.0 * GENERATOR_SHORTFALL,
            si(first_short)
        )
    } else {
        format!(
            "load generator: kept up with every offered rate (up to {}/s achieved)",
            si(generator_max)
        )
    });

    let (xdp_cpu, socket_cpu) = (&cpu_steps[0], &cpu_steps[1]);
    let mut targets = Vec::new();
    let cpu_json = match (
        xdp_cpu.cpu_ns_per_heartbeat,
        socket_cpu.cpu_ns_per_heartbeat,
    ) {
        (Some(xdp_ns), Some(socket_ns)) => {
            let ratio = socket_ns / xdp_ns;
            let parts = |s: &Step| {
                let per = |cpu_s: f64| cpu_s * 1e9 / s.window_accepted.max(1) as f64;
                format!(
                    "{:.0} ns (receive thread {:.0} + softirq {:.0} + agent {:.0})",
                    s.cpu_ns_per_heartbeat.unwrap_or(f64::NAN),
                    per(s.receive_cpu_s),
                    per(s.softirq_cpu_s),
                    per(s.agent_cpu_s)
                )
            };
            let mut note = format!(
                "CPU per heartbeat at {}/s offered for {} s: socket {}, XDP {}",
                si(cpu_rate),
                plan.cpu_step.as_secs_f64(),
                parts(socket_cpu),
                parts(xdp_cpu),
            );
            if common.is_none() {
                note += "; no rate was sustained by both, so the lowest was used";
            }
            for step in [xdp_cpu, socket_cpu] {
                if !step.sustained() {
                    note += &format!(
                        "; {} lost {:.3}% in this step",
                        step.datapath,
                        100.0 * step.loss
                    );
                }
            }
            targets.push(
                Target::new(
                    PHASE,
                    "monitor CPU per heartbeat, socket / XDP",
                    ratio,
                    "x",
                    Bound::AtLeast,
                    RATIO_LIMIT,
                )
                .with_note(note),
            );
            json!({ "rate": cpu_rate, "xdp_ns": xdp_ns, "socket_ns": socket_ns, "ratio": ratio })
        }
        _ => {
            facts.push("CPU per heartbeat: a datapath accepted no heartbeat".to_owned());
            json!(null)
        }
    };

    let loss_path = ctx.svg("e2e-loss");
    let loss_series: Vec<Series> = sweeps
        .iter()
        .enumerate()
        .map(|(i, steps)| {
            Series::new(
                steps[0].datapath,
                steps
                    .iter()
                    .map(|s| (s.requested_rate, 100.0 * s.loss))
                    .collect(),
                i,
            )
        })
        .collect();
    plot::logx(
        &loss_path,
        &format!("Loss vs offered rate over veth ({NODES} nodes)"),
        ("offered heartbeats/s", plot::si_format),
        ("loss (%)", plot::plain_format),
        &loss_series,
    )?;

    Ok(PhaseOutput {
        json: json!({
            "nodes": NODES,
            "loss_limit": LOSS_LIMIT,
            "steps": sweeps.iter().flatten().collect::<Vec<_>>(),
            "sustained": sustained_json,
            "generator_max_achieved_rate": generator_max,
            "cpu_rate": cpu_rate,
            "cpu_steps": cpu_steps,
            "cpu_per_heartbeat": cpu_json,
        }),
        targets,
        plots: vec![loss_path],
        facts,
    })
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
fn step_duration(rate: f64, base: Duration, window: Duration) -> Duration {
    base.max(node_interval(rate) + window + 2 * WINDOW_MARGIN)
}

/// Starts an agent with `datapath`, warms it up, runs `steps` (rate,
/// duration) and stops it.
fn session(
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
        let before = agent.counters()?;
        let drops_before = rig.drop_counters()?;
        let load = rig
            .start_load(&Load::new(NODES, Pace::Rate(rate), duration).one_datagram_per_packet())?;
        let started = load.started();
        // The first beat of every node starts a new incarnation (a new
        // load generator run), which the agent logs: measure after it.
        interrupt::sleep(
            (started + node_interval(rate) + WINDOW_MARGIN)
                .saturating_duration_since(Instant::now()),
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

        let spent = cpu_before.until(&cpu_after);
        let receive_cpu_s = threads_delta_ns(&receive_before, &receive_after) as f64 / 1e9;
        let counters = delta(&before, &after);
        let accepted = counters.get("accepted").copied().unwrap_or(0).max(0) as u64;
        let window_accepted = delta(&window_before, &window_after)
            .get("accepted")
            .copied()
            .unwrap_or(0)
            .max(0) as u64;
        let cpu_s = receive_cpu_s + spent.softirq_s + spent.process_s;
        let step = Step {
            datapath,
            requested_rate: load.rate,
            achieved_rate: load.achieved_rate,
            sent: load.sent,
            accepted,
            loss: if load.sent > 0 {
                1.0 - accepted as f64 / load.sent as f64
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
        };
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
            "  {datapath:<6} {:>5}/s offered, {:>5}/s achieved, loss {:.3}%{cpu}{}",
            si(step.requested_rate),
            si(step.achieved_rate),
            100.0 * step.loss,
            if dropped.is_empty() {
                String::new()
            } else {
                format!(" (kernel drops: {})", dropped.join(", "))
            }
        ));
        results.push(step);
    }
    agent.stop()?;
    Ok(results)
}
