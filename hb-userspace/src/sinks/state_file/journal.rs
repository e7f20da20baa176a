//! The journal beside the state file (`<state_file>.journal`): every state
//! change of a sweep is appended and synced to disk *before* its actions
//! start, so that an agent killed at any instant (even SIGKILL) neither
//! repeats an event it reported nor forgets one it decided. The state file
//! is a snapshot taken every few seconds; the journal holds what happened
//! since.
//!
//! Entries are 32 bytes: a sequence number, the sweep's monotonic time, the
//! node, what changed, and a CRC-32 of the rest, so a torn last entry (a
//! crash in the middle of a write) is recognised and ignored. When a
//! snapshot is taken the journal is rotated to `<state_file>.journal.1`,
//! which the snapshot covers and which is removed once it is on disk; an
//! agent that starts replays the entries of both files that are newer than
//! its snapshot ([`SavedState::journal_seq`](super::format::SavedState)).

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use super::format::{PendingRun, SavedNode, SavedState};
use crate::{
    detect::detector::{FlapHistory, NodeState, STORE_MARGIN_NS},
    sinks::actions::Event,
};

/// Bytes per entry.
const ENTRY_LEN: usize = 32;

/// One journal entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub node_id: u32,
    pub change: Change,
}

/// What an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The sweep at monotonic `now_ns` moved the node from `from` to `to`;
    /// `held` if the brake held its actions (they are not run); its
    /// silence then (`None`: never heard).
    Transition {
        now_ns: u64,
        from: NodeState,
        to: NodeState,
        held: bool,
        since_ms: Option<u32>,
    },
    /// The brake let go of the node's held `down` at `now_ns`: its actions
    /// run.
    Released { now_ns: u64, since_ms: Option<u32> },
    /// The action whose name hashes to `action` ([`action_hash`]) is about
    /// to run for the node's entry `transition` (a transition or a release),
    /// and so for every earlier one of the node it had not run yet.
    Started { transition: u64, action: u32 },
}

impl Change {
    /// The sweep time of a transition or a release.
    pub fn now_ns(&self) -> Option<u64> {
        match *self {
            Change::Transition { now_ns, .. } | Change::Released { now_ns, .. } => Some(now_ns),
            Change::Started { .. } => None,
        }
    }
}

/// What a [`Change::Started`] entry names an action by: the CRC-32 of its
/// name.
pub fn action_hash(name: &str) -> u32 {
    crc32fast::hash(name.as_bytes())
}

/// A silence in whole milliseconds, as an entry holds it.
pub fn since_ms(since_ns: Option<u64>) -> Option<u32> {
    since_ns.map(|ns| {
        u32::try_from(ns / 1_000_000)
            .unwrap_or(u32::MAX - 1)
            .min(u32::MAX - 1)
    })
}

const NO_SINCE: u32 = u32::MAX;

impl Entry {
    fn encode(&self) -> [u8; ENTRY_LEN] {
        let since = |s: Option<u32>| s.unwrap_or(NO_SINCE);
        let (kind, time, states, tail) = match self.change {
            Change::Transition {
                now_ns,
                from,
                to,
                held,
                since_ms,
            } => (
                1u8,
                now_ns,
                [from as u8, to as u8, u8::from(held)],
                since(since_ms),
            ),
            Change::Released { now_ns, since_ms } => (2, now_ns, [0; 3], since(since_ms)),
            Change::Started { transition, action } => (3, transition, [0; 3], action),
        };
        let mut out = [0; ENTRY_LEN];
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&time.to_le_bytes());
        out[16..20].copy_from_slice(&self.node_id.to_le_bytes());
        out[20] = kind;
        out[21..24].copy_from_slice(&states);
        out[24..28].copy_from_slice(&tail.to_le_bytes());
        let crc = crc32fast::hash(&out[..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The entry in `bytes`, or `None` if it is torn or damaged.
    fn decode(bytes: &[u8; ENTRY_LEN]) -> Option<Self> {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        if crc32fast::hash(&bytes[..28]) != u32_at(28) {
            return None;
        }
        let tail = u32_at(24);
        let since_ms = (tail != NO_SINCE).then_some(tail);
        let change = match bytes[20] {
            1 => Change::Transition {
                now_ns: u64_at(8),
                from: NodeState::from_u8(bytes[21])?,
                to: NodeState::from_u8(bytes[22])?,
                held: bytes[23] != 0,
                since_ms,
            },
            2 => Change::Released {
                now_ns: u64_at(8),
                since_ms,
            },
            3 => Change::Started {
                transition: u64_at(8),
                action: tail,
            },
            _ => return None,
        };
        Some(Entry {
            seq: u64_at(0),
            node_id: u32_at(16),
            change,
        })
    }
}

/// The journal's two files for a state file at `state_file`: the current
/// one and the rotated one.
pub fn paths(state_file: &Path) -> (PathBuf, PathBuf) {
    let with = |suffix: &str| {
        let mut path = state_file.as_os_str().to_owned();
        path.push(suffix);
        PathBuf::from(path)
    };
    (with(".journal"), with(".journal.1"))
}

/// The entries of both files, oldest first; each file is read up to its
/// first torn or damaged entry. No file: no entry.
pub fn read(state_file: &Path) -> io::Result<Vec<Entry>> {
    let (current, rotated) = paths(state_file);
    let mut entries = read_file(&rotated)?;
    entries.extend(read_file(&current)?);
    Ok(entries)
}

fn read_file(path: &Path) -> io::Result<Vec<Entry>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::with_capacity(bytes.len() / ENTRY_LEN);
    for chunk in bytes.chunks_exact(ENTRY_LEN) {
        match Entry::decode(chunk.try_into().expect("exact chunks")) {
            Some(entry) => entries.push(entry),
            None => break,
        }
    }
    Ok(entries)
}

/// Applies the entries newer than `state`'s snapshot to it, as the agent
/// that wrote them did: node states, flap history, held and released
/// `down` actions, how far sweeps had looked, and the actions decided but
/// not started ([`SavedState::pending`]). `subscribed` names the actions
/// an event runs (those configured now).
pub fn replay(
    state: &mut SavedState,
    entries: &[Entry],
    subscribed: &dyn Fn(Event) -> Vec<String>,
) {
    let newer: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.seq > state.journal_seq)
        .collect();
    if newer.is_empty() {
        return;
    }
    let mut nodes: HashMap<u32, usize> = state
        .nodes
        .iter()
        .enumerate()
        .map(|(at, n)| (n.id, at))
        .collect();
    let mut flap_of: HashMap<u32, usize> = state
        .flaps
        .iter()
        .enumerate()
        .map(|(at, f)| (f.id, at))
        .collect();
    let mut holding: HashMap<u32, u64> = state.brake.held.iter().copied().collect();
    let mut pending: HashMap<(u32, u32), PendingRun> = std::mem::take(&mut state.pending)
        .into_iter()
        .map(|run| ((action_hash(&run.action), run.node_id), run))
        .collect();
    let decide = |pending: &mut HashMap<(u32, u32), PendingRun>, run: PendingRun| {
        for action in subscribed(run.event) {
            let key = (action_hash(&action), run.node_id);
            pending.insert(
                key,
                PendingRun {
                    action,
                    ..run.clone()
                },
            );
        }
    };
    let run = |seq, node_id, event, previous, since_ms| PendingRun {
        action: String::new(),
        seq,
        node_id,
        event,
        previous,
        since_ms,
    };
    for entry in newer {
        let id = entry.node_id;
        state.journal_seq = entry.seq;
        if let Some(now_ns) = entry.change.now_ns() {
            let swept = now_ns.saturating_sub(STORE_MARGIN_NS);
            state.swept_until_ns = state.swept_until_ns.max(swept);
        }
        let (now_ns, from, to, held, since_ms) = match entry.change {
            Change::Transition {
                now_ns,
                from,
                to,
                held,
                since_ms,
            } => (now_ns, from, to, held, since_ms),
            Change::Released { since_ms, .. } => {
                holding.remove(&id);
                let released = run(entry.seq, id, Event::Down, NodeState::Suspect, since_ms);
                decide(&mut pending, released);
                continue;
            }
            Change::Started { transition, action } => {
                if pending
                    .get(&(action, id))
                    .is_some_and(|run| run.seq <= transition)
                {
                    pending.remove(&(action, id));
                }
                continue;
            }
        };
        if let (false, Some(event)) = (held, Event::of_state(to)) {
            decide(&mut pending, run(entry.seq, id, event, from, since_ms));
        }
        let at = *nodes.entry(id).or_insert_with(|| {
            state.nodes.push(SavedNode {
                id,
                ..SavedNode::default()
            });
            state.nodes.len() - 1
        });
        state.nodes[at].state = to;
        let at = *flap_of.entry(id).or_insert_with(|| {
            state.flaps.push(FlapHistory {
                id,
                ..FlapHistory::default()
            });
            state.flaps.len() - 1
        });
        let flaps = &mut state.flaps[at];
        match (from, to) {
            (_, NodeState::Down) => {
                flaps.downs_ns.push(now_ns);
                if held {
                    holding.entry(id).or_insert(now_ns);
                }
            }
            (_, NodeState::Flapping) => {
                flaps.steady_since_ns = now_ns;
                flaps.last_arrival_ns = now_ns;
            }
            (NodeState::Flapping, NodeState::Up) => {
                *flaps = FlapHistory {
                    id,
                    ..FlapHistory::default()
                }
            }
            _ => {}
        }
        if matches!(to, NodeState::Up | NodeState::Left | NodeState::Flapping) {
            // Heard again: a held `down` of it is dropped, as the brake did.
            holding.remove(&id);
        }
    }
    state.flaps.retain(|f| !f.is_empty());
    let mut held: Vec<(u32, u64)> = holding.into_iter().collect();
    held.sort_unstable_by_key(|&(id, at)| (at, id));
    state.brake.held = held;
    let mut pending: Vec<PendingRun> = pending.into_values().collect();
    pending.sort_unstable_by(|a, b| (a.seq, &a.action).cmp(&(b.seq, &b.action)));
    state.pending = pending;
}

/// The journal being written.
pub struct Journal {
    current: PathBuf,
    rotated: PathBuf,
    file: File,
    next_seq: u64,
}

impl Journal {
    /// Opens (creating) the journal of `state_file` for appending; entries
    /// get sequence numbers from `next_seq` on. A torn entry at its end is
    /// cut off first, so that what is appended stays readable.
    pub fn open(state_file: &Path, next_seq: u64) -> io::Result<Self> {
        let (current, rotated) = paths(state_file);
        let valid = read_file(&current)?.len() * ENTRY_LEN;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)?;
        if file.metadata()?.len() != valid as u64 {
            file.set_len(valid as u64)?;
        }
        Ok(Journal {
            current,
            rotated,
            file,
            next_seq,
        })
    }

    /// The sequence number of the last entry appended (or, before any, one
    /// below the first).
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Appends `changes` and waits until they are on disk; returns the
    /// sequence number of the first (the others follow in order). Nothing
    /// to append: no write.
    pub fn append(&mut self, changes: impl IntoIterator<Item = (u32, Change)>) -> io::Result<u64> {
        let first = self.next_seq;
        let mut bytes = Vec::new();
        for (node_id, change) in changes {
            let entry = Entry {
                seq: self.next_seq,
                node_id,
                change,
            };
            self.next_seq += 1;
            bytes.extend_from_slice(&entry.encode());
        }
        if !bytes.is_empty() {
            self.file.write_all(&bytes)?;
            self.file.sync_data()?;
        }
        Ok(first)
    }

    /// Starts a new journal file for what comes after a snapshot, moving the
    /// current one aside (the snapshot covers it; [`forget_rotated`] removes
    /// it once the snapshot is on disk). If an earlier rotated file is still
    /// there (its snapshot failed), nothing moves: replay skips what a
    /// snapshot covers by sequence number anyway.
    pub fn rotate(&mut self) -> io::Result<()> {
        if self.rotated.exists() {
            return Ok(());
        }
        fs::rename(&self.current, &self.rotated)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.current)?;
        Ok(())
    }

    /// The rotated file's path, for [`forget_rotated`].
    pub fn rotated_path(&self) -> &Path {
        &self.rotated
    }

    /// After a final snapshot (shutdown): both files are covered.
    pub fn clear(&mut self) -> io::Result<()> {
        remove_if_exists(&self.rotated)?;
        self.file.set_len(0)
    }
}

/// Removes the rotated journal a snapshot now covers.
pub fn forget_rotated(rotated: &Path) -> io::Result<()> {
    remove_if_exists(rotated)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hb-journal-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    const MS: u64 = 1_000_000;

    fn went(now_ms: u64, from: NodeState, to: NodeState, held: bool) -> Change {
        Change::Transition {
            now_ns: now_ms * MS,
            from,
            to,
            held,
            since_ms: Some(300),
        }
    }

    fn down(now_ms: u64, held: bool) -> Change {
        went(now_ms, NodeState::Suspect, NodeState::Down, held)
    }

    fn up(now_ms: u64) -> Change {
        went(now_ms, NodeState::Down, NodeState::Up, false)
    }

    fn started(transition: u64, action: &str) -> Change {
        Change::Started {
            transition,
            action: action_hash(action),
        }
    }

    #[test]
    fn every_kind_of_entry_reads_back_as_written() {
        let entries = [
            (3, down(100, true)),
            (4, went(100, NodeState::Unseen, NodeState::Up, false)),
            (
                5,
                Change::Released {
                    now_ns: 7,
                    since_ms: None,
                },
            ),
            (6, started(2, "mark")),
        ];
        for (seq, (node_id, change)) in (1..).zip(entries) {
            let entry = Entry {
                seq,
                node_id,
                change,
            };
            assert_eq!(Entry::decode(&entry.encode()), Some(entry));
        }
        assert_eq!(since_ms(Some(u64::MAX)), Some(u32::MAX - 1));
        assert_eq!(since_ms(None), None);
    }

    #[test]
    fn appends_rotates_and_reads_back_in_order() {
        let dir = temp_dir("order");
        let state = dir.join("state");
        let mut journal = Journal::open(&state, 1).unwrap();
        assert_eq!(
            journal
                .append([(3, down(100, false)), (4, down(100, true))])
                .unwrap(),
            1
        );
        assert_eq!(journal.append([]).unwrap(), 3);
        journal.rotate().unwrap();
        journal.append([(4, up(300))]).unwrap();
        assert_eq!(journal.last_seq(), 3);
        let entries = read(&state).unwrap();
        let seqs: Vec<_> = entries.iter().map(|e| (e.seq, e.node_id)).collect();
        assert_eq!(seqs, [(1, 3), (2, 4), (3, 4)]);
        assert_eq!(entries[1].change, down(100, true));

        forget_rotated(journal.rotated_path()).unwrap();
        assert_eq!(read(&state).unwrap().len(), 1);
        journal.clear().unwrap();
        assert!(read(&state).unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    /// Every action runs on down and up.
    fn both(_: Event) -> Vec<String> {
        vec!["mark".to_owned(), "page".to_owned()]
    }

    #[test]
    fn replay_applies_what_the_snapshot_missed() {
        let mut state = SavedState {
            journal_seq: 1,
            swept_until_ns: 50,
            nodes: vec![SavedNode {
                id: 3,
                state: NodeState::Up,
                ..SavedNode::default()
            }],
            ..SavedState::default()
        };
        let entry = |seq, node_id, change| Entry {
            seq,
            node_id,
            change,
        };
        let entries = [
            entry(1, 3, down(10, false)), // in the snapshot
            entry(2, 3, down(20, false)),
            entry(3, 4, down(20, true)),
            entry(4, 5, down(30, true)),
            entry(5, 5, up(40)),
            entry(6, 6, down(40, true)),
            entry(
                7,
                6,
                Change::Released {
                    now_ns: 50 * MS,
                    since_ms: Some(900),
                },
            ),
        ];
        replay(&mut state, &entries, &both);
        let states: Vec<_> = state.nodes.iter().map(|n| (n.id, n.state)).collect();
        assert_eq!(
            states,
            [
                (3, NodeState::Down),
                (4, NodeState::Down),
                (5, NodeState::Up),
                (6, NodeState::Down)
            ]
        );
        assert_eq!(
            state.brake.held,
            [(4, 20 * MS)],
            "5 came back, 6 was released"
        );
        assert_eq!(
            state.flaps[0].downs_ns,
            [20 * MS],
            "entry 1 is not applied twice"
        );
        assert_eq!(state.journal_seq, 7);
        assert_eq!(state.swept_until_ns, 49 * MS);
        // Not started: 3's down (entry 2), 5's up (entry 5; its held down
        // never ran), 6's released down; each for both actions.
        let pending: Vec<_> = state
            .pending
            .iter()
            .map(|r| (r.seq, r.node_id, r.event, r.action.as_str()))
            .collect();
        assert_eq!(
            pending,
            [
                (2, 3, Event::Down, "mark"),
                (2, 3, Event::Down, "page"),
                (5, 5, Event::Up, "mark"),
                (5, 5, Event::Up, "page"),
                (7, 6, Event::Down, "mark"),
                (7, 6, Event::Down, "page"),
            ]
        );
        assert_eq!(state.pending[5].since_ms, Some(900));
    }

    #[test]
    fn a_start_covers_its_run_and_the_older_ones_it_superseded() {
        let entry = |seq, node_id, change| Entry {
            seq,
            node_id,
            change,
        };
        let mut state = SavedState::default();
        let entries = [
            entry(1, 3, down(10, false)),
            entry(2, 3, up(20)),
            entry(3, 3, down(30, false)),
            // The lane ran 1, then only the newest of what waited (3).
            entry(4, 3, started(1, "mark")),
            entry(5, 3, started(3, "mark")),
            // "page" started 1 only; 2 was superseded by 3, which waits.
            entry(6, 3, started(1, "page")),
        ];
        replay(&mut state, &entries, &both);
        let pending: Vec<_> = state
            .pending
            .iter()
            .map(|r| (r.seq, r.action.as_str()))
            .collect();
        assert_eq!(pending, [(3, "page")]);
        assert_eq!(state.pending[0].previous, NodeState::Suspect);
    }

    #[test]
    fn a_torn_last_entry_is_ignored_and_cut_before_appending() {
        let dir = temp_dir("torn");
        let state = dir.join("state");
        let mut journal = Journal::open(&state, 1).unwrap();
        journal
            .append([(3, down(100, false)), (4, down(100, false))])
            .unwrap();
        drop(journal);
        // A crash in the middle of the second entry.
        let (current, _) = paths(&state);
        let bytes = fs::read(&current).unwrap();
        fs::write(&current, &bytes[..ENTRY_LEN + 10]).unwrap();
        assert_eq!(read(&state).unwrap().len(), 1);

        let mut journal = Journal::open(&state, 2).unwrap();
        journal.append([(5, down(200, false))]).unwrap();
        let ids: Vec<_> = read(&state).unwrap().iter().map(|e| e.node_id).collect();
        assert_eq!(ids, [3, 5], "the entry after the cut is readable");

        // A damaged entry ends the file's entries, wherever it is.
        let mut bytes = fs::read(&current).unwrap();
        bytes[5] ^= 0xff;
        fs::write(&current, &bytes).unwrap();
        assert!(read(&state).unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }
}
