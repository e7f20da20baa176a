//! `hb-tools bench hostile`: hostile input for the XDP program through
//! `BPF_PROG_TEST_RUN`, from a seeded, deterministic generator.
//!
//! The program is loaded with unauthenticated heartbeats refused, two keys
//! installed (a current and a previous key id) and a [`MAX_NODES`]-slot
//! table: every slot configured except [`UNCONFIGURED`], and [`PINNED`]
//! pinned to [`PINNED_SRC`]. Each packet belongs to one [`Category`]: valid
//! signed heartbeats (the control group), the same through VLAN/QinQ tags,
//! IPv4 options or trailing padding, and the hostile ones: random bytes,
//! one-bit and one-byte mutations of valid heartbeats, every truncation
//! length, bad IPv4 IHLs, IPv6 extension headers, IPv4 fragments, wrong UDP
//! lengths, replays, forged leaves, unknown and wrong keys, unauthenticated
//! heartbeats, wrong sources for the pinned node and old incarnations.
//!
//! The property, checked after every packet with a full snapshot of the
//! table (records and seen words): only a fresh, validly signed heartbeat of
//! a configured node that the generator built to be accepted changes the
//! table, and then exactly its own slot, exactly as `NodeRecord::record`
//! says; every other packet leaves every slot as it was. A control that is
//! refused is a violation too (false rejections count). Mutations of a whole
//! frame start from a packet that was already accepted, so whatever survives
//! the mutation is at best a replay; mutations of a payload may start from a
//! fresh one, since the tag covers every payload byte. Every run must move
//! exactly one outcome counter and the verdict counter that matches both the
//! XDP action and the outcome; where the generator knows the outcome (a
//! replay, a forged leave, a payload mutation, a truncation...) it must be
//! that one. At the end the outcome counters must add up to the runs, and so
//! must `passed + dropped`. Violations are counted, and the first few kept
//! with their frames in hex, rather than stopping the run.
//!
//! The kernel refuses frames shorter than an Ethernet header (14 bytes) with
//! EINVAL instead of running the program (see `tests/xdp_fixtures.rs`):
//! such frames are counted as `refused_by_kernel`, not as runs, and must not
//! move any counter. Frames the generator lays out use only 198.18.0.0/15
//! and fd00::/8 addresses; random bytes and mutated headers are random.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use aya::programs::{ProgramError, TestRun, TestRunOptions};
use hb::datapath::xdp::{LoadOptions, XdpDatapath};
use hb_common::{
    admission::{self, Unauthenticated},
    auth::{self, KEY_SLOTS, KeySlot, KeySlots},
    counters::Counter,
    siphash::Key,
    table::{NodeRecord, SLOT_PINNED, seen},
    wire::{HEARTBEAT_LEN, Heartbeat, RawHeartbeat, flags},
};
use serde::Serialize;

use crate::frame::{ETH_HLEN, ETH_P_ARP, IPPROTO_UDP, PacketBuilder, UDP_HLEN, eth};

/// Packets per run of `hb-tools bench hostile` unless told otherwise.
pub const DEFAULT_PACKETS: u64 = 1_000_000;
/// The seed unless told otherwise.
pub const DEFAULT_SEED: u64 = 1;

/// Heartbeat port the program is loaded with.
pub const PORT: u16 = 9797;
/// Slots in the node table: small, so a full snapshot per packet is cheap.
pub const MAX_NODES: u32 = 16;
/// The one slot left unconfigured.
pub const UNCONFIGURED: u32 = 4;
/// The slot pinned to [`PINNED_SRC`].
pub const PINNED: u32 = 7;
/// The pinned node's address.
pub const PINNED_SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 7);
/// Key id of the current key; [`PREVIOUS_KEY_ID`] is still accepted.
pub const CURRENT_KEY_ID: u8 = 3;
pub const PREVIOUS_KEY_ID: u8 = 2;

const DST4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const DST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// Accepted frames kept for replays and their mutations.
const POOL: usize = 512;
/// Violations kept with their frames.
const EXAMPLES: usize = 10;
/// IPv6 extension headers the program does not walk: hop-by-hop, routing,
/// fragment, destination options.
const IPV6_EXTENSIONS: [u8; 4] = [0, 43, 44, 60];

/// What a generated packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// A fresh, validly signed heartbeat of a configured node (current or
    /// previous key, sometimes a genuine leave or a new incarnation): must
    /// be accepted.
    Control,
    /// A fresh heartbeat behind one or two VLAN/QinQ tags (accepted), three
    /// tags or a non-IP inner EtherType (not a heartbeat).
    VlanQinq,
    /// A fresh heartbeat in IPv4 with 1-10 words of options: accepted.
    Ipv4Options,
    /// IPv4 with an IHL below 5, or one that disagrees with the header.
    Ipv4BadIhl,
    /// IPv6 with hop-by-hop, routing, fragment or destination-options
    /// headers before UDP: not walked, so not a heartbeat.
    Ipv6Extension,
    /// IPv4 fragments: MF set and/or a fragment offset.
    Ipv4Fragment,
    /// UDP length 8 (zero-length payload), shorter than 64, larger than the
    /// packet, a payload longer than 56; and trailing bytes beyond a correct
    /// UDP length (accepted).
    UdpLength,
    /// A fresh heartbeat cut at every length in turn, over five frame shapes.
    Truncated,
    /// Random bytes, half of them behind plausible headers to the port.
    RandomBytes,
    /// One bit flipped: anywhere in an accepted frame, or in the payload of
    /// an accepted or a fresh heartbeat.
    BitFlip,
    /// One byte changed, likewise.
    ByteMutation,
    /// An exact copy of a frame accepted earlier.
    Replay,
    /// The LEAVE flag set on a signed heartbeat without signing it again.
    ForgedLeave,
    /// Signed under a key id the monitor has no key for.
    UnknownKey,
    /// Signed under a known key id with another key.
    WrongKey,
    /// Key id 0: refused by the policy.
    Unauthenticated,
    /// The pinned node's heartbeat from another address.
    WrongSource,
    /// A signed heartbeat of an older incarnation, or an older sequence.
    OldIncarnation,
    /// A signed heartbeat of the unconfigured slot or beyond the table.
    UnknownNode,
}

impl Category {
    /// Every category, in report order.
    pub const ALL: [Category; 19] = [
        Category::Control,
        Category::VlanQinq,
        Category::Ipv4Options,
        Category::Ipv4BadIhl,
        Category::Ipv6Extension,
        Category::Ipv4Fragment,
        Category::UdpLength,
        Category::Truncated,
        Category::RandomBytes,
        Category::BitFlip,
        Category::ByteMutation,
        Category::Replay,
        Category::ForgedLeave,
        Category::UnknownKey,
        Category::WrongKey,
        Category::Unauthenticated,
        Category::WrongSource,
        Category::OldIncarnation,
        Category::UnknownNode,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Category::Control => "control",
            Category::VlanQinq => "vlan_qinq",
            Category::Ipv4Options => "ipv4_options",
            Category::Ipv4BadIhl => "ipv4_bad_ihl",
            Category::Ipv6Extension => "ipv6_extension",
            Category::Ipv4Fragment => "ipv4_fragment",
            Category::UdpLength => "udp_length",
            Category::Truncated => "truncated",
            Category::RandomBytes => "random_bytes",
            Category::BitFlip => "bit_flip",
            Category::ByteMutation => "byte_mutation",
            Category::Replay => "replay",
            Category::ForgedLeave => "forged_leave",
            Category::UnknownKey => "unknown_key",
            Category::WrongKey => "wrong_key",
            Category::Unauthenticated => "unauthenticated",
            Category::WrongSource => "wrong_source",
            Category::OldIncarnation => "old_incarnation",
            Category::UnknownNode => "unknown_node",
        }
    }

    /// Share of the generated packets, in percent (they add up to 100).
    const fn weight(self) -> u64 {
        match self {
            Category::Control => 14,
            Category::VlanQinq => 5,
            Category::Ipv4Options => 4,
            Category::Ipv4BadIhl => 4,
            Category::Ipv6Extension => 4,
            Category::Ipv4Fragment => 4,
            Category::UdpLength => 5,
            Category::Truncated => 8,
            Category::RandomBytes => 10,
            Category::BitFlip => 10,
            Category::ByteMutation => 8,
            Category::Replay => 5,
            Category::ForgedLeave => 3,
            Category::UnknownKey => 3,
            Category::WrongKey => 2,
            Category::Unauthenticated => 3,
            Category::WrongSource => 3,
            Category::OldIncarnation => 3,
            Category::UnknownNode => 2,
        }
    }
}

const _: () = {
    let mut sum = 0;
    let mut i = 0;
    while i < Category::ALL.len() {
        sum += Category::ALL[i].weight();
        i += 1;
    }
    assert!(sum == 100);
};

/// What one category did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CategoryCount {
    /// Packets generated.
    pub packets: u64,
    /// Of those, shorter than Ethernet and refused by the kernel (not run).
    pub refused_by_kernel: u64,
    /// Outcome counter moved by each run, by name (only those that moved).
    pub outcomes: BTreeMap<&'static str, u64>,
}

/// A packet that broke the property, or a run that broke the counters.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// Index of the packet in the run (0-based).
    pub packet: u64,
    pub category: &'static str,
    /// How the packet was made.
    pub what: String,
    /// What went wrong.
    pub problem: String,
    /// The frame, in hex.
    pub frame: String,
}

/// The result of a run: what was sent, what the program counted, and every
/// violation of the property (the first [`EXAMPLES`] with their frames).
#[derive(Clone, Debug, Serialize)]
pub struct HostileReport {
    pub seed: u64,
    /// Packets generated.
    pub packets: u64,
    /// Packets the program ran on.
    pub runs: u64,
    /// Packets shorter than an Ethernet header, refused by the kernel with
    /// EINVAL before the program runs.
    pub refused_by_kernel: u64,
    /// Wall-clock time of the whole loop: generation, runs and checks.
    pub seconds: f64,
    pub packets_per_second: f64,
    /// Mean time the kernel reports per run of the program, in ns.
    pub program_ns_per_run: f64,
    /// By category name.
    pub categories: BTreeMap<&'static str, CategoryCount>,
    /// The program's counters at the end, by name.
    pub counters: BTreeMap<&'static str, u64>,
    /// Sum of the outcome counters; must equal `runs` (and `passed + dropped`).
    pub outcomes_total: u64,
    pub violations: u64,
    pub examples: Vec<Violation>,
}

/// Runs `packets` generated packets from `seed` through a freshly loaded
/// program and reports. Errors only if the program cannot be loaded or its
/// maps read; violations are results.
pub fn run(packets: u64, seed: u64) -> anyhow::Result<HostileReport> {
    let mut generator = Generator::new(seed);
    let mut rig = Rig::load(&generator.keys())?;
    let started = Instant::now();
    for index in 0..packets {
        let table = rig.table();
        let packet = generator.next(&table);
        if let Some(accepted) = rig.check(index, &packet, &table)? {
            generator.remember(accepted);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    rig.finish(seed, packets, seconds)
}

// ---------------------------------------------------------------------------
// The loaded program and the checks
// ---------------------------------------------------------------------------

/// One slot: its cold record and its seen word.
type Slot = (NodeRecord, u64);

struct Rig {
    datapath: XdpDatapath,
    /// Counters after the last run.
    counters: [u64; Counter::COUNT as usize],
    runs: u64,
    refused_by_kernel: u64,
    program_ns: u128,
    categories: Vec<CategoryCount>,
    violations: u64,
    examples: Vec<Violation>,
}

impl Rig {
    fn load(keys: &KeySlots) -> anyhow::Result<Self> {
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

    fn table(&self) -> Vec<Slot> {
        let table = self.datapath.table();
        (0..MAX_NODES)
            .map(|id| (table.records.get(id), table.seen.get(id)))
            .collect()
    }

    /// Runs `packet` and checks it against the property; returns what to
    /// remember for replays if it was accepted as predicted.
    fn check(
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
        let after = self.table();
        let changed: Vec<u32> = (0..MAX_NODES)
            .filter(|&id| before[id as usize] != after[id as usize])
            .collect();
        let result = match result {
            Ok(result) => result,
            Err(ProgramError::SyscallError(error))
                if packet.frame.len() < ETH_HLEN
                    && error.io_error.raw_os_error() == Some(libc::EINVAL) =>
            {
                self.categories[category].refused_by_kernel += 1;
                self.refused_by_kernel += 1;
                if after_counters != self.counters {
                    problems.push("refused by the kernel, yet counters moved".to_owned());
                }
                if !changed.is_empty() {
                    problems.push(format!(
                        "refused by the kernel, yet slots {changed:?} changed"
                    ));
                }
                self.counters = after_counters;
                self.report(index, packet, problems);
                return Ok(None);
            }
            Err(error) => {
                problems.push(format!("BPF_PROG_TEST_RUN failed: {error:?}"));
                self.counters = after_counters;
                self.report(index, packet, problems);
                return Ok(None);
            }
        };
        self.runs += 1;
        self.program_ns += result.duration.as_nanos();
        let action = result.return_value;

        // Exactly one outcome and the matching verdict, each by one.
        let moved: Vec<Counter> = Counter::ALL
            .into_iter()
            .filter(|c| after_counters[*c as usize] != self.counters[*c as usize])
            .collect();
        let by_one = moved
            .iter()
            .all(|c| after_counters[*c as usize] == self.counters[*c as usize] + 1);
        let outcome = match moved[..] {
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
                            after_counters[*c as usize].wrapping_sub(self.counters[*c as usize])
                        ))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
                None
            }
        };
        self.counters = after_counters;
        if let Some(outcome) = outcome {
            *self.categories[category]
                .outcomes
                .entry(outcome.name())
                .or_default() += 1;
        }

        // The table, and the predicted outcome.
        let mut remember = None;
        match &packet.expect {
            Expect::Accept(accept) => {
                if outcome.is_some_and(|o| o != Counter::Accepted) {
                    problems.push(format!(
                        "a valid heartbeat was refused: {}",
                        outcome.map_or("?", Counter::name)
                    ));
                }
                let node = accept.heartbeat.node_id;
                let (old, _) = before[node as usize];
                let mut expected = old;
                let payload = accept.payload();
                expected.record(
                    RawHeartbeat::view(&payload),
                    &accept.src,
                    accept.src_port,
                    true,
                );
                let (new, word) = after[node as usize];
                if changed != [node] {
                    problems.push(format!(
                        "accepted heartbeat of node {node}, but slots {changed:?} changed"
                    ));
                } else if new != expected
                    || seen::arrival_ns(word) == 0
                    || seen::is_leave(word) != accept.heartbeat.is_leave()
                {
                    problems.push(format!(
                        "node {node} recorded as {new:?} (seen {word:#x}), expected {expected:?}"
                    ));
                } else {
                    remember = Some(Sent {
                        frame: packet.frame.clone(),
                        payload_at: accept.payload_at,
                        src: accept.src,
                    });
                }
            }
            Expect::Refuse(predicted) => {
                if !changed.is_empty() {
                    problems.push(format!(
                        "a packet that must be refused changed slots {changed:?}: {}",
                        changed
                            .iter()
                            .map(|&id| format!(
                                "node {id} {:?} -> {:?}",
                                before[id as usize], after[id as usize]
                            ))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ));
                }
                match (outcome, predicted) {
                    (Some(Counter::Accepted), _) => {
                        problems.push("counted as accepted".to_owned());
                    }
                    (Some(outcome), Some(predicted)) if outcome != *predicted => {
                        problems.push(format!(
                            "outcome {}, predicted {}",
                            outcome.name(),
                            predicted.name()
                        ));
                    }
                    _ => {}
                }
            }
        }
        self.report(index, packet, problems);
        Ok(remember)
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

    fn finish(mut self, seed: u64, packets: u64, seconds: f64) -> anyhow::Result<HostileReport> {
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
fn configured_slots() -> impl Iterator<Item = (u32, NodeRecord)> {
    (0..MAX_NODES).filter(|&id| id != UNCONFIGURED).map(|id| {
        let record = if id == PINNED {
            NodeRecord {
                slot_flags: SLOT_PINNED,
                src_addr: PINNED_SRC.to_ipv6_mapped().octets(),
                ..NodeRecord::default()
            }
        } else {
            NodeRecord::default()
        };
        (id, record)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

// ---------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------

/// xorshift64, seeded through splitmix64 (so every seed, 0 included, gives
/// a good nonzero state). Deterministic; no dependency.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.index(from.len())]
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    /// A byte other than `old`.
    fn other_byte(&mut self, old: u8) -> u8 {
        old ^ (1 + self.below(255) as u8)
    }
}

/// A generated packet and what it must do.
struct Packet {
    category: Category,
    what: String,
    frame: Vec<u8>,
    expect: Expect,
    /// Something the generator itself found wrong with the packet (e.g.
    /// userspace admission accepting a mutated payload): a violation.
    flaw: Option<String>,
}

enum Expect {
    /// A fresh valid heartbeat: recorded, in its own slot only.
    Accept(Box<Accept>),
    /// Refused, with this outcome if the generator knows it; the table
    /// must not change.
    Refuse(Option<Counter>),
}

struct Accept {
    /// The heartbeat as signed: its `key_id` and `auth_tag` are the sent ones.
    heartbeat: Heartbeat,
    /// Source address (IPv6 or v4-mapped) and port it is sent from.
    src: [u8; 16],
    src_port: u16,
    /// Offset of the payload in the frame.
    payload_at: usize,
}

impl Accept {
    /// The payload bytes as sent.
    fn payload(&self) -> [u8; HEARTBEAT_LEN] {
        self.heartbeat.encode()
    }
}

/// An accepted frame, kept for replays.
struct Sent {
    frame: Vec<u8>,
    payload_at: usize,
    src: [u8; 16],
}

/// Frame shapes truncation cycles through.
const TRUNCATION_SHAPES: usize = 5;

struct Generator {
    rng: XorShift,
    current: Key,
    previous: Key,
    pool: Vec<Sent>,
    /// Configured nodes not yet heard: the first packets are their controls.
    warm_up: Vec<u32>,
    /// Next truncation: frame shape and length.
    truncation: (usize, usize),
}

impl Generator {
    fn new(seed: u64) -> Self {
        let mut rng = XorShift::new(seed);
        let current: Key = rng.bytes(16).try_into().expect("16 bytes");
        let previous: Key = rng.bytes(16).try_into().expect("16 bytes");
        Generator {
            rng,
            current,
            previous,
            pool: Vec::with_capacity(POOL),
            warm_up: (0..MAX_NODES)
                .rev()
                .filter(|&id| id != UNCONFIGURED)
                .collect(),
            truncation: (0, 0),
        }
    }

    fn keys(&self) -> KeySlots {
        let mut slots = [KeySlot::default(); KEY_SLOTS as usize];
        slots[usize::from(CURRENT_KEY_ID)] = KeySlot::with_key(self.current);
        slots[usize::from(PREVIOUS_KEY_ID)] = KeySlot::with_key(self.previous);
        slots
    }

    fn key(&self, id: u8) -> Option<&Key> {
        match id {
            CURRENT_KEY_ID => Some(&self.current),
            PREVIOUS_KEY_ID => Some(&self.previous),
            _ => None,
        }
    }

    fn remember(&mut self, sent: Sent) {
        if self.pool.len() < POOL {
            self.pool.push(sent);
        } else {
            let at = self.rng.index(POOL);
            self.pool[at] = sent;
        }
    }

    fn next(&mut self, table: &[Slot]) -> Packet {
        if let Some(node) = self.warm_up.pop() {
            return self.control(table, Some(node));
        }
        let mut roll = self.rng.below(100);
        let category = Category::ALL
            .into_iter()
            .find(|c| {
                if roll < c.weight() {
                    true
                } else {
                    roll -= c.weight();
                    false
                }
            })
            .expect("the weights add up to 100");
        match category {
            Category::Control => self.control(table, None),
            Category::VlanQinq => self.vlan_qinq(table),
            Category::Ipv4Options => self.ipv4_options(table),
            Category::Ipv4BadIhl => self.ipv4_bad_ihl(table),
            Category::Ipv6Extension => self.ipv6_extension(table),
            Category::Ipv4Fragment => self.ipv4_fragment(table),
            Category::UdpLength => self.udp_length(table),
            Category::Truncated => self.truncated(table),
            Category::RandomBytes => self.random_bytes(),
            Category::BitFlip | Category::ByteMutation => self.mutation(category, table),
            Category::Replay => self.replay(table),
            Category::ForgedLeave => self.forged_leave(table),
            Category::UnknownKey => self.unknown_key(table),
            Category::WrongKey => self.wrong_key(table),
            Category::Unauthenticated => self.unauthenticated(table),
            Category::WrongSource => self.wrong_source(table),
            Category::OldIncarnation => self.old_incarnation(table),
            Category::UnknownNode => self.unknown_node(table),
        }
    }

    // -- building blocks ----------------------------------------------------

    /// A configured node (the pinned one included).
    fn configured_node(&mut self) -> u32 {
        loop {
            let node = self.below_u32(MAX_NODES);
            if node != UNCONFIGURED {
                return node;
            }
        }
    }

    fn below_u32(&mut self, bound: u32) -> u32 {
        self.rng.below(u64::from(bound)) as u32
    }

    fn v4(&mut self) -> Ipv4Addr {
        Ipv4Addr::new(
            198,
            18 + self.rng.byte() % 2,
            self.rng.byte(),
            self.rng.byte(),
        )
    }

    fn v6(&mut self) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd00 | u16::from(self.rng.byte()),
            self.rng.next() as u16,
            0,
            0,
            0,
            0,
            self.rng.next() as u16,
            self.rng.next() as u16,
        )
    }

    /// The address `node`'s heartbeats come from: the pinned one's own, else
    /// any IPv4 or IPv6 address.
    fn source(&mut self, node: u32) -> IpAddr {
        if node == PINNED {
            IpAddr::V4(PINNED_SRC)
        } else if self.rng.chance(50) {
            IpAddr::V4(self.v4())
        } else {
            IpAddr::V6(self.v6())
        }
    }

    /// Like [`Self::source`], IPv4 only.
    fn source_v4(&mut self, node: u32) -> Ipv4Addr {
        if node == PINNED {
            PINNED_SRC
        } else {
            self.v4()
        }
    }

    fn src_port(&mut self) -> u16 {
        1024 + self.rng.below(64_512) as u16
    }

    /// A heartbeat of `node` that moves its (incarnation, sequence) forward
    /// from what the table holds.
    fn fresh(&mut self, node: u32, table: &[Slot]) -> Heartbeat {
        let last = table.get(node as usize).map(|s| s.0).unwrap_or_default();
        let (incarnation, sequence) = if last.heartbeats == 0 {
            (100 + u64::from(node), self.rng.below(4))
        } else if self.rng.chance(4) {
            (last.incarnation + 1, self.rng.below(3))
        } else {
            (last.incarnation, last.sequence + 1 + self.rng.below(3))
        };
        Heartbeat {
            flags: 0,
            key_id: 0,
            node_id: node,
            interval_ms: 10 + self.rng.below(5000) as u32,
            incarnation,
            sequence,
            sent_unix_ns: self.rng.next(),
            auth_tag: [0; 16],
        }
    }

    /// `hb` signed with key id `id` and `key`; its `key_id` and `auth_tag`
    /// are updated to match.
    fn sign_with(hb: &mut Heartbeat, id: u8, key: &Key) -> [u8; HEARTBEAT_LEN] {
        let mut payload = hb.encode();
        auth::sign(&mut payload, id, key);
        hb.key_id = id;
        hb.auth_tag.copy_from_slice(&payload[HEARTBEAT_LEN - 16..]);
        payload
    }

    /// `hb` validly signed, with the current key or (a quarter of the time)
    /// the previous one.
    fn sign(&mut self, hb: &mut Heartbeat) -> [u8; HEARTBEAT_LEN] {
        let (id, key) = if self.rng.chance(25) {
            (PREVIOUS_KEY_ID, self.previous)
        } else {
            (CURRENT_KEY_ID, self.current)
        };
        Self::sign_with(hb, id, &key)
    }

    /// A fresh heartbeat of `node`, validly signed.
    fn fresh_signed(&mut self, node: u32, table: &[Slot]) -> (Heartbeat, [u8; HEARTBEAT_LEN]) {
        let mut hb = self.fresh(node, table);
        let payload = self.sign(&mut hb);
        (hb, payload)
    }

    /// `start` (Ethernet and tags) + IP from `src` + UDP to the port.
    /// Ethernet / IP / UDP carrying `payload`, from a source `node` may use
    /// (its pinned address if it has one) and a random port.
    fn frame_from(&mut self, node: u32, payload: &[u8]) -> Vec<u8> {
        let src = self.source(node);
        let port = self.src_port();
        Self::udp(eth(), src, port, payload).build()
    }

    fn udp(start: PacketBuilder, src: IpAddr, src_port: u16, payload: &[u8]) -> PacketBuilder {
        match src {
            IpAddr::V4(src) => start.ipv4(src, DST4),
            IpAddr::V6(src) => start.ipv6(src, DST6),
        }
        .udp(src_port, PORT)
        .payload(payload)
    }

    fn mapped(src: IpAddr) -> [u8; 16] {
        match src {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    /// A packet that must be accepted: `frame` carries `hb` (signed) at
    /// `payload_at`, from `src`.
    fn accept(
        category: Category,
        what: String,
        frame: Vec<u8>,
        hb: Heartbeat,
        src: IpAddr,
        src_port: u16,
        payload_at: usize,
    ) -> Packet {
        Packet {
            category,
            what,
            frame,
            expect: Expect::Accept(Box::new(Accept {
                heartbeat: hb,
                src: Self::mapped(src),
                src_port,
                payload_at,
            })),
            flaw: None,
        }
    }

    fn refuse(
        category: Category,
        what: String,
        frame: Vec<u8>,
        outcome: Option<Counter>,
    ) -> Packet {
        Packet {
            category,
            what,
            frame,
            expect: Expect::Refuse(outcome),
            flaw: None,
        }
    }

    /// The outcome admission gives a heartbeat `payload` of a node in
    /// `table`, from `src`; `None` if admission would accept it.
    fn admission(
        &self,
        payload: &[u8; HEARTBEAT_LEN],
        src: &[u8; 16],
        table: &[Slot],
    ) -> Option<Counter> {
        let raw = RawHeartbeat::view(payload);
        let record = table.get(raw.node_id() as usize).map(|s| &s.0);
        admission::admit(raw, src, record, Unauthenticated::Refuse, |id| self.key(id)).err()
    }

    // -- categories ---------------------------------------------------------

    fn control(&mut self, table: &[Slot], node: Option<u32>) -> Packet {
        let node = node.unwrap_or_else(|| self.configured_node());
        let mut hb = self.fresh(node, table);
        if self.rng.chance(10) {
            hb.flags = flags::LEAVE;
        }
        let payload = self.sign(&mut hb);
        let src = self.source(node);
        let src_port = self.src_port();
        let frame = Self::udp(eth(), src, src_port, &payload).build();
        let at = frame.len() - HEARTBEAT_LEN;
        let what = format!(
            "node {node} inc {} seq {} key {}{}",
            hb.incarnation,
            hb.sequence,
            hb.key_id,
            if hb.is_leave() { " leave" } else { "" }
        );
        Self::accept(Category::Control, what, frame, hb, src, src_port, at)
    }

    fn vlan_qinq(&mut self, table: &[Slot]) -> Packet {
        let node = self.configured_node();
        let (hb, payload) = self.fresh_signed(node, table);
        let src = self.source(node);
        let port = self.src_port();
        let (tci1, tci2, tci3) = (
            self.rng.next() as u16,
            self.rng.next() as u16,
            self.rng.next() as u16,
        );
        let category = Category::VlanQinq;
        let accepted = |what: &str, start: PacketBuilder| {
            let frame = Self::udp(start, src, port, &payload).build();
            let at = frame.len() - HEARTBEAT_LEN;
            Self::accept(category, what.to_owned(), frame, hb, src, port, at)
        };
        match self.rng.below(10) {
            0..3 => accepted("one 802.1Q tag", eth().vlan(tci1)),
            3..6 => accepted("QinQ: 802.1ad then 802.1Q", eth().qinq(tci1).vlan(tci2)),
            6 => accepted("two 802.1Q tags", eth().vlan(tci1).vlan(tci2)),
            7 | 8 => {
                let start = if self.rng.chance(50) {
                    eth().qinq(tci1).vlan(tci2).vlan(tci3)
                } else {
                    eth().qinq(tci1).qinq(tci2).vlan(tci3)
                };
                let frame = Self::udp(start, src, port, &payload).build();
                Self::refuse(
                    category,
                    "three tags (more than the program skips)".to_owned(),
                    frame,
                    Some(Counter::NotHeartbeat),
                )
            }
            _ => {
                let start = eth().qinq(tci1).vlan(tci2).ether_type(ETH_P_ARP);
                let frame = Self::udp(start, src, port, &payload).build();
                Self::refuse(
                    category,
                    "QinQ with an ARP inner EtherType".to_owned(),
                    frame,
                    Some(Counter::NotHeartbeat),
                )
            }
        }
    }

    fn ipv4_options(&mut self, table: &[Slot]) -> Packet {
        let node = self.configured_node();
        let (hb, payload) = self.fresh_signed(node, table);
        let src = self.source_v4(node);
        let port = self.src_port();
        let words = 1 + self.rng.below(10) as u8;
        let frame = eth()
            .ipv4(src, DST4)
            .ipv4_options(words)
            .udp(port, PORT)
            .payload(&payload)
            .build();
        let at = frame.len() - HEARTBEAT_LEN;
        let what = format!("{words} words of IPv4 options");
        Self::accept(
            Category::Ipv4Options,
            what,
            frame,
            hb,
            IpAddr::V4(src),
            port,
            at,
        )
    }

    fn ipv4_bad_ihl(&mut self, table: &[Slot]) -> Packet {
        let node = self.configured_node();
        let (_, payload) = self.fresh_signed(node, table);
        let src = self.source_v4(node);
        let port = self.src_port();
        let words = if self.rng.chance(50) {
            0
        } else {
            self.rng.below(10) as u8
        };
        let (ihl, outcome) = match self.rng.below(3) {
            // Below the minimum: not IPv4 the program parses.
            0 => (self.rng.below(5) as u8, Some(Counter::NotHeartbeat)),
            // Longer than the header: UDP is looked for inside the datagram.
            1 => (
                6 + words + self.rng.below(u64::from(10 - words)) as u8,
                None,
            ),
            // Shorter than the header (options present): UDP is looked for
            // inside the options.
            _ => {
                let words = words.max(1);
                let ihl = 5 + self.rng.below(u64::from(words)) as u8;
                let frame = eth()
                    .ipv4(src, DST4)
                    .ipv4_options(words)
                    .ipv4_ihl(ihl)
                    .udp(port, PORT)
                    .payload(&payload)
                    .build();
                let what = format!("IHL {ihl} with {words} words of options");
                return Self::refuse(Category::Ipv4BadIhl, what, frame, None);
            }
        };
        let frame = eth()
            .ipv4(src, DST4)
            .ipv4_options(words)
            .ipv4_ihl(ihl)
            .udp(port, PORT)
            .payload(&payload)
            .build();
        let what = format!("IHL {ihl} with {words} words of options");
        Self::refuse(Category::Ipv4BadIhl, what, frame, outcome)
    }

    fn ipv6_extension(&mut self, table: &[Slot]) -> Packet {
        let node = self.configured_node();
        let (_, payload) = self.fresh_signed(node, table);
        let src = self.v6();
        let port = self.src_port();
        let category = Category::Ipv6Extension;
        let not_heartbeat = Some(Counter::NotHeartbeat);
        if self.rng.chance(25) {
            let frame = eth()
                .ipv6(src, DST6)
                .hop_by_hop()
                .udp(port, PORT)
                .payload(&payload)
                .build();
            return Self::refuse(
                category,
                "hop-by-hop options".to_owned(),
                frame,
                not_heartbeat,
            );
        }
        // One or two extension headers of 8 bytes each, then UDP.
        let chain: Vec<u8> = (0..1 + self.rng.below(2))
            .map(|_| self.rng.pick(&IPV6_EXTENSIONS))
            .collect();
        let mut segment = Vec::new();
        for (i, _) in chain.iter().enumerate() {
            let next = chain.get(i + 1).copied().unwrap_or(IPPROTO_UDP);
            segment.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
        segment.extend_from_slice(&port.to_be_bytes());
        segment.extend_from_slice(&PORT.to_be_bytes());
        segment.extend_from_slice(&((UDP_HLEN + HEARTBEAT_LEN) as u16).to_be_bytes());
        segment.extend_from_slice(&[0, 0]);
        segment.extend_from_slice(&payload);
        let frame = eth()
            .ipv6(src, DST6)
            .ip_proto(chain[0])
            .payload(&segment)
            .build();
        Self::refuse(
            category,
            format!("extension headers {chain:?} before UDP"),
            frame,
            not_heartbeat,
        )
    }

    fn ipv4_fragment(&mut self, table: &[Slot]) -> Packet {
        let node = self.configured_node();
        let (_, payload) = self.fresh_signed(node, table);
        let src = self.source_v4(node);
        let port = self.src_port();
        let (more, offset) = match self.rng.below(3) {
            0 => (true, 0),
            1 => (true, 1 + self.rng.below(8191) as u16),
            _ => (false, 1 + self.rng.below(8191) as u16),
        };
        let frame = eth()
            .ipv4(src, DST4)
            .fragment(more, offset)
            .udp(port, PORT)
            .payload(&payload)
            .build();
        Self::refuse(
            Category::Ipv4Fragment,
            format!("fragment: MF {more}, offset {offset}"),
            frame,
            Some(Counter::NotHeartbeat),
        )
    }

    fn udp_length(&mut self, table: &[Slot]) -> Packet {
        let node = self.configured_node();
        let (hb, payload) = self.fresh_signed(node, table);
        let src = self.source(node);
        let port = self.src_port();
        let category = Category::UdpLength;
        let malformed = Some(Counter::Malformed);
        let full = (UDP_HLEN + HEARTBEAT_LEN) as u16;
        let (what, builder) = match self.rng.below(6) {
            0 => (
                "UDP length 8, no payload".to_owned(),
                Self::udp(eth(), src, port, &[]),
            ),
            1 => (
                "UDP length 8 before a valid heartbeat".to_owned(),
                Self::udp(eth(), src, port, &payload).udp_len(8),
            ),
            2 => {
                let len = full + 1 + self.rng.below(u64::from(u16::MAX - full)) as u16;
                (
                    format!("UDP length {len}, longer than the packet"),
                    Self::udp(eth(), src, port, &payload).udp_len(len),
                )
            }
            3 => {
                let len = self.rng.below(u64::from(full)) as u16;
                (
                    format!("UDP length {len}, shorter than a heartbeat"),
                    Self::udp(eth(), src, port, &payload).udp_len(len),
                )
            }
            4 => {
                let extra = 1 + self.rng.index(200);
                let mut long = payload.to_vec();
                long.extend(self.rng.bytes(extra));
                (
                    format!("payload of {} bytes, UDP length to match", long.len()),
                    Self::udp(eth(), src, port, &long),
                )
            }
            _ => {
                // Trailing bytes outside the UDP length (Ethernet padding):
                // the heartbeat itself is intact.
                let extra = 1 + self.rng.index(40);
                let mut padded = payload.to_vec();
                padded.extend(self.rng.bytes(extra));
                let frame = Self::udp(eth(), src, port, &padded).udp_len(full).build();
                let at = frame.len() - padded.len();
                let what = format!("{extra} bytes of padding after the datagram");
                return Self::accept(category, what, frame, hb, src, port, at);
            }
        };
        Self::refuse(category, what, builder.build(), malformed)
    }

    fn truncated(&mut self, table: &[Slot]) -> Packet {
        let node = self.configured_node();
        let (_, payload) = self.fresh_signed(node, table);
        let port = self.src_port();
        let (shape, len) = self.truncation;
        let v4 = self.source_v4(node);
        let v6 = IpAddr::V6(self.v6());
        let (name, builder) = match shape {
            0 => ("IPv4", Self::udp(eth(), IpAddr::V4(v4), port, &payload)),
            1 => ("IPv6", Self::udp(eth(), v6, port, &payload)),
            2 => (
                "802.1Q IPv4",
                Self::udp(eth().vlan(7), IpAddr::V4(v4), port, &payload),
            ),
            3 => (
                "QinQ IPv6",
                Self::udp(eth().qinq(1).vlan(2), v6, port, &payload),
            ),
            _ => (
                "IPv4 with 2 words of options",
                eth()
                    .ipv4(v4, DST4)
                    .ipv4_options(2)
                    .udp(port, PORT)
                    .payload(&payload),
            ),
        };
        let mut frame = builder.build();
        let full = frame.len();
        let payload_at = full - HEARTBEAT_LEN;
        frame.truncate(len);
        self.truncation = if len + 1 < full {
            (shape, len + 1)
        } else {
            ((shape + 1) % TRUNCATION_SHAPES, 0)
        };
        // Cut before the end of the UDP header: not a UDP packet; after it,
        // a heartbeat's UDP length with less than a heartbeat behind it.
        let outcome = if len < payload_at {
            Counter::NotHeartbeat
        } else {
            Counter::Malformed
        };
        Self::refuse(
            Category::Truncated,
            format!("{name} frame of {full} bytes cut to {len}"),
            frame,
            Some(outcome),
        )
    }

    fn random_bytes(&mut self) -> Packet {
        let category = Category::RandomBytes;
        if self.rng.chance(50) {
            let len = self.rng.index(160);
            let frame = self.rng.bytes(len);
            return Self::refuse(category, format!("{len} random bytes"), frame, None);
        }
        // Plausible headers to the port, then a random payload, often
        // shaped like a heartbeat (magic, version, a key id that is known
        // or not, a configured node) with a random tag.
        let len = if self.rng.chance(80) {
            HEARTBEAT_LEN
        } else {
            self.rng.index(100)
        };
        let mut payload = self.rng.bytes(len);
        if len >= 12 && self.rng.chance(60) {
            payload[..5].copy_from_slice(b"BEAT\x01");
            payload[5] = if self.rng.chance(80) {
                self.rng.byte() & flags::KNOWN
            } else {
                self.rng.byte()
            };
            let any = self.rng.byte();
            payload[6] = self.rng.pick(&[0, CURRENT_KEY_ID, PREVIOUS_KEY_ID, any]);
            payload[7] = 0;
            let node = self.configured_node();
            payload[8..12].copy_from_slice(&node.to_be_bytes());
        }
        let node = self.below_u32(MAX_NODES);
        let src = self.source(node);
        let port = self.src_port();
        let start = match self.rng.below(4) {
            0 => eth().vlan(self.rng.next() as u16),
            1 => eth().qinq(1).vlan(2),
            _ => eth(),
        };
        let frame = Self::udp(start, src, port, &payload).build();
        Self::refuse(
            category,
            format!("plausible headers, {len} random payload bytes"),
            frame,
            None,
        )
    }

    /// One bit or one byte changed. Half the time anywhere in a frame that
    /// was accepted (whatever survives is a replay); else in the payload
    /// only, of an accepted frame or of a fresh one (the tag covers every
    /// byte, and admission predicts the exact refusal).
    fn mutation(&mut self, category: Category, table: &[Slot]) -> Packet {
        let bit = category == Category::BitFlip;
        let mutate = |rng: &mut XorShift, bytes: &mut [u8]| -> String {
            let at = rng.index(bytes.len());
            if bit {
                let bit = rng.below(8);
                bytes[at] ^= 1 << bit;
                format!("bit {bit} of byte {at} flipped")
            } else {
                let old = bytes[at];
                bytes[at] = rng.other_byte(old);
                format!("byte {at} {old:#04x} -> {:#04x}", bytes[at])
            }
        };
        let roll = self.rng.below(4);
        if roll < 3 && !self.pool.is_empty() {
            let sent = &self.pool[self.rng.index(self.pool.len())];
            let (mut frame, at, src) = (sent.frame.clone(), sent.payload_at, sent.src);
            if roll < 2 {
                let what = format!("accepted frame, {}", mutate(&mut self.rng, &mut frame));
                return Self::refuse(category, what, frame, None);
            }
            let payload: &mut [u8; HEARTBEAT_LEN] = (&mut frame[at..at + HEARTBEAT_LEN])
                .try_into()
                .expect("a whole payload");
            let what = format!(
                "accepted frame, payload {}",
                mutate(&mut self.rng, &mut payload[..])
            );
            let predicted = self.admission(payload, &src, table);
            return Self::predicted(category, what, frame, predicted);
        }
        let node = self.configured_node();
        let (_, mut payload) = self.fresh_signed(node, table);
        let src = self.source(node);
        let port = self.src_port();
        let what = format!(
            "fresh heartbeat, payload {}",
            mutate(&mut self.rng, &mut payload)
        );
        let predicted = self.admission(&payload, &Self::mapped(src), table);
        let frame = Self::udp(eth(), src, port, &payload).build();
        Self::predicted(category, what, frame, predicted)
    }

    /// A mutated payload must be refused, for the reason admission gives
    /// (`None`: admission would accept it, itself a violation).
    fn predicted(
        category: Category,
        what: String,
        frame: Vec<u8>,
        predicted: Option<Counter>,
    ) -> Packet {
        let mut packet = Self::refuse(category, what, frame, predicted);
        if predicted.is_none() {
            packet.flaw = Some("userspace admission accepts this mutated payload".to_owned());
        }
        packet
    }

    fn replay(&mut self, table: &[Slot]) -> Packet {
        if self.pool.is_empty() {
            return self.control(table, None);
        }
        let frame = self.pool[self.rng.index(self.pool.len())].frame.clone();
        Self::refuse(
            Category::Replay,
            "an accepted frame again".to_owned(),
            frame,
            Some(Counter::Replay),
        )
    }

    fn forged_leave(&mut self, table: &[Slot]) -> Packet {
        let category = Category::ForgedLeave;
        let bad_tag = Some(Counter::BadTag);
        if self.rng.chance(50) && !self.pool.is_empty() {
            let sent = &self.pool[self.rng.index(self.pool.len())];
            let mut frame = sent.frame.clone();
            let flags_at = sent.payload_at + 5;
            if frame[flags_at] & flags::LEAVE == 0 {
                frame[flags_at] |= flags::LEAVE;
                let what = "LEAVE set on an accepted frame".to_owned();
                return Self::refuse(category, what, frame, bad_tag);
            }
        }
        let node = self.configured_node();
        let (_, mut payload) = self.fresh_signed(node, table);
        payload[5] |= flags::LEAVE;
        let frame = self.frame_from(node, &payload);
        let what = format!("LEAVE set on a fresh heartbeat of node {node} after signing");
        Self::refuse(category, what, frame, bad_tag)
    }

    fn unknown_key(&mut self, table: &[Slot]) -> Packet {
        let node = self.configured_node();
        let mut hb = self.fresh(node, table);
        let id = loop {
            let id = self.rng.byte();
            if self.key(id).is_none() && id != auth::UNAUTHENTICATED {
                break id;
            }
        };
        let key: Key = if self.rng.chance(50) {
            self.current
        } else {
            self.rng.bytes(16).try_into().expect("16 bytes")
        };
        let payload = Self::sign_with(&mut hb, id, &key);
        let frame = self.frame_from(node, &payload);
        Self::refuse(
            Category::UnknownKey,
            format!("node {node} signed under key id {id}"),
            frame,
            Some(Counter::UnknownKey),
        )
    }

    fn wrong_key(&mut self, table: &[Slot]) -> Packet {
        let node = self.configured_node();
        let mut hb = self.fresh(node, table);
        let id = self.rng.pick(&[CURRENT_KEY_ID, PREVIOUS_KEY_ID]);
        let key: Key = match self.rng.below(3) {
            // The other installed key under this id.
            0 if id == CURRENT_KEY_ID => self.previous,
            0 => self.current,
            // A key one bit away from the right one.
            1 => {
                let mut key = *self.key(id).expect("an installed key");
                let bit = self.rng.index(128);
                key[bit / 8] ^= 1 << (bit % 8);
                key
            }
            _ => self.rng.bytes(16).try_into().expect("16 bytes"),
        };
        let payload = Self::sign_with(&mut hb, id, &key);
        let frame = self.frame_from(node, &payload);
        Self::refuse(
            Category::WrongKey,
            format!("node {node} signed under key id {id} with another key"),
            frame,
            Some(Counter::BadTag),
        )
    }

    fn unauthenticated(&mut self, table: &[Slot]) -> Packet {
        let node = if self.rng.chance(90) {
            self.configured_node()
        } else {
            UNCONFIGURED
        };
        let mut hb = self.fresh(node, table);
        if self.rng.chance(10) {
            hb.flags = flags::LEAVE;
        }
        let payload = Self::sign_with(&mut hb, auth::UNAUTHENTICATED, &[0; 16]);
        let frame = self.frame_from(node, &payload);
        Self::refuse(
            Category::Unauthenticated,
            format!("node {node}, key id 0"),
            frame,
            Some(Counter::Unauthenticated),
        )
    }

    fn wrong_source(&mut self, table: &[Slot]) -> Packet {
        let (_, payload) = self.fresh_signed(PINNED, table);
        let src = if self.rng.chance(60) {
            loop {
                let v4 = self.v4();
                if v4 != PINNED_SRC {
                    break IpAddr::V4(v4);
                }
            }
        } else {
            IpAddr::V6(self.v6())
        };
        let port = self.src_port();
        let frame = Self::udp(eth(), src, port, &payload).build();
        Self::refuse(
            Category::WrongSource,
            format!("pinned node {PINNED} from {src}"),
            frame,
            Some(Counter::WrongSource),
        )
    }

    fn old_incarnation(&mut self, table: &[Slot]) -> Packet {
        let node = self.configured_node();
        let last = table[node as usize].0;
        if last.heartbeats == 0 || (last.incarnation == 0 && last.sequence == 0) {
            return self.control(table, Some(node));
        }
        let mut hb = self.fresh(node, table);
        let what = if last.incarnation > 0 && (last.sequence == 0 || self.rng.chance(70)) {
            hb.incarnation = last.incarnation - 1 - self.rng.below(last.incarnation.min(3));
            hb.sequence = last.sequence + self.rng.below(1 << 20);
            format!(
                "node {node} incarnation {} < {}",
                hb.incarnation, last.incarnation
            )
        } else {
            hb.incarnation = last.incarnation;
            hb.sequence = last.sequence - self.rng.below(last.sequence.min(3) + 1);
            format!("node {node} sequence {} <= {}", hb.sequence, last.sequence)
        };
        let payload = self.sign(&mut hb);
        let frame = self.frame_from(node, &payload);
        Self::refuse(Category::OldIncarnation, what, frame, Some(Counter::Replay))
    }

    fn unknown_node(&mut self, table: &[Slot]) -> Packet {
        let node = match self.rng.below(3) {
            0 => UNCONFIGURED,
            1 => MAX_NODES + self.below_u32(8),
            _ => MAX_NODES + self.below_u32(u32::MAX - MAX_NODES),
        };
        let (_, payload) = self.fresh_signed(node, table);
        let frame = self.frame_from(node, &payload);
        Self::refuse(
            Category::UnknownNode,
            format!("signed heartbeat of node {node}"),
            frame,
            Some(Counter::UnknownNode),
        )
    }
}

#[cfg(test)]
mod tests {
    use hb_common::table::SLOT_CONFIGURED;

    use super::*;

    /// The table as the rig configures it, before any heartbeat.
    fn fresh_table() -> Vec<Slot> {
        let mut table = vec![(NodeRecord::default(), 0); MAX_NODES as usize];
        for (id, mut record) in configured_slots() {
            record.slot_flags |= SLOT_CONFIGURED;
            table[id as usize].0 = record;
        }
        table
    }

    #[test]
    fn the_generator_is_deterministic() {
        let table = fresh_table();
        let frames = |seed| {
            let mut generator = Generator::new(seed);
            (0..500)
                .map(|_| generator.next(&table).frame)
                .collect::<Vec<_>>()
        };
        assert_eq!(frames(1), frames(1));
        assert_ne!(frames(1), frames(2));
        assert_ne!(XorShift::new(0).next(), 0);
    }

    #[test]
    fn truncation_walks_every_length_of_every_shape() {
        let table = fresh_table();
        let mut generator = Generator::new(7);
        let mut lengths = Vec::new();
        while lengths.len() < 2 || generator.truncation != (0, 0) {
            lengths.push(generator.truncated(&table).frame.len());
        }
        let starts: Vec<usize> = (0..lengths.len()).filter(|&i| lengths[i] == 0).collect();
        assert_eq!(starts.len(), TRUNCATION_SHAPES);
        for (i, &start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(lengths.len());
            let expected: Vec<usize> = (0..end - start).collect();
            assert_eq!(lengths[start..end], expected[..]);
        }
    }

    #[test]
    fn controls_carry_a_valid_tag_and_mutations_never_do() {
        let table = fresh_table();
        let mut generator = Generator::new(3);
        for _ in 0..200 {
            let packet = generator.control(&table, None);
            let Expect::Accept(accept) = &packet.expect else {
                panic!("a control must be accepted");
            };
            let payload: [u8; HEARTBEAT_LEN] = packet.frame
                [accept.payload_at..accept.payload_at + HEARTBEAT_LEN]
                .try_into()
                .expect("a payload");
            assert_eq!(payload, accept.payload());
            assert_eq!(generator.admission(&payload, &accept.src, &table), None);
            generator.remember(Sent {
                frame: packet.frame.clone(),
                payload_at: accept.payload_at,
                src: accept.src,
            });
            for category in [Category::BitFlip, Category::ByteMutation] {
                let mutated = generator.mutation(category, &table);
                assert!(
                    matches!(mutated.expect, Expect::Refuse(_)),
                    "{}",
                    mutated.what
                );
                assert_eq!(mutated.flaw, None, "{}", mutated.what);
            }
        }
    }
}
