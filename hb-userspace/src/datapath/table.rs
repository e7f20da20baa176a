//! The node table as the agent sees it: the hot array of seen words and the
//! cold array of [`NodeSlot`]s (layout in `hb_common::table`), shared memory
//! [`Mapping`]s. The slots are seen through two views: the [`NodeRecord`]s
//! and the interval words, each strided over the same memory.
//!
//! In the XDP datapath the mappings are the kernel's `BPF_F_MMAPABLE` maps,
//! written by the XDP program; in the socket datapath they are anonymous
//! memory written by the receive thread. Either way the agent reads the same
//! layout without any syscall per node.

use std::{
    io,
    marker::PhantomData,
    mem::offset_of,
    net::IpAddr,
    os::fd::{AsRawFd, BorrowedFd},
    ptr::{self, NonNull},
    sync::{Arc, atomic::AtomicU64},
};

use hb_common::table::{NodeRecord, NodeSlot, SLOT_CONFIGURED, SLOT_PROBED_LAST, seen};

use crate::{detect::detector::TableView, sys};

/// A shared memory mapping, unmapped when its last view goes.
struct Region {
    base: NonNull<u8>,
    bytes: usize,
}

// SAFETY: the region is plain shared memory, only unmapped on drop.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `Mapping::map` mapped; every view of
        // it holds this region, so none outlives it.
        unsafe { sys::unmap(self.base.cast(), self.bytes) };
    }
}

/// `len` values of `T` in shared memory, written concurrently by someone
/// else (the kernel, or a receive thread), `stride` bytes apart (one field
/// of a larger value: see [`Mapping::field`]). Access is by copy
/// (volatile), or for the seen words through atomics.
pub struct Mapping<T> {
    region: Arc<Region>,
    base: NonNull<T>,
    stride: usize,
    len: u32,
    _values: PhantomData<T>,
}

// SAFETY: the mapping is plain shared memory; every access is a volatile or
// atomic copy of a `T: Copy` valid for every bit pattern (u64, NodeRecord,
// NodeSlot).
unsafe impl<T: Copy + Send> Send for Mapping<T> {}
// SAFETY: as above.
unsafe impl<T: Copy + Sync> Sync for Mapping<T> {}

impl<T: Copy> Mapping<T> {
    /// Maps the values of a `BPF_F_MMAPABLE` array map of `len` entries.
    ///
    /// # Safety
    /// `fd` must be such a map, with `size_of::<T>()`-byte values (a multiple
    /// of 8, so the kernel lays them out back to back) and `len` entries.
    pub unsafe fn of_bpf_array(fd: BorrowedFd<'_>, len: u32) -> io::Result<Self> {
        debug_assert_eq!(size_of::<T>() % 8, 0);
        Self::map(len, Some(fd.as_raw_fd()))
    }

    /// Zeroed anonymous memory for `len` values.
    pub fn anonymous(len: u32) -> io::Result<Self> {
        Self::map(len, None)
    }

    fn map(len: u32, fd: Option<libc::c_int>) -> io::Result<Self> {
        let page = sys::page_size();
        let bytes = (len as usize).max(1) * size_of::<T>();
        let mapped_bytes = bytes.div_ceil(page) * page;
        // SAFETY: `of_bpf_array`'s caller vouches for the map and its length;
        // an anonymous mapping has no precondition.
        let base = unsafe { sys::map_shared(mapped_bytes, fd) }?;
        Ok(Mapping {
            region: Arc::new(Region {
                base: base.cast(),
                bytes: mapped_bytes,
            }),
            base: base.cast(),
            stride: size_of::<T>(),
            len,
            _values: PhantomData,
        })
    }

    /// The field at `offset` bytes into each value, as a mapping of its own
    /// over the same memory (sharing it: the memory stays mapped while either
    /// lives).
    ///
    /// # Safety
    /// `F` must lie at `offset` in `T` (in bounds, aligned) and be valid for
    /// every bit pattern.
    pub unsafe fn field<F: Copy>(&self, offset: usize) -> Mapping<F> {
        debug_assert!(offset + size_of::<F>() <= size_of::<T>());
        debug_assert_eq!(offset % align_of::<F>(), 0);
        Mapping {
            region: Arc::clone(&self.region),
            // SAFETY: within the first value (the caller's promise).
            base: unsafe { self.base.byte_add(offset) }.cast(),
            stride: self.stride,
            len: self.len,
            _values: PhantomData,
        }
    }

    /// Another view of the same values (the memory stays mapped while
    /// either lives).
    pub fn view(&self) -> Mapping<T> {
        Mapping {
            region: Arc::clone(&self.region),
            base: self.base,
            stride: self.stride,
            len: self.len,
            _values: PhantomData,
        }
    }

    /// Number of values.
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes mapped (whole pages), shared by every view of the memory.
    pub fn mapped_bytes(&self) -> usize {
        self.region.bytes
    }

    /// The address of value `index`.
    ///
    /// # Panics
    /// If `index >= len()`.
    #[inline]
    fn at(&self, index: u32) -> *mut T {
        assert!(
            index < self.len,
            "index {index} is outside the table of {} slots",
            self.len
        );
        // SAFETY: in bounds (checked above) of a live mapping of `len`
        // values `stride` bytes apart.
        unsafe { self.base.as_ptr().byte_add(index as usize * self.stride) }
    }

    /// A hint that value `index` will be read soon (no effect where the
    /// processor has no such hint, or `index` is out of range).
    #[inline]
    pub fn prefetch(&self, index: u32) {
        if index >= self.len {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults, and the address is in the
        // mapping anyway.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(self.at(index).cast::<i8>());
        }
    }

    /// A copy of value `index`.
    ///
    /// # Panics
    /// If `index >= len()`.
    #[inline]
    pub fn get(&self, index: u32) -> T {
        // SAFETY: in bounds of a live mapping; volatile since another writer
        // may store concurrently.
        unsafe { ptr::read_volatile(self.at(index)) }
    }

    /// Overwrites value `index`.
    ///
    /// # Panics
    /// If `index >= len()`.
    #[inline]
    pub fn set(&self, index: u32, value: T) {
        // SAFETY: in bounds of a live, writable mapping.
        unsafe { ptr::write_volatile(self.at(index), value) }
    }
}

impl Mapping<u8> {
    /// Sets `bits` in value `index` with one atomic read-modify-write, so
    /// that no other bit of it is written.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn set_bits(&self, index: u32, bits: u8) {
        // SAFETY: in bounds of a live mapping, a byte is always aligned;
        // other writers use plain stores, which an atomic RMW tolerates.
        unsafe { std::sync::atomic::AtomicU8::from_ptr(self.at(index)) }
            .fetch_or(bits, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Mapping<u64> {
    /// The values as atomics: what the sweep scans. Relaxed loads compile to
    /// plain loads, and make concurrent stores by the kernel well defined.
    ///
    /// # Panics
    /// If the values are not back to back (a [`field`](Mapping::field)
    /// view).
    pub fn atomics(&self) -> &[AtomicU64] {
        assert_eq!(self.stride, size_of::<u64>(), "not a contiguous array");
        // SAFETY: `AtomicU64` has the size and alignment of `u64`; the
        // mapping is page-aligned and holds `len` values back to back; it
        // lives as long as the returned borrow of `self`.
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().cast::<AtomicU64>(), self.len as usize)
        }
    }
}

/// The node table's arrays, indexed by node id.
pub struct NodeTable {
    /// Seen words (`hb_common::table::seen`): read by every sweep.
    pub seen: Mapping<u64>,
    /// Cold records (the [`NodeSlot`]s' records): read on state changes and
    /// for `hb status`.
    pub records: Mapping<NodeRecord>,
    /// Interval estimates (`hb_common::table::intervals`, the
    /// [`NodeSlot`]s' interval words): read when a node's arrival time
    /// changes. Each is one aligned 8-byte word, read and written whole.
    pub intervals: Mapping<u64>,
    /// The sequence of the last probe recorded for each node (0: none since
    /// the agent started probing): `HB_PROBES`, which the XDP program
    /// writes for ICMP replies and the prober for TCP and HTTP probes.
    pub probes: Mapping<u64>,
    /// The records' `slot_flags` bytes, set atomically when a TCP or HTTP
    /// probe is recorded.
    slot_flags: Mapping<u8>,
}

/// What became of a TCP or HTTP probe's success handed to
/// [`NodeTable::record_probe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeRecorded {
    /// The node's seen word moved.
    Accepted,
    /// The node is not configured (a reload removed it meanwhile).
    UnknownNode,
    /// A later probe of the node was already recorded.
    Replay,
}

impl NodeTable {
    /// The table over `seen` words, node `slots` and last probe sequences
    /// `probes` (all of the same length).
    pub fn new(seen: Mapping<u64>, slots: &Mapping<NodeSlot>, probes: Mapping<u64>) -> Self {
        debug_assert_eq!(seen.len(), slots.len());
        debug_assert_eq!(seen.len(), probes.len());
        // SAFETY: `NodeSlot` is `repr(C)` with a `NodeRecord` at offset 0
        // (whose `slot_flags` is a byte) and the interval `u64` at its
        // offset; all are valid for every bit pattern.
        let (records, intervals, slot_flags) = unsafe {
            (
                slots.field(offset_of!(NodeSlot, record)),
                slots.field(offset_of!(NodeSlot, interval)),
                slots.field(offset_of!(NodeSlot, record) + offset_of!(NodeRecord, slot_flags)),
            )
        };
        NodeTable {
            seen,
            records,
            intervals,
            probes,
            slot_flags,
        }
    }

    /// A table of `len` zeroed slots in anonymous memory (the socket
    /// datapath's, and the tests').
    pub fn anonymous(len: u32) -> io::Result<Self> {
        Ok(Self::new(
            Mapping::anonymous(len)?,
            &Mapping::<NodeSlot>::anonymous(len)?,
            Mapping::anonymous(len)?,
        ))
    }

    /// Another view of the same table (the prober's).
    pub fn view(&self) -> NodeTable {
        NodeTable {
            seen: self.seen.view(),
            records: self.records.view(),
            intervals: self.intervals.view(),
            probes: self.probes.view(),
            slot_flags: self.slot_flags.view(),
        }
    }

    /// Records a successful TCP or HTTP probe of node `id` (sequence
    /// `sequence`, finished at `now_ns` on the monotonic clock) as the XDP
    /// program records an ICMP reply: only for a configured node, only if
    /// its sequence is above the last recorded one; then the sequence, the
    /// `SLOT_PROBED_LAST` flag, and the seen word, which only moves forward
    /// (a heartbeat recorded meanwhile by the datapath is never undone).
    /// The probe's interval is not an interval sample.
    pub fn record_probe(&self, id: u32, sequence: u64, now_ns: u64) -> ProbeRecorded {
        if id >= self.len() || !self.records.get(id).is_configured() {
            return ProbeRecorded::UnknownNode;
        }
        if sequence <= self.probes.get(id) {
            return ProbeRecorded::Replay;
        }
        self.probes.set(id, sequence);
        self.slot_flags.set_bits(id, SLOT_PROBED_LAST);
        self.seen.atomics()[id as usize].fetch_max(
            seen::word(now_ns, false),
            std::sync::atomic::Ordering::Relaxed,
        );
        ProbeRecorded::Accepted
    }

    /// Number of slots (`max_nodes`).
    pub fn len(&self) -> u32 {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Marks `id` as a configured node, with what a previous run of the agent
    /// knew of it and how it is pinned (`record`; `SLOT_CONFIGURED` is added
    /// to its `slot_flags`); its seen word is reset (arrival times of a
    /// previous boot or kernel table mean nothing), and so is its interval
    /// estimate (restore a saved one after this). Only done before
    /// heartbeats are recorded.
    pub fn configure(&self, id: u32, record: NodeRecord) {
        self.records.set(
            id,
            NodeRecord {
                slot_flags: record.slot_flags | SLOT_CONFIGURED,
                ..record
            },
        );
        self.seen.set(id, 0);
        self.intervals.set(id, 0);
        self.probes.set(id, 0);
    }

    /// Pins node `id` to `source` (or unpins it) while it is watched,
    /// keeping its record and seen word. The datapath may write the same
    /// record meanwhile (no lock is shared with the kernel): a heartbeat
    /// recorded in that instant can be lost, never a pin half written.
    pub fn pin(&self, id: u32, source: Option<IpAddr>) {
        self.update(id, |record| record.pin_to(source));
    }

    /// Changes node `id`'s record with `change`, writing it back only if
    /// that changed anything (so an unchanged node never races the
    /// datapath; see [`pin`](Self::pin) for what a write can lose).
    pub fn update(&self, id: u32, change: impl FnOnce(&mut NodeRecord)) {
        let before = self.records.get(id);
        let mut record = before;
        change(&mut record);
        if record != before {
            self.records.set(id, record);
        }
    }

    /// Stops recording node `id` (a reload removed it): its heartbeats count
    /// as `unknown_node` again, and nothing of it stays in the table.
    pub fn unconfigure(&self, id: u32) {
        self.records.set(id, NodeRecord::default());
        self.seen.set(id, 0);
        self.intervals.set(id, 0);
        self.probes.set(id, 0);
    }
}

impl TableView for NodeTable {
    #[inline]
    fn seen_words(&self) -> &[AtomicU64] {
        self.seen.atomics()
    }

    #[inline]
    fn advertised_interval_ms(&self, node_id: u32) -> u32 {
        self.records.get(node_id).interval_ms
    }

    #[inline]
    fn interval_word(&self, node_id: u32) -> u64 {
        self.intervals.get(node_id)
    }

    /// Heartbeats accepted plus the sequence of the last recorded probe
    /// (probes go out one sequence number apart, so a node that answers
    /// probes counts up as one that sends heartbeats).
    #[inline]
    fn heartbeats(&self, node_id: u32) -> u64 {
        self.records
            .get(node_id)
            .heartbeats
            .wrapping_add(self.probes.get(node_id))
    }

    #[inline]
    fn prefetch(&self, node_id: u32) {
        // The record and the interval word share the node's 64-byte slot.
        self.records.prefetch(node_id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn anonymous_mapping_is_zeroed_and_shared_between_views() {
        let seen = Mapping::<u64>::anonymous(1000).unwrap();
        assert_eq!(seen.len(), 1000);
        assert_eq!(seen.mapped_bytes() % sys::page_size(), 0);
        assert!((0..1000).all(|i| seen.get(i) == 0));
        seen.set(999, 42);
        assert_eq!(seen.atomics()[999].load(Ordering::Relaxed), 42);
        seen.atomics()[0].store(7, Ordering::Relaxed);
        assert_eq!(seen.get(0), 7);
    }

    #[test]
    fn a_probe_is_recorded_once_only_for_a_configured_node_and_never_moves_time_back() {
        use crate::detect::detector::TableView;
        let table = NodeTable::anonymous(8).unwrap();
        assert_eq!(table.record_probe(3, 1, 1_000), ProbeRecorded::UnknownNode);
        assert_eq!(table.record_probe(99, 1, 1_000), ProbeRecorded::UnknownNode);
        table.configure(3, NodeRecord::default());
        assert_eq!(table.record_probe(3, 2, 1_000), ProbeRecorded::Accepted);
        assert_eq!(table.record_probe(3, 2, 2_000), ProbeRecorded::Replay);
        assert_eq!(table.record_probe(3, 1, 2_000), ProbeRecorded::Replay);
        assert_eq!(seen::arrival_ns(table.seen.get(3)), 1_000);
        assert!(table.records.get(3).probed_last());
        assert!(table.records.get(3).is_configured(), "other flags kept");
        // A heartbeat recorded later by the datapath is not undone by a
        // probe that finished earlier.
        table.seen.set(3, seen::word(5_000, false));
        assert_eq!(table.record_probe(3, 3, 4_000), ProbeRecorded::Accepted);
        assert_eq!(seen::arrival_ns(table.seen.get(3)), 5_000);
        // Probes count as arrivals for `rise`.
        assert_eq!(table.heartbeats(3), 3);
    }

    #[test]
    #[should_panic(expected = "outside the table")]
    fn out_of_range_access_panics() {
        let records = Mapping::<NodeRecord>::anonymous(4).unwrap();
        records.get(4);
    }

    #[test]
    fn records_and_interval_words_are_views_of_the_slots() {
        let slots = Mapping::<NodeSlot>::anonymous(100).unwrap();
        let table = NodeTable::new(
            Mapping::anonymous(100).unwrap(),
            &slots,
            Mapping::anonymous(100).unwrap(),
        );
        let record = NodeRecord {
            incarnation: 1,
            sequence: u64::MAX,
            slot_flags: 0xff,
            ..NodeRecord::default()
        };
        table.records.set(99, record);
        table.intervals.set(99, 42);
        table.intervals.set(98, u64::MAX);
        assert_eq!(
            slots.get(99),
            NodeSlot {
                record,
                interval: 42
            }
        );
        assert_eq!(slots.get(98).record, NodeRecord::default());
        // Writing a record leaves its interval word alone, and the reverse.
        table.records.set(98, NodeRecord::default());
        assert_eq!(table.intervals.get(98), u64::MAX);
        assert_eq!(table.records.get(99), record);
        drop(slots);
        // The views keep the memory mapped.
        assert_eq!(table.intervals.get(99), 42);
        assert_eq!(table.records.mapped_bytes(), table.intervals.mapped_bytes());
    }
}
