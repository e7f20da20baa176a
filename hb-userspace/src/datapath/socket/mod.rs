//! The socket datapath: records heartbeats into the node table from UDP
//! sockets, where the XDP program cannot be attached, and as the baseline the
//! XDP datapath is measured against.
//!
//! One IPv6 dual-stack socket per interface (`[::]:port`, IPv4 arriving as
//! v4-mapped addresses, the form the XDP program records), bound to its
//! interface with `SO_BINDTODEVICE` so it hears only that interface, like an
//! XDP attachment. Each socket has its own receive thread that takes up to
//! [`BATCH`] datagrams per `recvmmsg(2)` call into buffers allocated once,
//! and applies exactly the XDP program's rules: a 56-byte payload, then the
//! same [`admit`] function the XDP program calls (tag, node, source pin,
//! (incarnation, sequence)); then the cold record is written and after it
//! the seen word, with a release store. Arrival times are the kernel's receive
//! timestamps (`SO_TIMESTAMPNS`, `CLOCK_REALTIME`) moved onto
//! `CLOCK_MONOTONIC`, the clock of the XDP program's `bpf_ktime_get_ns` and
//! of the agent's sweep; they do not depend on when a datagram is read, so
//! under load the thread lets datagrams pile up into full batches
//! ([`COALESCE`]).
//!
//! Counters keep the XDP program's meaning and invariant: every datagram
//! bumps one outcome and the `dropped` verdict (the socket consumes it), so
//! `passed` and `not_heartbeat` (the socket only sees UDP to the port) stay 0.
//!
//! Unlike the XDP program, this datapath cannot outlive its process: the
//! sockets, the threads and the table are the agent's own, so nothing
//! records while no agent runs, nothing is pinned, and a restarted agent
//! starts from an empty table ([`crate::datapath::Datapath::adopted`] is
//! always false).

mod batch;

use std::{
    io, mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use hb_common::{
    admission::{Unauthenticated, admit},
    auth::{KeySlots, KeyState, KeyStates, key_states},
    counters::{Counter, CounterValues},
    table::{intervals, seen},
    wire::{HEARTBEAT_LEN, RawHeartbeat},
};
use thiserror::Error;

pub use self::batch::BATCH;
use self::batch::{Batch, Datagram};
use crate::{clock, datapath::table::NodeTable, sys};

/// Receive buffer asked for per socket: 8 MiB holds about 10^4 queued
/// heartbeats (the kernel charges each one's skb, not just its 56 bytes).
pub const RECEIVE_BUFFER_BYTES: usize = 8 << 20;
/// How long a receive thread waits for a datagram before it checks whether
/// it should stop; bounds [`SocketDatapath::stop`].
pub const RECEIVE_TIMEOUT: Duration = Duration::from_millis(100);

/// Stripes of the locks that serialise updates of one node's record when
/// several receive threads (interfaces) hear it.
const RECORD_LOCKS: usize = 64;
/// Pause after a batch of more than one datagram but less than [`BATCH`],
/// so that under load datagrams pile up into full batches instead of one
/// wake-up and one `recvmmsg` each (at 100k heartbeats/s this cuts the
/// receive thread's CPU about 3.5 times). Arrival times are the kernel's
/// timestamps, so reading later does not change them; a lone datagram (an
/// idle or lightly loaded monitor) is never delayed.
pub const COALESCE: Duration = Duration::from_millis(1);
/// A failing `recvmmsg` is logged at most this often per socket.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
/// Pause after a failing `recvmmsg`, so a persistent error does not spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Errors of the socket datapath, each naming the interface and the call.
#[derive(Debug, Error)]
pub enum SocketError {
    #[error("allocating the node table ({what}) of {max_nodes} slots failed")]
    Table {
        what: &'static str,
        max_nodes: u32,
        #[source]
        source: io::Error,
    },
    #[error("{op} for interface `{interface}` failed")]
    Io {
        interface: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "binding UDP port {port} on interface `{interface}` failed (does another program \
         receive on that port on this interface?)"
    )]
    Bind {
        interface: String,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("starting the receive thread for interface `{interface}` failed")]
    Spawn {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("the socket datapath was already started (it cannot be started again)")]
    AlreadyStarted,
}

/// What [`SocketDatapath::new`] opens.
#[derive(Clone, Debug)]
pub struct SocketOptions {
    /// UDP destination port of heartbeats.
    pub port: u16,
    /// Size of the node table; node ids must be below it.
    pub max_nodes: u32,
    /// One socket per interface, hearing only that interface.
    pub interfaces: Vec<String>,
    /// Whether heartbeats with key id 0 are accepted.
    pub unauthenticated: Unauthenticated,
}

/// The node table, the sockets and their receive threads. Dropping it stops
/// the threads and closes the sockets.
pub struct SocketDatapath {
    shared: Arc<Shared>,
    interfaces: Vec<String>,
    /// Sockets opened by `new`, waiting for `start`.
    opened: Vec<Receiver>,
    /// Receive threads, with the interface each one serves.
    threads: Vec<(String, JoinHandle<()>)>,
    /// Each receive thread's counters; kept after the threads end.
    counters: Vec<Arc<ThreadCounters>>,
    started: bool,
}

/// What the receive threads share with the datapath.
struct Shared {
    table: NodeTable,
    /// The keys heartbeats are verified with; replaced whole by `set_keys`.
    keys: RwLock<Arc<KeyStates>>,
    unauthenticated: Unauthenticated,
    record_locks: [Mutex<()>; RECORD_LOCKS],
    stop: AtomicBool,
}

/// An opened socket and the interface it is bound to.
struct Receiver {
    interface: String,
    socket: OwnedFd,
}

/// One receive thread's counters, in [`Counter::ALL`] order. Only that
/// thread writes them.
#[derive(Default)]
struct ThreadCounters([AtomicU64; Counter::COUNT as usize]);

impl SocketDatapath {
    /// Allocates the node table and opens one socket per interface. Nothing
    /// is received until [`SocketDatapath::start`]: datagrams arriving before
    /// wait in the sockets' buffers.
    pub fn new(options: SocketOptions) -> Result<Self, SocketError> {
        let table_error = |what| {
            move |source| SocketError::Table {
                what,
                max_nodes: options.max_nodes,
                source,
            }
        };
        let table = NodeTable::anonymous(options.max_nodes).map_err(table_error("node table"))?;
        let mut opened = Vec::with_capacity(options.interfaces.len());
        for interface in &options.interfaces {
            let (socket, receive_buffer) = open_socket(interface, options.port)?;
            tracing::info!(
                interface,
                port = options.port,
                receive_buffer,
                "UDP socket opened"
            );
            if receive_buffer < RECEIVE_BUFFER_BYTES {
                tracing::warn!(
                    interface,
                    "the socket's receive buffer is only {receive_buffer} bytes (asked for \
                     {RECEIVE_BUFFER_BYTES}): bursts of heartbeats may be dropped; run as root \
                     or raise net.core.rmem_max"
                );
            }
            opened.push(Receiver {
                interface: interface.clone(),
                socket,
            });
        }
        Ok(SocketDatapath {
            shared: Arc::new(Shared {
                table,
                keys: RwLock::new(Arc::new(
                    [KeyState::default(); hb_common::auth::KEY_SLOTS as usize],
                )),
                unauthenticated: options.unauthenticated,
                record_locks: std::array::from_fn(|_| Mutex::new(())),
                stop: AtomicBool::new(false),
            }),
            interfaces: options.interfaces,
            opened,
            threads: Vec::new(),
            counters: Vec::new(),
            started: false,
        })
    }

    /// The node table, written by the receive threads once started.
    pub fn table(&self) -> &NodeTable {
        &self.shared.table
    }

    /// Replaces the keys heartbeats are verified with (as the XDP program
    /// does: each key as its [`KeyState`]); each receive thread uses the new
    /// keys from its next batch on.
    pub fn set_keys(&self, keys: &KeySlots) {
        *self
            .shared
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(key_states(keys));
    }

    /// Starts one receive thread per socket. On error, the threads started
    /// so far are stopped again.
    pub fn start(&mut self) -> Result<(), SocketError> {
        if self.started {
            return Err(SocketError::AlreadyStarted);
        }
        self.started = true;
        for receiver in mem::take(&mut self.opened) {
            let interface = receiver.interface.clone();
            let counters = Arc::new(ThreadCounters::default());
            let thread_counters = Arc::clone(&counters);
            let shared = Arc::clone(&self.shared);
            // Linux keeps the first 15 bytes of a thread name.
            let spawned = thread::Builder::new()
                .name(format!("hb-rx-{interface}"))
                .spawn(move || receive_loop(&receiver, &shared, &thread_counters));
            match spawned {
                Ok(thread) => {
                    tracing::info!(interface, "receiving heartbeats on the UDP socket");
                    self.counters.push(counters);
                    self.threads.push((interface, thread));
                }
                Err(source) => {
                    self.stop();
                    return Err(SocketError::Spawn { interface, source });
                }
            }
        }
        Ok(())
    }

    /// Every counter summed over the receive threads, in [`Counter::ALL`]
    /// order.
    pub fn counters(&self) -> CounterValues {
        let mut out = CounterValues::default();
        for thread in &self.counters {
            for (total, value) in out.iter_mut().zip(&thread.0) {
                *total += value.load(Ordering::Relaxed);
            }
        }
        out
    }

    /// The interfaces a socket was opened for.
    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    /// Stops the receive threads (each notices within [`RECEIVE_TIMEOUT`])
    /// and closes every socket. The table and the counters stay readable.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for (interface, thread) in self.threads.drain(..) {
            match thread.join() {
                Ok(()) => tracing::info!(interface, "UDP socket closed"),
                Err(_) => tracing::error!(interface, "the receive thread panicked"),
            }
        }
        self.opened.clear();
    }
}

impl Drop for SocketDatapath {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ThreadCounters {
    /// Publishes the thread's running totals (plain stores: one writer).
    fn publish(&self, totals: &CounterValues) {
        for (counter, &total) in self.0.iter().zip(totals) {
            counter.store(total, Ordering::Relaxed);
        }
    }
}

/// Opens the socket of `interface`; returns it with the receive buffer size
/// the kernel granted (bytes of payload it will queue).
fn open_socket(interface: &str, port: u16) -> Result<(OwnedFd, usize), SocketError> {
    let io_error = |op| {
        move |source| SocketError::Io {
            interface: interface.to_owned(),
            op,
            source,
        }
    };
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io_error("socket(AF_INET6, SOCK_DGRAM)")(
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };

    sys::set_int_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)
        .map_err(io_error("setsockopt(IPV6_V6ONLY, 0)"))?;
    // No SO_REUSEADDR: UDP has no TIME_WAIT to skip on restart, and with it
    // a second agent could bind the same interface and port and silently
    // take every heartbeat from the first; without it, its bind fails.
    sys::set_socket_option(
        &socket,
        libc::SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        interface.as_bytes(),
    )
    .map_err(io_error("setsockopt(SO_BINDTODEVICE)"))?;
    let wanted = libc::c_int::try_from(RECEIVE_BUFFER_BYTES).unwrap_or(libc::c_int::MAX);
    // SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped by rmem_max.
    sys::set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, wanted)
        .or_else(|_| sys::set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF, wanted))
        .map_err(io_error("setsockopt(SO_RCVBUF)"))?;
    sys::set_int_option(&socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
        .map_err(io_error("setsockopt(SO_TIMESTAMPNS)"))?;
    let timeout = libc::timeval {
        tv_sec: RECEIVE_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: RECEIVE_TIMEOUT.subsec_micros() as libc::suseconds_t,
    };
    sys::set_socket_option(&socket, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)
        .map_err(io_error("setsockopt(SO_RCVTIMEO)"))?;

    // SAFETY: all-zero is a valid sockaddr_in6 (the unspecified address).
    let mut address: libc::sockaddr_in6 = unsafe { mem::zeroed() };
    address.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    address.sin6_port = port.to_be();
    // SAFETY: the address is a valid sockaddr_in6 of the length given.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const address).cast(),
            size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(SocketError::Bind {
            interface: interface.to_owned(),
            port,
            source: io::Error::last_os_error(),
        });
    }

    let granted = sys::int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF)
        .map_err(io_error("getsockopt(SO_RCVBUF)"))?;
    // The kernel reports twice what it queues (the rest is its bookkeeping).
    Ok((socket, usize::try_from(granted).unwrap_or(0) / 2))
}

/// A receive thread: batches of datagrams until the stop flag is set.
fn receive_loop(receiver: &Receiver, shared: &Shared, counters: &ThreadCounters) {
    let mut batch = Batch::new();
    let mut totals = CounterValues::default();
    let mut errors = ErrorLog::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let received = match batch.receive(&receiver.socket) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => {
                errors.report(&receiver.interface, &e);
                thread::sleep(ERROR_BACKOFF);
                continue;
            }
        };
        let clock = Clock::sample();
        let keys = Arc::clone(&shared.keys.read().unwrap_or_else(PoisonError::into_inner));
        for index in 0..received {
            let outcome = record(shared, &keys, &batch.datagram(index), &clock);
            totals[outcome as usize] += 1;
            totals[Counter::Dropped as usize] += 1;
        }
        counters.publish(&totals);
        if received > 1 && received < BATCH {
            thread::sleep(COALESCE);
        }
    }
}

/// Rate-limited warnings about a failing `recvmmsg`.
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    fn report(&mut self, interface: &str, error: &io::Error) {
        if self.last.is_some_and(|at| at.elapsed() < ERROR_LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            interface,
            suppressed = self.suppressed,
            "recvmmsg failed: {error}; retrying"
        );
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

/// Applies the XDP program's rules to one datagram and, for an accepted
/// heartbeat, records it: the cold record first, then the seen word.
fn record(shared: &Shared, keys: &KeyStates, datagram: &Datagram<'_>, clock: &Clock) -> Counter {
    let Ok(payload) = <&[u8; HEARTBEAT_LEN]>::try_from(datagram.payload) else {
        return Counter::Malformed;
    };
    if datagram.truncated {
        return Counter::Malformed;
    }
    let heartbeat = RawHeartbeat::view(payload);
    let table = &shared.table;
    let id = heartbeat.node_id();
    // Serialise the check and the update of one node's record between the
    // receive threads (one per interface) that may hear it.
    let _serialised = shared.record_locks[id as usize % RECORD_LOCKS]
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut record = (id < table.len()).then(|| table.records.get(id));
    let authenticated = match admit(
        heartbeat,
        &datagram.src_addr,
        record.as_ref(),
        shared.unauthenticated,
        |key_id| Some(&keys[usize::from(key_id)]).filter(|state| state.is_in_use()),
    ) {
        Ok(authenticated) => authenticated,
        Err(refused) => return refused,
    };
    let Some(record) = record.as_mut() else {
        return Counter::UnknownNode;
    };
    let same_incarnation = record.heartbeats != 0 && heartbeat.incarnation() == record.incarnation;
    if record.heartbeats != 0 && !same_incarnation {
        tracing::debug!(
            "node {id} restarted: incarnation {}",
            heartbeat.incarnation()
        );
    }
    let seen_word = &table.seen.atomics()[id as usize];
    // An accepted heartbeat never makes its node look older than the last
    // one did (which a step of the realtime clock could otherwise cause).
    let previous = seen::arrival_ns(seen_word.load(Ordering::Relaxed));
    let arrival = clock.monotonic_ns(datagram.realtime_ns).max(previous);
    if let Some(sample) = intervals::sample_us(
        previous,
        arrival,
        record.sequence,
        heartbeat.sequence(),
        same_incarnation,
    ) {
        table
            .intervals
            .set(id, intervals::update(table.intervals.get(id), sample));
    }
    record.record(
        heartbeat,
        &datagram.src_addr,
        datagram.src_port,
        authenticated,
    );
    table.records.set(id, *record);
    seen_word.store(seen::word(arrival, heartbeat.is_leave()), Ordering::Release);
    Counter::Accepted
}

/// `CLOCK_MONOTONIC` now, and how far `CLOCK_REALTIME` is ahead of it:
/// sampled once per batch, right after `recvmmsg` returned.
struct Clock {
    monotonic_now: u64,
    realtime_minus_monotonic: i128,
}

impl Clock {
    fn sample() -> Self {
        // Monotonic readings on both sides of the realtime one, so the
        // offset is not biased by the time between the calls.
        let before = i128::from(clock::monotonic_ns());
        let realtime = i128::from(clock::unix_ns());
        let after = i128::from(clock::monotonic_ns());
        let monotonic = before + (after - before) / 2;
        Clock {
            monotonic_now: u64::try_from(after).unwrap_or(0),
            realtime_minus_monotonic: realtime - monotonic,
        }
    }

    /// A receive timestamp moved onto `CLOCK_MONOTONIC`; never later than
    /// the batch was read (nor earlier than boot). Without a timestamp, now.
    fn monotonic_ns(&self, realtime_ns: Option<u64>) -> u64 {
        let Some(realtime_ns) = realtime_ns else {
            return self.monotonic_now;
        };
        let monotonic = i128::from(realtime_ns) - self.realtime_minus_monotonic;
        u64::try_from(monotonic)
            .ok()
            .filter(|&ns| ns > 0)
            .map_or(self.monotonic_now, |ns| ns.min(self.monotonic_now))
    }
}

#[cfg(test)]
mod tests {
    //! These open real sockets on `lo` (and, in one test, in a private
    //! network namespace), so they need root, like the XDP fixtures.

    use std::{
        net::{Ipv4Addr, Ipv6Addr, UdpSocket},
        process::Command,
    };

    use hb_common::{
        auth,
        table::{NodeRecord, SLOT_CONFIGURED},
        wire::{self, Heartbeat, flags},
    };

    use super::*;

    const MAX_NODES: u32 = 8;
    /// Slot 2 is left unconfigured; 7 is the last slot.
    const CONFIGURED: [u32; 3] = [1, 3, 7];
    const SENT_UNIX_NS: u64 = 1_700_000_000_123_456_789;
    const WAIT: Duration = Duration::from_secs(5);

    fn heartbeat(node_id: u32, incarnation: u64, sequence: u64, flags: u8) -> Heartbeat {
        Heartbeat {
            flags,
            key_id: 0,
            node_id,
            interval_ms: 250,
            incarnation,
            sequence,
            sent_unix_ns: SENT_UNIX_NS,
            auth_tag: [0; 16],
        }
    }

    /// A UDP port nobody uses right now.
    fn free_port() -> u16 {
        UdpSocket::bind("[::]:0")
            .and_then(|s| s.local_addr())
            .expect("binding an ephemeral port")
            .port()
    }

    /// A datapath on `interfaces` with [`CONFIGURED`] configured.
    fn open(interfaces: &[&str], port: u16) -> SocketDatapath {
        let datapath = SocketDatapath::new(SocketOptions {
            port,
            max_nodes: MAX_NODES,
            interfaces: interfaces.iter().map(|&i| i.to_owned()).collect(),
            unauthenticated: Unauthenticated::Accept,
        })
        .unwrap_or_else(|e| panic!("opening the socket datapath (are we root?): {e:?}"));
        for id in CONFIGURED {
            datapath.table().configure(id, NodeRecord::default());
        }
        datapath
    }

    fn monotonic() -> u64 {
        u64::try_from(i128::from(clock::monotonic_ns())).unwrap()
    }

    fn outcomes(counters: &CounterValues) -> u64 {
        Counter::ALL
            .iter()
            .filter(|c| c.is_outcome())
            .map(|&c| counters[c as usize])
            .sum()
    }

    /// Waits until `total` datagrams have been counted; returns the counters.
    fn wait_for(datapath: &SocketDatapath, total: u64) -> CounterValues {
        let deadline = Instant::now() + WAIT;
        loop {
            let counters = datapath.counters();
            if outcomes(&counters) >= total {
                return counters;
            }
            assert!(
                Instant::now() < deadline,
                "{total} datagrams not counted within {WAIT:?}: {counters:?}"
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn snapshot(table: &NodeTable) -> Vec<(NodeRecord, u64)> {
        (0..table.len())
            .map(|id| (table.records.get(id), table.seen.get(id)))
            .collect()
    }

    fn assert_arrival_between(word: u64, before: u64, after: u64) {
        let arrival = seen::arrival_ns(word);
        assert!(
            (before & !seen::LEAVE) <= arrival && arrival <= after,
            "arrival {arrival} outside [{before}, {after}]"
        );
    }

    #[test]
    fn records_a_valid_heartbeat_with_every_field() {
        let port = free_port();
        let mut datapath = open(&["lo"], port);
        datapath.start().unwrap();
        let empty = snapshot(datapath.table());

        let v4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let before = monotonic();
        v4.send_to(&heartbeat(3, 7, 1, 0).encode(), (Ipv4Addr::LOCALHOST, port))
            .unwrap();
        wait_for(&datapath, 1);
        let after = monotonic();
        let expected = NodeRecord {
            incarnation: 7,
            sequence: 1,
            heartbeats: 1,
            sent_unix_ns: SENT_UNIX_NS,
            src_addr: Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets(),
            interval_ms: 250,
            src_port: v4.local_addr().unwrap().port(),
            heartbeat_flags: 0,
            slot_flags: SLOT_CONFIGURED,
        };
        assert_eq!(datapath.table().records.get(3), expected);
        let word = datapath.table().seen.get(3);
        assert!(!seen::is_leave(word));
        assert_arrival_between(word, before, after);

        // IPv6 source addresses are recorded as they are; LEAVE sets the bit.
        let v6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
        let before = monotonic();
        v6.send_to(
            &heartbeat(3, 7, 2, flags::LEAVE).encode(),
            (Ipv6Addr::LOCALHOST, port),
        )
        .unwrap();
        wait_for(&datapath, 2);
        let after = monotonic();
        let expected = NodeRecord {
            sequence: 2,
            heartbeats: 2,
            src_addr: Ipv6Addr::LOCALHOST.octets(),
            src_port: v6.local_addr().unwrap().port(),
            heartbeat_flags: flags::LEAVE,
            ..expected
        };
        assert_eq!(datapath.table().records.get(3), expected);
        let word = datapath.table().seen.get(3);
        assert!(seen::is_leave(word));
        assert_arrival_between(word, before, after);

        // A new incarnation (the sender restarted) starts its sequence over.
        v4.send_to(&heartbeat(3, 8, 0, 0).encode(), (Ipv4Addr::LOCALHOST, port))
            .unwrap();
        let counters = wait_for(&datapath, 3);
        let record = datapath.table().records.get(3);
        assert_eq!((record.incarnation, record.sequence), (8, 0));
        assert_eq!(record.heartbeats, 3);
        assert!(!seen::is_leave(datapath.table().seen.get(3)));

        let mut expected_counters = CounterValues::default();
        expected_counters[Counter::Accepted as usize] = 3;
        expected_counters[Counter::Dropped as usize] = 3;
        assert_eq!(counters, expected_counters);
        let now = snapshot(datapath.table());
        for id in (0..MAX_NODES).filter(|&id| id != 3) {
            assert_eq!(now[id as usize], empty[id as usize], "slot {id} changed");
        }
    }

    #[test]
    fn rejects_what_the_xdp_program_rejects_and_leaves_the_table_alone() {
        let port = free_port();
        let mut datapath = open(&["lo"], port);
        datapath.start().unwrap();
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let send = |payload: &[u8]| {
            sender
                .send_to(payload, (Ipv4Addr::LOCALHOST, port))
                .unwrap();
        };
        send(&heartbeat(3, 7, 5, 0).encode());
        wait_for(&datapath, 1);
        let recorded = snapshot(datapath.table());

        // Each payload would be accepted but for the one thing it gets wrong.
        let next = heartbeat(3, 7, 6, 0).encode();
        let with = |at: usize, value: u8| {
            let mut bytes = next.to_vec();
            bytes[at] = value;
            bytes
        };
        let longer = |extra: usize| {
            let mut bytes = next.to_vec();
            bytes.resize(HEARTBEAT_LEN + extra, 0);
            bytes
        };
        let cases: Vec<(&str, Vec<u8>, Counter)> = vec![
            (
                "unconfigured node",
                heartbeat(2, 7, 6, 0).encode().to_vec(),
                Counter::UnknownNode,
            ),
            (
                "id = max_nodes",
                heartbeat(MAX_NODES, 7, 6, 0).encode().to_vec(),
                Counter::UnknownNode,
            ),
            (
                "id u32::MAX",
                heartbeat(u32::MAX, 7, 6, 0).encode().to_vec(),
                Counter::UnknownNode,
            ),
            (
                "duplicate",
                heartbeat(3, 7, 5, 0).encode().to_vec(),
                Counter::Replay,
            ),
            (
                "older sequence",
                heartbeat(3, 7, 4, 0).encode().to_vec(),
                Counter::Replay,
            ),
            (
                "older incarnation",
                heartbeat(3, 6, 100, 0).encode().to_vec(),
                Counter::Replay,
            ),
            ("empty", Vec::new(), Counter::Malformed),
            ("55 bytes", next[..55].to_vec(), Counter::Malformed),
            ("57 bytes", longer(1), Counter::Malformed),
            (
                "1400 bytes",
                longer(1400 - HEARTBEAT_LEN),
                Counter::Malformed,
            ),
            (
                "bad magic",
                with(wire::offset::MAGIC, b'X'),
                Counter::Malformed,
            ),
            (
                "version 2",
                with(wire::offset::VERSION, 2),
                Counter::Malformed,
            ),
            (
                "reserved byte set",
                with(wire::offset::RESERVED, 1),
                Counter::Malformed,
            ),
            (
                "unknown flag",
                with(wire::offset::FLAGS, 0x80),
                Counter::Malformed,
            ),
        ];
        for (sent, (what, payload, reason)) in (2..).zip(&cases) {
            let before = datapath.counters();
            send(payload);
            let after = wait_for(&datapath, sent);
            for counter in Counter::ALL {
                let delta = after[counter as usize] - before[counter as usize];
                let expected = u64::from(counter == *reason || counter == Counter::Dropped);
                assert_eq!(
                    delta,
                    expected,
                    "{what}: {} moved by {delta}",
                    counter.name()
                );
            }
        }
        assert_eq!(
            snapshot(datapath.table()),
            recorded,
            "a rejected datagram changed the table"
        );

        // The record did not move, so the heartbeat they imitated is accepted.
        send(&next);
        let total = cases.len() as u64 + 2;
        let counters = wait_for(&datapath, total);
        assert_eq!(datapath.table().records.get(3).sequence, 6);
        assert_eq!(counters[Counter::Accepted as usize], 2);
        assert_eq!(outcomes(&counters), total);
        assert_eq!(
            counters[Counter::Passed as usize] + counters[Counter::Dropped as usize],
            total
        );
        assert_eq!(counters[Counter::Passed as usize], 0);
        assert_eq!(counters[Counter::NotHeartbeat as usize], 0);
    }

    #[test]
    fn nothing_is_recorded_before_start() {
        let port = free_port();
        let mut datapath = open(&["lo"], port);
        let empty = snapshot(datapath.table());
        let sender = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
        let before = monotonic();
        sender
            .send_to(&heartbeat(1, 1, 1, 0).encode(), (Ipv6Addr::LOCALHOST, port))
            .unwrap();
        // Loopback delivers (and timestamps) the datagram within send_to.
        let sent = monotonic();
        thread::sleep(RECEIVE_TIMEOUT * 2);
        assert_eq!(datapath.counters(), CounterValues::default());
        assert_eq!(snapshot(datapath.table()), empty);

        // It waited in the socket's buffer, and is recorded as arriving when
        // it did (the kernel's timestamp), not when it was read.
        datapath.start().unwrap();
        let counters = wait_for(&datapath, 1);
        assert_eq!(counters[Counter::Accepted as usize], 1);
        assert_eq!(datapath.table().records.get(1).heartbeats, 1);
        assert_arrival_between(datapath.table().seen.get(1), before, sent);
    }

    #[test]
    fn keys_installed_while_running_verify_from_then_on() {
        let port = free_port();
        let mut datapath = open(&["lo"], port);
        datapath.start().unwrap();
        let key = [0x11; 16];
        let signed = |sequence| {
            let mut bytes = heartbeat(3, 1, sequence, 0).encode();
            auth::sign(&mut bytes, 5, &key);
            bytes
        };
        let sender = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
        sender
            .send_to(&signed(1), (Ipv6Addr::LOCALHOST, port))
            .unwrap();
        let counters = wait_for(&datapath, 1);
        assert_eq!(counters[Counter::UnknownKey as usize], 1);

        let mut keys = [auth::KeySlot::default(); auth::KEY_SLOTS as usize];
        keys[5] = auth::KeySlot::with_key(key);
        datapath.set_keys(&keys);
        sender
            .send_to(&signed(1), (Ipv6Addr::LOCALHOST, port))
            .unwrap();
        let counters = wait_for(&datapath, 2);
        assert_eq!(counters[Counter::Accepted as usize], 1);
        assert!(datapath.table().records.get(3).is_authenticated());

        // Signed with another key under the same id: a bad tag.
        let mut forged = heartbeat(3, 1, 2, 0).encode();
        auth::sign(&mut forged, 5, &[0x22; 16]);
        sender
            .send_to(&forged, (Ipv6Addr::LOCALHOST, port))
            .unwrap();
        let counters = wait_for(&datapath, 3);
        assert_eq!(counters[Counter::BadTag as usize], 1);
        assert_eq!(datapath.table().records.get(3).sequence, 1);
    }

    /// Whether a socket of our own (not bound to a device) can bind `port`,
    /// i.e. whether no datapath socket holds it any more.
    fn port_is_free(port: u16) -> bool {
        match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port)) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => false,
            Err(e) => panic!("binding port {port}: {e}"),
        }
    }

    #[test]
    fn stop_returns_promptly_and_closes_the_sockets() {
        let port = free_port();
        let mut datapath = open(&["lo"], port);
        datapath.start().unwrap();
        assert!(
            !port_is_free(port),
            "the datapath does not hold port {port}"
        );
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        sender
            .send_to(&heartbeat(7, 1, 1, 0).encode(), (Ipv4Addr::LOCALHOST, port))
            .unwrap();
        wait_for(&datapath, 1);

        let started = Instant::now();
        datapath.stop();
        let took = started.elapsed();
        assert!(
            took < RECEIVE_TIMEOUT + Duration::from_millis(400),
            "stop took {took:?}"
        );
        assert!(port_is_free(port), "port {port} still bound after stop");
        // Counters and table outlive the threads; stop is idempotent, and a
        // stopped datapath does not start again.
        assert_eq!(datapath.counters()[Counter::Accepted as usize], 1);
        assert_eq!(datapath.table().records.get(7).heartbeats, 1);
        datapath.stop();
        let err = datapath.start().unwrap_err();
        assert!(matches!(err, SocketError::AlreadyStarted), "{err}");

        // Dropping a datapath that never started closes its sockets too.
        let port = free_port();
        let unstarted = open(&["lo"], port);
        assert!(!port_is_free(port));
        drop(unstarted);
        assert!(port_is_free(port), "port {port} still bound after drop");
    }

    #[test]
    fn errors_name_the_interface_and_the_call() {
        let err = SocketDatapath::new(SocketOptions {
            port: free_port(),
            max_nodes: MAX_NODES,
            interfaces: vec!["lo".to_owned(), "hbnosuchif0".to_owned()],
            unauthenticated: Unauthenticated::Accept,
        })
        .err()
        .expect("an interface that does not exist was accepted");
        let text = err.to_string();
        assert!(
            text.contains("hbnosuchif0") && text.contains("SO_BINDTODEVICE"),
            "{text}"
        );

        // A second datapath on the same interface and port is refused,
        // rather than sharing the port and taking the heartbeats.
        let port = free_port();
        let _first = open(&["lo"], port);
        let err = SocketDatapath::new(SocketOptions {
            port,
            max_nodes: MAX_NODES,
            interfaces: vec!["lo".to_owned()],
            unauthenticated: Unauthenticated::Accept,
        })
        .err()
        .expect("a second datapath bound the same interface and port");
        match &err {
            SocketError::Bind {
                interface,
                port: reported,
                source,
            } => {
                assert_eq!((interface.as_str(), *reported), ("lo", port));
                assert_eq!(source.kind(), io::ErrorKind::AddrInUse, "{source}");
            }
            other => panic!("expected a bind error, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("`lo`") && text.contains(&port.to_string()),
            "{text}"
        );
    }

    fn run(program: &str, args: &[&str]) {
        let output = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn each_socket_hears_only_its_interface() {
        // A private network namespace for this thread (and the threads and
        // processes it starts), with a veth pair besides `lo`.
        thread::spawn(|| {
            // SAFETY: affects only the calling thread, which nothing else
            // uses and which ends with this closure.
            let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(unshared, 0, "unshare: {}", io::Error::last_os_error());
            run("ip", &["link", "set", "lo", "up"]);
            run(
                "ip",
                &[
                    "link", "add", "hbsock0", "type", "veth", "peer", "name", "hbsock1",
                ],
            );
            run("ip", &["link", "set", "hbsock0", "up"]);
            run("ip", &["link", "set", "hbsock1", "up"]);
            let payload = heartbeat(1, 1, 1, 0).encode();

            // Bound to the veth only: traffic to 127.0.0.1 comes in on `lo`,
            // finds no socket, and the sender is told (ICMP port unreachable).
            let port = free_port();
            let mut datapath = open(&["hbsock0"], port);
            datapath.start().unwrap();
            let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            sender.connect((Ipv4Addr::LOCALHOST, port)).unwrap();
            sender.set_read_timeout(Some(WAIT)).unwrap();
            sender.send(&payload).unwrap();
            let refused = sender.recv(&mut [0; 8]).unwrap_err();
            assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
            assert_eq!(datapath.counters(), CounterValues::default());
            datapath.stop();

            // Sockets on two interfaces share the port; `lo`'s hears it, once.
            let port = free_port();
            let mut datapath = open(&["hbsock0", "lo"], port);
            datapath.start().unwrap();
            sender.connect((Ipv4Addr::LOCALHOST, port)).unwrap();
            sender.send(&payload).unwrap();
            wait_for(&datapath, 1);
            thread::sleep(RECEIVE_TIMEOUT);
            let counters = datapath.counters();
            assert_eq!(counters[Counter::Accepted as usize], 1);
            assert_eq!(outcomes(&counters), 1);
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    }

    /// What a receive thread shares, without sockets, node 1 configured,
    /// unauthenticated heartbeats accepted; and an empty key table.
    fn unstarted_with_node_1() -> (Shared, KeyStates) {
        let shared = Shared {
            table: NodeTable::anonymous(MAX_NODES).unwrap(),
            keys: RwLock::new(Arc::new([KeyState::default(); auth::KEY_SLOTS as usize])),
            unauthenticated: Unauthenticated::Accept,
            record_locks: std::array::from_fn(|_| Mutex::new(())),
            stop: AtomicBool::new(false),
        };
        shared.table.configure(1, NodeRecord::default());
        (shared, [KeyState::default(); auth::KEY_SLOTS as usize])
    }

    #[test]
    fn an_accepted_heartbeat_never_moves_its_arrival_back() {
        let (shared, keys) = unstarted_with_node_1();
        let clock = Clock {
            monotonic_now: 10_000,
            realtime_minus_monotonic: 0,
        };
        let payload = heartbeat(1, 1, 1, 0).encode();
        let datagram = |payload, realtime_ns| Datagram {
            payload,
            truncated: false,
            src_addr: Ipv6Addr::LOCALHOST.octets(),
            src_port: 9,
            realtime_ns: Some(realtime_ns),
        };
        let outcome = record(&shared, &keys, &datagram(&payload, 9_000), &clock);
        assert_eq!(outcome, Counter::Accepted);
        assert_eq!(seen::arrival_ns(shared.table.seen.get(1)), 9_000);

        // The realtime clock was stepped forward since: the next heartbeat's
        // timestamp converts to an earlier time. Recorded, but not older.
        let payload = heartbeat(1, 1, 2, flags::LEAVE).encode();
        let outcome = record(&shared, &keys, &datagram(&payload, 5_000), &clock);
        assert_eq!(outcome, Counter::Accepted);
        let word = shared.table.seen.get(1);
        assert_eq!(seen::arrival_ns(word), 9_000);
        assert!(seen::is_leave(word));
        assert_eq!(shared.table.records.get(1).sequence, 2);

        // A truncated datagram is malformed whatever its first bytes say.
        let payload = heartbeat(1, 1, 3, 0).encode();
        let truncated = Datagram {
            truncated: true,
            ..datagram(&payload, 9_500)
        };
        assert_eq!(
            record(&shared, &keys, &truncated, &clock),
            Counter::Malformed
        );
    }

    #[test]
    fn interval_estimates_are_kept_as_the_xdp_program_keeps_them() {
        const MS: u64 = 1_000_000;
        let (shared, keys) = unstarted_with_node_1();
        let clock = Clock {
            monotonic_now: 10_000 * MS,
            realtime_minus_monotonic: 0,
        };
        let deliver = |incarnation, sequence, at_ms: u64| {
            let payload = heartbeat(1, incarnation, sequence, 0).encode();
            let datagram = Datagram {
                payload: &payload,
                truncated: false,
                src_addr: Ipv6Addr::LOCALHOST.octets(),
                src_port: 9,
                realtime_ns: Some(at_ms * MS),
            };
            assert_eq!(record(&shared, &keys, &datagram, &clock), Counter::Accepted);
            let word = shared.table.intervals.get(1);
            (intervals::mean_us(word), intervals::mad_us(word))
        };
        assert_eq!(deliver(1, 1, 1_000), (0, 0));
        assert_eq!(deliver(1, 2, 1_100), (100_000, 25_000));
        // Two lost heartbeats: 300 ms over a gap of 3 is a 100 ms sample.
        assert_eq!(deliver(1, 5, 1_400), (100_000, 23_437));
        // A restart is no sample.
        assert_eq!(deliver(2, 1, 9_000), (100_000, 23_437));
        // 200 ms: the mean moves by a sixteenth of the difference.
        assert_eq!(deliver(2, 2, 9_200), (106_250, 27_831));
    }

    #[test]
    fn receive_timestamps_move_onto_the_monotonic_clock() {
        let clock = Clock {
            monotonic_now: 5_000,
            realtime_minus_monotonic: 1_000_000,
        };
        assert_eq!(clock.monotonic_ns(Some(1_004_000)), 4_000);
        assert_eq!(clock.monotonic_ns(None), 5_000, "no timestamp: now");
        assert_eq!(
            clock.monotonic_ns(Some(1_009_000)),
            5_000,
            "never after the batch was read"
        );
        assert_eq!(
            clock.monotonic_ns(Some(999_000)),
            5_000,
            "before boot: the realtime clock was stepped; now"
        );

        let sampled = Clock::sample();
        let realtime = u64::try_from(i128::from(clock::unix_ns())).unwrap();
        let converted = sampled.monotonic_ns(Some(realtime));
        assert!(
            sampled.monotonic_now.abs_diff(converted) < 1_000_000,
            "{converted} vs {}",
            sampled.monotonic_now
        );
    }
}
