//! The XDP datapath: loads the embedded XDP program with its load-time
//! settings, attaches it to interfaces (native mode, falling back to generic),
//! and gives the agent the node table as shared memory mappings plus the
//! per-CPU counters, and installs the keys heartbeats are verified with.
//!
//! The node table is read without any syscall: its two `BPF_F_MMAPABLE`
//! arrays are mapped into this process ([`crate::datapath::table`]), so a sweep of a
//! million nodes is a walk over memory the kernel writes directly.

use std::{fmt, io, os::fd::AsFd, str::FromStr};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, PerCpuArray},
    programs::{Xdp, XdpMode as KernelMode, xdp::XdpLinkId},
};
use hb_common::{
    admission::Unauthenticated,
    auth::{KeySlot, KeySlots},
    counters::{Counter, CounterValues},
    globals,
    table::NodeRecord,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    datapath::table::{Mapping, NodeTable},
    sys,
};

/// aya-log-ebpf's global log level and the values of its `Level` enum.
const AYA_LOG_LEVEL: &str = "AYA_LOG_LEVEL";
const AYA_LOG_INFO: u8 = 3;
const AYA_LOG_DEBUG: u8 = 4;

/// The XDP object built by `build.rs` from the `hb-ebpf` crate.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hb-xdp"));

/// The test-only object with `hb_siphash` (the kernel-side SipHash exposed to
/// BPF_PROG_TEST_RUN); only with the `test-programs` feature, which the
/// tests crate enables and the shipped binary does not.
#[cfg(feature = "test-programs")]
pub static SIPHASH_TEST_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hb-siphash"));

/// Errors of the datapath, each naming what failed.
#[derive(Debug, Error)]
pub enum XdpError {
    #[error(
        "loading the XDP program into the kernel failed (are you root, with a kernel that has \
         BPF and BTF?)"
    )]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the XDP object has no {what} named `{name}` (was it built from this source tree?)")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("{op} failed")]
    Program {
        op: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("{op} failed")]
    Map {
        op: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error(
        "map `{name}` has {entries} values of {value_size} bytes, expected {expected_entries} of \
         {expected_value_size}: the XDP object and this binary disagree"
    )]
    Layout {
        name: &'static str,
        entries: u32,
        value_size: u32,
        expected_entries: u32,
        expected_value_size: usize,
    },
    #[error("memory-mapping the node table `{map}` failed")]
    Mmap {
        map: &'static str,
        source: io::Error,
    },
    #[error(
        "attaching XDP to interface `{interface}` in {mode} mode failed (check that the \
         interface exists and has no other XDP program)"
    )]
    Attach {
        interface: String,
        mode: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("{op} failed")]
    Log {
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Load-time settings of the XDP program.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// UDP destination port of heartbeats.
    pub port: u16,
    /// Size of the node table; node ids must be below it.
    pub max_nodes: u32,
    /// Pass valid heartbeats on to the stack after recording them.
    pub pass_heartbeats: bool,
    /// Whether heartbeats with key id 0 are accepted.
    pub unauthenticated: Unauthenticated,
}

/// Which XDP mode to attach in: the config's `xdp_mode` and the CLI's
/// `--xdp-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic (skb) mode if
    /// unavailable.
    #[default]
    Auto,
    /// Native (driver) mode only: fail if the driver cannot run XDP.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

impl XdpMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for XdpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(XdpMode::Auto),
            "native" => Ok(XdpMode::Native),
            "generic" => Ok(XdpMode::Generic),
            other => Err(format!(
                "unknown XDP mode {other:?}: use auto, native or generic"
            )),
        }
    }
}

/// The mode an interface ended up attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
}

impl AttachedMode {
    pub const fn name(self) -> &'static str {
        match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        }
    }
}

/// One interface the program is attached to.
#[derive(Debug)]
pub struct Attachment {
    pub interface: String,
    pub mode: AttachedMode,
    link: XdpLinkId,
}

/// The loaded program, its maps and its attachments. Dropping it detaches
/// the program from every interface.
pub struct XdpDatapath {
    // Field order matters for Drop: the table mappings go before the maps.
    table: NodeTable,
    _table_maps: [MapData; 3],
    counters: PerCpuArray<MapData, u64>,
    keys: Array<MapData, KeySlot>,
    /// What `keys` holds, so that `set_keys` writes only what changes.
    installed_keys: Box<KeySlots>,
    attachments: Vec<Attachment>,
    ebpf: Ebpf,
}

impl XdpDatapath {
    /// Loads the embedded XDP program into the kernel (not attached yet),
    /// first lifting the memlock limit that older kernels charge maps to.
    pub fn load(options: LoadOptions) -> Result<Self, XdpError> {
        if let Err(e) = sys::raise_memlock_limit() {
            tracing::debug!("could not raise RLIMIT_MEMLOCK: {e}");
        }
        let pass = u8::from(options.pass_heartbeats);
        let accept_unauthenticated = u8::from(options.unauthenticated == Unauthenticated::Accept);
        // The program's log records are filtered in the kernel, before they
        // cost anything, at the level this process logs at.
        let log_level = if tracing::enabled!(tracing::Level::DEBUG) {
            AYA_LOG_DEBUG
        } else {
            AYA_LOG_INFO
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::UDP_PORT, &options.port, true)
            .override_global(globals::PASS_HEARTBEATS, &pass, true)
            .override_global(
                globals::ACCEPT_UNAUTHENTICATED,
                &accept_unauthenticated,
                true,
            )
            .override_global(AYA_LOG_LEVEL, &log_level, false)
            .map_max_entries(globals::SEEN_MAP, options.max_nodes)
            .map_max_entries(globals::NODES_MAP, options.max_nodes)
            .map_max_entries(globals::INTERVALS_MAP, options.max_nodes)
            .load(EBPF_OBJECT)
            .map_err(|e| XdpError::Load(Box::new(e)))?;
        let program = xdp_program(&mut ebpf)?;
        program.load().map_err(|e| XdpError::Program {
            op: "verifying the XDP program",
            source: Box::new(e),
        })?;

        let seen = take_array::<u64>(&mut ebpf, globals::SEEN_MAP, options.max_nodes)?;
        let records = take_array::<NodeRecord>(&mut ebpf, globals::NODES_MAP, options.max_nodes)?;
        let intervals = take_array::<u64>(&mut ebpf, globals::INTERVALS_MAP, options.max_nodes)?;
        let mmap = |map: &'static str, e| XdpError::Mmap { map, source: e };
        // SAFETY: the three maps are BPF_F_MMAPABLE arrays of `max_nodes`
        // entries whose value types are u64, NodeRecord and u64 (hb-ebpf's
        // definitions).
        let table = unsafe {
            NodeTable {
                seen: Mapping::of_bpf_array(seen.fd().as_fd(), options.max_nodes)
                    .map_err(|e| mmap(globals::SEEN_MAP, e))?,
                records: Mapping::<NodeRecord>::of_bpf_array(
                    records.fd().as_fd(),
                    options.max_nodes,
                )
                .map_err(|e| mmap(globals::NODES_MAP, e))?,
                intervals: Mapping::of_bpf_array(intervals.fd().as_fd(), options.max_nodes)
                    .map_err(|e| mmap(globals::INTERVALS_MAP, e))?,
            }
        };
        let counters = ebpf
            .take_map(globals::COUNTERS_MAP)
            .ok_or(XdpError::Missing {
                what: "map",
                name: globals::COUNTERS_MAP,
            })?;
        let counters = PerCpuArray::try_from(counters).map_err(|e| XdpError::Map {
            op: "opening the counters",
            source: Box::new(e),
        })?;
        let keys = take_array::<KeySlot>(&mut ebpf, globals::KEYS_MAP, hb_common::auth::KEY_SLOTS)?;
        let keys = Array::try_from(Map::Array(keys)).map_err(|e| XdpError::Map {
            op: "opening the key table",
            source: Box::new(e),
        })?;
        Ok(XdpDatapath {
            table,
            _table_maps: [seen, records, intervals],
            counters,
            keys,
            installed_keys: Box::new([KeySlot::default(); hb_common::auth::KEY_SLOTS as usize]),
            attachments: Vec::new(),
            ebpf,
        })
    }

    /// The node table, shared with the kernel.
    pub fn table(&self) -> &NodeTable {
        &self.table
    }

    /// The loaded XDP program (for `BPF_PROG_TEST_RUN`).
    pub fn program(&mut self) -> Result<&mut Xdp, XdpError> {
        xdp_program(&mut self.ebpf)
    }

    /// Forwards the program's aya-log records to this process's log, from a
    /// task of the current tokio runtime.
    pub fn forward_log(&mut self) -> Result<(), XdpError> {
        let logger = aya_log::EbpfLogger::init(&mut self.ebpf).map_err(|e| XdpError::Log {
            op: "opening the XDP program's log",
            source: Box::new(e),
        })?;
        // SAFETY: the logger owns its ring buffer fd and keeps it open,
        // unchanged, for as long as the AsyncFd owns the logger.
        let mut logger = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
            .map_err(|e| XdpError::Log {
                op: "polling the XDP log",
                source: Box::new(e),
            })?;
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

    /// Attaches the program to every interface in `mode`, logging each; on
    /// error, detaches from those done so far.
    pub fn attach_all(&mut self, interfaces: &[String], mode: XdpMode) -> Result<(), XdpError> {
        for interface in interfaces {
            match self.attach(interface, mode) {
                Ok(mode) => tracing::info!(interface, mode = mode.name(), "XDP program attached"),
                Err(e) => {
                    self.detach_all().ok();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Attaches the program to `interface`. In `auto` mode it tries native
    /// (driver) XDP first and falls back to generic (skb) mode, logging why.
    pub fn attach(&mut self, interface: &str, mode: XdpMode) -> Result<AttachedMode, XdpError> {
        let attempt = |program: &mut Xdp, mode: AttachedMode| {
            let kernel_mode = match mode {
                AttachedMode::Native => KernelMode::Driver,
                AttachedMode::Generic => KernelMode::Skb,
            };
            program
                .attach(interface, kernel_mode)
                .map_err(|e| XdpError::Attach {
                    interface: interface.to_owned(),
                    mode: mode.name(),
                    source: Box::new(e),
                })
        };
        let program = xdp_program(&mut self.ebpf)?;
        let (link, mode) = match mode {
            XdpMode::Native => (
                attempt(program, AttachedMode::Native)?,
                AttachedMode::Native,
            ),
            XdpMode::Generic => (
                attempt(program, AttachedMode::Generic)?,
                AttachedMode::Generic,
            ),
            XdpMode::Auto => match attempt(program, AttachedMode::Native) {
                Ok(link) => (link, AttachedMode::Native),
                Err(native) => {
                    tracing::warn!(
                        interface,
                        "native XDP is not available ({:#}); falling back to generic \
                         (skb) mode, which works everywhere but costs more CPU per packet",
                        anyhow::Error::from(native)
                    );
                    (
                        attempt(program, AttachedMode::Generic)?,
                        AttachedMode::Generic,
                    )
                }
            },
        };
        self.attachments.push(Attachment {
            interface: interface.to_owned(),
            mode,
            link,
        });
        Ok(mode)
    }

    /// Interfaces the program is attached to, with their modes.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Detaches the program from every interface.
    pub fn detach_all(&mut self) -> Result<(), XdpError> {
        let attachments = std::mem::take(&mut self.attachments);
        let program = xdp_program(&mut self.ebpf)?;
        for attachment in attachments {
            program
                .detach(attachment.link)
                .map_err(|e| XdpError::Program {
                    op: "detaching XDP",
                    source: Box::new(e),
                })?;
            tracing::info!(interface = attachment.interface, "XDP program detached");
        }
        Ok(())
    }

    /// Installs the keys heartbeats are verified with, from the next packet
    /// on. Slots that gain or change a key are written before slots that
    /// lose one, so during a rotation the old and the new key are both
    /// accepted at every instant.
    pub fn set_keys(&mut self, keys: &KeySlots) -> Result<(), XdpError> {
        let changed: Vec<u32> = (0..hb_common::auth::KEY_SLOTS)
            .filter(|&id| keys[id as usize] != self.installed_keys[id as usize])
            .collect();
        let (gaining, losing): (Vec<u32>, Vec<u32>) = changed
            .into_iter()
            .partition(|&id| keys[id as usize].key().is_some());
        for id in gaining.into_iter().chain(losing) {
            self.keys
                .set(id, keys[id as usize], 0)
                .map_err(|e| XdpError::Map {
                    op: "writing the key table",
                    source: Box::new(e),
                })?;
            self.installed_keys[id as usize] = keys[id as usize];
        }
        Ok(())
    }

    /// Current value of every counter, summed over CPUs, in [`Counter::ALL`]
    /// order.
    pub fn counters(&self) -> Result<CounterValues, XdpError> {
        let mut out = CounterValues::default();
        for (slot, counter) in out.iter_mut().zip(Counter::ALL) {
            let per_cpu = self
                .counters
                .get(&(counter as u32), 0)
                .map_err(|e| XdpError::Map {
                    op: "reading counters",
                    source: Box::new(e),
                })?;
            *slot = per_cpu.iter().sum();
        }
        Ok(out)
    }
}

/// Takes array map `name` out of the object, checking that the kernel made
/// it with `len` values of `T` (what the memory mapping will assume).
fn take_array<T>(ebpf: &mut Ebpf, name: &'static str, len: u32) -> Result<MapData, XdpError> {
    let Some(Map::Array(map)) = ebpf.take_map(name) else {
        return Err(XdpError::Missing {
            what: "array map",
            name,
        });
    };
    let info = map.info().map_err(|e| XdpError::Map {
        op: "reading map info",
        source: Box::new(e),
    })?;
    if info.max_entries() != len || info.value_size() as usize != size_of::<T>() {
        return Err(XdpError::Layout {
            name,
            entries: info.max_entries(),
            value_size: info.value_size(),
            expected_entries: len,
            expected_value_size: size_of::<T>(),
        });
    }
    Ok(map)
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    let missing = XdpError::Missing {
        what: "XDP program",
        name: globals::PROGRAM,
    };
    ebpf.program_mut(globals::PROGRAM)
        .ok_or(missing)?
        .try_into()
        .map_err(|_| XdpError::Missing {
            what: "XDP program",
            name: globals::PROGRAM,
        })
}
