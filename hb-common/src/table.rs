//! The node table: two arrays indexed by node id, both `BPF_F_MMAPABLE`,
//! that the XDP program writes and the agent reads through shared memory
//! mappings (no syscall per node), both sized at load time to `max_nodes`.
//!
//! - `HB_SEEN`, the *hot* array: one 8-byte [seen word](seen) per node, the
//!   only thing the agent's sweep reads on every pass. 8 MB per million
//!   nodes, read front to back.
//! - `HB_NODES`, the *cold* array: one 64-byte [`NodeSlot`] per node (one
//!   cache line, one lookup for the datapath): the node's 56-byte
//!   [`NodeRecord`], read only when a node changes state or is shown by
//!   `hb status`, and its 8-byte [interval word](intervals), the measured
//!   time between its heartbeats.
//!
//! 72 bytes of kernel memory per node in all. Ownership: the agent writes
//! [`NodeRecord::slot_flags`] and, for a pinned node, `src_addr` (and, when it
//! restores state after a restart, the whole record) *before* the program is
//! attached; from then on only the XDP program writes. Times are `bpf_ktime_get_ns()`, i.e. `CLOCK_MONOTONIC`
//! nanoseconds of the monitoring host.

use core::net::{IpAddr, Ipv6Addr};

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
/// [`NodeRecord::slot_flags`], written by the datapath: the node's seen word
/// was last moved by a probe reply ([`crate::probe`]), not by a heartbeat.
/// Set when a probe reply is recorded, cleared when a heartbeat is: what
/// lets status say which source last refreshed a node that has both.
pub const SLOT_PROBED_LAST: u8 = 1 << 3;

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

/// The interval word ([`NodeSlot::interval`], one `u64` per node): a running
/// estimate of the time between a node's heartbeats, updated by the datapath
/// on every accepted heartbeat and read by the agent's phi-accrual detector
/// when the node's arrival time changes. The mean in the low half, the mean
/// absolute deviation in the high half, both in microseconds, written with
/// one store so the agent never sees one without the other.
///
/// A sample is the time since the node's previous accepted heartbeat divided
/// by how far its sequence number moved: lost heartbeats (a gap in the
/// sequence) are not mistaken for a long interval. There is no sample across
/// a sender restart (a new incarnation), from a node never heard before, or
/// over a gap of more than [`intervals::MAX_GAP`] sequence numbers (an outage
/// is not an interval). Both estimates are exponentially weighted moving
/// averages with weight 1/2^[`intervals::WEIGHT_SHIFT`], in integers (no
/// floating point in BPF).
pub mod intervals {
    /// A sample's weight in the averages: 1/16, about the last 16 to 30
    /// heartbeats.
    pub const WEIGHT_SHIFT: u32 = 4;
    /// Beyond this many sequence numbers between two accepted heartbeats,
    /// the time between them is an outage, not a sample.
    pub const MAX_GAP: u64 = 16;

    /// The word for a mean and a mean absolute deviation (µs).
    #[inline(always)]
    pub const fn word(mean_us: u32, mad_us: u32) -> u64 {
        mean_us as u64 | (mad_us as u64) << 32
    }

    /// Mean interval (µs); 0 = no sample yet.
    #[inline(always)]
    pub const fn mean_us(word: u64) -> u32 {
        word as u32
    }

    /// Mean absolute deviation of the interval (µs).
    #[inline(always)]
    pub const fn mad_us(word: u64) -> u32 {
        (word >> 32) as u32
    }

    /// The interval sample (µs) between a node's previous accepted heartbeat
    /// (`previous_arrival_ns`, 0 if never heard; `previous_sequence` of the
    /// same incarnation) and this one, if it is a sample at all.
    #[inline(always)]
    pub const fn sample_us(
        previous_arrival_ns: u64,
        arrival_ns: u64,
        previous_sequence: u64,
        sequence: u64,
        same_incarnation: bool,
    ) -> Option<u32> {
        if previous_arrival_ns == 0
            || !same_incarnation
            || sequence <= previous_sequence
            || arrival_ns < previous_arrival_ns
        {
            return None;
        }
        let elapsed_ns = arrival_ns - previous_arrival_ns;
        let us = ns_to_us(match sequence - previous_sequence {
            // No heartbeat lost (the usual case): no division.
            1 => elapsed_ns,
            gap @ 2..=MAX_GAP => elapsed_ns / gap,
            _ => return None,
        });
        Some(if us > u32::MAX as u64 {
            u32::MAX
        } else {
            us as u32
        })
    }

    /// `ns / 1000`, by a multiplication below 2^35 ns (34 s, every interval
    /// worth measuring): the BPF instruction set has no multiply-high, so the
    /// compiler cannot turn a division by a constant into one, and a 64-bit
    /// division is the slowest instruction of the XDP program's accepted
    /// path. `n / 125 == n * 0x1062_4DD3 >> 35` for every `n < 2^32`, and
    /// `ns / 1000 == (ns / 8) / 125`.
    #[inline(always)]
    pub const fn ns_to_us(ns: u64) -> u64 {
        if ns < 1 << 35 {
            ((ns >> 3) * 0x1062_4DD3) >> 35
        } else {
            ns / 1_000
        }
    }

    /// `word` updated with one sample. The first sample sets the mean and a
    /// deviation of a quarter of it (a cautious start: a normal spread of
    /// about 30% until the samples say otherwise).
    #[inline(always)]
    pub const fn update(word: u64, sample_us: u32) -> u64 {
        let mean = mean_us(word);
        if mean == 0 {
            return self::word(if sample_us == 0 { 1 } else { sample_us }, sample_us / 4);
        }
        let mean = ewma(mean, sample_us);
        let deviation = sample_us.abs_diff(mean);
        self::word(
            if mean == 0 { 1 } else { mean },
            ewma(mad_us(word), deviation),
        )
    }

    /// `average + (sample - average) / 2^WEIGHT_SHIFT`, in integers.
    #[inline(always)]
    const fn ewma(average: u32, sample: u32) -> u32 {
        let average = average as i64;
        let next = average + ((sample as i64 - average) >> WEIGHT_SHIFT);
        next as u32
    }
}

/// What the kernel knows about one node besides its seen and interval words
/// (it lies in a [`NodeSlot`], beside the interval word). 56 bytes, no
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
    /// [`SLOT_AUTHENTICATED`] and [`SLOT_PROBED_LAST`] (written by the
    /// datapath).
    pub slot_flags: u8,
}

/// One entry of `HB_NODES`: a node's record and its interval word, 64 bytes
/// (a cache line). The agent maps the two parts as two views of the same
/// memory (records with a stride of 64 bytes, interval words at offset 56),
/// so writing a record never touches the interval word and the reverse.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeSlot {
    pub record: NodeRecord,
    /// The node's [interval word](intervals).
    pub interval: u64,
}

const _: () = assert!(size_of::<NodeSlot>() == 64);
const _: () = assert!(core::mem::offset_of!(NodeSlot, interval) == size_of::<NodeRecord>());

#[cfg(feature = "user")]
// SAFETY: `NodeSlot` is `repr(C)`, has no padding (asserted above) and every
// bit pattern is a valid value.
unsafe impl aya::Pod for NodeSlot {}

/// The 16 bytes [`NodeRecord::src_addr`] holds for `addr`: IPv6 as is,
/// IPv4 mapped into IPv6 (`::ffff:a.b.c.d`).
pub fn src_octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address [`NodeRecord::src_addr`] holds: IPv4-mapped addresses back
/// as IPv4.
pub fn src_ip(octets: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(octets);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

const _: () = assert!(size_of::<NodeRecord>() == 56);

impl NodeRecord {
    /// Whether the agent marked this slot as a configured node.
    pub const fn is_configured(&self) -> bool {
        self.slot_flags & SLOT_CONFIGURED != 0
    }

    /// Whether the node's heartbeats must come from `src_addr`.
    pub const fn is_pinned(&self) -> bool {
        self.slot_flags & SLOT_PINNED != 0
    }

    /// Pins the node to `source` (its heartbeats count only from there), or
    /// unpins it; the agent's one way to set a pin.
    pub fn pin_to(&mut self, source: Option<IpAddr>) {
        match source {
            Some(source) => {
                self.src_addr = src_octets(source);
                self.slot_flags |= SLOT_PINNED;
            }
            None => self.slot_flags &= !SLOT_PINNED,
        }
    }

    /// Whether the node has sent an authenticated heartbeat.
    pub const fn is_authenticated(&self) -> bool {
        self.slot_flags & SLOT_AUTHENTICATED != 0
    }

    /// Whether the node's seen word was last moved by a probe reply rather
    /// than a heartbeat.
    pub const fn probed_last(&self) -> bool {
        self.slot_flags & SLOT_PROBED_LAST != 0
    }

    /// Records an admitted heartbeat (see [`crate::admission::admit`]) that
    /// came from `src_addr`, `src_port`, and clears [`SLOT_PROBED_LAST`].
    /// The caller then writes the seen word.
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
        let flags = self.slot_flags & !SLOT_PROBED_LAST;
        self.slot_flags = if authenticated {
            flags | SLOT_AUTHENTICATED
        } else {
            flags
        };
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
    #[test]
    fn source_addresses_round_trip_with_ipv4_mapped() {
        use core::net::Ipv4Addr;
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 7));
        assert_eq!(
            src_octets(v4),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 7]
        );
        assert_eq!(src_ip(src_octets(v4)), v4);
        let v6 = IpAddr::V6("fd00::7".parse().unwrap());
        assert_eq!(src_ip(src_octets(v6)), v6);
        let mut record = NodeRecord::default();
        record.pin_to(Some(v4));
        assert!(record.is_pinned());
        assert_eq!(src_ip(record.src_addr), v4);
        record.pin_to(None);
        assert!(!record.is_pinned());
    }

    use super::*;

    #[test]
    fn interval_samples_divide_by_the_sequence_gap() {
        use intervals::sample_us;
        const MS: u64 = 1_000_000;
        assert_eq!(sample_us(1_000 * MS, 1_100 * MS, 7, 8, true), Some(100_000));
        assert_eq!(
            sample_us(1_000 * MS, 1_300 * MS, 7, 10, true),
            Some(100_000),
            "two lost heartbeats are not a 300 ms interval"
        );
        assert_eq!(sample_us(0, 1_100 * MS, 7, 8, true), None, "never heard");
        assert_eq!(
            sample_us(1_000 * MS, 1_100 * MS, 7, 8, false),
            None,
            "restart"
        );
        assert_eq!(
            sample_us(1_000 * MS, 1_100 * MS, 8, 8, true),
            None,
            "duplicate"
        );
        assert_eq!(
            sample_us(1_000 * MS, 9_000 * MS, 7, 7 + intervals::MAX_GAP + 1, true),
            None,
            "an outage"
        );
        assert_eq!(sample_us(1_000 * MS, 999 * MS, 7, 8, true), None);
        assert_eq!(
            sample_us(1, u64::MAX, 0, 1, true),
            Some(u32::MAX),
            "saturates"
        );
    }

    #[test]
    fn ns_to_us_divides_by_1000() {
        use intervals::ns_to_us;
        let check = |ns: u64| assert_eq!(ns_to_us(ns), ns / 1_000, "{ns}");
        for ns in (0..3_000_000).chain((1 << 35) - 3_000_000..(1 << 35) + 3_000) {
            check(ns);
        }
        for shift in 0..64 {
            for delta in [0, 1, 999, 1_000, 1_001] {
                check((1u64 << shift).wrapping_sub(delta));
                check((1u64 << shift).wrapping_add(delta));
            }
        }
        // Every 8-aligned block boundary a multiplication could slip on:
        // n = ns / 8 near multiples of 125, over the whole range.
        let mut n: u64 = 1;
        while n < 1 << 32 {
            for ns in [n * 1_000 - 1, n * 1_000, n * 1_000 + 7] {
                check(ns);
            }
            n = n * 3 / 2 + 1;
        }
        check(u64::MAX);
    }

    #[test]
    fn interval_averages_converge_and_track_the_spread() {
        use intervals::{mad_us, mean_us, update};
        let mut word = 0;
        word = update(word, 100_000);
        assert_eq!((mean_us(word), mad_us(word)), (100_000, 25_000));
        // A steady sender: the mean stays, the deviation decays.
        for _ in 0..200 {
            word = update(word, 100_000);
        }
        assert_eq!(mean_us(word), 100_000);
        assert!(mad_us(word) < 100, "{}", mad_us(word));
        // Alternating 90/110 ms: mean 100, mean absolute deviation 10 ms.
        for i in 0..400 {
            word = update(word, if i % 2 == 0 { 90_000 } else { 110_000 });
        }
        assert!(
            (99_000..=101_000).contains(&mean_us(word)),
            "{}",
            mean_us(word)
        );
        assert!((9_000..=11_000).contains(&mad_us(word)), "{}", mad_us(word));
        // A slower sender: the mean follows within a few dozen samples.
        for _ in 0..100 {
            word = update(word, 200_000);
        }
        assert!(
            (195_000..=200_000).contains(&mean_us(word)),
            "{}",
            mean_us(word)
        );
        // Extremes neither panic nor wrap.
        let word = update(update(0, u32::MAX), 0);
        assert!(mean_us(word) > u32::MAX / 2);
        assert_eq!(mean_us(update(0, 0)), 1, "a mean of 0 would mean no sample");
    }

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
