//! Runs the configured actions when a node changes state: each matching
//! action is started in the background in its own process group, with the
//! `HB_*` environment documented in the README, at most `max_concurrent` at a
//! time, its output logged line by line, and its whole process group killed
//! when it outlives its timeout.
//!
//! [`action`] says what an action is (the configuration builds those), this
//! file queues and counts the runs, and `process` runs one.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

pub use self::action::{ActionConfig, ActionEvent, ActionRun, Event};
use self::process::{Outcome, run_action};
use super::metrics::{ActionMetrics, RunResult};

pub mod action;
mod process;

/// Counters since the runner was built. Every run that got a slot is
/// `started` and ends as exactly one of `succeeded`, `failed` (non-zero
/// exit, killed by a signal it was not sent by us, or could not be started)
/// or `timed_out`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionStats {
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub timed_out: u64,
    /// Running now.
    pub running: u64,
    /// Dispatched, waiting for a free slot.
    pub queued: u64,
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    running: AtomicU64,
    queued: AtomicU64,
}

struct Inner {
    actions: Vec<Arc<ActionConfig>>,
    slots: Arc<Semaphore>,
    counters: Counters,
    /// Notified whenever a run leaves the queue or finishes.
    changed: Notify,
}

impl Inner {
    fn is_idle(&self) -> bool {
        self.counters.queued.load(Ordering::SeqCst) == 0
            && self.counters.running.load(Ordering::SeqCst) == 0
    }
}

/// Decrements a gauge (`queued` or `running`) when dropped, so a run that
/// is cancelled (runtime shutdown) or panics is not counted forever.
struct GaugeGuard<'a> {
    inner: &'a Inner,
    gauge: &'a AtomicU64,
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.gauge.fetch_sub(1, Ordering::SeqCst);
        self.inner.changed.notify_waiters();
    }
}

/// Runs actions in the background; cheap to clone (clones share the queue,
/// the concurrency bound and the counters).
#[derive(Clone)]
pub struct ActionRunner {
    inner: Arc<Inner>,
    /// Where finished runs are also recorded for `/metrics`, if anywhere.
    metrics: Option<ActionMetrics>,
}

impl ActionRunner {
    /// `max_concurrent` bounds the number of actions running at once, across
    /// all actions (0 is treated as 1).
    pub fn new(actions: Vec<ActionConfig>, max_concurrent: usize) -> Self {
        let permits = max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::new(Inner {
                actions: actions.into_iter().map(Arc::new).collect(),
                slots: Arc::new(Semaphore::new(permits)),
                counters: Counters::default(),
                changed: Notify::new(),
            }),
            metrics: None,
        }
    }

    /// Also records every finished run (result and wall time) into
    /// `metrics`, from this handle's dispatches on; declares each action's
    /// series so they read 0 before its first run.
    pub fn with_metrics(mut self, metrics: ActionMetrics) -> Self {
        for action in &self.inner.actions {
            metrics.declare(&action.name);
        }
        self.metrics = Some(metrics);
        self
    }

    /// Starts every action subscribed to `event.event` in the background and
    /// returns at once; runs beyond the concurrency bound wait in a queue.
    /// Must be called from within a tokio runtime; outside one, the event
    /// is logged as an error and dropped.
    pub fn dispatch(&self, event: ActionEvent) {
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(
                    event = %event.event,
                    node = %event.node_name,
                    node_id = event.node_id,
                    "cannot run actions outside a tokio runtime: {e}"
                );
                return;
            }
        };
        let event = Arc::new(event);
        for action in &self.inner.actions {
            if !action.on.contains(&event.event) {
                continue;
            }
            self.inner.counters.queued.fetch_add(1, Ordering::SeqCst);
            let inner = Arc::clone(&self.inner);
            let action = Arc::clone(action);
            let event = Arc::clone(&event);
            let metrics = self.metrics.clone();
            runtime.spawn(async move { run_queued(&inner, &action, &event, metrics).await });
        }
    }

    pub fn stats(&self) -> ActionStats {
        let c = &self.inner.counters;
        ActionStats {
            started: c.started.load(Ordering::SeqCst),
            succeeded: c.succeeded.load(Ordering::SeqCst),
            failed: c.failed.load(Ordering::SeqCst),
            timed_out: c.timed_out.load(Ordering::SeqCst),
            running: c.running.load(Ordering::SeqCst),
            queued: c.queued.load(Ordering::SeqCst),
        }
    }

    /// Waits until no action is queued or running, or `limit` has passed.
    /// Returns whether the runner is idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now().checked_add(limit);
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            // Register before checking so a change in between is not missed.
            changed.as_mut().enable();
            if self.inner.is_idle() {
                return true;
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        return self.inner.is_idle();
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Waits for a slot, runs the action, counts the outcome (and records it in
/// `metrics`, with the run's wall time from its start, not its queueing).
async fn run_queued(
    inner: &Inner,
    action: &ActionConfig,
    event: &ActionEvent,
    metrics: Option<ActionMetrics>,
) {
    let queued = GaugeGuard {
        inner,
        gauge: &inner.counters.queued,
    };
    // The semaphore is never closed.
    let Ok(_slot) = inner.slots.acquire().await else {
        return;
    };
    // Count as running before leaving the queue, so `is_idle` never sees a
    // gap.
    inner.counters.running.fetch_add(1, Ordering::SeqCst);
    let _running = GaugeGuard {
        inner,
        gauge: &inner.counters.running,
    };
    drop(queued);
    inner.counters.started.fetch_add(1, Ordering::SeqCst);

    let start = Instant::now();
    let (counter, result) = match run_action(action, event).await {
        Outcome::Succeeded => (&inner.counters.succeeded, RunResult::Succeeded),
        Outcome::Failed => (&inner.counters.failed, RunResult::Failed),
        Outcome::TimedOut => (&inner.counters.timed_out, RunResult::TimedOut),
    };
    // Recorded before the count, so a caller that saw the run counted (or
    // the runner idle) also finds it in the metrics.
    if let Some(metrics) = &metrics {
        metrics.record(&action.name, result, start.elapsed());
    }
    counter.fetch_add(1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests;
