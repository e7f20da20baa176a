//! Phase `e2e`: heartbeats over a veth pair, the XDP datapath against the
//! socket datapath, with the same load generator in the same run.
//!
//! For each datapath an agent watches 100k nodes (range interval 60 s, so
//! no node times out between steps) and `hb loadgen --nodes 100000` offers
//! a rising rate, one bounded step at a time. Per step:
//!
//! - loss = 1 - (`counters.accepted` delta of `hb status --json`) / (the
//!   report's `sent`); the highest offered rate with loss < 0.1% is the
//!   sustained rate;
//! - the monitor's CPU: the whole machine's softirq time (where the veth
//!   receive path and the XDP program run) plus the agent's utime + stime,
//!   both deltas over the step, divided by the accepted heartbeats.
//!
//! Then, at the highest offered rate both datapaths sustained, one longer
//! step each measures the CPU per heartbeat compared by the target: XDP
//! needs at least 5x less monitor CPU per heartbeat than the socket.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;
use hb_tests::interrupt;
use serde::Serialize;
use serde_json::json;

use super::{
    Ctx, PhaseOutput,
    output::{Bound, Progress, Table, Target, si},
    plot::{self, Series},
    rig::{AgentSetup, Load, LoadReport, Pace, Rig},
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
    pub wall_s: f64,
    pub softirq_ticks: u64,
    pub agent_ticks: u64,
    pub softirq_cpu_s: f64,
    pub agent_cpu_s: f64,
    /// (softirq + agent CPU) / accepted heartbeats.
    pub cpu_ns_per_heartbeat: Option<f64>,
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
    step: Duration,
    cpu_step: Duration,
}

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let plan = if ctx.quick {
        Plan {
            rates: vec![100e3, 400e3, 1.6e6],
            step: Duration::from_secs(1),
            cpu_step: Duration::from_secs(2),
        }
    } else {
        Plan {
            rates: vec![50e3, 100e3, 200e3, 400e3, 800e3, 1.6e6],
            step: Duration::from_secs(3),
            cpu_step: Duration::from_secs(10),
        }
    };
    let per_session = Duration::from_secs(2) + WARM_UP + DRAIN;
    let planned = 4 * per_session
        + 2 * (plan.step + DRAIN + Duration::from_millis(200)) * plan.rates.len() as u32
        + 2 * (plan.cpu_step + DRAIN);
    let rig = Rig::build(ctx.hb, ctx.work.join(PHASE))?;
    println!("  {}", rig.describe());
    let progress = Progress::start(PHASE, planned);

    let mut sweeps: Vec<Vec<Step>> = Vec::new();
    for datapath in DATAPATHS {
        let steps: Vec<(f64, Duration)> = plan.rates.iter().map(|&r| (r, plan.step)).collect();
        sweeps.push(session(&rig, datapath, &steps, &progress)?);
    }
    let (xdp, socket) = (&sweeps[0], &sweeps[1]);
    let common = plan
        .rates
        .iter()
        .enumerate()
        .rev()
        .find(|&(i, _)| xdp[i].sustained() && socket[i].sustained())
        .map(|(_, &rate)| rate);
    let cpu_rate = common.unwrap_or(plan.rates[0]);
    let mut cpu_steps = Vec::new();
    for datapath in DATAPATHS {
        let steps = session(&rig, datapath, &[(cpu_rate, plan.cpu_step)], &progress)?;
        cpu_steps.extend(steps);
    }
    drop(progress);
    drop(rig);

    let mut table = Table::new(&[
        "datapath",
        "offered/s",
        "achieved/s",
        "sent",
        "accepted",
        "loss",
        "softirq s",
        "agent s",
        "CPU ns/hb",
    ]);
    for step in sweeps.iter().flatten().chain(&cpu_steps) {
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
            format!("{:.2}", step.softirq_cpu_s),
            format!("{:.2}", step.agent_cpu_s),
            step.cpu_ns_per_heartbeat
                .map_or_else(|| "-".to_owned(), |ns| format!("{ns:.0}")),
        ]);
    }
    table.print(&format!(
        "End to end over veth, {NODES} nodes, {} s steps (last two rows: {} s CPU steps at {}/s; \
         * = load generator below {:.0}% of the offered rate)",
        plan.step.as_secs_f64(),
        plan.cpu_step.as_secs_f64(),
        si(cpu_rate),
        100.0 * GENERATOR_SHORTFALL
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
            let mut note = format!(
                "at {}/s offered, {} s: socket {socket_ns:.0} ns (softirq {:.2} s + agent {:.2} s), \
                 XDP {xdp_ns:.0} ns (softirq {:.2} s + agent {:.2} s) of CPU per heartbeat",
                si(cpu_rate),
                plan.cpu_step.as_secs_f64(),
                socket_cpu.softirq_cpu_s,
                socket_cpu.agent_cpu_s,
                xdp_cpu.softirq_cpu_s,
                xdp_cpu.agent_cpu_s,
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
    let cpu_path = ctx.svg("e2e-cpu");
    let cpu_series: Vec<Series> = sweeps
        .iter()
        .enumerate()
        .map(|(i, steps)| {
            Series::new(
                steps[0].datapath,
                steps
                    .iter()
                    .filter_map(|s| Some((s.requested_rate, s.cpu_ns_per_heartbeat?)))
                    .collect(),
                i,
            )
        })
        .collect();
    plot::logx(
        &cpu_path,
        "Monitor CPU per heartbeat (softirq + agent) vs offered rate",
        ("offered heartbeats/s", plot::si_format),
        ("CPU ns per accepted heartbeat", plot::plain_format),
        &cpu_series,
    )?;

    Ok(PhaseOutput {
        json: json!({
            "nodes": NODES,
            "step_s": plan.step.as_secs_f64(),
            "cpu_step_s": plan.cpu_step.as_secs_f64(),
            "loss_limit": LOSS_LIMIT,
            "steps": sweeps.iter().flatten().collect::<Vec<_>>(),
            "sustained": sustained_json,
            "generator_max_achieved_rate": generator_max,
            "cpu_steps": cpu_steps,
            "cpu_per_heartbeat": cpu_json,
        }),
        targets,
        plots: vec![loss_path, cpu_path],
        facts,
    })
}

/// Starts an agent with `datapath`, warms it up, runs `steps` (rate,
/// duration) and stops it.
fn session(
    rig: &Rig<'_>,
    datapath: &'static str,
    steps: &[(f64, Duration)],
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
    rig.run_load(&Load::new(NODES, Pace::Rate(f64::from(NODES)), WARM_UP))?
        .ensure_complete()?;
    interrupt::sleep(DRAIN)?;
    let mut results = Vec::new();
    for &(rate, duration) in steps {
        progress.step(format!(
            "{datapath}: {}/s for {} s",
            si(rate),
            duration.as_secs_f64()
        ));
        let before = agent.counters()?;
        let cpu_before = agent.sample()?;
        let load = rig.run_load(&Load::new(NODES, Pace::Rate(rate), duration))?;
        load.ensure_complete()?;
        interrupt::sleep(DRAIN)?;
        let cpu_after = agent.sample()?;
        let after = agent.counters()?;
        let spent = cpu_before.until(&cpu_after);
        let counters: BTreeMap<String, i64> = after
            .iter()
            .map(|(name, &value)| {
                let old = before.get(name).copied().unwrap_or(0);
                (name.clone(), value as i64 - old as i64)
            })
            .collect();
        let accepted = counters.get("accepted").copied().unwrap_or(0).max(0) as u64;
        let cpu_s = spent.softirq_s + spent.process_s;
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
            wall_s: spent.wall_s,
            softirq_ticks: spent.softirq_ticks,
            agent_ticks: spent.process_ticks,
            softirq_cpu_s: spent.softirq_s,
            agent_cpu_s: spent.process_s,
            cpu_ns_per_heartbeat: (accepted > 0).then(|| cpu_s * 1e9 / accepted as f64),
            load,
        };
        progress.say(format!(
            "  {datapath:<6} {:>5}/s offered, {:>5}/s achieved, loss {:.3}%, {} ns CPU/heartbeat",
            si(step.requested_rate),
            si(step.achieved_rate),
            100.0 * step.loss,
            step.cpu_ns_per_heartbeat
                .map_or_else(|| "-".to_owned(), |ns| format!("{ns:.0}"))
        ));
        results.push(step);
    }
    agent.stop()?;
    Ok(results)
}
