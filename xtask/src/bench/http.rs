//! Phase `http`: what the HTTP API costs the agent holding a million nodes
//! (quick: 100k).
//!
//! The `held` load (every node beats once a second, XDP, fixed timeout 3 s,
//! sweep every 100 ms) runs for 30 s (quick: 10 s), without and with
//! clients of the agent's HTTP API (`[http] listen = "127.0.0.1:7980"`, the
//! default, inside the monitor namespace): an event-stream client reading
//! `/api/v1/events` from before the load starts (it reconnects when the
//! agent drops it for lagging, as it does during the first second, when a
//! million nodes go from unseen to up), and a scraper fetching `/metrics`
//! once a second. Full size runs without, with, with, without (so a drift
//! of the machine's other load cancels out); quick runs each once.
//!
//! Measured as `held` does: the agent's utime + stime from /proc over the
//! window after a 2 s warm-up (mean and median second). The sweep's
//! duration comes from the agent's own `hb_sweep_duration_seconds`, scraped
//! at the window's start and end (one scrape each, also in the runs
//! without clients) and differenced, so the start-up sweeps stay out; its
//! p99 is the upper bound of the bucket holding it. Targets: CPU with
//! clients at most 1.2x without; sweep p99 with clients in the same or a
//! lower bucket.

pub(super) mod clients;
pub(super) mod histogram;

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Value, json};

use self::{
    clients::{Clients, EventStats, ScrapeStats, in_netns},
    histogram::{SweepHistogram, bound_text},
};
use super::{
    Ctx, PhaseOutput,
    held::{self, CpuRecord, INTERVAL, WARM_UP_INTERVALS},
    output::{Bound, Progress, Table, Target, si},
    rig::{AgentSetup, Load, LoadReport, Pace, Rig},
};

const PHASE: &str = "http";
/// Where the agent listens by default.
const LISTEN: &str = "127.0.0.1:7980";
/// Tries of the window's start and end scrapes before the run fails.
const SCRAPE_ATTEMPTS: u32 = 3;
/// Agent CPU with clients over without, at most.
const CPU_RATIO_LIMIT: f64 = 1.2;

/// Without or with the HTTP clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Without,
    With,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Without => "without clients",
            Variant::With => "with clients",
        }
    }
}

/// What one run showed.
struct RunFigures {
    variant: Variant,
    cpu: CpuRecord,
    /// The sweeps of the CPU window.
    sweeps: SweepHistogram,
    /// The clients' figures (runs with clients).
    clients: Option<(ScrapeStats, EventStats)>,
    states: BTreeMap<String, u64>,
    report: LoadReport,
}

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let (nodes, duration, order): (u32, _, &[Variant]) = if ctx.quick {
        (
            100_000,
            Duration::from_secs(10),
            &[Variant::Without, Variant::With],
        )
    } else {
        (
            1_000_000,
            Duration::from_secs(30),
            &[
                Variant::Without,
                Variant::With,
                Variant::With,
                Variant::Without,
            ],
        )
    };
    let mut runs = Vec::new();
    for (index, &variant) in order.iter().enumerate() {
        println!(
            "  run {}/{}: {} nodes, {}",
            index + 1,
            order.len(),
            si(f64::from(nodes)),
            variant.name()
        );
        runs.push(one_run(ctx, index, nodes, duration, variant)?);
    }
    let without = Totals::of(&runs, Variant::Without)?;
    let with = Totals::of(&runs, Variant::With)?;
    print(nodes, duration, &without, &with);
    let targets = targets(nodes, &without, &with);
    let mut facts = Vec::new();
    let requested = f64::from(nodes) / INTERVAL.as_secs_f64();
    for totals in [&without, &with] {
        if totals.achieved_rate < 0.95 * requested {
            facts.push(format!(
                "http: the load reached {}/s of {}/s on average: the machine could not sustain \
                 it, so these figures measure contention, not the HTTP API",
                si(totals.achieved_rate),
                si(requested)
            ));
            break;
        }
    }
    let json = json!({
        "nodes": nodes,
        "duration_s": duration.as_secs_f64(),
        "interval_s": INTERVAL.as_secs_f64(),
        "warm_up_s": (INTERVAL * WARM_UP_INTERVALS).as_secs_f64(),
        "listen": LISTEN,
        "order": order.iter().map(|v| v.name()).collect::<Vec<_>>(),
        "without": without.json(),
        "with": with.json(),
        "cpu_ratio": with.cpu_percent / without.cpu_percent.max(1e-9),
        "runs": runs.iter().map(RunFigures::json).collect::<Vec<_>>(),
    });
    Ok(PhaseOutput {
        json,
        targets,
        plots: Vec::new(),
        facts,
    })
}

/// Holds `nodes` nodes for `duration` in a fresh lab, with or without the
/// clients. Each run has a directory of its own: an agent that found the
/// previous run's state file would start with its nodes up, and skip the
/// first run's burst of a million unseen-to-up events.
fn one_run(
    ctx: &Ctx<'_>,
    index: usize,
    nodes: u32,
    duration: Duration,
    variant: Variant,
) -> Result<RunFigures> {
    let setup = AgentSetup {
        datapath: "xdp",
        nodes,
        interval: INTERVAL,
        timeout_multiplier: 3,
        sweep_period: Duration::from_millis(100),
    };
    let addr: SocketAddr = LISTEN.parse().context("the bench's listen address")?;
    let rig = Rig::build(ctx.hb, ctx.tools, ctx.work.join(format!("{PHASE}-{index}")))?;
    let netns = rig.monitor_netns();
    let progress = Progress::start(PHASE, duration + Duration::from_secs(5));
    progress.step(format!("starting the agent ({})", variant.name()));
    let mut agent = rig.start_agent(&setup)?;
    let clients = (variant == Variant::With).then(|| Clients::start(netns.clone(), addr));
    progress.step(format!(
        "{} nodes beating every {} s for {} s, {}",
        si(f64::from(nodes)),
        INTERVAL.as_secs_f64(),
        duration.as_secs_f64(),
        variant.name()
    ));
    let load = rig.start_load(&Load::new(nodes, Pace::Interval(INTERVAL), duration))?;
    // A busy loop may answer 503 (it did not answer in time): try again.
    let scrape = || -> Result<SweepHistogram> {
        let body = in_netns(&netns, move || {
            let mut attempt = 1;
            loop {
                match clients::get(addr, "/metrics") {
                    Err(err) if attempt < SCRAPE_ATTEMPTS => {
                        eprintln!("    scrape {attempt} failed, trying again: {err:#}");
                        attempt += 1;
                    }
                    outcome => break outcome,
                }
            }
        })?;
        SweepHistogram::parse(&String::from_utf8_lossy(&body))
    };
    let mut first = None;
    let cpu = held::sample_cpu(&mut agent, load.started(), duration, || {
        first = Some(scrape()?);
        Ok(())
    })?;
    let last = scrape()?;
    let sweeps = match &first {
        Some(first) => last.since(first)?,
        None => last,
    };
    let clients = clients.map(Clients::finish).transpose()?;
    let states = agent.states()?;
    progress.step("waiting for the load generator to finish");
    let report = load.finish()?;
    report.ensure_complete()?;
    progress.step("stopping the agent");
    agent.stop()?;
    drop(progress);
    println!(
        "    agent CPU {:.2}% of a core (median second {}), {} sweeps, p99 {}",
        cpu.percent,
        percent(cpu.median_second),
        sweeps.count,
        bound_text(sweeps.quantile_bound(0.99))
    );
    Ok(RunFigures {
        variant,
        cpu,
        sweeps,
        clients,
        states,
        report,
    })
}

impl RunFigures {
    fn json(&self) -> Value {
        json!({
            "variant": self.variant.name(),
            "window": self.cpu.spent,
            "agent_cpu_percent": self.cpu.percent,
            "agent_cpu_percent_median_second": self.cpu.median_second,
            "per_second": self.cpu.seconds,
            "sweeps": self.sweeps,
            "sweep_p99_bucket_s": self.sweeps.quantile_bound(0.99).filter(|b| b.is_finite()),
            "scrapes": self.clients.as_ref().map(|c| &c.0),
            "events": self.clients.as_ref().map(|c| &c.1),
            "states_at_check": self.states,
            "load": self.report,
        })
    }
}

/// The runs of one variant together.
#[derive(Serialize)]
struct Totals {
    runs: usize,
    /// Σ utime + stime over Σ window wall time, % of one core.
    cpu_percent: f64,
    /// The median of every steady second of those runs, %.
    cpu_median_second: Option<f64>,
    sweeps: SweepHistogram,
    scrapes_attempted: u64,
    scrapes_answered: u64,
    /// Mean over the runs' mean scrape latencies, weighted by scrapes, ms.
    scrape_latency_mean_ms: Option<f64>,
    scrape_latency_max_ms: Option<f64>,
    sse_bytes: u64,
    sse_connections: u64,
    sse_transitions: u64,
    sse_summaries: u64,
    sse_lagged: u64,
    achieved_rate: f64,
    down_at_check: u64,
}

impl Totals {
    fn of(runs: &[RunFigures], variant: Variant) -> Result<Self> {
        let runs: Vec<&RunFigures> = runs.iter().filter(|r| r.variant == variant).collect();
        let (process_s, wall_s) = runs.iter().fold((0.0, 0.0), |(p, w), r| {
            (p + r.cpu.spent.process_s, w + r.cpu.spent.wall_s)
        });
        let mut seconds: Vec<f64> = runs
            .iter()
            .flat_map(|r| {
                let warm_up = (INTERVAL * WARM_UP_INTERVALS).as_secs_f64() + 0.5;
                r.cpu.seconds.iter().filter(move |s| s.t_s > warm_up)
            })
            .map(|s| s.cpu_percent)
            .collect();
        seconds.sort_by(f64::total_cmp);
        let mut sweeps = runs[0].sweeps.clone();
        for run in &runs[1..] {
            sweeps = sweeps.plus(&run.sweeps)?;
        }
        let scrapes: Vec<&ScrapeStats> = runs
            .iter()
            .filter_map(|r| Some(&r.clients.as_ref()?.0))
            .collect();
        let events: Vec<&EventStats> = runs
            .iter()
            .filter_map(|r| Some(&r.clients.as_ref()?.1))
            .collect();
        let answered: u64 = scrapes.iter().map(|s| s.answered).sum();
        let latency_total: f64 = scrapes
            .iter()
            .filter_map(|s| Some(s.latency_mean_ms? * s.answered as f64))
            .sum();
        Ok(Self {
            runs: runs.len(),
            cpu_percent: 100.0 * process_s / f64::max(wall_s, 1e-9),
            cpu_median_second: seconds.get(seconds.len() / 2).copied(),
            sweeps,
            scrapes_attempted: scrapes.iter().map(|s| s.attempted).sum(),
            scrapes_answered: answered,
            scrape_latency_mean_ms: (answered > 0).then(|| latency_total / answered as f64),
            scrape_latency_max_ms: scrapes
                .iter()
                .filter_map(|s| s.latency_max_ms)
                .reduce(f64::max),
            sse_bytes: events.iter().map(|e| e.bytes).sum(),
            sse_connections: events.iter().map(|e| e.connections).sum(),
            sse_transitions: events.iter().map(|e| e.transition).sum(),
            sse_summaries: events.iter().map(|e| e.summary).sum(),
            sse_lagged: events.iter().map(|e| e.lagged).sum(),
            achieved_rate: runs.iter().map(|r| r.report.achieved_rate).sum::<f64>()
                / runs.len() as f64,
            down_at_check: runs
                .iter()
                .map(|r| r.states.get("down").copied().unwrap_or(0))
                .sum(),
        })
    }

    fn p99(&self) -> Option<f64> {
        self.sweeps.quantile_bound(0.99)
    }

    fn json(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            value[format!("sweep_{name}_bucket_s")] =
                json!(self.sweeps.quantile_bound(q).filter(|b| b.is_finite()));
        }
        value["sweep_mean_s"] = json!(self.sweeps.mean_s());
        value
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |p| format!("{p:.2}%"))
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"))
}

fn print(nodes: u32, duration: Duration, without: &Totals, with: &Totals) {
    let mut table = Table::new(&["measure", "without clients", "with clients"]);
    for (name, a, b) in agent_rows(without, with)
        .into_iter()
        .chain(client_rows(without, with))
    {
        table.row(vec![name.to_owned(), a, b]);
    }
    table.print(&format!(
        "{} nodes beating every {} s ({} s per run), the agent without and with HTTP clients",
        si(f64::from(nodes)),
        INTERVAL.as_secs_f64(),
        duration.as_secs_f64()
    ));
}

/// The table's rows about the agent: load, CPU, sweeps.
fn agent_rows(without: &Totals, with: &Totals) -> Vec<(&'static str, String, String)> {
    vec![
        ("runs", without.runs.to_string(), with.runs.to_string()),
        (
            "load achieved, heartbeats/s",
            si(without.achieved_rate),
            si(with.achieved_rate),
        ),
        (
            "agent CPU (utime + stime), % of a core",
            format!("{:.2}%", without.cpu_percent),
            format!("{:.2}%", with.cpu_percent),
        ),
        (
            "agent CPU, median second",
            percent(without.cpu_median_second),
            percent(with.cpu_median_second),
        ),
        (
            "sweeps in the windows",
            without.sweeps.count.to_string(),
            with.sweeps.count.to_string(),
        ),
        (
            "sweep p99 (bucket upper bound)",
            bound_text(without.p99()),
            bound_text(with.p99()),
        ),
        (
            "sweep p50 / p90 (bucket upper bounds)",
            format!(
                "{} / {}",
                bound_text(without.sweeps.quantile_bound(0.5)),
                bound_text(without.sweeps.quantile_bound(0.9))
            ),
            format!(
                "{} / {}",
                bound_text(with.sweeps.quantile_bound(0.5)),
                bound_text(with.sweeps.quantile_bound(0.9))
            ),
        ),
        (
            "sweep mean (histogram sum / count)",
            ms(without.sweeps.mean_s().map(|s| s * 1e3)),
            ms(with.sweeps.mean_s().map(|s| s * 1e3)),
        ),
    ]
}

/// The table's rows about the clients (and the nodes' health at the checks).
fn client_rows(without: &Totals, with: &Totals) -> Vec<(&'static str, String, String)> {
    vec![
        (
            "/metrics scrapes answered / attempted",
            "-".to_owned(),
            format!("{} / {}", with.scrapes_answered, with.scrapes_attempted),
        ),
        (
            "scrape latency, mean / max",
            "-".to_owned(),
            format!(
                "{} / {}",
                ms(with.scrape_latency_mean_ms),
                ms(with.scrape_latency_max_ms)
            ),
        ),
        (
            "SSE bytes received",
            "-".to_owned(),
            with.sse_bytes.to_string(),
        ),
        (
            "SSE transition / summary / lagged events",
            "-".to_owned(),
            format!(
                "{} / {} / {}",
                with.sse_transitions, with.sse_summaries, with.sse_lagged
            ),
        ),
        (
            "SSE connections",
            "-".to_owned(),
            with.sse_connections.to_string(),
        ),
        (
            "nodes down at the checks",
            without.down_at_check.to_string(),
            with.down_at_check.to_string(),
        ),
    ]
}

/// CPU with clients at most 1.2x without; sweep p99 in the same or a lower
/// bucket.
fn targets(nodes: u32, without: &Totals, with: &Totals) -> Vec<Target> {
    let nodes = si(f64::from(nodes));
    let ratio = with.cpu_percent / without.cpu_percent.max(1e-9);
    let to_ms = |b: Option<f64>| b.map_or(f64::INFINITY, |b| b * 1e3);
    let mut p99 = Target::new(
        PHASE,
        format!("sweep p99 with HTTP clients, {nodes} nodes"),
        to_ms(with.p99()),
        "ms",
        Bound::AtMost,
        to_ms(without.p99()),
    )
    .with_note(format!(
        "upper bounds of the hb_sweep_duration_seconds buckets holding the p99 of {} and {} \
         sweeps (with, without); limit: the bucket without clients",
        with.sweeps.count, without.sweeps.count
    ));
    if !to_ms(without.p99()).is_finite() {
        // Off the histogram's scale without clients: nothing to compare.
        p99.met = false;
        p99.note += "; without clients the p99 is past the last finite bucket: not comparable";
    }
    vec![
        Target::new(
            PHASE,
            format!("agent CPU with/without HTTP clients, {nodes} nodes"),
            ratio,
            "x",
            Bound::AtMost,
            CPU_RATIO_LIMIT,
        )
        .with_note(format!(
            "{:.2}% vs {:.2}% of a core (median second {} vs {}); clients: SSE on \
             /api/v1/events, /metrics every second ({} answered)",
            with.cpu_percent,
            without.cpu_percent,
            percent(with.cpu_median_second),
            percent(without.cpu_median_second),
            with.scrapes_answered
        )),
        p99,
    ]
}
