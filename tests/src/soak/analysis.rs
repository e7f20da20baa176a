//! The soak's verdict: the agent's event log held against the load
//! generator's pause windows (see [`analyze`]).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    path::Path,
    time::Duration,
};

use serde_json::{Value, json};

use super::{Restart, SLACK, SoakSpec};
use crate::{Error, Result};

/// A `down` this much before the last heartbeat plus the timeout still
/// counts as on time (the kernel stamps the arrival after the send; the
/// detector's deadlines are whole milliseconds).
const EARLY_TOLERANCE: Duration = Duration::from_millis(20);

/// One record of the agent's event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// When the sweep that found the change started.
    pub mono_ns: u64,
    /// The state entered.
    pub event: String,
    pub node_id: u32,
    /// The state left.
    pub previous: String,
}

/// Every record of the event log at `path`, in the order written.
pub fn read_events(path: &Path) -> Result<Vec<EventRecord>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(Error::Io {
                op: "reading",
                path: path.to_owned(),
                source,
            });
        }
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let value: Value = serde_json::from_str(line).map_err(|source| Error::Json {
                cmd: format!("reading {}", path.display()),
                output: line.to_owned(),
                source,
            })?;
            parse_event(&value).ok_or_else(|| Error::Invalid {
                what: "event record",
                value: line.to_owned(),
                reason: format!(
                    "in {}: missing mono_ns, event, node_id or previous",
                    path.display()
                ),
            })
        })
        .collect()
}

fn parse_event(value: &Value) -> Option<EventRecord> {
    Some(EventRecord {
        mono_ns: value["mono_ns"].as_u64()?,
        event: value["event"].as_str()?.to_owned(),
        node_id: u32::try_from(value["node_id"].as_u64()?).ok()?,
        previous: value["previous"].as_str()?.to_owned(),
    })
}

/// A pause window of the load generator's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseWindow {
    pub node_id: u32,
    /// The node's last heartbeat before the pause, handed to the kernel.
    pub last_before: Option<u64>,
    /// Its first after; `None`: the run ended first.
    pub first_after: Option<u64>,
}

/// What the load generator did: the ground truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroundTruth {
    pub nodes: u32,
    pub started_mono_ns: u64,
    pub ended_mono_ns: u64,
    pub sent: u64,
    pub windows: Vec<PauseWindow>,
}

impl GroundTruth {
    /// Reads `hb-tools loadgen --report-pauses`' report.
    pub fn from_report(report: &Value, path: &Path) -> Result<Self> {
        let invalid = |reason: &str| Error::Invalid {
            what: "load report",
            value: path.display().to_string(),
            reason: reason.to_owned(),
        };
        if report["interrupted"].as_bool() != Some(false) {
            return Err(invalid("the load generator was interrupted"));
        }
        let field = |name: &str| {
            report[name]
                .as_u64()
                .ok_or_else(|| invalid(&format!("no {name}")))
        };
        let windows = report["pause_windows"]
            .as_array()
            .ok_or_else(|| invalid("no pause_windows (run with --report-pauses)"))?
            .iter()
            .map(|w| {
                Some(PauseWindow {
                    node_id: u32::try_from(w["node_id"].as_u64()?).ok()?,
                    last_before: w["last_sent_before_mono_ns"].as_u64(),
                    first_after: w["first_sent_after_mono_ns"].as_u64(),
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("a pause window without a node id"))?;
        Ok(Self {
            nodes: u32::try_from(field("nodes")?).map_err(|_| invalid("too many nodes"))?,
            started_mono_ns: field("started_mono_ns")?,
            ended_mono_ns: field("ended_mono_ns")?,
            sent: field("sent")?,
            windows,
        })
    }
}

/// How the event log is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub timeout_ns: u64,
    /// A `down` later than the last heartbeat plus the timeout plus this is
    /// late: one sweep, the longest restart and 1 s of slack.
    pub down_margin_ns: u64,
    /// A recovery later than the first heartbeat after the silence plus
    /// this is late: `rise + 2` intervals (the heartbeats after the first
    /// keep the node's own phase, and one or two may be lost), one sweep,
    /// the longest restart and 1 s of slack.
    pub up_margin_ns: u64,
    /// Events after this are not judged: the load's end plus
    /// [`Rules::watch_after_load`], or when the agent was stopped if that
    /// came first.
    pub cutoff_mono_ns: u64,
}

impl Rules {
    /// How long after the end of the load the agent is still watched, ns:
    /// the timeout less four intervals. The end of the load is a silence
    /// of every node that began with its last heartbeat sent, so a node
    /// whose last k heartbeats were lost is convicted k intervals earlier
    /// than the others: with four, that takes four losses in a row (1e-8
    /// per node at 1% loss), where two (1e-4: 10 false downs among 100,000
    /// nodes, as a first full run found) would not. The last pauses'
    /// `down`s are seen up to then.
    pub fn watch_after_load(spec: &SoakSpec) -> u64 {
        let interval = spec.interval.as_nanos() as u64;
        (spec.timeout().as_nanos() as u64).saturating_sub(4 * interval)
    }

    /// The rules of a soak whose load ended at `load_ended` and whose last
    /// agent was stopped at `agent_stopped` (`CLOCK_MONOTONIC` ns).
    pub fn new(spec: &SoakSpec, restarts: &[Restart], load_ended: u64, agent_stopped: u64) -> Self {
        let longest_restart = restarts.iter().map(Restart::gap_ns).max().unwrap_or(0);
        let common =
            spec.sweep_period.as_nanos() as u64 + longest_restart + SLACK.as_nanos() as u64;
        let interval = spec.interval.as_nanos() as u64;
        let timeout = spec.timeout().as_nanos() as u64;
        Self {
            timeout_ns: timeout,
            down_margin_ns: common,
            up_margin_ns: u64::from(spec.rise + 2) * interval + common,
            cutoff_mono_ns: (load_ended + Self::watch_after_load(spec)).min(agent_stopped),
        }
    }
}

/// A node's silence: from its last heartbeat before a pause (or pauses in a
/// row) to its first after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Silence {
    from: u64,
    to: Option<u64>,
    downs: u32,
    recoveries: u32,
}

/// The event log held against the ground truth. Counts are of silences
/// (a node's pauses in a row, with no heartbeat between them, are one) and
/// of events up to the cutoff.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Pause windows in the report, and silences they make.
    pub windows: u64,
    pub silences: u64,
    /// Silences that must give a `down`: longer than the timeout plus the
    /// margin, and ending (or the cutoff coming) late enough to see it.
    pub crashes: u64,
    /// ... that gave exactly one `down`, none, more than one.
    pub crashes_detected_once: u64,
    pub crashes_missed: u64,
    pub crashes_detected_twice_or_more: u64,
    /// `down`s later than the last heartbeat plus the timeout plus the
    /// margin.
    pub downs_late: u64,
    /// Detection time past the timeout, ns (the `down` minus the last
    /// heartbeat minus the timeout): median and largest.
    pub detection_past_timeout_p50_ns: Option<u64>,
    pub detection_past_timeout_max_ns: Option<u64>,
    /// Silences with a `down` that ended early enough to see the recovery.
    pub recoveries: u64,
    pub recoveries_once: u64,
    pub recoveries_missed: u64,
    pub recoveries_twice_or_more: u64,
    pub recoveries_late: u64,
    /// Recovery time (the recovery minus the first heartbeat after the
    /// silence), ns: median and largest.
    pub recovery_p50_ns: Option<u64>,
    pub recovery_max_ns: Option<u64>,
    /// `down`s outside any silence, or before its last heartbeat plus the
    /// timeout.
    pub false_downs: u64,
    /// Recoveries that follow no silence.
    pub spurious_recoveries: u64,
    /// `suspect`s outside any silence (1% loss makes a few: not an error).
    pub false_suspicions: u64,
    /// Events whose `previous` is not the state the node's last event
    /// entered: a transition lost or repeated.
    pub chain_breaks: u64,
    /// Nodes that came up from `unseen` more than once, and nodes that
    /// never did although they sent before their first pause.
    pub first_ups_repeated: u64,
    pub first_ups_missing: u64,
    /// `left` events (none is sent).
    pub lefts: u64,
    /// Events judged, by kind; and events after the cutoff (not judged).
    pub events_by_kind: BTreeMap<String, u64>,
    pub events_after_cutoff: u64,
    /// A few examples of each problem, for the message.
    pub examples: Vec<String>,
}

/// At most this many examples are kept.
const EXAMPLES: usize = 12;

impl Verdict {
    fn example(&mut self, text: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(text);
        }
    }

    /// Every expectation not met, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |bad: u64, what: &str| {
            if bad > 0 {
                out.push(format!("{bad} {what}"));
            }
        };
        check(self.crashes_missed, "crashes never detected");
        check(
            self.crashes_detected_twice_or_more,
            "crashes detected more than once",
        );
        check(
            self.downs_late,
            "downs later than the timeout plus the margin",
        );
        check(self.recoveries_missed, "recoveries never reported");
        check(
            self.recoveries_twice_or_more,
            "recoveries reported more than once",
        );
        check(self.recoveries_late, "recoveries later than the margin");
        check(self.false_downs, "false downs");
        check(self.spurious_recoveries, "recoveries without a silence");
        check(
            self.chain_breaks,
            "events that do not follow the node's previous one (lost or repeated transitions)",
        );
        check(
            self.first_ups_repeated,
            "nodes that came up from unseen more than once",
        );
        check(self.first_ups_missing, "nodes that never came up");
        check(self.lefts, "left events");
        if self.crashes == 0 {
            out.push(
                "no pause was long and early enough to be a crash: nothing was tested".to_owned(),
            );
        }
        if !out.is_empty() && !self.examples.is_empty() {
            out.push(format!("examples:\n  {}", self.examples.join("\n  ")));
        }
        out
    }

    /// Every figure, for a results file.
    pub fn to_json(&self) -> Value {
        let ms = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1e6);
        json!({
            "windows": self.windows,
            "silences": self.silences,
            "crashes": self.crashes,
            "crashes_detected_once": self.crashes_detected_once,
            "crashes_missed": self.crashes_missed,
            "crashes_detected_twice_or_more": self.crashes_detected_twice_or_more,
            "downs_late": self.downs_late,
            "detection_past_timeout_p50_ms": ms(self.detection_past_timeout_p50_ns),
            "detection_past_timeout_max_ms": ms(self.detection_past_timeout_max_ns),
            "recoveries": self.recoveries,
            "recoveries_once": self.recoveries_once,
            "recoveries_missed": self.recoveries_missed,
            "recoveries_twice_or_more": self.recoveries_twice_or_more,
            "recoveries_late": self.recoveries_late,
            "recovery_p50_ms": ms(self.recovery_p50_ns),
            "recovery_max_ms": ms(self.recovery_max_ns),
            "false_downs": self.false_downs,
            "spurious_recoveries": self.spurious_recoveries,
            "false_suspicions": self.false_suspicions,
            "chain_breaks": self.chain_breaks,
            "first_ups_repeated": self.first_ups_repeated,
            "first_ups_missing": self.first_ups_missing,
            "lefts": self.lefts,
            "events_by_kind": self.events_by_kind,
            "events_after_cutoff": self.events_after_cutoff,
            "examples": self.examples,
        })
    }
}

/// Holds `events` (in the order written) against `truth` under `rules`.
pub fn analyze(truth: &GroundTruth, events: &[EventRecord], rules: &Rules) -> Verdict {
    let mut verdict = Verdict {
        windows: truth.windows.len() as u64,
        ..Verdict::default()
    };
    // Each node's silences, in order; pauses in a row share their bounds.
    let mut silences: HashMap<u32, Vec<Silence>> = HashMap::new();
    // Nodes paused before their first heartbeat: they may come up late or
    // not at all.
    let mut late_starters = HashSet::new();
    for w in &truth.windows {
        let Some(from) = w.last_before else {
            late_starters.insert(w.node_id);
            continue;
        };
        let list = silences.entry(w.node_id).or_default();
        if !list.iter().any(|s| s.from == from) {
            list.push(Silence {
                from,
                to: w.first_after,
                downs: 0,
                recoveries: 0,
            });
        }
    }
    for list in silences.values_mut() {
        list.sort_by_key(|s| s.from);
    }
    verdict.silences = silences.values().map(|l| l.len() as u64).sum();

    let tolerance = EARLY_TOLERANCE.as_nanos() as u64;
    let mut detection = Vec::new();
    let mut recovery = Vec::new();
    let mut state: HashMap<u32, &str> = HashMap::new();
    let mut first_ups: HashMap<u32, u32> = HashMap::new();
    for e in events {
        // The chain holds over every event, judged or not.
        let last = state.insert(e.node_id, &e.event).unwrap_or("unseen");
        if e.previous != last {
            verdict.chain_breaks += 1;
            verdict.example(format!(
                "node {}: {} from {} at {} ns, but its last event entered {last}",
                e.node_id, e.event, e.previous, e.mono_ns
            ));
        }
        if e.mono_ns > rules.cutoff_mono_ns {
            verdict.events_after_cutoff += 1;
            continue;
        }
        *verdict.events_by_kind.entry(e.event.clone()).or_default() += 1;
        let list = silences.entry(e.node_id).or_default();
        let within = |s: &Silence, t: u64| s.from <= t && s.to.is_none_or(|to| t <= to);
        match (e.event.as_str(), e.previous.as_str()) {
            ("up", "unseen") => *first_ups.entry(e.node_id).or_default() += 1,
            ("down", _) => match list.iter_mut().find(|s| within(s, e.mono_ns)) {
                Some(s) if e.mono_ns + tolerance >= s.from + rules.timeout_ns => {
                    s.downs += 1;
                    let past = e.mono_ns.saturating_sub(s.from + rules.timeout_ns);
                    detection.push(past);
                    if past > rules.down_margin_ns {
                        verdict.downs_late += 1;
                        verdict.example(format!(
                            "node {}: down {:.3} s past its timeout",
                            e.node_id,
                            past as f64 / 1e9
                        ));
                    }
                }
                found => {
                    verdict.false_downs += 1;
                    verdict.example(format!(
                        "node {}: down at {} ns {}",
                        e.node_id,
                        e.mono_ns,
                        match found {
                            Some(s) => format!(
                                "only {:.3} s after its last heartbeat",
                                (e.mono_ns - s.from) as f64 / 1e9
                            ),
                            None => "outside any pause".to_owned(),
                        }
                    ));
                }
            },
            ("suspect", _) if !list.iter().any(|s| within(s, e.mono_ns)) => {
                verdict.false_suspicions += 1;
            }
            ("up" | "flapping", "down") => {
                match list
                    .iter_mut()
                    .rev()
                    .find(|s| s.to.is_some_and(|to| to <= e.mono_ns))
                {
                    Some(s) => {
                        s.recoveries += 1;
                        let took = e.mono_ns - s.to.unwrap_or(e.mono_ns);
                        recovery.push(took);
                        if took > rules.up_margin_ns {
                            verdict.recoveries_late += 1;
                            verdict.example(format!(
                                "node {}: recovered {:.3} s after its first heartbeat",
                                e.node_id,
                                took as f64 / 1e9
                            ));
                        }
                    }
                    None => {
                        verdict.spurious_recoveries += 1;
                        verdict.example(format!(
                            "node {}: recovery at {} ns after no pause",
                            e.node_id, e.mono_ns
                        ));
                    }
                }
            }
            ("left", _) => verdict.lefts += 1,
            _ => {}
        }
    }

    let must_down = rules.timeout_ns + rules.down_margin_ns;
    let mut nodes: Vec<_> = silences.into_iter().collect();
    nodes.sort_by_key(|(id, _)| *id);
    for (node, list) in &nodes {
        for s in list {
            let end =
                s.to.unwrap_or(rules.cutoff_mono_ns)
                    .min(rules.cutoff_mono_ns);
            let crash = end.saturating_sub(s.from) > must_down;
            if crash {
                verdict.crashes += 1;
                match s.downs {
                    1 => verdict.crashes_detected_once += 1,
                    0 => {
                        verdict.crashes_missed += 1;
                        verdict.example(format!(
                            "node {node}: silent from {} ns for {:.3} s, never down",
                            s.from,
                            (end - s.from) as f64 / 1e9
                        ));
                    }
                    _ => {
                        verdict.crashes_detected_twice_or_more += 1;
                        verdict.example(format!(
                            "node {node}: {} downs for the silence from {} ns",
                            s.downs, s.from
                        ));
                    }
                }
            } else if s.downs > 1 {
                verdict.crashes_detected_twice_or_more += 1;
            }
            // A silence that was convicted and ended in time must recover,
            // once.
            let seen_end =
                s.to.is_some_and(|to| to + rules.up_margin_ns <= rules.cutoff_mono_ns);
            if s.downs > 0 && seen_end {
                verdict.recoveries += 1;
                match s.recoveries {
                    1 => verdict.recoveries_once += 1,
                    0 => {
                        verdict.recoveries_missed += 1;
                        verdict.example(format!(
                            "node {node}: down for the silence from {} ns, never up again",
                            s.from
                        ));
                    }
                    _ => verdict.recoveries_twice_or_more += 1,
                }
            } else if s.recoveries > 1 {
                verdict.recoveries_twice_or_more += 1;
            }
        }
    }
    for node in 1..=truth.nodes {
        match first_ups.get(&node).copied().unwrap_or(0) {
            1 => {}
            0 if late_starters.contains(&node) => {}
            0 => {
                verdict.first_ups_missing += 1;
                verdict.example(format!("node {node}: never came up"));
            }
            _ => {
                verdict.first_ups_repeated += 1;
                verdict.example(format!("node {node}: came up from unseen more than once"));
            }
        }
    }
    (
        verdict.detection_past_timeout_p50_ns,
        verdict.detection_past_timeout_max_ns,
    ) = median_and_max(&mut detection);
    (verdict.recovery_p50_ns, verdict.recovery_max_ns) = median_and_max(&mut recovery);
    verdict
}

fn median_and_max(values: &mut [u64]) -> (Option<u64>, Option<u64>) {
    values.sort_unstable();
    (
        values.get(values.len() / 2).copied(),
        values.last().copied(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn spec() -> SoakSpec {
        super::super::sample_spec()
    }

    const MS: u64 = 1_000_000;

    fn event(at_ms: u64, event: &str, node_id: u32, previous: &str) -> EventRecord {
        EventRecord {
            mono_ns: at_ms * MS,
            event: event.to_owned(),
            node_id,
            previous: previous.to_owned(),
        }
    }

    /// Three nodes from 0 to 100 s: node 2 pauses from 10.5 to 30 s
    /// (last heartbeat at 10 s, first after at 30.2 s), node 3 from 70.3 s
    /// past the end (last heartbeat at 70 s), node 1 from 98.5 s (too late
    /// to judge). One restart at 30 s, 400 ms long.
    fn truth() -> GroundTruth {
        let window = |node_id, last_ms: u64, first_ms: Option<u64>| PauseWindow {
            node_id,
            last_before: Some(last_ms * MS),
            first_after: first_ms.map(|f| f * MS),
        };
        GroundTruth {
            nodes: 3,
            started_mono_ns: 0,
            ended_mono_ns: 100 * S,
            sent: 1000,
            windows: vec![
                window(2, 10_000, Some(30_200)),
                window(3, 70_000, None),
                window(1, 98_000, None),
            ],
        }
    }

    fn good_events() -> Vec<EventRecord> {
        vec![
            event(100, "up", 1, "unseen"),
            event(100, "up", 2, "unseen"),
            event(200, "up", 3, "unseen"),
            event(15_050, "suspect", 2, "up"),
            event(16_050, "down", 2, "suspect"),
            event(31_250, "up", 2, "down"),
            event(75_050, "suspect", 3, "up"),
            event(76_050, "down", 3, "suspect"),
            // After the cutoff (102 s): the end of the run.
            event(102_500, "suspect", 1, "up"),
        ]
    }

    fn rules() -> Rules {
        let restarts = [Restart {
            killed_mono_ns: 30 * S,
            ready_mono_ns: 30 * S + 400_000_000,
        }];
        Rules::new(&spec(), &restarts, 100 * S, 200 * S)
    }

    #[test]
    fn a_clean_log_meets_every_expectation() {
        let rules = rules();
        assert_eq!(rules.timeout_ns, 6 * S);
        assert_eq!(rules.down_margin_ns, 1_500_000_000);
        assert_eq!(rules.up_margin_ns, 5_500_000_000);
        assert_eq!(rules.cutoff_mono_ns, 102 * S);
        // An agent stopped earlier is watched until then only: node 3's
        // crash is then not seen, and not judged.
        let early = Rules::new(&spec(), &[], 100 * S, 75 * S);
        assert_eq!(early.cutoff_mono_ns, 75 * S);
        let verdict = analyze(&truth(), &good_events(), &early);
        assert!(verdict.problems().is_empty(), "{:?}", verdict.problems());
        assert_eq!(verdict.crashes, 1);
        assert_eq!(verdict.events_after_cutoff, 3);
        let verdict = analyze(&truth(), &good_events(), &rules);
        assert!(verdict.problems().is_empty(), "{:?}", verdict.problems());
        assert_eq!((verdict.windows, verdict.silences), (3, 3));
        // Node 1's pause at 98 s is too close to the cutoff to be judged.
        assert_eq!((verdict.crashes, verdict.crashes_detected_once), (2, 2));
        assert_eq!((verdict.recoveries, verdict.recoveries_once), (1, 1));
        assert_eq!(verdict.detection_past_timeout_max_ns, Some(50_000_000));
        assert_eq!(verdict.recovery_max_ns, Some(1_050_000_000));
        assert_eq!(verdict.events_after_cutoff, 1);
        assert_eq!(verdict.events_by_kind["up"], 4);
        assert_eq!(verdict.false_suspicions, 0);
    }

    /// Each way the agent can go wrong shows as a problem.
    #[test]
    fn every_kind_of_wrong_log_is_a_problem() {
        let rules = rules();
        let judge = |edit: &dyn Fn(&mut Vec<EventRecord>)| {
            let mut events = good_events();
            edit(&mut events);
            analyze(&truth(), &events, &rules)
        };
        // A lost down: the crash is missed, and the up from "down" breaks
        // the chain.
        let lost = judge(&|e| {
            e.remove(4);
        });
        assert_eq!(lost.crashes_missed, 1);
        assert_eq!(lost.chain_breaks, 1);
        assert!(!lost.problems().is_empty());
        // A down fired again after a restart.
        let repeated = judge(&|e| e.insert(5, event(30_100, "down", 2, "suspect")));
        assert_eq!(repeated.crashes_detected_twice_or_more, 1);
        assert_eq!(repeated.chain_breaks, 1);
        // A down with no pause (a heartbeat lost to the restart).
        let false_down = judge(&|e| {
            e.insert(3, event(12_000, "suspect", 1, "up"));
            e.insert(4, event(12_500, "down", 1, "suspect"));
            e.insert(5, event(14_000, "up", 1, "down"));
        });
        assert_eq!(false_down.false_downs, 1);
        assert_eq!(false_down.spurious_recoveries, 1);
        assert_eq!(false_down.false_suspicions, 1);
        assert_eq!(false_down.chain_breaks, 0);
        // A down before the timeout had passed.
        let early = judge(&|e| e[4].mono_ns = 15 * S);
        assert_eq!(early.false_downs, 1);
        assert_eq!(early.crashes_missed, 1);
        // A down late: 2 s past the timeout, more than one sweep, the
        // restart and the slack.
        let late = judge(&|e| e[7].mono_ns = 78 * S);
        assert_eq!(late.downs_late, 1);
        // No recovery, or two.
        let no_up = judge(&|e| {
            e.remove(5);
        });
        assert_eq!(no_up.recoveries_missed, 1);
        let two_ups = judge(&|e| e.insert(6, event(32_000, "up", 2, "down")));
        assert_eq!(two_ups.recoveries_twice_or_more, 1);
        assert_eq!(two_ups.chain_breaks, 1);
        // A state forgotten across a restart: the node comes up from
        // unseen again.
        let forgotten = judge(&|e| e.insert(5, event(30_500, "up", 1, "unseen")));
        assert_eq!(forgotten.first_ups_repeated, 1);
        assert_eq!(forgotten.chain_breaks, 1);
        let never = judge(&|e| {
            e.remove(0);
        });
        assert_eq!(never.first_ups_missing, 1);
        let left = judge(&|e| e.push(event(50_000, "left", 1, "up")));
        assert_eq!(left.lefts, 1);
        for verdict in [
            repeated, false_down, early, late, no_up, two_ups, forgotten, never, left,
        ] {
            assert!(!verdict.problems().is_empty(), "{verdict:?}");
        }
        // A run without a crash to detect tests nothing.
        let idle = analyze(
            &GroundTruth {
                windows: Vec::new(),
                ..truth()
            },
            &good_events()[..3],
            &rules,
        );
        assert_eq!(idle.problems().len(), 1, "{:?}", idle.problems());
    }

    #[test]
    fn pauses_in_a_row_are_one_silence_and_late_starters_may_come_up_late() {
        let mut truth = truth();
        // Node 2 paused again before its resume heartbeat went out: the
        // second window has the same bounds.
        truth.windows.push(truth.windows[0]);
        // Node 1 was paused before its first heartbeat.
        truth.windows.push(PauseWindow {
            node_id: 1,
            last_before: None,
            first_after: Some(20 * S),
        });
        let mut events = good_events();
        events[0].mono_ns = 20 * S + 100 * MS;
        let verdict = analyze(&truth, &events, &rules());
        assert!(verdict.problems().is_empty(), "{:?}", verdict.problems());
        assert_eq!((verdict.windows, verdict.silences), (5, 3));
        // Or never, when it stayed paused to the end.
        let mut events = good_events();
        events.retain(|e| e.node_id != 1);
        assert!(analyze(&truth, &events, &rules()).problems().is_empty());
    }
}
