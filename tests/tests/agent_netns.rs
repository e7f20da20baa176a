//! End-to-end tests of `hb agent` and `hb send`: each test builds its own
//! lab (a monitor namespace and node namespaces joined by veth pairs),
//! runs the real binaries in it and watches the events the configured
//! action records. Every scenario runs once per datapath (`--datapath xdp`
//! and `--datapath socket`, tests named `*_xdp` and `*_socket`): the agent
//! must behave the same on both. Needs root and the `hb` binary
//! (`$HB_BIN`, set by `cargo xtask test`).
//!
//! The attack scenarios run a signed, source-pinned node and an attacker's
//! host (a lab node that is no cluster member) which floods the monitor
//! with forged, replayed and wrong-source heartbeats for that node.

use std::{
    collections::BTreeMap,
    net::SocketAddrV4,
    path::Path,
    time::{Duration, Instant},
};

use hb_common::wire::{Heartbeat, flags};
use hb_tests::{
    Attacker, ChildGuard, ConfigOptions, Event, Flood, HEARTBEAT_PORT, Hb, Lab, Signal, Stream,
    TempDir, TestConfig, TestKey, Timing,
    attacker::allow_spoofing,
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
    /// The key senders sign with and the agent verifies with, if any.
    key: Option<TestKey>,
    dir: TempDir,
    hb: Hb,
    datapath: Datapath,
}

impl Fixture {
    /// Build a lab of `nodes` nodes and start the agent on it with `datapath`.
    fn start(nodes: u8, datapath: Datapath) -> Self {
        Self::launch(nodes, datapath, |_, _| (ConfigOptions::default(), None))
    }

    /// Like [`Fixture::start`], with authentication: a key written by `hb
    /// keygen` into the test's directory is the agent's only key (so
    /// unauthenticated heartbeats are refused) and every sender signs with
    /// it; the nodes `pinned` are pinned to their lab address, and the lab
    /// nodes `unconfigured` are no cluster members (attackers' hosts).
    fn start_signed(nodes: u8, datapath: Datapath, pinned: &[u8], unconfigured: &[u8]) -> Self {
        Self::launch(nodes, datapath, |hb, dir| {
            let key = TestKey::generate(hb, dir, "hb.key", 1).unwrap_or_else(|err| panic!("{err}"));
            let options = ConfigOptions {
                keys: vec![key.path.clone()],
                pinned: pinned.to_vec(),
                unconfigured: unconfigured.to_vec(),
                detector: None,
                brake: None,
            };
            (options, Some(key))
        })
    }

    /// Like [`Fixture::start`], with a `[brake]` section.
    fn start_braked(nodes: u8, datapath: Datapath, brake: &str) -> Self {
        Self::launch(nodes, datapath, |_, _| {
            let options = ConfigOptions {
                brake: Some(brake.to_owned()),
                ..ConfigOptions::default()
            };
            (options, None)
        })
    }

    /// Like [`Fixture::start`], with a `[detector]` section.
    fn start_detecting(nodes: u8, datapath: Datapath, detector: &str) -> Self {
        Self::launch(nodes, datapath, |_, _| {
            let options = ConfigOptions {
                detector: Some(detector.to_owned()),
                ..ConfigOptions::default()
            };
            (options, None)
        })
    }

    /// Build the lab, write the configuration `options` returns, start the
    /// agent.
    fn launch(
        nodes: u8,
        datapath: Datapath,
        options: impl FnOnce(&Hb, &TempDir) -> (ConfigOptions, Option<TestKey>),
    ) -> Self {
        let hb = Hb::from_env();
        let lab = Lab::build(&unique_prefix(), nodes)
            .unwrap_or_else(|err| panic!("building the lab: {err}"));
        let dir = TempDir::new("hb-test").unwrap_or_else(|err| panic!("{err}"));
        let (options, key) = options(&hb, &dir);
        let config = TestConfig::write_with(&dir, &lab, TIMING, &options)
            .unwrap_or_else(|err| panic!("{err}"));
        let agent = spawn_agent(&hb, &lab, &config, &dir.join("agent.log"), datapath);
        Self {
            senders: BTreeMap::new(),
            agent,
            lab,
            config,
            key,
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
        let mut args: Vec<String> = [
            "send",
            "--node-id",
            &index.to_string(),
            "--to",
            &to,
            "--interval",
            &humantime(TIMING.interval),
        ]
        .map(str::to_owned)
        .into();
        if let Some(key) = &self.key {
            args.extend(["--key-file".to_owned(), key.path.display().to_string()]);
        }
        let sender = self
            .hb
            .spawn_in(
                &node.ns,
                &format!("sender {index}"),
                args,
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

    /// Kills node `i`'s sender (a crash: no goodbye); returns when.
    fn crash(&mut self, i: u8) -> Instant {
        self.sender(i)
            .signal(Signal::Kill)
            .unwrap_or_else(|err| panic!("{err}"));
        Instant::now()
    }

    /// Waits for node `i`'s `down` after a crash at `crashed`, and checks
    /// that it came on time, from suspect, after at least a full timeout of
    /// silence.
    fn expect_down_on_time(&self, i: u8, what: &str, crashed: Instant) -> Event {
        let limit = TIMING.timeout() + TIMING.sweep_period + MARGIN;
        let (down, seen) = self.expect_event(what, limit, |e| e.is("down", i.into()));
        let detected = seen - crashed;
        assert!(
            detected <= limit,
            "{what} after {detected:?} (limit {limit:?})"
        );
        assert_eq!(down.previous, "suspect", "{down:?}{}", self.context());
        let timeout_ms = u64::try_from(TIMING.timeout().as_millis()).unwrap();
        let silent = down
            .since_last_heartbeat_ms
            .unwrap_or_else(|| panic!("down event without a last heartbeat: {down:?}"));
        assert!(
            silent >= timeout_ms,
            "declared down after only {silent} ms of silence (timeout {timeout_ms} ms){}",
            self.context()
        );
        down
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

    /// The entry of node `id` in `hb status --json`.
    fn node_status(&self, id: u8) -> Value {
        let status = self.status();
        status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["id"] == u64::from(id)))
            .cloned()
            .unwrap_or_else(|| panic!("node {id} is not in hb status --json: {status}"))
    }

    /// The `state` of node `id` in `hb status --json`.
    fn node_state(&self, id: u8) -> String {
        let node = self.node_status(id);
        node["state"]
            .as_str()
            .unwrap_or_else(|| panic!("node {id} has no state in hb status --json: {node}"))
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
    let t0 = f.crash(2);
    f.expect_down_on_time(2, "down 2", t0);
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

on_each_datapath!(phi_convicts_a_crashed_node_and_keeps_steady_ones_up =>
    phi_convicts_a_crashed_node_and_keeps_steady_ones_up_xdp,
    phi_convicts_a_crashed_node_and_keeps_steady_ones_up_socket);

/// With `kind = "phi"`: once the datapath has measured the senders'
/// intervals, a crashed node is down after `mean + pause + y x sd` of
/// silence (here about 200 + 100 + 5.2 x 20 ms), before the fixed timeout
/// (600 ms) would have it, and the steady ones stay up.
fn phi_convicts_a_crashed_node_and_keeps_steady_ones_up(datapath: Datapath) {
    let mut f = Fixture::start_detecting(
        3,
        datapath,
        "kind = \"phi\"\nphi_threshold = 8.0\nmin_std_dev = \"20ms\"\nacceptable_pause = \"100ms\"",
    );
    f.bring_up(&[1, 2, 3]);
    // Enough heartbeats for the interval estimates to settle.
    sleep(TIMING.interval * 20);
    for id in 1..=3 {
        let node = f.node_status(id);
        let mean = node["measured_interval_ms"]["mean_ms"].as_f64();
        let interval_ms = TIMING.interval.as_secs_f64() * 1000.0;
        assert!(
            mean.is_some_and(|mean| (interval_ms * 0.8..interval_ms * 1.5).contains(&mean)),
            "node {id}: measured interval {mean:?}, sending every {interval_ms} ms{}",
            f.context()
        );
        assert!(
            node["phi"].as_f64().is_some(),
            "node {id} has no phi{}",
            f.context()
        );
    }
    let t0 = f.crash(2);
    let limit = TIMING.timeout() + TIMING.sweep_period + MARGIN;
    let (down, seen) = f.expect_event("down 2", limit, |e| e.is("down", 2));
    let silent = down
        .since_last_heartbeat_ms
        .unwrap_or_else(|| panic!("down event without a last heartbeat: {down:?}"));
    let interval_ms = u64::try_from(TIMING.interval.as_millis()).unwrap();
    assert!(
        silent >= interval_ms + 100
            && silent < u64::try_from(TIMING.timeout().as_millis()).unwrap(),
        "down after {silent} ms of silence, detected {:?} after the crash: phi should need \
         more than the mean interval and the pause, and less than the fixed timeout{}",
        seen - t0,
        f.context()
    );
    sleep(TIMING.timeout() * 2);
    f.assert_no_event("down", 1);
    f.assert_no_event("down", 3);
}

on_each_datapath!(a_partition_of_most_nodes_runs_no_down_action =>
    a_partition_of_most_nodes_runs_no_down_action_xdp,
    a_partition_of_most_nodes_runs_no_down_action_socket);

/// 3 of 5 nodes (60%) are cut off at once (their links go down): the brake
/// engages (`partition suspected`), the 3 nodes are down in `hb status` but
/// no `down` action runs (release_per_minute = 0); when the links come
/// back, they are up again without an `up` action (nothing ran to undo),
/// the brake clears, and nodes 1 and 2 were never touched.
fn a_partition_of_most_nodes_runs_no_down_action(datapath: Datapath) {
    let mut f = Fixture::start_braked(
        5,
        datapath,
        "share = 0.55\nwindow = \"5s\"\nmin_silent = 3\nrelease_per_minute = 0",
    );
    f.bring_up(&[1, 2, 3, 4, 5]);
    let cut = [3u8, 4, 5];
    let link = |f: &Fixture, index: u8, state: &str| {
        let node = f.lab.node(index);
        node.ns
            .ip(["link", "set", node.interface.as_str(), state])
            .unwrap_or_else(|err| panic!("ip link set {state}: {err}"));
    };
    for index in cut {
        link(&f, index, "down");
    }
    // Well past the timeout: the cut nodes are down, their actions held.
    sleep(TIMING.timeout() * 4 + MARGIN);
    let status = f.status();
    assert_eq!(
        status["brake"]["engaged"],
        true,
        "brake not engaged{}",
        f.context()
    );
    assert_eq!(status["brake"]["held"], 3, "{}", f.context());
    for index in cut {
        assert_eq!(f.node_state(index), "down", "node {index}{}", f.context());
        f.assert_no_event("down", index);
    }
    for index in cut {
        link(&f, index, "up");
    }
    sleep(TIMING.timeout() * 2 + MARGIN);
    for index in 1..=5 {
        assert_eq!(f.node_state(index), "up", "node {index}{}", f.context());
    }
    let status = f.status();
    assert_eq!(
        status["brake"]["engaged"],
        false,
        "brake still engaged{}",
        f.context()
    );
    for index in cut {
        f.assert_no_event("down", index);
        let ups = f
            .events()
            .iter()
            .filter(|e| e.is("up", u32::from(index)))
            .count();
        assert_eq!(ups, 1, "node {index}: only its first up ran{}", f.context());
    }
    f.assert_no_event("down", 1);
    f.assert_no_event("down", 2);
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
/// to it); after SIGTERM the agent exits 0, leaves no socket behind, and
/// leaves the XDP program attached (the datapath outlives the agent) until
/// `hb detach` removes it and every pin.
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
    let instance = f.lab.instance().to_owned();
    if datapath == Datapath::Xdp {
        for name in &interfaces {
            let attached = f
                .lab
                .monitor_xdp(name)
                .unwrap_or_else(|err| panic!("{err}"));
            assert!(
                attached.is_some(),
                "no XDP program on {name} after SIGTERM: the datapath must outlive the agent{}",
                f.context()
            );
        }
        assert!(
            !hb_tests::pins::list(&instance).is_empty(),
            "nothing pinned for instance {instance} after SIGTERM"
        );
        let detached = f.hb.detach(&instance).unwrap_or_else(|err| panic!("{err}"));
        assert!(detached.contains("detached"), "hb detach said: {detached}");
    } else {
        assert_eq!(
            hb_tests::pins::list(&instance),
            Vec::<String>::new(),
            "the socket datapath pinned something"
        );
    }
    for name in &interfaces {
        let attached = f
            .lab
            .monitor_xdp(name)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            attached, None,
            "XDP still attached to {name} after the agent exited (and hb detach ran)"
        );
    }
    assert_eq!(
        hb_tests::pins::list(&instance),
        Vec::<String>::new(),
        "pins left after hb detach"
    );
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
    f.crash(2);
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
    f.crash(1);
    let (down, _) = f.expect_event("down 1 after the restart", limit, |e| e.is("down", 1));
    assert_eq!(down.previous, "suspect", "{down:?}{}", f.context());
}

/// The attacked node of the attack scenarios: signs its heartbeats and is
/// pinned to its lab address (198.18.1.2).
const VICTIM: u8 = 1;
/// The attacker's host: a lab node that is no cluster member (198.18.2.2)
/// and can also send from the victim's address.
const ATTACKER: u8 = 2;
/// Packets a second of each kind of attack packet.
const ATTACK_RATE: u32 = 20;
/// No attack lasts longer, whatever happens to the test.
const ATTACK_AT_MOST: Duration = Duration::from_secs(20);
/// How far beyond the victim's last sequence the attacker's "fresh"
/// sequences start (the victim cannot have sent that many since).
const AHEAD: u64 = 1_000;
/// The kinds of attack packets ([`Fixture::attack`]) and the counter each
/// must land in.
const ATTACKS: [(&str, &str); 3] = [
    ("forged", "bad_tag"),
    ("replayed", "replay"),
    ("wrong source", "wrong_source"),
];
/// Each stream must have sent at least this many packets for the counters
/// to say anything.
const ATTACK_MIN_SENT: u64 = 10;

/// Where a node's last accepted heartbeat was, as `hb status` shows it.
#[derive(Clone, Copy, Debug)]
struct Heard {
    incarnation: u64,
    sequence: u64,
}

/// Now, in Unix nanoseconds (the sender's informational timestamp).
fn unix_ns() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
}

impl Fixture {
    /// A signed lab under attack: node [`VICTIM`] signed and pinned, node
    /// [`ATTACKER`] no member and allowed to send from the victim's address.
    fn start_attacked(datapath: Datapath) -> Self {
        let f = Self::start_signed(2, datapath, &[VICTIM], &[ATTACKER]);
        allow_spoofing(&f.lab, f.lab.node(ATTACKER), f.lab.node(VICTIM).address)
            .unwrap_or_else(|err| panic!("letting the attacker spoof: {err}"));
        let status = f.status();
        assert_eq!(
            status["auth"]["key_ids"],
            serde_json::json!([1]),
            "{status}"
        );
        assert_eq!(
            status["auth"]["accept_unauthenticated"],
            Value::Bool(false),
            "{status}"
        );
        assert_eq!(
            status["nodes_total"], 1,
            "the attacker is no node: {status}"
        );
        f
    }

    fn key(&self) -> &TestKey {
        self.key
            .as_ref()
            .expect("the fixture was started with start_signed")
    }

    /// Where the last heartbeat of node `id` was; the node must be heard
    /// signed and be pinned.
    fn heard(&self, id: u8) -> Heard {
        let node = self.node_status(id);
        assert_eq!(
            node["authenticated"],
            Value::Bool(true),
            "node {id} is not heard signed: {node}{}",
            self.context()
        );
        assert_eq!(node["pinned"], Value::Bool(true), "node {id}: {node}");
        let field = |name: &str| {
            node[name]
                .as_u64()
                .unwrap_or_else(|| panic!("node {id} has no {name}: {node}"))
        };
        Heard {
            incarnation: field("incarnation"),
            sequence: field("sequence"),
        }
    }

    /// Start flooding the monitor from the attacker's host with heartbeats
    /// of [`VICTIM`], whose last heartbeat was `heard`, each with `flags`
    /// (0, or LEAVE for a forged goodbye). Every tick, one of each kind:
    ///
    /// - forged: fresh sequences, a tag under a wrong key, from the
    ///   attacker's address (`bad_tag`);
    /// - replayed: the victim's incarnation and sequences 1..=heard it has
    ///   already sent, signed with the real key and so byte for byte what
    ///   a capture of the victim's packets holds (the timestamp is
    ///   informational, and fixed here), from the victim's own address
    ///   (`replay`);
    /// - wrong source: sequences ahead of the victim's, signed with the
    ///   real key (a stolen key), from the attacker's address: only the
    ///   pinning stops them (`wrong_source`).
    fn attack(&self, heard: Heard, flags: u8) -> Attacker {
        let attacker = self.lab.node(ATTACKER);
        let victim = self.lab.node(VICTIM);
        let interval_ms = u32::try_from(TIMING.interval.as_millis()).unwrap();
        let heartbeat = move |sequence: u64, sent_unix_ns: u64| Heartbeat {
            flags,
            key_id: 0,
            node_id: VICTIM.into(),
            interval_ms,
            incarnation: heard.incarnation,
            sequence,
            sent_unix_ns,
            auth_tag: [0; 16],
        };
        assert!(heard.sequence >= 1, "nothing to replay: {heard:?}");
        let ahead = heard.sequence + AHEAD;
        let captured_at = unix_ns();
        let (forger, replayer, thief) =
            (self.key().clone(), self.key().clone(), self.key().clone());
        let streams = vec![
            Stream::new(ATTACKS[0].0, attacker.address, move |k| {
                forger.forge(&heartbeat(ahead + k, unix_ns()))
            }),
            Stream::new(ATTACKS[1].0, victim.address, move |k| {
                replayer.sign(&heartbeat(1 + k % heard.sequence, captured_at))
            }),
            Stream::new(ATTACKS[2].0, attacker.address, move |k| {
                thief.sign(&heartbeat(ahead + k, unix_ns()))
            }),
        ];
        let flood = Flood {
            to: SocketAddrV4::new(attacker.monitor_address, HEARTBEAT_PORT),
            rate: ATTACK_RATE,
            max_packets: u64::from(ATTACK_RATE) * ATTACK_AT_MOST.as_secs(),
            max_duration: ATTACK_AT_MOST,
        };
        Attacker::start(&attacker.ns.path(), flood, streams)
            .unwrap_or_else(|err| panic!("starting the attacker: {err}"))
    }

    /// The counters the attacks must land in, by name.
    fn refusals(&self) -> BTreeMap<&'static str, u64> {
        let status = self.status();
        ATTACKS
            .iter()
            .map(|&(_, counter)| {
                let value = status["counters"][counter]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no counters.{counter}: {status}"));
                (counter, value)
            })
            .collect()
    }

    /// Wait (bounded) until each attack's counter has grown from `before`
    /// by at least half of what its stream `sent` (the rest is slack for
    /// the unexpected, not an expected loss: a veth loses nothing).
    fn expect_refusals(&self, before: &BTreeMap<&'static str, u64>, sent: &[(&str, u64)]) {
        let expected: Vec<(&str, u64)> = ATTACKS
            .iter()
            .map(|&(stream, counter)| {
                let sent = sent
                    .iter()
                    .find(|(name, _)| *name == stream)
                    .map_or(0, |&(_, sent)| sent);
                assert!(
                    sent >= ATTACK_MIN_SENT,
                    "the attacker sent only {sent} {stream} packets: {sent:?}"
                );
                (counter, before[counter] + sent / 2)
            })
            .collect();
        let deadline = Instant::now() + MARGIN;
        loop {
            let now = self.refusals();
            if expected.iter().all(|&(counter, min)| now[counter] >= min) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the attack did not show in the counters: before {before:?}, now {now:?}, \
                 expected at least {expected:?} (attacker sent {sent:?}){}",
                self.context()
            );
            sleep(TIMING.sweep_period);
        }
    }
}

on_each_datapath!(attacked_stopped_node_goes_down_on_time =>
    attacked_stopped_node_goes_down_on_time_xdp,
    attacked_stopped_node_goes_down_on_time_socket);

/// A signed, pinned node crashes while an attacker floods the monitor with
/// forged, replayed and wrong-source heartbeats in its name: it goes down
/// as fast as a crash without attacker does, stays down, and every attack
/// packet shows up in its counter and nowhere in the node's record.
fn attacked_stopped_node_goes_down_on_time(datapath: Datapath) {
    let mut f = Fixture::start_attacked(datapath);
    f.bring_up(&[VICTIM]);
    // A few heartbeats to replay.
    sleep(TIMING.interval * 3);
    let before = f.refusals();
    let t0 = f.crash(VICTIM);
    let heard = f.heard(VICTIM);
    let attacker = f.attack(heard, 0);
    f.expect_down_on_time(VICTIM, "down 1 under attack", t0);
    let accepted = f.accepted();

    // The attack goes on for two more timeouts: nothing of it may bring the
    // node back up.
    sleep(TIMING.timeout() * 2 + TIMING.sweep_period);
    assert!(
        !attacker.is_finished(),
        "the attacker stopped early: {attacker:?}"
    );
    let sent = attacker
        .stop()
        .unwrap_or_else(|err| panic!("the attacker failed: {err}"));
    f.expect_refusals(&before, &sent);
    let ups: Vec<Event> = f
        .events()
        .into_iter()
        .filter(|e| e.is("up", 1) && e.previous != "unseen")
        .collect();
    assert!(
        ups.is_empty(),
        "the attacker brought node 1 back: {ups:?} (sent {sent:?}){}",
        f.context()
    );
    assert_eq!(f.node_state(VICTIM), "down", "{}", f.context());
    assert_eq!(
        f.accepted(),
        accepted,
        "heartbeats were accepted after node 1 went down, and only the attacker sends \
         (sent {sent:?}){}",
        f.context()
    );
    let last = f.heard(VICTIM);
    assert_eq!(last.incarnation, heard.incarnation, "{}", f.context());
    assert!(
        last.sequence < heard.sequence + AHEAD,
        "node 1 recorded an attacker's sequence: {last:?}, heard {heard:?} before the \
         attack{}",
        f.context()
    );
}

on_each_datapath!(forged_leave_does_not_make_a_live_node_left =>
    forged_leave_does_not_make_a_live_node_left_xdp,
    forged_leave_does_not_make_a_live_node_left_socket);

/// An attacker sends graceful-leave heartbeats in the name of a live signed,
/// pinned node: forged (wrong key), replayed (old sequences, real key, the
/// node's own address) and with a stolen key from elsewhere. The node never
/// becomes `left` (nor `down`), its own heartbeats go on being accepted, and
/// the counters show the attack.
fn forged_leave_does_not_make_a_live_node_left(datapath: Datapath) {
    let mut f = Fixture::start_attacked(datapath);
    f.bring_up(&[VICTIM]);
    sleep(TIMING.interval * 3);
    let before = f.refusals();
    let accepted = f.accepted();
    let heard = f.heard(VICTIM);
    let attacker = f.attack(heard, flags::LEAVE);

    // Many intervals under attack: a leave taken would show at once.
    sleep(TIMING.timeout() * 3 + TIMING.sweep_period * 2);
    assert!(
        !attacker.is_finished(),
        "the attacker stopped early: {attacker:?}"
    );
    let sent = attacker
        .stop()
        .unwrap_or_else(|err| panic!("the attacker failed: {err}"));
    // Let the agent sweep what arrived last.
    sleep(TIMING.sweep_period * 2);
    f.expect_refusals(&before, &sent);
    f.assert_no_event("left", VICTIM);
    f.assert_no_event("down", VICTIM);
    assert_eq!(f.node_state(VICTIM), "up", "{}", f.context());
    f.sender(VICTIM)
        .ensure_running()
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(
        f.accepted() > accepted,
        "the node's own heartbeats stopped being accepted{}",
        f.context()
    );
    let last = f.heard(VICTIM);
    assert_eq!(last.incarnation, heard.incarnation, "{}", f.context());
    assert!(
        last.sequence > heard.sequence && last.sequence < heard.sequence + AHEAD,
        "node 1 is at {last:?}, was at {heard:?}: its own heartbeats should have moved it \
         on, and no attacker's{}",
        f.context()
    );
}

/// `hb agent --check-config` (keepalived -t, haproxy -c): in the monitor's
/// namespace, a good file prints `config OK` and exits 0; a file with a bad
/// value exits 1 and names the field on the first line of stderr (what a
/// journal shows). Either way nothing is attached, bound or written.
#[test]
fn check_config_validates_without_starting_anything() {
    let hb = Hb::from_env();
    let lab =
        Lab::build(&unique_prefix(), 2).unwrap_or_else(|err| panic!("building the lab: {err}"));
    let dir = TempDir::new("hb-test").unwrap_or_else(|err| panic!("{err}"));
    let config = TestConfig::write(&dir, &lab, TIMING).unwrap_or_else(|err| panic!("{err}"));
    let check = |path: &Path| {
        let mut cmd = lab.monitor.command(hb.path());
        cmd.args([
            "agent".as_ref(),
            "--check-config".as_ref(),
            "--config".as_ref(),
            path.as_os_str(),
        ]);
        cmd.args(["--datapath", "xdp"]);
        let output = cmd
            .output()
            .unwrap_or_else(|err| panic!("running hb agent --check-config: {err}"));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status, stdout, stderr)
    };

    let (status, stdout, stderr) = check(&config.path);
    assert!(
        status.success(),
        "a good config failed the check ({status}): {stdout}{stderr}"
    );
    assert!(
        stdout
            .starts_with("config OK: 2 nodes, 1 actions, datapath xdp, HTTP API on 127.0.0.1:7980"),
        "stdout: {stdout:?}, stderr: {stderr:?}"
    );

    let good = std::fs::read_to_string(&config.path).unwrap_or_else(|err| panic!("{err}"));
    for (line, bad_line, field) in [
        (
            "pass_heartbeats = false",
            "pass_heartbeats = \"yes\"",
            "`pass_heartbeats`",
        ),
        ("max_nodes = 16", "max_nodes = 0", "`max_nodes`"),
    ] {
        assert!(good.contains(line), "the test config has no line {line:?}");
        let path = dir.join("bad.toml");
        std::fs::write(&path, good.replacen(line, bad_line, 1))
            .unwrap_or_else(|err| panic!("{err}"));
        let (status, stdout, stderr) = check(&path);
        assert_eq!(
            status.code(),
            Some(1),
            "{bad_line}: stdout {stdout:?}, stderr {stderr:?}"
        );
        assert!(!stdout.contains("config OK"), "{bad_line}: {stdout}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains(field),
            "{bad_line}: the first line of stderr {first:?} does not name {field}\n{stderr}"
        );
    }

    for name in lab.monitor_interfaces() {
        let attached = lab.monitor_xdp(&name).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(attached, None, "--check-config attached XDP to {name}");
    }
    assert!(
        !config.socket.exists(),
        "--check-config created the status socket"
    );
    assert!(
        !config.state.exists(),
        "--check-config wrote the state file"
    );
    let listening = lab
        .monitor
        .exec("ss", ["-H", "-l", "-n", "-t", "-u"])
        .unwrap_or_else(|err| panic!("{err}"));
    let listening = String::from_utf8_lossy(&listening.stdout);
    assert!(
        listening.trim().is_empty(),
        "--check-config left sockets bound: {listening}"
    );
}
