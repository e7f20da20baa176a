//! The `[group]` section: the etcd cluster a group of monitors agrees
//! through, the group's name (its key prefix) and this monitor's name.
//! Without it the agent runs alone. What the group does with it:
//! [`crate::group`].

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::sinks::actions::Event;

/// Default `group.lease_ttl`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
/// Default `group.request_timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// etcd refuses leases shorter than about 1.5 s (its minimum is 3/2 of an
/// election timeout of 1 s by default), and a keep-alive deadline has no
/// margin below that.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// `[group]`: several monitors watching the same fleet agree through etcd.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The group's name: every key of the group lives under `hb/<name>/`,
    /// so several groups (shards) share one etcd.
    pub name: String,
    /// This monitor's name, unique within the group.
    pub monitor: String,
    /// etcd client URLs, `http://HOST:PORT` or `https://HOST:PORT`.
    pub endpoints: Vec<String>,
    /// The monitor's lease: its opinions vanish this long after it stops
    /// renewing them (dead, or cut off from etcd).
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Every etcd request gives up after this long.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a monitor that just started listens before it votes; none
    /// given: the longest configured timeout (every live node heard by then).
    #[serde(default, with = "humantime_serde")]
    pub join_after: Option<Duration>,
    /// PEM CA certificate etcd's server certificate is checked against
    /// (`https://` endpoints).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and its key, for etcd's client certificate
    /// authentication (`--client-cert-auth`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

fn default_lease_ttl() -> Duration {
    DEFAULT_LEASE_TTL
}

fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}

impl GroupConfig {
    /// Whether the endpoints are TLS ones.
    pub fn uses_tls(&self) -> bool {
        self.endpoints.iter().any(|e| e.starts_with("https://"))
    }
}

/// A group or monitor name: what fits in an etcd key and a log line.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Config {
    /// Checks `[group]`: names, endpoints, timings, TLS files in pairs, and
    /// actions the group can run (only group verdicts: up, down, left).
    pub(super) fn validate_group(&self) -> Result<(), ConfigError> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let problem = |field: &'static str, problem: String| ConfigError::Group { field, problem };
        if !valid_name(&group.name) {
            return Err(problem(
                "name",
                format!(
                    "{:?} is not a valid group name: 1 to 64 letters, digits, '-', '_' or '.', e.g. name = \"prod-a\"",
                    group.name
                ),
            ));
        }
        if !valid_name(&group.monitor) {
            return Err(problem(
                "monitor",
                format!(
                    "{:?} is not a valid monitor name: 1 to 64 letters, digits, '-', '_' or '.', unique in the group (the host's name is a good choice)",
                    group.monitor
                ),
            ));
        }
        if group.endpoints.is_empty() {
            return Err(problem(
                "endpoints",
                "is empty: list the etcd cluster's client URLs, e.g. endpoints = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\", \"http://10.0.0.3:2379\"]".to_owned(),
            ));
        }
        for endpoint in &group.endpoints {
            let rest = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"));
            let well_formed = rest.is_some_and(|hostport| {
                hostport.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
                })
            });
            if !well_formed {
                return Err(problem(
                    "endpoints",
                    format!(
                        "{endpoint:?} is not an etcd client URL: write http://HOST:PORT or https://HOST:PORT, e.g. \"http://10.0.0.1:2379\""
                    ),
                ));
            }
        }
        let tls = group
            .endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if tls != 0 && tls != group.endpoints.len() {
            return Err(problem(
                "endpoints",
                "mixes http:// and https:// URLs: one etcd cluster speaks one of them; use the same scheme for every endpoint".to_owned(),
            ));
        }
        if group.cert_file.is_some() != group.key_file.is_some() {
            return Err(problem(
                "cert_file",
                "a client certificate needs its key and the other way round: set both cert_file and key_file, or neither".to_owned(),
            ));
        }
        if tls == 0 && (group.ca_file.is_some() || group.cert_file.is_some()) {
            return Err(problem(
                "ca_file",
                "TLS files are set but the endpoints are http://: use https:// endpoints, or remove ca_file, cert_file and key_file".to_owned(),
            ));
        }
        for (field, path) in [
            ("ca_file", &group.ca_file),
            ("cert_file", &group.cert_file),
            ("key_file", &group.key_file),
        ] {
            if let Some(path) = path
                && let Err(cause) = std::fs::metadata(path)
            {
                return Err(problem(
                    field,
                    format!("cannot read {}: {cause}: fix the path", path.display()),
                ));
            }
        }
        if group.lease_ttl < MIN_LEASE_TTL {
            return Err(problem(
                "lease_ttl",
                format!(
                    "{} is too short: etcd grants no lease under about 1.5 s; use at least {}",
                    humantime::format_duration(group.lease_ttl),
                    humantime::format_duration(MIN_LEASE_TTL)
                ),
            ));
        }
        if group.request_timeout.is_zero() || group.request_timeout * 2 > group.lease_ttl {
            return Err(problem(
                "request_timeout",
                format!(
                    "must be more than 0 and at most half of lease_ttl ({}), so that a monitor can renew its lease in time",
                    humantime::format_duration(group.lease_ttl)
                ),
            ));
        }
        if let Some(action) = self.actions.iter().find(|a| {
            a.on.iter()
                .any(|e| matches!(e, Event::Suspect | Event::Flapping))
        }) {
            return Err(ConfigError::GroupLocalEvent {
                action: action.name.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{BASE, action, assert_mentions, parse, validate_err};

    const GROUP: &str =
        "[group]\nname = \"prod\"\nmonitor = \"m1\"\nendpoints = [\"http://10.0.0.1:2379\"]\n";

    #[test]
    fn a_group_parses_with_its_defaults() {
        let config = parse(&format!("{BASE}{GROUP}"));
        config.validate().expect("valid");
        let group = config.group.expect("a group");
        assert_eq!(group.lease_ttl, super::DEFAULT_LEASE_TTL);
        assert_eq!(group.request_timeout, super::DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(group.join_after, None);
        assert!(!group.uses_tls());
        assert_eq!(parse(BASE).group, None, "no [group]: alone");
    }

    #[test]
    fn group_mistakes_name_the_key_and_the_fix() {
        let cases: [(&str, &[&str]); 9] = [
            ("name = \"a/b\"", &["group.name", "letters, digits"]),
            ("monitor = \"\"", &["group.monitor", "unique in the group"]),
            ("endpoints = []", &["group.endpoints", "is empty"]),
            (
                "endpoints = [\"10.0.0.1:2379\"]",
                &["group.endpoints", "http://HOST:PORT"],
            ),
            (
                "endpoints = [\"http://a:2379\", \"https://b:2379\"]",
                &["group.endpoints", "mixes"],
            ),
            ("lease_ttl = \"1s\"", &["group.lease_ttl", "at least 2s"]),
            (
                "request_timeout = \"3s\"",
                &["group.request_timeout", "half of lease_ttl"],
            ),
            ("cert_file = \"/x\"", &["group.cert_file", "key_file"]),
            ("ca_file = \"/nonexistent\"", &["group.ca_file", "https://"]),
        ];
        for (line, needles) in cases {
            let key = line.split(' ').next().unwrap();
            let group: String = GROUP
                .lines()
                .filter(|l| !l.starts_with(&format!("{key} ")))
                .map(|l| format!("{l}\n"))
                .collect();
            let err = validate_err(&format!("{BASE}{group}{line}\n"));
            assert_mentions(&err, needles);
        }
    }

    #[test]
    fn local_events_cannot_run_group_actions() {
        let text = format!(
            "{BASE}{}{GROUP}",
            action(
                "pager",
                "on = [\"down\", \"suspect\"]\ncommand = [\"/bin/true\"]\n"
            )
        );
        assert_mentions(&validate_err(&text), &["\"pager\"", "suspect or flapping"]);
    }
}
