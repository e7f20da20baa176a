//! `hb agent`: starts the datapath (the XDP program, or a UDP socket), sweeps
//! the node table on a fixed period, runs every node through the
//! [`Detector`], logs each transition, records it in the event log and
//! hands it to the [`ActionRunner`], answers `hb status`, reloads the
//! heartbeat keys on SIGHUP, and on SIGINT/SIGTERM saves its state and stops
//! the datapath (detaching XDP).
//!
//! One task does all of this in a `select!` loop: the sweep never waits on
//! an action (actions run in their own tasks) or on the state file (saved
//! in a blocking task), and never makes a syscall per node (the table is
//! memory-mapped).

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv6Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use hb_common::{
    admission::Unauthenticated,
    counters::Counter,
    table::{NodeRecord, SLOT_AUTHENTICATED, SLOT_PINNED, intervals, seen},
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    task::JoinHandle,
    time::MissedTickBehavior,
};

use crate::{
    clock::monotonic_ns,
    config::{Config, DatapathKind, DetectorKind, Event, XdpMode},
    datapath::{Datapath, table::NodeTable},
    detect::{
        brake::{Brake, Change, Decisions},
        detector::{
            Detector, DetectorSettings, FlapSettings, NodeState, Rule, Transition, WatchedNode,
        },
        phi::{PhiDetector, PhiSettings},
    },
    keys::Keyring,
    nodes::{NodeDirectory, NodeInfo},
    sinks::{
        actions::{ActionEvent, ActionRunner},
        event_log::EventLog,
        state_file::{self, SavedNode},
    },
};

pub mod status;

use status::{AuthStatus, BrakeStatus, MeasuredInterval, NodeStatus, StatusReport};

/// State is saved at most this often while nodes change state.
const SAVE_EVERY: Duration = Duration::from_secs(2);
/// On shutdown, running actions get at most this long to finish.
const SHUTDOWN_ACTION_WAIT: Duration = Duration::from_secs(10);
/// A sweep with more transitions than this logs a summary line per kind of
/// change (and each node at debug level) instead of one line per node.
const LOG_EACH_UP_TO: usize = 50;

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    config.check_interfaces_exist()?;
    let nodes = NodeDirectory::new(&config);
    if nodes.is_empty() {
        tracing::warn!(
            "no [[nodes]] or [[node_ranges]] configured: every heartbeat will be counted as \
             unknown_node and no node will ever be watched"
        );
    }
    if config.datapath == DatapathKind::Socket
        && (config.pass_heartbeats || config.xdp_mode != XdpMode::Auto)
    {
        tracing::warn!(
            "pass_heartbeats and xdp_mode apply to the XDP datapath only; with datapath = \"socket\" \
             they have no effect"
        );
    }
    raise_memlock_limit();
    let started = Instant::now();

    let keyring = Keyring::load(&config.auth.keys)?;
    log_auth_policy(&keyring, config.auth.unauthenticated());
    let mut datapath = Datapath::prepare(&config)?;
    datapath.set_keys(&keyring.slots())?;
    let mut auth = AuthStatus {
        key_ids: keyring.ids(),
        accept_unauthenticated: config.auth.unauthenticated() == Unauthenticated::Accept,
    };
    let mut detector = watch_nodes(&config, &nodes, &keyring, datapath.table())?;
    let mut events = EventLog::open(config.event_log.as_deref()).with_context(|| {
        let path = config
            .event_log
            .as_deref()
            .unwrap_or(std::path::Path::new(""));
        format!("opening the event log {}", path.display())
    })?;
    datapath.start(&config)?;

    let (status_tx, mut status_rx) = mpsc::channel::<status::Request>(16);
    tokio::spawn(status::serve(
        status::bind(&config.status_socket)?,
        status_tx,
    ));

    let actions = ActionRunner::new(config.actions.clone(), config.max_concurrent_actions);
    let mut saver = StateSaver::new(config.state_file.clone());
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing a SIGHUP handler")?;
    let mut ticker = tokio::time::interval(config.defaults.sweep_period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tracing::info!(
        nodes = nodes.len(),
        datapath = config.datapath.as_str(),
        port = config.port,
        sweep_period = ?config.defaults.sweep_period,
        status_socket = %config.status_socket.display(),
        "agent running"
    );

    let mut brake = Brake::new(config.brake.settings());
    let mut transitions = Vec::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = monotonic_ns();
                transitions.clear();
                if let Some(stalled) = detector.sweep(now, datapath.table(), &mut transitions) {
                    tracing::warn!(
                        stalled_ms = stalled / 1_000_000,
                        "this sweep ran {:.1} s after the previous one: the agent was stalled; no \
                         node is convicted until every node has had a full timeout to be heard again",
                        stalled as f64 / 1e9
                    );
                }
                let decisions = brake.sweep(
                    now,
                    detector.count(NodeState::Up),
                    &brake_changes(&transitions),
                );
                announce_brake(&decisions, &brake);
                if !transitions.is_empty() || !decisions.release.is_empty() {
                    let table = datapath.table();
                    let mut ctx = Handling {
                        now,
                        nodes: &nodes,
                        table,
                        detector: &detector,
                        actions: &actions,
                        brake: &mut brake,
                    };
                    ctx.transitions(&transitions, &mut events);
                    ctx.release(&decisions.release);
                    saver.changed();
                }
                saver.save_if_due(|| snapshot(&nodes, &detector, datapath.table()));
            }
            Some(request) = status_rx.recv() => {
                let context = ReportContext {
                    auth: &auth,
                    brake: BrakeStatus {
                        engaged: brake.engaged(),
                        held: brake.held() as u64,
                        silent: brake.silent() as u64,
                    },
                    started,
                };
                let report = report(&nodes, &detector, &datapath, &actions, &context, request.limit);
                let _ = request.reply.send(report);
            }
            _ = hangup.recv() => {
                if let Some(key_ids) = reload_keys(&config, &mut datapath) {
                    auth.key_ids = key_ids;
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }

    tracing::info!("shutting down");
    events.flush();
    saver
        .save_now(snapshot(&nodes, &detector, datapath.table()))
        .await;
    datapath.stop()?;
    let _ = std::fs::remove_file(&config.status_socket);
    actions.wait_idle(SHUTDOWN_ACTION_WAIT).await;
    Ok(())
}

/// Says, once at start, how heartbeats are authenticated.
fn log_auth_policy(keyring: &Keyring, unauthenticated: Unauthenticated) {
    match (keyring.is_empty(), unauthenticated) {
        (true, _) => tracing::warn!(
            "heartbeats are not authenticated: anyone who can send UDP to the monitor can keep a              dead node up or make a live one leave; add key files to [auth] keys (`hb keygen`)"
        ),
        (false, Unauthenticated::Accept) => tracing::warn!(
            key_ids = ?keyring.ids(),
            "heartbeats without a tag are accepted too (auth.accept_unauthenticated), from nodes              that have never sent an authenticated one: set it to false once every sender signs"
        ),
        (false, Unauthenticated::Refuse) => tracing::info!(
            key_ids = ?keyring.ids(),
            "heartbeats are authenticated; those without a valid tag are refused"
        ),
    }
}

/// SIGHUP: re-reads the config file's `[auth] keys` and installs them. Any
/// problem keeps the keys in use (a failed reload never drops a key) and is
/// logged. Returns the new key ids if they were installed.
fn reload_keys(config: &Config, datapath: &mut Datapath) -> Option<Vec<u8>> {
    let Some(path) = &config.loaded_from else {
        tracing::warn!("SIGHUP: no config file to reload the keys from; keys unchanged");
        return None;
    };
    let reloaded = match Config::load(path, &Default::default()) {
        Ok(reloaded) => reloaded,
        Err(e) => {
            tracing::error!("SIGHUP: {e}; keys unchanged");
            return None;
        }
    };
    if reloaded.auth.unauthenticated() != config.auth.unauthenticated() {
        tracing::warn!(
            "SIGHUP: whether unauthenticated heartbeats are accepted changes only with a restart;              reloading the keys alone"
        );
    }
    let keyring = match Keyring::load(&reloaded.auth.keys) {
        Ok(keyring) => keyring,
        Err(e) => {
            tracing::error!("SIGHUP: {e}; keys unchanged");
            return None;
        }
    };
    if keyring.is_empty() && config.auth.unauthenticated() == Unauthenticated::Refuse {
        tracing::error!(
            "SIGHUP: [auth] keys is now empty, which would refuse every heartbeat; keys unchanged"
        );
        return None;
    }
    if let Err(e) = datapath.set_keys(&keyring.slots()) {
        tracing::error!("SIGHUP: installing the keys: {e:#}");
        return None;
    }
    tracing::info!(key_ids = ?keyring.ids(), "SIGHUP: keys reloaded");
    Some(keyring.ids())
}

/// Marks every configured node in the table, pinning it to its source
/// address if it has one, restoring what the state file says about it, and
/// builds the detector.
fn watch_nodes(
    config: &Config,
    nodes: &NodeDirectory<'_>,
    keyring: &Keyring,
    table: &NodeTable,
) -> anyhow::Result<Detector> {
    let rule = match config.detector.kind {
        DetectorKind::Timeout => Rule::Timeout,
        DetectorKind::Phi => Rule::Phi {
            detector: PhiDetector::new(PhiSettings {
                threshold: config.detector.phi_threshold,
                min_std_dev: config.detector.min_std_dev,
                acceptable_pause: Duration::ZERO,
            })?,
            suspect: PhiDetector::new(PhiSettings {
                threshold: config.detector.suspect_phi,
                min_std_dev: config.detector.min_std_dev,
                acceptable_pause: Duration::ZERO,
            })?,
            acceptable_pause_ns: config
                .detector
                .acceptable_pause
                .map(|pause| pause.as_nanos() as u64),
        },
    };
    let settings = DetectorSettings {
        default_interval_ns: config.defaults.interval.as_nanos() as u64,
        timeout_multiplier: config.defaults.timeout_multiplier,
        rule,
        stall_ns: (config.defaults.sweep_period + config.detector.stall_threshold).as_nanos()
            as u64,
        rise: config.detector.rise,
        flap: FlapSettings {
            max_flaps: config.detector.flap_max,
            window_ns: config.detector.flap_window.as_nanos() as u64,
            stable_ns: config.detector.flap_stable.as_nanos() as u64,
        },
    };
    let watched: Vec<_> = nodes
        .intervals()
        .map(|(node_id, interval)| WatchedNode {
            node_id,
            interval_ns: interval.map(|d| d.as_nanos() as u64),
        })
        .collect();
    let mut detector = Detector::new(settings, table.len(), &watched, monotonic_ns());
    let saved: HashMap<u32, SavedNode> = state_file::load(&config.state_file)?
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n.id, n))
        .collect();
    let mut restored = 0usize;
    for id in nodes.ids() {
        let mut record = NodeRecord::default();
        if let Some(saved) = saved.get(&id) {
            record.heartbeats = saved.heartbeats;
            record.incarnation = saved.incarnation;
            record.sequence = saved.sequence;
            record.interval_ms = saved.interval_ms;
            // Without keys nothing can be authenticated: forget the flag
            // rather than refuse the node for ever.
            if saved.authenticated && !keyring.is_empty() {
                record.slot_flags |= SLOT_AUTHENTICATED;
            }
            detector.restore(
                id,
                saved.state,
                saved.interval_ms,
                intervals::word(saved.interval_mean_us, saved.interval_mad_us),
            );
            restored += 1;
        }
        if let Some(source) = nodes.source_of(id) {
            record.slot_flags |= SLOT_PINNED;
            record.src_addr = match source {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
        }
        table.configure(id, record);
        if let Some(saved) = saved.get(&id) {
            let word = intervals::word(saved.interval_mean_us, saved.interval_mad_us);
            table.intervals.set(id, word);
        }
    }
    if restored > 0 {
        tracing::info!(
            restored,
            "restored node states from the state file; nodes that were up get a full timeout to be heard"
        );
    }
    Ok(detector)
}

/// What the brake needs to know of a sweep's transitions: which nodes went
/// silent (up to suspect or down) and which were heard again.
fn brake_changes(transitions: &[Transition]) -> Vec<Change> {
    transitions
        .iter()
        .filter_map(|t| match (t.from, t.to) {
            (NodeState::Up, NodeState::Suspect | NodeState::Down)
            | (NodeState::Suspect, NodeState::Down) => Some(Change::Silent(t.node_id)),
            (
                NodeState::Suspect | NodeState::Down | NodeState::Flapping,
                NodeState::Up | NodeState::Left | NodeState::Flapping,
            ) => Some(Change::Heard(t.node_id)),
            _ => None,
        })
        .collect()
}

/// Logs the brake engaging and clearing: the `partition-suspected` and
/// `partition-cleared` events.
fn announce_brake(decisions: &Decisions, brake: &Brake) {
    if decisions.partition_suspected {
        tracing::error!(
            silent = decisions.silent,
            of = decisions.population,
            "PARTITION SUSPECTED: {} of {} nodes went silent within {:?}; the fault is probably on \
             this monitor's side (its link, a partition, a pause): down actions are held",
            decisions.silent,
            decisions.population,
            brake.settings().window
        );
    }
    if let Some(cause) = decisions.partition_cleared {
        tracing::warn!(
            cause = cause.name(),
            released = decisions.release.len(),
            "partition cleared ({}): {} held down actions run now",
            cause.name(),
            decisions.release.len()
        );
    }
}

/// One sweep's transitions, handled: logged, recorded in the event log,
/// and their actions started or held by the brake.
struct Handling<'a, 'n> {
    now: u64,
    nodes: &'a NodeDirectory<'n>,
    table: &'a NodeTable,
    detector: &'a Detector,
    actions: &'a ActionRunner,
    brake: &'a mut Brake,
}

impl Handling<'_, '_> {
    fn transitions(&mut self, transitions: &[Transition], events: &mut EventLog) {
        let each = transitions.len() <= LOG_EACH_UP_TO;
        let mut kinds: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        let mut held = 0usize;
        for transition in transitions {
            let Some(node) = self.nodes.get(transition.node_id) else {
                tracing::error!(
                    id = transition.node_id,
                    "a node that is not configured changed state"
                );
                continue;
            };
            if each {
                announce(&node, transition, self.detector);
            } else {
                tracing::debug!(node = %node.name, id = node.id, from = %transition.from, to = %transition.to);
                *kinds
                    .entry((transition.from.name(), transition.to.name()))
                    .or_default() += 1;
            }
            events.record(self.now, &node.name, transition);
            let run = match (transition.from, transition.to) {
                (_, NodeState::Down) => self.brake.admit_down(self.now, node.id),
                // Came back while its down actions were held: nothing to undo.
                (NodeState::Down | NodeState::Flapping, NodeState::Up) => {
                    self.brake.admit_up(node.id)
                }
                _ => true,
            };
            if !run {
                held += 1;
                continue;
            }
            self.dispatch(
                &node,
                transition.to,
                transition.from,
                transition.since_last_heartbeat_ns,
            );
        }
        for ((from, to), count) in kinds {
            if to == "down" {
                tracing::warn!(
                    count,
                    from,
                    "nodes are DOWN: no heartbeat within their timeout"
                );
            } else {
                tracing::info!(count, from, to, "nodes changed state");
            }
        }
        if held > 0 {
            tracing::warn!(
                held,
                held_in_all = self.brake.held(),
                "actions held by the brake (partition suspected)"
            );
        }
        events.flush();
    }

    /// Runs the down actions the brake releases, for nodes still down.
    fn release(&mut self, released: &[u32]) {
        for &id in released {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            if self.detector.state(id) != NodeState::Down {
                continue;
            }
            let word = self.table.seen.get(id);
            let arrival = seen::arrival_ns(word);
            let since = (arrival != 0).then(|| self.now.saturating_sub(arrival));
            tracing::warn!(node = %node.name, id, "held down actions released");
            self.dispatch(&node, NodeState::Down, NodeState::Suspect, since);
        }
    }

    fn dispatch(
        &self,
        node: &NodeInfo<'_>,
        to: NodeState,
        from: NodeState,
        since_last_heartbeat_ns: Option<u64>,
    ) {
        let Some(event) = event_of(to) else {
            return;
        };
        let record = self.table.records.get(node.id);
        self.actions.dispatch(ActionEvent {
            event,
            node_id: node.id,
            node_name: node.name.clone().into_owned(),
            node_address: node_address(node.address, &record).map(|a| a.to_string()),
            previous_state: from.name(),
            since_last_heartbeat: since_last_heartbeat_ns.map(Duration::from_nanos),
        });
    }
}

/// Logs a transition in words an operator reads at a glance.
fn announce(node: &NodeInfo<'_>, transition: &Transition, detector: &Detector) {
    let name = node.name.as_ref();
    let id = node.id;
    match (transition.from, transition.to) {
        (_, NodeState::Down) => {
            let silent = transition
                .since_last_heartbeat_ns
                .map_or("never heard".to_owned(), |ns| {
                    format!("{:.3}s", ns as f64 / 1e9)
                });
            let timeout = Duration::from_nanos(detector.timeout_ns(id));
            tracing::warn!(node = name, id, silent_for = silent, timeout = ?timeout, "node is DOWN: no heartbeat within its timeout")
        }
        (_, NodeState::Suspect) => {
            let silent = transition
                .since_last_heartbeat_ns
                .map_or("never heard".to_owned(), |ns| {
                    format!("{:.3}s", ns as f64 / 1e9)
                });
            tracing::info!(
                node = name,
                id,
                silent_for = silent,
                "node is suspect: silent past its suspect deadline"
            )
        }
        (_, NodeState::Flapping) => {
            tracing::warn!(
                node = name,
                id,
                "node is FLAPPING: back, but down too often lately; held down until heard steadily"
            )
        }
        (NodeState::Suspect, NodeState::Up) => {
            tracing::info!(
                node = name,
                id,
                "node is up: heard again, suspicion cleared"
            )
        }
        (NodeState::Unseen, NodeState::Up) => {
            tracing::info!(node = name, id, "node is up: first heartbeat")
        }
        (from, NodeState::Up) => {
            tracing::info!(node = name, id, was = from.name(), "node is up again")
        }
        (_, NodeState::Left) => {
            tracing::info!(node = name, id, "node left gracefully; no failover")
        }
        (_, NodeState::Unseen) => {}
    }
}

fn event_of(state: NodeState) -> Option<Event> {
    match state {
        NodeState::Up => Some(Event::Up),
        NodeState::Down => Some(Event::Down),
        NodeState::Left => Some(Event::Left),
        NodeState::Suspect => Some(Event::Suspect),
        NodeState::Flapping => Some(Event::Flapping),
        NodeState::Unseen => None,
    }
}

/// The configured address of a node, else where its last heartbeat came from.
fn node_address(configured: Option<IpAddr>, record: &NodeRecord) -> Option<IpAddr> {
    configured.or_else(|| {
        (record.heartbeats != 0).then(|| {
            let v6 = Ipv6Addr::from(record.src_addr);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        })
    })
}

/// What is saved about every node.
fn snapshot(nodes: &NodeDirectory<'_>, detector: &Detector, table: &NodeTable) -> Vec<SavedNode> {
    nodes
        .ids()
        .map(|id| {
            let record = table.records.get(id);
            let interval = table.intervals.get(id);
            SavedNode {
                id,
                state: detector.state(id),
                heartbeats: record.heartbeats,
                incarnation: record.incarnation,
                sequence: record.sequence,
                interval_ms: record.interval_ms,
                authenticated: record.is_authenticated(),
                interval_mean_us: intervals::mean_us(interval),
                interval_mad_us: intervals::mad_us(interval),
            }
        })
        .collect()
}

/// Saves node states in a blocking task, at most every [`SAVE_EVERY`] while
/// they change, so that a large table never stalls a sweep.
struct StateSaver {
    path: PathBuf,
    unsaved: bool,
    last_save: Instant,
    saving: Option<JoinHandle<()>>,
}

impl StateSaver {
    fn new(path: PathBuf) -> Self {
        StateSaver {
            path,
            unsaved: false,
            last_save: Instant::now(),
            saving: None,
        }
    }

    fn changed(&mut self) {
        self.unsaved = true;
    }

    fn save_if_due(&mut self, snapshot: impl FnOnce() -> Vec<SavedNode>) {
        let busy = self.saving.as_ref().is_some_and(|task| !task.is_finished());
        if !self.unsaved || busy || self.last_save.elapsed() < SAVE_EVERY {
            return;
        }
        let (path, nodes) = (self.path.clone(), snapshot());
        self.saving = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = state_file::save(&path, nodes) {
                tracing::error!("{e}");
            }
        }));
        self.unsaved = false;
        self.last_save = Instant::now();
    }

    /// Waits for a save in progress, then saves `nodes`.
    async fn save_now(&mut self, nodes: Vec<SavedNode>) {
        if let Some(task) = self.saving.take() {
            let _ = task.await;
        }
        if let Err(e) = state_file::save(&self.path, nodes) {
            tracing::error!("{e}");
        }
    }
}

/// What the status report shows besides the nodes and the datapath.
struct ReportContext<'a> {
    auth: &'a AuthStatus,
    brake: BrakeStatus,
    started: Instant,
}

/// The status report: every node counted by state, at most `limit` listed
/// (those not up first).
fn report(
    nodes: &NodeDirectory<'_>,
    detector: &Detector,
    datapath: &Datapath,
    actions: &ActionRunner,
    context: &ReportContext<'_>,
    limit: usize,
) -> StatusReport {
    let now = monotonic_ns();
    let counters = match datapath.counters() {
        Ok(values) => Counter::ALL
            .iter()
            .zip(values)
            .map(|(c, v)| (c.name().to_owned(), v))
            .collect(),
        Err(e) => {
            tracing::error!("{e:#}");
            BTreeMap::new()
        }
    };
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    for id in nodes.ids() {
        *states
            .entry(detector.state(id).name().to_owned())
            .or_default() += 1;
    }
    let not_up = nodes
        .ids()
        .filter(|&id| detector.state(id) != NodeState::Up);
    let up = nodes
        .ids()
        .filter(|&id| detector.state(id) == NodeState::Up);
    let mut listed: Vec<u32> = not_up.chain(up).take(limit).collect();
    listed.sort_unstable();
    let table = datapath.table();
    let listed = listed
        .into_iter()
        .filter_map(|id| nodes.get(id))
        .map(|node| {
            let record = table.records.get(node.id);
            let word = table.seen.get(node.id);
            let arrival = seen::arrival_ns(word);
            NodeStatus {
                id: node.id,
                state: detector.state(node.id),
                address: node_address(node.address, &record).map(|a| a.to_string()),
                since_last_heartbeat_ms: (arrival != 0)
                    .then(|| now.saturating_sub(arrival) / 1_000_000),
                heartbeats: record.heartbeats,
                incarnation: record.incarnation,
                sequence: record.sequence,
                interval_ms: record.interval_ms,
                measured_interval_ms: MeasuredInterval::from_word(table.intervals.get(node.id)),
                authenticated: record.is_authenticated(),
                pinned: record.is_pinned(),
                phi: (arrival != 0)
                    .then(|| {
                        detector.phi(now.saturating_sub(arrival), table.intervals.get(node.id))
                    })
                    .flatten(),
                down_in_ms: detector
                    .down_at_ns(node.id, table)
                    .map(|d| d.saturating_sub(now) / 1_000_000),
                name: node.name.into_owned(),
            }
        })
        .collect();
    StatusReport {
        uptime_ms: context.started.elapsed().as_millis() as u64,
        interfaces: datapath.interfaces(),
        counters,
        actions: actions.stats(),
        auth: context.auth.clone(),
        brake: context.brake.clone(),
        states,
        nodes_total: nodes.len() as u64,
        nodes: listed,
    }
}

/// Older kernels charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
