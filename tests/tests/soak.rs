//! The soak, shortened (root only): 1,000 nodes beating every 500 ms
//! through the XDP datapath for 30 s, with 1% random loss and about 40
//! pauses of 6 s (a crash and a recovery each), while the agent is killed
//! with SIGKILL and restarted twice. Held against the load generator's
//! ground truth by [`hb_tests::soak`]: every crash detected once, every
//! recovery once, no false down, no transition lost or repeated across the
//! restarts, every heartbeat the kernel took counted by the datapath, and
//! no blind window. `cargo xtask bench --only soak` runs the full one.
//!
//! The timeout is 6 intervals (3 s): a false down needs 6 heartbeats of
//! one node lost in a row, 1e-12 per heartbeat at 1% loss, against 60,000
//! heartbeats here.
//!
//! Needs the `hb` binary (`$HB_BIN`, as `cargo xtask test` sets it) and
//! `hb-tools` beside it (or `$HB_TOOLS_BIN`).

use hb_tests::{
    Hb, is_root,
    soak::{self, SoakSpec},
    unique_prefix,
};

#[test]
fn a_short_soak_loses_nothing_across_sigkill_restarts() {
    if !is_root() {
        eprintln!("skipped: needs root (run `cargo xtask test` as root)");
        return;
    }
    let hb = Hb::from_env();
    let tools = hb.tools();
    let spec = SoakSpec::short();
    assert_eq!(spec.restarts(), 2);
    let outcome = soak::run(&hb, &tools, &unique_prefix(), &spec, |line| {
        eprintln!("soak: {line}");
    })
    .unwrap_or_else(|e| panic!("the soak could not run: {e}"));
    let figures = serde_json::to_string_pretty(&outcome.to_json()).unwrap();
    eprintln!("soak: {figures}");
    let problems = outcome.problems();
    assert!(
        problems.is_empty(),
        "the soak found problems:\n{}\n(figures above)",
        problems.join("\n")
    );
    let verdict = &outcome.verdict;
    // Enough happened for the verdict to mean something.
    assert!(verdict.crashes >= 10, "only {} crashes", verdict.crashes);
    assert!(
        verdict.recoveries >= 5,
        "only {} recoveries",
        verdict.recoveries
    );
    assert_eq!(outcome.restarts.len(), 2);
    assert!(
        outcome.sent > 50_000,
        "only {} heartbeats sent",
        outcome.sent
    );
    assert!(outcome.rss.len() >= 20, "{} RSS samples", outcome.rss.len());
}
