//! The configuration as the operator writes it: [`Config`] and one type per
//! section (`[defaults]`, `[[nodes]]`, `[[node_ranges]]`, `[detector]`,
//! `[brake]`, `[auth]`, `[http]`), with their defaults. The actions' types live with
//! the actions ([`crate::sinks::actions`]).

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    datapath::{DatapathKind, xdp::XdpMode},
    nodes::{NodeConfig, NodeRange},
    sinks::actions::ActionConfig,
};

/// Default `max_nodes`.
pub const DEFAULT_MAX_NODES: u32 = 65_536;
/// Default `status_socket`.
pub const DEFAULT_STATUS_SOCKET: &str = "/run/hb/hb.sock";
/// Default `state_file`.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/hb/state";
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
    /// The name the XDP datapath is pinned under and locked by.
    pub instance: String,
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
    pub http: HttpConfig,
    /// Several monitors agreeing through etcd (`[group]`); none: this
    /// monitor decides alone.
    pub group: Option<super::group::GroupConfig>,
    /// Settings shared by every probe (`[probe]`).
    pub probe: crate::probe::spec::ProbeConfig,
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
            instance: crate::datapath::pins::DEFAULT_INSTANCE.to_owned(),
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
            http: HttpConfig::default(),
            group: None,
            probe: crate::probe::spec::ProbeConfig::default(),
            loaded_from: None,
        }
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
    /// The longest the sweep thread sleeps: it wakes at the earliest
    /// deadline of any node, and at least this often (to see heartbeats of
    /// nodes coming back, first heartbeats and leaves).
    #[serde(with = "humantime_serde")]
    pub sweep_period: Duration,
    /// `SCHED_FIFO` priority of the sweep thread (1..=99, checked by
    /// validation; an integer here so that any out-of-range value gets the
    /// message that names the range). `None`: normal scheduling.
    pub sweep_priority: Option<i64>,
    /// Lock the agent's memory (`mlockall`) so that no page fault stalls a
    /// sweep.
    pub lock_memory: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            timeout_multiplier: DEFAULT_TIMEOUT_MULTIPLIER,
            sweep_period: DEFAULT_SWEEP_PERIOD,
            sweep_priority: None,
            lock_memory: false,
        }
    }
}

impl Defaults {
    /// The sweep thread's `SCHED_FIFO` priority, if one is configured and
    /// valid (validation refuses any other).
    pub fn sweep_priority(&self) -> Option<u8> {
        self.sweep_priority
            .and_then(|p| u8::try_from(p).ok())
            .filter(|p| SWEEP_PRIORITY.contains(p))
    }
}

/// The `SCHED_FIFO` priorities `defaults.sweep_priority` may take.
pub const SWEEP_PRIORITY: std::ops::RangeInclusive<u8> = 1..=99;

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

/// Default `http.listen`: loopback only, so that the API is on without
/// being reachable from the network (and needs no token).
pub const DEFAULT_HTTP_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7980));

/// The HTTP API and `/metrics` (`[http]`). Parsed from the file by
/// `config::http`, which also checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where the server listens; `None` (`listen = ""`): no server.
    pub listen: Option<SocketAddr>,
    /// A file holding the bearer token requests must send
    /// ([`crate::keys::read_token`] reads it). Required off loopback.
    pub token_file: Option<PathBuf>,
    /// `hb_node_up{node}` and `hb_node_last_heard_seconds{node}` are
    /// exposed while the cluster has at most this many nodes; 0: never.
    /// Off by default: a series per node does not scale to large clusters.
    pub per_node_metrics: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: Some(DEFAULT_HTTP_LISTEN),
            token_file: None,
            per_node_metrics: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::actions::Event;

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
}
