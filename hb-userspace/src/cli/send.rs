//! `hb send`: heartbeats for one node, to one or more monitors, until told
//! to stop (a graceful leave on SIGINT/SIGTERM) or a bound is reached.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::Args;

use crate::{
    keys::KeyFile,
    sender::{self, SendOptions},
};

#[derive(Args)]
pub struct SendArgs {
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

pub async fn execute(args: SendArgs) -> anyhow::Result<()> {
    sender::run(SendOptions {
        node_id: args.node_id,
        targets: args.targets,
        interval: args.interval,
        jitter: args.jitter / 100.0,
        incarnation: args.incarnation,
        count: args.count,
        duration: args.duration,
        bind: args.bind,
        key: args.key_file.as_deref().map(KeyFile::read).transpose()?,
    })
    .await
}
