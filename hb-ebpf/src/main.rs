//! hb's XDP program: `hb_xdp` recognises heartbeat packets and records them
//! into the node table at line rate. (The test-only `hb_siphash` program is
//! another object, `siphash_test.rs`, that only the tests load.)
//!
//! A well-formed heartbeat is recorded only if [`admit`] admits it: a valid
//! tag under one of the monitor's keys (`HB_KEYS`, by key id) unless
//! unauthenticated heartbeats are accepted, a configured node, the pinned
//! source address if any, and an (incarnation, sequence) that moves forward.
//! Recording updates the node's slot in `HB_NODES` (one cache line: its
//! interval estimate, from the time since its previous heartbeat, and its
//! cold record), then its seen word (`HB_SEEN`: the kernel's monotonic
//! arrival time and the leave flag, one 8-byte store, the only thing the
//! agent's sweep reads). Heartbeats, recorded or refused, are consumed
//! (XDP_DROP) unless the agent asked to pass them on; every other packet is
//! passed on untouched. Each packet bumps one outcome and one verdict
//! counter, at a single exit point, with one lookup of its CPU's counters.
//!
//! Probe replies ([`hb_common::probe`]): an ICMP echo reply (ICMPv6 129)
//! with code 0 whose identifier is hb's (`HB_PROBE_KEY`, written by the
//! agent with the probe secret) is checked like a heartbeat: exact data
//! length and header (`probe_malformed`, passed), the tag under the probe
//! secret over the reply's source address (`probe_bad_tag`), a configured
//! node (`probe_unknown_node`), a sequence above the node's last recorded
//! one in `HB_PROBES` (`probe_replay`); then the node's seen word gets the
//! arrival time and its slot the `SLOT_PROBED_LAST` flag, and the reply is
//! consumed whatever the verdict. Every other ICMP packet is passed on as
//! `not_heartbeat`.
//!
//! Per accepted heartbeat: three array lookups (node slot, seen word,
//! counters; four with the key state of an authenticated one), one clock
//! read. Per accepted probe reply: five (secret, node slot, probe sequence,
//! seen word, counters), one clock read.
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
    auth::{KEY_SLOTS, KeyState},
    counters::{Counter, CounterBlock},
    probe::{ICMP_ECHO_REPLY, PROBE_LEN, ProbeSecret, RawProbe},
    table::{NodeSlot, SLOT_PROBED_LAST, intervals, seen},
    wire::{DEFAULT_PORT, HEARTBEAT_LEN, RawHeartbeat},
};
use hb_ebpf::parse::{IcmpAt, ParseError, UDP_HLEN, parse_icmp, parse_udp, ptr_at};

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

/// What each key id's tags are verified with (the SipHash state of its key
/// after each possible first word), indexed by key id; written by the agent.
#[map]
static HB_KEYS: Array<KeyState> = Array::with_max_entries(KEY_SLOTS, 0);

/// Seen words (arrival time | leave flag) indexed by node id; resized to
/// `max_nodes` at load time and memory-mapped by the agent.
#[map]
static HB_SEEN: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE as u32);

/// Cold per-node slots (record and interval estimate) indexed by node id;
/// resized to `max_nodes` at load time and memory-mapped by the agent.
#[map]
static HB_NODES: Array<NodeSlot> = Array::with_max_entries(1, BPF_F_MMAPABLE as u32);

/// The sequence of the last recorded probe reply, indexed by node id;
/// resized to `max_nodes` at load time and memory-mapped by the agent (which
/// clears it when it installs a new probe secret).
#[map]
static HB_PROBES: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE as u32);

/// hb's echo identifier and the probe secret's SipHash state: one entry,
/// written by the agent; all zero until it is (no ICMP packet is hb's).
#[map]
static HB_PROBE_KEY: Array<ProbeSecret> = Array::with_max_entries(1, 0);

/// Outcome and verdict counters: one entry, a block of every counter per
/// CPU.
#[map]
static HB_COUNTERS: PerCpuArray<CounterBlock> = PerCpuArray::with_max_entries(1, 0);

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
    let verdict = if (outcome.is_heartbeat() && HB_PASS_HEARTBEATS.load() == 0)
        || outcome.is_consumed_probe()
    {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    };
    if let Some(block) = HB_COUNTERS.get_ptr_mut(0) {
        // SAFETY: a per-CPU value is only touched by this CPU, and the
        // pointer came from a successful lookup.
        let block = unsafe { &mut *block };
        block.bump(outcome);
        block.bump(if verdict == xdp_action::XDP_DROP {
            Counter::Dropped
        } else {
            Counter::Passed
        });
    }
    verdict
}

/// Decides what a packet is and, for an accepted heartbeat, records it.
#[inline(always)]
fn classify(ctx: &XdpContext) -> Counter {
    let udp = match parse_udp(ctx) {
        Ok(udp) => udp,
        Err(ParseError::Icmp(at)) => return probe_reply(&at, ctx),
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
    let slot = HB_NODES.get_ptr_mut(node_id);
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
        slot.map(|slot| unsafe { &(*slot).record }),
        policy,
        |key_id| {
            HB_KEYS
                .get(u32::from(key_id))
                .filter(|state| state.is_in_use())
        },
    ) {
        Ok(authenticated) => authenticated,
        Err(refused) => return refused,
    };
    let (Some(slot), Some(seen_word)) = (slot, HB_SEEN.get_ptr_mut(node_id)) else {
        return Counter::UnknownNode;
    };
    // SAFETY: the pointer came from a successful array lookup; the agent only
    // reads the records while the program runs.
    let NodeSlot {
        record,
        interval: interval_word,
    } = unsafe { &mut *slot };
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
    // SAFETY: the pointer came from a successful array lookup.
    let previous_arrival = seen::arrival_ns(unsafe { *seen_word });
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

/// Decides what an ICMP packet is and, for an accepted probe reply, records
/// it.
#[inline(always)]
fn probe_reply(at: &IcmpAt, ctx: &XdpContext) -> Counter {
    let Ok(icmp) = parse_icmp(ctx, at) else {
        return Counter::NotHeartbeat;
    };
    // Echo replies of both families are type 0 here (see `IcmpPacket`).
    if icmp.icmp_type != ICMP_ECHO_REPLY || icmp.code != 0 {
        return Counter::NotHeartbeat;
    }
    let Some(secret) = HB_PROBE_KEY.get(0) else {
        return Counter::NotHeartbeat;
    };
    if !secret.matches(icmp.identifier) {
        return Counter::NotHeartbeat;
    }
    if icmp.payload_len != PROBE_LEN {
        return Counter::ProbeMalformed;
    }
    let Ok(probe) = ptr_at::<RawProbe>(ctx, icmp.payload_offset) else {
        return Counter::ProbeMalformed;
    };
    // SAFETY: ptr_at checked that the whole data lies inside the packet;
    // RawProbe has alignment 1 and every bit pattern is valid.
    let probe = unsafe { &*probe };
    if !probe.is_well_formed() {
        return Counter::ProbeMalformed;
    }
    if !secret.verify(probe, &icmp.src_addr) {
        return Counter::ProbeBadTag;
    }
    let node_id = probe.node_id();
    let (Some(slot), Some(last), Some(seen_word)) = (
        HB_NODES.get_ptr_mut(node_id),
        HB_PROBES.get_ptr_mut(node_id),
        HB_SEEN.get_ptr_mut(node_id),
    ) else {
        return Counter::ProbeUnknownNode;
    };
    // SAFETY: the pointers came from successful array lookups; the agent
    // only reads the slots and the sequences while the program runs (it
    // clears the sequences when it installs a new secret).
    let (record, last) = unsafe { (&mut (*slot).record, &mut *last) };
    if !record.is_configured() {
        return Counter::ProbeUnknownNode;
    }
    let sequence = probe.sequence();
    if sequence <= *last {
        return Counter::ProbeReplay;
    }
    // SAFETY: a BPF helper with no arguments.
    let arrival = unsafe { bpf_ktime_get_ns() };
    *last = sequence;
    record.slot_flags |= SLOT_PROBED_LAST;
    // SAFETY: the seen word pointer came from a successful lookup. Written
    // last. A probe reply is never a leave.
    unsafe {
        *seen_word = seen::word(arrival, false);
    }
    Counter::ProbeAccepted
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
