//! Heartbeat authentication: what the tag covers, where it lies, and the key
//! slots the monitor looks keys up in.
//!
//! - Key id 0 means *unauthenticated*: the whole 16-byte tag field is zero.
//! - Key id `k` (1..=255) means: tag bytes 0..8 are SipHash-2-4, under key
//!   `k`, of payload bytes 0..40 (every field before the tag, the key id and
//!   the flags included), as a little-endian `u64`; tag bytes 8..16 are zero
//!   (kept for a 128-bit MAC in a later version).
//!
//! The datapaths verify with a [`KeyState`] per key id rather than the key:
//! an authenticated heartbeat's first 8 bytes (magic, version, flags, key
//! id, reserved) take one of two values per key id, so the SipHash state
//! after them is computed once, when the keys are installed, and each
//! packet starts from it. Same tag, same key, two rounds fewer.
//!
//! A 64-bit tag means a forger needs about 2^63 tries per accepted packet
//! (over 29,000 years at 10 million packets a second), and every wrong try
//! is counted. The same [`tag`] function signs in the sender and verifies in
//! both datapaths.

use crate::{
    siphash::{Key, Prefix, siphash24},
    wire::{HEARTBEAT_LEN, MAGIC, VERSION, flags, offset},
};

/// The key id of an unauthenticated heartbeat.
pub const UNAUTHENTICATED: u8 = 0;
/// Number of key slots (one per possible key id; slot 0 is never in use).
pub const KEY_SLOTS: u32 = 256;
/// The payload bytes the tag covers: everything before the tag field.
pub const SIGNED_LEN: usize = offset::AUTH_TAG;

/// The monitor's whole key table, indexed by key id.
pub type KeySlots = [KeySlot; KEY_SLOTS as usize];

/// One entry of the monitor's key table, indexed by key id. 24 bytes.
/// `Debug` does not show the key.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct KeySlot {
    /// The SipHash key.
    pub key: Key,
    /// 1: heartbeats with this key id are verified with `key`; 0: the key id
    /// is unknown.
    pub in_use: u8,
    pub _reserved: [u8; 7],
}

const _: () = assert!(size_of::<KeySlot>() == 24);

impl core::fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeySlot")
            .field("in_use", &self.in_use)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl KeySlot {
    /// A slot holding `key`.
    pub const fn with_key(key: Key) -> Self {
        Self {
            key,
            in_use: 1,
            _reserved: [0; 7],
        }
    }

    /// The key, if the slot is in use.
    #[inline(always)]
    pub const fn key(&self) -> Option<&Key> {
        if self.in_use != 0 {
            Some(&self.key)
        } else {
            None
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: `KeySlot` is `repr(C)`, has no padding (asserted above) and every
// bit pattern is a valid value.
unsafe impl aya::Pod for KeySlot {}

/// The flag bytes a well-formed heartbeat can carry are `0..FLAG_VALUES`.
pub const FLAG_VALUES: usize = flags::KNOWN as usize + 1;
// The flags byte indexes `KeyState::prefixes`: that needs the known flags to
// be the low bits, all of them.
const _: () = assert!(flags::KNOWN & (flags::KNOWN + 1) == 0);

/// What a datapath holds for the whole key table: each key id's
/// [`KeyState`], indexed by key id.
pub type KeyStates = [KeyState; KEY_SLOTS as usize];

/// The [`KeyState`] of every key id of `keys`.
pub fn key_states(keys: &KeySlots) -> KeyStates {
    core::array::from_fn(|id| KeyState::of(id as u8, &keys[id]))
}

/// What a datapath verifies tags of one key id with (`HB_KEYS` holds one per
/// key id): the SipHash state of the id's key after each first word an
/// authenticated heartbeat of that id can start with, one per flags value.
/// Computed by [`KeyState::of`] when keys are installed; all zero for a key
/// id without a key. 80 bytes, as secret as the key. `Debug` does not show
/// the states.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Indexed by the flags byte.
    pub prefixes: [Prefix; FLAG_VALUES],
}

const _: () = assert!(size_of::<KeyState>() == 80);

#[cfg(feature = "user")]
// SAFETY: `KeyState` is `repr(C)`, made of u64s only (no padding, size
// asserted above) and every bit pattern is a valid value.
unsafe impl aya::Pod for KeyState {}

impl core::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyState")
            .field("in_use", &self.is_in_use())
            .finish_non_exhaustive()
    }
}

impl KeyState {
    /// The state of key id `key_id` holding `slot`.
    pub fn of(key_id: u8, slot: &KeySlot) -> Self {
        let Some(key) = slot.key() else {
            return Self::default();
        };
        KeyState {
            prefixes: core::array::from_fn(|flags| {
                let mut word = [0u8; 8];
                word[offset::MAGIC..offset::VERSION].copy_from_slice(&MAGIC.to_be_bytes());
                word[offset::VERSION] = VERSION;
                word[offset::FLAGS] = flags as u8;
                word[offset::KEY_ID] = key_id;
                word[offset::RESERVED] = 0;
                Prefix::new(key, word)
            }),
        }
    }

    /// Whether the key id has a key (a prefix's word is never zero then: it
    /// starts with the magic).
    #[inline(always)]
    pub const fn is_in_use(&self) -> bool {
        self.prefixes[0].word != 0
    }
}

/// Something a tag can be computed with: a key, or a key id's [`KeyState`].
pub trait TagKey {
    /// The tag of `payload` (see [`tag`]), or `None` if it cannot be
    /// computed with this (a [`KeyState`] and a payload whose first word is
    /// none of those it holds: such a payload is not well-formed).
    fn tag_of(&self, payload: &[u8; HEARTBEAT_LEN]) -> Option<u64>;
}

impl TagKey for Key {
    #[inline(always)]
    fn tag_of(&self, payload: &[u8; HEARTBEAT_LEN]) -> Option<u64> {
        Some(tag(self, payload))
    }
}

impl TagKey for KeyState {
    #[inline(always)]
    fn tag_of(&self, payload: &[u8; HEARTBEAT_LEN]) -> Option<u64> {
        // Masked so the index is provably in bounds (for the verifier too);
        // a flags byte out of range picks a prefix whose word then differs.
        let flags = usize::from(payload[offset::FLAGS]) & flags::KNOWN as usize;
        self.prefixes[flags].siphash24(&payload[..SIGNED_LEN])
    }
}

/// The tag of `payload` under `key`: SipHash-2-4 of its first
/// [`SIGNED_LEN`] bytes.
#[inline(always)]
pub fn tag(key: &Key, payload: &[u8; HEARTBEAT_LEN]) -> u64 {
    // No copy of the signed bytes first: in the XDP program a 40-byte copy
    // becomes 80 byte-sized instructions.
    siphash24(key, &payload[..SIGNED_LEN])
}

/// The two little-endian halves of the tag field: the MAC and the part that
/// must be zero.
#[inline(always)]
fn tag_field(payload: &[u8; HEARTBEAT_LEN]) -> (u64, u64) {
    let mut low = [0u8; 8];
    let mut high = [0u8; 8];
    low.copy_from_slice(&payload[offset::AUTH_TAG..offset::AUTH_TAG + 8]);
    high.copy_from_slice(&payload[offset::AUTH_TAG + 8..]);
    (u64::from_le_bytes(low), u64::from_le_bytes(high))
}

/// What the tag field of a payload says, given the monitor's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagCheck {
    /// Key id 0 and an all-zero tag field.
    Unauthenticated,
    /// The tag is right for the key id's key.
    Authenticated,
    /// The key id has no key on this monitor.
    UnknownKey,
    /// The tag is wrong (or an unauthenticated heartbeat carries a tag).
    BadTag,
}

/// Checks the tag field of `payload`; `key_of` looks up the key of a key id
/// (1..=255).
#[inline(always)]
pub fn check<'k>(
    payload: &[u8; HEARTBEAT_LEN],
    key_of: impl FnOnce(u8) -> Option<&'k Key>,
) -> TagCheck {
    check_with(payload, key_of)
}

/// [`check`], with keys or key states ([`KeyState`], what the datapaths
/// hold): `key_of` looks up what a key id (1..=255) is verified with, `None`
/// if it has no key.
#[inline(always)]
pub fn check_with<'k, K: TagKey + 'k>(
    payload: &[u8; HEARTBEAT_LEN],
    key_of: impl FnOnce(u8) -> Option<&'k K>,
) -> TagCheck {
    let (mac, rest) = tag_field(payload);
    let key_id = payload[offset::KEY_ID];
    if key_id == UNAUTHENTICATED {
        return if mac == 0 && rest == 0 {
            TagCheck::Unauthenticated
        } else {
            TagCheck::BadTag
        };
    }
    let Some(key) = key_of(key_id) else {
        return TagCheck::UnknownKey;
    };
    if rest == 0 && key.tag_of(payload) == Some(mac) {
        TagCheck::Authenticated
    } else {
        TagCheck::BadTag
    }
}

/// Signs an encoded heartbeat in place: sets its key id, then its tag.
/// Key id 0 clears the tag (an unauthenticated heartbeat).
pub fn sign(payload: &mut [u8; HEARTBEAT_LEN], key_id: u8, key: &Key) {
    payload[offset::KEY_ID] = key_id;
    payload[offset::AUTH_TAG..].fill(0);
    if key_id != UNAUTHENTICATED {
        let mac = tag(key, payload);
        payload[offset::AUTH_TAG..offset::AUTH_TAG + 8].copy_from_slice(&mac.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Heartbeat;

    const KEY: Key = [7; 16];

    fn payload() -> [u8; HEARTBEAT_LEN] {
        Heartbeat {
            flags: 0,
            key_id: 0,
            node_id: 9,
            interval_ms: 100,
            incarnation: 5,
            sequence: 6,
            sent_unix_ns: 7,
            auth_tag: [0; 16],
        }
        .encode()
    }

    fn keys(id: u8) -> Option<&'static Key> {
        (id == 3).then_some(&KEY)
    }

    #[test]
    fn signed_heartbeats_verify_and_every_bit_matters() {
        let mut signed = payload();
        sign(&mut signed, 3, &KEY);
        assert_eq!(check(&signed, keys), TagCheck::Authenticated);
        for bit in 0..HEARTBEAT_LEN * 8 {
            let mut flipped = signed;
            flipped[bit / 8] ^= 1 << (bit % 8);
            let expected = if bit / 8 == offset::KEY_ID {
                // Another key id: unknown here, or unauthenticated with a tag.
                if flipped[offset::KEY_ID] == 0 {
                    TagCheck::BadTag
                } else {
                    TagCheck::UnknownKey
                }
            } else {
                TagCheck::BadTag
            };
            assert_eq!(check(&flipped, keys), expected, "bit {bit}");
        }
    }

    #[test]
    fn unauthenticated_heartbeats_carry_no_tag() {
        let mut plain = payload();
        sign(&mut plain, UNAUTHENTICATED, &KEY);
        assert_eq!(&plain[offset::AUTH_TAG..], &[0; 16]);
        assert_eq!(check(&plain, keys), TagCheck::Unauthenticated);
        plain[HEARTBEAT_LEN - 1] = 1;
        assert_eq!(check(&plain, keys), TagCheck::BadTag);
    }

    #[test]
    fn the_tag_is_siphash_of_the_first_40_bytes_little_endian() {
        let mut signed = payload();
        sign(&mut signed, 3, &KEY);
        let expected = siphash24(&KEY, &signed[..40]).to_le_bytes();
        assert_eq!(&signed[40..48], &expected);
        assert_eq!(&signed[48..], &[0; 8]);
    }

    #[test]
    fn key_states_give_the_tag_of_the_key() {
        let states: [KeyState; 4] =
            core::array::from_fn(|id| KeyState::of(id as u8, &KeySlot::with_key(KEY)));
        let by_state = |id: u8| (id == 3).then_some(&states[3]);
        assert!(states.iter().all(KeyState::is_in_use));
        assert!(!KeyState::of(3, &KeySlot::default()).is_in_use());
        for flags in [0, flags::LEAVE] {
            let mut signed = payload();
            signed[offset::FLAGS] = flags;
            sign(&mut signed, 3, &KEY);
            assert_eq!(states[3].tag_of(&signed), KEY.tag_of(&signed));
            assert_eq!(check_with(&signed, by_state), TagCheck::Authenticated);
            for bit in 0..HEARTBEAT_LEN * 8 {
                let mut flipped = signed;
                flipped[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(
                    check_with(&flipped, by_state),
                    check(&flipped, keys),
                    "flags {flags}, bit {bit}"
                );
            }
            // Another key id's state does not verify it, even with the key.
            assert_eq!(states[2].tag_of(&signed), None);
        }
    }

    #[test]
    fn a_tag_under_another_key_is_bad() {
        let mut signed = payload();
        sign(&mut signed, 3, &[8; 16]);
        assert_eq!(check(&signed, keys), TagCheck::BadTag);
    }
}
