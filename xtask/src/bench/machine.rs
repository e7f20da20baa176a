//! The machine the figures come from, and CPU time as Linux accounts it in
//! /proc: the whole machine's softirq time (the `cpu` line of /proc/stat)
//! and one process's user + system time, all its threads included
//! (/proc/<pid>/stat). Both count clock ticks (`USER_HZ`); a process's CPU
//! clock ([`process_cpu_ns`]) counts nanoseconds.

use std::{
    fs,
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// What the results were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs.
    pub cores: usize,
    /// `MemTotal` of /proc/meminfo.
    pub memory_bytes: u64,
    /// Clock ticks per second of the /proc CPU times.
    pub user_hz: u64,
}

impl Machine {
    /// One line for people: `6.18.44 (x86), AMD EPYC, 2 cores, 23.4 GiB`.
    pub fn line(&self) -> String {
        format!(
            "Linux {}, {}, {} cores, {:.1} GiB RAM",
            self.kernel,
            self.cpu_model,
            self.cores,
            self.memory_bytes as f64 / (1u64 << 30) as f64
        )
    }
}

fn read(path: &str) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {path}"))
}

/// Describes this machine.
pub fn describe() -> Result<Machine> {
    let cpuinfo = read("/proc/cpuinfo")?;
    let cpu_model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map_or_else(
            || "unknown CPU".to_owned(),
            |(_, model)| model.trim().to_owned(),
        );
    let cores = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    let meminfo = read("/proc/meminfo")?;
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .context("no MemTotal in /proc/meminfo")?;
    Ok(Machine {
        kernel: read("/proc/sys/kernel/osrelease")?.trim().to_owned(),
        cpu_model,
        cores,
        memory_bytes: memory_kib * 1024,
        user_hz: user_hz(),
    })
}

/// Clock ticks per second of /proc's CPU times.
pub fn user_hz() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100)
}

/// The whole machine's CPU time by kind, in ticks (the `cpu` line of
/// /proc/stat).
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineTicks {
    /// Tick-sampled.
    pub softirq: u64,
    /// idle + iowait: measured exactly on tickless kernels, unlike the
    /// busy columns, which are sampled by the tick.
    pub idle: u64,
    /// CPUs (`cpuN` lines).
    pub cpus: u64,
}

/// The `cpu` line of /proc/stat text.
fn parse_machine(stat: &str) -> Result<MachineTicks> {
    let line = stat
        .lines()
        .find(|line| line.starts_with("cpu "))
        .context("no `cpu` line in /proc/stat")?;
    // cpu user nice system idle iowait irq softirq steal guest guest_nice
    let columns: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|ticks| ticks.parse().unwrap_or(0))
        .collect();
    if columns.len() < 8 {
        bail!("unexpected `cpu` line in /proc/stat: {line:?}");
    }
    let cpus = stat
        .lines()
        .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
        .count() as u64;
    Ok(MachineTicks {
        softirq: columns[6],
        idle: columns[3] + columns[4],
        cpus: cpus.max(1),
    })
}

/// utime + stime from /proc/<pid>/stat text.
fn parse_process_ticks(stat: &str) -> Result<u64> {
    // The command name may hold spaces and parentheses: fields count from
    // the last ')'. After it come field 3 (state) ... 14 (utime), 15 (stime).
    let (_, rest) = stat
        .rsplit_once(')')
        .with_context(|| format!("unexpected /proc/<pid>/stat: {stat:?}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |index: usize| -> Result<u64> {
        fields
            .get(index)
            .and_then(|value| value.parse().ok())
            .with_context(|| format!("unexpected /proc/<pid>/stat: {stat:?}"))
    };
    Ok(field(11)? + field(12)?)
}

/// The whole machine's CPU time so far, in ticks.
pub fn machine_ticks() -> Result<MachineTicks> {
    parse_machine(&read("/proc/stat")?)
}

/// User + system time of process `pid` (all its threads), in ticks.
pub fn process_ticks(pid: u32) -> Result<u64> {
    parse_process_ticks(&read(&format!("/proc/{pid}/stat"))?)
}

/// CPU time of process `pid` so far, all its threads (those that exited
/// included), ns: its `CLOCK_PROCESS_CPUTIME_ID` read from outside
/// (`clock_getcpuclockid`), which the scheduler keeps to the nanosecond,
/// where /proc's utime + stime count ticks of 10 ms.
pub fn process_cpu_ns(pid: u32) -> Result<u64> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid writes one clockid_t, which lives on our
    // stack.
    let status = unsafe { libc::clock_getcpuclockid(pid, &raw mut clock) };
    if status != 0 {
        return Err(std::io::Error::from_raw_os_error(status))
            .with_context(|| format!("the CPU clock of process {pid}"));
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which lives on our stack.
    if unsafe { libc::clock_gettime(clock, &raw mut now) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("reading the CPU clock of process {pid}"));
    }
    Ok(now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
}

/// CPU counters at one instant: the machine's and one process's.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    pub at: Instant,
    pub machine: MachineTicks,
    pub process_ticks: u64,
}

impl CpuSample {
    pub fn take(pid: u32) -> Result<Self> {
        let process_ticks = process_ticks(pid)?;
        let machine = machine_ticks()?;
        Ok(Self {
            at: Instant::now(),
            machine,
            process_ticks,
        })
    }

    /// What was spent from `self` to `later`.
    pub fn until(&self, later: &Self) -> CpuSpent {
        let hz = user_hz() as f64;
        let delta = |a: u64, b: u64| b.saturating_sub(a);
        let softirq_ticks = delta(self.machine.softirq, later.machine.softirq);
        let process_ticks = delta(self.process_ticks, later.process_ticks);
        let idle = delta(self.machine.idle, later.machine.idle);
        let wall_s = later.at.duration_since(self.at).as_secs_f64();
        let capacity = wall_s * hz * later.machine.cpus as f64;
        CpuSpent {
            wall_s,
            softirq_ticks,
            process_ticks,
            softirq_s: softirq_ticks as f64 / hz,
            process_s: process_ticks as f64 / hz,
            machine_busy: if capacity > 0.0 {
                (1.0 - idle as f64 / capacity).clamp(0.0, 1.0)
            } else {
                0.0
            },
        }
    }
}

/// CPU time spent between two samples.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuSpent {
    pub wall_s: f64,
    /// The whole machine's softirq time (tick-sampled).
    pub softirq_ticks: u64,
    /// The process's utime + stime.
    pub process_ticks: u64,
    pub softirq_s: f64,
    pub process_s: f64,
    /// Share of the machine's CPU time that was not idle (from the exact
    /// idle time): everything that ran, this bench and any other load.
    pub machine_busy: f64,
}

/// Today's date in UTC, `YYYY-MM-DD`.
pub fn utc_date() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    date_of(secs)
}

/// The UTC date of Unix time `secs` (Howard Hinnant's civil_from_days).
fn date_of(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The floor under a timed wake-up on this machine: a thread of the bench
/// that does nothing but sleep to an absolute `CLOCK_MONOTONIC` deadline
/// every `period` (`clock_nanosleep(TIMER_ABSTIME)`, 1 ns timer slack, as
/// the agent's sweep thread sleeps) for `window`, and the CPU time it took
/// per wake-up (its own `CLOCK_THREAD_CPUTIME_ID`), ns. Run beside a
/// measured agent, it says what any wake-up costs here, whatever it does.
pub fn bare_wake_up_cost(period: Duration, window: Duration) -> JoinHandle<Result<f64>> {
    std::thread::spawn(move || {
        let clock = |id: libc::clockid_t| -> Result<u64> {
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes one timespec on our stack.
            if unsafe { libc::clock_gettime(id, &raw mut now) } != 0 {
                return Err(std::io::Error::last_os_error()).context("clock_gettime");
            }
            Ok(now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
        };
        // SAFETY: PR_SET_TIMERSLACK takes one integer.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
        let wakes = (window.as_nanos() / period.as_nanos().max(1)) as u64;
        let cpu_start = clock(libc::CLOCK_THREAD_CPUTIME_ID)?;
        let mut deadline = clock(libc::CLOCK_MONOTONIC)?;
        for _ in 0..wakes {
            deadline += period.as_nanos() as u64;
            let at = libc::timespec {
                tv_sec: (deadline / 1_000_000_000) as libc::time_t,
                tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
            };
            // SAFETY: `at` is a valid timespec; no remainder is asked for.
            unsafe {
                libc::clock_nanosleep(
                    libc::CLOCK_MONOTONIC,
                    libc::TIMER_ABSTIME,
                    &raw const at,
                    std::ptr::null_mut(),
                )
            };
        }
        let cpu = clock(libc::CLOCK_THREAD_CPUTIME_ID)? - cpu_start;
        Ok(cpu as f64 / wakes.max(1) as f64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let stat = "cpu  305408 0 47171 267276 2598 0 832 79 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        let ticks = parse_machine(stat).unwrap();
        assert_eq!(ticks.softirq, 832);
        assert_eq!(ticks.idle, 267_276 + 2598);
        assert_eq!(ticks.cpus, 1);
        assert!(parse_machine("intr 1 2 3").is_err());
        assert!(parse_machine("cpu  1 2 3").is_err());
    }

    #[test]
    fn parses_process_stat_with_awkward_names() {
        let stat = "4242 (hb (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 3 0 1 \
                    2 3";
        assert_eq!(parse_process_ticks(stat).unwrap(), 1234 + 567);
        assert!(parse_process_ticks("4242 (hb) S 1").is_err());
    }

    #[test]
    fn reads_a_process_cpu_clock() {
        let pid = std::process::id();
        let before = process_cpu_ns(pid).unwrap();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        assert!(process_cpu_ns(pid).unwrap() > before, "{x}");
    }

    #[test]
    fn dates() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(951_782_400), "2000-02-29");
        assert_eq!(date_of(1_764_115_200), "2025-11-26");
    }
}
