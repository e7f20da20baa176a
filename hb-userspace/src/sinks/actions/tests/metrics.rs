//! Finished runs in `/metrics`.

use super::*;
use crate::{
    detect::detector::NodeState,
    sinks::metrics::{Format, Metrics, Scrape},
};

/// The value of the sample line named exactly `series` in `text`.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

/// `metrics` as Prometheus text.
pub(super) fn encode(metrics: &Metrics) -> String {
    let counters = [0; hb_common::counters::Counter::COUNT as usize];
    metrics
        .encode(
            &Scrape {
                states: &[(NodeState::Down, 1)],
                counters: &counters,
                brake_engaged: false,
                brake_held: 0,
                state_saving: &Default::default(),
                per_node: None,
            },
            Format::Prometheus,
        )
        .expect("encode")
}

/// `hb_actions_total` of `action` ending as `result`.
pub(super) fn action_runs(text: &str, action: &str, result: &str) -> f64 {
    metric(
        text,
        &format!(r#"hb_actions_total{{action="{action}",result="{result}"}}"#),
    )
}

#[tokio::test]
async fn finished_runs_are_recorded_in_the_metrics() {
    let metrics = Metrics::new(0);
    let timeout = Duration::from_millis(300);
    let runner = ActionRunner::new(
        vec![
            command("ok", &[Event::Down], &["true"]),
            command("bad", &[Event::Down], &["false"]),
            shell("slow", &[Event::Down], "sleep 30".into(), timeout),
            command("on-up", &[Event::Up], &["true"]),
        ],
        4,
    )
    .with_metrics(metrics.actions());
    runner.dispatch(event(Event::Down));
    wait_idle(&runner).await;
    let text = encode(&metrics);
    let runs = |action: &str, result: &str| action_runs(&text, action, result);
    let expected = [
        ("ok", [1.0, 0.0, 0.0]),
        ("bad", [0.0, 1.0, 0.0]),
        ("slow", [0.0, 0.0, 1.0]),
        // Declared by with_metrics, never run.
        ("on-up", [0.0, 0.0, 0.0]),
    ];
    for (action, [succeeded, failed, timed_out]) in expected {
        assert_eq!(runs(action, "succeeded"), succeeded, "{action}:\n{text}");
        assert_eq!(runs(action, "failed"), failed, "{action}:\n{text}");
        assert_eq!(runs(action, "timed_out"), timed_out, "{action}:\n{text}");
        let count = metric(
            &text,
            &format!(r#"hb_action_duration_seconds_count{{action="{action}"}}"#),
        );
        assert_eq!(count, succeeded + failed + timed_out, "{action}:\n{text}");
    }
    // The timed-out run lasted at least its timeout, and not the full sleep.
    let slow = metric(&text, r#"hb_action_duration_seconds_sum{action="slow"}"#);
    assert!(
        slow >= timeout.as_secs_f64() && slow < 10.0,
        "slow took {slow} s"
    );
    // The runner's own counters agree.
    assert_eq!(
        runner.stats(),
        ActionStats {
            started: 3,
            succeeded: 1,
            failed: 1,
            timed_out: 1,
            ..ActionStats::default()
        }
    );
}
