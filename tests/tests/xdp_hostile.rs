//! A deterministic sample of `hb-tools bench hostile` (needs root): 30,000
//! generated packets from a fixed seed through `BPF_PROG_TEST_RUN`, checked
//! packet by packet by [`hb_tools::hostile`] (only a fresh, validly signed
//! heartbeat of a configured node changes the node table; each run moves
//! one outcome and one matching verdict counter). Here: no violation, the
//! counters add up, and every category and every outcome was exercised.
//! The bench runs a million packets from another seed.

use hb_common::counters::Counter;
use hb_tools::hostile::{self, Category, HostileReport};

const PACKETS: u64 = 30_000;
const SEED: u64 = 0x5eed_2024_0bad_cafe;
/// "Exercised": at least this many packets of each category and runs of
/// each outcome.
const AT_LEAST: u64 = 50;

fn run(packets: u64, seed: u64) -> HostileReport {
    hostile::run(packets, seed)
        .unwrap_or_else(|e| panic!("running the hostile sample (are we root?): {e:#}"))
}

#[test]
fn hostile_sample_never_changes_the_table_without_a_valid_tag() {
    let report = run(PACKETS, SEED);
    eprintln!(
        "hostile sample: {} packets ({} run, {} refused by the kernel) in {:.2} s, {:.0} \
         packets/s; counters {:?}",
        report.packets,
        report.runs,
        report.refused_by_kernel,
        report.seconds,
        report.packets_per_second,
        report.counters
    );
    assert_eq!(
        report.violations,
        0,
        "violations (first {}):\n{}",
        report.examples.len(),
        report
            .examples
            .iter()
            .map(|v| format!(
                "  packet {} [{}] {}: {}\n    frame {}",
                v.packet, v.category, v.what, v.problem, v.frame
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The counters add up.
    assert_eq!(report.packets, PACKETS);
    assert_eq!(report.runs + report.refused_by_kernel, report.packets);
    assert_eq!(report.outcomes_total, report.runs, "outcomes vs runs");
    assert_eq!(
        report.counters["passed"] + report.counters["dropped"],
        report.runs,
        "verdicts vs runs"
    );
    assert!(
        report.refused_by_kernel > 0,
        "frames shorter than Ethernet were generated"
    );

    // Every category and every outcome was exercised.
    for category in Category::ALL {
        let count = &report.categories[category.name()];
        assert!(
            count.packets >= AT_LEAST,
            "category {} has only {} packets",
            category.name(),
            count.packets
        );
    }
    // No probe secret is installed here (every ICMP packet is not hb's):
    // `xdp_probe.rs` exercises the probe outcomes.
    for counter in Counter::ALL.into_iter().filter(|c| !c.is_probe()) {
        assert!(
            report.counters[counter.name()] >= AT_LEAST,
            "counter {} moved only {} times",
            counter.name(),
            report.counters[counter.name()]
        );
    }

    // The control group was accepted, every one of it.
    let control = &report.categories[Category::Control.name()];
    assert_eq!(
        control.outcomes.get("accepted"),
        Some(&control.packets),
        "{:?}",
        control.outcomes
    );
    // And nothing hostile was.
    for category in [
        Category::RandomBytes,
        Category::BitFlip,
        Category::ByteMutation,
        Category::Truncated,
        Category::Ipv4BadIhl,
        Category::Ipv6Extension,
        Category::Ipv4Fragment,
        Category::Replay,
        Category::ForgedLeave,
        Category::UnknownKey,
        Category::WrongKey,
        Category::Unauthenticated,
        Category::WrongSource,
        Category::OldIncarnation,
        Category::UnknownNode,
    ] {
        let count = &report.categories[category.name()];
        assert_eq!(
            count.outcomes.get("accepted"),
            None,
            "{}: {:?}",
            category.name(),
            count.outcomes
        );
    }
}

#[test]
fn the_same_seed_makes_the_same_run() {
    let outcomes = |report: &HostileReport| {
        (
            report.runs,
            report.counters.clone(),
            report
                .categories
                .iter()
                .map(|(name, count)| (*name, count.packets, count.outcomes.clone()))
                .collect::<Vec<_>>(),
        )
    };
    let first = run(5_000, 42);
    let second = run(5_000, 42);
    assert_eq!(first.violations + second.violations, 0);
    assert_eq!(outcomes(&first), outcomes(&second));
    let other = run(5_000, 43);
    assert_ne!(outcomes(&first), outcomes(&other));
}
