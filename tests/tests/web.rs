//! The live web view (issue 14) in a real headless Chromium (Debian's
//! `chromium`, installed by `cargo xtask setup`), run inside the lab's
//! monitor namespace where the agent's HTTP API listens on 127.0.0.1:7980
//! ([`hb_tests::browser::Browser`]). Root only; needs `$HB_BIN` (and
//! `hb-tools` beside it, or `$HB_TOOLS_BIN`).
//!
//! - the demo's scenario: three nodes up; one crashed (SIGKILL), shown down
//!   within the timeout plus a margin, restarted, shown up, both
//!   transitions in the feed in order; the agent killed, the page says
//!   "disconnected", the agent restarted, the page reconnects by itself and
//!   follows the new agent's stream;
//! - 100,000 simulated nodes (`hb-tools loadgen`): the aggregated grid, a
//!   crash of 1% in the counts and on the canvas, and the page's own time
//!   per update (median under 100 ms, printed);
//! - a token: the page asks for it (again after a wrong one), works with
//!   it, and the API answers 401 without it.
//!
//! Screenshots go to `target/web-view/` for a person to look at. The tests
//! run one at a time (two cores; the 100k one keeps both busy).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use hb_tests::{
    ChildGuard, HEARTBEAT_PORT, Hb, Lab, Signal, TempDir, TestConfig, Timing,
    browser::{self, Browser},
    config::toml_string,
    is_root,
    process::workspace_dir,
    unique_prefix,
};
use serde_json::Value;

/// The demo's timing: a heartbeat every 500 ms, down after 1.5 s.
const DEMO: Timing = Timing {
    interval: Duration::from_millis(500),
    timeout_multiplier: 3,
    sweep_period: Duration::from_millis(50),
};
/// Where the page is, inside the monitor's namespace (the default `[http]
/// listen`).
const URL: &str = "http://127.0.0.1:7980/";
/// The browser's window.
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;
/// Slack for the page's polls and frames, and a loaded machine.
const MARGIN: Duration = Duration::from_secs(3);
const AGENT_READY: Duration = Duration::from_secs(30);
const PAGE_LOAD: Duration = Duration::from_secs(20);

/// One browser lab at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The lock, or `None` (skip) when not root.
fn exclusive() -> Option<MutexGuard<'static, ()>> {
    if !is_root() {
        eprintln!("skipped: needs root (run `cargo xtask test` as root)");
        return None;
    }
    assert!(
        browser::available(),
        "`{}` is not installed: run `cargo xtask setup`",
        browser::CHROMIUM
    );
    Some(ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner))
}

fn shot(name: &str) -> PathBuf {
    workspace_dir().join("target/web-view").join(name)
}

/// The expression reading the big count of `state` as a number.
fn count(state: &str) -> String {
    format!("Number(document.getElementById('count-{state}').textContent.replace(/[^0-9]/g, ''))")
}

/// Whether the "not up" list shows `node` in `state`.
fn listed(node: &str, state: &str) -> String {
    format!("!!document.querySelector('#notup li[data-node=\"{node}\"][data-state=\"{state}\"]')")
}

fn connected() -> &'static str {
    "window.hbStats && hbStats.connected"
}

/// A started process, or the test fails with why.
fn started<T>(what: &str, result: hb_tests::Result<T>) -> T {
    result.unwrap_or_else(|err| panic!("{what}: {err}"))
}

struct DemoLab {
    senders: Vec<ChildGuard>,
    agent: ChildGuard,
    page: Browser,
    config: TestConfig,
    hb: Hb,
    dir: TempDir,
    lab: Lab,
}

impl DemoLab {
    /// Three nodes sending to an agent (XDP), and the page open on it.
    fn start(extra_config: &str) -> Self {
        let hb = Hb::from_env();
        let lab = started("building the lab", Lab::build(&unique_prefix(), 3));
        let dir = started("a directory", TempDir::new("hb-web"));
        let config = started("the config", TestConfig::write(&dir, &lab, DEMO));
        if !extra_config.is_empty() {
            let text = fs::read_to_string(&config.path).unwrap();
            fs::write(&config.path, format!("{text}\n{extra_config}")).unwrap();
        }
        let agent = started(
            "the agent",
            hb.start_agent(&lab, &config, &dir.join("agent.log"), AGENT_READY),
        );
        let senders = (1..=3)
            .map(|i| {
                let log = dir.join(&format!("sender-{i}.log"));
                started("a sender", hb.start_sender(&lab, i, DEMO.interval, &log))
            })
            .collect();
        let mut page = started(
            "chromium",
            Browser::start(Some(&lab.monitor), WIDTH, HEIGHT, &dir.join("chromium.log")),
        );
        started("the page", page.open(URL, PAGE_LOAD));
        Self {
            senders,
            agent,
            page,
            config,
            hb,
            dir,
            lab,
        }
    }

    /// Waits for `expression` in the page; on failure, the agent's log too.
    fn wait(&mut self, what: &str, expression: &str, within: Duration) -> Value {
        self.page
            .wait_for(what, expression, within)
            .unwrap_or_else(|err| {
                panic!("{err}\n--- agent output ---\n{}", self.agent.log_tail(30))
            })
    }

    fn eval(&mut self, expression: &str) -> Value {
        self.page
            .eval(expression)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    fn restart_sender(&mut self, index: u8) {
        let log = self.dir.join(&format!("sender-{index}-again.log"));
        self.senders[usize::from(index) - 1] = started(
            "a sender",
            self.hb.start_sender(&self.lab, index, DEMO.interval, &log),
        );
    }
}

#[test]
fn the_page_follows_a_crash_a_recovery_and_an_agent_restart() {
    let Some(_one) = exclusive() else { return };
    let mut lab = DemoLab::start("");
    lab.wait(
        "the page to show three nodes up",
        &format!("{} && {} === 3", connected(), count("up")),
        PAGE_LOAD,
    );

    started("SIGKILL", lab.senders[1].signal(Signal::Kill));
    let crashed = Instant::now();
    let timeout = DEMO.timeout();
    lab.wait(
        "the page to show node-2 down",
        &format!(
            "{} === 1 && {} === 2 && {}",
            count("down"),
            count("up"),
            listed("node-2", "down")
        ),
        timeout + DEMO.sweep_period + MARGIN,
    );
    let shown = crashed.elapsed();
    eprintln!(
        "web: the page showed node-2 down {:.2} s after its sender was killed (timeout {:.1} s, \
         last heartbeat up to {:.1} s before the kill)",
        shown.as_secs_f64(),
        timeout.as_secs_f64(),
        DEMO.interval.as_secs_f64()
    );
    assert!(
        shown >= timeout - DEMO.interval,
        "down after {shown:?}, before the timeout could pass"
    );
    // The node's detail, from the list; the plots catch up at their next
    // poll: then the picture of a crash.
    lab.eval("document.querySelector('#notup li[data-node=\"node-2\"] button').click(); true");
    lab.wait(
        "node-2's detail",
        "document.getElementById('detail-title').textContent === 'node-2 (id 2)' && \
         !!document.querySelector('#detail-body .st[data-state=\"down\"]') && \
         !!document.querySelector('#detail-body li[data-event=\"down\"]')",
        MARGIN,
    );
    lab.wait(
        "the detection plot to count the down",
        "document.getElementById('detection-summary').textContent.startsWith('1 down ')",
        MARGIN,
    );
    started("the screenshot", lab.page.screenshot(&shot("demo.png")));

    lab.restart_sender(2);
    lab.wait(
        "the page to show node-2 up again",
        &format!(
            "{} === 3 && {} === 0 && !{}",
            count("up"),
            count("down"),
            listed("node-2", "down")
        ),
        Duration::from_secs(2) + MARGIN,
    );
    // Found by name.
    lab.eval(
        "document.getElementById('search-input').value = 'node-3';\
         document.querySelector('#search button').click(); true",
    );
    lab.wait(
        "node-3's detail",
        "document.getElementById('detail-title').textContent === 'node-3 (id 3)' && \
         !!document.querySelector('#detail-body .st[data-state=\"up\"]')",
        MARGIN,
    );
    let feed = lab.eval(
        "[...document.querySelectorAll('#feed li[data-node=\"node-2\"]')]\
         .map(li => [li.dataset.event, Number(li.dataset.cursor), li.textContent])",
    );
    let rows = feed.as_array().expect("the feed's rows");
    let event = |i: usize| rows.get(i).map_or("", |row| row[0].as_str().unwrap_or(""));
    let cursor = |i: usize| rows.get(i).map_or(0, |row| row[1].as_u64().unwrap_or(0));
    // Newest first: the recovery, then the crash (suspect before it).
    assert_eq!(
        (event(0), event(1)),
        ("up", "down"),
        "the feed for node-2: {feed}"
    );
    assert!(cursor(0) > cursor(1), "{feed}");
    assert!(
        rows[0][2].as_str().unwrap_or("").contains("down → up"),
        "{feed}"
    );

    // The agent dies: the page says so, and reconnects to the next one.
    started("SIGKILL", lab.agent.signal(Signal::Kill));
    lab.wait(
        "the page to say disconnected",
        "document.getElementById('conn').dataset.state === 'disconnected' && !hbStats.connected",
        Duration::from_secs(5) + MARGIN,
    );
    let loads = lab.eval("hbStats.fleetLoads").as_u64().unwrap_or(0);
    lab.agent = started(
        "the agent again",
        lab.hb.start_agent(
            &lab.lab,
            &lab.config,
            &lab.dir.join("agent-2.log"),
            AGENT_READY,
        ),
    );
    lab.wait(
        "the page to reconnect to the restarted agent",
        &format!(
            "{} && hbStats.fleetLoads > {loads} && {} === 3",
            connected(),
            count("up")
        ),
        Duration::from_secs(10) + MARGIN,
    );
    // The new agent's stream (its cursors start again from 1) is followed.
    started("SIGKILL", lab.senders[2].signal(Signal::Kill));
    lab.wait(
        "the page to show node-3 down, from the new agent",
        &format!("{} === 1 && {}", count("down"), listed("node-3", "down")),
        timeout + DEMO.sweep_period + MARGIN,
    );
    let stats = lab.eval("JSON.stringify(hbStats)");
    eprintln!("web: demo page stats {}", stats.as_str().unwrap_or(""));
    let console = lab.page.console();
    assert!(
        !console.iter().any(|line| line.starts_with("uncaught")),
        "the page threw: {console:#?}"
    );
}

/// The fleet lab: 100,000 nodes from the load generator in one namespace
/// (`HB_WEB_FLEET=1000000` runs it with a million, by hand: it keeps two
/// cores busy for a minute).
fn fleet_size() -> u32 {
    std::env::var("HB_WEB_FLEET")
        .ok()
        .and_then(|nodes| nodes.parse().ok())
        .unwrap_or(100_000)
}

/// The fleet's heartbeat interval, s: 1 s up to 200,000 nodes, longer for
/// more, so that the heartbeats (at most 200,000 a second) leave two cores
/// room for the agent and the browser.
fn fleet_interval(nodes: u32) -> u32 {
    (nodes / 200_000).max(1)
}

fn fleet_config(lab: &Lab, dir: &TempDir, nodes: u32) -> PathBuf {
    let path = |name: &str| toml_string(&dir.join(name).to_string_lossy());
    let text = format!(
        "interfaces = [{interface}]\n\
         port = {HEARTBEAT_PORT}\n\
         datapath = \"xdp\"\n\
         instance = {instance}\n\
         max_nodes = {max_nodes}\n\
         status_socket = {socket}\n\
         state_file = {state}\n\
         \n\
         [defaults]\n\
         interval = \"{interval}s\"\n\
         timeout_multiplier = 3\n\
         sweep_period = \"100ms\"\n\
         \n\
         # 1% of the fleet crashing at once is no partition.\n\
         [brake]\n\
         share = 0.9\n\
         \n\
         [[node_ranges]]\n\
         first_id = 1\n\
         count = {nodes}\n\
         name_prefix = \"n\"\n\
         interval = \"{interval}s\"\n",
        interface = toml_string(&lab.node(1).monitor_interface),
        instance = toml_string(lab.instance()),
        max_nodes = nodes + 1,
        interval = fleet_interval(nodes),
        socket = path("hb.sock"),
        state = path("state"),
    );
    let config = dir.join("hb.toml");
    fs::write(&config, text).unwrap();
    config
}

#[test]
fn a_fleet_of_100k_nodes_is_aggregated_and_updates_fast() {
    let Some(_one) = exclusive() else { return };
    let hb = Hb::from_env();
    let tools = hb.tools();
    let lab = started("building the lab", Lab::build(&unique_prefix(), 1));
    let dir = started("a directory", TempDir::new("hb-web"));
    let fleet = fleet_size();
    let config = fleet_config(&lab, &dir, fleet);
    let socket = dir.join("hb.sock");
    let mut agent = started(
        "the agent",
        hb.spawn_in(
            &lab.monitor,
            "agent",
            ["agent".as_ref(), "--config".as_ref(), config.as_os_str()],
            &dir.join("agent.log"),
        ),
    );
    started(
        "the agent to answer",
        hb.wait_until_ready(&socket, &mut agent, AGENT_READY),
    );
    let mut page = started(
        "chromium",
        Browser::start(Some(&lab.monitor), WIDTH, HEIGHT, &dir.join("chromium.log")),
    );
    started("the page", page.open(URL, PAGE_LOAD));
    let wait = |page: &mut Browser, what: &str, expression: &str, within: Duration| {
        page.wait_for(what, expression, within)
            .unwrap_or_else(|err| {
                let stats = page.eval("JSON.stringify(hbStats)").unwrap_or_default();
                panic!(
                    "{err}\nthe page's stats: {stats}\n--- agent ---\n{}",
                    agent.log_tail(30)
                )
            })
    };
    wait(
        &mut page,
        "the page to load the fleet's unseen nodes",
        &format!(
            "{} && hbStats.nodes === {fleet} && {} === {fleet}",
            connected(),
            count("unseen")
        ),
        PAGE_LOAD,
    );

    // Every node joins (as many transitions at once: the page lags, resumes
    // or reloads the snapshot), then 1% crash 10 s into the load (later
    // for a larger fleet, whose joining takes the agent longer).
    let target = format!("{}:{HEARTBEAT_PORT}", lab.node(1).monitor_address);
    let interval = fleet_interval(fleet);
    let stop_after = (4 * interval).max(10);
    let load_args = [
        "loadgen",
        "--nodes",
        &fleet.to_string(),
        "--to",
        &target,
        "--interval",
        &format!("{interval}s"),
        "--stop-fraction",
        "0.01",
        "--stop-after",
        &format!("{stop_after}s"),
        "--duration",
        "90s",
    ];
    let load_started = Instant::now();
    let _load = started(
        "the load generator",
        tools.spawn_in(
            &lab.node(1).ns,
            "loadgen",
            load_args,
            &dir.join("loadgen.log"),
        ),
    );
    wait(
        &mut page,
        "the page to show every node up",
        &format!("{} === {fleet}", count("up")),
        Duration::from_secs(u64::from(stop_after) - 2) + MARGIN,
    );
    let crashed = fleet / 100;
    let convicted =
        Duration::from_secs(u64::from(stop_after + 3 * interval)) + Duration::from_millis(100);
    wait(
        &mut page,
        "the page to show 1% of the nodes down",
        &format!(
            "{} === {crashed} && hbStats.counts.down === {crashed} && {} === {}",
            count("down"),
            count("up"),
            fleet - crashed
        ),
        convicted.saturating_sub(load_started.elapsed()) + MARGIN * 2,
    );
    eprintln!(
        "web: the page counted {crashed} down {:.1} s into the load (stopped at {stop_after} s, \
         timeout {} s)",
        load_started.elapsed().as_secs_f64(),
        3 * interval
    );
    // The canvas shows what the model says: as many red blocks as blocks
    // whose worst node is down.
    let grid = started(
        "reading the canvas",
        page.eval(
            "(() => {\
               const canvas = document.getElementById('grid');\
               const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;\
               let red = 0;\
               for (let i = 0; i < pixels.length; i += 4)\
                 if (pixels[i] === 229 && pixels[i + 1] === 72 && pixels[i + 2] === 77) red++;\
               const cell = hbGrid.size * hbGrid.dpr;\
               return { red: red / (cell * cell), down: hbGrid.blocksByWorst().down || 0,\
                        mode: hbGrid.mode, perBlock: hbGrid.perBlock, blocks: hbGrid.blocks };\
             })()",
        ),
    );
    eprintln!("web: fleet grid {grid}");
    assert_eq!(grid["mode"], "blocks", "{grid}");
    assert!(grid["perBlock"].as_u64().unwrap_or(0) >= 2, "{grid}");
    let down_blocks = grid["down"].as_u64().unwrap_or(0);
    assert!(down_blocks > 0, "{grid}");
    assert_eq!(grid["red"].as_f64(), Some(down_blocks as f64), "{grid}");

    let stats = started("reading hbStats", page.eval("JSON.stringify(hbStats)"));
    let stats: Value = serde_json::from_str(stats.as_str().unwrap_or("{}")).unwrap();
    eprintln!("web: fleet page stats {stats}");
    let median = stats["medianMs"].as_f64().expect("a median");
    eprintln!(
        "web: the page's time per update at {fleet} nodes: median {median:.2} ms, p95 {:.2} ms, \
         max {:.2} ms over {} updates ({} transitions); the last snapshot took {:.0} ms to load, \
         {:.0} ms of it in the page",
        stats["p95Ms"].as_f64().unwrap_or(f64::NAN),
        stats["maxMs"].as_f64().unwrap_or(f64::NAN),
        stats["updates"],
        stats["events"],
        stats["fleetMs"].as_f64().unwrap_or(f64::NAN),
        stats["fleetApplyMs"].as_f64().unwrap_or(f64::NAN),
    );
    assert!(median < 100.0, "median {median} ms per update: {stats}");
    assert!(stats["updates"].as_u64().unwrap_or(0) >= 2, "{stats}");
    let name = match fleet {
        100_000 => "fleet-100k.png".to_owned(),
        other => format!("fleet-{other}.png"),
    };
    started("the screenshot", page.screenshot(&shot(&name)));
    let console = page.console();
    assert!(
        !console.iter().any(|line| line.starts_with("uncaught")),
        "the page threw: {console:#?}"
    );
}

#[test]
fn with_a_token_the_page_asks_for_it_and_the_api_wants_it() {
    let Some(_one) = exclusive() else { return };
    const TOKEN: &str = "dGhlIGxpdmUgdmlldydzIHRlc3QgdG9rZW4sIDMyIGJ5dGVz";
    let dir = started("a directory", TempDir::new("hb-web-token"));
    let token_file = dir.join("http.token");
    fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).unwrap();
    let mut lab = DemoLab::start(&format!(
        "[http]\nlisten = \"127.0.0.1:7980\"\ntoken_file = {}\n",
        toml_string(&token_file.to_string_lossy())
    ));
    let dialog = "document.getElementById('token-dialog').open";
    lab.wait("the page to ask for the token", dialog, PAGE_LOAD);
    let enter = |token: &str| {
        format!(
            "document.getElementById('token-input').value = '{token}';\
             document.getElementById('token-submit').click(); true"
        )
    };
    lab.eval(&enter("not-the-token-but-long-enough"));
    lab.wait(
        "the page to say the token was refused",
        &format!(
            "{dialog} && document.getElementById('token-why').textContent.includes('refused')"
        ),
        MARGIN,
    );
    lab.eval(&enter(TOKEN));
    lab.wait(
        "the page to work with the token",
        &format!("{} && {} === 3 && !{dialog}", connected(), count("up")),
        PAGE_LOAD,
    );
    let kept = lab.eval(&format!(
        "sessionStorage.getItem('hb.token') === '{TOKEN}' && localStorage.length === 0"
    ));
    assert_eq!(
        kept,
        Value::Bool(true),
        "the token is kept in the session only"
    );

    let statuses = |headers: &str| {
        format!(
            "Promise.all(['/api/v1/status', '/api/v1/fleet', '/api/v1/nodes/1', '/metrics',\
             '/api/v1/events', '/', '/ui/app.js']\
             .map(path => fetch(path, {{ headers: {headers} }}).then(r => {{ r.body?.cancel(); return r.status; }})))"
        )
    };
    let without = lab.eval(&statuses("{}"));
    assert_eq!(
        without,
        serde_json::json!([401, 401, 401, 401, 401, 200, 200]),
        "without the token: the API refuses, the page's files are served"
    );
    let wrong = lab.eval(&statuses(
        "{ Authorization: 'Bearer not-the-token-but-long-enough' }",
    ));
    assert_eq!(
        wrong,
        serde_json::json!([401, 401, 401, 401, 401, 200, 200])
    );
    let with = lab.eval(&statuses(&format!("{{ Authorization: 'Bearer {TOKEN}' }}")));
    assert_eq!(with, serde_json::json!([200, 200, 200, 200, 200, 200, 200]));
    let kind = lab.eval("fetch('/api/v1/status').then(r => r.headers.get('www-authenticate'))");
    assert_eq!(kind, "Bearer");
}
