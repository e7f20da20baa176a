//! The probe fields of `[[nodes]]` and `[[node_ranges]]` (`probe`,
//! `probe_timeout`, `probe_status`, `probe_body`, `probe_confirm`, a
//! range's `first_address`) and the `[probe]` section: their checks, and
//! the interval a probed node is judged by.

use std::time::Duration;

use super::{Config, ConfigError, DatapathKind, NodeRange};
use crate::probe::spec::{ProbeFields, ProbeKind};

impl Config {
    /// Gives every probed node and range without an `interval` of its own
    /// `defaults.interval`: it is probed that often, and judged by it even
    /// when it also runs a sender that advertises a shorter one (so the
    /// sender stopping never convicts a node its probe keeps fresh). Done
    /// by [`Config::load`] after the command line's overrides.
    pub fn settle_probe_intervals(&mut self) {
        let default = self.defaults.interval;
        for node in &mut self.nodes {
            if node.probe.is_some() && node.interval.is_none() {
                node.interval = Some(default);
            }
        }
        for range in &mut self.node_ranges {
            if range.probe.is_some() && range.interval.is_none() {
                range.interval = Some(default);
            }
        }
    }

    /// Every probed node's fields, the ranges' addresses, `[probe]`, and
    /// that the probes fit in `probe.max_rate`.
    pub(super) fn validate_probes(&self) -> Result<(), ConfigError> {
        if self.probe.max_rate == 0 {
            return Err(ConfigError::ProbeSection {
                field: "max_rate",
                problem: "is 0: set the most probes per second the agent may send, e.g. 200000"
                    .into(),
            });
        }
        if self.probe.max_concurrent == 0 {
            return Err(ConfigError::ProbeSection {
                field: "max_concurrent",
                problem:
                    "is 0: set how many TCP and HTTP probes may be in flight at once, e.g. 256"
                        .into(),
            });
        }
        let mut rate = 0.0;
        for node in &self.nodes {
            let who = || format!("node `{}`", node.name);
            self.check_fields(&node.probe_fields(), node.interval, &who)?;
            if node.probe.is_some() {
                if node.address.is_none() {
                    return Err(ConfigError::Probe {
                        node: who(),
                        problem: "has a `probe` but no `address` to probe: set address = \"...\""
                            .into(),
                    });
                }
                rate += self.probes_per_second(node.interval, 1);
            }
        }
        for range in &self.node_ranges {
            let who = || format!("node range `{}`", range.name_prefix);
            self.check_fields(&range.probe_fields(), range.interval, &who)?;
            check_range_addresses(range, &who)?;
            if range.probe.is_some() {
                rate += self.probes_per_second(range.interval, range.count);
            }
        }
        if rate > f64::from(self.probe.max_rate) {
            return Err(ConfigError::ProbeSection {
                field: "max_rate",
                problem: format!(
                    "is too low: the probed nodes need {rate:.0} probes per second at their intervals, above max_rate = {}: raise probe.max_rate or lengthen the probed nodes' intervals",
                    self.probe.max_rate
                ),
            });
        }
        Ok(())
    }

    /// Probes per second of `count` nodes probed every `interval`.
    fn probes_per_second(&self, interval: Option<Duration>, count: u32) -> f64 {
        let interval = interval.unwrap_or(self.defaults.interval);
        f64::from(count) / interval.as_secs_f64()
    }

    /// One node's or range's probe fields.
    fn check_fields(
        &self,
        fields: &ProbeFields,
        interval: Option<Duration>,
        who: &dyn Fn() -> String,
    ) -> Result<(), ConfigError> {
        let problem = |problem: String| ConfigError::Probe {
            node: who(),
            problem,
        };
        let Some(kind) = &fields.probe else {
            let stray = [
                ("probe_timeout", fields.timeout.is_some()),
                ("probe_status", fields.status.is_some()),
                ("probe_body", fields.body.is_some()),
                ("probe_confirm", fields.confirm),
            ];
            if let Some((field, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(problem(format!(
                    "`{field}` is set but the node has no `probe`: add probe = \"icmp\" (or tcp:PORT, or a URL), or remove `{field}`"
                )));
            }
            return Ok(());
        };
        let interval = interval.unwrap_or(self.defaults.interval);
        if let Some(timeout) = fields.timeout
            && (timeout.is_zero() || timeout > interval)
        {
            return Err(problem(format!(
                "`probe_timeout` is {}: set it above 0 and at most the probe interval ({})",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            )));
        }
        if !matches!(kind, ProbeKind::Http(_)) {
            for (field, set) in [
                ("probe_status", fields.status.is_some()),
                ("probe_body", fields.body.is_some()),
            ] {
                if set {
                    return Err(problem(format!(
                        "`{field}` only applies to http:// and https:// probes: remove it"
                    )));
                }
            }
        }
        if fields.body.as_deref() == Some("") {
            return Err(problem(
                "`probe_body` is empty: give the text the body must contain, or remove it".into(),
            ));
        }
        if *kind == ProbeKind::Icmp && self.datapath == DatapathKind::Socket {
            return Err(problem(
                "`probe = \"icmp\"` needs datapath = \"xdp\" (the XDP program records the echo replies): use datapath = \"xdp\", or probe with tcp:PORT or an http:// URL".into(),
            ));
        }
        Ok(())
    }
}

/// A range with `first_address` has an address for every node; a probed
/// range has `first_address`.
fn check_range_addresses(range: &NodeRange, who: &dyn Fn() -> String) -> Result<(), ConfigError> {
    if let Some(first) = range.first_address
        && range.address_of(range.ids().end - 1).is_none()
    {
        return Err(ConfigError::Probe {
            node: who(),
            problem: format!(
                "`first_address` {first} + {} addresses runs past the last address: start the range lower",
                range.count
            ),
        });
    }
    if range.probe.is_some() && range.first_address.is_none() {
        return Err(ConfigError::Probe {
            node: who(),
            problem: "has a `probe` but no `first_address`: node first_id + k is probed at first_address + k, set first_address = \"...\"".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::parse(text, "test")?;
        config.settle_probe_intervals();
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn probed_nodes_and_ranges_parse() {
        let config = load(&format!(
            "{BASE}[defaults]\ninterval = \"1s\"\n\
             [[nodes]]\nid = 1\nname = \"sw\"\naddress = \"198.18.0.2\"\nprobe = \"icmp\"\nprobe_confirm = true\n\
             [[nodes]]\nid = 2\nname = \"web\"\naddress = \"fd00::2\"\nprobe = \"http://{{address}}:8080/healthz\"\n\
             probe_status = \"200-299\"\nprobe_body = \"ok\"\ninterval = \"500ms\"\nprobe_timeout = \"200ms\"\n\
             [[nodes]]\nid = 3\nname = \"db\"\naddress = \"198.18.0.3\"\nprobe = \"tcp:5432\"\n\
             [[node_ranges]]\nfirst_id = 10\ncount = 4\nname_prefix = \"n-\"\nfirst_address = \"198.18.1.254\"\nprobe = \"icmp\"\n"
        ))
        .expect("valid");
        assert_eq!(config.nodes[0].interval, Some(Duration::from_secs(1)));
        assert_eq!(config.node_ranges[0].interval, Some(Duration::from_secs(1)));
        let nodes = crate::nodes::NodeDirectory::new(&config.nodes, &config.node_ranges);
        let (address, plan) = nodes.probe_of(13, config.defaults.interval).unwrap();
        assert_eq!(address, "198.18.2.1".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(plan.kind, ProbeKind::Icmp);
        assert_eq!(plan.timeout, Duration::from_millis(500));
        let (_, web) = nodes.probe_of(2, config.defaults.interval).unwrap();
        assert_eq!(web.timeout, Duration::from_millis(200));
        assert_eq!(web.status.to_string(), "200-299");
        assert!(nodes.probe_of(14, config.defaults.interval).is_none());
        assert_eq!(
            nodes.get(11).unwrap().address,
            Some("198.18.1.255".parse().unwrap())
        );
    }

    #[test]
    fn every_probe_mistake_names_the_field_and_the_fix() {
        let node = |extra: &str| {
            format!("{BASE}[[nodes]]\nid = 1\nname = \"sw\"\naddress = \"198.18.0.2\"\n{extra}")
        };
        for (extra, words) in [
            ("probe = \"ping\"\n", &["probe", "icmp"][..]),
            ("probe = \"tcp:0\"\n", &["TCP port"]),
            ("probe_confirm = true\n", &["`probe_confirm`", "no `probe`"]),
            (
                "probe = \"icmp\"\nprobe_status = \"200\"\n",
                &["`probe_status`", "http"],
            ),
            (
                "probe = \"icmp\"\ninterval = \"1s\"\nprobe_timeout = \"2s\"\n",
                &["`probe_timeout`", "at most the probe interval"],
            ),
            (
                "probe = \"http://{address}/\"\nprobe_body = \"\"\n",
                &["`probe_body` is empty"],
            ),
            (
                "probe = \"http://{address}/\"\nprobe_status = \"600\"\n",
                &["probe_status", "100 and 599"],
            ),
        ] {
            let error = load(&node(extra)).expect_err(extra);
            assert_mentions(&error, words);
        }
        let error = load(&format!(
            "{BASE}[[nodes]]\nid = 1\nname = \"sw\"\nprobe = \"icmp\"\n"
        ))
        .unwrap_err();
        assert_mentions(&error, &["node `sw`", "no `address`"]);
        let error = load(&format!(
            "datapath = \"socket\"\n{}",
            node("probe = \"icmp\"\n")
        ))
        .unwrap_err();
        assert_mentions(&error, &["datapath = \"xdp\"", "tcp:PORT"]);
        let error = load(&format!(
            "{BASE}[[node_ranges]]\nfirst_id = 0\ncount = 2\nname_prefix = \"n\"\nprobe = \"icmp\"\n"
        ))
        .unwrap_err();
        assert_mentions(&error, &["node range `n`", "first_address"]);
        let error = load(&format!(
            "{BASE}[[node_ranges]]\nfirst_id = 0\ncount = 2\nname_prefix = \"n\"\nfirst_address = \"255.255.255.255\"\n"
        ))
        .unwrap_err();
        assert_mentions(&error, &["first_address", "start the range lower"]);
    }

    #[test]
    fn the_probe_rate_must_fit_max_rate() {
        let text = |max_rate: u32| {
            format!(
                "{BASE}max_nodes = 200000\n[probe]\nmax_rate = {max_rate}\n\
                 [[node_ranges]]\nfirst_id = 0\ncount = 100000\nname_prefix = \"n\"\n\
                 first_address = \"198.18.64.0\"\nprobe = \"icmp\"\ninterval = \"500ms\"\n"
            )
        };
        load(&text(200_000)).expect("200,000 probes/s fit");
        let error = load(&text(150_000)).unwrap_err();
        assert_mentions(
            &error,
            &["`probe.max_rate`", "200000 probes per second", "raise"],
        );
        assert_mentions(&load(&text(0)).unwrap_err(), &["`probe.max_rate` is 0"]);
        let error = load(&format!("{BASE}[probe]\nmax_concurrent = 0\n")).unwrap_err();
        assert_mentions(&error, &["`probe.max_concurrent` is 0"]);
    }
}
