//! [`ConfigError`]: what can be wrong with a configuration, each message
//! naming the field and the fix.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{MAX_INTERVAL, MAX_NODES_LIMIT, MAX_PER_NODE_METRICS, MIN_INTERVAL, SWEEP_PRIORITY};

/// Everything that can be wrong with a configuration. Every message names
/// the offending field and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is part of the message (and so not also a `source`, which
    // would print it twice in an error chain).
    #[error("cannot read config file {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Bad TOML, an unknown field, a missing field or a value of the wrong
    /// type (e.g. a bad duration). The first line says where and why
    /// (`FILE:LINE:COLUMN: cause`), toml's excerpt of the line follows.
    #[error("{}", parse_message(source_name, cause))]
    Parse {
        source_name: String,
        cause: toml::de::Error,
    },
    #[error(
        "`actions`: action {action:?} runs on suspect or flapping, which stay each monitor's own view in a group (only up, down and left are group verdicts): remove those events from its `on`, or run the agent without [group]"
    )]
    GroupLocalEvent { action: String },
    /// `[group]`: which key is wrong and how to fix it.
    #[error("`group.{field}`: {problem}")]
    Group {
        field: &'static str,
        problem: String,
    },
    #[error(
        "`interfaces` is empty: name at least one network interface, e.g. interfaces = [\"eth0\"], or pass --interface"
    )]
    NoInterfaces,
    #[error(
        "`interfaces`: {name:?} is not a valid interface name (1 to 15 characters, no '/', no whitespace): fix the name"
    )]
    InvalidInterfaceName { name: String },
    #[error("`interfaces`: {name:?} is listed twice: remove the duplicate")]
    DuplicateInterface { name: String },
    #[error(
        "`interfaces`: no network interface {name:?} on this host (not in /sys/class/net): fix the name or create the interface"
    )]
    UnknownInterface { name: String },
    #[error("`port` is 0: set the UDP port heartbeats are sent to, e.g. port = 7979")]
    PortZero,
    #[error(
        "`max_nodes` is {max_nodes}: set it between 1 and {MAX_NODES_LIMIT} (node ids must be below it)"
    )]
    MaxNodesOutOfRange { max_nodes: u32 },
    #[error(
        "`instance` is {instance:?}: use 1 to {} characters among A-Z, a-z, 0-9, `_` and `-` \
         (it names the directory of the pins, /sys/fs/bpf/hb/<instance>, and the lock file)",
        crate::datapath::pins::MAX_INSTANCE_LEN
    )]
    InvalidInstance { instance: String },
    #[error("`max_concurrent_actions` is 0: set it to at least 1")]
    MaxConcurrentActionsZero,
    #[error(
        "`defaults.timeout_multiplier` is {multiplier}: timeout must be longer than the interval: set timeout_multiplier >= 2"
    )]
    TimeoutMultiplierTooSmall { multiplier: u32 },
    #[error(
        "`defaults.interval` is {}: set it to at least {}", humantime::format_duration(*interval), humantime::format_duration(MIN_INTERVAL)
    )]
    IntervalTooShort { interval: Duration },
    #[error(
        "`defaults.interval` is {}: set it to at most {} (the wire format carries milliseconds in 32 bits)", humantime::format_duration(*interval), humantime::format_duration(MAX_INTERVAL)
    )]
    IntervalTooLong { interval: Duration },
    #[error(
        "`defaults.sweep_period` is {}: it must be above zero and at most `defaults.interval` ({}) so the node table is swept at least once per interval", humantime::format_duration(*sweep_period), humantime::format_duration(*interval)
    )]
    SweepPeriodOutOfRange {
        sweep_period: Duration,
        interval: Duration,
    },
    #[error(
        "`defaults.sweep_priority` is {priority}: give a SCHED_FIFO priority from {} to {} (low numbers suffice: the sweep thread only needs to run before ordinary threads), or remove it for normal scheduling", SWEEP_PRIORITY.start(), SWEEP_PRIORITY.end()
    )]
    SweepPriorityOutOfRange { priority: i64 },
    #[error("node id {id}: `name` is empty: give every node a name")]
    EmptyNodeName { id: u32 },
    #[error(
        "node `{name}`: `id` {id} is not below `max_nodes` ({max_nodes}): raise max_nodes to at least {} or use a smaller id", u64::from(*id) + 1
    )]
    NodeIdTooLarge {
        id: u32,
        name: String,
        max_nodes: u32,
    },
    #[error("nodes `{first}` and `{second}` both have `id` {id}: give each node its own id")]
    DuplicateNodeId {
        id: u32,
        first: String,
        second: String,
    },
    #[error(
        "nodes with ids {first_id} and {second_id} are both named `{name}` (`name`): give each node its own name"
    )]
    DuplicateNodeName {
        name: String,
        first_id: u32,
        second_id: u32,
    },
    #[error(
        "node `{name}`: `interval` is {}: set it to at least {} or remove it to use the advertised interval", humantime::format_duration(*interval), humantime::format_duration(MIN_INTERVAL)
    )]
    NodeIntervalTooShort { name: String, interval: Duration },
    #[error(
        "node `{name}`: `interval` is {}: set it to at most {} (the wire format carries milliseconds in 32 bits)", humantime::format_duration(*interval), humantime::format_duration(MAX_INTERVAL)
    )]
    NodeIntervalTooLong { name: String, interval: Duration },
    #[error("action number {index} (counting from 1): `name` is empty: give every action a name")]
    EmptyActionName { index: usize },
    #[error(
        "action `{action}`: give `command` (argv, run without a shell) or `shell` (a /bin/sh -c script)"
    )]
    ActionRunMissing { action: String },
    #[error("action `{action}`: `command` and `shell` are both given: keep exactly one")]
    ActionRunBoth { action: String },
    #[error(
        "action `{action}`: `{field}` is empty: give the program and its arguments, e.g. command = [\"/usr/local/bin/failover\"], or a script, e.g. shell = \"logger $HB_EVENT\""
    )]
    EmptyCommand { action: String, field: &'static str },
    #[error(
        "action `{action}`: `on` is empty: list the events that run it, e.g. on = [\"down\"] (events: up, suspect, down, flapping, left)"
    )]
    NoActionEvents { action: String },
    #[error(
        "action `{action}`: `timeout` is zero: set how long it may run, e.g. timeout = \"10s\""
    )]
    ActionTimeoutZero { action: String },
    #[error("two actions are named `{action}` (`name`): give each action its own name")]
    DuplicateActionName { action: String },
    #[error("action `{action}`: {problem}")]
    Webhook {
        action: String,
        problem: crate::sinks::actions::webhook::WebhookProblem,
    },
    /// A `kind = "haproxy"` field missing or malformed, or given to an
    /// action of another kind; `problem` names the field and the fix.
    #[error("action `{action}`: {problem}")]
    HaproxyAction { action: String, problem: String },
    #[error("node range `{prefix}` (`[[node_ranges]]`): {problem}")]
    NodeRange { prefix: String, problem: String },
    /// A node's or a range's probe fields (`probe`, `probe_timeout`, ...);
    /// `node` is `node `NAME`` or `node range `PREFIX``.
    #[error("{node}: {problem}")]
    Probe { node: String, problem: String },
    /// `[probe]`: which key is wrong and how to fix it.
    #[error("`probe.{field}` {problem}")]
    ProbeSection {
        field: &'static str,
        problem: String,
    },
    #[error(
        "`auth.keys` lists {count} key files: give the current key, and during a rotation the previous one, at most 2"
    )]
    TooManyKeys { count: usize },
    #[error(
        "`detector.phi_threshold` is {threshold}: set a number above 0 (8 is the usual choice)"
    )]
    PhiThreshold { threshold: f64 },
    #[error(
        "`detector.suspect_phi` is {suspect_phi}: set it above 0 and below `detector.phi_threshold` ({threshold}), e.g. 3"
    )]
    SuspectPhi { suspect_phi: f64, threshold: f64 },
    #[error("`brake`: {problem}")]
    Brake { problem: String },
    #[error("`detector.rise` is 0: set it to at least 1 (heartbeats in a row to be up again)")]
    RiseZero,
    #[error(
        "`detector.flap_window` and `detector.flap_stable` must be above zero when `detector.flap_max` is set: give both, or set flap_max = 0 to turn flap damping off"
    )]
    FlapDurations,
    #[error("`detector.min_std_dev` is zero: set it above zero, e.g. min_std_dev = \"100ms\"")]
    MinStdDevZero,
    #[error("`detector.stall_threshold` is zero: set it above zero, e.g. stall_threshold = \"1s\"")]
    StallThresholdZero,
    #[error(
        "`auth.accept_unauthenticated` is false but `auth.keys` is empty, so every heartbeat would be refused: add a key file (`hb keygen --id 1 /etc/hb/hb.key`) to auth.keys or remove the setting"
    )]
    NoKeysToAuthenticate,
    #[error(
        "`http.listen` is {value:?}: give an IP address and a port, e.g. \"127.0.0.1:7980\" or \"[::1]:7980\" (host names are not resolved), or \"\" to turn the HTTP API off"
    )]
    HttpListen { value: String },
    #[error(
        "`http.listen` is \"{listen}\": port 0 would be a random port no client knows: give a port, e.g. \"127.0.0.1:7980\", or \"\" to turn the HTTP API off"
    )]
    HttpListenPortZero { listen: SocketAddr },
    #[error(
        "`http.listen` is \"{listen}\", not a loopback address, and `http.token_file` is not set: the HTTP API would be reachable from the network without authentication: set http.token_file to a file holding a random token (e.g. `head -c 32 /dev/urandom | base64 > /etc/hb/http.token; chmod 600 /etc/hb/http.token`) or listen on 127.0.0.1"
    )]
    HttpTokenRequired { listen: SocketAddr },
    #[error(
        "`http.token_file` is empty: give the path of the file holding the token, e.g. token_file = \"/etc/hb/http.token\", or remove the setting"
    )]
    HttpTokenFileEmpty,
    #[error(
        "`http.per_node_metrics` is {value}: set it to at most {MAX_PER_NODE_METRICS}, or 0: every node adds series to each scrape, so a large cluster would flood Prometheus (watch hb_nodes{{state}} instead)"
    )]
    PerNodeMetricsTooLarge { value: u32 },
}

/// How durations are written, added to the message of a bad one: serde
/// only says "expected a duration".
const DURATION_FORMATS: &str =
    "write a number and a unit, e.g. \"2s\", \"500ms\", \"1m30s\" or \"1h\"";

/// The message of [`ConfigError::Parse`]: `FILE:LINE:COLUMN: cause` on the
/// first line, so that the first line of a journal says what is wrong, then
/// toml's excerpt of the offending line. toml renders the position first
/// and the cause last (and its error exposes no line number), so the
/// rendering is taken apart here; anything unexpected in it falls back to
/// `FILE: cause` followed by toml's rendering.
fn parse_message(source_name: &str, cause: &toml::de::Error) -> String {
    let mut reason = one_line(cause.message());
    if reason.contains("expected a duration") {
        reason = format!("{reason}: {DURATION_FORMATS}");
    }
    let rendered = cause.to_string();
    let lines: Vec<&str> = rendered.lines().collect();
    let Some((line, column)) = lines.first().and_then(|first| position(first)) else {
        // No position: toml then names the key path on a line "in `a.b`".
        let keys = lines.iter().find_map(|l| l.strip_prefix("in "));
        return match keys {
            Some(keys) => format!("{source_name}: {keys}: {reason}"),
            None => format!("{source_name}: {reason}"),
        };
    };
    // The excerpt: a gutter line, `LINE | text`, and the caret line.
    let excerpt = lines.get(1..4).unwrap_or_default();
    let text = excerpt
        .get(1)
        .and_then(|text| text.strip_prefix(&format!("{line} | ")));
    let key = text.and_then(|text| key_before(text, column));
    let key = key.map(|key| format!("`{key}`: ")).unwrap_or_default();
    let mut message = format!("{source_name}:{line}:{column}: {key}{reason}");
    // A missing field is reported at its table's header: name the table.
    if let Some(header) = text.map(str::trim).filter(|text| text.starts_with('[')) {
        message.push_str(&format!(" (in {header})"));
    }
    for excerpt_line in excerpt {
        message.push('\n');
        message.push_str(excerpt_line);
    }
    message
}

/// toml's position line, "TOML parse error at line N, column M".
fn position(first_line: &str) -> Option<(usize, usize)> {
    let (line, column) = first_line
        .strip_prefix("TOML parse error at line ")?
        .split_once(", column ")?;
    Some((line.parse().ok()?, column.parse().ok()?))
}

/// The key whose value starts at `column` (1-based, in characters) of the
/// line `text`: `interval` in `interval = "2 parsecs"` with the column at
/// the value, or `id` in `{ id = "x" }`. None when the column is not at a
/// value (a syntax error, an unknown key: toml's message names those).
fn key_before(text: &str, column: usize) -> Option<&str> {
    let end = text
        .char_indices()
        .nth(column.checked_sub(1)?)
        .map_or(text.len(), |(at, _)| at);
    let before = text[..end].trim_end().strip_suffix('=')?;
    let key = before.rsplit([',', '{']).next()?.trim();
    let bare = |c: char| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c);
    (!key.is_empty() && key.chars().all(bare)).then_some(key)
}

/// toml's cause, which may span lines ("invalid array\nexpected `]`"), on
/// one line.
fn one_line(message: &str) -> String {
    let parts: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    /// The first line of the message of parsing `text` as `test.toml`, and
    /// the whole message.
    fn first_line(text: &str) -> (String, String) {
        let message = parse_err(text).to_string();
        let first = message.lines().next().unwrap_or_default().to_owned();
        (first, message)
    }

    #[test]
    fn a_parse_error_says_where_and_why_on_its_first_line() {
        for (text, expected) in [
            (
                "interfaces = [\"eth0\"]\npass_heartbeats = \"yes\"\n",
                "test.toml:2:19: `pass_heartbeats`: invalid type: string \"yes\", expected a boolean",
            ),
            (
                "interfaces = [\"eth0\"]\nprot = 1\n",
                "test.toml:2:1: unknown field `prot`",
            ),
            (
                "interfaces = [\"eth0\"]\n[[nodes]]\nid = 1\nname = \"a\"\naddress = \"nope\"\n",
                "test.toml:5:11: `address`: invalid IP address syntax",
            ),
            (
                "interfaces = [\"eth0\"]\n[[nodes]]\nid = 1\n",
                "test.toml:2:1: missing field `name` (in [[nodes]])",
            ),
            (
                "interfaces = [\"eth0\"\n",
                "test.toml:1:22: invalid array: expected `]`",
            ),
            (
                "[[node_ranges]]\nfirst_id = 0\ncount = 2\nname_prefix = \"n\"\ninterval = { x = 1 }\n",
                "test.toml:5:12: `interval`: invalid type: map, expected a duration",
            ),
        ] {
            let (first, message) = first_line(text);
            assert!(
                first.contains(expected),
                "first line {first:?} lacks {expected:?}\n{message}"
            );
            assert!(
                first.starts_with("test.toml:"),
                "first line {first:?} does not start with the file and position\n{message}"
            );
        }
    }

    #[test]
    fn the_excerpt_follows_the_first_line() {
        let (_, message) = first_line("interfaces = [\"eth0\"]\nport = \"x\"\n");
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines.len(), 4, "{message}");
        assert_eq!(lines[2], "2 | port = \"x\"", "{message}");
        assert!(lines[3].ends_with("^^^"), "{message}");
        assert!(!message.contains("TOML parse error"), "{message}");
    }

    #[test]
    fn a_bad_duration_says_how_durations_are_written() {
        for text in [
            "interfaces = [\"eth0\"]\n[defaults]\ninterval = \"2 parsecs\"\n",
            "interfaces = [\"eth0\"]\n[defaults]\ninterval = 2\n",
            "interfaces = [\"eth0\"]\n[[actions]]\nname = \"a\"\non = [\"up\"]\nshell = \"x\"\ntimeout = \"soon\"\n",
            "interfaces = [\"eth0\"]\n[detector]\nacceptable_pause = \"\"\n",
        ] {
            let (first, message) = first_line(text);
            for needle in [
                "expected a duration",
                "\"2s\"",
                "\"500ms\"",
                "\"1m30s\"",
                "\"1h\"",
            ] {
                assert!(
                    first.contains(needle),
                    "{first:?} lacks {needle}\n{message}"
                );
            }
        }
        let (first, _) =
            first_line("interfaces = [\"eth0\"]\n[defaults]\ninterval = \"2 parsecs\"\n");
        assert!(first.starts_with("test.toml:3:12: `interval`: "), "{first}");
        let (first, _) = first_line("interfaces = [\"eth0\"]\nport = \"x\"\n");
        assert!(!first.contains("\"1m30s\""), "not a duration: {first}");
    }

    #[test]
    fn keys_are_found_only_before_a_value() {
        use super::key_before;
        assert_eq!(key_before("interval = \"2 parsecs\"", 12), Some("interval"));
        assert_eq!(key_before("a = { id = \"x\" }", 12), Some("id"));
        assert_eq!(key_before("a = { b = 1, id = \"x\" }", 19), Some("id"));
        assert_eq!(key_before("prot = 1", 1), None);
        assert_eq!(key_before("x = [1, 2", 10), None);
        assert_eq!(key_before("", 1), None);
        assert_eq!(key_before("é = 1", 5), None, "only TOML bare keys");
        assert_eq!(
            super::position("TOML parse error at line 12, column 3"),
            Some((12, 3))
        );
        assert_eq!(super::position("unknown field"), None);
    }
}
