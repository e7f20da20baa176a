//! The categories whose heartbeat is hostile (or, for the controls, valid):
//! mutations, replays, forged leaves, unknown and wrong keys,
//! unauthenticated heartbeats, wrong sources, old incarnations and unknown
//! nodes.

use std::net::IpAddr;

use hb_common::{
    auth,
    counters::Counter,
    siphash::Key,
    table::src_octets,
    wire::{HEARTBEAT_LEN, flags},
};

use super::{
    CURRENT_KEY_ID, MAX_NODES, PINNED, PINNED_SRC, PREVIOUS_KEY_ID, UNCONFIGURED,
    category::Category,
    generator::{Draw, Generator, Packet},
    rig::Slot,
};
use crate::{frame::eth, rng::Rng};

impl Generator {
    pub(super) fn control(&mut self, table: &[Slot], node: Option<u32>) -> Packet {
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

    /// One bit or one byte changed. Half the time anywhere in a frame that
    /// was accepted (whatever survives is a replay); else in the payload
    /// only, of an accepted frame or of a fresh one (the tag covers every
    /// byte, and admission predicts the exact refusal).
    pub(super) fn mutation(&mut self, category: Category, table: &[Slot]) -> Packet {
        let bit = category == Category::BitFlip;
        let mutate = |rng: &mut Rng, bytes: &mut [u8]| -> String {
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
        let predicted = self.admission(&payload, &src_octets(src), table);
        let frame = Self::udp(eth(), src, port, &payload).build();
        Self::predicted(category, what, frame, predicted)
    }

    /// A mutated payload must be refused, for the reason admission gives
    /// (`None`: admission would accept it, itself a violation).
    pub(super) fn predicted(
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

    pub(super) fn replay(&mut self, table: &[Slot]) -> Packet {
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

    pub(super) fn forged_leave(&mut self, table: &[Slot]) -> Packet {
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

    pub(super) fn unknown_key(&mut self, table: &[Slot]) -> Packet {
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

    pub(super) fn wrong_key(&mut self, table: &[Slot]) -> Packet {
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

    pub(super) fn unauthenticated(&mut self, table: &[Slot]) -> Packet {
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

    pub(super) fn wrong_source(&mut self, table: &[Slot]) -> Packet {
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

    pub(super) fn old_incarnation(&mut self, table: &[Slot]) -> Packet {
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

    pub(super) fn unknown_node(&mut self, table: &[Slot]) -> Packet {
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
    use super::{
        super::generator::{Expect, Sent, fresh_table},
        *,
    };

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
