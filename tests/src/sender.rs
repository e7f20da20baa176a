//! A node the harness can freeze: `hb send` for one lab node, optionally at
//! real-time priority and on chosen CPUs (under `chrt` and `taskset`, so
//! every thread of it has them from its first instruction), stopped with
//! SIGSTOP (to its monitor, a node that hangs) and continued with SIGCONT.
//! Killed on Drop, stopped or not.

use std::{
    fs, io,
    path::Path,
    time::{Duration, Instant},
};

use crate::{ChildGuard, Error, Hb, Lab, Result, Signal, interrupt, monotonic_ns};

/// How long `ip netns exec` and `chrt` may take to exec `hb`.
const EXEC_TIMEOUT: Duration = Duration::from_secs(5);

/// How `hb send` is scheduled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sched {
    /// SCHED_FIFO at this priority (`chrt -f`); none: SCHED_OTHER.
    pub fifo: Option<u8>,
    /// Only on these CPUs (`taskset -c`); none: on any.
    pub cpus: Option<Vec<usize>>,
}

impl Sched {
    /// `SCHED_FIFO 45 on CPUs 0`, `SCHED_OTHER`.
    pub fn describe(&self) -> String {
        let policy = self
            .fifo
            .map_or_else(|| "SCHED_OTHER".to_owned(), |p| format!("SCHED_FIFO {p}"));
        match &self.cpus {
            Some(cpus) => format!("{policy} on CPUs {}", cpu_list(cpus)),
            None => policy,
        }
    }
}

/// `0,2,3`.
fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A running `hb send`.
#[derive(Debug)]
pub struct Sender {
    guard: ChildGuard,
    sched: Sched,
    stopped: bool,
}

impl Sender {
    /// Starts `hb send` for lab node `index` every `interval` without
    /// jitter, scheduled as `sched` says; output in `log`. Returns once the
    /// process is `hb` itself, with its policy and CPUs checked.
    pub fn start(
        hb: &Hb,
        lab: &Lab,
        index: u8,
        interval: Duration,
        sched: &Sched,
        log: &Path,
    ) -> Result<Self> {
        // ip netns exec [taskset -c CPUS] [chrt -f PRIORITY] hb send ...,
        // each exec'ing the next.
        let mut chain: Vec<String> = Vec::new();
        if let Some(cpus) = &sched.cpus {
            chain.extend(["taskset".to_owned(), "-c".to_owned(), cpu_list(cpus)]);
        }
        if let Some(priority) = sched.fifo {
            chain.extend(["chrt".to_owned(), "-f".to_owned(), priority.to_string()]);
        }
        let ns = &lab.node(index).ns;
        let mut cmd = match chain.split_first() {
            Some((program, rest)) => {
                let mut cmd = ns.command(program);
                cmd.args(rest).arg(hb.path());
                cmd
            }
            None => ns.command(hb.path()),
        };
        cmd.args(Hb::send_args(lab, index, interval));
        let guard = ChildGuard::spawn_logged(format!("sender {index}"), &mut cmd, log)?;
        let mut sender = Self {
            guard,
            sched: sched.clone(),
            stopped: false,
        };
        sender.wait_for_exec(hb.path())?;
        sender.check_sched()?;
        Ok(sender)
    }

    /// The process id (`hb`'s own: every step before it execs the next).
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// How it is scheduled.
    pub fn sched(&self) -> &Sched {
        &self.sched
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

    /// Fails unless the process is scheduled as asked.
    fn check_sched(&self) -> Result<()> {
        let pid = libc::pid_t::try_from(self.pid()).map_err(|_| Error::Invalid {
            what: "pid",
            value: self.pid().to_string(),
            reason: "out of range".to_owned(),
        })?;
        if let Some(cpus) = &self.sched.cpus {
            let allowed = crate::hog::affinity(pid)?;
            if &allowed != cpus {
                return Err(Error::Invalid {
                    what: "sender CPUs",
                    value: cpu_list(&allowed),
                    reason: format!("`taskset -c {}` should have set them", cpu_list(cpus)),
                });
            }
        }
        let Some(priority) = self.sched.fifo else {
            return Ok(());
        };
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
