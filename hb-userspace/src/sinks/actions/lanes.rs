//! Who runs next: the order of runs per action and node, kept as "lanes".
//!
//! A lane exists while something is running or waiting in it, and only then
//! (a million quiet nodes cost nothing). A per-event action has one lane
//! per node; a batch action has one lane in all. A lane runs one thing at a
//! time, so a node's later event for an action starts only after the
//! action's run for its earlier event has ended (finished, failed or killed
//! at its timeout).
//!
//! Coalescing: a lane holds at most one waiting run. For a per-event action
//! that is the node's newest event: a newer one supersedes it (down, up,
//! down, up while the first down runs: the first down, then the last up;
//! down, up, down: the first down, then the last down). A run is never
//! skipped because it repeats the state just run: the action always ends
//! having been run with the node's newest event (with its own
//! `HB_PREVIOUS_STATE` and silence), so actions must be idempotent, as
//! they had to be anyway. For a batch action, the sweeps that end while a
//! batch runs are merged into one waiting batch, in which a node's newer
//! event supersedes its older one (the newer one takes its place at the
//! end, so the batch stays in the order the events happened).

use std::{collections::HashMap, sync::Arc};

use super::ActionEvent;

/// The lanes of all actions; actions are named by their index in the
/// runner's list.
pub(super) struct Lanes {
    /// (action, node) → the node's lane for that per-event action.
    nodes: HashMap<(usize, u32), NodeLane>,
    /// Per action: its lane, if it is a batch action with a batch running.
    batches: Vec<Option<BatchLane>>,
}

#[derive(Default)]
struct NodeLane {
    waiting: Option<Arc<ActionEvent>>,
    /// Events superseded since the last run was taken from this lane.
    superseded: u64,
}

#[derive(Default)]
struct BatchLane {
    /// Waiting events in order; `None` where a newer event of the same
    /// node superseded one.
    waiting: Vec<Option<Arc<ActionEvent>>>,
    /// Node id → its event's position in `waiting`.
    index: HashMap<u32, usize>,
    superseded: u64,
}

/// What [`Lanes::push_event`] and [`Lanes::push_batch`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    /// The lane was empty: the caller starts a worker for it with the input.
    Start,
    /// A new waiting run, behind the running one.
    Waiting,
    /// Added to the waiting run, superseding this many of its events.
    Merged { superseded: u64 },
}

/// The next run of a lane.
pub(super) struct Next<T> {
    pub input: T,
    /// How many events were superseded (not run) in favour of it.
    pub superseded: u64,
}

impl Lanes {
    pub fn new(actions: usize) -> Self {
        Self {
            nodes: HashMap::new(),
            batches: (0..actions).map(|_| None).collect(),
        }
    }

    /// Room for batch lanes of `actions` actions (a reload appended some).
    pub fn grow(&mut self, actions: usize) {
        if self.batches.len() < actions {
            self.batches.resize_with(actions, || None);
        }
    }

    /// Queues `event` for the per-event action `action`.
    pub fn push_event(&mut self, action: usize, event: &Arc<ActionEvent>) -> Pushed {
        use std::collections::hash_map::Entry;
        match self.nodes.entry((action, event.node_id)) {
            Entry::Vacant(vacant) => {
                vacant.insert(NodeLane::default());
                Pushed::Start
            }
            Entry::Occupied(mut lane) => {
                let lane = lane.get_mut();
                if lane.waiting.replace(Arc::clone(event)).is_some() {
                    lane.superseded += 1;
                    Pushed::Merged { superseded: 1 }
                } else {
                    Pushed::Waiting
                }
            }
        }
    }

    /// The run after the one that just ended in `action`'s lane for `node`;
    /// `None` closes the lane.
    pub fn next_event(&mut self, action: usize, node: u32) -> Option<Next<Arc<ActionEvent>>> {
        let lane = self.nodes.get_mut(&(action, node))?;
        match lane.waiting.take() {
            Some(input) => Some(Next {
                input,
                superseded: std::mem::take(&mut lane.superseded),
            }),
            None => {
                self.nodes.remove(&(action, node));
                None
            }
        }
    }

    /// Queues one sweep's events (in order, not empty) for the batch action
    /// `action`.
    pub fn push_batch(&mut self, action: usize, events: &[Arc<ActionEvent>]) -> Pushed {
        let Some(slot) = self.batches.get_mut(action) else {
            return Pushed::Start;
        };
        let Some(lane) = slot else {
            *slot = Some(BatchLane::default());
            return Pushed::Start;
        };
        let was_empty = lane.waiting.is_empty();
        let mut superseded = 0;
        for event in events {
            let position = lane.waiting.len();
            if let Some(old) = lane.index.insert(event.node_id, position) {
                lane.waiting[old] = None;
                superseded += 1;
            }
            lane.waiting.push(Some(Arc::clone(event)));
        }
        lane.superseded += superseded;
        if was_empty {
            Pushed::Waiting
        } else {
            Pushed::Merged { superseded }
        }
    }

    /// The batch after the one that just ended in `action`'s lane; `None`
    /// closes the lane.
    pub fn next_batch(&mut self, action: usize) -> Option<Next<Vec<Arc<ActionEvent>>>> {
        let slot = self.batches.get_mut(action)?;
        let lane = slot.as_mut()?;
        if lane.waiting.is_empty() {
            *slot = None;
            return None;
        }
        lane.index.clear();
        Some(Next {
            input: lane.waiting.drain(..).flatten().collect(),
            superseded: std::mem::take(&mut lane.superseded),
        })
    }

    /// Closes a lane whose worker is gone (cancelled at shutdown, or
    /// panicked). Returns whether a run was waiting in it.
    pub fn abandon(&mut self, lane: Lane) -> bool {
        match lane {
            Lane::Node { action, node } => self
                .nodes
                .remove(&(action, node))
                .is_some_and(|lane| lane.waiting.is_some()),
            Lane::Batch { action } => self
                .batches
                .get_mut(action)
                .and_then(Option::take)
                .is_some_and(|lane| !lane.waiting.is_empty()),
        }
    }

    /// Open lanes (for tests: that idle nodes cost no entry).
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.nodes.len() + self.batches.iter().flatten().count()
    }
}

/// One lane's name.
#[derive(Clone, Copy, Debug)]
pub(super) enum Lane {
    Node { action: usize, node: u32 },
    Batch { action: usize },
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sinks::actions::Event;

    fn ev(node: u32, event: Event) -> Arc<ActionEvent> {
        Arc::new(ActionEvent {
            event,
            node_id: node,
            node_name: format!("n{node}"),
            node_address: None,
            previous_state: "up",
            since_last_heartbeat: Some(Duration::from_millis(5)),
            seq: 0,
        })
    }

    #[test]
    fn a_node_lane_keeps_only_the_newest_waiting_event() {
        let mut lanes = Lanes::new(2);
        assert_eq!(lanes.push_event(0, &ev(1, Event::Down)), Pushed::Start);
        // Another node and another action have lanes of their own.
        assert_eq!(lanes.push_event(0, &ev(2, Event::Up)), Pushed::Start);
        assert_eq!(lanes.push_event(1, &ev(1, Event::Down)), Pushed::Start);
        assert_eq!(lanes.push_event(0, &ev(1, Event::Up)), Pushed::Waiting);
        assert_eq!(
            lanes.push_event(0, &ev(1, Event::Down)),
            Pushed::Merged { superseded: 1 }
        );
        assert_eq!(
            lanes.push_event(0, &ev(1, Event::Up)),
            Pushed::Merged { superseded: 1 }
        );
        let next = lanes.next_event(0, 1).expect("a waiting run");
        assert_eq!(next.input.event, Event::Up);
        assert_eq!(next.superseded, 2);
        assert!(lanes.next_event(0, 1).is_none());
        assert!(lanes.next_event(0, 2).is_none());
        assert!(lanes.next_event(1, 1).is_none());
        assert_eq!(lanes.open(), 0, "idle lanes must not keep entries");
        // A closed lane starts again.
        assert_eq!(lanes.push_event(0, &ev(1, Event::Down)), Pushed::Start);
    }

    #[test]
    fn waiting_batches_merge_in_order_and_newer_events_supersede() {
        let mut lanes = Lanes::new(1);
        assert_eq!(lanes.push_batch(0, &[ev(1, Event::Down)]), Pushed::Start);
        assert_eq!(
            lanes.push_batch(0, &[ev(1, Event::Up), ev(2, Event::Down)]),
            Pushed::Waiting
        );
        assert_eq!(
            lanes.push_batch(0, &[ev(3, Event::Down), ev(1, Event::Down)]),
            Pushed::Merged { superseded: 1 }
        );
        let next = lanes.next_batch(0).expect("a waiting batch");
        let got: Vec<(u32, Event)> = next.input.iter().map(|e| (e.node_id, e.event)).collect();
        assert_eq!(got, [(2, Event::Down), (3, Event::Down), (1, Event::Down)]);
        assert_eq!(next.superseded, 1);
        // The index was reset with the batch: no stale supersession.
        assert_eq!(lanes.push_batch(0, &[ev(2, Event::Up)]), Pushed::Waiting);
        assert_eq!(lanes.next_batch(0).expect("batch").input.len(), 1);
        assert!(lanes.next_batch(0).is_none());
        assert_eq!(lanes.open(), 0);
    }

    #[test]
    fn abandoned_lanes_close_and_say_whether_a_run_waited() {
        let mut lanes = Lanes::new(1);
        lanes.push_event(0, &ev(1, Event::Down));
        lanes.push_event(0, &ev(1, Event::Up));
        assert!(lanes.abandon(Lane::Node { action: 0, node: 1 }));
        lanes.push_batch(0, &[ev(1, Event::Down)]);
        assert!(!lanes.abandon(Lane::Batch { action: 0 }));
        assert_eq!(lanes.open(), 0);
    }
}
