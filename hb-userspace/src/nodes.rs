//! The monitored nodes: what the operator writes about one ([`NodeConfig`],
//! `[[nodes]]`) or a block of them ([`NodeRange`], `[[node_ranges]]`), and
//! the [`NodeDirectory`] that finds any configured node by id: the agent's
//! way to name a node in logs, events and `hb status` without keeping a
//! string per node of a million-node range. The configuration reads these
//! types from the file and re-exports them.

use std::{borrow::Cow, collections::HashMap, net::IpAddr, time::Duration};

use serde::Deserialize;

use crate::probe::spec::{ProbeFields, ProbeKind, ProbePlan, StatusRange};

/// One monitored node (`[[nodes]]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
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
    /// How the node is probed, if it is (pull monitoring: see
    /// [`crate::probe`]); the target is the node's address.
    #[serde(default)]
    pub probe: Option<ProbeKind>,
    /// How long one probe may take (default: half the interval, at most
    /// 5 s).
    #[serde(default, with = "humantime_serde")]
    pub probe_timeout: Option<Duration>,
    /// HTTP probes: the statuses that count as alive (default 200-399).
    #[serde(default)]
    pub probe_status: Option<StatusRange>,
    /// HTTP probes: text the body must contain.
    #[serde(default)]
    pub probe_body: Option<String>,
    /// Before the node is convicted, one immediate retry probe.
    #[serde(default)]
    pub probe_confirm: bool,
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
    /// The nodes' addresses: node `first_id + k` is at `first_address + k`
    /// (what its probe goes to, and `HB_NODE_ADDRESS` for actions).
    #[serde(default)]
    pub first_address: Option<IpAddr>,
    /// How the node is probed, if it is (pull monitoring: see
    /// [`crate::probe`]); the target is the node's address.
    #[serde(default)]
    pub probe: Option<ProbeKind>,
    /// How long one probe may take (default: half the interval, at most
    /// 5 s).
    #[serde(default, with = "humantime_serde")]
    pub probe_timeout: Option<Duration>,
    /// HTTP probes: the statuses that count as alive (default 200-399).
    #[serde(default)]
    pub probe_status: Option<StatusRange>,
    /// HTTP probes: text the body must contain.
    #[serde(default)]
    pub probe_body: Option<String>,
    /// Before the node is convicted, one immediate retry probe.
    #[serde(default)]
    pub probe_confirm: bool,
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
        nth_address(self.first_source?, id.checked_sub(self.first_id)?)
    }

    /// The address of node `id` of this range, if the range has
    /// `first_address` (validation checks the whole range fits).
    pub fn address_of(&self, id: u32) -> Option<IpAddr> {
        nth_address(self.first_address?, id.checked_sub(self.first_id)?)
    }

    /// The range's probe fields.
    pub fn probe_fields(&self) -> ProbeFields {
        ProbeFields {
            probe: self.probe.clone(),
            timeout: self.probe_timeout,
            status: self.probe_status,
            body: self.probe_body.clone(),
            confirm: self.probe_confirm,
        }
    }
}

impl NodeConfig {
    /// The node's probe fields.
    pub fn probe_fields(&self) -> ProbeFields {
        ProbeFields {
            probe: self.probe.clone(),
            timeout: self.probe_timeout,
            status: self.probe_status,
            body: self.probe_body.clone(),
            confirm: self.probe_confirm,
        }
    }
}

/// `first + step`, if that is still an address.
pub fn nth_address(first: IpAddr, step: u32) -> Option<IpAddr> {
    match first {
        IpAddr::V4(first) => u32::from(first)
            .checked_add(step)
            .map(|a| IpAddr::V4(a.into())),
        IpAddr::V6(first) => u128::from(first)
            .checked_add(u128::from(step))
            .map(|a| IpAddr::V6(a.into())),
    }
}

/// What the agent knows of one configured node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo<'a> {
    pub id: u32,
    pub name: Cow<'a, str>,
    pub address: Option<IpAddr>,
    pub interval: Option<Duration>,
}

/// The configured nodes, looked up by id: borrowed from a configuration,
/// or owned (the agent's, which a reload replaces).
pub struct NodeDirectory<'a> {
    nodes: Cow<'a, [NodeConfig]>,
    ranges: Cow<'a, [NodeRange]>,
    by_id: HashMap<u32, usize>,
}

impl<'a> NodeDirectory<'a> {
    /// The listed and ranged nodes of a validated configuration (ids
    /// unique, ranges disjoint).
    pub fn new(nodes: &'a [NodeConfig], ranges: &'a [NodeRange]) -> Self {
        Self::from_cows(Cow::Borrowed(nodes), Cow::Borrowed(ranges))
    }

    fn from_cows(nodes: Cow<'a, [NodeConfig]>, ranges: Cow<'a, [NodeRange]>) -> Self {
        let by_id = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        NodeDirectory {
            nodes,
            ranges,
            by_id,
        }
    }
}

impl NodeDirectory<'static> {
    /// A directory of its own copy of the nodes (a range costs its few
    /// fields, not a string per node).
    pub fn owned(nodes: &[NodeConfig], ranges: &[NodeRange]) -> Self {
        Self::from_cows(Cow::Owned(nodes.to_vec()), Cow::Owned(ranges.to_vec()))
    }
}

impl<'a> NodeDirectory<'a> {
    /// Number of configured nodes.
    pub fn len(&self) -> usize {
        self.nodes.len() + self.ranges.iter().map(|r| r.count as usize).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every configured node id: the listed nodes, then the ranges.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.nodes
            .iter()
            .map(|n| n.id)
            .chain(self.ranges.iter().flat_map(NodeRange::ids))
    }

    /// Every configured node with its configured interval, if any.
    pub fn intervals(&self) -> impl Iterator<Item = (u32, Option<Duration>)> + '_ {
        let listed = self.nodes.iter().map(|n| (n.id, n.interval));
        listed.chain(
            self.ranges
                .iter()
                .flat_map(|r| r.ids().map(move |id| (id, r.interval))),
        )
    }

    /// The source address the heartbeats of node `id` must come from, if the
    /// node is pinned (`source`, or `first_source` of its range).
    pub fn source_of(&self, id: u32) -> Option<IpAddr> {
        if let Some(&index) = self.by_id.get(&id) {
            return self.nodes[index].source;
        }
        self.ranges
            .iter()
            .find(|r| r.ids().contains(&id))
            .and_then(|r| r.source_of(id))
    }

    /// Every configured node id in ascending order (the HTTP API's pages).
    pub fn sorted_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.ids().collect();
        ids.sort_unstable();
        ids
    }

    /// The id of the node called `name`: a listed node's name, or a range's
    /// prefix followed by one of its ids.
    pub fn find(&self, name: &str) -> Option<u32> {
        if let Some(node) = self.nodes.iter().find(|n| n.name == name) {
            return Some(node.id);
        }
        self.ranges.iter().find_map(|r| {
            let id = name.strip_prefix(r.name_prefix.as_str())?.parse().ok()?;
            (r.ids().contains(&id) && r.name_of(id) == name).then_some(id)
        })
    }

    /// The node with this id, if it is configured.
    pub fn get(&self, id: u32) -> Option<NodeInfo<'_>> {
        if let Some(&index) = self.by_id.get(&id) {
            let node = &self.nodes[index];
            return Some(NodeInfo {
                id,
                name: Cow::Borrowed(node.name.as_str()),
                address: node.address,
                interval: node.interval,
            });
        }
        let range = self.ranges.iter().find(|r| r.ids().contains(&id))?;
        Some(NodeInfo {
            id,
            name: Cow::Owned(range.name_of(id)),
            address: range.address_of(id),
            interval: range.interval,
        })
    }

    /// Every probed node's id.
    pub fn probed_ids(&self) -> std::collections::HashSet<u32> {
        let listed = self
            .nodes
            .iter()
            .filter(|n| n.probe.is_some())
            .map(|n| n.id);
        let ranged = self
            .ranges
            .iter()
            .filter(|r| r.probe.is_some())
            .flat_map(NodeRange::ids);
        listed.chain(ranged).collect()
    }

    /// The configured nodes (`[[nodes]]`).
    pub fn listed(&self) -> &[NodeConfig] {
        &self.nodes
    }

    /// The configured ranges (`[[node_ranges]]`).
    pub fn ranges(&self) -> &[NodeRange] {
        &self.ranges
    }

    /// How node `id` is probed, if it is; `default_interval` is
    /// `defaults.interval` (a probed node without an `interval` of its own
    /// is probed that often).
    pub fn probe_of(&self, id: u32, default_interval: Duration) -> Option<(IpAddr, ProbePlan)> {
        if let Some(&index) = self.by_id.get(&id) {
            let node = &self.nodes[index];
            let plan = node
                .probe_fields()
                .plan(node.interval.unwrap_or(default_interval))?;
            return Some((node.address?, plan));
        }
        let range = self.ranges.iter().find(|r| r.ids().contains(&id))?;
        let plan = range
            .probe_fields()
            .plan(range.interval.unwrap_or(default_interval))?;
        Some((range.address_of(id)?, plan))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn listed_and_ranged_nodes_are_found_by_id() {
        let config = Config::parse(
            "interfaces = [\"eth0\"]\n[[nodes]]\nid = 7\nname = \"db\"\naddress = \"198.18.0.7\"\n\
             [[node_ranges]]\nfirst_id = 100\ncount = 3\nname_prefix = \"n-\"\ninterval = \"1s\"\n\
             first_source = \"198.18.1.254\"\n",
            "test",
        )
        .unwrap();
        let nodes = NodeDirectory::new(&config.nodes, &config.node_ranges);
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes.ids().collect::<Vec<_>>(), vec![7, 100, 101, 102]);
        let db = nodes.get(7).unwrap();
        assert_eq!(
            (db.name.as_ref(), db.address),
            ("db", Some("198.18.0.7".parse().unwrap()))
        );
        let n = nodes.get(102).unwrap();
        assert_eq!(
            (n.name.as_ref(), n.interval),
            ("n-102", Some(Duration::from_secs(1)))
        );
        assert_eq!(nodes.get(103), None);
        assert_eq!(nodes.get(8), None);
        assert_eq!(nodes.intervals().filter(|(_, i)| i.is_some()).count(), 3);
        assert_eq!(nodes.source_of(7), None, "an address does not pin");
        assert_eq!(nodes.source_of(100), Some("198.18.1.254".parse().unwrap()));
        assert_eq!(nodes.source_of(102), Some("198.18.2.0".parse().unwrap()));
        assert_eq!(nodes.source_of(103), None);
        assert_eq!(nodes.find("db"), Some(7));
        assert_eq!(nodes.find("n-101"), Some(101));
        assert_eq!(nodes.find("n-103"), None, "outside the range");
        assert_eq!(nodes.find("n-0101"), None, "not the node's name");
        assert_eq!(nodes.find("web"), None);
        assert_eq!(nodes.sorted_ids(), vec![7, 100, 101, 102]);
    }
}
