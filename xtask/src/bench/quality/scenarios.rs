//! The four scenarios of trouble and the two detectors run through each.

use std::time::Duration;

use serde::Serialize;

use super::{
    BURST_LOSS_PERCENT, INTERVAL, LOSS_PERCENT, MULTIPLIER, PAUSE_EVERY, PAUSE_FOR,
    PHI_ACCEPTABLE_PAUSE, PHI_MIN_STD_DEV, PHI_THRESHOLD, PHI_Y, SWEEP,
};
use crate::bench::rig::Faults;

/// One kind of trouble.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Scenario {
    pub(super) key: &'static str,
    pub(super) title: &'static str,
    #[serde(skip)]
    pub(super) faults: Faults,
    /// The agent is stopped for [`STALL`](super::STALL) at [`STALL_AT`](super::STALL_AT).
    pub(super) agent_stall: bool,
}

pub(super) fn scenarios() -> Vec<Scenario> {
    let none = Faults::default();
    vec![
        Scenario {
            key: "a",
            title: "5% random loss",
            faults: Faults {
                loss_percent: LOSS_PERCENT,
                ..none
            },
            agent_stall: false,
        },
        Scenario {
            key: "b",
            title: "bursts of 2-3 lost",
            faults: Faults {
                burst_loss_percent: BURST_LOSS_PERCENT,
                ..none
            },
            agent_stall: false,
        },
        Scenario {
            key: "c",
            title: "500 ms sender pauses",
            faults: Faults {
                pause: Some((PAUSE_EVERY, PAUSE_FOR)),
                ..none
            },
            agent_stall: false,
        },
        Scenario {
            key: "d",
            title: "agent stalled 2 s",
            faults: none,
            agent_stall: true,
        },
    ]
}

impl Scenario {
    pub(super) fn label(&self) -> String {
        format!("({}) {}", self.key, self.title)
    }
}

/// The detector an agent runs.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(super) enum Detector {
    Phi,
    /// Timeout [`MULTIPLIER`] x `interval_ms`.
    Timeout {
        interval_ms: u64,
    },
}

impl Detector {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Phi => "phi",
            Self::Timeout { .. } => "timeout",
        }
    }

    /// The interval configured for the nodes.
    pub(super) fn interval(self) -> Duration {
        match self {
            Self::Phi => INTERVAL,
            Self::Timeout { interval_ms } => Duration::from_millis(interval_ms),
        }
    }

    pub(super) fn timeout_ms(self) -> Option<u64> {
        match self {
            Self::Phi => None,
            Self::Timeout { interval_ms } => Some(interval_ms * u64::from(MULTIPLIER)),
        }
    }

    /// How it is set, in a few words.
    pub(super) fn setting(self) -> String {
        match self {
            Self::Phi => format!(
                "phi {PHI_THRESHOLD}, sd >= {} ms, pause {} ms",
                PHI_MIN_STD_DEV.as_millis(),
                PHI_ACCEPTABLE_PAUSE.as_millis()
            ),
            Self::Timeout { interval_ms } => format!(
                "{MULTIPLIER} x {interval_ms} ms = {} ms",
                interval_ms * u64::from(MULTIPLIER)
            ),
        }
    }

    /// The agent configuration's `[detector]` section.
    pub(super) fn section(self) -> String {
        match self {
            Self::Phi => format!(
                "[detector]\n\
                 kind = \"phi\"\n\
                 phi_threshold = {PHI_THRESHOLD:?}\n\
                 min_std_dev = \"{}ms\"\n\
                 acceptable_pause = \"{}ms\"\n",
                PHI_MIN_STD_DEV.as_millis(),
                PHI_ACCEPTABLE_PAUSE.as_millis()
            ),
            Self::Timeout { .. } => "[detector]\nkind = \"timeout\"\n".to_owned(),
        }
    }
}

/// Phi's deadline for a steady sender at [`INTERVAL`], ms.
pub(super) fn phi_deadline_ms() -> f64 {
    (INTERVAL + PHI_ACCEPTABLE_PAUSE).as_secs_f64() * 1e3
        + PHI_Y * PHI_MIN_STD_DEV.as_secs_f64() * 1e3
}

/// The timeout detector's interval whose timeout matches phi's median
/// detection time `phi_p50_ns` (see the module doc); phi's deadline for a
/// steady sender if phi detected nothing.
pub(super) fn matched_interval_ms(phi_p50_ns: Option<u64>) -> u64 {
    let median_ms = phi_p50_ns.map_or_else(phi_deadline_ms, |ns| ns as f64 / 1e6);
    let timeout_ms = median_ms - SWEEP.as_secs_f64() * 1e3 / 2.0;
    let interval_ms = (timeout_ms / f64::from(MULTIPLIER)).round() as u64;
    // The agent wants the sweep period at most the interval.
    interval_ms.max(SWEEP.as_millis() as u64)
}
