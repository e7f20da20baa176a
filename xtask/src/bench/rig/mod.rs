//! The test bed of the end-to-end phases: a [`Lab`] of one monitor namespace
//! and one sender namespace joined by a veth pair (`hbbench-mon` at
//! 198.18.1.1, `hbbench-n1` at 198.18.1.2), the agent running in the
//! monitor namespace with a generated configuration, and `hb-tools loadgen`
//! running in the sender namespace, always bounded by `--duration`, or
//! `hb send` as node 1 there ([`Rig::start_sender`]).
//! Everything is a guard: the namespaces, the processes and the files go
//! away on Drop, also on error or Ctrl-C.

mod agent;
mod load;

use std::{
    cell::Cell,
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hb_tests::{HEARTBEAT_PORT, Hb, Lab, Sched, Sender, netns};
use serde_json::Value;

use self::agent::AgentFiles;
#[cfg(test)]
pub use self::load::StoppedNode;
pub use self::{
    agent::{Agent, AgentSetup, EventRecord, EventTail, Realtime, status_json},
    load::{Faults, Load, LoadReport, Pace, RunningLoad},
};

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

    /// The monitor namespace's file, for a thread to enter (with
    /// [`netns::enter`]) to reach what listens there, such as the agent's
    /// HTTP API on 127.0.0.1.
    pub fn monitor_netns(&self) -> PathBuf {
        self.lab.monitor.path()
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
        self.start_agent_tuned(setup, None, extra)
    }

    /// As [`Rig::start_agent_with`], with the sweep thread at real-time
    /// priority and the memory locked if `realtime` says so.
    pub fn start_agent_tuned(
        &self,
        setup: &AgentSetup,
        realtime: Option<Realtime>,
        extra: &str,
    ) -> Result<Agent<'a>> {
        let run = self.next_run();
        let files = AgentFiles {
            config: self.dir.join(format!("agent-{run}.toml")),
            socket: self.dir.join(format!("agent-{run}.sock")),
            state: self.dir.join(format!("agent-{run}.state")),
            events: self.dir.join(format!("agent-{run}.events.jsonl")),
            log: self.dir.join(format!("agent-{run}.log")),
        };
        let defaults = realtime.map(|r| r.lines()).unwrap_or_default();
        let mut config = setup.render(&self.lab.monitor_interfaces(), &files, &defaults);
        // The lab's own instance, and each run from nothing pinned: an XDP
        // program a previous run left attached would take the heartbeats
        // of a socket run, and one of another size would be refused.
        hb_tests::pins::remove(self.lab.instance())?;
        config.insert_str(0, &format!("instance = \"{}\"\n", self.lab.instance()));
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

    /// Starts `hb send` as node 1 in the sender namespace, every `interval`
    /// without jitter, scheduled as `sched` says.
    pub fn start_sender(&self, interval: Duration, sched: &Sched) -> Result<Sender> {
        let run = self.next_run();
        let log = self.dir.join(format!("sender-{run}.log"));
        Ok(Sender::start(self.hb, &self.lab, 1, interval, sched, &log)?)
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
