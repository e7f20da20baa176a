//! The probe wire format: what hb puts in the ICMP / ICMPv6 echo requests it
//! sends to nodes that run no sender, and what the XDP program checks in the
//! echo replies before it records them into the node table.
//!
//! An echo request (ICMP type 8, ICMPv6 type 128, code 0) whose **identifier**
//! is hb's (a 16-bit value the agent picks at each start) and whose data is
//! exactly [`PROBE_LEN`] bytes:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  magic = "HBPR" (0x48425052)                  |  0
//! +---------------+-----------------------------------------------+
//! |  version = 1  |                 reserved = 0                  |  4
//! +---------------+-----------------------------------------------+
//! |                            node id                            |  8
//! +---------------------------------------------------------------+
//! |                         reserved = 0                          | 12
//! +---------------------------------------------------------------+
//! |                 probe sequence number (64 bits)               | 16
//! +                                                               +
//! |                                                               |
//! +---------------------------------------------------------------+
//! |    tag: SipHash-2-4 (64 bits, little-endian; see below)      | 24
//! +                                                               +
//! |                                                               |
//! +---------------------------------------------------------------+
//!                                                          32 bytes
//! ```
//!
//! Every multi-byte integer but the tag is big-endian. The node echoes the
//! data back unchanged in its echo reply (ICMP type 0, ICMPv6 type 129).
//!
//! **The tag** is SipHash-2-4, under a 128-bit secret the agent generates at
//! each start (never written anywhere but the XDP program's `HB_PROBE_KEY`
//! map), of the 40 bytes: data bytes 0–23 (every field before the tag) then
//! the probed address as 16 bytes (IPv6, or IPv4 mapped into IPv6,
//! `::ffff:a.b.c.d`, as in [`crate::table::src_octets`]). The datapath
//! verifies it against the reply's *source* address, so a reply from any
//! other address than the one probed fails the tag, and an off-path host
//! that does not know the secret cannot forge a reply (about 2^63 tries per
//! accepted packet, as for heartbeats). The first 8 bytes are constant, so
//! the datapath starts from the SipHash state after them
//! ([`ProbeSecret::prefix`]), as it does for heartbeats.
//!
//! **The sequence** advances per node (hb: from 1 at each start, +1 per
//! probe of that node); the datapath records a reply only if its sequence
//! is greater than the last one recorded for the node (`HB_PROBES`), so a
//! replayed or reordered reply never refreshes a node. The agent's new
//! secret at each start is what lets it restart its sequences: it installs
//! the secret, then clears the recorded sequences (a reply tagged under an
//! older secret fails the tag).

use crate::siphash::{Key, Prefix, siphash24};

/// `"HBPR"` in ASCII, big-endian.
pub const MAGIC: u32 = 0x4842_5052;
/// The only probe version this build speaks.
pub const VERSION: u8 = 1;
/// Size of the echo data of an hb probe, in bytes.
pub const PROBE_LEN: usize = 32;
/// Size of an ICMP / ICMPv6 echo header (type, code, checksum, identifier,
/// sequence).
pub const ICMP_ECHO_HLEN: usize = 8;
/// The data bytes the tag covers (before the probed address).
pub const SIGNED_LEN: usize = offset::TAG;
/// The message the tag is computed over: the signed data bytes, then the
/// probed address.
pub const MESSAGE_LEN: usize = SIGNED_LEN + 16;

/// ICMP (IPv4) echo request and reply types.
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMPv6 echo request and reply types.
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// Byte offsets of the fields in the echo data.
pub mod offset {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const RESERVED: usize = 5;
    pub const NODE_ID: usize = 8;
    pub const RESERVED_WORD: usize = 12;
    pub const SEQUENCE: usize = 16;
    pub const TAG: usize = 24;
}

/// The echo data exactly as it lies in the packet (fields big-endian but
/// the tag). The XDP program casts the packet bytes to this type after a
/// bounds check.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawProbe {
    pub magic: [u8; 4],
    pub version: u8,
    pub reserved: [u8; 3],
    pub node_id: [u8; 4],
    pub reserved_word: [u8; 4],
    pub sequence: [u8; 8],
    pub tag: [u8; 8],
}

const _: () = assert!(size_of::<RawProbe>() == PROBE_LEN);
const _: () = assert!(align_of::<RawProbe>() == 1);
const _: () = assert!(core::mem::offset_of!(RawProbe, tag) == offset::TAG);
const _: () = assert!(core::mem::offset_of!(RawProbe, sequence) == offset::SEQUENCE);

/// The first 8 bytes of every version-1 probe: magic, version, reserved.
const FIRST_WORD: [u8; 8] = {
    let m = MAGIC.to_be_bytes();
    [m[0], m[1], m[2], m[3], VERSION, 0, 0, 0]
};

impl RawProbe {
    /// The data bytes viewed as fields, without copying (no validation).
    #[inline(always)]
    pub const fn view(bytes: &[u8; PROBE_LEN]) -> &Self {
        // SAFETY: `RawProbe` is `repr(C)`, `PROBE_LEN` bytes long with
        // alignment 1 (both asserted above) and made of byte arrays only, so
        // every byte string of that length is a valid value.
        unsafe { &*(bytes as *const [u8; PROBE_LEN] as *const Self) }
    }

    /// The fields as the data bytes they are, without copying.
    #[inline(always)]
    pub const fn as_bytes(&self) -> &[u8; PROBE_LEN] {
        // SAFETY: as in `view`: same size, alignment 1, no padding.
        unsafe { &*(self as *const Self as *const [u8; PROBE_LEN]) }
    }

    #[inline(always)]
    pub const fn node_id(&self) -> u32 {
        u32::from_be_bytes(self.node_id)
    }
    #[inline(always)]
    pub const fn sequence(&self) -> u64 {
        u64::from_be_bytes(self.sequence)
    }
    #[inline(always)]
    pub const fn tag(&self) -> u64 {
        u64::from_le_bytes(self.tag)
    }

    /// Magic, version and both reserved fields as version 1 has them.
    #[inline(always)]
    pub const fn is_well_formed(&self) -> bool {
        u32::from_be_bytes(self.magic) == MAGIC
            && self.version == VERSION
            && u32::from_be_bytes([0, self.reserved[0], self.reserved[1], self.reserved[2]]) == 0
            && u32::from_be_bytes(self.reserved_word) == 0
    }

    /// The message the tag covers when the reply comes from `from` (16
    /// bytes, IPv6 or v4-mapped): the signed data bytes, then the address.
    #[inline(always)]
    pub fn message(&self, from: &[u8; 16]) -> [u8; MESSAGE_LEN] {
        let mut message = [0u8; MESSAGE_LEN];
        let (signed, address) = message.split_at_mut(SIGNED_LEN);
        signed.copy_from_slice(&self.as_bytes()[..SIGNED_LEN]);
        address.copy_from_slice(from);
        message
    }
}

/// A probe, in host byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub node_id: u32,
    pub sequence: u64,
}

/// Why echo data is not an hb probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not exactly [`PROBE_LEN`] bytes.
    Length { got: usize },
    /// Wrong magic or version, or a reserved field is not zero.
    Header,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Length { got } => {
                write!(f, "echo data is {got} bytes, a probe's is {PROBE_LEN}")
            }
            DecodeError::Header => write!(f, "not a version-{VERSION} hb probe"),
        }
    }
}

impl Probe {
    /// The echo data of this probe to `target` (16 bytes, IPv6 or
    /// v4-mapped), tagged under `key`.
    pub fn encode(&self, key: &Key, target: &[u8; 16]) -> [u8; PROBE_LEN] {
        let mut out = [0u8; PROBE_LEN];
        out[..8].copy_from_slice(&FIRST_WORD);
        out[offset::NODE_ID..offset::RESERVED_WORD].copy_from_slice(&self.node_id.to_be_bytes());
        out[offset::SEQUENCE..offset::TAG].copy_from_slice(&self.sequence.to_be_bytes());
        let tag = siphash24(key, &RawProbe::view(&out).message(target));
        out[offset::TAG..].copy_from_slice(&tag.to_le_bytes());
        out
    }

    /// Decodes echo data (no tag check: see [`verify`]).
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let bytes: &[u8; PROBE_LEN] = data
            .try_into()
            .map_err(|_| DecodeError::Length { got: data.len() })?;
        let raw = RawProbe::view(bytes);
        if !raw.is_well_formed() {
            return Err(DecodeError::Header);
        }
        Ok(Probe {
            node_id: raw.node_id(),
            sequence: raw.sequence(),
        })
    }
}

/// Whether `data`'s tag is right under `key` for a reply from `from`.
pub fn verify(key: &Key, data: &[u8; PROBE_LEN], from: &[u8; 16]) -> bool {
    let raw = RawProbe::view(data);
    siphash24(key, &raw.message(from)) == raw.tag()
}

/// The value of `HB_PROBE_KEY`'s only entry, written by the agent: hb's
/// echo identifier and the SipHash state of the secret after a probe's
/// constant first word (see the module documentation). All zero: no probe
/// secret installed, every echo reply is passed as not hb's. 48 bytes, as
/// secret as the key; `Debug` does not show it.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeSecret {
    pub prefix: Prefix,
    /// The echo identifier of hb's probes, host byte order.
    pub identifier: u16,
    /// 1: installed.
    pub in_use: u8,
    pub _reserved: [u8; 5],
}

const _: () = assert!(size_of::<ProbeSecret>() == 48);

#[cfg(feature = "user")]
// SAFETY: `ProbeSecret` is `repr(C)`, has no padding (size asserted above:
// 40 + 2 + 1 + 5) and every bit pattern is a valid value.
unsafe impl aya::Pod for ProbeSecret {}

impl core::fmt::Debug for ProbeSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ProbeSecret")
            .field("identifier", &self.identifier)
            .field("in_use", &self.in_use)
            .finish_non_exhaustive()
    }
}

impl ProbeSecret {
    /// The secret `key` for probes with echo identifier `identifier`.
    pub fn new(identifier: u16, key: &Key) -> Self {
        ProbeSecret {
            prefix: Prefix::new(key, FIRST_WORD),
            identifier,
            in_use: 1,
            _reserved: [0; 5],
        }
    }

    /// Whether an echo with identifier `identifier` (host order) is hb's.
    #[inline(always)]
    pub const fn matches(&self, identifier: u16) -> bool {
        self.in_use != 0 && self.identifier == identifier
    }

    /// Whether `probe`'s tag is right for a reply from `from`. A probe
    /// whose first word is not version 1's fails too.
    #[inline(always)]
    pub fn verify(&self, probe: &RawProbe, from: &[u8; 16]) -> bool {
        self.prefix.siphash24(&probe.message(from)) == Some(probe.tag())
    }
}

/// An ICMP / ICMPv6 echo message of `kind` (one of the four types above)
/// carrying `data`: the 8-byte header then the data. The ICMPv4 checksum is
/// filled in; an ICMPv6 one covers a pseudo-header and is left 0 (a raw
/// ICMPv6 socket has the kernel compute it).
pub fn echo_message(
    kind: u8,
    identifier: u16,
    icmp_sequence: u16,
    data: &[u8; PROBE_LEN],
) -> [u8; ICMP_ECHO_HLEN + PROBE_LEN] {
    let mut out = [0u8; ICMP_ECHO_HLEN + PROBE_LEN];
    out[0] = kind;
    out[4..6].copy_from_slice(&identifier.to_be_bytes());
    out[6..8].copy_from_slice(&icmp_sequence.to_be_bytes());
    out[ICMP_ECHO_HLEN..].copy_from_slice(data);
    if kind == ICMP_ECHO_REQUEST || kind == ICMP_ECHO_REPLY {
        let checksum = internet_checksum(&out);
        out[2..4].copy_from_slice(&checksum.to_be_bytes());
    }
    out
}

/// The Internet checksum (RFC 1071) of `bytes`.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut pairs = bytes.chunks_exact(2);
    for pair in &mut pairs {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::src_octets;

    const KEY: Key = [0x11; 16];

    fn target() -> [u8; 16] {
        src_octets("198.19.0.7".parse().unwrap())
    }

    #[test]
    fn encode_then_decode_round_trips_and_lays_out_the_fields() {
        let probe = Probe {
            node_id: 0x0102_0304,
            sequence: 0x1122_3344_5566_7788,
        };
        let data = probe.encode(&KEY, &target());
        assert_eq!(&data[..8], b"HBPR\x01\0\0\0");
        assert_eq!(&data[8..12], &[1, 2, 3, 4]);
        assert_eq!(&data[12..16], &[0; 4]);
        assert_eq!(&data[16..24], &0x1122_3344_5566_7788u64.to_be_bytes());
        assert_eq!(Probe::decode(&data), Ok(probe));
        assert_eq!(
            Probe::decode(&data[..31]),
            Err(DecodeError::Length { got: 31 })
        );
        for at in [0, 4, 5, 7, 12, 15] {
            let mut bad = data;
            bad[at] ^= 0x40;
            assert_eq!(Probe::decode(&bad), Err(DecodeError::Header), "byte {at}");
        }
    }

    #[test]
    fn the_tag_is_siphash_of_the_signed_bytes_and_the_probed_address() {
        let probe = Probe {
            node_id: 9,
            sequence: 77,
        };
        let data = probe.encode(&KEY, &target());
        let mut message = [0u8; MESSAGE_LEN];
        message[..24].copy_from_slice(&data[..24]);
        message[24..].copy_from_slice(&target());
        assert_eq!(
            u64::from_le_bytes(data[24..].try_into().unwrap()),
            siphash24(&KEY, &message)
        );
        assert!(verify(&KEY, &data, &target()));
        let secret = ProbeSecret::new(0xbeef, &KEY);
        assert!(secret.verify(RawProbe::view(&data), &target()));
        assert!(secret.matches(0xbeef) && !secret.matches(0xbeee));
        assert!(
            !ProbeSecret::default().matches(0),
            "no secret: nothing is hb's"
        );
    }

    #[test]
    fn another_address_key_node_sequence_or_any_bit_fails_the_tag() {
        let probe = Probe {
            node_id: 9,
            sequence: 77,
        };
        let data = probe.encode(&KEY, &target());
        let secret = ProbeSecret::new(1, &KEY);
        let other = src_octets("198.19.0.8".parse().unwrap());
        assert!(!secret.verify(RawProbe::view(&data), &other));
        let v6 = src_octets("fd00::7".parse().unwrap());
        assert!(!secret.verify(RawProbe::view(&probe.encode(&KEY, &v6)), &target()));
        assert!(!ProbeSecret::new(1, &[0x12; 16]).verify(RawProbe::view(&data), &target()));
        for bit in 0..PROBE_LEN * 8 {
            let mut bad = data;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !secret.verify(RawProbe::view(&bad), &target()),
                "bit {bit} flipped"
            );
        }
    }

    #[test]
    fn echo_messages_carry_type_identifier_sequence_and_a_valid_v4_checksum() {
        let data = Probe {
            node_id: 1,
            sequence: 2,
        }
        .encode(&KEY, &target());
        let request = echo_message(ICMP_ECHO_REQUEST, 0xabcd, 7, &data);
        assert_eq!(request[0], 8);
        assert_eq!(request[1], 0);
        assert_eq!(&request[4..8], &[0xab, 0xcd, 0, 7]);
        assert_eq!(&request[8..], &data);
        assert_eq!(internet_checksum(&request), 0, "a valid checksum sums to 0");
        let v6 = echo_message(ICMPV6_ECHO_REPLY, 1, 1, &data);
        assert_eq!((v6[0], v6[2], v6[3]), (129, 0, 0));
        assert_eq!(internet_checksum(&[0x00, 0x01, 0xf2]), !0xf201);
    }
}
