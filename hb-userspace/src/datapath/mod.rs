//! What records heartbeats into the node table: the XDP program
//! ([`crate::datapath::xdp`], the default) or a UDP socket ([`crate::datapath::socket`], where
//! XDP cannot be attached). Both fill the same [`NodeTable`] layout and the
//! same counters, so the agent above does not know which one runs.
//!
//! Lifecycle: [`Datapath::prepare`] creates the table (nothing is received
//! yet, so the agent can configure and restore nodes in it), then
//! [`Datapath::start`] attaches or starts receiving, and [`Datapath::stop`]
//! detaches or stops.

use anyhow::Context;
use hb_common::{auth::KeySlots, counters::Counter};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    agent::status::InterfaceStatus,
    config::{Config, DatapathKind, XdpMode},
};

pub mod socket;
pub mod table;
pub mod xdp;

use socket::{SocketDatapath, SocketOptions};
use table::NodeTable;
use xdp::{AttachPolicy, LoadOptions, XdpDatapath};

/// Counter values in [`Counter::ALL`] order.
pub type Counters = [u64; Counter::COUNT as usize];

pub enum Datapath {
    /// Boxed: far larger than the socket variant.
    Xdp(Box<XdpDatapath>),
    Socket(SocketDatapath),
}

impl Datapath {
    /// Creates the node table and whatever receives into it, not yet
    /// receiving.
    pub fn prepare(config: &Config) -> anyhow::Result<Self> {
        Ok(match config.datapath {
            DatapathKind::Xdp => Datapath::Xdp(Box::new(XdpDatapath::load(LoadOptions {
                port: config.port,
                max_nodes: config.max_nodes,
                pass_heartbeats: config.pass_heartbeats,
                unauthenticated: config.auth.unauthenticated(),
            })?)),
            DatapathKind::Socket => Datapath::Socket(SocketDatapath::new(SocketOptions {
                port: config.port,
                max_nodes: config.max_nodes,
                interfaces: config.interfaces.clone(),
                unauthenticated: config.auth.unauthenticated(),
            })?),
        })
    }

    pub fn table(&self) -> &NodeTable {
        match self {
            Datapath::Xdp(xdp) => xdp.table(),
            Datapath::Socket(socket) => socket.table(),
        }
    }

    /// Installs the keys heartbeats are verified with (at start, before
    /// `start`, and on every reload).
    pub fn set_keys(&mut self, keys: &KeySlots) -> anyhow::Result<()> {
        match self {
            Datapath::Xdp(xdp) => Ok(xdp.set_keys(keys)?),
            Datapath::Socket(socket) => {
                socket.set_keys(keys);
                Ok(())
            }
        }
    }

    /// Starts recording heartbeats on every configured interface. On error,
    /// whatever was started is stopped again.
    pub fn start(&mut self, config: &Config) -> anyhow::Result<()> {
        match self {
            Datapath::Xdp(xdp) => {
                forward_program_log(xdp)?;
                let policy = match config.xdp_mode {
                    XdpMode::Auto => AttachPolicy::Auto,
                    XdpMode::Native => AttachPolicy::Native,
                    XdpMode::Generic => AttachPolicy::Generic,
                };
                for interface in &config.interfaces {
                    match xdp.attach(interface, policy) {
                        Ok(mode) => {
                            tracing::info!(interface, mode = mode.name(), "XDP program attached")
                        }
                        Err(e) => {
                            xdp.detach_all().ok();
                            return Err(e.into());
                        }
                    }
                }
                Ok(())
            }
            Datapath::Socket(socket) => socket.start(),
        }
    }

    /// Counters summed over CPUs (XDP) or receive threads (socket).
    pub fn counters(&self) -> anyhow::Result<Counters> {
        match self {
            Datapath::Xdp(xdp) => Ok(xdp.counters()?),
            Datapath::Socket(socket) => Ok(socket.counters()),
        }
    }

    /// Where heartbeats are received, for `hb status`.
    pub fn interfaces(&self) -> Vec<InterfaceStatus> {
        match self {
            Datapath::Xdp(xdp) => xdp
                .attachments()
                .iter()
                .map(|a| InterfaceStatus {
                    name: a.interface.clone(),
                    mode: a.mode.name().to_owned(),
                })
                .collect(),
            Datapath::Socket(socket) => socket
                .interfaces()
                .iter()
                .map(|name| InterfaceStatus {
                    name: name.clone(),
                    mode: "socket".to_owned(),
                })
                .collect(),
        }
    }

    /// Detaches the XDP program or stops the receive threads.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        match self {
            Datapath::Xdp(xdp) => Ok(xdp.detach_all()?),
            Datapath::Socket(socket) => {
                socket.stop();
                Ok(())
            }
        }
    }
}

/// Forwards the XDP program's aya-log records to this process's log.
fn forward_program_log(xdp: &mut XdpDatapath) -> anyhow::Result<()> {
    let logger =
        aya_log::EbpfLogger::init(xdp.ebpf_mut()).context("opening the XDP program's log")?;
    // SAFETY: the logger owns its ring buffer fd and keeps it open, unchanged,
    // for as long as the AsyncFd owns the logger.
    let mut logger = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .context("polling the XDP log")?;
    tokio::spawn(async move {
        loop {
            match logger.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => {
                    tracing::warn!("XDP log forwarding stopped: {e}");
                    return;
                }
            }
        }
    });
    Ok(())
}
