//! What a run reports: per category, the counters, and the violations.

use std::collections::BTreeMap;

use serde::Serialize;

#[cfg(doc)]
use super::EXAMPLES;

/// What one category did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CategoryCount {
    /// Packets generated.
    pub packets: u64,
    /// Of those, shorter than Ethernet and refused by the kernel (not run).
    pub refused_by_kernel: u64,
    /// Outcome counter moved by each run, by name (only those that moved).
    pub outcomes: BTreeMap<&'static str, u64>,
}

/// A packet that broke the property, or a run that broke the counters.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// Index of the packet in the run (0-based).
    pub packet: u64,
    pub category: &'static str,
    /// How the packet was made.
    pub what: String,
    /// What went wrong.
    pub problem: String,
    /// The frame, in hex.
    pub frame: String,
}

/// The result of a run: what was sent, what the program counted, and every
/// violation of the property (the first few, with their frames).
#[derive(Clone, Debug, Serialize)]
pub struct HostileReport {
    pub seed: u64,
    /// Packets generated.
    pub packets: u64,
    /// Packets the program ran on.
    pub runs: u64,
    /// Packets shorter than an Ethernet header, refused by the kernel with
    /// EINVAL before the program runs.
    pub refused_by_kernel: u64,
    /// Wall-clock time of the whole loop: generation, runs and checks.
    pub seconds: f64,
    pub packets_per_second: f64,
    /// Mean time the kernel reports per run of the program, in ns.
    pub program_ns_per_run: f64,
    /// By category name.
    pub categories: BTreeMap<&'static str, CategoryCount>,
    /// The program's counters at the end, by name.
    pub counters: BTreeMap<&'static str, u64>,
    /// Sum of the outcome counters; must equal `runs` (and `passed + dropped`).
    pub outcomes_total: u64,
    pub violations: u64,
    pub examples: Vec<Violation>,
}
