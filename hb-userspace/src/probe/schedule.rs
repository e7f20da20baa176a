//! When each probe goes out: one heap of due times for every probed node,
//! each node's probes `interval` apart around a fixed phase (so they never
//! drift together), the nodes of one interval spread evenly over it, and
//! each probe moved by a random jitter of up to [`JITTER_SHARE`] of the
//! interval either way. Confirmation checks (see [`super`]) share the heap.
//! Also the token bucket that holds the probes to `probe.max_rate`.

use std::{cmp::Reverse, collections::BinaryHeap, time::Duration};

use rand::Rng;

/// A probe moves at most this share of its interval either way.
pub const JITTER_SHARE: f64 = 0.05;

/// What is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Due {
    /// Node target `index`'s next probe; `nominal` is its time before
    /// jitter (the next one is `nominal + interval`).
    Probe { index: u32, nominal: u64 },
    /// A confirmation check of target `index` (see [`super`]).
    Check { index: u32 },
}

/// The due times of every probe.
pub struct Schedule {
    heap: BinaryHeap<Reverse<(u64, Due)>>,
}

impl Schedule {
    /// Every target's first probe: the targets of each interval (`groups`:
    /// the interval and the target indices that have it) spread evenly from
    /// `now` over one interval.
    pub fn new(groups: &[(Duration, Vec<u32>)], now_ns: u64) -> Self {
        let mut schedule = Schedule {
            heap: BinaryHeap::with_capacity(groups.iter().map(|(_, g)| g.len()).sum()),
        };
        for (interval, indices) in groups {
            let interval_ns = interval.as_nanos() as u64;
            let n = indices.len().max(1) as u64;
            for (k, &index) in indices.iter().enumerate() {
                let phase = (interval_ns as u128 * k as u128 / n as u128) as u64;
                schedule.push_probe(index, now_ns + phase, interval_ns);
            }
        }
        schedule
    }

    /// Schedules target `index`'s probe nominally at `nominal_ns`, jittered.
    pub fn push_probe(&mut self, index: u32, nominal_ns: u64, interval_ns: u64) {
        let reach = (interval_ns as f64 * JITTER_SHARE) as i64;
        let jitter = if reach > 0 {
            rand::rng().random_range(-reach..=reach)
        } else {
            0
        };
        let due = nominal_ns.saturating_add_signed(jitter);
        self.heap.push(Reverse((
            due,
            Due::Probe {
                index,
                nominal: nominal_ns,
            },
        )));
    }

    /// Schedules a confirmation check of target `index` at `at_ns`.
    pub fn push_check(&mut self, index: u32, at_ns: u64) {
        self.heap.push(Reverse((at_ns, Due::Check { index })));
    }

    /// When the earliest entry is due.
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }

    /// The earliest entry, if it is due at `now_ns`, with its due time.
    pub fn pop_due(&mut self, now_ns: u64) -> Option<(u64, Due)> {
        if self.next_due()? > now_ns {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Tokens for `rate` probes per second, at most `burst` saved up.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at_ns: u64,
}

impl TokenBucket {
    /// A full bucket at `now_ns`; `burst` is 10 ms of probes, at least one
    /// batch.
    pub fn new(rate: u32, now_ns: u64) -> Self {
        let burst = (f64::from(rate) / 100.0).max(64.0);
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            at_ns: now_ns,
        }
    }

    /// Refills for the time since the last call.
    pub fn refill(&mut self, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.at_ns) as f64 / 1e9;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at_ns = now_ns.max(self.at_ns);
    }

    /// Tokens there now.
    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    /// Takes one token if there is one.
    pub fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be there.
    pub fn next_token_ns(&self) -> u64 {
        let missing = (1.0 - self.tokens).max(0.0);
        self.at_ns + (missing / self.rate * 1e9).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_of_one_interval_are_spread_evenly_with_bounded_jitter() {
        let interval = Duration::from_secs(1);
        let n = 1000u32;
        const START: u64 = 1_000_000_000;
        let mut schedule = Schedule::new(&[(interval, (0..n).collect())], START);
        let mut dues = Vec::new();
        while let Some((due, Due::Probe { index, nominal })) = schedule.pop_due(u64::MAX) {
            assert_eq!(nominal, START + u64::from(index) * 1_000_000, "even phases");
            assert!(due.abs_diff(nominal) <= 50_000_000, "jitter within 5%");
            dues.push(due);
            if dues.len() == n as usize {
                break;
            }
        }
        dues.sort_unstable();
        // No burst: no 10 ms of the interval holds more than twice its
        // share (10 probes); the first and last 50 ms are half as dense
        // (the jitter spreads them out of the interval).
        for window in 5..95u64 {
            let from = START + window * 10_000_000;
            let to = from + 10_000_000;
            let inside = dues.iter().filter(|&&d| d >= from && d < to).count();
            assert!(inside <= 20, "{inside} probes in [{from}, {to})");
        }
    }

    #[test]
    fn the_next_probe_keeps_its_phase() {
        let mut schedule = Schedule::new(&[(Duration::from_millis(100), vec![7])], 1_000);
        let (_, due) = schedule.pop_due(u64::MAX).unwrap();
        let Due::Probe { index, nominal } = due else {
            panic!("{due:?}")
        };
        assert_eq!((index, nominal), (7, 1_000));
        schedule.push_probe(7, nominal + 100_000_000, 100_000_000);
        schedule.push_check(7, 50_000_000);
        assert_eq!(
            schedule.pop_due(u64::MAX).unwrap().1,
            Due::Check { index: 7 }
        );
        let (due, next) = schedule.pop_due(u64::MAX).unwrap();
        assert_eq!(
            next,
            Due::Probe {
                index: 7,
                nominal: 100_001_000
            }
        );
        assert!(due.abs_diff(100_001_000) <= 5_000_000);
        assert!(schedule.is_empty());
    }

    #[test]
    fn the_bucket_holds_the_rate() {
        let mut bucket = TokenBucket::new(10_000, 0);
        let mut taken = 0;
        for ms in 0..1000u64 {
            bucket.refill(ms * 1_000_000);
            while bucket.take() {
                taken += 1;
            }
        }
        // 1 s at 10,000/s plus the initial burst of 100.
        assert!((10_000..=10_200).contains(&taken), "{taken}");
        assert!(bucket.next_token_ns() > 999_000_000);
    }
}
