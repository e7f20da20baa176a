//! The `hb` command line: `hb agent`, `hb send`, `hb status`, `hb keygen`,
//! `hb example-config`.
//!
//! A thin layer: clap parses (the doc comments below are the help text), the
//! library does the work, and errors are printed once with their causes.

use std::{
    io::IsTerminal,
    net::{IpAddr, SocketAddr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use hb::{
    agent::status,
    config::{self, Config, Overrides},
    keys::{self, KeyFile},
    sender::SendOptions,
};

/// hb: an eBPF/XDP heartbeat monitor. An XDP program records every heartbeat
/// into a per-node table at line rate; the agent sweeps the table, decides
/// which nodes are up, down or gone, and runs failover actions.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Monitor nodes: attach the XDP program and run failover actions (root).
    Agent(AgentArgs),
    /// Send heartbeats for one node to one or more monitors.
    Send(SendArgs),
    /// Show the running agent's view: node states and datapath counters.
    Status(StatusArgs),
    /// Write a new random heartbeat key to a file (mode 0600), for
    /// `auth.keys` on the monitor and `--key-file` on the senders.
    Keygen(KeygenArgs),
    /// Print a complete, commented example configuration file.
    ExampleConfig,
}

#[derive(Args)]
struct AgentArgs {
    /// The TOML configuration file (see `hb example-config`).
    #[arg(long, short)]
    config: PathBuf,
    /// Attach to this interface (repeatable); replaces the config's `interfaces`.
    #[arg(long = "interface", short = 'i', value_name = "IFACE")]
    interfaces: Vec<String>,
    /// UDP port heartbeats arrive on.
    #[arg(long)]
    port: Option<u16>,
    /// Expected heartbeat interval of nodes that advertise none, e.g. 2s.
    #[arg(long, value_parser = humantime::parse_duration)]
    interval: Option<Duration>,
    /// A node is down after this many intervals of silence.
    #[arg(long)]
    timeout_multiplier: Option<u32>,
    /// How often the node table is swept, e.g. 100ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    sweep_period: Option<Duration>,
    /// Size of the node table; node ids must be below it.
    #[arg(long)]
    max_nodes: Option<u32>,
    /// What receives heartbeats: the XDP program, or a UDP socket.
    #[arg(long, value_enum)]
    datapath: Option<DatapathArg>,
    /// XDP attach mode.
    #[arg(long, value_enum)]
    xdp_mode: Option<XdpModeArg>,
    /// Pass heartbeats on to the network stack after recording them.
    #[arg(long)]
    pass_heartbeats: bool,
    /// Where `hb status` reaches the agent.
    #[arg(long)]
    status_socket: Option<PathBuf>,
    /// Where node states are saved across restarts.
    #[arg(long)]
    state_file: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum DatapathArg {
    /// The XDP program, in the driver (default).
    Xdp,
    /// A UDP socket read with recvmmsg: where XDP cannot be attached.
    Socket,
}

#[derive(Clone, Copy, ValueEnum)]
enum XdpModeArg {
    /// Native (driver) mode, falling back to generic mode.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

#[derive(Args)]
struct SendArgs {
    /// This node's id (as configured on the monitor).
    #[arg(long)]
    node_id: u32,
    /// Monitor address, e.g. 198.18.0.1:7979 (repeatable).
    #[arg(long = "to", required = true, value_name = "ADDR:PORT")]
    targets: Vec<SocketAddr>,
    /// Time between heartbeats.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Random jitter on each gap, in percent of the interval (0-50).
    #[arg(long, default_value_t = 10.0)]
    jitter: f64,
    /// Fixed incarnation number (default: start time in Unix microseconds,
    /// so every start is a new incarnation).
    #[arg(long)]
    incarnation: Option<u64>,
    /// Stop after this many heartbeats.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long, e.g. 30s.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Local address to send from.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Sign heartbeats with the key in this file (see `hb keygen`; owned by
    /// root, mode 0600). Without it, heartbeats are unauthenticated.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
}

#[derive(Args)]
struct KeygenArgs {
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

#[derive(Args)]
struct StatusArgs {
    /// The agent's status socket.
    #[arg(long, default_value = config::DEFAULT_STATUS_SOCKET)]
    socket: PathBuf,
    /// Print the raw JSON report.
    #[arg(long)]
    json: bool,
    /// List at most this many nodes (those not up first); all are counted.
    #[arg(long, default_value_t = status::DEFAULT_LIMIT)]
    limit: usize,
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
        Command::Agent(args) => {
            let overrides = Overrides {
                interfaces: args.interfaces,
                port: args.port,
                interval: args.interval,
                timeout_multiplier: args.timeout_multiplier,
                sweep_period: args.sweep_period,
                max_nodes: args.max_nodes,
                datapath: args.datapath.map(|kind| match kind {
                    DatapathArg::Xdp => config::DatapathKind::Xdp,
                    DatapathArg::Socket => config::DatapathKind::Socket,
                }),
                xdp_mode: args.xdp_mode.map(|mode| match mode {
                    XdpModeArg::Auto => config::XdpMode::Auto,
                    XdpModeArg::Native => config::XdpMode::Native,
                    XdpModeArg::Generic => config::XdpMode::Generic,
                }),
                pass_heartbeats: args.pass_heartbeats,
                status_socket: args.status_socket,
                state_file: args.state_file,
            };
            let config = Config::load(&args.config, &overrides)?;
            hb::agent::run(config).await
        }
        Command::Send(args) => {
            hb::sender::run(SendOptions {
                node_id: args.node_id,
                targets: args.targets,
                interval: args.interval,
                jitter: args.jitter / 100.0,
                incarnation: args.incarnation,
                count: args.count,
                duration: args.duration,
                bind: args.bind,
                key: read_key(args.key_file.as_deref())?,
            })
            .await
        }
        Command::Status(args) => {
            let report = status::fetch(&args.socket, args.limit).await?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).context("encoding JSON")?
                );
            } else {
                print!("{}", status::render(&report));
            }
            Ok(())
        }
        Command::Keygen(args) => {
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
        Command::ExampleConfig => {
            print!("{}", Config::example());
            Ok(())
        }
    }
}

/// Reads `--key-file`, if given.
fn read_key(path: Option<&Path>) -> anyhow::Result<Option<KeyFile>> {
    Ok(path.map(KeyFile::read).transpose()?)
}

/// Logs to stderr; `RUST_LOG` filters (default `info`). The XDP program's
/// aya-log records arrive through the `log` crate and are bridged here.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
