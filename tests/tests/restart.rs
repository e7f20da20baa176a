//! A restart of the agent while nodes beat and one of them crashes in the
//! gap, over the XDP datapath (which outlives the agent): the crashed node
//! is convicted a timeout after its crash, not a timeout after the restart;
//! the others never flap; no event is fired twice; the counters kept
//! counting while no agent ran. Once with SIGTERM, once with SIGKILL. Real
//! XDP on veth pairs in network namespaces (root only).

use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

use hb_tests::{
    ChildGuard, ConfigOptions, Hb, Lab, Signal, TempDir, TestConfig, Timing, events::read_events,
    is_root, unique_prefix, wait_for_event,
};

/// A timeout (2 s) long against the restart gap, so that a conviction a
/// timeout after the crash and one a timeout after the restart are far
/// apart.
const TIMING: Timing = Timing {
    interval: Duration::from_millis(500),
    timeout_multiplier: 4,
    sweep_period: Duration::from_millis(50),
};
/// No agent runs for this long after the stop (plus the new one's start).
const GAP: Duration = Duration::from_millis(1500);
/// Slack for scheduling and the sweep on a loaded 2-core machine. Below
/// `GAP`: an agent that gave the crashed node a full timeout from its start
/// would convict it later than the timeout plus this.
const MARGIN: Duration = Duration::from_millis(1000);
const READY_WITHIN: Duration = Duration::from_secs(10);
const UP_WITHIN: Duration = Duration::from_secs(5);
const EXIT_WITHIN: Duration = Duration::from_secs(15);

#[test]
fn sigterm_restart_convicts_a_node_that_crashed_in_the_gap_on_time() {
    restart_with_a_crash_in_the_gap(Signal::Term);
}

#[test]
fn sigkill_restart_convicts_a_node_that_crashed_in_the_gap_on_time() {
    restart_with_a_crash_in_the_gap(Signal::Kill);
}

fn restart_with_a_crash_in_the_gap(signal: Signal) {
    if !is_root() {
        eprintln!("skipped: needs root (run `cargo xtask test` as root)");
        return;
    }
    let hb = Hb::from_env();
    let lab = Lab::build(&unique_prefix(), 3).unwrap_or_else(|err| panic!("{err}"));
    let dir = TempDir::new("hb-restart").unwrap_or_else(|err| panic!("{err}"));
    let config = TestConfig::write_with(&dir, &lab, TIMING, &ConfigOptions::default())
        .unwrap_or_else(|err| panic!("{err}"));
    let start_agent = |log: &str| {
        hb.start_agent(&lab, &config, &dir.join(log), READY_WITHIN)
            .unwrap_or_else(|err| panic!("the agent did not become ready: {err}"))
    };
    let mut agent = start_agent("agent-1.log");
    let mut senders: BTreeMap<u8, ChildGuard> = (1..=3)
        .map(|i| {
            let log = dir.join(&format!("sender-{i}.log"));
            let sender = hb.start_sender(&lab, i, TIMING.interval, &log);
            (i, sender.unwrap_or_else(|err| panic!("{err}")))
        })
        .collect();
    for i in 1..=3u32 {
        wait_for_event(
            &config.events,
            |e| e.is("up", i),
            Instant::now() + UP_WITHIN,
            &format!("node {i} up"),
        )
        .unwrap_or_else(|err| panic!("{err}\n{}", agent.log_tail(30)));
    }
    let accepted_before = accepted(&hb, &config);

    agent
        .stop(signal, EXIT_WITHIN)
        .unwrap_or_else(|err| panic!("{err}"));
    // Node 3 crashes while no agent runs.
    senders
        .get_mut(&3)
        .expect("sender 3")
        .signal(Signal::Kill)
        .unwrap_or_else(|err| panic!("{err}"));
    let crashed = Instant::now();
    thread::sleep(GAP);
    let mut agent = start_agent("agent-2.log");

    let limit = TIMING.timeout() + MARGIN;
    let (down, seen) = wait_for_event(
        &config.events,
        |e| e.is("down", 3),
        crashed + limit + Duration::from_secs(5),
        "node 3 down",
    )
    .unwrap_or_else(|err| panic!("{err}\n{}", agent.log_tail(30)));
    let detected = seen - crashed;
    assert!(
        detected <= limit,
        "node 3 convicted {detected:?} after its crash (limit: its timeout {:?} + {MARGIN:?}): \
         the restarted agent did not trust the arrival times the kernel kept\n{}",
        TIMING.timeout(),
        agent.log_tail(30)
    );
    let timeout_ms = u64::try_from(TIMING.timeout().as_millis()).unwrap();
    assert!(
        down.since_last_heartbeat_ms
            .is_some_and(|ms| ms >= timeout_ms),
        "convicted before a full timeout of silence: {down:?}"
    );

    // The others keep beating through both agents: one `up` each, ever;
    // node 3 one `up` and one `down`.
    thread::sleep(TIMING.timeout());
    let mut fired: BTreeMap<(u32, String), usize> = BTreeMap::new();
    for event in read_events(&config.events).unwrap_or_else(|err| panic!("{err}")) {
        *fired.entry((event.node_id, event.kind)).or_default() += 1;
    }
    let expected: BTreeMap<(u32, String), usize> = [
        ((1, "up".to_owned()), 1),
        ((2, "up".to_owned()), 1),
        ((3, "down".to_owned()), 1),
        ((3, "up".to_owned()), 1),
    ]
    .into();
    assert_eq!(fired, expected, "events over both agents");

    let accepted_after = accepted(&hb, &config);
    let beats_in_gap = 2 * (GAP.as_millis() / TIMING.interval.as_millis()) as u64;
    assert!(
        accepted_after >= accepted_before + beats_in_gap,
        "accepted {accepted_before} before the stop, {accepted_after} after the restart: the \
         heartbeats of the gap (at least {beats_in_gap}) were not all counted"
    );
    agent
        .stop(Signal::Term, EXIT_WITHIN)
        .unwrap_or_else(|err| panic!("{err}"));
}

fn accepted(hb: &Hb, config: &TestConfig) -> u64 {
    let status = hb
        .status_json(&config.socket)
        .unwrap_or_else(|err| panic!("hb status --json: {err}"));
    status["counters"]["accepted"].as_u64().unwrap_or(0)
}
