//! The options, validated and turned into the units the sending loop uses:
//! the per-node interval, the bounds, the seeded choice of the nodes that
//! stop and every node's phase.

use std::time::Duration;

use anyhow::bail;
use rand::Rng as _;

use super::options::{LoadgenOptions, MAX_BATCH, MAX_COUNT, MAX_DURATION, MAX_NODES, Pace};
use crate::rng;

/// The shortest `--pause-every`.
const MIN_PAUSE_EVERY: Duration = Duration::from_millis(1);
/// The longest `--pause-every`: a mean time between pauses, which may be
/// far longer than a run (rare pauses in a large fleet: a soak's 1000
/// pauses among 100,000 nodes in 10 minutes is one per 1000 minutes per
/// node).
const MAX_PAUSE_EVERY: Duration = Duration::from_secs(1000 * 3600);
/// The stream of the seed the phase jitter is drawn from (the stopping
/// nodes are drawn from the seed itself, the faults from streams of their
/// own).
const PHASE_STREAM: u64 = 0x7068_6173_6573;

/// The validated options, in the units the sending loop uses.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) nodes: u32,
    pub(super) first_id: u32,
    pub(super) interval_ns: u64,
    /// Heartbeats due at or after this offset from the start are not sent.
    pub(super) end_ns: u64,
    /// At most this many regular heartbeats (`u64::MAX`: no count).
    pub(super) count: u64,
    pub(super) batch: usize,
    pub(super) seed: u64,
    /// Offset from the start at which the doomed nodes stop.
    pub(super) stop_after_ns: u64,
    /// Slots (node id - first id) of the nodes that stop, sorted.
    pub(super) doomed: Vec<u32>,
    pub(super) leave_at_end: bool,
    /// Probability that a heartbeat is lost.
    pub(super) loss: f64,
    /// Probability that a heartbeat starts a burst of loss.
    pub(super) burst_loss: f64,
    /// Mean time from one pause's start to the next (0: no pauses).
    pub(super) pause_every_ns: u64,
    /// Length of a pause (0: no pauses).
    pub(super) pause_for_ns: u64,
    /// Whether every pause goes into the report (with pauses only).
    pub(super) report_pauses: bool,
    /// Each slot's phase (see [`Plan::phase_ns`]), drawn once: the schedule
    /// reads it for every heartbeat.
    phases: Vec<u64>,
}

impl Plan {
    pub(super) fn new(options: &LoadgenOptions) -> anyhow::Result<Self> {
        check_fleet(options)?;
        let interval_ns = interval_ns(options)?;
        check_bounds(options)?;
        if !(0.0..=1.0).contains(&options.loss) {
            bail!("--loss must be between 0 and 100 (percent of the heartbeats)");
        }
        if !(0.0..=1.0).contains(&options.burst_loss) {
            bail!("--burst-loss must be between 0 and 100 (percent of the heartbeats)");
        }
        let (pause_every_ns, pause_for_ns) = pauses_ns(options)?;
        let stop_after_ns = stop_after_ns(options)?;
        Ok(Plan {
            nodes: options.nodes,
            first_id: options.first_id,
            interval_ns,
            end_ns: options.duration.unwrap_or(MAX_DURATION).as_nanos() as u64,
            count: options.count.unwrap_or(u64::MAX),
            batch: options.batch,
            seed: options.seed,
            stop_after_ns,
            doomed: doomed_slots(options),
            leave_at_end: options.leave_at_end,
            loss: options.loss,
            burst_loss: options.burst_loss,
            pause_every_ns,
            pause_for_ns,
            report_pauses: options.report_pauses && pause_for_ns > 0,
            phases: phases(options.nodes, interval_ns, options.seed),
        })
    }

    /// Whether any fault is injected.
    pub(super) fn faulty(&self) -> bool {
        self.loss > 0.0 || self.burst_loss > 0.0 || self.pause_for_ns > 0
    }

    /// Aggregate heartbeats per second.
    pub(super) fn rate(&self) -> f64 {
        self.nodes as f64 * 1e9 / self.interval_ns as f64
    }

    /// The interval the heartbeats advertise, in whole milliseconds (at least 1).
    pub(super) fn interval_ms(&self) -> u32 {
        (self.interval_ns as f64 / 1e6)
            .round()
            .clamp(1.0, u32::MAX as f64) as u32
    }

    /// Offset of `slot`'s first heartbeat from the start: the slot's even
    /// share of the interval plus a seeded jitter within that share, so
    /// phases grow with the slot and stay below the interval.
    pub(super) fn phase_ns(&self, slot: u32) -> u64 {
        self.phases[slot as usize]
    }
}

/// Checks the nodes, their ids, the targets and the batch size.
fn check_fleet(options: &LoadgenOptions) -> anyhow::Result<()> {
    if !(1..=MAX_NODES).contains(&options.nodes) {
        bail!("--nodes must be between 1 and {MAX_NODES}");
    }
    if options.first_id.checked_add(options.nodes - 1).is_none() {
        bail!(
            "--first-id {} + --nodes {} goes past the largest node id {}",
            options.first_id,
            options.nodes,
            u32::MAX
        );
    }
    let Some(first_target) = options.targets.first() else {
        bail!("no monitor address: pass --to ADDR:PORT at least once");
    };
    if options
        .targets
        .iter()
        .any(|t| t.is_ipv4() != first_target.is_ipv4())
    {
        bail!("every --to target must be of the same address family (all IPv4 or all IPv6)");
    }
    if !(1..=MAX_BATCH).contains(&options.batch) {
        bail!("--batch must be between 1 and {MAX_BATCH}");
    }
    Ok(())
}

/// The per-node interval the pace asks for.
fn interval_ns(options: &LoadgenOptions) -> anyhow::Result<u64> {
    let interval_ns = match options.pace {
        Pace::Interval(interval) => interval.as_nanos(),
        Pace::Rate(rate) => {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("--rate must be a positive number of heartbeats per second");
            }
            (options.nodes as f64 * 1e9 / rate).round() as u128
        }
    };
    if !(1..=MAX_DURATION.as_nanos()).contains(&interval_ns) {
        bail!(
            "the per-node interval (--interval, or --nodes / --rate) must be between 1 ns and 1h"
        );
    }
    Ok(interval_ns as u64)
}

/// Checks that the run has a bound (a duration, a count or both) in range.
fn check_bounds(options: &LoadgenOptions) -> anyhow::Result<()> {
    if options.duration.is_none() && options.count.is_none() {
        bail!("hb-tools loadgen needs a bound: pass --duration (at most 1h) or --count (or both)");
    }
    if let Some(duration) = options.duration
        && (duration.is_zero() || duration > MAX_DURATION)
    {
        bail!("--duration must be more than 0 and at most 1h");
    }
    if let Some(count) = options.count
        && !(1..=MAX_COUNT).contains(&count)
    {
        bail!("--count must be between 1 and {MAX_COUNT}");
    }
    Ok(())
}

/// `--pause-every` and `--pause-for` in ns, both or neither ((0, 0)).
fn pauses_ns(options: &LoadgenOptions) -> anyhow::Result<(u64, u64)> {
    match (options.pause_every, options.pause_for) {
        (None, None) => Ok((0, 0)),
        (Some(_), None) => {
            bail!("--pause-every needs --pause-for (how long each pause lasts, e.g. 500ms)")
        }
        (None, Some(_)) => {
            bail!("--pause-for needs --pause-every (how often a node pauses, e.g. 10s)")
        }
        (Some(every), Some(length)) => {
            if !(MIN_PAUSE_EVERY..=MAX_PAUSE_EVERY).contains(&every) {
                bail!("--pause-every must be between 1ms and 1000h");
            }
            if length.is_zero() {
                bail!("--pause-for must be more than 0");
            }
            if length >= every {
                bail!("--pause-for must be shorter than --pause-every");
            }
            Ok((every.as_nanos() as u64, length.as_nanos() as u64))
        }
    }
}

/// `--stop-after` in ns (0 without `--stop-fraction`).
fn stop_after_ns(options: &LoadgenOptions) -> anyhow::Result<u64> {
    if !(0.0..=1.0).contains(&options.stop_fraction) {
        bail!("--stop-fraction must be between 0 and 1");
    }
    match (options.stop_fraction > 0.0, options.stop_after) {
        (false, None) => Ok(0),
        (false, Some(_)) => bail!("--stop-after needs --stop-fraction (above 0)"),
        (true, None) => bail!("--stop-fraction needs --stop-after (when they stop)"),
        (true, Some(after)) => {
            if options.duration.is_some_and(|d| after >= d) {
                bail!("--stop-after must be shorter than --duration");
            }
            if after > MAX_DURATION {
                bail!("--stop-after must be at most 1h");
            }
            Ok(after.as_nanos() as u64)
        }
    }
}

/// The slots of the nodes that stop: a seeded random `--stop-fraction` of
/// them, sorted.
fn doomed_slots(options: &LoadgenOptions) -> Vec<u32> {
    let stopping = (options.stop_fraction * options.nodes as f64).round() as usize;
    let mut doomed: Vec<u32> = rand::seq::index::sample(
        &mut rng::seeded(options.seed),
        options.nodes as usize,
        stopping.min(options.nodes as usize),
    )
    .into_iter()
    .map(|slot| slot as u32)
    .collect();
    doomed.sort_unstable();
    doomed
}

/// Every slot's phase: its even share of the interval plus a jitter within
/// that share drawn from the seed.
fn phases(nodes: u32, interval_ns: u64, seed: u64) -> Vec<u64> {
    let mut jitter = rng::stream(seed, PHASE_STREAM);
    let share = interval_ns as f64 / nodes as f64;
    (0..nodes)
        .map(|slot| {
            let jitter: f64 = jitter.random();
            (((slot as f64 + jitter) * share) as u64).min(interval_ns - 1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, net::SocketAddr};

    use super::*;
    use crate::loadgen::test_support::fleet;

    #[test]
    fn refuses_unbounded_or_out_of_range_runs() {
        let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let base = LoadgenOptions {
            duration: Some(Duration::from_secs(1)),
            ..LoadgenOptions::new(10, vec![target], Pace::Interval(Duration::from_secs(1)))
        };
        assert!(Plan::new(&base).is_ok());
        let refused = |options: LoadgenOptions, needle: &str| {
            let error = Plan::new(&options).unwrap_err().to_string();
            assert!(
                error.contains(needle),
                "{error:?} does not mention {needle}"
            );
        };
        refused(
            LoadgenOptions {
                duration: None,
                ..base.clone()
            },
            "needs a bound",
        );
        refused(
            LoadgenOptions {
                duration: Some(Duration::from_secs(3601)),
                ..base.clone()
            },
            "--duration",
        );
        refused(
            LoadgenOptions {
                duration: None,
                count: Some(MAX_COUNT + 1),
                ..base.clone()
            },
            "--count",
        );
        refused(
            LoadgenOptions {
                nodes: MAX_NODES + 1,
                ..base.clone()
            },
            "--nodes",
        );
        refused(
            LoadgenOptions {
                first_id: u32::MAX - 5,
                ..base.clone()
            },
            "--first-id",
        );
        refused(
            LoadgenOptions {
                stop_fraction: 0.5,
                ..base.clone()
            },
            "--stop-after",
        );
        refused(
            LoadgenOptions {
                stop_fraction: 0.5,
                stop_after: Some(Duration::from_secs(2)),
                ..base.clone()
            },
            "shorter than --duration",
        );
        refused(
            LoadgenOptions {
                pace: Pace::Rate(0.0),
                ..base.clone()
            },
            "--rate",
        );
        refused(
            LoadgenOptions {
                targets: vec![target, "[::1]:9".parse().unwrap()],
                ..base.clone()
            },
            "address family",
        );
        refused(
            LoadgenOptions {
                batch: 0,
                ..base.clone()
            },
            "--batch",
        );
    }

    #[test]
    fn phases_spread_over_the_interval_and_the_plan_is_seeded() {
        let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let options = LoadgenOptions {
            duration: Some(Duration::from_secs(10)),
            stop_fraction: 0.3,
            stop_after: Some(Duration::from_secs(5)),
            ..LoadgenOptions::new(1000, vec![target], Pace::Rate(500.0))
        };
        let plan = Plan::new(&options).unwrap();
        assert_eq!(plan.interval_ns, 2_000_000_000);
        assert_eq!(plan.interval_ms(), 2000);
        let phases: Vec<u64> = (0..1000).map(|slot| plan.phase_ns(slot)).collect();
        assert!(phases.windows(2).all(|w| w[0] <= w[1]));
        for (slot, phase) in phases.iter().enumerate() {
            let share = 2_000_000;
            assert!((slot as u64 * share..(slot as u64 + 1) * share).contains(phase));
        }
        let offsets: HashSet<u64> = phases
            .iter()
            .enumerate()
            .map(|(slot, phase)| phase - slot as u64 * 2_000_000)
            .collect();
        assert!(offsets.len() > 900, "the jitter must vary");

        assert_eq!(plan.doomed.len(), 300);
        assert_eq!(plan.doomed, Plan::new(&options).unwrap().doomed);
        let other = Plan::new(&LoadgenOptions { seed: 2, ..options }).unwrap();
        assert_ne!(plan.doomed, other.doomed);
    }

    #[test]
    fn refuses_out_of_range_faults() {
        let base = fleet(10, Duration::from_secs(1), Duration::from_secs(10));
        let refused = |options: LoadgenOptions, needle: &str| {
            let error = Plan::new(&options).unwrap_err().to_string();
            assert!(
                error.contains(needle),
                "{error:?} does not mention {needle}"
            );
        };
        for loss in [-0.01, 1.01, f64::NAN] {
            refused(
                LoadgenOptions {
                    loss,
                    ..base.clone()
                },
                "--loss must be between 0 and 100",
            );
            refused(
                LoadgenOptions {
                    burst_loss: loss,
                    ..base.clone()
                },
                "--burst-loss must be between 0 and 100",
            );
        }
        let pauses = |every: Option<u64>, length: Option<u64>| LoadgenOptions {
            pause_every: every.map(Duration::from_millis),
            pause_for: length.map(Duration::from_millis),
            ..base.clone()
        };
        refused(
            pauses(Some(10_000), None),
            "--pause-every needs --pause-for",
        );
        refused(pauses(None, Some(500)), "--pause-for needs --pause-every");
        refused(
            pauses(Some(500), Some(500)),
            "--pause-for must be shorter than --pause-every",
        );
        refused(
            pauses(Some(10_000), Some(0)),
            "--pause-for must be more than 0",
        );
        refused(
            pauses(Some(0), Some(0)),
            "--pause-every must be between 1ms and 1000h",
        );
        refused(
            pauses(Some(3_600_000_001), Some(500)),
            "--pause-every must be between 1ms and 1000h",
        );
        for ok in [
            LoadgenOptions {
                loss: 1.0,
                burst_loss: 1.0,
                ..base.clone()
            },
            pauses(Some(2), Some(1)),
            pauses(Some(3_600_000), Some(3_599_999)),
            pauses(Some(3_600_000_000), Some(20_000)),
        ] {
            assert!(Plan::new(&ok).is_ok(), "{ok:?}");
        }
    }
}
