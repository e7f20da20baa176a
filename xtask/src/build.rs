//! `cargo xtask build`: `cargo build --release -p hb-userspace -p hb-tools`
//! with the tool cache on PATH (the eBPF object is built by hb-userspace's
//! build.rs, which needs bpf-linker).

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::{
    paths::{cargo, hb_binary, hb_tools_binary, path_with_tools, run_inherited},
    setup,
};

/// The two release binaries: the product and the tools.
pub struct Binaries {
    /// `hb`: what operators run.
    pub hb: PathBuf,
    /// `hb-tools`: the load generator and the in-process benches.
    pub tools: PathBuf,
}

/// Set up, build, and return the binaries' paths.
pub fn run() -> Result<Binaries> {
    setup::run()?;
    build()
}

/// Build without the setup checks; returns the binaries' paths.
pub fn build() -> Result<Binaries> {
    run_inherited(
        cargo()
            .args(["build", "--release", "-p", "hb-userspace", "-p", "hb-tools"])
            .env("PATH", path_with_tools()?),
        "building hb and hb-tools",
    )?;
    let binaries = Binaries {
        hb: hb_binary(),
        tools: hb_tools_binary(),
    };
    for binary in [&binaries.hb, &binaries.tools] {
        if !binary.is_file() {
            bail!(
                "the build succeeded but {} does not exist",
                binary.display()
            );
        }
        println!("built: {}", binary.display());
    }
    Ok(binaries)
}
