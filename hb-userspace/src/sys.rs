//! The one place for raw system calls that std does not wrap: socket
//! options, socket addresses, the memlock limit, shared memory mappings.
//! Each wrapper checks the call's result and returns an `io::Result`; the
//! callers add what they were doing.

use std::{
    ffi::c_void,
    io, mem,
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd, RawFd},
    ptr::{self, NonNull},
};

/// `setsockopt(2)` with any value type (an int, a struct, a byte string).
pub fn set_socket_option<T: ?Sized>(
    socket: impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is valid for reads of its whole size for the call.
    let result = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            ptr::from_ref(value).cast::<c_void>(),
            size_of_val(value) as libc::socklen_t,
        )
    };
    check(result)
}

/// `setsockopt(2)` of an int option.
pub fn set_int_option(
    socket: impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    set_socket_option(socket, level, name, &value)
}

/// `getsockopt(2)` of an int option.
pub fn int_option(socket: impl AsFd, level: libc::c_int, name: libc::c_int) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let result = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    check(result).map(|()| value)
}

/// `addr` as the C socket address the kernel takes, and its length.
pub fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(addr) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: addr.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(addr.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger and at least as aligned.
            unsafe { ptr::write((&raw mut storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(addr) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: addr.port().to_be(),
                sin6_flowinfo: addr.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: addr.ip().octets(),
                },
                sin6_scope_id: addr.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger and at least as aligned.
            unsafe { ptr::write((&raw mut storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Lifts RLIMIT_MEMLOCK, which older kernels charge BPF maps to (newer ones
/// ignore it). Called next to every load of a BPF object.
pub fn raise_memlock_limit() -> io::Result<()> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid struct.
    check(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) })
}

/// The size of a memory page.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Maps `bytes` (a whole number of pages) readable and writable and shared:
/// of the file or BPF map `fd`, or anonymous, zeroed memory if `fd` is None.
///
/// # Safety
/// If `fd` is given, it must be mappable with that length from offset 0.
pub unsafe fn map_shared(bytes: usize, fd: Option<RawFd>) -> io::Result<NonNull<c_void>> {
    let (flags, fd) = match fd {
        Some(fd) => (libc::MAP_SHARED, fd),
        None => (libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1),
    };
    // SAFETY: a fresh mapping at an address the kernel picks; the caller
    // vouches for the descriptor; the result is checked before use.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(addr).ok_or_else(|| io::Error::other("mmap gave null"))
}

/// Unmaps what [`map_shared`] mapped.
///
/// # Safety
/// `addr` and `bytes` must be one mapping of [`map_shared`], and nothing may
/// use it afterwards.
pub unsafe fn unmap(addr: NonNull<c_void>, bytes: usize) {
    // SAFETY: the caller's guarantee.
    unsafe { libc::munmap(addr.as_ptr(), bytes) };
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
