//! `hb detach`: removes everything an instance pinned (the XDP program from
//! every interface, the program, the maps, the directories), the explicit
//! stop of a datapath that otherwise outlives the agent. Idempotent, and
//! refused while an agent holds the instance.

use std::path::PathBuf;

use clap::Args;

use crate::{
    config::{Config, Overrides},
    datapath::pins::{self, DEFAULT_INSTANCE, PIN_ROOT},
};

#[derive(Args)]
pub struct DetachArgs {
    /// The agent's configuration file: its `instance` is the one removed.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The instance to remove (default: the config's `instance`, else
    /// "default").
    #[arg(long, value_name = "NAME")]
    instance: Option<String>,
}

pub fn execute(args: &DetachArgs) -> anyhow::Result<()> {
    let instance = match (&args.instance, &args.config) {
        (Some(instance), _) => instance.clone(),
        (None, Some(path)) => Config::load(path, &Overrides::default())?.instance,
        (None, None) => DEFAULT_INSTANCE.to_owned(),
    };
    let removed = pins::remove(&instance)?;
    if removed.is_empty() {
        println!("nothing pinned for instance {instance}");
        return Ok(());
    }
    for link in &removed.links {
        println!(
            "detached the XDP program from {} ({})",
            link.interface,
            link.mode.name()
        );
    }
    println!(
        "removed instance {instance}: {} link(s), {} program(s), {} map pin(s) and directories \
         under {PIN_ROOT}/{instance}",
        removed.links.len(),
        removed.programs,
        removed.other,
    );
    Ok(())
}
