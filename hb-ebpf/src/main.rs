//! hb's XDP program: `hb_xdp` recognises heartbeat packets and records them
//! into the node table at line rate. (The test-only `hb_siphash` program is
//! another object, `siphash_test.rs`, that only the tests load.)
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
    table::{NodeRecord, intervals, seen},
    wire::{DEFAULT_PORT, HEARTBEAT_LEN, RawHeartbeat},
};
use hb_ebpf::parse::{ParseError, UDP_HLEN, parse_udp, ptr_at};

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
    // Built with `+allows-misaligned-mem-access` (hb-userspace's build.rs):
    // every target hb's XDP program is verified on accepts misaligned loads.
    let outcome = classify(&ctx);
    // The upgrade test's variant of this program (`--cfg hb_variant`, built
    // only for the tests): one more code path, a debug record the kernel
    // filters at the agent's log level; the maps and the behaviour are the
    // same.
    #[cfg(hb_variant)]
    debug!(&ctx, "hb_xdp: the variant build");
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
