//! `hb-tools bench`: in-process measurements that `cargo xtask bench` runs and
//! collects (each prints one JSON object on stdout).
//!
//! - `xdp-cost`: the XDP program's cost per packet through
//!   `BPF_PROG_TEST_RUN`, for an accepted heartbeat without and with
//!   authentication, an accepted probe reply (ICMP echo reply, tag checked),
//!   a replay, a bad tag, an unknown node and packets that are not
//!   heartbeats; and the floor under it (an empty program, one clock
//!   read, one array lookup, timed the same way).
//! - `sweep`: one sweep of N nodes over the real memory-mapped BPF table,
//!   next to a plain memcpy of the bytes the sweep reads (the floor).
//! - [`state`](mod@state): the agent's state file at N nodes, before (JSON)
//!   and after (binary snapshot and journal): save and load time, size.
//!
//! `hb-tools bench hostile` lives in [`crate::hostile`].

use std::{
    sync::atomic::AtomicU64,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use bytes::BufMut;
use hb::{
    clock::monotonic_ns,
    datapath::xdp::{FLOOR_OBJECT, LoadOptions, XdpDatapath},
    detect::{
        detector::{Detector, DetectorSettings, NodeState, Rule, WatchedNode},
        phi::{PhiDetector, PhiSettings},
    },
};
use hb_common::{
    admission::Unauthenticated,
    auth::{self, KEY_SLOTS, KeySlot},
    counters::Counter,
    globals,
    probe::{ICMP_ECHO_REPLY, Probe, echo_message},
    siphash::Key,
    table::{NodeRecord, intervals, seen, src_octets},
    wire::{DEFAULT_PORT, Heartbeat},
};
use serde::Serialize;

pub mod state;

/// Cost of one packet class, in nanoseconds per packet.
#[derive(Debug, Serialize)]
pub struct PacketCost {
    pub case: &'static str,
    pub ns_per_packet: f64,
    /// How it was measured.
    pub method: String,
}

#[derive(Debug, Serialize)]
pub struct XdpCost {
    pub cases: Vec<PacketCost>,
}

/// Nodes in each measured table; the last id is left unconfigured.
const COST_NODES: u32 = 1024;
/// The key id and key of the authenticated rig.
const COST_KEY: (u8, Key) = (1, [0x5a; 16]);
/// The echo identifier and secret of the probe replies (the plain rig).
const COST_PROBE: (u16, Key) = (0x4842, [0xa5; 16]);
/// Where the measured frames come from (and, for probe replies, the probed
/// address the tag covers).
const COST_SOURCE: [u8; 4] = [198, 18, 0, 2];

/// A loaded program, with or without a key, and its table configured.
struct CostRig {
    datapath: XdpDatapath,
    key: Option<(u8, Key)>,
}

impl CostRig {
    fn load(key: Option<(u8, Key)>) -> anyhow::Result<Self> {
        let mut datapath = XdpDatapath::load(LoadOptions {
            port: DEFAULT_PORT,
            max_nodes: COST_NODES,
            pass_heartbeats: false,
            unauthenticated: if key.is_some() {
                Unauthenticated::Refuse
            } else {
                Unauthenticated::Accept
            },
        })?;
        if let Some((id, key)) = key {
            let mut slots = [KeySlot::default(); KEY_SLOTS as usize];
            slots[usize::from(id)] = KeySlot::with_key(key);
            datapath.set_keys(&slots)?;
        }
        for id in 0..COST_NODES - 1 {
            datapath.table().configure(id, NodeRecord::default());
        }
        datapath.set_probe_secret(COST_PROBE.0, &COST_PROBE.1)?;
        Ok(CostRig { datapath, key })
    }

    /// An ICMP echo reply of `node_id`'s probe at `sequence`, from the
    /// probed address, tagged under the rig's probe secret.
    fn probe_reply(&self, node_id: u32, sequence: u64) -> Vec<u8> {
        let target = src_octets(std::net::Ipv4Addr::from(COST_SOURCE).into());
        let data = Probe { node_id, sequence }.encode(&COST_PROBE.1, &target);
        ipv4_icmp_frame(&echo_message(ICMP_ECHO_REPLY, COST_PROBE.0, 1, &data))
    }

    /// A heartbeat frame of `node_id` at `sequence`, signed if the rig has
    /// a key (with `tamper`, its tag is then broken).
    fn frame(&self, node_id: u32, sequence: u64, tamper: bool) -> Vec<u8> {
        let mut payload = Heartbeat {
            flags: 0,
            key_id: 0,
            node_id,
            interval_ms: 1000,
            incarnation: 1,
            sequence,
            sent_unix_ns: 0,
            auth_tag: [0; 16],
        }
        .encode();
        if let Some((id, key)) = self.key {
            auth::sign(&mut payload, id, &key);
            if tamper {
                payload[auth::SIGNED_LEN] ^= 1;
            }
        }
        ipv4_udp_frame(DEFAULT_PORT, &payload)
    }

    fn program(&mut self) -> anyhow::Result<&mut Xdp> {
        Ok(self.datapath.program()?)
    }

    fn check_accepted(&self, counter: Counter, expected: u32) -> anyhow::Result<()> {
        let accepted = self.datapath.counters()?[counter as usize];
        if accepted != u64::from(expected) {
            bail!(
                "{accepted} of the {expected} distinct packets were {}, expected all",
                counter.name()
            );
        }
        Ok(())
    }
}

/// Measures the XDP program's cost per packet, without and with
/// authentication (two programs loaded side by side, measured interleaved),
/// and of an accepted probe reply (on the first program, after them).
///
/// Classes whose outcome does not change when the same packet runs again
/// (unknown node, replay, bad tag, not a heartbeat) are timed by the kernel
/// over `repeat` runs of one packet. An accepted heartbeat must carry a new
/// sequence every time, so it is timed over `distinct` single runs of
/// distinct packets; the kernel's per-call timing overhead is measured the
/// same way on a non-heartbeat packet (single runs minus repeated runs) and
/// subtracted. Single runs are summarised by their median, not their mean:
/// an interrupt or a preemption during one run of a few dozen nanoseconds
/// would otherwise weigh on the result far beyond its frequency.
pub fn xdp_cost(distinct: u32, repeat: u32) -> anyhow::Result<XdpCost> {
    let mut plain = CostRig::load(None)?;
    let mut signed = CostRig::load(Some(COST_KEY))?;
    let unknown = COST_NODES - 1;

    let mut plain_runs = Vec::with_capacity(distinct as usize);
    let mut signed_runs = Vec::with_capacity(distinct as usize);
    let mut probe_runs = Vec::with_capacity(distinct as usize);
    let mut sequence = 0;
    for i in 0..distinct {
        if i % (COST_NODES - 1) == 0 {
            sequence += 1;
        }
        let node = i % (COST_NODES - 1);
        let frame = plain.frame(node, sequence, false);
        plain_runs.push(run(plain.program()?, &frame, 1, Some(1))?.as_nanos() as u64);
        let frame = signed.frame(node, sequence, false);
        signed_runs.push(run(signed.program()?, &frame, 1, Some(1))?.as_nanos() as u64);
    }
    // Probe replies after the heartbeats, not interleaved with them: the
    // heartbeat rows are measured exactly as before probes existed.
    let mut sequence = 0;
    for i in 0..distinct {
        if i % (COST_NODES - 1) == 0 {
            sequence += 1;
        }
        let frame = plain.probe_reply(i % (COST_NODES - 1), sequence);
        probe_runs.push(run(plain.program()?, &frame, 1, Some(1))?.as_nanos() as u64);
    }
    let plain_single = min_median(&mut plain_runs).1 as f64;
    let signed_single = min_median(&mut signed_runs).1 as f64;
    let probe_single = min_median(&mut probe_runs).1 as f64;
    plain.check_accepted(Counter::Accepted, distinct)?;
    signed.check_accepted(Counter::Accepted, distinct)?;
    plain.check_accepted(Counter::ProbeAccepted, distinct)?;

    let (arp_repeated, single_run_overhead) = timing_overhead(plain.program()?, distinct, repeat)?;

    // Node 0 has just accepted `sequence`; the same packet again is a replay.
    let repeated_cost = |rig: &mut CostRig, frame: Vec<u8>, action| -> anyhow::Result<f64> {
        Ok(run(rig.program()?, &frame, repeat, Some(action))?.as_nanos() as f64)
    };
    let frame = plain.frame(0, 1, false);
    let replay = repeated_cost(&mut plain, frame, 1)?;
    let frame = signed.frame(0, 1, false);
    let signed_replay = repeated_cost(&mut signed, frame, 1)?;
    let frame = signed.frame(0, sequence + 1, true);
    let bad_tag = repeated_cost(&mut signed, frame, 1)?;
    let frame = plain.frame(unknown, 1, false);
    let unknown = repeated_cost(&mut plain, frame, 1)?;
    let other_port = repeated_cost(&mut plain, ipv4_udp_frame(53, &[0u8; 56]), 2)?;
    let frame = plain.probe_reply(0, 1);
    let probe_replay = repeated_cost(&mut plain, frame, 1)?;

    let floors = floor_costs(distinct, repeat, single_run_overhead)?;

    let repeated = format!("kernel-timed over {repeat} repeats of one packet");
    let single = |median: f64| {
        format!(
            "{distinct} distinct packets run once each (median {median:.0} ns), minus the \
             single-run timing overhead ({single_run_overhead:.1} ns: ARP's median single run \
             minus its repeated-run time)"
        )
    };
    let case = |case, ns_per_packet, method| PacketCost {
        case,
        ns_per_packet,
        method,
    };
    Ok(XdpCost {
        cases: vec![
            case(
                "accepted heartbeat",
                plain_single - single_run_overhead,
                single(plain_single),
            ),
            case(
                "accepted authenticated heartbeat",
                signed_single - single_run_overhead,
                single(signed_single),
            ),
            case(
                "accepted probe reply",
                probe_single - single_run_overhead,
                single(probe_single),
            ),
            case("replay", replay, repeated.clone()),
            case("probe reply replay", probe_replay, repeated.clone()),
            case("authenticated replay", signed_replay, repeated.clone()),
            case("bad tag", bad_tag, repeated.clone()),
            case("unknown node", unknown, repeated.clone()),
            case("UDP to another port", other_port, repeated.clone()),
            case("ARP (not IP)", arp_repeated, repeated),
        ]
        .into_iter()
        .chain(floors)
        .collect(),
    })
}

/// The floor cases: the bench-only programs of `hb-floor` (an empty
/// program, one clock read, one array lookup), timed like an accepted
/// heartbeat (`distinct` single runs, interleaved, their median minus
/// `single_run_overhead`), with their repeated-run time in the method.
fn floor_costs(
    distinct: u32,
    repeat: u32,
    single_run_overhead: f64,
) -> anyhow::Result<Vec<PacketCost>> {
    const FLOORS: [(&str, &str); 3] = [
        (
            "floor: empty program (BPF_PROG_TEST_RUN itself)",
            globals::FLOOR_EMPTY_PROGRAM,
        ),
        (
            "floor: one clock read (bpf_ktime_get_ns)",
            globals::FLOOR_CLOCK_PROGRAM,
        ),
        (
            "floor: one array lookup and increment",
            globals::FLOOR_LOOKUP_PROGRAM,
        ),
    ];
    let mut ebpf = Ebpf::load(FLOOR_OBJECT).context("loading the floor programs")?;
    for (_, name) in FLOORS {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name} in the floor object"))?
            .try_into()?;
        program.load().with_context(|| format!("loading {name}"))?;
    }
    let programs: Vec<&Xdp> = FLOORS
        .iter()
        .map(|(_, name)| {
            ebpf.program(name)
                .and_then(|p| <&Xdp>::try_from(p).ok())
                .with_context(|| format!("program {name}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let frame = arp_frame();
    let mut singles = vec![Vec::with_capacity(distinct as usize); FLOORS.len()];
    for _ in 0..distinct {
        for (program, runs) in programs.iter().zip(&mut singles) {
            runs.push(run(program, &frame, 1, Some(2))?.as_nanos() as u64);
        }
    }
    FLOORS
        .iter()
        .zip(programs)
        .zip(&mut singles)
        .map(|(((case, _), program), runs)| {
            let median = min_median(runs).1 as f64;
            let repeated = run(program, &frame, repeat, Some(2))?.as_nanos() as f64;
            Ok(PacketCost {
                case,
                ns_per_packet: median - single_run_overhead,
                method: format!(
                    "{distinct} single runs (median {median:.0} ns) minus the single-run timing \
                     overhead ({single_run_overhead:.1} ns), as an accepted heartbeat; \
                     {repeated:.1} ns per run over {repeat} repeats"
                ),
            })
        })
        .collect()
}

/// ARP's time per run over `repeat` runs of one packet, and the kernel's
/// per-call timing overhead: ARP's median single run (of `distinct`) minus
/// that.
fn timing_overhead(program: &Xdp, distinct: u32, repeat: u32) -> anyhow::Result<(f64, f64)> {
    let arp = arp_frame();
    let mut arp_single_runs = Vec::with_capacity(distinct as usize);
    for _ in 0..distinct {
        arp_single_runs.push(run(program, &arp, 1, Some(2))?.as_nanos() as u64);
    }
    let arp_single = min_median(&mut arp_single_runs).1 as f64;
    let arp_repeated = run(program, &arp, repeat, Some(2))?.as_nanos() as f64;
    Ok((arp_repeated, (arp_single - arp_repeated).max(0.0)))
}

/// Runs `frame` `repeat` times; returns the kernel's time per run, checking
/// the XDP action if `expect` is given.
fn run(program: &Xdp, frame: &[u8], repeat: u32, expect: Option<u32>) -> anyhow::Result<Duration> {
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    if let Some(expected) = expect
        && result.return_value != expected
    {
        bail!(
            "XDP returned {} where {expected} was expected",
            result.return_value
        );
    }
    Ok(result.duration)
}

/// Ethernet + IPv4 (198.18.0.2 -> 198.18.0.1) + UDP to `port` + `payload`.
pub fn ipv4_udp_frame(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + 20 + 8 + payload.len());
    frame.put_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
    frame.put_u16(0x0800);
    // IPv4: IHL 5, DF, TTL 64, UDP, no checksum.
    frame.put_slice(&[0x45, 0]);
    frame.put_u16((20 + 8 + payload.len()) as u16);
    frame.put_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    frame.put_slice(&[198, 18, 0, 2, 198, 18, 0, 1]);
    // UDP, no checksum.
    frame.put_u16(40000);
    frame.put_u16(port);
    frame.put_u16((8 + payload.len()) as u16);
    frame.put_u16(0);
    frame.put_slice(payload);
    frame
}

/// Ethernet + IPv4 (198.18.0.2 -> 198.18.0.1) + `icmp` (an ICMP message).
pub fn ipv4_icmp_frame(icmp: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + 20 + icmp.len());
    frame.put_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
    frame.put_u16(0x0800);
    // IPv4: IHL 5, DF, TTL 64, ICMP, no checksum.
    frame.put_slice(&[0x45, 0]);
    frame.put_u16((20 + icmp.len()) as u16);
    frame.put_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0]);
    frame.put_slice(&COST_SOURCE);
    frame.put_slice(&[198, 18, 0, 1]);
    frame.put_slice(icmp);
    frame
}

fn arp_frame() -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x08, 0x06]);
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 198, 18, 0, 2]);
    frame.extend_from_slice(&[0, 0, 0, 0, 0, 0, 198, 18, 0, 1]);
    frame
}

#[derive(Debug, Serialize)]
pub struct SweepCost {
    pub nodes: u32,
    /// Bytes one sweep reads: the seen word and the detector's watch word.
    pub hot_bytes: u64,
    pub sweep_ns_min: u64,
    pub sweep_ns_median: u64,
    pub memcpy_ns_min: u64,
    pub memcpy_ns_median: u64,
    pub rounds: u32,
    /// The fast pass's implementation on this processor.
    pub kernel: String,
}

/// Times the sweep of `nodes` up nodes over the real mmapped BPF table.
/// With `phi_heard` 0: all heard recently, the timeout rule (the steady
/// state: nothing to do but check). Otherwise the phi rule, every node with
/// an interval estimate, and that share of them heard anew before each
/// sweep (their deadlines are recomputed: the slow path).
pub fn sweep(nodes: u32, rounds: u32, phi_heard: f64) -> anyhow::Result<SweepCost> {
    let datapath = XdpDatapath::load(LoadOptions {
        port: DEFAULT_PORT,
        max_nodes: nodes,
        pass_heartbeats: false,
        unauthenticated: Unauthenticated::Accept,
    })?;
    let table = datapath.table();
    let settings = if phi_heard > 0.0 {
        DetectorSettings {
            rule: Rule::Phi {
                detector: PhiDetector::default(),
                suspect: PhiDetector::new(PhiSettings {
                    threshold: PhiSettings::default().threshold / 2.0,
                    ..PhiSettings::default()
                })?,
                acceptable_pause_ns: None,
            },
            ..DetectorSettings::plain_timeout(1_000_000_000, 3)
        }
    } else {
        DetectorSettings::plain_timeout(1_000_000_000, 3)
    };
    let watched: Vec<_> = (0..nodes)
        .map(|node_id| WatchedNode {
            node_id,
            interval_ns: None,
        })
        .collect();
    let start = monotonic_ns();
    let mut detector = Detector::new(settings, nodes, &watched, start);
    drop(watched);
    // A mean of 1 s, a deviation of 20 ms.
    let estimate = intervals::word(1_000_000, 20_000);
    for id in 0..nodes {
        table.configure(
            id,
            NodeRecord {
                interval_ms: 1000,
                heartbeats: 100,
                ..Default::default()
            },
        );
        table.intervals.set(id, estimate);
        table.seen.set(id, seen::word(start, false));
        detector.restore(id, NodeState::Up, 1000, estimate);
    }
    // The nodes heard before each sweep: every `step`-th, from a rotating
    // offset.
    let step = if phi_heard > 0.0 {
        (1.0 / phi_heard).round().max(1.0) as u32
    } else {
        0
    };

    let mut transitions = Vec::new();
    let mut sweeps = Vec::with_capacity(rounds as usize);
    for round in 0..rounds {
        if step > 0 {
            let heard = monotonic_ns();
            for id in (round % step..nodes).step_by(step as usize) {
                table.seen.set(id, seen::word(heard, false));
            }
        }
        let now = monotonic_ns();
        let t = Instant::now();
        detector.sweep(now, table, &mut transitions);
        sweeps.push(t.elapsed().as_nanos() as u64);
        if !transitions.is_empty() {
            bail!(
                "{} nodes changed state during the sweep benchmark",
                transitions.len()
            );
        }
    }

    // The floor: copy the same bytes (8 B seen word + 4 B watch word per node).
    let (hot_bytes, mut copies) = copy_floor(&table.seen.atomics()[..nodes as usize], rounds);
    let (sweep_ns_min, sweep_ns_median) = min_median(&mut sweeps);
    let (memcpy_ns_min, memcpy_ns_median) = min_median(&mut copies);
    Ok(SweepCost {
        nodes,
        hot_bytes,
        sweep_ns_min,
        sweep_ns_median,
        memcpy_ns_min,
        memcpy_ns_median,
        rounds,
        kernel: hb::detect::fast_pass_kernel().to_owned(),
    })
}

/// Times `rounds` plain copies of the bytes a sweep reads: every seen word,
/// then a watch word per node. Returns the bytes copied and the times.
fn copy_floor(seen: &[AtomicU64], rounds: u32) -> (u64, Vec<u64>) {
    let nodes = seen.len();
    let seen_bytes = nodes * 8;
    let watch_bytes = nodes * 4;
    let watch_words = vec![0x4000_0bb8u32; nodes];
    let mut destination = vec![0u8; seen_bytes + watch_bytes];
    let mut copies = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t = Instant::now();
        // SAFETY: `seen` holds `nodes` u64 values, the destination has room
        // for them followed by the watch words; no overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                seen.as_ptr().cast::<u8>(),
                destination.as_mut_ptr(),
                seen_bytes,
            );
            std::ptr::copy_nonoverlapping(
                watch_words.as_ptr().cast::<u8>(),
                destination.as_mut_ptr().add(seen_bytes),
                watch_bytes,
            );
        }
        std::hint::black_box(&destination);
        copies.push(t.elapsed().as_nanos() as u64);
    }
    ((seen_bytes + watch_bytes) as u64, copies)
}

fn min_median(samples: &mut [u64]) -> (u64, u64) {
    samples.sort_unstable();
    (samples[0], samples[samples.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_well_formed() {
        let hb = Heartbeat {
            flags: 0,
            key_id: 0,
            node_id: 1,
            interval_ms: 1,
            incarnation: 1,
            sequence: 1,
            sent_unix_ns: 0,
            auth_tag: [0; 16],
        };
        let frame = ipv4_udp_frame(DEFAULT_PORT, &hb.encode());
        assert_eq!(frame.len(), 14 + 20 + 8 + 56);
        assert_eq!(u16::from_be_bytes([frame[16], frame[17]]), 20 + 8 + 56);
        assert_eq!(u16::from_be_bytes([frame[36], frame[37]]), DEFAULT_PORT);
        assert_eq!(Heartbeat::decode(&frame[42..]), Ok(hb));
        assert_eq!(arp_frame().len(), 42);
    }

    #[test]
    fn min_median_of_samples() {
        assert_eq!(min_median(&mut [5, 1, 3]), (1, 3));
    }
}
