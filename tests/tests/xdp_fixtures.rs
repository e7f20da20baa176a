//! `BPF_PROG_TEST_RUN` fixtures for hb's XDP program (needs root).
//!
//! Each table loads its own datapath (port [`PORT`](common::PORT),
//! [`MAX_NODES`](fixtures::MAX_NODES) slots,
//! [`CONFIGURED`](fixtures::CONFIGURED) marked configured) and runs its rows
//! ([`fixtures::rows`]) in order. A row gives the frame, the XDP action, the
//! outcome counter (the verdict counter follows from the action) and the
//! node-table effect: nothing, or one node recorded with the heartbeat's
//! fields and `heartbeats + 1` in its cold record, and a seen word whose
//! arrival time lies between `CLOCK_MONOTONIC` readings taken around the run
//! and whose leave bit is the heartbeat's.
//! Every other counter and every other slot must stay as it was. All rows run
//! and the failures are reported together; after each table, the sum of the
//! outcome counters, the number of packets run and `passed + dropped` must
//! agree.
//!
//! Rejected heartbeats carry a node id and sequence that *would* be accepted,
//! so a row only passes if the program rejects it for the stated reason.
//!
//! The kernel will not run the program on a frame shorter than an Ethernet
//! header, with or without XDP metadata in front of it (EINVAL, asserted in
//! [`test_run_refuses_frames_shorter_than_ethernet`]), so the empty packet
//! and "truncated inside Ethernet" are pinned as refused rather than run.
//!
//! A seeded hostile sample ([`hostile_sample`]) mutates valid heartbeats and
//! predicts each payload mutation's outcome with `Heartbeat::decode` and
//! `NodeRecord::accepts`; header mutations and random frames are held to the
//! weaker property that only an accepted, advancing heartbeat of a configured
//! node changes the table.

pub mod common;
mod fixtures;

use std::time::Instant;

use aya::programs::ProgramError;
use hb_common::counters::Counter;
use hb_tools::{
    frame::{ETH_HLEN, IPV4_HLEN, IPV6_HLEN},
    rng,
};
use rand::Rng as _;

use crate::{
    common::test_run,
    fixtures::{
        beat,
        harness::{Harness, show_deltas},
        hostile::{header_mutation, payload_mutation},
        not_heartbeat, rows, v4, v6,
    },
};

#[test]
fn fixture_table() {
    let started = Instant::now();
    let rows = rows::main_rows();
    let mut harness = Harness::load("fixture table", false);
    harness.run_table(&rows);
    harness.finish();
    eprintln!(
        "fixture table: {} rows in {:?}",
        rows.len(),
        started.elapsed()
    );
}

#[test]
fn pass_heartbeats_table() {
    let rows = rows::pass_heartbeats_rows();
    let mut harness = Harness::load("pass_heartbeats table", true);
    harness.run_table(&rows);
    harness.finish();
}

/// A frame that ends inside the UDP header is not parseable as UDP, so it
/// is `NotHeartbeat` (counters.rs: "not a UDP packet to the heartbeat port
/// (or not parseable as one)"; parse.rs: "a short packet is an Err") even
/// when the 6 bytes that are there name the heartbeat port and length 64.
#[test]
fn udp_header_cut_after_the_length_field() {
    let payload = beat(1, 1, 1).encode();
    let mut rows = Vec::new();
    for cut in [6, 7] {
        rows.push(not_heartbeat(
            format!("IPv4, truncated inside UDP ({cut} of 8 bytes)"),
            v4(&payload).truncate(ETH_HLEN + IPV4_HLEN + cut),
        ));
        rows.push(not_heartbeat(
            format!("IPv6, truncated inside UDP ({cut} of 8 bytes)"),
            v6(&payload).truncate(ETH_HLEN + IPV6_HLEN + cut),
        ));
    }
    let mut harness = Harness::load("UDP header cut after the length field", false);
    harness.run_table(&rows);
    harness.finish();
}

/// The kernel will not run an XDP program on a frame shorter than an
/// Ethernet header: `data_size_in < 14` is refused with EINVAL, and so is a
/// longer `data_in` whose part after the XDP metadata (`xdp_md.data`) is
/// shorter than 14 bytes (checked on 6.18). So "truncated inside Ethernet"
/// and the empty packet cannot reach the program through
/// `BPF_PROG_TEST_RUN`; this test pins that, and that no counter moves. 14
/// bytes are accepted on both paths.
#[test]
fn test_run_refuses_frames_shorter_than_ethernet() {
    let mut harness = Harness::load("short data_in", false);
    let before = harness.counters();
    let program = harness.dp.program().expect("program");
    let full = v4(&beat(1, 1, 1).encode()).build();
    for metadata in [false, true] {
        for len in [0, 1, 6, 12, ETH_HLEN - 1] {
            match test_run(program, &full[..len], metadata) {
                Err(ProgramError::SyscallError(error)) => assert_eq!(
                    error.io_error.raw_os_error(),
                    Some(libc::EINVAL),
                    "BPF_PROG_TEST_RUN of {len} bytes (metadata: {metadata}): {error:?}"
                ),
                other => panic!(
                    "BPF_PROG_TEST_RUN of {len} bytes (metadata: {metadata}): expected EINVAL, \
                     got {other:?}"
                ),
            }
        }
    }
    assert_eq!(
        harness.counters(),
        before,
        "a refused run must not move any counter"
    );
    let rows = [
        not_heartbeat("Ethernet header only", full[..ETH_HLEN].to_vec()),
        not_heartbeat(
            "Ethernet header only, behind metadata",
            full[..ETH_HLEN].to_vec(),
        )
        .behind_metadata(),
    ];
    harness.run_table(&rows);
    harness.finish();
}

#[test]
fn hostile_sample() {
    const PACKETS: usize = 20_000;
    let started = Instant::now();
    let mut rng = rng::seeded(0x2545_F491_4F6C_DD1D);
    let mut harness = Harness::load("hostile sample", false);
    let mut exact = 0;
    for index in 0..PACKETS {
        let table = harness.snapshot();
        if rng.random_range(0..10) < 8 {
            let row = payload_mutation(&mut rng, index, &table);
            harness.check(index, &row);
            exact += 1;
        } else {
            let (what, frame) = header_mutation(&mut rng, &table);
            harness.check_loosely(&format!("sample {index}: {what}"), &frame);
        }
        // Stop at the first divergence: later predictions build on it.
        if !harness.failures.is_empty() {
            break;
        }
    }
    let counters = harness.counters();
    harness.finish();
    eprintln!(
        "hostile sample: {PACKETS} packets ({exact} predicted exactly) in {:?}; counters {}",
        started.elapsed(),
        show_deltas(&counters)
    );
    // No key is loaded and no node pinned here: `xdp_hostile.rs`
    // exercises those refusals. No probe secret either: `xdp_probe.rs`
    // exercises the probe outcomes.
    for counter in Counter::ALL
        .into_iter()
        .filter(|c| !c.is_probe() && !matches!(c, Counter::Unauthenticated | Counter::WrongSource))
    {
        assert!(
            counters[counter as usize] >= 200,
            "the sample should exercise every counter; {} is only {}",
            counter.name(),
            counters[counter as usize]
        );
    }
}
