//! `hb-tools`: what `cargo xtask bench` and the tests run besides the
//! product: `hb-tools loadgen` (a simulated fleet of senders) and
//! `hb-tools bench xdp-cost|sweep|hostile` (in-process measurements, JSON on
//! stdout). Not shipped: operators run `hb`.

use std::{io::IsTerminal, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hb::keys::KeyFile;
use hb_tools::loadgen::{LoadgenOptions, Pace};

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

#[derive(Args)]
struct LoadgenArgs {
    /// How many nodes to simulate (1-1000000).
    #[arg(long)]
    nodes: u32,
    /// Id of the first node; the others follow consecutively.
    #[arg(long, default_value_t = 1)]
    first_id: u32,
    /// Monitor address, e.g. 198.18.0.1:7979 (repeatable; every heartbeat
    /// goes to each).
    #[arg(long = "to", required = true, value_name = "ADDR:PORT")]
    targets: Vec<SocketAddr>,
    /// Time between two heartbeats of one node.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Aggregate heartbeats per second over all nodes, instead of
    /// --interval (each node then beats every nodes/rate seconds).
    #[arg(long, conflicts_with = "interval")]
    rate: Option<f64>,
    /// Stop after this long, at most 1h (required unless --count is given).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many heartbeats in all (--loss and --burst-loss ones
    /// included), at most 10^10.
    #[arg(long)]
    count: Option<u64>,
    /// Heartbeats per sendmmsg(2) call (1-1024).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Fraction of the nodes (0-1) that crash at --stop-after: they stop
    /// sending, without a graceful leave.
    #[arg(long, default_value_t = 0.0)]
    stop_fraction: f64,
    /// When the --stop-fraction nodes stop, as time into the run, e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    stop_after: Option<Duration>,
    /// Lose this percentage (0-100) of the heartbeats at random: each is
    /// independently not sent, but its node's sequence still advances, so
    /// the monitor sees a gap.
    #[arg(long, default_value_t = 0.0, value_name = "PERCENT")]
    loss: f64,
    /// Percentage (0-100) of the heartbeats that start a burst of loss: that
    /// heartbeat and its node's next 1 or 2 (at random) are lost, sequence
    /// advancing.
    #[arg(long, default_value_t = 0.0, value_name = "PERCENT")]
    burst_loss: f64,
    /// Pause each node at random moments, independently, on average once
    /// per this long (from one pause's start to the next), e.g. 10s; needs
    /// --pause-for.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pause_every: Option<Duration>,
    /// How long each pause lasts, e.g. 500ms: a stalled process, that sends
    /// nothing and does not advance its sequence, then beats at once when
    /// the pause ends.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pause_for: Option<Duration>,
    /// Seed of the choice of stopping nodes, of the phase jitter and of the
    /// injected loss and pauses.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// At the end, send a graceful-leave heartbeat for every running node.
    #[arg(long)]
    leave_at_end: bool,
    /// Write a JSON report here, with when each stopped node last sent and
    /// the faults injected.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Hand the kernel one message per datagram instead of letting UDP GSO
    /// cut batches into datagrams (slower; for comparison).
    #[arg(long)]
    no_gso: bool,
    /// Sign every heartbeat with the key in this file (see `hb keygen`;
    /// owned by root, mode 0600). Without it, heartbeats are unauthenticated.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The XDP program's cost per packet, through BPF_PROG_TEST_RUN.
    XdpCost {
        /// Distinct accepted heartbeats, each run once.
        #[arg(long, default_value_t = 100_000)]
        distinct: u32,
        /// Repeats of one packet for the other classes.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
    },
    /// One sweep of N up nodes over the mmapped table, and a memcpy of the
    /// bytes it reads.
    Sweep {
        #[arg(long)]
        nodes: u32,
        #[arg(long, default_value_t = 20)]
        rounds: u32,
    },
    /// Generated hostile packets through BPF_PROG_TEST_RUN, checking after
    /// each one that only a fresh, validly signed heartbeat changes the node
    /// table and that the counters add up. Exits non-zero on a violation
    /// (after printing the report).
    Hostile {
        /// Packets to generate.
        #[arg(long, default_value_t = hb_tools::hostile::DEFAULT_PACKETS)]
        packets: u64,
        /// Seed of the generator: the same seed makes the same packets.
        #[arg(long, default_value_t = hb_tools::hostile::DEFAULT_SEED)]
        seed: u64,
    },
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
        Command::Loadgen(args) => {
            hb_tools::loadgen::run(LoadgenOptions {
                nodes: args.nodes,
                first_id: args.first_id,
                targets: args.targets,
                pace: args.rate.map_or(Pace::Interval(args.interval), Pace::Rate),
                duration: args.duration,
                count: args.count,
                batch: args.batch,
                stop_fraction: args.stop_fraction,
                stop_after: args.stop_after,
                loss: args.loss / 100.0,
                burst_loss: args.burst_loss / 100.0,
                pause_every: args.pause_every,
                pause_for: args.pause_for,
                seed: args.seed,
                leave_at_end: args.leave_at_end,
                report: args.report,
                gso: !args.no_gso,
                key: args.key_file.as_deref().map(KeyFile::read).transpose()?,
            })
            .await
        }
        Command::Bench(BenchCommand::XdpCost { distinct, repeat }) => {
            print_json(&hb_tools::bench::xdp_cost(distinct, repeat)?)
        }
        Command::Bench(BenchCommand::Sweep { nodes, rounds }) => {
            print_json(&hb_tools::bench::sweep(nodes, rounds.max(1))?)
        }
        Command::Bench(BenchCommand::Hostile { packets, seed }) => {
            let report = hb_tools::hostile::run(packets, seed)?;
            print_json(&report)?;
            if report.violations > 0 {
                anyhow::bail!(
                    "{} of {} hostile packets violated the property (first: {})",
                    report.violations,
                    report.packets,
                    report
                        .examples
                        .first()
                        .map_or_else(String::new, |v| format!("{}: {}", v.what, v.problem))
                );
            }
            Ok(())
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value).context("encoding JSON")?);
    Ok(())
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
