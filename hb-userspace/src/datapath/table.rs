//! The node table as the agent sees it: the hot array of seen words, the
//! cold array of [`NodeRecord`]s and the array of interval estimates (layout
//! in `hb_common::table`), each a shared memory [`Mapping`].
//!
//! In the XDP datapath the mappings are the kernel's `BPF_F_MMAPABLE` maps,
//! written by the XDP program; in the socket datapath they are anonymous
//! memory written by the receive thread. Either way the agent reads the same
//! layout without any syscall per node.

use std::{
    io,
    marker::PhantomData,
    net::IpAddr,
    os::fd::{AsRawFd, BorrowedFd},
    ptr::{self, NonNull},
    sync::atomic::AtomicU64,
};

use hb_common::table::{NodeRecord, SLOT_CONFIGURED};

use crate::{detect::detector::TableView, sys};

/// `len` values of `T` in shared memory, written concurrently by someone
/// else (the kernel, or a receive thread). Access is by copy (volatile), or
/// for the seen words through atomics.
pub struct Mapping<T> {
    base: NonNull<T>,
    len: u32,
    mapped_bytes: usize,
    _values: PhantomData<T>,
}

// SAFETY: the mapping is plain shared memory; every access is a volatile or
// atomic copy of a `T: Copy` valid for every bit pattern (u64, NodeRecord).
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
            base: base.cast(),
            len,
            mapped_bytes,
            _values: PhantomData,
        })
    }

    /// Number of values.
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes mapped (whole pages).
    pub fn mapped_bytes(&self) -> usize {
        self.mapped_bytes
    }

    /// A copy of value `index`.
    ///
    /// # Panics
    /// If `index >= len()`.
    #[inline]
    pub fn get(&self, index: u32) -> T {
        assert!(
            index < self.len,
            "index {index} is outside the table of {} slots",
            self.len
        );
        // SAFETY: in bounds (checked above) of a live mapping; volatile since
        // another writer may store concurrently.
        unsafe { ptr::read_volatile(self.base.as_ptr().add(index as usize)) }
    }

    /// Overwrites value `index`.
    ///
    /// # Panics
    /// If `index >= len()`.
    #[inline]
    pub fn set(&self, index: u32, value: T) {
        assert!(
            index < self.len,
            "index {index} is outside the table of {} slots",
            self.len
        );
        // SAFETY: in bounds of a live, writable mapping.
        unsafe { ptr::write_volatile(self.base.as_ptr().add(index as usize), value) }
    }
}

impl Mapping<u64> {
    /// The values as atomics: what the sweep scans. Relaxed loads compile to
    /// plain loads, and make concurrent stores by the kernel well defined.
    pub fn atomics(&self) -> &[AtomicU64] {
        // SAFETY: `AtomicU64` has the size and alignment of `u64`; the
        // mapping is page-aligned and holds `len` values; it lives as long as
        // the returned borrow of `self`.
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().cast::<AtomicU64>(), self.len as usize)
        }
    }
}

impl<T> Drop for Mapping<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; no borrow of it
        // outlives `self`.
        unsafe { sys::unmap(self.base.cast(), self.mapped_bytes) };
    }
}

/// The node table's arrays, indexed by node id.
pub struct NodeTable {
    /// Seen words (`hb_common::table::seen`): read by every sweep.
    pub seen: Mapping<u64>,
    /// Cold records: read on state changes and for `hb status`.
    pub records: Mapping<NodeRecord>,
    /// Interval estimates (`hb_common::table::intervals`): read when a
    /// node's arrival time changes.
    pub intervals: Mapping<u64>,
}

impl NodeTable {
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
    }
}

impl TableView for NodeTable {
    fn seen_words(&self) -> &[AtomicU64] {
        self.seen.atomics()
    }

    fn advertised_interval_ms(&self, node_id: u32) -> u32 {
        self.records.get(node_id).interval_ms
    }

    fn interval_word(&self, node_id: u32) -> u64 {
        self.intervals.get(node_id)
    }

    fn heartbeats(&self, node_id: u32) -> u64 {
        self.records.get(node_id).heartbeats
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
    #[should_panic(expected = "outside the table")]
    fn out_of_range_access_panics() {
        let records = Mapping::<NodeRecord>::anonymous(4).unwrap();
        records.get(4);
    }
}
