//! Pull and hybrid monitoring (issue 15) in a namespace lab: the agent
//! probes nodes that run no sender, with ICMP echo requests whose replies
//! the XDP program records, with TCP connects and with HTTP requests, and a
//! node may also run `hb send` (hybrid). Every test builds its own lab (a
//! monitor namespace, node namespaces, veth pairs, addresses in
//! 198.18.0.0/15 and fd00::/8), really sends packets, and removes
//! everything on Drop. Root only; needs `$HB_BIN`. Timing: a 200 ms
//! interval, down after 3 (600 ms), a 50 ms sweep, and a 2 s margin on
//! every deadline.
//!
//! - ICMP over IPv4 and IPv6: a probed node is up; its link taken down, it
//!   is down within the timeout plus the sweep plus the margin, after at
//!   least a full timeout of silence; its link back, up again; another
//!   probed node stays up throughout; `hb status`, the API and the counters
//!   say so;
//! - forged replies: an attacker on another link of the monitor learns hb's
//!   identifier from a captured echo request and sends replies with the
//!   node's id, a wrong tag and sequences far ahead, from the node's
//!   address, and replays a real reply, while the node does not answer:
//!   it goes down all the same, every forgery is counted as a bad tag,
//!   every replay as a replay, and the node comes back once it answers;
//! - TCP and HTTP (IPv4, IPv6, and on the socket datapath): up while a
//!   server in the node's namespace answers, down when it stops (the host
//!   still answering ICMP), the HTTP status and body rules and a hung
//!   server (the probe's timeout); ICMP refused on the socket datapath;
//! - hybrid (ICMP, TCP; XDP and socket datapaths): a node with a sender
//!   and a probe is up while either works, `refreshed_by` says which, and
//!   it is down when both stop;
//! - confirmation: two lost probes in a row (dropped by nftables) do not
//!   convict a node with `probe_confirm`, thanks to one retry before its
//!   deadline; a node that stopped answering is convicted on time all the
//!   same, after exactly one retry;
//! - node ranges (IPv4, IPv6): node `first_id + k` probed at
//!   `first_address + k`, probes an interval apart and spread, not bursts;
//! - the agent restarted or reloaded under probed nodes: no flap, no
//!   replays; an unroutable node holds back no other; and the lab itself.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use hb_tests::{
    ChildGuard, Event, Hb, Lab, Sched, Sender, Signal, TempDir, TestConfig, Timing,
    attacker::allow_spoofing,
    events::{read_events, read_lines, wait_for_line},
    interrupt, is_root,
    probe::{
        self, Answer, HealthServer, ProbedNode, TcpService, add_ipv6, api_get, api_text,
        capture_probes, drop_probes, dropped_probes, ignore_echo, metric, node_name, ping,
        send_icmp, set_link,
    },
    unique_prefix, wait_for_event,
};
use serde_json::Value;

const TIMING: Timing = Timing::FAST;
/// Slack for scheduling, process start-up and neighbour discovery on a
/// loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(2);
const READY_WITHIN: Duration = Duration::from_secs(20);
/// From the agent's start (or a node's return) to the node's `up`.
const UP_WITHIN: Duration = Duration::from_secs(5);
/// How long a node that should stay up is watched.
const STEADY: Duration = Duration::from_secs(2);
/// Longest a server of a test lives.
const SERVER_LIFETIME: Duration = Duration::from_secs(120);
const TCP_PORT: u16 = 8022;
const HTTP_PORT: u16 = 8080;

/// Skip (with a note) unless root.
fn root() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces and XDP)");
    }
    is_root()
}

/// A running agent in its own lab. Field order is drop order: the agent,
/// then the lab, then the files.
struct ProbeLab {
    agent: ChildGuard,
    lab: Lab,
    config: TestConfig,
    dir: TempDir,
    hb: Hb,
}

impl ProbeLab {
    /// Build a lab of `nodes` nodes, let `prepare` set it up (addresses,
    /// servers) and return the extra sections and the configured nodes,
    /// and start the agent on them.
    fn start(nodes: u8, prepare: impl FnOnce(&Lab) -> (String, Vec<ProbedNode>)) -> Self {
        Self::start_with(nodes, TIMING, prepare)
    }

    /// [`ProbeLab::start`] with another timing than [`TIMING`] (the
    /// waits of this fixture assume [`TIMING`]).
    fn start_with(
        nodes: u8,
        timing: Timing,
        prepare: impl FnOnce(&Lab) -> (String, Vec<ProbedNode>),
    ) -> Self {
        Self::start_on(nodes, "xdp", timing, prepare)
    }

    /// [`ProbeLab::start_with`] on the datapath `datapath` (`xdp`, `socket`).
    fn start_on(
        nodes: u8,
        datapath: &str,
        timing: Timing,
        prepare: impl FnOnce(&Lab) -> (String, Vec<ProbedNode>),
    ) -> Self {
        let hb = Hb::from_env();
        let lab = Lab::build(&unique_prefix(), nodes)
            .unwrap_or_else(|err| panic!("building the lab: {err}"));
        let dir = TempDir::new("hb-probe").unwrap_or_else(|err| panic!("{err}"));
        let (sections, probed) = prepare(&lab);
        let config = probe::write_config_on(&dir, &lab, datapath, timing, &sections, &probed)
            .unwrap_or_else(|err| panic!("{err}"));
        let agent = hb
            .start_agent(&lab, &config, &dir.join("agent.log"), READY_WITHIN)
            .unwrap_or_else(|err| {
                let text = std::fs::read_to_string(&config.path).unwrap_or_default();
                panic!("the agent did not start: {err}\n--- hb.toml ---\n{text}")
            });
        Self {
            agent,
            lab,
            config,
            dir,
            hb,
        }
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

    /// Wait for the first `up` of each of `ids`.
    fn expect_first_up(&self, ids: &[u32]) {
        for &id in ids {
            let (event, _) = self.expect_event(&format!("up {id}"), UP_WITHIN, |e| e.is("up", id));
            assert_eq!(
                event.node_name,
                node_name(id),
                "{event:?}{}",
                self.context()
            );
            assert_eq!(event.previous, "unseen", "{event:?}{}", self.context());
        }
    }

    /// Lines in the events log so far.
    fn lines(&self) -> usize {
        read_lines(&self.config.events)
            .unwrap_or_else(|err| panic!("{err}"))
            .len()
    }

    /// Wait up to `within` for an event matching `predicate` on a line at
    /// index `skip` or later.
    fn expect_event_after(
        &self,
        skip: usize,
        what: &str,
        within: Duration,
        mut predicate: impl FnMut(&Event) -> bool,
    ) -> (Event, Instant) {
        let (_, line, seen) = wait_for_line(
            &self.config.events,
            skip,
            |line| Event::parse(line).is_some_and(|e| predicate(&e)),
            Instant::now() + within,
            what,
        )
        .unwrap_or_else(|err| panic!("{err}{}", self.context()));
        (Event::parse(&line).expect("matched"), seen)
    }

    /// Wait for node `id`'s next `down` (after the events log's line
    /// `skip`), its source having been taken away at `since`: on time (the
    /// timeout, plus the sweep, plus the margin), from suspect, after at
    /// least a full timeout of silence. Returns how long it took.
    fn expect_down_on_time(&self, id: u32, skip: usize, since: Instant) -> Duration {
        let limit = TIMING.timeout() + TIMING.sweep_period + MARGIN;
        let (down, seen) =
            self.expect_event_after(skip, &format!("down {id}"), limit, |e| e.is("down", id));
        let detected = seen - since;
        assert!(
            detected <= limit,
            "down {id} after {detected:?} (limit {limit:?}){}",
            self.context()
        );
        assert_eq!(down.previous, "suspect", "{down:?}{}", self.context());
        let timeout_ms = u64::try_from(TIMING.timeout().as_millis()).unwrap();
        let silent = down
            .since_last_heartbeat_ms
            .unwrap_or_else(|| panic!("down event without a last refresh: {down:?}"));
        assert!(
            silent >= timeout_ms,
            "declared down after only {silent} ms of silence (timeout {timeout_ms} ms){}",
            self.context()
        );
        detected
    }

    /// Wait for node `id`'s `up` from down (after the events log's line
    /// `skip`); returns how long it took from `since`.
    fn expect_up_again(&self, id: u32, skip: usize, since: Instant) -> Duration {
        let (_, seen) = self.expect_event_after(skip, &format!("up {id} again"), UP_WITHIN, |e| {
            e.is("up", id) && e.previous == "down"
        });
        seen - since
    }

    fn events(&self) -> Vec<Event> {
        read_events(&self.config.events).unwrap_or_else(|err| panic!("{err}"))
    }

    fn count_events(&self, kind: &str, id: u32) -> usize {
        self.events().iter().filter(|e| e.is(kind, id)).count()
    }

    /// The kinds of node `id`'s events, in order, but its recoveries from
    /// suspect (an `up` whose previous state is `suspect`: silent for two
    /// intervals, never down), which a loaded machine may cause anywhere.
    fn history(&self, id: u32) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.node_id == id && !(e.kind == "up" && e.previous == "suspect"))
            .map(|e| e.kind)
            .collect()
    }

    fn assert_history(&self, id: u32, expected: &[&str]) {
        assert_eq!(
            self.history(id),
            expected,
            "the events of node {id}{}",
            self.context()
        );
    }

    /// `hb status --json`.
    fn status(&self) -> Value {
        self.hb
            .status_json(&self.config.socket)
            .unwrap_or_else(|err| panic!("hb status --json: {err}{}", self.context()))
    }

    /// Datapath counter `name` in `hb status --json`.
    fn counter(&self, name: &str) -> u64 {
        let status = self.status();
        status["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counters.{name} in hb status --json: {status}"))
    }

    /// `GET path` on the agent's API, which must answer 200 with JSON.
    fn api(&self, path: &str) -> Value {
        let (code, body) = api_get(&self.lab.monitor, path)
            .unwrap_or_else(|err| panic!("GET {path}: {err}{}", self.context()));
        assert_eq!(code, 200, "GET {path}: {body}{}", self.context());
        body
    }

    /// `GET /api/v1/nodes/{id}`.
    fn node(&self, id: u32) -> Value {
        self.api(&format!("/api/v1/nodes/{id}"))
    }

    /// `refreshed_by` of node `id` (`None` for null).
    fn refreshed_by(&self, id: u32) -> Option<String> {
        let node = self.node(id);
        assert!(
            node.get("refreshed_by").is_some(),
            "no refreshed_by in GET /api/v1/nodes/{id}: {node}"
        );
        node["refreshed_by"].as_str().map(str::to_owned)
    }

    /// `/metrics`.
    fn metrics(&self) -> String {
        let (code, text) = api_text(&self.lab.monitor, "/metrics")
            .unwrap_or_else(|err| panic!("GET /metrics: {err}{}", self.context()));
        assert_eq!(code, 200, "GET /metrics: {text}");
        text
    }

    /// Poll `check` every 20 ms until it holds, for at most `within`.
    fn wait_until(&self, what: &str, within: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !check() {
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}{}",
                self.context()
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// Assert that node `id` has no `down` event for `duration` (it must
    /// stay up meanwhile).
    fn assert_stays_up(&self, id: u32, duration: Duration, why: &str) {
        let downs = self.count_events("down", id);
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            assert_eq!(
                self.count_events("down", id),
                downs,
                "node {id} went down while {why}{}",
                self.context()
            );
            sleep(Duration::from_millis(50));
        }
        let state = self.node_state(id);
        assert_eq!(state, "up", "node {id} while {why}{}", self.context());
    }

    /// The `state` of node `id` in `hb status --json`.
    fn node_state(&self, id: u32) -> String {
        let status = self.status();
        let node = status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["id"] == u64::from(id)))
            .unwrap_or_else(|| panic!("node {id} is not in hb status --json: {status}"));
        node["state"]
            .as_str()
            .unwrap_or_else(|| panic!("node {id} has no state: {node}"))
            .to_owned()
    }

    /// Check `GET /api/v1/nodes/{id}`'s `probe`.
    fn assert_probe(&self, id: u32, kind: &str, target: &str) {
        let node = self.node(id);
        assert_eq!(node["probe"]["kind"], kind, "node {id}: {node}");
        assert_eq!(node["probe"]["target"], target, "node {id}: {node}");
    }

    /// `probes` of `GET /api/v1/status`.
    fn probes(&self) -> Value {
        let status = self.api("/api/v1/status");
        let probes = status["probes"].clone();
        assert!(
            probes.is_object(),
            "no probes object in GET /api/v1/status: {status}"
        );
        probes
    }
}

fn sleep(duration: Duration) {
    interrupt::sleep(duration).unwrap_or_else(|err| panic!("{err}"));
}

/// Node `id` of a lab address, probed with `probe`.
fn probed(id: u32, address: impl Into<IpAddr>, probe: &str) -> ProbedNode {
    ProbedNode::new(id, address).probe(probe)
}

/// Node 1 probed with ICMP over `ipv6` or not, taken away by its link and
/// brought back; node 2, probed the same way, stays up.
fn icmp_link_down_and_back(ipv6: bool) {
    let f = ProbeLab::start(2, |lab| {
        let nodes = (1..=2)
            .map(|i| {
                let address: IpAddr = if ipv6 {
                    add_ipv6(lab, i)
                        .unwrap_or_else(|err| panic!("IPv6 on link {i}: {err}"))
                        .node
                        .into()
                } else {
                    lab.node(i).address.into()
                };
                probed(i.into(), address, "icmp")
            })
            .collect();
        (String::new(), nodes)
    });
    let address = |i: u8| -> String {
        if ipv6 {
            format!("fd00:0:0:{i}::2")
        } else {
            f.lab.node(i).address.to_string()
        }
    };
    f.expect_first_up(&[1, 2]);
    f.assert_probe(1, "icmp", &address(1));
    assert_eq!(f.refreshed_by(1).as_deref(), Some("probe"));
    let probes = f.probes();
    assert_eq!(probes["nodes"]["icmp"], 2, "{probes}");
    assert_eq!(probes["nodes"]["tcp"], 0, "{probes}");
    let identifier = probes["identifier"]
        .as_u64()
        .unwrap_or_else(|| panic!("no identifier: {probes}"));
    assert!(f.counter("probe_accepted") > 0);
    // `hb status` says the same: the prober's line and each node's probe.
    let text =
        f.hb.status_text(&f.config.socket)
            .unwrap_or_else(|err| panic!("hb status: {err}"));
    for needle in [
        format!("icmp 2, tcp 0, http 0 nodes; identifier {identifier:#06x}"),
        format!("probe icmp {}", address(1)),
        format!("probe icmp {}", address(2)),
    ] {
        assert!(
            text.contains(&needle),
            "{needle:?} missing from hb status:\n{text}"
        );
    }
    // Steady: probing keeps both up.
    f.assert_stays_up(1, STEADY, "its link was up");

    let node = f.lab.node(1);
    let (skip, t0) = (f.lines(), Instant::now());
    set_link(&node.ns, &node.interface, false).unwrap_or_else(|err| panic!("{err}"));
    let detected = f.expect_down_on_time(1, skip, t0);
    let (skip, t1) = (f.lines(), Instant::now());
    set_link(&node.ns, &node.interface, true).unwrap_or_else(|err| panic!("{err}"));
    let back = f.expect_up_again(1, skip, t1);
    f.assert_stays_up(1, STEADY, "its link was back up");
    eprintln!(
        "icmp ({}): down {detected:?} after the link went down, up {back:?} after it came back",
        if ipv6 { "IPv6" } else { "IPv4" }
    );

    f.assert_history(1, &["up", "down", "up"]);
    f.assert_history(2, &["up"]);
    let sent = f.probes()["sent"].as_u64().unwrap_or(0);
    assert!(sent > 0, "probes.sent is {sent}");
}

#[test]
fn icmp_node_goes_down_with_its_link_and_comes_back() {
    if root() {
        icmp_link_down_and_back(false);
    }
}

#[test]
fn icmp_over_ipv6_node_goes_down_with_its_link_and_comes_back() {
    if root() {
        icmp_link_down_and_back(true);
    }
}

/// The lab itself, without an agent: what the tests take away really goes
/// away (ICMP answers, a link, a listener), and the tools see what they
/// should (a probe-like echo request captured in the node's namespace).
#[test]
fn the_lab_takes_nodes_away_and_brings_them_back() {
    if !root() {
        return;
    }
    let lab = Lab::build(&unique_prefix(), 2).unwrap_or_else(|err| panic!("{err}"));
    let v6 = add_ipv6(&lab, 1).unwrap_or_else(|err| panic!("{err}"));
    let node = lab.node(1);
    let monitor = lab.monitor.path();
    let pings = |address: IpAddr, within: Duration| {
        ping(&monitor, address, within).unwrap_or_else(|err| panic!("{err}"))
    };
    let (v4, v6) = (IpAddr::V4(node.address), IpAddr::V6(v6.node));
    let quick = Duration::from_millis(600);
    assert!(pings(v4, UP_WITHIN), "{v4} does not answer");
    assert!(pings(v6, UP_WITHIN), "{v6} does not answer");

    ignore_echo(&node.ns, false, true).unwrap_or_else(|err| panic!("{err}"));
    assert!(
        !pings(v4, quick),
        "{v4} answers with icmp_echo_ignore_all=1"
    );
    assert!(
        pings(v6, UP_WITHIN),
        "{v6} stopped answering with IPv4's setting"
    );
    ignore_echo(&node.ns, false, false).unwrap_or_else(|err| panic!("{err}"));
    assert!(pings(v4, UP_WITHIN), "{v4} does not answer again");

    set_link(&node.ns, &node.interface, false).unwrap_or_else(|err| panic!("{err}"));
    assert!(!pings(v4, quick), "{v4} answers with its link down");
    assert!(!pings(v6, quick), "{v6} answers with its link down");
    set_link(&node.ns, &node.interface, true).unwrap_or_else(|err| panic!("{err}"));
    assert!(pings(v4, UP_WITHIN), "{v4} does not answer after link up");
    assert!(pings(v6, UP_WITHIN), "{v6} lost its address with its link");

    // A listener, then none.
    let at = SocketAddr::new(v4, TCP_PORT);
    let service = TcpService::start(&node.ns.path(), at, SERVER_LIFETIME)
        .unwrap_or_else(|err| panic!("{err}"));
    let answers = hb_tests::http::get_many(&monitor, at, 2).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(answers.len(), 2);
    let deadline = Instant::now() + UP_WITHIN;
    while service.accepted() < 2 && Instant::now() < deadline {
        sleep(Duration::from_millis(10));
    }
    assert_eq!(service.stop(), 2);
    let refused = hb_tests::http::get_many(&monitor, at, 1).unwrap_or_else(|err| panic!("{err}"));
    assert!(
        matches!(&refused[0], Err(err) if err.contains("refused")),
        "{refused:?}"
    );

    // The health server switches its answer; other paths get 404.
    let at = SocketAddr::new(v4, HTTP_PORT);
    let server = HealthServer::start(&node.ns.path(), at, Answer::new(200, "ok"), SERVER_LIFETIME)
        .unwrap_or_else(|err| panic!("{err}"));
    let get = |path: &str| {
        probe::http_get(&monitor, at, path).unwrap_or_else(|err| panic!("GET {path}: {err}"))
    };
    assert_eq!(get("/healthz"), (200, "ok".to_owned()));
    server.set(Answer::new(503, "ok"));
    assert_eq!(get("/healthz"), (503, "ok".to_owned()));
    assert_eq!(get("/other").0, 404);
    let (served, unavailable) = server.served_since(Instant::now() - UP_WITHIN, 503);
    assert_eq!((served, unavailable), (2, 1));
    server.stop();

    // An hb echo request (tagged under some key) sent from the monitor's
    // address is captured in the node's namespace, fields intact.
    let key: hb_common::siphash::Key = [9; 16];
    let target = node.address.to_ipv6_mapped().octets();
    let probe = hb_common::probe::Probe {
        node_id: 1,
        sequence: 42,
    };
    let data = probe.encode(&key, &target);
    let request =
        hb_common::probe::echo_message(hb_common::probe::ICMP_ECHO_REQUEST, 0xb0b0, 7, &data);
    let capture = {
        let path = node.ns.path();
        thread::spawn(move || capture_probes(&path, 1, UP_WITHIN))
    };
    sleep(Duration::from_millis(200));
    let sent = send_icmp(
        &monitor,
        node.monitor_address,
        node.address,
        vec![request; 5],
        Duration::from_millis(100),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(sent, 5);
    let captured = capture
        .join()
        .expect("the capture thread")
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(captured.len(), 1, "{captured:?}");
    let c = &captured[0];
    assert_eq!((c.from, c.to), (node.monitor_address, node.address));
    assert_eq!((c.identifier, c.icmp_sequence), (0xb0b0, 7));
    assert_eq!(c.probe, probe);
    assert_eq!(c.data, data);
}

/// An attacker on another link of the monitor learns hb's identifier from
/// an echo request it captures at the node, then, while the node does not
/// answer, sends echo replies with the node's id, a wrong tag and
/// sequences far ahead, and replays the node's real reply to that request,
/// both from the node's address: the node goes down all the same, the
/// datapath counts each forgery as a bad tag and each replay as a replay;
/// the real reply sent from the attacker's own address is a bad tag too.
/// Once the node answers again it is up: the forged sequences did not move
/// the one the datapath recorded.
#[test]
fn forged_and_replayed_replies_never_refresh_a_silent_node() {
    if !root() {
        return;
    }
    // Lab node 2 is the attacker's host: not a cluster member, but its link
    // is one of the monitor's interfaces (the XDP program sees it).
    let f = ProbeLab::start(2, |lab| {
        (String::new(), vec![probed(1, lab.node(1).address, "icmp")])
    });
    f.expect_first_up(&[1]);
    let (node, attacker) = (f.lab.node(1), f.lab.node(2));

    let captured =
        capture_probes(&node.ns.path(), 3, UP_WITHIN).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(captured.len(), 3, "captured {captured:?}{}", f.context());
    let identifier = f.probes()["identifier"].as_u64();
    for c in &captured {
        assert_eq!(Some(u64::from(c.identifier)), identifier, "{c:?}");
        assert_eq!(c.probe.node_id, 1, "{c:?}");
        assert_eq!(
            (c.from, c.to),
            (node.monitor_address, node.address),
            "{c:?}"
        );
    }
    assert!(
        captured
            .windows(2)
            .all(|w| w[0].probe.sequence < w[1].probe.sequence),
        "probe sequences do not advance: {captured:?}"
    );
    let real = captured[0];
    // The node answers the later probes too: the datapath records newer
    // sequences than the captured one.
    let accepted = f.counter("probe_accepted");
    f.wait_until("two more probe replies", UP_WITHIN, || {
        f.counter("probe_accepted") >= accepted + 2
    });

    allow_spoofing(&f.lab, attacker, node.address).unwrap_or_else(|err| panic!("{err}"));
    let (bad_tag, replay) = (f.counter("probe_bad_tag"), f.counter("probe_replay"));
    let (skip, t0) = (f.lines(), Instant::now());
    ignore_echo(&node.ns, false, true).unwrap_or_else(|err| panic!("{err}"));
    // Forgeries and replays alternate, 20 ms apart, over 1.6 s: across the
    // whole timeout.
    const EACH: u64 = 40;
    let messages: Vec<_> = (0..EACH)
        .flat_map(|k| {
            let forged = real.forged_reply(
                1,
                real.probe.sequence + 1_000_000 + k,
                0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(k + 1),
            );
            [forged, real.reply()]
        })
        .collect();
    let flood = {
        let (path, from, to) = (attacker.ns.path(), node.address, attacker.monitor_address);
        thread::spawn(move || send_icmp(&path, from, to, messages, Duration::from_millis(20)))
    };
    let detected = f.expect_down_on_time(1, skip, t0);
    let sent = flood
        .join()
        .expect("the flood thread")
        .unwrap_or_else(|err| panic!("{err}{}", f.context()));
    assert_eq!(sent as u64, 2 * EACH);
    f.wait_until(
        "the datapath to count every forgery and replay",
        UP_WITHIN,
        || {
            f.counter("probe_bad_tag") >= bad_tag + EACH
                && f.counter("probe_replay") >= replay + EACH
        },
    );
    assert_eq!(
        f.counter("probe_bad_tag") - bad_tag,
        EACH,
        "{}",
        f.context()
    );
    assert_eq!(f.counter("probe_replay") - replay, EACH, "{}", f.context());
    // The real reply from another address than the node's: a bad tag.
    let sent = send_icmp(
        &attacker.ns.path(),
        attacker.address,
        attacker.monitor_address,
        vec![real.reply(); 5],
        Duration::from_millis(10),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(sent, 5);
    f.wait_until("the datapath to count the moved reply", UP_WITHIN, || {
        f.counter("probe_bad_tag") >= bad_tag + EACH + 5
    });
    assert_eq!(f.counter("probe_bad_tag") - bad_tag, EACH + 5);
    // /metrics counts them too (the agent's whole life: at least these).
    let metrics = f.metrics();
    for (outcome, least) in [("probe_bad_tag", EACH + 5), ("probe_replay", EACH)] {
        let seen = metric(&metrics, "hb_packets_total", &[("outcome", outcome)]);
        assert!(
            seen.is_some_and(|n| n >= least as f64),
            "hb_packets_total{{outcome={outcome:?}}} is {seen:?}, at least {least} expected"
        );
    }
    // Still down, and silent as far as the agent knows.
    sleep(TIMING.timeout());
    assert_eq!(f.node_state(1), "down", "{}", f.context());
    f.assert_history(1, &["up", "down"]);
    assert!(
        !ping(
            &f.lab.monitor.path(),
            node.address.into(),
            Duration::from_millis(600)
        )
        .unwrap_or_else(|err| panic!("{err}")),
        "the node answered ICMP while it should not"
    );

    let (skip, t1) = (f.lines(), Instant::now());
    ignore_echo(&node.ns, false, false).unwrap_or_else(|err| panic!("{err}"));
    let back = f.expect_up_again(1, skip, t1);
    f.assert_stays_up(1, STEADY, "it answered again");
    f.assert_history(1, &["up", "down", "up"]);
    eprintln!(
        "forged replies: down {detected:?} after the node stopped answering despite {EACH} \
         forgeries and {EACH} replays; up {back:?} after it answered again"
    );
}

/// A TCP probe against a listener in the node's namespace; node 2 is the
/// same host (same address) probed with ICMP.
#[test]
fn tcp_probe_follows_the_listener_not_the_host() {
    if !root() {
        return;
    }
    let f = ProbeLab::start(1, |lab| {
        let address = lab.node(1).address;
        (
            String::new(),
            vec![
                probed(1, address, &format!("tcp:{TCP_PORT}")),
                probed(2, address, "icmp"),
            ],
        )
    });
    let node = f.lab.node(1);
    let at = SocketAddr::new(node.address.into(), TCP_PORT);
    let listen = || {
        TcpService::start(&node.ns.path(), at, SERVER_LIFETIME)
            .unwrap_or_else(|err| panic!("{err}"))
    };
    let service = listen();
    f.expect_first_up(&[1, 2]);
    f.assert_probe(1, "tcp", &at.to_string());
    f.assert_probe(2, "icmp", &node.address.to_string());
    let probes = f.probes();
    assert_eq!(probes["nodes"]["tcp"], 1, "{probes}");
    assert_eq!(probes["nodes"]["icmp"], 1, "{probes}");
    f.assert_stays_up(1, STEADY, "its listener listened");
    let connects = service.accepted();
    assert!(connects >= 3, "only {connects} connections in {STEADY:?}");

    let (skip, t0) = (f.lines(), Instant::now());
    service.stop();
    let detected = f.expect_down_on_time(1, skip, t0);
    // The host is there: it answers ICMP, and node 2 stays up.
    assert!(
        ping(&f.lab.monitor.path(), node.address.into(), MARGIN)
            .unwrap_or_else(|err| panic!("{err}")),
        "the host does not answer ICMP"
    );
    assert_eq!(f.node_state(2), "up", "{}", f.context());
    let metrics = f.metrics();
    let refused = metric(
        &metrics,
        "hb_probe_failures_total",
        &[("kind", "tcp"), ("reason", "refused")],
    );
    assert!(
        refused.is_some_and(|n| n >= 1.0),
        "refused: {refused:?}\n{metrics}"
    );

    let (skip, t1) = (f.lines(), Instant::now());
    let service = listen();
    let back = f.expect_up_again(1, skip, t1);
    f.assert_stays_up(1, STEADY, "its listener was back");
    assert!(service.accepted() >= 3);
    f.assert_history(1, &["up", "down", "up"]);
    f.assert_history(2, &["up"]);
    eprintln!("tcp: down {detected:?} after the listener closed, up {back:?} after it came back");
}

/// An HTTP probe with a status rule (200-299) and a body rule ("ok")
/// against a health server in the node's namespace whose answer the test
/// switches: 200 "ok" up, 503 down (status), 200 "ok" up, 200 "nope" down
/// (body), 200 "all ok" up, no answer at all down (the probe's timeout),
/// 202 "ok" up.
#[test]
fn http_probe_applies_the_status_and_body_rules() {
    if !root() {
        return;
    }
    let f = ProbeLab::start(1, |lab| {
        let node = ProbedNode::new(1, lab.node(1).address)
            .probe(&format!("http://{{address}}:{HTTP_PORT}/healthz"))
            .set("probe_status", "\"200-299\"")
            .set("probe_body", "\"ok\"");
        (String::new(), vec![node])
    });
    let node = f.lab.node(1);
    let at = SocketAddr::new(node.address.into(), HTTP_PORT);
    let server = HealthServer::start(
        &node.ns.path(),
        at,
        Answer::new(200, "ok\n"),
        SERVER_LIFETIME,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    f.expect_first_up(&[1]);
    f.assert_probe(1, "http", &format!("http://{at}/healthz"));
    assert_eq!(f.probes()["nodes"]["http"], 1);
    f.assert_stays_up(1, STEADY, "it answered 200 ok");

    let steps = [
        (Answer::new(503, "ok\n"), Some("status")),
        (Answer::new(200, "ok\n"), None),
        (Answer::new(200, "nope\n"), Some("body")),
        (Answer::new(200, "all ok\n"), None),
        (Answer::hang(), Some("timeout")),
        (Answer::new(202, "ok"), None),
    ];
    let mut timings = Vec::new();
    for (answer, failure) in steps {
        let (skip, since) = (f.lines(), Instant::now());
        let status = answer.status;
        server.set(answer.clone());
        let switched = Instant::now();
        match failure {
            Some(reason) => {
                timings.push(f.expect_down_on_time(1, skip, since));
                let (served, matching) = server.served_since(switched, status);
                assert!(
                    matching >= 2 && matching == served,
                    "{matching} of {served} requests answered {answer:?} before down"
                );
                let metrics = f.metrics();
                let failures = metric(
                    &metrics,
                    "hb_probe_failures_total",
                    &[("kind", "http"), ("reason", reason)],
                );
                assert!(
                    failures.is_some_and(|n| n >= 2.0),
                    "{reason}: {failures:?}\n{metrics}"
                );
            }
            None => {
                timings.push(f.expect_up_again(1, skip, since));
                f.assert_stays_up(1, STEADY, &format!("it answered {answer:?}"));
            }
        }
    }
    f.assert_history(1, &["up", "down", "up", "down", "up", "down", "up"]);
    eprintln!(
        "http: 503 -> down, 200 -> up, body -> down, 200 -> up, hung -> down, 202 -> up: \
         {timings:?}"
    );
}

/// What answers a hybrid node's probe, and how the test stops and starts
/// it.
enum ProbeSource {
    /// ICMP: the host's echo answers (`icmp_echo_ignore_all`).
    Icmp,
    /// TCP: a listener in the node's namespace.
    Tcp(Option<TcpService>),
}

impl ProbeSource {
    fn probe(&self) -> String {
        match self {
            ProbeSource::Icmp => "icmp".to_owned(),
            ProbeSource::Tcp(_) => format!("tcp:{TCP_PORT}"),
        }
    }

    fn set(&mut self, f: &ProbeLab, answering: bool) {
        let node = f.lab.node(1);
        match self {
            ProbeSource::Icmp => {
                ignore_echo(&node.ns, false, !answering).unwrap_or_else(|err| panic!("{err}"));
            }
            ProbeSource::Tcp(service) => {
                *service = answering.then(|| {
                    let at = SocketAddr::new(node.address.into(), TCP_PORT);
                    TcpService::start(&node.ns.path(), at, SERVER_LIFETIME)
                        .unwrap_or_else(|err| panic!("{err}"))
                });
            }
        }
    }
}

/// A node with a sender and a probe (`source`) on `datapath`: up while
/// either works, refreshed by whichever does (`refreshed_by` flips), down
/// when both stop.
fn hybrid(datapath: &str, mut source: ProbeSource) {
    let probe = source.probe();
    let f = ProbeLab::start_on(1, datapath, TIMING, |lab| {
        (String::new(), vec![probed(1, lab.node(1).address, &probe)])
    });
    source.set(&f, true);
    let node = f.lab.node(1);
    let mut sender = Sender::start(
        &f.hb,
        &f.lab,
        1,
        TIMING.interval,
        &Sched::default(),
        &f.dir.join("sender-1.log"),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    f.expect_first_up(&[1]);
    let kind = probe.split(':').next().unwrap_or_default();
    let target = match &source {
        ProbeSource::Icmp => node.address.to_string(),
        ProbeSource::Tcp(_) => format!("{}:{TCP_PORT}", node.address),
    };
    f.assert_probe(1, kind, &target);
    let heartbeats = f.counter("accepted");
    f.assert_stays_up(1, STEADY, "both its sources worked");
    assert!(f.counter("accepted") > heartbeats, "no heartbeat recorded");

    // Every sample of refreshed_by over `window` is `by`.
    let only = |by: &str, window: Duration| {
        let deadline = Instant::now() + window;
        while Instant::now() < deadline {
            assert_eq!(f.refreshed_by(1).as_deref(), Some(by), "{}", f.context());
            sleep(Duration::from_millis(100));
        }
    };

    // The sender hangs; the probe is answered.
    sender.freeze().unwrap_or_else(|err| panic!("{err}"));
    f.wait_until("refreshed_by = probe", UP_WITHIN, || {
        f.refreshed_by(1).as_deref() == Some("probe")
    });
    only("probe", STEADY);
    f.assert_stays_up(
        1,
        TIMING.timeout(),
        "its sender was stopped, its probe answered",
    );

    // The sender runs; the probe is not answered.
    source.set(&f, false);
    sender.thaw().unwrap_or_else(|err| panic!("{err}"));
    f.wait_until("refreshed_by = heartbeat", UP_WITHIN, || {
        f.refreshed_by(1).as_deref() == Some("heartbeat")
    });
    only("heartbeat", STEADY);
    f.assert_stays_up(1, TIMING.timeout(), "its probe failed and its sender ran");

    // Both stop.
    let (skip, t0) = (f.lines(), Instant::now());
    sender.freeze().unwrap_or_else(|err| panic!("{err}"));
    let detected = f.expect_down_on_time(1, skip, t0);

    // The probe is answered again: up, by the probe.
    let (skip, t1) = (f.lines(), Instant::now());
    source.set(&f, true);
    let back = f.expect_up_again(1, skip, t1);
    assert_eq!(f.refreshed_by(1).as_deref(), Some("probe"));
    f.assert_history(1, &["up", "down", "up"]);
    sender
        .ensure_running()
        .unwrap_or_else(|err| panic!("{err}"));
    eprintln!(
        "hybrid ({kind}, {datapath}): down {detected:?} after both stopped, up {back:?} after \
         the probe was answered again"
    );
    // Its server (if any) before the lab.
    drop(source);
}

#[test]
fn hybrid_node_is_up_while_either_source_works() {
    if root() {
        hybrid("xdp", ProbeSource::Icmp);
    }
}

#[test]
fn hybrid_node_with_a_tcp_probe() {
    if root() {
        hybrid("xdp", ProbeSource::Tcp(None));
    }
}

#[test]
fn hybrid_node_with_a_tcp_probe_on_the_socket_datapath() {
    if root() {
        hybrid("socket", ProbeSource::Tcp(None));
    }
}

/// `probe_confirm = true`: a node that stops answering is convicted on
/// time all the same, after exactly one retry probe; one that answers is
/// never retried into a false down.
#[test]
fn confirmation_retries_once_and_still_convicts_on_time() {
    if !root() {
        return;
    }
    let f = ProbeLab::start(2, |lab| {
        let nodes = (1..=2)
            .map(|i| {
                probed(i.into(), lab.node(i).address, "icmp")
                    .set("probe_confirm", "true")
                    .set("probe_timeout", "\"100ms\"")
            })
            .collect();
        (String::new(), nodes)
    });
    f.expect_first_up(&[1, 2]);
    f.assert_stays_up(1, STEADY, "it answered");
    let retries = f.probes()["retries"]
        .as_u64()
        .unwrap_or_else(|| panic!("no probes.retries: {}", f.probes()));

    let node = f.lab.node(1);
    let (skip, t0) = (f.lines(), Instant::now());
    ignore_echo(&node.ns, false, true).unwrap_or_else(|err| panic!("{err}"));
    let detected = f.expect_down_on_time(1, skip, t0);
    sleep(TIMING.timeout());
    let after = f.probes()["retries"].as_u64().unwrap_or(0);
    assert_eq!(
        after - retries,
        1,
        "retries before the down of node 1{}",
        f.context()
    );
    let metrics = f.metrics();
    let total = metric(&metrics, "hb_probe_retries_total", &[]);
    assert!(total.is_some_and(|n| n >= 1.0), "{total:?}\n{metrics}");

    let (skip, t1) = (f.lines(), Instant::now());
    ignore_echo(&node.ns, false, false).unwrap_or_else(|err| panic!("{err}"));
    let back = f.expect_up_again(1, skip, t1);
    f.assert_history(1, &["up", "down", "up"]);
    f.assert_history(2, &["up"]);
    eprintln!("confirm: down {detected:?} (one retry), up {back:?}");
}

/// A probed `[[node_ranges]]`: node `first_id + k` is probed at
/// `first_address + k`. Ten addresses live on the node namespace's
/// loopback (answered through its link); two of them taken away bring
/// exactly their two nodes down, and back up when they return.
#[test]
fn icmp_range_probes_each_node_at_its_own_address() {
    if !root() {
        return;
    }
    const FIRST_ID: u32 = 5;
    const COUNT: u8 = 10;
    const FIRST: u8 = 100;
    let address = |k: u8| Ipv4Addr::new(198, 18, 1, FIRST + k);
    let local = |lab: &Lab, k: u8, add: bool| {
        lab.node(1)
            .ns
            .ip([
                "addr",
                if add { "add" } else { "del" },
                &format!("{}/32", address(k)),
                "dev",
                "lo",
            ])
            .unwrap_or_else(|err| panic!("{err}"));
    };
    let f = ProbeLab::start(1, |lab| {
        for k in 0..COUNT {
            local(lab, k, true);
        }
        let range = format!(
            "[[node_ranges]]\nfirst_id = {FIRST_ID}\ncount = {COUNT}\nname_prefix = \"r-\"\n\
             first_address = \"{}\"\nprobe = \"icmp\"\n",
            address(0)
        );
        (range, vec![probed(1, lab.node(1).address, "icmp")])
    });
    let ids: Vec<u32> = (0..u32::from(COUNT)).map(|k| FIRST_ID + k).collect();
    for &id in ids.iter().chain([1].iter()) {
        f.expect_event(&format!("up {id}"), UP_WITHIN, |e| e.is("up", id));
    }
    for k in [0, 3, 9] {
        f.assert_probe(FIRST_ID + u32::from(k), "icmp", &address(k).to_string());
    }
    assert_eq!(f.probes()["nodes"]["icmp"], u64::from(COUNT) + 1);

    // How the probes arrive: each node's every interval (the jitter is
    // 5%), its sequence +1 each time; the eleven nodes spread over the
    // interval, not in one burst.
    let captured = capture_probes(&f.lab.node(1).ns.path(), 400, Duration::from_millis(2500))
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(
        captured.len() >= 60,
        "only {} probes in 2.5 s",
        captured.len()
    );
    let median = |mut gaps: Vec<Duration>| {
        gaps.sort();
        gaps.get(gaps.len() / 2).copied().unwrap_or_default()
    };
    for &id in ids.iter().chain([1].iter()) {
        let mine: Vec<_> = captured.iter().filter(|c| c.probe.node_id == id).collect();
        assert!(mine.len() >= 5, "{} probes of node {id}", mine.len());
        let to = if id == 1 {
            f.lab.node(1).address
        } else {
            address(u8::try_from(id - FIRST_ID).unwrap())
        };
        assert!(
            mine.iter().all(|c| c.to == to),
            "node {id} probed elsewhere: {mine:?}"
        );
        assert!(
            mine.windows(2)
                .all(|w| w[1].probe.sequence == w[0].probe.sequence + 1),
            "node {id}'s probe sequences: {:?}",
            mine.iter().map(|c| c.probe.sequence).collect::<Vec<_>>()
        );
        let gap = median(mine.windows(2).map(|w| w[1].at - w[0].at).collect());
        assert!(
            gap >= TIMING.interval * 3 / 4 && gap <= TIMING.interval * 5 / 4,
            "node {id}'s probes {gap:?} apart (median), interval {:?}",
            TIMING.interval
        );
    }
    let spacing = median(captured.windows(2).map(|w| w[1].at - w[0].at).collect());
    assert!(
        spacing >= Duration::from_millis(5),
        "the probes of the 11 nodes come {spacing:?} apart (median): a burst, not spread"
    );
    eprintln!(
        "range: {} probes in 2.5 s, {spacing:?} apart (median of all)",
        captured.len()
    );

    let gone = [3u8, 7];
    let (skip, t0) = (f.lines(), Instant::now());
    for k in gone {
        local(&f.lab, k, false);
    }
    let mut timings = Vec::new();
    for k in gone {
        timings.push(f.expect_down_on_time(FIRST_ID + u32::from(k), skip, t0));
    }
    let (skip, t1) = (f.lines(), Instant::now());
    for k in gone {
        local(&f.lab, k, true);
    }
    for k in gone {
        timings.push(f.expect_up_again(FIRST_ID + u32::from(k), skip, t1));
    }
    f.assert_stays_up(FIRST_ID + 3, STEADY, "its address was back");
    for (k, id) in (0..COUNT).zip(&ids) {
        let expected: &[&str] = if gone.contains(&k) {
            &["up", "down", "up"]
        } else {
            &["up"]
        };
        f.assert_history(*id, expected);
    }
    f.assert_history(1, &["up"]);
    eprintln!("range: down, down, up, up: {timings:?}");
}

/// A node whose address has no route from the monitor (the kernel refuses
/// its echo requests: nothing leaves) never comes up and its failed sends
/// are counted; it holds back no other node's probes.
#[test]
fn an_unroutable_node_does_not_hold_back_the_others() {
    if !root() {
        return;
    }
    // In 198.18.0.0/15 but on no link of the lab: no route in the monitor.
    let nowhere = Ipv4Addr::new(198, 19, 0, 9);
    let f = ProbeLab::start(2, |lab| {
        (
            String::new(),
            vec![
                probed(1, lab.node(1).address, "icmp"),
                probed(2, nowhere, "icmp"),
                probed(3, lab.node(2).address, "icmp"),
            ],
        )
    });
    f.expect_first_up(&[1, 3]);
    f.assert_stays_up(1, STEADY, "another node could not be probed");
    f.assert_stays_up(3, Duration::ZERO, "another node could not be probed");
    assert_eq!(f.node_state(2), "unseen", "{}", f.context());
    f.assert_history(2, &[]);
    let metrics = f.metrics();
    let failed = metric(
        &metrics,
        "hb_probe_failures_total",
        &[("kind", "icmp"), ("reason", "send")],
    );
    assert!(
        failed.is_some_and(|n| n >= 5.0),
        "icmp send failures: {failed:?}\n{metrics}"
    );
    let probes = f.probes();
    assert!(
        probes["failed"].as_u64().is_some_and(|n| n >= 5),
        "{probes}"
    );
    f.assert_history(1, &["up"]);
    f.assert_history(3, &["up"]);
}

/// The agent restarted (SIGTERM, then a new one at once) under a probed
/// node, with a timeout (2 s) long against the restart: the node does not
/// flap; the new agent's probes (a new secret, sequences from 1 again) are
/// recorded, not taken for replays; a reply to the old agent's probe, sent
/// again after the restart, is a bad tag (another start's secret).
#[test]
fn icmp_probing_survives_an_agent_restart() {
    if !root() {
        return;
    }
    let slow = Timing {
        interval: Duration::from_millis(500),
        timeout_multiplier: 4,
        sweep_period: Duration::from_millis(50),
    };
    let mut f = ProbeLab::start_with(2, slow, |lab| {
        (String::new(), vec![probed(1, lab.node(1).address, "icmp")])
    });
    f.expect_first_up(&[1]);
    let (node, attacker) = (f.lab.node(1), f.lab.node(2));
    let old = capture_probes(&node.ns.path(), 1, UP_WITHIN).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(old.len(), 1, "{}", f.context());
    let old = old[0];
    let (accepted, replay) = (f.counter("probe_accepted"), f.counter("probe_replay"));

    let exit = f
        .agent
        .stop(Signal::Term, UP_WITHIN)
        .unwrap_or_else(|err| panic!("{err}{}", f.context()));
    assert!(
        exit.success(),
        "the agent exited with {exit}{}",
        f.context()
    );
    f.agent =
        f.hb.start_agent(&f.lab, &f.config, &f.dir.join("agent-2.log"), READY_WITHIN)
            .unwrap_or_else(|err| panic!("the agent did not restart: {err}"));
    // The datapath's counters outlive the agent (pinned): deltas hold.
    f.wait_until("probe replies recorded again", UP_WITHIN, || {
        f.counter("probe_accepted") >= accepted + 3
    });
    f.assert_stays_up(1, slow.timeout() * 2, "the agent had restarted");
    f.assert_history(1, &["up"]);
    assert_eq!(
        f.counter("probe_replay"),
        replay,
        "the new agent's replies were taken for replays{}",
        f.context()
    );

    // The reply to the old agent's probe, with the new agent's identifier
    // (the tag does not cover it), from the node's address: tagged under
    // the old secret, a bad tag now.
    let identifier = f.probes()["identifier"]
        .as_u64()
        .and_then(|id| u16::try_from(id).ok())
        .unwrap_or_else(|| panic!("no identifier: {}", f.probes()));
    let stale = probe::CapturedProbe { identifier, ..old };
    allow_spoofing(&f.lab, attacker, node.address).unwrap_or_else(|err| panic!("{err}"));
    let bad_tag = f.counter("probe_bad_tag");
    let sent = send_icmp(
        &attacker.ns.path(),
        node.address,
        attacker.monitor_address,
        vec![stale.reply(); 5],
        Duration::from_millis(10),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(sent, 5);
    f.wait_until("the stale replies counted", UP_WITHIN, || {
        f.counter("probe_bad_tag") >= bad_tag + 5
    });
    assert_eq!(f.counter("probe_bad_tag"), bad_tag + 5, "{}", f.context());
    assert_eq!(f.counter("probe_replay"), replay, "{}", f.context());
    eprintln!(
        "restart: identifier {:#06x} -> {identifier:#06x}, no flap",
        old.identifier
    );
}

/// A reload (SIGHUP) with a new configuration re-plans the probes: node 2
/// starts being probed (ICMP), node 3's probe changes from ICMP to TCP,
/// node 1 keeps its ICMP probe. Nobody flaps, the identifier stays, and node
/// 1's replies are not taken for replays (its sequence carries on).
#[test]
fn a_reload_replans_the_probes() {
    if !root() {
        return;
    }
    let nodes = |lab: &Lab, reloaded: bool| {
        let (a1, a2, a3) = (
            lab.node(1).address,
            lab.node(2).address,
            lab.node(3).address,
        );
        vec![
            probed(1, a1, "icmp"),
            if reloaded {
                probed(2, a2, "icmp")
            } else {
                ProbedNode::new(2, a2)
            },
            probed(
                3,
                a3,
                &if reloaded {
                    format!("tcp:{TCP_PORT}")
                } else {
                    "icmp".to_owned()
                },
            ),
        ]
    };
    let f = ProbeLab::start(3, |lab| (String::new(), nodes(lab, false)));
    f.expect_first_up(&[1, 3]);
    assert_eq!(f.node_state(2), "unseen");
    let before = f.probes();
    assert_eq!(before["nodes"]["icmp"], 2, "{before}");
    let node3 = f.lab.node(3);
    let service = TcpService::start(
        &node3.ns.path(),
        SocketAddr::new(node3.address.into(), TCP_PORT),
        SERVER_LIFETIME,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let replay = f.counter("probe_replay");

    probe::write_config(&f.dir, &f.lab, TIMING, "", &nodes(&f.lab, true))
        .unwrap_or_else(|err| panic!("{err}"));
    let pid = libc::pid_t::try_from(f.agent.pid()).expect("a pid");
    // SAFETY: kill has no memory-safety preconditions; the pid is our own
    // unreaped child, the agent.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "SIGHUP");
    f.expect_event("up 2 after the reload", UP_WITHIN, |e| e.is("up", 2));
    f.wait_until("node 3 probed over TCP", UP_WITHIN, || {
        f.node(3)["probe"]["kind"] == "tcp" && service.accepted() >= 2
    });
    f.assert_probe(3, "tcp", &format!("{}:{TCP_PORT}", node3.address));
    let after = f.probes();
    assert_eq!(after["identifier"], before["identifier"], "{after}");
    assert_eq!(after["nodes"]["icmp"], 2, "{after}");
    assert_eq!(after["nodes"]["tcp"], 1, "{after}");
    for id in [1, 2, 3] {
        f.assert_stays_up(
            id,
            if id == 1 { STEADY } else { Duration::ZERO },
            "reloaded",
        );
        f.assert_history(id, &["up"]);
    }
    assert_eq!(
        f.counter("probe_replay"),
        replay,
        "replies taken for replays after the reload{}",
        f.context()
    );
}

/// TCP and HTTP probes of an IPv6 node (the URL's `{address}` bracketed):
/// node 1 `tcp:PORT`, node 2 `http://{address}:PORT/healthz`, node 3 ICMPv6,
/// all the same host. Both servers stopped: nodes 1 and 2 down, node 3 up.
#[test]
fn tcp_and_http_probes_over_ipv6() {
    if !root() {
        return;
    }
    let f = ProbeLab::start(1, |lab| {
        let v6 = add_ipv6(lab, 1).unwrap_or_else(|err| panic!("{err}"));
        (
            String::new(),
            vec![
                probed(1, v6.node, &format!("tcp:{TCP_PORT}")),
                probed(
                    2,
                    v6.node,
                    &format!("http://{{address}}:{HTTP_PORT}/healthz"),
                ),
                probed(3, v6.node, "icmp"),
            ],
        )
    });
    let node = f.lab.node(1);
    let v6: IpAddr = "fd00:0:0:1::2".parse().expect("an address");
    let tcp_at = SocketAddr::new(v6, TCP_PORT);
    let http_at = SocketAddr::new(v6, HTTP_PORT);
    let service = TcpService::start(&node.ns.path(), tcp_at, SERVER_LIFETIME)
        .unwrap_or_else(|err| panic!("{err}"));
    let server = HealthServer::start(
        &node.ns.path(),
        http_at,
        Answer::new(200, "ok"),
        SERVER_LIFETIME,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    f.expect_first_up(&[1, 2, 3]);
    f.assert_probe(1, "tcp", "[fd00:0:0:1::2]:8022");
    f.assert_probe(2, "http", "http://[fd00:0:0:1::2]:8080/healthz");
    f.assert_probe(3, "icmp", "fd00:0:0:1::2");
    f.assert_stays_up(1, STEADY, "its listener listened");
    f.assert_stays_up(2, Duration::ZERO, "its server answered");

    let (skip, t0) = (f.lines(), Instant::now());
    service.stop();
    server.stop();
    let tcp = f.expect_down_on_time(1, skip, t0);
    let http = f.expect_down_on_time(2, skip, t0);
    assert_eq!(f.node_state(3), "up", "{}", f.context());
    f.assert_history(1, &["up", "down"]);
    f.assert_history(2, &["up", "down"]);
    f.assert_history(3, &["up"]);
    eprintln!("ipv6: tcp down {tcp:?}, http down {http:?} after their servers stopped");
}

/// `probe_confirm = true` (and `probe_timeout = 150ms`) against two lost
/// probes in a row (nftables drops exactly those two of node 1's echo
/// requests, by their probe sequence): before the node's down deadline one
/// retry probe goes out, which the node answers, so it is never convicted
/// (without it, the next regular probe's reply races the deadline).
#[test]
fn confirmation_rescues_a_node_after_two_lost_probes() {
    if !root() {
        return;
    }
    let f = ProbeLab::start(1, |lab| {
        let node = probed(1, lab.node(1).address, "icmp")
            .set("probe_confirm", "true")
            .set("probe_timeout", "\"150ms\"");
        (String::new(), vec![node])
    });
    f.expect_first_up(&[1]);
    let node = f.lab.node(1);
    let now = capture_probes(&node.ns.path(), 1, UP_WITHIN).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(now.len(), 1, "{}", f.context());
    // About two seconds ahead.
    let lost = now[0].probe.sequence + 10;
    drop_probes(&node.ns, 1, &[lost, lost + 1]).unwrap_or_else(|err| panic!("{err}"));
    let retries = f.probes()["retries"].as_u64().unwrap_or(0);
    let captured = capture_probes(&node.ns.path(), 30, Duration::from_secs(4))
        .unwrap_or_else(|err| panic!("{err}"));
    let at = |sequence: u64| captured.iter().find(|c| c.probe.sequence == sequence);
    let sequences: Vec<u64> = captured.iter().map(|c| c.probe.sequence).collect();
    let (Some(before), Some(retry), Some(after)) = (at(lost - 1), at(lost + 2), at(lost + 3))
    else {
        panic!(
            "probes {lost} - 1, + 2, + 3 not all captured: {sequences:?}{}",
            f.context()
        );
    };
    assert!(
        at(lost).is_none() && at(lost + 1).is_none(),
        "the lost probes arrived: {sequences:?}"
    );
    assert_eq!(
        dropped_probes(&node.ns).unwrap_or_else(|err| panic!("{err}")),
        2
    );
    assert_eq!(
        f.probes()["retries"].as_u64().unwrap_or(0) - retries,
        1,
        "retries{}",
        f.context()
    );
    // The retry went out before the deadline (600 ms after the last
    // answered probe), the regular probes carried on after it.
    let (silence, next) = (retry.at - before.at, after.at - retry.at);
    assert!(
        silence < TIMING.timeout(),
        "the retry came {silence:?} after the last answered probe{}",
        f.context()
    );
    f.assert_stays_up(1, STEADY, "two of its probes were lost");
    f.assert_history(1, &["up"]);
    eprintln!(
        "confirm: two probes lost, the retry {silence:?} after the last answered one, the next \
         regular probe {next:?} after it; no down"
    );
}

/// TCP and HTTP probes need no XDP program: on the socket datapath they
/// bring nodes up and down the same way. ICMP does need it: an agent on
/// the socket datapath (even when only its command line says so) refuses
/// a configuration with an ICMP probe, saying why.
#[test]
fn tcp_and_http_probes_on_the_socket_datapath_and_icmp_refused_there() {
    if !root() {
        return;
    }
    let f = ProbeLab::start_on(1, "socket", TIMING, |lab| {
        let address = lab.node(1).address;
        (
            String::new(),
            vec![
                probed(1, address, &format!("tcp:{TCP_PORT}")),
                probed(
                    2,
                    address,
                    &format!("http://{{address}}:{HTTP_PORT}/healthz"),
                ),
            ],
        )
    });
    let node = f.lab.node(1);
    let tcp_at = SocketAddr::new(node.address.into(), TCP_PORT);
    let service = TcpService::start(&node.ns.path(), tcp_at, SERVER_LIFETIME)
        .unwrap_or_else(|err| panic!("{err}"));
    let server = HealthServer::start(
        &node.ns.path(),
        SocketAddr::new(node.address.into(), HTTP_PORT),
        Answer::new(200, "ok"),
        SERVER_LIFETIME,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    f.expect_first_up(&[1, 2]);
    assert_eq!(
        f.lab
            .monitor_xdp(&node.monitor_interface)
            .unwrap_or_else(|err| panic!("{err}")),
        None,
        "an XDP program on the socket datapath"
    );
    f.assert_stays_up(1, STEADY, "its listener listened");
    let (skip, t0) = (f.lines(), Instant::now());
    service.stop();
    server.set(Answer::new(500, "ok"));
    let tcp = f.expect_down_on_time(1, skip, t0);
    let http = f.expect_down_on_time(2, skip, t0);
    let (skip, t1) = (f.lines(), Instant::now());
    let service = TcpService::start(&node.ns.path(), tcp_at, SERVER_LIFETIME)
        .unwrap_or_else(|err| panic!("{err}"));
    server.set(Answer::new(200, "ok"));
    f.expect_up_again(1, skip, t1);
    f.expect_up_again(2, skip, t1);
    assert!(service.accepted() >= 2);
    f.assert_history(1, &["up", "down", "up"]);
    f.assert_history(2, &["up", "down", "up"]);
    eprintln!("socket datapath: tcp down {tcp:?}, http down {http:?}");

    // The same lab's configuration with an ICMP node, the file saying xdp,
    // the command line socket: refused.
    let dir = TempDir::new("hb-probe").unwrap_or_else(|err| panic!("{err}"));
    let config = probe::write_config(&dir, &f.lab, TIMING, "", &[probed(1, node.address, "icmp")])
        .unwrap_or_else(|err| panic!("{err}"));
    let log = dir.join("agent.log");
    let mut agent =
        f.hb.spawn_in(
            &f.lab.monitor,
            "agent (socket, icmp)",
            [
                "agent".as_ref(),
                "--config".as_ref(),
                config.path.as_os_str(),
                "--datapath".as_ref(),
                "socket".as_ref(),
            ],
            &log,
        )
        .unwrap_or_else(|err| panic!("{err}"));
    let exit = agent
        .wait_timeout(READY_WITHIN)
        .unwrap_or_else(|err| panic!("{err}"));
    let output = agent.log_tail(20);
    let exit = exit.unwrap_or_else(|| {
        panic!("the agent runs an ICMP probe on the socket datapath:\n{output}")
    });
    assert!(!exit.success(), "{exit}: {output}");
    assert!(
        output.contains("needs datapath = \"xdp\""),
        "the refusal does not say why:\n{output}"
    );
}

/// A probed range over IPv6: node `first_id + k` at `first_address + k`,
/// the addresses on the node's link (IPv6 neighbour discovery answers only
/// for addresses of the link itself); the one taken away goes down, alone.
#[test]
fn icmp_range_over_ipv6() {
    if !root() {
        return;
    }
    const FIRST_ID: u32 = 5;
    const COUNT: u16 = 4;
    // fd00:0:0:1::fffe + k crosses a 16-bit group: fd00:0:0:1::1:1 at k = 3.
    let address = |k: u16| {
        let first = u128::from(Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 0xfffe));
        Ipv6Addr::from(first + u128::from(k))
    };
    let set = |lab: &Lab, k: u16, add: bool| {
        let node = lab.node(1);
        let cidr = format!("{}/128", address(k));
        let mut args = vec!["-6", "addr", if add { "add" } else { "del" }, &cidr, "dev"];
        args.push(&node.interface);
        if add {
            args.push("nodad");
        }
        node.ns.ip(args).unwrap_or_else(|err| panic!("{err}"));
    };
    let f = ProbeLab::start(1, |lab| {
        add_ipv6(lab, 1).unwrap_or_else(|err| panic!("{err}"));
        for k in 0..COUNT {
            set(lab, k, true);
        }
        let range = format!(
            "[[node_ranges]]\nfirst_id = {FIRST_ID}\ncount = {COUNT}\nname_prefix = \"r-\"\n\
             first_address = \"{}\"\nprobe = \"icmp\"\n",
            address(0)
        );
        (range, Vec::new())
    });
    let ids: Vec<u32> = (0..u32::from(COUNT)).map(|k| FIRST_ID + k).collect();
    for &id in &ids {
        f.expect_event(&format!("up {id}"), UP_WITHIN, |e| e.is("up", id));
    }
    for k in 0..COUNT {
        f.assert_probe(FIRST_ID + u32::from(k), "icmp", &address(k).to_string());
    }
    let (skip, t0) = (f.lines(), Instant::now());
    set(&f.lab, 3, false);
    let detected = f.expect_down_on_time(FIRST_ID + 3, skip, t0);
    let (skip, t1) = (f.lines(), Instant::now());
    set(&f.lab, 3, true);
    let back = f.expect_up_again(FIRST_ID + 3, skip, t1);
    f.assert_stays_up(FIRST_ID + 3, STEADY, "its address was back");
    for (k, id) in (0..COUNT).zip(&ids) {
        let expected: &[&str] = if k == 3 {
            &["up", "down", "up"]
        } else {
            &["up"]
        };
        f.assert_history(*id, expected);
    }
    eprintln!(
        "range (IPv6): {} down {detected:?}, up {back:?}",
        address(3)
    );
}

/// A node's own `interval` is its probe interval and its detector's: probed
/// every second (the defaults say 200 ms), it never flaps, and once it stops
/// answering it is down after three seconds of silence, not 600 ms.
#[test]
fn a_node_interval_paces_its_probes_and_its_timeout() {
    if !root() {
        return;
    }
    let slow = Duration::from_secs(1);
    let f = ProbeLab::start(2, |lab| {
        (
            String::new(),
            vec![
                probed(1, lab.node(1).address, "icmp").set("interval", "\"1s\""),
                probed(2, lab.node(2).address, "icmp"),
            ],
        )
    });
    f.expect_first_up(&[1, 2]);
    let node = f.lab.node(1);
    let captured =
        capture_probes(&node.ns.path(), 4, slow * 5).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(captured.len(), 4, "{captured:?}");
    for pair in captured.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= slow * 3 / 4 && gap <= slow * 5 / 4,
            "node 1's probes {gap:?} apart, its interval {slow:?}"
        );
    }
    f.assert_stays_up(1, Duration::ZERO, "probed every second");
    f.assert_history(1, &["up"]);

    let (skip, t0) = (f.lines(), Instant::now());
    ignore_echo(&node.ns, false, true).unwrap_or_else(|err| panic!("{err}"));
    let timeout = slow * TIMING.timeout_multiplier;
    let limit = timeout + TIMING.sweep_period + MARGIN;
    let (down, seen) = f.expect_event_after(skip, "down 1", limit, |e| e.is("down", 1));
    let silent = down.since_last_heartbeat_ms.unwrap_or(0);
    assert!(
        silent >= u64::try_from(timeout.as_millis()).unwrap(),
        "down after {silent} ms of silence, its timeout {timeout:?}{}",
        f.context()
    );
    // Not earlier than the slow node's timeout allows (less the one interval
    // its last answer may precede the change).
    let detected = seen - t0;
    assert!(
        detected >= timeout - slow,
        "down {detected:?} after it stopped answering{}",
        f.context()
    );
    f.assert_history(1, &["up", "down"]);
    f.assert_history(2, &["up"]);
    eprintln!("interval 1s: down {detected:?} after it stopped answering, {silent} ms silent");
}

/// A hybrid node under the phi detector: its sender beats every 100 ms, its
/// probe goes every second. Phi judges a probed node by its configured
/// interval, so when the sender hangs the node stays up on its probe alone
/// (the sender's 100 ms rhythm would convict it within a fraction of a
/// second); once the probe is not answered either, it goes down.
#[test]
fn phi_keeps_a_hybrid_node_up_on_its_slower_probe() {
    if !root() {
        return;
    }
    let fast = Duration::from_millis(100);
    let f = ProbeLab::start(1, |lab| {
        (
            "[detector]\nkind = \"phi\"\nphi_threshold = 8.0\nmin_std_dev = \"20ms\"".to_owned(),
            vec![probed(1, lab.node(1).address, "icmp").set("interval", "\"1s\"")],
        )
    });
    let node = f.lab.node(1);
    let mut sender = Sender::start(
        &f.hb,
        &f.lab,
        1,
        fast,
        &Sched::default(),
        &f.dir.join("sender-1.log"),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    f.expect_first_up(&[1]);
    f.assert_stays_up(1, STEADY, "its sender beat and its probe answered");
    sender.freeze().unwrap_or_else(|err| panic!("{err}"));
    f.assert_stays_up(
        1,
        Duration::from_secs(4),
        "its sender hung, its probe answered",
    );
    assert_eq!(f.refreshed_by(1).as_deref(), Some("probe"));

    let (skip, t0) = (f.lines(), Instant::now());
    ignore_echo(&node.ns, false, true).unwrap_or_else(|err| panic!("{err}"));
    let (down, seen) =
        f.expect_event_after(skip, "down 1", Duration::from_secs(15), |e| e.is("down", 1));
    f.assert_history(1, &["up", "down"]);
    eprintln!(
        "phi hybrid: down {:?} after the probe stopped being answered ({down:?})",
        seen - t0
    );
}

/// No agent for longer than the timeout (600 ms): nothing probed the nodes
/// meanwhile, so nodes that answer again at once are not convicted for that
/// silence, whether the gap is short of the stall threshold (600 ms, plus
/// the agent's start) or past it (1.5 s); a node whose link went down
/// during the gap is convicted a timeout after the new agent's start.
#[test]
fn a_restart_longer_than_the_timeout_convicts_only_the_dead() {
    if !root() {
        return;
    }
    let mut f = ProbeLab::start(2, |lab| {
        let nodes = (1..=2)
            .map(|i| probed(i.into(), lab.node(i).address, "icmp"))
            .collect();
        (String::new(), nodes)
    });
    f.expect_first_up(&[1, 2]);
    let restart = |f: &mut ProbeLab, gap: Duration, during: &dyn Fn(&ProbeLab), log: &str| {
        let exit = f
            .agent
            .stop(Signal::Term, UP_WITHIN)
            .unwrap_or_else(|err| panic!("{err}{}", f.context()));
        assert!(
            exit.success(),
            "the agent exited with {exit}{}",
            f.context()
        );
        let stopped = Instant::now();
        during(f);
        sleep(gap);
        f.agent =
            f.hb.start_agent(&f.lab, &f.config, &f.dir.join(log), READY_WITHIN)
                .unwrap_or_else(|err| panic!("the agent did not restart: {err}"));
        (stopped.elapsed(), Instant::now())
    };

    let (away, _) = restart(&mut f, Duration::from_millis(600), &|_| {}, "agent-2.log");
    for id in [1, 2] {
        f.assert_stays_up(id, STEADY, &format!("the agent had been away {away:?}"));
        f.assert_history(id, &["up"]);
    }

    let skip = f.lines();
    let take_down = |f: &ProbeLab| {
        let node = f.lab.node(2);
        set_link(&node.ns, &node.interface, false).unwrap_or_else(|err| panic!("{err}"));
    };
    let (away, started) = restart(
        &mut f,
        Duration::from_millis(1500),
        &take_down,
        "agent-3.log",
    );
    let detected = f.expect_down_on_time(2, skip, started);
    f.assert_stays_up(1, STEADY, &format!("the agent had been away {away:?}"));
    f.assert_history(1, &["up"]);
    f.assert_history(2, &["up", "down"]);
    eprintln!("restart after {away:?}: the dead node down {detected:?} after the new start");
}
