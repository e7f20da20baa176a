//! The ledger of action runs: what the journal says about actions, so that
//! an agent killed at any instant neither repeats a run nor forgets one.
//!
//! A sweep's transitions are journaled (synced) before their actions are
//! dispatched; the action runner then tells the ledger which runs it
//! queued ([`RunLedger::decided`], in memory: the transition's entry is
//! their durable record) and, right before each run starts, which
//! transitions it runs for ([`RunLedger::starting`]: a `Started` entry,
//! synced before the process is spawned). A run decided and not started
//! when the agent dies is in the journal without its `Started` entry, or in
//! the snapshot's [`pending`](super::SavedState::pending) list, and the
//! next agent starts it. One started is never started again.
//!
//! A lane runs only a node's newest waiting event (see the action runner's
//! lanes), so per action and node the ledger keeps only the newest run not
//! started; a `Started` entry covers every older one.

use std::{
    collections::HashMap,
    io,
    path::PathBuf,
    sync::{Mutex, MutexGuard, PoisonError},
};

use super::{
    format::PendingRun,
    journal::{self, Change, Journal},
};
use crate::{
    detect::detector::NodeState,
    sinks::actions::{ActionEvent, RunLedger},
};

/// The journal and the runs decided but not started.
pub struct Ledger {
    books: Mutex<Books>,
}

struct Books {
    journal: Journal,
    /// (action, node) → its newest run not started.
    pending: HashMap<(String, u32), PendingRun>,
    /// Shut down: nothing starts any more (a run that would start now is
    /// left to the next agent, which finds it in the final snapshot).
    closed: bool,
}

impl Ledger {
    /// A ledger writing to `journal`, with the runs a previous agent left
    /// pending (which the caller dispatches again).
    pub fn new(journal: Journal, pending: Vec<PendingRun>) -> Self {
        let pending = pending
            .into_iter()
            .map(|run| ((run.action.clone(), run.node_id), run))
            .collect();
        Ledger {
            books: Mutex::new(Books {
                journal,
                pending,
                closed: false,
            }),
        }
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one sweep's changes and syncs them; returns the sequence
    /// number of the first.
    pub fn record(&self, changes: impl IntoIterator<Item = (u32, Change)>) -> io::Result<u64> {
        self.books().journal.append(changes)
    }

    /// For a snapshot: rotates the journal and returns the last entry the
    /// snapshot covers with the runs not started as of that entry.
    pub fn for_snapshot(&self) -> (u64, Vec<PendingRun>) {
        let mut books = self.books();
        if let Err(cause) = books.journal.rotate() {
            tracing::warn!("rotating the state journal: {cause}");
        }
        let mut pending: Vec<PendingRun> = books.pending.values().cloned().collect();
        pending.sort_unstable_by(|a, b| (a.seq, &a.action).cmp(&(b.seq, &b.action)));
        (books.journal.last_seq(), pending)
    }

    /// The rotated journal a snapshot covers.
    pub fn rotated_path(&self) -> PathBuf {
        self.books().journal.rotated_path().to_owned()
    }

    /// At shutdown, before the final snapshot: no run starts any more.
    pub fn close(&self) {
        self.books().closed = true;
    }

    /// After the final snapshot: it covers the whole journal.
    pub fn clear(&self) -> io::Result<()> {
        self.books().journal.clear()
    }
}

impl RunLedger for Ledger {
    fn decided(&self, action: &str, event: &ActionEvent) {
        if event.seq == 0 {
            return;
        }
        let run = PendingRun {
            action: action.to_owned(),
            seq: event.seq,
            node_id: event.node_id,
            event: event.event,
            previous: NodeState::ALL
                .into_iter()
                .find(|s| s.name() == event.previous_state)
                .unwrap_or_default(),
            since_ms: journal::since_ms(
                event
                    .since_last_heartbeat
                    .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            ),
        };
        self.books()
            .pending
            .insert((action.to_owned(), event.node_id), run);
    }

    fn starting(&self, action: &str, runs: &[(u32, u64)]) -> bool {
        let mut books = self.books();
        if books.closed {
            return false;
        }
        let hash = journal::action_hash(action);
        let mut entries = Vec::new();
        for &(node, seq) in runs.iter().filter(|&&(_, seq)| seq != 0) {
            let key = (action.to_owned(), node);
            if books.pending.get(&key).is_some_and(|run| run.seq <= seq) {
                books.pending.remove(&key);
            }
            let change = Change::Started {
                transition: seq,
                action: hash,
            };
            entries.push((node, change));
        }
        if let Err(e) = books.journal.append(entries) {
            // The run goes ahead: a failover matters more than remembering
            // it (the failure shows in the state file's health with the
            // next snapshot or journal write).
            tracing::error!(
                action,
                "recording an action start in the state journal: {e}"
            );
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sinks::actions::Event;

    fn event(node_id: u32, seq: u64, event: Event) -> ActionEvent {
        ActionEvent {
            event,
            node_id,
            node_name: format!("n{node_id}"),
            node_address: None,
            previous_state: "suspect",
            since_last_heartbeat: Some(Duration::from_millis(310)),
            seq,
        }
    }

    #[test]
    fn keeps_the_newest_run_not_started_and_journals_starts() {
        let dir = std::env::temp_dir().join(format!("hb-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state");
        let ledger = Ledger::new(Journal::open(&state, 10).unwrap(), Vec::new());
        ledger.decided("lb", &event(3, 1, Event::Down));
        ledger.decided("lb", &event(3, 2, Event::Up));
        ledger.decided("lb", &event(4, 3, Event::Down));
        ledger.decided("lb", &event(5, 0, Event::Down)); // not journaled
        assert!(ledger.starting("lb", &[(3, 1)]));
        let (_, pending) = ledger.for_snapshot();
        let left: Vec<_> = pending.iter().map(|r| (r.node_id, r.seq)).collect();
        assert_eq!(
            left,
            [(3, 2), (4, 3)],
            "starting 1 does not cover the newer 2"
        );
        assert_eq!(pending[0].previous, NodeState::Suspect);
        assert_eq!(pending[0].since_ms, Some(310));

        assert!(ledger.starting("lb", &[(3, 2), (4, 3)]));
        assert!(ledger.for_snapshot().1.is_empty());
        let starts: Vec<_> = journal::read(&state)
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.node_id, e.change))
            .collect();
        let started = |transition| Change::Started {
            transition,
            action: journal::action_hash("lb"),
        };
        assert_eq!(
            starts,
            [
                (10, 3, started(1)),
                (11, 3, started(2)),
                (12, 4, started(3))
            ]
        );

        ledger.decided("lb", &event(4, 4, Event::Up));
        ledger.close();
        assert!(
            !ledger.starting("lb", &[(4, 4)]),
            "closed: left to the next agent"
        );
        assert_eq!(ledger.for_snapshot().1.len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
