//! The agent's state file: what it knew about each node, saved on every
//! change (at most every [`SAVE_EVERY`], in a blocking task) and at shutdown, so that a restarted agent
//! neither forgets nodes nor fires events for what it already reported.
//!
//! Written atomically (temporary file, fsync, rename). A missing file is a
//! first start; an unreadable one is an error naming the file.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hb_common::table::intervals;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::task::JoinHandle;

use crate::{
    datapath::table::NodeTable,
    detect::detector::{Detector, NodeState},
    nodes::NodeDirectory,
};

/// The current format version; a file of another version is refused.
const FORMAT: u32 = 1;
/// State is saved at most this often while nodes change state.
pub const SAVE_EVERY: Duration = Duration::from_secs(2);

/// Each message includes its cause (so the cause is not also a `source`,
/// which would print it twice in an error chain).
#[derive(Debug, Error)]
pub enum StateFileError {
    #[error("reading state file {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },
    #[error("state file {path} is not valid ({cause}); move it away to start with fresh state")]
    Parse {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error(
        "state file {path} has format {found}, this agent writes {FORMAT}; move it away to start \
         with fresh state"
    )]
    Format { path: PathBuf, found: u32 },
    #[error("writing state file {path}: {cause}")]
    Write { path: PathBuf, cause: io::Error },
}

/// What is saved about one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedNode {
    pub id: u32,
    pub state: NodeState,
    pub heartbeats: u64,
    pub incarnation: u64,
    pub sequence: u64,
    pub interval_ms: u32,
    /// The node has sent authenticated heartbeats: it is not heard without
    /// a tag again (absent in files of older agents).
    #[serde(default)]
    pub authenticated: bool,
    /// The interval estimate (`hb_common::table::intervals`): mean and mean
    /// absolute deviation, µs; 0 if none (or an older agent's file).
    #[serde(default)]
    pub interval_mean_us: u32,
    #[serde(default)]
    pub interval_mad_us: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Contents {
    format: u32,
    nodes: Vec<SavedNode>,
}

/// Loads the saved nodes; `Ok(None)` if there is no file yet.
pub fn load(path: &Path) -> Result<Option<Vec<SavedNode>>, StateFileError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(cause) => {
            return Err(StateFileError::Read {
                path: path.to_owned(),
                cause,
            });
        }
    };
    let contents: Contents =
        serde_json::from_str(&text).map_err(|cause| StateFileError::Parse {
            path: path.to_owned(),
            cause,
        })?;
    if contents.format != FORMAT {
        return Err(StateFileError::Format {
            path: path.to_owned(),
            found: contents.format,
        });
    }
    Ok(Some(contents.nodes))
}

/// Saves `nodes` atomically, creating the parent directory if needed.
pub fn save(path: &Path, nodes: Vec<SavedNode>) -> Result<(), StateFileError> {
    let error = |cause| StateFileError::Write {
        path: path.to_owned(),
        cause,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(error)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let body = serde_json::to_vec(&Contents {
        format: FORMAT,
        nodes,
    })
    .map_err(io::Error::other)
    .map_err(error)?;
    let mut file = fs::File::create(&tmp).map_err(error)?;
    file.write_all(&body).map_err(error)?;
    file.sync_all().map_err(error)?;
    fs::rename(&tmp, path).map_err(error)
}

/// What is saved about every node.
pub fn snapshot(
    nodes: &NodeDirectory<'_>,
    detector: &Detector,
    table: &NodeTable,
) -> Vec<SavedNode> {
    nodes
        .ids()
        .map(|id| {
            let record = table.records.get(id);
            let interval = table.intervals.get(id);
            SavedNode {
                id,
                state: detector.state(id),
                heartbeats: record.heartbeats,
                incarnation: record.incarnation,
                sequence: record.sequence,
                interval_ms: record.interval_ms,
                authenticated: record.is_authenticated(),
                interval_mean_us: intervals::mean_us(interval),
                interval_mad_us: intervals::mad_us(interval),
            }
        })
        .collect()
}

/// Saves node states in a blocking task, at most every [`SAVE_EVERY`] while
/// they change, so that a large table never stalls a sweep.
pub struct StateSaver {
    path: PathBuf,
    unsaved: bool,
    last_save: Instant,
    saving: Option<JoinHandle<()>>,
}

impl StateSaver {
    pub fn new(path: PathBuf) -> Self {
        StateSaver {
            path,
            unsaved: false,
            last_save: Instant::now(),
            saving: None,
        }
    }

    /// Node states changed since the last save.
    pub fn changed(&mut self) {
        self.unsaved = true;
    }

    /// Starts a save of `snapshot()` in a blocking task if states changed,
    /// none is in progress and the last one is [`SAVE_EVERY`] old.
    pub fn save_if_due(&mut self, snapshot: impl FnOnce() -> Vec<SavedNode>) {
        let busy = self.saving.as_ref().is_some_and(|task| !task.is_finished());
        if !self.unsaved || busy || self.last_save.elapsed() < SAVE_EVERY {
            return;
        }
        let (path, nodes) = (self.path.clone(), snapshot());
        self.saving = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = save(&path, nodes) {
                tracing::error!("{e}");
            }
        }));
        self.unsaved = false;
        self.last_save = Instant::now();
    }

    /// Waits for a save in progress, then saves `nodes`.
    pub async fn save_now(&mut self, nodes: Vec<SavedNode>) {
        if let Some(task) = self.saving.take() {
            let _ = task.await;
        }
        if let Err(e) = save(&self.path, nodes) {
            tracing::error!("{e}");
        }
    }
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
        let path = dir.join("state.json");
        assert_eq!(load(&path).unwrap(), None);
        let nodes = vec![SavedNode {
            id: 3,
            state: NodeState::Down,
            heartbeats: 9,
            incarnation: 2,
            sequence: 9,
            interval_ms: 100,
            authenticated: true,
            interval_mean_us: 100_000,
            interval_mad_us: 3_000,
        }];
        save(&path, nodes.clone()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(nodes));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let path = temp_path("corrupt.json");
        fs::write(&path, "{not json").unwrap();
        let message = load(&path).unwrap_err().to_string();
        assert!(
            message.contains(path.to_str().unwrap()) && message.contains("move it away"),
            "{message}"
        );
        fs::remove_file(path).unwrap();
    }
}
