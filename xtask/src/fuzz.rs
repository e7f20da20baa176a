//! `cargo xtask fuzz`: runs the cargo-fuzz targets of `fuzz/` (the wire
//! decoder and the config parser) for a bounded time each; not part of CI.
//!
//! 1. the setup checks, then cargo-fuzz, installed from crates.io into
//!    `<target-dir>/toolchain` if missing;
//! 2. seed corpora in `fuzz/corpus/<target>/` (gitignored), written only
//!    into an empty corpus: an encoded heartbeat (plain and LEAVE) for
//!    `wire_decode`, the demo and example configurations and a minimal one
//!    for `config_parse`;
//! 3. `cargo fuzz build`, then `cargo fuzz run <target> -- -max_total_time`
//!    per target under the nightly toolchain, with the tool cache on PATH
//!    (hb-userspace's build.rs needs bpf-linker for the XDP object);
//! 4. one summary line per target; a crash fails the command and names
//!    the input libFuzzer saved in `fuzz/artifacts/<target>/`.

use std::{
    fs,
    io::{BufRead, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use hb_tests::{interrupt, netns::describe};

use crate::{
    paths::{cargo, path_with_tools, run_inherited, stdout_of, tools_dir, workspace},
    setup,
};

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Seconds to fuzz each target for.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    time: u64,
    /// Fuzz only this target (default: every target, one after the other).
    #[arg(long, value_enum, value_name = "NAME")]
    target: Option<Target>,
}

/// The fuzz targets (`fuzz/fuzz_targets/<name>.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// `Heartbeat::decode`: round trip and agreement with the XDP check.
    #[value(name = "wire_decode")]
    WireDecode,
    /// `Config::parse` and `Config::validate`: no panic, no empty error.
    #[value(name = "config_parse")]
    ConfigParse,
}

impl Target {
    const ALL: [Self; 2] = [Self::WireDecode, Self::ConfigParse];

    fn name(self) -> &'static str {
        match self {
            Self::WireDecode => "wire_decode",
            Self::ConfigParse => "config_parse",
        }
    }

    /// The seed inputs: (file name, contents).
    fn seeds(self) -> Result<Vec<(String, Vec<u8>)>> {
        match self {
            Self::WireDecode => Ok(wire_seeds()),
            Self::ConfigParse => config_seeds(),
        }
    }
}

/// The demo's configuration template (placeholders in double braces).
const DEMO_CONFIG: &str = include_str!("demo.toml");

/// The smallest configuration that validates.
const MINIMAL_CONFIG: &str = "interfaces = [\"lo\"]\n\n[[nodes]]\nid = 1\nname = \"a\"\n";

/// What `cargo xtask fuzz` learned from one libFuzzer run.
#[derive(Debug, Default, PartialEq, Eq)]
struct RunStats {
    /// Inputs executed (`stat::number_of_executed_units`, else `Done N runs`).
    runs: Option<u64>,
    /// Seconds spent fuzzing (`Done N runs in S second(s)`).
    seconds: Option<u64>,
    /// The crashing input libFuzzer saved (`Test unit written to PATH`).
    artifact: Option<String>,
}

impl RunStats {
    /// Takes what it knows from one line of libFuzzer's output.
    fn add_line(&mut self, line: &str) {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("stat::number_of_executed_units:") {
            if let Ok(runs) = rest.trim().parse() {
                self.runs = Some(runs);
            }
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // `Done 123456 runs in 20 second(s)`; the stat line, printed
            // after it, says the same or one more.
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let [runs, "runs", "in", seconds, ..] = words.as_slice() {
                self.runs = runs.parse().ok().or(self.runs);
                self.seconds = seconds.parse().ok();
            }
        } else if let Some((_, path)) = line.split_once("Test unit written to ") {
            self.artifact = Some(path.trim().to_owned());
        }
    }

    /// `123456 runs in 20 s (6172 runs/s)`, with `?` for what is unknown.
    fn describe(&self) -> String {
        let runs = self.runs.map_or_else(|| "?".to_owned(), |r| r.to_string());
        match self.seconds {
            Some(seconds) => {
                let rate = self
                    .runs
                    .map(|runs| format!(" ({:.0} runs/s)", runs as f64 / seconds.max(1) as f64))
                    .unwrap_or_default();
                format!("{runs} runs in {seconds} s{rate}")
            }
            None => format!("{runs} runs"),
        }
    }
}

/// Fuzz every selected target for `--time` seconds.
pub fn run(options: &Options) -> Result<()> {
    setup::run()?;
    let cargo_fuzz = install_cargo_fuzz()?;
    interrupt::install();
    let targets: Vec<Target> = match options.target {
        Some(target) => vec![target],
        None => Target::ALL.to_vec(),
    };
    let fuzz_dir = workspace().join("fuzz");
    for &target in &targets {
        seed(&fuzz_dir, target)?;
    }

    let build_start = Instant::now();
    let mut build = fuzz_command(&cargo_fuzz, &fuzz_dir, "build")?;
    if let [target] = targets.as_slice() {
        build.arg(target.name());
    }
    run_inherited(&mut build, "building the fuzz targets")?;
    println!(
        "fuzz: built {} in {:.1} s",
        if targets.len() == 1 {
            targets[0].name()
        } else {
            "every target"
        },
        build_start.elapsed().as_secs_f64()
    );

    let mut summary = Vec::new();
    for &target in &targets {
        let line = fuzz_one(&cargo_fuzz, &fuzz_dir, target, options.time)?;
        println!("{line}");
        summary.push(line);
    }
    println!("\nfuzz summary:");
    for line in &summary {
        println!("  {line}");
    }
    Ok(())
}

/// `<tools>/bin/cargo-fuzz`, installed with `cargo install` if missing.
fn install_cargo_fuzz() -> Result<PathBuf> {
    let tools = tools_dir();
    let bin = tools.join("bin/cargo-fuzz");
    let version = |bin: &Path| stdout_of(bin.to_str()?, &["fuzz", "--version"]);
    if let Some(version) = version(&bin) {
        println!("fuzz: {version} ({})", bin.display());
        return Ok(bin);
    }
    println!(
        "fuzz: installing cargo-fuzz from crates.io into {}",
        tools.display()
    );
    let mut install = cargo();
    install
        .args(["install", "--locked", "cargo-fuzz", "--root"])
        .arg(&tools)
        // cargo install would otherwise build in (and leave files in) the
        // project's target dir.
        .env_remove("CARGO_TARGET_DIR");
    run_inherited(
        &mut install,
        "installing cargo-fuzz (needs network access to crates.io)",
    )?;
    let version = version(&bin)
        .with_context(|| format!("{} was installed but does not run", bin.display()))?;
    println!("fuzz: installed {version}");
    Ok(bin)
}

/// `rustup run nightly cargo-fuzz <subcommand> --fuzz-dir fuzz -a`.
fn fuzz_command(cargo_fuzz: &Path, fuzz_dir: &Path, subcommand: &str) -> Result<Command> {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly"])
        .arg(cargo_fuzz)
        .arg(subcommand)
        .arg("--fuzz-dir")
        .arg(fuzz_dir)
        // Overflow checks and debug assertions in hb's code too.
        .arg("--debug-assertions")
        // The fuzz crate is a workspace of its own with its own target
        // dir (fuzz/target): a CARGO_TARGET_DIR meant for the project
        // would mix sanitizer builds into it. hb-userspace's build.rs then
        // looks for bpf-linker in <workspace>/target/toolchain and on PATH,
        // which leads to our tool cache whatever the target dir.
        .env_remove("CARGO_TARGET_DIR")
        .env("PATH", path_with_tools()?)
        .current_dir(workspace());
    Ok(cmd)
}

/// Runs one target for `seconds`; its summary line, or the crash.
fn fuzz_one(cargo_fuzz: &Path, fuzz_dir: &Path, target: Target, seconds: u64) -> Result<String> {
    let name = target.name();
    println!("\nfuzz: {name} for {seconds} s");
    let mut cmd = fuzz_command(cargo_fuzz, fuzz_dir, "run")?;
    cmd.arg(name)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{}`", describe(&cmd)))?;
    // libFuzzer reports on stderr: echo it, and pick out the stats.
    let stderr = child.stderr.take().context("cargo fuzz has no stderr")?;
    let mut stats = RunStats::default();
    let mut echo = std::io::stderr().lock();
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading cargo fuzz's output")?;
        // A closed terminal must not stop the run.
        let _ = writeln!(echo, "{line}");
        stats.add_line(&line);
    }
    drop(echo);
    let status = child.wait().context("waiting for cargo fuzz")?;
    let wall = start.elapsed().as_secs_f64();
    if interrupt::interrupted() {
        bail!("fuzz: {name}: interrupted");
    }
    if !status.success() {
        match &stats.artifact {
            Some(artifact) => bail!(
                "fuzz target {name} crashed ({}): the input is in {}; its stack is above; \
                 reproduce with `rustup run nightly {} run --fuzz-dir {} -a {name} {artifact}`",
                stats.describe(),
                workspace().join(artifact).display(),
                cargo_fuzz.display(),
                fuzz_dir.display(),
            ),
            None => bail!(
                "fuzz target {name}: `{}` failed ({status}) without saving a crash input; \
                 its output is above",
                describe(&cmd)
            ),
        }
    }
    let corpus = fs::read_dir(fuzz_dir.join("corpus").join(name))
        .map(|dir| dir.count())
        .unwrap_or(0);
    Ok(format!(
        "fuzz {name}: ok, {}, no crash; corpus {corpus} inputs ({wall:.0} s wall)",
        stats.describe()
    ))
}

/// Writes the seeds of `target` into its corpus dir if that is empty.
fn seed(fuzz_dir: &Path, target: Target) -> Result<()> {
    let dir = fuzz_dir.join("corpus").join(target.name());
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut entries = fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
    if entries.next().is_some() {
        return Ok(());
    }
    let seeds = target.seeds()?;
    for (name, bytes) in &seeds {
        let path = dir.join(name);
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("fuzz: seeded {} with {} inputs", dir.display(), seeds.len());
    Ok(())
}

/// A heartbeat as `hb_common::wire` encodes it (56 bytes, big-endian).
fn heartbeat(flags: u8, node_id: u32, sequence: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(56);
    out.extend_from_slice(b"BEAT");
    out.extend_from_slice(&[1, flags, 0, 0]); // version, flags, key id, reserved
    out.extend_from_slice(&node_id.to_be_bytes());
    out.extend_from_slice(&2000u32.to_be_bytes()); // interval, ms
    out.extend_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes()); // incarnation
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&1_700_000_000_000_000_000u64.to_be_bytes()); // sent, Unix ns
    out.extend_from_slice(&[0; 16]); // authentication tag
    out
}

fn wire_seeds() -> Vec<(String, Vec<u8>)> {
    vec![
        ("heartbeat".to_owned(), heartbeat(0, 7, 42)),
        ("heartbeat-leave".to_owned(), heartbeat(1, 7, 43)),
    ]
}

fn config_seeds() -> Result<Vec<(String, Vec<u8>)>> {
    let demo = DEMO_CONFIG
        .replace("{{INTERFACES}}", "[\"hbdemo-m1\", \"hbdemo-m2\"]")
        .replace("{{SOCKET}}", "\"/tmp/hbdemo/hb.sock\"")
        .replace("{{STATE}}", "\"/tmp/hbdemo/state\"")
        .replace("{{KEY}}", "\"/tmp/hbdemo/hb.key\"")
        .replace("{{LOG}}", "'/tmp/hbdemo/actions.log'");
    let mut seeds = vec![
        ("demo.toml".to_owned(), demo.into_bytes()),
        (
            "minimal.toml".to_owned(),
            MINIMAL_CONFIG.as_bytes().to_vec(),
        ),
    ];
    if let Some(example) = example_config()? {
        seeds.push(("example.toml".to_owned(), example.into_bytes()));
    }
    Ok(seeds)
}

/// The commented example configuration (`hb example-config`), the file
/// hb-userspace/src/config/example.toml; None if that file is gone.
fn example_config() -> Result<Option<String>> {
    let path = workspace().join("hb-userspace/src/config/example.toml");
    match fs::read_to_string(&path) {
        Ok(example) => Ok(Some(example)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_come_from_libfuzzer_lines() {
        let mut stats = RunStats::default();
        for line in [
            "#1048576\tpulse  cov: 80 ft: 120 corp: 9/400b exec/s: 349525 rss: 40Mb",
            "Done 7012345 runs in 21 second(s)",
            "stat::number_of_executed_units: 7012346",
            "stat::average_exec_per_sec:     333921",
        ] {
            stats.add_line(line);
        }
        assert_eq!(
            stats,
            RunStats {
                runs: Some(7_012_346),
                seconds: Some(21),
                artifact: None,
            }
        );
        assert_eq!(stats.describe(), "7012346 runs in 21 s (333921 runs/s)");

        let mut stats = RunStats::default();
        stats.add_line("#99\tNEW    cov: 20 ft: 20 corp: 3/12b lim: 4 exec/s: 0 rss: 30Mb");
        stats.add_line(
            "artifact_prefix='/w/fuzz/artifacts/wire_decode/'; Test unit written to \
             /w/fuzz/artifacts/wire_decode/crash-da39a3ee",
        );
        assert_eq!(
            stats,
            RunStats {
                runs: None,
                seconds: None,
                artifact: Some("/w/fuzz/artifacts/wire_decode/crash-da39a3ee".to_owned()),
            }
        );
        assert_eq!(stats.describe(), "? runs");
    }

    #[test]
    fn seeds_are_the_expected_shape() {
        for (_, bytes) in wire_seeds() {
            assert_eq!(bytes.len(), 56);
            assert_eq!(&bytes[..4], b"BEAT");
        }
        let seeds = config_seeds().unwrap();
        assert!(seeds.len() >= 2);
        for (name, text) in seeds {
            let text = String::from_utf8(text).unwrap();
            assert!(!text.contains("{{"), "{name} has a placeholder left");
            assert!(text.contains("[[nodes]]"), "{name} lists no node");
        }
    }
}
