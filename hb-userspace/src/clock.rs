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

/// The kernel's boot id (`/proc/sys/kernel/random/boot_id`, a UUID): the
/// monotonic clock's values mean something only within one boot. All zero
/// if it cannot be read (every saved monotonic time is then treated as from
/// another boot).
pub fn boot_id() -> [u8; 16] {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|text| parse_uuid(text.trim()))
        .unwrap_or_default()
}

fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0; 16];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
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

    #[test]
    fn boot_id_is_read_and_stable() {
        assert_ne!(boot_id(), [0; 16]);
        assert_eq!(boot_id(), boot_id());
        assert_eq!(
            parse_uuid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
            Some([
                0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2,
                0xe1, 0xf0
            ])
        );
        assert_eq!(parse_uuid("nope"), None);
    }
}
