//! Per-test temporary directories ([`TempDir`]) and the agent configuration
//! the tests use ([`TestConfig`]): every node of the lab, and one action
//! appending `EVENT ID NAME PREVIOUS SINCE_MS` to `events.log` on every
//! state change (see [`crate::events`]). [`ConfigOptions`] adds
//! authentication (`[auth] keys`), source pinning and lab hosts that are
//! not nodes (an attacker's); by default none of them.

use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::{Error, HEARTBEAT_PORT, Lab, Result};

/// A directory removed (with its contents) on Drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh, uniquely named directory under the system temp dir:
    /// `<tmp>/<prefix>-<pid>-<counter>`.
    pub fn new(prefix: &str) -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        if path.exists() {
            // Left over by a killed process whose pid we now have.
            remove_dir(&path)?;
        }
        fs::create_dir(&path).map_err(|source| Error::Io {
            op: "creating directory",
            path: path.clone(),
            source,
        })?;
        Ok(Self { path })
    }

    /// The directory `path`, emptied first if it exists.
    pub fn at(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if path.exists() {
            remove_dir(&path)?;
        }
        fs::create_dir_all(&path).map_err(|source| Error::Io {
            op: "creating directory",
            path: path.clone(),
            source,
        })?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path/name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(err) = remove_dir(&self.path) {
            eprintln!("hb-tests: {err}");
        }
    }
}

fn remove_dir(path: &Path) -> Result<()> {
    fs::remove_dir_all(path).map_err(|source| Error::Io {
        op: "removing directory",
        path: path.to_owned(),
        source,
    })
}

/// Heartbeat timing of a test: how often nodes send, and when the agent
/// gives up on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Expected heartbeat interval (`[defaults] interval`, and `hb send
    /// --interval`).
    pub interval: Duration,
    /// `[defaults] timeout_multiplier`.
    pub timeout_multiplier: u32,
    /// `[defaults] sweep_period`.
    pub sweep_period: Duration,
}

impl Timing {
    /// Fast timing for tests: 200 ms interval, 3x, 50 ms sweep.
    pub const FAST: Self = Self {
        interval: Duration::from_millis(200),
        timeout_multiplier: 3,
        sweep_period: Duration::from_millis(50),
    };

    /// Silence after which a node is declared down.
    pub fn timeout(&self) -> Duration {
        self.interval * self.timeout_multiplier
    }
}

/// A duration in the humantime syntax the agent reads (`"200ms"`).
pub fn humantime(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// `value` as a TOML string literal, correctly escaped.
pub fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// `value` quoted for /bin/sh (single quotes).
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The name the test configuration gives node `index`.
pub fn node_name(index: u8) -> String {
    format!("node-{index}")
}

/// What a test configuration holds beyond the lab and the timing. The
/// default (no keys, nothing pinned, every lab node configured) is what
/// [`TestConfig::write`] writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigOptions {
    /// `[auth] keys`: key files written by `hb keygen` (see
    /// [`crate::TestKey`]). Empty: no `[auth]` section, so heartbeats are
    /// not authenticated; otherwise unauthenticated heartbeats are refused
    /// (the agent's default once a key is given).
    pub keys: Vec<PathBuf>,
    /// Lab nodes pinned to their lab address (`source = "198.18.i.2"`).
    pub pinned: Vec<u8>,
    /// Lab nodes left out of `[[nodes]]`: the monitor still listens on
    /// their link, but they are no cluster members (an attacker's host).
    pub unconfigured: Vec<u8>,
    /// The body of a `[detector]` section (TOML lines), if any.
    pub detector: Option<String>,
    /// The body of a `[brake]` section (TOML lines), if any.
    pub brake: Option<String>,
}

/// A node as the configuration lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConfigNode {
    index: u8,
    address: Ipv4Addr,
    pinned: bool,
}

/// A configuration file written for a lab, and the paths it names.
#[derive(Debug, Clone)]
pub struct TestConfig {
    /// The configuration file.
    pub path: PathBuf,
    /// Where the action appends one line per event.
    pub events: PathBuf,
    /// The agent's status socket.
    pub socket: PathBuf,
    /// The agent's state file (per test: the agent's default path would be
    /// shared by every agent on the machine).
    pub state: PathBuf,
    /// The timing written into the configuration.
    pub timing: Timing,
}

impl TestConfig {
    /// Write `hb.toml` into `dir` for `lab`: the lab's monitor interfaces,
    /// node i named `node-i` with address 198.18.i.2, `timing` as the
    /// defaults, and the recording action.
    pub fn write(dir: &TempDir, lab: &Lab, timing: Timing) -> Result<Self> {
        Self::write_with(dir, lab, timing, &ConfigOptions::default())
    }

    /// [`TestConfig::write`], with `options`: keys, pinned nodes, and lab
    /// nodes that are not configured.
    pub fn write_with(
        dir: &TempDir,
        lab: &Lab,
        timing: Timing,
        options: &ConfigOptions,
    ) -> Result<Self> {
        for &index in options.pinned.iter().chain(&options.unconfigured) {
            if !lab.nodes.iter().any(|node| node.index == index) {
                return Err(Error::Invalid {
                    what: "configuration option",
                    value: format!("node {index}"),
                    reason: format!("lab {} has no such node", lab.prefix()),
                });
            }
        }
        let config = Self {
            path: dir.join("hb.toml"),
            events: dir.join("events.log"),
            socket: dir.join("hb.sock"),
            state: dir.join("state"),
            timing,
        };
        let nodes: Vec<ConfigNode> = lab
            .nodes
            .iter()
            .filter(|node| !options.unconfigured.contains(&node.index))
            .map(|node| ConfigNode {
                index: node.index,
                address: node.address,
                pinned: options.pinned.contains(&node.index),
            })
            .collect();
        let text = config.render(
            lab.prefix(),
            &lab.monitor_interfaces(),
            &nodes,
            &options.keys,
            options.detector.as_deref(),
        );
        let text = match &options.brake {
            Some(brake) => insert_before_nodes(&text, &format!("[brake]\n{brake}\n")),
            None => text,
        };
        fs::write(&config.path, text).map_err(|source| Error::Io {
            op: "writing",
            path: config.path.clone(),
            source,
        })?;
        Ok(config)
    }

    fn render(
        &self,
        prefix: &str,
        interfaces: &[String],
        nodes: &[ConfigNode],
        keys: &[PathBuf],
        detector: Option<&str>,
    ) -> String {
        let interfaces: Vec<String> = interfaces.iter().map(|name| toml_string(name)).collect();
        let path = |p: &Path| toml_string(&p.to_string_lossy());
        let mut text = format!(
            "# Written by hb-tests for lab {prefix}.\n\
             interfaces = [{interfaces}]\n\
             port = {HEARTBEAT_PORT}\n\
             max_nodes = 16\n\
             pass_heartbeats = false\n\
             xdp_mode = \"auto\"\n\
             instance = {instance}\n\
             status_socket = {socket}\n\
             state_file = {state}\n\
             \n\
             [defaults]\n\
             interval = \"{interval}\"\n\
             timeout_multiplier = {multiplier}\n\
             sweep_period = \"{sweep}\"\n",
            interfaces = interfaces.join(", "),
            // The lab's own agent instance ([`Lab::instance`]), whose pins
            // the lab removes.
            instance = toml_string(prefix),
            socket = path(&self.socket),
            state = path(&self.state),
            interval = humantime(self.timing.interval),
            multiplier = self.timing.timeout_multiplier,
            sweep = humantime(self.timing.sweep_period),
        );
        if let Some(detector) = detector {
            let _ = write!(text, "\n[detector]\n{detector}\n");
        }
        if !keys.is_empty() {
            let keys: Vec<String> = keys.iter().map(|key| path(key)).collect();
            let _ = write!(text, "\n[auth]\nkeys = [{}]\n", keys.join(", "));
        }
        for node in nodes {
            let _ = write!(
                text,
                "\n[[nodes]]\nid = {}\nname = \"{}\"\naddress = \"{}\"\n",
                node.index,
                node_name(node.index),
                node.address,
            );
            if node.pinned {
                let _ = writeln!(text, "source = \"{}\"", node.address);
            }
        }
        let shell = format!(
            "echo \"$HB_EVENT $HB_NODE_ID $HB_NODE_NAME $HB_PREVIOUS_STATE \
             $HB_SINCE_LAST_HEARTBEAT_MS\" >> {}",
            shell_quote(&self.events.to_string_lossy())
        );
        let _ = write!(
            text,
            "\n[[actions]]\nname = \"record\"\non = [\"up\", \"down\", \"left\"]\n\
             shell = {}\ntimeout = \"5s\"\n",
            toml_string(&shell)
        );
        text
    }
}

/// `section` placed before the first `[[nodes]]` (tables after arrays of
/// tables would nest in them).
fn insert_before_nodes(text: &str, section: &str) -> String {
    match text.find("\n[[nodes]]") {
        Some(at) => format!("{}\n{section}{}", &text[..at], &text[at..]),
        None => format!("{text}\n{section}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        for value in [r#"a "b" \c"#, "it's \"x\"\n", "plain"] {
            let parsed: toml::Value =
                toml::from_str(&format!("x = {}", toml_string(value))).unwrap();
            assert_eq!(parsed["x"].as_str(), Some(value));
        }
        assert_eq!(shell_quote("/tmp/it's"), r"'/tmp/it'\''s'");
        assert_eq!(humantime(Duration::from_millis(1500)), "1500ms");
        assert_eq!(Timing::FAST.timeout(), Duration::from_millis(600));
    }

    fn node(index: u8, pinned: bool) -> ConfigNode {
        ConfigNode {
            index,
            address: Ipv4Addr::new(198, 18, index, 2),
            pinned,
        }
    }

    fn sample_config() -> TestConfig {
        TestConfig {
            path: "/tmp/x/hb.toml".into(),
            events: "/tmp/x y/events.log".into(),
            socket: "/tmp/x/hb.sock".into(),
            state: "/tmp/x/state".into(),
            timing: Timing::FAST,
        }
    }

    #[test]
    fn renders_keys_and_pinned_sources() {
        let text = sample_config().render(
            "hb1t0",
            &["hb1t0m1".to_owned(), "hb1t0m3".to_owned()],
            &[node(1, true), node(3, false)],
            &[PathBuf::from("/tmp/x/it's.key")],
            Some("kind = \"phi\""),
        );
        let value: toml::Value = toml::from_str(&text).expect(&text);
        let keys = value["auth"]["keys"].as_array().expect(&text);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].as_str(), Some("/tmp/x/it's.key"));
        assert!(value["auth"].get("accept_unauthenticated").is_none());
        let nodes = value["nodes"].as_array().expect(&text);
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0]["source"].as_str(), Some("198.18.1.2"));
        assert_eq!(nodes[1]["id"].as_integer(), Some(3));
        assert!(nodes[1].get("source").is_none(), "{text}");
        assert_eq!(value["actions"][0]["name"].as_str(), Some("record"));
        assert_eq!(value["detector"]["kind"].as_str(), Some("phi"));
    }

    #[test]
    fn renders_the_contract_format() {
        let text = sample_config().render(
            "hb1t0",
            &["hb1t0m1".to_owned(), "hb1t0m2".to_owned()],
            &[node(1, false), node(2, false)],
            &[],
            None,
        );
        let value: toml::Value = toml::from_str(&text).expect(&text);
        assert!(value.get("auth").is_none(), "{text}");
        assert!(value.get("detector").is_none(), "{text}");
        assert!(value["nodes"][0].get("source").is_none(), "{text}");
        assert_eq!(value["interfaces"][1].as_str(), Some("hb1t0m2"));
        assert_eq!(value["port"].as_integer(), Some(7979));
        assert_eq!(value["instance"].as_str(), Some("hb1t0"));
        assert_eq!(value["status_socket"].as_str(), Some("/tmp/x/hb.sock"));
        assert_eq!(value["state_file"].as_str(), Some("/tmp/x/state"));
        assert_eq!(value["defaults"]["interval"].as_str(), Some("200ms"));
        assert_eq!(
            value["defaults"]["timeout_multiplier"].as_integer(),
            Some(3)
        );
        assert_eq!(value["defaults"]["sweep_period"].as_str(), Some("50ms"));
        assert_eq!(value["nodes"][1]["id"].as_integer(), Some(2));
        assert_eq!(value["nodes"][1]["name"].as_str(), Some("node-2"));
        assert_eq!(value["nodes"][1]["address"].as_str(), Some("198.18.2.2"));
        let action = &value["actions"][0];
        assert_eq!(action["on"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            action["shell"].as_str(),
            Some(
                "echo \"$HB_EVENT $HB_NODE_ID $HB_NODE_NAME $HB_PREVIOUS_STATE \
                 $HB_SINCE_LAST_HEARTBEAT_MS\" >> '/tmp/x y/events.log'"
            )
        );
    }

    #[test]
    fn temp_dir_is_removed_on_drop() {
        let dir = TempDir::new("hb-tests-unit").unwrap();
        let path = dir.path().to_owned();
        fs::write(dir.join("file"), "x").unwrap();
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists(), "{} still exists", path.display());
    }
}
