//! Phase `hostile`: a million generated hostile packets (100,000 with
//! `--quick`) through the XDP program with `BPF_PROG_TEST_RUN`, from
//! `hb-tools bench hostile`: random bytes, mutated, truncated, replayed and forged
//! heartbeats, odd IPv4/IPv6/VLAN/UDP framings, and a control group of valid
//! ones. After every packet it checks that only a fresh, validly signed
//! heartbeat of a known node changed the node table, and that the packet
//! moved exactly one outcome and one verdict counter. Target: no violation.
//! The report (every category's outcomes, the counters, the first
//! violations with their frames) goes into the results file as it is.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use hb_tests::{interrupt, netns};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Ctx, PhaseOutput,
    output::{Bound, Table, Target, number, si},
};

const PHASE: &str = "hostile";
/// Packets per run: the "at least a million".
const PACKETS: u64 = 1_000_000;
const QUICK_PACKETS: u64 = 100_000;
/// The generator's seed: fixed, so a violation found here can be replayed
/// with `hb-tools bench hostile --seed`.
const SEED: u64 = 1;
/// The counters, in the order `hb status` lists them.
const COUNTERS: [&str; 11] = [
    "accepted",
    "not_heartbeat",
    "malformed",
    "unauthenticated",
    "unknown_key",
    "bad_tag",
    "unknown_node",
    "wrong_source",
    "replay",
    "passed",
    "dropped",
];

/// The parts of `hb-tools bench hostile`'s report shown here; the whole report
/// is stored.
#[derive(Debug, Deserialize)]
struct Report {
    packets: u64,
    runs: u64,
    refused_by_kernel: u64,
    seconds: f64,
    packets_per_second: f64,
    program_ns_per_run: f64,
    categories: BTreeMap<String, CategoryCount>,
    counters: BTreeMap<String, u64>,
    outcomes_total: u64,
    violations: u64,
    examples: Vec<Violation>,
}

#[derive(Debug, Deserialize)]
struct CategoryCount {
    packets: u64,
    refused_by_kernel: u64,
    outcomes: BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize)]
struct Violation {
    packet: u64,
    category: String,
    what: String,
    problem: String,
    frame: String,
}

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let packets = if ctx.quick { QUICK_PACKETS } else { PACKETS };
    let (report, raw) = run_generator(ctx, packets)?;
    print_report(&report);
    Ok(PhaseOutput {
        json: json!({
            "packets": packets,
            "seed": SEED,
            "report": raw,
        }),
        targets: vec![target(&report)],
        plots: Vec::new(),
        facts: Vec::new(),
    })
}

/// Runs `hb-tools bench hostile`: its report, parsed and as printed.
fn run_generator(ctx: &Ctx<'_>, packets: u64) -> Result<(Report, Value)> {
    let args = [
        "bench".to_owned(),
        "hostile".to_owned(),
        "--packets".to_owned(),
        packets.to_string(),
        "--seed".to_owned(),
        SEED.to_string(),
    ];
    // Not `hb_json`: hb exits non-zero when it finds a violation, and the
    // report it printed is then the result.
    let mut cmd = ctx.tools.command(&args);
    let output = cmd
        .output()
        .with_context(|| format!("running `{}`", netns::describe(&cmd)))?;
    interrupt::check()?;
    let raw: Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "`{}` exited with {} and printed no report: {}",
            netns::describe(&cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })?;
    let report: Report = serde_json::from_value(raw.clone())
        .with_context(|| format!("`{}` printed an unexpected report", netns::describe(&cmd)))?;
    if !output.status.success() && report.violations == 0 {
        bail!(
            "`{}` exited with {} without reporting a violation: {}",
            netns::describe(&cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }

    Ok((report, raw))
}

/// The figures, the program's counters, the categories and any violation.
fn print_report(report: &Report) {
    let mut table = Table::new(&["figure", "value"]);
    let mut row = |name: &str, value: String| table.row(vec![name.to_owned(), value]);
    row("packets generated", report.packets.to_string());
    row("run by the program", report.runs.to_string());
    row(
        "refused by the kernel (< 14 bytes)",
        report.refused_by_kernel.to_string(),
    );
    row("seconds", format!("{:.2}", report.seconds));
    row(
        "packets/s (generate, run, check)",
        si(report.packets_per_second),
    );
    row(
        "program ns/run (kernel-timed)",
        number(report.program_ns_per_run),
    );
    row(
        "outcome counters, summed",
        report.outcomes_total.to_string(),
    );
    row("violations", report.violations.to_string());
    table.print(&format!(
        "Hostile packets through BPF_PROG_TEST_RUN (seed {SEED}), checked one by one"
    ));

    let mut table = Table::new(&["counter", "value"]);
    for name in COUNTERS {
        let value = report.counters.get(name).copied().unwrap_or_default();
        table.row(vec![name.to_owned(), value.to_string()]);
    }
    table.print("The program's counters at the end");

    let mut table = Table::new(&["category", "packets", "outcomes"]).text_column(2);
    for (name, count) in &report.categories {
        let mut outcomes: Vec<String> = count
            .outcomes
            .iter()
            .map(|(outcome, n)| format!("{outcome} {n}"))
            .collect();
        if count.refused_by_kernel > 0 {
            outcomes.push(format!("refused by the kernel {}", count.refused_by_kernel));
        }
        table.row(vec![
            name.clone(),
            count.packets.to_string(),
            outcomes.join(", "),
        ]);
    }
    table.print("Packets by category and what the program made of them");

    for v in &report.examples {
        println!(
            "  VIOLATION packet {} [{}] {}: {}\n    frame {}",
            v.packet, v.category, v.what, v.problem, v.frame
        );
    }
}

/// No violation (and the note says whether the counters add up).
fn target(report: &Report) -> Target {
    let consistent = report.outcomes_total == report.runs
        && report.runs + report.refused_by_kernel == report.packets;
    Target::new(
        PHASE,
        "hostile packets violating the property",
        report.violations as f64,
        "",
        Bound::AtMost,
        0.0,
    )
    .with_note(format!(
        "{} packets (seed {SEED}) in {:.1} s: {} packets/s; counters add up: {}",
        report.packets,
        report.seconds,
        si(report.packets_per_second),
        if consistent { "yes" } else { "NO" }
    ))
}
