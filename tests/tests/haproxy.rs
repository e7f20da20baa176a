//! The `kind = "haproxy"` action against a real HAProxy (Debian's
//! `haproxy`, installed by `cargo xtask setup`): a monitor namespace runs
//! `hb agent` (XDP datapath) and HAProxy in front of three backend
//! namespaces, each serving HTTP on port 80 and sending heartbeats. HAProxy
//! has no health checks, so only hb's action takes a server out of
//! rotation. Checked through HAProxy's own `show servers state` and with
//! requests through its frontend. Needs root and `$HB_BIN`.

use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    io::Write,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use hb_tests::{
    ChildGuard, HEARTBEAT_PORT, Hb, Lab, Signal, TempDir, TestConfig, Timing,
    config::{humantime, node_name, toml_string},
    haproxy::Haproxy,
    http::{HttpBackend, get_many},
    interrupt, unique_prefix, wait_for_event,
};
use serde_json::Value;

const TIMING: Timing = Timing::FAST;
const NODES: u8 = 3;
const CRASHED: u8 = 2;
/// Requests sent through HAProxy after each change.
const REQUESTS: usize = 200;
const BACKEND: &str = "web";
/// Slack for scheduling, process start-up and ARP on a loaded 2-core box.
const MARGIN: Duration = Duration::from_secs(3);
const READY_WITHIN: Duration = Duration::from_secs(15);
/// `srv_admin_state` bit of a maintenance forced through the runtime API.
const FORCED_MAINT: u32 = 0x01;

/// Node `i`'s server name in HAProxy: its node name, except node 3, which
/// the action maps (`servers`) to another name.
fn server_name(i: u8) -> String {
    if i == 3 {
        "web-three".to_owned()
    } else {
        node_name(i)
    }
}

/// Field order is drop order: processes and backends first, then the
/// lab, then the files.
struct Fixture {
    senders: BTreeMap<u8, ChildGuard>,
    agent: ChildGuard,
    haproxy: Haproxy,
    backends: BTreeMap<u8, HttpBackend>,
    lab: Lab,
    config: TestConfig,
    dir: TempDir,
    hb: Hb,
}

impl Fixture {
    /// The lab, the backends' web servers, HAProxy with every server in
    /// forced maintenance (so hb's first `up` must bring each in), and the
    /// agent with a haproxy action.
    fn start() -> Self {
        let hb = Hb::from_env();
        let lab = Lab::build(&unique_prefix(), NODES).unwrap_or_else(|err| panic!("{err}"));
        let dir = TempDir::new("hb-haproxy").unwrap_or_else(|err| panic!("{err}"));
        let backends = (1..=NODES).map(|i| (i, start_backend(&lab, i))).collect();
        let servers: Vec<(String, SocketAddr)> = lab
            .nodes
            .iter()
            .map(|node| {
                (
                    server_name(node.index),
                    SocketAddr::from((node.address, 80)),
                )
            })
            .collect();
        let frontend = SocketAddr::from((Ipv4Addr::LOCALHOST, 8080));
        let haproxy = Haproxy::start(&lab.monitor, dir.path(), frontend, BACKEND, &servers)
            .unwrap_or_else(|err| panic!("starting HAProxy: {err}"));
        for (server, _) in &servers {
            let command = format!("set server {BACKEND}/{server} state maint");
            let answer = haproxy
                .command(&command)
                .unwrap_or_else(|err| panic!("{err}"));
            assert!(answer.trim().is_empty(), "`{command}`: {answer}");
        }
        let config = TestConfig::write(&dir, &lab, TIMING).unwrap_or_else(|err| panic!("{err}"));
        append_haproxy_action(&config.path, &haproxy.socket);
        let agent = spawn_agent(&hb, &lab, &config, &dir.join("agent.log"));
        Self {
            senders: BTreeMap::new(),
            agent,
            haproxy,
            backends,
            lab,
            config,
            dir,
            hb,
        }
    }

    fn start_sender(&mut self, i: u8) {
        let node = self.lab.node(i);
        let to = format!("{}:{HEARTBEAT_PORT}", node.monitor_address);
        let args = [
            "send",
            "--node-id",
            &i.to_string(),
            "--to",
            &to,
            "--interval",
            &humantime(TIMING.interval),
        ];
        let log = self.dir.join(&format!("sender-{i}.log"));
        let sender = self
            .hb
            .spawn_in(&node.ns, &format!("sender {i}"), args, &log)
            .unwrap_or_else(|err| panic!("{err}"));
        self.senders.insert(i, sender);
    }

    /// What to show when something goes wrong.
    fn context(&self) -> String {
        let events = std::fs::read_to_string(&self.config.events).unwrap_or_default();
        let state = self
            .haproxy
            .command(&format!("show servers state {BACKEND}"));
        format!(
            "\n--- events.log ---\n{events}--- show servers state ---\n{state:?}\n\
             --- agent output (last lines) ---\n{}\n--- haproxy output ---\n{}",
            self.agent.log_tail(40),
            self.haproxy.process.log_tail(20)
        )
    }

    /// Waits for event `kind` of node `i` coming from `previous`.
    fn expect_event(&self, kind: &str, i: u8, previous: &str, within: Duration) {
        wait_for_event(
            &self.config.events,
            |e| e.is(kind, i.into()) && e.previous == previous,
            Instant::now() + within,
            &format!("`{kind}` of node {i} (from {previous})"),
        )
        .unwrap_or_else(|err| panic!("{err}{}", self.context()));
    }

    /// Polls `show servers state` until node `i`'s server is in forced
    /// maintenance (`maint`) or not (`!maint`), for at most `within`.
    fn expect_maint(&self, i: u8, maint: bool, within: Duration) {
        let server = server_name(i);
        let deadline = Instant::now() + within;
        loop {
            let admin = self.haproxy.admin_state(&server);
            if let Ok(admin) = admin
                && (admin & FORCED_MAINT != 0) == maint
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server {server} still {} after {within:?} (admin state {admin:?}){}",
                if maint { "not in maint" } else { "in maint" },
                self.context()
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// Sends [`REQUESTS`] requests through HAProxy's frontend: every one
    /// must succeed. Returns how many each backend answered.
    fn requests_all_succeed(&self, what: &str) -> BTreeMap<String, usize> {
        let answers = get_many(&self.lab.monitor.path(), self.haproxy.frontend, REQUESTS)
            .unwrap_or_else(|err| panic!("{err}"));
        let errors: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
        assert!(
            errors.is_empty(),
            "{what}: {} of {REQUESTS} requests failed, e.g. {:?}{}",
            errors.len(),
            errors.first(),
            self.context()
        );
        let mut by_backend = BTreeMap::new();
        for body in answers.into_iter().flatten() {
            *by_backend.entry(body).or_insert(0) += 1;
        }
        by_backend
    }

    fn action_stats(&self) -> Value {
        let status = self
            .hb
            .status_json(&self.config.socket)
            .unwrap_or_else(|err| panic!("hb status --json: {err}{}", self.context()));
        status["actions"].clone()
    }
}

fn start_backend(lab: &Lab, i: u8) -> HttpBackend {
    let node = lab.node(i);
    HttpBackend::start(
        &node.ns.path(),
        SocketAddr::from((node.address, 80)),
        &node_name(i),
    )
    .unwrap_or_else(|err| panic!("starting node {i}'s web server: {err}"))
}

/// Adds the action under test to the test configuration (arrays of tables
/// may follow anything).
fn append_haproxy_action(config: &Path, socket: &Path) {
    let action = format!(
        "\n[[actions]]\nname = \"lb\"\non = [\"down\", \"up\"]\nkind = \"haproxy\"\n\
         socket = {}\nbackend = \"{BACKEND}\"\nservers = {{ {} = \"{}\" }}\ntimeout = \"5s\"\n",
        toml_string(&socket.to_string_lossy()),
        toml_string(&node_name(3)),
        server_name(3),
    );
    let mut file = OpenOptions::new()
        .append(true)
        .open(config)
        .unwrap_or_else(|err| panic!("{}: {err}", config.display()));
    file.write_all(action.as_bytes())
        .unwrap_or_else(|err| panic!("{}: {err}", config.display()));
}

fn spawn_agent(hb: &Hb, lab: &Lab, config: &TestConfig, log: &Path) -> ChildGuard {
    let args = [
        "agent".as_ref(),
        "--config".as_ref(),
        config.path.as_os_str(),
        "--status-socket".as_ref(),
        config.socket.as_os_str(),
        "--datapath".as_ref(),
        "xdp".as_ref(),
    ];
    let mut agent = hb
        .spawn_in(&lab.monitor, "agent", args, log)
        .unwrap_or_else(|err| panic!("{err}"));
    hb.wait_until_ready(&config.socket, &mut agent, READY_WITHIN)
        .unwrap_or_else(|err| panic!("the agent did not become ready: {err}"));
    agent
}

fn sleep(duration: Duration) {
    interrupt::sleep(duration).unwrap_or_else(|err| panic!("{err}"));
}

#[test]
fn a_crashed_backend_leaves_haproxys_rotation_and_comes_back() {
    let mut lab = Fixture::start();
    let detection = TIMING.timeout() + TIMING.sweep_period + MARGIN;

    // First heartbeats: hb's `up` takes every server out of maintenance.
    for i in 1..=NODES {
        lab.start_sender(i);
    }
    for i in 1..=NODES {
        lab.expect_event("up", i, "unseen", MARGIN + TIMING.interval);
        lab.expect_maint(i, false, MARGIN);
    }
    let served = lab.requests_all_succeed("all three up");
    assert_eq!(served.len(), usize::from(NODES), "{served:?}");

    // Crash node 2: its web server and its heartbeats stop together.
    lab.senders
        .get_mut(&CRASHED)
        .map(|sender| sender.signal(Signal::Kill))
        .unwrap_or_else(|| panic!("no sender {CRASHED}"))
        .unwrap_or_else(|err| panic!("{err}"));
    if let Some(backend) = lab.backends.remove(&CRASHED) {
        backend.stop();
    }
    lab.expect_event("down", CRASHED, "suspect", detection);
    lab.expect_maint(CRASHED, true, MARGIN);
    let served = lab.requests_all_succeed("node 2 down");
    assert!(!served.contains_key(&node_name(CRASHED)), "{served:?}");
    assert_eq!(served.len(), usize::from(NODES - 1), "{served:?}");

    // Restart it: back in rotation after its `up`.
    lab.backends
        .insert(CRASHED, start_backend(&lab.lab, CRASHED));
    lab.start_sender(CRASHED);
    lab.expect_event("up", CRASHED, "down", MARGIN + TIMING.interval * 4);
    lab.expect_maint(CRASHED, false, MARGIN);
    let served = lab.requests_all_succeed("node 2 back");
    assert!(
        served.get(&node_name(CRASHED)).is_some_and(|&n| n > 0),
        "{served:?}"
    );

    let actions = lab.action_stats();
    assert_eq!(actions["failed"], 0, "{actions}{}", lab.context());
    assert_eq!(actions["timed_out"], 0, "{actions}{}", lab.context());
    let log = lab.agent.log_tail(400);
    assert!(
        log.contains(&format!(
            "HAProxy server {BACKEND}/{} (node {}) set to maint",
            node_name(CRASHED),
            node_name(CRASHED)
        )),
        "no success line for the maint in the agent's log{}",
        lab.context()
    );
    let exit = lab
        .agent
        .stop(Signal::Term, Duration::from_secs(5))
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(exit.success(), "agent exited with {exit}{}", lab.context());
}
