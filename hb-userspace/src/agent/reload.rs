//! A full reload (SIGHUP, `systemctl reload`): the configuration file is read
//! again, with the command line's overrides, and compared with the running
//! one ([`reload_plan`]). A change that needs a restart (the port, the
//! table's size, the datapath, the interfaces, ...) refuses
//! the whole reload; so does anything invalid or unreadable: the key files,
//! the token file, the event log, the detector's settings. Everything is
//! read and checked before anything changes, so a refused reload changes
//! nothing, and says why.
//!
//! What a reload applies: nodes and ranges added (watched from now on,
//! unseen until heard) or removed (forgotten, no event), nodes whose
//! address, interval or source changed, the actions, the detector's and the
//! brake's settings, the keys, the HTTP token and address (bound before the
//! old one is let go), the event log. Node states,
//! sequence numbers and interval estimates of the nodes that stay are kept,
//! and the XDP program stays attached. Every change is logged, and the sweep
//! thread sweeps at once with it (a new `sweep_period` bounds its sleeps
//! from then on). Restart-only: `defaults.sweep_priority` and
//! `defaults.lock_memory`, applied once at start.

use std::sync::Arc;

use hb_common::{admission::Unauthenticated, table::NodeRecord};
use tokio::net::TcpListener;

use super::{Agent, http};
use crate::{
    config::{Config, ReloadPlan, reload_plan},
    datapath::table::NodeTable,
    detect::{detector::WatchedNode, sweep::Sweep},
    keys::{self, HttpToken, Keyring},
    nodes::NodeDirectory,
    probe::Prober,
    sinks::{actions::webhook, event_log::EventLog},
};

/// What a reload installs, all of it read and checked first.
struct Prepared {
    config: Config,
    plan: ReloadPlan,
    keyring: Keyring,
    token: Option<HttpToken>,
    events: Option<EventLog>,
    /// With `http_listen`: the new address, already bound (or none: off).
    listener: Option<TcpListener>,
}

/// Reloads the configuration, or logs why not and changes nothing.
pub(super) fn reload(agent: &mut Agent) {
    let prepared = match prepare(agent) {
        Ok(prepared) => prepared,
        Err(why) => {
            tracing::error!("SIGHUP: {why}; the running configuration stays");
            return;
        }
    };
    if let Err(e) = agent
        .shared
        .datapath_mut()
        .set_keys(&prepared.keyring.slots())
    {
        tracing::error!(
            "SIGHUP: installing the keys: {:#}; the running configuration stays",
            anyhow::Error::from(e)
        );
        return;
    }
    apply(agent, prepared);
}

/// Reads and checks everything the reload needs.
fn prepare(agent: &Agent) -> Result<Prepared, String> {
    let path = agent
        .config
        .loaded_from
        .as_deref()
        .ok_or("there is no configuration file to reload")?;
    let config = Config::load(path, &agent.overrides).map_err(|e| e.to_string())?;
    let plan = reload_plan(&agent.config, &config).map_err(|refused| refused.to_string())?;
    let keyring = Keyring::load(&config.auth.keys).map_err(|e| e.to_string())?;
    if keyring.is_empty() && config.auth.unauthenticated() == Unauthenticated::Refuse {
        return Err("[auth] keys is now empty, which would refuse every heartbeat".to_owned());
    }
    config
        .detector_settings()
        .map_err(|e| format!("[detector]: {e}"))?;
    webhook::check_authorization_files(&config.actions).map_err(|e| e.to_string())?;
    let token = config
        .http
        .token_file
        .as_deref()
        .map(keys::read_token)
        .transpose()
        .map_err(|e| e.to_string())?;
    let listener = match config.http.listen {
        Some(address) if plan.http_listen => {
            Some(http::bind(address).map_err(|e| format!("{e:#}"))?)
        }
        _ => None,
    };
    let events = if plan.event_log {
        let opened = EventLog::open(config.event_log.as_deref());
        Some(opened.map_err(|e| format!("opening the event log: {e}"))?)
    } else {
        None
    };
    Ok(Prepared {
        config,
        plan,
        keyring,
        token,
        events,
        listener,
    })
}

/// Installs what `prepare` read; nothing here can fail.
fn apply(agent: &mut Agent, prepared: Prepared) {
    let Prepared {
        config,
        plan,
        keyring,
        token,
        events,
        listener,
    } = prepared;
    let nodes = NodeDirectory::owned(&config.nodes, &config.node_ranges);
    let detector_settings = config.detector_settings().ok();
    let brake_settings = config.brake.settings();
    agent.shared.with("a reload", |core, datapath| {
        let (sweep, table) = (&mut core.sweep, datapath.table());
        forget_nodes(sweep, table, &plan.removed);
        watch_nodes(sweep, table, &nodes, &plan);
        if let Some(settings) = detector_settings {
            sweep.detector_mut().set_settings(settings);
        }
        if plan.probes {
            sweep.detector_mut().set_probed(nodes.probed_ids());
        }
        sweep.brake_mut().set_settings(brake_settings);
    });
    if let Some(group) = &agent.sinks.group {
        // A forgotten node is no longer this monitor's to hold down.
        group.opine(
            plan.removed
                .iter()
                .map(|&id| (id, crate::group::Opinion::Up))
                .collect(),
        );
    }
    agent.shared.set_period(config.defaults.sweep_period);
    agent.sweeper.wake();
    agent.sinks.actions.set_actions(config.actions.clone());
    if let Some(events) = events {
        agent.sinks.events = events;
    }
    *agent
        .token
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = token;
    if plan.http_listen {
        if let Some(old) = agent.http.take() {
            old.abort();
        }
        agent.http = listener
            .map(|listener| http::spawn(listener, Arc::clone(&agent.token), agent.ask.clone()));
    }
    if plan.per_node_metrics {
        tracing::warn!(
            "SIGHUP: [http] per_node_metrics changes at the next restart (the metrics \
             registry is built at start)"
        );
    }
    if plan.probes {
        replan_probes(agent, &config, &nodes);
    }
    agent.auth.key_ids = keyring.ids();
    agent.sorted_ids = nodes.sorted_ids();
    agent.nodes = nodes;
    agent.config = config;
    tracing::info!(
        key_ids = ?agent.auth.key_ids,
        "SIGHUP: configuration reloaded: {}",
        plan.describe().join("; ")
    );
}

/// Stops the prober and starts one for the new configuration, with the
/// same identifier and secret and each node's sequence where it was. If
/// that fails (say, a raw socket for a new address family), the running
/// configuration's prober starts again: no node stops being probed.
fn replan_probes(agent: &mut Agent, config: &Config, nodes: &NodeDirectory<'_>) {
    let sequences = agent.prober.take().map(Prober::stop).unwrap_or_default();
    let start = |config: &Config, nodes: &NodeDirectory<'_>| {
        Prober::start(
            &super::prober_settings(config, agent.probe_secret.clone()),
            nodes,
            agent.shared.datapath().table(),
            &sequences,
            Arc::clone(&agent.probe_stats),
        )
    };
    match start(config, nodes) {
        Ok(prober) => agent.prober = prober,
        Err(error) => {
            tracing::error!(
                "SIGHUP: probing the new configuration's nodes failed, the running one's probes go on: {error:#}"
            );
            agent.prober = start(&agent.config, &agent.nodes).unwrap_or_else(|error| {
                tracing::error!("probes stopped: {error:#}");
                None
            });
        }
    }
}

/// Removed nodes: the datapath stops recording them (they count as
/// `unknown_node` again) and the detector forgets them, without an event.
fn forget_nodes(sweep: &mut Sweep, table: &NodeTable, removed: &[u32]) {
    for &id in removed {
        table.unconfigure(id);
        sweep.detector_mut().unwatch(id);
    }
}

/// Added nodes are configured in the table (unseen until heard) and
/// watched; changed ones get their source pin and interval again, keeping
/// their record and seen word.
fn watch_nodes(sweep: &mut Sweep, table: &NodeTable, nodes: &NodeDirectory<'_>, plan: &ReloadPlan) {
    for &id in &plan.added {
        let mut record = NodeRecord::default();
        record.pin_to(nodes.source_of(id));
        table.configure(id, record);
    }
    for &id in &plan.changed {
        table.pin(id, nodes.source_of(id));
    }
    for &id in plan.added.iter().chain(&plan.changed) {
        let interval = nodes.get(id).and_then(|node| node.interval);
        sweep.detector_mut().watch(WatchedNode {
            node_id: id,
            interval_ns: interval.map(|d| d.as_nanos() as u64),
        });
    }
}
