//! The sweep's fast pass: which nodes need a look, and when the next one
//! will, read from the seen words (the table the datapath writes) and the
//! detector's own [`Watch`] words, 12 bytes per node, front to back.
//!
//! In a steady cluster nothing needs a look, so the pass is a stream over
//! memory with no branch per node: on x86-64 with AVX2 it decides four
//! nodes per step in vector registers ([`avx2`]) and branches only when one
//! of the four needs a look; elsewhere, or without AVX2, a scalar loop
//! ([`scalar`]) decides the same. Both implement [`Pass::needs_look`], the
//! reference the tests hold them to.
//!
//! # Reading words the datapath writes at the same time
//!
//! The kernel (or the socket datapath's receive thread) stores a node's
//! seen word with one aligned 8-byte store while the pass reads. Each word
//! is read once per sweep, and every read is single-copy atomic: the
//! scalar loop uses relaxed atomic loads, and the vector loop reads pairs
//! of words with aligned 16-byte loads (`vmovdqa`), which every processor
//! with AVX performs atomically (Intel SDM vol. 3A 9.1.1; AMD APM vol. 2
//! 7.3.2), so each 8-byte word in them is a value some store wrote, never a
//! mix of two. The loads are inline assembly, which the compiler does not
//! reason about as plain (racy) Rust reads. A word read just before a store
//! is looked at again by the next sweep (the detector's `STORE_MARGIN_NS`).
//! The watch words are the detector's own memory, read while it holds them
//! exclusively.
//!
//! Times are nanoseconds of `CLOCK_MONOTONIC` below 2^62 (146 years of
//! uptime), so sums of a time and a timeout never overflow and the vector
//! loop's signed comparisons order them as unsigned ones would.

use std::sync::atomic::{AtomicU64, Ordering};

use hb_common::table::seen;

use super::detector::NodeState;

/// The detector's 4 bytes per node, what the fast pass reads besides the
/// seen word: two flags saying what makes the node need a look, and the
/// silence after which it does (an up node's suspect deadline, a suspect
/// one's timeout) in units of 2^20 ns (about 1.05 ms), rounded down, up to
/// 2^50 ns (13 days). Rounded down, a deadline is never seen late: the slow
/// path compares the exact one. The node's state itself is kept apart (the
/// pass does not need it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub(super) struct Watch(u32);

impl Watch {
    /// A heartbeat newer than the last sweep needs a look.
    const ON_NEW: u32 = 1 << 31;
    /// A live node (up or suspect): silence past the timeout, or a leave,
    /// needs a look.
    const LIVE: u32 = 1 << 30;
    const TIMEOUT_MASK: u32 = Self::LIVE - 1;
    const UNIT_SHIFT: u32 = 20;
    /// A slot no configured node uses: never examined.
    pub(super) const UNWATCHED: Watch = Watch(0);

    /// The watch word of a node in `state` that needs a look after
    /// `timeout_ns` of silence (if live). `look_at_new_up`: every new
    /// heartbeat of an up node needs a look too (the phi rule).
    #[inline]
    pub(super) fn new(state: NodeState, timeout_ns: u64, look_at_new_up: bool) -> Self {
        let flags = match state {
            NodeState::Up if look_at_new_up => Self::LIVE | Self::ON_NEW,
            NodeState::Up => Self::LIVE,
            NodeState::Suspect => Self::LIVE | Self::ON_NEW,
            _ => Self::ON_NEW,
        };
        let units = (timeout_ns >> Self::UNIT_SHIFT).min(u64::from(Self::TIMEOUT_MASK)) as u32;
        Watch(flags | units)
    }

    /// The silence after which a live node needs a look (rounded down).
    pub(super) fn timeout_ns(self) -> u64 {
        u64::from(self.0 & Self::TIMEOUT_MASK) << Self::UNIT_SHIFT
    }

    /// Up or suspect: a node whose silence the sweep times.
    #[inline(always)]
    pub(super) fn is_live(self) -> bool {
        self.0 & Self::LIVE != 0
    }

    #[inline(always)]
    fn on_new(self) -> bool {
        self.0 & Self::ON_NEW != 0
    }
}

/// What is the same for every node in one sweep.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pass {
    /// The sweep's time.
    pub now_ns: u64,
    /// Seen words above this are heartbeats no sweep has looked at.
    pub new_since_ns: u64,
}

impl Pass {
    /// Whether a sweep must look at a node (`word`, `watch`): a heartbeat
    /// no sweep has looked at, if the watch word says so; for a live node,
    /// a leave or a silence past the watch word's timeout.
    #[inline(always)]
    pub(super) fn needs_look(&self, word: u64, watch: Watch) -> bool {
        let late = self.now_ns > Self::quiet_look_at(word, watch);
        let new = word > self.new_since_ns;
        (watch.on_new() && new) || (watch.is_live() && (late || seen::is_leave(word)))
    }

    /// The last instant at which a live node that needs no look now still
    /// needs none if it stays silent: never before the sweep's time, and
    /// never after the exact deadline (the timeout is rounded down, and
    /// silence is measured from the heartbeat, not from a later floor).
    #[inline(always)]
    fn quiet_look_at(word: u64, watch: Watch) -> u64 {
        seen::arrival_ns(word).saturating_add(watch.timeout_ns())
    }
}

/// Which implementation of the pass this processor runs: `avx512`,
/// `avx2` or `scalar`.
pub fn kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return "avx2";
        }
    }
    "scalar"
}

/// Appends to `candidates` the ids of the nodes that need a look (in
/// ascending order), and returns the first instant at which a live node
/// that does not need one now may (just after [`Pass::quiet_look_at`];
/// `u64::MAX` if none).
pub(super) fn scan(
    words: &[AtomicU64],
    watches: &[Watch],
    pass: Pass,
    candidates: &mut Vec<u32>,
) -> u64 {
    latest_quiet(words, watches, pass, candidates).saturating_add(1)
}

/// [`scan`], returning the earliest [`Pass::quiet_look_at`] itself.
fn latest_quiet(
    words: &[AtomicU64],
    watches: &[Watch],
    pass: Pass,
    candidates: &mut Vec<u32>,
) -> u64 {
    assert_eq!(words.len(), watches.len(), "one watch word per seen word");
    assert!(u32::try_from(words.len()).is_ok(), "node ids are u32");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F.
            return unsafe { avx512::scan(words, watches, pass, candidates) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor has AVX2.
            return unsafe { avx2::scan(words, watches, pass, candidates) };
        }
    }
    scalar::scan(words, watches, pass, 0, candidates)
}

/// How many words the vector loops leave to the scalar one at the start so
/// that their loads are 16-byte aligned: a table of the datapath is
/// page-aligned (none), a test's vector may start one word off.
#[cfg(target_arch = "x86_64")]
fn unaligned_head(words: &[AtomicU64]) -> usize {
    if (words.as_ptr() as usize).is_multiple_of(16) {
        0
    } else {
        words.len().min(1)
    }
}

/// Appends the ids of a block's nodes that need a look: bit `k` of `needs`
/// is node `first_id + k`.
#[cfg(target_arch = "x86_64")]
fn push_candidates(candidates: &mut Vec<u32>, first_id: usize, mut needs: u64) {
    while needs != 0 {
        candidates.push(first_id as u32 + needs.trailing_zeros());
        needs &= needs - 1;
    }
}

/// One node at a time: the fallback, and the vector loop's ends.
mod scalar {
    use super::*;

    /// [`super::scan`] over `words` and `watches`, the first of which is
    /// node `first_id`.
    pub(super) fn scan(
        words: &[AtomicU64],
        watches: &[Watch],
        pass: Pass,
        first_id: u32,
        candidates: &mut Vec<u32>,
    ) -> u64 {
        let mut next = u64::MAX;
        for (id, (word, &watch)) in (first_id..).zip(words.iter().zip(watches)) {
            let word = word.load(Ordering::Relaxed);
            if pass.needs_look(word, watch) {
                candidates.push(id);
            } else if watch.is_live() {
                next = next.min(Pass::quiet_look_at(word, watch));
            }
        }
        next
    }
}

/// Four nodes at a time in 256-bit registers.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::{asm, x86_64::*};

    use super::*;

    /// Nodes per block: one bit each in a `u64`.
    const BLOCK: usize = 64;

    /// [`super::scan`] with AVX2.
    ///
    /// # Safety
    /// The processor must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scan(
        words: &[AtomicU64],
        watches: &[Watch],
        pass: Pass,
        candidates: &mut Vec<u32>,
    ) -> u64 {
        let len = words.len();
        let head = unaligned_head(words);
        let body_end = head + (len - head) / 4 * 4;
        let mut next = scalar::scan(&words[..head], &watches[..head], pass, 0, candidates);

        let now = _mm256_set1_epi64x(pass.now_ns as i64);
        let new_since = _mm256_set1_epi64x(pass.new_since_ns as i64);
        let never = _mm256_set1_epi64x(i64::MAX);
        let mut earliest = never;

        let mut block = head;
        while block < body_end {
            // No call in the inner loop (a call would clobber every vector
            // register): the candidates of a block of nodes are pushed
            // after it, from a bit mask.
            let block_end = body_end.min(block + BLOCK);
            let mut needs = 0u64;
            let mut i = block;
            while i < block_end {
                // SAFETY: `i + 4 <= len`; `words[i]` is 16-byte aligned
                // (`head` made it so, and `i - head` is a multiple of 4).
                let word = unsafe { load4(words.as_ptr().add(i)) };
                // Sign-extended: bit 63 is ON_NEW. SAFETY: `i + 4 <= len`
                // watch words (`Watch` is a transparent `u32`), unaligned.
                let watch = _mm256_cvtepi32_epi64(unsafe {
                    _mm_loadu_si128(watches.as_ptr().add(i).cast::<__m128i>())
                });
                // Booleans are in the sign bits from here on: the rest of
                // each lane is noise.
                let live = _mm256_slli_epi64::<{ 63 - 30 }>(watch);
                let leave = _mm256_slli_epi64::<63>(word);
                let timeout = _mm256_srli_epi64::<{ 34 - Watch::UNIT_SHIFT as i32 }>(
                    _mm256_slli_epi64::<34>(watch),
                );
                // The word itself, not the arrival: it differs by the leave
                // bit, and a live node with a leave needs a look anyway.
                let look_at = _mm256_add_epi64(word, timeout);
                let late = _mm256_cmpgt_epi64(now, look_at);
                let new = _mm256_cmpgt_epi64(word, new_since);
                let need = _mm256_or_si256(
                    _mm256_and_si256(new, watch),
                    _mm256_and_si256(live, _mm256_or_si256(late, leave)),
                );
                needs |= (_mm256_movemask_pd(_mm256_castsi256_pd(need)) as u64) << (i - block);
                // The earliest look of the live nodes not set aside.
                let sooner = _mm256_and_si256(
                    _mm256_andnot_si256(need, live),
                    _mm256_cmpgt_epi64(earliest, look_at),
                );
                earliest = _mm256_castpd_si256(_mm256_blendv_pd(
                    _mm256_castsi256_pd(earliest),
                    _mm256_castsi256_pd(look_at),
                    _mm256_castsi256_pd(sooner),
                ));
                i += 4;
            }
            push_candidates(candidates, block, needs);
            block = block_end;
        }
        let mut lanes = [0u64; 4];
        // SAFETY: 32 writable bytes.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast::<__m256i>(), earliest) };
        for lane in lanes {
            if lane != i64::MAX as u64 {
                next = next.min(lane);
            }
        }
        next.min(scalar::scan(
            &words[body_end..],
            &watches[body_end..],
            pass,
            body_end as u32,
            candidates,
        ))
    }

    /// Four seen words from `p`, as two aligned 16-byte loads: each is
    /// single-copy atomic on every processor with AVX (see the module doc),
    /// so each word is one the writer stored.
    ///
    /// # Safety
    /// `p` must be 16-byte aligned and point to four readable words, and
    /// the processor must have AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn load4(p: *const AtomicU64) -> __m256i {
        let low: __m128i;
        let high: __m128i;
        // SAFETY: the caller vouches for the alignment and the four words;
        // the asm only reads them.
        unsafe {
            asm!(
                "vmovdqa {low}, xmmword ptr [{p}]",
                "vmovdqa {high}, xmmword ptr [{p} + 16]",
                p = in(reg) p,
                low = out(xmm_reg) low,
                high = out(xmm_reg) high,
                options(nostack, preserves_flags, readonly),
            );
        }
        _mm256_set_m128i(high, low)
    }
}

/// Eight nodes at a time in 512-bit registers, with mask registers for the
/// booleans.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::*;

    /// Nodes per block: one bit each in a `u64`.
    const BLOCK: usize = 64;

    /// [`super::scan`] with AVX-512F.
    ///
    /// # Safety
    /// The processor must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scan(
        words: &[AtomicU64],
        watches: &[Watch],
        pass: Pass,
        candidates: &mut Vec<u32>,
    ) -> u64 {
        let len = words.len();
        let head = unaligned_head(words);
        let body_end = head + (len - head) / 8 * 8;
        let next = scalar::scan(&words[..head], &watches[..head], pass, 0, candidates);

        let now = _mm512_set1_epi64(pass.now_ns as i64);
        let new_since = _mm512_set1_epi64(pass.new_since_ns as i64);
        let on_new = _mm512_set1_epi64(i64::from(Watch::ON_NEW));
        let live = _mm512_set1_epi64(i64::from(Watch::LIVE));
        let timeout_mask = _mm512_set1_epi64(i64::from(Watch::TIMEOUT_MASK));
        let leave_bit = _mm512_set1_epi64(seen::LEAVE as i64);
        let mut earliest = _mm512_set1_epi64(-1);

        let mut block = head;
        while block < body_end {
            let block_end = body_end.min(block + BLOCK);
            let mut needs = 0u64;
            let mut i = block;
            while i < block_end {
                // SAFETY: `i + 8 <= len`, `words[i]` 16-byte aligned.
                let word = unsafe { load8(words.as_ptr().add(i)) };
                // SAFETY: `i + 8 <= len` watch words, unaligned.
                let watch = _mm512_cvtepu32_epi64(unsafe {
                    _mm256_loadu_si256(watches.as_ptr().add(i).cast::<__m256i>())
                });
                let is_live = _mm512_test_epi64_mask(watch, live);
                let looks_on_new = _mm512_test_epi64_mask(watch, on_new);
                let timeout = _mm512_slli_epi64::<{ Watch::UNIT_SHIFT }>(_mm512_and_si512(
                    watch,
                    timeout_mask,
                ));
                // The word, not the arrival: see `avx2::scan`.
                let look_at = _mm512_add_epi64(word, timeout);
                let late = _mm512_mask_cmpgt_epu64_mask(is_live, now, look_at);
                let leave = _mm512_mask_test_epi64_mask(is_live, word, leave_bit);
                let new = _mm512_mask_cmpgt_epu64_mask(looks_on_new, word, new_since);
                let need = late | leave | new;
                needs |= u64::from(need) << (i - block);
                earliest = _mm512_mask_min_epu64(earliest, is_live & !need, earliest, look_at);
                i += 8;
            }
            push_candidates(candidates, block, needs);
            block = block_end;
        }
        next.min(_mm512_reduce_min_epu64(earliest))
            .min(scalar::scan(
                &words[body_end..],
                &watches[body_end..],
                pass,
                body_end as u32,
                candidates,
            ))
    }

    /// Eight seen words from `p`, as four aligned 16-byte loads (see
    /// `avx2::load4`).
    ///
    /// # Safety
    /// `p` must be 16-byte aligned and point to eight readable words, and
    /// the processor must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load8(p: *const AtomicU64) -> __m512i {
        // SAFETY: as the caller vouches.
        let (low, high) = unsafe { (avx2::load4(p), avx2::load4(p.add(4))) };
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
    }
}

#[cfg(test)]
mod tests;
