//! What records heartbeats into the node table: the XDP program
//! ([`xdp`], the default) or a UDP socket ([`socket`], where XDP cannot be
//! attached). Both fill the same [`NodeTable`] layout and the same counters,
//! so the agent above does not know which one runs.
//!
//! Lifecycle: [`Datapath::prepare`] creates the table (nothing is received
//! yet, so the agent can configure and restore nodes in it), then
//! [`Datapath::start`] attaches or starts receiving, and [`Datapath::stop`]
//! stops. The XDP datapath outlives the agent: it is pinned in bpffs
//! ([`pins`]), `prepare` adopts what a previous agent of the same instance
//! left (see [`Datapath::adopted`]) and `stop` leaves it attached and
//! recording; `hb detach` ([`pins::remove`]) removes it. The socket
//! datapath ends with its process.

pub mod pins;
pub mod socket;
pub mod table;
pub mod xdp;

use hb_common::{
    admission::Unauthenticated, auth::KeySlots, counters::CounterValues, siphash::Key,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use self::{
    socket::{SocketDatapath, SocketError, SocketOptions},
    table::NodeTable,
    xdp::{LoadOptions, XdpDatapath, XdpError, XdpMode},
};

/// What receives heartbeats: the config's `datapath` and the CLI's
/// `--datapath`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DatapathKind {
    /// The XDP program, in the driver: no socket, no per-packet syscall
    /// (default).
    #[default]
    Xdp,
    /// A UDP socket read with `recvmmsg`: the fallback where XDP cannot be
    /// attached, and the baseline XDP is measured against.
    Socket,
}

impl DatapathKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            DatapathKind::Xdp => "xdp",
            DatapathKind::Socket => "socket",
        }
    }
}

/// Everything a datapath is built from (the config converts into it).
#[derive(Clone, Debug)]
pub struct DatapathSettings {
    pub kind: DatapathKind,
    /// Interfaces heartbeats are received on.
    pub interfaces: Vec<String>,
    /// UDP destination port of heartbeats.
    pub port: u16,
    /// Size of the node table; node ids must be below it.
    pub max_nodes: u32,
    /// XDP only: the attach mode.
    pub xdp_mode: XdpMode,
    /// XDP only: pass valid heartbeats on to the stack after recording them.
    pub pass_heartbeats: bool,
    /// Whether heartbeats with key id 0 are accepted.
    pub unauthenticated: Unauthenticated,
    /// XDP only: the name the datapath is pinned under
    /// (`/sys/fs/bpf/hb/<instance>/`) and locked by.
    pub instance: String,
}

/// The error of either datapath, each naming what failed.
#[derive(Debug, Error)]
pub enum DatapathError {
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("{what} is not supported with datapath = socket (it needs the XDP datapath)")]
    NotSupported { what: &'static str },
}

/// An interface heartbeats are received on, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receiving {
    pub interface: String,
    /// "native" or "generic" (XDP), or "socket".
    pub mode: &'static str,
}

pub enum Datapath {
    /// Boxed: far larger than the socket variant.
    Xdp {
        datapath: Box<XdpDatapath>,
        interfaces: Vec<String>,
        mode: XdpMode,
    },
    Socket(SocketDatapath),
}

impl Datapath {
    /// Creates the node table and whatever receives into it, not yet
    /// receiving.
    pub fn prepare(settings: &DatapathSettings) -> Result<Self, DatapathError> {
        Ok(match settings.kind {
            DatapathKind::Xdp => Datapath::Xdp {
                datapath: Box::new(XdpDatapath::open(
                    LoadOptions {
                        port: settings.port,
                        max_nodes: settings.max_nodes,
                        pass_heartbeats: settings.pass_heartbeats,
                        unauthenticated: settings.unauthenticated,
                    },
                    &settings.instance,
                )?),
                interfaces: settings.interfaces.clone(),
                mode: settings.xdp_mode,
            },
            DatapathKind::Socket => Datapath::Socket(SocketDatapath::new(SocketOptions {
                port: settings.port,
                max_nodes: settings.max_nodes,
                interfaces: settings.interfaces.clone(),
                unauthenticated: settings.unauthenticated,
            })?),
        })
    }

    /// Whether the node table was found pinned at start (XDP, a previous
    /// agent of the same instance left it): the program kept recording
    /// while no agent ran, so the seen words, records and intervals are
    /// live and must not be reset. Always false for the socket datapath.
    pub fn adopted(&self) -> bool {
        match self {
            Datapath::Xdp { datapath, .. } => datapath.adopted(),
            Datapath::Socket(_) => false,
        }
    }

    /// Whether the table recorded heartbeats on every configured interface
    /// while no agent ran: [`adopted`](Self::adopted), and each interface
    /// still has the live link a previous agent pinned (none was detached,
    /// nor its interface re-created, meanwhile). Only then are the arrival
    /// times in it trusted to convict a node at once. Call it before
    /// [`start`](Self::start), which attaches what is missing.
    pub fn recorded_throughout(&self) -> bool {
        match self {
            Datapath::Xdp {
                datapath,
                interfaces,
                ..
            } => datapath.adopted() && interfaces.iter().all(|i| datapath.live_link_on(i)),
            Datapath::Socket(_) => false,
        }
    }

    pub fn table(&self) -> &NodeTable {
        match self {
            Datapath::Xdp { datapath, .. } => datapath.table(),
            Datapath::Socket(socket) => socket.table(),
        }
    }

    /// Installs the keys heartbeats are verified with (at start, before
    /// `start`, and on every reload).
    pub fn set_keys(&mut self, keys: &KeySlots) -> Result<(), DatapathError> {
        match self {
            Datapath::Xdp { datapath, .. } => Ok(datapath.set_keys(keys)?),
            Datapath::Socket(socket) => {
                socket.set_keys(keys);
                Ok(())
            }
        }
    }

    /// Installs hb's ICMP echo identifier and the probe secret the XDP
    /// program checks probe replies with (see `hb_common::probe`), and
    /// clears the nodes' last probe sequences. XDP only: the socket
    /// datapath never sees ICMP and refuses. The agent calls it at start
    /// when a node is probed with ICMP.
    pub fn set_probe_secret(&mut self, identifier: u16, key: &Key) -> Result<(), DatapathError> {
        match self {
            Datapath::Xdp { datapath, .. } => Ok(datapath.set_probe_secret(identifier, key)?),
            Datapath::Socket(_) => Err(DatapathError::NotSupported {
                what: "probe replies recorded by the datapath (ICMP probes)",
            }),
        }
    }

    /// Starts recording heartbeats on every configured interface. On error,
    /// whatever was started is stopped again.
    pub fn start(&mut self) -> Result<(), DatapathError> {
        match self {
            Datapath::Xdp {
                datapath,
                interfaces,
                mode,
            } => {
                datapath.forward_log()?;
                Ok(datapath.attach_all(interfaces, *mode)?)
            }
            Datapath::Socket(socket) => Ok(socket.start()?),
        }
    }

    /// Counters summed over CPUs (XDP) or receive threads (socket).
    pub fn counters(&self) -> Result<CounterValues, DatapathError> {
        match self {
            Datapath::Xdp { datapath, .. } => Ok(datapath.counters()?),
            Datapath::Socket(socket) => Ok(socket.counters()),
        }
    }

    /// Where heartbeats are received, and how.
    pub fn receiving(&self) -> Vec<Receiving> {
        match self {
            Datapath::Xdp { datapath, .. } => datapath
                .attachments()
                .iter()
                .map(|a| Receiving {
                    interface: a.interface.clone(),
                    mode: a.mode.name(),
                })
                .collect(),
            Datapath::Socket(socket) => socket
                .interfaces()
                .iter()
                .map(|interface| Receiving {
                    interface: interface.clone(),
                    mode: "socket",
                })
                .collect(),
        }
    }

    /// Stops the receive threads; the XDP program stays attached and
    /// recording (this process only lets go of it, and logs how to remove
    /// it).
    pub fn stop(&mut self) -> Result<(), DatapathError> {
        match self {
            Datapath::Xdp { datapath, .. } => Ok(datapath.stop()?),
            Datapath::Socket(socket) => {
                socket.stop();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_datapath_refuses_a_probe_secret() {
        let mut datapath = Datapath::prepare(&DatapathSettings {
            kind: DatapathKind::Socket,
            interfaces: Vec::new(),
            port: 0,
            max_nodes: 4,
            xdp_mode: XdpMode::default(),
            pass_heartbeats: false,
            unauthenticated: Unauthenticated::Accept,
            instance: "unused".to_owned(),
        })
        .expect("a socket datapath on no interface");
        let error = datapath
            .set_probe_secret(0x4842, &[7; 16])
            .expect_err("the socket datapath took a probe secret");
        assert!(
            error
                .to_string()
                .contains("not supported with datapath = socket"),
            "{error}"
        );
    }
}
