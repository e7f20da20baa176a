//! Heartbeat keys: the key files senders sign with and the monitor verifies
//! with, and the monitor's keyring.
//!
//! A key file is a small TOML file holding a key id (1..=255; id 0 means
//! *unauthenticated* and is never a key's) and a 128-bit SipHash-2-4 key as
//! 32 hex digits. `hb keygen` writes one ([`generate`]):
//!
//! ```toml
//! # hb heartbeat key (SipHash-2-4, 128 bits). Secret: keep it owned by root, mode 0600.
//! # Generated 2025-01-01T00:00:00Z.
//! id = 3
//! key = "000102030405060708090a0b0c0d0e0f"
//! ```
//!
//! The key is a secret, so [`KeyFile::read`] refuses a file that is not a
//! regular file owned by root with no permission bits for group or others.
//! The checks are made on the opened file (not on its path, which could be
//! swapped in between), after following symlinks: rotating keys by
//! repointing a symlink is normal. Errors name the file, the problem and the
//! fix, and never show the key.
//!
//! The monitor's [`Keyring`] holds at most two keys, current then previous,
//! so keys can be rotated without a gap: give the monitor the new key first
//! (both accepted), then the senders, then drop the old one. Each key
//! occupies the [`KeySlot`] of its id.
//!
//! The HTTP API's bearer token file (`http.token_file`) is a secret too: it
//! gets the same file checks ([`read_token`], in `token`), with messages
//! that say "HTTP token file" and how to make one.

use std::{
    ffi::{OsStr, OsString},
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::SystemTime,
};

use hb_common::{
    auth::{KEY_SLOTS, KeySlot, UNAUTHENTICATED},
    siphash::Key,
};
use serde::Deserialize;

pub use self::token::{HttpToken, MIN_TOKEN_LEN, TokenProblem, read_token};

mod token;

/// The most key files a keyring holds: the current key and the previous one.
pub const MAX_KEYS: usize = 2;
/// Hex digits of a key (128 bits).
const KEY_HEX_DIGITS: usize = 2 * size_of::<Key>();
/// A key file is a few lines, a token one; anything longer is not one.
const MAX_FILE_LEN: u64 = 4096;

/// Which kind of secret file an error is about: both get the same checks,
/// but the message names the file for what it is and says how to make one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// A heartbeat key file (`hb keygen`, `auth.keys`).
    Key,
    /// The HTTP API's bearer token file (`http.token_file`).
    HttpToken,
    /// A webhook action's `authorization_file`: the value of the
    /// `Authorization` header it sends.
    WebhookAuthorization,
}

impl SecretKind {
    /// The command that makes a good file at `path`.
    fn how_to_create(self, path: &Path) -> String {
        match self {
            SecretKind::Key => format!(
                "`hb keygen --id N {}` (N: a key id from 1 to 255)",
                path.display()
            ),
            SecretKind::HttpToken => token::how_to_create(path),
            SecretKind::WebhookAuthorization => format!(
                "`printf '%s' 'Bearer YOUR-TOKEN' > {0}; chmod 600 {0}`",
                path.display()
            ),
        }
    }

    /// What the path should point at.
    fn proper_file(self) -> &'static str {
        match self {
            SecretKind::Key => "a file written by `hb keygen`",
            SecretKind::HttpToken => "a file holding only the token",
            SecretKind::WebhookAuthorization => {
                "a file holding only the Authorization header's value"
            }
        }
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretKind::Key => "key file",
            SecretKind::HttpToken => "HTTP token file",
            SecretKind::WebhookAuthorization => "webhook authorization file",
        })
    }
}

/// Everything that can be wrong with a key file, a keyring or the HTTP token
/// file. Every message names the file, the problem and the fix; none shows
/// a key or the token.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{kind} {} does not exist: create it with {}",
        path.display(), kind.how_to_create(path)
    )]
    Missing { kind: SecretKind, path: PathBuf },
    #[error(
        "{kind} {} cannot be read: permission denied ({kind}s are readable by root only: run as root)",
        path.display()
    )]
    Unreadable { kind: SecretKind, path: PathBuf },
    // The cause is part of the message (and so not also a `source`, which
    // would print it twice in an error chain).
    #[error("{op} {kind} {}: {cause}", path.display())]
    Io {
        kind: SecretKind,
        op: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    #[error("{kind} {} is not a regular file: point it at {}", path.display(), kind.proper_file())]
    NotRegularFile { kind: SecretKind, path: PathBuf },
    #[error(
        "{kind} {} is owned by uid {uid}; {kind}s must be owned by root: `chown root:root {}`",
        path.display(), path.display()
    )]
    NotOwnedByRoot {
        kind: SecretKind,
        path: PathBuf,
        uid: u32,
    },
    #[error(
        "{kind} {} has mode {mode:04o}: it must not be readable or writable by group or others: `chmod 600 {}`",
        path.display(), path.display()
    )]
    OpenMode {
        kind: SecretKind,
        path: PathBuf,
        mode: u32,
    },
    #[error(
        "{kind} {} is {len} bytes, more than a {kind}'s {MAX_FILE_LEN}: point it at {}",
        path.display(), kind.proper_file()
    )]
    TooLarge {
        kind: SecretKind,
        path: PathBuf,
        len: u64,
    },
    /// Not UTF-8, bad TOML, an unknown or missing field, a value of the
    /// wrong type. Only toml's message and the line: never the file's text.
    #[error("key file {}{}: {message}: it must hold only `id = N` and `key = \"<32 hex digits>\"`", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error(
        "key file {}: `id` is 0, which means unauthenticated: a key's id is 1 to 255 (e.g. `hb keygen --id 1`)",
        path.display()
    )]
    IdZero { path: PathBuf },
    #[error("key file {}: `id` is {id}: a key's id is 1 to 255", path.display())]
    IdOutOfRange { path: PathBuf, id: i64 },
    #[error(
        "key file {}: `key` has {digits} characters: it must be exactly {KEY_HEX_DIGITS} hex digits (128 bits); write a new key with `hb keygen`",
        path.display()
    )]
    KeyLength { path: PathBuf, digits: usize },
    #[error(
        "key file {}: `key` has a character that is not a hex digit: it must be exactly {KEY_HEX_DIGITS} hex digits (0-9, a-f); write a new key with `hb keygen`",
        path.display()
    )]
    KeyNotHex { path: PathBuf },
    #[error(
        "{count} key files given: at most {MAX_KEYS} (the current key, then the previous one while rotating)"
    )]
    TooManyKeys { count: usize },
    #[error(
        "key files {} and {} both have key id {id}: a key id names one key, so give the new key another id (`hb keygen --id N`)",
        first.display(), second.display()
    )]
    DuplicateId {
        id: u8,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{} already exists: pass --force to replace it", path.display())]
    Exists { path: PathBuf },
    #[error(
        "cannot write key file {}: directory {} does not exist: create it first (e.g. `mkdir -m 0700 {}`)",
        path.display(), dir.display(), dir.display()
    )]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("getting random bytes from the OS (getrandom): {cause}")]
    Random { cause: io::Error },
    #[error("HTTP token file {}: {problem}: write a random one: {}", path.display(), token::how_to_create(path))]
    Token {
        path: PathBuf,
        problem: TokenProblem,
    },
}

/// One key, read from a key file (or just written to one). Its `Debug`
/// shows the path and id, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyFile {
    pub path: PathBuf,
    /// The key id heartbeats signed with this key carry, 1..=255.
    pub id: u8,
    pub key: Key,
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("path", &self.path)
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A key file's fields as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyFile {
    /// Wider than `u8` so that an out-of-range id gets our message.
    id: i64,
    key: String,
}

impl KeyFile {
    /// Reads and checks a key file: a regular file (after symlinks) owned by
    /// root, with no permission bits for group or others, holding a key id
    /// from 1 to 255 and 32 hex digits of key.
    pub fn read(path: &Path) -> Result<KeyFile, KeyError> {
        let bytes = read_secret_file(SecretKind::Key, path)?;
        let raw = parse_key_file(path, bytes)?;
        let id = key_id(path, raw.id)?;
        let key = key_of(path, &raw.key)?;
        Ok(KeyFile {
            path: path.to_owned(),
            id,
            key,
        })
    }
}

/// Maps an I/O error while `op` (e.g. "reading") the `kind` file `path`.
fn io_error(kind: SecretKind, op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> KeyError {
    move |cause| KeyError::Io {
        kind,
        op,
        path: path.to_owned(),
        cause,
    }
}

/// Opens, checks and reads a secret file (a key file or the token file):
/// a regular file after symlinks, owned by root, with no permission bits
/// for group or others, at most [`MAX_FILE_LEN`] bytes.
pub(crate) fn read_secret_file(kind: SecretKind, path: &Path) -> Result<Vec<u8>, KeyError> {
    let file = open_secret_file(kind, path)?;
    check_secret_file_metadata(kind, path, &file)?;
    read_checked_file(kind, path, file)
}

/// Opens a secret file (following symlinks); a missing or unreadable file
/// gets a message of its own.
fn open_secret_file(kind: SecretKind, path: &Path) -> Result<File, KeyError> {
    File::open(path).map_err(|cause| match cause.kind() {
        io::ErrorKind::NotFound => KeyError::Missing {
            kind,
            path: path.to_owned(),
        },
        io::ErrorKind::PermissionDenied => KeyError::Unreadable {
            kind,
            path: path.to_owned(),
        },
        _ => io_error(kind, "opening", path)(cause),
    })
}

/// Checks that the opened file is a regular file owned by root, with no
/// permission bits for group or others, and no longer than a secret file.
fn check_secret_file_metadata(kind: SecretKind, path: &Path, file: &File) -> Result<(), KeyError> {
    // fstat the file we opened, not the path, which may have changed.
    let metadata = file
        .metadata()
        .map_err(io_error(kind, "inspecting", path))?;
    let path = path.to_owned();
    if !metadata.is_file() {
        return Err(KeyError::NotRegularFile { kind, path });
    }
    if metadata.uid() != 0 {
        let uid = metadata.uid();
        return Err(KeyError::NotOwnedByRoot { kind, path, uid });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::OpenMode { kind, path, mode });
    }
    if metadata.len() > MAX_FILE_LEN {
        let len = metadata.len();
        return Err(KeyError::TooLarge { kind, path, len });
    }
    Ok(())
}

/// Reads the file, at most one byte more than a secret file can hold: a
/// file that grew after it was checked is refused too.
fn read_checked_file(kind: SecretKind, path: &Path, file: File) -> Result<Vec<u8>, KeyError> {
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(kind, "reading", path))?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(KeyError::TooLarge {
            kind,
            path: path.to_owned(),
            len: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// Parses the file's TOML; errors never quote the file's text.
fn parse_key_file(path: &Path, bytes: Vec<u8>) -> Result<RawKeyFile, KeyError> {
    let parse_error = |line: Option<usize>, message: String| KeyError::Parse {
        path: path.to_owned(),
        line,
        message,
    };
    let text =
        String::from_utf8(bytes).map_err(|_| parse_error(None, "not UTF-8 text".to_owned()))?;
    toml::from_str(&text).map_err(|error| {
        // toml's Display quotes the offending line, which may be the
        // key's: keep only the message and the line number.
        let line = error
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        parse_error(line, error.message().trim_end().to_owned())
    })
}

/// The key id as written, checked to be 1..=255.
fn key_id(path: &Path, id: i64) -> Result<u8, KeyError> {
    match id {
        0 => Err(KeyError::IdZero {
            path: path.to_owned(),
        }),
        id => u8::try_from(id).map_err(|_| KeyError::IdOutOfRange {
            path: path.to_owned(),
            id,
        }),
    }
}

/// The key as written, checked to be 32 hex digits.
fn key_of(path: &Path, hex: &str) -> Result<Key, KeyError> {
    parse_key(hex).map_err(|problem| match problem {
        KeyProblem::Length(digits) => KeyError::KeyLength {
            path: path.to_owned(),
            digits,
        },
        KeyProblem::NotHex => KeyError::KeyNotHex {
            path: path.to_owned(),
        },
    })
}

enum KeyProblem {
    /// Not 32 characters: how many there are.
    Length(usize),
    NotHex,
}

/// Decodes 32 hex digits (either case).
fn parse_key(hex: &str) -> Result<Key, KeyProblem> {
    let digits = hex.chars().count();
    if digits != KEY_HEX_DIGITS {
        return Err(KeyProblem::Length(digits));
    }
    let mut key = Key::default();
    for (byte, pair) in key.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16).ok_or(KeyProblem::NotHex);
        *byte = ((digit(pair[0])? << 4) | digit(pair[1])?) as u8;
    }
    Ok(key)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Fills `buf` from the kernel's random number generator (`getrandom(2)`,
/// which blocks only until the pool is first initialised).
fn random_bytes(buf: &mut [u8]) -> Result<(), KeyError> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled, writable
        // rest of `buf`.
        let rc =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if rc < 0 {
            let cause = io::Error::last_os_error();
            if cause.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(KeyError::Random { cause });
        }
        filled += rc as usize;
    }
    Ok(())
}

/// Removes a temporary file on drop, unless disarmed.
struct TempFile<'a>(Option<&'a Path>);

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

/// Writes a new random key with id `id` to `path`, mode 0600, atomically:
/// a temporary file in the same directory, written and synced, then linked
/// to `path` (which fails if `path` exists: the check and the creation are
/// one step) or, with `overwrite`, renamed over it (replacing a symlink
/// itself, not its target). The directory must exist. The file is owned by
/// whoever runs this; [`KeyFile::read`] wants root.
pub fn generate(path: &Path, id: u8, overwrite: bool) -> Result<KeyFile, KeyError> {
    if id == UNAUTHENTICATED {
        return Err(KeyError::IdZero {
            path: path.to_owned(),
        });
    }
    let mut key = Key::default();
    random_bytes(&mut key)?;

    let Some(name) = path.file_name() else {
        return Err(io_error(SecretKind::Key, "writing", path)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        )));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let tmp = dir.join(temp_name(name)?);
    let mut guard = write_temp_key_file(path, dir, &tmp, &key_file_text(id, &key))?;
    move_into_place(&tmp, path, overwrite)?;
    if overwrite {
        guard.0 = None;
    }
    drop(guard);
    // Make the new name durable too.
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(SecretKind::Key, "syncing the directory of", path))?;
    Ok(KeyFile {
        path: path.to_owned(),
        id,
        key,
    })
}

/// A hidden name for the temporary file next to `name`, with a random part:
/// no clash with another keygen or a leftover.
fn temp_name(name: &OsStr) -> Result<OsString, KeyError> {
    let mut suffix = [0u8; 8];
    random_bytes(&mut suffix)?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", hex(&suffix)));
    Ok(tmp_name)
}

/// What `hb keygen` writes: a comment that says what the file is, the id
/// and the key.
fn key_file_text(id: u8, key: &Key) -> String {
    let generated = humantime::format_rfc3339_seconds(SystemTime::now());
    format!(
        "# hb heartbeat key (SipHash-2-4, 128 bits). Secret: keep it owned by root, mode 0600.\n\
         # Generated {generated}.\n\
         id = {id}\n\
         key = \"{}\"\n",
        hex(key)
    )
}

/// Creates `tmp` (which must not exist) in `dir`, mode 0600, and writes and
/// syncs `text` to it. Returns the guard that removes it again unless
/// disarmed; on error it is already removed.
fn write_temp_key_file<'a>(
    path: &Path,
    dir: &Path,
    tmp: &'a Path,
    text: &str,
) -> Result<TempFile<'a>, KeyError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|cause| match cause.kind() {
            io::ErrorKind::NotFound => KeyError::NoDirectory {
                path: path.to_owned(),
                dir: dir.to_owned(),
            },
            _ => io_error(SecretKind::Key, "creating a temporary file next to", path)(cause),
        })?;
    let guard = TempFile(Some(tmp));
    // The umask may have cleared bits of 0600: make it exactly 0600.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_error(SecretKind::Key, "setting the mode of", path))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(SecretKind::Key, "writing", path))?;
    Ok(guard)
}

/// Gives the written temporary file its name: renamed over `path` with
/// `overwrite` (replacing a symlink itself, not its target), else linked,
/// which fails if `path` exists.
fn move_into_place(tmp: &Path, path: &Path, overwrite: bool) -> Result<(), KeyError> {
    if overwrite {
        fs::rename(tmp, path).map_err(io_error(SecretKind::Key, "replacing", path))
    } else {
        // link(2) fails with EEXIST if anything (even a dangling symlink) is
        // at `path`: no window between the check and the creation. The
        // guard then unlinks the temporary name.
        fs::hard_link(tmp, path).map_err(|cause| match cause.kind() {
            io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_owned(),
            },
            _ => io_error(SecretKind::Key, "creating", path)(cause),
        })
    }
}

/// The monitor's keys: the current key first, then (while rotating) the
/// previous one. Heartbeats signed with either verify.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keyring {
    files: Vec<KeyFile>,
}

impl Keyring {
    /// Reads the key files (current first, then previous), each with
    /// [`KeyFile::read`]. At most [`MAX_KEYS`], with distinct key ids.
    pub fn load(paths: &[PathBuf]) -> Result<Keyring, KeyError> {
        if paths.len() > MAX_KEYS {
            return Err(KeyError::TooManyKeys { count: paths.len() });
        }
        let mut files: Vec<KeyFile> = Vec::with_capacity(paths.len());
        for path in paths {
            let file = KeyFile::read(path)?;
            if let Some(other) = files.iter().find(|other| other.id == file.id) {
                return Err(KeyError::DuplicateId {
                    id: file.id,
                    first: other.path.clone(),
                    second: file.path,
                });
            }
            files.push(file);
        }
        Ok(Keyring { files })
    }

    /// No keys: only unauthenticated heartbeats.
    pub fn empty() -> Keyring {
        Keyring::default()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The key ids, current first.
    pub fn ids(&self) -> Vec<u8> {
        self.files.iter().map(|file| file.id).collect()
    }

    /// The key files, current first.
    pub fn files(&self) -> &[KeyFile] {
        &self.files
    }

    /// The key table by key id: each key in the slot of its id, every
    /// other slot not in use.
    pub fn slots(&self) -> Box<[KeySlot; KEY_SLOTS as usize]> {
        let mut slots = Box::new([KeySlot::default(); KEY_SLOTS as usize]);
        for file in &self.files {
            slots[file.id as usize] = KeySlot::with_key(file.key);
        }
        slots
    }
}

#[cfg(test)]
mod tests {
    use std::{
        os::unix::fs::{chown, symlink},
        sync::atomic::{AtomicU32, Ordering},
    };

    use super::*;

    /// A fresh directory under the system's temporary directory, removed on
    /// drop. Also used by the token's tests.
    pub(super) struct TempDir(pub(super) PathBuf);

    impl TempDir {
        pub(super) fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "hb-keys-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir(&path).unwrap();
            TempDir(path)
        }

        pub(super) fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        /// Writes `text` to a root-owned mode-0600 file.
        pub(super) fn key_file(&self, name: &str, text: &str) -> PathBuf {
            let path = self.join(name);
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const HEX: &str = "000102030405060708090a0b0c0d0e0f";

    fn error_of(path: &Path) -> String {
        let error = KeyFile::read(path).expect_err("the key file is refused");
        let message = error.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "{message:?} does not name the file"
        );
        message
    }

    pub(super) fn assert_mentions(message: &str, needles: &[&str]) {
        for needle in needles {
            assert!(
                message.contains(needle),
                "{message:?} does not mention {needle:?}"
            );
        }
    }

    #[test]
    fn generated_keys_read_back() {
        let dir = TempDir::new();
        let path = dir.join("hb.key");
        let written = generate(&path, 3, false).unwrap();
        assert_eq!((written.path.as_path(), written.id), (path.as_path(), 3));
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o600);
        assert_eq!(KeyFile::read(&path).unwrap(), written);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# hb heartbeat key"), "{text}");
        assert!(text.contains(&format!("key = \"{}\"", hex(&written.key))));
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
    }

    #[test]
    fn reads_a_hand_written_key() {
        let dir = TempDir::new();
        let path = dir.key_file(
            "k",
            &format!("id = 255\nkey = \"{}\"\n", HEX.to_uppercase()),
        );
        let key = KeyFile::read(&path).unwrap();
        assert_eq!(key.id, 255);
        assert_eq!(key.key, core::array::from_fn(|i| i as u8));
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let file = KeyFile {
            path: "/etc/hb/k".into(),
            id: 4,
            key: [0xab; 16],
        };
        let debug = format!(
            "{file:?} {:?}",
            Keyring {
                files: vec![file.clone()]
            }
        );
        assert!(debug.contains("/etc/hb/k") && debug.contains("4"));
        assert!(!debug.contains("ab") && !debug.contains("171"), "{debug}");
    }

    #[test]
    fn refuses_files_readable_by_group_or_others() {
        let dir = TempDir::new();
        let path = dir.join("k");
        generate(&path, 1, false).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let message = error_of(&path);
            assert_mentions(
                &message,
                &[
                    &format!("mode {mode:04o}"),
                    &format!("`chmod 600 {}`", path.display()),
                ],
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        KeyFile::read(&path).unwrap();
    }

    #[test]
    fn refuses_files_not_owned_by_root() {
        let dir = TempDir::new();
        let path = dir.join("k");
        generate(&path, 1, false).unwrap();
        chown(&path, Some(1), None).unwrap();
        let message = error_of(&path);
        assert_mentions(
            &message,
            &[
                "owned by uid 1",
                &format!("`chown root:root {}`", path.display()),
            ],
        );
    }

    #[test]
    fn key_file_messages_keep_their_wording() {
        let path = PathBuf::from("/etc/hb/k");
        let (kind, p) = (SecretKind::Key, || path.clone());
        let cases = [
            (
                KeyError::Missing { kind, path: p() },
                "key file /etc/hb/k does not exist: create it with `hb keygen --id N /etc/hb/k` (N: a key id from 1 to 255)",
            ),
            (
                KeyError::Unreadable { kind, path: p() },
                "key file /etc/hb/k cannot be read: permission denied (key files are readable by root only: run as root)",
            ),
            (
                KeyError::NotRegularFile { kind, path: p() },
                "key file /etc/hb/k is not a regular file: point it at a file written by `hb keygen`",
            ),
            (
                KeyError::NotOwnedByRoot {
                    kind,
                    path: p(),
                    uid: 5,
                },
                "key file /etc/hb/k is owned by uid 5; key files must be owned by root: `chown root:root /etc/hb/k`",
            ),
            (
                KeyError::TooLarge {
                    kind,
                    path: p(),
                    len: 5000,
                },
                "key file /etc/hb/k is 5000 bytes, more than a key file's 4096: point it at a file written by `hb keygen`",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = TempDir::new();
        let message = error_of(&dir.0);
        assert_mentions(&message, &["not a regular file"]);
    }

    #[test]
    fn a_missing_file_says_how_to_make_one() {
        let dir = TempDir::new();
        let path = dir.join("absent.key");
        let message = error_of(&path);
        assert_mentions(
            &message,
            &[
                "does not exist",
                &format!("`hb keygen --id N {}`", path.display()),
            ],
        );
    }

    #[test]
    fn refuses_bad_contents_without_showing_the_key() {
        let dir = TempDir::new();
        let cases = [
            (format!("id = 0\nkey = \"{HEX}\"\n"), "unauthenticated"),
            (format!("id = 256\nkey = \"{HEX}\"\n"), "1 to 255"),
            (format!("id = -1\nkey = \"{HEX}\"\n"), "1 to 255"),
            (
                "id = 1\nkey = \"000102030405060708090a0b0c0d0e0g\"\n".to_owned(),
                "not a hex digit",
            ),
            (
                "id = 1\nkey = \"000102030405060708090a0b0c0d0e\"\n".to_owned(),
                "has 30 characters",
            ),
            (format!("id = 1\nkey = \"{HEX}00\"\n"), "has 34 characters"),
            (
                format!("id = 1\nkey = \"{HEX}\"\nextra = 2\n"),
                "unknown field `extra`",
            ),
            (format!("key = \"{HEX}\"\n"), "missing field `id`"),
            (format!("id = 1\nkey = {HEX}\n"), "line 2"),
        ];
        for (i, (text, needle)) in cases.iter().enumerate() {
            let path = dir.key_file(&format!("k{i}"), text);
            let message = error_of(&path);
            assert_mentions(&message, &[needle]);
            assert!(
                !message.contains("0102030405060708"),
                "{message:?} shows the key"
            );
        }
    }

    #[test]
    fn keygen_never_replaces_a_key_unless_forced() {
        let dir = TempDir::new();
        let path = dir.join("k");
        let first = generate(&path, 1, false).unwrap();
        let before = fs::read(&path).unwrap();
        let message = generate(&path, 2, false).unwrap_err().to_string();
        assert_mentions(&message, &["already exists", "--force"]);
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(
            fs::read_dir(&dir.0).unwrap().count(),
            1,
            "temporary file left"
        );

        let second = generate(&path, 2, true).unwrap();
        assert_ne!(first.key, second.key, "two generated keys are equal");
        assert_eq!(KeyFile::read(&path).unwrap(), second);
        assert_eq!(
            fs::read_dir(&dir.0).unwrap().count(),
            1,
            "temporary file left"
        );
    }

    #[test]
    fn keygen_refuses_id_zero_and_a_missing_directory() {
        let dir = TempDir::new();
        let message = generate(&dir.join("k"), 0, false).unwrap_err().to_string();
        assert_mentions(&message, &["unauthenticated"]);
        let path = dir.join("no/such/dir/k");
        let message = generate(&path, 1, false).unwrap_err().to_string();
        assert_mentions(&message, &["does not exist", "no/such/dir"]);
        assert!(!dir.join("no").exists());
    }

    #[test]
    fn follows_symlinks() {
        let dir = TempDir::new();
        let target = dir.join("hb-2025.key");
        let written = generate(&target, 7, false).unwrap();
        let link = dir.join("current.key");
        symlink(&target, &link).unwrap();
        let read = KeyFile::read(&link).unwrap();
        assert_eq!((read.path, read.id, read.key), (link, 7, written.key));
    }

    #[test]
    fn keyring_puts_each_key_in_the_slot_of_its_id() {
        let dir = TempDir::new();
        let current = generate(&dir.join("new"), 9, false).unwrap();
        let previous = generate(&dir.join("old"), 4, false).unwrap();
        let keyring = Keyring::load(&[current.path.clone(), previous.path.clone()]).unwrap();
        assert!(!keyring.is_empty());
        assert_eq!(keyring.ids(), vec![9, 4]);
        assert_eq!(keyring.files(), &[current.clone(), previous.clone()]);
        let slots = keyring.slots();
        for (id, slot) in slots.iter().enumerate() {
            let expected = match id {
                9 => Some(&current.key),
                4 => Some(&previous.key),
                _ => None,
            };
            assert_eq!(slot.key(), expected, "slot {id}");
        }

        let empty = Keyring::empty();
        assert!(empty.is_empty() && empty.ids().is_empty());
        assert!(empty.slots().iter().all(|slot| slot.key().is_none()));
        assert!(Keyring::load(&[]).unwrap().is_empty());
    }

    #[test]
    fn keyring_refuses_a_duplicate_id() {
        let dir = TempDir::new();
        let first = generate(&dir.join("a"), 5, false).unwrap().path;
        let second = generate(&dir.join("b"), 5, false).unwrap().path;
        let message = Keyring::load(&[first.clone(), second.clone()])
            .unwrap_err()
            .to_string();
        assert_mentions(
            &message,
            &[
                &first.display().to_string(),
                &second.display().to_string(),
                "key id 5",
                "hb keygen --id N",
            ],
        );
    }

    #[test]
    fn keyring_holds_at_most_two_keys() {
        let dir = TempDir::new();
        let paths: Vec<PathBuf> = (1..=3)
            .map(|id| {
                generate(&dir.join(&format!("k{id}")), id, false)
                    .unwrap()
                    .path
            })
            .collect();
        Keyring::load(&paths[..2]).unwrap();
        let message = Keyring::load(&paths).unwrap_err().to_string();
        assert_mentions(&message, &["3 key files", "at most 2"]);
    }

    #[test]
    fn keyring_refuses_a_bad_file() {
        let dir = TempDir::new();
        let good = generate(&dir.join("good"), 1, false).unwrap().path;
        let bad = dir.join("bad");
        generate(&bad, 2, false).unwrap();
        fs::set_permissions(&bad, fs::Permissions::from_mode(0o644)).unwrap();
        let message = Keyring::load(&[good, bad]).unwrap_err().to_string();
        assert_mentions(&message, &["chmod 600"]);
    }
}
