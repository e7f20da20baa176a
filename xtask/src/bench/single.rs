//! Phase `single`: fast detection of one node, and what the agent costs at
//! that pace (issue 12). Interval 10 ms, timeout 3 x 10 ms, `sweep_period`
//! 10 ms (the most a 10 ms interval allows), XDP datapath.
//!
//! 1. Detection ([`sigstop`]): one node sending with `hb send` every 10 ms,
//!    40 SIGSTOP faults (quick: 10). Targets: median <= 25 ms and max <=
//!    31 ms (bfdd's max in the same harness was 30.4 ms), no false down and
//!    no fault missed.
//! 2. Cost: a fresh agent watches 1,000 nodes beating every 10 ms
//!    (`hb-tools loadgen --nodes 1000 --interval 10ms`: 100k heartbeats/s)
//!    with the same timing. After a 2 s warm-up, over 20 s (quick: 5 s),
//!    the agent's CPU (its CPU clock: every thread, to the nanosecond) over
//!    wall time, target under 0.6% of a core (a tenth of bfdd's 6.3% for
//!    one session); the sweeps done in the window
//!    (`hb_sweep_duration_seconds_count` of its `/metrics`, scraped just
//!    outside the CPU window so the scrapes cost nothing inside it) give
//!    the sweep wake-ups per second and the agent's CPU per wake-up, target
//!    under 10 µs. No node may go down while the load runs.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use hb_tests::{Sched, interrupt};
use serde::Serialize;
use serde_json::json;

use super::{
    Ctx, PhaseOutput,
    http::{
        clients::{get, in_netns},
        histogram::SweepHistogram,
    },
    machine::{self, CpuSpent},
    output::{Bound, Progress, Table, Target, duration_ns, ms, si},
    rig::{AgentSetup, Load, LoadReport, Pace, Rig},
    sigstop::{self, Detection, INTERVAL, MULTIPLIER, SWEEP},
};

const PHASE: &str = "single";
const MEDIAN_LIMIT_MS: f64 = 25.0;
const MAX_LIMIT_MS: f64 = 31.0;
/// Agent CPU with 1,000 nodes beating every 10 ms, % of one core.
const CPU_LIMIT_PERCENT: f64 = 0.6;
/// Agent CPU per sweep wake-up at 1,000 nodes, µs.
const WAKE_UP_LIMIT_US: f64 = 10.0;
const FLEET: u32 = 1000;
const WARM_UP: Duration = Duration::from_secs(2);
/// The load runs on this long after the CPU window.
const AFTER_WINDOW: Duration = Duration::from_secs(1);
/// After the last fault, the agent runs on this long before it is
/// stopped, so a late false down is seen.
const QUIET_END: Duration = Duration::from_millis(300);
/// The agent's `[http] listen` by default, in the monitor namespace.
const METRICS: &str = "127.0.0.1:7980";

pub fn run(ctx: &Ctx<'_>) -> Result<PhaseOutput> {
    let (faults, window) = if ctx.quick {
        (10, Duration::from_secs(5))
    } else {
        (40, Duration::from_secs(20))
    };
    let rig = Rig::build(ctx.hb, ctx.tools, ctx.work.join(PHASE))?;
    println!("  {}", rig.describe());
    let progress = Progress::start(
        PHASE,
        sigstop::expected(faults) + WARM_UP + window + Duration::from_secs(8),
    );
    let detection = detect(&rig, faults, &progress)?;
    let fleet = fleet_cost(&rig, window, &progress)?;
    drop(progress);
    drop(rig);

    print_detection(&detection);
    fleet.print();
    let path = ctx.svg("single-detection-cdf");
    sigstop::cdf_plot(
        &path,
        "Detection of one node at 10 ms x 3 (SIGSTOP -> down, CDF)",
        &[("hb, 1 node, no other load".to_owned(), &detection)],
        &[
            ("target: median <= 25 ms", MEDIAN_LIMIT_MS),
            ("target: max <= 31 ms", MAX_LIMIT_MS),
        ],
    )?;
    let mut targets = detection_targets(&detection);
    targets.extend(fleet.targets());
    Ok(PhaseOutput {
        json: json!({
            "interval_ms": INTERVAL.as_secs_f64() * 1e3,
            "timeout_multiplier": MULTIPLIER,
            "sweep_period_ms": SWEEP.as_secs_f64() * 1e3,
            "detection": detection,
            "fleet": fleet,
        }),
        targets,
        plots: vec![path],
        facts: fleet.facts(),
    })
}

/// The SIGSTOP faults against an agent watching one node.
fn detect(rig: &Rig<'_>, faults: u32, progress: &Progress) -> Result<Detection> {
    progress.step("starting the agent (1 node)");
    let mut agent = rig.start_agent_with(&sigstop::setup(), sigstop::DETECTOR)?;
    let mut tail = agent.tail()?;
    let mut sender = rig.start_sender(INTERVAL, &Sched::default())?;
    sigstop::wait_until_up(&mut tail)?;
    let done = sigstop::inject(&mut agent, &mut sender, faults, progress, "single")?;
    interrupt::sleep(QUIET_END)?;
    agent.stop()?;
    let events = agent.events()?;
    drop(sender);
    Ok(Detection::analyse(&done, &events))
}

fn print_detection(d: &Detection) {
    let mut table = Table::new(&["measure", "value"]).text_column(1);
    for (name, value) in [
        ("faults (SIGSTOP)", d.faults.to_string()),
        ("detected", d.detected.to_string()),
        ("missed", d.missed.to_string()),
        ("false downs", d.false_downs.to_string()),
        ("median", format!("{} ms", ms(d.p50_ns))),
        ("p99", format!("{} ms", ms(d.p99_ns))),
        ("max", format!("{} ms", ms(d.max_ns))),
        ("min", format!("{} ms", ms(d.min_ns))),
    ] {
        table.row(vec![name.to_owned(), value]);
    }
    table.print(
        "Detection of one node, hb send every 10 ms, timeout 3 x 10 ms, sweep_period 10 ms \
         (SIGSTOP -> down)",
    );
}

fn detection_targets(d: &Detection) -> Vec<Target> {
    let in_ms = |ns: Option<u64>| ns.map_or(f64::INFINITY, |ns| ns as f64 / 1e6);
    vec![
        Target::new(
            PHASE,
            "detection median, 1 node at 10 ms x 3",
            in_ms(d.p50_ns),
            "ms",
            Bound::AtMost,
            MEDIAN_LIMIT_MS,
        )
        .with_note(d.summary()),
        Target::new(
            PHASE,
            "detection max, 1 node at 10 ms x 3",
            in_ms(d.max_ns),
            "ms",
            Bound::AtMost,
            MAX_LIMIT_MS,
        )
        .with_note("bfdd's max in the same harness: 30.4 ms"),
        d.errors_target(
            PHASE,
            "false downs + missed, 1 node at 10 ms x 3".to_owned(),
        ),
    ]
}

/// What the agent cost with 1,000 nodes beating every 10 ms.
#[derive(Debug, Serialize)]
struct Fleet {
    nodes: u32,
    /// Ticks and the machine's busy share over the window.
    window: CpuSpent,
    /// Wall time between the two reads of the agent's CPU clock, s.
    wall_s: f64,
    agent_cpu_ns: u64,
    agent_cpu_percent: f64,
    /// Sweeps in the window (the histogram's `_count` difference).
    sweeps: u64,
    wake_ups_per_s: f64,
    cpu_per_wake_up_ns: Option<f64>,
    /// What a bare timed wake-up costs on this machine, measured beside
    /// the agent in the same window ([`machine::bare_wake_up_cost`]), ns.
    bare_wake_up_ns: f64,
    /// The sweeps' own mean duration (the histogram's `_sum / _count`).
    sweep_mean_ns: Option<f64>,
    sweep_histogram: SweepHistogram,
    states_at_check: BTreeMap<String, u64>,
    /// `down` events while the load ran.
    false_downs: usize,
    load: LoadReport,
}

fn fleet_cost(rig: &Rig<'_>, window: Duration, progress: &Progress) -> Result<Fleet> {
    let setup = AgentSetup {
        datapath: "xdp",
        nodes: FLEET,
        interval: INTERVAL,
        timeout_multiplier: MULTIPLIER,
        sweep_period: SWEEP,
    };
    progress.step(format!("starting the agent ({FLEET} nodes)"));
    let mut agent = rig.start_agent(&setup)?;
    let load = rig.start_load(&Load::new(
        FLEET,
        Pace::Interval(INTERVAL),
        WARM_UP + window + AFTER_WINDOW,
    ))?;
    progress.step(format!(
        "{FLEET} nodes beating every 10 ms: {} s warm-up, then {} s measured",
        WARM_UP.as_secs(),
        window.as_secs()
    ));
    interrupt::sleep((load.started() + WARM_UP).saturating_duration_since(Instant::now()))?;
    let netns = rig.monitor_netns();
    let first = scrape(&netns)?;
    let (cpu_start, sample_start) = (agent.cpu_ns()?, agent.sample()?);
    let floor = machine::bare_wake_up_cost(INTERVAL, window);
    interrupt::sleep(window)?;
    let (cpu_end, sample_end) = (agent.cpu_ns()?, agent.sample()?);
    let bare_wake_up_ns = floor
        .join()
        .map_err(|_| anyhow::anyhow!("the bare wake-up thread panicked"))??;
    let last = scrape(&netns)?;
    let states = agent.states()?;
    progress.step("waiting for the load generator to finish");
    let report = load.finish()?;
    report.ensure_complete()?;
    agent.stop()?;
    let events = agent.events()?;

    let spent = sample_start.until(&sample_end);
    let wall_s = sample_end.at.duration_since(sample_start.at).as_secs_f64();
    let agent_cpu_ns = cpu_end.saturating_sub(cpu_start);
    let histogram = last.since(&first)?;
    let sweeps = histogram.count;
    Ok(Fleet {
        nodes: FLEET,
        window: spent,
        wall_s,
        agent_cpu_ns,
        agent_cpu_percent: 100.0 * agent_cpu_ns as f64 / 1e9 / wall_s.max(1e-9),
        sweeps,
        wake_ups_per_s: sweeps as f64 / wall_s.max(1e-9),
        cpu_per_wake_up_ns: (sweeps > 0).then(|| agent_cpu_ns as f64 / sweeps as f64),
        bare_wake_up_ns,
        sweep_mean_ns: histogram.mean_s().map(|s| s * 1e9),
        sweep_histogram: histogram,
        states_at_check: states,
        false_downs: events
            .iter()
            .filter(|e| e.event == "down" && e.mono_ns <= report.ended_mono_ns)
            .count(),
        load: report,
    })
}

/// The agent's sweep histogram from its `/metrics`, fetched from inside
/// the monitor namespace.
fn scrape(netns: &Path) -> Result<SweepHistogram> {
    let addr: SocketAddr = METRICS.parse().context("the metrics address")?;
    let body = in_netns(netns, move || get(addr, "/metrics"))?;
    SweepHistogram::parse(&String::from_utf8_lossy(&body))
}

impl Fleet {
    fn count(&self, state: &str) -> u64 {
        self.states_at_check.get(state).copied().unwrap_or(0)
    }

    fn print(&self) {
        let mut table = Table::new(&["measure", "value"]).text_column(1);
        let per_wake_up = self
            .cpu_per_wake_up_ns
            .map_or_else(|| "-".to_owned(), duration_ns);
        for (name, value) in [
            (
                "load: requested / achieved heartbeats/s",
                format!("{} / {}", si(self.load.rate), si(self.load.achieved_rate)),
            ),
            ("window", format!("{:.1} s", self.wall_s)),
            (
                "agent CPU (its CPU clock)",
                format!(
                    "{} = {:.3}% of one core",
                    duration_ns(self.agent_cpu_ns as f64),
                    self.agent_cpu_percent
                ),
            ),
            (
                "sweeps (hb_sweep_duration_seconds)",
                self.sweeps.to_string(),
            ),
            (
                "sweep wake-ups per second",
                format!("{:.1}", self.wake_ups_per_s),
            ),
            ("agent CPU per wake-up", per_wake_up),
            (
                "floor: a bare timed wake-up here (same window)",
                duration_ns(self.bare_wake_up_ns),
            ),
            (
                "mean sweep (its own histogram)",
                self.sweep_mean_ns
                    .map_or_else(|| "-".to_owned(), duration_ns),
            ),
            (
                "machine busy (all CPUs, other load included)",
                format!("{:.0}%", 100.0 * self.window.machine_busy),
            ),
            ("nodes up at the check", self.count("up").to_string()),
            (
                "down events while the load ran",
                self.false_downs.to_string(),
            ),
        ] {
            table.row(vec![name.to_owned(), value]);
        }
        table.print(&format!(
            "The agent with {} nodes beating every 10 ms (sweep_period 10 ms, XDP)",
            si(f64::from(self.nodes))
        ));
    }

    /// The wake-ups per second, and whether the load's own lag may explain
    /// false downs.
    fn facts(&self) -> Vec<String> {
        let mut facts = vec![format!(
            "single: {:.0} sweep wake-ups per second with {} nodes beating every 10 ms \
             (sweep_period 10 ms); machine {:.0}% busy in the window (other load included)",
            self.wake_ups_per_s,
            si(f64::from(self.nodes)),
            100.0 * self.window.machine_busy
        )];
        let slack = INTERVAL * (MULTIPLIER - 1);
        if self.false_downs > 0 && self.load.max_lag_ns >= slack.as_nanos() as u64 {
            facts.push(format!(
                "single: the load generator fell up to {:.1} ms behind its schedule ({} batches \
                 over 1 ms late): gaps past the timeout, so downs while it ran may be the \
                 load's, not the agent's",
                self.load.max_lag_ns as f64 / 1e6,
                self.load.late_batches
            ));
        }
        facts
    }

    fn targets(&self) -> Vec<Target> {
        let nodes = si(f64::from(self.nodes));
        vec![
            Target::new(
                PHASE,
                format!("agent CPU, {nodes} nodes at 10 ms"),
                self.agent_cpu_percent,
                "% of a core",
                Bound::Below,
                CPU_LIMIT_PERCENT,
            )
            .with_note(format!(
                "CPU clock over {:.1} s after a {} s warm-up; load achieved {}/s of {}/s; \
                 machine {:.0}% busy",
                self.wall_s,
                WARM_UP.as_secs(),
                si(self.load.achieved_rate),
                si(self.load.rate),
                100.0 * self.window.machine_busy
            )),
            Target::new(
                PHASE,
                format!("agent CPU per sweep wake-up, {nodes} nodes"),
                self.cpu_per_wake_up_ns.map_or(f64::INFINITY, |ns| ns / 1e3),
                "µs",
                Bound::Below,
                WAKE_UP_LIMIT_US,
            )
            .with_note(format!(
                "{} sweeps in {:.1} s ({:.0} wake-ups/s); all of the agent's CPU divided by them. \
                 The floor here: a bare thread that only sleeps to an absolute deadline every \
                 10 ms, beside it, took {:.1} µs per wake-up; the agent's own work is the rest",
                self.sweeps,
                self.wall_s,
                self.wake_ups_per_s,
                self.bare_wake_up_ns / 1e3
            )),
            Target::new(
                PHASE,
                format!("false downs, {nodes} nodes at 10 ms"),
                (self.false_downs as u64).max(self.count("down")) as f64,
                "",
                Bound::AtMost,
                0.0,
            )
            .with_note(format!(
                "{} down events while the load ran; {} nodes up at the check; the load's max \
                 lag {:.1} ms",
                self.false_downs,
                self.count("up"),
                self.load.max_lag_ns as f64 / 1e6
            )),
        ]
    }
}
