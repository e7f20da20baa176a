//! `hb status`: the agent's view of the cluster, served on a local Unix
//! socket and printed as a table (or JSON) by the client.
//!
//! Protocol: connect, write `status <limit>\n`, read one JSON
//! [`StatusReport`] until the agent closes the connection. The report
//! counts every node by state and lists at most `limit` nodes, the ones not
//! up first, so that a million-node agent answers with a page, not 100 MB.

use std::{collections::BTreeMap, fmt::Write as _, io, path::Path, time::Duration};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::{detect::detector::NodeState, sinks::actions::ActionStats};

/// The request word a client sends, followed by the node limit.
pub const REQUEST: &str = "status";
/// Nodes listed when the client does not say.
pub const DEFAULT_LIMIT: usize = 1000;

/// A request waiting for the agent's main loop to answer it.
pub struct Request {
    /// At most this many nodes in the report.
    pub limit: usize,
    pub reply: oneshot::Sender<StatusReport>,
}

/// Everything `hb status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub uptime_ms: u64,
    pub interfaces: Vec<InterfaceStatus>,
    /// Datapath counters by name, summed over CPUs (XDP) or receive threads (socket).
    pub counters: BTreeMap<String, u64>,
    pub actions: ActionStats,
    pub auth: AuthStatus,
    #[serde(default)]
    pub brake: BrakeStatus,
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
/// through `requests`; writes the answer back.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Request>) {
    loop {
        let mut stream = match listener.accept().await {
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
                tokio::time::timeout(Duration::from_secs(5), read_request(&mut stream)).await;
            let Ok(Ok(Some(limit))) = asked else { return };
            let (reply, answer) = oneshot::channel();
            if requests.send(Request { limit, reply }).await.is_err() {
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

/// Formats the report as the table `hb status` prints.
/// The TRUST column: whether a node signs its heartbeats and is pinned.
fn trust(node: &NodeStatus) -> &'static str {
    match (node.authenticated, node.pinned) {
        (true, true) => "signed,pinned",
        (true, false) => "signed",
        (false, true) => "pinned",
        (false, false) => "-",
    }
}

/// The counters in three lines: what the packets were, why heartbeats were
/// refused, what was done with them; in the datapath's order.
fn render_counters(out: &mut String, counters: &BTreeMap<String, u64>) {
    use hb_common::counters::Counter;
    let line = |out: &mut String, title: &str, keep: &dyn Fn(Counter) -> bool| {
        let values: Vec<_> = Counter::ALL
            .into_iter()
            .filter(|&c| keep(c))
            .filter_map(|c| counters.get(c.name()).map(|v| format!("{}={v}", c.name())))
            .collect();
        let _ = writeln!(out, "{title:<9} {}", values.join(" "));
    };
    line(out, "packets:", &|c| {
        matches!(
            c,
            Counter::Accepted | Counter::NotHeartbeat | Counter::Malformed
        )
    });
    line(out, "refused:", &|c| {
        c.is_heartbeat() && c != Counter::Accepted
    });
    line(out, "verdicts:", &|c| !c.is_outcome());
}

pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let interfaces: Vec<_> = report
        .interfaces
        .iter()
        .map(|i| format!("{} ({})", i.name, i.mode))
        .collect();
    let _ = writeln!(
        out,
        "agent up {}, receiving on {}",
        humantime::format_duration(Duration::from_secs(report.uptime_ms / 1000)),
        interfaces.join(", ")
    );
    let summary: Vec<_> = report
        .states
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    let _ = writeln!(
        out,
        "nodes: {} ({})",
        report.nodes_total,
        summary.join(", ")
    );
    if (report.nodes.len() as u64) < report.nodes_total {
        let _ = writeln!(
            out,
            "showing {} of them, those not up first (--limit N for more)",
            report.nodes.len()
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>8}  {:<16} {:<7} {:>11} {:>10} {:>9} {:>6}  {:<24} {:>9}  {:>16}  TRUST",
        "ID",
        "NAME",
        "STATE",
        "LAST HEARD",
        "HEARTBEATS",
        "DOWN IN",
        "PHI",
        "ADDRESS",
        "SEQUENCE",
        "INTERVAL"
    );
    for node in &report.nodes {
        let _ = writeln!(
            out,
            "{:>8}  {:<16} {:<7} {:>11} {:>10} {:>9} {:>6}  {:<24} {:>9}  {:>16}  {}",
            node.id,
            node.name,
            node.state.name(),
            node.since_last_heartbeat_ms
                .map_or("never".into(), |ms| format!(
                    "{:.2}s ago",
                    ms as f64 / 1000.0
                )),
            node.heartbeats,
            node.down_in_ms
                .map_or("-".into(), |ms| format!("{:.2}s", ms as f64 / 1000.0)),
            node.phi.map_or("-".into(), |phi| format!("{phi:.1}")),
            node.address.as_deref().unwrap_or("-"),
            node.sequence,
            node.measured_interval_ms
                .map_or("-".into(), |i| format!("{:.1}±{:.1}ms", i.mean_ms, i.sd_ms)),
            trust(node),
        );
    }
    let _ = writeln!(out);
    render_counters(&mut out, &report.counters);
    if report.brake.engaged {
        let _ = writeln!(
            out,
            "BRAKE ENGAGED: partition suspected, {} nodes silent, down actions of {} nodes held",
            report.brake.silent, report.brake.held
        );
    }
    let auth = &report.auth;
    let keys = match auth.key_ids[..] {
        [] => "no keys".to_owned(),
        [current] => format!("key id {current}"),
        [current, previous, ..] => {
            format!("key ids {current} (current) and {previous} (previous)")
        }
    };
    let _ = writeln!(
        out,
        "auth: {keys}; heartbeats without a tag {}",
        if auth.accept_unauthenticated {
            "accepted"
        } else {
            "refused"
        }
    );
    let a = &report.actions;
    let _ = writeln!(
        out,
        "actions: {} started, {} succeeded, {} failed, {} timed out, {} running, {} queued",
        a.started, a.succeeded, a.failed, a.timed_out, a.running, a.queued
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_refusals_trust_and_keys() {
        use hb_common::counters::Counter;
        let report = StatusReport {
            uptime_ms: 61_000,
            interfaces: vec![InterfaceStatus {
                name: "eth0".into(),
                mode: "native".into(),
            }],
            counters: Counter::ALL
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name().to_owned(), i as u64))
                .collect(),
            actions: ActionStats::default(),
            auth: AuthStatus {
                key_ids: vec![2, 1],
                accept_unauthenticated: false,
            },
            brake: BrakeStatus {
                engaged: true,
                held: 58,
                silent: 60,
            },
            states: [("up".to_owned(), 1)].into(),
            nodes_total: 1,
            nodes: vec![NodeStatus {
                id: 7,
                name: "db".into(),
                state: NodeState::Up,
                address: Some("198.18.0.7".into()),
                since_last_heartbeat_ms: Some(250),
                heartbeats: 9,
                incarnation: 1,
                sequence: 9,
                interval_ms: 1000,
                measured_interval_ms: MeasuredInterval::from_word(
                    hb_common::table::intervals::word(1_002_000, 4_000),
                ),
                authenticated: true,
                pinned: true,
                phi: Some(0.42),
                down_in_ms: Some(2750),
            }],
        };
        let text = render(&report);
        for needle in [
            "packets:  accepted=0 not_heartbeat=1 malformed=2",
            "refused:  unauthenticated=3 unknown_key=4 bad_tag=5 unknown_node=6 wrong_source=7 \
             replay=8",
            "verdicts: passed=9 dropped=10",
            "auth: key ids 2 (current) and 1 (previous); heartbeats without a tag refused",
            "signed,pinned",
            "1002.0±5.0ms",
            "   0.4  198.18.0.7",
            "BRAKE ENGAGED: partition suspected, 60 nodes silent, down actions of 58 nodes held",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }
}
