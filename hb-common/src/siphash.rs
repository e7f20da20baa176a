//! SipHash-2-4 (Aumasson and Bernstein), the keyed MAC of authenticated
//! heartbeats: a 64-bit tag over a message under a 128-bit key.
//!
//! Written once here and used by both sides: the XDP program verifies tags
//! with it, userspace (the sender, the tests) computes them with it. No
//! allocation, no panic, bounded loops (one per 8-byte word of the message),
//! so it compiles for the BPF target and passes the verifier.

/// A SipHash key: 16 bytes, read as two little-endian `u64` (k0, k1).
pub type Key = [u8; 16];

#[inline(always)]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[inline(always)]
fn compress(v: &mut [u64; 4], word: u64) {
    v[3] ^= word;
    round(v);
    round(v);
    v[0] ^= word;
}

/// The initial state for `key`.
#[inline(always)]
fn initial_state(key: &Key) -> [u64; 4] {
    let mut k = [0u8; 8];
    k.copy_from_slice(&key[..8]);
    let k0 = u64::from_le_bytes(k);
    k.copy_from_slice(&key[8..]);
    let k1 = u64::from_le_bytes(k);
    [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ]
}

/// Compresses the 8-byte words of `words` into `v`, then the last word (the
/// remaining bytes with the low byte of `total_len` on top), and finalises.
#[inline(always)]
fn finish(mut v: [u64; 4], words: &[u8], total_len: usize) -> u64 {
    let mut chunks = words.chunks_exact(8);
    for word in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        compress(&mut v, u64::from_le_bytes(w));
    }
    // The last word: the remaining bytes, and the length's low byte on top.
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    last[7] = total_len as u8;
    compress(&mut v, u64::from_le_bytes(last));
    v[2] ^= 0xff;
    round(&mut v);
    round(&mut v);
    round(&mut v);
    round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// SipHash-2-4 of `message` under `key`.
#[inline(always)]
pub fn siphash24(key: &Key, message: &[u8]) -> u64 {
    finish(initial_state(key), message, message.len())
}

/// The SipHash-2-4 state under one key after the first 8-byte word of a
/// message, `word`: where every message that starts with `word` continues
/// from. Precomputed once per key when that word is known in advance (an
/// authenticated heartbeat's first word is constant per key id and flags,
/// see [`crate::auth::KeyState`]), it saves the first of a message's
/// compressions (2 of the 16 SipHash rounds of a 40-byte message) and
/// gives the same hash: [`Prefix::siphash24`] of a message is
/// [`siphash24`] of it. 40 bytes; the state is as secret as the key.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Prefix {
    /// v0..v3 after compressing `word`.
    pub state: [u64; 4],
    /// The first word, little-endian (as SipHash reads it).
    pub word: u64,
}

const _: () = assert!(size_of::<Prefix>() == 40);

impl Prefix {
    /// The state of `key` after the 8 bytes `word`.
    pub fn new(key: &Key, word: [u8; 8]) -> Self {
        let word = u64::from_le_bytes(word);
        let mut state = initial_state(key);
        compress(&mut state, word);
        Prefix { state, word }
    }

    /// SipHash-2-4 of `message` (at least 8 bytes, starting with this
    /// prefix's word) under the prefix's key; `None` if `message` does not
    /// start with the word, so a prefix never hashes what it did not absorb.
    #[inline(always)]
    pub fn siphash24(&self, message: &[u8]) -> Option<u64> {
        let (first, rest) = message.split_first_chunk::<8>()?;
        if u64::from_le_bytes(*first) != self.word {
            return None;
        }
        Some(finish(self.state, rest, message.len()))
    }
}

impl core::fmt::Debug for Prefix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Prefix")
            .field("word", &self.word)
            .field("state", &"<redacted>")
            .finish()
    }
}

/// The reference vectors of the SipHash paper's `vectors.h`
/// (`vectors_sip64`): key 00 01 .. 0f, message 00 01 .. (i - 1) for
/// vector i, output read as a little-endian `u64`. Public so that the
/// kernel side can be checked against the same table.
pub const REFERENCE_VECTORS: [u64; 64] = [
    0x726fdb47dd0e0e31,
    0x74f839c593dc67fd,
    0x0d6c8009d9a94f5a,
    0x85676696d7fb7e2d,
    0xcf2794e0277187b7,
    0x18765564cd99a68d,
    0xcbc9466e58fee3ce,
    0xab0200f58b01d137,
    0x93f5f5799a932462,
    0x9e0082df0ba9e4b0,
    0x7a5dbbc594ddb9f3,
    0xf4b32f46226bada7,
    0x751e8fbc860ee5fb,
    0x14ea5627c0843d90,
    0xf723ca908e7af2ee,
    0xa129ca6149be45e5,
    0x3f2acc7f57c29bdb,
    0x699ae9f52cbe4794,
    0x4bc1b3f0968dd39c,
    0xbb6dc91da77961bd,
    0xbed65cf21aa2ee98,
    0xd0f2cbb02e3b67c7,
    0x93536795e3a33e88,
    0xa80c038ccd5ccec8,
    0xb8ad50c6f649af94,
    0xbce192de8a85b8ea,
    0x17d835b85bbb15f3,
    0x2f2e6163076bcfad,
    0xde4daaaca71dc9a5,
    0xa6a2506687956571,
    0xad87a3535c49ef28,
    0x32d892fad841c342,
    0x7127512f72f27cce,
    0xa7f32346f95978e3,
    0x12e0b01abb051238,
    0x15e034d40fa197ae,
    0x314dffbe0815a3b4,
    0x027990f029623981,
    0xcadcd4e59ef40c4d,
    0x9abfd8766a33735c,
    0x0e3ea96b5304a7d0,
    0xad0c42d6fc585992,
    0x187306c89bc215a9,
    0xd4a60abcf3792b95,
    0xf935451de4f21df2,
    0xa9538f0419755787,
    0xdb9acddff56ca510,
    0xd06c98cd5c0975eb,
    0xe612a3cb9ecba951,
    0xc766e62cfcadaf96,
    0xee64435a9752fe72,
    0xa192d576b245165a,
    0x0a8787bf8ecb74b2,
    0x81b3e73d20b49b6f,
    0x7fa8220ba3b2ecea,
    0x245731c13ca42499,
    0xb78dbfaf3a8d83bd,
    0xea1ad565322a1a0b,
    0x60e61c23a3795013,
    0x6606d7e446282b93,
    0x6ca4ecb15c5f91e1,
    0x9f626da15c9625f3,
    0xe51b38608ef25f57,
    0x958a324ceb064572,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_key() -> Key {
        core::array::from_fn(|i| i as u8)
    }

    #[test]
    fn matches_the_64_reference_vectors() {
        let message: [u8; 64] = core::array::from_fn(|i| i as u8);
        for (len, expected) in REFERENCE_VECTORS.iter().enumerate() {
            assert_eq!(
                siphash24(&reference_key(), &message[..len]),
                *expected,
                "vector {len}"
            );
        }
    }

    #[test]
    fn a_prefix_gives_the_reference_vectors() {
        let message: [u8; 64] = core::array::from_fn(|i| i as u8);
        let prefix = Prefix::new(&reference_key(), [0, 1, 2, 3, 4, 5, 6, 7]);
        for (len, expected) in REFERENCE_VECTORS.iter().enumerate() {
            let hash = prefix.siphash24(&message[..len]);
            if len < 8 {
                assert_eq!(hash, None, "vector {len}: shorter than the prefix");
            } else {
                assert_eq!(hash, Some(*expected), "vector {len}");
            }
        }
    }

    #[test]
    fn a_prefix_hashes_only_messages_that_start_with_its_word() {
        let key = reference_key();
        let prefix = Prefix::new(&key, *b"BEAT\x01\x00\x03\x00");
        let mut message = [0x5au8; 40];
        message[..8].copy_from_slice(b"BEAT\x01\x00\x03\x00");
        assert_eq!(prefix.siphash24(&message), Some(siphash24(&key, &message)));
        for bit in 0..64 {
            let mut other = message;
            other[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(prefix.siphash24(&other), None, "bit {bit}");
        }
    }

    #[test]
    fn the_key_and_every_message_bit_matter() {
        let message = [0x5au8; 40];
        let tag = siphash24(&reference_key(), &message);
        let mut other_key = reference_key();
        other_key[15] ^= 1;
        assert_ne!(siphash24(&other_key, &message), tag);
        for bit in 0..message.len() * 8 {
            let mut flipped = message;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(siphash24(&reference_key(), &flipped), tag, "bit {bit}");
        }
    }
}
