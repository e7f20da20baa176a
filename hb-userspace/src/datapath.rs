//! The XDP datapath: loads the embedded XDP program with its load-time
//! settings, attaches it to interfaces (native mode, falling back to generic),
//! and gives the agent the node table as a shared memory mapping plus the
//! per-CPU counters.
//!
//! The node table is read without any syscall: it is a `BPF_F_MMAPABLE`
//! array mapped into this process, so a sweep of a million nodes is a walk
//! over memory the kernel writes directly.

use std::{
    io,
    os::fd::AsFd,
    ptr::{self, NonNull},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, PerCpuArray},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use hb_common::{counters::Counter, globals, table::NodeRecord};
use thiserror::Error;

/// The XDP object built by `build.rs` from the `hb-ebpf` crate.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hb-xdp"));

/// Errors of the datapath, each naming what failed.
#[derive(Debug, Error)]
pub enum DatapathError {
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
    #[error("memory-mapping the node table ({bytes} bytes) failed")]
    Mmap { bytes: usize, source: io::Error },
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
}

/// Which XDP mode to attach in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachPolicy {
    /// Native (driver) mode, falling back to generic mode if unavailable.
    Auto,
    /// Native mode only: fail if the driver cannot run XDP.
    Native,
    /// Generic (skb) mode only.
    Generic,
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
pub struct Datapath {
    // Field order matters for Drop: the table mapping goes before the map fd.
    table: NodeTable,
    counters: PerCpuArray<MapData, u64>,
    attachments: Vec<Attachment>,
    ebpf: Ebpf,
}

impl Datapath {
    /// Loads the embedded XDP program into the kernel (not attached yet).
    pub fn load(options: LoadOptions) -> Result<Self, DatapathError> {
        let pass = u8::from(options.pass_heartbeats);
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::UDP_PORT, &options.port, true)
            .override_global(globals::PASS_HEARTBEATS, &pass, true)
            .map_max_entries(globals::NODES_MAP, options.max_nodes)
            .load(EBPF_OBJECT)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;
        let program = xdp_program(&mut ebpf)?;
        program.load().map_err(|e| DatapathError::Program {
            op: "verifying the XDP program",
            source: Box::new(e),
        })?;

        let Some(Map::Array(nodes)) = ebpf.take_map(globals::NODES_MAP) else {
            return Err(DatapathError::Missing {
                what: "array map",
                name: globals::NODES_MAP,
            });
        };
        let table = NodeTable::map(nodes, options.max_nodes)?;
        let counters = ebpf
            .take_map(globals::COUNTERS_MAP)
            .ok_or(DatapathError::Missing {
                what: "map",
                name: globals::COUNTERS_MAP,
            })?;
        let counters = PerCpuArray::try_from(counters).map_err(|e| DatapathError::Map {
            op: "opening the counters",
            source: Box::new(e),
        })?;
        Ok(Datapath {
            table,
            counters,
            attachments: Vec::new(),
            ebpf,
        })
    }

    /// The node table, shared with the kernel.
    pub fn table(&self) -> &NodeTable {
        &self.table
    }

    /// The loaded XDP program (for `BPF_PROG_TEST_RUN`).
    pub fn program(&mut self) -> Result<&mut Xdp, DatapathError> {
        xdp_program(&mut self.ebpf)
    }

    /// The underlying object, e.g. to start forwarding the program's log.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Attaches the program to `interface`. In `auto` mode it tries native
    /// (driver) XDP first and falls back to generic (skb) mode, logging why.
    pub fn attach(
        &mut self,
        interface: &str,
        policy: AttachPolicy,
    ) -> Result<AttachedMode, DatapathError> {
        let attempt = |program: &mut Xdp, mode: AttachedMode| {
            let xdp_mode = match mode {
                AttachedMode::Native => XdpMode::Driver,
                AttachedMode::Generic => XdpMode::Skb,
            };
            program
                .attach(interface, xdp_mode)
                .map_err(|e| DatapathError::Attach {
                    interface: interface.to_owned(),
                    mode: mode.name(),
                    source: Box::new(e),
                })
        };
        let program = xdp_program(&mut self.ebpf)?;
        let (link, mode) = match policy {
            AttachPolicy::Native => (
                attempt(program, AttachedMode::Native)?,
                AttachedMode::Native,
            ),
            AttachPolicy::Generic => (
                attempt(program, AttachedMode::Generic)?,
                AttachedMode::Generic,
            ),
            AttachPolicy::Auto => match attempt(program, AttachedMode::Native) {
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
    pub fn detach_all(&mut self) -> Result<(), DatapathError> {
        let attachments = std::mem::take(&mut self.attachments);
        let program = xdp_program(&mut self.ebpf)?;
        for attachment in attachments {
            program
                .detach(attachment.link)
                .map_err(|e| DatapathError::Program {
                    op: "detaching XDP",
                    source: Box::new(e),
                })?;
            tracing::info!(interface = attachment.interface, "XDP program detached");
        }
        Ok(())
    }

    /// Current value of every counter, summed over CPUs, in [`Counter::ALL`]
    /// order.
    pub fn counters(&self) -> Result<[u64; Counter::COUNT as usize], DatapathError> {
        let mut out = [0u64; Counter::COUNT as usize];
        for (slot, counter) in out.iter_mut().zip(Counter::ALL) {
            let per_cpu =
                self.counters
                    .get(&(counter as u32), 0)
                    .map_err(|e| DatapathError::Map {
                        op: "reading counters",
                        source: Box::new(e),
                    })?;
            *slot = per_cpu.iter().sum();
        }
        Ok(out)
    }
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DatapathError> {
    let missing = DatapathError::Missing {
        what: "XDP program",
        name: globals::PROGRAM,
    };
    ebpf.program_mut(globals::PROGRAM)
        .ok_or(missing)?
        .try_into()
        .map_err(|_| DatapathError::Missing {
            what: "XDP program",
            name: globals::PROGRAM,
        })
}

/// The node table mapped into this process. The kernel writes records while
/// we read them, so every access is a volatile copy of one whole record; a
/// record may be read half-updated, which the sweep tolerates (it only ever
/// compares a counter and a timestamp that are each written atomically).
pub struct NodeTable {
    base: NonNull<NodeRecord>,
    len: u32,
    mapped_bytes: usize,
    _map: MapData,
}

// SAFETY: the mapping is plain shared memory; all access goes through
// volatile reads and writes of `NodeRecord`, which is `Copy` and valid for
// every bit pattern.
unsafe impl Send for NodeTable {}
// SAFETY: as above.
unsafe impl Sync for NodeTable {}

impl NodeTable {
    fn map(map: MapData, len: u32) -> Result<Self, DatapathError> {
        let page = page_size();
        let bytes = len as usize * size_of::<NodeRecord>();
        let mapped_bytes = bytes.div_ceil(page) * page;
        // SAFETY: mmap of a BPF_F_MMAPABLE array fd at offset 0, length rounded
        // up to whole pages as the kernel requires; the result is checked.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                mapped_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&map.fd().as_fd()),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(DatapathError::Mmap {
                bytes: mapped_bytes,
                source: io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(addr.cast::<NodeRecord>()).ok_or(DatapathError::Mmap {
            bytes: mapped_bytes,
            source: io::Error::other("null"),
        })?;
        Ok(NodeTable {
            base,
            len,
            mapped_bytes,
            _map: map,
        })
    }

    /// Number of slots (`max_nodes`).
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of the record of node `id`.
    ///
    /// # Panics
    /// If `id >= len()`.
    #[inline]
    pub fn get(&self, id: u32) -> NodeRecord {
        assert!(
            id < self.len,
            "node id {id} is outside the table of {} slots",
            self.len
        );
        // SAFETY: in bounds (checked above) of a live mapping; volatile since
        // the kernel writes concurrently.
        unsafe { ptr::read_volatile(self.base.as_ptr().add(id as usize)) }
    }

    /// Overwrites the record of node `id`. Only done before the program is
    /// attached (configuring slots, restoring state after a restart).
    ///
    /// # Panics
    /// If `id >= len()`.
    pub fn set(&self, id: u32, record: NodeRecord) {
        assert!(
            id < self.len,
            "node id {id} is outside the table of {} slots",
            self.len
        );
        // SAFETY: in bounds of a live, writable mapping.
        unsafe { ptr::write_volatile(self.base.as_ptr().add(id as usize), record) }
    }
}

impl Drop for NodeTable {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; no reference into it
        // outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped_bytes) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}
