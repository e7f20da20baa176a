//! Phase `probe-quality`: detection quality of ICMP probing under loss,
//! without and with `probe_confirm`, measured as the phase `quality`
//! measures heartbeats (Chen, Toueg and Aguilera: detection time, mistakes
//! per node-hour, mistake duration).
//!
//! The lab of the phase `probe` ([`super::lab`]) with 1,000 addresses and
//! an nftables rule in the responder that drops 5% of the echo requests at
//! random (`numgen random mod 100 < 5`; a lost request is a lost probe,
//! whichever way it would have been lost). The agent probes each address
//! every 100 ms, `timeout_multiplier` 3, sweep every 10 ms (as the phase
//! `quality`), `probe_timeout` the default (half the interval: 50 ms), and
//! runs twice for 40 s (quick: 10 s): `probe_confirm = false`, then `true`.
//! At 30% of each run 1% of the addresses (every 100th node, 10) are truly
//! taken away (one nftables transaction adds them to the responder's drop
//! set); they are given back between the runs. The random losses differ
//! between the two runs (the kernel's PRNG); the responder's counters give
//! the share actually dropped in each.
//!
//! # What is counted
//!
//! From the agent's event log (`CLOCK_MONOTONIC` of the sweep that saw the
//! change), over the run (from 1 s after every node was up to its end),
//! with the definitions of the phase `quality`:
//!
//! - detection time of a removed node: its first `down` after the removal,
//!   minus `CLOCK_MONOTONIC` just before the transaction (its last reply
//!   came up to one interval earlier; the phase `quality` counts from the
//!   last heartbeat instead); p50, p99 (with 10 removed nodes: the max)
//!   and max; a removed node never declared down is *missed*. And the time
//!   to its first suspicion;
//! - a false suspicion (mistake): a live node (any node, or a removed one
//!   before its removal) entering `suspect`, or `down` while not suspected.
//!   It lasts until the node's next `up`, else until the end of the run
//!   (or its removal). A mistake that reached `down` is also a *false
//!   down*;
//! - node-hours: the time each node was alive during the run; mistakes per
//!   node-hour = false suspicions / node-hours, likewise false downs.
//!
//! And the probes the agent sent over the run (`probes.sent`), of them the
//! confirmation retries (`probes.retries`).
//!
//! # Targets
//!
//! In each run: no removed node missed, the detection p99 within timeout +
//! sweep period + 20 ms; with confirmation, fewer false downs than
//! without (the point of `probe_confirm`: one lost probe never convicts).

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::Result;
use hb_tests::{interrupt, monotonic_ns};
use serde::Serialize;
use serde_json::json;

use super::{
    Event, ProbeCounters, icmp,
    lab::{Block, NftCounters, ProbeLab, ProbeSetup},
    load_average, sample_addresses, wait_all_up,
};
use crate::bench::{
    Ctx, PhaseOutput,
    output::{Bound, Progress, Table, Target, ms},
    stats::percentile,
};

const PHASE: &str = "probe-quality";
const FIRST_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 0);
const NODES: u32 = 1000;
const INTERVAL: Duration = Duration::from_millis(100);
const MULTIPLIER: u32 = 3;
const SWEEP: Duration = Duration::from_millis(10);
const LOSS_PERCENT: u32 = 5;
/// Every this-many-th node is taken away (1%).
const REMOVE_EVERY: u32 = 100;
/// They are taken away this far into a run (fraction of its length).
const STOP_AT: f64 = 0.3;
const MAX_RATE: u32 = 200_000;
/// From every node up to the start of a run.
const SETTLE: Duration = Duration::from_secs(1);
/// Slack on top of timeout + sweep period in the detection target.
const SLACK: Duration = Duration::from_millis(20);

fn run_length(quick: bool) -> Duration {
    Duration::from_secs(if quick { 10 } else { 40 })
}

/// A summary of a sorted sample of durations, ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Spread {
    count: usize,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

impl Spread {
    fn of(sorted_ns: &[u64]) -> Self {
        let ms = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1e6);
        Self {
            count: sorted_ns.len(),
            p50_ms: ms(percentile(sorted_ns, 0.5)),
            p99_ms: ms(percentile(sorted_ns, 0.99)),
            max_ms: ms(sorted_ns.last().copied()),
        }
    }
}

/// What one run measured.
#[derive(Debug, Serialize)]
struct Outcome {
    probe_confirm: bool,
    run_s: f64,
    load_average: String,
    node_hours: f64,
    false_suspicions: usize,
    false_suspicions_per_node_hour: f64,
    false_downs: usize,
    false_downs_per_node_hour: f64,
    /// False suspicions still open at the end (or at the node's removal).
    open_at_end: usize,
    mistake_duration: Spread,
    removed: usize,
    detected: usize,
    missed: usize,
    /// Sorted detection times from the removal, ns.
    latencies_ns: Vec<u64>,
    p50_ns: Option<u64>,
    p99_ns: Option<u64>,
    max_ns: Option<u64>,
    time_to_suspect: Spread,
    limit_ns: u64,
    probes: ProbeCounters,
    responder: NftCounters,
    /// The share of the requests the responder dropped at random, %.
    measured_loss_percent: f64,
}

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let run = run_length(ctx.quick);
    let block = Block {
        first: FIRST_ADDRESS,
        count: NODES,
    };
    let lab = ProbeLab::build(ctx.work.join(PHASE), block, LOSS_PERCENT)?;
    println!("  {}", lab.describe());
    icmp::ensure_answered(lab.monitor_netns(), sample_addresses(block))?;
    println!(
        "  {NODES} nodes probed with ICMP every {} ms, timeout {MULTIPLIER} x interval, sweep \
         every {} ms, XDP; {LOSS_PERCENT}% of the echo requests dropped at random in the \
         responder; {} s per run, 1% taken away at {:.0} s; probe_confirm false, then true",
        INTERVAL.as_millis(),
        SWEEP.as_millis(),
        run.as_secs(),
        run.as_secs_f64() * STOP_AT
    );
    let progress = Progress::start(PHASE, (run + Duration::from_secs(5)) * 2);
    let mut outcomes = Vec::new();
    for confirm in [false, true] {
        outcomes.push(measure(ctx, &lab, confirm, run, &progress)?);
        lab.give_back()?;
    }
    drop(progress);
    drop(lab);
    print_table(&outcomes);
    let targets = targets(&outcomes);
    let facts = facts(&outcomes);
    for fact in &facts {
        println!("  {fact}");
    }
    Ok(PhaseOutput {
        json: json!({
            "nodes": NODES,
            "interval_ms": INTERVAL.as_secs_f64() * 1e3,
            "timeout_multiplier": MULTIPLIER,
            "sweep_period_ms": SWEEP.as_secs_f64() * 1e3,
            "probe_timeout": "default (half the interval)",
            "loss_percent": LOSS_PERCENT,
            "loss": "nftables in the responder: icmp echo-request numgen random mod 100 < 5 drop",
            "removed_fraction": 1.0 / f64::from(REMOVE_EVERY),
            "removed_at_s": run.as_secs_f64() * STOP_AT,
            "run_s": run.as_secs_f64(),
            "runs": outcomes,
        }),
        targets,
        plots: Vec::new(),
        facts,
    })
}

/// One run of the agent with `probe_confirm = confirm`.
fn measure(
    ctx: &Ctx<'_>,
    lab: &ProbeLab,
    confirm: bool,
    run: Duration,
    progress: &Progress,
) -> Result<Outcome> {
    let setup = ProbeSetup {
        nodes: NODES,
        interval: INTERVAL,
        timeout_multiplier: MULTIPLIER,
        sweep_period: SWEEP,
        confirm,
        max_rate: MAX_RATE,
    };
    let step = format!("probe_confirm = {confirm}");
    progress.step(format!("{step}: starting the agent"));
    let mut agent = lab.start_agent(ctx.hb, &setup)?;
    // Under loss a live node may be suspected at any moment.
    wait_all_up(&mut agent, NODES, &["up", "suspect"])?;
    interrupt::sleep(SETTLE)?;
    progress.step(step);
    let counters_before = ProbeCounters::of(&agent.status()?)?;
    let nft_before = lab.counters()?;
    let start = monotonic_ns();
    let started = Instant::now();
    let removed_ids: Vec<u32> = (1..=NODES)
        .filter(|id| (id - 1) % REMOVE_EVERY == REMOVE_EVERY / 2)
        .collect();
    let addresses: Vec<Ipv4Addr> = removed_ids
        .iter()
        .map(|id| lab.block.address(id - 1))
        .collect();
    interrupt::sleep(run.mul_f64(STOP_AT))?;
    let removed_at = monotonic_ns();
    lab.take_away(&addresses)?;
    interrupt::sleep((started + run).saturating_duration_since(Instant::now()))?;
    let end = monotonic_ns();
    let counters = ProbeCounters::of(&agent.status()?)?.since(&counters_before);
    let responder = lab.counters()?.since(&nft_before);
    let load = load_average();
    // The event log is written once per sweep; SIGTERM flushes it too.
    interrupt::sleep(SWEEP * 5)?;
    agent.stop()?;
    let events: Vec<Event> = agent.records()?;
    let mut outcome = analyse(
        &events,
        Run {
            start,
            end,
            removed_at,
            nodes: NODES,
            removed: removed_ids.into_iter().collect(),
        },
    );
    outcome.probe_confirm = confirm;
    outcome.load_average = load;
    outcome.limit_ns = (setup.timeout() + SWEEP + SLACK).as_nanos() as u64;
    outcome.measured_loss_percent = 100.0 * responder.lost as f64 / (responder.seen.max(1)) as f64;
    outcome.probes = counters;
    outcome.responder = responder;
    Ok(outcome)
}

/// One run's times (`CLOCK_MONOTONIC`, ns) and nodes.
struct Run {
    start: u64,
    end: u64,
    removed_at: u64,
    nodes: u32,
    removed: HashSet<u32>,
}

impl Run {
    /// Until when a node was alive during the run.
    fn alive_until(&self, id: u32) -> u64 {
        if self.removed.contains(&id) {
            self.removed_at
        } else {
            self.end
        }
    }

    fn node_hours(&self) -> f64 {
        let removed = self.removed.len() as f64;
        let ns = (f64::from(self.nodes) - removed) * (self.end - self.start) as f64
            + removed * (self.removed_at - self.start) as f64;
        ns / 3.6e12
    }
}

/// The run's mistakes and detections from the event log (the definitions
/// of the module's doc).
fn analyse(events: &[Event], run: Run) -> Outcome {
    let mut events: Vec<&Event> = events
        .iter()
        .filter(|e| e.mono_ns >= run.start && e.mono_ns < run.end)
        .collect();
    events.sort_by_key(|e| e.mono_ns);
    let mut open: HashMap<u32, (u64, bool)> = HashMap::new();
    let (mut false_suspicions, mut false_downs) = (0, 0);
    let mut durations = Vec::new();
    let mut first_down: HashMap<u32, u64> = HashMap::new();
    let mut first_suspicion: HashMap<u32, u64> = HashMap::new();
    for e in events {
        let down = e.event == "down";
        let suspicion = down || e.event == "suspect";
        if e.mono_ns >= run.alive_until(e.node_id) {
            // A removed node after its removal: a detection.
            if suspicion {
                first_suspicion.entry(e.node_id).or_insert(e.mono_ns);
            }
            if down {
                first_down.entry(e.node_id).or_insert(e.mono_ns);
            }
        } else if suspicion {
            let entry = open.entry(e.node_id).or_insert_with(|| {
                false_suspicions += 1;
                (e.mono_ns, false)
            });
            if down && !entry.1 {
                entry.1 = true;
                false_downs += 1;
            }
        } else if e.event == "up"
            && let Some((since, _)) = open.remove(&e.node_id)
        {
            durations.push(e.mono_ns - since);
        }
    }
    let open_at_end = open.len();
    for (id, (since, _)) in open.drain() {
        durations.push(run.alive_until(id).saturating_sub(since));
    }
    durations.sort_unstable();
    let since_removal = |first: &HashMap<u32, u64>| {
        let mut times: Vec<u64> = first.values().map(|&t| t - run.removed_at).collect();
        times.sort_unstable();
        times
    };
    let latencies = since_removal(&first_down);
    let suspected = since_removal(&first_suspicion);
    let node_hours = run.node_hours();
    Outcome {
        probe_confirm: false,
        run_s: (run.end - run.start) as f64 / 1e9,
        load_average: String::new(),
        node_hours,
        false_suspicions,
        false_suspicions_per_node_hour: false_suspicions as f64 / node_hours,
        false_downs,
        false_downs_per_node_hour: false_downs as f64 / node_hours,
        open_at_end,
        mistake_duration: Spread::of(&durations),
        removed: run.removed.len(),
        detected: latencies.len(),
        missed: run.removed.len() - latencies.len(),
        p50_ns: percentile(&latencies, 0.5),
        p99_ns: percentile(&latencies, 0.99),
        max_ns: latencies.last().copied(),
        latencies_ns: latencies,
        time_to_suspect: Spread::of(&suspected),
        limit_ns: 0,
        probes: ProbeCounters::default(),
        responder: NftCounters::default(),
        measured_loss_percent: 0.0,
    }
}

fn print_table(outcomes: &[Outcome]) {
    let mut table = Table::new(&["", "probe_confirm = false", "probe_confirm = true"]);
    let row = |table: &mut Table, name: &str, f: &dyn Fn(&Outcome) -> String| {
        let mut cells = vec![name.to_owned()];
        cells.extend(outcomes.iter().map(f));
        table.row(cells);
    };
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    row(&mut table, "false downs", &|o| o.false_downs.to_string());
    row(&mut table, "false downs / node-hour", &|o| {
        format!("{:.1}", o.false_downs_per_node_hour)
    });
    row(&mut table, "false suspicions", &|o| {
        o.false_suspicions.to_string()
    });
    row(&mut table, "mistakes / node-hour", &|o| {
        format!("{:.0}", o.false_suspicions_per_node_hour)
    });
    row(&mut table, "mistake duration p50 ms", &|o| {
        opt(o.mistake_duration.p50_ms)
    });
    row(&mut table, "mistake duration p99 ms", &|o| {
        opt(o.mistake_duration.p99_ms)
    });
    row(&mut table, "removed: detected / missed", &|o| {
        format!("{} / {}", o.detected, o.missed)
    });
    row(&mut table, "detection p50 ms", &|o| ms(o.p50_ns));
    row(&mut table, "detection p99 ms", &|o| ms(o.p99_ns));
    row(&mut table, "detection max ms", &|o| ms(o.max_ns));
    row(&mut table, "time to suspect p50 ms", &|o| {
        opt(o.time_to_suspect.p50_ms)
    });
    row(&mut table, "probes sent", &|o| o.probes.sent.to_string());
    row(&mut table, "of them retries", &|o| {
        o.probes.retries.to_string()
    });
    row(&mut table, "requests dropped at random", &|o| {
        format!("{} ({:.2}%)", o.responder.lost, o.measured_loss_percent)
    });
    row(&mut table, "load average after", &|o| {
        o.load_average.clone()
    });
    table.print(&format!(
        "Probe detection quality: {NODES} nodes every {} ms, timeout {MULTIPLIER} x, \
         {LOSS_PERCENT}% of the probes lost, 1% taken away (Chen, Toueg, Aguilera)",
        INTERVAL.as_millis()
    ));
}

fn targets(outcomes: &[Outcome]) -> Vec<Target> {
    let mut targets = Vec::new();
    for o in outcomes {
        let which = format!("probe_confirm {}", o.probe_confirm);
        targets.push(
            Target::new(
                PHASE,
                format!("probe detection p99 under 5% loss, {which}"),
                o.p99_ns.map_or(f64::INFINITY, |ns| ns as f64 / 1e6),
                "ms",
                Bound::AtMost,
                o.limit_ns as f64 / 1e6,
            )
            .with_note(format!(
                "{} of {} removed detected; timeout {} ms + sweep {} ms + {} ms; p50 {} ms",
                o.detected,
                o.removed,
                (INTERVAL * MULTIPLIER).as_millis(),
                SWEEP.as_millis(),
                SLACK.as_millis(),
                ms(o.p50_ns)
            )),
        );
    }
    if let [without, with] = outcomes {
        targets.push(
            Target::new(
                PHASE,
                "false downs under 5% loss with probe_confirm",
                with.false_downs as f64,
                "",
                Bound::Below,
                without.false_downs.max(1) as f64,
            )
            .with_note(format!(
                "below those without ({}); {:.1} vs {:.1} per node-hour; {} retries sent",
                without.false_downs,
                with.false_downs_per_node_hour,
                without.false_downs_per_node_hour,
                with.probes.retries
            )),
        );
    }
    targets
}

fn facts(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|o| {
            format!(
                "probe quality, probe_confirm {}: {} false downs ({:.1}/node-hour), {} false \
                 suspicions ({:.0}/node-hour), detection p50 {} ms p99 {} ms, {} probes sent of \
                 which {} retries, {:.2}% of the requests dropped",
                o.probe_confirm,
                o.false_downs,
                o.false_downs_per_node_hour,
                o.false_suspicions,
                o.false_suspicions_per_node_hour,
                ms(o.p50_ns),
                ms(o.p99_ns),
                o.probes.sent,
                o.probes.retries,
                o.measured_loss_percent
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ms: u64, event: &str, node_id: u32) -> Event {
        Event {
            mono_ns: ms * 1_000_000,
            event: event.to_owned(),
            node_id,
            since_last_heartbeat_ms: None,
        }
    }

    #[test]
    fn counts_mistakes_and_detections() {
        let run = Run {
            start: 1_000_000_000,
            end: 11_000_000_000,
            removed_at: 4_000_000_000,
            nodes: 100,
            removed: [51].into(),
        };
        let events = [
            // Before the run: ignored.
            event(500, "down", 3),
            // A suspicion that recovers, one that goes down and recovers.
            event(2000, "suspect", 1),
            event(2100, "up", 1),
            event(3000, "suspect", 2),
            event(3300, "down", 2),
            event(3500, "up", 2),
            // The removed node: a mistake before its removal, then caught.
            event(3900, "suspect", 51),
            event(4200, "suspect", 51),
            event(6500, "down", 51),
            // Open at the end.
            event(10_900, "down", 7),
        ];
        let o = analyse(&events, run);
        assert_eq!(o.false_suspicions, 4);
        assert_eq!(o.false_downs, 2);
        assert_eq!(o.open_at_end, 2);
        assert_eq!(o.detected, 1);
        assert_eq!(o.missed, 0);
        assert_eq!(o.p50_ns, Some(2_500_000_000));
        assert_eq!(o.time_to_suspect.p50_ms, Some(200.0));
        // 99 nodes x 10 s + 1 x 3 s.
        assert!((o.node_hours - 993.0 / 3600.0).abs() < 1e-9);
        // 100 ms, 500 ms, 100 ms (51 until its removal), 100 ms (7).
        assert_eq!(o.mistake_duration.count, 4);
        assert_eq!(o.mistake_duration.max_ms, Some(500.0));
    }
}
