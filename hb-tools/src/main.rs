//! `hb-tools`: what `cargo xtask bench` and the tests run besides the
//! product: `hb-tools loadgen` (a simulated fleet of senders) and
//! `hb-tools bench xdp-cost|sweep|hostile` (in-process measurements, JSON on
//! stdout). Not shipped: operators run `hb`.

mod cli;

use std::{io::IsTerminal, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::cli::{bench::BenchCommand, loadgen::LoadgenArgs};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Loadgen(args) => args.execute().await,
        Command::Bench(command) => command.execute(),
    }
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
