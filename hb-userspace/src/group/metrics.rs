//! The group's series in `/metrics` (registered only with `[group]`).

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

/// Handles the worker records into; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct GroupMetrics {
    pub quorum: Gauge,
    pub leader: Gauge,
    pub members: Gauge,
    pub voters: Gauge,
    pub disputed: Gauge,
    pub holding_down: Gauge,
    pub writes: Counter,
    pub write_ops: Counter,
    pub incidents: Counter,
    pub lease_losses: Counter,
}

impl GroupMetrics {
    /// Registers every series in `registry` (prefix `hb_group_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = GroupMetrics::default();
        let group = registry.sub_registry_with_prefix("group");
        group.register(
            "quorum",
            "1 while this monitor holds an etcd lease it renewed in time; 0: no quorum, it runs no group action",
            m.quorum.clone(),
        );
        group.register(
            "leader",
            "1 while this monitor leads its group (runs the group's actions)",
            m.leader.clone(),
        );
        group.register(
            "members",
            "Monitors of the group holding a lease",
            m.members.clone(),
        );
        group.register("voters", "Members of the group that vote", m.voters.clone());
        group.register(
            "disputed_nodes",
            "Nodes the group's voters do not all agree on",
            m.disputed.clone(),
        );
        group.register(
            "holding_down",
            "Nodes this monitor holds down or left in etcd",
            m.holding_down.clone(),
        );
        group.register(
            "etcd_writes",
            "etcd transactions this monitor wrote (opinions, membership, incidents)",
            m.writes.clone(),
        );
        group.register(
            "etcd_write_ops",
            "Puts and deletes within those transactions",
            m.write_ops.clone(),
        );
        group.register(
            "incidents",
            "Incidents this monitor recorded as leader (each runs its actions once)",
            m.incidents.clone(),
        );
        group.register(
            "lease_losses",
            "Times this monitor's lease deadline passed before a renewal (it stepped down)",
            m.lease_losses.clone(),
        );
        m
    }
}
