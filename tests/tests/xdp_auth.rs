//! Authentication in the XDP program, through `BPF_PROG_TEST_RUN` (needs
//! root): the kernel-side SipHash against the reference vectors, then tables
//! of signed, forged, replayed, downgraded and wrong-source heartbeats. Each
//! row states the one outcome counter it must move (with the `dropped`
//! verdict) and whether the node table may change; every other counter and
//! every other slot must stay as they were.

pub mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    EbpfLoader,
    programs::{TestRun, TestRunOptions, Xdp},
};
use hb::{
    datapath::xdp::{LoadOptions, SIPHASH_TEST_OBJECT, XdpDatapath},
    sys::raise_memlock_limit,
};
use hb_common::{
    admission::Unauthenticated as Policy,
    auth::{self, KEY_SLOTS, KeySlot, KeySlots},
    counters::Counter,
    globals,
    siphash::{Key, Prefix, REFERENCE_VECTORS, siphash24},
    table::{NodeRecord, SLOT_AUTHENTICATED, SLOT_PINNED, seen, src_octets},
    wire::{HEARTBEAT_LEN, Heartbeat, flags},
};
use hb_tools::{frame::eth, rng};
use rand::Rng as _;

use crate::common::{Counters, PORT, XDP_DROP, XDP_PASS};

const MAX_NODES: u32 = 8;

/// Node 1 is configured, node 2 configured and pinned to [`SRC4`], node 3
/// not configured.
const FREE: u32 = 1;
const PINNED: u32 = 2;
const UNCONFIGURED: u32 = 3;

const SRC4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const SRC4_OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 66);
const DST4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0x42, 0, 0, 0, 0x10);
const DST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0x42, 0, 0, 0, 0x1);

const CURRENT: (u8, Key) = (1, [0x11; 16]);
const PREVIOUS: (u8, Key) = (2, [0x22; 16]);

fn keys(ring: &[(u8, Key)]) -> KeySlots {
    let mut slots = [KeySlot::default(); KEY_SLOTS as usize];
    for (id, key) in ring {
        slots[usize::from(*id)] = KeySlot::with_key(*key);
    }
    slots
}

fn beat(node_id: u32, incarnation: u64, sequence: u64, flags: u8) -> Heartbeat {
    Heartbeat {
        flags,
        key_id: 0,
        node_id,
        interval_ms: 100,
        incarnation,
        sequence,
        sent_unix_ns: 1_700_000_000_000_000_000 + sequence,
        auth_tag: [0; 16],
    }
}

/// The payload of `hb` signed with `(key id, key)`, or unsigned for `None`.
fn signed(hb: Heartbeat, with: Option<(u8, Key)>) -> [u8; HEARTBEAT_LEN] {
    let mut bytes = hb.encode();
    let (id, key) = with.unwrap_or((auth::UNAUTHENTICATED, [0; 16]));
    auth::sign(&mut bytes, id, &key);
    bytes
}

fn from(src: IpAddr, payload: &[u8]) -> Vec<u8> {
    match src {
        IpAddr::V4(src) => eth().ipv4(src, DST4).udp(40_000, PORT).payload(payload),
        IpAddr::V6(src) => eth().ipv6(src, DST6).udp(40_000, PORT).payload(payload),
    }
    .build()
}

struct Harness {
    dp: XdpDatapath,
    runs: u64,
}

impl Harness {
    fn load(unauthenticated: Policy, ring: &[(u8, Key)]) -> Self {
        let mut dp = common::load(LoadOptions {
            port: PORT,
            max_nodes: MAX_NODES,
            pass_heartbeats: false,
            unauthenticated,
        });
        dp.set_keys(&keys(ring)).expect("installing keys");
        dp.table().configure(FREE, NodeRecord::default());
        dp.table().configure(
            PINNED,
            NodeRecord {
                slot_flags: SLOT_PINNED,
                src_addr: src_octets(SRC4.into()),
                ..NodeRecord::default()
            },
        );
        Harness { dp, runs: 0 }
    }

    /// The cold record and seen word of every slot.
    fn table(&self) -> Vec<(NodeRecord, u64)> {
        common::records(&self.dp)
            .into_iter()
            .zip(common::seen_words(&self.dp))
            .collect()
    }

    fn counters(&self) -> Counters {
        common::counters(&self.dp)
    }

    /// Runs one frame and checks its outcome: the only counters that move
    /// are `outcome` and `dropped`, and only an accepted heartbeat changes
    /// the table (its own node's slot). Returns the table after the run.
    fn expect(&mut self, what: &str, frame: &[u8], outcome: Counter) -> Vec<(NodeRecord, u64)> {
        let before_table = self.table();
        let before = self.counters();
        let program = self.dp.program().expect("the program");
        let action = common::test_run(program, frame, false)
            .unwrap_or_else(|e| panic!("{what}: BPF_PROG_TEST_RUN failed: {e:?}"));
        self.runs += 1;
        let after = self.counters();
        let after_table = self.table();
        assert_eq!(action, XDP_DROP, "{what}: action");
        let mut expected = before;
        expected[outcome as usize] += 1;
        expected[Counter::Dropped as usize] += 1;
        let moved: Vec<_> = Counter::ALL
            .iter()
            .filter(|c| after[**c as usize] != before[**c as usize])
            .map(|c| c.name())
            .collect();
        assert_eq!(after, expected, "{what}: counters moved: {moved:?}");
        let changed: Vec<usize> = (0..before_table.len())
            .filter(|&i| before_table[i] != after_table[i])
            .collect();
        if outcome == Counter::Accepted {
            assert_eq!(changed.len(), 1, "{what}: slots changed: {changed:?}");
        } else {
            assert!(
                changed.is_empty(),
                "{what}: refused ({}) but slots {changed:?} changed",
                outcome.name()
            );
        }
        after_table
    }

    fn outcomes_add_up(&self) {
        let (outcomes, verdicts) = common::outcomes_and_verdicts(&self.counters());
        assert_eq!(outcomes, self.runs, "outcome counters vs packets run");
        assert_eq!(verdicts, self.runs);
    }
}

/// Loads the test-only object with its programs, `hb_siphash` and
/// `hb_siphash_prefix`.
fn siphash_program() -> aya::Ebpf {
    // Older kernels charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore
    // it, so a refusal (no CAP_SYS_RESOURCE, as in some containers) is only
    // noted, as aya-template does.
    if let Err(e) = raise_memlock_limit() {
        eprintln!("could not raise RLIMIT_MEMLOCK: {e}");
    }
    let mut ebpf = EbpfLoader::new()
        .load(SIPHASH_TEST_OBJECT)
        .expect("loading the eBPF object (are we root?)");
    for name in [globals::SIPHASH_PROGRAM, globals::SIPHASH_PREFIX_PROGRAM] {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("{name} in the object"))
            .try_into()
            .expect("an XDP program");
        program
            .load()
            .unwrap_or_else(|e| panic!("verifying {name}: {e}"));
    }
    ebpf
}

/// Runs the test program `name` once on a packet laid out as `header`
/// (the key, or a prefix's state and word), an 8-byte slot for the result,
/// the message length and the message; its XDP verdict and the slot.
fn run_hash_program(ebpf: &mut aya::Ebpf, name: &str, header: &[u8], message: &[u8]) -> (u32, u64) {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .unwrap_or_else(|| panic!("{name} in the object"))
        .try_into()
        .expect("XDP");
    let mut data = header.to_vec();
    data.extend_from_slice(&[0; 8]);
    data.push(message.len() as u8);
    data.extend_from_slice(message);
    let mut out = vec![0u8; data.len()];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(&data),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })
        .unwrap_or_else(|e| {
            panic!(
                "test run of {name} on {} message bytes: {e:?}",
                message.len()
            )
        });
    let slot = &out[header.len()..header.len() + 8];
    (
        result.return_value,
        u64::from_le_bytes(slot.try_into().expect("8 bytes")),
    )
}

/// SipHash-2-4 of `message` from `prefix`, computed by the kernel-side code
/// `hb_xdp` verifies tags with; `None` if the prefix refuses the message.
fn kernel_prefix_siphash(ebpf: &mut aya::Ebpf, prefix: &Prefix, message: &[u8]) -> Option<u64> {
    let header: Vec<u8> = prefix
        .state
        .iter()
        .chain([&prefix.word])
        .flat_map(|word| word.to_le_bytes())
        .collect();
    match run_hash_program(ebpf, globals::SIPHASH_PREFIX_PROGRAM, &header, message) {
        (XDP_PASS, hash) => Some(hash),
        (XDP_DROP, _) => None,
        (other, _) => panic!(
            "hb_siphash_prefix returned {other} for {} message bytes",
            message.len()
        ),
    }
}

/// SipHash-2-4 of `message` under `key`, computed by the kernel-side code.
fn kernel_siphash(ebpf: &mut aya::Ebpf, key: &Key, message: &[u8]) -> u64 {
    let (verdict, hash) = run_hash_program(ebpf, globals::SIPHASH_PROGRAM, key, message);
    assert_eq!(
        verdict,
        XDP_PASS,
        "hb_siphash refused {} message bytes",
        message.len()
    );
    hash
}

#[test]
fn kernel_siphash_matches_the_reference_vectors() {
    let mut ebpf = siphash_program();
    let key: Key = core::array::from_fn(|i| i as u8);
    let message: Vec<u8> = (0..64).map(|i| i as u8).collect();
    for (len, expected) in REFERENCE_VECTORS.iter().enumerate() {
        assert_eq!(
            kernel_siphash(&mut ebpf, &key, &message[..len]),
            *expected,
            "kernel SipHash, reference vector {len}"
        );
    }
    // And agrees with userspace on other keys and messages.
    let mut rng = rng::seeded(0x9E37_79B9_7F4A_7C15);
    for round in 0..200 {
        let key: Key = rng.random();
        let message: Vec<u8> = (0..(round % 64)).map(|_| rng.random()).collect();
        assert_eq!(
            kernel_siphash(&mut ebpf, &key, &message),
            siphash24(&key, &message),
            "round {round}"
        );
    }
}

#[test]
fn kernel_siphash_from_a_prefix_matches_the_reference_vectors() {
    let mut ebpf = siphash_program();
    let key: Key = core::array::from_fn(|i| i as u8);
    let message: Vec<u8> = (0..64).map(|i| i as u8).collect();
    let prefix = Prefix::new(&key, [0, 1, 2, 3, 4, 5, 6, 7]);
    for (len, expected) in REFERENCE_VECTORS.iter().enumerate() {
        let expected = (len >= 8).then_some(*expected);
        assert_eq!(
            kernel_prefix_siphash(&mut ebpf, &prefix, &message[..len]),
            expected,
            "kernel SipHash from a prefix, reference vector {len}"
        );
    }
    // Agrees with userspace, and refuses a message of another first word.
    let mut rng = rng::seeded(0x2545_F491_4F6C_DD1D);
    for round in 0..200 {
        let key: Key = rng.random();
        let mut message: Vec<u8> = (0..(8 + round % 56)).map(|_| rng.random()).collect();
        let prefix = Prefix::new(&key, message[..8].try_into().expect("8 bytes"));
        assert_eq!(
            kernel_prefix_siphash(&mut ebpf, &prefix, &message),
            Some(siphash24(&key, &message)),
            "round {round}"
        );
        message[round % 8] ^= 1 << (round % 7);
        assert_eq!(
            kernel_prefix_siphash(&mut ebpf, &prefix, &message),
            None,
            "round {round}: another first word"
        );
    }
}

/// One datapath that refuses unsigned heartbeats and holds two keys, run
/// through the phases below in order: each starts where the last left the
/// node table.
#[test]
fn signed_forged_replayed_and_misplaced_heartbeats() {
    let mut h = Harness::load(Policy::Refuse, &[CURRENT, PREVIOUS]);
    signed_and_forged(&mut h);
    replayed(&mut h);
    source_pinning(&mut h);
    rotation(&mut h);
    h.outcomes_add_up();
}

/// Node [`FREE`], incarnation 10: signed with either key, then unsigned,
/// with unknown keys, wrong tags and edits after signing.
fn signed_and_forged(h: &mut Harness) {
    use Counter::*;
    let src = IpAddr::V4(SRC4);
    let b = |seq, flags| beat(FREE, 10, seq, flags);

    let first = from(src, &signed(b(1, 0), Some(CURRENT)));
    let table = h.expect("signed with the current key", &first, Accepted);
    assert_ne!(table[FREE as usize].0.slot_flags & SLOT_AUTHENTICATED, 0);
    h.expect("the same packet again", &first, Replay);
    h.expect(
        "signed with the previous key",
        &from(src, &signed(b(2, 0), Some(PREVIOUS))),
        Accepted,
    );
    h.expect(
        "unsigned",
        &from(src, &signed(b(3, 0), None)),
        Unauthenticated,
    );
    h.expect(
        "a key id with no key",
        &from(src, &signed(b(3, 0), Some((7, [0x11; 16])))),
        UnknownKey,
    );
    h.expect(
        "the previous key's tag under the current key's id",
        &from(src, &signed(b(3, 0), Some((CURRENT.0, PREVIOUS.1)))),
        BadTag,
    );
    for bit in [0, 17, 63, 64, 127] {
        let mut payload = signed(b(3, 0), Some(CURRENT));
        payload[auth::SIGNED_LEN + bit / 8] ^= 1 << (bit % 8);
        h.expect(
            &format!("tag bit {bit} flipped"),
            &from(src, &payload),
            BadTag,
        );
    }
    let mut payload = signed(b(3, 0), Some(CURRENT));
    payload[24 + 7] ^= 1; // sequence 3 -> 2... or any field: the tag covers it
    h.expect(
        "sequence edited after signing",
        &from(src, &payload),
        BadTag,
    );

    // A forged leave: a valid heartbeat with the LEAVE flag set afterwards.
    let mut forged_leave = signed(b(3, 0), Some(CURRENT));
    forged_leave[5] |= flags::LEAVE;
    let table = h.expect("a forged leave", &from(src, &forged_leave), BadTag);
    assert!(!seen::is_leave(table[FREE as usize].1));
}

/// Node [`FREE`] at (10, 2): a replayed leave, an older incarnation, a
/// restart.
fn replayed(h: &mut Harness) {
    use Counter::*;
    let src = IpAddr::V4(SRC4);
    let b = |seq, flags| beat(FREE, 10, seq, flags);

    // A replayed leave: a genuine one, captured, then replayed after the
    // node came back with newer sequences.
    let leave = from(src, &signed(b(4, flags::LEAVE), Some(CURRENT)));
    h.expect("a graceful leave", &leave, Accepted);
    h.expect(
        "back up",
        &from(src, &signed(b(5, 0), Some(CURRENT))),
        Accepted,
    );
    let table = h.expect("the leave replayed", &leave, Replay);
    assert!(!seen::is_leave(table[FREE as usize].1), "still up");

    h.expect(
        "an older incarnation",
        &from(src, &signed(beat(FREE, 9, 100, 0), Some(CURRENT))),
        Replay,
    );
    h.expect(
        "a sender restart: new incarnation, sequence 0",
        &from(src, &signed(beat(FREE, 11, 0, 0), Some(CURRENT))),
        Accepted,
    );
}

/// Node [`PINNED`] only from [`SRC4`]; a signature does not configure a
/// node.
fn source_pinning(h: &mut Harness) {
    use Counter::*;
    let src = IpAddr::V4(SRC4);
    let other = IpAddr::V4(SRC4_OTHER);
    let p = |seq| signed(beat(PINNED, 1, seq, 0), Some(CURRENT));
    h.expect(
        "pinned node, other IPv4 source",
        &from(other, &p(1)),
        WrongSource,
    );
    h.expect(
        "pinned node, IPv6 source",
        &from(IpAddr::V6(SRC6), &p(1)),
        WrongSource,
    );
    let table = h.expect("pinned node, its own source", &from(src, &p(1)), Accepted);
    assert_eq!(table[PINNED as usize].0.src_addr, src_octets(SRC4.into()));
    h.expect(
        "a signed heartbeat of an unconfigured node",
        &from(src, &signed(beat(UNCONFIGURED, 1, 1, 0), Some(CURRENT))),
        UnknownNode,
    );
}

/// Rotation: the previous key is dropped; its heartbeats are unknown.
fn rotation(h: &mut Harness) {
    use Counter::*;
    let src = IpAddr::V4(SRC4);
    let b = |seq, flags| beat(FREE, 10, seq, flags);
    h.dp.set_keys(&keys(&[CURRENT])).expect("rotating keys");
    h.expect(
        "the dropped key",
        &from(src, &signed(b(12, 0), Some(PREVIOUS))),
        UnknownKey,
    );
    h.expect(
        "the current key still",
        &from(src, &signed(beat(FREE, 11, 1, 0), Some(CURRENT))),
        Accepted,
    );
}

#[test]
fn accepting_unauthenticated_heartbeats_never_downgrades_a_signing_node() {
    use Counter::*;
    let mut h = Harness::load(Policy::Accept, &[CURRENT]);
    let src = IpAddr::V4(SRC4);
    h.expect(
        "unsigned, from a node that never signed",
        &from(src, &signed(beat(FREE, 1, 1, 0), None)),
        Accepted,
    );
    h.expect(
        "signed",
        &from(src, &signed(beat(FREE, 1, 2, 0), Some(CURRENT))),
        Accepted,
    );
    let table = h.expect(
        "an unsigned leave after that",
        &from(src, &signed(beat(FREE, 1, 3, flags::LEAVE), None)),
        Unauthenticated,
    );
    assert!(!seen::is_leave(table[FREE as usize].1));
    h.expect(
        "a forged tag is still a bad tag",
        &from(
            src,
            &signed(beat(FREE, 1, 3, 0), Some((CURRENT.0, [0; 16]))),
        ),
        BadTag,
    );
    h.outcomes_add_up();
}
