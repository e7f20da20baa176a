//! Webhook actions against a real HTTP receiver on loopback
//! (`http_receiver`): order, headers, retries, timeouts, batches, TLS.

use std::{io::Write, os::unix::fs::PermissionsExt};

use tokio::{io::AsyncWriteExt, net::TcpListener};

use super::{
    http_receiver::{Answer, Received, Receiver, logged},
    metrics::{action_runs, encode},
    order::node_event,
    *,
};
use crate::sinks::{actions::webhook::WebhookConfig, metrics::Metrics};

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
