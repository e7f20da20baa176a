//! What consumes a sweep's outcome: the [`log`], the [`event_log`] (JSON
//! lines of state changes), the [`stream`] (recent events and the HTTP API's
//! live stream), the [`actions`] (failover commands, bounded and timed out)
//! and the [`state_file`] (node states kept across restarts).
//! [`Sinks::consume`] hands one [`SweepOutcome`] to each of them but the
//! log and the metrics: the agent logs it ([`log::sweep`], which reads the
//! detector, under the sweep's lock), and the sweep thread records the
//! [`metrics`] itself.
//!
//! In a monitor group ([`crate::group`]) the due actions become this
//! monitor's opinions, published to the group; the actions run on the
//! leader, for the group's verdicts ([`Sinks::act_for_group`]).

pub mod actions;
pub mod event_log;
pub mod log;
pub mod metrics;
pub mod state_file;
pub mod stream;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use hb_common::table::src_ip;

use self::{
    actions::{ActionEvent, ActionRunner, Event},
    event_log::{EventLog, EventRecord},
    metrics::Metrics,
    state_file::{PendingRun, SavedState, StateSaver, Verdicts},
    stream::EventStream,
};
use crate::{
    datapath::table::NodeTable,
    detect::{
        detector::{Detector, NodeState},
        sweep::{DueAction, SweepOutcome},
    },
    group::{Decision, GroupHandle, Opinion},
    nodes::{NodeDirectory, NodeInfo},
};

/// What the sinks read besides the outcome: who the nodes are, what the
/// datapath recorded about them, and what the detector decided.
pub struct ClusterView<'a, 'n> {
    pub nodes: &'a NodeDirectory<'n>,
    pub table: &'a NodeTable,
    pub detector: &'a Detector,
}

impl<'a, 'n> ClusterView<'a, 'n> {
    /// The configured address of a node, else where its last heartbeat came
    /// from.
    pub fn address(&self, node: &NodeInfo<'_>) -> Option<IpAddr> {
        self.roster().address(node)
    }

    /// The part that is not the detector's.
    pub fn roster(&self) -> Roster<'a, 'n> {
        Roster {
            nodes: self.nodes,
            table: self.table,
        }
    }
}

/// Who the nodes are and what the datapath recorded about them: what the
/// sinks read without the detector (so without the sweep's lock).
#[derive(Clone, Copy)]
pub struct Roster<'a, 'n> {
    pub nodes: &'a NodeDirectory<'n>,
    pub table: &'a NodeTable,
}

impl Roster<'_, '_> {
    /// The configured address of a node, else where its last heartbeat came
    /// from.
    pub fn address(&self, node: &NodeInfo<'_>) -> Option<IpAddr> {
        node.address.or_else(|| {
            let record = self.table.records.get(node.id);
            (record.heartbeats != 0).then(|| src_ip(record.src_addr))
        })
    }
}

/// Every consumer of sweep outcomes.
pub struct Sinks {
    pub events: EventLog,
    /// The recent events and the HTTP API's live stream.
    pub stream: EventStream,
    /// What `/metrics` exposes.
    pub metrics: Arc<Metrics>,
    pub actions: ActionRunner,
    pub saver: StateSaver,
    /// The monitor group, if configured: due actions go there as opinions
    /// instead of to `actions`.
    pub group: Option<GroupHandle>,
}

impl Sinks {
    /// Hands one sweep's changes to the journal, then the event log, the
    /// live stream and the action runner, in that order. Reads nothing of
    /// the detector: the agent calls it without the sweep's lock. A sweep
    /// that changed nothing (a stall, brake news alone) costs nothing here.
    pub fn consume(&mut self, outcome: &SweepOutcome, roster: Roster<'_, '_>) {
        if !outcome.changed() {
            return;
        }
        // On disk before any action starts: a restart never repeats an
        // event nor forgets one.
        let seqs = self.saver.journal(outcome);
        for transition in &outcome.transitions {
            if let Some(node) = roster.nodes.get(transition.node_id) {
                let record = EventRecord::new(outcome.now_ns, &node.name, transition);
                self.events.record(&record);
                self.stream.publish(record);
            }
        }
        self.events.flush();
        match &self.group {
            Some(group) => group.opine(opinions(outcome)),
            None => self.dispatch(outcome, &seqs, roster),
        }
    }

    /// Runs the actions of incidents this monitor recorded as the group's
    /// leader, in one call (batch actions run once). The event is the
    /// group's verdict; the silence is this monitor's own view.
    pub fn act_for_group(&self, decisions: &[Decision], roster: Roster<'_, '_>, now_ns: u64) {
        let events: Vec<ActionEvent> = decisions
            .iter()
            .filter_map(|decision| {
                let Some(node) = roster.nodes.get(decision.node_id) else {
                    tracing::warn!(
                        node_id = decision.node_id,
                        "the group's verdict is about a node this monitor does not know: no \
                         action runs for it (do the group's monitors watch the same nodes?)"
                    );
                    return None;
                };
                let arrival = hb_common::table::seen::arrival_ns(roster.table.seen.get(node.id));
                Some(ActionEvent {
                    event: Event::of_state(decision.verdict.state())?,
                    node_id: node.id,
                    node_address: roster.address(&node).map(|a| a.to_string()),
                    node_name: node.name.into_owned(),
                    previous_state: decision.previous.state().name(),
                    since_last_heartbeat: (arrival != 0)
                        .then(|| Duration::from_nanos(now_ns.saturating_sub(arrival))),
                    seq: 0,
                })
            })
            .collect();
        self.actions.dispatch_sweep(events);
    }

    /// Hands one sweep's due transitions to the action runner, in one call
    /// and in order, so batch actions run once per sweep and each node's
    /// events stay in order. `seqs`: the journal entries of the outcome's
    /// transitions, then of its releases.
    fn dispatch(&self, outcome: &SweepOutcome, seqs: &[u64], roster: Roster<'_, '_>) {
        let (of_transitions, of_releases) = seqs.split_at(outcome.transitions.len());
        let seq_of: HashMap<(u32, NodeState), u64> = outcome
            .transitions
            .iter()
            .zip(of_transitions)
            .map(|(t, &seq)| ((t.node_id, t.to), seq))
            .collect();
        let mut releases = of_releases.iter();
        let events: Vec<ActionEvent> = outcome
            .actions
            .iter()
            .filter_map(|action| {
                let seq = if action.released {
                    releases.next().copied()
                } else {
                    seq_of.get(&(action.node_id, action.to)).copied()
                };
                action_event(action, roster, seq.unwrap_or(0))
            })
            .collect();
        self.actions.dispatch_sweep(events);
    }

    /// Starts the action runs a previous agent decided and did not start
    /// (oldest first), each for its own action only. Runs of nodes no
    /// longer configured are dropped.
    pub fn resume(&self, pending: &[PendingRun], roster: Roster<'_, '_>) {
        if pending.is_empty() {
            return;
        }
        tracing::info!(
            runs = pending.len(),
            "starting the action runs decided before the restart that had not started"
        );
        let mut by_action: BTreeMap<&str, Vec<ActionEvent>> = BTreeMap::new();
        for run in pending {
            let Some(node) = roster.nodes.get(run.node_id) else {
                continue;
            };
            by_action.entry(&run.action).or_default().push(ActionEvent {
                event: run.event,
                node_id: node.id,
                node_address: roster.address(&node).map(|a| a.to_string()),
                node_name: node.name.into_owned(),
                previous_state: run.previous.name(),
                since_last_heartbeat: run.since_ms.map(|ms| Duration::from_millis(ms.into())),
                seq: run.seq,
            });
        }
        for (action, events) in by_action {
            self.actions.dispatch_to(action, events);
        }
    }

    /// When the node states are next due to be saved, if they are.
    pub fn save_due_at(&self) -> Option<std::time::Instant> {
        self.saver.due_at()
    }

    /// Saves the node states in a blocking task if due, from `verdicts`
    /// copied under the sweep's lock when every outcome so far was
    /// consumed (so that the snapshot and the journal agree).
    pub fn save_if_due(&mut self, roster: Roster<'_, '_>, verdicts: Verdicts) {
        self.saver
            .save_if_due(|seq| state_file::snapshot_of(roster.nodes, verdicts, roster.table, seq));
    }

    /// At shutdown: flushes the event log and saves the node states now,
    /// as `snapshot` builds them from the journal's last entry and the
    /// runs not started.
    pub async fn save(&mut self, snapshot: impl FnOnce((u64, Vec<PendingRun>)) -> SavedState) {
        self.events.flush();
        self.saver.save_now(snapshot).await;
    }
}

/// What a sweep changes of this monitor's opinions in its group: the due
/// actions' new states, suspicion left out (it stays local).
fn opinions(outcome: &SweepOutcome) -> Vec<(u32, Opinion)> {
    outcome
        .actions
        .iter()
        .filter_map(|action| Some((action.node_id, Opinion::of_state(action.to)?)))
        .collect()
}

/// The action event of one due transition; `None` for an unknown node or
/// a state no action can subscribe to.
fn action_event(action: &DueAction, roster: Roster<'_, '_>, seq: u64) -> Option<ActionEvent> {
    let node = roster.nodes.get(action.node_id)?;
    Some(ActionEvent {
        event: Event::of_state(action.to)?,
        node_id: node.id,
        node_address: roster.address(&node).map(|a| a.to_string()),
        node_name: node.name.into_owned(),
        previous_state: action.from.name(),
        since_last_heartbeat: action.since_last_heartbeat_ns.map(Duration::from_nanos),
        seq,
    })
}
