//! Tests of the harness itself: a lab is wired as documented and leaves
//! nothing behind, also when the test using it panics; the attacker sends
//! from its namespace only, from the addresses it is given, and stops by
//! itself. Needs root.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    panic,
    path::{Path, PathBuf},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use hb_tests::{
    Attacker, Flood, HEARTBEAT_PORT, Lab, Stream, attacker::allow_spoofing, netns, unique_prefix,
};

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

/// The network namespace of the calling thread.
fn thread_netns() -> PathBuf {
    fs::read_link("/proc/thread-self/ns/net").unwrap_or_else(|err| panic!("{err}"))
}

#[test]
fn attacker_sends_from_its_namespace_and_stops_by_itself() {
    let lab = Lab::build(&unique_prefix(), 2).unwrap_or_else(|err| panic!("{err}"));
    let (victim, attacker) = (lab.node(1), lab.node(2));
    allow_spoofing(&lab, attacker, victim.address).unwrap_or_else(|err| panic!("{err}"));
    let to = SocketAddrV4::new(attacker.monitor_address, HEARTBEAT_PORT);
    let own_netns = thread_netns();

    // A receiver in the monitor namespace: every datagram until 1 s of
    // silence, at most 100.
    let monitor = lab.monitor.path();
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = thread::spawn(move || {
        netns::enter(&monitor).unwrap_or_else(|err| panic!("{err}"));
        let socket = UdpSocket::bind(to).unwrap_or_else(|err| panic!("{err}"));
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap_or_else(|err| panic!("{err}"));
        ready_tx.send(()).unwrap();
        let mut got: Vec<(u8, u8, SocketAddr)> = Vec::new();
        let mut buf = [0u8; 128];
        while got.len() < 100 {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                break;
            };
            assert_eq!(len, 56, "{from}");
            got.push((buf[0], buf[1], from));
        }
        got
    });
    ready_rx.recv().expect("the receiver is ready");

    let marked = |mark: u8| {
        move |k: u64| {
            let mut payload = [0u8; 56];
            payload[0] = mark;
            payload[1] = u8::try_from(k).unwrap();
            payload
        }
    };
    let flood = Flood {
        to,
        rate: 50,
        max_packets: 5,
        max_duration: Duration::from_secs(10),
    };
    let streams = vec![
        Stream::new("own", attacker.address, marked(1)),
        Stream::new("spoofed", victim.address, marked(2)),
    ];
    let flood_thread =
        Attacker::start(&attacker.ns.path(), flood, streams).unwrap_or_else(|err| panic!("{err}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !flood_thread.is_finished() {
        assert!(Instant::now() < deadline, "{flood_thread:?} did not stop");
        thread::sleep(Duration::from_millis(10));
    }
    let sent = flood_thread.stop().unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(sent, [("own", 5), ("spoofed", 5)]);

    let got = receiver.join().expect("the receiver panicked");
    let from = |mark: u8| -> Vec<(u8, IpAddr)> {
        got.iter()
            .filter(|(m, _, _)| *m == mark)
            .map(|&(_, k, from)| (k, from.ip()))
            .collect()
    };
    let expected =
        |address: Ipv4Addr| -> Vec<(u8, IpAddr)> { (0..5).map(|k| (k, address.into())).collect() };
    assert_eq!(from(1), expected(attacker.address), "{got:?}");
    assert_eq!(from(2), expected(victim.address), "{got:?}");
    assert_eq!(got.len(), 10, "{got:?}");
    assert_eq!(
        thread_netns(),
        own_netns,
        "the test's thread changed namespace"
    );

    // Bounded in time too: 20/s for 300 ms is a handful of packets.
    let flood = Flood {
        to,
        rate: 20,
        max_packets: 1_000,
        max_duration: Duration::from_millis(300),
    };
    let started = Instant::now();
    let short = Attacker::start(
        &attacker.ns.path(),
        flood,
        vec![Stream::new("short", attacker.address, marked(3))],
    )
    .unwrap_or_else(|err| panic!("{err}"));
    while !short.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{short:?} did not stop"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let sent = short.stop().unwrap_or_else(|err| panic!("{err}"));
    assert!(
        (1..=7).contains(&sent[0].1),
        "{sent:?} in {:?}",
        started.elapsed()
    );
}

#[test]
fn attacker_reports_a_missing_namespace() {
    let flood = Flood {
        to: SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 1), HEARTBEAT_PORT),
        rate: 1,
        max_packets: 1,
        max_duration: Duration::from_secs(1),
    };
    let path = Path::new(netns::NETNS_DIR).join(format!("{}-absent", unique_prefix()));
    let err = Attacker::start(&path, flood, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("-absent"), "{err}");
}
