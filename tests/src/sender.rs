//! A node the harness can freeze: `hb send` for one lab node, optionally at
//! real-time priority (under `chrt`, so every thread of it is SCHED_FIFO
//! from its first instruction), stopped with SIGSTOP (to its monitor, a
//! node that hangs) and continued with SIGCONT. Killed on Drop, stopped or
//! not.

use std::{
    fs, io,
    path::Path,
    time::{Duration, Instant},
};

use crate::{ChildGuard, Error, Hb, Lab, Result, Signal, interrupt, monotonic_ns};

/// How long `ip netns exec` and `chrt` may take to exec `hb`.
const EXEC_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `hb send`.
#[derive(Debug)]
pub struct Sender {
    guard: ChildGuard,
    fifo: Option<u8>,
    stopped: bool,
}

impl Sender {
    /// Starts `hb send` for lab node `index` every `interval` without
    /// jitter, as SCHED_FIFO at `fifo` if given; output in `log`. Returns
    /// once the process is `hb` itself, with the policy checked.
    pub fn start(
        hb: &Hb,
        lab: &Lab,
        index: u8,
        interval: Duration,
        fifo: Option<u8>,
        log: &Path,
    ) -> Result<Self> {
        let ns = &lab.node(index).ns;
        let args = Hb::send_args(lab, index, interval);
        let mut cmd = match fifo {
            Some(priority) => {
                let mut cmd = ns.command("chrt");
                cmd.args(["-f", &priority.to_string()]).arg(hb.path());
                cmd
            }
            None => ns.command(hb.path()),
        };
        cmd.args(args);
        let guard = ChildGuard::spawn_logged(format!("sender {index}"), &mut cmd, log)?;
        let mut sender = Self {
            guard,
            fifo,
            stopped: false,
        };
        sender.wait_for_exec(hb.path())?;
        if let Some(priority) = fifo {
            sender.check_policy(priority)?;
        }
        Ok(sender)
    }

    /// The process id (`hb`'s own: every step before it execs the next).
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// The SCHED_FIFO priority it runs at, if any.
    pub fn fifo(&self) -> Option<u8> {
        self.fifo
    }

    /// Waits until the child is `hb` itself, so that a signal reaches it
    /// and not `ip` or `chrt`.
    fn wait_for_exec(&mut self, hb: &Path) -> Result<()> {
        let exe = format!("/proc/{}/exe", self.pid());
        let want = fs::canonicalize(hb).unwrap_or_else(|_| hb.to_owned());
        let deadline = Instant::now() + EXEC_TIMEOUT;
        loop {
            self.guard.ensure_running()?;
            if fs::read_link(&exe).is_ok_and(|path| path == want) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{} to exec {}", self.guard.name(), want.display()),
                    after: EXEC_TIMEOUT,
                    detail: format!("; its output:\n{}", self.guard.log_tail(10)),
                });
            }
            interrupt::sleep(Duration::from_millis(5))?;
        }
    }

    /// Fails unless the process runs as SCHED_FIFO at `priority`.
    fn check_policy(&self, priority: u8) -> Result<()> {
        let pid = libc::pid_t::try_from(self.pid()).map_err(|_| Error::Invalid {
            what: "pid",
            value: self.pid().to_string(),
            reason: "out of range".to_owned(),
        })?;
        // SAFETY: sched_getscheduler has no memory-safety preconditions;
        // the pid is our own unreaped child.
        let policy = unsafe { libc::sched_getscheduler(pid) };
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_getparam writes one sched_param, which lives on
        // our stack.
        let status = unsafe { libc::sched_getparam(pid, &raw mut param) };
        if policy < 0 || status != 0 {
            return Err(Error::Net {
                op: format!("reading the scheduling policy of {}", self.guard.name()),
                source: io::Error::last_os_error(),
            });
        }
        if policy != libc::SCHED_FIFO || param.sched_priority != i32::from(priority) {
            return Err(Error::Invalid {
                what: "sender scheduling",
                value: format!("policy {policy}, priority {}", param.sched_priority),
                reason: format!("`chrt -f {priority}` should have made it SCHED_FIFO {priority}"),
            });
        }
        Ok(())
    }

    /// Stops the sender (SIGSTOP); returns `CLOCK_MONOTONIC` read right
    /// before the signal, ns.
    pub fn freeze(&mut self) -> Result<u64> {
        self.guard.ensure_running()?;
        let at = monotonic_ns();
        self.guard.signal(Signal::Stop)?;
        self.stopped = true;
        Ok(at)
    }

    /// Lets a stopped sender go on (SIGCONT); returns `CLOCK_MONOTONIC`
    /// read right after the signal, ns.
    pub fn thaw(&mut self) -> Result<u64> {
        self.guard.signal(Signal::Cont)?;
        self.stopped = false;
        Ok(monotonic_ns())
    }

    /// Whether it is stopped (by [`Sender::freeze`]).
    pub fn is_frozen(&self) -> bool {
        self.stopped
    }

    /// `Err(Exited)` if `hb send` has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.guard.ensure_running()
    }
}
