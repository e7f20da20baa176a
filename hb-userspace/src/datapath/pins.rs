//! What the XDP datapath leaves in bpffs so that it outlives the agent (the
//! convention of Cilium, Katran and bpfman: the datapath persists, removal
//! is explicit), and the lock that keeps two agents off one instance.
//!
//! Every instance (the config's `instance`, default `default`) has a
//! directory of its own, `/sys/fs/bpf/hb/<instance>/`. bpffs holds only BPF
//! objects and directories, no regular files, so what a pin is, and which
//! version made it, is written in its name:
//!
//! | pin | what |
//! |---|---|
//! | `layout-<N>/HB_SEEN`, `HB_NODES`, `HB_COUNTERS`, `HB_KEYS`, `HB_PROBES`, `HB_PROBE_KEY` | the maps; `N` is [`LAYOUT_VERSION`], bumped whenever a map or a value layout changes |
//! | `program-<digest>` | the loaded XDP program; the digest is SipHash (fixed key) over the object and its load-time settings, so a changed binary or setting is a different name |
//! | `link-<mode>-<ifname>` | one bpf_link per attached interface, `mode` `native` or `generic` (so a restarted agent can report it) |
//!
//! Removing a link pin detaches the program from that interface (nothing
//! else holds the link); removing the program and map pins frees them once
//! no link uses them. Pins live in kernel memory: a reboot loses them (the
//! agent's state file keeps the node states).
//!
//! The lock is an exclusive `flock` on `/run/hb/<instance>.lock`, held for
//! the agent's life and released by the kernel even on SIGKILL; `hb detach`
//! takes it too, so it never pulls pins from under a running agent.

use std::{
    ffi::CString,
    fs::{self, File, TryLockError},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hb_common::globals::LAYOUT_VERSION;
use thiserror::Error;

use crate::datapath::xdp::AttachedMode;

/// Where bpffs is mounted (mounted there by the agent when it is not).
pub const BPFFS: &str = "/sys/fs/bpf";
/// The directory of every instance's pins.
pub const PIN_ROOT: &str = "/sys/fs/bpf/hb";
/// The directory of the instance locks.
pub const LOCK_DIR: &str = "/run/hb";
/// The instance of a configuration that names none.
pub const DEFAULT_INSTANCE: &str = "default";
/// Longest instance name.
pub const MAX_INSTANCE_LEN: usize = 32;
/// How long a held instance lock is retried before the instance is judged
/// taken.
const LOCK_GRACE: Duration = Duration::from_millis(300);
/// `statfs(2)`'s `f_type` of bpffs.
const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;
/// The maps pinned in the layout directory.
pub const PINNED_MAPS: [&str; 6] = [
    hb_common::globals::SEEN_MAP,
    hb_common::globals::NODES_MAP,
    hb_common::globals::COUNTERS_MAP,
    hb_common::globals::KEYS_MAP,
    hb_common::globals::PROBES_MAP,
    hb_common::globals::PROBE_KEY_MAP,
];

/// Errors of the pins and the lock, each naming the path and the fix.
#[derive(Debug, Error)]
pub enum PinError {
    #[error(
        "instance name {instance:?} is invalid: use 1 to {MAX_INSTANCE_LEN} characters among \
         A-Z, a-z, 0-9, `_` and `-`"
    )]
    InvalidInstance { instance: String },
    #[error("{op} {} failed", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "mounting bpffs on {BPFFS} failed (the XDP datapath pins its program and maps there; \
         mount it with `mount -t bpf bpf {BPFFS}`, as root)"
    )]
    Mount {
        #[source]
        source: io::Error,
    },
    #[error(
        "another hb agent drives instance `{instance}` (it holds {}): stop it first, or give \
         this one another `instance` in its configuration (or --instance)",
        lock.display()
    )]
    Locked { instance: String, lock: PathBuf },
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PinError + 'a {
    move |source| PinError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Whether `name` is a valid instance name: 1 to [`MAX_INSTANCE_LEN`]
/// characters of `[A-Za-z0-9_-]` (it becomes a directory and a file name).
pub fn valid_instance(name: &str) -> bool {
    (1..=MAX_INSTANCE_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_instance(instance: &str) -> Result<(), PinError> {
    if valid_instance(instance) {
        Ok(())
    } else {
        Err(PinError::InvalidInstance {
            instance: instance.to_owned(),
        })
    }
}

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> io::Result<bool> {
    let path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stat` is large enough for the
    // kernel's answer.
    if unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    Ok(stat.f_type == BPF_FS_MAGIC)
}

/// Mounts bpffs on [`BPFFS`] unless it is one already.
///
/// A bpffs mounted by a process of a private mount namespace (e.g. under
/// `ip netns exec`, which gives its command a /sys of its own) ends with
/// that namespace, pins included: the agent says so when it finds itself
/// there.
pub fn ensure_bpffs() -> Result<(), PinError> {
    let bpffs = Path::new(BPFFS);
    if is_bpffs(bpffs).map_err(io_error("checking the file system of", bpffs))? {
        return Ok(());
    }
    let source = c"bpf";
    let target = c"/sys/fs/bpf";
    // SAFETY: every pointer is a NUL-terminated string or null (no data).
    let mounted = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if mounted != 0 {
        return Err(PinError::Mount {
            source: io::Error::last_os_error(),
        });
    }
    let own = fs::read_link("/proc/self/ns/mnt").ok();
    let init = fs::read_link("/proc/1/ns/mnt").ok();
    if own.is_some() && own != init {
        tracing::warn!(
            "mounted bpffs on {BPFFS} in a private mount namespace (ip netns exec?): the pinned \
             XDP program and maps end when this namespace does, so they will not outlive the \
             agent; run the agent in the host's mount namespace with bpffs mounted on {BPFFS}"
        );
    } else {
        tracing::info!("mounted bpffs on {BPFFS}");
    }
    Ok(())
}

/// The exclusive lock of an instance, held while the value lives.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock of `instance` without waiting: refused, naming the
    /// instance, while another process holds it.
    pub fn acquire(instance: &str) -> Result<Self, PinError> {
        check_instance(instance)?;
        let dir = Path::new(LOCK_DIR);
        fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
        let path = lock_path(instance);
        // `hb detach` removes the file under the lock: a lock taken on a
        // file that is no longer the path's is taken again on the new one.
        for _ in 0..8 {
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_error("opening", &path))?;
            // A lock let go of a moment ago can still be held for a few
            // milliseconds by a child its holder forked and that has not
            // yet exec'd (the descriptor is close-on-exec): wait that out,
            // no longer.
            let deadline = Instant::now() + LOCK_GRACE;
            loop {
                match file.try_lock() {
                    Ok(()) => break,
                    Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(TryLockError::WouldBlock) => {
                        return Err(PinError::Locked {
                            instance: instance.to_owned(),
                            lock: path,
                        });
                    }
                    Err(TryLockError::Error(e)) => return Err(io_error("locking", &path)(e)),
                }
            }
            let held = file.metadata().map_err(io_error("reading", &path))?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Self { _file: file });
                }
                _ => continue,
            }
        }
        Err(PinError::Locked {
            instance: instance.to_owned(),
            lock: path,
        })
    }
}

/// `/run/hb/<instance>.lock`.
pub fn lock_path(instance: &str) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("{instance}.lock"))
}

/// A link pin, parsed from its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkPin {
    pub interface: String,
    pub mode: AttachedMode,
    pub path: PathBuf,
}

/// What an instance directory holds.
#[derive(Debug, Default)]
pub struct Pinned {
    /// Versions of the `layout-<N>` directories.
    pub layouts: Vec<u32>,
    /// `program-<digest>` pins.
    pub programs: Vec<(u64, PathBuf)>,
    pub links: Vec<LinkPin>,
    /// Anything else (not made by this version of hb).
    pub other: Vec<PathBuf>,
}

impl Pinned {
    pub fn is_empty(&self) -> bool {
        self.layouts.is_empty()
            && self.programs.is_empty()
            && self.links.is_empty()
            && self.other.is_empty()
    }
}

/// An instance's directory of pins, `/sys/fs/bpf/hb/<instance>/`.
#[derive(Clone, Debug)]
pub struct InstanceDir {
    instance: String,
    path: PathBuf,
}

impl InstanceDir {
    pub fn new(instance: &str) -> Result<Self, PinError> {
        check_instance(instance)?;
        Ok(Self {
            instance: instance.to_owned(),
            path: Path::new(PIN_ROOT).join(instance),
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `layout-<version>/`.
    pub fn layout_dir(&self, version: u32) -> PathBuf {
        self.path.join(format!("layout-{version}"))
    }

    /// Where map `name` is pinned (this version's layout).
    pub fn map_pin(&self, name: &str) -> PathBuf {
        self.layout_dir(LAYOUT_VERSION).join(name)
    }

    /// `program-<digest>`.
    pub fn program_pin(&self, digest: u64) -> PathBuf {
        self.path.join(format!("program-{digest:016x}"))
    }

    /// `link-<mode>-<interface>`.
    pub fn link_pin(&self, mode: AttachedMode, interface: &str) -> PathBuf {
        self.path.join(format!("link-{}-{interface}", mode.name()))
    }

    /// Creates the directory and this version's layout directory.
    pub fn create(&self) -> Result<(), PinError> {
        let layout = self.layout_dir(LAYOUT_VERSION);
        fs::create_dir_all(&layout).map_err(io_error("creating", &layout))
    }

    /// What the directory holds (nothing if it does not exist).
    pub fn scan(&self) -> Result<Pinned, PinError> {
        let mut pinned = Pinned::default();
        let entries = match fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(pinned),
            Err(e) => return Err(io_error("listing", &self.path)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error("listing", &self.path))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(version) = name
                .strip_prefix("layout-")
                .and_then(|v| v.parse().ok())
                .filter(|_| path.is_dir())
            {
                pinned.layouts.push(version);
            } else if let Some(digest) = name
                .strip_prefix("program-")
                .and_then(|d| u64::from_str_radix(d, 16).ok())
            {
                pinned.programs.push((digest, path));
            } else if let Some(link) = parse_link_pin(&name, &path) {
                pinned.links.push(link);
            } else {
                pinned.other.push(path);
            }
        }
        pinned.layouts.sort_unstable();
        pinned.links.sort_by(|a, b| a.interface.cmp(&b.interface));
        Ok(pinned)
    }
}

fn parse_link_pin(name: &str, path: &Path) -> Option<LinkPin> {
    let rest = name.strip_prefix("link-")?;
    let (mode, interface) = rest.split_once('-')?;
    let mode = match mode {
        "native" => AttachedMode::Native,
        "generic" => AttachedMode::Generic,
        _ => return None,
    };
    (!interface.is_empty()).then(|| LinkPin {
        interface: interface.to_owned(),
        mode,
        path: path.to_owned(),
    })
}

/// Removes the pin `path` (a link pin: detaches it), if it is there.
pub fn unpin(path: &Path) -> Result<(), PinError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("removing", path)(e)),
        _ => Ok(()),
    }
}

/// What [`remove`] removed.
#[derive(Debug, Default)]
pub struct Removed {
    /// The interfaces the program was detached from.
    pub links: Vec<LinkPin>,
    pub programs: usize,
    /// Map pins and directories.
    pub other: usize,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.programs == 0 && self.other == 0
    }
}

/// Removes everything `instance` pinned, links first (detaching the
/// program from every interface), then the programs, the maps and the
/// directories, and its lock file. Refused while an agent holds the
/// instance. Idempotent: with nothing pinned it removes nothing.
pub fn remove(instance: &str) -> Result<Removed, PinError> {
    let dir = InstanceDir::new(instance)?;
    let lock = InstanceLock::acquire(instance)?;
    let mut removed = Removed::default();
    // Without bpffs at its place, nothing can be pinned in this mount
    // namespace.
    if is_bpffs(Path::new(BPFFS)).unwrap_or(false) {
        let pinned = dir.scan()?;
        for link in pinned.links {
            detach_link(&link.path)?;
            removed.links.push(link);
        }
        for (_, program) in &pinned.programs {
            unpin(program)?;
            removed.programs += 1;
        }
        if dir.path.exists() {
            removed.other += remove_tree(&dir.path)?;
        }
    }
    let lock_file = lock_path(instance);
    unpin(&lock_file)?;
    drop(lock);
    Ok(removed)
}

/// Removes a directory of pins and directories; returns how many entries
/// went.
fn remove_tree(path: &Path) -> Result<usize, PinError> {
    let mut count = 0;
    for entry in fs::read_dir(path).map_err(io_error("listing", path))? {
        let entry = entry.map_err(io_error("listing", path))?;
        let entry = entry.path();
        if entry.is_dir() {
            count += remove_tree(&entry)?;
        } else {
            unpin(&entry)?;
            count += 1;
        }
    }
    fs::remove_dir(path).map_err(io_error("removing", path))?;
    Ok(count + 1)
}

/// What the kernel says about a pinned XDP link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// The program it runs.
    pub program_id: u32,
    /// The interface it is attached to; 0 once that interface is gone.
    pub ifindex: u32,
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `bpf(cmd, attr)`.
///
/// # Safety
/// `attr` must be the member of `union bpf_attr` that `cmd` reads, and
/// every pointer in it valid for what `cmd` does with it.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: the caller vouches for `attr`; the kernel reads at most
    // `size_of::<T>()` bytes of it.
    let result = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, size_of::<T>()) };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// Opens the BPF object pinned at `path` (`BPF_OBJ_GET`).
fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    /// The `BPF_OBJ_*` member of `union bpf_attr`.
    #[repr(C, align(8))]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: `attr` is BPF_OBJ_GET's member, pointing at a NUL-terminated
    // path that outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &attr) }?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reads the pinned link `path` (`BPF_OBJ_GET`, then
/// `BPF_OBJ_GET_INFO_BY_FD`).
pub fn link_state(path: &Path) -> io::Result<LinkState> {
    /// `struct bpf_link_info`: type, id, prog_id, then (8-aligned) the
    /// per-type union, whose XDP member starts with `ifindex`.
    #[repr(C, align(8))]
    struct LinkInfo {
        kind: u32,
        id: u32,
        prog_id: u32,
        _pad: u32,
        union: [u32; 24],
    }
    /// The `info` member of `union bpf_attr`.
    #[repr(C, align(8))]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let fd = obj_get(path)?;
    let mut info = LinkInfo {
        kind: 0,
        id: 0,
        prog_id: 0,
        _pad: 0,
        union: [0; 24],
    };
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<LinkInfo>() as u32,
        info: &raw mut info as u64,
    };
    // SAFETY: `attr` is BPF_OBJ_GET_INFO_BY_FD's member, describing a
    // writable buffer of `info_len` bytes that outlives the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) }?;
    Ok(LinkState {
        program_id: info.prog_id,
        ifindex: info.union[0],
    })
}

/// Detaches the pinned link `path` at once (`BPF_LINK_DETACH`: the
/// interface has no program when this returns) and removes its pin.
/// Removing the pin alone would detach it too, but later, from a kernel
/// work queue, and an attach right after would find the interface busy.
pub fn detach_link(path: &Path) -> Result<(), PinError> {
    #[repr(C, align(8))]
    struct DetachAttr {
        link_fd: u32,
    }
    match obj_get(path) {
        Ok(fd) => {
            let attr = DetachAttr {
                link_fd: fd.as_raw_fd() as u32,
            };
            // SAFETY: `attr` is BPF_LINK_DETACH's member (a descriptor).
            if let Err(e) = unsafe { bpf(BPF_LINK_DETACH, &attr) } {
                // Already detached (its interface went away): only the pin
                // is left to remove.
                tracing::debug!("BPF_LINK_DETACH of {}: {e}", path.display());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("opening the pinned link", path)(e)),
    }
    unpin(path)
}

/// The index of interface `name` in this network namespace, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is NUL-terminated.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names() {
        for good in ["default", "a", "hb-1_X", &"x".repeat(32)] {
            assert!(valid_instance(good), "{good}");
        }
        for bad in ["", "a/b", "..", "a.b", "ü", " x", &"x".repeat(33)] {
            assert!(!valid_instance(bad), "{bad}");
        }
        assert!(InstanceDir::new("../etc").is_err());
    }

    #[test]
    fn pin_names_round_trip() {
        let dir = InstanceDir::new("t1").unwrap();
        assert_eq!(dir.path(), Path::new("/sys/fs/bpf/hb/t1"));
        assert_eq!(
            dir.map_pin("HB_SEEN"),
            Path::new(&format!(
                "/sys/fs/bpf/hb/t1/layout-{LAYOUT_VERSION}/HB_SEEN"
            ))
        );
        assert_eq!(
            dir.program_pin(0xab),
            Path::new("/sys/fs/bpf/hb/t1/program-00000000000000ab")
        );
        let link = dir.link_pin(AttachedMode::Generic, "veth-a-1");
        assert_eq!(link, Path::new("/sys/fs/bpf/hb/t1/link-generic-veth-a-1"));
        let name = link.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            parse_link_pin(name, &link),
            Some(LinkPin {
                interface: "veth-a-1".to_owned(),
                mode: AttachedMode::Generic,
                path: link.clone(),
            })
        );
        assert_eq!(parse_link_pin("link-skb-eth0", &link), None);
        assert_eq!(parse_link_pin("link-native-", &link), None);
    }
}
