//! Helpers shared by the configuration's tests: parsing snippets that
//! must pass or fail, and a temporary directory.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use super::{Config, ConfigError};

pub(super) const BASE: &str = "interfaces = [\"eth0\"]\n";

pub(super) fn parse(text: &str) -> Config {
    match Config::parse(text, "test.toml") {
        Ok(config) => config,
        Err(e) => panic!("parse failed: {e}\n--- input ---\n{text}"),
    }
}

pub(super) fn parse_err(text: &str) -> ConfigError {
    match Config::parse(text, "test.toml") {
        Ok(config) => panic!("parse succeeded: {config:?}\n--- input ---\n{text}"),
        Err(e) => e,
    }
}

pub(super) fn validate_err(text: &str) -> ConfigError {
    match parse(text).validate() {
        Ok(()) => panic!("validation passed\n--- input ---\n{text}"),
        Err(e) => e,
    }
}

pub(super) fn assert_mentions(err: &ConfigError, needles: &[&str]) {
    let message = err.to_string();
    for needle in needles {
        assert!(
            message.contains(needle),
            "message {message:?} does not contain {needle:?}"
        );
    }
}

/// A directory under the system temp dir, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "hb-config-test-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn node(id: u32, name: &str) -> String {
    format!("[[nodes]]\nid = {id}\nname = \"{name}\"\n")
}

pub(super) fn action(name: &str, body: &str) -> String {
    format!("[[actions]]\nname = \"{name}\"\n{body}")
}
