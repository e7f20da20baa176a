//! `cargo xtask run -- ARGS...`: build, then run `target/release/hb ARGS...`
//! and exit with its exit code.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

use crate::build;

/// Build and run hb with `args`.
pub fn run(args: &[String]) -> Result<ExitCode> {
    if args.first().is_some_and(|cmd| cmd == "agent") && !hb_tests::is_root() {
        bail!("`hb agent` loads an XDP program and needs root: run as root");
    }
    let hb = build::run()?.hb;
    let status = Command::new(&hb)
        .args(args)
        .status()
        .with_context(|| format!("could not start {}", hb.display()))?;
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // Killed by a signal.
        None => ExitCode::FAILURE,
    })
}
