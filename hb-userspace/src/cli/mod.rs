//! The `hb` command line: what an operator runs. One file per subcommand;
//! clap parses (the doc comments are the help text), the library does the
//! work, and [`run_to_exit`] prints errors once, with their causes. The load
//! generator and the benches are not here: they are `hb-tools`.

mod agent;
mod detach;
mod example_config;
mod keygen;
mod process;
mod send;
mod status;

use clap::{Parser, Subcommand};

pub use self::process::run_to_exit;

/// hb: an eBPF/XDP heartbeat monitor. An XDP program records every heartbeat
/// into a per-node table at line rate; the agent sweeps the table, decides
/// which nodes are up, down or gone, and runs failover actions.
#[derive(Parser)]
#[command(name = "hb", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Monitor nodes: attach the XDP program and run failover actions (root).
    /// The XDP program stays attached and recording when the agent stops.
    Agent(agent::AgentArgs),
    /// Remove an instance's XDP datapath: detach the program from every
    /// interface and remove its pinned program and maps (root). Refused
    /// while an agent runs the instance.
    Detach(detach::DetachArgs),
    /// Send heartbeats for one node to one or more monitors.
    Send(send::SendArgs),
    /// Show the running agent's view: node states and datapath counters.
    Status(status::StatusArgs),
    /// Write a new random heartbeat key to a file (mode 0600), for
    /// `auth.keys` on the monitor and `--key-file` on the senders.
    Keygen(keygen::KeygenArgs),
    /// Print a complete, commented example configuration file.
    ExampleConfig,
}

impl Command {
    /// Runs the subcommand.
    pub async fn execute(self) -> anyhow::Result<()> {
        match self {
            Command::Agent(args) => agent::execute(args).await,
            Command::Detach(args) => detach::execute(&args),
            Command::Send(args) => send::execute(args).await,
            Command::Status(args) => status::execute(args).await,
            Command::Keygen(args) => keygen::execute(&args),
            Command::ExampleConfig => example_config::execute(),
        }
    }
}
