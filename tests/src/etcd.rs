//! A real etcd cluster (Debian's `etcd-server`, installed by `cargo xtask
//! setup`) in the lab, for the monitor groups of issue 13: an
//! [`EtcdCluster`] of 1 to 5 members, member i running in its own
//! namespace `<prefix>-m<i>` (the namespace a group test's monitor i will
//! use), all joined by one bridge in the namespace `<prefix>-br`:
//!
//! ```text
//!  <prefix>-m1              <prefix>-br                 <prefix>-m2 ...
//!  etcd m1                  bridge <prefix>br           etcd m2
//!  <prefix>e1 198.19.0.1 ── <prefix>b1    <prefix>b2 ── <prefix>e2 198.19.0.2
//! ```
//!
//! Member i listens for clients on 198.19.0.i:2379 (and 127.0.0.1:2379 in
//! its namespace) and for peers on 198.19.0.i:2380. The subnet is not one
//! of the [`crate::Lab`]'s (198.18.i.0/24), so a monitor namespace may hold
//! both. Each member runs in the foreground as a [`ChildGuard`] with its own
//! data directory; on Drop every member is killed, then the namespaces and
//! the data directories are removed.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{ChildGuard, Error, NetNs, Result, Signal, TempDir, interrupt, lab::MAX_IFNAME};

/// Most members a cluster can have.
pub const MAX_MEMBERS: u8 = 5;
/// Port of etcd's client API.
pub const CLIENT_PORT: u16 = 2379;
/// Port of etcd's peer (Raft) traffic.
pub const PEER_PORT: u16 = 2380;
/// etcd's Raft heartbeat interval, ms (its default).
pub const HEARTBEAT_MS: u32 = 100;
/// etcd's election timeout, ms (its default): a follower that has not heard
/// its leader for this long starts an election, and a leader that has not
/// heard a quorum for this long steps down.
pub const ELECTION_TIMEOUT_MS: u32 = 1000;
/// How long [`EtcdCluster::start`] waits for a healthy cluster.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(30);
/// How long a stopped member may take to exit.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// Member `index`'s address: 198.19.0.`index`.
pub fn member_address(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, index)
}

/// One etcd member: its namespace, its link to the bridge, its process.
///
/// Field order is drop order: the process goes before its namespace.
#[derive(Debug)]
pub struct Member {
    process: Option<ChildGuard>,
    /// Member number, 1-based; its name is `m<index>`.
    pub index: u8,
    /// The member's namespace (`<prefix>-m<index>`).
    pub ns: NetNs,
    /// Its end of the veth pair to the bridge (`<prefix>e<index>`).
    pub interface: String,
    /// Its address on the bridge (198.19.0.`index`).
    pub address: Ipv4Addr,
    /// Its data directory (inside the cluster's temporary directory).
    pub data_dir: PathBuf,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Member {
    /// The member's name in the cluster (`m<index>`).
    pub fn name(&self) -> String {
        format!("m{}", self.index)
    }

    /// Its client URL, `http://198.19.0.i:2379`.
    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.address)
    }

    /// Its peer URL, `http://198.19.0.i:2380`.
    pub fn peer_url(&self) -> String {
        format!("http://{}:{PEER_PORT}", self.address)
    }

    /// Whether its process runs (not killed or stopped by the harness).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// The last `lines` lines of its output, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// An etcd cluster in the lab; everything it made is removed on Drop.
///
/// Field order is drop order: the members (processes, then namespaces),
/// then the bridge, then the data directories.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    bridge: NetNs,
    bridge_interface: String,
    prefix: String,
    dir: TempDir,
}

impl EtcdCluster {
    /// Build the network of `members` members (1 to [`MAX_MEMBERS`]) whose
    /// names start with `prefix`, start one etcd per member and wait (at most
    /// [`HEALTHY_WITHIN`]) until every member answers a quorum read.
    pub fn start(prefix: &str, members: u8) -> Result<Self> {
        if members == 0 || members > MAX_MEMBERS {
            return Err(Error::Invalid {
                what: "etcd member count",
                value: members.to_string(),
                reason: format!("must be 1 to {MAX_MEMBERS}"),
            });
        }
        let longest = format!("{prefix}br");
        if longest.len() > MAX_IFNAME || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::Invalid {
                what: "etcd lab prefix",
                value: prefix.to_owned(),
                reason: format!(
                    "must be ASCII letters and digits, and `{longest}` must fit in \
                     {MAX_IFNAME} characters"
                ),
            });
        }
        let dir = TempDir::new(&format!("hb-etcd-{prefix}"))?;
        let bridge = NetNs::create(&format!("{prefix}-br"))?;
        let bridge_interface = format!("{prefix}br");
        let mut cluster = Self {
            members: Vec::with_capacity(members.into()),
            bridge,
            bridge_interface,
            prefix: prefix.to_owned(),
            dir,
        };
        cluster
            .bridge
            .ip(["link", "add", &cluster.bridge_interface, "type", "bridge"])?;
        cluster
            .bridge
            .ip(["link", "set", &cluster.bridge_interface, "up"])?;
        for index in 1..=members {
            let member = cluster.add_member(index)?;
            cluster.members.push(member);
        }
        for index in 1..=members {
            cluster.spawn(index)?;
        }
        cluster.wait_healthy(HEALTHY_WITHIN)?;
        Ok(cluster)
    }

    fn add_member(&self, index: u8) -> Result<Member> {
        let ns = NetNs::create(&format!("{}-m{index}", self.prefix))?;
        let member = Member {
            process: None,
            index,
            interface: format!("{}e{index}", self.prefix),
            address: member_address(index),
            data_dir: self.dir.join(&format!("m{index}.etcd")),
            log: self.dir.join(&format!("m{index}.log")),
            ns,
        };
        let port = format!("{}b{index}", self.prefix);
        self.bridge.ip([
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            &member.interface,
            "netns",
            member.ns.name(),
        ])?;
        self.bridge
            .ip(["link", "set", &port, "master", &self.bridge_interface])?;
        self.bridge.ip(["link", "set", &port, "up"])?;
        let cidr = format!("{}/24", member.address);
        member
            .ns
            .ip(["addr", "add", &cidr, "dev", &member.interface])?;
        member.ns.ip(["link", "set", &member.interface, "up"])?;
        Ok(member)
    }

    /// `m1=http://198.19.0.1:2380,m2=...`: every member of the cluster.
    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|member| format!("{}={}", member.name(), member.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Start member `index`'s etcd in its namespace, in the foreground. With
    /// an existing data directory etcd ignores the `--initial-*` flags and
    /// rejoins with the state it had.
    fn spawn(&mut self, index: u8) -> Result<()> {
        let initial_cluster = self.initial_cluster();
        let token = self.prefix.clone();
        let member = self.member_mut(index);
        let mut command = member.ns.command("etcd");
        command
            .args(["--name", &member.name()])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .arg("--listen-client-urls")
            .arg(format!(
                "{},http://127.0.0.1:{CLIENT_PORT}",
                member.client_url()
            ))
            .args(["--advertise-client-urls", &member.client_url()])
            .args(["--listen-peer-urls", &member.peer_url()])
            .args(["--initial-advertise-peer-urls", &member.peer_url()])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", &token])
            .args(["--initial-cluster-state", "new"])
            .arg(format!("--heartbeat-interval={HEARTBEAT_MS}"))
            .arg(format!("--election-timeout={ELECTION_TIMEOUT_MS}"))
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        let name = format!("etcd {}", member.name());
        let process = ChildGuard::spawn_logged(name, &mut command, &member.log)?;
        member.process = Some(process);
        Ok(())
    }

    /// The prefix every name of this cluster starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The members, in index order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Member `index` (1-based). Panics if there is no such member.
    pub fn member(&self, index: u8) -> &Member {
        self.members
            .iter()
            .find(|member| member.index == index)
            .unwrap_or_else(|| panic!("etcd cluster {} has no member {index}", self.prefix))
    }

    fn member_mut(&mut self, index: u8) -> &mut Member {
        let prefix = self.prefix.clone();
        self.members
            .iter_mut()
            .find(|member| member.index == index)
            .unwrap_or_else(|| panic!("etcd cluster {prefix} has no member {index}"))
    }

    /// Every member's client URL (`http://198.19.0.i:2379`), in index
    /// order: the endpoints a client is given.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// SIGKILL member `index` (a crash) and reap it; its data directory
    /// stays, so [`Self::restart`] brings it back.
    pub fn kill(&mut self, index: u8) -> Result<()> {
        self.end(index, Signal::Kill)
    }

    /// SIGTERM member `index` (a clean stop) and wait for it to exit.
    pub fn stop(&mut self, index: u8) -> Result<()> {
        self.end(index, Signal::Term)
    }

    fn end(&mut self, index: u8, signal: Signal) -> Result<()> {
        let member = self.member_mut(index);
        if let Some(mut process) = member.process.take() {
            process.stop(signal, EXIT_WITHIN)?;
        }
        Ok(())
    }

    /// Start member `index` again on its data directory (after
    /// [`Self::kill`] or [`Self::stop`]); does not wait for it.
    pub fn restart(&mut self, index: u8) -> Result<()> {
        if self.member(index).is_running() {
            return Err(Error::Invalid {
                what: "etcd member to restart",
                value: self.member(index).name(),
                reason: "it is still running".to_owned(),
            });
        }
        self.spawn(index)
    }

    /// Cut member `index` off (its link to the bridge down): its process
    /// runs on, but neither peers nor clients outside its namespace reach
    /// it, and it reaches nobody.
    pub fn partition(&self, index: u8) -> Result<()> {
        let member = self.member(index);
        member
            .ns
            .ip(["link", "set", &member.interface, "down"])
            .map(drop)
    }

    /// Undo [`Self::partition`].
    pub fn heal(&self, index: u8) -> Result<()> {
        let member = self.member(index);
        member
            .ns
            .ip(["link", "set", &member.interface, "up"])
            .map(drop)
    }

    /// Whether member `index` answers `etcdctl endpoint health` on its own
    /// client URL, from its own namespace (a quorum read: false without a
    /// quorum), within about 2 s.
    pub fn is_healthy(&self, index: u8) -> bool {
        let member = self.member(index);
        let endpoint = format!("--endpoints={}", member.client_url());
        let mut command = member.ns.command("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .args([
                endpoint.as_str(),
                "--dial-timeout=1s",
                "--command-timeout=1s",
            ])
            .args(["endpoint", "health"]);
        crate::netns::run(&mut command).is_ok()
    }

    /// Wait (at most `within`) until every running member is healthy,
    /// failing early if one of them exits.
    pub fn wait_healthy(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            for member in &mut self.members {
                if let Some(process) = &mut member.process {
                    process.ensure_running()?;
                }
            }
            let unhealthy: Vec<String> = self
                .members
                .iter()
                .filter(|member| member.is_running() && !self.is_healthy(member.index))
                .map(Member::name)
                .collect();
            if unhealthy.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let logs = self
                    .members
                    .iter()
                    .map(|member| format!("--- {} ---\n{}", member.name(), member.log_tail(15)))
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(Error::Timeout {
                    what: format!("etcd cluster {} to be healthy", self.prefix),
                    after: within,
                    detail: format!("; unhealthy: {}\n{logs}", unhealthy.join(", ")),
                });
            }
            interrupt::sleep(Duration::from_millis(100))?;
        }
    }

    /// The cluster's temporary directory (data directories and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bridge namespace.
    pub fn bridge(&self) -> &NetNs {
        &self.bridge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_member_counts_and_prefixes_that_do_not_fit() {
        for members in [0, MAX_MEMBERS + 1] {
            let err = EtcdCluster::start("hb", members).unwrap_err();
            assert!(matches!(err, Error::Invalid { .. }), "{err}");
        }
        let err = EtcdCluster::start("averyverylongprefix", 3).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        let err = EtcdCluster::start("hb-x", 3).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
    }

    #[test]
    fn member_addresses_are_in_the_test_range() {
        for index in 1..=MAX_MEMBERS {
            let [a, b, ..] = member_address(index).octets();
            assert_eq!((a, b & 0xfe), (198, 18), "198.18.0.0/15");
        }
    }
}
