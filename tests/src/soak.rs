//! The soak: a fleet beating through the XDP datapath for a long while,
//! with random loss and nodes pausing (a crash, then a recovery, from the
//! monitor's side), while the agent is killed with SIGKILL and restarted at
//! a fixed period, checked against the load generator's ground truth.
//!
//! [`run`] builds a [`Lab`] (a monitor namespace and one sender namespace,
//! 198.18.1.0/24) and runs, all bounded in time:
//!
//! - the agent with the XDP datapath on the lab's own instance, an
//!   `event_log`, and a batched action (so that action starts are journaled
//!   too), killed with SIGKILL and restarted with the same configuration
//!   and state file every [`SoakSpec::restart_every`];
//! - `hb-tools loadgen` in the sender namespace with `--loss`,
//!   `--pause-every/--pause-for` and `--report-pauses`, bounded by
//!   `--duration`: its report lists every pause with the node's last
//!   heartbeat before it and first after it (the ground truth);
//! - `hb-tools datapath-counters` on the host, sampling the pinned counters
//!   throughout, restarts included;
//! - the agent's RSS, sampled from `/proc`.
//!
//! Then [`analyze`] holds the agent's event log against the ground truth
//! (see [`Verdict`]): each silence of a node longer than the timeout plus a
//! margin gives exactly one `down` (no earlier than its last heartbeat plus
//! the timeout) and, once it ends, exactly one recovery; no `down` falls
//! outside a silence; each node's events chain (every event's `previous` is
//! the state its last event entered), so a transition lost or repeated
//! across a restart shows; every node comes up from `unseen` once. Beside
//! it, the RSS slope after warm-up (least squares within each run of the
//! agent, pooled), the blind window (the longest span within the load over
//! which the pinned `accepted` counter did not grow) and the heartbeats the
//! kernel took but the datapath never counted.
//!
//! Everything started is stopped on Drop (the processes by their guards,
//! the namespaces and the instance's pins by the lab, the files by a
//! [`TempDir`]), also when the soak fails or is interrupted.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

mod analysis;

pub use self::analysis::{
    EventRecord, GroundTruth, PauseWindow, Rules, Verdict, analyze, read_events,
};
use crate::{
    ChildGuard, Error, HEARTBEAT_PORT, Hb, Lab, Result, Signal, TempDir,
    config::{humantime, toml_string},
    interrupt, monotonic_ns,
};

/// How long the agent may take to answer `hb status` after a start.
const AGENT_READY: Duration = Duration::from_secs(60);
/// How long the agent may take to exit after a signal.
const AGENT_EXIT: Duration = Duration::from_secs(60);
/// The load generator may overrun its duration by this much.
const LOAD_GRACE: Duration = Duration::from_secs(30);
/// The probe samples this long past the load's end before it is stopped,
/// so that its last sample counts the last heartbeats.
const PROBE_TAIL: Duration = Duration::from_millis(500);
/// How often the soak's loop wakes up.
const TICK: Duration = Duration::from_millis(50);
/// Slack on top of one sweep (and the longest restart) before a `down` or
/// a recovery counts as late.
const SLACK: Duration = Duration::from_secs(1);
/// What a soak does.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakSpec {
    /// Nodes 1..=nodes, one `[[node_ranges]]`.
    pub nodes: u32,
    /// Every node's heartbeat interval (sent, and configured).
    pub interval: Duration,
    /// `timeout_multiplier`: a node is down after this many intervals of
    /// silence.
    pub timeout_multiplier: u32,
    pub sweep_period: Duration,
    /// `[detector] rise`: heartbeats in a row for a down node to be up.
    pub rise: u32,
    /// The load's duration.
    pub duration: Duration,
    /// Heartbeats lost at random, percent.
    pub loss_percent: f64,
    /// Each node pauses on average once per this long (see
    /// [`SoakSpec::pause_every_for`]).
    pub pause_every: Duration,
    /// How long each pause lasts: well past the timeout.
    pub pause_for: Duration,
    /// The agent is killed with SIGKILL and restarted this often.
    pub restart_every: Duration,
    /// How often the agent's RSS is sampled.
    pub rss_every: Duration,
    /// RSS samples this soon after an agent's start are left out of the
    /// slope.
    pub rss_warmup: Duration,
    /// How often the pinned counters are sampled.
    pub probe_every: Duration,
    /// The load generator's seed.
    pub seed: u64,
}

impl SoakSpec {
    /// The shortened soak of the tests (and of `cargo xtask bench --only
    /// soak --quick`): 1,000 nodes every 500 ms for 30 s, about 40 pauses
    /// of 6 s, a SIGKILL restart every 10 s (two in all).
    pub fn short() -> Self {
        let (nodes, duration) = (1000, Duration::from_secs(30));
        SoakSpec {
            nodes,
            interval: Duration::from_millis(500),
            timeout_multiplier: 6,
            sweep_period: Duration::from_millis(100),
            rise: 2,
            duration,
            loss_percent: 1.0,
            pause_every: Self::pause_every_for(nodes, duration, 40),
            pause_for: Duration::from_secs(6),
            restart_every: Duration::from_secs(10),
            rss_every: Duration::from_millis(500),
            rss_warmup: Duration::from_secs(3),
            probe_every: Duration::from_millis(100),
            seed: 1,
        }
    }

    /// The silence after which a node is down.
    pub fn timeout(&self) -> Duration {
        self.interval * self.timeout_multiplier
    }

    /// The `pause_every` that gives about `pauses` pauses over `nodes`
    /// nodes in `duration`.
    pub fn pause_every_for(nodes: u32, duration: Duration, pauses: u32) -> Duration {
        duration * nodes / pauses.max(1)
    }

    /// The pauses the run should have, on average.
    pub fn expected_pauses(&self) -> f64 {
        f64::from(self.nodes) * self.duration.as_secs_f64() / self.pause_every.as_secs_f64()
    }

    /// How many times the agent is killed and restarted: at every multiple
    /// of `restart_every` before the end of the load.
    pub fn restarts(&self) -> u32 {
        let whole = self.duration.as_nanos() / self.restart_every.as_nanos().max(1);
        let on_the_end = self
            .duration
            .as_nanos()
            .is_multiple_of(self.restart_every.as_nanos().max(1));
        (whole as u32).saturating_sub(u32::from(on_the_end))
    }

    /// The node table's size: the next power of two above the last id.
    fn max_nodes(&self) -> u32 {
        (self.nodes + 1).next_power_of_two()
    }

    fn check(&self) -> Result<()> {
        let invalid = |reason: &str| Error::Invalid {
            what: "soak",
            value: format!("{self:?}"),
            reason: reason.to_owned(),
        };
        if self.nodes == 0 || self.timeout_multiplier < 2 || self.interval.is_zero() {
            return Err(invalid(
                "needs nodes, an interval and a multiplier of 2 or more",
            ));
        }
        if self.pause_for <= self.timeout() + self.sweep_period + SLACK {
            return Err(invalid(
                "pauses must be longer than the timeout plus the margin, or none is a crash",
            ));
        }
        if self.restart_every.is_zero() || self.restarts() == 0 {
            return Err(invalid("the agent must be restarted at least once"));
        }
        Ok(())
    }
}

/// What the soak measured, and the verdict.
#[derive(Debug, Clone)]
pub struct SoakOutcome {
    pub spec: SoakSpec,
    /// Each SIGKILL and restart.
    pub restarts: Vec<Restart>,
    /// The load generator's report, as it wrote it minus the windows.
    pub load: Value,
    /// Datagrams the load generator handed to the kernel.
    pub sent: u64,
    /// The pinned `accepted` counter's growth from before the load's start
    /// to after its end.
    pub accepted: u64,
    /// The longest span within the load over which `accepted` did not grow,
    /// ns, and the samples the probe took (and could not read).
    pub blind_window_ns: u64,
    pub probe_samples: u64,
    pub probe_unreadable: u64,
    /// The agent's RSS samples.
    pub rss: Vec<RssSample>,
    /// The event log held against the ground truth.
    pub verdict: Verdict,
    /// The soak's own wall time, from the lab's build to the analysis.
    pub elapsed: Duration,
}

/// One SIGKILL and restart of the agent (`CLOCK_MONOTONIC` ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    pub killed_mono_ns: u64,
    /// When the restarted agent first answered `hb status`.
    pub ready_mono_ns: u64,
}

impl Restart {
    /// How long no agent answered.
    pub fn gap_ns(&self) -> u64 {
        self.ready_mono_ns.saturating_sub(self.killed_mono_ns)
    }
}

/// One RSS sample of the agent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RssSample {
    pub mono_ns: u64,
    /// Which run of the agent (0: the first).
    pub run: usize,
    /// When that run first answered `hb status`.
    pub run_ready_mono_ns: u64,
    /// `VmRSS`: all resident pages, the mapped node table's included.
    pub rss_bytes: u64,
    /// `RssAnon`: the resident heap and stacks, where a leak would show.
    pub anon_bytes: u64,
}

impl SoakOutcome {
    /// Heartbeats the kernel took from the load generator that the datapath
    /// did not count (negative: it counted more).
    pub fn unrecorded(&self) -> i64 {
        self.sent as i64 - self.accepted as i64
    }

    /// The longest time no agent answered, over the restarts.
    pub fn longest_restart_ns(&self) -> u64 {
        self.restarts.iter().map(Restart::gap_ns).max().unwrap_or(0)
    }

    /// The RSS slope after warm-up, MB per minute (see [`rss_slope`]).
    pub fn rss_slope_mb_per_min(&self) -> Option<f64> {
        rss_slope(&self.rss, self.spec.rss_warmup, |s| s.rss_bytes)
    }

    /// The same for the anonymous part of the RSS.
    pub fn anon_slope_mb_per_min(&self) -> Option<f64> {
        rss_slope(&self.rss, self.spec.rss_warmup, |s| s.anon_bytes)
    }

    /// The largest RSS seen, MB.
    pub fn rss_max_mb(&self) -> f64 {
        self.rss.iter().map(|s| s.rss_bytes).max().unwrap_or(0) as f64 / MB
    }

    /// Every expectation the soak did not meet, one line each (empty: all
    /// met). The RSS slope is a figure, not an expectation here: its
    /// target depends on the run's length.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.verdict.problems();
        if self.unrecorded() != 0 {
            problems.push(format!(
                "{} heartbeats handed to the kernel were not counted by the datapath ({} sent, \
                 {} accepted)",
                self.unrecorded(),
                self.sent,
                self.accepted
            ));
        }
        if self.blind_window_ns > 0 {
            problems.push(format!(
                "blind window: `accepted` did not grow for {:.3} s during the load",
                self.blind_window_ns as f64 / 1e9
            ));
        }
        if self.probe_unreadable > 0 {
            problems.push(format!(
                "{} of {} probe samples could not read the pinned counters",
                self.probe_unreadable, self.probe_samples
            ));
        }
        if self.restarts.len() != self.spec.restarts() as usize {
            problems.push(format!(
                "{} restarts instead of {}",
                self.restarts.len(),
                self.spec.restarts()
            ));
        }
        problems
    }

    /// Every figure, for a results file.
    pub fn to_json(&self) -> Value {
        let spec = &self.spec;
        json!({
            "spec": {
                "nodes": spec.nodes,
                "interval_ms": spec.interval.as_millis() as u64,
                "timeout_multiplier": spec.timeout_multiplier,
                "timeout_ms": spec.timeout().as_millis() as u64,
                "sweep_period_ms": spec.sweep_period.as_millis() as u64,
                "rise": spec.rise,
                "duration_s": spec.duration.as_secs_f64(),
                "loss_percent": spec.loss_percent,
                "pause_every_s": spec.pause_every.as_secs_f64(),
                "pause_for_s": spec.pause_for.as_secs_f64(),
                "expected_pauses": spec.expected_pauses(),
                "restart_every_s": spec.restart_every.as_secs_f64(),
                "rss_every_ms": spec.rss_every.as_millis() as u64,
                "rss_warmup_s": spec.rss_warmup.as_secs_f64(),
                "probe_every_ms": spec.probe_every.as_millis() as u64,
                "seed": spec.seed,
            },
            "restarts": self.restarts.iter().map(|r| json!({
                "killed_mono_ns": r.killed_mono_ns,
                "ready_mono_ns": r.ready_mono_ns,
                "gap_ms": r.gap_ns() as f64 / 1e6,
            })).collect::<Vec<_>>(),
            "load": self.load,
            "sent": self.sent,
            "accepted": self.accepted,
            "unrecorded": self.unrecorded(),
            "blind_window_ms": self.blind_window_ns as f64 / 1e6,
            "probe_samples": self.probe_samples,
            "probe_unreadable": self.probe_unreadable,
            "rss": {
                "samples": self.rss.len(),
                "slope_mb_per_min": self.rss_slope_mb_per_min(),
                "anon_slope_mb_per_min": self.anon_slope_mb_per_min(),
                "max_mb": self.rss_max_mb(),
                "per_run": rss_per_run(&self.rss, spec.rss_warmup),
                "series_columns": ["s since the first sample", "run", "rss MB", "anon MB"],
                "series": rss_series(&self.rss),
            },
            "verdict": self.verdict.to_json(),
            "problems": self.problems(),
            "elapsed_s": self.elapsed.as_secs_f64(),
        })
    }
}

const MB: f64 = 1024.0 * 1024.0;

/// The files of a soak.
struct Files {
    config: PathBuf,
    socket: PathBuf,
    state: PathBuf,
    events: PathBuf,
    load_report: PathBuf,
    probe_report: PathBuf,
}

/// Runs the soak `spec` in a lab named `prefix` (its instance too), with
/// the `hb` and `hb-tools` binaries; `progress` gets a line at each step.
/// Fails only when the soak could not run (a process died, a wait timed
/// out); what it found is in the outcome.
pub fn run(
    hb: &Hb,
    tools: &Hb,
    prefix: &str,
    spec: &SoakSpec,
    mut progress: impl FnMut(&str),
) -> Result<SoakOutcome> {
    spec.check()?;
    let begun = Instant::now();
    let lab = Lab::build(prefix, 1)?;
    let dir = TempDir::new(&format!("{prefix}-soak"))?;
    let files = Files {
        config: dir.join("hb.toml"),
        socket: dir.join("hb.sock"),
        state: dir.join("state"),
        events: dir.join("events.jsonl"),
        load_report: dir.join("load.json"),
        probe_report: dir.join("probe.json"),
    };
    write_file(&files.config, &render_config(spec, &lab, &files))?;
    progress(&format!(
        "lab {prefix}: {} nodes every {:?}, timeout {:?}, {}% loss, pauses of {:?} (about {:.0}), \
         SIGKILL every {:?} ({} restarts), {:?}",
        spec.nodes,
        spec.interval,
        spec.timeout(),
        spec.loss_percent,
        spec.pause_for,
        spec.expected_pauses(),
        spec.restart_every,
        spec.restarts(),
        spec.duration,
    ));

    let mut runs = 0;
    let start_agent = |runs: &mut usize| -> Result<(ChildGuard, u64)> {
        *runs += 1;
        let log = dir.join(&format!("agent-{runs}.log"));
        let mut guard = hb.spawn_in(
            &lab.monitor,
            &format!("the agent (run {runs})"),
            [
                OsStr::new("agent"),
                "--config".as_ref(),
                files.config.as_os_str(),
            ],
            &log,
        )?;
        hb.wait_until_ready(&files.socket, &mut guard, AGENT_READY)?;
        Ok((guard, monotonic_ns()))
    };
    let (mut agent, mut ready) = start_agent(&mut runs)?;

    let probe_for = spec.duration + LOAD_GRACE + Duration::from_secs(60);
    let mut probe = ChildGuard::spawn_logged(
        "the datapath probe",
        &mut tools.command([
            OsStr::new("datapath-counters"),
            "--instance".as_ref(),
            lab.instance().as_ref(),
            "--every".as_ref(),
            humantime(spec.probe_every).as_ref(),
            "--for".as_ref(),
            humantime(probe_for).as_ref(),
            "--report".as_ref(),
            files.probe_report.as_os_str(),
        ]),
        &dir.join("probe.log"),
    )?;
    // A sample or two before the first heartbeat.
    interrupt::sleep(spec.probe_every * 3)?;
    probe.ensure_running()?;

    let target = format!("{}:{HEARTBEAT_PORT}", lab.node(1).monitor_address);
    let mut load_cmd = lab.node(1).ns.command(tools.path());
    load_cmd.args(load_args(spec, &target, &files.load_report));
    let mut load =
        ChildGuard::spawn_logged("the load generator", &mut load_cmd, &dir.join("load.log"))?;
    let load_started = Instant::now();
    progress("the agent, the probe and the load are running");

    let mut restarts = Vec::new();
    let mut rss = Vec::new();
    let mut next_rss = Instant::now();
    let mut next_restart = 1;
    let load_deadline = load_started + spec.duration + LOAD_GRACE;
    let load_status = loop {
        interrupt::check()?;
        if let Some(status) = load.try_wait()? {
            break status;
        }
        if Instant::now() >= load_deadline {
            return Err(Error::Timeout {
                what: "the load generator to finish".to_owned(),
                after: spec.duration + LOAD_GRACE,
                detail: format!("; its output:\n{}", load.log_tail(20)),
            });
        }
        agent.ensure_running()?;
        if Instant::now() >= next_rss {
            let (rss_bytes, anon_bytes) = resident(agent.pid())?;
            rss.push(RssSample {
                mono_ns: monotonic_ns(),
                run: runs - 1,
                run_ready_mono_ns: ready,
                rss_bytes,
                anon_bytes,
            });
            next_rss += spec.rss_every;
        }
        if next_restart <= spec.restarts()
            && load_started.elapsed() >= spec.restart_every * next_restart
        {
            let killed = monotonic_ns();
            agent.stop(Signal::Kill, AGENT_EXIT)?;
            (agent, ready) = start_agent(&mut runs)?;
            let restart = Restart {
                killed_mono_ns: killed,
                ready_mono_ns: ready,
            };
            progress(&format!(
                "SIGKILL {next_restart} of {} at {:.1} s; the agent answered again {:.0} ms later",
                spec.restarts(),
                load_started.elapsed().as_secs_f64(),
                restart.gap_ns() as f64 / 1e6
            ));
            restarts.push(restart);
            next_restart += 1;
        }
        interrupt::sleep(TICK)?;
    };
    if !load_status.success() {
        return Err(Error::Exited {
            name: "the load generator".to_owned(),
            status: load_status,
            log: load.log_tail(20),
        });
    }
    let mut load_report = read_json(&files.load_report)?;
    let truth = GroundTruth::from_report(&load_report, &files.load_report)?;
    // Watch the last pauses' downs, then stop the agent before the end of
    // the load makes every node suspect.
    let watch_until = truth.ended_mono_ns + Rules::watch_after_load(spec);
    interrupt::sleep(Duration::from_nanos(
        watch_until.saturating_sub(monotonic_ns()),
    ))?;
    agent.ensure_running()?;
    let stopped_mono_ns = monotonic_ns();
    let agent_stopped = agent.stop(Signal::Term, AGENT_EXIT)?;
    if !agent_stopped.success() {
        return Err(Error::Exited {
            name: format!("the agent (run {runs})"),
            status: agent_stopped,
            log: agent.log_tail(30),
        });
    }
    interrupt::sleep(PROBE_TAIL)?;
    let probe_status = probe.stop(Signal::Term, Duration::from_secs(10))?;
    if !probe_status.success() {
        return Err(Error::Exited {
            name: "the datapath probe".to_owned(),
            status: probe_status,
            log: probe.log_tail(20),
        });
    }
    progress("the load ended; analysing");

    if let Some(report) = load_report.as_object_mut() {
        report.remove("pause_windows");
        report.remove("stopped");
    }
    let probe_report = read_json(&files.probe_report)?;
    let samples = probe_samples(&probe_report, &files.probe_report)?;
    let events = read_events(&files.events)?;
    let rules = Rules::new(spec, &restarts, truth.ended_mono_ns, stopped_mono_ns);
    let verdict = analyze(&truth, &events, &rules);
    let accepted = accepted_during(&samples, truth.started_mono_ns, truth.ended_mono_ns)
        .ok_or_else(|| Error::Invalid {
            what: "probe report",
            value: files.probe_report.display().to_string(),
            reason: "no readable sample before the load's start or after its end".to_owned(),
        })?;
    Ok(SoakOutcome {
        spec: spec.clone(),
        restarts,
        sent: truth.sent,
        load: load_report,
        accepted,
        blind_window_ns: longest_flat(&samples, truth.started_mono_ns, truth.ended_mono_ns),
        probe_samples: samples.len() as u64,
        probe_unreadable: samples.iter().filter(|s| s.1.is_none()).count() as u64,
        rss,
        verdict,
        elapsed: begun.elapsed(),
    })
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|source| Error::Io {
        op: "writing",
        path: path.to_owned(),
        source,
    })
}

fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read(path).map_err(|source| Error::Io {
        op: "reading",
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| Error::Json {
        cmd: format!("reading {}", path.display()),
        output: String::from_utf8_lossy(&text[..text.len().min(400)]).into_owned(),
        source,
    })
}

/// The agent's configuration: the XDP datapath on the lab's instance, the
/// event log, and a batched action on up and down that reads its input.
fn render_config(spec: &SoakSpec, lab: &Lab, files: &Files) -> String {
    let path = |p: &Path| toml_string(&p.to_string_lossy());
    format!(
        "# Written by hb_tests::soak.\n\
         interfaces = [{interface}]\n\
         port = {HEARTBEAT_PORT}\n\
         datapath = \"xdp\"\n\
         instance = {instance}\n\
         max_nodes = {max_nodes}\n\
         status_socket = {socket}\n\
         state_file = {state}\n\
         event_log = {events}\n\
         \n\
         [defaults]\n\
         interval = \"{interval}\"\n\
         timeout_multiplier = {multiplier}\n\
         sweep_period = \"{sweep}\"\n\
         \n\
         [detector]\n\
         rise = {rise}\n\
         \n\
         [http]\n\
         listen = \"\"\n\
         \n\
         [[node_ranges]]\n\
         first_id = 1\n\
         count = {nodes}\n\
         name_prefix = \"n\"\n\
         interval = \"{interval}\"\n\
         \n\
         [[actions]]\n\
         name = \"drain\"\n\
         on = [\"up\", \"down\"]\n\
         shell = \"cat > /dev/null\"\n\
         batch = true\n\
         timeout = \"30s\"\n",
        interface = toml_string(&lab.node(1).monitor_interface),
        instance = toml_string(lab.instance()),
        max_nodes = spec.max_nodes(),
        socket = path(&files.socket),
        state = path(&files.state),
        events = path(&files.events),
        interval = humantime(spec.interval),
        multiplier = spec.timeout_multiplier,
        sweep = humantime(spec.sweep_period),
        rise = spec.rise,
        nodes = spec.nodes,
    )
}

/// `hb-tools loadgen`'s arguments: one datagram per heartbeat, as real
/// nodes send them.
fn load_args(spec: &SoakSpec, target: &str, report: &Path) -> Vec<String> {
    [
        "loadgen",
        "--nodes",
        &spec.nodes.to_string(),
        "--to",
        target,
        "--interval",
        &humantime(spec.interval),
        "--duration",
        &humantime(spec.duration),
        "--seed",
        &spec.seed.to_string(),
        "--no-gso",
        "--loss",
        &format!("{}", spec.loss_percent),
        "--pause-every",
        &humantime(spec.pause_every),
        "--pause-for",
        &humantime(spec.pause_for),
        "--report-pauses",
        "--report",
        &report.to_string_lossy(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// The resident set of process `pid` and its anonymous part (`VmRSS` and
/// `RssAnon` in `/proc/<pid>/status`), bytes; refuses a process that is not
/// `hb`.
fn resident(pid: u32) -> Result<(u64, u64)> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let text = fs::read_to_string(&path).map_err(|source| Error::Io {
        op: "reading",
        path: path.clone(),
        source,
    })?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    let invalid = |reason: String| Error::Invalid {
        what: "agent process",
        value: path.display().to_string(),
        reason,
    };
    if field("Name:") != Some("hb") {
        return Err(invalid(format!("is {:?}, not hb", field("Name:"))));
    }
    let bytes = |name: &str| {
        field(name)
            .and_then(|v| v.strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| invalid(format!("no {name}")))
    };
    Ok((bytes("VmRSS:")?, bytes("RssAnon:")?))
}

/// The least-squares slope over time of the memory `bytes` picks (the RSS
/// or its anonymous part) within each run of the agent, pooled over the
/// runs (each run its own intercept, one common slope), after `warmup` from
/// each run's start, MB per minute; `None` with fewer than two samples in
/// any run.
pub fn rss_slope(
    samples: &[RssSample],
    warmup: Duration,
    bytes: fn(&RssSample) -> u64,
) -> Option<f64> {
    let (mut num, mut den) = (0.0, 0.0);
    for run in runs_after_warmup(samples, warmup, bytes).values() {
        let (n, t_mean, r_mean) = means(run);
        if n < 2.0 {
            continue;
        }
        for &(t, r) in run {
            num += (t - t_mean) * (r - r_mean);
            den += (t - t_mean) * (t - t_mean);
        }
    }
    (den > 0.0).then(|| num / den)
}

/// Each run's slopes (MB per minute), sample count and largest RSS (MB).
fn rss_per_run(samples: &[RssSample], warmup: Duration) -> Vec<Value> {
    let anon = runs_after_warmup(samples, warmup, |s| s.anon_bytes);
    runs_after_warmup(samples, warmup, |s| s.rss_bytes)
        .iter()
        .map(|(run, points)| {
            json!({
                "run": run,
                "samples": points.len(),
                "slope_mb_per_min": slope(points),
                "anon_slope_mb_per_min": anon.get(run).and_then(|p| slope(p)),
                "max_mb": points.iter().map(|p| p.1).fold(0.0, f64::max),
            })
        })
        .collect()
}

/// Every sample: seconds since the first, the run, RSS and anonymous MB
/// (rounded to kB).
fn rss_series(samples: &[RssSample]) -> Vec<Value> {
    let first = samples.first().map_or(0, |s| s.mono_ns);
    let mb = |bytes: u64| (bytes as f64 / 1024.0).round() / 1024.0;
    samples
        .iter()
        .map(|s| {
            json!([
                ((s.mono_ns - first) as f64 / 1e6).round() / 1e3,
                s.run,
                mb(s.rss_bytes),
                mb(s.anon_bytes),
            ])
        })
        .collect()
}

/// The samples after warm-up, by run, as (minutes, MB).
fn runs_after_warmup(
    samples: &[RssSample],
    warmup: Duration,
    bytes: fn(&RssSample) -> u64,
) -> BTreeMap<usize, Vec<(f64, f64)>> {
    let mut runs: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
    let warmup = warmup.as_nanos() as u64;
    for s in samples {
        if s.mono_ns >= s.run_ready_mono_ns + warmup {
            runs.entry(s.run)
                .or_default()
                .push((s.mono_ns as f64 / 60e9, bytes(s) as f64 / MB));
        }
    }
    runs
}

fn means(points: &[(f64, f64)]) -> (f64, f64, f64) {
    let n = points.len() as f64;
    if points.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let r = points.iter().map(|p| p.1).sum::<f64>() / n;
    (n, t, r)
}

fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let (_, t_mean, r_mean) = means(points);
    let num: f64 = points.iter().map(|p| (p.0 - t_mean) * (p.1 - r_mean)).sum();
    let den: f64 = points.iter().map(|p| (p.0 - t_mean).powi(2)).sum();
    (den > 0.0).then(|| num / den)
}

/// The probe's samples: (`CLOCK_MONOTONIC` ns, `accepted`, null when the
/// pin could not be read).
fn probe_samples(report: &Value, path: &Path) -> Result<Vec<(u64, Option<u64>)>> {
    let samples = report["samples"].as_array().ok_or_else(|| Error::Invalid {
        what: "probe report",
        value: path.display().to_string(),
        reason: "no samples".to_owned(),
    })?;
    Ok(samples
        .iter()
        .filter_map(|s| Some((s["mono_ns"].as_u64()?, s["accepted"].as_u64())))
        .collect())
}

/// How much `accepted` grew from the last readable sample at or before
/// `from` to the first readable one after `to` plus [`PROBE_TAIL`]'s
/// half (the last heartbeats are counted by then).
fn accepted_during(samples: &[(u64, Option<u64>)], from: u64, to: u64) -> Option<u64> {
    let settled = to + PROBE_TAIL.as_nanos() as u64 / 2;
    let before = samples
        .iter()
        .rev()
        .find_map(|&(t, v)| if t <= from { v } else { None })?;
    let after = samples
        .iter()
        .find_map(|&(t, v)| if t >= settled { v } else { None })?;
    Some(after.saturating_sub(before))
}

/// The longest span within `[from, to]` over which `accepted` did not grow
/// (from the first sample of a run without growth to its last), ns. A
/// sample that could not read the pin is no growth.
pub fn longest_flat(samples: &[(u64, Option<u64>)], from: u64, to: u64) -> u64 {
    let mut longest = 0;
    let mut run_start: Option<u64> = None;
    let mut previous: Option<u64> = None;
    // The run that ends at the first sample inside the span started at the
    // last sample before it.
    let before = samples.iter().rev().find(|s| s.0 < from && s.1.is_some());
    for &(t, value) in before
        .into_iter()
        .chain(samples.iter().filter(|s| (from..=to).contains(&s.0)))
    {
        match (value, previous) {
            (Some(v), Some(p)) if v > p => {
                run_start = Some(t);
                previous = Some(v);
                continue;
            }
            (Some(v), None) => {
                run_start = Some(t);
                previous = Some(v);
                continue;
            }
            (Some(v), Some(_)) => previous = Some(v),
            (None, _) => {}
        }
        if let Some(start) = run_start {
            longest = longest.max(t - start);
        }
    }
    longest
}

/// A soak of 3 nodes for 100 s, for the unit tests.
#[cfg(test)]
fn sample_spec() -> SoakSpec {
    SoakSpec {
        nodes: 3,
        interval: Duration::from_secs(1),
        timeout_multiplier: 6,
        sweep_period: Duration::from_millis(100),
        rise: 2,
        duration: Duration::from_secs(100),
        loss_percent: 1.0,
        pause_every: Duration::from_secs(1000),
        pause_for: Duration::from_secs(20),
        restart_every: Duration::from_secs(30),
        rss_every: Duration::from_secs(1),
        rss_warmup: Duration::from_secs(5),
        probe_every: Duration::from_millis(100),
        seed: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn spec() -> SoakSpec {
        sample_spec()
    }

    #[test]
    fn flat_spans_and_the_accepted_count() {
        let values = [
            Some(0),
            Some(0),
            Some(5),
            Some(5),
            None,
            Some(5),
            Some(9),
            Some(9),
            Some(9),
            Some(9),
        ];
        let samples: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(n, &v)| (n as u64 * 100 * MS, v))
            .collect();
        // Within the load (150..=650 ms): flat from 200 to 500 ms.
        assert_eq!(longest_flat(&samples, 150 * MS, 650 * MS), 300 * MS);
        // From 550 ms: the run that started at 500 ms (the last sample
        // before) grows at 600 ms.
        assert_eq!(longest_flat(&samples, 550 * MS, 650 * MS), 0);
        assert_eq!(longest_flat(&samples, 650 * MS, 900 * MS), 300 * MS);
        // From the last sample at or before the start, to the first one at
        // least half the probe's tail (250 ms) after the end.
        assert_eq!(accepted_during(&samples, 150 * MS, 200 * MS), Some(5));
        assert_eq!(accepted_during(&samples, 150 * MS, 300 * MS), Some(9));
        assert_eq!(accepted_during(&samples, 150 * MS, 900 * MS), None);
    }

    #[test]
    fn rss_slope_pools_the_runs_after_warmup() {
        let sample = |t_s: u64, run: usize, ready_s: u64, mb: f64| RssSample {
            mono_ns: t_s * S,
            run,
            run_ready_mono_ns: ready_s * S,
            rss_bytes: (mb * MB) as u64,
            anon_bytes: (mb * MB / 2.0) as u64,
        };
        // Two runs, each growing 1 MB per minute after a warm-up jump; the
        // second starts lower (a restart).
        let mut samples = vec![sample(0, 0, 0, 5.0), sample(1, 0, 0, 50.0)];
        for m in 1..=3 {
            samples.push(sample(m * 60, 0, 0, 10.0 + m as f64));
            samples.push(sample(300 + m * 60, 1, 300, 8.0 + m as f64));
        }
        let warmup = Duration::from_secs(10);
        let slope = rss_slope(&samples, warmup, |s| s.rss_bytes).unwrap();
        assert!((slope - 1.0).abs() < 1e-9, "{slope}");
        let anon = rss_slope(&samples, warmup, |s| s.anon_bytes).unwrap();
        assert!((anon - 0.5).abs() < 1e-6, "{anon}");
        // Without the warm-up cut, the jump drags the slope down.
        let raw = rss_slope(&samples, Duration::ZERO, |s| s.rss_bytes).unwrap();
        assert!(raw < 0.5, "{raw}");
        let runs = rss_per_run(&samples, warmup);
        assert_eq!(runs.len(), 2);
        assert!((runs[1]["slope_mb_per_min"].as_f64().unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(rss_series(&samples).len(), samples.len());
        assert_eq!(rss_series(&samples)[1], json!([1.0, 0, 50.0, 25.0]));
        assert_eq!(
            rss_slope(&samples[..1], Duration::ZERO, |s| s.rss_bytes),
            None
        );
    }

    #[test]
    fn spec_figures() {
        let spec = spec();
        assert_eq!(spec.timeout(), Duration::from_secs(6));
        assert_eq!(spec.restarts(), 3);
        let even = SoakSpec {
            duration: Duration::from_secs(90),
            ..spec.clone()
        };
        assert_eq!(even.restarts(), 2);
        assert_eq!(
            SoakSpec::pause_every_for(100_000, Duration::from_secs(600), 1000),
            Duration::from_secs(60_000)
        );
        assert!((spec.expected_pauses() - 0.3).abs() < 1e-9);
        assert!(spec.check().is_ok());
        let short = SoakSpec {
            pause_for: Duration::from_secs(7),
            ..spec.clone()
        };
        assert!(short.check().is_err());
        let once = SoakSpec {
            restart_every: Duration::from_secs(100),
            ..spec
        };
        assert!(once.check().is_err());
    }

    #[test]
    fn renders_a_config_and_the_load() {
        let spec = spec();
        let args = load_args(&spec, "198.18.1.1:7979", Path::new("/tmp/l.json")).join(" ");
        assert_eq!(
            args,
            "loadgen --nodes 3 --to 198.18.1.1:7979 --interval 1000ms --duration 100000ms \
             --seed 1 --no-gso --loss 1 --pause-every 1000000ms --pause-for 20000ms \
             --report-pauses --report /tmp/l.json"
        );
    }
}
