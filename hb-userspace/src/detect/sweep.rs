//! One sweep of the node table: the [`Detector`]'s transitions, the
//! [`Brake`]'s verdict on their actions, and whether the agent stalled. The
//! agent's tick is [`Sweep::run`], then it hands the [`SweepOutcome`] to the
//! sinks (log, event log, actions, state file); nothing here does I/O.

use std::time::{Duration, Instant};

use hb_common::table::seen;

use crate::{
    datapath::table::NodeTable,
    detect::{
        brake::{Brake, Change, Clear},
        detector::{Detector, NodeState, Transition},
    },
};

/// The detector and the brake, run together once per sweep period.
pub struct Sweep {
    detector: Detector,
    brake: Brake,
}

/// What one sweep found and decided.
#[derive(Debug, Default)]
pub struct SweepOutcome {
    /// The monotonic time the sweep ran at.
    pub now_ns: u64,
    /// How long the sweep took (the detector, the brake, the verdicts).
    pub took: Duration,
    /// The agent was stalled this long before this sweep (see
    /// [`Detector::sweep`]): nobody is convicted before a full timeout.
    pub stalled_ns: Option<u64>,
    /// Every state change, in node order.
    pub transitions: Vec<Transition>,
    /// The actions to run now: those of `transitions` the brake does not
    /// hold, then the held `down` actions it releases.
    pub actions: Vec<DueAction>,
    /// Nodes whose transition's actions the brake held in this sweep.
    pub held: Vec<u32>,
    /// Actions held in all, after this sweep.
    pub held_in_all: usize,
    /// What the brake decided about the cluster in this sweep.
    pub brake: BrakeNews,
    /// The earliest monotonic instant at which a node may change state
    /// with no new heartbeat ([`Detector::next_look_ns`]): the sweep need
    /// not run before it unless something else may have changed.
    pub next_look_ns: u64,
}

/// An action to run: a node's transition (or a released `down`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DueAction {
    pub node_id: u32,
    pub from: NodeState,
    pub to: NodeState,
    pub since_last_heartbeat_ns: Option<u64>,
    /// A `down` the brake held and releases now (the node is still down).
    pub released: bool,
}

/// The brake engaging or letting go in one sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrakeNews {
    /// The brake engaged: `silent` of `population` nodes went silent within
    /// the brake's window.
    pub partition_suspected: bool,
    /// The brake let go, and why.
    pub partition_cleared: Option<Clear>,
    pub silent: usize,
    pub population: usize,
    /// Held `down` actions the brake lets go of in this sweep (those of
    /// nodes still down are in [`SweepOutcome::actions`]).
    pub released: usize,
}

impl SweepOutcome {
    /// Whether anything changed that the sinks must record.
    pub fn changed(&self) -> bool {
        !self.transitions.is_empty() || !self.actions.is_empty()
    }
}

impl Sweep {
    pub fn new(detector: Detector, brake: Brake) -> Self {
        Sweep { detector, brake }
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    pub fn brake(&self) -> &Brake {
        &self.brake
    }

    /// For a reload: nodes watched and forgotten, new settings.
    pub fn detector_mut(&mut self) -> &mut Detector {
        &mut self.detector
    }

    /// For a reload: new settings.
    pub fn brake_mut(&mut self) -> &mut Brake {
        &mut self.brake
    }

    /// Sweeps `table` at monotonic time `now_ns`: transitions first, then
    /// the brake's view of them (so a burst is seen before the downs it
    /// holds), then which actions run.
    pub fn run(&mut self, now_ns: u64, table: &NodeTable) -> SweepOutcome {
        let started = Instant::now();
        let mut outcome = SweepOutcome {
            now_ns,
            ..SweepOutcome::default()
        };
        outcome.stalled_ns = self.detector.sweep(now_ns, table, &mut outcome.transitions);
        let decisions = self.brake.sweep(
            now_ns,
            self.detector.count(NodeState::Up),
            &brake_changes(&outcome.transitions),
        );
        outcome.brake = BrakeNews {
            partition_suspected: decisions.partition_suspected,
            partition_cleared: decisions.partition_cleared,
            silent: decisions.silent,
            population: decisions.population,
            released: decisions.release.len(),
        };
        for transition in &outcome.transitions {
            if self.admit(now_ns, transition) {
                outcome.actions.push(DueAction {
                    node_id: transition.node_id,
                    from: transition.from,
                    to: transition.to,
                    since_last_heartbeat_ns: transition.since_last_heartbeat_ns,
                    released: false,
                });
            } else {
                outcome.held.push(transition.node_id);
            }
        }
        outcome
            .actions
            .extend(self.released(now_ns, table, &decisions.release));
        outcome.held_in_all = self.brake.held();
        outcome.next_look_ns = self.detector.next_look_ns();
        outcome.took = started.elapsed();
        outcome
    }

    /// Whether the brake lets a transition's actions run now.
    fn admit(&mut self, now_ns: u64, transition: &Transition) -> bool {
        match (transition.from, transition.to) {
            (_, NodeState::Down) => self.brake.admit_down(now_ns, transition.node_id),
            // Came back while its down actions were held: nothing to undo.
            (NodeState::Down | NodeState::Flapping, NodeState::Up) => {
                self.brake.admit_up(transition.node_id)
            }
            _ => true,
        }
    }

    /// The held `down` actions the brake releases, for nodes still down.
    fn released<'a>(
        &'a self,
        now_ns: u64,
        table: &'a NodeTable,
        released: &'a [u32],
    ) -> impl Iterator<Item = DueAction> + 'a {
        released
            .iter()
            .filter(|&&id| self.detector.state(id) == NodeState::Down)
            .map(move |&id| {
                let arrival = seen::arrival_ns(table.seen.get(id));
                DueAction {
                    node_id: id,
                    from: NodeState::Suspect,
                    to: NodeState::Down,
                    since_last_heartbeat_ns: (arrival != 0).then(|| now_ns.saturating_sub(arrival)),
                    released: true,
                }
            })
    }
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
