//! The generator: seeded draws, the packets it makes and what each must
//! do, and the building blocks the categories share (nodes, addresses,
//! fresh and signed heartbeats, frames). The categories themselves are in
//! [`super::framing`] (hostile headers) and [`super::payloads`] (hostile
//! heartbeats).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hb_common::{
    admission::{self, Unauthenticated},
    auth::{self, KEY_SLOTS, KeySlot, KeySlots},
    counters::Counter,
    siphash::Key,
    table::src_octets,
    wire::{HEARTBEAT_LEN, Heartbeat, RawHeartbeat},
};
use rand::Rng as _;

use super::{
    CURRENT_KEY_ID, DST4, DST6, MAX_NODES, PINNED, PINNED_SRC, PORT, PREVIOUS_KEY_ID, UNCONFIGURED,
    category::Category, rig::Slot,
};
use crate::{
    frame::{PacketBuilder, eth},
    rng::{self, Rng},
};

/// Accepted frames kept for replays and their mutations.
const POOL: usize = 512;

/// The draws the generator makes, on the tools' seeded [`Rng`].
pub(super) trait Draw {
    fn below(&mut self, bound: u64) -> u64;
    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool;
    fn index(&mut self, len: usize) -> usize;
    fn pick<T: Copy>(&mut self, from: &[T]) -> T;
    fn byte(&mut self) -> u8;
    fn bytes(&mut self, len: usize) -> Vec<u8>;
    /// A byte other than `old`.
    fn other_byte(&mut self, old: u8) -> u8;
}

impl Draw for Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.random_range(0..bound)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn index(&mut self, len: usize) -> usize {
        self.random_range(0..len)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.index(from.len())]
    }

    fn byte(&mut self) -> u8 {
        self.random()
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    fn other_byte(&mut self, old: u8) -> u8 {
        old ^ (1 + self.below(255) as u8)
    }
}

/// A generated packet and what it must do.
pub(super) struct Packet {
    pub(super) category: Category,
    pub(super) what: String,
    pub(super) frame: Vec<u8>,
    pub(super) expect: Expect,
    /// Something the generator itself found wrong with the packet (e.g.
    /// userspace admission accepting a mutated payload): a violation.
    pub(super) flaw: Option<String>,
}

pub(super) enum Expect {
    /// A fresh valid heartbeat: recorded, in its own slot only.
    Accept(Box<Accept>),
    /// Refused, with this outcome if the generator knows it; the table
    /// must not change.
    Refuse(Option<Counter>),
}

pub(super) struct Accept {
    /// The heartbeat as signed: its `key_id` and `auth_tag` are the sent ones.
    pub(super) heartbeat: Heartbeat,
    /// Source address (IPv6 or v4-mapped) and port it is sent from.
    pub(super) src: [u8; 16],
    pub(super) src_port: u16,
    /// Offset of the payload in the frame.
    pub(super) payload_at: usize,
}

impl Accept {
    /// The payload bytes as sent.
    pub(super) fn payload(&self) -> [u8; HEARTBEAT_LEN] {
        self.heartbeat.encode()
    }
}

/// An accepted frame, kept for replays.
pub(super) struct Sent {
    pub(super) frame: Vec<u8>,
    pub(super) payload_at: usize,
    pub(super) src: [u8; 16],
}

/// Frame shapes truncation cycles through.
pub(super) const TRUNCATION_SHAPES: usize = 5;

pub(super) struct Generator {
    pub(super) rng: Rng,
    pub(super) current: Key,
    pub(super) previous: Key,
    pub(super) pool: Vec<Sent>,
    /// Configured nodes not yet heard: the first packets are their controls.
    pub(super) warm_up: Vec<u32>,
    /// Next truncation: frame shape and length.
    pub(super) truncation: (usize, usize),
}

impl Generator {
    pub(super) fn new(seed: u64) -> Self {
        let mut rng = rng::seeded(seed);
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

    pub(super) fn keys(&self) -> KeySlots {
        let mut slots = [KeySlot::default(); KEY_SLOTS as usize];
        slots[usize::from(CURRENT_KEY_ID)] = KeySlot::with_key(self.current);
        slots[usize::from(PREVIOUS_KEY_ID)] = KeySlot::with_key(self.previous);
        slots
    }

    pub(super) fn key(&self, id: u8) -> Option<&Key> {
        match id {
            CURRENT_KEY_ID => Some(&self.current),
            PREVIOUS_KEY_ID => Some(&self.previous),
            _ => None,
        }
    }

    pub(super) fn remember(&mut self, sent: Sent) {
        if self.pool.len() < POOL {
            self.pool.push(sent);
        } else {
            let at = self.rng.index(POOL);
            self.pool[at] = sent;
        }
    }

    pub(super) fn next(&mut self, table: &[Slot]) -> Packet {
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
    pub(super) fn configured_node(&mut self) -> u32 {
        loop {
            let node = self.below_u32(MAX_NODES);
            if node != UNCONFIGURED {
                return node;
            }
        }
    }

    pub(super) fn below_u32(&mut self, bound: u32) -> u32 {
        self.rng.below(u64::from(bound)) as u32
    }

    pub(super) fn v4(&mut self) -> Ipv4Addr {
        Ipv4Addr::new(
            198,
            18 + self.rng.byte() % 2,
            self.rng.byte(),
            self.rng.byte(),
        )
    }

    pub(super) fn v6(&mut self) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd00 | u16::from(self.rng.byte()),
            self.rng.random::<u16>(),
            0,
            0,
            0,
            0,
            self.rng.random::<u16>(),
            self.rng.random::<u16>(),
        )
    }

    /// The address `node`'s heartbeats come from: the pinned one's own, else
    /// any IPv4 or IPv6 address.
    pub(super) fn source(&mut self, node: u32) -> IpAddr {
        if node == PINNED {
            IpAddr::V4(PINNED_SRC)
        } else if self.rng.chance(50) {
            IpAddr::V4(self.v4())
        } else {
            IpAddr::V6(self.v6())
        }
    }

    /// Like [`Self::source`], IPv4 only.
    pub(super) fn source_v4(&mut self, node: u32) -> Ipv4Addr {
        if node == PINNED {
            PINNED_SRC
        } else {
            self.v4()
        }
    }

    pub(super) fn src_port(&mut self) -> u16 {
        1024 + self.rng.below(64_512) as u16
    }

    /// A heartbeat of `node` that moves its (incarnation, sequence) forward
    /// from what the table holds.
    pub(super) fn fresh(&mut self, node: u32, table: &[Slot]) -> Heartbeat {
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
            sent_unix_ns: self.rng.random::<u64>(),
            auth_tag: [0; 16],
        }
    }

    /// `hb` signed with key id `id` and `key`; its `key_id` and `auth_tag`
    /// are updated to match.
    pub(super) fn sign_with(hb: &mut Heartbeat, id: u8, key: &Key) -> [u8; HEARTBEAT_LEN] {
        let mut payload = hb.encode();
        auth::sign(&mut payload, id, key);
        hb.key_id = id;
        hb.auth_tag.copy_from_slice(&payload[HEARTBEAT_LEN - 16..]);
        payload
    }

    /// `hb` validly signed, with the current key or (a quarter of the time)
    /// the previous one.
    pub(super) fn sign(&mut self, hb: &mut Heartbeat) -> [u8; HEARTBEAT_LEN] {
        let (id, key) = if self.rng.chance(25) {
            (PREVIOUS_KEY_ID, self.previous)
        } else {
            (CURRENT_KEY_ID, self.current)
        };
        Self::sign_with(hb, id, &key)
    }

    /// A fresh heartbeat of `node`, validly signed.
    pub(super) fn fresh_signed(
        &mut self,
        node: u32,
        table: &[Slot],
    ) -> (Heartbeat, [u8; HEARTBEAT_LEN]) {
        let mut hb = self.fresh(node, table);
        let payload = self.sign(&mut hb);
        (hb, payload)
    }

    /// `start` (Ethernet and tags) + IP from `src` + UDP to the port.
    /// Ethernet / IP / UDP carrying `payload`, from a source `node` may use
    /// (its pinned address if it has one) and a random port.
    pub(super) fn frame_from(&mut self, node: u32, payload: &[u8]) -> Vec<u8> {
        let src = self.source(node);
        let port = self.src_port();
        Self::udp(eth(), src, port, payload).build()
    }

    pub(super) fn udp(
        start: PacketBuilder,
        src: IpAddr,
        src_port: u16,
        payload: &[u8],
    ) -> PacketBuilder {
        match src {
            IpAddr::V4(src) => start.ipv4(src, DST4),
            IpAddr::V6(src) => start.ipv6(src, DST6),
        }
        .udp(src_port, PORT)
        .payload(payload)
    }

    /// A packet that must be accepted: `frame` carries `hb` (signed) at
    /// `payload_at`, from `src`.
    pub(super) fn accept(
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
                src: src_octets(src),
                src_port,
                payload_at,
            })),
            flaw: None,
        }
    }

    pub(super) fn refuse(
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
    pub(super) fn admission(
        &self,
        payload: &[u8; HEARTBEAT_LEN],
        src: &[u8; 16],
        table: &[Slot],
    ) -> Option<Counter> {
        let raw = RawHeartbeat::view(payload);
        let record = table.get(raw.node_id() as usize).map(|s| &s.0);
        admission::admit(raw, src, record, Unauthenticated::Refuse, |id| self.key(id)).err()
    }
}

/// The table as the rig configures it, before any heartbeat.
#[cfg(test)]
pub(super) fn fresh_table() -> Vec<Slot> {
    use hb_common::table::{NodeRecord, SLOT_CONFIGURED};

    let mut table = vec![(NodeRecord::default(), 0); MAX_NODES as usize];
    for (id, mut record) in super::rig::configured_slots() {
        record.slot_flags |= SLOT_CONFIGURED;
        table[id as usize].0 = record;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
