//! The lab of the probe tests (issue 15): nodes that run no sender and are
//! probed by the agent (ICMP, TCP, HTTP), and the hosts and tools around
//! them, each bounded in time and removed or stopped on Drop:
//!
//! - [`write_config`]: an agent configuration whose nodes carry `probe`
//!   settings (and may share an address, or have an IPv6 one);
//! - [`add_ipv6`]: fd00::/8 addresses on a lab link, kept across link
//!   down/up; [`set_link`] and [`ignore_echo`] take a node away (its link,
//!   or only its ICMP answers), [`drop_probes`] loses chosen probes;
//! - [`ping`]: one echo request from a namespace and its answer (the
//!   machine has no `ping`);
//! - [`TcpService`]: a listener in a node namespace that accepts and closes;
//! - [`HealthServer`]: an HTTP server in a node namespace answering
//!   `GET /healthz` with a status and a body the test switches;
//! - [`capture_probes`]: hb's echo requests as a node receives them (a raw
//!   socket in the node's namespace), which tell an attacker the identifier
//!   and give it real replies to replay;
//! - [`send_icmp`]: echo replies sent from an attacker's namespace
//!   (from a borrowed address, see [`crate::attacker::allow_spoofing`]);
//! - [`api_get`]: the agent's HTTP API, from inside the monitor namespace.
//!
//! Addresses are only 198.18.0.0/15 (the [`Lab`]'s) and fd00::/8.

use std::{
    fmt::Write as _,
    fs,
    io::{self, Read, Write},
    mem,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use hb_common::probe::{
    ICMP_ECHO_HLEN, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST,
    PROBE_LEN, Probe, echo_message,
};
use serde_json::Value;

use crate::{
    Error, HEARTBEAT_PORT, Lab, NetNs, Result, TempDir, TestConfig, Timing,
    config::{humantime, shell_quote, toml_string},
    interrupt, netns,
};

/// The agent's HTTP API inside the monitor namespace (the default `[http]
/// listen`).
pub const API: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7980);
/// Longest a server thread of this module lives; it closes by itself then.
pub const MAX_LIFETIME: Duration = Duration::from_secs(180);
/// Most ICMP messages one [`send_icmp`] call sends.
pub const MAX_REPLIES: usize = 2_000;
/// Connect, read and write timeout of every exchange of this module.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle server looks at its stop flag.
const POLL: Duration = Duration::from_millis(5);
/// Requests are short; anything longer is cut.
const MAX_REQUEST: usize = 8192;

/// A node of a probe test's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedNode {
    /// Its hb node id (1 to 16: the configuration's `max_nodes`).
    pub id: u32,
    /// Its `address`.
    pub address: IpAddr,
    /// Further `key = value` lines of its `[[nodes]]` table (values are
    /// TOML already), such as `probe = "icmp"`.
    pub settings: Vec<String>,
}

impl ProbedNode {
    /// Node `id` named `node-<id>` at `address`, with no probe yet.
    pub fn new(id: u32, address: impl Into<IpAddr>) -> Self {
        Self {
            id,
            address: address.into(),
            settings: Vec::new(),
        }
    }

    /// With `probe = "<probe>"`.
    pub fn probe(self, probe: &str) -> Self {
        self.set("probe", &toml_string(probe))
    }

    /// With `key = value` (`value` is TOML: a quoted string, a number, ...).
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.settings.push(format!("{key} = {value}"));
        self
    }
}

/// The name [`write_config`] gives node `id` (as [`crate::config::node_name`]
/// does for lab nodes).
pub fn node_name(id: u32) -> String {
    format!("node-{id}")
}

/// Write `hb.toml` into `dir` for `lab`: every monitor interface of the lab
/// (so the XDP program sees what arrives on any link, an attacker's too),
/// `datapath = "xdp"`, `timing` as the defaults, the TOML `sections` (such
/// as a `[probe]` table) before the nodes, the `nodes`, and the action that
/// records events as [`crate::events`] reads them.
pub fn write_config(
    dir: &TempDir,
    lab: &Lab,
    timing: Timing,
    sections: &str,
    nodes: &[ProbedNode],
) -> Result<TestConfig> {
    write_config_on(dir, lab, "xdp", timing, sections, nodes)
}

/// [`write_config`] with `datapath = "<datapath>"` (`xdp` or `socket`).
pub fn write_config_on(
    dir: &TempDir,
    lab: &Lab,
    datapath: &str,
    timing: Timing,
    sections: &str,
    nodes: &[ProbedNode],
) -> Result<TestConfig> {
    let config = TestConfig {
        path: dir.join("hb.toml"),
        events: dir.join("events.log"),
        socket: dir.join("hb.sock"),
        state: dir.join("state"),
        timing,
    };
    let text = render(&config, lab, datapath, sections, nodes);
    fs::write(&config.path, text).map_err(|source| Error::Io {
        op: "writing",
        path: config.path.clone(),
        source,
    })?;
    Ok(config)
}

fn render(
    config: &TestConfig,
    lab: &Lab,
    datapath: &str,
    sections: &str,
    nodes: &[ProbedNode],
) -> String {
    let interfaces: Vec<String> = lab
        .monitor_interfaces()
        .iter()
        .map(|name| toml_string(name))
        .collect();
    let path = |p: &Path| toml_string(&p.to_string_lossy());
    let mut text = format!(
        "# Written by hb-tests (probe lab) for lab {prefix}.\n\
         interfaces = [{interfaces}]\n\
         port = {HEARTBEAT_PORT}\n\
         max_nodes = 16\n\
         pass_heartbeats = false\n\
         datapath = {datapath}\n\
         xdp_mode = \"auto\"\n\
         instance = {instance}\n\
         status_socket = {socket}\n\
         state_file = {state}\n\
         \n\
         [defaults]\n\
         interval = \"{interval}\"\n\
         timeout_multiplier = {multiplier}\n\
         sweep_period = \"{sweep}\"\n",
        prefix = lab.prefix(),
        interfaces = interfaces.join(", "),
        datapath = toml_string(datapath),
        instance = toml_string(lab.instance()),
        socket = path(&config.socket),
        state = path(&config.state),
        interval = humantime(config.timing.interval),
        multiplier = config.timing.timeout_multiplier,
        sweep = humantime(config.timing.sweep_period),
    );
    if !sections.trim().is_empty() {
        let _ = write!(text, "\n{}\n", sections.trim());
    }
    for node in nodes {
        let _ = write!(
            text,
            "\n[[nodes]]\nid = {}\nname = {}\naddress = {}\n",
            node.id,
            toml_string(&node_name(node.id)),
            toml_string(&node.address.to_string()),
        );
        for line in &node.settings {
            let _ = writeln!(text, "{line}");
        }
    }
    let shell = format!(
        "echo \"$HB_EVENT $HB_NODE_ID $HB_NODE_NAME $HB_PREVIOUS_STATE \
         $HB_SINCE_LAST_HEARTBEAT_MS\" >> {}",
        shell_quote(&config.events.to_string_lossy())
    );
    let _ = write!(
        text,
        "\n[[actions]]\nname = \"record\"\non = [\"up\", \"down\", \"left\"]\n\
         shell = {}\ntimeout = \"5s\"\n",
        toml_string(&shell)
    );
    text
}

/// The IPv6 addresses of a lab link (see [`add_ipv6`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Link {
    /// The monitor's end: `fd00:0:0:<i>::1`.
    pub monitor: Ipv6Addr,
    /// The node's end: `fd00:0:0:<i>::2`.
    pub node: Ipv6Addr,
}

/// Give lab node `index`'s link IPv6 addresses too: `fd00:0:0:<i>::1/64`
/// on the monitor's end, `::2/64` on the node's, both without duplicate
/// address detection (usable at once), and kept when the node's link goes
/// down (Linux removes IPv6 addresses on link down otherwise, and does not
/// put them back on up).
pub fn add_ipv6(lab: &Lab, index: u8) -> Result<Ipv6Link> {
    let node = lab.node(index);
    let link = Ipv6Link {
        monitor: Ipv6Addr::new(0xfd00, 0, 0, index.into(), 0, 0, 0, 1),
        node: Ipv6Addr::new(0xfd00, 0, 0, index.into(), 0, 0, 0, 2),
    };
    for (ns, interface) in [
        (&lab.monitor, &node.monitor_interface),
        (&node.ns, &node.interface),
    ] {
        ns.exec(
            "sysctl",
            [
                "-q",
                "-w",
                &format!("net.ipv6.conf.{interface}.keep_addr_on_down=1"),
            ],
        )?;
    }
    lab.monitor.ip([
        "-6",
        "addr",
        "add",
        &format!("{}/64", link.monitor),
        "dev",
        &node.monitor_interface,
        "nodad",
    ])?;
    node.ns.ip([
        "-6",
        "addr",
        "add",
        &format!("{}/64", link.node),
        "dev",
        &node.interface,
        "nodad",
    ])?;
    Ok(link)
}

/// Set the interface `interface` of `ns` up or down (`ip link set`).
pub fn set_link(ns: &NetNs, interface: &str, up: bool) -> Result<()> {
    ns.ip([
        "link",
        "set",
        "dev",
        interface,
        if up { "up" } else { "down" },
    ])
    .map(drop)
}

/// Make `ns` ignore (or answer again) every ICMP echo request of one
/// family (`net.ipv4.icmp_echo_ignore_all`, `net.ipv6.icmp.echo_ignore_all`):
/// the host is there, its ICMP answers are not.
pub fn ignore_echo(ns: &NetNs, ipv6: bool, ignore: bool) -> Result<()> {
    let key = if ipv6 {
        "net.ipv6.icmp.echo_ignore_all"
    } else {
        "net.ipv4.icmp_echo_ignore_all"
    };
    ns.exec(
        "sysctl",
        ["-q", "-w", &format!("{key}={}", u8::from(ignore))],
    )
    .map(drop)
}

/// Make `ns` drop (nftables, input hook) the ICMP echo requests of hb's
/// probes of node `node_id` whose probe sequence is one of `sequences`
/// (its low 32 bits: the probe data's bytes 20..24, after the 8-byte ICMP
/// header), counting them: exactly those probes are lost. Removed with the
/// namespace.
pub fn drop_probes(ns: &NetNs, node_id: u32, sequences: &[u64]) -> Result<()> {
    let set: Vec<String> = sequences
        .iter()
        .map(|s| (s & 0xffff_ffff).to_string())
        .collect();
    let node_bits = (ICMP_ECHO_HLEN + 8) * 8;
    let sequence_bits = (ICMP_ECHO_HLEN + 20) * 8;
    for command in [
        "add table inet hbprobe".to_owned(),
        "add chain inet hbprobe input { type filter hook input priority 0; }".to_owned(),
        format!(
            "add rule inet hbprobe input icmp type echo-request @th,{node_bits},32 {node_id} \
             @th,{sequence_bits},32 {{ {} }} counter drop",
            set.join(", ")
        ),
    ] {
        ns.exec("nft", [command.as_str()])?;
    }
    Ok(())
}

/// How many packets [`drop_probes`]'s rule in `ns` has dropped.
pub fn dropped_probes(ns: &NetNs) -> Result<u64> {
    let output = ns.exec("nft", ["list chain inet hbprobe input"])?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .skip_while(|word| *word != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::Invalid {
            what: "nft output",
            value: text.clone().into_owned(),
            reason: "no packet counter in hb's drop rule".to_owned(),
        })
}

/// Run `work` on a new thread inside the namespace `netns` (its file, see
/// [`NetNs::path`]) and return its result; the test's own thread never
/// changes namespace.
fn in_netns<T: Send + 'static>(
    netns: &Path,
    what: &str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let netns = netns.to_owned();
    let handle = thread::Builder::new()
        .name("hb-probe-lab".to_owned())
        .spawn(move || {
            netns::enter(&netns)?;
            work()
        })
        .map_err(|source| Error::Net {
            op: format!("starting a thread for {what}"),
            source,
        })?;
    handle.join().unwrap_or_else(|_| {
        Err(Error::Net {
            op: what.to_owned(),
            source: io::Error::other("the thread panicked"),
        })
    })
}

/// A raw ICMP (IPv4) or ICMPv6 socket, closed on Drop.
#[derive(Debug)]
struct RawIcmp {
    fd: OwnedFd,
    ipv6: bool,
}

impl RawIcmp {
    fn open(ipv6: bool) -> io::Result<Self> {
        let (family, protocol) = if ipv6 {
            (libc::AF_INET6, libc::IPPROTO_ICMPV6)
        } else {
            (libc::AF_INET, libc::IPPROTO_ICMP)
        };
        // SAFETY: socket has no memory-safety preconditions.
        let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just returned by socket and is owned
        // by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let socket = Self { fd, ipv6 };
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        // SAFETY: the option value is one timeval on our stack, of the size
        // passed.
        let status = unsafe {
            libc::setsockopt(
                socket.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if status != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    fn bind(&self, address: IpAddr) -> io::Result<()> {
        let (storage, len) = sockaddr(address);
        // SAFETY: the address is a sockaddr_storage on our stack holding a
        // sockaddr of `len` bytes.
        let status = unsafe { libc::bind(self.fd.as_raw_fd(), (&raw const storage).cast(), len) };
        if status == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn send_to(&self, message: &[u8], to: IpAddr) -> io::Result<()> {
        let (storage, len) = sockaddr(to);
        // SAFETY: the buffer and the address live on our stack for the
        // whole call, with the lengths passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&raw const storage).cast(),
                len,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// One ICMP message and where it came from; `Ok(None)` after the
    /// socket's short receive timeout. The IPv4 header a raw IPv4 socket
    /// delivers is stripped; the destination is returned too (IPv4 only:
    /// `None` for IPv6).
    fn recv(&self, buffer: &mut [u8]) -> io::Result<Option<Received>> {
        // SAFETY: sockaddr_storage is plain data; all zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: the buffer and the address are ours, with their lengths.
        let got = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
                (&raw mut storage).cast(),
                &raw mut len,
            )
        };
        if got < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(err),
            };
        }
        let got = got as usize;
        let packet = &buffer[..got];
        if self.ipv6 {
            // SAFETY: the kernel wrote a sockaddr_in6 for an AF_INET6 socket.
            let from = unsafe { *(&raw const storage).cast::<libc::sockaddr_in6>() };
            return Ok(Some(Received {
                from: IpAddr::V6(Ipv6Addr::from(from.sin6_addr.s6_addr)),
                to: None,
                message: packet.to_vec(),
            }));
        }
        let Some(&first) = packet.first() else {
            return Ok(None);
        };
        let header = usize::from(first & 0x0f) * 4;
        if packet.len() < header.max(20) {
            return Ok(None);
        }
        let octets =
            |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
        Ok(Some(Received {
            from: IpAddr::V4(octets(12)),
            to: Some(IpAddr::V4(octets(16))),
            message: packet[header..].to_vec(),
        }))
    }
}

/// One ICMP message a [`RawIcmp`] received.
struct Received {
    from: IpAddr,
    to: Option<IpAddr>,
    message: Vec<u8>,
}

fn sockaddr(address: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match address {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every
            // sockaddr type.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Echo identifier and data of [`ping`]'s requests: not an hb probe (its
/// data has another length), so the XDP program passes the answer whatever
/// the identifier.
const PING_DATA: &[u8; 16] = b"hb-tests ping!!!";

/// Whether `target` answers one ICMP (or ICMPv6) echo request sent from
/// inside `netns` within `within` (up to three requests, spread over it).
pub fn ping(netns: &Path, target: IpAddr, within: Duration) -> Result<bool> {
    in_netns(netns, &format!("pinging {target}"), move || {
        let net = |op: &str| {
            let op = format!("{op} (ping {target})");
            move |source| Error::Net { op, source }
        };
        let ipv6 = target.is_ipv6();
        let socket = RawIcmp::open(ipv6).map_err(net("opening a raw ICMP socket"))?;
        let identifier = (std::process::id() as u16) ^ 0x5a5a;
        let kind = if ipv6 {
            ICMPV6_ECHO_REQUEST
        } else {
            ICMP_ECHO_REQUEST
        };
        let reply_kind = if ipv6 {
            ICMPV6_ECHO_REPLY
        } else {
            ICMP_ECHO_REPLY
        };
        let mut message = Vec::with_capacity(ICMP_ECHO_HLEN + PING_DATA.len());
        message.extend_from_slice(&[kind, 0, 0, 0]);
        message.extend_from_slice(&identifier.to_be_bytes());
        message.extend_from_slice(&[0, 0]);
        message.extend_from_slice(PING_DATA);
        let start = Instant::now();
        let deadline = start + within;
        let mut buffer = [0u8; 2048];
        for attempt in 0u16..3 {
            message[6..8].copy_from_slice(&attempt.to_be_bytes());
            if !ipv6 {
                message[2..4].copy_from_slice(&[0, 0]);
                let sum = checksum(&message);
                message[2..4].copy_from_slice(&sum.to_be_bytes());
            }
            // A send error (no route, link down) is a lost request.
            let _ = socket.send_to(&message, target);
            let until = (start + within * u32::from(attempt + 1) / 3).min(deadline);
            while Instant::now() < until {
                interrupt::check()?;
                let Some(received) = socket.recv(&mut buffer).map_err(net("receiving"))? else {
                    continue;
                };
                let m = &received.message;
                if received.from == target
                    && m.len() == message.len()
                    && m[0] == reply_kind
                    && m[4..6] == identifier.to_be_bytes()
                    && &m[ICMP_ECHO_HLEN..] == PING_DATA
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    })
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An hb echo request as the probed node received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapturedProbe {
    /// Who sent it (the monitor's address on the node's link).
    pub from: Ipv4Addr,
    /// Who it was for (the node's address).
    pub to: Ipv4Addr,
    /// hb's echo identifier.
    pub identifier: u16,
    /// The ICMP header's sequence number.
    pub icmp_sequence: u16,
    /// The echo data: the probe, which the node echoes back unchanged.
    pub data: [u8; PROBE_LEN],
    /// The data decoded.
    pub probe: Probe,
    /// When it was captured.
    pub at: Instant,
}

impl CapturedProbe {
    /// The echo reply the node answers it with (the ICMP message; the
    /// kernel's reply is exactly this): the same identifier, sequence and
    /// data, type 0.
    pub fn reply(&self) -> [u8; ICMP_ECHO_HLEN + PROBE_LEN] {
        echo_message(
            ICMP_ECHO_REPLY,
            self.identifier,
            self.icmp_sequence,
            &self.data,
        )
    }

    /// A forged reply: this probe's identifier and ICMP header, node id
    /// `node_id`, sequence `sequence` and the tag `tag` (a wrong one, as
    /// whoever does not know the agent's secret must guess).
    pub fn forged_reply(
        &self,
        node_id: u32,
        sequence: u64,
        tag: u64,
    ) -> [u8; ICMP_ECHO_HLEN + PROBE_LEN] {
        let mut data = self.data;
        data[8..12].copy_from_slice(&node_id.to_be_bytes());
        data[16..24].copy_from_slice(&sequence.to_be_bytes());
        data[24..32].copy_from_slice(&tag.to_le_bytes());
        echo_message(ICMP_ECHO_REPLY, self.identifier, self.icmp_sequence, &data)
    }
}

/// The first `count` hb echo requests (IPv4; data an hb probe: 32 bytes
/// starting with `HBPR`) that arrive in `netns` within `within`, read from
/// a raw ICMP socket there (the kernel still answers them as usual).
/// Returns what was captured when the time is up, possibly fewer.
pub fn capture_probes(netns: &Path, count: usize, within: Duration) -> Result<Vec<CapturedProbe>> {
    in_netns(netns, "capturing hb's echo requests", move || {
        let socket = RawIcmp::open(false).map_err(|source| Error::Net {
            op: "opening a raw ICMP socket to capture probes".to_owned(),
            source,
        })?;
        let deadline = Instant::now() + within;
        let mut captured = Vec::with_capacity(count);
        let mut buffer = [0u8; 2048];
        while captured.len() < count && Instant::now() < deadline {
            interrupt::check()?;
            let received = socket.recv(&mut buffer).map_err(|source| Error::Net {
                op: "capturing probes".to_owned(),
                source,
            })?;
            let Some(Received {
                from: IpAddr::V4(from),
                to: Some(IpAddr::V4(to)),
                message,
            }) = received
            else {
                continue;
            };
            if message.len() != ICMP_ECHO_HLEN + PROBE_LEN || message[0] != ICMP_ECHO_REQUEST {
                continue;
            }
            let data: [u8; PROBE_LEN] = message[ICMP_ECHO_HLEN..]
                .try_into()
                .expect("the length was checked");
            let Ok(probe) = Probe::decode(&data) else {
                continue;
            };
            captured.push(CapturedProbe {
                from,
                to,
                identifier: u16::from_be_bytes([message[4], message[5]]),
                icmp_sequence: u16::from_be_bytes([message[6], message[7]]),
                data,
                probe,
                at: Instant::now(),
            });
        }
        Ok(captured)
    })
}

/// Send the ICMP `messages` (echo replies, or requests) from `from` (an
/// address of `netns`, e.g. one borrowed with
/// [`crate::attacker::allow_spoofing`]) to `to`, one every `spacing`, from
/// a raw socket inside `netns`. At most [`MAX_REPLIES`] messages; returns
/// how many were sent.
pub fn send_icmp(
    netns: &Path,
    from: Ipv4Addr,
    to: Ipv4Addr,
    messages: Vec<[u8; ICMP_ECHO_HLEN + PROBE_LEN]>,
    spacing: Duration,
) -> Result<usize> {
    if messages.len() > MAX_REPLIES {
        return Err(Error::Invalid {
            what: "ICMP message count",
            value: messages.len().to_string(),
            reason: format!("at most {MAX_REPLIES} a call"),
        });
    }
    in_netns(netns, "sending ICMP messages", move || {
        let net = |op: String| move |source| Error::Net { op, source };
        let socket = RawIcmp::open(false)
            .map_err(net("opening a raw ICMP socket to send replies".to_owned()))?;
        socket
            .bind(IpAddr::V4(from))
            .map_err(net(format!("binding a raw ICMP socket to {from}")))?;
        let mut sent = 0;
        for message in &messages {
            interrupt::check()?;
            socket
                .send_to(message, IpAddr::V4(to))
                .map_err(net(format!("sending an ICMP message from {from} to {to}")))?;
            sent += 1;
            thread::sleep(spacing);
        }
        Ok(sent)
    })
}

/// A server thread inside a namespace: stopped on Drop, and by itself after
/// its lifetime.
#[derive(Debug)]
struct ServerThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Bind `address` in `netns` on a new thread, then run `serve` on the
    /// listener with the stop flag (set on Drop, or once `lifetime` has
    /// passed); returns once bound.
    fn start(
        netns: &Path,
        address: SocketAddr,
        lifetime: Duration,
        serve: impl FnOnce(&TcpListener, &dyn Fn() -> bool) + Send + 'static,
    ) -> Result<Self> {
        let lifetime = lifetime.min(MAX_LIFETIME);
        let (ready, bound) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let netns_path: PathBuf = netns.to_owned();
        let thread = thread::Builder::new()
            .name("hb-probe-server".to_owned())
            .spawn(move || {
                let listener = match crate::http::bind_in(&netns_path, address) {
                    Ok(listener) => {
                        let _ = ready.send(Ok(()));
                        listener
                    }
                    Err(err) => {
                        let _ = ready.send(Err(err));
                        return;
                    }
                };
                let until = Instant::now() + lifetime;
                let done = move || {
                    stopping.load(Ordering::SeqCst)
                        || Instant::now() >= until
                        || interrupt::interrupted()
                };
                serve(&listener, &done);
            })
            .map_err(|source| Error::Net {
                op: format!("starting a server thread for {address}"),
                source,
            })?;
        let server = Self {
            stop,
            thread: Some(thread),
        };
        match bound.recv_timeout(IO_TIMEOUT) {
            Ok(Ok(())) => Ok(server),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(Error::Timeout {
                what: format!("a server to listen on {address}"),
                after: IO_TIMEOUT,
                detail: String::new(),
            }),
        }
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// A TCP listener in a node's namespace that accepts every connection and
/// closes it at once (what a TCP probe needs: the connect). Stopping it
/// (or dropping it) closes the listening socket, so connections are
/// refused from then on.
#[derive(Debug)]
pub struct TcpService {
    server: ServerThread,
    accepted: Arc<AtomicU64>,
    address: SocketAddr,
}

impl TcpService {
    /// Listen on `address` inside `netns` for at most `lifetime` (and at
    /// most [`MAX_LIFETIME`]).
    pub fn start(netns: &Path, address: SocketAddr, lifetime: Duration) -> Result<Self> {
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&accepted);
        let server = ServerThread::start(netns, address, lifetime, move |listener, done| {
            while !done() {
                match listener.accept() {
                    Ok((stream, _)) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                    }
                    Err(_) => thread::sleep(POLL),
                }
            }
        })?;
        Ok(Self {
            server,
            accepted,
            address,
        })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Close the listening socket; returns once it is closed.
    pub fn stop(mut self) -> u64 {
        self.server.shut_down();
        self.accepted()
    }
}

/// What [`HealthServer`] answers `GET /healthz` with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl Answer {
    /// `status` with `body`.
    pub fn new(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_owned(),
        }
    }

    /// No answer at all: the server reads the request and then waits, for
    /// the client to give up (at most a couple of seconds), without a
    /// byte. A hung backend.
    pub fn hang() -> Self {
        Self::new(HANG, "")
    }
}

/// The [`Answer::status`] of [`Answer::hang`].
const HANG: u16 = 0;

/// An HTTP/1.1 server in a node's namespace, one request per connection,
/// answering `GET /healthz` with the current [`Answer`] (switched by
/// [`HealthServer::set`]) and anything else with 404. Stopped on Drop.
#[derive(Debug)]
pub struct HealthServer {
    server: ServerThread,
    answer: Arc<Mutex<Answer>>,
    served: Arc<Mutex<Vec<(Instant, u16)>>>,
}

impl HealthServer {
    /// Serve `answer` on `address` inside `netns`, for at most `lifetime`.
    pub fn start(
        netns: &Path,
        address: SocketAddr,
        answer: Answer,
        lifetime: Duration,
    ) -> Result<Self> {
        let answer = Arc::new(Mutex::new(answer));
        let served = Arc::new(Mutex::new(Vec::new()));
        let (current, log) = (Arc::clone(&answer), Arc::clone(&served));
        let server = ServerThread::start(netns, address, lifetime, move |listener, done| {
            while !done() {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let accepted = Instant::now();
                        let answer = current
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .clone();
                        // A broken client only loses its own answer.
                        if let Ok(status) = answer_health(stream, &answer) {
                            log.lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push((accepted, status));
                        }
                    }
                    Err(_) => thread::sleep(POLL),
                }
            }
        })?;
        Ok(Self {
            server,
            answer,
            served,
        })
    }

    /// Answer `answer` from the next request accepted on.
    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = answer;
    }

    /// `GET /healthz` requests accepted since `since` (and answered, or
    /// hung up on by the client), and how many of them with `status`.
    pub fn served_since(&self, since: Instant, status: u16) -> (usize, usize) {
        let served = self.served.lock().unwrap_or_else(PoisonError::into_inner);
        let after: Vec<u16> = served
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, code)| *code)
            .collect();
        let matching = after.iter().filter(|&&code| code == status).count();
        (after.len(), matching)
    }

    /// Stop serving and close the socket.
    pub fn stop(mut self) {
        self.server.shut_down();
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// Read one request from `stream` and answer it; returns the status sent
/// for `GET /healthz` (an error for anything else, which gets a 404).
fn answer_health(mut stream: TcpStream, answer: &Answer) -> io::Result<u16> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let mut words = line.lines().next().unwrap_or_default().split_whitespace();
    let health = words.next() == Some("GET") && words.next() == Some("/healthz");
    if health && answer.status == HANG {
        // Until the client closes, or the read timeout.
        while matches!(stream.read(&mut buffer), Ok(n) if n > 0) {}
        return Ok(HANG);
    }
    let (status, body) = if health {
        (answer.status, answer.body.as_str())
    } else {
        (404, "not here\n")
    };
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()?;
    if health {
        Ok(status)
    } else {
        Err(io::Error::other("not GET /healthz"))
    }
}

/// `GET path` on the agent's HTTP API ([`API`]) from inside `monitor`:
/// the status code and the body parsed as JSON (`Null` if it is not).
pub fn api_get(monitor: &NetNs, path: &str) -> Result<(u16, Value)> {
    let (status, body) = api_text(monitor, path)?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

/// `GET path` on the agent's HTTP API ([`API`]) from inside `monitor`:
/// the status code and the body.
pub fn api_text(monitor: &NetNs, path: &str) -> Result<(u16, String)> {
    http_get(&monitor.path(), API, path)
}

/// `GET path` (HTTP/1.0) to `address` from inside the namespace `netns`:
/// the status code and the body. Bounded: every step times out.
pub fn http_get(netns: &Path, address: SocketAddr, path: &str) -> Result<(u16, String)> {
    let path = path.to_owned();
    in_netns(netns, &format!("GET {path}"), move || {
        let net = |op: String| move |source| Error::Net { op, source };
        let what = format!("GET http://{address}{path}");
        let mut stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)
            .map_err(net(format!("{what}: connect")))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(net(format!("{what}: timeouts")))?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
            .map_err(net(format!("{what}: request")))?;
        let mut response = Vec::new();
        stream
            .take(16 << 20)
            .read_to_end(&mut response)
            .map_err(net(format!("{what}: response")))?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| Error::Invalid {
                what: "HTTP response",
                value: response.chars().take(200).collect(),
                reason: format!("{what}: no end of headers"),
            })?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| Error::Invalid {
                what: "HTTP status line",
                value: head.lines().next().unwrap_or_default().to_owned(),
                reason: what.clone(),
            })?;
        Ok((status, body.to_owned()))
    })
}

/// The sum of the samples of the Prometheus metric `name` in `text` whose
/// labels include every `labels` pair (in any order); `None` if there is
/// no such sample.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = if let Some(inner) = rest.strip_prefix('{') {
            let Some((inner, value)) = inner.split_once('}') else {
                continue;
            };
            (inner, value)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue;
        };
        let all = labels.iter().all(|(key, want)| {
            label_text
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .any(|(k, v)| k.trim() == *key && v.trim().trim_matches('"') == *want)
        });
        let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if all {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_like_the_rfc() {
        // RFC 1071's example: 0x0001 f203 f4f5 f6f7 sums to 0xddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        // A message carrying its own checksum sums to zero.
        let data = [7u8; PROBE_LEN];
        let message = echo_message(ICMP_ECHO_REPLY, 0x1234, 9, &data);
        assert_eq!(checksum(&message), 0);
    }

    #[test]
    fn forged_replies_keep_the_header_and_change_the_fields() {
        let key: hb_common::siphash::Key = [3; 16];
        let target = Ipv4Addr::new(198, 18, 1, 2).to_ipv6_mapped().octets();
        let probe = Probe {
            node_id: 1,
            sequence: 5,
        };
        let data = probe.encode(&key, &target);
        let captured = CapturedProbe {
            from: Ipv4Addr::new(198, 18, 1, 1),
            to: Ipv4Addr::new(198, 18, 1, 2),
            identifier: 0xbeef,
            icmp_sequence: 77,
            data,
            probe,
            at: Instant::now(),
        };
        let reply = captured.reply();
        assert_eq!(reply[0], ICMP_ECHO_REPLY);
        assert_eq!(&reply[ICMP_ECHO_HLEN..], &data);
        assert!(hb_common::probe::verify(&key, &data, &target));
        let forged = captured.forged_reply(2, 1 << 40, 0x1122_3344_5566_7788);
        assert_eq!(forged[4..8], reply[4..8]);
        let forged_data: [u8; PROBE_LEN] = forged[ICMP_ECHO_HLEN..].try_into().unwrap();
        assert_eq!(
            Probe::decode(&forged_data),
            Ok(Probe {
                node_id: 2,
                sequence: 1 << 40
            })
        );
        assert!(!hb_common::probe::verify(&key, &forged_data, &target));
        assert_eq!(checksum(&forged), 0);
    }

    #[test]
    fn reads_metrics() {
        let text = "# HELP hb_probe_failures_total x\n\
                    hb_probe_failures_total{kind=\"tcp\",reason=\"refused\"} 4\n\
                    hb_probe_failures_total{reason=\"timeout\",kind=\"tcp\"} 2\n\
                    hb_probe_failures_total{kind=\"http\",reason=\"status\"} 7\n\
                    hb_probe_retries_total 3\n\
                    hb_probe_retries_total_x 9\n";
        let failures = "hb_probe_failures_total";
        assert_eq!(
            metric(text, failures, &[("kind", "tcp"), ("reason", "refused")]),
            Some(4.0)
        );
        assert_eq!(metric(text, failures, &[("kind", "tcp")]), Some(6.0));
        assert_eq!(
            metric(text, failures, &[("kind", "http"), ("reason", "body")]),
            None
        );
        assert_eq!(metric(text, "hb_probe_retries_total", &[]), Some(3.0));
        assert_eq!(metric(text, "hb_probes_sent_total", &[]), None);
    }

    #[test]
    fn probed_nodes_render() {
        let node = ProbedNode::new(3, Ipv6Addr::new(0xfd00, 0, 0, 3, 0, 0, 0, 2))
            .probe("http://{address}:8080/healthz")
            .set("probe_status", "\"200-299\"");
        assert_eq!(
            node.settings,
            vec![
                "probe = \"http://{address}:8080/healthz\"".to_owned(),
                "probe_status = \"200-299\"".to_owned()
            ]
        );
        assert_eq!(node_name(3), "node-3");
    }
}
