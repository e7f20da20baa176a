//! `kind = "webhook"` actions: an HTTP POST of the event (or, batched, of
//! the sweep's events as a JSON array) to a URL, with the configured
//! headers and an `Authorization` header read from a root-owned file, each
//! attempt bounded by the action's `timeout`, failed attempts retried with
//! exponential backoff up to `retries` times.
//!
//! The client is hyper's (already here for the HTTP API) with rustls on
//! `ring` (no OpenSSL) trusting the system's CA store, read once through
//! `rustls-native-certs`, so an operator's private CA installed with
//! `update-ca-certificates` works. Connections are not kept between runs:
//! runs are rare, and a pooled connection would outlive the runtime that
//! drove it.
//!
//! A run is one more kind of run in the runner's lanes: the per-node order,
//! coalescing, the concurrency bound and the counting are the exec
//! actions'. The logs name the URL's scheme, host and port only (a path
//! may carry a secret, as many chat hooks' do) and never the
//! `Authorization` value.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Request, StatusCode,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT},
};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tracing::Instrument;

pub use self::config::{
    DEFAULT_RETRIES, MAX_RETRIES, WebhookConfig, WebhookFields, WebhookProblem,
};
use super::{
    ActionConfig, ActionEvent,
    process::{Input, Outcome},
};
use crate::keys::{KeyError, SecretKind, read_secret_file};

mod config;

/// The wait before the first retry; each further retry waits twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Why an `authorization_file` cannot be used. Never holds its value.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizationError {
    #[error(transparent)]
    File(#[from] KeyError),
    #[error(
        "webhook authorization file {}: {problem}: it must hold only the Authorization header's value, e.g. `Bearer <token>`",
        path.display()
    )]
    Value {
        path: PathBuf,
        problem: &'static str,
    },
}

/// Reads a webhook's `authorization_file`: the checks of a key file (a
/// regular file owned by root, no permission bits for group or others),
/// then its text, surrounding whitespace trimmed, as a header value marked
/// sensitive (hyper never shows it).
pub fn read_authorization(path: &Path) -> Result<HeaderValue, AuthorizationError> {
    let bytes = read_secret_file(SecretKind::WebhookAuthorization, path)?;
    let problem = |problem| AuthorizationError::Value {
        path: path.to_owned(),
        problem,
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| problem("it is not UTF-8 text"))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(problem("it is empty"));
    }
    if !text
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return Err(problem(
            "it has a character a header cannot carry (only visible ASCII, spaces and tabs)",
        ));
    }
    let mut value =
        HeaderValue::from_str(text).map_err(|_| problem("it is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Reads every webhook action's `authorization_file`, so that a missing or
/// open file is refused at start, by `--check-config` and by a reload, and
/// not only at the first run (which reads it again: a replaced file takes
/// effect from the next run on).
pub fn check_authorization_files(actions: &[ActionConfig]) -> Result<(), AuthorizationError> {
    for action in actions {
        if let super::ActionRun::Webhook(hook) = &action.run
            && let Some(path) = &hook.authorization_file
        {
            read_authorization(path)?;
        }
    }
    Ok(())
}

/// Delivers one run of the webhook action `action` (whose `run` is
/// `hook`), logging every attempt inside the action's span.
pub(super) async fn run_webhook(
    action: &ActionConfig,
    hook: &WebhookConfig,
    input: Input<'_>,
) -> Outcome {
    let (span, body) = match input {
        Input::Event(event) => (
            tracing::info_span!(
                "action",
                action = %action.name,
                event = %event.event,
                node = %event.node_name,
                node_id = event.node_id,
            ),
            serde_json::to_vec(event),
        ),
        Input::Batch(events) => {
            let events: Vec<&ActionEvent> = events.iter().map(Arc::as_ref).collect();
            (
                tracing::info_span!("action", action = %action.name, events = events.len()),
                serde_json::to_vec(&events),
            )
        }
    };
    async {
        let Ok(body) = body else {
            tracing::error!("cannot encode the event as JSON");
            return Outcome::Failed;
        };
        let authorization = match hook.authorization_file.as_deref().map(read_authorization) {
            None => None,
            Some(Ok(value)) => Some(value),
            Some(Err(e)) => {
                tracing::error!("not sent: {e}");
                return Outcome::Failed;
            }
        };
        let request = Post {
            hook,
            authorization,
            body: Bytes::from(body),
        };
        deliver(&request, action.timeout).await
    }
    .instrument(span)
    .await
}

/// One run's request, sent once per attempt.
struct Post<'a> {
    hook: &'a WebhookConfig,
    authorization: Option<HeaderValue>,
    body: Bytes,
}

/// How one attempt failed.
enum Failure {
    Status(StatusCode),
    Error(String),
    TimedOut,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(status) => write!(f, "answered HTTP {status}"),
            Failure::Error(e) => f.write_str(e),
            Failure::TimedOut => f.write_str("no answer within the timeout"),
        }
    }
}

/// Posts until an attempt gets a 2xx answer or `retries` retries have
/// failed; each attempt (connecting, sending, the answer's status line) is
/// bounded by `timeout`. The run has timed out if its last attempt did.
async fn deliver(post: &Post<'_>, timeout: Duration) -> Outcome {
    let target = post.hook.target();
    let attempts = post.hook.retries.saturating_add(1);
    let started = Instant::now();
    for attempt in 1..=attempts {
        let failure = match tokio::time::timeout(timeout, send(post)).await {
            Ok(Ok(status)) if status.is_success() => {
                let elapsed_ms = elapsed_ms(started);
                tracing::info!(elapsed_ms, attempt, "POST {target}: HTTP {status}");
                return Outcome::Succeeded;
            }
            Ok(Ok(status)) => Failure::Status(status),
            Ok(Err(e)) => Failure::Error(e),
            Err(_elapsed) => Failure::TimedOut,
        };
        if attempt == attempts {
            let elapsed_ms = elapsed_ms(started);
            tracing::warn!(
                elapsed_ms,
                attempt,
                "POST {target}: failed: {failure} (attempt {attempt} of {attempts}, timeout {} each)",
                humantime::format_duration(timeout),
            );
            return match failure {
                Failure::TimedOut => Outcome::TimedOut,
                Failure::Status(_) | Failure::Error(_) => Outcome::Failed,
            };
        }
        let wait = backoff(attempt);
        tracing::warn!(
            attempt,
            "POST {target}: {failure} (attempt {attempt} of {attempts}): retrying in {}",
            humantime::format_duration(wait),
        );
        tokio::time::sleep(wait).await;
    }
    // `attempts` is at least 1, so the loop returned.
    Outcome::Failed
}

/// The wait after failed attempt number `attempt` (from 1): 0.5 s, 1 s,
/// 2 s, ... at most [`MAX_BACKOFF`].
fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One attempt: the answer's status, or why there is none (the error and
/// its causes, which never include a header's value).
async fn send(post: &Post<'_>) -> Result<StatusCode, String> {
    let mut request = Request::post(post.hook.url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("hb/", env!("CARGO_PKG_VERSION")));
    for (name, value) in &post.hook.headers {
        request = request.header(name, value);
    }
    if let Some(authorization) = &post.authorization {
        request = request.header(AUTHORIZATION, authorization);
    }
    let request = request
        .body(Full::new(post.body.clone()))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    // The answer's body is not read: the connection is closed with it.
    let response = client()
        .request(request)
        .await
        .map_err(|e| error_chain(&e))?;
    Ok(response.status())
}

/// `e: cause: cause ...`: hyper's own message alone ("client error
/// (Connect)") does not say what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The process's client, built at the first run: reading the system's CA
/// store takes a few milliseconds, once.
fn client() -> &'static HttpsClient {
    static CLIENT: OnceLock<HttpsClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config())
            .https_or_http()
            .enable_http1()
            .build();
        Client::builder(TokioExecutor::new())
            // No connection outlives its run (see the module's doc).
            .pool_max_idle_per_host(0)
            .build(connector)
    })
}

/// TLS 1.2 and 1.3 with `ring`, trusting the system's CA store (on Debian
/// /etc/ssl/certs, from the `ca-certificates` package). Problems reading
/// it are logged; with no CA at all, https URLs fail and say so at each
/// attempt, http ones still work.
pub(crate) fn tls_config() -> rustls::ClientConfig {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!("webhooks: reading the system's CA certificates: {e}");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            "webhooks: no CA certificate in the system's store (install the ca-certificates package): https URLs will fail"
        );
    }
    tracing::debug!(added, ignored, "webhooks: system CA certificates loaded");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring provides cipher suites for TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let waits: Vec<u64> = (1..=8)
            .map(|attempt| u64::try_from(backoff(attempt).as_millis()).unwrap())
            .collect();
        assert_eq!(
            waits,
            [500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000, 10_000]
        );
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn the_client_trusts_the_system_store() {
        // Debian's ca-certificates is on every machine this runs on; an
        // empty store would make every https webhook fail.
        let found = rustls_native_certs::load_native_certs();
        assert!(
            !found.certs.is_empty(),
            "no system CA certificates: {:?}",
            found.errors
        );
        let _ = tls_config();
    }
}
