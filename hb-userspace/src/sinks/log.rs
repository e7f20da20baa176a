//! The agent's log of a sweep: each transition in words an operator reads
//! at a glance (or a summary line per kind of change when there are many),
//! the agent's own stalls, and the brake engaging, holding and letting go
//! (the `partition-suspected` and `partition-cleared` events).
//!
//! It reads no detector state but the timeouts of the nodes it announces
//! down, which the agent copies under the sweep's lock ([`timeouts`]): the
//! log itself, O(transitions), runs without it.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    detect::{
        detector::{Detector, NodeState, TableView, Transition},
        sweep::SweepOutcome,
    },
    nodes::{NodeDirectory, NodeInfo},
};

/// What the log reads besides the outcome.
pub struct LogView<'a, 'n> {
    pub nodes: &'a NodeDirectory<'n>,
    /// The timeout of each node the log announces down ([`timeouts`]).
    pub timeouts: &'a [(u32, u64)],
    /// The brake's window, for the partition line.
    pub brake_window: Duration,
}

/// The timeouts the log shows for a sweep's downs, when it announces each
/// node (at most `LOG_EACH_UP_TO` transitions): the little of the
/// detector it reads, copied under the sweep's lock.
pub fn timeouts(
    outcome: &SweepOutcome,
    detector: &Detector,
    table: &impl TableView,
) -> Vec<(u32, u64)> {
    if outcome.transitions.len() > LOG_EACH_UP_TO {
        return Vec::new();
    }
    outcome
        .transitions
        .iter()
        .filter(|t| t.to == NodeState::Down)
        .map(|t| (t.node_id, detector.deadlines(t.node_id, table).down_ns))
        .collect()
}

/// A sweep with more transitions than this logs a summary line per kind of
/// change (and each node at debug level) instead of one line per node.
const LOG_EACH_UP_TO: usize = 50;

/// Logs what one sweep found, in the order it happened.
pub fn sweep(outcome: &SweepOutcome, view: &LogView<'_, '_>) {
    if let Some(stalled) = outcome.stalled_ns {
        tracing::warn!(
            stalled_ms = stalled / 1_000_000,
            "this sweep ran {:.1} s after the previous one: the agent was stalled; no node is \
             convicted until every node has had a full timeout to be heard again",
            stalled as f64 / 1e9
        );
    }
    brake_news(outcome, view.brake_window);
    transitions(&outcome.transitions, view);
    if !outcome.held.is_empty() {
        tracing::warn!(
            held = outcome.held.len(),
            held_in_all = outcome.held_in_all,
            "actions held by the brake (partition suspected)"
        );
    }
    for action in outcome.actions.iter().filter(|a| a.released) {
        if let Some(node) = view.nodes.get(action.node_id) {
            tracing::warn!(node = %node.name, id = node.id, "held down actions released");
        }
    }
}

/// The brake engaging and clearing.
fn brake_news(outcome: &SweepOutcome, window: Duration) {
    let news = &outcome.brake;
    if news.partition_suspected {
        tracing::error!(
            silent = news.silent,
            of = news.population,
            "PARTITION SUSPECTED: {} of {} nodes went silent within {:?}; the fault is probably on \
             this monitor's side (its link, a partition, a pause): down actions are held",
            news.silent,
            news.population,
            window
        );
    }
    if let Some(cause) = news.partition_cleared {
        tracing::warn!(
            cause = cause.name(),
            released = news.released,
            "partition cleared ({}): {} held down actions run now",
            cause.name(),
            news.released
        );
    }
}

/// Each transition, or a summary per kind of change when there are many.
fn transitions(transitions: &[Transition], view: &LogView<'_, '_>) {
    let each = transitions.len() <= LOG_EACH_UP_TO;
    let mut kinds: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for transition in transitions {
        let Some(node) = view.nodes.get(transition.node_id) else {
            tracing::error!(
                id = transition.node_id,
                "a node that is not configured changed state"
            );
            continue;
        };
        if each {
            announce(&node, transition, view);
        } else {
            tracing::debug!(node = %node.name, id = node.id, from = %transition.from, to = %transition.to);
            *kinds
                .entry((transition.from.name(), transition.to.name()))
                .or_default() += 1;
        }
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
}

/// Time since a transition's last heartbeat, as the log shows it.
fn silent_for(transition: &Transition) -> String {
    transition
        .since_last_heartbeat_ns
        .map_or("never heard".to_owned(), |ns| {
            format!("{:.3}s", ns as f64 / 1e9)
        })
}

/// Logs a transition in words an operator reads at a glance.
fn announce(node: &NodeInfo<'_>, transition: &Transition, view: &LogView<'_, '_>) {
    let name = node.name.as_ref();
    let id = node.id;
    match (transition.from, transition.to) {
        (_, NodeState::Down) => {
            let timeout_ns = view
                .timeouts
                .iter()
                .find_map(|&(node, ns)| (node == id).then_some(ns))
                .unwrap_or_default();
            let timeout = Duration::from_nanos(timeout_ns);
            tracing::warn!(node = name, id, silent_for = silent_for(transition), timeout = ?timeout, "node is DOWN: no heartbeat within its timeout")
        }
        (_, NodeState::Suspect) => tracing::info!(
            node = name,
            id,
            silent_for = silent_for(transition),
            "node is suspect: silent past its suspect deadline"
        ),
        (_, NodeState::Flapping) => tracing::warn!(
            node = name,
            id,
            "node is FLAPPING: back, but down too often lately; held down until heard steadily"
        ),
        (NodeState::Suspect, NodeState::Up) => tracing::info!(
            node = name,
            id,
            "node is up: heard again, suspicion cleared"
        ),
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
