//! The agent driven in-process, as its owner drives it: the socket datapath
//! on the loopback interface (root: `SO_BINDTODEVICE`), heartbeats sent over
//! loopback, `hb status`'s protocol, an action run, then [`Control`]
//! messages instead of signals.

use std::{
    net::{Ipv4Addr, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hb_common::wire::Heartbeat;
use tokio::sync::mpsc;

use super::{Control, run, status};
use crate::{
    config::{Config, Overrides},
    detect::detector::NodeState,
    sinks::state_file,
};

/// A directory of its own for one test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("hb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating the test directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("[::]:0")
        .and_then(|s| s.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

fn write_config(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("hb.toml");
    let dir = dir.display();
    let text = format!(
        r#"interfaces = ["lo"]
port = {port}
datapath = "socket"
status_socket = "{dir}/hb.sock"
state_file = "{dir}/state.json"

[defaults]
interval = "100ms"
sweep_period = "10ms"

[[nodes]]
id = 1
name = "n1"

[[actions]]
name = "mark"
on = ["up"]
shell = "echo \"$HB_EVENT $HB_NODE_NAME\" >> {dir}/events"
timeout = "5s"
"#
    );
    std::fs::write(&path, text).expect("writing the config");
    path
}

/// Polls `check` every 20 ms until it is true or `limit` passes.
async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The state of node 1 as `hb status` reports it, if the agent answers.
async fn state_of_node_1(socket: &Path) -> Option<NodeState> {
    let report = status::fetch(socket, 10).await.ok()?;
    report.nodes.iter().find(|n| n.id == 1).map(|n| n.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_in_process_and_stops_when_told() {
    let dir = TempDir::new("agent-in-process");
    let port = free_port();
    let config =
        Config::load(&write_config(&dir.0, port), &Overrides::default()).expect("a valid config");
    let socket = config.status_socket.clone();
    let (control, received) = mpsc::channel(4);
    let agent = tokio::spawn(run(config, received));

    let answering = eventually(Duration::from_secs(10), async || {
        state_of_node_1(&socket).await == Some(NodeState::Unseen)
    });
    assert!(
        answering.await,
        "the agent never answered on {}",
        socket.display()
    );

    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a sender socket");
    for sequence in 1..=3 {
        let heartbeat = Heartbeat {
            flags: 0,
            key_id: 0,
            node_id: 1,
            interval_ms: 100,
            incarnation: 7,
            sequence,
            sent_unix_ns: 0,
            auth_tag: [0; 16],
        };
        sender
            .send_to(&heartbeat.encode(), (Ipv4Addr::LOCALHOST, port))
            .expect("sending a heartbeat over loopback");
    }
    let up = eventually(Duration::from_secs(10), async || {
        state_of_node_1(&socket).await == Some(NodeState::Up)
    });
    assert!(up.await, "node 1 never came up");
    let events = dir.0.join("events");
    let acted = eventually(Duration::from_secs(10), async || {
        std::fs::read_to_string(&events).is_ok_and(|text| text == "up n1\n")
    });
    assert!(acted.await, "the up action did not run exactly once");

    // A key reload keeps the agent answering; a shutdown stops it cleanly.
    control
        .send(Control::ReloadKeys)
        .await
        .expect("the agent listens");
    assert_eq!(state_of_node_1(&socket).await, Some(NodeState::Up));
    control
        .send(Control::Shutdown)
        .await
        .expect("the agent listens");
    tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .expect("the agent stops within 20 s of being told")
        .expect("the agent task did not panic")
        .expect("the agent stops without error");
    assert!(!socket.exists(), "the status socket is removed at shutdown");
    let saved = state_file::load(&dir.0.join("state.json"))
        .expect("a readable state file")
        .expect("a state file written at shutdown");
    assert_eq!(saved.len(), 1);
    assert_eq!((saved[0].id, saved[0].state), (1, NodeState::Up));
    assert_eq!((saved[0].incarnation, saved[0].sequence), (7, 3));
}
