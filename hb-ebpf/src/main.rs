//! hb's XDP program: recognises heartbeat packets and records them into the
//! node table at line rate.
//!
//! A valid heartbeat of a configured node whose (incarnation, sequence) moves
//! forward updates the node's cold record (`HB_NODES`), then its seen word
//! (`HB_SEEN`: the kernel's monotonic arrival time and the leave flag, one
//! 8-byte store, the only thing the agent's sweep reads). Valid heartbeats are consumed (XDP_DROP) unless the agent asked to
//! pass them on; every other packet is passed on untouched. Each packet bumps
//! one outcome and one verdict counter, at a single exit point.
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
    counters::Counter,
    table::{NodeRecord, seen},
    wire::{DEFAULT_PORT, HEARTBEAT_LEN, RawHeartbeat, flags},
};
use parse::{ParseError, UDP_HLEN, parse_udp, ptr_at};

/// UDP destination port of heartbeats (host byte order); set at load time.
#[unsafe(no_mangle)]
static HB_UDP_PORT: Global<u16> = Global::new(DEFAULT_PORT);

/// 1: pass recorded heartbeats on to the stack; 0: consume them. Set at load time.
#[unsafe(no_mangle)]
static HB_PASS_HEARTBEATS: Global<u8> = Global::new(0);

/// Seen words (arrival time | leave flag) indexed by node id; resized to
/// `max_nodes` at load time and memory-mapped by the agent.
#[map]
static HB_SEEN: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE as u32);

/// Cold per-node records indexed by node id; resized to `max_nodes` at load
/// time and memory-mapped by the agent.
#[map]
static HB_NODES: Array<NodeRecord> = Array::with_max_entries(1, BPF_F_MMAPABLE as u32);

/// Outcome and verdict counters, indexed by `Counter`.
#[map]
static HB_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[xdp]
pub fn hb_xdp(ctx: XdpContext) -> u32 {
    // SAFETY: the target feature only changes how loads are compiled; every
    // target hb's XDP program is verified on accepts misaligned loads.
    let outcome = classify(&ctx);
    let verdict = match outcome {
        Counter::Accepted | Counter::UnknownNode | Counter::StaleSequence
            if HB_PASS_HEARTBEATS.load() == 0 =>
        {
            xdp_action::XDP_DROP
        }
        _ => xdp_action::XDP_PASS,
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
    if !heartbeat.is_well_formed() {
        return Counter::Malformed;
    }
    let node_id = heartbeat.node_id();
    let (Some(record), Some(seen_word)) =
        (HB_NODES.get_ptr_mut(node_id), HB_SEEN.get_ptr_mut(node_id))
    else {
        return Counter::UnknownNode;
    };
    // SAFETY: the pointers came from successful array lookups; the agent only
    // reads the records while the program runs.
    let record = unsafe { &mut *record };
    if !record.is_configured() {
        return Counter::UnknownNode;
    }
    let incarnation = heartbeat.incarnation();
    let sequence = heartbeat.sequence();
    if !record.accepts(incarnation, sequence) {
        return Counter::StaleSequence;
    }
    if record.heartbeats != 0 && incarnation != record.incarnation {
        // Debug level: a fleet-wide restart would otherwise log a line per
        // node; the agent enables it only when its own log is at debug.
        debug!(
            ctx,
            "node {} restarted: incarnation {}", node_id, incarnation
        );
    }
    record.incarnation = incarnation;
    record.sequence = sequence;
    record.sent_unix_ns = heartbeat.sent_unix_ns();
    record.src_addr = udp.src_addr;
    record.src_port = udp.src_port;
    record.interval_ms = heartbeat.interval_ms();
    record.heartbeat_flags = heartbeat.flags;
    record.heartbeats += 1;
    // SAFETY: a BPF helper with no arguments; the seen word pointer came from
    // a successful lookup. Written last, after the record it summarises.
    unsafe {
        *seen_word = seen::word(bpf_ktime_get_ns(), heartbeat.flags & flags::LEAVE != 0);
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
