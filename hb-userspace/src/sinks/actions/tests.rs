use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::atomic::AtomicU32,
    time::Instant,
};

use super::*;

mod batch;
mod http_receiver;
mod metrics;
mod order;
mod webhook;
mod webhook_config;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "hb-actions-test-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn read(&self, name: &str) -> String {
        let path = self.path(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn shell(name: &str, on: &[Event], script: String, timeout: Duration) -> ActionConfig {
    ActionConfig {
        name: name.to_owned(),
        on: on.to_vec(),
        run: ActionRun::Shell(script),
        timeout,
        batch: false,
    }
}

fn command(name: &str, on: &[Event], argv: &[&str]) -> ActionConfig {
    ActionConfig {
        name: name.to_owned(),
        on: on.to_vec(),
        run: ActionRun::Command(argv.iter().map(|&s| s.to_owned()).collect()),
        timeout: Duration::from_secs(10),
        batch: false,
    }
}

fn event(event: Event) -> ActionEvent {
    ActionEvent {
        event,
        node_id: 42,
        node_name: "web-1".to_owned(),
        node_address: Some("198.18.1.2".to_owned()),
        previous_state: "up",
        since_last_heartbeat: Some(Duration::from_millis(6_150)),
        seq: 0,
    }
}

async fn wait_idle(runner: &ActionRunner) {
    assert!(
        runner.wait_idle(Duration::from_secs(20)).await,
        "actions still busy: {:?}",
        runner.stats()
    );
}

/// The contract's `HB_*` variables in an `env` dump (the test process
/// may have other `HB_*` variables of its own, e.g. `HB_BIN`, which the
/// action inherits).
fn hb_vars(env_dump: &str) -> HashMap<String, String> {
    const CONTRACT: [&str; 6] = [
        "HB_EVENT",
        "HB_NODE_ID",
        "HB_NODE_NAME",
        "HB_NODE_ADDRESS",
        "HB_PREVIOUS_STATE",
        "HB_SINCE_LAST_HEARTBEAT_MS",
    ];
    env_dump
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| CONTRACT.contains(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Alive and not a zombie (an unreaped zombie holds no resources).
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            state != Some('Z')
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn action_gets_the_contract_environment() {
    let dir = TempDir::new("env");
    let out = dir.path("out");
    let runner = ActionRunner::new(
        vec![shell(
            "dump",
            &[Event::Down, Event::Up],
            format!("env > '{}'", out.display()),
            Duration::from_secs(10),
        )],
        4,
    );
    runner.dispatch(event(Event::Down));
    wait_idle(&runner).await;
    let vars = hb_vars(&dir.read("out"));
    let expected: HashMap<String, String> = [
        ("HB_EVENT", "down"),
        ("HB_NODE_ID", "42"),
        ("HB_NODE_NAME", "web-1"),
        ("HB_NODE_ADDRESS", "198.18.1.2"),
        ("HB_PREVIOUS_STATE", "up"),
        ("HB_SINCE_LAST_HEARTBEAT_MS", "6150"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(vars, expected);

    // Unknown address and never heard: present but empty.
    runner.dispatch(ActionEvent {
        event: Event::Up,
        node_id: 7,
        node_name: "new node".to_owned(),
        node_address: None,
        previous_state: "unseen",
        since_last_heartbeat: None,
        seq: 0,
    });
    wait_idle(&runner).await;
    let vars = hb_vars(&dir.read("out"));
    assert_eq!(vars["HB_EVENT"], "up");
    assert_eq!(vars["HB_NODE_ID"], "7");
    assert_eq!(vars["HB_NODE_NAME"], "new node");
    assert_eq!(vars["HB_NODE_ADDRESS"], "");
    assert_eq!(vars["HB_PREVIOUS_STATE"], "unseen");
    assert_eq!(vars["HB_SINCE_LAST_HEARTBEAT_MS"], "");

    let stats = runner.stats();
    assert_eq!(
        stats,
        ActionStats {
            started: 2,
            succeeded: 2,
            ..ActionStats::default()
        }
    );
}

#[tokio::test]
async fn command_is_not_interpreted_by_a_shell() {
    let dir = TempDir::new("noshell");
    let literal = format!("{}/$HB_EVENT;*`true`", dir.0.display());
    let runner = ActionRunner::new(
        vec![command(
            "touch",
            &[Event::Left],
            &["/usr/bin/touch", &literal],
        )],
        1,
    );
    runner.dispatch(event(Event::Left));
    wait_idle(&runner).await;
    assert_eq!(runner.stats().succeeded, 1, "{:?}", runner.stats());
    let names: Vec<String> = std::fs::read_dir(&dir.0)
        .expect("read temp dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["$HB_EVENT;*`true`"]);
}

#[tokio::test]
async fn hanging_action_is_killed_with_its_children() {
    let dir = TempDir::new("hang");
    let pid_file = dir.path("child");
    let timeout = Duration::from_millis(400);
    let runner = ActionRunner::new(
        vec![shell(
            "hang",
            &[Event::Down],
            // The shell waits on a child of its own.
            format!("sleep 30 & echo $! > '{}'; wait", pid_file.display()),
            timeout,
        )],
        1,
    );
    let start = Instant::now();
    runner.dispatch(event(Event::Down));
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "dispatch blocked for {:?}",
        start.elapsed()
    );
    wait_idle(&runner).await;
    let elapsed = start.elapsed();
    assert!(elapsed >= timeout, "finished after {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(10),
        "finished after {elapsed:?}"
    );
    assert_eq!(
        runner.stats(),
        ActionStats {
            started: 1,
            timed_out: 1,
            ..ActionStats::default()
        }
    );

    let child: i32 = dir.read("child").trim().parse().expect("child pid");
    // The orphaned `sleep` is reaped by init; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(child) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!process_alive(child), "child {child} survived the timeout");
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let dir = TempDir::new("bound");
    let actions = (0..4)
        .map(|i| {
            let log = dir.path(&format!("log{i}"));
            shell(
                &format!("sleeper-{i}"),
                &[Event::Down],
                format!(
                    "echo $(date +%s%N) >> '{0}'; sleep 0.3; echo $(date +%s%N) >> '{0}'",
                    log.display()
                ),
                Duration::from_secs(10),
            )
        })
        .collect();
    let runner = ActionRunner::new(actions, 2);
    let start = Instant::now();
    runner.dispatch(event(Event::Down));
    // Nothing has run yet on this single-threaded runtime.
    assert_eq!(runner.stats().queued, 4, "{:?}", runner.stats());

    let mut max_running = 0;
    while !runner.wait_idle(Duration::from_millis(10)).await {
        let stats = runner.stats();
        assert!(stats.running <= 2, "{stats:?}");
        assert_eq!(
            stats.running + stats.queued + stats.succeeded,
            4,
            "{stats:?}"
        );
        max_running = max_running.max(stats.running);
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600),
        "all done after {elapsed:?}"
    );
    assert_eq!(max_running, 2);
    assert_eq!(runner.stats().succeeded, 4, "{:?}", runner.stats());

    // From the processes' own clocks: never more than two at once.
    let mut edges: Vec<(u128, i32)> = Vec::new();
    for i in 0..4 {
        let log = dir.read(&format!("log{i}"));
        let times: Vec<u128> = log
            .lines()
            .map(|l| l.trim().parse().expect("timestamp"))
            .collect();
        assert_eq!(times.len(), 2, "log{i}: {log:?}");
        edges.push((times[0], 1));
        edges.push((times[1], -1));
    }
    // Ends sort before starts at the same instant.
    edges.sort();
    let mut overlap = 0;
    let mut max_overlap = 0;
    for (_, delta) in edges {
        overlap += delta;
        max_overlap = max_overlap.max(overlap);
    }
    assert_eq!(max_overlap, 2);
}

#[tokio::test]
async fn failures_are_counted_not_panicked() {
    let runner = ActionRunner::new(
        vec![
            command(
                "missing",
                &[Event::Down],
                &["/nonexistent/hb-no-such-program"],
            ),
            shell(
                "exit-3",
                &[Event::Down],
                "exit 3".into(),
                Duration::from_secs(10),
            ),
            shell(
                "self-kill",
                &[Event::Down],
                "kill -TERM $$".into(),
                Duration::from_secs(10),
            ),
        ],
        4,
    );
    runner.dispatch(event(Event::Down));
    wait_idle(&runner).await;
    assert_eq!(
        runner.stats(),
        ActionStats {
            started: 3,
            failed: 3,
            ..ActionStats::default()
        }
    );
}

#[tokio::test]
async fn only_subscribed_actions_run() {
    let dir = TempDir::new("subscribed");
    let marker = |name: &str| format!("touch '{}'", dir.path(name).display());
    let runner = ActionRunner::new(
        vec![
            shell("on-up", &[Event::Up], marker("up"), Duration::from_secs(5)),
            shell(
                "on-down",
                &[Event::Down],
                marker("down"),
                Duration::from_secs(5),
            ),
            shell(
                "on-left-down",
                &[Event::Left, Event::Down],
                marker("left-down"),
                Duration::from_secs(5),
            ),
        ],
        4,
    );
    runner.dispatch(event(Event::Left));
    wait_idle(&runner).await;
    assert!(!dir.path("up").exists());
    assert!(!dir.path("down").exists());
    assert!(dir.path("left-down").exists());
    assert_eq!(runner.stats().started, 1, "{:?}", runner.stats());
}

#[tokio::test]
async fn wait_idle_gives_up_at_its_limit() {
    let runner = ActionRunner::new(
        vec![shell(
            "slow",
            &[Event::Up],
            "sleep 1".into(),
            Duration::from_secs(10),
        )],
        1,
    );
    assert!(
        runner.wait_idle(Duration::ZERO).await,
        "idle before dispatch"
    );
    runner.dispatch(event(Event::Up));
    let start = Instant::now();
    assert!(!runner.wait_idle(Duration::from_millis(100)).await);
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    wait_idle(&runner).await;
    assert_eq!(runner.stats().succeeded, 1);
}

#[test]
fn dispatch_outside_a_runtime_does_not_panic() {
    let runner = ActionRunner::new(
        vec![shell(
            "x",
            &[Event::Up],
            "true".into(),
            Duration::from_secs(1),
        )],
        1,
    );
    runner.dispatch(event(Event::Up));
    assert_eq!(runner.stats(), ActionStats::default());
}
