//! `hb agent`: the pipeline put together and run. [`Agent::start`] checks
//! the configuration against the machine, loads the keys, prepares the
//! datapath (the XDP program, or a UDP socket), restores the node states and
//! starts receiving; [`Agent::run`] is one loop whose every tick sweeps the
//! node table ([`Sweep`]) and hands the outcome to the [`Sinks`] (log, event
//! log, failover actions, state file), while it answers `hb status` and
//! reloads the keys when told to. The caller owns the signals: it sends
//! [`Control`] messages (`hb agent` maps SIGHUP to [`Control::Reload`],
//! SIGINT and SIGTERM to [`Control::Shutdown`]).
//!
//! The loop never waits on an action (actions run in their own tasks) or on
//! the state file (saved in a blocking task), and never makes a syscall per
//! node (the table is memory-mapped).

pub mod http;
pub mod query;
mod reload;
mod startup;
pub mod status;
#[cfg(test)]
mod tests;

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context;
use hb_common::{admission::Unauthenticated, counters::Counter, table::seen};
use tokio::{
    sync::mpsc,
    task::JoinHandle,
    time::{Interval, MissedTickBehavior},
};

use self::{
    http::SharedToken,
    query::Query,
    status::{AuthStatus, BrakeStatus, StatusReport},
};
use crate::{
    clock::{self, monotonic_ns},
    config::{Config, Overrides},
    datapath::Datapath,
    detect::{detector::NodeState, sweep::Sweep},
    keys::{self, Keyring},
    nodes::NodeDirectory,
    sinks::{
        ClusterView, Sinks,
        actions::{ActionRunner, webhook},
        event_log::EventLog,
        metrics::{Format, Metrics, NodeSample, Scrape},
        state_file::{self, StateSaver},
        stream::{EventStream, Summary},
    },
};

/// On shutdown, running actions get at most this long to finish.
const SHUTDOWN_ACTION_WAIT: Duration = Duration::from_secs(10);
/// Questions from the status socket and the HTTP API waiting for the loop.
const QUERY_QUEUE: usize = 64;
/// Event stream subscribers get a summary at most this often.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// What the agent's owner tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Re-read the whole configuration file (what is applied, what needs a restart: the `reload` module).
    Reload,
    /// Save the state, stop the datapath, and return.
    Shutdown,
}

/// Starts the agent and runs it until `control` says to stop (or closes).
/// `overrides` (the command line's) are applied again at every reload.
pub async fn run(
    config: Config,
    overrides: Overrides,
    control: mpsc::Receiver<Control>,
) -> anyhow::Result<()> {
    Agent::start(config, overrides)?.run(control).await
}

/// A running agent: the datapath receiving, the sweep, the sinks, and the
/// status socket.
pub struct Agent {
    config: Config,
    overrides: Overrides,
    nodes: NodeDirectory<'static>,
    /// The bearer token the HTTP API checks, replaced by a reload.
    token: SharedToken,
    /// The HTTP API's server task, if it runs; a reload may move it.
    http: Option<JoinHandle<()>>,
    /// How the status socket and the HTTP API reach the loop.
    ask: mpsc::Sender<Query>,
    datapath: Datapath,
    sweep: Sweep,
    sinks: Sinks,
    queries: mpsc::Receiver<Query>,
    auth: AuthStatus,
    started: Instant,
    /// Every configured id, ascending: the HTTP API's node pages.
    sorted_ids: Vec<u32>,
    /// Sweeps so far, and when the last one ran (monotonic ns): readiness.
    sweeps: u64,
    last_sweep_ns: u64,
    last_summary: Instant,
}

impl Agent {
    /// Sets everything up and starts receiving heartbeats. On error the
    /// socket datapath is stopped; a pinned XDP datapath stays as it was
    /// found or made (it outlives agents by design; `hb detach` removes it).
    pub fn start(config: Config, overrides: Overrides) -> anyhow::Result<Self> {
        config.check_interfaces_exist()?;
        state_file::check_writable(&config.state_file)?;
        let nodes = NodeDirectory::owned(&config.nodes, &config.node_ranges);
        startup::warn_about(&config, &nodes);
        let started = Instant::now();

        let keyring = Keyring::load(&config.auth.keys)?;
        startup::log_auth_policy(&keyring, config.auth.unauthenticated());
        let remembered = startup::remembered(&config.state_file, &config.actions)?;
        let mut datapath = Datapath::prepare(&config.datapath_settings())?;
        datapath.set_keys(&keyring.slots())?;
        let sweep = startup::restore(
            (config.detector_settings()?, config.brake.settings()),
            &nodes,
            &remembered,
            &keyring,
            datapath.table(),
            startup::Continuity {
                table_kept: datapath.adopted(),
                recorded_throughout: datapath.recorded_throughout(),
            },
        );
        webhook::check_authorization_files(&config.actions)?;
        let saver = StateSaver::start(
            config.state_file.clone(),
            &state_file::snapshot(
                &nodes,
                sweep.detector(),
                sweep.brake(),
                datapath.table(),
                (remembered.journal_seq, remembered.pending.clone()),
            ),
        )?;
        let sinks = open_sinks(&config, saver)?;
        sinks.resume(
            &remembered.pending,
            &cluster_view(&nodes, &datapath, &sweep),
        );
        let token = config
            .http
            .token_file
            .as_deref()
            .map(keys::read_token)
            .transpose()?;
        let token: SharedToken = Arc::new(RwLock::new(token));
        datapath.start()?;
        let (ask, queries) = mpsc::channel(QUERY_QUEUE);
        status::listen(&config.status_socket, ask.clone())?;
        let http = config
            .http
            .listen
            .map(|address| http::listen(address, Arc::clone(&token), ask.clone()))
            .transpose()?;
        tracing::info!(
            nodes = nodes.len(),
            datapath = config.datapath.as_str(),
            port = config.port,
            sweep_period = ?config.defaults.sweep_period,
            status_socket = %config.status_socket.display(),
            "agent running"
        );
        Ok(Agent {
            sweep,
            auth: AuthStatus {
                key_ids: keyring.ids(),
                accept_unauthenticated: config.auth.unauthenticated() == Unauthenticated::Accept,
            },
            config,
            overrides,
            token,
            http,
            ask,
            datapath,
            sinks,
            queries,
            sorted_ids: nodes.sorted_ids(),
            nodes,
            sweeps: 0,
            last_sweep_ns: 0,
            last_summary: Instant::now(),
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
                Some(query) = self.queries.recv() => self.answer(query),
                command = control.recv() => match command {
                    Some(Control::Reload) => {
                        let period = self.config.defaults.sweep_period;
                        self.reload();
                        if self.config.defaults.sweep_period != period {
                            ticker = sweep_ticker(self.config.defaults.sweep_period);
                        }
                    }
                    Some(Control::Shutdown) | None => break,
                },
            }
        }
        self.shut_down().await
    }

    /// Sweeps the table and hands the outcome to the sinks.
    fn tick(&mut self) {
        let now = monotonic_ns();
        let outcome = self.sweep.run(now, self.datapath.table());
        let cluster = cluster_view(&self.nodes, &self.datapath, &self.sweep);
        self.sinks.consume(&outcome, &cluster, self.sweep.brake());
        (self.sweeps, self.last_sweep_ns) = (self.sweeps + 1, now);
        if self.sinks.stream.has_subscribers() && self.last_summary.elapsed() >= SUMMARY_EVERY {
            self.last_summary = Instant::now();
            self.sinks.stream.summarize(self.summary());
        }
    }

    /// Answers one question from the status socket or the HTTP API. A
    /// client that gave up meanwhile is no error.
    fn answer(&self, query: Query) {
        let cluster = cluster_view(&self.nodes, &self.datapath, &self.sweep);
        let now = monotonic_ns();
        match query {
            Query::Status { limit, reply } => {
                let _ = reply.send(self.status_report(&cluster, limit));
            }
            Query::Nodes { page, reply } => {
                let _ = reply.send(query::node_page(&cluster, &self.sorted_ids, page, now));
            }
            Query::Node { key, reply } => {
                let detail = query::node_detail(&cluster, &self.sinks.stream, &key, now);
                let _ = reply.send(detail);
            }
            Query::Ready { reply } => {
                let stall_ns = self.sweep.detector().settings().stall_ns;
                let _ = reply.send(query::readiness(
                    self.sweeps,
                    self.last_sweep_ns,
                    now,
                    stall_ns,
                    &self.sinks.saver.health(),
                ));
            }
            Query::Subscribe { since, reply } => {
                let _ = reply.send(self.sinks.stream.subscribe(since));
            }
            Query::Metrics { format, reply } => {
                let _ = reply.send(self.scrape(&cluster, format, now));
            }
        }
    }

    /// One `/metrics` scrape: the levels read now, the rest recorded as it
    /// happened. Per-node series only within `[http] per_node_metrics`.
    fn scrape(
        &self,
        cluster: &ClusterView<'_, '_>,
        format: Format,
        now: u64,
    ) -> Result<String, std::fmt::Error> {
        let detector = cluster.detector;
        let states = NodeState::ALL.map(|s| (s, detector.count(s) as u64));
        let counters = self.datapath.counters().unwrap_or_else(|e| {
            tracing::error!("{:#}", anyhow::Error::from(e));
            Default::default()
        });
        let limit = self.config.http.per_node_metrics as usize;
        let names: Vec<(u32, String)> = if limit > 0 && self.sorted_ids.len() <= limit {
            self.sorted_ids
                .iter()
                .filter_map(|&id| Some((id, cluster.nodes.get(id)?.name.into_owned())))
                .collect()
        } else {
            Vec::new()
        };
        let samples: Vec<NodeSample<'_>> = names
            .iter()
            .map(|(id, name)| {
                let arrival = seen::arrival_ns(cluster.table.seen.get(*id));
                NodeSample {
                    name,
                    up: detector.state(*id).is_live(),
                    last_heard_seconds: (arrival != 0)
                        .then(|| now.saturating_sub(arrival) as f64 / 1e9),
                }
            })
            .collect();
        let brake = self.sweep.brake();
        self.sinks.metrics.encode(
            &Scrape {
                states: &states,
                counters: &counters,
                brake_engaged: brake.engaged(),
                brake_held: brake.held() as u64,
                state_saving: &self.sinks.saver.health(),
                per_node: (!names.is_empty()).then_some(&samples[..]),
            },
            format,
        )
    }

    /// The status report: the cluster's part, and what only the agent knows.
    fn status_report(&self, cluster: &ClusterView<'_, '_>, limit: usize) -> StatusReport {
        StatusReport {
            uptime_ms: self.started.elapsed().as_millis() as u64,
            actions: self.sinks.actions.stats(),
            auth: self.auth.clone(),
            brake: BrakeStatus::from(self.sweep.brake()),
            state_file: self.sinks.saver.health(),
            ..status::report(cluster, &self.datapath, limit)
        }
    }

    /// Counts by state and the datapath counters, for the event stream.
    fn summary(&self) -> Summary {
        let counters = self.datapath.counters().unwrap_or_default();
        Summary {
            unix_ms: clock::unix_ns() / 1_000_000,
            cursor: self.sinks.stream.last_cursor(),
            states: NodeState::ALL
                .iter()
                .map(|&s| (s.name().to_owned(), self.sweep.detector().count(s) as u64))
                .collect(),
            counters: Counter::ALL
                .iter()
                .zip(counters)
                .map(|(c, v)| (c.name().to_owned(), v))
                .collect(),
        }
    }

    /// SIGHUP: the whole configuration again (the `reload` module says what
    /// is applied and what needs a restart).
    fn reload(&mut self) {
        reload::reload(self);
    }

    /// Gives queued and running actions a little time, saves the state
    /// (with the runs that did not start, for the next agent), and stops
    /// the datapath.
    async fn shut_down(mut self) -> anyhow::Result<()> {
        tracing::info!("shutting down");
        if let Some(http) = self.http.take() {
            http.abort();
        }
        // Queued runs start (and all get a little time to end) first; the
        // save then keeps what still did not start for the next agent.
        self.sinks.actions.wait_idle(SHUTDOWN_ACTION_WAIT).await;
        let cluster = cluster_view(&self.nodes, &self.datapath, &self.sweep);
        self.sinks.save(&cluster, self.sweep.brake()).await;
        self.datapath.stop()?;
        let _ = std::fs::remove_file(&self.config.status_socket);
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
fn open_sinks(config: &Config, saver: StateSaver) -> anyhow::Result<Sinks> {
    let events = EventLog::open(config.event_log.as_deref()).with_context(|| {
        let path = config.event_log.as_deref().unwrap_or("".as_ref());
        format!("opening the event log {}", path.display())
    })?;
    let metrics = Arc::new(Metrics::new(config.http.per_node_metrics));
    Ok(Sinks {
        events,
        stream: EventStream::default(),
        actions: ActionRunner::new(config.actions.clone(), config.max_concurrent_actions)
            .with_metrics(metrics.actions())
            .with_ledger(saver.ledger()),
        metrics,
        saver,
    })
}

/// Ticks every sweep period; a late tick is not made up for with a burst.
fn sweep_ticker(period: Duration) -> Interval {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}
