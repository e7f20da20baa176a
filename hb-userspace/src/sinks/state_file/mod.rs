//! The agent's state file: what it knew about each node (state, where and
//! when it was last heard, its sequence numbers), its flap history and what
//! the brake holds, so that a restarted agent neither forgets nodes nor
//! fires events for what it already reported.
//!
//! Two parts: a snapshot ([`SavedState`], [`format`](mod@format)) saved at most every
//! [`SAVE_EVERY`] while nodes change (in a blocking task) and at shutdown,
//! written atomically (temporary file, fsync, rename, fsync of the
//! directory); and a [`journal`] of every change since, synced before the
//! change's actions start. A missing file is a first start; an unreadable
//! one is an error naming the file and the fix. A directory the agent
//! cannot write in is refused at start ([`check_writable`]); a save that
//! fails later is reported in status, metrics and readiness
//! ([`SaveHealth`]).

pub mod format;
pub mod journal;
pub mod ledger;
mod legacy;

use std::{
    collections::HashSet,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::task::JoinHandle;

pub use self::format::{PendingRun, SavedNode, SavedState};
use self::{
    journal::{Change, Journal},
    ledger::Ledger,
};
use crate::{
    clock,
    datapath::table::NodeTable,
    detect::{
        brake::{Brake, BrakeMemory},
        detector::{Detector, FlapHistory, NodeState},
        sweep::SweepOutcome,
    },
    nodes::NodeDirectory,
};

/// Where agents before the binary format saved state by default (format 1,
/// JSON); read once when the default file does not exist yet.
pub const LEGACY_DEFAULT_PATH: &str = "/var/lib/hb/state.json";

/// State is saved at most this often while nodes change state.
pub const SAVE_EVERY: Duration = Duration::from_secs(2);
/// A save found still in progress when the next is due is looked at again
/// this much later.
const BUSY_RECHECK: Duration = Duration::from_millis(100);

/// Each message includes its cause (so the cause is not also a `source`,
/// which would print it twice in an error chain).
#[derive(Debug, Error)]
pub enum StateFileError {
    #[error("reading state file {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },
    #[error("state file {path} is not valid ({cause}); move it away to start with fresh state")]
    Invalid { path: PathBuf, cause: String },
    #[error(
        "state file {path} has format {found}, this agent reads 1 and 2 and writes {}; move it \
         away to start with fresh state",
        format::FORMAT
    )]
    Format { path: PathBuf, found: u32 },
    #[error("writing state file {path}: {cause}")]
    Write { path: PathBuf, cause: io::Error },
    #[error(
        "state_file {path}: the agent cannot write in {dir} ({cause}); create that directory \
         writable by the agent (the systemd unit's StateDirectory=hb does), or set state_file \
         (--state-file) to a writable place"
    )]
    Unwritable {
        path: PathBuf,
        dir: PathBuf,
        cause: io::Error,
    },
    #[error("state file journal {path}: {cause}")]
    Journal { path: PathBuf, cause: io::Error },
}

/// Loads the saved state; `Ok(None)` if there is no file yet.
pub fn load(path: &Path) -> Result<Option<SavedState>, StateFileError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(cause) => {
            return Err(StateFileError::Read {
                path: path.to_owned(),
                cause,
            });
        }
    };
    if bytes.starts_with(format::MAGIC) {
        return SavedState::decode(path, &bytes).map(Some);
    }
    if bytes.trim_ascii_start().starts_with(b"{") {
        return legacy::decode(path, &bytes).map(Some);
    }
    Err(StateFileError::Invalid {
        path: path.to_owned(),
        cause: "neither hb's binary state format nor JSON".to_owned(),
    })
}

/// Saves `state` atomically, creating the parent directory if needed.
pub fn save(path: &Path, state: &SavedState) -> Result<(), StateFileError> {
    let error = |cause| StateFileError::Write {
        path: path.to_owned(),
        cause,
    };
    let dir = parent(path);
    fs::create_dir_all(&dir).map_err(error)?;
    let tmp = format::temporary(path);
    let body = state.encode().map_err(io::Error::other).map_err(error)?;
    let mut file = fs::File::create(&tmp).map_err(error)?;
    file.write_all(&body).map_err(error)?;
    file.sync_all().map_err(error)?;
    fs::rename(&tmp, path).map_err(error)?;
    // The rename itself is durable once the directory is synced.
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(error)
}

/// Refuses a state file the agent could not save: its directory is created
/// if missing, then a file is written, synced and removed there.
pub fn check_writable(path: &Path) -> Result<(), StateFileError> {
    let dir = parent(path);
    let unwritable = |cause| StateFileError::Unwritable {
        path: path.to_owned(),
        dir: dir.clone(),
        cause,
    };
    fs::create_dir_all(&dir).map_err(unwritable)?;
    let probe = format::temporary(path);
    fs::File::create(&probe)
        .and_then(|mut f| f.write_all(b"hb").and_then(|()| f.sync_all()))
        .map_err(unwritable)?;
    fs::remove_file(&probe).map_err(unwritable)
}

/// What `hb agent --check-config` checks, touching nothing: the state file
/// can be read (or does not exist yet), and can be saved: its directory
/// takes a file (probed with a file written and removed), or, if missing,
/// its nearest existing ancestor is a directory the agent can create it in.
pub fn check_saveable(path: &Path) -> Result<(), StateFileError> {
    load(path)?;
    let dir = parent(path);
    if dir.is_dir() {
        return check_writable(path);
    }
    let unwritable = |cause| StateFileError::Unwritable {
        path: path.to_owned(),
        dir: dir.clone(),
        cause,
    };
    let ancestor = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    if !ancestor.is_dir() {
        let cause = io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", ancestor.display()),
        );
        return Err(unwritable(cause));
    }
    Ok(())
}

/// The directory a state file lives in (`.` for a bare file name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// What is saved: every configured node, the flap history, the brake's
/// memory, stamped with this boot and the journal entry it includes.
pub fn snapshot(
    nodes: &NodeDirectory<'_>,
    detector: &Detector,
    brake: &Brake,
    table: &NodeTable,
    journal: (u64, Vec<PendingRun>),
) -> SavedState {
    snapshot_of(
        nodes,
        Verdicts::copy(nodes, detector, brake),
        table,
        journal,
    )
}

/// What a snapshot keeps of the detector and the brake, copied apart from
/// the node table: the agent copies it while it holds the sweep's lock
/// (one byte per node, no table read), and builds the snapshot
/// ([`snapshot_of`]) after letting go.
pub struct Verdicts {
    /// In `nodes.ids()` order.
    states: Vec<NodeState>,
    swept_until_ns: u64,
    flaps: Vec<FlapHistory>,
    brake: BrakeMemory,
}

impl Verdicts {
    pub fn copy(nodes: &NodeDirectory<'_>, detector: &Detector, brake: &Brake) -> Self {
        Verdicts {
            states: nodes.ids().map(|id| detector.state(id)).collect(),
            swept_until_ns: detector.swept_until_ns(),
            flaps: detector.flap_history(),
            brake: brake.memory(),
        }
    }
}

/// [`snapshot`] from verdicts copied earlier, for the same `nodes`.
pub fn snapshot_of(
    nodes: &NodeDirectory<'_>,
    verdicts: Verdicts,
    table: &NodeTable,
    (journal_seq, pending): (u64, Vec<PendingRun>),
) -> SavedState {
    SavedState {
        boot_id: clock::boot_id(),
        saved_monotonic_ns: clock::monotonic_ns(),
        saved_unix_ns: clock::unix_ns(),
        swept_until_ns: verdicts.swept_until_ns,
        journal_seq,
        nodes: nodes
            .ids()
            .zip(verdicts.states)
            .map(|(id, state)| {
                let record = table.records.get(id);
                SavedNode {
                    id,
                    state,
                    heartbeats: record.heartbeats,
                    incarnation: record.incarnation,
                    sequence: record.sequence,
                    interval_ms: record.interval_ms,
                    authenticated: record.is_authenticated(),
                    interval_word: table.intervals.get(id),
                    src_addr: record.src_addr,
                    src_port: record.src_port,
                    seen_word: table.seen.get(id),
                }
            })
            .collect(),
        flaps: verdicts.flaps,
        brake: verdicts.brake,
        pending,
    }
}

/// How saving goes: what status, metrics and readiness report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveHealth {
    /// The state file.
    pub path: PathBuf,
    /// When the last snapshot reached the disk (Unix ms).
    pub last_saved_unix_ms: Option<u64>,
    /// Snapshots and journal writes that failed since the agent started.
    pub failures: u64,
    /// The last failure, until a snapshot and a journal write succeed.
    pub error: Option<String>,
}

/// Saves node states: journals every change before its actions start, and
/// snapshots the whole state in a blocking task at most every
/// [`SAVE_EVERY`] while it changes, so that a large table never stalls a
/// sweep.
pub struct StateSaver {
    path: PathBuf,
    ledger: Arc<Ledger>,
    unsaved: bool,
    last_save: Instant,
    saving: Option<JoinHandle<()>>,
    health: Arc<Mutex<SaveHealth>>,
}

impl StateSaver {
    /// Starts saving at `path` with `initial` (what the agent restored, which
    /// covers the journal so far): saves it, then starts an empty journal.
    /// So every entry of a journal is of the boot its snapshot is of.
    pub fn start(path: PathBuf, initial: &SavedState) -> Result<Self, StateFileError> {
        save(&path, initial)?;
        let journal_error = |cause| StateFileError::Journal {
            path: journal::paths(&path).0,
            cause,
        };
        let mut journal = Journal::open(&path, initial.journal_seq + 1).map_err(journal_error)?;
        journal.clear().map_err(journal_error)?;
        let ledger = Arc::new(Ledger::new(journal, initial.pending.clone()));
        let health = Arc::new(Mutex::new(SaveHealth {
            path: path.clone(),
            ..SaveHealth::default()
        }));
        saved(&health);
        Ok(StateSaver {
            path,
            ledger,
            unsaved: false,
            last_save: Instant::now(),
            saving: None,
            health,
        })
    }

    /// The ledger the action runner tells about runs.
    pub fn ledger(&self) -> Arc<Ledger> {
        Arc::clone(&self.ledger)
    }

    /// Records one sweep's changes durably; called before their actions
    /// start. Returns the sequence number of each transition's entry, then
    /// of each release's, in the outcome's order: the actions carry it. A
    /// failure is logged and reported, and the actions still run: a
    /// failover matters more than remembering it.
    pub fn journal(&mut self, outcome: &SweepOutcome) -> Vec<u64> {
        let now_ns = outcome.now_ns;
        let held: HashSet<u32> = outcome.held.iter().copied().collect();
        let transitions = outcome.transitions.iter().map(|t| {
            let change = Change::Transition {
                now_ns,
                from: t.from,
                to: t.to,
                held: held.contains(&t.node_id),
                since_ms: journal::since_ms(t.since_last_heartbeat_ns),
            };
            (t.node_id, change)
        });
        let released = outcome.actions.iter().filter(|a| a.released).map(|a| {
            let since_ms = journal::since_ms(a.since_last_heartbeat_ns);
            (a.node_id, Change::Released { now_ns, since_ms })
        });
        let changes: Vec<(u32, Change)> = transitions.chain(released).collect();
        let count = changes.len() as u64;
        let first = match self.ledger.record(changes) {
            Ok(first) => first,
            Err(cause) => {
                let e = StateFileError::Journal {
                    path: journal::paths(&self.path).0,
                    cause,
                };
                tracing::error!("{e}");
                failed(&self.health, &e);
                0
            }
        };
        self.unsaved = true;
        if first == 0 {
            return vec![0; count as usize];
        }
        (first..first + count).collect()
    }

    /// Starts a snapshot in a blocking task if states changed (or the last
    /// save failed), none is in progress and the last one is [`SAVE_EVERY`]
    /// old. `snapshot` gets the last journal entry the snapshot covers and
    /// the action runs not started as of it.
    pub fn save_if_due(&mut self, snapshot: impl FnOnce((u64, Vec<PendingRun>)) -> SavedState) {
        let busy = self.saving.as_ref().is_some_and(|task| !task.is_finished());
        let due = self.unsaved || self.health.lock().expect("never poisoned").error.is_some();
        if !due || busy || self.last_save.elapsed() < SAVE_EVERY {
            return;
        }
        let state = snapshot(self.ledger.for_snapshot());
        let (path, health) = (self.path.clone(), Arc::clone(&self.health));
        let rotated = self.ledger.rotated_path();
        self.saving = Some(tokio::task::spawn_blocking(move || {
            match save(&path, &state) {
                Ok(()) => {
                    saved(&health);
                    if let Err(e) = journal::forget_rotated(&rotated) {
                        tracing::warn!("removing {}: {e}", rotated.display());
                    }
                }
                Err(e) => {
                    tracing::error!("{e}");
                    failed(&health, &e);
                }
            }
        }));
        self.unsaved = false;
        self.last_save = Instant::now();
    }

    /// When [`save_if_due`](Self::save_if_due) will next have something to
    /// do: `None` while nothing is unsaved (the agent sets no timer then).
    /// While a save is in progress, a little later than now.
    pub fn due_at(&self) -> Option<Instant> {
        let due = self.unsaved || self.health.lock().expect("never poisoned").error.is_some();
        if !due {
            return None;
        }
        let busy = self.saving.as_ref().is_some_and(|task| !task.is_finished());
        Some(if busy {
            Instant::now() + BUSY_RECHECK
        } else {
            self.last_save + SAVE_EVERY
        })
    }

    /// At shutdown: no action run starts any more (those not started are
    /// saved as pending, for the next agent); waits for a save in progress,
    /// then saves `snapshot` and empties the journal it covers.
    pub async fn save_now(&mut self, snapshot: impl FnOnce((u64, Vec<PendingRun>)) -> SavedState) {
        self.ledger.close();
        if let Some(task) = self.saving.take() {
            let _ = task.await;
        }
        match save(&self.path, &snapshot(self.ledger.for_snapshot())) {
            Ok(()) => {
                saved(&self.health);
                if let Err(e) = self.ledger.clear() {
                    tracing::warn!("emptying the state journal: {e}");
                }
            }
            Err(e) => {
                tracing::error!("{e}");
                failed(&self.health, &e);
            }
        }
    }

    /// How saving goes.
    pub fn health(&self) -> SaveHealth {
        self.health.lock().expect("never poisoned").clone()
    }
}

fn saved(health: &Mutex<SaveHealth>) {
    let mut health = health.lock().expect("never poisoned");
    health.last_saved_unix_ms = Some(clock::unix_ns() / 1_000_000);
    health.error = None;
}

fn failed(health: &Mutex<SaveHealth>, error: &StateFileError) {
    let mut health = health.lock().expect("never poisoned");
    health.failures += 1;
    health.error = Some(error.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("hb-state-test-{}-{name}", std::process::id()))
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = temp_path("rt");
        let path = dir.join("state");
        assert_eq!(load(&path).unwrap(), None);
        let state = SavedState {
            boot_id: clock::boot_id(),
            nodes: vec![SavedNode {
                id: 3,
                state: NodeState::Down,
                heartbeats: 9,
                ..SavedNode::default()
            }],
            ..SavedState::default()
        };
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), Some(state));
        assert!(!format::temporary(&path).exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        for (name, body) in [("json", &b"{not json"[..]), ("bin", b"\x00\x01garbage")] {
            let path = temp_path(&format!("corrupt.{name}"));
            fs::write(&path, body).unwrap();
            let message = load(&path).unwrap_err().to_string();
            assert!(
                message.contains(path.to_str().unwrap()) && message.contains("move it away"),
                "{message}"
            );
            fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn an_unwritable_directory_is_refused_with_the_fix() {
        let dir = temp_path("readonly");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state");
        check_writable(&path).unwrap();
        assert!(!format::temporary(&path).exists(), "the probe is removed");
        check_writable(&dir.join("sub/dir/state")).unwrap();

        // A file where the directory should be refuses even root.
        fs::write(dir.join("file"), "").unwrap();
        let message = check_writable(&dir.join("file/state"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("state_file") && message.contains("--state-file"),
            "{message}"
        );
        let message = check_saveable(&dir.join("file/sub/state"))
            .unwrap_err()
            .to_string();
        assert!(
            message.to_lowercase().contains("not a directory"),
            "{message}"
        );

        // --check-config creates nothing, and reads what is there.
        check_saveable(&dir.join("new/dir/state")).unwrap();
        assert!(!dir.join("new").exists());
        fs::write(dir.join("corrupt"), "{").unwrap();
        let message = check_saveable(&dir.join("corrupt"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("move it away"), "{message}");
        fs::remove_dir_all(dir).unwrap();
    }
}
