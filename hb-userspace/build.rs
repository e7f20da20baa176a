//! Builds the XDP program (`hb-ebpf`) for the BPF target and leaves the
//! object in `OUT_DIR/hb-xdp` for `include_bytes_aligned!`.
//!
//! This does what `aya-build` does (nightly cargo, `-Z build-std=core`,
//! BTF, debug info), plus one code-generation flag aya-build cannot pass:
//! `+allows-misaligned-mem-access`. Heartbeat fields sit 2 bytes off an
//! 8-byte boundary behind the 14-byte Ethernet header; without the flag LLVM
//! reads every `u64` of the packet a byte at a time (809 instructions
//! instead of 636, about 10 ns more per accepted heartbeat). The kernel's
//! verifier accepts misaligned packet reads on the architectures that handle
//! them in hardware (x86-64, arm64) unless a program asks for strict
//! alignment.
//!
//! bpf-linker is looked up in the project's tool cache (where
//! `cargo xtask setup` builds it) before `PATH`.
//!
//! With the `test-programs` feature (the tests crate's), `hb-xdp` is built
//! a second time with `--cfg hb_variant` into `OUT_DIR/hb-xdp-variant`: a
//! program that differs in code only, which the upgrade test opens over a
//! running one.

use std::{
    env,
    ffi::OsString,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

/// The eBPF package; each of its binaries is an object (`hb-xdp`, the
/// test-only `hb-siphash` and the bench-only `hb-floor`).
const PACKAGE: &str = "hb-ebpf";
const TARGET: &str = "bpfel-unknown-none";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .context("hb-userspace is inside the workspace")?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let tool_bin = target_dir.join("toolchain").join("bin");
    let ebpf_dir = workspace.join(PACKAGE);
    for watched in [
        &ebpf_dir,
        &workspace.join("hb-common"),
        &tool_bin.join("bpf-linker"),
    ] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    println!("cargo:rerun-if-env-changed=PATH");

    let path = path_with_linker(&tool_bin)?;
    let mut objects = build_objects(&ebpf_dir, &out_dir, &path, &Variant::Release)?;
    if env::var_os("CARGO_FEATURE_TEST_PROGRAMS").is_some() {
        objects.extend(build_objects(
            &ebpf_dir,
            &out_dir,
            &path,
            &Variant::Changed,
        )?);
    }
    for (name, object) in objects {
        let destination = out_dir.join(&name);
        std::fs::copy(&object, &destination).with_context(|| {
            format!("copying {} to {}", object.display(), destination.display())
        })?;
    }
    Ok(())
}

/// `PATH` with the project's tool cache first; fails, saying how to fix it,
/// if bpf-linker is in neither.
fn path_with_linker(tool_bin: &Path) -> anyhow::Result<OsString> {
    let mut path = vec![tool_bin.to_owned()];
    path.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    if !path.iter().any(|dir| dir.join("bpf-linker").is_file()) {
        bail!(
            "bpf-linker not found in {} nor on PATH: run `cargo xtask setup` first \
             (it builds bpf-linker and installs rust-src for the nightly toolchain)",
            tool_bin.display()
        );
    }
    Ok(env::join_paths(path)?)
}

/// Which build of the eBPF package.
enum Variant {
    /// Every object, as shipped.
    Release,
    /// `hb-xdp` only, with `--cfg hb_variant` (a change of code only),
    /// named `hb-xdp-variant`.
    Changed,
}

/// The nightly cargo command that builds the objects of `variant`.
fn ebpf_cargo(
    ebpf_dir: &Path,
    out_dir: &Path,
    path: &OsString,
    variant: &Variant,
) -> anyhow::Result<Command> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let mut rustflags = vec![
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
        "-Ctarget-feature=+allows-misaligned-mem-access".to_owned(),
    ];
    let (bins, target_dir): (&[&str], _) = match variant {
        Variant::Release => (&["--bins"], "ebpf-target"),
        Variant::Changed => {
            rustflags.push("--cfg=hb_variant".to_owned());
            (&["--bin", "hb-xdp"], "ebpf-variant-target")
        }
    };
    let rustflags = rustflags.join("\x1f");
    let mut cargo = Command::new("rustup");
    cargo
        .args(["run", "nightly", "cargo", "build", "--package", PACKAGE])
        .args(bins)
        .args(["--release", "--target", TARGET, "-Z", "build-std=core"])
        .args(["--message-format=json-render-diagnostics"])
        // A target dir of its own: the outer cargo holds a lock on ours.
        .arg("--target-dir")
        .arg(out_dir.join(target_dir))
        .current_dir(ebpf_dir)
        .env("PATH", path)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        // The outer build's compiler settings are for the host.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(cargo)
}

/// Builds the eBPF objects of `variant`; returns each one's name and path.
fn build_objects(
    ebpf_dir: &Path,
    out_dir: &Path,
    path: &OsString,
    variant: &Variant,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut child = ebpf_cargo(ebpf_dir, out_dir, path, variant)?
        .spawn()
        .context("running `rustup run nightly cargo build` for hb-ebpf")?;
    // Compiler output comes on stderr (rendered); shown only on failure, so
    // that a good build is quiet.
    let stderr = child.stderr.take().context("no stderr")?;
    let diagnostics = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let stdout = child.stdout.take().context("no stdout")?;
    let mut objects = artifacts(BufReader::new(stdout))?;
    let status = child.wait()?;
    let diagnostics = diagnostics.join().unwrap_or_default();
    if !status.success() {
        for line in &diagnostics {
            println!("cargo:warning={line}");
        }
        bail!("building the XDP program failed ({status}); its compiler output is above");
    }
    if objects.is_empty() {
        bail!("building the XDP program produced no object");
    }
    if let Variant::Changed = variant {
        for (name, _) in &mut objects {
            name.push_str("-variant");
        }
    }
    Ok(objects)
}

/// The executables cargo's JSON messages announce, by target name.
fn artifacts(messages: impl BufRead) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut objects = Vec::new();
    for line in messages.lines() {
        let message: serde_json::Value =
            serde_json::from_str(&line?).context("cargo's JSON output")?;
        if message["reason"] == "compiler-artifact"
            && let (Some(name), Some(executable)) = (
                message["target"]["name"].as_str(),
                message["executable"].as_str(),
            )
        {
            objects.push((name.to_owned(), PathBuf::from(executable)));
        }
    }
    Ok(objects)
}
