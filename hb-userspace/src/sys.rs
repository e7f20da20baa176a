//! The one place for raw system calls that std does not wrap: socket
//! options, socket addresses, the memlock limit, shared memory mappings,
//! and what the sweep thread needs (an absolute-time sleep others can cut
//! short, real-time scheduling, locked memory).
//! Each wrapper checks the call's result and returns an `io::Result`; the
//! callers add what they were doing.

use std::{
    cell::UnsafeCell,
    ffi::c_void,
    io, mem,
    net::SocketAddr,
    ops::{Deref, DerefMut},
    os::fd::{AsFd, AsRawFd, RawFd},
    ptr::{self, NonNull},
    sync::atomic::AtomicU32,
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

/// How a [`sleep_until`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woken {
    /// The deadline passed.
    Deadline,
    /// Someone called [`wake`] (or had, before the sleep began), or a
    /// signal interrupted the sleep: look at what changed, then sleep again.
    Early,
}

/// Sleeps until `CLOCK_MONOTONIC` reads `deadline_ns` (an absolute time, so
/// a late wake-up never drifts the next one), unless `word` no longer holds
/// `seen` or [`wake`] is called on it meanwhile: `futex(FUTEX_WAIT_BITSET)`,
/// whose absolute timeout is measured on `CLOCK_MONOTONIC` like
/// `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)` (the same hrtimer and
/// timer slack), but which another thread can end early without a signal:
/// the check of `word` and the sleep are one step, so no wake-up is lost.
/// A deadline already past returns at once.
pub fn sleep_until(word: &AtomicU32, seen: u32, deadline_ns: u64) -> io::Result<Woken> {
    let deadline = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned 32-bit word for the whole call;
    // `deadline` is a valid timespec read by the kernel during the call;
    // the second address is unused by FUTEX_WAIT_BITSET.
    let result = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
            seen,
            &raw const deadline,
            ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    if result == 0 {
        return Ok(Woken::Early);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::ETIMEDOUT) => Ok(Woken::Deadline),
        Some(libc::EAGAIN | libc::EINTR) => Ok(Woken::Early),
        _ => Err(error),
    }
}

/// Sets the calling thread's timer slack: how late the kernel may end its
/// timed sleeps to group wake-ups (50 µs by default for a normal thread;
/// real-time threads have none). `prctl(PR_SET_TIMERSLACK)`.
pub fn set_timer_slack_ns(ns: u64) -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes one integer and touches no memory.
    let result = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Wakes every thread in [`sleep_until`] on `word`; the caller changes
/// `word` first, so that a thread about to sleep does not.
pub fn wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned 32-bit word; FUTEX_WAKE only reads
    // its address. It cannot fail on a valid private futex address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            libc::c_int::MAX,
        )
    };
}

/// Puts `thread` in the `SCHED_FIFO` class at `priority` (1..=99):
/// `pthread_setschedparam(3)`, which needs `CAP_SYS_NICE` or an
/// `RLIMIT_RTPRIO` of at least `priority` (EPERM otherwise), and which
/// cgroup v1 real-time group scheduling refuses in a group without a
/// real-time budget.
pub fn set_fifo_priority(thread: libc::pthread_t, priority: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: libc::c_int::from(priority),
    };
    // SAFETY: `thread` is a live thread of this process (its JoinHandle is
    // held by the caller); `param` is a valid struct read during the call.
    pthread_check(unsafe { libc::pthread_setschedparam(thread, libc::SCHED_FIFO, &param) })
}

/// The scheduling class and priority of `thread`: `(SCHED_*, priority)`.
pub fn scheduling_of(thread: libc::pthread_t) -> io::Result<(libc::c_int, libc::c_int)> {
    let mut policy = 0;
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `thread` is a live thread of this process; both out-pointers
    // are valid for writes.
    pthread_check(unsafe { libc::pthread_getschedparam(thread, &mut policy, &mut param) })
        .map(|()| (policy, param.sched_priority))
}

/// A mutex with priority inheritance (`PTHREAD_PRIO_INHERIT`): a thread
/// that holds it runs, while it does, at the priority of the highest
/// thread waiting for it. The sweep thread shares its detector with the
/// agent's loop through one: with `sweep_priority`, a loop preempted while
/// holding it (by a busy task of a priority between the two) is lifted
/// above that task until it lets go, instead of keeping the real-time
/// sweep waiting. Uncontended, locking and unlocking are one atomic
/// operation each, in user space (glibc's PI futex protocol), like
/// `std::sync::Mutex`. No poisoning: a panic while holding it unlocks it.
pub struct PiMutex<T> {
    /// Boxed: a pthread mutex must not move once initialised.
    raw: Box<UnsafeCell<libc::pthread_mutex_t>>,
    value: UnsafeCell<T>,
}

// SAFETY: the mutex hands `&mut T` to one thread at a time; `T: Send` is
// what moving that access between threads needs, as for std's Mutex.
unsafe impl<T: Send> Send for PiMutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for PiMutex<T> {}

impl<T> PiMutex<T> {
    pub fn new(value: T) -> io::Result<Self> {
        let raw = Box::new(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER));
        let mut attr = mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is initialised by pthread_mutexattr_init before any
        // other use and destroyed after; `raw` is a valid, pinned (boxed)
        // mutex that nothing else uses yet.
        unsafe {
            pthread_check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            let made = pthread_check(libc::pthread_mutexattr_setprotocol(
                attr.as_mut_ptr(),
                libc::PTHREAD_PRIO_INHERIT,
            ))
            .and_then(|()| pthread_check(libc::pthread_mutex_init(raw.get(), attr.as_ptr())));
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
            made?;
        }
        Ok(PiMutex {
            raw,
            value: UnsafeCell::new(value),
        })
    }

    /// Waits for the mutex and holds it until the guard is dropped.
    ///
    /// # Panics
    /// If the lock fails, which for a valid, non-recursive mutex it only
    /// does on a deadlock (this thread holds it already).
    pub fn lock(&self) -> PiGuard<'_, T> {
        // SAFETY: `raw` was initialised by `new` and lives as long as `self`.
        let locked = unsafe { libc::pthread_mutex_lock(self.raw.get()) };
        assert_eq!(locked, 0, "pthread_mutex_lock (PI) failed: error {locked}");
        PiGuard { mutex: self }
    }
}

impl<T> Drop for PiMutex<T> {
    fn drop(&mut self) {
        // SAFETY: no guard outlives the mutex (guards borrow it), so it is
        // unlocked here and nothing uses it after.
        unsafe { libc::pthread_mutex_destroy(self.raw.get()) };
    }
}

/// Access to what a [`PiMutex`] guards, until dropped.
pub struct PiGuard<'a, T> {
    mutex: &'a PiMutex<T>,
}

impl<T> Deref for PiGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard holds the mutex: no other reference to the
        // value exists meanwhile.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T> DerefMut for PiGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and the guard is borrowed mutably.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T> Drop for PiGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this thread locked the mutex when it made the guard.
        unsafe { libc::pthread_mutex_unlock(self.mutex.raw.get()) };
    }
}

/// A pthread function's result: it returns the error number.
fn pthread_check(result: libc::c_int) -> io::Result<()> {
    match result {
        0 => Ok(()),
        error => Err(io::Error::from_raw_os_error(error)),
    }
}

/// Locks every page of the process in memory, now and from now on
/// (`mlockall(MCL_CURRENT | MCL_FUTURE)`), so that no page fault (a page
/// swapped out, or code dropped from the page cache) can stall it. Needs
/// `CAP_IPC_LOCK` or an `RLIMIT_MEMLOCK` above what the process maps.
pub fn lock_all_memory() -> io::Result<()> {
    // SAFETY: mlockall takes flags only.
    check(unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) })
}

/// Undoes [`lock_all_memory`] (`munlockall`).
pub fn unlock_all_memory() -> io::Result<()> {
    // SAFETY: munlockall takes no argument.
    check(unsafe { libc::munlockall() })
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, thread};

    use super::*;

    #[test]
    fn a_pi_mutex_gives_one_thread_at_a_time() {
        let counter = Arc::new(PiMutex::new(0u64).expect("a PI mutex"));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter = Arc::clone(&counter);
                thread::spawn(move || {
                    for _ in 0..10_000 {
                        let mut value = counter.lock();
                        let read = *value;
                        thread::yield_now();
                        *value = read + 1;
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        assert_eq!(*counter.lock(), 40_000);
    }

    #[test]
    fn a_panic_while_holding_a_pi_mutex_unlocks_it() {
        let mutex = Arc::new(PiMutex::new(1u32).expect("a PI mutex"));
        let holder = Arc::clone(&mutex);
        let panicked = thread::spawn(move || {
            let _held = holder.lock();
            panic!("while holding it");
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(*mutex.lock(), 1);
    }

    #[test]
    fn a_sleep_until_a_past_deadline_returns_at_once_and_a_wake_ends_one() {
        let word = Arc::new(AtomicU32::new(0));
        assert_eq!(sleep_until(&word, 0, 0).expect("a sleep"), Woken::Deadline);
        // The word changed before the sleep: no wait at all.
        assert_eq!(
            sleep_until(&word, 1, u64::MAX).expect("a sleep"),
            Woken::Early
        );
        let sleeper = Arc::clone(&word);
        let far = crate::clock::monotonic_ns() + 60_000_000_000;
        let sleeping = thread::spawn(move || sleep_until(&sleeper, 0, far));
        thread::sleep(std::time::Duration::from_millis(50));
        word.fetch_add(1, std::sync::atomic::Ordering::Release);
        wake(&word);
        let woken = sleeping.join().expect("no panic").expect("a sleep");
        assert_eq!(woken, Woken::Early);
    }
}
