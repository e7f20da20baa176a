//! `hb agent`: the pipeline put together and run. [`Agent::start`] checks
//! the configuration against the machine, loads the keys, prepares the
//! datapath (the XDP program, or a UDP socket), restores the node states and
//! starts receiving; [`Agent::run`] is one loop whose every tick sweeps the
//! node table ([`Sweep`]) and hands the outcome to the [`Sinks`] (log, event
//! log, failover actions, state file), while it answers `hb status` and
//! reloads the keys when told to. The caller owns the signals: it sends
//! [`Control`] messages (`hb agent` maps SIGHUP to [`Control::ReloadKeys`],
//! SIGINT and SIGTERM to [`Control::Shutdown`]).
//!
//! The loop never waits on an action (actions run in their own tasks) or on
//! the state file (saved in a blocking task), and never makes a syscall per
//! node (the table is memory-mapped).

mod reload;
mod startup;
pub mod status;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use anyhow::Context;
use hb_common::admission::Unauthenticated;
use tokio::{
    sync::mpsc,
    time::{Interval, MissedTickBehavior},
};

use self::status::{AuthStatus, BrakeStatus, Request, StatusReport};
use crate::{
    clock::monotonic_ns,
    config::Config,
    datapath::Datapath,
    detect::{brake::Brake, sweep::Sweep},
    keys::Keyring,
    nodes::NodeDirectory,
    sinks::{
        ClusterView, Sinks, actions::ActionRunner, event_log::EventLog, state_file::StateSaver,
    },
};

/// On shutdown, running actions get at most this long to finish.
const SHUTDOWN_ACTION_WAIT: Duration = Duration::from_secs(10);

/// What the agent's owner tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Re-read the config file's `[auth] keys` and install them.
    ReloadKeys,
    /// Save the state, stop the datapath, and return.
    Shutdown,
}

/// Starts the agent and runs it until `control` says to stop (or closes).
pub async fn run(config: Config, control: mpsc::Receiver<Control>) -> anyhow::Result<()> {
    Agent::start(&config)?.run(control).await
}

/// A running agent: the datapath receiving, the sweep, the sinks, and the
/// status socket.
pub struct Agent<'c> {
    config: &'c Config,
    nodes: NodeDirectory<'c>,
    datapath: Datapath,
    sweep: Sweep,
    sinks: Sinks,
    status_requests: mpsc::Receiver<Request>,
    auth: AuthStatus,
    started: Instant,
}

impl<'c> Agent<'c> {
    /// Sets everything up and starts receiving heartbeats; on error, nothing
    /// stays attached.
    pub fn start(config: &'c Config) -> anyhow::Result<Self> {
        config.check_interfaces_exist()?;
        let nodes = NodeDirectory::new(&config.nodes, &config.node_ranges);
        startup::warn_about(config, &nodes);
        let started = Instant::now();

        let keyring = Keyring::load(&config.auth.keys)?;
        startup::log_auth_policy(&keyring, config.auth.unauthenticated());
        let mut datapath = Datapath::prepare(&config.datapath_settings())?;
        datapath.set_keys(&keyring.slots())?;
        let detector = startup::watch_nodes(
            config.detector_settings()?,
            &nodes,
            &startup::saved_nodes(config)?,
            &keyring,
            datapath.table(),
        );
        let sinks = open_sinks(config)?;
        datapath.start()?;
        let status_requests = status::listen(&config.status_socket)?;
        tracing::info!(
            nodes = nodes.len(),
            datapath = config.datapath.as_str(),
            port = config.port,
            sweep_period = ?config.defaults.sweep_period,
            status_socket = %config.status_socket.display(),
            "agent running"
        );
        Ok(Agent {
            config,
            nodes,
            datapath,
            sweep: Sweep::new(detector, Brake::new(config.brake.settings())),
            sinks,
            status_requests,
            auth: AuthStatus {
                key_ids: keyring.ids(),
                accept_unauthenticated: config.auth.unauthenticated() == Unauthenticated::Accept,
            },
            started,
        })
    }

    /// The loop: sweep on every tick, answer status requests, obey
    /// `control`; then shut down.
    pub async fn run(mut self, mut control: mpsc::Receiver<Control>) -> anyhow::Result<()> {
        let mut ticker = sweep_ticker(self.config.defaults.sweep_period);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick(),
                Some(request) = self.status_requests.recv() => self.answer(request),
                command = control.recv() => match command {
                    Some(Control::ReloadKeys) => self.reload_keys(),
                    Some(Control::Shutdown) | None => break,
                },
            }
        }
        self.shut_down().await
    }

    /// Sweeps the table and hands the outcome to the sinks.
    fn tick(&mut self) {
        let outcome = self.sweep.run(monotonic_ns(), self.datapath.table());
        let cluster = cluster_view(&self.nodes, &self.datapath, &self.sweep);
        self.sinks.consume(&outcome, &cluster, self.sweep.brake());
    }

    /// Answers one `hb status` request.
    fn answer(&self, request: Request) {
        let cluster = cluster_view(&self.nodes, &self.datapath, &self.sweep);
        let report = StatusReport {
            uptime_ms: self.started.elapsed().as_millis() as u64,
            actions: self.sinks.actions.stats(),
            auth: self.auth.clone(),
            brake: BrakeStatus::from(self.sweep.brake()),
            ..status::report(&cluster, &self.datapath, request.limit)
        };
        let _ = request.reply.send(report);
    }

    fn reload_keys(&mut self) {
        if let Some(key_ids) = reload::reload_keys(self.config, &mut self.datapath) {
            self.auth.key_ids = key_ids;
        }
    }

    /// Saves the state, stops the datapath (detaching XDP) and waits a
    /// little for running actions.
    async fn shut_down(mut self) -> anyhow::Result<()> {
        tracing::info!("shutting down");
        let cluster = cluster_view(&self.nodes, &self.datapath, &self.sweep);
        self.sinks.save(&cluster).await;
        self.datapath.stop()?;
        let _ = std::fs::remove_file(&self.config.status_socket);
        self.sinks.actions.wait_idle(SHUTDOWN_ACTION_WAIT).await;
        Ok(())
    }
}

/// What the sinks and the status report read: built from the fields, not
/// from `&self`, so that the sinks can be borrowed mutably beside it.
fn cluster_view<'a, 'n>(
    nodes: &'a NodeDirectory<'n>,
    datapath: &'a Datapath,
    sweep: &'a Sweep,
) -> ClusterView<'a, 'n> {
    ClusterView {
        nodes,
        table: datapath.table(),
        detector: sweep.detector(),
    }
}

/// The event log, the action runner and the state saver.
fn open_sinks(config: &Config) -> anyhow::Result<Sinks> {
    let events = EventLog::open(config.event_log.as_deref()).with_context(|| {
        let path = config.event_log.as_deref().unwrap_or("".as_ref());
        format!("opening the event log {}", path.display())
    })?;
    Ok(Sinks {
        events,
        actions: ActionRunner::new(config.actions.clone(), config.max_concurrent_actions),
        saver: StateSaver::new(config.state_file.clone()),
    })
}

/// Ticks every sweep period; a late tick is not made up for with a burst.
fn sweep_ticker(period: Duration) -> Interval {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}
