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

mod report;
mod session;

use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;
use serde::Serialize;
use serde_json::json;

use self::session::{session, step_duration};
use super::{
    Ctx, PhaseOutput,
    output::{Progress, si},
    rig::{LoadReport, Rig},
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

    /// `cpu_s` spread over the heartbeats accepted in the window, ns.
    fn ns_per_heartbeat(&self, cpu_s: f64) -> f64 {
        cpu_s * 1e9 / self.window_accepted.max(1) as f64
    }
}

/// The rates and durations of the steps.
struct Plan {
    rates: Vec<f64>,
    /// Shortest step.
    step: Duration,
    /// Shortest CPU window of a step.
    window: Duration,
    cpu_step: Duration,
}

impl Plan {
    fn of(quick: bool) -> Self {
        if quick {
            Self {
                rates: vec![100e3, 400e3, 1.6e6],
                step: Duration::from_secs(1),
                window: Duration::from_millis(500),
                cpu_step: Duration::from_secs(3),
            }
        } else {
            Self {
                rates: vec![50e3, 100e3, 200e3, 400e3, 800e3, 1.6e6],
                step: Duration::from_secs(3),
                window: Duration::from_secs(2),
                cpu_step: Duration::from_secs(10),
            }
        }
    }

    /// How long the phase should take, for the progress bar.
    fn planned(&self) -> Duration {
        let per_session = Duration::from_millis(500) + WARM_UP + DRAIN;
        let per_step = DRAIN + Duration::from_millis(300);
        4 * per_session
            + 2 * self
                .steps()
                .iter()
                .map(|&(_, duration)| duration + per_step)
                .sum::<Duration>()
            + 2 * (self.cpu_step + per_step)
    }

    fn steps(&self) -> Vec<(f64, Duration)> {
        self.rates
            .iter()
            .map(|&rate| (rate, step_duration(rate, self.step, self.window)))
            .collect()
    }
}

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let plan = Plan::of(ctx.quick);
    let progress = Progress::start(PHASE, plan.planned());
    let sweeps = measure_loss(ctx, &plan, &progress)?;
    let common = common_rate(&plan, &sweeps);
    let cpu_rate = common.unwrap_or(plan.rates[0]);
    let cpu_steps = measure_cpu(ctx, &plan, cpu_rate, &progress)?;
    drop(progress);

    report::print_loss_table(&sweeps);
    report::print_cpu_table(&cpu_steps, cpu_rate, plan.cpu_step);
    let (mut facts, sustained_json) = report::sustained(&sweeps);
    let (generator_fact, generator_max) = report::generator(&sweeps);
    facts.push(generator_fact);
    let mut targets = Vec::new();
    let cpu_json = report::cpu_ratio(
        &cpu_steps,
        cpu_rate,
        plan.cpu_step,
        common.is_none(),
        &mut targets,
        &mut facts,
    );
    let loss_path = report::loss_plot(ctx, &sweeps)?;

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

/// Loss vs rate, each datapath in turn, on the veth pair as created.
fn measure_loss(ctx: &Ctx<'_>, plan: &Plan, progress: &Progress) -> Result<Vec<Vec<Step>>> {
    let rig = Rig::build(ctx.hb, ctx.tools, ctx.work.join(PHASE))?;
    progress.say(format!("  {}", rig.describe()));
    progress.say("  loss vs offered rate (veth as created)");
    let mut sweeps: Vec<Vec<Step>> = Vec::new();
    for datapath in DATAPATHS {
        sweeps.push(session(&rig, datapath, &plan.steps(), false, progress)?);
    }
    Ok(sweeps)
}

/// The highest rate both datapaths sustained, where the load generator
/// really offered it: a step the generator could not deliver says nothing
/// of the monitor.
fn common_rate(plan: &Plan, sweeps: &[Vec<Step>]) -> Option<f64> {
    let (xdp, socket) = (&sweeps[0], &sweeps[1]);
    plan.rates
        .iter()
        .enumerate()
        .rev()
        .find(|&(i, _)| {
            [&xdp[i], &socket[i]]
                .iter()
                .all(|step| step.sustained() && !step.generator_limited())
        })
        .map(|(_, &rate)| rate)
}

/// CPU per heartbeat at one common rate, with the receive path threaded,
/// on a fresh veth pair.
fn measure_cpu(
    ctx: &Ctx<'_>,
    plan: &Plan,
    cpu_rate: f64,
    progress: &Progress,
) -> Result<Vec<Step>> {
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
            progress,
        )?);
    }
    Ok(cpu_steps)
}
