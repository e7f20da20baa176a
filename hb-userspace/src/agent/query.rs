//! The questions the agent's loop answers, from the status socket and the
//! HTTP API alike (one code path per answer), and the answers' shapes.
//!
//! Every question carries a oneshot reply; the loop answers it from the
//! state it owns and, for the detector's verdicts, under the sweep's lock
//! (held for the reading only: the answer is serialized after).

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::{
    agent::status::{self, NodeStatus, StatusReport},
    detect::detector::NodeState,
    sinks::{
        ClusterView,
        metrics::Format,
        state_file::SaveHealth,
        stream::{CursorEvent, EventStream, Subscription},
    },
};

/// Nodes per page unless the client asks for fewer.
pub const DEFAULT_PAGE: usize = 1000;
/// The most nodes one page holds.
pub const MAX_PAGE: usize = 10_000;

/// A question for the agent's loop.
pub enum Query {
    /// `hb status`, `GET /api/v1/status`.
    Status {
        limit: usize,
        reply: oneshot::Sender<StatusReport>,
    },
    /// `GET /api/v1/nodes`.
    Nodes {
        page: PageRequest,
        reply: oneshot::Sender<NodePage>,
    },
    /// `GET /api/v1/nodes/{id or name}`.
    Node {
        key: String,
        reply: oneshot::Sender<Option<NodeDetail>>,
    },
    /// `GET /readyz`.
    Ready { reply: oneshot::Sender<Readiness> },
    /// `GET /api/v1/events`.
    Subscribe {
        since: Option<u64>,
        reply: oneshot::Sender<Subscription>,
    },
    /// `GET /metrics`: the exposition text, or why it could not be written.
    Metrics {
        format: Format,
        reply: oneshot::Sender<Result<String, std::fmt::Error>>,
    },
}

/// Which page of nodes: ids above `after`, in ascending order, optionally
/// only those in `state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct PageRequest {
    pub state: Option<NodeState>,
    pub limit: Option<usize>,
    pub after: Option<u32>,
}

/// One page of nodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodePage {
    pub nodes: Vec<NodeStatus>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<u32>,
}

/// One node in full: its status line, where and when its last heartbeat
/// came from, and its recent transitions.
#[derive(Clone, Debug, Serialize)]
pub struct NodeDetail {
    #[serde(flatten)]
    pub status: NodeStatus,
    /// Source port of the last accepted heartbeat.
    pub source_port: u16,
    /// The sender's own clock in its last heartbeat (informative only).
    pub sent_unix_ms: u64,
    /// How long the node has been in its state, if its last transition is
    /// among the agent's recent events.
    pub in_state_ms: Option<u64>,
    /// Its transitions among the agent's recent events, oldest first.
    pub recent_transitions: Vec<CursorEvent>,
}

/// Whether the agent does its job: the datapath receives (it does once the
/// agent runs), a sweep has run, and the last one is recent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub sweeps: u64,
    /// Since the last sweep; `None` before the first.
    pub last_sweep_ms_ago: Option<u64>,
    /// Why not ready.
    pub reason: Option<String>,
}

/// A page of `sorted_ids` per `request`.
pub fn node_page(
    cluster: &ClusterView<'_, '_>,
    sorted_ids: &[u32],
    request: PageRequest,
    now_ns: u64,
) -> NodePage {
    let limit = request.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let start = request
        .after
        .map_or(0, |after| sorted_ids.partition_point(|&id| id <= after));
    let mut matching = sorted_ids[start..].iter().copied().filter(|&id| {
        request
            .state
            .is_none_or(|state| cluster.detector.state(id) == state)
    });
    let ids: Vec<u32> = matching.by_ref().take(limit).collect();
    let more = matching.next().is_some();
    NodePage {
        next_after: more.then(|| ids.last().copied()).flatten(),
        nodes: ids
            .into_iter()
            .filter_map(|id| cluster.nodes.get(id))
            .map(|node| status::node_status(cluster, &node, now_ns))
            .collect(),
    }
}

/// The node named by `key` (an id, or a name) in full.
pub fn node_detail(
    cluster: &ClusterView<'_, '_>,
    stream: &EventStream,
    key: &str,
    now_ns: u64,
) -> Option<NodeDetail> {
    let id = key.parse().ok().or_else(|| cluster.nodes.find(key))?;
    let node = cluster.nodes.get(id)?;
    let record = cluster.table.records.get(id);
    let recent: Vec<CursorEvent> = stream
        .recent_of(id)
        .iter()
        .map(|event| CursorEvent::clone(event))
        .collect();
    let in_state_ms = recent
        .last()
        .map(|last| now_ns.saturating_sub(last.record.mono_ns) / 1_000_000);
    Some(NodeDetail {
        status: status::node_status(cluster, &node, now_ns),
        source_port: record.src_port,
        sent_unix_ms: record.sent_unix_ns / 1_000_000,
        in_state_ms,
        recent_transitions: recent,
    })
}

/// Whether the agent is ready, given its sweep count and the time of its
/// last sweep; a sweep later than `stall_ns` means it is stalled.
pub fn readiness(
    sweeps: u64,
    last_sweep_ns: u64,
    now_ns: u64,
    stall_ns: u64,
    saving: &SaveHealth,
) -> Readiness {
    let since = (sweeps > 0).then(|| now_ns.saturating_sub(last_sweep_ns));
    let reason = match (since, &saving.error) {
        (None, _) => Some("no sweep has run yet".to_owned()),
        (Some(since), _) if since > stall_ns => Some(format!(
            "the last sweep was {} ms ago: the agent is stalled",
            since / 1_000_000
        )),
        (Some(_), Some(error)) => Some(format!(
            "the state file is not being saved, so a restart would lose node states: {error}"
        )),
        (Some(_), None) => None,
    };
    Readiness {
        ready: reason.is_none(),
        sweeps,
        last_sweep_ms_ago: since.map(|ns| ns / 1_000_000),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_a_recent_sweep() {
        let ms = 1_000_000;
        let fine = SaveHealth::default();
        assert_eq!(
            readiness(0, 0, 5 * ms, 100 * ms, &fine).reason.as_deref(),
            Some("no sweep has run yet")
        );
        let ready = readiness(3, 10 * ms, 50 * ms, 100 * ms, &fine);
        assert!(ready.ready, "{ready:?}");
        assert_eq!(ready.last_sweep_ms_ago, Some(40));
        let stalled = readiness(3, 10 * ms, 500 * ms, 100 * ms, &fine);
        assert!(!stalled.ready);
        assert!(stalled.reason.unwrap().contains("490 ms ago"));
        let failing = SaveHealth {
            error: Some("writing state file /x: No space left on device".to_owned()),
            failures: 1,
            ..SaveHealth::default()
        };
        let unsaved = readiness(3, 10 * ms, 50 * ms, 100 * ms, &failing);
        assert!(!unsaved.ready);
        assert!(unsaved.reason.unwrap().contains("No space left"));
    }
}
