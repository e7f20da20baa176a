//! [`ConfigError`]: what can be wrong with a configuration, each message
//! naming the field and the fix.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{MAX_INTERVAL, MAX_NODES_LIMIT, MAX_PER_NODE_METRICS, MIN_INTERVAL};

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
    #[error(
        "`http.listen` is {value:?}: give an IP address and a port, e.g. \"127.0.0.1:7980\" or \"[::1]:7980\" (host names are not resolved), or \"\" to turn the HTTP API off"
    )]
    HttpListen { value: String },
    #[error(
        "`http.listen` is \"{listen}\": port 0 would be a random port no client knows: give a port, e.g. \"127.0.0.1:7980\", or \"\" to turn the HTTP API off"
    )]
    HttpListenPortZero { listen: SocketAddr },
    #[error(
        "`http.listen` is \"{listen}\", not a loopback address, and `http.token_file` is not set: the HTTP API would be reachable from the network without authentication: set http.token_file to a file holding a random token (e.g. `head -c 32 /dev/urandom | base64 > /etc/hb/http.token; chmod 600 /etc/hb/http.token`) or listen on 127.0.0.1"
    )]
    HttpTokenRequired { listen: SocketAddr },
    #[error(
        "`http.token_file` is empty: give the path of the file holding the token, e.g. token_file = \"/etc/hb/http.token\", or remove the setting"
    )]
    HttpTokenFileEmpty,
    #[error(
        "`http.per_node_metrics` is {value}: set it to at most {MAX_PER_NODE_METRICS}, or 0: every node adds series to each scrape, so a large cluster would flood Prometheus (watch hb_nodes{{state}} instead)"
    )]
    PerNodeMetricsTooLarge { value: u32 },
}
