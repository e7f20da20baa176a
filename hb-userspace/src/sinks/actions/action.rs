//! What an action is: the events that run it ([`Event`]), what it runs
//! ([`ActionRun`]), its settings as configured ([`ActionConfig`]), and the
//! state change it is run for ([`ActionEvent`]). The configuration builds
//! these from the file; the runner only ever sees these types.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// A node state change that can run actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The node is heard from again (or for the first time).
    Up,
    /// The node was silent past its suspect deadline (before its timeout).
    Suspect,
    /// The node missed its heartbeats for longer than its timeout.
    Down,
    /// The node came back after going down too often lately: held down
    /// until heard steadily.
    Flapping,
    /// The node announced a graceful leave.
    Left,
}

impl Event {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Suspect => "suspect",
            Self::Down => "down",
            Self::Flapping => "flapping",
            Self::Left => "left",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionRun {
    /// argv, executed directly (no shell); the first element is the program.
    Command(Vec<String>),
    /// A script run by `/bin/sh -c`.
    Shell(String),
}

/// One action (`[[actions]]`): a program run when a node changes state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionConfig {
    pub name: String,
    /// The events that run it; never empty in a validated config.
    pub on: Vec<Event>,
    pub run: ActionRun,
    /// The whole process group is killed after this.
    pub timeout: Duration,
}

/// A node state change, as passed to actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionEvent {
    pub event: Event,
    pub node_id: u32,
    pub node_name: String,
    /// The configured address, else the last source address seen.
    pub node_address: Option<String>,
    /// `unseen`, `up`, `down` or `left`.
    pub previous_state: &'static str,
    /// Time since the last heartbeat; `None` if never heard.
    pub since_last_heartbeat: Option<Duration>,
}

impl ActionEvent {
    /// The `HB_*` variables the action runs with.
    pub(super) fn environment(&self) -> [(&'static str, String); 6] {
        [
            ("HB_EVENT", self.event.to_string()),
            ("HB_NODE_ID", self.node_id.to_string()),
            ("HB_NODE_NAME", self.node_name.clone()),
            (
                "HB_NODE_ADDRESS",
                self.node_address.clone().unwrap_or_default(),
            ),
            ("HB_PREVIOUS_STATE", self.previous_state.to_owned()),
            (
                "HB_SINCE_LAST_HEARTBEAT_MS",
                self.since_last_heartbeat
                    .map(|d| d.as_millis().to_string())
                    .unwrap_or_default(),
            ),
        ]
    }
}
