//! State files of format 1: JSON, written by agents before the binary
//! format. Read once (node states, sequence numbers, the downgrade set and
//! interval estimates carry over; there were no arrival times, flap history
//! or held actions), then the next save writes format 2 in their place.

use std::path::Path;

use serde::Deserialize;

use super::{
    StateFileError,
    format::{SavedNode, SavedState},
};
use crate::detect::detector::NodeState;

#[derive(Deserialize)]
struct Contents {
    format: u32,
    nodes: Vec<Node>,
}

#[derive(Deserialize)]
struct Node {
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

/// Decodes a JSON state file of format 1.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<SavedState, StateFileError> {
    let contents: Contents =
        serde_json::from_slice(bytes).map_err(|cause| StateFileError::Invalid {
            path: path.to_owned(),
            cause: cause.to_string(),
        })?;
    if contents.format != 1 {
        return Err(StateFileError::Format {
            path: path.to_owned(),
            found: contents.format,
        });
    }
    tracing::info!(
        path = %path.display(),
        nodes = contents.nodes.len(),
        "read a state file of format 1 (JSON); it is rewritten in format 2 (binary) at the next save"
    );
    Ok(SavedState {
        nodes: contents
            .nodes
            .into_iter()
            .map(|n| SavedNode {
                id: n.id,
                state: n.state,
                heartbeats: n.heartbeats,
                incarnation: n.incarnation,
                sequence: n.sequence,
                interval_ms: n.interval_ms,
                authenticated: n.authenticated,
                interval_word: hb_common::table::intervals::word(
                    n.interval_mean_us,
                    n.interval_mad_us,
                ),
                ..SavedNode::default()
            })
            .collect(),
        ..SavedState::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_agents_before_the_binary_format_wrote() {
        // Written by the agent at 59a0ad8 (format 1).
        let json = br#"{"format":1,"nodes":[{"id":3,"state":"down","heartbeats":9,"incarnation":2,"sequence":9,"interval_ms":100,"authenticated":true,"interval_mean_us":100000,"interval_mad_us":3000},{"id":4,"state":"up","heartbeats":1,"incarnation":1,"sequence":1,"interval_ms":100}]}"#;
        let state = decode(Path::new("/s.json"), json).unwrap();
        assert_eq!(state.nodes.len(), 2);
        assert_eq!(state.nodes[0].state, NodeState::Down);
        assert!(state.nodes[0].authenticated);
        assert_eq!(
            hb_common::table::intervals::mean_us(state.nodes[0].interval_word),
            100_000
        );
        assert_eq!(state.nodes[1].seen_word, 0, "format 1 had no arrival times");
        assert_eq!(state.boot_id, [0; 16]);

        let message = decode(Path::new("/s.json"), br#"{"format":7,"nodes":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("format 7") && message.contains("move it away"),
            "{message}"
        );
    }
}
