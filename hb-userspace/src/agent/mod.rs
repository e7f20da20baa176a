//! `hb agent`: the pipeline put together and run. [`Agent::start`] checks
//! the configuration against the machine, loads the keys, prepares the
//! datapath (the XDP program, or a UDP socket), restores the node states,
//! starts receiving and starts the sweep thread ([`sweeper`]), which sweeps
//! the node table ([`Sweep`]) when a node may change state and at least
//! every `sweep_period`. [`Agent::run`] is one loop that hands each outcome
//! the sweep thread tells it to the sinks (log, event log, failover
//! actions, state file), answers `hb status` and the HTTP API, and reloads
//! the configuration when told to. The caller owns the signals: it sends
//! [`Control`] messages (`hb agent` maps SIGHUP to [`Control::Reload`],
//! SIGINT and SIGTERM to [`Control::Shutdown`]).
//!
//! The loop never waits on an action (actions run in their own tasks) or on
//! the state file (saved in a blocking task), and between outcomes and
//! questions it sleeps: no timer runs but the event stream's summary (while
//! it has subscribers) and the next state save (while one is due). The
//! sweep thread never makes a syscall per node (the table is memory-mapped)
//! and, when nothing changed, none but its sleep.

pub mod http;
pub mod query;
mod reload;
mod startup;
pub mod status;
pub mod sweeper;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context;
use hb_common::{admission::Unauthenticated, counters::Counter, table::seen};
use tokio::{sync::mpsc, task::JoinHandle};

use self::{
    http::SharedToken,
    query::Query,
    status::{AuthStatus, BrakeStatus, StatusReport},
    sweeper::{Shared, SweepThread},
};
use crate::{
    clock::{self, monotonic_ns},
    config::{Config, Overrides},
    datapath::Datapath,
    detect::{
        detector::NodeState,
        sweep::{Sweep, SweepOutcome},
    },
    group::{Decision, GroupHandle, GroupMetrics},
    keys::{self, Keyring},
    nodes::NodeDirectory,
    probe::{ProbeSecret, ProbeStats, Prober, ProberSettings},
    sinks::{
        ClusterView, Roster, Sinks,
        actions::{ActionRunner, webhook},
        event_log::EventLog,
        log::{self, LogView},
        metrics::{Format, Metrics, NodeSample, Scrape},
        state_file::{self, StateSaver, Verdicts},
        stream::{EventStream, Summary},
    },
    sys,
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

/// A running agent: the datapath receiving, the sweep thread, the sinks,
/// and the status socket.
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
    /// The detector, the brake and the datapath, shared with the sweep
    /// thread.
    shared: Arc<Shared>,
    sweeper: SweepThread,
    /// What the sweep thread tells, in sweep order.
    outcomes: mpsc::UnboundedReceiver<SweepOutcome>,
    /// Outcomes handed to the sinks so far (see [`sweeper::Core::told`]).
    consumed: u64,
    sinks: Sinks,
    queries: mpsc::Receiver<Query>,
    auth: AuthStatus,
    started: Instant,
    /// Every configured id, ascending: the HTTP API's node pages.
    sorted_ids: Vec<u32>,
    last_summary: Instant,
    /// `defaults.lock_memory` was applied (undone when the agent ends).
    memory_locked: bool,
    /// In a monitor group: the incidents this monitor recorded as leader,
    /// whose actions it runs.
    decisions: Option<mpsc::UnboundedReceiver<Vec<Decision>>>,
    /// The prober, while any node is probed; a reload re-plans it.
    prober: Option<Prober>,
    /// This start's echo identifier and probe secret (kept by reloads).
    probe_secret: ProbeSecret,
    probe_stats: Arc<ProbeStats>,
}

/// Why the loop ended.
enum Ended {
    /// A shutdown, or the owner went away.
    Told,
    /// The sweep thread ended on its own: it panicked.
    SweepThreadGone,
}

impl Agent {
    /// Sets everything up, starts receiving heartbeats and starts the sweep
    /// thread. On error the socket datapath is stopped; a pinned XDP
    /// datapath stays as it was found or made (it outlives agents by
    /// design; `hb detach` removes it).
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
        // A fresh probe secret at every start (the XDP program checks ICMP
        // probe replies with it; installed even when no node is probed yet,
        // so that a reload may add ICMP probes).
        let probe_secret = ProbeSecret::generate();
        if matches!(datapath, Datapath::Xdp { .. }) {
            datapath.set_probe_secret(probe_secret.identifier, &probe_secret.key)?;
        }
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
        let probe_stats = Arc::new(ProbeStats::default());
        let (mut sinks, group_metrics) = open_sinks(&config, saver, &probe_stats)?;
        let decisions = match (&config.group, group_metrics) {
            (Some(group), Some(metrics)) => {
                if !remembered.pending.is_empty() {
                    tracing::info!(
                        runs = remembered.pending.len(),
                        "action runs decided alone before the restart are not started: in a \
                         group, the leader runs actions for the group's verdicts"
                    );
                }
                let initial = startup::opinions(&nodes, sweep.detector(), sweep.brake());
                let join_after = group
                    .join_after
                    .unwrap_or_else(|| startup::longest_timeout(&config, &nodes));
                let (handle, decisions) = GroupHandle::start(group, join_after, initial, metrics)?;
                sinks.group = Some(handle);
                Some(decisions)
            }
            _ => {
                sinks.resume(
                    &remembered.pending,
                    Roster {
                        nodes: &nodes,
                        table: datapath.table(),
                    },
                );
                None
            }
        };
        let token = config
            .http
            .token_file
            .as_deref()
            .map(keys::read_token)
            .transpose()?;
        let token: SharedToken = Arc::new(RwLock::new(token));
        let memory_locked = config.defaults.lock_memory;
        if memory_locked {
            // After the table is mapped, before anything runs: what the
            // sweep reads is resident from its first sweep on.
            sweeper::lock_memory()?;
        }
        datapath.start()?;
        let shared = Shared::new(
            sweep,
            datapath,
            config.defaults.sweep_period,
            Arc::clone(&sinks.metrics),
        )
        .context("creating the sweep's lock")?;
        let shared = Arc::new(shared);
        let (tell, outcomes) = mpsc::unbounded_channel();
        let sweeper = SweepThread::start(&shared, tell, config.defaults.sweep_priority())?;
        let prober = Prober::start(
            &prober_settings(&config, probe_secret.clone()),
            &nodes,
            shared.datapath().table(),
            &HashMap::new(),
            Arc::clone(&probe_stats),
        )?;
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
            sweep_priority = config.defaults.sweep_priority(),
            lock_memory = memory_locked,
            status_socket = %config.status_socket.display(),
            "agent running"
        );
        Ok(Agent {
            shared,
            sweeper,
            outcomes,
            consumed: 0,
            auth: AuthStatus {
                key_ids: keyring.ids(),
                accept_unauthenticated: config.auth.unauthenticated() == Unauthenticated::Accept,
            },
            config,
            overrides,
            token,
            http,
            ask,
            sinks,
            queries,
            sorted_ids: nodes.sorted_ids(),
            nodes,
            last_summary: Instant::now(),
            started,
            memory_locked,
            decisions,
            prober,
            probe_secret,
            probe_stats,
        })
    }

    /// The loop: hand the sweep thread's outcomes to the sinks, answer
    /// questions, obey `control`, summarize for event subscribers and save
    /// the state when due; then shut down.
    pub async fn run(mut self, mut control: mpsc::Receiver<Control>) -> anyhow::Result<()> {
        let ended = loop {
            let summary_at = self
                .sinks
                .stream
                .has_subscribers()
                .then(|| self.last_summary + SUMMARY_EVERY);
            let save_at = self.sinks.save_due_at();
            tokio::select! {
                swept = self.outcomes.recv() => match swept {
                    Some(outcome) => {
                        self.consume(&outcome);
                        self.save_if_due();
                    }
                    None => break Ended::SweepThreadGone,
                },
                Some(query) = self.queries.recv() => self.answer(query),
                Some(decisions) = next_decisions(&mut self.decisions) => {
                    self.act_for_group(&decisions);
                }
                command = control.recv() => match command {
                    Some(Control::Reload) => self.reload(),
                    Some(Control::Shutdown) | None => break Ended::Told,
                },
                () = at(summary_at) => self.summarize(),
                () = at(save_at) => self.save_if_due(),
            }
        };
        self.shut_down(ended).await
    }

    /// Hands one outcome to the log and the other sinks. Only the timeouts
    /// of the nodes the log announces down are read under the sweep's lock.
    fn consume(&mut self, outcome: &SweepOutcome) {
        let nodes = &self.nodes;
        let timeouts = if outcome.transitions.is_empty() {
            Vec::new()
        } else {
            self.shared.with("the log's timeouts", |core, datapath| {
                log::timeouts(outcome, core.sweep.detector(), datapath.table())
            })
        };
        log::sweep(
            outcome,
            &LogView {
                nodes,
                timeouts: &timeouts,
                brake_window: self.config.brake.settings().window,
            },
        );
        let datapath = self.shared.datapath();
        let roster = Roster {
            nodes,
            table: datapath.table(),
        };
        self.sinks.consume(outcome, roster);
        self.consumed += 1;
    }

    /// Runs the actions of incidents this monitor recorded as its group's
    /// leader.
    fn act_for_group(&self, decisions: &[Decision]) {
        let datapath = self.shared.datapath();
        let roster = Roster {
            nodes: &self.nodes,
            table: datapath.table(),
        };
        self.sinks.act_for_group(decisions, roster, monotonic_ns());
    }

    /// Saves the node states if due and every outcome told so far has been
    /// consumed (else after the next one is).
    fn save_if_due(&mut self) {
        if self
            .sinks
            .save_due_at()
            .is_none_or(|at| at > Instant::now())
        {
            return;
        }
        let Some(verdicts) = self.verdicts() else {
            return;
        };
        let datapath = self.shared.datapath();
        let roster = Roster {
            nodes: &self.nodes,
            table: datapath.table(),
        };
        self.sinks.save_if_due(roster, verdicts);
    }

    /// What a snapshot keeps of the detector and the brake, copied under
    /// the sweep's lock; `None` while outcomes the detector already
    /// reflects wait to be journaled.
    fn verdicts(&self) -> Option<Verdicts> {
        let (nodes, consumed) = (&self.nodes, self.consumed);
        self.shared
            .with("copying the node states to save", |core, _| {
                (core.told == consumed)
                    .then(|| Verdicts::copy(nodes, core.sweep.detector(), core.sweep.brake()))
            })
    }

    /// Answers one question from the status socket or the HTTP API. A
    /// client that gave up meanwhile is no error.
    fn answer(&self, query: Query) {
        let nodes = &self.nodes;
        let now = monotonic_ns();
        match query {
            Query::Status { limit, reply } => {
                let _ = reply.send(self.status_report(limit));
            }
            Query::Nodes { page, reply } => {
                let sorted_ids = &self.sorted_ids;
                let page = self.shared.with("a page of nodes", |core, datapath| {
                    let cluster = cluster_view(nodes, datapath, &core.sweep);
                    query::node_page(&cluster, sorted_ids, page, now)
                });
                let _ = reply.send(page);
            }
            Query::Node { key, reply } => {
                let stream = &self.sinks.stream;
                let detail = self.shared.with("a node", |core, datapath| {
                    let cluster = cluster_view(nodes, datapath, &core.sweep);
                    query::node_detail(&cluster, stream, &key, now)
                });
                let _ = reply.send(detail);
            }
            Query::Ready { reply } => {
                let (sweeps, last_sweep_ns) = self.shared.readiness();
                let stall_ns = self.shared.with("readiness", |core, _| {
                    core.sweep.detector().settings().stall_ns
                });
                let _ = reply.send(query::readiness(
                    sweeps,
                    last_sweep_ns,
                    now,
                    stall_ns,
                    &self.sinks.saver.health(),
                ));
            }
            Query::Subscribe { since, reply } => {
                let _ = reply.send(self.sinks.stream.subscribe(since));
            }
            Query::Metrics { format, reply } => {
                let _ = reply.send(self.scrape(format, now));
            }
            Query::Fleet { reply } => {
                let sorted_ids = &self.sorted_ids;
                let cursor = self.sinks.stream.last_cursor();
                let (read, kind) = self.shared.with("the fleet's states", |core, _| {
                    let detector = core.sweep.detector();
                    (
                        query::fleet_states(detector, sorted_ids),
                        query::detector_kind(detector),
                    )
                });
                let _ = reply.send(query::fleet(sorted_ids, read, cursor, kind));
            }
        }
    }

    /// One `/metrics` scrape: the levels read now (under the sweep's lock,
    /// only what is the detector's and the brake's), the rest recorded as
    /// it happened; encoded after the lock is let go. Per-node series only
    /// within `[http] per_node_metrics`.
    fn scrape(&self, format: Format, now: u64) -> Result<String, std::fmt::Error> {
        let limit = self.config.http.per_node_metrics as usize;
        let per_node = limit > 0 && self.sorted_ids.len() <= limit;
        let (nodes, sorted_ids) = (&self.nodes, &self.sorted_ids);
        let (states, brake, samples) = self.shared.with("a scrape", |core, datapath| {
            let (detector, brake) = (core.sweep.detector(), core.sweep.brake());
            let states = NodeState::ALL.map(|s| (s, detector.count(s) as u64));
            let table = datapath.table();
            let samples: Vec<(String, bool, Option<f64>)> = if per_node {
                sorted_ids
                    .iter()
                    .filter_map(|&id| {
                        let name = nodes.get(id)?.name.into_owned();
                        let arrival = seen::arrival_ns(table.seen.get(id));
                        let heard =
                            (arrival != 0).then(|| now.saturating_sub(arrival) as f64 / 1e9);
                        Some((name, detector.state(id).is_live(), heard))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            (states, (brake.engaged(), brake.held() as u64), samples)
        });
        let counters = self.shared.datapath().counters().unwrap_or_else(|e| {
            tracing::error!("{:#}", anyhow::Error::from(e));
            Default::default()
        });
        let samples: Vec<NodeSample<'_>> = samples
            .iter()
            .map(|(name, up, heard)| NodeSample {
                name,
                up: *up,
                last_heard_seconds: *heard,
            })
            .collect();
        self.sinks.metrics.encode(
            &Scrape {
                states: &states,
                counters: &counters,
                brake_engaged: brake.0,
                brake_held: brake.1,
                state_saving: &self.sinks.saver.health(),
                per_node: per_node.then_some(&samples[..]),
            },
            format,
        )
    }

    /// The status report: the cluster's part (under the sweep's lock), the
    /// datapath's and what only the agent knows.
    fn status_report(&self, limit: usize) -> StatusReport {
        let nodes = &self.nodes;
        let (cluster_part, brake) = self.shared.with("a status report", |core, datapath| {
            let cluster = cluster_view(nodes, datapath, &core.sweep);
            (
                status::report(&cluster, limit),
                BrakeStatus::from(core.sweep.brake()),
            )
        });
        StatusReport {
            uptime_ms: self.started.elapsed().as_millis() as u64,
            actions: self.sinks.actions.stats(),
            auth: self.auth.clone(),
            brake,
            state_file: self.sinks.saver.health(),
            group: self.sinks.group.as_ref().map(|group| {
                group.status(|id| {
                    nodes
                        .get(id)
                        .map_or_else(|| id.to_string(), |n| n.name.into_owned())
                })
            }),
            probes: self.prober.as_ref().map(Prober::status),
            ..status::with_datapath(cluster_part, &self.shared.datapath())
        }
    }

    /// Sends the event stream's subscribers counts by state and the
    /// datapath counters.
    fn summarize(&mut self) {
        self.last_summary = Instant::now();
        if !self.sinks.stream.has_subscribers() {
            return;
        }
        let states = self.shared.with("a summary", |core, _| {
            NodeState::ALL.map(|s| (s, core.sweep.detector().count(s) as u64))
        });
        let counters = self.shared.datapath().counters().unwrap_or_default();
        self.sinks.stream.summarize(Summary {
            unix_ms: clock::unix_ns() / 1_000_000,
            cursor: self.sinks.stream.last_cursor(),
            states: states
                .iter()
                .map(|&(s, n)| (s.name().to_owned(), n))
                .collect(),
            counters: Counter::ALL
                .iter()
                .zip(counters)
                .map(|(c, v)| (c.name().to_owned(), v))
                .collect(),
        });
    }

    /// SIGHUP: the whole configuration again (the `reload` module says what
    /// is applied and what needs a restart); the sweep thread sweeps at
    /// once with what changed.
    fn reload(&mut self) {
        reload::reload(self);
    }

    /// Stops the sweep thread and hands what it told last to the sinks;
    /// gives queued and running actions a little time, saves the state
    /// (with the runs that did not start, for the next agent), and stops
    /// the datapath. After a panic of the sweep thread, no snapshot is
    /// saved (the detector may be half-way through a sweep): the journal
    /// has every change, as after a crash, and the agent ends with an
    /// error so that its supervisor restarts it.
    async fn shut_down(mut self, ended: Ended) -> anyhow::Result<()> {
        tracing::info!("shutting down");
        if let Some(http) = self.http.take() {
            http.abort();
        }
        if let Some(prober) = self.prober.take() {
            prober.stop();
        }
        let joined = self.sweeper.stop().await;
        while let Ok(outcome) = self.outcomes.try_recv() {
            self.consume(&outcome);
        }
        // Leaving the group hands the lead over at once; incidents recorded
        // before it left still run here (they are recorded: nobody else
        // will run them).
        if let Some(group) = self.sinks.group.take() {
            group.stop().await;
        }
        if let Some(mut decisions) = self.decisions.take() {
            while let Ok(decisions) = decisions.try_recv() {
                self.act_for_group(&decisions);
            }
        }
        // Queued runs start (and all get a little time to end) first; the
        // save then keeps what still did not start for the next agent.
        self.sinks.actions.wait_idle(SHUTDOWN_ACTION_WAIT).await;
        let result = match joined {
            Ok(()) => {
                if let Some(verdicts) = self.verdicts() {
                    let (shared, nodes) = (&self.shared, &self.nodes);
                    self.sinks
                        .save(|journal| {
                            let datapath = shared.datapath();
                            state_file::snapshot_of(nodes, verdicts, datapath.table(), journal)
                        })
                        .await;
                }
                if let Ended::SweepThreadGone = ended {
                    Err(anyhow::anyhow!("the sweep thread ended unexpectedly"))
                } else {
                    Ok(())
                }
            }
            Err(panic) => {
                self.sinks.events.flush();
                tracing::error!(
                    "the sweep thread panicked ({panic}): the agent stops so that its supervisor \
                     restarts it; node states are in the state file's journal, and a pinned XDP \
                     datapath keeps recording meanwhile"
                );
                Err(anyhow::anyhow!("the sweep thread panicked: {panic}"))
            }
        };
        tracing::debug!(
            longest_hold_us = self.shared.longest_hold().as_micros() as u64,
            "the longest hold of the sweep's lock by the agent"
        );
        self.shared.datapath_mut().stop()?;
        let _ = std::fs::remove_file(&self.config.status_socket);
        if self.memory_locked
            && let Err(e) = sys::unlock_all_memory()
        {
            tracing::warn!("munlockall: {e}");
        }
        result
    }
}

/// The next batch of incidents to act on; never, outside a group.
async fn next_decisions(
    decisions: &mut Option<mpsc::UnboundedReceiver<Vec<Decision>>>,
) -> Option<Vec<Decision>> {
    match decisions {
        Some(decisions) => decisions.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `when`, or for ever without one (a `select!` branch that
/// never fires).
async fn at(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when.into()).await,
        None => std::future::pending().await,
    }
}

/// What the sinks and the status report read: built from the pieces, not
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

/// What the prober is built from.
fn prober_settings(config: &Config, secret: ProbeSecret) -> ProberSettings {
    ProberSettings {
        secret,
        max_rate: config.probe.max_rate,
        max_concurrent: config.probe.max_concurrent,
        timeout_multiplier: config.defaults.timeout_multiplier,
        default_interval: config.defaults.interval,
    }
}

/// The event log, the action runner and the state saver; with `[group]`,
/// the group's metrics (the session itself starts once the node states are
/// restored). In a group the runner keeps no ledger: the group's incident
/// records are what says whether an action started.
fn open_sinks(
    config: &Config,
    saver: StateSaver,
    probe_stats: &Arc<ProbeStats>,
) -> anyhow::Result<(Sinks, Option<GroupMetrics>)> {
    let events = EventLog::open(config.event_log.as_deref()).with_context(|| {
        let path = config.event_log.as_deref().unwrap_or("".as_ref());
        format!("opening the event log {}", path.display())
    })?;
    let mut metrics = Metrics::new(config.http.per_node_metrics);
    let group_metrics = config.group.is_some().then(|| metrics.register_group());
    metrics.register_probes(Arc::clone(probe_stats));
    let metrics = Arc::new(metrics);
    let actions = ActionRunner::new(config.actions.clone(), config.max_concurrent_actions)
        .with_metrics(metrics.actions());
    let actions = if config.group.is_some() {
        actions
    } else {
        actions.with_ledger(saver.ledger())
    };
    Ok((
        Sinks {
            events,
            stream: EventStream::default(),
            actions,
            metrics,
            saver,
            group: None,
        },
        group_metrics,
    ))
}
