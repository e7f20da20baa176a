//! Child processes: the [`ChildGuard`] (killed and reaped on Drop) and
//! [`Hb`], which locates the `hb` binary and runs it, inside a namespace
//! or not.

use std::{
    ffi::OsStr,
    fs::File,
    io,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    Error, HEARTBEAT_PORT, Lab, NetNs, Result, TestConfig, config::humantime, interrupt, netns,
};

/// Signals the harness sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: asks for a graceful stop.
    Term,
    /// SIGKILL: a crash, as far as everybody else can tell.
    Kill,
    /// SIGINT: Ctrl-C.
    Int,
    /// SIGSTOP: the process hangs (it cannot catch or ignore it).
    Stop,
    /// SIGCONT: a stopped process goes on.
    Cont,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Self::Term => libc::SIGTERM,
            Self::Kill => libc::SIGKILL,
            Self::Int => libc::SIGINT,
            Self::Stop => libc::SIGSTOP,
            Self::Cont => libc::SIGCONT,
        }
    }

    /// The signal's usual name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Term => "SIGTERM",
            Self::Kill => "SIGKILL",
            Self::Int => "SIGINT",
            Self::Stop => "SIGSTOP",
            Self::Cont => "SIGCONT",
        }
    }
}

/// A spawned process, SIGKILLed and reaped on Drop unless it has already
/// been waited for.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    log: Option<PathBuf>,
}

impl ChildGuard {
    /// Spawn `cmd`; `name` is used in messages.
    pub fn spawn(name: impl Into<String>, cmd: &mut Command) -> Result<Self> {
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            cmd: netns::describe(cmd),
            source,
        })?;
        Ok(Self {
            name: name.into(),
            child,
            status: None,
            log: None,
        })
    }

    /// Spawn `cmd` with stdout and stderr appended to the file `log`.
    pub fn spawn_logged(name: impl Into<String>, cmd: &mut Command, log: &Path) -> Result<Self> {
        let io_err = |source| Error::Io {
            op: "opening log file",
            path: log.to_owned(),
            source,
        };
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err)?;
        let err = out.try_clone().map_err(io_err)?;
        let mut guard = Self::spawn(name, cmd.stdin(Stdio::null()).stdout(out).stderr(err))?;
        guard.log = Some(log.to_owned());
        Ok(guard)
    }

    /// The name given at spawn time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `lines` lines of the process's log file (empty if it has
    /// none), for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Send `signal`. Refused once the process has been reaped (its pid
    /// may belong to somebody else by then).
    pub fn signal(&mut self, signal: Signal) -> Result<()> {
        let failure = |source| Error::Signal {
            name: self.name.clone(),
            pid: self.child.id(),
            signal: signal.name(),
            source,
        };
        if self.status.is_some() {
            return Err(failure(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the process has already exited and been reaped",
            )));
        }
        let pid = libc::pid_t::try_from(self.child.id())
            .map_err(|_| failure(io::Error::from(io::ErrorKind::InvalidInput)))?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own unreaped child, so it cannot have been reused.
        if unsafe { libc::kill(pid, signal.number()) } == 0 {
            Ok(())
        } else {
            Err(failure(io::Error::last_os_error()))
        }
    }

    /// The exit status if the process has exited (reaping it).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().map_err(|source| Error::Io {
                op: "waiting for",
                path: PathBuf::from(&self.name),
                source,
            })?;
        }
        Ok(self.status)
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            interrupt::check()?;
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send `signal` and wait up to `timeout` for the process to exit.
    pub fn stop(&mut self, signal: Signal, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.signal(signal)?;
        self.wait_timeout(timeout)?.ok_or_else(|| Error::Timeout {
            what: format!("{} to exit after {}", self.name, signal.name()),
            after: timeout,
            detail: String::new(),
        })
    }

    /// `Err(Exited)` if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.try_wait()? {
            None => Ok(()),
            Some(status) => Err(Error::Exited {
                name: self.name.clone(),
                status,
                log: self.log_tail(30),
            }),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.status.is_none() {
            // Errors only mean it is already gone; wait reaps it either way.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `hb` binary under test.
#[derive(Debug, Clone)]
pub struct Hb {
    path: PathBuf,
}

impl Hb {
    /// Use the binary at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The binary named by `$HB_BIN` (set by `cargo xtask test`), else
    /// `<workspace>/target/release/hb`. Panics with instructions if it
    /// does not exist.
    pub fn from_env() -> Self {
        let path = std::env::var_os("HB_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_dir().join("target/release/hb"));
        assert!(
            path.is_file(),
            "the hb binary {} does not exist: build it with `cargo xtask build`, \
             or run the tests with `cargo xtask test`, or set HB_BIN to its path",
            path.display()
        );
        Self { path }
    }

    /// Path of the binary.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `hb-tools` (the load generator, the in-process benches):
    /// `$HB_TOOLS_BIN`, else beside this `hb` binary. Panics with
    /// instructions if it does not exist.
    pub fn tools(&self) -> Hb {
        let path = std::env::var_os("HB_TOOLS_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.path.with_file_name("hb-tools"));
        assert!(
            path.is_file(),
            "the hb-tools binary {} does not exist: build it with `cargo xtask build`, or set \
             HB_TOOLS_BIN to its path",
            path.display()
        );
        Hb::new(path)
    }

    /// A command running `hb ARGS...` in the current namespace.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.path);
        cmd.args(args);
        cmd
    }

    /// Spawn `hb ARGS...` inside `ns`, output appended to `log`. It sees
    /// the host's bpffs (see [`crate::pins::shared_bpffs_command`]; the
    /// directory it is carried through is `<log>.bpffs`), so the pins of an
    /// agent outlive it as on a real host.
    pub fn spawn_in<I, S>(&self, ns: &NetNs, name: &str, args: I, log: &Path) -> Result<ChildGuard>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mountpoint = log.with_extension("bpffs");
        std::fs::create_dir_all(&mountpoint).map_err(|source| Error::Io {
            op: "creating directory",
            path: mountpoint.clone(),
            source,
        })?;
        let mut cmd = crate::pins::shared_bpffs_command(ns.name(), &self.path, &mountpoint);
        ChildGuard::spawn_logged(name, cmd.args(args), log)
    }

    /// `hb agent --config CONFIG` in the lab's monitor namespace, output in
    /// `log`, returned once it answers `hb status` (at most `within`).
    pub fn start_agent(
        &self,
        lab: &Lab,
        config: &TestConfig,
        log: &Path,
        within: Duration,
    ) -> Result<ChildGuard> {
        let args = [
            OsStr::new("agent"),
            "--config".as_ref(),
            config.path.as_os_str(),
        ];
        let mut agent = self.spawn_in(&lab.monitor, "agent", args, log)?;
        self.wait_until_ready(&config.socket, &mut agent, within)?;
        Ok(agent)
    }

    /// `hb send` for lab node `index`, to the monitor's address on its link,
    /// every `interval` without jitter; output in `log`.
    pub fn start_sender(
        &self,
        lab: &Lab,
        index: u8,
        interval: Duration,
        log: &Path,
    ) -> Result<ChildGuard> {
        let node = lab.node(index);
        self.spawn_in(
            &node.ns,
            &format!("sender {index}"),
            Self::send_args(lab, index, interval),
            log,
        )
    }

    /// The arguments of `hb send` for lab node `index`: to the monitor's
    /// address on its link, every `interval` without jitter.
    pub fn send_args(lab: &Lab, index: u8, interval: Duration) -> [String; 9] {
        [
            "send".to_owned(),
            "--node-id".to_owned(),
            index.to_string(),
            "--to".to_owned(),
            format!("{}:{HEARTBEAT_PORT}", lab.node(index).monitor_address),
            "--interval".to_owned(),
            humantime(interval),
            "--jitter".to_owned(),
            "0".to_owned(),
        ]
    }

    /// `hb detach --instance INSTANCE`, which must succeed; returns its
    /// output.
    pub fn detach(&self, instance: &str) -> Result<String> {
        let output = netns::run(&mut self.command(["detach", "--instance", instance]))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Run `hb ARGS...` to completion without judging its exit status.
    pub fn output<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(args);
        cmd.output().map_err(|source| Error::Spawn {
            cmd: netns::describe(&cmd),
            source,
        })
    }

    /// `hb status --socket SOCKET` (the human-readable table).
    pub fn status_text(&self, socket: &Path) -> Result<String> {
        let output = netns::run(&mut self.command([
            OsStr::new("status"),
            "--socket".as_ref(),
            socket.as_os_str(),
        ]))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `hb status --socket SOCKET --json`, parsed.
    pub fn status_json(&self, socket: &Path) -> Result<Value> {
        let mut cmd = self.command([
            OsStr::new("status"),
            "--socket".as_ref(),
            socket.as_os_str(),
            "--json".as_ref(),
        ]);
        let output = netns::run(&mut cmd)?;
        serde_json::from_slice(&output.stdout).map_err(|source| Error::Json {
            cmd: netns::describe(&cmd),
            output: String::from_utf8_lossy(&output.stdout).into_owned(),
            source,
        })
    }

    /// Poll `hb status --json` until the agent answers (at most `timeout`),
    /// failing early if the agent process exits.
    pub fn wait_until_ready(
        &self,
        socket: &Path,
        agent: &mut ChildGuard,
        timeout: Duration,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            agent.ensure_running()?;
            let last_error = match self.status_json(socket) {
                Ok(status) => return Ok(status),
                Err(err) => err,
            };
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("the agent to answer on {}", socket.display()),
                    after: timeout,
                    detail: format!(
                        "; last error: {last_error}\nagent output:\n{}",
                        agent.log_tail(30)
                    ),
                });
            }
            interrupt::sleep(Duration::from_millis(50))?;
        }
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("hb-tests lives inside the workspace")
        .to_owned()
}
