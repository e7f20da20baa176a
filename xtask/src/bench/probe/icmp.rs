//! A check of the lab before the agent starts: echo requests from the
//! monitor's namespace (a raw socket in a thread that enters it) to a few
//! addresses of the block, each answered by the responder's kernel. And
//! the floor under the agent's sending ([`floor`]): a bare loop of the
//! bench sending echo requests as the agent does, at the same rate.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hb_tests::netns;

/// How long to wait for the replies, in all.
const WAIT: Duration = Duration::from_secs(2);
/// The echo identifier of the check (hb's agent picks a random one of its
/// own; the check runs before it starts).
const IDENTIFIER: u16 = 0x4842;
/// The echo identifier of the floor's requests, which the responder drops
/// (see the lab's ruleset): no reply comes back.
pub const FLOOR_IDENTIFIER: u16 = 0x4846;
/// As the agent's prober: a turn every millisecond, the turn's requests in
/// `sendmmsg` batches of 64, 40-byte messages (an 8-byte echo header and
/// hb's 32-byte probe).
const FLOOR_TICK: Duration = Duration::from_millis(1);
const FLOOR_BATCH: usize = 64;
const FLOOR_MESSAGE: usize = 40;

/// Rounds of requests to the addresses that have not answered yet.
const ROUNDS: usize = 3;

/// Sends one echo request to each of `addresses` from the namespace
/// `netns` and returns those that did not answer within [`WAIT`].
pub fn unanswered(netns: PathBuf, addresses: Vec<Ipv4Addr>) -> Result<Vec<Ipv4Addr>> {
    std::thread::spawn(move || ping_all(&netns, &addresses))
        .join()
        .map_err(|_| anyhow::anyhow!("the ICMP check's thread panicked"))?
}

fn ping_all(netns: &std::path::Path, addresses: &[Ipv4Addr]) -> Result<Vec<Ipv4Addr>> {
    netns::enter(netns)?;
    let socket = RawSocket::open()?;
    let mut waiting: BTreeSet<Ipv4Addr> = addresses.iter().copied().collect();
    for (sequence, &address) in addresses.iter().enumerate() {
        socket.send_echo(address, sequence as u16)?;
    }
    let deadline = Instant::now() + WAIT;
    while !waiting.is_empty() && Instant::now() < deadline {
        if let Some(from) = socket.receive_reply()? {
            waiting.remove(&from);
        }
    }
    Ok(waiting.into_iter().collect())
}

/// A raw ICMP socket (closed on Drop).
struct RawSocket(libc::c_int);

impl RawSocket {
    fn open() -> Result<Self> {
        // SAFETY: socket has no memory-safety preconditions.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("opening a raw ICMP socket");
        }
        let socket = Self(fd);
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: SO_RCVTIMEO reads one timeval, which lives on our stack.
        let status = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if status != 0 {
            return Err(std::io::Error::last_os_error()).context("setting SO_RCVTIMEO");
        }
        Ok(socket)
    }

    fn send_echo(&self, to: Ipv4Addr, sequence: u16) -> Result<()> {
        let packet = echo_request(IDENTIFIER, sequence);
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(to).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: the buffer and the address live on our stack for the
        // call, their lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.0,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const address).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("sending an echo request to {to}"));
        }
        Ok(())
    }

    /// Sends `messages[i]` to `addresses[i]` with `sendmmsg(2)`; a message
    /// the kernel refuses (a full backlog: ENOBUFS) is skipped and counted,
    /// as the agent does. Returns (sent, refused).
    fn send_batch(
        &self,
        messages: &mut [[u8; FLOOR_MESSAGE]],
        addresses: &[libc::sockaddr_in],
    ) -> Result<(u64, u64)> {
        let mut iovecs: Vec<libc::iovec> = messages
            .iter_mut()
            .map(|m| libc::iovec {
                iov_base: m.as_mut_ptr().cast(),
                iov_len: m.len(),
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .zip(addresses)
            .map(|(iov, address)| {
                // SAFETY: msghdr is plain old data; all zeroes is valid.
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_name = std::ptr::from_ref(address).cast_mut().cast();
                header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                header.msg_hdr.msg_iov = std::ptr::from_mut(iov);
                header.msg_hdr.msg_iovlen = 1;
                header
            })
            .collect();
        let (mut done, mut refused) = (0usize, 0u64);
        while done < headers.len() {
            // SAFETY: every header from `done` points at a live iovec,
            // buffer and address for the duration of the call; the count
            // is what is left of the vector.
            let sent = unsafe {
                libc::sendmmsg(
                    self.0,
                    headers[done..].as_mut_ptr(),
                    (headers.len() - done) as libc::c_uint,
                    0,
                )
            };
            if sent > 0 {
                done += sent as usize;
                continue;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::ENOBUFS | libc::EAGAIN) => {
                    refused += 1;
                    done += 1;
                }
                _ => return Err(err).context("sendmmsg on the raw ICMP socket"),
            }
        }
        Ok((done as u64 - refused, refused))
    }

    /// The source of the next echo reply with our identifier, or `None`
    /// after the receive timeout or for another packet.
    fn receive_reply(&self) -> Result<Option<Ipv4Addr>> {
        let mut buffer = [0u8; 1500];
        // SAFETY: the buffer lives on our stack; its length is its own.
        let n = unsafe { libc::recv(self.0, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            return match err.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
                _ => Err(err).context("receiving on the raw ICMP socket"),
            };
        }
        Ok(parse_reply(&buffer[..n as usize]))
    }
}

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed only here.
        unsafe { libc::close(self.0) };
    }
}

/// What the floor sender did.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Floor {
    pub rate: u32,
    pub sent: u64,
    /// Requests the kernel refused (ENOBUFS: the responder's backlog full).
    pub refused: u64,
    pub wall_s: f64,
    /// Its thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), ns.
    pub cpu_ns: u64,
    pub cpu_percent: f64,
    pub ns_per_probe: f64,
}

/// Sends echo requests from the namespace `netns` to the `count`
/// addresses from `first` in turn, `rate` a second for `duration`, as the
/// agent's prober sends them (see [`FLOOR_TICK`]), with
/// [`FLOOR_IDENTIFIER`]; measures its own CPU time.
pub fn floor(
    netns: PathBuf,
    first: Ipv4Addr,
    count: u32,
    rate: u32,
    duration: Duration,
) -> Result<Floor> {
    std::thread::spawn(move || -> Result<Floor> {
        netns::enter(&netns)?;
        // As the agent (see the lab): only this thread, by its id.
        // SAFETY: gettid has no preconditions.
        super::lab::pin_to_cpu0_thread(unsafe { libc::gettid() })?;
        let socket = RawSocket::open()?;
        let per_turn = (f64::from(rate) * FLOOR_TICK.as_secs_f64()).round() as usize;
        let turns = (duration.as_nanos() / FLOOR_TICK.as_nanos()) as u64;
        // An echo request with our identifier and a fixed payload; the
        // sequence and checksum are written per message.
        let mut template = [0x5au8; FLOOR_MESSAGE];
        template[..8].copy_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
        template[4..6].copy_from_slice(&FLOOR_IDENTIFIER.to_be_bytes());
        let mut messages = vec![template; FLOOR_BATCH];
        let mut addresses = vec![
            libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: 0 },
                sin_zero: [0; 8],
            };
            FLOOR_BATCH
        ];
        let (mut next, mut sent, mut refused) = (0u32, 0u64, 0u64);
        let cpu_start = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        let start = Instant::now();
        let mut deadline = clock_ns(libc::CLOCK_MONOTONIC);
        for _ in 0..turns {
            let mut left = per_turn;
            while left > 0 {
                let n = left.min(FLOOR_BATCH);
                for i in 0..n {
                    let k = next % count;
                    next = next.wrapping_add(1);
                    let message = &mut messages[i];
                    message[2..4].copy_from_slice(&[0, 0]);
                    message[6..8].copy_from_slice(&(k as u16).to_be_bytes());
                    let sum = checksum(message);
                    message[2..4].copy_from_slice(&sum.to_be_bytes());
                    addresses[i].sin_addr.s_addr = (u32::from(first) + k).to_be();
                }
                let (ok, no) = socket.send_batch(&mut messages[..n], &addresses[..n])?;
                sent += ok;
                refused += no;
                left -= n;
            }
            deadline += FLOOR_TICK.as_nanos() as u64;
            sleep_until(deadline);
            interrupt_check()?;
        }
        let cpu_ns = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID) - cpu_start;
        let wall_s = start.elapsed().as_secs_f64();
        Ok(Floor {
            rate,
            sent,
            refused,
            wall_s,
            cpu_ns,
            cpu_percent: 100.0 * cpu_ns as f64 / 1e9 / wall_s,
            ns_per_probe: cpu_ns as f64 / sent.max(1) as f64,
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the floor sender's thread panicked"))?
}

fn interrupt_check() -> Result<()> {
    Ok(hb_tests::interrupt::check()?)
}

/// A clock's time, ns.
fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec on our stack.
    unsafe { libc::clock_gettime(id, &raw mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Sleeps to an absolute `CLOCK_MONOTONIC` deadline, ns.
fn sleep_until(deadline: u64) {
    let at = libc::timespec {
        tv_sec: (deadline / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `at` is a valid timespec; no remainder is asked for.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &raw const at,
            std::ptr::null_mut(),
        )
    };
}

/// An ICMP echo request with a 24-byte payload.
fn echo_request(identifier: u16, sequence: u16) -> Vec<u8> {
    let mut packet = vec![8u8, 0, 0, 0];
    packet.extend_from_slice(&identifier.to_be_bytes());
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(b"hb probe bench lab check");
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// The source address of an IPv4 packet holding an echo reply with our
/// identifier.
fn parse_reply(packet: &[u8]) -> Option<Ipv4Addr> {
    let header = usize::from(packet.first()? & 0x0f) * 4;
    let icmp = packet.get(header..)?;
    if icmp.len() < 8 || icmp[0] != 0 || u16::from_be_bytes([icmp[4], icmp[5]]) != IDENTIFIER {
        return None;
    }
    Some(Ipv4Addr::new(
        packet[12], packet[13], packet[14], packet[15],
    ))
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Fails unless every one of `addresses` answers from the monitor's
/// namespace, asking those that did not up to [`ROUNDS`] times (the lab
/// may drop a share of the requests on purpose).
pub fn ensure_answered(netns: PathBuf, addresses: Vec<Ipv4Addr>) -> Result<()> {
    let asked = addresses.len();
    let mut missing = addresses;
    for _ in 0..ROUNDS {
        missing = unanswered(netns.clone(), missing)?;
        if missing.is_empty() {
            break;
        }
    }
    if !missing.is_empty() {
        bail!(
            "the responder did not answer {} of {asked} echo requests from the monitor's \
             namespace: {missing:?}",
            missing.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_recognises_echo() {
        let request = echo_request(IDENTIFIER, 7);
        assert_eq!(checksum(&request), 0);
        let mut reply = vec![0x45u8, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        reply.extend_from_slice(&[198, 19, 0, 1, 198, 18, 1, 1]);
        let mut icmp = request.clone();
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        assert_eq!(parse_reply(&reply), Some(Ipv4Addr::new(198, 19, 0, 1)));
        reply[20] = 8;
        assert_eq!(parse_reply(&reply), None);
    }
}
