//! When each probe goes out: one [`Schedule`] of due times for every probed node,
//! each node's probes `interval` apart around a fixed phase (so they never
//! drift together), the nodes of one interval spread evenly over it, and
//! each probe moved by a random jitter of up to [`JITTER_SHARE`] of the
//! interval either way. Confirmation checks (see [`super`]) share it.
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

/// Width of one slot of the wheel.
const SLOT_NS: u64 = 1_000_000;
/// Slots of the wheel: entries due within this many slots of the cursor
/// wait in their slot, later ones in the overflow heap.
const SLOTS: usize = 8192;

/// The due times of every probe: a timing wheel of 1 ms slots over the
/// next 8.2 s (scheduling and taking an entry cost O(1), where a heap of
/// 100,000 nodes costs a cache-missing walk of 17 levels per probe), and a
/// heap for what is due later (long intervals). Entries come out in slot
/// order, in no particular order within a slot.
pub struct Schedule {
    slots: Vec<Vec<(u64, Due)>>,
    /// The first slot not yet emptied (an absolute slot number).
    cursor: u64,
    /// Entries in the wheel.
    in_wheel: usize,
    later: BinaryHeap<Reverse<(u64, Due)>>,
}

impl Schedule {
    /// Every target's first probe: the targets of each interval (`groups`:
    /// the interval and the target indices that have it) spread evenly from
    /// `now` over one interval.
    pub fn new(groups: &[(Duration, Vec<u32>)], now_ns: u64) -> Self {
        let mut schedule = Schedule {
            slots: vec![Vec::new(); SLOTS],
            cursor: now_ns / SLOT_NS,
            in_wheel: 0,
            later: BinaryHeap::new(),
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
        self.push(
            due,
            Due::Probe {
                index,
                nominal: nominal_ns,
            },
        );
    }

    /// Schedules a confirmation check of target `index` at `at_ns`.
    pub fn push_check(&mut self, index: u32, at_ns: u64) {
        self.push(at_ns, Due::Check { index });
    }

    fn push(&mut self, due: u64, what: Due) {
        // Anything already due goes in the cursor's slot.
        let slot = (due / SLOT_NS).max(self.cursor);
        if slot - self.cursor < SLOTS as u64 {
            self.slots[(slot % SLOTS as u64) as usize].push((due, what));
            self.in_wheel += 1;
        } else {
            self.later.push(Reverse((due, what)));
        }
    }

    /// When the earliest entry is due (its slot's start, for one in the
    /// wheel).
    pub fn next_due(&self) -> Option<u64> {
        if self.in_wheel > 0 {
            for step in 0..SLOTS as u64 {
                let slot = self.cursor + step;
                let entries = &self.slots[(slot % SLOTS as u64) as usize];
                if let Some(earliest) = entries.iter().map(|(due, _)| *due).min() {
                    return Some(earliest.max(slot * SLOT_NS));
                }
            }
        }
        self.later.peek().map(|Reverse((due, _))| *due)
    }

    /// An entry due by `now_ns` (within the millisecond of `now_ns`'s slot),
    /// from the earliest slot that has one, with its due time.
    pub fn pop_due(&mut self, now_ns: u64) -> Option<(u64, Due)> {
        let now_slot = now_ns / SLOT_NS;
        loop {
            // Entries of the heap that came within the wheel's reach.
            while let Some(Reverse((due, _))) = self.later.peek()
                && due / SLOT_NS < self.cursor + SLOTS as u64
            {
                let Some(Reverse((due, what))) = self.later.pop() else {
                    break;
                };
                self.push(due, what);
            }
            let slot = &mut self.slots[(self.cursor % SLOTS as u64) as usize];
            if let Some(entry) = slot.pop() {
                self.in_wheel -= 1;
                return Some(entry);
            }
            if self.cursor >= now_slot {
                return None;
            }
            if self.in_wheel == 0 {
                // Nothing in the wheel: jump to the heap's first entry.
                let next = self
                    .later
                    .peek()
                    .map_or(now_slot, |Reverse((due, _))| due / SLOT_NS);
                self.cursor = next.min(now_slot).max(self.cursor + 1);
            } else {
                self.cursor += 1;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.in_wheel + self.later.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        while let Some((due, Due::Probe { index, nominal })) = schedule.pop_due(START * 3) {
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
        const T0: u64 = 1_000_000_000;
        let mut schedule = Schedule::new(&[(Duration::from_millis(100), vec![7])], T0);
        assert_eq!(schedule.pop_due(T0 - 10_000_000), None, "not due yet");
        let (_, due) = schedule.pop_due(T0 + 10_000_000).unwrap();
        let Due::Probe { index, nominal } = due else {
            panic!("{due:?}")
        };
        assert_eq!((index, nominal), (7, T0));
        schedule.push_probe(7, nominal + 100_000_000, 100_000_000);
        schedule.push_check(7, T0 + 50_000_000);
        assert_eq!(schedule.next_due(), Some(T0 + 50_000_000));
        assert_eq!(schedule.pop_due(T0 + 49_000_000), None);
        assert_eq!(
            schedule.pop_due(T0 + 50_000_000).unwrap(),
            (T0 + 50_000_000, Due::Check { index: 7 })
        );
        let (due, next) = schedule.pop_due(T0 + 200_000_000).unwrap();
        assert_eq!(
            next,
            Due::Probe {
                index: 7,
                nominal: T0 + 100_000_000
            }
        );
        assert!(due.abs_diff(T0 + 100_000_000) <= 5_000_000);
        assert!(schedule.is_empty());
    }

    #[test]
    fn entries_beyond_the_wheel_wait_in_the_heap_and_come_out_in_time() {
        let mut schedule = Schedule::new(&[], 0);
        let hour = 3_600_000_000_000;
        schedule.push_check(1, hour);
        schedule.push_check(2, 5_000_000);
        schedule.push_check(3, 20_000_000_000);
        assert_eq!(schedule.len(), 3);
        assert_eq!(schedule.next_due(), Some(5_000_000));
        assert_eq!(schedule.pop_due(4_000_000), None);
        assert_eq!(schedule.pop_due(6_000_000).unwrap().0, 5_000_000);
        assert_eq!(schedule.next_due(), Some(20_000_000_000));
        assert_eq!(schedule.pop_due(19_999_000_000), None);
        assert_eq!(schedule.pop_due(20_000_000_000).unwrap().0, 20_000_000_000);
        assert_eq!(schedule.pop_due(hour - 1_000_000), None);
        assert_eq!(
            schedule.pop_due(hour).unwrap(),
            (hour, Due::Check { index: 1 })
        );
        assert!(schedule.is_empty());
        // Something scheduled in the past comes out at once.
        schedule.push_check(4, 1);
        assert_eq!(schedule.pop_due(hour).unwrap().1, Due::Check { index: 4 });
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
