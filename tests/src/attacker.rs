//! An attacker for the network-namespace tests. [`Attacker::start`] runs a
//! thread that enters a lab namespace with `setns(CLONE_NEWNET)` on its
//! `/var/run/netns` file (which moves only that thread, never the test) and
//! sends crafted heartbeats to the monitor over plain UDP sockets: one or
//! more [`Stream`]s, each from an address of the attacker's namespace, at a
//! fixed rate, bounded in count and in time, stopping by themselves.
//! [`allow_spoofing`] lets the attacker's namespace send from another lab
//! host's address, as an attacker on that host's link could.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use hb_common::wire::HEARTBEAT_LEN;

use crate::{Error, Lab, Node, Result, interrupt, netns};

/// Most packets a second one stream may send.
pub const MAX_RATE: u32 = 1_000;
/// Most packets one stream may send in all.
pub const MAX_PACKETS: u64 = 10_000;
/// Longest a flood may last.
pub const MAX_DURATION: Duration = Duration::from_secs(120);
/// Longest the flooding thread sleeps at once, so that it stops promptly.
const NAP: Duration = Duration::from_millis(10);

/// Builds the payload of packet `k` (counted from 0) of a stream.
pub type PacketFn = Box<dyn FnMut(u64) -> [u8; HEARTBEAT_LEN] + Send>;

/// One kind of crafted packet.
pub struct Stream {
    /// Its name, for messages and [`Attacker::sent`] (`"forged"`, ...).
    pub name: &'static str,
    /// The source address: one of the attacker namespace's own addresses.
    pub from: Ipv4Addr,
    /// The payload of packet `k`.
    pub packet: PacketFn,
}

impl Stream {
    /// A stream named `name`, sent from `from`, packet `k` being
    /// `packet(k)`.
    pub fn new(
        name: &'static str,
        from: Ipv4Addr,
        packet: impl FnMut(u64) -> [u8; HEARTBEAT_LEN] + Send + 'static,
    ) -> Self {
        Self {
            name,
            from,
            packet: Box::new(packet),
        }
    }
}

/// Where and how fast a flood sends, and when it stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    /// The monitor's address and heartbeat port.
    pub to: SocketAddrV4,
    /// Packets a second, per stream: 1 to [`MAX_RATE`].
    pub rate: u32,
    /// Packets per stream at most: 1 to [`MAX_PACKETS`].
    pub max_packets: u64,
    /// The flood ends after this long at most: up to [`MAX_DURATION`].
    pub max_duration: Duration,
}

impl Flood {
    fn validate(&self) -> Result<()> {
        let invalid = |what: &'static str, value: String, reason: String| {
            Err(Error::Invalid {
                what,
                value,
                reason,
            })
        };
        if !(1..=MAX_RATE).contains(&self.rate) {
            return invalid(
                "flood rate",
                self.rate.to_string(),
                format!("must be 1 to {MAX_RATE} packets a second"),
            );
        }
        if !(1..=MAX_PACKETS).contains(&self.max_packets) {
            return invalid(
                "flood packet count",
                self.max_packets.to_string(),
                format!("must be 1 to {MAX_PACKETS}"),
            );
        }
        if self.max_duration.is_zero() || self.max_duration > MAX_DURATION {
            return invalid(
                "flood duration",
                format!("{:?}", self.max_duration),
                format!("must be more than 0 and at most {MAX_DURATION:?}"),
            );
        }
        Ok(())
    }
}

/// A flood running in its own thread inside the attacker's namespace;
/// stopped and joined on Drop.
pub struct Attacker {
    names: Vec<&'static str>,
    sent: Arc<[AtomicU64]>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for Attacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attacker")
            .field("sent", &self.sent())
            .finish_non_exhaustive()
    }
}

impl Attacker {
    /// Enter the namespace whose file is `netns` (see
    /// [`crate::NetNs::path`]) in a new thread, bind one socket per stream
    /// and start sending: at every tick (`flood.rate` a second) one packet
    /// of each stream, until [`Attacker::stop`], `flood.max_packets`,
    /// `flood.max_duration` or an interrupt. Returns once the sockets are
    /// bound, or with the error that prevented it.
    pub fn start(netns: &Path, flood: Flood, streams: Vec<Stream>) -> Result<Self> {
        flood.validate()?;
        let names: Vec<&'static str> = streams.iter().map(|stream| stream.name).collect();
        let sent: Arc<[AtomicU64]> = names.iter().map(|_| AtomicU64::new(0)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let netns = netns.to_owned();
        let thread = {
            let sent = Arc::clone(&sent);
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("hb-attacker".to_owned())
                .spawn(move || {
                    let sockets = match netns::enter(&netns).and_then(|()| bind(&streams)) {
                        Ok(sockets) => {
                            let _ = ready_tx.send(Ok(()));
                            sockets
                        }
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                            return Ok(());
                        }
                    };
                    send_loop(flood, streams, &sockets, &sent, &stop)
                })
                .map_err(|source| Error::Net {
                    op: "starting the attacker thread".to_owned(),
                    source,
                })?
        };
        let attacker = Self {
            names,
            sent,
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(attacker),
            Ok(Err(err)) => Err(err),
            Err(mpsc::RecvError) => Err(Error::Net {
                op: "starting the attacker thread".to_owned(),
                source: io::Error::other("the thread ended before binding its sockets"),
            }),
        }
    }

    /// Packets sent so far by each stream, in stream order.
    pub fn sent(&self) -> Vec<(&'static str, u64)> {
        self.names
            .iter()
            .zip(self.sent.iter())
            .map(|(name, sent)| (*name, sent.load(Ordering::Relaxed)))
            .collect()
    }

    /// Packets sent so far by the stream `name` (0 if there is none).
    pub fn sent_by(&self, name: &str) -> u64 {
        self.sent()
            .into_iter()
            .find(|(stream, _)| *stream == name)
            .map_or(0, |(_, sent)| sent)
    }

    /// Whether the flood has ended by itself (count, duration or error).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stop the flood and wait for the thread. Returns the packets each
    /// stream sent, or the error that ended the flood early.
    pub fn stop(mut self) -> Result<Vec<(&'static str, u64)>> {
        self.join()?;
        Ok(self.sent())
    }

    fn join(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // Its outcome only matters to `stop`; a panic was reported.
            let _ = thread.join();
        }
    }
}

/// One UDP socket per stream, bound to the stream's source address.
fn bind(streams: &[Stream]) -> Result<Vec<UdpSocket>> {
    streams
        .iter()
        .map(|stream| {
            UdpSocket::bind((stream.from, 0)).map_err(|source| Error::Net {
                op: format!(
                    "binding a UDP socket to {} for {}",
                    stream.from, stream.name
                ),
                source,
            })
        })
        .collect()
}

fn send_loop(
    flood: Flood,
    mut streams: Vec<Stream>,
    sockets: &[UdpSocket],
    sent: &[AtomicU64],
    stop: &AtomicBool,
) -> Result<()> {
    let period = Duration::from_secs(1) / flood.rate;
    let start = Instant::now();
    let deadline = start + flood.max_duration;
    let mut tick: u32 = 0;
    while u64::from(tick) < flood.max_packets
        && !stop.load(Ordering::SeqCst)
        && !interrupt::interrupted()
    {
        let due = start + period * tick;
        if due >= deadline {
            break;
        }
        let now = Instant::now();
        if due > now {
            thread::sleep((due - now).min(NAP));
            continue;
        }
        for ((stream, socket), count) in streams.iter_mut().zip(sockets).zip(sent) {
            let payload = (stream.packet)(tick.into());
            socket
                .send_to(&payload, flood.to)
                .map_err(|source| Error::Net {
                    op: format!(
                        "sending {} packet {tick} from {} to {}",
                        stream.name, stream.from, flood.to
                    ),
                    source,
                })?;
            count.fetch_add(1, Ordering::Relaxed);
        }
        tick += 1;
    }
    Ok(())
}

/// Let `attacker` (a node of `lab`) send from `address` too, as a host on
/// the link of the lab node that owns `address` could: the address is
/// added to the attacker's interface (/32), the monitor's MAC on the
/// attacker's link is made a permanent neighbour (so no ARP request leaves
/// with the borrowed source address), and the monitor namespace's reverse
/// path filter is turned off (all, and the attacker's link), so that the
/// socket datapath sees these packets as the XDP program does.
pub fn allow_spoofing(lab: &Lab, attacker: &Node, address: Ipv4Addr) -> Result<()> {
    attacker.ns.ip([
        "addr",
        "add",
        &format!("{address}/32"),
        "dev",
        &attacker.interface,
    ])?;
    let output = lab
        .monitor
        .ip(["-j", "link", "show", "dev", &attacker.monitor_interface])?;
    let links: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|source| Error::Json {
            cmd: format!("ip -j link show dev {}", attacker.monitor_interface),
            output: String::from_utf8_lossy(&output.stdout).into_owned(),
            source,
        })?;
    let mac = links[0]["address"]
        .as_str()
        .ok_or_else(|| Error::Invalid {
            what: "ip -j link show output",
            value: links.to_string(),
            reason: "has no link address".to_owned(),
        })?
        .to_owned();
    attacker.ns.ip([
        "neigh",
        "replace",
        &attacker.monitor_address.to_string(),
        "lladdr",
        &mac,
        "dev",
        &attacker.interface,
        "nud",
        "permanent",
    ])?;
    lab.monitor.exec(
        "sysctl",
        [
            "-q".to_owned(),
            "-w".to_owned(),
            "net.ipv4.conf.all.rp_filter=0".to_owned(),
            format!("net.ipv4.conf.{}.rp_filter=0", attacker.monitor_interface),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flood(rate: u32, max_packets: u64, max_duration: Duration) -> Flood {
        Flood {
            to: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 7979),
            rate,
            max_packets,
            max_duration,
        }
    }

    #[test]
    fn floods_are_bounded() {
        let second = Duration::from_secs(1);
        assert!(flood(20, 100, second).validate().is_ok());
        for bad in [
            flood(0, 100, second),
            flood(MAX_RATE + 1, 100, second),
            flood(20, 0, second),
            flood(20, MAX_PACKETS + 1, second),
            flood(20, 100, Duration::ZERO),
            flood(20, 100, MAX_DURATION + second),
        ] {
            let err = bad.validate().unwrap_err();
            assert!(matches!(err, Error::Invalid { .. }), "{bad:?}: {err}");
        }
    }
}
