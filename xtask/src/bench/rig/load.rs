//! The load of a phase: one bounded run of `hb-tools loadgen`, its faults,
//! and the report it writes.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hb_tests::{ChildGuard, config::humantime};
use serde::{Deserialize, Serialize};

use super::LOAD_GRACE;

/// How fast the load generator's fleet beats.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Aggregate heartbeats per second.
    Rate(f64),
    /// Every node once per interval.
    Interval(Duration),
}

/// One bounded run of `hb-tools loadgen`.
#[derive(Debug, Clone)]
pub struct Load {
    pub nodes: u32,
    pub pace: Pace,
    pub duration: Duration,
    /// `--stop-fraction` and `--stop-after`.
    pub stop: Option<(f64, Duration)>,
    /// One datagram per heartbeat on the wire (`--no-gso`), as many real
    /// nodes would send them. With UDP GSO (the load generator's default,
    /// for higher rates) one `sendmmsg` message carries up to 64 heartbeats
    /// through the sender's stack and over veth as one super-packet, which
    /// the receiving UDP stack segments only at the socket: it makes the
    /// socket datapath look cheaper than it is with real senders.
    pub one_datagram_per_packet: bool,
    /// Faults injected into the running nodes' heartbeats.
    pub faults: Faults,
}

/// Faults `hb-tools loadgen` injects into the heartbeats of the running nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// `--loss`: heartbeats lost at random, percent.
    pub loss_percent: f64,
    /// `--burst-loss`: heartbeats that start a burst of 2 or 3 lost ones,
    /// percent.
    pub burst_loss_percent: f64,
    /// `--pause-every` and `--pause-for`: each node pauses at random
    /// moments, on average once per the first, for the second.
    pub pause: Option<(Duration, Duration)>,
}

impl Faults {
    pub(super) fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.loss_percent > 0.0 {
            args.extend(["--loss".to_owned(), format!("{}", self.loss_percent)]);
        }
        if self.burst_loss_percent > 0.0 {
            args.extend([
                "--burst-loss".to_owned(),
                format!("{}", self.burst_loss_percent),
            ]);
        }
        if let Some((every, length)) = self.pause {
            args.extend([
                "--pause-every".to_owned(),
                humantime(every),
                "--pause-for".to_owned(),
                humantime(length),
            ]);
        }
        args
    }
}

impl Load {
    pub fn new(nodes: u32, pace: Pace, duration: Duration) -> Self {
        Self {
            nodes,
            pace,
            duration,
            stop: None,
            one_datagram_per_packet: false,
            faults: Faults::default(),
        }
    }

    /// The same load, sent one datagram per packet (see the field).
    pub fn one_datagram_per_packet(self) -> Self {
        Self {
            one_datagram_per_packet: true,
            ..self
        }
    }

    pub(super) fn args(&self, target: &str, report: &Path) -> Vec<String> {
        let mut args: Vec<String> = [
            "loadgen",
            "--nodes",
            &self.nodes.to_string(),
            "--to",
            target,
            "--duration",
            &humantime(self.duration),
            "--seed",
            "1",
            "--report",
            &report.to_string_lossy(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        match self.pace {
            Pace::Rate(rate) => args.extend(["--rate".to_owned(), format!("{rate}")]),
            Pace::Interval(interval) => {
                args.extend(["--interval".to_owned(), humantime(interval)]);
            }
        }
        if self.one_datagram_per_packet {
            args.push("--no-gso".to_owned());
        }
        if let Some((fraction, after)) = self.stop {
            args.extend([
                "--stop-fraction".to_owned(),
                format!("{fraction}"),
                "--stop-after".to_owned(),
                humantime(after),
            ]);
        }
        args.extend(self.faults.args());
        args
    }
}

/// A load generator that is running.
pub struct RunningLoad {
    pub(super) guard: ChildGuard,
    pub(super) report: PathBuf,
    pub(super) started: Instant,
    pub(super) deadline: Instant,
}

impl RunningLoad {
    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits for the end of the run (bounded) and reads the report.
    pub fn finish(mut self) -> Result<LoadReport> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let Some(status) = self.guard.wait_timeout(left)? else {
            bail!(
                "the load generator ran past its duration by more than {LOAD_GRACE:?}; its output:\n{}",
                self.guard.log_tail(20)
            );
        };
        if !status.success() {
            bail!(
                "the load generator exited with {status}; its output:\n{}",
                self.guard.log_tail(20)
            );
        }
        let text = fs::read(&self.report)
            .with_context(|| format!("reading the load report {}", self.report.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("parsing the load report {}", self.report.display()))
    }
}

/// The fields of `hb-tools loadgen --report` the bench reads
/// (`hb_tools::loadgen::Report`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LoadReport {
    pub nodes: u32,
    pub interval_ns: u64,
    /// Requested heartbeats per second.
    pub rate: f64,
    /// Heartbeats sent per second of the run.
    pub achieved_rate: f64,
    pub heartbeats: u64,
    /// Datagrams the kernel accepted.
    pub sent: u64,
    pub send_errors: u64,
    pub unsent: u64,
    pub started_mono_ns: u64,
    pub ended_mono_ns: u64,
    pub stop_mono_ns: Option<u64>,
    pub max_lag_ns: u64,
    pub late_batches: u64,
    pub interrupted: bool,
    #[serde(skip_serializing)]
    pub stopped: Vec<StoppedNode>,
    /// The faults injected (absent from older reports: all zero).
    #[serde(default)]
    pub faults: FaultReport,
}

/// The faults a load injected (`hb_tools::loadgen::FaultReport`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct FaultReport {
    pub loss_percent: f64,
    pub burst_loss_percent: f64,
    pub pause_every_ns: Option<u64>,
    pub pause_for_ns: Option<u64>,
    /// Heartbeats `--loss` dropped.
    pub lost_random: u64,
    /// Heartbeats lost in bursts.
    pub lost_in_bursts: u64,
    /// Bursts started.
    pub bursts: u64,
    /// Pauses started.
    pub pauses: u64,
    /// Their total length, ns.
    pub paused_ns: u64,
}

impl LoadReport {
    /// Fails if the run was cut short.
    pub fn ensure_complete(&self) -> Result<()> {
        if self.interrupted {
            bail!("the load generator was interrupted");
        }
        Ok(())
    }

    /// Each stopped node's last heartbeat, `CLOCK_MONOTONIC` ns (none: it
    /// never sent one).
    pub fn last_sent_by_node(&self) -> HashMap<u32, Option<u64>> {
        self.stopped
            .iter()
            .map(|s| (s.id, s.last_sent_mono_ns))
            .collect()
    }
}

/// A node the load generator stopped (`hb_tools::loadgen::StoppedNode`).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct StoppedNode {
    pub id: u32,
    pub last_sent_mono_ns: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadgen_arguments() {
        let load = Load {
            stop: Some((0.01, Duration::from_secs(3))),
            ..Load::new(
                10_000,
                Pace::Interval(Duration::from_millis(100)),
                Duration::from_secs(2),
            )
        };
        let args = load
            .args("198.18.1.1:7979", Path::new("/tmp/r.json"))
            .join(" ");
        assert_eq!(
            args,
            "loadgen --nodes 10000 --to 198.18.1.1:7979 --duration 2000ms --seed 1 --report \
             /tmp/r.json --interval 100ms --stop-fraction 0.01 --stop-after 3000ms"
        );
        let rate = Load::new(100_000, Pace::Rate(1_600_000.0), Duration::from_secs(3));
        assert!(
            rate.args("x:1", Path::new("r"))
                .join(" ")
                .ends_with("--rate 1600000")
        );
    }

    #[test]
    fn loadgen_fault_arguments() {
        let load = Load {
            faults: Faults {
                loss_percent: 5.0,
                burst_loss_percent: 2.5,
                pause: Some((Duration::from_secs(10), Duration::from_millis(500))),
            },
            ..Load::new(
                1000,
                Pace::Interval(Duration::from_millis(100)),
                Duration::from_secs(2),
            )
        };
        let args = load.args("x:1", Path::new("r")).join(" ");
        assert!(
            args.ends_with(
                "--interval 100ms --loss 5 --burst-loss 2.5 --pause-every 10000ms --pause-for \
                 500ms"
            ),
            "{args}"
        );
        let report: LoadReport = serde_json::from_str(
            r#"{"nodes":2,"interval_ns":1,"rate":2.0,"achieved_rate":1.9,"heartbeats":4,
            "sent":4,"send_errors":0,"unsent":0,"started_mono_ns":10,"ended_mono_ns":20,
            "stop_mono_ns":null,"max_lag_ns":3,"late_batches":0,"interrupted":false,"stopped":[],
            "faults":{"loss_percent":5.0,"lost_random":7,"pause_every_ns":null}}"#,
        )
        .unwrap();
        assert_eq!(report.faults.lost_random, 7);
        assert_eq!(report.faults.pauses, 0);
    }

    #[test]
    fn reads_a_loadgen_report() {
        let json = r#"{"nodes":2,"first_id":1,"targets":["198.18.1.1:7979"],"interval_ns":1000000000,
            "rate":2.0,"achieved_rate":1.9,"incarnation":5,"heartbeats":4,"sent":4,"send_errors":0,
            "unsent":0,"leaves_sent":0,"started_mono_ns":10,"ended_mono_ns":2000000010,
            "stop_mono_ns":null,"max_lag_ns":3,"late_batches":0,"interrupted":false,
            "stopped":[{"id":2,"last_sent_mono_ns":500},{"id":3,"last_sent_mono_ns":null}]}"#;
        let report: LoadReport = serde_json::from_str(json).unwrap();
        assert_eq!(report.sent, 4);
        assert_eq!(report.stopped[0].last_sent_mono_ns, Some(500));
        assert_eq!(report.stopped[1].last_sent_mono_ns, None);
        let event: crate::bench::rig::EventRecord = serde_json::from_str(
            r#"{"mono_ns":123,"unix_ms":1,"event":"down","node_id":2,"node":"n2","previous":"up","since_last_heartbeat_ms":1620}"#,
        )
        .unwrap();
        assert_eq!(
            (event.mono_ns, event.event.as_str(), event.node_id),
            (123, "down", 2)
        );
    }
}
