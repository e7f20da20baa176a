//! End-to-end tests of `hb agent` and `hb send`: each test builds its own
//! lab (a monitor namespace and node namespaces joined by veth pairs),
//! runs the real binaries in it and watches the events the configured
//! action records. Every scenario runs once per datapath (`--datapath xdp`
//! and `--datapath socket`, tests named `*_xdp` and `*_socket`): the agent
//! must behave the same on both. Needs root and the `hb` binary
//! (`$HB_BIN`, set by `cargo xtask test`).

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use hb_tests::{
    ChildGuard, Event, HEARTBEAT_PORT, Hb, Lab, Signal, TempDir, TestConfig, Timing,
    config::{humantime, node_name},
    events::read_events,
    interrupt, unique_prefix, wait_for_event,
};
use serde_json::Value;

const TIMING: Timing = Timing::FAST;
/// Slack for scheduling, process start-up and ARP on a loaded 2-core box.
const MARGIN: Duration = Duration::from_secs(2);
const READY_WITHIN: Duration = Duration::from_secs(15);
/// From starting a sender to its `up` event.
const UP_WITHIN: Duration = Duration::from_secs(5);
const EXIT_WITHIN: Duration = Duration::from_secs(5);

/// What records heartbeats in the agent under test (`--datapath`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Datapath {
    Xdp,
    Socket,
}

impl Datapath {
    fn arg(self) -> &'static str {
        match self {
            Datapath::Xdp => "xdp",
            Datapath::Socket => "socket",
        }
    }
}

/// Two tests running `scenario`, one per datapath.
macro_rules! on_each_datapath {
    ($scenario:ident => $xdp:ident, $socket:ident) => {
        #[test]
        fn $xdp() {
            $scenario(Datapath::Xdp);
        }

        #[test]
        fn $socket() {
            $scenario(Datapath::Socket);
        }
    };
}

/// A running agent in its own lab, and the senders started so far.
/// Field order is drop order: processes first, then the lab, then files.
struct Fixture {
    senders: BTreeMap<u8, ChildGuard>,
    agent: ChildGuard,
    lab: Lab,
    config: TestConfig,
    dir: TempDir,
    hb: Hb,
    datapath: Datapath,
}

impl Fixture {
    /// Build a lab of `nodes` nodes and start the agent on it with `datapath`.
    fn start(nodes: u8, datapath: Datapath) -> Self {
        let hb = Hb::from_env();
        let lab = Lab::build(&unique_prefix(), nodes)
            .unwrap_or_else(|err| panic!("building the lab: {err}"));
        let dir = TempDir::new("hb-test").unwrap_or_else(|err| panic!("{err}"));
        let config = TestConfig::write(&dir, &lab, TIMING).unwrap_or_else(|err| panic!("{err}"));
        let agent = spawn_agent(&hb, &lab, &config, &dir.join("agent.log"), datapath);
        Self {
            senders: BTreeMap::new(),
            agent,
            lab,
            config,
            dir,
            hb,
            datapath,
        }
    }

    /// Stops the agent with SIGTERM and starts a new one on the same config
    /// (and so the same state file).
    fn restart_agent(&mut self) {
        let exit = self
            .agent
            .stop(Signal::Term, EXIT_WITHIN)
            .unwrap_or_else(|err| panic!("{err}{}", self.context()));
        assert!(exit.success(), "agent exited with {exit}{}", self.context());
        self.agent = spawn_agent(
            &self.hb,
            &self.lab,
            &self.config,
            &self.dir.join("agent-2.log"),
            self.datapath,
        );
    }

    /// Start (or restart) the sender of node `index` in its namespace.
    fn start_sender(&mut self, index: u8) {
        let node = self.lab.node(index);
        let to = format!("{}:{HEARTBEAT_PORT}", node.monitor_address);
        let sender = self
            .hb
            .spawn_in(
                &node.ns,
                &format!("sender {index}"),
                [
                    "send",
                    "--node-id",
                    &index.to_string(),
                    "--to",
                    &to,
                    "--interval",
                    &humantime(TIMING.interval),
                ],
                &self.dir.join(&format!("sender-{index}.log")),
            )
            .unwrap_or_else(|err| panic!("{err}"));
        self.senders.insert(index, sender);
    }

    fn sender(&mut self, index: u8) -> &mut ChildGuard {
        self.senders
            .get_mut(&index)
            .unwrap_or_else(|| panic!("sender {index} was never started"))
    }

    /// What to show when something goes wrong.
    fn context(&self) -> String {
        let events = std::fs::read_to_string(&self.config.events).unwrap_or_default();
        format!(
            "\n--- events.log ---\n{events}--- agent output (last lines) ---\n{}",
            self.agent.log_tail(40)
        )
    }

    /// Wait up to `within` for an event matching `predicate`.
    fn expect_event(
        &self,
        what: &str,
        within: Duration,
        predicate: impl FnMut(&Event) -> bool,
    ) -> (Event, Instant) {
        wait_for_event(
            &self.config.events,
            predicate,
            Instant::now() + within,
            what,
        )
        .unwrap_or_else(|err| panic!("{err}{}", self.context()))
    }

    /// Start the senders of `nodes` and wait for each one's first `up`.
    fn bring_up(&mut self, nodes: &[u8]) {
        for &i in nodes {
            self.start_sender(i);
        }
        for &i in nodes {
            let (event, _) =
                self.expect_event(&format!("up {i}"), UP_WITHIN, |e| e.is("up", i.into()));
            assert_eq!(event.node_name, node_name(i), "{event:?}{}", self.context());
            assert_eq!(event.previous, "unseen", "{event:?}{}", self.context());
        }
    }

    fn events(&self) -> Vec<Event> {
        read_events(&self.config.events).unwrap_or_else(|err| panic!("{err}"))
    }

    fn assert_no_event(&self, kind: &str, node: u8) {
        let found: Vec<Event> = self
            .events()
            .into_iter()
            .filter(|e| e.is(kind, node.into()))
            .collect();
        assert!(
            found.is_empty(),
            "unexpected `{kind}` event for node {node}: {found:?}{}",
            self.context()
        );
    }

    fn status(&self) -> Value {
        self.hb
            .status_json(&self.config.socket)
            .unwrap_or_else(|err| panic!("hb status --json: {err}{}", self.context()))
    }

    /// The `state` of node `id` in `hb status --json`.
    fn node_state(&self, id: u8) -> String {
        let status = self.status();
        status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["id"] == u64::from(id)))
            .and_then(|node| node["state"].as_str())
            .unwrap_or_else(|| panic!("node {id} has no state in hb status --json: {status}"))
            .to_owned()
    }

    fn accepted(&self) -> u64 {
        self.counter("accepted")
    }

    /// Counter `name` in `hb status --json`.
    fn counter(&self, name: &str) -> u64 {
        let status = self.status();
        status["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counters.{name} in hb status --json: {status}"))
    }

    /// The UDP sockets bound to the heartbeat port in the monitor
    /// namespace, as `ss` lists them (`*%<interface>:<port>` for the socket
    /// datapath's device-bound sockets).
    fn udp_listeners(&self) -> Vec<String> {
        let output = self
            .lab
            .monitor
            .exec(
                "ss",
                [
                    "-H",
                    "-u",
                    "-l",
                    "-n",
                    &format!("sport = :{HEARTBEAT_PORT}"),
                ],
            )
            .unwrap_or_else(|err| panic!("{err}"));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.split_whitespace().nth(3).unwrap_or(line).to_owned())
            .collect()
    }
}

/// Starts `hb agent` in the lab's monitor namespace and waits until it
/// answers `hb status`.
fn spawn_agent(
    hb: &Hb,
    lab: &Lab,
    config: &TestConfig,
    log: &Path,
    datapath: Datapath,
) -> ChildGuard {
    let mut agent = hb
        .spawn_in(
            &lab.monitor,
            &format!("agent ({})", datapath.arg()),
            [
                "agent".as_ref(),
                "--config".as_ref(),
                config.path.as_os_str(),
                "--status-socket".as_ref(),
                config.socket.as_os_str(),
                "--datapath".as_ref(),
                datapath.arg().as_ref(),
            ],
            log,
        )
        .unwrap_or_else(|err| panic!("{err}"));
    hb.wait_until_ready(&config.socket, &mut agent, READY_WITHIN)
        .unwrap_or_else(|err| panic!("the agent did not become ready: {err}"));
    agent
}

fn sleep(duration: Duration) {
    interrupt::sleep(duration).unwrap_or_else(|err| panic!("{err}"));
}

on_each_datapath!(crashed_sender_goes_down_and_comes_back_up =>
    crashed_sender_goes_down_and_comes_back_up_xdp,
    crashed_sender_goes_down_and_comes_back_up_socket);

fn crashed_sender_goes_down_and_comes_back_up(datapath: Datapath) {
    let mut f = Fixture::start(3, datapath);
    f.bring_up(&[1, 2, 3]);
    let accepted = f.accepted();
    assert!(
        accepted > 0,
        "counters.accepted is {accepted}{}",
        f.context()
    );

    // Crash node 2: SIGKILL, so it cannot say goodbye.
    f.sender(2)
        .signal(Signal::Kill)
        .unwrap_or_else(|err| panic!("{err}"));
    let t0 = Instant::now();
    let limit = TIMING.timeout() + TIMING.sweep_period + MARGIN;
    let (down, seen) = f.expect_event("down 2", limit, |e| e.is("down", 2));
    let detected = seen - t0;
    assert!(
        detected <= limit,
        "down 2 after {detected:?} (limit {limit:?})"
    );
    assert_eq!(down.previous, "up", "{down:?}{}", f.context());
    let timeout_ms = u64::try_from(TIMING.timeout().as_millis()).unwrap();
    let silent = down
        .since_last_heartbeat_ms
        .unwrap_or_else(|| panic!("down event without a last heartbeat: {down:?}"));
    assert!(
        silent >= timeout_ms,
        "declared down after only {silent} ms of silence (timeout {timeout_ms} ms){}",
        f.context()
    );
    let status = f.sender(2).wait_timeout(EXIT_WITHIN).unwrap();
    assert!(status.is_some(), "sender 2 survived SIGKILL");
    assert_eq!(f.node_state(2), "down");

    // Node 2 comes back: a new sender process, a new incarnation.
    f.start_sender(2);
    let (up, _) = f.expect_event("up 2 after down", UP_WITHIN, |e| {
        e.is("up", 2) && e.previous == "down"
    });
    assert_eq!(up.node_name, node_name(2));

    // Give a spurious `down` time to show up, then check the whole history.
    sleep(TIMING.timeout() * 2 + TIMING.sweep_period);
    f.assert_no_event("down", 1);
    f.assert_no_event("down", 3);
    let downs_of_2 = f.events().iter().filter(|e| e.is("down", 2)).count();
    assert_eq!(
        downs_of_2,
        1,
        "node 2 went down again after restarting{}",
        f.context()
    );
    for id in 1..=3 {
        assert_eq!(f.node_state(id), "up", "node {id}{}", f.context());
    }
    assert!(f.accepted() > accepted, "counters.accepted stopped growing");
    if datapath == Datapath::Socket {
        // The socket consumes every datagram, and only sees UDP to the port.
        assert_eq!(f.counter("passed"), 0, "{}", f.context());
        assert_eq!(f.counter("not_heartbeat"), 0, "{}", f.context());
    }
}

on_each_datapath!(graceful_leave_is_left_not_down =>
    graceful_leave_is_left_not_down_xdp,
    graceful_leave_is_left_not_down_socket);

fn graceful_leave_is_left_not_down(datapath: Datapath) {
    let mut f = Fixture::start(3, datapath);
    f.bring_up(&[1, 2, 3]);

    let status = f
        .sender(3)
        .stop(Signal::Term, EXIT_WITHIN)
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(
        status.success(),
        "hb send should exit 0 after SIGTERM, got {status}; its output:\n{}",
        f.sender(3).log_tail(20)
    );
    let (left, _) = f.expect_event(
        "left 3",
        TIMING.timeout() + TIMING.sweep_period + MARGIN,
        |e| e.is("left", 3),
    );
    assert_eq!(left.previous, "up", "{left:?}{}", f.context());

    // Past two timeouts a silent node would be down; a node that left is not.
    sleep(TIMING.timeout() * 2 + TIMING.sweep_period * 2);
    f.assert_no_event("down", 3);
    f.assert_no_event("down", 1);
    f.assert_no_event("down", 2);
    assert_eq!(f.node_state(3), "left", "{}", f.context());
}

on_each_datapath!(sigterm_stops_the_agent_and_releases_the_datapath =>
    sigterm_stops_the_agent_and_releases_the_datapath_xdp,
    sigterm_stops_the_agent_and_releases_the_datapath_socket);

/// While the agent runs, every interface is listed in `hb status` and
/// served by the chosen datapath only (an XDP program, or a UDP socket bound
/// to it); after SIGTERM the agent exits 0 and leaves neither behind.
fn sigterm_stops_the_agent_and_releases_the_datapath(datapath: Datapath) {
    let mut f = Fixture::start(2, datapath);
    let interfaces = f.lab.monitor_interfaces();
    let status = f.status();
    let listeners = f.udp_listeners();
    for name in &interfaces {
        let attached = f
            .lab
            .monitor_xdp(name)
            .unwrap_or_else(|err| panic!("{err}"));
        let mode = status["interfaces"]
            .as_array()
            .and_then(|list| list.iter().find(|i| i["name"] == name.as_str()))
            .and_then(|i| i["mode"].as_str())
            .unwrap_or_else(|| panic!("{name} missing from hb status --json: {status}"));
        let listening = listeners.contains(&format!("*%{name}:{HEARTBEAT_PORT}"));
        match datapath {
            Datapath::Xdp => {
                assert!(
                    attached.is_some(),
                    "no XDP program on {name} while the agent runs{}",
                    f.context()
                );
                assert!(
                    ["native", "generic"].contains(&mode),
                    "{name} is in mode {mode}"
                );
            }
            Datapath::Socket => {
                assert_eq!(attached, None, "the socket datapath attached XDP to {name}");
                assert_eq!(mode, "socket", "{name}");
                assert!(
                    listening,
                    "no UDP socket bound to {name} on port {HEARTBEAT_PORT}: {listeners:?}{}",
                    f.context()
                );
            }
        }
    }
    let expected_listeners = match datapath {
        Datapath::Xdp => 0,
        Datapath::Socket => interfaces.len(),
    };
    assert_eq!(
        listeners.len(),
        expected_listeners,
        "UDP sockets on port {HEARTBEAT_PORT}: {listeners:?}"
    );

    let exit = f
        .agent
        .stop(Signal::Term, EXIT_WITHIN)
        .unwrap_or_else(|err| panic!("{err}{}", f.context()));
    assert!(exit.success(), "agent exited with {exit}{}", f.context());
    for name in &interfaces {
        let attached = f
            .lab
            .monitor_xdp(name)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            attached, None,
            "XDP still attached to {name} after the agent exited"
        );
    }
    let left = f.udp_listeners();
    assert!(
        left.is_empty(),
        "UDP sockets still bound to port {HEARTBEAT_PORT} after the agent exited: {left:?}"
    );
    assert_no_agent(&f.hb, &f.config.socket);
}

/// `hb status` (plain and `--json`) fails and says that no agent runs.
fn assert_no_agent(hb: &Hb, socket: &Path) {
    for json in [false, true] {
        let mut args = vec!["status".as_ref(), "--socket".as_ref(), socket.as_os_str()];
        if json {
            args.push("--json".as_ref());
        }
        let output = hb.output(args).unwrap_or_else(|err| panic!("{err}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !output.status.success(),
            "hb status (json: {json}) succeeded without an agent: {text}"
        );
        assert!(
            text.contains("no agent"),
            "hb status (json: {json}) should say \"no agent\", said: {text}"
        );
    }
}

#[test]
fn status_without_an_agent_says_so() {
    let hb = Hb::from_env();
    let dir = TempDir::new("hb-test").unwrap_or_else(|err| panic!("{err}"));
    assert_no_agent(&hb, &dir.join("hb.sock"));
}

on_each_datapath!(restarted_agent_keeps_node_states_and_fires_no_event_again =>
    restarted_agent_keeps_node_states_and_fires_no_event_again_xdp,
    restarted_agent_keeps_node_states_and_fires_no_event_again_socket);

fn restarted_agent_keeps_node_states_and_fires_no_event_again(datapath: Datapath) {
    let mut f = Fixture::start(3, datapath);
    f.bring_up(&[1, 2, 3]);
    f.sender(2)
        .signal(Signal::Kill)
        .unwrap_or_else(|err| panic!("{err}"));
    let limit = TIMING.timeout() + TIMING.sweep_period + MARGIN;
    f.expect_event("down 2", limit, |e| e.is("down", 2));
    f.sender(3)
        .stop(Signal::Term, EXIT_WITHIN)
        .unwrap_or_else(|err| panic!("{err}"));
    f.expect_event("left 3", limit, |e| e.is("left", 3));
    let before = f.events();

    f.restart_agent();
    // Long enough for any spurious up/down of the restarted agent to show.
    sleep(TIMING.timeout() * 2 + TIMING.sweep_period * 2);
    let after = f.events();
    assert_eq!(
        after,
        before,
        "the restarted agent fired events for what it had already reported{}",
        f.context()
    );
    assert_eq!(f.node_state(1), "up", "{}", f.context());
    assert_eq!(f.node_state(2), "down", "{}", f.context());
    assert_eq!(f.node_state(3), "left", "{}", f.context());

    // And it still detects: node 1 crashes now.
    f.sender(1)
        .signal(Signal::Kill)
        .unwrap_or_else(|err| panic!("{err}"));
    let (down, _) = f.expect_event("down 1 after the restart", limit, |e| e.is("down", 1));
    assert_eq!(down.previous, "up", "{down:?}{}", f.context());
}
