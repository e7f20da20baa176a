//! The node table: one [`NodeRecord`] per node id, in a `BPF_F_MMAPABLE`
//! array that the XDP program writes and the agent reads through a shared
//! memory mapping (no syscall per node).
//!
//! Ownership of the fields: the agent writes [`NodeRecord::slot_flags`] (and,
//! when it restores state after a restart, the whole record) *before* the
//! program is attached; from then on only the XDP program writes, and the
//! agent only reads. All times are `bpf_ktime_get_ns()`, i.e.
//! `CLOCK_MONOTONIC` nanoseconds of the monitoring host.

/// [`NodeRecord::slot_flags`]: the node id is configured; heartbeats for a
/// slot without it are counted as unknown and not recorded.
pub const SLOT_CONFIGURED: u8 = 1 << 0;

/// What the kernel knows about one node. 64 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeRecord {
    /// Monotonic arrival time (ns) of the last accepted heartbeat; 0 = never.
    pub last_seen_ns: u64,
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
    /// Written by the agent: [`SLOT_CONFIGURED`].
    pub slot_flags: u8,
}

const _: () = assert!(core::mem::size_of::<NodeRecord>() == 64);

impl NodeRecord {
    /// Whether the agent marked this slot as a configured node.
    pub const fn is_configured(&self) -> bool {
        self.slot_flags & SLOT_CONFIGURED != 0
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
