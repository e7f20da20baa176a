//! What the state file holds ([`SavedState`]) and how it is encoded: an
//! 8-byte magic, the format number, a CRC-32 and the length of the body,
//! then the body in postcard (serde, little-endian varints). About 55 bytes
//! per node instead of JSON's 188 (`cargo xtask bench --only state`).
//!
//! Monotonic times (arrivals, flap history, the brake's clock) mean
//! something only within the boot that wrote them: [`SavedState::carry_over`]
//! moves them into the current boot through the wall clock when the machine
//! rebooted in between.
//!
//! Files of format 1 (JSON, agents before the binary format) are read too
//! (`legacy.rs`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StateFileError;
use crate::{
    detect::{
        brake::BrakeMemory,
        detector::{FlapHistory, NodeState},
    },
    sinks::actions::Event,
};

/// The first bytes of a state file of format 2 and later.
pub const MAGIC: &[u8; 8] = b"hb-state";
/// The format this agent writes.
pub const FORMAT: u32 = 2;
/// Magic, format, CRC-32 of the body, length of the body.
const HEADER_LEN: usize = 8 + 4 + 4 + 8;

/// Everything the agent keeps across its restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// The kernel's boot id when saved (all zero: unknown, e.g. a file of
    /// format 1): monotonic times below are of that boot.
    pub boot_id: [u8; 16],
    /// `CLOCK_MONOTONIC` and `CLOCK_REALTIME` when saved, to carry the
    /// monotonic times over a reboot.
    pub saved_monotonic_ns: u64,
    pub saved_unix_ns: u64,
    /// Heartbeats that arrived after this (monotonic) instant had not been
    /// looked at by any sweep.
    pub swept_until_ns: u64,
    /// The last [journal](super::journal) entry this snapshot includes.
    pub journal_seq: u64,
    pub nodes: Vec<SavedNode>,
    /// Recent downs of nodes (flap damping).
    pub flaps: Vec<FlapHistory>,
    /// What the brake holds and has seen.
    pub brake: BrakeMemory,
    /// Action runs decided but not started, oldest first: a restarted
    /// agent starts them.
    pub pending: Vec<PendingRun>,
}

/// An action run decided (its transition is in the state) but not started:
/// the newest event of its node the action has not run yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRun {
    /// The action's name.
    pub action: String,
    /// The journal entry of its transition (or release).
    pub seq: u64,
    pub node_id: u32,
    pub event: Event,
    /// The state the node left.
    pub previous: NodeState,
    /// The node's silence when it was decided, ms (`None`: never heard).
    pub since_ms: Option<u32>,
}

/// What is saved about one node: its state, and what the datapath knew of
/// it (so a restarted agent knows where it was heard from, and when, even
/// when its datapath did not outlive it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedNode {
    pub id: u32,
    pub state: NodeState,
    pub heartbeats: u64,
    pub incarnation: u64,
    pub sequence: u64,
    pub interval_ms: u32,
    /// The node has sent authenticated heartbeats: it is not heard without
    /// a tag again (the downgrade set).
    pub authenticated: bool,
    /// The interval estimate (`hb_common::table::intervals`).
    pub interval_word: u64,
    /// Where its last heartbeat came from (`NodeRecord::src_addr`).
    pub src_addr: [u8; 16],
    pub src_port: u16,
    /// Its seen word (`hb_common::table::seen`): monotonic arrival of its
    /// last heartbeat, and whether it was a leave; 0 if never heard.
    pub seen_word: u64,
}

impl SavedState {
    /// Encodes the whole file.
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        // The body is written behind a blank header, then the header is
        // filled in: one buffer, no copy of the body.
        let mut file = vec![0; HEADER_LEN];
        file = postcard::to_extend(self, file)?;
        let body_len = (file.len() - HEADER_LEN) as u64;
        let crc = crc32fast::hash(&file[HEADER_LEN..]);
        file[..8].copy_from_slice(MAGIC);
        file[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        file[12..16].copy_from_slice(&crc.to_le_bytes());
        file[16..24].copy_from_slice(&body_len.to_le_bytes());
        Ok(file)
    }

    /// Decodes a file of format 2 (`bytes` starts with [`MAGIC`]).
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Self, StateFileError> {
        let invalid = |cause: String| StateFileError::Invalid {
            path: path.to_owned(),
            cause,
        };
        if bytes.len() < HEADER_LEN {
            return Err(invalid(format!(
                "{} bytes, shorter than its header",
                bytes.len()
            )));
        }
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let format = word(8);
        if format != FORMAT {
            return Err(StateFileError::Format {
                path: path.to_owned(),
                found: format,
            });
        }
        let crc = word(12);
        let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        let body = &bytes[HEADER_LEN..];
        if body.len() as u64 != len {
            return Err(invalid(format!(
                "the body has {} bytes, its header says {len} (a truncated copy?)",
                body.len()
            )));
        }
        if crc32fast::hash(body) != crc {
            return Err(invalid(
                "its checksum does not match (corrupted)".to_owned(),
            ));
        }
        postcard::from_bytes(body).map_err(|e| invalid(e.to_string()))
    }

    /// Moves the monotonic times into the boot `boot_id`, whose monotonic
    /// and wall clocks read `now_monotonic_ns` and `now_unix_ns`: nothing to
    /// do within one boot. Across a reboot each time is shifted by the
    /// difference of the two boots' clock offsets; a time from before this
    /// boot began becomes the earliest instant of it (a node last heard
    /// before the reboot still shows as heard, at least that long ago), and
    /// flap history that old is dropped. Nothing was swept yet in this boot.
    pub fn carry_over(&mut self, boot_id: [u8; 16], now_monotonic_ns: u64, now_unix_ns: u64) {
        if self.boot_id == boot_id && self.boot_id != [0; 16] {
            return;
        }
        let saved_offset = i128::from(self.saved_unix_ns) - i128::from(self.saved_monotonic_ns);
        let now_offset = i128::from(now_unix_ns) - i128::from(now_monotonic_ns);
        let known = self.boot_id != [0; 16] && self.saved_unix_ns != 0;
        let shift = |t: u64| -> Option<u64> {
            if t == 0 || !known {
                return None;
            }
            let moved = i128::from(t) + saved_offset - now_offset;
            (moved > 0).then(|| u64::try_from(moved).unwrap_or(u64::MAX))
        };
        // The earliest instant of this boot that is not "never" (bit 0 of a
        // seen word is the leave flag).
        const EARLIEST: u64 = 2;
        for node in &mut self.nodes {
            if node.seen_word != 0 {
                let leave = node.seen_word & hb_common::table::seen::LEAVE != 0;
                let arrival = hb_common::table::seen::arrival_ns(node.seen_word);
                let arrival = shift(arrival).unwrap_or(EARLIEST).max(EARLIEST);
                node.seen_word = hb_common::table::seen::word(arrival, leave);
            }
        }
        for flaps in &mut self.flaps {
            flaps.move_times(|t| shift(t).unwrap_or(0));
        }
        self.flaps.retain(|f| !f.is_empty());
        self.brake.move_times(|t| shift(t).unwrap_or(EARLIEST));
        self.swept_until_ns = now_monotonic_ns;
        self.boot_id = boot_id;
        self.saved_monotonic_ns = now_monotonic_ns;
        self.saved_unix_ns = now_unix_ns;
    }
}

/// The temporary file a save writes before renaming it over `path`.
pub fn temporary(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedState {
        SavedState {
            boot_id: [7; 16],
            saved_monotonic_ns: 50_000_000_000,
            saved_unix_ns: 1_800_000_000_000_000_000,
            swept_until_ns: 49_900_000_000,
            journal_seq: 12,
            nodes: vec![SavedNode {
                id: 3,
                state: NodeState::Down,
                heartbeats: 9,
                incarnation: 2,
                sequence: 9,
                interval_ms: 100,
                authenticated: true,
                interval_word: hb_common::table::intervals::word(100_000, 3_000),
                src_addr: hb_common::table::src_octets("198.18.0.7".parse().unwrap()),
                src_port: 4000,
                seen_word: 40_000_000_000,
            }],
            flaps: vec![FlapHistory {
                id: 3,
                downs_ns: vec![45_000_000_000],
                steady_since_ns: 0,
                last_arrival_ns: 0,
            }],
            brake: BrakeMemory {
                held: vec![(3, 46_000_000_000)],
                engaged_since_ns: Some(46_000_000_000),
                ..BrakeMemory::default()
            },
            pending: vec![PendingRun {
                action: "lb".to_owned(),
                seq: 12,
                node_id: 3,
                event: Event::Down,
                previous: NodeState::Suspect,
                since_ms: Some(310),
            }],
        }
    }

    #[test]
    fn encodes_and_decodes_and_refuses_damage() {
        let path = Path::new("/x/state");
        let state = sample();
        let bytes = state.encode().unwrap();
        assert!(bytes.starts_with(MAGIC));
        assert_eq!(SavedState::decode(path, &bytes).unwrap(), state);

        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let message = SavedState::decode(path, &flipped).unwrap_err().to_string();
        assert!(
            message.contains("checksum") && message.contains("/x/state"),
            "{message}"
        );

        let message = SavedState::decode(path, &bytes[..bytes.len() - 3])
            .unwrap_err()
            .to_string();
        assert!(message.contains("truncated"), "{message}");

        let mut future = bytes;
        future[8] = 9;
        let message = SavedState::decode(path, &future).unwrap_err().to_string();
        assert!(message.contains("format 9"), "{message}");
    }

    #[test]
    fn times_stay_within_a_boot_and_move_across_a_reboot() {
        let mut same = sample();
        same.carry_over([7; 16], 60_000_000_000, 1_800_000_010_000_000_000);
        assert_eq!(same, sample(), "same boot: nothing moves");

        // The new boot is 20 s old, 20 s after the save: it began at the
        // save's instant, the old boot's monotonic 50 s.
        let mut rebooted = sample();
        let now_unix = 1_800_000_000_000_000_000 + 20_000_000_000;
        rebooted.carry_over([8; 16], 20_000_000_000, now_unix);
        // 40 s in the old boot is 10 s before the new one began.
        assert_eq!(rebooted.nodes[0].seen_word, 2, "heard before this boot");
        assert!(
            rebooted.flaps.is_empty(),
            "flaps from before the boot are dropped"
        );
        assert_eq!(rebooted.brake.held, vec![(3, 2)], "held actions stay held");
        assert_eq!(rebooted.swept_until_ns, 20_000_000_000);

        // A time after the new boot began is shifted, not clamped.
        let mut recent = sample();
        recent.nodes[0].seen_word = 60_000_000_000;
        recent.carry_over([8; 16], 20_000_000_000, now_unix);
        assert_eq!(recent.nodes[0].seen_word, 10_000_000_000);
    }
}
