//! The phase's tables, findings, target and plot.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Map, Value, json};

use super::{GENERATOR_SHORTFALL, LOSS_LIMIT, NODES, PHASE, RATIO_LIMIT, Step};
use crate::bench::{
    Ctx,
    output::{Bound, Table, Target, si},
    plot::{self, Series},
};

/// Every step of the loss sweep.
pub(super) fn print_loss_table(sweeps: &[Vec<Step>]) {
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
}

/// The CPU steps, their CPU time per heartbeat by part.
pub(super) fn print_cpu_table(cpu_steps: &[Step], cpu_rate: f64, cpu_step: std::time::Duration) {
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
    for step in cpu_steps {
        let per = |cpu_s: f64| format!("{:.0}", step.ns_per_heartbeat(cpu_s));
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
        cpu_step.as_secs_f64()
    ));
}

/// Per datapath, the highest rate it sustained: a finding each, and the
/// results' `sustained`.
pub(super) fn sustained(sweeps: &[Vec<Step>]) -> (Vec<String>, Map<String, Value>) {
    let mut facts = Vec::new();
    let mut sustained_json = Map::new();
    for steps in sweeps {
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
    (facts, sustained_json)
}

/// How fast the load generator could go: a finding, and the highest rate
/// it achieved.
pub(super) fn generator(sweeps: &[Vec<Step>]) -> (String, f64) {
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
    let fact = if first_short.is_finite() {
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
    };
    (fact, generator_max)
}

/// The target on socket / XDP CPU per heartbeat (a finding instead if a
/// datapath accepted nothing); returns the results' `cpu_per_heartbeat`.
pub(super) fn cpu_ratio(
    cpu_steps: &[Step],
    cpu_rate: f64,
    cpu_step: std::time::Duration,
    no_common_rate: bool,
    targets: &mut Vec<Target>,
    facts: &mut Vec<String>,
) -> Value {
    let (xdp_cpu, socket_cpu) = (&cpu_steps[0], &cpu_steps[1]);
    let (Some(xdp_ns), Some(socket_ns)) = (
        xdp_cpu.cpu_ns_per_heartbeat,
        socket_cpu.cpu_ns_per_heartbeat,
    ) else {
        facts.push("CPU per heartbeat: a datapath accepted no heartbeat".to_owned());
        return json!(null);
    };
    let ratio = socket_ns / xdp_ns;
    let parts = |s: &Step| {
        format!(
            "{:.0} ns (receive thread {:.0} + softirq {:.0} + agent {:.0})",
            s.cpu_ns_per_heartbeat.unwrap_or(f64::NAN),
            s.ns_per_heartbeat(s.receive_cpu_s),
            s.ns_per_heartbeat(s.softirq_cpu_s),
            s.ns_per_heartbeat(s.agent_cpu_s)
        )
    };
    let mut note = format!(
        "CPU per heartbeat at {}/s offered for {} s: socket {}, XDP {}",
        si(cpu_rate),
        cpu_step.as_secs_f64(),
        parts(socket_cpu),
        parts(xdp_cpu),
    );
    if no_common_rate {
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

/// Loss vs offered rate, a curve per datapath.
pub(super) fn loss_plot(ctx: &Ctx<'_>, sweeps: &[Vec<Step>]) -> Result<PathBuf> {
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
    Ok(loss_path)
}
