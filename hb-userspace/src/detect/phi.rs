//! The phi-accrual failure detector's arithmetic: suspicion (phi) from a
//! node's interval statistics, and the *deadline* at which phi reaches the
//! threshold, so the sweep never evaluates a transcendental function.
//!
//! # The model
//!
//! A phi-accrual detector (Hayashibara et al. \[1\]) does not answer "is the
//! node down?" but "how surprising is this silence?". It models the time
//! between a node's heartbeats as a normal distribution `N(mean, sd²)`
//! estimated from the recent intervals, and turns the time `t` since the last
//! heartbeat into
//!
//! ```text
//! phi(t) = -log10(P(next interval > t)) = -log10(1 - F(t))
//! ```
//!
//! where `F` is the distribution's CDF. Phi 1 is a silence that one interval
//! in 10 exceeds, phi 8 one that one interval in 10⁸ exceeds. A node is
//! suspected once phi reaches a threshold (8 in Akka \[2\] and Cassandra
//! \[3\]).
//!
//! Like Akka's `PhiAccrualFailureDetector` \[2\], with two settings:
//!
//! - the **acceptable pause** is added to the mean: a silence that long
//!   beyond the usual interval (a lost heartbeat, a stalled sender) is
//!   normal, and phi starts to grow only after it;
//! - the **minimum standard deviation** floors the estimated one: a node
//!   that beats like a metronome would otherwise be suspected after a
//!   millisecond of scheduling noise that its history never showed.
//!
//! So, with `y = (t - (mean + acceptable_pause)) / max(sd, min_std_dev)`,
//! phi is a function of `y` alone.
//!
//! # The normal CDF, approximated
//!
//! As Akka does, `F` is the logistic approximation of the standard normal
//! CDF of Bowling et al. \[4\] (Akka cites the β Mathematics Handbook):
//!
//! ```text
//! F(y) = 1 / (1 + exp(-g(y)))      g(y) = y · (1.5976 + 0.070566 · y²)
//! ```
//!
//! whose absolute error is at most 1.4 · 10⁻⁴ (at |y| ≈ 2.69). Its upper tail
//! `1 - F` follows the normal's closely up to phi 1 and is heavier beyond, so
//! it reaches a given phi at fewer standard deviations (the
//! `logistic_and_normal_tails_compared` test):
//!
//! | threshold | `y` (logistic) | `y` (exact normal) | exact phi at the logistic `y` |
//! |----------:|---------------:|-------------------:|------------------------------:|
//! | 1         | 1.2822         | 1.2816             | 1.0005                        |
//! | 3         | 3.0589         | 3.0902             | 2.9544                        |
//! | 8         | 5.2260         | 5.6120             | 7.0624                        |
//! | 16        | 7.1197         | 8.2221             | 12.2669                       |
//!
//! So "phi 8" here means a silence the normal model puts at about 10⁻⁷, not
//! 10⁻⁸: the scale is Akka's, not the textbook's. Keeping Akka's formula keeps
//! thresholds portable between hb and the systems operators already tune.
//!
//! Phi is `-log10(1 - F) = -log10(e / (1 + e))` with `e = exp(-g)`, which is
//! `log10(1 + exp(g))`: a softplus, computed without overflow or
//! cancellation as `(g + ln_1p(exp(-g))) / ln 10` for `g > 0` and
//! `ln_1p(exp(g)) / ln 10` otherwise. Akka evaluates `-log10(e / (1 + e))`
//! directly, which is `-log10(0) = ∞` once `exp(-g)` underflows (`y` above
//! about 21); here phi stays finite and increasing however long the silence.
//!
//! # The standard deviation, from a mean absolute deviation
//!
//! The datapath keeps per node, in integer microseconds, exponentially
//! weighted moving averages of the interval and of its absolute deviation
//! from that average (`hb_common::table::intervals`): no square, no square
//! root, as in Jacobson's round-trip-time estimator \[5\]\[6\]. For a normal
//! distribution `E|X - mean| = sd · sqrt(2/π)`, so
//!
//! ```text
//! sd = MAD · sqrt(π/2) ≈ 1.2533 · MAD
//! ```
//!
//! ([`sd_from_mad`]). This is the *mean* absolute deviation; the *median*
//! absolute deviation's factor would be 1.4826. For the uniform ±10% jitter of
//! `hb send` the true ratio is `2/√3 ≈ 1.155`, so the estimate is about 8%
//! high: on the cautious side.
//!
//! # The deadline
//!
//! Phi increases with `t`, so `phi(t) >= threshold` exactly when
//! `y >= y_threshold`, the one `y` with `phi(y) = threshold`, that is when
//!
//! ```text
//! t >= deadline = mean + acceptable_pause + y_threshold · max(sd, min_std_dev)
//! ```
//!
//! [`PhiDetector::new`] solves `phi(y) = threshold` once, by bisection
//! ([`y_for`]). After that a deadline is a multiplication and an addition,
//! computed when a node's statistics change ([`PhiDetector::deadline_ns`]),
//! and the sweep compares the time since the last heartbeat with it: O(1) per
//! node, an integer comparison, no logarithm. [`PhiDetector::phi`] computes
//! phi itself, for `hb status` to show.
//!
//! # The defaults, for heartbeats every 0.1 to 2 s
//!
//! - `threshold` 8: Akka's cluster detector \[2\] and Cassandra's
//!   `phi_convict_threshold` \[3\].
//! - `min_std_dev` 100 ms: Akka's, for both its cluster and its remote-watch
//!   detectors. It is also hb's default sweep period, below which a deadline
//!   is not resolved anyway. With `hb send`'s ±10% jitter the estimated sd is
//!   about 6.3% of the interval, so the floor governs intervals below about
//!   1.6 s: a 0.1 s sender's sd of about 6 ms would make a 40 ms stall a
//!   six-sigma event.
//! - `acceptable_pause` 2 s: one default interval. The datapath divides lost
//!   heartbeats out of its samples, so the mean is the sending interval, and
//!   one lost heartbeat is a silence of about two means: the pause is what
//!   absorbs it. A 2 s ±10% sender (MAD about 100 ms, sd about 125 ms) gets a
//!   deadline of 2 + 2 + 5.226 · 0.125 ≈ 4.65 s, above the 4.4 s that two
//!   jittered intervals can last and below the 6 s of the fixed
//!   `3 × interval` timeout. The pause is an absolute duration (as in Akka,
//!   whose cluster default is 3 s for 1 s heartbeats), so it dominates for
//!   fast senders: a 0.1 s sender's deadline is 0.1 + 2 + 5.226 · 0.1 ≈ 2.6 s;
//!   a fleet of fast senders wants a pause of one or two of its intervals
//!   (0.2 s gives 0.82 s).
//!
//! # References
//!
//! 1. N. Hayashibara, X. Défago, R. Yared, T. Katayama, "The φ Accrual
//!    Failure Detector", SRDS 2004 (JAIST research report IS-RR-2004-010).
//! 2. Akka, `akka.remote.PhiAccrualFailureDetector` and the `akka.cluster
//!    .failure-detector` section of akka-cluster's `reference.conf`
//!    (threshold 8.0, min-std-deviation 100 ms, acceptable-heartbeat-pause
//!    3 s, heartbeat-interval 1 s).
//! 3. Apache Cassandra, `phi_convict_threshold` (default 8) in
//!    `cassandra.yaml`; Cassandra's `FailureDetector` models intervals as
//!    exponential rather than normal.
//! 4. S. R. Bowling, M. T. Khasawneh, S. Kaewkuekool, B. R. Cho, "A logistic
//!    approximation to the cumulative normal distribution", Journal of
//!    Industrial Engineering and Management 2(1), 2009.
//! 5. V. Jacobson, "Congestion Avoidance and Control", SIGCOMM 1988
//!    (mean deviation as a cheap stand-in for the standard deviation).
//! 6. RFC 6298, "Computing TCP's Retransmission Timer" (`RTTVAR`).

use std::{f64::consts::LN_10, time::Duration};

/// `sqrt(π/2)`: the standard deviation of a normal distribution per unit of
/// its mean absolute deviation.
pub const SD_PER_MAD: f64 = 1.253_314_137_315_500_1;

/// Default [`PhiSettings::threshold`].
pub const DEFAULT_THRESHOLD: f64 = 8.0;
/// Default [`PhiSettings::min_std_dev`].
pub const DEFAULT_MIN_STD_DEV: Duration = Duration::from_millis(100);
/// Default [`PhiSettings::acceptable_pause`].
pub const DEFAULT_ACCEPTABLE_PAUSE: Duration = Duration::from_secs(2);

/// The coefficients of the logistic approximation `g(y) = y · (A + B · y²)`.
const LOGISTIC_A: f64 = 1.5976;
const LOGISTIC_B: f64 = 0.070566;

/// The standard deviation of a normal distribution with mean absolute
/// deviation `mad` (same unit): `mad · sqrt(π/2)`.
pub fn sd_from_mad(mad: f64) -> f64 {
    mad * SD_PER_MAD
}

/// Phi at `y` standard deviations past the effective mean:
/// `-log10(1 - F(y))` with `F` the logistic approximation of the normal CDF,
/// computed as `log10(1 + exp(g(y)))` without overflow or cancellation.
///
/// Increasing, `log10(2) ≈ 0.301` at 0, tending to 0 as `y → -∞` and growing
/// like `0.0306 · y³` for large `y`; finite for every finite `y`, `+∞` at
/// `+∞`, NaN only for NaN.
pub fn phi_of_y(y: f64) -> f64 {
    let g = y * (LOGISTIC_A + LOGISTIC_B * y * y);
    // softplus(g) = ln(1 + e^g) = g + ln(1 + e^-g).
    let softplus = if g > 0.0 {
        g + (-g).exp().ln_1p()
    } else {
        g.exp().ln_1p()
    };
    softplus / LN_10
}

/// The `y` at which [`phi_of_y`] reaches `threshold`: the smallest `f64`
/// with `phi_of_y(y) >= threshold`, found by bisection. `None` unless
/// `threshold` is finite and above 0 (phi only tends to 0).
///
/// Negative for thresholds below `log10(2)`; 5.2260 for 8.
pub fn y_for(threshold: f64) -> Option<f64> {
    if !(threshold.is_finite() && threshold > 0.0) {
        return None;
    }
    // A bracket with phi(lo) < threshold <= phi(hi). Both loops end: phi is
    // 0 (exp underflows) below y = -22 or so, and +∞ (g overflows) by
    // y = 2^343.
    let mut lo = -1.0_f64;
    while phi_of_y(lo) >= threshold {
        lo *= 2.0;
    }
    let mut hi = 1.0_f64;
    while phi_of_y(hi) < threshold {
        hi *= 2.0;
    }
    // Halve until lo and hi are neighbouring floats: at most a few thousand
    // steps, once per detector.
    loop {
        let mid = lo + (hi - lo) / 2.0;
        if mid <= lo || mid >= hi {
            return Some(hi);
        }
        if phi_of_y(mid) < threshold {
            lo = mid;
        } else {
            hi = mid;
        }
    }
}

/// The phi-accrual detector's settings, as in Akka (see the module
/// documentation for the defaults and why).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhiSettings {
    /// Phi at which a node is suspected: finite and above 0. Higher means
    /// fewer false suspicions and slower detection.
    pub threshold: f64,
    /// Floor of the standard deviation the node's statistics give: above 0.
    pub min_std_dev: Duration,
    /// Silence beyond the mean interval that is still normal (lost heartbeats,
    /// a stalled sender), added to the mean.
    pub acceptable_pause: Duration,
}

impl Default for PhiSettings {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            min_std_dev: DEFAULT_MIN_STD_DEV,
            acceptable_pause: DEFAULT_ACCEPTABLE_PAUSE,
        }
    }
}

/// Settings [`PhiDetector::new`] refuses.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum PhiSettingsError {
    #[error("phi threshold is {threshold}: set it to a finite number above 0 (8 is usual)")]
    Threshold { threshold: f64 },
    #[error(
        "phi min_std_dev is 0: set it above 0 (100ms is usual) so a very regular node is not suspected after a moment's delay"
    )]
    MinStdDevZero,
}

/// Phi and deadlines from a node's interval statistics (mean and mean
/// absolute deviation, µs, as the datapath keeps them), with the threshold's
/// `y` solved once at construction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhiDetector {
    settings: PhiSettings,
    y_threshold: f64,
    min_std_dev_ns: f64,
    acceptable_pause_ns: f64,
}

impl PhiDetector {
    /// A detector for `settings`, solving `phi(y) = threshold` (bisection,
    /// a few microseconds).
    pub fn new(settings: PhiSettings) -> Result<Self, PhiSettingsError> {
        let y_threshold = y_for(settings.threshold).ok_or(PhiSettingsError::Threshold {
            threshold: settings.threshold,
        })?;
        if settings.min_std_dev.is_zero() {
            return Err(PhiSettingsError::MinStdDevZero);
        }
        Ok(Self {
            settings,
            y_threshold,
            min_std_dev_ns: settings.min_std_dev.as_nanos() as f64,
            acceptable_pause_ns: settings.acceptable_pause.as_nanos() as f64,
        })
    }

    /// The settings this detector was built from.
    pub fn settings(&self) -> &PhiSettings {
        &self.settings
    }

    /// The `y` (standard deviations past mean plus pause) at which phi reaches
    /// the threshold: [`y_for`] of it.
    pub fn y_threshold(&self) -> f64 {
        self.y_threshold
    }

    /// The standard deviation (ns) phi uses for a mean absolute deviation of
    /// `mad_us`: [`sd_from_mad`], floored at `min_std_dev`. Above 0.
    #[inline]
    pub fn sd_ns(&self, mad_us: u32) -> f64 {
        sd_from_mad(f64::from(mad_us) * 1_000.0).max(self.min_std_dev_ns)
    }

    /// `mean + acceptable_pause` (ns).
    #[inline]
    fn effective_mean_ns(&self, mean_us: u32) -> f64 {
        f64::from(mean_us) * 1_000.0 + self.acceptable_pause_ns
    }

    /// Phi `elapsed_ns` after a node's last heartbeat, given its mean
    /// interval and mean absolute deviation (µs). For display: it takes a
    /// logarithm and an exponential; the sweep compares with
    /// [`deadline_ns`](Self::deadline_ns) instead.
    ///
    /// `None` when `mean_us` is 0, the datapath's "no interval measured yet".
    /// Otherwise finite and at least 0 (and never NaN) for any input.
    pub fn phi(&self, elapsed_ns: u64, mean_us: u32, mad_us: u32) -> Option<f64> {
        if mean_us == 0 {
            return None;
        }
        let y = (elapsed_ns as f64 - self.effective_mean_ns(mean_us)) / self.sd_ns(mad_us);
        Some(phi_of_y(y))
    }

    /// The time (ns) after a node's last heartbeat at which phi reaches the
    /// threshold: `mean + acceptable_pause + y_threshold · max(sd, min_std_dev)`
    /// rounded up, so `phi(deadline) >= threshold > phi(deadline - 1)` (up to
    /// rounding). Never below `mean + acceptable_pause` (which only matters
    /// for thresholds below `log10(2)`: phi there is already about 0.301);
    /// saturates at `u64::MAX`. No transcendental function: compute it when
    /// the node's statistics change, compare with it every sweep.
    ///
    /// `None` when `mean_us` is 0, the datapath's "no interval measured yet".
    /// Whether a nonzero mean rests on enough samples to be trusted (the
    /// datapath seeds the deviation at a quarter of the first interval) is
    /// the caller's decision, as is the fallback (such as the fixed
    /// `timeout_multiplier × interval`).
    #[inline]
    pub fn deadline_ns(&self, mean_us: u32, mad_us: u32) -> Option<u64> {
        if mean_us == 0 {
            return None;
        }
        let ns = self.effective_mean_ns(mean_us) + self.y_threshold.max(0.0) * self.sd_ns(mad_us);
        Some(ceil_u64(ns))
    }
}

/// `x` rounded up, saturating at `u64::MAX` (`as` does). Without a call:
/// `f64::ceil` is a library call on the baseline x86-64 target, and this is
/// on the sweep's slow path, once per new heartbeat of every up node.
#[inline]
fn ceil_u64(x: f64) -> u64 {
    let truncated = x as u64;
    if (truncated as f64) < x {
        truncated.saturating_add(1)
    } else {
        truncated
    }
}

impl Default for PhiDetector {
    /// The detector for [`PhiSettings::default`].
    fn default() -> Self {
        Self::new(PhiSettings::default()).expect("the default phi settings are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    fn detector(threshold: f64, min_std_dev: Duration, acceptable_pause: Duration) -> PhiDetector {
        PhiDetector::new(PhiSettings {
            threshold,
            min_std_dev,
            acceptable_pause,
        })
        .expect("valid settings")
    }

    fn assert_close(actual: f64, expected: f64, relative: f64, what: &str) {
        let error = (actual - expected).abs();
        assert!(
            error <= relative * expected.abs(),
            "{what}: {actual} is not within {relative:e} (relative) of {expected} (off by {error:e})"
        );
    }

    #[test]
    fn sd_per_mad_is_sqrt_half_pi() {
        assert_eq!(SD_PER_MAD, (std::f64::consts::PI / 2.0).sqrt());
        // python3 -c "import math; print(math.sqrt(math.pi/2))"
        assert_eq!(sd_from_mad(1.0), 1.2533141373155001);
        assert_eq!(sd_from_mad(0.0), 0.0);
        assert_close(sd_from_mad(100_000.0), 125_331.41373155, 1e-12, "100 ms");
    }

    /// The y at which phi reaches a threshold, from mpmath at 50 digits:
    ///
    /// ```text
    /// python3 -c "from mpmath import mp, mpf, log1p, exp, log, findroot; mp.dps = 50
    /// phi = lambda y: log1p(exp(y*(mpf('1.5976')+mpf('0.070566')*y*y)))/log(10)
    /// [print(t, mp.nstr(findroot(lambda y: phi(y)-t, 5), 20)) for t in [0.5,1,3,8,10,16,100]]"
    /// ```
    #[test]
    #[expect(
        clippy::excessive_precision,
        reason = "the reference values as mpmath printed them, 20 digits"
    )]
    fn y_for_matches_reference_values() {
        let reference = [
            (0.5, 0.477_879_977_397_354_467_44),
            (1.0, 1.282_215_344_966_695_227_4),
            (3.0, 3.058_937_819_446_094_315_9),
            (8.0, 5.225_986_644_093_563_426_3),
            (10.0, 5.799_024_714_730_571_136_2),
            (16.0, 7.119_680_927_774_245_676_8),
            (100.0, 14.323_648_874_204_845_738),
        ];
        for (threshold, y) in reference {
            let found = y_for(threshold).expect("valid threshold");
            assert_close(found, y, 1e-14, &format!("y_for({threshold})"));
            assert!(phi_of_y(found) >= threshold);
            assert!(phi_of_y(found.next_down()) < threshold);
        }
        assert_eq!(PhiDetector::default().y_threshold(), y_for(8.0).unwrap());
    }

    #[test]
    fn y_for_covers_every_positive_threshold() {
        assert!(
            y_for(2.0_f64.log10()).unwrap().abs() < 1e-15,
            "phi(0) = log10 2"
        );
        assert!(y_for(0.1).unwrap() < 0.0);
        for threshold in [1e-300, 1e-10, 0.301, 0.302, 1e3, 1e100, 1e300, f64::MAX] {
            let y = y_for(threshold).expect("valid threshold");
            assert!(y.is_finite(), "y_for({threshold}) = {y}");
            assert!(phi_of_y(y) >= threshold, "y_for({threshold}) = {y}");
        }
        for invalid in [0.0, -0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(y_for(invalid), None, "{invalid}");
        }
    }

    /// Phi for (elapsed, mean, MAD, pause, min sd) against the same logistic
    /// formula in mpmath at 50 digits:
    ///
    /// ```text
    /// python3 -c "from mpmath import mp, mpf, log1p, exp, log, sqrt, pi; mp.dps = 50
    /// phi = lambda y: log1p(exp(y*(mpf('1.5976')+mpf('0.070566')*y*y)))/log(10)
    /// for t, m, d, p, f in [(2500000000,2000000,100000,0,1000), (1900000000,2000000,100000,0,1000),
    ///   (4300000000,2000000,100000,2000000000,1000), (500000000,100000,5000,0,100000000),
    ///   (10000000000,1000000,50000,0,1000), (0,2000000,100000,0,1000),
    ///   (2000000000,2000000,100000,0,1000), (1234567890,987654,43210,100000000,50000000)]:
    ///   print(mp.nstr(phi((t-mpf(m)*1000-p)/max(mpf(d)*1000*sqrt(pi/2), mpf(f))), 20))"
    /// ```
    #[test]
    #[expect(
        clippy::excessive_precision,
        reason = "the reference values as mpmath printed them, 20 digits"
    )]
    fn phi_matches_reference_values() {
        // (elapsed ns, mean µs, MAD µs, pause ns, min sd ns, phi): where and y
        #[rustfmt::skip]
        let reference: [(u64, u32, u32, u64, u64, f64); 8] = [
            // 0.5 s late at 2 s, MAD 100 ms: y = 3.99.
            (2_500 * MS, 2_000_000, 100_000, 0, US, 4.713_838_001_093_513_419_9),
            // 0.1 s early: y = -0.80.
            (1_900 * MS, 2_000_000, 100_000, 0, US, 0.103_691_963_184_968_198_63),
            // 0.3 s past mean + pause: y = 2.39.
            (4_300 * MS, 2_000_000, 100_000, 2 * S, US, 2.084_678_627_180_423_730_9),
            // The 100 ms floor instead of the 6.3 ms estimate: y = 4.
            (500 * MS, 100_000, 5_000, 0, 100 * MS, 4.736_694_582_705_180_904_9),
            // y = 143.6, where Akka's formula gives infinity.
            (10 * S, 1_000_000, 50_000, 0, US, 90_885.360_724_651_457_825),
            // Just after a heartbeat: y = -15.96.
            (0, 2_000_000, 100_000, 0, US, 1.074_709_359_412_449_424_2e-136),
            // Exactly at the mean: log10 2 (mpmath: 0.30102999566398119521).
            (2 * S, 2_000_000, 100_000, 0, US, std::f64::consts::LOG10_2),
            // Arbitrary, sd (54.2 ms) above the floor: y = 2.71.
            (1_234_567_890, 987_654, 43_210, 100 * MS, 50 * MS, 2.495_449_837_773_079_287_3),
        ];
        for (elapsed, mean, mad, pause, min_sd, phi) in reference {
            let d = detector(
                8.0,
                Duration::from_nanos(min_sd),
                Duration::from_nanos(pause),
            );
            let got = d.phi(elapsed, mean, mad).expect("has a mean");
            assert_close(got, phi, 1e-12, &format!("phi({elapsed}, {mean}, {mad})"));
        }
    }

    /// Akka's expression, as written in `PhiAccrualFailureDetector.phi`.
    fn akka_phi(time_diff: f64, mean: f64, std_deviation: f64) -> f64 {
        let y = (time_diff - mean) / std_deviation;
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        if time_diff > mean {
            -(e / (1.0 + e)).log10()
        } else {
            -(1.0 - 1.0 / (1.0 + e)).log10()
        }
    }

    #[test]
    fn phi_agrees_with_akka_where_akka_is_finite() {
        let (mean, sd) = (1_000.0, 100.0);
        for step in -1_000..=2_000 {
            let t = mean + f64::from(step);
            let ours = phi_of_y((t - mean) / sd);
            let akka = akka_phi(t, mean, sd);
            assert!(
                (ours - akka).abs() <= 1e-12 + 1e-12 * akka,
                "y = {}: {ours} vs Akka's {akka}",
                (t - mean) / sd
            );
        }
        assert_eq!(akka_phi(3_200.0, mean, sd), f64::INFINITY, "y = 22");
        assert!(phi_of_y(22.0).is_finite());
    }

    /// How far the logistic approximation's tail is from the normal one, from
    /// mpmath at 50 digits (`exact` is the normal's phi, `-log10(erfc(y/√2)/2)`):
    ///
    /// ```text
    /// python3 -c "from mpmath import mp, mpf, log1p, exp, log, erfc, sqrt, findroot; mp.dps = 50
    /// phi = lambda y: log1p(exp(y*(mpf('1.5976')+mpf('0.070566')*y*y)))/log(10)
    /// exact = lambda y: -log(erfc(y/sqrt(2))/2, 10)
    /// for t in [1, 3, 8, 16]: y = findroot(lambda y: phi(y)-t, 5); print(t, mp.nstr(y, 12),
    ///   mp.nstr(findroot(lambda y: exact(y)-t, 5), 12), mp.nstr(exact(y), 12))"
    /// ```
    ///
    /// And the approximation's largest CDF error, 1.404e-4 at |y| = 2.687:
    ///
    /// ```text
    /// python3 -c "import math; from statistics import NormalDist as N; print(max((abs(1/(1+math.exp(
    ///   -y*(1.5976+0.070566*y*y)))-N().cdf(y)), y) for y in [i/1000 for i in range(-8000, 8001)]))"
    /// ```
    #[test]
    fn logistic_and_normal_tails_compared() {
        // (threshold, y where the normal tail is 10^-threshold, the normal's
        // phi at the logistic y)
        let normal = [
            (1.0, 1.281_551_565_54, 1.000_505_998_61),
            (3.0, 3.090_232_306_17, 2.954_435_979_84),
            (8.0, 5.612_001_244_17, 7.062_409_738_29),
            (16.0, 8.222_082_216_13, 12.266_894_268_2),
        ];
        for (threshold, normal_y, normal_phi) in normal {
            let y = y_for(threshold).unwrap();
            // The documented agreement: the logistic y is within 0.06% of
            // the normal's at 1 and 1.1% below it at 3; the logistic tail is
            // heavier further out, so it reaches phi 8 at 7% fewer standard
            // deviations, where the normal says 7.06.
            let relative = (normal_y - y) / normal_y;
            match threshold {
                1.0 => assert!(relative.abs() < 0.0006, "{relative}"),
                3.0 => assert!((0.0..0.011).contains(&relative), "{relative}"),
                8.0 => assert!((0.06..0.07).contains(&relative), "{relative}"),
                _ => assert!(relative > 0.0, "{relative}"),
            }
            assert!(normal_phi <= threshold + 1e-3, "{threshold}: {normal_phi}");
        }
    }

    #[test]
    fn phi_at_the_deadline_is_the_threshold() {
        let means = [1, 1_000, 100_000, 2_000_000, 60_000_000, u32::MAX / 2];
        let mads = [0, 1, 50, 5_000, 100_000, 1_000_000];
        let pauses = [
            Duration::ZERO,
            Duration::from_millis(100),
            Duration::from_secs(2),
        ];
        // Deadlines are whole nanoseconds: at 8, phi grows by 3.2e-7 per ns
        // for a 10 ms sd, so that is the smallest floor within 1e-6.
        let floors = [Duration::from_millis(10), Duration::from_millis(100)];
        let mut checked = 0;
        for threshold in [1.0, 3.0, 8.0, 12.5, 16.0] {
            for pause in pauses {
                for floor in floors {
                    let d = detector(threshold, floor, pause);
                    for mean in means {
                        for mad in mads {
                            let deadline = d.deadline_ns(mean, mad).unwrap();
                            let at = d.phi(deadline, mean, mad).unwrap();
                            let before = d.phi(deadline - 1, mean, mad).unwrap();
                            assert!(
                                (at - threshold).abs() < 1e-6,
                                "phi({deadline}, {mean}, {mad}) = {at}, want {threshold}"
                            );
                            assert!(at >= threshold - 1e-12, "{at} < {threshold}");
                            assert!(before < threshold + 1e-12, "{before} >= {threshold}");
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 5 * 3 * 2 * 6 * 6);
    }

    #[test]
    fn deadline_is_mean_plus_pause_plus_y_sd() {
        let d = PhiDetector::default();
        let y = y_for(8.0).unwrap();
        // A 2 s ±10% sender: MAD 100 ms, sd 125.3 ms, deadline about 4.655 s.
        // python3 -c "import math; print(4e9 + 5.2259866440935634263*1e8*math.sqrt(math.pi/2))"
        let deadline = d.deadline_ns(2_000_000, 100_000).unwrap();
        assert_eq!(deadline, (4e9 + y * 1e8 * SD_PER_MAD).ceil() as u64);
        assert_eq!(deadline / MS, 4_654, "4_654_980_294.2 ns");
        // A 0.1 s sender: the 100 ms floor, about 2.623 s.
        let deadline = d.deadline_ns(100_000, 5_000).unwrap();
        assert_eq!(deadline, (2.1e9 + y * 1e8).ceil() as u64);
        assert_eq!(deadline / MS, 2_622, "2_622_598_664.4 ns");
    }

    #[test]
    fn no_statistics_no_phi() {
        let d = PhiDetector::default();
        assert_eq!(d.deadline_ns(0, 0), None);
        assert_eq!(d.deadline_ns(0, 100_000), None);
        assert_eq!(d.phi(10 * S, 0, 0), None);
        assert_eq!(d.phi(10 * S, 0, 100), None);
    }

    #[test]
    fn deadlines_grow_with_sd_mean_and_pause() {
        let d = detector(8.0, Duration::from_millis(1), Duration::from_millis(500));
        let mut previous = 0;
        for mad in [1_000, 2_000, 10_000, 100_000, 1_000_000, u32::MAX] {
            let deadline = d.deadline_ns(1_000_000, mad).unwrap();
            assert!(deadline > previous, "MAD {mad}: {deadline} <= {previous}");
            previous = deadline;
        }
        let mut previous = 0;
        for mean in [1, 1_000, 100_000, 2_000_000, u32::MAX] {
            let deadline = d.deadline_ns(mean, 10_000).unwrap();
            assert!(deadline > previous, "mean {mean}: {deadline} <= {previous}");
            previous = deadline;
        }
        let mut previous = 0;
        for pause_ms in [0, 1, 100, 2_000, 3_600_000] {
            let d = detector(
                8.0,
                Duration::from_millis(1),
                Duration::from_millis(pause_ms),
            );
            let deadline = d.deadline_ns(1_000_000, 10_000).unwrap();
            assert!(
                deadline > previous,
                "pause {pause_ms} ms: {deadline} <= {previous}"
            );
            previous = deadline;
        }
        let mut previous = 0;
        for threshold in [0.5, 1.0, 3.0, 8.0, 16.0, 100.0] {
            let d = detector(threshold, Duration::from_millis(1), Duration::ZERO);
            let deadline = d.deadline_ns(1_000_000, 10_000).unwrap();
            assert!(
                deadline > previous,
                "threshold {threshold}: {deadline} <= {previous}"
            );
            previous = deadline;
        }
    }

    #[test]
    fn min_std_dev_floors_the_sd() {
        let d = detector(8.0, Duration::from_millis(100), Duration::from_secs(1));
        // sd_from_mad(79_788 µs) = 99_999.5 µs: below the floor.
        for mad in [0, 1, 1_000, 79_788] {
            assert_eq!(d.sd_ns(mad), 1e8, "MAD {mad} µs");
            assert_eq!(d.deadline_ns(2_000_000, mad), d.deadline_ns(2_000_000, 0));
            assert_eq!(d.phi(3 * S, 2_000_000, mad), d.phi(3 * S, 2_000_000, 0));
        }
        assert!(d.sd_ns(79_789) > 1e8);
        assert!(d.deadline_ns(2_000_000, 79_789) > d.deadline_ns(2_000_000, 0));
        assert_eq!(
            d.deadline_ns(2_000_000, 0).unwrap(),
            (3e9 + y_for(8.0).unwrap() * 1e8).ceil() as u64
        );
    }

    #[test]
    fn deadline_never_before_mean_plus_pause() {
        // Phi at mean + pause is log10 2 = 0.301; a lower threshold would put
        // the deadline before it.
        for threshold in [0.01, 0.1, 0.3] {
            let d = detector(
                threshold,
                Duration::from_millis(100),
                Duration::from_secs(1),
            );
            assert!(d.y_threshold() < 0.0);
            assert_eq!(d.deadline_ns(2_000_000, 100_000), Some(3 * S));
        }
    }

    #[test]
    fn phi_grows_with_elapsed_time() {
        let d = PhiDetector::default();
        let mut previous = 0.0;
        for elapsed_ms in 0..=20_000 {
            let phi = d.phi(elapsed_ms * MS, 2_000_000, 100_000).unwrap();
            assert!(phi >= previous, "{elapsed_ms} ms: {phi} < {previous}");
            previous = phi;
        }
        assert!(previous > 1_000.0, "20 s: {previous}");
        let mut previous = 0.0;
        for step in -4_000..=4_000 {
            let y = f64::from(step) / 100.0;
            let phi = phi_of_y(y);
            assert!(phi >= previous, "y = {y}: {phi} < {previous}");
            if (-15.0..=30.0).contains(&y) {
                assert!(phi > previous, "strictly at y = {y}");
            }
            previous = phi;
        }
        assert_eq!(phi_of_y(f64::NEG_INFINITY), 0.0);
        assert_eq!(phi_of_y(f64::INFINITY), f64::INFINITY);
    }

    #[test]
    fn ceil_rounds_up_and_saturates() {
        for x in [0.0, 0.5, 1.0, 1.000_001, 2.5e9, 1e18 + 0.5, 7.999_999_999] {
            assert_eq!(ceil_u64(x), x.ceil() as u64, "{x}");
        }
        assert_eq!(ceil_u64(f64::MAX), u64::MAX);
        assert_eq!(ceil_u64(f64::INFINITY), u64::MAX);
        assert_eq!(ceil_u64(-3.5), 0);
        assert_eq!(ceil_u64(f64::NAN), 0);
    }

    #[test]
    fn extreme_inputs_saturate_without_panicking() {
        let tight = detector(8.0, Duration::from_nanos(1), Duration::ZERO);
        let loose = detector(1e300, Duration::MAX, Duration::MAX);
        for d in [PhiDetector::default(), tight, loose] {
            for mean in [1, 2, u32::MAX] {
                for mad in [0, 1, u32::MAX] {
                    let deadline = d.deadline_ns(mean, mad).unwrap();
                    assert!(deadline >= u64::from(mean) * US);
                    for elapsed in [0, 1, deadline, u64::MAX] {
                        let phi = d.phi(elapsed, mean, mad).unwrap();
                        assert!(
                            phi >= 0.0 && phi.is_finite(),
                            "{d:?} {elapsed} {mean} {mad}: {phi}"
                        );
                    }
                }
            }
        }
        assert_eq!(loose.deadline_ns(1, 0), Some(u64::MAX));
        assert_eq!(
            detector(8.0, Duration::from_nanos(1), Duration::MAX).deadline_ns(1, 0),
            Some(u64::MAX)
        );
        // u32::MAX µs ± u32::MAX µs: 71.6 minutes + 5.226 × 89.7 minutes.
        let deadline = PhiDetector::default()
            .deadline_ns(u32::MAX, u32::MAX)
            .unwrap();
        assert_close(
            deadline as f64,
            2e9 + 4_294_967_295e3 * (1.0 + y_for(8.0).unwrap() * SD_PER_MAD),
            1e-13,
            "u32::MAX",
        );
        assert_eq!(
            tight.phi(u64::MAX, 1, 0).unwrap(),
            phi_of_y(1.8446744073709552e19)
        );
    }

    #[test]
    fn settings_are_validated() {
        let valid = PhiSettings::default();
        assert_eq!(
            valid,
            PhiSettings {
                threshold: 8.0,
                min_std_dev: Duration::from_millis(100),
                acceptable_pause: Duration::from_secs(2),
            }
        );
        assert_eq!(*PhiDetector::default().settings(), valid);
        for threshold in [0.0, -8.0, f64::NAN, f64::INFINITY] {
            let error = PhiDetector::new(PhiSettings { threshold, ..valid }).unwrap_err();
            assert!(
                matches!(error, PhiSettingsError::Threshold { .. }),
                "{error}"
            );
        }
        assert_eq!(
            PhiDetector::new(PhiSettings {
                min_std_dev: Duration::ZERO,
                ..valid
            }),
            Err(PhiSettingsError::MinStdDevZero)
        );
        assert!(
            PhiDetector::new(PhiSettings {
                acceptable_pause: Duration::ZERO,
                ..valid
            })
            .is_ok()
        );
    }
}
