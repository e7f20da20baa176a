//! The sweep thread as the agent runs it: conviction at the deadline rather
//! than at the next period, few wake-ups when no deadline is near, a clean
//! stop that joins it before the final save, a panic that ends the agent
//! with an error, and the real-time settings applied to it alone.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

use super::*;
use crate::{
    agent::{Agent, sweeper::THREAD_NAME},
    clock::monotonic_ns,
    sys,
};

const MS: u64 = 1_000_000;
/// How late a conviction may come after its deadline here: the sweep
/// thread's wake-up on a busy, shared CI machine. A sweep every period
/// instead of at the deadline would be up to `sweep_period` (seconds) late.
const MARGIN_NS: u64 = 100 * MS;

/// An agent on `lo` with the event log, nodes `n1` and `n2` (node 1 with
/// `node_1_extra` in its entry) and `defaults` as its `[defaults]` section.
fn sweeper_config(
    dir: &Path,
    port: u16,
    http: SocketAddr,
    defaults: &str,
    node_1_extra: &str,
) -> String {
    let d = dir.display();
    format!(
        r#"interfaces = ["lo"]
port = {port}
datapath = "socket"
max_nodes = 16
status_socket = "{d}/hb.sock"
state_file = "{d}/state"
event_log = "{d}/events.jsonl"

[defaults]
{defaults}

[http]
listen = "{http}"

[[nodes]]
id = 1
name = "n1"
{node_1_extra}

[[nodes]]
id = 2
name = "n2"
"#
    )
}

/// The event log's records of node 1 so far, in order.
fn events_of_node_1(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
        .filter(|record| record["node_id"] == 1)
        .collect()
}

/// Node 1's heartbeats every `interval` from a thread of its own, sequence
/// numbers from 1, until `stop` is set; returns the monotonic time just
/// before its last heartbeat was sent.
fn beat_steadily(port: u16, interval: Duration, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a sender socket");
        let mut last_sent = 0;
        for sequence in 1.. {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let heartbeat = Heartbeat {
                flags: 0,
                key_id: 0,
                node_id: 1,
                interval_ms: interval.as_millis() as u32,
                incarnation: 7,
                sequence,
                sent_unix_ns: 0,
                auth_tag: [0; 16],
            };
            // Read before the send: over loopback the datagram is
            // received (and stamped) within `send_to`, so a time read after
            // it is later than the arrival the deadline counts from.
            last_sent = monotonic_ns();
            sender
                .send_to(&heartbeat.encode(), (Ipv4Addr::LOCALHOST, port))
                .expect("sending a heartbeat over loopback");
            thread::sleep(interval);
        }
        last_sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_convicted_at_its_deadline_not_a_sweep_period_later() {
    // Node 1: 100 ms x 3, suspect at 200 ms of silence, down at 300 ms; the
    // sweep thread sleeps up to 3 s when no deadline is nearer.
    let agent = RunningAgent::start_in(TempDir::new("sweeper-deadline"), |dir, port, http| {
        let defaults = "interval = \"10s\"\nsweep_period = \"3s\"";
        sweeper_config(dir, port, http, defaults, "interval = \"100ms\"")
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = beat_steadily(agent.port, Duration::from_millis(100), Arc::clone(&stop));
    // Its first heartbeat is seen within a period (nothing was due sooner).
    agent.wait_until_node_1_is_up().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let last_sent = tokio::task::spawn_blocking(move || sender.join().expect("the sender"))
        .await
        .expect("joining the sender");

    let dir = agent.dir.0.clone();
    let convicted = eventually(Duration::from_secs(10), async || {
        events_of_node_1(&dir).iter().any(|e| e["event"] == "down")
    });
    assert!(convicted.await, "never down: {:?}", events_of_node_1(&dir));
    let after: Vec<(String, u64)> = events_of_node_1(&dir)
        .iter()
        .filter(|e| e["mono_ns"].as_u64().is_some_and(|t| t > last_sent))
        .map(|e| {
            let event = e["event"].as_str().unwrap_or_default().to_owned();
            (event, e["mono_ns"].as_u64().unwrap_or_default() - last_sent)
        })
        .collect();
    let events: Vec<&str> = after.iter().map(|(event, _)| event.as_str()).collect();
    for (event, late) in &after {
        eprintln!(
            "{event} {:.1} ms after the last heartbeat left",
            *late as f64 / MS as f64
        );
    }
    assert_eq!(events, ["suspect", "down"], "{after:?}");
    // The sweep's time is at least the deadline after the heartbeat left
    // (it arrived a little later), and at most a small margin past it.
    for ((event, late), deadline) in after.iter().zip([200 * MS, 300 * MS]) {
        assert!(
            (deadline..deadline + MARGIN_NS).contains(late),
            "{event} {} ms after the last heartbeat: its deadline is {} ms",
            late / MS,
            deadline / MS
        );
    }
    agent.shut_down().await;
}

/// Sweeps so far, as `/readyz` reports them.
fn sweeps(http: SocketAddr) -> u64 {
    let (_, body) = http_get(http, "/readyz", None);
    let readiness: Value = serde_json::from_str(&body).expect("readiness as JSON");
    readiness["sweeps"].as_u64().expect("a sweep count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_agent_sweeps_once_a_period_and_no_more() {
    let agent = RunningAgent::start_in(TempDir::new("sweeper-idle"), |dir, port, http| {
        sweeper_config(
            dir,
            port,
            http,
            "interval = \"1s\"\nsweep_period = \"200ms\"",
            "",
        )
    })
    .await;
    // Node 1 up, advertising 5 s (suspect after 10 s of silence); node 2
    // never heard: no deadline within the window.
    agent.beat_every(1, 5_000, 1);
    agent.wait_until_node_1_is_up().await;
    let window = Duration::from_secs(2);
    let before = sweeps(agent.http);
    tokio::time::sleep(window).await;
    let swept = sweeps(agent.http) - before;
    // 10 periods; a wake-up a little late now and then makes one fewer.
    assert!(
        (7..=11).contains(&swept),
        "{swept} sweeps in {window:?} at one per 200 ms"
    );
    agent.shut_down().await;
}

/// An agent started (not yet run) in `dir` with `defaults`, its UDP port.
fn start_agent(dir: &TempDir, defaults: &str) -> Agent {
    let (port, http) = (free_udp_port(), free_tcp_address());
    let path = dir.0.join("hb.toml");
    std::fs::write(&path, sweeper_config(&dir.0, port, http, defaults, "")).expect("the config");
    let config = Config::load(&path, &Overrides::default()).expect("a valid config");
    Agent::start(config, Overrides::default()).expect("the agent starts")
}

/// The sweep thread's kernel id, once it has started.
async fn sweep_thread_id(agent: &Agent) -> i32 {
    let started = eventually(Duration::from_secs(10), async || {
        agent.shared.tid.load(Ordering::Acquire) != 0
    });
    assert!(started.await, "the sweep thread never started");
    agent.shared.tid.load(Ordering::Acquire)
}

fn thread_name(tid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .ok()
        .map(|name| name.trim_end().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wakes_and_joins_the_sweep_thread_then_saves() {
    let dir = TempDir::new("sweeper-stop");
    // A long period: a thread that only looked at its stop flag between
    // periods would keep the shutdown waiting for seconds.
    let agent = start_agent(&dir, "interval = \"10s\"\nsweep_period = \"5s\"");
    let tid = sweep_thread_id(&agent).await;
    assert_eq!(thread_name(tid).as_deref(), Some(THREAD_NAME));
    let (control, received) = mpsc::channel(1);
    let running = tokio::spawn(agent.run(received));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let told = (Instant::now(), monotonic_ns());
    control
        .send(Control::Shutdown)
        .await
        .expect("the agent listens");
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the agent stops")
        .expect("no panic")
        .expect("a clean stop");
    let took = told.0.elapsed();
    assert!(took < Duration::from_secs(2), "the shutdown took {took:?}");
    assert_eq!(thread_name(tid), None, "the sweep thread is gone");
    let saved = state_file::load(&dir.0.join("state"))
        .expect("a readable state file")
        .expect("a state file");
    assert!(
        saved.saved_monotonic_ns > told.1,
        "saved at the shutdown, after the thread stopped"
    );
    assert_eq!(saved.nodes.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_of_the_sweep_thread_ends_the_agent_with_an_error() {
    let dir = TempDir::new("sweeper-panic");
    let agent = start_agent(&dir, "interval = \"10s\"\nsweep_period = \"5s\"");
    sweep_thread_id(&agent).await;
    let shared = Arc::clone(&agent.shared);
    let (_control, received) = mpsc::channel(1);
    let running = tokio::spawn(agent.run(received));
    shared.panic_at_next_sweep.store(true, Ordering::Release);
    shared.wake();
    let ended = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the agent stops on its own")
        .expect("the agent's task itself did not panic");
    let error = ended.expect_err("an error, for the supervisor to restart it");
    assert!(
        error.to_string().contains("the sweep thread panicked"),
        "{error:#}"
    );
}

/// Kibibytes of locked memory of this process (`VmLck`).
fn locked_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|line| line.strip_prefix("VmLck:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmLck line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_priority_and_lock_memory_apply_to_the_sweep_thread() {
    let dir = TempDir::new("sweeper-realtime");
    let agent = start_agent(
        &dir,
        "interval = \"1s\"\nsweep_period = \"100ms\"\nsweep_priority = 3\nlock_memory = true",
    );
    let scheduling = sys::scheduling_of(agent.sweeper.pthread()).expect("its scheduling");
    assert_eq!(scheduling, (libc::SCHED_FIFO, 3), "SCHED_FIFO at 3");
    assert!(locked_kib() > 0, "mlockall locked nothing");
    // The agent's other threads keep normal scheduling.
    // SAFETY: pthread_self has no preconditions.
    let this = sys::scheduling_of(unsafe { libc::pthread_self() }).expect("this thread's");
    assert_eq!(this.0, libc::SCHED_OTHER);
    let (control, received) = mpsc::channel(1);
    let running = tokio::spawn(agent.run(received));
    control.send(Control::Shutdown).await.expect("listening");
    running.await.expect("no panic").expect("a clean stop");
    assert_eq!(locked_kib(), 0, "the agent unlocks what it locked");
}

#[test]
fn an_invalid_sweep_priority_is_a_config_error_naming_the_key() {
    let dir = TempDir::new("sweeper-priority");
    let path = dir.0.join("hb.toml");
    let text = sweeper_config(&dir.0, 7979, free_tcp_address(), "sweep_priority = 100", "");
    std::fs::write(&path, text).expect("the config");
    let error = Config::load(&path, &Overrides::default()).expect_err("100 is out of range");
    let message = error.to_string();
    assert!(
        message.contains("`defaults.sweep_priority` is 100") && message.contains("1 to 99"),
        "{message}"
    );
}

/// The agent's longest holds of the sweep's lock at a million nodes (and,
/// for scale, one sweep), on a table of mostly up nodes with a brake
/// episode and flap history in memory. A measurement, not a check: run it
/// built for release,
/// `cargo test --release -p hb-userspace --lib -- --ignored --nocapture lock_holds_at_a_million_nodes`.
#[test]
#[ignore = "a measurement; run it built for release"]
fn lock_holds_at_a_million_nodes() {
    use crate::{
        agent::{query, startup, status},
        datapath::table::NodeTable,
        detect::{detector::Transition, sweep::SweepOutcome},
        keys::Keyring,
        nodes::NodeDirectory,
        sinks::{
            ClusterView, log,
            state_file::{SavedNode, SavedState, Verdicts, snapshot_of},
        },
    };
    const NODES: u32 = 1_000_000;
    let config = Config::parse(
        &format!(
            "interfaces = [\"lo\"]\nmax_nodes = {}\n[[node_ranges]]\nfirst_id = 1\ncount = \
             {NODES}\nname_prefix = \"n\"\n",
            NODES + 1
        ),
        "bench.toml",
    )
    .expect("a config");
    let nodes = NodeDirectory::owned(&config.nodes, &config.node_ranges);
    let len = NODES + 1;
    let table = NodeTable::anonymous(len).expect("memory");
    // 90% up, 5% suspect, 5% down (each with a flap history); the brake
    // remembers the 10% silent ones and holds the downs.
    let now = monotonic_ns();
    let state_of = |id: u32| match id % 20 {
        0 => NodeState::Down,
        1 => NodeState::Suspect,
        _ => NodeState::Up,
    };
    let mut saved = SavedState {
        nodes: (1..=NODES)
            .map(|id| SavedNode {
                id,
                state: state_of(id),
                heartbeats: 10,
                ..SavedNode::default()
            })
            .collect(),
        ..SavedState::default()
    };
    saved.flaps = (1..=NODES)
        .filter(|&id| state_of(id) == NodeState::Down)
        .map(|id| crate::detect::detector::FlapHistory {
            id,
            downs_ns: vec![now - 1_000 * MS],
            ..Default::default()
        })
        .collect();
    let silent: Vec<(u32, u64)> = (1..=NODES)
        .filter(|&id| state_of(id) != NodeState::Up)
        .map(|id| (id, now - u64::from(id)))
        .collect();
    saved.brake.engaged_since_ns = Some(now - 2_000 * MS);
    saved.brake.held = silent
        .iter()
        .copied()
        .filter(|&(id, _)| state_of(id) == NodeState::Down)
        .collect();
    saved.brake.silent = silent;
    let mut sweep = startup::restore(
        (
            config.detector_settings().expect("settings"),
            config.brake.settings(),
        ),
        &nodes,
        &saved,
        &Keyring::default(),
        &table,
        startup::Continuity {
            table_kept: false,
            recorded_throughout: false,
        },
    );
    let time = |what: &str, f: &mut dyn FnMut()| {
        let runs = 5;
        let (mut shortest, mut longest) = (Duration::MAX, Duration::ZERO);
        for _ in 0..runs {
            let started = Instant::now();
            f();
            let took = started.elapsed();
            (shortest, longest) = (shortest.min(took), longest.max(took));
        }
        eprintln!("{what}: {shortest:.2?} to {longest:.2?} ({runs} runs)");
    };
    // Every node heard a second ago (restored nodes are otherwise never
    // heard, and examined by every sweep); the first sweep examines them
    // all, time the next ones.
    let heard = hb_common::table::seen::word(monotonic_ns() - 1_000 * MS, false);
    for id in nodes.ids() {
        table.seen.set(id, heard);
    }
    sweep.run(monotonic_ns(), &table);
    time("sweep (for scale)", &mut || {
        std::hint::black_box(sweep.run(monotonic_ns(), &table));
    });
    let cluster = ClusterView {
        nodes: &nodes,
        table: &table,
        detector: sweep.detector(),
    };
    time("hold: copying the verdicts to save", &mut || {
        std::hint::black_box(Verdicts::copy(&nodes, sweep.detector(), sweep.brake()));
    });
    time("  of which the states", &mut || {
        std::hint::black_box(
            nodes
                .ids()
                .map(|id| sweep.detector().state(id))
                .collect::<Vec<_>>(),
        );
    });
    time("  of which the flap history", &mut || {
        std::hint::black_box(sweep.detector().flap_history());
    });
    time("  of which the brake's memory", &mut || {
        std::hint::black_box(sweep.brake().memory());
    });
    time("no hold: building the snapshot from them", &mut || {
        let verdicts = Verdicts::copy(&nodes, sweep.detector(), sweep.brake());
        std::hint::black_box(snapshot_of(&nodes, verdicts, &table, (0, Vec::new())));
    });
    time("before: the snapshot built under the lock", &mut || {
        std::hint::black_box(state_file::snapshot(
            &nodes,
            sweep.detector(),
            sweep.brake(),
            &table,
            (0, Vec::new()),
        ));
    });
    time("hold: a status report (limit 1000)", &mut || {
        std::hint::black_box(status::report(&cluster, 1000));
    });
    let page = query::PageRequest {
        state: Some(NodeState::Down),
        limit: Some(query::MAX_PAGE),
        after: None,
    };
    let sorted_ids = nodes.sorted_ids();
    time("hold: a page of 10,000 down nodes", &mut || {
        std::hint::black_box(query::node_page(&cluster, &sorted_ids, page, now));
    });
    let mass = SweepOutcome {
        now_ns: now,
        transitions: (1..=NODES)
            .map(|node_id| Transition {
                node_id,
                from: NodeState::Up,
                to: NodeState::Suspect,
                since_last_heartbeat_ns: Some(1),
            })
            .collect(),
        ..SweepOutcome::default()
    };
    time(
        "before: the log of a million transitions, under the lock",
        &mut || {
            let timeouts = log::timeouts(&mass, sweep.detector(), &table);
            let view = log::LogView {
                nodes: &nodes,
                timeouts: &timeouts,
                brake_window: Duration::from_secs(10),
            };
            log::sweep(&mass, &view);
        },
    );
    time(
        "hold: the log's timeouts, of a million transitions",
        &mut || {
            std::hint::black_box(log::timeouts(&mass, sweep.detector(), &table));
        },
    );
    let downs = SweepOutcome {
        transitions: mass.transitions[..50]
            .iter()
            .map(|t| Transition {
                to: NodeState::Down,
                ..*t
            })
            .collect(),
        ..SweepOutcome::default()
    };
    time("hold: the log's timeouts, of 50 downs", &mut || {
        std::hint::black_box(log::timeouts(&downs, sweep.detector(), &table));
    });
}
