//! `hb-tools datapath-counters`: the pinned XDP datapath's counters of an
//! instance, sampled at a fixed period while no agent needs to run, and the
//! blind window they show.
//!
//! The XDP program keeps its counters in the pinned per-CPU array
//! `HB_COUNTERS` (`/sys/fs/bpf/hb/<instance>/layout-<N>/HB_COUNTERS`, see
//! [`hb::datapath::pins::InstanceDir::map_pin`]). Each sample opens the pin
//! afresh, so it reads what is pinned now (a datapath replaced or removed
//! between two samples shows as such), and sums every counter over the CPUs.
//! A sample whose pin cannot be read is kept, without values.
//!
//! The blind window is the longest span of samples over which the
//! `accepted` counter did not grow while heartbeats were being sent: from
//! the first sample of a run of equal values to its last, counted only
//! between the first and the last growth (or within the span the caller
//! names). 0 means every sample saw new heartbeats recorded; the true
//! unrecorded time is below that span plus two sampling periods.

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context, bail};
use aya::maps::{Map, MapData, PerCpuArray};
use hb::{
    clock::monotonic_ns,
    datapath::{pins::InstanceDir, xdp::sum_blocks},
};
use hb_common::{
    counters::{Counter, CounterBlock, CounterValues},
    globals,
};
use serde::{Deserialize, Serialize};

/// The shortest sampling period.
pub const MIN_EVERY: Duration = Duration::from_millis(10);
/// The longest sampling period.
pub const MAX_EVERY: Duration = Duration::from_secs(60);
/// The longest run.
pub const MAX_FOR: Duration = Duration::from_secs(3600);

/// Every counter of an instance's pinned datapath now, summed over CPUs.
pub fn read_pinned(instance: &str) -> anyhow::Result<CounterValues> {
    let path = InstanceDir::new(instance)?.map_pin(globals::COUNTERS_MAP);
    let map = MapData::from_pin(&path)
        .with_context(|| format!("opening the pinned counters {}", path.display()))?;
    let counters: PerCpuArray<MapData, CounterBlock> = PerCpuArray::try_from(Map::PerCpuArray(map))
        .with_context(|| format!("{} is not the counters' per-CPU array", path.display()))?;
    let blocks = counters
        .get(&0, 0)
        .with_context(|| format!("reading the counters of {}", path.display()))?;
    Ok(sum_blocks(blocks.iter()))
}

/// One sample: when, and the `accepted` count (null: the pin could not be
/// read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub mono_ns: u64,
    pub accepted: Option<u64>,
}

/// The longest span without growth: where it starts and ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flat {
    /// Its length, ns (0: the counter grew at every sample).
    pub ns: u64,
    pub from_mono_ns: u64,
    pub to_mono_ns: u64,
}

/// What `hb-tools datapath-counters` prints (and writes with `--report`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub instance: String,
    pub every_ns: u64,
    /// Samples taken, and how many of them could not read the pin.
    pub samples_taken: u64,
    pub unreadable: u64,
    /// Every counter at the first and at the last readable sample, by name.
    pub first: Option<serde_json::Map<String, serde_json::Value>>,
    pub last: Option<serde_json::Map<String, serde_json::Value>>,
    /// The longest span between the first and the last growth of
    /// `accepted` over which it did not grow: the blind window.
    pub blind_window: Flat,
    /// Ended early by SIGINT or SIGTERM.
    pub interrupted: bool,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl ProbeReport {
    /// The human summary printed at the end.
    pub fn summary(&self) -> String {
        let accepted = |values: &Option<serde_json::Map<String, serde_json::Value>>| {
            values
                .as_ref()
                .and_then(|v| v.get("accepted"))
                .and_then(serde_json::Value::as_u64)
        };
        format!(
            "hb-tools datapath-counters: instance {}, {} samples every {:?} ({} unreadable){}\n  \
             accepted  {:?} -> {:?}\n  blind     {:.3} s without growth of `accepted` while it \
             grew\n",
            self.instance,
            self.samples_taken,
            Duration::from_nanos(self.every_ns),
            self.unreadable,
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            },
            accepted(&self.first),
            accepted(&self.last),
            self.blind_window.ns as f64 / 1e9,
        )
    }
}

/// The longest span of samples within `[from, to]` (monotonic ns) over
/// which `accepted` did not grow: from the first sample of a run of equal
/// (or unreadable) values to the sample before the next growth.
pub fn longest_flat(samples: &[Sample], from: u64, to: u64) -> Flat {
    let mut best = Flat::default();
    // The first sample of the current run without growth.
    let mut run: Option<u64> = None;
    let mut previous: Option<u64> = None;
    for sample in samples.iter().filter(|s| (from..=to).contains(&s.mono_ns)) {
        match (sample.accepted, previous) {
            (Some(value), Some(before)) if value > before => {
                run = Some(sample.mono_ns);
                previous = Some(value);
                continue;
            }
            (Some(value), None) => {
                run = Some(sample.mono_ns);
                previous = Some(value);
                continue;
            }
            // Equal, lower (a datapath replaced: counting from there on)
            // or unreadable: no growth.
            (Some(value), Some(_)) => previous = Some(value),
            (None, _) => {}
        }
        if let Some(start) = run {
            let ns = sample.mono_ns - start;
            if ns > best.ns {
                best = Flat {
                    ns,
                    from_mono_ns: start,
                    to_mono_ns: sample.mono_ns,
                };
            }
        }
    }
    best
}

/// The span from the first to the last growth of `accepted`, if it grew.
pub fn growth_span(samples: &[Sample]) -> Option<(u64, u64)> {
    let mut first = None;
    let mut last = None;
    let mut previous: Option<u64> = None;
    for sample in samples {
        let Some(value) = sample.accepted else {
            continue;
        };
        if previous.is_some_and(|before| value > before) {
            first.get_or_insert(sample.mono_ns);
            last = Some(sample.mono_ns);
        }
        previous = Some(value);
    }
    // The run without growth before the first growth counts too: from
    // the sample before it.
    let first = first?;
    let before_first = samples
        .iter()
        .rev()
        .find(|s| s.mono_ns < first && s.accepted.is_some())
        .map_or(first, |s| s.mono_ns);
    Some((before_first, last?))
}

fn by_name(values: &CounterValues) -> serde_json::Map<String, serde_json::Value> {
    Counter::ALL
        .iter()
        .map(|c| (c.name().to_owned(), values[*c as usize].into()))
        .collect()
}

/// Samples `instance`'s pinned counters every `every` for `length` (or
/// until `stop`), then reports.
pub fn probe(
    instance: &str,
    every: Duration,
    length: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<ProbeReport> {
    InstanceDir::new(instance)?;
    if !(MIN_EVERY..=MAX_EVERY).contains(&every) {
        bail!("--every must be between {MIN_EVERY:?} and {MAX_EVERY:?}");
    }
    if length.is_zero() || length > MAX_FOR {
        bail!("--for must be more than 0 and at most 1h");
    }
    let every_ns = every.as_nanos() as u64;
    let start = monotonic_ns();
    let end = start + length.as_nanos() as u64;
    let mut samples = Vec::with_capacity((length.as_nanos() / every.as_nanos()) as usize + 2);
    let (mut first, mut last) = (None, None);
    let mut unreadable = 0;
    let mut next = start;
    let mut interrupted = false;
    loop {
        let at = monotonic_ns();
        let accepted = match read_pinned(instance) {
            Ok(values) => {
                first.get_or_insert(values);
                last = Some(values);
                Some(values[Counter::Accepted as usize])
            }
            Err(e) => {
                if unreadable == 0 {
                    tracing::warn!("{e:#}");
                }
                unreadable += 1;
                None
            }
        };
        samples.push(Sample {
            mono_ns: at,
            accepted,
        });
        next += every_ns;
        if next > end {
            break;
        }
        // Sleep in short steps, so a signal ends the run quickly.
        while monotonic_ns() < next {
            if stop.load(Ordering::Relaxed) {
                interrupted = true;
                break;
            }
            let left = next.saturating_sub(monotonic_ns());
            thread::sleep(Duration::from_nanos(left.min(20_000_000)));
        }
        if interrupted {
            break;
        }
    }
    let blind_window = growth_span(&samples)
        .map(|(from, to)| longest_flat(&samples, from, to))
        .unwrap_or_default();
    Ok(ProbeReport {
        instance: instance.to_owned(),
        every_ns,
        samples_taken: samples.len() as u64,
        unreadable,
        first: first.as_ref().map(by_name),
        last: last.as_ref().map(by_name),
        blind_window,
        interrupted,
        samples,
    })
}

/// Writes `report` as JSON to `path`, atomically.
pub fn write_report(report: &ProbeReport, path: &Path) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut json = serde_json::to_vec(report).context("encoding the report")?;
    json.push(b'\n');
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing the report to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: &[Option<u64>]) -> Vec<Sample> {
        values
            .iter()
            .enumerate()
            .map(|(n, &accepted)| Sample {
                mono_ns: 1_000 + n as u64 * 100,
                accepted,
            })
            .collect()
    }

    #[test]
    fn the_blind_window_is_the_longest_run_without_growth() {
        // Growing at every sample: no blind window.
        let steady = samples(&[Some(1), Some(5), Some(9), Some(20)]);
        assert_eq!(growth_span(&steady), Some((1_000, 1_300)));
        assert_eq!(longest_flat(&steady, 0, u64::MAX).ns, 0);

        // Idle before and after the load; flat for three samples (one
        // unreadable) in the middle.
        let blind = samples(&[
            Some(0),
            Some(0),
            Some(3),
            Some(6),
            Some(6),
            None,
            Some(6),
            Some(9),
            Some(12),
            Some(12),
            Some(12),
        ]);
        let (from, to) = growth_span(&blind).unwrap();
        assert_eq!((from, to), (1_100, 1_800));
        let flat = longest_flat(&blind, from, to);
        assert_eq!(
            flat,
            Flat {
                ns: 300,
                from_mono_ns: 1_300,
                to_mono_ns: 1_600,
            }
        );
        // A counter that went back (a datapath replaced) is no growth.
        let reset = samples(&[Some(5), Some(9), Some(2), Some(4)]);
        assert_eq!(longest_flat(&reset, 0, u64::MAX).ns, 100);
        // Nothing ever grew, or nothing readable.
        assert_eq!(growth_span(&samples(&[Some(4), Some(4)])), None);
        assert_eq!(growth_span(&samples(&[None, None])), None);
        assert_eq!(longest_flat(&[], 0, u64::MAX), Flat::default());
    }

    #[test]
    fn refuses_bad_bounds_and_reports_a_missing_instance() {
        let stop = AtomicBool::new(false);
        let second = Duration::from_secs(1);
        assert!(probe("bad/name", Duration::from_millis(100), second, &stop).is_err());
        assert!(probe("x", Duration::from_millis(1), second, &stop).is_err());
        assert!(probe("x", Duration::from_millis(100), Duration::ZERO, &stop).is_err());
        // No such instance: every sample unreadable, no blind window claimed.
        let report = probe(
            "hb-probe-test-none",
            Duration::from_millis(10),
            Duration::from_millis(30),
            &stop,
        )
        .unwrap();
        assert_eq!(report.unreadable, report.samples_taken);
        assert!((3..=4).contains(&report.samples_taken), "{report:?}");
        assert_eq!(report.blind_window, Flat::default());
        assert!(report.first.is_none());
        assert!(report.summary().contains("4 samples") || report.summary().contains("3 samples"));
    }
}
