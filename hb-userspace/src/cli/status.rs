//! `hb status`: asks the running agent for its report over the status
//! socket and prints it as a table (or the raw JSON).

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Args;

use crate::{
    agent::status::{self, NodeStatus, StatusReport},
    config,
    group::GroupStatus,
};

#[derive(Args)]
pub struct StatusArgs {
    /// The agent's status socket.
    #[arg(long, default_value = config::DEFAULT_STATUS_SOCKET)]
    socket: PathBuf,
    /// Print the raw JSON report.
    #[arg(long)]
    json: bool,
    /// List at most this many nodes (those not up first); all are counted.
    #[arg(long, default_value_t = status::DEFAULT_LIMIT)]
    limit: usize,
}

pub async fn execute(args: StatusArgs) -> anyhow::Result<()> {
    let report = status::fetch(&args.socket, args.limit).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding JSON")?
        );
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The TRUST column: whether a node signs its heartbeats and is pinned.
fn trust(node: &NodeStatus) -> &'static str {
    match (node.authenticated, node.pinned) {
        (true, true) => "signed,pinned",
        (true, false) => "signed",
        (false, true) => "pinned",
        (false, false) => "-",
    }
}

/// The counters in three lines: what the packets were, why heartbeats were
/// refused, what was done with them; in the datapath's order.
fn render_counters(out: &mut String, counters: &BTreeMap<String, u64>) {
    use hb_common::counters::Counter;
    let line = |out: &mut String, title: &str, keep: &dyn Fn(Counter) -> bool| {
        let values: Vec<_> = Counter::ALL
            .into_iter()
            .filter(|&c| keep(c))
            .filter_map(|c| counters.get(c.name()).map(|v| format!("{}={v}", c.name())))
            .collect();
        let _ = writeln!(out, "{title:<9} {}", values.join(" "));
    };
    line(out, "packets:", &|c| {
        matches!(
            c,
            Counter::Accepted | Counter::NotHeartbeat | Counter::Malformed
        )
    });
    line(out, "refused:", &|c| {
        c.is_heartbeat() && c != Counter::Accepted
    });
    line(out, "probes:", &|c| c.is_probe());
    line(out, "verdicts:", &|c| !c.is_outcome());
}

/// The monitor group: this monitor's role, the members, the disputed
/// nodes with each voter's opinion.
fn render_group(out: &mut String, group: &GroupStatus) {
    let leader = group.leader.as_deref().unwrap_or("none known");
    if group.quorum {
        let _ = writeln!(
            out,
            "group {}: monitor {} is {}; leader {leader}; {} incidents recorded here",
            group.name,
            group.monitor,
            group.role.as_str(),
            group.incidents_recorded
        );
    } else {
        let _ = writeln!(
            out,
            "group {}: NO QUORUM: monitor {} cannot renew its etcd lease and runs no group action{}",
            group.name,
            group.monitor,
            group
                .last_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    let members: Vec<String> = group
        .members
        .iter()
        .map(|m| {
            let joining = if m.voting { "" } else { ", joining" };
            format!("{} (lease {}{joining})", m.monitor, m.lease)
        })
        .collect();
    let _ = writeln!(
        out,
        "members: {}; this monitor holds {} nodes down or left",
        if members.is_empty() {
            "none known".to_owned()
        } else {
            members.join(", ")
        },
        group.holding_down
    );
    for node in &group.disputed {
        let opinions: Vec<String> = node
            .opinions
            .iter()
            .map(|(monitor, opinion)| format!("{monitor}={opinion}"))
            .collect();
        let _ = writeln!(
            out,
            "disputed: {} (id {}) group verdict {}: {}",
            node.node,
            node.id,
            node.verdict,
            opinions.join(" ")
        );
    }
}

/// Formats the report as the table `hb status` prints.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    render_summary(&mut out, report);
    render_nodes(&mut out, &report.nodes);
    render_footer(&mut out, report);
    out
}

/// Where the agent listens and how many nodes are in each state.
fn render_summary(out: &mut String, report: &StatusReport) {
    let interfaces: Vec<_> = report
        .interfaces
        .iter()
        .map(|i| format!("{} ({})", i.name, i.mode))
        .collect();
    let _ = writeln!(
        out,
        "agent up {}, receiving on {}",
        humantime::format_duration(Duration::from_secs(report.uptime_ms / 1000)),
        interfaces.join(", ")
    );
    let summary: Vec<_> = report
        .states
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    let _ = writeln!(
        out,
        "nodes: {} ({})",
        report.nodes_total,
        summary.join(", ")
    );
    if (report.nodes.len() as u64) < report.nodes_total {
        let _ = writeln!(
            out,
            "showing {} of them, those not up first (--limit N for more)",
            report.nodes.len()
        );
    }
}

/// One line per listed node, under a header.
fn render_nodes(out: &mut String, nodes: &[NodeStatus]) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>8}  {:<16} {:<7} {:>11} {:<9} {:>10} {:>9} {:>6}  {:<24} {:>9}  {:>16}  TRUST",
        "ID",
        "NAME",
        "STATE",
        "LAST HEARD",
        "BY",
        "HEARTBEATS",
        "DOWN IN",
        "PHI",
        "ADDRESS",
        "SEQUENCE",
        "INTERVAL"
    );
    for node in nodes {
        let _ = writeln!(
            out,
            "{:>8}  {:<16} {:<7} {:>11} {:<9} {:>10} {:>9} {:>6}  {:<24} {:>9}  {:>16}  {}{}",
            node.id,
            node.name,
            node.state.name(),
            node.since_last_heartbeat_ms
                .map_or("never".into(), |ms| format!(
                    "{:.2}s ago",
                    ms as f64 / 1000.0
                )),
            node.refreshed_by.as_deref().unwrap_or("-"),
            node.heartbeats,
            node.down_in_ms
                .map_or("-".into(), |ms| format!("{:.2}s", ms as f64 / 1000.0)),
            node.phi.map_or("-".into(), |phi| format!("{phi:.1}")),
            node.address.as_deref().unwrap_or("-"),
            node.sequence,
            node.measured_interval_ms
                .map_or("-".into(), |i| format!("{:.1}±{:.1}ms", i.mean_ms, i.sd_ms)),
            trust(node),
            node.probe.as_ref().map_or(String::new(), |p| format!(
                "  probe {} {}",
                p.kind, p.target
            )),
        );
    }
}

/// The counters, the brake, the keys and the actions.
fn render_footer(out: &mut String, report: &StatusReport) {
    let _ = writeln!(out);
    render_counters(out, &report.counters);
    if report.brake.engaged {
        let _ = writeln!(
            out,
            "BRAKE ENGAGED: partition suspected, {} nodes silent, down actions of {} nodes held",
            report.brake.silent, report.brake.held
        );
    }
    if let Some(error) = &report.state_file.error {
        let _ = writeln!(
            out,
            "STATE FILE NOT SAVED ({} failures): {error}; a restart would lose node states",
            report.state_file.failures
        );
    }
    let auth = &report.auth;
    let keys = match auth.key_ids[..] {
        [] => "no keys".to_owned(),
        [current] => format!("key id {current}"),
        [current, previous, ..] => {
            format!("key ids {current} (current) and {previous} (previous)")
        }
    };
    let _ = writeln!(
        out,
        "auth: {keys}; heartbeats without a tag {}",
        if auth.accept_unauthenticated {
            "accepted"
        } else {
            "refused"
        }
    );
    if let Some(group) = &report.group {
        render_group(out, group);
    }
    if let Some(probes) = &report.probes {
        let n = &probes.nodes;
        let _ = writeln!(
            out,
            "probing: icmp {}, tcp {}, http {} nodes; identifier {:#06x}; sent {}, retries {}, failed {}",
            n.icmp, n.tcp, n.http, probes.identifier, probes.sent, probes.retries, probes.failed
        );
    }
    let a = &report.actions;
    let _ = writeln!(
        out,
        "actions: {} started, {} succeeded, {} failed, {} timed out, {} running, {} queued, {} \
         coalesced",
        a.started, a.succeeded, a.failed, a.timed_out, a.running, a.queued, a.coalesced
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        agent::status::{AuthStatus, BrakeStatus, InterfaceStatus, MeasuredInterval},
        detect::detector::NodeState,
        sinks::{actions::ActionStats, state_file::SaveHealth},
    };

    #[test]
    fn the_table_shows_refusals_trust_and_keys() {
        use hb_common::counters::Counter;
        let report = StatusReport {
            uptime_ms: 61_000,
            interfaces: vec![InterfaceStatus {
                name: "eth0".into(),
                mode: "native".into(),
            }],
            counters: Counter::ALL
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name().to_owned(), i as u64))
                .collect(),
            actions: ActionStats::default(),
            auth: AuthStatus {
                key_ids: vec![2, 1],
                accept_unauthenticated: false,
            },
            brake: BrakeStatus {
                engaged: true,
                held: 58,
                silent: 60,
            },
            state_file: SaveHealth {
                failures: 3,
                error: Some("writing state file /var/lib/hb/state: disk full".into()),
                ..SaveHealth::default()
            },
            group: Some(GroupStatus {
                name: "prod".into(),
                monitor: "m2".into(),
                quorum: true,
                role: crate::group::Role::Follower,
                leader: Some("m1".into()),
                lease: Some("7a".into()),
                members: vec![crate::group::MemberStatus {
                    monitor: "m1".into(),
                    lease: "79".into(),
                    voting: true,
                }],
                disputed: vec![crate::group::DisputedStatus {
                    node: "db".into(),
                    id: 7,
                    verdict: crate::group::Opinion::Up,
                    opinions: [
                        ("m1".to_owned(), crate::group::Opinion::Up),
                        ("m2".to_owned(), crate::group::Opinion::Down),
                    ]
                    .into(),
                }],
                holding_down: 1,
                incidents_recorded: 0,
                last_error: None,
            }),
            states: [("up".to_owned(), 1)].into(),
            nodes_total: 1,
            nodes: vec![NodeStatus {
                id: 7,
                name: "db".into(),
                state: NodeState::Up,
                address: Some("198.18.0.7".into()),
                since_last_heartbeat_ms: Some(250),
                heartbeats: 9,
                incarnation: 1,
                sequence: 9,
                interval_ms: 1000,
                measured_interval_ms: MeasuredInterval::from_word(
                    hb_common::table::intervals::word(1_002_000, 4_000),
                ),
                authenticated: true,
                pinned: true,
                phi: Some(0.42),
                down_in_ms: Some(2750),
                probe: Some(status::NodeProbe {
                    kind: "tcp".into(),
                    target: "198.18.0.7:5432".into(),
                }),
                refreshed_by: Some("probe".into()),
            }],
            probes: Some(crate::probe::ProbeStatus {
                identifier: 0x4842,
                nodes: crate::probe::ProbeCounts {
                    icmp: 0,
                    tcp: 1,
                    http: 0,
                },
                sent: 30,
                retries: 1,
                failed: 2,
            }),
        };
        let text = render(&report);
        for needle in [
            "packets:  accepted=0 not_heartbeat=1 malformed=2",
            "refused:  unauthenticated=3 unknown_key=4 bad_tag=5 unknown_node=6 wrong_source=7 \
             replay=8",
            "verdicts: passed=9 dropped=10",
            "probes:   probe_malformed=11 probe_accepted=12 probe_bad_tag=13 \
             probe_unknown_node=14 probe_replay=15",
            "auth: key ids 2 (current) and 1 (previous); heartbeats without a tag refused",
            "signed,pinned",
            "1002.0±5.0ms",
            "   0.4  198.18.0.7",
            "BRAKE ENGAGED: partition suspected, 60 nodes silent, down actions of 58 nodes held",
            "STATE FILE NOT SAVED (3 failures): writing state file /var/lib/hb/state: disk full",
            "group prod: monitor m2 is follower; leader m1",
            "members: m1 (lease 79); this monitor holds 1 nodes down or left",
            "disputed: db (id 7) group verdict up: m1=up m2=down",
            "0.25s ago probe",
            "signed,pinned  probe tcp 198.18.0.7:5432",
            "probing: icmp 0, tcp 1, http 0 nodes; identifier 0x4842; sent 30, retries 1, failed 2",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }
}
