//! `cargo xtask test`, stopping at the first failure: the setup checks,
//! `cargo fmt --check` (fastest, so first), the release build of hb, clippy
//! and rustdoc with `-D warnings`, and every test of the workspace (unit
//! tests, the XDP `BPF_PROG_TEST_RUN` tests and the network-namespace tests,
//! which get the binary through `$HB_BIN`).

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    build,
    paths::{cargo, path_with_tools, run_inherited, workspace},
    setup,
};

/// Totals of the `test result:` lines cargo's test harness printed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    /// Adds one `test result: ok. 6 passed; 0 failed; 1 ignored; ...` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test`, echoing its output and adding up its result lines.
fn run_tests(cmd: &mut Command, tally: &mut Tally) -> Result<()> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start `cargo test`")?;
    let stdout = child.stdout.take().context("cargo test has no stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        println!("{line}");
        tally.add_line(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        bail!("tests failed: `cargo test` exited with {status}");
    }
    Ok(())
}

/// Run the whole check, printing one summary line at the end.
pub fn run() -> Result<()> {
    if !hb_tests::is_root() {
        bail!(
            "not root: the XDP and network-namespace tests load BPF programs and create \
             namespaces; run `cargo xtask test` as root"
        );
    }
    let start = Instant::now();
    let mut done: Vec<String> = Vec::new();
    let mut tally = Tally::default();
    let outcome = stages(&mut done, &mut tally);
    let total = start.elapsed().as_secs_f64();
    match &outcome {
        Ok(()) => println!("xtask test: OK ({}; total {total:.1} s)", done.join(", ")),
        Err(_) => println!(
            "xtask test: FAILED after {total:.1} s (passed: {})",
            if done.is_empty() {
                "none".to_owned()
            } else {
                done.join(", ")
            }
        ),
    }
    // The closing line, in the plain form CI readers count.
    println!(
        "{} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    outcome
}

fn stages(done: &mut Vec<String>, tally: &mut Tally) -> Result<()> {
    let mut stage = |name: &str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        println!("xtask test: {name}");
        let start = Instant::now();
        f()?;
        done.push(format!("{name} {:.1} s", start.elapsed().as_secs_f64()));
        Ok(())
    };
    stage("setup", &mut || setup::run())?;
    stage("fmt", &mut || {
        // The nightly rustfmt: rustfmt.toml's import grouping is a nightly
        // option (the stable one would ignore it, with a warning).
        run_inherited(
            Command::new("rustup")
                .args(["run", "nightly", "cargo", "fmt", "--all", "--check"])
                .current_dir(workspace()),
            "formatting differs (run `cargo +nightly fmt --all`)",
        )
    })?;
    let mut hb = None;
    stage("build", &mut || {
        hb = Some(build::build()?.hb);
        Ok(())
    })?;
    let hb = hb.expect("the build stage sets it");
    let path = path_with_tools()?;
    stage("clippy", &mut || {
        run_inherited(
            cargo()
                .args(["clippy", "--release", "--workspace", "--exclude", "hb-ebpf"])
                .args(["--all-targets", "--", "-D", "warnings"])
                .env("PATH", &path),
            "clippy found problems",
        )
    })?;
    stage("doc", &mut || {
        // The libraries' doc links must resolve (xtask's doc comments are
        // its --help text, not documentation).
        run_inherited(
            cargo()
                .args(["doc", "--release", "--no-deps", "--workspace"])
                .args(["--exclude", "hb-ebpf", "--exclude", "xtask"])
                .env("PATH", &path)
                .env("RUSTDOCFLAGS", "-D warnings"),
            "the documentation has broken links",
        )
    })?;
    stage("tests", &mut || {
        run_tests(
            cargo()
                .args(["test", "--release", "--workspace", "--exclude", "hb-ebpf"])
                .env("PATH", &path)
                .env("HB_BIN", &hb),
            tally,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_adds_up_result_lines_and_ignores_the_rest() {
        let mut tally = Tally::default();
        for line in [
            "test result: ok. 6 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "test foo ... ok",
            "test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out",
            "running 5 tests",
        ] {
            tally.add_line(line);
        }
        assert_eq!(
            tally,
            Tally {
                passed: 8,
                failed: 3,
                ignored: 1
            }
        );
    }
}
