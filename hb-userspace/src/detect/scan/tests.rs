//! The vector pass against the per-node rule it replaced, over randomised
//! tables, and under concurrent writes.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use super::*;

const MS: u64 = 1_000_000;

/// A node as the detector knows it: its state (`None`: unwatched), the
/// silence after which it needs a look, and whether the phi rule is on.
#[derive(Clone, Copy, Debug)]
struct Node {
    state: Option<NodeState>,
    timeout_ns: u64,
    phi: bool,
}

impl Node {
    fn watch(self) -> Watch {
        match self.state {
            Some(state) => Watch::new(state, self.timeout_ns, self.phi),
            None => Watch::UNWATCHED,
        }
    }
}

/// The per-node rule of the sweep before the vector pass, kept as it was
/// (by state) as the reference, with the watch word's timeout: whether a
/// node needs a look.
fn reference_needs_look(node: Node, word: u64, now_ns: u64, new_since_ns: u64) -> bool {
    let timeout = node.watch().timeout_ns();
    let within =
        || !seen::is_leave(word) && now_ns.saturating_sub(seen::arrival_ns(word)) <= timeout;
    let quiet = match node.state {
        Some(NodeState::Up) => within(),
        Some(NodeState::Suspect) => word <= new_since_ns && within(),
        None => true,
        Some(_) => word <= new_since_ns,
    };
    !quiet || (node.phi && word > new_since_ns && node.state.is_some())
}

/// What the reference decides for a whole table: the candidates, and the
/// earliest `arrival + timeout` of the live nodes that are not candidates.
fn reference(words: &[u64], nodes: &[Node], pass: Pass) -> (Vec<u32>, u64) {
    let mut candidates = Vec::new();
    let mut next = u64::MAX;
    for (id, (&word, &node)) in words.iter().zip(nodes).enumerate() {
        if reference_needs_look(node, word, pass.now_ns, pass.new_since_ns) {
            candidates.push(id as u32);
        } else if node.state.is_some_and(NodeState::is_live) {
            next = next.min(seen::arrival_ns(word) + node.watch().timeout_ns());
        }
    }
    (candidates, next)
}

/// A small deterministic generator (xorshift64*), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const STATES: [Option<NodeState>; 7] = [
    None,
    Some(NodeState::Unseen),
    Some(NodeState::Up),
    Some(NodeState::Down),
    Some(NodeState::Left),
    Some(NodeState::Suspect),
    Some(NodeState::Flapping),
];

/// A random node around the edges that matter: its silence at, just
/// before and just after its timeout, heard just before, at or after
/// `new_since`, never heard, with a leave or not, timeouts from 0 to past
/// the watch word's largest.
fn random_node(rng: &mut Rng, pass: Pass, phi: bool) -> (u64, Node) {
    let node = Node {
        state: STATES[rng.below(STATES.len() as u64) as usize],
        timeout_ns: match rng.below(4) {
            0 => 0,
            1 => u64::MAX,
            _ => rng.below(10_000 * MS),
        },
        phi,
    };
    let timeout = node.watch().timeout_ns();
    let arrival = match rng.below(8) {
        0 => 0,
        1 => pass.now_ns.saturating_sub(timeout),
        2 => pass.now_ns.saturating_sub(timeout).saturating_sub(1),
        3 => pass.now_ns.saturating_sub(timeout) + 1,
        4 => pass.new_since_ns,
        5 => pass.new_since_ns + 1 + rng.below(2 * MS),
        6 => pass.now_ns + rng.below(MS),
        _ => pass.now_ns.saturating_sub(rng.below(20_000 * MS)),
    };
    let leave = rng.below(5) == 0;
    (seen::word(arrival, leave), node)
}

fn random_pass(rng: &mut Rng) -> Pass {
    let now_ns = (1 << 40) + rng.below(1 << 45);
    Pass {
        now_ns,
        new_since_ns: now_ns - STORE_MARGIN - rng.below(100 * MS),
    }
}

const STORE_MARGIN: u64 = MS;

fn atomics(words: &[u64]) -> Vec<AtomicU64> {
    words.iter().map(|&w| AtomicU64::new(w)).collect()
}

#[test]
fn the_pass_decides_as_the_per_node_rule_over_random_tables() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..400 {
        let pass = random_pass(&mut rng);
        let phi = rng.below(2) == 0;
        let len = rng.below(300) as usize;
        let (words, nodes): (Vec<u64>, Vec<Node>) =
            (0..len).map(|_| random_node(&mut rng, pass, phi)).unzip();
        let watches: Vec<Watch> = nodes.iter().map(|n| n.watch()).collect();
        let shared = atomics(&words);
        // Every start offset: the vector loop's aligned body, its head and
        // its tail all take part.
        for skip in 0..len.min(3) {
            let mut candidates = Vec::new();
            let next = scan(&shared[skip..], &watches[skip..], pass, &mut candidates);
            let (expected, latest) = reference(&words[skip..], &nodes[skip..], pass);
            assert_eq!(
                (candidates, next),
                (expected, latest.saturating_add(1)),
                "round {round}, {len} nodes from {skip}"
            );
        }
        let mut candidates = Vec::new();
        let next = scalar::scan(&shared, &watches, pass, 0, &mut candidates);
        assert_eq!(
            (candidates, next),
            reference(&words, &nodes, pass),
            "scalar, round {round}"
        );
    }
}

#[test]
fn a_steady_table_has_no_candidate_and_its_earliest_deadline() {
    let now = 1 << 42;
    let pass = Pass {
        now_ns: now,
        new_since_ns: now - MS,
    };
    let watches: Vec<Watch> = (0..1027)
        .map(|i| Watch::new(NodeState::Up, (100 + i % 50) << 20, false))
        .collect();
    let words: Vec<u64> = (0..1027u64)
        .map(|i| seen::word(now - 5 * MS - i, false))
        .collect();
    let mut candidates = Vec::new();
    let next = scan(&atomics(&words), &watches, pass, &mut candidates);
    assert!(candidates.is_empty());
    // Node 1000: timeout 100 units of 2^20 ns, heard at now - 5 ms - 1000
    // ns; silent past its timeout 1 ns after that.
    assert_eq!(next, now - 5 * MS - 1000 + (100 << 20) + 1);
}

/// A writer moves seen words between two values, each of which needs no
/// look, while the pass reads them; a word read half old and half new would
/// be a silence of seconds, and a candidate.
#[test]
fn words_written_during_the_pass_are_read_whole() {
    const NODES: usize = 4096;
    let high = 1u64 << 40;
    let now = high | 0xf000_0000;
    let pass = Pass {
        now_ns: now,
        new_since_ns: now,
    };
    // Heard 10 ns ago, or (a clock read just after the sweep's) in the
    // next 2^32 ns: both quiet. The low half of the second with the high
    // half of the first is a silence of 4 s.
    let old = now - 10;
    let new = (high + (1 << 32)) | 0x10;
    let watches = vec![Watch::new(NodeState::Up, 2 * MS, false); NODES];
    let words: Arc<Vec<AtomicU64>> = Arc::new(atomics(&vec![old; NODES]));
    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicU64::new(0));
    let writer = {
        let (words, stop, flips) = (Arc::clone(&words), Arc::clone(&stop), Arc::clone(&flips));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let round = flips.load(Ordering::Relaxed);
                for (i, word) in words.iter().enumerate() {
                    let value = if (i as u64 + round).is_multiple_of(2) {
                        old
                    } else {
                        new
                    };
                    word.store(value, Ordering::Relaxed);
                }
                flips.store(round + 1, Ordering::Relaxed);
            }
        })
    };
    // Scans while the writer writes: at least 3000 of them, and at least
    // 100 rounds of writes (on a busy machine the writer may start late).
    let started = std::time::Instant::now();
    let mut candidates = Vec::new();
    let mut scans = 0;
    while (scans < 3000 || flips.load(Ordering::Relaxed) < 100)
        && started.elapsed() < std::time::Duration::from_secs(20)
    {
        candidates.clear();
        scan(&words, &watches, pass, &mut candidates);
        assert!(
            candidates.is_empty(),
            "torn reads: {} candidates",
            candidates.len()
        );
        scans += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        flips.load(Ordering::Relaxed) >= 100,
        "the writer wrote {} rounds in 20 s",
        flips.load(Ordering::Relaxed)
    );
}
