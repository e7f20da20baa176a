//! `cargo xtask build`: `cargo build --release -p hb-userspace` with the
//! tool cache on PATH (the eBPF object is built by hb-userspace's build.rs,
//! which needs bpf-linker).

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::{
    paths::{cargo, hb_binary, path_with_tools, run_inherited},
    setup,
};

/// Set up, build, and return the path of the hb binary.
pub fn run() -> Result<PathBuf> {
    setup::run()?;
    build()
}

/// Build without the setup checks; returns the hb binary's path.
pub fn build() -> Result<PathBuf> {
    run_inherited(
        cargo()
            .args(["build", "--release", "-p", "hb-userspace"])
            .env("PATH", path_with_tools()?),
        "building hb",
    )?;
    let hb = hb_binary();
    if !hb.is_file() {
        bail!("the build succeeded but {} does not exist", hb.display());
    }
    println!("built: {}", hb.display());
    Ok(hb)
}
