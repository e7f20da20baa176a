//! The agent's HTTP API (`[http] listen`, loopback by default): read-only
//! endpoints, each answered by the agent's loop through a [`Query`], so the
//! API shows exactly what `hb status` shows and never touches the sweep's
//! state from another task.
//!
//! - `GET /healthz`: the process is alive (answered here, not by the loop).
//! - `GET /readyz`: 200 when a sweep has run recently, else 503 and why.
//! - `GET /api/v1/status?limit=N`: what `hb status --json` shows.
//! - `GET /api/v1/nodes?state=down&limit=N&after=ID`: nodes by ascending id,
//!   a page at a time (`next_after` continues).
//! - `GET /api/v1/nodes/{id or name}`: one node in full.
//! - `GET /api/v1/events?since=CURSOR`: server-sent events, one `transition`
//!   per state change (the event log's record with its `cursor`) and a
//!   `summary` at most once a second; `since` (or `Last-Event-ID`) replays
//!   what the recent-events ring still holds. A client that falls behind
//!   gets a `lagged` event and is dropped.
//!
//! - `GET /api/v1/fleet`: every node's state, one byte each after a line of
//!   JSON (ids as runs, counts, the stream's cursor): the live view's
//!   snapshot ([`Fleet`](crate::agent::query::Fleet)).
//! - `GET /metrics`: Prometheus metrics (classic text; OpenMetrics when the
//!   scraper's `Accept` asks for it).
//! - `GET /` and `GET /ui/{file}`: the live view ([`crate::web`]), a page
//!   that reads the endpoints above.
//!
//! With `[http] token_file`, every request but the live view's files must
//! carry `Authorization: Bearer <token>` (401 otherwise). The files hold no
//! data (a browser cannot send the header when it navigates); the page asks
//! for the token and sends it with each of its requests.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::{Path, Query as UrlQuery, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use futures_util::{Stream, StreamExt, stream};
use serde::{Deserialize, Serialize};
use tokio::{
    net::TcpListener,
    sync::{broadcast::error::RecvError, mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    agent::{
        query::{FLEET_CONTENT_TYPE, PageRequest, Query},
        status::DEFAULT_LIMIT,
    },
    keys::HttpToken,
    sinks::{
        metrics::Format,
        stream::{StreamItem, Subscription},
    },
    web,
};

/// How long a request waits for the agent's loop before it gives up (503).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// A comment line this often keeps idle event streams open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The bearer token requests must carry, if any; a reload replaces it.
pub type SharedToken = Arc<RwLock<Option<HttpToken>>>;

/// What every handler shares: the way to the agent's loop, and the token.
#[derive(Clone)]
struct Api {
    queries: mpsc::Sender<Query>,
    token: SharedToken,
}

/// Binds `address` (so that a taken port fails the agent's start) and
/// serves the API from a task.
pub fn listen(
    address: SocketAddr,
    token: SharedToken,
    queries: mpsc::Sender<Query>,
) -> anyhow::Result<JoinHandle<()>> {
    Ok(spawn(bind(address)?, token, queries))
}

/// Binds `address` for the API (a reload binds the new address before it
/// lets go of the old one).
pub fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    std::net::TcpListener::bind(address)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        })
        .with_context(|| format!("listening on {address} for the HTTP API ([http] listen)"))
}

/// Serves the API on `listener` from a task; aborting the task closes the
/// listener (connections already open finish on their own).
pub fn spawn(
    listener: TcpListener,
    token: SharedToken,
    queries: mpsc::Sender<Query>,
) -> JoinHandle<()> {
    let authenticated = token.read().is_ok_and(|token| token.is_some());
    let address = listener.local_addr().ok();
    tracing::info!(?address, authenticated, "HTTP API listening");
    tokio::spawn(serve(listener, queries, token))
}

/// Serves the API on `listener` until the process ends.
async fn serve(listener: TcpListener, queries: mpsc::Sender<Query>, token: SharedToken) {
    let api = Api { queries, token };
    let app = router(api);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the HTTP API stopped: {e}");
    }
}

fn router(api: Api) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(status))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/nodes/{key}", get(node))
        .route("/api/v1/events", get(events))
        .route("/api/v1/fleet", get(fleet))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(api.clone(), authorize))
        // Added after the layer, so served without the token.
        .merge(web::router())
        .with_state(api)
}

/// Refuses requests without the bearer token, when one is configured.
async fn authorize(State(api): State<Api>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    let allowed = match &*api.token.read().unwrap_or_else(PoisonError::into_inner) {
        None => true,
        Some(token) => presented.is_some_and(|presented| token.matches(presented)),
    };
    if allowed {
        return next.run(request).await;
    }
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "this API needs `Authorization: Bearer <token>` (the token of [http] token_file)",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        "Bearer".parse().expect("a valid header"),
    );
    response
}

/// A JSON error body with `status`.
fn error(status: StatusCode, message: &str) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
    }
    (status, Json(Body { error: message })).into_response()
}

impl Api {
    /// Asks the loop; `None` (answer with 503) if it does not answer in time.
    async fn ask<T>(&self, query: impl FnOnce(oneshot::Sender<T>) -> Query) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.queries.send(query(reply)).await.ok()?;
        tokio::time::timeout(ANSWER_WITHIN, answer).await.ok()?.ok()
    }
}

fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the agent's loop did not answer (stalled or stopping)",
    )
}

async fn readyz(State(api): State<Api>) -> Response {
    match api.ask(|reply| Query::Ready { reply }).await {
        Some(readiness) if readiness.ready => Json(readiness).into_response(),
        Some(readiness) => (StatusCode::SERVICE_UNAVAILABLE, Json(readiness)).into_response(),
        None => unavailable(),
    }
}

#[derive(Deserialize)]
struct StatusParams {
    limit: Option<usize>,
}

async fn status(State(api): State<Api>, UrlQuery(params): UrlQuery<StatusParams>) -> Response {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    match api.ask(|reply| Query::Status { limit, reply }).await {
        Some(report) => Json(report).into_response(),
        None => unavailable(),
    }
}

async fn nodes(State(api): State<Api>, UrlQuery(page): UrlQuery<PageRequest>) -> Response {
    match api.ask(|reply| Query::Nodes { page, reply }).await {
        Some(page) => Json(page).into_response(),
        None => unavailable(),
    }
}

async fn node(State(api): State<Api>, Path(key): Path<String>) -> Response {
    let asked = key.clone();
    match api.ask(|reply| Query::Node { key: asked, reply }).await {
        Some(Some(detail)) => Json(detail).into_response(),
        Some(None) => error(
            StatusCode::NOT_FOUND,
            &format!("no configured node has the id or name `{key}`"),
        ),
        None => unavailable(),
    }
}

/// The fleet's states: a line of JSON, then a byte per node.
async fn fleet(State(api): State<Api>) -> Response {
    match api.ask(|reply| Query::Fleet { reply }).await {
        Some(fleet) => match fleet.to_body() {
            Ok(body) => ([(header::CONTENT_TYPE, FLEET_CONTENT_TYPE)], body).into_response(),
            Err(_) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the fleet could not be encoded",
            ),
        },
        None => unavailable(),
    }
}

/// The classic text format unless the scraper asks for OpenMetrics.
async fn metrics(State(api): State<Api>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let format = if openmetrics {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    match api.ask(|reply| Query::Metrics { format, reply }).await {
        Some(Ok(text)) => ([(header::CONTENT_TYPE, format.content_type())], text).into_response(),
        Some(Err(_)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded",
        ),
        None => unavailable(),
    }
}

#[derive(Deserialize)]
struct EventParams {
    since: Option<u64>,
}

async fn events(
    State(api): State<Api>,
    headers: HeaderMap,
    UrlQuery(params): UrlQuery<EventParams>,
) -> Response {
    // An EventSource that reconnects sends the last id it saw.
    let since = params.since.or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|value| value.to_str().ok()?.parse().ok())
    });
    match api.ask(|reply| Query::Subscribe { since, reply }).await {
        Some(subscription) => Sse::new(event_stream(subscription))
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response(),
        None => unavailable(),
    }
}

/// What a subscriber receives: `missed` if the ring no longer held all it
/// asked for, the replay, then live items until it lags or the agent stops.
fn event_stream(subscription: Subscription) -> impl Stream<Item = Result<Event, Infallible>> {
    let Subscription {
        replay,
        missed,
        live,
    } = subscription;
    let missed = (missed > 0).then(|| json_event("missed", None, &Missed { missed }));
    let replay = replay
        .into_iter()
        .map(|event| json_event("transition", Some(event.cursor), &*event));
    let live = stream::unfold(Some(live), |receiver| async move {
        let mut receiver = receiver?;
        match receiver.recv().await {
            Ok(StreamItem::Event(event)) => Some((
                json_event("transition", Some(event.cursor), &*event),
                Some(receiver),
            )),
            Ok(StreamItem::Summary(summary)) => {
                Some((json_event("summary", None, &*summary), Some(receiver)))
            }
            // Told why, then dropped: the next poll ends the stream.
            Err(RecvError::Lagged(missed)) => {
                Some((json_event("lagged", None, &Missed { missed }), None))
            }
            Err(RecvError::Closed) => None,
        }
    });
    stream::iter(missed.into_iter().chain(replay))
        .chain(live)
        .map(Ok)
}

#[derive(Serialize)]
struct Missed {
    missed: u64,
}

fn json_event(kind: &str, id: Option<u64>, data: &impl Serialize) -> Event {
    let event = Event::default().event(kind);
    let event = match id {
        Some(id) => event.id(id.to_string()),
        None => event,
    };
    event
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event("error"))
}
