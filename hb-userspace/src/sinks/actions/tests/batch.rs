//! Batch actions, with real processes: what a batch run reads on stdin and
//! in its environment, and that batches of one action never overlap.

use super::{
    metrics::{action_runs, encode},
    order::node_event,
    *,
};
use crate::sinks::metrics::Metrics;

fn batch(name: &str, on: &[Event], script: String) -> ActionConfig {
    ActionConfig {
        batch: true,
        ..shell(name, on, script, Duration::from_secs(10))
    }
}

#[tokio::test]
async fn a_sweep_is_one_run_with_its_events_on_stdin() {
    let dir = TempDir::new("batch");
    let metrics = Metrics::new(0);
    let runner = ActionRunner::new(
        vec![batch(
            "sync",
            &[Event::Down, Event::Up],
            format!(
                "cat > '{}'; env > '{}'",
                dir.path("stdin").display(),
                dir.path("env").display()
            ),
        )],
        4,
    )
    .with_metrics(metrics.actions());
    let mut unknown = node_event(3, Event::Up);
    unknown.node_address = None;
    unknown.since_last_heartbeat = None;
    unknown.previous_state = "unseen";
    runner.dispatch_sweep(vec![
        node_event(2, Event::Down),
        // Not subscribed: not in the batch.
        node_event(5, Event::Left),
        node_event(1, Event::Down),
        unknown,
    ]);
    wait_idle(&runner).await;

    let stdin = dir.read("stdin");
    let lines: Vec<serde_json::Value> = stdin
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(
        lines,
        [
            serde_json::json!({
                "event": "down", "node_id": 2, "node_name": "n2",
                "node_address": "198.18.1.2", "previous_state": "up",
                "since_last_heartbeat_ms": 6150,
            }),
            serde_json::json!({
                "event": "down", "node_id": 1, "node_name": "n1",
                "node_address": "198.18.1.2", "previous_state": "up",
                "since_last_heartbeat_ms": 6150,
            }),
            serde_json::json!({
                "event": "up", "node_id": 3, "node_name": "n3",
                "node_address": null, "previous_state": "unseen",
                "since_last_heartbeat_ms": null,
            }),
        ],
        "{stdin}"
    );
    let env = dir.read("env");
    assert!(env.lines().any(|l| l == "HB_EVENT_COUNT=3"), "{env}");
    let per_event = hb_vars(&env);
    assert!(
        per_event.is_empty(),
        "per-event variables set: {per_event:?}"
    );

    // One run, in the stats and in the metrics.
    assert_eq!(
        runner.stats(),
        ActionStats {
            started: 1,
            succeeded: 1,
            ..ActionStats::default()
        }
    );
    let text = encode(&metrics);
    assert_eq!(action_runs(&text, "sync", "succeeded"), 1.0, "{text}");
}

#[tokio::test]
async fn batches_of_one_action_run_one_after_another() {
    let dir = TempDir::new("batch-order");
    let log = dir.path("log");
    let runner = ActionRunner::new(
        vec![batch(
            "sync",
            &[Event::Down, Event::Up],
            format!(
                "echo \"start $HB_EVENT_COUNT $(date +%s%N)\" >> '{0}'; \
                 cat >> '{1}'; sleep 0.5; \
                 echo \"end $HB_EVENT_COUNT $(date +%s%N)\" >> '{0}'",
                log.display(),
                dir.path("stdin").display()
            ),
        )],
        4,
    );
    runner.dispatch_sweep(vec![node_event(1, Event::Down), node_event(2, Event::Down)]);
    runner.dispatch_sweep(vec![node_event(1, Event::Up)]);
    wait_idle(&runner).await;

    let text = dir.read("log");
    let lines: Vec<(&str, &str, u128)> = text
        .lines()
        .map(|l| {
            let mut words = l.split(' ');
            let (Some(what), Some(count), Some(at)) = (words.next(), words.next(), words.next())
            else {
                panic!("bad line {l:?}");
            };
            (what, count, at.parse().expect("timestamp"))
        })
        .collect();
    let order: Vec<(&str, &str)> = lines.iter().map(|&(w, c, _)| (w, c)).collect();
    assert_eq!(
        order,
        [("start", "2"), ("end", "2"), ("start", "1"), ("end", "1")],
        "{text}"
    );
    assert!(lines[2].2 >= lines[1].2, "overlapping batches:\n{text}");
    // Node 1's down reached the action before its up.
    let stdin = dir.read("stdin");
    let events: Vec<(u64, String)> = stdin
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (
                v["node_id"].as_u64().expect("node_id"),
                v["event"].as_str().expect("event").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            (1, "down".to_owned()),
            (2, "down".to_owned()),
            (1, "up".to_owned())
        ]
    );
    assert_eq!(runner.stats().started, 2, "{:?}", runner.stats());
}
