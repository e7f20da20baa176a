use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use super::*;
use crate::detect::detector::Transition;

/// Every family but the per-node ones, as the classic format names them.
const FAMILIES: [(&str, &str); 16] = [
    ("hb_nodes", "gauge"),
    ("hb_transitions_total", "counter"),
    ("hb_packets_total", "counter"),
    ("hb_verdicts_total", "counter"),
    ("hb_actions_total", "counter"),
    ("hb_action_duration_seconds", "histogram"),
    ("hb_detection_seconds", "histogram"),
    ("hb_sweep_duration_seconds", "histogram"),
    ("hb_sweep_lateness_seconds", "histogram"),
    ("hb_agent_stalls_total", "counter"),
    ("hb_brake_engaged", "gauge"),
    ("hb_brake_held_actions", "gauge"),
    ("hb_state_saved", "gauge"),
    ("hb_state_save_failures", "gauge"),
    ("hb_state_last_save_timestamp_seconds", "gauge"),
    ("hb_build_info", "gauge"),
];

/// A family's name and type in OpenMetrics: counters without `_total`,
/// the build info as an info.
fn openmetrics(name: &str, kind: &'static str) -> (String, &'static str) {
    match (name.strip_suffix("_total"), name.strip_suffix("_info")) {
        (Some(base), _) => (base.to_owned(), kind),
        (_, Some(base)) => (base.to_owned(), "info"),
        _ => (name.to_owned(), kind),
    }
}

fn assert_family(text: &str, name: &str, kind: &str) {
    assert!(
        text.contains(&format!("# HELP {name} ")),
        "no HELP of {name}:\n{text}"
    );
    assert!(
        text.contains(&format!("# TYPE {name} {kind}\n")),
        "no TYPE of {name}:\n{text}"
    );
}

fn counters() -> CounterValues {
    let mut values = [0; Counter::COUNT as usize];
    for (i, value) in values.iter_mut().enumerate() {
        *value = 1000 + i as u64;
    }
    values
}

fn scrape<'a>(counters: &'a CounterValues, per_node: Option<&'a [NodeSample<'a>]>) -> Scrape<'a> {
    Scrape {
        states: &[(NodeState::Up, 7), (NodeState::Down, 2)],
        counters,
        brake_engaged: true,
        brake_held: 3,
        state_saving: &SAVING,
        per_node,
    }
}

static SAVING: std::sync::LazyLock<SaveHealth> = std::sync::LazyLock::new(|| SaveHealth {
    last_saved_unix_ms: Some(1_800_000_000_000),
    failures: 2,
    ..SaveHealth::default()
});

const SAMPLES: [NodeSample<'static>; 2] = [
    NodeSample {
        name: "web-1",
        up: true,
        last_heard_seconds: Some(0.25),
    },
    NodeSample {
        name: "web-2",
        up: false,
        last_heard_seconds: None,
    },
];

/// The value of the sample line named exactly `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        Some(rest.parse().unwrap_or_else(|e| panic!("{line}: {e}")))
    })
}

fn expect(text: &str, series: &str, expected: f64) {
    assert_eq!(value(text, series), Some(expected), "{series} in:\n{text}");
}

/// The agent shares one `Metrics` between its sweep and the HTTP server.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Metrics>();
    shareable::<ActionMetrics>();
};

#[test]
fn every_family_is_listed_in_both_formats() {
    let metrics = Metrics::new(0);
    let counters = counters();
    let classic = metrics
        .encode(&scrape(&counters, Some(&SAMPLES)), Format::Prometheus)
        .expect("encode");
    let open = metrics
        .encode(&scrape(&counters, Some(&SAMPLES)), Format::OpenMetrics)
        .expect("encode");
    for (name, kind) in FAMILIES {
        assert_family(&classic, name, kind);
        let (name, kind) = openmetrics(name, kind);
        assert_family(&open, &name, kind);
    }
    // Nothing else: the list above is whole.
    for text in [&classic, &open] {
        assert_eq!(text.matches("# TYPE ").count(), FAMILIES.len(), "{text}");
        // Per-node samples given, but the limit is 0: no per-node series.
        assert!(!text.contains("hb_node_"), "{text}");
    }
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(!classic.contains("# EOF"), "{classic}");
    let build = format!(
        r#"hb_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    expect(&classic, &build, 1.0);
    expect(&open, &build, 1.0);
}

#[test]
fn scrape_time_values_are_exposed() {
    let metrics = Metrics::new(0);
    let counters = counters();
    let text = metrics
        .encode(&scrape(&counters, None), Format::Prometheus)
        .expect("encode");
    for (state, count) in [
        ("unseen", 0.0),
        ("up", 7.0),
        ("suspect", 0.0),
        ("down", 2.0),
        ("flapping", 0.0),
        ("left", 0.0),
    ] {
        expect(&text, &format!(r#"hb_nodes{{state="{state}"}}"#), count);
    }
    for counter in Counter::ALL {
        let series = if counter.is_outcome() {
            format!(r#"hb_packets_total{{outcome="{}"}}"#, counter.name())
        } else {
            format!(r#"hb_verdicts_total{{verdict="{}"}}"#, counter.name())
        };
        expect(&text, &series, 1000.0 + counter as u32 as f64);
    }
    expect(&text, "hb_brake_engaged", 1.0);
    expect(&text, "hb_brake_held_actions", 3.0);
    expect(&text, "hb_state_saved", 1.0);
    expect(&text, "hb_state_save_failures", 2.0);
    expect(
        &text,
        "hb_state_last_save_timestamp_seconds",
        1_800_000_000.0,
    );
    expect(&text, "hb_agent_stalls_total", 0.0);
    expect(&text, "hb_sweep_duration_seconds_count", 0.0);

    // The next scrape reads the new values.
    let text = metrics
        .encode(
            &Scrape {
                states: &[(NodeState::Up, 9)],
                brake_engaged: false,
                ..scrape(&counters, None)
            },
            Format::Prometheus,
        )
        .expect("encode");
    expect(&text, r#"hb_nodes{state="up"}"#, 9.0);
    expect(&text, r#"hb_nodes{state="down"}"#, 0.0);
    expect(&text, "hb_brake_engaged", 0.0);
}

#[test]
fn per_node_series_only_within_the_limit() {
    let metrics = Metrics::new(2);
    let counters = counters();
    let text = metrics
        .encode(&scrape(&counters, Some(&SAMPLES)), Format::Prometheus)
        .expect("encode");
    assert_family(&text, "hb_node_up", "gauge");
    assert_family(&text, "hb_node_last_heard_seconds", "gauge");
    expect(&text, r#"hb_node_up{node="web-1"}"#, 1.0);
    expect(&text, r#"hb_node_up{node="web-2"}"#, 0.0);
    expect(&text, r#"hb_node_last_heard_seconds{node="web-1"}"#, 0.25);
    // Never heard: left out, not faked.
    assert_eq!(
        value(&text, r#"hb_node_last_heard_seconds{node="web-2"}"#),
        None,
        "{text}"
    );

    // One node over the limit: no per-node series at all.
    let three = [
        SAMPLES[0].clone_sample(),
        SAMPLES[1].clone_sample(),
        NodeSample {
            name: "web-3",
            up: true,
            last_heard_seconds: Some(1.0),
        },
    ];
    let text = metrics
        .encode(&scrape(&counters, Some(&three)), Format::Prometheus)
        .expect("encode");
    assert!(!text.contains("hb_node_"), "{text}");
    // Within the limit again, but no samples from the caller: none either.
    let text = metrics
        .encode(&scrape(&counters, None), Format::Prometheus)
        .expect("encode");
    assert!(!text.contains("hb_node_"), "{text}");
}

impl NodeSample<'_> {
    fn clone_sample(&self) -> Self {
        NodeSample { ..*self }
    }
}

fn transition(node_id: u32, from: NodeState, to: NodeState, silence_ms: Option<u64>) -> Transition {
    Transition {
        node_id,
        from,
        to,
        since_last_heartbeat_ns: silence_ms.map(|ms| ms * 1_000_000),
    }
}

#[test]
fn record_sweep_counts_transitions_detection_and_stalls() {
    let metrics = Metrics::new(0);
    let outcome = SweepOutcome {
        transitions: vec![
            transition(1, NodeState::Up, NodeState::Suspect, Some(2_000)),
            transition(2, NodeState::Up, NodeState::Suspect, Some(2_100)),
            transition(1, NodeState::Suspect, NodeState::Down, Some(3_000)),
            transition(3, NodeState::Unseen, NodeState::Down, None),
        ],
        took: Duration::from_micros(500),
        ..SweepOutcome::default()
    };
    metrics.record_sweep(&outcome);
    let stalled = SweepOutcome {
        stalled_ns: Some(5_000_000_000),
        transitions: vec![transition(4, NodeState::Up, NodeState::Down, Some(6_500))],
        took: Duration::from_millis(2),
        ..SweepOutcome::default()
    };
    metrics.record_sweep(&stalled);

    let counters = counters();
    let text = metrics
        .encode(&scrape(&counters, None), Format::Prometheus)
        .expect("encode");
    expect(
        &text,
        r#"hb_transitions_total{from="up",to="suspect"}"#,
        2.0,
    );
    expect(
        &text,
        r#"hb_transitions_total{from="suspect",to="down"}"#,
        1.0,
    );
    expect(
        &text,
        r#"hb_transitions_total{from="unseen",to="down"}"#,
        1.0,
    );
    expect(&text, r#"hb_transitions_total{from="up",to="down"}"#, 1.0);
    assert_eq!(
        value(&text, r#"hb_transitions_total{from="down",to="up"}"#),
        None,
        "{text}"
    );
    // Convictions with a known silence only: 3 s and 6.5 s.
    expect(&text, "hb_detection_seconds_count", 2.0);
    expect(&text, "hb_detection_seconds_sum", 9.5);
    expect(&text, r#"hb_detection_seconds_bucket{le="5"}"#, 1.0);
    expect(&text, "hb_agent_stalls_total", 1.0);
    expect(&text, "hb_sweep_duration_seconds_count", 2.0);
    expect(&text, "hb_sweep_duration_seconds_sum", 0.0025);
}

#[test]
fn sweep_lateness_is_a_histogram_of_wake_ups() {
    let metrics = Metrics::new(0);
    metrics.record_wake_lateness(40_000);
    metrics.record_wake_lateness(3_000_000);
    let counters = counters();
    let text = metrics
        .encode(&scrape(&counters, None), Format::Prometheus)
        .expect("encode");
    expect(&text, "hb_sweep_lateness_seconds_count", 2.0);
    expect(
        &text,
        r#"hb_sweep_lateness_seconds_bucket{le="5e-05"}"#,
        1.0,
    );
    expect(
        &text,
        r#"hb_sweep_lateness_seconds_bucket{le="0.005"}"#,
        2.0,
    );
}

#[test]
fn action_metrics_are_declared_then_recorded() {
    let metrics = Metrics::new(0);
    let actions = metrics.actions();
    actions.declare("drain");
    let counters = counters();
    let text = metrics
        .encode(&scrape(&counters, None), Format::Prometheus)
        .expect("encode");
    for result in RunResult::ALL {
        expect(
            &text,
            &format!(
                r#"hb_actions_total{{action="drain",result="{}"}}"#,
                result.name()
            ),
            0.0,
        );
    }
    expect(
        &text,
        r#"hb_action_duration_seconds_count{action="drain"}"#,
        0.0,
    );

    actions.record("drain", RunResult::TimedOut, Duration::from_millis(1500));
    let text = metrics
        .encode(&scrape(&counters, None), Format::Prometheus)
        .expect("encode");
    expect(
        &text,
        r#"hb_actions_total{action="drain",result="timed_out"}"#,
        1.0,
    );
    expect(
        &text,
        r#"hb_actions_total{action="drain",result="failed"}"#,
        0.0,
    );
    expect(
        &text,
        r#"hb_action_duration_seconds_sum{action="drain"}"#,
        1.5,
    );
}

/// Runs `promtool check metrics` on `text`; fails loudly when promtool is
/// missing, since `cargo xtask setup` installs it.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): run `cargo xtask setup`, which installs Debian's \
                 prometheus package (promtool) when it is missing"
            )
        });
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("wait for promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

/// Every family with series in it (actions, transitions, per-node).
fn busy_metrics() -> Metrics {
    let metrics = Metrics::new(10);
    metrics
        .actions()
        .record("drain", RunResult::Succeeded, Duration::from_millis(20));
    metrics.record_sweep(&SweepOutcome {
        stalled_ns: Some(1),
        transitions: vec![transition(1, NodeState::Up, NodeState::Down, Some(3_000))],
        took: Duration::from_micros(800),
        ..SweepOutcome::default()
    });
    metrics
}

#[test]
fn promtool_accepts_the_prometheus_text() {
    let metrics = busy_metrics();
    let counters = counters();
    for per_node in [None, Some(&SAMPLES[..])] {
        let text = metrics
            .encode(&scrape(&counters, per_node), Format::Prometheus)
            .expect("encode");
        let (ok, said) = promtool_check(&text);
        assert!(
            ok,
            "promtool check metrics refused:\n{said}\n--- text:\n{text}"
        );
        assert!(
            said.trim().is_empty(),
            "promtool complained:\n{said}\n--- text:\n{text}"
        );
    }
}

#[test]
fn a_group_member_has_the_group_series() {
    let mut metrics = Metrics::new(0);
    let group = metrics.register_group();
    group.quorum.set(1);
    group.voters.set(3);
    group.writes.inc_by(4);
    group.incidents.inc();
    let counters = counters();
    let text = metrics
        .encode(&scrape(&counters, None), Format::Prometheus)
        .expect("encode");
    for (name, kind) in [
        ("hb_group_quorum", "gauge"),
        ("hb_group_leader", "gauge"),
        ("hb_group_members", "gauge"),
        ("hb_group_voters", "gauge"),
        ("hb_group_disputed_nodes", "gauge"),
        ("hb_group_holding_down", "gauge"),
        ("hb_group_etcd_writes_total", "counter"),
        ("hb_group_etcd_write_ops_total", "counter"),
        ("hb_group_incidents_total", "counter"),
        ("hb_group_lease_losses_total", "counter"),
    ] {
        assert_family(&text, name, kind);
    }
    expect(&text, "hb_group_quorum", 1.0);
    expect(&text, "hb_group_voters", 3.0);
    expect(&text, "hb_group_etcd_writes_total", 4.0);
    expect(&text, "hb_group_incidents_total", 1.0);
    // An agent alone has none of them.
    let alone = Metrics::new(0)
        .encode(&scrape(&counters, None), Format::Prometheus)
        .expect("encode");
    assert!(!alone.contains("hb_group_"), "{alone}");
}
