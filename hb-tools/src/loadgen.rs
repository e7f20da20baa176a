//! `hb-tools loadgen`: a whole fleet of simulated nodes in one process, for load
//! tests and benchmarks of the monitor.
//!
//! N nodes (ids `first_id ..= first_id + N - 1`) each beat at the same fixed
//! interval, with phases spread evenly over it plus a seeded random jitter
//! inside each node's slot, so the aggregate is a steady N / interval
//! heartbeats per second. Every node counts its own sequence from 1; all
//! share one incarnation (the start time in Unix microseconds).
//!
//! One blocking thread does the sending: heartbeats are patched into a
//! reusable batch of buffers (only node id, sequence and timestamp change)
//! and handed to the kernel with one `sendmmsg(2)` per batch, each message
//! carrying up to 64 heartbeats that UDP GSO cuts into datagrams (one
//! heartbeat per message without GSO). Each batch is due when its first
//! heartbeat is; the thread sleeps until then and spins for the last
//! [`SPIN_NS`]. Behind schedule, it sends at once and records the lag.
//!
//! With a key (`--key-file`), every heartbeat, graceful leaves included, is
//! signed after it is stamped: the key id and a SipHash tag computed per
//! heartbeat in place in the batch (no allocation).
//!
//! For detection-latency measurements, a seeded random subset of nodes can
//! stop part-way (a crash: no leave). The [`Report`] gives, for each of them,
//! the `CLOCK_MONOTONIC` time at which its last heartbeat was handed to the
//! kernel: the clock the XDP program stamps arrivals with.
//!
//! For detection-quality measurements, the running nodes can also suffer
//! faults, each node independently and all of it seeded:
//!
//! - random loss (`--loss`): a heartbeat is not sent, but its node's
//!   sequence still advances, so the monitor sees a gap;
//! - bursts of loss (`--burst-loss`): a heartbeat starts a burst in which it
//!   and the node's next 1 or 2 heartbeats are lost (sequence advancing);
//!   the heartbeat after a burst is always sent, so bursts never chain;
//! - pauses (`--pause-every`, `--pause-for`): a stalled process (a GC pause,
//!   SIGSTOP). At random moments, on average one per `pause_every` from one
//!   pause's start to the next, a node stops for `pause_for`: no heartbeat is
//!   due meanwhile, so its sequence does not advance, and it beats at once
//!   when the pause ends, then on its usual schedule again.
//!
//! Each node draws its faults from its own SplitMix64 stream (seeded by the
//! seed and its slot) and keeps 32 bytes of state; the schedule decides
//! every heartbeat's fate before it is put in a batch, so lost heartbeats
//! cost no system call.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    fs,
    io::{self, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    ops::Range,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    ptr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use hb::{
    clock::{monotonic_ns, unix_ns},
    keys::KeyFile,
};
use hb_common::{
    auth,
    siphash::Key,
    wire::{HEARTBEAT_LEN, Heartbeat, flags, offset},
};
use rand::{SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};

/// The most nodes one load generator simulates.
pub const MAX_NODES: u32 = 1_000_000;
/// The longest run.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// The most heartbeats `--count` may ask for.
pub const MAX_COUNT: u64 = 10_000_000_000;
/// The largest batch (without GSO, one `sendmmsg(2)` takes at most
/// `UIO_MAXIOV` = 1024 messages; longer vectors take several calls).
pub const MAX_BATCH: usize = 1024;
/// The sender sleeps until this close to a batch's due time, then spins.
pub const SPIN_NS: u64 = 50_000;
/// Heartbeats per GSO message (the kernel's `UDP_MAX_SEGMENTS` is at
/// least 64).
const GSO_SEGMENTS: usize = 64;
/// A batch carries heartbeats due at most this long after its first one, so
/// no heartbeat leaves more than this early even at low rates.
const MAX_BATCH_SPAN_NS: u64 = 1_000_000;
/// Behind schedule by more than this, a batch counts as late (and is logged,
/// at most once a second).
const LATE_NS: u64 = 1_000_000;
/// Pause before retrying a batch the kernel had no room for.
const RETRY_PAUSE: Duration = Duration::from_micros(100);
/// Longest single sleep, so a signal is noticed quickly.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// A blocking send waits at most this long for socket buffer space.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);
/// Socket send buffer asked for (the kernel may cap it at `wmem_max`).
const SEND_BUFFER: libc::c_int = 4 << 20;
/// The graceful-leave burst at the end gives up after this long.
const LEAVE_TIME_LIMIT: Duration = Duration::from_secs(10);
/// The shortest `--pause-every`.
const MIN_PAUSE_EVERY: Duration = Duration::from_millis(1);
/// Mixed into the seed for the per-node fault streams, so they do not
/// repeat the phase jitter.
const FAULT_SEED: u64 = 0x6661_756c_7473_2121;

/// How fast the fleet beats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Every node beats once per interval.
    Interval(Duration),
    /// Aggregate heartbeats per second; the interval is nodes / rate.
    Rate(f64),
}

/// What `hb-tools loadgen` was asked to do.
#[derive(Clone, Debug)]
pub struct LoadgenOptions {
    /// How many nodes to simulate, 1 ..= [`MAX_NODES`].
    pub nodes: u32,
    /// The first node id; the others follow consecutively.
    pub first_id: u32,
    /// Every heartbeat goes to each of these (all of one address family).
    pub targets: Vec<SocketAddr>,
    pub pace: Pace,
    /// Stop after this long (at most [`MAX_DURATION`]).
    pub duration: Option<Duration>,
    /// Stop after this many heartbeats (at most [`MAX_COUNT`]; each goes to
    /// every target; lost ones count).
    pub count: Option<u64>,
    /// Heartbeats per `sendmmsg(2)`, 1 ..= [`MAX_BATCH`].
    pub batch: usize,
    /// Fraction of the nodes, in [0, 1], that stop at `stop_after`.
    pub stop_fraction: f64,
    /// When the stopping nodes stop, as time into the run.
    pub stop_after: Option<Duration>,
    /// Probability, in [0, 1], that a heartbeat is lost: not sent, though
    /// its node's sequence advances (`--loss`, a percentage on the CLI).
    pub loss: f64,
    /// Probability, in [0, 1], that a heartbeat starts a burst of loss: it
    /// and its node's next 1 or 2 heartbeats are lost (`--burst-loss`).
    pub burst_loss: f64,
    /// Each node pauses at random moments, on average once per this long
    /// (start to start); needs `pause_for`.
    pub pause_every: Option<Duration>,
    /// How long a pause lasts (shorter than `pause_every`): no heartbeat is
    /// due, the sequence does not advance, and the node beats when it ends.
    pub pause_for: Option<Duration>,
    /// Seeds the choice of stopping nodes, the phase jitter and the faults.
    pub seed: u64,
    /// At the end, send a graceful-leave heartbeat for every running node
    /// (paused ones too; leaves are never lost).
    pub leave_at_end: bool,
    /// Where to write the JSON report.
    pub report: Option<PathBuf>,
    /// Let the kernel cut each message into datagrams (UDP GSO, when
    /// available): about half the CPU per heartbeat on veth.
    pub gso: bool,
    /// Sign every heartbeat with this key; `None`: unauthenticated.
    pub key: Option<KeyFile>,
}

impl LoadgenOptions {
    /// Options with the CLI's defaults for everything but the essentials.
    pub fn new(nodes: u32, targets: Vec<SocketAddr>, pace: Pace) -> Self {
        LoadgenOptions {
            nodes,
            first_id: 1,
            targets,
            pace,
            duration: None,
            count: None,
            batch: 64,
            stop_fraction: 0.0,
            stop_after: None,
            loss: 0.0,
            burst_loss: 0.0,
            pause_every: None,
            pause_for: None,
            seed: 1,
            leave_at_end: false,
            report: None,
            gso: true,
            key: None,
        }
    }
}

/// What a run did; written as JSON with `--report`. Times are
/// `CLOCK_MONOTONIC` nanoseconds, comparable with `bpf_ktime_get_ns()` on the
/// same host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub nodes: u32,
    pub first_id: u32,
    pub targets: Vec<SocketAddr>,
    /// Per-node interval.
    pub interval_ns: u64,
    /// Requested aggregate rate, heartbeats per second (nodes / interval).
    pub rate: f64,
    /// Achieved aggregate rate: heartbeats sent (lost ones excluded) per
    /// second of the run.
    pub achieved_rate: f64,
    pub incarnation: u64,
    /// Heartbeats generated (the quantity `--count` bounds), including those
    /// the injected loss dropped (see `faults`); leaves excluded.
    pub heartbeats: u64,
    /// Datagrams the kernel accepted ((heartbeats - lost) x targets when all
    /// went well); leaves excluded.
    pub sent: u64,
    /// Failed `sendmmsg(2)` calls, retried or not (leaves included).
    pub send_errors: u64,
    /// Datagrams given up on after errors (never sent; leaves included).
    pub unsent: u64,
    /// Graceful-leave datagrams the kernel accepted (`--leave-at-end`).
    pub leaves_sent: u64,
    /// The schedule's origin: node phases count from here.
    pub started_mono_ns: u64,
    /// When the last regular heartbeat was sent, or the run's bound reached
    /// (before any leaves).
    pub ended_mono_ns: u64,
    /// When the stopping nodes stopped (`started + stop_after`); null if the
    /// run ended before.
    pub stop_mono_ns: Option<u64>,
    /// Furthest any batch was sent behind its due time.
    pub max_lag_ns: u64,
    /// Batches sent more than 1 ms behind their due time.
    pub late_batches: u64,
    /// Ended early by SIGINT or SIGTERM.
    pub interrupted: bool,
    /// Sent with UDP GSO (at the end of the run).
    pub gso: bool,
    /// The key id every heartbeat was signed with; 0: unauthenticated.
    #[serde(default)]
    pub key_id: u8,
    /// The nodes that stopped, by id.
    pub stopped: Vec<StoppedNode>,
    /// The faults injected (all zero in reports from before they existed).
    #[serde(default)]
    pub faults: FaultReport,
}

/// The faults a run injected into the running nodes' heartbeats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultReport {
    /// `--loss`, in percent.
    pub loss_percent: f64,
    /// `--burst-loss`, in percent.
    pub burst_loss_percent: f64,
    /// `--pause-every`; null without pauses.
    pub pause_every_ns: Option<u64>,
    /// `--pause-for`; null without pauses.
    pub pause_for_ns: Option<u64>,
    /// Heartbeats `--loss` dropped (one a burst dropped counts there only).
    pub lost_random: u64,
    /// Heartbeats lost in bursts.
    pub lost_in_bursts: u64,
    /// Bursts started.
    pub bursts: u64,
    /// Pauses started (up to each node's last heartbeat due in the run).
    pub pauses: u64,
    /// Their total length, cut at the end of the run (and, for the stopping
    /// nodes, at `--stop-after`).
    pub paused_ns: u64,
}

impl FaultReport {
    /// Heartbeats lost, at random and in bursts.
    pub fn lost(&self) -> u64 {
        self.lost_random + self.lost_in_bursts
    }

    fn summary(&self, heartbeats: u64) -> String {
        let mut out = String::new();
        if self.loss_percent > 0.0 || self.burst_loss_percent > 0.0 {
            let share = |lost: u64| {
                if heartbeats > 0 {
                    lost as f64 * 100.0 / heartbeats as f64
                } else {
                    0.0
                }
            };
            out += &format!(
                "  lost      {} heartbeats ({:.2}%): {} at random (--loss {}%), {} in {} bursts \
                 (--burst-loss {}%)\n",
                self.lost(),
                share(self.lost()),
                self.lost_random,
                self.loss_percent,
                self.lost_in_bursts,
                self.bursts,
                self.burst_loss_percent,
            );
        }
        if let (Some(every), Some(length)) = (self.pause_every_ns, self.pause_for_ns) {
            out += &format!(
                "  paused    {} pauses of {} (one per {} per node on average), {:.3} s in all\n",
                self.pauses,
                humantime::format_duration(Duration::from_nanos(length)),
                humantime::format_duration(Duration::from_nanos(every)),
                self.paused_ns as f64 / 1e9,
            );
        }
        out
    }
}

/// A node that stopped (crashed) during the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedNode {
    pub id: u32,
    /// When the `sendmmsg(2)` call that carried its last heartbeat started;
    /// null if it never sent one.
    pub last_sent_mono_ns: Option<u64>,
}

impl Report {
    /// Seconds from the start to the end of the regular heartbeats.
    pub fn elapsed_secs(&self) -> f64 {
        self.ended_mono_ns.saturating_sub(self.started_mono_ns) as f64 / 1e9
    }

    /// The human summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let last_id = self.first_id as u64 + self.nodes as u64 - 1;
        let mut out = format!(
            "hb-tools loadgen: {} nodes (ids {}..={last_id}), interval {}, {:.0} heartbeats/s requested, \
             {} target(s), {}{}\n",
            self.nodes,
            self.first_id,
            humantime::format_duration(Duration::from_nanos(self.interval_ns)),
            self.rate,
            self.targets.len(),
            match self.key_id {
                auth::UNAUTHENTICATED => "unauthenticated".to_owned(),
                id => format!("signed with key id {id}"),
            },
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            },
        );
        let lost = match self.faults.lost() {
            0 => String::new(),
            lost => format!(" ({lost} of them lost on purpose)"),
        };
        out += &format!(
            "  sent      {} heartbeats{lost}, {} datagrams ({} given up), {} send errors\n",
            self.heartbeats, self.sent, self.unsent, self.send_errors
        );
        out += &format!(
            "  duration  {:.3} s, achieved {:.0} heartbeats/s\n",
            self.elapsed_secs(),
            self.achieved_rate
        );
        out += &format!(
            "  max lag   {:.3} ms behind schedule ({} batches more than 1 ms late)\n",
            self.max_lag_ns as f64 / 1e6,
            self.late_batches
        );
        out += &self.faults.summary(self.heartbeats);
        out += &format!("  stopped   {} nodes\n", self.stopped.len());
        if self.leaves_sent > 0 {
            out += &format!("  leaves    {} datagrams\n", self.leaves_sent);
        }
        out
    }

    /// Writes the report as JSON, atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut json = serde_json::to_vec(self).context("encoding the report")?;
        json.push(b'\n');
        fs::File::create(&tmp)
            .and_then(|mut file| file.write_all(&json))
            .and_then(|()| fs::rename(&tmp, path))
            .with_context(|| format!("writing the report to {}", path.display()))
    }
}

/// Runs the load generator on a blocking thread until its bound or a
/// signal, then prints the summary to stderr and writes the report.
pub async fn run(options: LoadgenOptions) -> anyhow::Result<()> {
    Plan::new(&options)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut worker = tokio::task::spawn_blocking({
        let stop = Arc::clone(&stop);
        let options = options.clone();
        move || generate(&options, &stop)
    });
    let report = loop {
        tokio::select! {
            joined = &mut worker => break joined.context("the load generator thread failed")??,
            _ = terminate.recv() => stop.store(true, Ordering::Relaxed),
            _ = interrupt.recv() => stop.store(true, Ordering::Relaxed),
        }
    };
    eprint!("{}", report.summary());
    if let Some(path) = &options.report {
        report.write(path)?;
    }
    Ok(())
}

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
    let mut sender = Sender::open(&options.targets, plan.batch, &template, options.gso)?
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

    let mut schedule = Schedule::new(&plan);
    let mut last_sent: Vec<Option<u64>> = vec![None; plan.doomed.len()];
    // (index in the batch, index in `plan.doomed`) of stopping nodes' heartbeats.
    let mut batch_doomed: Vec<(usize, usize)> = Vec::with_capacity(plan.batch);
    let mut heartbeats = 0u64;
    let mut max_lag_ns = 0u64;
    let mut late_batches = 0u64;
    let mut last_late_warning = 0u64;
    let mut interrupted = false;

    let start = monotonic_ns();
    let end = start + plan.end_ns;
    loop {
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        if heartbeats >= plan.count {
            break;
        }
        let Some(first_due) = schedule.next_due() else {
            break;
        };
        let due = start + first_due;
        if !wait_until(due, stop) {
            interrupted = true;
            break;
        }
        let now = monotonic_ns();
        if now >= end {
            break;
        }
        let lag = now - due;
        max_lag_ns = max_lag_ns.max(lag);
        if lag > LATE_NS {
            late_batches += 1;
            if now - last_late_warning > 1_000_000_000 {
                last_late_warning = now;
                tracing::warn!(
                    lag_ms = lag as f64 / 1e6,
                    "behind schedule, sending at once"
                );
            }
        }

        let limit = first_due.max(now - start) + MAX_BATCH_SPAN_NS;
        batch_doomed.clear();
        while sender.len() < plan.batch && heartbeats < plan.count {
            match schedule.next_due() {
                Some(due) if due <= limit => {}
                _ => break,
            }
            let beat = schedule.take();
            heartbeats += 1;
            if beat.fate != Fate::Sent {
                continue;
            }
            let index = sender.push(plan.first_id + beat.slot, beat.sequence, 0);
            if schedule.doomed.get(beat.slot) {
                let doomed = plan
                    .doomed
                    .binary_search(&beat.slot)
                    .expect("a doomed slot");
                batch_doomed.push((index, doomed));
            }
        }
        sender.flush(end, Some(stop), |accepted, at| {
            for &(index, doomed) in &batch_doomed {
                if accepted.contains(&index) {
                    last_sent[doomed] = Some(at);
                }
            }
        });
    }
    if options.duration.is_some() && !interrupted && heartbeats < plan.count {
        // Nothing left to send (all stopped, or the last beat is sent): the
        // run still lasts its duration.
        interrupted = !wait_until(end, stop);
    }
    let ended = monotonic_ns().min(end);
    let sent = sender.sent;
    // The schedule may have passed `stop_after` for a batch a signal then
    // cancelled: the doomed nodes only stopped if the run got there.
    let stopped_now = schedule.stopping && ended >= start + plan.stop_after_ns;

    if plan.leave_at_end {
        let give_up = monotonic_ns() + LEAVE_TIME_LIMIT.as_nanos() as u64;
        for slot in 0..plan.nodes {
            let sequence = schedule.sequences[slot as usize];
            if sequence == 0 || (stopped_now && schedule.doomed.get(slot)) {
                continue;
            }
            sender.push(plan.first_id + slot, sequence + 1, flags::LEAVE);
            if sender.len() == plan.batch {
                sender.flush(give_up, None, |_, _| {});
                if monotonic_ns() >= give_up {
                    tracing::warn!("gave up sending graceful leaves after {LEAVE_TIME_LIMIT:?}");
                    break;
                }
            }
        }
        sender.flush(give_up, None, |_, _| {});
    }

    let stopped = if stopped_now {
        plan.doomed
            .iter()
            .zip(&last_sent)
            .map(|(&slot, &last_sent_mono_ns)| StoppedNode {
                id: plan.first_id + slot,
                last_sent_mono_ns,
            })
            .collect()
    } else {
        Vec::new()
    };
    let elapsed = ended.saturating_sub(start) as f64 / 1e9;
    Ok(Report {
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
        heartbeats,
        sent,
        send_errors: sender.send_errors,
        unsent: sender.unsent,
        leaves_sent: sender.sent - sent,
        started_mono_ns: start,
        ended_mono_ns: ended,
        stop_mono_ns: stopped_now.then(|| start + plan.stop_after_ns),
        max_lag_ns,
        late_batches,
        interrupted,
        gso: sender.gso(),
        key_id,
        stopped,
        faults: schedule.faults_seen,
    })
}

/// The validated options, in the units the sending loop uses.
#[derive(Debug)]
struct Plan {
    nodes: u32,
    first_id: u32,
    interval_ns: u64,
    /// Heartbeats due at or after this offset from the start are not sent.
    end_ns: u64,
    /// At most this many regular heartbeats (`u64::MAX`: no count).
    count: u64,
    batch: usize,
    seed: u64,
    /// Offset from the start at which the doomed nodes stop.
    stop_after_ns: u64,
    /// Slots (node id - first id) of the nodes that stop, sorted.
    doomed: Vec<u32>,
    leave_at_end: bool,
    /// Probability that a heartbeat is lost.
    loss: f64,
    /// Probability that a heartbeat starts a burst of loss.
    burst_loss: f64,
    /// Mean time from one pause's start to the next (0: no pauses).
    pause_every_ns: u64,
    /// Length of a pause (0: no pauses).
    pause_for_ns: u64,
}

impl Plan {
    fn new(options: &LoadgenOptions) -> anyhow::Result<Self> {
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
                "the per-node interval (--interval, or --nodes / --rate) must be between 1 ns and \
                 1h"
            );
        }
        let interval_ns = interval_ns as u64;
        if options.duration.is_none() && options.count.is_none() {
            bail!(
                "hb-tools loadgen needs a bound: pass --duration (at most 1h) or --count (or both)"
            );
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
        if !(0.0..=1.0).contains(&options.loss) {
            bail!("--loss must be between 0 and 100 (percent of the heartbeats)");
        }
        if !(0.0..=1.0).contains(&options.burst_loss) {
            bail!("--burst-loss must be between 0 and 100 (percent of the heartbeats)");
        }
        let (pause_every_ns, pause_for_ns) = match (options.pause_every, options.pause_for) {
            (None, None) => (0, 0),
            (Some(_), None) => {
                bail!("--pause-every needs --pause-for (how long each pause lasts, e.g. 500ms)")
            }
            (None, Some(_)) => {
                bail!("--pause-for needs --pause-every (how often a node pauses, e.g. 10s)")
            }
            (Some(every), Some(length)) => {
                if !(MIN_PAUSE_EVERY..=MAX_DURATION).contains(&every) {
                    bail!("--pause-every must be between 1ms and 1h");
                }
                if length.is_zero() {
                    bail!("--pause-for must be more than 0");
                }
                if length >= every {
                    bail!("--pause-for must be shorter than --pause-every");
                }
                (every.as_nanos() as u64, length.as_nanos() as u64)
            }
        };
        if !(0.0..=1.0).contains(&options.stop_fraction) {
            bail!("--stop-fraction must be between 0 and 1");
        }
        let stop_after_ns = match (options.stop_fraction > 0.0, options.stop_after) {
            (false, None) => 0,
            (false, Some(_)) => bail!("--stop-after needs --stop-fraction (above 0)"),
            (true, None) => bail!("--stop-fraction needs --stop-after (when they stop)"),
            (true, Some(after)) => {
                if options.duration.is_some_and(|d| after >= d) {
                    bail!("--stop-after must be shorter than --duration");
                }
                if after > MAX_DURATION {
                    bail!("--stop-after must be at most 1h");
                }
                after.as_nanos() as u64
            }
        };
        let stopping = (options.stop_fraction * options.nodes as f64).round() as usize;
        let mut doomed: Vec<u32> = rand::seq::index::sample(
            &mut StdRng::seed_from_u64(options.seed),
            options.nodes as usize,
            stopping.min(options.nodes as usize),
        )
        .into_iter()
        .map(|slot| slot as u32)
        .collect();
        doomed.sort_unstable();
        Ok(Plan {
            nodes: options.nodes,
            first_id: options.first_id,
            interval_ns,
            end_ns: options.duration.unwrap_or(MAX_DURATION).as_nanos() as u64,
            count: options.count.unwrap_or(u64::MAX),
            batch: options.batch,
            seed: options.seed,
            stop_after_ns,
            doomed,
            leave_at_end: options.leave_at_end,
            loss: options.loss,
            burst_loss: options.burst_loss,
            pause_every_ns,
            pause_for_ns,
        })
    }

    /// Whether any fault is injected.
    fn faulty(&self) -> bool {
        self.loss > 0.0 || self.burst_loss > 0.0 || self.pause_for_ns > 0
    }

    /// Aggregate heartbeats per second.
    fn rate(&self) -> f64 {
        self.nodes as f64 * 1e9 / self.interval_ns as f64
    }

    /// The interval the heartbeats advertise, in whole milliseconds (at least 1).
    fn interval_ms(&self) -> u32 {
        (self.interval_ns as f64 / 1e6)
            .round()
            .clamp(1.0, u32::MAX as f64) as u32
    }

    /// Offset of `slot`'s first heartbeat from the start: the slot's even
    /// share of the interval plus a seeded jitter within that share, so
    /// phases grow with the slot and stay below the interval.
    fn phase_ns(&self, slot: u32) -> u64 {
        let jitter = (splitmix64(self.seed ^ (slot as u64).wrapping_mul(0xA076_1D64_78BD_642F))
            >> 11) as f64
            / (1u64 << 53) as f64;
        let share = self.interval_ns as f64 / self.nodes as f64;
        (((slot as f64 + jitter) * share) as u64).min(self.interval_ns - 1)
    }
}

/// What becomes of a heartbeat the schedule produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
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
struct Beat {
    /// Offset from the start.
    due: u64,
    slot: u32,
    sequence: u64,
    fate: Fate,
    /// The heartbeat that ends a pause, due when it ends.
    resume: bool,
}

/// A node's fault state.
#[derive(Clone, Copy, Debug)]
struct NodeFaults {
    /// Its SplitMix64 stream.
    rng: u64,
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
struct Schedule<'p> {
    plan: &'p Plan,
    slot: u32,
    /// Offset of the current round from the start.
    round_ns: u64,
    /// Set once the schedule reaches `stop_after`: doomed nodes send no more.
    stopping: bool,
    doomed: Bitmap,
    /// Each node's last sequence number, lost heartbeats included (0: none
    /// yet).
    sequences: Vec<u64>,
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
    faults_seen: FaultReport,
}

impl<'p> Schedule<'p> {
    fn new(plan: &'p Plan) -> Self {
        let mut doomed = Bitmap::new(plan.nodes as usize);
        for &slot in &plan.doomed {
            doomed.set(slot);
        }
        let pauses = plan.pause_for_ns > 0;
        let pause_gap_ns = plan.pause_every_ns.saturating_sub(plan.pause_for_ns) as f64;
        let faults = if plan.faulty() {
            let base = splitmix64(plan.seed ^ FAULT_SEED);
            (0..plan.nodes)
                .map(|slot| {
                    let mut rng =
                        splitmix64(base ^ (slot as u64).wrapping_mul(0x9FB2_1C65_1E98_DF25));
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
    fn next_due(&mut self) -> Option<u64> {
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
    fn take(&mut self) -> Beat {
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
        let draw = next_random(&mut node.rng);
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
struct Bitmap(Vec<u64>);

impl Bitmap {
    fn new(bits: usize) -> Self {
        Bitmap(vec![0; bits.div_ceil(64)])
    }

    fn set(&mut self, bit: u32) {
        self.0[bit as usize / 64] |= 1 << (bit % 64);
    }

    fn get(&self, bit: u32) -> bool {
        self.0[bit as usize / 64] & (1 << (bit % 64)) != 0
    }
}

/// A UDP socket and one batch of heartbeats with its `sendmmsg(2)` arrays.
///
/// The heartbeats of a batch lie back to back in `bufs`. With UDP GSO
/// (`UDP_SEGMENT` set to the heartbeat size on the socket), one message
/// carries a chunk of up to [`GSO_SEGMENTS`] heartbeats and the kernel cuts
/// it into one datagram per heartbeat, which costs far less than a message
/// per datagram; without, a chunk is one heartbeat. Message
/// `chunk * targets + target` sends chunk `chunk` (iovec `chunk`) to address
/// `target`.
///
/// The arrays are built once (again only if GSO has to be turned off) and
/// point into each other. The vectors never reallocate, and everything the
/// pointers reach is written only through `Vec::as_mut_ptr`, which keeps
/// those pointers valid.
struct Sender {
    socket: UdpSocket,
    targets: usize,
    /// Heartbeats per message: [`GSO_SEGMENTS`] with GSO, else 1.
    per_msg: usize,
    bufs: Vec<[u8; HEARTBEAT_LEN]>,
    iovecs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    msgs: Vec<libc::mmsghdr>,
    /// Heartbeats in the current batch.
    len: usize,
    /// Key id and key every heartbeat is signed with, if any.
    key: Option<(u8, Key)>,
    sent: u64,
    send_errors: u64,
    unsent: u64,
}

impl Sender {
    fn open(
        targets: &[SocketAddr],
        capacity: usize,
        template: &Heartbeat,
        gso: bool,
    ) -> anyhow::Result<Self> {
        let local: SocketAddr = if targets[0].is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket =
            UdpSocket::bind(local).with_context(|| format!("binding a UDP socket to {local}"))?;
        if let [target] = targets {
            socket
                .connect(target)
                .with_context(|| format!("connecting the UDP socket to {target}"))?;
        }
        socket
            .set_write_timeout(Some(SEND_TIMEOUT))
            .context("setting the socket's send timeout")?;
        if let Err(error) = set_int_option(&socket, libc::SOL_SOCKET, libc::SO_SNDBUF, SEND_BUFFER)
        {
            tracing::debug!(%error, "could not enlarge the send buffer");
        }
        let per_msg = if !gso {
            1
        } else if let Err(error) = set_int_option(
            &socket,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            HEARTBEAT_LEN as libc::c_int,
        ) {
            tracing::info!(%error, "no UDP GSO, sending one datagram per message");
            1
        } else {
            GSO_SEGMENTS
        };

        let (addrs, addr_lens) = targets.iter().map(sockaddr).unzip();
        let mut sender = Sender {
            socket,
            targets: targets.len(),
            per_msg,
            bufs: vec![template.encode(); capacity],
            iovecs: Vec::with_capacity(capacity),
            addrs,
            addr_lens,
            msgs: Vec::with_capacity(capacity * targets.len()),
            len: 0,
            key: None,
            sent: 0,
            send_errors: 0,
            unsent: 0,
        };
        sender.build();
        Ok(sender)
    }

    /// (Re)builds the iovecs and messages for `per_msg`, within the
    /// vectors' capacity (so they never move).
    fn build(&mut self) {
        let chunks = self.bufs.len().div_ceil(self.per_msg);
        self.iovecs.clear();
        self.msgs.clear();
        for chunk in 0..chunks {
            self.iovecs.push(libc::iovec {
                // SAFETY: `chunk * per_msg < bufs.len()`.
                iov_base: unsafe { self.bufs.as_mut_ptr().add(chunk * self.per_msg) }.cast(),
                iov_len: HEARTBEAT_LEN,
            });
        }
        let connected = self.targets == 1;
        for chunk in 0..chunks {
            for (target, &addr_len) in self.addr_lens.iter().enumerate() {
                // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
                let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
                // SAFETY: `chunk < iovecs.len()`.
                msg.msg_hdr.msg_iov = unsafe { self.iovecs.as_mut_ptr().add(chunk) };
                msg.msg_hdr.msg_iovlen = 1;
                if !connected {
                    // SAFETY: `target < addrs.len()`.
                    msg.msg_hdr.msg_name = unsafe { self.addrs.as_mut_ptr().add(target) }.cast();
                    msg.msg_hdr.msg_namelen = addr_len;
                }
                self.msgs.push(msg);
            }
        }
    }

    /// Signs every heartbeat sent from now on with `key` (`None`: leaves
    /// them unauthenticated).
    fn signing_with(mut self, key: Option<&KeyFile>) -> Self {
        self.key = key.map(|key| (key.id, key.key));
        self
    }

    /// Whether messages carry several heartbeats (UDP GSO).
    fn gso(&self) -> bool {
        self.per_msg > 1
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Adds a heartbeat to the batch (which must not be full); returns its
    /// index in the batch.
    fn push(&mut self, node_id: u32, sequence: u64, flags: u8) -> usize {
        let index = self.len;
        assert!(index < self.bufs.len(), "batch overflow");
        self.patch(index, offset::NODE_ID, &node_id.to_be_bytes());
        self.patch(index, offset::SEQUENCE, &sequence.to_be_bytes());
        self.patch(index, offset::FLAGS, &[flags]);
        self.len += 1;
        index
    }

    /// Overwrites bytes of one buffer in place.
    fn patch(&mut self, index: usize, at: usize, bytes: &[u8]) {
        assert!(index < self.bufs.len() && at + bytes.len() <= HEARTBEAT_LEN);
        // SAFETY: in bounds (asserted); nothing else reads the buffers while
        // we write (the kernel only during sendmmsg); writing through the
        // Vec's raw pointer creates no reference that would invalidate the
        // iovecs' pointers.
        unsafe {
            ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.bufs.as_mut_ptr().add(index).cast::<u8>().add(at),
                bytes.len(),
            );
        }
    }

    /// Signs one complete heartbeat of the batch: on a copy on the stack,
    /// written back through [`Sender::patch`].
    fn sign(&mut self, index: usize, key_id: u8, key: &Key) {
        assert!(index < self.bufs.len());
        // SAFETY: in bounds (asserted); a read through the Vec's raw
        // pointer, as `patch` writes.
        let mut payload = unsafe { ptr::read(self.bufs.as_ptr().add(index)) };
        auth::sign(&mut payload, key_id, key);
        self.patch(index, 0, &payload);
    }

    /// Heartbeats `len` fill in `chunk`.
    fn segments(&self, chunk: usize, len: usize) -> usize {
        self.per_msg.min(len - chunk * self.per_msg)
    }

    /// Sets the iovec lengths for a batch of `len` heartbeats.
    fn size_chunks(&mut self, len: usize) {
        if !self.gso() {
            return;
        }
        for chunk in 0..len.div_ceil(self.per_msg) {
            let bytes = self.segments(chunk, len) * HEARTBEAT_LEN;
            // SAFETY: `chunk < iovecs.len()`; a write through the Vec's raw
            // pointer, as for the buffers.
            unsafe { (*self.iovecs.as_mut_ptr().add(chunk)).iov_len = bytes };
        }
    }

    /// Stamps and sends the batch, then empties it. When the kernel has no
    /// room (ENOBUFS, EAGAIN), retries the rest after a short pause until
    /// `give_up_at` (monotonic ns) or `stop`; other errors skip the message
    /// that failed. `accepted(heartbeats, at)` is called for every run of
    /// heartbeats (indices in the batch) a `sendmmsg` call accepted at least
    /// one datagram of, with the time that call started.
    fn flush(
        &mut self,
        give_up_at: u64,
        stop: Option<&AtomicBool>,
        mut accepted: impl FnMut(Range<usize>, u64),
    ) {
        let len = self.len;
        self.len = 0;
        let stamp = unix_ns().to_be_bytes();
        for index in 0..len {
            self.patch(index, offset::SENT_UNIX_NS, &stamp);
        }
        if let Some((key_id, key)) = self.key {
            for index in 0..len {
                self.sign(index, key_id, &key);
            }
        }
        self.size_chunks(len);
        let mut done = 0;
        loop {
            let total = len.div_ceil(self.per_msg) * self.targets;
            if done >= total {
                return;
            }
            let at = monotonic_ns();
            // SAFETY: `done < total <= msgs.len()`, so the pointer and count
            // cover initialised mmsghdrs whose iovecs, buffers and addresses
            // (owned by `self`) outlive the call.
            let rc = unsafe {
                libc::sendmmsg(
                    self.socket.as_raw_fd(),
                    self.msgs.as_mut_ptr().add(done),
                    (total - done) as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                let end = done + rc as usize;
                for msg in done..end {
                    self.sent += self.segments(msg / self.targets, len) as u64;
                }
                let first = done / self.targets * self.per_msg;
                let last = ((end - 1) / self.targets + 1) * self.per_msg;
                accepted(first..last.min(len), at);
                done = end;
                continue;
            }
            if rc == 0 {
                // Not expected with a non-empty vector; do not loop on it.
                self.give_up(done..total, len);
                return;
            }
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            self.send_errors += 1;
            if self.send_errors <= 5 || self.send_errors.is_multiple_of(1000) {
                tracing::warn!(%error, failures = self.send_errors, "sendmmsg failed");
            }
            match error.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN) => {
                    if at >= give_up_at || stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                        self.give_up(done..total, len);
                        return;
                    }
                    std::thread::sleep(RETRY_PAUSE);
                }
                // An earlier datagram's ICMP error, reported (and cleared) on
                // this call: the message was not sent; try it again.
                Some(libc::ECONNREFUSED) if at < give_up_at => {}
                // The route cannot do GSO (IPsec, say): send the failed chunk
                // and the rest one datagram per message from now on (with
                // several targets, ones that had the chunk get it twice).
                Some(libc::EIO | libc::EINVAL) if self.gso() => {
                    tracing::warn!(%error, "UDP GSO failed, sending one datagram per message");
                    if let Err(error) =
                        set_int_option(&self.socket, libc::SOL_UDP, libc::UDP_SEGMENT, 0)
                    {
                        tracing::warn!(%error, "could not turn UDP GSO off");
                    }
                    done = done / self.targets * self.per_msg * self.targets;
                    self.per_msg = 1;
                    self.build();
                }
                _ => {
                    self.give_up(done..done + 1, len);
                    done += 1;
                }
            }
        }
    }

    /// Counts the datagrams of `msgs` (of a batch of `len`) as unsent.
    fn give_up(&mut self, msgs: Range<usize>, len: usize) {
        for msg in msgs {
            self.unsent += self.segments(msg / self.targets, len) as u64;
        }
    }
}

fn set_int_option(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads a c_int from a valid pointer of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(addr) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: addr.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(addr.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger and at least as aligned.
            unsafe { ptr::write((&raw mut storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(addr) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: addr.port().to_be(),
                sin6_flowinfo: addr.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: addr.ip().octets(),
                },
                sin6_scope_id: addr.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger and at least as aligned.
            unsafe { ptr::write((&raw mut storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Sleeps until `deadline` (monotonic ns), spinning for the last
/// [`SPIN_NS`]. Returns false, early, if `stop` is set.
fn wait_until(deadline: u64, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = monotonic_ns();
        if now >= deadline {
            return true;
        }
        let left = deadline - now;
        if left > SPIN_NS {
            std::thread::sleep(Duration::from_nanos(left - SPIN_NS).min(MAX_SLEEP));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Sets this thread's timer slack to 1 ns (so sleeps end on time) and
/// restores the previous value on drop.
struct TimerSlack(libc::c_int);

impl TimerSlack {
    fn precise() -> Self {
        // SAFETY: PR_GET_TIMERSLACK and PR_SET_TIMERSLACK take no pointers
        // and only affect the calling thread.
        unsafe {
            let previous = libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0);
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
            TimerSlack(previous)
        }
    }
}

impl Drop for TimerSlack {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: as in `precise`.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, self.0 as libc::c_ulong, 0, 0, 0) };
        }
    }
}

/// A probability in percent, rounded to 10^-9 so that the CLI's percentage
/// comes back as given (7, not 7.000000000000001).
fn percent(fraction: f64) -> f64 {
    (fraction * 1e11).round() / 1e9
}

/// The next number of a SplitMix64 stream.
fn next_random(state: &mut u64) -> u64 {
    let out = splitmix64(*state);
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    out
}

/// A draw from the exponential distribution of mean `mean_ns`.
fn exponential_ns(state: &mut u64, mean_ns: f64) -> u64 {
    // Uniform in (0, 1], so never ln(0).
    let uniform = ((next_random(state) >> 11) + 1) as f64 / (1u64 << 53) as f64;
    (-uniform.ln() * mean_ns) as u64
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, HashSet},
        time::Instant,
    };

    use super::*;

    /// A UDP socket standing in for the monitor: a large receive buffer, so
    /// nothing is dropped, drained without blocking after the run.
    struct Monitor(UdpSocket);

    impl Monitor {
        fn bind() -> Self {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            // Beyond rmem_max needs root (SO_RCVBUFFORCE).
            set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20)
                .or_else(|_| set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF, 64 << 20))
                .unwrap();
            socket.set_nonblocking(true).unwrap();
            Monitor(socket)
        }

        fn addr(&self) -> SocketAddr {
            self.0.local_addr().unwrap()
        }

        /// Everything received, until nothing more arrives for 100 ms.
        fn drain(&self) -> Vec<Heartbeat> {
            self.drain_payloads()
                .iter()
                .map(|payload| Heartbeat::decode(payload).expect("a valid heartbeat"))
                .collect()
        }

        /// Every payload received, until nothing more arrives for 100 ms.
        fn drain_payloads(&self) -> Vec<[u8; HEARTBEAT_LEN]> {
            let mut out = Vec::new();
            let mut buf = [0u8; 128];
            let mut idle_since = Instant::now();
            loop {
                match self.0.recv(&mut buf) {
                    Ok(n) => {
                        out.push(buf[..n].try_into().expect("a heartbeat-sized datagram"));
                        idle_since = Instant::now();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if idle_since.elapsed() > Duration::from_millis(100) {
                            return out;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("receiving: {e}"),
                }
            }
        }
    }

    /// Sequences received per node id, in arrival order (leaves excluded).
    fn sequences(heartbeats: &[Heartbeat]) -> BTreeMap<u32, Vec<u64>> {
        let mut by_node: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for hb in heartbeats.iter().filter(|hb| !hb.is_leave()) {
            by_node.entry(hb.node_id).or_default().push(hb.sequence);
        }
        by_node
    }

    fn options(monitor: &Monitor, nodes: u32, interval_ms: u64) -> LoadgenOptions {
        LoadgenOptions::new(
            nodes,
            vec![monitor.addr()],
            Pace::Interval(Duration::from_millis(interval_ms)),
        )
    }

    fn run_to_end(options: &LoadgenOptions) -> Report {
        generate(options, &AtomicBool::new(false)).expect("the run succeeds")
    }

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

    /// With SO_NO_CHECK the kernel refuses GSO (EINVAL): the sender falls
    /// back to a datagram per message and still delivers the whole batch.
    #[test]
    fn falls_back_when_gso_fails() {
        let monitor = Monitor::bind();
        let template = Heartbeat {
            flags: 0,
            key_id: 0,
            node_id: 0,
            interval_ms: 1000,
            incarnation: 1,
            sequence: 0,
            sent_unix_ns: 0,
            auth_tag: [0; 16],
        };
        let mut sender = Sender::open(&[monitor.addr()], 100, &template, true).unwrap();
        assert!(sender.gso());
        set_int_option(&sender.socket, libc::SOL_SOCKET, libc::SO_NO_CHECK, 1).unwrap();
        for node in 0..100 {
            sender.push(node, 1, 0);
        }
        let mut accepted = Vec::new();
        sender.flush(u64::MAX, None, |heartbeats, _| accepted.push(heartbeats));
        assert!(!sender.gso());
        assert_eq!(
            (sender.sent, sender.unsent, sender.send_errors),
            (100, 0, 1)
        );
        let covered: HashSet<usize> = accepted.into_iter().flatten().collect();
        assert_eq!(covered, (0..100).collect());
        let received = monitor.drain();
        let ids: HashSet<u32> = received.iter().map(|hb| hb.node_id).collect();
        assert_eq!((received.len(), ids.len()), (100, 100));
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
    fn report_has_the_documented_fields() {
        let report = Report {
            nodes: 2,
            first_id: 1,
            targets: vec!["127.0.0.1:7979".parse().unwrap()],
            interval_ns: 1_000_000_000,
            rate: 2.0,
            achieved_rate: 2.0,
            incarnation: 5,
            heartbeats: 4,
            sent: 4,
            send_errors: 0,
            unsent: 0,
            leaves_sent: 0,
            started_mono_ns: 10,
            ended_mono_ns: 2_000_000_010,
            stop_mono_ns: Some(1_000_000_010),
            max_lag_ns: 3,
            late_batches: 0,
            interrupted: false,
            gso: true,
            key_id: 0,
            stopped: vec![StoppedNode {
                id: 2,
                last_sent_mono_ns: Some(500),
            }],
            faults: FaultReport {
                loss_percent: 5.0,
                burst_loss_percent: 1.0,
                pause_every_ns: Some(10_000_000_000),
                pause_for_ns: Some(500_000_000),
                lost_random: 1,
                lost_in_bursts: 2,
                bursts: 1,
                pauses: 3,
                paused_ns: 1_500_000_000,
            },
        };
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        for key in [
            "nodes",
            "first_id",
            "interval_ns",
            "rate",
            "sent",
            "send_errors",
            "started_mono_ns",
            "ended_mono_ns",
            "max_lag_ns",
            "stopped",
        ] {
            assert!(json.get(key).is_some(), "no {key}");
        }
        assert_eq!(
            json["stopped"],
            serde_json::json!([{"id": 2, "last_sent_mono_ns": 500}])
        );
        let dir = std::env::temp_dir().join(format!("hb-loadgen-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.json");
        report.write(&path).unwrap();
        let back: Report = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, report);
        fs::remove_dir_all(&dir).unwrap();
        let summary = report.summary();
        assert!(summary.contains("stopped   1 nodes"), "{summary}");
        assert!(
            summary.contains("sent      4 heartbeats (3 of them lost on purpose), 4 datagrams"),
            "{summary}"
        );
        assert!(
            summary.contains(
                "lost      3 heartbeats (75.00%): 1 at random (--loss 5%), 2 in 1 bursts \
                 (--burst-loss 1%)"
            ),
            "{summary}"
        );
        assert!(
            summary.contains(
                "paused    3 pauses of 500ms (one per 10s per node on average), 1.500 s in all"
            ),
            "{summary}"
        );

        assert_eq!(
            json["faults"],
            serde_json::json!({
                "loss_percent": 5.0, "burst_loss_percent": 1.0,
                "pause_every_ns": 10_000_000_000u64, "pause_for_ns": 500_000_000,
                "lost_random": 1, "lost_in_bursts": 2, "bursts": 1,
                "pauses": 3, "paused_ns": 1_500_000_000,
            })
        );
        // The CLI's percentages come back as given.
        assert_eq!(
            (percent(0.07), percent(0.29), percent(1.0)),
            (7.0, 29.0, 100.0)
        );
        // A report without faults (or from before them) reads as none.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("faults");
        let old: Report = serde_json::from_value(old).unwrap();
        assert_eq!(old.faults, FaultReport::default());
        assert!(!old.summary().contains("lost"));
        assert!(!old.summary().contains("paused"));
    }

    /// A fleet at `interval` for `duration`, with no faults yet.
    fn fleet(nodes: u32, interval: Duration, duration: Duration) -> LoadgenOptions {
        LoadgenOptions {
            duration: Some(duration),
            ..LoadgenOptions::new(
                nodes,
                vec!["127.0.0.1:9".parse().unwrap()],
                Pace::Interval(interval),
            )
        }
    }

    /// Every heartbeat the schedule produces (sent or lost), in order, and
    /// the faults it counted: the run without the clock or the network.
    fn simulate(options: &LoadgenOptions) -> (Vec<Beat>, FaultReport) {
        let plan = Plan::new(options).unwrap();
        let mut schedule = Schedule::new(&plan);
        let mut beats = Vec::new();
        while let Some(due) = schedule.next_due() {
            assert_eq!(schedule.next_due(), Some(due), "next_due is idempotent");
            let beat = schedule.take();
            assert_eq!(beat.due, due);
            beats.push(beat);
        }
        assert!(
            beats.windows(2).all(|w| w[0].due <= w[1].due),
            "heartbeats come in the order they are due"
        );
        (beats, schedule.faults_seen)
    }

    /// Each node's heartbeats, in order.
    fn per_node(beats: &[Beat]) -> BTreeMap<u32, Vec<Beat>> {
        let mut by_node: BTreeMap<u32, Vec<Beat>> = BTreeMap::new();
        for beat in beats {
            by_node.entry(beat.slot).or_default().push(*beat);
        }
        by_node
    }

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
            "--pause-every must be between 1ms and 1h",
        );
        refused(
            pauses(Some(3_600_001), Some(500)),
            "--pause-every must be between 1ms and 1h",
        );
        for ok in [
            LoadgenOptions {
                loss: 1.0,
                burst_loss: 1.0,
                ..base.clone()
            },
            pauses(Some(2), Some(1)),
            pauses(Some(3_600_000), Some(3_599_999)),
        ] {
            assert!(Plan::new(&ok).is_ok(), "{ok:?}");
        }
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
}
