//! Phase `group`: what a monitor group (issue 13) costs, in the lab the
//! group tests use ([`GroupLab`]: three monitor namespaces, each an etcd
//! member and an hb agent with `[group]`, the nodes sending to all three).
//!
//! 1. **Detection** (`latency`): 10 nodes (`hb send`, 100 ms x 3, sweep
//!    50 ms), 30 crashes in sequence (quick: 10), each the SIGKILL of a
//!    node's sender, then its restart once the group ran its `down`. Per
//!    crash, from the instant of the SIGKILL (`CLOCK_MONOTONIC`): each
//!    monitor's own conviction (its event log: the start of the sweep that
//!    found it down), so the single-monitor detection, the fastest monitor
//!    and the majority's (the 2nd of 3), and the start of the group's one
//!    action (the action writes `date +%s%N` into its line; wall clock,
//!    mapped onto the monotonic clock). Overhead = group action - the
//!    majority's conviction: the etcd round trips (the 2nd monitor's
//!    opinion written, watched by the leader, the incident recorded) and
//!    the action's start. Target: median under 50 ms. Exactly one `down`
//!    and one `up` run per crash in the whole group, and nothing else.
//! 2. **etcd writes** (`scale`): 100,000 simulated nodes (quick: 10,000)
//!    at 1 s x 3 (`hb-tools loadgen ... --to M1 --to M2 --to M3`, a
//!    `[[node_ranges]]` block, sweep 100 ms), the agents' action one batch
//!    per sweep. (a) Steady state: once every monitor hears every node and
//!    the group is settled, until just before the crash (about 25 s): the
//!    etcd transactions the agents wrote (`hb_group_etcd_writes_total`,
//!    `_write_ops_total`, scraped from each agent's `/metrics` in its
//!    namespace) and, independently, the proposals etcd committed
//!    (`etcd_server_proposals_committed_total` from member 1's `/metrics`).
//!    Target: 0 writes/s. (b) 1% of the nodes crash at once
//!    (`--stop-fraction 0.01`): the transactions and operations each
//!    monitor wrote and in all, the writes/s over the episode (first local
//!    conviction to last verdict), the time from the crash to every group
//!    `down` recorded (the incidents' own `unix_ms` in etcd, read back
//!    with `etcdctl`) and run, and from each node's majority conviction to
//!    its verdict's action. Every crashed node must get exactly one group
//!    `down` and no other node any action. The brake (`[brake]`, default
//!    share 0.55) is left at its default: the phase reports whether it
//!    engaged on any monitor (`hb_brake_engaged`, `PARTITION SUSPECTED`
//!    in the agent's log). If the machine cannot carry the fleet (the load
//!    generator falls behind, or a monitor convicts a node that was still
//!    beating: heartbeats were lost), the next smaller fleet is tried and
//!    the output says so; 100,000 stays the stated target scale.
//!
//! Everything runs in namespaces `hbgb-*` that the lab removes on Drop
//! (Ctrl-C included); every wait is bounded. About a minute (a smaller
//! fleet tried after one not carried adds about 40 s).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use hb_tests::{
    ChildGuard, GroupLab, GroupLabOptions, Signal, Timing,
    config::humantime,
    group::{ActionStyle, BatchRun, MONITORS, TIMING, monitor_name},
    interrupt, monotonic_ns, netns,
};
use serde::Serialize;
use serde_json::json;

use super::{
    Ctx, PhaseOutput,
    http::clients::{get, in_netns},
    output::{Bound, Progress, Table, Target, si},
    rig::{EventRecord, LoadReport},
    stats::percentile,
};

const PHASE: &str = "group";
/// Names of the lab: namespaces `hbgb-*`, instances `hbgb-m<i>`.
const PREFIX: &str = "hbgb";
/// The group's key prefix in etcd is `hb/<GROUP>/` ([`GroupLabOptions`]'
/// default group name).
const GROUP: &str = "lab";
/// Each agent's HTTP API in its namespace (the agent's default).
const AGENT_HTTP: &str = "127.0.0.1:7980";
/// etcd's client port in each member's namespace.
const ETCD_HTTP: &str = "127.0.0.1:2379";

// --- 1. detection latency ---

/// Nodes of the latency lab.
const LATENCY_NODES: u8 = 10;
/// Target: median overhead of the group (action - majority), ms.
const OVERHEAD_LIMIT_MS: f64 = 50.0;
/// From the agents' start to every node heard and a leader elected.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// From a crash to the group's `down` (timeout 300 ms, plus room).
const DOWN_WITHIN: Duration = Duration::from_secs(5);
/// From a node's restart to the group's `up`.
const UP_WITHIN: Duration = Duration::from_secs(5);
/// How long the last monitor's conviction is waited for after the action.
const CONVICTIONS_WITHIN: Duration = Duration::from_secs(2);
/// After the nodes' first `up`s (which a group need not run) and after the
/// last crash: late runs would show by then.
const SETTLE: Duration = Duration::from_secs(2);

// --- 2. etcd writes at scale ---

/// The fleets tried, largest first: the next is tried when the machine
/// could not carry one (see the module doc).
const FLEETS: [u32; 3] = [100_000, 50_000, 20_000];
const QUICK_FLEET: u32 = 10_000;
/// The fleet's first node id (above the lab's own nodes).
const FIRST_ID: u32 = 1001;
const STOP_FRACTION: f64 = 0.01;
/// The fleet's timing: 1 s x 3, swept every 100 ms (the agent's default).
const SCALE_TIMING: Timing = Timing {
    interval: Duration::from_secs(1),
    timeout_multiplier: 3,
    sweep_period: Duration::from_millis(100),
};
/// When the 1% crash, into the load (quick: 15 s): the steady window runs
/// from the group settled to a second before it.
const STOP_AFTER: Duration = Duration::from_secs(30);
const QUICK_STOP_AFTER: Duration = Duration::from_secs(15);
/// The steady window ends this long before the crash.
const STEADY_GAP: Duration = Duration::from_secs(1);
/// From the load's start to every monitor hearing every node and the group
/// settled.
const FLEET_UP_WITHIN: Duration = Duration::from_secs(12);
/// From the crash to every crashed node's group `down`, at most.
const VERDICTS_WITHIN: Duration = Duration::from_secs(20);
/// The load runs on this long after `stop_after`: room for the verdicts
/// and the settling; the bench stops it (SIGTERM) sooner when done.
const LOAD_AFTER_STOP: Duration = Duration::from_secs(40);
/// How long the load generator may take to write its report after SIGTERM.
const LOAD_EXIT_WITHIN: Duration = Duration::from_secs(10);
/// A load that achieved less than this share of its rate fell behind.
const RATE_FLOOR: f64 = 0.99;

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let crashes = if ctx.quick { 10 } else { 30 };
    let fleets: Vec<u32> = if ctx.quick {
        vec![QUICK_FLEET]
    } else {
        FLEETS.to_vec()
    };
    let stop_after = if ctx.quick {
        QUICK_STOP_AFTER
    } else {
        STOP_AFTER
    };
    let dir = ctx.work.join(PHASE);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let planned = Duration::from_secs(1) * crashes + stop_after + Duration::from_secs(25);
    let progress = Progress::start(PHASE, planned);

    let latency = measure_latency(ctx, crashes, &progress)?;
    let mut attempts = Vec::new();
    // Fleets whose measurement could not even be made (the fleet never
    // all heard, say), with why.
    let mut failed: Vec<(u32, String)> = Vec::new();
    for (n, &nodes) in fleets.iter().enumerate() {
        let last = n + 1 == fleets.len();
        let next = if last { "" } else { ", trying a smaller one" };
        let attempt = match measure_scale(ctx, &dir, nodes, stop_after, &progress) {
            Ok(attempt) => attempt,
            Err(err) if !last && !super::is_interrupted(&err) => {
                progress.say(format!(
                    "  {} nodes: the measurement failed ({err:#}){next}",
                    si(f64::from(nodes))
                ));
                failed.push((nodes, format!("{err:#}")));
                continue;
            }
            Err(err) => return Err(err),
        };
        let held = attempt.carried.is_empty();
        if !held {
            progress.say(format!(
                "  {} nodes: the machine did not carry the fleet ({}){next}",
                si(f64::from(nodes)),
                attempt.carried.join("; "),
            ));
        }
        attempts.push(attempt);
        if held {
            break;
        }
    }
    drop(progress);

    latency.print();
    for attempt in &attempts {
        attempt.print();
    }
    let scale = attempts.last().expect("at least one fleet is tried");
    let mut targets = latency.targets();
    targets.extend(scale.targets(fleets[0]));
    let mut facts = facts(&latency, &attempts, fleets[0]);
    for (nodes, err) in &failed {
        facts.push(format!(
            "group: the measurement at {} nodes failed: {err}",
            si(f64::from(*nodes))
        ));
    }
    Ok(PhaseOutput {
        json: json!({
            "latency": latency,
            "scale_target_nodes": fleets[0],
            "scale_attempts": attempts,
            "scale_failed": failed
                .iter()
                .map(|(nodes, err)| json!({ "nodes": nodes, "error": err }))
                .collect::<Vec<_>>(),
        }),
        targets,
        plots: Vec::new(),
        facts,
    })
}

/// Removes what an interrupted run left: the lab's namespaces (their
/// processes killed) and the agents' pins.
fn clear_leftovers(progress: &Progress) -> Result<()> {
    for name in netns::list_with_prefix(&format!("{PREFIX}-"))? {
        netns::remove(&name)?;
        progress.say(format!(
            "  removed the namespace {name}, left by an interrupted run"
        ));
    }
    for index in 1..=MONITORS {
        hb_tests::pins::remove(&format!("{PREFIX}-m{index}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Clocks, logs and metrics

/// `CLOCK_REALTIME - CLOCK_MONOTONIC` now, ns: maps the actions' `date
/// +%s%N` onto the event logs' clock. Read as the tightest of a few
/// brackets of one clock by the other.
fn realtime_offset_ns() -> i128 {
    let unix_ns = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128)
    };
    (0..5)
        .map(|_| {
            let before = i128::from(monotonic_ns());
            let wall = unix_ns();
            let after = i128::from(monotonic_ns());
            (after - before, wall - (before + after) / 2)
        })
        .min_by_key(|&(width, _)| width)
        .map_or(0, |(_, offset)| offset)
}

/// A wall-clock instant (Unix ns) on the monotonic clock.
fn to_mono(unix_ns: u64, offset: i128) -> u64 {
    u64::try_from(i128::from(unix_ns) - offset).unwrap_or(0)
}

/// Every record of an event log (none if it does not exist).
fn read_events(path: &Path) -> Result<Vec<EventRecord>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

/// `GET /metrics` from `addr` inside the namespace `netns`.
fn fetch_metrics(netns: PathBuf, addr: &str) -> Result<String> {
    let addr: SocketAddr = addr.parse().context("a metrics address")?;
    let body = in_netns(&netns, move || get(addr, "/metrics"))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The sum of the samples of `name` whose labels contain every one of
/// `labels` (`state="up"`), in Prometheus' text format; `None` if there is
/// no such sample.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric_name, label_text) = series.split_once('{').unwrap_or((series, ""));
        if metric_name != name || !labels.iter().all(|l| label_text.contains(l)) {
            continue;
        }
        if let Ok(value) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// What the phase reads from one agent's `/metrics`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct AgentCounters {
    /// `hb_group_etcd_writes_total`: transactions (and single puts).
    writes: f64,
    /// `hb_group_etcd_write_ops_total`: puts and deletes within them.
    write_ops: f64,
    /// `hb_group_incidents_total`.
    incidents: f64,
    /// `hb_transitions_total`, every label.
    transitions: f64,
    /// `hb_nodes{state="up"}`.
    up: f64,
    /// `hb_brake_engaged`.
    brake_engaged: f64,
    /// `hb_group_leader`.
    leader: f64,
}

impl AgentCounters {
    fn parse(text: &str) -> Self {
        let get = |name, labels: &[&str]| metric(text, name, labels).unwrap_or(0.0);
        Self {
            writes: get("hb_group_etcd_writes_total", &[]),
            write_ops: get("hb_group_etcd_write_ops_total", &[]),
            incidents: get("hb_group_incidents_total", &[]),
            transitions: get("hb_transitions_total", &[]),
            up: get("hb_nodes", &["state=\"up\""]),
            brake_engaged: get("hb_brake_engaged", &[]),
            leader: get("hb_group_leader", &[]),
        }
    }
}

/// What etcd itself counted (member 1's `/metrics`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct EtcdCounters {
    /// `etcd_server_proposals_committed_total`: Raft entries committed
    /// (every write, and the lease grants and revokes).
    proposals_committed: f64,
    /// `etcd_mvcc_put_total` and `etcd_mvcc_delete_total`.
    puts: f64,
    deletes: f64,
    /// `etcd_mvcc_txn_total`.
    txns: f64,
}

impl EtcdCounters {
    fn parse(text: &str) -> Self {
        let get = |name| metric(text, name, &[]).unwrap_or(0.0);
        Self {
            proposals_committed: get("etcd_server_proposals_committed_total"),
            puts: get("etcd_mvcc_put_total"),
            deletes: get("etcd_mvcc_delete_total"),
            txns: get("etcd_mvcc_txn_total"),
        }
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            proposals_committed: self.proposals_committed - earlier.proposals_committed,
            puts: self.puts - earlier.puts,
            deletes: self.deletes - earlier.deletes,
            txns: self.txns - earlier.txns,
        }
    }
}

/// Every agent's counters and etcd's, at one moment.
#[derive(Debug, Clone, Serialize)]
struct Scrape {
    /// `CLOCK_MONOTONIC` when taken, ns.
    mono_ns: u64,
    agents: Vec<AgentCounters>,
    etcd: EtcdCounters,
}

fn scrape(lab: &GroupLab) -> Result<Scrape> {
    let mono_ns = monotonic_ns();
    let mut agents = Vec::new();
    for index in 1..=MONITORS {
        let text = fetch_metrics(lab.monitor_ns(index).path(), AGENT_HTTP)
            .with_context(|| format!("scraping agent {}", monitor_name(index)))?;
        agents.push(AgentCounters::parse(&text));
    }
    let text =
        fetch_metrics(lab.monitor_ns(1).path(), ETCD_HTTP).context("scraping etcd member m1")?;
    Ok(Scrape {
        mono_ns,
        agents,
        etcd: EtcdCounters::parse(&text),
    })
}

/// What the agents and etcd wrote between two scrapes.
#[derive(Debug, Clone, Serialize)]
struct Writes {
    seconds: f64,
    /// Per monitor (m1, m2, m3): transactions and operations.
    txns: Vec<f64>,
    ops: Vec<f64>,
    txns_total: f64,
    ops_total: f64,
    txns_per_s: f64,
    ops_per_s: f64,
    /// Incidents the monitors recorded (as leader).
    incidents: f64,
    /// State changes the monitors saw.
    transitions: Vec<f64>,
    etcd: EtcdCounters,
    etcd_proposals_per_s: f64,
}

impl Writes {
    fn between(before: &Scrape, after: &Scrape) -> Self {
        let seconds = (after.mono_ns.saturating_sub(before.mono_ns)) as f64 / 1e9;
        let per_monitor = |f: fn(&AgentCounters) -> f64| -> Vec<f64> {
            after
                .agents
                .iter()
                .zip(&before.agents)
                .map(|(a, b)| f(a) - f(b))
                .collect()
        };
        let txns = per_monitor(|c| c.writes);
        let ops = per_monitor(|c| c.write_ops);
        let txns_total: f64 = txns.iter().sum();
        let ops_total: f64 = ops.iter().sum();
        let etcd = after.etcd.since(&before.etcd);
        let rate = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
        Self {
            seconds,
            txns_per_s: rate(txns_total),
            ops_per_s: rate(ops_total),
            etcd_proposals_per_s: rate(etcd.proposals_committed),
            incidents: per_monitor(|c| c.incidents).iter().sum(),
            transitions: per_monitor(|c| c.transitions),
            txns,
            ops,
            txns_total,
            ops_total,
            etcd,
        }
    }
}

/// Median, p90 and max of samples in ns (as ms), and how many.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Spread {
    n: usize,
    median_ms: Option<f64>,
    p90_ms: Option<f64>,
    max_ms: Option<f64>,
    min_ms: Option<f64>,
}

impl Spread {
    fn of(samples: impl IntoIterator<Item = i64>) -> Self {
        let mut sorted: Vec<i64> = samples.into_iter().collect();
        sorted.sort_unstable();
        let shifted: Vec<u64> = sorted
            .iter()
            .map(|&s| (i128::from(s) - i128::from(i64::MIN)) as u64)
            .collect();
        let back = |v: Option<u64>| v.map(|v| (i128::from(v) + i128::from(i64::MIN)) as f64 / 1e6);
        Self {
            n: sorted.len(),
            median_ms: back(percentile(&shifted, 0.5)),
            p90_ms: back(percentile(&shifted, 0.9)),
            max_ms: sorted.last().map(|&v| v as f64 / 1e6),
            min_ms: sorted.first().map(|&v| v as f64 / 1e6),
        }
    }

    fn cells(&self) -> Vec<String> {
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        vec![
            self.n.to_string(),
            f(self.median_ms),
            f(self.p90_ms),
            f(self.max_ms),
        ]
    }
}

/// The 2nd smallest of the values present (the majority of 3).
fn second(values: &[Option<u64>]) -> Option<u64> {
    let mut present: Vec<u64> = values.iter().flatten().copied().collect();
    present.sort_unstable();
    present.get(1).copied()
}

fn signed(a: u64, b: u64) -> i64 {
    i64::try_from(i128::from(a) - i128::from(b)).unwrap_or(i64::MAX)
}

/// `etcdctl ARGS...` against member 1 from its namespace; its stdout.
fn etcdctl(lab: &GroupLab, args: &[&str]) -> Result<String> {
    let mut command = lab.monitor_ns(1).command("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://{ETCD_HTTP}"))
        .arg("--command-timeout=10s")
        .args(args);
    let output = netns::run(&mut command)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The value of the first `"NAME" : VALUE` line of etcdctl's `-w fields`
/// output.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("\"{name}\" : ");
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map(|v| v.trim().trim_matches('"'))
}

/// etcd's current revision (member 1).
fn etcd_revision(lab: &GroupLab) -> Result<i64> {
    let text = etcdctl(lab, &["endpoint", "status", "-w", "fields"])?;
    field(&text, "Revision")
        .and_then(|r| r.parse().ok())
        .with_context(|| format!("no revision in `etcdctl endpoint status`: {text}"))
}

/// One change of a key of the group, as etcd's watch reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyEvent {
    put: bool,
    key: String,
    revision: i64,
}

/// `etcdctl watch --prefix hb/<group>/` from a revision on: every write
/// to the group's keys, which the phase sorts by key kind (an independent
/// account of what the agents wrote, the election's keys included).
struct KeyWatch {
    guard: ChildGuard,
    out: PathBuf,
}

impl KeyWatch {
    /// Watches every change after revision `after`.
    fn start(lab: &GroupLab, after: i64, out: PathBuf) -> Result<Self> {
        let mut command = lab.monitor_ns(1).command("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=http://{ETCD_HTTP}"))
            .args(["watch", "--prefix", &format!("hb/{GROUP}/"), "-w", "fields"])
            .arg(format!("--rev={}", after + 1));
        let guard = ChildGuard::spawn_logged("etcdctl watch", &mut command, &out)?;
        Ok(Self { guard, out })
    }

    /// Stops the watch and returns what it saw.
    fn finish(mut self) -> Result<Vec<KeyEvent>> {
        self.guard.signal(Signal::Kill)?;
        let _ = self.guard.wait_timeout(LOAD_EXIT_WITHIN)?;
        let text = fs::read_to_string(&self.out)
            .with_context(|| format!("reading {}", self.out.display()))?;
        Ok(parse_key_events(&text))
    }
}

/// The events of `etcdctl watch -w fields` output.
fn parse_key_events(text: &str) -> Vec<KeyEvent> {
    let mut events = Vec::new();
    let mut current: Option<KeyEvent> = None;
    for line in text.lines() {
        let Some((name, value)) = line.split_once(" : ") else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match name.trim_matches('"') {
            "Type" => {
                events.extend(current.take());
                current = Some(KeyEvent {
                    put: value == "PUT",
                    key: String::new(),
                    revision: 0,
                });
            }
            "Key" => {
                if let Some(event) = &mut current {
                    event.key = value.to_owned();
                }
            }
            "ModRevision" => {
                if let Some(event) = &mut current {
                    event.revision = value.parse().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    events.extend(current);
    events
}

/// The writes of `events` within revisions `(from, to]`, by key kind
/// (`election`, `opinions`, ...) and operation: `"election put" -> 2`.
fn writes_by_key(events: &[KeyEvent], from: i64, to: i64) -> BTreeMap<String, usize> {
    let prefix = format!("hb/{GROUP}/");
    let mut counts = BTreeMap::new();
    for event in events
        .iter()
        .filter(|e| e.revision > from && e.revision <= to)
    {
        let kind = event
            .key
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("other");
        let op = if event.put { "put" } else { "delete" };
        *counts.entry(format!("{kind} {op}")).or_default() += 1;
    }
    counts
}

fn describe_counts(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A failed etcd request of an agent's group session: its `WARN ...
/// monitor group: WHAT: ...` line.
#[derive(Debug, Clone, Serialize)]
struct GroupWarning {
    monitor: String,
    /// The line's time, on the monotonic clock.
    mono_ns: u64,
    /// What failed (`watching the group's keys`, `campaigning`, ...).
    what: String,
    /// The error, as logged (cut to 200 characters).
    error: String,
}

/// Every group-session warning in monitor `index`'s agent output.
fn group_warnings(lab: &GroupLab, index: u8, offset: i128) -> Vec<GroupWarning> {
    let text = fs::read_to_string(&lab.monitor(index).log).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let line = strip_ansi(line);
            let (_, rest) = line.split_once(" monitor group: ")?;
            if !line.contains("WARN") {
                return None;
            }
            let (what, error) = rest.split_once(": ").unwrap_or((rest, ""));
            Some(GroupWarning {
                monitor: monitor_name(index),
                mono_ns: to_mono(log_time_unix_ns(&line)?, offset),
                what: what.to_owned(),
                error: error.chars().take(200).collect(),
            })
        })
        .collect()
}

/// The warnings' counts by what failed, and their median spacing per
/// monitor, for the table.
fn describe_warnings(warnings: &[GroupWarning]) -> String {
    if warnings.is_empty() {
        return "none".to_owned();
    }
    let mut by_what: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for w in warnings {
        *by_what.entry((&w.monitor, &w.what)).or_default() += 1;
    }
    let mut gaps: Vec<u64> = Vec::new();
    let mut by_monitor: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for w in warnings {
        by_monitor.entry(&w.monitor).or_default().push(w.mono_ns);
    }
    for times in by_monitor.values_mut() {
        times.sort_unstable();
        gaps.extend(times.windows(2).map(|w| w[1] - w[0]));
    }
    gaps.sort_unstable();
    let spacing = percentile(&gaps, 0.5)
        .map(|g| format!("; median spacing per monitor {:.2} s", g as f64 / 1e9))
        .unwrap_or_default();
    let list: Vec<String> = by_what
        .iter()
        .map(|((m, what), n)| format!("{m} {what} {n}"))
        .collect();
    format!("{}{spacing}", list.join(", "))
}

/// `line` without ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The Unix time (ns) of a log line starting `2026-12-02T05:09:16.963714Z`.
fn log_time_unix_ns(line: &str) -> Option<u64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, sec) = (parts.next()??, parts.next()??, parts.next()??);
    let digits = fraction.len().min(9);
    let ns: i64 = fraction[..digits].parse::<i64>().ok()? * 10_i64.pow(9 - digits as u32);
    // Days from 1970-01-01 to y-m-d (proleptic Gregorian).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + min * 60 + sec;
    u64::try_from(secs * 1_000_000_000 + ns).ok()
}

// ---------------------------------------------------------------------------
// 1. Detection latency

/// One crash and what the group made of it.
#[derive(Debug, Clone, Serialize)]
struct Crash {
    node: u8,
    /// The SIGKILL, `CLOCK_MONOTONIC` ns.
    crash_mono_ns: u64,
    /// Each monitor's own conviction (its event log), `CLOCK_MONOTONIC` ns.
    convicted_mono_ns: Vec<Option<u64>>,
    /// The group action's own start time, on the monotonic clock.
    action_mono_ns: Option<u64>,
    /// The monitor that ran it.
    action_monitor: Option<String>,
    /// Runs in the whole group between this crash and the next one.
    downs: usize,
    ups: usize,
    /// Other runs in that span (another node, another event).
    others: usize,
    /// From the restart to the group's `up` seen, ms.
    up_after_ms: f64,
    /// Failed etcd requests (any monitor) between the crash and the action.
    etcd_failures: usize,
}

impl Crash {
    fn since_crash(&self, mono: u64) -> i64 {
        signed(mono, self.crash_mono_ns)
    }

    fn majority(&self) -> Option<u64> {
        second(&self.convicted_mono_ns)
    }

    fn fastest(&self) -> Option<u64> {
        self.convicted_mono_ns.iter().flatten().min().copied()
    }

    fn is_clean(&self) -> bool {
        self.downs == 1 && self.ups == 1 && self.others == 0
    }
}

#[derive(Debug, Serialize)]
struct Latency {
    nodes: u8,
    interval_ms: f64,
    timeout_ms: f64,
    sweep_period_ms: f64,
    lease_ttl_ms: f64,
    crashes: Vec<Crash>,
    /// Every monitor's conviction after each crash (3 per crash).
    single: Spread,
    fastest: Spread,
    majority: Spread,
    group: Spread,
    /// Group action - majority conviction.
    overhead: Spread,
    /// Group action - fastest conviction.
    overhead_vs_fastest: Spread,
    /// Crashes without exactly one `down` and one `up` and nothing else.
    unclean: usize,
    /// Runs after the last crash's span (late repeats).
    late_runs: usize,
    /// Which monitor ran the actions, and how often.
    actions_by_monitor: BTreeMap<String, usize>,
    /// The leader's conviction was the majority's (the 2nd), not the first.
    leader_was_second: usize,
    /// Crashes whose overhead passed the target, and how many of them had
    /// a failed etcd request between the crash and the action.
    slow: usize,
    slow_with_etcd_failure: usize,
    /// Every failed etcd request of the agents' group sessions.
    etcd_failures: Vec<GroupWarning>,
}

fn measure_latency(ctx: &Ctx<'_>, crashes: u32, progress: &Progress) -> Result<Latency> {
    clear_leftovers(progress)?;
    progress.step("detection: starting 3 etcd members and 3 agents");
    let options = GroupLabOptions::default()
        .nodes(LATENCY_NODES)
        .timing(TIMING)
        .event_log()
        .action(ActionStyle::TimedLine);
    let lease_ttl = options
        .group
        .as_ref()
        .map_or(Duration::ZERO, |g| g.lease_ttl);
    let mut lab = GroupLab::start(ctx.hb.clone(), PREFIX, options)?;
    lab.start_nodes()?;
    lab.wait_ready(READY_WITHIN)?;
    interrupt::sleep(SETTLE)?;
    progress.say(format!(
        "  detection lab: 3 monitors, {LATENCY_NODES} nodes at {} ms x {}, leader {}",
        TIMING.interval.as_millis(),
        TIMING.timeout_multiplier,
        lab.leader().map_or_else(|| "?".to_owned(), monitor_name)
    ));

    let mut marks = Vec::new();
    let mut spans = Vec::new();
    for n in 0..crashes {
        let node = (n % u32::from(LATENCY_NODES)) as u8 + 1;
        progress.step(format!(
            "detection: crash {}/{crashes} (node-{node})",
            n + 1
        ));
        let mark = lab.mark()?;
        let crashed = lab.crash_node(node)?;
        let crash_mono_ns = monotonic_ns() - crashed.elapsed().as_nanos() as u64;
        lab.wait_until(
            |lab| lab.count("down", node, mark) >= 1,
            DOWN_WITHIN,
            &format!("the group's `down node-{node}`"),
        )?;
        let events: Vec<PathBuf> = (1..=MONITORS)
            .map(|i| lab.monitor(i).events.clone())
            .collect();
        // The slowest monitor's conviction (not needed for the verdict:
        // missing, it is missing from the figures).
        let convictions = lab.wait_until(
            |_| {
                events.iter().all(|path| {
                    read_events(path).is_ok_and(|records| {
                        records.iter().any(|r| {
                            r.event == "down"
                                && r.node_id == u32::from(node)
                                && r.mono_ns >= crash_mono_ns
                        })
                    })
                })
            },
            CONVICTIONS_WITHIN,
            "every monitor's conviction",
        );
        if let Err(hb_tests::Error::Interrupted) = convictions {
            return Err(hb_tests::Error::Interrupted.into());
        }
        let revived = lab.revive_node(node)?;
        lab.wait_until(
            |lab| lab.count("up", node, mark) >= 1,
            UP_WITHIN,
            &format!("the group's `up node-{node}`"),
        )?;
        let up_after = revived.elapsed();
        marks.push(mark);
        spans.push((node, crash_mono_ns, up_after));
    }
    let end_mark = lab.mark()?;
    interrupt::sleep(SETTLE)?;
    let offset = realtime_offset_ns();
    let runs = lab.runs()?;
    let logs: Vec<Vec<EventRecord>> = (1..=MONITORS)
        .map(|i| read_events(&lab.monitor(i).events))
        .collect::<Result<_>>()?;
    let warnings: Vec<GroupWarning> = (1..=MONITORS)
        .flat_map(|i| group_warnings(&lab, i, offset))
        .collect();
    drop(lab);

    let mut list = Vec::new();
    for (k, &(node, crash_mono_ns, up_after)) in spans.iter().enumerate() {
        let end = marks.get(k + 1).copied().unwrap_or(end_mark);
        let span = &runs[marks[k]..end];
        let name = hb_tests::config::node_name(node);
        let downs: Vec<_> = span.iter().filter(|r| r.is("down", node)).collect();
        let ups = span.iter().filter(|r| r.is("up", node)).count();
        let others = span
            .iter()
            .filter(|r| r.node != name || !matches!(r.event.as_str(), "down" | "up"))
            .count();
        let convicted_mono_ns = logs
            .iter()
            .map(|records| {
                records
                    .iter()
                    .filter(|r| {
                        r.event == "down"
                            && r.node_id == u32::from(node)
                            && r.mono_ns >= crash_mono_ns
                    })
                    .map(|r| r.mono_ns)
                    .min()
            })
            .collect();
        let action_mono_ns = downs
            .first()
            .and_then(|r| r.unix_ns)
            .map(|ns| to_mono(ns, offset));
        let until = action_mono_ns.unwrap_or(crash_mono_ns + DOWN_WITHIN.as_nanos() as u64);
        list.push(Crash {
            node,
            crash_mono_ns,
            convicted_mono_ns,
            etcd_failures: warnings
                .iter()
                .filter(|w| w.mono_ns >= crash_mono_ns && w.mono_ns <= until)
                .count(),
            action_mono_ns,
            action_monitor: downs.first().map(|r| r.monitor.clone()),
            downs: downs.len(),
            ups,
            others,
            up_after_ms: up_after.as_secs_f64() * 1e3,
        });
    }
    let late_runs = runs.len().saturating_sub(end_mark);
    Ok(Latency::summarise(list, lease_ttl, late_runs, warnings))
}

impl Latency {
    fn summarise(
        crashes: Vec<Crash>,
        lease_ttl: Duration,
        late_runs: usize,
        etcd_failures: Vec<GroupWarning>,
    ) -> Self {
        let of = |f: &dyn Fn(&Crash) -> Option<i64>| Spread::of(crashes.iter().filter_map(f));
        let single = Spread::of(crashes.iter().flat_map(|c| {
            c.convicted_mono_ns
                .iter()
                .flatten()
                .map(|&m| c.since_crash(m))
                .collect::<Vec<_>>()
        }));
        let mut actions_by_monitor = BTreeMap::new();
        let mut leader_was_second = 0;
        for crash in &crashes {
            if let Some(monitor) = &crash.action_monitor {
                *actions_by_monitor.entry(monitor.clone()).or_default() += 1;
                let own = hb_tests::group::monitor_index(monitor)
                    .and_then(|i| crash.convicted_mono_ns.get(usize::from(i) - 1).copied())
                    .flatten();
                if own.is_some() && own == crash.majority() && own != crash.fastest() {
                    leader_was_second += 1;
                }
            }
        }
        let limit_ns = (OVERHEAD_LIMIT_MS * 1e6) as i64;
        let slow: Vec<&Crash> = crashes
            .iter()
            .filter(|c| {
                c.action_mono_ns
                    .zip(c.majority())
                    .is_some_and(|(a, m)| signed(a, m) >= limit_ns)
            })
            .collect();
        Self {
            slow: slow.len(),
            slow_with_etcd_failure: slow.iter().filter(|c| c.etcd_failures > 0).count(),
            etcd_failures,
            nodes: LATENCY_NODES,
            interval_ms: TIMING.interval.as_secs_f64() * 1e3,
            timeout_ms: TIMING.timeout().as_secs_f64() * 1e3,
            sweep_period_ms: TIMING.sweep_period.as_secs_f64() * 1e3,
            lease_ttl_ms: lease_ttl.as_secs_f64() * 1e3,
            single,
            fastest: of(&|c| Some(c.since_crash(c.fastest()?))),
            majority: of(&|c| Some(c.since_crash(c.majority()?))),
            group: of(&|c| Some(c.since_crash(c.action_mono_ns?))),
            overhead: of(&|c| Some(signed(c.action_mono_ns?, c.majority()?))),
            overhead_vs_fastest: of(&|c| Some(signed(c.action_mono_ns?, c.fastest()?))),
            unclean: crashes.iter().filter(|c| !c.is_clean()).count(),
            late_runs,
            actions_by_monitor,
            leader_was_second,
            crashes,
        }
    }

    fn print(&self) {
        let mut table = Table::new(&["from the SIGKILL to", "n", "median ms", "p90 ms", "max ms"]);
        for (name, spread) in [
            ("a monitor's own conviction (single)", &self.single),
            ("the fastest monitor's conviction", &self.fastest),
            ("the majority's conviction (2nd of 3)", &self.majority),
            ("the group's action (start)", &self.group),
            ("overhead: action - majority", &self.overhead),
            ("overhead: action - fastest", &self.overhead_vs_fastest),
        ] {
            let mut row = vec![name.to_owned()];
            row.extend(spread.cells());
            table.row(row);
        }
        table.print(&format!(
            "Group detection vs a single monitor: {} crashes of {} nodes at {:.0} ms x 3 \
             (timeout {:.0} ms, sweep {:.0} ms), 3 monitors, etcd leases {:.0} s",
            self.crashes.len(),
            self.nodes,
            self.interval_ms,
            self.timeout_ms,
            self.sweep_period_ms,
            self.lease_ttl_ms / 1e3
        ));
        let by: Vec<String> = self
            .actions_by_monitor
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect();
        println!(
            "  failed etcd requests of the agents: {}; crashes with an overhead of {} ms or \
             more: {} ({} with a failed etcd request between the crash and the action)",
            describe_warnings(&self.etcd_failures),
            OVERHEAD_LIMIT_MS,
            self.slow,
            self.slow_with_etcd_failure
        );
        println!(
            "  runs: {} of {} crashes had exactly one `down` and one `up` in the group and \
             nothing else; {} late runs; actions run by {}; the leader was the majority's \
             2nd conviction in {} crashes",
            self.crashes.len() - self.unclean,
            self.crashes.len(),
            self.late_runs,
            by.join(", "),
            self.leader_was_second
        );
    }

    fn targets(&self) -> Vec<Target> {
        let ms = |v: Option<f64>| v.unwrap_or(f64::INFINITY);
        vec![
            Target::new(
                PHASE,
                "group overhead median (action - majority)",
                ms(self.overhead.median_ms),
                "ms",
                Bound::Below,
                OVERHEAD_LIMIT_MS,
            )
            .with_note(format!(
                "100 ms x 3; p90 {} ms, max {} ms; vs the fastest monitor: median {} ms; \
                 single-monitor detection median {} ms, group {} ms",
                fmt_ms(self.overhead.p90_ms),
                fmt_ms(self.overhead.max_ms),
                fmt_ms(self.overhead_vs_fastest.median_ms),
                fmt_ms(self.single.median_ms),
                fmt_ms(self.group.median_ms)
            )),
            Target::new(
                PHASE,
                "crashes without exactly one down and one up",
                (self.unclean + self.late_runs) as f64,
                "crashes",
                Bound::AtMost,
                0.0,
            )
            .with_note(format!(
                "{} crashes; {} late runs after the last",
                self.crashes.len(),
                self.late_runs
            )),
        ]
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

// ---------------------------------------------------------------------------
// 2. etcd writes, steady and at a 1% crash

#[derive(Debug, Serialize)]
struct Scale {
    nodes: u32,
    crashed: usize,
    interval_ms: f64,
    timeout_ms: f64,
    sweep_period_ms: f64,
    /// From the load's start to every monitor hearing every node and the
    /// group settled, s.
    fleet_up_s: f64,
    steady: Writes,
    /// State changes during the steady window, per monitor.
    steady_transitions: Vec<f64>,
    episode: Writes,
    /// First local conviction of a crashed node (any monitor) to the last
    /// incident recorded, s: the episode's writing span.
    episode_span_s: Option<f64>,
    /// Operations written per second over that span (every monitor).
    episode_ops_per_s: Option<f64>,
    episode_txns_per_s: Option<f64>,
    /// From the crash (the load generator's stop) to: the majority's
    /// conviction, each node's incident recorded, its action.
    crash_to_majority: Spread,
    crash_to_recorded: Spread,
    crash_to_action: Spread,
    /// The majority's conviction to the incident recorded and to its action.
    majority_to_recorded: Spread,
    majority_to_action: Spread,
    /// Incidents recorded before the last majority conviction: what the
    /// leader kept up with while the convictions came in.
    recorded_before_last_majority: usize,
    /// Every crashed node's incident recorded / action run, ms after the crash.
    all_recorded_ms: Option<f64>,
    all_actions_ms: Option<f64>,
    /// Incidents in etcd (state down, generation 1) and who recorded them.
    incidents_in_etcd: usize,
    incidents_by_leader: BTreeMap<String, usize>,
    /// Crashed nodes with exactly one group `down`, with none, with more.
    downs_once: usize,
    downs_missing: usize,
    downs_repeated: usize,
    /// Action events for nodes that did not crash, or other than `down`.
    other_actions: usize,
    /// Batch runs (distinct start times) and events in them.
    batches: usize,
    /// Per monitor: `down` of nodes still beating while the load ran
    /// (heartbeats lost), and their `suspect`s.
    false_downs: Vec<usize>,
    false_suspects: Vec<usize>,
    /// Per monitor: crashed nodes it convicted.
    convicted: Vec<usize>,
    /// The brake: `hb_brake_engaged` at the end, and `PARTITION SUSPECTED`
    /// lines in each agent's log.
    brake_engaged: Vec<f64>,
    partition_logged: Vec<usize>,
    /// What etcd's watch saw written to the group's keys, by key kind and
    /// operation: in the steady window, in the episode.
    steady_keys: BTreeMap<String, usize>,
    episode_keys: BTreeMap<String, usize>,
    /// Every failed etcd request of the agents' group sessions.
    etcd_failures: Vec<GroupWarning>,
    load: LoadReport,
    /// Why the machine did not carry this fleet (empty: it did).
    carried: Vec<String>,
}

fn measure_scale(
    ctx: &Ctx<'_>,
    dir: &Path,
    nodes: u32,
    stop_after: Duration,
    progress: &Progress,
) -> Result<Scale> {
    clear_leftovers(progress)?;
    let label = si(f64::from(nodes));
    progress.step(format!(
        "scale {label}: starting 3 etcd members and 3 agents"
    ));
    let options = GroupLabOptions::default()
        .nodes(0)
        .fleet(FIRST_ID, nodes)
        .timing(SCALE_TIMING)
        .event_log()
        .action(ActionStyle::Batch);
    let mut lab = GroupLab::start(ctx.hb.clone(), PREFIX, options)?;
    let report_path = dir.join(format!("loadgen-{nodes}.json"));
    let log_path = dir.join(format!("loadgen-{nodes}.log"));
    let mut args: Vec<String> = vec![
        "loadgen".into(),
        "--nodes".into(),
        nodes.to_string(),
        "--first-id".into(),
        FIRST_ID.to_string(),
    ];
    for target in lab.monitor_targets() {
        args.extend(["--to".into(), target]);
    }
    args.extend([
        "--interval".into(),
        humantime(SCALE_TIMING.interval),
        "--stop-fraction".into(),
        STOP_FRACTION.to_string(),
        "--stop-after".into(),
        humantime(stop_after),
        "--duration".into(),
        humantime(stop_after + LOAD_AFTER_STOP),
        "--seed".into(),
        "1".into(),
        "--report".into(),
        report_path.to_string_lossy().into_owned(),
    ]);
    let fleet_ns = lab.fleet_ns().context("the lab has a fleet host")?;
    let mut command = fleet_ns.command(ctx.tools.path());
    command.args(&args);
    let mut load = ChildGuard::spawn_logged("loadgen", &mut command, &log_path)?;
    let started = Instant::now();
    progress.step(format!("scale {label}: every monitor to hear every node"));

    let expected_up = f64::from(nodes);
    lab.wait_until(
        |lab| {
            lab.group_is_settled()
                && scrape(lab).is_ok_and(|s| s.agents.iter().all(|a| a.up >= expected_up))
        },
        FLEET_UP_WITHIN,
        "every monitor to hear every node of the fleet and the group to settle",
    )?;
    load.ensure_running()?;
    let fleet_up = started.elapsed();
    let steady_end = started + stop_after - STEADY_GAP;
    if Instant::now() >= steady_end {
        bail!("the fleet was up only {fleet_up:?} into the load, after the crash was due");
    }
    progress.step(format!("scale {label}: steady state"));
    let revision_before = etcd_revision(&lab)?;
    let watch = KeyWatch::start(
        &lab,
        revision_before,
        dir.join(format!("watch-{nodes}.txt")),
    )?;
    let before = scrape(&lab)?;
    interrupt::sleep(steady_end.saturating_duration_since(Instant::now()))?;
    let after_steady = scrape(&lab)?;
    let revision_steady = etcd_revision(&lab)?;
    load.ensure_running()?;

    progress.step(format!("scale {label}: 1% crash, waiting for the verdicts"));
    let crashed_expected = (f64::from(nodes) * STOP_FRACTION).round() as usize;
    let batch_paths: Vec<PathBuf> = (1..=MONITORS)
        .map(|i| lab.monitor(i).batches.clone())
        .collect();
    let count_downs = || -> usize {
        batch_paths
            .iter()
            .map(|p| {
                hb_tests::events::read_lines(p)
                    .unwrap_or_default()
                    .iter()
                    .filter(|l| l.contains("\"event\":\"down\""))
                    .count()
            })
            .sum()
    };
    let verdict_deadline = started + stop_after + VERDICTS_WITHIN;
    let waited = lab.wait_until(
        |_| count_downs() >= crashed_expected,
        verdict_deadline.saturating_duration_since(Instant::now()),
        "every crashed node's group `down`",
    );
    match waited {
        Err(hb_tests::Error::Interrupted) => return Err(hb_tests::Error::Interrupted.into()),
        Err(err) => progress.say(format!("  scale {label}: not every verdict came: {err}")),
        Ok(()) => {}
    }
    interrupt::sleep(SETTLE)?;
    let after_episode = scrape(&lab)?;
    let revision_episode = etcd_revision(&lab)?;
    let key_events = watch.finish()?;
    let incidents = read_incidents(&lab)?;
    let partition_logged: Vec<usize> = (1..=MONITORS)
        .map(|i| {
            fs::read_to_string(&lab.monitor(i).log)
                .unwrap_or_default()
                .matches("PARTITION SUSPECTED")
                .count()
        })
        .collect();
    // The agents leave the group before the load ends, so the fleet's
    // silence at the end is nobody's verdict.
    for index in 1..=MONITORS {
        lab.stop_agent(index)?;
    }
    load.signal(Signal::Term)?;
    if load.wait_timeout(LOAD_EXIT_WITHIN)?.is_none() {
        bail!("the load generator did not exit within {LOAD_EXIT_WITHIN:?} of SIGTERM");
    }
    let report: LoadReport = serde_json::from_slice(
        &fs::read(&report_path).with_context(|| format!("reading {}", report_path.display()))?,
    )
    .with_context(|| format!("parsing {}", report_path.display()))?;
    let offset = realtime_offset_ns();
    let logs: Vec<Vec<EventRecord>> = (1..=MONITORS)
        .map(|i| read_events(&lab.monitor(i).events))
        .collect::<Result<_>>()?;
    let batches: Vec<BatchRun> = (1..=MONITORS)
        .map(|i| lab.batches(i))
        .collect::<hb_tests::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    let etcd_failures: Vec<GroupWarning> = (1..=MONITORS)
        .flat_map(|i| group_warnings(&lab, i, offset))
        .collect();
    drop(lab);

    Ok(Scale::analyse(ScaleInput {
        nodes,
        fleet_up,
        before,
        after_steady,
        after_episode,
        report,
        logs,
        batches,
        incidents,
        partition_logged,
        offset,
        steady_keys: writes_by_key(&key_events, revision_before, revision_steady),
        episode_keys: writes_by_key(&key_events, revision_steady, revision_episode),
        etcd_failures,
    }))
}

/// An incident as the leader recorded it in etcd.
#[derive(Debug, Clone, serde::Deserialize)]
struct Incident {
    state: String,
    generation: u64,
    leader: String,
    unix_ms: u64,
}

/// The group's incidents, read back from etcd (member 1, in its
/// namespace): `(node id, incident)`.
fn read_incidents(lab: &GroupLab) -> Result<Vec<(u32, Incident)>> {
    let prefix = format!("hb/{GROUP}/incidents/");
    let text = etcdctl(lab, &["get", "--prefix", &prefix])?;
    let lines: Vec<&str> = text.lines().collect();
    let mut incidents = Vec::new();
    for pair in lines.chunks(2) {
        let [key, value] = pair else { continue };
        let Some(id) = key.strip_prefix(&prefix).and_then(|id| id.parse().ok()) else {
            continue;
        };
        if let Ok(incident) = serde_json::from_str::<Incident>(value) {
            incidents.push((id, incident));
        }
    }
    Ok(incidents)
}

struct ScaleInput {
    nodes: u32,
    fleet_up: Duration,
    before: Scrape,
    after_steady: Scrape,
    after_episode: Scrape,
    report: LoadReport,
    logs: Vec<Vec<EventRecord>>,
    batches: Vec<BatchRun>,
    incidents: Vec<(u32, Incident)>,
    partition_logged: Vec<usize>,
    offset: i128,
    steady_keys: BTreeMap<String, usize>,
    episode_keys: BTreeMap<String, usize>,
    etcd_failures: Vec<GroupWarning>,
}

impl Scale {
    fn analyse(input: ScaleInput) -> Self {
        let ScaleInput {
            nodes,
            fleet_up,
            before,
            after_steady,
            after_episode,
            report,
            logs,
            batches,
            incidents,
            partition_logged,
            offset,
            steady_keys,
            episode_keys,
            etcd_failures,
        } = input;
        let stop = report.stop_mono_ns.unwrap_or(report.started_mono_ns);
        let end = report.ended_mono_ns;
        let crashed: HashSet<u32> = report.stopped.iter().map(|s| s.id).collect();

        // Each monitor's convictions of crashed nodes, and its mistakes
        // while the load ran.
        let mut convictions: HashMap<u32, Vec<Option<u64>>> = crashed
            .iter()
            .map(|&id| (id, vec![None; logs.len()]))
            .collect();
        let mut false_downs = vec![0; logs.len()];
        let mut false_suspects = vec![0; logs.len()];
        for (m, records) in logs.iter().enumerate() {
            for r in records.iter().filter(|r| r.mono_ns <= end) {
                if let Some(slots) = convictions.get_mut(&r.node_id) {
                    if r.event == "down" && r.mono_ns >= stop && slots[m].is_none() {
                        slots[m] = Some(r.mono_ns);
                    }
                    if r.mono_ns < stop && matches!(r.event.as_str(), "down" | "suspect") {
                        false_suspects[m] += 1;
                    }
                } else if r.event == "down" {
                    false_downs[m] += 1;
                } else if r.event == "suspect" {
                    false_suspects[m] += 1;
                }
            }
        }
        let convicted = (0..logs.len())
            .map(|m| convictions.values().filter(|v| v[m].is_some()).count())
            .collect();

        // The group's actions.
        let mut downs: HashMap<u32, Vec<u64>> = HashMap::new();
        let mut other_actions = 0;
        for b in &batches {
            if b.event == "down" && crashed.contains(&b.node_id) {
                downs
                    .entry(b.node_id)
                    .or_default()
                    .push(to_mono(b.unix_ns, offset));
            } else {
                other_actions += 1;
            }
        }
        let batch_starts: HashSet<(u64, &str)> = batches
            .iter()
            .map(|b| (b.unix_ns, b.monitor.as_str()))
            .collect();
        let downs_once = crashed
            .iter()
            .filter(|id| downs.get(id).is_some_and(|d| d.len() == 1))
            .count();
        let downs_missing = crashed.iter().filter(|id| !downs.contains_key(id)).count();
        let downs_repeated = crashed
            .iter()
            .filter(|id| downs.get(id).is_some_and(|d| d.len() > 1))
            .count();
        let recorded: HashMap<u32, u64> = incidents
            .iter()
            .filter(|(id, i)| crashed.contains(id) && i.state == "down")
            .map(|(id, i)| (*id, to_mono(i.unix_ms * 1_000_000, offset)))
            .collect();
        let mut incidents_by_leader = BTreeMap::new();
        for (_, incident) in &incidents {
            *incidents_by_leader
                .entry(incident.leader.clone())
                .or_default() += 1;
        }
        let incidents_in_etcd = incidents
            .iter()
            .filter(|(_, i)| i.state == "down" && i.generation == 1)
            .count();

        let majority = |id: &u32| convictions.get(id).and_then(|v| second(v));
        let action = |id: &u32| downs.get(id).and_then(|d| d.iter().min().copied());
        let spread = |f: &dyn Fn(&u32) -> Option<i64>| Spread::of(crashed.iter().filter_map(f));
        let first_conviction = convictions.values().flatten().flatten().min().copied();
        let last_majority = crashed.iter().filter_map(majority).max();
        let recorded_before_last_majority =
            last_majority.map_or(0, |last| recorded.values().filter(|&&t| t <= last).count());
        let last_recorded = recorded.values().max().copied();
        let last_action = downs.values().flatten().max().copied();
        let complete = downs_missing == 0 && !crashed.is_empty();
        let span = first_conviction
            .zip(last_recorded.or(last_action))
            .map(|(first, last)| last.saturating_sub(first) as f64 / 1e9)
            .filter(|&s| s > 0.0);
        let episode = Writes::between(&after_steady, &after_episode);
        let brake_engaged = after_episode
            .agents
            .iter()
            .map(|a| a.brake_engaged)
            .collect();

        let mut carried = Vec::new();
        if report.achieved_rate < RATE_FLOOR * report.rate {
            carried.push(format!(
                "the load generator sent {:.0} heartbeats/s of {:.0}",
                report.achieved_rate, report.rate
            ));
        }
        if report.send_errors > 0 || report.unsent > 0 {
            carried.push(format!(
                "{} send errors, {} heartbeats unsent",
                report.send_errors, report.unsent
            ));
        }
        let lost: usize = false_downs.iter().sum();
        if lost > 0 {
            carried.push(format!(
                "{lost} downs of nodes still beating (per monitor {false_downs:?}): heartbeats \
                 were lost"
            ));
        }

        Self {
            nodes,
            crashed: crashed.len(),
            interval_ms: SCALE_TIMING.interval.as_secs_f64() * 1e3,
            timeout_ms: SCALE_TIMING.timeout().as_secs_f64() * 1e3,
            sweep_period_ms: SCALE_TIMING.sweep_period.as_secs_f64() * 1e3,
            fleet_up_s: fleet_up.as_secs_f64(),
            steady_transitions: Writes::between(&before, &after_steady).transitions,
            steady: Writes::between(&before, &after_steady),
            episode_span_s: span,
            episode_ops_per_s: span.map(|s| episode.ops_total / s),
            episode_txns_per_s: span.map(|s| episode.txns_total / s),
            episode,
            crash_to_majority: spread(&|id| Some(signed(majority(id)?, stop))),
            crash_to_recorded: spread(&|id| Some(signed(*recorded.get(id)?, stop))),
            crash_to_action: spread(&|id| Some(signed(action(id)?, stop))),
            majority_to_recorded: spread(&|id| Some(signed(*recorded.get(id)?, majority(id)?))),
            majority_to_action: spread(&|id| Some(signed(action(id)?, majority(id)?))),
            recorded_before_last_majority,
            all_recorded_ms: complete
                .then_some(last_recorded)
                .flatten()
                .map(|t| signed(t, stop) as f64 / 1e6),
            all_actions_ms: complete
                .then_some(last_action)
                .flatten()
                .map(|t| signed(t, stop) as f64 / 1e6),
            incidents_in_etcd,
            incidents_by_leader,
            downs_once,
            downs_missing,
            downs_repeated,
            other_actions,
            batches: batch_starts.len(),
            false_downs,
            false_suspects,
            convicted,
            brake_engaged,
            partition_logged,
            steady_keys,
            episode_keys,
            etcd_failures,
            load: report,
            carried,
        }
    }

    fn label(&self) -> String {
        format!(
            "{} nodes at {:.0} s x 3",
            si(f64::from(self.nodes)),
            self.interval_ms / 1e3
        )
    }

    fn print(&self) {
        let per_monitor = |values: &[f64]| {
            values
                .iter()
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let mut table = Table::new(&["measure", "value"]).text_column(1);
        let mut row = |name: &str, value: String| table.row(vec![name.to_owned(), value]);
        row(
            "load: requested / achieved heartbeats/s",
            format!(
                "{} / {} (x3 monitors on the wire)",
                si(self.load.rate),
                si(self.load.achieved_rate)
            ),
        );
        row(
            "every node heard by every monitor, group settled",
            format!("{:.1} s into the load", self.fleet_up_s),
        );
        row(
            "steady window: state changes m1 / m2 / m3",
            format!(
                "{:.1} s: {}",
                self.steady.seconds,
                per_monitor(&self.steady_transitions)
            ),
        );
        row(
            "steady: agent etcd txns (ops) m1 / m2 / m3",
            format!(
                "{} ({}) = {:.2} txns/s",
                per_monitor(&self.steady.txns),
                per_monitor(&self.steady.ops),
                self.steady.txns_per_s
            ),
        );
        row(
            "steady: etcd proposals committed",
            format!(
                "{:.0} = {:.2}/s (puts {:.0}, deletes {:.0}, txns {:.0})",
                self.steady.etcd.proposals_committed,
                self.steady.etcd_proposals_per_s,
                self.steady.etcd.puts,
                self.steady.etcd.deletes,
                self.steady.etcd.txns
            ),
        );
        row(
            "steady: etcd's watch of the group's keys",
            describe_counts(&self.steady_keys),
        );
        row(
            "crash: nodes stopped at once",
            format!("{} ({:.0}%)", self.crashed, STOP_FRACTION * 100.0),
        );
        row(
            "crashed nodes convicted m1 / m2 / m3",
            self.convicted
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" / "),
        );
        row(
            "episode: agent etcd txns m1 / m2 / m3 (all)",
            format!(
                "{} ({:.0})",
                per_monitor(&self.episode.txns),
                self.episode.txns_total
            ),
        );
        row(
            "episode: agent etcd ops m1 / m2 / m3 (all)",
            format!(
                "{} ({:.0}), {:.1} ops per txn",
                per_monitor(&self.episode.ops),
                self.episode.ops_total,
                self.episode.ops_total / self.episode.txns_total.max(1.0)
            ),
        );
        row(
            "episode: etcd proposals committed",
            format!(
                "{:.0} (puts {:.0}, deletes {:.0}, txns {:.0})",
                self.episode.etcd.proposals_committed,
                self.episode.etcd.puts,
                self.episode.etcd.deletes,
                self.episode.etcd.txns
            ),
        );
        row(
            "episode: etcd's watch of the group's keys",
            describe_counts(&self.episode_keys),
        );
        row(
            "episode: writes/s (first conviction -> last record)",
            match (
                self.episode_span_s,
                self.episode_txns_per_s,
                self.episode_ops_per_s,
            ) {
                (Some(span), Some(txns), Some(ops)) => {
                    format!("{txns:.0} txns/s, {ops:.0} ops/s over {span:.2} s")
                }
                _ => "-".to_owned(),
            },
        );
        let spread = |s: &Spread| {
            format!(
                "median {} / p90 {} / max {} ms (n {})",
                fmt_ms(s.median_ms),
                fmt_ms(s.p90_ms),
                fmt_ms(s.max_ms),
                s.n
            )
        };
        row(
            "crash -> majority's conviction",
            spread(&self.crash_to_majority),
        );
        row(
            "majority's conviction -> incident recorded",
            spread(&self.majority_to_recorded),
        );
        row(
            "majority's conviction -> action started",
            spread(&self.majority_to_action),
        );
        row(
            "incidents recorded before the last majority conviction",
            format!("{} of {}", self.recorded_before_last_majority, self.crashed),
        );
        row(
            "crash -> every group down recorded / run",
            format!(
                "{} / {} ms",
                fmt_ms(self.all_recorded_ms),
                fmt_ms(self.all_actions_ms)
            ),
        );
        row(
            "group downs: once / missing / repeated",
            format!(
                "{} / {} / {} (in {} batch runs); other actions {}",
                self.downs_once,
                self.downs_missing,
                self.downs_repeated,
                self.batches,
                self.other_actions
            ),
        );
        row(
            "incidents in etcd (down, 1st), by leader",
            format!(
                "{} ({})",
                self.incidents_in_etcd,
                self.incidents_by_leader
                    .iter()
                    .map(|(m, n)| format!("{m} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        row(
            "brake (share 0.55) engaged m1 / m2 / m3 (PARTITION SUSPECTED)",
            format!(
                "{} ({})",
                per_monitor(&self.brake_engaged),
                self.partition_logged
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" / ")
            ),
        );
        row(
            "nodes still beating: downs / suspects m1 / m2 / m3",
            format!(
                "{} / {}",
                self.false_downs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
                self.false_suspects
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
        row(
            "failed etcd requests of the agents",
            describe_warnings(&self.etcd_failures),
        );
        if !self.carried.is_empty() {
            row("NOT CARRIED", self.carried.join("; "));
        }
        table.print(&format!(
            "etcd writes of the group, {}: steady state, then {:.0}% crash at once \
             (sweep {:.0} ms, brake at its default)",
            self.label(),
            STOP_FRACTION * 100.0,
            self.sweep_period_ms
        ));
    }

    fn targets(&self, target_nodes: u32) -> Vec<Target> {
        let scale_note = if self.nodes == target_nodes {
            String::new()
        } else {
            format!(
                " (measured at {}: the machine did not carry {})",
                si(f64::from(self.nodes)),
                si(f64::from(target_nodes))
            )
        };
        vec![
            Target::new(
                PHASE,
                "steady-state etcd writes, agents",
                self.steady.txns_per_s,
                "writes/s",
                Bound::AtMost,
                0.0,
            )
            .with_note(format!(
                "{} over {:.1} s: hb_group_etcd_writes_total of the three agents{scale_note}",
                self.label(),
                self.steady.seconds,
            )),
            Target::new(
                PHASE,
                "steady-state etcd writes, etcd's count",
                self.steady.etcd_proposals_per_s,
                "writes/s",
                Bound::AtMost,
                0.0,
            )
            .with_note(format!(
                "{:.0} proposals committed over {:.1} s (etcd member m1); its watch of the \
                 group's keys: {}",
                self.steady.etcd.proposals_committed,
                self.steady.seconds,
                describe_counts(&self.steady_keys)
            )),
            Target::new(
                PHASE,
                format!(
                    "1% crash of {}: wrong group downs",
                    si(f64::from(self.nodes))
                ),
                (self.downs_missing + self.downs_repeated + self.other_actions) as f64,
                "nodes",
                Bound::AtMost,
                0.0,
            )
            .with_note(format!(
                "{} crashed nodes: {} exactly one down, {} none, {} more; {} other actions; \
                 every down recorded {} ms after the crash{scale_note}",
                self.crashed,
                self.downs_once,
                self.downs_missing,
                self.downs_repeated,
                self.other_actions,
                fmt_ms(self.all_recorded_ms)
            )),
        ]
    }
}

/// The summary's notes: failed etcd requests, the write volume and the
/// verdicts' delay at scale, and a fleet smaller than the target.
fn facts(latency: &Latency, attempts: &[Scale], target_nodes: u32) -> Vec<String> {
    let mut facts = Vec::new();
    let Some(last) = attempts.last() else {
        return facts;
    };
    let failures = latency.etcd_failures.len() + last.etcd_failures.len();
    if failures > 0 {
        facts.push(format!(
            "group: {failures} failed etcd requests of the agents (detection lab: {}; scale \
             lab: {})",
            describe_warnings(&latency.etcd_failures),
            describe_warnings(&last.etcd_failures)
        ));
    }
    if last.nodes != target_nodes {
        facts.push(format!(
            "group: measured at {} nodes; the target scale {} was not carried by this \
             machine: {}",
            si(f64::from(last.nodes)),
            si(f64::from(target_nodes)),
            attempts
                .iter()
                .filter(|a| !a.carried.is_empty())
                .map(|a| format!("{}: {}", si(f64::from(a.nodes)), a.carried.join("; ")))
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    facts.push(format!(
        "group: 1% crash of {}: {:.0} etcd txns / {:.0} ops by the agents ({:.0} ops/s over \
         {:.2} s), etcd committed {:.0} proposals; majority conviction -> action median {} ms, \
         max {} ms; {} of {} incidents recorded before the last majority conviction; brake \
         engaged on {} monitors",
        si(f64::from(last.nodes)),
        last.episode.txns_total,
        last.episode.ops_total,
        last.episode_ops_per_s.unwrap_or(0.0),
        last.episode_span_s.unwrap_or(0.0),
        last.episode.etcd.proposals_committed,
        fmt_ms(last.majority_to_action.median_ms),
        fmt_ms(last.majority_to_action.max_ms),
        last.recorded_before_last_majority,
        last.crashed,
        last.brake_engaged.iter().filter(|&&b| b > 0.0).count()
    ));
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_samples() {
        let text = "# HELP hb_nodes Nodes\n# TYPE hb_nodes gauge\nhb_nodes{state=\"up\"} 99\n\
                    hb_nodes{state=\"down\"} 1\nhb_group_etcd_writes_total 12\n\
                    hb_transitions_total{from=\"up\",to=\"down\"} 3\n\
                    hb_transitions_total{from=\"down\",to=\"up\"} 2\n";
        assert_eq!(metric(text, "hb_nodes", &["state=\"up\""]), Some(99.0));
        assert_eq!(metric(text, "hb_nodes", &[]), Some(100.0));
        assert_eq!(metric(text, "hb_group_etcd_writes_total", &[]), Some(12.0));
        assert_eq!(metric(text, "hb_transitions_total", &[]), Some(5.0));
        assert_eq!(metric(text, "hb_group", &[]), None);
        let counters = AgentCounters::parse(text);
        assert_eq!((counters.up, counters.writes), (99.0, 12.0));
    }

    #[test]
    fn reads_etcd_watch_fields_and_log_times() {
        let text = "\"ClusterID\" : 1\n\"Revision\" : 7\n\"Type\" : PUT\n\
                    \"Key\" : \"hb/lab/election/abc\"\n\"CreateRevision\" : 7\n\
                    \"ModRevision\" : 7\n\"Value\" : \"m1\"\n\"Type\" : DELETE\n\
                    \"Key\" : \"hb/lab/election/abc\"\n\"ModRevision\" : 8\n\
                    \"Type\" : PUT\n\"Key\" : \"hb/lab/opinions/1042/m2\"\n\
                    \"ModRevision\" : 9\n";
        let events = parse_key_events(text);
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[1],
            KeyEvent {
                put: false,
                key: "hb/lab/election/abc".to_owned(),
                revision: 8
            }
        );
        let steady = writes_by_key(&events, 6, 8);
        assert_eq!(
            describe_counts(&steady),
            "election delete 1, election put 1"
        );
        assert_eq!(
            describe_counts(&writes_by_key(&events, 8, 9)),
            "opinions put 1"
        );
        assert_eq!(field(text, "Revision"), Some("7"));
        assert_eq!(
            log_time_unix_ns("2026-12-02T05:09:16.963714Z  WARN hb::group::worker: x"),
            Some(1_796_188_156_963_714_000)
        );
        assert_eq!(
            log_time_unix_ns("1970-01-01T00:00:01Z x"),
            Some(1_000_000_000)
        );
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m x"),
            "2026  WARN x"
        );
    }

    #[test]
    fn spreads_of_signed_samples() {
        let s = Spread::of([-2_000_000, 1_000_000, 3_000_000, 10_000_000]);
        assert_eq!(s.n, 4);
        assert_eq!(s.median_ms, Some(1.0));
        assert_eq!(s.p90_ms, Some(10.0));
        assert_eq!(s.max_ms, Some(10.0));
        assert_eq!(s.min_ms, Some(-2.0));
        assert_eq!(Spread::of([]).median_ms, None);
        assert_eq!(second(&[Some(5), None, Some(3)]), Some(5));
        assert_eq!(second(&[Some(5), None, None]), None);
        assert_eq!(second(&[Some(7), Some(5), Some(6)]), Some(6));
    }

    #[test]
    fn summarises_crashes() {
        let crash = |conv: [Option<u64>; 3], action: Option<u64>, monitor: &str| Crash {
            node: 1,
            crash_mono_ns: 1_000_000_000,
            convicted_mono_ns: conv.to_vec(),
            action_mono_ns: action,
            action_monitor: Some(monitor.to_owned()),
            downs: 1,
            ups: 1,
            others: 0,
            up_after_ms: 300.0,
            etcd_failures: 0,
        };
        let ms = |m: u64| Some(1_000_000_000 + m * 1_000_000);
        let latency = Latency::summarise(
            vec![
                crash([ms(300), ms(310), ms(350)], ms(330), "m2"),
                crash([ms(320), ms(305), None], ms(345), "m1"),
            ],
            Duration::from_secs(2),
            0,
            Vec::new(),
        );
        assert_eq!(latency.single.n, 5);
        assert_eq!(latency.majority.median_ms, Some(310.0));
        assert_eq!(latency.overhead.n, 2);
        assert_eq!(latency.overhead.median_ms, Some(20.0));
        assert_eq!(latency.overhead.max_ms, Some(25.0));
        assert_eq!(latency.overhead_vs_fastest.max_ms, Some(40.0));
        assert_eq!(latency.unclean, 0);
        // m2 convicted second in the first crash, m1 second in the other.
        assert_eq!(latency.leader_was_second, 2);
        assert_eq!(latency.actions_by_monitor["m1"], 1);
    }
}
