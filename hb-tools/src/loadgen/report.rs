//! What a run did: the JSON report (`--report`) and the human summary
//! printed at the end.

use std::{
    fs,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use hb_common::auth;
use serde::{Deserialize, Serialize};

/// What a run did; written as JSON with `--report`. Times are
/// `CLOCK_MONOTONIC` nanoseconds, comparable with `bpf_ktime_get_ns()` on the
/// same host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub nodes: u32,
    pub first_id: u32,
    pub targets: Vec<SocketAddr>,
    /// Per-node interval.
    pub interval_ns: u64,
    /// Requested aggregate rate, heartbeats per second (nodes / interval).
    pub rate: f64,
    /// Achieved aggregate rate: heartbeats sent (lost ones excluded) per
    /// second of the run.
    pub achieved_rate: f64,
    pub incarnation: u64,
    /// Heartbeats generated (the quantity `--count` bounds), including those
    /// the injected loss dropped (see `faults`); leaves excluded.
    pub heartbeats: u64,
    /// Datagrams the kernel accepted ((heartbeats - lost) x targets when all
    /// went well); leaves excluded.
    pub sent: u64,
    /// Failed `sendmmsg(2)` calls, retried or not (leaves included).
    pub send_errors: u64,
    /// Datagrams given up on after errors (never sent; leaves included).
    pub unsent: u64,
    /// Graceful-leave datagrams the kernel accepted (`--leave-at-end`).
    pub leaves_sent: u64,
    /// The schedule's origin: node phases count from here.
    pub started_mono_ns: u64,
    /// When the last regular heartbeat was sent, or the run's bound reached
    /// (before any leaves).
    pub ended_mono_ns: u64,
    /// When the stopping nodes stopped (`started + stop_after`); null if the
    /// run ended before.
    pub stop_mono_ns: Option<u64>,
    /// Furthest any batch was sent behind its due time.
    pub max_lag_ns: u64,
    /// Batches sent more than 1 ms behind their due time.
    pub late_batches: u64,
    /// Ended early by SIGINT or SIGTERM.
    pub interrupted: bool,
    /// Sent with UDP GSO (at the end of the run).
    pub gso: bool,
    /// The key id every heartbeat was signed with; 0: unauthenticated.
    #[serde(default)]
    pub key_id: u8,
    /// The nodes that stopped, by id.
    pub stopped: Vec<StoppedNode>,
    /// The faults injected (all zero in reports from before they existed).
    #[serde(default)]
    pub faults: FaultReport,
    /// Every pause, in the order they were decided (`--report-pauses`;
    /// absent without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_windows: Option<Vec<PauseWindow>>,
}

/// One pause of one node (`--report-pauses`): from the monitor's side, a
/// crash at its last heartbeat before and a recovery at its first after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseWindow {
    pub node_id: u32,
    /// When the pause began, as scheduled.
    pub start_mono_ns: u64,
    /// When it ends, as scheduled (it may be past the end of the run).
    pub end_mono_ns: u64,
    /// When the `sendmmsg(2)` call that carried the node's last heartbeat
    /// before the pause started; null if it had sent none.
    pub last_sent_before_mono_ns: Option<u64>,
    /// The same for its first heartbeat after the pause (which may be later
    /// than the end, when the one due then was lost); null if the run ended
    /// first.
    pub first_sent_after_mono_ns: Option<u64>,
}

/// The faults a run injected into the running nodes' heartbeats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultReport {
    /// `--loss`, in percent.
    pub loss_percent: f64,
    /// `--burst-loss`, in percent.
    pub burst_loss_percent: f64,
    /// `--pause-every`; null without pauses.
    pub pause_every_ns: Option<u64>,
    /// `--pause-for`; null without pauses.
    pub pause_for_ns: Option<u64>,
    /// Heartbeats `--loss` dropped (one a burst dropped counts there only).
    pub lost_random: u64,
    /// Heartbeats lost in bursts.
    pub lost_in_bursts: u64,
    /// Bursts started.
    pub bursts: u64,
    /// Pauses started (up to each node's last heartbeat due in the run).
    pub pauses: u64,
    /// Their total length, cut at the end of the run (and, for the stopping
    /// nodes, at `--stop-after`).
    pub paused_ns: u64,
}

impl FaultReport {
    /// Heartbeats lost, at random and in bursts.
    pub fn lost(&self) -> u64 {
        self.lost_random + self.lost_in_bursts
    }

    fn summary(&self, heartbeats: u64) -> String {
        let mut out = String::new();
        if self.loss_percent > 0.0 || self.burst_loss_percent > 0.0 {
            let share = |lost: u64| {
                if heartbeats > 0 {
                    lost as f64 * 100.0 / heartbeats as f64
                } else {
                    0.0
                }
            };
            out += &format!(
                "  lost      {} heartbeats ({:.2}%): {} at random (--loss {}%), {} in {} bursts \
                 (--burst-loss {}%)\n",
                self.lost(),
                share(self.lost()),
                self.lost_random,
                self.loss_percent,
                self.lost_in_bursts,
                self.bursts,
                self.burst_loss_percent,
            );
        }
        if let (Some(every), Some(length)) = (self.pause_every_ns, self.pause_for_ns) {
            out += &format!(
                "  paused    {} pauses of {} (one per {} per node on average), {:.3} s in all\n",
                self.pauses,
                humantime::format_duration(Duration::from_nanos(length)),
                humantime::format_duration(Duration::from_nanos(every)),
                self.paused_ns as f64 / 1e9,
            );
        }
        out
    }
}

/// A node that stopped (crashed) during the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedNode {
    pub id: u32,
    /// When the `sendmmsg(2)` call that carried its last heartbeat started;
    /// null if it never sent one.
    pub last_sent_mono_ns: Option<u64>,
}

impl Report {
    /// Seconds from the start to the end of the regular heartbeats.
    pub fn elapsed_secs(&self) -> f64 {
        self.ended_mono_ns.saturating_sub(self.started_mono_ns) as f64 / 1e9
    }

    /// The human summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let last_id = self.first_id as u64 + self.nodes as u64 - 1;
        let mut out = format!(
            "hb-tools loadgen: {} nodes (ids {}..={last_id}), interval {}, {:.0} heartbeats/s requested, \
             {} target(s), {}{}\n",
            self.nodes,
            self.first_id,
            humantime::format_duration(Duration::from_nanos(self.interval_ns)),
            self.rate,
            self.targets.len(),
            match self.key_id {
                auth::UNAUTHENTICATED => "unauthenticated".to_owned(),
                id => format!("signed with key id {id}"),
            },
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            },
        );
        let lost = match self.faults.lost() {
            0 => String::new(),
            lost => format!(" ({lost} of them lost on purpose)"),
        };
        out += &format!(
            "  sent      {} heartbeats{lost}, {} datagrams ({} given up), {} send errors\n",
            self.heartbeats, self.sent, self.unsent, self.send_errors
        );
        out += &format!(
            "  duration  {:.3} s, achieved {:.0} heartbeats/s\n",
            self.elapsed_secs(),
            self.achieved_rate
        );
        out += &format!(
            "  max lag   {:.3} ms behind schedule ({} batches more than 1 ms late)\n",
            self.max_lag_ns as f64 / 1e6,
            self.late_batches
        );
        out += &self.faults.summary(self.heartbeats);
        if let Some(windows) = &self.pause_windows {
            let closed = windows
                .iter()
                .filter(|w| w.first_sent_after_mono_ns.is_some())
                .count();
            out += &format!(
                "  windows   {} pauses reported, {closed} of them ended by a heartbeat\n",
                windows.len()
            );
        }
        out += &format!("  stopped   {} nodes\n", self.stopped.len());
        if self.leaves_sent > 0 {
            out += &format!("  leaves    {} datagrams\n", self.leaves_sent);
        }
        out
    }

    /// Writes the report as JSON, atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut json = serde_json::to_vec(self).context("encoding the report")?;
        json.push(b'\n');
        fs::File::create(&tmp)
            .and_then(|mut file| file.write_all(&json))
            .and_then(|()| fs::rename(&tmp, path))
            .with_context(|| format!("writing the report to {}", path.display()))
    }
}

/// A probability in percent, rounded to 10^-9 so that the CLI's percentage
/// comes back as given (7, not 7.000000000000001).
pub(super) fn percent(fraction: f64) -> f64 {
    (fraction * 1e11).round() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_has_the_documented_fields() {
        let report = Report {
            nodes: 2,
            first_id: 1,
            targets: vec!["127.0.0.1:7979".parse().unwrap()],
            interval_ns: 1_000_000_000,
            rate: 2.0,
            achieved_rate: 2.0,
            incarnation: 5,
            heartbeats: 4,
            sent: 4,
            send_errors: 0,
            unsent: 0,
            leaves_sent: 0,
            started_mono_ns: 10,
            ended_mono_ns: 2_000_000_010,
            stop_mono_ns: Some(1_000_000_010),
            max_lag_ns: 3,
            late_batches: 0,
            interrupted: false,
            gso: true,
            key_id: 0,
            stopped: vec![StoppedNode {
                id: 2,
                last_sent_mono_ns: Some(500),
            }],
            faults: FaultReport {
                loss_percent: 5.0,
                burst_loss_percent: 1.0,
                pause_every_ns: Some(10_000_000_000),
                pause_for_ns: Some(500_000_000),
                lost_random: 1,
                lost_in_bursts: 2,
                bursts: 1,
                pauses: 3,
                paused_ns: 1_500_000_000,
            },
            pause_windows: None,
        };
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        for key in [
            "nodes",
            "first_id",
            "interval_ns",
            "rate",
            "sent",
            "send_errors",
            "started_mono_ns",
            "ended_mono_ns",
            "max_lag_ns",
            "stopped",
        ] {
            assert!(json.get(key).is_some(), "no {key}");
        }
        assert_eq!(
            json["stopped"],
            serde_json::json!([{"id": 2, "last_sent_mono_ns": 500}])
        );
        let dir = std::env::temp_dir().join(format!("hb-loadgen-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.json");
        report.write(&path).unwrap();
        let back: Report = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, report);
        fs::remove_dir_all(&dir).unwrap();
        let summary = report.summary();
        assert!(summary.contains("stopped   1 nodes"), "{summary}");
        assert!(
            summary.contains("sent      4 heartbeats (3 of them lost on purpose), 4 datagrams"),
            "{summary}"
        );
        assert!(
            summary.contains(
                "lost      3 heartbeats (75.00%): 1 at random (--loss 5%), 2 in 1 bursts \
                 (--burst-loss 1%)"
            ),
            "{summary}"
        );
        assert!(
            summary.contains(
                "paused    3 pauses of 500ms (one per 10s per node on average), 1.500 s in all"
            ),
            "{summary}"
        );

        assert_eq!(
            json["faults"],
            serde_json::json!({
                "loss_percent": 5.0, "burst_loss_percent": 1.0,
                "pause_every_ns": 10_000_000_000u64, "pause_for_ns": 500_000_000,
                "lost_random": 1, "lost_in_bursts": 2, "bursts": 1,
                "pauses": 3, "paused_ns": 1_500_000_000,
            })
        );
        // The CLI's percentages come back as given.
        assert_eq!(
            (percent(0.07), percent(0.29), percent(1.0)),
            (7.0, 29.0, 100.0)
        );
        // A report without faults (or from before them) reads as none.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("faults");
        let old: Report = serde_json::from_value(old).unwrap();
        assert_eq!(old.faults, FaultReport::default());
        assert!(!old.summary().contains("lost"));
        assert!(!old.summary().contains("paused"));

        // Pause windows only when asked for; both kinds of report read back.
        assert!(json.get("pause_windows").is_none(), "{json}");
        let with_windows = Report {
            pause_windows: Some(vec![PauseWindow {
                node_id: 2,
                start_mono_ns: 100,
                end_mono_ns: 300,
                last_sent_before_mono_ns: Some(90),
                first_sent_after_mono_ns: None,
            }]),
            ..report.clone()
        };
        let value = serde_json::to_value(&with_windows).unwrap();
        assert_eq!(
            value["pause_windows"],
            serde_json::json!([{"node_id": 2, "start_mono_ns": 100, "end_mono_ns": 300,
                "last_sent_before_mono_ns": 90, "first_sent_after_mono_ns": null}])
        );
        assert_eq!(
            serde_json::from_value::<Report>(value).unwrap(),
            with_windows
        );
        assert!(
            with_windows
                .summary()
                .contains("windows   1 pauses reported, 0 of them ended by a heartbeat"),
            "{}",
            with_windows.summary()
        );
    }
}
