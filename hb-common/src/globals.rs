//! Names of the XDP program's load-time constants and maps, set by userspace
//! with `EbpfLoader::set_global` / `map_max_entries` before the program loads.

/// `u16`, host byte order: the UDP destination port heartbeats are sent to.
pub const UDP_PORT: &str = "HB_UDP_PORT";
/// `u8`: 1 to pass valid heartbeats on to the network stack after recording
/// them (XDP_PASS), 0 to consume them (XDP_DROP).
pub const PASS_HEARTBEATS: &str = "HB_PASS_HEARTBEATS";
/// `u8`: 1 to accept unauthenticated heartbeats (key id 0), 0 to refuse them.
pub const ACCEPT_UNAUTHENTICATED: &str = "HB_ACCEPT_UNAUTHENTICATED";

/// The hot half of the node table: a `BPF_F_MMAPABLE` array of seen words
/// ([`crate::table::seen`]) indexed by node id, sized to `max_nodes`.
pub const SEEN_MAP: &str = "HB_SEEN";
/// The cold half of the node table: a `BPF_F_MMAPABLE` array of
/// [`crate::table::NodeSlot`] (record and interval word) indexed by node
/// id, sized to `max_nodes`.
pub const NODES_MAP: &str = "HB_NODES";
/// The per-CPU outcome counters: one entry, a
/// [`crate::counters::CounterBlock`] per CPU.
pub const COUNTERS_MAP: &str = "HB_COUNTERS";
/// The monitor's keys: an array of [`crate::auth::KeyState`] indexed by key
/// id, [`crate::auth::KEY_SLOTS`] entries, written by the agent at start and
/// on reload.
pub const KEYS_MAP: &str = "HB_KEYS";
/// The per-node sequence of the last recorded probe reply: a
/// `BPF_F_MMAPABLE` array of `u64` indexed by node id, sized to `max_nodes`
/// (see [`crate::probe`]); cleared by the agent when it installs a new
/// probe secret.
pub const PROBES_MAP: &str = "HB_PROBES";
/// The probe secret and hb's echo identifier: one
/// [`crate::probe::ProbeSecret`], written by the agent.
pub const PROBE_KEY_MAP: &str = "HB_PROBE_KEY";
/// The name of the XDP program in the object file.
pub const PROGRAM: &str = "hb_xdp";
/// A test-only XDP program, never attached: computes SipHash-2-4 with the
/// kernel-side code over a packet laid out as key (16 bytes), an 8-byte
/// slot for the result, the message length (1 byte, 0 to 63), then the
/// message, and writes the result (little-endian) into the slot. Run through BPF_PROG_TEST_RUN to
/// check the kernel side against the reference vectors.
pub const SIPHASH_PROGRAM: &str = "hb_siphash";
/// Test-only, beside [`SIPHASH_PROGRAM`]: SipHash-2-4 from a precomputed
/// [`crate::siphash::Prefix`] (the path `hb_xdp` verifies tags by), over a
/// packet laid out as the prefix (40 bytes: v0..v3 then the first word,
/// little-endian), an 8-byte result slot, the message length (1 byte, 0 to
/// 63), then the message; XDP_PASS with the result written, XDP_DROP if the
/// prefix refuses the message.
pub const SIPHASH_PREFIX_PROGRAM: &str = "hb_siphash_prefix";
/// Bench-only XDP programs, never attached (object `hb-floor`): the floor
/// under `hb_xdp`'s cost per packet, timed by `hb-tools bench xdp-cost` the
/// same way. An empty program: BPF_PROG_TEST_RUN's own cost per run.
pub const FLOOR_EMPTY_PROGRAM: &str = "hb_floor_empty";
/// One `bpf_ktime_get_ns` (what every accepted heartbeat reads).
pub const FLOOR_CLOCK_PROGRAM: &str = "hb_floor_clock";
/// One array lookup and an increment of the value.
pub const FLOOR_LOOKUP_PROGRAM: &str = "hb_floor_lookup";

/// The version of what the agent pins in bpffs beside the program: the set
/// of maps above and the layout of their values ([`crate::table::NodeSlot`],
/// the seen and interval words, [`crate::auth::KeyState`], the counters).
/// A starting agent adopts pinned maps only of this version, so bump it
/// whenever any of them changes; a program that differs only in code keeps
/// the maps (it replaces the pinned one in place).
///
/// 2: the interval words moved into `HB_NODES` (`HB_INTERVALS` is gone),
/// `HB_COUNTERS` is one [`crate::counters::CounterBlock`] per CPU, and
/// `HB_KEYS` holds [`crate::auth::KeyState`]s instead of keys.
///
/// 3: probe replies: `HB_PROBES` and `HB_PROBE_KEY` are new, `HB_COUNTERS`
/// has the `probe_*` counters in its slots 11 to 15, and
/// [`crate::table::SLOT_PROBED_LAST`] is a new slot flag.
pub const LAYOUT_VERSION: u32 = 3;
