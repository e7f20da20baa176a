//! The schedule: every heartbeat in the order it is due, and its fate.
//!
//! Each node draws its faults from its own stream of the seed
//! ([`rng::stream`], `rand`'s `SmallRng`: 32 bytes, 56 with the rest of its
//! fault state); the schedule decides every heartbeat's fate before it is
//! put in a batch, so lost heartbeats cost no system call.

use std::{cmp::Reverse, collections::BinaryHeap};

use rand::RngCore as _;

use super::{
    plan::Plan,
    report::{FaultReport, percent},
};
use crate::rng::{self, Rng};

/// Mixed into the seed for the per-node fault streams, so they do not
/// repeat the phase jitter.
const FAULT_SEED: u64 = 0x6661_756c_7473_2121;

/// What becomes of a heartbeat the schedule produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fate {
    Sent,
    /// Lost to `--loss`.
    Lost,
    /// Lost in a burst; `start`: the burst's first.
    Burst {
        start: bool,
    },
}

/// One heartbeat of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Beat {
    /// Offset from the start.
    pub(super) due: u64,
    pub(super) slot: u32,
    pub(super) sequence: u64,
    pub(super) fate: Fate,
    /// The heartbeat that ends a pause, due when it ends.
    pub(super) resume: bool,
}

/// A node's fault state.
#[derive(Clone, Debug)]
struct NodeFaults {
    /// Its own stream of the seed.
    rng: Rng,
    /// When its current or last pause ends (offset from the start).
    paused_until: u64,
    /// When its next pause starts (`u64::MAX`: never).
    next_pause: u64,
    /// Heartbeats the current burst still loses, plus one for the heartbeat
    /// after it, which is always sent.
    burst_left: u8,
}

/// Walks the heartbeats in the order they are due: every slot of a round,
/// then the next round, plus the heartbeats that end pauses. Knows which
/// nodes stopped or are paused, counts each node's sequence and decides
/// each heartbeat's fate.
pub(super) struct Schedule<'p> {
    plan: &'p Plan,
    slot: u32,
    /// Offset of the current round from the start.
    round_ns: u64,
    /// Set once the schedule reaches `stop_after`: doomed nodes send no more.
    pub(super) stopping: bool,
    pub(super) doomed: Bitmap,
    /// Each node's last sequence number, lost heartbeats included (0: none
    /// yet).
    pub(super) sequences: Vec<u64>,
    /// Each node's fault state; empty without faults.
    faults: Vec<NodeFaults>,
    /// A heartbeat is lost when the high 32 bits of its draw are below this
    /// (`loss` x 2^32).
    loss_below: u64,
    /// A heartbeat starts a burst when bits 1..32 of its draw are below this
    /// (`burst_loss` x 2^31); bit 0 picks the burst's length.
    burst_below: u64,
    /// Mean time from the end of a pause to the start of the next.
    pause_gap_ns: f64,
    /// The heartbeats that end pauses, (due, slot), earliest first: at most
    /// one per node (the capacity), so pushing never allocates.
    resumes: BinaryHeap<Reverse<(u64, u32)>>,
    /// Whether the heartbeat `next_due` found ends a pause.
    next_is_resume: bool,
    /// The faults injected so far.
    pub(super) faults_seen: FaultReport,
    /// The pauses started since the caller last took them, (slot, start,
    /// end) as offsets from the start; only with `report_pauses`.
    pub(super) started_pauses: Vec<(u32, u64, u64)>,
}

impl<'p> Schedule<'p> {
    pub(super) fn new(plan: &'p Plan) -> Self {
        let mut doomed = Bitmap::new(plan.nodes as usize);
        for &slot in &plan.doomed {
            doomed.set(slot);
        }
        let pauses = plan.pause_for_ns > 0;
        let pause_gap_ns = plan.pause_every_ns.saturating_sub(plan.pause_for_ns) as f64;
        let faults = if plan.faulty() {
            (0..plan.nodes)
                .map(|slot| {
                    let mut rng = rng::stream(plan.seed ^ FAULT_SEED, slot.into());
                    let next_pause = if pauses {
                        exponential_ns(&mut rng, pause_gap_ns)
                    } else {
                        u64::MAX
                    };
                    NodeFaults {
                        rng,
                        paused_until: 0,
                        next_pause,
                        burst_left: 0,
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        Schedule {
            plan,
            slot: 0,
            round_ns: 0,
            stopping: false,
            doomed,
            sequences: vec![0; plan.nodes as usize],
            faults,
            loss_below: (plan.loss * (1u64 << 32) as f64).round() as u64,
            burst_below: (plan.burst_loss * (1u64 << 31) as f64).round() as u64,
            pause_gap_ns,
            resumes: BinaryHeap::with_capacity(if pauses { plan.nodes as usize } else { 0 }),
            next_is_resume: false,
            faults_seen: FaultReport {
                loss_percent: percent(plan.loss),
                burst_loss_percent: percent(plan.burst_loss),
                pause_every_ns: pauses.then_some(plan.pause_every_ns),
                pause_for_ns: pauses.then_some(plan.pause_for_ns),
                ..FaultReport::default()
            },
            started_pauses: Vec::new(),
        }
    }

    fn due(&self) -> u64 {
        self.round_ns + self.plan.phase_ns(self.slot)
    }

    fn advance(&mut self) {
        self.slot += 1;
        if self.slot == self.plan.nodes {
            self.slot = 0;
            self.round_ns += self.plan.interval_ns;
        }
    }

    /// When the next heartbeat (to be sent or lost) is due, or `None` if
    /// none is before the end. Calling it again before [`Schedule::take`]
    /// returns the same.
    pub(super) fn next_due(&mut self) -> Option<u64> {
        let grid = self.next_on_grid();
        let resume = self.resumes.peek().map(|&Reverse((due, _))| due);
        self.next_is_resume = match (grid, resume) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(grid), Some(resume)) => resume <= grid,
        };
        if self.next_is_resume { resume } else { grid }
    }

    /// Takes the heartbeat [`Schedule::next_due`] found (it must have found
    /// one): advances its node's sequence and decides its fate.
    pub(super) fn take(&mut self) -> Beat {
        let resume = std::mem::take(&mut self.next_is_resume);
        let (due, slot) = if resume {
            let Reverse(next) = self.resumes.pop().expect("a pause ends");
            next
        } else {
            let next = (self.due(), self.slot);
            self.advance();
            next
        };
        let sequence = &mut self.sequences[slot as usize];
        *sequence += 1;
        let sequence = *sequence;
        Beat {
            due,
            slot,
            sequence,
            fate: self.fate(slot),
            resume,
        }
    }

    /// Moves to the next regular heartbeat of a running node that is not
    /// paused and returns when it is due, or `None` if none is due before
    /// the end.
    fn next_on_grid(&mut self) -> Option<u64> {
        loop {
            let due = self.due();
            if due >= self.plan.end_ns {
                return None;
            }
            if !self.stopping && !self.plan.doomed.is_empty() && due >= self.plan.stop_after_ns {
                self.stopping = true;
            }
            let skip = if self.stopping && self.doomed.get(self.slot) {
                if self.plan.doomed.len() == self.plan.nodes as usize {
                    return None;
                }
                true
            } else {
                self.plan.pause_for_ns > 0 && self.paused_at(self.slot, due)
            };
            if !skip {
                return Some(due);
            }
            self.advance();
        }
    }

    /// Whether `slot`'s regular heartbeat due at `due` falls in a pause.
    /// Starts the node's pauses that begin by then (each drawing the start
    /// of the next), and schedules the heartbeat that ends one.
    fn paused_at(&mut self, slot: u32, due: u64) -> bool {
        let plan = self.plan;
        // Pauses end with the run, or for a node that stops, when it stops.
        let cut = if self.doomed.get(slot) {
            plan.end_ns.min(plan.stop_after_ns)
        } else {
            plan.end_ns
        };
        let node = &mut self.faults[slot as usize];
        if due < node.paused_until {
            return true;
        }
        while node.next_pause <= due {
            let start = node.next_pause;
            let end = start + plan.pause_for_ns;
            self.faults_seen.pauses += 1;
            self.faults_seen.paused_ns += end.min(cut).saturating_sub(start);
            if plan.report_pauses {
                self.started_pauses.push((slot, start, end));
            }
            node.paused_until = end;
            node.next_pause = end + exponential_ns(&mut node.rng, self.pause_gap_ns);
            if end > due {
                if end < cut {
                    self.resumes.push(Reverse((end, slot)));
                }
                return true;
            }
        }
        false
    }

    /// Decides whether `slot`'s next heartbeat is sent or lost.
    fn fate(&mut self, slot: u32) -> Fate {
        let Some(node) = self.faults.get_mut(slot as usize) else {
            return Fate::Sent;
        };
        let draw = node.rng.next_u64();
        if node.burst_left > 1 {
            node.burst_left -= 1;
            self.faults_seen.lost_in_bursts += 1;
            return Fate::Burst { start: false };
        }
        if node.burst_left == 1 {
            // The heartbeat after a burst goes out: bursts do not chain
            // into longer outages, and no other loss extends them.
            node.burst_left = 0;
            return Fate::Sent;
        }
        if (draw >> 1) & 0x7fff_ffff < self.burst_below {
            // 1 or 2 more lost, then one sent.
            node.burst_left = 2 + (draw & 1) as u8;
            self.faults_seen.bursts += 1;
            self.faults_seen.lost_in_bursts += 1;
            return Fate::Burst { start: true };
        }
        if draw >> 32 < self.loss_below {
            self.faults_seen.lost_random += 1;
            return Fate::Lost;
        }
        Fate::Sent
    }
}

/// One bit per node.
pub(super) struct Bitmap(Vec<u64>);

impl Bitmap {
    fn new(bits: usize) -> Self {
        Bitmap(vec![0; bits.div_ceil(64)])
    }

    fn set(&mut self, bit: u32) {
        self.0[bit as usize / 64] |= 1 << (bit % 64);
    }

    pub(super) fn get(&self, bit: u32) -> bool {
        self.0[bit as usize / 64] & (1 << (bit % 64)) != 0
    }
}

/// A draw from the exponential distribution of mean `mean_ns`.
fn exponential_ns(rng: &mut Rng, mean_ns: f64) -> u64 {
    // Uniform in (0, 1], so never ln(0).
    let uniform = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
    (-uniform.ln() * mean_ns) as u64
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::loadgen::{
        options::LoadgenOptions,
        test_support::{fleet, per_node, simulate},
    };

    /// `count` out of `trials` at probability `p`, within 5 standard
    /// deviations.
    fn assert_rate(what: &str, count: u64, trials: u64, p: f64) {
        let expected = trials as f64 * p;
        let sigma = (trials as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (count as f64 - expected).abs() <= 5.0 * sigma,
            "{what}: {count} of {trials}, expected {expected:.0} +- {:.0}",
            5.0 * sigma
        );
    }

    #[test]
    fn random_loss_drops_its_share_and_leaves_sequence_gaps() {
        // 1000 nodes x 100 rounds: 100,000 heartbeats.
        let options = LoadgenOptions {
            loss: 0.05,
            ..fleet(1000, Duration::from_millis(100), Duration::from_secs(10))
        };
        let (beats, faults) = simulate(&options);
        assert_eq!(beats.len(), 100_000);
        let lost = beats.iter().filter(|b| b.fate == Fate::Lost).count() as u64;
        assert_eq!(faults.lost_random, lost);
        assert_eq!(
            (faults.lost_in_bursts, faults.bursts, faults.pauses),
            (0, 0, 0)
        );
        assert!(
            beats
                .iter()
                .all(|b| matches!(b.fate, Fate::Sent | Fate::Lost))
        );
        assert_rate("lost", lost, 100_000, 0.05);
        let share = lost as f64 / 1e5;
        assert!((0.0465..=0.0535).contains(&share), "lost {share}");

        let mut nodes_with_gaps = 0;
        for (slot, beats) in per_node(&beats) {
            // A lost heartbeat still takes its sequence number and its turn.
            assert_eq!(beats.len(), 100);
            for (n, beat) in beats.iter().enumerate() {
                assert_eq!(beat.sequence, n as u64 + 1, "node {slot}");
                assert_eq!(beat.due, n as u64 * 100_000_000 + beats[0].due);
            }
            // What the monitor sees: the sent sequences, with a gap for
            // every lost one.
            let sent: Vec<u64> = beats
                .iter()
                .filter(|b| b.fate == Fate::Sent)
                .map(|b| b.sequence)
                .collect();
            let missing: u64 = sent.windows(2).map(|w| w[1] - w[0] - 1).sum::<u64>()
                + sent.first().map_or(0, |first| first - 1)
                + (100 - sent.last().copied().unwrap_or(0));
            assert_eq!(missing, 100 - sent.len() as u64, "node {slot}");
            nodes_with_gaps += u32::from(sent.windows(2).any(|w| w[1] > w[0] + 1));
        }
        assert!(nodes_with_gaps > 900, "{nodes_with_gaps} nodes saw a gap");
    }

    #[test]
    fn bursts_lose_two_or_three_heartbeats_in_a_row() {
        let options = LoadgenOptions {
            burst_loss: 0.01,
            ..fleet(1000, Duration::from_millis(100), Duration::from_secs(10))
        };
        let (beats, faults) = simulate(&options);
        assert_eq!(beats.len(), 100_000);
        assert_eq!(faults.lost_random, 0);
        let mut lengths = [0u64; 4];
        let mut continued = 0;
        for (slot, beats) in per_node(&beats) {
            let mut n = 0;
            while n < beats.len() {
                match beats[n].fate {
                    Fate::Burst { start: true } => {
                        let len = 1 + beats[n + 1..]
                            .iter()
                            .take_while(|b| b.fate == Fate::Burst { start: false })
                            .count();
                        let cut = n + len == beats.len();
                        assert!(
                            (2..=3).contains(&len) || (cut && len == 1),
                            "node {slot}: a burst of {len}"
                        );
                        lengths[len] += 1;
                        continued += len as u64 - 1;
                        n += len;
                        if let Some(next) = beats.get(n) {
                            assert_eq!(next.fate, Fate::Sent, "node {slot}: bursts must not chain");
                        }
                    }
                    Fate::Sent => n += 1,
                    fate => panic!("node {slot}: {fate:?} outside a burst"),
                }
            }
        }
        let lost = beats.iter().filter(|b| b.fate != Fate::Sent).count() as u64;
        assert_eq!(faults.lost_in_bursts, lost);
        assert_eq!(lengths.iter().sum::<u64>(), faults.bursts);
        // Only a burst cut by the end of the run is shorter.
        assert!(lengths[1] <= 20, "{lengths:?}");
        // Each length half the time.
        assert_rate("bursts of 3", lengths[3], lengths[2] + lengths[3], 0.5);
        // A burst starts at 1% of the heartbeats neither in one nor right
        // after one (always sent).
        assert_rate(
            "bursts",
            faults.bursts,
            100_000 - continued - faults.bursts,
            0.01,
        );
        assert!(
            (800..=1200).contains(&faults.bursts),
            "{} bursts",
            faults.bursts
        );

        // With random loss too, it applies to the heartbeats outside bursts.
        let (beats, faults) = simulate(&LoadgenOptions {
            loss: 0.05,
            ..options
        });
        let outside = beats
            .iter()
            .filter(|b| !matches!(b.fate, Fate::Burst { .. }))
            .count() as u64;
        assert_eq!(outside, 100_000 - faults.lost_in_bursts);
        assert_rate("lost at random", faults.lost_random, outside, 0.05);
        assert_rate("bursts", faults.bursts, 100_000, 0.01 * 0.98);
    }

    #[test]
    fn pauses_silence_a_node_without_advancing_its_sequence() {
        let interval = 100_000_000;
        let pause = 500_000_000;
        let options = LoadgenOptions {
            pause_every: Some(Duration::from_secs(2)),
            pause_for: Some(Duration::from_millis(500)),
            ..fleet(200, Duration::from_millis(100), Duration::from_secs(20))
        };
        let (beats, faults) = simulate(&options);
        assert_eq!((faults.lost_random, faults.lost_in_bursts), (0, 0));
        assert!(beats.iter().all(|b| b.fate == Fate::Sent));
        // About 20 s / 2 s pauses per node, a quarter of the time paused.
        assert!(
            (1700..=2300).contains(&faults.pauses),
            "{} pauses",
            faults.pauses
        );
        let paused = faults.paused_ns as f64 / (200.0 * 20e9);
        assert!((0.2..=0.3).contains(&paused), "paused {paused} of the time");

        let mut resumes = 0;
        for (slot, beats) in per_node(&beats) {
            for (n, beat) in beats.iter().enumerate() {
                // No pause advances the sequence.
                assert_eq!(beat.sequence, n as u64 + 1, "node {slot}");
                let Some(previous) = n.checked_sub(1).map(|p| beats[p]) else {
                    continue;
                };
                let gap = beat.due - previous.due;
                if beat.resume {
                    // Silent for the whole pause (which began after the
                    // previous heartbeat and by the next one due), then a
                    // heartbeat at once as it ends.
                    assert!(
                        (pause..=pause + interval).contains(&gap),
                        "node {slot}: {gap} ns before a resume"
                    );
                    resumes += 1;
                } else {
                    assert!(gap <= interval, "node {slot}: {gap} ns without a pause");
                }
            }
        }
        // Pauses still running at the end have no resume.
        assert!(
            (faults.pauses - 200..=faults.pauses).contains(&resumes),
            "{resumes} resumes, {} pauses",
            faults.pauses
        );
        let without = 200 * 200;
        let sent = beats.len() as f64;
        assert!(
            (0.72..0.83).contains(&(sent / without as f64)),
            "{sent} heartbeats of {without}"
        );
    }

    /// A pause shorter than the interval that covers a heartbeat delays it
    /// to the pause's end; one between two heartbeats changes nothing.
    #[test]
    fn short_pauses_delay_a_heartbeat_or_go_unseen() {
        let options = LoadgenOptions {
            pause_every: Some(Duration::from_millis(300)),
            pause_for: Some(Duration::from_millis(30)),
            ..fleet(50, Duration::from_millis(100), Duration::from_secs(30))
        };
        let (beats, faults) = simulate(&options);
        let per_node = per_node(&beats);
        let mut resumes = 0;
        for (slot, beats) in &per_node {
            for (n, pair) in beats.windows(2).enumerate() {
                assert_eq!(pair[1].sequence, n as u64 + 2, "node {slot}");
                let gap = pair[1].due - pair[0].due;
                if pair[1].resume {
                    assert!((30_000_000..=130_000_000).contains(&gap), "{gap}");
                    resumes += 1;
                } else {
                    assert!(gap <= 100_000_000, "{gap}");
                }
            }
        }
        // About 100 pauses per node, 30% of them over a heartbeat.
        assert!((4500..=5500).contains(&faults.pauses), "{}", faults.pauses);
        let seen = resumes as f64 / faults.pauses as f64;
        assert!((0.25..=0.35).contains(&seen), "{seen} of the pauses seen");
    }

    #[test]
    fn faults_are_seeded_per_node_and_spare_stopped_nodes() {
        let options = LoadgenOptions {
            loss: 0.05,
            burst_loss: 0.02,
            pause_every: Some(Duration::from_secs(1)),
            pause_for: Some(Duration::from_millis(200)),
            stop_fraction: 0.1,
            stop_after: Some(Duration::from_secs(3)),
            ..fleet(300, Duration::from_millis(100), Duration::from_secs(5))
        };
        let (beats, faults) = simulate(&options);
        assert!(faults.lost_random > 0 && faults.bursts > 0 && faults.pauses > 0);
        assert_eq!(simulate(&options), (beats.clone(), faults.clone()));
        let (other, _) = simulate(&LoadgenOptions {
            seed: 2,
            ..options.clone()
        });
        assert_ne!(other, beats);

        // The stopping nodes suffer faults until they stop, then nothing.
        let plan = Plan::new(&options).unwrap();
        assert_eq!(plan.doomed.len(), 30);
        for (slot, beats) in per_node(&beats) {
            if plan.doomed.contains(&slot) {
                assert!(beats.iter().all(|b| b.due < 3_000_000_000), "node {slot}");
            } else {
                assert!(beats.last().unwrap().due >= 4_000_000_000, "node {slot}");
            }
        }

        // Each node has its own stream: the first 100 nodes lose the same
        // heartbeats in a fleet of 100 as in one of 300.
        let losses = |nodes: u32| {
            let (beats, _) = simulate(&LoadgenOptions {
                loss: 0.05,
                burst_loss: 0.02,
                ..fleet(nodes, Duration::from_millis(100), Duration::from_secs(5))
            });
            per_node(&beats)
                .into_iter()
                .filter(|&(slot, _)| slot < 100)
                .map(|(slot, beats)| (slot, beats.iter().map(|b| b.fate).collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        };
        assert_eq!(losses(100), losses(300));
    }
}
