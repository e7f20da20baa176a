//! Per-node order and coalescing, with real processes: the scripts write
//! what they run and when (`date +%s%N`) to a log the tests read back.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use super::*;

/// `event` of node `id`, named `n{id}`.
pub(super) fn node_event(id: u32, event: Event) -> ActionEvent {
    ActionEvent {
        node_id: id,
        node_name: format!("n{id}"),
        ..super::event(event)
    }
}

/// Appends "start|end EVENT NODE NANOS" lines to `log`; `down` sleeps
/// `down_sleep` (a `sleep` argument) between them.
fn logging_script(log: &Path, down_sleep: &str) -> String {
    format!(
        "echo \"start $HB_EVENT $HB_NODE_NAME $(date +%s%N)\" >> '{0}'; \
         if [ \"$HB_EVENT\" = down ]; then sleep {down_sleep}; fi; \
         echo \"end $HB_EVENT $HB_NODE_NAME $(date +%s%N)\" >> '{0}'",
        log.display()
    )
}

/// The time of the line "`what` `event` `node` NANOS" in `log`.
fn at(log: &str, what: &str, event: &str, node: &str) -> u128 {
    let prefix = format!("{what} {event} {node} ");
    log.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{log}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{prefix:?}: {e}\n{log}"))
}

#[tokio::test]
async fn a_nodes_later_event_waits_for_its_earlier_run() {
    let dir = TempDir::new("order");
    let log = dir.path("log");
    let runner = ActionRunner::new(
        vec![shell(
            "drain",
            &[Event::Down, Event::Up],
            logging_script(&log, "1"),
            Duration::from_secs(10),
        )],
        4,
    );
    runner.dispatch(node_event(1, Event::Down));
    runner.dispatch(node_event(1, Event::Up));
    // Another node, dispatched while n1's down runs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    runner.dispatch(node_event(2, Event::Up));
    wait_idle(&runner).await;

    let text = dir.read("log");
    let down_end = at(&text, "end", "down", "n1");
    assert!(
        at(&text, "start", "up", "n1") >= down_end,
        "n1's up started before its down ended:\n{text}"
    );
    assert!(
        at(&text, "end", "up", "n2") < down_end,
        "n2's up waited for n1's down:\n{text}"
    );
    assert_eq!(
        runner.stats(),
        ActionStats {
            started: 3,
            succeeded: 3,
            ..ActionStats::default()
        }
    );
}

#[tokio::test]
async fn a_nodes_later_event_runs_right_after_a_timed_out_run() {
    let dir = TempDir::new("order-timeout");
    let log = dir.path("log");
    let timeout = Duration::from_millis(500);
    let runner = ActionRunner::new(
        vec![shell(
            "drain",
            &[Event::Down, Event::Up],
            logging_script(&log, "30"),
            timeout,
        )],
        4,
    );
    let dispatched = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    runner.dispatch(node_event(1, Event::Down));
    runner.dispatch(node_event(1, Event::Up));
    wait_idle(&runner).await;

    let text = dir.read("log");
    assert!(
        !text.contains("end down"),
        "the hung down finished:\n{text}"
    );
    let up = at(&text, "start", "up", "n1");
    let after_dispatch = Duration::from_nanos(u64::try_from(up - dispatched).expect("ns"));
    assert!(
        after_dispatch >= timeout,
        "up started {after_dispatch:?} after dispatch, before the down's timeout:\n{text}"
    );
    assert!(
        after_dispatch < timeout + Duration::from_secs(3),
        "up started {after_dispatch:?} after dispatch, long after the kill:\n{text}"
    );
    assert_eq!(
        runner.stats(),
        ActionStats {
            started: 2,
            succeeded: 1,
            timed_out: 1,
            ..ActionStats::default()
        }
    );
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

#[tokio::test]
async fn waiting_events_are_coalesced_to_the_newest() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // This test's runtime is single-threaded: the runs log on this thread.
    let _logging = tracing::subscriber::set_default(subscriber);

    let dir = TempDir::new("coalesce");
    let log = dir.path("log");
    let runner = ActionRunner::new(
        vec![shell(
            "drain",
            &[Event::Down, Event::Up],
            logging_script(&log, "0.5"),
            Duration::from_secs(10),
        )],
        4,
    );
    for event in [Event::Down, Event::Up, Event::Down, Event::Up] {
        runner.dispatch(node_event(1, event));
    }
    assert_eq!(runner.stats().queued, 2, "{:?}", runner.stats());
    wait_idle(&runner).await;

    let text = dir.read("log");
    let runs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("start "))
        .map(|l| l.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(runs, ["down", "up"], "{text}");
    assert!(at(&text, "start", "up", "n1") >= at(&text, "end", "down", "n1"));
    assert_eq!(
        runner.stats(),
        ActionStats {
            started: 2,
            succeeded: 2,
            coalesced: 2,
            ..ActionStats::default()
        }
    );
    let logged = captured.text();
    let line = logged
        .lines()
        .find(|l| l.contains("coalesced 2 events"))
        .unwrap_or_else(|| panic!("no coalescing logged:\n{logged}"));
    assert!(line.contains("INFO"), "{line}");
    assert!(
        line.contains("action=drain") && line.contains("node=n1"),
        "{line}"
    );
    assert_eq!(runner.inner.lanes().open(), 0, "idle lanes kept");
}
