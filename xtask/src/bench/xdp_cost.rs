//! Phase `xdp-cost`: the XDP program's cost per packet, measured by
//! `hb bench xdp-cost` through `BPF_PROG_TEST_RUN` (no network involved).
//! Target: an accepted heartbeat costs at most 80 ns.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Ctx, PhaseOutput,
    output::{Bound, Table, Target},
};

const PHASE: &str = "xdp-cost";
/// The budget of one accepted heartbeat.
const ACCEPTED_LIMIT_NS: f64 = 80.0;
const ACCEPTED_CASE: &str = "accepted heartbeat";

/// `hb bench xdp-cost`'s output.
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
    let cost: XdpCost = ctx.hb_json(&[
        "bench",
        "xdp-cost",
        "--distinct",
        &distinct.to_string(),
        "--repeat",
        &repeat.to_string(),
    ])?;
    let mut table = Table::new(&["case", "ns/packet", "how"]).text_column(2);
    for case in &cost.cases {
        table.row(vec![
            case.case.clone(),
            format!("{:.1}", case.ns_per_packet),
            case.method.clone(),
        ]);
    }
    table.print("XDP program cost per packet (BPF_PROG_TEST_RUN)");
    let accepted = cost
        .cases
        .iter()
        .find(|case| case.case == ACCEPTED_CASE)
        .with_context(|| format!("`hb bench xdp-cost` reports no {ACCEPTED_CASE:?} case"))?;
    let target = Target::new(
        PHASE,
        "XDP cost of an accepted heartbeat",
        accepted.ns_per_packet,
        "ns",
        Bound::AtMost,
        ACCEPTED_LIMIT_NS,
    )
    .with_note(accepted.method.clone());
    Ok(PhaseOutput {
        json: json!({ "distinct": distinct, "repeat": repeat, "cases": cost.cases }),
        targets: vec![target],
        plots: Vec::new(),
        facts: Vec::new(),
    })
}
