//! What the agent does once, before its loop: warn about configurations
//! that work but probably are not what was meant, say how heartbeats are
//! authenticated, and set up the node table, the detector and the brake,
//! restoring what the state file and its journal remember (or, when the
//! datapath outlived the previous run, what the table itself kept).

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use hb_common::{
    admission::Unauthenticated,
    table::{NodeRecord, SLOT_AUTHENTICATED},
};

use crate::{
    clock::{self, monotonic_ns},
    config::{Config, DEFAULT_STATE_FILE, DatapathKind, XdpMode},
    datapath::table::NodeTable,
    detect::{
        brake::{Brake, BrakeSettings},
        detector::{Detector, DetectorSettings, WatchedNode},
        sweep::Sweep,
    },
    group::Opinion,
    keys::Keyring,
    nodes::NodeDirectory,
    sinks::{
        actions::ActionConfig,
        state_file::{self, SavedNode, SavedState, StateFileError, journal},
    },
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

/// What a previous run of the agent left: its last snapshot with the
/// journal's newer entries applied, carried into this boot.
///
/// `actions`: those configured now, which decide what the journal's
/// transitions run.
pub fn remembered(
    state_file: &Path,
    actions: &[ActionConfig],
) -> Result<SavedState, StateFileError> {
    let mut state = match state_file::load(state_file)? {
        Some(state) => state,
        None => load_legacy_default(state_file)?.unwrap_or_default(),
    };
    let entries = journal::read(state_file).map_err(|cause| StateFileError::Journal {
        path: journal::paths(state_file).0,
        cause,
    })?;
    let replayed = entries.iter().filter(|e| e.seq > state.journal_seq).count();
    let subscribed = |event| {
        actions
            .iter()
            .filter(|a| a.on.contains(&event))
            .map(|a| a.name.clone())
            .collect()
    };
    journal::replay(&mut state, &entries, &subscribed);
    if replayed > 0 {
        tracing::info!(
            replayed,
            "replayed state changes the last snapshot missed (the agent was stopped abruptly)"
        );
    }
    state.carry_over(clock::boot_id(), monotonic_ns(), clock::unix_ns());
    Ok(state)
}

/// With the default `state_file` and no file there yet: the file agents
/// before the binary format wrote by default, if there is one.
fn load_legacy_default(state_file: &Path) -> Result<Option<SavedState>, StateFileError> {
    let legacy = Path::new(state_file::LEGACY_DEFAULT_PATH);
    if state_file != Path::new(DEFAULT_STATE_FILE) || !legacy.exists() {
        return Ok(None);
    }
    let state = state_file::load(legacy)?;
    tracing::info!(
        from = %legacy.display(),
        to = %state_file.display(),
        "node states read from where earlier agents saved them by default; they are saved in \
         the new default place from now on, and the old file can be removed"
    );
    Ok(state)
}

/// What the node table kept of the previous run of the agent.
#[derive(Clone, Copy, Debug)]
pub struct Continuity {
    /// The table outlived it (the XDP datapath's pinned maps).
    pub table_kept: bool,
    /// And heartbeats were recorded on every configured interface meanwhile.
    pub recorded_throughout: bool,
}

/// Marks every configured node in the table, pinning it to its source
/// address if it has one, restores what the previous run knew about it, and
/// builds the detector and the brake.
///
/// What the table kept of the previous run (see [`Continuity`]): when it
/// outlived it, what it holds is newer than the state file and is kept;
/// when it also recorded throughout, its arrival times are trusted: a node
/// that fell silent meanwhile is convicted as soon as its timeout has
/// passed. Otherwise the table is filled from the state file, and every
/// node gets a full timeout from this start to be heard.
pub fn restore(
    settings: (DetectorSettings, BrakeSettings),
    nodes: &NodeDirectory<'_>,
    state: &SavedState,
    keyring: &Keyring,
    table: &NodeTable,
    continuity: Continuity,
) -> Sweep {
    let adopted = continuity.table_kept;
    let now = monotonic_ns();
    let watched: Vec<_> = nodes
        .intervals()
        .map(|(node_id, interval)| WatchedNode {
            node_id,
            interval_ns: interval.map(|d| d.as_nanos() as u64),
        })
        .collect();
    let mut detector = Detector::new(settings.0, table.len(), &watched, now);
    detector.set_probed(nodes.probed_ids());
    if adopted {
        forget_unconfigured(nodes, table);
    }
    let saved: HashMap<u32, &SavedNode> = state.nodes.iter().map(|n| (n.id, n)).collect();
    for id in nodes.ids() {
        let saved = saved.get(&id).copied();
        if adopted && table.records.get(id).is_configured() {
            table.update(id, |record| {
                record.pin_to(nodes.source_of(id));
                if keyring.is_empty() {
                    record.slot_flags &= !SLOT_AUTHENTICATED;
                }
            });
        } else {
            let mut record = NodeRecord::default();
            if let Some(saved) = saved {
                restore_record(&mut record, saved, keyring);
            }
            record.pin_to(nodes.source_of(id));
            table.configure(id, record);
            if let Some(saved) = saved {
                table.intervals.set(id, saved.interval_word);
                if !adopted {
                    table.seen.set(id, saved.seen_word);
                }
            }
        }
        if let Some(saved) = saved {
            let record = table.records.get(id);
            detector.restore(id, saved.state, record.interval_ms, table.intervals.get(id));
        }
    }
    detector.restore_flaps(state.flaps.iter().cloned());
    detector.set_swept_until(state.swept_until_ns);
    let restored = nodes.ids().filter(|id| saved.contains_key(id)).count();
    if continuity.recorded_throughout {
        detector.trust_arrivals();
        tracing::info!(
            restored,
            "the datapath recorded heartbeats while no agent ran: node states continue from the \
             arrival times it kept"
        );
    } else if adopted {
        tracing::info!(
            restored,
            "the node table outlived the previous agent, but not every interface stayed \
             attached: nodes that were up get a full timeout to be heard"
        );
    } else if restored > 0 {
        tracing::info!(
            restored,
            "restored node states from the state file; nodes that were up get a full timeout to be \
             heard"
        );
    }
    let mut brake = Brake::new(settings.1);
    brake.restore(state.brake.clone(), now);
    Sweep::new(detector, brake)
}

/// This monitor's opinions for its group at start: the nodes it restored
/// down (or flapping) whose actions its brake does not hold, and those that
/// left.
pub fn opinions(
    nodes: &NodeDirectory<'_>,
    detector: &Detector,
    brake: &Brake,
) -> Vec<(u32, Opinion)> {
    nodes
        .ids()
        .filter_map(|id| {
            let opinion = Opinion::of_state(detector.state(id))?;
            let held = opinion == Opinion::Down && brake.is_held(id);
            (opinion != Opinion::Up && !held).then_some((id, opinion))
        })
        .collect()
}

/// The longest silence any configured node is allowed: how long a monitor
/// that just started listens before it votes in its group (by then it has
/// heard every live node).
pub fn longest_timeout(config: &Config, nodes: &NodeDirectory<'_>) -> std::time::Duration {
    let longest = nodes
        .intervals()
        .filter_map(|(_, interval)| interval)
        .max()
        .unwrap_or_default()
        .max(config.defaults.interval);
    longest * config.defaults.timeout_multiplier
}

/// In a table that outlived the previous run, slots of nodes no longer
/// configured stop being recorded.
fn forget_unconfigured(nodes: &NodeDirectory<'_>, table: &NodeTable) {
    let configured: HashSet<u32> = nodes.ids().collect();
    let mut forgotten = 0;
    for id in 0..table.len() {
        if table.records.get(id).is_configured() && !configured.contains(&id) {
            table.unconfigure(id);
            forgotten += 1;
        }
    }
    if forgotten > 0 {
        tracing::info!(
            forgotten,
            "nodes no longer configured are no longer recorded"
        );
    }
}

/// What a node's record keeps of its saved state: where its heartbeats stood
/// (so replays stay refused), where they came from, and whether it signs.
fn restore_record(record: &mut NodeRecord, saved: &SavedNode, keyring: &Keyring) {
    record.heartbeats = saved.heartbeats;
    record.incarnation = saved.incarnation;
    record.sequence = saved.sequence;
    record.interval_ms = saved.interval_ms;
    record.src_addr = saved.src_addr;
    record.src_port = saved.src_port;
    // Without keys nothing can be authenticated: forget the flag rather
    // than refuse the node for ever.
    if saved.authenticated && !keyring.is_empty() {
        record.slot_flags |= SLOT_AUTHENTICATED;
    }
}
