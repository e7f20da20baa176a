//! The agent driven in-process, as its owner drives it: the socket datapath
//! on the loopback interface (root: `SO_BINDTODEVICE`), heartbeats sent over
//! loopback, `hb status`'s protocol and the HTTP API, an action run, then
//! [`Control`] messages instead of signals.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hb_common::wire::Heartbeat;
use serde_json::Value;
use tokio::{sync::mpsc, task::JoinHandle};

mod restart;
mod sweeper;

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

fn free_udp_port() -> u16 {
    UdpSocket::bind("[::]:0")
        .and_then(|s| s.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

fn free_tcp_address() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral port")
}

/// An agent running in a task, with what the tests reach it by.
struct RunningAgent {
    dir: TempDir,
    port: u16,
    http: SocketAddr,
    socket: PathBuf,
    control: mpsc::Sender<Control>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningAgent {
    /// Starts an agent watching nodes 1 ("n1") and 2 ("n2"), with an `up`
    /// action writing to `events`, the HTTP API on a free port, and `extra`
    /// appended to its `[http]` section.
    async fn start(name: &str, http_extra: &str) -> Self {
        Self::start_in(TempDir::new(name), |dir, port, http| {
            config_text(dir, port, http, http_extra, &[1, 2], "")
        })
        .await
    }

    /// Starts an agent in `dir` (perhaps where another one ran) with the
    /// configuration `text` makes for the directory, a free UDP port and a
    /// free HTTP address.
    async fn start_in(dir: TempDir, text: impl FnOnce(&Path, u16, SocketAddr) -> String) -> Self {
        let (port, http) = (free_udp_port(), free_tcp_address());
        let path = dir.0.join("hb.toml");
        std::fs::write(&path, text(&dir.0, port, http)).expect("writing the config");
        let config = Config::load(&path, &Overrides::default()).expect("a valid config");
        let socket = config.status_socket.clone();
        let (control, received) = mpsc::channel(4);
        let task = tokio::spawn(run(config, Overrides::default(), received));
        let agent = RunningAgent {
            dir,
            port,
            http,
            socket,
            control,
            task,
        };
        let answering = eventually(Duration::from_secs(10), async || {
            agent.state_of_node_1().await.is_some()
        });
        assert!(answering.await, "the agent never answered");
        agent
    }

    /// The state of node 1 as `hb status` reports it, if the agent answers.
    async fn state_of_node_1(&self) -> Option<NodeState> {
        let report = status::fetch(&self.socket, 10).await.ok()?;
        report.nodes.iter().find(|n| n.id == 1).map(|n| n.state)
    }

    /// Three heartbeats of node 1 over loopback.
    fn beat_node_1(&self) {
        self.beat(1);
    }

    /// Three heartbeats of node `id` over loopback. They advertise a 5 s
    /// interval: the node stays up for the whole test (15 s), however slow
    /// the machine.
    fn beat(&self, id: u32) {
        self.beat_every(id, 5_000, 1);
    }

    /// Three heartbeats of node `id` advertising `interval_ms`, sequence
    /// numbers from `first`.
    fn beat_every(&self, id: u32, interval_ms: u32, first: u64) {
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a sender socket");
        for sequence in first..first + 3 {
            let heartbeat = Heartbeat {
                flags: 0,
                key_id: 0,
                node_id: id,
                interval_ms,
                incarnation: 7,
                sequence,
                sent_unix_ns: 0,
                auth_tag: [0; 16],
            };
            sender
                .send_to(&heartbeat.encode(), (Ipv4Addr::LOCALHOST, self.port))
                .expect("sending a heartbeat over loopback");
        }
    }

    async fn wait_until_node_1_is_up(&self) {
        let up = eventually(Duration::from_secs(10), async || {
            self.state_of_node_1().await == Some(NodeState::Up)
        });
        assert!(up.await, "node 1 never came up");
    }

    /// Rewrites the agent's configuration file with `text` and sends a
    /// reload (SIGHUP's message).
    async fn reload_with(&self, text: &str) {
        std::fs::write(self.dir.0.join("hb.toml"), text).expect("rewriting the config");
        self.control
            .send(Control::Reload)
            .await
            .expect("the agent listens");
    }

    /// Tells the agent to stop and waits for it.
    async fn shut_down(self) -> TempDir {
        self.control
            .send(Control::Shutdown)
            .await
            .expect("the agent listens");
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the agent stops within 20 s of being told")
            .expect("the agent task did not panic")
            .expect("the agent stops without error");
        self.dir
    }
}

/// An agent's configuration: the socket datapath on `lo`, the HTTP API on
/// `http` (plus `http_extra` in its section), nodes `n{id}` for `ids`, and
/// an `up` action writing `{tag}$HB_EVENT $HB_NODE_NAME` to `events`.
fn config_text(
    dir: &Path,
    port: u16,
    http: SocketAddr,
    http_extra: &str,
    ids: &[u32],
    tag: &str,
) -> String {
    let d = dir.display();
    let nodes: String = ids
        .iter()
        .map(|id| format!("[[nodes]]\nid = {id}\nname = \"n{id}\"\n\n"))
        .collect();
    format!(
        r#"interfaces = ["lo"]
port = {port}
datapath = "socket"
status_socket = "{d}/hb.sock"
state_file = "{d}/state.json"

[defaults]
interval = "100ms"
sweep_period = "10ms"

[http]
listen = "{http}"
{http_extra}

{nodes}[[actions]]
name = "mark"
on = ["up"]
shell = "echo \"{tag}$HB_EVENT $HB_NODE_NAME\" >> {d}/events"
timeout = "5s"
"#
    )
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

/// A plain HTTP/1.1 GET (the API's bodies carry a length): status and body.
fn http_get(address: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connecting to the HTTP API");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: hb\r\n{authorization}Connection: close\r\n\r\n"
    )
    .expect("writing the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("reading the response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}

fn json_get(address: SocketAddr, path: &str) -> Value {
    let (status, body) = http_get(address, path, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Reads an event stream until a line containing `needle` (or 10 s).
fn read_until(reader: &mut impl BufRead, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {
                seen += &line;
                if line.contains(needle) {
                    return seen;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("reading the event stream: {e}; so far:\n{seen}"),
        }
    }
    panic!("no `{needle}` in the event stream within 10 s; got:\n{seen}");
}

/// Opens `GET path` as an event stream; returns the reader past the headers.
fn open_stream(address: SocketAddr, path: &str) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(address).expect("connecting to the HTTP API");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: hb\r\n\r\n").expect("writing the request");
    let mut reader = BufReader::new(stream);
    let headers = read_until(&mut reader, "text/event-stream");
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_in_process_and_stops_when_told() {
    let agent = RunningAgent::start("agent-in-process", "").await;
    agent.beat_node_1();
    agent.wait_until_node_1_is_up().await;
    let events = agent.dir.0.join("events");
    let acted = eventually(Duration::from_secs(10), async || {
        std::fs::read_to_string(&events).is_ok_and(|text| text == "up n1\n")
    });
    assert!(acted.await, "the up action did not run exactly once");

    // A key reload keeps the agent answering; a shutdown stops it cleanly.
    agent
        .control
        .send(Control::Reload)
        .await
        .expect("the agent listens");
    assert_eq!(agent.state_of_node_1().await, Some(NodeState::Up));
    let socket = agent.socket.clone();
    let dir = agent.shut_down().await;
    assert!(!socket.exists(), "the status socket is removed at shutdown");
    let saved = state_file::load(&dir.0.join("state.json"))
        .expect("a readable state file")
        .expect("a state file written at shutdown");
    let node_1 = saved
        .nodes
        .iter()
        .find(|n| n.id == 1)
        .expect("node 1 saved");
    assert_eq!(node_1.state, NodeState::Up);
    assert_eq!((node_1.incarnation, node_1.sequence), (7, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_shows_what_status_shows_and_streams_events() {
    let agent = RunningAgent::start("agent-http", "").await;
    let http = agent.http;
    assert_eq!(http_get(http, "/healthz", None), (200, "ok\n".to_owned()));
    let ready = eventually(Duration::from_secs(10), async || {
        http_get(http, "/readyz", None).0 == 200
    });
    assert!(
        ready.await,
        "never ready: {:?}",
        http_get(http, "/readyz", None)
    );

    // Subscribed before anything happens: the up event arrives live.
    let mut live = tokio::task::spawn_blocking(move || open_stream(http, "/api/v1/events"))
        .await
        .expect("opening the stream");
    agent.beat_node_1();
    let seen = tokio::task::spawn_blocking(move || read_until(&mut live, "\"event\":\"up\""))
        .await
        .expect("reading the stream");
    assert!(seen.contains("event: transition"), "{seen}");
    assert!(seen.contains("id: 1"), "{seen}");
    agent.wait_until_node_1_is_up().await;

    let report = json_get(http, "/api/v1/status");
    assert_eq!(report["nodes_total"], 2);
    assert_eq!(report["states"]["up"], 1);
    assert_eq!(report["states"]["unseen"], 1);
    let up = json_get(http, "/api/v1/nodes?state=up");
    assert_eq!(up["nodes"].as_array().map(Vec::len), Some(1), "{up}");
    assert_eq!(up["nodes"][0]["name"], "n1");
    assert_eq!(up["next_after"], Value::Null);
    let first = json_get(http, "/api/v1/nodes?limit=1");
    assert_eq!(
        (first["nodes"][0]["id"].clone(), first["next_after"].clone()),
        (1.into(), 1.into())
    );
    let second = json_get(http, "/api/v1/nodes?limit=1&after=1");
    assert_eq!(second["nodes"][0]["id"], 2);
    assert_eq!(second["next_after"], Value::Null);
    let detail = json_get(http, "/api/v1/nodes/n1");
    assert_eq!(
        (detail["id"].clone(), detail["state"].clone()),
        (1.into(), "up".into())
    );
    assert_eq!(detail["incarnation"], 7);
    assert_eq!(detail["recent_transitions"][0]["event"], "up");
    assert_eq!(json_get(http, "/api/v1/nodes/2")["state"], "unseen");
    assert_eq!(http_get(http, "/api/v1/nodes/nobody", None).0, 404);
    let action_ran = eventually(Duration::from_secs(10), async || {
        let (_, metrics) = http_get(http, "/metrics", None);
        metrics.contains("hb_actions_total{action=\"mark\",result=\"succeeded\"} 1")
    });
    assert!(
        action_ran.await,
        "the up action's run never showed in /metrics"
    );
    scrape_with(
        http,
        &[
            "hb_nodes{state=\"up\"} 1",
            "hb_nodes{state=\"unseen\"} 1",
            "hb_transitions_total{from=\"unseen\",to=\"up\"} 1",
            "hb_packets_total{outcome=\"accepted\"} 3",
            "hb_actions_total{action=\"mark\",result=\"succeeded\"} 1",
            "hb_brake_engaged 0",
        ],
    );
    assert_eq!(http_get(http, "/api/v1/nodes?state=sleepy", None).0, 400);

    // A late subscriber resumes from cursor 0 and gets the up event replayed.
    let mut late = tokio::task::spawn_blocking(move || open_stream(http, "/api/v1/events?since=0"))
        .await
        .expect("opening the stream");
    let replayed = tokio::task::spawn_blocking(move || read_until(&mut late, "\"event\":\"up\""))
        .await
        .expect("reading the stream");
    assert!(replayed.contains("\"cursor\":1"), "{replayed}");
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_request_must_carry_it() {
    let token = "hb-test-token-0123456789abcdef";
    let dir = TempDir::new("agent-token-file");
    let token_file = dir.0.join("http.token");
    std::fs::write(&token_file, format!("{token}\n")).expect("writing the token");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
        .expect("restricting the token file");
    let extra = format!("token_file = \"{}\"", token_file.display());
    let agent = RunningAgent::start("agent-token", &extra).await;
    let http = agent.http;
    assert_eq!(http_get(http, "/healthz", None).0, 401);
    assert_eq!(
        http_get(http, "/api/v1/status", Some("not-the-token")).0,
        401
    );
    assert_eq!(http_get(http, "/api/v1/status", Some(token)).0, 200);
    assert_eq!(
        http_get(http, "/healthz", Some(token)),
        (200, "ok\n".to_owned())
    );
    agent.shut_down().await;
}

/// A node's state as the HTTP API reports it.
fn state_over_http(http: SocketAddr, id: u32) -> Option<String> {
    let (code, body) = http_get(http, &format!("/api/v1/nodes/{id}"), None);
    (code == 200).then(|| {
        let node: Value = serde_json::from_str(&body).expect("a node as JSON");
        node["state"].as_str().unwrap_or_default().to_owned()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_nodes_and_actions_and_refuses_what_needs_a_restart() {
    let agent = RunningAgent::start("agent-reload", "").await;
    let (http, events) = (agent.http, agent.dir.0.join("events"));
    agent.beat_node_1();
    agent.wait_until_node_1_is_up().await;
    let ran = eventually(Duration::from_secs(10), async || {
        std::fs::read_to_string(&events).is_ok_and(|text| text == "up n1\n")
    });
    assert!(ran.await, "the first up action did not run");

    // Node 2 removed, node 3 added, the action changed.
    let reloaded = config_text(&agent.dir.0, agent.port, http, "", &[1, 3], "v2 ");
    agent.reload_with(&reloaded).await;
    let applied = eventually(Duration::from_secs(10), async || {
        state_over_http(http, 3).as_deref() == Some("unseen")
    });
    assert!(applied.await, "node 3 never appeared");
    assert_eq!(state_over_http(http, 2), None, "node 2 is forgotten");
    assert_eq!(
        state_over_http(http, 1).as_deref(),
        Some("up"),
        "node 1 kept its state"
    );
    assert_eq!(json_get(http, "/api/v1/status")["nodes_total"], 2);
    agent.beat(3);
    let new_action = eventually(Duration::from_secs(10), async || {
        std::fs::read_to_string(&events).is_ok_and(|text| text == "up n1\nv2 up n3\n")
    });
    assert!(
        new_action.await,
        "the changed action did not run once for node 3: {:?}",
        std::fs::read_to_string(&events)
    );

    // An invalid file, and a change that needs a restart: both refused whole.
    agent.reload_with("port = \"not a port\"\n").await;
    let moved = config_text(&agent.dir.0, agent.port + 1, http, "", &[1, 3, 4], "v3 ");
    agent.reload_with(&moved).await;
    assert_eq!(state_over_http(http, 3).as_deref(), Some("up"));
    assert_eq!(
        state_over_http(http, 4),
        None,
        "a refused reload adds nothing"
    );
    assert_eq!(json_get(http, "/api/v1/status")["nodes_total"], 2);
    let recent = json_get(http, "/api/v1/nodes/1")["recent_transitions"].clone();
    assert_eq!(
        recent.as_array().map(Vec::len),
        Some(1),
        "no spurious event: {recent}"
    );
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_reaches_event_subscribers_on_time_and_shows_in_the_metrics() {
    let agent = RunningAgent::start("agent-crash", "").await;
    let http = agent.http;
    let mut live = tokio::task::spawn_blocking(move || open_stream(http, "/api/v1/events"))
        .await
        .expect("opening the stream");
    // Node 2 beats every 100 ms (timeout 3 x 100 ms), then falls silent.
    agent.beat_every(2, 100, 1);
    let last_heartbeat = Instant::now();
    let seen = tokio::task::spawn_blocking(move || {
        let up = read_until(&mut live, "\"event\":\"up\"");
        let down = read_until(&mut live, "\"event\":\"down\"");
        (up, down, Instant::now())
    })
    .await
    .expect("reading the stream");
    let (up, down, down_seen) = seen;
    assert!(up.contains("\"node\":\"n2\""), "{up}");
    assert!(down.contains("\"node\":\"n2\""), "{down}");
    let detected = down_seen - last_heartbeat;
    // Timeout 300 ms + a 10 ms sweep, and a generous margin for a busy CI.
    assert!(
        detected >= Duration::from_millis(300) && detected < Duration::from_millis(2_300),
        "the down event came {detected:?} after the last heartbeat"
    );

    let metrics = scrape_with(
        http,
        &[
            "hb_nodes{state=\"down\"} 1",
            "hb_transitions_total{from=\"suspect\",to=\"down\"} 1",
            "hb_detection_seconds_count 1",
        ],
    );
    let report = json_get(http, "/api/v1/status");
    assert_eq!(report["states"]["down"], 1, "/metrics and the status agree");
    promtool_accepts(&metrics);

    // Back, beating steadily (a down node rises after `rise` heartbeats in
    // a row): up again, and the metrics follow.
    let mut sequence = 10;
    let back = eventually(Duration::from_secs(10), async || {
        agent.beat_every(2, 100, sequence);
        sequence += 3;
        http_get(http, "/metrics", None)
            .1
            .contains("hb_transitions_total{from=\"down\",to=\"up\"} 1")
    });
    assert!(
        back.await,
        "the recovery never showed in /metrics:\n{}",
        http_get(http, "/metrics", None).1
    );
    agent.shut_down().await;
}

/// `promtool check metrics` accepts a scrape (promtool comes with Debian's
/// prometheus package, which `cargo xtask setup` installs).
fn promtool_accepts(metrics: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running promtool: {e} (run `cargo xtask setup`)"));
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(metrics.as_bytes())
        .expect("feeding promtool");
    let output = child.wait_with_output().expect("waiting for promtool");
    assert!(
        output.status.success(),
        "promtool check metrics refused the scrape:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `/metrics`, checked to hold each of `lines` as a whole line.
fn scrape_with(http: SocketAddr, lines: &[&str]) -> String {
    let (code, metrics) = http_get(http, "/metrics", None);
    assert_eq!(code, 200, "{metrics}");
    for line in lines {
        assert!(
            metrics.lines().any(|l| l == *line),
            "no `{line}` in /metrics:\n{metrics}"
        );
    }
    metrics
}

/// Whether the HTTP API answers `/healthz` on `address`; any failure to
/// connect or read (a listener closing meanwhile) is a no.
fn answers(address: SocketAddr) -> bool {
    let exchange = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET /healthz HTTP/1.1\r\nHost: hb\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    exchange()
        .is_ok_and(|response| response.starts_with("HTTP/1.1 200") && response.ends_with("ok\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_the_http_api_and_can_turn_it_off() {
    let agent = RunningAgent::start("agent-reload-http", "").await;
    let old = agent.http;
    assert!(answers(old));
    let new = free_tcp_address();
    let moved = config_text(&agent.dir.0, agent.port, new, "", &[1, 2], "");
    agent.reload_with(&moved).await;
    let on_new = eventually(Duration::from_secs(10), async || answers(new));
    assert!(on_new.await, "the API never answered on {new}");
    let off_old = eventually(Duration::from_secs(10), async || !answers(old));
    assert!(off_old.await, "the API still answers on {old}");

    // listen = "" turns it off; the agent goes on (status socket).
    let text = config_text(&agent.dir.0, agent.port, new, "", &[1, 2], "")
        .replace(&format!("listen = \"{new}\""), "listen = \"\"");
    agent.reload_with(&text).await;
    let off = eventually(Duration::from_secs(10), async || !answers(new));
    assert!(
        off.await,
        "the API still answers on {new} with listen = \"\""
    );
    assert_eq!(agent.state_of_node_1().await, Some(NodeState::Unseen));
    agent.shut_down().await;
}
