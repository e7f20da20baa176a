//! The phase's targets, and the notes where there is nothing to compare.

use super::{
    P99_LIMIT_MS, PHASE, RATIO_LIMIT, WARM_UP,
    comparison::{Comparison, Pooled, Ratio},
};
use crate::bench::output::{Bound, Target, ms, number};

pub(super) fn targets(comparisons: &[Comparison], pooled: &Pooled) -> (Vec<Target>, Vec<String>) {
    let mut targets = Vec::new();
    let mut facts = Vec::new();
    for c in comparisons {
        targets.push(phi_false_downs(c));
        targets.push(phi_p99(c));
        ratio(c, &mut targets, &mut facts);
    }
    targets.push(pooled_ratio(pooled));
    (targets, facts)
}

/// Phi makes no false down in the scenario.
fn phi_false_downs(c: &Comparison) -> Target {
    let phi = &c.phi;
    Target::new(
        PHASE,
        format!("phi false downs, {}", c.scenario.label()),
        phi.false_downs as f64,
        "",
        Bound::AtMost,
        0.0,
    )
    .with_note(format!(
        "{} in the first {} s; {} false suspicions in {:.1} node-hours (timeout at the same \
         median: {} false downs, {} false suspicions)",
        phi.warm_up.false_downs,
        WARM_UP.as_secs(),
        phi.false_suspicions,
        phi.node_hours,
        c.timeout.false_downs,
        c.timeout.false_suspicions
    ))
}

/// Phi's p99 detection time (missed nodes counted as never) is below
/// [`P99_LIMIT_MS`].
fn phi_p99(c: &Comparison) -> Target {
    let phi = &c.phi;
    Target::new(
        PHASE,
        format!("phi detection p99, {}", c.scenario.label()),
        phi.p99_with_missed_ns
            .map_or(f64::INFINITY, |ns| ns as f64 / 1e6),
        "ms",
        Bound::Below,
        P99_LIMIT_MS,
    )
    .with_note(format!(
        "{} of {} dead nodes detected ({} missed, counted as never), p50 {} ms, max {} ms",
        phi.detected,
        phi.stopped - phi.never_sent,
        phi.missed,
        ms(phi.p50_ns),
        ms(phi.max_ns)
    ))
}

/// The timeout detector makes at least [`RATIO_LIMIT`] times phi's false
/// suspicions in the scenario: a target, or a fact when neither made any.
fn ratio(c: &Comparison, targets: &mut Vec<Target>, facts: &mut Vec<String>) {
    let (phi, timeout) = (&c.phi, &c.timeout);
    let label = c.scenario.label();
    let medians = format!(
        "medians phi {} ms, timeout {} ms ({})",
        ms(phi.p50_ns),
        ms(timeout.p50_ns),
        timeout.detector.setting()
    );
    if timeout.false_suspicions == 0 && phi.false_suspicions == 0 {
        facts.push(format!(
            "{PHASE}: {label}: neither detector made a false suspicion at the same median \
             detection time: no ratio to measure; {medians}"
        ));
        return;
    }
    targets.push(
        Target::new(
            PHASE,
            format!("false suspicions timeout/phi, {label}"),
            c.ratio.value,
            "x",
            Bound::AtLeast,
            RATIO_LIMIT,
        )
        .with_note(format!(
            "{}per node-hour: timeout {} ({}), phi {} ({}); after the first {} s: {}x; {medians}",
            lower_bound_note(c.ratio),
            number(timeout.false_suspicions_per_node_hour),
            timeout.false_suspicions,
            number(phi.false_suspicions_per_node_hour),
            phi.false_suspicions,
            WARM_UP.as_secs(),
            c.ratio_after_warm_up.text(),
        )),
    );
}

/// The same ratio over the four scenarios together.
fn pooled_ratio(pooled: &Pooled) -> Target {
    Target::new(
        PHASE,
        "false suspicions timeout/phi, pooled",
        pooled.ratio.value,
        "x",
        Bound::AtLeast,
        RATIO_LIMIT,
    )
    .with_note(format!(
        "{}timeout {} in {:.1} node-hours, phi {} in {:.1}, each scenario at phi's median; \
         after the first {} s: {}x",
        lower_bound_note(pooled.ratio),
        pooled.timeout_false_suspicions,
        pooled.timeout_node_hours,
        pooled.phi_false_suspicions,
        pooled.phi_node_hours,
        WARM_UP.as_secs(),
        pooled.ratio_after_warm_up.text(),
    ))
}

/// What a note says first when phi made no false suspicion.
fn lower_bound_note(ratio: Ratio) -> &'static str {
    if ratio.lower_bound {
        "a lower bound (phi made none: one counted); "
    } else {
        ""
    }
}
