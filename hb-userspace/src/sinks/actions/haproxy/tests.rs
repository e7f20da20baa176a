//! The haproxy action's parsing, checks and runs, against a fake HAProxy
//! runtime API (one command per connection, as HAProxy without `prompt`).
//! The real HAProxy is driven by the network-namespace test
//! (tests/tests/haproxy.rs).

use std::{
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, UnixListener},
};

use super::*;
use crate::{
    config::{Config, ConfigError},
    sinks::actions::{ActionRun, ActionRunner, ActionStats},
};

/// `show servers state web` as HAProxy 2.6.12 answers it: srv1 in forced
/// maintenance, srv2 draining.
const SHOW_SERVERS_STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 web 1 srv1 127.0.0.1 0 1 1 1 0 1 0 0 0 0 0 0 - 18081 - 0 0 - - 0\n3 web 2 srv2 127.0.0.1 2 8 1 1 0 1 0 2 0 0 0 0 - 18082 - 0 0 - - 0\n\n";

/// How the fake HAProxy misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fake {
    /// Applies every `set server` and reports states truthfully.
    Honest,
    /// Says yes to `set server` but changes nothing.
    Liar,
    /// Reads the command and never answers.
    Mute,
}

/// A fake runtime API over `web`'s servers srv1..srv3 (all ready), on a
/// Unix socket or TCP. Records every command it gets.
struct FakeHaproxy {
    socket: HaproxySocket,
    commands: Arc<Mutex<Vec<String>>>,
    _dir: Option<TempDir>,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl FakeHaproxy {
    async fn unix(mode: Fake) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hb-haproxy-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join("admin.sock");
        let listener = UnixListener::bind(&path).unwrap_or_else(|e| panic!("bind: {e}"));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Mutex::new(BTreeMap::new()));
        let recorded = Arc::clone(&commands);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(
                    stream,
                    mode,
                    Arc::clone(&recorded),
                    Arc::clone(&state),
                ));
            }
        });
        Self {
            socket: HaproxySocket::Unix(path),
            commands,
            _dir: Some(TempDir(dir)),
        }
    }

    async fn tcp(mode: Fake) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Mutex::new(BTreeMap::new()));
        let recorded = Arc::clone(&commands);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(
                    stream,
                    mode,
                    Arc::clone(&recorded),
                    Arc::clone(&state),
                ));
            }
        });
        Self {
            socket: HaproxySocket::Tcp(address),
            commands,
            _dir: None,
        }
    }

    fn commands(&self) -> Vec<String> {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn action(&self, on: &[Event], batch: bool) -> ActionConfig {
        ActionConfig {
            name: "lb".to_owned(),
            on: on.to_vec(),
            run: ActionRun::Haproxy(HaproxyAction {
                socket: self.socket.clone(),
                backend: "web".to_owned(),
                servers: BTreeMap::from([("web-1".to_owned(), "srv1".to_owned())]),
                drain_on_suspect: false,
            }),
            timeout: Duration::from_secs(5),
            batch,
        }
    }
}

/// Answers one command as HAProxy does and closes the connection.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    mode: Fake,
    commands: Arc<Mutex<Vec<String>>>,
    state: Arc<Mutex<BTreeMap<String, u32>>>,
) {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    if stream.read_line(&mut line).await.is_err() {
        return;
    }
    let command = line.trim_end().to_owned();
    commands
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(command.clone());
    if mode == Fake::Mute {
        tokio::time::sleep(Duration::from_secs(30)).await;
        return;
    }
    let answer = answer(
        &command,
        mode,
        &mut state.lock().unwrap_or_else(|e| e.into_inner()),
    );
    let _ = stream.get_mut().write_all(answer.as_bytes()).await;
}

fn answer(command: &str, mode: Fake, admin: &mut BTreeMap<String, u32>) -> String {
    const SERVERS: [&str; 3] = ["srv1", "srv2", "srv3"];
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["set", "server", target, "state", state] => {
            let Some(("web", server)) = target.split_once('/') else {
                return "No such backend.\n\n".to_owned();
            };
            if !SERVERS.contains(&server) {
                return "No such server.\n\n".to_owned();
            }
            let bits = match *state {
                "maint" => ADMIN_FORCED_MAINT,
                "drain" => ADMIN_FORCED_DRAIN,
                _ => 0,
            };
            if mode == Fake::Honest {
                admin.insert((*server).to_owned(), bits);
            }
            "\n".to_owned()
        }
        ["show", "servers", "state", "web"] => {
            let mut text = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight\n".to_owned();
            for (id, server) in SERVERS.iter().enumerate() {
                let bits = admin.get(*server).copied().unwrap_or(0);
                text.push_str(&format!(
                    "3 web {} {server} 198.18.0.1 2 {bits} 1\n",
                    id + 1
                ));
            }
            text + "\n"
        }
        _ => "Can't find backend.\n\n".to_owned(),
    }
}

fn event(event: Event, node: &str) -> ActionEvent {
    ActionEvent {
        event,
        node_id: 7,
        node_name: node.to_owned(),
        node_address: None,
        previous_state: "up",
        since_last_heartbeat: None,
        seq: 0,
    }
}

async fn run_events(action: ActionConfig, events: Vec<ActionEvent>) -> ActionStats {
    let runner = ActionRunner::new(vec![action], 4);
    runner.dispatch_sweep(events);
    assert!(
        runner.wait_idle(Duration::from_secs(20)).await,
        "{:?}",
        runner.stats()
    );
    runner.stats()
}

#[test]
fn sockets_parse_as_paths_or_tcp_addresses() {
    assert_eq!(
        HaproxySocket::parse("/run/haproxy/admin.sock"),
        Ok(HaproxySocket::Unix("/run/haproxy/admin.sock".into()))
    );
    let tcp = HaproxySocket::parse("tcp://127.0.0.1:9999").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tcp.to_string(), "tcp://127.0.0.1:9999");
    for bad in ["admin.sock", "", "tcp://localhost:9999", "tcp://127.0.0.1"] {
        let err = HaproxySocket::parse(bad).expect_err(bad);
        assert!(err.contains("`socket`") && err.contains("e.g."), "{err}");
    }
}

#[test]
fn events_map_to_states_and_nodes_to_servers() {
    let mut haproxy = HaproxyFields {
        socket: Some("/s".into()),
        backend: Some("web".into()),
        servers: Some(BTreeMap::from([("web-1".into(), "srv1".into())])),
        drain_on_suspect: None,
    }
    .into_action()
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(haproxy.target(Event::Down), Some(ServerState::Maint));
    assert_eq!(haproxy.target(Event::Up), Some(ServerState::Ready));
    assert_eq!(haproxy.target(Event::Suspect), None);
    assert_eq!(haproxy.target(Event::Flapping), None);
    assert_eq!(haproxy.target(Event::Left), None);
    haproxy.drain_on_suspect = true;
    assert_eq!(haproxy.target(Event::Suspect), Some(ServerState::Drain));
    assert_eq!(haproxy.server_for("web-1"), "srv1");
    assert_eq!(haproxy.server_for("web-2"), "web-2");
}

#[test]
fn admin_state_bits_are_read_from_show_servers_state() {
    let states = admin_states(SHOW_SERVERS_STATE, "web").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(states.get("srv1"), Some(&1));
    assert_eq!(states.get("srv2"), Some(&8));
    assert!(ServerState::Maint.shown_by(1) && !ServerState::Ready.shown_by(1));
    assert!(ServerState::Drain.shown_by(8) && !ServerState::Maint.shown_by(8));
    assert!(ServerState::Ready.shown_by(0) && ServerState::Ready.shown_by(0x04));
    assert!(!ServerState::Drain.shown_by(0) && !ServerState::Maint.shown_by(0x04));
    // Another backend's lines are not this one's.
    assert!(
        admin_states(SHOW_SERVERS_STATE, "api")
            .unwrap_or_default()
            .is_empty()
    );
    let err = admin_states("Can't find backend.\n\n", "web").expect_err("an error answer");
    assert!(err.contains("Can't find backend."), "{err}");
    let err = admin_states("1\n# be_id srv_name\n3 web\n", "web").expect_err("no column");
    assert!(err.contains("be_name"), "{err}");
}

#[test]
fn names_that_would_change_the_command_are_refused() {
    assert!(check_name("srv-1_a.b:c").is_ok());
    for bad in ["", "srv 1", "a;shutdown sessions", "web/srv1", "srv\n"] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn down_sets_maint_and_up_sets_ready_checked() {
    let fake = FakeHaproxy::unix(Fake::Honest).await;
    let action = fake.action(&[Event::Down, Event::Up, Event::Suspect], false);
    let stats = run_events(action.clone(), vec![event(Event::Down, "web-1")]).await;
    assert_eq!((stats.succeeded, stats.failed), (1, 0), "{stats:?}");
    let stats = run_events(action.clone(), vec![event(Event::Up, "srv2")]).await;
    assert_eq!((stats.succeeded, stats.failed), (1, 0), "{stats:?}");
    // Suspect without drain_on_suspect: nothing sent, and not a failure.
    let stats = run_events(action, vec![event(Event::Suspect, "srv3")]).await;
    assert_eq!((stats.succeeded, stats.failed), (1, 0), "{stats:?}");
    assert_eq!(
        fake.commands(),
        [
            "set server web/srv1 state maint",
            "show servers state web",
            "set server web/srv2 state ready",
            "show servers state web",
        ]
    );
}

#[tokio::test]
async fn refusals_lies_and_silence_fail() {
    let fake = FakeHaproxy::unix(Fake::Honest).await;
    let stats = run_events(
        fake.action(&[Event::Down], false),
        vec![event(Event::Down, "web-9")],
    )
    .await;
    assert_eq!((stats.succeeded, stats.failed), (0, 1), "{stats:?}");
    // Refused: not checked.
    assert_eq!(fake.commands(), ["set server web/web-9 state maint"]);

    let bad_name = run_events(
        fake.action(&[Event::Down], false),
        vec![event(Event::Down, "a b")],
    )
    .await;
    assert_eq!(bad_name.failed, 1, "{bad_name:?}");
    assert_eq!(fake.commands().len(), 1, "a bad name is never sent");

    let liar = FakeHaproxy::unix(Fake::Liar).await;
    let stats = run_events(
        liar.action(&[Event::Down], false),
        vec![event(Event::Down, "web-1")],
    )
    .await;
    assert_eq!((stats.succeeded, stats.failed), (0, 1), "{stats:?}");

    let mute = FakeHaproxy::unix(Fake::Mute).await;
    let mut action = mute.action(&[Event::Down], false);
    action.timeout = Duration::from_millis(200);
    let stats = run_events(action, vec![event(Event::Down, "web-1")]).await;
    assert_eq!(stats.timed_out, 1, "{stats:?}");

    let gone = FakeHaproxy {
        socket: HaproxySocket::Unix(Path::new("/nonexistent/hb-test.sock").into()),
        commands: Arc::default(),
        _dir: None,
    };
    let stats = run_events(
        gone.action(&[Event::Down], false),
        vec![event(Event::Down, "web-1")],
    )
    .await;
    assert_eq!(stats.failed, 1, "{stats:?}");
}

#[tokio::test]
async fn a_batch_sends_its_commands_in_order_and_checks_once() {
    let fake = FakeHaproxy::tcp(Fake::Honest).await;
    let mut action = fake.action(&[Event::Down, Event::Up, Event::Suspect], true);
    if let ActionRun::Haproxy(haproxy) = &mut action.run {
        haproxy.drain_on_suspect = true;
    }
    let events = vec![
        event(Event::Down, "srv3"),
        event(Event::Suspect, "srv2"),
        event(Event::Left, "srv2"),
        event(Event::Up, "web-1"),
    ];
    let stats = run_events(action, events).await;
    assert_eq!((stats.started, stats.succeeded), (1, 1), "{stats:?}");
    assert_eq!(
        fake.commands(),
        [
            "set server web/srv3 state maint",
            "set server web/srv2 state drain",
            "set server web/srv1 state ready",
            "show servers state web",
        ]
    );
}

/// Parses an `[[actions]]` entry on top of a minimal config.
fn parse_action(body: &str) -> Result<Config, ConfigError> {
    let text = format!("interfaces = [\"eth0\"]\n[[actions]]\nname = \"lb\"\n{body}");
    Config::parse(&text, "test.toml").and_then(|config| config.validate().map(|()| config))
}

#[test]
fn the_config_builds_a_haproxy_action() {
    let config = parse_action(
        "on = [\"down\", \"up\", \"suspect\"]\nkind = \"haproxy\"\nsocket = \"tcp://127.0.0.1:9999\"\nbackend = \"web\"\nservers = { \"web-1\" = \"srv1\" }\ndrain_on_suspect = true\nbatch = true\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let action = &config.actions[0];
    assert!(action.batch);
    let ActionRun::Haproxy(haproxy) = &action.run else {
        panic!("not a haproxy action: {action:?}");
    };
    assert_eq!(
        haproxy.socket,
        HaproxySocket::Tcp("127.0.0.1:9999".parse().unwrap_or_else(|e| panic!("{e}")))
    );
    assert_eq!(haproxy.backend, "web");
    assert_eq!(haproxy.server_for("web-1"), "srv1");
    assert!(haproxy.drain_on_suspect);
}

#[test]
fn config_mistakes_name_the_field_and_the_fix() {
    let haproxy = "on = [\"down\"]\nkind = \"haproxy\"\n";
    let cases = [
        (
            format!("{haproxy}backend = \"web\"\n"),
            "`socket` is missing",
        ),
        (
            format!("{haproxy}socket = \"/s\"\n"),
            "`backend` is missing",
        ),
        (
            format!("{haproxy}socket = \"s\"\nbackend = \"web\"\n"),
            "absolute path",
        ),
        (
            format!("{haproxy}socket = \"/s\"\nbackend = \"web\"\ncommand = [\"/bin/true\"]\n"),
            "`command` is for kind = \"exec\"",
        ),
        (
            format!("{haproxy}socket = \"/s\"\nbackend = \"web\"\nshell = \"true\"\n"),
            "`shell` is for kind = \"exec\"",
        ),
        (
            format!("{haproxy}socket = \"/s\"\nbackend = \"web farm\"\n"),
            "`backend`",
        ),
        (
            format!("{haproxy}socket = \"/s\"\nbackend = \"web\"\nservers = {{ a = \"s;1\" }}\n"),
            "`servers`",
        ),
        (
            format!("{haproxy}socket = \"/s\"\nbackend = \"web\"\ndrain_on_suspect = true\n"),
            "add it to on",
        ),
        (
            "on = [\"down\"]\nshell = \"true\"\nbackend = \"web\"\n".to_owned(),
            "add kind = \"haproxy\"",
        ),
        (
            "on = [\"down\"]\nkind = \"nginx\"\nshell = \"true\"\n".to_owned(),
            "`kind`",
        ),
    ];
    for (body, needle) in cases {
        let err = parse_action(&body).expect_err(&body).to_string();
        assert!(
            err.contains(needle),
            "{err:?} does not contain {needle:?}\n--- input ---\n{body}"
        );
        assert!(err.contains("lb") || needle == "`kind`", "{err}");
    }
}

#[test]
fn the_commented_example_is_valid() {
    let example = Config::example();
    let start = example
        .find("# [[actions]]\n# name = \"lb\"")
        .unwrap_or_else(|| panic!("no haproxy example in example.toml"));
    let block: String = example[start..]
        .lines()
        .map_while(|line| line.strip_prefix("# "))
        .map(|line| format!("{line}\n"))
        .collect();
    let config = Config::parse(&format!("interfaces = [\"eth0\"]\n{block}"), "example")
        .and_then(|config| config.validate().map(|()| config))
        .unwrap_or_else(|e| panic!("{e}\n{block}"));
    assert!(
        matches!(&config.actions[0].run, ActionRun::Haproxy(h) if h.drain_on_suspect),
        "{config:?}"
    );
}
