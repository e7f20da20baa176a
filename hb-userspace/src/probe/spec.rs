//! What the operator writes about a node's probe: the kind (`probe =
//! "icmp" | "tcp:PORT" | "http(s)://..."`), the accepted HTTP statuses
//! (`probe_status`), and the settings every probe kind shares, as read from
//! `[[nodes]]` and `[[node_ranges]]`; and the `[probe]` section.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::Deserialize;

/// The placeholder an HTTP probe's URL may use for the node's address.
pub const ADDRESS_PLACEHOLDER: &str = "{address}";

/// Longest default `probe_timeout`.
pub const MAX_DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a node is probed (`probe = ...`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ProbeKind {
    /// An ICMP / ICMPv6 echo request; the reply is recorded by the XDP
    /// program.
    Icmp,
    /// A TCP connect to the node's address and this port.
    Tcp { port: u16 },
    /// An HTTP(S) GET; the connection goes to the node's address, the URL's
    /// host (after `{address}` is replaced) is the `Host` header and the
    /// name the TLS certificate must carry.
    Http(HttpUrl),
}

/// An HTTP probe's URL as written, checked at parse time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    pub template: String,
    pub https: bool,
}

/// The `probe` value's short name: `icmp`, `tcp` or `http` (https included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KindName {
    Icmp,
    Tcp,
    Http,
}

impl KindName {
    pub const ALL: [KindName; 3] = [KindName::Icmp, KindName::Tcp, KindName::Http];

    pub const fn as_str(self) -> &'static str {
        match self {
            KindName::Icmp => "icmp",
            KindName::Tcp => "tcp",
            KindName::Http => "http",
        }
    }
}

impl fmt::Display for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const PROBE_HELP: &str = "write probe = \"icmp\", \"tcp:PORT\" (e.g. \"tcp:22\"), or an http:// or https:// URL (e.g. \"http://{address}:8080/healthz\")";

impl TryFrom<String> for ProbeKind {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed == "icmp" {
            return Ok(ProbeKind::Icmp);
        }
        if let Some(port) = trimmed.strip_prefix("tcp:") {
            return match port.parse::<u16>() {
                Ok(port) if port != 0 => Ok(ProbeKind::Tcp { port }),
                _ => Err(format!(
                    "probe `{text}`: `{port}` is not a TCP port (1-65535); {PROBE_HELP}"
                )),
            };
        }
        let https = if trimmed.starts_with("https://") {
            true
        } else if trimmed.starts_with("http://") {
            false
        } else {
            return Err(format!("probe `{text}` is not a probe kind; {PROBE_HELP}"));
        };
        let url = HttpUrl {
            template: trimmed.to_owned(),
            https,
        };
        // The URL must make sense for any address.
        url.target("198.18.0.1".parse().expect("an address"))
            .map_err(|problem| format!("probe `{text}`: {problem}"))?;
        url.target("fd00::1".parse().expect("an address"))
            .map_err(|problem| format!("probe `{text}`: {problem}"))?;
        Ok(ProbeKind::Http(url))
    }
}

impl ProbeKind {
    pub fn name(&self) -> KindName {
        match self {
            ProbeKind::Icmp => KindName::Icmp,
            ProbeKind::Tcp { .. } => KindName::Tcp,
            ProbeKind::Http(_) => KindName::Http,
        }
    }

    /// What the probe of a node at `address` goes to, as shown: the
    /// address, `address:port`, or the URL.
    pub fn target_text(&self, address: IpAddr) -> String {
        match self {
            ProbeKind::Icmp => address.to_string(),
            ProbeKind::Tcp { port } => SocketAddr::new(address, *port).to_string(),
            ProbeKind::Http(url) => url.with_address(address),
        }
    }
}

/// Where an HTTP probe connects and what it asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTarget {
    /// The node's address and the URL's port.
    pub connect: SocketAddr,
    /// The `Host` header (with the port if the URL has one).
    pub host_header: String,
    /// The host the certificate is checked against (https).
    pub host: String,
    /// Path and query.
    pub path: String,
    pub https: bool,
}

impl HttpUrl {
    /// The URL with `{address}` replaced by `address` (IPv6 in brackets).
    pub fn with_address(&self, address: IpAddr) -> String {
        let text = match address {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        self.template.replace(ADDRESS_PLACEHOLDER, &text)
    }

    /// The target of this URL's probe of a node at `address`.
    pub fn target(&self, address: IpAddr) -> Result<HttpTarget, String> {
        let url = self.with_address(address);
        let uri: hyper::Uri = url.parse().map_err(|e| {
            format!("not a URL ({e}): write e.g. \"http://{{address}}:8080/healthz\"")
        })?;
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host: write e.g. \"http://{address}/healthz\"")?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err("the URL carries user information: remove it".to_owned());
        }
        let port = uri.port_u16().unwrap_or(if self.https { 443 } else { 80 });
        if port == 0 {
            return Err("the URL's port is 0".to_owned());
        }
        Ok(HttpTarget {
            connect: SocketAddr::new(address, port),
            host_header: uri.authority().expect("a host").as_str().to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            path: uri
                .path_and_query()
                .map_or("/".to_owned(), |p| p.as_str().to_owned()),
            https: self.https,
        })
    }
}

/// The HTTP statuses an HTTP probe accepts (`probe_status = "200-399"` or
/// `"204"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl Default for StatusRange {
    fn default() -> Self {
        StatusRange {
            low: 200,
            high: 399,
        }
    }
}

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

impl TryFrom<String> for StatusRange {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let code = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
        };
        let (low, high) = match text.split_once('-') {
            Some((low, high)) => (code(low), code(high)),
            None => (code(&text), code(&text)),
        };
        match (low, high) {
            (Some(low), Some(high)) if low <= high => Ok(StatusRange { low, high }),
            _ => Err(format!(
                "probe_status `{text}`: write one status code or a range of them between 100 and 599, e.g. \"200-399\" or \"204\""
            )),
        }
    }
}

/// The probe fields of a `[[nodes]]` or `[[node_ranges]]` entry, as
/// written (checked by validation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeFields {
    pub probe: Option<ProbeKind>,
    pub timeout: Option<Duration>,
    pub status: Option<StatusRange>,
    pub body: Option<String>,
    pub confirm: bool,
}

/// How one node (or every node of a range) is probed, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePlan {
    pub kind: ProbeKind,
    /// Time between two probes of the node.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    pub status: StatusRange,
    pub body: Option<String>,
    pub confirm: bool,
}

impl ProbeFields {
    /// The plan of a node probed every `interval`, if it is probed.
    pub fn plan(&self, interval: Duration) -> Option<ProbePlan> {
        let kind = self.probe.clone()?;
        Some(ProbePlan {
            kind,
            interval,
            timeout: self.timeout.unwrap_or(default_timeout(interval)),
            status: self.status.unwrap_or_default(),
            body: self.body.clone(),
            confirm: self.confirm,
        })
    }
}

/// The default `probe_timeout`: half the interval, at most
/// [`MAX_DEFAULT_PROBE_TIMEOUT`].
pub fn default_timeout(interval: Duration) -> Duration {
    (interval / 2).min(MAX_DEFAULT_PROBE_TIMEOUT)
}

/// Default `probe.max_rate`.
pub const DEFAULT_MAX_RATE: u32 = 200_000;
/// Default `probe.max_concurrent`.
pub const DEFAULT_MAX_CONCURRENT: usize = 256;

/// Settings shared by every probe (`[probe]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// Most probes per second in all (retries included). A configuration
    /// whose probed nodes need more is refused; the sender never exceeds it.
    pub max_rate: u32,
    /// Most TCP and HTTP probes in flight at once.
    pub max_concurrent: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            max_rate: DEFAULT_MAX_RATE,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Result<ProbeKind, String> {
        ProbeKind::try_from(text.to_owned())
    }

    #[test]
    fn probe_kinds_parse_and_mistakes_say_what_to_write() {
        assert_eq!(kind("icmp"), Ok(ProbeKind::Icmp));
        assert_eq!(kind("tcp:22"), Ok(ProbeKind::Tcp { port: 22 }));
        for bad in ["tcp:0", "tcp:70000", "tcp:", "ping", "", "ftp://x/"] {
            let error = kind(bad).expect_err(bad);
            assert!(error.contains("probe = \"icmp\""), "{bad}: {error}");
        }
        let ProbeKind::Http(url) = kind("http://{address}:8080/healthz?full=1").unwrap() else {
            panic!("not http");
        };
        let v6 = url.target("fd00::7".parse().unwrap()).unwrap();
        assert_eq!(v6.connect, "[fd00::7]:8080".parse().unwrap());
        assert_eq!(v6.host_header, "[fd00::7]:8080");
        assert_eq!(v6.host, "fd00::7");
        assert_eq!(v6.path, "/healthz?full=1");
        let ProbeKind::Http(named) = kind("https://db.example/ready").unwrap() else {
            panic!("not http");
        };
        let target = named.target("198.18.0.9".parse().unwrap()).unwrap();
        assert_eq!(target.connect, "198.18.0.9:443".parse().unwrap());
        assert_eq!((target.host.as_str(), target.https), ("db.example", true));
        assert!(kind("http://u:p@{address}/").unwrap_err().contains("user"));
        assert!(kind("http:///x").is_err());
    }

    #[test]
    fn status_ranges() {
        let range = |t: &str| StatusRange::try_from(t.to_owned());
        assert_eq!(
            range("200-299"),
            Ok(StatusRange {
                low: 200,
                high: 299
            })
        );
        assert_eq!(range("204").unwrap().to_string(), "204");
        assert!(range("204").unwrap().contains(204));
        assert!(!range("200-299").unwrap().contains(301));
        for bad in ["299-200", "99", "600", "ok", "200-"] {
            assert!(range(bad).unwrap_err().contains("probe_status"), "{bad}");
        }
    }

    #[test]
    fn default_timeout_is_half_the_interval_capped() {
        assert_eq!(
            default_timeout(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(
            default_timeout(Duration::from_secs(60)),
            MAX_DEFAULT_PROBE_TIMEOUT
        );
    }
}
