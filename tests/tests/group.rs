//! End-to-end tests of a monitor group (issue 13): three monitors, each an
//! etcd member and an hb agent in its own namespace, and nodes whose
//! senders send to all three every 100 ms (down after 300 ms of silence);
//! every monitor's action appends `EVENT NODE MONITOR` to one shared file,
//! so a test counts how many times the whole group ran an action, and which
//! monitor ran it. The group tests check the guarantees: one run
//! per verdict in the whole group, none repeated by a new leader, none by
//! a monitor cut off from the nodes (outvoted) or from etcd (no quorum),
//! none without an etcd majority and one once etcd is back. The first test
//! runs the same lab without `[group]`: every monitor acts alone, three
//! runs per event (the harness's own check, and the single-monitor
//! detection time the group's is compared with).
//!
//! The labs run one at a time (each is three etcd members and three agents
//! on a small machine), each builds and removes its own, prints its
//! figures and takes well under a minute. Needs root and the `hb` binary
//! (`$HB_BIN`, set by `cargo xtask test`).

use std::{
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use hb_tests::{
    GroupLab, GroupLabOptions, Hb, Result, Run,
    group::{MONITORS, TIMING, monitor_name},
    interrupt, netns, unique_prefix,
};

/// Each monitor's etcd lease (`[group] lease_ttl`).
const LEASE_TTL: Duration = Duration::from_secs(2);
/// Slack on a verdict past the local detection time: etcd round trips, and
/// scheduling on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(3);
/// From the agents' start to every node heard and a leader elected.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// From a monitor losing etcd (cut off, or etcd's majority gone) to its
/// status saying `quorum: false`. The agent promises it before its lease
/// could expire at etcd (`lease_ttl` after its last keep-alive); the
/// tests print the figure and leave slack for a loaded machine.
const NO_QUORUM_WITHIN: Duration = Duration::from_secs(7);
/// How long the group must stay silent to show it does not act: 10 times
/// the timeout.
const QUIET: Duration = Duration::from_secs(3);
/// How long a count must hold after it was reached to show nothing repeats.
const HOLD: Duration = Duration::from_secs(2);
/// From a node's sender started again to its `up`.
const UP_WITHIN: Duration = Duration::from_secs(5);
/// A whole test, from the first namespace to the last removal.
const TEST_WITHIN: Duration = Duration::from_secs(60);

/// The failure of a harness call, as a panic with its message.
trait Must<T> {
    fn must(self) -> T;
}

impl<T> Must<T> for Result<T> {
    fn must(self) -> T {
        self.unwrap_or_else(|err| panic!("{err}"))
    }
}

/// One lab at a time: the test harness runs the tests of this file on
/// parallel threads.
fn one_lab_at_a_time() -> MutexGuard<'static, ()> {
    static LABS: Mutex<()> = Mutex::new(());
    LABS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn sleep(duration: Duration) {
    interrupt::sleep(duration).must();
}

fn group_options() -> GroupLabOptions {
    GroupLabOptions::default().lease_ttl(LEASE_TTL)
}

/// A lab started with `options`, every node sending, every monitor seeing
/// every node up and (with a group) a leader elected; then the runs of the
/// nodes' first `up`: three per node without a group, at most one with
/// one. Returns the lab and the mark after those runs.
fn ready_lab(options: GroupLabOptions) -> (GroupLab, usize) {
    let start = Instant::now();
    let grouped = options.group.is_some();
    let mut lab = GroupLab::start(Hb::from_env(), &unique_prefix(), options).must();
    lab.start_nodes().must();
    lab.wait_ready(READY_WITHIN).must();
    let ready = start.elapsed();
    let nodes = lab.node_indexes();
    // The first `up` of each node: every monitor's alone; none in a group
    // (a node first heard was never down: no incident).
    let expected = if grouped { 0 } else { usize::from(MONITORS) };
    if !grouped {
        lab.wait_until(
            |lab| {
                nodes
                    .iter()
                    .all(|&node| lab.count("up", node, 0) >= expected)
            },
            UP_WITHIN,
            "the nodes' first `up` runs",
        )
        .must();
    }
    // Late repeats would show here.
    sleep(Duration::from_millis(500));
    let runs = lab.runs().must();
    for &node in &nodes {
        let ups = runs.iter().filter(|run| run.is("up", node)).count();
        assert!(
            ups == expected,
            "node {node}: {ups} first `up` runs, {expected} expected{}",
            lab.context()
        );
    }
    let leader = lab.leader().map(monitor_name);
    eprintln!(
        "lab {}: ready after {ready:.2?} (agents, nodes heard{}); {} first runs: {}",
        lab.prefix(),
        if grouped {
            format!(", leader {}", leader.as_deref().unwrap_or("?"))
        } else {
            String::new()
        },
        runs.len(),
        describe(&runs)
    );
    for run in &runs {
        assert_eq!(
            run.event,
            "up",
            "a first run that is no `up`{}",
            lab.context()
        );
    }
    (lab, runs.len())
}

/// `event node monitor, ...`, for messages.
fn describe(runs: &[Run]) -> String {
    runs.iter()
        .map(|run| format!("{} {} {}", run.event, run.node, run.monitor))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one run of `event` for `node` since `mark`; fails if there are none
/// or several.
fn exactly_one(lab: &GroupLab, event: &str, node: u8, mark: usize) -> Run {
    let runs = lab.runs_of(event, node, mark).must();
    match &runs[..] {
        [run] => run.clone(),
        _ => panic!(
            "{} runs of `{event} node-{node}` since line {mark}, exactly one expected: {}{}",
            runs.len(),
            describe(&runs),
            lab.context()
        ),
    }
}

/// Fails if anything ran since `mark`.
fn assert_quiet(lab: &GroupLab, mark: usize, what: &str) {
    let runs = lab.runs_since(mark).must();
    assert!(
        runs.is_empty(),
        "{what}: {} runs, none expected: {}{}",
        runs.len(),
        describe(&runs),
        lab.context()
    );
}

/// Waits (at most `within`) for a run of `event` for `node` since `mark`;
/// returns it and how long after `since` it was seen.
fn wait_run(
    lab: &mut GroupLab,
    event: &str,
    node: u8,
    mark: usize,
    since: Instant,
    within: Duration,
) -> (Run, Duration) {
    let what = format!("a run of `{event} node-{node}`");
    let run = lab
        .wait_until(
            |lab| lab.runs_of(event, node, mark).ok()?.into_iter().next(),
            within,
            &what,
        )
        .must();
    (run, since.elapsed())
}

/// Drops the lab and checks it left nothing behind: namespaces, the lab's
/// and the etcd cluster's directories, the agents' pins.
fn finish(lab: GroupLab, start: Instant) {
    let prefix = lab.prefix().to_owned();
    let dirs = [lab.dir().to_owned(), lab.etcd().dir().to_owned()];
    let instances: Vec<String> = (1..=MONITORS)
        .map(|i| lab.monitor(i).instance.clone())
        .collect();
    drop(lab);
    assert_eq!(
        netns::list_with_prefix(&format!("{prefix}-")).unwrap(),
        Vec::<String>::new(),
        "the lab's namespaces are removed"
    );
    for dir in dirs {
        assert!(!dir.exists(), "{} is removed", dir.display());
    }
    for instance in instances {
        let pins = hb_tests::pins::list(&instance);
        assert!(pins.is_empty(), "pins of {instance} left: {pins:?}");
    }
    let total = start.elapsed();
    eprintln!("lab {prefix}: whole test {total:.2?}");
    assert!(total < TEST_WITHIN, "the test took {total:?}");
}

#[test]
fn without_a_group_every_monitor_runs_every_action() {
    let _one = one_lab_at_a_time();
    let start = Instant::now();
    let (mut lab, mark) = ready_lab(GroupLabOptions::default().alone());

    // A crash: each monitor convicts node 1 and runs its own `down`.
    let crashed = lab.crash_node(1).must();
    let limit = TIMING.timeout() + MARGIN;
    let mut detected = Vec::new();
    for n in 1..=usize::from(MONITORS) {
        lab.wait_until(
            |lab| lab.count("down", 1, mark) >= n,
            limit,
            &format!("{n} runs of `down node-1`"),
        )
        .must();
        detected.push(crashed.elapsed());
    }
    sleep(HOLD);
    let downs = lab.runs_of("down", 1, mark).must();
    let mut monitors: Vec<String> = downs.iter().map(|run| run.monitor.clone()).collect();
    monitors.sort();
    assert_eq!(monitors, ["m1", "m2", "m3"], "{}", lab.context());
    eprintln!(
        "alone: {} after {detected:.2?} (timeout {:?})",
        describe(&downs),
        TIMING.timeout()
    );
    let runs = lab.runs_since(mark).must();
    assert_eq!(runs.len(), 3, "only the downs: {}", describe(&runs));

    // Back: each monitor runs its own `up`.
    let mark = lab.mark().must();
    let revived = lab.revive_node(1).must();
    lab.wait_until(
        |lab| lab.count("up", 1, mark) >= usize::from(MONITORS),
        UP_WITHIN,
        "3 runs of `up node-1`",
    )
    .must();
    eprintln!(
        "alone: 3 runs of `up node-1` {:.2?} after the restart",
        revived.elapsed()
    );

    // Monitor 1 cut off from the nodes: it alone convicts both (two nodes
    // are too few for its brake) and runs both downs; the others run
    // nothing. Restored, it runs both ups.
    let mark = lab.mark().must();
    lab.cut_nodes(1).must();
    let cut = Instant::now();
    lab.wait_until(
        |lab| lab.count("down", 1, mark) + lab.count("down", 2, mark) >= 2,
        limit,
        "monitor 1 to run `down` for both nodes",
    )
    .must();
    let convicted = cut.elapsed();
    sleep(HOLD);
    let runs = lab.runs_since(mark).must();
    assert!(
        runs.len() == 2
            && runs
                .iter()
                .all(|run| run.monitor == "m1" && run.event == "down"),
        "monitor 1 cut off: {}{}",
        describe(&runs),
        lab.context()
    );
    assert!(lab.all_nodes_are(1, "down"), "{}", lab.context());
    assert!(
        lab.all_nodes_are(2, "up") && lab.all_nodes_are(3, "up"),
        "{}",
        lab.context()
    );
    let mark = lab.mark().must();
    lab.restore_nodes(1).must();
    lab.wait_until(
        |lab| lab.count("up", 1, mark) + lab.count("up", 2, mark) >= 2,
        UP_WITHIN,
        "monitor 1 to run `up` for both nodes",
    )
    .must();
    let runs = lab.runs_since(mark).must();
    assert!(
        runs.iter()
            .all(|run| run.monitor == "m1" && run.event == "up"),
        "monitor 1 restored: {}{}",
        describe(&runs),
        lab.context()
    );
    eprintln!("alone: monitor 1 cut off from the nodes convicted both after {convicted:.2?}");
    finish(lab, start);
}

#[test]
fn a_crash_runs_one_down_and_one_up_in_the_group() {
    let _one = one_lab_at_a_time();
    let start = Instant::now();
    let (mut lab, mark) = ready_lab(group_options());

    let crashed = lab.crash_node(1).must();
    let limit = TIMING.timeout() + MARGIN;
    let (down, detected) = wait_run(&mut lab, "down", 1, mark, crashed, limit);
    eprintln!(
        "group: `down node-1` run by {} {detected:.2?} after the crash (timeout {:?}, limit \
         {limit:?})",
        down.monitor,
        TIMING.timeout()
    );
    exactly_one(&lab, "down", 1, mark);
    sleep(HOLD);
    exactly_one(&lab, "down", 1, mark);

    let revived = lab.revive_node(1).must();
    let (up, back) = wait_run(&mut lab, "up", 1, mark, revived, UP_WITHIN);
    eprintln!(
        "group: `up node-1` run by {} {back:.2?} after the restart",
        up.monitor
    );
    sleep(HOLD);
    exactly_one(&lab, "up", 1, mark);
    exactly_one(&lab, "down", 1, mark);
    let runs = lab.runs_since(mark).must();
    assert_eq!(
        runs.len(),
        2,
        "only node 1's down and up: {}",
        describe(&runs)
    );
    finish(lab, start);
}

#[test]
fn a_killed_leader_does_not_repeat_and_its_successor_acts() {
    let _one = one_lab_at_a_time();
    let start = Instant::now();
    let (mut lab, mark) = ready_lab(group_options());
    let leader = lab
        .leader()
        .unwrap_or_else(|| panic!("no leader{}", lab.context()));

    // The leader records node 1's incident and runs its down; it is killed
    // right after.
    let crashed = lab.crash_node(1).must();
    let limit = TIMING.timeout() + MARGIN;
    let (down, detected) = wait_run(&mut lab, "down", 1, mark, crashed, limit);
    lab.kill_agent(leader).must();
    let killed = Instant::now();
    assert_eq!(
        down.monitor,
        monitor_name(leader),
        "the leader runs the actions{}",
        lab.context()
    );
    let successor = lab
        .wait_until(
            |lab| lab.leader().filter(|&l| l != leader),
            LEASE_TTL + Duration::from_secs(5),
            "another monitor to lead",
        )
        .must();
    eprintln!(
        "group: `down node-1` run by leader {} {detected:.2?} after the crash; {} leads \
         {:.2?} after {}'s SIGKILL",
        down.monitor,
        monitor_name(successor),
        killed.elapsed(),
        down.monitor
    );
    exactly_one(&lab, "down", 1, mark);

    // A later crash: the new leader acts, once.
    let crashed = lab.crash_node(2).must();
    let (down, detected) = wait_run(&mut lab, "down", 2, mark, crashed, limit);
    assert_eq!(
        down.monitor,
        monitor_name(successor),
        "the new leader runs the actions{}",
        lab.context()
    );
    eprintln!(
        "group: `down node-2` run by the new leader {} {detected:.2?} after the crash",
        down.monitor
    );
    sleep(HOLD);
    exactly_one(&lab, "down", 1, mark);
    exactly_one(&lab, "down", 2, mark);

    // The killed monitor comes back (its state file says it ran node 1's
    // down, and knew node 2 up): it joins and nothing runs again.
    let restarted = Instant::now();
    lab.start_agent(leader).must();
    lab.wait_until(
        |lab| lab.group_is_settled(),
        LEASE_TTL + MARGIN,
        "the restarted monitor to join the group",
    )
    .must();
    eprintln!(
        "group: {} back and voting {:.2?} after its restart; leader {}",
        monitor_name(leader),
        restarted.elapsed(),
        lab.leader().map(monitor_name).unwrap_or_default()
    );
    sleep(HOLD);
    exactly_one(&lab, "down", 1, mark);
    exactly_one(&lab, "down", 2, mark);
    let runs = lab.runs_since(mark).must();
    assert_eq!(runs.len(), 2, "only the two downs: {}", describe(&runs));
    finish(lab, start);
}

#[test]
fn a_monitor_cut_off_from_the_nodes_is_outvoted() {
    let _one = one_lab_at_a_time();
    let start = Instant::now();
    let (mut lab, mark) = ready_lab(group_options());

    for phase in ["a follower", "the leader"] {
        let leader = lab
            .leader()
            .unwrap_or_else(|| panic!("no leader{}", lab.context()));
        let cut = if phase == "the leader" {
            leader
        } else {
            (1..=MONITORS).find(|&i| i != leader).expect("3 monitors")
        };
        let name = monitor_name(cut);
        lab.cut_nodes(cut).must();
        let cut_at = Instant::now();
        // It hears nobody: it convicts every node, locally.
        lab.wait_until(
            |lab| lab.all_nodes_are(cut, "down"),
            TIMING.timeout() + MARGIN,
            &format!("{phase} {name} cut off from the nodes to see them all down"),
        )
        .must();
        let convicted = cut_at.elapsed();
        sleep(QUIET);
        assert_quiet(
            &lab,
            mark,
            &format!("{phase} {name} cut off from the nodes"),
        );
        for other in (1..=MONITORS).filter(|&i| i != cut) {
            assert!(
                lab.all_nodes_are(other, "up"),
                "monitor {other} lost nodes{}",
                lab.context()
            );
        }
        // Its status shows the dispute: its own opinion down, the
        // group's verdict up.
        let nodes = lab.node_indexes();
        let disputed = lab
            .wait_until(
                |lab| {
                    let disputed = lab.group_status(cut)?["disputed"].clone();
                    let entries = disputed.as_array()?;
                    nodes
                        .iter()
                        .all(|&node| {
                            entries.iter().any(|entry| {
                                entry["id"] == u64::from(node)
                                    && entry["verdict"] == "up"
                                    && entry["opinions"][&name] == "down"
                            })
                        })
                        .then_some(disputed)
                },
                MARGIN,
                &format!("{name}'s status to show every node disputed, its opinion down"),
            )
            .must();
        eprintln!(
            "group: {phase} {name} cut off from the nodes saw them all down after \
             {convicted:.2?}, outvoted for {QUIET:?}: nothing ran; disputed: {disputed}"
        );

        // Restored: it hears them again; the group's verdict never changed.
        lab.restore_nodes(cut).must();
        lab.wait_ready(UP_WITHIN + LEASE_TTL).must();
        assert_quiet(&lab, mark, &format!("{phase} {name} restored"));
    }
    finish(lab, start);
}

#[test]
fn a_cut_off_monitor_s_brake_keeps_its_mass_failure_out_of_etcd() {
    let _one = one_lab_at_a_time();
    let start = Instant::now();
    // Four nodes: all going silent at once is a partition to the brake
    // (its default share 0.55, at least 3 nodes).
    let (mut lab, mark) = ready_lab(group_options().nodes(4));
    let leader = lab
        .leader()
        .unwrap_or_else(|| panic!("no leader{}", lab.context()));
    let cut = (1..=MONITORS).find(|&i| i != leader).expect("3 monitors");
    lab.cut_nodes(cut).must();
    let engaged = lab
        .wait_until(
            |lab| {
                let status = lab.status(cut).ok()?;
                (status["brake"]["engaged"] == true && lab.all_nodes_are(cut, "down"))
                    .then_some(status)
            },
            TIMING.timeout() + MARGIN,
            "the cut-off monitor's brake to engage",
        )
        .must();
    sleep(QUIET);
    assert_quiet(
        &lab,
        mark,
        "a monitor cut off from every node, its brake engaged",
    );
    // Held by its brake: none of it reached etcd.
    let group = lab.group_status(cut).expect("its group status");
    assert_eq!(group["holding_down"], 0, "{group}");
    assert_eq!(
        group["disputed"].as_array().map(Vec::len),
        Some(0),
        "{group}"
    );
    eprintln!(
        "group: monitor m{cut} cut off from the 4 nodes: brake engaged ({} held), nothing \
         published, nothing ran for {QUIET:?}",
        engaged["brake"]["held"]
    );
    lab.restore_nodes(cut).must();
    lab.wait_ready(UP_WITHIN + LEASE_TTL).must();
    sleep(HOLD);
    assert_quiet(&lab, mark, "the cut-off monitor restored");
    finish(lab, start);
}

#[test]
fn a_monitor_cut_off_from_etcd_never_acts() {
    let _one = one_lab_at_a_time();
    let start = Instant::now();
    let (mut lab, mark) = ready_lab(group_options());
    let cut = lab
        .leader()
        .unwrap_or_else(|| panic!("no leader{}", lab.context()));
    let name = monitor_name(cut);

    lab.cut_etcd(cut).must();
    let cut_at = Instant::now();
    lab.wait_until(
        |lab| lab.quorum(cut) == Some(false),
        NO_QUORUM_WITHIN,
        &format!("{name} cut off from etcd to report no quorum"),
    )
    .must();
    let lost = cut_at.elapsed();
    assert_eq!(
        lab.role(cut).as_deref(),
        Some("no quorum"),
        "{}",
        lab.context()
    );
    eprintln!(
        "group: leader {name} cut off from etcd reports no quorum after {lost:.2?} (lease_ttl \
         {LEASE_TTL:?})"
    );

    // The other two elect a leader once the cut-off one's lease expired,
    // and act once; the cut-off monitor, which still hears the nodes,
    // convicts node 1 locally and runs nothing.
    let crashed = lab.crash_node(1).must();
    let limit = LEASE_TTL + TIMING.timeout() + Duration::from_secs(5);
    let (down, detected) = wait_run(&mut lab, "down", 1, mark, crashed, limit);
    assert_ne!(
        down.monitor,
        name,
        "the cut-off monitor acted{}",
        lab.context()
    );
    eprintln!(
        "group: `down node-1` run by {} {detected:.2?} after the crash ({:.2?} after the cut)",
        down.monitor,
        cut_at.elapsed()
    );
    sleep(QUIET);
    exactly_one(&lab, "down", 1, mark);
    assert_eq!(
        lab.node_state(cut, 1).as_deref(),
        Some("down"),
        "{name} detects locally{}",
        lab.context()
    );
    let from_cut: Vec<Run> = lab
        .runs_since(mark)
        .must()
        .into_iter()
        .filter(|run| run.monitor == name)
        .collect();
    assert!(from_cut.is_empty(), "{name} ran {}", describe(&from_cut));

    // Healed: it rejoins; the incident is not run again.
    lab.restore_etcd(cut).must();
    let healed = Instant::now();
    lab.wait_until(
        |lab| lab.quorum(cut) == Some(true),
        LEASE_TTL + Duration::from_secs(10),
        &format!("{name} to have a quorum again"),
    )
    .must();
    eprintln!(
        "group: {name} has a quorum again {:.2?} after the heal",
        healed.elapsed()
    );
    sleep(HOLD);
    exactly_one(&lab, "down", 1, mark);
    let runs = lab.runs_since(mark).must();
    assert_eq!(runs.len(), 1, "only node 1's down: {}", describe(&runs));
    finish(lab, start);
}

#[test]
fn without_an_etcd_majority_nobody_acts_and_then_once() {
    let _one = one_lab_at_a_time();
    let start = Instant::now();
    let (mut lab, mark) = ready_lab(group_options());

    lab.etcd_stop(2).must();
    lab.etcd_stop(3).must();
    let stopped = Instant::now();
    lab.wait_until(
        |lab| (1..=MONITORS).all(|i| lab.quorum(i) == Some(false)),
        NO_QUORUM_WITHIN,
        "every monitor to report no quorum",
    )
    .must();
    eprintln!(
        "group: etcd members 2 and 3 stopped: every monitor reports no quorum after {:.2?}",
        stopped.elapsed()
    );

    // Local detection goes on; nobody acts.
    let crashed = lab.crash_node(1).must();
    lab.wait_until(
        |lab| (1..=MONITORS).all(|i| lab.node_state(i, 1).as_deref() == Some("down")),
        TIMING.timeout() + MARGIN,
        "every monitor to see node 1 down",
    )
    .must();
    let local = crashed.elapsed();
    sleep(QUIET);
    assert_quiet(&lab, mark, "no etcd majority");
    assert!(
        (1..=MONITORS).all(|i| lab.quorum(i) == Some(false)),
        "{}",
        lab.context()
    );
    eprintln!(
        "group: without a majority every monitor saw node 1 down after {local:.2?}; nothing ran \
         for {:.2?}",
        crashed.elapsed()
    );

    // etcd back: the group reconciles and acts once for what is still true.
    lab.etcd_start(2).must();
    lab.etcd_start(3).must();
    let restarted = Instant::now();
    let (down, back) = wait_run(
        &mut lab,
        "down",
        1,
        mark,
        restarted,
        LEASE_TTL + Duration::from_secs(10),
    );
    eprintln!(
        "group: etcd members restarted: `down node-1` run by {} {back:.2?} later",
        down.monitor
    );
    sleep(HOLD);
    exactly_one(&lab, "down", 1, mark);
    let runs = lab.runs_since(mark).must();
    assert_eq!(runs.len(), 1, "only node 1's down: {}", describe(&runs));
    finish(lab, start);
}
