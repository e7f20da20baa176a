//! What a reload (SIGHUP) would change: [`reload_plan`] compares the
//! running configuration with the one just loaded and either lists what
//! changed ([`ReloadPlan`]) or refuses the reload ([`ReloadRefused`]) when a
//! setting that only a restart can change differs, so that no reload
//! ignores a change without saying so.
//!
//! Needing a restart: what the XDP program or the datapath was built with
//! (`port`, `max_nodes`, `datapath`, `interfaces`, `xdp_mode`, `instance`,
//! `pass_heartbeats`, whether unauthenticated heartbeats are accepted),
//! what the agent bound or opened at start (`status_socket`, `state_file`),
//! and how the sweep thread was set up at start
//! (`defaults.sweep_priority`, `defaults.lock_memory`), and `[group]` (the
//! etcd session is opened at start).
//! Everything else is reloadable, `[http] listen` included (the agent binds
//! the new address before it lets go of the old one). Nodes are compared id
//! by id (a range counts by id), without a string per ranged node and
//! skipping ranges that did not change, so a million-node range costs
//! nothing when it stays as it was.

use std::{borrow::Cow, collections::HashMap, fmt, net::IpAddr, time::Duration};

use hb_common::admission::Unauthenticated;

use super::{AuthConfig, Config, HttpConfig, NodeConfig, NodeRange};

/// At most this many runs of ids are listed in a line of
/// [`ReloadPlan::describe`]; the rest are counted.
const MAX_LISTED_RUNS: usize = 8;

/// What a reload changes; the agent applies it and logs
/// [`ReloadPlan::describe`]. The id lists are ascending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Nodes to watch from now on.
    pub added: Vec<u32>,
    /// Nodes to forget (no event).
    pub removed: Vec<u32>,
    /// Nodes that stay but whose name, address, interval or pinned source
    /// changed: their interval and source must be set again.
    pub changed: Vec<u32>,
    /// `[[actions]]` or `max_concurrent_actions`.
    pub actions: bool,
    pub detector: bool,
    pub brake: bool,
    pub defaults: bool,
    /// The list of `auth.keys` files (the agent re-reads them on every
    /// reload anyway: a file may have been rewritten in place).
    pub keys: bool,
    /// `[http] token_file` (re-read on every reload, like the keys).
    pub token: bool,
    /// `[http] listen`: the API moves (or starts, or stops).
    pub http_listen: bool,
    pub per_node_metrics: bool,
    /// `event_log`: where events are appended.
    pub event_log: bool,
    /// Anything the prober is built from: `[probe]`, a node's or a range's
    /// probe fields, address or interval, or `defaults`: the prober is
    /// re-planned (keeping its identifier, secret and sequences).
    pub probes: bool,
}

/// A setting that differs and needs a restart, with both values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeedsRestart {
    /// The setting as written in the file, e.g. `port` or `http.listen`.
    pub setting: &'static str,
    pub running: String,
    pub new: String,
}

/// A reload refused as a whole: the running configuration stays.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ReloadRefused {
    /// Never empty.
    pub settings: Vec<NeedsRestart>,
}

impl fmt::Display for ReloadRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("reload refused, the running configuration stays: ")?;
        for (i, change) in self.settings.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "`{}` changed from {} to {}: restart the agent to change it",
                change.setting, change.running, change.new
            )?;
        }
        Ok(())
    }
}

/// What reloading from `running` to `new` (both validated) would change,
/// or why it is refused. Pure: looks at nothing but the two configs.
pub fn reload_plan(running: &Config, new: &Config) -> Result<ReloadPlan, ReloadRefused> {
    // Destructured in full so that a new field of Config does not compile
    // until it is sorted into needs-a-restart or reloadable here.
    let Config {
        // Need a restart: compared by `needs_restart`.
        interfaces: _,
        port: _,
        max_nodes: _,
        pass_heartbeats: _,
        datapath: _,
        xdp_mode: _,
        instance: _,
        status_socket: _,
        state_file: _,
        // Reloadable.
        max_concurrent_actions,
        defaults,
        nodes,
        node_ranges,
        event_log,
        auth: AuthConfig {
            keys,
            accept_unauthenticated: _,
        },
        detector,
        brake,
        actions,
        http:
            HttpConfig {
                listen,
                token_file,
                per_node_metrics,
            },
        // Needs a restart: the group's session is built at start.
        group: _,
        probe,
        loaded_from: _,
    } = new;
    let refused = needs_restart(running, new);
    if !refused.is_empty() {
        return Err(ReloadRefused { settings: refused });
    }
    let (added, removed, changed) =
        compare_nodes((&running.nodes, &running.node_ranges), (nodes, node_ranges));
    Ok(ReloadPlan {
        added,
        removed,
        changed,
        actions: running.actions != *actions
            || running.max_concurrent_actions != *max_concurrent_actions,
        detector: running.detector != *detector,
        brake: running.brake != *brake,
        defaults: running.defaults != *defaults,
        keys: running.auth.keys != *keys,
        token: running.http.token_file != *token_file,
        http_listen: running.http.listen != *listen,
        per_node_metrics: running.http.per_node_metrics != *per_node_metrics,
        event_log: running.event_log != *event_log,
        probes: {
            let (before, after) = (
                probed(&running.nodes, &running.node_ranges),
                probed(nodes, node_ranges),
            );
            (!before.is_empty() || !after.is_empty())
                && (before != after || running.probe != *probe || running.defaults != *defaults)
        },
    })
}

/// What the prober is built from, node by node and range by range.
fn probed<'a>(
    nodes: &'a [NodeConfig],
    ranges: &'a [NodeRange],
) -> Vec<(
    u32,
    Option<IpAddr>,
    Option<Duration>,
    crate::probe::spec::ProbeFields,
)> {
    let listed = nodes
        .iter()
        .map(|n| (n.id, n.address, n.interval, n.probe_fields()));
    let ranged = ranges
        .iter()
        .map(|r| (r.first_id, r.first_address, r.interval, r.probe_fields()));
    listed
        .chain(ranged)
        .filter(|p| p.3.probe.is_some())
        .collect()
}

/// The settings that differ and need a restart, in the file's order.
fn needs_restart(running: &Config, new: &Config) -> Vec<NeedsRestart> {
    let values = |c: &Config| -> [(&'static str, String); 11] {
        [
            ("interfaces", format!("{:?}", c.interfaces)),
            ("port", c.port.to_string()),
            ("max_nodes", c.max_nodes.to_string()),
            ("pass_heartbeats", c.pass_heartbeats.to_string()),
            ("datapath", c.datapath.as_str().to_owned()),
            ("xdp_mode", c.xdp_mode.to_string()),
            ("instance", c.instance.clone()),
            ("status_socket", c.status_socket.display().to_string()),
            ("state_file", c.state_file.display().to_string()),
            (
                "defaults.sweep_priority",
                c.defaults
                    .sweep_priority
                    .map_or("none".to_owned(), |p| p.to_string()),
            ),
            ("defaults.lock_memory", c.defaults.lock_memory.to_string()),
        ]
    };
    let mut settings: Vec<NeedsRestart> = values(running)
        .into_iter()
        .zip(values(new))
        .filter(|((_, running), (_, new))| running != new)
        .map(|((setting, running), (_, new))| NeedsRestart {
            setting,
            running,
            new,
        })
        .collect();
    if running.group != new.group {
        let describe = |g: &Option<super::GroupConfig>| match g {
            Some(g) => format!("{g:?}"),
            None => "none".to_owned(),
        };
        settings.push(NeedsRestart {
            setting: "group",
            running: describe(&running.group),
            new: describe(&new.group),
        });
    }
    // Compared as the datapath applies it, described as written.
    if running.auth.unauthenticated() != new.auth.unauthenticated() {
        settings.push(NeedsRestart {
            setting: "auth.accept_unauthenticated",
            running: unauthenticated(&running.auth),
            new: unauthenticated(&new.auth),
        });
    }
    settings
}

/// Whether unauthenticated heartbeats are accepted, as the datapath was
/// told: unset, that follows whether `auth.keys` is empty, so a change of
/// the keys alone can change it.
fn unauthenticated(auth: &AuthConfig) -> String {
    let accepted = auth.unauthenticated() == Unauthenticated::Accept;
    match auth.accept_unauthenticated {
        Some(_) => accepted.to_string(),
        None if auth.keys.is_empty() => format!("{accepted} (not set, and auth.keys is empty)"),
        None => format!("{accepted} (not set, and auth.keys is not empty)"),
    }
}

/// Where a node's settings come from: its `[[nodes]]` entry or its range.
#[derive(Clone, Copy)]
enum Spec<'a> {
    Listed(&'a NodeConfig),
    Ranged(&'a NodeRange),
}

impl<'a> Spec<'a> {
    fn interval(self) -> Option<Duration> {
        match self {
            Spec::Listed(node) => node.interval,
            Spec::Ranged(range) => range.interval,
        }
    }

    fn address(self) -> Option<IpAddr> {
        match self {
            Spec::Listed(node) => node.address,
            Spec::Ranged(_) => None,
        }
    }

    fn source(self, id: u32) -> Option<IpAddr> {
        match self {
            Spec::Listed(node) => node.source,
            Spec::Ranged(range) => range.source_of(id),
        }
    }

    fn name(self, id: u32) -> Cow<'a, str> {
        match self {
            Spec::Listed(node) => Cow::Borrowed(node.name.as_str()),
            Spec::Ranged(range) => Cow::Owned(range.name_of(id)),
        }
    }

    /// Whether node `id` is configured the same way by both.
    fn same_as(self, other: Spec<'_>, id: u32) -> bool {
        let names_equal = match (self, other) {
            (Spec::Listed(a), Spec::Listed(b)) => a.name == b.name,
            // Same id: the names are equal exactly when the prefixes are.
            (Spec::Ranged(a), Spec::Ranged(b)) => a.name_prefix == b.name_prefix,
            _ => self.name(id) == other.name(id),
        };
        names_equal
            && self.interval() == other.interval()
            && self.address() == other.address()
            && self.source(id) == other.source(id)
    }
}

type Nodes<'a> = (&'a [NodeConfig], &'a [NodeRange]);

/// Added, removed and changed node ids, each ascending. Ranges found
/// unchanged in both (same first id, same everything) are skipped: a
/// validated config's ids are unique, so none of their ids is elsewhere.
fn compare_nodes(running: Nodes<'_>, new: Nodes<'_>) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let (running_ranges, new_ranges) = (by_first(running.1), by_first(new.1));
    let mut before: HashMap<u32, Spec<'_>> = specs(running, &new_ranges).collect();
    let (mut added, mut changed) = (Vec::new(), Vec::new());
    for (id, spec) in specs(new, &running_ranges) {
        match before.remove(&id) {
            Some(old) if !old.same_as(spec, id) => changed.push(id),
            Some(_) => {}
            None => added.push(id),
        }
    }
    let mut removed: Vec<u32> = before.into_keys().collect();
    for ids in [&mut added, &mut removed, &mut changed] {
        ids.sort_unstable();
    }
    (added, removed, changed)
}

fn by_first(ranges: &[NodeRange]) -> HashMap<u32, &NodeRange> {
    ranges.iter().map(|range| (range.first_id, range)).collect()
}

/// Every node of `nodes` with where its settings come from, leaving out
/// the ranges that `other` has unchanged.
fn specs<'a>(
    (listed, ranges): Nodes<'a>,
    other: &'a HashMap<u32, &'a NodeRange>,
) -> impl Iterator<Item = (u32, Spec<'a>)> + 'a {
    let listed = listed.iter().map(|node| (node.id, Spec::Listed(node)));
    let ranged = ranges
        .iter()
        .filter(move |range| other.get(&range.first_id).copied() != Some(*range))
        .flat_map(|range| range.ids().map(move |id| (id, Spec::Ranged(range))));
    listed.chain(ranged)
}

impl ReloadPlan {
    /// Whether the reload changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == ReloadPlan::default()
    }

    /// One line per change for the log, e.g. "2 nodes added (ids 7, 8)",
    /// "actions changed"; "nothing changed" when nothing did.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (ids, what) in [
            (&self.added, "added"),
            (&self.removed, "removed"),
            (&self.changed, "changed"),
        ] {
            if !ids.is_empty() {
                let nodes = if ids.len() == 1 { "node" } else { "nodes" };
                lines.push(format!("{} {nodes} {what} ({})", ids.len(), id_list(ids)));
            }
        }
        for (changed, what) in [
            (self.actions, "actions changed"),
            (self.detector, "[detector] changed"),
            (self.brake, "[brake] changed"),
            (self.defaults, "[defaults] changed"),
            (self.keys, "auth.keys changed"),
            (self.token, "http.token_file changed"),
            (self.http_listen, "http.listen changed"),
            (self.per_node_metrics, "http.per_node_metrics changed"),
            (self.event_log, "event_log changed"),
            (self.probes, "probes re-planned"),
        ] {
            if changed {
                lines.push(what.to_owned());
            }
        }
        if lines.is_empty() {
            lines.push("nothing changed".to_owned());
        }
        lines
    }
}

/// "id 7", "ids 7, 8", "ids 0-999, 2000": ascending ids with runs of three
/// or more shortened, and at most [`MAX_LISTED_RUNS`] runs listed.
fn id_list(ids: &[u32]) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &id in ids {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(id) => *last = id,
            _ => runs.push((id, id)),
        }
    }
    let mut parts = Vec::new();
    for &(first, last) in runs.iter().take(MAX_LISTED_RUNS) {
        match last - first {
            0 => parts.push(first.to_string()),
            1 => parts.extend([first.to_string(), last.to_string()]),
            _ => parts.push(format!("{first}-{last}")),
        }
    }
    let listed: u64 = runs
        .iter()
        .take(MAX_LISTED_RUNS)
        .map(|&(first, last)| u64::from(last - first) + 1)
        .sum();
    let rest = ids.len() as u64 - listed;
    let word = if ids.len() == 1 { "id" } else { "ids" };
    let mut text = format!("{word} {}", parts.join(", "));
    if rest > 0 {
        text.push_str(&format!(" and {rest} more"));
    }
    text
}

#[cfg(test)]
mod tests;
