//! Sending ICMP and ICMPv6 echo requests: one raw socket per family, the
//! requests of a turn in batches of [`BATCH`] through `sendmmsg(2)`. The
//! replies never come back here: the XDP program records and drops them,
//! and the sockets take nothing in (a socket filter refuses every packet,
//! so no copy of other ICMP traffic queues up in them either).

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use hb_common::{
    probe::{
        ICMP_ECHO_HLEN, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REQUEST, PROBE_LEN, Probe, echo_message,
    },
    siphash::Key,
    table::src_octets,
};

use crate::sys::{self, set_int_option};

/// Echo requests per `sendmmsg(2)`.
pub const BATCH: usize = 64;
/// Socket send buffer asked for (the kernel may cap it at `wmem_max`).
const SEND_BUFFER: libc::c_int = 4 << 20;

const MESSAGE_LEN: usize = ICMP_ECHO_HLEN + PROBE_LEN;

/// One family's raw socket and the batch being filled for it.
struct Family {
    socket: OwnedFd,
    messages: Vec<[u8; MESSAGE_LEN]>,
    addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
}

/// What a flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    pub sent: u64,
    /// Requests the kernel refused (no route, no buffer space...).
    pub failed: u64,
}

/// The raw sockets and the batches of echo requests.
pub struct IcmpSender {
    identifier: u16,
    key: Key,
    v4: Option<Family>,
    v6: Option<Family>,
    /// The last send error, logged once per kind.
    last_error: Option<io::ErrorKind>,
}

impl IcmpSender {
    /// Opens a raw socket for each family asked for (`CAP_NET_RAW`).
    pub fn open(identifier: u16, key: Key, v4: bool, v6: bool) -> io::Result<Self> {
        let family = |domain, protocol| -> io::Result<Family> {
            Ok(Family {
                socket: raw_socket(domain, protocol)?,
                messages: Vec::with_capacity(BATCH),
                addrs: Vec::with_capacity(BATCH),
            })
        };
        Ok(IcmpSender {
            identifier,
            key,
            v4: v4
                .then(|| family(libc::AF_INET, libc::IPPROTO_ICMP))
                .transpose()?,
            v6: v6
                .then(|| family(libc::AF_INET6, libc::IPPROTO_ICMPV6))
                .transpose()?,
            last_error: None,
        })
    }

    /// Adds an echo request to node `node_id` at `address` with probe
    /// sequence `sequence`; sends the batch when it is full.
    pub fn push(&mut self, node_id: u32, address: IpAddr, sequence: u64) -> Flushed {
        let data = Probe { node_id, sequence }.encode(&self.key, &src_octets(address));
        // The ICMP sequence is informative (tools such as tcpdump show it);
        // the probe's own 64-bit sequence is what counts.
        let (kind, family) = match address {
            IpAddr::V4(_) => (ICMP_ECHO_REQUEST, self.v4.as_mut()),
            IpAddr::V6(_) => (ICMPV6_ECHO_REQUEST, self.v6.as_mut()),
        };
        let Some(family) = family else {
            return Flushed { sent: 0, failed: 1 };
        };
        family
            .messages
            .push(echo_message(kind, self.identifier, sequence as u16, &data));
        family
            .addrs
            .push(sys::sockaddr(&SocketAddr::new(address, 0)));
        if family.messages.len() == BATCH {
            return self.flush_family(address.is_ipv6());
        }
        Flushed::default()
    }

    /// Sends what is batched.
    pub fn flush(&mut self) -> Flushed {
        let a = self.flush_family(false);
        let b = self.flush_family(true);
        Flushed {
            sent: a.sent + b.sent,
            failed: a.failed + b.failed,
        }
    }

    fn flush_family(&mut self, v6: bool) -> Flushed {
        let family = if v6 {
            self.v6.as_mut()
        } else {
            self.v4.as_mut()
        };
        let Some(family) = family else {
            return Flushed::default();
        };
        let result = send_all(family);
        family.messages.clear();
        family.addrs.clear();
        if let Some(error) = result.1 {
            if self.last_error != Some(error.kind()) {
                tracing::warn!(
                    "probes: sending ICMP{} echo requests: {error} (counted in hb_probe_failures_total)",
                    if v6 { "v6" } else { "" }
                );
            }
            self.last_error = Some(error.kind());
        }
        result.0
    }
}

/// Sends every message of `family` with `sendmmsg(2)`, skipping (and
/// counting) any the kernel refuses; returns the first error seen.
fn send_all(family: &mut Family) -> (Flushed, Option<io::Error>) {
    let count = family.messages.len();
    let mut iovecs: Vec<libc::iovec> = family
        .messages
        .iter_mut()
        .map(|m| libc::iovec {
            iov_base: m.as_mut_ptr().cast(),
            iov_len: MESSAGE_LEN,
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .zip(family.addrs.iter_mut())
        .map(|(iov, (addr, len))| {
            // SAFETY: all-zero is a valid msghdr.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = *len;
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
            header
        })
        .collect();
    let mut flushed = Flushed::default();
    let mut first_error = None;
    let mut done = 0;
    while done < count {
        // SAFETY: `headers[done..]` are valid mmsghdrs whose names and iovecs
        // point into `family` and `iovecs`, all alive and unmoved for the
        // call.
        let sent = unsafe {
            libc::sendmmsg(
                family.socket.as_raw_fd(),
                headers[done..].as_mut_ptr(),
                (count - done) as libc::c_uint,
                0,
            )
        };
        if sent > 0 {
            done += sent as usize;
            flushed.sent += sent as u64;
            continue;
        }
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        // The message at `done` was refused: skip it.
        flushed.failed += 1;
        done += 1;
        first_error.get_or_insert(error);
    }
    (flushed, first_error)
}

/// A raw socket of `domain` for `protocol` that sends and takes nothing in.
fn raw_socket(domain: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(
            error.kind(),
            format!(
                "opening a raw {} socket to send echo requests (the agent needs CAP_NET_RAW): {error}",
                if domain == libc::AF_INET6 {
                    "ICMPv6"
                } else {
                    "ICMP"
                }
            ),
        ));
    }
    // SAFETY: a fresh descriptor this function owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    refuse_everything(&socket)?;
    if let Err(error) = set_int_option(&socket, libc::SOL_SOCKET, libc::SO_SNDBUF, SEND_BUFFER) {
        tracing::debug!(%error, "could not enlarge the probe socket's send buffer");
    }
    Ok(socket)
}

/// Attaches a classic BPF socket filter that accepts no packet (`ret #0`):
/// a raw ICMP socket would otherwise get a copy of every ICMP packet the
/// host receives.
fn refuse_everything(socket: &OwnedFd) -> io::Result<()> {
    let mut program = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let filter = libc::sock_fprog {
        len: 1,
        filter: program.as_mut_ptr(),
    };
    sys::set_socket_option(socket, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &filter)
}
