//! Phase `probe`: the agent probing 100,000 addresses with ICMP once a
//! second (100,000 probes/s; quick: 20,000), against the targets of issue
//! 15.
//!
//! The lab ([`lab`]): the agent on the XDP datapath in a monitor namespace,
//! a responder namespace whose kernel answers ICMP echo for the whole block
//! 198.18.64.0 .. (`ip route add local CIDR dev lo` for the CIDRs that
//! cover it exactly), joined by a veth pair whose two ends receive through
//! threaded NAPI. Before the agent starts, a few addresses of the block
//! (the first, the last and some between) are pinged from the monitor's
//! namespace: the lab answers. Then the agent starts with one
//! `[[node_ranges]]` (`probe = "icmp"`, interval 1 s, `timeout_multiplier`
//! 3, sweep every 100 ms, the defaults) and the bench waits until every
//! node is up.
//!
//! Measured over a steady window of 30 s (quick: 5 s), starting 3 s after
//! every node is up:
//!
//! 1. the agent's CPU: its CPU clock (utime + stime, all threads, to the
//!    ns), as % of one core, per thread (`/proc/PID/task/*/schedstat`,
//!    with user and system time from the ticks), and per second (the worst
//!    second shown). The agent runs on CPU 0 and the echo round trip on the
//!    other CPU (RPS, see [`lab`]), so the clock holds building and sending
//!    the probes, the sweep and the event log, not the emulated hosts'
//!    work nor the replies' receive; the machine's softirq time (/proc/stat,
//!    tick-sampled, so it misses softirq on a CPU that is otherwise idle
//!    and the tick stopped) is shown beside it, as where that went. Target:
//!    below 10% of a core;
//! 2. replies lost: probes sent (the agent's `probes.sent`, as
//!    `hb_probes_sent_total{kind="icmp"}`) against replies recorded by the
//!    XDP program (`probe_accepted`) over the window, with the responder's
//!    count of requests received (nftables, read a few ms apart from the
//!    agent's counters) to say which way a loss happened, the veth drop
//!    counters, and the datapath's other `probe_*`
//!    counters. Target: no node down in steady state (no `down` event from
//!    the start of the agent to the removal below);
//! 3. detection: 1% of the addresses (every 100th node, 1,000) are taken
//!    away at once (one nftables transaction adds them to the responder's
//!    drop set); detection latency = the `mono_ns` of each one's `down`
//!    event (the sweep that saw it) - `CLOCK_MONOTONIC` just before the
//!    transaction. Its last reply came up to one interval before, so the
//!    latency lies between timeout - interval and timeout, plus up to a
//!    sweep period. Targets: p99 <= timeout + sweep period + 20 ms (the
//!    transaction and the reply in flight); every removed node down exactly
//!    once and no other node down;
//! 4. the XDP program's cost per accepted probe reply against an accepted
//!    heartbeat's: `hb-tools bench xdp-cost` (BPF_PROG_TEST_RUN, as the
//!    phase `xdp-cost`) run five times, medians. Target: at most 1.2x.
//!
//! Before the agent starts, the floor under it: a bare loop of the bench
//! ([`icmp::floor`]) sends echo requests from the monitor's namespace for
//! 10 s (quick: 3 s) at the same rate, as the agent's prober does (a turn
//! every millisecond, `sendmmsg` batches of 64, 40-byte messages), to the
//! same addresses; the responder answers them, and the monitor drops the
//! replies at its interface's ingress (nftables, where the agent's XDP
//! program would record them). Its thread's CPU clock is the same round
//! trip without hb's schedule, tags and bookkeeping: the agent's CPU
//! clock minus the floor's is what hb adds.
//!
//! The summary compares the per-probe cost with Cilium's all-to-all health
//! probing, 293,517 probes/s at 5,000 nodes (CFP-32820): what hb's cost per
//! probe (sending, and receiving the reply) would make of that rate.

mod icmp;
mod lab;
pub mod quality;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hb_tests::{interrupt, monotonic_ns};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::lab::{Block, NftCounters, ProbeAgent, ProbeLab, ProbeSetup, delta_ns, ksoftirqd_ns};
use super::{
    Ctx, PhaseOutput,
    machine::{self, CpuSample, CpuSpent},
    output::{Bound, Progress, Table, Target, ms, si},
    stats::percentile,
};

const PHASE: &str = "probe";
/// The first probed address: node 1 is probed there, node 1 + k at + k.
const FIRST_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 0);
const INTERVAL: Duration = Duration::from_secs(1);
const MULTIPLIER: u32 = 3;
const SWEEP: Duration = Duration::from_millis(100);
/// `probe.max_rate`: the contract's example, above the 100,000 probes/s.
const MAX_RATE: u32 = 200_000;
/// Every this-many-th node is taken away (1%).
const REMOVE_EVERY: u32 = 100;
/// Slack on top of timeout + sweep period in the detection target.
const SLACK: Duration = Duration::from_millis(20);
/// The agent's CPU must stay below this share of one core, %.
const CPU_LIMIT_PERCENT: f64 = 10.0;
/// An accepted probe reply's XDP cost, at most this times a heartbeat's.
const XDP_RATIO_LIMIT: f64 = 1.2;
/// Runs of `hb-tools bench xdp-cost`; the medians are compared.
const XDP_RUNS: usize = 5;
const XDP_HEARTBEAT_CASE: &str = "accepted heartbeat";
const XDP_PROBE_CASE: &str = "accepted probe reply";
/// Cilium's all-to-all ICMP health probing (CFP-32820).
const CILIUM_PROBES_PER_S: f64 = 293_517.0;
const CILIUM_NODES: u32 = 5000;
/// How long every node may take to be up after the agent answers.
const ALL_UP_WITHIN: Duration = Duration::from_secs(30);
/// From every node up to the start of the window.
const SETTLE: Duration = Duration::from_secs(3);
/// How long the floor sender runs.
fn floor_duration(quick: bool) -> Duration {
    Duration::from_secs(if quick { 3 } else { 10 })
}
/// After the removal, the bench waits timeout + interval + sweep + this.
const DETECTION_MARGIN: Duration = Duration::from_millis(1500);

/// How big the run is.
#[derive(Debug, Clone, Copy, Serialize)]
struct Size {
    nodes: u32,
    window_s: u64,
}

impl Size {
    fn of(quick: bool) -> Self {
        if quick {
            Self {
                nodes: 20_000,
                window_s: 5,
            }
        } else {
            Self {
                nodes: 100_000,
                window_s: 30,
            }
        }
    }
}

/// The fields of the agent's event log read here.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Event {
    pub(super) mono_ns: u64,
    pub(super) event: String,
    pub(super) node_id: u32,
    #[serde(default)]
    pub(super) since_last_heartbeat_ms: Option<u64>,
}

/// The counters the bench reads from `hb status --json`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(super) struct ProbeCounters {
    /// Probes sent (retries included).
    pub(super) sent: u64,
    pub(super) retries: u64,
    pub(super) failed: u64,
    /// The datapath's: replies recorded, and those refused.
    pub(super) accepted: u64,
    pub(super) bad_tag: u64,
    pub(super) replay: u64,
    pub(super) unknown_node: u64,
    pub(super) malformed: u64,
}

impl ProbeCounters {
    pub(super) fn of(status: &Value) -> Result<Self> {
        let probes = &status["probes"];
        let counters = &status["counters"];
        let field = |v: &Value, name: &str| {
            v[name]
                .as_u64()
                .with_context(|| format!("no {name} in `hb status --json`: {status}"))
        };
        Ok(Self {
            sent: field(probes, "sent")?,
            retries: field(probes, "retries")?,
            failed: field(probes, "failed")?,
            accepted: field(counters, "probe_accepted")?,
            bad_tag: field(counters, "probe_bad_tag")?,
            replay: field(counters, "probe_replay")?,
            unknown_node: field(counters, "probe_unknown_node")?,
            malformed: field(counters, "probe_malformed")?,
        })
    }

    pub(super) fn since(&self, before: &Self) -> Self {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        Self {
            sent: d(self.sent, before.sent),
            retries: d(self.retries, before.retries),
            failed: d(self.failed, before.failed),
            accepted: d(self.accepted, before.accepted),
            bad_tag: d(self.bad_tag, before.bad_tag),
            replay: d(self.replay, before.replay),
            unknown_node: d(self.unknown_node, before.unknown_node),
            malformed: d(self.malformed, before.malformed),
        }
    }
}

/// Waits until every one of `nodes` is up (at most [`ALL_UP_WITHIN`]).
pub(super) fn wait_all_up(agent: &mut ProbeAgent, nodes: u32, live: &[&str]) -> Result<()> {
    let deadline = Instant::now() + ALL_UP_WITHIN;
    loop {
        let status = agent.status()?;
        let states: BTreeMap<String, u64> = serde_json::from_value(status["states"].clone())
            .with_context(|| format!("no states in `hb status --json`: {status}"))?;
        let up: u64 = live.iter().filter_map(|s| states.get(*s)).sum();
        if up >= u64::from(nodes) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "only {up} of {nodes} probed nodes were {} {} s after the agent started: {states:?}; \
                 probes {}, datapath counters {}\nagent output:\n{}",
                live.join(" or "),
                ALL_UP_WITHIN.as_secs(),
                status["probes"],
                status["counters"],
                agent.log_tail(20)
            );
        }
        interrupt::sleep(Duration::from_millis(250))?;
    }
}

/// The addresses the lab check pings: the first, the last, and some
/// between.
pub(super) fn sample_addresses(block: Block) -> Vec<Ipv4Addr> {
    let mut addresses: Vec<Ipv4Addr> = (0..8)
        .map(|i| block.address(i * (block.count / 8)))
        .collect();
    addresses.push(block.last());
    addresses.dedup();
    addresses
}

/// The machine's load averages (/proc/loadavg), as `uptime` shows them.
pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// What the steady window measured.
#[derive(Debug, Serialize)]
struct Window {
    wall_s: f64,
    load_average_before: String,
    load_average_after: String,
    agent_cpu_ns: u64,
    agent_cpu_percent: f64,
    /// Each second's agent CPU, % of a core.
    agent_cpu_percent_per_second: Vec<f64>,
    /// The agent's threads by name (threads of one name summed): CPU % of
    /// a core, and of it user and system time (tick-sampled).
    agent_threads: BTreeMap<String, ThreadShare>,
    /// The agent's user and system time (all threads, tick-sampled), % of
    /// a core.
    agent_user_percent: f64,
    agent_system_percent: f64,
    /// The machine's softirq time (tick-sampled), % of a core: the echo
    /// round trip on the other CPU (see the lab), and any other softirq of
    /// the machine.
    softirq_percent: f64,
    /// Of it, what ran in `ksoftirqd` (exact).
    ksoftirqd_percent: f64,
    machine: CpuSpent,
    probes: ProbeCounters,
    probes_per_s: f64,
    responder: NftCounters,
    /// Probes sent - replies recorded.
    lost: i64,
    veth_drops: BTreeMap<String, u64>,
    agent_ns_per_probe: f64,
}

/// One thread's (or name's) share of a core, %.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct ThreadShare {
    percent: f64,
    user_percent: f64,
    system_percent: f64,
}

/// What the removal showed.
#[derive(Debug, Serialize)]
struct Detection {
    removed: usize,
    /// `nft add element` took this long, ms.
    transaction_ms: f64,
    detected: usize,
    missed: usize,
    /// Removed nodes declared down more than once.
    repeated: usize,
    /// Nodes not removed declared down after the removal.
    false_downs: usize,
    /// `down` events of any node before the removal.
    steady_downs: usize,
    /// The first of those and of the false downs: node, ms from the
    /// removal (negative: before), silence then (ms).
    unexpected_downs: Vec<(u32, f64, Option<u64>)>,
    steady_suspects: usize,
    latencies_ns: Vec<u64>,
    p50_ns: Option<u64>,
    p99_ns: Option<u64>,
    max_ns: Option<u64>,
    min_ns: Option<u64>,
    limit_ns: u64,
}

/// The XDP costs compared.
#[derive(Debug, Serialize)]
struct XdpCost {
    heartbeat_ns: f64,
    probe_reply_ns: f64,
    ratio: f64,
    heartbeat_runs: Vec<f64>,
    probe_reply_runs: Vec<f64>,
}

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let size = Size::of(ctx.quick);
    let setup = ProbeSetup {
        nodes: size.nodes,
        interval: INTERVAL,
        timeout_multiplier: MULTIPLIER,
        sweep_period: SWEEP,
        confirm: false,
        max_rate: MAX_RATE,
    };
    let block = Block {
        first: FIRST_ADDRESS,
        count: size.nodes,
    };
    let planned = Duration::from_secs(size.window_s + 25);
    let lab = ProbeLab::build(ctx.work.join(PHASE), block, 0)?;
    println!("  {}", lab.describe());
    icmp::ensure_answered(lab.monitor_netns(), sample_addresses(block))?;
    println!(
        "  lab check: {} addresses of the block answer ICMP echo from the monitor's namespace",
        sample_addresses(block).len()
    );
    println!(
        "  {} nodes probed with ICMP every {} s ({}/s), timeout {} x {} s, sweep every {} ms, \
         XDP; window {} s; then every {}th node taken away",
        size.nodes,
        INTERVAL.as_secs(),
        si(f64::from(size.nodes) / INTERVAL.as_secs_f64()),
        MULTIPLIER,
        INTERVAL.as_secs(),
        SWEEP.as_millis(),
        size.window_s,
        REMOVE_EVERY
    );
    let progress = Progress::start(PHASE, planned);
    progress.step("the floor sender");
    let floor = measure_floor(&lab, block, floor_duration(ctx.quick))?;
    progress.say(format!(
        "  floor: a bare sendmmsg loop sent {} echo requests ({} refused) in {:.1} s ({}/s; {} reached the \
         responder, {} replies came back): {:.1}% of a core, {:.0} ns per request; softirq \
         {:.1}% (ksoftirqd {:.1}%) beside it (load {})",
        floor.floor.sent,
        floor.floor.refused,
        floor.floor.wall_s,
        si(floor.floor.sent as f64 / floor.floor.wall_s),
        floor.reached_responder,
        floor.replies,
        floor.floor.cpu_percent,
        floor.floor.ns_per_probe,
        floor.softirq_percent,
        floor.ksoftirqd_percent,
        floor.load_average
    ));
    progress.step("starting the agent");
    let mut agent = lab.start_agent(ctx.hb, &setup)?;
    progress.step("waiting for every node to be up");
    wait_all_up(&mut agent, size.nodes, &["up"])?;
    interrupt::sleep(SETTLE)?;
    progress.step(format!("steady window ({} s)", size.window_s));
    let window = measure_window(&lab, &mut agent, size)?;

    progress.step("taking 1% of the addresses away");
    let removed_ids: Vec<u32> = (1..=size.nodes)
        .filter(|id| (id - 1) % REMOVE_EVERY == REMOVE_EVERY / 2)
        .collect();
    let addresses: Vec<Ipv4Addr> = removed_ids.iter().map(|id| block.address(id - 1)).collect();
    let removed_at = monotonic_ns();
    let started = Instant::now();
    lab.take_away(&addresses)?;
    let transaction = started.elapsed();
    interrupt::sleep(setup.timeout() + INTERVAL + SWEEP + DETECTION_MARGIN)?;
    agent.stop()?;
    let events: Vec<Event> = agent.records()?;
    drop(progress);
    let detection = detect(
        &events,
        &removed_ids,
        removed_at,
        transaction,
        setup.timeout() + SWEEP + SLACK,
    );
    drop(lab);

    let xdp = xdp_cost(ctx)?;
    print_tables(size, &window, &detection, &xdp, &floor);
    let targets = targets(&window, &detection, &xdp, &floor, size);
    let facts = facts(&window, &xdp, &floor);
    for fact in &facts {
        println!("  {fact}");
    }
    Ok(PhaseOutput {
        json: json!({
            "nodes": size.nodes,
            "first_address": FIRST_ADDRESS.to_string(),
            "last_address": block.last().to_string(),
            "local_routes": block.cidrs().iter().map(|(a, p)| format!("{a}/{p}")).collect::<Vec<_>>(),
            "interval_s": INTERVAL.as_secs_f64(),
            "timeout_multiplier": MULTIPLIER,
            "sweep_period_ms": SWEEP.as_secs_f64() * 1e3,
            "max_rate": MAX_RATE,
            "datapath": "xdp",
            "window_s": size.window_s,
            "cpu_includes": "agent: its CPU clock (every thread, to the ns), pinned to CPU 0: \
                building and sending the probes (sendmmsg on raw sockets, the kernel's IP \
                output, veth transmit, RPS enqueue and IPI), the sweep, the event log; the echo \
                round trip (the responder's kernel answering, the reply's receive with the XDP \
                program) runs on the other CPU (RPS) and shows in the machine's softirq \
                (tick-sampled); floor: the same for a bare sendmmsg loop of the bench doing the \
                same round trip (its replies dropped at ingress by nftables)",
            "window": window,
            "floor": floor,
            "detection": detection,
            "xdp_cost": xdp,
            "cilium": {
                "probes_per_s": CILIUM_PROBES_PER_S,
                "nodes": CILIUM_NODES,
                "source": "CFP-32820",
                "hb_agent_percent_of_a_core":
                    window.agent_ns_per_probe * CILIUM_PROBES_PER_S / 1e7,
                "hb_xdp_percent_of_a_core": xdp.probe_reply_ns * CILIUM_PROBES_PER_S / 1e7,
            },
        }),
        targets,
        plots: Vec::new(),
        facts,
    })
}

/// The floor sender's run and the softirq beside it.
#[derive(Debug, Serialize)]
struct FloorMeasure {
    floor: icmp::Floor,
    reached_responder: u64,
    /// Replies the monitor dropped at ingress.
    replies: u64,
    softirq_percent: f64,
    ksoftirqd_percent: f64,
    load_average: String,
}

/// Runs the floor sender (see the module's doc) at the agent's rate.
fn measure_floor(lab: &ProbeLab, block: Block, duration: Duration) -> Result<FloorMeasure> {
    let nft_before = lab.counters()?;
    let replies_before = lab.floor_replies()?;
    let ksoftirqd_before = ksoftirqd_ns()?;
    let machine_before = machine::machine_ticks()?;
    let floor = icmp::floor(
        lab.monitor_netns(),
        block.first,
        block.count,
        block.count,
        duration,
    )?;
    let machine_after = machine::machine_ticks()?;
    let ksoftirqd_after = ksoftirqd_ns()?;
    let reached_responder = lab.counters()?.since(&nft_before).floor;
    let replies = lab.floor_replies()?.saturating_sub(replies_before);
    let softirq_percent = 100.0
        * machine_after.softirq.saturating_sub(machine_before.softirq) as f64
        / machine::user_hz() as f64
        / floor.wall_s;
    let ksoftirqd_percent =
        100.0 * delta_ns(&ksoftirqd_before, &ksoftirqd_after) as f64 / 1e9 / floor.wall_s;
    Ok(FloorMeasure {
        reached_responder,
        replies,
        softirq_percent,
        ksoftirqd_percent,
        load_average: load_average(),
        floor,
    })
}

/// Samples everything at the window's edges and the agent's CPU each
/// second.
fn measure_window(lab: &ProbeLab, agent: &mut ProbeAgent, size: Size) -> Result<Window> {
    let load_average_before = load_average();
    let status_before = agent.status()?;
    let nft_before = lab.counters()?;
    let drops_before = lab.veth_drops()?;
    let threads_before = agent.threads()?;
    let ksoftirqd_before = ksoftirqd_ns()?;
    let cpu_sample_before = CpuSample::take(agent.pid())?;
    let cpu_before = agent.cpu_ns()?;
    let start = Instant::now();
    let mut per_second = Vec::new();
    let mut last = (start, cpu_before);
    for second in 1..=size.window_s {
        let at = start + Duration::from_secs(second);
        interrupt::sleep(at.saturating_duration_since(Instant::now()))?;
        let now = (Instant::now(), agent.cpu_ns()?);
        let wall = now.0.duration_since(last.0).as_secs_f64();
        per_second.push(100.0 * (now.1 - last.1) as f64 / 1e9 / wall);
        last = now;
    }
    let cpu_after = agent.cpu_ns()?;
    let cpu_sample_after = CpuSample::take(agent.pid())?;
    let ksoftirqd_after = ksoftirqd_ns()?;
    let threads_after = agent.threads()?;
    let status_after = agent.status()?;
    let nft_after = lab.counters()?;
    let drops_after = lab.veth_drops()?;
    let wall_s = start.elapsed().as_secs_f64();
    let load_average_after = load_average();

    let probes = ProbeCounters::of(&status_after)?.since(&ProbeCounters::of(&status_before)?);
    let responder = nft_after.since(&nft_before);
    let percent = |ns: u64| 100.0 * ns as f64 / 1e9 / wall_s;
    let hz = machine::user_hz() as f64;
    let tick_percent = |ticks: u64| 100.0 * ticks as f64 / hz / wall_s;
    let mut agent_threads: BTreeMap<String, ThreadShare> = BTreeMap::new();
    let (mut user_ticks, mut system_ticks) = (0, 0);
    for (key, after) in &threads_after {
        let before = threads_before.get(key).copied().unwrap_or_default();
        let user = after.user_ticks.saturating_sub(before.user_ticks);
        let system = after.system_ticks.saturating_sub(before.system_ticks);
        user_ticks += user;
        system_ticks += system;
        let share = agent_threads.entry(key.1.clone()).or_default();
        share.percent += percent(after.ns.saturating_sub(before.ns));
        share.user_percent += tick_percent(user);
        share.system_percent += tick_percent(system);
    }
    let machine = cpu_sample_before.until(&cpu_sample_after);
    let agent_cpu_ns = cpu_after - cpu_before;
    let softirq_percent = 100.0 * machine.softirq_s / wall_s;
    let ksoftirqd_percent = percent(delta_ns(&ksoftirqd_before, &ksoftirqd_after));
    let veth_drops = drops_after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(drops_before.get(k).copied().unwrap_or(0)),
            )
        })
        .collect();
    Ok(Window {
        wall_s,
        load_average_before,
        load_average_after,
        agent_cpu_ns,
        agent_cpu_percent: percent(agent_cpu_ns),
        agent_cpu_percent_per_second: per_second,
        agent_threads,
        agent_user_percent: tick_percent(user_ticks),
        agent_system_percent: tick_percent(system_ticks),
        softirq_percent,
        ksoftirqd_percent,
        machine,
        probes_per_s: probes.sent as f64 / wall_s,
        lost: probes.sent as i64 - probes.accepted as i64,
        agent_ns_per_probe: agent_cpu_ns as f64 / (probes.sent.max(1)) as f64,
        probes,
        responder,
        veth_drops,
    })
}

/// The removal's outcome from the event log.
fn detect(
    events: &[Event],
    removed_ids: &[u32],
    removed_at: u64,
    transaction: Duration,
    limit: Duration,
) -> Detection {
    let removed: HashSet<u32> = removed_ids.iter().copied().collect();
    let mut downs: HashMap<u32, Vec<u64>> = HashMap::new();
    let (mut steady_downs, mut steady_suspects, mut false_downs) = (0, 0, 0);
    let mut unexpected_downs = Vec::new();
    for e in events {
        let before = e.mono_ns < removed_at;
        if e.event == "down"
            && (before || !removed.contains(&e.node_id))
            && unexpected_downs.len() < 20
        {
            unexpected_downs.push((
                e.node_id,
                (e.mono_ns as f64 - removed_at as f64) / 1e6,
                e.since_last_heartbeat_ms,
            ));
        }
        match e.event.as_str() {
            "down" if before => steady_downs += 1,
            "suspect" if before => steady_suspects += 1,
            "down" if removed.contains(&e.node_id) => {
                downs.entry(e.node_id).or_default().push(e.mono_ns);
            }
            "down" => false_downs += 1,
            _ => {}
        }
    }
    let mut latencies: Vec<u64> = downs
        .values()
        .filter_map(|times| times.iter().min())
        .map(|&t| t - removed_at)
        .collect();
    latencies.sort_unstable();
    Detection {
        removed: removed_ids.len(),
        transaction_ms: transaction.as_secs_f64() * 1e3,
        detected: latencies.len(),
        missed: removed_ids.len() - latencies.len(),
        repeated: downs.values().filter(|t| t.len() > 1).count(),
        false_downs,
        steady_downs,
        steady_suspects,
        unexpected_downs,
        p50_ns: percentile(&latencies, 0.5),
        p99_ns: percentile(&latencies, 0.99),
        max_ns: latencies.last().copied(),
        min_ns: latencies.first().copied(),
        latencies_ns: latencies,
        limit_ns: limit.as_nanos() as u64,
    }
}

/// `hb-tools bench xdp-cost`, [`XDP_RUNS`] times: the medians of an
/// accepted heartbeat and an accepted probe reply.
fn xdp_cost(ctx: &Ctx<'_>) -> Result<XdpCost> {
    #[derive(Deserialize)]
    struct Output {
        cases: Vec<Case>,
    }
    #[derive(Deserialize)]
    struct Case {
        case: String,
        ns_per_packet: f64,
    }
    let (distinct, repeat) = if ctx.quick {
        ("20000", "200000")
    } else {
        ("100000", "1000000")
    };
    let mut heartbeat_runs = Vec::new();
    let mut probe_reply_runs = Vec::new();
    for _ in 0..XDP_RUNS {
        let out: Output = ctx.tools_json(&[
            "bench",
            "xdp-cost",
            "--distinct",
            distinct,
            "--repeat",
            repeat,
        ])?;
        let find = |name: &str| {
            out.cases
                .iter()
                .find(|c| c.case == name)
                .map(|c| c.ns_per_packet)
                .with_context(|| format!("`hb-tools bench xdp-cost` reports no {name:?} case"))
        };
        heartbeat_runs.push(find(XDP_HEARTBEAT_CASE)?);
        probe_reply_runs.push(find(XDP_PROBE_CASE)?);
    }
    let median = |runs: &[f64]| {
        let mut sorted = runs.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let (heartbeat_ns, probe_reply_ns) = (median(&heartbeat_runs), median(&probe_reply_runs));
    Ok(XdpCost {
        heartbeat_ns,
        probe_reply_ns,
        ratio: probe_reply_ns / heartbeat_ns,
        heartbeat_runs,
        probe_reply_runs,
    })
}

fn print_tables(size: Size, w: &Window, d: &Detection, x: &XdpCost, floor: &FloorMeasure) {
    let mut cpu = Table::new(&[
        "what",
        "CPU % of a core",
        "user %",
        "system %",
        "ns per probe",
        "includes",
    ])
    .text_column(5);
    cpu.row(vec![
        "agent (all threads)".into(),
        format!("{:.2}", w.agent_cpu_percent),
        format!("{:.1}", w.agent_user_percent),
        format!("{:.1}", w.agent_system_percent),
        format!("{:.0}", w.agent_ns_per_probe),
        "CPU clock (on CPU 0): building and sending the probes, the sweep, the event log".into(),
    ]);
    for (name, share) in &w.agent_threads {
        cpu.row(vec![
            format!("  thread {name}"),
            format!("{:.2}", share.percent),
            format!("{:.1}", share.user_percent),
            format!("{:.1}", share.system_percent),
            String::new(),
            String::new(),
        ]);
    }
    cpu.row(vec![
        "floor: bare sendmmsg loop".into(),
        format!("{:.2}", floor.floor.cpu_percent),
        String::new(),
        String::new(),
        format!("{:.0}", floor.floor.ns_per_probe),
        "the same requests and round trip, before the agent: the kernel's sending path".into(),
    ]);
    cpu.row(vec![
        "agent - floor".into(),
        format!("{:.2}", w.agent_cpu_percent - floor.floor.cpu_percent),
        String::new(),
        String::new(),
        format!("{:.0}", w.agent_ns_per_probe - floor.floor.ns_per_probe),
        "CPU clocks: what hb adds".into(),
    ]);
    cpu.row(vec![
        "machine softirq".into(),
        format!("{:.2}", w.softirq_percent),
        String::new(),
        String::new(),
        String::new(),
        format!(
            "tick-sampled, undercounted on an otherwise idle CPU: the round trip, on the \
             other CPU (ksoftirqd {:.2}%); floor's {:.1}%",
            w.ksoftirqd_percent, floor.softirq_percent
        ),
    ]);
    let worst = w
        .agent_cpu_percent_per_second
        .iter()
        .copied()
        .fold(0.0, f64::max);
    cpu.print(&format!(
        "The agent probing {} nodes every {} s: {} probes/s over {:.1} s (worst second {:.2}%; \
         load average {} -> {}; machine busy {:.0}%)",
        size.nodes,
        INTERVAL.as_secs(),
        si(w.probes_per_s),
        w.wall_s,
        worst,
        w.load_average_before,
        w.load_average_after,
        100.0 * w.machine.machine_busy
    ));
    let p = &w.probes;
    let mut replies = Table::new(&[
        "sent",
        "requests at responder",
        "accepted",
        "lost",
        "bad tag",
        "replay",
        "unknown node",
        "malformed",
        "send failures",
    ]);
    replies.row(vec![
        p.sent.to_string(),
        w.responder.seen.to_string(),
        p.accepted.to_string(),
        w.lost.to_string(),
        p.bad_tag.to_string(),
        p.replay.to_string(),
        p.unknown_node.to_string(),
        p.malformed.to_string(),
        p.failed.to_string(),
    ]);
    replies.print(&format!(
        "Replies over the window (veth drops: {})",
        w.veth_drops
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut detection = Table::new(&[
        "removed",
        "detected",
        "missed",
        "repeated",
        "false downs",
        "steady downs",
        "p50 ms",
        "p99 ms",
        "max ms",
        "min ms",
        "limit ms",
    ]);
    detection.row(vec![
        d.removed.to_string(),
        d.detected.to_string(),
        d.missed.to_string(),
        d.repeated.to_string(),
        d.false_downs.to_string(),
        d.steady_downs.to_string(),
        ms(d.p50_ns),
        ms(d.p99_ns),
        ms(d.max_ns),
        ms(d.min_ns),
        ms(Some(d.limit_ns)),
    ]);
    detection.print(&format!(
        "Detection: 1% of the addresses taken away (one nftables transaction, {:.1} ms) -> down",
        d.transaction_ms
    ));
    if !d.unexpected_downs.is_empty() {
        println!(
            "  unexpected downs (node, ms from the removal, silence ms): {:?}",
            d.unexpected_downs
        );
    }
    println!(
        "\n  XDP (BPF_PROG_TEST_RUN, median of {XDP_RUNS}): accepted probe reply {:.1} ns, \
         accepted heartbeat {:.1} ns: {:.2}x",
        x.probe_reply_ns, x.heartbeat_ns, x.ratio
    );
}

fn targets(
    w: &Window,
    d: &Detection,
    x: &XdpCost,
    floor: &FloorMeasure,
    size: Size,
) -> Vec<Target> {
    vec![
        Target::new(
            PHASE,
            format!("agent CPU probing {}/s", si(w.probes_per_s)),
            w.agent_cpu_percent,
            "% of a core",
            Bound::Below,
            CPU_LIMIT_PERCENT,
        )
        .with_note(format!(
            "{} nodes every {} s, CPU clock over {:.0} s, load {} -> {}; a bare sendmmsg loop \
             sending the same requests {:.1}%: hb adds {:.1}% ({:.0} ns a probe)",
            size.nodes,
            INTERVAL.as_secs(),
            w.wall_s,
            w.load_average_before,
            w.load_average_after,
            floor.floor.cpu_percent,
            w.agent_cpu_percent - floor.floor.cpu_percent,
            w.agent_ns_per_probe - floor.floor.ns_per_probe
        )),
        Target::new(
            PHASE,
            "probe nodes down in steady state",
            d.steady_downs as f64,
            "",
            Bound::AtMost,
            0.0,
        )
        .with_note(format!(
            "{} probes sent, {} replies recorded ({} lost) over the window",
            w.probes.sent, w.probes.accepted, w.lost
        )),
        Target::new(
            PHASE,
            "probe detection p99, 1% taken away",
            d.p99_ns.map_or(f64::INFINITY, |ns| ns as f64 / 1e6),
            "ms",
            Bound::AtMost,
            d.limit_ns as f64 / 1e6,
        )
        .with_note(format!(
            "from the removal; timeout {} ms + sweep {} ms + {} ms; p50 {} ms, max {} ms",
            (INTERVAL * MULTIPLIER).as_millis(),
            SWEEP.as_millis(),
            SLACK.as_millis(),
            ms(d.p50_ns),
            ms(d.max_ns)
        )),
        Target::new(
            PHASE,
            "probe removals missed, repeated, or false",
            (d.missed + d.repeated + d.false_downs) as f64,
            "nodes",
            Bound::AtMost,
            0.0,
        )
        .with_note(format!(
            "{} removed: {} down, {} never, {} more than once; {} other nodes down",
            d.removed, d.detected, d.missed, d.repeated, d.false_downs
        )),
        Target::new(
            PHASE,
            "XDP cost of a probe reply / a heartbeat's",
            x.ratio,
            "x",
            Bound::AtMost,
            XDP_RATIO_LIMIT,
        )
        .with_note(format!(
            "medians of {XDP_RUNS}: {:.1} ns / {:.1} ns",
            x.probe_reply_ns, x.heartbeat_ns
        )),
    ]
}

/// The comparison with Cilium, the floor, and the lost replies.
fn facts(w: &Window, x: &XdpCost, floor: &FloorMeasure) -> Vec<String> {
    let send = w.agent_ns_per_probe * CILIUM_PROBES_PER_S / 1e7;
    let xdp = x.probe_reply_ns * CILIUM_PROBES_PER_S / 1e7;
    vec![
        format!(
            "Cilium's all-to-all health probing sends {} probes/s at {CILIUM_NODES} nodes \
             (CFP-32820); at hb's measured cost here ({:.0} ns of agent CPU per probe sent, \
             {:.0} ns of XDP program per reply) one monitor would spend {send:.0}% \
             + {xdp:.1}% of a core on that rate; the kernel's sending path alone (a bare \
             sendmmsg loop) costs {:.0} ns a request on this machine",
            si(CILIUM_PROBES_PER_S),
            w.agent_ns_per_probe,
            x.probe_reply_ns,
            floor.floor.ns_per_probe
        ),
        format!(
            "the agent's CPU clock per probe, {:.0} ns, against a bare sendmmsg loop's doing \
             the same round trip, {:.0} ns: hb adds {:.0} ns a probe ({:.1}% of a core at {}/s); \
             the agent's user time (hb's own code) {:.1}% of a core",
            w.agent_ns_per_probe,
            floor.floor.ns_per_probe,
            w.agent_ns_per_probe - floor.floor.ns_per_probe,
            w.agent_cpu_percent - floor.floor.cpu_percent,
            si(w.probes_per_s),
            w.agent_user_percent
        ),
        format!(
            "probe replies lost over the window: {} of {} ({:.4}%; sent and recorded are read \
             together, so those in flight at the edges count)",
            w.lost,
            w.probes.sent,
            100.0 * w.lost as f64 / w.probes.sent.max(1) as f64
        ),
    ]
}
