//! The optional event log (`event_log = "FILE"`): every state change as one
//! JSON line, appended and flushed once per sweep. For operators who want a
//! history to grep or ship, and for `cargo xtask bench`, which reads the
//! monotonic timestamps to measure detection latency.
//!
//! ```json
//! {"mono_ns":123,"unix_ms":1764000000000,"event":"down","node_id":2,"node":"web-2","previous":"up","since_last_heartbeat_ms":1620}
//! ```

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::detect::detector::Transition;

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// `CLOCK_MONOTONIC` when the sweep that found the change started.
    pub mono_ns: u64,
    /// Wall clock at the same moment, for people.
    pub unix_ms: u64,
    /// The state entered: up, suspect, down, flapping or left.
    pub event: String,
    pub node_id: u32,
    pub node: String,
    pub previous: String,
    pub since_last_heartbeat_ms: Option<u64>,
}

impl EventRecord {
    /// The record of one state change found by the sweep that started at
    /// `mono_ns`.
    pub fn new(mono_ns: u64, node: &str, transition: &Transition) -> Self {
        EventRecord {
            mono_ns,
            unix_ms: crate::clock::unix_ns() / 1_000_000,
            event: transition.to.name().to_owned(),
            node_id: transition.node_id,
            node: node.to_owned(),
            previous: transition.from.name().to_owned(),
            since_last_heartbeat_ms: transition.since_last_heartbeat_ns.map(|ns| ns / 1_000_000),
        }
    }
}

/// Appends event records to a file; a no-op when no file is configured.
pub struct EventLog {
    file: Option<(PathBuf, BufWriter<File>)>,
}

impl EventLog {
    /// Opens `path` for appending (creating it and its directory), or does
    /// nothing when `path` is `None`.
    pub fn open(path: Option<&Path>) -> io::Result<Self> {
        let Some(path) = path else {
            return Ok(EventLog { file: None });
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog {
            file: Some((path.to_owned(), BufWriter::new(file))),
        })
    }

    /// Appends one state change.
    pub fn record(&mut self, record: &EventRecord) {
        let Some((path, writer)) = &mut self.file else {
            return;
        };
        let written = serde_json::to_writer(&mut *writer, record)
            .map_err(io::Error::from)
            .and_then(|()| writer.write_all(b"\n"));
        if let Err(e) = written {
            tracing::error!("writing the event log {}: {e}", path.display());
        }
    }

    /// Pushes what was recorded to the file.
    pub fn flush(&mut self) {
        if let Some((path, writer)) = &mut self.file
            && let Err(e) = writer.flush()
        {
            tracing::error!("writing the event log {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::detector::NodeState;

    #[test]
    fn records_are_json_lines_appended_across_opens() {
        let dir = std::env::temp_dir().join(format!("hb-event-log-{}", std::process::id()));
        let path = dir.join("sub/events.jsonl");
        let transition = Transition {
            node_id: 2,
            from: NodeState::Up,
            to: NodeState::Down,
            since_last_heartbeat_ns: Some(1_620_000_000),
        };
        for _ in 0..2 {
            let mut log = EventLog::open(Some(&path)).unwrap();
            log.record(&EventRecord::new(42, "web-2", &transition));
            log.flush();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<EventRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 2);
        assert_eq!(
            (
                records[0].mono_ns,
                records[0].event.as_str(),
                records[0].node_id,
                records[0].node.as_str()
            ),
            (42, "down", 2, "web-2")
        );
        assert_eq!(
            (
                records[0].previous.as_str(),
                records[0].since_last_heartbeat_ms
            ),
            ("up", Some(1620))
        );
        std::fs::remove_dir_all(dir).unwrap();
        EventLog::open(None)
            .unwrap()
            .record(&EventRecord::new(1, "x", &transition));
    }
}
