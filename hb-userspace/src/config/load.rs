//! Loading: reading the file, parsing the TOML into a [`Config`] (filling
//! in defaults and building the actions), and applying the command line's
//! [`Overrides`].

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use super::{
    AuthConfig, BrakeConfig, Config, ConfigError, DEFAULT_ACTION_TIMEOUT, DatapathKind, Defaults,
    DetectorConfig, NodeConfig, NodeRange, XdpMode, http::RawHttp,
};
use crate::sinks::actions::{
    ActionConfig, ActionRun, Event,
    haproxy::HaproxyFields,
    webhook::{WebhookFields, WebhookProblem},
};

/// Command-line values that win over the config file. `None`/empty/false
/// leaves the file's value alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Non-empty: replaces the file's `interfaces`.
    pub interfaces: Vec<String>,
    pub port: Option<u16>,
    pub interval: Option<Duration>,
    pub timeout_multiplier: Option<u32>,
    pub sweep_period: Option<Duration>,
    pub max_nodes: Option<u32>,
    pub datapath: Option<DatapathKind>,
    pub xdp_mode: Option<XdpMode>,
    pub instance: Option<String>,
    /// `true`: sets `pass_heartbeats` (false leaves the file's value).
    pub pass_heartbeats: bool,
    pub status_socket: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
}

/// The file as written; turned into [`Config`] by [`Config::parse`].
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    interfaces: Vec<String>,
    port: u16,
    max_nodes: u32,
    pass_heartbeats: bool,
    datapath: DatapathKind,
    xdp_mode: XdpMode,
    instance: String,
    status_socket: PathBuf,
    state_file: PathBuf,
    max_concurrent_actions: usize,
    defaults: Defaults,
    nodes: Vec<NodeConfig>,
    node_ranges: Vec<NodeRange>,
    event_log: Option<PathBuf>,
    auth: AuthConfig,
    detector: DetectorConfig,
    brake: BrakeConfig,
    actions: Vec<RawAction>,
    http: RawHttp,
    group: Option<super::group::GroupConfig>,
    probe: crate::probe::spec::ProbeConfig,
}

impl Default for RawConfig {
    fn default() -> Self {
        let c = Config::default();
        Self {
            interfaces: c.interfaces,
            port: c.port,
            max_nodes: c.max_nodes,
            pass_heartbeats: c.pass_heartbeats,
            datapath: c.datapath,
            xdp_mode: c.xdp_mode,
            instance: c.instance,
            status_socket: c.status_socket,
            state_file: c.state_file,
            max_concurrent_actions: c.max_concurrent_actions,
            defaults: c.defaults,
            nodes: c.nodes,
            node_ranges: c.node_ranges,
            event_log: c.event_log,
            auth: c.auth,
            detector: c.detector,
            brake: c.brake,
            actions: Vec::new(),
            http: RawHttp::default(),
            group: None,
            probe: c.probe,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    name: String,
    on: Vec<Event>,
    command: Option<Vec<String>>,
    shell: Option<String>,
    #[serde(default = "default_action_timeout", with = "humantime_serde")]
    timeout: Duration,
    /// Once per sweep with all its events on stdin; off unless asked for, so
    /// existing configs keep one run per event.
    #[serde(default)]
    batch: bool,
    /// What the action does: run a program (the default), post a webhook,
    /// or set server states in HAProxy.
    #[serde(default)]
    kind: RawActionKind,
    // `kind = "webhook"` (see `sinks::actions::webhook`).
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    authorization_file: Option<PathBuf>,
    retries: Option<u32>,
    // `kind = "haproxy"` (see `HaproxyFields`).
    socket: Option<String>,
    backend: Option<String>,
    servers: Option<BTreeMap<String, String>>,
    drain_on_suspect: Option<bool>,
}

/// `kind` of an `[[actions]]` entry.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawActionKind {
    /// `command` or `shell`.
    #[default]
    Exec,
    /// An HTTP POST (`url`, ...).
    Webhook,
    /// HAProxy's runtime API (`socket`, `backend`, ...).
    Haproxy,
}

fn default_action_timeout() -> Duration {
    DEFAULT_ACTION_TIMEOUT
}

impl RawAction {
    fn into_action(self) -> Result<ActionConfig, ConfigError> {
        let webhook = WebhookFields {
            url: self.url,
            headers: self.headers,
            authorization_file: self.authorization_file,
            retries: self.retries,
        };
        let haproxy = HaproxyFields {
            socket: self.socket,
            backend: self.backend,
            servers: self.servers,
            drain_on_suspect: self.drain_on_suspect,
        };
        let name = self.name.clone();
        let webhook_error = |problem| ConfigError::Webhook {
            action: name.clone(),
            problem,
        };
        let haproxy_error = |problem: String| ConfigError::HaproxyAction {
            action: name.clone(),
            problem,
        };
        let program =
            (self.command.as_ref().map(|_| "command")).or(self.shell.as_ref().map(|_| "shell"));
        let run = match self.kind {
            RawActionKind::Webhook => {
                if let Some(field) = program {
                    return Err(webhook_error(WebhookProblem::ProgramGiven { field }));
                }
                if let Some(field) = haproxy.first_given() {
                    return Err(haproxy_error(format!(
                        "`{field}` is only for kind = \"haproxy\" actions: remove it"
                    )));
                }
                ActionRun::Webhook(webhook.into_config().map_err(webhook_error)?)
            }
            RawActionKind::Haproxy => {
                if let Some(field) = program {
                    return Err(haproxy_error(format!(
                        "`{field}` is for kind = \"exec\" actions: remove it (a haproxy action sets server states through `socket` and `backend`)"
                    )));
                }
                webhook.refuse_for("haproxy").map_err(webhook_error)?;
                ActionRun::Haproxy(haproxy.into_action().map_err(haproxy_error)?)
            }
            RawActionKind::Exec => {
                webhook.refuse_for("exec").map_err(webhook_error)?;
                if let Some(field) = haproxy.first_given() {
                    return Err(haproxy_error(format!(
                        "`{field}` is only for kind = \"haproxy\" actions: add kind = \"haproxy\" or remove it"
                    )));
                }
                match (self.command, self.shell) {
                    (Some(argv), None) => ActionRun::Command(argv),
                    (None, Some(script)) => ActionRun::Shell(script),
                    (None, None) => {
                        return Err(ConfigError::ActionRunMissing { action: self.name });
                    }
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::ActionRunBoth { action: self.name });
                    }
                }
            }
        };
        Ok(ActionConfig {
            name: self.name,
            on: self.on,
            run,
            timeout: self.timeout,
            batch: self.batch,
        })
    }
}

impl Config {
    /// Reads and parses `path`, applies `overrides`, and validates the
    /// result. Does not check that the interfaces exist (see
    /// [`Config::check_interfaces_exist`]).
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        config.apply(overrides);
        config.settle_probe_intervals();
        config.validate()?;
        config.loaded_from = Some(path.to_owned());
        Ok(config)
    }

    /// Parses TOML text; `source_name` (usually the file path) prefixes
    /// syntax errors. Fills in defaults but does not validate values beyond
    /// what the format itself requires.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|cause| ConfigError::Parse {
            source_name: source_name.to_owned(),
            cause,
        })?;
        let actions = raw
            .actions
            .into_iter()
            .map(RawAction::into_action)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            interfaces: raw.interfaces,
            port: raw.port,
            max_nodes: raw.max_nodes,
            pass_heartbeats: raw.pass_heartbeats,
            datapath: raw.datapath,
            xdp_mode: raw.xdp_mode,
            instance: raw.instance,
            status_socket: raw.status_socket,
            state_file: raw.state_file,
            max_concurrent_actions: raw.max_concurrent_actions,
            defaults: raw.defaults,
            nodes: raw.nodes,
            node_ranges: raw.node_ranges,
            event_log: raw.event_log,
            auth: raw.auth,
            detector: raw.detector,
            brake: raw.brake,
            actions,
            http: raw.http.into_config()?,
            group: raw.group,
            probe: raw.probe,
            loaded_from: None,
        })
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, overrides: &Overrides) {
        if !overrides.interfaces.is_empty() {
            self.interfaces.clone_from(&overrides.interfaces);
        }
        if let Some(port) = overrides.port {
            self.port = port;
        }
        if let Some(interval) = overrides.interval {
            self.defaults.interval = interval;
        }
        if let Some(multiplier) = overrides.timeout_multiplier {
            self.defaults.timeout_multiplier = multiplier;
        }
        if let Some(sweep_period) = overrides.sweep_period {
            self.defaults.sweep_period = sweep_period;
        }
        if let Some(max_nodes) = overrides.max_nodes {
            self.max_nodes = max_nodes;
        }
        if let Some(datapath) = overrides.datapath {
            self.datapath = datapath;
        }
        if let Some(xdp_mode) = overrides.xdp_mode {
            self.xdp_mode = xdp_mode;
        }
        if let Some(instance) = &overrides.instance {
            self.instance.clone_from(instance);
        }
        if overrides.pass_heartbeats {
            self.pass_heartbeats = true;
        }
        if let Some(status_socket) = &overrides.status_socket {
            self.status_socket.clone_from(status_socket);
        }
        if let Some(state_file) = &overrides.state_file {
            self.state_file = state_file.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn defaults_are_applied() {
        let config = parse(BASE);
        config.validate().expect("minimal config validates");
        assert_eq!(config.interfaces, ["eth0"]);
        assert_eq!(config.port, 7979);
        assert_eq!(config.port, hb_common::wire::DEFAULT_PORT);
        assert_eq!(config.max_nodes, 65_536);
        assert!(!config.pass_heartbeats);
        assert_eq!(config.xdp_mode, XdpMode::Auto);
        assert_eq!(config.status_socket, Path::new("/run/hb/hb.sock"));
        assert_eq!(config.state_file, Path::new("/var/lib/hb/state"));
        assert_eq!(config.max_concurrent_actions, 16);
        assert_eq!(config.defaults.interval, Duration::from_secs(2));
        assert_eq!(config.defaults.timeout_multiplier, 3);
        assert_eq!(config.defaults.sweep_period, Duration::from_millis(100));
        assert!(config.nodes.is_empty(), "no nodes is allowed");
        assert!(config.actions.is_empty());
    }

    #[test]
    fn partial_defaults_table_keeps_other_defaults() {
        let config = parse(&format!("{BASE}[defaults]\ninterval = \"500ms\"\n"));
        assert_eq!(config.defaults.interval, Duration::from_millis(500));
        assert_eq!(config.defaults.timeout_multiplier, 3);
        assert_eq!(config.defaults.sweep_period, Duration::from_millis(100));
    }

    #[test]
    fn full_config_parses() {
        let config = parse(
            r#"
            interfaces = ["eth0", "eth1"]
            port = 9000
            max_nodes = 128
            pass_heartbeats = true
            xdp_mode = "generic"
            status_socket = "/tmp/hb.sock"
            state_file = "/tmp/hb-state"
            max_concurrent_actions = 4

            [defaults]
            interval = "1s"
            timeout_multiplier = 5
            sweep_period = "50ms"

            [[nodes]]
            id = 7
            name = "db"
            address = "2001:db8::1"

            [[nodes]]
            id = 8
            name = "web"
            address = "198.18.1.2"
            interval = "250ms"

            [[actions]]
            name = "a"
            on = ["down", "left"]
            command = ["/bin/true", "x"]

            [[actions]]
            name = "b"
            on = ["up"]
            shell = "echo hi"
            timeout = "3s"
            batch = true
            "#,
        );
        config.validate().expect("valid");
        assert_eq!(config.interfaces, ["eth0", "eth1"]);
        assert_eq!(config.port, 9000);
        assert_eq!(config.max_nodes, 128);
        assert!(config.pass_heartbeats);
        assert_eq!(config.xdp_mode, XdpMode::Generic);
        assert_eq!(config.status_socket, Path::new("/tmp/hb.sock"));
        assert_eq!(config.state_file, Path::new("/tmp/hb-state"));
        assert_eq!(config.max_concurrent_actions, 4);
        assert_eq!(config.defaults.interval, Duration::from_secs(1));
        assert_eq!(config.defaults.timeout_multiplier, 5);
        assert_eq!(config.defaults.sweep_period, Duration::from_millis(50));
        assert_eq!(
            config.nodes[0],
            NodeConfig {
                id: 7,
                name: "db".into(),
                address: Some("2001:db8::1".parse().expect("ipv6")),
                interval: None,
                source: None,
                ..NodeConfig::default()
            }
        );
        assert_eq!(
            config.nodes[1],
            NodeConfig {
                id: 8,
                name: "web".into(),
                address: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2))),
                interval: Some(Duration::from_millis(250)),
                source: None,
                ..NodeConfig::default()
            }
        );
        assert_eq!(
            config.actions[0],
            ActionConfig {
                name: "a".into(),
                on: vec![Event::Down, Event::Left],
                run: ActionRun::Command(vec!["/bin/true".into(), "x".into()]),
                timeout: Duration::from_secs(10),
                batch: false,
            }
        );
        assert_eq!(
            config.actions[1],
            ActionConfig {
                name: "b".into(),
                on: vec![Event::Up],
                run: ActionRun::Shell("echo hi".into()),
                timeout: Duration::from_secs(3),
                batch: true,
            }
        );
    }

    #[test]
    fn example_parses_and_validates() {
        let config = parse(Config::example());
        config
            .validate()
            .unwrap_or_else(|e| panic!("example invalid: {e}"));
        assert_eq!(config.nodes.len(), 4);
        assert_eq!(
            config.nodes[2].probe,
            Some(crate::probe::spec::ProbeKind::Icmp)
        );
        assert_eq!(config.actions.len(), 3);
        assert_eq!(config.state_file, Path::new("/var/lib/hb/state"));
        assert!(matches!(config.actions[0].run, ActionRun::Command(_)));
        assert!(matches!(config.actions[1].run, ActionRun::Shell(_)));
        let batch: Vec<bool> = config.actions.iter().map(|a| a.batch).collect();
        assert_eq!(batch, [false, false, true]);
        assert_eq!(config.http, crate::config::HttpConfig::default());
    }

    #[test]
    fn unknown_field_names_field_and_file() {
        let err = parse_err(&format!("{BASE}prot = 1\n"));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert_mentions(&err, &["test.toml:2:1:", "prot"]);
        assert!(!err.to_string().ends_with('\n'), "{err:?}");

        let err = parse_err(&format!("{BASE}[defaults]\nintervall = \"1s\"\n"));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert_mentions(&err, &["intervall"]);

        let err = parse_err(&format!(
            "{BASE}[[nodes]]\nid = 1\nname = \"a\"\nadress = \"10.0.0.1\"\n"
        ));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert_mentions(&err, &["adress"]);

        let err = parse_err(&format!(
            "{BASE}[[actions]]\nname = \"a\"\non = [\"up\"]\nshell = \"x\"\ntimout = \"1s\"\n"
        ));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert_mentions(&err, &["timout"]);
    }

    #[test]
    fn bad_toml_and_bad_values_are_parse_errors() {
        for (text, needle) in [
            ("interfaces = [\"eth0\"\n", "test.toml:1:22:"),
            (
                "interfaces = [\"eth0\"]\n[defaults]\ninterval = \"2 parsecs\"\n",
                "interval",
            ),
            (
                "interfaces = [\"eth0\"]\n[defaults]\ninterval = 2\n",
                "interval",
            ),
            ("interfaces = [\"eth0\"]\nxdp_mode = \"skb\"\n", "xdp_mode"),
            ("interfaces = [\"eth0\"]\nport = 70000\n", "port"),
            (
                "interfaces = [\"eth0\"]\n[[nodes]]\nid = 1\nname = \"a\"\naddress = \"nope\"\n",
                "address",
            ),
            (
                "interfaces = [\"eth0\"]\n[[actions]]\nname = \"a\"\non = [\"sideways\"]\nshell = \"x\"\n",
                "sideways",
            ),
            ("interfaces = [\"eth0\"]\n[[nodes]]\nid = 1\n", "name"),
            (
                "interfaces = [\"eth0\"]\n[[actions]]\nname = \"a\"\non = [\"up\"]\nshell = \"x\"\nbatch = \"yes\"\n",
                "batch = \"yes\"",
            ),
        ] {
            let err = parse_err(text);
            assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
            assert_mentions(&err, &["test.toml", needle]);
        }
    }

    #[test]
    fn action_needs_exactly_one_of_command_and_shell() {
        let err = parse_err(&format!("{BASE}{}", action("a", "on = [\"up\"]\n")));
        assert!(
            matches!(err, ConfigError::ActionRunMissing { .. }),
            "{err:?}"
        );
        assert_mentions(&err, &["`command`", "`shell`", "`a`"]);
        let err = parse_err(&format!(
            "{BASE}{}",
            action(
                "b",
                "on = [\"up\"]\ncommand = [\"/bin/true\"]\nshell = \"true\"\n"
            )
        ));
        assert!(matches!(err, ConfigError::ActionRunBoth { .. }), "{err:?}");
        assert_mentions(&err, &["`command`", "`shell`", "`b`"]);
    }

    #[test]
    fn overrides_win_over_the_file() {
        let dir = TempDir::new("overrides");
        let path = dir.0.join("hb.toml");
        std::fs::write(
            &path,
            r#"
            interfaces = ["eth0"]
            port = 1000
            max_nodes = 100
            xdp_mode = "native"
            instance = "from-file"
            status_socket = "/file.sock"
            state_file = "/file.json"
            [defaults]
            interval = "1s"
            timeout_multiplier = 4
            sweep_period = "200ms"
            "#,
        )
        .expect("write config");

        let unchanged = Config::load(&path, &Overrides::default()).expect("loads");
        assert_eq!(unchanged.interfaces, ["eth0"]);
        assert_eq!(unchanged.port, 1000);
        assert!(!unchanged.pass_heartbeats);
        assert_eq!(unchanged.instance, "from-file");

        let overrides = Overrides {
            interfaces: vec!["veth1".into(), "veth2".into()],
            port: Some(2000),
            interval: Some(Duration::from_millis(500)),
            timeout_multiplier: Some(6),
            sweep_period: Some(Duration::from_millis(20)),
            max_nodes: Some(300),
            datapath: Some(DatapathKind::Socket),
            xdp_mode: Some(XdpMode::Generic),
            instance: Some("from-cli".into()),
            pass_heartbeats: true,
            status_socket: Some("/cli.sock".into()),
            state_file: Some("/cli.json".into()),
        };
        let config = Config::load(&path, &overrides).expect("loads");
        assert_eq!(config.interfaces, ["veth1", "veth2"]);
        assert_eq!(config.port, 2000);
        assert_eq!(config.defaults.interval, Duration::from_millis(500));
        assert_eq!(config.defaults.timeout_multiplier, 6);
        assert_eq!(config.defaults.sweep_period, Duration::from_millis(20));
        assert_eq!(config.max_nodes, 300);
        assert_eq!(config.xdp_mode, XdpMode::Generic);
        assert_eq!(config.instance, "from-cli");
        assert!(config.pass_heartbeats);
        assert_eq!(config.status_socket, Path::new("/cli.sock"));
        assert_eq!(config.datapath, DatapathKind::Socket);
        assert_eq!(config.state_file, Path::new("/cli.json"));

        // Overrides are validated too.
        let bad = Overrides {
            timeout_multiplier: Some(1),
            ..Overrides::default()
        };
        let err = Config::load(&path, &bad).expect_err("multiplier 1 is invalid");
        assert!(
            matches!(err, ConfigError::TimeoutMultiplierTooSmall { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn interface_override_fills_an_empty_file_list() {
        let dir = TempDir::new("ifoverride");
        let path = dir.0.join("hb.toml");
        std::fs::write(&path, "port = 7000\n").expect("write config");
        let err = Config::load(&path, &Overrides::default()).expect_err("no interfaces");
        assert!(matches!(err, ConfigError::NoInterfaces), "{err:?}");
        let overrides = Overrides {
            interfaces: vec!["lo".into()],
            ..Overrides::default()
        };
        let config = Config::load(&path, &overrides).expect("interface from the CLI");
        assert_eq!(config.interfaces, ["lo"]);
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = TempDir::new("loaderr");
        let missing = dir.0.join("missing.toml");
        let err = Config::load(&missing, &Overrides::default()).expect_err("missing file");
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert_mentions(&err, &["missing.toml"]);

        let bad = dir.0.join("bad.toml");
        std::fs::write(&bad, "interfaces = [\"eth0\"]\nbogus = true\n").expect("write");
        let err = Config::load(&bad, &Overrides::default()).expect_err("unknown field");
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert_mentions(&err, &["bad.toml", "bogus"]);
    }

    #[test]
    fn event_log_and_datapath_are_read() {
        let config = parse(&format!(
            "{BASE}event_log = \"/tmp/e.jsonl\"\ndatapath = \"socket\"\n"
        ));
        assert_eq!(config.event_log.as_deref(), Some(Path::new("/tmp/e.jsonl")));
        assert_eq!(config.datapath, DatapathKind::Socket);
        assert_eq!(parse(BASE).datapath, DatapathKind::Xdp);
        assert!(matches!(
            parse_err(&format!("{BASE}datapath = \"dpdk\"\n")),
            ConfigError::Parse { .. }
        ));
    }
}
