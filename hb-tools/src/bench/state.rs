//! `hb-tools bench state`: what the agent's state file costs at N nodes,
//! before and after the binary format (issue 11), in one process on a real
//! disk (a directory under `/var/tmp` by default; its file system is
//! reported, and tmpfs is refused: an fsync there measures nothing).
//!
//! - Format 1 (before): the JSON file agents wrote up to 59a0ad8, written
//!   as they wrote it (`serde_json::to_vec`, temporary file, fsync, rename;
//!   they did not sync the directory), read back through
//!   [`state_file::load`] (what an upgraded agent does) and through plain
//!   `serde_json` into the format-1 struct (what the old agent did).
//! - Format 2 (after): [`state_file::save`] (encode, temporary file, fsync,
//!   rename, fsync of the directory) and [`state_file::load`].
//! - The journal: one [`Journal::append`] of a sweep with 1, 1000 and N
//!   transitions, its fsync included, each on an emptied journal (as after
//!   a snapshot).
//!
//! Every figure is timed `rounds` times (best and median). Loads are timed
//! warm (the file just written, in the page cache: an agent restarted
//! without a reboot) and cold (its pages dropped first with
//! `posix_fadvise(DONTNEED)`; a VM's host may still cache them). Every
//! allocation above 128 KiB is mapped fresh (`mallopt(M_MMAP_THRESHOLD)`),
//! so each round faults its buffers in as a starting agent does, at every
//! size: glibc would otherwise reuse the previous round's memory below 32
//! MB (its largest dynamic threshold) and not above, which made format 2's
//! load at 100k nodes read 5 ms instead of 12.5.
//!
//! Both files hold the same table ([`fleet`]): every node heard, random
//! incarnations and sequences, IPv4 source addresses, some nodes down,
//! suspect, flapping or left, flap history and held `down` actions (format
//! 1 has no place for the last three, nor for addresses and arrivals).

use std::{
    fs::{self, File},
    io::Write,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, bail};
use hb::{
    clock,
    detect::{
        brake::BrakeMemory,
        detector::{FlapHistory, NodeState},
    },
    sinks::state_file::{
        self, SavedNode, SavedState,
        journal::{Change, Journal},
    },
};
use hb_common::table::{intervals, seen, src_octets};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::rng;

/// Seed of the generated table.
const SEED: u64 = 11;
/// Journal sweeps measured besides the one with every node.
const JOURNAL_SWEEPS: [u32; 2] = [1, 1000];

/// `hb-tools bench state`'s report.
#[derive(Debug, Serialize)]
pub struct StateCost {
    pub nodes: u32,
    /// Times each figure was measured.
    pub rounds: u32,
    /// Where the files were written, and on what.
    pub dir: PathBuf,
    pub filesystem: Filesystem,
    pub content: Content,
    /// Before: format 1 (JSON).
    pub format1: Format1Cost,
    /// After: format 2 (binary snapshot).
    pub format2: Format2Cost,
    /// One journal append per sweep size.
    pub journal: Vec<JournalCost>,
}

/// The file system the files were written on (from `/proc/self/mounts`).
#[derive(Debug, Serialize)]
pub struct Filesystem {
    pub fs_type: String,
    pub source: String,
    pub mount_point: PathBuf,
}

/// What the saved table holds besides one record per node.
#[derive(Debug, Serialize)]
pub struct Content {
    pub up: u32,
    pub down: u32,
    pub suspect: u32,
    pub flapping: u32,
    pub left: u32,
    /// Nodes with flap history (format 2 only).
    pub flap_histories: usize,
    /// `down` actions the brake holds (format 2 only).
    pub held: usize,
}

/// Times of one figure over the rounds, ns.
#[derive(Debug, Serialize)]
pub struct Timing {
    pub best_ns: u64,
    pub median_ns: u64,
    pub runs_ns: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct Format1Cost {
    pub bytes: u64,
    /// `serde_json::to_vec`, write, fsync, rename.
    pub save: Timing,
    /// Through `state_file::load` (read, JSON parse, convert).
    pub load: Timing,
    pub load_cold: Timing,
    /// `fs::read` and `serde_json::from_slice` into the format-1 struct.
    pub load_plain_json: Timing,
}

#[derive(Debug, Serialize)]
pub struct Format2Cost {
    pub bytes: u64,
    /// `state_file::save`.
    pub save: Timing,
    /// `state_file::load`.
    pub load: Timing,
    pub load_cold: Timing,
}

#[derive(Debug, Serialize)]
pub struct JournalCost {
    pub transitions: u32,
    pub bytes: u64,
    /// `Journal::append`, its `fdatasync` included.
    pub append: Timing,
}

/// Format 1 as agents up to 59a0ad8 wrote it.
#[derive(Debug, Serialize, Deserialize)]
struct V1Contents {
    format: u32,
    nodes: Vec<V1Node>,
}

#[derive(Debug, Serialize, Deserialize)]
struct V1Node {
    id: u32,
    state: NodeState,
    heartbeats: u64,
    incarnation: u64,
    sequence: u64,
    interval_ms: u32,
    #[serde(default)]
    authenticated: bool,
    #[serde(default)]
    interval_mean_us: u32,
    #[serde(default)]
    interval_mad_us: u32,
}

impl V1Node {
    /// What the old agent saved of the same node.
    fn of(node: &SavedNode) -> Self {
        V1Node {
            id: node.id,
            state: node.state,
            heartbeats: node.heartbeats,
            incarnation: node.incarnation,
            sequence: node.sequence,
            interval_ms: node.interval_ms,
            authenticated: node.authenticated,
            interval_mean_us: intervals::mean_us(node.interval_word),
            interval_mad_us: intervals::mad_us(node.interval_word),
        }
    }
}

/// Measures both formats and the journal at `nodes` nodes in a fresh
/// directory under `parent` (removed afterwards).
pub fn state(nodes: u32, rounds: u32, parent: &Path) -> anyhow::Result<StateCost> {
    let rounds = rounds.max(1);
    fresh_allocations();
    let dir = ScratchDir::create(parent)?;
    let filesystem = filesystem_of(dir.path())?;
    if matches!(filesystem.fs_type.as_str(), "tmpfs" | "ramfs") {
        bail!(
            "{} is on {}: an fsync there costs nothing; pass --dir on a disk",
            dir.path().display(),
            filesystem.fs_type
        );
    }
    let state = fleet(nodes, clock::monotonic_ns(), clock::unix_ns());
    let content = content(&state);

    let format1 = format1(dir.path(), &state, rounds)?;
    let format2 = format2(dir.path(), &state, rounds)?;
    let mut journal = Vec::new();
    let mut sizes: Vec<u32> = JOURNAL_SWEEPS.into_iter().filter(|&n| n < nodes).collect();
    sizes.push(nodes);
    for transitions in sizes {
        journal.push(journal_append(dir.path(), transitions, rounds)?);
    }
    Ok(StateCost {
        nodes,
        rounds,
        dir: dir.path().to_owned(),
        filesystem,
        content,
        format1,
        format2,
        journal,
    })
}

/// A table of `nodes` nodes as an agent at monotonic `now_ns` (Unix
/// `unix_ns`) would save it: every node heard within its interval (1 s,
/// every tenth node 100 ms), incarnations from the last 30 days (Unix µs,
/// as senders pick them) and sequences since then, half of them
/// authenticated, a distinct 10.0.0.0/8 address each. Every 100th node is
/// down (a tenth of those held by the brake), every 500th suspect, every
/// 1000th flapping, every 2000th left; down, flapping and a further 1% of
/// nodes have flap history.
pub fn fleet(nodes: u32, now_ns: u64, unix_ns: u64) -> SavedState {
    const DAY_US: u64 = 86_400_000_000;
    let mut rng = rng::seeded(SEED);
    let mut flaps = Vec::new();
    let mut held = Vec::new();
    let state_of = |id: u32| match id {
        _ if id % 2000 == 1999 => NodeState::Left,
        _ if id % 1000 == 999 => NodeState::Flapping,
        _ if id % 500 == 499 => NodeState::Suspect,
        _ if id % 100 == 99 => NodeState::Down,
        _ => NodeState::Up,
    };
    let saved = (0..nodes)
        .map(|id| {
            let interval_ms: u32 = if id % 10 == 0 { 100 } else { 1000 };
            let interval_ns = u64::from(interval_ms) * 1_000_000;
            let uptime_us = rng.random_range(60_000_000..30 * DAY_US);
            let sequence = uptime_us / (u64::from(interval_ms) * 1000);
            let state = state_of(id);
            let silent_ns = match state {
                NodeState::Down => rng.random_range(3..600) * interval_ns,
                NodeState::Suspect => 2 * interval_ns,
                _ => rng.random_range(0..interval_ns),
            };
            let arrival = now_ns.saturating_sub(silent_ns).max(2);
            let downs = match state {
                NodeState::Down | NodeState::Flapping => rng.random_range(1..=3),
                _ if rng.random_ratio(1, 100) => 1,
                _ => 0,
            };
            if downs > 0 {
                let mut downs_ns: Vec<u64> = (0..downs)
                    .map(|_| arrival.saturating_sub(rng.random_range(1..600) * 1_000_000_000))
                    .collect();
                downs_ns.sort_unstable();
                let flapping = state == NodeState::Flapping;
                flaps.push(FlapHistory {
                    id,
                    downs_ns,
                    steady_since_ns: if flapping {
                        arrival.saturating_sub(interval_ns).max(2)
                    } else {
                        0
                    },
                    last_arrival_ns: if flapping { arrival } else { 0 },
                });
            }
            if state == NodeState::Down && id % 1000 == 99 {
                held.push((id, arrival + 3 * interval_ns));
            }
            let mean_us = interval_ms * 1000 + rng.random_range(0..2000);
            SavedNode {
                id,
                state,
                heartbeats: sequence + rng.random_range(0..1_000_000),
                incarnation: unix_ns / 1000 - uptime_us,
                sequence,
                interval_ms,
                authenticated: rng.random_bool(0.5),
                interval_word: intervals::word(mean_us, rng.random_range(0..5000)),
                src_addr: src_octets(std::net::Ipv4Addr::from(0x0a00_0000 + id).into()),
                src_port: rng.random_range(32768..61000),
                seen_word: seen::word(arrival, state == NodeState::Left),
            }
        })
        .collect();
    held.sort_unstable_by_key(|&(id, at)| (at, id));
    SavedState {
        boot_id: clock::boot_id(),
        saved_monotonic_ns: now_ns,
        saved_unix_ns: unix_ns,
        swept_until_ns: now_ns,
        journal_seq: 0,
        nodes: saved,
        flaps,
        brake: BrakeMemory {
            engaged_since_ns: held.first().map(|&(_, at)| at),
            held,
            ..BrakeMemory::default()
        },
        // Runs decided and not started are a burst's queue, gone within
        // seconds: none in a steady snapshot.
        pending: Vec::new(),
    }
}

fn content(state: &SavedState) -> Content {
    let count = |s: NodeState| state.nodes.iter().filter(|n| n.state == s).count() as u32;
    Content {
        up: count(NodeState::Up),
        down: count(NodeState::Down),
        suspect: count(NodeState::Suspect),
        flapping: count(NodeState::Flapping),
        left: count(NodeState::Left),
        flap_histories: state.flaps.len(),
        held: state.brake.held.len(),
    }
}

fn format1(dir: &Path, state: &SavedState, rounds: u32) -> anyhow::Result<Format1Cost> {
    let path = dir.join("state-v1.json");
    let nodes: Vec<V1Node> = state.nodes.iter().map(V1Node::of).collect();
    let contents = V1Contents { format: 1, nodes };
    let save = time(rounds, || save_v1(&path, &contents))?;
    let bytes = fs::metadata(&path)?.len();

    let loaded = state_file::load(&path)?.context("the format-1 file vanished")?;
    if loaded.nodes.len() != state.nodes.len()
        || loaded
            .nodes
            .iter()
            .zip(&state.nodes)
            .any(|(a, b)| (a.id, a.state, a.sequence) != (b.id, b.state, b.sequence))
    {
        bail!("state_file::load read the format-1 file back wrong");
    }
    let load = time(rounds, || {
        state_file::load(&path)?;
        Ok(())
    })?;
    let load_cold = time_cold(rounds, &path, || {
        state_file::load(&path)?;
        Ok(())
    })?;
    let load_plain_json = time(rounds, || {
        let _: V1Contents = serde_json::from_slice(&fs::read(&path)?)?;
        Ok(())
    })?;
    fs::remove_file(&path)?;
    Ok(Format1Cost {
        bytes,
        save,
        load,
        load_cold,
        load_plain_json,
    })
}

/// Saves as the agent at 59a0ad8 did.
fn save_v1(path: &Path, contents: &V1Contents) -> anyhow::Result<()> {
    let tmp = state_file::format::temporary(path);
    let body = serde_json::to_vec(contents)?;
    let mut file = File::create(&tmp)?;
    file.write_all(&body)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

fn format2(dir: &Path, state: &SavedState, rounds: u32) -> anyhow::Result<Format2Cost> {
    let path = dir.join("state");
    let save = time(rounds, || Ok(state_file::save(&path, state)?))?;
    let bytes = fs::metadata(&path)?.len();
    if state_file::load(&path)?.as_ref() != Some(state) {
        bail!("state_file::load read the format-2 file back wrong");
    }
    let load = time(rounds, || {
        state_file::load(&path)?;
        Ok(())
    })?;
    let load_cold = time_cold(rounds, &path, || {
        state_file::load(&path)?;
        Ok(())
    })?;
    fs::remove_file(&path)?;
    Ok(Format2Cost {
        bytes,
        save,
        load,
        load_cold,
    })
}

/// One sweep's `transitions` nodes going from up to suspect, appended to an
/// emptied journal each round.
fn journal_append(dir: &Path, transitions: u32, rounds: u32) -> anyhow::Result<JournalCost> {
    let state = dir.join("journal-state");
    let mut journal = Journal::open(&state, 1)?;
    let mut runs = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        journal.clear()?;
        let change = Change::Transition {
            now_ns: clock::monotonic_ns(),
            from: NodeState::Up,
            to: NodeState::Suspect,
            held: false,
            since_ms: Some(2_100),
        };
        let t = Instant::now();
        journal.append((0..transitions).map(|id| (id, change)))?;
        runs.push(t.elapsed().as_nanos() as u64);
    }
    let (current, _) = state_file::journal::paths(&state);
    let bytes = fs::metadata(&current)?.len();
    fs::remove_file(current)?;
    Ok(JournalCost {
        transitions,
        bytes,
        append: Timing::of(runs),
    })
}

impl Timing {
    fn of(runs_ns: Vec<u64>) -> Self {
        let mut sorted = runs_ns.clone();
        sorted.sort_unstable();
        Timing {
            best_ns: sorted[0],
            median_ns: sorted[sorted.len() / 2],
            runs_ns,
        }
    }
}

/// Times `rounds` runs of `f`.
fn time(rounds: u32, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Timing> {
    let mut runs = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t = Instant::now();
        f()?;
        runs.push(t.elapsed().as_nanos() as u64);
    }
    Ok(Timing::of(runs))
}

/// Times `rounds` runs of `f`, dropping `path`'s pages from the page cache
/// before each.
fn time_cold(
    rounds: u32,
    path: &Path,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Timing> {
    let mut runs = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        drop_cached(path)?;
        let t = Instant::now();
        f()?;
        runs.push(t.elapsed().as_nanos() as u64);
    }
    Ok(Timing::of(runs))
}

/// Makes every allocation above 128 KiB a fresh mapping, freed to the
/// kernel when dropped.
fn fresh_allocations() {
    // SAFETY: mallopt only changes a malloc parameter; nothing is allocated
    // concurrently that depends on it.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
}

/// Asks the kernel to drop `path`'s (clean, synced) pages from the page
/// cache.
fn drop_cached(path: &Path) -> anyhow::Result<()> {
    let file = File::open(path)?;
    // SAFETY: a plain syscall on a file descriptor this function owns.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        bail!(
            "posix_fadvise({}): {}",
            path.display(),
            std::io::Error::from_raw_os_error(rc)
        );
    }
    Ok(())
}

/// The mount that holds `dir`: the longest mount point it is under.
fn filesystem_of(dir: &Path) -> anyhow::Result<Filesystem> {
    let dir = dir.canonicalize()?;
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let source = fields.next()?;
            let mount_point = PathBuf::from(unescape_mount(fields.next()?));
            let fs_type = fields.next()?;
            dir.starts_with(&mount_point).then(|| Filesystem {
                fs_type: fs_type.to_owned(),
                source: source.to_owned(),
                mount_point,
            })
        })
        // The last of equally long mount points is the one mounted on top.
        .max_by_key(|fs| fs.mount_point.as_os_str().len())
        .with_context(|| format!("no mount holds {}", dir.display()))
}

/// `/proc/self/mounts` writes space, tab, newline and backslash as octal
/// escapes (`\040`).
fn unescape_mount(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A directory removed (with what is in it) on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create(parent: &Path) -> anyhow::Result<Self> {
        let path = parent.join(format!("hb-bench-state-{}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_measures_everything_and_leaves_nothing() {
        let parent = std::env::temp_dir();
        let cost = match state(3000, 2, &parent) {
            Err(e) if e.to_string().contains("pass --dir") => return,
            other => other.unwrap(),
        };
        assert_eq!(
            cost.content.down, 24,
            "ids 99, 199, ... below 3000, minus the others"
        );
        assert_eq!(cost.content.held, 3);
        assert!(cost.content.flap_histories > 30);
        assert!(cost.format2.bytes * 2 < cost.format1.bytes);
        let transitions: Vec<u32> = cost.journal.iter().map(|j| j.transitions).collect();
        assert_eq!(transitions, [1, 1000, 3000]);
        assert_eq!(cost.journal[2].bytes, 3000 * 32);
        assert_eq!(cost.format1.save.runs_ns.len(), 2);
        assert!(!cost.dir.exists(), "the scratch directory is removed");
    }

    #[test]
    fn every_node_is_heard_from_its_own_ipv4_address() {
        let state = fleet(1000, 10_000_000_000_000, 1_800_000_000_000_000_000);
        assert!(
            state
                .nodes
                .iter()
                .all(|n| n.seen_word != 0 && n.heartbeats >= n.sequence)
        );
        let mut addrs: Vec<_> = state.nodes.iter().map(|n| n.src_addr).collect();
        addrs.dedup();
        assert_eq!(addrs.len(), 1000);
        assert_eq!(
            state.nodes[1].src_addr,
            src_octets("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mount(r"/x\y"), r"/x\y");
        assert_eq!(unescape_mount("/"), "/");
    }
}
