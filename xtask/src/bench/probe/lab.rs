//! The probe benches' lab: a monitor namespace (`hbprobe-mon`, 198.18.1.1,
//! the agent on the XDP datapath) and a responder namespace
//! (`hbprobe-n1`, 198.18.1.2) joined by a veth pair. The responder's kernel
//! answers ICMP echo for a whole block of addresses (`ip route add local
//! CIDR dev lo` for the CIDRs that cover it exactly); the monitor routes
//! the block via the responder. An nftables table in the responder counts
//! the echo requests it receives, drops those to the addresses in its set
//! `gone` (the nodes taken away) and, if asked, a random share of the rest
//! (`numgen random mod 100 < N`); it counts apart (not in `seen`) and
//! answers the requests of the bench's floor sender (`icmp id 0x4846`),
//! whose replies an nftables table of the monitor drops at its interface's
//! ingress.
//!
//! Where the CPU goes: on a veth pair the whole echo round trip (the
//! responder's kernel answering, the reply's receive with the XDP program)
//! would run as softirq inline in the agent's `sendmmsg` calls, in its CPU
//! clock. So the agent (and the floor sender) run pinned to CPU 0, and RPS
//! steers the responder's receive to the other CPUs, where the round trip
//! runs (the replies are sent from there): the agent's CPU clock holds
//! building and sending the probes, plus RPS's enqueue and an IPI per
//! batch, as a NIC's doorbell. (Threaded NAPI would move the work too, but
//! on a 2-CPU VM every wake-up of a NAPI thread costs an IPI, and under
//! load the threads lost packets or, at real-time priority, starved the
//! agent: measured, 94k instead of 100k probes/s, 0.13% lost, false downs.)
//! Namespaces, processes and pins go away on Drop, also on error
//! or Ctrl-C; deleting a namespace deletes its nftables table.

use std::{
    cell::Cell,
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use hb_tests::{
    ChildGuard, HEARTBEAT_PORT, Hb, Lab, Signal,
    config::{humantime, toml_string},
    netns,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bench::machine;

/// Name prefix of everything the probe benches create (namespaces
/// `hbprobe-mon` and `hbprobe-n1`, interfaces `hbprobem1`, `hbproben1`);
/// not `hbbench`, so that another bench's lab never removes this one.
pub const PREFIX: &str = "hbprobe";
/// The nftables table in the responder.
const TABLE: &str = "hbprobe";
/// How long the agent may take to answer its first `hb status`.
const AGENT_READY: Duration = Duration::from_secs(60);
/// How long the agent may take to exit after SIGTERM.
const AGENT_STOP: Duration = Duration::from_secs(60);

/// A block of consecutive IPv4 addresses: node `first_id + k` is probed at
/// `first + k`.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    pub first: Ipv4Addr,
    pub count: u32,
}

impl Block {
    /// The `k`-th address of the block.
    pub fn address(&self, k: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.first) + k)
    }

    pub fn last(&self) -> Ipv4Addr {
        self.address(self.count - 1)
    }

    /// The fewest CIDRs that cover exactly the block.
    pub fn cidrs(&self) -> Vec<(Ipv4Addr, u8)> {
        let mut start = u64::from(u32::from(self.first));
        let end = start + u64::from(self.count);
        let mut out = Vec::new();
        while start < end {
            // The largest aligned power of two that starts here and fits.
            let mut size = if start == 0 {
                1 << 32
            } else {
                1u64 << start.trailing_zeros()
            };
            while start + size > end {
                size >>= 1;
            }
            out.push((
                Ipv4Addr::from(start as u32),
                32 - size.trailing_zeros() as u8,
            ));
            start += size;
        }
        out
    }

    /// Whether `address` is in the block.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        let a = u32::from(address);
        let first = u32::from(self.first);
        a >= first && a - first < self.count
    }
}

/// The lab.
pub struct ProbeLab {
    lab: Lab,
    dir: PathBuf,
    pub block: Block,
    /// Numbers the files of successive agents.
    runs: Cell<u32>,
}

impl ProbeLab {
    /// Builds the lab for `block` (removing namespaces an interrupted run
    /// of this bench left behind) with the nftables table, dropping
    /// `loss_percent` of the echo requests at random (0: none).
    pub fn build(dir: PathBuf, block: Block, loss_percent: u32) -> Result<Self> {
        for name in netns::list_with_prefix(&format!("{PREFIX}-"))? {
            netns::remove(&name)?;
            println!("  removed the namespace {name}, left by an interrupted run");
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lab = Lab::build(PREFIX, 1)?;
        let this = Self {
            lab,
            dir,
            block,
            runs: Cell::new(0),
        };
        let node = this.lab.node(1);
        ensure!(
            !block.contains(node.address) && !block.contains(node.monitor_address),
            "the probed block {}..{} holds the link's addresses",
            block.first,
            block.last()
        );
        for (network, prefix) in block.cidrs() {
            let cidr = format!("{network}/{prefix}");
            node.ns.ip(["route", "add", "local", &cidr, "dev", "lo"])?;
            this.lab
                .monitor
                .ip(["route", "add", &cidr, "via", &node.address.to_string()])?;
        }
        this.nft(&ruleset(loss_percent))?;
        nft(
            &this.lab.monitor,
            &monitor_ruleset(&this.lab.node(1).monitor_interface),
        )?;
        // The responder's receive (and with it the whole round trip) on
        // every CPU but the agent's (see the module's doc).
        let interface = &this.lab.node(1).interface;
        this.lab.node(1).ns.exec(
            "sh",
            [
                "-c",
                &format!(
                    "echo {:x} > /sys/class/net/{interface}/queues/rx-0/rps_cpus",
                    rps_mask()?
                ),
            ],
        )?;
        Ok(this)
    }

    /// One line describing the lab.
    pub fn describe(&self) -> String {
        let node = self.lab.node(1);
        format!(
            "lab: {} ({}, {}, the agent) <-veth-> {} ({}, {}, answers ICMP echo for {}..{}, {} \
             local routes)",
            self.lab.monitor.name(),
            node.monitor_interface,
            node.monitor_address,
            node.ns.name(),
            node.interface,
            node.address,
            self.block.first,
            self.block.last(),
            self.block.cidrs().len()
        )
    }

    /// The monitor namespace's file, for a thread to enter.
    pub fn monitor_netns(&self) -> PathBuf {
        self.lab.monitor.path()
    }

    /// Runs `nft -f -` with `script` in the responder's namespace.
    fn nft(&self, script: &str) -> Result<()> {
        nft(&self.lab.node(1).ns, script)
    }

    /// The monitor's count of the floor sender's echo replies, which it
    /// drops at its interface's ingress (nftables, before IP).
    pub fn floor_replies(&self) -> Result<u64> {
        let output = self
            .lab
            .monitor
            .exec("nft", ["-j", "list", "counters", "table", "netdev", TABLE])?;
        let value: Value = serde_json::from_slice(&output.stdout)
            .context("`nft -j list counters` printed no JSON")?;
        value["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|item| {
                (item["counter"]["name"].as_str() == Some("floor_replies"))
                    .then(|| item["counter"]["packets"].as_u64())
                    .flatten()
            })
            .with_context(|| format!("no counter floor_replies in the monitor: {value}"))
    }
}

/// Runs `nft -f -` with `script` in `ns`.
fn nft(ns: &hb_tests::NetNs, script: &str) -> Result<()> {
    {
        let mut cmd = ns.command("nft");
        cmd.args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = netns::describe(&cmd);
        let mut child = cmd.spawn().with_context(|| {
            format!("running `{what}` (is nftables installed? `cargo xtask setup`)")
        })?;
        child
            .stdin
            .take()
            .context("nft's stdin")?
            .write_all(script.as_bytes())
            .with_context(|| format!("writing to `{what}`"))?;
        let output = child
            .wait_with_output()
            .with_context(|| format!("waiting for `{what}`"))?;
        if !output.status.success() {
            bail!(
                "`{what}` failed ({}): {}\nscript:\n{script}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

impl ProbeLab {
    /// Takes `addresses` away: the responder drops the echo requests to
    /// them from now on (one nftables transaction).
    pub fn take_away(&self, addresses: &[Ipv4Addr]) -> Result<()> {
        if addresses.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        self.nft(&format!(
            "add element ip {TABLE} gone {{ {} }}\n",
            list.join(", ")
        ))
    }

    /// Gives back every address taken away.
    pub fn give_back(&self) -> Result<()> {
        self.nft(&format!("flush set ip {TABLE} gone\n"))
    }

    /// The responder's echo-request counters: `seen` (every request that
    /// reached it but the floor sender's), `removed` (dropped as taken
    /// away), `lost` (dropped at random), `floor` (the floor sender's), in
    /// packets.
    pub fn counters(&self) -> Result<NftCounters> {
        let output = self
            .lab
            .node(1)
            .ns
            .exec("nft", ["-j", "list", "counters", "table", "ip", TABLE])?;
        let value: Value = serde_json::from_slice(&output.stdout)
            .context("`nft -j list counters` printed no JSON")?;
        let mut packets = BTreeMap::new();
        for item in value["nftables"].as_array().into_iter().flatten() {
            let counter = &item["counter"];
            if let (Some(name), Some(n)) = (counter["name"].as_str(), counter["packets"].as_u64()) {
                packets.insert(name.to_owned(), n);
            }
        }
        let get = |name: &str| {
            packets
                .get(name)
                .copied()
                .with_context(|| format!("no counter {name} in `nft -j list counters`: {value}"))
        };
        Ok(NftCounters {
            seen: get("seen")?,
            removed: get("removed")?,
            lost: get("lost")?,
            floor: get("floor")?,
        })
    }

    /// Both ends' veth drop counters, by name.
    pub fn veth_drops(&self) -> Result<BTreeMap<String, u64>> {
        let node = self.lab.node(1);
        let mut counters = BTreeMap::new();
        for (ns, interface, side) in [
            (&self.lab.monitor, &node.monitor_interface, "monitor"),
            (&node.ns, &node.interface, "responder"),
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
        Ok(counters)
    }

    /// Writes the configuration of `setup` and starts the agent in the
    /// monitor namespace; returns once it answers `hb status`.
    pub fn start_agent(&self, hb: &Hb, setup: &ProbeSetup) -> Result<ProbeAgent> {
        let run = self.runs.get() + 1;
        self.runs.set(run);
        let file = |ext: &str| self.dir.join(format!("agent-{run}.{ext}"));
        let (config, socket, state, events, log) = (
            file("toml"),
            file("sock"),
            file("state"),
            file("events.jsonl"),
            file("log"),
        );
        hb_tests::pins::remove(self.lab.instance())?;
        let text = setup.render(
            self.lab.instance(),
            &self.lab.node(1).monitor_interface,
            self.block,
            [&socket, &state, &events],
        );
        fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let mut guard = hb.spawn_in(
            &self.lab.monitor,
            "the agent (probing)",
            [OsStr::new("agent"), "--config".as_ref(), config.as_os_str()],
            &log,
        )?;
        hb.wait_until_ready(&socket, &mut guard, AGENT_READY)?;
        let comm = fs::read_to_string(format!("/proc/{}/comm", guard.pid())).unwrap_or_default();
        ensure!(
            comm.trim() == "hb",
            "the agent's pid {} is {comm:?}, not hb: its CPU time would be another process's",
            guard.pid()
        );
        pin_to_cpu0(guard.pid())?;
        Ok(ProbeAgent {
            hb: hb.clone(),
            guard,
            socket,
            events,
        })
    }
}

/// The CPUs the responder's receive is steered to (RPS): all but CPU 0.
fn rps_mask() -> Result<u64> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    ensure!(
        cpus >= 2,
        "the probe bench needs 2 CPUs: the agent on one, the emulated hosts' round trip on \
         another"
    );
    Ok(((1u64 << cpus.min(64)) - 1) & !1)
}

/// Pins every thread of process `pid` to CPU 0 (threads it starts later
/// inherit it).
pub fn pin_to_cpu0(pid: u32) -> Result<()> {
    for entry in fs::read_dir(format!("/proc/{pid}/task")).context("listing tasks")? {
        if let Some(tid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            pin_to_cpu0_thread(tid)?;
        }
    }
    Ok(())
}

/// Pins thread `tid` to CPU 0.
pub fn pin_to_cpu0_thread(tid: i32) -> Result<()> {
    // SAFETY: cpu_set_t is plain old data (all zeroes: no CPU); CPU_SET
    // writes within it; sched_setaffinity reads it.
    let status = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &raw const set)
    };
    if status != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning thread {tid} to CPU 0"));
    }
    Ok(())
}

/// The nftables table of the responder, `loss_percent` of the echo
/// requests dropped at random (0: no such rule).
fn ruleset(loss_percent: u32) -> String {
    let loss = if loss_percent > 0 {
        format!(
            "        icmp type echo-request numgen random mod 100 < {loss_percent} counter name \
             \"lost\" drop\n"
        )
    } else {
        String::new()
    };
    format!(
        "table ip {TABLE} {{\n\
         \x20   counter seen {{ }}\n\
         \x20   counter removed {{ }}\n\
         \x20   counter lost {{ }}\n\
         \x20   counter floor {{ }}\n\
         \x20   set gone {{ type ipv4_addr; }}\n\
         \x20   chain pre {{\n\
         \x20       type filter hook prerouting priority raw; policy accept;\n\
         \x20       icmp type echo-request icmp id {floor} counter name \"floor\" accept\n\
         \x20       icmp type echo-request counter name \"seen\"\n\
         \x20       icmp type echo-request ip daddr @gone counter name \"removed\" drop\n\
         {loss}\
         \x20   }}\n\
         }}\n",
        floor = super::icmp::FLOOR_IDENTIFIER
    )
}

/// The monitor's nftables table: at its interface's ingress (after XDP,
/// before IP), it drops the echo replies to the floor sender.
fn monitor_ruleset(interface: &str) -> String {
    format!(
        "table netdev {TABLE} {{\n\
         \x20   counter floor_replies {{ }}\n\
         \x20   chain ingress {{\n\
         \x20       type filter hook ingress device {interface} priority -500; policy accept;\n\
         \x20       icmp type echo-reply icmp id {floor} counter name \"floor_replies\" drop\n\
         \x20   }}\n\
         }}\n",
        floor = super::icmp::FLOOR_IDENTIFIER
    )
}

/// The responder's echo-request counters, packets.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct NftCounters {
    pub seen: u64,
    pub removed: u64,
    pub lost: u64,
    /// The floor sender's requests.
    pub floor: u64,
}

impl NftCounters {
    pub fn since(&self, before: &Self) -> Self {
        Self {
            seen: self.seen.saturating_sub(before.seen),
            removed: self.removed.saturating_sub(before.removed),
            lost: self.lost.saturating_sub(before.lost),
            floor: self.floor.saturating_sub(before.floor),
        }
    }
}

/// CPU time so far of each `ksoftirqd/N` kernel thread (softirq work the
/// kernel deferred out of the tasks that raised it), by thread id, ns.
pub fn ksoftirqd_ns() -> Result<BTreeMap<u32, u64>> {
    let mut threads = BTreeMap::new();
    for entry in fs::read_dir("/proc").context("listing /proc")? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !comm.starts_with("ksoftirqd/") {
            continue;
        }
        if let Some(ns) = schedstat_ns(&format!("/proc/{pid}/schedstat")) {
            threads.insert(pid, ns);
        }
    }
    Ok(threads)
}

/// The first field of a schedstat file: time on CPU, ns.
fn schedstat_ns(path: &str) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time the threads of `after` spent since `before` (a thread new in
/// `after` counts from 0), ns.
pub fn delta_ns(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(tid, &ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}

/// What the agent probes and how it judges.
#[derive(Debug, Clone)]
pub struct ProbeSetup {
    /// Nodes 1..=nodes, one `[[node_ranges]]` probed with ICMP at the
    /// block's addresses.
    pub nodes: u32,
    pub interval: Duration,
    pub timeout_multiplier: u32,
    pub sweep_period: Duration,
    pub confirm: bool,
    /// `probe.max_rate`.
    pub max_rate: u32,
}

impl ProbeSetup {
    /// The node table's size: the next power of two above the last id.
    pub fn max_nodes(&self) -> u32 {
        (self.nodes + 1).next_power_of_two()
    }

    pub fn timeout(&self) -> Duration {
        self.interval * self.timeout_multiplier
    }

    /// The configuration; `files` are the status socket, the state file
    /// and the event log.
    fn render(&self, instance: &str, interface: &str, block: Block, files: [&Path; 3]) -> String {
        let path = |p: &Path| toml_string(&p.to_string_lossy());
        let [socket, state, events] = files;
        format!(
            "# Written by cargo xtask bench (probe).\n\
             instance = {instance}\n\
             interfaces = [{interface}]\n\
             port = {HEARTBEAT_PORT}\n\
             datapath = \"xdp\"\n\
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
             [probe]\n\
             max_rate = {max_rate}\n\
             \n\
             [[node_ranges]]\n\
             first_id = 1\n\
             count = {nodes}\n\
             name_prefix = \"p\"\n\
             first_address = \"{first}\"\n\
             probe = \"icmp\"\n\
             interval = \"{interval}\"\n\
             probe_confirm = {confirm}\n",
            instance = toml_string(instance),
            interface = toml_string(interface),
            max_nodes = self.max_nodes(),
            socket = path(socket),
            state = path(state),
            events = path(events),
            interval = humantime(self.interval),
            multiplier = self.timeout_multiplier,
            sweep = humantime(self.sweep_period),
            max_rate = self.max_rate,
            nodes = self.nodes,
            first = block.first,
            confirm = self.confirm,
        )
    }
}

/// A running agent; killed on Drop unless stopped.
pub struct ProbeAgent {
    hb: Hb,
    guard: ChildGuard,
    socket: PathBuf,
    events: PathBuf,
}

impl ProbeAgent {
    /// `hb status --json` without the node list.
    pub fn status(&mut self) -> Result<Value> {
        self.guard.ensure_running()?;
        crate::bench::rig::status_json(&self.hb, &self.socket)
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// The agent's CPU time so far, ns (its CPU clock).
    pub fn cpu_ns(&mut self) -> Result<u64> {
        self.guard.ensure_running()?;
        machine::process_cpu_ns(self.guard.pid())
    }

    /// Each thread's CPU time so far, by (thread id, name).
    pub fn threads(&mut self) -> Result<BTreeMap<(u32, String), ThreadCpu>> {
        self.guard.ensure_running()?;
        let dir = format!("/proc/{}/task", self.guard.pid());
        let mut threads = BTreeMap::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
            let Some(tid) = entry
                .ok()
                .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
            else {
                continue;
            };
            let comm = fs::read_to_string(format!("{dir}/{tid}/comm")).unwrap_or_default();
            let stat = fs::read_to_string(format!("{dir}/{tid}/stat")).unwrap_or_default();
            if let (Some(ns), Some((utime, stime))) = (
                schedstat_ns(&format!("{dir}/{tid}/schedstat")),
                user_system_ticks(&stat),
            ) {
                threads.insert(
                    (tid, comm.trim().to_owned()),
                    ThreadCpu {
                        ns,
                        user_ticks: utime,
                        system_ticks: stime,
                    },
                );
            }
        }
        Ok(threads)
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

    /// The last lines of the agent's output.
    pub fn log_tail(&self, lines: usize) -> String {
        self.guard.log_tail(lines)
    }

    /// Every record of the agent's event log so far, as `T`.
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

/// A thread's CPU time so far: exact (schedstat), and split into user and
/// system time by the tick (/proc/.../stat, `USER_HZ` ticks).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadCpu {
    pub ns: u64,
    pub user_ticks: u64,
    pub system_ticks: u64,
}

/// utime and stime from /proc/<pid>/task/<tid>/stat text.
fn user_system_ticks(stat: &str) -> Option<(u64, u64)> {
    // Fields count from the last ')': 3 (state) ... 14 (utime), 15 (stime).
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_a_block_with_the_fewest_cidrs() {
        let block = Block {
            first: Ipv4Addr::new(198, 18, 64, 0),
            count: 100_000,
        };
        assert_eq!(block.last(), Ipv4Addr::new(198, 19, 198, 159));
        let cidrs: Vec<String> = block
            .cidrs()
            .iter()
            .map(|(a, p)| format!("{a}/{p}"))
            .collect();
        assert_eq!(
            cidrs,
            [
                "198.18.64.0/18",
                "198.18.128.0/17",
                "198.19.0.0/17",
                "198.19.128.0/18",
                "198.19.192.0/22",
                "198.19.196.0/23",
                "198.19.198.0/25",
                "198.19.198.128/27"
            ]
        );
        let total: u64 = block.cidrs().iter().map(|(_, p)| 1u64 << (32 - p)).sum();
        assert_eq!(total, 100_000);
        assert!(block.contains(Ipv4Addr::new(198, 19, 198, 159)));
        assert!(!block.contains(Ipv4Addr::new(198, 19, 198, 160)));
        assert!(!block.contains(Ipv4Addr::new(198, 18, 1, 1)));
        let one = Block {
            first: Ipv4Addr::new(198, 18, 64, 1),
            count: 1,
        };
        assert_eq!(one.cidrs(), [(Ipv4Addr::new(198, 18, 64, 1), 32)]);
    }

    #[test]
    fn renders_a_probing_config() {
        let setup = ProbeSetup {
            nodes: 100_000,
            interval: Duration::from_secs(1),
            timeout_multiplier: 3,
            sweep_period: Duration::from_millis(100),
            confirm: true,
            max_rate: 200_000,
        };
        assert_eq!(setup.max_nodes(), 131_072);
        let block = Block {
            first: Ipv4Addr::new(198, 18, 64, 0),
            count: 100_000,
        };
        let text = setup.render(
            "hbprobe",
            "hbprobem1",
            block,
            [
                Path::new("/t/a.sock"),
                Path::new("/t/a.state"),
                Path::new("/t/a.jsonl"),
            ],
        );
        for line in [
            "datapath = \"xdp\"\n",
            "first_address = \"198.18.64.0\"\n",
            "probe = \"icmp\"\n",
            "probe_confirm = true\n",
            "[probe]\nmax_rate = 200000\n",
            "interfaces = [\"hbprobem1\"]\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
        assert!(ruleset(5).contains("numgen random mod 100 < 5"));
        let stat = "42 (hb-prober) S 1 2 3 4 5 6 7 8 9 10 1234 567 0 0 20 0 3";
        assert_eq!(user_system_ticks(stat), Some((1234, 567)));
        assert!(!ruleset(0).contains("numgen"));
    }
}
