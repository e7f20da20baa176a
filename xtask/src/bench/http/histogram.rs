//! The agent's `hb_sweep_duration_seconds` histogram, read from its own
//! `/metrics`: parsed from the Prometheus text format, differenced between
//! two scrapes (so the start-up sweeps, when a million nodes go from
//! unseen to up, stay out of the measured window), and its quantiles given
//! as the upper bound of the bucket that holds them: a histogram knows no
//! finer, so "the p99 does not grow" means "lands in the same or a lower
//! bucket".

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

/// The metric's name in the text format.
const NAME: &str = "hb_sweep_duration_seconds";

/// One bucket: its upper bound and how many sweeps took at most that long.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// The `le` label as the agent wrote it (`"+Inf"` for the last).
    pub le: String,
    /// `le` in seconds (infinite for the last; JSON `null`).
    #[serde(skip)]
    pub bound_s: f64,
    /// Cumulative count, as in the text format.
    pub cumulative: u64,
}

/// One histogram: cumulative buckets in ascending order, the last `+Inf`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepHistogram {
    pub buckets: Vec<Bucket>,
    pub sum_s: f64,
    pub count: u64,
}

impl SweepHistogram {
    /// Reads `hb_sweep_duration_seconds` from a `/metrics` response.
    pub fn parse(text: &str) -> Result<Self> {
        let (mut buckets, mut sum_s, mut count) = (Vec::new(), None, None);
        for line in text.lines().filter(|l| l.starts_with(NAME)) {
            let rest = &line[NAME.len()..];
            let (series, value) = rest
                .rsplit_once(' ')
                .with_context(|| format!("no value in the /metrics line {line:?}"))?;
            let number: f64 = value
                .parse()
                .with_context(|| format!("not a number in the /metrics line {line:?}"))?;
            if let Some(labels) = series.strip_prefix("_bucket{") {
                let le = labels
                    .split_once("le=\"")
                    .and_then(|(_, tail)| tail.split_once('"'))
                    .map(|(le, _)| le.to_owned())
                    .with_context(|| format!("no le label in the /metrics line {line:?}"))?;
                let bound_s = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse()
                        .with_context(|| format!("bad le in the /metrics line {line:?}"))?
                };
                buckets.push(Bucket {
                    le,
                    bound_s,
                    cumulative: number as u64,
                });
            } else if series == "_sum" {
                sum_s = Some(number);
            } else if series == "_count" {
                count = Some(number as u64);
            }
        }
        let (Some(sum_s), Some(count)) = (sum_s, count) else {
            bail!("/metrics has no {NAME}_sum and _count");
        };
        ensure!(
            buckets.last().is_some_and(|b| b.bound_s.is_infinite()),
            "/metrics has no {NAME}_bucket{{le=\"+Inf\"}}"
        );
        ensure!(
            buckets
                .windows(2)
                .all(|w| w[0].bound_s < w[1].bound_s && w[0].cumulative <= w[1].cumulative),
            "/metrics lists {NAME} buckets out of order or not cumulative"
        );
        Ok(Self {
            buckets,
            sum_s,
            count,
        })
    }

    /// The sweeps between `earlier` and this scrape of the same agent.
    pub fn since(&self, earlier: &Self) -> Result<Self> {
        self.combine(earlier, |later, earlier| later.checked_sub(earlier))
            .map(|mut h| {
                h.sum_s = self.sum_s - earlier.sum_s;
                h
            })
            .context(
                "the sweep histogram went backwards between two scrapes: did the agent restart?",
            )
    }

    /// Both histograms' sweeps together (the same buckets).
    pub fn plus(&self, other: &Self) -> Result<Self> {
        self.combine(other, |a, b| a.checked_add(b))
            .map(|mut h| {
                h.sum_s = self.sum_s + other.sum_s;
                h
            })
            .context("adding two sweep histograms")
    }

    fn combine(&self, other: &Self, op: impl Fn(u64, u64) -> Option<u64>) -> Result<Self> {
        ensure!(
            self.buckets.len() == other.buckets.len()
                && self
                    .buckets
                    .iter()
                    .zip(&other.buckets)
                    .all(|(a, b)| a.le == b.le),
            "the histograms have different buckets"
        );
        let buckets = self
            .buckets
            .iter()
            .zip(&other.buckets)
            .map(|(a, b)| {
                Some(Bucket {
                    cumulative: op(a.cumulative, b.cumulative)?,
                    ..a.clone()
                })
            })
            .collect::<Option<Vec<_>>>()
            .context("a bucket count would go out of range")?;
        let count = op(self.count, other.count).context("the count would go out of range")?;
        Ok(Self {
            buckets,
            sum_s: 0.0,
            count,
        })
    }

    /// The upper bound (seconds) of the bucket that holds the `q` quantile
    /// (the smallest bound with at least `q` of the sweeps at or below it);
    /// `None` without sweeps. Infinite if it lies above the last finite
    /// bound.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.cumulative;
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        self.buckets
            .iter()
            .find(|b| b.cumulative >= rank)
            .map(|b| b.bound_s)
    }

    /// The mean sweep duration, seconds.
    pub fn mean_s(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_s / self.count as f64)
    }
}

/// A bucket bound for a table: `≤ 2.5 ms`, `> 1 s` past the last finite one.
pub fn bound_text(bound_s: Option<f64>) -> String {
    match bound_s {
        None => "-".to_owned(),
        Some(b) if b.is_infinite() => "> last bucket".to_owned(),
        Some(b) => format!("<= {} ms", super::super::output::number(b * 1e3)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the agent writes (prometheus-client 0.26), three buckets short.
    fn scrape(counts: [u64; 4], sum: &str) -> String {
        format!(
            "# HELP hb_sweep_duration_seconds Time one sweep took.\n\
             # TYPE hb_sweep_duration_seconds histogram\n\
             hb_sweep_duration_seconds_sum {sum}\n\
             hb_sweep_duration_seconds_count {}\n\
             hb_sweep_duration_seconds_bucket{{le=\"0.0005\"}} {}\n\
             hb_sweep_duration_seconds_bucket{{le=\"1e-3\"}} {}\n\
             hb_sweep_duration_seconds_bucket{{le=\"0.0025\"}} {}\n\
             hb_sweep_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
             hb_sweeps_other_total 5\n",
            counts[3], counts[0], counts[1], counts[2], counts[3]
        )
    }

    #[test]
    fn parses_the_histogram_and_its_p99_bucket() {
        let h = SweepHistogram::parse(&scrape([10, 95, 100, 100], "0.08")).unwrap();
        assert_eq!(h.count, 100);
        assert_eq!(h.buckets[1].bound_s, 1e-3);
        assert!(h.buckets[3].bound_s.is_infinite());
        // The 99th sweep of 100 lies in the third bucket.
        assert_eq!(h.quantile_bound(0.99), Some(0.0025));
        assert_eq!(h.quantile_bound(0.5), Some(1e-3));
        assert_eq!(h.mean_s(), Some(0.0008));
        let slow = SweepHistogram::parse(&scrape([0, 0, 0, 7], "9")).unwrap();
        assert_eq!(slow.quantile_bound(0.99), Some(f64::INFINITY));
        assert_eq!(bound_text(Some(0.0025)), "<= 2.50 ms");
    }

    #[test]
    fn differences_and_sums_scrapes() {
        let early = SweepHistogram::parse(&scrape([0, 0, 10, 10], "0.02")).unwrap();
        let late = SweepHistogram::parse(&scrape([90, 100, 110, 110], "0.1")).unwrap();
        let window = late.since(&early).unwrap();
        // The ten slow start-up sweeps are left out of the window.
        assert_eq!(window.count, 100);
        assert_eq!(window.quantile_bound(0.99), Some(1e-3));
        assert!((window.sum_s - 0.08).abs() < 1e-12);
        assert!(early.since(&late).is_err(), "a restarted agent is refused");
        let both = window.plus(&early).unwrap();
        assert_eq!(both.count, 110);
        assert_eq!(both.buckets[2].cumulative, 110);
        let empty = early.since(&early).unwrap();
        assert_eq!((empty.quantile_bound(0.99), empty.mean_s()), (None, None));
    }

    #[test]
    fn refuses_what_is_not_the_histogram() {
        assert!(SweepHistogram::parse("hb_nodes{state=\"up\"} 3\n").is_err());
        let no_inf = scrape([1, 2, 3, 3], "1").replace("+Inf", "5");
        assert!(SweepHistogram::parse(&no_inf).is_err());
        let not_cumulative = scrape([5, 2, 3, 3], "1");
        assert!(SweepHistogram::parse(&not_cumulative).is_err());
    }
}
