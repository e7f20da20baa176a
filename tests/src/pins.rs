//! The agent's pins in bpffs as the tests see them: every lab is its own
//! agent instance (named after the lab's prefix), whose pins
//! (`/sys/fs/bpf/hb/<instance>/`) and lock file a [`PinGuard`] removes on
//! Drop, also when a test fails: the XDP datapath outlives the agent by
//! design, so nothing else would.
//!
//! The agent runs in the monitor namespace under `ip netns exec`, which
//! gives it a /sys of its own: without help it would mount a bpffs of its
//! own there, which ends with the agent. [`shared_bpffs_command`] runs a
//! program in a namespace with the host's bpffs at /sys/fs/bpf instead, so
//! the pins outlive the agent as they do on a real host.

use std::{
    ffi::{CString, OsStr},
    fs, io,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Error, Result, netns};

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// The directory of every instance's pins.
pub const PIN_ROOT: &str = "/sys/fs/bpf/hb";
/// The directory of the instance locks.
pub const LOCK_DIR: &str = "/run/hb";
/// `statfs(2)`'s `f_type` of bpffs.
const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;

/// `/sys/fs/bpf/hb/<instance>`.
pub fn instance_dir(instance: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(instance)
}

/// Whether `path` is on a bpffs.
fn is_bpffs(path: &Path) -> io::Result<bool> {
    let path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stat` is large enough for the
    // kernel's answer.
    if unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded, so it filled `stat`.
    Ok(unsafe { stat.assume_init() }.f_type == BPF_FS_MAGIC)
}

/// Mounts bpffs on /sys/fs/bpf of this (the host's) mount namespace unless
/// it is mounted: what the agent does on a real host, done here because the
/// agent under test runs in a namespace of its own.
pub fn ensure_bpffs() -> Result<()> {
    let bpffs = Path::new(BPFFS);
    let mounted = is_bpffs(bpffs).map_err(|source| Error::Io {
        op: "checking the file system of",
        path: bpffs.to_owned(),
        source,
    })?;
    if !mounted {
        netns::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    }
    Ok(())
}

/// A command running `program` in network namespace `ns` (as `ip netns exec`
/// does, with the namespace's own /sys) that sees the host's bpffs at
/// /sys/fs/bpf. `mountpoint` is an empty directory the host's bpffs is
/// carried through (bound there in a private mount namespace, never in the
/// host's, so it stays an empty directory for everybody else). Every step
/// execs the next, so the child's pid is the program's.
pub fn shared_bpffs_command<S: AsRef<OsStr>>(ns: &str, program: S, mountpoint: &Path) -> Command {
    // $0: the mountpoint, $1: the namespace, then the program and its
    // arguments (appended by the caller).
    const OUTER: &str = r#"mount --bind /sys/fs/bpf "$0" && exec ip netns exec "$1" sh -c 'mount --bind "$0" /sys/fs/bpf && umount "$0" && shift && exec "$@"' "$0" "$@""#;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "slave", "sh", "-c", OUTER])
        .arg(mountpoint)
        .arg(ns)
        .arg(program);
    cmd
}

/// Every pin of `instance`, as paths relative to its directory (sorted;
/// empty when it has none).
pub fn list(instance: &str) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Ok(relative) = path.strip_prefix(base) {
                out.push(relative.to_string_lossy().into_owned());
            }
            if path.is_dir() {
                walk(&path, base, out);
            }
        }
    }
    let dir = instance_dir(instance);
    let mut out = Vec::new();
    walk(&dir, &dir, &mut out);
    out.sort();
    out
}

/// Removes the pins of `instance` and its lock file, if any (removing a
/// link's pin detaches it). What `hb detach` does, without the binary.
pub fn remove(instance: &str) -> Result<()> {
    let dir = instance_dir(instance);
    match fs::remove_dir_all(&dir) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => {
            return Err(Error::Io {
                op: "removing directory",
                path: dir,
                source,
            });
        }
        _ => {}
    }
    let lock = Path::new(LOCK_DIR).join(format!("{instance}.lock"));
    match fs::remove_file(&lock) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(Error::Io {
            op: "removing",
            path: lock,
            source,
        }),
        _ => Ok(()),
    }
}

/// Removes an instance's pins on Drop.
#[derive(Debug)]
pub struct PinGuard {
    instance: String,
}

impl PinGuard {
    pub fn new(instance: &str) -> Self {
        Self {
            instance: instance.to_owned(),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Err(err) = remove(&self.instance) {
            eprintln!("hb-tests: {err}");
        }
    }
}
