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
//!   when the pause ends, then on its usual schedule again. With
//!   `--report-pauses`, the report lists every pause with the node's last
//!   heartbeat before it and its first after it (the ground truth of a
//!   crash and a recovery, for the soak).
//!
//! Each node draws its faults from its own stream of the seed (the tools'
//! one seeded generator, [`crate::rng`]); the schedule decides every
//! heartbeat's fate before it is put in a batch, so lost heartbeats cost no
//! system call.
//!
//! The modules follow a run: [`options`] (what was asked), `plan` (the
//! options validated), `schedule` (every heartbeat in order, and its
//! fate), `batch` (the reusable batch and its `sendmmsg(2)`), `pacing`
//! (sleeping until due), [`generate`](mod@generate) (the sending thread) and [`report`].

mod batch;
pub mod generate;
pub mod options;
mod pacing;
mod pauses;
mod plan;
pub mod report;
mod schedule;
#[cfg(test)]
mod test_support;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use self::plan::Plan;
pub use self::{
    generate::generate,
    options::{LoadgenOptions, MAX_BATCH, MAX_COUNT, MAX_DURATION, MAX_NODES, Pace},
    pacing::SPIN_NS,
    report::{FaultReport, PauseWindow, Report, StoppedNode},
};

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
