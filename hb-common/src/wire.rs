//! The heartbeat wire format: one fixed-size UDP payload, version 1.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  magic = "BEAT" (0x42454154)                  |  0
//! +---------------+---------------+---------------+---------------+
//! |  version = 1  |     flags     |    key id     |  reserved = 0 |  4
//! +---------------+---------------+---------------+---------------+
//! |                            node id                            |  8
//! +---------------------------------------------------------------+
//! |                     sending interval (ms)                     | 12
//! +---------------------------------------------------------------+
//! |                     incarnation (64 bits)                     | 16
//! +---------------------------------------------------------------+
//! |                   sequence number (64 bits)                   | 24
//! +---------------------------------------------------------------+
//! |            sender timestamp, Unix ns (64 bits)                | 32
//! +---------------------------------------------------------------+
//! |    authentication tag (128 bits; see `crate::auth`)           | 40
//! +---------------------------------------------------------------+
//!                                                          56 bytes
//! ```
//!
//! Every multi-byte integer is big-endian (network byte order).

/// Default UDP destination port for heartbeats.
pub const DEFAULT_PORT: u16 = 7979;
/// `"BEAT"` in ASCII, big-endian.
pub const MAGIC: u32 = 0x4245_4154;
/// The only version this build speaks.
pub const VERSION: u8 = 1;
/// Size of a version-1 heartbeat payload, in bytes.
pub const HEARTBEAT_LEN: usize = 56;

/// Bits of the `flags` byte.
pub mod flags {
    /// Graceful leave: the node is shutting down on purpose; the monitor
    /// marks it "left" and runs no failover for it.
    pub const LEAVE: u8 = 1 << 0;
    /// Every flag this version defines; other bits must be zero.
    pub const KNOWN: u8 = LEAVE;
}

/// Byte offsets of the fields in the payload.
pub mod offset {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const FLAGS: usize = 5;
    pub const KEY_ID: usize = 6;
    pub const RESERVED: usize = 7;
    pub const NODE_ID: usize = 8;
    pub const INTERVAL_MS: usize = 12;
    pub const INCARNATION: usize = 16;
    pub const SEQUENCE: usize = 24;
    pub const SENT_UNIX_NS: usize = 32;
    pub const AUTH_TAG: usize = 40;
}

/// The payload exactly as it lies in the packet: fields hold big-endian
/// values; read them with the accessor methods. The XDP program casts the
/// packet bytes to this type after a bounds check.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawHeartbeat {
    pub magic: [u8; 4],
    pub version: u8,
    pub flags: u8,
    pub key_id: u8,
    pub reserved: u8,
    pub node_id: [u8; 4],
    pub interval_ms: [u8; 4],
    pub incarnation: [u8; 8],
    pub sequence: [u8; 8],
    pub sent_unix_ns: [u8; 8],
    pub auth_tag: [u8; 16],
}

const _: () = assert!(size_of::<RawHeartbeat>() == HEARTBEAT_LEN);
const _: () = assert!(align_of::<RawHeartbeat>() == 1);

impl RawHeartbeat {
    /// The payload bytes viewed as fields, without copying (no validation).
    #[inline(always)]
    pub const fn view(bytes: &[u8; HEARTBEAT_LEN]) -> &Self {
        // SAFETY: `RawHeartbeat` is `repr(C)`, `HEARTBEAT_LEN` bytes long with
        // alignment 1 (both asserted above) and made of byte arrays only, so
        // every byte string of that length is a valid value.
        unsafe { &*(bytes as *const [u8; HEARTBEAT_LEN] as *const Self) }
    }

    /// The fields as the payload bytes they are, without copying.
    #[inline(always)]
    pub const fn as_bytes(&self) -> &[u8; HEARTBEAT_LEN] {
        // SAFETY: as in `view`: same size, alignment 1, no padding.
        unsafe { &*(self as *const Self as *const [u8; HEARTBEAT_LEN]) }
    }

    /// Splits the payload bytes into fields (no validation).
    pub fn from_bytes(bytes: &[u8; HEARTBEAT_LEN]) -> Self {
        fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
            let mut out = [0u8; N];
            out.copy_from_slice(&bytes[at..at + N]);
            out
        }
        RawHeartbeat {
            magic: array(bytes, offset::MAGIC),
            version: bytes[offset::VERSION],
            flags: bytes[offset::FLAGS],
            key_id: bytes[offset::KEY_ID],
            reserved: bytes[offset::RESERVED],
            node_id: array(bytes, offset::NODE_ID),
            interval_ms: array(bytes, offset::INTERVAL_MS),
            incarnation: array(bytes, offset::INCARNATION),
            sequence: array(bytes, offset::SEQUENCE),
            sent_unix_ns: array(bytes, offset::SENT_UNIX_NS),
            auth_tag: array(bytes, offset::AUTH_TAG),
        }
    }

    #[inline(always)]
    pub const fn magic(&self) -> u32 {
        u32::from_be_bytes(self.magic)
    }
    #[inline(always)]
    pub const fn node_id(&self) -> u32 {
        u32::from_be_bytes(self.node_id)
    }
    #[inline(always)]
    pub const fn interval_ms(&self) -> u32 {
        u32::from_be_bytes(self.interval_ms)
    }
    #[inline(always)]
    pub const fn incarnation(&self) -> u64 {
        u64::from_be_bytes(self.incarnation)
    }
    #[inline(always)]
    pub const fn sequence(&self) -> u64 {
        u64::from_be_bytes(self.sequence)
    }
    #[inline(always)]
    pub const fn sent_unix_ns(&self) -> u64 {
        u64::from_be_bytes(self.sent_unix_ns)
    }

    /// Whether the LEAVE flag is set.
    #[inline(always)]
    pub const fn is_leave(&self) -> bool {
        self.flags & flags::LEAVE != 0
    }

    /// The checks the monitor applies to every payload before trusting any
    /// other field: magic, version, reserved byte and unknown flag bits.
    #[inline(always)]
    pub const fn is_well_formed(&self) -> bool {
        self.magic() == MAGIC
            && self.version == VERSION
            && self.reserved == 0
            && self.flags & !flags::KNOWN == 0
    }
}

/// A decoded heartbeat, in host byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub flags: u8,
    pub key_id: u8,
    pub node_id: u32,
    pub interval_ms: u32,
    pub incarnation: u64,
    pub sequence: u64,
    pub sent_unix_ns: u64,
    pub auth_tag: [u8; 16],
}

/// Why a payload is not a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload is not exactly [`HEARTBEAT_LEN`] bytes long.
    Length { got: usize },
    /// The first four bytes are not [`MAGIC`].
    Magic { got: u32 },
    /// The version byte is not [`VERSION`].
    Version { got: u8 },
    /// The reserved byte is not zero.
    Reserved { got: u8 },
    /// Flag bits this version does not define are set.
    UnknownFlags { got: u8 },
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Length { got } => {
                write!(f, "payload is {got} bytes, a heartbeat is {HEARTBEAT_LEN}")
            }
            DecodeError::Magic { got } => write!(f, "magic {got:#010x} is not {MAGIC:#010x}"),
            DecodeError::Version { got } => write!(f, "version {got} is not {VERSION}"),
            DecodeError::Reserved { got } => write!(f, "reserved byte is {got}, must be 0"),
            DecodeError::UnknownFlags { got } => write!(f, "unknown flag bits in {got:#04x}"),
        }
    }
}

impl Heartbeat {
    /// Whether this is a graceful-leave heartbeat.
    pub const fn is_leave(&self) -> bool {
        self.flags & flags::LEAVE != 0
    }

    /// Encodes into the 56-byte wire form.
    pub fn encode(&self) -> [u8; HEARTBEAT_LEN] {
        let mut out = [0u8; HEARTBEAT_LEN];
        out[offset::MAGIC..offset::VERSION].copy_from_slice(&MAGIC.to_be_bytes());
        out[offset::VERSION] = VERSION;
        out[offset::FLAGS] = self.flags;
        out[offset::KEY_ID] = self.key_id;
        out[offset::RESERVED] = 0;
        out[offset::NODE_ID..offset::INTERVAL_MS].copy_from_slice(&self.node_id.to_be_bytes());
        out[offset::INTERVAL_MS..offset::INCARNATION]
            .copy_from_slice(&self.interval_ms.to_be_bytes());
        out[offset::INCARNATION..offset::SEQUENCE].copy_from_slice(&self.incarnation.to_be_bytes());
        out[offset::SEQUENCE..offset::SENT_UNIX_NS].copy_from_slice(&self.sequence.to_be_bytes());
        out[offset::SENT_UNIX_NS..offset::AUTH_TAG]
            .copy_from_slice(&self.sent_unix_ns.to_be_bytes());
        out[offset::AUTH_TAG..].copy_from_slice(&self.auth_tag);
        out
    }

    /// Decodes a UDP payload, applying the same checks as the XDP program.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let bytes: &[u8; HEARTBEAT_LEN] = payload
            .try_into()
            .map_err(|_| DecodeError::Length { got: payload.len() })?;
        let raw = RawHeartbeat::from_bytes(bytes);
        if raw.magic() != MAGIC {
            return Err(DecodeError::Magic { got: raw.magic() });
        }
        if raw.version != VERSION {
            return Err(DecodeError::Version { got: raw.version });
        }
        if raw.reserved != 0 {
            return Err(DecodeError::Reserved { got: raw.reserved });
        }
        if raw.flags & !flags::KNOWN != 0 {
            return Err(DecodeError::UnknownFlags { got: raw.flags });
        }
        Ok(Heartbeat {
            flags: raw.flags,
            key_id: raw.key_id,
            node_id: raw.node_id(),
            interval_ms: raw.interval_ms(),
            incarnation: raw.incarnation(),
            sequence: raw.sequence(),
            sent_unix_ns: raw.sent_unix_ns(),
            auth_tag: raw.auth_tag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Heartbeat {
        Heartbeat {
            flags: 0,
            key_id: 0,
            node_id: 0x0102_0304,
            interval_ms: 2000,
            incarnation: 0x1122_3344_5566_7788,
            sequence: 42,
            sent_unix_ns: 1_700_000_000_000_000_000,
            auth_tag: [0; 16],
        }
    }

    #[test]
    fn round_trip() {
        for hb in [
            sample(),
            Heartbeat {
                flags: flags::LEAVE,
                ..sample()
            },
            Heartbeat {
                node_id: u32::MAX,
                sequence: u64::MAX,
                incarnation: 0,
                ..sample()
            },
            Heartbeat {
                key_id: 7,
                auth_tag: [0xAB; 16],
                ..sample()
            },
        ] {
            assert_eq!(Heartbeat::decode(&hb.encode()), Ok(hb));
        }
    }

    #[test]
    fn encoding_is_big_endian_at_documented_offsets() {
        let bytes = sample().encode();
        assert_eq!(&bytes[0..4], b"BEAT");
        assert_eq!(bytes[offset::VERSION], 1);
        assert_eq!(&bytes[8..12], &[1, 2, 3, 4]);
        assert_eq!(&bytes[12..16], &2000u32.to_be_bytes());
        assert_eq!(
            &bytes[16..24],
            &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
        assert_eq!(&bytes[24..32], &42u64.to_be_bytes());
    }

    #[test]
    fn rejects_every_wrong_length() {
        let bytes = sample().encode();
        for len in 0..HEARTBEAT_LEN {
            assert_eq!(
                Heartbeat::decode(&bytes[..len]),
                Err(DecodeError::Length { got: len })
            );
        }
        let mut long = [0u8; HEARTBEAT_LEN + 1];
        long[..HEARTBEAT_LEN].copy_from_slice(&bytes);
        assert_eq!(
            Heartbeat::decode(&long),
            Err(DecodeError::Length {
                got: HEARTBEAT_LEN + 1
            })
        );
    }

    #[test]
    fn rejects_wrong_magic_version_reserved_and_flags() {
        let good = sample().encode();
        let mut bad = good;
        bad[0] = b'X';
        assert!(matches!(
            Heartbeat::decode(&bad),
            Err(DecodeError::Magic { .. })
        ));
        let mut bad = good;
        bad[offset::VERSION] = 2;
        assert_eq!(
            Heartbeat::decode(&bad),
            Err(DecodeError::Version { got: 2 })
        );
        let mut bad = good;
        bad[offset::RESERVED] = 1;
        assert_eq!(
            Heartbeat::decode(&bad),
            Err(DecodeError::Reserved { got: 1 })
        );
        let mut bad = good;
        bad[offset::FLAGS] = 0x80;
        assert_eq!(
            Heartbeat::decode(&bad),
            Err(DecodeError::UnknownFlags { got: 0x80 })
        );
    }

    #[test]
    fn raw_view_agrees_with_decoder() {
        let bytes = sample().encode();
        let raw = RawHeartbeat::from_bytes(&bytes);
        assert!(raw.is_well_formed());
        assert_eq!(raw.node_id(), sample().node_id);
        assert_eq!(raw.sequence(), sample().sequence);
        assert_eq!(raw.incarnation(), sample().incarnation);
    }

    #[test]
    fn sequence_must_advance_within_an_incarnation() {
        use crate::table::NodeRecord;
        let rec = NodeRecord {
            incarnation: 5,
            sequence: 10,
            heartbeats: 3,
            ..Default::default()
        };
        assert!(
            NodeRecord::default().accepts(0, 0),
            "a never-seen node accepts anything"
        );
        assert!(rec.accepts(5, 11));
        assert!(!rec.accepts(5, 10), "duplicate");
        assert!(!rec.accepts(5, 9), "older");
        assert!(rec.accepts(6, 0), "sender restart");
        assert!(!rec.accepts(4, 100), "older incarnation");
    }
}
