//! What an action is: the events that run it ([`Event`]), what it runs
//! ([`ActionRun`]), its settings as configured ([`ActionConfig`]), and the
//! state change it is run for ([`ActionEvent`]). The configuration builds
//! these from the file; the runner only ever sees these types.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

use crate::detect::detector::NodeState;

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
    /// The event a node entering `state` fires; none for `unseen`.
    pub const fn of_state(state: NodeState) -> Option<Self> {
        match state {
            NodeState::Up => Some(Event::Up),
            NodeState::Down => Some(Event::Down),
            NodeState::Left => Some(Event::Left),
            NodeState::Suspect => Some(Event::Suspect),
            NodeState::Flapping => Some(Event::Flapping),
            NodeState::Unseen => None,
        }
    }

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
    /// `kind = "webhook"`: an HTTP POST of the event(s) as JSON.
    Webhook(super::webhook::WebhookConfig),
    /// `kind = "haproxy"`: sets the node's server state in HAProxy through
    /// its runtime API (no process).
    Haproxy(super::haproxy::HaproxyAction),
}

/// One action (`[[actions]]`): what runs when a node changes state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionConfig {
    pub name: String,
    /// The events that run it; never empty in a validated config.
    pub on: Vec<Event>,
    pub run: ActionRun,
    /// The whole process group is killed after this.
    pub timeout: Duration,
    /// Run once per sweep with all of the sweep's events for it as JSON
    /// lines on stdin (one load-balancer update instead of one process per
    /// node), instead of once per event with the `HB_*` variables.
    pub batch: bool,
}

/// A node state change, as passed to actions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActionEvent {
    pub event: Event,
    pub node_id: u32,
    pub node_name: String,
    /// The configured address, else the last source address seen.
    pub node_address: Option<String>,
    /// `unseen`, `up`, `down` or `left`.
    pub previous_state: &'static str,
    /// Time since the last heartbeat; `None` if never heard.
    #[serde(rename = "since_last_heartbeat_ms", serialize_with = "as_millis")]
    pub since_last_heartbeat: Option<Duration>,
    /// The state journal's entry of the transition it is run for (0:
    /// none); not shown to the action.
    #[serde(skip)]
    pub seq: u64,
}

/// Durations go to batch actions in whole milliseconds, as
/// `HB_SINCE_LAST_HEARTBEAT_MS` does; `null` if never heard.
fn as_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}

impl ActionEvent {
    /// The names of the per-event variables (unset for batch runs, so a
    /// batch script cannot read a stale one from the agent's environment).
    pub(super) const ENVIRONMENT: [&'static str; 6] = [
        "HB_EVENT",
        "HB_NODE_ID",
        "HB_NODE_NAME",
        "HB_NODE_ADDRESS",
        "HB_PREVIOUS_STATE",
        "HB_SINCE_LAST_HEARTBEAT_MS",
    ];

    /// The event as one line of a batch run's stdin: a JSON object with the
    /// fields of the `HB_*` variables (`node_address` and
    /// `since_last_heartbeat_ms` are `null` when unknown), and a newline.
    pub(super) fn write_json_line(&self, out: &mut Vec<u8>) {
        // Serializing plain strings and numbers into a Vec cannot fail.
        if serde_json::to_writer(&mut *out, self).is_ok() {
            out.push(b'\n');
        }
    }

    /// The `HB_*` variables the action runs with.
    pub(super) fn environment(&self) -> [(&'static str, String); 6] {
        let [event, id, name, address, previous, since] = Self::ENVIRONMENT;
        [
            (event, self.event.to_string()),
            (id, self.node_id.to_string()),
            (name, self.node_name.clone()),
            (address, self.node_address.clone().unwrap_or_default()),
            (previous, self.previous_state.to_owned()),
            (
                since,
                self.since_last_heartbeat
                    .map(|d| d.as_millis().to_string())
                    .unwrap_or_default(),
            ),
        ]
    }
}
