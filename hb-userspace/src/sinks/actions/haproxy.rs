//! `kind = "haproxy"`: takes a node's server out of a real HAProxy's
//! rotation on `down` and puts it back on `up` (optionally drains it on
//! `suspect`), through HAProxy's runtime API on its stats socket, then reads
//! the server's state back with `show servers state` so that a command
//! HAProxy accepted but did not apply is still a failure.
//!
//! HAProxy closes a runtime-API connection after one command unless it is
//! in `prompt` mode, so every command gets its own connection: no session
//! state to get wrong, and a HAProxy reload between two commands is
//! harmless. A run is one exec run as far as the runner is concerned (same
//! lanes, timeout, counters and metrics); a batch run sends its sweep's
//! commands in order and checks them all with one `show servers state`.

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::PathBuf, sync::Arc, time::Instant};

use self::wire::{admin_states, one_line, send};
use super::{
    ActionConfig, ActionEvent, Event,
    process::{Input, Outcome},
};

/// Failures of one run logged one by one; the rest are only counted (a
/// batch against a HAProxy that lost the backend would log 10,000 lines).
const MAX_LOGGED_FAILURES: usize = 20;
/// `srv_admin_state` bit: maintenance forced by the runtime API (`SRV_ADMF_FMAINT`).
const ADMIN_FORCED_MAINT: u32 = 0x01;
/// `srv_admin_state` bit: drain forced by the runtime API (`SRV_ADMF_FDRAIN`).
const ADMIN_FORCED_DRAIN: u32 = 0x08;
/// The socket form written `tcp://ADDRESS:PORT`.
const TCP_SCHEME: &str = "tcp://";

/// Where HAProxy's runtime API listens (`stats socket ... level admin`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HaproxySocket {
    /// A Unix socket path (absolute).
    Unix(PathBuf),
    /// An IP address and port (`stats socket ipv4@127.0.0.1:9999`); host
    /// names are not resolved, so a run never waits on DNS.
    Tcp(SocketAddr),
}

impl HaproxySocket {
    /// Parses `socket` as written in the config: an absolute path, or
    /// `tcp://IP:PORT`. The error says what to write instead.
    pub fn parse(socket: &str) -> Result<Self, String> {
        if let Some(address) = socket.strip_prefix(TCP_SCHEME) {
            return address.parse().map(Self::Tcp).map_err(|_| {
                format!(
                    "`socket` is {socket:?}: after tcp:// give an IP address and a port, e.g. \"tcp://127.0.0.1:9999\" (host names are not resolved)"
                )
            });
        }
        if socket.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(socket)));
        }
        Err(format!(
            "`socket` is {socket:?}: give the absolute path of HAProxy's stats socket (`stats socket PATH level admin` in haproxy.cfg), e.g. socket = \"/run/haproxy/admin.sock\", or \"tcp://127.0.0.1:9999\""
        ))
    }
}

impl fmt::Display for HaproxySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "{}", path.display()),
            Self::Tcp(address) => write!(f, "{TCP_SCHEME}{address}"),
        }
    }
}

/// The admin state hb asks HAProxy to put a server in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Back in rotation (clears a forced maintenance or drain).
    Ready,
    /// Keeps its current connections, takes no new ones.
    Drain,
    /// Out of rotation, no traffic and no health checks.
    Maint,
}

impl ServerState {
    /// The word `set server B/S state WORD` takes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Drain => "drain",
            Self::Maint => "maint",
        }
    }

    /// Whether `srv_admin_state` (from `show servers state`) shows this
    /// state. A drain is also satisfied by a maintenance the operator
    /// forced (the server takes no new traffic either way).
    fn shown_by(self, admin_state: u32) -> bool {
        match self {
            Self::Ready => admin_state & (ADMIN_FORCED_MAINT | ADMIN_FORCED_DRAIN) == 0,
            Self::Drain => admin_state & (ADMIN_FORCED_MAINT | ADMIN_FORCED_DRAIN) != 0,
            Self::Maint => admin_state & ADMIN_FORCED_MAINT != 0,
        }
    }
}

/// The settings of one `kind = "haproxy"` action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaproxyAction {
    pub socket: HaproxySocket,
    pub backend: String,
    /// Node name -> server name; a node not listed is the server of its
    /// own name.
    pub servers: BTreeMap<String, String>,
    /// `state drain` on `suspect` (else `suspect` does nothing).
    pub drain_on_suspect: bool,
}

/// The haproxy fields of an `[[actions]]` entry as written, before they
/// are checked and turned into a [`HaproxyAction`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HaproxyFields {
    pub socket: Option<String>,
    pub backend: Option<String>,
    pub servers: Option<BTreeMap<String, String>>,
    pub drain_on_suspect: Option<bool>,
}

impl HaproxyFields {
    /// The first haproxy field given, to refuse it on an action of another
    /// kind (most likely a forgotten `kind = "haproxy"`).
    pub fn first_given(&self) -> Option<&'static str> {
        [
            (self.socket.is_some(), "socket"),
            (self.backend.is_some(), "backend"),
            (self.servers.is_some(), "servers"),
            (self.drain_on_suspect.is_some(), "drain_on_suspect"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
    }

    /// The action, or what is missing or malformed (naming the field and
    /// the fix). Names are checked by [`HaproxyAction::check`].
    pub fn into_action(self) -> Result<HaproxyAction, String> {
        let socket = self.socket.ok_or(
            "`socket` is missing: give HAProxy's stats socket (level admin), e.g. socket = \"/run/haproxy/admin.sock\" or \"tcp://127.0.0.1:9999\"",
        )?;
        let backend = self.backend.ok_or(
            "`backend` is missing: give the HAProxy backend whose servers are the nodes, e.g. backend = \"web\"",
        )?;
        Ok(HaproxyAction {
            socket: HaproxySocket::parse(&socket)?,
            backend,
            servers: self.servers.unwrap_or_default(),
            drain_on_suspect: self.drain_on_suspect.unwrap_or(false),
        })
    }
}

impl HaproxyAction {
    /// Checks the names (they go into runtime-API command lines, where a
    /// space or `;` would change the command) and that `drain_on_suspect`
    /// can happen with the events in `on`.
    pub fn check(&self, on: &[Event]) -> Result<(), String> {
        if let HaproxySocket::Unix(path) = &self.socket
            && !path.is_absolute()
        {
            return Err(HaproxySocket::parse(&path.to_string_lossy())
                .err()
                .unwrap_or_default());
        }
        check_name(&self.backend)
            .map_err(|problem| format!("`backend` is {:?}: {problem}", self.backend))?;
        for (node, server) in &self.servers {
            check_name(server).map_err(|problem| {
                format!("`servers`: node {node:?} maps to server {server:?}: {problem}")
            })?;
        }
        if self.drain_on_suspect && !on.contains(&Event::Suspect) {
            return Err(
                "`drain_on_suspect` is true but `on` does not list \"suspect\": add it to on, or remove drain_on_suspect"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// The server of the node named `node`.
    pub fn server_for<'a>(&'a self, node: &'a str) -> &'a str {
        self.servers.get(node).map_or(node, String::as_str)
    }

    /// The state `event` asks for, if any (`up` ready, `down` maint,
    /// `suspect` drain if asked for; nothing else changes HAProxy).
    pub fn target(&self, event: Event) -> Option<ServerState> {
        match event {
            Event::Up => Some(ServerState::Ready),
            Event::Down => Some(ServerState::Maint),
            Event::Suspect if self.drain_on_suspect => Some(ServerState::Drain),
            Event::Suspect | Event::Flapping | Event::Left => None,
        }
    }

    fn change_for<'a>(&'a self, event: &'a ActionEvent) -> Option<Change<'a>> {
        Some(Change {
            node: &event.node_name,
            server: self.server_for(&event.node_name),
            state: self.target(event.event)?,
        })
    }
}

/// HAProxy's rule for proxy and server names: letters, digits, `-`, `_`,
/// `.` and `:`.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty: give the name as haproxy.cfg spells it");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
    if name.chars().all(allowed) {
        Ok(())
    } else {
        Err(
            "HAProxy names are letters, digits, '-', '_', '.' and ':' only: fix the name (map node names to server names with `servers`)",
        )
    }
}

/// One server state change a run makes.
#[derive(Clone, Copy, Debug)]
struct Change<'a> {
    node: &'a str,
    server: &'a str,
    state: ServerState,
}

/// Runs a haproxy action for one event or one batch, within its timeout,
/// and logs the outcome.
pub(super) async fn run(
    action: &ActionConfig,
    haproxy: &HaproxyAction,
    input: Input<'_>,
) -> Outcome {
    match input {
        Input::Event(event) => run_for_event(action, haproxy, event).await,
        Input::Batch(events) => run_for_batch(action, haproxy, events).await,
    }
}

/// Every log line carries the action, event and node, as exec runs' do.
#[tracing::instrument(
    name = "action",
    skip_all,
    fields(action = %action.name, event = %event.event, node = %event.node_name, node_id = event.node_id)
)]
async fn run_for_event(
    action: &ActionConfig,
    haproxy: &HaproxyAction,
    event: &ActionEvent,
) -> Outcome {
    let changes: Vec<Change<'_>> = haproxy.change_for(event).into_iter().collect();
    apply_logged(action, haproxy, &changes).await
}

/// Every log line carries the action and the number of events.
#[tracing::instrument(
    name = "action",
    skip_all,
    fields(action = %action.name, events = events.len())
)]
async fn run_for_batch(
    action: &ActionConfig,
    haproxy: &HaproxyAction,
    events: &[Arc<ActionEvent>],
) -> Outcome {
    let changes: Vec<Change<'_>> = events
        .iter()
        .filter_map(|e| haproxy.change_for(e))
        .collect();
    apply_logged(action, haproxy, &changes).await
}

/// Applies `changes` within the action's timeout; logs and classifies.
async fn apply_logged(
    action: &ActionConfig,
    haproxy: &HaproxyAction,
    changes: &[Change<'_>],
) -> Outcome {
    if changes.is_empty() {
        tracing::debug!("no HAProxy server state to change for this event");
        return Outcome::Succeeded;
    }
    let started = Instant::now();
    let result = tokio::time::timeout(action.timeout, apply(haproxy, changes)).await;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let Ok(failures) = result else {
        tracing::warn!(
            elapsed_ms,
            "timed out after {}: HAProxy at {} did not answer in time",
            humantime::format_duration(action.timeout),
            haproxy.socket,
        );
        return Outcome::TimedOut;
    };
    if failures.is_empty() {
        tracing::info!(
            elapsed_ms,
            "{}",
            describe_success(&haproxy.backend, changes)
        );
        return Outcome::Succeeded;
    }
    for failure in failures.iter().take(MAX_LOGGED_FAILURES) {
        tracing::warn!(elapsed_ms, "failed: {failure}");
    }
    if failures.len() > MAX_LOGGED_FAILURES {
        tracing::warn!(
            "{} more failures not logged",
            failures.len() - MAX_LOGGED_FAILURES
        );
    }
    Outcome::Failed
}

/// "server web/srv1 set to maint (checked)", or a count for a batch.
fn describe_success(backend: &str, changes: &[Change<'_>]) -> String {
    if let [change] = changes {
        return format!(
            "HAProxy server {backend}/{} (node {}) set to {}, checked with show servers state",
            change.server,
            change.node,
            change.state.as_str()
        );
    }
    let count = |state: ServerState| changes.iter().filter(|c| c.state == state).count();
    format!(
        "{} HAProxy server state changes in backend {backend} ({} maint, {} drain, {} ready), checked with show servers state",
        changes.len(),
        count(ServerState::Maint),
        count(ServerState::Drain),
        count(ServerState::Ready),
    )
}

/// Sends each change in order (one connection each), then checks the
/// servers that HAProxy accepted with one `show servers state`. Returns the
/// failures (empty: every change applied and checked).
async fn apply(haproxy: &HaproxyAction, changes: &[Change<'_>]) -> Vec<String> {
    let mut failures = Vec::new();
    // Server -> the last state asked for it and accepted.
    let mut accepted: BTreeMap<&str, ServerState> = BTreeMap::new();
    for change in changes {
        if let Err(problem) = check_name(change.server) {
            failures.push(format!(
                "node {:?}: server name {:?}: {problem}",
                change.node, change.server
            ));
            continue;
        }
        let command = format!(
            "set server {}/{} state {}",
            haproxy.backend,
            change.server,
            change.state.as_str()
        );
        match send(&haproxy.socket, &command).await {
            Ok(answer) if answer.trim().is_empty() => {
                accepted.insert(change.server, change.state);
            }
            Ok(answer) => {
                accepted.remove(change.server);
                failures.push(format!(
                    "`{command}`: HAProxy answered {:?}",
                    one_line(&answer)
                ));
            }
            Err(e) => {
                accepted.remove(change.server);
                failures.push(format!("`{command}`: {e}"));
            }
        }
    }
    if !accepted.is_empty() {
        failures.extend(check_states(haproxy, &accepted).await);
    }
    failures
}

/// Reads `show servers state BACKEND` and compares each server's admin
/// state with what was asked; returns the mismatches.
async fn check_states(haproxy: &HaproxyAction, asked: &BTreeMap<&str, ServerState>) -> Vec<String> {
    let command = format!("show servers state {}", haproxy.backend);
    let answer = send(&haproxy.socket, &command).await;
    let states = match answer
        .map_err(|e| e.to_string())
        .and_then(|answer| admin_states(&answer, &haproxy.backend))
    {
        Ok(states) => states,
        Err(problem) => return vec![format!("checking with `{command}`: {problem}")],
    };
    asked
        .iter()
        .filter_map(|(&server, &state)| match states.get(server) {
            None => Some(format!(
                "`{command}` does not list server {server} after it was set to {}",
                state.as_str()
            )),
            Some(&admin) if !state.shown_by(admin) => Some(format!(
                "server {}/{server} was set to {} but `{command}` shows srv_admin_state {admin:#04x}",
                haproxy.backend,
                state.as_str()
            )),
            Some(_) => None,
        })
        .collect()
}

mod wire;

#[cfg(test)]
mod tests;
