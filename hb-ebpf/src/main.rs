//! hb's XDP programs: `hb_xdp` recognises heartbeat packets and records them
//! into the node table at line rate; `hb_siphash` is a test-only program that
//! exposes the kernel-side SipHash to BPF_PROG_TEST_RUN.
//!
//! A well-formed heartbeat is recorded only if [`admit`] admits it: a valid
//! tag under one of the monitor's keys (`HB_KEYS`, by key id) unless
//! unauthenticated heartbeats are accepted, a configured node, the pinned
//! source address if any, and an (incarnation, sequence) that moves forward.
//! Recording updates the node's interval estimate (`HB_INTERVALS`, from the
//! time since its previous heartbeat), its cold record (`HB_NODES`), then its
//! seen word
//! (`HB_SEEN`: the kernel's monotonic arrival time and the leave flag, one
//! 8-byte store, the only thing the agent's sweep reads). Heartbeats, recorded
//! or refused, are consumed (XDP_DROP) unless the agent asked to pass them on;
//! every other packet is passed on untouched. Each packet bumps one outcome
//! and one verdict counter, at a single exit point.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    Global,
    bindings::{BPF_F_MMAPABLE, xdp_action},
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use hb_common::{
    admission::{Unauthenticated, admit},
    auth::{KEY_SLOTS, KeySlot},
    counters::Counter,
    siphash::{Key, siphash24},
    table::{NodeRecord, intervals, seen},
    wire::{DEFAULT_PORT, HEARTBEAT_LEN, RawHeartbeat},
};
use parse::{ParseError, UDP_HLEN, parse_udp, ptr_at};

/// UDP destination port of heartbeats (host byte order); set at load time.
#[unsafe(no_mangle)]
static HB_UDP_PORT: Global<u16> = Global::new(DEFAULT_PORT);

/// 1: pass recorded heartbeats on to the stack; 0: consume them. Set at load time.
#[unsafe(no_mangle)]
static HB_PASS_HEARTBEATS: Global<u8> = Global::new(0);

/// 1: accept unauthenticated heartbeats (key id 0); 0: refuse them. Set at
/// load time.
#[unsafe(no_mangle)]
static HB_ACCEPT_UNAUTHENTICATED: Global<u8> = Global::new(1);

/// The monitor's keys, indexed by key id; written by the agent.
#[map]
static HB_KEYS: Array<KeySlot> = Array::with_max_entries(KEY_SLOTS, 0);

/// Seen words (arrival time | leave flag) indexed by node id; resized to
/// `max_nodes` at load time and memory-mapped by the agent.
#[map]
static HB_SEEN: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE as u32);

/// Cold per-node records indexed by node id; resized to `max_nodes` at load
/// time and memory-mapped by the agent.
#[map]
static HB_NODES: Array<NodeRecord> = Array::with_max_entries(1, BPF_F_MMAPABLE as u32);

/// Interval estimates (mean and mean absolute deviation) indexed by node id;
/// resized to `max_nodes` at load time and memory-mapped by the agent.
#[map]
static HB_INTERVALS: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE as u32);

/// Outcome and verdict counters, indexed by `Counter`.
#[map]
static HB_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[xdp]
pub fn hb_xdp(ctx: XdpContext) -> u32 {
    // SAFETY: the target feature only changes how loads are compiled; every
    // target hb's XDP program is verified on accepts misaligned loads.
    let outcome = classify(&ctx);
    let verdict = if outcome.is_heartbeat() && HB_PASS_HEARTBEATS.load() == 0 {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    };
    count(outcome);
    count(if verdict == xdp_action::XDP_DROP {
        Counter::Dropped
    } else {
        Counter::Passed
    });
    verdict
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(value) = HB_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and the pointer
        // came from a successful lookup.
        unsafe { *value += 1 };
    }
}

/// Decides what a packet is and, for an accepted heartbeat, records it.
#[inline(always)]
fn classify(ctx: &XdpContext) -> Counter {
    let udp = match parse_udp(ctx) {
        Ok(udp) => udp,
        Err(ParseError::Truncated | ParseError::NotUdp) => return Counter::NotHeartbeat,
    };
    if udp.dst_port != HB_UDP_PORT.load() {
        return Counter::NotHeartbeat;
    }
    if udp.udp_len as usize != UDP_HLEN + HEARTBEAT_LEN {
        return Counter::Malformed;
    }
    let Ok(heartbeat) = ptr_at::<RawHeartbeat>(ctx, udp.payload_offset) else {
        return Counter::Malformed;
    };
    // SAFETY: ptr_at checked that the whole payload lies inside the packet;
    // RawHeartbeat has alignment 1 and every bit pattern is valid.
    let heartbeat = unsafe { &*heartbeat };
    let node_id = heartbeat.node_id();
    let record = HB_NODES.get_ptr_mut(node_id);
    let policy = if HB_ACCEPT_UNAUTHENTICATED.load() != 0 {
        Unauthenticated::Accept
    } else {
        Unauthenticated::Refuse
    };
    let authenticated = match admit(
        heartbeat,
        &udp.src_addr,
        // SAFETY: the pointer came from a successful array lookup; the
        // reference ends with this call.
        record.map(|record| unsafe { &*record }),
        policy,
        |key_id| HB_KEYS.get(u32::from(key_id)).and_then(KeySlot::key),
    ) {
        Ok(authenticated) => authenticated,
        Err(refused) => return refused,
    };
    let (Some(record), Some(seen_word), Some(interval_word)) = (
        record,
        HB_SEEN.get_ptr_mut(node_id),
        HB_INTERVALS.get_ptr_mut(node_id),
    ) else {
        return Counter::UnknownNode;
    };
    // SAFETY: the pointer came from a successful array lookup; the agent only
    // reads the records while the program runs.
    let record = unsafe { &mut *record };
    if record.heartbeats != 0 && heartbeat.incarnation() != record.incarnation {
        // Debug level: a fleet-wide restart would otherwise log a line per
        // node; the agent enables it only when its own log is at debug.
        debug!(
            ctx,
            "node {} restarted: incarnation {}",
            node_id,
            heartbeat.incarnation()
        );
    }
    // SAFETY: a BPF helper with no arguments.
    let arrival = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the pointers came from successful array lookups.
    let (previous_arrival, interval_word) =
        unsafe { (seen::arrival_ns(*seen_word), &mut *interval_word) };
    if let Some(sample) = intervals::sample_us(
        previous_arrival,
        arrival,
        record.sequence,
        heartbeat.sequence(),
        record.heartbeats != 0 && record.incarnation == heartbeat.incarnation(),
    ) {
        *interval_word = intervals::update(*interval_word, sample);
    }
    record.record(heartbeat, &udp.src_addr, udp.src_port, authenticated);
    // SAFETY: the seen word pointer came from a successful lookup. Written
    // last, after the record it summarises.
    unsafe {
        *seen_word = seen::word(arrival, heartbeat.is_leave());
    }
    Counter::Accepted
}

/// Layout of a `hb_siphash` packet: the key, the result slot, the message
/// length (one byte), then the message.
const SIPHASH_RESULT_AT: usize = 16;
const SIPHASH_LENGTH_AT: usize = 24;
const SIPHASH_MESSAGE_AT: usize = 25;

// Inlined into the entry point the macro generates: as a separate BPF
// function it would receive the packet bounds as 32-bit arguments, and
// widening them is pointer arithmetic the verifier refuses.
#[xdp]
#[inline(always)]
pub fn hb_siphash(ctx: XdpContext) -> u32 {
    match siphash_of_packet(&ctx) {
        Some(()) => xdp_action::XDP_PASS,
        None => xdp_action::XDP_ABORTED,
    }
}

/// SipHash-2-4 of the packet's message under the packet's key, written into
/// the packet's result slot. The length byte picks one of 64 instantiations,
/// each over a fixed-size array as in `hb_xdp`.
#[inline(always)]
fn siphash_of_packet(ctx: &XdpContext) -> Option<()> {
    let key = ptr_at::<Key>(ctx, 0).ok()?;
    let result = ptr_at::<[u8; 8]>(ctx, SIPHASH_RESULT_AT).ok()? as *mut [u8; 8];
    let length = ptr_at::<u8>(ctx, SIPHASH_LENGTH_AT).ok()?;
    // SAFETY: ptr_at checked that the key and the length lie inside the
    // packet.
    let (key, length) = unsafe { (&*key, *length) };
    macro_rules! by_length {
        ($($n:literal)*) => {
            match length {
                $($n => {
                    let message = ptr_at::<[u8; $n]>(ctx, SIPHASH_MESSAGE_AT).ok()?;
                    // SAFETY: ptr_at checked that the message lies inside the
                    // packet.
                    siphash24(key, unsafe { &*message })
                })*
                _ => return None,
            }
        };
    }
    let hash = by_length!(
        0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
        32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60
        61 62 63
    );
    // SAFETY: ptr_at checked that the result slot lies inside the packet,
    // which test runs may write.
    unsafe { *result = hash.to_le_bytes() };
    Some(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
