//! The events log written by the test configuration's action, one line per
//! state change: `EVENT NODE_ID NODE_NAME PREVIOUS_STATE SINCE_MS` (the
//! last field is empty when the node was never heard), and bounded polling
//! of it.

use std::{
    fs, io,
    path::Path,
    time::{Duration, Instant},
};

use crate::{Error, Result, interrupt};

/// How often the log is re-read while waiting.
const POLL: Duration = Duration::from_millis(5);

/// One line of the events log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `up`, `down` or `left`.
    pub kind: String,
    /// The node id.
    pub node_id: u32,
    /// The configured node name.
    pub node_name: String,
    /// `unseen`, `up`, `down` or `left`.
    pub previous: String,
    /// Milliseconds since the node's last heartbeat; `None` if never heard.
    pub since_last_heartbeat_ms: Option<u64>,
}

impl Event {
    /// Parse one line; `None` if it is not an event line.
    pub fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        let event = Self {
            kind: fields.next()?.to_owned(),
            node_id: fields.next()?.parse().ok()?,
            node_name: fields.next()?.to_owned(),
            previous: fields.next()?.to_owned(),
            since_last_heartbeat_ms: match fields.next() {
                None => None,
                Some(ms) => Some(ms.parse().ok()?),
            },
        };
        fields.next().is_none().then_some(event)
    }

    /// Whether this is event `kind` for node `node_id`.
    pub fn is(&self, kind: &str, node_id: u32) -> bool {
        self.kind == kind && self.node_id == node_id
    }
}

/// The lines of `path` (empty if it does not exist yet).
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(Error::Io {
            op: "reading",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Every event recorded in `path` so far (lines that do not parse are
/// skipped).
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    Ok(read_lines(path)?
        .iter()
        .filter_map(|line| Event::parse(line))
        .collect())
}

/// Poll `path` until a line at index `skip` or later satisfies `predicate`
/// or `deadline` passes. Returns the line's index, the line, and the
/// instant it was first seen.
pub fn wait_for_line(
    path: &Path,
    skip: usize,
    mut predicate: impl FnMut(&str) -> bool,
    deadline: Instant,
    what: &str,
) -> Result<(usize, String, Instant)> {
    let start = Instant::now();
    loop {
        let lines = read_lines(path)?;
        let seen = Instant::now();
        if let Some((index, line)) = lines
            .iter()
            .enumerate()
            .skip(skip)
            .find(|(_, line)| predicate(line))
        {
            return Ok((index, line.clone(), seen));
        }
        if seen >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                after: seen - start,
                detail: format!(" in {}; it holds:\n{}", path.display(), lines.join("\n")),
            });
        }
        interrupt::check()?;
        std::thread::sleep(POLL.min(deadline - seen));
    }
}

/// Poll the events log `path` until an event satisfies `predicate` or
/// `deadline` passes. Returns the event and the instant it was first seen.
pub fn wait_for_event(
    path: &Path,
    mut predicate: impl FnMut(&Event) -> bool,
    deadline: Instant,
    what: &str,
) -> Result<(Event, Instant)> {
    let (_, line, seen) = wait_for_line(
        path,
        0,
        |line| Event::parse(line).is_some_and(|event| predicate(&event)),
        deadline,
        what,
    )?;
    let event = Event::parse(&line).expect("the predicate only accepts event lines");
    Ok((event, seen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TempDir;

    #[test]
    fn parses_event_lines() {
        assert_eq!(
            Event::parse("down 2 node-2 up 734"),
            Some(Event {
                kind: "down".into(),
                node_id: 2,
                node_name: "node-2".into(),
                previous: "up".into(),
                since_last_heartbeat_ms: Some(734),
            })
        );
        let first = Event::parse("up 1 node-1 unseen ").unwrap();
        assert_eq!(first.since_last_heartbeat_ms, None);
        assert!(first.is("up", 1));
        assert!(!first.is("up", 2));
        assert_eq!(Event::parse("up x node-1 unseen"), None);
        assert_eq!(Event::parse("up 1 node-1"), None);
        assert_eq!(Event::parse("up 1 node-1 down 5 extra"), None);
        assert_eq!(Event::parse("up 1 node-1 down soon"), None);
    }

    #[test]
    fn waits_for_an_event_and_times_out() {
        let dir = TempDir::new("hb-tests-unit").unwrap();
        let log = dir.join("events.log");
        let soon = || Instant::now() + Duration::from_millis(100);
        let err = wait_for_event(&log, |e| e.is("up", 1), soon(), "up 1").unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        fs::write(&log, "up 1 node-1 unseen \ndown 1 node-1 up 700\n").unwrap();
        let (event, _) = wait_for_event(&log, |e| e.kind == "down", soon(), "down").unwrap();
        assert_eq!(event.since_last_heartbeat_ms, Some(700));
        let err = wait_for_line(&log, 1, |l| l.starts_with("up"), soon(), "up").unwrap_err();
        assert!(err.to_string().contains("down 1 node-1 up 700"), "{err}");
        assert_eq!(read_events(&log).unwrap().len(), 2);
    }
}
