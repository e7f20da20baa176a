//! Phase `sweep`: the agent's sweep over the memory-mapped node table vs
//! the number of nodes, next to a memcpy of the same bytes (the floor), from
//! `hb-tools bench sweep --nodes N` (three runs per size, the best kept).
//! Targets, at every size from 100k to 16M nodes (10k is shown, not
//! checked: a sweep of it is a few microseconds, mostly fixed costs):
//! under 0.7 ms per million nodes (median sweep), within 1.5x of memcpy
//! (best of each), and growing linearly (log-log slope of the median sweep
//! time vs N at most 1.1).

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Ctx, PhaseOutput,
    output::{Bound, Progress, Table, Target, duration_ns, si},
    plot::{self, Series},
    stats::loglog_slope,
};

const PHASE: &str = "sweep";
/// Nanoseconds per million nodes allowed (0.7 ms).
const NS_PER_MILLION_LIMIT: f64 = 0.7e6;
/// Sweep / memcpy allowed.
const MEMCPY_RATIO_LIMIT: f64 = 1.5;
/// The targets hold from this many nodes up.
const CHECKED_FROM: u32 = 100_000;
/// Log-log slope allowed: 1 is linear.
const SLOPE_LIMIT: f64 = 1.1;
/// Runs of `hb-tools bench sweep` per size, each a fresh process; the one with
/// the lowest median is kept (interference from other tasks on the
/// machine, e.g. on the other hyperthread, only ever slows a run down).
const RUNS: usize = 3;

/// `hb-tools bench sweep`'s output.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct SweepCost {
    nodes: u32,
    hot_bytes: u64,
    sweep_ns_min: u64,
    sweep_ns_median: u64,
    memcpy_ns_min: u64,
    memcpy_ns_median: u64,
    rounds: u32,
    /// The fast pass's implementation: avx512, avx2 or scalar.
    #[serde(default)]
    kernel: String,
}

impl SweepCost {
    fn ns_per_node(&self) -> f64 {
        self.sweep_ns_median as f64 / f64::from(self.nodes)
    }

    fn ns_per_million(&self) -> f64 {
        self.ns_per_node() * 1e6
    }

    /// Best sweep over best memcpy: the two floors.
    fn ratio_min(&self) -> f64 {
        self.sweep_ns_min as f64 / self.memcpy_ns_min.max(1) as f64
    }

    fn ratio_median(&self) -> f64 {
        self.sweep_ns_median as f64 / self.memcpy_ns_median.max(1) as f64
    }
}

/// Rounds per size: many where a round is short (small tables are the
/// noisiest), fewer for the large ones.
fn rounds(nodes: u32) -> u32 {
    match nodes {
        0..=100_000 => 200,
        100_001..=1_000_000 => 50,
        _ => 20,
    }
}

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let sizes: &[u32] = if ctx.quick {
        &[10_000, 100_000, 1_000_000]
    } else {
        &[10_000, 100_000, 1_000_000, 4_000_000, 16_000_000]
    };
    let (results, all_runs) = measure(ctx, sizes)?;
    print_table(&results);
    let points = |f: fn(&SweepCost) -> u64| -> Vec<(f64, f64)> {
        results
            .iter()
            .map(|r| (f64::from(r.nodes), f(r) as f64))
            .collect()
    };
    let sweep_slope = loglog_slope(&points(|r| r.sweep_ns_median));
    let memcpy_slope = loglog_slope(&points(|r| r.memcpy_ns_median));
    let targets = targets(&results, sweep_slope, memcpy_slope);

    let path = ctx.svg("sweep");
    plot::loglog(
        &path,
        "Sweep of N up nodes vs memcpy of the same bytes",
        ("nodes", plot::si_format),
        ("time", plot::ns_format),
        &[
            Series::new("sweep (median)", points(|r| r.sweep_ns_median), 0),
            Series::new("memcpy (median)", points(|r| r.memcpy_ns_median), 1),
            Series::dashed(
                "target: 0.7 ms per million nodes",
                results
                    .iter()
                    .map(|r| (f64::from(r.nodes), f64::from(r.nodes) * 0.7))
                    .collect(),
                2,
            ),
        ],
    )?;
    Ok(PhaseOutput {
        json: json!({
            "sizes": results,
            "runs": all_runs,
            "sweep_loglog_slope": sweep_slope,
            "memcpy_loglog_slope": memcpy_slope,
        }),
        targets,
        plots: vec![path],
        facts: Vec::new(),
    })
}

/// [`RUNS`] runs of `hb-tools bench sweep` per size: the best run of each
/// size, and every run.
fn measure(ctx: &Ctx<'_>, sizes: &[u32]) -> Result<(Vec<SweepCost>, Vec<Vec<SweepCost>>)> {
    let planned: f64 = RUNS as f64
        * sizes
            .iter()
            .map(|&n| 0.1 + f64::from(n) * 0.25e-6)
            .sum::<f64>();
    let progress = Progress::start(PHASE, std::time::Duration::from_secs_f64(planned));
    let mut results = Vec::new();
    let mut all_runs = Vec::new();
    for &nodes in sizes {
        let rounds = rounds(nodes);
        let mut runs: Vec<SweepCost> = Vec::new();
        for run in 1..=RUNS {
            progress.step(format!("{} nodes, run {run}/{RUNS}", si(f64::from(nodes))));
            runs.push(ctx.tools_json(&[
                "bench",
                "sweep",
                "--nodes",
                &nodes.to_string(),
                "--rounds",
                &rounds.to_string(),
            ])?);
        }
        let best = runs
            .iter()
            .min_by_key(|r| r.sweep_ns_median)
            .expect("at least one run")
            .clone();
        results.push(best);
        all_runs.push(runs);
    }
    Ok((results, all_runs))
}

fn print_table(results: &[SweepCost]) {
    let mut table = Table::new(&[
        "nodes",
        "rounds",
        "bytes read",
        "sweep min",
        "sweep median",
        "ns/node",
        "memcpy min",
        "memcpy median",
        "ratio (min)",
        "ratio (median)",
    ]);
    for r in results {
        table.row(vec![
            si(f64::from(r.nodes)),
            r.rounds.to_string(),
            format!("{:.2} MB", r.hot_bytes as f64 / 1e6),
            duration_ns(r.sweep_ns_min as f64),
            duration_ns(r.sweep_ns_median as f64),
            format!("{:.2}", r.ns_per_node()),
            duration_ns(r.memcpy_ns_min as f64),
            duration_ns(r.memcpy_ns_median as f64),
            format!("{:.2}", r.ratio_min()),
            format!("{:.2}", r.ratio_median()),
        ]);
    }
    table.print(&format!(
        "Sweep of N up nodes vs memcpy of the same bytes (min and median over the rounds; per \
         size the best of {RUNS} runs)"
    ));
}

/// Time per million nodes and sweep / memcpy at the worst size, and the
/// growth with N.
fn targets(results: &[SweepCost], sweep_slope: f64, memcpy_slope: f64) -> Vec<Target> {
    let checked = || results.iter().filter(|r| r.nodes >= CHECKED_FROM);
    let worst_per_million = checked()
        .max_by(|a, b| a.ns_per_million().total_cmp(&b.ns_per_million()))
        .expect("at least one size from 100k");
    let worst_ratio = checked()
        .max_by(|a, b| a.ratio_min().total_cmp(&b.ratio_min()))
        .expect("at least one size from 100k");
    vec![
        Target::new(
            PHASE,
            "sweep time per million nodes (worst size)",
            worst_per_million.ns_per_million() / 1e6,
            "ms",
            Bound::AtMost,
            NS_PER_MILLION_LIMIT / 1e6,
        )
        .with_note(format!(
            "median sweep at {} nodes, {} fast pass",
            si(f64::from(worst_per_million.nodes)),
            worst_per_million.kernel
        )),
        Target::new(
            PHASE,
            "sweep / memcpy of the same bytes (worst size)",
            worst_ratio.ratio_min(),
            "x",
            Bound::AtMost,
            MEMCPY_RATIO_LIMIT,
        )
        .with_note(format!(
            "best sweep / best memcpy at {} nodes (medians: {:.2}x)",
            si(f64::from(worst_ratio.nodes)),
            worst_ratio.ratio_median()
        )),
        Target::new(
            PHASE,
            "sweep growth: log-log slope of time vs N",
            sweep_slope,
            "",
            Bound::AtMost,
            SLOPE_LIMIT,
        )
        .with_note(format!(
            "1 = linear; least squares over {} sizes; memcpy's slope: {memcpy_slope:.2}",
            results.len()
        )),
    ]
}
