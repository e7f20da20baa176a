//! Tests of the harness itself: a lab is wired as documented and leaves
//! nothing behind, also when the test using it panics. Needs root.

use std::{panic, thread};

use hb_tests::{Lab, netns, unique_prefix};

fn brief_addr(ns: &hb_tests::NetNs, dev: &str) -> String {
    let output = ns
        .ip(["-br", "addr", "show", "dev", dev])
        .unwrap_or_else(|err| panic!("{err}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn lab_is_wired_and_removed_on_drop() {
    let prefix = unique_prefix();
    let lab = Lab::build(&prefix, 2).unwrap_or_else(|err| panic!("building the lab: {err}"));
    assert_eq!(
        netns::list_with_prefix(&format!("{prefix}-")).unwrap(),
        [
            format!("{prefix}-mon"),
            format!("{prefix}-n1"),
            format!("{prefix}-n2")
        ]
    );
    for node in &lab.nodes {
        let i = node.index;
        let monitor = brief_addr(&lab.monitor, &node.monitor_interface);
        assert!(
            monitor.contains(&format!("198.18.{i}.1/24")) && monitor.contains(" UP "),
            "monitor side of node {i}: {monitor}"
        );
        let own = brief_addr(&node.ns, &node.interface);
        assert!(
            own.contains(&format!("198.18.{i}.2/24")) && own.contains(" UP "),
            "node side of node {i}: {own}"
        );
        let route = node
            .ns
            .ip(["route", "get", &node.monitor_address.to_string()])
            .unwrap_or_else(|err| panic!("{err}"));
        let route = String::from_utf8_lossy(&route.stdout);
        assert!(
            route.contains(&format!("dev {}", node.interface)),
            "node {i} does not reach the monitor over its veth: {route}"
        );
        assert_eq!(lab.monitor_xdp(&node.monitor_interface).unwrap(), None);
    }
    drop(lab);
    assert_eq!(
        netns::list_with_prefix(&format!("{prefix}-")).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn lab_is_removed_when_the_test_panics() {
    let prefix = unique_prefix();
    let in_thread = prefix.clone();
    let result = thread::spawn(move || {
        let _lab = Lab::build(&in_thread, 1).unwrap_or_else(|err| panic!("{err}"));
        panic::panic_any("deliberate panic with a lab alive");
    })
    .join();
    assert!(result.is_err(), "the thread should have panicked");
    assert_eq!(
        netns::list_with_prefix(&format!("{prefix}-")).unwrap(),
        Vec::<String>::new()
    );
}
