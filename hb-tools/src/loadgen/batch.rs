//! The batch and its `sendmmsg(2)`: heartbeats patched into reusable
//! buffers (only node id, sequence, flags, timestamp and tag change) and
//! handed to the kernel in one call per batch, cut into datagrams by UDP GSO.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    ops::Range,
    os::fd::AsRawFd,
    ptr,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Context;
use hb::{
    clock::{monotonic_ns, unix_ns},
    keys::KeyFile,
    sys::{set_int_option, sockaddr},
};
use hb_common::{
    auth,
    siphash::Key,
    wire::{HEARTBEAT_LEN, Heartbeat, offset},
};

/// Heartbeats per GSO message (the kernel's `UDP_MAX_SEGMENTS` is at
/// least 64).
const GSO_SEGMENTS: usize = 64;
/// Pause before retrying a batch the kernel had no room for.
const RETRY_PAUSE: Duration = Duration::from_micros(100);
/// A blocking send waits at most this long for socket buffer space.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);
/// Socket send buffer asked for (the kernel may cap it at `wmem_max`).
const SEND_BUFFER: libc::c_int = 4 << 20;

/// A UDP socket and one batch of heartbeats with its `sendmmsg(2)` arrays.
///
/// The heartbeats of a batch lie back to back in `bufs`. With UDP GSO
/// (`UDP_SEGMENT` set to the heartbeat size on the socket), one message
/// carries a chunk of up to [`GSO_SEGMENTS`] heartbeats and the kernel cuts
/// it into one datagram per heartbeat, which costs far less than a message
/// per datagram; without, a chunk is one heartbeat. Message
/// `chunk * targets + target` sends chunk `chunk` (iovec `chunk`) to address
/// `target`.
///
/// The arrays are built once (again only if GSO has to be turned off) and
/// point into each other. The vectors never reallocate, and everything the
/// pointers reach is written only through `Vec::as_mut_ptr`, which keeps
/// those pointers valid.
pub(super) struct BatchSender {
    pub(super) socket: UdpSocket,
    targets: usize,
    /// Heartbeats per message: [`GSO_SEGMENTS`] with GSO, else 1.
    per_msg: usize,
    bufs: Vec<[u8; HEARTBEAT_LEN]>,
    iovecs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    msgs: Vec<libc::mmsghdr>,
    /// Heartbeats in the current batch.
    len: usize,
    /// Key id and key every heartbeat is signed with, if any.
    key: Option<(u8, Key)>,
    pub(super) sent: u64,
    pub(super) send_errors: u64,
    pub(super) unsent: u64,
}

impl BatchSender {
    pub(super) fn open(
        targets: &[SocketAddr],
        capacity: usize,
        template: &Heartbeat,
        gso: bool,
    ) -> anyhow::Result<Self> {
        let local: SocketAddr = if targets[0].is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket =
            UdpSocket::bind(local).with_context(|| format!("binding a UDP socket to {local}"))?;
        if let [target] = targets {
            socket
                .connect(target)
                .with_context(|| format!("connecting the UDP socket to {target}"))?;
        }
        socket
            .set_write_timeout(Some(SEND_TIMEOUT))
            .context("setting the socket's send timeout")?;
        if let Err(error) = set_int_option(&socket, libc::SOL_SOCKET, libc::SO_SNDBUF, SEND_BUFFER)
        {
            tracing::debug!(%error, "could not enlarge the send buffer");
        }
        let per_msg = if !gso {
            1
        } else if let Err(error) = set_int_option(
            &socket,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            HEARTBEAT_LEN as libc::c_int,
        ) {
            tracing::info!(%error, "no UDP GSO, sending one datagram per message");
            1
        } else {
            GSO_SEGMENTS
        };

        let (addrs, addr_lens) = targets.iter().map(sockaddr).unzip();
        let mut sender = BatchSender {
            socket,
            targets: targets.len(),
            per_msg,
            bufs: vec![template.encode(); capacity],
            iovecs: Vec::with_capacity(capacity),
            addrs,
            addr_lens,
            msgs: Vec::with_capacity(capacity * targets.len()),
            len: 0,
            key: None,
            sent: 0,
            send_errors: 0,
            unsent: 0,
        };
        sender.build();
        Ok(sender)
    }

    /// (Re)builds the iovecs and messages for `per_msg`, within the
    /// vectors' capacity (so they never move).
    fn build(&mut self) {
        let chunks = self.bufs.len().div_ceil(self.per_msg);
        self.iovecs.clear();
        self.msgs.clear();
        for chunk in 0..chunks {
            self.iovecs.push(libc::iovec {
                // SAFETY: `chunk * per_msg < bufs.len()`.
                iov_base: unsafe { self.bufs.as_mut_ptr().add(chunk * self.per_msg) }.cast(),
                iov_len: HEARTBEAT_LEN,
            });
        }
        let connected = self.targets == 1;
        for chunk in 0..chunks {
            for (target, &addr_len) in self.addr_lens.iter().enumerate() {
                // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
                let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
                // SAFETY: `chunk < iovecs.len()`.
                msg.msg_hdr.msg_iov = unsafe { self.iovecs.as_mut_ptr().add(chunk) };
                msg.msg_hdr.msg_iovlen = 1;
                if !connected {
                    // SAFETY: `target < addrs.len()`.
                    msg.msg_hdr.msg_name = unsafe { self.addrs.as_mut_ptr().add(target) }.cast();
                    msg.msg_hdr.msg_namelen = addr_len;
                }
                self.msgs.push(msg);
            }
        }
    }

    /// Signs every heartbeat sent from now on with `key` (`None`: leaves
    /// them unauthenticated).
    pub(super) fn signing_with(mut self, key: Option<&KeyFile>) -> Self {
        self.key = key.map(|key| (key.id, key.key));
        self
    }

    /// Whether messages carry several heartbeats (UDP GSO).
    pub(super) fn gso(&self) -> bool {
        self.per_msg > 1
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Adds a heartbeat to the batch (which must not be full); returns its
    /// index in the batch.
    pub(super) fn push(&mut self, node_id: u32, sequence: u64, flags: u8) -> usize {
        let index = self.len;
        assert!(index < self.bufs.len(), "batch overflow");
        self.patch(index, offset::NODE_ID, &node_id.to_be_bytes());
        self.patch(index, offset::SEQUENCE, &sequence.to_be_bytes());
        self.patch(index, offset::FLAGS, &[flags]);
        self.len += 1;
        index
    }

    /// Overwrites bytes of one buffer in place.
    fn patch(&mut self, index: usize, at: usize, bytes: &[u8]) {
        assert!(index < self.bufs.len() && at + bytes.len() <= HEARTBEAT_LEN);
        // SAFETY: in bounds (asserted); nothing else reads the buffers while
        // we write (the kernel only during sendmmsg); writing through the
        // Vec's raw pointer creates no reference that would invalidate the
        // iovecs' pointers.
        unsafe {
            ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.bufs.as_mut_ptr().add(index).cast::<u8>().add(at),
                bytes.len(),
            );
        }
    }

    /// Signs one complete heartbeat of the batch: on a copy on the stack,
    /// written back through [`BatchSender::patch`].
    fn sign(&mut self, index: usize, key_id: u8, key: &Key) {
        assert!(index < self.bufs.len());
        // SAFETY: in bounds (asserted); a read through the Vec's raw
        // pointer, as `patch` writes.
        let mut payload = unsafe { ptr::read(self.bufs.as_ptr().add(index)) };
        auth::sign(&mut payload, key_id, key);
        self.patch(index, 0, &payload);
    }

    /// Heartbeats `len` fill in `chunk`.
    fn segments(&self, chunk: usize, len: usize) -> usize {
        self.per_msg.min(len - chunk * self.per_msg)
    }

    /// Sets the iovec lengths for a batch of `len` heartbeats.
    fn size_chunks(&mut self, len: usize) {
        if !self.gso() {
            return;
        }
        for chunk in 0..len.div_ceil(self.per_msg) {
            let bytes = self.segments(chunk, len) * HEARTBEAT_LEN;
            // SAFETY: `chunk < iovecs.len()`; a write through the Vec's raw
            // pointer, as for the buffers.
            unsafe { (*self.iovecs.as_mut_ptr().add(chunk)).iov_len = bytes };
        }
    }

    /// Stamps and sends the batch, then empties it. When the kernel has no
    /// room (ENOBUFS, EAGAIN), retries the rest after a short pause until
    /// `give_up_at` (monotonic ns) or `stop`; other errors skip the message
    /// that failed. `accepted(heartbeats, at)` is called for every run of
    /// heartbeats (indices in the batch) a `sendmmsg` call accepted at least
    /// one datagram of, with the time that call started.
    pub(super) fn flush(
        &mut self,
        give_up_at: u64,
        stop: Option<&AtomicBool>,
        mut accepted: impl FnMut(Range<usize>, u64),
    ) {
        let len = std::mem::take(&mut self.len);
        self.stamp_and_sign(len);
        self.size_chunks(len);
        let mut done = 0;
        loop {
            let total = len.div_ceil(self.per_msg) * self.targets;
            if done >= total {
                return;
            }
            let at = monotonic_ns();
            let rc = self.send_from(done, total);
            if rc > 0 {
                let end = done + rc as usize;
                for msg in done..end {
                    self.sent += self.segments(msg / self.targets, len) as u64;
                }
                let first = done / self.targets * self.per_msg;
                let last = ((end - 1) / self.targets + 1) * self.per_msg;
                accepted(first..last.min(len), at);
                done = end;
                continue;
            }
            if rc == 0 {
                // Not expected with a non-empty vector; do not loop on it.
                self.give_up(done..total, len);
                return;
            }
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            let late = at >= give_up_at;
            let stopped = stop.is_some_and(|s| s.load(Ordering::Relaxed));
            match self.recover(&error, late, stopped, done..total, len) {
                Some(next) => done = next,
                None => return,
            }
        }
    }

    /// Stamps the first `len` heartbeats with the time, then signs them if
    /// there is a key.
    fn stamp_and_sign(&mut self, len: usize) {
        let stamp = unix_ns().to_be_bytes();
        for index in 0..len {
            self.patch(index, offset::SENT_UNIX_NS, &stamp);
        }
        if let Some((key_id, key)) = self.key {
            for index in 0..len {
                self.sign(index, key_id, &key);
            }
        }
    }

    /// One `sendmmsg(2)` of messages `done..total`: how many it sent, or -1.
    fn send_from(&mut self, done: usize, total: usize) -> libc::c_int {
        assert!(done < total && total <= self.msgs.len());
        // SAFETY: `done < total <= msgs.len()` (asserted), so the pointer and
        // count cover initialised mmsghdrs whose iovecs, buffers and
        // addresses (owned by `self`) outlive the call.
        unsafe {
            libc::sendmmsg(
                self.socket.as_raw_fd(),
                self.msgs.as_mut_ptr().add(done),
                (total - done) as libc::c_uint,
                0,
            )
        }
    }

    /// After `sendmmsg` failed on the first of `pending` (messages of a batch
    /// of `len`): counts the error, and returns the message to go on from,
    /// or `None` when the rest is given up. `late`: past the time to give
    /// up; `stopped`: asked to stop.
    fn recover(
        &mut self,
        error: &io::Error,
        late: bool,
        stopped: bool,
        pending: Range<usize>,
        len: usize,
    ) -> Option<usize> {
        let done = pending.start;
        self.send_errors += 1;
        if self.send_errors <= 5 || self.send_errors.is_multiple_of(1000) {
            tracing::warn!(%error, failures = self.send_errors, "sendmmsg failed");
        }
        match error.raw_os_error() {
            Some(libc::ENOBUFS | libc::EAGAIN) => {
                if late || stopped {
                    self.give_up(pending, len);
                    return None;
                }
                std::thread::sleep(RETRY_PAUSE);
                Some(done)
            }
            // An earlier datagram's ICMP error, reported (and cleared) on
            // this call: the message was not sent; try it again.
            Some(libc::ECONNREFUSED) if !late => Some(done),
            // The route cannot do GSO (IPsec, say): send the failed chunk
            // and the rest one datagram per message from now on (with
            // several targets, ones that had the chunk get it twice).
            Some(libc::EIO | libc::EINVAL) if self.gso() => {
                tracing::warn!(%error, "UDP GSO failed, sending one datagram per message");
                if let Err(error) =
                    set_int_option(&self.socket, libc::SOL_UDP, libc::UDP_SEGMENT, 0)
                {
                    tracing::warn!(%error, "could not turn UDP GSO off");
                }
                let restart = done / self.targets * self.per_msg * self.targets;
                self.per_msg = 1;
                self.build();
                Some(restart)
            }
            _ => {
                self.give_up(done..done + 1, len);
                Some(done + 1)
            }
        }
    }

    /// Counts the datagrams of `msgs` (of a batch of `len`) as unsent.
    fn give_up(&mut self, msgs: Range<usize>, len: usize) {
        for msg in msgs {
            self.unsent += self.segments(msg / self.targets, len) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::loadgen::test_support::Monitor;

    /// With SO_NO_CHECK the kernel refuses GSO (EINVAL): the sender falls
    /// back to a datagram per message and still delivers the whole batch.
    #[test]
    fn falls_back_when_gso_fails() {
        let monitor = Monitor::bind();
        let template = Heartbeat {
            flags: 0,
            key_id: 0,
            node_id: 0,
            interval_ms: 1000,
            incarnation: 1,
            sequence: 0,
            sent_unix_ns: 0,
            auth_tag: [0; 16],
        };
        let mut sender = BatchSender::open(&[monitor.addr()], 100, &template, true).unwrap();
        assert!(sender.gso());
        set_int_option(&sender.socket, libc::SOL_SOCKET, libc::SO_NO_CHECK, 1).unwrap();
        for node in 0..100 {
            sender.push(node, 1, 0);
        }
        let mut accepted = Vec::new();
        sender.flush(u64::MAX, None, |heartbeats, _| accepted.push(heartbeats));
        assert!(!sender.gso());
        assert_eq!(
            (sender.sent, sender.unsent, sender.send_errors),
            (100, 0, 1)
        );
        let covered: HashSet<usize> = accepted.into_iter().flatten().collect();
        assert_eq!(covered, (0..100).collect());
        let received = monitor.drain();
        let ids: HashSet<u32> = received.iter().map(|hb| hb.node_id).collect();
        assert_eq!((received.len(), ids.len()), (100, 100));
    }
}
