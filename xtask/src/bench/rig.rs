//! The test bed of the end-to-end phases: a [`Lab`] of one monitor namespace
//! and one sender namespace joined by a veth pair (`hbbench-mon` at
//! 198.18.1.1, `hbbench-n1` at 198.18.1.2), the agent running in the
//! monitor namespace with a generated configuration, and `hb-tools loadgen`
//! running in the sender namespace, always bounded by `--duration`.
//! Everything is a guard: the namespaces, the processes and the files go
//! away on Drop, also on error or Ctrl-C.

use std::{
    cell::Cell,
    collections::{BTreeMap, HashMap},
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hb_tests::{
    ChildGuard, HEARTBEAT_PORT, Hb, Lab, Signal,
    config::{humantime, toml_string},
    netns,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::machine::CpuSample;

/// Name prefix of everything the bench creates (namespaces `hbbench-*`,
/// interfaces `hbbench?1`).
pub const PREFIX: &str = "hbbench";
/// How long the agent may take to answer its first `hb status`.
const AGENT_READY: Duration = Duration::from_secs(60);
/// How long the agent may take to exit after SIGTERM (it saves the state
/// of every node first).
const AGENT_STOP: Duration = Duration::from_secs(60);
/// A load generator may overrun its `--duration` by this much (start-up,
/// the report) before it is killed and the step fails.
const LOAD_GRACE: Duration = Duration::from_secs(30);

/// The lab, the hb and hb-tools binaries and a directory for the files of
/// one phase.
pub struct Rig<'a> {
    hb: &'a Hb,
    tools: &'a Hb,
    dir: PathBuf,
    lab: Lab,
    /// Numbers the files of successive agents and loads.
    runs: Cell<u32>,
}

impl<'a> Rig<'a> {
    /// Builds the lab (removing namespaces an interrupted run left behind)
    /// and creates `dir`.
    pub fn build(hb: &'a Hb, tools: &'a Hb, dir: PathBuf) -> Result<Self> {
        for name in netns::list_with_prefix(&format!("{PREFIX}-"))? {
            netns::remove(&name)?;
            println!("  removed the namespace {name}, left by an interrupted run");
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lab = Lab::build(PREFIX, 1)?;
        Ok(Self {
            hb,
            tools,
            dir,
            lab,
            runs: Cell::new(0),
        })
    }

    /// Where the load generator sends: the monitor's end of the veth pair.
    pub fn target(&self) -> String {
        format!("{}:{HEARTBEAT_PORT}", self.lab.node(1).monitor_address)
    }

    /// One line describing the lab.
    pub fn describe(&self) -> String {
        let node = self.lab.node(1);
        format!(
            "lab: {} ({}, {}) <-veth-> {} ({}, {})",
            node.ns.name(),
            node.interface,
            node.address,
            self.lab.monitor.name(),
            node.monitor_interface,
            node.monitor_address
        )
    }

    fn next_run(&self) -> u32 {
        let run = self.runs.get() + 1;
        self.runs.set(run);
        run
    }

    /// Writes a configuration for `setup` and starts the agent in the
    /// monitor namespace; returns once it answers `hb status`.
    pub fn start_agent(&self, setup: &AgentSetup) -> Result<Agent<'a>> {
        self.start_agent_with(setup, "")
    }

    /// As [`Rig::start_agent`], with `extra` (TOML: whole tables, such as a
    /// `[detector]` section) appended to the configuration.
    pub fn start_agent_with(&self, setup: &AgentSetup, extra: &str) -> Result<Agent<'a>> {
        let run = self.next_run();
        let files = AgentFiles {
            config: self.dir.join(format!("agent-{run}.toml")),
            socket: self.dir.join(format!("agent-{run}.sock")),
            state: self.dir.join(format!("agent-{run}.state.json")),
            events: self.dir.join(format!("agent-{run}.events.jsonl")),
            log: self.dir.join(format!("agent-{run}.log")),
        };
        let mut config = setup.render(&self.lab.monitor_interfaces(), &files);
        if !extra.is_empty() {
            config.push('\n');
            config += extra;
        }
        fs::write(&files.config, config)
            .with_context(|| format!("writing {}", files.config.display()))?;
        let mut guard = self.hb.spawn_in(
            &self.lab.monitor,
            &format!("the agent ({} datapath)", setup.datapath),
            [
                OsStr::new("agent"),
                "--config".as_ref(),
                files.config.as_os_str(),
            ],
            &files.log,
        )?;
        self.hb
            .wait_until_ready(&files.socket, &mut guard, AGENT_READY)?;
        Ok(Agent {
            hb: self.hb,
            guard,
            socket: files.socket,
            events: files.events,
        })
    }

    /// Starts `hb-tools loadgen` in the sender namespace.
    pub fn start_load(&self, load: &Load) -> Result<RunningLoad> {
        let run = self.next_run();
        let report = self.dir.join(format!("load-{run}.json"));
        let log = self.dir.join(format!("load-{run}.log"));
        let args = load.args(&self.target(), &report);
        let guard = self
            .tools
            .spawn_in(&self.lab.node(1).ns, "the load generator", &args, &log)?;
        Ok(RunningLoad {
            guard,
            report,
            started: Instant::now(),
            deadline: Instant::now() + load.duration + LOAD_GRACE,
        })
    }

    /// Runs `hb-tools loadgen` to its end; returns its report.
    pub fn run_load(&self, load: &Load) -> Result<LoadReport> {
        self.start_load(load)?.finish()
    }

    /// Gives the monitor's end of the veth pair a NIC-like receive path of
    /// its own, the same for both datapaths: GRO on, so veth receives
    /// through NAPI also without XDP (and TSO off on the sender's end, or
    /// veth bypasses NAPI for socket traffic), and that NAPI threaded, so
    /// the kernel's receive work runs in a `napi/<interface>-*` thread
    /// whose CPU time is exact (see [`Rig::receive_thread_ns`]) instead of
    /// inline in the sender's system calls, where tick sampling cannot
    /// tell it apart.
    pub fn thread_receive_path(&self) -> Result<()> {
        let node = self.lab.node(1);
        ethtool_set(
            self.lab.monitor.name(),
            &node.monitor_interface,
            ETHTOOL_SGRO,
            true,
        )?;
        ethtool_set(node.ns.name(), &node.interface, ETHTOOL_STSO, false)?;
        let threaded = format!("/sys/class/net/{}/threaded", node.monitor_interface);
        // `ip netns exec` mounts the namespace's own /sys.
        self.lab
            .monitor
            .exec("sh", ["-c", &format!("echo 1 > {threaded}")])?;
        Ok(())
    }

    /// Where packets were dropped so far: both ends of the veth pair and
    /// the monitor's UDP stack, by counter name.
    pub fn drop_counters(&self) -> Result<BTreeMap<String, u64>> {
        let node = self.lab.node(1);
        let mut counters = BTreeMap::new();
        for (ns, interface, side) in [
            (&self.lab.monitor, &node.monitor_interface, "monitor"),
            (&node.ns, &node.interface, "sender"),
        ] {
            let output = ns.ip(["-s", "-j", "link", "show", "dev", interface])?;
            let links: Value = serde_json::from_slice(&output.stdout)
                .with_context(|| format!("`ip -s -j link show dev {interface}`: not JSON"))?;
            for direction in ["rx", "tx"] {
                let dropped = links[0]["stats64"][direction]["dropped"]
                    .as_u64()
                    .with_context(|| format!("no {direction} drops for {interface}: {links}"))?;
                counters.insert(format!("{side}_veth_{direction}_dropped"), dropped);
            }
        }
        let snmp = self.lab.monitor.exec("cat", ["/proc/net/snmp"])?;
        let snmp = String::from_utf8_lossy(&snmp.stdout);
        let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
        if let [names, values] = udp[..] {
            for (name, value) in names
                .split_whitespace()
                .zip(values.split_whitespace())
                .skip(1)
            {
                // InErrors would count RcvbufErrors and MemErrors again.
                if matches!(
                    name,
                    "RcvbufErrors" | "MemErrors" | "NoPorts" | "InCsumErrors"
                ) {
                    counters.insert(format!("monitor_udp_{name}"), value.parse().unwrap_or(0));
                }
            }
        }
        Ok(counters)
    }

    /// Runs the monitor interface's NAPI threads at real-time priority
    /// (SCHED_FIFO 50), as the softirq they replace would preempt ordinary
    /// tasks: other load on the machine does not starve the receive path.
    pub fn prioritize_receive_threads(&self) -> Result<()> {
        let threads = self.receive_thread_ns()?;
        if threads.is_empty() {
            bail!(
                "no napi/{}-* thread: threaded NAPI is not in use",
                self.lab.node(1).monitor_interface
            );
        }
        for &tid in threads.keys() {
            let param = libc::sched_param { sched_priority: 50 };
            let pid = libc::pid_t::try_from(tid).context("thread id out of range")?;
            // SAFETY: sched_setscheduler reads a valid sched_param; the
            // thread is a kernel thread of our own interface.
            if unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &raw const param) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("raising the priority of NAPI thread {tid}"));
            }
        }
        Ok(())
    }

    /// CPU time so far of each NAPI thread of the monitor's interface, by
    /// thread id, in ns (`/proc/<tid>/schedstat`).
    pub fn receive_thread_ns(&self) -> Result<BTreeMap<u32, u64>> {
        let prefix = format!("napi/{}-", self.lab.node(1).monitor_interface);
        let mut threads = BTreeMap::new();
        for entry in fs::read_dir("/proc").context("listing /proc")? {
            let Some(pid) = entry
                .ok()
                .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
            else {
                continue;
            };
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if !comm.trim_end().starts_with(&prefix) {
                continue;
            }
            let schedstat =
                fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
            if let Some(ns) = schedstat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse().ok())
            {
                threads.insert(pid, ns);
            }
        }
        Ok(threads)
    }
}

/// CPU time the threads of `after` spent since `before` (a thread new in
/// `after` counts from 0), ns.
pub fn threads_delta_ns(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(tid, &ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}

/// `ETHTOOL_SGRO`: set generic receive offload (legacy ethtool ioctl).
const ETHTOOL_SGRO: u32 = 0x2c;
/// `ETHTOOL_STSO`: set TCP segmentation offload (all TSO features).
const ETHTOOL_STSO: u32 = 0x1f;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Sets one ethtool flag of `interface` in the network namespace `netns`,
/// from a thread that enters that namespace (no ethtool binary needed).
fn ethtool_set(netns: &str, interface: &str, cmd: u32, on: bool) -> Result<()> {
    use std::os::fd::AsRawFd;
    let what = format!("setting ethtool flag {cmd:#x} of {interface} in {netns}");
    let path = format!("/var/run/netns/{netns}");
    let name = interface.as_bytes().to_vec();
    let outcome = std::thread::spawn(move || -> std::io::Result<()> {
        let ns = fs::File::open(&path)?;
        // SAFETY: setns takes an open namespace file descriptor; it moves
        // only this short-lived thread into the namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        let mut value = EthtoolValue {
            cmd,
            data: u32::from(on),
        };
        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= request.ifr_name.len() {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        for (slot, &byte) in request.ifr_name.iter_mut().zip(&name) {
            *slot = byte as libc::c_char;
        }
        request.ifr_ifru.ifru_data = (&raw mut value).cast();
        // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it
        // points to, both alive and correctly laid out for the call.
        if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &raw mut request) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
    .join();
    match outcome {
        Ok(result) => result.with_context(|| what),
        Err(_) => bail!("{what}: the thread panicked"),
    }
}

/// The files of one agent.
struct AgentFiles {
    config: PathBuf,
    socket: PathBuf,
    state: PathBuf,
    events: PathBuf,
    log: PathBuf,
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

    fn render(&self, interfaces: &[String], files: &AgentFiles) -> String {
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

/// A running agent; killed on Drop unless stopped.
pub struct Agent<'a> {
    hb: &'a Hb,
    guard: ChildGuard,
    socket: PathBuf,
    events: PathBuf,
}

impl Agent<'_> {
    /// `hb status --json` without the node list (every node still counted).
    pub fn status(&mut self) -> Result<Value> {
        self.guard.ensure_running()?;
        let mut cmd = self.hb.command([
            OsStr::new("status"),
            "--socket".as_ref(),
            self.socket.as_os_str(),
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

/// `CLOCK_MONOTONIC` now, ns: the clock of the event log and of the load
/// generator's report.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which lives on our stack.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    assert_eq!(status, 0, "CLOCK_MONOTONIC is always readable");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
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

/// How fast the load generator's fleet beats.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Aggregate heartbeats per second.
    Rate(f64),
    /// Every node once per interval.
    Interval(Duration),
}

/// One bounded run of `hb-tools loadgen`.
#[derive(Debug, Clone)]
pub struct Load {
    pub nodes: u32,
    pub pace: Pace,
    pub duration: Duration,
    /// `--stop-fraction` and `--stop-after`.
    pub stop: Option<(f64, Duration)>,
    /// One datagram per heartbeat on the wire (`--no-gso`), as many real
    /// nodes would send them. With UDP GSO (the load generator's default,
    /// for higher rates) one `sendmmsg` message carries up to 64 heartbeats
    /// through the sender's stack and over veth as one super-packet, which
    /// the receiving UDP stack segments only at the socket: it makes the
    /// socket datapath look cheaper than it is with real senders.
    pub one_datagram_per_packet: bool,
    /// Faults injected into the running nodes' heartbeats.
    pub faults: Faults,
}

/// Faults `hb-tools loadgen` injects into the heartbeats of the running nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// `--loss`: heartbeats lost at random, percent.
    pub loss_percent: f64,
    /// `--burst-loss`: heartbeats that start a burst of 2 or 3 lost ones,
    /// percent.
    pub burst_loss_percent: f64,
    /// `--pause-every` and `--pause-for`: each node pauses at random
    /// moments, on average once per the first, for the second.
    pub pause: Option<(Duration, Duration)>,
}

impl Faults {
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.loss_percent > 0.0 {
            args.extend(["--loss".to_owned(), format!("{}", self.loss_percent)]);
        }
        if self.burst_loss_percent > 0.0 {
            args.extend([
                "--burst-loss".to_owned(),
                format!("{}", self.burst_loss_percent),
            ]);
        }
        if let Some((every, length)) = self.pause {
            args.extend([
                "--pause-every".to_owned(),
                humantime(every),
                "--pause-for".to_owned(),
                humantime(length),
            ]);
        }
        args
    }
}

impl Load {
    pub fn new(nodes: u32, pace: Pace, duration: Duration) -> Self {
        Self {
            nodes,
            pace,
            duration,
            stop: None,
            one_datagram_per_packet: false,
            faults: Faults::default(),
        }
    }

    /// The same load, sent one datagram per packet (see the field).
    pub fn one_datagram_per_packet(self) -> Self {
        Self {
            one_datagram_per_packet: true,
            ..self
        }
    }

    fn args(&self, target: &str, report: &Path) -> Vec<String> {
        let mut args: Vec<String> = [
            "loadgen",
            "--nodes",
            &self.nodes.to_string(),
            "--to",
            target,
            "--duration",
            &humantime(self.duration),
            "--seed",
            "1",
            "--report",
            &report.to_string_lossy(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        match self.pace {
            Pace::Rate(rate) => args.extend(["--rate".to_owned(), format!("{rate}")]),
            Pace::Interval(interval) => {
                args.extend(["--interval".to_owned(), humantime(interval)]);
            }
        }
        if self.one_datagram_per_packet {
            args.push("--no-gso".to_owned());
        }
        if let Some((fraction, after)) = self.stop {
            args.extend([
                "--stop-fraction".to_owned(),
                format!("{fraction}"),
                "--stop-after".to_owned(),
                humantime(after),
            ]);
        }
        args.extend(self.faults.args());
        args
    }
}

/// A load generator that is running.
pub struct RunningLoad {
    guard: ChildGuard,
    report: PathBuf,
    started: Instant,
    deadline: Instant,
}

impl RunningLoad {
    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits for the end of the run (bounded) and reads the report.
    pub fn finish(mut self) -> Result<LoadReport> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let Some(status) = self.guard.wait_timeout(left)? else {
            bail!(
                "the load generator ran past its duration by more than {LOAD_GRACE:?}; its output:\n{}",
                self.guard.log_tail(20)
            );
        };
        if !status.success() {
            bail!(
                "the load generator exited with {status}; its output:\n{}",
                self.guard.log_tail(20)
            );
        }
        let text = fs::read(&self.report)
            .with_context(|| format!("reading the load report {}", self.report.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("parsing the load report {}", self.report.display()))
    }
}

/// The fields of `hb-tools loadgen --report` the bench reads
/// (`hb_tools::loadgen::Report`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LoadReport {
    pub nodes: u32,
    pub interval_ns: u64,
    /// Requested heartbeats per second.
    pub rate: f64,
    /// Heartbeats sent per second of the run.
    pub achieved_rate: f64,
    pub heartbeats: u64,
    /// Datagrams the kernel accepted.
    pub sent: u64,
    pub send_errors: u64,
    pub unsent: u64,
    pub started_mono_ns: u64,
    pub ended_mono_ns: u64,
    pub stop_mono_ns: Option<u64>,
    pub max_lag_ns: u64,
    pub late_batches: u64,
    pub interrupted: bool,
    #[serde(skip_serializing)]
    pub stopped: Vec<StoppedNode>,
    /// The faults injected (absent from older reports: all zero).
    #[serde(default)]
    pub faults: FaultReport,
}

/// The faults a load injected (`hb_tools::loadgen::FaultReport`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct FaultReport {
    pub loss_percent: f64,
    pub burst_loss_percent: f64,
    pub pause_every_ns: Option<u64>,
    pub pause_for_ns: Option<u64>,
    /// Heartbeats `--loss` dropped.
    pub lost_random: u64,
    /// Heartbeats lost in bursts.
    pub lost_in_bursts: u64,
    /// Bursts started.
    pub bursts: u64,
    /// Pauses started.
    pub pauses: u64,
    /// Their total length, ns.
    pub paused_ns: u64,
}

impl LoadReport {
    /// Fails if the run was cut short.
    pub fn ensure_complete(&self) -> Result<()> {
        if self.interrupted {
            bail!("the load generator was interrupted");
        }
        Ok(())
    }

    /// Each stopped node's last heartbeat, `CLOCK_MONOTONIC` ns (none: it
    /// never sent one).
    pub fn last_sent_by_node(&self) -> HashMap<u32, Option<u64>> {
        self.stopped
            .iter()
            .map(|s| (s.id, s.last_sent_mono_ns))
            .collect()
    }
}

/// A node the load generator stopped (`hb_tools::loadgen::StoppedNode`).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct StoppedNode {
    pub id: u32,
    pub last_sent_mono_ns: Option<u64>,
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
            state: "/tmp/b/agent-1.state.json".into(),
            events: "/tmp/b/agent 1.events.jsonl".into(),
            log: "/tmp/b/agent-1.log".into(),
        };
        let text = setup.render(&["hbbenchm1".to_owned()], &files);
        assert!(text.contains("datapath = \"socket\"\n"), "{text}");
        assert!(text.contains("max_nodes = 131072\n"), "{text}");
        assert!(
            text.contains("event_log = \"/tmp/b/agent 1.events.jsonl\"\n"),
            "{text}"
        );
        assert!(text.contains("count = 100000\n"), "{text}");
        assert!(text.contains("interval = \"60000ms\"\n"), "{text}");
        assert_eq!(setup.timeout(), Duration::from_secs(180));
        let million = AgentSetup {
            nodes: 1_000_000,
            ..setup
        };
        assert_eq!(million.max_nodes(), 1_048_576);
    }

    #[test]
    fn loadgen_arguments() {
        let load = Load {
            stop: Some((0.01, Duration::from_secs(3))),
            ..Load::new(
                10_000,
                Pace::Interval(Duration::from_millis(100)),
                Duration::from_secs(2),
            )
        };
        let args = load
            .args("198.18.1.1:7979", Path::new("/tmp/r.json"))
            .join(" ");
        assert_eq!(
            args,
            "loadgen --nodes 10000 --to 198.18.1.1:7979 --duration 2000ms --seed 1 --report \
             /tmp/r.json --interval 100ms --stop-fraction 0.01 --stop-after 3000ms"
        );
        let rate = Load::new(100_000, Pace::Rate(1_600_000.0), Duration::from_secs(3));
        assert!(
            rate.args("x:1", Path::new("r"))
                .join(" ")
                .ends_with("--rate 1600000")
        );
    }

    #[test]
    fn loadgen_fault_arguments() {
        let load = Load {
            faults: Faults {
                loss_percent: 5.0,
                burst_loss_percent: 2.5,
                pause: Some((Duration::from_secs(10), Duration::from_millis(500))),
            },
            ..Load::new(
                1000,
                Pace::Interval(Duration::from_millis(100)),
                Duration::from_secs(2),
            )
        };
        let args = load.args("x:1", Path::new("r")).join(" ");
        assert!(
            args.ends_with(
                "--interval 100ms --loss 5 --burst-loss 2.5 --pause-every 10000ms --pause-for \
                 500ms"
            ),
            "{args}"
        );
        let report: LoadReport = serde_json::from_str(
            r#"{"nodes":2,"interval_ns":1,"rate":2.0,"achieved_rate":1.9,"heartbeats":4,
            "sent":4,"send_errors":0,"unsent":0,"started_mono_ns":10,"ended_mono_ns":20,
            "stop_mono_ns":null,"max_lag_ns":3,"late_batches":0,"interrupted":false,"stopped":[],
            "faults":{"loss_percent":5.0,"lost_random":7,"pause_every_ns":null}}"#,
        )
        .unwrap();
        assert_eq!(report.faults.lost_random, 7);
        assert_eq!(report.faults.pauses, 0);
    }

    #[test]
    fn reads_a_loadgen_report() {
        let json = r#"{"nodes":2,"first_id":1,"targets":["198.18.1.1:7979"],"interval_ns":1000000000,
            "rate":2.0,"achieved_rate":1.9,"incarnation":5,"heartbeats":4,"sent":4,"send_errors":0,
            "unsent":0,"leaves_sent":0,"started_mono_ns":10,"ended_mono_ns":2000000010,
            "stop_mono_ns":null,"max_lag_ns":3,"late_batches":0,"interrupted":false,
            "stopped":[{"id":2,"last_sent_mono_ns":500},{"id":3,"last_sent_mono_ns":null}]}"#;
        let report: LoadReport = serde_json::from_str(json).unwrap();
        assert_eq!(report.sent, 4);
        assert_eq!(report.stopped[0].last_sent_mono_ns, Some(500));
        assert_eq!(report.stopped[1].last_sent_mono_ns, None);
        let event: EventRecord = serde_json::from_str(
            r#"{"mono_ns":123,"unix_ms":1,"event":"down","node_id":2,"node":"n2","previous":"up","since_last_heartbeat_ms":1620}"#,
        )
        .unwrap();
        assert_eq!(
            (event.mono_ns, event.event.as_str(), event.node_id),
            (123, "down", 2)
        );
    }
}
