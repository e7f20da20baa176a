//! The sending thread: walks the schedule, fills a batch with the
//! heartbeats due within `MAX_BATCH_SPAN_NS` of its first, waits until
//! that one is due and sends the batch; at the end, the graceful leaves and
//! the report.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use hb::clock::{monotonic_ns, unix_ns};
use hb_common::{
    auth,
    wire::{Heartbeat, flags},
};

use super::{
    batch::BatchSender,
    options::LoadgenOptions,
    pacing::{TimerSlack, wait_until},
    pauses::PauseLog,
    plan::Plan,
    report::{Report, StoppedNode},
    schedule::{Fate, Schedule},
};

/// A batch carries heartbeats due at most this long after its first one, so
/// no heartbeat leaves more than this early even at low rates.
const MAX_BATCH_SPAN_NS: u64 = 1_000_000;
/// Behind schedule by more than this, a batch counts as late (and is logged,
/// at most once a second).
const LATE_NS: u64 = 1_000_000;
/// The graceful-leave burst at the end gives up after this long.
const LEAVE_TIME_LIMIT: Duration = Duration::from_secs(10);

/// Generates the load on the calling thread (blocking) until the duration,
/// the count or `stop`, and returns what it did.
pub fn generate(options: &LoadgenOptions, stop: &AtomicBool) -> anyhow::Result<Report> {
    let plan = Plan::new(options)?;
    let incarnation = unix_ns() / 1_000;
    let key_id = options
        .key
        .as_ref()
        .map_or(auth::UNAUTHENTICATED, |key| key.id);
    let template = Heartbeat {
        flags: 0,
        key_id,
        node_id: 0,
        interval_ms: plan.interval_ms(),
        incarnation,
        sequence: 0,
        sent_unix_ns: 0,
        auth_tag: [0; 16],
    };
    let sender = BatchSender::open(&options.targets, plan.batch, &template, options.gso)?
        .signing_with(options.key.as_ref());
    let _slack = TimerSlack::precise();
    tracing::info!(
        nodes = plan.nodes,
        first_id = plan.first_id,
        interval = ?Duration::from_nanos(plan.interval_ns),
        rate = plan.rate(),
        targets = ?options.targets,
        batch = plan.batch,
        gso = sender.gso(),
        stopping = plan.doomed.len(),
        key_id,
        loss = plan.loss,
        burst_loss = plan.burst_loss,
        pause_every = ?options.pause_every,
        pause_for = ?options.pause_for,
        "load generator starting"
    );

    let mut run = Run::new(&plan, sender);
    run.send_regular(stop);
    if options.duration.is_some() && !run.interrupted && run.heartbeats < plan.count {
        // Nothing left to send (all stopped, or the last beat is sent): the
        // run still lasts its duration.
        run.interrupted = !wait_until(run.end, stop);
    }
    Ok(run.finish(options, incarnation, key_id))
}

/// A run in progress: the schedule, the batch and what happened so far.
struct Run<'p> {
    plan: &'p Plan,
    schedule: Schedule<'p>,
    sender: BatchSender,
    /// When each doomed node's last heartbeat was handed to the kernel, in
    /// the order of `plan.doomed`.
    last_sent: Vec<Option<u64>>,
    /// (index in the batch, index in `plan.doomed`) of stopping nodes'
    /// heartbeats.
    batch_doomed: Vec<(usize, usize)>,
    /// With `report_pauses`: the pause windows, and the (slot, due) of
    /// every heartbeat in the batch, by index.
    pauses: Option<(PauseLog, Vec<(u32, u64)>)>,
    heartbeats: u64,
    max_lag_ns: u64,
    late_batches: u64,
    last_late_warning: u64,
    interrupted: bool,
    /// The schedule's origin (monotonic ns).
    start: u64,
    /// Nothing is sent from this time on (monotonic ns).
    end: u64,
}

impl<'p> Run<'p> {
    fn new(plan: &'p Plan, sender: BatchSender) -> Self {
        let start = monotonic_ns();
        Run {
            plan,
            schedule: Schedule::new(plan),
            sender,
            last_sent: vec![None; plan.doomed.len()],
            batch_doomed: Vec::with_capacity(plan.batch),
            pauses: plan.report_pauses.then(|| {
                (
                    PauseLog::new(plan.first_id, plan.nodes, start),
                    Vec::with_capacity(plan.batch),
                )
            }),
            heartbeats: 0,
            max_lag_ns: 0,
            late_batches: 0,
            last_late_warning: 0,
            interrupted: false,
            start,
            end: start + plan.end_ns,
        }
    }

    /// Sends the regular heartbeats, a batch at a time, until the schedule
    /// runs out, the count or the end is reached, or `stop`.
    fn send_regular(&mut self, stop: &AtomicBool) {
        loop {
            if stop.load(Ordering::Relaxed) {
                self.interrupted = true;
                return;
            }
            if self.heartbeats >= self.plan.count {
                return;
            }
            let Some(first_due) = self.schedule.next_due() else {
                return;
            };
            let due = self.start + first_due;
            if !wait_until(due, stop) {
                self.interrupted = true;
                return;
            }
            let now = monotonic_ns();
            if now >= self.end {
                return;
            }
            self.note_lag(now, due);
            self.fill_batch(first_due.max(now - self.start) + MAX_BATCH_SPAN_NS);
            self.take_started_pauses();
            let (batch_doomed, last_sent) = (&self.batch_doomed, &mut self.last_sent);
            let pauses = &mut self.pauses;
            self.sender.flush(self.end, Some(stop), |accepted, at| {
                for &(index, doomed) in batch_doomed {
                    if accepted.contains(&index) {
                        last_sent[doomed] = Some(at);
                    }
                }
                if let Some((log, beats)) = pauses {
                    for &(slot, due) in &beats[accepted] {
                        log.sent(slot, due, at);
                    }
                }
            });
        }
    }

    /// Records how far behind schedule the batch due at `due` leaves.
    fn note_lag(&mut self, now: u64, due: u64) {
        let lag = now - due;
        self.max_lag_ns = self.max_lag_ns.max(lag);
        if lag > LATE_NS {
            self.late_batches += 1;
            if now - self.last_late_warning > 1_000_000_000 {
                self.last_late_warning = now;
                tracing::warn!(
                    lag_ms = lag as f64 / 1e6,
                    "behind schedule, sending at once"
                );
            }
        }
    }

    /// Hands the pauses the schedule started to the pause log (with
    /// `report_pauses`).
    fn take_started_pauses(&mut self) {
        if let Some((log, _)) = &mut self.pauses {
            for (slot, start, end) in self.schedule.started_pauses.drain(..) {
                log.started(slot, start, end);
            }
        }
    }

    /// Takes the heartbeats due by `limit` (offset from the start) off the
    /// schedule, up to a batch or the count, and puts the ones not lost in
    /// the batch.
    fn fill_batch(&mut self, limit: u64) {
        self.batch_doomed.clear();
        if let Some((_, beats)) = &mut self.pauses {
            beats.clear();
        }
        while self.sender.len() < self.plan.batch && self.heartbeats < self.plan.count {
            match self.schedule.next_due() {
                Some(due) if due <= limit => {}
                _ => break,
            }
            let beat = self.schedule.take();
            self.heartbeats += 1;
            if beat.fate != Fate::Sent {
                continue;
            }
            let index = self
                .sender
                .push(self.plan.first_id + beat.slot, beat.sequence, 0);
            if let Some((_, beats)) = &mut self.pauses {
                beats.push((beat.slot, beat.due));
            }
            if self.schedule.doomed.get(beat.slot) {
                let doomed = self
                    .plan
                    .doomed
                    .binary_search(&beat.slot)
                    .expect("a doomed slot");
                self.batch_doomed.push((index, doomed));
            }
        }
    }

    /// Sends a graceful leave for every node still running (not for the
    /// doomed ones if they stopped), giving up after [`LEAVE_TIME_LIMIT`].
    fn send_leaves(&mut self, stopped_now: bool) {
        let give_up = monotonic_ns() + LEAVE_TIME_LIMIT.as_nanos() as u64;
        for slot in 0..self.plan.nodes {
            let sequence = self.schedule.sequences[slot as usize];
            if sequence == 0 || (stopped_now && self.schedule.doomed.get(slot)) {
                continue;
            }
            self.sender
                .push(self.plan.first_id + slot, sequence + 1, flags::LEAVE);
            if self.sender.len() == self.plan.batch {
                self.sender.flush(give_up, None, |_, _| {});
                if monotonic_ns() >= give_up {
                    tracing::warn!("gave up sending graceful leaves after {LEAVE_TIME_LIMIT:?}");
                    break;
                }
            }
        }
        self.sender.flush(give_up, None, |_, _| {});
    }

    /// Ends the run (the leaves, if asked for) and reports.
    fn finish(mut self, options: &LoadgenOptions, incarnation: u64, key_id: u8) -> Report {
        let plan = self.plan;
        self.take_started_pauses();
        let pause_windows = self.pauses.take().map(|(log, _)| log.finish());
        let (start, ended) = (self.start, monotonic_ns().min(self.end));
        let sent = self.sender.sent;
        // The schedule may have passed `stop_after` for a batch a signal then
        // cancelled: the doomed nodes only stopped if the run got there.
        let stopped_now = self.schedule.stopping && ended >= start + plan.stop_after_ns;
        if plan.leave_at_end {
            self.send_leaves(stopped_now);
        }
        let stopped = if stopped_now {
            plan.doomed
                .iter()
                .zip(&self.last_sent)
                .map(|(&slot, &last_sent_mono_ns)| StoppedNode {
                    id: plan.first_id + slot,
                    last_sent_mono_ns,
                })
                .collect()
        } else {
            Vec::new()
        };
        let elapsed = ended.saturating_sub(start) as f64 / 1e9;
        Report {
            nodes: plan.nodes,
            first_id: plan.first_id,
            targets: options.targets.clone(),
            interval_ns: plan.interval_ns,
            rate: plan.rate(),
            achieved_rate: if elapsed > 0.0 {
                sent as f64 / options.targets.len() as f64 / elapsed
            } else {
                0.0
            },
            incarnation,
            heartbeats: self.heartbeats,
            sent,
            send_errors: self.sender.send_errors,
            unsent: self.sender.unsent,
            leaves_sent: self.sender.sent - sent,
            started_mono_ns: start,
            ended_mono_ns: ended,
            stop_mono_ns: stopped_now.then(|| start + plan.stop_after_ns),
            max_lag_ns: self.max_lag_ns,
            late_batches: self.late_batches,
            interrupted: self.interrupted,
            gso: self.sender.gso(),
            key_id,
            stopped,
            faults: self.schedule.faults_seen,
            pause_windows,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        time::{Duration, Instant},
    };

    use hb::keys::KeyFile;
    use hb_common::wire::offset;

    use super::*;
    use crate::loadgen::{
        options::Pace,
        test_support::{Monitor, fleet, options, run_to_end, sequences, simulate},
    };

    #[test]
    fn every_node_beats_in_order_with_its_own_sequence() {
        beats_in_order(true);
    }

    #[test]
    fn every_node_beats_in_order_without_gso() {
        beats_in_order(false);
    }

    fn beats_in_order(gso: bool) {
        let monitor = Monitor::bind();
        let options = LoadgenOptions {
            first_id: 1000,
            duration: Some(Duration::from_millis(350)),
            gso,
            ..options(&monitor, 100, 100)
        };
        let report = run_to_end(&options);
        let received = monitor.drain();

        assert_eq!(report.gso, gso);
        assert_eq!(report.heartbeats, received.len() as u64);
        assert_eq!(report.sent, received.len() as u64);
        assert_eq!((report.send_errors, report.unsent), (0, 0));
        let by_node = sequences(&received);
        let ids: Vec<u32> = by_node.keys().copied().collect();
        assert_eq!(ids, (1000..1100).collect::<Vec<_>>());
        for (id, seqs) in &by_node {
            assert!(
                seqs.len() == 3 || seqs.len() == 4,
                "node {id} sent {} heartbeats",
                seqs.len()
            );
            let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, &expected, "node {id}'s sequences");
        }
        let incarnations: HashSet<u64> = received.iter().map(|hb| hb.incarnation).collect();
        assert_eq!(incarnations, HashSet::from([report.incarnation]));
        assert!(
            received
                .iter()
                .all(|hb| hb.interval_ms == 100 && hb.flags == 0)
        );
        assert_eq!(report.interval_ns, 100_000_000);
        assert!((report.rate - 1000.0).abs() < 1e-6);
        assert!(report.stopped.is_empty() && report.stop_mono_ns.is_none());
        let elapsed = report.ended_mono_ns - report.started_mono_ns;
        assert!(
            (300_000_000..=360_000_000).contains(&elapsed),
            "ran {elapsed} ns"
        );
    }

    #[test]
    fn stopped_nodes_stop_and_are_reported() {
        let monitor = Monitor::bind();
        let options = LoadgenOptions {
            duration: Some(Duration::from_millis(350)),
            stop_fraction: 0.1,
            stop_after: Some(Duration::from_millis(150)),
            ..options(&monitor, 100, 100)
        };
        let report = run_to_end(&options);
        let by_node = sequences(&monitor.drain());
        assert_eq!(by_node.len(), 100);

        let stopped: HashSet<u32> = report.stopped.iter().map(|s| s.id).collect();
        assert_eq!(stopped.len(), 10);
        let last = |id: &u32| *by_node[id].last().unwrap();
        let highest_stopped = stopped.iter().map(last).max().unwrap();
        let lowest_running = by_node
            .keys()
            .filter(|id| !stopped.contains(id))
            .map(last)
            .min()
            .unwrap();
        assert!(
            highest_stopped < lowest_running,
            "stopped nodes reached sequence {highest_stopped}, running ones only {lowest_running}"
        );
        for node in &report.stopped {
            let at = node
                .last_sent_mono_ns
                .expect("every node sent before 150 ms");
            assert!(
                (report.started_mono_ns..=report.started_mono_ns + 250_000_000).contains(&at),
                "node {} last sent {} ns after the start",
                node.id,
                at - report.started_mono_ns
            );
        }
        assert_eq!(
            report.stop_mono_ns,
            Some(report.started_mono_ns + 150_000_000)
        );

        // The same seed stops the same nodes.
        let again = Plan::new(&options).unwrap();
        let ids: HashSet<u32> = again.doomed.iter().map(|slot| slot + 1).collect();
        assert_eq!(ids, stopped);
    }

    #[test]
    fn signs_every_heartbeat_and_leave_with_the_key() {
        for gso in [true, false] {
            let monitor = Monitor::bind();
            let key = KeyFile {
                path: "/etc/hb/test.key".into(),
                id: 42,
                key: [0xc3; 16],
            };
            let options = LoadgenOptions {
                duration: Some(Duration::from_millis(100)),
                leave_at_end: true,
                gso,
                key: Some(key.clone()),
                ..options(&monitor, 100, 20)
            };
            let report = run_to_end(&options);
            assert_eq!(report.key_id, 42);
            assert!(report.summary().contains("signed with key id 42"));
            let payloads = monitor.drain_payloads();
            assert_eq!(payloads.len() as u64, report.sent + report.leaves_sent);
            let mut leaves = 0;
            for payload in &payloads {
                let check = auth::check(payload, |id| (id == key.id).then_some(&key.key));
                assert_eq!(check, auth::TagCheck::Authenticated);
                let hb = Heartbeat::decode(payload).unwrap();
                assert_eq!(hb.key_id, 42);
                leaves += u64::from(hb.is_leave());
            }
            assert_eq!(leaves, 100);
            // Every heartbeat has its own tag.
            let tags: HashSet<&[u8]> = payloads.iter().map(|p| &p[offset::AUTH_TAG..]).collect();
            assert_eq!(tags.len(), payloads.len());
        }
    }

    #[test]
    fn without_a_key_heartbeats_are_unauthenticated() {
        let monitor = Monitor::bind();
        let report = run_to_end(&LoadgenOptions {
            count: Some(50),
            ..options(&monitor, 50, 20)
        });
        assert_eq!(report.key_id, 0);
        let payloads = monitor.drain_payloads();
        assert_eq!(payloads.len(), 50);
        for payload in &payloads {
            assert_eq!(
                auth::check(payload, |_| None),
                auth::TagCheck::Unauthenticated
            );
        }
    }

    #[test]
    fn count_bounds_the_total() {
        let monitor = Monitor::bind();
        let options = LoadgenOptions {
            count: Some(250),
            ..options(&monitor, 100, 20)
        };
        let report = run_to_end(&options);
        let received = monitor.drain();
        assert_eq!(received.len(), 250);
        assert_eq!((report.heartbeats, report.sent), (250, 250));
        let by_node = sequences(&received);
        // Slots are due in id order: the first 50 nodes beat a third time.
        for (id, seqs) in by_node {
            let expected: Vec<u64> = (1..=if id <= 50 { 3 } else { 2 }).collect();
            assert_eq!(seqs, expected, "node {id}");
        }
    }

    #[test]
    fn leaves_at_end_for_running_nodes_only() {
        let monitor = Monitor::bind();
        let options = LoadgenOptions {
            duration: Some(Duration::from_millis(120)),
            stop_fraction: 0.25,
            stop_after: Some(Duration::from_millis(60)),
            leave_at_end: true,
            ..options(&monitor, 20, 50)
        };
        let report = run_to_end(&options);
        let received = monitor.drain();
        let stopped: HashSet<u32> = report.stopped.iter().map(|s| s.id).collect();
        assert_eq!(stopped.len(), 5);
        let leaves: Vec<&Heartbeat> = received.iter().filter(|hb| hb.is_leave()).collect();
        assert_eq!(leaves.len(), 15);
        assert_eq!(report.leaves_sent, 15);
        let by_node = sequences(&received);
        for leave in leaves {
            assert!(!stopped.contains(&leave.node_id));
            let last = by_node[&leave.node_id].last().unwrap();
            assert_eq!(leave.sequence, last + 1);
        }
    }

    #[test]
    fn every_target_gets_every_heartbeat() {
        let monitors = [Monitor::bind(), Monitor::bind()];
        let options = LoadgenOptions {
            duration: Some(Duration::from_millis(100)),
            targets: monitors.iter().map(Monitor::addr).collect(),
            batch: 7,
            ..options(&monitors[0], 50, 20)
        };
        let report = run_to_end(&options);
        let first = sequences(&monitors[0].drain());
        let second = sequences(&monitors[1].drain());
        assert_eq!(first.len(), 50);
        assert_eq!(first, second);
        let total: usize = first.values().map(Vec::len).sum();
        assert_eq!(report.heartbeats, total as u64);
        assert_eq!(report.sent, 2 * total as u64);
    }

    /// Full batches larger than a GSO message: 150 heartbeats are chunks of
    /// 64, 64 and 22, each sent to both targets.
    #[test]
    fn large_batches_reach_every_target_whole() {
        let monitors = [Monitor::bind(), Monitor::bind()];
        let options = LoadgenOptions {
            count: Some(3000),
            batch: 150,
            ..LoadgenOptions::new(
                1000,
                monitors.iter().map(Monitor::addr).collect(),
                Pace::Rate(1_000_000.0),
            )
        };
        let report = run_to_end(&options);
        assert_eq!((report.heartbeats, report.sent), (3000, 6000));
        for monitor in &monitors {
            let by_node = sequences(&monitor.drain());
            assert_eq!(by_node.len(), 1000);
            assert!(by_node.values().all(|seqs| seqs == &[1, 2, 3]));
        }
    }

    #[test]
    fn stops_early_when_asked() {
        let monitor = Monitor::bind();
        let options = LoadgenOptions {
            duration: Some(Duration::from_secs(30)),
            ..options(&monitor, 10, 10)
        };
        let stop = AtomicBool::new(false);
        let begun = Instant::now();
        let report = std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                stop.store(true, Ordering::Relaxed);
            });
            generate(&options, &stop).unwrap()
        });
        assert!(begun.elapsed() < Duration::from_secs(2));
        assert!(report.interrupted);
        assert!(report.heartbeats > 0);
    }

    /// 20,000 heartbeats/s for a second. Other tests share the CPU, so the
    /// bound is generous: within 20% of the requested rate.
    #[test]
    fn paces_to_the_requested_rate() {
        let monitor = Monitor::bind();
        let options = LoadgenOptions {
            duration: Some(Duration::from_secs(1)),
            ..LoadgenOptions::new(1000, vec![monitor.addr()], Pace::Rate(20_000.0))
        };
        let report = run_to_end(&options);
        assert_eq!(report.interval_ns, 50_000_000);
        assert!(
            (16_000.0..=24_000.0).contains(&report.achieved_rate),
            "achieved {} heartbeats/s",
            report.achieved_rate
        );
        assert!(
            (19_000..=20_000).contains(&report.heartbeats),
            "{} heartbeats",
            report.heartbeats
        );
    }

    /// Everything lost: nothing is sent, sequences still advance.
    #[test]
    fn total_loss_sends_nothing() {
        let (beats, faults) = simulate(&LoadgenOptions {
            loss: 1.0,
            ..fleet(10, Duration::from_millis(100), Duration::from_secs(1))
        });
        assert_eq!((beats.len(), faults.lost_random), (100, 100));
        assert!(beats.iter().all(|b| b.fate == Fate::Lost));
        let monitor = Monitor::bind();
        let report = run_to_end(&LoadgenOptions {
            loss: 1.0,
            count: Some(30),
            duration: None,
            ..options(&monitor, 10, 10)
        });
        assert_eq!((report.heartbeats, report.sent), (30, 0));
        assert_eq!(report.faults.lost_random, 30);
        assert!(monitor.drain().is_empty());
    }

    /// Through the real sender: the monitor receives exactly the heartbeats
    /// not lost, with sequence gaps where some were.
    #[test]
    fn faults_reach_the_wire() {
        let monitor = Monitor::bind();
        let options = LoadgenOptions {
            duration: Some(Duration::from_millis(400)),
            loss: 0.1,
            burst_loss: 0.05,
            pause_every: Some(Duration::from_millis(100)),
            pause_for: Some(Duration::from_millis(30)),
            leave_at_end: true,
            ..options(&monitor, 100, 20)
        };
        let report = run_to_end(&options);
        let received = monitor.drain();
        let faults = &report.faults;
        assert!(faults.lost_random > 0 && faults.bursts > 0 && faults.pauses > 0);
        assert_eq!(report.heartbeats, report.sent + faults.lost());
        assert_eq!(report.unsent, 0);
        assert_eq!(received.len() as u64, report.sent + report.leaves_sent);
        let by_node = sequences(&received);
        let mut missing = 0;
        for (id, seqs) in &by_node {
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "node {id}: {seqs:?}");
            missing += seqs.last().unwrap() - seqs.len() as u64;
        }
        // Lost heartbeats after a node's last one received leave no gap.
        assert!(
            (faults.lost().saturating_sub(300)..=faults.lost()).contains(&missing),
            "{missing} missing, {} lost",
            faults.lost()
        );
        // Every node leaves at the end, paused or not, after its last
        // sequence number (lost or not).
        assert_eq!(report.leaves_sent, 100);
        for leave in received.iter().filter(|hb| hb.is_leave()) {
            assert!(leave.sequence > *by_node[&leave.node_id].last().unwrap());
        }
        let summary = report.summary();
        assert!(
            summary.contains("lost ") && summary.contains("paused "),
            "{summary}"
        );
    }

    /// `--report-pauses` through the real sender: one window per pause,
    /// the last heartbeat before it sent before it began, the first after
    /// it at its end (none when the run ended first), and a gap in the
    /// node's heartbeats on the wire for every window that hid a heartbeat.
    #[test]
    fn pause_windows_bracket_each_pause() {
        let monitor = Monitor::bind();
        let options = LoadgenOptions {
            duration: Some(Duration::from_millis(600)),
            pause_every: Some(Duration::from_millis(200)),
            pause_for: Some(Duration::from_millis(60)),
            report_pauses: true,
            ..options(&monitor, 50, 20)
        };
        let report = run_to_end(&options);
        let received = sequences(&monitor.drain());
        let windows = report.pause_windows.as_ref().expect("windows asked for");
        assert_eq!(windows.len() as u64, report.faults.pauses);
        assert!(windows.len() > 50, "{} pauses", windows.len());
        // A batch leaves up to MAX_BATCH_SPAN_NS before its last heartbeat
        // is due.
        let early = MAX_BATCH_SPAN_NS;
        let mut open = 0;
        for w in windows {
            assert!(w.start_mono_ns < w.end_mono_ns, "{w:?}");
            if let Some(before) = w.last_sent_before_mono_ns {
                // Due before the start (sent then unless behind schedule).
                assert!(before >= report.started_mono_ns, "{w:?}");
                assert!(
                    w.first_sent_after_mono_ns
                        .is_none_or(|after| before < after)
                );
            }
            match w.first_sent_after_mono_ns {
                Some(after) => assert!(after + early >= w.end_mono_ns, "{w:?}"),
                None => {
                    // Only a pause the run's end cut.
                    assert!(w.end_mono_ns + early >= report.ended_mono_ns, "{w:?}");
                    open += 1;
                }
            }
        }
        assert!(open < windows.len() / 2, "{open} windows open");
        // Without loss, each node's heartbeats arrive in sequence, one per
        // sequence number: a pause delays them, it loses none.
        for (id, seqs) in &received {
            let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, &expected, "node {id}");
        }
        // Without the flag, no windows.
        let plain = run_to_end(&LoadgenOptions {
            report_pauses: false,
            duration: Some(Duration::from_millis(100)),
            ..options.clone()
        });
        assert!(plain.pause_windows.is_none());
    }
}
