//! The agent of a phase: its configuration, the running process and what
//! it reports (status, counters, CPU, event log).

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use hb_tests::{
    ChildGuard, HEARTBEAT_PORT, Hb, Signal,
    config::{humantime, toml_string},
    monotonic_ns, netns,
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;

use super::AGENT_STOP;
use crate::bench::machine::CpuSample;

/// The files of one agent.
pub(super) struct AgentFiles {
    pub(super) config: PathBuf,
    pub(super) socket: PathBuf,
    pub(super) state: PathBuf,
    pub(super) events: PathBuf,
    pub(super) log: PathBuf,
}

/// What the agent watches and how.
#[derive(Debug, Clone)]
pub struct AgentSetup {
    /// `xdp` or `socket`.
    pub datapath: &'static str,
    /// Nodes 1..=nodes, one `[[node_ranges]]`.
    pub nodes: u32,
    /// `defaults.interval`, and the range's `interval` (which wins over
    /// the interval the heartbeats advertise).
    pub interval: Duration,
    pub timeout_multiplier: u32,
    pub sweep_period: Duration,
}

impl AgentSetup {
    /// The node table's size: the next power of two above the last id.
    pub fn max_nodes(&self) -> u32 {
        (self.nodes + 1).next_power_of_two()
    }

    pub fn timeout(&self) -> Duration {
        self.interval * self.timeout_multiplier
    }

    /// The configuration: `defaults` holds more `[defaults]` lines (such
    /// as [`Realtime::lines`]), empty for none.
    pub(super) fn render(
        &self,
        interfaces: &[String],
        files: &AgentFiles,
        defaults: &str,
    ) -> String {
        let interfaces: Vec<String> = interfaces.iter().map(|name| toml_string(name)).collect();
        let path = |p: &Path| toml_string(&p.to_string_lossy());
        format!(
            "# Written by cargo xtask bench.\n\
             interfaces = [{interfaces}]\n\
             port = {HEARTBEAT_PORT}\n\
             datapath = \"{datapath}\"\n\
             max_nodes = {max_nodes}\n\
             status_socket = {socket}\n\
             state_file = {state}\n\
             event_log = {events}\n\
             \n\
             [defaults]\n\
             interval = \"{interval}\"\n\
             timeout_multiplier = {multiplier}\n\
             sweep_period = \"{sweep}\"\n\
             {defaults}\
             \n\
             [[node_ranges]]\n\
             first_id = 1\n\
             count = {nodes}\n\
             name_prefix = \"n\"\n\
             interval = \"{interval}\"\n",
            interfaces = interfaces.join(", "),
            datapath = self.datapath,
            max_nodes = self.max_nodes(),
            socket = path(&files.socket),
            state = path(&files.state),
            events = path(&files.events),
            interval = humantime(self.interval),
            multiplier = self.timeout_multiplier,
            sweep = humantime(self.sweep_period),
            nodes = self.nodes,
        )
    }
}

/// The sweep thread at real-time priority and the agent's memory locked:
/// `defaults.sweep_priority` (SCHED_FIFO 1..=99) and `defaults.lock_memory`
/// (mlockall).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Realtime {
    pub sweep_priority: u8,
    pub lock_memory: bool,
}

impl Realtime {
    /// The `[defaults]` lines.
    pub fn lines(&self) -> String {
        format!(
            "sweep_priority = {}\nlock_memory = {}\n",
            self.sweep_priority, self.lock_memory
        )
    }

    /// `sweep_priority 50, lock_memory`.
    pub fn describe(&self) -> String {
        format!(
            "sweep_priority {}{}",
            self.sweep_priority,
            if self.lock_memory {
                ", lock_memory"
            } else {
                ""
            }
        )
    }
}

/// A running agent; killed on Drop unless stopped.
pub struct Agent<'a> {
    pub(super) hb: &'a Hb,
    pub(super) guard: ChildGuard,
    pub(super) socket: PathBuf,
    pub(super) events: PathBuf,
}

impl Agent<'_> {
    /// `hb status --json` without the node list (every node still counted).
    pub fn status(&mut self) -> Result<Value> {
        self.guard.ensure_running()?;
        status_json(self.hb, &self.socket)
    }

    /// The datapath's counters, by name.
    pub fn counters(&mut self) -> Result<BTreeMap<String, u64>> {
        let status = self.status()?;
        serde_json::from_value(status["counters"].clone())
            .with_context(|| format!("no counters in `hb status --json`: {status}"))
    }

    /// The number of nodes in each state.
    pub fn states(&mut self) -> Result<BTreeMap<String, u64>> {
        let status = self.status()?;
        serde_json::from_value(status["states"].clone())
            .with_context(|| format!("no states in `hb status --json`: {status}"))
    }

    /// `Err` if the agent has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        Ok(self.guard.ensure_running()?)
    }

    /// The agent's CPU time so far, ns (exact: its CPU clock).
    pub fn cpu_ns(&mut self) -> Result<u64> {
        self.guard.ensure_running()?;
        crate::bench::machine::process_cpu_ns(self.guard.pid())
    }

    /// A reader of the event log's new records, from its current end.
    pub fn tail(&self) -> Result<EventTail> {
        let offset = match fs::metadata(&self.events) {
            Ok(meta) => meta.len(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(err) => {
                return Err(err).with_context(|| format!("reading {}", self.events.display()));
            }
        };
        Ok(EventTail {
            path: self.events.clone(),
            offset,
        })
    }

    /// The machine's softirq time and the agent's CPU time, now.
    pub fn sample(&mut self) -> Result<CpuSample> {
        self.guard.ensure_running()?;
        CpuSample::take(self.guard.pid())
    }

    /// SIGTERM, and wait for a clean exit (the event log is flushed).
    pub fn stop(&mut self) -> Result<()> {
        let status = self.guard.stop(Signal::Term, AGENT_STOP)?;
        if !status.success() {
            bail!(
                "the agent exited with {status}; its output:\n{}",
                self.guard.log_tail(30)
            );
        }
        Ok(())
    }

    /// Stops the agent (SIGSTOP) for `duration`, as a host that stalls it
    /// would, then lets it continue (SIGCONT, also when the wait is cut
    /// short by Ctrl-C). Returns `CLOCK_MONOTONIC` just before the stop and
    /// just after the continue, ns.
    pub fn stall(&mut self, duration: Duration) -> Result<(u64, u64)> {
        self.guard.ensure_running()?;
        let pid = libc::pid_t::try_from(self.guard.pid()).context("agent pid out of range")?;
        let signal = |number: libc::c_int, name: &str| -> Result<()> {
            // SAFETY: kill has no memory-safety preconditions; the pid is
            // our own child, not yet reaped (checked above), so not reused.
            if unsafe { libc::kill(pid, number) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("sending {name} to the agent (pid {pid})"));
            }
            Ok(())
        };
        let stopped = monotonic_ns();
        signal(libc::SIGSTOP, "SIGSTOP")?;
        let waited = hb_tests::interrupt::sleep(duration);
        signal(libc::SIGCONT, "SIGCONT")?;
        let continued = monotonic_ns();
        waited?;
        Ok((stopped, continued))
    }

    /// How many lines of the agent's output contain `needle`.
    pub fn log_lines_containing(&self, needle: &str) -> usize {
        self.guard
            .log_tail(usize::MAX)
            .lines()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Every record of the agent's event log so far.
    pub fn events(&self) -> Result<Vec<EventRecord>> {
        self.records()
    }

    /// Every record of the agent's event log so far, as `T` (to read more
    /// fields than [`EventRecord`] has).
    pub fn records<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        let text = match fs::read_to_string(&self.events) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(err) => {
                return Err(err).with_context(|| format!("reading {}", self.events.display()));
            }
        };
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).with_context(|| {
                    format!("{}: not an event record: {line}", self.events.display())
                })
            })
            .collect()
    }
}

/// Reads what the agent appends to its event log: each call returns the
/// records completed since the previous one (the agent flushes once per
/// sweep; a line without its newline yet waits for the next call).
pub struct EventTail {
    path: PathBuf,
    offset: u64,
}

impl EventTail {
    /// The records appended since the last call.
    pub fn read(&mut self) -> Result<Vec<EventRecord>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match fs::File::open(&self.path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => {
                return Err(err).with_context(|| format!("opening {}", self.path.display()));
            }
        };
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(self.offset))
            .and_then(|_| file.read_to_end(&mut bytes))
            .with_context(|| format!("reading {}", self.path.display()))?;
        let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        self.offset += end as u64 + 1;
        String::from_utf8_lossy(&bytes[..end])
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).with_context(|| {
                    format!("{}: not an event record: {line}", self.path.display())
                })
            })
            .collect()
    }
}

/// The fields of the agent's event log the bench reads
/// (`hb::event_log::EventRecord`).
#[derive(Debug, Clone, Deserialize)]
pub struct EventRecord {
    /// `CLOCK_MONOTONIC` when the sweep that found the change started.
    pub mono_ns: u64,
    pub event: String,
    pub node_id: u32,
}

/// `hb status --json --limit 0` of the agent behind `socket`: every count,
/// no node list.
pub fn status_json(hb: &Hb, socket: &Path) -> Result<Value> {
    let mut cmd = hb.command([
        OsStr::new("status"),
        "--socket".as_ref(),
        socket.as_os_str(),
        "--json".as_ref(),
        "--limit".as_ref(),
        "0".as_ref(),
    ]);
    let output = netns::run(&mut cmd)?;
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "`{}` printed invalid JSON: {}",
            netns::describe(&cmd),
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_config_hb_reads() {
        let setup = AgentSetup {
            datapath: "socket",
            nodes: 100_000,
            interval: Duration::from_secs(60),
            timeout_multiplier: 3,
            sweep_period: Duration::from_millis(100),
        };
        assert_eq!(setup.max_nodes(), 131_072);
        let files = AgentFiles {
            config: "/tmp/b/agent-1.toml".into(),
            socket: "/tmp/b/agent-1.sock".into(),
            state: "/tmp/b/agent-1.state".into(),
            events: "/tmp/b/agent 1.events.jsonl".into(),
            log: "/tmp/b/agent-1.log".into(),
        };
        let text = setup.render(&["hbbenchm1".to_owned()], &files, "");
        assert!(text.contains("datapath = \"socket\"\n"), "{text}");
        assert!(text.contains("max_nodes = 131072\n"), "{text}");
        assert!(
            text.contains("event_log = \"/tmp/b/agent 1.events.jsonl\"\n"),
            "{text}"
        );
        assert!(text.contains("count = 100000\n"), "{text}");
        assert!(text.contains("interval = \"60000ms\"\n"), "{text}");
        assert_eq!(setup.timeout(), Duration::from_secs(180));
        assert!(!text.contains("sweep_priority"), "{text}");
        let realtime = Realtime {
            sweep_priority: 50,
            lock_memory: true,
        };
        let text = setup.render(&["hbbenchm1".to_owned()], &files, &realtime.lines());
        assert!(
            text.contains(
                "sweep_period = \"100ms\"\nsweep_priority = 50\nlock_memory = true\n\n[[node_ranges]]"
            ),
            "{text}"
        );
        assert_eq!(realtime.describe(), "sweep_priority 50, lock_memory");
        let million = AgentSetup {
            nodes: 1_000_000,
            ..setup
        };
        assert_eq!(million.max_nodes(), 1_048_576);
    }
}
