//! Names of the XDP program's load-time constants and maps, set by userspace
//! with `EbpfLoader::set_global` / `map_max_entries` before the program loads.

/// `u16`, host byte order: the UDP destination port heartbeats are sent to.
pub const UDP_PORT: &str = "HB_UDP_PORT";
/// `u8`: 1 to pass valid heartbeats on to the network stack after recording
/// them (XDP_PASS), 0 to consume them (XDP_DROP).
pub const PASS_HEARTBEATS: &str = "HB_PASS_HEARTBEATS";

/// The hot half of the node table: a `BPF_F_MMAPABLE` array of seen words
/// ([`crate::table::seen`]) indexed by node id, sized to `max_nodes`.
pub const SEEN_MAP: &str = "HB_SEEN";
/// The cold half of the node table: a `BPF_F_MMAPABLE` array of
/// [`crate::table::NodeRecord`] indexed by node id, sized to `max_nodes`.
pub const NODES_MAP: &str = "HB_NODES";
/// The per-CPU outcome counters, indexed by [`crate::counters::Counter`].
pub const COUNTERS_MAP: &str = "HB_COUNTERS";
/// The name of the XDP program in the object file.
pub const PROGRAM: &str = "hb_xdp";
