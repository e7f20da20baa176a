use super::*;
use crate::config::test_support::{BASE, action, node, parse};

/// The plan from `BASE` + `running` to `BASE` + `new`.
fn plan(running: &str, new: &str) -> Result<ReloadPlan, ReloadRefused> {
    reload_plan(
        &parse(&format!("{BASE}{running}")),
        &parse(&format!("{BASE}{new}")),
    )
}

fn planned(running: &str, new: &str) -> ReloadPlan {
    plan(running, new).unwrap_or_else(|e| panic!("refused: {e}"))
}

fn refused(running: &str, new: &str) -> ReloadRefused {
    match plan(running, new) {
        Ok(plan) => panic!("not refused: {plan:?}"),
        Err(refused) => refused,
    }
}

const RANGE: &str = "[[node_ranges]]\nfirst_id = 100\ncount = 50\nname_prefix = \"r\"\n";

#[test]
fn the_same_config_changes_nothing() {
    let text = format!(
        "{}{}{RANGE}{}",
        node(1, "a"),
        node(2, "b"),
        action("x", "on = [\"down\"]\nshell = \"true\"\n")
    );
    let plan = planned(&text, &text);
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(plan.describe(), ["nothing changed"]);

    let mut running = parse(&format!("{BASE}{text}"));
    running.loaded_from = Some("/etc/hb/hb.toml".into());
    let new = parse(&format!("{BASE}{text}"));
    assert!(reload_plan(&running, &new).expect("same").is_empty());
}

#[test]
fn every_setting_built_into_the_datapath_or_bound_at_start_needs_a_restart() {
    for (change, setting) in [
        ("port = 7000\n", "port"),
        ("max_nodes = 1000\n", "max_nodes"),
        ("datapath = \"socket\"\n", "datapath"),
        ("xdp_mode = \"generic\"\n", "xdp_mode"),
        ("instance = \"other\"\n", "instance"),
        ("pass_heartbeats = true\n", "pass_heartbeats"),
        ("status_socket = \"/tmp/other.sock\"\n", "status_socket"),
        ("state_file = \"/tmp/other.json\"\n", "state_file"),
        (
            "[auth]\naccept_unauthenticated = false\n",
            "auth.accept_unauthenticated",
        ),
        (
            "[defaults]\nsweep_priority = 10\n",
            "defaults.sweep_priority",
        ),
        ("[defaults]\nlock_memory = true\n", "defaults.lock_memory"),
        (
            "[group]\nname = \"g\"\nmonitor = \"m1\"\nendpoints = [\"http://10.0.0.1:2379\"]\n",
            "group",
        ),
    ] {
        let err = refused("", change);
        assert_eq!(err.settings.len(), 1, "{change}: {err}");
        assert_eq!(err.settings[0].setting, setting, "{change}");
        let message = err.to_string();
        assert!(message.contains(&format!("`{setting}`")), "{message}");
        assert!(
            message.contains("restart the agent to change it"),
            "{message}"
        );
        assert!(message.contains("running configuration stays"), "{message}");
    }
    let running = parse(BASE);
    let mut new = parse(BASE);
    new.interfaces.push("eth1".into());
    let err = reload_plan(&running, &new).expect_err("interfaces need a restart");
    assert_eq!(err.settings[0].setting, "interfaces");
    assert_eq!(err.settings[0].running, "[\"eth0\"]");
    assert_eq!(err.settings[0].new, "[\"eth0\", \"eth1\"]");
}

#[test]
fn a_refusal_names_every_setting_with_both_values_and_ignores_the_rest() {
    let err = refused(
        &node(1, "a"),
        &format!("port = 7000\nmax_nodes = 99\n{}", node(2, "b")),
    );
    let names: Vec<&str> = err.settings.iter().map(|s| s.setting).collect();
    assert_eq!(names, ["port", "max_nodes"]);
    assert_eq!(
        (
            err.settings[0].running.as_str(),
            err.settings[0].new.as_str()
        ),
        ("7979", "7000")
    );
    let message = err.to_string();
    assert!(
        message.contains("`port` changed from 7979 to 7000: restart the agent to change it"),
        "{message}"
    );
    assert!(
        message.contains("`max_nodes` changed from 65536 to 99: restart the agent to change it"),
        "{message}"
    );
}

#[test]
fn keys_that_change_whether_unauthenticated_heartbeats_are_accepted_need_a_restart() {
    // Unset, acceptance follows whether there are keys.
    let err = refused("", "[auth]\nkeys = [\"/etc/hb/hb.key\"]\n");
    assert_eq!(err.settings[0].setting, "auth.accept_unauthenticated");
    assert!(
        err.settings[0].running.starts_with("true (not set"),
        "{err}"
    );
    assert!(err.settings[0].new.starts_with("false (not set"), "{err}");
    // Set explicitly, the keys change alone.
    let plan = planned(
        "[auth]\naccept_unauthenticated = false\nkeys = [\"/etc/hb/a.key\"]\n",
        "[auth]\naccept_unauthenticated = false\nkeys = [\"/etc/hb/a.key\", \"/etc/hb/b.key\"]\n",
    );
    assert_eq!(
        plan,
        ReloadPlan {
            keys: true,
            ..ReloadPlan::default()
        }
    );
    // Written out or left to the same default: no change.
    let plan = planned("", "[auth]\naccept_unauthenticated = true\n");
    assert!(plan.is_empty(), "{plan:?}");
}

#[test]
fn each_reloadable_section_is_reported() {
    let act = |body: &str| action("x", body);
    for (running, new, expected) in [
        (
            act("on = [\"down\"]\nshell = \"a\"\n"),
            act("on = [\"down\"]\nshell = \"b\"\n"),
            ReloadPlan {
                actions: true,
                ..ReloadPlan::default()
            },
        ),
        (
            String::new(),
            act("on = [\"up\"]\nshell = \"a\"\n"),
            ReloadPlan {
                actions: true,
                ..ReloadPlan::default()
            },
        ),
        (
            String::new(),
            "max_concurrent_actions = 3\n".into(),
            ReloadPlan {
                actions: true,
                ..ReloadPlan::default()
            },
        ),
        (
            String::new(),
            "[detector]\nrise = 5\n".into(),
            ReloadPlan {
                detector: true,
                ..ReloadPlan::default()
            },
        ),
        (
            String::new(),
            "[brake]\nmin_silent = 7\n".into(),
            ReloadPlan {
                brake: true,
                ..ReloadPlan::default()
            },
        ),
        (
            String::new(),
            "[defaults]\ninterval = \"1s\"\n".into(),
            ReloadPlan {
                defaults: true,
                ..ReloadPlan::default()
            },
        ),
        (
            String::new(),
            "[http]\ntoken_file = \"/etc/hb/t\"\n".into(),
            ReloadPlan {
                token: true,
                ..ReloadPlan::default()
            },
        ),
        (
            String::new(),
            "[http]\nlisten = \"127.0.0.1:7981\"\n".into(),
            ReloadPlan {
                http_listen: true,
                ..ReloadPlan::default()
            },
        ),
        (
            String::new(),
            "[http]\nlisten = \"\"\n".into(),
            ReloadPlan {
                http_listen: true,
                ..ReloadPlan::default()
            },
        ),
        (
            String::new(),
            "[http]\nper_node_metrics = 10\n".into(),
            ReloadPlan {
                per_node_metrics: true,
                ..ReloadPlan::default()
            },
        ),
        (
            "event_log = \"/tmp/a\"\n".into(),
            "event_log = \"/tmp/b\"\n".into(),
            ReloadPlan {
                event_log: true,
                ..ReloadPlan::default()
            },
        ),
    ] {
        assert_eq!(planned(&running, &new), expected, "{running} -> {new}");
    }
}

#[test]
fn probes_are_replanned_when_anything_they_are_built_from_changes() {
    let node =
        |extra: &str| format!("[[nodes]]\nid = 1\nname = \"a\"\naddress = \"198.18.0.2\"\n{extra}");
    let icmp = node("probe = \"icmp\"\n");
    // No probe before or after: a [probe] or [defaults] change re-plans nothing.
    assert!(!planned("", "[probe]\nmax_rate = 1000\n").probes);
    assert!(!planned("", "[defaults]\ninterval = \"1s\"\n").probes);
    for (running, new) in [
        (node(""), icmp.clone()),
        (icmp.clone(), node("")),
        (icmp.clone(), node("probe = \"tcp:22\"\n")),
        (
            icmp.clone(),
            node("probe = \"icmp\"\nprobe_confirm = true\n"),
        ),
        (icmp.clone(), format!("[probe]\nmax_rate = 1000\n{icmp}")),
        (
            icmp.clone(),
            format!("[defaults]\ninterval = \"1s\"\n{icmp}"),
        ),
        (
            icmp.clone(),
            format!(
                "{icmp}[[node_ranges]]\nfirst_id = 10\ncount = 2\nname_prefix = \"r\"\nfirst_address = \"198.18.1.0\"\nprobe = \"icmp\"\n"
            ),
        ),
    ] {
        assert!(planned(&running, &new).probes, "{running} -> {new}");
    }
    assert!(!planned(&icmp, &icmp).probes);
}

#[test]
fn nodes_added_removed_and_changed_by_id() {
    let plan = planned(
        &format!("{}{}{}", node(1, "a"), node(2, "b"), node(3, "c")),
        &format!("{}{}{}", node(3, "c"), node(8, "h"), node(7, "g")),
    );
    assert_eq!(plan.added, [7, 8]);
    assert_eq!(plan.removed, [1, 2]);
    assert!(plan.changed.is_empty());

    let base = format!("{}{}", node(1, "a"), node(2, "b"));
    for change in [
        format!("{}{}", node(1, "renamed"), node(2, "b")),
        format!("{}address = \"10.0.0.1\"\n{}", node(1, "a"), node(2, "b")),
        format!("{}interval = \"5s\"\n{}", node(1, "a"), node(2, "b")),
        format!("{}source = \"10.0.0.1\"\n{}", node(1, "a"), node(2, "b")),
    ] {
        let plan = planned(&base, &change);
        assert_eq!(
            plan,
            ReloadPlan {
                changed: vec![1],
                ..ReloadPlan::default()
            },
            "{change}"
        );
    }
}

#[test]
fn ranges_count_by_id() {
    let range = |first: u32, count: u32, extra: &str| {
        format!(
            "[[node_ranges]]\nfirst_id = {first}\ncount = {count}\nname_prefix = \"r\"\n{extra}"
        )
    };
    let grown = planned(&range(100, 50, ""), &range(100, 52, ""));
    assert_eq!(
        grown,
        ReloadPlan {
            added: vec![150, 151],
            ..ReloadPlan::default()
        }
    );
    let shrunk = planned(&range(100, 50, ""), &range(102, 48, ""));
    assert_eq!(
        shrunk,
        ReloadPlan {
            removed: vec![100, 101],
            ..ReloadPlan::default()
        }
    );
    let slower = planned(&range(100, 3, ""), &range(100, 3, "interval = \"9s\"\n"));
    assert_eq!(slower.changed, [100, 101, 102]);
    let pinned = planned(
        &range(100, 2, ""),
        &range(100, 2, "first_source = \"10.0.0.1\"\n"),
    );
    assert_eq!(pinned.changed, [100, 101]);
    let renamed = planned(
        &range(100, 2, ""),
        &range(100, 2, "").replace("\"r\"", "\"s\""),
    );
    assert_eq!(renamed.changed, [100, 101]);
    // A listed node that becomes a one-node range of the same name is
    // configured the same way; a range beside it changes nothing.
    let moved = planned(
        &format!("{}{}", node(5, "r5"), range(100, 50, "")),
        &format!("{}{}", range(5, 1, ""), range(100, 50, "")),
    );
    assert!(moved.is_empty(), "{moved:?}");
    let readdressed = planned(
        &format!("{}address = \"10.0.0.5\"\n", node(5, "r5")),
        &range(5, 1, ""),
    );
    assert_eq!(readdressed.changed, [5]);
}

#[test]
fn a_large_unchanged_range_costs_nothing_and_a_large_new_one_is_summarised() {
    let range = |count: u32| {
        format!("[[node_ranges]]\nfirst_id = 0\ncount = {count}\nname_prefix = \"n\"\n")
    };
    let same = planned(
        &format!(
            "max_nodes = 16777216\n{}{}",
            range(1_000_000,),
            node(2_000_000, "x")
        ),
        &format!(
            "max_nodes = 16777216\n{}{}",
            range(1_000_000),
            node(2_000_001, "x")
        ),
    );
    assert_eq!(
        same,
        ReloadPlan {
            added: vec![2_000_001],
            removed: vec![2_000_000],
            ..ReloadPlan::default()
        }
    );
    let added = planned(
        "max_nodes = 16777216\n",
        &format!("max_nodes = 16777216\n{}", range(1_000_000)),
    );
    assert_eq!(added.added.len(), 1_000_000);
    assert_eq!(added.describe(), ["1000000 nodes added (ids 0-999999)"]);
}

#[test]
fn describe_says_what_changed_one_line_each() {
    let plan = ReloadPlan {
        added: vec![7, 8],
        removed: vec![3],
        changed: vec![1, 2, 3, 10],
        actions: true,
        detector: true,
        brake: true,
        defaults: true,
        keys: true,
        token: true,
        http_listen: true,
        per_node_metrics: true,
        event_log: true,
        probes: true,
    };
    assert_eq!(
        plan.describe(),
        [
            "2 nodes added (ids 7, 8)",
            "1 node removed (id 3)",
            "4 nodes changed (ids 1-3, 10)",
            "actions changed",
            "[detector] changed",
            "[brake] changed",
            "[defaults] changed",
            "auth.keys changed",
            "http.token_file changed",
            "http.listen changed",
            "http.per_node_metrics changed",
            "event_log changed",
            "probes re-planned",
        ]
    );
}

#[test]
fn long_id_lists_are_cut() {
    let ids: Vec<u32> = (0..20).map(|i| i * 10).collect();
    assert_eq!(
        id_list(&ids),
        "ids 0, 10, 20, 30, 40, 50, 60, 70 and 12 more"
    );
    assert_eq!(
        id_list(&[4, 5, 6, 9, 10, u32::MAX]),
        format!("ids 4-6, 9, 10, {}", u32::MAX)
    );
    assert_eq!(
        id_list(&[u32::MAX - 1, u32::MAX]),
        format!("ids {}, {}", u32::MAX - 1, u32::MAX)
    );
}
