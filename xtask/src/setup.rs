//! `cargo xtask setup`: everything the build and the tests need that is not
//! a crate, installed only when missing (one line per step):
//!
//! 1. rust-src and rustfmt for the nightly toolchain (`-Z build-std=core` of
//!    the eBPF crate; the import grouping of rustfmt.toml is a nightly
//!    option), installing the nightly itself if needed;
//! 2. bpf-linker, built from crates.io against the nightly's own libLLVM
//!    into `<target-dir>/toolchain` (see /work/shared/TOOLCHAIN.md, step 2);
//! 3. iproute2 (`ip`), from apt, for the network-namespace tests and demo;
//! 4. Debian's `prometheus` package, for `promtool check metrics` in the
//!    `/metrics` tests (about 19 MB to download; apt never starts its
//!    service here);
//! 5. Debian's `haproxy` package, for the HAProxy action's network-namespace
//!    test (a real load balancer that hb takes a crashed backend out of;
//!    apt never starts its service here);
//! 6. Debian's `etcd-server` and `etcd-client` packages (`etcd`, `etcdctl`),
//!    for the monitor groups: the tests run a real etcd cluster, one member
//!    per lab namespace (apt never starts its service here);
//! 7. Debian's `protobuf-compiler` and `libprotobuf-dev`: the `etcd-client`
//!    crate's build script runs `protoc`, which it does not bundle, and its
//!    `.proto` files import the well-known types that only `libprotobuf-dev`
//!    ships (it is merely a Recommends of `protobuf-compiler`, which
//!    `--no-install-recommends` skips, so both are named). Installed here
//!    rather than through the `protoc-bin-vendored` crate because a build
//!    script cannot hand `PROTOC` to another crate's build script: only the
//!    environment of every cargo command could, and a `protoc` on `PATH`
//!    makes `cargo build`, `cargo test` and `cargo clippy` work as they are.
//!    `hb` itself links the etcd client (the monitor groups), and every
//!    xtask command that builds runs setup first, so a fresh clone's
//!    `cargo xtask demo` and `cargo xtask test` install it before their
//!    first build (xtask itself does not need it).
//! 8. Debian's `chromium` (about 165 MB to download): the live web view's
//!    tests (tests/tests/web.rs) load the page in a real headless Chromium,
//!    driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`),
//!    so no WebDriver (`chromium-driver`) is needed and no crate downloads a
//!    browser build.
//! 9. Debian's `nftables` (`nft`): the probe benches (`cargo xtask bench
//!    --only probe-quality`) drop a random share of the ICMP echo requests
//!    in the responder's namespace (`numgen random mod 100 < 5 drop`), and
//!    the probe bench takes addresses away with an nft set.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::paths::{on_path, run_inherited, stdout_of, tools_dir};

const STEPS: usize = 9;

/// Run every step (skipping those already done), one line per step.
pub fn run() -> Result<()> {
    let start = Instant::now();
    step(1, "rust-src and rustfmt for nightly", nightly_components)?;
    step(2, "bpf-linker", bpf_linker)?;
    step(3, "iproute2", || apt_package("ip", "iproute2"))?;
    step(4, "prometheus (promtool)", || {
        apt_package("promtool", "prometheus")
    })?;
    step(5, "haproxy", || apt_package("haproxy", "haproxy"))?;
    step(6, "etcd", || {
        apt_packages(&[("etcd", "etcd-server"), ("etcdctl", "etcd-client")])
    })?;
    step(7, "protoc and the well-known .proto files", protoc)?;
    step(8, "chromium (headless, for the web view's tests)", || {
        apt_package("chromium", "chromium")
    })?;
    step(
        9,
        "nftables (loss and removals in the probe benches)",
        || apt_package("nft", "nftables"),
    )?;
    println!("setup: done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn step(n: usize, name: &str, f: impl FnOnce() -> Result<String>) -> Result<()> {
    let outcome = f().with_context(|| format!("setup step {n}/{STEPS} ({name}) failed"))?;
    println!("setup [{n}/{STEPS}] {name}: {outcome}");
    Ok(())
}

fn require_rustup() -> Result<()> {
    if stdout_of("rustup", &["--version"]).is_none() {
        bail!(
            "rustup not found: install rustup (https://rustup.rs, or your distribution's \
             `rustup` package), then run `cargo xtask setup` again"
        );
    }
    Ok(())
}

fn nightly_installed() -> Result<bool> {
    let list = stdout_of("rustup", &["toolchain", "list"])
        .context("`rustup toolchain list` failed: check your rustup installation")?;
    Ok(list.lines().any(|line| line.starts_with("nightly")))
}

fn nightly_sysroot() -> Result<PathBuf> {
    stdout_of("rustup", &["run", "nightly", "rustc", "--print", "sysroot"])
        .map(PathBuf::from)
        .context(
            "`rustup run nightly rustc --print sysroot` failed: repair the toolchain with \
             `rustup toolchain install nightly --profile minimal --component rust-src`",
        )
}

fn nightly_components() -> Result<String> {
    require_rustup()?;
    if !nightly_installed()? {
        run_inherited(
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
                "--component",
                "rustfmt",
            ]),
            "installing the nightly toolchain (check network access to static.rust-lang.org)",
        )?;
        return Ok("installed the nightly toolchain with rust-src and rustfmt".to_owned());
    }
    let library = nightly_sysroot()?.join("lib/rustlib/src/rust/library");
    let rustfmt = || stdout_of("rustup", &["run", "nightly", "rustfmt", "--version"]).is_some();
    let mut missing = Vec::new();
    if !library.is_dir() {
        missing.push("rust-src");
    }
    if !rustfmt() {
        missing.push("rustfmt");
    }
    if missing.is_empty() {
        return Ok("already installed".to_owned());
    }
    run_inherited(
        Command::new("rustup")
            .args(["component", "add", "--toolchain", "nightly"])
            .args(&missing),
        "installing nightly components (check network access to static.rust-lang.org)",
    )?;
    if !library.is_dir() {
        bail!(
            "rustup reported success but {} does not exist",
            library.display()
        );
    }
    if !rustfmt() {
        bail!("rustup reported success but the nightly rustfmt does not run");
    }
    Ok(format!("installed {}", missing.join(" and ")))
}

/// `bpf-linker --version`, if the binary runs.
fn linker_version(bin: &Path) -> Option<String> {
    stdout_of(bin.to_str()?, &["--version"])
}

/// The nightly's shared LLVM: (file name of libLLVM.so.*, its path, major).
struct NightlyLlvm {
    so_name: String,
    so_path: PathBuf,
    major: String,
}

fn nightly_llvm() -> Result<NightlyLlvm> {
    let lib = nightly_sysroot()?.join("lib");
    let mut candidates: Vec<String> = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("libLLVM.so."))
        .collect();
    candidates.sort();
    let [so_name] = <[String; 1]>::try_from(candidates).map_err(|found| {
        anyhow::anyhow!(
            "expected exactly one libLLVM.so.* in {}, found {found:?}: reinstall the \
             nightly toolchain",
            lib.display()
        )
    })?;
    let verbose = stdout_of("rustup", &["run", "nightly", "rustc", "-vV"])
        .context("`rustup run nightly rustc -vV` failed")?;
    let major = verbose
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|version| version.split('.').next())
        .filter(|major| !major.is_empty() && major.chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("no LLVM version in `rustc +nightly -vV`:\n{verbose}"))?
        .to_owned();
    Ok(NightlyLlvm {
        so_path: lib.join(&so_name),
        so_name,
        major,
    })
}

/// `<prefix>/lib/{libLLVM.so, <soname>}` -> the nightly's libLLVM.
fn make_llvm_prefix(prefix: &Path, llvm: &NightlyLlvm) -> Result<()> {
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for name in ["libLLVM.so", llvm.so_name.as_str()] {
        let link = lib.join(name);
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
        }
        symlink(&llvm.so_path, &link).with_context(|| format!("creating {}", link.display()))?;
    }
    Ok(())
}

fn bpf_linker() -> Result<String> {
    let tools = tools_dir();
    let bin = tools.join("bin/bpf-linker");
    if let Some(version) = linker_version(&bin) {
        return Ok(format!("already built ({version}, {})", bin.display()));
    }
    require_rustup()?;
    let llvm = nightly_llvm()?;
    let prefix = tools.join("llvm-prefix");
    make_llvm_prefix(&prefix, &llvm)?;
    if bin.is_file()
        && let Some(version) = linker_version(&bin)
    {
        // Only the libLLVM symlinks its rpath points at were missing.
        return Ok(format!("repaired its libLLVM links ({version})"));
    }
    println!(
        "setup [2/{STEPS}] bpf-linker: building from crates.io against {} (about a minute)",
        llvm.so_name
    );
    let mut install = Command::new("rustup");
    install
        .args([
            "run",
            "nightly",
            "cargo",
            "install",
            "bpf-linker",
            "--locked",
        ])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{}", llvm.major))
        .arg("--root")
        .arg(&tools)
        .env("LLVM_PREFIX", &prefix)
        // cargo install would otherwise build in (and leave files in) the
        // project's target dir.
        .env_remove("CARGO_TARGET_DIR");
    run_inherited(
        &mut install,
        "building bpf-linker (needs network access to crates.io; see \
         /work/shared/TOOLCHAIN.md step 2)",
    )?;
    let version = linker_version(&bin).with_context(|| {
        format!(
            "{} was built but `--version` fails: check that {} holds the libLLVM symlinks",
            bin.display(),
            prefix.join("lib").display()
        )
    })?;
    Ok(format!("built ({version}, {})", bin.display()))
}

/// Whether this run already refreshed apt's package lists: the first
/// missing package pays for `apt-get update`, the others reuse it.
static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Installs Debian's `package` with apt-get when `binary` is not on `PATH`,
/// without its recommends (they are not needed for what we run).
fn apt_package(binary: &str, package: &str) -> Result<String> {
    apt_packages(&[(binary, package)])
}

/// Installs, in one apt-get run, the Debian package of every (binary,
/// package) pair whose binary is not on `PATH`.
fn apt_packages(pairs: &[(&str, &str)]) -> Result<String> {
    let missing: Vec<&str> = pairs
        .iter()
        .filter(|(binary, _)| on_path(binary).is_none())
        .map(|&(_, package)| package)
        .collect();
    let found = || -> Option<String> {
        let paths = pairs
            .iter()
            .map(|(binary, _)| Some(on_path(binary)?.display().to_string()))
            .collect::<Option<Vec<_>>>()?;
        Some(paths.join(", "))
    };
    if missing.is_empty() {
        let paths = found().context("a binary vanished from PATH while looking")?;
        return Ok(format!("already installed ({paths})"));
    }
    apt_install(&missing)?;
    let paths = found().with_context(|| {
        format!(
            "apt-get installed {} but {} is still not on PATH",
            missing.join(" "),
            pairs
                .iter()
                .map(|(binary, _)| format!("`{binary}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        )
    })?;
    Ok(format!("installed ({paths})"))
}

/// One of the well-known types that `etcd-client`'s `.proto` files import
/// (with `google/protobuf/struct.proto`).
const WELL_KNOWN_PROTO: &str = "/usr/include/google/protobuf/descriptor.proto";

/// `protoc` and the well-known `.proto` files, for `etcd-client`'s build.
fn protoc() -> Result<String> {
    let mut missing = Vec::new();
    if on_path("protoc").is_none() {
        missing.push("protobuf-compiler");
    }
    if !Path::new(WELL_KNOWN_PROTO).is_file() {
        missing.push("libprotobuf-dev");
    }
    if missing.is_empty() {
        let version = stdout_of("protoc", &["--version"]).unwrap_or_default();
        return Ok(format!("already installed ({version})"));
    }
    apt_install(&missing)?;
    let version = stdout_of("protoc", &["--version"])
        .context("apt-get installed protobuf-compiler but `protoc --version` fails")?;
    if !Path::new(WELL_KNOWN_PROTO).is_file() {
        bail!("apt-get installed libprotobuf-dev but {WELL_KNOWN_PROTO} does not exist");
    }
    Ok(format!("installed {} ({version})", missing.join(" and ")))
}

/// `apt-get install --no-install-recommends PACKAGES` (after one `apt-get
/// update` per run), as root.
fn apt_install(packages: &[&str]) -> Result<()> {
    let list = packages.join(" ");
    if !hb_tests::is_root() {
        bail!(
            "{list} not installed, and installing with apt-get needs root: not root. Run \
             `cargo xtask setup` as root, or install {list} by hand"
        );
    }
    if on_path("apt-get").is_none() {
        bail!("{list} not installed and apt-get is not available: install {list} by hand");
    }
    let failed = format!("apt-get failed: install {list} by hand");
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        run_inherited(
            Command::new("apt-get")
                .arg("update")
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &failed,
        )?;
    }
    run_inherited(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &failed,
    )
}
