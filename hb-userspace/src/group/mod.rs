//! Monitor groups: several agents watching the same fleet agree through
//! etcd, so that one monitor's death, or its being cut off from the nodes
//! or from the others, neither misses a failover nor starts one twice.
//!
//! - Each monitor keeps its own view (its detector and brake, unchanged)
//!   and publishes only its **opinions**: the nodes it would act on alone
//!   as down or left, under keys attached to its etcd lease. An opinion
//!   changes when its own actions would have run: suspicion stays local,
//!   and a mass failure its brake holds never reaches etcd. A monitor that
//!   dies or is cut off from etcd loses its lease, and its opinions vanish
//!   with it.
//! - The **verdict** on a node is the majority of the voting members
//!   ([`ballot`]).
//! - One monitor, elected with etcd's election API, **leads**: it records
//!   each change of verdict as an incident, in a transaction that succeeds
//!   only while it still holds its election key and only if the incident is
//!   not recorded yet, and runs the actions of the incidents it recorded.
//!   Each incident's actions are so started at most once in the whole
//!   group, whoever leads later.
//! - A monitor that cannot renew its lease steps down before the lease
//!   could have expired at etcd, shows `no quorum`, and runs nothing.
//!
//! [`keys`] lays the keys out, [`ballot`] mirrors them and holds the
//! verdict rule, `endpoints` picks the etcd member to talk to, `lease` keeps the lease and the deadline it gives, and
//! `worker` does the talking to etcd.

pub mod ballot;
mod endpoints;
pub mod keys;
mod lease;
pub mod metrics;
mod worker;

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

pub use self::metrics::GroupMetrics;
use self::{ballot::Disputed, worker::Worker};
use crate::{config::GroupConfig, detect::detector::NodeState};

/// What a monitor holds about a node, as far as the group is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Opinion {
    /// Up, suspect, unseen, or down with its actions held by the brake: no
    /// key in etcd.
    #[default]
    Up,
    Down,
    Left,
}

impl Opinion {
    pub const fn as_str(self) -> &'static str {
        match self {
            Opinion::Up => "up",
            Opinion::Down => "down",
            Opinion::Left => "left",
        }
    }

    pub fn parse(value: &[u8]) -> Option<Self> {
        match value {
            b"up" => Some(Opinion::Up),
            b"down" => Some(Opinion::Down),
            b"left" => Some(Opinion::Left),
            _ => None,
        }
    }

    /// The opinion a node's state gives once its actions would run:
    /// flapping is still held down; `None` for suspect (local) and unseen.
    pub const fn of_state(state: NodeState) -> Option<Self> {
        match state {
            NodeState::Up => Some(Opinion::Up),
            NodeState::Down | NodeState::Flapping => Some(Opinion::Down),
            NodeState::Left => Some(Opinion::Left),
            NodeState::Suspect | NodeState::Unseen => None,
        }
    }

    /// The node state a group verdict stands for.
    pub const fn state(self) -> NodeState {
        match self {
            Opinion::Up => NodeState::Up,
            Opinion::Down => NodeState::Down,
            Opinion::Left => NodeState::Left,
        }
    }
}

impl std::fmt::Display for Opinion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An incident this monitor recorded as leader: run its actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub node_id: u32,
    pub verdict: Opinion,
    pub previous: Opinion,
    /// The node's incident number (1 for its first).
    pub generation: u64,
}

/// Where this monitor stands in its group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds a lease and leads: runs the group's actions.
    Leader,
    /// Holds a lease and votes.
    Follower,
    /// Holds a lease, listens before it votes (`group.join_after`).
    Joining,
    /// Cannot renew its lease (or never got one): acts on nothing.
    #[default]
    #[serde(rename = "no quorum")]
    NoQuorum,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Joining => "joining",
            Role::NoQuorum => "no quorum",
        }
    }
}

/// A member of the group, as `hb status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub monitor: String,
    /// Its etcd lease, hexadecimal (as `etcdctl lease list` prints it).
    pub lease: String,
    pub voting: bool,
}

/// The group as `hb status`, the HTTP API and the metrics show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub name: String,
    pub monitor: String,
    /// This monitor holds a lease it renewed in time: it reaches an etcd
    /// majority.
    pub quorum: bool,
    pub role: Role,
    /// Who leads, as far as this monitor last heard.
    pub leader: Option<String>,
    /// Its own lease, hexadecimal.
    pub lease: Option<String>,
    /// Monitors holding a lease, by name.
    pub members: Vec<MemberStatus>,
    /// Nodes the voters disagree on (at most 100), with each one's opinion.
    pub disputed: Vec<DisputedStatus>,
    /// Nodes this monitor holds down or left.
    pub holding_down: u64,
    /// Incidents this monitor recorded (and acted on) as leader.
    pub incidents_recorded: u64,
    /// Why the last etcd request failed, if the last one did.
    pub last_error: Option<String>,
}

/// A disputed node, with its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputedStatus {
    pub node: String,
    pub id: u32,
    pub verdict: Opinion,
    pub opinions: std::collections::BTreeMap<String, Opinion>,
}

/// Disputed nodes shown at most.
const DISPUTED_SHOWN: usize = 100;

/// The running group session: how the agent tells it opinions, reads its
/// status and stops it.
pub struct GroupHandle {
    opinions: mpsc::UnboundedSender<Vec<(u32, Opinion)>>,
    status: Arc<Mutex<GroupStatus>>,
    disputed: Arc<Mutex<Vec<Disputed>>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl GroupHandle {
    /// Starts the session in the background: it connects, takes a lease,
    /// publishes `initial` (this monitor's opinions at start), joins, and
    /// campaigns. Never fails for want of etcd: until it reaches a majority
    /// the monitor shows `no quorum`. Incidents it records as leader arrive
    /// on the returned receiver, one batch per transaction.
    pub fn start(
        config: &GroupConfig,
        join_after: Duration,
        initial: Vec<(u32, Opinion)>,
        metrics: GroupMetrics,
    ) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<Vec<Decision>>)> {
        let (opinions, opinions_rx) = mpsc::unbounded_channel();
        let (decide, decisions) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let status = Arc::new(Mutex::new(GroupStatus {
            name: config.name.clone(),
            monitor: config.monitor.clone(),
            ..GroupStatus::default()
        }));
        let disputed = Arc::new(Mutex::new(Vec::new()));
        let worker = Worker::new(
            config.clone(),
            join_after,
            initial,
            worker::Channels {
                opinions: opinions_rx,
                decide,
                stop: stop_rx,
            },
            worker::Shown {
                status: Arc::clone(&status),
                disputed: Arc::clone(&disputed),
                metrics,
            },
        )?;
        let task = tokio::spawn(worker.run());
        Ok((
            GroupHandle {
                opinions,
                status,
                disputed,
                stop,
                task,
            },
            decisions,
        ))
    }

    /// This monitor's opinions changed (its own actions would have run).
    pub fn opine(&self, changes: Vec<(u32, Opinion)>) {
        if !changes.is_empty() {
            // The worker ends only when stopped: a send after that is moot.
            let _ = self.opinions.send(changes);
        }
    }

    /// The group now; `name_of` names disputed nodes.
    pub fn status(&self, name_of: impl Fn(u32) -> String) -> GroupStatus {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let disputed = self.disputed.lock().unwrap_or_else(PoisonError::into_inner);
        status.disputed = disputed
            .iter()
            .take(DISPUTED_SHOWN)
            .map(|d| DisputedStatus {
                node: name_of(d.id),
                id: d.id,
                verdict: d.verdict,
                opinions: d.opinions.clone(),
            })
            .collect();
        status
    }

    /// Leaves the group: resigns, revokes the lease (its opinions vanish at
    /// once rather than after its TTL), within a few seconds at most.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            tracing::warn!("the group session did not end within 5 s; its lease will expire");
        }
    }
}
