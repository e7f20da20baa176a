//! The agent's configuration: the TOML file format (reference in the README),
//! command-line overrides, and validation with messages that say how to fix
//! the file.
//!
//! - `types`: [`Config`], what the operator writes, section by section,
//!   with the defaults.
//! - `load`: reading and parsing the file, and the command line's
//!   [`Overrides`].
//! - `validate`: the checks, and the limits they enforce.
//! - `http`: the `[http]` section's parsing and checks (where the API
//!   listens, and that it is never open to the network without a token).
//! - `error`: [`ConfigError`], whose messages say how to fix the file.
//! - `group`: the `[group]` section (etcd, names, TLS) and its checks.
//! - `probe`: the probe fields of nodes and ranges and the `[probe]`
//!   section: their checks, and the interval a probed node is judged by.
//! - `reload`: what a reload would change ([`reload_plan`]), or why it is
//!   refused.
//! - `example.toml`: the commented example, `hb example-config`.
//! - `settings`: the configuration converted into each layer's settings
//!   (datapath, detector), so that no layer reads [`Config`].
//!
//! What an action is ([`ActionConfig`], [`ActionRun`], [`Event`]) belongs to
//! the actions ([`crate::sinks::actions`]), and what receives heartbeats
//! ([`DatapathKind`], [`XdpMode`]) to the datapath; the configuration builds
//! them from the file and re-exports them here.

mod error;
mod group;
mod http;
mod load;
mod probe;
mod reload;
mod settings;
#[cfg(test)]
mod test_support;
mod types;
mod validate;

pub use self::{
    error::ConfigError,
    group::{DEFAULT_LEASE_TTL, DEFAULT_REQUEST_TIMEOUT, GroupConfig, MIN_LEASE_TTL},
    http::MAX_PER_NODE_METRICS,
    load::Overrides,
    reload::{NeedsRestart, ReloadPlan, ReloadRefused, reload_plan},
    types::{
        AuthConfig, BrakeConfig, Config, DEFAULT_ACTION_TIMEOUT, DEFAULT_FLAP_MAX,
        DEFAULT_FLAP_STABLE, DEFAULT_FLAP_WINDOW, DEFAULT_HTTP_LISTEN, DEFAULT_INTERVAL,
        DEFAULT_MAX_CONCURRENT_ACTIONS, DEFAULT_MAX_NODES, DEFAULT_RISE, DEFAULT_STALL_THRESHOLD,
        DEFAULT_STATE_FILE, DEFAULT_STATUS_SOCKET, DEFAULT_SUSPECT_PHI, DEFAULT_SWEEP_PERIOD,
        DEFAULT_TIMEOUT_MULTIPLIER, Defaults, DetectorConfig, DetectorKind, HttpConfig,
        SWEEP_PRIORITY,
    },
    validate::{MAX_INTERVAL, MAX_NODES_LIMIT, MIN_INTERVAL},
};
pub use crate::{
    datapath::{DatapathKind, xdp::XdpMode},
    nodes::{NodeConfig, NodeRange},
    sinks::actions::{ActionConfig, ActionRun, Event},
};

/// The commented example configuration, `hb example-config`.
const EXAMPLE: &str = include_str!("example.toml");

impl Config {
    /// A complete, commented example configuration.
    pub fn example() -> &'static str {
        EXAMPLE
    }
}
