//! Validation: every value of a parsed [`Config`] is checked, the first
//! problem found is returned as a [`ConfigError`] that says how to fix it.
//! The host is only looked at by [`Config::check_interfaces_exist`].

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::Duration,
};

use super::{Config, ConfigError, Defaults, NodeRange};
use crate::sinks::actions::ActionRun;

/// Largest `max_nodes` accepted: the node table is 72 bytes of kernel
/// memory per id, so this caps it at 1.125 GiB.
pub const MAX_NODES_LIMIT: u32 = 16_777_216;
/// Shortest heartbeat interval accepted (default or per node).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest heartbeat interval accepted: the wire format carries the interval
/// as a 32-bit number of milliseconds.
pub const MAX_INTERVAL: Duration = Duration::from_millis(u32::MAX as u64);
/// Where the kernel lists network interfaces.
const SYS_CLASS_NET: &str = "/sys/class/net";
/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
const MAX_INTERFACE_NAME_LEN: usize = 15;

impl Config {
    /// Checks every value; returns the first problem found. Does not look
    /// at the host (see [`Config::check_interfaces_exist`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_interfaces()?;
        if self.port == 0 {
            return Err(ConfigError::PortZero);
        }
        if self.max_nodes == 0 || self.max_nodes > MAX_NODES_LIMIT {
            return Err(ConfigError::MaxNodesOutOfRange {
                max_nodes: self.max_nodes,
            });
        }
        if !crate::datapath::pins::valid_instance(&self.instance) {
            return Err(ConfigError::InvalidInstance {
                instance: self.instance.clone(),
            });
        }
        if self.max_concurrent_actions == 0 {
            return Err(ConfigError::MaxConcurrentActionsZero);
        }
        self.validate_defaults()?;
        self.validate_nodes()?;
        self.validate_auth()?;
        self.validate_http()?;
        self.validate_detector()?;
        self.brake
            .settings()
            .check()
            .map_err(|problem| ConfigError::Brake { problem })?;
        self.validate_actions()?;
        self.validate_probes()?;
        self.validate_group()
    }

    fn validate_detector(&self) -> Result<(), ConfigError> {
        let detector = &self.detector;
        if !(detector.phi_threshold.is_finite() && detector.phi_threshold > 0.0) {
            return Err(ConfigError::PhiThreshold {
                threshold: detector.phi_threshold,
            });
        }
        if !(detector.suspect_phi.is_finite()
            && detector.suspect_phi > 0.0
            && detector.suspect_phi < detector.phi_threshold)
        {
            return Err(ConfigError::SuspectPhi {
                suspect_phi: detector.suspect_phi,
                threshold: detector.phi_threshold,
            });
        }
        if detector.rise == 0 {
            return Err(ConfigError::RiseZero);
        }
        if detector.flap_max > 0
            && (detector.flap_window.is_zero() || detector.flap_stable.is_zero())
        {
            return Err(ConfigError::FlapDurations);
        }
        if detector.min_std_dev.is_zero() {
            return Err(ConfigError::MinStdDevZero);
        }
        if detector.stall_threshold.is_zero() {
            return Err(ConfigError::StallThresholdZero);
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        if self.auth.keys.len() > 2 {
            return Err(ConfigError::TooManyKeys {
                count: self.auth.keys.len(),
            });
        }
        if self.auth.keys.is_empty() && self.auth.accept_unauthenticated == Some(false) {
            return Err(ConfigError::NoKeysToAuthenticate);
        }
        Ok(())
    }

    /// Checks that every interface exists on this host
    /// (`/sys/class/net/<name>`). Separate from [`Config::validate`] so that
    /// validation does not depend on the host.
    pub fn check_interfaces_exist(&self) -> Result<(), ConfigError> {
        self.check_interfaces_exist_in(Path::new(SYS_CLASS_NET))
    }

    fn check_interfaces_exist_in(&self, sys_class_net: &Path) -> Result<(), ConfigError> {
        for name in &self.interfaces {
            // Never build a path from a name that could leave the directory.
            if !valid_interface_name(name) || !sys_class_net.join(name).exists() {
                return Err(ConfigError::UnknownInterface { name: name.clone() });
            }
        }
        Ok(())
    }

    fn validate_interfaces(&self) -> Result<(), ConfigError> {
        if self.interfaces.is_empty() {
            return Err(ConfigError::NoInterfaces);
        }
        let mut seen = HashSet::new();
        for name in &self.interfaces {
            if !valid_interface_name(name) {
                return Err(ConfigError::InvalidInterfaceName { name: name.clone() });
            }
            if !seen.insert(name.as_str()) {
                return Err(ConfigError::DuplicateInterface { name: name.clone() });
            }
        }
        Ok(())
    }

    fn validate_defaults(&self) -> Result<(), ConfigError> {
        let Defaults {
            interval,
            timeout_multiplier,
            sweep_period,
            sweep_priority,
            lock_memory: _,
        } = self.defaults;
        if timeout_multiplier < 2 {
            return Err(ConfigError::TimeoutMultiplierTooSmall {
                multiplier: timeout_multiplier,
            });
        }
        if interval < MIN_INTERVAL {
            return Err(ConfigError::IntervalTooShort { interval });
        }
        if interval > MAX_INTERVAL {
            return Err(ConfigError::IntervalTooLong { interval });
        }
        if sweep_period.is_zero() || sweep_period > interval {
            return Err(ConfigError::SweepPeriodOutOfRange {
                sweep_period,
                interval,
            });
        }
        if let Some(priority) = sweep_priority
            && self.defaults.sweep_priority().is_none()
        {
            return Err(ConfigError::SweepPriorityOutOfRange { priority });
        }
        Ok(())
    }

    fn validate_nodes(&self) -> Result<(), ConfigError> {
        let mut by_id: HashMap<u32, &str> = HashMap::new();
        let mut by_name: HashMap<&str, u32> = HashMap::new();
        for node in &self.nodes {
            if node.name.trim().is_empty() {
                return Err(ConfigError::EmptyNodeName { id: node.id });
            }
            if node.id >= self.max_nodes {
                return Err(ConfigError::NodeIdTooLarge {
                    id: node.id,
                    name: node.name.clone(),
                    max_nodes: self.max_nodes,
                });
            }
            if let Some(first) = by_id.insert(node.id, &node.name) {
                return Err(ConfigError::DuplicateNodeId {
                    id: node.id,
                    first: first.to_owned(),
                    second: node.name.clone(),
                });
            }
            if let Some(first_id) = by_name.insert(&node.name, node.id) {
                return Err(ConfigError::DuplicateNodeName {
                    name: node.name.clone(),
                    first_id,
                    second_id: node.id,
                });
            }
            check_node_interval(&node.name, node.interval)?;
        }
        self.validate_node_ranges(&by_id, &by_name)
    }

    fn validate_actions(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (index, action) in self.actions.iter().enumerate() {
            if action.name.trim().is_empty() {
                return Err(ConfigError::EmptyActionName { index: index + 1 });
            }
            let empty_field = match &action.run {
                ActionRun::Command(argv) if argv.first().is_none_or(|p| p.is_empty()) => {
                    Some("command")
                }
                ActionRun::Shell(script) if script.trim().is_empty() => Some("shell"),
                _ => None,
            };
            if let Some(field) = empty_field {
                return Err(ConfigError::EmptyCommand {
                    action: action.name.clone(),
                    field,
                });
            }
            if action.on.is_empty() {
                return Err(ConfigError::NoActionEvents {
                    action: action.name.clone(),
                });
            }
            if let ActionRun::Haproxy(haproxy) = &action.run {
                haproxy
                    .check(&action.on)
                    .map_err(|problem| ConfigError::HaproxyAction {
                        action: action.name.clone(),
                        problem,
                    })?;
            }
            if action.timeout.is_zero() {
                return Err(ConfigError::ActionTimeoutZero {
                    action: action.name.clone(),
                });
            }
            if let ActionRun::Webhook(hook) = &action.run {
                hook.validate().map_err(|problem| ConfigError::Webhook {
                    action: action.name.clone(),
                    problem,
                })?;
            }
            if !names.insert(action.name.as_str()) {
                return Err(ConfigError::DuplicateActionName {
                    action: action.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Checks `[[node_ranges]]`, each range on its own, then against the
    /// listed nodes (`by_id`, `by_name`) and the other ranges.
    fn validate_node_ranges(
        &self,
        by_id: &HashMap<u32, &str>,
        by_name: &HashMap<&str, u32>,
    ) -> Result<(), ConfigError> {
        let mut ranges: Vec<&NodeRange> = self.node_ranges.iter().collect();
        ranges.sort_by_key(|r| r.first_id);
        for range in &ranges {
            self.check_range_size(range)?;
            check_range_against_nodes(range, by_id, by_name)?;
            check_node_interval(&range.name_prefix, range.interval)?;
            check_range_sources(range)?;
        }
        check_ranges_disjoint(&ranges)?;
        check_range_prefixes_distinct(&ranges)
    }

    /// A range has a name prefix and at least one node, and its ids fit in
    /// the table.
    fn check_range_size(&self, range: &NodeRange) -> Result<(), ConfigError> {
        if range.name_prefix.trim().is_empty() {
            return Err(range_problem(range, "`name_prefix` is empty: give the nodes of the range a name prefix, e.g. name_prefix = \"node-\"".into()));
        }
        if range.count == 0 {
            return Err(range_problem(
                range,
                "`count` is 0: a range holds at least one node".into(),
            ));
        }
        if u64::from(range.first_id) + u64::from(range.count) > u64::from(self.max_nodes) {
            return Err(range_problem(
                range,
                format!(
                    "ids {}..={} do not fit in the table: raise max_nodes to at least {}",
                    range.first_id,
                    u64::from(range.first_id) + u64::from(range.count) - 1,
                    u64::from(range.first_id) + u64::from(range.count)
                ),
            ));
        }
        Ok(())
    }
}

/// A `NodeRange` error about `range`.
fn range_problem(range: &NodeRange, problem: String) -> ConfigError {
    ConfigError::NodeRange {
        prefix: range.name_prefix.clone(),
        problem,
    }
}

/// No id of the range is a listed node's, and no listed node's name is one
/// the range gives.
fn check_range_against_nodes(
    range: &NodeRange,
    by_id: &HashMap<u32, &str>,
    by_name: &HashMap<&str, u32>,
) -> Result<(), ConfigError> {
    if let Some((&id, &name)) = by_id.iter().find(|(id, _)| range.ids().contains(id)) {
        return Err(range_problem(
            range,
            format!(
                "its ids include {id}, already node `{name}`: give the node another id or shrink the range"
            ),
        ));
    }
    if let Some((&name, _)) = by_name.iter().find(|(name, _)| {
        name.strip_prefix(range.name_prefix.as_str())
            .and_then(|rest| rest.parse::<u32>().ok())
            .is_some_and(|id| range.ids().contains(&id))
    }) {
        return Err(range_problem(
            range,
            format!("it names a node `{name}` too: rename that node"),
        ));
    }
    Ok(())
}

/// A pinned range's source addresses all exist.
fn check_range_sources(range: &NodeRange) -> Result<(), ConfigError> {
    if let Some(first) = range.first_source
        && range.source_of(range.ids().end - 1).is_none()
    {
        return Err(range_problem(
            range,
            format!(
                "`first_source` {first} + {} addresses runs past the last address: start the range lower",
                range.count
            ),
        ));
    }
    Ok(())
}

/// No two ranges share an id; `ranges` is sorted by `first_id`.
fn check_ranges_disjoint(ranges: &[&NodeRange]) -> Result<(), ConfigError> {
    for pair in ranges.windows(2) {
        if pair[0].ids().end > pair[1].first_id {
            return Err(range_problem(
                pair[1],
                format!(
                    "its ids overlap the range `{}`: ranges must not share ids",
                    pair[0].name_prefix
                ),
            ));
        }
    }
    Ok(())
}

/// No range's name prefix starts with another's, so no two ranges can name
/// a node alike.
fn check_range_prefixes_distinct(ranges: &[&NodeRange]) -> Result<(), ConfigError> {
    for a in ranges {
        for b in ranges {
            if !std::ptr::eq(*a, *b) && b.name_prefix.starts_with(a.name_prefix.as_str()) {
                return Err(range_problem(
                    b,
                    format!(
                        "its name prefix starts with the prefix `{}` of another range, so names could clash: make the prefixes distinct",
                        a.name_prefix
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_node_interval(name: &str, interval: Option<Duration>) -> Result<(), ConfigError> {
    match interval {
        Some(interval) if interval < MIN_INTERVAL => Err(ConfigError::NodeIntervalTooShort {
            name: name.to_owned(),
            interval,
        }),
        Some(interval) if interval > MAX_INTERVAL => Err(ConfigError::NodeIntervalTooLong {
            name: name.to_owned(),
            interval,
        }),
        _ => Ok(()),
    }
}

fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME_LEN
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{AuthConfig, DetectorConfig, DetectorKind, test_support::*};

    #[test]
    fn no_interfaces() {
        let err = validate_err("");
        assert!(matches!(err, ConfigError::NoInterfaces), "{err:?}");
        assert_mentions(&err, &["`interfaces`", "--interface"]);
        let err = validate_err("interfaces = []\n");
        assert!(matches!(err, ConfigError::NoInterfaces), "{err:?}");
    }

    #[test]
    fn bad_and_duplicate_interface_names() {
        for name in ["", "../etc", "a b", "sixteen-chars-xx", ".."] {
            let err = validate_err(&format!("interfaces = [{name:?}]\n"));
            assert!(
                matches!(&err, ConfigError::InvalidInterfaceName { name: n } if n == name),
                "{err:?}"
            );
            assert_mentions(&err, &["`interfaces`"]);
        }
        let err = validate_err("interfaces = [\"eth0\", \"eth1\", \"eth0\"]\n");
        assert!(
            matches!(err, ConfigError::DuplicateInterface { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`interfaces`", "eth0"]);
    }

    #[test]
    fn interface_existence_is_checked_in_sys_class_net() {
        let dir = TempDir::new("ifaces");
        std::fs::create_dir(dir.0.join("veth0")).expect("mkdir veth0");
        let mut config = parse("interfaces = [\"veth0\"]\n");
        config
            .check_interfaces_exist_in(&dir.0)
            .expect("veth0 exists");
        config.interfaces.push("nosuch0".into());
        let err = config
            .check_interfaces_exist_in(&dir.0)
            .expect_err("nosuch0 does not exist");
        assert!(
            matches!(&err, ConfigError::UnknownInterface { name } if name == "nosuch0"),
            "{err:?}"
        );
        assert_mentions(&err, &["`interfaces`", "nosuch0"]);
        // A name that escapes the directory is never looked up.
        config.interfaces = vec![".".into()];
        assert!(config.check_interfaces_exist_in(&dir.0).is_err());
    }

    #[test]
    fn port_zero() {
        let err = validate_err(&format!("{BASE}port = 0\n"));
        assert!(matches!(err, ConfigError::PortZero), "{err:?}");
        assert_mentions(&err, &["`port`"]);
    }

    #[test]
    fn max_nodes_range() {
        for value in [0, MAX_NODES_LIMIT + 1] {
            let err = validate_err(&format!("{BASE}max_nodes = {value}\n"));
            assert!(
                matches!(err, ConfigError::MaxNodesOutOfRange { max_nodes } if max_nodes == value),
                "{err:?}"
            );
            assert_mentions(&err, &["`max_nodes`"]);
        }
        parse(&format!("{BASE}max_nodes = {MAX_NODES_LIMIT}\n"))
            .validate()
            .expect("the limit itself is allowed");
    }

    #[test]
    fn instance_names() {
        for value in ["", "a/b", "has space", "dot.ted", &"x".repeat(33)] {
            let err = validate_err(&format!("{BASE}instance = {value:?}\n"));
            assert!(
                matches!(&err, ConfigError::InvalidInstance { instance } if instance == value),
                "{err:?}"
            );
            assert_mentions(
                &err,
                &["`instance`", "1 to 32 characters", "/sys/fs/bpf/hb"],
            );
        }
        assert_eq!(parse(BASE).instance, "default");
        for value in ["default", "edge-1", "A_b-9", &"x".repeat(32)] {
            let config = parse(&format!("{BASE}instance = {value:?}\n"));
            config.validate().expect("a valid instance name");
            assert_eq!(config.instance, value);
        }
    }

    #[test]
    fn max_concurrent_actions_zero() {
        let err = validate_err(&format!("{BASE}max_concurrent_actions = 0\n"));
        assert!(
            matches!(err, ConfigError::MaxConcurrentActionsZero),
            "{err:?}"
        );
        assert_mentions(&err, &["`max_concurrent_actions`"]);
    }

    #[test]
    fn timeout_multiplier_below_two() {
        for value in [0, 1] {
            let err = validate_err(&format!("{BASE}[defaults]\ntimeout_multiplier = {value}\n"));
            assert!(
                matches!(err, ConfigError::TimeoutMultiplierTooSmall { multiplier } if multiplier == value),
                "{err:?}"
            );
            assert_mentions(&err, &["timeout_multiplier", ">= 2"]);
        }
        parse(&format!("{BASE}[defaults]\ntimeout_multiplier = 2\n"))
            .validate()
            .expect("2 is allowed");
    }

    #[test]
    fn interval_too_short_or_too_long() {
        for value in ["0s", "9ms"] {
            let err = validate_err(&format!(
                "{BASE}[defaults]\ninterval = \"{value}\"\nsweep_period = \"1ms\"\n"
            ));
            assert!(
                matches!(err, ConfigError::IntervalTooShort { .. }),
                "{err:?}"
            );
            assert_mentions(&err, &["`defaults.interval`"]);
        }
        parse(&format!(
            "{BASE}[defaults]\ninterval = \"10ms\"\nsweep_period = \"10ms\"\n"
        ))
        .validate()
        .expect("10ms is allowed");
        let err = validate_err(&format!("{BASE}[defaults]\ninterval = \"50days\"\n"));
        assert!(
            matches!(err, ConfigError::IntervalTooLong { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`defaults.interval`"]);
    }

    #[test]
    fn sweep_period_zero_or_longer_than_interval() {
        for value in ["0s", "3s"] {
            let err = validate_err(&format!("{BASE}[defaults]\nsweep_period = \"{value}\"\n"));
            assert!(
                matches!(err, ConfigError::SweepPeriodOutOfRange { .. }),
                "{err:?}"
            );
            assert_mentions(&err, &["`defaults.sweep_period`", "`defaults.interval`"]);
        }
        parse(&format!("{BASE}[defaults]\nsweep_period = \"2s\"\n"))
            .validate()
            .expect("sweep == interval is allowed");
    }

    #[test]
    fn sweep_priority_out_of_range() {
        for value in ["0", "100", "-5", "1000"] {
            let err = validate_err(&format!("{BASE}[defaults]\nsweep_priority = {value}\n"));
            assert!(
                matches!(err, ConfigError::SweepPriorityOutOfRange { priority } if priority.to_string() == value),
                "{err:?}"
            );
            assert_mentions(&err, &["`defaults.sweep_priority`", "1 to 99", "remove it"]);
        }
        for value in [1, 50, 99] {
            let config = parse(&format!(
                "{BASE}[defaults]\nsweep_priority = {value}\nlock_memory = true\n"
            ));
            config.validate().expect("1..=99 is allowed");
            assert_eq!(config.defaults.sweep_priority(), Some(value));
            assert!(config.defaults.lock_memory);
        }
        let plain = parse(BASE);
        assert_eq!(plain.defaults.sweep_priority(), None);
        assert!(!plain.defaults.lock_memory, "off by default");
    }

    #[test]
    fn empty_node_name() {
        let err = validate_err(&format!("{BASE}{}", node(3, "  ")));
        assert!(
            matches!(err, ConfigError::EmptyNodeName { id: 3 }),
            "{err:?}"
        );
        assert_mentions(&err, &["`name`", "3"]);
    }

    #[test]
    fn node_id_must_be_below_max_nodes() {
        let err = validate_err(&format!("{BASE}max_nodes = 10\n{}", node(10, "big")));
        assert!(
            matches!(err, ConfigError::NodeIdTooLarge { id: 10, .. }),
            "{err:?}"
        );
        assert_mentions(
            &err,
            &[
                "`id`",
                "`max_nodes`",
                "big",
                "raise max_nodes to at least 11",
            ],
        );
        parse(&format!("{BASE}max_nodes = 10\n{}", node(9, "ok")))
            .validate()
            .expect("id 9 < 10");
        // id + 1 does not overflow in the message.
        let err = validate_err(&format!("{BASE}{}", node(u32::MAX, "huge")));
        assert_mentions(&err, &["at least 4294967296"]);
    }

    #[test]
    fn duplicate_node_id_names_both_nodes() {
        let err = validate_err(&format!("{BASE}{}{}", node(5, "alpha"), node(5, "beta")));
        assert!(
            matches!(err, ConfigError::DuplicateNodeId { id: 5, .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`id`", "alpha", "beta"]);
    }

    #[test]
    fn duplicate_node_name() {
        let err = validate_err(&format!("{BASE}{}{}", node(1, "same"), node(2, "same")));
        assert!(
            matches!(
                err,
                ConfigError::DuplicateNodeName {
                    first_id: 1,
                    second_id: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_mentions(&err, &["`name`", "same"]);
    }

    #[test]
    fn node_interval_bounds() {
        let err = validate_err(&format!("{BASE}{}interval = \"5ms\"\n", node(1, "fast")));
        assert!(
            matches!(err, ConfigError::NodeIntervalTooShort { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`interval`", "fast"]);
        let err = validate_err(&format!("{BASE}{}interval = \"60days\"\n", node(1, "slow")));
        assert!(
            matches!(err, ConfigError::NodeIntervalTooLong { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`interval`", "slow"]);
    }

    #[test]
    fn empty_command_or_script() {
        for (body, field) in [
            ("command = []\n", "`command`"),
            ("command = [\"\"]\n", "`command`"),
            ("shell = \"  \"\n", "`shell`"),
        ] {
            let err = validate_err(&format!(
                "{BASE}{}",
                action("e", &format!("on = [\"up\"]\n{body}"))
            ));
            assert!(matches!(err, ConfigError::EmptyCommand { .. }), "{err:?}");
            assert_mentions(&err, &[field, "`e`"]);
        }
    }

    #[test]
    fn action_on_empty() {
        let err = validate_err(&format!(
            "{BASE}{}",
            action("quiet", "on = []\nshell = \"true\"\n")
        ));
        assert!(matches!(err, ConfigError::NoActionEvents { .. }), "{err:?}");
        assert_mentions(&err, &["`on`", "quiet"]);
        // `on` is required in the file.
        let err = parse_err(&format!("{BASE}{}", action("quiet", "shell = \"true\"\n")));
        assert_mentions(&err, &["on"]);
    }

    #[test]
    fn action_timeout_zero() {
        let err = validate_err(&format!(
            "{BASE}{}",
            action("t", "on = [\"up\"]\nshell = \"true\"\ntimeout = \"0s\"\n")
        ));
        assert!(
            matches!(err, ConfigError::ActionTimeoutZero { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`timeout`", "`t`"]);
    }

    #[test]
    fn empty_and_duplicate_action_names() {
        let body = "on = [\"up\"]\nshell = \"true\"\n";
        let err = validate_err(&format!("{BASE}{}", action("", body)));
        assert!(
            matches!(err, ConfigError::EmptyActionName { index: 1 }),
            "{err:?}"
        );
        assert_mentions(&err, &["`name`"]);
        let err = validate_err(&format!(
            "{BASE}{}{}",
            action("twice", body),
            action("twice", body)
        ));
        assert!(
            matches!(err, ConfigError::DuplicateActionName { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`name`", "twice"]);
    }

    #[test]
    fn auth_keys_and_the_unauthenticated_default() {
        use hb_common::admission::Unauthenticated;
        let none = parse(BASE);
        assert_eq!(none.auth, AuthConfig::default());
        assert_eq!(none.auth.unauthenticated(), Unauthenticated::Accept);
        let keyed = parse(&format!("{BASE}[auth]\nkeys = [\"/etc/hb/a.key\"]\n"));
        keyed.validate().expect("one key");
        assert_eq!(keyed.auth.keys, vec![PathBuf::from("/etc/hb/a.key")]);
        assert_eq!(
            keyed.auth.unauthenticated(),
            Unauthenticated::Refuse,
            "refused by default once a key is configured"
        );
        let migrating = parse(&format!(
            "{BASE}[auth]\nkeys = [\"/a\", \"/b\"]\naccept_unauthenticated = true\n"
        ));
        migrating.validate().expect("two keys");
        assert_eq!(migrating.auth.unauthenticated(), Unauthenticated::Accept);

        let err = validate_err(&format!("{BASE}[auth]\nkeys = [\"/a\", \"/b\", \"/c\"]\n"));
        assert_mentions(&err, &["`auth.keys` lists 3", "at most 2"]);
        let err = validate_err(&format!("{BASE}[auth]\naccept_unauthenticated = false\n"));
        assert_mentions(&err, &["auth.accept_unauthenticated", "hb keygen"]);
        let err = parse_err(&format!("{BASE}[auth]\nkey = \"/a\"\n"));
        assert_mentions(&err, &["key"]);
    }

    #[test]
    fn detector_section_and_its_mistakes() {
        let config = parse(BASE);
        assert_eq!(config.detector, DetectorConfig::default());
        assert_eq!(config.detector.kind, DetectorKind::Timeout);
        let phi = parse(&format!(
            "{BASE}[detector]\nkind = \"phi\"\nphi_threshold = 10.0\nmin_std_dev = \"20ms\"\n\
             acceptable_pause = \"300ms\"\nstall_threshold = \"2s\"\n"
        ));
        phi.validate().expect("a valid detector section");
        assert_eq!(phi.detector.kind, DetectorKind::Phi);
        assert_eq!(phi.detector.phi_threshold, 10.0);
        assert_eq!(phi.detector.min_std_dev, Duration::from_millis(20));
        assert_eq!(
            phi.detector.acceptable_pause,
            Some(Duration::from_millis(300))
        );
        assert_eq!(phi.detector.stall_threshold, Duration::from_secs(2));
        for (body, needle) in [
            ("phi_threshold = 0.0", "`detector.phi_threshold` is 0"),
            ("phi_threshold = -3.0", "`detector.phi_threshold` is -3"),
            ("min_std_dev = \"0s\"", "`detector.min_std_dev` is zero"),
            (
                "stall_threshold = \"0s\"",
                "`detector.stall_threshold` is zero",
            ),
        ] {
            let err = validate_err(&format!("{BASE}[detector]\n{body}\n"));
            assert_mentions(&err, &[needle]);
        }
        let err = parse_err(&format!("{BASE}[detector]\nkind = \"gossip\"\n"));
        assert_mentions(&err, &["gossip"]);
    }

    #[test]
    fn sources_pin_nodes_and_ranges() {
        let config = parse(&format!(
            "{BASE}[[nodes]]\nid = 1\nname = \"a\"\nsource = \"fd00::7\"\n\
             [[node_ranges]]\nfirst_id = 10\ncount = 2\nname_prefix = \"n-\"\n\
             first_source = \"198.18.0.255\"\n"
        ));
        config.validate().expect("valid sources");
        assert_eq!(config.nodes[0].source, Some("fd00::7".parse().unwrap()));
        assert_eq!(
            config.node_ranges[0].source_of(11),
            Some("198.18.1.0".parse().unwrap())
        );
        let err = validate_err(&format!(
            "{BASE}[[node_ranges]]\nfirst_id = 0\ncount = 3\nname_prefix = \"n-\"\n\
             first_source = \"255.255.255.254\"\n"
        ));
        assert_mentions(
            &err,
            &["`first_source` 255.255.255.254", "start the range lower"],
        );
        let err = parse_err(&format!(
            "{BASE}[[nodes]]\nid = 1\nname = \"a\"\nsource = \"not-an-address\"\n"
        ));
        assert_mentions(&err, &["source"]);
    }

    #[test]
    fn node_ranges_parse_and_every_mistake_is_named() {
        let ok = parse(&format!(
            "{BASE}max_nodes = 3000\n[[nodes]]\nid = 5\nname = \"db\"\n\
             [[node_ranges]]\nfirst_id = 1000\ncount = 2000\nname_prefix = \"n-\"\ninterval = \"1s\"\n"
        ));
        ok.validate().expect("a valid range");
        assert_eq!(ok.node_ranges[0].ids(), 1000..3000);
        assert_eq!(ok.node_ranges[0].name_of(1234), "n-1234");
        assert_eq!(ok.node_ranges[0].interval, Some(Duration::from_secs(1)));

        let range = |first: u32, count: u32, prefix: &str| {
            format!(
                "[[node_ranges]]\nfirst_id = {first}\ncount = {count}\nname_prefix = \"{prefix}\"\n"
            )
        };
        for (extra, needle) in [
            (range(0, 0, "a-"), "`count` is 0"),
            (
                range(60_000, 10_000, "a-"),
                "raise max_nodes to at least 70000",
            ),
            (range(0, 10, ""), "`name_prefix` is empty"),
            (
                format!("[[nodes]]\nid = 3\nname = \"x\"\n{}", range(0, 10, "a-")),
                "already node `x`",
            ),
            (
                format!("[[nodes]]\nid = 30\nname = \"a-5\"\n{}", range(0, 10, "a-")),
                "names a node `a-5`",
            ),
            (
                format!("{}{}", range(0, 10, "a-"), range(5, 10, "b-")),
                "overlap the range `a-`",
            ),
            (
                format!("{}{}", range(0, 10, "a-"), range(20, 10, "a-b")),
                "starts with the prefix `a-`",
            ),
        ] {
            let err = validate_err(&format!("{BASE}{extra}"));
            assert!(matches!(err, ConfigError::NodeRange { .. }), "{err:?}");
            assert!(
                err.to_string().contains(needle),
                "{err} should contain {needle}"
            );
        }
    }
}
