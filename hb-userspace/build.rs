//! Builds the XDP program (`hb-ebpf`) for the BPF target with aya-build and
//! leaves the object in `OUT_DIR/hb-xdp` for `include_bytes_aligned!`.
//!
//! bpf-linker is looked up in the project's tool cache (where
//! `cargo xtask setup` builds it) before `PATH`.

use std::{env, path::PathBuf};

use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .expect("hb-userspace is inside the workspace");
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let tool_bin = target_dir.join("hb-tools").join("bin");
    println!(
        "cargo:rerun-if-changed={}",
        tool_bin.join("bpf-linker").display()
    );
    println!("cargo:rerun-if-env-changed=PATH");

    let mut path = vec![tool_bin.clone()];
    path.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    let have_linker = path.iter().any(|dir| dir.join("bpf-linker").is_file());
    if !have_linker && env::var_os("AYA_BUILD_SKIP").is_none() {
        anyhow::bail!(
            "bpf-linker not found in {} nor on PATH: run `cargo xtask setup` first \
             (it builds bpf-linker and installs rust-src for the nightly toolchain)",
            tool_bin.display()
        );
    }
    // SAFETY: build scripts are single-threaded; aya-build's child cargo
    // inherits this PATH and so finds bpf-linker.
    unsafe { env::set_var("PATH", env::join_paths(path)?) };

    let ebpf = workspace.join("hb-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "hb-ebpf",
            root_dir: ebpf.to_str().expect("UTF-8 path"),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
