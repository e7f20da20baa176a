//! Heartbeat keys for the tests ([`TestKey`]): a key file written by the
//! real `hb keygen` (so it is exactly what the agent and `hb send
//! --key-file` expect: owned by root, mode 0600, in the test's [`TempDir`]),
//! and the key read back from it, so that a test can sign heartbeats the
//! way a sender does, or forge them under a wrong key.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

use hb_common::{
    auth,
    siphash::Key,
    wire::{HEARTBEAT_LEN, Heartbeat},
};

use crate::{Error, Hb, Result, TempDir, netns};

/// A key file and the key it holds. `Debug` does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TestKey {
    /// The key file.
    pub path: PathBuf,
    /// The key id signed heartbeats carry (1..=255).
    pub id: u8,
    /// The SipHash-2-4 key.
    pub key: Key,
}

impl fmt::Debug for TestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestKey")
            .field("path", &self.path)
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl TestKey {
    /// Write a new key with id `id` to `dir/name` with `hb keygen --id ID
    /// FILE`, and read it back.
    pub fn generate(hb: &Hb, dir: &TempDir, name: &str, id: u8) -> Result<Self> {
        let path = dir.join(name);
        netns::run(&mut hb.command([
            "keygen".as_ref(),
            "--id".as_ref(),
            id.to_string().as_ref(),
            path.as_os_str(),
        ]))?;
        Self::read(&path)
    }

    /// Read a key file (`id = N`, `key = "<32 hex digits>"`).
    pub fn read(path: &Path) -> Result<Self> {
        let invalid = |reason: String| Error::Invalid {
            what: "key file",
            value: path.display().to_string(),
            reason,
        };
        let text = fs::read_to_string(path).map_err(|source| Error::Io {
            op: "reading",
            path: path.to_owned(),
            source,
        })?;
        let value: toml::Table = text
            .parse()
            .map_err(|err: toml::de::Error| invalid(err.message().to_owned()))?;
        let id = value
            .get("id")
            .and_then(toml::Value::as_integer)
            .and_then(|id| u8::try_from(id).ok())
            .filter(|&id| id != auth::UNAUTHENTICATED)
            .ok_or_else(|| invalid("no `id` from 1 to 255".to_owned()))?;
        let hex = value
            .get("key")
            .and_then(toml::Value::as_str)
            .ok_or_else(|| invalid("no `key` string".to_owned()))?;
        let key = parse_key(hex).ok_or_else(|| invalid("`key` is not 32 hex digits".to_owned()))?;
        Ok(Self {
            path: path.to_owned(),
            id,
            key,
        })
    }

    /// Another key than this one: what a forger who does not know the key
    /// signs with (under this key's id, so the monitor checks the tag).
    pub fn wrong_key(&self) -> Key {
        self.key.map(|byte| byte ^ 0xa5)
    }

    /// `heartbeat` encoded and signed with this key: this key's id and the
    /// tag a sender holding the key computes.
    pub fn sign(&self, heartbeat: &Heartbeat) -> [u8; HEARTBEAT_LEN] {
        let mut payload = heartbeat.encode();
        auth::sign(&mut payload, self.id, &self.key);
        payload
    }

    /// `heartbeat` encoded with this key's id and a tag under
    /// [`TestKey::wrong_key`]: a forgery the monitor must count as
    /// `bad_tag`.
    pub fn forge(&self, heartbeat: &Heartbeat) -> [u8; HEARTBEAT_LEN] {
        let mut payload = heartbeat.encode();
        auth::sign(&mut payload, self.id, &self.wrong_key());
        payload
    }
}

/// 32 hex digits as a 16-byte key.
fn parse_key(hex: &str) -> Option<Key> {
    if hex.len() != 2 * size_of::<Key>() || !hex.is_ascii() {
        return None;
    }
    let mut key = Key::default();
    for (byte, pair) in key.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use hb_common::auth::TagCheck;

    use super::*;

    #[test]
    fn reads_a_key_file_and_signs_like_the_sender() {
        let dir = TempDir::new("hb-tests-unit").unwrap();
        let path = dir.join("k");
        fs::write(
            &path,
            "# comment\nid = 7\nkey = \"000102030405060708090A0b0c0d0e0f\"\n",
        )
        .unwrap();
        let key = TestKey::read(&path).unwrap();
        assert_eq!(key.id, 7);
        assert_eq!(key.key, core::array::from_fn(|i| i as u8));
        assert!(!format!("{key:?}").contains("0, 1, 2"), "{key:?}");

        let heartbeat = Heartbeat {
            flags: 0,
            key_id: 0,
            node_id: 1,
            interval_ms: 200,
            incarnation: 5,
            sequence: 9,
            sent_unix_ns: 0,
            auth_tag: [0; 16],
        };
        let keys = |id: u8| (id == 7).then_some(&key.key);
        assert_eq!(
            auth::check(&key.sign(&heartbeat), keys),
            TagCheck::Authenticated
        );
        assert_eq!(auth::check(&key.forge(&heartbeat), keys), TagCheck::BadTag);
        assert_ne!(key.wrong_key(), key.key);
    }

    #[test]
    fn refuses_what_is_not_a_key_file() {
        let dir = TempDir::new("hb-tests-unit").unwrap();
        for (i, text) in [
            "id = 0\nkey = \"000102030405060708090a0b0c0d0e0f\"\n",
            "id = 256\nkey = \"000102030405060708090a0b0c0d0e0f\"\n",
            "id = 1\nkey = \"000102030405060708090a0b0c0d0e\"\n",
            "id = 1\nkey = \"000102030405060708090a0b0c0d0eZZ\"\n",
            "id = 1\n",
            "not toml",
        ]
        .iter()
        .enumerate()
        {
            let path = dir.join(&format!("k{i}"));
            fs::write(&path, text).unwrap();
            let err = TestKey::read(&path).unwrap_err();
            assert!(matches!(err, Error::Invalid { .. }), "{text:?}: {err}");
        }
    }
}
