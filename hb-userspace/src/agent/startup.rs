//! What the agent does once, before its loop: warn about configurations
//! that work but probably are not what was meant, say how heartbeats are
//! authenticated, and set up the node table and the detector, restoring what
//! the state file remembers.

use std::collections::HashMap;

use hb_common::{
    admission::Unauthenticated,
    table::{NodeRecord, SLOT_AUTHENTICATED, intervals},
};

use crate::{
    clock::monotonic_ns,
    config::{Config, DatapathKind, XdpMode},
    datapath::table::NodeTable,
    detect::detector::{Detector, DetectorSettings, WatchedNode},
    keys::Keyring,
    nodes::NodeDirectory,
    sinks::state_file::{self, SavedNode, StateFileError},
};

/// Warnings about a configuration that runs but may not do what was meant.
pub fn warn_about(config: &Config, nodes: &NodeDirectory<'_>) {
    if nodes.is_empty() {
        tracing::warn!(
            "no [[nodes]] or [[node_ranges]] configured: every heartbeat will be counted as \
             unknown_node and no node will ever be watched"
        );
    }
    if config.datapath == DatapathKind::Socket
        && (config.pass_heartbeats || config.xdp_mode != XdpMode::Auto)
    {
        tracing::warn!(
            "pass_heartbeats and xdp_mode apply to the XDP datapath only; with datapath = \"socket\" \
             they have no effect"
        );
    }
}

/// Says, once at start, how heartbeats are authenticated.
pub fn log_auth_policy(keyring: &Keyring, unauthenticated: Unauthenticated) {
    match (keyring.is_empty(), unauthenticated) {
        (true, _) => tracing::warn!(
            "heartbeats are not authenticated: anyone who can send UDP to the monitor can keep a \
             dead node up or make a live one leave; add key files to [auth] keys (`hb keygen`)"
        ),
        (false, Unauthenticated::Accept) => tracing::warn!(
            key_ids = ?keyring.ids(),
            "heartbeats without a tag are accepted too (auth.accept_unauthenticated), from nodes \
             that have never sent an authenticated one: set it to false once every sender signs"
        ),
        (false, Unauthenticated::Refuse) => tracing::info!(
            key_ids = ?keyring.ids(),
            "heartbeats are authenticated; those without a valid tag are refused"
        ),
    }
}

/// Marks every configured node in the table, pinning it to its source
/// address if it has one, restoring what the state file says about it, and
/// builds the detector.
pub fn watch_nodes(
    settings: DetectorSettings,
    nodes: &NodeDirectory<'_>,
    saved: &HashMap<u32, SavedNode>,
    keyring: &Keyring,
    table: &NodeTable,
) -> Detector {
    let watched: Vec<_> = nodes
        .intervals()
        .map(|(node_id, interval)| WatchedNode {
            node_id,
            interval_ns: interval.map(|d| d.as_nanos() as u64),
        })
        .collect();
    let mut detector = Detector::new(settings, table.len(), &watched, monotonic_ns());
    for id in nodes.ids() {
        let mut record = NodeRecord::default();
        if let Some(saved) = saved.get(&id) {
            restore(&mut record, saved, keyring);
            detector.restore(
                id,
                saved.state,
                saved.interval_ms,
                intervals::word(saved.interval_mean_us, saved.interval_mad_us),
            );
        }
        record.pin_to(nodes.source_of(id));
        table.configure(id, record);
        if let Some(saved) = saved.get(&id) {
            let word = intervals::word(saved.interval_mean_us, saved.interval_mad_us);
            table.intervals.set(id, word);
        }
    }
    let restored = nodes.ids().filter(|id| saved.contains_key(id)).count();
    if restored > 0 {
        tracing::info!(
            restored,
            "restored node states from the state file; nodes that were up get a full timeout to be heard"
        );
    }
    detector
}

/// The state file's nodes by id (none on a first start).
pub fn saved_nodes(config: &Config) -> Result<HashMap<u32, SavedNode>, StateFileError> {
    Ok(state_file::load(&config.state_file)?
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n.id, n))
        .collect())
}

/// What a node's record keeps of its saved state: where its heartbeats stood
/// (so replays stay refused) and whether it signs.
fn restore(record: &mut NodeRecord, saved: &SavedNode, keyring: &Keyring) {
    record.heartbeats = saved.heartbeats;
    record.incarnation = saved.incarnation;
    record.sequence = saved.sequence;
    record.interval_ms = saved.interval_ms;
    // Without keys nothing can be authenticated: forget the flag rather
    // than refuse the node for ever.
    if saved.authenticated && !keyring.is_empty() {
        record.slot_flags |= SLOT_AUTHENTICATED;
    }
}
