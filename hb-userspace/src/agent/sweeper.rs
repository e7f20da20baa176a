//! The sweep thread, `hb-sweep`: it owns the sweeping, and nothing else.
//!
//! It sleeps until the earliest instant a node may change state with no
//! new heartbeat (the last sweep's [`SweepOutcome::next_look_ns`]: an up
//! node's suspect deadline, a suspect node's timeout), and at most
//! `sweep_period` (so that heartbeats of nodes coming back, first
//! heartbeats and leaves are seen within a period), with an absolute-time
//! sleep on `CLOCK_MONOTONIC` ([`sys::sleep_until`]). Then it sweeps, and
//! hands the outcome to the agent's loop only when there is something for
//! the sinks ([`worth_telling`]): transitions, actions, brake news, a stall.
//! A wake-up that finds nothing makes no syscall but the sleep, sends
//! nothing and allocates nothing; the per-sweep metrics are atomics, and
//! readiness (sweeps so far, the last one's time) too.
//!
//! The detector and the brake ([`Core`]) are shared with the agent's loop
//! (queries, reloads, the log, the state snapshot) behind a mutex with
//! priority inheritance ([`PiMutex`]), and the
//! datapath (whose node table the sweep reads) behind a read-write lock
//! that only installing keys takes for writing. Lock order: the core, then
//! the datapath. The agent keeps its holds short ([`Shared::with`] logs any
//! over a millisecond at debug level).
//!
//! Outcomes reach the agent in sweep order through one channel. The agent
//! stops the thread by setting a flag and waking it (it exits at once, or
//! after the sweep in progress), and joins it before the final save. If the
//! thread panics, the channel closes: the agent logs the panic and exits
//! non-zero.

use std::{
    io,
    sync::{
        Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::{
    clock::monotonic_ns,
    datapath::Datapath,
    detect::sweep::{Sweep, SweepOutcome},
    sinks::metrics::Metrics,
    sys::{self, PiMutex, Woken},
};

/// The thread's name, as `ps -L` and `top -H` show it.
pub const THREAD_NAME: &str = "hb-sweep";
/// An agent-side hold of the sweep's lock longer than this is logged (at
/// debug level), with what it was for.
const LONG_HOLD: Duration = Duration::from_millis(1);

/// What the sweep thread and the agent's loop share.
pub struct Shared {
    /// With priority inheritance: see [`PiMutex`].
    core: PiMutex<Core>,
    datapath: RwLock<Datapath>,
    /// `defaults.sweep_period`, ns: the longest the thread sleeps.
    period_ns: AtomicU64,
    /// The futex word the thread sleeps on: bumped to wake it.
    wake: AtomicU32,
    stop: AtomicBool,
    /// Sweeps so far, and when the last one ran (monotonic ns): readiness.
    sweeps: AtomicU64,
    last_sweep_ns: AtomicU64,
    metrics: Arc<Metrics>,
    /// The longest agent-side hold of the core's lock so far, ns.
    longest_hold_ns: AtomicU64,
    /// Tests: the thread's kernel id, and a panic on demand.
    #[cfg(test)]
    pub(super) tid: std::sync::atomic::AtomicI32,
    #[cfg(test)]
    pub(super) panic_at_next_sweep: AtomicBool,
}

/// What the lock guards: the detector and the brake, and how many outcomes
/// the thread has sent to the agent.
pub struct Core {
    pub sweep: Sweep,
    /// Outcomes sent so far: when the agent has consumed as many, every
    /// change the detector and the brake reflect is journaled, and a
    /// snapshot of them agrees with the journal.
    pub told: u64,
}

impl Shared {
    pub fn new(
        sweep: Sweep,
        datapath: Datapath,
        period: Duration,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        Ok(Shared {
            core: PiMutex::new(Core { sweep, told: 0 })?,
            datapath: RwLock::new(datapath),
            period_ns: AtomicU64::new(duration_ns(period)),
            wake: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            sweeps: AtomicU64::new(0),
            last_sweep_ns: AtomicU64::new(0),
            metrics,
            longest_hold_ns: AtomicU64::new(0),
            #[cfg(test)]
            tid: std::sync::atomic::AtomicI32::new(0),
            #[cfg(test)]
            panic_at_next_sweep: AtomicBool::new(false),
        })
    }

    /// Runs `f` with the core and the datapath, holding the core's lock:
    /// the agent's way in. `what` names the hold in the debug log of holds
    /// over a millisecond.
    pub fn with<R>(&self, what: &'static str, f: impl FnOnce(&mut Core, &Datapath) -> R) -> R {
        let mut core = self.core.lock();
        let started = Instant::now();
        let result = f(&mut core, &self.datapath());
        let held = started.elapsed();
        drop(core);
        let held_ns = duration_ns(held);
        self.longest_hold_ns.fetch_max(held_ns, Ordering::Relaxed);
        if held >= LONG_HOLD {
            tracing::debug!(
                what,
                held_us = held_ns / 1_000,
                "the agent held the sweep's lock"
            );
        }
        result
    }

    /// The datapath, for what does not need the detector (counters, the
    /// interfaces, the table's records).
    pub fn datapath(&self) -> RwLockReadGuard<'_, Datapath> {
        self.datapath.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The datapath to change (install keys, stop): waits for a sweep in
    /// progress.
    pub fn datapath_mut(&self) -> RwLockWriteGuard<'_, Datapath> {
        self.datapath
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A new `sweep_period`, used from the next sleep on.
    pub fn set_period(&self, period: Duration) {
        self.period_ns.store(duration_ns(period), Ordering::Relaxed);
    }

    /// Sweeps so far, and when the last one started (monotonic ns).
    pub fn readiness(&self) -> (u64, u64) {
        (
            self.sweeps.load(Ordering::Acquire),
            self.last_sweep_ns.load(Ordering::Relaxed),
        )
    }

    /// The longest hold of the sweep's lock by the agent so far.
    pub fn longest_hold(&self) -> Duration {
        Duration::from_nanos(self.longest_hold_ns.load(Ordering::Relaxed))
    }

    /// Ends the thread's sleep: it sweeps now (or stops, if told to).
    pub(super) fn wake(&self) {
        self.wake.fetch_add(1, Ordering::Release);
        sys::wake(&self.wake);
    }
}

/// The running thread, stopped and joined when dropped (or by [`stop`](Self::stop)).
pub struct SweepThread {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

/// What the sweep thread can fail at when it starts, each naming the
/// setting and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SweepThreadError {
    #[error("starting the sweep thread: {cause}")]
    Spawn { cause: io::Error },
    #[error(
        "`defaults.sweep_priority` = {priority}: the sweep thread may not use real-time \
         scheduling (SCHED_FIFO: {cause}): run the agent as root or with CAP_SYS_NICE, or allow \
         the priority with RLIMIT_RTPRIO (LimitRTPRIO={priority} in the systemd unit); with \
         cgroup v1 real-time group scheduling, give the agent's cgroup a real-time budget \
         (cpu.rt_runtime_us); or remove sweep_priority for normal scheduling"
    )]
    Priority { priority: u8, cause: io::Error },
    #[error(
        "`defaults.lock_memory`: locking the agent's memory failed (mlockall: {cause}): run the \
         agent as root or with CAP_IPC_LOCK, or raise RLIMIT_MEMLOCK above the agent's size \
         (LimitMEMLOCK=infinity in the systemd unit); or set lock_memory = false"
    )]
    LockMemory { cause: io::Error },
}

/// Locks the agent's memory (`defaults.lock_memory`): done once at start,
/// before the sweep thread starts (its stack is locked too).
pub fn lock_memory() -> Result<(), SweepThreadError> {
    sys::lock_all_memory().map_err(|cause| SweepThreadError::LockMemory { cause })
}

impl SweepThread {
    /// Starts the thread, at `priority` (`SCHED_FIFO`) if given; it sweeps
    /// at once, then as the module says, sending what is worth telling to
    /// `outcomes`.
    pub fn start(
        shared: &Arc<Shared>,
        outcomes: mpsc::UnboundedSender<SweepOutcome>,
        priority: Option<u8>,
    ) -> Result<Self, SweepThreadError> {
        let for_thread = Arc::clone(shared);
        let handle = std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || sweep_loop(&for_thread, &outcomes))
            .map_err(|cause| SweepThreadError::Spawn { cause })?;
        let thread = SweepThread {
            shared: Arc::clone(shared),
            handle: Some(handle),
        };
        if let Some(priority) = priority {
            sys::set_fifo_priority(thread.pthread(), priority)
                .map_err(|cause| SweepThreadError::Priority { priority, cause })?;
            tracing::info!(priority, "the sweep thread runs at SCHED_FIFO priority");
        }
        Ok(thread)
    }

    /// The thread's pthread handle (while it runs).
    pub fn pthread(&self) -> libc::pthread_t {
        use std::os::unix::thread::JoinHandleExt;
        self.handle
            .as_ref()
            .map_or(0, |handle| handle.as_pthread_t())
    }

    /// Sweeps now rather than at the planned wake-up (after a reload).
    pub fn wake(&self) {
        self.shared.wake();
    }

    /// Stops the thread and waits for it: at once if it sleeps, after the
    /// sweep in progress otherwise. `Err` with the panic's message if it
    /// panicked.
    pub async fn stop(&mut self) -> Result<(), String> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        let joined = tokio::task::spawn_blocking(move || handle.join())
            .await
            .map_err(|e| format!("waiting for the sweep thread: {e}"))?;
        joined.map_err(|panic| panic_message(&*panic))
    }
}

impl Drop for SweepThread {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.shared.stop.store(true, Ordering::Release);
            self.shared.wake();
            let _ = handle.join();
        }
    }
}

/// The thread's body: sleep, sweep, tell, until told to stop (or the agent
/// is gone).
fn sweep_loop(shared: &Shared, outcomes: &mpsc::UnboundedSender<SweepOutcome>) {
    #[cfg(test)]
    // SAFETY: gettid has no preconditions.
    shared
        .tid
        .store(unsafe { libc::gettid() }, Ordering::Release);
    // A deadline is kept to the microsecond, not to the default 50 µs of
    // slack a normal thread's timed sleep gets (a real-time one has none).
    if let Err(e) = sys::set_timer_slack_ns(1) {
        tracing::warn!("the sweep thread keeps the default timer slack: {e}");
    }
    let mut wake_at = 0;
    loop {
        let seen = shared.wake.load(Ordering::Acquire);
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let woken = match sys::sleep_until(&shared.wake, seen, wake_at) {
            Ok(woken) => woken,
            Err(e) => panic!("the sweep thread cannot sleep (futex): {e}"),
        };
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let now = monotonic_ns();
        if woken == Woken::Deadline && wake_at != 0 {
            shared
                .metrics
                .record_wake_lateness(now.saturating_sub(wake_at));
        }
        #[cfg(test)]
        if shared.panic_at_next_sweep.load(Ordering::Acquire) {
            let _core = shared.core.lock();
            panic!("a panic on demand (test)");
        }
        let (outcome, tell) = {
            let mut core = shared.core.lock();
            let datapath = shared.datapath();
            let outcome = core.sweep.run(now, datapath.table());
            let tell = worth_telling(&outcome);
            core.told += u64::from(tell);
            (outcome, tell)
        };
        shared.sweeps.fetch_add(1, Ordering::Release);
        shared.last_sweep_ns.store(now, Ordering::Relaxed);
        shared.metrics.record_sweep(&outcome);
        let period_ns = shared.period_ns.load(Ordering::Relaxed);
        wake_at = next_wake(now, outcome.next_look_ns, period_ns);
        if tell && outcomes.send(outcome).is_err() {
            return;
        }
    }
}

/// When to sweep next after a sweep at `now`: the first instant a node may
/// change state (`next_look_ns`, just past a deadline: deadlines are
/// exceeded, not reached), and at most a period later.
pub fn next_wake(now: u64, next_look_ns: u64, period_ns: u64) -> u64 {
    next_look_ns.min(now.saturating_add(period_ns))
}

/// Whether a sweep's outcome has anything for the sinks: a transition or an
/// action (the journal, the event log and stream, the actions, the log), a
/// stall or brake news (the log).
pub fn worth_telling(outcome: &SweepOutcome) -> bool {
    let brake = &outcome.brake;
    outcome.changed()
        || outcome.stalled_ns.is_some()
        || brake.partition_suspected
        || brake.partition_cleared.is_some()
        || brake.released > 0
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// What a panic said, if it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{
        brake::Clear,
        detector::{NodeState, Transition},
        sweep::BrakeNews,
    };

    const MS: u64 = 1_000_000;

    #[test]
    fn the_next_wake_is_the_next_look_within_a_period() {
        // A next look (already just past a deadline) within the period.
        assert_eq!(
            next_wake(1_000 * MS, 1_040 * MS + 1, 100 * MS),
            1_040 * MS + 1
        );
        // None within the period (or none at all): a period after the sweep.
        assert_eq!(next_wake(1_000 * MS, 1_500 * MS, 100 * MS), 1_100 * MS);
        assert_eq!(next_wake(1_000 * MS, u64::MAX, 100 * MS), 1_100 * MS);
        assert_eq!(next_wake(u64::MAX - 5, u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn only_outcomes_with_something_for_the_sinks_are_told() {
        let quiet = SweepOutcome {
            // Counted every sweep: not news.
            brake: BrakeNews {
                silent: 3,
                population: 10,
                ..BrakeNews::default()
            },
            next_look_ns: 5,
            ..SweepOutcome::default()
        };
        assert!(!worth_telling(&quiet));
        let transition = Transition {
            node_id: 1,
            from: NodeState::Up,
            to: NodeState::Suspect,
            since_last_heartbeat_ns: Some(1),
        };
        for told in [
            SweepOutcome {
                transitions: vec![transition],
                ..SweepOutcome::default()
            },
            SweepOutcome {
                stalled_ns: Some(5 * MS),
                ..SweepOutcome::default()
            },
            SweepOutcome {
                brake: BrakeNews {
                    partition_suspected: true,
                    ..BrakeNews::default()
                },
                ..SweepOutcome::default()
            },
            SweepOutcome {
                brake: BrakeNews {
                    partition_cleared: Some(Clear::Recovered),
                    ..BrakeNews::default()
                },
                ..SweepOutcome::default()
            },
        ] {
            assert!(worth_telling(&told), "{told:?}");
        }
    }
}
