//! The `[http]` section: where the HTTP API and `/metrics` listen, the
//! bearer token that guards them, and the opt-in per-node series.
//!
//! The one rule that matters for safety: the API is never reachable from
//! the network without a token. Loopback needs none (whoever can connect is
//! already on the host); any other address, including the unspecified
//! `0.0.0.0` and `[::]`, requires `token_file`.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use serde::Deserialize;

use super::{Config, ConfigError, HttpConfig};

/// Largest `http.per_node_metrics` accepted: each node adds two series to
/// every scrape, and past this many a scrape is more than Prometheus should
/// be asked to ingest every few seconds.
pub const MAX_PER_NODE_METRICS: u32 = 100_000;

/// `[http]` as written. `listen` is a string so that `""` can mean off
/// and a bad address gets a message of ours, not serde's.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHttp {
    listen: String,
    token_file: Option<PathBuf>,
    per_node_metrics: u32,
}

impl Default for RawHttp {
    fn default() -> Self {
        let defaults = HttpConfig::default();
        Self {
            listen: defaults
                .listen
                .map(|listen| listen.to_string())
                .unwrap_or_default(),
            token_file: defaults.token_file,
            per_node_metrics: defaults.per_node_metrics,
        }
    }
}

impl RawHttp {
    /// Parses `listen`: `""` is off, anything else must be `IP:PORT`.
    pub(super) fn into_config(self) -> Result<HttpConfig, ConfigError> {
        let listen = match self.listen.as_str() {
            "" => None,
            text => Some(
                text.parse::<SocketAddr>()
                    .map_err(|_| ConfigError::HttpListen { value: self.listen })?,
            ),
        };
        Ok(HttpConfig {
            listen,
            token_file: self.token_file,
            per_node_metrics: self.per_node_metrics,
        })
    }
}

impl Config {
    /// Checks `[http]`: a real port, a token off loopback, a bounded number
    /// of per-node series.
    pub(super) fn validate_http(&self) -> Result<(), ConfigError> {
        let http = &self.http;
        if let Some(listen) = http.listen {
            if listen.port() == 0 {
                return Err(ConfigError::HttpListenPortZero { listen });
            }
            if !is_loopback(listen.ip()) && http.token_file.is_none() {
                return Err(ConfigError::HttpTokenRequired { listen });
            }
        }
        if http
            .token_file
            .as_ref()
            .is_some_and(|path| path.as_os_str().is_empty())
        {
            return Err(ConfigError::HttpTokenFileEmpty);
        }
        if http.per_node_metrics > MAX_PER_NODE_METRICS {
            return Err(ConfigError::PerNodeMetricsTooLarge {
                value: http.per_node_metrics,
            });
        }
        Ok(())
    }
}

/// Whether only this host can reach `ip`: 127.0.0.0/8 or `::1`. The
/// unspecified addresses (`0.0.0.0`, `::`) listen on every interface and so
/// are not loopback.
fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{DEFAULT_HTTP_LISTEN, test_support::*};

    fn http(body: &str) -> String {
        format!("{BASE}[http]\n{body}")
    }

    #[test]
    fn defaults_listen_on_loopback_without_a_token() {
        let config = parse(BASE);
        config.validate().expect("the default [http] validates");
        assert_eq!(config.http.listen, Some("127.0.0.1:7980".parse().unwrap()));
        assert_eq!(config.http.listen, Some(DEFAULT_HTTP_LISTEN));
        assert_eq!(config.http.token_file, None);
        assert_eq!(config.http.per_node_metrics, 0);
        // An [http] table that sets one key keeps the others' defaults.
        let config = parse(&http("per_node_metrics = 50\n"));
        assert_eq!(config.http.listen, Some(DEFAULT_HTTP_LISTEN));
        assert_eq!(config.http.per_node_metrics, 50);
    }

    #[test]
    fn empty_listen_turns_the_server_off() {
        let config = parse(&http("listen = \"\"\n"));
        assert_eq!(config.http.listen, None);
        config.validate().expect("no server needs no token");
    }

    #[test]
    fn all_fields_are_read() {
        let config = parse(&http(
            "listen = \"[::]:8080\"\ntoken_file = \"/etc/hb/http.token\"\nper_node_metrics = 1000\n",
        ));
        assert_eq!(
            config.http,
            HttpConfig {
                listen: Some("[::]:8080".parse().unwrap()),
                token_file: Some("/etc/hb/http.token".into()),
                per_node_metrics: 1000,
            }
        );
        config.validate().expect("a token makes [::] acceptable");
    }

    #[test]
    fn listen_must_be_ip_and_port() {
        for value in [
            "localhost:80",
            "7980",
            "1.2.3.4",
            " 127.0.0.1:7980",
            "[::1]",
            "::1:7980",
        ] {
            let err = parse_err(&http(&format!("listen = {value:?}\n")));
            assert!(
                matches!(&err, ConfigError::HttpListen { value: v } if v == value),
                "{value}: {err:?}"
            );
            assert_mentions(
                &err,
                &[
                    "`http.listen`",
                    "\"127.0.0.1:7980\"",
                    "\"[::1]:7980\"",
                    "\"\"",
                ],
            );
        }
    }

    #[test]
    fn listen_port_zero_is_refused() {
        for value in ["127.0.0.1:0", "[::1]:0"] {
            let err = validate_err(&http(&format!("listen = {value:?}\n")));
            assert!(
                matches!(err, ConfigError::HttpListenPortZero { .. }),
                "{err:?}"
            );
            assert_mentions(&err, &["`http.listen`", "port 0", "\"127.0.0.1:7980\""]);
        }
    }

    #[test]
    fn loopback_needs_no_token() {
        for value in [
            "127.0.0.1:7980",
            "127.0.0.2:1",
            "127.255.255.254:65535",
            "[::1]:7980",
        ] {
            parse(&http(&format!("listen = {value:?}\n")))
                .validate()
                .unwrap_or_else(|e| panic!("{value}: {e}"));
        }
    }

    #[test]
    fn the_network_needs_a_token() {
        for value in [
            "0.0.0.0:7980",
            "198.18.0.1:7980",
            "[::]:7980",
            "[2001:db8::1]:7980",
            "[::ffff:198.18.0.1]:7980",
            "128.0.0.1:7980",
        ] {
            let err = validate_err(&http(&format!("listen = {value:?}\n")));
            assert!(
                matches!(err, ConfigError::HttpTokenRequired { listen } if listen == value.parse().unwrap()),
                "{value}: {err:?}"
            );
            assert_mentions(
                &err,
                &[
                    "`http.listen`",
                    value,
                    "without authentication",
                    "http.token_file",
                    "head -c 32 /dev/urandom",
                    "chmod 600",
                    "127.0.0.1",
                ],
            );
            parse(&http(&format!(
                "listen = {value:?}\ntoken_file = \"/etc/hb/http.token\"\n"
            )))
            .validate()
            .unwrap_or_else(|e| panic!("{value} with a token: {e}"));
        }
    }

    #[test]
    fn token_file_must_not_be_empty() {
        let err = validate_err(&http("token_file = \"\"\n"));
        assert!(matches!(err, ConfigError::HttpTokenFileEmpty), "{err:?}");
        assert_mentions(&err, &["`http.token_file`", "/etc/hb/http.token"]);
        let config = parse(&http("token_file = \"/etc/hb/http.token\"\n"));
        config.validate().expect("a token on loopback is allowed");
        assert_eq!(
            config.http.token_file.as_deref(),
            Some(Path::new("/etc/hb/http.token"))
        );
    }

    #[test]
    fn per_node_metrics_is_bounded() {
        parse(&http(&format!(
            "per_node_metrics = {MAX_PER_NODE_METRICS}\n"
        )))
        .validate()
        .expect("the limit itself is allowed");
        let too_many = MAX_PER_NODE_METRICS + 1;
        let err = validate_err(&http(&format!("per_node_metrics = {too_many}\n")));
        assert!(
            matches!(err, ConfigError::PerNodeMetricsTooLarge { value } if value == too_many),
            "{err:?}"
        );
        assert_mentions(
            &err,
            &["`http.per_node_metrics`", "at most 100000", "Prometheus"],
        );
    }

    #[test]
    fn unknown_http_keys_and_wrong_types_are_parse_errors() {
        let err = parse_err(&http("port = 80\n"));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert_mentions(&err, &["port"]);
        let err = parse_err(&http("listen = 7980\n"));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        let err = parse_err(&http("per_node_metrics = -1\n"));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    }
}
