//! `hb status`: the agent's view of the cluster, served on a local Unix
//! socket and printed as a table (or JSON) by the client.
//!
//! Protocol: connect, write `status <limit>\n`, read one JSON
//! [`StatusReport`] until the agent closes the connection. The report
//! counts every node by state and lists at most `limit` nodes, the ones not
//! up first, so that a million-node agent answers with a page, not 100 MB.

use std::{collections::BTreeMap, io, path::Path, time::Duration};

use anyhow::{Context, bail};
use hb_common::{counters::Counter, table::seen};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::{
    agent::query::Query,
    clock::monotonic_ns,
    datapath::{Datapath, Receiving},
    detect::{brake::Brake, detector::NodeState},
    nodes::NodeInfo,
    sinks::{ClusterView, actions::ActionStats, state_file::SaveHealth},
};

/// The request word a client sends, followed by the node limit.
pub const REQUEST: &str = "status";
/// Nodes listed when the client does not say.
pub const DEFAULT_LIMIT: usize = 1000;

/// Everything `hb status` shows.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatusReport {
    pub uptime_ms: u64,
    pub interfaces: Vec<InterfaceStatus>,
    /// Datapath counters by name, summed over CPUs (XDP) or receive threads (socket).
    pub counters: BTreeMap<String, u64>,
    pub actions: ActionStats,
    pub auth: AuthStatus,
    #[serde(default)]
    pub brake: BrakeStatus,
    /// How saving the state file goes.
    #[serde(default)]
    pub state_file: SaveHealth,
    /// The monitor group, with `[group]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<crate::group::GroupStatus>,
    /// The prober, while any node is probed.
    #[serde(default)]
    pub probes: Option<crate::probe::ProbeStatus>,
    /// Number of configured nodes in each state.
    pub states: BTreeMap<String, u64>,
    /// Number of configured nodes.
    pub nodes_total: u64,
    /// At most the requested number of nodes, those not up first.
    pub nodes: Vec<NodeStatus>,
}

/// The brake on mass failure.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BrakeStatus {
    /// A partition is suspected: down actions are held.
    pub engaged: bool,
    /// Nodes whose down actions are held.
    pub held: u64,
    /// Nodes that went silent recently (or during the episode).
    pub silent: u64,
}

/// How heartbeats are authenticated.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuthStatus {
    /// Ids of the keys heartbeats are verified with, the current one first.
    pub key_ids: Vec<u8>,
    /// Whether heartbeats without a tag are accepted.
    pub accept_unauthenticated: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// "native" or "generic" (XDP), or "socket".
    pub mode: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u32,
    pub name: String,
    pub state: NodeState,
    /// The configured address, else the source of the last heartbeat.
    pub address: Option<String>,
    pub since_last_heartbeat_ms: Option<u64>,
    pub heartbeats: u64,
    pub incarnation: u64,
    pub sequence: u64,
    /// The interval the node advertises.
    pub interval_ms: u32,
    /// The interval measured by the datapath: mean and standard deviation
    /// (estimated from the mean absolute deviation), ms; `None` before two
    /// heartbeats in a row.
    #[serde(default)]
    pub measured_interval_ms: Option<MeasuredInterval>,
    /// The node has sent authenticated heartbeats (and is no longer heard
    /// without a tag).
    pub authenticated: bool,
    /// The node's heartbeats must come from its configured source address.
    pub pinned: bool,
    /// The node's phi now (with `detector.kind = "phi"` and an interval
    /// sample).
    #[serde(default)]
    pub phi: Option<f64>,
    /// How long until the node is declared down if it stays silent.
    pub down_in_ms: Option<u64>,
    /// How the node is probed, if it is.
    #[serde(default)]
    pub probe: Option<NodeProbe>,
    /// What last refreshed the node: `heartbeat` or `probe` (`None`: never
    /// heard).
    #[serde(default)]
    pub refreshed_by: Option<String>,
}

/// A node's probe: its kind and what it goes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeProbe {
    /// `icmp`, `tcp` or `http`.
    pub kind: String,
    /// The address, `address:port`, or the URL.
    pub target: String,
}

/// A node's interval as the datapath measures it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct MeasuredInterval {
    pub mean_ms: f64,
    pub sd_ms: f64,
}

impl MeasuredInterval {
    /// From an interval word (`hb_common::table::intervals`); `None` if it
    /// holds no sample. A normal distribution's standard deviation is its
    /// mean absolute deviation times sqrt(pi / 2).
    pub fn from_word(word: u64) -> Option<Self> {
        use hb_common::table::intervals;
        let mean_us = intervals::mean_us(word);
        (mean_us != 0).then(|| MeasuredInterval {
            mean_ms: f64::from(mean_us) / 1000.0,
            sd_ms: f64::from(intervals::mad_us(word)) / 1000.0
                * (std::f64::consts::PI / 2.0).sqrt(),
        })
    }
}

/// Asks the agent listening on `socket` for its report, listing at most
/// `limit` nodes.
pub async fn fetch(socket: &Path, limit: usize) -> anyhow::Result<StatusReport> {
    let mut stream = match UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            anyhow::bail!(
                "no agent is running (nothing listens on {}); start one with `hb agent --config FILE`, \
                 or pass --socket if it uses another status socket",
                socket.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", socket.display())),
    };
    let exchange = async {
        stream
            .write_all(format!("{REQUEST} {limit}\n").as_bytes())
            .await?;
        let mut body = Vec::new();
        stream.read_to_end(&mut body).await?;
        Ok::<_, io::Error>(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("the agent did not answer within 10 s")?
        .with_context(|| format!("talking to the agent on {}", socket.display()))?;
    serde_json::from_slice(&body).context("the agent's answer is not a status report")
}

/// Reads one request line: `status` or `status <limit>`; the node limit.
async fn read_request(stream: &mut UnixStream) -> io::Result<Option<usize>> {
    let mut line = String::new();
    let mut reader = BufReader::new(stream).take(64);
    reader.read_line(&mut line).await?;
    let mut words = line.split_whitespace();
    if words.next() != Some(REQUEST) {
        return Ok(None);
    }
    Ok(match words.next() {
        None => Some(DEFAULT_LIMIT),
        Some(limit) => limit.parse().ok(),
    })
}

/// Binds the status socket (mode 0600), refusing if another agent answers on
/// it and removing a stale socket file left by one that died.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
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

/// Accepts status clients and passes each request to the agent's main loop
/// through `queries`; writes the answer back.
async fn serve(listener: UnixListener, queries: mpsc::Sender<Query>) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("status socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let queries = queries.clone();
        tokio::spawn(async move {
            let asked =
                tokio::time::timeout(Duration::from_secs(5), read_request(&mut stream)).await;
            let Ok(Ok(Some(limit))) = asked else { return };
            let (reply, answer) = oneshot::channel();
            if queries.send(Query::Status { limit, reply }).await.is_err() {
                return;
            }
            if let Ok(report) = answer.await
                && let Ok(body) = serde_json::to_vec(&report)
            {
                let _ = stream.write_all(&body).await;
                let _ = stream.shutdown().await;
            }
        });
    }
}

/// Binds the status socket and serves it from a task; the agent's loop
/// answers the questions it sends on `queries`.
pub fn listen(path: &Path, queries: mpsc::Sender<Query>) -> anyhow::Result<()> {
    tokio::spawn(serve(bind(path)?, queries));
    Ok(())
}

/// The report's view of the cluster: every node counted by state, at most
/// `limit` listed (those not up first). [`with_datapath`] adds the
/// datapath's interfaces and counters (read without the sweep's lock), the
/// agent what only it knows (uptime, actions, keys, brake).
pub fn report(cluster: &ClusterView<'_, '_>, limit: usize) -> StatusReport {
    let detector = cluster.detector;
    let states: BTreeMap<String, u64> = NodeState::ALL
        .iter()
        .map(|&state| (state, detector.count(state) as u64))
        .filter(|&(_, count)| count > 0)
        .map(|(state, count)| (state.name().to_owned(), count))
        .collect();
    StatusReport {
        states,
        nodes_total: cluster.nodes.len() as u64,
        nodes: listed_nodes(cluster, limit),
        ..StatusReport::default()
    }
}

/// `report` with the datapath's interfaces and counters.
pub fn with_datapath(report: StatusReport, datapath: &Datapath) -> StatusReport {
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
    StatusReport {
        interfaces: datapath.receiving().into_iter().map(Into::into).collect(),
        counters,
        ..report
    }
}

/// At most `limit` nodes, those not up first, in id order.
fn listed_nodes(cluster: &ClusterView<'_, '_>, limit: usize) -> Vec<NodeStatus> {
    let detector = cluster.detector;
    let not_up = cluster
        .nodes
        .ids()
        .filter(|&id| detector.state(id) != NodeState::Up);
    let up = cluster
        .nodes
        .ids()
        .filter(|&id| detector.state(id) == NodeState::Up);
    let mut listed: Vec<u32> = not_up.chain(up).take(limit).collect();
    listed.sort_unstable();
    let now = monotonic_ns();
    listed
        .into_iter()
        .filter_map(|id| cluster.nodes.get(id))
        .map(|node| node_status(cluster, &node, now))
        .collect()
}

/// One node's line of the report.
pub fn node_status(cluster: &ClusterView<'_, '_>, node: &NodeInfo<'_>, now: u64) -> NodeStatus {
    let (table, detector) = (cluster.table, cluster.detector);
    let record = table.records.get(node.id);
    let arrival = seen::arrival_ns(table.seen.get(node.id));
    let interval_word = table.intervals.get(node.id);
    NodeStatus {
        id: node.id,
        state: detector.state(node.id),
        address: cluster.address(node).map(|a| a.to_string()),
        since_last_heartbeat_ms: (arrival != 0).then(|| now.saturating_sub(arrival) / 1_000_000),
        heartbeats: record.heartbeats,
        incarnation: record.incarnation,
        sequence: record.sequence,
        interval_ms: record.interval_ms,
        measured_interval_ms: MeasuredInterval::from_word(interval_word),
        authenticated: record.is_authenticated(),
        pinned: record.is_pinned(),
        phi: (arrival != 0)
            .then(|| detector.phi(now.saturating_sub(arrival), interval_word))
            .flatten(),
        down_in_ms: detector
            .down_at_ns(node.id, table)
            .map(|d| d.saturating_sub(now) / 1_000_000),
        probe: cluster
            .nodes
            .probe_of(node.id, Duration::ZERO)
            .map(|(address, plan)| NodeProbe {
                kind: plan.kind.name().as_str().to_owned(),
                target: plan.kind.target_text(address),
            }),
        refreshed_by: (arrival != 0).then(|| {
            if record.probed_last() {
                "probe"
            } else {
                "heartbeat"
            }
            .to_owned()
        }),
        name: node.name.clone().into_owned(),
    }
}

impl From<&Brake> for BrakeStatus {
    fn from(brake: &Brake) -> Self {
        BrakeStatus {
            engaged: brake.engaged(),
            held: brake.held() as u64,
            silent: brake.silent() as u64,
        }
    }
}

impl From<Receiving> for InterfaceStatus {
    fn from(receiving: Receiving) -> Self {
        InterfaceStatus {
            name: receiving.interface,
            mode: receiving.mode.to_owned(),
        }
    }
}
