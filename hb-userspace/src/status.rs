//! `hb status`: the agent's view of the cluster, served on a local Unix
//! socket and printed as a table (or JSON) by the client.
//!
//! Protocol: connect, write `status\n`, read one JSON [`StatusReport`] until
//! the agent closes the connection.

use std::{collections::BTreeMap, fmt::Write as _, io, path::Path, time::Duration};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
};

use crate::{actions::ActionStats, detector::NodeState};

/// The request line a client sends.
pub const REQUEST: &str = "status";

/// Everything `hb status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub uptime_ms: u64,
    pub interfaces: Vec<InterfaceStatus>,
    /// XDP counters by name, summed over CPUs.
    pub counters: BTreeMap<String, u64>,
    pub actions: ActionStats,
    pub nodes: Vec<NodeStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// "native" or "generic".
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
    pub interval_ms: u32,
    /// How long until the node is declared down if it stays silent.
    pub down_in_ms: Option<u64>,
}

/// Asks the agent listening on `socket` for its report.
pub async fn fetch(socket: &Path) -> anyhow::Result<StatusReport> {
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
        stream.write_all(format!("{REQUEST}\n").as_bytes()).await?;
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

/// Reads one request line from a client; true if it asked for the status.
pub async fn read_request(stream: &mut UnixStream) -> io::Result<bool> {
    let mut line = String::new();
    let mut reader = BufReader::new(stream).take(64);
    reader.read_line(&mut line).await?;
    Ok(line.trim() == REQUEST)
}

/// Formats the report as the table `hb status` prints.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let interfaces: Vec<_> = report
        .interfaces
        .iter()
        .map(|i| format!("{} ({})", i.name, i.mode))
        .collect();
    let _ = writeln!(
        out,
        "agent up {}, XDP on {}",
        humantime::format_duration(Duration::from_secs(report.uptime_ms / 1000)),
        interfaces.join(", ")
    );
    let mut by_state = BTreeMap::new();
    for node in &report.nodes {
        *by_state.entry(node.state.name()).or_insert(0) += 1;
    }
    let summary: Vec<_> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let _ = writeln!(
        out,
        "nodes: {} ({})\n",
        report.nodes.len(),
        summary.join(", ")
    );
    let _ = writeln!(
        out,
        "{:>8}  {:<16} {:<7} {:>11} {:>10} {:>9}  {:<24} {:>9}",
        "ID", "NAME", "STATE", "LAST HEARD", "HEARTBEATS", "DOWN IN", "ADDRESS", "SEQUENCE"
    );
    for node in &report.nodes {
        let _ = writeln!(
            out,
            "{:>8}  {:<16} {:<7} {:>11} {:>10} {:>9}  {:<24} {:>9}",
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
            node.address.as_deref().unwrap_or("-"),
            node.sequence,
        );
    }
    let counters: Vec<_> = report
        .counters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(out, "\nXDP counters: {}", counters.join(" "));
    let a = &report.actions;
    let _ = writeln!(
        out,
        "actions: {} started, {} succeeded, {} failed, {} timed out, {} running, {} queued",
        a.started, a.succeeded, a.failed, a.timed_out, a.running, a.queued
    );
    out
}
