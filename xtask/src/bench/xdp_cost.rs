//! Phase `xdp-cost`: the XDP program's cost per packet, measured by
//! `hb-tools bench xdp-cost` through `BPF_PROG_TEST_RUN` (no network involved),
//! three times: the median is shown and checked. Targets: an accepted
//! heartbeat costs at most 80 ns, an accepted authenticated one (SipHash tag
//! verified) at most 115 ns. The cost of authentication itself is reported
//! as the difference of the two medians, and the floor under both (an empty
//! program, one that only reads the clock, one array lookup, measured the
//! same way) as facts. An accepted probe reply (an ICMP echo reply whose
//! tag the program checks, issue 15) is measured the same way; its target
//! is at most 1.2 times an accepted heartbeat's cost (the ratio of the
//! medians), and its ratio to an authenticated heartbeat is shown beside.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Ctx, PhaseOutput,
    output::{Bound, Table, Target},
};

const PHASE: &str = "xdp-cost";
/// The budget of one accepted heartbeat, without and with authentication.
const ACCEPTED_LIMIT_NS: f64 = 80.0;
const ACCEPTED_CASE: &str = "accepted heartbeat";
const AUTHENTICATED_LIMIT_NS: f64 = 115.0;
const AUTHENTICATED_CASE: &str = "accepted authenticated heartbeat";
const PROBE_CASE: &str = "accepted probe reply";
/// The budget of an accepted probe reply, as a multiple of an accepted
/// heartbeat's cost.
const PROBE_RATIO_LIMIT: f64 = 1.2;
/// How `hb-tools bench xdp-cost` names its floor cases.
const FLOOR_PREFIX: &str = "floor: ";
/// Runs of `hb-tools bench xdp-cost`; the median is checked.
const RUNS: usize = 3;

/// `hb-tools bench xdp-cost`'s output.
#[derive(Debug, Deserialize, Serialize)]
struct XdpCost {
    cases: Vec<PacketCost>,
}

#[derive(Debug, Deserialize, Serialize)]
struct PacketCost {
    case: String,
    ns_per_packet: f64,
    method: String,
}

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let (distinct, repeat) = if ctx.quick {
        (20_000u32, 200_000u32)
    } else {
        (100_000, 1_000_000)
    };
    let mut runs: Vec<XdpCost> = Vec::new();
    for _ in 0..RUNS {
        runs.push(ctx.tools_json(&[
            "bench",
            "xdp-cost",
            "--distinct",
            &distinct.to_string(),
            "--repeat",
            &repeat.to_string(),
        ])?);
    }
    let medians = medians(&runs);
    print_table(&medians);
    let find = |name: &str| {
        medians
            .iter()
            .find(|m| m.case == name)
            .with_context(|| format!("`hb-tools bench xdp-cost` reports no {name:?} case"))
    };
    let mut targets = Vec::new();
    for (name, what, limit) in [
        (
            ACCEPTED_CASE,
            "XDP cost of an accepted heartbeat",
            ACCEPTED_LIMIT_NS,
        ),
        (
            AUTHENTICATED_CASE,
            "XDP cost of an accepted authenticated heartbeat",
            AUTHENTICATED_LIMIT_NS,
        ),
    ] {
        let m = find(name)?;
        targets.push(
            Target::new(PHASE, what, m.median, "ns", Bound::AtMost, limit).with_note(format!(
                "median of {RUNS} runs ({} ns); median run: {}",
                m.listed, m.method
            )),
        );
    }
    let probe = find(PROBE_CASE)?.median;
    let ratio = probe / find(ACCEPTED_CASE)?.median;
    let ratio_signed = probe / find(AUTHENTICATED_CASE)?.median;
    println!(
        "an accepted probe reply costs {probe:.1} ns: {ratio:.2}x an accepted heartbeat, \
         {ratio_signed:.2}x an accepted authenticated one (a probe reply's tag is always checked)"
    );
    targets.push(
        Target::new(
            PHASE,
            "XDP cost of an accepted probe reply / an accepted heartbeat's",
            ratio,
            "x",
            Bound::AtMost,
            PROBE_RATIO_LIMIT,
        )
        .with_note(format!(
            "medians: probe reply {probe:.1} ns, heartbeat {:.1} ns, authenticated heartbeat \
             {:.1} ns ({ratio_signed:.2}x)",
            find(ACCEPTED_CASE)?.median,
            find(AUTHENTICATED_CASE)?.median
        )),
    );
    let authentication_ns = find(AUTHENTICATED_CASE)?.median - find(ACCEPTED_CASE)?.median;
    println!(
        "authentication (SipHash-2-4 tag check) adds {authentication_ns:.1} ns to an accepted \
         heartbeat (difference of the medians)"
    );
    let floors: Vec<&CaseMedian> = medians
        .iter()
        .filter(|m| m.case.starts_with(FLOOR_PREFIX))
        .collect();
    let mut facts = Vec::new();
    if !floors.is_empty() {
        let fact = format!(
            "the floor under an accepted heartbeat, measured the same way (medians): {}",
            floors
                .iter()
                .map(|m| format!(
                    "{} {:.1} ns",
                    m.case.trim_start_matches(FLOOR_PREFIX),
                    m.median
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("{fact}");
        facts.push(fact);
    }
    Ok(PhaseOutput {
        json: json!({
            "distinct": distinct,
            "repeat": repeat,
            "medians": medians
                .iter()
                .map(|m| json!({ "case": m.case, "ns_per_packet_median": m.median }))
                .collect::<Vec<_>>(),
            "authentication_ns": authentication_ns,
            "probe_reply_ratio": ratio,
            "probe_reply_ratio_authenticated": ratio_signed,
            "runs": runs,
        }),
        targets,
        plots: Vec::new(),
        facts,
    })
}

/// One case over the runs.
struct CaseMedian {
    case: String,
    /// The median run's ns per packet.
    median: f64,
    /// Every run's, in the order they ran.
    listed: String,
    /// How the median run measured it.
    method: String,
}

/// Each case of the first run, with its median over the runs.
fn medians(runs: &[XdpCost]) -> Vec<CaseMedian> {
    runs[0]
        .cases
        .iter()
        .map(|case| {
            let mut values: Vec<(f64, &PacketCost)> = runs
                .iter()
                .filter_map(|run| run.cases.iter().find(|c| c.case == case.case))
                .map(|c| (c.ns_per_packet, c))
                .collect();
            let listed: Vec<String> = values.iter().map(|(ns, _)| format!("{ns:.1}")).collect();
            values.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (median, median_run) = values[values.len() / 2];
            CaseMedian {
                case: case.case.clone(),
                median,
                listed: listed.join(" / "),
                method: median_run.method.clone(),
            }
        })
        .collect()
}

fn print_table(medians: &[CaseMedian]) {
    let mut table = Table::new(&["case", "ns/packet", "runs", "how (median run)"]).text_column(3);
    for m in medians {
        table.row(vec![
            m.case.clone(),
            format!("{:.1}", m.median),
            m.listed.clone(),
            m.method.clone(),
        ]);
    }
    table.print(&format!(
        "XDP program cost per packet (BPF_PROG_TEST_RUN, median of {RUNS} runs)"
    ));
}
