//! Both detectors side by side: the ratio of their false suspicions, per
//! scenario and pooled.

use serde::Serialize;

use super::{analysis::Outcome, scenarios::Scenario};
use crate::bench::output::number;

/// Both detectors in one scenario.
#[derive(Debug, Serialize)]
pub(super) struct Comparison {
    pub(super) scenario: Scenario,
    pub(super) phi: Outcome,
    pub(super) timeout: Outcome,
    /// Timeout's false suspicions per node-hour over phi's.
    pub(super) ratio: Ratio,
    /// The same without the first [`WARM_UP`](super::WARM_UP) of the runs.
    pub(super) ratio_after_warm_up: Ratio,
}

/// Timeout's false suspicions per node-hour over phi's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(super) struct Ratio {
    pub(super) value: f64,
    /// Phi made no false suspicion: one is counted instead, and `value` is
    /// a lower bound.
    pub(super) lower_bound: bool,
}

impl Ratio {
    /// From both detectors' (false suspicions, node-hours).
    /// From both detectors' (false suspicions, node-hours); NaN (null in
    /// the results) when neither made any.
    pub(super) fn of(timeout: (usize, f64), phi: (usize, f64)) -> Self {
        let rate = |(count, hours): (usize, f64)| count as f64 / hours;
        Self {
            value: if timeout.0 == 0 && phi.0 == 0 {
                f64::NAN
            } else {
                rate(timeout) / rate((phi.0.max(1), phi.1))
            },
            lower_bound: phi.0 == 0,
        }
    }

    pub(super) fn text(self) -> String {
        if self.value.is_nan() {
            return "-".to_owned();
        }
        let value = if self.value >= 100.0 {
            format!("{:.0}", self.value)
        } else {
            number(self.value)
        };
        format!("{}{value}", if self.lower_bound { ">= " } else { "" })
    }
}

/// Both detectors' false suspicions over every scenario.
#[derive(Debug, Serialize)]
pub(super) struct Pooled {
    pub(super) phi_false_suspicions: usize,
    pub(super) phi_node_hours: f64,
    pub(super) timeout_false_suspicions: usize,
    pub(super) timeout_node_hours: f64,
    pub(super) ratio: Ratio,
    pub(super) ratio_after_warm_up: Ratio,
}

/// One detector's outcome of a comparison.
pub(super) type Pick = fn(&Comparison) -> &Outcome;

pub(super) fn pooled(comparisons: &[Comparison]) -> Pooled {
    let sum = |pick: Pick, sample: fn(&Outcome) -> (usize, f64)| {
        comparisons
            .iter()
            .map(|c| sample(pick(c)))
            .fold((0, 0.0), |(n, h), (count, hours)| (n + count, h + hours))
    };
    let phi = sum(|c| &c.phi, Outcome::sample);
    let timeout = sum(|c| &c.timeout, Outcome::sample);
    Pooled {
        phi_false_suspicions: phi.0,
        phi_node_hours: phi.1,
        timeout_false_suspicions: timeout.0,
        timeout_node_hours: timeout.1,
        ratio: Ratio::of(timeout, phi),
        ratio_after_warm_up: Ratio::of(
            sum(|c| &c.timeout, Outcome::sample_after_warm_up),
            sum(|c| &c.phi, Outcome::sample_after_warm_up),
        ),
    }
}
