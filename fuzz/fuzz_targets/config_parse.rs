//! Fuzzes the agent's configuration parser with arbitrary text.
//!
//! Property: `Config::parse` and, on what it accepts, `Config::validate`
//! never panic, and every error they return has a non-empty message.

#![no_main]

use hb::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml") {
        Ok(config) => {
            if let Err(err) = config.validate() {
                assert!(
                    !err.to_string().is_empty(),
                    "validate returned an error with an empty message: {err:?}"
                );
            }
        }
        Err(err) => assert!(
            !err.to_string().is_empty(),
            "parse returned an error with an empty message: {err:?}"
        ),
    }
});
