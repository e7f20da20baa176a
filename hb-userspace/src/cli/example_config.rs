//! `hb example-config`: a complete, commented configuration to start from.

use crate::config::Config;

pub fn execute() -> anyhow::Result<()> {
    print!("{}", Config::example());
    Ok(())
}
