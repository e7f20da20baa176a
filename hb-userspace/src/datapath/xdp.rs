//! The XDP datapath: loads the embedded XDP program with its load-time
//! settings, attaches it to interfaces (native mode, falling back to generic),
//! and gives the agent the node table as shared memory mappings plus the
//! per-CPU counters, and installs the keys heartbeats are verified with.
//!
//! The node table is read without any syscall: its two `BPF_F_MMAPABLE`
//! arrays are mapped into this process ([`crate::datapath::table`]), so a sweep of a
//! million nodes is a walk over memory the kernel writes directly.
//!
//! The agent's datapath outlives it ([`XdpDatapath::open`]): program, maps
//! and links are pinned in bpffs under the instance's directory
//! ([`crate::datapath::pins`] names them), so the program keeps recording
//! while no agent runs. A starting agent finds one of:
//!
//! - nothing pinned: it loads the program with its maps pinned, pins the
//!   program and, at [`XdpDatapath::attach_all`], one link per interface;
//! - the same program (same digest of object and load-time settings) and
//!   this version's maps: it *adopts* them, nothing is reloaded;
//! - the same map layout but another program: it *replaces* the program,
//!   keeping the maps: the new one is loaded onto the pinned maps and
//!   pinned, then every pinned link is switched to it atomically
//!   (`bpf_link_update`: no packet meets no program), then the old
//!   program's pin goes;
//! - maps of another layout version, or a node table of another size than
//!   `max_nodes`: it refuses, saying what differs and how to go on.
//!
//! Every start also compares each pinned link's program with the current
//! one and switches those that differ, and removes stale program pins, so
//! an agent killed at any point of a replacement leaves a state the next
//! start completes.
//!
//! [`XdpDatapath::load`] is the other way in: a program of this process
//! alone, pinned nowhere, unloaded (and detached) when dropped; for
//! `BPF_PROG_TEST_RUN` and in-process measurements.

use std::{
    fmt, io,
    os::fd::AsFd,
    path::{Path, PathBuf},
    str::FromStr,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, PerCpuArray},
    programs::{
        Xdp, XdpMode as KernelMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use aya_obj::programs::XdpAttachType;
use hb_common::{
    admission::Unauthenticated,
    auth::{KEY_SLOTS, KeySlots, KeyState, key_states},
    counters::{CounterBlock, CounterValues},
    globals::{self, LAYOUT_VERSION},
    probe::ProbeSecret,
    siphash::{Key, siphash24},
    table::NodeSlot,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    datapath::{
        pins::{self, InstanceDir, InstanceLock, LinkPin, PINNED_MAPS, PinError},
        table::{Mapping, NodeTable},
    },
    sys,
};

/// aya-log-ebpf's global log level and the values of its `Level` enum.
const AYA_LOG_LEVEL: &str = "AYA_LOG_LEVEL";
const AYA_LOG_INFO: u8 = 3;
const AYA_LOG_DEBUG: u8 = 4;

/// The key of the program digest (not a secret: it only makes the name of
/// a program pin depend on every byte of the object and its settings).
const DIGEST_KEY: Key = *b"hb-program-pins1";

/// The XDP object built by `build.rs` from the `hb-ebpf` crate.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hb-xdp"));

/// The test-only object with `hb_siphash` (the kernel-side SipHash exposed to
/// BPF_PROG_TEST_RUN); only with the `test-programs` feature, which the
/// tests crate enables and the shipped binary does not.
#[cfg(feature = "test-programs")]
pub static SIPHASH_TEST_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hb-siphash"));

/// The bench-only object with the floor programs (`hb_floor_empty`,
/// `hb_floor_clock`, `hb_floor_lookup`: what every accepted heartbeat costs
/// at least), for `hb-tools bench xdp-cost`. The agent never loads it.
pub static FLOOR_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hb-floor"));

/// A test-only build of `hb-xdp` that differs from [`EBPF_OBJECT`] in code
/// only (built with `--cfg hb_variant`: same maps, same behaviour), for the
/// upgrade test: opening it over a running instance replaces the program
/// and keeps the maps. Only with the `test-programs` feature.
#[cfg(feature = "test-programs")]
pub static VARIANT_TEST_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hb-xdp-variant"));

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
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error("{op} {} failed", path.display())]
    Pin {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "{} holds the maps of layout version {found}, this hb uses layout version {expected}: \
         run the hb version that made them, or remove them with `hb detach --instance \
         {instance}` (which loses the arrival times the kernel recorded; the state file keeps \
         the node states) and start again",
        dir.display()
    )]
    OtherLayout {
        dir: PathBuf,
        instance: String,
        found: u32,
        expected: u32,
    },
    #[error(
        "the node table pinned in {} holds {entries} nodes but max_nodes is {max_nodes}: set \
         max_nodes back to {entries}, or remove the pins with `hb detach --instance {instance}` \
         (which loses the arrival times the kernel recorded; the state file keeps the node \
         states) and start again",
        dir.display()
    )]
    PinnedTableSize {
        dir: PathBuf,
        instance: String,
        entries: u32,
        max_nodes: u32,
    },
    #[error(
        "the map pinned at {} has {entries} values of {value_size} bytes, this hb expects \
         {expected_entries} of {expected_value_size} (pinned by another build of layout \
         version {LAYOUT_VERSION}?): remove the pins with `hb detach --instance {instance}` and \
         start again",
        path.display()
    )]
    PinnedMap {
        path: PathBuf,
        instance: String,
        entries: u32,
        value_size: u32,
        expected_entries: u32,
        expected_value_size: usize,
    },
}

fn pin_error<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> XdpError + 'a {
    move |source| XdpError::Pin {
        op,
        path: path.to_owned(),
        source,
    }
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

    const fn kernel_mode(self) -> KernelMode {
        match self {
            AttachedMode::Native => KernelMode::Driver,
            AttachedMode::Generic => KernelMode::Skb,
        }
    }
}

/// One interface the program is attached to.
#[derive(Debug)]
pub struct Attachment {
    pub interface: String,
    pub mode: AttachedMode,
    link: AttachmentLink,
}

#[derive(Debug)]
enum AttachmentLink {
    /// A link of this process's program: detached with it.
    Owned(XdpLinkId),
    /// A pinned link: attached until its pin is removed.
    Pinned(PathBuf),
}

/// The XDP program, either way it was opened.
enum Program {
    /// Loaded by this process and pinned nowhere ([`XdpDatapath::load`]).
    Owned(Box<Ebpf>),
    /// Opened from its pin ([`XdpDatapath::open`]).
    Pinned(Box<Xdp>),
}

/// What an instance's datapath holds beyond the program and the maps.
struct Pins {
    dir: InstanceDir,
    program_id: u32,
    /// The node table was found pinned at start.
    adopted: bool,
    /// Held for as long as this datapath lives.
    _lock: InstanceLock,
}

/// The program's load-time settings (its read-only globals).
struct Globals {
    port: u16,
    pass_heartbeats: u8,
    accept_unauthenticated: u8,
    log_level: u8,
}

impl Globals {
    fn of(options: &LoadOptions) -> Self {
        Self {
            port: options.port,
            pass_heartbeats: u8::from(options.pass_heartbeats),
            accept_unauthenticated: u8::from(options.unauthenticated == Unauthenticated::Accept),
            // The program's log records are filtered in the kernel, before
            // they cost anything, at the level this process logs at.
            log_level: if tracing::enabled!(tracing::Level::DEBUG) {
                AYA_LOG_DEBUG
            } else {
                AYA_LOG_INFO
            },
        }
    }

    /// A loader of the program with these settings and `max_nodes` slots.
    fn loader(&self, max_nodes: u32) -> EbpfLoader<'_> {
        let mut loader = EbpfLoader::new();
        loader
            .override_global(globals::UDP_PORT, &self.port, true)
            .override_global(globals::PASS_HEARTBEATS, &self.pass_heartbeats, true)
            .override_global(
                globals::ACCEPT_UNAUTHENTICATED,
                &self.accept_unauthenticated,
                true,
            )
            .override_global(AYA_LOG_LEVEL, &self.log_level, false)
            .map_max_entries(globals::SEEN_MAP, max_nodes)
            .map_max_entries(globals::NODES_MAP, max_nodes)
            .map_max_entries(globals::PROBES_MAP, max_nodes);
        loader
    }

    /// What names the program's pin: a digest of `object` and the
    /// settings, so another build or another setting is another program.
    fn digest(&self, object: &[u8]) -> u64 {
        let mut bytes = Vec::with_capacity(object.len() + 5);
        bytes.extend_from_slice(object);
        bytes.extend_from_slice(&self.port.to_le_bytes());
        bytes.extend_from_slice(&[
            self.pass_heartbeats,
            self.accept_unauthenticated,
            self.log_level,
        ]);
        siphash24(&DIGEST_KEY, &bytes)
    }
}

/// The six maps, before they are wrapped.
struct Maps {
    seen: MapData,
    slots: MapData,
    counters: MapData,
    keys: MapData,
    probes: MapData,
    probe_key: MapData,
}

impl Maps {
    /// Takes the maps out of a loaded object, checking their sizes.
    fn take(ebpf: &mut Ebpf, max_nodes: u32) -> Result<Self, XdpError> {
        let mut take = |name: &'static str, len: u32, value_size: usize| {
            let map = match ebpf.take_map(name) {
                Some(Map::Array(map) | Map::PerCpuArray(map)) => map,
                _ => {
                    return Err(XdpError::Missing {
                        what: "array map",
                        name,
                    });
                }
            };
            let (entries, size) = map_size(&map)?;
            if entries != len || size as usize != value_size {
                return Err(XdpError::Layout {
                    name,
                    entries,
                    value_size: size,
                    expected_entries: len,
                    expected_value_size: value_size,
                });
            }
            Ok(map)
        };
        Ok(Self {
            seen: take(globals::SEEN_MAP, max_nodes, size_of::<u64>())?,
            slots: take(globals::NODES_MAP, max_nodes, size_of::<NodeSlot>())?,
            counters: take(globals::COUNTERS_MAP, 1, size_of::<CounterBlock>())?,
            keys: take(globals::KEYS_MAP, KEY_SLOTS, size_of::<KeyState>())?,
            probes: take(globals::PROBES_MAP, max_nodes, size_of::<u64>())?,
            probe_key: take(globals::PROBE_KEY_MAP, 1, size_of::<ProbeSecret>())?,
        })
    }

    /// Opens the maps pinned in `dir`.
    fn open_pinned(dir: &InstanceDir, max_nodes: u32) -> Result<Self, XdpError> {
        let open = |name: &'static str| -> Result<MapData, XdpError> {
            let path = dir.map_pin(name);
            let map = MapData::from_pin(&path)
                .map_err(|e| pin_error("opening the pinned map", &path)(Box::new(e)))?;
            check_pinned_map(dir, name, &map, max_nodes)?;
            Ok(map)
        };
        Ok(Self {
            seen: open(globals::SEEN_MAP)?,
            slots: open(globals::NODES_MAP)?,
            counters: open(globals::COUNTERS_MAP)?,
            keys: open(globals::KEYS_MAP)?,
            probes: open(globals::PROBES_MAP)?,
            probe_key: open(globals::PROBE_KEY_MAP)?,
        })
    }
}

/// The expected (entries, value size) of pinned map `name`.
fn expected_size(name: &str, max_nodes: u32) -> (u32, usize) {
    match name {
        globals::NODES_MAP => (max_nodes, size_of::<NodeSlot>()),
        globals::COUNTERS_MAP => (1, size_of::<CounterBlock>()),
        globals::KEYS_MAP => (KEY_SLOTS, size_of::<KeyState>()),
        globals::PROBE_KEY_MAP => (1, size_of::<ProbeSecret>()),
        // HB_SEEN and HB_PROBES.
        _ => (max_nodes, size_of::<u64>()),
    }
}

fn map_size(map: &MapData) -> Result<(u32, u32), XdpError> {
    let info = map.info().map_err(|e| XdpError::Map {
        op: "reading map info",
        source: Box::new(e),
    })?;
    Ok((info.max_entries(), info.value_size()))
}

/// Checks a pinned map against this binary and `max_nodes`: a node table of
/// another size is refused with the two ways on.
fn check_pinned_map(
    dir: &InstanceDir,
    name: &str,
    map: &MapData,
    max_nodes: u32,
) -> Result<(), XdpError> {
    let (entries, value_size) = map_size(map)?;
    let (expected_entries, expected_value_size) = expected_size(name, max_nodes);
    if value_size as usize == expected_value_size && entries == expected_entries {
        return Ok(());
    }
    let table = [globals::SEEN_MAP, globals::NODES_MAP, globals::PROBES_MAP];
    if value_size as usize == expected_value_size && table.contains(&name) {
        return Err(XdpError::PinnedTableSize {
            dir: dir.layout_dir(LAYOUT_VERSION),
            instance: dir.instance().to_owned(),
            entries,
            max_nodes,
        });
    }
    Err(XdpError::PinnedMap {
        path: dir.map_pin(name),
        instance: dir.instance().to_owned(),
        entries,
        value_size,
        expected_entries,
        expected_value_size,
    })
}

/// The program, its maps and its attachments. Dropping it detaches the
/// program from every interface, unless it is pinned ([`XdpDatapath::open`]):
/// then it only closes this process's descriptors.
pub struct XdpDatapath {
    // Field order matters for Drop: the table mappings go before the maps.
    table: NodeTable,
    _table_maps: [MapData; 3],
    counters: PerCpuArray<MapData, CounterBlock>,
    keys: Array<MapData, KeyState>,
    probe_key: Array<MapData, ProbeSecret>,
    /// What `keys` holds, so that `set_keys` writes only what changes.
    installed_keys: Box<[KeyState; KEY_SLOTS as usize]>,
    attachments: Vec<Attachment>,
    program: Program,
    pins: Option<Pins>,
}

impl XdpDatapath {
    /// Loads the embedded XDP program into the kernel for this process
    /// alone: pinned nowhere, unloaded and detached when dropped. For
    /// `BPF_PROG_TEST_RUN` and in-process measurements; the agent uses
    /// [`XdpDatapath::open`].
    pub fn load(options: LoadOptions) -> Result<Self, XdpError> {
        raise_memlock_limit();
        let globals = Globals::of(&options);
        let mut ebpf = globals
            .loader(options.max_nodes)
            .load(EBPF_OBJECT)
            .map_err(|e| XdpError::Load(Box::new(e)))?;
        verify(&mut ebpf)?;
        let maps = Maps::take(&mut ebpf, options.max_nodes)?;
        Self::assemble(
            maps,
            options.max_nodes,
            Program::Owned(Box::new(ebpf)),
            None,
        )
    }

    /// Opens the datapath of `instance` with the embedded program: adopts
    /// what is pinned, replaces the program when only it changed, refuses
    /// another layout (see the module documentation). Mounts bpffs when it
    /// is not mounted, and holds the instance's lock (a second agent on the
    /// same instance is refused) for as long as the value lives.
    pub fn open(options: LoadOptions, instance: &str) -> Result<Self, XdpError> {
        Self::open_object(EBPF_OBJECT, options, instance)
    }

    /// [`XdpDatapath::open`] with the XDP object `object` (a build of
    /// `hb-xdp`): what the upgrade test opens a changed program with.
    pub fn open_object(
        object: &[u8],
        options: LoadOptions,
        instance: &str,
    ) -> Result<Self, XdpError> {
        raise_memlock_limit();
        let dir = InstanceDir::new(instance)?;
        pins::ensure_bpffs()?;
        let lock = InstanceLock::acquire(instance)?;
        let pinned = dir.scan()?;
        if let Some(&found) = pinned.layouts.iter().find(|&&v| v != LAYOUT_VERSION) {
            return Err(XdpError::OtherLayout {
                dir: dir.layout_dir(found),
                instance: instance.to_owned(),
                found,
                expected: LAYOUT_VERSION,
            });
        }
        // Refused before anything is loaded: aya would reuse a pinned map
        // of any size.
        let mut maps_pinned = true;
        for name in PINNED_MAPS {
            let path = dir.map_pin(name);
            match MapData::from_pin(&path) {
                Ok(map) => check_pinned_map(&dir, name, &map, options.max_nodes)?,
                Err(_) if !path.exists() => maps_pinned = false,
                Err(e) => return Err(pin_error("opening the pinned map", &path)(Box::new(e))),
            }
        }
        let adopted = dir.map_pin(globals::SEEN_MAP).exists();
        let globals = Globals::of(&options);
        let digest = globals.digest(object);
        let current = dir.program_pin(digest);
        if maps_pinned && current.exists() {
            tracing::info!(
                instance,
                program = %current.display(),
                "adopting the pinned XDP program and maps (nothing reloaded)"
            );
        } else {
            load_pinned(object, &globals, options.max_nodes, &dir, &current)?;
            let previous: Vec<String> = pinned
                .programs
                .iter()
                .filter(|(d, _)| *d != digest)
                .map(|(_, path)| path.display().to_string())
                .collect();
            if previous.is_empty() {
                tracing::info!(instance, program = %current.display(), "XDP program loaded and pinned");
            } else {
                tracing::info!(
                    instance,
                    program = %current.display(),
                    previous = previous.join(", "),
                    maps_kept = adopted,
                    "XDP program replaced (another build or other load-time settings)"
                );
            }
        }
        let mut program = Xdp::from_pin(&current, XdpAttachType::Interface)
            .map_err(|e| pin_error("opening the pinned program", &current)(Box::new(e)))?;
        let program_id = program
            .info()
            .map_err(|e| XdpError::Program {
                op: "reading the program's id",
                source: Box::new(e),
            })?
            .id();
        // Every link runs the current program before any other pin goes.
        for link in &pinned.links {
            switch_link(&mut program, link, program_id)?;
        }
        for (d, path) in &pinned.programs {
            if *d != digest {
                pins::unpin(path)?;
                tracing::info!(instance, pin = %path.display(), "removed a previous program's pin");
            }
        }
        let maps = Maps::open_pinned(&dir, options.max_nodes)?;
        Self::assemble(
            maps,
            options.max_nodes,
            Program::Pinned(Box::new(program)),
            Some(Pins {
                dir,
                program_id,
                adopted,
                _lock: lock,
            }),
        )
    }

    fn assemble(
        maps: Maps,
        max_nodes: u32,
        program: Program,
        pins: Option<Pins>,
    ) -> Result<Self, XdpError> {
        let Maps {
            seen,
            slots,
            counters,
            keys,
            probes,
            probe_key,
        } = maps;
        let mmap = |map: &'static str, e| XdpError::Mmap { map, source: e };
        // SAFETY: the three maps are BPF_F_MMAPABLE arrays of `max_nodes`
        // entries whose value types are u64, NodeSlot and u64 (hb-ebpf's
        // definitions; their sizes were checked when they were opened).
        let table = unsafe {
            NodeTable::new(
                Mapping::of_bpf_array(seen.fd().as_fd(), max_nodes)
                    .map_err(|e| mmap(globals::SEEN_MAP, e))?,
                &Mapping::<NodeSlot>::of_bpf_array(slots.fd().as_fd(), max_nodes)
                    .map_err(|e| mmap(globals::NODES_MAP, e))?,
                Mapping::of_bpf_array(probes.fd().as_fd(), max_nodes)
                    .map_err(|e| mmap(globals::PROBES_MAP, e))?,
            )
        };
        let probe_key = Array::try_from(Map::Array(probe_key)).map_err(|e| XdpError::Map {
            op: "opening the probe secret",
            source: Box::new(e),
        })?;
        let counters =
            PerCpuArray::try_from(Map::PerCpuArray(counters)).map_err(|e| XdpError::Map {
                op: "opening the counters",
                source: Box::new(e),
            })?;
        let keys = Array::try_from(Map::Array(keys)).map_err(|e| XdpError::Map {
            op: "opening the key table",
            source: Box::new(e),
        })?;
        // A pinned key table holds the keys of the previous agent: start
        // from what it holds, so that `set_keys` writes only the changes.
        let mut installed_keys = Box::new([KeyState::default(); KEY_SLOTS as usize]);
        for (id, slot) in (0..KEY_SLOTS).zip(installed_keys.iter_mut()) {
            *slot = keys.get(&id, 0).map_err(|e| XdpError::Map {
                op: "reading the key table",
                source: Box::new(e),
            })?;
        }
        Ok(XdpDatapath {
            table,
            _table_maps: [seen, slots, probes],
            counters,
            keys,
            probe_key,
            installed_keys,
            attachments: Vec::new(),
            program,
            pins,
        })
    }

    /// The node table, shared with the kernel.
    pub fn table(&self) -> &NodeTable {
        &self.table
    }

    /// Whether the node table was found pinned at start: the program kept
    /// recording while no agent ran, so its seen words, records and
    /// intervals are live. Always false for [`XdpDatapath::load`].
    pub fn adopted(&self) -> bool {
        self.pins.as_ref().is_some_and(|pins| pins.adopted)
    }

    /// Whether a live pinned link attaches the program to `interface` now
    /// (so it recorded there while no agent ran, unless the link was made
    /// by this start).
    pub fn live_link_on(&self, interface: &str) -> bool {
        let Some(pins) = &self.pins else {
            return false;
        };
        let Ok(pinned) = pins.dir.scan() else {
            return false;
        };
        pinned.links.iter().any(|link| {
            link.interface == interface
                && pins::link_state(&link.path).is_ok_and(|state| {
                    state.ifindex != 0 && Some(state.ifindex) == pins::ifindex(interface)
                })
        })
    }

    /// The instance and its directory of pins, when opened pinned.
    pub fn pin_dir(&self) -> Option<&InstanceDir> {
        self.pins.as_ref().map(|pins| &pins.dir)
    }

    /// The loaded program (for `BPF_PROG_TEST_RUN`).
    pub fn program(&mut self) -> Result<&mut Xdp, XdpError> {
        match &mut self.program {
            Program::Owned(ebpf) => xdp_program(ebpf),
            Program::Pinned(program) => Ok(program),
        }
    }

    /// The kernel's id of the loaded program.
    pub fn program_id(&mut self) -> Result<u32, XdpError> {
        Ok(self
            .program()?
            .info()
            .map_err(|e| XdpError::Program {
                op: "reading the program's id",
                source: Box::new(e),
            })?
            .id())
    }

    /// Forwards the program's aya-log records to this process's log, from a
    /// task of the current tokio runtime.
    pub fn forward_log(&mut self) -> Result<(), XdpError> {
        let logger = match (&mut self.program, &self.pins) {
            (Program::Owned(ebpf), _) => aya_log::EbpfLogger::init(ebpf),
            (Program::Pinned(_), Some(pins)) => aya_log::EbpfLogger::init_from_id(pins.program_id),
            (Program::Pinned(_), None) => unreachable!("a pinned program comes with its pins"),
        }
        .map_err(|e| XdpError::Log {
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
    /// error, detaches from those attached by this call.
    ///
    /// Pinned ([`XdpDatapath::open`]): an interface that already has a link
    /// of this instance keeps it (the program never left it), unless the
    /// link is in the other mode than `mode` asks for or its interface was
    /// replaced (then it is attached again); links of interfaces no longer
    /// configured are removed (detached); new links are pinned.
    pub fn attach_all(&mut self, interfaces: &[String], mode: XdpMode) -> Result<(), XdpError> {
        let pinned_links = match &self.pins {
            Some(pins) => {
                let links = pins.dir.scan()?.links;
                for link in links.iter().filter(|l| !interfaces.contains(&l.interface)) {
                    pins::detach_link(&link.path)?;
                    tracing::info!(
                        interface = link.interface,
                        instance = pins.dir.instance(),
                        "XDP program detached: the interface is no longer configured"
                    );
                }
                Some(links)
            }
            None => None,
        };
        let first_new = self.attachments.len();
        for interface in interfaces {
            let kept = match &pinned_links {
                Some(links) => self.keep_link(links, interface, mode)?,
                None => false,
            };
            if kept {
                continue;
            }
            match self.attach(interface, mode) {
                Ok(mode) => tracing::info!(interface, mode = mode.name(), "XDP program attached"),
                Err(e) => {
                    for attachment in self.attachments.split_off(first_new) {
                        self.detach(attachment).ok();
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Keeps the pinned link of `interface` when it is live and in a mode
    /// `mode` allows (true); otherwise removes it, saying why (false).
    fn keep_link(
        &mut self,
        links: &[LinkPin],
        interface: &str,
        mode: XdpMode,
    ) -> Result<bool, XdpError> {
        let mut kept = false;
        for link in links.iter().filter(|l| l.interface == interface) {
            let problem = match (mode, link.mode) {
                _ if kept => Some("another link of the interface is kept".to_owned()),
                (XdpMode::Native, AttachedMode::Generic)
                | (XdpMode::Generic, AttachedMode::Native) => Some(format!(
                    "xdp_mode is now {mode}, the link is {}",
                    link.mode.name()
                )),
                _ => match pins::link_state(&link.path) {
                    Ok(state)
                        if state.ifindex != 0
                            && Some(state.ifindex) == pins::ifindex(interface) =>
                    {
                        None
                    }
                    Ok(_) => Some("its interface was removed or replaced".to_owned()),
                    Err(e) => Some(format!("it cannot be read ({e})")),
                },
            };
            match problem {
                None => {
                    kept = true;
                    tracing::info!(
                        interface,
                        mode = link.mode.name(),
                        "XDP program still attached (the pinned link is kept)"
                    );
                    self.attachments.push(Attachment {
                        interface: interface.to_owned(),
                        mode: link.mode,
                        link: AttachmentLink::Pinned(link.path.clone()),
                    });
                }
                Some(problem) => {
                    tracing::info!(
                        interface,
                        problem,
                        "re-attaching XDP: removing the pinned link"
                    );
                    pins::detach_link(&link.path)?;
                }
            }
        }
        Ok(kept)
    }

    /// Attaches the program to `interface` (pinning the link when the
    /// program is pinned). In `auto` mode it tries native (driver) XDP
    /// first and falls back to generic (skb) mode, logging why.
    pub fn attach(&mut self, interface: &str, mode: XdpMode) -> Result<AttachedMode, XdpError> {
        let pin_dir = self.pins.as_ref().map(|pins| pins.dir.clone());
        let program = self.program()?;
        let attempt = |program: &mut Xdp, mode: AttachedMode| {
            program
                .attach(interface, mode.kernel_mode())
                .map(|link| (link, mode))
                .map_err(|e| XdpError::Attach {
                    interface: interface.to_owned(),
                    mode: mode.name(),
                    source: Box::new(e),
                })
        };
        let (link, mode) = match mode {
            XdpMode::Native => attempt(program, AttachedMode::Native)?,
            XdpMode::Generic => attempt(program, AttachedMode::Generic)?,
            XdpMode::Auto => match attempt(program, AttachedMode::Native) {
                Ok(attached) => attached,
                Err(native) => {
                    tracing::warn!(
                        interface,
                        "native XDP is not available ({:#}); falling back to generic \
                         (skb) mode, which works everywhere but costs more CPU per packet",
                        anyhow::Error::from(native)
                    );
                    attempt(program, AttachedMode::Generic)?
                }
            },
        };
        let link = match pin_dir {
            None => AttachmentLink::Owned(link),
            Some(dir) => {
                let path = dir.link_pin(mode, interface);
                let taken = program.take_link(link).map_err(|e| XdpError::Program {
                    op: "taking the XDP link",
                    source: Box::new(e),
                })?;
                let fd_link = FdLink::try_from(taken)
                    .map_err(|e| pin_error("pinning the XDP link at", &path)(Box::new(e)))?;
                // Dropping the pinned link closes only this descriptor.
                fd_link
                    .pin(&path)
                    .map_err(|e| pin_error("pinning the XDP link at", &path)(Box::new(e)))?;
                AttachmentLink::Pinned(path)
            }
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

    fn detach(&mut self, attachment: Attachment) -> Result<(), XdpError> {
        match attachment.link {
            AttachmentLink::Owned(link) => {
                self.program()?
                    .detach(link)
                    .map_err(|e| XdpError::Program {
                        op: "detaching XDP",
                        source: Box::new(e),
                    })?
            }
            AttachmentLink::Pinned(path) => pins::detach_link(&path)?,
        }
        tracing::info!(interface = attachment.interface, "XDP program detached");
        Ok(())
    }

    /// Detaches the program from every interface (pinned links included:
    /// their pins are removed).
    pub fn detach_all(&mut self) -> Result<(), XdpError> {
        for attachment in std::mem::take(&mut self.attachments) {
            self.detach(attachment)?;
        }
        Ok(())
    }

    /// Stops: a program of this process only is detached; a pinned one
    /// stays attached and recording, and this process lets go of it
    /// (logging where it is and how to remove it).
    pub fn stop(&mut self) -> Result<(), XdpError> {
        let Some(pins) = &self.pins else {
            return self.detach_all();
        };
        let interfaces: Vec<&str> = self
            .attachments
            .iter()
            .map(|a| a.interface.as_str())
            .collect();
        tracing::info!(
            instance = pins.dir.instance(),
            pins = %pins.dir.path().display(),
            interfaces = interfaces.join(","),
            "the XDP program stays attached and recording; `hb detach --instance {}` removes it",
            pins.dir.instance()
        );
        self.attachments.clear();
        Ok(())
    }

    /// Installs the keys heartbeats are verified with, from the next packet
    /// on. Slots that gain or change a key are written before slots that
    /// lose one, so during a rotation the old and the new key are both
    /// accepted at every instant. The program is given each key as its
    /// [`KeyState`] (the SipHash states after an authenticated heartbeat's
    /// first word), computed here.
    pub fn set_keys(&mut self, keys: &KeySlots) -> Result<(), XdpError> {
        let states = key_states(keys);
        let changed: Vec<u32> = (0..KEY_SLOTS)
            .filter(|&id| states[id as usize] != self.installed_keys[id as usize])
            .collect();
        let (gaining, losing): (Vec<u32>, Vec<u32>) = changed
            .into_iter()
            .partition(|&id| states[id as usize].is_in_use());
        for id in gaining.into_iter().chain(losing) {
            self.keys
                .set(id, states[id as usize], 0)
                .map_err(|e| XdpError::Map {
                    op: "writing the key table",
                    source: Box::new(e),
                })?;
            self.installed_keys[id as usize] = states[id as usize];
        }
        Ok(())
    }

    /// Installs hb's echo identifier and the probe secret (a SipHash key the
    /// agent generates at each start), from the next packet on, then clears
    /// every node's last recorded probe sequence so that the agent's
    /// sequences may start again from 1: replies tagged under an earlier
    /// secret fail the tag from the moment the new one is written.
    pub fn set_probe_secret(&mut self, identifier: u16, key: &Key) -> Result<(), XdpError> {
        self.probe_key
            .set(0, ProbeSecret::new(identifier, key), 0)
            .map_err(|e| XdpError::Map {
                op: "writing the probe secret",
                source: Box::new(e),
            })?;
        let probes = &self.table.probes;
        for id in 0..probes.len() {
            probes.set(id, 0);
        }
        Ok(())
    }

    /// The sequence of the last probe reply recorded for each node (0:
    /// none since the secret was installed), shared with the kernel.
    pub fn probe_sequences(&self) -> &Mapping<u64> {
        &self.table.probes
    }

    /// Current value of every counter, summed over CPUs, in
    /// [`Counter::ALL`](hb_common::counters::Counter::ALL) order.
    pub fn counters(&self) -> Result<CounterValues, XdpError> {
        let per_cpu = self.counters.get(&0, 0).map_err(|e| XdpError::Map {
            op: "reading counters",
            source: Box::new(e),
        })?;
        Ok(sum_blocks(per_cpu.iter()))
    }
}

/// Every counter summed over per-CPU [`CounterBlock`]s.
pub fn sum_blocks<'a>(blocks: impl IntoIterator<Item = &'a CounterBlock>) -> CounterValues {
    let mut out = CounterValues::default();
    for block in blocks {
        for (total, value) in out.iter_mut().zip(block.values()) {
            *total += value;
        }
    }
    out
}

fn raise_memlock_limit() {
    if let Err(e) = sys::raise_memlock_limit() {
        tracing::debug!("could not raise RLIMIT_MEMLOCK: {e}");
    }
}

/// Loads `object` with every map pinned in `dir` (the pinned ones reused,
/// the missing ones created and pinned), verifies it and pins it at
/// `program_pin`. The pin is the last step: a process killed before it
/// leaves no trace of the new program.
fn load_pinned(
    object: &[u8],
    globals: &Globals,
    max_nodes: u32,
    dir: &InstanceDir,
    program_pin: &Path,
) -> Result<(), XdpError> {
    dir.create()?;
    let map_pins = PINNED_MAPS.map(|name| (name, dir.map_pin(name)));
    let mut loader = globals.loader(max_nodes);
    for (name, path) in &map_pins {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(object)
        .map_err(|e| XdpError::Load(Box::new(e)))?;
    let program = verify(&mut ebpf)?;
    // A pin of this name without its maps (they were removed by hand).
    pins::unpin(program_pin)?;
    program
        .pin(program_pin)
        .map_err(|e| pin_error("pinning the XDP program at", program_pin)(Box::new(e)))?;
    Ok(())
}

/// Switches the pinned link `link` to the program `program_id` unless it
/// runs it already: `bpf_link_update`, atomic for the packets.
fn switch_link(program: &mut Xdp, link: &LinkPin, program_id: u32) -> Result<(), XdpError> {
    let path = &link.path;
    let state = pins::link_state(path)
        .map_err(|e| pin_error("reading the pinned link", path)(Box::new(e)))?;
    if state.program_id == program_id {
        return Ok(());
    }
    let pinned = PinnedLink::from_pin(path)
        .map_err(|e| pin_error("opening the pinned link", path)(Box::new(e)))?;
    // `FdLink::from` keeps the pin (unlike `PinnedLink::unpin`).
    let xdp_link = XdpLink::try_from(FdLink::from(pinned))
        .map_err(|e| pin_error("opening the pinned XDP link", path)(Box::new(e)))?;
    let id = program
        .attach_to_link(xdp_link)
        .map_err(|e| pin_error("switching the program of the link", path)(Box::new(e)))?;
    // The program now manages the link and would detach it when dropped:
    // take it back; dropping it closes only this descriptor.
    let taken = program.take_link(id).map_err(|e| XdpError::Program {
        op: "taking the XDP link",
        source: Box::new(e),
    })?;
    drop(FdLink::try_from(taken).ok());
    tracing::info!(
        interface = link.interface,
        from = state.program_id,
        to = program_id,
        "XDP link switched to the current program (bpf_link_update)"
    );
    Ok(())
}

/// Loads (verifies) the XDP program of `ebpf`.
fn verify(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    let program = xdp_program(ebpf)?;
    program.load().map_err(|e| XdpError::Program {
        op: "verifying the XDP program",
        source: Box::new(e),
    })?;
    Ok(program)
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
