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
//!
//! The modules: [`Category`] (what a packet is), `generator` (the seeded
//! draws, the packets and their building blocks), `framing` and `payloads`
//! (the categories' builders), `rig` (the property checker) and
//! [`HostileReport`].

mod category;
mod framing;
mod generator;
mod payloads;
mod report;
mod rig;

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Instant,
};

pub use self::{
    category::Category,
    report::{CategoryCount, HostileReport, Violation},
};
use self::{generator::Generator, rig::Rig};

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
/// Violations kept with their frames.
const EXAMPLES: usize = 10;

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
