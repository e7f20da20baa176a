//! A small fluent builder for the frames fed to the XDP program through
//! `BPF_PROG_TEST_RUN` (its tests, and the hostile-input bench):
//! `eth().vlan(7).ipv4(src, dst).udp(sport, dport).payload(&hb).build()`.
//!
//! Lengths (IPv4 IHL and total length, IPv6 payload length, UDP length) are
//! computed from what follows them unless overridden; the IPv4 header
//! checksum is computed, the UDP/TCP checksums are left zero (the XDP program
//! does not check them). Tests use only the benchmarking range 198.18.0.0/15
//! and unique-local fd00::/8 addresses.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const UDP_HLEN: usize = 8;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

const DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

/// Starts a frame: an Ethernet header (locally administered MACs).
pub fn eth() -> PacketBuilder {
    PacketBuilder::default()
}

#[derive(Clone, Debug)]
enum Network {
    Ipv4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        option_words: u8,
        ihl: Option<u8>,
        /// Flags and fragment offset field; DF by default.
        frag: u16,
    },
    Ipv6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_by_hop: bool,
    },
}

#[derive(Clone, Debug)]
enum Transport {
    Udp {
        src: u16,
        dst: u16,
        len: Option<u16>,
    },
    Tcp {
        src: u16,
        dst: u16,
    },
    /// Just a protocol number; the payload follows the IP header directly.
    Raw(u8),
}

/// A frame under construction; see [`eth`].
#[derive(Clone, Debug, Default)]
pub struct PacketBuilder {
    /// Stacked VLAN tags, outermost first: (TPID, TCI).
    tags: Vec<(u16, u16)>,
    ether_type: Option<u16>,
    network: Option<Network>,
    transport: Option<Transport>,
    payload: Vec<u8>,
    truncate: Option<usize>,
}

impl PacketBuilder {
    /// Adds an 802.1Q tag (TPID 0x8100) after the tags already added.
    pub fn vlan(mut self, tci: u16) -> Self {
        self.tags.push((ETH_P_8021Q, tci));
        self
    }

    /// Adds an 802.1ad service tag (TPID 0x88A8) after the tags already added.
    pub fn qinq(mut self, tci: u16) -> Self {
        self.tags.push((ETH_P_8021AD, tci));
        self
    }

    /// Sets the innermost EtherType explicitly (e.g. ARP); otherwise it
    /// follows from `.ipv4()`/`.ipv6()`.
    pub fn ether_type(mut self, ether_type: u16) -> Self {
        self.ether_type = Some(ether_type);
        self
    }

    /// An IPv4 header (IHL 5, DF set, TTL 64).
    pub fn ipv4(mut self, src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        self.network = Some(Network::Ipv4 {
            src,
            dst,
            option_words: 0,
            ihl: None,
            frag: 0x4000,
        });
        self
    }

    /// Appends `words` 32-bit words of NOP options to the IPv4 header (the
    /// IHL grows accordingly).
    pub fn ipv4_options(mut self, words: u8) -> Self {
        match &mut self.network {
            Some(Network::Ipv4 { option_words, .. }) => *option_words = words,
            _ => panic!("ipv4_options() needs ipv4() first"),
        }
        self
    }

    /// Writes `ihl` into the IHL nibble regardless of the real header size.
    pub fn ipv4_ihl(mut self, value: u8) -> Self {
        match &mut self.network {
            Some(Network::Ipv4 { ihl, .. }) => *ihl = Some(value),
            _ => panic!("ipv4_ihl() needs ipv4() first"),
        }
        self
    }

    /// Makes the packet an IPv4 fragment: MF flag and offset (in 8-byte
    /// units). DF is cleared.
    pub fn fragment(mut self, more_fragments: bool, offset: u16) -> Self {
        match &mut self.network {
            Some(Network::Ipv4 { frag, .. }) => {
                assert!(
                    offset < 1 << 13,
                    "fragment offset {offset} does not fit 13 bits"
                );
                *frag = (u16::from(more_fragments) << 13) | offset;
            }
            _ => panic!("fragment() needs ipv4() first"),
        }
        self
    }

    /// An IPv6 header (hop limit 64).
    pub fn ipv6(mut self, src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        self.network = Some(Network::Ipv6 {
            src,
            dst,
            hop_by_hop: false,
        });
        self
    }

    /// Inserts an 8-byte hop-by-hop options extension header (PadN only)
    /// between the IPv6 header and the transport header.
    pub fn hop_by_hop(mut self) -> Self {
        match &mut self.network {
            Some(Network::Ipv6 { hop_by_hop, .. }) => *hop_by_hop = true,
            _ => panic!("hop_by_hop() needs ipv6() first"),
        }
        self
    }

    /// A UDP header; its length field covers header and payload.
    pub fn udp(mut self, src: u16, dst: u16) -> Self {
        self.transport = Some(Transport::Udp {
            src,
            dst,
            len: None,
        });
        self
    }

    /// Overrides the UDP length field.
    pub fn udp_len(mut self, value: u16) -> Self {
        match &mut self.transport {
            Some(Transport::Udp { len, .. }) => *len = Some(value),
            _ => panic!("udp_len() needs udp() first"),
        }
        self
    }

    /// A minimal 20-byte TCP header (ACK set).
    pub fn tcp(mut self, src: u16, dst: u16) -> Self {
        self.transport = Some(Transport::Tcp { src, dst });
        self
    }

    /// No transport header, only this IP protocol / next header number.
    pub fn ip_proto(mut self, protocol: u8) -> Self {
        self.transport = Some(Transport::Raw(protocol));
        self
    }

    /// The bytes after the last header.
    pub fn payload(mut self, bytes: &[u8]) -> Self {
        self.payload = bytes.to_vec();
        self
    }

    /// Cuts the finished frame to its first `len` bytes (lengths inside the
    /// headers still describe the untruncated frame).
    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate = Some(len);
        self
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let segment = self.transport_segment();
        let (ether_type, network) = match &self.network {
            None => (ETH_P_IPV4, Vec::new()),
            Some(Network::Ipv4 {
                src,
                dst,
                option_words,
                ihl,
                frag,
            }) => (
                ETH_P_IPV4,
                ipv4_header(*src, *dst, *option_words, *ihl, *frag, self, &segment),
            ),
            Some(Network::Ipv6 {
                src,
                dst,
                hop_by_hop,
            }) => (
                ETH_P_IPV6,
                ipv6_header(*src, *dst, *hop_by_hop, self, &segment),
            ),
        };

        let mut frame = Vec::with_capacity(ETH_HLEN + network.len() + segment.len());
        frame.extend_from_slice(&DST_MAC);
        frame.extend_from_slice(&SRC_MAC);
        for (tpid, tci) in &self.tags {
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&tci.to_be_bytes());
        }
        frame.extend_from_slice(&self.ether_type.unwrap_or(ether_type).to_be_bytes());
        frame.extend_from_slice(&network);
        frame.extend_from_slice(&segment);
        if let Some(len) = self.truncate {
            assert!(
                len <= frame.len(),
                "truncate({len}) of a {}-byte frame",
                frame.len()
            );
            frame.truncate(len);
        }
        frame
    }

    fn protocol(&self) -> u8 {
        match self.transport {
            None | Some(Transport::Udp { .. }) => IPPROTO_UDP,
            Some(Transport::Tcp { .. }) => IPPROTO_TCP,
            Some(Transport::Raw(protocol)) => protocol,
        }
    }

    /// Transport header plus payload.
    fn transport_segment(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.transport {
            None | Some(Transport::Raw(_)) => {}
            Some(Transport::Udp { src, dst, len }) => {
                let computed = u16::try_from(UDP_HLEN + self.payload.len()).expect("UDP length");
                out.extend_from_slice(&src.to_be_bytes());
                out.extend_from_slice(&dst.to_be_bytes());
                out.extend_from_slice(&len.unwrap_or(computed).to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Some(Transport::Tcp { src, dst }) => {
                out.extend_from_slice(&src.to_be_bytes());
                out.extend_from_slice(&dst.to_be_bytes());
                out.extend_from_slice(&1u32.to_be_bytes()); // sequence
                out.extend_from_slice(&0u32.to_be_bytes()); // acknowledgment
                out.extend_from_slice(&[0x50, 0x10]); // data offset 5, ACK
                out.extend_from_slice(&[0xFF, 0xFF, 0, 0, 0, 0]); // window, csum, urg
            }
        }
        out.extend_from_slice(&self.payload);
        out
    }
}

fn ipv4_header(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    option_words: u8,
    ihl: Option<u8>,
    frag: u16,
    packet: &PacketBuilder,
    segment: &[u8],
) -> Vec<u8> {
    let header_len = IPV4_HLEN + 4 * usize::from(option_words);
    let ihl = ihl.unwrap_or(5 + option_words);
    assert!(ihl <= 0x0F, "IHL {ihl} does not fit 4 bits");
    let total = u16::try_from(header_len + segment.len()).expect("IPv4 total length");
    let mut out = Vec::with_capacity(header_len);
    out.push(0x40 | ihl);
    out.push(0); // DSCP/ECN
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&0x1234u16.to_be_bytes()); // identification
    out.extend_from_slice(&frag.to_be_bytes());
    out.push(64); // TTL
    out.push(packet.protocol());
    out.extend_from_slice(&[0, 0]); // checksum, filled in below
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    out.resize(header_len, 0x01); // NOP options
    let checksum = internet_checksum(&out);
    out[10..12].copy_from_slice(&checksum.to_be_bytes());
    out
}

fn ipv6_header(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_by_hop: bool,
    packet: &PacketBuilder,
    segment: &[u8],
) -> Vec<u8> {
    let extension_len = if hop_by_hop { 8 } else { 0 };
    let payload_len = u16::try_from(extension_len + segment.len()).expect("IPv6 payload length");
    let next_header = if hop_by_hop {
        IPPROTO_HOPOPTS
    } else {
        packet.protocol()
    };
    let mut out = Vec::with_capacity(IPV6_HLEN + extension_len);
    out.extend_from_slice(&0x6000_0000u32.to_be_bytes());
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.push(next_header);
    out.push(64); // hop limit
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    if hop_by_hop {
        // Next header, length 0 (8 bytes), PadN of 4 bytes.
        out.extend_from_slice(&[packet.protocol(), 0, 1, 4, 0, 0, 0, 0]);
    }
    out
}

/// RFC 1071 one's-complement sum.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_lays_out_a_vlan_tagged_ipv4_udp_frame() {
        let frame = eth()
            .qinq(0x0064)
            .vlan(0x00C8)
            .ipv4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 2))
            .ipv4_options(1)
            .udp(1000, 2000)
            .payload(&[0xAA; 3])
            .build();
        assert_eq!(
            frame.len(),
            ETH_HLEN + 2 * VLAN_HLEN + IPV4_HLEN + 4 + UDP_HLEN + 3
        );
        assert_eq!(&frame[12..14], &ETH_P_8021AD.to_be_bytes());
        assert_eq!(&frame[14..16], &0x0064u16.to_be_bytes());
        assert_eq!(&frame[16..18], &ETH_P_8021Q.to_be_bytes());
        assert_eq!(&frame[18..20], &0x00C8u16.to_be_bytes());
        assert_eq!(&frame[20..22], &ETH_P_IPV4.to_be_bytes());
        let ip = &frame[22..];
        assert_eq!(ip[0], 0x46, "version 4, IHL 6");
        assert_eq!(
            u16::from_be_bytes([ip[2], ip[3]]),
            24 + 8 + 3,
            "total length"
        );
        assert_eq!(ip[9], IPPROTO_UDP);
        assert_eq!(internet_checksum(&ip[..24]), 0, "header checksum verifies");
        let udp = &ip[24..];
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 2000);
        assert_eq!(u16::from_be_bytes([udp[4], udp[5]]), 8 + 3, "UDP length");
    }

    #[test]
    fn builder_lays_out_ipv6_with_hop_by_hop() {
        let src: Ipv6Addr = "fd00::1".parse().expect("address");
        let dst: Ipv6Addr = "fd00::2".parse().expect("address");
        let frame = eth()
            .ipv6(src, dst)
            .hop_by_hop()
            .udp(1, 2)
            .payload(&[0; 5])
            .build();
        assert_eq!(&frame[12..14], &ETH_P_IPV6.to_be_bytes());
        let ip = &frame[ETH_HLEN..];
        assert_eq!(
            u16::from_be_bytes([ip[4], ip[5]]),
            8 + 8 + 5,
            "payload length"
        );
        assert_eq!(ip[6], IPPROTO_HOPOPTS);
        assert_eq!(ip[IPV6_HLEN], IPPROTO_UDP, "extension header's next header");
        assert_eq!(&ip[8..24], &src.octets());
        assert_eq!(frame.len(), ETH_HLEN + IPV6_HLEN + 8 + 8 + 5);
    }
}
