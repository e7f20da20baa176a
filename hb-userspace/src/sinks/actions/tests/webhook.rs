//! Webhook actions against a real HTTP receiver on loopback: a tokio
//! listener speaking just enough HTTP/1.1, answering from a script and
//! recording every request with the time it came and was answered.

use std::{
    future::Future,
    io::Write,
    os::unix::fs::PermissionsExt,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{
    metrics::{action_runs, encode},
    order::node_event,
    *,
};
use crate::sinks::{actions::webhook::WebhookConfig, metrics::Metrics};

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// The status, after a pause.
    Slow(u16, Duration),
    /// Reads the request and never answers.
    Never,
}

/// One request as received.
#[derive(Clone, Debug)]
struct Received {
    request_line: String,
    /// Names lowercased.
    headers: HashMap<String, String>,
    body: Vec<u8>,
    answered_at: Option<Instant>,
    received_at: Instant,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: body {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// An HTTP receiver on 127.0.0.1: request `n` gets `answers[n]`, the last
/// answer repeating.
struct Receiver {
    url: String,
    requests: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(answers: &[Answer]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hb", listener.local_addr().expect("address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answers = answers.to_vec();
        let seen = Arc::clone(&requests);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, answers) = (Arc::clone(&seen), answers.clone());
                tokio::spawn(async move { serve(stream, &seen, &answers).await });
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> Vec<Received> {
        self.requests.lock().expect("requests").clone()
    }
}

/// Reads one request, records it, answers as scripted, closes.
async fn serve(mut stream: TcpStream, seen: &Mutex<Vec<Received>>, answers: &[Answer]) {
    let Some(mut received) = read_request(&mut stream).await else {
        return;
    };
    let index = {
        let mut seen = seen.lock().expect("requests");
        seen.push(received.clone());
        seen.len() - 1
    };
    let answer = answers[index.min(answers.len() - 1)];
    let status = match answer {
        Answer::Status(status) => status,
        Answer::Slow(status, pause) => {
            tokio::time::sleep(pause).await;
            status
        }
        Answer::Never => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
    };
    let response =
        format!("HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    received.answered_at = Some(Instant::now());
    seen.lock().expect("requests")[index] = received;
}

/// The request line, headers and `content-length` bytes of body.
async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
    };
    let received_at = Instant::now();
    let head = String::from_utf8(bytes[..head_end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .map_or(0, |l| l.parse().expect("content-length"));
    let mut body = bytes[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        request_line,
        headers,
        body,
        answered_at: None,
        received_at,
    })
}

fn webhook(name: &str, on: &[Event], hook: WebhookConfig, timeout: Duration) -> ActionConfig {
    ActionConfig {
        name: name.to_owned(),
        on: on.to_vec(),
        run: ActionRun::Webhook(hook),
        timeout,
        batch: false,
    }
}

fn hook(url: &str, retries: u32) -> WebhookConfig {
    WebhookConfig {
        retries,
        ..WebhookConfig::new(url).expect("url")
    }
}

/// A root-owned (the tests run as root) mode-0600 file holding `text`.
fn secret_file(dir: &TempDir, text: &str) -> PathBuf {
    let path = dir.path("webhook.auth");
    let mut file = std::fs::File::create(&path).expect("create the authorization file");
    file.write_all(text.as_bytes()).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

const TOKEN: &str = "Bearer s3cret-webhook-token";

#[tokio::test]
async fn a_nodes_events_arrive_in_order_with_the_headers() {
    let dir = TempDir::new("webhook-order");
    // The down is answered slowly: the up must wait for that answer.
    let receiver = Receiver::start(&[
        Answer::Slow(200, Duration::from_millis(400)),
        Answer::Status(204),
    ])
    .await;
    let mut config = hook(&receiver.url, 0);
    config.headers = vec![(
        "x-team".parse().expect("name"),
        "infra".parse().expect("value"),
    )];
    config.authorization_file = Some(secret_file(&dir, &format!("{TOKEN}\n")));
    let runner = ActionRunner::new(
        vec![webhook(
            "notify",
            &[Event::Down, Event::Up],
            config,
            Duration::from_secs(5),
        )],
        4,
    );
    runner.dispatch(node_event(1, Event::Down));
    runner.dispatch(node_event(1, Event::Up));
    wait_idle(&runner).await;

    let requests = receiver.requests();
    let events: Vec<serde_json::Value> = requests.iter().map(Received::json).collect();
    assert_eq!(
        events,
        [
            serde_json::json!({
                "event": "down", "node_id": 1, "node_name": "n1",
                "node_address": "198.18.1.2", "previous_state": "up",
                "since_last_heartbeat_ms": 6150,
            }),
            serde_json::json!({
                "event": "up", "node_id": 1, "node_name": "n1",
                "node_address": "198.18.1.2", "previous_state": "up",
                "since_last_heartbeat_ms": 6150,
            }),
        ]
    );
    let down_answered = requests[0].answered_at.expect("the down was answered");
    assert!(
        requests[1].received_at >= down_answered,
        "the up was posted before the down's answer"
    );
    for request in &requests {
        assert_eq!(request.request_line, "POST /hb HTTP/1.1");
        assert_eq!(request.headers["content-type"], "application/json");
        assert_eq!(request.headers["x-team"], "infra");
        assert_eq!(request.headers["authorization"], TOKEN);
    }
    assert_eq!(
        runner.stats(),
        ActionStats {
            started: 2,
            succeeded: 2,
            ..ActionStats::default()
        }
    );
}

/// Everything logged at any level while `f` runs on this thread. The log
/// statements `f` reaches must have been reached once before, without
/// the capture: tracing caches whether a statement is wanted when it is
/// first reached, and a first reach on another test's thread racing with
/// the capture's start could cache "not wanted" for the capture too.
async fn logged<F: Future<Output = ()>>(f: F) -> String {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    f.await;
    let bytes = buffer.0.lock().expect("log buffer").clone();
    String::from_utf8(bytes).expect("UTF-8 log")
}

#[tokio::test]
async fn a_500_is_retried_and_the_token_never_logged() {
    let dir = TempDir::new("webhook-retry");
    let retried = async |url: &str| {
        let mut config = hook(url, 3);
        config.authorization_file = Some(secret_file(&dir, TOKEN));
        let runner = ActionRunner::new(
            vec![webhook(
                "notify",
                &[Event::Down],
                config,
                Duration::from_secs(5),
            )],
            4,
        );
        runner.dispatch(event(Event::Down));
        wait_idle(&runner).await;
    };
    // Reaches the log statements once before the capture (see `logged`).
    let warm_up = Receiver::start(&[Answer::Status(500), Answer::Status(200)]).await;
    retried(&warm_up.url).await;
    assert_eq!(warm_up.requests().len(), 2);

    let receiver = Receiver::start(&[Answer::Status(500), Answer::Status(200)]).await;
    let mut config = hook(&receiver.url, 3);
    config.authorization_file = Some(secret_file(&dir, TOKEN));
    let metrics = Metrics::new(0);
    let runner = ActionRunner::new(
        vec![webhook(
            "notify",
            &[Event::Down],
            config,
            Duration::from_secs(5),
        )],
        4,
    )
    .with_metrics(metrics.actions());
    let log = logged(async {
        runner.dispatch(event(Event::Down));
        wait_idle(&runner).await;
    })
    .await;

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests[1].received_at - requests[0].received_at >= Duration::from_millis(500),
        "retried without the backoff"
    );
    assert_eq!(requests[1].body, requests[0].body);
    assert_eq!(
        runner.stats(),
        ActionStats {
            started: 1,
            succeeded: 1,
            ..ActionStats::default()
        }
    );
    assert_eq!(action_runs(&encode(&metrics), "notify", "succeeded"), 1.0);
    assert!(log.contains("HTTP 500"), "{log}");
    assert!(log.contains("retrying in 500ms"), "{log}");
    assert!(log.contains("HTTP 200 OK"), "{log}");
    assert!(!log.contains("s3cret"), "the token is in the log:\n{log}");
    // Only the scheme, host and port: a path may be a secret.
    let target = receiver
        .url
        .strip_suffix("/hb")
        .expect("the receiver's path");
    assert!(log.contains(&format!("POST {target}: ")), "{log}");
    assert!(
        !log.contains(&receiver.url),
        "the URL's path is in the log:\n{log}"
    );
}

#[tokio::test]
async fn a_receiver_that_always_fails_fails_the_run_after_the_retries() {
    let receiver = Receiver::start(&[Answer::Status(500)]).await;
    let metrics = Metrics::new(0);
    let runner = ActionRunner::new(
        vec![webhook(
            "notify",
            &[Event::Down],
            hook(&receiver.url, 2),
            Duration::from_secs(5),
        )],
        4,
    )
    .with_metrics(metrics.actions());
    let start = Instant::now();
    runner.dispatch(event(Event::Down));
    wait_idle(&runner).await;
    assert_eq!(receiver.requests().len(), 3);
    // Backoffs of 0.5 s and 1 s between the three attempts.
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        runner.stats(),
        ActionStats {
            started: 1,
            failed: 1,
            ..ActionStats::default()
        }
    );
    assert_eq!(action_runs(&encode(&metrics), "notify", "failed"), 1.0);
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_the_run_out() {
    let receiver = Receiver::start(&[Answer::Never]).await;
    let timeout = Duration::from_millis(200);
    let runner = ActionRunner::new(
        vec![webhook(
            "notify",
            &[Event::Down],
            hook(&receiver.url, 0),
            timeout,
        )],
        4,
    );
    let start = Instant::now();
    runner.dispatch(event(Event::Down));
    wait_idle(&runner).await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= timeout && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(
        runner.stats(),
        ActionStats {
            started: 1,
            timed_out: 1,
            ..ActionStats::default()
        }
    );
}

#[tokio::test]
async fn a_refused_connection_or_a_bad_authorization_file_fails_the_run() {
    // A port nothing listens on any more.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hb", closed.local_addr().expect("address"));
    drop(closed);
    let dir = TempDir::new("webhook-refused");
    let receiver = Receiver::start(&[Answer::Status(200)]).await;
    let mut open_file = hook(&receiver.url, 0);
    open_file.authorization_file = Some(secret_file(&dir, TOKEN));
    std::fs::set_permissions(
        dir.path("webhook.auth"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let runner = ActionRunner::new(
        vec![
            webhook(
                "refused",
                &[Event::Down],
                hook(&url, 0),
                Duration::from_secs(5),
            ),
            webhook(
                "open-file",
                &[Event::Down],
                open_file,
                Duration::from_secs(5),
            ),
        ],
        4,
    );
    runner.dispatch(event(Event::Down));
    wait_idle(&runner).await;
    assert_eq!(
        runner.stats(),
        ActionStats {
            started: 2,
            failed: 2,
            ..ActionStats::default()
        }
    );
    // Nothing was sent without the authorization.
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn a_batch_is_one_post_with_an_array() {
    let receiver = Receiver::start(&[Answer::Status(200)]).await;
    let runner = ActionRunner::new(
        vec![ActionConfig {
            batch: true,
            ..webhook(
                "sync",
                &[Event::Down, Event::Up],
                hook(&receiver.url, 0),
                Duration::from_secs(5),
            )
        }],
        4,
    );
    runner.dispatch_sweep(vec![
        node_event(2, Event::Down),
        // Not subscribed: not in the batch.
        node_event(5, Event::Left),
        node_event(1, Event::Down),
        node_event(3, Event::Up),
    ]);
    wait_idle(&runner).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let posted: Vec<(u64, String)> = requests[0]
        .json()
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|e| {
            (
                e["node_id"].as_u64().expect("node_id"),
                e["event"].as_str().expect("event").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        posted,
        [
            (2, "down".to_owned()),
            (1, "down".to_owned()),
            (3, "up".to_owned())
        ]
    );
    assert_eq!(requests[0].json()[0]["since_last_heartbeat_ms"], 6150);
    assert_eq!(
        runner.stats(),
        ActionStats {
            started: 1,
            succeeded: 1,
            ..ActionStats::default()
        }
    );
}

#[tokio::test]
async fn an_https_url_speaks_tls() {
    // A plain-HTTP server answering 200 at once: over TLS that is no
    // answer (the handshake fails), so the run must fail.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let runner = ActionRunner::new(
        vec![webhook(
            "notify",
            &[Event::Down],
            hook(&format!("https://{address}/hb"), 0),
            Duration::from_secs(5),
        )],
        4,
    );
    runner.dispatch(event(Event::Down));
    wait_idle(&runner).await;
    assert_eq!(
        runner.stats(),
        ActionStats {
            started: 1,
            failed: 1,
            ..ActionStats::default()
        }
    );
}
