//! CPU starvation on purpose: [`Hogs`], busy loops that compete with the
//! agent for the CPUs, and [`rt_throttle`], the kernel's limit on what a
//! real-time busy loop may take.
//!
//! Each busy loop is a thread of this process (so it dies with it, even on
//! SIGKILL), optionally pinned to one CPU and run as SCHED_FIFO. Every one
//! ends at its deadline on its own, and all end and are joined when the
//! guard drops, also on error, panic or Ctrl-C.

use std::{
    fs, io, mem,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{Error, Result};

/// How long a busy loop thread may take to report that it started.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// Spins between two looks at the clock and the stop flag.
const SPINS_PER_CHECK: u32 = 4096;

/// How a busy loop is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// SCHED_OTHER at nice 0: an ordinary process in a loop.
    Other,
    /// SCHED_FIFO at this priority (1..=99): it runs until it yields, a
    /// higher priority preempts it, or RT throttling ([`rt_throttle`])
    /// takes the CPU back.
    Fifo(u8),
}

impl Policy {
    /// `SCHED_OTHER` or `SCHED_FIFO 40`.
    pub fn describe(self) -> String {
        match self {
            Self::Other => "SCHED_OTHER".to_owned(),
            Self::Fifo(priority) => format!("SCHED_FIFO {priority}"),
        }
    }
}

/// One busy loop: how it is scheduled and the CPU it is pinned to (none:
/// wherever the scheduler puts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hog {
    pub policy: Policy,
    pub cpu: Option<usize>,
}

/// Busy loops running until their deadline or until dropped.
#[derive(Debug)]
pub struct Hogs {
    hogs: Vec<Hog>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    deadline: Instant,
}

impl Hogs {
    /// Starts one busy loop per entry of `hogs`, each ending by itself
    /// after `bound` at the latest. Returns once every loop runs with its
    /// policy and affinity; if one cannot get them, all are stopped and
    /// the error says why.
    pub fn start(hogs: &[Hog], bound: Duration) -> Result<Self> {
        let deadline = Instant::now() + bound;
        let stop = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = mpsc::channel();
        let mut guard = Self {
            hogs: hogs.to_vec(),
            stop: Arc::clone(&stop),
            threads: Vec::with_capacity(hogs.len()),
            deadline,
        };
        for (index, &hog) in hogs.iter().enumerate() {
            let (stop, started) = (Arc::clone(&stop), started_tx.clone());
            let thread = thread::Builder::new()
                .name(format!("hog-{index}"))
                .spawn(move || {
                    let setup = configure(hog);
                    let ok = setup.is_ok();
                    let _ = started.send(setup);
                    if ok {
                        spin(&stop, deadline);
                    }
                })
                .map_err(|source| Error::Net {
                    op: "spawning a busy loop thread".to_owned(),
                    source,
                })?;
            guard.threads.push(thread);
        }
        for _ in hogs {
            match started_rx.recv_timeout(START_TIMEOUT) {
                Ok(Ok(())) => {}
                // The guard stops the loops that did start.
                Ok(Err(err)) => return Err(err),
                Err(_) => {
                    return Err(Error::Timeout {
                        what: "a busy loop thread to start".to_owned(),
                        after: START_TIMEOUT,
                        detail: String::new(),
                    });
                }
            }
        }
        Ok(guard)
    }

    /// One busy loop per CPU this process may run on, all with `policy`,
    /// each pinned to its CPU.
    pub fn one_per_cpu(policy: Policy, bound: Duration) -> Result<Self> {
        let hogs: Vec<Hog> = allowed_cpus()?
            .into_iter()
            .map(|cpu| Hog {
                policy,
                cpu: Some(cpu),
            })
            .collect();
        Self::start(&hogs, bound)
    }

    /// The busy loops, as started.
    pub fn hogs(&self) -> &[Hog] {
        &self.hogs
    }

    /// Whether the loops have reached their deadline (and stopped).
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// One line: `2 busy loops (SCHED_OTHER on CPU 0, SCHED_OTHER on CPU 1)`.
    pub fn describe(&self) -> String {
        let each: Vec<String> = self
            .hogs
            .iter()
            .map(|hog| match hog.cpu {
                Some(cpu) => format!("{} on CPU {cpu}", hog.policy.describe()),
                None => format!("{} unpinned", hog.policy.describe()),
            })
            .collect();
        format!(
            "{} busy loop{} ({})",
            self.hogs.len(),
            if self.hogs.len() == 1 { "" } else { "s" },
            each.join(", ")
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in mem::take(&mut self.threads) {
            let _ = thread.join();
        }
    }
}

/// Pins the calling thread and sets its policy.
fn configure(hog: Hog) -> Result<()> {
    if let Some(cpu) = hog.cpu {
        if cpu >= 8 * size_of::<libc::cpu_set_t>() {
            return Err(Error::Invalid {
                what: "CPU",
                value: cpu.to_string(),
                reason: "beyond the largest cpu_set_t".to_owned(),
            });
        }
        // SAFETY: cpu_set_t is plain old data; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
        // SAFETY: CPU_SET writes one bit inside `set` (`cpu` is below its
        // size, checked above).
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t
        // of the size passed.
        if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) } != 0
        {
            return Err(Error::Net {
                op: format!("pinning a busy loop to CPU {cpu}"),
                source: io::Error::last_os_error(),
            });
        }
    }
    if let Policy::Fifo(priority) = hog.policy {
        let param = libc::sched_param {
            sched_priority: priority.into(),
        };
        // SAFETY: pid 0 is the calling thread; `param` is a valid
        // sched_param that outlives the call.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) } != 0 {
            return Err(Error::Net {
                op: format!("making a busy loop SCHED_FIFO {priority}"),
                source: io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// Spins until `stop` is set or `deadline` passes.
fn spin(stop: &AtomicBool, deadline: Instant) {
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        for _ in 0..SPINS_PER_CHECK {
            std::hint::spin_loop();
        }
    }
}

/// The CPUs this process may run on (its affinity mask), ascending.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    affinity(0)
}

/// The CPUs thread `pid` (0: the calling one) may run on, ascending.
pub fn affinity(pid: libc::pid_t) -> Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain old data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: the kernel writes at most the size passed into `set`.
    if unsafe { libc::sched_getaffinity(pid, size_of::<libc::cpu_set_t>(), &raw mut set) } != 0 {
        return Err(Error::Net {
            op: format!("reading the CPU affinity of thread {pid}"),
            source: io::Error::last_os_error(),
        });
    }
    Ok((0..8 * size_of::<libc::cpu_set_t>())
        .filter(|&cpu| {
            // SAFETY: CPU_ISSET reads one bit inside `set`, below its size.
            unsafe { libc::CPU_ISSET(cpu, &set) }
        })
        .collect())
}

/// RT throttling: real-time tasks may take `runtime_us` of every
/// `period_us` on each CPU (`/proc/sys/kernel/sched_rt_*_us`); the rest is
/// left to ordinary tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtThrottle {
    pub runtime_us: u64,
    pub period_us: u64,
}

impl RtThrottle {
    /// What a SCHED_FIFO busy loop leaves to everybody else on its CPU,
    /// per period.
    pub fn yielded(&self) -> Duration {
        Duration::from_micros(self.period_us.saturating_sub(self.runtime_us))
    }
}

/// The kernel's RT throttling, or `None` when it is off
/// (`sched_rt_runtime_us = -1`: a SCHED_FIFO busy loop keeps its CPU).
pub fn rt_throttle() -> Result<Option<RtThrottle>> {
    let read = |name: &str| -> Result<String> {
        let path = format!("/proc/sys/kernel/{name}");
        fs::read_to_string(&path)
            .map(|text| text.trim().to_owned())
            .map_err(|source| Error::Io {
                op: "reading",
                path: path.into(),
                source,
            })
    };
    let (runtime, period) = (read("sched_rt_runtime_us")?, read("sched_rt_period_us")?);
    parse_rt_throttle(&runtime, &period)
}

fn parse_rt_throttle(runtime: &str, period: &str) -> Result<Option<RtThrottle>> {
    let invalid = |value: &str| Error::Invalid {
        what: "RT throttling setting",
        value: value.to_owned(),
        reason: "not an integer".to_owned(),
    };
    let runtime: i64 = runtime.parse().map_err(|_| invalid(runtime))?;
    let period_us: u64 = period.parse().map_err(|_| invalid(period))?;
    Ok(u64::try_from(runtime).ok().map(|runtime_us| RtThrottle {
        runtime_us,
        period_us,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rt_throttling() {
        let on = parse_rt_throttle("950000", "1000000").unwrap().unwrap();
        assert_eq!(on.yielded(), Duration::from_millis(50));
        assert_eq!(parse_rt_throttle("-1", "1000000").unwrap(), None);
        assert!(parse_rt_throttle("x", "1").is_err());
    }

    #[test]
    fn busy_loops_end_at_their_deadline_and_on_drop() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
        let started = Instant::now();
        let hogs = Hogs::start(
            &[Hog {
                policy: Policy::Other,
                cpu: Some(cpus[0]),
            }],
            Duration::from_millis(50),
        )
        .unwrap();
        assert!(
            hogs.describe()
                .starts_with("1 busy loop (SCHED_OTHER on CPU")
        );
        drop(hogs);
        assert!(started.elapsed() < Duration::from_secs(5));
        let hogs = Hogs::one_per_cpu(Policy::Other, Duration::from_millis(30)).unwrap();
        assert_eq!(hogs.hogs().len(), cpus.len());
        thread::sleep(Duration::from_millis(40));
        assert!(hogs.expired());
    }
}
