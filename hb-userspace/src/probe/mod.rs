//! Pull monitoring: probing nodes that run no sender.
//!
//! A node with `probe = ...` is probed every `interval` ([`spec`]):
//! - `icmp`: an echo request from a raw socket ([`icmp`]) carrying hb's
//!   identifier and a tagged probe (`hb_common::probe`); the **XDP program**
//!   checks and records the reply into the node table and drops it, so no
//!   reply ever reaches userspace;
//! - `tcp:PORT` and `http(s)://...`: a connect or a GET run on the agent's
//!   runtime ([`connect`]), whose success is recorded into the same table
//!   ([`NodeTable::record_probe`]).
//!
//! Either way the node's seen word moves as a heartbeat's would, so the
//! sweep judges a probed node exactly like one that sends: down after
//! `timeout_multiplier` x `interval` without an answer. A node may have both
//! (hybrid): it is fresh while either refreshes it, and its record's
//! `SLOT_PROBED_LAST` says which did last.
//!
//! One thread, the **prober**, sends every probe from one [`Schedule`]:
//! each node's probes spread evenly over its interval with jitter, ICMP in
//! `sendmmsg` batches, the whole held to `probe.max_rate` by a token bucket.
//! It wakes at most once a millisecond (at 100,000 probes/s, a hundred
//! probes a turn) and otherwise sleeps until the next probe is due.
//!
//! **Confirmation** (`probe_confirm`): when a node's silence reaches its
//! down deadline minus `probe_timeout`, the prober sends one extra probe at
//! once; an answer within `probe_timeout` refreshes the node before the
//! sweep would convict it. The deadline is the timeout rule's
//! (`timeout_multiplier` x `interval` after the node was last heard).
//!
//! Per start the agent draws a random 16-bit echo identifier and a 128-bit
//! secret (installed in the XDP program; never written anywhere else) and
//! starts every node's probe sequence from 1. A reload keeps both and the
//! sequences, and re-plans the schedule.

pub mod connect;
pub mod icmp;
pub mod schedule;
pub mod spec;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::Context;
use hb_common::{siphash::Key, table::seen};
use rand::Rng;
use serde::Serialize;

use self::{
    connect::{Connector, Failure, Job},
    icmp::IcmpSender,
    schedule::{Due, Schedule, TokenBucket},
    spec::{KindName, ProbeKind, ProbePlan},
};
use crate::{clock::monotonic_ns, datapath::table::NodeTable, nodes::NodeDirectory, sys};

/// The prober thread sleeps at least this long between turns.
const TICK_NS: u64 = 1_000_000;
/// ... and at most this long (so that it sees it must stop).
const LONGEST_NAP_NS: u64 = 100_000_000;

/// hb's echo identifier and probe secret for this start.
#[derive(Clone)]
pub struct ProbeSecret {
    pub identifier: u16,
    pub key: Key,
}

impl ProbeSecret {
    /// A fresh identifier (never 0) and key.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        ProbeSecret {
            identifier: rng.random_range(1..=u16::MAX),
            key: rng.random(),
        }
    }
}

/// What the prober counts, read by status and `/metrics`.
#[derive(Default)]
pub struct ProbeStats {
    sent: [AtomicU64; 3],
    failures: [[AtomicU64; Failure::ALL.len()]; 3],
    retries: AtomicU64,
}

impl ProbeStats {
    fn sent(&self, kind: KindName, count: u64) {
        self.sent[kind as usize].fetch_add(count, Ordering::Relaxed);
    }

    pub fn failed(&self, kind: KindName, failure: Failure) {
        self.failed_n(kind, failure, 1);
    }

    fn failed_n(&self, kind: KindName, failure: Failure, count: u64) {
        let index = Failure::ALL.iter().position(|f| *f == failure).unwrap_or(0);
        self.failures[kind as usize][index].fetch_add(count, Ordering::Relaxed);
    }

    /// Probes sent of `kind` (retries included).
    pub fn sent_of(&self, kind: KindName) -> u64 {
        self.sent[kind as usize].load(Ordering::Relaxed)
    }

    /// Failures of `kind` for `failure`.
    pub fn failures_of(&self, kind: KindName, failure: Failure) -> u64 {
        let index = Failure::ALL.iter().position(|f| *f == failure).unwrap_or(0);
        self.failures[kind as usize][index].load(Ordering::Relaxed)
    }

    /// Confirmation probes sent.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// The prober as status shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ProbeStatus {
    pub identifier: u16,
    /// Probed nodes by kind.
    pub nodes: ProbeCounts,
    pub sent: u64,
    pub retries: u64,
    /// Probes that failed (TCP, HTTP) or could not be sent.
    pub failed: u64,
}

/// A number per probe kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ProbeCounts {
    pub icmp: u64,
    pub tcp: u64,
    pub http: u64,
}

/// One probed node, as the prober holds it.
struct Target {
    node_id: u32,
    address: IpAddr,
    plan: u32,
    /// The last probe sequence sent.
    sequence: u64,
    /// The arrival time a confirmation was last sent for.
    confirmed_for: u64,
    /// When the pending confirmation check is due (0: none).
    check_at: u64,
}

/// What the prober is built from.
pub struct ProberSettings {
    pub secret: ProbeSecret,
    pub max_rate: u32,
    pub max_concurrent: usize,
    pub timeout_multiplier: u32,
    pub default_interval: Duration,
}

/// The running prober thread.
pub struct Prober {
    stop: Arc<AtomicBool>,
    wake: Arc<AtomicU32>,
    thread: Option<JoinHandle<HashMap<u32, u64>>>,
    stats: Arc<ProbeStats>,
    counts: ProbeCounts,
    identifier: u16,
}

impl Prober {
    /// Starts probing every probed node of `nodes`, recording into `table`;
    /// `sequences` are the last sequences a previous prober of this agent
    /// sent (a reload), so that each node's keep rising. `None` if no node
    /// is probed.
    pub fn start(
        settings: &ProberSettings,
        nodes: &NodeDirectory<'_>,
        table: &NodeTable,
        sequences: &HashMap<u32, u64>,
        stats: Arc<ProbeStats>,
    ) -> anyhow::Result<Option<Self>> {
        let mut plans: Vec<Arc<ProbePlan>> = Vec::new();
        let mut plan_index: HashMap<(u32, usize), u32> = HashMap::new();
        let mut targets = Vec::new();
        let mut counts = ProbeCounts::default();
        // One plan per listed node, one per range.
        let mut add = |key: (u32, usize), id: u32, address: IpAddr, plan: ProbePlan| {
            let index = *plan_index.entry(key).or_insert_with(|| {
                plans.push(Arc::new(plan));
                (plans.len() - 1) as u32
            });
            match plans[index as usize].kind.name() {
                KindName::Icmp => counts.icmp += 1,
                KindName::Tcp => counts.tcp += 1,
                KindName::Http => counts.http += 1,
            }
            targets.push(Target {
                node_id: id,
                address,
                plan: index,
                sequence: sequences.get(&id).copied().unwrap_or(0),
                confirmed_for: 0,
                check_at: 0,
            });
        };
        for (i, node) in nodes.listed().iter().enumerate() {
            if let Some((address, plan)) = nodes.probe_of(node.id, settings.default_interval) {
                add((0, i), node.id, address, plan);
            }
        }
        for (i, range) in nodes.ranges().iter().enumerate() {
            if range.probe.is_none() {
                continue;
            }
            for id in range.ids() {
                if let Some((address, plan)) = nodes.probe_of(id, settings.default_interval) {
                    add((1, i), id, address, plan);
                }
            }
        }
        if targets.is_empty() {
            return Ok(None);
        }
        let icmp = if counts.icmp > 0 {
            let families = |v6: bool| {
                targets.iter().any(|t| {
                    plans[t.plan as usize].kind == ProbeKind::Icmp && t.address.is_ipv6() == v6
                })
            };
            Some(
                IcmpSender::open(
                    settings.secret.identifier,
                    settings.secret.key,
                    families(false),
                    families(true),
                )
                .context("starting ICMP probes")?,
            )
        } else {
            None
        };
        let connector = (counts.tcp + counts.http > 0).then(|| {
            Connector::start(
                &tokio::runtime::Handle::current(),
                settings.max_concurrent,
                table.view(),
                Arc::clone(&stats),
            )
        });
        let mut groups: HashMap<Duration, Vec<u32>> = HashMap::new();
        for (index, target) in targets.iter().enumerate() {
            groups
                .entry(plans[target.plan as usize].interval)
                .or_default()
                .push(index as u32);
        }
        let groups: Vec<(Duration, Vec<u32>)> = groups.into_iter().collect();
        let now = monotonic_ns();
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(AtomicU32::new(0));
        let mut turn = Turns {
            schedule: Schedule::new(&groups, now),
            bucket: TokenBucket::new(settings.max_rate, now),
            targets,
            plans,
            table: table.view(),
            icmp,
            connector,
            stats: Arc::clone(&stats),
            timeout_multiplier: u64::from(settings.timeout_multiplier),
        };
        let (stop_flag, wake_word) = (Arc::clone(&stop), Arc::clone(&wake));
        let thread = thread::Builder::new()
            .name("hb-prober".into())
            .spawn(move || turn.run(&stop_flag, &wake_word))
            .context("starting the prober thread")?;
        tracing::info!(
            icmp = counts.icmp,
            tcp = counts.tcp,
            http = counts.http,
            identifier = settings.secret.identifier,
            max_rate = settings.max_rate,
            "probing nodes"
        );
        Ok(Some(Prober {
            stop,
            wake,
            thread: Some(thread),
            stats,
            counts,
            identifier: settings.secret.identifier,
        }))
    }

    /// What status shows.
    pub fn status(&self) -> ProbeStatus {
        let stats = &self.stats;
        let failed = KindName::ALL
            .iter()
            .flat_map(|&k| Failure::ALL.map(|f| stats.failures_of(k, f)))
            .sum();
        ProbeStatus {
            identifier: self.identifier,
            nodes: self.counts,
            sent: KindName::ALL.iter().map(|&k| stats.sent_of(k)).sum(),
            retries: stats.retries(),
            failed,
        }
    }

    /// Stops the thread; returns each node's last sequence sent.
    pub fn stop(mut self) -> HashMap<u32, u64> {
        self.halt()
    }

    fn halt(&mut self) -> HashMap<u32, u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.fetch_add(1, Ordering::Relaxed);
        sys::wake(&self.wake);
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The prober thread's state.
struct Turns {
    schedule: Schedule,
    bucket: TokenBucket,
    targets: Vec<Target>,
    plans: Vec<Arc<ProbePlan>>,
    table: NodeTable,
    icmp: Option<IcmpSender>,
    connector: Option<Connector>,
    stats: Arc<ProbeStats>,
    timeout_multiplier: u64,
}

impl Turns {
    /// Turns until told to stop; returns the last sequences sent.
    fn run(&mut self, stop: &AtomicBool, wake: &AtomicU32) -> HashMap<u32, u64> {
        // Wake-ups may be grouped by 50 µs: nothing here is that precise.
        let _ = sys::set_timer_slack_ns(50_000);
        while !stop.load(Ordering::Relaxed) {
            let seen_wake = wake.load(Ordering::Relaxed);
            let now = monotonic_ns();
            let limited = self.turn(now);
            let next = if limited {
                self.bucket.next_token_ns()
            } else {
                self.schedule.next_due().unwrap_or(u64::MAX)
            };
            let at = next.clamp(now + TICK_NS, now + LONGEST_NAP_NS);
            if let Err(error) = sys::sleep_until(wake, seen_wake, at) {
                tracing::error!("prober: sleeping: {error}");
                thread::sleep(Duration::from_millis(1));
            }
        }
        self.targets
            .iter()
            .map(|t| (t.node_id, t.sequence))
            .collect()
    }

    /// Sends every probe due at `now`; true if the rate cap held some back.
    fn turn(&mut self, now: u64) -> bool {
        self.bucket.refill(now);
        let mut limited = false;
        loop {
            if self.bucket.tokens() < 1.0 {
                limited = self.schedule.next_due().is_some_and(|d| d <= now);
                break;
            }
            let Some((due_at, due)) = self.schedule.pop_due(now) else {
                break;
            };
            match due {
                Due::Probe { index, nominal } => {
                    let interval = self.interval_ns(index);
                    self.schedule
                        .push_probe(index, nominal + interval, interval);
                    self.probe(index);
                    self.plan_check(index, now);
                }
                Due::Check { index } => self.check(index, due_at, now),
            }
        }
        if let Some(icmp) = &mut self.icmp {
            let flushed = icmp.flush();
            self.count_icmp(flushed);
        }
        limited
    }

    fn interval_ns(&self, index: u32) -> u64 {
        let target = &self.targets[index as usize];
        self.plans[target.plan as usize].interval.as_nanos() as u64
    }

    /// Sends target `index`'s next probe (one token).
    fn probe(&mut self, index: u32) {
        self.bucket.take();
        let target = &mut self.targets[index as usize];
        target.sequence += 1;
        let plan = &self.plans[target.plan as usize];
        match plan.kind {
            ProbeKind::Icmp => {
                if let Some(icmp) = &mut self.icmp {
                    let flushed = icmp.push(target.node_id, target.address, target.sequence);
                    self.count_icmp(flushed);
                }
            }
            ProbeKind::Tcp { .. } | ProbeKind::Http(_) => {
                let queued = self.connector.as_ref().is_some_and(|connector| {
                    connector.submit(Job {
                        node_id: target.node_id,
                        sequence: target.sequence,
                        address: target.address,
                        plan: Arc::clone(plan),
                    })
                });
                if queued {
                    self.stats.sent(plan.kind.name(), 1);
                }
            }
        }
    }

    fn count_icmp(&self, flushed: icmp::Flushed) {
        self.stats.sent(KindName::Icmp, flushed.sent);
        if flushed.failed > 0 {
            self.stats
                .failed_n(KindName::Icmp, Failure::Send, flushed.failed);
        }
    }

    /// The node's down deadline by the timeout rule, after it was last
    /// heard at `arrival`, and when its confirmation goes out.
    fn deadlines(&self, index: u32, arrival: u64) -> (u64, u64) {
        let target = &self.targets[index as usize];
        let plan = &self.plans[target.plan as usize];
        let down = arrival + self.timeout_multiplier * plan.interval.as_nanos() as u64;
        (down, down.saturating_sub(plan.timeout.as_nanos() as u64))
    }

    /// For a node with `probe_confirm`: a check when its silence would
    /// reach its confirmation time.
    fn plan_check(&mut self, index: u32, now: u64) {
        let target = &self.targets[index as usize];
        if !self.plans[target.plan as usize].confirm {
            return;
        }
        let arrival = seen::arrival_ns(self.table.seen.get(target.node_id));
        if arrival == 0 {
            return;
        }
        let (_, confirm_at) = self.deadlines(index, arrival);
        let target = &mut self.targets[index as usize];
        if confirm_at > now && confirm_at != target.check_at {
            target.check_at = confirm_at;
            self.schedule.push_check(index, confirm_at);
        }
    }

    /// A confirmation check: if the node is still silent since the arrival
    /// it was planned for and not yet down, one probe at once.
    fn check(&mut self, index: u32, due_at: u64, now: u64) {
        let target = &self.targets[index as usize];
        if target.check_at != due_at {
            return; // replaced by a later check
        }
        let arrival = seen::arrival_ns(self.table.seen.get(target.node_id));
        let (down_at, confirm_at) = self.deadlines(index, arrival);
        let target = &mut self.targets[index as usize];
        target.check_at = 0;
        if confirm_at > now {
            // Heard meanwhile: check again later.
            target.check_at = confirm_at;
            self.schedule.push_check(index, confirm_at);
            return;
        }
        if arrival == 0 || now >= down_at || target.confirmed_for == arrival {
            return;
        }
        target.confirmed_for = arrival;
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        self.probe(index);
    }
}

/// The prober's series in `/metrics`: `hb_probes_sent_total{kind}`,
/// `hb_probe_failures_total{kind,reason}` and `hb_probe_retries_total`,
/// read from [`ProbeStats`] at each scrape (zero while nothing is probed).
#[derive(Debug)]
pub struct ProbeMetrics(pub Arc<ProbeStats>);

impl std::fmt::Debug for ProbeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeStats")
            .field("retries", &self.retries())
            .finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for ProbeMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::{
            encoding::EncodeMetric,
            metrics::{MetricType, counter::ConstCounter},
        };
        let stats = &self.0;
        let mut sent = encoder.encode_descriptor(
            "probes_sent",
            "Probes sent, by kind (confirmation retries included)",
            None,
            MetricType::Counter,
        )?;
        for kind in KindName::ALL {
            ConstCounter::new(stats.sent_of(kind))
                .encode(sent.encode_family(&[("kind", kind.as_str())])?)?;
        }
        let mut failures = encoder.encode_descriptor(
            "probe_failures",
            "Probes that failed (tcp, http: refused, timeout, status, body, error; busy: not sent, every slot taken) or could not be sent (send); ICMP replies are counted by the datapath (hb_packets_total{outcome=\"probe_...\"})",
            None,
            MetricType::Counter,
        )?;
        for kind in KindName::ALL {
            for failure in Failure::ALL {
                let labels = [("kind", kind.as_str()), ("reason", failure.as_str())];
                ConstCounter::new(stats.failures_of(kind, failure))
                    .encode(failures.encode_family(&labels)?)?;
            }
        }
        let retries = encoder.encode_descriptor(
            "probe_retries",
            "Confirmation probes sent to nodes about to be convicted (probe_confirm)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(stats.retries()).encode(retries)?;
        Ok(())
    }
}
