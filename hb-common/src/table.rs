//! The node table: two arrays indexed by node id, both `BPF_F_MMAPABLE`, that
//! the XDP program writes and the agent reads through shared memory mappings
//! (no syscall per node), both sized at load time to `max_nodes`.
//!
//! - `HB_SEEN`, the *hot* array: one 8-byte [seen word](seen) per node, the
//!   only thing the agent's sweep reads on every pass. 8 MB per million
//!   nodes, read front to back.
//! - `HB_NODES`, the *cold* array: one 56-byte [`NodeRecord`] per node, read
//!   only when a node changes state or is shown by `hb status`.
//!
//! 64 bytes of kernel memory per node in all. Ownership: the agent writes
//! [`NodeRecord::slot_flags`] and, for a pinned node, `src_addr` (and, when it
//! restores state after a restart, the whole record) *before* the program is
//! attached; from then on only the XDP program writes. Times are `bpf_ktime_get_ns()`, i.e. `CLOCK_MONOTONIC`
//! nanoseconds of the monitoring host.

use crate::wire::RawHeartbeat;

/// [`NodeRecord::slot_flags`]: the node id is configured; heartbeats for a
/// slot without it are counted as unknown and not recorded.
pub const SLOT_CONFIGURED: u8 = 1 << 0;
/// [`NodeRecord::slot_flags`], set by the agent: the node's heartbeats must
/// come from [`NodeRecord::src_addr`] (which then holds the configured
/// address, not merely the last one seen).
pub const SLOT_PINNED: u8 = 1 << 1;
/// [`NodeRecord::slot_flags`], set by the datapath when it records an
/// authenticated heartbeat: from then on the node's unauthenticated
/// heartbeats are refused, so a node cannot be downgraded to forgeable
/// heartbeats, even where unauthenticated ones are accepted.
pub const SLOT_AUTHENTICATED: u8 = 1 << 2;

/// The seen word: when a node's last accepted heartbeat arrived, and whether
/// it was a graceful leave, in one `u64` the kernel writes with one store.
pub mod seen {
    /// Bit 0: the last accepted heartbeat carried the LEAVE flag.
    pub const LEAVE: u64 = 1;

    /// The word for a heartbeat that arrived at `arrival_ns`; the arrival
    /// time loses its lowest bit (1 ns) to the leave flag.
    #[inline(always)]
    pub const fn word(arrival_ns: u64, leave: bool) -> u64 {
        (arrival_ns & !LEAVE) | if leave { LEAVE } else { 0 }
    }

    /// Arrival time (ns) of the last accepted heartbeat; 0 = never heard.
    #[inline(always)]
    pub const fn arrival_ns(word: u64) -> u64 {
        word & !LEAVE
    }

    /// Whether the last accepted heartbeat was a graceful leave.
    #[inline(always)]
    pub const fn is_leave(word: u64) -> bool {
        word & LEAVE != 0
    }
}

/// What the kernel knows about one node besides its seen word. 56 bytes, no
/// padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeRecord {
    /// Incarnation of the last accepted heartbeat.
    pub incarnation: u64,
    /// Sequence number of the last accepted heartbeat.
    pub sequence: u64,
    /// Number of heartbeats accepted for this node.
    pub heartbeats: u64,
    /// The sender's own wall-clock timestamp from the last accepted heartbeat
    /// (Unix ns). Informative only: never used to decide liveness.
    pub sent_unix_ns: u64,
    /// Source address of the last accepted heartbeat: IPv6, or IPv4 mapped
    /// into IPv6 (`::ffff:a.b.c.d`). Network byte order.
    pub src_addr: [u8; 16],
    /// The sending interval the node advertised, in milliseconds.
    pub interval_ms: u32,
    /// Source UDP port of the last accepted heartbeat, host byte order.
    pub src_port: u16,
    /// [`crate::wire::flags`] of the last accepted heartbeat (e.g. LEAVE).
    pub heartbeat_flags: u8,
    /// [`SLOT_CONFIGURED`] and [`SLOT_PINNED`] (written by the agent),
    /// [`SLOT_AUTHENTICATED`] (written by the datapath).
    pub slot_flags: u8,
}

const _: () = assert!(core::mem::size_of::<NodeRecord>() == 56);
const _: () = assert!(core::mem::size_of::<NodeRecord>() + core::mem::size_of::<u64>() <= 64);

impl NodeRecord {
    /// Whether the agent marked this slot as a configured node.
    pub const fn is_configured(&self) -> bool {
        self.slot_flags & SLOT_CONFIGURED != 0
    }

    /// Whether the node's heartbeats must come from `src_addr`.
    pub const fn is_pinned(&self) -> bool {
        self.slot_flags & SLOT_PINNED != 0
    }

    /// Whether the node has sent an authenticated heartbeat.
    pub const fn is_authenticated(&self) -> bool {
        self.slot_flags & SLOT_AUTHENTICATED != 0
    }

    /// Records an admitted heartbeat (see [`crate::admission::admit`]) that
    /// came from `src_addr`, `src_port`. The caller then writes the seen word.
    #[inline(always)]
    pub fn record(
        &mut self,
        heartbeat: &RawHeartbeat,
        src_addr: &[u8; 16],
        src_port: u16,
        authenticated: bool,
    ) {
        self.incarnation = heartbeat.incarnation();
        self.sequence = heartbeat.sequence();
        self.sent_unix_ns = heartbeat.sent_unix_ns();
        self.src_addr = *src_addr;
        self.src_port = src_port;
        self.interval_ms = heartbeat.interval_ms();
        self.heartbeat_flags = heartbeat.flags;
        self.heartbeats += 1;
        if authenticated {
            self.slot_flags |= SLOT_AUTHENTICATED;
        }
    }

    /// Whether (incarnation, sequence) moves forward from this record: a new
    /// incarnation (sender restart) is accepted at once, otherwise the
    /// sequence must increase. A never-seen record accepts anything.
    pub const fn accepts(&self, incarnation: u64, sequence: u64) -> bool {
        self.heartbeats == 0
            || incarnation > self.incarnation
            || (incarnation == self.incarnation && sequence > self.sequence)
    }
}

#[cfg(feature = "user")]
// SAFETY: `NodeRecord` is `repr(C)`, has no padding (asserted above) and every
// bit pattern is a valid value.
unsafe impl aya::Pod for NodeRecord {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_word_keeps_time_and_leave_apart() {
        let w = seen::word(1_000_001, true);
        assert_eq!(seen::arrival_ns(w), 1_000_000);
        assert!(seen::is_leave(w));
        let w = seen::word(1_000_001, false);
        assert_eq!(seen::arrival_ns(w), 1_000_000);
        assert!(!seen::is_leave(w));
    }
}
