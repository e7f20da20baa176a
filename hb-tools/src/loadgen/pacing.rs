//! Keeping time on the sending thread: sleeping until a batch is due, then
//! spinning for the last stretch, with the timer slack at its finest.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use hb::clock::monotonic_ns;

/// The sender sleeps until this close to a batch's due time, then spins.
pub const SPIN_NS: u64 = 50_000;
/// Longest single sleep, so a signal is noticed quickly.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// Sleeps until `deadline` (monotonic ns), spinning for the last
/// [`SPIN_NS`]. Returns false, early, if `stop` is set.
pub(super) fn wait_until(deadline: u64, stop: &AtomicBool) -> bool {
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
pub(super) struct TimerSlack(libc::c_int);

impl TimerSlack {
    pub(super) fn precise() -> Self {
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
