//! The two clocks hb reads. `CLOCK_MONOTONIC` is the one liveness is
//! measured with: it is what the XDP program's `bpf_ktime_get_ns()` returns,
//! so arrival times in the node table and "now" in the agent compare
//! directly. The wall clock only stamps things for people (heartbeats'
//! informative timestamps, incarnations, the event log).

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` (Unix time) in nanoseconds.
pub fn unix_ns() -> u64 {
    read(libc::CLOCK_REALTIME)
}

fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec; both clocks
    // always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_moves_forward_and_unix_time_is_recent() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a);
        assert!(unix_ns() > 1_700_000_000_000_000_000, "after November 2023");
    }
}
