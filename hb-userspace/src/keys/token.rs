//! The HTTP API's bearer token (`http.token_file`): read with the same
//! checks as key files (a regular file owned by root, mode 0600 or
//! stricter), and compared in constant time.

use std::{fmt, path::Path};

use super::{KeyError, SecretKind, read_secret_file};

/// Fewest characters a token may have: 16 random base64 characters are 96
/// bits, out of reach of guessing over the network.
pub const MIN_TOKEN_LEN: usize = 16;

/// What is wrong with a token (its file's checks aside). No variant holds
/// the token or any part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    #[error("it holds no token")]
    Empty,
    #[error(
        "the token has {chars} characters, fewer than {MIN_TOKEN_LEN}: a short token can be guessed"
    )]
    TooShort { chars: usize },
    #[error(
        "the token has a character a client cannot send in an `Authorization: Bearer` header (only visible ASCII, no spaces inside)"
    )]
    Characters,
}

/// The bearer token requests must send. Its `Debug` never shows it, and
/// [`HttpToken::matches`] takes as long whatever the presented token has in
/// common with it.
#[derive(Clone)]
pub struct HttpToken(String);

impl HttpToken {
    /// A token from its text: at least [`MIN_TOKEN_LEN`] characters, all
    /// visible ASCII (what an HTTP header can carry; base64 and hex are).
    /// The text is taken as is: [`read_token`] trims the file first.
    pub fn new(token: &str) -> Result<HttpToken, TokenProblem> {
        if token.is_empty() {
            return Err(TokenProblem::Empty);
        }
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(TokenProblem::Characters);
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenProblem::TooShort { chars: token.len() });
        }
        Ok(HttpToken(token.to_owned()))
    }

    /// Whether `presented` (the part of the `Authorization` header after
    /// `Bearer `) is the token. A different length is refused at once (the
    /// length is no secret worth hiding); otherwise every byte is compared,
    /// with no early exit, so the time taken does not tell an attacker how
    /// much of a guess was right.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        let difference = expected
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Keeps the optimiser from turning the fold into a loop that stops
        // at the first difference.
        std::hint::black_box(difference) == 0
    }
}

impl fmt::Debug for HttpToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpToken(<redacted>)")
    }
}

/// Reads the HTTP API's token file: the checks of a key file (a regular
/// file after symlinks, owned by root, no permission bits for group or
/// others), then the token, with surrounding whitespace (the newline
/// `echo` and `base64` write) trimmed, checked by [`HttpToken::new`].
pub fn read_token(path: &Path) -> Result<HttpToken, KeyError> {
    let bytes = read_secret_file(SecretKind::HttpToken, path)?;
    let token_error = |problem| KeyError::Token {
        path: path.to_owned(),
        problem,
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| token_error(TokenProblem::Characters))?;
    HttpToken::new(text.trim()).map_err(token_error)
}

/// The command that writes a good token to `path`: 32 random bytes, 44
/// base64 characters on one line.
pub(super) fn how_to_create(path: &Path) -> String {
    format!(
        "`head -c 32 /dev/urandom | base64 > {path}; chmod 600 {path}`",
        path = path.display()
    )
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        os::unix::fs::{PermissionsExt, chown},
        path::PathBuf,
    };

    use super::*;
    use crate::keys::tests::{TempDir, assert_mentions};

    const TOKEN: &str = "c2VjcmV0LXRva2VuLWZvci10ZXN0cw==";

    /// The error reading `path` gives, checked to name the file and never
    /// to show the token.
    fn error_of(path: &Path) -> String {
        let message = read_token(path)
            .expect_err("the token file is refused")
            .to_string();
        assert_mentions(&message, &["HTTP token file", &path.display().to_string()]);
        assert!(!message.contains("c2VjcmV0"), "{message:?} shows the token");
        message
    }

    fn token_file(dir: &TempDir, text: &str) -> PathBuf {
        dir.key_file("http.token", text)
    }

    #[test]
    fn reads_a_good_file_trimming_the_newline() {
        let dir = TempDir::new();
        let path = token_file(&dir, &format!("{TOKEN}\n"));
        let token = read_token(&path).unwrap();
        assert!(token.matches(TOKEN.as_bytes()));
        assert!(!token.matches(format!("{TOKEN}\n").as_bytes()));
        // Exactly MIN_TOKEN_LEN characters is enough.
        let path = token_file(&dir, "  0123456789abcdef \n");
        assert!(read_token(&path).unwrap().matches(b"0123456789abcdef"));
    }

    #[test]
    fn refuses_a_file_readable_by_others() {
        let dir = TempDir::new();
        let path = token_file(&dir, TOKEN);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let message = error_of(&path);
        assert_mentions(
            &message,
            &["mode 0644", &format!("`chmod 600 {}`", path.display())],
        );
    }

    #[test]
    fn refuses_a_file_not_owned_by_root() {
        let dir = TempDir::new();
        let path = token_file(&dir, TOKEN);
        chown(&path, Some(1), None).unwrap();
        let message = error_of(&path);
        assert_mentions(
            &message,
            &[
                "owned by uid 1",
                "HTTP token files must be owned by root",
                &format!("`chown root:root {}`", path.display()),
            ],
        );
    }

    #[test]
    fn refuses_a_missing_file_or_a_directory() {
        let dir = TempDir::new();
        let path = dir.join("absent.token");
        let message = error_of(&path);
        assert_mentions(
            &message,
            &[
                "does not exist",
                &format!(
                    "`head -c 32 /dev/urandom | base64 > {0}; chmod 600 {0}`",
                    path.display()
                ),
            ],
        );
        assert!(!message.contains("hb keygen"), "{message}");
        let message = error_of(&dir.0);
        assert_mentions(&message, &["not a regular file", "only the token"]);
    }

    #[test]
    fn refuses_empty_short_and_unsendable_tokens() {
        let dir = TempDir::new();
        let cases: [(&[u8], &str); 6] = [
            (b"", "holds no token"),
            (b" \n\n", "holds no token"),
            (b"c2VjcmV0LXRva2V\n", "15 characters, fewer than 16"),
            (
                b"c2VjcmV0 LXRva2VuLWZvci10ZXN0cw==",
                "`Authorization: Bearer`",
            ),
            (b"c2VjcmV0\nLXRva2VuLWZvci10ZXN0cw==", "visible ASCII"),
            (b"c2VjcmV0LXRva2VuLWZvci10ZXN0cw\xff", "visible ASCII"),
        ];
        for (i, (bytes, needle)) in cases.iter().enumerate() {
            let path = dir.join(&format!("t{i}"));
            fs::write(&path, bytes).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let message = error_of(&path);
            assert_mentions(&message, &[needle, "head -c 32 /dev/urandom"]);
        }
    }

    #[test]
    fn new_checks_like_the_file() {
        assert_eq!(HttpToken::new("").unwrap_err(), TokenProblem::Empty);
        assert_eq!(
            HttpToken::new("short").unwrap_err(),
            TokenProblem::TooShort { chars: 5 }
        );
        assert_eq!(
            HttpToken::new("0123456789abcdef\u{e9}").unwrap_err(),
            TokenProblem::Characters
        );
        assert!(HttpToken::new(TOKEN).is_ok());
    }

    #[test]
    fn matches_only_the_same_token() {
        let token = HttpToken::new(TOKEN).unwrap();
        assert!(token.matches(TOKEN.as_bytes()));
        let mut flipped = TOKEN.as_bytes().to_vec();
        flipped[7] ^= 1;
        assert!(!token.matches(&flipped), "same length, one byte differs");
        let mut last = TOKEN.as_bytes().to_vec();
        *last.last_mut().unwrap() = b'x';
        assert!(!token.matches(&last), "only the last byte differs");
        assert!(
            !token.matches(&TOKEN.as_bytes()[..TOKEN.len() - 1]),
            "prefix"
        );
        assert!(!token.matches(format!("{TOKEN}x").as_bytes()), "longer");
        assert!(!token.matches(b""), "empty");
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let token = HttpToken::new(TOKEN).unwrap();
        let debug = format!("{token:?}");
        assert_eq!(debug, "HttpToken(<redacted>)");
    }
}
