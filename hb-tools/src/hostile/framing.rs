//! The categories whose framing is hostile: VLAN and QinQ tags, IPv4
//! options and bad IHLs, IPv6 extension headers, IPv4 fragments, wrong UDP
//! lengths, truncations and random bytes.

use std::net::IpAddr;

use bytes::BufMut;
use hb_common::{
    counters::Counter,
    wire::{HEARTBEAT_LEN, flags},
};
use rand::Rng as _;

use super::{
    CURRENT_KEY_ID, DST4, DST6, MAX_NODES, PORT, PREVIOUS_KEY_ID,
    category::Category,
    generator::{Draw, Generator, Packet, TRUNCATION_SHAPES},
    rig::Slot,
};
use crate::frame::{ETH_P_ARP, IPPROTO_UDP, PacketBuilder, UDP_HLEN, eth};

/// IPv6 extension headers the program does not walk: hop-by-hop, routing,
/// fragment, destination options.
const IPV6_EXTENSIONS: [u8; 4] = [0, 43, 44, 60];

impl Generator {
    pub(super) fn vlan_qinq(&mut self, table: &[Slot]) -> Packet {
        let node = self.configured_node();
        let (hb, payload) = self.fresh_signed(node, table);
        let src = self.source(node);
        let port = self.src_port();
        let (tci1, tci2, tci3) = (
            self.rng.random::<u16>(),
            self.rng.random::<u16>(),
            self.rng.random::<u16>(),
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

    pub(super) fn ipv4_options(&mut self, table: &[Slot]) -> Packet {
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

    pub(super) fn ipv4_bad_ihl(&mut self, table: &[Slot]) -> Packet {
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

    pub(super) fn ipv6_extension(&mut self, table: &[Slot]) -> Packet {
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
        // The UDP header (no checksum), then the heartbeat.
        segment.put_u16(port);
        segment.put_u16(PORT);
        segment.put_u16((UDP_HLEN + HEARTBEAT_LEN) as u16);
        segment.put_u16(0);
        segment.put_slice(&payload);
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

    pub(super) fn ipv4_fragment(&mut self, table: &[Slot]) -> Packet {
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

    pub(super) fn udp_length(&mut self, table: &[Slot]) -> Packet {
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

    pub(super) fn truncated(&mut self, table: &[Slot]) -> Packet {
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

    pub(super) fn random_bytes(&mut self) -> Packet {
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
            0 => eth().vlan(self.rng.random::<u16>()),
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
}

#[cfg(test)]
mod tests {
    use super::{super::generator::fresh_table, *};

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
}
