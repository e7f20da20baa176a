//! The phase's tables: one per scenario, then the comparison of all.

use super::{
    INTERVAL, Size, WARM_UP,
    comparison::{Comparison, Pooled},
};
use crate::bench::output::{Table, ms, number, si};

pub(super) fn ms_f(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0}"))
}

pub(super) fn print_scenario(c: &Comparison, size: Size) {
    let mut table = Table::new(&[
        "detector",
        "setting",
        "p50 ms",
        "p99 ms",
        "max ms",
        "suspected p50",
        "detected",
        "missed",
        "false susp.",
        "per node-h",
        "false downs",
        "in warm-up",
        "mistake mean ms",
        "max ms",
    ])
    .text_column(1);
    for o in [&c.phi, &c.timeout] {
        table.row(vec![
            o.detector.name().to_owned(),
            o.detector.setting(),
            ms(o.p50_ns),
            ms(o.p99_ns),
            ms(o.max_ns),
            o.time_to_suspect
                .p50_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}")),
            format!("{}/{}", o.detected, o.stopped - o.never_sent),
            o.missed.to_string(),
            o.false_suspicions.to_string(),
            number(o.false_suspicions_per_node_hour),
            o.false_downs.to_string(),
            format!("{}/{}", o.warm_up.false_suspicions, o.warm_up.false_downs),
            ms_f(o.mistake_duration.mean_ms),
            ms_f(o.mistake_duration.max_ms),
        ]);
    }
    let injected = injected(c);
    table.print(&format!(
        "{}: {} nodes every {} ms for {} s, {} die; {injected}; a suspicion is a `{}` (phi) / \
         `{}` (timeout); in warm-up: false suspicions/downs in the first {} s",
        c.scenario.label(),
        si(f64::from(size.nodes)),
        INTERVAL.as_millis(),
        size.run.as_secs(),
        c.phi.stopped,
        c.phi.suspicion_event,
        c.timeout.suspicion_event,
        WARM_UP.as_secs()
    ));
}

pub(super) fn print_summary(comparisons: &[Comparison], pooled: &Pooled) {
    let mut table = Table::new(&[
        "scenario",
        "phi p50 ms",
        "timeout p50 ms",
        "phi /node-h",
        "timeout /node-h",
        "timeout / phi",
        "after warm-up",
    ]);
    for c in comparisons {
        table.row(vec![
            c.scenario.label(),
            ms(c.phi.p50_ns),
            ms(c.timeout.p50_ns),
            number(c.phi.false_suspicions_per_node_hour),
            number(c.timeout.false_suspicions_per_node_hour),
            c.ratio.text(),
            c.ratio_after_warm_up.text(),
        ]);
    }
    table.row(vec![
        "pooled".to_owned(),
        String::new(),
        String::new(),
        number(pooled.phi_false_suspicions as f64 / pooled.phi_node_hours),
        number(pooled.timeout_false_suspicions as f64 / pooled.timeout_node_hours),
        pooled.ratio.text(),
        pooled.ratio_after_warm_up.text(),
    ]);
    table.print(&format!(
        "False suspicions per node-hour at the same median detection time (>=: phi made \
             none, one counted; after warm-up: without the first {} s)",
        WARM_UP.as_secs()
    ));
}

/// What was done to the runs of a scenario, as measured: the agent's
/// stall, the senders' pauses, or the heartbeats lost.
fn injected(c: &Comparison) -> String {
    let faults = &c.phi.load.faults;
    if c.scenario.agent_stall {
        match c.phi.stall.zip(c.timeout.stall) {
            Some((a, b)) => format!(
                "agent stopped {:.2} s / {:.2} s; it logged the stall {} / {} times",
                (a.continued_mono_ns - a.stopped_mono_ns) as f64 / 1e9,
                (b.continued_mono_ns - b.stopped_mono_ns) as f64 / 1e9,
                a.noticed_in_log,
                b.noticed_in_log
            ),
            None => "agent not stopped".to_owned(),
        }
    } else if faults.pauses > 0 {
        format!("{} pauses", si(faults.pauses as f64))
    } else {
        let lost = faults.lost_random + faults.lost_in_bursts;
        format!(
            "{} heartbeats lost ({:.2}%){}",
            si(lost as f64),
            100.0 * lost as f64 / c.phi.load.heartbeats.max(1) as f64,
            if faults.bursts > 0 {
                format!(" in {} bursts", si(faults.bursts as f64))
            } else {
                String::new()
            }
        )
    }
}
