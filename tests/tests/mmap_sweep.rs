//! The agent's sweep reads exactly what the XDP program wrote, through the
//! memory mappings of the real BPF maps: heartbeats are fed to the loaded
//! program with `BPF_PROG_TEST_RUN`, then the detector sweeps the mapped
//! table (needs root). Covers the first and the last slot of the table and
//! ids at and beyond `max_nodes`.

use aya::programs::{TestRun, TestRunOptions};
use hb::{
    clock::monotonic_ns,
    datapath::xdp::{LoadOptions, XdpDatapath},
    detect::detector::{Detector, DetectorSettings, NodeState, Transition, WatchedNode},
};
use hb_common::{
    admission::Unauthenticated,
    counters::Counter,
    table::{NodeRecord, seen},
    wire::{DEFAULT_PORT, Heartbeat, flags},
};
use hb_tools::bench::ipv4_udp_frame;

const MAX_NODES: u32 = 4096;
const XDP_DROP: u32 = 1;

fn heartbeat(node_id: u32, sequence: u64, leave: bool) -> Heartbeat {
    Heartbeat {
        flags: if leave { flags::LEAVE } else { 0 },
        key_id: 0,
        node_id,
        interval_ms: 250,
        incarnation: 7,
        sequence,
        sent_unix_ns: 1_700_000_000_000_000_000 + sequence,
        auth_tag: [0; 16],
    }
}

fn run(datapath: &mut XdpDatapath, hb: &Heartbeat) {
    let frame = ipv4_udp_frame(DEFAULT_PORT, &hb.encode());
    let program = datapath.program().expect("the XDP program");
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat: 1,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN (are we root?)");
    assert_eq!(
        result.return_value, XDP_DROP,
        "a heartbeat is consumed: {hb:?}"
    );
}

#[test]
fn the_sweep_sees_exactly_what_the_kernel_wrote() {
    let mut datapath = XdpDatapath::load(LoadOptions {
        port: DEFAULT_PORT,
        max_nodes: MAX_NODES,
        pass_heartbeats: false,
        unauthenticated: Unauthenticated::Accept,
    })
    .expect("loading the XDP program (are we root?)");
    assert_eq!(datapath.table().len(), MAX_NODES);
    let last = MAX_NODES - 1;
    let watched = [0, 1, last];
    for id in watched {
        datapath.table().configure(id, NodeRecord::default());
    }
    let settings = DetectorSettings::plain_timeout(1_000_000_000, 3);
    let nodes: Vec<_> = watched
        .iter()
        .map(|&node_id| WatchedNode {
            node_id,
            interval_ns: None,
        })
        .collect();
    let mut detector = Detector::new(settings, MAX_NODES, &nodes, monotonic_ns());

    let before = monotonic_ns();
    run(&mut datapath, &heartbeat(0, 1, false));
    run(&mut datapath, &heartbeat(last, 5, true));
    run(&mut datapath, &heartbeat(MAX_NODES, 1, false)); // just beyond the table
    run(&mut datapath, &heartbeat(u32::MAX, 1, false));
    run(&mut datapath, &heartbeat(2, 1, false)); // in the table, not configured
    let after = monotonic_ns();

    // The mappings show the kernel's writes, field by field.
    let table = datapath.table();
    for (id, hb) in [
        (0, heartbeat(0, 1, false)),
        (last, heartbeat(last, 5, true)),
    ] {
        let record = table.records.get(id);
        assert_eq!(
            (
                record.incarnation,
                record.sequence,
                record.heartbeats,
                record.sent_unix_ns,
                record.interval_ms
            ),
            (
                hb.incarnation,
                hb.sequence,
                1,
                hb.sent_unix_ns,
                hb.interval_ms
            ),
            "node {id}"
        );
        assert_eq!(
            record.src_addr[10..],
            [0xff, 0xff, 198, 18, 0, 2],
            "node {id}: source 198.18.0.2"
        );
        let word = table.seen.get(id);
        assert!(
            (seen::arrival_ns(before)..=after).contains(&seen::arrival_ns(word)),
            "node {id}: arrival"
        );
        assert_eq!(seen::is_leave(word), hb.is_leave(), "node {id}: leave bit");
    }
    for id in [1, 2] {
        assert_eq!(table.seen.get(id), 0, "node {id} was not heard");
        assert_eq!(
            table.records.get(id).heartbeats,
            0,
            "node {id} was not heard"
        );
    }
    let counters = datapath.counters().expect("counters");
    assert_eq!(counters[Counter::Accepted as usize], 2);
    assert_eq!(
        counters[Counter::UnknownNode as usize],
        3,
        "ids at and beyond max_nodes, and an unconfigured one"
    );
    assert_eq!(
        counters[Counter::Dropped as usize],
        5,
        "unknown nodes are counted and dropped"
    );

    // And the detector, reading the same mappings, sees them.
    let mut transitions = Vec::new();
    detector.sweep(monotonic_ns(), datapath.table(), &mut transitions);
    transitions.sort_by_key(|t| t.node_id);
    let changes: Vec<_> = transitions
        .iter()
        .map(|t: &Transition| (t.node_id, t.from, t.to))
        .collect();
    assert_eq!(
        changes,
        vec![
            (0, NodeState::Unseen, NodeState::Up),
            (last, NodeState::Unseen, NodeState::Left)
        ]
    );
    assert_eq!(detector.state(1), NodeState::Unseen);
}
