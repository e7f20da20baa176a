//! `hb-tools loadgen`: the flags, turned into [`LoadgenOptions`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;
use hb::keys::KeyFile;
use hb_tools::loadgen::{self, LoadgenOptions, Pace};

#[derive(Args)]
pub struct LoadgenArgs {
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
    /// List every pause in the report (`pause_windows`): the node, when the
    /// pause began and ended, and when the node's last heartbeat before it
    /// and its first after it were handed to the kernel.
    #[arg(long, requires = "pause_for")]
    report_pauses: bool,
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

impl LoadgenArgs {
    /// Runs the load generator (until its bound or a signal).
    pub async fn execute(self) -> anyhow::Result<()> {
        loadgen::run(LoadgenOptions {
            nodes: self.nodes,
            first_id: self.first_id,
            targets: self.targets,
            pace: self.rate.map_or(Pace::Interval(self.interval), Pace::Rate),
            duration: self.duration,
            count: self.count,
            batch: self.batch,
            stop_fraction: self.stop_fraction,
            stop_after: self.stop_after,
            loss: self.loss / 100.0,
            burst_loss: self.burst_loss / 100.0,
            pause_every: self.pause_every,
            pause_for: self.pause_for,
            report_pauses: self.report_pauses,
            seed: self.seed,
            leave_at_end: self.leave_at_end,
            report: self.report,
            gso: !self.no_gso,
            key: self.key_file.as_deref().map(KeyFile::read).transpose()?,
        })
        .await
    }
}
