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

use super::format::{SavedNode, SavedState};
use crate::detect::detector::{FlapHistory, NodeState, STORE_MARGIN_NS};

/// Bytes per entry.
const ENTRY_LEN: usize = 32;

/// One journal entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    /// The monotonic time of the sweep that decided it.
    pub now_ns: u64,
    pub node_id: u32,
    pub change: Change,
}

/// What an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The node went from `from` to `to`; `held` if the brake held its
    /// actions (they did not run).
    Transition {
        from: NodeState,
        to: NodeState,
        held: bool,
    },
    /// The brake let go of the node's held `down`, and its actions run.
    Released,
}

impl Entry {
    fn encode(&self) -> [u8; ENTRY_LEN] {
        let (kind, from, to, held) = match self.change {
            Change::Transition { from, to, held } => (1u8, from as u8, to as u8, u8::from(held)),
            Change::Released => (2, 0, 0, 0),
        };
        let mut out = [0; ENTRY_LEN];
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.now_ns.to_le_bytes());
        out[16..20].copy_from_slice(&self.node_id.to_le_bytes());
        out[20..24].copy_from_slice(&[kind, from, to, held]);
        // 24..28 reserved (zero).
        let crc = crc32fast::hash(&out[..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The entry in `bytes`, or `None` if it is torn or damaged.
    fn decode(bytes: &[u8; ENTRY_LEN]) -> Option<Self> {
        let crc = u32::from_le_bytes(bytes[28..32].try_into().ok()?);
        if crc32fast::hash(&bytes[..28]) != crc {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let change = match bytes[20] {
            1 => Change::Transition {
                from: NodeState::from_u8(bytes[21])?,
                to: NodeState::from_u8(bytes[22])?,
                held: bytes[23] != 0,
            },
            2 => Change::Released,
            _ => return None,
        };
        Some(Entry {
            seq: u64_at(0),
            now_ns: u64_at(8),
            node_id: u32::from_le_bytes(bytes[16..20].try_into().ok()?),
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
/// `down` actions, and how far sweeps had looked.
pub fn replay(state: &mut SavedState, entries: &[Entry]) {
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
    for entry in newer {
        let id = entry.node_id;
        state.journal_seq = entry.seq;
        let swept = entry.now_ns.saturating_sub(STORE_MARGIN_NS);
        state.swept_until_ns = state.swept_until_ns.max(swept);
        let Change::Transition { from, to, held } = entry.change else {
            holding.remove(&id);
            continue;
        };
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
                flaps.downs_ns.push(entry.now_ns);
                if held {
                    holding.entry(id).or_insert(entry.now_ns);
                }
            }
            (_, NodeState::Flapping) => {
                flaps.steady_since_ns = entry.now_ns;
                flaps.last_arrival_ns = entry.now_ns;
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

    /// Appends the changes of one sweep at `now_ns` and waits until they are
    /// on disk. Nothing to append: no write.
    pub fn append(
        &mut self,
        now_ns: u64,
        changes: impl IntoIterator<Item = (u32, Change)>,
    ) -> io::Result<()> {
        let mut bytes = Vec::new();
        for (node_id, change) in changes {
            let entry = Entry {
                seq: self.next_seq,
                now_ns,
                node_id,
                change,
            };
            self.next_seq += 1;
            bytes.extend_from_slice(&entry.encode());
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.file.write_all(&bytes)?;
        self.file.sync_data()
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

    fn down(held: bool) -> Change {
        Change::Transition {
            from: NodeState::Suspect,
            to: NodeState::Down,
            held,
        }
    }

    #[test]
    fn appends_rotates_and_reads_back_in_order() {
        let dir = temp_dir("order");
        let state = dir.join("state");
        let mut journal = Journal::open(&state, 1).unwrap();
        journal
            .append(100, [(3, down(false)), (4, down(true))])
            .unwrap();
        journal.append(200, []).unwrap();
        journal.rotate().unwrap();
        journal.append(300, [(4, Change::Released)]).unwrap();
        assert_eq!(journal.last_seq(), 3);
        let entries = read(&state).unwrap();
        let seqs: Vec<_> = entries
            .iter()
            .map(|e| (e.seq, e.now_ns, e.node_id))
            .collect();
        assert_eq!(seqs, [(1, 100, 3), (2, 100, 4), (3, 300, 4)]);
        assert_eq!(entries[1].change, down(true));
        assert_eq!(entries[2].change, Change::Released);

        forget_rotated(journal.rotated_path()).unwrap();
        assert_eq!(read(&state).unwrap().len(), 1);
        journal.clear().unwrap();
        assert!(read(&state).unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
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
        let entry = |seq, now_ns, node_id, change| Entry {
            seq,
            now_ns,
            node_id,
            change,
        };
        let up = |from| Change::Transition {
            from,
            to: NodeState::Up,
            held: false,
        };
        let entries = [
            entry(1, 10 * STORE_MARGIN_NS, 3, down(false)), // in the snapshot
            entry(2, 20 * STORE_MARGIN_NS, 3, down(false)),
            entry(3, 20 * STORE_MARGIN_NS, 4, down(true)),
            entry(4, 30 * STORE_MARGIN_NS, 5, down(true)),
            entry(5, 40 * STORE_MARGIN_NS, 5, up(NodeState::Down)),
            entry(6, 40 * STORE_MARGIN_NS, 6, down(true)),
            entry(7, 50 * STORE_MARGIN_NS, 6, Change::Released),
        ];
        replay(&mut state, &entries);
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
            [(4, 20 * STORE_MARGIN_NS)],
            "5 came back, 6 was released"
        );
        assert_eq!(
            state.flaps[0].downs_ns,
            [20 * STORE_MARGIN_NS],
            "entry 1 is not applied twice"
        );
        assert_eq!(state.journal_seq, 7);
        assert_eq!(state.swept_until_ns, 49 * STORE_MARGIN_NS);
    }

    #[test]
    fn a_torn_last_entry_is_ignored_and_cut_before_appending() {
        let dir = temp_dir("torn");
        let state = dir.join("state");
        let mut journal = Journal::open(&state, 1).unwrap();
        journal
            .append(100, [(3, down(false)), (4, down(false))])
            .unwrap();
        drop(journal);
        // A crash in the middle of the second entry.
        let (current, _) = paths(&state);
        let bytes = fs::read(&current).unwrap();
        fs::write(&current, &bytes[..ENTRY_LEN + 10]).unwrap();
        assert_eq!(read(&state).unwrap().len(), 1);

        let mut journal = Journal::open(&state, 2).unwrap();
        journal.append(200, [(5, down(false))]).unwrap();
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
