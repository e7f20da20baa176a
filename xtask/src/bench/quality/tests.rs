//! The analysis, the matching of the detectors and the plots, on made-up
//! logs.

use serde_json::json;

use super::{
    analysis::{Event, analyse},
    comparison::{Comparison, Ratio},
    plots::{CDF_POINTS, cdf_points, durations_plot, log_label, mistakes_plot},
    scenarios::{Detector, matched_interval_ms, phi_deadline_ms, scenarios},
};
use crate::bench::rig::LoadReport;

fn report(nodes: u32, stopped: &[(u32, Option<u64>)]) -> LoadReport {
    serde_json::from_value(json!({
        "nodes": nodes, "interval_ns": 100_000_000, "rate": 100.0, "achieved_rate": 100.0,
        "heartbeats": 1, "sent": 1, "send_errors": 0, "unsent": 0,
        "started_mono_ns": 0, "ended_mono_ns": 3_600_000_000_000_u64, "stop_mono_ns": 300,
        "max_lag_ns": 0, "late_batches": 0, "interrupted": false,
        "stopped": stopped.iter().map(|(id, last)| json!({"id": id, "last_sent_mono_ns": last})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn event(node_id: u32, event: &str, mono_ns: u64) -> Event {
    Event {
        mono_ns,
        event: event.to_owned(),
        node_id,
        since_last_heartbeat_ms: Some(500),
    }
}

const S: u64 = 1_000_000_000;

#[test]
fn suspicions_with_a_suspect_state() {
    // 4 nodes for an hour; node 4 dies at 1800 s.
    let load = report(4, &[(4, Some(1800 * S))]);
    let events = vec![
        event(1, "up", S),
        event(2, "up", S),
        event(3, "up", S),
        event(4, "up", S),
        event(1, "suspect", 10 * S), // a suspicion of 1 s
        event(1, "up", 11 * S),
        event(2, "suspect", 20 * S), // to down, back after 5 s
        event(2, "down", 21 * S),
        event(2, "flapping", 23 * S),
        event(2, "up", 25 * S),
        event(4, "suspect", 1000 * S), // before it died: false
        event(4, "up", 1000 * S + S / 2),
        event(4, "suspect", 1800 * S + S / 2), // after: a detection
        event(4, "down", 1800 * S + S * 7 / 10),
        event(3, "suspect", 3599 * S),  // open at the end
        event(3, "down", 3600 * S + 1), // after the end: not counted
    ];
    let o = analyse(Detector::Phi, load, &events, None);
    assert_eq!(o.suspicion_event, "suspect");
    assert_eq!(o.false_suspicions, 4);
    assert_eq!(o.false_downs, 1);
    assert_eq!(o.open_at_end, 1);
    assert_eq!(o.mistake_duration.count, 4);
    assert_eq!(o.mistake_duration.max_ms, Some(5000.0));
    assert_eq!(
        o.mistake_duration.mean_ms,
        Some((1000.0 + 5000.0 + 500.0 + 1000.0) / 4.0)
    );
    assert_eq!(o.latencies_ns, vec![S * 7 / 10]);
    assert_eq!(o.time_to_suspect.max_ms, Some(500.0));
    assert_eq!((o.detected, o.missed), (1, 0));
    assert!((o.node_hours - 3.5).abs() < 1e-9, "{}", o.node_hours);
    assert!((o.false_suspicions_per_node_hour - 4.0 / 3.5).abs() < 1e-9);
    assert_eq!(o.p99_with_missed_ns, Some(S * 7 / 10));
}

#[test]
fn suspicions_are_downs_without_a_suspect_state() {
    let load = report(3, &[(3, Some(100 * S)), (2, None)]);
    let events = vec![
        event(1, "up", S),
        event(1, "down", 5 * S),
        event(1, "up", 7 * S),
        event(1, "down", 9 * S),
    ];
    let o = analyse(Detector::Timeout { interval_ms: 220 }, load, &events, None);
    assert_eq!(o.suspicion_event, "down");
    assert_eq!(
        (o.false_suspicions, o.false_downs, o.open_at_end),
        (2, 2, 1)
    );
    assert_eq!(o.mistake_duration.max_ms, Some(3591.0 * 1e3));
    // Node 3 never declared down: missed; node 2 never sent.
    assert_eq!(
        (o.stopped, o.detected, o.missed, o.never_sent),
        (2, 0, 1, 1)
    );
    assert_eq!(o.p99_with_missed_ns, None);
    assert_eq!(o.timeout_ms, Some(660));
}

#[test]
fn warm_up_mistakes_are_counted_apart() {
    let load = report(2, &[]);
    let events = vec![
        event(1, "up", S / 10),
        event(1, "suspect", S / 2),
        event(1, "down", S),
        event(1, "up", 3 * S),
        event(2, "suspect", 5 * S),
        event(2, "up", 6 * S),
    ];
    let o = analyse(Detector::Phi, load, &events, None);
    assert_eq!((o.false_suspicions, o.false_downs), (2, 1));
    assert_eq!((o.warm_up.false_suspicions, o.warm_up.false_downs), (1, 1));
    assert!((o.warm_up.node_hours - 4.0 / 3600.0).abs() < 1e-12);
    assert_eq!(o.sample_after_warm_up().0, 1);
    assert_eq!(o.false_downs_listed[0].at_ms, 1000.0);
}

#[test]
fn matching_and_ratios() {
    // Phi's median 668 ms: timeout 663 ms = 3 x 221 ms.
    assert_eq!(matched_interval_ms(Some(668_000_000)), 221);
    assert!((phi_deadline_ms() - 761.3).abs() < 1e-9);
    assert_eq!(matched_interval_ms(None), 252);
    let ratio = |t, p| {
        let r = Ratio::of(t, p);
        (r.value, r.lower_bound)
    };
    assert_eq!(ratio((100, 10.0), (2, 10.0)), (50.0, false));
    assert_eq!(ratio((30, 10.0), (0, 10.0)), (30.0, true));
    assert_eq!(Ratio::of((30, 10.0), (0, 10.0)).text(), ">= 30");
    assert_eq!(ratio((0, 10.0), (3, 10.0)), (0.0, false));
    assert!(ratio((0, 10.0), (0, 10.0)).0.is_nan());
    assert_eq!(Ratio::of((0, 1.0), (0, 1.0)).text(), "-");
    assert_eq!(Ratio::of((16094, 1.0), (0, 1.0)).text(), ">= 16094");
    assert_eq!(log_label(&0.01), "0.01");
    assert_eq!(log_label(&200.0), "200");
    assert_eq!(log_label(&300.0), "");
    assert!(Detector::Phi.section().contains("phi_threshold = 8.0\n"));
}

#[test]
fn draws_the_mistakes_plot() {
    let dir = std::env::temp_dir().join(format!("xtask-quality-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.svg");
    let outcome = |detector, suspicions: usize| {
        let mut o = analyse(detector, report(10, &[]), &[], None);
        o.false_suspicions = suspicions;
        o.false_suspicions_per_node_hour = suspicions as f64 / o.node_hours;
        o
    };
    let comparisons: Vec<Comparison> = scenarios()
        .into_iter()
        .enumerate()
        .map(|(i, scenario)| Comparison {
            scenario,
            phi: outcome(Detector::Phi, i % 2),
            timeout: outcome(Detector::Timeout { interval_ms: 220 }, 10 * i),
            ratio: Ratio::of((1, 1.0), (1, 1.0)),
            ratio_after_warm_up: Ratio::of((1, 1.0), (0, 1.0)),
        })
        .collect();
    mistakes_plot(&path, &comparisons).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.contains("(c) 500 ms sender pauses"), "{svg}");
    assert!(svg.contains(">\n0\n</text>"), "{svg}");
    durations_plot(&path, &comparisons).unwrap();
    let points = cdf_points(&(1..=1000).collect::<Vec<u64>>());
    assert!(points.len() <= CDF_POINTS + 1, "{}", points.len());
    assert_eq!(points.last(), Some(&(1000.0 / 1e6, 1.0)));
    std::fs::remove_dir_all(&dir).unwrap();
}
