//! The questions the agent's loop answers, from the status socket and the
//! HTTP API alike (one code path per answer), and the answers' shapes.
//!
//! Every question carries a oneshot reply; the loop answers it from the
//! state it owns and, for the detector's verdicts, under the sweep's lock
//! (held for the reading only: the answer is serialized after).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::{
    agent::status::{self, NodeStatus, StatusReport},
    detect::detector::{Detector, NodeState, Rule},
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
    /// `GET /api/v1/fleet`: every configured node's state at once.
    Fleet { reply: oneshot::Sender<Fleet> },
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

/// The states of the whole fleet at one instant, for the live view: what
/// `GET /api/v1/fleet` answers. Its body is [`FleetHeader`] as one line of
/// JSON, then one byte per configured node ([`NodeState`] `as u8`, the
/// header's `codes` name them), in ascending id order (the header's `runs`
/// say which ids). A million nodes are a megabyte, copied under the sweep's
/// lock in one pass (0.4 ms, see the test below) and sent as they are: no
/// per-node JSON, no base64 to encode or decode.
pub struct Fleet {
    pub header: FleetHeader,
    /// One byte per node of `sorted_ids`, in that order.
    pub states: Vec<u8>,
}

/// What `GET /api/v1/fleet`'s first line says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetHeader {
    /// [`FLEET_FORMAT`]: the layout of the body.
    pub format: String,
    /// The event stream's cursor when the states were read: resume the
    /// stream with `since=cursor` and no change is missed (a change the
    /// states already show may be replayed: it sets the same state again).
    pub cursor: u64,
    /// The agent's process id: a new one means the agent restarted, and
    /// its stream's cursors started again from 1.
    pub pid: u32,
    /// `timeout` or `phi` (`[detector] kind`).
    pub detector: String,
    /// Configured nodes: the number of state bytes after the header.
    pub nodes: u64,
    /// The configured ids as `[first, count]` runs, ascending.
    pub runs: Vec<[u32; 2]>,
    /// Nodes per state, by name.
    pub counts: BTreeMap<String, u64>,
    /// The state each byte value stands for (`codes[byte]`).
    pub codes: Vec<String>,
}

/// The layout of `GET /api/v1/fleet`'s body.
pub const FLEET_FORMAT: &str = "hb-fleet/1: one line of JSON, then one state byte per node";
/// The `Content-Type` of `GET /api/v1/fleet`.
pub const FLEET_CONTENT_TYPE: &str = "application/octet-stream";

impl Fleet {
    /// The body: the header's line, then the state bytes.
    pub fn to_body(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut body = serde_json::to_vec(&self.header)?;
        body.reserve_exact(1 + self.states.len());
        body.push(b'\n');
        body.extend_from_slice(&self.states);
        Ok(body)
    }
}

/// The state of every node of `sorted_ids`, one byte each, and the counts
/// by state: what is read under the sweep's lock (one pass, no allocation
/// but the result's).
pub fn fleet_states(detector: &Detector, sorted_ids: &[u32]) -> (Vec<u8>, [u64; 6]) {
    let states: Vec<u8> = sorted_ids
        .iter()
        .map(|&id| detector.state(id) as u8)
        .collect();
    let counts = NodeState::ALL.map(|state| detector.count(state) as u64);
    (states, counts)
}

/// The name of `detector`'s rule.
pub fn detector_kind(detector: &Detector) -> &'static str {
    match detector.settings().rule {
        Rule::Timeout => "timeout",
        Rule::Phi { .. } => "phi",
    }
}

/// The fleet from what [`fleet_states`] read: the runs of `sorted_ids` are
/// computed here, after the lock is let go.
pub fn fleet(
    sorted_ids: &[u32],
    (states, counts): (Vec<u8>, [u64; 6]),
    cursor: u64,
    detector: &str,
) -> Fleet {
    Fleet {
        header: FleetHeader {
            format: FLEET_FORMAT.to_owned(),
            cursor,
            pid: std::process::id(),
            detector: detector.to_owned(),
            nodes: states.len() as u64,
            runs: runs(sorted_ids),
            counts: NodeState::ALL
                .iter()
                .zip(counts)
                .map(|(state, count)| (state.name().to_owned(), count))
                .collect(),
            codes: (0..=u8::MAX)
                .map_while(NodeState::from_u8)
                .map(|state| state.name().to_owned())
                .collect(),
        },
        states,
    }
}

/// Ascending ids as `[first, count]` runs of consecutive ids.
pub fn runs(sorted_ids: &[u32]) -> Vec<[u32; 2]> {
    let mut runs: Vec<[u32; 2]> = Vec::new();
    for &id in sorted_ids {
        match runs.last_mut() {
            Some([first, count]) if first.checked_add(*count) == Some(id) => *count += 1,
            _ => runs.push([id, 1]),
        }
    }
    runs
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
    use std::time::Instant;

    use super::*;
    use crate::detect::detector::{DetectorSettings, WatchedNode};

    /// A detector watching `ids`, every tenth of them down, the others up.
    fn detector_of(ids: &[u32]) -> Detector {
        let watched: Vec<WatchedNode> = ids
            .iter()
            .map(|&node_id| WatchedNode {
                node_id,
                interval_ns: None,
            })
            .collect();
        let table_len = ids.last().map_or(1, |last| last + 1);
        let settings = DetectorSettings::plain_timeout(1_000_000_000, 3);
        let mut detector = Detector::new(settings, table_len, &watched, 0);
        for (i, &id) in ids.iter().enumerate() {
            let state = if i % 10 == 9 {
                NodeState::Down
            } else {
                NodeState::Up
            };
            detector.restore(id, state, 1000, 0);
        }
        detector
    }

    #[test]
    fn runs_group_consecutive_ids() {
        assert_eq!(runs(&[]), Vec::<[u32; 2]>::new());
        assert_eq!(runs(&[7]), [[7, 1]]);
        assert_eq!(
            runs(&[1, 2, 3, 7, 100, 101, 102]),
            [[1, 3], [7, 1], [100, 3]]
        );
        assert_eq!(runs(&[u32::MAX - 1, u32::MAX]), [[u32::MAX - 1, 2]]);
    }

    #[test]
    fn the_fleet_body_is_a_json_line_then_a_byte_per_node() {
        let ids = [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 40];
        let detector = detector_of(&ids);
        let read = fleet_states(&detector, &ids);
        let fleet = fleet(&ids, read, 42, detector_kind(&detector));
        let body = fleet.to_body().unwrap();
        let newline = body.iter().position(|&b| b == b'\n').unwrap();
        let header: FleetHeader = serde_json::from_slice(&body[..newline]).unwrap();
        assert_eq!(header.cursor, 42);
        assert_eq!(header.detector, "timeout");
        assert_eq!(header.nodes, ids.len() as u64);
        assert_eq!(header.runs, [[1, 3], [5, 7], [40, 1]]);
        assert_eq!(header.counts["up"], 10);
        assert_eq!(header.counts["down"], 1);
        assert_eq!(header.counts["suspect"], 0);
        let states = &body[newline + 1..];
        assert_eq!(states.len(), ids.len());
        let names: Vec<&str> = states
            .iter()
            .map(|&b| header.codes[usize::from(b)].as_str())
            .collect();
        assert_eq!(names[0], "up");
        assert_eq!(names[9], "down", "{names:?}");
        assert_eq!(header.codes.len(), NodeState::ALL.len());
        for state in NodeState::ALL {
            assert_eq!(header.codes[state as usize], state.name());
        }
    }

    /// The fleet of a million nodes: the copy under the sweep's lock, the
    /// runs and the body after it. Printed (`--nocapture`), and bounded
    /// loosely in release builds (a copy per node, not a lookup).
    #[test]
    fn a_million_nodes_fleet_is_one_cheap_copy() {
        let ids: Vec<u32> = (1..=1_000_000).collect();
        let detector = detector_of(&ids);
        let mut locked = Vec::new();
        let mut after = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let read = fleet_states(&detector, &ids);
            locked.push(started.elapsed());
            let started = Instant::now();
            let body = fleet(&ids, read, 1, "timeout").to_body().unwrap();
            after.push(started.elapsed());
            assert_eq!(
                body.len(),
                body.iter().position(|&b| b == b'\n').unwrap() + 1 + ids.len()
            );
        }
        locked.sort();
        after.sort();
        eprintln!(
            "fleet of 1,000,000 nodes: {:.2} ms under the sweep's lock, {:.2} ms after it (runs \
             and body), medians of 5",
            locked[2].as_secs_f64() * 1e3,
            after[2].as_secs_f64() * 1e3
        );
        if !cfg!(debug_assertions) {
            assert!(locked[2].as_millis() < 50, "{locked:?}");
        }
    }

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
