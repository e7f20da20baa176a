//! `BPF_PROG_TEST_RUN` fixtures for the probe replies hb's XDP program
//! records (issue 15, step 1; needs root).
//!
//! One datapath ([`MAX_NODES`] slots, [`CONFIGURED`] configured, a probe
//! secret installed with `set_probe_secret`) runs the rows of a table in
//! order. Each row gives the frame, the XDP action, the one outcome counter
//! it moves (the verdict counter follows from the action) and its effect on
//! the node table: nothing, or one node's seen word moved to an arrival time
//! between `CLOCK_MONOTONIC` readings taken around the run, its
//! `SLOT_PROBED_LAST` flag set (a probe reply) or cleared (a heartbeat), and
//! its last probe sequence. Every other counter, seen word, record and probe
//! sequence must stay as it was.
//!
//! Refused replies carry a node and a sequence that *would* be accepted, so
//! a row only passes if the program refuses it for the stated reason.

pub mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hb::{
    clock::monotonic_ns,
    datapath::xdp::{LoadOptions, XdpDatapath},
};
use hb_common::{
    admission::Unauthenticated,
    counters::Counter,
    probe::{
        ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, PROBE_LEN,
        Probe, echo_message,
    },
    siphash::Key,
    table::{NodeRecord, SLOT_CONFIGURED, SLOT_PROBED_LAST, seen, src_octets},
    wire::Heartbeat,
};
use hb_tools::frame::{ETH_HLEN, IPPROTO_ICMP, IPPROTO_UDP, IPV4_HLEN, PacketBuilder, eth};

use crate::common::{PORT, XDP_DROP, XDP_PASS, counters, outcomes_and_verdicts, records, run};

const MAX_NODES: u32 = 16;
const CONFIGURED: [u32; 3] = [1, 2, 3];
/// hb's echo identifier in these tests.
const IDENTIFIER: u16 = 0x4842;
const KEY: Key = [0x3c; 16];
/// The monitor.
const MONITOR4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const MONITOR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0x42, 0, 0, 0, 1);
/// The probed nodes' addresses, and another host.
const NODE4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 7);
const NODE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0x42, 0, 0, 0, 7);
const OTHER4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 8);
const IPPROTO_ICMPV6: u8 = 58;

/// What a row does to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Nothing,
    /// A probe reply recorded for the node, at this sequence.
    Probed {
        node: u32,
        sequence: u64,
    },
    /// A heartbeat recorded for the node.
    Heartbeat {
        node: u32,
    },
}

struct Row {
    what: String,
    frame: Vec<u8>,
    action: u32,
    outcome: Counter,
    effect: Effect,
}

fn row(what: impl Into<String>, frame: Vec<u8>, action: u32, outcome: Counter) -> Row {
    Row {
        what: what.into(),
        frame,
        action,
        outcome,
        effect: Effect::Nothing,
    }
}

fn probed(what: impl Into<String>, frame: Vec<u8>, node: u32, sequence: u64) -> Row {
    Row {
        effect: Effect::Probed { node, sequence },
        ..row(what, frame, XDP_DROP, Counter::ProbeAccepted)
    }
}

/// The echo data of a probe of `node` at `sequence` to `target`, under `key`.
fn data(key: &Key, node: u32, sequence: u64, target: IpAddr) -> [u8; PROBE_LEN] {
    Probe {
        node_id: node,
        sequence,
    }
    .encode(key, &src_octets(target))
}

/// An ICMP frame from `from` to the monitor (its family's) carrying `icmp`.
fn icmp_frame(from: IpAddr, icmp: &[u8]) -> PacketBuilder {
    match from {
        IpAddr::V4(from) => eth().ipv4(from, MONITOR4).ip_proto(IPPROTO_ICMP),
        IpAddr::V6(from) => eth().ipv6(from, MONITOR6).ip_proto(IPPROTO_ICMPV6),
    }
    .payload(icmp)
}

/// An echo reply from `from` to a probe of `node` at `sequence` sent to
/// `target` (the tag is over `target`), with hb's identifier.
fn reply_from(from: IpAddr, target: IpAddr, node: u32, sequence: u64) -> Vec<u8> {
    let kind = if from.is_ipv4() {
        ICMP_ECHO_REPLY
    } else {
        ICMPV6_ECHO_REPLY
    };
    let message = echo_message(kind, IDENTIFIER, 1, &data(&KEY, node, sequence, target));
    icmp_frame(from, &message).build()
}

/// The node's own reply.
fn reply(from: impl Into<IpAddr>, node: u32, sequence: u64) -> Vec<u8> {
    let from = from.into();
    reply_from(from, from, node, sequence)
}

/// A valid v4 reply of node 1 at `sequence` with its ICMP message edited.
fn edited_reply(sequence: u64, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut message = echo_message(
        ICMP_ECHO_REPLY,
        IDENTIFIER,
        1,
        &data(&KEY, 1, sequence, NODE4.into()),
    )
    .to_vec();
    edit(&mut message);
    icmp_frame(NODE4.into(), &message).build()
}

fn heartbeat(node: u32, sequence: u64) -> Vec<u8> {
    let payload = Heartbeat {
        flags: 0,
        key_id: 0,
        node_id: node,
        interval_ms: 1000,
        incarnation: 1,
        sequence,
        sent_unix_ns: 0,
        auth_tag: [0; 16],
    }
    .encode();
    eth()
        .ipv4(NODE4, MONITOR4)
        .udp(40_000, PORT)
        .payload(&payload)
        .build()
}

struct Harness {
    dp: XdpDatapath,
    failures: Vec<String>,
    runs: u64,
}

impl Harness {
    fn load(pass_heartbeats: bool) -> Self {
        let dp = common::load(LoadOptions {
            port: PORT,
            max_nodes: MAX_NODES,
            pass_heartbeats,
            unauthenticated: Unauthenticated::Accept,
        });
        for id in CONFIGURED {
            dp.table().configure(
                id,
                NodeRecord {
                    slot_flags: SLOT_CONFIGURED,
                    ..NodeRecord::default()
                },
            );
        }
        Harness {
            dp,
            failures: Vec::new(),
            runs: 0,
        }
    }

    fn secret(&mut self, identifier: u16, key: &Key) {
        self.dp
            .set_probe_secret(identifier, key)
            .unwrap_or_else(|e| panic!("set_probe_secret: {e}"));
    }

    fn sequences(&self) -> Vec<u64> {
        let map = self.dp.probe_sequences();
        (0..map.len()).map(|id| map.get(id)).collect()
    }

    fn seen(&self) -> Vec<u64> {
        (0..self.dp.table().len())
            .map(|id| self.dp.table().seen.get(id))
            .collect()
    }

    fn run_table(&mut self, rows: &[Row]) {
        for (index, row) in rows.iter().enumerate() {
            self.check(index, row);
        }
    }

    fn check(&mut self, index: usize, row: &Row) {
        let (counters_before, records_before, seen_before, sequences_before) = (
            counters(&self.dp),
            records(&self.dp),
            self.seen(),
            self.sequences(),
        );
        let before = monotonic_ns();
        let action = run(&mut self.dp, &row.frame);
        let after = monotonic_ns();
        self.runs += 1;
        let (counters_after, records_after, seen_after, sequences_after) = (
            counters(&self.dp),
            records(&self.dp),
            self.seen(),
            self.sequences(),
        );
        let mut wrong = Vec::new();
        if action != row.action {
            wrong.push(format!("action {action}, expected {}", row.action));
        }
        let verdict = if row.action == XDP_DROP {
            Counter::Dropped
        } else {
            Counter::Passed
        };
        for counter in Counter::ALL {
            let delta = counters_after[counter as usize] - counters_before[counter as usize];
            let expected = u64::from(counter == row.outcome || counter == verdict);
            if delta != expected {
                wrong.push(format!("{} moved by {delta}", counter.name()));
            }
        }
        let (mut records_expected, mut seen_expected, mut sequences_expected) = (
            records_before.clone(),
            seen_before.clone(),
            sequences_before,
        );
        let moved = match row.effect {
            Effect::Nothing => None,
            Effect::Probed { node, sequence } => {
                records_expected[node as usize].slot_flags |= SLOT_PROBED_LAST;
                sequences_expected[node as usize] = sequence;
                Some(node)
            }
            Effect::Heartbeat { node } => {
                let record = &mut records_expected[node as usize];
                // What the heartbeat wrote, checked on its own below.
                *record = records_after[node as usize];
                if record.probed_last() {
                    wrong.push(format!("node {node}: SLOT_PROBED_LAST still set"));
                }
                if record.heartbeats != records_before[node as usize].heartbeats + 1 {
                    wrong.push(format!("node {node}: heartbeat not recorded"));
                }
                Some(node)
            }
        };
        if let Some(node) = moved {
            let word = seen_after[node as usize];
            let arrival = seen::arrival_ns(word);
            if !(before & !1..=after).contains(&arrival) || seen::is_leave(word) {
                wrong.push(format!(
                    "node {node}: seen word {word} is not an arrival between {before} and {after}"
                ));
            }
            seen_expected[node as usize] = word;
        }
        if records_after != records_expected {
            wrong.push(format!(
                "records changed: {:?}",
                diff(&records_expected, &records_after)
            ));
        }
        if seen_after != seen_expected {
            wrong.push(format!(
                "seen words changed: {:?}",
                diff(&seen_expected, &seen_after)
            ));
        }
        if sequences_after != sequences_expected {
            wrong.push(format!(
                "probe sequences {sequences_after:?}, expected {sequences_expected:?}"
            ));
        }
        if !wrong.is_empty() {
            self.failures
                .push(format!("row {index} ({}): {}", row.what, wrong.join("; ")));
        }
    }

    fn finish(self) {
        let counters = counters(&self.dp);
        let (outcomes, verdicts) = outcomes_and_verdicts(&counters);
        assert!(
            self.failures.is_empty(),
            "{} rows failed:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
        assert_eq!((outcomes, verdicts), (self.runs, self.runs));
    }
}

fn diff<T: PartialEq + std::fmt::Debug>(expected: &[T], got: &[T]) -> Vec<String> {
    expected
        .iter()
        .zip(got)
        .enumerate()
        .filter(|(_, (e, g))| e != g)
        .map(|(id, (e, g))| format!("slot {id}: expected {e:?}, got {g:?}"))
        .collect()
}

#[test]
fn probe_reply_table() {
    let mut harness = Harness::load(false);
    harness.secret(IDENTIFIER, &KEY);
    let not_ours = |what: &str, frame| row(what, frame, XDP_PASS, Counter::NotHeartbeat);
    let malformed = |what: &str, frame| row(what, frame, XDP_PASS, Counter::ProbeMalformed);
    let dropped = |what: &str, frame, outcome| row(what, frame, XDP_DROP, outcome);
    let rows = vec![
        probed("valid IPv4 reply", reply(NODE4, 1, 1), 1, 1),
        probed("valid IPv6 reply", reply(NODE6, 2, 1), 2, 1),
        probed("node 1 again, next sequence", reply(NODE4, 1, 2), 1, 2),
        probed("a sequence gap is fine", reply(NODE4, 1, 10), 1, 10),
        not_ours("wrong identifier", edited_reply(11, |m| m[5] ^= 1)),
        dropped(
            "wrong tag",
            edited_reply(11, |m| m[8 + 24] ^= 1),
            Counter::ProbeBadTag,
        ),
        dropped(
            "node id changed under the tag",
            edited_reply(11, |m| m[8 + 11] = 2),
            Counter::ProbeBadTag,
        ),
        dropped(
            "sequence changed under the tag",
            edited_reply(11, |m| m[8 + 23] ^= 0x80),
            Counter::ProbeBadTag,
        ),
        dropped(
            "reply from another address than the one probed",
            reply_from(OTHER4.into(), NODE4.into(), 1, 11),
            Counter::ProbeBadTag,
        ),
        dropped(
            "IPv6 reply for a probe sent to an IPv4 address",
            reply_from(NODE6.into(), NODE4.into(), 1, 11),
            Counter::ProbeBadTag,
        ),
        dropped(
            "tagged under another secret",
            icmp_frame(
                NODE4.into(),
                &echo_message(
                    ICMP_ECHO_REPLY,
                    IDENTIFIER,
                    1,
                    &data(&[0x3d; 16], 1, 11, NODE4.into()),
                ),
            )
            .build(),
            Counter::ProbeBadTag,
        ),
        dropped("replayed reply", reply(NODE4, 1, 10), Counter::ProbeReplay),
        dropped("older sequence", reply(NODE4, 1, 3), Counter::ProbeReplay),
        dropped("sequence 0", reply(NODE4, 3, 0), Counter::ProbeReplay),
        dropped(
            "unknown node (not configured)",
            reply(NODE4, 4, 1),
            Counter::ProbeUnknownNode,
        ),
        dropped(
            "unknown node (beyond max_nodes)",
            reply(NODE4, MAX_NODES, 1),
            Counter::ProbeUnknownNode,
        ),
        malformed(
            "data one byte short",
            edited_reply(11, |m| {
                m.pop();
            }),
        ),
        malformed("data one byte long", edited_reply(11, |m| m.push(0))),
        malformed(
            "data truncated (the IP length says 32 bytes)",
            icmp_frame(
                NODE4.into(),
                &echo_message(
                    ICMP_ECHO_REPLY,
                    IDENTIFIER,
                    1,
                    &data(&KEY, 1, 11, NODE4.into()),
                ),
            )
            .truncate(ETH_HLEN + IPV4_HLEN + 8 + 20)
            .build(),
        ),
        malformed("wrong magic", edited_reply(11, |m| m[8] ^= 1)),
        malformed("wrong version", edited_reply(11, |m| m[8 + 4] = 2)),
        malformed("reserved byte set", edited_reply(11, |m| m[8 + 13] = 1)),
        not_ours(
            "truncated inside the ICMP header",
            icmp_frame(NODE4.into(), &[0u8; 40])
                .truncate(ETH_HLEN + IPV4_HLEN + 6)
                .build(),
        ),
        not_ours(
            "IPv4 echo request (not a reply)",
            icmp_frame(
                NODE4.into(),
                &echo_message(
                    ICMP_ECHO_REQUEST,
                    IDENTIFIER,
                    1,
                    &data(&KEY, 1, 11, NODE4.into()),
                ),
            )
            .build(),
        ),
        not_ours(
            "IPv6 echo request (not a reply)",
            icmp_frame(
                NODE6.into(),
                &echo_message(
                    ICMPV6_ECHO_REQUEST,
                    IDENTIFIER,
                    1,
                    &data(&KEY, 2, 11, NODE6.into()),
                ),
            )
            .build(),
        ),
        not_ours(
            "IPv4 echo reply with code 1",
            edited_reply(11, |m| m[1] = 1),
        ),
        not_ours(
            "ICMP destination unreachable",
            icmp_frame(NODE4.into(), &[3, 1, 0, 0, 0, 0, 0, 0, 0x45, 0, 0, 28]).build(),
        ),
        not_ours(
            "ICMPv6 destination unreachable",
            icmp_frame(NODE6.into(), &[1, 0, 0, 0, 0, 0, 0, 0]).build(),
        ),
        not_ours(
            "ICMPv6 type 129 over IPv4 (not ICMP's echo reply)",
            edited_reply(11, |m| m[0] = ICMPV6_ECHO_REPLY),
        ),
        not_ours(
            "ICMP echo reply type 0 over IPv6 (not ICMPv6's)",
            icmp_frame(
                NODE6.into(),
                &echo_message(
                    ICMP_ECHO_REPLY,
                    IDENTIFIER,
                    1,
                    &data(&KEY, 2, 11, NODE6.into()),
                ),
            )
            .build(),
        ),
        not_ours(
            "an IPv4 fragment",
            icmp_frame(
                NODE4.into(),
                &echo_message(
                    ICMP_ECHO_REPLY,
                    IDENTIFIER,
                    1,
                    &data(&KEY, 1, 11, NODE4.into()),
                ),
            )
            .fragment(true, 0)
            .build(),
        ),
        not_ours(
            "UDP carrying a probe reply's bytes",
            eth()
                .ipv4(NODE4, MONITOR4)
                .ip_proto(IPPROTO_UDP)
                .payload(&echo_message(
                    ICMP_ECHO_REPLY,
                    IDENTIFIER,
                    1,
                    &data(&KEY, 1, 11, NODE4.into()),
                ))
                .build(),
        ),
        Row {
            effect: Effect::Heartbeat { node: 1 },
            ..row(
                "a UDP heartbeat of node 1 beside them (clears SLOT_PROBED_LAST)",
                heartbeat(1, 1),
                XDP_DROP,
                Counter::Accepted,
            )
        },
        probed(
            "node 1 probed again after its heartbeat",
            reply(NODE4, 1, 11),
            1,
            11,
        ),
        probed("node 3 from IPv6", reply(NODE6, 3, 5), 3, 5),
    ];
    harness.run_table(&rows);
    harness.finish();
}

/// No secret installed (a program loaded, no prober yet): no ICMP packet is
/// hb's, even one with identifier 0 (the uninstalled secret's).
#[test]
fn without_a_secret_every_echo_reply_is_passed() {
    let mut harness = Harness::load(false);
    let zero_identifier = icmp_frame(
        NODE4.into(),
        &echo_message(ICMP_ECHO_REPLY, 0, 1, &data(&[0; 16], 1, 1, NODE4.into())),
    )
    .build();
    let rows = [
        row(
            "hb's reply",
            reply(NODE4, 1, 1),
            XDP_PASS,
            Counter::NotHeartbeat,
        ),
        row(
            "identifier 0, zero key",
            zero_identifier,
            XDP_PASS,
            Counter::NotHeartbeat,
        ),
    ];
    harness.run_table(&rows);
    harness.finish();
}

/// A new secret (the agent's next start): replies under the old one fail
/// the tag, the sequences start again, and another identifier is hb's.
#[test]
fn a_new_secret_refuses_old_replies_and_restarts_the_sequences() {
    let mut harness = Harness::load(false);
    harness.secret(IDENTIFIER, &[0x01; 16]);
    let old = icmp_frame(
        NODE4.into(),
        &echo_message(
            ICMP_ECHO_REPLY,
            IDENTIFIER,
            1,
            &data(&[0x01; 16], 1, 7, NODE4.into()),
        ),
    )
    .build();
    harness.run_table(&[probed("under the first secret", old.clone(), 1, 7)]);
    harness.secret(IDENTIFIER, &KEY);
    assert_eq!(harness.sequences()[1], 0, "the sequences were not cleared");
    harness.run_table(&[
        row(
            "the first secret's reply again",
            old,
            XDP_DROP,
            Counter::ProbeBadTag,
        ),
        probed("sequence 1 under the new secret", reply(NODE4, 1, 1), 1, 1),
    ]);
    harness.secret(IDENTIFIER + 1, &KEY);
    harness.run_table(&[
        row(
            "the previous identifier",
            reply(NODE4, 1, 2),
            XDP_PASS,
            Counter::NotHeartbeat,
        ),
        probed(
            "the new identifier",
            edited_reply(2, |m| m[5] = (IDENTIFIER + 1) as u8),
            1,
            2,
        ),
    ]);
    harness.finish();
}

/// `pass_heartbeats` passes recorded heartbeats on; probe replies are
/// consumed all the same (hb sent the request, no one else waits for the
/// reply).
#[test]
fn probe_replies_are_consumed_even_when_heartbeats_are_passed_on() {
    let mut harness = Harness::load(true);
    harness.secret(IDENTIFIER, &KEY);
    harness.run_table(&[
        probed("valid reply", reply(NODE4, 1, 1), 1, 1),
        row("replay", reply(NODE4, 1, 1), XDP_DROP, Counter::ProbeReplay),
        Row {
            effect: Effect::Heartbeat { node: 2 },
            ..row("heartbeat", heartbeat(2, 1), XDP_PASS, Counter::Accepted)
        },
    ]);
    harness.finish();
}
