//! The [`NetNs`] guard: a named network namespace that is deleted on Drop,
//! after killing whatever still runs inside it. Deleting a namespace also
//! deletes the veth ends inside it (and with them their peers). [`enter`]
//! moves one thread of the test into a namespace.

use std::{
    ffi::OsStr,
    fs::{self, File},
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::{Error, Result};

/// Where `ip netns add` mounts the namespaces it names.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Run a command to completion; a non-zero exit is an [`Error::Command`].
pub fn run(cmd: &mut Command) -> Result<Output> {
    let output = cmd.output().map_err(|source| Error::Spawn {
        cmd: describe(cmd),
        source,
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::Command {
            cmd: describe(cmd),
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Run `ip ARGS...` to completion.
pub fn ip<I, S>(args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new("ip").args(args))
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A named network namespace (`ip netns add`), deleted on Drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Create the namespace `name` and bring its loopback up.
    pub fn create(name: &str) -> Result<Self> {
        if !crate::is_root() {
            return Err(Error::NotRoot {
                what: "creating a network namespace",
            });
        }
        if name.is_empty() || name.contains(['/', ' ']) || name.len() > 64 {
            return Err(Error::Invalid {
                what: "namespace name",
                value: name.to_owned(),
                reason: "must be 1 to 64 characters without '/' or spaces".to_owned(),
            });
        }
        ip(["netns", "add", name])?;
        // From here on the guard owns the namespace, even if lo fails.
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file (`/var/run/netns/NAME`), which `setns(2)` enters.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Run `ip -n NAME ARGS...` (an `ip` command acting inside the namespace).
    pub fn ip<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command running `program ARGS...` inside the namespace
    /// (`ip netns exec NAME program ...`; `ip` execs the program, so the
    /// spawned child's pid is the program's own pid).
    pub fn command<S: AsRef<OsStr>>(&self, program: S) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Run `program ARGS...` inside the namespace to completion.
    pub fn exec<I, S>(&self, program: &str, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(self.command(program).args(args))
    }

    /// Pids of the processes living in the namespace.
    pub fn pids(&self) -> Result<Vec<u32>> {
        pids_of(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(err) = remove(&self.name) {
            eprintln!("hb-tests: could not remove network namespace: {err}");
        }
    }
}

fn pids_of(name: &str) -> Result<Vec<u32>> {
    let output = ip(["netns", "pids", name])?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect())
}

/// Kill (SIGKILL) every process in the namespace `name`, then delete it.
/// Used by the guard and to clear leftovers of an interrupted run.
pub fn remove(name: &str) -> Result<()> {
    if let Ok(pids) = pids_of(name) {
        for pid in pids {
            let Ok(pid) = libc::pid_t::try_from(pid) else {
                continue;
            };
            // SAFETY: kill has no memory-safety preconditions; the pid was
            // just listed as living inside our own namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    ip(["netns", "del", name]).map(drop)
}

/// Move the calling thread (only it) into the network namespace whose
/// file is `netns` (see [`NetNs::path`]); sockets it creates from then on
/// belong to that namespace.
pub fn enter(netns: &Path) -> Result<()> {
    let file = File::open(netns).map_err(|source| Error::Io {
        op: "opening network namespace",
        path: netns.to_owned(),
        source,
    })?;
    // SAFETY: setns has no memory-safety preconditions; the descriptor is
    // open for the whole call. With CLONE_NEWNET it moves only the calling
    // thread, which is this one.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::Net {
            op: format!("entering network namespace {}", netns.display()),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Names of the existing named namespaces that start with `prefix`.
pub fn list_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let dir = Path::new(NETNS_DIR);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                op: "listing",
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    Ok(names)
}
