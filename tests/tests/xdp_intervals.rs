//! The XDP program's interval estimates (the interval words of `HB_NODES`),
//! through `BPF_PROG_TEST_RUN` with real pauses between runs (needs root): samples
//! are divided by the sequence gap, and replays, restarts and outages give
//! none. Arrival times are the kernel's clock, so bounds are generous.

pub mod common;

use std::{thread, time::Duration};

use hb::datapath::xdp::{LoadOptions, XdpDatapath};
use hb_common::{
    admission::Unauthenticated,
    table::{NodeRecord, intervals},
    wire::Heartbeat,
};
use hb_tools::frame::eth;

use crate::common::{PORT, run};

const NODE: u32 = 3;
const PAUSE: Duration = Duration::from_millis(20);

fn beat(incarnation: u64, sequence: u64) -> Vec<u8> {
    let payload = Heartbeat {
        flags: 0,
        key_id: 0,
        node_id: NODE,
        interval_ms: 20,
        incarnation,
        sequence,
        sent_unix_ns: 0,
        auth_tag: [0; 16],
    }
    .encode();
    eth()
        .ipv4([198, 18, 0, 2].into(), [198, 18, 0, 1].into())
        .udp(40_000, PORT)
        .payload(&payload)
        .build()
}

fn estimate(dp: &XdpDatapath) -> (u32, u32) {
    let word = dp.table().intervals.get(NODE);
    (intervals::mean_us(word), intervals::mad_us(word))
}

#[test]
fn interval_estimates_follow_the_sender_and_ignore_gaps_replays_and_restarts() {
    let mut dp = common::load(LoadOptions {
        port: PORT,
        max_nodes: 8,
        pass_heartbeats: false,
        unauthenticated: Unauthenticated::Accept,
    });
    dp.table().configure(NODE, NodeRecord::default());
    // A pause of 20 ms (sleep overshoots, never undershoots).
    let plausible = 19_000..60_000;

    run(&mut dp, &beat(1, 1));
    assert_eq!(estimate(&dp), (0, 0), "one heartbeat is no interval");
    for sequence in 2..=8 {
        thread::sleep(PAUSE);
        run(&mut dp, &beat(1, sequence));
    }
    let (mean, _) = estimate(&dp);
    assert!(
        plausible.contains(&mean),
        "mean {mean} µs after 20 ms pauses"
    );

    // Two heartbeats lost: three pauses, a gap of three sequence numbers.
    thread::sleep(PAUSE * 3);
    run(&mut dp, &beat(1, 11));
    let (after_gap, _) = estimate(&dp);
    assert!(
        plausible.contains(&after_gap),
        "mean {after_gap} µs after a gap of 3: lost heartbeats are not a long interval"
    );

    let unchanged = estimate(&dp);
    thread::sleep(PAUSE);
    run(&mut dp, &beat(1, 11));
    assert_eq!(estimate(&dp), unchanged, "a replay is no sample");
    thread::sleep(PAUSE * 10);
    run(&mut dp, &beat(2, 1));
    assert_eq!(estimate(&dp), unchanged, "a restart is no sample");
    thread::sleep(PAUSE * 10);
    run(&mut dp, &beat(2, 1 + intervals::MAX_GAP + 1));
    assert_eq!(estimate(&dp), unchanged, "an outage is no sample");
    thread::sleep(PAUSE);
    run(&mut dp, &beat(2, 1 + intervals::MAX_GAP + 2));
    assert_ne!(
        estimate(&dp),
        unchanged,
        "the next heartbeat is a sample again"
    );
}
