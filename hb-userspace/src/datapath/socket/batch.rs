//! The `recvmmsg(2)` machinery of a receive thread: one heap block of
//! message headers, address, control and payload buffers, allocated once and
//! reused for every batch, and the [`Datagram`] view of what the kernel
//! wrote. All the raw pointer work of the socket datapath is here.

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
    ptr::{self, NonNull},
};

/// Datagrams taken per `recvmmsg` call.
pub const BATCH: usize = 64;
/// Bytes of each datagram buffer: more than a heartbeat, so a longer
/// datagram shows as such (its length, or `MSG_TRUNC`).
const DATAGRAM_BUFFER: usize = 64;
/// Bytes of each control buffer: `SCM_TIMESTAMPNS` needs 32 on 64-bit.
const CONTROL_BUFFER: usize = 64;

/// One received datagram, as far as recording it is concerned.
pub(super) struct Datagram<'a> {
    /// The payload (at most [`DATAGRAM_BUFFER`] bytes of it).
    pub payload: &'a [u8],
    /// The payload was longer than the buffer.
    pub truncated: bool,
    /// Source address (IPv6, or v4-mapped), network byte order.
    pub src_addr: [u8; 16],
    /// Source port, host byte order.
    pub src_port: u16,
    /// The kernel's receive timestamp, `CLOCK_REALTIME` ns.
    pub realtime_ns: Option<u64>,
}

/// The `recvmmsg` vectors and every buffer they point to, in one heap block
/// allocated once per receive thread. Only reached through `slots`: the
/// kernel writes into it behind any reference's back.
pub(super) struct Batch {
    slots: NonNull<Slots>,
    /// Headers the last call filled, whose in-out lengths need resetting.
    dirty: usize,
}

#[repr(C)]
struct Slots {
    headers: [libc::mmsghdr; BATCH],
    iovecs: [libc::iovec; BATCH],
    names: [libc::sockaddr_in6; BATCH],
    controls: [Control; BATCH],
    payloads: [[u8; DATAGRAM_BUFFER]; BATCH],
}

/// A control message buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; CONTROL_BUFFER]);

impl Batch {
    pub(super) fn new() -> Self {
        // SAFETY: every field of `Slots` is plain data (integers, arrays and
        // raw pointers) for which all-zero is a valid value.
        let slots = unsafe { Box::<Slots>::new_zeroed().assume_init() };
        let slots = NonNull::from(Box::leak(slots));
        let base = slots.as_ptr();
        for i in 0..BATCH {
            // SAFETY: `base` points to a live, exclusively owned `Slots`;
            // the pointers stored stay valid until `Drop` frees it.
            unsafe {
                let iovec = &raw mut (*base).iovecs[i];
                (*iovec).iov_base = (&raw mut (*base).payloads[i]).cast();
                (*iovec).iov_len = DATAGRAM_BUFFER;
                let header = &raw mut (*base).headers[i].msg_hdr;
                (*header).msg_iov = iovec;
                (*header).msg_iovlen = 1;
                (*header).msg_name = (&raw mut (*base).names[i]).cast();
                (*header).msg_control = (&raw mut (*base).controls[i]).cast();
            }
        }
        let mut batch = Batch {
            slots,
            dirty: BATCH,
        };
        batch.reset();
        batch
    }

    /// Restores the in-out lengths the kernel overwrote in the last call.
    fn reset(&mut self) {
        let base = self.slots.as_ptr();
        for i in 0..self.dirty {
            // SAFETY: in bounds of the live `Slots`; no reference to it is
            // held.
            unsafe {
                let header = &raw mut (*base).headers[i];
                (*header).msg_len = 0;
                (*header).msg_hdr.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
                (*header).msg_hdr.msg_controllen = CONTROL_BUFFER;
                (*header).msg_hdr.msg_flags = 0;
            }
        }
        self.dirty = 0;
    }

    /// Waits (at most the socket's receive timeout) for a datagram, then
    /// takes it and whatever else is queued, up to [`BATCH`]. Returns how
    /// many were taken.
    pub(super) fn receive(&mut self, socket: &OwnedFd) -> io::Result<usize> {
        self.reset();
        // SAFETY: the headers and every buffer they point to are live and
        // sized as the headers say; the kernel writes nothing else.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                (&raw mut (*self.slots.as_ptr()).headers).cast(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                ptr::null_mut(),
            )
        };
        let received = usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
        self.dirty = received;
        Ok(received)
    }

    /// Datagram `index` of the last [`Batch::receive`].
    pub(super) fn datagram(&self, index: usize) -> Datagram<'_> {
        assert!(index < self.dirty, "datagram {index} was not received");
        let base = self.slots.as_ptr();
        // SAFETY: in bounds of the live `Slots`, which the kernel does not
        // write until the next `receive` (which needs `&mut self`, so the
        // returned payload borrow has ended by then).
        unsafe {
            let header = &(*base).headers[index];
            let len = (header.msg_len as usize).min(DATAGRAM_BUFFER);
            let name = &(*base).names[index];
            let (src_addr, src_port) = if header.msg_hdr.msg_namelen as usize
                >= size_of::<libc::sockaddr_in6>()
                && libc::c_int::from(name.sin6_family) == libc::AF_INET6
            {
                (name.sin6_addr.s6_addr, u16::from_be(name.sin6_port))
            } else {
                ([0; 16], 0)
            };
            Datagram {
                payload: &(&(*base).payloads[index])[..len],
                truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                src_addr,
                src_port,
                realtime_ns: receive_timestamp(&header.msg_hdr),
            }
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: `slots` came from `Box::leak` in `new` and is freed once.
        drop(unsafe { Box::from_raw(self.slots.as_ptr()) });
    }
}

/// The `SCM_TIMESTAMPNS` control message of a received datagram, in ns.
///
/// # Safety
/// `header` must describe a message `recvmmsg` just filled, its control
/// buffer still live.
unsafe fn receive_timestamp(header: &libc::msghdr) -> Option<u64> {
    // SAFETY: the caller guarantees the control buffer and its length;
    // CMSG_FIRSTHDR/CMSG_NXTHDR stay within it.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(header) };
    while !cmsg.is_null() {
        // SAFETY: a non-null result of CMSG_FIRSTHDR/CMSG_NXTHDR points to a
        // header inside the control buffer.
        let (level, kind, len) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        // SAFETY: CMSG_LEN is pure arithmetic.
        let wanted = unsafe { libc::CMSG_LEN(size_of::<libc::timespec>() as libc::c_uint) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS && len >= wanted as usize {
            // SAFETY: the message holds a timespec (length checked above);
            // control data need not be aligned for it.
            let ts = unsafe { ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>()) };
            let secs = u64::try_from(ts.tv_sec).ok()?;
            let nanos = u64::try_from(ts.tv_nsec).ok()?;
            return secs.checked_mul(1_000_000_000)?.checked_add(nanos);
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        cmsg = unsafe { libc::CMSG_NXTHDR(header, cmsg) };
    }
    None
}
