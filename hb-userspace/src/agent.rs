//! `hb agent`: loads and attaches the XDP program, sweeps the node table on
//! a fixed period, runs every node through the [`Detector`], logs each
//! transition and hands it to the [`ActionRunner`], answers `hb status`, and
//! on SIGINT/SIGTERM saves its state and detaches.
//!
//! One task does all of this in a `select!` loop: the sweep never waits on
//! an action (actions run in their own tasks) and never makes a syscall per
//! node (the table is memory-mapped).

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv6Addr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hb_common::{
    counters::Counter,
    table::{NodeRecord, seen},
};
use tokio::{
    io::{AsyncWriteExt, Interest, unix::AsyncFd},
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
    time::MissedTickBehavior,
};

use crate::{
    actions::{ActionEvent, ActionRunner},
    config::{Config, Event, NodeConfig, XdpMode},
    datapath::{AttachPolicy, Datapath, LoadOptions},
    detector::{Detector, DetectorSettings, NodeState, Transition, WatchedNode},
    state_file::{self, SavedNode},
    status::{self, InterfaceStatus, NodeStatus, StatusReport},
    table::NodeTable,
};

/// State is saved at most this often while nodes change state.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// On shutdown, running actions get at most this long to finish.
const SHUTDOWN_ACTION_WAIT: Duration = Duration::from_secs(10);

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    config.check_interfaces_exist()?;
    if config.nodes.is_empty() {
        tracing::warn!(
            "no [[nodes]] configured: every heartbeat will be counted as unknown_node and no \
             node will ever be watched"
        );
    }
    raise_memlock_limit();
    let started = Instant::now();

    let mut datapath = Datapath::load(LoadOptions {
        port: config.port,
        max_nodes: config.max_nodes,
        pass_heartbeats: config.pass_heartbeats,
    })?;
    let mut detector = watch_nodes(&config, datapath.table())?;
    let by_id: HashMap<u32, usize> = config
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id, i))
        .collect();
    forward_program_log(&mut datapath)?;

    let policy = match config.xdp_mode {
        XdpMode::Auto => AttachPolicy::Auto,
        XdpMode::Native => AttachPolicy::Native,
        XdpMode::Generic => AttachPolicy::Generic,
    };
    for interface in &config.interfaces {
        match datapath.attach(interface, policy) {
            Ok(mode) => tracing::info!(interface, mode = mode.name(), "XDP program attached"),
            Err(e) => {
                datapath.detach_all().ok();
                return Err(e.into());
            }
        }
    }

    let (status_tx, mut status_rx) = mpsc::channel::<oneshot::Sender<StatusReport>>(16);
    let listener = bind_status_socket(&config.status_socket)?;
    tokio::spawn(serve_status(listener, status_tx));

    let actions = ActionRunner::new(config.actions.clone(), config.max_concurrent_actions);
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut ticker = tokio::time::interval(config.defaults.sweep_period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tracing::info!(
        nodes = config.nodes.len(),
        port = config.port,
        sweep_period = ?config.defaults.sweep_period,
        status_socket = %config.status_socket.display(),
        "agent running"
    );

    let mut transitions = Vec::new();
    let mut unsaved = false;
    let mut last_save = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                transitions.clear();
                detector.sweep(monotonic_ns(), datapath.table(), &mut transitions);
                for transition in &transitions {
                    let node = &config.nodes[by_id[&transition.node_id]];
                    let record = datapath.table().records.get(node.id);
                    announce(node, transition, &detector);
                    if let Some(event) = event_of(transition.to) {
                        actions.dispatch(ActionEvent {
                            event,
                            node_id: node.id,
                            node_name: node.name.clone(),
                            node_address: node_address(node, &record).map(|a| a.to_string()),
                            previous_state: transition.from.name(),
                            since_last_heartbeat: transition.since_last_heartbeat_ns.map(Duration::from_nanos),
                        });
                    }
                }
                unsaved |= !transitions.is_empty();
                if unsaved && last_save.elapsed() >= SAVE_EVERY {
                    save_state(&config, &detector, datapath.table());
                    unsaved = false;
                    last_save = Instant::now();
                }
            }
            Some(reply) = status_rx.recv() => {
                let report = report(&config, &detector, &datapath, &actions, started);
                let _ = reply.send(report);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }

    tracing::info!("shutting down");
    save_state(&config, &detector, datapath.table());
    datapath.detach_all()?;
    let _ = std::fs::remove_file(&config.status_socket);
    actions.wait_idle(SHUTDOWN_ACTION_WAIT).await;
    Ok(())
}

/// Marks every configured node in the table, restoring what the state file
/// says about it, and builds the detector.
fn watch_nodes(config: &Config, table: &NodeTable) -> anyhow::Result<Detector> {
    let settings = DetectorSettings {
        default_interval_ns: config.defaults.interval.as_nanos() as u64,
        timeout_multiplier: config.defaults.timeout_multiplier,
    };
    let watched: Vec<_> = config
        .nodes
        .iter()
        .map(|n| WatchedNode {
            node_id: n.id,
            interval_ns: n.interval.map(|d| d.as_nanos() as u64),
        })
        .collect();
    let mut detector = Detector::new(settings, table.len(), &watched, monotonic_ns());
    let saved: HashMap<u32, SavedNode> = state_file::load(&config.state_file)?
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n.id, n))
        .collect();
    for node in &config.nodes {
        let mut record = NodeRecord::default();
        if let Some(saved) = saved.get(&node.id) {
            record.heartbeats = saved.heartbeats;
            record.incarnation = saved.incarnation;
            record.sequence = saved.sequence;
            record.interval_ms = saved.interval_ms;
            detector.restore(node.id, saved.state, saved.interval_ms);
        }
        table.configure(node.id, record);
    }
    if !saved.is_empty() {
        tracing::info!(
            restored = saved.len(),
            "restored node states from the state file; nodes that were up get a full timeout to be heard"
        );
    }
    Ok(detector)
}

fn save_state(config: &Config, detector: &Detector, table: &NodeTable) {
    let nodes = config
        .nodes
        .iter()
        .map(|node| {
            let record = table.records.get(node.id);
            SavedNode {
                id: node.id,
                state: detector.state(node.id),
                heartbeats: record.heartbeats,
                incarnation: record.incarnation,
                sequence: record.sequence,
                interval_ms: record.interval_ms,
            }
        })
        .collect();
    if let Err(e) = state_file::save(&config.state_file, nodes) {
        tracing::error!("{e}");
    }
}

/// Logs a transition in words an operator reads at a glance.
fn announce(node: &NodeConfig, transition: &Transition, detector: &Detector) {
    let silent = transition
        .since_last_heartbeat_ns
        .map_or("never heard".to_owned(), |ns| {
            format!("{:.3}s", ns as f64 / 1e9)
        });
    let timeout = Duration::from_nanos(detector.timeout_ns(transition.node_id));
    match (transition.from, transition.to) {
        (_, NodeState::Down) => tracing::warn!(
            node = node.name, id = node.id, silent_for = silent, timeout = ?timeout,
            "node is DOWN: no heartbeat within its timeout"
        ),
        (NodeState::Unseen, NodeState::Up) => {
            tracing::info!(
                node = node.name,
                id = node.id,
                "node is up: first heartbeat"
            )
        }
        (from, NodeState::Up) => {
            tracing::info!(
                node = node.name,
                id = node.id,
                was = from.name(),
                "node is up again"
            )
        }
        (_, NodeState::Left) => tracing::info!(
            node = node.name,
            id = node.id,
            "node left gracefully; no failover"
        ),
        (_, NodeState::Unseen) => {}
    }
}

fn event_of(state: NodeState) -> Option<Event> {
    match state {
        NodeState::Up => Some(Event::Up),
        NodeState::Down => Some(Event::Down),
        NodeState::Left => Some(Event::Left),
        NodeState::Unseen => None,
    }
}

/// The configured address of a node, else where its last heartbeat came from.
fn node_address(node: &NodeConfig, record: &NodeRecord) -> Option<IpAddr> {
    node.address.or_else(|| {
        (record.heartbeats != 0).then(|| {
            let v6 = Ipv6Addr::from(record.src_addr);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        })
    })
}

fn report(
    config: &Config,
    detector: &Detector,
    datapath: &Datapath,
    actions: &ActionRunner,
    started: Instant,
) -> StatusReport {
    let now = monotonic_ns();
    let counters = match datapath.counters() {
        Ok(values) => Counter::ALL
            .iter()
            .zip(values)
            .map(|(c, v)| (c.name().to_owned(), v))
            .collect(),
        Err(e) => {
            tracing::error!("{:#}", anyhow::Error::from(e));
            BTreeMap::new()
        }
    };
    let table = datapath.table();
    let nodes = config
        .nodes
        .iter()
        .map(|node| {
            let record = table.records.get(node.id);
            let word = table.seen.get(node.id);
            let arrival = seen::arrival_ns(word);
            NodeStatus {
                id: node.id,
                name: node.name.clone(),
                state: detector.state(node.id),
                address: node_address(node, &record).map(|a| a.to_string()),
                since_last_heartbeat_ms: (arrival != 0)
                    .then(|| now.saturating_sub(arrival) / 1_000_000),
                heartbeats: record.heartbeats,
                incarnation: record.incarnation,
                sequence: record.sequence,
                interval_ms: record.interval_ms,
                down_in_ms: detector
                    .deadline_ns(node.id, word)
                    .map(|d| d.saturating_sub(now) / 1_000_000),
            }
        })
        .collect();
    StatusReport {
        uptime_ms: started.elapsed().as_millis() as u64,
        interfaces: datapath
            .attachments()
            .iter()
            .map(|a| InterfaceStatus {
                name: a.interface.clone(),
                mode: a.mode.name().to_owned(),
            })
            .collect(),
        counters,
        actions: actions.stats(),
        nodes,
    }
}

/// Binds the status socket, refusing if another agent answers on it and
/// removing a stale socket file left by one that died.
fn bind_status_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another agent is already running (its status socket {} answers); stop it first, \
                 or give this one another --status-socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale status socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("listening on the status socket {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to its owner", path.display()))?;
    Ok(listener)
}

/// Accepts status clients; each request is answered by the main loop.
async fn serve_status(
    listener: UnixListener,
    requests: mpsc::Sender<oneshot::Sender<StatusReport>>,
) {
    loop {
        let mut stream: UnixStream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("status socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            let asked =
                tokio::time::timeout(Duration::from_secs(5), status::read_request(&mut stream))
                    .await;
            if !matches!(asked, Ok(Ok(true))) {
                return;
            }
            let (reply_tx, reply_rx) = oneshot::channel();
            if requests.send(reply_tx).await.is_err() {
                return;
            }
            if let Ok(report) = reply_rx.await
                && let Ok(body) = serde_json::to_vec(&report)
            {
                let _ = stream.write_all(&body).await;
                let _ = stream.shutdown().await;
            }
        });
    }
}

/// Forwards the XDP program's aya-log records to this process's log.
fn forward_program_log(datapath: &mut Datapath) -> anyhow::Result<()> {
    let logger =
        aya_log::EbpfLogger::init(datapath.ebpf_mut()).context("opening the XDP program's log")?;
    // SAFETY: the logger owns its ring buffer fd and keeps it open, unchanged,
    // for as long as the AsyncFd owns the logger.
    let mut logger = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .context("polling the XDP log")?;
    tokio::spawn(async move {
        loop {
            match logger.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => {
                    tracing::warn!("XDP log forwarding stopped: {e}");
                    return;
                }
            }
        }
    });
    Ok(())
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

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
