//! `hb keygen`: a new random heartbeat key in a file of its own (mode
//! 0600), for `auth.keys` on the monitor and `--key-file` on the senders.

use std::{os::unix::fs::MetadataExt, path::PathBuf};

use clap::Args;

use crate::keys;

#[derive(Args)]
pub struct KeygenArgs {
    /// The key id heartbeats signed with this key carry (1-255). Give a new
    /// key an id the key it replaces does not have.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=255))]
    id: u8,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
    /// Where to write the key; its directory must exist.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

pub fn execute(args: &KeygenArgs) -> anyhow::Result<()> {
    let key = keys::generate(&args.file, args.id, args.force)?;
    println!(
        "wrote key id {} to {} (mode 0600)",
        key.id,
        key.path.display()
    );
    println!(
        "to rotate: give the monitor the new key first (auth.keys = [new, old]), then the \
         senders, then drop the old one"
    );
    if let Ok(metadata) = std::fs::metadata(&key.path)
        && metadata.uid() != 0
    {
        eprintln!(
            "warning: {} is owned by uid {}; hb reads only keys owned by root: \
             `chown root:root {}`",
            key.path.display(),
            metadata.uid(),
            key.path.display()
        );
    }
    Ok(())
}
