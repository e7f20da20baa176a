//! What an agent keeps across its restarts, over the socket datapath (whose
//! table does not outlive the process, so everything comes from the state
//! file): where and when nodes were heard, which events were reported, and
//! that it refuses or reports a state file it cannot write.

use super::*;

/// The agent's configuration with the action on `up` and `down`, writing
/// what it is told about the node: `{event} {name} {address} {silence ms}`.
fn config_with_addresses(dir: &Path, port: u16, http: SocketAddr) -> String {
    config_text(dir, port, http, "", &[1, 2], "")
        .replace(r#"on = ["up"]"#, r#"on = ["up", "down"]"#)
        .replace(
            "$HB_EVENT $HB_NODE_NAME",
            "$HB_EVENT $HB_NODE_NAME $HB_NODE_ADDRESS $HB_SINCE_LAST_HEARTBEAT_MS",
        )
}

/// The action's lines so far, each without its silence (which varies).
fn event_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("events"))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            line.rsplit_once(' ')
                .map_or(line, |(head, _)| head)
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_knows_where_and_when_silent_nodes_were_heard() {
    let agent =
        RunningAgent::start_in(TempDir::new("restart-address"), config_with_addresses).await;
    // Advertising 100 ms: down 300 ms after the last heartbeat.
    agent.beat_every(1, 100, 1);
    let dir = agent.dir.0.clone();
    let down = eventually(Duration::from_secs(10), async || {
        event_lines(&dir) == ["up n1 127.0.0.1", "down n1 127.0.0.1"]
    });
    assert!(down.await, "up then down once: {:?}", event_lines(&dir));
    let down_line = std::fs::read_to_string(dir.join("events")).unwrap();
    let silence: u64 = down_line
        .lines()
        .nth(1)
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(silence >= 300, "HB_SINCE_LAST_HEARTBEAT_MS={silence}");

    let agent = RunningAgent::start_in(agent.shut_down().await, config_with_addresses).await;
    let report = status::fetch(&agent.socket, 10).await.expect("status");
    let node_1 = report
        .nodes
        .iter()
        .find(|n| n.id == 1)
        .expect("node 1 listed");
    assert_eq!(node_1.state, NodeState::Down);
    assert_eq!(
        node_1.address.as_deref(),
        Some("127.0.0.1"),
        "the last source address"
    );
    assert!(
        node_1.since_last_heartbeat_ms.is_some_and(|ms| ms >= 300),
        "last heard: {:?}",
        node_1.since_last_heartbeat_ms
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        event_lines(&dir).len(),
        2,
        "nothing fired again: {:?}",
        event_lines(&dir)
    );

    // Heard again, steadily (a down node must rise): up, once.
    let mut sequence = 10;
    let up = eventually(Duration::from_secs(10), async || {
        agent.beat_every(1, 100, sequence);
        sequence += 3;
        event_lines(&dir).len() >= 3
    });
    assert!(up.await);
    assert_eq!(event_lines(&dir)[2], "up n1 127.0.0.1");
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_the_agent_cannot_write_is_refused_at_start() {
    let dir = TempDir::new("state-unwritable");
    std::fs::write(dir.0.join("file"), "").unwrap();
    let text = config_text(&dir.0, free_udp_port(), free_tcp_address(), "", &[1], "").replace(
        &format!("{}/state.json", dir.0.display()),
        &format!("{}/file/state", dir.0.display()),
    );
    let path = dir.0.join("hb.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path, &Overrides::default()).expect("a valid config");
    let (_control, received) = mpsc::channel(1);
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        run(config, Overrides::default(), received),
    )
    .await
    .expect("refused at once")
    .expect_err("refused");
    let message = format!("{error:#}");
    assert!(
        message.contains("file/state") && message.contains("--state-file"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_save_shows_in_status_readiness_and_metrics_until_it_works_again() {
    let agent = RunningAgent::start("state-failing", "").await;
    // A directory where the save writes its temporary file: even root
    // cannot create a file there.
    let blocker = agent.dir.0.join("state.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    agent.beat_node_1();
    agent.wait_until_node_1_is_up().await;
    let failing = eventually(Duration::from_secs(10), async || {
        let report = status::fetch(&agent.socket, 1).await.expect("status");
        report.state_file.error.is_some()
    });
    assert!(failing.await, "the failed save was not reported");
    let report = status::fetch(&agent.socket, 1).await.unwrap();
    assert!(report.state_file.failures >= 1);
    assert!(
        report
            .state_file
            .error
            .as_deref()
            .unwrap()
            .contains("state.json"),
        "{:?}",
        report.state_file
    );
    let (code, body) = http_get(agent.http, "/readyz", None);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("state file is not being saved"), "{body}");
    scrape_with(agent.http, &["hb_state_saved 0"]);

    // Fixed: the next save (within 2 s) works, and everything says so.
    std::fs::remove_dir(&blocker).unwrap();
    let recovered = eventually(Duration::from_secs(10), async || {
        http_get(agent.http, "/readyz", None).0 == 200
    });
    assert!(
        recovered.await,
        "{:?}",
        http_get(agent.http, "/readyz", None)
    );
    scrape_with(agent.http, &["hb_state_saved 1"]);
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_state_file_of_earlier_agents_is_read_then_rewritten_binary() {
    let dir = TempDir::new("state-format-1");
    // What the agent at 59a0ad8 wrote: node 1 down, node 2 up.
    let json = r#"{"format":1,"nodes":[
        {"id":1,"state":"down","heartbeats":9,"incarnation":7,"sequence":9,"interval_ms":100},
        {"id":2,"state":"up","heartbeats":4,"incarnation":7,"sequence":4,"interval_ms":100}]}"#;
    std::fs::write(dir.0.join("state.json"), json).unwrap();
    let agent = RunningAgent::start_in(dir, |dir, port, http| {
        config_text(dir, port, http, "", &[1, 2], "")
    })
    .await;
    assert_eq!(agent.state_of_node_1().await, Some(NodeState::Down));
    let report = status::fetch(&agent.socket, 10).await.unwrap();
    let node_1 = report.nodes.iter().find(|n| n.id == 1).unwrap();
    assert_eq!((node_1.incarnation, node_1.sequence), (7, 9));
    // A replayed heartbeat of before the upgrade is still refused.
    agent.beat_every(1, 100, 7);
    let refused = eventually(Duration::from_secs(10), async || {
        let report = status::fetch(&agent.socket, 1).await.unwrap();
        report.counters.get("replay").copied().unwrap_or(0) >= 2
    });
    assert!(
        refused.await,
        "sequences 7 and 8 are replays of what format 1 kept"
    );
    let bytes = std::fs::read(agent.dir.0.join("state.json")).unwrap();
    assert!(
        bytes.starts_with(state_file::format::MAGIC),
        "rewritten in format 2 at start"
    );
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_decided_but_not_started_at_shutdown_is_started_by_the_next_agent_once() {
    // One action slot, and the down action holds it until the test lets go:
    // of two nodes going down, one runs, the other waits past the shutdown.
    let config = |dir: &Path, port, http| {
        let d = dir.display();
        config_text(dir, port, http, "", &[1, 2], "")
            .replace(r#"on = ["up"]"#, r#"on = ["down"]"#)
            .replace(
                &format!(r#"shell = "echo \"$HB_EVENT $HB_NODE_NAME\" >> {d}/events""#),
                &format!(
                    r#"shell = "echo \"$HB_EVENT $HB_NODE_NAME $HB_PREVIOUS_STATE\" >> {d}/events; until [ -e {d}/release ]; do sleep 0.05; done""#
                ),
            )
            .replace(r#"timeout = "5s""#, r#"timeout = "60s""#)
            .replace("datapath = \"socket\"", "datapath = \"socket\"\nmax_concurrent_actions = 1")
    };
    let agent = RunningAgent::start_in(TempDir::new("pending-runs"), config).await;
    agent.beat_every(1, 100, 1);
    agent.beat_every(2, 100, 1);
    let dir = agent.dir.0.clone();
    let lines = || {
        std::fs::read_to_string(dir.join("events"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let one = eventually(Duration::from_secs(10), async || lines().len() == 1);
    assert!(one.await, "{:?}", lines());
    let report = status::fetch(&agent.socket, 10).await.unwrap();
    assert_eq!((report.actions.running, report.actions.queued), (1, 1));
    let first = lines()[0].clone();

    // Shut down: the queued run never started; the next agent starts it.
    let agent = RunningAgent::start_in(agent.shut_down().await, config).await;
    let two = eventually(Duration::from_secs(10), async || lines().len() == 2);
    assert!(two.await, "{:?}", lines());
    let both = lines();
    assert_ne!(both[0], both[1], "the other node's down: {both:?}");
    assert!(
        both.iter()
            .all(|l| l.starts_with("down n") && l.ends_with(" suspect")),
        "{both:?}"
    );
    assert_eq!(both[0], first);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lines().len(), 2, "nothing ran twice: {:?}", lines());
    std::fs::write(dir.join("release"), "").unwrap();
    agent.shut_down().await;
}
