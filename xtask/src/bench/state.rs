//! Phase `state`: the agent's state file before and after the binary
//! format (issue 11), from `hb-tools bench state --nodes N` at 100k and 1M
//! nodes (`--quick`: 100k), on a disk under `/var/tmp` (never tmpfs).
//! Before is format 1 (JSON, as agents up to 59a0ad8 saved it), after is
//! format 2 (`state_file::save` and `load`: postcard with a CRC, written
//! atomically) and the journal synced before each sweep's actions.
//!
//! Targets at the largest size: format 2 at most half the size of format
//! 1, and its save and load (medians, file in the page cache) at most
//! format 1's. Format 1's load is the faster of its two readings (through
//! `state_file::load` as an upgraded agent reads it, and plain `serde_json`
//! as the old agent did). One journal append of a sweep in which every node
//! changes state is reported, without a target.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Ctx, PhaseOutput,
    output::{Bound, Progress, Table, Target, duration_ns, si},
};

const PHASE: &str = "state";
/// Format 2's size over format 1's allowed.
const SIZE_RATIO_LIMIT: f64 = 0.5;
/// Format 2's save and load time over format 1's allowed.
const TIME_RATIO_LIMIT: f64 = 1.0;

/// `hb-tools bench state`'s output (what this phase reads of it).
#[derive(Debug, Deserialize, Serialize)]
struct StateCost {
    nodes: u32,
    rounds: u32,
    filesystem: Filesystem,
    content: serde_json::Value,
    format1: Format1Cost,
    format2: Format2Cost,
    journal: Vec<JournalCost>,
}

#[derive(Debug, Deserialize, Serialize)]
struct Filesystem {
    fs_type: String,
    source: String,
    mount_point: String,
}

#[derive(Debug, Deserialize, Serialize)]
struct Timing {
    best_ns: u64,
    median_ns: u64,
    runs_ns: Vec<u64>,
}

#[derive(Debug, Deserialize, Serialize)]
struct Format1Cost {
    bytes: u64,
    save: Timing,
    load: Timing,
    load_cold: Timing,
    load_plain_json: Timing,
}

#[derive(Debug, Deserialize, Serialize)]
struct Format2Cost {
    bytes: u64,
    save: Timing,
    load: Timing,
    load_cold: Timing,
}

#[derive(Debug, Deserialize, Serialize)]
struct JournalCost {
    transitions: u32,
    bytes: u64,
    append: Timing,
}

impl StateCost {
    fn size_ratio(&self) -> f64 {
        self.format2.bytes as f64 / self.format1.bytes.max(1) as f64
    }

    fn save_ratio(&self) -> f64 {
        ratio(&self.format2.save, &self.format1.save)
    }

    /// Format 1's faster load: through `state_file::load` or plain JSON.
    fn format1_load(&self) -> (&Timing, &'static str) {
        if self.format1.load_plain_json.median_ns < self.format1.load.median_ns {
            (&self.format1.load_plain_json, "plain serde_json")
        } else {
            (&self.format1.load, "state_file::load")
        }
    }

    fn load_ratio(&self) -> f64 {
        ratio(&self.format2.load, self.format1_load().0)
    }

    fn journal_of_all(&self) -> Option<&JournalCost> {
        self.journal.iter().find(|j| j.transitions == self.nodes)
    }
}

/// A size in B, kB or MB.
fn bytes(size: u64) -> String {
    match size {
        0..1000 => format!("{size} B"),
        1000..1_000_000 => format!("{:.1} kB", size as f64 / 1e3),
        _ => format!("{:.1} MB", size as f64 / 1e6),
    }
}

/// After over before, of the medians.
fn ratio(after: &Timing, before: &Timing) -> f64 {
    after.median_ns as f64 / before.median_ns.max(1) as f64
}

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let (sizes, rounds): (&[u32], u32) = if ctx.quick {
        (&[100_000], 3)
    } else {
        (&[100_000, 1_000_000], 5)
    };
    let planned: f64 = sizes.iter().map(|&n| 1.0 + f64::from(n) * 15e-6).sum();
    let progress = Progress::start(PHASE, std::time::Duration::from_secs_f64(planned));
    let mut results: Vec<StateCost> = Vec::new();
    for &nodes in sizes {
        progress.step(format!("{} nodes, {rounds} rounds", si(f64::from(nodes))));
        results.push(ctx.tools_json(&[
            "bench",
            "state",
            "--nodes",
            &nodes.to_string(),
            "--rounds",
            &rounds.to_string(),
        ])?);
    }
    drop(progress);
    print_tables(&results);
    let largest = results.last().context("no size measured")?;
    let targets = targets(largest);
    let facts = largest
        .journal_of_all()
        .map(|j| {
            format!(
                "state journal: one sweep in which all {} nodes change state appends {:.1} MB \
                 and takes {} (median; best {}), its fdatasync included",
                si(f64::from(j.transitions)),
                j.bytes as f64 / 1e6,
                duration_ns(j.append.median_ns as f64),
                duration_ns(j.append.best_ns as f64),
            )
        })
        .into_iter()
        .collect();
    Ok(PhaseOutput {
        json: json!({
            "rounds": rounds,
            "sizes": results
                .iter()
                .map(|r| json!({
                    "nodes": r.nodes,
                    "size_ratio": r.size_ratio(),
                    "save_ratio": r.save_ratio(),
                    "load_ratio": r.load_ratio(),
                    "format1_load_compared": r.format1_load().1,
                }))
                .collect::<Vec<_>>(),
            "runs": results,
        }),
        targets,
        plots: Vec::new(),
        facts,
    })
}

fn print_tables(results: &[StateCost]) {
    let mut table = Table::new(&[
        "nodes",
        "measure",
        "format 1 (JSON)",
        "format 2 (binary)",
        "after/before",
    ])
    .text_column(1);
    let time = |t: &Timing| {
        format!(
            "{} (best {})",
            duration_ns(t.median_ns as f64),
            duration_ns(t.best_ns as f64)
        )
    };
    for r in results {
        let nodes = si(f64::from(r.nodes));
        let mb = |size: u64| {
            format!(
                "{} ({:.0} B/node)",
                bytes(size),
                size as f64 / f64::from(r.nodes)
            )
        };
        let rows = [
            (
                "size",
                mb(r.format1.bytes),
                mb(r.format2.bytes),
                r.size_ratio(),
            ),
            (
                "save (encode, write, fsync, rename)",
                time(&r.format1.save),
                time(&r.format2.save),
                r.save_ratio(),
            ),
            (
                "load: state_file::load (page cache)",
                time(&r.format1.load),
                time(&r.format2.load),
                ratio(&r.format2.load, &r.format1.load),
            ),
            (
                "load: format 1 by plain serde_json",
                time(&r.format1.load_plain_json),
                time(&r.format2.load),
                ratio(&r.format2.load, &r.format1.load_plain_json),
            ),
            (
                "load: state_file::load (pages dropped)",
                time(&r.format1.load_cold),
                time(&r.format2.load_cold),
                ratio(&r.format2.load_cold, &r.format1.load_cold),
            ),
        ];
        for (measure, before, after, ratio) in rows {
            table.row(vec![
                nodes.clone(),
                measure.to_owned(),
                before,
                after,
                format!("{ratio:.2}x"),
            ]);
        }
    }
    let first = &results[0];
    table.print(&format!(
        "State file: median (best) of {} rounds, on {} ({}, mounted at {})",
        first.rounds,
        first.filesystem.fs_type,
        first.filesystem.source,
        first.filesystem.mount_point
    ));

    let mut journal = Table::new(&[
        "nodes",
        "transitions in the sweep",
        "bytes",
        "append median",
        "append best",
    ]);
    for r in results {
        for j in &r.journal {
            journal.row(vec![
                si(f64::from(r.nodes)),
                si(f64::from(j.transitions)),
                bytes(j.bytes),
                duration_ns(j.append.median_ns as f64),
                duration_ns(j.append.best_ns as f64),
            ]);
        }
    }
    journal.print("State journal: one Journal::append (its fdatasync included) per sweep");
}

fn targets(r: &StateCost) -> Vec<Target> {
    let at = si(f64::from(r.nodes));
    let (load1, how1) = r.format1_load();
    vec![
        Target::new(
            PHASE,
            format!("state file size, format 2 / format 1 at {at}"),
            r.size_ratio(),
            "x",
            Bound::AtMost,
            SIZE_RATIO_LIMIT,
        )
        .with_note(format!(
            "{:.1} MB / {:.1} MB",
            r.format2.bytes as f64 / 1e6,
            r.format1.bytes as f64 / 1e6
        )),
        Target::new(
            PHASE,
            format!("state save time, format 2 / format 1 at {at}"),
            r.save_ratio(),
            "x",
            Bound::AtMost,
            TIME_RATIO_LIMIT,
        )
        .with_note(format!(
            "medians of {} rounds: {} / {} (format 2 also syncs the directory)",
            r.rounds,
            duration_ns(r.format2.save.median_ns as f64),
            duration_ns(r.format1.save.median_ns as f64)
        )),
        Target::new(
            PHASE,
            format!("state load time, format 2 / format 1 at {at}"),
            r.load_ratio(),
            "x",
            Bound::AtMost,
            TIME_RATIO_LIMIT,
        )
        .with_note(format!(
            "medians of {} rounds, file in the page cache: {} / {} (format 1 through {how1}, \
             the faster of its two readings)",
            r.rounds,
            duration_ns(r.format2.load.median_ns as f64),
            duration_ns(load1.median_ns as f64)
        )),
    ]
}
