//! The property checker: the program loaded with its keys and table, each
//! packet run through `BPF_PROG_TEST_RUN`, and the table and counters
//! compared before and after.

use std::net::IpAddr;

use aya::programs::{ProgramError, TestRun, TestRunOptions};
use hb::{
    datapath::xdp::{LoadOptions, XdpDatapath},
    keys::hex,
};
use hb_common::{
    admission::Unauthenticated,
    auth::KeySlots,
    counters::Counter,
    table::{NodeRecord, SLOT_PINNED, seen, src_octets},
    wire::RawHeartbeat,
};

use super::{
    EXAMPLES, MAX_NODES, PINNED, PINNED_SRC, PORT, UNCONFIGURED,
    category::Category,
    generator::{Accept, Expect, Packet, Sent},
    report::{CategoryCount, HostileReport, Violation},
};
use crate::frame::ETH_HLEN;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// One slot: its cold record and its seen word.
pub(super) type Slot = (NodeRecord, u64);

/// The program's counters, by [`Counter`].
type Counters = [u64; Counter::COUNT as usize];

pub(super) struct Rig {
    datapath: XdpDatapath,
    /// Counters after the last run.
    counters: Counters,
    runs: u64,
    refused_by_kernel: u64,
    program_ns: u128,
    categories: Vec<CategoryCount>,
    violations: u64,
    examples: Vec<Violation>,
}

impl Rig {
    pub(super) fn load(keys: &KeySlots) -> anyhow::Result<Self> {
        let mut datapath = XdpDatapath::load(LoadOptions {
            port: PORT,
            max_nodes: MAX_NODES,
            pass_heartbeats: false,
            unauthenticated: Unauthenticated::Refuse,
        })?;
        datapath.set_keys(keys)?;
        for (id, record) in configured_slots() {
            datapath.table().configure(id, record);
        }
        let counters = datapath.counters()?;
        Ok(Rig {
            datapath,
            counters,
            runs: 0,
            refused_by_kernel: 0,
            program_ns: 0,
            categories: vec![CategoryCount::default(); Category::ALL.len()],
            violations: 0,
            examples: Vec::new(),
        })
    }

    pub(super) fn table(&self) -> Vec<Slot> {
        let table = self.datapath.table();
        (0..MAX_NODES)
            .map(|id| (table.records.get(id), table.seen.get(id)))
            .collect()
    }

    /// Runs `packet` and checks it against the property; returns what to
    /// remember for replays if it was accepted as predicted.
    pub(super) fn check(
        &mut self,
        index: u64,
        packet: &Packet,
        before: &[Slot],
    ) -> anyhow::Result<Option<Sent>> {
        let category = packet.category as usize;
        self.categories[category].packets += 1;
        let result = self.datapath.program()?.test_run(TestRunOptions {
            data_in: Some(&packet.frame),
            repeat: 1,
            ..Default::default()
        });
        let mut problems: Vec<String> = packet.flaw.iter().cloned().collect();
        let after_counters = self.datapath.counters()?;
        let table = TableChange::new(before, self.table());
        let result = match result {
            Ok(result) => result,
            Err(error) => {
                self.not_run(packet, error, after_counters, &table, &mut problems);
                self.report(index, packet, problems);
                return Ok(None);
            }
        };
        self.runs += 1;
        self.program_ns += result.duration.as_nanos();
        let outcome = self.moved_counters(result.return_value, after_counters, &mut problems);
        if let Some(outcome) = outcome {
            *self.categories[category]
                .outcomes
                .entry(outcome.name())
                .or_default() += 1;
        }
        let remember = match &packet.expect {
            Expect::Accept(accept) => {
                check_accepted(packet, accept, outcome, &table, &mut problems)
            }
            Expect::Refuse(predicted) => {
                check_refused(outcome, *predicted, &table, &mut problems);
                None
            }
        };
        self.report(index, packet, problems);
        Ok(remember)
    }

    /// A packet the program did not run on: only frames shorter than
    /// Ethernet may be refused by the kernel, and then nothing may move.
    fn not_run(
        &mut self,
        packet: &Packet,
        error: ProgramError,
        after_counters: Counters,
        table: &TableChange<'_>,
        problems: &mut Vec<String>,
    ) {
        match error {
            ProgramError::SyscallError(error)
                if packet.frame.len() < ETH_HLEN
                    && error.io_error.raw_os_error() == Some(libc::EINVAL) =>
            {
                self.categories[packet.category as usize].refused_by_kernel += 1;
                self.refused_by_kernel += 1;
                if after_counters != self.counters {
                    problems.push("refused by the kernel, yet counters moved".to_owned());
                }
                if !table.changed.is_empty() {
                    problems.push(format!(
                        "refused by the kernel, yet slots {:?} changed",
                        table.changed
                    ));
                }
            }
            error => problems.push(format!("BPF_PROG_TEST_RUN failed: {error:?}")),
        }
        self.counters = after_counters;
    }

    /// Checks that a run moved exactly one outcome counter and the verdict
    /// counter matching it and the XDP `action`, each by one; returns the
    /// outcome.
    fn moved_counters(
        &mut self,
        action: u32,
        after_counters: Counters,
        problems: &mut Vec<String>,
    ) -> Option<Counter> {
        let before = std::mem::replace(&mut self.counters, after_counters);
        let moved: Vec<Counter> = Counter::ALL
            .into_iter()
            .filter(|c| after_counters[*c as usize] != before[*c as usize])
            .collect();
        let by_one = moved
            .iter()
            .all(|c| after_counters[*c as usize] == before[*c as usize] + 1);
        match moved[..] {
            [outcome, verdict] if by_one && outcome.is_outcome() && !verdict.is_outcome() => {
                let (expected_action, expected_verdict) = if outcome.is_heartbeat() {
                    (XDP_DROP, Counter::Dropped)
                } else {
                    (XDP_PASS, Counter::Passed)
                };
                if action != expected_action || verdict != expected_verdict {
                    problems.push(format!(
                        "outcome {} with action {action} and verdict {}",
                        outcome.name(),
                        verdict.name()
                    ));
                }
                Some(outcome)
            }
            _ => {
                problems.push(format!(
                    "counters moved: {}",
                    moved
                        .iter()
                        .map(|c| format!(
                            "{}+{}",
                            c.name(),
                            after_counters[*c as usize].wrapping_sub(before[*c as usize])
                        ))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
                None
            }
        }
    }

    fn report(&mut self, index: u64, packet: &Packet, problems: Vec<String>) {
        if problems.is_empty() {
            return;
        }
        self.violations += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(Violation {
                packet: index,
                category: packet.category.name(),
                what: packet.what.clone(),
                problem: problems.join("; "),
                frame: hex(&packet.frame),
            });
        }
    }

    pub(super) fn finish(
        mut self,
        seed: u64,
        packets: u64,
        seconds: f64,
    ) -> anyhow::Result<HostileReport> {
        let counters = self.datapath.counters()?;
        let outcomes_total: u64 = Counter::ALL
            .into_iter()
            .filter(|c| c.is_outcome())
            .map(|c| counters[c as usize])
            .sum();
        let verdicts = counters[Counter::Passed as usize] + counters[Counter::Dropped as usize];
        if outcomes_total != self.runs || verdicts != self.runs {
            self.violations += 1;
            self.examples.push(Violation {
                packet: packets,
                category: "all",
                what: "the whole run".to_owned(),
                problem: format!(
                    "the counters do not add up: {outcomes_total} outcomes and {verdicts} \
                     verdicts for {} runs",
                    self.runs
                ),
                frame: String::new(),
            });
        }
        Ok(HostileReport {
            seed,
            packets,
            runs: self.runs,
            refused_by_kernel: self.refused_by_kernel,
            seconds,
            packets_per_second: packets as f64 / seconds.max(f64::MIN_POSITIVE),
            program_ns_per_run: self.program_ns as f64 / self.runs.max(1) as f64,
            categories: Category::ALL
                .into_iter()
                .zip(self.categories)
                .map(|(category, count)| (category.name(), count))
                .collect(),
            counters: Counter::ALL
                .into_iter()
                .map(|c| (c.name(), counters[c as usize]))
                .collect(),
            outcomes_total,
            violations: self.violations,
            examples: self.examples,
        })
    }
}

/// The slots the table is configured with (before `SLOT_CONFIGURED` is
/// added): every one but [`UNCONFIGURED`], [`PINNED`] pinned.
pub(super) fn configured_slots() -> impl Iterator<Item = (u32, NodeRecord)> {
    (0..MAX_NODES).filter(|&id| id != UNCONFIGURED).map(|id| {
        let record = if id == PINNED {
            NodeRecord {
                slot_flags: SLOT_PINNED,
                src_addr: src_octets(IpAddr::V4(PINNED_SRC)),
                ..NodeRecord::default()
            }
        } else {
            NodeRecord::default()
        };
        (id, record)
    })
}

/// The table before and after a run, and the slots that differ.
struct TableChange<'a> {
    before: &'a [Slot],
    after: Vec<Slot>,
    changed: Vec<u32>,
}

impl<'a> TableChange<'a> {
    fn new(before: &'a [Slot], after: Vec<Slot>) -> Self {
        let changed = (0..MAX_NODES)
            .filter(|&id| before[id as usize] != after[id as usize])
            .collect();
        TableChange {
            before,
            after,
            changed,
        }
    }
}

/// A packet that must be accepted: exactly its node's slot changed, exactly
/// as `NodeRecord::record` says. Returns it for replays if so.
fn check_accepted(
    packet: &Packet,
    accept: &Accept,
    outcome: Option<Counter>,
    table: &TableChange<'_>,
    problems: &mut Vec<String>,
) -> Option<Sent> {
    if outcome.is_some_and(|o| o != Counter::Accepted) {
        problems.push(format!(
            "a valid heartbeat was refused: {}",
            outcome.map_or("?", Counter::name)
        ));
    }
    let node = accept.heartbeat.node_id;
    let (old, _) = table.before[node as usize];
    let mut expected = old;
    let payload = accept.payload();
    expected.record(
        RawHeartbeat::view(&payload),
        &accept.src,
        accept.src_port,
        true,
    );
    let (new, word) = table.after[node as usize];
    if table.changed != [node] {
        problems.push(format!(
            "accepted heartbeat of node {node}, but slots {:?} changed",
            table.changed
        ));
    } else if new != expected
        || seen::arrival_ns(word) == 0
        || seen::is_leave(word) != accept.heartbeat.is_leave()
    {
        problems.push(format!(
            "node {node} recorded as {new:?} (seen {word:#x}), expected {expected:?}"
        ));
    } else {
        return Some(Sent {
            frame: packet.frame.clone(),
            payload_at: accept.payload_at,
            src: accept.src,
        });
    }
    None
}

/// A packet that must be refused: no slot changed, not counted as
/// accepted, and refused for the `predicted` reason if there is one.
fn check_refused(
    outcome: Option<Counter>,
    predicted: Option<Counter>,
    table: &TableChange<'_>,
    problems: &mut Vec<String>,
) {
    if !table.changed.is_empty() {
        problems.push(format!(
            "a packet that must be refused changed slots {:?}: {}",
            table.changed,
            table
                .changed
                .iter()
                .map(|&id| format!(
                    "node {id} {:?} -> {:?}",
                    table.before[id as usize], table.after[id as usize]
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    match (outcome, predicted) {
        (Some(Counter::Accepted), _) => {
            problems.push("counted as accepted".to_owned());
        }
        (Some(outcome), Some(predicted)) if outcome != predicted => {
            problems.push(format!(
                "outcome {}, predicted {}",
                outcome.name(),
                predicted.name()
            ));
        }
        _ => {}
    }
}
