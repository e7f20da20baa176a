//! Runs the configured actions when a node changes state: each matching
//! action is started in the background in its own process group, with the
//! `HB_*` environment documented in the README (a batch action: once per
//! sweep, its events as JSON lines on stdin), at most `max_concurrent` at a
//! time, its output logged line by line, and its whole process group killed
//! when it outlives its timeout. The events of one node reach each action in
//! the order they happened, one run at a time (see `lanes`).
//!
//! [`action`] says what an action is (the configuration builds those), this
//! file queues and counts the runs, `lanes` orders and coalesces them, and
//! `process` runs one (`webhook` posts one).

use std::{
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::{
    runtime::Handle,
    sync::{Notify, Semaphore},
};

pub use self::action::{ActionConfig, ActionEvent, ActionRun, Event};
use self::{
    lanes::{Lane, Lanes, Pushed},
    process::{Input, Outcome, run_action},
};
use super::metrics::{ActionMetrics, RunResult};

pub mod action;
pub mod haproxy;
mod lanes;
mod process;
pub mod webhook;

/// Counters since the runner was built. Every run that got a slot is
/// `started` and ends as exactly one of `succeeded`, `failed` (non-zero
/// exit, killed by a signal it was not sent by us, or could not be started)
/// or `timed_out`. A batch run counts as one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionStats {
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub timed_out: u64,
    /// Running now.
    pub running: u64,
    /// Dispatched, waiting for a free slot or for the same node's (or
    /// batch's) previous run of the action to end.
    pub queued: u64,
    /// Events never run because a newer event of the same node superseded
    /// them while they waited.
    #[serde(default)]
    pub coalesced: u64,
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    running: AtomicU64,
    queued: AtomicU64,
    coalesced: AtomicU64,
}

/// Where the runner records what it decided to run and what it starts, so
/// that a restarted agent neither repeats a run nor forgets one (the state
/// file's ledger).
pub trait RunLedger: Send + Sync {
    /// A run of `action` for `event` was queued (or superseded the one that
    /// waited).
    fn decided(&self, action: &str, event: &ActionEvent);
    /// A run of `action` for these (node, transition) pairs is about to
    /// start; recorded durably before it does. `false`: it must not start
    /// (the agent is shutting down and leaves it to the next one).
    fn starting(&self, action: &str, runs: &[(u32, u64)]) -> bool;
}

struct Inner {
    /// By index, the lanes' key. A reload replaces an action in its slot
    /// (same name), empties the slot of a removed one and appends new ones,
    /// so indices never move. Never held across an await.
    actions: RwLock<Vec<Option<Arc<ActionConfig>>>>,
    slots: Arc<Semaphore>,
    counters: Counters,
    /// Notified whenever a run leaves the queue or finishes.
    changed: Notify,
    /// Never held across an await.
    lanes: Mutex<Lanes>,
    ledger: OnceLock<Arc<dyn RunLedger>>,
}

impl Inner {
    /// The actions in force, with their indices.
    fn actions(&self) -> Vec<(usize, Arc<ActionConfig>)> {
        let actions = self.actions.read().unwrap_or_else(PoisonError::into_inner);
        actions
            .iter()
            .enumerate()
            .filter_map(|(index, action)| Some((index, Arc::clone(action.as_ref()?))))
            .collect()
    }

    /// The lanes; a panic elsewhere while holding them left them
    /// consistent (every change is a single map or vector operation).
    fn lanes(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

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
        let actions_len = actions.len();
        Self {
            inner: Arc::new(Inner {
                actions: RwLock::new(actions.into_iter().map(|a| Some(Arc::new(a))).collect()),
                slots: Arc::new(Semaphore::new(permits)),
                counters: Counters::default(),
                changed: Notify::new(),
                lanes: Mutex::new(Lanes::new(actions_len)),
                ledger: OnceLock::new(),
            }),
            metrics: None,
        }
    }

    /// Also records every finished run (result and wall time) into
    /// `metrics`, from this handle's dispatches on; declares each action's
    /// series so they read 0 before its first run.
    pub fn with_metrics(mut self, metrics: ActionMetrics) -> Self {
        for (_, action) in self.inner.actions() {
            metrics.declare(&action.name);
        }
        self.metrics = Some(metrics);
        self
    }

    /// Records every run decided and started in `ledger` (once; the clones
    /// share it).
    pub fn with_ledger(self, ledger: Arc<dyn RunLedger>) -> Self {
        if self.inner.ledger.set(ledger).is_err() {
            tracing::warn!("the action runner already has a ledger");
        }
        self
    }

    /// The actions after a reload, from the next dispatch on. An action
    /// that keeps its name keeps its lanes, so its per-node order holds
    /// across the reload; runs already started or waiting finish with the
    /// action as it was. Removed actions take no new event.
    pub fn set_actions(&self, new: Vec<ActionConfig>) {
        let mut actions = self
            .inner
            .actions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut new: Vec<Option<ActionConfig>> = new.into_iter().map(Some).collect();
        for slot in actions.iter_mut() {
            let name = slot.as_ref().map(|a| a.name.clone());
            let same = new
                .iter_mut()
                .find(|n| n.as_ref().is_some_and(|n| Some(&n.name) == name.as_ref()));
            *slot = same.and_then(Option::take).map(Arc::new);
        }
        actions.extend(new.into_iter().flatten().map(|a| Some(Arc::new(a))));
        self.inner.lanes().grow(actions.len());
        if let Some(metrics) = &self.metrics {
            for action in actions.iter().flatten() {
                metrics.declare(&action.name);
            }
        }
    }

    /// Runs every action subscribed to `event.event`, as a sweep of one
    /// event (see [`ActionRunner::dispatch_sweep`]).
    pub fn dispatch(&self, event: ActionEvent) {
        self.dispatch_sweep(vec![event]);
    }

    /// Hands one sweep's events (in the order they happened) to the actions
    /// subscribed to them and returns at once. A per-event action runs once
    /// per event; a batch action once with all its events of the sweep.
    /// Each action runs a node's events (a batch action: its batches) one
    /// at a time, in order; different nodes and actions run concurrently,
    /// at most `max_concurrent` processes in all. Must be called from
    /// within a tokio runtime; outside one, the events are logged as an
    /// error and dropped.
    pub fn dispatch_sweep(&self, events: Vec<ActionEvent>) {
        if events.is_empty() {
            return;
        }
        let runtime = match Handle::try_current() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(
                    events = events.len(),
                    first_event = %events[0].event,
                    first_node = %events[0].node_name,
                    "cannot run actions outside a tokio runtime: {e}"
                );
                return;
            }
        };
        let events: Vec<Arc<ActionEvent>> = events.into_iter().map(Arc::new).collect();
        for (index, action) in self.inner.actions() {
            let mine: Vec<&Arc<ActionEvent>> = events
                .iter()
                .filter(|e| action.on.contains(&e.event))
                .collect();
            self.queue(&runtime, (index, action), mine.into_iter());
        }
    }

    /// Runs `action` (by name) only, for `events`: the runs a previous
    /// agent decided and did not start. An action no longer configured is
    /// skipped with a warning.
    pub fn dispatch_to(&self, action: &str, events: Vec<ActionEvent>) {
        let Ok(runtime) = Handle::try_current() else {
            tracing::error!(action, "cannot run actions outside a tokio runtime");
            return;
        };
        let Some((index, config)) = self
            .inner
            .actions()
            .into_iter()
            .find(|(_, a)| a.name == action)
        else {
            tracing::warn!(
                action,
                runs = events.len(),
                "runs decided before the restart are dropped: the action is no longer configured"
            );
            return;
        };
        let events: Vec<Arc<ActionEvent>> = events.into_iter().map(Arc::new).collect();
        self.queue(&runtime, (index, config), events.iter());
    }

    /// Queues `events` for one action: a per-event action once per event, a
    /// batch action once with all of them; tells the ledger.
    fn queue<'e>(
        &self,
        runtime: &Handle,
        (index, action): (usize, Arc<ActionConfig>),
        mine: impl Iterator<Item = &'e Arc<ActionEvent>>,
    ) {
        let mine: Vec<&Arc<ActionEvent>> = mine.collect();
        if let Some(ledger) = self.inner.ledger.get() {
            for event in &mine {
                ledger.decided(&action.name, event);
            }
        }
        {
            if action.batch {
                let batch: Vec<Arc<ActionEvent>> = mine.into_iter().cloned().collect();
                if !batch.is_empty() {
                    self.queue_batch(runtime, (index, Arc::clone(&action)), batch);
                }
            } else {
                for event in mine {
                    self.queue_event(runtime, (index, Arc::clone(&action)), event);
                }
            }
        }
    }

    /// Puts `event` in its node's lane for the per-event action `index`,
    /// starting the lane's worker if the lane was empty.
    fn queue_event(
        &self,
        runtime: &Handle,
        (index, action): (usize, Arc<ActionConfig>),
        event: &Arc<ActionEvent>,
    ) {
        let start = {
            let mut lanes = self.inner.lanes();
            self.count_pushed(lanes.push_event(index, event))
        };
        if start {
            let inner = Arc::clone(&self.inner);
            let metrics = self.metrics.clone();
            let event = Arc::clone(event);
            runtime.spawn(async move {
                run_node_lane(&inner, metrics.as_ref(), (index, action), event).await;
            });
        }
    }

    /// Puts one sweep's `batch` in the lane of the batch action `index`,
    /// starting the lane's worker if the lane was empty.
    fn queue_batch(
        &self,
        runtime: &Handle,
        (index, action): (usize, Arc<ActionConfig>),
        batch: Vec<Arc<ActionEvent>>,
    ) {
        let start = {
            let mut lanes = self.inner.lanes();
            self.count_pushed(lanes.push_batch(index, &batch))
        };
        if start {
            let inner = Arc::clone(&self.inner);
            let metrics = self.metrics.clone();
            runtime.spawn(async move {
                run_batch_lane(&inner, metrics.as_ref(), (index, action), batch).await;
            });
        }
    }

    /// Counts what a push did; returns whether a worker must be started.
    /// Called with the lanes locked: a run must be counted as queued before
    /// a worker (on another thread) can take it and count it as leaving
    /// the queue.
    fn count_pushed(&self, pushed: Pushed) -> bool {
        let counters = &self.inner.counters;
        match pushed {
            Pushed::Start | Pushed::Waiting => {
                counters.queued.fetch_add(1, Ordering::SeqCst);
            }
            Pushed::Merged { superseded } => {
                counters.coalesced.fetch_add(superseded, Ordering::SeqCst);
            }
        }
        pushed == Pushed::Start
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
            coalesced: c.coalesced.load(Ordering::SeqCst),
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

/// Closes its lane if its worker ends early (cancelled at runtime
/// shutdown, or panicked), so the lane's waiting run is not counted as
/// queued forever and a later event starts a new worker.
struct LaneGuard<'a> {
    inner: &'a Inner,
    lane: Lane,
    /// Cleared when the worker closed the lane itself.
    armed: bool,
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        if self.armed && self.inner.lanes().abandon(self.lane) {
            self.inner.counters.queued.fetch_sub(1, Ordering::SeqCst);
            self.inner.changed.notify_waiters();
        }
    }
}

/// A node's lane for a per-event action: runs `first`, then whatever
/// waits in the lane, until it is empty.
async fn run_node_lane(
    inner: &Inner,
    metrics: Option<&ActionMetrics>,
    (index, action): (usize, Arc<ActionConfig>),
    first: Arc<ActionEvent>,
) {
    let action = &action;
    let node = first.node_id;
    let mut guard = LaneGuard {
        inner,
        lane: Lane::Node {
            action: index,
            node,
        },
        armed: true,
    };
    let mut event = first;
    loop {
        run_queued(inner, action, Input::Event(&event), metrics).await;
        let Some(next) = inner.lanes().next_event(index, node) else {
            guard.armed = false;
            return;
        };
        if next.superseded > 0 {
            tracing::info!(
                action = %action.name,
                node = %next.input.node_name,
                node_id = node,
                coalesced = next.superseded,
                "coalesced {} events of this node that waited behind its previous run: running only the newest ({})",
                next.superseded,
                next.input.event,
            );
        }
        event = next.input;
    }
}

/// A batch action's lane: runs `first`, then the batch waiting in the
/// lane, until it is empty.
async fn run_batch_lane(
    inner: &Inner,
    metrics: Option<&ActionMetrics>,
    (index, action): (usize, Arc<ActionConfig>),
    first: Vec<Arc<ActionEvent>>,
) {
    let action = &action;
    let mut guard = LaneGuard {
        inner,
        lane: Lane::Batch { action: index },
        armed: true,
    };
    let mut batch = first;
    loop {
        run_queued(inner, action, Input::Batch(&batch), metrics).await;
        let Some(next) = inner.lanes().next_batch(index) else {
            guard.armed = false;
            return;
        };
        if next.superseded > 0 {
            tracing::info!(
                action = %action.name,
                coalesced = next.superseded,
                "coalesced {} events that waited behind the previous batch: a newer event of the same node replaced each",
                next.superseded,
            );
        }
        batch = next.input;
    }
}

/// Waits for a slot, runs the action, counts the outcome (and records it in
/// `metrics`, with the run's wall time from its start, not its queueing).
async fn run_queued(
    inner: &Inner,
    action: &ActionConfig,
    input: Input<'_>,
    metrics: Option<&ActionMetrics>,
) {
    let queued = GaugeGuard {
        inner,
        gauge: &inner.counters.queued,
    };
    // The semaphore is never closed.
    let Ok(_slot) = inner.slots.acquire().await else {
        return;
    };
    if let Some(ledger) = inner.ledger.get() {
        let runs: Vec<(u32, u64)> = match input {
            Input::Event(event) => vec![(event.node_id, event.seq)],
            Input::Batch(batch) => batch.iter().map(|e| (e.node_id, e.seq)).collect(),
        };
        let (ledger, name) = (Arc::clone(ledger), action.name.clone());
        // A synced write: off the runtime's threads.
        let go = tokio::task::spawn_blocking(move || ledger.starting(&name, &runs)).await;
        if !go.unwrap_or(true) {
            tracing::info!(
                action = %action.name,
                "not started: the agent is shutting down (the next agent starts it)"
            );
            return;
        }
    }
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
    let (counter, result) = match run_action(action, input).await {
        Outcome::Succeeded => (&inner.counters.succeeded, RunResult::Succeeded),
        Outcome::Failed => (&inner.counters.failed, RunResult::Failed),
        Outcome::TimedOut => (&inner.counters.timed_out, RunResult::TimedOut),
    };
    // Recorded before the count, so a caller that saw the run counted (or
    // the runner idle) also finds it in the metrics.
    if let Some(metrics) = metrics {
        metrics.record(&action.name, result, start.elapsed());
    }
    counter.fetch_add(1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests;
