//! `hb agent`: loads the configuration (the file, then the flags over it)
//! and runs the agent, or with `--check-config` only checks it. This is
//! where the signals are: SIGHUP reloads the configuration, SIGINT and
//! SIGTERM stop the agent cleanly (state saved; the XDP program stays
//! attached and recording until `hb detach`).

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Args;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc,
};

use crate::{
    agent::{self, Control},
    config::{Config, DatapathKind, Overrides, XdpMode},
    keys::{self, Keyring},
    nodes::NodeDirectory,
    sinks::{actions::webhook, state_file},
};

#[derive(Args)]
pub struct AgentArgs {
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
    datapath: Option<DatapathKind>,
    /// XDP attach mode.
    #[arg(long, value_enum)]
    xdp_mode: Option<XdpMode>,
    /// The name the XDP datapath is pinned under (/sys/fs/bpf/hb/NAME) and
    /// locked by; replaces the config's `instance`.
    #[arg(long, value_name = "NAME")]
    instance: Option<String>,
    /// Pass heartbeats on to the network stack after recording them.
    #[arg(long)]
    pass_heartbeats: bool,
    /// Where `hb status` reaches the agent.
    #[arg(long)]
    status_socket: Option<PathBuf>,
    /// Where node states are saved across restarts.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Check the configuration as the agent would at start (the file, the
    /// flags, that the interfaces exist, the key and token files), print a
    /// summary and exit: 0 if it is valid, 1 with the problem if not.
    /// Loads no program, binds nothing, writes nothing.
    #[arg(long)]
    check_config: bool,
}

pub async fn execute(args: AgentArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        interfaces: args.interfaces,
        port: args.port,
        interval: args.interval,
        timeout_multiplier: args.timeout_multiplier,
        sweep_period: args.sweep_period,
        max_nodes: args.max_nodes,
        datapath: args.datapath,
        xdp_mode: args.xdp_mode,
        instance: args.instance,
        pass_heartbeats: args.pass_heartbeats,
        status_socket: args.status_socket,
        state_file: args.state_file,
    };
    let config = Config::load(&args.config, &overrides)?;
    if args.check_config {
        println!("{}", check(&config)?);
        return Ok(());
    }
    agent::run(config, overrides, forward_signals()?).await
}

/// What the agent checks at start before touching the host, in the same
/// order (interfaces, state file, keys, detector settings, token, webhook
/// authorization files): the summary for
/// `--check-config`, or the first problem. Like `keepalived -t` and
/// `haproxy -c`, so that a file can be checked before `systemctl reload`.
fn check(config: &Config) -> anyhow::Result<String> {
    config.check_interfaces_exist()?;
    state_file::check_saveable(&config.state_file)?;
    Keyring::load(&config.auth.keys)?;
    config.detector_settings()?;
    if let Some(path) = &config.http.token_file {
        keys::read_token(path)?;
    }
    webhook::check_authorization_files(&config.actions)?;
    let nodes = NodeDirectory::new(&config.nodes, &config.node_ranges).len();
    let http = match config.http.listen {
        Some(address) => format!("HTTP API on {address}"),
        None => "HTTP API off".to_owned(),
    };
    let mut sweep = match config.defaults.sweep_priority() {
        Some(priority) => format!("sweep thread at SCHED_FIFO {priority}"),
        None => "sweep thread at normal priority".to_owned(),
    };
    if config.defaults.lock_memory {
        sweep.push_str(", memory locked");
    }
    Ok(format!(
        "config OK: {nodes} nodes, {} actions, datapath {}, {http}, {sweep}",
        config.actions.len(),
        config.datapath.as_str(),
    ))
}

/// SIGHUP, SIGINT and SIGTERM as the agent's [`Control`] messages, from a
/// task of their own.
fn forward_signals() -> anyhow::Result<mpsc::Receiver<Control>> {
    let install = |kind: SignalKind, name: &str| -> anyhow::Result<Signal> {
        signal(kind).with_context(|| format!("installing a {name} handler"))
    };
    let mut hangup = install(SignalKind::hangup(), "SIGHUP")?;
    let mut interrupt = install(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = install(SignalKind::terminate(), "SIGTERM")?;
    let (control, received) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let command = tokio::select! {
                _ = hangup.recv() => Control::Reload,
                _ = interrupt.recv() => Control::Shutdown,
                _ = terminate.recv() => Control::Shutdown,
            };
            if control.send(command).await.is_err() {
                return;
            }
        }
    });
    Ok(received)
}
