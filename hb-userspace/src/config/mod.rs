//! The agent's configuration: the TOML file format (reference in the README),
//! command-line overrides, and validation with messages that say how to fix
//! the file.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use crate::datapath::{DatapathKind, xdp::XdpMode};

mod settings;

/// Largest `max_nodes` accepted: the node table is 72 bytes of kernel
/// memory per id, so this caps it at 1.125 GiB.
pub const MAX_NODES_LIMIT: u32 = 16_777_216;
/// Shortest heartbeat interval accepted (default or per node).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest heartbeat interval accepted: the wire format carries the interval
/// as a 32-bit number of milliseconds.
pub const MAX_INTERVAL: Duration = Duration::from_millis(u32::MAX as u64);

/// Default `max_nodes`.
pub const DEFAULT_MAX_NODES: u32 = 65_536;
/// Default `status_socket`.
pub const DEFAULT_STATUS_SOCKET: &str = "/run/hb/hb.sock";
/// Default `state_file`.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/hb/state.json";
/// Default `max_concurrent_actions`.
pub const DEFAULT_MAX_CONCURRENT_ACTIONS: usize = 16;
/// Default `defaults.interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default `defaults.timeout_multiplier`.
pub const DEFAULT_TIMEOUT_MULTIPLIER: u32 = 3;
/// Default `defaults.sweep_period`.
pub const DEFAULT_SWEEP_PERIOD: Duration = Duration::from_millis(100);
/// Default `timeout` of an action.
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the kernel lists network interfaces.
const SYS_CLASS_NET: &str = "/sys/class/net";
/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
const MAX_INTERFACE_NAME_LEN: usize = 15;

/// Everything that can be wrong with a configuration. Every message names
/// the offending field and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is part of the message (and so not also a `source`, which
    // would print it twice in an error chain).
    #[error("cannot read config file {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Bad TOML, an unknown field, a missing field or a value of the wrong
    /// type (e.g. a bad duration); toml's message names the field and line.
    #[error("{source_name}: {}", cause.to_string().trim_end())]
    Parse {
        source_name: String,
        cause: toml::de::Error,
    },
    #[error(
        "`interfaces` is empty: name at least one network interface, e.g. interfaces = [\"eth0\"], or pass --interface"
    )]
    NoInterfaces,
    #[error(
        "`interfaces`: {name:?} is not a valid interface name (1 to 15 characters, no '/', no whitespace): fix the name"
    )]
    InvalidInterfaceName { name: String },
    #[error("`interfaces`: {name:?} is listed twice: remove the duplicate")]
    DuplicateInterface { name: String },
    #[error(
        "`interfaces`: no network interface {name:?} on this host (not in /sys/class/net): fix the name or create the interface"
    )]
    UnknownInterface { name: String },
    #[error("`port` is 0: set the UDP port heartbeats are sent to, e.g. port = 7979")]
    PortZero,
    #[error(
        "`max_nodes` is {max_nodes}: set it between 1 and {MAX_NODES_LIMIT} (node ids must be below it)"
    )]
    MaxNodesOutOfRange { max_nodes: u32 },
    #[error("`max_concurrent_actions` is 0: set it to at least 1")]
    MaxConcurrentActionsZero,
    #[error(
        "`defaults.timeout_multiplier` is {multiplier}: timeout must be longer than the interval: set timeout_multiplier >= 2"
    )]
    TimeoutMultiplierTooSmall { multiplier: u32 },
    #[error(
        "`defaults.interval` is {}: set it to at least {}", humantime::format_duration(*interval), humantime::format_duration(MIN_INTERVAL)
    )]
    IntervalTooShort { interval: Duration },
    #[error(
        "`defaults.interval` is {}: set it to at most {} (the wire format carries milliseconds in 32 bits)", humantime::format_duration(*interval), humantime::format_duration(MAX_INTERVAL)
    )]
    IntervalTooLong { interval: Duration },
    #[error(
        "`defaults.sweep_period` is {}: it must be above zero and at most `defaults.interval` ({}) so the node table is swept at least once per interval", humantime::format_duration(*sweep_period), humantime::format_duration(*interval)
    )]
    SweepPeriodOutOfRange {
        sweep_period: Duration,
        interval: Duration,
    },
    #[error("node id {id}: `name` is empty: give every node a name")]
    EmptyNodeName { id: u32 },
    #[error(
        "node `{name}`: `id` {id} is not below `max_nodes` ({max_nodes}): raise max_nodes to at least {} or use a smaller id", u64::from(*id) + 1
    )]
    NodeIdTooLarge {
        id: u32,
        name: String,
        max_nodes: u32,
    },
    #[error("nodes `{first}` and `{second}` both have `id` {id}: give each node its own id")]
    DuplicateNodeId {
        id: u32,
        first: String,
        second: String,
    },
    #[error(
        "nodes with ids {first_id} and {second_id} are both named `{name}` (`name`): give each node its own name"
    )]
    DuplicateNodeName {
        name: String,
        first_id: u32,
        second_id: u32,
    },
    #[error(
        "node `{name}`: `interval` is {}: set it to at least {} or remove it to use the advertised interval", humantime::format_duration(*interval), humantime::format_duration(MIN_INTERVAL)
    )]
    NodeIntervalTooShort { name: String, interval: Duration },
    #[error(
        "node `{name}`: `interval` is {}: set it to at most {} (the wire format carries milliseconds in 32 bits)", humantime::format_duration(*interval), humantime::format_duration(MAX_INTERVAL)
    )]
    NodeIntervalTooLong { name: String, interval: Duration },
    #[error("action number {index} (counting from 1): `name` is empty: give every action a name")]
    EmptyActionName { index: usize },
    #[error(
        "action `{action}`: give `command` (argv, run without a shell) or `shell` (a /bin/sh -c script)"
    )]
    ActionRunMissing { action: String },
    #[error("action `{action}`: `command` and `shell` are both given: keep exactly one")]
    ActionRunBoth { action: String },
    #[error(
        "action `{action}`: `{field}` is empty: give the program and its arguments, e.g. command = [\"/usr/local/bin/failover\"], or a script, e.g. shell = \"logger $HB_EVENT\""
    )]
    EmptyCommand { action: String, field: &'static str },
    #[error(
        "action `{action}`: `on` is empty: list the events that run it, e.g. on = [\"down\"] (events: up, suspect, down, flapping, left)"
    )]
    NoActionEvents { action: String },
    #[error(
        "action `{action}`: `timeout` is zero: set how long it may run, e.g. timeout = \"10s\""
    )]
    ActionTimeoutZero { action: String },
    #[error("two actions are named `{action}` (`name`): give each action its own name")]
    DuplicateActionName { action: String },
    #[error("node range `{prefix}` (`[[node_ranges]]`): {problem}")]
    NodeRange { prefix: String, problem: String },
    #[error(
        "`auth.keys` lists {count} key files: give the current key, and during a rotation the previous one, at most 2"
    )]
    TooManyKeys { count: usize },
    #[error(
        "`detector.phi_threshold` is {threshold}: set a number above 0 (8 is the usual choice)"
    )]
    PhiThreshold { threshold: f64 },
    #[error(
        "`detector.suspect_phi` is {suspect_phi}: set it above 0 and below `detector.phi_threshold` ({threshold}), e.g. 3"
    )]
    SuspectPhi { suspect_phi: f64, threshold: f64 },
    #[error("`brake`: {problem}")]
    Brake { problem: String },
    #[error("`detector.rise` is 0: set it to at least 1 (heartbeats in a row to be up again)")]
    RiseZero,
    #[error(
        "`detector.flap_window` and `detector.flap_stable` must be above zero when `detector.flap_max` is set: give both, or set flap_max = 0 to turn flap damping off"
    )]
    FlapDurations,
    #[error("`detector.min_std_dev` is zero: set it above zero, e.g. min_std_dev = \"100ms\"")]
    MinStdDevZero,
    #[error("`detector.stall_threshold` is zero: set it above zero, e.g. stall_threshold = \"1s\"")]
    StallThresholdZero,
    #[error(
        "`auth.accept_unauthenticated` is false but `auth.keys` is empty, so every heartbeat would be refused: add a key file (`hb keygen --id 1 /etc/hb/hb.key`) to auth.keys or remove the setting"
    )]
    NoKeysToAuthenticate,
}

/// A node state change that can run actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The node is heard from again (or for the first time).
    Up,
    /// The node was silent past its suspect deadline (before its timeout).
    Suspect,
    /// The node missed its heartbeats for longer than its timeout.
    Down,
    /// The node came back after going down too often lately: held down
    /// until heard steadily.
    Flapping,
    /// The node announced a graceful leave.
    Left,
}

impl Event {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Suspect => "suspect",
            Self::Down => "down",
            Self::Flapping => "flapping",
            Self::Left => "left",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Timing shared by every node (`[defaults]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Defaults {
    /// Expected heartbeat interval, unless the node advertises or configures
    /// its own.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A node is down after `timeout_multiplier` x its interval of silence.
    pub timeout_multiplier: u32,
    /// How often the node table is swept.
    #[serde(with = "humantime_serde")]
    pub sweep_period: Duration,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            timeout_multiplier: DEFAULT_TIMEOUT_MULTIPLIER,
            sweep_period: DEFAULT_SWEEP_PERIOD,
        }
    }
}

/// One monitored node (`[[nodes]]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The id the node puts in its heartbeats; below `max_nodes`.
    pub id: u32,
    pub name: String,
    /// Informative; passed to actions as `HB_NODE_ADDRESS`.
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// Overrides the interval the node advertises and `defaults.interval`.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Pins the node: its heartbeats are accepted only from this source
    /// address (checked in the XDP program); others count as `wrong_source`.
    #[serde(default)]
    pub source: Option<IpAddr>,
}

/// A block of nodes with consecutive ids (`[[node_ranges]]`), for clusters
/// too large to list node by node: node `first_id + k` is named
/// `{name_prefix}{first_id + k}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRange {
    pub first_id: u32,
    pub count: u32,
    pub name_prefix: String,
    /// Overrides the interval the nodes advertise and `defaults.interval`.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Pins the nodes: node `first_id + k` is heard only from address
    /// `first_source + k`.
    #[serde(default)]
    pub first_source: Option<IpAddr>,
}

impl NodeRange {
    /// The ids of the range.
    pub fn ids(&self) -> std::ops::Range<u32> {
        self.first_id..self.first_id.saturating_add(self.count)
    }

    /// The name of node `id` of this range.
    pub fn name_of(&self, id: u32) -> String {
        format!("{}{id}", self.name_prefix)
    }

    /// The pinned source address of node `id` of this range, if the range is
    /// pinned (and the address exists: validation checks the whole range).
    pub fn source_of(&self, id: u32) -> Option<IpAddr> {
        let step = id.checked_sub(self.first_id)?;
        match self.first_source? {
            IpAddr::V4(first) => u32::from(first)
                .checked_add(step)
                .map(|a| IpAddr::V4(a.into())),
            IpAddr::V6(first) => u128::from(first)
                .checked_add(u128::from(step))
                .map(|a| IpAddr::V6(a.into())),
        }
    }
}

/// Which rule decides that a silent node is down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    /// `defaults.timeout_multiplier` x the node's interval.
    #[default]
    Timeout,
    /// Phi accrual over the interval the datapath measures.
    Phi,
}

/// How nodes are judged (`[detector]`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    pub kind: DetectorKind,
    /// `phi`: a node is down once phi reaches this.
    pub phi_threshold: f64,
    /// `phi`: a node is suspect once phi reaches this (below
    /// `phi_threshold`).
    pub suspect_phi: f64,
    /// `phi`: the standard deviation used is at least this.
    #[serde(with = "humantime_serde")]
    pub min_std_dev: Duration,
    /// `phi`: extra silence tolerated on top of the mean interval; none
    /// given: one mean interval (a lost heartbeat).
    #[serde(with = "humantime_serde")]
    pub acceptable_pause: Option<Duration>,
    /// A sweep later than this past its period means the agent stalled:
    /// nobody is convicted until every node has had a full timeout again.
    #[serde(with = "humantime_serde")]
    pub stall_threshold: Duration,
    /// Heartbeats in a row (none missed past the suspect deadline) that
    /// bring a down node back up.
    pub rise: u32,
    /// A node that went down more than this many times within
    /// `flap_window` is held as flapping when it comes back; 0: never.
    pub flap_max: u32,
    #[serde(with = "humantime_serde")]
    pub flap_window: Duration,
    /// A flapping node is up again once heard steadily for this long.
    #[serde(with = "humantime_serde")]
    pub flap_stable: Duration,
}

/// Default `detector.stall_threshold`.
pub const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_secs(1);
/// Default `detector.suspect_phi`: about a 1 in 1000 event.
pub const DEFAULT_SUSPECT_PHI: f64 = 3.0;
/// Default `detector.rise`: a down node must be heard twice in a row.
pub const DEFAULT_RISE: u32 = 2;
/// Default `detector.flap_max`, `flap_window` and `flap_stable`: down more
/// than 3 times in 10 minutes is flapping, until heard steadily for a
/// minute.
pub const DEFAULT_FLAP_MAX: u32 = 3;
pub const DEFAULT_FLAP_WINDOW: Duration = Duration::from_secs(600);
pub const DEFAULT_FLAP_STABLE: Duration = Duration::from_secs(60);

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            kind: DetectorKind::Timeout,
            phi_threshold: crate::detect::phi::DEFAULT_THRESHOLD,
            suspect_phi: DEFAULT_SUSPECT_PHI,
            min_std_dev: crate::detect::phi::DEFAULT_MIN_STD_DEV,
            acceptable_pause: None,
            stall_threshold: DEFAULT_STALL_THRESHOLD,
            rise: DEFAULT_RISE,
            flap_max: DEFAULT_FLAP_MAX,
            flap_window: DEFAULT_FLAP_WINDOW,
            flap_stable: DEFAULT_FLAP_STABLE,
        }
    }
}

/// The brake on mass failure (`[brake]`): see [`crate::detect::brake`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrakeConfig {
    pub share: f64,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub min_silent: usize,
    pub release_per_minute: u32,
    #[serde(with = "humantime_serde")]
    pub max_hold: Option<Duration>,
}

impl Default for BrakeConfig {
    fn default() -> Self {
        let d = crate::detect::brake::BrakeSettings::default();
        Self {
            share: d.share,
            window: d.window,
            min_silent: d.min_silent,
            release_per_minute: d.release_per_minute,
            max_hold: d.max_hold,
        }
    }
}

impl BrakeConfig {
    pub fn settings(&self) -> crate::detect::brake::BrakeSettings {
        crate::detect::brake::BrakeSettings {
            share: self.share,
            window: self.window,
            min_silent: self.min_silent,
            release_per_minute: self.release_per_minute,
            max_hold: self.max_hold,
        }
    }
}

/// Heartbeat authentication (`[auth]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Key files (`hb keygen`): the current key, and during a rotation the
    /// previous one. Heartbeats signed with either are accepted.
    pub keys: Vec<PathBuf>,
    /// Whether heartbeats with no tag (key id 0) are accepted. Default:
    /// only when no key is configured.
    pub accept_unauthenticated: Option<bool>,
}

impl AuthConfig {
    /// Whether unauthenticated heartbeats are accepted, defaults applied.
    pub fn unauthenticated(&self) -> hb_common::admission::Unauthenticated {
        use hb_common::admission::Unauthenticated;
        match self.accept_unauthenticated {
            Some(true) => Unauthenticated::Accept,
            Some(false) => Unauthenticated::Refuse,
            None if self.keys.is_empty() => Unauthenticated::Accept,
            None => Unauthenticated::Refuse,
        }
    }
}

/// What an action runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionRun {
    /// argv, executed directly (no shell); the first element is the program.
    Command(Vec<String>),
    /// A script run by `/bin/sh -c`.
    Shell(String),
}

/// One action (`[[actions]]`): a program run when a node changes state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionConfig {
    pub name: String,
    /// The events that run it; never empty in a validated config.
    pub on: Vec<Event>,
    pub run: ActionRun,
    /// The whole process group is killed after this.
    pub timeout: Duration,
}

/// The agent's configuration. Build it with [`Config::load`] (or
/// [`Config::parse`] then [`Config::validate`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub interfaces: Vec<String>,
    pub port: u16,
    pub max_nodes: u32,
    pub pass_heartbeats: bool,
    pub datapath: DatapathKind,
    pub xdp_mode: XdpMode,
    pub status_socket: PathBuf,
    /// Where node states are saved so that a restart neither forgets nodes
    /// nor fires events again.
    pub state_file: PathBuf,
    pub max_concurrent_actions: usize,
    pub defaults: Defaults,
    pub nodes: Vec<NodeConfig>,
    pub node_ranges: Vec<NodeRange>,
    /// Optional: every state change is appended here as one JSON line.
    pub event_log: Option<PathBuf>,
    pub auth: AuthConfig,
    pub detector: DetectorConfig,
    pub brake: BrakeConfig,
    pub actions: Vec<ActionConfig>,
    /// The file this configuration was loaded from (by [`Config::load`]),
    /// re-read for the keys on SIGHUP.
    pub loaded_from: Option<PathBuf>,
}

impl Default for Config {
    /// The defaults of every field, with no interfaces, nodes or actions
    /// (so it does not validate until an interface is added).
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            port: hb_common::wire::DEFAULT_PORT,
            max_nodes: DEFAULT_MAX_NODES,
            pass_heartbeats: false,
            datapath: DatapathKind::Xdp,
            xdp_mode: XdpMode::Auto,
            status_socket: PathBuf::from(DEFAULT_STATUS_SOCKET),
            state_file: PathBuf::from(DEFAULT_STATE_FILE),
            max_concurrent_actions: DEFAULT_MAX_CONCURRENT_ACTIONS,
            defaults: Defaults::default(),
            nodes: Vec::new(),
            node_ranges: Vec::new(),
            event_log: None,
            auth: AuthConfig::default(),
            detector: DetectorConfig::default(),
            brake: BrakeConfig::default(),
            actions: Vec::new(),
            loaded_from: None,
        }
    }
}

/// Command-line values that win over the config file. `None`/empty/false
/// leaves the file's value alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Non-empty: replaces the file's `interfaces`.
    pub interfaces: Vec<String>,
    pub port: Option<u16>,
    pub interval: Option<Duration>,
    pub timeout_multiplier: Option<u32>,
    pub sweep_period: Option<Duration>,
    pub max_nodes: Option<u32>,
    pub datapath: Option<DatapathKind>,
    pub xdp_mode: Option<XdpMode>,
    /// `true`: sets `pass_heartbeats` (false leaves the file's value).
    pub pass_heartbeats: bool,
    pub status_socket: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
}

/// The file as written; turned into [`Config`] by [`Config::parse`].
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    interfaces: Vec<String>,
    port: u16,
    max_nodes: u32,
    pass_heartbeats: bool,
    datapath: DatapathKind,
    xdp_mode: XdpMode,
    status_socket: PathBuf,
    state_file: PathBuf,
    max_concurrent_actions: usize,
    defaults: Defaults,
    nodes: Vec<NodeConfig>,
    node_ranges: Vec<NodeRange>,
    event_log: Option<PathBuf>,
    auth: AuthConfig,
    detector: DetectorConfig,
    brake: BrakeConfig,
    actions: Vec<RawAction>,
}

impl Default for RawConfig {
    fn default() -> Self {
        let c = Config::default();
        Self {
            interfaces: c.interfaces,
            port: c.port,
            max_nodes: c.max_nodes,
            pass_heartbeats: c.pass_heartbeats,
            datapath: c.datapath,
            xdp_mode: c.xdp_mode,
            status_socket: c.status_socket,
            state_file: c.state_file,
            max_concurrent_actions: c.max_concurrent_actions,
            defaults: c.defaults,
            nodes: c.nodes,
            node_ranges: c.node_ranges,
            event_log: c.event_log,
            auth: c.auth,
            detector: c.detector,
            brake: c.brake,
            actions: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    name: String,
    on: Vec<Event>,
    command: Option<Vec<String>>,
    shell: Option<String>,
    #[serde(default = "default_action_timeout", with = "humantime_serde")]
    timeout: Duration,
}

fn default_action_timeout() -> Duration {
    DEFAULT_ACTION_TIMEOUT
}

impl RawAction {
    fn into_action(self) -> Result<ActionConfig, ConfigError> {
        let run = match (self.command, self.shell) {
            (Some(argv), None) => ActionRun::Command(argv),
            (None, Some(script)) => ActionRun::Shell(script),
            (None, None) => return Err(ConfigError::ActionRunMissing { action: self.name }),
            (Some(_), Some(_)) => return Err(ConfigError::ActionRunBoth { action: self.name }),
        };
        Ok(ActionConfig {
            name: self.name,
            on: self.on,
            run,
            timeout: self.timeout,
        })
    }
}

impl Config {
    /// Reads and parses `path`, applies `overrides`, and validates the
    /// result. Does not check that the interfaces exist (see
    /// [`Config::check_interfaces_exist`]).
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        config.apply(overrides);
        config.validate()?;
        config.loaded_from = Some(path.to_owned());
        Ok(config)
    }

    /// Parses TOML text; `source_name` (usually the file path) prefixes
    /// syntax errors. Fills in defaults but does not validate values beyond
    /// what the format itself requires.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|cause| ConfigError::Parse {
            source_name: source_name.to_owned(),
            cause,
        })?;
        let actions = raw
            .actions
            .into_iter()
            .map(RawAction::into_action)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            interfaces: raw.interfaces,
            port: raw.port,
            max_nodes: raw.max_nodes,
            pass_heartbeats: raw.pass_heartbeats,
            datapath: raw.datapath,
            xdp_mode: raw.xdp_mode,
            status_socket: raw.status_socket,
            state_file: raw.state_file,
            max_concurrent_actions: raw.max_concurrent_actions,
            defaults: raw.defaults,
            nodes: raw.nodes,
            node_ranges: raw.node_ranges,
            event_log: raw.event_log,
            auth: raw.auth,
            detector: raw.detector,
            brake: raw.brake,
            actions,
            loaded_from: None,
        })
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, overrides: &Overrides) {
        if !overrides.interfaces.is_empty() {
            self.interfaces.clone_from(&overrides.interfaces);
        }
        if let Some(port) = overrides.port {
            self.port = port;
        }
        if let Some(interval) = overrides.interval {
            self.defaults.interval = interval;
        }
        if let Some(multiplier) = overrides.timeout_multiplier {
            self.defaults.timeout_multiplier = multiplier;
        }
        if let Some(sweep_period) = overrides.sweep_period {
            self.defaults.sweep_period = sweep_period;
        }
        if let Some(max_nodes) = overrides.max_nodes {
            self.max_nodes = max_nodes;
        }
        if let Some(datapath) = overrides.datapath {
            self.datapath = datapath;
        }
        if let Some(xdp_mode) = overrides.xdp_mode {
            self.xdp_mode = xdp_mode;
        }
        if overrides.pass_heartbeats {
            self.pass_heartbeats = true;
        }
        if let Some(status_socket) = &overrides.status_socket {
            self.status_socket.clone_from(status_socket);
        }
        if let Some(state_file) = &overrides.state_file {
            self.state_file = state_file.clone();
        }
    }

    /// Checks every value; returns the first problem found. Does not look
    /// at the host (see [`Config::check_interfaces_exist`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_interfaces()?;
        if self.port == 0 {
            return Err(ConfigError::PortZero);
        }
        if self.max_nodes == 0 || self.max_nodes > MAX_NODES_LIMIT {
            return Err(ConfigError::MaxNodesOutOfRange {
                max_nodes: self.max_nodes,
            });
        }
        if self.max_concurrent_actions == 0 {
            return Err(ConfigError::MaxConcurrentActionsZero);
        }
        self.validate_defaults()?;
        self.validate_nodes()?;
        self.validate_auth()?;
        self.validate_detector()?;
        self.brake
            .settings()
            .check()
            .map_err(|problem| ConfigError::Brake { problem })?;
        self.validate_actions()
    }

    fn validate_detector(&self) -> Result<(), ConfigError> {
        let detector = &self.detector;
        if !(detector.phi_threshold.is_finite() && detector.phi_threshold > 0.0) {
            return Err(ConfigError::PhiThreshold {
                threshold: detector.phi_threshold,
            });
        }
        if !(detector.suspect_phi.is_finite()
            && detector.suspect_phi > 0.0
            && detector.suspect_phi < detector.phi_threshold)
        {
            return Err(ConfigError::SuspectPhi {
                suspect_phi: detector.suspect_phi,
                threshold: detector.phi_threshold,
            });
        }
        if detector.rise == 0 {
            return Err(ConfigError::RiseZero);
        }
        if detector.flap_max > 0
            && (detector.flap_window.is_zero() || detector.flap_stable.is_zero())
        {
            return Err(ConfigError::FlapDurations);
        }
        if detector.min_std_dev.is_zero() {
            return Err(ConfigError::MinStdDevZero);
        }
        if detector.stall_threshold.is_zero() {
            return Err(ConfigError::StallThresholdZero);
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        if self.auth.keys.len() > 2 {
            return Err(ConfigError::TooManyKeys {
                count: self.auth.keys.len(),
            });
        }
        if self.auth.keys.is_empty() && self.auth.accept_unauthenticated == Some(false) {
            return Err(ConfigError::NoKeysToAuthenticate);
        }
        Ok(())
    }

    /// Checks that every interface exists on this host
    /// (`/sys/class/net/<name>`). Separate from [`Config::validate`] so that
    /// validation does not depend on the host.
    pub fn check_interfaces_exist(&self) -> Result<(), ConfigError> {
        self.check_interfaces_exist_in(Path::new(SYS_CLASS_NET))
    }

    fn check_interfaces_exist_in(&self, sys_class_net: &Path) -> Result<(), ConfigError> {
        for name in &self.interfaces {
            // Never build a path from a name that could leave the directory.
            if !valid_interface_name(name) || !sys_class_net.join(name).exists() {
                return Err(ConfigError::UnknownInterface { name: name.clone() });
            }
        }
        Ok(())
    }

    fn validate_interfaces(&self) -> Result<(), ConfigError> {
        if self.interfaces.is_empty() {
            return Err(ConfigError::NoInterfaces);
        }
        let mut seen = HashSet::new();
        for name in &self.interfaces {
            if !valid_interface_name(name) {
                return Err(ConfigError::InvalidInterfaceName { name: name.clone() });
            }
            if !seen.insert(name.as_str()) {
                return Err(ConfigError::DuplicateInterface { name: name.clone() });
            }
        }
        Ok(())
    }

    fn validate_defaults(&self) -> Result<(), ConfigError> {
        let Defaults {
            interval,
            timeout_multiplier,
            sweep_period,
        } = self.defaults;
        if timeout_multiplier < 2 {
            return Err(ConfigError::TimeoutMultiplierTooSmall {
                multiplier: timeout_multiplier,
            });
        }
        if interval < MIN_INTERVAL {
            return Err(ConfigError::IntervalTooShort { interval });
        }
        if interval > MAX_INTERVAL {
            return Err(ConfigError::IntervalTooLong { interval });
        }
        if sweep_period.is_zero() || sweep_period > interval {
            return Err(ConfigError::SweepPeriodOutOfRange {
                sweep_period,
                interval,
            });
        }
        Ok(())
    }

    fn validate_nodes(&self) -> Result<(), ConfigError> {
        let mut by_id: HashMap<u32, &str> = HashMap::new();
        let mut by_name: HashMap<&str, u32> = HashMap::new();
        for node in &self.nodes {
            if node.name.trim().is_empty() {
                return Err(ConfigError::EmptyNodeName { id: node.id });
            }
            if node.id >= self.max_nodes {
                return Err(ConfigError::NodeIdTooLarge {
                    id: node.id,
                    name: node.name.clone(),
                    max_nodes: self.max_nodes,
                });
            }
            if let Some(first) = by_id.insert(node.id, &node.name) {
                return Err(ConfigError::DuplicateNodeId {
                    id: node.id,
                    first: first.to_owned(),
                    second: node.name.clone(),
                });
            }
            if let Some(first_id) = by_name.insert(&node.name, node.id) {
                return Err(ConfigError::DuplicateNodeName {
                    name: node.name.clone(),
                    first_id,
                    second_id: node.id,
                });
            }
            check_node_interval(&node.name, node.interval)?;
        }
        self.validate_node_ranges(&by_id, &by_name)
    }

    fn validate_node_ranges(
        &self,
        by_id: &HashMap<u32, &str>,
        by_name: &HashMap<&str, u32>,
    ) -> Result<(), ConfigError> {
        let mut ranges: Vec<&NodeRange> = self.node_ranges.iter().collect();
        ranges.sort_by_key(|r| r.first_id);
        for range in &ranges {
            let prefix = &range.name_prefix;
            if prefix.trim().is_empty() {
                return Err(ConfigError::NodeRange { prefix: prefix.clone(), problem: "`name_prefix` is empty: give the nodes of the range a name prefix, e.g. name_prefix = \"node-\"".into() });
            }
            if range.count == 0 {
                return Err(ConfigError::NodeRange {
                    prefix: prefix.clone(),
                    problem: "`count` is 0: a range holds at least one node".into(),
                });
            }
            if u64::from(range.first_id) + u64::from(range.count) > u64::from(self.max_nodes) {
                return Err(ConfigError::NodeRange {
                    prefix: prefix.clone(),
                    problem: format!(
                        "ids {}..={} do not fit in the table: raise max_nodes to at least {}",
                        range.first_id,
                        u64::from(range.first_id) + u64::from(range.count) - 1,
                        u64::from(range.first_id) + u64::from(range.count)
                    ),
                });
            }
            if let Some((&id, &name)) = by_id.iter().find(|(id, _)| range.ids().contains(id)) {
                return Err(ConfigError::NodeRange {
                    prefix: prefix.clone(),
                    problem: format!(
                        "its ids include {id}, already node `{name}`: give the node another id or shrink the range"
                    ),
                });
            }
            if let Some((&name, _)) = by_name.iter().find(|(name, _)| {
                name.strip_prefix(prefix.as_str())
                    .and_then(|rest| rest.parse::<u32>().ok())
                    .is_some_and(|id| range.ids().contains(&id))
            }) {
                return Err(ConfigError::NodeRange {
                    prefix: prefix.clone(),
                    problem: format!("it names a node `{name}` too: rename that node"),
                });
            }
            check_node_interval(prefix, range.interval)?;
            if let Some(first) = range.first_source
                && range.source_of(range.ids().end - 1).is_none()
            {
                return Err(ConfigError::NodeRange {
                    prefix: prefix.clone(),
                    problem: format!(
                        "`first_source` {first} + {} addresses runs past the last address: start the range lower",
                        range.count
                    ),
                });
            }
        }
        for pair in ranges.windows(2) {
            if pair[0].ids().end > pair[1].first_id {
                return Err(ConfigError::NodeRange {
                    prefix: pair[1].name_prefix.clone(),
                    problem: format!(
                        "its ids overlap the range `{}`: ranges must not share ids",
                        pair[0].name_prefix
                    ),
                });
            }
        }
        for a in &ranges {
            for b in &ranges {
                if !std::ptr::eq(*a, *b) && b.name_prefix.starts_with(a.name_prefix.as_str()) {
                    return Err(ConfigError::NodeRange {
                        prefix: b.name_prefix.clone(),
                        problem: format!(
                            "its name prefix starts with the prefix `{}` of another range, so names could clash: make the prefixes distinct",
                            a.name_prefix
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    fn validate_actions(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (index, action) in self.actions.iter().enumerate() {
            if action.name.trim().is_empty() {
                return Err(ConfigError::EmptyActionName { index: index + 1 });
            }
            let empty_field = match &action.run {
                ActionRun::Command(argv) if argv.first().is_none_or(|p| p.is_empty()) => {
                    Some("command")
                }
                ActionRun::Shell(script) if script.trim().is_empty() => Some("shell"),
                _ => None,
            };
            if let Some(field) = empty_field {
                return Err(ConfigError::EmptyCommand {
                    action: action.name.clone(),
                    field,
                });
            }
            if action.on.is_empty() {
                return Err(ConfigError::NoActionEvents {
                    action: action.name.clone(),
                });
            }
            if action.timeout.is_zero() {
                return Err(ConfigError::ActionTimeoutZero {
                    action: action.name.clone(),
                });
            }
            if !names.insert(action.name.as_str()) {
                return Err(ConfigError::DuplicateActionName {
                    action: action.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// A complete, commented example configuration.
    pub fn example() -> &'static str {
        EXAMPLE
    }
}

fn check_node_interval(name: &str, interval: Option<Duration>) -> Result<(), ConfigError> {
    match interval {
        Some(interval) if interval < MIN_INTERVAL => Err(ConfigError::NodeIntervalTooShort {
            name: name.to_owned(),
            interval,
        }),
        Some(interval) if interval > MAX_INTERVAL => Err(ConfigError::NodeIntervalTooLong {
            name: name.to_owned(),
            interval,
        }),
        _ => Ok(()),
    }
}

fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME_LEN
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// The commented example configuration, `hb example-config`.
const EXAMPLE: &str = include_str!("example.toml");

#[cfg(test)]
mod tests {
    use std::{
        net::Ipv4Addr,
        sync::atomic::{AtomicU32, Ordering},
    };

    use super::*;

    const BASE: &str = "interfaces = [\"eth0\"]\n";

    fn parse(text: &str) -> Config {
        match Config::parse(text, "test.toml") {
            Ok(config) => config,
            Err(e) => panic!("parse failed: {e}\n--- input ---\n{text}"),
        }
    }

    fn parse_err(text: &str) -> ConfigError {
        match Config::parse(text, "test.toml") {
            Ok(config) => panic!("parse succeeded: {config:?}\n--- input ---\n{text}"),
            Err(e) => e,
        }
    }

    fn validate_err(text: &str) -> ConfigError {
        match parse(text).validate() {
            Ok(()) => panic!("validation passed\n--- input ---\n{text}"),
            Err(e) => e,
        }
    }

    fn assert_mentions(err: &ConfigError, needles: &[&str]) {
        let message = err.to_string();
        for needle in needles {
            assert!(
                message.contains(needle),
                "message {message:?} does not contain {needle:?}"
            );
        }
    }

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "hb-config-test-{tag}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path)
                .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn defaults_are_applied() {
        let config = parse(BASE);
        config.validate().expect("minimal config validates");
        assert_eq!(config.interfaces, ["eth0"]);
        assert_eq!(config.port, 7979);
        assert_eq!(config.port, hb_common::wire::DEFAULT_PORT);
        assert_eq!(config.max_nodes, 65_536);
        assert!(!config.pass_heartbeats);
        assert_eq!(config.xdp_mode, XdpMode::Auto);
        assert_eq!(config.status_socket, Path::new("/run/hb/hb.sock"));
        assert_eq!(config.state_file, Path::new("/var/lib/hb/state.json"));
        assert_eq!(config.max_concurrent_actions, 16);
        assert_eq!(config.defaults.interval, Duration::from_secs(2));
        assert_eq!(config.defaults.timeout_multiplier, 3);
        assert_eq!(config.defaults.sweep_period, Duration::from_millis(100));
        assert!(config.nodes.is_empty(), "no nodes is allowed");
        assert!(config.actions.is_empty());
    }

    #[test]
    fn partial_defaults_table_keeps_other_defaults() {
        let config = parse(&format!("{BASE}[defaults]\ninterval = \"500ms\"\n"));
        assert_eq!(config.defaults.interval, Duration::from_millis(500));
        assert_eq!(config.defaults.timeout_multiplier, 3);
        assert_eq!(config.defaults.sweep_period, Duration::from_millis(100));
    }

    #[test]
    fn full_config_parses() {
        let config = parse(
            r#"
            interfaces = ["eth0", "eth1"]
            port = 9000
            max_nodes = 128
            pass_heartbeats = true
            xdp_mode = "generic"
            status_socket = "/tmp/hb.sock"
            state_file = "/tmp/hb-state.json"
            max_concurrent_actions = 4

            [defaults]
            interval = "1s"
            timeout_multiplier = 5
            sweep_period = "50ms"

            [[nodes]]
            id = 7
            name = "db"
            address = "2001:db8::1"

            [[nodes]]
            id = 8
            name = "web"
            address = "198.18.1.2"
            interval = "250ms"

            [[actions]]
            name = "a"
            on = ["down", "left"]
            command = ["/bin/true", "x"]

            [[actions]]
            name = "b"
            on = ["up"]
            shell = "echo hi"
            timeout = "3s"
            "#,
        );
        config.validate().expect("valid");
        assert_eq!(config.interfaces, ["eth0", "eth1"]);
        assert_eq!(config.port, 9000);
        assert_eq!(config.max_nodes, 128);
        assert!(config.pass_heartbeats);
        assert_eq!(config.xdp_mode, XdpMode::Generic);
        assert_eq!(config.status_socket, Path::new("/tmp/hb.sock"));
        assert_eq!(config.state_file, Path::new("/tmp/hb-state.json"));
        assert_eq!(config.max_concurrent_actions, 4);
        assert_eq!(config.defaults.interval, Duration::from_secs(1));
        assert_eq!(config.defaults.timeout_multiplier, 5);
        assert_eq!(config.defaults.sweep_period, Duration::from_millis(50));
        assert_eq!(
            config.nodes[0],
            NodeConfig {
                id: 7,
                name: "db".into(),
                address: Some("2001:db8::1".parse().expect("ipv6")),
                interval: None,
                source: None,
            }
        );
        assert_eq!(
            config.nodes[1],
            NodeConfig {
                id: 8,
                name: "web".into(),
                address: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2))),
                interval: Some(Duration::from_millis(250)),
                source: None,
            }
        );
        assert_eq!(
            config.actions[0],
            ActionConfig {
                name: "a".into(),
                on: vec![Event::Down, Event::Left],
                run: ActionRun::Command(vec!["/bin/true".into(), "x".into()]),
                timeout: Duration::from_secs(10),
            }
        );
        assert_eq!(
            config.actions[1],
            ActionConfig {
                name: "b".into(),
                on: vec![Event::Up],
                run: ActionRun::Shell("echo hi".into()),
                timeout: Duration::from_secs(3),
            }
        );
    }

    #[test]
    fn example_parses_and_validates() {
        let config = parse(Config::example());
        config
            .validate()
            .unwrap_or_else(|e| panic!("example invalid: {e}"));
        assert_eq!(config.nodes.len(), 2);
        assert_eq!(config.actions.len(), 2);
        assert_eq!(config.state_file, Path::new("/var/lib/hb/state.json"));
        assert!(matches!(config.actions[0].run, ActionRun::Command(_)));
        assert!(matches!(config.actions[1].run, ActionRun::Shell(_)));
    }

    #[test]
    fn event_and_mode_names() {
        assert_eq!(Event::Up.to_string(), "up");
        assert_eq!(Event::Down.to_string(), "down");
        assert_eq!(Event::Left.to_string(), "left");
        for mode in [XdpMode::Auto, XdpMode::Native, XdpMode::Generic] {
            assert_eq!(mode.to_string().parse::<XdpMode>(), Ok(mode));
        }
        assert!("skb".parse::<XdpMode>().is_err());
    }

    #[test]
    fn unknown_field_names_field_and_file() {
        let err = parse_err(&format!("{BASE}prot = 1\n"));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert_mentions(&err, &["test.toml", "prot", "line 2"]);
        assert!(!err.to_string().ends_with('\n'), "{err:?}");

        let err = parse_err(&format!("{BASE}[defaults]\nintervall = \"1s\"\n"));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert_mentions(&err, &["intervall"]);

        let err = parse_err(&format!(
            "{BASE}[[nodes]]\nid = 1\nname = \"a\"\nadress = \"10.0.0.1\"\n"
        ));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert_mentions(&err, &["adress"]);

        let err = parse_err(&format!(
            "{BASE}[[actions]]\nname = \"a\"\non = [\"up\"]\nshell = \"x\"\ntimout = \"1s\"\n"
        ));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert_mentions(&err, &["timout"]);
    }

    #[test]
    fn bad_toml_and_bad_values_are_parse_errors() {
        for (text, needle) in [
            ("interfaces = [\"eth0\"\n", "line"),
            (
                "interfaces = [\"eth0\"]\n[defaults]\ninterval = \"2 parsecs\"\n",
                "interval",
            ),
            (
                "interfaces = [\"eth0\"]\n[defaults]\ninterval = 2\n",
                "interval",
            ),
            ("interfaces = [\"eth0\"]\nxdp_mode = \"skb\"\n", "xdp_mode"),
            ("interfaces = [\"eth0\"]\nport = 70000\n", "port"),
            (
                "interfaces = [\"eth0\"]\n[[nodes]]\nid = 1\nname = \"a\"\naddress = \"nope\"\n",
                "address",
            ),
            (
                "interfaces = [\"eth0\"]\n[[actions]]\nname = \"a\"\non = [\"sideways\"]\nshell = \"x\"\n",
                "sideways",
            ),
            ("interfaces = [\"eth0\"]\n[[nodes]]\nid = 1\n", "name"),
        ] {
            let err = parse_err(text);
            assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
            assert_mentions(&err, &["test.toml", needle]);
        }
    }

    #[test]
    fn no_interfaces() {
        let err = validate_err("");
        assert!(matches!(err, ConfigError::NoInterfaces), "{err:?}");
        assert_mentions(&err, &["`interfaces`", "--interface"]);
        let err = validate_err("interfaces = []\n");
        assert!(matches!(err, ConfigError::NoInterfaces), "{err:?}");
    }

    #[test]
    fn bad_and_duplicate_interface_names() {
        for name in ["", "../etc", "a b", "sixteen-chars-xx", ".."] {
            let err = validate_err(&format!("interfaces = [{name:?}]\n"));
            assert!(
                matches!(&err, ConfigError::InvalidInterfaceName { name: n } if n == name),
                "{err:?}"
            );
            assert_mentions(&err, &["`interfaces`"]);
        }
        let err = validate_err("interfaces = [\"eth0\", \"eth1\", \"eth0\"]\n");
        assert!(
            matches!(err, ConfigError::DuplicateInterface { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`interfaces`", "eth0"]);
    }

    #[test]
    fn interface_existence_is_checked_in_sys_class_net() {
        let dir = TempDir::new("ifaces");
        std::fs::create_dir(dir.0.join("veth0")).expect("mkdir veth0");
        let mut config = parse("interfaces = [\"veth0\"]\n");
        config
            .check_interfaces_exist_in(&dir.0)
            .expect("veth0 exists");
        config.interfaces.push("nosuch0".into());
        let err = config
            .check_interfaces_exist_in(&dir.0)
            .expect_err("nosuch0 does not exist");
        assert!(
            matches!(&err, ConfigError::UnknownInterface { name } if name == "nosuch0"),
            "{err:?}"
        );
        assert_mentions(&err, &["`interfaces`", "nosuch0"]);
        // A name that escapes the directory is never looked up.
        config.interfaces = vec![".".into()];
        assert!(config.check_interfaces_exist_in(&dir.0).is_err());
    }

    #[test]
    fn port_zero() {
        let err = validate_err(&format!("{BASE}port = 0\n"));
        assert!(matches!(err, ConfigError::PortZero), "{err:?}");
        assert_mentions(&err, &["`port`"]);
    }

    #[test]
    fn max_nodes_range() {
        for value in [0, MAX_NODES_LIMIT + 1] {
            let err = validate_err(&format!("{BASE}max_nodes = {value}\n"));
            assert!(
                matches!(err, ConfigError::MaxNodesOutOfRange { max_nodes } if max_nodes == value),
                "{err:?}"
            );
            assert_mentions(&err, &["`max_nodes`"]);
        }
        parse(&format!("{BASE}max_nodes = {MAX_NODES_LIMIT}\n"))
            .validate()
            .expect("the limit itself is allowed");
    }

    #[test]
    fn max_concurrent_actions_zero() {
        let err = validate_err(&format!("{BASE}max_concurrent_actions = 0\n"));
        assert!(
            matches!(err, ConfigError::MaxConcurrentActionsZero),
            "{err:?}"
        );
        assert_mentions(&err, &["`max_concurrent_actions`"]);
    }

    #[test]
    fn timeout_multiplier_below_two() {
        for value in [0, 1] {
            let err = validate_err(&format!("{BASE}[defaults]\ntimeout_multiplier = {value}\n"));
            assert!(
                matches!(err, ConfigError::TimeoutMultiplierTooSmall { multiplier } if multiplier == value),
                "{err:?}"
            );
            assert_mentions(&err, &["timeout_multiplier", ">= 2"]);
        }
        parse(&format!("{BASE}[defaults]\ntimeout_multiplier = 2\n"))
            .validate()
            .expect("2 is allowed");
    }

    #[test]
    fn interval_too_short_or_too_long() {
        for value in ["0s", "9ms"] {
            let err = validate_err(&format!(
                "{BASE}[defaults]\ninterval = \"{value}\"\nsweep_period = \"1ms\"\n"
            ));
            assert!(
                matches!(err, ConfigError::IntervalTooShort { .. }),
                "{err:?}"
            );
            assert_mentions(&err, &["`defaults.interval`"]);
        }
        parse(&format!(
            "{BASE}[defaults]\ninterval = \"10ms\"\nsweep_period = \"10ms\"\n"
        ))
        .validate()
        .expect("10ms is allowed");
        let err = validate_err(&format!("{BASE}[defaults]\ninterval = \"50days\"\n"));
        assert!(
            matches!(err, ConfigError::IntervalTooLong { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`defaults.interval`"]);
    }

    #[test]
    fn sweep_period_zero_or_longer_than_interval() {
        for value in ["0s", "3s"] {
            let err = validate_err(&format!("{BASE}[defaults]\nsweep_period = \"{value}\"\n"));
            assert!(
                matches!(err, ConfigError::SweepPeriodOutOfRange { .. }),
                "{err:?}"
            );
            assert_mentions(&err, &["`defaults.sweep_period`", "`defaults.interval`"]);
        }
        parse(&format!("{BASE}[defaults]\nsweep_period = \"2s\"\n"))
            .validate()
            .expect("sweep == interval is allowed");
    }

    fn node(id: u32, name: &str) -> String {
        format!("[[nodes]]\nid = {id}\nname = \"{name}\"\n")
    }

    #[test]
    fn empty_node_name() {
        let err = validate_err(&format!("{BASE}{}", node(3, "  ")));
        assert!(
            matches!(err, ConfigError::EmptyNodeName { id: 3 }),
            "{err:?}"
        );
        assert_mentions(&err, &["`name`", "3"]);
    }

    #[test]
    fn node_id_must_be_below_max_nodes() {
        let err = validate_err(&format!("{BASE}max_nodes = 10\n{}", node(10, "big")));
        assert!(
            matches!(err, ConfigError::NodeIdTooLarge { id: 10, .. }),
            "{err:?}"
        );
        assert_mentions(
            &err,
            &[
                "`id`",
                "`max_nodes`",
                "big",
                "raise max_nodes to at least 11",
            ],
        );
        parse(&format!("{BASE}max_nodes = 10\n{}", node(9, "ok")))
            .validate()
            .expect("id 9 < 10");
        // id + 1 does not overflow in the message.
        let err = validate_err(&format!("{BASE}{}", node(u32::MAX, "huge")));
        assert_mentions(&err, &["at least 4294967296"]);
    }

    #[test]
    fn duplicate_node_id_names_both_nodes() {
        let err = validate_err(&format!("{BASE}{}{}", node(5, "alpha"), node(5, "beta")));
        assert!(
            matches!(err, ConfigError::DuplicateNodeId { id: 5, .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`id`", "alpha", "beta"]);
    }

    #[test]
    fn duplicate_node_name() {
        let err = validate_err(&format!("{BASE}{}{}", node(1, "same"), node(2, "same")));
        assert!(
            matches!(
                err,
                ConfigError::DuplicateNodeName {
                    first_id: 1,
                    second_id: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_mentions(&err, &["`name`", "same"]);
    }

    #[test]
    fn node_interval_bounds() {
        let err = validate_err(&format!("{BASE}{}interval = \"5ms\"\n", node(1, "fast")));
        assert!(
            matches!(err, ConfigError::NodeIntervalTooShort { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`interval`", "fast"]);
        let err = validate_err(&format!("{BASE}{}interval = \"60days\"\n", node(1, "slow")));
        assert!(
            matches!(err, ConfigError::NodeIntervalTooLong { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`interval`", "slow"]);
    }

    fn action(name: &str, body: &str) -> String {
        format!("[[actions]]\nname = \"{name}\"\n{body}")
    }

    #[test]
    fn action_needs_exactly_one_of_command_and_shell() {
        let err = parse_err(&format!("{BASE}{}", action("a", "on = [\"up\"]\n")));
        assert!(
            matches!(err, ConfigError::ActionRunMissing { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`command`", "`shell`", "`a`"]);
        let err = parse_err(&format!(
            "{BASE}{}",
            action(
                "b",
                "on = [\"up\"]\ncommand = [\"/bin/true\"]\nshell = \"true\"\n"
            )
        ));
        assert!(matches!(err, ConfigError::ActionRunBoth { .. }), "{err:?}");
        assert_mentions(&err, &["`command`", "`shell`", "`b`"]);
    }

    #[test]
    fn empty_command_or_script() {
        for (body, field) in [
            ("command = []\n", "`command`"),
            ("command = [\"\"]\n", "`command`"),
            ("shell = \"  \"\n", "`shell`"),
        ] {
            let err = validate_err(&format!(
                "{BASE}{}",
                action("e", &format!("on = [\"up\"]\n{body}"))
            ));
            assert!(matches!(err, ConfigError::EmptyCommand { .. }), "{err:?}");
            assert_mentions(&err, &[field, "`e`"]);
        }
    }

    #[test]
    fn action_on_empty() {
        let err = validate_err(&format!(
            "{BASE}{}",
            action("quiet", "on = []\nshell = \"true\"\n")
        ));
        assert!(matches!(err, ConfigError::NoActionEvents { .. }), "{err:?}");
        assert_mentions(&err, &["`on`", "quiet"]);
        // `on` is required in the file.
        let err = parse_err(&format!("{BASE}{}", action("quiet", "shell = \"true\"\n")));
        assert_mentions(&err, &["on"]);
    }

    #[test]
    fn action_timeout_zero() {
        let err = validate_err(&format!(
            "{BASE}{}",
            action("t", "on = [\"up\"]\nshell = \"true\"\ntimeout = \"0s\"\n")
        ));
        assert!(
            matches!(err, ConfigError::ActionTimeoutZero { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`timeout`", "`t`"]);
    }

    #[test]
    fn empty_and_duplicate_action_names() {
        let body = "on = [\"up\"]\nshell = \"true\"\n";
        let err = validate_err(&format!("{BASE}{}", action("", body)));
        assert!(
            matches!(err, ConfigError::EmptyActionName { index: 1 }),
            "{err:?}"
        );
        assert_mentions(&err, &["`name`"]);
        let err = validate_err(&format!(
            "{BASE}{}{}",
            action("twice", body),
            action("twice", body)
        ));
        assert!(
            matches!(err, ConfigError::DuplicateActionName { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`name`", "twice"]);
    }

    #[test]
    fn overrides_win_over_the_file() {
        let dir = TempDir::new("overrides");
        let path = dir.0.join("hb.toml");
        std::fs::write(
            &path,
            r#"
            interfaces = ["eth0"]
            port = 1000
            max_nodes = 100
            xdp_mode = "native"
            status_socket = "/file.sock"
            state_file = "/file.json"
            [defaults]
            interval = "1s"
            timeout_multiplier = 4
            sweep_period = "200ms"
            "#,
        )
        .expect("write config");

        let unchanged = Config::load(&path, &Overrides::default()).expect("loads");
        assert_eq!(unchanged.interfaces, ["eth0"]);
        assert_eq!(unchanged.port, 1000);
        assert!(!unchanged.pass_heartbeats);

        let overrides = Overrides {
            interfaces: vec!["veth1".into(), "veth2".into()],
            port: Some(2000),
            interval: Some(Duration::from_millis(500)),
            timeout_multiplier: Some(6),
            sweep_period: Some(Duration::from_millis(20)),
            max_nodes: Some(300),
            datapath: Some(DatapathKind::Socket),
            xdp_mode: Some(XdpMode::Generic),
            pass_heartbeats: true,
            status_socket: Some("/cli.sock".into()),
            state_file: Some("/cli.json".into()),
        };
        let config = Config::load(&path, &overrides).expect("loads");
        assert_eq!(config.interfaces, ["veth1", "veth2"]);
        assert_eq!(config.port, 2000);
        assert_eq!(config.defaults.interval, Duration::from_millis(500));
        assert_eq!(config.defaults.timeout_multiplier, 6);
        assert_eq!(config.defaults.sweep_period, Duration::from_millis(20));
        assert_eq!(config.max_nodes, 300);
        assert_eq!(config.xdp_mode, XdpMode::Generic);
        assert!(config.pass_heartbeats);
        assert_eq!(config.status_socket, Path::new("/cli.sock"));
        assert_eq!(config.datapath, DatapathKind::Socket);
        assert_eq!(config.state_file, Path::new("/cli.json"));

        // Overrides are validated too.
        let bad = Overrides {
            timeout_multiplier: Some(1),
            ..Overrides::default()
        };
        let err = Config::load(&path, &bad).expect_err("multiplier 1 is invalid");
        assert!(
            matches!(err, ConfigError::TimeoutMultiplierTooSmall { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn interface_override_fills_an_empty_file_list() {
        let dir = TempDir::new("ifoverride");
        let path = dir.0.join("hb.toml");
        std::fs::write(&path, "port = 7000\n").expect("write config");
        let err = Config::load(&path, &Overrides::default()).expect_err("no interfaces");
        assert!(matches!(err, ConfigError::NoInterfaces), "{err:?}");
        let overrides = Overrides {
            interfaces: vec!["lo".into()],
            ..Overrides::default()
        };
        let config = Config::load(&path, &overrides).expect("interface from the CLI");
        assert_eq!(config.interfaces, ["lo"]);
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = TempDir::new("loaderr");
        let missing = dir.0.join("missing.toml");
        let err = Config::load(&missing, &Overrides::default()).expect_err("missing file");
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert_mentions(&err, &["missing.toml"]);

        let bad = dir.0.join("bad.toml");
        std::fs::write(&bad, "interfaces = [\"eth0\"]\nbogus = true\n").expect("write");
        let err = Config::load(&bad, &Overrides::default()).expect_err("unknown field");
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert_mentions(&err, &["bad.toml", "bogus"]);
    }

    #[test]
    fn auth_keys_and_the_unauthenticated_default() {
        use hb_common::admission::Unauthenticated;
        let none = parse(BASE);
        assert_eq!(none.auth, AuthConfig::default());
        assert_eq!(none.auth.unauthenticated(), Unauthenticated::Accept);
        let keyed = parse(&format!("{BASE}[auth]\nkeys = [\"/etc/hb/a.key\"]\n"));
        keyed.validate().expect("one key");
        assert_eq!(keyed.auth.keys, vec![PathBuf::from("/etc/hb/a.key")]);
        assert_eq!(
            keyed.auth.unauthenticated(),
            Unauthenticated::Refuse,
            "refused by default once a key is configured"
        );
        let migrating = parse(&format!(
            "{BASE}[auth]\nkeys = [\"/a\", \"/b\"]\naccept_unauthenticated = true\n"
        ));
        migrating.validate().expect("two keys");
        assert_eq!(migrating.auth.unauthenticated(), Unauthenticated::Accept);

        let err = validate_err(&format!("{BASE}[auth]\nkeys = [\"/a\", \"/b\", \"/c\"]\n"));
        assert_mentions(&err, &["`auth.keys` lists 3", "at most 2"]);
        let err = validate_err(&format!("{BASE}[auth]\naccept_unauthenticated = false\n"));
        assert_mentions(&err, &["auth.accept_unauthenticated", "hb keygen"]);
        let err = parse_err(&format!("{BASE}[auth]\nkey = \"/a\"\n"));
        assert_mentions(&err, &["key"]);
    }

    #[test]
    fn detector_section_and_its_mistakes() {
        let config = parse(BASE);
        assert_eq!(config.detector, DetectorConfig::default());
        assert_eq!(config.detector.kind, DetectorKind::Timeout);
        let phi = parse(&format!(
            "{BASE}[detector]\nkind = \"phi\"\nphi_threshold = 10.0\nmin_std_dev = \"20ms\"\n\
             acceptable_pause = \"300ms\"\nstall_threshold = \"2s\"\n"
        ));
        phi.validate().expect("a valid detector section");
        assert_eq!(phi.detector.kind, DetectorKind::Phi);
        assert_eq!(phi.detector.phi_threshold, 10.0);
        assert_eq!(phi.detector.min_std_dev, Duration::from_millis(20));
        assert_eq!(
            phi.detector.acceptable_pause,
            Some(Duration::from_millis(300))
        );
        assert_eq!(phi.detector.stall_threshold, Duration::from_secs(2));
        for (body, needle) in [
            ("phi_threshold = 0.0", "`detector.phi_threshold` is 0"),
            ("phi_threshold = -3.0", "`detector.phi_threshold` is -3"),
            ("min_std_dev = \"0s\"", "`detector.min_std_dev` is zero"),
            (
                "stall_threshold = \"0s\"",
                "`detector.stall_threshold` is zero",
            ),
        ] {
            let err = validate_err(&format!("{BASE}[detector]\n{body}\n"));
            assert_mentions(&err, &[needle]);
        }
        let err = parse_err(&format!("{BASE}[detector]\nkind = \"gossip\"\n"));
        assert_mentions(&err, &["gossip"]);
    }

    #[test]
    fn sources_pin_nodes_and_ranges() {
        let config = parse(&format!(
            "{BASE}[[nodes]]\nid = 1\nname = \"a\"\nsource = \"fd00::7\"\n\
             [[node_ranges]]\nfirst_id = 10\ncount = 2\nname_prefix = \"n-\"\n\
             first_source = \"198.18.0.255\"\n"
        ));
        config.validate().expect("valid sources");
        assert_eq!(config.nodes[0].source, Some("fd00::7".parse().unwrap()));
        assert_eq!(
            config.node_ranges[0].source_of(11),
            Some("198.18.1.0".parse().unwrap())
        );
        let err = validate_err(&format!(
            "{BASE}[[node_ranges]]\nfirst_id = 0\ncount = 3\nname_prefix = \"n-\"\n\
             first_source = \"255.255.255.254\"\n"
        ));
        assert_mentions(
            &err,
            &["`first_source` 255.255.255.254", "start the range lower"],
        );
        let err = parse_err(&format!(
            "{BASE}[[nodes]]\nid = 1\nname = \"a\"\nsource = \"not-an-address\"\n"
        ));
        assert_mentions(&err, &["source"]);
    }

    #[test]
    fn node_ranges_parse_and_every_mistake_is_named() {
        let ok = parse(&format!(
            "{BASE}max_nodes = 3000\n[[nodes]]\nid = 5\nname = \"db\"\n\
             [[node_ranges]]\nfirst_id = 1000\ncount = 2000\nname_prefix = \"n-\"\ninterval = \"1s\"\n"
        ));
        ok.validate().expect("a valid range");
        assert_eq!(ok.node_ranges[0].ids(), 1000..3000);
        assert_eq!(ok.node_ranges[0].name_of(1234), "n-1234");
        assert_eq!(ok.node_ranges[0].interval, Some(Duration::from_secs(1)));

        let range = |first: u32, count: u32, prefix: &str| {
            format!(
                "[[node_ranges]]\nfirst_id = {first}\ncount = {count}\nname_prefix = \"{prefix}\"\n"
            )
        };
        for (extra, needle) in [
            (range(0, 0, "a-"), "`count` is 0"),
            (
                range(60_000, 10_000, "a-"),
                "raise max_nodes to at least 70000",
            ),
            (range(0, 10, ""), "`name_prefix` is empty"),
            (
                format!("[[nodes]]\nid = 3\nname = \"x\"\n{}", range(0, 10, "a-")),
                "already node `x`",
            ),
            (
                format!("[[nodes]]\nid = 30\nname = \"a-5\"\n{}", range(0, 10, "a-")),
                "names a node `a-5`",
            ),
            (
                format!("{}{}", range(0, 10, "a-"), range(5, 10, "b-")),
                "overlap the range `a-`",
            ),
            (
                format!("{}{}", range(0, 10, "a-"), range(20, 10, "a-b")),
                "starts with the prefix `a-`",
            ),
        ] {
            let err = validate_err(&format!("{BASE}{extra}"));
            assert!(matches!(err, ConfigError::NodeRange { .. }), "{err:?}");
            assert!(
                err.to_string().contains(needle),
                "{err} should contain {needle}"
            );
        }
    }

    #[test]
    fn event_log_and_datapath_are_read() {
        let config = parse(&format!(
            "{BASE}event_log = \"/tmp/e.jsonl\"\ndatapath = \"socket\"\n"
        ));
        assert_eq!(config.event_log.as_deref(), Some(Path::new("/tmp/e.jsonl")));
        assert_eq!(config.datapath, DatapathKind::Socket);
        assert_eq!(parse(BASE).datapath, DatapathKind::Xdp);
        assert!(matches!(
            parse_err(&format!("{BASE}datapath = \"dpdk\"\n")),
            ConfigError::Parse { .. }
        ));
    }
}
