//! What the load generator's tests share: a monitor to receive the load,
//! option presets, and the schedule run without the clock or the network.

use std::{
    collections::BTreeMap,
    io,
    net::{SocketAddr, UdpSocket},
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use hb::sys::set_int_option;
use hb_common::wire::{HEARTBEAT_LEN, Heartbeat};

use super::{
    generate::generate,
    options::{LoadgenOptions, Pace},
    plan::Plan,
    report::{FaultReport, Report},
    schedule::{Beat, Schedule},
};

/// A UDP socket standing in for the monitor: a large receive buffer, so
/// nothing is dropped, drained without blocking after the run.
pub(super) struct Monitor(UdpSocket);

impl Monitor {
    pub(super) fn bind() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Beyond rmem_max needs root (SO_RCVBUFFORCE).
        set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20)
            .or_else(|_| set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF, 64 << 20))
            .unwrap();
        socket.set_nonblocking(true).unwrap();
        Monitor(socket)
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.0.local_addr().unwrap()
    }

    /// Everything received, until nothing more arrives for 100 ms.
    pub(super) fn drain(&self) -> Vec<Heartbeat> {
        self.drain_payloads()
            .iter()
            .map(|payload| Heartbeat::decode(payload).expect("a valid heartbeat"))
            .collect()
    }

    /// Every payload received, until nothing more arrives for 100 ms.
    pub(super) fn drain_payloads(&self) -> Vec<[u8; HEARTBEAT_LEN]> {
        let mut out = Vec::new();
        let mut buf = [0u8; 128];
        let mut idle_since = Instant::now();
        loop {
            match self.0.recv(&mut buf) {
                Ok(n) => {
                    out.push(buf[..n].try_into().expect("a heartbeat-sized datagram"));
                    idle_since = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if idle_since.elapsed() > Duration::from_millis(100) {
                        return out;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("receiving: {e}"),
            }
        }
    }
}

/// Sequences received per node id, in arrival order (leaves excluded).
pub(super) fn sequences(heartbeats: &[Heartbeat]) -> BTreeMap<u32, Vec<u64>> {
    let mut by_node: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for hb in heartbeats.iter().filter(|hb| !hb.is_leave()) {
        by_node.entry(hb.node_id).or_default().push(hb.sequence);
    }
    by_node
}

pub(super) fn options(monitor: &Monitor, nodes: u32, interval_ms: u64) -> LoadgenOptions {
    LoadgenOptions::new(
        nodes,
        vec![monitor.addr()],
        Pace::Interval(Duration::from_millis(interval_ms)),
    )
}

pub(super) fn run_to_end(options: &LoadgenOptions) -> Report {
    generate(options, &AtomicBool::new(false)).expect("the run succeeds")
}

/// A fleet at `interval` for `duration`, with no faults yet.
pub(super) fn fleet(nodes: u32, interval: Duration, duration: Duration) -> LoadgenOptions {
    LoadgenOptions {
        duration: Some(duration),
        ..LoadgenOptions::new(
            nodes,
            vec!["127.0.0.1:9".parse().unwrap()],
            Pace::Interval(interval),
        )
    }
}

/// Every heartbeat the schedule produces (sent or lost), in order, and
/// the faults it counted: the run without the clock or the network.
pub(super) fn simulate(options: &LoadgenOptions) -> (Vec<Beat>, FaultReport) {
    let plan = Plan::new(options).unwrap();
    let mut schedule = Schedule::new(&plan);
    let mut beats = Vec::new();
    while let Some(due) = schedule.next_due() {
        assert_eq!(schedule.next_due(), Some(due), "next_due is idempotent");
        let beat = schedule.take();
        assert_eq!(beat.due, due);
        beats.push(beat);
    }
    assert!(
        beats.windows(2).all(|w| w[0].due <= w[1].due),
        "heartbeats come in the order they are due"
    );
    (beats, schedule.faults_seen)
}

/// Each node's heartbeats, in order.
pub(super) fn per_node(beats: &[Beat]) -> BTreeMap<u32, Vec<Beat>> {
    let mut by_node: BTreeMap<u32, Vec<Beat>> = BTreeMap::new();
    for beat in beats {
        by_node.entry(beat.slot).or_default().push(*beat);
    }
    by_node
}
