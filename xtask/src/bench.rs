//! `cargo xtask bench`: measures hb against its performance targets, in one
//! go (root; about 16 minutes, `--quick` about 6).
//!
//! Builds hb (release), then runs the phases, each printing a table:
//!
//! 1. [`xdp_cost`]: the XDP program's ns per packet (`hb-tools bench xdp-cost`);
//! 2. [`hostile`]: a million hostile packets through the XDP program, none
//!    of which may change the node table without a valid tag
//!    (`hb-tools bench hostile`);
//! 3. [`sweep`]: the agent's sweep vs node count, next to memcpy;
//! 4. [`state`]: the agent's state file at 100k and 1M nodes, before (JSON)
//!    and after (binary snapshot, journal): size, save and load time
//!    (`hb-tools bench state`);
//! 5. [`e2e`]: loss and monitor CPU per heartbeat over veth, XDP vs socket;
//! 6. [`held`]: a million nodes beating once a second, held by the agent;
//! 7. [`http`]: the same, without and with clients of the HTTP API (an
//!    event stream and a scrape of `/metrics` every second);
//! 8. [`detection`]: detection latency of crashed nodes;
//! 9. [`single`]: one node at 10 ms x 3 stopped with SIGSTOP 40 times
//!    (detection median and max), and the agent's CPU, per second and per
//!    sweep wake-up, with 1,000 nodes beating every 10 ms;
//! 10. [`starved`]: the same detection with busy loops on every CPU or a
//!     SCHED_FIFO one on one CPU, with and without `sweep_priority`;
//! 11. [`quality`]: detection quality of the `timeout` and `phi` detectors
//!     under loss, pauses and an agent stall (false suspicions per
//!     node-hour at the same median detection time);
//! 12. [`group`]: a monitor group of three (etcd member and agent each):
//!     its detection latency against a single monitor's in the same lab
//!     (30 crashes at 100 ms x 3), and its etcd writes in steady state and
//!     during a 1% crash of 100,000 nodes;
//! 13. [`probe`]: the agent probing 100,000 addresses with ICMP once a
//!     second: its CPU, replies lost, detection of 1% taken away, and the
//!     XDP cost of a probe reply against a heartbeat's (about 1 minute);
//! 14. [`probe::quality`]: the detection quality of ICMP probing under 5%
//!     loss, without and with `probe_confirm` (about 1.5 minutes).
//!
//! Only on request (`--only soak`, about 11 minutes): [`soak`], 100,000
//! nodes for 10 minutes with loss and rolling crashes while the agent is
//! killed with SIGKILL every 2 minutes, checked against the load
//! generator's ground truth.
//!
//! Then a summary of every target (met, or missed by how much), and
//! `bench/results/<date>.json` (every raw figure and the machine) with one
//! SVG plot per curve, `bench/results/<date>-<name>.svg`. A `--quick` or
//! `--only` run writes `<date>-quick...` files, so it never overwrites a
//! full run's. Network phases build their own namespaces (`hbbench-*`,
//! 198.18.1.0/24; the probe phases `hbprobe-*`, probing 198.18.64.0 and
//! up) and remove them on exit, Ctrl-C included. A phase that
//! fails is reported and the others still run; missed targets are results,
//! not failures.

mod detection;
mod e2e;
mod group;
mod held;
mod hostile;
mod http;
mod machine;
mod output;
mod plot;
mod probe;
mod quality;
mod rig;
mod sigstop;
mod single;
mod soak;
mod starved;
mod state;
mod stats;
mod sweep;
mod xdp_cost;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use hb_tests::{Hb, TempDir, interrupt, netns};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use self::output::Target;
use crate::{
    build,
    paths::{stdout_of, workspace},
};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Reduced sizes and durations: a smoke run of about a minute.
    #[arg(long)]
    quick: bool,
    /// Run only this phase (repeatable). `soak` runs only when named here.
    #[arg(long, value_enum, value_name = "PHASE")]
    only: Vec<Phase>,
}

/// The phases, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// XDP program cost per packet (BPF_PROG_TEST_RUN).
    XdpCost,
    /// A million hostile packets through the XDP program (BPF_PROG_TEST_RUN).
    Hostile,
    /// Sweep time vs node count, next to memcpy.
    Sweep,
    /// The state file at 100k and 1M nodes, JSON vs binary: size, save and
    /// load time; the journal's append.
    State,
    /// End to end over veth: loss and CPU per heartbeat, XDP vs socket.
    E2e,
    /// A million nodes beating once a second, held.
    Held,
    /// The HTTP API's cost: the held load without and with an event
    /// stream client and a scrape of /metrics every second.
    Http,
    /// Detection latency of crashed nodes.
    Detection,
    /// One node at 10 ms x 3: detection of SIGSTOP faults, and the
    /// agent's CPU with 1,000 nodes at that pace.
    Single,
    /// One node's detection under busy loops, with and without
    /// sweep_priority.
    Starved,
    /// Detection quality, timeout vs phi: false suspicions, detection time.
    Quality,
    /// A monitor group through etcd: detection vs a single monitor, etcd
    /// writes steady and at a 1% crash of 100k nodes.
    Group,
    /// The soak: 100k nodes, loss, rolling crashes and SIGKILL restarts of
    /// the agent for 10 minutes (only with --only soak).
    Soak,
    /// The agent probing 100k addresses with ICMP once a second: CPU,
    /// replies lost, detection, XDP cost of a reply.
    Probe,
    /// Detection quality of ICMP probing under 5% loss, without and with
    /// probe_confirm.
    ProbeQuality,
}

impl Phase {
    const ALL: [Self; 15] = [
        Self::XdpCost,
        Self::Hostile,
        Self::Sweep,
        Self::State,
        Self::E2e,
        Self::Held,
        Self::Http,
        Self::Detection,
        Self::Single,
        Self::Starved,
        Self::Quality,
        Self::Group,
        Self::Probe,
        Self::ProbeQuality,
        Self::Soak,
    ];

    /// Whether a run without `--only` has this phase (the soak's 10
    /// minutes are asked for by name).
    fn in_default_run(self) -> bool {
        self != Self::Soak
    }

    fn name(self) -> &'static str {
        match self {
            Self::XdpCost => "xdp-cost",
            Self::Hostile => "hostile",
            Self::Sweep => "sweep",
            Self::State => "state",
            Self::E2e => "e2e",
            Self::Held => "held",
            Self::Http => "http",
            Self::Detection => "detection",
            Self::Single => "single",
            Self::Starved => "starved",
            Self::Quality => "quality",
            Self::Group => "group",
            Self::Soak => "soak",
            Self::Probe => "probe",
            Self::ProbeQuality => "probe-quality",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::XdpCost => "XDP cost per packet",
            Self::Hostile => "hostile packets never change the table",
            Self::Sweep => "sweep time vs node count",
            Self::State => "the state file before and after the binary format",
            Self::E2e => "end to end over veth, XDP vs socket",
            Self::Held => "a million nodes beating once a second",
            Self::Http => "what the HTTP API costs at a million nodes",
            Self::Detection => "detection latency",
            Self::Single => "one node at 10 ms: detection and the agent's cost",
            Self::Starved => "one node's detection under CPU starvation",
            Self::Quality => "detection quality, timeout vs phi",
            Self::Group => "a monitor group: detection vs one monitor, etcd writes",
            Self::Soak => "the soak: nothing lost across SIGKILL restarts",
            Self::Probe => "probing 100k addresses with ICMP: CPU, losses, detection",
            Self::ProbeQuality => "probe detection quality under loss, without and with confirm",
        }
    }

    fn run(self, ctx: &Ctx<'_>) -> Result<PhaseOutput> {
        match self {
            Self::XdpCost => xdp_cost::run(ctx),
            Self::Hostile => hostile::run(ctx),
            Self::Sweep => sweep::run(ctx),
            Self::State => state::run(ctx),
            Self::E2e => e2e::run(ctx),
            Self::Held => held::run(ctx),
            Self::Http => http::run(ctx),
            Self::Detection => detection::run(ctx),
            Self::Single => single::run(ctx),
            Self::Starved => starved::run(ctx),
            Self::Quality => quality::run(ctx),
            Self::Group => group::run(ctx),
            Self::Soak => soak::run(ctx),
            Self::Probe => probe::run(ctx),
            Self::ProbeQuality => probe::quality::run(ctx),
        }
    }
}

/// What every phase gets.
pub struct Ctx<'a> {
    pub hb: &'a Hb,
    /// The `hb-tools` binary: the load generator and the in-process benches.
    pub tools: &'a Hb,
    /// Scratch directory (configurations, logs, reports), removed at the end.
    pub work: &'a Path,
    pub quick: bool,
    results: &'a Path,
    /// File name stem of this run's results: `<date>` or `<date>-quick...`.
    stem: &'a str,
}

impl Ctx<'_> {
    /// Where the plot `name` goes.
    pub fn svg(&self, name: &str) -> PathBuf {
        self.results.join(format!("{}-{name}.svg", self.stem))
    }

    /// Runs `hb-tools ARGS...` in this namespace and parses the JSON it
    /// prints.
    pub fn tools_json<T: DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let mut cmd = self.tools.command(args);
        let output = netns::run(&mut cmd)?;
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "`{}` printed unexpected output: {}",
                netns::describe(&cmd),
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }
}

/// What a phase hands back.
pub struct PhaseOutput {
    /// Every raw figure, for the results file.
    pub json: Value,
    /// The targets it checked.
    pub targets: Vec<Target>,
    /// The plots it wrote.
    pub plots: Vec<PathBuf>,
    /// Findings for the summary that are not targets.
    pub facts: Vec<String>,
}

/// Runs the selected phases and writes the results.
pub fn run(options: &Options) -> Result<()> {
    if !hb_tests::is_root() {
        bail!(
            "not root: the bench loads XDP programs and creates network namespaces; run \
             `cargo xtask bench` as root"
        );
    }
    interrupt::install();
    let start = Instant::now();
    let phases: Vec<Phase> = Phase::ALL
        .into_iter()
        .filter(|p| {
            if options.only.is_empty() {
                p.in_default_run()
            } else {
                options.only.contains(p)
            }
        })
        .collect();
    let date = machine::utc_date();
    let stem = results_stem(&date, options, &phases);
    println!(
        "hb bench{}: {} (Ctrl-C stops it and cleans up)",
        if options.quick { " --quick" } else { "" },
        phases
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let binaries = build::run()?;
    let (hb, tools) = (Hb::new(binaries.hb), Hb::new(binaries.tools));
    let machine = machine::describe()?;
    println!("machine: {}", machine.line());
    let results = workspace().join("bench/results");
    fs::create_dir_all(&results).with_context(|| format!("creating {}", results.display()))?;
    let work = TempDir::at(std::env::temp_dir().join("hbbench"))?;
    let ctx = Ctx {
        hb: &hb,
        tools: &tools,
        work: work.path(),
        quick: options.quick,
        results: &results,
        stem: &stem,
    };
    let collected = run_phases(&ctx, &phases)?;
    drop(work);
    let elapsed = start.elapsed().as_secs_f64();
    collected.print_summary(&machine, elapsed);

    let record = json!({
        "date": date,
        "started_unix_s": SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() - elapsed),
        "elapsed_s": elapsed,
        "mode": if options.quick { "quick" } else { "full" },
        "phases_run": phases.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "machine": machine,
        "hb": source_version(),
        "targets": collected.targets,
        "facts": collected.facts,
        "failed_phases": collected.failed,
        "plots": collected
            .plots
            .iter()
            .map(|p| p.strip_prefix(workspace()).unwrap_or(p).display().to_string())
            .collect::<Vec<_>>(),
        "phases": collected.phase_json,
    });
    write_results(
        &results.join(format!("{stem}.json")),
        &record,
        &collected.plots,
    )?;
    if !collected.failed.is_empty() {
        bail!(
            "{} phase(s) failed: {}",
            collected.failed.len(),
            collected.failed.join(", ")
        );
    }
    Ok(())
}

/// File name stem of the results: `<date>`, `-quick` for a quick run, and
/// `-<phase>` for each phase of an `--only` run.
fn results_stem(date: &str, options: &Options, phases: &[Phase]) -> String {
    let mut stem = date.to_owned();
    if options.quick {
        stem += "-quick";
    }
    if !options.only.is_empty() {
        for phase in phases {
            stem += "-";
            stem += phase.name();
        }
    }
    stem
}

/// What the phases handed back, together.
#[derive(Default)]
struct Collected {
    /// Each phase's raw figures (or its error), by name.
    phase_json: Map<String, Value>,
    targets: Vec<Target>,
    plots: Vec<PathBuf>,
    facts: Vec<String>,
    /// The phases that failed.
    failed: Vec<String>,
}

/// Runs each phase under its heading. A phase that fails is recorded and
/// the next one runs; an interruption stops them all.
fn run_phases(ctx: &Ctx<'_>, phases: &[Phase]) -> Result<Collected> {
    let mut collected = Collected::default();
    for (n, phase) in phases.iter().enumerate() {
        println!(
            "\n== Phase {}/{}: {} ({})",
            n + 1,
            phases.len(),
            phase.title(),
            phase.name()
        );
        let phase_start = Instant::now();
        match phase.run(ctx) {
            Ok(out) => {
                let mut json = out.json;
                json["elapsed_s"] = json!(phase_start.elapsed().as_secs_f64());
                collected.phase_json.insert(phase.name().to_owned(), json);
                collected.targets.extend(out.targets);
                collected.plots.extend(out.plots);
                collected.facts.extend(out.facts);
            }
            Err(err) if is_interrupted(&err) => {
                println!(
                    "\ninterrupted: cleaned up the namespaces and processes; no results written"
                );
                return Err(err);
            }
            Err(err) => {
                eprintln!("phase {} failed: {err:#}", phase.name());
                collected.phase_json.insert(
                    phase.name().to_owned(),
                    json!({ "error": format!("{err:#}") }),
                );
                collected.failed.push(phase.name().to_owned());
            }
        }
        println!(
            "   ({} done in {:.1} s)",
            phase.name(),
            phase_start.elapsed().as_secs_f64()
        );
    }
    Ok(collected)
}

impl Collected {
    /// Every target (met, or missed by how much), the findings and the
    /// failed phases.
    fn print_summary(&self, machine: &machine::Machine, elapsed: f64) {
        println!("\n== Summary ({})", machine.line());
        for target in &self.targets {
            println!("  {}", target.line());
        }
        for fact in &self.facts {
            println!("  note    {fact}");
        }
        for phase in &self.failed {
            println!("  FAILED  phase {phase} (see its error above)");
        }
        let met = self.targets.iter().filter(|t| t.met).count();
        println!(
            "  {met} of {} targets met; {elapsed:.0} s in all",
            self.targets.len()
        );
    }
}

/// Writes the results file and says where it and the plots are.
fn write_results(path: &Path, record: &Value, plots: &[PathBuf]) -> Result<()> {
    let mut text = serde_json::to_string_pretty(record).context("encoding the results")?;
    text.push('\n');
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("\nresults: {}", path.display());
    for plot in plots {
        println!("plot:    {}", plot.display());
    }
    Ok(())
}

fn is_interrupted(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<hb_tests::Error>(),
            Some(hb_tests::Error::Interrupted)
        )
    })
}

/// The commit the binary was built from and whether the tree had changes
/// (read-only git commands; null outside a git checkout).
fn source_version() -> Value {
    let workspace = workspace();
    let workspace = workspace.to_string_lossy();
    let git = |args: &[&str]| {
        let mut all = vec!["--no-optional-locks", "-C", workspace.as_ref()];
        all.extend_from_slice(args);
        stdout_of("git", &all)
    };
    json!({
        "commit": git(&["rev-parse", "HEAD"]),
        "uncommitted_changes": git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
    })
}
