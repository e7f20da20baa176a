//! A [`Lab`]: one monitor namespace and N node namespaces, node i wired to
//! the monitor by its own veth pair on 198.18.i.0/24 (monitor 198.18.i.1,
//! node 198.18.i.2). Namespaces are isolated, so every lab may reuse the
//! same addresses; only the namespace names must be unique, which
//! [`unique_prefix`] takes care of.

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{Error, NetNs, Result, pins::PinGuard};

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;
/// Most nodes a lab can have (one /24 of 198.18.0.0/16 each).
pub const MAX_NODES: u8 = 254;

/// A prefix unique to this process and call: `hb<pid>t<counter>`, short
/// enough for interface names `<prefix>m<i>`.
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "hb{}t{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// One node of a lab and its link to the monitor.
#[derive(Debug)]
pub struct Node {
    /// Node number, 1-based; also its third address octet and, by
    /// convention, its hb node id.
    pub index: u8,
    /// The node's own namespace.
    pub ns: NetNs,
    /// Name of the veth end inside the node namespace (`<prefix>n<i>`).
    pub interface: String,
    /// The node's address (198.18.i.2).
    pub address: Ipv4Addr,
    /// Name of the veth end inside the monitor namespace (`<prefix>m<i>`).
    pub monitor_interface: String,
    /// The monitor's address on this link (198.18.i.1).
    pub monitor_address: Ipv4Addr,
}

/// A monitor namespace wired to node namespaces; removed on Drop, with the
/// pins of the lab's agent instance ([`Lab::instance`]).
///
/// Field order matters: the pins go first (detaching the program), then
/// the nodes, then the monitor.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    pins: PinGuard,
    /// The nodes, in index order (node i is `nodes[i - 1]`).
    pub nodes: Vec<Node>,
    /// The monitor's namespace.
    pub monitor: NetNs,
}

impl Lab {
    /// Build a lab of `nodes` nodes whose names start with `prefix`:
    /// namespaces `<prefix>-mon` and `<prefix>-n<i>`, interfaces
    /// `<prefix>m<i>` (monitor side) and `<prefix>n<i>` (node side).
    pub fn build(prefix: &str, nodes: u8) -> Result<Self> {
        if nodes == 0 || nodes > MAX_NODES {
            return Err(Error::Invalid {
                what: "node count",
                value: nodes.to_string(),
                reason: format!("must be 1 to {MAX_NODES}"),
            });
        }
        let longest = format!("{prefix}m{nodes}");
        if longest.len() > MAX_IFNAME || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::Invalid {
                what: "lab prefix",
                value: prefix.to_owned(),
                reason: format!(
                    "must be ASCII letters and digits, and `{longest}` must fit in \
                     {MAX_IFNAME} characters"
                ),
            });
        }
        crate::pins::ensure_bpffs()?;
        let monitor = NetNs::create(&format!("{prefix}-mon"))?;
        let mut lab = Self {
            prefix: prefix.to_owned(),
            pins: PinGuard::new(prefix),
            nodes: Vec::with_capacity(nodes.into()),
            monitor,
        };
        for index in 1..=nodes {
            let node = lab.add_node(index)?;
            lab.nodes.push(node);
        }
        Ok(lab)
    }

    fn add_node(&self, index: u8) -> Result<Node> {
        let ns = NetNs::create(&format!("{}-n{index}", self.prefix))?;
        let node = Node {
            index,
            interface: format!("{}n{index}", self.prefix),
            address: Ipv4Addr::new(198, 18, index, 2),
            monitor_interface: format!("{}m{index}", self.prefix),
            monitor_address: Ipv4Addr::new(198, 18, index, 1),
            ns,
        };
        self.monitor.ip([
            "link",
            "add",
            &node.monitor_interface,
            "type",
            "veth",
            "peer",
            "name",
            &node.interface,
            "netns",
            node.ns.name(),
        ])?;
        let monitor_cidr = format!("{}/24", node.monitor_address);
        self.monitor
            .ip(["addr", "add", &monitor_cidr, "dev", &node.monitor_interface])?;
        self.monitor
            .ip(["link", "set", &node.monitor_interface, "up"])?;
        let node_cidr = format!("{}/24", node.address);
        node.ns
            .ip(["addr", "add", &node_cidr, "dev", &node.interface])?;
        node.ns.ip(["link", "set", &node.interface, "up"])?;
        Ok(node)
    }

    /// The agent instance of this lab (its prefix): what the lab's
    /// configurations name, whose pins are removed with the lab.
    pub fn instance(&self) -> &str {
        self.pins.instance()
    }

    /// The prefix every name of this lab starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Node `index` (1-based). Panics if there is no such node.
    pub fn node(&self, index: u8) -> &Node {
        self.nodes
            .iter()
            .find(|node| node.index == index)
            .unwrap_or_else(|| panic!("lab {} has no node {index}", self.prefix))
    }

    /// The monitor-side interface names, in node order.
    pub fn monitor_interfaces(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| node.monitor_interface.clone())
            .collect()
    }

    /// The XDP attachment of a monitor interface as `ip -d link show`
    /// reports it: `Some(line)` with the first line mentioning `xdp`, or
    /// `None` when no XDP program is attached.
    pub fn monitor_xdp(&self, interface: &str) -> Result<Option<String>> {
        let output = self.monitor.ip(["-d", "link", "show", "dev", interface])?;
        Ok(xdp_line(&String::from_utf8_lossy(&output.stdout)))
    }
}

/// The first line of `ip -d link show` output with an XDP token (`xdp`,
/// `xdpgeneric`, `xdpdrv`, ... in the flags line, or `prog/xdp`).
fn xdp_line(output: &str) -> Option<String> {
    output
        .lines()
        .find(|line| {
            line.split_whitespace()
                .any(|token| token.starts_with("xdp") || token.starts_with("prog/xdp"))
        })
        .map(|line| line.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_prefixes_differ_and_fit_interface_names() {
        let a = unique_prefix();
        let b = unique_prefix();
        assert_ne!(a, b);
        // Largest pid Linux hands out (7 digits), 100 labs, 9 nodes.
        let worst = format!("hb{}t{}m{}", 4_194_304, 99, 9);
        assert!(worst.len() <= MAX_IFNAME, "{worst}");
        assert!(format!("{a}m9").len() <= MAX_IFNAME, "{a}");
    }

    #[test]
    fn rejects_names_that_do_not_fit() {
        let err = Lab::build("averyveryverylongprefix", 1).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        let err = Lab::build("hb-x", 1).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        let err = Lab::build("hb", 0).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
    }

    #[test]
    fn finds_xdp_in_ip_link_output() {
        let with = "7: hbm1@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 xdp qdisc noqueue\n    \
                    link/ether 02:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff link-netns hb-n1\n    \
                    prog/xdp id 42 name hb tag 0123456789abcdef jited";
        assert!(xdp_line(with).unwrap().contains(" xdp "));
        let generic = "7: hbm1@if2: <UP> mtu 1500 xdpgeneric qdisc noqueue";
        assert!(xdp_line(generic).is_some());
        let without = "7: hbxdpm1@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue\n    \
                       link/ether 02:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff link-netns hb-n1";
        assert_eq!(xdp_line(without), None);
    }
}
