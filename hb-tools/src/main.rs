//! `hb-tools`: what `cargo xtask bench` and the tests run besides the
//! product: `hb-tools loadgen` (a simulated fleet of senders),
//! `hb-tools bench xdp-cost|sweep|state|hostile` (in-process measurements,
//! JSON on stdout) and `hb-tools datapath-counters` (the pinned counters
//! over time). Not shipped: operators run `hb`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hb::cli::run_to_exit;

use crate::cli::{
    bench::BenchCommand, datapath_counters::DatapathCountersArgs, loadgen::LoadgenArgs,
};

/// hb's load generator and benches (for `cargo xtask bench` and the tests;
/// not part of the shipped `hb`).
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a fleet of nodes from one process (load tests, benchmarks).
    Loadgen(Box<LoadgenArgs>),
    /// Measurements run by `cargo xtask bench` (root; JSON on stdout).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Sample the pinned XDP datapath's counters of an instance (no agent
    /// needed) and report the longest time `accepted` did not grow.
    DatapathCounters(DatapathCountersArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    run_to_exit(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Loadgen(args) => args.execute().await,
        Command::Bench(command) => command.execute(),
        Command::DatapathCounters(args) => args.execute().await,
    }
}
