//! The XDP datapath outlives the agent: real XDP programs on veth pairs in
//! network namespaces, pinned in the host's bpffs (root only).
//!
//! - SIGTERM and SIGKILL leave the program attached and recording (the
//!   pinned counters and node record keep counting while no agent runs);
//!   the restarted agent adopts it; a second agent on the instance is
//!   refused; `hb detach` leaves no program and no pin (and says so when
//!   run again).
//! - Upgrade: a program that differs in code only replaces the running one
//!   (a new program id on the link) and keeps the maps, losing no
//!   heartbeat sent during the switch.
//! - A pinned node table of another size, or maps of another layout
//!   version, are refused with the message saying what to do; so is a
//!   second datapath on a locked instance.
//!
//! Every lab is its own instance, and the lab (or a [`PinGuard`]) removes
//! its pins even when a test fails.

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData, PerCpuArray};
use hb::datapath::{
    pins::{self, InstanceDir},
    xdp::{LoadOptions, VARIANT_TEST_OBJECT, XdpDatapath, XdpMode},
};
use hb_common::{
    admission::Unauthenticated,
    counters::{Counter, CounterBlock},
    globals::{self, LAYOUT_VERSION},
    table::{NodeRecord, NodeSlot},
};
use hb_tests::{
    HEARTBEAT_PORT, Hb, Lab, NetNs, PinGuard, Signal, TempDir, TestConfig, Timing, is_root,
    unique_prefix, wait_for_event, wait_for_line,
};

const TIMING: Timing = Timing::FAST;
const READY_WITHIN: Duration = Duration::from_secs(10);
const EXIT_WITHIN: Duration = Duration::from_secs(10);
const UP_WITHIN: Duration = Duration::from_secs(5);

fn options(max_nodes: u32) -> LoadOptions {
    LoadOptions {
        port: HEARTBEAT_PORT,
        max_nodes,
        pass_heartbeats: false,
        unauthenticated: Unauthenticated::Accept,
    }
}

fn require_root() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root (run `cargo xtask test` as root)");
    }
    is_root()
}

/// The pinned `HB_COUNTERS`' accepted count, summed over CPUs, read
/// without any agent.
fn pinned_accepted(instance: &str) -> u64 {
    let path = InstanceDir::new(instance)
        .unwrap()
        .map_pin(globals::COUNTERS_MAP);
    let map = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let counters: PerCpuArray<_, CounterBlock> =
        PerCpuArray::try_from(Map::PerCpuArray(map)).unwrap();
    counters
        .get(&0, 0)
        .unwrap()
        .iter()
        .map(|block| block.values()[Counter::Accepted as usize])
        .sum()
}

/// Node `id`'s pinned record, read without any agent.
fn pinned_record(instance: &str, id: u32) -> NodeRecord {
    let path = InstanceDir::new(instance)
        .unwrap()
        .map_pin(globals::NODES_MAP);
    let map = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let slots: Array<_, NodeSlot> = Array::try_from(Map::Array(map)).unwrap();
    slots.get(&id, 0).unwrap().record
}

/// `hb agent --config CONFIG` in the monitor's namespace, seeing the
/// host's bpffs (as [`Hb::spawn_in`] runs it).
fn agent_command(hb: &Hb, lab: &Lab, config: &TestConfig, dir: &TempDir) -> Command {
    let mountpoint = dir.join("refused.bpffs");
    std::fs::create_dir_all(&mountpoint).unwrap();
    let mut cmd = hb_tests::pins::shared_bpffs_command(lab.monitor.name(), hb.path(), &mountpoint);
    cmd.args([
        "agent".as_ref(),
        "--config".as_ref(),
        config.path.as_os_str(),
    ]);
    cmd
}

/// Polls `value` until `done` holds (at most `within`).
fn wait_until<T: std::fmt::Debug>(
    what: &str,
    within: Duration,
    mut value: impl FnMut() -> T,
    mut done: impl FnMut(&T) -> bool,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let current = value();
        if done(&current) {
            return current;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}, last {current:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then SIGKILL: each time the program stays attached, the kernel
/// keeps recording heartbeats with no agent running, and the restarted
/// agent adopts the pins and reports the counters the kernel kept. A
/// second agent on the instance is refused. `hb detach` removes
/// everything, and is idempotent.
#[test]
fn restarts_leave_the_program_recording_and_detach_removes_it() {
    if !require_root() {
        return;
    }
    let hb = Hb::from_env();
    let lab = Lab::build(&unique_prefix(), 1).unwrap_or_else(|err| panic!("{err}"));
    let instance = lab.instance().to_owned();
    let interface = lab.node(1).monitor_interface.clone();
    let dir = TempDir::new("hb-lifecycle").unwrap_or_else(|err| panic!("{err}"));
    let config = TestConfig::write(&dir, &lab, TIMING).unwrap_or_else(|err| panic!("{err}"));
    let mut agent = hb
        .start_agent(&lab, &config, &dir.join("agent-1.log"), READY_WITHIN)
        .unwrap_or_else(|err| panic!("the agent did not become ready: {err}"));
    let _sender = hb
        .start_sender(&lab, 1, TIMING.interval, &dir.join("sender-1.log"))
        .unwrap_or_else(|err| panic!("{err}"));
    wait_for_event(
        &config.events,
        |e| e.is("up", 1),
        Instant::now() + UP_WITHIN,
        "node 1 up",
    )
    .unwrap_or_else(|err| panic!("{err}\n{}", agent.log_tail(30)));

    let refused = agent_command(&hb, &lab, &config, &dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a second agent ran: {stderr}");
    assert!(
        stderr.contains(&format!("another hb agent drives instance `{instance}`")),
        "the second agent's refusal does not name the instance: {stderr}"
    );

    for (round, signal) in [(2, Signal::Term), (3, Signal::Kill)] {
        agent
            .stop(signal, EXIT_WITHIN)
            .unwrap_or_else(|err| panic!("{err}"));
        let attached = lab.monitor_xdp(&interface).unwrap();
        assert!(
            attached.is_some(),
            "no XDP program on {interface} after {}: {}",
            signal.name(),
            agent.log_tail(20)
        );
        // Recorded with no agent: the counters and the node's record move.
        let accepted = pinned_accepted(&instance);
        let heartbeats = pinned_record(&instance, 1).heartbeats;
        let later = wait_until(
            "heartbeats recorded with no agent running",
            TIMING.interval * 10,
            || {
                (
                    pinned_accepted(&instance),
                    pinned_record(&instance, 1).heartbeats,
                )
            },
            |&(a, h)| a >= accepted + 3 && h >= heartbeats + 3,
        );

        let log = dir.join(&format!("agent-{round}.log"));
        agent = hb
            .start_agent(&lab, &config, &log, READY_WITHIN)
            .unwrap_or_else(|err| panic!("the agent did not become ready: {err}"));
        wait_for_line(
            &log,
            0,
            |line| line.contains("adopting the pinned XDP program"),
            Instant::now() + READY_WITHIN,
            "the restarted agent adopting the pins",
        )
        .unwrap_or_else(|err| panic!("{err}\n{}", agent.log_tail(30)));
        let status = hb.status_json(&config.socket).unwrap();
        let reported = status["counters"]["accepted"].as_u64().unwrap_or(0);
        assert!(
            reported >= later.0,
            "the restarted agent reports {reported} accepted, the kernel had counted {} \
             before it started: {status}",
            later.0
        );
    }

    agent
        .stop(Signal::Term, EXIT_WITHIN)
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(
        !hb_tests::pins::list(&instance).is_empty(),
        "nothing pinned after the agent stopped"
    );
    let said = hb.detach(&instance).unwrap_or_else(|err| panic!("{err}"));
    assert!(
        said.contains(&format!("detached the XDP program from {interface}")),
        "hb detach said: {said}"
    );
    assert_eq!(
        lab.monitor_xdp(&interface).unwrap(),
        None,
        "XDP still on {interface} after hb detach"
    );
    assert_eq!(
        hb_tests::pins::list(&instance),
        Vec::<String>::new(),
        "pins left after hb detach"
    );
    let again = hb.detach(&instance).unwrap_or_else(|err| panic!("{err}"));
    assert!(
        again.contains(&format!("nothing pinned for instance {instance}")),
        "a second hb detach said: {again}"
    );
}

/// Runs `f` on a thread inside `ns` (what an agent in that namespace sees).
fn in_namespace<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                hb_tests::netns::enter(&ns.path()).unwrap_or_else(|err| panic!("{err}"));
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The id of the program the XDP link of `interface` runs, from its pin.
fn linked_program(instance: &str, interface: &str) -> u32 {
    let pinned = InstanceDir::new(instance).unwrap().scan().unwrap();
    let link = pinned
        .links
        .iter()
        .find(|link| link.interface == interface)
        .unwrap_or_else(|| panic!("no link pinned for {interface}: {pinned:?}"));
    pins::link_state(&link.path).unwrap().program_id
}

/// A program that differs in code only (the `hb_variant` build) replaces
/// the running one on its link (`bpf_link_update`) and keeps the maps: the
/// record and the counters go on from where they were, and every
/// heartbeat a fast sender sent across the switch was recorded (the
/// record's count moved as far as its sequence).
#[test]
fn a_changed_program_replaces_the_running_one_keeping_the_maps() {
    if !require_root() {
        return;
    }
    let hb = Hb::from_env();
    let lab = Lab::build(&unique_prefix(), 1).unwrap_or_else(|err| panic!("{err}"));
    let instance = lab.instance().to_owned();
    let interface = lab.node(1).monitor_interface.clone();
    let dir = TempDir::new("hb-upgrade").unwrap_or_else(|err| panic!("{err}"));
    let interfaces = [interface.clone()];

    let first = in_namespace(&lab.monitor, || {
        let mut dp = XdpDatapath::open(options(16), &instance).unwrap_or_else(|e| panic!("{e}"));
        assert!(!dp.adopted(), "nothing was pinned before");
        dp.table().configure(1, NodeRecord::default());
        dp.attach_all(&interfaces, XdpMode::Auto)
            .unwrap_or_else(|e| panic!("{e}"));
        dp.program_id().unwrap()
        // Dropped: the pinned program stays attached.
    });
    assert_eq!(linked_program(&instance, &interface), first);

    let mut sender = hb
        .start_sender(
            &lab,
            1,
            Duration::from_millis(10),
            &dir.join("sender-1.log"),
        )
        .unwrap_or_else(|err| panic!("{err}"));
    let before = wait_until(
        "the first heartbeats",
        UP_WITHIN,
        || pinned_record(&instance, 1),
        |record| record.heartbeats >= 20,
    );
    let accepted_before = pinned_accepted(&instance);

    let second = in_namespace(&lab.monitor, || {
        let mut dp = XdpDatapath::open_object(VARIANT_TEST_OBJECT, options(16), &instance)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(dp.adopted(), "the node table was pinned");
        dp.attach_all(&interfaces, XdpMode::Auto)
            .unwrap_or_else(|e| panic!("{e}"));
        let record = dp.table().records.get(1);
        assert!(
            record.heartbeats >= before.heartbeats && record.incarnation == before.incarnation,
            "the node's record was not kept: {record:?} after {before:?}"
        );
        dp.program_id().unwrap()
    });
    assert_ne!(first, second, "the variant did not replace the program");
    assert_eq!(
        linked_program(&instance, &interface),
        second,
        "the link does not run the new program"
    );
    let shown = lab.monitor_xdp(&interface).unwrap().unwrap_or_default();
    let ip = lab
        .monitor
        .ip(["-d", "link", "show", "dev", &interface])
        .unwrap();
    let ip = String::from_utf8_lossy(&ip.stdout);
    assert!(
        ip.contains(&format!("prog/xdp id {second} ")),
        "ip link does not show program {second} on {interface}: {shown}\n{ip}"
    );
    let pinned = InstanceDir::new(&instance).unwrap().scan().unwrap();
    assert_eq!(
        pinned.programs.len(),
        1,
        "the previous program's pin was not removed: {pinned:?}"
    );

    thread::sleep(Duration::from_millis(300));
    sender
        .stop(Signal::Kill, EXIT_WITHIN)
        .unwrap_or_else(|err| panic!("{err}"));
    thread::sleep(Duration::from_millis(100));
    let after = pinned_record(&instance, 1);
    let accepted_after = pinned_accepted(&instance);
    let recorded = after.heartbeats - before.heartbeats;
    assert!(recorded >= 20, "{recorded} heartbeats after the switch");
    assert_eq!(
        recorded,
        after.sequence - before.sequence,
        "heartbeats lost across the switch: sequence {} -> {}, recorded {recorded}",
        before.sequence,
        after.sequence
    );
    assert_eq!(
        accepted_after - accepted_before,
        recorded,
        "the counters did not go on from where they were"
    );
    hb.detach(&instance).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(lab.monitor_xdp(&interface).unwrap(), None);
}

/// A pinned node table of another size than `max_nodes`, and maps of
/// another layout version, are refused with what differs and the two ways
/// on; nothing pinned is touched.
#[test]
fn a_layout_or_size_mismatch_is_refused_with_the_fix() {
    if !require_root() {
        return;
    }
    hb_tests::pins::ensure_bpffs().unwrap_or_else(|err| panic!("{err}"));
    let instance = unique_prefix();
    let _pins = PinGuard::new(&instance);
    let dir = InstanceDir::new(&instance).unwrap();
    drop(XdpDatapath::open(options(16), &instance).unwrap_or_else(|e| panic!("{e}")));

    let message = match XdpDatapath::open(options(32), &instance) {
        Ok(_) => panic!("a node table of 16 was opened with max_nodes = 32"),
        Err(e) => e.to_string(),
    };
    for needle in [
        format!("{}", dir.layout_dir(LAYOUT_VERSION).display()),
        "holds 16 nodes but max_nodes is 32".to_owned(),
        "set max_nodes back to 16".to_owned(),
        format!("`hb detach --instance {instance}`"),
        "state file keeps".to_owned(),
    ] {
        assert!(message.contains(&needle), "{needle:?} not in: {message}");
    }
    let reopened = XdpDatapath::open(options(16), &instance).unwrap_or_else(|e| panic!("{e}"));
    assert!(reopened.adopted(), "the refusal removed the pins");
    drop(reopened);

    let other = dir.layout_dir(LAYOUT_VERSION + 1);
    std::fs::create_dir(&other).unwrap();
    let message = match XdpDatapath::open(options(16), &instance) {
        Ok(_) => panic!("maps of layout {} were opened", LAYOUT_VERSION + 1),
        Err(e) => e.to_string(),
    };
    for needle in [
        format!("{} holds the maps of layout version", other.display()),
        format!("this hb uses layout version {LAYOUT_VERSION}"),
        format!("`hb detach --instance {instance}`"),
    ] {
        assert!(message.contains(&needle), "{needle:?} not in: {message}");
    }
}

/// While a datapath holds an instance, a second one is refused (naming the
/// instance and the lock), and so is removing its pins; once it is gone
/// both work.
#[test]
fn a_second_datapath_on_an_instance_is_refused() {
    if !require_root() {
        return;
    }
    hb_tests::pins::ensure_bpffs().unwrap_or_else(|err| panic!("{err}"));
    let instance = unique_prefix();
    let _pins = PinGuard::new(&instance);
    let first = XdpDatapath::open(options(16), &instance).unwrap_or_else(|e| panic!("{e}"));
    let message = match XdpDatapath::open(options(16), &instance) {
        Ok(_) => panic!("two datapaths opened instance {instance}"),
        Err(e) => e.to_string(),
    };
    for needle in [
        format!("another hb agent drives instance `{instance}`"),
        format!("/run/hb/{instance}.lock"),
    ] {
        assert!(message.contains(&needle), "{needle:?} not in: {message}");
    }
    let refused = pins::remove(&instance)
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert!(
        matches!(&refused, Err(e) if e.contains("another hb agent drives")),
        "hb detach ran under a live agent: {refused:?}"
    );
    drop(first);
    XdpDatapath::open(options(16), &instance).unwrap_or_else(|e| panic!("{e}"));
    let removed = pins::remove(&instance).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        removed.programs == 1 && removed.links.is_empty(),
        "{removed:?}"
    );
    assert!(!hb_tests::pins::instance_dir(&instance).exists());
}
