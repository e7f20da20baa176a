//! The monitor-group lab of issue 13: a [`GroupLab`] of three monitors,
//! each running an etcd member and an hb agent in its namespace, and N
//! nodes whose senders send to all three monitors.
//!
//! Two networks: the [`EtcdCluster`]'s (198.19.0.i/24, bridge namespace
//! `<prefix>-br`), over which the agents reach etcd, and a second one for
//! heartbeats (198.18.0.0/16, bridge namespace `<prefix>-nb`):
//!
//! ```text
//!  <prefix>-n<k> (node k)        <prefix>-nb                 <prefix>-m<i> (monitor i)
//!  hb send --to 198.18.0.1..3    bridge <prefix>nb           hb agent, etcd m<i>
//!  <prefix>n<k> 198.18.1.k/16 ── <prefix>q<k>  <prefix>p<i> ── <prefix>h<i> 198.18.0.i/16
//!                                                             <prefix>e<i> 198.19.0.i/24 ── etcd bridge
//! ```
//!
//! Monitor i's agent (instance `<prefix>-m<i>`, its own state file, status
//! socket and configuration in the lab's directory) listens on
//! `<prefix>h<i>`; its one action appends `EVENT NODE_NAME m<i>` to one
//! file all monitors share ([`GroupLab::runs`]), so a test counts how many
//! times the whole group ran an action. With [`GroupLabOptions::group`]
//! the configurations carry a `[group]` section naming the three etcd
//! members; without it every monitor acts alone (three runs per event).
//!
//! For the bench (`cargo xtask bench --only group`) the lab also has, on
//! request: each agent's event log ([`GroupLabOptions::event_log`]); an
//! action that records its own start time ([`ActionStyle::TimedLine`]) or
//! one batch action per monitor writing each event's JSON line to its own
//! file ([`ActionStyle::Batch`], [`GroupLab::batches`]); a [`Fleet`] of
//! simulated nodes (a `[[node_ranges]]` block and a namespace
//! `<prefix>-f`, 198.18.2.1/16, for a load generator sending to every
//! monitor, [`GroupLab::fleet_ns`]); and extra configuration tables
//! ([`GroupLabOptions::extra`], e.g. `[brake]`). Each agent serves its HTTP
//! API and `/metrics` on 127.0.0.1:7980 in its own namespace (the default).
//!
//! Faults: a node crashes (its sender SIGKILLed) and comes back; an agent
//! stops, is killed and restarts; a monitor is cut off from the nodes
//! ([`GroupLab::cut_nodes`]) or from etcd and the other monitors
//! ([`GroupLab::cut_etcd`]); etcd members stop and start. Every wait is
//! bounded; on Drop the agents and senders are killed, then the pins, the
//! namespaces, the etcd cluster and the directories are removed.

use std::{
    ffi::OsStr,
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::ExitStatus,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    ChildGuard, Error, EtcdCluster, HEARTBEAT_PORT, Hb, NetNs, PinGuard, Result, Signal, TempDir,
    Timing,
    config::{humantime, node_name, shell_quote, toml_string},
    events::read_lines,
    interrupt,
    lab::MAX_IFNAME,
};

/// Monitors in a group lab (and etcd members: one per monitor).
pub const MONITORS: u8 = 3;
/// Most nodes a group lab can have (198.18.1.1 to 198.18.1.50).
pub const MAX_NODES: u8 = 50;
/// The node table size written into the configurations (ids below it),
/// unless a [`Fleet`] needs more.
const MAX_NODE_IDS: u32 = 64;
/// The fleet host's address on the node network: 198.18.2.1.
pub const FLEET_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// How long an agent may take to answer `hb status` after its start.
pub const READY_WITHIN: Duration = Duration::from_secs(15);
/// How long an agent or a sender may take to exit after a signal.
pub const EXIT_WITHIN: Duration = Duration::from_secs(5);
/// How often [`GroupLab::wait_until`] checks.
const POLL: Duration = Duration::from_millis(20);
/// Lines of each agent's output in failure messages.
const LOG_LINES: usize = 25;

/// The heartbeat timing of the group tests: 100 ms heartbeats, down after
/// 3 silent intervals (300 ms), swept at least every 50 ms.
pub const TIMING: Timing = Timing {
    interval: Duration::from_millis(100),
    timeout_multiplier: 3,
    sweep_period: Duration::from_millis(50),
};

/// Monitor `index`'s address on the node network: 198.18.0.`index`.
pub fn monitor_address(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, index)
}

/// Node `index`'s address: 198.18.1.`index`.
pub fn node_address(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, index)
}

/// Monitor `index`'s name in the group and in the action lines: `m<index>`.
pub fn monitor_name(index: u8) -> String {
    format!("m{index}")
}

/// The monitor index of a monitor name (`m2` -> 2).
pub fn monitor_index(name: &str) -> Option<u8> {
    name.strip_prefix('m')?.parse().ok()
}

/// The `[group]` section the lab writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    /// `name`: the group's key prefix in etcd (`hb/<name>/`).
    pub name: String,
    /// `lease_ttl`: each monitor's etcd lease.
    pub lease_ttl: Duration,
    /// `join_after`: how long a new monitor listens before it votes (none:
    /// the agent's default).
    pub join_after: Option<Duration>,
}

impl Default for GroupSettings {
    /// Group `lab`, 2 s leases, the agent's default `join_after`.
    fn default() -> Self {
        Self {
            name: "lab".to_owned(),
            lease_ttl: Duration::from_secs(2),
            join_after: None,
        }
    }
}

/// What each monitor's one action does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ActionStyle {
    /// One run per event (up, down, left), appending `EVENT NODE_NAME
    /// m<i>` to the shared action file ([`GroupLab::runs`]).
    #[default]
    Line,
    /// The same, with the run's own start time on the wall clock:
    /// `EVENT NODE_NAME m<i> UNIX_NS` (`date +%s%N`, [`Run::unix_ns`]).
    TimedLine,
    /// One run per sweep (`batch = true`): each event's JSON line from its
    /// stdin, prefixed with the run's start time and the monitor, `UNIX_NS
    /// m<i> JSON`, appended to the monitor's own batch file
    /// ([`GroupLab::batches`]). For fleets: no process per node.
    Batch,
}

/// Simulated nodes besides the lab's: a `[[node_ranges]]` block of `count`
/// ids from `first_id`, named `node-<id>`, heard from the fleet host's
/// namespace ([`GroupLab::fleet_ns`]), where a load generator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fleet {
    /// The first id; above every lab node's (so above [`MAX_NODES`]).
    pub first_id: u32,
    /// How many ids (the table holds `first_id + count` ids).
    pub count: u32,
}

/// What a [`GroupLab`] is built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLabOptions {
    /// Nodes (1 to [`MAX_NODES`]; 0 with a [`Fleet`]).
    pub nodes: u8,
    /// Heartbeat timing of senders and agents.
    pub timing: Timing,
    /// The `[group]` section; `None`: every monitor acts alone.
    pub group: Option<GroupSettings>,
    /// What the action does.
    pub action: ActionStyle,
    /// Each agent appends its state changes to its event log
    /// ([`Monitor::events`]).
    pub event_log: bool,
    /// A fleet of simulated nodes, if any.
    pub fleet: Option<Fleet>,
    /// TOML appended to every configuration: whole tables only (such as
    /// `[brake]`), since it follows the `[[actions]]`.
    pub extra: String,
}

impl Default for GroupLabOptions {
    /// Two nodes, [`TIMING`], a group with the default settings, the
    /// [`ActionStyle::Line`] action, no event log, no fleet.
    fn default() -> Self {
        Self {
            nodes: 2,
            timing: TIMING,
            group: Some(GroupSettings::default()),
            action: ActionStyle::Line,
            event_log: false,
            fleet: None,
            extra: String::new(),
        }
    }
}

impl GroupLabOptions {
    /// With `nodes` nodes.
    pub fn nodes(mut self, nodes: u8) -> Self {
        self.nodes = nodes;
        self
    }

    /// Without `[group]`: every monitor runs every action itself.
    pub fn alone(mut self) -> Self {
        self.group = None;
        self
    }

    /// With `[group]` (default settings unless one was set).
    pub fn grouped(mut self) -> Self {
        self.group.get_or_insert_with(GroupSettings::default);
        self
    }

    /// `[group] lease_ttl` (implies a group).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.group
            .get_or_insert_with(GroupSettings::default)
            .lease_ttl = ttl;
        self
    }

    /// `[group] join_after` (implies a group).
    pub fn join_after(mut self, after: Duration) -> Self {
        self.group
            .get_or_insert_with(GroupSettings::default)
            .join_after = Some(after);
        self
    }

    /// With this heartbeat timing.
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// With this action.
    pub fn action(mut self, action: ActionStyle) -> Self {
        self.action = action;
        self
    }

    /// With an event log per agent.
    pub fn event_log(mut self) -> Self {
        self.event_log = true;
        self
    }

    /// With a fleet of `count` simulated nodes from id `first_id`.
    pub fn fleet(mut self, first_id: u32, count: u32) -> Self {
        self.fleet = Some(Fleet { first_id, count });
        self
    }

    /// With `toml` (whole tables) appended to every configuration.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra = toml.to_owned();
        self
    }

    /// The node table size the configurations get: room for the lab's
    /// nodes and the fleet.
    pub fn max_node_ids(&self) -> u32 {
        self.fleet.map_or(MAX_NODE_IDS, |fleet| {
            MAX_NODE_IDS.max(fleet.first_id.saturating_add(fleet.count))
        })
    }
}

/// A monitor of the lab: its links and its agent's files. Its namespace
/// is the etcd member's ([`GroupLab::monitor_ns`]).
#[derive(Debug, Clone)]
pub struct Monitor {
    /// 1-based; the monitor's name is `m<index>`.
    pub index: u8,
    /// Its interface on the node network (`<prefix>h<index>`), which the
    /// agent listens on.
    pub interface: String,
    /// The other end of that link, a port of the node bridge
    /// (`<prefix>p<index>`).
    pub port: String,
    /// Its address on the node network (198.18.0.`index`).
    pub address: Ipv4Addr,
    /// The agent's instance (`<prefix>-m<index>`): its XDP pins.
    pub instance: String,
    /// The agent's configuration.
    pub config: PathBuf,
    /// The agent's status socket.
    pub socket: PathBuf,
    /// The agent's state file.
    pub state: PathBuf,
    /// The agent's output (every start appends to it).
    pub log: PathBuf,
    /// The agent's event log (written with [`GroupLabOptions::event_log`]).
    pub events: PathBuf,
    /// Where its batch action appends ([`ActionStyle::Batch`]).
    pub batches: PathBuf,
}

/// A node of the lab: its namespace and its link to the node bridge.
#[derive(Debug)]
pub struct GroupNode {
    /// 1-based; also its hb node id.
    pub index: u8,
    /// The node's namespace (`<prefix>-n<index>`).
    pub ns: NetNs,
    /// Its interface (`<prefix>n<index>`).
    pub interface: String,
    /// The other end, a port of the node bridge (`<prefix>q<index>`).
    pub port: String,
    /// Its address (198.18.1.`index`).
    pub address: Ipv4Addr,
    /// Its sender's output.
    pub log: PathBuf,
}

/// One line of the shared action file: `EVENT NODE_NAME MONITOR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// `up`, `down` or `left`.
    pub event: String,
    /// The node's name (`node-<k>`).
    pub node: String,
    /// The monitor that ran the action (`m<i>`).
    pub monitor: String,
    /// When the run started, Unix ns ([`ActionStyle::TimedLine`]).
    pub unix_ns: Option<u64>,
}

impl Run {
    /// Parse one line; `None` if it is not three fields, or four whose last
    /// is a time.
    pub fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        let mut run = Self {
            event: fields.next()?.to_owned(),
            node: fields.next()?.to_owned(),
            monitor: fields.next()?.to_owned(),
            unix_ns: None,
        };
        if let Some(time) = fields.next() {
            run.unix_ns = Some(time.parse().ok()?);
        }
        fields.next().is_none().then_some(run)
    }

    /// Whether this is a run of `event` for node `node` (its index).
    pub fn is(&self, event: &str, node: u8) -> bool {
        self.event == event && self.node == node_name(node)
    }

    /// The index of the monitor that ran it.
    pub fn monitor_index(&self) -> Option<u8> {
        monitor_index(&self.monitor)
    }
}

/// One event of a batch run ([`ActionStyle::Batch`]): a line `UNIX_NS
/// m<i> JSON` of a monitor's batch file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRun {
    /// When the batch run started, Unix ns.
    pub unix_ns: u64,
    /// The monitor that ran it (`m<i>`).
    pub monitor: String,
    /// `up`, `down` or `left`.
    pub event: String,
    pub node_id: u32,
    pub node: String,
}

impl BatchRun {
    /// Parse one line; `None` if it is not `UNIX_NS MONITOR {event JSON}`.
    pub fn parse(line: &str) -> Option<Self> {
        let (time, rest) = line.split_once(' ')?;
        let (monitor, json) = rest.split_once(' ')?;
        let event: Value = serde_json::from_str(json).ok()?;
        Some(Self {
            unix_ns: time.parse().ok()?,
            monitor: monitor.to_owned(),
            event: event["event"].as_str()?.to_owned(),
            node_id: u32::try_from(event["node_id"].as_u64()?).ok()?,
            node: event["node_name"].as_str()?.to_owned(),
        })
    }
}

/// What [`GroupLab::wait_until`]'s check returns: `true` or `Some(value)`
/// once the wait is over.
pub trait Outcome {
    /// What the wait returns.
    type Value;
    /// `Some` once the condition holds.
    fn value(self) -> Option<Self::Value>;
}

impl Outcome for bool {
    type Value = ();
    fn value(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn value(self) -> Option<T> {
        self
    }
}

/// Three monitors (etcd member and agent each) and N nodes; everything is
/// removed on Drop.
///
/// Field order is drop order: the agents and the senders are killed first,
/// then the pins are removed (detaching the XDP programs), then the node
/// namespaces and the fleet host's, the node bridge (with the monitors' links to it), the etcd
/// cluster (its members, the monitor namespaces, its data directories) and
/// the lab's directory.
#[derive(Debug)]
pub struct GroupLab {
    /// Agent of monitor i at i - 1; `None` while it does not run.
    agents: Vec<Option<ChildGuard>>,
    /// Sender of node k at k - 1; `None` while it does not run.
    senders: Vec<Option<ChildGuard>>,
    pins: Vec<PinGuard>,
    nodes: Vec<GroupNode>,
    /// The fleet host's namespace ([`Fleet`]).
    fleet: Option<NetNs>,
    bridge: NetNs,
    etcd: EtcdCluster,
    dir: TempDir,
    monitors: Vec<Monitor>,
    bridge_interface: String,
    actions: PathBuf,
    prefix: String,
    options: GroupLabOptions,
    hb: Hb,
}

impl GroupLab {
    /// Build the lab for `options` with names starting with `prefix` (from
    /// [`crate::unique_prefix`]): the etcd cluster (healthy), the node
    /// network, the configurations, and the three agents, started and
    /// answering `hb status`. No sender runs yet ([`Self::start_nodes`]).
    pub fn start(hb: Hb, prefix: &str, options: GroupLabOptions) -> Result<Self> {
        let mut lab = Self::build(hb, prefix, options)?;
        lab.start_agents(&(1..=MONITORS).collect::<Vec<_>>())?;
        Ok(lab)
    }

    /// [`Self::start`] without starting the agents.
    pub fn build(hb: Hb, prefix: &str, options: GroupLabOptions) -> Result<Self> {
        check_names(prefix, options.nodes, options.fleet)?;
        crate::pins::ensure_bpffs()?;
        let etcd = EtcdCluster::start(prefix, MONITORS)?;
        let bridge = NetNs::create(&format!("{prefix}-nb"))?;
        let dir = TempDir::new(&format!("hb-group-{prefix}"))?;
        let monitors = (1..=MONITORS)
            .map(|index| Monitor {
                index,
                interface: format!("{prefix}h{index}"),
                port: format!("{prefix}p{index}"),
                address: monitor_address(index),
                instance: format!("{prefix}-m{index}"),
                config: dir.join(&format!("m{index}.toml")),
                socket: dir.join(&format!("m{index}.sock")),
                state: dir.join(&format!("m{index}.state")),
                log: dir.join(&format!("m{index}.log")),
                events: dir.join(&format!("m{index}.events.jsonl")),
                batches: dir.join(&format!("batches-m{index}.log")),
            })
            .collect::<Vec<_>>();
        let mut lab = Self {
            agents: (1..=MONITORS).map(|_| None).collect(),
            senders: (1..=options.nodes).map(|_| None).collect(),
            pins: monitors
                .iter()
                .map(|monitor| PinGuard::new(&monitor.instance))
                .collect(),
            nodes: Vec::with_capacity(options.nodes.into()),
            fleet: None,
            bridge,
            etcd,
            actions: dir.join("actions.log"),
            dir,
            monitors,
            bridge_interface: format!("{prefix}nb"),
            prefix: prefix.to_owned(),
            options,
            hb,
        };
        lab.bridge
            .ip(["link", "add", &lab.bridge_interface, "type", "bridge"])?;
        lab.bridge
            .ip(["link", "set", &lab.bridge_interface, "up"])?;
        for index in 1..=MONITORS {
            lab.wire_monitor(index)?;
        }
        for index in 1..=lab.options.nodes {
            let node = lab.add_node(index)?;
            lab.nodes.push(node);
        }
        if lab.options.fleet.is_some() {
            let ns = NetNs::create(&format!("{}-f", lab.prefix))?;
            let (port, interface) = (format!("{}r", lab.prefix), format!("{}f", lab.prefix));
            lab.wire(&port, &interface, &ns, &format!("{FLEET_ADDRESS}/16"))?;
            lab.fleet = Some(ns);
        }
        for index in 1..=MONITORS {
            let monitor = lab.monitor(index);
            let text = render_config(
                monitor,
                &lab.prefix,
                &lab.options,
                &lab.etcd.endpoints(),
                &lab.actions,
            );
            fs::write(&monitor.config, text).map_err(|source| Error::Io {
                op: "writing",
                path: monitor.config.clone(),
                source,
            })?;
        }
        Ok(lab)
    }

    /// `port` (in the bridge namespace) -- `interface` (in `ns`), the
    /// port on the node bridge, `cidr` on the interface, both up.
    fn wire(&self, port: &str, interface: &str, ns: &NetNs, cidr: &str) -> Result<()> {
        self.bridge.ip([
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            interface,
            "netns",
            ns.name(),
        ])?;
        self.bridge
            .ip(["link", "set", port, "master", &self.bridge_interface])?;
        self.bridge.ip(["link", "set", port, "up"])?;
        ns.ip(["addr", "add", cidr, "dev", interface])?;
        ns.ip(["link", "set", interface, "up"])?;
        Ok(())
    }

    fn wire_monitor(&self, index: u8) -> Result<()> {
        let monitor = self.monitor(index);
        let cidr = format!("{}/16", monitor.address);
        self.wire(
            &monitor.port,
            &monitor.interface,
            self.monitor_ns(index),
            &cidr,
        )
    }

    fn add_node(&self, index: u8) -> Result<GroupNode> {
        let node = GroupNode {
            index,
            ns: NetNs::create(&format!("{}-n{index}", self.prefix))?,
            interface: format!("{}n{index}", self.prefix),
            port: format!("{}q{index}", self.prefix),
            address: node_address(index),
            log: self.dir.join(&format!("n{index}.log")),
        };
        let cidr = format!("{}/16", node.address);
        self.wire(&node.port, &node.interface, &node.ns, &cidr)?;
        Ok(node)
    }

    // --- Accessors ---

    /// The prefix every name of the lab starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What the lab was built with.
    pub fn options(&self) -> &GroupLabOptions {
        &self.options
    }

    /// Monitor `index` (1-based). Panics if there is no such monitor.
    pub fn monitor(&self, index: u8) -> &Monitor {
        self.monitors
            .get(usize::from(index).wrapping_sub(1))
            .unwrap_or_else(|| panic!("group lab {} has no monitor {index}", self.prefix))
    }

    /// Monitor `index`'s namespace (the etcd member's).
    pub fn monitor_ns(&self, index: u8) -> &NetNs {
        &self.etcd.member(index).ns
    }

    /// Node `index` (1-based). Panics if there is no such node.
    pub fn node(&self, index: u8) -> &GroupNode {
        self.nodes
            .get(usize::from(index).wrapping_sub(1))
            .unwrap_or_else(|| panic!("group lab {} has no node {index}", self.prefix))
    }

    /// The node indexes, 1 to N.
    pub fn node_indexes(&self) -> Vec<u8> {
        (1..=self.options.nodes).collect()
    }

    /// The fleet host's namespace (`<prefix>-f`, 198.18.2.1), where a
    /// load generator simulating the [`Fleet`] runs; `None` without one.
    pub fn fleet_ns(&self) -> Option<&NetNs> {
        self.fleet.as_ref()
    }

    /// Every monitor's heartbeat address, `198.18.0.i:7979`: a sender's
    /// `--to`s.
    pub fn monitor_targets(&self) -> Vec<String> {
        self.monitors
            .iter()
            .map(|monitor| format!("{}:{HEARTBEAT_PORT}", monitor.address))
            .collect()
    }

    /// The pins of monitor `index`'s agent instance in bpffs (relative
    /// paths, sorted; empty before its first start and after Drop).
    pub fn pins(&self, index: u8) -> Vec<String> {
        let guard = self
            .pins
            .get(usize::from(index).wrapping_sub(1))
            .unwrap_or_else(|| panic!("group lab {} has no monitor {index}", self.prefix));
        crate::pins::list(guard.instance())
    }

    /// The etcd cluster.
    pub fn etcd(&self) -> &EtcdCluster {
        &self.etcd
    }

    /// The node bridge's namespace.
    pub fn bridge(&self) -> &NetNs {
        &self.bridge
    }

    /// The lab's directory (configurations, logs, the action file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file every monitor's action appends to.
    pub fn actions_path(&self) -> &Path {
        &self.actions
    }

    /// The `hb` binary the lab runs.
    pub fn hb(&self) -> &Hb {
        &self.hb
    }

    // --- Agents ---

    fn agent_slot(&mut self, index: u8) -> &mut Option<ChildGuard> {
        let prefix = self.prefix.clone();
        self.agents
            .get_mut(usize::from(index).wrapping_sub(1))
            .unwrap_or_else(|| panic!("group lab {prefix} has no monitor {index}"))
    }

    /// Whether monitor `index`'s agent was started and not stopped by the
    /// lab since.
    pub fn is_running(&self, index: u8) -> bool {
        self.agents
            .get(usize::from(index).wrapping_sub(1))
            .is_some_and(Option::is_some)
    }

    /// The monitors whose agents run.
    pub fn running(&self) -> Vec<u8> {
        (1..=MONITORS).filter(|&i| self.is_running(i)).collect()
    }

    /// Start the agents of `monitors` (all spawned first, then each waited
    /// for until it answers `hb status`, at most [`READY_WITHIN`]).
    pub fn start_agents(&mut self, monitors: &[u8]) -> Result<()> {
        for &index in monitors {
            if self.is_running(index) {
                return Err(Error::Invalid {
                    what: "agent to start",
                    value: monitor_name(index),
                    reason: "it runs already".to_owned(),
                });
            }
            let monitor = self.monitor(index);
            let args = [
                OsStr::new("agent"),
                "--config".as_ref(),
                monitor.config.as_os_str(),
            ];
            let name = format!("agent {}", monitor_name(index));
            let agent = self
                .hb
                .spawn_in(self.monitor_ns(index), &name, args, &monitor.log)?;
            *self.agent_slot(index) = Some(agent);
        }
        for &index in monitors {
            let socket = self.monitor(index).socket.clone();
            let hb = self.hb.clone();
            let agent = self
                .agent_slot(index)
                .as_mut()
                .expect("the agent was just spawned");
            hb.wait_until_ready(&socket, agent, READY_WITHIN)?;
        }
        Ok(())
    }

    /// Start monitor `index`'s agent and wait until it answers.
    pub fn start_agent(&mut self, index: u8) -> Result<()> {
        self.start_agents(&[index])
    }

    /// Stop monitor `index`'s agent with SIGTERM and wait for it to exit
    /// (at most [`EXIT_WITHIN`]).
    pub fn stop_agent(&mut self, index: u8) -> Result<ExitStatus> {
        self.end_agent(index, Signal::Term)
    }

    /// SIGKILL monitor `index`'s agent (a crash) and reap it.
    pub fn kill_agent(&mut self, index: u8) -> Result<ExitStatus> {
        self.end_agent(index, Signal::Kill)
    }

    fn end_agent(&mut self, index: u8, signal: Signal) -> Result<ExitStatus> {
        let Some(mut agent) = self.agent_slot(index).take() else {
            return Err(Error::Invalid {
                what: "agent to stop",
                value: monitor_name(index),
                reason: "it does not run".to_owned(),
            });
        };
        agent.stop(signal, EXIT_WITHIN)
    }

    /// Start monitor `index`'s agent again on the same configuration (and
    /// state file): stopped with SIGTERM first if it runs.
    pub fn restart_agent(&mut self, index: u8) -> Result<()> {
        if self.is_running(index) {
            self.stop_agent(index)?;
        }
        self.start_agent(index)
    }

    // --- Nodes ---

    fn sender_slot(&mut self, index: u8) -> &mut Option<ChildGuard> {
        let prefix = self.prefix.clone();
        self.senders
            .get_mut(usize::from(index).wrapping_sub(1))
            .unwrap_or_else(|| panic!("group lab {prefix} has no node {index}"))
    }

    /// The arguments of node `index`'s `hb send`: to every monitor, at the
    /// lab's interval, without jitter.
    pub fn send_args(&self, index: u8) -> Vec<String> {
        let mut args = vec!["send".to_owned(), "--node-id".to_owned(), index.to_string()];
        for monitor in &self.monitors {
            args.push("--to".to_owned());
            args.push(format!("{}:{HEARTBEAT_PORT}", monitor.address));
        }
        args.extend([
            "--interval".to_owned(),
            humantime(self.options.timing.interval),
            "--jitter".to_owned(),
            "0".to_owned(),
        ]);
        args
    }

    /// Start node `index`'s sender (a node coming up, or back after a
    /// crash: a new incarnation).
    pub fn start_node(&mut self, index: u8) -> Result<()> {
        if self.sender_slot(index).is_some() {
            return Err(Error::Invalid {
                what: "node to start",
                value: node_name(index),
                reason: "its sender runs already".to_owned(),
            });
        }
        let node = self.node(index);
        let sender = self.hb.spawn_in(
            &node.ns,
            &format!("sender {}", node_name(index)),
            self.send_args(index),
            &node.log,
        )?;
        *self.sender_slot(index) = Some(sender);
        Ok(())
    }

    /// Start every node's sender.
    pub fn start_nodes(&mut self) -> Result<()> {
        for index in self.node_indexes() {
            self.start_node(index)?;
        }
        Ok(())
    }

    /// Crash node `index`: SIGKILL its sender (no goodbye) and reap it.
    /// Returns the instant the signal was sent.
    pub fn crash_node(&mut self, index: u8) -> Result<Instant> {
        let Some(mut sender) = self.sender_slot(index).take() else {
            return Err(Error::Invalid {
                what: "node to crash",
                value: node_name(index),
                reason: "its sender does not run".to_owned(),
            });
        };
        sender.signal(Signal::Kill)?;
        let crashed = Instant::now();
        if sender.wait_timeout(EXIT_WITHIN)?.is_none() {
            return Err(Error::Timeout {
                what: format!("{} to exit after SIGKILL", sender.name()),
                after: EXIT_WITHIN,
                detail: String::new(),
            });
        }
        Ok(crashed)
    }

    /// Bring node `index` back after a crash (a new sender). Returns when.
    pub fn revive_node(&mut self, index: u8) -> Result<Instant> {
        self.start_node(index)?;
        Ok(Instant::now())
    }

    // --- Faults ---

    /// Cut monitor `index` off from the nodes: its port on the node bridge
    /// goes down, so it hears nobody; it still reaches etcd.
    pub fn cut_nodes(&self, index: u8) -> Result<()> {
        let port = &self.monitor(index).port;
        self.bridge.ip(["link", "set", port, "down"]).map(drop)
    }

    /// Undo [`Self::cut_nodes`].
    pub fn restore_nodes(&self, index: u8) -> Result<()> {
        let port = &self.monitor(index).port;
        self.bridge.ip(["link", "set", port, "up"]).map(drop)
    }

    /// Cut monitor `index` and its etcd member off from the other two
    /// members ([`EtcdCluster::partition`]); it still hears the nodes.
    pub fn cut_etcd(&self, index: u8) -> Result<()> {
        self.etcd.partition(index)
    }

    /// Undo [`Self::cut_etcd`] ([`EtcdCluster::heal`]).
    pub fn restore_etcd(&self, index: u8) -> Result<()> {
        self.etcd.heal(index)
    }

    /// Stop etcd member `index` (SIGTERM, waited for).
    pub fn etcd_stop(&mut self, index: u8) -> Result<()> {
        self.etcd.stop(index)
    }

    /// Start etcd member `index` again on its data directory (not waited
    /// for: see [`EtcdCluster::wait_healthy`]).
    pub fn etcd_start(&mut self, index: u8) -> Result<()> {
        self.etcd.restart(index)
    }

    // --- Reading ---

    /// Every line of the shared action file so far (lines that are not
    /// `EVENT NODE MONITOR` are skipped).
    pub fn runs(&self) -> Result<Vec<Run>> {
        Ok(read_lines(&self.actions)?
            .iter()
            .filter_map(|line| Run::parse(line))
            .collect())
    }

    /// The runs from line `mark` on (see [`Self::mark`]).
    pub fn runs_since(&self, mark: usize) -> Result<Vec<Run>> {
        Ok(self.runs()?.into_iter().skip(mark).collect())
    }

    /// Every event monitor `index`'s batch action recorded so far
    /// ([`ActionStyle::Batch`]; lines that do not parse are skipped).
    pub fn batches(&self, index: u8) -> Result<Vec<BatchRun>> {
        Ok(read_lines(&self.monitor(index).batches)?
            .iter()
            .filter_map(|line| BatchRun::parse(line))
            .collect())
    }

    /// How many runs the file holds now: a mark for [`Self::runs_since`].
    pub fn mark(&self) -> Result<usize> {
        Ok(self.runs()?.len())
    }

    /// The runs of `event` for node `node` from line `mark` on.
    pub fn runs_of(&self, event: &str, node: u8, mark: usize) -> Result<Vec<Run>> {
        Ok(self
            .runs_since(mark)?
            .into_iter()
            .filter(|run| run.is(event, node))
            .collect())
    }

    /// How many runs of `event` for node `node` from line `mark` on (0 if
    /// the file cannot be read).
    pub fn count(&self, event: &str, node: u8, mark: usize) -> usize {
        self.runs_of(event, node, mark).map_or(0, |runs| runs.len())
    }

    /// `hb status --json` of monitor `index`'s agent.
    pub fn status(&self, index: u8) -> Result<Value> {
        self.hb.status_json(&self.monitor(index).socket)
    }

    /// The `group` object of monitor `index`'s status (`None` if the agent
    /// does not answer or has no group).
    pub fn group_status(&self, index: u8) -> Option<Value> {
        let status = self.status(index).ok()?;
        let group = status.get("group")?;
        (!group.is_null()).then(|| group.clone())
    }

    /// `group.role` of monitor `index`: `leader`, `follower`, `joining` or
    /// `no quorum`.
    pub fn role(&self, index: u8) -> Option<String> {
        Some(self.group_status(index)?["role"].as_str()?.to_owned())
    }

    /// `group.quorum` of monitor `index`.
    pub fn quorum(&self, index: u8) -> Option<bool> {
        self.group_status(index)?["quorum"].as_bool()
    }

    /// The running monitors whose status says `role: leader`.
    pub fn leaders(&self) -> Vec<u8> {
        self.running()
            .into_iter()
            .filter(|&i| self.role(i).as_deref() == Some("leader"))
            .collect()
    }

    /// The leader, if exactly one running monitor says it leads and every
    /// other running monitor names it as `group.leader`.
    pub fn leader(&self) -> Option<u8> {
        let [leader] = self.leaders()[..] else {
            return None;
        };
        let name = monitor_name(leader);
        self.running()
            .into_iter()
            .all(|i| self.group_status(i).is_some_and(|g| g["leader"] == name))
            .then_some(leader)
    }

    /// The `state` of node `node` in monitor `index`'s status (its local
    /// view: `unseen`, `up`, `suspect`, `down`, ...).
    pub fn node_state(&self, index: u8, node: u8) -> Option<String> {
        let status = self.status(index).ok()?;
        let name = node_name(node);
        let entry = status["nodes"]
            .as_array()?
            .iter()
            .find(|entry| entry["name"] == name.as_str())?;
        Some(entry["state"].as_str()?.to_owned())
    }

    /// Whether every node has `state` in monitor `index`'s local view.
    pub fn all_nodes_are(&self, index: u8, state: &str) -> bool {
        self.node_indexes()
            .into_iter()
            .all(|node| self.node_state(index, node).as_deref() == Some(state))
    }

    /// Whether every running monitor reports a quorum, is a voting leader
    /// or follower, every running monitor a voting member, and all agree on
    /// one leader. Always true without a group.
    pub fn group_is_settled(&self) -> bool {
        if self.options.group.is_none() {
            return true;
        }
        let running = self.running();
        let members_vote = |group: &Value| {
            running.iter().all(|&i| {
                group["members"].as_array().is_some_and(|members| {
                    members
                        .iter()
                        .any(|m| m["monitor"] == monitor_name(i).as_str() && m["voting"] == true)
                })
            })
        };
        self.leader().is_some()
            && running.iter().all(|&i| {
                self.group_status(i).is_some_and(|group| {
                    group["quorum"] == true
                        && matches!(group["role"].as_str(), Some("leader" | "follower"))
                        && members_vote(&group)
                })
            })
    }

    /// Wait (at most `within`) until every running monitor sees every node
    /// up and, with a group, the group is settled
    /// ([`Self::group_is_settled`]).
    pub fn wait_ready(&mut self, within: Duration) -> Result<()> {
        self.wait_until(
            |lab| {
                lab.running()
                    .into_iter()
                    .all(|i| lab.all_nodes_are(i, "up"))
                    && lab.group_is_settled()
            },
            within,
            "every monitor to see every node up (and the group settled)",
        )
    }

    /// Poll `check` every 20 ms until it returns `true` or `Some(value)`,
    /// at most `within`. Fails early if an agent or a sender the lab
    /// started has exited; a timeout's message has `what`, the action file,
    /// each agent's group status and the last lines of its output.
    pub fn wait_until<O: Outcome>(
        &mut self,
        mut check: impl FnMut(&Self) -> O,
        within: Duration,
        what: &str,
    ) -> Result<O::Value> {
        let start = Instant::now();
        loop {
            self.ensure_running()?;
            if let Some(value) = check(self).value() {
                return Ok(value);
            }
            let elapsed = start.elapsed();
            if elapsed >= within {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    after: elapsed,
                    detail: self.context(),
                });
            }
            interrupt::sleep(POLL.min(within - elapsed))?;
        }
    }

    /// Err([`Error::Exited`]) if an agent or sender the lab started (and
    /// did not stop) has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        for process in self.agents.iter_mut().chain(&mut self.senders).flatten() {
            process.ensure_running()?;
        }
        Ok(())
    }

    /// What to show when something goes wrong: the action file, and per
    /// monitor its group status and the last lines of its agent's output.
    pub fn context(&self) -> String {
        let actions = read_lines(&self.actions).unwrap_or_default();
        let mut text = format!(
            "\n--- {} ({} lines) ---\n{}",
            self.actions.display(),
            actions.len(),
            actions.join("\n")
        );
        for monitor in &self.monitors {
            let index = monitor.index;
            let group = match self.status(index) {
                Ok(status) => status["group"].to_string(),
                Err(err) => format!("no status: {err}"),
            };
            let running = if self.is_running(index) {
                "running"
            } else {
                "not running"
            };
            let tail = match &self.agents[usize::from(index) - 1] {
                Some(agent) => agent.log_tail(LOG_LINES),
                None => file_tail(&monitor.log, LOG_LINES),
            };
            let _ = write!(
                text,
                "\n--- agent {} ({running}); group: {group} ---\n{tail}",
                monitor_name(index)
            );
        }
        text
    }
}

/// The last `lines` lines of `path` (empty if unreadable).
fn file_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Checks that the lab's names fit: `prefix` of ASCII letters and digits,
/// `nodes` 1 to [`MAX_NODES`] (0 with a fleet), a fleet's ids above the
/// nodes' and within the agent's 16,777,216, and the longest interface
/// name (`<prefix>q<nodes>`) within [`MAX_IFNAME`] (the etcd cluster checks
/// its own, `<prefix>br`).
fn check_names(prefix: &str, nodes: u8, fleet: Option<Fleet>) -> Result<()> {
    if (nodes == 0 && fleet.is_none()) || nodes > MAX_NODES {
        return Err(Error::Invalid {
            what: "group lab node count",
            value: nodes.to_string(),
            reason: format!("must be 1 to {MAX_NODES} (0 with a fleet)"),
        });
    }
    if let Some(fleet) = fleet {
        let end = u64::from(fleet.first_id) + u64::from(fleet.count);
        if fleet.first_id <= u32::from(MAX_NODES) || fleet.count == 0 || end > 1 << 24 {
            return Err(Error::Invalid {
                what: "group lab fleet",
                value: format!("{fleet:?}"),
                reason: format!(
                    "ids must start above {MAX_NODES}, count at least 1, all below 16777216"
                ),
            });
        }
    }
    let longest = format!("{prefix}q{nodes}");
    if longest.len() > MAX_IFNAME || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::Invalid {
            what: "group lab prefix",
            value: prefix.to_owned(),
            reason: format!(
                "must be ASCII letters and digits, and `{longest}` must fit in \
                 {MAX_IFNAME} characters"
            ),
        });
    }
    Ok(())
}

/// Monitor `monitor`'s configuration: its node-network interface, its own
/// instance, socket and state file (and event log), the lab's nodes
/// `node-k` at 198.18.1.k and the fleet's range, the timing, the `[group]`
/// section if any (endpoints: every etcd member), and the action: by
/// default appending `EVENT NODE_NAME m<i>` to `actions` (see
/// [`ActionStyle`]); then the options' extra tables.
fn render_config(
    monitor: &Monitor,
    prefix: &str,
    options: &GroupLabOptions,
    endpoints: &[String],
    actions: &Path,
) -> String {
    let (nodes, timing, group) = (options.nodes, options.timing, options.group.as_ref());
    let path = |p: &Path| toml_string(&p.to_string_lossy());
    let name = monitor_name(monitor.index);
    let event_log = if options.event_log {
        format!("event_log = {}\n", path(&monitor.events))
    } else {
        String::new()
    };
    let mut text = format!(
        "# Written by hb-tests for group lab {prefix}, monitor {name}.\n\
         interfaces = [{interface}]\n\
         port = {HEARTBEAT_PORT}\n\
         max_nodes = {max_nodes}\n\
         pass_heartbeats = false\n\
         xdp_mode = \"auto\"\n\
         instance = {instance}\n\
         status_socket = {socket}\n\
         state_file = {state}\n\
         {event_log}\
         \n\
         [defaults]\n\
         interval = \"{interval}\"\n\
         timeout_multiplier = {multiplier}\n\
         sweep_period = \"{sweep}\"\n",
        interface = toml_string(&monitor.interface),
        instance = toml_string(&monitor.instance),
        socket = path(&monitor.socket),
        state = path(&monitor.state),
        max_nodes = options.max_node_ids(),
        interval = humantime(timing.interval),
        multiplier = timing.timeout_multiplier,
        sweep = humantime(timing.sweep_period),
    );
    if let Some(group) = group {
        let endpoints: Vec<String> = endpoints.iter().map(|e| toml_string(e)).collect();
        let _ = write!(
            text,
            "\n[group]\nname = {}\nmonitor = {}\nendpoints = [{}]\nlease_ttl = \"{}\"\n",
            toml_string(&group.name),
            toml_string(&name),
            endpoints.join(", "),
            humantime(group.lease_ttl),
        );
        if let Some(after) = group.join_after {
            let _ = writeln!(text, "join_after = \"{}\"", humantime(after));
        }
    }
    for node in 1..=nodes {
        let _ = write!(
            text,
            "\n[[nodes]]\nid = {node}\nname = \"{}\"\naddress = \"{}\"\n",
            node_name(node),
            node_address(node),
        );
    }
    if let Some(fleet) = options.fleet {
        let _ = write!(
            text,
            "\n[[node_ranges]]\nfirst_id = {}\ncount = {}\nname_prefix = \"node-\"\n",
            fleet.first_id, fleet.count
        );
    }
    // One `echo >>` per run: an O_APPEND write of a line this short is
    // atomic, so the monitors' lines never mix. A batch goes to the
    // monitor's own file (its lines are many).
    let (shell, batch) = match options.action {
        ActionStyle::Line => (
            format!(
                "echo \"$HB_EVENT $HB_NODE_NAME {name}\" >> {}",
                shell_quote(&actions.to_string_lossy())
            ),
            false,
        ),
        ActionStyle::TimedLine => (
            format!(
                "echo \"$HB_EVENT $HB_NODE_NAME {name} $(date +%s%N)\" >> {}",
                shell_quote(&actions.to_string_lossy())
            ),
            false,
        ),
        ActionStyle::Batch => (
            format!(
                "t=$(date +%s%N); sed \"s/^/$t {name} /\" >> {}",
                shell_quote(&monitor.batches.to_string_lossy())
            ),
            true,
        ),
    };
    let _ = write!(
        text,
        "\n[[actions]]\nname = \"record\"\non = [\"up\", \"down\", \"left\"]\n\
         shell = {}\ntimeout = \"5s\"\nbatch = {batch}\n",
        toml_string(&shell)
    );
    if !options.extra.is_empty() {
        text.push('\n');
        text += &options.extra;
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_monitor() -> Monitor {
        Monitor {
            index: 2,
            interface: "hb1t0h2".to_owned(),
            port: "hb1t0p2".to_owned(),
            address: monitor_address(2),
            instance: "hb1t0-m2".to_owned(),
            config: "/tmp/g/m2.toml".into(),
            socket: "/tmp/g/m2.sock".into(),
            state: "/tmp/g/m2.state".into(),
            log: "/tmp/g/m2.log".into(),
            events: "/tmp/g/m2.events.jsonl".into(),
            batches: "/tmp/g/batches-m2.log".into(),
        }
    }

    fn options(nodes: u8, group: Option<GroupSettings>) -> GroupLabOptions {
        GroupLabOptions {
            nodes,
            group,
            ..GroupLabOptions::default()
        }
    }

    fn endpoints() -> Vec<String> {
        (1..=MONITORS)
            .map(|i| format!("http://198.19.0.{i}:2379"))
            .collect()
    }

    #[test]
    fn renders_a_monitor_of_a_group() {
        let group = GroupSettings {
            join_after: Some(Duration::ZERO),
            ..GroupSettings::default()
        };
        let text = render_config(
            &sample_monitor(),
            "hb1t0",
            &options(3, Some(group)),
            &endpoints(),
            Path::new("/tmp/g y/actions.log"),
        );
        let value: toml::Value = toml::from_str(&text).expect(&text);
        assert_eq!(value["interfaces"][0].as_str(), Some("hb1t0h2"));
        assert_eq!(value["instance"].as_str(), Some("hb1t0-m2"));
        assert_eq!(value["status_socket"].as_str(), Some("/tmp/g/m2.sock"));
        assert_eq!(value["state_file"].as_str(), Some("/tmp/g/m2.state"));
        assert_eq!(value["defaults"]["interval"].as_str(), Some("100ms"));
        assert_eq!(value["defaults"]["sweep_period"].as_str(), Some("50ms"));
        let group = &value["group"];
        assert_eq!(group["name"].as_str(), Some("lab"));
        assert_eq!(group["monitor"].as_str(), Some("m2"));
        assert_eq!(group["lease_ttl"].as_str(), Some("2000ms"));
        assert_eq!(group["join_after"].as_str(), Some("0ms"));
        let urls = group["endpoints"].as_array().expect(&text);
        assert_eq!(urls.len(), 3);
        assert_eq!(urls[2].as_str(), Some("http://198.19.0.3:2379"));
        let nodes = value["nodes"].as_array().expect(&text);
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[2]["id"].as_integer(), Some(3));
        assert_eq!(nodes[2]["name"].as_str(), Some("node-3"));
        assert_eq!(nodes[2]["address"].as_str(), Some("198.18.1.3"));
        let action = &value["actions"][0];
        assert_eq!(action["on"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            action["shell"].as_str(),
            Some("echo \"$HB_EVENT $HB_NODE_NAME m2\" >> '/tmp/g y/actions.log'")
        );
    }

    #[test]
    fn renders_a_monitor_alone_without_group() {
        let text = render_config(
            &sample_monitor(),
            "hb1t0",
            &options(1, None),
            &endpoints(),
            Path::new("/tmp/g/actions.log"),
        );
        let value: toml::Value = toml::from_str(&text).expect(&text);
        assert!(value.get("group").is_none(), "{text}");
        assert!(value.get("event_log").is_none(), "{text}");
        assert_eq!(value["max_nodes"].as_integer(), Some(64));
        assert_eq!(value["actions"][0]["batch"].as_bool(), Some(false));
        let group = render_config(
            &sample_monitor(),
            "hb1t0",
            &options(1, Some(GroupSettings::default())),
            &endpoints(),
            Path::new("/tmp/g/actions.log"),
        );
        let value: toml::Value = toml::from_str(&group).expect(&group);
        assert!(value["group"].get("join_after").is_none(), "{group}");
    }

    #[test]
    fn renders_a_fleet_a_batch_action_an_event_log_and_extra_tables() {
        let fleet = GroupLabOptions::default()
            .nodes(0)
            .fleet(1001, 100_000)
            .event_log()
            .action(ActionStyle::Batch)
            .extra("[brake]\nshare = 0.9");
        let text = render_config(
            &sample_monitor(),
            "hb1t0",
            &fleet,
            &endpoints(),
            Path::new("/tmp/g/actions.log"),
        );
        let value: toml::Value = toml::from_str(&text).expect(&text);
        assert_eq!(value["max_nodes"].as_integer(), Some(101_001));
        assert_eq!(value["event_log"].as_str(), Some("/tmp/g/m2.events.jsonl"));
        assert!(value.get("nodes").is_none(), "{text}");
        let range = &value["node_ranges"][0];
        assert_eq!(range["first_id"].as_integer(), Some(1001));
        assert_eq!(range["count"].as_integer(), Some(100_000));
        assert_eq!(range["name_prefix"].as_str(), Some("node-"));
        let action = &value["actions"][0];
        assert_eq!(action["batch"].as_bool(), Some(true));
        assert_eq!(
            action["shell"].as_str(),
            Some("t=$(date +%s%N); sed \"s/^/$t m2 /\" >> '/tmp/g/batches-m2.log'")
        );
        assert_eq!(value["brake"]["share"].as_float(), Some(0.9));
        let timed = render_config(
            &sample_monitor(),
            "hb1t0",
            &options(1, None).action(ActionStyle::TimedLine),
            &endpoints(),
            Path::new("/tmp/g/actions.log"),
        );
        let value: toml::Value = toml::from_str(&timed).expect(&timed);
        assert_eq!(
            value["actions"][0]["shell"].as_str(),
            Some("echo \"$HB_EVENT $HB_NODE_NAME m2 $(date +%s%N)\" >> '/tmp/g/actions.log'")
        );
    }

    #[test]
    fn parses_run_lines() {
        let run = Run::parse("down node-1 m3").unwrap();
        assert!(run.is("down", 1));
        assert!(!run.is("down", 2));
        assert!(!run.is("up", 1));
        assert_eq!(run.monitor_index(), Some(3));
        assert_eq!(run.unix_ns, None);
        assert_eq!(Run::parse("down node-1"), None);
        assert_eq!(Run::parse("down node-1 m3 extra"), None);
        assert_eq!(Run::parse("down node-1 m3 12 13"), None);
        let timed = Run::parse("down node-1 m3 1764000000123456789").unwrap();
        assert_eq!(timed.unix_ns, Some(1_764_000_000_123_456_789));
        assert!(timed.is("down", 1));
        let batch = BatchRun::parse(
            r#"1764000000123456789 m2 {"event":"down","node_id":1042,"node_name":"node-1042","node_address":null,"previous_state":"up","since_last_heartbeat_ms":3100}"#,
        )
        .unwrap();
        assert_eq!(
            (batch.unix_ns, batch.monitor.as_str(), batch.event.as_str()),
            (1_764_000_000_123_456_789, "m2", "down")
        );
        assert_eq!((batch.node_id, batch.node.as_str()), (1042, "node-1042"));
        assert_eq!(BatchRun::parse("12 m2 not json"), None);
    }

    #[test]
    fn checks_names() {
        assert!(check_names("hb4194304t99", MAX_NODES, None).is_ok());
        let fleet = |first_id, count| Some(Fleet { first_id, count });
        assert!(check_names("hbgb", 0, fleet(1001, 100_000)).is_ok());
        for (prefix, nodes, fleet) in [
            ("hb4194304t99", 0, None),
            ("hb4194304t99", MAX_NODES + 1, None),
            ("hb4194304t100", MAX_NODES, None),
            ("hb-x", 1, None),
            ("hbgb", 1, fleet(50, 10)),
            ("hbgb", 1, fleet(1001, 0)),
            ("hbgb", 1, fleet(1001, 1 << 24)),
        ] {
            let err = check_names(prefix, nodes, fleet).unwrap_err();
            assert!(matches!(err, Error::Invalid { .. }), "{err}");
        }
        assert_eq!(monitor_index("m2"), Some(2));
        assert_eq!(monitor_index("x2"), None);
    }

    #[test]
    fn options_builders() {
        let alone = GroupLabOptions::default().alone().nodes(5);
        assert_eq!(alone.group, None);
        assert_eq!(alone.nodes, 5);
        let grouped = alone.join_after(Duration::ZERO);
        assert_eq!(
            grouped.group.as_ref().and_then(|g| g.join_after),
            Some(Duration::ZERO)
        );
        assert_eq!(
            GroupLabOptions::default().alone().grouped().group,
            Some(GroupSettings::default())
        );
    }
}
